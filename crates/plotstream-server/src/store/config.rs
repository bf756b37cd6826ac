//! The store's policy: tokens, duplicates, maxpoints, budgets (L23–L27, L35, L37, L43, L54),
//! history (L59, L60).

use std::sync::Arc;
use std::time::Duration;

use plotstream_proto::Maxpoints;

use crate::users::Users;

/// Store-wide policy.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `--tokens open`: unknown tokens create streams. Otherwise only registered ones.
    pub tokens_open: bool,
    /// `--on-duplicate takeover` (true) or `reject`.
    pub takeover: bool,
    /// `--default-maxpoints` (L23).
    pub default_maxpoints: Maxpoints,
    /// `--max-maxpoints` (L23).
    pub max_maxpoints: Maxpoints,
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
    /// On Redis (`--redis`), where several nodes may share the state: a node changes a stream
    /// only while it owns it under a fence (docs/storage.md "Several nodes").
    pub clustered: bool,
    /// What history keeps (docs/history.md).
    pub history: HistoryConfig,
}

/// What a stream's history keeps (docs/history.md "Retention"), with a durable store only.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// `--retention`: points older than this go (whole chunks); zero keeps no history.
    pub retention: Duration,
    /// L59 (`--history-stream-mb`): a stream's history bytes; past it its oldest chunks go.
    pub stream_bytes: u64,
    /// L60 (`--history-total-mb`): all streams' history bytes; past it the oldest chunks of
    /// any stream go.
    pub total_bytes: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: Duration::from_secs(7 * 24 * 3600),
            stream_bytes: 256 << 20,
            total_bytes: 4 << 30,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tokens_open: true,
            takeover: true,
            default_maxpoints: Maxpoints::DEFAULT,
            max_maxpoints: Maxpoints::MAX,
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
            clustered: false,
            history: HistoryConfig::default(),
        }
    }
}
