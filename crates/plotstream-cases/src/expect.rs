//! What a case accepts: the expectation schema (status, end, lines accepted, headers, body,
//! timing, window, metrics), one acceptable outcome per [`Expect`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// `status = 400` or `status = "none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// A complete response with this code.
    Code(u16),
    /// `"none"`: no response at all.
    Word(NoStatus),
}

/// The word `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoStatus {
    /// No response.
    None,
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum End {
    /// FIN (after the response, if there is one).
    Fin,
    /// FIN without any response.
    Silent,
    /// Neither FIN nor reset within the wait.
    Open,
    /// A reset after a complete response (only E8-like cases allow it).
    RstAfterStatus,
    /// A reset with no complete response before it.
    Rst,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::Fin => "fin",
            End::Silent => "silent",
            End::Open => "open",
            End::RstAfterStatus => "rst-after-status",
            End::Rst => "rst",
        })
    }
}

/// One acceptable outcome; a result passes if it matches any member of the set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The final status, or `"none"`.
    pub status: Option<StatusSpec>,
    /// How the connection ended; a status defaults to `fin`, `"none"` to `silent`.
    pub end: Option<End>,
    /// Lines accepted per token placeholder (inspection `last_seq`).
    #[serde(default)]
    pub acc: BTreeMap<String, u64>,
    /// `rejected_lines` of `tok1`.
    pub rejected: Option<u64>,
    /// Response headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Milliseconds from the origin (`mark`, else the last write before it) to the status (or
    /// to the end when there is no status). Timer cases scale it with `--timer-scale`.
    pub within_ms: Option<[u64; 2]>,
    /// Milliseconds from the last write to the FIN.
    pub fin_within_ms: Option<[u64; 2]>,
    /// Whether an interim `100 Continue` must (true) or must not (false) come.
    #[serde(rename = "continue")]
    pub continue_: Option<bool>,
    /// Milliseconds from the end of the head's write to the `100 Continue`.
    pub continue_ms: Option<[u64; 2]>,
    /// The exact response body.
    pub body: Option<String>,
    /// A substring of the response body.
    pub body_contains: Option<String>,
    /// Substrings the response body must not contain (a write token, a raw hostile name).
    #[serde(default)]
    pub body_lacks: Vec<String>,
    /// Response headers that must be present with a value containing this (`""`: present).
    #[serde(default)]
    pub headers_contain: BTreeMap<String, String>,
    /// `false`: no `<script>` element of the (HTML) body has content, every script comes from
    /// its `src`; `true`: some element has.
    pub inline_script: Option<bool>,
    /// The exact inspection `window` per token placeholder.
    #[serde(default)]
    pub window: BTreeMap<String, serde_json::Value>,
    /// The exact set of window attribute names per token placeholder.
    #[serde(default)]
    pub window_keys: BTreeMap<String, Vec<String>>,
    /// The L-number whose breach counter should fire (observed in `/metrics`; see `--require-limit-counters`).
    pub limit: Option<String>,
    /// Exact deltas of `/metrics` samples over the run, e.g. `plotstream_heartbeats_total = 190`.
    #[serde(default)]
    pub metrics: BTreeMap<String, u64>,
    /// A floor on body throughput: payload bytes / (status time − first byte), in MB/s.
    pub min_mbps: Option<f64>,
    /// The window per token placeholder when its `x` values are converted timestamps.
    #[serde(default)]
    pub converted: BTreeMap<String, Converted>,
    /// Values at JSON pointers of the (JSON) response body, e.g. `"/error" = ""`.
    #[serde(default)]
    pub body_json: BTreeMap<String, serde_json::Value>,
    /// The inspection `maxpoints` per token placeholder.
    #[serde(default)]
    pub maxpoints: BTreeMap<String, u64>,
}

/// A window whose `x` values the server converted (`plotly-convertTimestamp`, docs/protocol.md
/// §3.7): exactly `{x, y}`, `y` these values, and `x` the wall-clock times T0 + `x_millis` in
/// `zone` as `YYYY-MM-DD HH:MM:SS.ffffff`, where T0 is when the server admitted the request:
/// within the run, and the same for every value when the variant is one connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Converted {
    /// The IANA zone the head named.
    pub zone: String,
    /// The `x` values the client sent: milliseconds since T0.
    pub x_millis: Vec<i64>,
    /// The `y` values, as stored.
    pub y: Vec<serde_json::Value>,
}

impl Expect {
    /// The status this member requires, if any: `Some(None)` means no response.
    pub fn status(&self) -> Option<Option<u16>> {
        self.status.map(|s| match s {
            StatusSpec::Code(c) => Some(c),
            StatusSpec::Word(NoStatus::None) => None,
        })
    }

    /// The required end, with the defaults applied.
    pub fn end(&self) -> Option<End> {
        self.end.or(match self.status() {
            Some(Some(_)) => Some(End::Fin),
            Some(None) => Some(End::Silent),
            None => None,
        })
    }

    /// Whether checking this member needs the inspection route.
    pub fn needs_inspection(&self) -> bool {
        !self.acc.is_empty()
            || self.rejected.is_some()
            || !self.window.is_empty()
            || !self.window_keys.is_empty()
            || !self.converted.is_empty()
            || !self.maxpoints.is_empty()
    }

    /// Whether checking this member needs `/metrics`.
    pub fn needs_metrics(&self) -> bool {
        self.limit.is_some() || !self.metrics.is_empty()
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match self.status() {
            Some(Some(c)) => parts.push(format!("status={c}")),
            Some(None) => parts.push("status=none".to_owned()),
            None => {}
        }
        if let Some(end) = self.end() {
            parts.push(format!("end={end}"));
        }
        if !self.acc.is_empty() {
            let acc: Vec<String> = self.acc.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("acc{{{}}}", acc.join(",")));
        }
        if let Some(r) = self.rejected {
            parts.push(format!("rejected={r}"));
        }
        for (k, v) in &self.headers {
            parts.push(format!("{k}: {v}"));
        }
        if let Some([a, b]) = self.within_ms {
            parts.push(format!("within {a}..{b} ms"));
        }
        if let Some([a, b]) = self.fin_within_ms {
            parts.push(format!("FIN within {a}..{b} ms"));
        }
        if let Some(c) = self.continue_ {
            parts.push(format!("100-continue={c}"));
        }
        if let Some([a, b]) = self.continue_ms {
            parts.push(format!("100 within {a}..{b} ms"));
        }
        if let Some(b) = &self.body {
            parts.push(format!("body={b:?}"));
        }
        if let Some(b) = &self.body_contains {
            parts.push(format!("body~{b:?}"));
        }
        for b in &self.body_lacks {
            parts.push(format!("body!~{b:?}"));
        }
        for (k, v) in &self.headers_contain {
            parts.push(format!("{k}~{v:?}"));
        }
        if let Some(i) = self.inline_script {
            parts.push(format!("inline-script={i}"));
        }
        for (k, v) in &self.window {
            parts.push(format!("window[{k}]={v}"));
        }
        for (k, v) in &self.window_keys {
            parts.push(format!("keys[{k}]={v:?}"));
        }
        if let Some(l) = &self.limit {
            parts.push(format!("limit={l}"));
        }
        for (k, v) in &self.metrics {
            parts.push(format!("Δ{k}={v}"));
        }
        if let Some(m) = self.min_mbps {
            parts.push(format!("≥{m} MB/s"));
        }
        for (k, c) in &self.converted {
            parts.push(format!(
                "window[{k}]={{x=T0+{:?} ms in {}, y={:?}}}",
                c.x_millis, c.zone, c.y
            ));
        }
        for (k, v) in &self.body_json {
            parts.push(format!("body{k}={v}"));
        }
        for (k, v) in &self.maxpoints {
            parts.push(format!("maxpoints[{k}]={v}"));
        }
        write!(f, "{{{}}}", parts.join(", "))
    }
}
