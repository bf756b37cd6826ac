//! Counters for `GET /metrics` (Prometheus text format, docs/serve.md routes,
//! docs/reliability.md §4.3).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Server-wide counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Gauge: open connections.
    pub connections_open: AtomicU64,
    /// Counter: accepted connections.
    pub connections_total: AtomicU64,
    /// Counter: accept errors (L39).
    pub accept_errors: AtomicU64,
    /// Gauge-ish: streams created.
    pub streams: AtomicU64,
    /// Counter: accepted trace-update lines.
    pub points: AtomicU64,
    /// Counter: points kept in history (docs/history.md).
    pub history_points: AtomicU64,
    /// Counter: history chunks retention dropped (age, L59, L60).
    pub history_chunks_dropped: AtomicU64,
    /// Gauge: history bytes of every stream (L60's count).
    pub history_bytes: AtomicU64,
    /// Gauge: L59, a stream's history bytes (0 when no history is kept).
    pub history_stream_limit: AtomicU64,
    /// Gauge: L60, all streams' history bytes (0 when no history is kept).
    pub history_total_limit: AtomicU64,
    /// Counter: heartbeats.
    pub heartbeats: AtomicU64,
    /// Counter: lines from displaced writers, discarded (P7).
    pub displaced_lines: AtomicU64,
    /// Counter: takeovers.
    pub takeovers: AtomicU64,
    /// Counter (several nodes): lines this node's writers added that it published live.
    pub live_lines_out: AtomicU64,
    /// Counter (several nodes): lines that skipped the live path, the outbox full (L58).
    pub live_lines_skipped: AtomicU64,
    /// Counter (several nodes): lines of other nodes' writers applied here from the live
    /// path (the rest came from the stored lines).
    pub live_lines_in: AtomicU64,
    /// Gauge: live viewer subscriptions (one per stream a session follows), counted by
    /// `ViewerGuard`s: the L37 total.
    pub viewers: AtomicU64,
    /// Counter: viewers dropped (L35 third lag, L36).
    pub viewers_dropped: AtomicU64,
    /// Gauge (a high-water mark): the most bytes one viewer had queued at once since the
    /// server started, updates fanned out and not yet written to its socket; at most the L35
    /// byte bound (or one larger update).
    pub viewer_queued_bytes_max: AtomicU64,
    /// Counter: group commits of the durable store (docs/storage.md).
    pub store_commits: AtomicU64,
    /// Counter: microseconds spent in them (with `store_commits`, the mean commit time).
    pub store_commit_micros: AtomicU64,
    /// Counter: commits that failed (a full disk, an I/O error: D5).
    pub store_errors: AtomicU64,
    /// Gauge: 1 while the store cannot write (D5), else 0.
    pub store_failing: AtomicU64,
    labelled: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    /// Counts a response by status.
    pub fn response(&self, status: u16) {
        self.inc("plotstream_responses_total", format!("status=\"{status}\""));
    }

    /// Counts a limit breach by L-number.
    pub fn limit_breach(&self, limit: &str) {
        self.inc(
            "plotstream_limit_breaches_total",
            format!("limit=\"{limit}\""),
        );
    }

    /// Counts a line rejected under `--lenient-lines`, by reason.
    pub fn line_rejected(&self, reason: &str) {
        self.inc(
            "plotstream_lines_rejected_total",
            format!("reason=\"{reason}\""),
        );
    }

    /// Counts a viewer reset by reason.
    pub fn viewer_reset(&self, reason: &str) {
        self.inc(
            "plotstream_viewer_resets_total",
            format!("reason=\"{reason}\""),
        );
    }

    /// Counts an injected fault by kind.
    pub fn fault(&self, kind: &str) {
        self.inc(
            "plotstream_faults_injected_total",
            format!("kind=\"{kind}\""),
        );
    }

    fn inc(&self, name: &'static str, labels: String) {
        let mut map = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry((name, labels)).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let plain = [
            (
                "plotstream_connections_open",
                "gauge",
                &self.connections_open,
            ),
            (
                "plotstream_connections_total",
                "counter",
                &self.connections_total,
            ),
            (
                "plotstream_accept_errors_total",
                "counter",
                &self.accept_errors,
            ),
            ("plotstream_streams", "gauge", &self.streams),
            ("plotstream_points_ingested_total", "counter", &self.points),
            (
                "plotstream_history_points_total",
                "counter",
                &self.history_points,
            ),
            (
                "plotstream_history_chunks_dropped_total",
                "counter",
                &self.history_chunks_dropped,
            ),
            ("plotstream_history_bytes", "gauge", &self.history_bytes),
            (
                "plotstream_history_stream_bytes_limit",
                "gauge",
                &self.history_stream_limit,
            ),
            (
                "plotstream_history_bytes_limit",
                "gauge",
                &self.history_total_limit,
            ),
            ("plotstream_heartbeats_total", "counter", &self.heartbeats),
            (
                "plotstream_displaced_lines_total",
                "counter",
                &self.displaced_lines,
            ),
            ("plotstream_takeovers_total", "counter", &self.takeovers),
            (
                "plotstream_live_lines_out_total",
                "counter",
                &self.live_lines_out,
            ),
            (
                "plotstream_live_lines_skipped_total",
                "counter",
                &self.live_lines_skipped,
            ),
            (
                "plotstream_live_lines_in_total",
                "counter",
                &self.live_lines_in,
            ),
            ("plotstream_viewers", "gauge", &self.viewers),
            (
                "plotstream_viewers_dropped_total",
                "counter",
                &self.viewers_dropped,
            ),
            (
                "plotstream_viewer_queued_bytes_max",
                "gauge",
                &self.viewer_queued_bytes_max,
            ),
            (
                "plotstream_store_commits_total",
                "counter",
                &self.store_commits,
            ),
            (
                "plotstream_store_commit_micros_total",
                "counter",
                &self.store_commit_micros,
            ),
            (
                "plotstream_store_errors_total",
                "counter",
                &self.store_errors,
            ),
            ("plotstream_store_failing", "gauge", &self.store_failing),
        ];
        for (name, kind, v) in plain {
            let _ = writeln!(
                out,
                "# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let map = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last = "";
        for ((name, labels), v) in map.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
        out
    }
}
