//! What one connection must show: the status, how it ended, P9's `Connection: close` and
//! Content-Length, the expected headers and body (with the run's variables substituted), and
//! the timing bounds.

use plotstream_cases::{Case, Expect};

use crate::conform::observe::{excerpt, EXCERPT};
use crate::conform::plan::Opts;
use crate::conform::wire::ConnResult;

/// Whether a check holds runs to their timing bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Every bound counts.
    Check,
    /// Events must happen, at any time: tells a late run from a wrong one.
    Ignore,
}

/// Checks one connection against one expected outcome (status, end, P9's headers, the
/// response's headers and body, its timings); `Err` says why not.
pub fn match_conn(
    opts: &Opts,
    case: &Case,
    e: &Expect,
    c: &ConnResult,
    timing: Timing,
    subst: &[(String, String)],
) -> std::result::Result<(), String> {
    // Expected texts name placeholders and variables as the bytes do.
    let text = |t: &str| plotstream_cases::substitute_text(t, subst);
    if let Some(g) = &c.garbage {
        return Err(format!("unparsable response {g}"));
    }
    if let Some(want) = e.status() {
        if c.status() != want {
            return Err(format!(
                "status {} ≠ {}",
                c.status().map_or("none".to_owned(), |s| s.to_string()),
                want.map_or("none".to_owned(), |s| s.to_string())
            ));
        }
    }
    if let Some(r) = &c.response {
        // P9: every response carries Connection: close and (except SSE) Content-Length.
        if !r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return Err(format!(
                "the {} response lacks `Connection: close`",
                r.status
            ));
        }
        if r.header("content-length").is_none() {
            return Err(format!("the {} response lacks Content-Length", r.status));
        }
        if c.extra > 0 {
            return Err(format!(
                "{} bytes after the response (a second response?)",
                c.extra
            ));
        }
    }
    if let Some(end) = e.end() {
        if c.end != end {
            return Err(format!("end {} ≠ {end}", c.end));
        }
    }
    if let Some(r) = &c.response {
        for (k, want) in &e.headers {
            let want = text(want);
            match r.header(k) {
                Some(got) if got == want => {}
                got => return Err(format!("header {k}: {got:?} ≠ {want:?}")),
            }
        }
        for (k, want) in &e.headers_contain {
            let want = text(want);
            match r.header(k) {
                Some(got) if got.contains(want.as_str()) => {}
                Some(got) => return Err(format!("header {k}: {got:?} lacks {want:?}")),
                None => return Err(format!("no header {k}")),
            }
        }
        let body = String::from_utf8_lossy(&r.body);
        if let Some(b) = &e.body {
            let b = text(b);
            if body != b {
                return Err(format!("body {} ≠ {b:?}", excerpt(&body)));
            }
        }
        if let Some(b) = &e.body_contains {
            let b = text(b);
            if !body.contains(b.as_str()) {
                return Err(format!("body {} lacks {b:?}", excerpt(&body)));
            }
        }
        for b in &e.body_lacks {
            if let Some(why) = unwanted(&body, &text(b)) {
                return Err(why);
            }
        }
        if !e.body_json.is_empty() {
            let json: serde_json::Value = serde_json::from_slice(&r.body)
                .map_err(|err| format!("body {} is not JSON: {err}", excerpt(&body)))?;
            for (pointer, want) in &e.body_json {
                match json.pointer(pointer) {
                    Some(got) if json_eq(got, want) => {}
                    got => return Err(format!("body{pointer} {got:?} ≠ {want}")),
                }
            }
        }
        if let Some(want) = e.inline_script {
            match (inline_script(&body), want) {
                (Some(script), false) => {
                    return Err(format!("an inline script: {}", excerpt(&script)))
                }
                (None, true) => return Err("no inline script".to_owned()),
                _ => {}
            }
        }
    } else if !e.headers.is_empty()
        || !e.headers_contain.is_empty()
        || e.body.is_some()
        || e.body_contains.is_some()
        || !e.body_lacks.is_empty()
        || !e.body_json.is_empty()
        || e.inline_script.is_some()
    {
        return Err("no response to check".to_owned());
    }
    // Under `Timing::Ignore` an event must still happen, at any time.
    let bounds = timing == Timing::Check;
    if let Some(w) = e.within_ms {
        let [lo, hi] = if case.timers { opts.scaled(case, w) } else { w };
        let missing = format!("nothing happened, expected within {lo}..{hi} ms");
        bounded(
            c.status_ms,
            [lo, hi],
            bounds,
            |ms| format!("at {ms} ms"),
            missing,
        )?;
    }
    if let Some(w) = e.fin_within_ms {
        let at = |ms| format!("FIN {ms} ms after the last write");
        bounded(c.fin_ms, w, bounds, at, "no FIN".to_owned())?;
    }
    if let Some(want) = e.continue_ {
        if c.continue_ms.is_some() != want {
            return Err(if want {
                "no `100 Continue`".to_owned()
            } else {
                "an unexpected `100 Continue`".to_owned()
            });
        }
    }
    if let Some(w) = e.continue_ms {
        let at = |ms| format!("`100 Continue` after {ms} ms");
        bounded(c.continue_ms, w, bounds, at, "no `100 Continue`".to_owned())?;
    }
    if let Some(min) = e.min_mbps.filter(|_| bounds) {
        let ms = c
            .status_since_first_write_ms
            .unwrap_or(f64::INFINITY)
            .max(0.001);
        let mbps = c.bytes_written as f64 / 1e6 / (ms / 1000.0);
        if mbps < min {
            return Err(format!(
                "{mbps:.1} MB/s < {min} MB/s ({} bytes in {ms:.0} ms)",
                c.bytes_written
            ));
        }
    }
    Ok(())
}

/// An event's time against `[lo, hi]` ms: `Ok` inside (or at any time, without `bounds`);
/// else `at(ms)` and the bound, or `missing` when it never happened.
fn bounded(
    got: Option<u64>,
    [lo, hi]: [u64; 2],
    bounds: bool,
    at: impl Fn(u64) -> String,
    missing: String,
) -> Result<(), String> {
    match got {
        Some(ms) if !bounds || (lo..=hi).contains(&ms) => Ok(()),
        Some(ms) => Err(format!("{}, not within {lo}..{hi} ms", at(ms))),
        None => Err(missing),
    }
}

/// The `<script>` element of an HTML text whose content is not blank (an inline script), if any.
pub fn inline_script(html: &str) -> Option<String> {
    // ASCII lowering keeps every byte offset.
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<script").map(|at| at + from) {
        let open_end = lower[start..]
            .find('>')
            .map_or(lower.len(), |at| at + start + 1);
        let close = lower[open_end..]
            .find("</script")
            .map_or(lower.len(), |at| at + open_end);
        if !html[open_end..close].trim().is_empty() {
            return Some(html[start..close].to_owned());
        }
        from = close.max(start + 1);
    }
    None
}

/// Why `body` fails `body_lacks = [unwanted]`: where `unwanted` occurs, with the text around it.
pub fn unwanted(body: &str, unwanted: &str) -> Option<String> {
    let at = body.find(unwanted)?;
    // From a little before it, on a character boundary (0 always is one).
    let from = (0..=at.saturating_sub(EXCERPT / 2))
        .rev()
        .find(|&idx| body.is_char_boundary(idx))
        .unwrap_or(0);
    Some(format!(
        "body has {unwanted:?} at byte {at}: {}",
        excerpt(&body[from..])
    ))
}

/// JSON equality with numbers compared as f64 (so 1 = 1.0 and -0 = 0).
pub fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => x.as_f64() == y.as_f64(),
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_found_and_sourced_ones_are_not() {
        let page = r#"<head><script src="/assets/viewer.js?v=1"></script><SCRIPT
            src="/a.js">  </SCRIPT></head><body>"#;
        assert_eq!(inline_script(page), None);
        let inline = format!("{page}<script type=\"module\">alert(1)</script>");
        assert_eq!(
            inline_script(&inline).as_deref(),
            Some("<script type=\"module\">alert(1)")
        );
        assert!(inline_script("<script>x").is_some(), "an unclosed script");
        assert_eq!(inline_script("<p>no scripts</p>"), None);
    }

    #[test]
    fn unwanted_text_is_shown_in_place_whatever_the_characters_before_it() {
        // 603 - 150 falls inside an "é": the excerpt starts one byte earlier.
        let body = format!("{}<b>abcdef1234</b>", "é".repeat(EXCERPT));
        let why = unwanted(&body, "abcdef1234").expect("it is there");
        assert!(
            why.starts_with("body has \"abcdef1234\" at byte 603: \"é"),
            "{why}"
        );
        assert!(why.contains("é<b>abcdef1234</b>"), "{why}");
        assert_eq!(unwanted(&body, "zyxwvu9876"), None);
    }
}
