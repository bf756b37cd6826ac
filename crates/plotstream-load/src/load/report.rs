//! Counters, HdrHistogram latencies and the final report (text lives in `printer`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::targets::{TargetLoad, ViewersOn};

/// Latencies of one kind, shared by every task. Tasks record into a [`LocalLatencies`] and
/// merge in batches, so the lock is taken once per `FLUSH_EVERY` samples.
#[derive(Debug)]
pub struct Latencies {
    hist: Mutex<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        // 1 µs to 1 h at 3 significant digits: a few tens of KiB.
        #[allow(clippy::expect_used)] // constant, valid bounds: low ≥ 1, high ≥ 2·low, sigfig ≤ 5
        let hist = Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds");
        Latencies {
            hist: Mutex::new(hist),
        }
    }
}

impl Latencies {
    /// The percentiles so far, in milliseconds.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let h = lock(&self.hist);
        (!h.is_empty()).then(|| Percentiles::of(&h))
    }

    /// A task-local buffer that flushes into `self`.
    pub fn local(&self) -> LocalLatencies<'_> {
        LocalLatencies {
            shared: self,
            samples: Vec::with_capacity(FLUSH_EVERY),
        }
    }
}

/// A task's unflushed latency samples (`(µs, count)`); flushed when full and on drop.
#[derive(Debug)]
pub struct LocalLatencies<'a> {
    shared: &'a Latencies,
    samples: Vec<(u64, u64)>,
}

impl LocalLatencies<'_> {
    /// Records `count` samples of `latency`.
    pub fn record(&mut self, latency: Duration, count: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.samples.push((us.clamp(1, MAX_US), count));
        if self.samples.len() >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Moves the samples into the shared histogram.
    pub fn flush(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let mut h = lock(&self.shared.hist);
        for (us, n) in self.samples.drain(..) {
            // In bounds by the clamp above.
            let _ = h.record_n(us, n);
        }
    }
}

impl Drop for LocalLatencies<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

/// Live counters, shared by every task and read by the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Points written to sockets.
    pub points_sent: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_sent: AtomicU64,
    /// Writer connections opened (reconnects included).
    pub connects: AtomicU64,
    /// Writer connections opened after the first of their stream.
    pub reconnects: AtomicU64,
    /// Streams whose first connection is open.
    pub streams_connected: AtomicU64,
    /// Viewers subscribed.
    pub viewers_subscribed: AtomicU64,
    /// Distinct points seen by viewers.
    pub points_verified: AtomicU64,
    /// Errors by status code, or by kind for connection errors (`connect`, `io`,
    /// `no_response`, `viewer_*`).
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Send latency from the intended time.
    pub send_latency: Latencies,
    /// Write → viewer latency from the intended time.
    pub e2e_latency: Latencies,
    /// Write → viewer latency from when the write was issued: the server's and the viewer
    /// path's share, without the generator's own lateness.
    pub server_latency: Latencies,
}

impl Counters {
    /// Counts one error of `kind`.
    pub fn error(&self, kind: impl Into<String>) {
        *lock(&self.errors).entry(kind.into()).or_default() += 1;
    }

    /// Errors so far, all kinds.
    pub fn n_errors(&self) -> u64 {
        lock(&self.errors).values().sum()
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The result of one run (`--report json` prints it as one JSON object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The endpoint; with several `--target`s, all of them joined by `,`.
    pub target: String,
    /// With several `--target`s, each one and the streams whose writer and viewer it served
    /// (left out of the JSON with one target, so that report is unchanged).
    #[serde(skip_serializing_if = "is_single")]
    pub targets: Vec<TargetLoad>,
    /// With several `--target`s, `--viewers-on` (`same` or `other`); `None` with one target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewers_on: Option<ViewersOn>,
    /// Concurrent writer streams.
    pub streams: usize,
    /// The client flavour.
    pub client: String,
    /// Points per chunk.
    pub points_per_chunk: u64,
    /// The measured period in seconds (from the start of sending to the last write).
    pub duration_s: f64,
    /// Seconds until every stream was connected (and subscribed, with `--verify`).
    pub connect_s: f64,
    /// Offered points/s; `null` for `--rate max`.
    pub offered_rate: Option<f64>,
    /// Points sent per second of `duration_s`.
    pub achieved_rate: f64,
    /// Points the schedule held (`null` for `--rate max`).
    pub points_scheduled: Option<u64>,
    /// Points written to sockets.
    pub points_sent: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Points the servers' final `200` bodies acknowledged (`null` unless every stream's did).
    pub points_acknowledged: Option<u64>,
    /// Acknowledged points per second, from the start to the last final response: the rate
    /// the server really ingested, kernel buffers drained (`null` as above).
    pub acknowledged_rate: Option<f64>,
    /// Bytes per second of `duration_s`.
    pub bytes_per_s: f64,
    /// Distinct sent points a viewer saw (`null` without `--verify`).
    pub points_verified: Option<u64>,
    /// Sent points never seen: sent − verified − unobserved.
    pub lost: Option<u64>,
    /// Points seen more than once.
    pub duplicated: Option<u64>,
    /// Points seen after a later point of the same stream.
    pub out_of_order: Option<u64>,
    /// Points whose `y` differed from what was sent.
    pub corrupted: Option<u64>,
    /// Points inside a gap the server announced with `reset` (lagged viewer): not proven
    /// delivered, not counted lost.
    pub unobserved: Option<u64>,
    /// Update events that did not continue the previous seq (I5 violations).
    pub seq_gaps: Option<u64>,
    /// `reset` events received by viewers.
    pub viewer_resets: Option<u64>,
    /// Streams whose inspection `digest` differs from the JCS of the sent window.
    pub digest_mismatches: Option<u64>,
    /// Streams whose inspection `last_seq` differs from the points sent.
    pub count_mismatches: Option<u64>,
    /// Writer reconnects.
    pub reconnects: u64,
    /// Errors by status code (`"408"`, ...) and connection errors by kind.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Intended time → written to the socket.
    pub send_latency_ms: Option<Percentiles>,
    /// Intended time → seen by the viewer (`--verify`, open-loop rates).
    pub e2e_latency_ms: Option<Percentiles>,
    /// Write issued → seen by the viewer (`--verify`): `e2e_latency_ms` without the
    /// generator's own lateness, i.e. what the server and the viewer path add.
    pub server_latency_ms: Option<Percentiles>,
    /// True when Ctrl-C cut the run short.
    pub interrupted: bool,
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A one-target verified run with a few losses, for the tests of the report's readers.
    #[cfg(test)]
    pub(crate) fn example() -> Report {
        Report {
            target: "http://h".into(),
            targets: Vec::new(),
            viewers_on: None,
            streams: 1,
            client: "raw".into(),
            points_per_chunk: 1,
            duration_s: 1.0,
            connect_s: 0.0,
            offered_rate: Some(1000.0),
            achieved_rate: 995.0,
            points_scheduled: Some(1000),
            points_sent: 995,
            bytes_sent: 1,
            points_acknowledged: None,
            acknowledged_rate: None,
            bytes_per_s: 1.0,
            points_verified: Some(990),
            lost: Some(5),
            duplicated: Some(0),
            out_of_order: Some(0),
            corrupted: Some(0),
            unobserved: Some(0),
            seq_gaps: Some(0),
            viewer_resets: Some(0),
            digest_mismatches: Some(0),
            count_mismatches: Some(0),
            reconnects: 0,
            errors_by_status: [("503".to_owned(), 2)].into_iter().collect(),
            send_latency_ms: Some(Percentiles {
                p50: 0.1,
                p90: 0.2,
                p99: 0.5,
                p999: 1.0,
                max: 2.0,
                count: 995,
            }),
            e2e_latency_ms: Some(Percentiles {
                p50: 1.0,
                p90: 2.0,
                p99: 60.0,
                p999: 70.0,
                max: 80.0,
                count: 990,
            }),
            server_latency_ms: None,
            interrupted: false,
        }
    }
}

fn is_single(targets: &[TargetLoad]) -> bool {
    targets.len() <= 1
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain counters and histograms: still consistent after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The largest latency recorded (1 h), in microseconds.
const MAX_US: u64 = 3_600_000_000;
/// Samples buffered per task before taking the histogram lock.
const FLUSH_EVERY: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_buffers_merge_into_percentiles() {
        let l = Latencies::default();
        assert_eq!(l.percentiles(), None);
        {
            let mut a = l.local();
            for ms in 1..=100 {
                a.record(Duration::from_millis(ms), 1);
            }
            a.record(Duration::from_secs(2), 1);
        }
        let p = l.percentiles().unwrap_or_else(|| unreachable!());
        assert_eq!(p.count, 101);
        assert!((49.0..=52.0).contains(&p.p50), "{p:?}");
        assert!((1990.0..=2010.0).contains(&p.max), "{p:?}");
    }

    #[test]
    fn json_names_several_targets_and_keeps_the_one_target_shape() {
        let parse = |r: &Report| -> serde_json::Value {
            serde_json::from_str(&r.to_json()).unwrap_or_else(|e| panic!("{e}"))
        };
        let mut r = Report::example();
        let one = parse(&r);
        assert_eq!(one["target"], "http://h");
        assert!(one.get("targets").is_none(), "{one}");
        assert!(one.get("viewers_on").is_none(), "{one}");
        r.target = "http://a:1,http://b:2".to_owned();
        r.viewers_on = Some(ViewersOn::Other);
        r.targets = ["http://a:1", "http://b:2"]
            .into_iter()
            .map(|url| TargetLoad {
                url: url.to_owned(),
                writers: 1,
                viewers: 1,
            })
            .collect();
        let two = parse(&r);
        assert_eq!(two["viewers_on"], "other");
        assert_eq!(
            two["targets"][1],
            serde_json::json!({"url": "http://b:2", "writers": 1, "viewers": 1})
        );
    }
}
