//! Running targets: fuzzing, replaying and merging into the committed corpus, several targets
//! at a time, each logged; libFuzzer's statistics; and CI's smoke run.

use std::{
    collections::VecDeque,
    fs::{self, File},
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    time::Instant,
};

use anyhow::{Context, Result};

use super::corpus::Corpus;
use super::toolchain::{cargo_fuzz, Build};
use crate::util;

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

/// Seconds of each target in CI's smoke run (`cargo xtask ci --fuzz-secs N` changes it):
/// thirteen targets two at a time take about eight times this (docs/fuzzing.md has the step's
/// budget: at 10 s the step took 295 of its 300 s).
pub(crate) const SMOKE_SECS: u64 = 6;
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
}
