//! The load generator (docs/performance.md, "The tools"): `--streams` long-lived writer connections
//! sending points on an open-loop schedule in a real client's bytes, optionally verified end to
//! end.
//!
//! One module per concern, as in oha: [`schedule`] (intended times and point values), `writer`
//! (one task per stream), `verify` (SSE viewers and inspection through the shared
//! `crate::probe`, the digest from its independent JCS oracle), [`report`] (counters,
//! HdrHistogram percentiles, the JSON report), [`assert`](mod@assert) (`--assert`), `printer`
//! (progress line, text report) and [`targets`] (which node each stream's writer and viewer use
//! when `--target` is given several times). [`run`] is what `plotstream load` calls;
//! [`measure`] runs the load and returns the [`Report`] (tests call it).
//!
//! A run has three phases. Connect: stream `s` connects at `ramp · s / streams`, sends its
//! head, and with `--verify` its viewer subscribes. Send: once every stream is ready, the
//! common start time is set and each writer follows the schedule for `--duration`. Drain:
//! writers send the close sequence and read their final status; with `--verify` the inspection
//! API is read for each stream and its viewer runs until it has seen the last seq.

pub mod assert;
mod ctx;
mod printer;
pub mod report;
pub mod schedule;
pub mod targets;
mod verify;
mod writer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use plotstream_proto::encode::Flavour;
use plotstream_proto::limits::parse_duration;
use plotstream_proto::Token;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use assert::Assertion;
pub use report::{Percentiles, Report};
pub use schedule::Rate;
pub use targets::{TargetLoad, ViewersOn};

use ctx::Ctx;
use report::Counters;
use targets::Targets;
use verify::Finish;

/// `plotstream load` options.
///
/// Examples:
///   plotstream load --target http://127.0.0.1:9999 --streams 100 --rate 20000 --duration 10s --verify --assert lost=0
///   plotstream load --target http://127.0.0.1:9999 --streams 100 --rate max --points-per-chunk 1000 --duration 5s
///   plotstream load --target http://127.0.0.1:9999 --streams 10000 --rate 0 --ramp 1s --duration 10s
///   plotstream load --target http://node-a:9999 --target http://node-b:9999 --streams 100 --rate 20000 --duration 10s --verify --viewers-on other --assert lost=0
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The endpoint, e.g. http://127.0.0.1:9999. Repeat it for the nodes of one cluster
    /// (several servers sharing one store): stream i's writer goes to target i % n.
    #[arg(long = "target", value_name = "URL", required = true)]
    pub targets: Vec<String>,
    /// With --verify and several targets: where each stream's viewer subscribes (and its
    /// inspection is read): on its writer's target (`same`), or on the next one, (i + 1) % n
    /// (`other`), which proves delivery across nodes.
    #[arg(long, value_enum, default_value_t = ViewersOn::Same)]
    pub viewers_on: ViewersOn,
    /// Concurrent writer streams (one connection and one token each).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Points per second over all streams (20000, 20k, 1M); `max` sends as fast as each
    /// connection goes; `0` holds idle connections.
    #[arg(long, default_value = "1000", value_parser = schedule::parse_rate)]
    pub rate: Rate,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Spread connection start-up over this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Points per chunk (1 is the real clients' shape; more is bulk).
    #[arg(long, default_value_t = 1)]
    pub points_per_chunk: u64,
    /// Whose bytes to send.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,
    /// Subscribe to each stream's SSE feed (interval=0) and read the inspection API at the end:
    /// every point exactly once and in order, digests, write→viewer latency.
    #[arg(long)]
    pub verify: bool,
    /// How to print the report on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// A condition the run must meet (repeatable), e.g. 'p99<50ms', 'lost=0',
    /// 'achieved_rate>=0.99*offered_rate'; any failure makes the exit code 1.
    #[arg(long = "assert", value_name = "EXPR")]
    pub asserts: Vec<String>,
    /// Token prefix (tokens are PREFIX + a 5-digit stream index); random by default, so runs
    /// never share streams.
    #[arg(long)]
    pub token_prefix: Option<String>,
    /// With --verify: how long viewers may take to catch up after the writers closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Progress line period when stderr is not a terminal.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub progress: Duration,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// Parses options as the command line would (without the program name), e.g.
    /// `["--target", "http://127.0.0.1:9999", "--streams", "4"]`.
    pub fn from_args<I, S>(args: I) -> Result<LoadArgs, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: LoadArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("load"))
            .chain(args.into_iter().map(Into::into));
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.args)
    }
}

/// `--client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// chart_studio 1.1.0's bytes.
    Python,
    /// npm plotly@1.0.6's bytes.
    Node,
    /// The Arduino library's bytes (a token in every line).
    Arduino,
    /// plotstream's compact framing.
    Raw,
}

impl ClientKind {
    fn flavour(self) -> Flavour {
        match self {
            ClientKind::Python => Flavour::Python,
            ClientKind::Node => Flavour::Node,
            ClientKind::Arduino => Flavour::Arduino,
            ClientKind::Raw => Flavour::Raw,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ClientKind::Python => "python",
            ClientKind::Node => "node",
            ClientKind::Arduino => "arduino",
            ClientKind::Raw => "raw",
        }
    }
}

/// `--report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Human-readable.
    Text,
    /// One JSON object.
    Json,
}

/// Runs `plotstream load`; returns the process exit code: 0, 1 when an assertion failed (one
/// line each on stderr), 130 when interrupted.
pub async fn run(args: LoadArgs) -> Result<i32> {
    let assertions = args
        .asserts
        .iter()
        .map(|a| Assertion::parse(a).map_err(|e| Error::Usage(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let report = measure(&args, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    match args.report {
        ReportFormat::Text => print!("{}", printer::text(&report)),
        ReportFormat::Json => println!("{}", report.to_json()),
    }
    let failures: Vec<String> = assertions.iter().filter_map(|a| a.check(&report)).collect();
    for failure in &failures {
        eprintln!("assertion failed: {failure}");
    }
    Ok(if !failures.is_empty() {
        1
    } else if report.interrupted {
        130
    } else {
        0
    })
}

/// Runs the load described by `args` until it is done or `stop` completes (Ctrl-C), and
/// returns the report. Prints progress on stderr unless `--quiet`.
pub async fn measure(
    args: &LoadArgs,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<Report> {
    if args.streams == 0 || args.streams > MAX_STREAMS {
        return Err(Error::Usage(format!(
            "--streams must be between 1 and {MAX_STREAMS}"
        )));
    }
    if args.points_per_chunk == 0 || args.points_per_chunk > MAX_POINTS_PER_CHUNK {
        return Err(Error::Usage(format!(
            "--points-per-chunk must be between 1 and {MAX_POINTS_PER_CHUNK}"
        )));
    }
    let targets = Targets::parse(&args.targets, args.viewers_on, args.verify)?;
    let prefix = args.token_prefix.clone().unwrap_or_else(random_prefix);
    let tokens = (0..args.streams)
        .map(|s| {
            let t = format!("{prefix}{s:05}");
            Token::parse(t.as_bytes()).ok_or_else(|| {
                Error::Usage(format!(
                    "invalid token {t:?}: use [A-Za-z0-9_-], at most 64"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let schedule = Schedule::new(
        args.rate,
        args.streams,
        args.points_per_chunk,
        args.duration,
    );
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        targets,
        flavour: args.client.flavour(),
        schedule,
        tokens,
        counters: Counters::default(),
        writes: (0..if args.verify { args.streams } else { 0 })
            .map(|_| std::sync::Mutex::default())
            .collect(),
        start: start_rx,
        stop: stop_rx,
        verify: args.verify,
    });
    let interrupted = Arc::new(AtomicBool::new(false));
    let stopper = {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            stop.await;
            interrupted.store(true, Ordering::Relaxed);
            let _ = stop_tx.send(true);
            // Keep the sender alive so receivers see `true`, not a closed channel.
            std::future::pending::<()>().await;
        })
    };
    let (done_tx, done_rx) = watch::channel(false);
    let progress =
        (!args.quiet).then(|| tokio::spawn(printer::progress(ctx.clone(), args.progress, done_rx)));

    // Connect.
    let t0 = Instant::now();
    let n = args.streams;
    let mut writers = Vec::with_capacity(n);
    let mut viewers = Vec::new();
    let mut finishes = Vec::new();
    let mut readies = Vec::with_capacity(n);
    for s in 0..n {
        let connect_at = t0 + args.ramp.mul_f64(s as f64 / n as f64);
        let (opened_tx, opened_rx) = oneshot::channel();
        writers.push(tokio::spawn(writer::run(
            ctx.clone(),
            s,
            connect_at,
            opened_tx,
        )));
        if args.verify {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (finish_tx, finish_rx) = watch::channel(Finish::No);
            viewers.push(tokio::spawn(verify::run(
                ctx.clone(),
                s,
                opened_rx,
                ready_tx,
                finish_rx,
            )));
            finishes.push(finish_tx);
            readies.push(ready_rx);
        } else {
            readies.push(opened_rx);
        }
    }
    let mut stop_wait = ctx.stop.clone();
    let all_ready = async {
        for r in readies {
            let _ = r.await;
        }
    };
    tokio::select! {
        () = all_ready => {}
        _ = stop_wait.wait_for(|s| *s) => {}
        () = tokio::time::sleep(args.ramp + SETUP_TIMEOUT) => {
            tracing::warn!("not every stream was ready after {:?}; starting anyway", args.ramp + SETUP_TIMEOUT);
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();

    // Send.
    let start = Instant::now();
    let _ = start_tx.send(Some(start));
    let mut outcomes = Vec::with_capacity(n);
    for w in writers {
        outcomes.push(w.await.unwrap_or_default());
    }
    let sent_until = outcomes
        .iter()
        .filter_map(|o| o.sent_until)
        .max()
        .unwrap_or(start);
    let was_interrupted = interrupted.load(Ordering::Relaxed);
    let mut elapsed = sent_until.saturating_duration_since(start);
    if !was_interrupted {
        // The schedule offers its points over the whole duration; a late writer stretches it.
        elapsed = elapsed.max(args.duration);
    }

    // Drain and verify.
    let verification = if args.verify {
        Some(finish_verification(&ctx, &outcomes, viewers, &finishes, args.drain_timeout).await)
    } else {
        None
    };
    let _ = done_tx.send(true);
    if let Some(p) = progress {
        let _ = p.await;
    }
    stopper.abort();

    let acked: Option<u64> = outcomes.iter().map(|o| o.n_points_acked).sum();
    let acked_until = outcomes.iter().filter_map(|o| o.closed_at).max();
    let acknowledged_rate = acked.zip(acked_until).map(|(n, until)| {
        n as f64
            / until
                .saturating_duration_since(start)
                .as_secs_f64()
                .max(1e-9)
    });
    let c = &ctx.counters;
    let points_sent = Counters::get(&c.points_sent);
    let bytes_sent = Counters::get(&c.bytes_sent);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let v = verification.unwrap_or_default();
    let verified = |x: u64| args.verify.then_some(x);
    let errors_by_status = match c.errors.lock() {
        Ok(e) => e.clone(),
        Err(e) => e.into_inner().clone(),
    };
    Ok(Report {
        target: ctx.targets.joined(),
        targets: ctx.targets.loads(n, args.verify),
        viewers_on: ctx.targets.viewers_on(),
        streams: n,
        client: args.client.name().to_owned(),
        points_per_chunk: args.points_per_chunk,
        duration_s: secs,
        connect_s,
        offered_rate: ctx.schedule.offered_rate(),
        achieved_rate: points_sent as f64 / secs,
        points_scheduled: ctx.schedule.n_points_scheduled(),
        points_sent,
        bytes_sent,
        points_acknowledged: acked,
        acknowledged_rate,
        bytes_per_s: bytes_sent as f64 / secs,
        points_verified: verified(v.verified),
        lost: verified(v.lost),
        duplicated: verified(v.duplicated),
        out_of_order: verified(v.out_of_order),
        corrupted: verified(v.corrupted),
        unobserved: verified(v.unobserved),
        seq_gaps: verified(v.seq_gaps),
        viewer_resets: verified(v.resets),
        digest_mismatches: verified(v.digest_mismatches),
        count_mismatches: verified(v.count_mismatches),
        reconnects: Counters::get(&c.reconnects),
        errors_by_status,
        send_latency_ms: c.send_latency.percentiles(),
        e2e_latency_ms: c.e2e_latency.percentiles(),
        server_latency_ms: c.server_latency.percentiles(),
        interrupted: was_interrupted,
    })
}

/// Sums over every stream's verification.
#[derive(Debug, Default)]
struct Verification {
    verified: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    corrupted: u64,
    unobserved: u64,
    seq_gaps: u64,
    resets: u64,
    digest_mismatches: u64,
    count_mismatches: u64,
}

/// Reads every stream's inspection, lets each viewer run to that stream's last seq (bounded by
/// `drain_timeout`), and compares what was seen with what was sent.
async fn finish_verification(
    ctx: &Arc<Ctx>,
    outcomes: &[writer::Outcome],
    viewers: Vec<tokio::task::JoinHandle<verify::Check>>,
    finishes: &[watch::Sender<Finish>],
    drain_timeout: Duration,
) -> Verification {
    let mut inspections = Vec::with_capacity(outcomes.len());
    let limit = Arc::new(tokio::sync::Semaphore::new(INSPECT_CONCURRENCY));
    let mut reads = Vec::with_capacity(outcomes.len());
    for s in 0..outcomes.len() {
        let ctx = ctx.clone();
        let limit = limit.clone();
        reads.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            verify::inspect(&ctx, s).await
        }));
    }
    for (s, r) in reads.into_iter().enumerate() {
        let inspection = r.await.unwrap_or_else(|e| Err(e.to_string()));
        let finish = match &inspection {
            Ok(i) => Finish::AtSeq(i.last_seq),
            Err(_) => Finish::Now,
        };
        let _ = finishes[s].send(finish);
        inspections.push(inspection);
    }
    let deadline = Instant::now() + drain_timeout;
    let mut checks = Vec::with_capacity(viewers.len());
    for (s, mut v) in viewers.into_iter().enumerate() {
        let check = match tokio::time::timeout_at(deadline, &mut v).await {
            Ok(c) => c.unwrap_or_default(),
            Err(_) => {
                ctx.counters.error("viewer_drain_timeout");
                let _ = finishes[s].send(Finish::Now);
                v.await.unwrap_or_default()
            }
        };
        checks.push(check);
    }
    let mut sum = Verification::default();
    for (s, (check, outcome)) in checks.iter().zip(outcomes).enumerate() {
        let sent = outcome.n_points_sent;
        let seen = check.n_seen_below(sent);
        sum.verified += seen;
        sum.lost += sent.saturating_sub(seen + check.unobserved);
        sum.duplicated += check.duplicated;
        sum.out_of_order += check.out_of_order;
        sum.corrupted += check.corrupted + (check.n_seen - seen);
        sum.unobserved += check.unobserved;
        sum.seq_gaps += check.seq_gaps;
        sum.resets += check.resets;
        match &inspections[s] {
            Ok(i) => {
                if i.last_seq != sent {
                    sum.count_mismatches += 1;
                }
                if i.digest != verify::expected_digest(s, sent, i.maxpoints) {
                    sum.digest_mismatches += 1;
                }
            }
            Err(e) => {
                if outcome.connected {
                    ctx.counters.error("inspection");
                    tracing::warn!(stream = s, error = %e, "inspection failed");
                }
                sum.count_mismatches += 1;
                sum.digest_mismatches += 1;
            }
        }
    }
    sum
}

use schedule::Schedule;

/// `ld` + 6 characters of `[a-z0-9]`, different per run.
fn random_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut v = h.finish();
    let mut out = String::from("ld");
    for _ in 0..6 {
        out.push(char::from(ALPHABET[(v % 36) as usize]));
        v /= 36;
    }
    out
}

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// The most streams one run opens (each needs a file descriptor, two with --verify).
const MAX_STREAMS: usize = 100_000;
/// A chunk of this many points is about 2.5 MB.
const MAX_POINTS_PER_CHUNK: u64 = 100_000;
/// How long connecting and subscribing may take beyond the ramp.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Inspection reads in flight at once at the end of a verified run.
const INSPECT_CONCURRENCY: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_like_the_command_line() {
        let a = LoadArgs::from_args([
            "--target",
            "http://127.0.0.1:9999",
            "--streams",
            "100",
            "--rate",
            "20k",
            "--duration",
            "10s",
            "--verify",
            "--assert",
            "lost=0",
            "--client",
            "python",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.streams, 100);
        assert_eq!(a.rate, Rate::PerSecond(20000.0));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert!(a.verify);
        assert_eq!(a.asserts, ["lost=0"]);
        assert_eq!(a.client, ClientKind::Python);
        assert_eq!(a.targets, ["http://127.0.0.1:9999"]);
        assert_eq!(a.viewers_on, ViewersOn::Same);
        assert!(LoadArgs::from_args(["--target", "x", "--rate", "fast"]).is_err());
        assert!(
            LoadArgs::from_args(["--streams", "2"]).is_err(),
            "--target is required"
        );
    }

    #[test]
    fn target_repeats_and_viewers_on_parses() {
        let a = LoadArgs::from_args([
            "--target",
            "http://a:1",
            "--target",
            "http://b:2",
            "--viewers-on",
            "other",
            "--verify",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.targets, ["http://a:1", "http://b:2"]);
        assert_eq!(a.viewers_on, ViewersOn::Other);
        assert!(LoadArgs::from_args(["--target", "http://a:1", "--viewers-on", "next"]).is_err());
    }

    #[test]
    fn prefixes_make_valid_tokens() {
        let p = random_prefix();
        assert_eq!(p.len(), 8);
        assert!(Token::parse(format!("{p}09999").as_bytes()).is_some());
    }
}
