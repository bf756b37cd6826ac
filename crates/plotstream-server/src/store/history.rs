//! The store's side of history (docs/history.md): the owner keeps each stream's builder beside
//! its window, turns every applied line into points under the stream's lock (no I/O: the
//! records go to the journal with the line), restores the builders at start-up from what is
//! stored, and lets retention drop the oldest chunks (L59, L60, `--retention`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use plotstream_proto::Update;

use super::{Cell, Store, Stream};
use crate::durable::Op;
use crate::history::{self, Builder, Point, Stored, View, Write};

/// What the store keeps for history.
#[derive(Debug, Default)]
pub(super) struct Histories {
    /// Where history records are read (set when the store is durable and keeps history).
    store: OnceLock<Arc<dyn history::Store>>,
    /// L60: the history bytes of every stream.
    bytes: AtomicU64,
}

/// A stream's history, as its owner builds it.
#[derive(Debug)]
pub(super) struct Kept {
    token: Arc<str>,
    builder: Builder,
    /// The last receive time given (a point's time never goes back, even if the clock does).
    last_t: i64,
    /// Its stored history could not be read at start-up: nothing more is added to it rather
    /// than overwrite what is there (the log says why).
    broken: bool,
}

thread_local! {
    static POINTS: RefCell<Vec<Point>> = const { RefCell::new(Vec::new()) };
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Keeps history from now on, read back through `store` (a durable store's reader).
    pub fn keep_history_in(&self, store: Arc<dyn history::Store>) {
        let cfg = &self.config.history;
        if self.journal.is_durable() && !cfg.retention.is_zero() && !self.config.clustered {
            let _ = self.histories.store.set(store);
            let m = &self.metrics;
            m.history_stream_limit
                .store(cfg.stream_bytes, Ordering::Relaxed);
            m.history_total_limit
                .store(cfg.total_bytes, Ordering::Relaxed);
        }
    }

    /// Where history is read from; `None` when the server keeps none.
    pub fn history(&self) -> Option<&Arc<dyn history::Store>> {
        self.histories.store.get()
    }

    /// L60's count: every stream's history bytes.
    pub fn history_bytes(&self) -> u64 {
        self.histories.bytes.load(Ordering::Relaxed)
    }

    /// The points of `update`, applied as `seq`, into `s`'s history; returns the last ticket
    /// of what it stored (0 when nothing).
    pub(super) fn keep_points(
        &self,
        s: &mut Stream,
        token: &str,
        update: &Update,
        seq: u64,
    ) -> u64 {
        if self.histories.store.get().is_none() {
            return 0;
        }
        let kept = s.history.get_or_insert_with(|| {
            Box::new(Kept {
                token: Arc::from(token),
                builder: Builder::new(),
                last_t: 0,
                broken: false,
            })
        });
        if kept.broken {
            return 0;
        }
        let t = now_ms().max(kept.last_t);
        kept.last_t = t;
        POINTS.with(|points| {
            let mut points = points.borrow_mut();
            points.clear();
            history::points_of(update, seq, t, &mut points);
            let before = kept.builder.bytes();
            let mut ticket = 0;
            let Kept { token, builder, .. } = &mut **kept;
            for p in points.iter() {
                builder.push(p, &mut |w| ticket = self.journal_history(token, w));
            }
            self.metrics
                .history_points
                .fetch_add(points.len() as u64, Ordering::Relaxed);
            self.account_history(before, kept.builder.bytes());
            ticket
        })
    }

    fn journal_history(&self, token: &Arc<str>, w: Write<'_>) -> u64 {
        match w {
            Write::Points { n, count, bytes } => self.journal.push_points(token, n, count, bytes),
            Write::Put {
                level,
                index,
                value,
                replaces,
            } => self.journal.push(Op::HistPut {
                token: token.clone(),
                level,
                index,
                value,
                replaces,
            }),
            Write::Trim { before } => self.journal.push(Op::HistTrim {
                token: token.clone(),
                before,
            }),
        }
    }

    fn account_history(&self, before: u64, after: u64) {
        let h = &self.histories.bytes;
        let total = if after >= before {
            h.fetch_add(after - before, Ordering::Relaxed) + (after - before)
        } else {
            let less = before - after;
            let old = h
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(less))
                })
                .unwrap_or(0);
            old.saturating_sub(less)
        };
        self.metrics.history_bytes.store(total, Ordering::Relaxed);
    }

    /// `token`'s history as stored, ready to go on (start-up): its head, its open tier
    /// blocks and the parts after the last seal.
    pub(super) fn restore_history(&self, token: &str) -> Option<Box<Kept>> {
        let store = self.histories.store.get()?;
        let src = Stored {
            store: &**store,
            token,
        };
        let restored = (|| {
            let view = View::load(&src)?;
            let mut open = Vec::new();
            for (level, j) in Builder::open_blocks(view.stored.sealed) {
                if let Some((_, rec)) = src_read(&src, level, j)? {
                    let entries = history::tier::decode_block(&rec).ok_or_else(|| {
                        crate::durable::StorageError("history: a tier block does not decode".into())
                    })?;
                    open.push((level, entries));
                }
            }
            let last_t = view.parts().last().map_or(0, |p| p.t);
            let b = Builder::restore(view.stored.clone(), open, view.parts());
            Ok::<_, crate::durable::StorageError>((b, last_t))
        })();
        let (builder, last_t, broken) = match restored {
            Ok((b, last_t)) => (b, last_t, false),
            Err(e) => {
                let fp = plotstream_proto::Token::parse(token.as_bytes())
                    .map_or_else(|| "<invalid token>".to_owned(), |t| t.fingerprint());
                tracing::warn!(stream = %fp, error = %e, "history: not restored; nothing more is added to it");
                (Builder::new(), 0, true)
            }
        };
        self.account_history(0, builder.bytes());
        Some(Box::new(Kept {
            token: Arc::from(token),
            builder,
            last_t,
            broken,
        }))
    }

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
        for _ in 0..10_000 {
            if self.history_bytes() <= cfg.total_bytes {
                break;
            }
            let oldest = cells
                .iter()
                .filter_map(|(_, c)| facts(c).map(|f| (f, c)))
                .filter(|((_, first, sealed, ..), _)| first < sealed)
                .min_by_key(|((.., first_t), _)| *first_t);
            let Some(((token, first, ..), cell)) = oldest else {
                break;
            };
            if self.drop_chunk(&**store, cell, &token, first, |_| true) != Some(true) {
                break;
            }
            self.metrics.limit_breach("L60");
            dropped += 1;
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
        let recs = store.read(token, 0, first, u64::MAX, 2).ok()?;
        let (_, chunk) = recs.first().filter(|(i, _)| *i == first)?;
        let points = history::point::decode_points(chunk)?;
        let last_t = points.last()?.t;
        if !decide(last_t) {
            return Some(false);
        }
        let next_t = recs
            .get(1)
            .and_then(|(_, r)| history::point::decode_points(r))
            .and_then(|p| p.first().map(|p| p.t))
            .unwrap_or(last_t);
        let mut s = cell.lock();
        let kept = s.history.as_mut()?;
        if kept.builder.head.first != first {
            return Some(false);
        }
        let before = kept.builder.bytes();
        let Kept { token, builder, .. } = &mut **kept;
        let ok = builder.trim(points.len() as u64, chunk.len() as u64, next_t, &mut |w| {
            self.journal_history(token, w);
        });
        let after = builder.bytes();
        drop(s);
        self.account_history(before, after);
        Some(ok)
    }
}

fn src_read(
    src: &Stored<'_>,
    level: u8,
    j: u64,
) -> Result<Option<(u64, Vec<u8>)>, crate::durable::StorageError> {
    use history::Source as _;
    Ok(src.read(level, j, j + 1, 1)?.into_iter().next())
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
