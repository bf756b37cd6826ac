//! The case catalogue (`crates/plotstream-cases/cases/*.toml`, the cases `plotstream conform`
//! sends over sockets) run through the `Ingest` state machine: every variant whose outcome one
//! request on one connection decides, in every segmentation mode of docs/reliability.md §7 (whole,
//! timed, split at every offset up to 4 KiB and at the interesting ones beyond, one byte per
//! write), each mode giving the same outcome. One trial per variant.
//!
//! The driver is permissive: every head is admitted and every line accepted, which is what the
//! default setup (open tokens, takeover, no other writer) amounts to for one connection;
//! `--lenient-lines` is `IngestConfig::lenient_lines`. What a variant expects is judged where
//! the machine decides it: the status, how the connection ends (`fin`, `silent`, `open`), the
//! lines accepted per token, lenient rejects, the response's headers and body, `100 Continue`,
//! and the heartbeats counted. What the store, the clock or the server's metrics decide (windows,
//! timing bounds, limit counters) is left to the socket runner.
//!
//! Every other variant is classified, with its reason, and printed at the start: timers, several
//! connections, other server configurations, resets, and heads for another route (which every
//! mode must hand off the same way, checked here too). The run fails if fewer variants are
//! judged than the hand-written catalogue this replaced judged (242).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fmt::Write as _;

use libtest_mimic::{Arguments, Failed, Trial};
use plotstream_cases::segment::{self, Step};
use plotstream_cases::{
    payload, substitute_text, Case, End, Expect, Item, Segmentation, SetupKind, Variant,
};
use plotstream_proto::ingest::run_to_end;
use plotstream_proto::{Event, IngestConfig, Update};

fn main() {
    let args = Arguments::from_args();
    let cases = plotstream_cases::catalogue().expect("the catalogue loads");
    let mut summary = Summary::default();
    let mut trials = Vec::new();
    for case in &cases {
        if case.variants.is_empty() {
            let reason = if case.driver.is_some() {
                DRIVER
            } else {
                SKIPPED
            };
            summary
                .socket_only
                .entry(reason)
                .or_default()
                .push(case.id.clone());
        }
        for v in &case.variants {
            let name = variant_name(case, v);
            match plan(case, v) {
                Ok(plan) => {
                    let runs = plan.runs();
                    if plan.hands_off() {
                        summary.handed_off.push(name.clone());
                    } else {
                        summary.judged += 1;
                        for (mode, _) in &runs {
                            *summary.runs.entry(mode.to_string()).or_default() += 1;
                        }
                    }
                    trials.push(Trial::test(name, move || plan.check(&runs)));
                }
                Err(reason) => summary.socket_only.entry(reason).or_default().push(name),
            }
        }
    }
    let floor = summary.judged >= JUDGED_BEFORE;
    let text = summary.text(cases.len());
    trials.push(Trial::test("catalogue: judged variants", move || {
        if floor {
            Ok(())
        } else {
            Err(format!(
                "fewer variants judged than the {JUDGED_BEFORE} of the hand-written catalogue"
            )
            .into())
        }
    }));
    if !args.list {
        print!("{text}");
    }
    libtest_mimic::run(&args, trials).exit();
}

/// `B9 size line`, or `B11` for a one-variant case.
fn variant_name(case: &Case, v: &Variant) -> String {
    if v.name.is_empty() {
        case.id.clone()
    } else {
        format!("{} {}", case.id, v.name)
    }
}

/// A variant the machine can judge: its bytes with fixed tokens, and how to run them.
#[derive(Debug)]
struct Plan {
    case_id: String,
    variant: String,
    config: IngestConfig,
    items: Vec<Item>,
    /// Placeholder → token, and back for the counts.
    subst: Vec<(String, String)>,
    expect: Vec<Expect>,
    /// The whole mode's outcome: a head for another route is handed off in every mode.
    whole: Observation,
}

/// Why a variant is not judged here, or its plan.
fn plan(case: &Case, v: &Variant) -> Result<Plan, &'static str> {
    if case.skip.is_some() || v.skip.is_some() {
        return Err(SKIPPED);
    }
    if case.driver.is_some() {
        return Err(DRIVER);
    }
    if case.timers {
        return Err("timers on a real clock");
    }
    let Some(program) = &v.bytes else {
        return Err("several connections (a script)");
    };
    if v.repeat > 1 || v.parallel > 1 {
        return Err("several connections (repeated or parallel)");
    }
    let lenient = match v.setup.kind() {
        None => false,
        Some(SetupKind::Lenient) => true,
        Some(SetupKind::Registered) => return Err("server state: registered tokens"),
        Some(SetupKind::Reject) => return Err("server state: --on-duplicate reject"),
        Some(SetupKind::Accounts) => return Err("server state: accounts"),
    };
    if v.keep_writing {
        return Err("writes after the response (resets are a socket matter)");
    }
    let subst = case.fixed_tokens();
    let items = program.eval(&subst).expect("the variant's bytes evaluate");
    if items.contains(&Item::Rst) {
        return Err("a reset");
    }
    let config = IngestConfig {
        lenient_lines: lenient,
        ..IngestConfig::default()
    };
    let mut plan = Plan {
        case_id: case.id.clone(),
        variant: v.name.clone(),
        config,
        items,
        subst,
        expect: v.expect.clone(),
        whole: Observation::default(),
    };
    plan.whole = plan.observe(Segmentation::Whole, None);
    Ok(plan)
}

impl Plan {
    /// Every run: whole, timed (when it cuts differently), split at each position, bytewise
    /// (up to [`BYTEWISE_MAX`]).
    fn runs(&self) -> Vec<(Segmentation, Option<usize>)> {
        let mut runs = vec![(Segmentation::Whole, None)];
        let whole = segment::schedule(&self.items, Segmentation::Whole, None, 1.0);
        if segment::schedule(&self.items, Segmentation::Timed, None, 1.0) != whole {
            runs.push((Segmentation::Timed, None));
        }
        let bytes = payload(&self.items);
        let seed = segment::seed_for(SEED, &self.case_id, &self.variant);
        let limit = Some((SPLIT_BUDGET / bytes.len().max(1)).max(MIN_SPLITS));
        for k in segment::split_points(&bytes, seed, limit) {
            runs.push((Segmentation::Split, Some(k)));
        }
        if bytes.len() <= BYTEWISE_MAX {
            runs.push((Segmentation::Bytewise, None));
        }
        runs
    }

    fn hands_off(&self) -> bool {
        self.whole.route.is_some()
    }

    /// Runs every mode; each must match the expected set and the whole mode's outcome.
    fn check(&self, runs: &[(Segmentation, Option<usize>)]) -> Result<(), Failed> {
        if let Some(route) = &self.whole.route {
            // Another route's head: the machine must hand it off, and only if it is one.
            if route.starts_with("POST ") && route_path(route) == "/" {
                return Err(format!("POST / was handed off as another route: {route}").into());
            }
        } else {
            self.judge(&self.whole).map_err(|why| {
                format!(
                    "whole: {why}\n  expected: {}\n  got: {}",
                    self.expected(),
                    self.whole
                )
            })?;
        }
        for &(mode, split) in runs.iter().skip(1) {
            let obs = self.observe(mode, split);
            if obs != self.whole {
                let label = split.map_or(mode.to_string(), |k| format!("split at {k}"));
                return Err(format!(
                    "{label} differs from whole:\n  {label}: {obs}\n  whole: {}",
                    self.whole
                )
                .into());
            }
        }
        Ok(())
    }

    fn expected(&self) -> String {
        let set: Vec<String> = self.expect.iter().map(ToString::to_string).collect();
        set.join(" | ")
    }

    /// One run of one mode.
    fn observe(&self, mode: Segmentation, split: Option<usize>) -> Observation {
        let steps = segment::schedule(&self.items, mode, split, 1.0);
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut eof = false;
        for step in &steps {
            match step {
                Step::Write(bytes) => pieces.push(bytes),
                Step::Eof => {
                    eof = true;
                    break;
                }
                // Without a clock, pauses and marks change nothing; `100 Continue` is in the
                // output whenever the machine sends it.
                Step::Pause(_) | Step::Mark | Step::AwaitContinue | Step::Rst => {}
            }
        }
        let (events, response) = run_to_end(self.config.clone(), &pieces, eof);
        let mut obs = Observation {
            response,
            ..Observation::default()
        };
        for ev in events {
            match ev {
                Event::Request(head) => {
                    obs.route = Some(format!("{} {}", head.method, head.target))
                }
                Event::Update { token, update } => {
                    let name = self.placeholder(token.as_str());
                    *obs.acc.entry(name.clone()).or_default() += 1;
                    obs.updates.push((name, update));
                }
                Event::Heartbeat => obs.heartbeats += 1,
                Event::End(end) => {
                    obs.ended = true;
                    obs.status = end.status.map(|s| s.code());
                    obs.rejected = end.n_rejected;
                }
                Event::Head(_) | Event::Rejected(_) => {}
            }
        }
        obs
    }

    /// The placeholder a token stands for, else the token itself.
    fn placeholder(&self, token: &str) -> String {
        self.subst
            .iter()
            .find(|(_, t)| t == token)
            .map_or_else(|| token.to_owned(), |(p, _)| p.clone())
    }

    /// Whether some member of the expected set matches `obs`.
    fn judge(&self, obs: &Observation) -> Result<(), String> {
        let mut whys = Vec::new();
        for e in &self.expect {
            match self.judge_one(e, obs) {
                Ok(()) => return Ok(()),
                Err(why) => whys.push(why),
            }
        }
        Err(whys.join(" | "))
    }

    fn judge_one(&self, e: &Expect, obs: &Observation) -> Result<(), String> {
        let text = |t: &str| substitute_text(t, &self.subst);
        if let Some(want) = e.status() {
            if obs.status != want {
                return Err(format!(
                    "status {} ≠ {}",
                    show_status(obs.status),
                    show_status(want)
                ));
            }
        }
        if let Some(want) = e.end() {
            if obs.end() != Some(want) {
                return Err(format!("end {:?} ≠ {want}", obs.end()));
            }
        }
        let interim = obs.response.starts_with(CONTINUE);
        let response = match obs.status {
            Some(_) => Some(Response::parse(&obs.response)?),
            None if obs.response.len() == if interim { CONTINUE.len() } else { 0 } => None,
            None => return Err("bytes sent without a final status".to_owned()),
        };
        if e.continue_.is_some_and(|want| want != interim) || e.continue_ms.is_some() && !interim {
            return Err(format!("100 Continue sent: {interim}"));
        }
        if let Some(r) = &response {
            for (k, want) in &e.headers {
                let want = text(want);
                if r.header(k) != Some(want.as_str()) {
                    return Err(format!("header {k}: {:?} ≠ {want:?}", r.header(k)));
                }
            }
            for (k, want) in &e.headers_contain {
                if !r.header(k).is_some_and(|got| got.contains(&text(want))) {
                    return Err(format!("header {k}: {:?} lacks {want:?}", r.header(k)));
                }
            }
            if let Some(want) = &e.body {
                if r.body != text(want) {
                    return Err(format!("body {:?} ≠ {want:?}", r.body));
                }
            }
            if let Some(want) = &e.body_contains {
                if !r.body.contains(&text(want)) {
                    return Err(format!("body {:?} lacks {want:?}", r.body));
                }
            }
            if let Some(bad) = e.body_lacks.iter().find(|b| r.body.contains(&text(b))) {
                return Err(format!("body {:?} contains {bad:?}", r.body));
            }
            if !e.body_json.is_empty() {
                let json: serde_json::Value = serde_json::from_str(&r.body)
                    .map_err(|err| format!("body is not JSON ({err}): {:?}", r.body))?;
                for (pointer, want) in &e.body_json {
                    if json.pointer(pointer) != Some(want) {
                        return Err(format!(
                            "body{pointer} {:?} ≠ {want}",
                            json.pointer(pointer)
                        ));
                    }
                }
            }
        } else if e.body.is_some() || e.body_contains.is_some() || !e.headers.is_empty() {
            return Err("no response to check".to_owned());
        }
        if (e.within_ms.is_some() && obs.status.is_none() && !obs.ended)
            || (e.fin_within_ms.is_some() && !obs.ended)
        {
            return Err("nothing happened where a bound expects an event".to_owned());
        }
        for (token, want) in &e.acc {
            let got = obs.acc.get(token).copied().unwrap_or(0);
            if got != *want {
                return Err(format!("acc {token}={got} ≠ {want}"));
            }
        }
        if let Some(want) = e.rejected {
            if obs.rejected != want {
                return Err(format!("rejected {} ≠ {want}", obs.rejected));
            }
        }
        if let Some(want) = e.metrics.get(HEARTBEATS) {
            if obs.heartbeats != *want {
                return Err(format!("heartbeats {} ≠ {want}", obs.heartbeats));
            }
        }
        Ok(())
    }
}

/// What one run decided.
#[derive(Debug, Default, PartialEq)]
struct Observation {
    /// `METHOD target` of a head handed off to another route.
    route: Option<String>,
    /// The machine ended the request (an `End` event).
    ended: bool,
    status: Option<u16>,
    /// Lines accepted per placeholder (or literal token).
    acc: BTreeMap<String, u64>,
    rejected: u64,
    heartbeats: u64,
    /// Every accepted line's update, by placeholder, in order: the digest of the run.
    updates: Vec<(String, Update)>,
    /// Every byte the machine sent.
    response: Vec<u8>,
}

impl Observation {
    fn end(&self) -> Option<End> {
        match (self.ended, self.status) {
            (true, Some(_)) => Some(End::Fin),
            (true, None) => Some(End::Silent),
            (false, _) if self.route.is_none() => Some(End::Open),
            (false, _) => None,
        }
    }
}

impl std::fmt::Display for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(route) = &self.route {
            return write!(f, "handed off: {route}");
        }
        write!(
            f,
            "status={} end={:?}",
            show_status(self.status),
            self.end()
        )?;
        for (token, n) in &self.acc {
            write!(f, " acc[{token}]={n}")?;
        }
        write!(
            f,
            " rejected={} heartbeats={} updates={} response={:?}",
            self.rejected,
            self.heartbeats,
            self.updates.len(),
            String::from_utf8_lossy(&self.response[..self.response.len().min(300)])
        )
    }
}

/// The final response the machine sent, after an optional `100 Continue`.
#[derive(Debug)]
struct Response {
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    /// Parses `bytes`: every response carries `Connection: close` and `Content-Length`, and
    /// nothing follows its body (P9).
    fn parse(mut bytes: &[u8]) -> Result<Response, String> {
        if bytes.starts_with(CONTINUE) {
            bytes = &bytes[CONTINUE.len()..];
        }
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no complete response in {text:?}"))?;
        let headers: Vec<(String, String)> = head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let r = Response {
            headers,
            body: body.to_owned(),
        };
        if !r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return Err(format!("no `Connection: close` in {head:?}"));
        }
        let len: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
        if len != body.len() {
            return Err(format!(
                "Content-Length {len}, but {} bytes follow",
                body.len()
            ));
        }
        Ok(r)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the run covered, printed before the trials.
#[derive(Debug, Default)]
struct Summary {
    judged: usize,
    runs: BTreeMap<String, usize>,
    handed_off: Vec<String>,
    socket_only: BTreeMap<&'static str, Vec<String>>,
}

impl Summary {
    fn text(&self, n_cases: usize) -> String {
        let mut s = String::new();
        let runs: Vec<String> = ["whole", "timed", "split", "bytewise"]
            .iter()
            .map(|m| format!("{m} {}", self.runs.get(*m).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(
            s,
            "catalogue through Ingest ({n_cases} cases): {} variants judged; runs per mode: {}",
            self.judged,
            runs.join(", ")
        );
        let _ = writeln!(
            s,
            "  handed to another route in every mode ({}): {}",
            self.handed_off.len(),
            self.handed_off.join(", ")
        );
        for (reason, names) in &self.socket_only {
            let _ = writeln!(
                s,
                "  sockets only, {reason} ({}): {}",
                names.len(),
                names.join(", ")
            );
        }
        s
    }
}

fn show_status(status: Option<u16>) -> String {
    status.map_or("none".to_owned(), |c| c.to_string())
}

/// The path of `METHOD target`, as `RequestHead::path` reads it (absolute form reduced).
fn route_path(route: &str) -> &str {
    let target = route.split(' ').nth(1).unwrap_or_default();
    let path = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .map_or(target, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    path.split(['?', '#']).next().unwrap_or(path)
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const SKIPPED: &str = "skipped by the catalogue (a real client or resource exhaustion)";
const DRIVER: &str = "a driver of its own (connection limits, token issuing, EMFILE)";
/// The one `/metrics` delta the machine observes: the heartbeats of this connection.
const HEARTBEATS: &str = "plotstream_heartbeats_total";
/// The seed of the split positions (`plotstream conform --seed` defaults to 1 too).
const SEED: u64 = 1;
/// Bytes a variant's split runs may feed the machine in all: inputs over 256 KiB (B18's and
/// B24's heartbeats, C15's 1 MiB line) are split at a sample of §7's positions, at least
/// [`MIN_SPLITS`].
const SPLIT_BUDGET: usize = 32 * 1024 * 1024;
const MIN_SPLITS: usize = 4;
/// Inputs up to this size also run one byte per call (B18's 1.2 MB heartbeats among them).
const BYTEWISE_MAX: usize = 2 * 1024 * 1024;
/// Variants the hand-written catalogue this file replaced judged (its `check` calls).
const JUDGED_BEFORE: usize = 242;
