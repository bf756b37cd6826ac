//! The journal: the store's ops gathered under its locks, group-committed by a thread of its
//! own at most `--sync-interval` apart, and the tickets writers wait on (docs/storage.md DC1).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ops::{Backend, Batch, Op, StorageError};
use crate::metrics::Metrics;

/// The durable store's progress, as waiters see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every op with a ticket up to this is durable.
    pub durable: u64,
    /// The last commit failed (a full disk, an I/O error): new lines are refused (DC5).
    pub failing: bool,
}

/// The journal: in memory (nothing is kept, every ticket is durable at once) or committing to
/// a backend.
#[derive(Debug)]
pub struct Journal {
    inner: Option<Committed>,
}

#[derive(Debug)]
struct Committed {
    pending: Mutex<Pending>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    interval: Duration,
    metrics: Arc<Metrics>,
    /// L55: pending bytes past which writers wait for the commit before reading more.
    max_backlog: usize,
    backlog: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    batch: Batch,
    /// Counts the batches the committer took: a [`Run`] of an older batch is gone.
    batch_id: u64,
    n_bytes: usize,
    next_ticket: u64,
    closing: bool,
    closed: bool,
}

/// Where a stream's history points op is in the pending batch (`Journal::push_points`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    batch: u64,
    op: usize,
}

/// History points to queue: `count` points from position `n` of `token`'s stream, their
/// encodings `bytes`; `run` is the stream's handle on its points op.
#[derive(Debug)]
pub struct Part<'a> {
    /// The stream.
    pub token: &'a Arc<str>,
    /// Where its points op of the pending batch is.
    pub run: &'a mut Run,
    /// The first point's position.
    pub n: u64,
    /// How many points.
    pub count: u32,
    /// Their encodings, back to back (owned when the caller could give them up).
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

/// The journal's pending batch, locked ([`Journal::queue`]): what is queued through it goes
/// into one commit. In memory it queues nothing and every ticket is 0.
#[derive(Debug)]
pub struct Queue<'j> {
    held: Option<(&'j Committed, std::sync::MutexGuard<'j, Pending>)>,
}

impl Queue<'_> {
    /// Queues `op`; returns its ticket.
    pub fn push(&mut self, op: Op) -> u64 {
        let Some((c, p)) = &mut self.held else {
            return 0;
        };
        let n = op.n_bytes();
        p.batch.ops.push(op);
        c.queued(p, n)
    }

    /// Queues line `seq` of generation `gen`, its record written by `encode` straight into
    /// the pending batch's buffer (no allocation per line); returns its ticket.
    pub fn line(&mut self, gen: u64, seq: u64, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let Some((c, p)) = &mut self.held else {
            return 0;
        };
        c.line(p, gen, seq, encode)
    }

    /// Queues `lines` (one stream's, in order) and empties them; returns the ticket of the
    /// stream's last line queued, by this call or an earlier one (0 in memory).
    pub fn lines(&mut self, lines: &mut Lines) -> u64 {
        if let (Some((c, p)), false) = (&mut self.held, lines.ends.is_empty()) {
            let base = p.batch.lines.len();
            p.batch.lines.extend_from_slice(&lines.bytes);
            let mut start = 0;
            for &(gen, seq, end) in &lines.ends {
                p.batch.ops.push(Op::Line {
                    gen,
                    seq,
                    at: base + start..base + end,
                });
                start = end;
            }
            let n = lines.ends.len();
            lines.ticket = c.queued_many(p, 64 * n + lines.bytes.len(), n as u64);
        }
        if lines.bytes.capacity() > Lines::KEEP_BYTES || lines.ends.capacity() > Lines::KEEP_LINES {
            // A bulk writer's read took more: an idle stream does not keep it, and the next
            // read's first line reserves as much at once.
            lines.last = (lines.bytes.len(), lines.ends.len());
            lines.bytes = Vec::new();
            lines.ends = Vec::new();
        } else {
            lines.bytes.clear();
            lines.ends.clear();
        }
        lines.ticket
    }

    /// Queues the history points `n..n + count` of `token`'s stream (their encodings): they
    /// extend the stream's points op of this batch (`run`, which the caller keeps) when they
    /// follow on in the same chunk, so a commit holds one per stream, not one per line.
    /// Returns the ticket and whether a new op (a new part) was started.
    pub fn points(&mut self, part: Part<'_>) -> (u64, bool) {
        let Some((c, p)) = &mut self.held else {
            return (0, false);
        };
        c.points(p, part)
    }
}

/// One stream's lines waiting to be queued together ([`Queue::lines`]): a writer's lines of
/// one socket read go into the pending batch in one hold of the journal's lock, not one hold
/// each (docs/storage.md "Lines"). Held under the stream's lock; whatever else is queued for
/// the stream queues them first, so its ops keep their order.
#[derive(Debug, Default)]
pub struct Lines {
    /// Their records, back to back.
    bytes: Vec<u8>,
    /// `(gen, seq, where its record ends in bytes)` of each.
    ends: Vec<(u64, u64, usize)>,
    /// The ticket of the stream's last line queued.
    ticket: u64,
    /// How much the last freed buffers held: `(bytes, lines)`.
    last: (usize, usize),
}

impl Lines {
    /// Lines past which the caller queues them at once ([`Lines::is_full`]).
    pub const MAX_LINES: usize = 256;
    /// Bytes past which the caller queues them at once.
    pub const MAX_BYTES: usize = 64 << 10;
    /// Buffer capacity a stream keeps between reads (more is freed once queued): a stream
    /// written one point at a time reuses its buffers, and one that went idle after bulk
    /// reads holds no more than this.
    const KEEP_BYTES: usize = 1 << 10;
    /// Lines' room a stream keeps between reads.
    const KEEP_LINES: usize = 32;

    /// Adds line `seq` of generation `gen`, its record written by `encode`.
    pub fn push(&mut self, gen: u64, seq: u64, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.ends.capacity() == 0 {
            self.bytes.reserve(self.last.0);
            self.ends.reserve(self.last.1);
        }
        encode(&mut self.bytes);
        self.ends.push((gen, seq, self.bytes.len()));
    }

    /// True when none wait.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// True when they reached [`Lines::MAX_LINES`] or [`Lines::MAX_BYTES`]: queue them now.
    pub fn is_full(&self) -> bool {
        self.ends.len() >= Self::MAX_LINES || self.bytes.len() >= Self::MAX_BYTES
    }
}

/// L55: bytes of changes waiting for the next commit past which a writer waits for it before
/// it reads its next lines (so a disk slower than ingest slows writers instead of growing
/// memory).
pub const MAX_BACKLOG: usize = 64 << 20;

impl Journal {
    /// Keeps nothing (`--in-memory`).
    pub fn memory() -> Arc<Journal> {
        Arc::new(Journal { inner: None })
    }

    /// True when changes are kept.
    pub fn is_durable(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts committing to `backend` every `interval` (a thread of its own: commits block on
    /// fsync). Returns the journal and the thread, which ends after [`Journal::close`].
    pub fn start(
        backend: Box<dyn Backend>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> (Arc<Journal>, std::thread::JoinHandle<()>) {
        let (progress, _) = watch::channel(Progress::default());
        let journal = Arc::new(Journal {
            inner: Some(Committed {
                pending: Mutex::new(Pending {
                    next_ticket: 1,
                    batch_id: 1,
                    ..Pending::default()
                }),
                wake: Condvar::new(),
                progress,
                interval,
                metrics,
                max_backlog: MAX_BACKLOG,
                backlog: AtomicU64::new(0),
            }),
        });
        let j = journal.clone();
        let thread = std::thread::Builder::new()
            .name("plotstream-commit".into())
            .spawn(move || commit_loop(&j, backend))
            .unwrap_or_else(|e| panic!("cannot start the commit thread: {e}"));
        (journal, thread)
    }

    /// The pending batch, held: every op queued through the one [`Queue`] goes into the same
    /// commit, none can be split from the others by a crash (a history seal: its last part, its
    /// tier blocks and its head; a trim and its head).
    pub fn queue(&self) -> Queue<'_> {
        Queue {
            held: self.inner.as_ref().map(|c| (c, c.lock())),
        }
    }

    /// Queues `op`; returns its ticket (0 in memory).
    pub fn push(&self, op: Op) -> u64 {
        self.queue().push(op)
    }

    /// Queues `ops` in one go: the committer takes all of them in the same transaction or
    /// none (a new generation's metadata, snapshot and the old one's drop must not be split by a
    /// crash). Returns the last one's ticket (0 in memory).
    pub fn push_all(&self, ops: impl IntoIterator<Item = Op>) -> u64 {
        let mut q = self.queue();
        ops.into_iter().fold(0, |_, op| q.push(op))
    }

    /// Queues history points ([`Queue::points`]).
    pub fn push_points(&self, part: Part<'_>) -> (u64, bool) {
        self.queue().points(part)
    }

    /// The last ticket handed out (waiting for it waits for everything pushed so far).
    pub fn last_ticket(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |c| c.lock().next_ticket.saturating_sub(1))
    }

    /// True while the last commit failed (DC5).
    pub fn is_failing(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|c| c.progress.borrow().failing)
    }

    /// True when the pending changes passed L55.
    pub fn is_backlogged(&self) -> bool {
        self.inner.as_ref().is_some_and(|c| {
            usize::try_from(c.backlog.load(Ordering::Relaxed)).unwrap_or(usize::MAX) > c.max_backlog
        })
    }

    /// Waits until `ticket` is durable. `Err` when a commit failed meanwhile (the op may still
    /// become durable on a retry, but it cannot be acknowledged now) or the journal closed.
    pub async fn wait(&self, ticket: u64) -> Result<(), StorageError> {
        let Some(c) = &self.inner else {
            return Ok(());
        };
        if ticket == 0 {
            return Ok(());
        }
        let mut rx = c.progress.subscribe();
        let p = rx
            .wait_for(|p| p.durable >= ticket || p.failing)
            .await
            .map_err(|_| StorageError("the store closed".into()))?;
        if p.durable >= ticket {
            Ok(())
        } else {
            Err(StorageError("the store cannot write (DC5)".into()))
        }
    }

    /// The current progress (for `/healthz` and `/metrics`).
    pub fn progress(&self) -> Progress {
        self.inner
            .as_ref()
            .map_or(Progress::default(), |c| *c.progress.borrow())
    }

    /// Commits everything pending, records a graceful shutdown and stops the committer.
    /// Returns once it has (or at once in memory).
    pub fn close(&self, thread: Option<std::thread::JoinHandle<()>>) {
        let Some(c) = &self.inner else {
            return;
        };
        {
            let mut p = c.lock();
            p.closing = true;
            c.wake.notify_one();
        }
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Committed {
    /// Counts `n` more pending bytes and hands out the next ticket.
    fn queued(&self, p: &mut Pending, n: usize) -> u64 {
        p.n_bytes += n;
        self.backlog.store(p.n_bytes as u64, Ordering::Relaxed);
        let ticket = p.next_ticket;
        p.next_ticket += 1;
        if p.batch.ops.len() == 1 {
            self.wake.notify_one();
        }
        ticket
    }

    /// [`Committed::queued`] for `k` ops queued at once (`n` bytes): returns the last one's
    /// ticket.
    fn queued_many(&self, p: &mut Pending, n: usize, k: u64) -> u64 {
        p.n_bytes += n;
        self.backlog.store(p.n_bytes as u64, Ordering::Relaxed);
        let ticket = p.next_ticket + k - 1;
        p.next_ticket += k;
        if p.batch.ops.len() as u64 == k {
            self.wake.notify_one();
        }
        ticket
    }

    fn line(&self, p: &mut Pending, gen: u64, seq: u64, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let start = p.batch.lines.len();
        encode(&mut p.batch.lines);
        let at = start..p.batch.lines.len();
        let n = 64 + at.len();
        p.batch.ops.push(Op::Line { gen, seq, at });
        self.queued(p, n)
    }

    fn points(&self, p: &mut Pending, part: Part<'_>) -> (u64, bool) {
        let Part {
            token,
            run,
            n,
            count,
            bytes,
        } = part;
        if run.batch == p.batch_id {
            if let Some(Op::HistPoints {
                n: first,
                count: so_far,
                bytes: points,
                ..
            }) = p.batch.ops.get_mut(run.op).filter(
                |op| matches!(op, Op::HistPoints { token: of, .. } if Arc::ptr_eq(of, token)),
            ) {
                let chunk = crate::history::CHUNK;
                if *first + u64::from(*so_far) == n && *first / chunk == n / chunk {
                    *so_far += count;
                    points.extend_from_slice(&bytes);
                    return (self.queued(p, bytes.len()), false);
                }
            }
        }
        *run = Run {
            batch: p.batch_id,
            op: p.batch.ops.len(),
        };
        let n_bytes = 64 + bytes.len();
        p.batch.ops.push(Op::HistPoints {
            token: token.clone(),
            n,
            count,
            bytes: bytes.into_owned(),
        });
        (self.queued(p, n_bytes), true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The committer: waits for ops, lets them gather for the rest of the interval, commits them
/// in one transaction, publishes the ticket. A failed batch is retried first, every interval.
fn commit_loop(journal: &Journal, mut backend: Box<dyn Backend>) {
    let Some(c) = &journal.inner else {
        return;
    };
    let mut retry = Batch::default();
    // The last committed batch, emptied: the next one fills its buffers (`Batch::recycle`).
    let mut spare = Batch::default();
    let mut last_commit = Instant::now();
    loop {
        let (mut batch, ticket, closing) = {
            let mut p = c.lock();
            while p.batch.is_empty() && retry.is_empty() && !p.closing {
                p = c
                    .wake
                    .wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            // Group commit: gather until one interval after the last commit.
            let due = last_commit + c.interval;
            while !p.closing {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                p = c
                    .wake
                    .wait_timeout(p, due - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            let ops = std::mem::replace(&mut p.batch, std::mem::take(&mut spare));
            p.batch_id += 1;
            p.n_bytes = 0;
            c.backlog.store(0, Ordering::Relaxed);
            (ops, p.next_ticket - 1, p.closing)
        };
        if !retry.is_empty() {
            retry.append(batch);
            batch = std::mem::take(&mut retry);
        }
        let started = Instant::now();
        let result = if batch.is_empty() {
            Ok(())
        } else {
            backend.commit(&batch)
        };
        last_commit = Instant::now();
        match result {
            Ok(()) => {
                c.metrics.store_commits.fetch_add(1, Ordering::Relaxed);
                c.metrics.store_commit_micros.fetch_add(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                let was_failing = c.progress.borrow().failing;
                if was_failing {
                    tracing::warn!("the store writes again; ingest resumes");
                }
                c.metrics.store_failing.store(0, Ordering::Relaxed);
                c.progress.send_replace(Progress {
                    durable: ticket,
                    failing: false,
                });
                batch.recycle();
                spare = batch;
            }
            Err(e) => {
                c.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                if !c.progress.borrow().failing {
                    tracing::error!(error = %e, "the store cannot write: new lines get 503 until it can (DC5)");
                }
                c.metrics.store_failing.store(1, Ordering::Relaxed);
                retry = batch;
                let durable = c.progress.borrow().durable;
                c.progress.send_replace(Progress {
                    durable,
                    failing: true,
                });
            }
        }
        if closing {
            let mut p = c.lock();
            if p.batch.is_empty() && retry.is_empty() {
                match backend.set_clean(true) {
                    Ok(()) => tracing::info!("store flushed; graceful shutdown recorded"),
                    Err(e) => tracing::error!(error = %e, "store: recording the shutdown failed"),
                }
                p.closed = true;
                drop(p);
                // Wake waiters: the sender goes away with the journal, not here.
                return;
            }
            if !retry.is_empty() && c.progress.borrow().failing {
                tracing::error!(
                    n_ops = retry.ops.len(),
                    "store: shutting down with changes that could not be written"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::durable::{Loaded, Table};

    /// Keeps every batch it commits (the keys of its `Put`s).
    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<String>>>>);

    impl Backend for Recorder {
        fn load(&mut self, _: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
            Ok(Loaded::default())
        }

        fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
            let keys = (batch.ops.iter())
                .filter_map(|op| match op {
                    Op::Put { key, .. } => Some(key.clone()),
                    _ => None,
                })
                .collect();
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(keys);
            Ok(())
        }
    }

    /// A committed line: `(gen, seq, record)`.
    type Line = (u64, u64, Vec<u8>);

    /// Keeps the lines it commits.
    #[derive(Debug, Clone, Default)]
    struct LineRecorder(Arc<Mutex<Vec<Line>>>);

    impl Backend for LineRecorder {
        fn load(&mut self, _: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
            Ok(Loaded::default())
        }

        fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
            let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
            for run in batch.line_runs(false) {
                for (seq, record) in (run.first..=run.last).zip(&run.records) {
                    lines.push((run.gen, seq, record.to_vec()));
                }
            }
            Ok(())
        }
    }

    /// A stream's waiting lines go into the batch in one hold, in order, with consecutive
    /// tickets; queuing none hands back the stream's last one.
    #[test]
    fn waiting_lines_are_queued_in_order_with_their_tickets() {
        let recorder = LineRecorder::default();
        let (journal, thread) = Journal::start(
            Box::new(recorder.clone()),
            Duration::from_millis(1),
            Arc::new(Metrics::default()),
        );
        assert_eq!(journal.push(put("first".into())), 1);
        let mut lines = Lines::default();
        for (seq, record) in [(1, "a"), (2, "bb"), (3, "ccc")] {
            lines.push(7, seq, |out| out.extend_from_slice(record.as_bytes()));
        }
        assert!(!lines.is_empty() && !lines.is_full());
        assert_eq!(journal.queue().lines(&mut lines), 4);
        assert!(lines.is_empty());
        assert_eq!(
            journal.queue().lines(&mut lines),
            4,
            "none queued: the last one's"
        );
        lines.push(7, 4, |out| out.extend_from_slice(b"dddd"));
        assert_eq!(journal.push(put("between".into())), 5);
        assert_eq!(journal.queue().lines(&mut lines), 6);
        journal.close(Some(thread));
        let got = recorder.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let want: Vec<Line> = [(1, "a"), (2, "bb"), (3, "ccc"), (4, "dddd")]
            .into_iter()
            .map(|(seq, r)| (7, seq, r.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
        for _ in 0..Lines::MAX_LINES {
            lines.push(1, 1, |out| out.extend_from_slice(&[0; 64]));
        }
        assert!(lines.is_full());
        // A stream that goes idle after a bulk read keeps no more than a small buffer.
        Journal::memory().queue().lines(&mut lines);
        assert!(lines.is_empty());
        assert!(lines.bytes.capacity() <= Lines::KEEP_BYTES);
        assert!(lines.ends.capacity() <= Lines::KEEP_LINES);
    }

    fn put(key: String) -> Op {
        Op::Put {
            table: Table::Server,
            key,
            value: None,
        }
    }

    /// What goes through one [`Queue`] is committed together, however the committer races the
    /// writer (a history seal and its head, a trim and its head: docs/history.md "Records");
    /// ops pushed one by one may be split.
    #[test]
    fn a_queues_ops_are_committed_together() {
        let recorder = Recorder::default();
        let (journal, thread) = Journal::start(
            Box::new(recorder.clone()),
            Duration::ZERO,
            Arc::new(Metrics::default()),
        );
        for i in 0..20_000 {
            let mut q = journal.queue();
            for part in ["a", "b", "c"] {
                q.push(put(format!("{i}{part}")));
            }
        }
        let last = journal.push(put("end".into()));
        journal.close(Some(thread));
        let batches = recorder.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = 0;
        for keys in batches.iter() {
            for (i, key) in keys.iter().enumerate() {
                if let Some(group) = key.strip_suffix('a') {
                    let rest = keys.get(i + 1..i + 3).unwrap_or_default();
                    assert_eq!(rest, [format!("{group}b"), format!("{group}c")], "split");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 20_000);
        assert!(batches.len() > 1, "the committer never raced the writer");
        assert_eq!(last, 60_001);
    }
}
