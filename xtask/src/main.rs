//! plotstream's automation, in the rust-analyzer `xtask` style: every task that CI or a developer
//! runs is a subcommand of this binary, so the only prerequisite is cargo.
//!
//! ```text
//! cargo xtask ci [--fuzz-secs N]          fmt, clippy, tests, compat, fuzz replay + smoke, browser; last line `N passed, M failed`
//! cargo xtask compat [FILTER...] [--list] the real Plotly clients against `plotstream serve`
//! cargo xtask conform [--release]         the conformance catalogue against `plotstream serve`, and its calibration
//! cargo xtask fuzz [TARGET...|--all]      fuzz targets, merged into fuzz/corpus; --replay, --smoke (CI's step), --coverage
//! cargo xtask bench [FILTER] [--no-run]   criterion benches, summarised into bench-summary.json
//! cargo xtask bench ingest                plotstream serve under plotstream load, beside TCP and hyper
//! cargo xtask bench history               history reads (downsampled, CSV export), beside the same without tiers
//! cargo xtask bench engines               redb, fjall and SQLite on the durable store's workload
//! cargo xtask browser                     the live viewer in headless Chromium; a screenshot
//! cargo xtask wheel [--target TRIPLE]    the Python wheel (maturin, release) into <target>/wheels
//! cargo xtask cross [--target TRIPLE]     release binaries for ARM boards (aarch64, armv7), with their sizes
//! ```
//!
//! The tidy checks are `#[test]`s in `tidy/`, so `cargo test --workspace` (and with it
//! `cargo xtask ci`) runs them. The servers and other children the commands start are handled by
//! `process.rs`, one way for all of them.

mod bench;
mod bench_history;
mod bench_ingest;
mod bench_summary;
mod browser;
mod ci;
mod cluster;
mod compat;
mod conform;
mod cross;
mod fuzz;
mod http;
mod process;
mod redis;
mod soak;
#[cfg(test)]
mod tidy;
mod util;
mod venv;
mod wheel;

use std::process::ExitCode;

use anyhow::{bail, Result};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("{HELP}");
        return Ok(ExitCode::FAILURE);
    };
    let args = util::Args::new(args.collect());
    match command.as_str() {
        "ci" => ci::run(args),
        "conform" => conform::run(args),
        "compat" => compat::run(args),
        "fuzz" => fuzz::run(args),
        "bench" => bench::run(args),
        "browser" => browser::run(args),
        "soak" => soak::run(args),
        "wheel" => wheel::run(args),
        "cross" => cross::run(args),
        "help" | "-h" | "--help" => {
            println!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  ci [--fuzz-secs N]           fmt, clippy, every test, the compat suite, the wheel and cross checks,
       [--step NAME]           `fuzz --smoke` (a replay of every fuzz corpus, then N s of each target,
                               default 10, two at a time, built without ASan to stay well under
                               5 min), the browser check; the last line is `N passed, M failed`.
                               XTASK_SKIP_FUZZ=1 skips fuzzing; --step NAME runs one step
  compat [FILTER...] [--list]  the real clients (chart_studio 1.1.0 + plotly 6.0.0, npm plotly 1.0.6)
                               against `plotstream serve`, one line per case of docs/protocol.md §9.2 a
                               client plays (and F1-F6, U1-U5, S15); FILTER picks cases
                               by ID or name (`V11`);
                               installs the clients under <target>/compat
  conform [--release]          start plotstream serve (seven setups, keys mode among them) and run
       [-- CONFORM_ARGS]       `plotstream conform` against it; every MUST and COMPAT case, and group K
                               against keys mode, must pass; then the calibration against a broken
                               endpoint (cargo test -p plotstream-load --test conform_calibration)
  fuzz [TARGET...] [--secs N]  run cargo-fuzz targets for N seconds each (default 60) from their
       [--all] [--jobs J]      committed corpus fuzz/corpus/TARGET, and merge what they found into it
       [-- LIBFUZZER_ARGS]     (cargo fuzz cmin); --all: every target, J at a time (default 2);
                               without a target, list them with their corpus sizes; --no-merge:
                               new inputs go to a scratch directory (as in CI); --no-asan: build
                               and run without AddressSanitizer (own target dir); arguments after
                               `--` go to libFuzzer
  fuzz --smoke [--secs N]      CI's fuzz step: build every target without ASan (a cold build takes
                               half the CPU), run every committed input once, then N s of each
                               target (default 10), two at a time, nothing merged
  fuzz --cmin [TARGET...]      only minimize the committed corpus (by edges, -use_counters=0)
  fuzz --replay [TARGET...]    run every committed corpus input once (-runs=0), with ASan
  fuzz --coverage [TARGET...]  cargo fuzz coverage over each corpus, then llvm-cov: the line
                               coverage of each source file a target reaches (needs the nightly's
                               llvm-tools-preview)
  bench [FILTER] [--no-run]    run the criterion benches
       [-- CRITERION_ARGS]     (cargo bench -p plotstream-benches --bench '*' -- FILTER CRITERION_ARGS)
                               and merge their ours/baseline figures into <target>/bench-summary.json;
                               --no-run only summarises results criterion already has
  bench ingest                 plotstream serve (release) under plotstream load with 1, 100 and 10 000
                               streams, beside the loopback TCP ceiling and a hyper sink; the RSS of
                               10 000 idle streams; merged into <target>/bench-summary.json (~2 min)
  bench history                a day (86 400 points) and a week (6 048 000) written to plotstream serve
                               --data-dir (release), read back downsampled to 2 000 points with and
                               without tiers (median and p95 of 20, every answer checked) and exported
                               as CSV (MB/s, the server's peak VmRSS); into bench-summary.json (~2 min)
  bench engines [-- ARGS]      the embedded stores (redb 4.6 and 5.0, fjall, SQLite) on the durable
                               store's workload, from bench-engines/ (a workspace of its own):
                               group commit, start-up, disk use (docs/storage.md); data under
                               <target>/engines-tmp; ARGS: --secs N, --only ABC, engine names (~3 min)
  soak [--fuzz-secs N]         the long profile of the docs/reliability.md §6 scenarios and the fault tests
                               (release, PLOTSTREAM_SOAK=1), then every fuzz target for N s (default
                               600), two at a time, merged into fuzz/corpus
  browser                      build and start `plotstream serve --demo`, open its live view in headless
                               Chromium (xtask/browser/check.mjs) and check that the plot grows;
                               leaves <target>/browser-check.png
  wheel [--target TRIPLE]      build the Python wheel plotstream-server (python/pyproject.toml, maturin
                               from python/build-requirements.txt in <target>/wheel/maturin), release
                               and stripped, into <target>/wheels; prints its path and size; with
                               --target, for an ARM board (as `cross` builds it), into wheels/TRIPLE
  cross [--target TRIPLE]      build plotstream in release for aarch64-unknown-linux-gnu and
                               armv7-unknown-linux-gnueabihf with the system's cross gcc (Debian's
                               gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf
                               libc6-dev-armhf-cross; rustup target add), print each binary's size and
                               stripped size, leave the stripped copies in <target>/cross, and run each
                               under qemu-user when it is installed (--version, serve, a writer)";
