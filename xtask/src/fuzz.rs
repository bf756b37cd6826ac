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

use std::{
    collections::VecDeque,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::Mutex,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::util;

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

/// The fuzz target names, in `fuzz/Cargo.toml` order.
pub(crate) fn targets() -> Result<Vec<String>> {
    let manifest = util::project_root().join("fuzz/Cargo.toml");
    let text = fs::read_to_string(&manifest)
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

/// `cargo +nightly fuzz SUBCOMMAND --fuzz-dir fuzz`, without the variables `cargo run` set for
/// xtask itself (`CARGO_PKG_NAME=xtask`, `CARGO_MANIFEST_DIR`, …): ring's build script asks
/// cargo to rerun when `CARGO_PKG_NAME` changes, and cargo compares it with its own
/// environment, so a `cargo fuzz` typed in a shell and one run by xtask rebuilt ring, rustls
/// and plotstream-server (20-30 s) each time the other had built last.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = util::cargo(["+nightly", "fuzz", subcommand, "--fuzz-dir", "fuzz"]);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*name)
        {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

/// How the fuzz targets are built (and so run: `cargo fuzz run` builds first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// cargo-fuzz's default: release, debug assertions and overflow checks, AddressSanitizer,
    /// in `fuzz/target`. For `cargo xtask fuzz` and soak, which run long enough to find what
    /// only ASan sees (memory errors in the `unsafe` code of dependencies).
    Asan,
    /// The same without a sanitizer, in [`NO_SANITIZER_TARGET_DIR`] so that neither build
    /// invalidates the other. For CI's smoke run: the cold build costs 30-40 % less CPU
    /// (docs/fuzzing.md) and the targets run 1.8-6 times faster.
    NoSanitizer,
}

impl Build {
    /// `cargo fuzz build` of every target, in one invocation (one compile of the dependency
    /// graph; the `cargo fuzz run` of each target then finds it fresh).
    pub(crate) fn command(self) -> Command {
        let mut cmd = cargo_fuzz("build");
        cmd.args(self.options());
        cmd
    }

    /// The options `cargo fuzz build|run|cmin` take for this build.
    fn options(self) -> &'static [&'static str] {
        match self {
            Build::Asan => &[],
            Build::NoSanitizer => &[
                "--sanitizer",
                "none",
                "--target-dir",
                NO_SANITIZER_TARGET_DIR,
            ],
        }
    }
}

/// Where [`Build::NoSanitizer`] builds, relative to the repository root.
const NO_SANITIZER_TARGET_DIR: &str = "fuzz/target/no-sanitizer";

/// What CI's fuzz step found: one report per target for the replay and one for the run.
#[derive(Debug)]
pub(crate) struct Smoke {
    pub(crate) replays: Vec<Report>,
    pub(crate) runs: Vec<Report>,
}

/// CI's fuzz step (`cargo xtask ci`, `cargo xtask fuzz --smoke`): one build of every target
/// without a sanitizer, every committed input of each once, then `secs` seconds of each,
/// [`SMOKE_JOBS`] at a time, new inputs into scratch directories (the checkout is left as it
/// is). Prints the time of each phase. `None` if the targets do not build.
pub(crate) fn smoke(targets: &[String], secs: u64) -> Result<Option<Smoke>> {
    let build = Build::NoSanitizer;
    let started = Instant::now();
    if !util::run_echoed(&mut build.command())? {
        return Ok(None);
    }
    let built = Instant::now();
    let replays = run_targets(targets, Mode::Replay, build, SMOKE_JOBS, &[])?;
    let replayed = Instant::now();
    let runs = run_targets(targets, Mode::Scratch { secs }, build, SMOKE_JOBS, &[])?;
    println!(
        "fuzz: build {:.1} s, replay {:.1} s, runs {:.1} s",
        (built - started).as_secs_f64(),
        (replayed - built).as_secs_f64(),
        replayed.elapsed().as_secs_f64()
    );
    Ok(Some(Smoke { replays, runs }))
}

/// What a run of one target does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every committed input once (`-runs=0`); the corpus is left as it is.
    Replay,
    /// Fuzz for `secs` seconds from the committed corpus into a scratch directory that is
    /// thrown away (CI: a run must not change the checkout).
    Scratch { secs: u64 },
    /// Fuzz for `secs` seconds into the committed corpus, then minimize it (`cargo fuzz cmin`).
    Merge { secs: u64 },
    /// Only minimize the committed corpus.
    Minimize,
}

/// How one target's run went.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) target: String,
    pub(crate) ok: bool,
    /// One line: runs, exec/s, coverage counters, corpus sizes, or what failed.
    pub(crate) summary: String,
}

/// Runs `targets` in `mode`, `jobs` at a time, with `extra` arguments for libFuzzer; prints one
/// line per target as it finishes (and the tail of its log if it failed). The fuzz targets must
/// be built already ([`Build::command`]).
pub(crate) fn run_targets(
    targets: &[String],
    mode: Mode,
    build: Build,
    jobs: usize,
    extra: &[String],
) -> Result<Vec<Report>> {
    let log_dir = util::project_root().join("fuzz/target/xtask-logs");
    fs::create_dir_all(&log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
    let queue = Mutex::new(targets.iter().cloned().collect::<VecDeque<_>>());
    let reports = Mutex::new(Vec::new());
    let what = match mode {
        Mode::Replay => "replaying the committed corpus of".to_owned(),
        Mode::Minimize => "minimizing the committed corpus of".to_owned(),
        Mode::Scratch { secs } | Mode::Merge { secs } => format!("{secs} s of"),
    };
    println!(
        "fuzz: {what} {} target(s), {jobs} at a time; logs in {}",
        targets.len(),
        log_dir.display()
    );
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(targets.len()) {
            // The guard moves into `and_then`'s closure and drops there: no worker holds the
            // queue while it runs a target. A poisoned lock (a panicking worker) ends the
            // others; the scope re-raises the panic.
            scope.spawn(|| {
                while let Some(target) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                    let report =
                        run_one(&target, mode, build, extra, &log_dir).unwrap_or_else(|err| {
                            Report {
                                target: target.clone(),
                                ok: false,
                                summary: format!("ERROR: {err:#}"),
                            }
                        });
                    println!(
                        "fuzz: {:<16} {} {}",
                        report.target,
                        if report.ok { "ok    " } else { "FAILED" },
                        report.summary
                    );
                    if let Ok(mut reports) = reports.lock() {
                        reports.push(report);
                    }
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_default();
    reports.sort_by_key(|r| targets.iter().position(|t| *t == r.target));
    Ok(reports)
}

/// `cargo fuzz run` of `target` in `mode`, without the common libFuzzer options; `None` when
/// the mode runs no fuzzer.
fn fuzz_command(target: &str, mode: Mode, build: Build, corpus: &Path) -> Result<Option<Command>> {
    let mut cmd = cargo_fuzz("run");
    cmd.args(build.options()).arg(target);
    match mode {
        Mode::Minimize => return Ok(None),
        Mode::Replay => {
            cmd.arg(corpus).args(["--", "-runs=0"]);
        }
        Mode::Scratch { secs } => {
            // libFuzzer writes new inputs into the first directory only.
            let scratch = Path::new("fuzz/target/xtask-scratch").join(target);
            let _ = fs::remove_dir_all(util::project_root().join(&scratch));
            fs::create_dir_all(util::project_root().join(&scratch))?;
            cmd.arg(&scratch).arg(corpus).arg("--");
            cmd.arg(format!("-max_total_time={secs}"));
        }
        Mode::Merge { secs } => {
            cmd.arg(corpus).arg("--");
            cmd.arg(format!("-max_total_time={secs}"));
        }
    }
    Ok(Some(cmd))
}

fn run_one(
    target: &str,
    mode: Mode,
    build: Build,
    extra: &[String],
    log_dir: &Path,
) -> Result<Report> {
    let corpus = Path::new("fuzz/corpus").join(target);
    let before = Corpus::of(target);
    let log_path = log_dir.join(format!("{target}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let ran = if let Some(mut cmd) = fuzz_command(target, mode, build, &corpus)? {
        // A single input that runs this long is a hang worth reporting, not a slow machine.
        cmd.arg(format!("-timeout={INPUT_TIMEOUT_SECS}"));
        cmd.arg("-print_final_stats=1");
        cmd.args(extra);
        let ok = run_logged(&mut cmd, &log)?;
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let stats = Stats::parse(&text);
        if !ok {
            let tail: Vec<&str> = text.lines().rev().take(LOG_TAIL).collect();
            for line in tail.iter().rev() {
                println!("    | {target}: {line}");
            }
            let found = stats
                .artifact
                .as_ref()
                .map_or_else(String::new, |a| format!(": {a}"));
            return Ok(Report {
                target: target.to_owned(),
                ok: false,
                summary: format!("{}{found} (log {})", stats.describe(), log_path.display()),
            });
        }
        format!("{}; ", stats.describe())
    } else {
        String::new()
    };
    let after = if let Mode::Merge { .. } | Mode::Minimize = mode {
        let mut cmin = cargo_fuzz("cmin");
        cmin.args(build.options())
            .arg(target)
            .arg(&corpus)
            .args(["--", "-use_counters=0"]);
        if !run_logged(&mut cmin, &log)? {
            return Ok(Report {
                target: target.to_owned(),
                ok: false,
                summary: format!("cargo fuzz cmin failed (log {})", log_path.display()),
            });
        }
        format!(" → {}", Corpus::of(target).describe())
    } else {
        String::new()
    };
    Ok(Report {
        target: target.to_owned(),
        ok: true,
        summary: format!("{ran}corpus {}{after}", before.describe()),
    })
}

/// Runs `cmd` with stdout and stderr appended to `log`; `Ok(true)` if it exited with 0.
fn run_logged(cmd: &mut Command, log: &File) -> Result<bool> {
    use std::io::Write as _;
    let mut header = log.try_clone()?;
    writeln!(header, "$ {}", util::display_command(cmd))?;
    let status = cmd
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log.try_clone()?))
        .status()
        .with_context(|| format!("cannot start `{}`", util::display_command(cmd)))?;
    Ok(status.success())
}

/// The committed corpus of a target: how many inputs and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Corpus {
    pub(crate) n_files: u64,
    pub(crate) n_bytes: u64,
}

impl Corpus {
    pub(crate) fn of(target: &str) -> Corpus {
        let dir = util::project_root().join("fuzz/corpus").join(target);
        let mut corpus = Corpus::default();
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() {
                    corpus.n_files += 1;
                    corpus.n_bytes += meta.len();
                }
            }
        }
        corpus
    }

    fn describe(self) -> String {
        let size = if self.n_bytes < 10 * 1024 {
            format!("{} B", self.n_bytes)
        } else {
            format!("{} KiB", self.n_bytes / 1024)
        };
        format!("{} inputs, {size}", self.n_files)
    }
}

/// What libFuzzer's output (with `-print_final_stats=1`) says about a run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    runs: Option<u64>,
    execs_per_sec: Option<u64>,
    /// `cov:` and `ft:` of the last status line: edges and features reached.
    cov: Option<(u64, u64)>,
    new_units: Option<u64>,
    /// The input that failed, as libFuzzer wrote it (`Test unit written to ...`).
    artifact: Option<String>,
}

impl Stats {
    fn parse(log: &str) -> Stats {
        let mut stats = Stats::default();
        for line in log.lines() {
            let stat = |name: &str| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.trim().trim_start_matches(':').trim().parse().ok())
            };
            if let Some(n) = stat("stat::number_of_executed_units") {
                stats.runs = Some(n);
            } else if let Some(n) = stat("stat::average_exec_per_sec") {
                stats.execs_per_sec = Some(n);
            } else if let Some(n) = stat("stat::new_units_added") {
                stats.new_units = Some(n);
            } else if let Some(path) = line.split("Test unit written to ").nth(1) {
                stats.artifact = Some(path.trim().to_owned());
            }
            let word_after = |key: &str| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == key)?;
                words.next()?.parse().ok()
            };
            if let (Some(cov), Some(ft)) = (word_after("cov:"), word_after("ft:")) {
                stats.cov = Some((cov, ft));
            }
        }
        stats
    }

    fn describe(&self) -> String {
        let or_dash = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let (cov, ft) = self.cov.map_or((None, None), |(c, f)| (Some(c), Some(f)));
        format!(
            "{} runs, {} exec/s, cov {} ft {}, {} new",
            or_dash(self.runs),
            or_dash(self.execs_per_sec),
            or_dash(cov),
            or_dash(ft),
            or_dash(self.new_units)
        )
    }
}

/// `cargo fuzz coverage` of each target over its committed corpus, then `llvm-cov export`:
/// prints the line coverage of every source file of ours that the target reaches.
fn print_coverage(targets: &[String]) -> Result<bool> {
    let llvm_cov = llvm_cov()?;
    let root = util::project_root();
    let mut ok = true;
    for target in targets {
        let corpus = Path::new("fuzz/corpus").join(target);
        let mut cmd = cargo_fuzz("coverage");
        cmd.arg(target);
        cmd.arg(&corpus);
        if !util::succeeds_quietly(&mut cmd) {
            println!(
                "coverage {target}: FAILED (`{}`)",
                util::display_command(&cmd)
            );
            ok = false;
            continue;
        }
        // cargo-fuzz builds for coverage under `<current dir>/target/<host>/coverage`, apart
        // from the fuzzing build, whatever the target directory.
        let host = host_triple()?;
        let binary = root
            .join("target")
            .join(&host)
            .join("coverage")
            .join(&host)
            .join("release")
            .join(target);
        let profdata = root
            .join("fuzz/coverage")
            .join(target)
            .join("coverage.profdata");
        let output = Command::new(&llvm_cov)
            .arg("export")
            .arg("-summary-only")
            .arg(format!("-instr-profile={}", profdata.display()))
            .arg(&binary)
            .output()
            .with_context(|| format!("cannot run {}", llvm_cov.display()))?;
        if !output.status.success() {
            println!(
                "coverage {target}: llvm-cov failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            ok = false;
            continue;
        }
        let mut files = covered_files(&output.stdout, &root)?;
        let report = Command::new(&llvm_cov)
            .args(["report", "-show-functions"])
            .arg(format!("-instr-profile={}", profdata.display()))
            .arg(&binary)
            .args(files.iter().map(|f| root.join(&f.path)))
            .output()
            .with_context(|| format!("cannot run {}", llvm_cov.display()))?;
        add_reached_functions(&String::from_utf8_lossy(&report.stdout), &root, &mut files);
        let sum = |f: fn(&FileCoverage) -> (u64, u64)| {
            files
                .iter()
                .map(f)
                .fold((0, 0), |(c, n), (fc, fnn)| (c + fc, n + fnn))
        };
        let (covered, count) = sum(|f| (f.covered, f.count));
        let (fn_covered, fn_count) = sum(|f| f.in_functions);
        println!(
            "coverage {target} ({}): {} of the {fn_count} lines of the functions it reaches; \
             {} of the {count} lines of the {} files",
            Corpus::of(target).describe(),
            percent(fn_covered, fn_count),
            percent(covered, count),
            files.len()
        );
        for f in &files {
            println!(
                "  {:<44} functions {:>7} ({:>4}/{:<4}) file {:>7} ({}/{})",
                f.path,
                percent(f.in_functions.0, f.in_functions.1),
                f.in_functions.0,
                f.in_functions.1,
                percent(f.covered, f.count),
                f.covered,
                f.count
            );
        }
    }
    Ok(ok)
}

/// Line coverage of one source file.
#[derive(Debug, PartialEq, Eq)]
struct FileCoverage {
    /// Relative to the repository root.
    path: String,
    covered: u64,
    count: u64,
    /// `(covered, count)` over the functions (closures included) with a line reached.
    in_functions: (u64, u64),
}

/// The files of this repository (not the fuzz targets themselves, not dependencies) with at
/// least one line reached, from `llvm-cov export -summary-only` JSON.
fn covered_files(json: &[u8], root: &Path) -> Result<Vec<FileCoverage>> {
    let export: serde_json::Value =
        serde_json::from_slice(json).context("llvm-cov export gave no JSON")?;
    let root = format!("{}/", root.display());
    let mut files = Vec::new();
    for file in export["data"][0]["files"].as_array().into_iter().flatten() {
        let Some(path) = file["filename"].as_str() else {
            continue;
        };
        let Some(path) = path.strip_prefix(&root) else {
            continue;
        };
        if !path.starts_with("crates/") {
            continue;
        }
        let lines = &file["summary"]["lines"];
        let (Some(covered), Some(count)) = (lines["covered"].as_u64(), lines["count"].as_u64())
        else {
            continue;
        };
        if covered > 0 {
            files.push(FileCoverage {
                path: path.to_owned(),
                covered,
                count,
                in_functions: (0, 0),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Adds to `files` the lines of the functions with a line reached, from `llvm-cov report
/// -show-functions`: a `File '…':` line, then one row per function, `NAME` and nine columns
/// (regions, missed, cover, lines, missed, cover, branches, missed, cover).
fn add_reached_functions(report: &str, root: &Path, files: &mut [FileCoverage]) {
    let root = format!("{}/", root.display());
    let mut current: Option<usize> = None;
    for line in report.lines() {
        if let Some(path) = line
            .strip_prefix("File '")
            .and_then(|l| l.strip_suffix("':"))
        {
            let path = path.strip_prefix(&root).unwrap_or(path);
            current = files.iter().position(|f| f.path == path);
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(idx), [name, _, _, _, lines, missed, _, _, _, _]) = (current, &fields[..]) else {
            continue;
        };
        let (Ok(lines), Ok(missed)) = (lines.parse::<u64>(), missed.parse::<u64>()) else {
            continue;
        };
        if *name != "TOTAL" && missed < lines {
            let f = &mut files[idx].in_functions;
            *f = (f.0 + lines - missed, f.1 + lines);
        }
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    // Counts of source lines: far below 2^52, exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let p = part as f64 * 100.0 / whole as f64;
    format!("{p:.1} %")
}

/// The nightly toolchain's `llvm-cov` (component `llvm-tools-preview`).
fn llvm_cov() -> Result<PathBuf> {
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("cannot run rustc +nightly")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let path = sysroot
        .join("lib/rustlib")
        .join(host_triple()?)
        .join("bin/llvm-cov");
    if !path.exists() {
        bail!(
            "no {}; add it with `rustup component add llvm-tools-preview --toolchain nightly`",
            path.display()
        );
    }
    Ok(path)
}

fn host_triple() -> Result<String> {
    let output = Command::new("rustc")
        .args(["+nightly", "-vV"])
        .output()
        .context("cannot run rustc +nightly -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

const DEFAULT_SECS: u64 = 60;
const DEFAULT_JOBS: usize = 2;
/// Seconds of each target in CI's smoke run (`cargo xtask ci --fuzz-secs N` changes it):
/// twelve targets two at a time take about six to eight times this (docs/fuzzing.md has the
/// step's budget).
pub(crate) const SMOKE_SECS: u64 = 10;
/// Targets run at once in CI's smoke run (the CI machine has two cores).
const SMOKE_JOBS: usize = 2;
const INPUT_TIMEOUT_SECS: u64 = 10;
/// Lines of a failed run's log printed under its summary.
const LOG_TAIL: usize = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_stats(log: &str, expected: &Stats) {
        assert_eq!(&Stats::parse(log), expected);
    }

    #[test]
    fn reads_libfuzzer_output() {
        check_stats(
            "#766529\tNEW    cov: 888 ft: 4042 corp: 1100/161Kb lim: 1527 exec/s: 3275 rss: 427Mb\n\
             Done 954182 runs in 301 second(s)\n\
             stat::number_of_executed_units: 954182\n\
             stat::average_exec_per_sec:     3170\n\
             stat::new_units_added:          1090\n",
            &Stats {
                runs: Some(954_182),
                execs_per_sec: Some(3170),
                cov: Some((888, 4042)),
                new_units: Some(1090),
                artifact: None,
            },
        );
        check_stats(
            "==1== ERROR: libFuzzer: deadly signal\n\
             artifact_prefix='/r/fuzz/artifacts/head/'; Test unit written to /r/fuzz/artifacts/head/crash-ab12\n",
            &Stats {
                artifact: Some("/r/fuzz/artifacts/head/crash-ab12".to_owned()),
                ..Stats::default()
            },
        );
        check_stats("", &Stats::default());
        assert_eq!(
            Stats::default().describe(),
            "- runs, - exec/s, cov - ft -, - new"
        );
    }

    #[test]
    fn builds_and_runs_the_same_flavour() {
        let corpus = Path::new("fuzz/corpus/head");
        let replay = |build| {
            let cmd = fuzz_command("head", Mode::Replay, build, corpus).unwrap();
            util::display_command(&cmd.unwrap())
        };
        assert_eq!(
            replay(Build::Asan),
            "cargo +nightly fuzz run --fuzz-dir fuzz head fuzz/corpus/head -- -runs=0"
        );
        assert_eq!(
            replay(Build::NoSanitizer),
            "cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none --target-dir \
             fuzz/target/no-sanitizer head fuzz/corpus/head -- -runs=0"
        );
        assert_eq!(
            util::display_command(&Build::NoSanitizer.command()),
            "cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer none --target-dir \
             fuzz/target/no-sanitizer"
        );
        assert!(fuzz_command("head", Mode::Minimize, Build::Asan, corpus)
            .unwrap()
            .is_none());
    }

    #[test]
    fn keeps_our_reached_files_from_llvm_cov_export() {
        let json = br#"{"data":[{"files":[
            {"filename":"/r/crates/plotstream-proto/src/head.rs","summary":{"lines":{"count":200,"covered":190}}},
            {"filename":"/r/crates/plotstream-proto/src/json.rs","summary":{"lines":{"count":500,"covered":0}}},
            {"filename":"/r/fuzz/fuzz_targets/head.rs","summary":{"lines":{"count":1,"covered":1}}},
            {"filename":"/home/.cargo/registry/src/httparse/src/lib.rs","summary":{"lines":{"count":900,"covered":300}}}
        ]}]}"#;
        assert_eq!(
            covered_files(json, Path::new("/r")).unwrap(),
            vec![FileCoverage {
                path: "crates/plotstream-proto/src/head.rs".to_owned(),
                covered: 190,
                count: 200,
                in_functions: (0, 0),
            }]
        );
        let mut files = covered_files(json, Path::new("/r")).unwrap();
        let report = "File '/r/crates/plotstream-proto/src/head.rs':\n\
            Name      Regions    Miss   Cover     Lines    Miss   Cover  Branches    Miss   Cover\n\
            --------------------------------------------------------------------------------\n\
            _RNvparse      10       2  80.00%        20       3  85.00%         0       0   0.00%\n\
            _RNvunused      4       4   0.00%         6       6   0.00%         0       0   0.00%\n\
            _RNvcheck       2       0 100.00%         5       0 100.00%         0       0   0.00%\n\
            TOTAL          16       6  62.50%        31       9  70.97%         0       0   0.00%\n";
        add_reached_functions(report, Path::new("/r"), &mut files);
        assert_eq!(files[0].in_functions, (22, 25));
        assert_eq!(percent(190, 200), "95.0 %");
        assert_eq!(percent(0, 0), "-");
    }
}
