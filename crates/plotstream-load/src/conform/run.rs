//! Running cases: tokens per run, the modes of §7, the expected-outcome sets of §8, and the
//! drivers for what bytes cannot say.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use plotstream_cases::segment;
use plotstream_cases::{Case, End, Expect, Level, Segmentation, SetupKind, Variant};
use tokio::sync::Semaphore;

use super::client::{self, Inspection, Viewer};
use super::target::{Target, TokenSource};
use super::wire::{self, Conn, ConnOpts, ConnResult};

/// Runner options that do not name targets.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Timers of the timer target are the defaults divided by this.
    pub timer_scale: Option<f64>,
    /// L11 of the main target, for D11.
    pub peer_limit: Option<usize>,
    /// RLIMIT_NOFILE of the fd-limited target, for D2.
    pub fd_limit: usize,
    /// Seed for split positions.
    pub seed: u64,
    /// At most this many split positions per variant.
    pub split_limit: Option<usize>,
    /// NON-STRICT counts as FAIL.
    pub strict: bool,
    /// NON-STRICT counts as FAIL for these cases (ids or group letters).
    pub strict_cases: Vec<String>,
    /// A limit counter that does not fire fails the case.
    pub require_limit_counters: bool,
    /// The targets are unoptimized builds: throughput floors are skipped.
    pub unoptimized: bool,
    /// A user of the accounts target and its API key (`$user`, `$key`, `$auth`, …).
    pub credentials: Option<(String, String)>,
    /// A stream id that user owns (`$sid`).
    pub stream_id: Option<String>,
}

/// Everything a case run needs.
#[derive(Debug)]
pub struct Runner {
    /// Options.
    pub opts: Opts,
    /// The default-setup target.
    pub main: Arc<Target>,
    /// Targets for `[reg]`, `[len]`, `[rej]`.
    pub setups: BTreeMap<SetupKind, Arc<Target>>,
    /// The target whose timers are scaled (group E).
    pub timers: Option<Arc<Target>>,
    /// The target started under a low RLIMIT_NOFILE (D2).
    pub fd_limited: Option<Arc<Target>>,
    /// Fresh tokens.
    pub tokens: TokenSource,
    /// Bounds concurrent runs.
    pub jobs: Semaphore,
    /// The number of permits `jobs` started with: a quiet rerun takes them all.
    pub jobs_total: u32,
}

/// A case's class (docs/reliability.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Passed.
    Pass,
    /// A SHOULD failed.
    NonStrict,
    /// An INFO case, recorded.
    Info,
    /// A MUST or COMPAT case failed (or any case was inconsistent across modes).
    Fail,
    /// A precondition is missing.
    Skip,
}

impl Verdict {
    /// The word printed in reports.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::NonStrict => "NON-STRICT",
            Verdict::Info => "INFO",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// What happened to one variant.
#[derive(Debug, Clone)]
pub struct VariantReport {
    /// The variant's name (empty for one-variant cases).
    pub name: String,
    /// Pass, or why not.
    pub outcome: VariantOutcome,
    /// Per mode: the mode, how many runs, and how many matched.
    pub modes: Vec<(String, usize, usize)>,
    /// Every acceptable outcome.
    pub expected: Vec<String>,
    /// The outcome of the first run (or of the failing one).
    pub actual: String,
    /// The failing run's wire log (or the first run's), as a hex dump.
    pub wire: String,
    /// Side remarks (limit counters not observed, after-EOF reactions).
    pub notes: Vec<String>,
}

/// A variant's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantOutcome {
    /// Every mode matched.
    Pass,
    /// Some run did not match: where and why.
    Fail(String),
    /// A mode disagreed with another (fails even INFO cases).
    Inconsistent(String),
    /// Not run, or not provable: why.
    Skip(String),
}

/// What happened to one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Level.
    pub level: Level,
    /// Citations.
    pub anchor: Vec<String>,
    /// Class.
    pub verdict: Verdict,
    /// One line: why it failed or was skipped.
    pub reason: String,
    /// Per variant.
    pub variants: Vec<VariantReport>,
    /// Wall time.
    pub duration: Duration,
    /// The case's note.
    pub note: Option<String>,
}

/// One run's observation.
#[derive(Debug, Default)]
struct Observation {
    conns: Vec<(String, ConnResult)>,
    streams: BTreeMap<String, std::result::Result<Option<Inspection>, String>>,
    metrics: Option<BTreeMap<String, f64>>,
    viewer: Option<std::result::Result<usize, String>>,
    /// The tokens were used by earlier runs: counts are deltas, windows are not comparable.
    reused: bool,
    /// Counters were wanted but the target has no `/metrics`.
    metrics_missing: bool,
    /// The run's placeholders and variables (captures included), for the expectations.
    subst: Vec<(String, String)>,
    /// When the run started and ended, by the wall clock (for converted timestamps).
    span: Option<(SystemTime, SystemTime)>,
}

/// The outcome compared across modes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModeKey {
    statuses: Vec<Option<u16>>,
    acc: BTreeMap<String, u64>,
    rejected: BTreeMap<String, u64>,
    digest: BTreeMap<String, String>,
}

impl ModeKey {
    /// Equal statuses, counts and rejections, and equal digests where both runs have them.
    fn same_as(&self, other: &ModeKey) -> bool {
        self.statuses == other.statuses
            && self.acc == other.acc
            && self.rejected == other.rejected
            && (self.digest.is_empty() || other.digest.is_empty() || self.digest == other.digest)
    }
}

impl Match {
    /// Why it did not match (empty for `Yes`).
    fn into_reason(self) -> String {
        match self {
            Match::Yes => String::new(),
            Match::No(why) | Match::Late(why) | Match::Unobservable(why) => why,
        }
    }
}

enum Match {
    Yes,
    /// Everything but a timing bound matched (see [`Timing`]).
    Late(String),
    No(String),
    Unobservable(String),
}

impl Runner {
    /// Runs one case to its report.
    pub async fn run_case(self: &Arc<Self>, case: &Arc<Case>) -> CaseReport {
        let started = Instant::now();
        let mut report = CaseReport {
            id: case.id.clone(),
            title: case.title.clone(),
            level: case.level,
            anchor: case.anchor.clone(),
            verdict: Verdict::Pass,
            reason: String::new(),
            variants: Vec::new(),
            duration: Duration::ZERO,
            note: case.note.clone(),
        };
        if let Some(reason) = &case.skip {
            report.verdict = Verdict::Skip;
            report.reason = reason.clone();
        } else if let Some(driver) = &case.driver {
            let mut notes = Vec::new();
            let outcome = match driver.as_str() {
                "peer_limit" => self.drive_peer_limit(case).await,
                "issue_tokens" => self.drive_issue_tokens(case).await,
                "emfile" => self.drive_emfile(&mut notes).await,
                other => VariantOutcome::Skip(format!("unknown driver {other}")),
            };
            report.variants.push(VariantReport {
                name: driver.clone(),
                outcome,
                modes: Vec::new(),
                expected: Vec::new(),
                actual: String::new(),
                wire: String::new(),
                notes,
            });
        } else {
            if case.needs_exclusive() {
                for v_idx in 0..case.variants.len() {
                    report.variants.push(self.run_variant(case, v_idx).await);
                }
            } else {
                // Variants use their own tokens, so they may overlap.
                let handles: Vec<_> = (0..case.variants.len())
                    .map(|v_idx| {
                        let this = self.clone();
                        let case = case.clone();
                        tokio::spawn(async move { this.run_variant(&case, v_idx).await })
                    })
                    .collect();
                for h in handles {
                    match h.await {
                        Ok(r) => report.variants.push(r),
                        Err(e) => report.variants.push(VariantReport {
                            name: String::new(),
                            outcome: VariantOutcome::Fail(format!(
                                "the variant's task failed: {e}"
                            )),
                            modes: Vec::new(),
                            expected: Vec::new(),
                            actual: String::new(),
                            wire: String::new(),
                            notes: Vec::new(),
                        }),
                    }
                }
            }
        }
        self.classify(case, &mut report);
        report.duration = started.elapsed();
        report
    }

    fn classify(&self, case: &Case, report: &mut CaseReport) {
        if report.verdict == Verdict::Skip {
            return;
        }
        let label = |v: &VariantReport| {
            if v.name.is_empty() {
                String::new()
            } else {
                format!("[{}] ", v.name)
            }
        };
        // The labelled reasons of the variants whose outcome `pick` selects.
        let reasons = |pick: fn(&VariantOutcome) -> Option<&String>| -> Vec<String> {
            report
                .variants
                .iter()
                .filter_map(|v| pick(&v.outcome).map(|why| format!("{}{why}", label(v))))
                .collect()
        };
        let failed = reasons(|o| match o {
            VariantOutcome::Fail(why) => Some(why),
            _ => None,
        });
        let inconsistent = reasons(|o| match o {
            VariantOutcome::Inconsistent(why) => Some(why),
            _ => None,
        });
        let skipped = reasons(|o| match o {
            VariantOutcome::Skip(why) => Some(why),
            _ => None,
        });
        if !inconsistent.is_empty() {
            report.verdict = Verdict::Fail;
            report.reason = inconsistent.join("; ");
        } else if !failed.is_empty() {
            report.verdict = match case.level {
                Level::Must | Level::Compat => Verdict::Fail,
                Level::Should
                    if self.opts.strict
                        || self
                            .opts
                            .strict_cases
                            .iter()
                            .any(|w| *w == case.id || w == case.group()) =>
                {
                    Verdict::Fail
                }
                Level::Should => Verdict::NonStrict,
                Level::Info => Verdict::Info,
            };
            report.reason = failed.join("; ");
        } else if !skipped.is_empty() {
            report.verdict = Verdict::Skip;
            report.reason = skipped.join("; ");
        } else if case.level == Level::Info {
            report.verdict = Verdict::Info;
        }
    }

    /// The target for a variant, or why there is none.
    fn target_for(&self, case: &Case, v: &Variant) -> std::result::Result<Arc<Target>, String> {
        if case.timers {
            if self.opts.timer_scale.is_none() {
                return Err("needs a target with short timers: --timer-scale N (and --target-timers URL, or a --target whose timers are the defaults divided by N); --timer-scale 1 runs in real time".to_owned());
            }
            return Ok(self.timers.clone().unwrap_or_else(|| self.main.clone()));
        }
        match v.setup.kind() {
            None => Ok(self.main.clone()),
            // Any endpoint with accounts will do: a third party's main target has them.
            Some(SetupKind::Accounts) => Ok(self
                .setups
                .get(&SetupKind::Accounts)
                .unwrap_or(&self.main)
                .clone()),
            Some(kind) => self.setups.get(&kind).cloned().ok_or_else(|| {
                format!("needs a target with the {kind} setup: --target-{kind} URL")
            }),
        }
    }

    fn pause_scale(&self, case: &Case) -> f64 {
        if case.timers {
            self.opts.timer_scale.unwrap_or(1.0)
        } else {
            1.0
        }
    }

    /// The response wait for a variant: its `wait_ms`, stretched to cover timer bounds.
    fn wait_for(&self, case: &Case, v: &Variant) -> Duration {
        let mut wait = Duration::from_millis(v.wait_ms);
        if case.timers {
            for e in v.expect.iter().chain(v.expect_conn.values().flatten()) {
                if let Some(w) = e.within_ms {
                    let [_, hi] = self.scaled(case, w);
                    wait = wait.max(Duration::from_millis(hi + 1000));
                }
            }
        }
        wait
    }

    /// `within_ms` for this run: timer bounds shrink with the scale, to ± 100 ms at least.
    fn scaled(&self, case: &Case, [lo, hi]: [u64; 2]) -> [u64; 2] {
        let scale = self.pause_scale(case);
        if scale <= 1.0 {
            return [lo, hi];
        }
        let centre = (lo + hi) as f64 / 2.0 / scale;
        let half = ((hi - lo) as f64 / 2.0 / scale).max(100.0);
        [(centre - half).max(0.0) as u64, (centre + half) as u64]
    }

    async fn run_variant(self: &Arc<Self>, case: &Arc<Case>, v_idx: usize) -> VariantReport {
        let v = &case.variants[v_idx];
        let mut report = VariantReport {
            name: v.name.clone(),
            outcome: VariantOutcome::Pass,
            modes: Vec::new(),
            expected: v.expect.iter().map(ToString::to_string).collect(),
            actual: String::new(),
            wire: String::new(),
            notes: Vec::new(),
        };
        for (conn, set) in &v.expect_conn {
            for e in set {
                report.expected.push(format!("{conn}: {e}"));
            }
        }
        if let Some(reason) = &v.skip {
            report.outcome = VariantOutcome::Skip(reason.clone());
            return report;
        }
        if v.needs_credentials && self.opts.credentials.is_none() {
            report.outcome = VariantOutcome::Skip(
                "needs --credentials USER:KEY: a user of the target with accounts".to_owned(),
            );
            return report;
        }
        if v.needs_stream_id && self.opts.stream_id.is_none() {
            report.outcome = VariantOutcome::Skip(
                "needs --stream-id TOKEN: a stream id the --credentials user owns".to_owned(),
            );
            return report;
        }
        if v.optimized && self.opts.unoptimized {
            report.outcome = VariantOutcome::Skip(
                "a throughput floor for optimized builds; the targets are declared unoptimized (--unoptimized-target)".to_owned(),
            );
            return report;
        }
        let target = match self.target_for(case, v) {
            Ok(t) => t,
            Err(reason) => {
                report.outcome = VariantOutcome::Skip(reason);
                return report;
            }
        };
        let single_mode = !v.script.is_empty() || v.repeat > 1 || v.parallel > 1;
        let mut modes: Vec<Segmentation> = v.segmentation.clone();
        if single_mode {
            modes.retain(|m| matches!(m, Segmentation::Whole | Segmentation::Timed));
            modes.truncate(1);
            if modes.is_empty() {
                modes.push(Segmentation::Whole);
            }
        }
        let wants_metrics = v.expect.iter().any(Expect::needs_metrics);
        // Every (mode, split) run of the variant; the first one is the base the others must
        // agree with.
        let mut runs: Vec<(usize, Segmentation, Option<usize>)> = Vec::new();
        for (mode_idx, mode) in modes.iter().copied().enumerate() {
            if mode == Segmentation::Split {
                match self.split_points(case, v) {
                    Ok(points) => {
                        runs.extend(points.into_iter().map(|k| (mode_idx, mode, Some(k))))
                    }
                    Err(e) => {
                        report.outcome =
                            VariantOutcome::Fail(format!("cannot build the bytes: {e:#}"));
                        return report;
                    }
                }
            } else {
                runs.push((mode_idx, mode, None));
            }
        }
        let mut counts: Vec<(usize, usize)> = vec![(0, 0); modes.len()];
        for (mode_idx, _, _) in &runs {
            counts[*mode_idx].0 += 1;
        }
        // The base run goes first and alone when it reads counters (so the deltas are its own)
        // or the case wants one run at a time; the rest overlap.
        let alone_first = case.exclusive || wants_metrics;
        let window = if case.exclusive { 1 } else { SPLIT_WINDOW };
        let open_outcome = v.expect.iter().any(|e| e.end() == Some(End::Open));
        let n_slots = if open_outcome {
            OPEN_SPLIT_SLOTS
        } else {
            SPLIT_SLOTS
        };
        let slots: Vec<Arc<Slot>> = (0..n_slots).map(|_| Arc::new(Slot::default())).collect();
        let mut keys: Vec<(String, usize, ModeKey)> = Vec::new();
        // Quiet reruns started for this variant (at most `MAX_RERUNS`).
        let mut reruns = 0;
        let mut failure: Option<(VariantOutcome, String, String)> = None;
        let mut set = tokio::task::JoinSet::new();
        let mut pending = runs.into_iter().enumerate();
        // One run's context; a quiet rerun holds every permit and takes fresh tokens (no slot).
        let run_ctx = |run_idx: usize, mode, split, quiet: bool, slot| RunCtx {
            runner: self.clone(),
            case: case.clone(),
            v_idx,
            target: target.clone(),
            mode,
            split,
            exclusive: alone_first && run_idx == 0,
            quiet,
            slot,
        };
        loop {
            let limit = if alone_first && keys.is_empty() && failure.is_none() {
                1
            } else {
                window
            };
            while set.len() < limit && failure.is_none() {
                let Some((run_idx, (mode_idx, mode, split))) = pending.next() else {
                    break;
                };
                let slot = split.map(|_| slots[run_idx % slots.len()].clone());
                set.spawn(run_detached(
                    (run_idx, mode_idx, None),
                    run_ctx(run_idx, mode, split, false, slot),
                ));
                if alone_first && run_idx == 0 {
                    break;
                }
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let Ok(((run_idx, mode_idx, first_miss), split, res)) = joined else {
                continue;
            };
            let mode = modes[mode_idx];
            let label = match split {
                Some(k) => format!("{mode} k={k}"),
                None => mode.to_string(),
            };
            let obs = match res {
                Ok(obs) => obs,
                Err(e) => {
                    failure.get_or_insert((
                        VariantOutcome::Fail(format!("{label}: run failed: {e:#}")),
                        String::new(),
                        String::new(),
                    ));
                    continue;
                }
            };
            if run_idx == 0 {
                report.actual = describe(&obs);
                report.wire = obs_wire(&obs);
            }
            for (name, c) in &obs.conns {
                if let Some(a) = &c.after_eof {
                    let note = format!(
                        "{label}{}: open, then after the runner's EOF: {a}",
                        conn_label(name)
                    );
                    if report.notes.len() < 3 && !report.notes.contains(&note) {
                        report.notes.push(note);
                    }
                }
            }
            match self.check(case, v, &obs) {
                (Match::Yes, notes) => {
                    if let Some(first) = &first_miss {
                        report.notes.push(format!(
                            "{label}: missed a timing bound with other runs in flight ({first}); met it on a {}",
                            super::report::RERUN_MARK
                        ));
                    }
                    for n in notes {
                        if !report.notes.contains(&n) {
                            report.notes.push(n);
                        }
                    }
                    counts[mode_idx].1 += 1;
                    let key = mode_key(&obs, case.observe_digest && !obs.reused);
                    keys.push((label, run_idx, key));
                }
                (Match::Late(why), _)
                    if first_miss.is_none() && failure.is_none() && reruns < MAX_RERUNS =>
                {
                    reruns += 1;
                    // A timing bound missed while other runs loaded the machine: the bound is
                    // judged on one quiet rerun (fresh tokens, every job permit held).
                    set.spawn(run_detached(
                        (run_idx, mode_idx, Some(why)),
                        run_ctx(run_idx, mode, split, true, None),
                    ));
                }
                (m @ (Match::No(_) | Match::Late(_)), _) => {
                    let late = matches!(m, Match::Late(_));
                    let why = m.into_reason();
                    let why = match &first_miss {
                        Some(first) => {
                            format!(
                                "{why} (first run: {first}; this was its {})",
                                super::report::RERUN_MARK
                            )
                        }
                        None if late => format!(
                            "{why} (not rerun: {MAX_RERUNS} runs of this variant already needed a {})",
                            super::report::RERUN_MARK
                        ),
                        None => why,
                    };
                    failure.get_or_insert((
                        VariantOutcome::Fail(format!("{label}: {why}")),
                        describe(&obs),
                        obs_wire(&obs),
                    ));
                    // The first failure is the verdict; runs still in flight are not needed.
                    set.abort_all();
                }
                (Match::Unobservable(why), _) => {
                    if matches!(report.outcome, VariantOutcome::Pass) {
                        report.outcome = VariantOutcome::Skip(why);
                    }
                    counts[mode_idx].1 += 1;
                }
            }
        }
        report.modes = modes
            .iter()
            .zip(&counts)
            .map(|(m, (n, ok))| (m.to_string(), *n, *ok))
            .collect();
        if let Some((outcome, actual, wire)) = failure {
            report.outcome = outcome;
            report.actual = actual;
            report.wire = wire;
            return report;
        }
        // §7: every mode gives the same outcome as the first run.
        keys.sort_by_key(|(_, run_idx, _)| *run_idx);
        if let Some(((_, _, base), rest)) = keys.split_first() {
            if let Some((label, _, key)) = rest.iter().find(|(_, _, k)| !k.same_as(base)) {
                report.outcome = VariantOutcome::Inconsistent(format!(
                    "{label} differs from the first mode: {} vs {}",
                    show_key(key),
                    show_key(base)
                ));
            }
        }
        report
    }

    /// Split positions of §7 (`plotstream_cases::segment::split_points`), at most
    /// `--split-limit`.
    fn split_points(&self, case: &Case, v: &Variant) -> Result<Vec<usize>> {
        let Some(program) = &v.bytes else {
            return Ok(Vec::new());
        };
        let subst: Vec<(String, String)> = case
            .tokens
            .iter()
            .map(|(k, len)| (k.clone(), "x".repeat(*len)))
            .collect();
        let bytes = plotstream_cases::payload(&program.eval(&subst)?);
        let seed = segment::seed_for(self.opts.seed, &case.id, &v.name);
        Ok(segment::split_points(&bytes, seed, self.opts.split_limit))
    }

    /// Checks one observation against the expected set; returns notes for soft observations.
    /// Checks a run against the variant's expectations. A run that misses only a timing bound
    /// (`within_ms`, `fin_within_ms`, `continue_ms`, `min_mbps`), or that got no answer at all
    /// within the wait where an answer was expected, is `Match::Late`, which `run_variant`
    /// judges on a quiet rerun.
    fn check(&self, case: &Case, v: &Variant, obs: &Observation) -> (Match, Vec<String>) {
        match self.check_timed(case, v, obs, Timing::Check) {
            (Match::No(why), notes) => {
                let late = matches!(self.check_timed(case, v, obs, Timing::Ignore).0, Match::Yes);
                let expects_open = v
                    .expect
                    .iter()
                    .chain(v.expect_conn.values().flatten())
                    .any(|e| e.end == Some(End::Open));
                let unanswered = !expects_open
                    && obs
                        .conns
                        .iter()
                        .any(|(_, c)| c.end == End::Open && c.status().is_none());
                if late || unanswered {
                    (Match::Late(why), notes)
                } else {
                    (Match::No(why), notes)
                }
            }
            other => other,
        }
    }

    fn check_timed(
        &self,
        case: &Case,
        v: &Variant,
        obs: &Observation,
        timing: Timing,
    ) -> (Match, Vec<String>) {
        let mut notes = Vec::new();
        // Stream-level facts that must hold whatever the set says.
        for (tok, s) in &obs.streams {
            if let Ok(Some(i)) = s {
                if let Some(e) = &i.digest_error {
                    return (Match::No(format!("{tok}: {e}")), notes);
                }
            }
        }
        if let Some(Err(e)) = &obs.viewer {
            return (Match::No(format!("viewer: {e}")), notes);
        }
        if !v.script.is_empty() {
            for (name, set) in &v.expect_conn {
                let Some((_, c)) = obs.conns.iter().find(|(n, _)| n == name) else {
                    return (Match::No(format!("no connection {name}")), notes);
                };
                let mut whys = Vec::new();
                let ok =
                    set.iter()
                        .any(|e| match self.match_conn(case, e, c, timing, &obs.subst) {
                            Ok(()) => true,
                            Err(why) => {
                                whys.push(why);
                                false
                            }
                        });
                if !ok {
                    return (
                        Match::No(format!(
                            "{name}: {} (expected {})",
                            c.describe(),
                            whys.join(" | ")
                        )),
                        notes,
                    );
                }
            }
        }
        let mut whys = Vec::new();
        let mut unobservable = None;
        for e in &v.expect {
            let conn_ok = if v.script.is_empty() {
                let (n_ok, first_err) = count_matching(&obs.conns, e, &v.expect, |alt, (_, c)| {
                    self.match_conn(case, alt, c, timing, &obs.subst)
                });
                let need = v
                    .min_pass
                    .min(u32::try_from(obs.conns.len()).unwrap_or(u32::MAX));
                if n_ok >= need {
                    Ok(())
                } else {
                    Err(format!(
                        "{} of {} connections matched ({}): {}",
                        n_ok,
                        obs.conns.len(),
                        need,
                        first_err.unwrap_or_default()
                    ))
                }
            } else {
                Ok(())
            };
            if let Err(why) = conn_ok {
                whys.push(why);
                continue;
            }
            match self.match_streams(e, obs, &mut notes) {
                Match::Yes => return (Match::Yes, notes),
                Match::No(why) | Match::Late(why) => whys.push(why),
                Match::Unobservable(why) => unobservable = Some(why),
            }
        }
        if let Some(why) = unobservable {
            return (Match::Unobservable(why), notes);
        }
        if v.expect.is_empty() {
            return (Match::Yes, notes);
        }
        (Match::No(whys.join(" | ")), notes)
    }

    fn match_conn(
        &self,
        case: &Case,
        e: &Expect,
        c: &ConnResult,
        timing: Timing,
        subst: &[(String, String)],
    ) -> std::result::Result<(), String> {
        // Expected texts name placeholders and variables as the bytes do.
        let text = |t: &str| plotstream_cases::substitute_text(t, subst);
        if let Some(g) = &c.garbage {
            return Err(format!("unparsable response {g}"));
        }
        if let Some(want) = e.status() {
            if c.status() != want {
                return Err(format!(
                    "status {} ≠ {}",
                    c.status().map_or("none".to_owned(), |s| s.to_string()),
                    want.map_or("none".to_owned(), |s| s.to_string())
                ));
            }
        }
        if let Some(r) = &c.response {
            // P9: every response carries Connection: close and (except SSE) Content-Length.
            if !r
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                return Err(format!(
                    "the {} response lacks `Connection: close`",
                    r.status
                ));
            }
            if r.header("content-length").is_none() {
                return Err(format!("the {} response lacks Content-Length", r.status));
            }
            if c.extra > 0 {
                return Err(format!(
                    "{} bytes after the response (a second response?)",
                    c.extra
                ));
            }
        }
        if let Some(end) = e.end() {
            if c.end != end {
                return Err(format!("end {} ≠ {end}", c.end));
            }
        }
        if let Some(r) = &c.response {
            for (k, want) in &e.headers {
                let want = text(want);
                match r.header(k) {
                    Some(got) if got == want => {}
                    got => return Err(format!("header {k}: {got:?} ≠ {want:?}")),
                }
            }
            for (k, want) in &e.headers_contain {
                let want = text(want);
                match r.header(k) {
                    Some(got) if got.contains(want.as_str()) => {}
                    Some(got) => return Err(format!("header {k}: {got:?} lacks {want:?}")),
                    None => return Err(format!("no header {k}")),
                }
            }
            let body = String::from_utf8_lossy(&r.body);
            if let Some(b) = &e.body {
                let b = text(b);
                if body != b {
                    return Err(format!("body {} ≠ {b:?}", excerpt(&body)));
                }
            }
            if let Some(b) = &e.body_contains {
                let b = text(b);
                if !body.contains(b.as_str()) {
                    return Err(format!("body {} lacks {b:?}", excerpt(&body)));
                }
            }
            for b in &e.body_lacks {
                if let Some(why) = unwanted(&body, &text(b)) {
                    return Err(why);
                }
            }
            if !e.body_json.is_empty() {
                let json: serde_json::Value = serde_json::from_slice(&r.body)
                    .map_err(|err| format!("body {} is not JSON: {err}", excerpt(&body)))?;
                for (pointer, want) in &e.body_json {
                    match json.pointer(pointer) {
                        Some(got) if json_eq(got, want) => {}
                        got => return Err(format!("body{pointer} {got:?} ≠ {want}")),
                    }
                }
            }
            if let Some(want) = e.inline_script {
                match (inline_script(&body), want) {
                    (Some(script), false) => {
                        return Err(format!("an inline script: {}", excerpt(&script)))
                    }
                    (None, true) => return Err("no inline script".to_owned()),
                    _ => {}
                }
            }
        } else if !e.headers.is_empty()
            || !e.headers_contain.is_empty()
            || e.body.is_some()
            || e.body_contains.is_some()
            || !e.body_lacks.is_empty()
            || !e.body_json.is_empty()
            || e.inline_script.is_some()
        {
            return Err("no response to check".to_owned());
        }
        // Under `Timing::Ignore` an event must still happen, at any time.
        let bounds = timing == Timing::Check;
        if let Some(w) = e.within_ms {
            let [lo, hi] = if case.timers { self.scaled(case, w) } else { w };
            match c.status_ms {
                Some(ms) if !bounds || (lo..=hi).contains(&ms) => {}
                Some(ms) => return Err(format!("at {ms} ms, not within {lo}..{hi} ms")),
                None => return Err(format!("nothing happened, expected within {lo}..{hi} ms")),
            }
        }
        if let Some([lo, hi]) = e.fin_within_ms {
            match c.fin_ms {
                Some(ms) if !bounds || (lo..=hi).contains(&ms) => {}
                Some(ms) => {
                    return Err(format!(
                        "FIN {ms} ms after the last write, not within {lo}..{hi} ms"
                    ))
                }
                None => return Err("no FIN".to_owned()),
            }
        }
        if let Some(want) = e.continue_ {
            if c.continue_ms.is_some() != want {
                return Err(if want {
                    "no `100 Continue`".to_owned()
                } else {
                    "an unexpected `100 Continue`".to_owned()
                });
            }
        }
        if let Some([lo, hi]) = e.continue_ms {
            match c.continue_ms {
                Some(ms) if !bounds || (lo..=hi).contains(&ms) => {}
                Some(ms) => {
                    return Err(format!(
                        "`100 Continue` after {ms} ms, not within {lo}..{hi} ms"
                    ))
                }
                None => return Err("no `100 Continue`".to_owned()),
            }
        }
        if let Some(min) = e.min_mbps.filter(|_| bounds) {
            let ms = c
                .status_since_first_write_ms
                .unwrap_or(f64::INFINITY)
                .max(0.001);
            let mbps = c.bytes_written as f64 / 1e6 / (ms / 1000.0);
            if mbps < min {
                return Err(format!(
                    "{mbps:.1} MB/s < {min} MB/s ({} bytes in {ms:.0} ms)",
                    c.bytes_written
                ));
            }
        }
        Ok(())
    }

    fn match_streams(&self, e: &Expect, obs: &Observation, notes: &mut Vec<String>) -> Match {
        let stream = |tok: &str| -> std::result::Result<Option<&Inspection>, String> {
            match obs.streams.get(tok) {
                Some(Ok(i)) => Ok(i.as_ref()),
                Some(Err(e)) => Err(e.clone()),
                None => Err(format!("{tok} was not inspected")),
            }
        };
        if e.needs_inspection()
            && obs
                .streams
                .values()
                .any(|s| matches!(s, Err(e) if e == NO_INSPECTION))
        {
            return Match::Unobservable(NO_INSPECTION.to_owned());
        }
        for (tok, want) in &e.acc {
            match stream(tok) {
                Ok(i) => {
                    let got = i.map_or(0, |i| i.last_seq);
                    if got != *want {
                        return Match::No(format!("acc {tok}={got} ≠ {want}"));
                    }
                }
                Err(e) => return Match::No(e),
            }
        }
        if let Some(want) = e.rejected {
            match stream("tok1") {
                Ok(i) => {
                    let got = i.map_or(0, |i| i.rejected_lines);
                    if got != want {
                        return Match::No(format!("rejected_lines {got} ≠ {want}"));
                    }
                }
                Err(e) => return Match::No(e),
            }
        }
        for (tok, want) in &e.window {
            if obs.reused {
                break;
            }
            match stream(tok) {
                Ok(Some(i)) => {
                    if !json_eq(&i.window, want) {
                        return Match::No(format!("window[{tok}] {} ≠ {want}", i.window));
                    }
                }
                Ok(None) => return Match::No(format!("{tok}: no such stream")),
                Err(e) => return Match::No(e),
            }
        }
        for (tok, want) in &e.window_keys {
            if obs.reused {
                break;
            }
            match stream(tok) {
                Ok(Some(i)) => {
                    let got: BTreeSet<&str> = i
                        .window
                        .as_object()
                        .map(|o| o.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
                    if got != want_set {
                        return Match::No(format!("window keys of {tok} {got:?} ≠ {want_set:?}"));
                    }
                }
                Ok(None) => return Match::No(format!("{tok}: no such stream")),
                Err(e) => return Match::No(e),
            }
        }
        for (tok, want) in &e.maxpoints {
            match stream(tok) {
                Ok(Some(i)) if i.maxpoints == *want => {}
                Ok(Some(i)) => {
                    return Match::No(format!("maxpoints of {tok} {} ≠ {want}", i.maxpoints))
                }
                Ok(None) => return Match::No(format!("{tok}: no such stream")),
                Err(e) => return Match::No(e),
            }
        }
        for (tok, want) in &e.converted {
            if obs.reused {
                break;
            }
            let window = match stream(tok) {
                Ok(Some(i)) => &i.window,
                Ok(None) => return Match::No(format!("{tok}: no such stream")),
                Err(e) => return Match::No(e),
            };
            if let Err(why) = converted(window, want, obs) {
                return Match::No(format!("window[{tok}] {window}: {why}"));
            }
        }
        if e.needs_metrics() {
            // Counters are read in the first mode only (run alone on its target).
            if obs.metrics_missing && !e.metrics.is_empty() {
                return Match::Unobservable("needs the target's /metrics".to_owned());
            }
            let Some(delta) = &obs.metrics else {
                return Match::Yes;
            };
            for (k, want) in &e.metrics {
                let got = delta.get(k).copied().unwrap_or(0.0);
                if (got - *want as f64).abs() > 0.5 {
                    return Match::No(format!("Δ{k} = {got} ≠ {want}"));
                }
            }
            if let Some(l) = &e.limit {
                let k = format!("plotstream_limit_breaches_total{{limit=\"{l}\"}}");
                let got = delta.get(&k).copied().unwrap_or(0.0);
                if got < 1.0 {
                    let note = format!(
                        "limit {l} fired (by the status) but {k} did not grow (docs/reliability.md §3)"
                    );
                    if self.opts.require_limit_counters {
                        return Match::No(note);
                    }
                    notes.push(note);
                }
            }
        }
        Match::Yes
    }

    /// D11: with L11 on, the (limit + 1)th connection from one address gets 503.
    async fn drive_peer_limit(&self, case: &Case) -> VariantOutcome {
        let Some(limit) = self.opts.peer_limit.filter(|&l| l > 0) else {
            return VariantOutcome::Skip(
                "needs --peer-limit N: the main target's L11 (max connections per peer)".to_owned(),
            );
        };
        let target = self.main.clone();
        // Let connections of earlier cases finish their lingering close (up to the 2 s linger
        // after a 64 KiB drain, D8's for one), with room to spare on a loaded machine.
        settle_connections(&target).await;
        let opts = ConnOpts {
            wait: Duration::from_millis(case.variants.first().map_or(2000, |v| v.wait_ms)),
            keep_writing: false,
            after_eof: false,
        };
        let mut held = Vec::new();
        let mut verdict = VariantOutcome::Pass;
        for n in 1..=limit + 1 {
            let conn = match Conn::open(target.addr, opts).await {
                Ok(c) => c,
                Err(r) => {
                    verdict = VariantOutcome::Fail(format!("connection {n}: {}", r.describe()));
                    break;
                }
            };
            let answered = conn
                .wait_status(Duration::from_millis(if n <= limit { 20 } else { 1000 }))
                .await;
            if n <= limit && answered {
                let r = conn.finish().await;
                verdict = VariantOutcome::Fail(format!(
                    "connection {n} of {} was answered: {} (expected only the {}th to get 503)",
                    limit + 1,
                    r.describe(),
                    limit + 1
                ));
                break;
            }
            if n == limit + 1 {
                let r = conn.finish().await;
                if r.status() != Some(503) || r.end != End::Fin {
                    verdict = VariantOutcome::Fail(format!(
                        "connection {n}: {} (expected status=503 end=fin)",
                        r.describe()
                    ));
                }
                break;
            }
            held.push(conn);
        }
        drop(held);
        // Leave the target as it was found: until the server has closed the held connections,
        // they count against L11, and the next exclusive case (Q10 in CI once) would be refused.
        settle_connections(&target).await;
        verdict
    }

    /// D2 (L39, the S12 pressure): against a target started under RLIMIT_NOFILE N, open 25/16 N
    /// connections (400 for 256), so that `accept` fails with EMFILE for a while. A writer
    /// admitted before the pressure must still be served to its 200 while it lasts; after
    /// half the connections close, a new stream must get its 200 within 1 s; and the target's
    /// `plotstream_accept_errors_total` must grow, so a target that never ran out of
    /// descriptors cannot pass. A miss of only the 1 s bound is retried once, alone.
    async fn drive_emfile(&self, notes: &mut Vec<String>) -> VariantOutcome {
        let Some(target) = self.fd_limited.clone() else {
            return VariantOutcome::Skip(
                "needs --target-fd-limited URL: an endpoint started under RLIMIT_NOFILE (ulimit -n 256), as in the S12 scenario"
                    .to_owned(),
            );
        };
        match self.emfile_round(&target, notes).await {
            Err(EmfileMiss::Late(first)) => {
                // Every permit: nothing else of the suite runs beside the rerun.
                let _all = self.jobs.acquire_many(self.jobs_total).await;
                match self.emfile_round(&target, notes).await {
                    Ok(()) => {
                        notes.push(format!(
                            "{} (the first round was late: {first})",
                            super::report::RERUN_MARK
                        ));
                        VariantOutcome::Pass
                    }
                    Err(EmfileMiss::Late(why) | EmfileMiss::Broken(why)) => {
                        VariantOutcome::Fail(format!("{why} (first round: {first})"))
                    }
                }
            }
            Err(EmfileMiss::Broken(why)) => VariantOutcome::Fail(why),
            Ok(()) => VariantOutcome::Pass,
        }
    }

    async fn emfile_round(
        &self,
        target: &Target,
        notes: &mut Vec<String>,
    ) -> Result<(), EmfileMiss> {
        use tokio::io::AsyncWriteExt;
        let addr = target.addr;
        let errors = || async {
            client::metrics(addr)
                .await
                .ok()
                .and_then(|m| m.get("plotstream_accept_errors_total").copied())
        };
        let errors_before = if target.metrics { errors().await } else { None };
        let head = |token: &str| {
            format!("POST / HTTP/1.1\r\nHost: {addr}\r\nplotly-streamtoken: {token}\r\nTransfer-Encoding: chunked\r\n\r\n")
        };
        let line = |n: u32| {
            let l = format!("{{\"x\":{n},\"y\":{n}}}\n");
            format!("{:x}\r\n{l}\r\n", l.len())
        };
        let broken = EmfileMiss::Broken;
        // A writer admitted before the pressure.
        let writer_token = self.tokens.random(10);
        let mut writer = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| broken(format!("the writer could not connect: {e}")))?;
        writer
            .write_all(format!("{}{}", head(&writer_token), line(1)).as_bytes())
            .await
            .map_err(|e| broken(format!("the writer's first write failed: {e}")))?;
        if target.inspection {
            let seen = tokio::time::timeout(Duration::from_secs(5), async {
                while !matches!(client::inspect(addr, &writer_token).await, Ok(Some(i)) if i.last_seq >= 1)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            if seen.is_err() {
                return Err(broken(
                    "the writer's first line did not show within 5 s".to_owned(),
                ));
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The pressure: more connections than the target has descriptors.
        let n = self.opts.fd_limit.max(16) * 25 / 16;
        let mut held = Vec::with_capacity(n);
        let mut refused = 0usize;
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => held.push(s),
                _ => refused += 1,
            }
        }
        if held.len() < self.opts.fd_limit {
            return Err(broken(format!(
                "only {} of {n} connections opened ({refused} failed here, not at the target?)",
                held.len()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The established writer is still served while accept() fails.
        let writer_status = async {
            writer
                .write_all(format!("{}0\r\n\r\n", line(2)).as_bytes())
                .await?;
            read_status(&mut writer, Duration::from_secs(5)).await
        }
        .await;
        match writer_status {
            Ok(Some(200)) => {}
            other => {
                return Err(broken(format!(
                    "the writer admitted before the pressure got {other:?} instead of 200 while {} connections were open",
                    held.len()
                )))
            }
        }
        // Half the connections go; a new stream must be admitted within 1 s.
        let close = held.len() / 2;
        drop(held.drain(..close));
        let started = Instant::now();
        let token = self.tokens.random(10);
        let status = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(format!("{}{}0\r\n\r\n", head(&token), line(1)).as_bytes())
                .await?;
            read_status(&mut s, Duration::from_secs(5)).await
        }
        .await;
        let took = started.elapsed();
        drop(held);
        if !matches!(status, Ok(Some(200))) {
            return Err(broken(format!(
                "after {close} of the connections closed, a new stream got {status:?} instead of 200"
            )));
        }
        let errors_after = if target.metrics { errors().await } else { None };
        match (errors_before, errors_after) {
            (Some(before), Some(after)) if after > before => notes.push(format!(
                "{} accept errors; a new stream was admitted {} ms after {close} closes",
                after - before,
                took.as_millis()
            )),
            (Some(_), Some(_)) => {
                return Err(broken(format!(
                    "plotstream_accept_errors_total did not grow: the target never ran out of descriptors (is it under RLIMIT_NOFILE {}?)",
                    self.opts.fd_limit
                )))
            }
            _ => notes.push(
                "the target shows no plotstream_accept_errors_total: EMFILE is not observable".to_owned(),
            ),
        }
        if took > Duration::from_secs(1) {
            return Err(EmfileMiss::Late(format!(
                "a new stream was admitted {} ms after {close} closes (bound 1 000 ms)",
                took.as_millis()
            )));
        }
        Ok(())
    }

    /// Q11: issued tokens are 10 characters of `[a-z0-9]`, unique.
    async fn drive_issue_tokens(&self, case: &Case) -> VariantOutcome {
        let target = self.main.clone();
        if !target.tokens_api {
            return VariantOutcome::Skip("needs POST /api/tokens on the target".to_owned());
        }
        let n = usize::try_from(case.count.unwrap_or(10_000)).unwrap_or(10_000);
        let _permit = self.jobs.acquire().await;
        let tokens = match client::issue_tokens(target.addr, n).await {
            Ok(t) => t,
            Err(e) => return VariantOutcome::Fail(format!("POST /api/tokens?count={n}: {e:#}")),
        };
        if tokens.len() != n {
            return VariantOutcome::Fail(format!("asked for {n} tokens, got {}", tokens.len()));
        }
        if let Some(bad) = tokens.iter().find(|t| {
            t.len() != 10
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }) {
            return VariantOutcome::Fail(format!("token {bad:?} is not [a-z0-9]{{10}}"));
        }
        let unique: BTreeSet<&String> = tokens.iter().collect();
        if unique.len() != n {
            return VariantOutcome::Fail(format!(
                "{} duplicate tokens among {n}",
                n - unique.len()
            ));
        }
        VariantOutcome::Pass
    }

    /// The account variables of `--credentials` and `--stream-id` (see the DSL).
    fn account_variables(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some((user, key)) = &self.opts.credentials {
            let wrong_key = format!("{key}-wrong");
            out.extend([
                ("$user".to_owned(), user.clone()),
                ("$key".to_owned(), key.clone()),
                ("$auth".to_owned(), client::basic(user, key)),
                ("$wrong_auth".to_owned(), client::basic(user, &wrong_key)),
                ("$wrong_key".to_owned(), wrong_key),
            ]);
        }
        if let Some(sid) = &self.opts.stream_id {
            out.push(("$sid".to_owned(), sid.clone()));
        }
        out
    }

    /// Fresh tokens for every placeholder of `case`.
    async fn alloc_tokens(&self, case: &Case, target: &Target) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (name, len) in &case.tokens {
            let token =
                if target.kind == Some(SetupKind::Registered) && *len == 10 && name != "nosuch" {
                    target.issued().await?
                } else {
                    self.tokens.random(*len)
                };
            out.push((name.clone(), token));
        }
        Ok(out)
    }
}

/// Whether a check holds runs to their timing bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// Every bound counts.
    Check,
    /// Events must happen, at any time: tells a late run from a wrong one.
    Ignore,
}

/// Everything one run needs, owned, so runs can be spawned.
struct RunCtx {
    runner: Arc<Runner>,
    case: Arc<Case>,
    v_idx: usize,
    target: Arc<Target>,
    mode: Segmentation,
    split: Option<usize>,
    exclusive: bool,
    /// A rerun after a timing miss: it takes every job permit, so no other job run overlaps it.
    quiet: bool,
    /// Reused tokens (split runs): counts are deltas, windows are not checked.
    slot: Option<Arc<Slot>>,
}

/// Waits (at most 5 s) until `target` has no connection open but the metrics probe's own,
/// by `/metrics`; without metrics, waits 2.5 s. Cases that fill a per-peer limit (D11) call it
/// before and after, so that no other case meets their connections.
async fn settle_connections(target: &Target) {
    if !target.metrics {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        return;
    }
    for _ in 0..100 {
        let open = client::metrics(target.addr)
            .await
            .ok()
            .and_then(|m| m.get("plotstream_connections_open").copied())
            .unwrap_or(1.0);
        if open <= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A set of tokens that split runs reuse one at a time, so that a full run creates a few
/// thousand streams rather than one per run (L26 caps a server at 10 000).
#[derive(Debug, Default)]
struct Slot {
    tokens: tokio::sync::Mutex<Option<Vec<(String, String)>>>,
}

impl RunCtx {
    fn v(&self) -> &Variant {
        &self.case.variants[self.v_idx]
    }
}

async fn run_detached<T>(tag: T, ctx: RunCtx) -> (T, Option<usize>, Result<Observation>) {
    let split = ctx.split;
    (tag, split, attempt(&ctx).await)
}

async fn attempt(ctx: &RunCtx) -> Result<Observation> {
    let (runner, case, v) = (&ctx.runner, &ctx.case, ctx.v());
    let target = &ctx.target;
    // Exclusive cases run in a phase of their own (see `run_cases`), one run at a time.
    let _permit = if ctx.quiet {
        Some(
            runner
                .jobs
                .acquire_many(runner.jobs_total)
                .await
                .context("runner closed")?,
        )
    } else if ctx.exclusive || case.timers {
        None
    } else {
        Some(runner.jobs.acquire().await.context("runner closed")?)
    };
    if v.parallel > 1 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..v.parallel {
            let single = RunCtx {
                runner: runner.clone(),
                case: case.clone(),
                v_idx: ctx.v_idx,
                target: target.clone(),
                mode: ctx.mode,
                split: ctx.split,
                exclusive: false,
                quiet: false,
                slot: None,
            };
            set.spawn(async move { one_run(&single).await });
        }
        let mut all = Observation::default();
        let mut idx = 0;
        while let Some(res) = set.join_next().await {
            let obs = res.context("a parallel run panicked")??;
            idx += 1;
            for (name, c) in obs.conns {
                all.conns.push((format!("#{idx}{name}"), c));
            }
            if all.streams.is_empty() {
                all.streams = obs.streams;
            }
            if all.subst.is_empty() {
                all.subst = obs.subst;
                all.span = obs.span;
            }
        }
        return Ok(all);
    }
    one_run(ctx).await
}

async fn one_run(ctx: &RunCtx) -> Result<Observation> {
    let (runner, case, v) = (&ctx.runner, &ctx.case, ctx.v());
    let target = &ctx.target;
    let mut slot_guard = match &ctx.slot {
        Some(slot) => Some(slot.tokens.lock().await),
        None => None,
    };
    let subst = match slot_guard.as_deref_mut() {
        Some(Some(tokens)) => tokens.clone(),
        Some(empty) => {
            let tokens = runner.alloc_tokens(case, target).await?;
            *empty = Some(tokens.clone());
            tokens
        }
        None => runner.alloc_tokens(case, target).await?,
    };
    let subst: Vec<(String, String)> = subst
        .into_iter()
        .chain(runner.account_variables())
        .collect();
    let reused = slot_guard.is_some();
    let token_of = |name: &str| {
        subst
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| name.to_owned())
    };
    let wants_metrics = v.expect.iter().any(Expect::needs_metrics) && ctx.exclusive;
    let before = if wants_metrics && target.metrics {
        client::metrics(target.addr).await.ok()
    } else {
        None
    };
    let metrics_missing = wants_metrics && before.is_none();
    // Every stream an expectation names is inspected after the run (and before it, when the
    // tokens are reused, to count what the run added).
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for e in v.expect.iter().chain(v.expect_conn.values().flatten()) {
        names.extend(e.acc.keys().map(String::as_str));
        names.extend(e.window.keys().map(String::as_str));
        names.extend(e.window_keys.keys().map(String::as_str));
        names.extend(e.converted.keys().map(String::as_str));
        names.extend(e.maxpoints.keys().map(String::as_str));
        if e.rejected.is_some() {
            names.insert("tok1");
        }
    }
    let mut baselines: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    if reused && target.inspection {
        for name in &names {
            if let Ok(Some(i)) = client::inspect_counts(target.addr, &token_of(name)).await {
                baselines.insert(name, (i.last_seq, i.rejected_lines));
            }
        }
    }
    let opts = ConnOpts {
        wait: runner.wait_for(case, v),
        keep_writing: v.keep_writing,
        after_eof: ctx.split.is_none(),
    };
    let scale = runner.pause_scale(case);
    let mut obs = Observation::default();
    let mut captured = Vec::new();
    let started = SystemTime::now();
    if let Some(program) = &v.bytes {
        let items = program.eval(&subst)?;
        let steps = plotstream_cases::segment::schedule(&items, ctx.mode, ctx.split, scale);
        for r in 0..v.repeat {
            let res = wire::run_conn(target.addr, &steps, opts).await;
            let name = if v.repeat > 1 {
                format!("#{}", r + 1)
            } else {
                String::new()
            };
            obs.conns.push((name, res));
        }
    } else {
        (obs.conns, captured) = run_script(v, target, &subst, opts, scale).await?;
    }
    obs.span = Some((started, SystemTime::now()));
    if v.viewer && ctx.split.is_none() {
        // A viewer subscribing now gets the window in its snapshot: every value the run stored
        // must travel as one `data:` line of JSON. (The SSE side does not depend on how the
        // ingest bytes were split, so split runs skip it.)
        obs.viewer = Some(match Viewer::open(target.addr, &token_of("tok1")).await {
            Ok(view) => match view.check_events() {
                Ok(events) if events.is_empty() => Err("no SSE event".to_owned()),
                Ok(events) => Ok(events.len()),
                Err(e) => Err(format!("{e:#}")),
            },
            Err(e) => Err(format!("cannot subscribe: {e:#}")),
        });
    }
    for name in &names {
        let res = if !target.inspection {
            Err(NO_INSPECTION.to_owned())
        } else if reused {
            // Reused tokens: counts only (windows hold earlier runs' data).
            client::inspect_counts(target.addr, &token_of(name))
                .await
                .map_err(|e| format!("{e:#}"))
        } else {
            client::inspect(target.addr, &token_of(name))
                .await
                .map_err(|e| format!("{e:#}"))
        };
        // Reused tokens: what this run added.
        let res = match (res, baselines.get(*name)) {
            (Ok(Some(mut i)), Some((seq, rejected))) => {
                i.last_seq -= (*seq).min(i.last_seq);
                i.rejected_lines -= (*rejected).min(i.rejected_lines);
                Ok(Some(i))
            }
            (res, _) => res,
        };
        obs.streams.insert((*name).to_owned(), res);
    }
    obs.reused = reused;
    obs.metrics_missing = metrics_missing;
    obs.subst = subst.iter().cloned().chain(captured).collect();
    if let Some(before) = before {
        if let Ok(after) = client::metrics(target.addr).await {
            let delta = after
                .iter()
                .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
                .collect();
            obs.metrics = Some(delta);
        }
    }
    Ok(obs)
}

/// Runs a variant's script; returns every connection's result and the variables its steps
/// captured.
async fn run_script(
    v: &Variant,
    target: &Target,
    subst: &[(String, String)],
    opts: ConnOpts,
    scale: f64,
) -> Result<(Vec<(String, ConnResult)>, Vec<(String, String)>)> {
    let mut conns: Vec<(String, Conn)> = Vec::new();
    let mut done: Vec<(String, ConnResult)> = Vec::new();
    let mut captured: Vec<(String, String)> = Vec::new();
    let token_of = |name: &str| {
        subst
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| name.to_owned())
    };
    for (step, program) in &v.script {
        if let (Some(name), Some(program)) = (&step.conn, program) {
            let all: Vec<(String, String)> = subst.iter().chain(&captured).cloned().collect();
            let items = program.eval(&all)?;
            let steps =
                plotstream_cases::segment::schedule(&items, Segmentation::Timed, None, scale);
            if !conns.iter().any(|(n, _)| n == name) {
                match Conn::open(target.addr, opts).await {
                    Ok(c) => conns.push((name.clone(), c)),
                    Err(r) => {
                        done.push((name.clone(), *r));
                        continue;
                    }
                }
            }
            if let Some((_, c)) = conns.iter_mut().find(|(n, _)| n == name) {
                c.send(&steps).await;
            }
        }
        if let Some(want) = &step.wait_acc {
            let deadline = Instant::now() + opts.wait;
            'poll: loop {
                let mut all = true;
                for (tok, n) in want {
                    let got = client::inspect(target.addr, &token_of(tok))
                        .await
                        .ok()
                        .flatten()
                        .map_or(0, |i| i.last_seq);
                    all &= got >= *n;
                }
                if all || Instant::now() >= deadline {
                    break 'poll;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(name) = &step.wait_status {
            if let Some((_, c)) = conns.iter().find(|(n, _)| n == name) {
                c.wait_status(opts.wait).await;
            }
        }
        if let Some(ms) = step.pause {
            let d = Duration::from_millis((ms as f64 / scale).round() as u64);
            tokio::time::sleep(d).await;
        }
        if let (Some(name), Some(capture)) = (&step.conn, &step.capture) {
            let res = match conns.iter().position(|(n, _)| n == name) {
                Some(idx) => conns.remove(idx).1.finish().await,
                None => match done.iter().find(|(n, _)| n == name) {
                    Some((_, res)) => res.clone(),
                    None => anyhow::bail!("capture: no connection {name}"),
                },
            };
            for (var, pointer) in capture {
                let value = capture_value(&res, pointer).with_context(|| {
                    format!("capture ${var} at {pointer:?} of {name}'s response")
                })?;
                captured.push((format!("${var}"), value));
            }
            done.push((name.clone(), res));
        }
    }
    let finished = futures_join(
        conns
            .into_iter()
            .map(|(n, c)| async move { (n, c.finish().await) }),
    )
    .await;
    done.extend(finished);
    Ok((done, captured))
}

/// The string at `pointer` of a response's JSON body; an absolute URL gives its path and
/// query, which is what a request line names.
fn capture_value(res: &ConnResult, pointer: &str) -> Result<String> {
    let Some(r) = &res.response else {
        anyhow::bail!("no response: {}", res.describe());
    };
    let json: serde_json::Value = serde_json::from_slice(&r.body).with_context(|| {
        format!(
            "status {}, the body is not JSON: {}",
            r.status,
            excerpt(&String::from_utf8_lossy(&r.body))
        )
    })?;
    let Some(value) = json.pointer(pointer).and_then(serde_json::Value::as_str) else {
        anyhow::bail!(
            "status {}, no string there: {}",
            r.status,
            excerpt(&String::from_utf8_lossy(&r.body))
        );
    };
    Ok(url_path(value).unwrap_or(value).to_owned())
}

/// The path and query of an absolute `http://` or `https://` URL.
fn url_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some(rest.find('/').map_or("/", |at| &rest[at..]))
}

/// The `<script>` element of an HTML text whose content is not blank (an inline script), if any.
fn inline_script(html: &str) -> Option<String> {
    // ASCII lowering keeps every byte offset.
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<script").map(|at| at + from) {
        let open_end = lower[start..]
            .find('>')
            .map_or(lower.len(), |at| at + start + 1);
        let close = lower[open_end..]
            .find("</script")
            .map_or(lower.len(), |at| at + open_end);
        if !html[open_end..close].trim().is_empty() {
            return Some(html[start..close].to_owned());
        }
        from = close.max(start + 1);
    }
    None
}

/// Why `body` fails `body_lacks = [unwanted]`: where `unwanted` occurs, with the text around it.
fn unwanted(body: &str, unwanted: &str) -> Option<String> {
    let at = body.find(unwanted)?;
    // From a little before it, on a character boundary (0 always is one).
    let from = (0..=at.saturating_sub(EXCERPT / 2))
        .rev()
        .find(|&idx| body.is_char_boundary(idx))
        .unwrap_or(0);
    Some(format!(
        "body has {unwanted:?} at byte {at}: {}",
        excerpt(&body[from..])
    ))
}

/// At most [`EXCERPT`] characters of `text`, quoted.
fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(EXCERPT).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Awaits every future concurrently, keeping their order.
async fn futures_join<F, T>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn mode_key(obs: &Observation, with_digest: bool) -> ModeKey {
    let mut key = ModeKey {
        statuses: obs.conns.iter().map(|(_, c)| c.status()).collect(),
        acc: BTreeMap::new(),
        rejected: BTreeMap::new(),
        digest: BTreeMap::new(),
    };
    for (tok, s) in &obs.streams {
        if let Ok(i) = s {
            key.acc
                .insert(tok.clone(), i.as_ref().map_or(0, |i| i.last_seq));
            key.rejected
                .insert(tok.clone(), i.as_ref().map_or(0, |i| i.rejected_lines));
            if with_digest {
                key.digest.insert(
                    tok.clone(),
                    i.as_ref().map_or_else(String::new, |i| i.digest.clone()),
                );
            }
        }
    }
    key
}

fn show_key(k: &ModeKey) -> String {
    let statuses: Vec<String> = k
        .statuses
        .iter()
        .map(|s| s.map_or("none".to_owned(), |c| c.to_string()))
        .collect();
    let mut s = format!("status={}", statuses.join(","));
    for (t, n) in &k.acc {
        let _ = write!(s, " acc{{{t}={n}}}");
    }
    for (t, n) in &k.rejected {
        if *n > 0 {
            let _ = write!(s, " rejected{{{t}={n}}}");
        }
    }
    for (t, d) in &k.digest {
        let _ = write!(s, " digest{{{t}={}}}", &d[..d.len().min(12)]);
    }
    s
}

fn conn_label(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" {name}")
    }
}

/// One line for the report's `Actual:`.
fn describe(obs: &Observation) -> String {
    let mut parts: Vec<String> = obs
        .conns
        .iter()
        .take(4)
        .map(|(n, c)| {
            if n.is_empty() {
                c.describe()
            } else {
                format!("{n}: {}", c.describe())
            }
        })
        .collect();
    if obs.conns.len() > 4 {
        parts.push(format!("… {} connections in all", obs.conns.len()));
    }
    for (tok, s) in &obs.streams {
        match s {
            Ok(Some(i)) => parts.push(format!(
                "{tok}: last_seq={} count={} rejected={}",
                i.last_seq, i.count, i.rejected_lines
            )),
            Ok(None) => parts.push(format!("{tok}: no stream")),
            Err(e) => parts.push(format!("{tok}: {e}")),
        }
    }
    if let Some(v) = &obs.viewer {
        parts.push(match v {
            Ok(n) => format!("viewer: {n} well-formed events"),
            Err(e) => format!("viewer: {e}"),
        });
    }
    parts.join("; ")
}

fn obs_wire(obs: &Observation) -> String {
    let mut out = String::new();
    for (name, c) in obs.conns.iter().take(3) {
        if !name.is_empty() {
            let _ = writeln!(out, "  connection {name}:");
        }
        out.push_str(&wire::hexdump(&c.log));
    }
    out
}

/// JSON equality with numbers compared as f64 (so 1 = 1.0 and -0 = 0).
/// A `converted` expectation against a stored window: exactly `x` and `y`, `y` as given, `x`
/// the converted times (`timestamps::check_x`).
fn converted(
    window: &serde_json::Value,
    want: &plotstream_cases::Converted,
    obs: &Observation,
) -> std::result::Result<(), String> {
    let keys: BTreeSet<&str> = window
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if keys != BTreeSet::from(["x", "y"]) {
        return Err(format!("attributes {keys:?}, not x and y"));
    }
    let y = serde_json::Value::Array(want.y.clone());
    if !json_eq(&window["y"], &y) {
        return Err(format!("y {} ≠ {y}", window["y"]));
    }
    let xs = window["x"].as_array().map_or(&[][..], Vec::as_slice);
    let span = obs.span.ok_or("the run has no time span")?;
    super::timestamps::check_x(xs, &want.zone, &want.x_millis, span, obs.conns.len() <= 1)
}

fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => x.as_f64() == y.as_f64(),
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The reason a check cannot be made against a target without the inspection route.
pub const NO_INSPECTION: &str =
    "needs the inspection route GET /api/streams/{token} (docs/reliability.md §4.3)";
/// Token sets reused by the split runs of one variant (and so split runs in flight per variant).
const SPLIT_SLOTS: usize = 4;
/// Quiet reruns per variant at most: a target late in more runs than this fails without more
/// waiting (an endpoint late every time would otherwise be rerun once per split position).
const MAX_RERUNS: usize = 8;
/// The same for variants whose runs mostly wait (an `open` outcome).
const OPEN_SPLIT_SLOTS: usize = 16;
/// Runs of one variant launched at a time (they then queue on slots and the job semaphore).
const SPLIT_WINDOW: usize = 64;
/// Characters of a body quoted in a failure.
const EXCERPT: usize = 300;

/// Why a D2 round did not pass.
enum EmfileMiss {
    /// Only the 1 s admission bound was missed.
    Late(String),
    /// Anything else.
    Broken(String),
}

/// Reads until EOF (or `wait`) and returns the response's status code, if one came.
async fn read_status(
    s: &mut tokio::net::TcpStream,
    wait: Duration,
) -> std::io::Result<Option<u16>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    Ok(buf
        .get(9..12)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok()))
}

/// How many of `conns` end as `e` says, and the first mismatch. With several connections
/// (repeat, parallel) and an `e` that says nothing about stored streams or counters, a
/// connection may end as any such alternative of the set says: E8's runs each end with the
/// FIN or with the reset after it, and a mix is as acceptable as either alone.
fn count_matching<C>(
    conns: &[C],
    e: &Expect,
    alternatives: &[Expect],
    matches: impl Fn(&Expect, &C) -> std::result::Result<(), String>,
) -> (u32, Option<String>) {
    let wire_only = |e: &Expect| !e.needs_inspection() && !e.needs_metrics();
    let mut n_ok = 0u32;
    let mut first_err = None;
    for c in conns {
        let ok = match matches(e, c) {
            Ok(()) => true,
            Err(why) => {
                let other = conns.len() > 1
                    && wire_only(e)
                    && alternatives
                        .iter()
                        .filter(|alt| wire_only(alt))
                        .any(|alt| matches(alt, c).is_ok());
                if !other {
                    first_err.get_or_insert(why);
                }
                other
            }
        };
        n_ok += u32::from(ok);
    }
    (n_ok, first_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(text: &str) -> Expect {
        toml::from_str(text).expect("an expectation")
    }

    fn by_end(e: &Expect, c: &End) -> std::result::Result<(), String> {
        if e.end == Some(*c) {
            Ok(())
        } else {
            Err(format!("end {c} ≠ {:?}", e.end))
        }
    }

    #[test]
    fn repeated_runs_may_mix_wire_only_alternatives() {
        let set = [
            expect("status = 413\nend = \"fin\""),
            expect("status = 413\nend = \"rst-after-status\""),
        ];
        let mixed = [End::Fin, End::RstAfterStatus, End::RstAfterStatus, End::Fin];
        assert_eq!(count_matching(&mixed, &set[0], &set, by_end).0, 4);
        // An outcome outside the set still counts against the runs.
        let bad = [End::Fin, End::Rst];
        let (n, why) = count_matching(&bad, &set[0], &set, by_end);
        assert_eq!(n, 1);
        assert!(why.is_some_and(|w| w.contains("rst")));
        // One connection: only `e` itself (its stream part is judged with it).
        assert_eq!(
            count_matching(&[End::RstAfterStatus], &set[0], &set, by_end).0,
            0
        );
    }

    #[test]
    fn inline_scripts_are_found_and_sourced_ones_are_not() {
        let page = r#"<head><script src="/assets/viewer.js?v=1"></script><SCRIPT
            src="/a.js">  </SCRIPT></head><body>"#;
        assert_eq!(inline_script(page), None);
        let inline = format!("{page}<script type=\"module\">alert(1)</script>");
        assert_eq!(
            inline_script(&inline).as_deref(),
            Some("<script type=\"module\">alert(1)")
        );
        assert!(inline_script("<script>x").is_some(), "an unclosed script");
        assert_eq!(inline_script("<p>no scripts</p>"), None);
    }

    #[test]
    fn unwanted_text_is_shown_in_place_whatever_the_characters_before_it() {
        // 603 - 150 falls inside an "é": the excerpt starts one byte earlier.
        let body = format!("{}<b>abcdef1234</b>", "é".repeat(EXCERPT));
        let why = unwanted(&body, "abcdef1234").expect("it is there");
        assert!(
            why.starts_with("body has \"abcdef1234\" at byte 603: \"é"),
            "{why}"
        );
        assert!(why.contains("é<b>abcdef1234</b>"), "{why}");
        assert_eq!(unwanted(&body, "zyxwvu9876"), None);
    }

    #[test]
    fn captured_urls_keep_their_path_and_query() {
        assert_eq!(
            url_path("http://127.0.0.1:9/~demo/123456789012/"),
            Some("/~demo/123456789012/")
        );
        assert_eq!(
            url_path("https://h/~d/1?share_key=k"),
            Some("/~d/1?share_key=k")
        );
        assert_eq!(url_path("http://h"), Some("/"));
        assert_eq!(url_path("demo:1"), None);
    }

    #[test]
    fn alternatives_about_streams_are_not_mixed() {
        let set = [
            expect("status = 200\nend = \"fin\"\nacc = { tok1 = 1 }"),
            expect("status = 400\nend = \"silent\"\nacc = { tok1 = 0 }"),
        ];
        let runs = [End::Fin, End::Silent];
        assert_eq!(count_matching(&runs, &set[0], &set, by_end).0, 1);
    }
}
