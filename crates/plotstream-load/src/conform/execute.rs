//! Execution: the three phases of a suite (see [`plan::phase`]), a case's variants or its
//! driver, a variant's runs (overlapping, on shared token slots, with a quiet rerun for a run
//! late only under load), and one run: tokens, counters before, the connections or the script,
//! a viewer, inspections and counters after.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use plotstream_cases::{Case, Expect, Segmentation, Variant};

use super::drivers;
use super::judge::{self, NO_INSPECTION};
use super::observe::{conn_label, describe, mode_key, obs_wire, show_key, ModeKey, Observation};
use super::plan::{self, Plan, Runner};
use super::script::{run_script, token_of};
use super::target::Target;
use super::verdict::{CaseReport, Match, VariantOutcome, VariantReport, Verdict, RERUN_MARK};
use super::wire::{self, ConnOpts};
use crate::probe::inspect::{self, Detail};
use crate::probe::{http, sse};

/// Runs `cases` on `runner` in their phases ([`plan::phase`]): phase 1 at once, phase 2 one case
/// at a time, phase 3 after phase 2, or with it when the timer cases have a target of their own
/// (`timers_apart`). Returns the reports in catalogue order, handing each to `done` as soon as
/// it and every case before it have finished.
pub async fn run_all(
    runner: Arc<Runner>,
    cases: Vec<Case>,
    timers_apart: bool,
    mut done: impl FnMut(&CaseReport),
) -> Result<Vec<CaseReport>> {
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(1u8);
    let phase_tx = Arc::new(phase_tx);
    let mut handles = Vec::new();
    let mut by_phase: [Vec<tokio::sync::oneshot::Receiver<()>>; 4] = Default::default();
    let order = Arc::new(tokio::sync::Mutex::new(()));
    for case in cases {
        let runner = runner.clone();
        let phase = plan::phase(&case);
        let case = Arc::new(case);
        let mut phase_rx = phase_rx.clone();
        let order = order.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        by_phase[usize::from(phase)].push(done_rx);
        handles.push(tokio::spawn(async move {
            let _ = phase_rx.wait_for(|now| *now >= phase).await;
            let report = if phase == 2 {
                let _alone = order.lock().await;
                runner.run_case(&case).await
            } else {
                runner.run_case(&case).await
            };
            let _ = done_tx.send(());
            report
        }));
    }
    let [_, first, second, _] = by_phase;
    tokio::spawn(async move {
        for rx in first {
            let _ = rx.await;
        }
        // Timer cases use their own target when there is one, so they may overlap phase 2.
        phase_tx.send_replace(if timers_apart { 3 } else { 2 });
        for rx in second {
            let _ = rx.await;
        }
        phase_tx.send_replace(3);
    });
    let mut reports = Vec::with_capacity(handles.len());
    for h in handles {
        let r = h
            .await
            .map_err(|e| Error::Runner(format!("a case panicked: {e}")))?;
        done(&r);
        reports.push(r);
    }
    Ok(reports)
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
            let outcome = drivers::drive(self, case, driver, &mut notes).await;
            let mut variant = VariantReport::new(driver, outcome);
            variant.notes = notes;
            report.variants.push(variant);
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
                        Err(e) => report.variants.push(VariantReport::new(
                            "",
                            VariantOutcome::Fail(format!("the variant's task failed: {e}")),
                        )),
                    }
                }
            }
        }
        judge::classify(&self.opts, case, &mut report);
        report.duration = started.elapsed();
        report
    }

    /// Runs every (mode, split) run of variant `v_idx` of `case`, judges each as it ends (a
    /// run late only under load gets a quiet rerun), stops at the first failure, and checks
    /// that every mode agrees with the first run (§7).
    async fn run_variant(self: &Arc<Self>, case: &Arc<Case>, v_idx: usize) -> VariantReport {
        let v = &case.variants[v_idx];
        let mut report = VariantReport::new(&v.name, VariantOutcome::Pass);
        report.expected = v.expect.iter().map(ToString::to_string).collect();
        for (conn, set) in &v.expect_conn {
            for e in set {
                report.expected.push(format!("{conn}: {e}"));
            }
        }
        let Plan {
            target,
            modes,
            runs,
            alone_first,
            window,
            slots: n_slots,
        } = match self.plan(case, v) {
            Ok(plan) => plan,
            Err(outcome) => {
                report.outcome = outcome;
                return report;
            }
        };
        let mut counts: Vec<(usize, usize)> = vec![(0, 0); modes.len()];
        for (mode_idx, _, _) in &runs {
            counts[*mode_idx].0 += 1;
        }
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
            match judge::check(&self.opts, case, v, &obs) {
                (Match::Yes, notes) => {
                    if let Some(first) = &first_miss {
                        report.notes.push(format!(
                            "{label}: missed a timing bound with other runs in flight ({first}); met it on a {}",
                            RERUN_MARK
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
                                RERUN_MARK
                            )
                        }
                        None if late => format!(
                            "{why} (not rerun: {MAX_RERUNS} runs of this variant already needed a {})",
                            RERUN_MARK
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

/// One run, spawned: `tag` and the split position come back with its observation.
async fn run_detached<T>(tag: T, ctx: RunCtx) -> (T, Option<usize>, Result<Observation>) {
    let split = ctx.split;
    (tag, split, attempt(&ctx).await)
}

/// One run under its job permit (every permit for a quiet rerun); a `parallel` variant's run
/// is that many single runs at once, their connections named `#1…`.
async fn attempt(ctx: &RunCtx) -> Result<Observation> {
    let (runner, case, v) = (&ctx.runner, &ctx.case, ctx.v());
    let target = &ctx.target;
    // Exclusive cases run in a phase of their own (see `run_all`), one run at a time.
    let _permit = if ctx.quiet {
        Some(
            runner
                .jobs
                .acquire_many(runner.jobs_total)
                .await
                .map_err(|_| Error::Runner("runner closed".into()))?,
        )
    } else if ctx.exclusive || case.timers {
        None
    } else {
        Some(
            runner
                .jobs
                .acquire()
                .await
                .map_err(|_| Error::Runner("runner closed".into()))?,
        )
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
            let obs = res.map_err(|e| Error::Runner(format!("a parallel run panicked: {e}")))??;
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

/// One single run: its tokens (a slot's, or fresh), counters and inspections before when they
/// are deltas, the bytes (repeated) or the script, a viewer, inspections and counters after.
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
    let wants_metrics = v.expect.iter().any(Expect::needs_metrics) && ctx.exclusive;
    let before = if wants_metrics && target.metrics {
        http::metrics(&target.endpoint).await.ok()
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
            if let Ok(Some(i)) =
                inspect::read(&target.endpoint, &token_of(&subst, name), Detail::Counts).await
            {
                baselines.insert(name, (i.last_seq, i.rejected_lines));
            }
        }
    }
    let opts = ConnOpts {
        wait: runner.opts.wait_for(case, v),
        keep_writing: v.keep_writing,
        after_eof: ctx.split.is_none(),
    };
    let scale = runner.opts.pause_scale(case);
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
        let id = token_of(&subst, "tok1");
        obs.viewer = Some(
            match sse::first_events(&target.endpoint, &id, VIEWER_WAIT).await {
                Ok(events) if events.is_empty() => Err("no SSE event".to_owned()),
                Ok(events) => events
                    .iter()
                    .try_for_each(|e| e.json().map(drop))
                    .map(|()| events.len()),
                Err(e) => Err(format!("cannot subscribe: {e}")),
            },
        );
    }
    for name in &names {
        let res = if !target.inspection {
            Err(NO_INSPECTION.to_owned())
        } else if reused {
            // Reused tokens: counts only (windows hold earlier runs' data).
            inspect::read(&target.endpoint, &token_of(&subst, name), Detail::Counts)
                .await
                .map_err(|e| e.to_string())
        } else {
            inspect::read(&target.endpoint, &token_of(&subst, name), Detail::Window)
                .await
                .map_err(|e| e.to_string())
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
        if let Ok(after) = http::metrics(&target.endpoint).await {
            let delta = after
                .iter()
                .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
                .collect();
            obs.metrics = Some(delta);
        }
    }
    Ok(obs)
}

/// How long a viewer subscribed after a run waits for its first event (the snapshot).
const VIEWER_WAIT: Duration = Duration::from_secs(2);
/// Quiet reruns per variant at most: a target late in more runs than this fails without more
/// waiting (an endpoint late every time would otherwise be rerun once per split position).
const MAX_RERUNS: usize = 8;
