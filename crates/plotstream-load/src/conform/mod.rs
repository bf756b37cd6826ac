//! The conformance runner (docs/conform.md, docs/reliability.md §7–§8), shaped like h2spec and the
//! Autobahn|Testsuite: numbered cases with requirement levels, exact bytes, segmentation modes and
//! sets of acceptable outcomes, run against any Plotly-streaming endpoint.
//!
//! Data flow: `plotstream_cases` loads the TOML catalogue → `plan` picks each case's phase and
//! each variant's target, modes and split positions → `execute` gives a run fresh tokens, cuts
//! its bytes into writes per mode (`segment`) and has `wire` send them over one loopback
//! connection (or `script` several), `drivers` do what bytes cannot say, and the shared
//! `probe` module reads the inspection route, `/metrics` and a viewer → `observe` holds what a
//! run saw → `judge` matches it against the expected set and across modes → the `verdict`
//! types carry the outcome to `report`, which prints, writes JUnit and JSON.

mod drivers;
mod execute;
mod judge;
mod observe;
mod plan;
mod report;
mod script;
mod target;
mod timestamps;
mod verdict;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use plotstream_cases::SetupKind;
use tokio::sync::Semaphore;

pub use plotstream_cases::{catalogue, Case, Level};
pub use verdict::{CaseReport, Verdict};

use plan::{Opts, Runner};
use target::{Target, TokenSource};

/// `plotstream conform` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ConformArgs {
    /// The endpoint, e.g. http://127.0.0.1:9999, running the default setup (open tokens, strict
    /// lines, takeover).
    #[arg(long, required_unless_present = "list")]
    pub target: Option<String>,
    /// An endpoint running `--tokens registered`, for `[reg]` cases (else they are skipped).
    #[arg(long, value_name = "URL")]
    pub target_registered: Option<String>,
    /// An endpoint running `--lenient-lines`, for `[len]` cases.
    #[arg(long, value_name = "URL")]
    pub target_lenient: Option<String>,
    /// An endpoint running `--on-duplicate reject`, for `[rej]` cases.
    #[arg(long, value_name = "URL")]
    pub target_reject: Option<String>,
    /// An endpoint whose timers are the defaults divided by --timer-scale, for group E (and
    /// V3, V11, D9). Without it, --timer-scale applies to --target.
    #[arg(long, value_name = "URL")]
    pub target_timers: Option<String>,
    /// The timer target's L1, L2, L28, L29 are 60 s, 10 s, 60 s, 60 s divided by N; timer
    /// cases scale their pauses and bounds (± 100 ms at least). Without it group E is skipped.
    #[arg(long, value_name = "N")]
    pub timer_scale: Option<f64>,
    /// The main target's L11 (connections per peer address), for D11.
    #[arg(long, value_name = "N")]
    pub peer_limit: Option<usize>,
    /// An endpoint started under a low open-file limit (`ulimit -n 256`), for D2: the accept
    /// loop must survive EMFILE. Without it D2 is skipped.
    #[arg(long, value_name = "URL")]
    pub target_fd_limited: Option<String>,
    /// The open-file limit (RLIMIT_NOFILE) of --target-fd-limited; D2 opens 25/16 of it.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub fd_limit: usize,
    /// An endpoint with accounts (plotstream: `serve --users FILE`), for group K (accounts and
    /// ownership). Without it group K runs against --target, and an endpoint without accounts
    /// is NON-STRICT there.
    #[arg(long, value_name = "URL")]
    pub target_accounts: Option<String>,
    /// A user of the endpoint with accounts and its API key, for the group K cases that act as
    /// that user (`$user`, `$key`, `$auth` in their bytes; `plotstream user add NAME` prints
    /// both). Without it those cases are skipped.
    #[arg(long, value_name = "USER:KEY", value_parser = parse_credentials)]
    pub credentials: Option<(String, String)>,
    /// A stream id (write token) the --credentials user owns, for the group K cases that stream
    /// (`$sid`). Without it those cases are skipped.
    #[arg(long, value_name = "TOKEN")]
    pub stream_id: Option<String>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write one JSON report per case into this directory.
    #[arg(long, value_name = "DIR")]
    pub json: Option<PathBuf>,
    /// A failing SHOULD case fails the run (like h2spec -S).
    #[arg(long)]
    pub strict: bool,
    /// A failing SHOULD of this case (an id like K5, or a group letter like K) fails the run, as
    /// --strict does for every case; repeatable.
    #[arg(long = "strict-case", value_name = "ID")]
    pub strict_cases: Vec<String>,
    /// Run only these cases (an id like B5, or a group letter like E); repeatable.
    #[arg(long = "case", value_name = "ID")]
    pub cases: Vec<String>,
    /// List the catalogue and exit.
    #[arg(long)]
    pub list: bool,
    /// Print a hex dump of both directions for failing cases (with -v, for every case).
    #[arg(long)]
    pub hexdump: bool,
    /// Print every variant's expected and actual outcome and modes.
    #[arg(long, short)]
    pub verbose: bool,
    /// Seed for the random split positions of large inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Concurrent runs (connections) at most.
    #[arg(long, default_value_t = 32)]
    pub jobs: usize,
    /// At most this many split positions per variant (default: every offset up to 4 KiB, §7).
    #[arg(long, value_name = "N")]
    pub split_limit: Option<usize>,
    /// A limit whose breach counter (`plotstream_limit_breaches_total`) does not grow fails the
    /// case; by default it is a note.
    #[arg(long)]
    pub require_limit_counters: bool,
    /// The targets are debug (unoptimized) builds: skip the throughput floors (B24), which are
    /// set for release builds.
    #[arg(long)]
    pub unoptimized_target: bool,
}

impl ConformArgs {
    /// Parses `plotstream conform` arguments (without the program and subcommand names), for
    /// tests and embedders: `ConformArgs::from_args(["--target", url, "--case", "B5"])`.
    pub fn from_args<I, T>(args: I) -> Result<ConformArgs>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ConformArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("conform"))
            .chain(args.into_iter().map(Into::into));
        let cli =
            <Cli as clap::Parser>::try_parse_from(argv).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(cli.args)
    }

    /// The catalogue narrowed by `--case`.
    pub fn selected_cases(&self) -> Result<Vec<Case>> {
        select(self)
    }
}

/// Runs `plotstream conform`; returns the process exit code (0 only when nothing failed).
pub async fn run(args: ConformArgs) -> Result<i32> {
    let cases = select(&args)?;
    if args.list {
        for c in &cases {
            let variants = c.variants.len();
            println!(
                "{:<4} {:<6} {}{}",
                c.id,
                c.level.to_string(),
                c.title,
                if variants > 1 {
                    format!(" ({variants} variants)")
                } else {
                    String::new()
                }
            );
        }
        println!("{} cases", cases.len());
        return Ok(0);
    }
    let reports = run_cases(&args, cases, true).await?;
    let t = report::Totals::of(&reports);
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&reports))
            .map_err(Error::io(format!("cannot write {}", path.display())))?;
    }
    if let Some(dir) = &args.json {
        report::write_json(dir, &reports)?;
    }
    let notes: Vec<String> = reports.iter().flat_map(report::case_notes).collect();
    if !notes.is_empty() {
        println!();
        println!("notes ({}):", notes.len());
        for n in &notes {
            println!("  {n}");
        }
    }
    println!();
    println!("{}", t.breakdown());
    println!("{}", t.last_line());
    Ok(if report::failed(&reports) { 1 } else { 0 })
}

/// Runs the selected cases against the targets of `args` and returns their reports, in
/// catalogue order; with `print`, each case's block is printed as soon as it and every case
/// before it are done.
pub async fn run_cases(
    args: &ConformArgs,
    cases: Vec<Case>,
    print: bool,
) -> Result<Vec<CaseReport>> {
    let Some(main_url) = &args.target else {
        return Err(Error::Usage("--target URL is required".into()));
    };
    let tokens = TokenSource::new();
    let main = Arc::new(Target::probe(main_url, None, &tokens).await?);
    let mut setups = BTreeMap::new();
    for (kind, url) in [
        (SetupKind::Registered, &args.target_registered),
        (SetupKind::Lenient, &args.target_lenient),
        (SetupKind::Reject, &args.target_reject),
        (SetupKind::Accounts, &args.target_accounts),
    ] {
        if let Some(url) = url {
            setups.insert(
                kind,
                Arc::new(Target::probe(url, Some(kind), &tokens).await?),
            );
        }
    }
    let timers = match &args.target_timers {
        Some(url) => Some(Arc::new(Target::probe(url, None, &tokens).await?)),
        None => None,
    };
    let fd_limited = match &args.target_fd_limited {
        Some(url) => Some(Arc::new(Target::probe(url, None, &tokens).await?)),
        None => None,
    };
    if print {
        println!("plotstream conform: {} cases", cases.len());
        println!("  target: {}", main.describe());
        for t in setups
            .values()
            .chain(timers.iter())
            .chain(fd_limited.iter())
        {
            println!("  target: {}", t.describe());
        }
        if let Some(s) = args.timer_scale {
            println!("  timers: the defaults divided by {s}");
        }
        match (&args.credentials, &args.stream_id) {
            (Some((user, _)), Some(sid)) => println!("  account: {user}, stream id {sid}"),
            (Some((user, _)), None) => println!("  account: {user}, no stream id"),
            (None, _) => println!("  account: none (group K cases that need one are skipped)"),
        }
        println!();
    }
    // A quiet rerun acquires every permit at once, so the count must fit a u32.
    let jobs = u32::try_from(args.jobs.clamp(1, 4096)).unwrap_or(1);
    let runner = Arc::new(Runner {
        opts: Opts {
            timer_scale: args.timer_scale.filter(|s| *s > 0.0),
            peer_limit: args.peer_limit,
            fd_limit: args.fd_limit,
            seed: args.seed,
            split_limit: args.split_limit,
            strict: args.strict,
            strict_cases: args.strict_cases.clone(),
            require_limit_counters: args.require_limit_counters,
            unoptimized: args.unoptimized_target,
            credentials: args.credentials.clone(),
            stream_id: args.stream_id.clone(),
        },
        main,
        setups,
        timers,
        fd_limited,
        tokens,
        jobs: Semaphore::new(jobs as usize),
        jobs_total: jobs,
    });
    let started = Instant::now();
    let timers_apart = args.target_timers.is_some();
    let reports = execute::run_all(runner, cases, timers_apart, |r| {
        if print {
            print!("{}", report::case_text(r, args.verbose, args.hexdump));
        }
    })
    .await?;
    if print {
        println!("(ran in {:.1} s)", started.elapsed().as_secs_f64());
    }
    Ok(reports)
}

/// `USER:KEY` of `--credentials` (the key may hold colons; the user may not, as in Basic).
fn parse_credentials(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once(':') {
        Some((user, key)) if !user.is_empty() && !key.is_empty() => {
            Ok((user.to_owned(), key.to_owned()))
        }
        _ => Err(format!("{text:?} is not USER:KEY")),
    }
}

/// The catalogue, narrowed by `--case`.
fn select(args: &ConformArgs) -> Result<Vec<Case>> {
    let all = catalogue()?;
    for want in args.cases.iter().chain(&args.strict_cases) {
        if !all.iter().any(|c| c.id == *want || c.group() == want) {
            return Err(Error::Usage(format!(
                "no case or group {want:?} in the catalogue (see --list)"
            )));
        }
    }
    if args.cases.is_empty() {
        return Ok(all);
    }
    Ok(all
        .into_iter()
        .filter(|c| args.cases.iter().any(|w| c.id == *w || c.group() == w))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_user_colon_key() {
        assert_eq!(
            parse_credentials("demo:key:with:colons"),
            Ok(("demo".to_owned(), "key:with:colons".to_owned()))
        );
        for bad in ["demo", ":key", "demo:", ""] {
            assert!(parse_credentials(bad).is_err(), "{bad}");
        }
    }
}
