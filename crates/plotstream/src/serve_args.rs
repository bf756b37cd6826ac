//! `plotstream serve`'s flags ([`ServeArgs`]): the definition the command line, the
//! configuration file (`config_file`) and `--print-config` all read. It depends on the server
//! and the protocol only, so the fuzz crate can include it with `config_file` (the `config`
//! target, docs/fuzzing.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use plotstream_proto::limits::parse_duration;
use plotstream_proto::Maxpoints;

/// The `serve` command as the configuration file reads it: its flags, overriding themselves
/// when repeated (as `plotstream serve` does), without the help text of the whole program.
pub(crate) fn command() -> clap::Command {
    <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve").args_override_self(true))
}

/// `serve`'s own flags, in their help order.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; repeat for several (e.g. :80 for unmodified notebooks and :9999).
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub(crate) listen: Vec<SocketAddr>,
    /// Also accept TLS here (node `plot()` speaks only HTTPS); repeatable. Needs --tls-cert
    /// and --tls-key (PEM).
    #[arg(long)]
    pub(crate) tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
    #[arg(long)]
    pub(crate) tls_key: Option<PathBuf>,
    /// The public origin given to clients and pages (default: http:// + the request's Host).
    #[arg(long)]
    pub(crate) public_url: Option<String>,
    /// Also run the built-in demo writer (the tutorial's signal to the token `demo`).
    #[arg(long)]
    pub(crate) demo: bool,
    /// Which tokens may stream: any well-formed one, or only registered ones.
    #[arg(long, value_enum, default_value_t = Tokens::Open)]
    pub(crate) tokens: Tokens,
    /// What a second writer of a token does: take it over (the old one gets 423) or get 423.
    #[arg(long, value_enum, default_value_t = OnDuplicate::Takeover)]
    pub(crate) on_duplicate: OnDuplicate,
    /// Skip and count bad lines instead of ending the stream with 422.
    #[arg(long)]
    pub(crate) lenient_lines: bool,
    /// maxpoints of a trace whose figure sets none.
    #[arg(long, default_value_t = Maxpoints::DEFAULT.get())]
    pub(crate) default_maxpoints: usize,
    /// The largest maxpoints a figure may set.
    #[arg(long, default_value_t = Maxpoints::MAX.get())]
    pub(crate) max_maxpoints: usize,
    /// End a stream with 408 after this long without a completed line (L28).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,
    /// A connection must complete its head within this long of its first byte (L2).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) head_timeout: Duration,
    /// A connection that sends nothing is closed after this long (L1).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) pre_head_timeout: Duration,
    /// A connection without a token must bind one within this long (L29).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) unbound_timeout: Duration,
    /// After a response, how long to drain the peer's input before closing (L33).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) linger: Duration,
    /// Open connections allowed from one peer address (0 = no limit; L11).
    #[arg(long, default_value_t = 256)]
    pub(crate) max_connections_per_peer: usize,
    /// plotly.js for the pages: a file to serve, or an http(s) URL the pages load instead (the
    /// Content-Security-Policy then allows its origin). Default: plotly.js 3.0.1, built in.
    #[arg(long)]
    pub(crate) plotly_js: Option<plotstream_server::PlotlyJs>,
    /// Development: read viewer.js and viewer.css from this directory (e.g. `viewer/`) at every
    /// request instead of the copies built in.
    #[arg(long)]
    pub(crate) viewer_dir: Option<PathBuf>,
    /// Inject a fault (repeatable): disconnect:after=LINES[,status=CODE] | status:code=CODE,prob=P |
    /// delay:ms=MS[,jitter=MS] | reset:prob=P | stall:ms=MS | idle-timeout:SECONDS |
    /// flap:every=SECONDS; each may end with ,token=T to affect one token only.
    #[arg(long, value_parser = parse_fault)]
    pub(crate) fault: Vec<plotstream_server::faults::Fault>,
    /// Seed for the faults' random choices: the same seed gives the same fault sequence.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Keys mode: accounts from this users file (`plotstream user add NAME --users FILE`).
    /// REST calls authenticate with the user name and API key chart_studio sends, only a
    /// file's owner changes it, only users' stream ids stream, and no page or listing shows a
    /// write token. Needed to listen beyond loopback (or pass --open).
    #[arg(long)]
    pub(crate) users: Option<PathBuf>,
    /// Allow listening on non-loopback addresses without --users: anyone who can reach the
    /// server can then create streams and plots (protected mode is the default).
    #[arg(long)]
    pub(crate) open: bool,
    /// New streams one peer address may create in a burst; the allowance refills at this
    /// many per hour (L43; 0 = no limit, e.g. for load tests with many streams).
    #[arg(long, default_value_t = 1000)]
    pub(crate) new_streams_per_peer: u32,
    /// Streams created by ingest that nobody writes to or watches are dropped after this long
    /// (L27).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub(crate) idle_stream_ttl: Duration,
    /// How long every accepted point is kept in the stream's history, beyond its window
    /// (docs/history.md); 0 keeps no history. Needs a data directory.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub(crate) retention: Duration,
    /// Megabytes of history one stream may keep; past it its oldest points go (L59).
    #[arg(long, default_value_t = 256)]
    pub(crate) history_stream_mb: u64,
    /// Megabytes of history all streams together may keep; past it the oldest points of
    /// any stream go (L60).
    #[arg(long, default_value_t = 4096)]
    pub(crate) history_total_mb: u64,
    /// A REST or /clientresp body must arrive whole within this long (L44).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) rest_body_timeout: Duration,
    /// Files (grids, plots, folders) one user may keep (L46).
    #[arg(long, default_value_t = 1000)]
    pub(crate) max_files_per_user: usize,
    /// Megabytes of figures and grids one user may keep (L47).
    #[arg(long, default_value_t = 64)]
    pub(crate) user_quota_mb: usize,
    /// Megabytes of figures and grids all users together may keep (L48).
    #[arg(long, default_value_t = 512)]
    pub(crate) rest_quota_mb: usize,
    /// Where streams, figures and registered tokens are kept across restarts and crashes
    /// (default: `plotstream-data` in the current directory; docs/storage.md).
    #[arg(long, conflicts_with = "in_memory")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Keep nothing on disk: everything is gone when the process stops (tests, benchmarks).
    #[arg(long)]
    pub(crate) in_memory: bool,
    /// Keep everything in Redis (≥ 7) or Valkey instead of the data directory:
    /// `redis://[user:password@]HOST:PORT[/DB]`, `rediss://` for TLS; without a password in
    /// the URL, PLOTSTREAM_REDIS_PASSWORD is used (docs/storage.md "On Redis").
    #[arg(long, value_name = "URL", conflicts_with_all = ["in_memory", "data_dir"])]
    pub(crate) redis: Option<String>,
    /// Read flags from this TOML file, one key per long flag (`data-dir = "/var/lib/plotstream"`,
    /// `listen = ["0.0.0.0:80", "0.0.0.0:9999"]`, `open = true`); flags given here override it
    /// (docs/serve.md "Configuration file").
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective configuration (file, flags and defaults) as TOML, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// The longest time between two group commits of accepted lines (docs/storage.md DC2): a
    /// crash loses at most this much of streams whose writers had no final 200 yet. Default
    /// 10ms.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) sync_interval: Option<Duration>,
    /// With --redis (ignored otherwise): how long a node's hold on a writer's token outlives
    /// the node, so that the writer is admitted by another node at most this long after its
    /// node died; refreshed every third of it (docs/storage.md "Several nodes").
    #[arg(long, default_value = "5s", value_parser = parse_lease_time)]
    pub(crate) lease_time: Duration,
}

/// `--lease-time`: 300 ms to 60 s (shorter would expire under a busy Redis; longer keeps a dead
/// node's writers out too long).
fn parse_lease_time(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(300) || d > Duration::from_secs(60) {
        return Err(format!("{s}: a lease time is between 300ms and 60s"));
    }
    Ok(d)
}

/// `--tokens`: which tokens may stream.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Tokens {
    Open,
    Registered,
}

/// `--on-duplicate`: what a second writer of a token does.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OnDuplicate {
    Takeover,
    Reject,
}

fn parse_fault(s: &str) -> Result<plotstream_server::faults::Fault, String> {
    plotstream_server::faults::parse(s)
}
