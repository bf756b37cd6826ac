//! Reports (docs/reliability.md §8): one stdout line per case, JUnit XML with one `testsuite` per
//! group, per-case JSON, and the final count line.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

use super::verdict::{CaseReport, VariantOutcome, Verdict, RERUN_MARK};

/// Totals over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// PASS.
    pub pass: usize,
    /// NON-STRICT.
    pub non_strict: usize,
    /// INFO.
    pub info: usize,
    /// FAIL.
    pub fail: usize,
    /// SKIP.
    pub skip: usize,
}

impl Totals {
    /// Counts `reports`.
    pub fn of(reports: &[CaseReport]) -> Totals {
        let mut t = Totals::default();
        for r in reports {
            match r.verdict {
                Verdict::Pass => t.pass += 1,
                Verdict::NonStrict => t.non_strict += 1,
                Verdict::Info => t.info += 1,
                Verdict::Fail => t.fail += 1,
                Verdict::Skip => t.skip += 1,
            }
        }
        t
    }

    /// passed = PASS + NON-STRICT + INFO (§8; `--strict` already turned NON-STRICT into FAIL).
    pub fn passed(&self) -> usize {
        self.pass + self.non_strict + self.info
    }

    /// The breakdown line.
    pub fn breakdown(&self) -> String {
        format!(
            "PASS {}, NON-STRICT {}, INFO {}, FAIL {}, SKIP {}",
            self.pass, self.non_strict, self.info, self.fail, self.skip
        )
    }

    /// The last line: exactly `N passed, N failed, N skipped`.
    pub fn last_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.fail,
            self.skip
        )
    }
}

/// The stdout block of one case: a line, plus details on failure (and on request).
pub fn case_text(r: &CaseReport, verbose: bool, hexdump: bool) -> String {
    let mut out = format!(
        "{:<10} {:<4} {:<6} {} ({} ms)",
        r.verdict.word(),
        r.id,
        r.level.to_string(),
        r.title,
        r.duration.as_millis()
    );
    if !r.reason.is_empty() && matches!(r.verdict, Verdict::Skip) {
        let _ = write!(out, ": {}", r.reason);
    }
    out.push('\n');
    let failing = matches!(
        r.verdict,
        Verdict::Fail | Verdict::NonStrict | Verdict::Info
    ) && !r.reason.is_empty();
    for v in &r.variants {
        let bad = matches!(
            v.outcome,
            VariantOutcome::Fail(_) | VariantOutcome::Inconsistent(_)
        );
        // A timing bound met only on a quiet rerun is shown even when the case passed: a target
        // that is late under load should know it.
        let reran = |n: &String| n.contains(RERUN_MARK);
        if !(verbose || bad && failing || v.notes.iter().any(reran)) {
            continue;
        }
        let name = if v.name.is_empty() {
            String::new()
        } else {
            format!("[{}] ", v.name)
        };
        let status = match &v.outcome {
            VariantOutcome::Pass => "ok".to_owned(),
            VariantOutcome::Fail(why) | VariantOutcome::Inconsistent(why) => why.clone(),
            VariantOutcome::Skip(why) => format!("skipped: {why}"),
        };
        let _ = writeln!(out, "    {name}{status}");
        if bad || verbose {
            if !v.expected.is_empty() {
                let _ = writeln!(out, "      Expected: {}", v.expected.join(" | "));
            }
            if !v.actual.is_empty() {
                let _ = writeln!(out, "      Actual:   {}", v.actual);
            }
            let modes: Vec<String> = v
                .modes
                .iter()
                .map(|(m, n, ok)| format!("{m} {ok}/{n}"))
                .collect();
            if !modes.is_empty() {
                let _ = writeln!(out, "      Modes:    {}", modes.join(", "));
            }
        }
        for n in &v.notes {
            if verbose || bad || reran(n) {
                let _ = writeln!(out, "      note: {n}");
            }
        }
        if hexdump && (bad || verbose) && !v.wire.is_empty() {
            let _ = writeln!(out, "      wire log:");
            out.push_str(&v.wire);
        }
    }
    out
}

/// Notes worth showing even for passing cases (limit counters that did not fire).
pub fn case_notes(r: &CaseReport) -> Vec<String> {
    let mut out = Vec::new();
    for v in &r.variants {
        for n in &v.notes {
            if n.starts_with("limit ") {
                if v.name.is_empty() {
                    out.push(format!("{} {n}", r.id));
                } else {
                    out.push(format!("{} [{}] {n}", r.id, v.name));
                }
            }
        }
    }
    out
}

/// JUnit XML: one `testsuite` per group, `testcase` named `B5 <title>`.
pub fn junit(reports: &[CaseReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let t = Totals::of(reports);
    let _ = writeln!(
        out,
        "<testsuites name=\"plotstream conform\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        reports.len(),
        t.fail,
        t.skip
    );
    let mut groups: Vec<&str> = reports.iter().map(|r| &r.id[..1]).collect();
    groups.dedup();
    for g in groups {
        let members: Vec<&CaseReport> = reports.iter().filter(|r| &r.id[..1] == g).collect();
        let fails = members
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .count();
        let skips = members
            .iter()
            .filter(|r| r.verdict == Verdict::Skip)
            .count();
        let secs: f64 = members.iter().map(|r| r.duration.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" skipped=\"{skips}\" time=\"{secs:.3}\">",
            group_name(g),
            members.len()
        );
        for r in members {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"conform.{g}\" time=\"{:.3}\"",
                xml(&format!("{} {}", r.id, r.title)),
                r.duration.as_secs_f64()
            );
            let detail = case_text(r, true, false);
            match r.verdict {
                Verdict::Fail => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                        xml(&r.reason),
                        r.level,
                        xml(&detail)
                    );
                }
                Verdict::Skip => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(&r.reason)
                    );
                }
                Verdict::NonStrict | Verdict::Info if !r.reason.is_empty() => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}: {}</system-out>\n    </testcase>",
                        r.verdict.word(),
                        xml(&detail)
                    );
                }
                _ => out.push_str("/>\n"),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Writes `DIR/<id>.json` per case.
pub fn write_json(dir: &Path, reports: &[CaseReport]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    for r in reports {
        let variants: Vec<serde_json::Value> = r
            .variants
            .iter()
            .map(|v| {
                let (result, why) = match &v.outcome {
                    VariantOutcome::Pass => ("pass", String::new()),
                    VariantOutcome::Fail(w) => ("fail", w.clone()),
                    VariantOutcome::Inconsistent(w) => ("inconsistent", w.clone()),
                    VariantOutcome::Skip(w) => ("skip", w.clone()),
                };
                serde_json::json!({
                    "name": v.name,
                    "result": result,
                    "reason": why,
                    "expected": v.expected,
                    "actual": v.actual,
                    "modes": v.modes.iter().map(|(m, n, ok)| serde_json::json!({"mode": m, "runs": n, "matched": ok})).collect::<Vec<_>>(),
                    "notes": v.notes,
                    "wire_log": v.wire,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "id": r.id,
            "title": r.title,
            "level": r.level.to_string(),
            "anchor": r.anchor,
            "result": r.verdict.word(),
            "reason": r.reason,
            "duration_ms": r.duration.as_millis() as u64,
            "variants": variants,
        });
        let path = dir.join(format!("{}.json", r.id));
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        std::fs::write(&path, text)
            .map_err(Error::io(format!("cannot write {}", path.display())))?;
    }
    Ok(())
}

/// Whether the run failed: any FAIL (§8: the exit status is 0 only when failed = 0).
pub fn failed(reports: &[CaseReport]) -> bool {
    reports.iter().any(|r| r.verdict == Verdict::Fail)
}

fn group_name(g: &str) -> &'static str {
    match g {
        "A" => "A request head",
        "B" => "B chunk framing",
        "C" => "C payload",
        "D" => "D resource exhaustion",
        "E" => "E timing",
        "Q" => "Q real-client quirks",
        "V" => "V real-client scenarios",
        "K" => "K accounts and ownership",
        _ => "other",
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_is_exact() {
        let t = Totals {
            pass: 3,
            non_strict: 1,
            info: 2,
            fail: 1,
            skip: 4,
        };
        assert_eq!(t.last_line(), "6 passed, 1 failed, 4 skipped");
        assert_eq!(xml("a<\"b\">&\u{1}"), "a&lt;&quot;b&quot;&gt;&amp;");
    }
}
