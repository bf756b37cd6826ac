//! What the housekeeping task has the store do: drop idle streams (L27) and the history that
//! retention lets go of (docs/history.md "Retention").

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::history::Kept;
use super::{Cell, Index, Store};
use crate::durable::Op;
use crate::history;

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
            // Its history goes with it (below): out of L60's count too.
            if let Some(mut k) = s.history.take() {
                self.count_history(&k.builder, &mut k.counted);
                self.account_history(k.counted.bytes, 0);
            }
            // On several nodes a copy goes from this node only: the stream stays in Redis.
            if self.journal.is_durable() && !self.config.clustered {
                // Its lines first, so the drop follows them (a writer's lines wait in it
                // until the end of its read).
                self.queue_lines(&mut s);
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

impl Store {
    /// Retention (docs/history.md "Retention"): drops the oldest sealed chunks of streams whose
    /// history is older than `--retention` or larger than L59, then, while all of it is larger
    /// than L60, those of the stream with the oldest. Reads outside any lock; each drop is
    /// made under the stream's lock if its history has not moved meanwhile. Returns the chunks
    /// dropped.
    pub fn sweep_history(&self, now_ms: i64) -> u64 {
        let Some(store) = self.histories.store.get() else {
            return 0;
        };
        let cfg = &self.config.history;
        let cutoff =
            now_ms.saturating_sub(i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX));
        let mut dropped = 0;
        let cells = self.cells();
        for (_, cell) in &cells {
            for _ in 0..256 {
                let Some((token, first, sealed, bytes, first_t)) = facts(cell) else {
                    break;
                };
                if first >= sealed || (bytes <= cfg.stream_bytes && first_t >= cutoff) {
                    break;
                }
                let over = bytes > cfg.stream_bytes;
                match self.drop_chunk(&**store, cell, &token, first, |last_t| {
                    over || last_t < cutoff
                }) {
                    Some(true) => {
                        if over {
                            self.metrics.limit_breach("L59");
                        }
                        dropped += 1;
                    }
                    _ => break,
                }
            }
        }
        if self.history_bytes() > cfg.total_bytes {
            // The streams' facts once, then only the one that lost a chunk is looked at again.
            let mut oldest: Vec<_> = cells
                .iter()
                .filter_map(|(_, c)| facts(c).map(|f| (f, c)))
                .collect();
            for _ in 0..10_000 {
                if self.history_bytes() <= cfg.total_bytes {
                    break;
                }
                let Some(i) = (0..oldest.len())
                    .filter(|&i| oldest[i].0 .1 < oldest[i].0 .2)
                    .min_by_key(|&i| oldest[i].0 .4)
                else {
                    break;
                };
                let ((token, first, ..), cell) = &oldest[i];
                if self.drop_chunk(&**store, cell, token, *first, |_| true) != Some(true) {
                    break;
                }
                self.metrics.limit_breach("L60");
                dropped += 1;
                match facts(cell) {
                    Some(f) => oldest[i].0 = f,
                    None => {
                        oldest.swap_remove(i);
                    }
                }
            }
        }
        self.metrics
            .history_chunks_dropped
            .fetch_add(dropped, Ordering::Relaxed);
        dropped
    }

    /// Drops the chunk at `first` of `cell`'s history if `decide(its last point's time)` says
    /// so. `None` when it cannot be read.
    fn drop_chunk(
        &self,
        store: &dyn history::Store,
        cell: &Cell,
        token: &str,
        first: u64,
        decide: impl FnOnce(i64) -> bool,
    ) -> Option<bool> {
        // A sealed chunk is one record, or the parts it arrived in (docs/history.md "Records").
        let end = first + history::CHUNK;
        let recs = store
            .read(token, 0, first, end, history::CHUNK as usize)
            .ok()?;
        if recs.first().map(|(i, _)| *i) != Some(first) {
            return None;
        }
        let (mut count, mut len, mut last_t) = (0u64, 0u64, i64::MIN);
        for (_, rec) in &recs {
            let points = history::point::decode_points(rec)?;
            count += points.len() as u64;
            len += rec.len() as u64;
            last_t = last_t.max(points.last().map_or(i64::MIN, |p| p.t));
        }
        if count != history::CHUNK {
            return None;
        }
        if !decide(last_t) {
            return Some(false);
        }
        let next_t = store
            .read(token, 0, end, u64::MAX, 1)
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|(_, r)| history::point::decode_points(&r))
            .and_then(|p| p.first().map(|p| p.t))
            .unwrap_or(last_t);
        let mut guard = cell.lock();
        let s = &mut *guard;
        let kept = s.history.as_mut()?;
        if kept.builder.head.first != first {
            return Some(false);
        }
        let Kept {
            token,
            builder,
            run,
            parts,
            counted,
            ..
        } = &mut **kept;
        // The trim and the head that says so go into one commit, after the stream's lines.
        let mut q = self.journal.queue();
        q.lines(&mut s.lines);
        let ok = builder.trim(count, len, next_t, &mut |w| {
            super::persist::journal_history(&mut q, token, run, parts, w);
        });
        drop(q);
        self.count_history(builder, counted);
        drop(guard);
        Some(ok)
    }
}

/// `(token, first, sealed, bytes, first_t)` of `cell`'s history, if it has one.
fn facts(cell: &Cell) -> Option<(Arc<str>, u64, u64, u64, i64)> {
    let s = cell.lock();
    let k = s.history.as_ref()?;
    let h = &k.builder.head;
    Some((
        k.token.clone(),
        h.first,
        h.sealed,
        k.builder.bytes(),
        h.first_t,
    ))
}
