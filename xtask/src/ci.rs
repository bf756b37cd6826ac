//! `cargo xtask ci`: every check CI runs, in order, as a list of named steps.
//!
//! A failing step does not stop the run: every step runs, and the exit status is non-zero if any
//! failed. The last line printed is `N passed, M failed`, where the test step contributes one
//! count per test, the compat step one count per case, and every other step one count per check
//! (fmt, clippy, each fuzz target). Later issues append steps (conformance suite) to [`steps`].

use std::{
    env,
    io::Write,
    process::{ExitCode, Stdio},
    time::Instant,
};

use anyhow::{Context, Result};

use crate::{browser, compat, conform as conform_suite, cross, fuzz, util, wheel};

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let fuzz_secs = args.value("--fuzz-secs")?.unwrap_or(fuzz::SMOKE_SECS);
    // `--step NAME`: only that step (to rerun one while working on it).
    let only: Option<String> = args.value("--step")?;
    let (positional, _) = args.finish()?;
    if let Some(extra) = positional.first() {
        anyhow::bail!("`ci` takes no positional argument, got `{extra}`");
    }
    let ctx = Ctx { fuzz_secs };

    let mut steps = steps();
    if let Some(only) = &only {
        steps.retain(|s| s.name == only);
        if steps.is_empty() {
            anyhow::bail!("no ci step is named `{only}`");
        }
    }
    let n_steps = steps.len();
    let mut results = Vec::with_capacity(n_steps);
    for (step_idx, step) in steps.iter().enumerate() {
        println!();
        println!(
            "==> ci step {}/{n_steps}: {} ({})",
            step_idx + 1,
            step.name,
            step.what
        );
        let started = Instant::now();
        let outcome = (step.run)(&ctx).unwrap_or_else(|err| {
            println!("{}: ERROR: {err:#}", step.name);
            Outcome::failed()
        });
        let secs = started.elapsed().as_secs_f64();
        println!("<== {}: {} in {secs:.1} s", step.name, outcome.describe());
        results.push((step.name, outcome, secs));
    }

    println!();
    println!("ci summary:");
    let mut total = Outcome::default();
    let width = results
        .iter()
        .map(|(_, outcome, _)| outcome.describe().len())
        .max()
        .unwrap_or(0);
    for (name, outcome, secs) in &results {
        println!("  {name:<10} {:<width$} {secs:>7.1} s", outcome.describe());
        // What failed, repeated here: a reader of only the log's tail must see it.
        if outcome.failed > 0 {
            for line in &outcome.details {
                println!("      | {line}");
            }
        }
        total.passed += outcome.passed;
        total.failed += outcome.failed;
    }
    // Flush before the last line so that nothing a child wrote can land after it.
    std::io::stdout().flush()?;
    println!("{} passed, {} failed", total.passed, total.failed);
    Ok(if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The CI steps in the order they run. Append new steps here.
fn steps() -> Vec<Step> {
    vec![
        Step {
            name: "fmt",
            what: "cargo fmt --all -- --check",
            run: fmt,
        },
        Step {
            name: "clippy",
            what: "cargo clippy --workspace --all-targets -- -D warnings",
            run: clippy,
        },
        Step {
            name: "docs",
            what: "RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps",
            run: docs,
        },
        Step {
            name: "test",
            what: "cargo test --workspace, one count per test",
            run: test,
        },
        Step {
            name: "package",
            what: "cargo publish --workspace --dry-run --allow-dirty: every published crate packaged and built alone",
            run: package,
        },
        Step {
            name: "conform",
            what: "plotstream conform against plotstream serve, and its calibration",
            run: conform,
        },
        Step {
            name: "cluster",
            what: "three plotstream serve --redis nodes on a real redis-server: conform against one, load --verify with every viewer on another node",
            run: cluster,
        },
        Step {
            name: "compat",
            what: "the real Plotly clients against plotstream serve, one count per case",
            run: compat,
        },
        Step {
            name: "wheel",
            what: "the Python wheel (maturin, dev profile) in a fresh venv: README.md's \"For Python users\" blocks as written, then the tutorial against the venv's plotstream",
            run: wheel_check,
        },
        Step {
            name: "cross",
            what: "packaging/'s sample config through serve --print-config; plotstream for aarch64 (cross gcc, profile cross-ci) run under qemu: --version, a writer, the inspection",
            run: cross_check,
        },
        Step {
            name: "fuzz",
            what: "cargo +nightly fuzz without ASan: every corpus input once, then a short run of every target",
            run: fuzz_smoke,
        },
        Step {
            name: "browser",
            what: "the demo's live view, a node losing Redis, a day of history, in headless Chromium (xtask/browser/*.mjs)",
            run: browser_check,
        },
    ]
}

/// One named CI step.
#[derive(Debug)]
struct Step {
    name: &'static str,
    /// What the step runs, for its header line.
    what: &'static str,
    /// Runs the step. `Err` means the step could not run at all and counts as one failure.
    run: fn(&Ctx) -> Result<Outcome>,
}

/// Options every step can read.
#[derive(Debug)]
struct Ctx {
    fuzz_secs: u64,
}

/// What a step contributes to the final `N passed, M failed`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Outcome {
    passed: u64,
    failed: u64,
    /// Why the step did not run, if it was skipped.
    skipped: Option<String>,
    /// The checks of a step that ran which the machine could not make, with why.
    skipped_parts: Vec<String>,
    /// What failed, in the step's own words (see `util::FailureLines`).
    details: Vec<String>,
}

impl Outcome {
    fn check(ok: bool) -> Outcome {
        if ok {
            Outcome::passed()
        } else {
            Outcome::failed()
        }
    }

    fn passed() -> Outcome {
        Outcome {
            passed: 1,
            ..Outcome::default()
        }
    }

    fn failed() -> Outcome {
        Outcome {
            failed: 1,
            ..Outcome::default()
        }
    }

    fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome {
            skipped: Some(reason.into()),
            ..Outcome::default()
        }
    }

    /// The outcome of a step of several checks, its skip said on a line of its own.
    fn from_checked(step: &str, checked: util::Checked) -> Outcome {
        if let Some(reason) = checked.skipped {
            println!("{step}: SKIPPED ({reason})");
            return Outcome::skipped(reason);
        }
        Outcome {
            passed: checked.passed,
            failed: checked.failed,
            skipped: None,
            skipped_parts: checked.skipped_parts,
            details: checked.failures,
        }
    }

    fn describe(&self) -> String {
        let text = match &self.skipped {
            Some(reason) => return format!("SKIPPED ({reason})"),
            None if self.failed == 0 => format!("ok, {} passed", self.passed),
            None => format!("FAILED, {} passed, {} failed", self.passed, self.failed),
        };
        if self.skipped_parts.is_empty() {
            text
        } else {
            format!(
                "{text}, {} SKIPPED ({})",
                self.skipped_parts.len(),
                self.skipped_parts.join("; ")
            )
        }
    }
}

fn fmt(_: &Ctx) -> Result<Outcome> {
    let ok = util::run_echoed(&mut util::cargo(["fmt", "--all", "--", "--check"]))?;
    Ok(Outcome::check(ok))
}

fn clippy(_: &Ctx) -> Result<Outcome> {
    let mut cmd = util::cargo([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    Ok(Outcome::check(util::run_echoed(&mut cmd)?))
}

/// The API documentation with every rustdoc warning an error (broken intra-doc links among them).
fn docs(_: &Ctx) -> Result<Outcome> {
    let mut cmd = util::cargo(["doc", "--workspace", "--no-deps"]);
    cmd.env("RUSTDOCFLAGS", "-D warnings");
    Ok(Outcome::check(util::run_echoed(&mut cmd)?))
}

/// Packages the crates crates.io gets, in dependency order, and builds each from its package
/// alone (their dependencies on each other resolve to the packages just made, not to
/// crates.io), as `cargo publish` would before uploading. `--allow-dirty`: it checks what
/// would ship, not whether the checkout is committed. It reads the crates.io index.
fn package(_: &Ctx) -> Result<Outcome> {
    let mut cmd = util::cargo(["publish", "--workspace", "--dry-run", "--allow-dirty"]);
    Ok(Outcome::check(util::run_echoed(&mut cmd)?))
}

/// Runs every test, echoing the harness output while summing its `test result:` lines.
fn test(_: &Ctx) -> Result<Outcome> {
    // `--no-fail-fast`: a failing test binary must not hide the results of the others.
    let mut cmd = util::cargo(["test", "--workspace", "--no-fail-fast"]);
    println!("$ {}", util::display_command(&cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child
        .stdout
        .take()
        .context("cargo test has no stdout pipe")?;

    let mut outcome = Outcome::default();
    let details = util::echo_lines(stdout, |text| {
        if let Some((passed, failed)) = parse_test_result(text) {
            outcome.passed += passed;
            outcome.failed += failed;
        }
    });

    let status = child.wait().context("cannot wait for cargo test")?;
    if !status.success() && outcome.failed == 0 {
        // A build failure or a crashed test binary: no `test result:` line says so.
        println!("test: cargo test failed ({status}) without a failing test result; counted as one failure");
        outcome.failed += 1;
    }
    outcome.details = details;
    Ok(outcome)
}

/// Runs the compat suite (xtask/src/compat/): each real-client case is one count.
fn compat(_: &Ctx) -> Result<Outcome> {
    let tally = compat::suite(&[])?;
    Ok(Outcome {
        passed: tally.passed,
        failed: tally.failed,
        skipped: None,
        skipped_parts: Vec::new(),
        details: tally.failures,
    })
}

/// Several nodes on one Redis (`cluster::check`): two checks, or skipped without redis-server.
fn cluster(_: &Ctx) -> Result<Outcome> {
    Ok(Outcome::from_checked("cluster", crate::cluster::check()?))
}

/// The Python package (`wheel::check`): the README's blocks and the tutorial against the
/// installed wheel, or skipped without python3's venv or maturin.
fn wheel_check(_: &Ctx) -> Result<Outcome> {
    Ok(Outcome::from_checked("wheel", wheel::check()?))
}

/// The ARM build and the service's files (`cross::check`); a part the machine cannot make is
/// skipped.
fn cross_check(_: &Ctx) -> Result<Outcome> {
    Ok(Outcome::from_checked("cross", cross::check()?))
}

/// The conformance suite against our server (one check) and its calibration (one check).
fn conform(_: &Ctx) -> Result<Outcome> {
    let checked = conform_suite::check(false, &[])?;
    let (suite, calibration) = (checked.suite, checked.calibration);
    Ok(Outcome {
        passed: u64::from(suite) + u64::from(calibration),
        failed: u64::from(!suite) + u64::from(!calibration),
        skipped: None,
        skipped_parts: Vec::new(),
        details: checked.failures,
    })
}

/// `cargo xtask fuzz --smoke` (`fuzz::smoke`), when cargo-fuzz is available: one build without
/// ASan, the committed corpus of every fuzz target replayed, then a few seconds of each (two at
/// a time, new inputs into scratch directories). One check per target for the replay and one
/// for the run.
fn fuzz_smoke(ctx: &Ctx) -> Result<Outcome> {
    if env::var_os("XTASK_SKIP_FUZZ").is_some_and(|value| value == "1") {
        println!("fuzz: SKIPPED (XTASK_SKIP_FUZZ=1)");
        return Ok(Outcome::skipped("XTASK_SKIP_FUZZ=1"));
    }
    if let Err(reason) = fuzz::check_available() {
        println!("fuzz: SKIPPED ({reason})");
        return Ok(Outcome::skipped(reason));
    }
    let targets = fuzz::targets()?;
    let mut outcome = Outcome::default();
    // Every target is built once, so a build failure is reported once, not per target.
    let Some(fuzz::Smoke { replays, runs }) = fuzz::smoke(&targets, ctx.fuzz_secs)? else {
        println!("fuzz: the build failed; every target counts as failed");
        outcome.failed += 2 * u64::try_from(targets.len())?;
        outcome
            .details
            .push("the fuzz targets do not build".to_owned());
        return Ok(outcome);
    };
    for (what, report) in replays
        .iter()
        .map(|r| ("replay", r))
        .chain(runs.iter().map(|r| ("run", r)))
    {
        if report.ok {
            outcome.passed += 1;
        } else {
            outcome.failed += 1;
            outcome
                .details
                .push(format!("{what} {}: {}", report.target, report.summary));
        }
    }
    Ok(outcome)
}

/// Opens the demo's live view in headless Chromium, when Chromium, node and npm are installed.
fn browser_check(_: &Ctx) -> Result<Outcome> {
    match browser::check_available() {
        Ok(chromium) => Ok(Outcome::check(browser::check(&chromium)?)),
        Err(reason) => {
            println!("browser: SKIPPED ({reason})");
            Ok(Outcome::skipped(reason))
        }
    }
}

/// `(passed, failed)` from a libtest summary line such as
/// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut passed = None;
    let mut failed = None;
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(count), Some(label)) = (words.next(), words.next()) else {
            continue;
        };
        match label {
            "passed" => passed = count.parse().ok(),
            "failed" => failed = count.parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(line: &str, expected: Option<(u64, u64)>) {
        assert_eq!(parse_test_result(line), expected, "line: {line:?}");
    }

    #[test]
    fn parses_libtest_summaries() {
        check(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            Some((12, 0)),
        );
        check(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s\n",
            Some((3, 2)),
        );
        check(
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            Some((0, 0)),
        );
        check("test foo::bar ... ok", None);
        check("running 3 tests", None);
        check("test result: ok. garbage", None);
    }

    #[test]
    fn outcomes_describe_themselves() {
        assert_eq!(Outcome::check(true).describe(), "ok, 1 passed");
        assert_eq!(
            Outcome::check(false).describe(),
            "FAILED, 0 passed, 1 failed"
        );
        assert_eq!(Outcome::skipped("why").describe(), "SKIPPED (why)");
        let partly = Outcome {
            skipped_parts: vec!["run: no qemu".to_owned()],
            ..Outcome::passed()
        };
        assert_eq!(partly.describe(), "ok, 1 passed, 1 SKIPPED (run: no qemu)");
    }

    #[test]
    fn step_names_are_unique() {
        let steps = steps();
        for (idx, step) in steps.iter().enumerate() {
            assert!(
                steps[..idx].iter().all(|other| other.name != step.name),
                "duplicate step {}",
                step.name
            );
        }
    }
}
