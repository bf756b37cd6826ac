//! Server-Sent Events for viewers (docs/reliability.md §4.4): `snapshot` first, then `update`
//! events coalesced by `interval`, `reset` + a fresh snapshot when the viewer lagged or the
//! stream's history changed, and `reset` (shutdown) at the end. Every `data:` line is one JSON
//! text whose CR and LF are escaped by construction, so an event can never be split (C18).
//!
//! One session serves one stream (`/api/streams/{token}/events`) or every streamed trace of a
//! figure (`/api/plots/{fid}/events`, whose events carry a `trace` index).
//!
//! What one session holds is bounded while its socket takes nothing (L35): an update is
//! encoded once by the fan-out and shared (`Bytes`) by every viewer's queue, pending list and
//! output; a lone update goes out as its shared event, and coalesced or figure-feed events
//! frame the shared ops with a few bytes of their own. Every update counts against its
//! viewer's byte bound until it is written to the socket, and the session writes its output
//! before it takes more from its queue, so a viewer whose socket is full is lagged (`reset`
//! and a fresh snapshot) instead of accumulating output.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes};
use plotstream_proto::canonical::write_jcs_string;
use plotstream_proto::head::RequestHead;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::response::Response;
use crate::shared::Shared;
use crate::store::{Fanout, Store, StoreConfig, Subscription, ViewerMsg};
use crate::transport::{close_gracefully, Io};

/// What a session follows.
#[derive(Debug, Clone)]
pub enum Feed {
    /// One stream.
    Stream(String),
    /// A figure: its fid, and per trace the token (if streamed) and the trace's static JSON.
    Plot {
        /// The figure id.
        fid: String,
        /// The figure layout as JSON.
        layout: String,
        /// Per trace: token and trace JSON (attributes without data arrays).
        traces: Vec<(Option<String>, String)>,
    },
}

/// Serves one viewer until it leaves, lags three times in 60 s, stalls (L36) or shutdown.
pub async fn serve(mut stream: Io, head: &RequestHead, feed: Feed, shared: Arc<Shared>) {
    let interval = interval_of(head.query(), shared.store.config().viewer_interval_max);
    let tokens: Vec<(usize, String)> = match &feed {
        Feed::Stream(t) => vec![(0, t.clone())],
        Feed::Plot { traces, .. } => traces
            .iter()
            .enumerate()
            .filter_map(|(i, (t, _))| Some((i, t.clone()?)))
            .collect(),
    };
    let mut traces = Vec::new();
    for (index, token) in tokens {
        crate::nodes::load(&shared, &token).await;
        match shared.store.subscribe(&token) {
            Ok(Some(sub)) => traces.push(Trace::new(index, token, sub)),
            Ok(None) if matches!(feed, Feed::Plot { .. }) => {}
            Ok(None) => {
                let r = Response::json(404, r#"{"errors":[{"message":"Not found"}]}"#);
                close_gracefully(stream, &r.encode(), true, &shared).await;
                return;
            }
            Err(status) => {
                close_gracefully(stream, &Response::error(status).encode(), true, &shared).await;
                return;
            }
        }
    }
    let resume = last_event_id(head);
    let mut session = Session::new(feed, traces, interval, shared.store.config());
    if let (Some((epoch, seq)), Feed::Stream(_), [t]) =
        (&resume, &session.feed, &session.traces[..])
    {
        // A reconnecting EventSource that already has everything up to the stream's newest
        // seq in this epoch (a clean restart, a dropped proxy) resumes without a snapshot:
        // its next event is the update after it (docs/storage.md DC4).
        if *epoch == t.sub.epoch && *seq == t.sub.last_seq {
            session.out = Outbox::default();
            session.out.push(Bytes::from_static(SSE_HEAD));
        }
    }
    session.set_upstream(shared.store.upstream_up());
    let mut shutdown = shared.shutdown.clone();
    let mut keepalive = tokio::time::interval(shared.config.keepalive);
    keepalive.tick().await;
    let mut probe = [0u8; 64];
    let mut staging = Vec::new();
    loop {
        if !session.out.is_empty() {
            if !write_out(&mut stream, &mut session.out, &mut staging, &shared).await {
                break;
            }
            session.handle_written();
        }
        if session.handle_lagged(&shared.store, &shared.metrics, Instant::now()) == Flow::Close {
            break;
        }
        if !session.out.is_empty() {
            // A reset and its snapshot go out now, not with the next update or keepalive.
            continue;
        }
        let flush_at = session.poll_timeout(Instant::now());
        let flush_sleep = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let traces = &mut session.traces;
        let recv = poll_fn(|cx| {
            for (i, t) in traces.iter_mut().enumerate() {
                if let Poll::Ready(msg) = t.sub.rx.poll_recv(cx) {
                    return Poll::Ready((i, msg));
                }
            }
            Poll::Pending
        });
        let flow = tokio::select! {
            (i, msg) = recv => session.handle_msg(&shared.store, i, msg, Instant::now()),
            () = flush_sleep => {
                session.handle_timeout(Instant::now());
                Flow::Continue
            }
            _ = keepalive.tick() => {
                session.out.push(Bytes::from_static(b": keepalive\n\n"));
                Flow::Continue
            }
            res = stream.read(&mut probe) => {
                // A viewer sends nothing after its head; EOF or an error means it left.
                if matches!(res, Ok(0) | Err(_)) {
                    break;
                }
                Flow::Continue
            }
            _ = shutdown.changed() => {
                session.handle_shutdown();
                Flow::Close
            }
        };
        if flow == Flow::Close {
            if !session.out.is_empty() {
                let _ = write_out(&mut stream, &mut session.out, &mut staging, &shared).await;
            }
            break;
        }
    }
    let _ = stream.shutdown().await;
}

/// The head of every SSE response.
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n";

/// `Last-Event-ID: <epoch>:<seq>` as an EventSource resends it on reconnect, if well-formed.
pub(crate) fn last_event_id(head: &RequestHead) -> Option<(String, u64)> {
    let v = std::str::from_utf8(head.field("last-event-id")?)
        .ok()?
        .trim();
    let (epoch, seq) = v.split_once(':')?;
    if epoch.is_empty() || epoch.len() > 16 || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((epoch.to_owned(), seq.parse().ok()?))
}

/// `?interval=MS`: the coalescing interval, at most `max` (L35 note: a viewer that asked for
/// years grew its pending updates with ingest, and `u64::MAX` overflowed the deadline); 50 ms
/// when absent or not a whole number, and that default is held to `max` too (a bound under
/// 50 ms used to hold only for viewers that asked).
pub(crate) fn interval_of(query: Option<&str>, max: Duration) -> Duration {
    query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("interval=")))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_INTERVAL, Duration::from_millis)
        .min(max)
}

/// What the driver does after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
enum Flow {
    /// Go on serving.
    Continue,
    /// Write what is in `out`, then close.
    Close,
}

/// One followed stream of a session.
struct Trace {
    /// Its index in the figure (0 for a single-stream feed).
    index: usize,
    token: String,
    sub: Subscription,
    /// Updates received and not yet flushed into the output, oldest first.
    pending: Vec<Arc<Fanout>>,
    /// Their L35 bytes.
    pending_bytes: usize,
    /// L35 bytes flushed into the output and not yet written; given back to the queue once
    /// they are.
    unwritten_bytes: usize,
}

impl Trace {
    fn new(index: usize, token: String, sub: Subscription) -> Trace {
        Trace {
            index,
            token,
            sub,
            pending: Vec::new(),
            pending_bytes: 0,
            unwritten_bytes: 0,
        }
    }
}

/// SSE bytes on their way to the socket, in order: shared chunks (updates, snapshots) and the
/// session's own framing. Nothing here is a per-viewer copy of an update.
#[derive(Debug, Default)]
struct Outbox {
    chunks: VecDeque<Bytes>,
}

impl Outbox {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.chunks.push_back(chunk);
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn clear(&mut self) {
        self.chunks.clear();
    }

    /// Everything in order, as one buffer.
    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

/// One viewer session without I/O, in quinn's shape: queued messages, the flush timer and
/// shutdown come in through `handle_*`, SSE bytes go out through `out`, and `poll_timeout`
/// says when the coalesced updates are due. The driver in [`serve`] owns the socket, writes
/// `out` whole before it receives again, and then calls `handle_written`.
struct Session {
    feed: Feed,
    multi: bool,
    traces: Vec<Trace>,
    interval: Duration,
    /// L35: pending updates are flushed early at this many, or at `max_pending_bytes`: half
    /// of each bound, so a viewer that reads keeps the other half for what queues meanwhile.
    max_pending: usize,
    max_pending_bytes: usize,
    last_flush: Option<Instant>,
    lag_times: Vec<Instant>,
    /// What the viewer was last told of this node's link to Redis (several nodes).
    upstream: bool,
    /// SSE bytes for the socket.
    out: Outbox,
}

impl Session {
    /// A session for `traces` (already subscribed): the response head and the snapshot.
    fn new(feed: Feed, traces: Vec<Trace>, interval: Duration, config: &StoreConfig) -> Session {
        let mut out = Outbox::default();
        out.push(Bytes::from_static(SSE_HEAD));
        snapshot_event(&feed, &traces, &mut out);
        Session {
            multi: matches!(feed, Feed::Plot { .. }),
            feed,
            traces,
            interval,
            max_pending: (config.viewer_queue / 2).max(1),
            max_pending_bytes: (config.viewer_queue_bytes / 2).max(1),
            last_flush: None,
            lag_times: Vec::new(),
            upstream: true,
            out,
        }
    }

    /// When the pending updates are due, if any are pending.
    fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.traces.iter().all(|t| t.pending.is_empty()) {
            return None;
        }
        Some(self.last_flush.map_or(now, |t| t + self.interval))
    }

    /// L35: a trace whose queue overflowed gets `reset` (lagged) and a fresh snapshot, never a
    /// silent gap; the third time in 60 s the viewer is dropped.
    fn handle_lagged(&mut self, store: &Store, metrics: &Metrics, now: Instant) -> Flow {
        let lagged: Vec<usize> = (0..self.traces.len())
            .filter(|&i| self.traces[i].sub.queue.is_lagged())
            .collect();
        if lagged.is_empty() {
            return Flow::Continue;
        }
        self.lag_times
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        self.lag_times.push(now);
        metrics.viewer_reset("lagged");
        metrics.limit_breach("L35");
        if self.lag_times.len() >= 3 {
            metrics.viewers_dropped.fetch_add(1, Ordering::Relaxed);
            self.out.clear();
            return Flow::Close;
        }
        self.resubscribe(store, &lagged, "lagged")
    }

    /// A message received from trace `i`'s queue, then everything else queued there. Every
    /// message is handled, a `Reset` behind updates included: a drain that stopped at (and so
    /// dropped) a queued reset sent the next epoch's updates under the old epoch (I5). Once
    /// the pending updates reach half an L35 bound they are flushed and the drain stops, so
    /// the driver writes them before it takes more.
    fn handle_msg(
        &mut self,
        store: &Store,
        i: usize,
        msg: Option<ViewerMsg>,
        now: Instant,
    ) -> Flow {
        let Some(mut msg) = msg else {
            return Flow::Close;
        };
        loop {
            match msg {
                ViewerMsg::Update(u) => {
                    let t = &mut self.traces[i];
                    t.sub.last_seq = u.seq;
                    t.pending_bytes += u.n_bytes();
                    t.pending.push(u);
                    if t.pending.len() >= self.max_pending
                        || t.pending_bytes >= self.max_pending_bytes
                    {
                        self.handle_timeout(now);
                        return Flow::Continue;
                    }
                }
                ViewerMsg::Reset("epoch") => {
                    // The updates before it belong to the old epoch: out they go, then the
                    // reset and a snapshot of the new one; its queue is a fresh one.
                    self.flush_all();
                    if self.resubscribe(store, &[i], "epoch") == Flow::Close {
                        return Flow::Close;
                    }
                }
                ViewerMsg::Reset(reason) => {
                    self.flush_all();
                    reset_event(&self.traces[i], reason, None, self.multi, &mut self.out);
                    return Flow::Close;
                }
                ViewerMsg::Upstream(up) => self.set_upstream(up),
            }
            match self.traces[i].sub.rx.try_recv() {
                Ok(next) => msg = next,
                // Empty, or closed (the next receive says so).
                Err(_) => break,
            }
        }
        // The first update after a quiet period never waits.
        let quiet = self
            .last_flush
            .is_none_or(|t| now.duration_since(t) >= self.interval);
        if (self.interval.is_zero() || quiet) && self.traces.iter().any(|t| !t.pending.is_empty()) {
            self.handle_timeout(now);
        }
        Flow::Continue
    }

    /// Tells the viewer, once per change, whether this node reaches Redis (several nodes):
    /// `status` `{"upstream":"reconnecting"}` while it does not (the viewer keeps its window),
    /// `{"upstream":"ok"}` when it does again. Updates before it go out first.
    fn set_upstream(&mut self, up: bool) {
        if up == self.upstream {
            return;
        }
        self.upstream = up;
        self.flush_all();
        self.out.push(Bytes::from_static(if up {
            b"event: status\ndata: {\"upstream\":\"ok\"}\n\n"
        } else {
            b"event: status\ndata: {\"upstream\":\"reconnecting\"}\n\n"
        }));
    }

    /// The flush timer fired: every pending update goes out.
    fn handle_timeout(&mut self, now: Instant) {
        self.flush_all();
        self.last_flush = Some(now);
    }

    /// The driver wrote all of `out`: its updates stop counting against the L35 byte bound.
    fn handle_written(&mut self) {
        for t in &mut self.traces {
            t.sub.queue.release(std::mem::take(&mut t.unwritten_bytes));
        }
    }

    /// The server is stopping: what is pending, then `reset` (shutdown).
    fn handle_shutdown(&mut self) {
        self.flush_all();
        match self.traces.first() {
            Some(t) => reset_event(t, "shutdown", None, self.multi, &mut self.out),
            None => self.out.push(Bytes::from_static(
                b"event: reset\ndata: {\"reason\":\"shutdown\"}\n\n",
            )),
        }
    }

    /// Every trace's pending updates become one `update` event each: a lone update of a
    /// single-stream feed is its shared event, others are framed here around the shared ops.
    fn flush_all(&mut self) {
        for t in &mut self.traces {
            let (Some(first), Some(last)) = (t.pending.first(), t.pending.last()) else {
                continue;
            };
            if !self.multi && t.pending.len() == 1 {
                self.out.push(first.event.clone());
            } else {
                let mut head = event_head("update", &t.sub.epoch, last.seq);
                head.push(b'{');
                if self.multi {
                    head.extend_from_slice(b"\"trace\":");
                    head.extend_from_slice(itoa::Buffer::new().format(t.index).as_bytes());
                    head.push(b',');
                }
                head.extend_from_slice(b"\"epoch\":\"");
                head.extend_from_slice(t.sub.epoch.as_bytes());
                head.extend_from_slice(b"\",\"from_seq\":");
                head.extend_from_slice(itoa::Buffer::new().format(first.seq).as_bytes());
                head.extend_from_slice(b",\"to_seq\":");
                head.extend_from_slice(itoa::Buffer::new().format(last.seq).as_bytes());
                head.extend_from_slice(b",\"data\":[");
                self.out.push(Bytes::from(head));
                for (k, u) in t.pending.iter().enumerate() {
                    if k > 0 {
                        self.out.push(Bytes::from_static(b","));
                    }
                    self.out.push(u.op.clone());
                }
                self.out.push(Bytes::from_static(b"]}\n\n"));
            }
            t.pending.clear();
            t.unwritten_bytes += std::mem::take(&mut t.pending_bytes);
        }
    }

    /// Replaces the subscriptions of `which` traces with fresh ones and announces it: `reset`,
    /// then a snapshot (of that trace for a figure feed, of the stream otherwise).
    fn resubscribe(&mut self, store: &Store, which: &[usize], reason: &str) -> Flow {
        for &i in which {
            let t = &mut self.traces[i];
            t.pending.clear();
            t.pending_bytes = 0;
            // The old queue goes with its count; what it had in `out` is written all the same.
            t.unwritten_bytes = 0;
            reset_event(t, reason, Some(t.sub.last_seq), self.multi, &mut self.out);
            if !store.resubscribe(&t.token, &mut t.sub) {
                return Flow::Close;
            }
            if self.multi {
                let mut head = event_head("snapshot", &t.sub.epoch, t.sub.last_seq);
                head.extend_from_slice(b"{\"trace\":");
                head.extend_from_slice(itoa::Buffer::new().format(t.index).as_bytes());
                head.extend_from_slice(b",\"stream\":");
                self.out.push(Bytes::from(head));
                self.out.push(t.sub.snapshot.clone());
                self.out.push(Bytes::from_static(b"}\n\n"));
            }
        }
        if !self.multi {
            snapshot_event(&self.feed, &self.traces, &mut self.out);
        }
        // A status message that found the queue full marked it lagged (`set_upstream`).
        self.set_upstream(store.upstream_up());
        Flow::Continue
    }
}

/// Writes all of `out`. Chunks of at least [`DIRECT_WRITE`] bytes are written in place; runs
/// of smaller ones are gathered into `staging` (at most [`STAGING`] bytes, reused), so framing
/// costs no system call of its own. L36: a write that makes no progress for `write_timeout`
/// drops the viewer.
async fn write_out(
    stream: &mut Io,
    out: &mut Outbox,
    staging: &mut Vec<u8>,
    shared: &Shared,
) -> bool {
    loop {
        let single = out.chunks.len() == 1;
        let Some(front) = out.chunks.front_mut() else {
            return true;
        };
        if front.len() >= DIRECT_WRITE || single {
            let Some(n) = write_some(stream, front, shared).await else {
                return false;
            };
            front.advance(n);
            if front.is_empty() {
                out.chunks.pop_front();
            }
            continue;
        }
        staging.clear();
        while let Some(chunk) = out.chunks.front() {
            if !staging.is_empty() && staging.len() + chunk.len() > STAGING {
                break;
            }
            staging.extend_from_slice(chunk);
            out.chunks.pop_front();
        }
        let mut done = 0;
        while done < staging.len() {
            let Some(n) = write_some(stream, &staging[done..], shared).await else {
                return false;
            };
            done += n;
        }
    }
}

/// One write that makes progress within L36, or `None` (the viewer is gone or dropped).
async fn write_some(stream: &mut Io, bytes: &[u8], shared: &Shared) -> Option<usize> {
    match tokio::time::timeout(shared.config.write_timeout, stream.write(bytes)).await {
        Ok(Ok(n)) if n > 0 => Some(n),
        Ok(_) => None,
        Err(_) => {
            shared
                .metrics
                .viewers_dropped
                .fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn snapshot_event(feed: &Feed, traces: &[Trace], out: &mut Outbox) {
    match feed {
        Feed::Stream(_) => {
            if let Some(t) = traces.first() {
                out.push(Bytes::from(event_head(
                    "snapshot",
                    &t.sub.epoch,
                    t.sub.last_seq,
                )));
                out.push(t.sub.snapshot.clone());
                out.push(Bytes::from_static(b"\n\n"));
            }
        }
        Feed::Plot {
            fid,
            layout,
            traces: defs,
        } => {
            let mut text = event_head("snapshot", "plot", 0);
            text.extend_from_slice(b"{\"fid\":");
            write_jcs_string(fid, &mut text);
            text.extend_from_slice(b",\"layout\":");
            text.extend_from_slice(layout.as_bytes());
            text.extend_from_slice(b",\"traces\":[");
            for (i, (_, def)) in defs.iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(b"{\"trace\":");
                text.extend_from_slice(def.as_bytes());
                text.extend_from_slice(b",\"stream\":");
                match traces.iter().find(|t| t.index == i) {
                    // The stream's snapshot is shared, not copied.
                    Some(t) => {
                        out.push(Bytes::from(std::mem::take(&mut text)));
                        out.push(t.sub.snapshot.clone());
                        text.push(b'}');
                    }
                    None => text.extend_from_slice(b"null}"),
                }
            }
            text.extend_from_slice(b"]}\n\n");
            out.push(Bytes::from(text));
        }
    }
}

/// A `reset` event for `t` at its current seq; `after_seq` when a fresh snapshot follows.
fn reset_event(t: &Trace, reason: &str, after_seq: Option<u64>, multi: bool, out: &mut Outbox) {
    let mut text = event_head("reset", &t.sub.epoch, t.sub.last_seq);
    text.extend_from_slice(b"{\"epoch\":\"");
    text.extend_from_slice(t.sub.epoch.as_bytes());
    text.extend_from_slice(b"\",\"reason\":");
    write_jcs_string(reason, &mut text);
    if let Some(after) = after_seq {
        text.extend_from_slice(b",\"after_seq\":");
        text.extend_from_slice(itoa::Buffer::new().format(after).as_bytes());
    }
    if multi {
        text.extend_from_slice(b",\"trace\":");
        text.extend_from_slice(itoa::Buffer::new().format(t.index).as_bytes());
    }
    text.extend_from_slice(b"}\n\n");
    out.push(Bytes::from(text));
}

/// `event: <kind>`, `id: <epoch>:<seq>` and the start of the `data:` line; the caller adds
/// one JSON text and the blank line.
pub(crate) fn event_head(kind: &str, epoch: &str, seq: u64) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"event: ");
    head.extend_from_slice(kind.as_bytes());
    head.extend_from_slice(b"\nid: ");
    head.extend_from_slice(epoch.as_bytes());
    head.push(b':');
    head.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    head.extend_from_slice(b"\ndata: ");
    head
}

/// The coalescing interval when a viewer asks for none.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);
/// Chunks this large are written in place, not gathered (a snapshot, a big update).
const DIRECT_WRITE: usize = 4 * 1024;
/// The most bytes of small chunks gathered into one write: what one session holds besides
/// the shared chunks while its socket is full.
const STAGING: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use plotstream_proto::update::parse_update;
    use plotstream_proto::{Limits, Token};

    use super::*;
    use crate::store::{Conn, StoreConfig};

    type Events = Vec<(String, String, serde_json::Value)>;

    struct Fixture {
        store: Store,
        metrics: Arc<Metrics>,
        conn: Arc<Conn>,
    }

    impl Fixture {
        fn new(config: StoreConfig) -> Fixture {
            let metrics = Arc::new(Metrics::default());
            let store = Store::new(config, metrics.clone());
            let conn = store.new_conn();
            Fixture {
                store,
                metrics,
                conn,
            }
        }

        fn apply(&self, token: &str, line: &str) -> u64 {
            let u =
                parse_update(&Bytes::copy_from_slice(line.as_bytes()), &Limits::default()).unwrap();
            self.store
                .apply(&self.conn, &Token::parse(token.as_bytes()).unwrap(), &u)
                .unwrap()
        }

        /// A session following one stream.
        fn session(&self, token: &str, interval: Duration) -> Session {
            let sub = self.store.subscribe(token).unwrap().unwrap();
            let trace = Trace::new(0, token.to_owned(), sub);
            Session::new(
                Feed::Stream(token.to_owned()),
                vec![trace],
                interval,
                self.store.config(),
            )
        }

        /// Does what the driver does with everything queued, as if each message arrived when
        /// the session was ready for it; stops at `Close`.
        fn pump(&self, session: &mut Session, now: Instant) -> Flow {
            loop {
                if session.handle_lagged(&self.store, &self.metrics, now) == Flow::Close {
                    return Flow::Close;
                }
                let ready = session
                    .traces
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, t)| Some((i, t.sub.rx.try_recv().ok()?)));
                let Some((i, msg)) = ready else {
                    return Flow::Continue;
                };
                if session.handle_msg(&self.store, i, Some(msg), now) == Flow::Close {
                    return Flow::Close;
                }
            }
        }

        /// As `pump`, for a viewer whose socket takes everything: the output is written to
        /// `socket` before each message, as the driver does.
        fn pump_writing(&self, session: &mut Session, socket: &mut Vec<u8>, now: Instant) {
            loop {
                write(session, socket);
                assert_eq!(
                    session.handle_lagged(&self.store, &self.metrics, now),
                    Flow::Continue
                );
                write(session, socket);
                let ready = session
                    .traces
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, t)| Some((i, t.sub.rx.try_recv().ok()?)));
                let Some((i, msg)) = ready else {
                    return;
                };
                let flow = session.handle_msg(&self.store, i, Some(msg), now);
                assert_eq!(flow, Flow::Continue);
            }
        }
    }

    /// The driver's write: all of the output goes to `socket`.
    fn write(session: &mut Session, socket: &mut Vec<u8>) {
        socket.extend(session.out.to_vec());
        session.out.clear();
        session.handle_written();
    }

    /// The session's output as `(event, id, data)`, after the response head.
    fn events(out: &[u8]) -> Events {
        let text = std::str::from_utf8(out).unwrap();
        let body = text.split_once("\r\n\r\n").map_or(text, |(_, b)| b);
        body.split("\n\n")
            .filter(|e| e.starts_with("event: "))
            .map(|e| {
                let field = |name: &str| {
                    e.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_default()
                        .to_owned()
                };
                let data = field("data: ");
                (
                    field("event: "),
                    field("id: "),
                    serde_json::from_str(&data).unwrap(),
                )
            })
            .collect()
    }

    /// I5 over a session's output: each update starts right after the snapshot or update
    /// before it, carries that snapshot's epoch in its data and its id, and its ops are the
    /// seqs it claims. Returns the seqs covered.
    #[track_caller]
    fn check_continuity(events: &Events) -> Vec<u64> {
        let mut seqs = Vec::new();
        let mut next = None;
        let mut epoch = None;
        for (kind, id, v) in events {
            match kind.as_str() {
                "snapshot" => {
                    next = v["last_seq"].as_u64().map(|s| s + 1);
                    epoch = v["epoch"].as_str().map(str::to_owned);
                }
                "update" => {
                    let (from, to) = (v["from_seq"].as_u64(), v["to_seq"].as_u64());
                    assert_eq!(from, next, "gap or duplicate at {v}");
                    assert_eq!(v["epoch"].as_str(), epoch.as_deref(), "epoch of {v}");
                    assert_eq!(
                        id,
                        &format!("{}:{}", epoch.as_deref().unwrap(), to.unwrap())
                    );
                    let ops: Vec<u64> = v["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|op| op["seq"].as_u64().unwrap())
                        .collect();
                    assert_eq!(ops, (from.unwrap()..=to.unwrap()).collect::<Vec<_>>());
                    seqs.extend(ops);
                    next = to.map(|t| t + 1);
                }
                _ => {}
            }
        }
        seqs
    }

    fn kinds(events: &Events) -> Vec<&str> {
        events.iter().map(|(k, _, _)| k.as_str()).collect()
    }

    /// Finding 13: the drain loop `while let Ok(ViewerMsg::Update(u)) = rx.try_recv()` took a
    /// queued `Reset` out of the queue and dropped it, so after a figure re-bound the token
    /// the viewer got the new epoch's updates under the old epoch, seq going backwards.
    #[test]
    fn a_queued_epoch_reset_is_never_swallowed() {
        for interval in [Duration::ZERO, Duration::from_millis(50)] {
            let f = Fixture::new(StoreConfig::default());
            // A figure's stream: only its own figure restarts it.
            f.store.figure("tok1", 500, Vec::new(), "u").unwrap();
            f.apply("tok1", r#"{"x":1}"#);
            let mut session = f.session("tok1", interval);
            let old = session.traces[0].sub.epoch.clone();
            for n in 2..=4 {
                f.apply("tok1", &format!("{{\"x\":{n}}}"));
            }
            f.store.figure("tok1", 100, Vec::new(), "u").unwrap();
            for n in 1..=2 {
                assert_eq!(f.apply("tok1", &format!("{{\"x\":{}}}", 100 + n)), n);
            }
            let now = Instant::now();
            assert_eq!(f.pump(&mut session, now), Flow::Continue);
            session.handle_timeout(now + interval);
            let events = events(&session.out.to_vec());
            assert_eq!(
                kinds(&events),
                ["snapshot", "update", "reset", "snapshot"],
                "{events:?}"
            );
            let (_, _, reset) = &events[2];
            assert_eq!(
                (reset["reason"].as_str(), reset["epoch"].as_str()),
                (Some("epoch"), Some(old.as_str()))
            );
            let (_, _, snapshot) = &events[3];
            assert_ne!(snapshot["epoch"].as_str(), Some(old.as_str()));
            assert_eq!(
                snapshot["last_seq"], 2,
                "the snapshot covers the new epoch's updates"
            );
            assert_eq!(snapshot["window"]["x"], serde_json::json!([101, 102]));
            assert_eq!(check_continuity(&events), [2, 3, 4]);
        }
    }

    /// An epoch reset that finds the viewer's queue full cannot be queued: the viewer is marked
    /// lagged instead, so it still gets `reset` and a snapshot of the new epoch before any of
    /// the new epoch's updates (it used to drain the old updates, then take the new epoch's
    /// under the old one).
    #[test]
    fn an_epoch_reset_that_finds_the_queue_full_is_a_lagged_reset() {
        let f = Fixture::new(StoreConfig {
            viewer_queue: 2,
            ..StoreConfig::default()
        });
        f.store.figure("tok1", 500, Vec::new(), "u").unwrap();
        f.apply("tok1", r#"{"x":1}"#);
        let mut session = f.session("tok1", Duration::ZERO);
        f.apply("tok1", r#"{"x":2}"#);
        f.apply("tok1", r#"{"x":3}"#);
        f.store.figure("tok1", 100, Vec::new(), "u").unwrap();
        let now = Instant::now();
        assert_eq!(f.pump(&mut session, now), Flow::Continue);
        f.apply("tok1", r#"{"x":101}"#);
        assert_eq!(f.pump(&mut session, now), Flow::Continue);
        let events = events(&session.out.to_vec());
        assert_eq!(
            kinds(&events),
            ["snapshot", "reset", "snapshot", "update"],
            "{events:?}"
        );
        assert_eq!(events[1].2["reason"], "lagged");
        assert_ne!(events[2].2["epoch"], events[0].2["epoch"]);
        assert_eq!(check_continuity(&events), [1]);
    }

    /// Finding 7 (and L35): with a long interval, a viewer that reads everything used to grow
    /// its pending list 1:1 with ingest until the interval was up. It is flushed early at half
    /// of either L35 bound.
    #[test]
    fn pending_updates_are_flushed_early_at_half_a_bound() {
        for (config, line) in [
            // The event bound: 8 pending.
            (
                StoreConfig {
                    viewer_queue: 16,
                    ..StoreConfig::default()
                },
                "{\"x\":1}".to_owned(),
            ),
            // The byte bound: 2 KiB pending, lines of ~300 bytes.
            (
                StoreConfig {
                    viewer_queue_bytes: 4096,
                    ..StoreConfig::default()
                },
                format!("{{\"x\":[{}]}}", vec!["123.5"; 40].join(",")),
            ),
        ] {
            let f = Fixture::new(config);
            f.apply("tok1", &line);
            let mut session = f.session("tok1", Duration::from_secs(5));
            let (max_pending, max_bytes) = (session.max_pending, session.max_pending_bytes);
            let mut socket = Vec::new();
            let now = Instant::now();
            for _ in 0..100 {
                f.apply("tok1", &line);
                f.pump_writing(&mut session, &mut socket, now);
                let t = &session.traces[0];
                assert!(t.pending.len() < max_pending, "{} pending", t.pending.len());
                assert!(
                    t.pending_bytes < max_bytes,
                    "{} bytes pending",
                    t.pending_bytes
                );
                assert!(!t.sub.queue.is_lagged());
            }
            assert!(session
                .poll_timeout(now)
                .is_some_and(|at| at <= now + Duration::from_secs(5)));
            session.handle_timeout(now + Duration::from_secs(5));
            write(&mut session, &mut socket);
            let events = events(&socket);
            assert_eq!(check_continuity(&events), (2..=101).collect::<Vec<_>>());
            for (_, _, v) in events.iter().filter(|(k, _, _)| k == "update") {
                let n = v["data"].as_array().unwrap().len();
                assert!(n <= max_pending, "an update of {n}");
            }
        }
    }

    /// L35's byte bound covers what the session has taken but not written: a viewer whose
    /// socket takes nothing is lagged once its unwritten output reaches the bound, though its
    /// queue is empty every time (it used to keep accumulating output).
    #[test]
    fn unwritten_output_counts_against_the_byte_bound() {
        const BOUND: usize = 4096;
        let f = Fixture::new(StoreConfig {
            viewer_queue_bytes: BOUND,
            ..StoreConfig::default()
        });
        f.apply("tok1", r#"{"x":0}"#);
        let mut session = f.session("tok1", Duration::ZERO);
        let now = Instant::now();
        let line = format!("{{\"x\":[{}]}}", vec!["123.5"; 40].join(","));
        let mut n_lines = 0;
        loop {
            assert!(n_lines < 100, "never lagged");
            f.apply("tok1", &line);
            n_lines += 1;
            if session.traces[0].sub.queue.is_lagged() {
                break;
            }
            // The session takes everything queued; the socket takes nothing.
            assert_eq!(f.pump(&mut session, now), Flow::Continue);
            assert!(session.traces[0].sub.queue.n_bytes() <= BOUND);
            assert!(session.traces[0].sub.rx.is_empty());
        }
        assert!(n_lines > 3, "lagged after {n_lines} lines");
        // Once the socket takes bytes again: the backlog, then reset and a snapshot.
        let mut socket = Vec::new();
        f.pump_writing(&mut session, &mut socket, now);
        f.apply("tok1", &line);
        f.pump_writing(&mut session, &mut socket, now);
        let events = events(&socket);
        let kinds = kinds(&events);
        assert_eq!(
            &kinds[kinds.len() - 4..],
            ["update", "reset", "snapshot", "update"]
        );
        assert_eq!(events[kinds.len() - 3].2["reason"], "lagged");
        let _ = check_continuity(&events);
        assert!(f.metrics.viewer_queued_bytes_max.load(Ordering::Relaxed) <= BOUND as u64);
    }

    /// `?interval=` is clamped to L35's note (5 s by default); what does not parse is 50 ms.
    #[test]
    fn interval_is_clamped_and_defaults_to_50_ms() {
        let max = Duration::from_secs(5);
        let ms = Duration::from_millis;
        for (query, expected) in [
            (None, ms(50)),
            (Some("interval=0"), ms(0)),
            (Some("interval=10"), ms(10)),
            (Some("a=1&interval=4999"), ms(4_999)),
            (Some("interval=5000"), max),
            (Some("interval=5001"), max),
            (Some("interval=1000000000000"), max),
            (Some("interval=18446744073709551615"), max),
            (Some("interval=18446744073709551616"), ms(50)),
            (Some("interval=-1"), ms(50)),
            (Some("interval=1.5"), ms(50)),
            (Some("interval="), ms(50)),
            (Some("interval=abc"), ms(50)),
        ] {
            assert_eq!(interval_of(query, max), expected, "{query:?}");
        }
    }

    /// Found by `check_sse` (fuzz target `sse`): under a bound below the 50 ms default, a
    /// viewer that asked for no interval (or for one that does not parse) was flushed every
    /// 50 ms, past the bound that `viewer_interval_max` promises every viewer.
    #[test]
    fn fuzz_the_default_interval_stays_within_a_smaller_bound() {
        let max = Duration::from_millis(10);
        for query in [None, Some(""), Some("interval=abc"), Some("interval=20")] {
            assert_eq!(interval_of(query, max), max, "{query:?}");
        }
        assert_eq!(interval_of(None, Duration::ZERO), Duration::ZERO);
        assert_eq!(
            interval_of(Some("interval=5"), max),
            Duration::from_millis(5)
        );
    }

    /// A figure feed frames the shared ops with its trace index: coalesced and lone updates,
    /// and a lagged trace's reset and snapshot, are each one JSON text.
    #[test]
    fn a_figure_feed_frames_the_shared_ops_per_trace() {
        let f = Fixture::new(StoreConfig {
            viewer_queue: 4,
            ..StoreConfig::default()
        });
        f.apply("tok1", r#"{"x":1}"#);
        f.apply("tok2", r#"{"x":1}"#);
        let feed = Feed::Plot {
            fid: "me:1".to_owned(),
            layout: r#"{"title":"t"}"#.to_owned(),
            traces: vec![
                (Some("tok1".to_owned()), r#"{"type":"scatter"}"#.to_owned()),
                (None, r#"{"type":"bar","y":[1]}"#.to_owned()),
                (Some("tok2".to_owned()), r#"{"type":"scatter"}"#.to_owned()),
            ],
        };
        let traces = vec![
            Trace::new(
                0,
                "tok1".to_owned(),
                f.store.subscribe("tok1").unwrap().unwrap(),
            ),
            Trace::new(
                2,
                "tok2".to_owned(),
                f.store.subscribe("tok2").unwrap().unwrap(),
            ),
        ];
        let mut session = Session::new(feed, traces, Duration::ZERO, f.store.config());
        let mut socket = Vec::new();
        let now = Instant::now();
        f.apply("tok1", r#"{"x":2}"#);
        f.apply("tok1", r#"{"x":3}"#);
        f.apply("tok2", r#"{"x":2,"layout":{"title":"u"}}"#);
        f.pump_writing(&mut session, &mut socket, now);
        // tok2 overflows its queue of 4 while the session is away.
        for n in 3..=8 {
            f.apply("tok2", &format!("{{\"x\":{n}}}"));
        }
        f.pump_writing(&mut session, &mut socket, now);
        f.apply("tok2", r#"{"x":9}"#);
        f.pump_writing(&mut session, &mut socket, now);
        let events = events(&socket);
        assert_eq!(
            kinds(&events),
            ["snapshot", "update", "update", "reset", "snapshot", "update"],
            "{events:?}"
        );
        let snapshot = &events[0].2;
        assert_eq!(snapshot["fid"], "me:1");
        assert_eq!(snapshot["traces"][1]["stream"], serde_json::Value::Null);
        assert_eq!(
            snapshot["traces"][2]["stream"]["window"]["x"],
            serde_json::json!([1])
        );
        let (a, b) = (&events[1].2, &events[2].2);
        assert_eq!(
            (
                a["trace"].as_u64(),
                a["from_seq"].as_u64(),
                a["to_seq"].as_u64()
            ),
            (Some(0), Some(2), Some(3))
        );
        assert_eq!(
            (b["trace"].as_u64(), b["from_seq"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(b["data"][0]["layout"]["title"], "u");
        assert_eq!(
            (
                events[3].2["trace"].as_u64(),
                events[3].2["reason"].as_str()
            ),
            (Some(2), Some("lagged"))
        );
        let again = &events[4].2;
        assert_eq!(
            (
                again["trace"].as_u64(),
                again["stream"]["last_seq"].as_u64()
            ),
            (Some(2), Some(8))
        );
        assert_eq!(
            (
                events[5].2["trace"].as_u64(),
                events[5].2["from_seq"].as_u64()
            ),
            (Some(2), Some(9))
        );
    }

    /// The shutdown reset is not lost behind queued updates either.
    #[test]
    fn a_queued_shutdown_reset_is_never_swallowed() {
        let f = Fixture::new(StoreConfig::default());
        f.apply("tok1", r#"{"x":1}"#);
        let mut session = f.session("tok1", Duration::from_millis(50));
        for n in 2..=4 {
            f.apply("tok1", &format!("{{\"x\":{n}}}"));
        }
        f.store.shutdown_viewers();
        assert_eq!(f.pump(&mut session, Instant::now()), Flow::Close);
        let events = events(&session.out.to_vec());
        assert_eq!(
            kinds(&events),
            ["snapshot", "update", "reset"],
            "{events:?}"
        );
        assert_eq!(events[2].2["reason"], "shutdown");
        assert_eq!(check_continuity(&events), [2, 3, 4]);
    }

    #[test]
    fn a_node_that_loses_redis_tells_its_viewers_once_and_again_when_it_is_back() {
        let f = Fixture::new(StoreConfig::default());
        f.apply("tok1", r#"{"x":1}"#);
        let mut session = f.session("tok1", Duration::ZERO);
        f.apply("tok1", r#"{"x":2}"#);
        f.store.set_upstream(false);
        f.store.set_upstream(false);
        f.apply("tok1", r#"{"x":3}"#);
        f.store.set_upstream(true);
        assert_eq!(f.pump(&mut session, Instant::now()), Flow::Continue);
        assert!(f.store.upstream_up());
        let events = events(&session.out.to_vec());
        assert_eq!(
            kinds(&events),
            ["snapshot", "update", "status", "update", "status"],
            "{events:?}"
        );
        assert_eq!(events[2].2["upstream"], "reconnecting");
        assert_eq!(events[4].2["upstream"], "ok");
        assert_eq!(check_continuity(&events), [2, 3]);
    }
}
