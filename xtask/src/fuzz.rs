//! `cargo xtask fuzz`: runs one cargo-fuzz target under the nightly toolchain.
//!
//! The targets are the `[[bin]]` entries of `fuzz/Cargo.toml`; each is a one-liner over
//! `plotstream_proto::fuzzing::check_*`. `fuzz/` is its own workspace, so it is driven with
//! `--fuzz-dir fuzz` from the repository root.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::util;

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let secs = args.value("--secs")?.unwrap_or(DEFAULT_SECS);
    let (positional, passthrough) = args.finish()?;
    let targets = targets()?;
    let Some(target) = positional.first() else {
        println!("fuzz targets (cargo xtask fuzz <target> [--secs N]):");
        for target in &targets {
            println!("  {target}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(extra) = positional.get(1) {
        bail!("one target at a time, got `{target}` and `{extra}`");
    }
    if !targets.contains(target) {
        bail!(
            "no fuzz target `{target}`; the targets are: {}",
            targets.join(", ")
        );
    }
    if let Err(reason) = check_available() {
        bail!("{reason}; install it with `cargo install cargo-fuzz --locked`");
    }
    let ok = util::run_echoed(&mut run_command(target, secs, &passthrough))?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The fuzz target names, in `fuzz/Cargo.toml` order.
pub(crate) fn targets() -> Result<Vec<String>> {
    let manifest = util::project_root().join("fuzz/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    Ok(util::manifest_entries(&text)
        .into_iter()
        .filter(|entry| entry.table == "bin" && entry.key == "name")
        .map(|entry| util::unquote(&entry.value).to_owned())
        .collect())
}

/// `Ok` if `cargo +nightly fuzz` runs, else the reason to print after `SKIPPED`.
pub(crate) fn check_available() -> Result<(), &'static str> {
    if !util::succeeds_quietly(&mut util::cargo(["+nightly", "--version"])) {
        return Err("no nightly toolchain; .ci/run installs it");
    }
    if !util::succeeds_quietly(&mut util::cargo(["+nightly", "fuzz", "--version"])) {
        return Err("cargo-fuzz not installed; .ci/run installs it");
    }
    Ok(())
}

/// Builds every fuzz target.
pub(crate) fn build_command() -> Command {
    util::cargo(["+nightly", "fuzz", "build", "--fuzz-dir", "fuzz"])
}

/// Runs `target` for `secs` seconds, with `extra` arguments for libFuzzer.
pub(crate) fn run_command(target: &str, secs: u64, extra: &[String]) -> Command {
    let mut cmd = util::cargo([
        "+nightly",
        "fuzz",
        "run",
        "--fuzz-dir",
        "fuzz",
        target,
        "--",
    ]);
    cmd.arg(format!("-max_total_time={secs}"));
    // A single input that runs this long is a hang worth reporting, not a slow machine.
    cmd.arg(format!("-timeout={INPUT_TIMEOUT_SECS}"));
    cmd.args(extra);
    cmd
}

const DEFAULT_SECS: u64 = 60;
const INPUT_TIMEOUT_SECS: u64 = 10;
