//! The case catalogue: one TOML file per case in `crates/plotstream-cases/cases/`, embedded in
//! the binary by `build.rs` (docs/reliability.md §8). This module is the schema and the loader.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{bail, Error};

type Result<T> = std::result::Result<T, Error>;
use serde::Deserialize;

use crate::dsl::Program;

include!(concat!(env!("OUT_DIR"), "/case_files.rs"));

/// Requirement level (docs/reliability.md, top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Level {
    /// A failure fails CI.
    #[serde(rename = "MUST")]
    Must,
    /// A failure is NON-STRICT; it fails only under `--strict`.
    #[serde(rename = "SHOULD")]
    Should,
    /// Required because a real client depends on it; a failure fails CI.
    #[serde(rename = "COMPAT")]
    Compat,
    /// Recorded, never failed, but the same in every segmentation mode.
    #[serde(rename = "INFO")]
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::Compat => "COMPAT",
            Level::Info => "INFO",
        })
    }
}

/// How the bytes are cut into writes (docs/reliability.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Segmentation {
    /// W: every pause-separated part in one write.
    Whole,
    /// W, but also cut at every `|` of the program: the writes a real client makes.
    Timed,
    /// O: W plus one cut after byte k.
    Split,
    /// B: one byte per write.
    Bytewise,
}

impl fmt::Display for Segmentation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segmentation::Whole => "whole",
            Segmentation::Timed => "timed",
            Segmentation::Split => "split",
            Segmentation::Bytewise => "bytewise",
        })
    }
}

/// The server configuration a case needs (`[reg]`, `[len]`, `[rej]` in §5; accounts for group K).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// `open` (default) or `registered`.
    #[serde(default)]
    pub tokens: TokensMode,
    /// `strict` (default) or `lenient`.
    #[serde(default)]
    pub lines: LinesMode,
    /// `takeover` (default) or `reject`.
    #[serde(default)]
    pub on_duplicate: DuplicateMode,
    /// The target has accounts (group K): `--target-accounts`, else `--target`.
    #[serde(default)]
    pub accounts: bool,
    /// Tokens the target must know in registered mode. The runner registers fresh tokens for
    /// every placeholder of length 10, so this is documentation.
    #[serde(default)]
    pub registered: Vec<String>,
}

/// `--tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokensMode {
    /// Any well-formed token names a stream.
    #[default]
    Open,
    /// Only registered tokens are admitted.
    Registered,
}

/// `--lenient-lines` or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinesMode {
    /// The first bad line gets 422.
    #[default]
    Strict,
    /// Bad lines are skipped and counted.
    Lenient,
}

/// `--on-duplicate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateMode {
    /// The new writer displaces the old one.
    #[default]
    Takeover,
    /// The new writer gets 423.
    Reject,
}

impl Setup {
    /// Which target serves this setup: `None` for the default one.
    pub fn kind(&self) -> Option<SetupKind> {
        if self.tokens == TokensMode::Registered {
            Some(SetupKind::Registered)
        } else if self.lines == LinesMode::Lenient {
            Some(SetupKind::Lenient)
        } else if self.on_duplicate == DuplicateMode::Reject {
            Some(SetupKind::Reject)
        } else if self.accounts {
            Some(SetupKind::Accounts)
        } else {
            None
        }
    }

    fn n_special(&self) -> usize {
        usize::from(self.tokens == TokensMode::Registered)
            + usize::from(self.lines == LinesMode::Lenient)
            + usize::from(self.on_duplicate == DuplicateMode::Reject)
            + usize::from(self.accounts)
    }
}

/// A non-default server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetupKind {
    /// `--tokens registered`.
    Registered,
    /// `--lenient-lines`.
    Lenient,
    /// `--on-duplicate reject`.
    Reject,
    /// Accounts (plotstream: `serve --users FILE`); `--target` when no accounts target is given.
    Accounts,
}

impl fmt::Display for SetupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetupKind::Registered => "registered",
            SetupKind::Lenient => "lenient",
            SetupKind::Reject => "reject",
            SetupKind::Accounts => "accounts",
        })
    }
}

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

/// One step of a multi-connection script.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    /// The connection this step acts on (opened at its first `send`).
    pub conn: Option<String>,
    /// Bytes (DSL) to send on `conn`.
    pub send: Option<String>,
    /// Wait until inspection shows at least these `last_seq` values.
    pub wait_acc: Option<BTreeMap<String, u64>>,
    /// Wait until this connection has a final response.
    pub wait_status: Option<String>,
    /// Sleep this many milliseconds.
    pub pause: Option<u64>,
    /// After this step's send, wait for `conn`'s response (which ends the connection for the
    /// script) and bind each variable `$name` to the string its body holds at the JSON pointer
    /// (`{ fid = "/file/fid" }`); an absolute URL binds its path and query, what a request line
    /// names. Later steps and the expectations may use them.
    pub capture: Option<BTreeMap<String, String>>,
}

/// One case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    id: String,
    title: String,
    level: Level,
    #[serde(default)]
    anchor: Vec<String>,
    #[serde(default)]
    setup: Setup,
    #[serde(default)]
    tokens: BTreeMap<String, usize>,
    segmentation: Option<Vec<Segmentation>>,
    observe: Option<Vec<String>>,
    skip: Option<String>,
    #[serde(default)]
    timers: bool,
    wait_ms: Option<u64>,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    quiet: bool,
    note: Option<String>,
    driver: Option<String>,
    count: Option<u64>,
    #[serde(flatten)]
    body: VariantBody,
    #[serde(default)]
    variant: Vec<VariantFile>,
}

/// What a variant runs and expects; also the top level of a one-variant case.
#[derive(Debug, Clone, Default, Deserialize)]
struct VariantBody {
    bytes: Option<String>,
    script: Option<Vec<ScriptStep>>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    expect_conn: BTreeMap<String, Vec<Expect>>,
    repeat: Option<u32>,
    min_pass: Option<u32>,
    parallel: Option<u32>,
    keep_writing: Option<bool>,
    viewer: Option<bool>,
    optimized: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    name: String,
    setup: Option<Setup>,
    segmentation: Option<Vec<Segmentation>>,
    wait_ms: Option<u64>,
    skip: Option<String>,
    #[serde(flatten)]
    body: VariantBody,
}

/// A loaded case.
#[derive(Debug, Clone)]
pub struct Case {
    /// `B5`.
    pub id: String,
    /// One line.
    pub title: String,
    /// Requirement level.
    pub level: Level,
    /// Citations.
    pub anchor: Vec<String>,
    /// Token placeholders and the length of the fresh token each one becomes (1 to
    /// [`MAX_TOKEN_LEN`]).
    pub tokens: BTreeMap<String, usize>,
    /// Always skipped, with this reason (a precondition the runner cannot provide).
    pub skip: Option<String>,
    /// Pauses and timing bounds are timer-relative and scale with `--timer-scale`.
    pub timers: bool,
    /// No other run may be in flight while this case runs, not even its own (one at a time).
    pub exclusive: bool,
    /// Latency bounds: run while no other case runs (its own runs may overlap).
    pub quiet: bool,
    /// Free text shown with the verdict.
    pub note: Option<String>,
    /// A named driver for what bytes cannot say (`peer_limit`, `issue_tokens`).
    pub driver: Option<String>,
    /// The driver's count.
    pub count: Option<u64>,
    /// Mode results compared across modes besides status, acc and rejected.
    pub observe_digest: bool,
    /// The variants: at least one, unless the case has a driver or a skip reason.
    pub variants: Vec<Variant>,
}

/// What one variant of a case sends and accepts.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Empty for a one-variant case.
    pub name: String,
    /// The server configuration it needs.
    pub setup: Setup,
    /// The modes it runs in.
    pub segmentation: Vec<Segmentation>,
    /// How long to wait for a response (unscaled ms).
    pub wait_ms: u64,
    /// Always skipped, with this reason.
    pub skip: Option<String>,
    /// Single-connection bytes.
    pub bytes: Option<Program>,
    /// The DSL text of `bytes`, for reports.
    pub bytes_text: Option<String>,
    /// Multi-connection script: steps with their parsed programs.
    pub script: Vec<(ScriptStep, Option<Program>)>,
    /// The acceptable outcomes.
    pub expect: Vec<Expect>,
    /// Per-connection outcomes of a script.
    pub expect_conn: BTreeMap<String, Vec<Expect>>,
    /// Run the connection this many times in a row on the same tokens.
    pub repeat: u32,
    /// How many of the repeats must match.
    pub min_pass: u32,
    /// Run this many independent copies at once, each with its own tokens.
    pub parallel: u32,
    /// Keep writing after the response arrives (E8).
    pub keep_writing: bool,
    /// Watch the stream through an SSE viewer and check its framing.
    pub viewer: bool,
    /// A performance floor that holds for optimized builds only.
    pub optimized: bool,
    /// The bytes or expectations use the account (`$user`, `$key`, `$auth`, …): without
    /// `--credentials` the variant is skipped.
    pub needs_credentials: bool,
    /// The bytes or expectations use `$sid`: without `--stream-id` the variant is skipped.
    pub needs_stream_id: bool,
}

impl Case {
    /// The group: the id's letter (`A`–`E`, `Q`, `V`, `K`).
    pub fn group(&self) -> &str {
        &self.id[..1]
    }

    /// Whether some variant needs the inspection route.
    pub fn needs_inspection(&self) -> bool {
        self.variants.iter().any(|v| {
            v.expect.iter().any(Expect::needs_inspection)
                || !v.script.is_empty() && v.script.iter().any(|(s, _)| s.wait_acc.is_some())
        })
    }

    /// Whether the case must run with no other case in flight: it says so (`exclusive`,
    /// `quiet`), reads `/metrics` deltas, drives connection limits, or streams to the one
    /// `$sid` (two writers on one stream id would take it over from each other).
    pub fn needs_exclusive(&self) -> bool {
        self.exclusive
            || self.quiet
            || self.driver.as_deref() == Some("peer_limit")
            || self.variants.iter().any(|v| v.needs_stream_id)
            || self
                .variants
                .iter()
                .any(|v| v.expect.iter().any(Expect::needs_metrics))
    }

    /// A fixed substitution for runners without a server, where runs never share a stream:
    /// each placeholder becomes itself padded with `x` or cut to its length (`tok1` →
    /// `tok1xxxxxx`; `abcdef1234` stays), made distinct with digits if two would meet (a
    /// number alone, longer than the placeholder's length, if that is too short to hold one).
    pub fn fixed_tokens(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (idx, (name, len)) in self.tokens.iter().enumerate() {
            let own: String = name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .chain(std::iter::repeat('x'))
                .take(*len)
                .collect();
            let mut token = own.clone();
            // Numbers idx, idx + n, idx + 2n, …: no two placeholders try the same one, and
            // once a number is longer than `len` it stands alone, so the loop ends.
            let mut number = idx;
            while out.iter().any(|(_, t)| *t == token) {
                let digits = number.to_string();
                token = own[..len.saturating_sub(digits.len())].to_owned() + &digits;
                number += self.tokens.len();
            }
            out.push((name.clone(), token));
        }
        out
    }

    /// The number after the group letter, for sorting.
    fn number(&self) -> u32 {
        self.id[1..].parse().unwrap_or(u32::MAX)
    }
}

/// Every case of the catalogue, in catalogue order (A–E, Q, V, K; by number).
pub fn catalogue() -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (file, text) in CASE_FILES {
        let case = parse_case(text).map_err(|e| e.at(format!("cases/{file}")))?;
        let expected_file = format!("{}.toml", case.id);
        if *file != expected_file {
            bail!(
                Case,
                "cases/{file} holds case {}; name it {expected_file}",
                case.id
            );
        }
        cases.push(case);
    }
    cases.sort_by_key(|c| (group_rank(c.group()), c.number()));
    Ok(cases)
}

/// Parses one case file.
pub fn parse_case(text: &str) -> Result<Case> {
    let file: CaseFile = toml::from_str(text)?;
    if !file.id.chars().next().is_some_and(|c| GROUPS.contains(c)) {
        bail!(Case, "id {} is not in groups A–E, Q, V or K", file.id);
    }
    let mut tokens: BTreeMap<String, usize> = [("tok1", 10), ("tok2", 10), ("nosuch", 10)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (name, len) in &file.tokens {
        if !(1..=MAX_TOKEN_LEN).contains(len) {
            bail!(
                Case,
                "token placeholder {name}: length {len} is not 1 to {MAX_TOKEN_LEN} (MAX_TOKEN_LEN)"
            );
        }
    }
    tokens.extend(file.tokens.clone());
    let base_segmentation = file.segmentation.clone().unwrap_or_else(|| {
        if file.timers {
            vec![Segmentation::Timed, Segmentation::Bytewise]
        } else {
            vec![
                Segmentation::Whole,
                Segmentation::Split,
                Segmentation::Bytewise,
            ]
        }
    });
    let base_wait = file.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    let mut raw = file.variant.clone();
    let top_has_body = file.body.bytes.is_some() || file.body.script.is_some();
    if top_has_body {
        if !raw.is_empty() {
            bail!(
                Case,
                "a case has either top-level bytes/script or [[variant]]s, not both"
            );
        }
        raw.push(VariantFile {
            name: String::new(),
            setup: None,
            segmentation: None,
            wait_ms: None,
            skip: None,
            body: file.body.clone(),
        });
    } else if !file.body.expect.is_empty() && !raw.is_empty() {
        bail!(Case, "top-level expect without top-level bytes");
    }
    if raw.is_empty() && file.skip.is_none() && file.driver.is_none() {
        bail!(
            Case,
            "a case needs bytes, a script, variants, a driver or a skip reason"
        );
    }
    let mut variants = Vec::new();
    for v in raw {
        let setup = v.setup.unwrap_or_else(|| file.setup.clone());
        if setup.n_special() > 1 {
            bail!(
                Case,
                "variant {:?}: at most one of registered, lenient, reject",
                v.name
            );
        }
        let bytes = v
            .body
            .bytes
            .as_deref()
            .map(Program::parse)
            .transpose()
            .map_err(|e| e.at(format!("variant {:?}: bytes", v.name)))?;
        let mut script = Vec::new();
        for step in v.body.script.clone().unwrap_or_default() {
            let program = step
                .send
                .as_deref()
                .map(Program::parse)
                .transpose()
                .map_err(|e| e.at(format!("variant {:?}: script", v.name)))?;
            if step.send.is_some() && step.conn.is_none() {
                bail!(Case, "variant {:?}: a send step needs conn", v.name);
            }
            script.push((step, program));
        }
        if bytes.is_some() != script.is_empty() {
            bail!(
                Case,
                "variant {:?}: exactly one of bytes and script",
                v.name
            );
        }
        if v.body.expect.is_empty() && v.body.expect_conn.is_empty() && v.skip.is_none() {
            bail!(Case, "variant {:?}: no expect", v.name);
        }
        for e in v
            .body
            .expect
            .iter()
            .chain(v.body.expect_conn.values().flatten())
        {
            for t in e
                .acc
                .keys()
                .chain(e.window.keys())
                .chain(e.window_keys.keys())
                .chain(e.converted.keys())
                .chain(e.maxpoints.keys())
            {
                if !tokens.contains_key(t) {
                    bail!(
                        Case,
                        "variant {:?}: `{t}` is not a declared token placeholder",
                        v.name
                    );
                }
            }
        }
        let (needs_credentials, needs_stream_id) = check_variables(&v.body)
            .map_err(|e| e.at(format!("variant {:?}: variables", v.name)))?;
        let repeat = v.body.repeat.unwrap_or(1).max(1);
        variants.push(Variant {
            name: v.name,
            setup,
            segmentation: v.segmentation.unwrap_or_else(|| base_segmentation.clone()),
            wait_ms: v.wait_ms.unwrap_or(base_wait),
            skip: v.skip,
            bytes,
            bytes_text: v.body.bytes,
            script,
            expect: v.body.expect,
            expect_conn: v.body.expect_conn,
            repeat,
            min_pass: v.body.min_pass.unwrap_or(repeat),
            parallel: v.body.parallel.unwrap_or(1).max(1),
            keep_writing: v.body.keep_writing.unwrap_or(false),
            viewer: v.body.viewer.unwrap_or(false),
            optimized: v.body.optimized.unwrap_or(false),
            needs_credentials,
            needs_stream_id,
        });
    }
    let observe_digest = file
        .observe
        .as_ref()
        .is_none_or(|o| o.iter().any(|x| x == "digest"));
    Ok(Case {
        id: file.id,
        title: file.title,
        level: file.level,
        anchor: file.anchor,
        tokens,
        skip: file.skip,
        timers: file.timers,
        exclusive: file.exclusive,
        quiet: file.quiet,
        note: file.note,
        driver: file.driver,
        count: file.count,
        observe_digest,
        variants,
    })
}

/// Checks that every variable a variant uses is an account variable or a capture of an earlier
/// step whose connection no later step sends on; returns whether it uses the credentials and
/// whether it uses the stream id.
fn check_variables(body: &VariantBody) -> Result<(bool, bool)> {
    let mut known: Vec<String> = ACCOUNT_VARIABLES
        .iter()
        .map(|v| (*v).to_owned())
        .chain(std::iter::once(STREAM_ID_VARIABLE.to_owned()))
        .collect();
    let mut used: Vec<String> = Vec::new();
    let mut use_text = |text: &str, known: &[String]| -> Result<()> {
        for v in crate::dsl::variables(text) {
            if !known.contains(&v) {
                bail!(
                    Case,
                    "`{v}` is neither an account variable nor captured by an earlier step"
                );
            }
            used.push(v);
        }
        Ok(())
    };
    if let Some(bytes) = &body.bytes {
        use_text(bytes, &known)?;
    }
    let steps = body.script.as_deref().unwrap_or_default();
    let mut ended: Vec<&str> = Vec::new();
    for step in steps {
        if let (Some(conn), Some(send)) = (&step.conn, &step.send) {
            if ended.contains(&conn.as_str()) {
                bail!(
                    Case,
                    "connection {conn} sends after its response was captured"
                );
            }
            use_text(send, &known)?;
        }
        if let Some(capture) = &step.capture {
            let Some(conn) = &step.conn else {
                bail!(Case, "a capture step needs conn");
            };
            ended.push(conn);
            for (name, pointer) in capture {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    bail!(Case, "capture {name}: {pointer:?} is not a JSON pointer");
                }
                let var = format!("${name}");
                if known.contains(&var) || crate::dsl::variables(&var) != [var.clone()] {
                    bail!(Case, "capture {name}: name a new variable of [A-Za-z0-9_]");
                }
                known.push(var);
            }
        }
    }
    for e in body
        .expect
        .iter()
        .chain(body.expect_conn.values().flatten())
    {
        let texts = e
            .body
            .iter()
            .chain(&e.body_contains)
            .chain(&e.body_lacks)
            .chain(e.headers.values())
            .chain(e.headers_contain.values());
        for text in texts {
            use_text(text, &known)?;
        }
    }
    let credentials = used.iter().any(|v| ACCOUNT_VARIABLES.contains(&v.as_str()));
    let stream_id = used.iter().any(|v| v == STREAM_ID_VARIABLE);
    Ok((credentials, stream_id))
}

fn group_rank(g: &str) -> usize {
    GROUPS.find(g).unwrap_or(usize::MAX)
}

/// The groups, in catalogue order: docs/reliability.md §5 (A–E, Q), docs/protocol.md §9.2 (V), and
/// accounts and ownership (K).
const GROUPS: &str = "ABCDEQVK";
/// The variables of `--credentials USER:KEY` (see the DSL).
pub const ACCOUNT_VARIABLES: [&str; 5] = ["$user", "$key", "$auth", "$wrong_key", "$wrong_auth"];
/// The variable of `--stream-id TOKEN`.
pub const STREAM_ID_VARIABLE: &str = "$sid";

/// The longest token placeholder (`tokens = { name = length }`): tokens are at most 64
/// characters (docs/protocol.md), so this leaves room for cases about longer ones.
pub const MAX_TOKEN_LEN: usize = 1024;

/// The response wait of §5: "the runner waits for a response (2 s, scaled)".
pub const DEFAULT_WAIT_MS: u64 = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_loads() {
        let cases = catalogue().unwrap();
        assert!(cases.len() > 100);
    }

    /// Found while writing `check_conform_dsl` (fuzz target `conform_dsl`): a placeholder's
    /// length was trusted (`tokens = { t = 100000000000 }` made a token that long, an abort
    /// when the allocation failed; length 0 made an empty token), and a token made distinct
    /// with a number could meet another placeholder's (`ab`, `ab2`, `abx` of length 3 gave
    /// `abx`, `ab2`, `ab2`).
    #[test]
    fn fuzz_token_placeholders_are_bounded_and_distinct() {
        let case = |tokens: &str| {
            parse_case(&format!(
                "id = \"A1\"\ntitle = \"t\"\nlevel = \"MUST\"\ntokens = {tokens}\nbytes = 'H'\nexpect = [{{ status = 200 }}]\n"
            ))
        };
        for bad in ["{ t = 100000000000 }", "{ t = 0 }", "{ t = 1025 }"] {
            let err = case(bad).unwrap_err().to_string();
            assert!(err.contains("MAX_TOKEN_LEN"), "{bad}: {err}");
        }
        assert!(case("{ t = 1024 }").is_ok());
        let fixed: BTreeMap<String, String> = case("{ ab = 3, ab2 = 3, abx = 3 }")
            .unwrap()
            .fixed_tokens()
            .into_iter()
            .collect();
        assert_eq!(fixed["ab"], "abx");
        assert_eq!(fixed["ab2"], "ab2");
        assert!(
            !["abx", "ab2"].contains(&fixed["abx"].as_str()),
            "{fixed:?}"
        );
        assert_eq!(fixed["abx"].len(), 3);
        // Too short to hold a distinguishing digit: a number alone.
        let fixed = case("{ a = 1, a0 = 1, a1 = 1, a2 = 1 }")
            .unwrap()
            .fixed_tokens();
        let mut tokens: Vec<&str> = fixed.iter().map(|(_, t)| t.as_str()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), fixed.len(), "{fixed:?}");
    }

    #[test]
    fn fixed_tokens_keep_their_lengths_and_differ() {
        for case in catalogue().unwrap() {
            let fixed = case.fixed_tokens();
            for (name, token) in &fixed {
                assert_eq!(token.len(), case.tokens[name], "{} {name}", case.id);
                assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
            }
            let mut tokens: Vec<&String> = fixed.iter().map(|(_, t)| t).collect();
            tokens.sort();
            tokens.dedup();
            assert_eq!(tokens.len(), fixed.len(), "{}", case.id);
        }
        let case = parse_case(
            "id = \"A1\"\ntitle = \"t\"\nlevel = \"MUST\"\ntokens = { abcdef1234 = 10, t = 3, tx = 3 }\nbytes = 'H'\nexpect = [{ status = 200 }]\n",
        )
        .unwrap();
        let fixed: BTreeMap<String, String> = case.fixed_tokens().into_iter().collect();
        assert_eq!(fixed["tok1"], "tok1xxxxxx");
        assert_eq!(fixed["abcdef1234"], "abcdef1234");
        assert_eq!(fixed["t"], "txx");
        assert_ne!(fixed["tx"], "txx");
    }
}
