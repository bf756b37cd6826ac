//! What the store sends to the journal (metadata, snapshots, generations, the small tables),
//! and recovery at start-up: every stream rebuilt from its records, damage reported (DC6).

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use plotstream_proto::{Maxpoints, Token};

use plotstream_proto::Update;

use super::history::{Counted, Kept};
use super::report::Recovery;
use super::stream::{new_epoch, Prepared, Stream};
use super::writer::Conn;
use super::{Cell, Store};
use crate::durable::{Lines, Loaded, LoadedStream, Op, Part, Queue, Run, Table};
use crate::history::{self, Builder, Stored, Write, KEEP_PARTS};
use crate::records::{self, StreamMeta};

impl Store {
    /// Journals `stream`'s metadata.
    pub(super) fn store_meta(&self, token: &str, s: &Stream) -> u64 {
        if !self.stores(s) {
            return 0;
        }
        self.journal.push(Op::Meta {
            token: token.to_owned(),
            record: s.meta().encode(),
        })
    }

    /// Journals `stream`'s whole window (compaction: its earlier lines go).
    pub(super) fn store_snapshot(&self, s: &mut Stream) -> u64 {
        if !self.stores(s) {
            return 0;
        }
        self.queue_lines(s);
        // The lines the snapshot drops may hold history points no part holds yet.
        self.flush_history(s);
        s.snap_seq = s.last_seq;
        self.journal.push(Op::Snapshot {
            gen: s.gen,
            seq: s.last_seq,
            record: s.snapshot_record(),
        })
    }

    /// Journals a new generation for `token`'s stream (its epoch changed, or on several nodes
    /// a new owner): the old one's records go, the new one starts from a snapshot of the window
    /// as it is now; all in one transaction, so a crash never leaves the metadata naming a
    /// generation without its snapshot.
    pub(super) fn store_new_gen(&self, token: &str, s: &mut Stream) -> u64 {
        self.queue_lines(s);
        // The old generation's lines may hold history points no part holds yet.
        self.flush_history(s);
        let drop = Op::DropGen { gen: s.gen };
        s.gen = if s.fence == 0 {
            self.new_gen()
        } else {
            self.gen_under(s.fence)
        };
        if !self.stores(s) {
            return 0;
        }
        s.snap_seq = s.last_seq;
        self.journal.push_all([
            drop,
            Op::Meta {
                token: token.to_owned(),
                record: s.meta().encode(),
            },
            Op::Snapshot {
                gen: s.gen,
                seq: s.last_seq,
                record: s.snapshot_record(),
            },
        ])
    }

    /// True when changes to `s` are stored: the store is durable and, on several nodes, this
    /// node owns `s`.
    fn stores(&self, s: &Stream) -> bool {
        self.journal.is_durable() && (!self.config.clustered || s.fence != 0)
    }

    pub(super) fn store_put(&self, table: Table, key: &str, value: Option<Vec<u8>>) {
        if self.journal.is_durable() {
            self.journal.push(Op::Put {
                table,
                key: key.to_owned(),
                value,
            });
        }
    }

    /// Rebuilds the store from what `loaded` holds (start-up, before any connection): every
    /// stream's metadata, its snapshot and the lines after it, replayed through the same
    /// `apply` as live lines. Damage is never silent: a record that does not decode ends its
    /// stream's valid prefix there, and the report names the stream and what was dropped (DC6).
    /// After an unclean stop (`loaded.clean` false) every stream gets a new epoch, so a viewer
    /// that saw lines newer than the durable tail resets (DC4).
    pub fn recover(&self, loaded: Loaded) -> Recovery {
        let mut report = Recovery::default();
        // Generations handed out while recovering (a damaged stream's new one) must not
        // collide with a stored one.
        let stored_max = loaded
            .streams
            .iter()
            .filter_map(|ls| StreamMeta::decode(&ls.meta))
            .map(|m| m.gen)
            .max()
            .unwrap_or(0);
        self.next_gen.fetch_max(stored_max + 1, Ordering::Relaxed);
        {
            let mut sets = self.tokens();
            for (table, key, _) in loaded.entries {
                match table {
                    Table::Registered => {
                        sets.registered.insert(key);
                    }
                    Table::Retired => {
                        sets.retired.insert(key);
                    }
                    _ => {}
                }
            }
        }
        // Decoding is the cost of a start-up (10 000 windows of 500 points): spread it over
        // the cores, then insert under the index's lock in one pass.
        let clean = loaded.clean;
        let budget = self.config.stream_bytes;
        let ceiling = self.config.max_maxpoints;
        let n_threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut streams = loaded.streams;
        let chunk = streams.len().div_ceil(n_threads).max(1);
        let mut parts: Vec<Vec<LoadedStream>> = Vec::new();
        while !streams.is_empty() {
            let rest = streams.split_off(streams.len().saturating_sub(chunk));
            parts.push(rest);
        }
        let rebuilt: Vec<Vec<Rebuilt>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    scope.spawn(move || {
                        part.into_iter()
                            .map(|ls| rebuild(ls, clean, budget, ceiling))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut index = self.index_mut();
        for r in rebuilt.into_iter().flatten() {
            report.dropped.extend(r.notes);
            let Some(mut s) = r.stream else {
                if !self.config.clustered {
                    self.journal.push(Op::DropStream {
                        token: r.token.clone(),
                    });
                    self.journal.push(Op::HistDrop { token: r.token });
                }
                continue;
            };
            if !self.config.clustered {
                // On several nodes a stream's history comes with its ownership (`install`).
                s.history = self.restore_history(&r.token);
                self.replay_history(&mut s, r.history);
            }
            if r.damaged {
                self.store_new_gen(&r.token, &mut s);
            } else if !clean {
                self.store_meta(&r.token, &s);
            }
            report.streams += 1;
            report.points += s.count();
            report.lines += r.lines;
            self.account_bytes(0, s.window.bytes());
            index.by_read_id.insert(s.read_id.clone(), r.token.clone());
            index.streams.insert(r.token, Arc::new(Cell::new(s)));
        }
        self.metrics
            .streams
            .store(index.streams.len() as u64, Ordering::Relaxed);
        report
    }
}

/// One stream as [`rebuild`] made it from its records.
#[derive(Debug)]
pub(super) struct Rebuilt {
    pub(super) token: String,
    /// `None` when its metadata was unreadable (dropped).
    pub(super) stream: Option<Stream>,
    /// Something was dropped: it needs a new generation.
    pub(super) damaged: bool,
    /// Lines replayed.
    lines: usize,
    /// The history points of the lines replayed: `(position of the first, points)`.
    pub(super) history: Vec<(u64, Vec<history::Point>)>,
    /// What was dropped (DC6).
    pub(super) notes: Vec<String>,
}

/// A stream from its metadata, snapshot and later lines, replayed through the same `apply` as
/// live lines, up to the first record that does not decode or does not follow (DC6). After an
/// unclean stop (`clean` false), or when something was dropped, it gets a new epoch (DC4).
pub(super) fn rebuild(ls: LoadedStream, clean: bool, budget: usize, ceiling: Maxpoints) -> Rebuilt {
    let fp = Token::parse(ls.token.as_bytes())
        .map_or_else(|| "<invalid token>".to_owned(), |t| t.fingerprint());
    let mut out = Rebuilt {
        token: ls.token,
        stream: None,
        damaged: false,
        lines: 0,
        history: Vec::new(),
        notes: Vec::new(),
    };
    let Some(meta) = StreamMeta::decode(&ls.meta) else {
        out.notes
            .push(format!("stream {fp}: metadata unreadable, stream dropped"));
        return out;
    };
    // A stored window comes back within today's `--max-maxpoints`.
    let mut s = Stream::new(
        Maxpoints::new(meta.maxpoints, ceiling),
        meta.read_id,
        meta.gen,
    );
    s.epoch = meta.epoch;
    s.prev_gens = meta.prev;
    s.claimed_by = meta.claimed_by;
    s.rejected_lines = meta.rejected_lines;
    s.displaced_lines = meta.displaced_lines;
    s.stored_counters = (meta.rejected_lines, meta.displaced_lines);
    s.budget_limited = meta.budget_limited;
    if let Some((seq, record)) = &ls.snapshot {
        match records::decode_snapshot(record) {
            Some(state) if state.last_seq == *seq => s.restore(state),
            _ => {
                out.notes.push(format!(
                    "stream {fp}: snapshot at seq {seq} unreadable, window dropped"
                ));
                s.last_seq = *seq;
                out.damaged = true;
            }
        }
        s.snap_seq = *seq;
    }
    let n_lines = ls.lines.len();
    let mut prepared = Prepared::default();
    for (i, (seq, record)) in ls.lines.iter().enumerate() {
        let line = if *seq == s.last_seq + 1 && !out.damaged {
            records::decode_line(record)
        } else {
            None
        };
        let Some((update, hist)) = line else {
            out.notes.push(format!(
                "stream {fp}: line seq {seq} unreadable or out of order; it and the {} after it dropped",
                n_lines - i - 1
            ));
            out.damaged = true;
            break;
        };
        prepared.sizes_and_record(&update, false);
        s.apply(&update, &mut prepared, budget, false);
        if let Some(h) = hist {
            let points = history::points_of(&update, *seq, h.t)
                .map(history::PointRef::to_point)
                .collect();
            out.history.push((h.n, points));
        }
        out.lines += 1;
    }
    if !clean || out.damaged {
        s.epoch = new_epoch();
        s.prev_gens.clear();
    }
    out.stream = Some(s);
    out
}

/// History: the owner's points into the journal, builders restored at start-up.
impl Store {
    /// Keeps history from now on, read back through `store` (a durable store's reader).
    pub fn keep_history_in(&self, store: Arc<dyn history::Store>) {
        let cfg = &self.config.history;
        if self.journal.is_durable() && !cfg.retention.is_zero() {
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

    /// Journals line `seq` of `s` (its record `record`) and keeps its points in `s`'s history,
    /// received at `received` (ms since the Unix epoch; read only when history is kept).
    /// Returns the line's ticket, or 0 when it waits in `s.lines` for the end of the read
    /// (`Store::flush_lines`).
    ///
    /// The line record carries where its points go and when they came
    /// ([`records::LineHistory`]): the line journal holds the open chunk's points until a
    /// snapshot drops the lines (which stores them as one part first), a reader asks, or the
    /// chunk is sealed. On several nodes, where other nodes read what the owner stored, each
    /// line's points are stored with it, in the line's commit.
    pub(super) fn journal_line(
        &self,
        s: &mut Stream,
        token: &str,
        update: &Update,
        seq: u64,
        record: &[u8],
        received: impl FnOnce() -> i64,
    ) -> u64 {
        let gen = s.gen;
        let Stream {
            history,
            lines,
            fence,
            ..
        } = s;
        let Some(kept) = self.kept(history, *fence, token) else {
            lines.push(gen, seq, |out| out.extend_from_slice(record));
            return self.queue_if_full(lines);
        };
        // A point's time never goes back, even if the clock does.
        let t = received().max(kept.builder.head.last_t);
        let points = history::points_of(update, seq, t);
        let count = points.len();
        let Kept {
            token,
            builder,
            run,
            parts,
            counted,
            ..
        } = kept;
        counted.points += count as u64;
        let n = builder.end;
        let line = |out: &mut Vec<u8>| {
            out.extend_from_slice(record);
            if count > 0 {
                records::put_line_history(records::LineHistory { n, t }, out);
            }
        };
        let lazy = builder.is_lazy();
        let ticket = if builder.fits(count) {
            let (n, count, bytes) = builder.push_open(points);
            if lazy || count == 0 {
                lines.push(gen, seq, line);
                // Counted at the end of the read (`flush_lines`).
                return self.queue_if_full(lines);
            }
            let mut q = self.journal.queue();
            q.lines(lines);
            q.line(gen, seq, line);
            journal_history(&mut q, token, run, parts, Write::points(n, count, bytes))
        } else {
            // The seals are made first, the journal unlocked (another stream's line need not
            // wait while this one's points are added and its chunk and blocks encoded), then
            // queued with the line in one queue: one commit holds the line, a seal's last part,
            // its tier blocks and head (a crash cannot keep some without the others).
            let mut writes = Vec::new();
            builder.push_all(points, &mut |w| writes.push(w.into_owned()));
            let mut q = self.journal.queue();
            q.lines(lines);
            let first = q.line(gen, seq, line);
            writes.into_iter().fold(first, |ticket, w| {
                ticket.max(journal_history(&mut q, token, run, parts, w))
            })
        };
        self.count_history(builder, counted);
        ticket
    }

    /// Queues `lines` when they are [full](Lines::is_full): returns the last one's ticket, or 0
    /// while they wait.
    fn queue_if_full(&self, lines: &mut Lines) -> u64 {
        if lines.is_full() {
            self.journal.queue().lines(lines)
        } else {
            0
        }
    }

    /// Queues the lines `s` holds (before anything else is queued for it, so its ops keep
    /// their order); returns the ticket of its last line queued.
    pub(super) fn queue_lines(&self, s: &mut Stream) -> u64 {
        self.journal.queue().lines(&mut s.lines)
    }

    /// Queues the lines `conn` left in streams this read (`Conn::buffered`) and brings its
    /// `last_ticket` up to them: a writer calls it at the end of every read and before it
    /// waits for anything, so no line waits past the read it came in (a final response waits
    /// for `last_ticket`, DC1).
    pub fn flush_lines(&self, conn: &Conn) {
        let mut cells = std::mem::take(&mut *lock_buffered(conn));
        if cells.is_empty() {
            return;
        }
        for cell in cells.drain(..) {
            let Ok(cell) = cell.downcast::<Cell>() else {
                continue;
            };
            let mut s = cell.lock();
            let ticket = self.queue_lines(&mut s);
            if s.lines_by == Some(conn.id) {
                s.lines_by = None;
            }
            if let Some(k) = s.history.as_deref_mut() {
                self.count_history(&k.builder, &mut k.counted);
            }
            drop(s);
            conn.last_ticket.fetch_max(ticket, Ordering::AcqRel);
        }
        // Its allocation is kept for the next read.
        *lock_buffered(conn) = cells;
    }

    /// Brings the shared counts up to a stream's history (`builder`, `counted` of it): the
    /// points kept since the last time, and L60's total by what its bytes changed.
    pub(super) fn count_history(&self, builder: &Builder, counted: &mut Counted) {
        if counted.points > 0 {
            self.metrics
                .history_points
                .fetch_add(counted.points, Ordering::Relaxed);
            counted.points = 0;
        }
        let bytes = builder.bytes();
        if bytes != counted.bytes {
            self.account_history(counted.bytes, bytes);
            counted.bytes = bytes;
        }
    }

    /// Stores the points of `s`'s open history chunk that only the line journal holds yet,
    /// as one part. Returns its ticket (0 when there were none).
    pub(super) fn flush_history(&self, s: &mut Stream) -> u64 {
        let Some(Kept {
            token,
            builder,
            run,
            parts,
            broken: false,
            ..
        }) = s.history.as_deref_mut()
        else {
            return 0;
        };
        let Some((n, count, bytes)) = builder.unwritten() else {
            return 0;
        };
        let part = Part {
            token,
            run,
            n,
            count,
            bytes: Cow::Borrowed(bytes),
        };
        let (ticket, new) = self.journal.push_points(part);
        count_part(parts, n, new);
        builder.mark_written();
        ticket
    }

    /// `Store::flush_history` of `token`'s stream, for a reader of its history: once the
    /// ticket is durable, the store holds every point accepted before the call.
    pub fn flush_history_of(&self, token: &str) -> u64 {
        let Some(cell) = self.find(token) else {
            return self.journal.last_ticket();
        };
        if !self.config.clustered {
            let mut s = cell.lock();
            // The lines first: a part never holds points of lines a crash could lose.
            self.queue_lines(&mut s);
            self.flush_history(&mut s);
        }
        // Everything journaled so far: a chunk sealed just now is in the pending batch too.
        self.journal.last_ticket()
    }

    /// Adds to `s`'s restored history the points of the lines replayed at start-up that no
    /// stored part or chunk holds (`lines`: the position of each line's first point and its
    /// points, in order). They are journaled as the live ones are: seals are written, the open
    /// chunk's points stay with their lines.
    pub(super) fn replay_history(&self, s: &mut Stream, lines: Vec<(u64, Vec<history::Point>)>) {
        let Some(Kept {
            token,
            builder,
            run,
            parts,
            broken: false,
            counted,
        }) = s.history.as_deref_mut()
        else {
            return;
        };
        let mut q = self.journal.queue();
        for (n, points) in lines {
            let end = builder.end;
            if n > end {
                // A line between them is missing (it never should be): later points would be
                // kept at the wrong positions.
                tracing::warn!(
                    stored = end,
                    line = n,
                    "history: a line's points do not follow the stored ones; the rest are not kept"
                );
                break;
            }
            let skip = usize::try_from(end - n).unwrap_or(usize::MAX);
            builder.push_all(points.iter().skip(skip), &mut |w| {
                journal_history(&mut q, token, run, parts, w);
            });
        }
        drop(q);
        self.count_history(builder, counted);
    }

    /// `b`, left lazy (its open chunk's points stay in the line journal) on one node; on
    /// several, where other nodes read what the owner stored, each line's points are stored
    /// in the line's commit.
    fn new_builder(&self, mut b: Builder) -> Builder {
        b.set_lazy(!self.config.clustered);
        b
    }

    /// A stream's history as its owner builds it (its `history` and `fence`), made when it has
    /// none yet: `None` when the server keeps none, this node does not own the stream, or it
    /// could not be read.
    fn kept<'s>(
        &self,
        history: &'s mut Option<Box<Kept>>,
        fence: u64,
        token: &str,
    ) -> Option<&'s mut Kept> {
        self.histories.store.get()?;
        if self.config.clustered && (fence == 0 || history.is_none()) {
            // Only an owner adds to a stream's history, and only to what it read when it took
            // the stream (a fresh builder would overwrite what Redis holds).
            return None;
        }
        let kept = history.get_or_insert_with(|| {
            Kept::new(token, self.new_builder(Builder::new()), (0, 0), false)
        });
        (!kept.broken).then_some(&mut **kept)
    }

    pub(super) fn account_history(&self, before: u64, after: u64) {
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

    /// `s`'s history from now on: `builder` (read when this node took the stream), or none
    /// (it let go of it).
    pub(super) fn set_history(&self, s: &mut Stream, token: &str, builder: Option<Builder>) {
        if let Some(k) = s.history.as_deref_mut() {
            self.count_history(&k.builder, &mut k.counted);
        }
        let before = s.history.as_ref().map_or(0, |k| k.counted.bytes);
        s.history = builder.map(|builder| {
            let open = builder.end - builder.end % history::CHUNK;
            Kept::new(token, builder, (open, KEEP_PARTS + 1), false)
        });
        let after = s.history.as_ref().map_or(0, |k| k.counted.bytes);
        self.account_history(before, after);
    }

    /// `token`'s history as stored, ready to go on (start-up): its head, its open tier
    /// blocks and the parts after the last seal.
    pub(super) fn restore_history(&self, token: &str) -> Option<Box<Kept>> {
        let store = self.histories.store.get()?;
        let src = Stored {
            store: &**store,
            token,
        };
        let (builder, broken) = match Builder::load(&src) {
            Ok(b) => (self.new_builder(b), false),
            Err(e) => {
                let fp = plotstream_proto::Token::parse(token.as_bytes())
                    .map_or_else(|| "<invalid token>".to_owned(), |t| t.fingerprint());
                tracing::warn!(stream = %fp, error = %e, "history: not restored; nothing more is added to it");
                (Builder::new(), true)
            }
        };
        self.account_history(0, builder.bytes());
        // The open chunk's parts before the restart are not counted: its seal writes it whole.
        let open = builder.end - builder.end % history::CHUNK;
        Some(Kept::new(token, builder, (open, KEEP_PARTS + 1), broken))
    }
}

/// `conn`'s streams with lines to queue: taken under a stream's lock (a line registers its
/// stream), never held while one is locked (`Store::flush_lines` takes the list first).
pub(super) fn lock_buffered(
    conn: &Conn,
) -> std::sync::MutexGuard<'_, Vec<Arc<dyn std::any::Any + Send + Sync>>> {
    conn.buffered
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a part of the open chunk stored from position `n` (`new`: it started a new op).
fn count_part(parts: &mut (u64, u32), n: u64, new: bool) {
    let chunk = n - n % history::CHUNK;
    if parts.0 != chunk {
        *parts = (chunk, 0);
    }
    parts.1 = parts.1.saturating_add(u32::from(new));
}

/// Queues one history write of a stream (`token`, its points op `run`, its open chunk's
/// `parts`) in `q`; returns its ticket (0 for a sealed chunk that keeps its parts).
pub(super) fn journal_history(
    q: &mut Queue<'_>,
    token: &Arc<str>,
    run: &mut Run,
    parts: &mut (u64, u32),
    w: Write<'_>,
) -> u64 {
    match w {
        Write::Points { n, count, bytes } => {
            let (ticket, new) = q.points(Part {
                token,
                run,
                n,
                count,
                bytes,
            });
            count_part(parts, n, new);
            ticket
        }
        // A chunk that arrived in few parts keeps them: its points are not written twice.
        Write::Put {
            level: 0,
            index,
            replaces: 1..,
            ..
        } if *parts == (index, parts.1) && parts.1 <= KEEP_PARTS => 0,
        Write::Put {
            level,
            index,
            value,
            replaces,
        } => q.push(Op::HistPut {
            token: token.clone(),
            level,
            index,
            value,
            replaces,
        }),
        Write::Trim { before } => q.push(Op::HistTrim {
            token: token.clone(),
            before,
        }),
    }
}
