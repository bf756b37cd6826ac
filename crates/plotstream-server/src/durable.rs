//! What survives a restart (docs/storage.md): the journal that group-commits the store's
//! changes to a [`Backend`], and the backends (redb on disk, and a fault wrapper for the
//! simulator's `disk-full`).
//!
//! The store pushes [`Op`]s in apply order, under its lock, and gets a ticket back; a committer
//! thread commits everything pending at most `--sync-interval` apart in one transaction
//! (fsync'd), then publishes the highest ticket it made durable. A writer's final `200` waits
//! for its last line's ticket (docs/storage.md DC1); viewers never wait (fan-out happens before
//! the commit, DC3). When a commit fails the batch is kept and retried every interval, the
//! journal reports itself failing, and the store refuses new lines with 503 until a retry
//! succeeds (DC5).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::Metrics;

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
    fn n_bytes(&self) -> usize {
        64 + match self {
            Op::Meta { token, record } => token.len() + record.len(),
            Op::Line { at, .. } => at.len(),
            Op::Snapshot { record, .. } => record.len(),
            Op::DropGen { .. } => 0,
            Op::DropStream { token } => token.len(),
            Op::Put { key, value, .. } => key.len() + value.as_ref().map_or(0, Vec::len),
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

    /// The record of a line op (empty for other ops or a range outside the buffer).
    pub fn record(&self, op: &Op) -> &[u8] {
        match op {
            Op::Line { at, .. } => self.lines.get(at.clone()).unwrap_or_default(),
            _ => &[],
        }
    }

    /// Appends `other` after this batch's ops.
    fn append(&mut self, other: Batch) {
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

    fn is_empty(&self) -> bool {
        self.ops.is_empty()
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

/// Why the store could not do something.
#[derive(Debug)]
pub struct StorageError(pub String);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StorageError {}

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
    n_bytes: usize,
    next_ticket: u64,
    closing: bool,
    closed: bool,
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

    /// Queues `op`; returns its ticket (0 in memory).
    pub fn push(&self, op: Op) -> u64 {
        let Some(c) = &self.inner else {
            return 0;
        };
        let mut p = c.lock();
        let n = op.n_bytes();
        p.batch.ops.push(op);
        c.queued(&mut p, n)
    }

    /// Queues line `seq` of generation `gen`, its record written by `encode` straight into
    /// the pending batch's buffer (no allocation per line); returns its ticket (0 in memory).
    pub fn push_line(&self, gen: u64, seq: u64, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let Some(c) = &self.inner else {
            return 0;
        };
        let mut p = c.lock();
        let start = p.batch.lines.len();
        encode(&mut p.batch.lines);
        let at = start..p.batch.lines.len();
        let n = 64 + at.len();
        p.batch.ops.push(Op::Line { gen, seq, at });
        c.queued(&mut p, n)
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
            let ops = std::mem::take(&mut p.batch);
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

/// The on-disk store: one redb file, `plotstream.redb`, in the data directory.
#[derive(Debug)]
pub struct RedbBackend {
    /// `None` after a failed commit: redb refuses every operation after an I/O error until
    /// the file is opened again, so the next commit reopens it (and redb repairs it).
    db: Option<redb::Database>,
    path: PathBuf,
}

/// One generation's lines in a commit: `(gen, [(seq, record)])`.
type GenLines<'a> = (u64, Vec<(u64, &'a [u8])>);

const META: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("stream_meta");
const LINES: redb::TableDefinition<'_, (u64, u64), &[u8]> = redb::TableDefinition::new("lines");
const SNAPS: redb::TableDefinition<'_, u64, (u64, &[u8])> = redb::TableDefinition::new("snapshots");
const KV: redb::TableDefinition<'_, (u8, &str), &[u8]> = redb::TableDefinition::new("kv");

fn table_id(t: Table) -> u8 {
    match t {
        Table::Registered => 1,
        Table::Retired => 2,
        Table::Files => 3,
        Table::Folders => 4,
        Table::Server => 5,
    }
}

fn table_of(id: u8) -> Option<Table> {
    Some(match id {
        1 => Table::Registered,
        2 => Table::Retired,
        3 => Table::Files,
        4 => Table::Folders,
        5 => Table::Server,
        _ => return None,
    })
}

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError(format!("{}: {what}: {e}", path.display()))
}

impl RedbBackend {
    /// The database file inside `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join("plotstream.redb")
    }

    /// Opens (or creates) the store in `dir`. Refuses, naming the file, when it is damaged
    /// beyond what redb repairs or another process has it open.
    pub fn open(dir: &Path) -> Result<RedbBackend, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(dir, "cannot create the data directory", e))?;
        let path = Self::file_in(dir);
        let db = Self::open_file(&path)?;
        Ok(RedbBackend { db: Some(db), path })
    }

    fn open_file(path: &Path) -> Result<redb::Database, StorageError> {
        let db = redb::Database::builder()
            .set_repair_callback(|s| {
                tracing::warn!(
                    progress = s.progress(),
                    "store: repairing after an unclean stop"
                );
            })
            .create(path)
            .map_err(|e| err(path, "cannot open the store", e))?;
        let w = db.begin_write().map_err(|e| err(path, "begin", e))?;
        {
            w.open_table(META)
                .map_err(|e| err(path, "stream_meta", e))?;
            w.open_table(LINES).map_err(|e| err(path, "lines", e))?;
            w.open_table(SNAPS).map_err(|e| err(path, "snapshots", e))?;
            w.open_table(KV).map_err(|e| err(path, "kv", e))?;
        }
        w.commit().map_err(|e| err(path, "commit", e))?;
        Ok(db)
    }

    /// Rewrites the file without its free pages (redb's `compact`): the file shrinks to about
    /// what it holds. Returns whether it did anything.
    pub fn compact(&mut self) -> Result<bool, StorageError> {
        let p = self.path.clone();
        self.db()?;
        let db = self
            .db
            .as_mut()
            .ok_or_else(|| StorageError("the store is closed".into()))?;
        db.compact().map_err(|e| err(&p, "compact", e))
    }

    fn db(&mut self) -> Result<&redb::Database, StorageError> {
        if self.db.is_none() {
            self.db = Some(Self::open_file(&self.path)?);
            tracing::info!(path = %self.path.display(), "store reopened after a failed commit");
        }
        self.db
            .as_ref()
            .ok_or_else(|| StorageError("the store is closed".into()))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let result = self.try_write(batch);
        if result.is_err() {
            // Dropped now, reopened by the next attempt.
            self.db = None;
        }
        result
    }

    fn try_write(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let p = &self.path.clone();
        let w = self.db()?.begin_write().map_err(|e| err(p, "begin", e))?;
        {
            let mut meta = w.open_table(META).map_err(|e| err(p, "stream_meta", e))?;
            let mut lines = w.open_table(LINES).map_err(|e| err(p, "lines", e))?;
            let mut snaps = w.open_table(SNAPS).map_err(|e| err(p, "snapshots", e))?;
            let mut kv = w.open_table(KV).map_err(|e| err(p, "kv", e))?;
            // A stream's lines of one commit go into one record keyed by its last seq (a
            // B-tree insert per stream and commit, not per line: docs/storage.md "Records").
            let mut batches: Vec<GenLines<'_>> = Vec::new();
            let batch_of = |batches: &mut Vec<GenLines<'_>>, gen: u64| match batches
                .iter()
                .position(|(g, _)| *g == gen)
            {
                Some(i) => i,
                None => {
                    batches.push((gen, Vec::new()));
                    batches.len() - 1
                }
            };
            for op in &batch.ops {
                match op {
                    Op::Meta { token, record } => {
                        meta.insert(token.as_str(), record.as_slice())
                            .map_err(|e| err(p, "write", e))?;
                    }
                    Op::Line { gen, seq, .. } => {
                        let i = batch_of(&mut batches, *gen);
                        batches[i].1.push((*seq, batch.record(op)));
                    }
                    Op::Snapshot { gen, seq, record } => {
                        snaps
                            .insert(*gen, (*seq, record.as_slice()))
                            .map_err(|e| err(p, "write", e))?;
                        lines
                            .retain_in((*gen, 0)..=(*gen, *seq), |_, _| false)
                            .map_err(|e| err(p, "write", e))?;
                        let i = batch_of(&mut batches, *gen);
                        batches[i].1.retain(|(s, _)| s > seq);
                    }
                    Op::DropGen { gen } => {
                        snaps.remove(*gen).map_err(|e| err(p, "write", e))?;
                        lines
                            .retain_in((*gen, 0)..=(*gen, u64::MAX), |_, _| false)
                            .map_err(|e| err(p, "write", e))?;
                        batches.retain(|(g, _)| g != gen);
                    }
                    Op::DropStream { token } => {
                        meta.remove(token.as_str())
                            .map_err(|e| err(p, "write", e))?;
                    }
                    Op::Put { table, key, value } => {
                        let k = (table_id(*table), key.as_str());
                        match value {
                            Some(v) => {
                                kv.insert(k, v.as_slice()).map_err(|e| err(p, "write", e))?;
                            }
                            None => {
                                kv.remove(k).map_err(|e| err(p, "write", e))?;
                            }
                        }
                    }
                }
            }
            let mut record = Vec::new();
            for (gen, lines_of_gen) in &batches {
                // Runs of consecutive seqs (a gap cannot happen within one generation; split
                // rather than trust it).
                for run in lines_of_gen.chunk_by(|a, b| b.0 == a.0 + 1) {
                    let (Some(first), Some(last)) = (run.first(), run.last()) else {
                        continue;
                    };
                    record.clear();
                    crate::records::encode_batch(first.0, run.iter().map(|(_, r)| *r), &mut record);
                    lines
                        .insert((*gen, last.0), record.as_slice())
                        .map_err(|e| err(p, "write", e))?;
                }
            }
        }
        w.commit().map_err(|e| err(p, "commit", e))
    }
}

impl Backend for RedbBackend {
    fn load(&mut self, gen_of: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
        use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _};
        let p = &self.path.clone();
        let r = self.db()?.begin_read().map_err(|e| err(p, "begin", e))?;
        let meta = r.open_table(META).map_err(|e| err(p, "stream_meta", e))?;
        let lines = r.open_table(LINES).map_err(|e| err(p, "lines", e))?;
        let snaps = r.open_table(SNAPS).map_err(|e| err(p, "snapshots", e))?;
        let kv = r.open_table(KV).map_err(|e| err(p, "kv", e))?;
        let mut out = Loaded::default();
        for row in kv.iter().map_err(|e| err(p, "read", e))? {
            let (k, v) = row.map_err(|e| err(p, "read", e))?;
            let (id, key) = k.value();
            match table_of(id) {
                Some(Table::Server) if key == "clean" => {
                    out.clean = v.value() == b"1";
                }
                Some(t) => out.entries.push((t, key.to_owned(), v.value().to_vec())),
                None => tracing::warn!(id, key, "store: an entry of an unknown table is ignored"),
            }
        }
        out.fresh = kv.is_empty().unwrap_or(false) && meta.is_empty().unwrap_or(false);
        if out.fresh {
            out.clean = true;
        }
        for row in meta.iter().map_err(|e| err(p, "read", e))? {
            let (k, v) = row.map_err(|e| err(p, "read", e))?;
            let record = v.value().to_vec();
            let mut s = LoadedStream {
                token: k.value().to_owned(),
                ..LoadedStream::default()
            };
            if let Some(gen) = gen_of(&record) {
                let mut after = 0;
                if let Some(snap) = snaps.get(gen).map_err(|e| err(p, "read", e))? {
                    let (seq, rec) = snap.value();
                    after = seq;
                    s.snapshot = Some((seq, rec.to_vec()));
                }
                for batch in lines
                    .range((gen, after.saturating_add(1))..=(gen, u64::MAX))
                    .map_err(|e| err(p, "read", e))?
                {
                    let (k, v) = batch.map_err(|e| err(p, "read", e))?;
                    let last = k.value().1;
                    match crate::records::decode_batch(last, v.value()) {
                        Some(batch) => s.lines.extend(
                            batch
                                .into_iter()
                                .filter(|(seq, _)| *seq > after)
                                .map(|(seq, r)| (seq, r.to_vec())),
                        ),
                        // An undecodable batch: the stream's prefix ends here (DC6).
                        None => {
                            s.lines.push((last, Vec::new()));
                            break;
                        }
                    }
                }
            }
            s.meta = record;
            out.streams.push(s);
        }
        Ok(out)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        self.write(batch)
    }
}

/// The simulator's `disk-full:after=N[,for=MS]`: commits succeed until `after` lines were
/// written, then fail like a full disk for `for` (default 2 000 ms), then succeed again. The
/// failing commits write nothing, as a real full disk's would not.
#[derive(Debug)]
pub struct DiskFull<B> {
    inner: B,
    after: u64,
    duration: Duration,
    written: u64,
    full_since: Option<Instant>,
    recovered: bool,
}

impl<B: Backend> DiskFull<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, after: u64, duration: Duration) -> DiskFull<B> {
        DiskFull {
            inner,
            after,
            duration,
            written: 0,
            full_since: None,
            recovered: false,
        }
    }
}

impl<B: Backend> Backend for DiskFull<B> {
    fn load(&mut self, gen_of: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
        self.inner.load(gen_of)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let lines = batch
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Line { .. }))
            .count() as u64;
        if !self.recovered && self.written + lines > self.after {
            let since = *self.full_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.duration {
                return Err(StorageError(
                    "No space left on device (os error 28) [fault disk-full]".into(),
                ));
            }
            self.recovered = true;
        }
        self.inner.commit(batch)?;
        self.written += lines;
        Ok(())
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
