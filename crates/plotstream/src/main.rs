//! `plotstream`: the one CLI binary. Thin: argument parsing, logging and signal handling here;
//! the work lives in the library crates.

mod config_file;
mod demo;
mod serve_args;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use plotstream_proto::limits::parse_duration;
use plotstream_proto::Maxpoints;
use plotstream_server::faults::FaultKind;
use plotstream_server::{Config, Storage, StoreConfig};
use serve_args::{OnDuplicate, ServeArgs, Tokens};

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

// The variants' doc comments are clap's help text, verbatim: their example URLs stay bare.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stream server (ingest endpoint, live viewer, inspection API).
    ///
    /// Examples:
    ///   plotstream serve --demo
    ///   plotstream serve --listen 0.0.0.0:80 --listen 0.0.0.0:9999 --public-url http://plot.example.org:9999
    ///   plotstream serve --tokens registered --on-duplicate reject --idle-timeout 30s
    #[command(verbatim_doc_comment, args_override_self = true)]
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
    // Boxed: its many flags would make every `Command` as large as they are.
    Conform(Box<plotstream_load::conform::ConformArgs>),
    /// Manage the accounts of keys mode (`serve --users FILE`): user name, API key, stream ids.
    ///
    /// Examples:
    ///   plotstream user add demo --users users.jsonl
    ///   plotstream user add demo --users users.jsonl --api-key demokey123 --stream-ids 2
    ///   plotstream user rotate-key demo --users users.jsonl
    ///   plotstream user list --users users.jsonl
    #[command(verbatim_doc_comment)]
    User(UserArgs),
    /// Print new stream tokens: 10 characters of [a-z0-9] from the OS random source.
    Token {
        /// How many tokens.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

#[derive(Debug, clap::Args)]
struct UserArgs {
    #[command(subcommand)]
    action: UserAction,
    /// The users file that `plotstream serve --users FILE` reads (created if missing).
    #[arg(long, global = true)]
    users: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create a user; prints {"username", "api_key", "stream_ids"} as one JSON line. The key is
    /// shown only here: the file keeps a salted hash.
    Add {
        /// `[A-Za-z0-9_.-]{1,64}`.
        name: String,
        /// How many stream tokens to issue to the user.
        #[arg(long, default_value_t = 5)]
        stream_ids: usize,
        /// Use this key instead of a random one (at least 10 characters), e.g. the one an
        /// existing ~/.plotly/.credentials holds.
        #[arg(long)]
        api_key: Option<String>,
    },
    /// List users and their stream ids (never keys).
    List,
    /// Remove a user: their key and stream ids stop working.
    Remove {
        /// The user.
        name: String,
    },
    /// Give a user a new API key; the old one stops working at once. Prints the new key.
    RotateKey {
        /// The user.
        name: String,
        /// Use this key instead of a random one (at least 10 characters).
        #[arg(long)]
        api_key: Option<String>,
    },
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
    let command = Cli::command();
    // `serve`'s flags as the file reads them (the same the `config` fuzz target reads with).
    let serve_command = serve_args::command();
    let args = config_file::expand(std::env::args_os().collect(), &serve_command)?;
    let matches = command.get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Serve(args), Some(serve_matches)) =
        (&cli.command, matches.subcommand_matches("serve"))
    {
        if args.print_config {
            print!("{}", config_file::print(&serve_command, serve_matches));
            return Ok(());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Send(args) => demo::send(&args.target, &args.token, args.heartbeat).await,
            Command::Demo(args) => {
                demo::demo(&args.target, &args.token, args.interval, false).await
            }
            Command::Load(args) => exit_with(plotstream_load::load::run(args).await?),
            Command::Conform(args) => exit_with(plotstream_load::conform::run(*args).await?),
            Command::User(args) => user(args),
            Command::Token { count } => {
                for _ in 0..count {
                    println!("{}", plotstream_server::new_token());
                }
                Ok(())
            }
        }
    })
}

fn user(args: UserArgs) -> Result<()> {
    use plotstream_server::users::{self, UserRecord, UsersError};
    let Some(path) = args.users else {
        bail!("--users FILE is required (the file `plotstream serve --users FILE` reads)");
    };
    let chosen_key = |key: Option<String>| -> Result<String> {
        match key {
            Some(k) if k.chars().count() < users::MIN_KEY_LEN => {
                bail!(
                    "an API key needs at least {} characters",
                    users::MIN_KEY_LEN
                )
            }
            Some(k) if k.chars().any(|c| c.is_control() || c == ':') => {
                bail!("an API key may not contain ':' or control characters")
            }
            Some(k) => Ok(k),
            None => Ok(users::new_api_key()),
        }
    };
    match args.action {
        UserAction::Add {
            name,
            stream_ids,
            api_key,
        } => {
            if !users::valid_username(&name) {
                bail!("user names are 1 to 64 characters of [A-Za-z0-9_.-]");
            }
            if stream_ids > users::MAX_TOKENS_PER_USER {
                bail!(
                    "at most {} stream ids per user (L49)",
                    users::MAX_TOKENS_PER_USER
                );
            }
            let key = chosen_key(api_key)?;
            let tokens = users::modify(&path, |all| {
                if all.iter().any(|u| u.username == name) {
                    return Err(UsersError::Refused(format!("user {name} exists")));
                }
                let taken: std::collections::HashSet<&String> =
                    all.iter().flat_map(|u| &u.stream_ids).collect();
                let mut tokens = Vec::new();
                while tokens.len() < stream_ids {
                    let t = plotstream_server::new_token();
                    if !taken.contains(&t) && !tokens.contains(&t) {
                        tokens.push(t);
                    }
                }
                all.push(UserRecord::new(&name, &key, tokens.clone()));
                Ok(tokens)
            })?;
            println!(
                "{}",
                serde_json::json!({"username": name, "api_key": key, "stream_ids": tokens})
            );
        }
        UserAction::List => {
            for u in users::load(&path)? {
                println!(
                    "{}",
                    serde_json::json!({"username": u.username, "stream_ids": u.stream_ids})
                );
            }
        }
        UserAction::Remove { name } => {
            users::modify(&path, |all| {
                let before = all.len();
                all.retain(|u| u.username != name);
                if all.len() == before {
                    return Err(UsersError::Refused(format!("no user {name}")));
                }
                Ok(())
            })?;
            eprintln!("removed {name}");
        }
        UserAction::RotateKey { name, api_key } => {
            let key = chosen_key(api_key)?;
            users::modify(&path, |all| {
                let u = all
                    .iter_mut()
                    .find(|u| u.username == name)
                    .ok_or_else(|| UsersError::Refused(format!("no user {name}")))?;
                u.set_key(&key);
                Ok(())
            })?;
            println!("{}", serde_json::json!({"username": name, "api_key": key}));
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let users = match &args.users {
        Some(path) => Some(std::sync::Arc::new(
            plotstream_server::users::Users::open(path).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    // Protected mode (Redis's model): without accounts, serve loopback only unless told.
    if users.is_none() && !args.open {
        if let Some(addr) = args
            .listen
            .iter()
            .chain(&args.tls_listen)
            .find(|a| !a.ip().is_loopback())
        {
            bail!(
                "refusing to listen on {addr} without accounts (protected mode): anyone who can \
                 reach it could create, replace and read every stream and plot. Add a user with \
                 `plotstream user add NAME --users users.jsonl` and pass `--users users.jsonl`, \
                 or pass --open to serve the network without accounts"
            );
        }
    }
    if users.is_some() && args.demo {
        bail!(
            "--demo streams to the token `demo`, which keys mode (--users) does not admit; \
             run the demo without --users, or stream to a user's token with `plotstream demo --token`"
        );
    }
    if let Some(u) = &users {
        eprintln!(
            "keys mode: {} users from {}",
            u.snapshot().len(),
            u.path().display()
        );
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
    config.rest_body_deadline = args.rest_body_timeout;
    config.files = plotstream_server::files::FileLimits {
        files_per_user: args.max_files_per_user,
        bytes_per_user: args.user_quota_mb << 20,
        bytes_total: args.rest_quota_mb << 20,
    };
    config.plotly_js = args.plotly_js.unwrap_or_default();
    config.viewer_dir = args.viewer_dir;
    config.store = StoreConfig {
        tokens_open: matches!(args.tokens, Tokens::Open),
        takeover: matches!(args.on_duplicate, OnDuplicate::Takeover),
        default_maxpoints: Maxpoints::new(
            args.default_maxpoints,
            Maxpoints::ceiling(args.max_maxpoints),
        ),
        max_maxpoints: Maxpoints::ceiling(args.max_maxpoints),
        new_streams_per_peer: args.new_streams_per_peer,
        idle_stream_ttl: args.idle_stream_ttl,
        users,
        history: plotstream_server::store::HistoryConfig {
            retention: args.retention,
            stream_bytes: args.history_stream_mb << 20,
            total_bytes: args.history_total_mb << 20,
        },
        ..StoreConfig::default()
    };
    let disk_full = config.faults.iter().find_map(|f| match f.kind {
        FaultKind::DiskFull { after, ms } => Some((after, Duration::from_millis(ms))),
        _ => None,
    });
    config
        .faults
        .retain(|f| !matches!(f.kind, FaultKind::DiskFull { .. }));
    config.sync_interval = args.sync_interval.unwrap_or(Duration::from_millis(10));
    config.lease_ttl = args.lease_time;
    config.storage = if args.in_memory {
        if disk_full.is_some() {
            bail!("--fault disk-full needs the embedded store: drop --in-memory");
        }
        eprintln!("in memory: nothing is kept after this process stops (--in-memory)");
        Storage::InMemory
    } else if let Some(url) = &args.redis {
        if disk_full.is_some() {
            bail!("--fault disk-full needs the embedded store: drop --redis");
        }
        eprintln!(
            "data: {} (--redis)",
            plotstream_server::durable::RedisBackend::shown_url(url)
        );
        Storage::Redis(url.clone())
    } else {
        let dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("plotstream-data"));
        let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
        eprintln!(
            "data: {} (--data-dir; --in-memory keeps nothing)",
            shown.display()
        );
        match disk_full {
            Some((after, duration)) => Storage::DirWithDiskFull {
                dir,
                after,
                duration,
            },
            None => Storage::Dir(dir),
        }
    };
    let started = std::time::Instant::now();
    let server = plotstream_server::Server::open(config).map_err(anyhow::Error::msg)?;
    let r = &server.recovery;
    if r.streams > 0 || !r.dropped.is_empty() {
        eprintln!(
            "recovered {} streams ({} points, {} lines replayed) in {} ms",
            r.streams,
            r.points,
            r.lines,
            started.elapsed().as_millis()
        );
    }
    for d in &r.dropped {
        eprintln!("recovery: {d}");
    }
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let l =
            plotstream_server::bind(*addr).with_context(|| format!("cannot listen on {addr}"))?;
        let local = l.local_addr()?;
        eprintln!("plotstream listening on http://{local}");
        listeners.push(plotstream_server::Listener::from(l));
    }
    let first = listeners[0].tcp.local_addr()?;
    let base = format!("http://{}", display_addr(first));
    if args.demo {
        let target = base.clone();
        tokio::spawn(async move {
            if let Err(e) = demo::demo(&target, "demo", Duration::from_millis(100), true).await {
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
        for addr in &args.tls_listen {
            let l = plotstream_server::bind(*addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
            eprintln!("plotstream listening on https://{}", l.local_addr()?);
            listeners.push(plotstream_server::Listener {
                tcp: l,
                tls: Some(tls.clone()),
            });
        }
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    server.serve(listeners, stopped(stop_rx)).await;
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
/// Ends the process with `code` (a CI gate's verdict) once output is flushed.
fn exit_with(code: i32) -> Result<()> {
    if code != 0 {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}
