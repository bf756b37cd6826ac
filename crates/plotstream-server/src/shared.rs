//! The state every connection shares: the configuration, the store, the files, the metrics,
//! the clock's origin and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;
use crate::files;
use crate::metrics::Metrics;
use crate::store::Store;

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Streams and viewers.
    pub store: Store,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The origin of the monotonic `now` handed to the protocol machines.
    pub origin: Instant,
    /// Flips to true when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// Grids and plots of the REST subset.
    pub files: files::Files,
    /// L50: REST body bytes in flight, in KiB permits.
    pub rest_budget: Arc<tokio::sync::Semaphore>,
    /// Writer connections per token so far, for reproducible fault seeds.
    pub token_conns: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// On Redis: this node's part of the cluster (docs/storage.md "Several nodes").
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Open connections per peer address (L11).
    pub per_peer: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl Shared {
    /// Monotonic time since the server started.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Releases every binding `conn` holds (`Store::release`); on several nodes their leases
    /// go too, once their lines are stored. Returns what hears when they went (a writer's
    /// final status waits for it; dropping it waits for nothing).
    pub fn release_writer(&self, conn: &Arc<crate::store::Conn>) -> LeasesLetGo {
        let tokens = self.store.release(conn);
        let mut heard = Vec::new();
        if let Some(cluster) = &self.cluster {
            for token in tokens {
                heard.push(cluster.release(&token));
            }
        }
        LeasesLetGo(heard)
    }

    /// The number of this writer connection among `token`'s connections (0, 1, 2…).
    pub fn next_token_conn(&self, token: &str) -> u64 {
        let mut map = self
            .token_conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(token.to_owned()).or_insert(0);
        *n += 1;
        *n - 1
    }
}

/// The leases a writer that left held on several nodes, until this node has let go of them.
#[derive(Debug)]
#[must_use = "dropping it waits for nothing; the leases go all the same"]
pub struct LeasesLetGo(Vec<tokio::sync::oneshot::Receiver<()>>);

impl LeasesLetGo {
    /// Waits until this node let go of the leases (or kept one for a writer that took its
    /// token again here, or could not reach Redis), for at most `limit`. A writer's final
    /// status waits for it, so a writer that moves to another node as soon as it has its
    /// `200` finds the token let go of cleanly and its viewers keep their epoch.
    pub async fn wait(self, limit: std::time::Duration) {
        if self.0.is_empty() {
            return;
        }
        let all = async {
            for rx in self.0 {
                let _ = rx.await;
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
    }
}
