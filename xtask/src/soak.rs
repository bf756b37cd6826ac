//! `cargo xtask soak`: the long profile of the fault and load scenarios (docs/reliability.md §6),
//! in release, with `PLOTSTREAM_SOAK=1` for larger counts. Bounded: each scenario stops by itself.

use std::process::{Command, ExitCode};

use anyhow::Result;

use crate::util::Args;

/// Runs the scenario and fault tests, and S12 (which runs the binary under `ulimit -n`), with
/// the soak profile.
pub fn run(_args: Args) -> Result<ExitCode> {
    let runs: [&[&str]; 2] = [
        &[
            "-p",
            "plotstream-server",
            "--test",
            "scenarios",
            "--test",
            "faults",
        ],
        &["-p", "plotstream", "--test", "cli", "s12_"],
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
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
