//! A loaded case and its variants, what the runners read: the output of the loader
//! (`load.rs`, which reads the case files of docs/reliability.md §8).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::dsl::Program;
use crate::expect::Expect;
use crate::setup::{Level, Segmentation, Setup};

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
    pub(crate) fn number(&self) -> u32 {
        self.id[1..].parse().unwrap_or(u32::MAX)
    }
}

/// The longest token placeholder (`tokens = { name = length }`): tokens are at most 64
/// characters (docs/protocol.md), so this leaves room for cases about longer ones.
pub const MAX_TOKEN_LEN: usize = 1024;
