//! Server-Sent Events for viewers (RELIABILITY.md §4.4): `snapshot` first, then `update`
//! events coalesced by `interval`, `reset` + a fresh snapshot when the viewer lagged or the
//! stream's history changed, and `reset` (shutdown) at the end. Every `data:` line is one JSON
//! text whose CR and LF are escaped by construction, so an event can never be split (C18).
//!
//! One session serves one stream (`/api/streams/{token}/events`) or every streamed trace of a
//! figure (`/api/plots/{fid}/events`, whose events carry a `trace` index).

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use plotstream_proto::head::RequestHead;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::http::Response;
use crate::metrics::Metrics;
use crate::store::{Fanout, Store, Subscription, ViewerMsg};
use crate::transport::{close_gracefully, Io};
use crate::Shared;

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

struct Trace {
    index: usize,
    token: String,
    sub: Subscription,
    pending: Vec<Arc<Fanout>>,
}

/// Serves one viewer until it leaves, lags three times in 60 s, stalls (L36) or shutdown.
pub async fn serve(mut stream: Io, head: &RequestHead, feed: Feed, shared: Arc<Shared>) {
    let interval = head
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("interval=")))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_millis(50), Duration::from_millis);
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
        match shared.store.subscribe(&token) {
            Ok(Some(sub)) => traces.push(Trace {
                index,
                token,
                sub,
                pending: Vec::new(),
            }),
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
    let mut session = Session::new(feed, traces, interval);
    let mut shutdown = shared.shutdown.clone();
    let mut keepalive = tokio::time::interval(shared.config.keepalive);
    keepalive.tick().await;
    let mut probe = [0u8; 64];
    loop {
        if !session.out.is_empty() {
            if !write(&mut stream, &session.out, &shared).await {
                break;
            }
            session.out.clear();
        }
        if session.handle_lagged(&shared.store, &shared.metrics, Instant::now()) == Flow::Close {
            break;
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
                session.out.extend_from_slice(b": keepalive\n\n");
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
                let _ = write(&mut stream, &session.out, &shared).await;
            }
            break;
        }
    }
    let _ = stream.shutdown().await;
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

/// One viewer session without I/O, in quinn's shape: queued messages, the flush timer and
/// shutdown come in through `handle_*`, SSE bytes go out through `out`, and `poll_timeout`
/// says when the coalesced updates are due. The driver in [`serve`] owns the socket.
struct Session {
    feed: Feed,
    multi: bool,
    traces: Vec<Trace>,
    interval: Duration,
    last_flush: Option<Instant>,
    lag_times: Vec<Instant>,
    /// SSE bytes for the socket.
    out: Vec<u8>,
}

impl Session {
    /// A session for `traces` (already subscribed): the response head and the snapshot.
    fn new(feed: Feed, traces: Vec<Trace>, interval: Duration) -> Session {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n",
        );
        snapshot_event(&feed, &traces, &mut out);
        Session {
            multi: matches!(feed, Feed::Plot { .. }),
            feed,
            traces,
            interval,
            last_flush: None,
            lag_times: Vec::new(),
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
            .filter(|&i| self.traces[i].sub.lagged.load(Ordering::Acquire))
            .collect();
        if lagged.is_empty() {
            return Flow::Continue;
        }
        self.lag_times
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        self.lag_times.push(now);
        metrics.viewer_reset("lagged");
        if self.lag_times.len() >= 3 {
            metrics.viewers_dropped.fetch_add(1, Ordering::Relaxed);
            self.out.clear();
            return Flow::Close;
        }
        self.resubscribe(store, &lagged, "lagged")
    }

    /// A message received from trace `i`'s queue, then everything else queued there. Every
    /// message is handled, a `Reset` behind updates included: a drain that stopped at (and so
    /// dropped) a queued reset sent the next epoch's updates under the old epoch (I5).
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
                    t.pending.push(u);
                }
                ViewerMsg::Reset("epoch") => {
                    // The updates before it belong to the old epoch: out they go, then the
                    // reset and a snapshot of the new one; its queue is a fresh one.
                    flush_all(&mut self.traces, self.multi, &mut self.out);
                    if self.resubscribe(store, &[i], "epoch") == Flow::Close {
                        return Flow::Close;
                    }
                }
                ViewerMsg::Reset(reason) => {
                    flush_all(&mut self.traces, self.multi, &mut self.out);
                    reset_event(&self.traces[i], reason, None, self.multi, &mut self.out);
                    return Flow::Close;
                }
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

    /// The flush timer fired: every pending update goes out.
    fn handle_timeout(&mut self, now: Instant) {
        flush_all(&mut self.traces, self.multi, &mut self.out);
        self.last_flush = Some(now);
    }

    /// The server is stopping: what is pending, then `reset` (shutdown).
    fn handle_shutdown(&mut self) {
        flush_all(&mut self.traces, self.multi, &mut self.out);
        match self.traces.first() {
            Some(t) => reset_event(t, "shutdown", None, self.multi, &mut self.out),
            None => self
                .out
                .extend_from_slice(b"event: reset\ndata: {\"reason\":\"shutdown\"}\n\n"),
        }
    }

    /// Replaces the subscriptions of `which` traces with fresh ones and announces it: `reset`,
    /// then a snapshot (of that trace for a figure feed, of the stream otherwise).
    fn resubscribe(&mut self, store: &Store, which: &[usize], reason: &str) -> Flow {
        for &i in which {
            let t = &mut self.traces[i];
            t.pending.clear();
            reset_event(t, reason, Some(t.sub.last_seq), self.multi, &mut self.out);
            if !store.resubscribe(&t.token, &mut t.sub) {
                return Flow::Close;
            }
            if self.multi {
                let data = format!("{{\"trace\":{},\"stream\":{}}}", t.index, t.sub.snapshot);
                event(
                    &mut self.out,
                    "snapshot",
                    &t.sub.epoch,
                    t.sub.last_seq,
                    &data,
                );
            }
        }
        if !self.multi {
            snapshot_event(&self.feed, &self.traces, &mut self.out);
        }
        Flow::Continue
    }
}

async fn write(stream: &mut Io, bytes: &[u8], shared: &Shared) -> bool {
    // L36: a viewer that takes nothing for 10 s is dropped.
    match tokio::time::timeout(shared.config.write_timeout, stream.write_all(bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            shared
                .metrics
                .viewers_dropped
                .fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

fn snapshot_event(feed: &Feed, traces: &[Trace], out: &mut Vec<u8>) {
    match feed {
        Feed::Stream(_) => {
            if let Some(t) = traces.first() {
                event(
                    out,
                    "snapshot",
                    &t.sub.epoch,
                    t.sub.last_seq,
                    &t.sub.snapshot,
                );
            }
        }
        Feed::Plot {
            fid,
            layout,
            traces: defs,
        } => {
            let mut data = String::from("{\"fid\":");
            crate::store::push_json_str(&mut data, fid);
            data.push_str(&format!(",\"layout\":{layout},\"traces\":["));
            for (i, (_, def)) in defs.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                let stream = traces
                    .iter()
                    .find(|t| t.index == i)
                    .map_or("null", |t| t.sub.snapshot.as_str());
                data.push_str(&format!("{{\"trace\":{def},\"stream\":{stream}}}"));
            }
            data.push_str("]}");
            event(out, "snapshot", "plot", 0, &data);
        }
    }
}

/// A `reset` event for `t` at its current seq; `after_seq` when a fresh snapshot follows.
fn reset_event(t: &Trace, reason: &str, after_seq: Option<u64>, multi: bool, out: &mut Vec<u8>) {
    let after = after_seq.map_or(String::new(), |a| format!(",\"after_seq\":{a}"));
    let trace = if multi {
        format!(",\"trace\":{}", t.index)
    } else {
        String::new()
    };
    event(
        out,
        "reset",
        &t.sub.epoch,
        t.sub.last_seq,
        &format!(
            "{{\"epoch\":\"{}\",\"reason\":\"{reason}\"{after}{trace}}}",
            t.sub.epoch
        ),
    );
}

fn flush_all(traces: &mut [Trace], multi: bool, out: &mut Vec<u8>) {
    for t in traces.iter_mut() {
        let (Some(first), Some(last)) = (t.pending.first(), t.pending.last()) else {
            continue;
        };
        let (from, to) = (first.seq, last.seq);
        let trace = if multi {
            format!("\"trace\":{},", t.index)
        } else {
            String::new()
        };
        let mut data = format!(
            "{{{trace}\"epoch\":\"{}\",\"from_seq\":{from},\"to_seq\":{to},\"data\":[",
            t.sub.epoch
        );
        for (i, u) in t.pending.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            data.push_str(&String::from_utf8_lossy(&u.json));
        }
        data.push_str("]}");
        event(out, "update", &t.sub.epoch, to, &data);
        t.pending.clear();
    }
}

fn event(out: &mut Vec<u8>, kind: &str, epoch: &str, seq: u64, data: &str) {
    debug_assert!(!data.contains('\n') && !data.contains('\r'));
    out.extend_from_slice(format!("event: {kind}\nid: {epoch}:{seq}\ndata: {data}\n\n").as_bytes());
}

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
            let trace = Trace {
                index: 0,
                token: token.to_owned(),
                sub,
                pending: Vec::new(),
            };
            Session::new(Feed::Stream(token.to_owned()), vec![trace], interval)
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
            f.apply("tok1", r#"{"x":1}"#);
            let mut session = f.session("tok1", interval);
            let old = session.traces[0].sub.epoch.clone();
            for n in 2..=4 {
                f.apply("tok1", &format!("{{\"x\":{n}}}"));
            }
            f.store.bind_trace("tok1", 100, Vec::new());
            for n in 1..=2 {
                assert_eq!(f.apply("tok1", &format!("{{\"x\":{}}}", 100 + n)), n);
            }
            let now = Instant::now();
            assert_eq!(f.pump(&mut session, now), Flow::Continue);
            session.handle_timeout(now + interval);
            let events = events(&session.out);
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
        f.apply("tok1", r#"{"x":1}"#);
        let mut session = f.session("tok1", Duration::ZERO);
        f.apply("tok1", r#"{"x":2}"#);
        f.apply("tok1", r#"{"x":3}"#);
        f.store.bind_trace("tok1", 100, Vec::new());
        let now = Instant::now();
        assert_eq!(f.pump(&mut session, now), Flow::Continue);
        f.apply("tok1", r#"{"x":101}"#);
        assert_eq!(f.pump(&mut session, now), Flow::Continue);
        let events = events(&session.out);
        assert_eq!(
            kinds(&events),
            ["snapshot", "reset", "snapshot", "update"],
            "{events:?}"
        );
        assert_eq!(events[1].2["reason"], "lagged");
        assert_ne!(events[2].2["epoch"], events[0].2["epoch"]);
        assert_eq!(check_continuity(&events), [1]);
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
        let events = events(&session.out);
        assert_eq!(
            kinds(&events),
            ["snapshot", "update", "reset"],
            "{events:?}"
        );
        assert_eq!(events[2].2["reason"], "shutdown");
        assert_eq!(check_continuity(&events), [2, 3, 4]);
    }
}
