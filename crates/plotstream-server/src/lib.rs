//! The plotstream stream server: a thin tokio driver around `plotstream-proto`'s `Ingest`
//! state machine, plus the store, viewer fan-out, live pages and inspection routes.
//!
//! [`run`] takes bound listeners, a [`Config`] and a shutdown future, in mini-redis's shape,
//! so tests run it on `127.0.0.1:0`.

#![deny(missing_docs)]

// The README's example is a doctest too, so the one crates.io shows compiles and passes.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod cluster;
mod config;
mod conn;
pub mod durable;
pub mod error;
pub mod faults;
pub mod files;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod guard;
pub mod history;
mod http;
pub mod metrics;
pub mod nodes;
mod pages;
mod random;
pub mod records;
mod response;
mod rest;
mod shared;
mod sse;
pub mod store;
mod text;
pub mod tls;
pub mod transport;
pub mod users;
pub mod window;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::rustls::ServerConfig;

pub use config::{Config, PlotlyJs, Storage};
pub use metrics::Metrics;
pub use random::new_token;
pub use shared::Shared;
pub use store::{Store, StoreConfig};

/// A bound listener, plain or TLS (terminated in this process, so TLS peers are counted and
/// limited by their own address).
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub tcp: TcpListener,
    /// `Some` for a TLS listener.
    pub tls: Option<Arc<ServerConfig>>,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Listener {
        Listener { tcp, tls: None }
    }
}

/// Serves `listeners` until `shutdown` completes, then stops accepting at once, ends every
/// writer with 503 at its next line boundary and every viewer with `reset` (shutdown), and
/// returns when all connections are closed or the drain time (L34) is over.
pub async fn run(
    listeners: impl IntoIterator<Item = impl Into<Listener>>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), durable::StorageError> {
    Server::open(config)?.serve(listeners, shutdown).await;
    Ok(())
}

/// A server whose state is loaded, not yet listening.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// What start-up recovered (empty in memory).
    pub recovery: store::Recovery,
}

impl Server {
    /// Opens the store `config.storage` names and recovers its state (docs/storage.md DC6):
    /// refuses, naming the file, when it cannot be read.
    pub fn open(mut config: Config) -> Result<Server, durable::StorageError> {
        let metrics = Arc::new(Metrics::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let cluster = match &config.storage {
            Storage::Redis(url) => Some(Arc::new(cluster::Cluster::new(url, config.lease_ttl)?)),
            _ => None,
        };
        config.store.clustered = cluster.is_some();
        let on_fenced = cluster.as_ref().map(|c| c.on_fenced());
        let (journal, committer, mut loaded, history) = open_storage(&config, &metrics, on_fenced)?;
        if let (Some(loaded), true) = (&mut loaded, cluster.is_some()) {
            // On several nodes a node's stop says nothing about what other nodes showed: each
            // stream's epoch is decided when a node takes it (docs/storage.md "Several nodes").
            loaded.clean = true;
        }
        let store = Store::with_journal(config.store.clone(), metrics.clone(), journal.clone());
        if let Some(history) = history {
            store.keep_history_in(history);
        }
        let files = files::Files::with_journal(config.files, journal);
        let mut recovery = store::Recovery::default();
        if let Some(loaded) = loaded {
            let entries: Vec<_> = loaded
                .entries
                .iter()
                .filter(|(t, _, _)| matches!(t, durable::Table::Files | durable::Table::Folders))
                .cloned()
                .collect();
            let dropped_files = files.restore(entries);
            recovery = store.recover(loaded);
            recovery.dropped.extend(dropped_files);
        }
        let shared = Arc::new(Shared {
            store,
            files,
            rest_budget: Arc::new(tokio::sync::Semaphore::new(REST_BYTES_IN_FLIGHT_KIB)),
            config,
            metrics,
            origin: Instant::now(),
            shutdown: stop_rx,
            token_conns: std::sync::Mutex::default(),
            per_peer: std::sync::Mutex::default(),
            cluster: cluster.clone(),
        });
        if let Some(cluster) = &cluster {
            nodes::start(cluster, &shared);
        }
        Ok(Server {
            shared,
            stop_tx,
            committer,
            recovery,
        })
    }

    /// Serves `listeners` until `shutdown` completes (see [`run`]), then commits everything
    /// and records the graceful shutdown.
    pub async fn serve(
        mut self,
        listeners: impl IntoIterator<Item = impl Into<Listener>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let shared = self.shared.clone();
        serve(listeners, &shared, self.stop_tx, shutdown).await;
        if let Some(cluster) = shared.cluster.clone() {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
        }
        let committer = self.committer.take();
        let journal = shared.store.journal().clone();
        let _ = tokio::task::spawn_blocking(move || journal.close(committer)).await;
    }
}

type Opened = (
    Arc<durable::Journal>,
    Option<std::thread::JoinHandle<()>>,
    Option<durable::Loaded>,
    Option<Arc<dyn history::Store>>,
);

/// Opens the backend, reads it, marks the run as not yet cleanly stopped (durably, before any
/// connection), and starts the committer.
fn open_storage(
    config: &Config,
    metrics: &Arc<Metrics>,
    on_fenced: Option<durable::OnFenced>,
) -> Result<Opened, durable::StorageError> {
    let mut history: Option<Arc<dyn history::Store>> = None;
    let mut backend: Box<dyn durable::Backend> = match &config.storage {
        Storage::InMemory => return Ok((durable::Journal::memory(), None, None, None)),
        Storage::Dir(dir) => {
            let b = durable::RedbBackend::open(dir)?;
            history = Some(Arc::new(b.history_reader()));
            Box::new(b)
        }
        Storage::DirWithDiskFull {
            dir,
            after,
            duration,
        } => {
            let b = durable::RedbBackend::open(dir)?;
            history = Some(Arc::new(b.history_reader()));
            Box::new(durable::DiskFull::new(b, *after, *duration))
        }
        Storage::Redis(url) => Box::new(durable::RedisBackend::open(url, on_fenced)?),
    };
    let gen_of = |meta: &[u8]| records::StreamMeta::decode(meta).map(|m| m.gen);
    let started = Instant::now();
    let loaded = backend.load(&gen_of)?;
    tracing::info!(
        streams = loaded.streams.len(),
        ms = started.elapsed().as_millis(),
        "store read"
    );
    backend.set_clean(false)?;
    let (journal, thread) = durable::Journal::start(backend, config.sync_interval, metrics.clone());
    Ok((journal, Some(thread), Some(loaded), history))
}

async fn serve(
    listeners: impl IntoIterator<Item = impl Into<Listener>>,
    shared: &Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let shared = shared.clone();
    let mut connections = JoinSet::new();
    let mut accepts = JoinSet::new();
    let housekeeping = tokio::spawn(housekeeping(shared.clone()));
    for listener in listeners {
        let Listener { tcp: listener, tls } = listener.into();
        let shared = shared.clone();
        let mut stop = shared.shutdown.clone();
        accepts.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    res = listener.accept() => match res {
                        Ok((stream, peer)) => {
                            let shared = shared.clone();
                            conns.spawn(conn::handle(stream, peer, tls.clone(), shared));
                        }
                        Err(e) => {
                            // L39: never exit, never spin on EMFILE.
                            shared.metrics.accept_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(error = %e, "accept failed; backing off");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    _ = stop.changed() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            drop(listener);
            conns
        });
    }
    shutdown.await;
    housekeeping.abort();
    tracing::info!("shutting down: listeners closed, draining connections");
    let _ = stop_tx.send(true);
    shared.store.shutdown_viewers();
    while let Some(res) = accepts.join_next().await {
        if let Ok(conns) = res {
            connections.spawn(async move {
                let mut conns = conns;
                while conns.join_next().await.is_some() {}
            });
        }
    }
    let drain = shared.config.drain;
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Periodic work: L27's idle-stream eviction, and re-reading a changed users file so that a
/// removed user's tokens stop streaming.
async fn housekeeping(shared: Arc<Shared>) {
    let ttl = shared.config.store.idle_stream_ttl;
    let sweep_every = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let mut sweep = tokio::time::interval(sweep_every);
    let mut users = tokio::time::interval(users::REFRESH);
    let mut retention = tokio::time::interval(HISTORY_SWEEP);
    loop {
        tokio::select! {
            _ = retention.tick(), if shared.store.history().is_some() => {
                let s = shared.clone();
                let now = store::now_ms();
                let dropped = tokio::task::spawn_blocking(move || s.store.sweep_history(now))
                    .await
                    .unwrap_or(0);
                if dropped > 0 {
                    tracing::info!(dropped, "history: retention dropped chunks");
                }
            }
            _ = sweep.tick() => {
                let gone = shared.store.evict_idle(Instant::now());
                if gone > 0 {
                    tracing::info!(gone, "evicted idle streams (L27)");
                }
            }
            _ = users.tick() => {
                if let Some(u) = &shared.config.store.users {
                    u.refresh();
                }
            }
        }
    }
}

/// How often retention looks at every stream's history (docs/history.md "Retention").
const HISTORY_SWEEP: Duration = Duration::from_secs(1);

/// L50: REST body bytes in flight over all connections, in KiB (64 MiB).
const REST_BYTES_IN_FLIGHT_KIB: usize = 64 * 1024;

/// Binds `addr` with a deep accept backlog (the default 128 stalls connection storms on SYN
/// retries) and `SO_REUSEADDR` (a restart rebinds at once, S7).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// A server on a free loopback port, running inside the current tokio runtime: the mock
/// endpoint that client libraries and plotstream's own tests start in one line.
#[derive(Debug)]
pub struct Spawned {
    /// Where it listens (`127.0.0.1:<free port>`).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Spawned {
    /// Binds `127.0.0.1:0` and serves `config` until [`Spawned::stop`].
    pub async fn start(config: Config) -> std::io::Result<Spawned> {
        Spawned::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Binds `addr` (a restart on the same port, say) and serves `config`.
    pub async fn start_on(addr: SocketAddr, config: Config) -> std::io::Result<Spawned> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = Server::open(config).map_err(std::io::Error::other)?;
        let task = tokio::spawn(server.serve(vec![listener], async move {
            let _ = rx.await;
        }));
        Ok(Spawned {
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts down gracefully (as on SIGTERM) and waits until every connection is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
