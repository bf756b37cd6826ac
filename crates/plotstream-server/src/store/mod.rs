//! Streams, windows, writer bindings and viewer fan-out (docs/reliability.md §4.1 terms,
//! docs/reliability.md P7, §4 invariants I1–I5).
//!
//! Each stream has its own lock, so lines of different streams apply in parallel; an index
//! (read-mostly) finds them. Every operation that must be atomic with another for one stream
//! (apply vs. takeover, subscribe vs. apply) happens under that stream's lock, and none waits
//! on I/O: a line is sized, encoded for the journal and for viewers before the lock
//! (`Prepared`), and fan-out uses `try_send` into bounded per-viewer queues, so a slow viewer
//! can never stall ingest (M28). [`Store`] gives the lock order.
//!
//! Files, lowest first (each imports only those above it): `config` (the policy), `writer`
//! (a writer connection), `queue` (what fan-out and a viewer's session share), `report` (what
//! the store reports), `stream` (one stream's state changes and the line made ready before
//! the lock), this file (the store: index, locks, bindings, creation, eviction), and the store's
//! operations by concern: `viewers` (subscribing), `inspect` (reading for the routes),
//! `persist` (the journal and recovery).

mod cluster;
mod config;
mod history;
mod inspect;
mod live;
mod persist;
mod queue;
mod report;
mod stream;
mod sweep;
mod viewers;
mod writer;

pub use self::config::{HistoryConfig, StoreConfig};
pub use self::history::now_ms;
pub use self::live::Outbox;
pub use self::queue::{Fanout, Subscription, ViewerMsg, ViewerQueue};
pub use self::report::{Follow, Live, Recovery, StreamSummary};
pub use self::stream::PATCH_BYTES;
use self::stream::{snapshot_every, Prepared, Stream, PREPARED};
pub use self::writer::Conn;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use plotstream_proto::{Maxpoints, Status, Token, Update, Value};
use tokio::{sync::Notify, time::Instant};

use crate::durable::{Journal, Table};
use crate::metrics::Metrics;

/// L43: peers whose creation allowance is remembered before full buckets are forgotten.
const ALLOWANCE_PEERS: usize = 65_536;

/// The store.
///
/// Locks, always taken in this order and never held across I/O or an `.await`: the index
/// (read to find a stream, write to add or drop one), then one stream's lock, then the token
/// sets or the L43 allowance, then the journal's.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    index: Padded<RwLock<Index>>,
    tokens: Mutex<TokenSets>,
    /// L43: per peer address, (allowance left, when it was last refilled).
    allowance: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// L25: the retained bytes of every window, kept by [`Store::account_bytes`].
    total_bytes: Padded<AtomicUsize>,
    metrics: Arc<Metrics>,
    next_conn: AtomicU64,
    /// Where changes go to be durable (in memory: nowhere).
    journal: Arc<Journal>,
    /// The next stream generation (docs/storage.md "Records"): unique across restarts.
    next_gen: AtomicU64,
    /// What only several nodes use (`cluster::Nodes`).
    nodes: cluster::Nodes,
    /// History's reader and L60's count.
    histories: history::Histories,
}

/// A value alone on its cache lines (two: x86-64 fetches lines in pairs). The store's index
/// lock and byte count are written by every line on every core; beside them, the fields each
/// line only reads (the journal, the metrics, the configuration) were a cache miss a line
/// (docs/performance.md "Sharing cache lines").
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Which streams exist.
#[derive(Debug, Default)]
struct Index {
    streams: HashMap<String, Arc<Cell>>,
    /// Read id → token: pages and feeds address a stream without its write token.
    by_read_id: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct TokenSets {
    registered: HashSet<String>,
    /// Tokens that a replaced figure no longer names (403).
    retired: HashSet<String>,
}

/// One stream behind its own lock: lines of different streams apply in parallel, and
/// everything that must be atomic for one stream (apply vs. takeover, subscribe vs. apply)
/// happens under its lock.
#[derive(Debug)]
struct Cell {
    /// A viewer may be subscribed: read without the lock, to encode a line's op for viewers
    /// before locking (a hint; `Stream::apply` encodes it anyway if a viewer came meanwhile).
    watched: AtomicBool,
    stream: Mutex<Stream>,
}

impl Cell {
    fn new(stream: Stream) -> Cell {
        Cell {
            watched: AtomicBool::new(false),
            stream: Mutex::new(stream),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Stream> {
        self.stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why the store refused something.
pub type Refusal = Status;

impl Store {
    /// An empty store.
    pub fn new(config: StoreConfig, metrics: Arc<Metrics>) -> Store {
        Store::with_journal(config, metrics, Journal::memory())
    }

    /// An empty store whose changes go to `journal`.
    pub fn with_journal(
        config: StoreConfig,
        metrics: Arc<Metrics>,
        journal: Arc<Journal>,
    ) -> Store {
        Store {
            index: Padded(RwLock::new(Index::default())),
            tokens: Mutex::new(TokenSets::default()),
            allowance: Mutex::new(HashMap::new()),
            total_bytes: Padded(AtomicUsize::new(0)),
            metrics,
            next_conn: AtomicU64::new(1),
            journal,
            next_gen: AtomicU64::new(1),
            nodes: cluster::Nodes::new(config.clustered),
            histories: history::Histories::default(),
            config,
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// A new writer connection identity.
    pub fn new_conn(&self) -> Arc<Conn> {
        self.new_conn_from(None)
    }

    /// A new writer connection identity for a connection from `peer`.
    pub fn new_conn_from(&self, peer: Option<IpAddr>) -> Arc<Conn> {
        Arc::new(Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            peer,
            kick: AtomicU16::new(0),
            bound: Mutex::new(Vec::new()),
            kicked: Notify::new(),
            last_ticket: AtomicU64::new(0),
            received_ms: AtomicI64::new(0),
            buffered: Mutex::new(Vec::new()),
        })
    }

    /// Registers a token (`POST /api/tokens` in registered mode). The registered set is bounded
    /// (L54): past it, 503.
    pub fn register(&self, token: &str) -> Result<(), Refusal> {
        let mut sets = self.tokens();
        if !sets.registered.contains(token) && sets.registered.len() >= self.config.max_registered {
            self.metrics.limit_breach("L54");
            return Err(Status::UNAVAILABLE);
        }
        if sets.registered.insert(token.to_owned()) {
            self.store_put(Table::Registered, token, Some(Vec::new()));
        }
        Ok(())
    }

    /// True if `token` is registered.
    pub fn is_registered(&self, token: &str) -> bool {
        self.tokens().registered.contains(token)
    }

    /// Binds `token` to `conn` (a header token at admission, P7). Errors: 404 unknown token in
    /// registered mode, 503 stream limit, 423 under `reject` when another connection holds it.
    pub fn bind(&self, conn: &Arc<Conn>, token: &Token) -> Result<(), Refusal> {
        loop {
            let cell = self.cell_for_writer(conn, token.as_str())?;
            let mut stream = cell.lock();
            if stream.removed {
                continue;
            }
            return self.bind_locked(&mut stream, conn, token.as_str());
        }
    }

    /// Applies one accepted line for `token` from `conn`, binding the token on first use.
    /// Returns the new seq. A displaced connection's line is discarded and counted (423).
    ///
    /// The line is made ready before any lock is taken: its values sized for L24/L25, its
    /// record encoded for the journal and, when the stream is watched, its viewers' op
    /// encoded. Only its stream's lock is held to apply it.
    pub fn apply(&self, conn: &Arc<Conn>, token: &Token, update: &Update) -> Result<u64, Refusal> {
        PREPARED.with(|prepared| {
            // A thread's buffers, reused line after line. Nothing below re-enters `apply`.
            let mut prepared = prepared.borrow_mut();
            let prepared = &mut *prepared;
            prepared.sizes_and_record(update, self.journal.is_durable());
            self.apply_prepared(conn, token.as_str(), update, prepared)
        })
    }

    fn apply_prepared(
        &self,
        conn: &Arc<Conn>,
        key: &str,
        update: &Update,
        prepared: &mut Prepared,
    ) -> Result<u64, Refusal> {
        loop {
            let cell = match self.find(key) {
                Some(cell) => cell,
                None if conn.is_displaced() => return Err(self.displaced_line(None, conn)),
                None => self.cell_for_writer(conn, key)?,
            };
            if cell.watched.load(Ordering::Relaxed) {
                prepared.encode_op(update);
            }
            let mut guard = cell.lock();
            let stream = &mut *guard;
            if stream.removed {
                continue;
            }
            if conn.is_displaced() {
                return Err(self.displaced_line(Some(stream), conn));
            }
            if self.config.clustered && stream.fence == 0 {
                // On several nodes only the owner changes a stream (its writer acquires it
                // first; one that lost it is displaced above).
                return Err(Status::UNAVAILABLE);
            }
            if self.journal.is_failing() {
                // DC5: what cannot be stored is not accepted (the writer gets 503 + Retry-After).
                self.metrics.limit_breach("DC5");
                return Err(Status::UNAVAILABLE);
            }
            // The steady state, a line from the connection that holds the token, needs no
            // bind: a retired token has no writer (`retire_token`), so this cannot skip the 403.
            if stream.writer.as_ref().is_none_or(|w| w.id != conn.id) {
                self.bind_locked(stream, conn, key)?;
            }
            if stream.patch_too_large(update) {
                // L41: checked before any effect, so the refused line changes nothing (I2).
                self.metrics.limit_breach("L41");
                return Err(Status::UNPROCESSABLE);
            }
            let before = stream.window.bytes();
            let global_full = self.total_bytes.load(Ordering::Relaxed) >= self.config.total_bytes;
            let seq = stream.apply(update, prepared, self.config.stream_bytes, global_full);
            cell.watched
                .store(!stream.viewers.is_empty(), Ordering::Relaxed);
            self.account_bytes(before, stream.window.bytes());
            self.metrics.points.fetch_add(1, Ordering::Relaxed);
            if self.journal.is_durable() {
                let record = &prepared.record;
                let mut ticket =
                    self.journal_line(stream, key, update, seq, record, || conn.received_ms());
                if let Some(live) = &self.nodes.live {
                    live.push(key, stream.gen, &stream.epoch, seq, record);
                }
                if seq - stream.snap_seq >= snapshot_every(stream.window.maxpoints()) {
                    ticket = self.store_snapshot(stream);
                }
                if !stream.lines.is_empty() && stream.lines_by != Some(conn.id) {
                    // The line waits for the end of the read: this writer queues it then.
                    stream.lines_by = Some(conn.id);
                    persist::lock_buffered(conn).push(cell.clone());
                }
                conn.last_ticket.fetch_max(ticket, Ordering::AcqRel);
            }
            return Ok(seq);
        }
    }

    /// A line of a displaced connection: discarded and counted (P7).
    fn displaced_line(&self, stream: Option<&mut Stream>, conn: &Conn) -> Status {
        if let Some(s) = stream {
            s.displaced_lines += 1;
        }
        self.metrics.displaced_lines.fetch_add(1, Ordering::Relaxed);
        conn.kick_status().unwrap_or(Status::LOCKED)
    }

    /// Counts a line skipped under `--lenient-lines` against `token`'s stream, if it exists.
    pub fn count_rejected(&self, token: Option<&Token>) {
        if let Some(cell) = token.and_then(|t| self.find(t.as_str())) {
            cell.lock().rejected_lines += 1;
        }
    }

    /// Releases every binding `conn` holds (its body ended or it closed), before its response
    /// is written (P7, M32). Returns the tokens it was still the writer of.
    pub fn release(&self, conn: &Arc<Conn>) -> Vec<String> {
        // Its lines still waiting are queued first: its final response waits for them.
        self.flush_lines(conn);
        let mut released = Vec::new();
        let tokens = std::mem::take(
            &mut *conn
                .bound
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for token in tokens {
            let Some(cell) = self.find(&token) else {
                continue;
            };
            let mut stream = cell.lock();
            if stream.writer.as_ref().is_some_and(|w| w.id == conn.id) {
                stream.writer = None;
                stream.idle_since = Instant::now();
                if self.config.clustered {
                    stream.last_writer = Some(Arc::downgrade(conn));
                }
                released.push(token.clone());
            }
            let counters = (stream.rejected_lines, stream.displaced_lines);
            if counters != stream.stored_counters && !stream.removed {
                stream.stored_counters = counters;
                let ticket = self.store_meta(&token, &stream);
                conn.last_ticket.fetch_max(ticket, Ordering::AcqRel);
            }
        }
        released
    }

    /// Binds `token` to a trace of `owner`'s figure (docs/protocol.md §1.4, §7.5) and registers it.
    ///
    /// A figure claims the stream it creates (and, in keys mode, any stream of a token its
    /// owner holds). Only the claimant's figures change the stream: set its maxpoints and
    /// restart its window from `initial` (a new epoch; viewers get `reset` (epoch) and a fresh
    /// snapshot), as a re-run of the notebook expects. Anyone else's figure adopts the stream
    /// as it is: naming a live stream never wipes or trims it.
    /// A new stream counts against L25, L26 and `peer`'s allowance (L43) like any other.
    pub fn bind_trace(
        &self,
        token: &str,
        maxpoints: Maxpoints,
        initial: Vec<(String, Vec<Value>)>,
        owner: &str,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let (cell, created) = loop {
            let (cell, created) = match self.find(token) {
                Some(cell) => (cell, false),
                None => self.create(token, maxpoints, peer, 0)?,
            };
            if !cell.lock().removed {
                break (cell, created);
            }
        };
        {
            let mut sets = self.tokens();
            if sets.registered.insert(token.to_owned()) {
                self.store_put(Table::Registered, token, Some(Vec::new()));
            }
            if sets.retired.remove(token) {
                self.store_put(Table::Retired, token, None);
            }
        }
        let mut guard = cell.lock();
        let stream = &mut *guard;
        // On several nodes the figure's node made the stream when it took it (`install`): a
        // stream nobody claimed or wrote is this figure's to claim.
        let created = created
            || (self.config.clustered
                && stream.claimed_by.is_none()
                && stream.last_seq == 0
                && stream.window.is_empty());
        if (created || self.config.users.is_some()) && stream.claimed_by.as_deref() != Some(owner) {
            stream.claimed_by = Some(owner.to_owned());
            self.store_meta(token, stream);
        }
        if stream.claimed_by.as_deref() != Some(owner) {
            return Ok(());
        }
        let before = stream.window.bytes();
        stream.window.set_maxpoints(maxpoints);
        if stream.last_seq > 0 || !stream.window.is_empty() || !initial.is_empty() {
            stream.restart(initial, self.config.stream_bytes);
            for v in &stream.viewers {
                // A full queue cannot take the reset: lagged, the viewer resets all the same
                // (with a snapshot of the new epoch), before any update of the new epoch.
                if v.tx.try_send(ViewerMsg::Reset("epoch")).is_err() {
                    v.queue.mark_lagged();
                }
            }
            self.store_new_gen(token, stream);
        } else {
            self.store_meta(token, stream);
            self.store_snapshot(stream);
        }
        self.account_bytes(before, stream.window.bytes());
        Ok(())
    }

    /// The stream a writer's line for `token` goes to, created when it does not exist yet
    /// (404 for an unknown token in registered or keys mode, 403 for a retired one).
    fn cell_for_writer(&self, conn: &Arc<Conn>, token: &str) -> Result<Arc<Cell>, Refusal> {
        if let Some(cell) = self.find(token) {
            return Ok(cell);
        }
        self.may_write(token)?;
        Ok(self
            .create(token, self.config.default_maxpoints, conn.peer, 0)?
            .0)
    }

    /// Whether a writer may stream `token` at all: 403 retired, 404 unknown in registered
    /// mode or not owned in keys mode. Checked before anything is created for it (on several
    /// nodes, before its node takes it).
    pub fn may_write(&self, token: &str) -> Result<(), Refusal> {
        {
            let sets = self.tokens();
            if sets.retired.contains(token) {
                return Err(Status::FORBIDDEN);
            }
            if !self.config.tokens_open
                && self.config.users.is_none()
                && !sets.registered.contains(token)
            {
                return Err(Status::NOT_FOUND);
            }
        }
        self.check_owned(token)
    }

    /// Keys mode: only a token some user owns streams (a removed user's tokens stop).
    fn check_owned(&self, token: &str) -> Result<(), Refusal> {
        match &self.config.users {
            Some(users) if users.snapshot().owner_of(token).is_none() => Err(Status::NOT_FOUND),
            _ => Ok(()),
        }
    }

    /// Creates `token`'s stream: L26 (streams), L25 (bytes), L43 (`peer`'s allowance). Returns
    /// the stream and whether this call created it (another may have, meanwhile).
    ///
    /// On several nodes, a stream this node creates as its owner has a generation under
    /// `fence`; a copy made to follow another node's (`fence` 0) stores nothing.
    fn create(
        &self,
        token: &str,
        maxpoints: Maxpoints,
        peer: Option<IpAddr>,
        fence: u64,
    ) -> Result<(Arc<Cell>, bool), Refusal> {
        let mut index = self.index_mut();
        if let Some(cell) = index.streams.get(token) {
            return Ok((cell.clone(), false));
        }
        if index.streams.len() >= self.config.max_streams
            || self.total_bytes.load(Ordering::Relaxed) >= self.config.total_bytes
        {
            self.metrics.limit_breach("L26");
            return Err(Status::UNAVAILABLE);
        }
        let per_hour = self.config.new_streams_per_peer;
        if let (Some(ip), true) = (peer, per_hour > 0) {
            let mut allowance = self
                .allowance
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let burst = f64::from(per_hour);
            if allowance.len() >= ALLOWANCE_PEERS {
                // Full buckets carry no information: forget them first.
                allowance.retain(|_, (left, at)| {
                    *left + now.duration_since(*at).as_secs_f64() * burst / 3600.0 < burst
                });
            }
            let (left, at) = allowance.entry(ip).or_insert((burst, now));
            *left = (*left + now.duration_since(*at).as_secs_f64() * burst / 3600.0).min(burst);
            *at = now;
            if *left < 1.0 {
                self.metrics.limit_breach("L43");
                return Err(Status::UNAVAILABLE);
            }
            *left -= 1.0;
        }
        let read_id = loop {
            let id = crate::random::id(12);
            if !index.by_read_id.contains_key(&id) {
                break id;
            }
        };
        index.by_read_id.insert(read_id.clone(), token.to_owned());
        let gen = if fence == 0 {
            self.new_gen()
        } else {
            self.gen_under(fence)
        };
        let mut stream = Stream::new(maxpoints, read_id, gen);
        stream.fence = fence;
        // Nobody else can see the stream yet: its first record goes before any of its lines.
        self.store_meta(token, &stream);
        let cell = Arc::new(Cell::new(stream));
        index.streams.insert(token.to_owned(), cell.clone());
        self.metrics.streams.fetch_add(1, Ordering::Relaxed);
        Ok((cell, true))
    }

    /// `token` is no longer named by any figure of `owner`: if `owner`'s figure claimed its
    /// stream, a live writer ends with 449 and later use gets 403 (docs/protocol.md §4.2, §7.5).
    /// A stream claimed by nobody else's figure is left alone.
    pub fn retire_token(&self, token: &str, owner: &str) {
        let Some(cell) = self.find(token) else {
            self.retire(token);
            // A writer may have created the stream meanwhile, before it could see the
            // retirement: it goes as it would have below.
            if let Some(cell) = self.find(token) {
                if let Some(w) = cell.lock().writer.take() {
                    w.displace(Status::RETRY_WITH);
                }
            }
            return;
        };
        let mut stream = cell.lock();
        if stream.claimed_by.as_deref() != Some(owner) && !stream.removed {
            return;
        }
        // Under the stream's lock: a writer binds after this and sees the 403, or before it
        // and is displaced here (`bind_locked` checks the set under the same lock).
        self.retire(token);
        if let Some(w) = stream.writer.take() {
            w.displace(Status::RETRY_WITH);
        }
    }

    /// Adds `token` to the retired set (and takes it out of the registered one).
    fn retire(&self, token: &str) {
        let mut sets = self.tokens();
        if sets.retired.insert(token.to_owned()) {
            self.store_put(Table::Retired, token, Some(Vec::new()));
        }
        if sets.registered.remove(token) {
            self.store_put(Table::Registered, token, None);
        }
    }

    /// Makes `conn` the writer of `stream` (`token`'s), under its lock: 403 retired, 404 not
    /// owned (keys mode), 423 held by another under `reject`; a takeover otherwise.
    fn bind_locked(
        &self,
        stream: &mut Stream,
        conn: &Arc<Conn>,
        token: &str,
    ) -> Result<(), Refusal> {
        if self.tokens().retired.contains(token) {
            return Err(Status::FORBIDDEN);
        }
        self.check_owned(token)?;
        match &stream.writer {
            Some(w) if w.id == conn.id => Ok(()),
            Some(_) if !self.config.takeover => Err(Status::LOCKED),
            Some(w) => {
                // Takeover: the displaced connection stops applying for all its tokens at once,
                // because each of its later lines checks the flag under its stream's lock, and
                // this one's lock is held until the new writer is in place (I3).
                w.displace(Status::LOCKED);
                self.metrics.takeovers.fetch_add(1, Ordering::Relaxed);
                stream.writer = Some(conn.clone());
                conn.bound
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(token.to_owned());
                Ok(())
            }
            None => {
                stream.writer = Some(conn.clone());
                conn.bound
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(token.to_owned());
                Ok(())
            }
        }
    }

    fn new_gen(&self) -> u64 {
        self.next_gen.fetch_add(1, Ordering::Relaxed)
    }

    /// L25: the store-wide byte count moves from `before` to `after` for one stream.
    fn account_bytes(&self, before: usize, after: usize) {
        if after >= before {
            self.total_bytes
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            let less = before - after;
            let _ = self
                .total_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(less))
                });
        }
    }

    /// The stream of `token`, if any (the index's read lock, held only to clone the handle).
    fn find(&self, token: &str) -> Option<Arc<Cell>> {
        self.index().streams.get(token).cloned()
    }

    /// Every stream with its token, taken from the index at once (its lock is not held while
    /// each stream's is).
    fn cells(&self) -> Vec<(String, Arc<Cell>)> {
        self.index()
            .streams
            .iter()
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect()
    }

    // A panic while holding a lock cannot leave a torn window: every mutation is completed
    // before any fallible call. Keep serving rather than poisoning forever.

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tokens(&self) -> MutexGuard<'_, TokenSets> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
impl Store {
    /// A figure of `owner` naming `token` ([`Store::bind_trace`] with a plain maxpoints and no
    /// peer), for tests.
    pub(crate) fn figure(
        &self,
        token: &str,
        maxpoints: usize,
        initial: Vec<(String, Vec<Value>)>,
        owner: &str,
    ) -> Result<(), Refusal> {
        self.bind_trace(
            token,
            Maxpoints::new(maxpoints, Maxpoints::MAX),
            initial,
            owner,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use plotstream_proto::update::parse_update;
    use plotstream_proto::Limits;

    use std::time::Duration;

    use plotstream_proto::canonical::write_jcs;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::durable::Loaded;
    use crate::records::{self, StreamMeta};
    use crate::text::hex;
    use crate::window::value_bytes_with;

    /// The counted size of whole numbers is the size JCS formats them to (plus the comma).
    #[test]
    fn whole_number_sizes_match_their_jcs_text() {
        let mut scratch = Vec::new();
        for f in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            9.0,
            10.0,
            99.0,
            100.0,
            -123_456.0,
            1_700_000_000_123.0,
            9_007_199_254_740_991.0,
            -9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            1e21,
            0.5,
            -2.5e-7,
        ] {
            let v = Value::Number(f);
            let mut text = Vec::new();
            write_jcs(&v, &mut text);
            assert_eq!(
                value_bytes_with(&v, &mut scratch),
                text.len() + 1,
                "{f}: {}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    fn store(config: StoreConfig) -> (Store, Arc<Conn>) {
        let s = Store::new(config, Arc::new(Metrics::default()));
        let c = s.new_conn();
        (s, c)
    }

    fn apply(s: &Store, c: &Arc<Conn>, token: &str, line: &str) -> Result<u64, Refusal> {
        let u = parse_update(&Bytes::copy_from_slice(line.as_bytes()), &Limits::default()).unwrap();
        s.apply(c, &Token::parse(token.as_bytes()).unwrap(), &u)
    }

    fn inspect(s: &Store, token: &str) -> serde_json::Value {
        serde_json::from_str(&s.inspect(token, true).unwrap()).unwrap()
    }

    #[test]
    fn window_keeps_the_newest_maxpoints_and_replaces_arrays() {
        let (s, c) = store(StoreConfig::default());
        s.figure("tok1", 3, Vec::new(), "u").unwrap();
        for n in 1..=5 {
            apply(&s, &c, "tok1", &format!("{{\"x\":{n},\"y\":{n}}}")).unwrap();
        }
        let st = inspect(&s, "tok1");
        assert_eq!(st["window"]["x"], serde_json::json!([3, 4, 5]));
        assert_eq!(
            (
                st["first_seq"].as_u64(),
                st["last_seq"].as_u64(),
                st["count"].as_u64()
            ),
            (Some(3), Some(5), Some(3))
        );
        apply(&s, &c, "tok1", r#"{"x":[1,2,3,4,5,6],"y":[7]}"#).unwrap();
        let st = inspect(&s, "tok1");
        assert_eq!(st["window"]["x"], serde_json::json!([4, 5, 6]));
        assert_eq!(st["window"]["y"], serde_json::json!([7]));
        assert_eq!(st["first_seq"], 6);
    }

    #[test]
    fn digest_is_sha256_of_the_jcs_window() {
        let (s, c) = store(StoreConfig::default());
        apply(&s, &c, "tok1", r#"{"y":-0,"x":1e21}"#).unwrap();
        let st = inspect(&s, "tok1");
        let jcs = r#"{"x":[1e+21],"y":[0]}"#;
        assert_eq!(
            st["digest"].as_str().unwrap(),
            hex(&Sha256::digest(jcs.as_bytes()))
        );
    }

    #[test]
    fn byte_budget_evicts_the_oldest_index() {
        let (s, c) = store(StoreConfig {
            stream_bytes: 100,
            ..StoreConfig::default()
        });
        for n in 0..50 {
            apply(
                &s,
                &c,
                "tok1",
                &format!("{{\"x\":{n},\"y\":\"{}\"}}", "a".repeat(10)),
            )
            .unwrap();
        }
        let st = inspect(&s, "tok1");
        assert!(st["bytes"].as_u64().unwrap() <= 100, "{st}");
        let xs = st["window"]["x"].as_array().unwrap();
        assert_eq!(xs.last().unwrap(), 49, "eviction only at the old end");
        assert_eq!(xs.len(), st["window"]["y"].as_array().unwrap().len());
    }

    #[test]
    fn another_users_figure_adopts_a_live_stream_without_wiping_or_retiring_it() {
        let (s, c) = store(StoreConfig::default());
        s.figure("tok1", 500, Vec::new(), "victim").unwrap();
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        let before = inspect(&s, "tok1");
        s.figure("tok1", 1, vec![("x".into(), vec![])], "mallory")
            .unwrap();
        s.retire_token("tok1", "mallory");
        let after = inspect(&s, "tok1");
        assert_eq!(before["epoch"], after["epoch"]);
        assert_eq!(after["maxpoints"], 500);
        assert_eq!(after["window"]["x"], serde_json::json!([1]));
        assert_eq!(c.kick_status(), None);
        assert_eq!(apply(&s, &c, "tok1", r#"{"x":2}"#), Ok(2));
    }

    #[test]
    fn layout_patches_are_bounded_after_merging_at_l41() {
        let (s, c) = store(StoreConfig::default());
        // Each patch is small (L18 holds), but new keys accumulate: 40 × ~2 KiB.
        let patch = |i: usize| format!(r#"{{"layout":{{"k{i}":"{}"}}}}"#, "a".repeat(1000));
        let mut accepted = 0;
        let refused = (0..100).find_map(|i| match apply(&s, &c, "tok1", &patch(i)) {
            Ok(_) => {
                accepted += 1;
                None
            }
            Err(status) => Some(status),
        });
        assert_eq!(refused, Some(Status::UNPROCESSABLE));
        let st = inspect(&s, "tok1");
        assert_eq!(st["last_seq"], accepted, "the refused patch took no seq");
        assert!(
            (60..=66).contains(&accepted),
            "{accepted} patches of ~1 KiB fit in 64 KiB"
        );
        // Replacing existing keys does not grow it: still accepted.
        assert!(apply(&s, &c, "tok1", &patch(0)).is_ok());
        assert!(
            apply(&s, &c, "tok1", r#"{"x":1}"#).is_ok(),
            "data lines are unaffected"
        );
    }

    #[test]
    fn the_registered_set_is_bounded_at_l54() {
        let (s, _) = store(StoreConfig {
            max_registered: 2,
            ..StoreConfig::default()
        });
        assert_eq!(s.register("a"), Ok(()));
        assert_eq!(s.register("b"), Ok(()));
        assert_eq!(s.register("a"), Ok(()), "registering again takes no room");
        assert_eq!(s.register("c"), Err(Status::UNAVAILABLE));
    }

    #[test]
    fn retired_tokens_get_449_then_403() {
        let (s, c) = store(StoreConfig::default());
        s.figure("tok1", 10, Vec::new(), "u").unwrap();
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        s.retire_token("tok1", "u");
        assert_eq!(c.kick_status(), Some(Status::RETRY_WITH));
        let c2 = s.new_conn();
        assert_eq!(apply(&s, &c2, "tok1", r#"{"x":2}"#), Err(Status::FORBIDDEN));
        s.figure("tok1", 10, Vec::new(), "u").unwrap();
        assert_eq!(
            apply(&s, &c2, "tok1", r#"{"x":3}"#),
            Ok(1),
            "a new figure restarts the stream"
        );
    }

    /// L37 counts live subscriptions: a dropped one gives its slot back at once, and a
    /// resubscription keeps its own, so a viewer at the limit can always reset.
    #[test]
    fn viewer_slots_are_held_by_subscriptions() {
        let (s, c) = store(StoreConfig {
            viewers_total: 2,
            viewers_per_stream: 1,
            ..StoreConfig::default()
        });
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        apply(&s, &c, "tok2", r#"{"x":1}"#).unwrap();
        let viewers = |s: &Store| s.metrics.viewers.load(Ordering::Relaxed);
        for _ in 0..5 {
            let mut a = s.subscribe("tok1").unwrap().unwrap();
            assert_eq!(s.subscribe("tok1").err(), Some(Status::UNAVAILABLE));
            let b = s.subscribe("tok2").unwrap().unwrap();
            assert_eq!(viewers(&s), 2);
            assert!(s.resubscribe("tok1", &mut a), "at both limits");
            assert_eq!(viewers(&s), 2);
            drop(b);
            assert_eq!(viewers(&s), 1);
            drop(a);
            assert_eq!(viewers(&s), 0);
        }
    }

    /// Viewers that subscribe at the same point share one snapshot; anything that changes
    /// what a snapshot shows gives the next viewer a new one.
    #[test]
    fn viewers_share_a_snapshot_while_it_is_current() {
        let (s, c) = store(StoreConfig::default());
        s.figure("tok1", 500, Vec::new(), "u").unwrap();
        for n in 1..=5 {
            apply(&s, &c, "tok1", &format!("{{\"x\":{n}}}")).unwrap();
        }
        let a = s.subscribe("tok1").unwrap().unwrap();
        let b = s.subscribe("tok1").unwrap().unwrap();
        assert_eq!(a.snapshot.as_ptr(), b.snapshot.as_ptr(), "one copy");
        let json = |sub: &Subscription| -> serde_json::Value {
            serde_json::from_slice(&sub.snapshot).unwrap()
        };
        apply(&s, &c, "tok1", r#"{"x":6}"#).unwrap();
        let after_apply = s.subscribe("tok1").unwrap().unwrap();
        assert_eq!(json(&after_apply)["last_seq"], 6);
        s.figure("tok1", 2, Vec::new(), "u").unwrap();
        let after_restart = s.subscribe("tok1").unwrap().unwrap();
        assert_ne!(json(&after_restart)["epoch"], json(&a)["epoch"]);
        assert_eq!(json(&after_restart)["last_seq"], 0);
        // The same key in a new epoch: never the old epoch's snapshot.
        s.figure(
            "tok1",
            2,
            vec![("x".to_owned(), vec![Value::Number(7.0)])],
            "u",
        )
        .unwrap();
        let again = s.subscribe("tok1").unwrap().unwrap();
        assert_eq!(json(&again)["window"]["x"], serde_json::json!([7]));
        assert_eq!(json(&a)["last_seq"], 5, "a held snapshot never changes");
    }

    #[test]
    fn a_figure_restart_gives_viewers_an_epoch_reset() {
        let (s, c) = store(StoreConfig::default());
        s.figure("tok1", 500, Vec::new(), "u").unwrap();
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        let mut sub = s.subscribe("tok1").unwrap().unwrap();
        let epoch = sub.epoch.clone();
        s.figure(
            "tok1",
            80,
            vec![("x".to_owned(), vec![Value::Number(9.0)])],
            "u",
        )
        .unwrap();
        assert!(matches!(sub.rx.try_recv(), Ok(ViewerMsg::Reset("epoch"))));
        let st = inspect(&s, "tok1");
        assert_ne!(st["epoch"].as_str().unwrap(), epoch);
        assert_eq!(
            (st["maxpoints"].as_u64(), st["last_seq"].as_u64()),
            (Some(80), Some(0))
        );
        assert_eq!(st["window"]["x"], serde_json::json!([9]));
    }

    /// Item 4 of the durability issue: "the code seems to keep string values as slices of the
    /// connection's read buffer". It did (a `Str` is a `Bytes` slice of the chunk the line was
    /// read into): a window of timestamp strings pinned whole read buffers. Now the window
    /// keeps owned copies; the buffer is freed once the line is done.
    /// L27 on the server's one clock (tokio's, here paused): an idle stream goes after the TTL
    /// without the test waiting an hour; one with a writer or a registered owner stays.
    #[tokio::test(start_paused = true)]
    async fn idle_streams_go_after_l27_on_paused_time() {
        let (s, c) = store(StoreConfig::default());
        apply(&s, &c, "idle1", r#"{"x":1}"#).unwrap();
        s.release(&c);
        let writer = s.new_conn();
        apply(&s, &writer, "busy1", r#"{"x":1}"#).unwrap();
        s.register("owned1").unwrap();
        let c3 = s.new_conn();
        apply(&s, &c3, "owned1", r#"{"x":1}"#).unwrap();
        s.release(&c3);
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert_eq!(s.evict_idle(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(s.evict_idle(Instant::now()), 1);
        assert!(s.inspect("idle1", true).is_none());
        assert!(s.inspect("busy1", true).is_some());
        assert!(s.inspect("owned1", true).is_some());
        // The next line starts a new stream (a new epoch), as L27 says.
        assert_eq!(apply(&s, &c, "idle1", r#"{"x":2}"#), Ok(1));
    }

    /// #11 item 4: one lock per stream. While one stream's lock is held (a long inspection, a
    /// big snapshot), lines of another stream still apply.
    #[test]
    fn a_held_stream_lock_does_not_stop_other_streams() {
        let (s, c) = store(StoreConfig::default());
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        let s = Arc::new(s);
        let cell = s.find("tok1").unwrap();
        let held = cell.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = {
            let s = s.clone();
            std::thread::spawn(move || {
                let c = s.new_conn();
                let r = apply(&s, &c, "tok2", r#"{"x":2}"#);
                let _ = tx.send(r);
            })
        };
        let got = rx.recv_timeout(Duration::from_secs(10));
        drop(held);
        other.join().unwrap();
        assert_eq!(got, Ok(Ok(1)), "tok2 waited for tok1's lock");
    }

    /// I3 with per-stream locks: while two writers race for one token (the second takes it
    /// over mid-stream) and others write their own streams, every line the displaced writer got
    /// accepted comes before every line of the new writer, and after its first 423 it gets no
    /// more acceptances. The store-wide byte count (L25) still equals the windows' sum.
    #[test]
    fn a_takeover_stays_atomic_while_other_streams_run() {
        for round in 0..20 {
            let (s, _) = store(StoreConfig::default());
            let s = Arc::new(s);
            let first = s.new_conn();
            apply(&s, &first, "shared", r#"{"x":"a0"}"#).unwrap();
            let start = Arc::new(std::sync::Barrier::new(4));
            let mut threads = Vec::new();
            for (who, conn) in [("a", first.clone()), ("b", s.new_conn())] {
                let (s, start) = (s.clone(), start.clone());
                threads.push(std::thread::spawn(move || {
                    start.wait();
                    let mut accepted = Vec::new();
                    let mut refused = false;
                    for n in 1..200 {
                        match apply(&s, &conn, "shared", &format!(r#"{{"x":"{who}{n}"}}"#)) {
                            Ok(seq) => {
                                assert!(!refused, "{who} accepted after its 423");
                                accepted.push(seq);
                            }
                            Err(status) => {
                                assert_eq!(status, Status::LOCKED);
                                refused = true;
                            }
                        }
                        if who == "b" && n == 1 {
                            std::thread::yield_now();
                        }
                    }
                    (who, accepted)
                }));
            }
            for t in 0..2 {
                let (s, start) = (s.clone(), start.clone());
                threads.push(std::thread::spawn(move || {
                    start.wait();
                    let c = s.new_conn();
                    for n in 0..300 {
                        apply(&s, &c, &format!("own{t}x"), &format!(r#"{{"y":{n}}}"#)).unwrap();
                    }
                    ("own", Vec::new())
                }));
            }
            let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let a = &results[0].1;
            let b = &results[1].1;
            assert_eq!(b.len(), 199, "round {round}: the new writer lost lines");
            let b_first = b[0];
            assert!(
                a.iter().all(|&seq| seq < b_first),
                "round {round}: the displaced writer's lines interleave: {a:?} vs {b_first}"
            );
            let window = inspect(&s, "shared");
            assert_eq!(window["last_seq"], 1 + a.len() as u64 + 199);
            let sum: u64 = ["shared", "own0x", "own1x"]
                .iter()
                .map(|t| inspect(&s, t)["bytes"].as_u64().unwrap())
                .sum();
            assert_eq!(s.total_bytes.load(Ordering::Relaxed) as u64, sum);
        }
    }

    #[test]
    fn window_strings_do_not_pin_the_read_buffer() {
        let (s, c) = store(StoreConfig::default());
        let line = br#"{"x":"2026-12-06 10:00:00.123","y":1,"line":{"color":"red"},"layout":{"title":"t"}}"#;
        let mut buf = vec![b' '; 16 * 1024];
        buf[..line.len()].copy_from_slice(line);
        let owner = Bytes::from(buf);
        let u = plotstream_proto::update::parse_update_in(
            &owner,
            &owner[..line.len()],
            &Limits::default(),
        )
        .unwrap();
        s.apply(&c, &Token::parse(b"tok1").unwrap(), &u).unwrap();
        drop(u);
        let mut owner = owner;
        assert!(
            owner.is_unique(),
            "the window still references the 16 KiB read buffer"
        );
        owner.truncate(0);
        assert_eq!(
            inspect(&s, "tok1")["window"]["x"][0],
            "2026-12-06 10:00:00.123"
        );
    }

    fn journaled(dir: &std::path::Path) -> (Store, Arc<Conn>, std::thread::JoinHandle<()>) {
        let mut backend = crate::durable::RedbBackend::open(dir).unwrap();
        let loaded = crate::durable::Backend::load(&mut backend, &|m: &[u8]| {
            StreamMeta::decode(m).map(|m| m.gen)
        })
        .unwrap();
        crate::durable::Backend::set_clean(&mut backend, false).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (journal, thread) =
            Journal::start(Box::new(backend), Duration::from_millis(1), metrics.clone());
        let s = Store::with_journal(StoreConfig::default(), metrics, journal);
        let _ = s.recover(loaded);
        let c = s.new_conn();
        (s, c, thread)
    }

    /// A writer's lines of one read wait in their stream and go to the journal together when
    /// the read ends (`flush_lines`, docs/storage.md "Lines"); the writer's ticket, which its
    /// final response waits for (DC1), then covers them: also when a snapshot queued them
    /// first, and when another writer took the stream and queued them with its own.
    #[test]
    fn a_reads_lines_are_queued_together_and_the_writers_ticket_covers_them() {
        let dir = std::env::temp_dir().join(format!("plotstream-lines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (s, a, thread) = journaled(&dir);
        let line = |n: u64| format!(r#"{{"x":{n},"y":{n}}}"#);
        apply(&s, &a, "tok1", &line(0)).unwrap();
        s.flush_lines(&a);
        let t0 = s.journal().last_ticket();
        assert_eq!(a.last_ticket.load(Ordering::Acquire), t0);
        for n in 1..=10 {
            apply(&s, &a, "tok1", &line(n)).unwrap();
        }
        assert_eq!(s.journal().last_ticket(), t0, "the read's lines wait");
        s.flush_lines(&a);
        assert_eq!(s.journal().last_ticket(), t0 + 10, "one ticket a line");
        assert_eq!(a.last_ticket.load(Ordering::Acquire), t0 + 10);
        // Another writer takes the stream mid-read: it queues `a`'s lines with its own, and
        // `a`'s ticket still covers `a`'s.
        for n in 11..=15 {
            apply(&s, &a, "tok1", &line(n)).unwrap();
        }
        let b = s.new_conn();
        apply(&s, &b, "tok1", &line(16)).unwrap();
        s.flush_lines(&b);
        assert_eq!(s.journal().last_ticket(), t0 + 16);
        s.flush_lines(&a);
        assert_eq!(a.last_ticket.load(Ordering::Acquire), t0 + 16);
        // A snapshot (every 500 lines here) queues the lines before it.
        for n in 17..=600 {
            apply(&s, &b, "tok1", &line(n)).unwrap();
        }
        assert!(
            s.journal().last_ticket() > t0 + 16,
            "full or snapshotted lines wait not"
        );
        s.flush_lines(&b);
        assert_eq!(
            b.last_ticket.load(Ordering::Acquire),
            s.journal().last_ticket()
        );
        let want = inspect(&s, "tok1");
        s.release(&b);
        s.journal().close(Some(thread));
        drop(s);
        let (s, _, thread) = journaled(&dir);
        assert_eq!(inspect(&s, "tok1")["window"], want["window"]);
        s.journal().close(Some(thread));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Everything a viewer sees comes back after a clean close: window (through snapshots and
    /// lines), layout, line, read id, epoch, maxpoints, claims, registered and retired tokens.
    #[test]
    fn a_store_comes_back_exactly_from_its_records() {
        let dir = std::env::temp_dir().join(format!("plotstream-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (s, c, thread) = journaled(&dir);
        s.figure(
            "tok1",
            5,
            vec![("x".into(), vec![Value::Number(0.5)])],
            "alice",
        )
        .unwrap();
        // 150 lines: two snapshots (every 64) and lines after the last one.
        for n in 1..=150 {
            apply(&s, &c, "tok1", &format!(r#"{{"x":{n},"y":"s{n}"}}"#)).unwrap();
        }
        apply(
            &s,
            &c,
            "tok1",
            r#"{"layout":{"title":{"text":"T"}},"line":{"color":"red"}}"#,
        )
        .unwrap();
        apply(&s, &c, "tok2", r#"{"x":[1,2,3],"marker":{"color":"blue"}}"#).unwrap();
        s.register("tok3").unwrap();
        s.retire_token("tok9", "nobody");
        s.release(&c);
        let want: Vec<serde_json::Value> =
            ["tok1", "tok2"].iter().map(|t| inspect(&s, t)).collect();
        let snap = s.subscribe("tok1").unwrap().unwrap().snapshot;
        s.journal().close(Some(thread));
        drop(s);
        let (s, _, thread) = journaled(&dir);
        for (t, want) in ["tok1", "tok2"].iter().zip(&want) {
            assert_eq!(&inspect(&s, t), want, "{t}");
        }
        assert_eq!(s.subscribe("tok1").unwrap().unwrap().snapshot, snap);
        assert!(s.is_registered("tok3"));
        assert_eq!(
            s.bind(&s.new_conn(), &Token::parse(b"tok9").unwrap()),
            Err(Status::FORBIDDEN)
        );
        s.journal().close(Some(thread));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// DC6: a record that does not decode, or a gap in seqs, ends the stream's valid prefix; the
    /// report says what went; the stream gets a new epoch.
    #[test]
    fn recovery_keeps_the_valid_prefix_and_says_what_it_dropped() {
        let line = |n: u64| {
            let u =
                parse_update(&Bytes::from(format!(r#"{{"x":{n}}}"#)), &Limits::default()).unwrap();
            let mut out = Vec::new();
            records::encode_update(&u, &mut out);
            out
        };
        let meta = StreamMeta {
            gen: 3,
            prev: Vec::new(),
            read_id: "readid".into(),
            epoch: "0badcafe".into(),
            maxpoints: 10,
            claimed_by: None,
            rejected_lines: 0,
            displaced_lines: 0,
            budget_limited: false,
        };
        let loaded = Loaded {
            streams: vec![
                crate::durable::LoadedStream {
                    token: "tok1".into(),
                    meta: meta.encode(),
                    snapshot: None,
                    lines: vec![
                        (1, line(1)),
                        (2, line(2)),
                        (3, b"{\"d\":[[".to_vec()),
                        (4, line(4)),
                    ],
                },
                crate::durable::LoadedStream {
                    token: "tok2".into(),
                    meta: StreamMeta {
                        gen: 4,
                        read_id: "other".into(),
                        ..meta.clone()
                    }
                    .encode(),
                    snapshot: None,
                    lines: vec![(1, line(1)), (3, line(3))],
                },
                crate::durable::LoadedStream {
                    token: "tok3".into(),
                    meta: b"not json".to_vec(),
                    snapshot: None,
                    lines: Vec::new(),
                },
            ],
            clean: true,
            ..Loaded::default()
        };
        let (s, _) = store(StoreConfig::default());
        let report = s.recover(loaded);
        assert_eq!(report.streams, 2);
        assert_eq!(
            inspect(&s, "tok1")["window"]["x"],
            serde_json::json!([1, 2])
        );
        assert_ne!(inspect(&s, "tok1")["epoch"], "0badcafe");
        assert_eq!(inspect(&s, "tok2")["window"]["x"], serde_json::json!([1]));
        assert!(s.inspect("tok3", true).is_none());
        let text = report.dropped.join("\n");
        assert!(
            text.contains("line seq 3 unreadable or out of order; it and the 1 after it dropped"),
            "{text}"
        );
        assert!(text.contains("metadata unreadable"), "{text}");
        assert_eq!(report.dropped.len(), 3, "{text}");
    }
}
