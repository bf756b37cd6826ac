//! This node's part of several nodes on one Redis (`serve --redis`, docs/storage.md "Several
//! nodes"): its link to what the nodes share (`durable::ClusterLink`), its threads, the tokens
//! whose leases go, and what a fenced change does. What the routes and threads do with it is
//! `nodes`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::durable::{ClusterLink, OnFenced, StorageError};

/// A node's part of the cluster.
pub struct Cluster {
    /// For the routes' calls (taken from blocking tasks, one call at a time).
    link: Arc<Mutex<ClusterLink>>,
    /// Tokens whose writers left, for the leases thread to let go of.
    releases: Mutex<mpsc::Sender<Release>>,
    releases_rx: Mutex<Option<mpsc::Receiver<Release>>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// What to do when the backend's fence refused a change (set once the node's state
    /// exists: `nodes::start`).
    fenced: Arc<OnceLock<FencedHandler>>,
    /// The version of the small tables this node last loaded.
    pub(crate) tables_seen: std::sync::atomic::AtomicU64,
    /// The leases thread's last round trip to Redis failed (`/healthz` says not ready).
    pub(crate) unreachable: AtomicBool,
}

/// A token whose writer left, for the leases thread to let go of; `done` tells whoever waits
/// when the thread is through with it: let go of, kept for another writer here, or not yet.
#[derive(Debug)]
pub struct Release {
    /// The token.
    pub token: String,
    /// Dropped (or sent to) once the thread is through with the token.
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// What a node does when another node's fence refused its change to a stream.
pub type FencedHandler = Box<dyn Fn(&str, u64) + Send + Sync>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("link", &self.link)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// This node's part of the cluster on `url`, with a random node id and leases of `ttl`.
    pub fn new(url: &str, ttl: Duration) -> Result<Cluster, StorageError> {
        let node = crate::random::id(12);
        tracing::info!(node = %node, lease_ms = ttl.as_millis(), "cluster: this node");
        let (tx, rx) = mpsc::channel();
        Ok(Cluster {
            link: Arc::new(Mutex::new(ClusterLink::new(url, node, ttl)?)),
            releases: Mutex::new(tx),
            releases_rx: Mutex::new(Some(rx)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            fenced: Arc::new(OnceLock::new()),
            tables_seen: std::sync::atomic::AtomicU64::new(0),
            unreachable: AtomicBool::new(false),
        })
    }

    /// What the backend calls when another node's fence refused this node's change to a
    /// stream (made under `fence`): the handler set by [`Cluster::on_fenced_do`], before the
    /// commit is acknowledged.
    pub fn on_fenced(&self) -> OnFenced {
        let fenced = self.fenced.clone();
        Arc::new(move |token: &str, fence: u64| {
            if let Some(handler) = fenced.get() {
                handler(token, fence);
            }
        })
    }

    /// Sets what a refused change does (once).
    pub fn on_fenced_do(&self, handler: FencedHandler) {
        let _ = self.fenced.set(handler);
    }

    /// A link of this node's own for a thread, whose reads wait at most `timeout`.
    pub fn sibling(&self, timeout: Duration) -> ClusterLink {
        lock(&self.link).sibling(timeout)
    }

    /// The stop flag the node's threads watch.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The tokens whose writers left (the leases thread's end; once).
    pub fn take_releases(&self) -> Option<mpsc::Receiver<Release>> {
        lock(&self.releases_rx).take()
    }

    /// Starts a thread named `plotstream-<name>` that [`Cluster::stop`] joins.
    pub fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) {
        let handle = std::thread::Builder::new()
            .name(format!("plotstream-{name}"))
            .spawn(f)
            .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"));
        lock(&self.threads).push(handle);
    }

    /// True while Redis did not answer the leases thread's last round trip.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Stops the threads (shutdown).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }

    /// Runs `f` on the routes' link in a blocking task.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ClusterLink) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let link = self.link.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&link)))
            .await
            .unwrap_or_else(|e| Err(StorageError(format!("cluster call: {e}"))))
    }

    /// Asks the leases thread to let go of `token` once its lines are stored; returns what
    /// hears when the thread is through with it (a writer's `200` waits for it:
    /// docs/storage.md "Several nodes"; dropping it waits for nothing).
    pub fn release(&self, token: &str) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = lock(&self.releases).send(Release {
            token: token.to_owned(),
            done: tx,
        });
        rx
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
