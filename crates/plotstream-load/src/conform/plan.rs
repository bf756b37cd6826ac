//! Planning: which phase a case runs in, which target a variant runs against, which modes and
//! split positions it runs (docs/reliability.md §7), how its runs overlap, with which tokens and
//! variables, and how long it waits. Nothing here touches a connection but the token issuing
//! of a registered-mode target.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use plotstream_cases::segment;
use plotstream_cases::{Case, End, Expect, Segmentation, SetupKind, Variant};
use tokio::sync::Semaphore;

use super::target::{Target, TokenSource};
use super::verdict::VariantOutcome;
use crate::probe::http;

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

impl Opts {
    /// How much faster than real time a case's pauses run: the timer scale for timer cases.
    pub fn pause_scale(&self, case: &Case) -> f64 {
        if case.timers {
            self.timer_scale.unwrap_or(1.0)
        } else {
            1.0
        }
    }

    /// The response wait for a variant: its `wait_ms`, stretched to cover timer bounds.
    pub fn wait_for(&self, case: &Case, v: &Variant) -> Duration {
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
    pub fn scaled(&self, case: &Case, [lo, hi]: [u64; 2]) -> [u64; 2] {
        let scale = self.pause_scale(case);
        if scale <= 1.0 {
            return [lo, hi];
        }
        let centre = (lo + hi) as f64 / 2.0 / scale;
        let half = ((hi - lo) as f64 / 2.0 / scale).max(100.0);
        [(centre - half).max(0.0) as u64, (centre + half) as u64]
    }

    /// Whether a failing SHOULD of `case` fails the run (`--strict`, `--strict-case`).
    pub fn strict_for(&self, case: &Case) -> bool {
        self.strict
            || self
                .strict_cases
                .iter()
                .any(|w| *w == case.id || w == case.group())
    }
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

/// The phase a case runs in. 1: every ordinary case at once (the job semaphore bounds the
/// connections). 2: cases that need their target to themselves (metric deltas, connection
/// limits, latency bounds), one at a time. 3: timer cases, together, on the timer target,
/// started with phase 2 (which is light) when they have a target of their own, so that their
/// ± 100 ms bounds measure the target and not a loaded machine.
pub fn phase(case: &Case) -> u8 {
    if case.timers {
        3
    } else if case.needs_exclusive() {
        2
    } else {
        1
    }
}

/// One run of a variant: the index of its mode, the mode, and the split position.
pub type Run = (usize, Segmentation, Option<usize>);

/// How a variant runs.
#[derive(Debug)]
pub struct Plan {
    /// Its target.
    pub target: Arc<Target>,
    /// Its modes, in order.
    pub modes: Vec<Segmentation>,
    /// Every (mode, split) run; the first one is the base the others must agree with.
    pub runs: Vec<Run>,
    /// The base run goes first and alone: it reads counters (so the deltas are its own) or
    /// the case wants one run at a time. The rest overlap.
    pub alone_first: bool,
    /// Runs launched at a time.
    pub window: usize,
    /// Token sets its split runs reuse.
    pub slots: usize,
}

impl Runner {
    /// How variant `v` of `case` runs, or why it does not (a skip, or bytes that do not build).
    pub fn plan(&self, case: &Case, v: &Variant) -> Result<Plan, VariantOutcome> {
        let skip = |why: &str| Err(VariantOutcome::Skip(why.to_owned()));
        if let Some(reason) = &v.skip {
            return skip(reason);
        }
        if v.needs_credentials && self.opts.credentials.is_none() {
            return skip("needs --credentials USER:KEY: a user of the target with accounts");
        }
        if v.needs_stream_id && self.opts.stream_id.is_none() {
            return skip("needs --stream-id TOKEN: a stream id the --credentials user owns");
        }
        if v.optimized && self.opts.unoptimized {
            return skip("a throughput floor for optimized builds; the targets are declared unoptimized (--unoptimized-target)");
        }
        let target = self.target_for(case, v).map_err(VariantOutcome::Skip)?;
        let single_mode = !v.script.is_empty() || v.repeat > 1 || v.parallel > 1;
        let mut modes: Vec<Segmentation> = v.segmentation.clone();
        if single_mode {
            modes.retain(|m| matches!(m, Segmentation::Whole | Segmentation::Timed));
            modes.truncate(1);
            if modes.is_empty() {
                modes.push(Segmentation::Whole);
            }
        }
        let mut runs: Vec<Run> = Vec::new();
        for (mode_idx, mode) in modes.iter().copied().enumerate() {
            if mode == Segmentation::Split {
                let points = self
                    .split_points(case, v)
                    .map_err(|e| VariantOutcome::Fail(format!("cannot build the bytes: {e:#}")))?;
                runs.extend(points.into_iter().map(|k| (mode_idx, mode, Some(k))));
            } else {
                runs.push((mode_idx, mode, None));
            }
        }
        let wants_metrics = v.expect.iter().any(Expect::needs_metrics);
        let open_outcome = v.expect.iter().any(|e| e.end() == Some(End::Open));
        Ok(Plan {
            target,
            modes,
            runs,
            alone_first: case.exclusive || wants_metrics,
            window: if case.exclusive { 1 } else { SPLIT_WINDOW },
            slots: if open_outcome {
                OPEN_SPLIT_SLOTS
            } else {
                SPLIT_SLOTS
            },
        })
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

    /// The account variables of `--credentials` and `--stream-id` (see the DSL).
    pub fn account_variables(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some((user, key)) = &self.opts.credentials {
            let wrong_key = format!("{key}-wrong");
            out.extend([
                ("$user".to_owned(), user.clone()),
                ("$key".to_owned(), key.clone()),
                ("$auth".to_owned(), http::basic(user, key)),
                ("$wrong_auth".to_owned(), http::basic(user, &wrong_key)),
                ("$wrong_key".to_owned(), wrong_key),
            ]);
        }
        if let Some(sid) = &self.opts.stream_id {
            out.push(("$sid".to_owned(), sid.clone()));
        }
        out
    }

    /// Fresh tokens for every placeholder of `case`.
    pub async fn alloc_tokens(
        &self,
        case: &Case,
        target: &Target,
    ) -> Result<Vec<(String, String)>> {
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

/// Token sets reused by the split runs of one variant (and so split runs in flight per variant).
const SPLIT_SLOTS: usize = 4;
/// The same for variants whose runs mostly wait (an `open` outcome).
const OPEN_SPLIT_SLOTS: usize = 16;
/// Runs of one variant launched at a time (they then queue on slots and the job semaphore).
const SPLIT_WINDOW: usize = 64;
