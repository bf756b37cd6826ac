//! `--verify`: one viewer per stream on the SSE feed with `interval=0`, and the inspection API
//! at the end.
//!
//! The viewer recognises each point by its `x` (the point index), checks its `y` against
//! [`value`](super::schedule::value), and counts each distinct point once: a point seen twice
//! is a duplicate, a point seen after a later one is out of order, a sent point never seen is
//! lost. Seqs must continue from event to event (I5); a `reset` the server announces is not a
//! silent gap, and the points it skipped are counted as unobserved rather than lost. At the end
//! the inspection read gives `last_seq` (compared with the points sent) and `digest`
//! (compared with an independent JCS of the last `maxpoints` points sent). The viewer, the
//! inspection reader and the JCS oracle are the ones `conform` uses ([`crate::probe`]). Both the
//! viewer and the inspection read go to the stream's viewer target (`super::targets`), which is
//! another node than its writer's with `--viewers-on other`.

use std::sync::Arc;
use std::time::Duration;

use plotstream_proto::encode::Flavour;
use serde::Deserialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::ctx::Ctx;
use super::report::Counters;
use super::schedule::value;
use crate::probe::inspect::{self, Detail};
use crate::probe::sse::{Event, Subscription};
use crate::probe::{jcs, Endpoint, ErrorKind};

/// What one stream's viewer saw.
#[derive(Debug, Clone, Default)]
pub struct Check {
    /// Subscribed successfully.
    pub subscribed: bool,
    /// `seen[i / 64] & (1 << i % 64)`: point `i` was seen.
    seen: Vec<u64>,
    /// Largest point index seen so far.
    max_idx: Option<u64>,
    /// The seq of the last update applied.
    last_seq: u64,
    /// Distinct points seen.
    pub n_seen: u64,
    /// Points seen more than once.
    pub duplicated: u64,
    /// Points seen after a later point.
    pub out_of_order: u64,
    /// Points with a wrong `y`, or an `x` that is no point index.
    pub corrupted: u64,
    /// Points inside announced gaps.
    pub unobserved: u64,
    /// Updates that did not continue the seq.
    pub seq_gaps: u64,
    /// `reset` events.
    pub resets: u64,
}

impl Check {
    /// Distinct points seen among `0..n_sent`.
    pub fn n_seen_below(&self, n_sent: u64) -> u64 {
        let full = (n_sent / 64) as usize;
        let mut n: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = self.seen.get(full) {
            let rest = n_sent % 64;
            if rest > 0 {
                n += u64::from((w & ((1u64 << rest) - 1)).count_ones());
            }
        }
        n
    }

    /// Records point `x`/`y`; returns true the first time it is seen.
    fn observe(&mut self, stream_idx: usize, x: f64, y: f64) -> bool {
        if !(0.0..MAX_POINT_IDX).contains(&x) || x.fract() != 0.0 {
            self.corrupted += 1;
            return false;
        }
        let i = x as u64;
        if y.to_bits() != value(stream_idx, i).to_bits() {
            self.corrupted += 1;
        }
        let (word, bit) = ((i / 64) as usize, i % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return false;
        }
        self.seen[word] |= 1 << bit;
        self.n_seen += 1;
        if self.max_idx.is_some_and(|m| i < m) {
            self.out_of_order += 1;
        }
        self.max_idx = Some(self.max_idx.map_or(i, |m| m.max(i)));
        true
    }
}

/// What the run tells a viewer at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Still running.
    No,
    /// Stop once the update with this seq arrived.
    AtSeq(u64),
    /// Stop now.
    Now,
}

/// Follows stream `stream_idx` once its writer opened (`opened`); reports readiness on `ready`
/// and returns what it saw when `finish` says so.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    stream_idx: usize,
    opened: oneshot::Receiver<bool>,
    ready: oneshot::Sender<bool>,
    mut finish: watch::Receiver<Finish>,
) -> Check {
    let mut check = Check::default();
    if opened.await != Ok(true) {
        let _ = ready.send(false);
        return check;
    }
    let token = ctx.tokens[stream_idx].as_str().to_owned();
    // An Arduino stream exists only after its first line (its head names no token), and its
    // first line waits for the start: subscribe without holding the start back. Points sent
    // before the subscription arrive in the snapshot.
    let lazy = ctx.flavour == Flavour::Arduino;
    let mut ready = Some(ready);
    if lazy {
        if let Some(r) = ready.take() {
            let _ = r.send(true);
        }
    }
    let patience = if lazy {
        SUBSCRIBE_TIMEOUT + ctx.schedule.duration
    } else {
        SUBSCRIBE_TIMEOUT
    };
    let mut feed = match subscribe(&ctx, stream_idx, &token, patience).await {
        Ok(s) => s,
        Err(kind) => {
            ctx.counters.error(kind);
            if let Some(r) = ready.take() {
                let _ = r.send(false);
            }
            return check;
        }
    };
    check.subscribed = true;
    Counters::add(&ctx.counters.viewers_subscribed, 1);
    if let Some(r) = ready.take() {
        let _ = r.send(true);
    }
    let mut latencies = Samples {
        e2e: ctx.counters.e2e_latency.local(),
        server: ctx.counters.server_latency.local(),
    };
    loop {
        // Events already buffered first (the snapshot may have come with the head).
        while let Some(event) = feed.next_event() {
            let now = Instant::now();
            if !apply(&ctx, stream_idx, &mut check, &event, now, &mut latencies) {
                return check;
            }
        }
        match *finish.borrow() {
            Finish::Now => return check,
            Finish::AtSeq(seq) if check.last_seq >= seq => return check,
            _ => {}
        }
        tokio::select! {
            res = feed.read_more() => if !matches!(res, Ok(true)) {
                ctx.counters.error("viewer_eof");
                return check;
            },
            changed = finish.changed() => {
                if changed.is_err() {
                    return check;
                }
            }
        }
    }
}

/// Applies one SSE event; false when the feed is over (`reset` shutdown).
fn apply(
    ctx: &Ctx,
    stream_idx: usize,
    check: &mut Check,
    event: &Event,
    now: Instant,
    latencies: &mut Samples<'_>,
) -> bool {
    match event.kind.as_str() {
        "snapshot" => {
            let Ok(snap) = serde_json::from_str::<Snapshot>(&event.data) else {
                ctx.counters.error("viewer_bad_event");
                return true;
            };
            let xs = snap.window.x.unwrap_or_default();
            let ys = snap.window.y.unwrap_or_default();
            let count = xs.len().min(ys.len()) as u64;
            // Window value w holds seq last_seq − count + 1 + w (one value per point update).
            let first_window_seq = (snap.last_seq + 1).saturating_sub(count);
            let after = check.last_seq;
            if first_window_seq > after + 1 {
                check.unobserved += first_window_seq - after - 1;
            }
            for (w, (x, y)) in xs.iter().zip(&ys).enumerate() {
                if first_window_seq + w as u64 > after && check.observe(stream_idx, *x, *y) {
                    Counters::add(&ctx.counters.points_verified, 1);
                }
            }
            check.last_seq = snap.last_seq;
        }
        "update" => {
            let Ok(update) = serde_json::from_str::<UpdateEvent>(&event.data) else {
                ctx.counters.error("viewer_bad_event");
                return true;
            };
            if update.from_seq != check.last_seq + 1 {
                check.seq_gaps += 1;
            }
            let start = *ctx.start.borrow();
            let k = ctx.schedule.points_per_chunk;
            let mut n_new = 0;
            for op in &update.data {
                if let Some(append) = &op.append {
                    let xs = append.x.as_deref().unwrap_or_default();
                    let ys = append.y.as_deref().unwrap_or_default();
                    for (x, y) in xs.iter().zip(ys) {
                        if check.observe(stream_idx, *x, *y) {
                            n_new += 1;
                            let chunk_idx = *x as u64 / k;
                            if let (Some(start), true) = (start, ctx.schedule.is_open_loop()) {
                                let intended = start + ctx.schedule.intended(stream_idx, chunk_idx);
                                latencies
                                    .e2e
                                    .record(now.saturating_duration_since(intended), 1);
                            }
                            if let Some(issued) = write_issued(ctx, stream_idx, chunk_idx) {
                                latencies
                                    .server
                                    .record(now.saturating_duration_since(issued), 1);
                            }
                        }
                    }
                }
                if op.replace.is_some() {
                    check.corrupted += 1; // The generator never replaces.
                }
                check.last_seq = op.seq;
            }
            check.last_seq = check.last_seq.max(update.to_seq);
            Counters::add(&ctx.counters.points_verified, n_new);
        }
        "reset" => {
            check.resets += 1;
            let reason = serde_json::from_str::<Reset>(&event.data)
                .map(|r| r.reason)
                .unwrap_or_default();
            ctx.counters.error(format!("viewer_reset_{reason}"));
            if reason == "epoch" {
                // A new history: seqs start again.
                check.last_seq = 0;
            }
            if reason == "shutdown" {
                return false;
            }
        }
        _ => {}
    }
    true
}

/// The viewer's two latency buffers.
struct Samples<'a> {
    e2e: super::report::LocalLatencies<'a>,
    server: super::report::LocalLatencies<'a>,
}

/// When the write holding chunk `chunk_idx` was issued, dropping older writes' entries (points
/// arrive in order; an out-of-order point gets no sample).
fn write_issued(ctx: &Ctx, stream_idx: usize, chunk_idx: u64) -> Option<Instant> {
    let writes = ctx.writes.get(stream_idx)?;
    let mut writes = writes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while writes.front().is_some_and(|(end, _)| *end <= chunk_idx) {
        writes.pop_front();
    }
    writes.front().map(|(_, issued)| *issued)
}

/// Opens the SSE feed; a 404 (the head is not admitted yet, or an Arduino stream before its
/// first line) is retried briefly. An error is the counter it is reported under.
async fn subscribe(
    ctx: &Ctx,
    stream_idx: usize,
    token: &str,
    patience: Duration,
) -> Result<Subscription, &'static str> {
    let target = ctx.targets.viewer(stream_idx);
    let endpoint = Endpoint::new(&target.addr, &target.host);
    let deadline = Instant::now() + patience;
    let mut delay = Duration::from_millis(2);
    loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(SUBSCRIBE_TIMEOUT);
        match Subscription::open(&endpoint, token, wait).await {
            Ok(feed) => return Ok(feed),
            Err(e) => match e.kind {
                ErrorKind::Status(404) if Instant::now() < deadline && !*ctx.stop.borrow() => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                ErrorKind::Connect(_) => return Err("viewer_connect"),
                ErrorKind::Io(_) | ErrorKind::Timeout(_) => return Err("viewer_io"),
                ErrorKind::NotHttp | ErrorKind::Invalid(_) => return Err("viewer_bad_response"),
                ErrorKind::Status(_) => return Err("viewer_refused"),
            },
        }
    }
}

/// `GET /api/streams/{token}` of stream `stream_idx`, on its viewer's target: what the verifier
/// compares, or why there is nothing to compare.
pub(crate) async fn inspect(ctx: &Ctx, stream_idx: usize) -> Result<inspect::Inspection, String> {
    let token = ctx.tokens[stream_idx].as_str();
    let target = ctx.targets.viewer(stream_idx);
    let endpoint = Endpoint::new(&target.addr, &target.host);
    match inspect::read(&endpoint, token, Detail::Counts).await {
        Ok(Some(i)) => Ok(i),
        Ok(None) => Err(format!("GET /api/streams/{token}: no such stream")),
        Err(e) => Err(e.to_string()),
    }
}

/// The digest the server must report after `n_sent` points of stream `stream_idx`, each
/// accepted once and in order, with a window of `maxpoints`.
pub fn expected_digest(stream_idx: usize, n_sent: u64, maxpoints: u64) -> String {
    let first = n_sent.saturating_sub(maxpoints);
    let xs: Vec<f64> = (first..n_sent).map(|i| i as f64).collect();
    let ys: Vec<f64> = (first..n_sent).map(|i| value(stream_idx, i)).collect();
    jcs::window_digest(&xs, &ys)
}

#[derive(Debug, Deserialize)]
struct Attrs {
    x: Option<Vec<f64>>,
    y: Option<Vec<f64>>,
}

#[derive(Debug, Deserialize)]
struct Snapshot {
    last_seq: u64,
    window: Attrs,
}

#[derive(Debug, Deserialize)]
struct UpdateEvent {
    from_seq: u64,
    to_seq: u64,
    data: Vec<Op>,
}

#[derive(Debug, Deserialize)]
struct Op {
    seq: u64,
    append: Option<Attrs>,
    replace: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Reset {
    reason: String,
}

/// Point indices above this are corrupt `x` values, not points (bounds the bitmap).
const MAX_POINT_IDX: f64 = (1u64 << 40) as f64;
/// How long a subscription may take (and a 404 be retried, unless the stream starts late).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_counted_once_in_order() {
        let mut c = Check::default();
        assert!(c.observe(3, 0.0, value(3, 0)));
        assert!(c.observe(3, 2.0, value(3, 2)));
        assert!(c.observe(3, 1.0, value(3, 1)));
        assert!(!c.observe(3, 2.0, value(3, 2)));
        assert!(c.observe(3, 64.0, 0.25));
        assert!(!c.observe(3, 1.5, 0.0));
        assert_eq!((c.n_seen, c.duplicated, c.out_of_order), (4, 1, 1));
        assert_eq!(c.corrupted, 2);
        assert_eq!(c.n_seen_below(3), 3);
        assert_eq!(c.n_seen_below(64), 3);
        assert_eq!(c.n_seen_below(65), 4);
    }
}
