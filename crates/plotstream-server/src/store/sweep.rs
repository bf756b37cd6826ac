//! What the housekeeping task has the store do: drop idle streams (L27) and the history that
//! retention lets go of (docs/history.md "Retention").

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Index, Store};
use crate::durable::Op;

impl Store {
    /// L27: drops streams that ingest created and nobody has written, watched or bound to a
    /// figure for `idle_stream_ttl`. Returns how many went.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let ttl = self.config.idle_stream_ttl;
        let mut index = self.index_mut();
        let Index {
            streams,
            by_read_id,
        } = &mut *index;
        let mut gone = 0;
        streams.retain(|token, cell| {
            let mut s = cell.lock();
            s.viewers.retain(|v| !v.tx.is_closed());
            if s.writer.is_some() || !s.viewers.is_empty() {
                s.idle_since = now;
                return true;
            }
            let owned = self.tokens().registered.contains(token)
                || self
                    .config
                    .users
                    .as_ref()
                    .is_some_and(|u| u.snapshot().owner_of(token).is_some());
            if owned || now.saturating_duration_since(s.idle_since) < ttl {
                return true;
            }
            // A line that found this stream before it went retries from the index.
            s.removed = true;
            by_read_id.remove(&s.read_id);
            self.account_bytes(s.window.bytes(), 0);
            // On several nodes a copy goes from this node only: the stream stays in Redis.
            if self.journal.is_durable() && !self.config.clustered {
                self.journal.push(Op::DropGen { gen: s.gen });
                self.journal.push(Op::DropStream {
                    token: token.clone(),
                });
                self.journal.push(Op::HistDrop {
                    token: token.clone(),
                });
            }
            gone += 1;
            false
        });
        if gone > 0 {
            self.metrics
                .streams
                .fetch_sub(gone as u64, Ordering::Relaxed);
            for _ in 0..gone {
                self.metrics.limit_breach("L27");
            }
        }
        gone
    }
}
