//! One stream's state changes: applying a line (window, patches, fan-out), the viewers'
//! event, restarts, snapshots and the metadata record; and the line made ready before any lock.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use tokio::time::Instant;

use bytes::Bytes;
use plotstream_proto::canonical::{write_jcs, write_jcs_string};
use plotstream_proto::json::Str;
use plotstream_proto::{Maxpoints, Update, Value};

use super::queue::{Fanout, ViewerMsg, ViewerSlot};
use super::writer::Conn;
use crate::durable::Lines;
use crate::records::{self, StreamMeta};
use crate::text::hex;
use crate::window::Window;

#[derive(Debug)]
pub(super) struct Stream {
    /// Dropped from the index (L27) while someone held its handle: look it up again.
    pub(super) removed: bool,
    /// The generation its records are stored under (docs/storage.md "Records"); a new one
    /// with every new epoch.
    pub(super) gen: u64,
    /// On several nodes: the generations of its epoch before `gen` (`StreamMeta::prev`).
    pub(super) prev_gens: Vec<u64>,
    /// The seq of its last stored snapshot: lines after it are stored one by one.
    pub(super) snap_seq: u64,
    /// On several nodes (docs/storage.md "Several nodes"): the fence under which this node
    /// owns the stream, or 0 when another node may (this copy follows Redis).
    pub(super) fence: u64,
    /// On several nodes: this copy may be behind Redis (another node took the stream, or
    /// announced a new owner): the next read loads it again.
    pub(super) stale: bool,
    /// `(rejected_lines, displaced_lines)` as last stored.
    pub(super) stored_counters: (u64, u64),
    /// The user whose figure created (or, in keys mode, owns) the stream: only its figures
    /// reshape or retire it.
    pub(super) claimed_by: Option<String>,
    /// The id pages and feeds use (12 random `[a-z0-9]`): never the write token.
    pub(super) read_id: String,
    /// When the stream last had a writer or a viewer (L27).
    pub(super) idle_since: Instant,
    pub(super) epoch: String,
    pub(super) last_seq: u64,
    /// The values, maxpoints and byte count (L24): a plain value of its own.
    pub(super) window: Window,
    pub(super) budget_limited: bool,
    pub(super) layout: Vec<(Str, Value)>,
    pub(super) line: Vec<(Str, Value)>,
    pub(super) writer: Option<Arc<Conn>>,
    /// On several nodes: the writer that left last, until its lines are stored (a fence that
    /// refuses them must still end it with 423, not 200).
    pub(super) last_writer: Option<Weak<Conn>>,
    pub(super) viewers: Vec<ViewerSlot>,
    /// The snapshot last handed to a viewer, kept only while a viewer still holds it: viewers
    /// that subscribe at the same point share one copy of a window of up to L24's 4 MiB.
    pub(super) snapshot: SharedSnapshot,
    pub(super) rejected_lines: u64,
    pub(super) displaced_lines: u64,
    /// Its history as this node builds it (docs/history.md), when the store keeps history.
    pub(super) history: Option<Box<super::history::Kept>>,
    /// Its lines not queued to the journal yet: a writer's lines of one read are queued
    /// together (`Store::flush_lines`), and before anything else is queued for the stream.
    pub(super) lines: Lines,
    /// The connection that last noted this stream as one to flush (`Conn::buffered`).
    pub(super) lines_by: Option<u64>,
}

/// The snapshot a stream last handed out, without keeping it alive: only viewers hold it
/// (their `Bytes`), so an idle stream keeps no second copy of its window.
///
/// Invariant: while the key matches, the snapshot is current. Every change to what a snapshot
/// shows moves its seq (`Stream::apply`, including L24/L25 eviction), its maxpoints (`trim`
/// after a new maxpoints) or restarts the stream (`restart` clears this).
#[derive(Debug, Default)]
pub(super) struct SharedSnapshot {
    /// `(last_seq, maxpoints)` when it was taken.
    pub(super) key: Option<(u64, usize)>,
    pub(super) text: Weak<Vec<u8>>,
}

/// L41: a stream's layout, and its trace `line` object, after every patch (JCS bytes).
pub const PATCH_BYTES: usize = 64 * 1024;

thread_local! {
    /// The line being applied on this thread (see [`Prepared`]).
    pub(super) static PREPARED: RefCell<Prepared> = RefCell::new(Prepared::default());
}

/// A line made ready before any lock is taken: its values sized for L24/L25, its journal
/// record encoded and, when someone watches, its viewers' op. One per thread, reused line after
/// line, so none of it allocates in the steady state.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Each value's size, in [`crate::window::size_values`] order.
    pub(super) sizes: Vec<usize>,
    scratch: Vec<u8>,
    /// The journal record (`records::encode_update`); empty in memory.
    pub(super) record: Vec<u8>,
    /// The viewers' op after its seq: `,"append":{..},"replace":{..},"line":..,"layout":..}`.
    pub(super) op_tail: Vec<u8>,
    /// `op_tail` is this line's.
    op_ready: bool,
}

impl Prepared {
    pub(super) fn sizes_and_record(&mut self, update: &Update, durable: bool) {
        crate::window::size_values(update, &mut self.sizes, &mut self.scratch);
        self.record.clear();
        if durable {
            records::encode_update(update, &mut self.record);
        }
        self.op_ready = false;
    }

    /// Encodes the viewers' op once per line: scalars append (each wrapped in a one-element
    /// array, the shape `Plotly.extendTraces` takes), arrays replace.
    pub(super) fn encode_op(&mut self, update: &Update) {
        if self.op_ready {
            return;
        }
        let out = &mut self.op_tail;
        out.clear();
        let is_array = |v: &Value| matches!(v, Value::Array(_));
        let members = |arrays: bool| {
            update
                .data
                .iter()
                .filter(move |(_, v)| is_array(v) == arrays)
                .map(|(k, v)| (k.as_str(), v))
        };
        if members(false).next().is_some() {
            out.extend_from_slice(b",\"append\":{");
            write_members(members(false), true, out);
            out.push(b'}');
        }
        if members(true).next().is_some() {
            out.extend_from_slice(b",\"replace\":{");
            write_members(members(true), false, out);
            out.push(b'}');
        }
        if !update.line.is_empty() {
            out.extend_from_slice(b",\"line\":");
            write_jcs(&Value::Object(update.line.clone()), out);
        }
        if let Some(layout) = &update.layout {
            out.extend_from_slice(b",\"layout\":");
            write_jcs(&Value::Object(layout.clone()), out);
        }
        out.push(b'}');
        self.op_ready = true;
    }
}

/// The owner of a shared snapshot's bytes, for `Bytes::from_owner`.
pub(super) struct SnapshotText(pub(super) Arc<Vec<u8>>);

impl AsRef<[u8]> for SnapshotText {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Stream {
    pub(super) fn new(maxpoints: Maxpoints, read_id: String, gen: u64) -> Stream {
        Stream {
            removed: false,
            gen,
            prev_gens: Vec::new(),
            snap_seq: 0,
            fence: 0,
            stale: false,
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
            last_writer: None,
            viewers: Vec::new(),
            snapshot: SharedSnapshot::default(),
            rejected_lines: 0,
            displaced_lines: 0,
            history: None,
            lines: Lines::default(),
            lines_by: None,
        }
    }

    /// L41: would this update's `layout` or `line` patch grow the merged object past
    /// [`PATCH_BYTES`] (JCS size)? A line is at most 64 KiB (L18), but patches with new keys
    /// accumulate, so the merged result is what is bounded. Costs nothing for lines without a
    /// patch (the hot path).
    pub(super) fn patch_too_large(&self, update: &Update) -> bool {
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

    /// Applies `update` (made ready as `prepared`) as the next seq and fans it out.
    pub(super) fn apply(
        &mut self,
        update: &Update,
        prepared: &mut Prepared,
        budget: usize,
        global_full: bool,
    ) -> u64 {
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
        self.window.apply_sized(seq, update, &prepared.sizes, limit);
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
        // Encoded before the lock unless a viewer subscribed meanwhile.
        prepared.encode_op(update);
        let fanout = Arc::new(self.encode_update(seq, &prepared.op_tail));
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

    /// The SSE event of one update, for viewers (see [`Fanout`]): the epoch and seq around the
    /// op encoded before the lock, the op a slice of it.
    pub(super) fn encode_update(&self, seq: u64, op_tail: &[u8]) -> Fanout {
        let mut seq_buf = itoa::Buffer::new();
        let seq_text = seq_buf.format(seq).as_bytes();
        let mut ev = Vec::with_capacity(128 + op_tail.len());
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
        ev.extend_from_slice(op_tail);
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
    pub(super) fn restart(&mut self, initial: Vec<(String, Vec<Value>)>, budget: usize) {
        self.snapshot = SharedSnapshot::default();
        self.epoch = new_epoch();
        self.prev_gens.clear();
        self.last_seq = 0;
        self.layout.clear();
        self.line.clear();
        // L24 holds for a figure's initial data too.
        self.window.restart(initial, budget);
    }

    /// The metadata record.
    pub(super) fn meta(&self) -> StreamMeta {
        StreamMeta {
            gen: self.gen,
            prev: self.prev_gens.clone(),
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
    pub(super) fn snapshot_record(&self) -> Vec<u8> {
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
    pub(super) fn restore(&mut self, state: records::WindowState) {
        self.last_seq = state.last_seq;
        self.layout = state.layout;
        self.line = state.line;
        self.window.restore(state.attrs);
    }

    pub(super) fn count(&self) -> usize {
        self.window.count()
    }

    pub(super) fn first_seq(&self) -> u64 {
        self.window.first_seq(self.last_seq)
    }

    /// The window as a JCS object `{attr: [values]}`.
    pub(super) fn write_window(&self, out: &mut Vec<u8>) {
        self.window.write_jcs(out);
    }

    /// The snapshot's JSON, shared with the viewers that got it at this same point (see
    /// [`SharedSnapshot`]).
    pub(super) fn shared_snapshot(&mut self) -> Bytes {
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

    pub(super) fn snapshot_json(&self) -> String {
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
pub(super) fn write_members<'a>(
    members: impl Iterator<Item = (&'a str, &'a Value)>,
    wrap: bool,
    out: &mut Vec<u8>,
) {
    for (i, (attr, v)) in members.enumerate() {
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
pub(super) fn merge(into: &mut Vec<(Str, Value)>, patch: &[(Str, Value)]) {
    for (k, v) in patch {
        match (into.iter_mut().find(|(ik, _)| ik == k), v) {
            (Some((_, Value::Object(existing))), Value::Object(p)) => merge(existing, p),
            (Some((_, slot)), _) => *slot = v.detached(),
            (None, _) => into.push((Str::from(k.as_str()), v.detached())),
        }
    }
}

/// Lines between a stream's snapshots (docs/storage.md "Compaction"): a window's worth, so
/// disk holds at most about two windows of a stream and rewriting the window costs each line
/// about one more value's bytes.
pub(super) fn snapshot_every(maxpoints: usize) -> u64 {
    maxpoints.max(64) as u64
}

pub(super) fn new_epoch() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    hex(&b)
}
