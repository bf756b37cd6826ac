//! Streams, windows, writer bindings and viewer fan-out (docs/reliability.md §4.1 terms,
//! docs/reliability.md P7, §4 invariants I1–I5).
//!
//! One mutex guards the stream table; every operation that must be atomic with another
//! (apply vs. takeover, subscribe vs. apply) happens under it, and none of them waits on I/O:
//! fan-out uses `try_send` into bounded per-viewer queues, so a slow viewer can never stall
//! ingest (M28).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plotstream_proto::canonical::{write_jcs, write_jcs_string};
use plotstream_proto::json::Str;
use plotstream_proto::{Status, Token, Update, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};

use crate::durable::{Journal, Loaded, LoadedStream, Op, Table};
use crate::guard::ViewerGuard;
use crate::metrics::Metrics;
use crate::records::{self, StreamMeta};
use crate::users::Users;
use crate::window::Window;

/// Store-wide policy.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `--tokens open`: unknown tokens create streams. Otherwise only registered ones.
    pub tokens_open: bool,
    /// `--on-duplicate takeover` (true) or `reject`.
    pub takeover: bool,
    /// `--default-maxpoints` (L23).
    pub default_maxpoints: usize,
    /// `--max-maxpoints` (L23).
    pub max_maxpoints: usize,
    /// L24: retained JCS bytes per stream.
    pub stream_bytes: usize,
    /// L25: retained JCS bytes over all streams.
    pub total_bytes: usize,
    /// L26: streams.
    pub max_streams: usize,
    /// L54: tokens registered by `POST /api/tokens` without accounts (a registered token that
    /// never streams costs a few dozen bytes; the set must still end somewhere).
    pub max_registered: usize,
    /// L35: a viewer's queue in events (default 1 024): the updates fanned out to it and not
    /// yet taken by its session. Past it the viewer is lagged: `reset` (lagged) and a fresh
    /// snapshot, never a silent gap (I5). Its session flushes its coalesced updates early once
    /// half of this many are pending, rather than letting them grow.
    pub viewer_queue: usize,
    /// L35: a viewer's queue in bytes (default 1 MiB), whichever of the two bounds comes
    /// first: the encoded size of every update fanned out to it and not yet written to its
    /// socket, whether still queued, pending in its session or in the session's output. So a
    /// viewer whose socket is full holds at most this much, however fast the stream. Past it the
    /// viewer is lagged, as for the event bound; its session flushes early at half of it. One
    /// update larger than the bound is still taken by an empty queue. The updates are encoded
    /// once and shared by every viewer, so this bounds what one viewer pins, not a copy; the
    /// snapshot a reset sends is not counted (L24 and L41 bound it, one per trace at a time).
    pub viewer_queue_bytes: usize,
    /// L35 (note): the longest coalescing interval a viewer may ask for with `?interval=MS`
    /// (default 5 s); longer ones are clamped to it, and a value that is not a whole number of
    /// milliseconds means the 50 ms default (or this bound, if it is smaller). A viewer that
    /// reads everything flushes at least this often, and earlier at half an L35 bound.
    pub viewer_interval_max: std::time::Duration,
    /// L37: viewers per stream (default 1 000); the next subscribe gets 503.
    pub viewers_per_stream: usize,
    /// L37: viewer subscriptions in total (default 10 000; a figure feed takes one per
    /// streamed trace); the next subscribe gets 503. Each subscription holds a guard that gives
    /// its slot back when it is dropped, on every path, and `plotstream_viewers` is that count.
    pub viewers_total: usize,
    /// L27: a stream created by ingest with no writer, no viewer and no figure or owner is
    /// dropped after this long (its next writer starts a new epoch).
    pub idle_stream_ttl: Duration,
    /// L43: new streams one peer address may create in a burst (0 = no limit); the allowance
    /// refills at this many per hour.
    pub new_streams_per_peer: u32,
    /// Keys mode (`serve --users FILE`): only tokens some user owns may stream.
    pub users: Option<Arc<Users>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tokens_open: true,
            takeover: true,
            default_maxpoints: 500,
            max_maxpoints: 10_000,
            stream_bytes: 4 * 1024 * 1024,
            total_bytes: 1 << 30,
            max_streams: 10_000,
            max_registered: 100_000,
            viewer_queue: 1024,
            viewer_queue_bytes: 1 << 20,
            viewer_interval_max: std::time::Duration::from_secs(5),
            viewers_per_stream: 1000,
            viewers_total: 10_000,
            idle_stream_ttl: Duration::from_secs(3600),
            new_streams_per_peer: 1000,
            users: None,
        }
    }
}

/// A writer connection as the store sees it: an id and a way to tell it it was displaced.
#[derive(Debug)]
pub struct Conn {
    /// Unique per connection.
    pub id: u64,
    /// The peer's address, for the per-peer creation allowance (L43).
    pub peer: Option<IpAddr>,
    /// The status the connection must end with when it was displaced: 423 after a takeover,
    /// 449 when its figure stopped naming its token. 0 while it is not displaced.
    kick: AtomicU16,
    /// Woken when the connection is displaced by a takeover.
    pub kicked: Notify,
    /// The tokens this connection became the writer of, so releasing them costs O(own tokens),
    /// not O(streams). Only touched under the store lock.
    bound: Mutex<Vec<String>>,
    /// The journal ticket of its last accepted line: its final response waits until that is
    /// durable (docs/storage.md DC1).
    pub last_ticket: AtomicU64,
}

impl Conn {
    /// True once another connection took one of its tokens (P7).
    pub fn is_displaced(&self) -> bool {
        self.kick.load(Ordering::Acquire) != 0
    }

    /// The status to end with, once displaced.
    pub fn kick_status(&self) -> Option<Status> {
        match self.kick.load(Ordering::Acquire) {
            0 => None,
            code => Some(Status::new(code)),
        }
    }

    fn displace(&self, status: Status) {
        // The first reason wins.
        let _ = self
            .kick
            .compare_exchange(0, status.code(), Ordering::AcqRel, Ordering::Acquire);
        self.kicked.notify_one();
    }
}

/// One event queued to a viewer.
#[derive(Debug, Clone)]
pub enum ViewerMsg {
    /// One accepted update, encoded once for every viewer.
    Update(Arc<Fanout>),
    /// The stream's history was lost (`epoch`) or the server is stopping (`shutdown`).
    Reset(&'static str),
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
    lagged: AtomicBool,
    /// Bytes fanned out and not yet written to the viewer's socket (added by the fan-out,
    /// given back by the session once written).
    /// Invariant: at most `max_bytes`, or one update's bytes.
    n_bytes: AtomicUsize,
    /// L35: the byte bound.
    max_bytes: usize,
    metrics: Arc<Metrics>,
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

    fn mark_lagged(&self) {
        self.lagged.store(true, Ordering::Release);
    }

    /// Counts `n` more bytes, unless that passes the bound (then the caller marks the viewer
    /// lagged). Only the fan-out adds, under the store lock, and the session only subtracts, so
    /// the check cannot race into going over.
    fn try_reserve(&self, n: usize) -> bool {
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
    _slot: ViewerGuard,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    next_conn: AtomicU64,
    /// Where changes go to be durable (in memory: nowhere).
    journal: Arc<Journal>,
    /// The next stream generation (docs/storage.md "Records"): unique across restarts.
    next_gen: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<String, Stream>,
    registered: HashSet<String>,
    /// Tokens that a replaced figure no longer names (403).
    retired: HashSet<String>,
    total_bytes: usize,
    /// Read id → token: pages and feeds address a stream without its write token.
    by_read_id: HashMap<String, String>,
    /// L43: per peer address, (allowance left, when it was last refilled).
    allowance: HashMap<IpAddr, (f64, Instant)>,
}

#[derive(Debug)]
struct Stream {
    /// The generation its records are stored under (docs/storage.md "Records"); a new one
    /// with every new epoch.
    gen: u64,
    /// The seq of its last stored snapshot: lines after it are stored one by one.
    snap_seq: u64,
    /// `(rejected_lines, displaced_lines)` as last stored.
    stored_counters: (u64, u64),
    /// The user whose figure created (or, in keys mode, owns) the stream: only its figures
    /// reshape or retire it.
    claimed_by: Option<String>,
    /// The id pages and feeds use (12 random `[a-z0-9]`): never the write token.
    read_id: String,
    /// When the stream last had a writer or a viewer (L27).
    idle_since: Instant,
    epoch: String,
    last_seq: u64,
    /// The values, maxpoints and byte count (L24): a plain value of its own.
    window: Window,
    budget_limited: bool,
    layout: Vec<(Str, Value)>,
    line: Vec<(Str, Value)>,
    writer: Option<Arc<Conn>>,
    viewers: Vec<ViewerSlot>,
    /// The snapshot last handed to a viewer, kept only while a viewer still holds it: viewers
    /// that subscribe at the same point share one copy of a window of up to L24's 4 MiB.
    snapshot: SharedSnapshot,
    rejected_lines: u64,
    displaced_lines: u64,
}

#[derive(Debug)]
struct ViewerSlot {
    tx: mpsc::Sender<ViewerMsg>,
    queue: Arc<ViewerQueue>,
}

/// The snapshot a stream last handed out, without keeping it alive: only viewers hold it
/// (their `Bytes`), so an idle stream keeps no second copy of its window.
///
/// Invariant: while the key matches, the snapshot is current. Every change to what a snapshot
/// shows moves its seq (`Stream::apply`, including L24/L25 eviction), its maxpoints (`trim`
/// after a new maxpoints) or restarts the stream (`restart` clears this).
#[derive(Debug, Default)]
struct SharedSnapshot {
    /// `(last_seq, maxpoints)` when it was taken.
    key: Option<(u64, usize)>,
    text: Weak<Vec<u8>>,
}

/// The owner of a shared snapshot's bytes, for `Bytes::from_owner`.
struct SnapshotText(Arc<Vec<u8>>);

impl AsRef<[u8]> for SnapshotText {
    fn as_ref(&self) -> &[u8] {
        &self.0
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
            config,
            inner: Mutex::new(Inner::default()),
            metrics,
            next_conn: AtomicU64::new(1),
            journal,
            next_gen: AtomicU64::new(1),
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
        })
    }

    /// Registers a token (`POST /api/tokens` in registered mode). The registered set is bounded
    /// (L54): past it, 503.
    pub fn register(&self, token: &str) -> Result<(), Refusal> {
        let mut inner = self.lock();
        if !inner.registered.contains(token) && inner.registered.len() >= self.config.max_registered
        {
            self.metrics.limit_breach("L54");
            return Err(Status::UNAVAILABLE);
        }
        if inner.registered.insert(token.to_owned()) {
            self.store_put(Table::Registered, token, Some(Vec::new()));
        }
        Ok(())
    }

    /// True if `token` is registered.
    pub fn is_registered(&self, token: &str) -> bool {
        self.lock().registered.contains(token)
    }

    /// Binds `token` to `conn` (a header token at admission, P7). Errors: 404 unknown token in
    /// registered mode, 503 stream limit, 423 under `reject` when another connection holds it.
    pub fn bind(&self, conn: &Arc<Conn>, token: &Token) -> Result<(), Refusal> {
        let mut inner = self.lock();
        self.bind_locked(&mut inner, conn, token.as_str())
    }

    /// Applies one accepted line for `token` from `conn`, binding the token on first use.
    /// Returns the new seq. A displaced connection's line is discarded and counted (423).
    pub fn apply(&self, conn: &Arc<Conn>, token: &Token, update: &Update) -> Result<u64, Refusal> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(status) = conn.kick_status() {
            if let Some(s) = inner.streams.get_mut(token.as_str()) {
                s.displaced_lines += 1;
            }
            self.metrics.displaced_lines.fetch_add(1, Ordering::Relaxed);
            return Err(status);
        }
        if self.journal.is_failing() {
            // DC5: what cannot be stored is not accepted (the writer gets 503 + Retry-After).
            self.metrics.limit_breach("DC5");
            return Err(Status::UNAVAILABLE);
        }
        let key = token.as_str();
        // The steady state, a line from the connection that holds the token, needs no bind: a
        // retired token has no writer (`retire_token`), so this cannot skip the 403.
        let held = inner
            .streams
            .get(key)
            .and_then(|s| s.writer.as_ref())
            .is_some_and(|w| w.id == conn.id);
        if !held {
            self.bind_locked(inner, conn, key)?;
        }
        let Inner {
            streams,
            total_bytes,
            ..
        } = inner;
        let stream = streams.get_mut(key).ok_or(Status::INTERNAL)?;
        if stream.patch_too_large(update) {
            // L41: checked before any effect, so the refused line changes nothing (I2).
            self.metrics.limit_breach("L41");
            return Err(Status::UNPROCESSABLE);
        }
        let before = stream.window.bytes();
        let seq = stream.apply(
            update,
            self.config.stream_bytes,
            *total_bytes >= self.config.total_bytes,
        );
        *total_bytes = (*total_bytes + stream.window.bytes()).saturating_sub(before);
        self.metrics.points.fetch_add(1, Ordering::Relaxed);
        if self.journal.is_durable() {
            let mut ticket = self.journal.push_line(stream.gen, seq, |out| {
                records::encode_update(update, out);
            });
            if seq - stream.snap_seq >= snapshot_every(stream.window.maxpoints()) {
                ticket = self.store_snapshot(stream);
            }
            conn.last_ticket.store(ticket, Ordering::Release);
        }
        Ok(seq)
    }

    /// Counts a line skipped under `--lenient-lines` against `token`'s stream, if it exists.
    pub fn count_rejected(&self, token: Option<&Token>) {
        let mut inner = self.lock();
        if let Some(s) = token.and_then(|t| inner.streams.get_mut(t.as_str())) {
            s.rejected_lines += 1;
        }
    }

    /// Releases every binding `conn` holds (its body ended or it closed), before its response
    /// is written (P7, M32).
    pub fn release(&self, conn: &Arc<Conn>) {
        let mut inner = self.lock();
        let tokens = std::mem::take(
            &mut *conn
                .bound
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for token in tokens {
            if let Some(stream) = inner.streams.get_mut(&token) {
                if stream.writer.as_ref().is_some_and(|w| w.id == conn.id) {
                    stream.writer = None;
                    stream.idle_since = Instant::now();
                }
                let counters = (stream.rejected_lines, stream.displaced_lines);
                if counters != stream.stored_counters {
                    stream.stored_counters = counters;
                    let ticket = self.store_meta(&token, stream);
                    conn.last_ticket.fetch_max(ticket, Ordering::AcqRel);
                }
            }
        }
    }

    /// Subscribes a viewer: the snapshot and the registration are atomic, so the first update
    /// received covers `last_seq + 1` (I5). `None` for an unknown stream; 503 past either L37
    /// bound. The subscription holds its viewer slot until it is dropped.
    pub fn subscribe(&self, token: &str) -> Result<Option<Subscription>, Refusal> {
        let mut inner = self.lock();
        let Some(stream) = inner.streams.get_mut(token) else {
            return Ok(None);
        };
        stream.viewers.retain(|v| !v.tx.is_closed());
        if stream.viewers.len() >= self.config.viewers_per_stream {
            self.metrics.limit_breach("L37");
            return Err(Status::UNAVAILABLE);
        }
        let Some(slot) = ViewerGuard::new(&self.metrics, self.config.viewers_total) else {
            self.metrics.limit_breach("L37");
            return Err(Status::UNAVAILABLE);
        };
        let (rx, queue) = self.add_viewer(stream);
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
        let mut inner = self.lock();
        let Some(stream) = inner.streams.get_mut(token) else {
            return false;
        };
        sub.rx.close();
        stream.viewers.retain(|v| !v.tx.is_closed());
        let (rx, queue) = self.add_viewer(stream);
        sub.snapshot = stream.shared_snapshot();
        sub.epoch.clone_from(&stream.epoch);
        sub.last_seq = stream.last_seq;
        sub.rx = rx;
        sub.queue = queue;
        true
    }

    /// Registers a viewer queue with `stream` (L35 bounds); returns the viewer's ends.
    fn add_viewer(&self, stream: &mut Stream) -> (mpsc::Receiver<ViewerMsg>, Arc<ViewerQueue>) {
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
        (rx, queue)
    }

    /// The inspection object of docs/reliability.md §4.3, as JSON, with the stream's read `id`;
    /// `token` is `null` unless `show_token` (keys mode never shows a write token).
    pub fn inspect(&self, token: &str, show_token: bool) -> Option<String> {
        let inner = self.lock();
        let s = inner.streams.get(token)?;
        let mut window = Vec::new();
        s.write_window(&mut window);
        let digest = hex(&Sha256::digest(&window));
        let mut out = String::with_capacity(window.len() + 256);
        out.push_str("{\"token\":");
        if show_token {
            push_json_str(&mut out, token);
        } else {
            out.push_str("null");
        }
        out.push_str(",\"id\":");
        push_json_str(&mut out, &s.read_id);
        out.push_str(&format!(
            ",\"epoch\":\"{}\",\"first_seq\":{},\"last_seq\":{},\"count\":{},\"maxpoints\":{},\"bytes\":{},\"budget_limited\":{},\"writer_connected\":{},\"rejected_lines\":{},\"displaced_lines\":{},\"window\":",
            s.epoch,
            s.first_seq(),
            s.last_seq,
            s.count(),
            s.window.maxpoints(),
            s.window.bytes(),
            s.budget_limited,
            s.writer.is_some(),
            s.rejected_lines,
            s.displaced_lines
        ));
        out.push_str(&String::from_utf8_lossy(&window));
        out.push_str(&format!(",\"digest\":\"{digest}\"}}"));
        Some(out)
    }

    /// `(token, last_seq, count, writer_connected, viewers)` for every stream, sorted by token.
    pub fn list(&self) -> Vec<StreamSummary> {
        let inner = self.lock();
        let mut out: Vec<StreamSummary> = inner
            .streams
            .iter()
            .map(|(t, s)| StreamSummary {
                token: t.clone(),
                read_id: s.read_id.clone(),
                last_seq: s.last_seq,
                count: s.count(),
                writer_connected: s.writer.is_some(),
                n_viewers: s.viewers.iter().filter(|v| !v.tx.is_closed()).count(),
            })
            .collect();
        out.sort_by(|a, b| a.token.cmp(&b.token));
        out
    }

    /// Sends `reset` (shutdown) to every viewer.
    pub fn shutdown_viewers(&self) {
        let inner = self.lock();
        for s in inner.streams.values() {
            for v in &s.viewers {
                // A full queue drops it: the session also watches the shutdown signal.
                let _ = v.tx.try_send(ViewerMsg::Reset("shutdown"));
            }
        }
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
        maxpoints: usize,
        initial: Vec<(String, Vec<Value>)>,
        owner: &str,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let maxpoints = maxpoints.min(self.config.max_maxpoints);
        let created = !inner.streams.contains_key(token);
        if created {
            self.create_locked(inner, token, maxpoints, peer)?;
        }
        if inner.registered.insert(token.to_owned()) {
            self.store_put(Table::Registered, token, Some(Vec::new()));
        }
        if inner.retired.remove(token) {
            self.store_put(Table::Retired, token, None);
        }
        let Inner {
            streams,
            total_bytes,
            ..
        } = inner;
        let stream = streams.get_mut(token).ok_or(Status::INTERNAL)?;
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
        *total_bytes = (*total_bytes + stream.window.bytes()).saturating_sub(before);
        Ok(())
    }

    /// Resolves what a page or feed URL names: a read id, or (`allow_token`, open mode) a
    /// write token. Returns the token.
    pub fn resolve(&self, id: &str, allow_token: bool) -> Option<String> {
        let inner = self.lock();
        if let Some(t) = inner.by_read_id.get(id) {
            return Some(t.clone());
        }
        (allow_token && inner.streams.contains_key(id)).then(|| id.to_owned())
    }

    /// The read id of `token`'s stream.
    pub fn read_id(&self, token: &str) -> Option<String> {
        self.lock().streams.get(token).map(|s| s.read_id.clone())
    }

    /// L27: drops streams that ingest created and nobody has written, watched or bound to a
    /// figure for `idle_stream_ttl`. Returns how many went.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let ttl = self.config.idle_stream_ttl;
        let mut inner = self.lock();
        let Inner {
            streams,
            registered,
            by_read_id,
            total_bytes,
            ..
        } = &mut *inner;
        let mut gone = 0;
        streams.retain(|token, s| {
            s.viewers.retain(|v| !v.tx.is_closed());
            if s.writer.is_some() || !s.viewers.is_empty() {
                s.idle_since = now;
                return true;
            }
            let owned = registered.contains(token)
                || self
                    .config
                    .users
                    .as_ref()
                    .is_some_and(|u| u.snapshot().owner_of(token).is_some());
            if owned || now.saturating_duration_since(s.idle_since) < ttl {
                return true;
            }
            by_read_id.remove(&s.read_id);
            *total_bytes = total_bytes.saturating_sub(s.window.bytes());
            if self.journal.is_durable() {
                self.journal.push(Op::DropGen { gen: s.gen });
                self.journal.push(Op::DropStream {
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

    /// Creates `token`'s stream: L26 (streams), L25 (bytes), L43 (`peer`'s allowance).
    fn create_locked(
        &self,
        inner: &mut Inner,
        token: &str,
        maxpoints: usize,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if inner.streams.len() >= self.config.max_streams
            || inner.total_bytes >= self.config.total_bytes
        {
            self.metrics.limit_breach("L26");
            return Err(Status::UNAVAILABLE);
        }
        let per_hour = self.config.new_streams_per_peer;
        if let (Some(ip), true) = (peer, per_hour > 0) {
            let now = Instant::now();
            let burst = f64::from(per_hour);
            if inner.allowance.len() >= ALLOWANCE_PEERS {
                // Full buckets carry no information: forget them first.
                inner.allowance.retain(|_, (left, at)| {
                    *left + now.duration_since(*at).as_secs_f64() * burst / 3600.0 < burst
                });
            }
            let (left, at) = inner.allowance.entry(ip).or_insert((burst, now));
            *left = (*left + now.duration_since(*at).as_secs_f64() * burst / 3600.0).min(burst);
            *at = now;
            if *left < 1.0 {
                self.metrics.limit_breach("L43");
                return Err(Status::UNAVAILABLE);
            }
            *left -= 1.0;
        }
        let read_id = loop {
            let id = crate::files::random_id(12);
            if !inner.by_read_id.contains_key(&id) {
                break id;
            }
        };
        inner.by_read_id.insert(read_id.clone(), token.to_owned());
        inner.streams.insert(
            token.to_owned(),
            Stream::new(maxpoints, read_id, self.new_gen()),
        );
        self.metrics.streams.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = inner.streams.get(token) {
            self.store_meta(token, s);
        }
        Ok(())
    }

    /// `token` is no longer named by any figure of `owner`: if `owner`'s figure claimed its
    /// stream, a live writer ends with 449 and later use gets 403 (docs/protocol.md §4.2, §7.5).
    /// A stream claimed by nobody else's figure is left alone.
    pub fn retire_token(&self, token: &str, owner: &str) {
        let mut inner = self.lock();
        if inner
            .streams
            .get(token)
            .is_some_and(|s| s.claimed_by.as_deref() != Some(owner))
        {
            return;
        }
        if inner.retired.insert(token.to_owned()) {
            self.store_put(Table::Retired, token, Some(Vec::new()));
        }
        if inner.registered.remove(token) {
            self.store_put(Table::Registered, token, None);
        }
        if let Some(stream) = inner.streams.get_mut(token) {
            if let Some(w) = stream.writer.take() {
                w.displace(Status::RETRY_WITH);
            }
        }
    }

    fn bind_locked(&self, inner: &mut Inner, conn: &Arc<Conn>, token: &str) -> Result<(), Refusal> {
        if inner.retired.contains(token) {
            return Err(Status::FORBIDDEN);
        }
        if let Some(users) = &self.config.users {
            // Keys mode: only a token some user owns streams (a removed user's tokens stop).
            if users.snapshot().owner_of(token).is_none() {
                return Err(Status::NOT_FOUND);
            }
        }
        if !inner.streams.contains_key(token) {
            if !self.config.tokens_open
                && self.config.users.is_none()
                && !inner.registered.contains(token)
            {
                return Err(Status::NOT_FOUND);
            }
            self.create_locked(inner, token, self.config.default_maxpoints, conn.peer)?;
        }
        let stream = inner.streams.get_mut(token).ok_or(Status::INTERNAL)?;
        match &stream.writer {
            Some(w) if w.id == conn.id => Ok(()),
            Some(w) if !self.config.takeover => {
                let _ = w;
                Err(Status::LOCKED)
            }
            Some(w) => {
                // Takeover: the displaced connection stops applying for all its tokens at once,
                // because its next apply sees the flag under this same lock (I3).
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

    /// Journals `stream`'s metadata.
    fn store_meta(&self, token: &str, s: &Stream) -> u64 {
        if !self.journal.is_durable() {
            return 0;
        }
        self.journal.push(Op::Meta {
            token: token.to_owned(),
            record: s.meta().encode(),
        })
    }

    /// Journals `stream`'s whole window (compaction: its earlier lines go).
    fn store_snapshot(&self, s: &mut Stream) -> u64 {
        if !self.journal.is_durable() {
            return 0;
        }
        s.snap_seq = s.last_seq;
        self.journal.push(Op::Snapshot {
            gen: s.gen,
            seq: s.last_seq,
            record: s.snapshot_record(),
        })
    }

    /// Journals a new generation for `token`'s stream (its epoch changed): the old one's
    /// records go, the new one starts from a snapshot of the window as it is now.
    fn store_new_gen(&self, token: &str, s: &mut Stream) -> u64 {
        if !self.journal.is_durable() {
            return 0;
        }
        self.journal.push(Op::DropGen { gen: s.gen });
        s.gen = self.new_gen();
        self.store_meta(token, s);
        self.store_snapshot(s)
    }

    fn store_put(&self, table: Table, key: &str, value: Option<Vec<u8>>) {
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
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (table, key, _) in loaded.entries {
            match table {
                Table::Registered => {
                    inner.registered.insert(key);
                }
                Table::Retired => {
                    inner.retired.insert(key);
                }
                _ => {}
            }
        }
        // Decoding is the cost of a start-up (10 000 windows of 500 points): spread it over
        // the cores, then insert under the lock in one pass.
        let clean = loaded.clean;
        let budget = self.config.stream_bytes;
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
                            .map(|ls| rebuild(ls, clean, budget))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for r in rebuilt.into_iter().flatten() {
            report.dropped.extend(r.notes);
            let Some(mut s) = r.stream else {
                self.journal.push(Op::DropStream { token: r.token });
                continue;
            };
            if r.damaged {
                self.store_new_gen(&r.token, &mut s);
            } else if !clean {
                self.store_meta(&r.token, &s);
            }
            report.streams += 1;
            report.points += s.count();
            report.lines += r.lines;
            inner.total_bytes += s.window.bytes();
            inner.by_read_id.insert(s.read_id.clone(), r.token.clone());
            inner.streams.insert(r.token, s);
        }
        self.metrics
            .streams
            .store(inner.streams.len() as u64, Ordering::Relaxed);
        report
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a torn window: every mutation is
        // completed before any fallible call. Keep serving rather than poisoning forever.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One row of `GET /api/streams`.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// The token.
    pub token: String,
    /// The read id (pages and feeds).
    pub read_id: String,
    /// The newest seq.
    pub last_seq: u64,
    /// Window length.
    pub count: usize,
    /// A writer holds the token.
    pub writer_connected: bool,
    /// Subscribed viewers.
    pub n_viewers: usize,
}

impl Stream {
    fn new(maxpoints: usize, read_id: String, gen: u64) -> Stream {
        Stream {
            gen,
            snap_seq: 0,
            stored_counters: (0, 0),
            claimed_by: None,
            read_id,
            idle_since: Instant::now(),
            epoch: new_epoch(),
            last_seq: 0,
            window: Window::new(maxpoints),
            budget_limited: false,
            layout: Vec::new(),
            line: Vec::new(),
            writer: None,
            viewers: Vec::new(),
            snapshot: SharedSnapshot::default(),
            rejected_lines: 0,
            displaced_lines: 0,
        }
    }

    /// L41: would this update's `layout` or `line` patch grow the merged object past
    /// [`PATCH_BYTES`] (JCS size)? A line is at most 64 KiB (L18), but patches with new keys
    /// accumulate, so the merged result is what is bounded. Costs nothing for lines without a
    /// patch (the hot path).
    fn patch_too_large(&self, update: &Update) -> bool {
        let too_large = |current: &[(Str, Value)], patch: &[(Str, Value)]| {
            let mut merged = current.to_vec();
            merge(&mut merged, patch);
            let mut out = Vec::new();
            write_jcs(&Value::Object(merged), &mut out);
            out.len() > PATCH_BYTES
        };
        update
            .layout
            .as_ref()
            .is_some_and(|l| too_large(&self.layout, l))
            || (!update.line.is_empty() && too_large(&self.line, &update.line))
    }

    fn apply(&mut self, update: &Update, budget: usize, global_full: bool) -> u64 {
        let start_bytes = self.window.bytes();
        self.last_seq += 1;
        let seq = self.last_seq;
        // L24/L25: the oldest index goes until the window fits (I4). Under global pressure the
        // stream keeps its current size instead of growing.
        let limit = if global_full {
            start_bytes.min(budget)
        } else {
            budget
        };
        if global_full {
            self.budget_limited = true;
        }
        let (appends, replaces) = self.window.apply(seq, update, limit);
        if !update.line.is_empty() {
            merge(&mut self.line, &update.line);
        }
        if let Some(layout) = &update.layout {
            merge(&mut self.layout, layout);
        }
        // The op is for viewers only: a stream nobody watches (bulk ingest) skips building it.
        self.viewers.retain(|v| !v.tx.is_closed());
        if self.viewers.iter().all(|v| v.queue.is_lagged()) {
            return seq;
        }
        let fanout = Arc::new(self.encode_update(seq, update, &appends, &replaces));
        let n_bytes = fanout.n_bytes();
        for v in &self.viewers {
            if v.queue.is_lagged() {
                continue;
            }
            // L35, either bound: never block ingest on a viewer; it resets and resubscribes
            // (I5).
            if !v.queue.try_reserve(n_bytes)
                || v.tx.try_send(ViewerMsg::Update(fanout.clone())).is_err()
            {
                v.queue.mark_lagged();
            }
        }
        seq
    }

    /// The SSE event of one update, for viewers (see [`Fanout`]): encoded once, the op a slice
    /// of it.
    fn encode_update(
        &self,
        seq: u64,
        update: &Update,
        appends: &[(&str, &Value)],
        replaces: &[(&str, &Value)],
    ) -> Fanout {
        let mut seq_buf = itoa::Buffer::new();
        let seq_text = seq_buf.format(seq).as_bytes();
        let mut ev = Vec::with_capacity(160);
        ev.extend_from_slice(b"event: update\nid: ");
        ev.extend_from_slice(self.epoch.as_bytes());
        ev.push(b':');
        ev.extend_from_slice(seq_text);
        ev.extend_from_slice(b"\ndata: {\"epoch\":\"");
        ev.extend_from_slice(self.epoch.as_bytes());
        ev.extend_from_slice(b"\",\"from_seq\":");
        ev.extend_from_slice(seq_text);
        ev.extend_from_slice(b",\"to_seq\":");
        ev.extend_from_slice(seq_text);
        ev.extend_from_slice(b",\"data\":[");
        let op_start = ev.len();
        ev.extend_from_slice(b"{\"seq\":");
        ev.extend_from_slice(seq_text);
        if !appends.is_empty() {
            ev.extend_from_slice(b",\"append\":{");
            write_members(appends, true, &mut ev);
            ev.push(b'}');
        }
        if !replaces.is_empty() {
            ev.extend_from_slice(b",\"replace\":{");
            write_members(replaces, false, &mut ev);
            ev.push(b'}');
        }
        if !update.line.is_empty() {
            ev.extend_from_slice(b",\"line\":");
            write_jcs(&Value::Object(update.line.clone()), &mut ev);
        }
        if let Some(layout) = &update.layout {
            ev.extend_from_slice(b",\"layout\":");
            write_jcs(&Value::Object(layout.clone()), &mut ev);
        }
        ev.push(b'}');
        let op_end = ev.len();
        ev.extend_from_slice(b"]}\n\n");
        let event = Bytes::from(ev);
        Fanout {
            seq,
            op: event.slice(op_start..op_end),
            event,
        }
    }

    /// Starts a new history from `initial` arrays (a figure was created or replaced).
    fn restart(&mut self, initial: Vec<(String, Vec<Value>)>, budget: usize) {
        self.snapshot = SharedSnapshot::default();
        self.epoch = new_epoch();
        self.last_seq = 0;
        self.layout.clear();
        self.line.clear();
        // L24 holds for a figure's initial data too.
        self.window.restart(initial, budget);
    }

    /// The metadata record.
    fn meta(&self) -> StreamMeta {
        StreamMeta {
            gen: self.gen,
            read_id: self.read_id.clone(),
            epoch: self.epoch.clone(),
            maxpoints: self.window.maxpoints(),
            claimed_by: self.claimed_by.clone(),
            rejected_lines: self.rejected_lines,
            displaced_lines: self.displaced_lines,
            budget_limited: self.budget_limited,
        }
    }

    /// The window as a snapshot record.
    fn snapshot_record(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.window.bytes() + 256);
        records::encode_snapshot(
            self.last_seq,
            self.window.iter(),
            &self.layout,
            &self.line,
            &mut out,
        );
        out
    }

    /// Takes the window of a snapshot record (recovery), trimmed to maxpoints.
    fn restore(&mut self, state: records::WindowState) {
        self.last_seq = state.last_seq;
        self.layout = state.layout;
        self.line = state.line;
        self.window.restore(state.attrs);
    }

    fn count(&self) -> usize {
        self.window.count()
    }

    fn first_seq(&self) -> u64 {
        self.window.first_seq(self.last_seq)
    }

    /// The window as a JCS object `{attr: [values]}`.
    fn write_window(&self, out: &mut Vec<u8>) {
        self.window.write_jcs(out);
    }

    /// The snapshot's JSON, shared with the viewers that got it at this same point (see
    /// [`SharedSnapshot`]).
    fn shared_snapshot(&mut self) -> Bytes {
        let key = (self.last_seq, self.window.maxpoints());
        if self.snapshot.key == Some(key) {
            if let Some(text) = self.snapshot.text.upgrade() {
                return Bytes::from_owner(SnapshotText(text));
            }
        }
        let text = Arc::new(self.snapshot_json().into_bytes());
        self.snapshot = SharedSnapshot {
            key: Some(key),
            text: Arc::downgrade(&text),
        };
        Bytes::from_owner(SnapshotText(text))
    }

    fn snapshot_json(&self) -> String {
        let mut window = Vec::new();
        self.write_window(&mut window);
        let mut layout = Vec::new();
        write_jcs(&Value::Object(self.layout.clone()), &mut layout);
        let mut line = Vec::new();
        write_jcs(&Value::Object(self.line.clone()), &mut line);
        format!(
            "{{\"epoch\":\"{}\",\"first_seq\":{},\"last_seq\":{},\"maxpoints\":{},\"window\":{},\"layout\":{},\"line\":{}}}",
            self.epoch,
            self.first_seq(),
            self.last_seq,
            self.window.maxpoints(),
            String::from_utf8_lossy(&window),
            String::from_utf8_lossy(&layout),
            String::from_utf8_lossy(&line)
        )
    }
}

/// Appends `"attr":value` members; appends wrap each scalar in a one-element array, the shape
/// `Plotly.extendTraces` takes.
fn write_members(members: &[(&str, &Value)], wrap: bool, out: &mut Vec<u8>) {
    for (i, (attr, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_jcs_string(attr, out);
        out.push(b':');
        if wrap {
            out.push(b'[');
        }
        write_jcs(v, out);
        if wrap {
            out.push(b']');
        }
    }
}

/// Deep merge (docs/protocol.md §3.3 `layout`): objects merge, other values replace.
fn merge(into: &mut Vec<(Str, Value)>, patch: &[(Str, Value)]) {
    for (k, v) in patch {
        match (into.iter_mut().find(|(ik, _)| ik == k), v) {
            (Some((_, Value::Object(existing))), Value::Object(p)) => merge(existing, p),
            (Some((_, slot)), _) => *slot = v.detached(),
            (None, _) => into.push((Str::from(k.as_str()), v.detached())),
        }
    }
}

/// One stream as [`rebuild`] made it from its records.
#[derive(Debug)]
struct Rebuilt {
    token: String,
    /// `None` when its metadata was unreadable (dropped).
    stream: Option<Stream>,
    /// Something was dropped: it needs a new generation.
    damaged: bool,
    /// Lines replayed.
    lines: usize,
    /// What was dropped (DC6).
    notes: Vec<String>,
}

/// A stream from its metadata, snapshot and later lines, replayed through the same `apply` as
/// live lines, up to the first record that does not decode or does not follow (DC6). After an
/// unclean stop (`clean` false), or when something was dropped, it gets a new epoch (DC4).
fn rebuild(ls: LoadedStream, clean: bool, budget: usize) -> Rebuilt {
    let fp = Token::parse(ls.token.as_bytes())
        .map_or_else(|| "<invalid token>".to_owned(), |t| t.fingerprint());
    let mut out = Rebuilt {
        token: ls.token,
        stream: None,
        damaged: false,
        lines: 0,
        notes: Vec::new(),
    };
    let Some(meta) = StreamMeta::decode(&ls.meta) else {
        out.notes
            .push(format!("stream {fp}: metadata unreadable, stream dropped"));
        return out;
    };
    let mut s = Stream::new(meta.maxpoints, meta.read_id, meta.gen);
    s.epoch = meta.epoch;
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
    for (i, (seq, record)) in ls.lines.iter().enumerate() {
        let update = if *seq == s.last_seq + 1 && !out.damaged {
            records::decode_update(record)
        } else {
            None
        };
        let Some(update) = update else {
            out.notes.push(format!(
                "stream {fp}: line seq {seq} unreadable or out of order; it and the {} after it dropped",
                n_lines - i - 1
            ));
            out.damaged = true;
            break;
        };
        s.apply(&update, budget, false);
        out.lines += 1;
    }
    if !clean || out.damaged {
        s.epoch = new_epoch();
    }
    out.stream = Some(s);
    out
}

/// What [`Store::recover`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Streams restored.
    pub streams: usize,
    /// Points in their windows.
    pub points: usize,
    /// Lines replayed after the snapshots.
    pub lines: usize,
    /// What was damaged and dropped, one sentence each (DC6).
    pub dropped: Vec<String>,
}

/// Lines between a stream's snapshots (docs/storage.md "Compaction"): a window's worth, so
/// disk holds at most about two windows of a stream and rewriting the window costs each line
/// about one more value's bytes.
fn snapshot_every(maxpoints: usize) -> u64 {
    maxpoints.max(64) as u64
}

/// L41: a stream's layout, and its trace `line` object, after every patch (JCS bytes).
pub const PATCH_BYTES: usize = 64 * 1024;

/// L43: peers whose creation allowance is remembered before full buckets are forgotten.
const ALLOWANCE_PEERS: usize = 65_536;

/// maxpoints as plotly.js reads it (docs/protocol.md §3.4): truncated, clamped to 0..=max.
pub fn clamp_maxpoints(mp: f64, max: usize) -> usize {
    if !mp.is_finite() || mp <= 0.0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped below
    let n = mp.trunc().min(max as f64) as usize;
    n
}

fn new_epoch() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    hex(&b)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    let mut buf = Vec::new();
    write_jcs_string(s, &mut buf);
    out.push_str(&String::from_utf8_lossy(&buf));
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use plotstream_proto::update::parse_update;
    use plotstream_proto::Limits;

    use super::*;
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
        s.bind_trace("tok1", 3, Vec::new(), "u", None).unwrap();
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
        s.bind_trace("tok1", 500, Vec::new(), "victim", None)
            .unwrap();
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        let before = inspect(&s, "tok1");
        s.bind_trace("tok1", 1, vec![("x".into(), vec![])], "mallory", None)
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
        s.bind_trace("tok1", 10, Vec::new(), "u", None).unwrap();
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        s.retire_token("tok1", "u");
        assert_eq!(c.kick_status(), Some(Status::RETRY_WITH));
        let c2 = s.new_conn();
        assert_eq!(apply(&s, &c2, "tok1", r#"{"x":2}"#), Err(Status::FORBIDDEN));
        s.bind_trace("tok1", 10, Vec::new(), "u", None).unwrap();
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
        s.bind_trace("tok1", 500, Vec::new(), "u", None).unwrap();
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
        s.bind_trace("tok1", 2, Vec::new(), "u", None).unwrap();
        let after_restart = s.subscribe("tok1").unwrap().unwrap();
        assert_ne!(json(&after_restart)["epoch"], json(&a)["epoch"]);
        assert_eq!(json(&after_restart)["last_seq"], 0);
        // The same key in a new epoch: never the old epoch's snapshot.
        s.bind_trace(
            "tok1",
            2,
            vec![("x".to_owned(), vec![Value::Number(7.0)])],
            "u",
            None,
        )
        .unwrap();
        let again = s.subscribe("tok1").unwrap().unwrap();
        assert_eq!(json(&again)["window"]["x"], serde_json::json!([7]));
        assert_eq!(json(&a)["last_seq"], 5, "a held snapshot never changes");
    }

    #[test]
    fn a_figure_restart_gives_viewers_an_epoch_reset() {
        let (s, c) = store(StoreConfig::default());
        s.bind_trace("tok1", 500, Vec::new(), "u", None).unwrap();
        apply(&s, &c, "tok1", r#"{"x":1}"#).unwrap();
        let mut sub = s.subscribe("tok1").unwrap().unwrap();
        let epoch = sub.epoch.clone();
        s.bind_trace(
            "tok1",
            80,
            vec![("x".to_owned(), vec![Value::Number(9.0)])],
            "u",
            None,
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

    /// Everything a viewer sees comes back after a clean close: window (through snapshots and
    /// lines), layout, line, read id, epoch, maxpoints, claims, registered and retired tokens.
    #[test]
    fn a_store_comes_back_exactly_from_its_records() {
        let dir = std::env::temp_dir().join(format!("plotstream-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (s, c, thread) = journaled(&dir);
        s.bind_trace(
            "tok1",
            5,
            vec![("x".into(), vec![Value::Number(0.5)])],
            "alice",
            None,
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
