//! The store's viewer operations: subscribing (L37), resubscribing after a reset, and the
//! shutdown reset.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use plotstream_proto::Status;
use tokio::sync::mpsc;

use super::queue::ViewerGuard;
use super::queue::{Subscription, ViewerMsg, ViewerQueue, ViewerSlot};
use super::stream::Stream;
use super::{Cell, Refusal, Store};

impl Store {
    /// Subscribes a viewer: the snapshot and the registration are atomic (under the stream's
    /// lock), so the first update received covers `last_seq + 1` (I5). `None` for an unknown
    /// stream; 503 past either L37 bound. The subscription holds its viewer slot until it is
    /// dropped.
    pub fn subscribe(&self, token: &str) -> Result<Option<Subscription>, Refusal> {
        let Some(cell) = self.find(token) else {
            return Ok(None);
        };
        let mut stream = cell.lock();
        if stream.removed {
            return Ok(None);
        }
        stream.viewers.retain(|v| !v.tx.is_closed());
        if stream.viewers.len() >= self.config.viewers_per_stream {
            self.metrics.limit_breach("L37");
            return Err(Status::UNAVAILABLE);
        }
        let Some(slot) = ViewerGuard::new(&self.metrics, self.config.viewers_total) else {
            self.metrics.limit_breach("L37");
            return Err(Status::UNAVAILABLE);
        };
        let (rx, queue) = self.add_viewer(&cell, &mut stream);
        Ok(Some(Subscription {
            snapshot: stream.shared_snapshot(),
            epoch: stream.epoch.clone(),
            last_seq: stream.last_seq,
            rx,
            queue,
            _slot: slot,
        }))
    }

    /// Replaces `sub` (of `token`) with a fresh subscription after a reset, keeping its viewer
    /// slot: its queue is dropped first, under the same lock, so a viewer at either L37 bound
    /// can always resubscribe. False if the stream is gone.
    pub fn resubscribe(&self, token: &str, sub: &mut Subscription) -> bool {
        let Some(cell) = self.find(token) else {
            return false;
        };
        let mut stream = cell.lock();
        if stream.removed {
            return false;
        }
        sub.rx.close();
        stream.viewers.retain(|v| !v.tx.is_closed());
        let (rx, queue) = self.add_viewer(&cell, &mut stream);
        sub.snapshot = stream.shared_snapshot();
        sub.epoch.clone_from(&stream.epoch);
        sub.last_seq = stream.last_seq;
        sub.rx = rx;
        sub.queue = queue;
        true
    }

    /// Registers a viewer queue with `stream` (L35 bounds); returns the viewer's ends.
    pub(super) fn add_viewer(
        &self,
        cell: &Cell,
        stream: &mut Stream,
    ) -> (mpsc::Receiver<ViewerMsg>, Arc<ViewerQueue>) {
        let (tx, rx) = mpsc::channel(self.config.viewer_queue);
        let queue = Arc::new(ViewerQueue {
            lagged: AtomicBool::new(false),
            n_bytes: AtomicUsize::new(0),
            max_bytes: self.config.viewer_queue_bytes,
            metrics: self.metrics.clone(),
        });
        stream.viewers.push(ViewerSlot {
            tx,
            queue: queue.clone(),
        });
        cell.watched.store(true, Ordering::Relaxed);
        (rx, queue)
    }

    /// On several nodes: this node lost (`up` false) or regained Redis. Every viewer is told
    /// once per change ([`ViewerMsg::Upstream`]; one whose queue is full is marked lagged, and
    /// its session tells it with the snapshot it sends next).
    pub fn set_upstream(&self, up: bool) {
        let was_down = self.nodes.upstream_down.swap(!up, Ordering::Relaxed);
        if was_down != up {
            return;
        }
        for (_, cell) in self.cells() {
            for v in &cell.lock().viewers {
                if v.tx.try_send(ViewerMsg::Upstream(up)).is_err() {
                    v.queue.mark_lagged();
                }
            }
        }
    }

    /// False while this node cannot reach Redis (several nodes; see [`Store::set_upstream`]).
    pub fn upstream_up(&self) -> bool {
        !self.nodes.upstream_down.load(Ordering::Relaxed)
    }

    /// Sends `reset` (shutdown) to every viewer.
    pub fn shutdown_viewers(&self) {
        for (_, cell) in self.cells() {
            for v in &cell.lock().viewers {
                // A full queue drops it: the session also watches the shutdown signal.
                let _ = v.tx.try_send(ViewerMsg::Reset("shutdown"));
            }
        }
    }
}
