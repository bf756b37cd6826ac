//! Judging: a run's observation against its variant's set of acceptable outcomes
//! (docs/reliability.md §8), with a late run told from a wrong one; and a case's verdict from
//! its variants. What one connection must show is in [`response`], what the streams and
//! counters must show in [`streams`].

mod response;
mod streams;

use plotstream_cases::{Case, End, Expect, Level, Variant};

pub use streams::NO_INSPECTION;

use super::observe::Observation;
use super::plan::Opts;
use super::verdict::{CaseReport, Match, VariantOutcome, VariantReport, Verdict};
use response::{match_conn, Timing};
use streams::match_streams;

/// Checks a run against the variant's expectations. A run that misses only a timing bound
/// (`within_ms`, `fin_within_ms`, `continue_ms`, `min_mbps`), or that got no answer at all
/// within the wait where an answer was expected, is `Match::Late`, which `run_variant`
/// judges on a quiet rerun. Also returns notes for soft observations.
pub fn check(opts: &Opts, case: &Case, v: &Variant, obs: &Observation) -> (Match, Vec<String>) {
    match check_timed(opts, case, v, obs, Timing::Check) {
        (Match::No(why), notes) => {
            let late = matches!(
                check_timed(opts, case, v, obs, Timing::Ignore).0,
                Match::Yes
            );
            let expects_open = v
                .expect
                .iter()
                .chain(v.expect_conn.values().flatten())
                .any(|e| e.end == Some(End::Open));
            let unanswered = !expects_open
                && obs
                    .conns
                    .iter()
                    .any(|(_, c)| c.end == End::Open && c.status().is_none());
            // Left open as expected and unanswered, but with fewer lines stored than expected:
            // the target has not reached them yet (a node of a cluster takes a new stream's
            // lease in Redis first). A quiet rerun tells slow from lost.
            let behind = expects_open
                && obs
                    .conns
                    .iter()
                    .all(|(_, c)| c.end == End::Open && c.status().is_none())
                && short_of_acc(v, obs);
            if late || unanswered || behind {
                (Match::Late(why), notes)
            } else {
                (Match::No(why), notes)
            }
        }
        other => other,
    }
}

/// Some expectation of `v` wants more accepted lines in a stream than it holds (a stream
/// that does not exist holds none), and none wants fewer.
fn short_of_acc(v: &Variant, obs: &Observation) -> bool {
    let held = |tok: &str| match obs.streams.get(tok) {
        Some(Ok(i)) => Some(i.as_ref().map_or(0, |i| i.last_seq)),
        _ => None,
    };
    let accs = || v.expect.iter().flat_map(|e| e.acc.iter());
    let fewer = accs().any(|(tok, want)| held(tok).is_some_and(|got| got < *want));
    let more = accs().any(|(tok, want)| held(tok).is_none_or(|got| got > *want));
    fewer && !more
}

/// Checks a run with (`Timing::Check`) or without (`Timing::Ignore`) its timing bounds.
fn check_timed(
    opts: &Opts,
    case: &Case,
    v: &Variant,
    obs: &Observation,
    timing: Timing,
) -> (Match, Vec<String>) {
    let mut notes = Vec::new();
    // Stream-level facts that must hold whatever the set says.
    for (tok, s) in &obs.streams {
        if let Ok(Some(i)) = s {
            if let Some(e) = &i.digest_error {
                return (Match::No(format!("{tok}: {e}")), notes);
            }
        }
    }
    if let Some(Err(e)) = &obs.viewer {
        return (Match::No(format!("viewer: {e}")), notes);
    }
    if !v.script.is_empty() {
        for (name, set) in &v.expect_conn {
            let Some((_, c)) = obs.conns.iter().find(|(n, _)| n == name) else {
                return (Match::No(format!("no connection {name}")), notes);
            };
            let mut whys = Vec::new();
            let ok = set
                .iter()
                .any(|e| match match_conn(opts, case, e, c, timing, &obs.subst) {
                    Ok(()) => true,
                    Err(why) => {
                        whys.push(why);
                        false
                    }
                });
            if !ok {
                return (
                    Match::No(format!(
                        "{name}: {} (expected {})",
                        c.describe(),
                        whys.join(" | ")
                    )),
                    notes,
                );
            }
        }
    }
    let mut whys = Vec::new();
    let mut unobservable = None;
    for e in &v.expect {
        let conn_ok = if v.script.is_empty() {
            let (n_ok, first_err) = count_matching(&obs.conns, e, &v.expect, |alt, (_, c)| {
                match_conn(opts, case, alt, c, timing, &obs.subst)
            });
            let need = v
                .min_pass
                .min(u32::try_from(obs.conns.len()).unwrap_or(u32::MAX));
            if n_ok >= need {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} connections matched ({}): {}",
                    n_ok,
                    obs.conns.len(),
                    need,
                    first_err.unwrap_or_default()
                ))
            }
        } else {
            Ok(())
        };
        if let Err(why) = conn_ok {
            whys.push(why);
            continue;
        }
        match match_streams(opts, e, obs, &mut notes) {
            Match::Yes => return (Match::Yes, notes),
            Match::No(why) | Match::Late(why) => whys.push(why),
            Match::Unobservable(why) => unobservable = Some(why),
        }
    }
    if let Some(why) = unobservable {
        return (Match::Unobservable(why), notes);
    }
    if v.expect.is_empty() {
        return (Match::Yes, notes);
    }
    (Match::No(whys.join(" | ")), notes)
}

/// A case's verdict from its variants' outcomes (docs/reliability.md §8): any inconsistency
/// fails; a failed variant fails a MUST or COMPAT case, is NON-STRICT for a SHOULD (unless
/// strict) and INFO for an INFO case; else any skipped variant skips the case.
pub fn classify(opts: &Opts, case: &Case, report: &mut CaseReport) {
    if report.verdict == Verdict::Skip {
        return;
    }
    let label = |v: &VariantReport| {
        if v.name.is_empty() {
            String::new()
        } else {
            format!("[{}] ", v.name)
        }
    };
    // The labelled reasons of the variants whose outcome `pick` selects.
    let reasons = |pick: fn(&VariantOutcome) -> Option<&String>| -> Vec<String> {
        report
            .variants
            .iter()
            .filter_map(|v| pick(&v.outcome).map(|why| format!("{}{why}", label(v))))
            .collect()
    };
    let failed = reasons(|o| match o {
        VariantOutcome::Fail(why) => Some(why),
        _ => None,
    });
    let inconsistent = reasons(|o| match o {
        VariantOutcome::Inconsistent(why) => Some(why),
        _ => None,
    });
    let skipped = reasons(|o| match o {
        VariantOutcome::Skip(why) => Some(why),
        _ => None,
    });
    if !inconsistent.is_empty() {
        report.verdict = Verdict::Fail;
        report.reason = inconsistent.join("; ");
    } else if !failed.is_empty() {
        report.verdict = match case.level {
            Level::Must | Level::Compat => Verdict::Fail,
            Level::Should if opts.strict_for(case) => Verdict::Fail,
            Level::Should => Verdict::NonStrict,
            Level::Info => Verdict::Info,
        };
        report.reason = failed.join("; ");
    } else if !skipped.is_empty() {
        report.verdict = Verdict::Skip;
        report.reason = skipped.join("; ");
    } else if case.level == Level::Info {
        report.verdict = Verdict::Info;
    }
}

/// How many of `conns` end as `e` says, and the first mismatch. With several connections
/// (repeat, parallel) and an `e` that says nothing about stored streams or counters, a
/// connection may end as any such alternative of the set says: E8's runs each end with the
/// FIN or with the reset after it, and a mix is as acceptable as either alone.
fn count_matching<C>(
    conns: &[C],
    e: &Expect,
    alternatives: &[Expect],
    matches: impl Fn(&Expect, &C) -> std::result::Result<(), String>,
) -> (u32, Option<String>) {
    let wire_only = |e: &Expect| !e.needs_inspection() && !e.needs_metrics();
    let mut n_ok = 0u32;
    let mut first_err = None;
    for c in conns {
        let ok = match matches(e, c) {
            Ok(()) => true,
            Err(why) => {
                let other = conns.len() > 1
                    && wire_only(e)
                    && alternatives
                        .iter()
                        .filter(|alt| wire_only(alt))
                        .any(|alt| matches(alt, c).is_ok());
                if !other {
                    first_err.get_or_insert(why);
                }
                other
            }
        };
        n_ok += u32::from(ok);
    }
    (n_ok, first_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conform::wire::ConnResult;
    use crate::probe::inspect::Inspection;

    fn expect(text: &str) -> Expect {
        toml::from_str(text).expect("an expectation")
    }

    fn by_end(e: &Expect, c: &End) -> std::result::Result<(), String> {
        if e.end == Some(*c) {
            Ok(())
        } else {
            Err(format!("end {c} ≠ {:?}", e.end))
        }
    }

    #[test]
    fn repeated_runs_may_mix_wire_only_alternatives() {
        let set = [
            expect("status = 413\nend = \"fin\""),
            expect("status = 413\nend = \"rst-after-status\""),
        ];
        let mixed = [End::Fin, End::RstAfterStatus, End::RstAfterStatus, End::Fin];
        assert_eq!(count_matching(&mixed, &set[0], &set, by_end).0, 4);
        // An outcome outside the set still counts against the runs.
        let bad = [End::Fin, End::Rst];
        let (n, why) = count_matching(&bad, &set[0], &set, by_end);
        assert_eq!(n, 1);
        assert!(why.is_some_and(|w| w.contains("rst")));
        // One connection: only `e` itself (its stream part is judged with it).
        assert_eq!(
            count_matching(&[End::RstAfterStatus], &set[0], &set, by_end).0,
            0
        );
    }

    #[test]
    fn alternatives_about_streams_are_not_mixed() {
        let set = [
            expect("status = 200\nend = \"fin\"\nacc = { tok1 = 1 }"),
            expect("status = 400\nend = \"silent\"\nacc = { tok1 = 0 }"),
        ];
        let runs = [End::Fin, End::Silent];
        assert_eq!(count_matching(&runs, &set[0], &set, by_end).0, 1);
    }

    /// V12's control run on a node of a cluster: the connection stays open, unanswered, and
    /// the line is not stored yet when the runner looks. That is late (rerun quietly), not
    /// wrong; a stream holding more than expected, or an answer, is still wrong.
    #[test]
    fn an_open_unanswered_run_short_of_its_lines_is_late() {
        let case = plotstream_cases::catalogue()
            .expect("the catalogue")
            .into_iter()
            .find(|c| c.id == "V12")
            .expect("V12");
        let v = &case.variants[1];
        assert_eq!(v.expect[0].end, Some(End::Open));
        let opts = Opts {
            timer_scale: None,
            peer_limit: None,
            fd_limit: 0,
            seed: 0,
            split_limit: None,
            strict: false,
            strict_cases: Vec::new(),
            require_limit_counters: false,
            unoptimized: false,
            credentials: None,
            stream_id: None,
        };
        let run = |status: Option<u16>, acc: Option<u64>| {
            let conn = ConnResult {
                response: status.map(|status| crate::conform::wire::Response {
                    status,
                    ..Default::default()
                }),
                end: if status.is_some() {
                    End::Fin
                } else {
                    End::Open
                },
                status_ms: None,
                fin_ms: None,
                continue_ms: None,
                extra: 0,
                garbage: None,
                write_error: None,
                status_since_first_write_ms: None,
                after_eof: None,
                log: Vec::new(),
                bytes_written: 0,
            };
            let inspection = acc.map(|last_seq| Inspection {
                last_seq,
                count: last_seq,
                rejected_lines: 0,
                maxpoints: 0,
                window: serde_json::Value::Null,
                digest: String::new(),
                digest_error: None,
            });
            let obs = Observation {
                conns: vec![(String::new(), conn)],
                streams: [("tok1".to_owned(), Ok(inspection))].into(),
                ..Default::default()
            };
            check(&opts, &case, v, &obs).0
        };
        assert!(matches!(run(None, Some(1)), Match::Yes));
        assert!(matches!(run(None, None), Match::Late(_)));
        assert!(matches!(run(None, Some(0)), Match::Late(_)));
        assert!(matches!(run(None, Some(2)), Match::No(_)));
        assert!(matches!(run(Some(413), Some(0)), Match::No(_)));
    }
}
