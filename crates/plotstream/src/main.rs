//! `plotstream`: the one CLI binary. Thin: argument parsing, logging and signal handling here;
//! the work lives in the library crates.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use plotstream_server::{Config, StoreConfig};

#[derive(Debug, Parser)]
#[command(
    name = "plotstream",
    version,
    about = "Self-hosted Plotly streaming: serve, send, demo, token"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stream server (ingest endpoint, live viewer, inspection API).
    ///
    /// Examples:
    ///   plotstream serve --demo
    ///   plotstream serve --listen 0.0.0.0:80 --listen 0.0.0.0:9999 --public-url http://plot.example.org:9999
    ///   plotstream serve --tokens registered --on-duplicate reject --idle-timeout 30s
    #[command(verbatim_doc_comment)]
    Serve(Box<ServeArgs>),
    /// Stream newline-delimited JSON from stdin to a token, with heartbeats.
    ///
    /// Example:
    ///   printf '{"x":1,"y":2}\n{"x":2,"y":3}\n' | plotstream send --target http://127.0.0.1:9999 --token abcdef1234
    #[command(verbatim_doc_comment)]
    Send(SendArgs),
    /// Stream the Plotly tutorial's signal to a server, one point per interval.
    ///
    /// Example:
    ///   plotstream demo --target http://127.0.0.1:9999 --token demo --interval 100ms
    #[command(verbatim_doc_comment)]
    Demo(DemoArgs),
    /// Load-test any stream endpoint on an open-loop schedule, with proof nothing was lost.
    Load(plotstream_load::load::LoadArgs),
    /// Check any stream endpoint against the protocol and the adversarial catalogue.
    Conform(plotstream_load::conform::ConformArgs),
    /// Print new stream tokens: 10 characters of [a-z0-9] from the OS random source.
    Token {
        /// How many tokens.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on; repeat for several (e.g. :80 for unmodified notebooks and :9999).
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: Vec<SocketAddr>,
    /// Also accept TLS here (node `plot()` speaks only HTTPS); repeatable. Needs --tls-cert
    /// and --tls-key (PEM).
    #[arg(long)]
    tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The public origin given to clients and pages (default: http:// + the request's Host).
    #[arg(long)]
    public_url: Option<String>,
    /// Also run the built-in demo writer (the tutorial's signal to the token `demo`).
    #[arg(long)]
    demo: bool,
    /// Which tokens may stream: any well-formed one, or only registered ones.
    #[arg(long, value_enum, default_value_t = Tokens::Open)]
    tokens: Tokens,
    /// What a second writer of a token does: take it over (the old one gets 423) or get 423.
    #[arg(long, value_enum, default_value_t = OnDuplicate::Takeover)]
    on_duplicate: OnDuplicate,
    /// Skip and count bad lines instead of ending the stream with 422.
    #[arg(long)]
    lenient_lines: bool,
    /// maxpoints of a trace whose figure sets none.
    #[arg(long, default_value_t = 500)]
    default_maxpoints: usize,
    /// The largest maxpoints a figure may set.
    #[arg(long, default_value_t = 10_000)]
    max_maxpoints: usize,
    /// End a stream with 408 after this long without a completed line (L28).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// A connection must complete its head within this long of its first byte (L2).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    head_timeout: Duration,
    /// A connection that sends nothing is closed after this long (L1).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pre_head_timeout: Duration,
    /// A connection without a token must bind one within this long (L29).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    unbound_timeout: Duration,
    /// After a response, how long to drain the peer's input before closing (L33).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    linger: Duration,
    /// Open connections allowed from one peer address (0 = no limit; L11).
    #[arg(long, default_value_t = 256)]
    max_connections_per_peer: usize,
    /// plotly.js for the pages: a file to serve, or an http(s) URL the pages load instead (the
    /// Content-Security-Policy then allows its origin). Default: plotly.js 3.0.1, built in.
    #[arg(long)]
    plotly_js: Option<plotstream_server::PlotlyJs>,
    /// Development: read viewer.js and viewer.css from this directory (e.g. `viewer/`) at every
    /// request instead of the copies built in.
    #[arg(long)]
    viewer_dir: Option<PathBuf>,
    /// Inject a fault (repeatable): disconnect:after=LINES[,status=CODE] | status:code=CODE,prob=P |
    /// delay:ms=MS[,jitter=MS] | reset:prob=P | stall:ms=MS | idle-timeout:SECONDS |
    /// flap:every=SECONDS; each may end with ,token=T to affect one token only.
    #[arg(long, value_parser = parse_fault)]
    fault: Vec<plotstream_server::faults::Fault>,
    /// Seed for the faults' random choices: the same seed gives the same fault sequence.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Persistence directory (not built yet).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Tokens {
    Open,
    Registered,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnDuplicate {
    Takeover,
    Reject,
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    /// The server, e.g. http://127.0.0.1:9999.
    #[arg(long)]
    target: String,
    /// The stream token.
    #[arg(long)]
    token: String,
    /// Send a heartbeat after this long without a line.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat: Duration,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// The server, e.g. http://127.0.0.1:9999.
    #[arg(long)]
    target: String,
    /// The stream token.
    #[arg(long, default_value = "demo")]
    token: String,
    /// Time between points.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    interval: Duration,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever RUST_BACKTRACE says: the reason, with its causes.
            eprintln!("plotstream: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Send(args) => demo::send(&args.target, &args.token, args.heartbeat).await,
            Command::Demo(args) => demo::demo(&args.target, &args.token, args.interval, None).await,
            Command::Load(args) => exit_with(plotstream_load::load::run(args).await?),
            Command::Conform(args) => exit_with(plotstream_load::conform::run(args).await?),
            Command::Token { count } => {
                for _ in 0..count {
                    println!("{}", plotstream_server::new_token());
                }
                Ok(())
            }
        }
    })
}

async fn serve(args: ServeArgs) -> Result<()> {
    if args.data_dir.is_some() {
        bail!("--data-dir (persistence) is not built yet");
    }
    let mut config = Config::default();
    config.limits.idle = args.idle_timeout;
    config.limits.head_deadline = args.head_timeout;
    config.limits.pre_head = args.pre_head_timeout;
    config.limits.unbound = args.unbound_timeout;
    config.lenient_lines = args.lenient_lines;
    config.public_url = args.public_url;
    config.faults = args.fault;
    config.seed = args.seed;
    config.max_connections_per_peer = args.max_connections_per_peer;
    config.linger = args.linger;
    config.plotly_js = args.plotly_js.unwrap_or_default();
    config.viewer_dir = args.viewer_dir;
    config.store = StoreConfig {
        tokens_open: matches!(args.tokens, Tokens::Open),
        takeover: matches!(args.on_duplicate, OnDuplicate::Takeover),
        default_maxpoints: args.default_maxpoints.min(args.max_maxpoints),
        max_maxpoints: args.max_maxpoints,
        ..StoreConfig::default()
    };
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let l =
            plotstream_server::bind(*addr).with_context(|| format!("cannot listen on {addr}"))?;
        let local = l.local_addr()?;
        eprintln!("plotstream listening on http://{local}");
        listeners.push(l);
    }
    let first = listeners[0].local_addr()?;
    let base = format!("http://{}", display_addr(first));
    if args.demo {
        let target = base.clone();
        tokio::spawn(async move {
            if let Err(e) = demo::demo(&target, "demo", Duration::from_millis(100), Some(())).await
            {
                tracing::warn!(error = %e, "demo writer stopped");
            }
        });
        eprintln!("live view of the demo stream: {base}/streams/demo");
    } else {
        eprintln!("streams: {base}/");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if !args.tls_listen.is_empty() {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            bail!("--tls-listen needs --tls-cert FILE and --tls-key FILE (PEM)");
        };
        let tls = plotstream_server::tls::load_config(cert, key).map_err(anyhow::Error::msg)?;
        let backend = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), first.port());
        for addr in &args.tls_listen {
            let l = plotstream_server::bind(*addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
            eprintln!("plotstream listening on https://{}", l.local_addr()?);
            tokio::spawn(plotstream_server::tls::serve(
                l,
                tls.clone(),
                backend,
                stopped(stop_rx.clone()),
            ));
        }
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    plotstream_server::run(listeners, config, stopped(stop_rx)).await;
    eprintln!("plotstream stopped");
    Ok(())
}

fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `60s`, `100ms`, `2m`, `1h`, or a plain number of seconds (one parser for every command).
fn parse_duration(s: &str) -> Result<Duration, String> {
    plotstream_load::load::parse_duration(s)
}

/// Ends the process with `code` (a CI gate's verdict) once output is flushed.
fn exit_with(code: i32) -> Result<()> {
    if code != 0 {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}

fn parse_fault(s: &str) -> Result<plotstream_server::faults::Fault, String> {
    plotstream_server::faults::parse(s)
}
