//! `cargo xtask soak`: the long profile of the fault and load scenarios (docs/reliability.md §6),
//! in release, with `PLOTSTREAM_SOAK=1` for larger counts, then every fuzz target for ten
//! minutes (two at a time), merged into its committed corpus. Bounded: each scenario stops by
//! itself.

use std::process::{Command, ExitCode};

use anyhow::Result;

use crate::{fuzz, util, util::Args};

/// Runs the scenario and fault tests, and S12 (which runs the binary under `ulimit -n`), with
/// the soak profile; then each fuzz target for `--fuzz-secs` (default 600) when cargo-fuzz is
/// available, merging what it found into `fuzz/corpus/<target>/` (commit it).
pub fn run(mut args: Args) -> Result<ExitCode> {
    let fuzz_secs = args.value("--fuzz-secs")?.unwrap_or(FUZZ_SECS);
    let (positional, _) = args.finish()?;
    if let Some(extra) = positional.first() {
        anyhow::bail!("`soak` takes no positional argument, got `{extra}`");
    }
    let runs: [&[&str]; 3] = [
        &[
            "-p",
            "plotstream-server",
            "--test",
            "scenarios",
            "--test",
            "faults",
        ],
        &["-p", "plotstream", "--test", "cli", "s12_"],
        // docs/storage.md: 500 SIGKILL cycles of the crash test.
        &["-p", "plotstream", "--test", "durability"],
    ];
    let mut ok = true;
    for args in runs {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["test", "--release"])
            .args(args)
            .args(["--", "--test-threads=1"])
            .env("PLOTSTREAM_SOAK", "1")
            .status()?;
        ok &= status.success();
    }
    match fuzz::check_available() {
        Err(reason) => println!("soak: fuzz SKIPPED ({reason})"),
        Ok(()) if fuzz_secs == 0 => println!("soak: fuzz SKIPPED (--fuzz-secs 0)"),
        Ok(()) => {
            let targets = fuzz::targets()?;
            let build = fuzz::Build::Asan;
            if util::run_echoed(&mut build.command())? {
                let mode = fuzz::Mode::Merge { secs: fuzz_secs };
                let reports = fuzz::run_targets(&targets, mode, build, FUZZ_JOBS, &[])?;
                ok &= reports.iter().all(|r| r.ok);
            } else {
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Each fuzz target runs this long in a soak (issue #16: at least ten minutes).
const FUZZ_SECS: u64 = 600;
/// Fuzz targets at once (two cores).
const FUZZ_JOBS: usize = 2;
