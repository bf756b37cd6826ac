//! Counts that undo themselves: a connection or a viewer is counted when its guard is made and
//! uncounted when the guard drops, on every path out (return, error, panic, cancellation).
//! The viewer total used to be recomputed on subscribe and never decremented on leave, so one
//! figure with 10 001 traces locked every later viewer out with 503 until a restart.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::Shared;

/// One open connection, counted in `plotstream_connections_open` and per peer address (L10,
/// L11).
#[derive(Debug)]
pub struct ConnGuard<'a> {
    shared: &'a Shared,
    peer: IpAddr,
    /// Open connections, this one included, when it was counted.
    pub n_open: u64,
    /// Open connections from this peer address, this one included.
    pub n_from_peer: usize,
}

impl<'a> ConnGuard<'a> {
    /// Counts a connection from `peer`.
    pub fn new(shared: &'a Shared, peer: IpAddr) -> ConnGuard<'a> {
        let n_open = shared
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let n_from_peer = {
            let mut map = shared
                .per_peer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = map.entry(peer).or_default();
            *n += 1;
            *n
        };
        ConnGuard {
            shared,
            peer,
            n_open,
            n_from_peer,
        }
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
        self.shared
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// One viewer subscription (one per stream a session follows: a figure feed holds one per
/// streamed trace), counted in `plotstream_viewers` against L37's total. The
/// [`Subscription`](crate::store::Subscription) holds it, so the count is the number of live
/// subscriptions at every moment and the gauge is never stale; a resubscription after a reset
/// keeps its guard.
#[derive(Debug)]
pub struct ViewerGuard {
    metrics: Arc<Metrics>,
}

impl ViewerGuard {
    /// Counts one more viewer, unless `max` are already counted (L37: 503).
    pub fn new(metrics: &Arc<Metrics>, max: usize) -> Option<ViewerGuard> {
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        metrics
            .viewers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ViewerGuard {
            metrics: metrics.clone(),
        })
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.metrics.viewers.fetch_sub(1, Ordering::AcqRel);
    }
}
