//! What the backends and the journal share: the ops in the store's order, a commit's batch and
//! its line records, the tables, what a load returns, and the [`Backend`] trait.

pub use crate::error::StorageError;

/// One change to make durable, in the order the store made it.
#[derive(Debug, Clone)]
pub enum Op {
    /// A stream's metadata (created, restarted, reshaped, counters changed), by token.
    Meta {
        /// The write token.
        token: String,
        /// The metadata record (JSON, `records::StreamMeta`).
        record: Vec<u8>,
    },
    /// One accepted line of generation `gen` (a stream's epoch on disk).
    Line {
        /// The stream's generation.
        gen: u64,
        /// The line's seq.
        seq: u64,
        /// Where its update record (`records::encode_update`) is in the batch's `lines`:
        /// records share one buffer instead of an allocation each.
        at: std::ops::Range<usize>,
    },
    /// The whole window of generation `gen` as of `seq`: the lines up to `seq` are dropped in
    /// the same transaction (compaction).
    Snapshot {
        /// The stream's generation.
        gen: u64,
        /// The seq it was taken at.
        seq: u64,
        /// The snapshot record (`records::encode_snapshot`).
        record: Vec<u8>,
    },
    /// Generation `gen` is over: its lines and snapshot are dropped.
    DropGen {
        /// The generation.
        gen: u64,
    },
    /// The stream of `token` is gone (L27 eviction).
    DropStream {
        /// The write token.
        token: String,
    },
    /// The points `n..n + count` of a stream's history (docs/history.md "Records"): a backend
    /// stores a commit's consecutive points of one stream and chunk as one part.
    HistPoints {
        /// The write token.
        token: std::sync::Arc<str>,
        /// The first point's position.
        n: u64,
        /// How many.
        count: u32,
        /// Their encodings, back to back (the journal extends it while points follow on).
        bytes: Vec<u8>,
    },
    /// A history record (a sealed chunk, a tier block, the head), replacing the level-0 keys
    /// `index..index + replaces` first.
    HistPut {
        /// The write token.
        token: std::sync::Arc<str>,
        /// Its level.
        level: u8,
        /// Its index.
        index: u64,
        /// The record.
        value: Vec<u8>,
        /// Level-0 keys it replaces (a chunk's parts), else 0.
        replaces: u64,
    },
    /// A stream's history before position `before` is dropped (retention): its chunks and the
    /// tier blocks that end by then.
    HistTrim {
        /// The write token.
        token: std::sync::Arc<str>,
        /// The first position kept.
        before: u64,
    },
    /// A stream's whole history is dropped (the stream is).
    HistDrop {
        /// The write token.
        token: String,
    },
    /// A key of the small tables (registered and retired tokens, files, folders): `None`
    /// removes it.
    Put {
        /// Which table.
        table: Table,
        /// The key.
        key: String,
        /// The value, or `None` to remove.
        value: Option<Vec<u8>>,
    },
}

impl Op {
    pub(super) fn n_bytes(&self) -> usize {
        64 + match self {
            Op::Meta { token, record } => token.len() + record.len(),
            Op::Line { at, .. } => at.len(),
            Op::Snapshot { record, .. } => record.len(),
            Op::DropGen { .. } => 0,
            Op::DropStream { token } => token.len(),
            Op::Put { key, value, .. } => key.len() + value.as_ref().map_or(0, Vec::len),
            Op::HistPoints { bytes, .. } => bytes.len(),
            Op::HistPut { value, .. } => value.len(),
            Op::HistTrim { .. } => 0,
            Op::HistDrop { token } => token.len(),
        }
    }
}

/// What one commit writes: the ops in the order the store made them, and the update records
/// of their lines in one buffer.
#[derive(Debug, Default)]
pub struct Batch {
    /// The ops.
    pub ops: Vec<Op>,
    /// The line records, which `Op::Line::at` points into.
    pub lines: Vec<u8>,
}

impl Batch {
    /// A batch of `ops` without lines.
    pub fn of(ops: Vec<Op>) -> Batch {
        Batch {
            ops,
            lines: Vec::new(),
        }
    }

    /// The record of a line op, or the points of a history op (empty for other ops or a
    /// range outside the buffer).
    pub fn record<'a>(&'a self, op: &'a Op) -> &'a [u8] {
        match op {
            Op::Line { at, .. } => self.lines.get(at.clone()).unwrap_or_default(),
            Op::HistPoints { bytes, .. } => bytes,
            _ => &[],
        }
    }

    /// Appends `other` after this batch's ops.
    pub(super) fn append(&mut self, other: Batch) {
        let shift = self.lines.len();
        self.lines.extend_from_slice(&other.lines);
        self.ops.extend(other.ops.into_iter().map(|op| match op {
            Op::Line { gen, seq, at } => Op::Line {
                gen,
                seq,
                at: at.start + shift..at.end + shift,
            },

            op => op,
        }));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Empties a committed batch for the next one, keeping its buffers: a busy server's
    /// batches are megabytes, and growing a fresh one from nothing at every commit (then
    /// freeing it) cost the kernel's fresh pages and the allocator's moves each time. What the
    /// last batch did not use of them is given back, so a burst's size is not kept for ever.
    pub(super) fn recycle(&mut self) {
        let used = (self.ops.len(), self.lines.len());
        self.ops.clear();
        self.lines.clear();
        self.ops.shrink_to(used.0);
        self.lines.shrink_to(used.1);
    }
}

/// The small keyed tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Tokens registered by `POST /api/tokens` (value empty).
    Registered,
    /// Tokens a replaced figure no longer names (value empty).
    Retired,
    /// REST files, by `user\u{0}n` (value: the file record).
    Files,
    /// REST folders, by `user\u{0}path` (value empty).
    Folders,
    /// Server facts (`clean`: `1` after a graceful shutdown).
    Server,
}

impl Table {
    /// Its number in the stores' keys.
    pub fn id(self) -> u8 {
        match self {
            Table::Registered => 1,
            Table::Retired => 2,
            Table::Files => 3,
            Table::Folders => 4,
            Table::Server => 5,
        }
    }

    /// The table numbered `id`.
    pub fn from_id(id: u8) -> Option<Table> {
        Some(match id {
            1 => Table::Registered,
            2 => Table::Retired,
            3 => Table::Files,
            4 => Table::Folders,
            5 => Table::Server,
            _ => return None,
        })
    }
}

/// One stream's consecutive lines of a commit, which a backend stores as one record keyed by
/// `(gen, last)` (a write per stream and commit, not per line: docs/storage.md "Records").
#[derive(Debug)]
pub struct LineRun<'a> {
    /// The generation.
    pub gen: u64,
    /// The first line's seq.
    pub first: u64,
    /// The last line's seq.
    pub last: u64,
    /// The update records, in seq order.
    pub records: Vec<&'a [u8]>,
}

impl LineRun<'_> {
    /// The stored record (`records::encode_batch`), into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        crate::records::encode_batch(self.first, self.records.iter().copied(), out);
    }
}

/// One generation's lines in a commit: `(gen, [(seq, record)])`.
type GenLines<'a> = (u64, Vec<(u64, &'a [u8])>);

impl Batch {
    /// The lines this commit stores, as every backend stores them: per generation, runs of
    /// consecutive seqs (a gap cannot happen within one generation; split rather than trust
    /// it), without the lines that a dropped generation later in the same batch makes
    /// unnecessary, nor (`skip_snapshotted`) those a snapshot later in the batch covers. Redis
    /// keeps the latter: other nodes follow a stream by its lines.
    pub fn line_runs(&self, skip_snapshotted: bool) -> Vec<LineRun<'_>> {
        let mut by_gen: Vec<GenLines<'_>> = Vec::new();
        // A stream's lines come queued together (a writer's read): the generation of the line
        // before is looked at first, not every generation of the batch.
        let mut last: Option<usize> = None;
        for op in &self.ops {
            match op {
                Op::Line { gen, seq, .. } => {
                    let known = last
                        .filter(|&i| by_gen.get(i).is_some_and(|(g, _)| g == gen))
                        .or_else(|| by_gen.iter().position(|(g, _)| g == gen));
                    let i = known.unwrap_or_else(|| {
                        by_gen.push((*gen, Vec::new()));
                        by_gen.len() - 1
                    });
                    last = Some(i);
                    by_gen[i].1.push((*seq, self.record(op)));
                }
                Op::Snapshot { gen, seq, .. } if skip_snapshotted => {
                    if let Some((_, lines)) = by_gen.iter_mut().find(|(g, _)| g == gen) {
                        lines.retain(|(s, _)| s > seq);
                    }
                }
                Op::DropGen { gen } => {
                    by_gen.retain(|(g, _)| g != gen);
                    last = None;
                }
                _ => {}
            }
        }
        let mut runs = Vec::new();
        for (gen, lines) in &by_gen {
            for run in lines.chunk_by(|a, b| b.0 == a.0 + 1) {
                if let (Some(first), Some(last)) = (run.first(), run.last()) {
                    runs.push(LineRun {
                        gen: *gen,
                        first: first.0,
                        last: last.0,
                        records: run.iter().map(|(_, r)| *r).collect(),
                    });
                }
            }
        }
        runs
    }
}

/// One write to the history's keys `(token, level, index)`, as every backend makes it.
#[derive(Debug, PartialEq)]
pub enum HistKv<'a> {
    /// Puts a record.
    Put {
        /// The write token.
        token: &'a str,
        /// The level.
        level: u8,
        /// The index.
        index: u64,
        /// The record.
        value: HistValue<'a>,
    },
    /// Removes the keys of `level` in `from..to`.
    Delete {
        /// The write token.
        token: &'a str,
        /// The level.
        level: u8,
        /// The first index removed.
        from: u64,
        /// One past the last.
        to: u64,
    },
}

/// A history record as [`Batch::hist_writes`] hands it to a backend: a points run's `varint
/// count` (none for other records), then `body`. The count is kept apart so that a run's
/// points, tens of KiB, are copied once, into the store, and not first into a buffer of their
/// own behind it.
#[derive(Debug, PartialEq)]
pub struct HistValue<'a> {
    /// The count's varint (empty: none).
    count: Vec<u8>,
    body: std::borrow::Cow<'a, [u8]>,
}

impl<'a> HistValue<'a> {
    /// The record `body`, as it is.
    pub fn record(body: std::borrow::Cow<'a, [u8]>) -> HistValue<'a> {
        HistValue {
            count: Vec::new(),
            body,
        }
    }

    /// A points record: `count`'s varint, then the points `body`.
    pub fn points(count: u64, body: std::borrow::Cow<'a, [u8]>) -> HistValue<'a> {
        let mut varint = Vec::with_capacity(10);
        crate::history::point::put_varint(count, &mut varint);
        HistValue {
            count: varint,
            body,
        }
    }

    /// The record's length.
    pub fn len(&self) -> usize {
        self.count.len() + self.body.len()
    }

    /// True for an empty record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the record into `out`, which is exactly [`HistValue::len`] long.
    pub fn write_into(&self, out: &mut [u8]) {
        let (count, body) = out.split_at_mut(self.count.len());
        count.copy_from_slice(&self.count);
        body.copy_from_slice(&self.body);
    }

    /// Appends the record to `out`.
    pub fn extend_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count);
        out.extend_from_slice(&self.body);
    }

    /// The record in one piece (borrowed when it has no count).
    pub fn to_cow(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.count.is_empty() {
            std::borrow::Cow::Borrowed(&self.body)
        } else {
            let mut v = Vec::with_capacity(self.len());
            self.extend_into(&mut v);
            std::borrow::Cow::Owned(v)
        }
    }
}

impl Batch {
    /// Adds what a history builder says to store, as one op (tests, fuzzing: the store goes
    /// through the journal, which extends a stream's points op instead).
    pub fn push_history(&mut self, token: &std::sync::Arc<str>, w: crate::history::Write<'_>) {
        use crate::history::Write;
        self.ops.push(match w {
            Write::Points { n, count, bytes } => Op::HistPoints {
                token: token.clone(),
                n,
                count,
                bytes: bytes.into_owned(),
            },
            Write::Put {
                level,
                index,
                value,
                replaces,
            } => Op::HistPut {
                token: token.clone(),
                level,
                index,
                value,
                replaces,
            },
            Write::Trim { before } => Op::HistTrim {
                token: token.clone(),
                before,
            },
        });
    }
}

/// A run of one stream's points in one commit: `(first, count, encodings)`, borrowed from its
/// op while it is one op's.
type PointRun<'a> = (u64, u64, std::borrow::Cow<'a, [u8]>);

impl Batch {
    /// The history writes of this commit, in order: each stream's consecutive points within
    /// one chunk become one part (`varint count`, then the points), written before any other
    /// history op of that stream.
    pub fn hist_writes(&self) -> Vec<HistKv<'_>> {
        use crate::history::{tier::span, tier::TOP, CHUNK, HEAD};
        use std::borrow::Cow;
        fn flush<'a>(token: &'a str, run: PointRun<'a>, out: &mut Vec<HistKv<'a>>) {
            let (n, count, bytes) = run;
            out.push(HistKv::Put {
                token,
                level: 0,
                index: n,
                value: HistValue::points(count, bytes),
            });
        }
        let mut out = Vec::new();
        let mut runs: std::collections::HashMap<&str, PointRun<'_>> =
            std::collections::HashMap::new();
        for op in &self.ops {
            match op {
                Op::HistPoints {
                    token, n, count, ..
                } => {
                    let bytes = self.record(op);
                    let count = u64::from(*count);
                    match runs.get_mut(&**token) {
                        Some(run) if run.0 + run.1 == *n && run.0 / CHUNK == *n / CHUNK => {
                            run.1 += count;
                            run.2.to_mut().extend_from_slice(bytes);
                        }
                        Some(run) => {
                            let old = std::mem::replace(run, (*n, count, Cow::Borrowed(bytes)));
                            flush(token, old, &mut out);
                        }
                        None => {
                            runs.insert(token, (*n, count, Cow::Borrowed(bytes)));
                        }
                    }
                }
                Op::HistPut {
                    token,
                    level,
                    index,
                    value,
                    replaces,
                } => {
                    if let Some(run) = runs.remove(&**token) {
                        flush(token, run, &mut out);
                    }
                    if *replaces > 0 {
                        out.push(HistKv::Delete {
                            token,
                            level: 0,
                            from: *index,
                            to: index.saturating_add(*replaces),
                        });
                    }
                    out.push(HistKv::Put {
                        token,
                        level: *level,
                        index: *index,
                        value: HistValue::record(Cow::Borrowed(value)),
                    });
                }
                Op::HistTrim { token, before } => {
                    if let Some(run) = runs.remove(&**token) {
                        flush(token, run, &mut out);
                    }
                    out.push(HistKv::Delete {
                        token,
                        level: 0,
                        from: 0,
                        to: *before,
                    });
                    for level in 1..=TOP {
                        out.push(HistKv::Delete {
                            token,
                            level,
                            from: 0,
                            to: before / span(level + 1),
                        });
                    }
                }
                Op::HistDrop { token } => {
                    runs.remove(&**token);
                    for level in (0..=TOP).chain([HEAD]) {
                        out.push(HistKv::Delete {
                            token,
                            level,
                            from: 0,
                            to: u64::MAX,
                        });
                    }
                }
                _ => {}
            }
        }
        for (token, run) in runs {
            flush(token, run, &mut out);
        }
        out
    }
}

/// What a backend holds, as read at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every stream: token, metadata, snapshot and later lines.
    pub streams: Vec<LoadedStream>,
    /// The small tables, `(table, key, value)`.
    pub entries: Vec<(Table, String, Vec<u8>)>,
    /// False when the last run did not record a graceful shutdown (a crash or power loss).
    pub clean: bool,
    /// True for a data directory used for the first time.
    pub fresh: bool,
}

/// One stream as stored.
#[derive(Debug, Default)]
pub struct LoadedStream {
    /// The write token.
    pub token: String,
    /// The metadata record.
    pub meta: Vec<u8>,
    /// The last snapshot `(seq, record)` of the stream's generation, if any.
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// The lines after it `(seq, record)`, in seq order.
    pub lines: Vec<(u64, Vec<u8>)>,
}

impl LoadedStream {
    /// Adds the lines of one stored record (keyed by its last seq `last`) that come after the
    /// snapshot at `after`. False when the record does not decode: the stream's valid prefix
    /// ends there (DC6), which an empty record at `last` tells recovery.
    pub fn push_stored(&mut self, last: u64, bytes: &[u8], after: u64) -> bool {
        match crate::records::decode_batch(last, bytes) {
            Some(batch) => {
                // A commit retried after its reply was lost may store a record that repeats
                // lines of the one before it: only what comes after the lines so far counts.
                let after = self.lines.last().map_or(after, |(seq, _)| after.max(*seq));
                self.lines.extend(
                    batch
                        .into_iter()
                        .filter(|(seq, _)| *seq > after)
                        .map(|(seq, r)| (seq, r.to_vec())),
                );
                true
            }
            None => {
                self.lines.push((last, Vec::new()));
                false
            }
        }
    }
}

/// Where the store's state is kept: the seam a Redis backend implements next.
pub trait Backend: Send + std::fmt::Debug + 'static {
    /// Reads everything, for start-up. `gen_of` maps a stream's metadata record to its
    /// generation (the backend keeps lines by generation).
    fn load(&mut self, gen_of: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError>;
    /// Applies `ops` atomically and durably: when it returns `Ok`, all of them survive a crash
    /// or power loss; when it returns `Err`, none of them is applied.
    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError>;
    /// Records whether the server stopped gracefully (durably).
    fn set_clean(&mut self, clean: bool) -> Result<(), StorageError> {
        self.commit(&Batch::of(vec![Op::Put {
            table: Table::Server,
            key: "clean".into(),
            value: Some(if clean { b"1".to_vec() } else { b"0".to_vec() }),
        }]))
    }
}

impl Backend for Box<dyn Backend> {
    fn load(&mut self, gen_of: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
        (**self).load(gen_of)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        (**self).commit(batch)
    }

    fn set_clean(&mut self, clean: bool) -> Result<(), StorageError> {
        (**self).set_clean(clean)
    }
}

#[cfg(test)]
mod tests {
    use super::{Batch, HistValue, LoadedStream, Op};

    /// A points record handed over in two pieces is the count's varint, then the points: the
    /// same bytes whichever way a backend takes them.
    #[test]
    fn a_points_value_is_its_count_then_its_points() {
        for count in [0, 1, 127, 128, 1024, 16_383, 16_384, u64::MAX] {
            let body = vec![7u8; 5];
            let v = HistValue::points(count, std::borrow::Cow::Borrowed(&body));
            let mut want = Vec::new();
            crate::history::point::put_varint(count, &mut want);
            want.extend_from_slice(&body);
            assert_eq!(v.len(), want.len(), "{count}");
            assert_eq!(*v.to_cow(), *want, "{count}");
            let mut out = vec![0; v.len()];
            v.write_into(&mut out);
            assert_eq!(out, want, "{count}");
            let mut ext = vec![1];
            v.extend_into(&mut ext);
            assert_eq!(ext[1..], want[..], "{count}");
        }
        let r = HistValue::record(std::borrow::Cow::Borrowed(b"{}"));
        assert!(matches!(r.to_cow(), std::borrow::Cow::Borrowed(b"{}")));
        assert_eq!(r.len(), 2);
    }

    /// Lines are grouped by generation in runs of consecutive seqs, whatever the order the
    /// generations interleave in; a snapshot drops what it covers (when asked), a dropped
    /// generation all of its lines, and a generation seen again after a drop starts afresh.
    #[test]
    fn line_runs_group_by_generation_and_split_at_gaps() {
        let mut batch = Batch::default();
        let line = |batch: &mut Batch, gen: u64, seq: u64| {
            let at = batch.lines.len();
            batch.lines.push(u8::try_from(gen * 16 + seq).unwrap_or(0));
            batch.ops.push(Op::Line {
                gen,
                seq,
                at: at..at + 1,
            });
        };
        line(&mut batch, 1, 1);
        line(&mut batch, 1, 2);
        line(&mut batch, 2, 1);
        line(&mut batch, 1, 3);
        batch.ops.push(Op::Snapshot {
            gen: 1,
            seq: 2,
            record: Vec::new(),
        });
        line(&mut batch, 2, 2);
        batch.ops.push(Op::DropGen { gen: 2 });
        line(&mut batch, 3, 5);
        line(&mut batch, 2, 7);
        line(&mut batch, 3, 6);
        line(&mut batch, 3, 8);
        let runs = |skip| -> Vec<(u64, u64, u64, Vec<u8>)> {
            batch
                .line_runs(skip)
                .iter()
                .map(|r| (r.gen, r.first, r.last, r.records.concat()))
                .collect()
        };
        assert_eq!(
            runs(false),
            [
                (1, 1, 3, vec![17, 18, 19]),
                (3, 5, 6, vec![53, 54]),
                (3, 8, 8, vec![56]),
                (2, 7, 7, vec![39]),
            ]
        );
        assert_eq!(runs(true)[0], (1, 3, 3, vec![19]));
    }

    /// A committed batch is emptied for the next one with its buffers kept, down to what it
    /// used: a burst's size is not kept for ever.
    #[test]
    fn a_recycled_batch_keeps_the_room_it_used() {
        let line = |seq| Op::Line {
            gen: 1,
            seq,
            at: 0..0,
        };
        let mut batch = Batch {
            ops: Vec::with_capacity(4096),
            lines: Vec::with_capacity(1 << 20),
        };
        batch.lines.extend_from_slice(&[7; 1000]);
        batch.ops.extend((1..=10).map(line));
        batch.recycle();
        assert!(batch.is_empty() && batch.lines.is_empty());
        assert!(
            (10..4096).contains(&batch.ops.capacity()),
            "{}",
            batch.ops.capacity()
        );
        assert!((1000..1 << 20).contains(&batch.lines.capacity()));
        // The next batch's room: what this one used, without growing from nothing.
        let (ops_room, lines_room) = (batch.ops.capacity(), batch.lines.capacity());
        batch.lines.extend_from_slice(&[7; 1000]);
        batch.ops.extend((1..=10).map(line));
        assert_eq!(
            (batch.ops.capacity(), batch.lines.capacity()),
            (ops_room, lines_room)
        );
    }

    fn record(first: u64, n: usize) -> Vec<u8> {
        let lines: Vec<Vec<u8>> = (0..n).map(|i| vec![u8::try_from(i).unwrap_or(0)]).collect();
        let mut out = Vec::new();
        crate::records::encode_batch(first, lines.iter().map(Vec::as_slice), &mut out);
        out
    }

    /// A commit retried after its reply was lost may store a record that repeats the lines of
    /// the one before it: a load keeps each seq once, in order.
    #[test]
    fn a_record_repeating_earlier_lines_adds_only_the_new_ones() {
        let mut s = LoadedStream::default();
        assert!(s.push_stored(10, &record(1, 10), 0));
        assert!(s.push_stored(15, &record(1, 15), 0));
        let seqs: Vec<u64> = s.lines.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    }
}
