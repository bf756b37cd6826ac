//! `cargo xtask soak`: the long profile of the fault and load scenarios (RELIABILITY.md §6),
//! in release, with `PLOTSTREAM_SOAK=1` for larger counts. Bounded: each scenario stops by itself.

use std::process::{Command, ExitCode};

use anyhow::Result;

use crate::util::Args;

/// Runs the scenario and fault tests with the soak profile.
pub fn run(_args: Args) -> Result<ExitCode> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--release",
            "-p",
            "plotstream-server",
            "--test",
            "scenarios",
            "--test",
            "faults",
            "--",
            "--test-threads=1",
        ])
        .env("PLOTSTREAM_SOAK", "1")
        .status()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
