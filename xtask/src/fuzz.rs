//! `cargo xtask fuzz`: the cargo-fuzz targets under the nightly toolchain, and their corpus.
//!
//! The targets are the `[[bin]]` entries of `fuzz/Cargo.toml` (a new target needs nothing
//! here); each is a one-liner over a `check_*` property of `plotstream_proto::fuzzing`,
//! `plotstream_server::fuzzing` or `plotstream_cases::fuzzing`. `fuzz/` is its own workspace,
//! so it is driven with `--fuzz-dir fuzz` from the repository root.
//!
//! The corpus of each target is committed in `fuzz/corpus/<target>/`. A run starts from it and
//! merges what it found back into it with `cargo fuzz cmin`, so the corpus grows and stays
//! small: it is minimized by edge coverage (`-use_counters=0`), so every input reaches an edge
//! that the inputs before it do not, and hit counts are left for the fuzzer to find again.
//! `--replay` runs every committed input once.
//!
//! Targets are built as cargo-fuzz builds them by default (release with debug assertions and
//! overflow checks, AddressSanitizer), except for CI's smoke run ([`smoke`], `--smoke`): it
//! builds without a sanitizer (`--no-asan`), into a target directory of its own, because the
//! cold build is most of the step's time, ASan costs it 40-60 % more CPU and slows the targets
//! 1.8-6 times, and our crates forbid `unsafe` (docs/fuzzing.md has the measurements).
//!
//! ```text
//! cargo xtask fuzz                              list the targets and their corpus sizes
//! cargo xtask fuzz TARGET... [--secs N]         fuzz each (default 60 s), merge into its corpus
//! cargo xtask fuzz --all [--secs N] [--jobs J]  every target, J at a time (default 2)
//! cargo xtask fuzz ... --no-merge               new inputs go to a scratch directory
//! cargo xtask fuzz ... --no-asan                build and run without AddressSanitizer
//! cargo xtask fuzz --replay [TARGET...]         every committed input once (-runs=0)
//! cargo xtask fuzz --smoke [--secs N]           CI's fuzz step: --no-asan, replay, N s each
//! cargo xtask fuzz --cmin [TARGET...]           only minimize the committed corpus
//! cargo xtask fuzz --coverage [TARGET...]       line coverage of each target over its corpus
//! ```
//!
//! Several targets run `--jobs` at a time, each with its output in
//! `fuzz/target/xtask-logs/<target>.log`; one line per target sums it up (runs, exec/s, coverage
//! counters, corpus before and after, or the crash and the tail of its log).
//!
//! The files: `corpus` (the targets and their committed corpus), `toolchain` (whether cargo-fuzz
//! is there, and how targets are built), `run` (fuzzing, replaying and merging, several targets
//! at a time, and CI's smoke run) and `coverage` (`--coverage`).

mod corpus;
mod coverage;
mod run;
mod toolchain;

use std::process::ExitCode;

use anyhow::{bail, Result};

pub(crate) use corpus::targets;
pub(crate) use run::{run_targets, smoke, Mode, Smoke, SMOKE_SECS};
pub(crate) use toolchain::{check_available, Build};

use crate::util;
use corpus::Corpus;
use coverage::print_coverage;

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let secs = args.value("--secs")?;
    let jobs = args.value("--jobs")?.unwrap_or(DEFAULT_JOBS).max(1);
    let all = args.flag("--all");
    let replay = args.flag("--replay");
    let coverage = args.flag("--coverage");
    let cmin = args.flag("--cmin");
    let no_merge = args.flag("--no-merge");
    let smoke_run = args.flag("--smoke");
    let build = if args.flag("--no-asan") {
        Build::NoSanitizer
    } else {
        Build::Asan
    };
    let (positional, passthrough) = args.finish()?;
    let known = targets()?;
    if let Some(unknown) = positional.iter().find(|t| !known.contains(t)) {
        bail!(
            "no fuzz target `{unknown}`; the targets are: {}",
            known.join(", ")
        );
    }
    if positional.is_empty() && !(all || replay || coverage || cmin || smoke_run) {
        println!("fuzz targets (cargo xtask fuzz <target>... | --all [--secs N]):");
        for target in &known {
            println!("  {target:<16} corpus {}", Corpus::of(target).describe());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen = if all || positional.is_empty() {
        known
    } else {
        positional
    };
    if let Err(reason) = check_available() {
        bail!("{reason}; install it with `cargo install cargo-fuzz --locked`");
    }
    let ok = if coverage {
        print_coverage(&chosen)?
    } else if smoke_run {
        let Some(smoke) = smoke(&chosen, secs.unwrap_or(SMOKE_SECS))? else {
            bail!("the fuzz targets do not build");
        };
        smoke.replays.iter().chain(&smoke.runs).all(|r| r.ok)
    } else {
        if !util::run_echoed(&mut build.command())? {
            bail!("the fuzz targets do not build");
        }
        let secs = secs.unwrap_or(DEFAULT_SECS);
        let mode = if replay {
            Mode::Replay
        } else if cmin {
            Mode::Minimize
        } else if no_merge {
            Mode::Scratch { secs }
        } else {
            Mode::Merge { secs }
        };
        run_targets(&chosen, mode, build, jobs, &passthrough)?
            .iter()
            .all(|report| report.ok)
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

const DEFAULT_SECS: u64 = 60;
const DEFAULT_JOBS: usize = 2;
