//! What the streams and counters must show after a run: accepted counts, rejected lines,
//! windows and their keys, maxpoints, converted timestamps (read through the inspection route),
//! metric deltas and limit breaches (read from `/metrics`).

use std::collections::BTreeSet;

use plotstream_cases::Expect;

use super::response::json_eq;
use crate::conform::observe::Observation;
use crate::conform::plan::Opts;
use crate::conform::verdict::Match;
use crate::probe::inspect::Inspection;

/// Checks the streams an expectation names (counts, rejections, windows, maxpoints,
/// converted timestamps) and the counters it expects (metric deltas, limit breaches).
pub fn match_streams(opts: &Opts, e: &Expect, obs: &Observation, notes: &mut Vec<String>) -> Match {
    if e.needs_inspection()
        && obs
            .streams
            .values()
            .any(|s| matches!(s, Err(e) if e == NO_INSPECTION))
    {
        return Match::Unobservable(NO_INSPECTION.to_owned());
    }
    if let Err(why) = stream_facts(e, obs) {
        return Match::No(why);
    }
    if e.needs_metrics() {
        // Counters are read in the first mode only (run alone on its target).
        if obs.metrics_missing && !e.metrics.is_empty() {
            return Match::Unobservable("needs the target's /metrics".to_owned());
        }
        let Some(delta) = &obs.metrics else {
            return Match::Yes;
        };
        for (k, want) in &e.metrics {
            let got = delta.get(k).copied().unwrap_or(0.0);
            if (got - *want as f64).abs() > 0.5 {
                return Match::No(format!("Δ{k} = {got} ≠ {want}"));
            }
        }
        if let Some(l) = &e.limit {
            let k = format!("plotstream_limit_breaches_total{{limit=\"{l}\"}}");
            let got = delta.get(&k).copied().unwrap_or(0.0);
            if got < 1.0 {
                let note = format!(
                    "limit {l} fired (by the status) but {k} did not grow (docs/reliability.md §3)"
                );
                if opts.require_limit_counters {
                    return Match::No(note);
                }
                notes.push(note);
            }
        }
    }
    Match::Yes
}

/// What `e` says of the streams it names, in order: accepted counts, rejected lines, windows
/// and their keys (not for reused tokens, whose windows hold earlier runs' data), maxpoints,
/// converted timestamps (not for reused tokens either). `Err` says what does not hold.
fn stream_facts(e: &Expect, obs: &Observation) -> Result<(), String> {
    // A stream's inspection (`None`: no such stream).
    let stream = |tok: &str| -> Result<Option<&Inspection>, String> {
        match obs.streams.get(tok) {
            Some(Ok(i)) => Ok(i.as_ref()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("{tok} was not inspected")),
        }
    };
    // The inspection of a stream that must exist.
    let existing = |tok: &str| stream(tok)?.ok_or_else(|| format!("{tok}: no such stream"));
    for (tok, want) in &e.acc {
        let got = stream(tok)?.map_or(0, |i| i.last_seq);
        if got != *want {
            return Err(format!("acc {tok}={got} ≠ {want}"));
        }
    }
    if let Some(want) = e.rejected {
        let got = stream("tok1")?.map_or(0, |i| i.rejected_lines);
        if got != want {
            return Err(format!("rejected_lines {got} ≠ {want}"));
        }
    }
    if !obs.reused {
        for (tok, want) in &e.window {
            let i = existing(tok)?;
            if !json_eq(&i.window, want) {
                return Err(format!("window[{tok}] {} ≠ {want}", i.window));
            }
        }
        for (tok, want) in &e.window_keys {
            let got: BTreeSet<&str> = existing(tok)?
                .window
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
            if got != want_set {
                return Err(format!("window keys of {tok} {got:?} ≠ {want_set:?}"));
            }
        }
    }
    for (tok, want) in &e.maxpoints {
        let i = existing(tok)?;
        if i.maxpoints != *want {
            return Err(format!("maxpoints of {tok} {} ≠ {want}", i.maxpoints));
        }
    }
    if !obs.reused {
        for (tok, want) in &e.converted {
            let window = &existing(tok)?.window;
            converted(window, want, obs).map_err(|why| format!("window[{tok}] {window}: {why}"))?;
        }
    }
    Ok(())
}

/// A `converted` expectation against a stored window: exactly `x` and `y`, `y` as given, `x`
/// the converted times (`timestamps::check_x`).
fn converted(
    window: &serde_json::Value,
    want: &plotstream_cases::Converted,
    obs: &Observation,
) -> std::result::Result<(), String> {
    let keys: BTreeSet<&str> = window
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if keys != BTreeSet::from(["x", "y"]) {
        return Err(format!("attributes {keys:?}, not x and y"));
    }
    let y = serde_json::Value::Array(want.y.clone());
    if !json_eq(&window["y"], &y) {
        return Err(format!("y {} ≠ {y}", window["y"]));
    }
    let xs = window["x"].as_array().map_or(&[][..], Vec::as_slice);
    let span = obs.span.ok_or("the run has no time span")?;
    crate::conform::timestamps::check_x(xs, &want.zone, &want.x_millis, span, obs.conns.len() <= 1)
}

/// The reason a check cannot be made against a target without the inspection route.
pub const NO_INSPECTION: &str =
    "needs the inspection route GET /api/streams/{token} (docs/reliability.md §4.3)";
