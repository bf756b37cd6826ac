//! What the store and a viewer's session share: the events fanned out (encoded once), the
//! viewer's queue state and byte count (L35), and a subscription (its L37 slot).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// One event queued to a viewer.
#[derive(Debug, Clone)]
pub enum ViewerMsg {
    /// One accepted update, encoded once for every viewer.
    Update(Arc<Fanout>),
    /// The stream's history was lost (`epoch`) or the server is stopping (`shutdown`).
    Reset(&'static str),
    /// On several nodes: this node lost (`false`) or regained (`true`) Redis; its viewers
    /// keep their window meanwhile (docs/storage.md "Several nodes").
    Upstream(bool),
}

/// An update as fanned out: encoded once, when someone watches, and shared by every viewer's
/// queue, session and output (reference-counted `Bytes`, never copied per viewer).
#[derive(Debug)]
pub struct Fanout {
    /// The update's seq.
    pub seq: u64,
    /// The whole SSE `update` event that carries this update alone, as a single-stream feed
    /// sends it: `event: update`, `id: <epoch>:<seq>`, and
    /// `data: {"epoch":..,"from_seq":seq,"to_seq":seq,"data":[<op>]}`.
    pub event: Bytes,
    /// The JSON op (`{"seq":..,"append":{..},...}`), a slice of `event`, which coalesced and
    /// figure-feed events frame.
    pub op: Bytes,
}

impl Fanout {
    /// What the update counts against a viewer's L35 byte bound.
    pub fn n_bytes(&self) -> usize {
        self.event.len()
    }
}

/// The part of a viewer's queue that the fan-out and the viewer's session share (L35).
#[derive(Debug)]
pub struct ViewerQueue {
    /// Set when the queue overflowed: the viewer must reset and resubscribe (I5). Nothing is
    /// queued to it from then on.
    pub(super) lagged: AtomicBool,
    /// Bytes fanned out and not yet written to the viewer's socket (added by the fan-out,
    /// given back by the session once written).
    /// Invariant: at most `max_bytes`, or one update's bytes.
    pub(super) n_bytes: AtomicUsize,
    /// L35: the byte bound.
    pub(super) max_bytes: usize,
    pub(super) metrics: Arc<Metrics>,
}

impl ViewerQueue {
    /// True once the queue overflowed.
    pub fn is_lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// Bytes counted now: queued, pending and unwritten.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes.load(Ordering::Acquire)
    }

    /// Gives back `n` counted bytes, written to the socket (or dropped with the queue).
    pub fn release(&self, n: usize) {
        let _ = self
            .n_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }

    pub(super) fn mark_lagged(&self) {
        self.lagged.store(true, Ordering::Release);
    }

    /// Counts `n` more bytes, unless that passes the bound (then the caller marks the viewer
    /// lagged). Only the fan-out adds, under the store lock, and the session only subtracts, so
    /// the check cannot race into going over.
    pub(super) fn try_reserve(&self, n: usize) -> bool {
        let before = self.n_bytes.load(Ordering::Acquire);
        let after = before.saturating_add(n);
        if before > 0 && after > self.max_bytes {
            return false;
        }
        self.n_bytes.fetch_add(n, Ordering::AcqRel);
        let peak = &self.metrics.viewer_queued_bytes_max;
        let after = u64::try_from(after).unwrap_or(u64::MAX);
        if after > peak.load(Ordering::Relaxed) {
            peak.fetch_max(after, Ordering::Relaxed);
        }
        true
    }
}

/// What a viewer gets when it subscribes.
#[derive(Debug)]
pub struct Subscription {
    /// The snapshot event's JSON (`{epoch, first_seq, last_seq, maxpoints, window, layout}`).
    pub snapshot: Bytes,
    /// The stream's epoch.
    pub epoch: String,
    /// The snapshot's `last_seq`; the first update covers `last_seq + 1`.
    pub last_seq: u64,
    /// Later updates.
    pub rx: mpsc::Receiver<ViewerMsg>,
    /// Its lag flag and byte count (L35), shared with the fan-out.
    pub queue: Arc<ViewerQueue>,
    /// Its place in the L37 count, given back when the subscription is dropped.
    pub(super) _slot: ViewerGuard,
}

#[derive(Debug)]
pub(super) struct ViewerSlot {
    pub(super) tx: mpsc::Sender<ViewerMsg>,
    pub(super) queue: Arc<ViewerQueue>,
}

/// One viewer subscription (one per stream a session follows: a figure feed holds one per
/// streamed trace), counted in `plotstream_viewers` against L37's total. The
/// [`Subscription`] holds it, so the count is the number of live
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
