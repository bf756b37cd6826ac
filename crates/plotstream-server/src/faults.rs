//! The simulator: faults injected on purpose so clients can be tested against the failures of
//! a real service (docs/serve.md "Test your client against plotstream"), reproducibly under
//! `--seed`.
//!
//! Every spec may be scoped to one token with `,token=T`. Random choices come from a
//! generator seeded with `--seed` and the connection's accept number, so the same seed and the
//! same client behaviour give the same faults.

use std::collections::VecDeque;
use std::time::Duration;

use plotstream_proto::{Status, Token, Update};

/// One `--fault SPEC`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// Only connections writing this token (all when `None`).
    pub token: Option<String>,
}

/// The faults of docs/serve.md, "Test your client against plotstream".
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// `disconnect:after=LINES[,status=CODE]`: end each connection after LINES accepted lines
    /// with CODE (200, the legacy healthy disconnect, by default).
    Disconnect {
        /// Accepted lines before the disconnect.
        after: u64,
        /// The status sent.
        status: u16,
    },
    /// `status:code=CODE,prob=P`: each line, with probability P, is refused with CODE.
    Status {
        /// The status sent.
        code: u16,
        /// Probability per line.
        prob: f64,
    },
    /// `delay:ms=MS[,jitter=MS]`: every accepted line is held MS (± jitter) before it is
    /// applied and published.
    Delay {
        /// The delay.
        ms: u64,
        /// Uniform jitter added, 0..=jitter.
        jitter: u64,
    },
    /// `reset:prob=P`: each line, with probability P, the connection is reset (RST), the one
    /// deliberate reset of plotstream.
    Reset {
        /// Probability per line.
        prob: f64,
    },
    /// `stall:ms=MS`: after the head, stop reading for MS (the idle timer is paused meanwhile).
    Stall {
        /// How long.
        ms: u64,
    },
    /// `idle-timeout:SECONDS`: this idle timeout instead of `--idle-timeout`.
    IdleTimeout {
        /// The timeout.
        secs: f64,
    },
    /// `flap:every=SECONDS`: healthy 200 disconnects of every writer at each multiple of
    /// SECONDS since start, as the hosted cluster did during maintenance.
    Flap {
        /// The period.
        every: f64,
    },
    /// `disk-full:after=LINES[,ms=MS]`: the durable store's commits fail like a full disk once
    /// LINES lines were stored, for MS (default 2 000), then succeed again (docs/storage.md DC5).
    /// Needs the embedded store (not `--in-memory`).
    DiskFull {
        /// Lines stored before the disk fills.
        after: u64,
        /// How long it stays full.
        ms: u64,
    },
}

impl Fault {
    /// The fault's name, as counted in `/metrics`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            FaultKind::Disconnect { .. } => "disconnect",
            FaultKind::Status { .. } => "status",
            FaultKind::Delay { .. } => "delay",
            FaultKind::Reset { .. } => "reset",
            FaultKind::Stall { .. } => "stall",
            FaultKind::IdleTimeout { .. } => "idle-timeout",
            FaultKind::Flap { .. } => "flap",
            FaultKind::DiskFull { .. } => "disk-full",
        }
    }

    /// True if the fault applies to a connection writing `token` (`None`: token unknown yet).
    pub fn applies(&self, token: Option<&str>) -> bool {
        match (&self.token, token) {
            (None, _) => true,
            (Some(want), Some(t)) => want == t,
            (Some(_), None) => false,
        }
    }
}

/// Parses one `--fault` SPEC, with a clear error for a malformed one.
pub fn parse(spec: &str) -> Result<Fault, String> {
    let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let mut params: Vec<(&str, &str)> = Vec::new();
    let mut token = None;
    let mut bare = None;
    for part in rest.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("token", t)) => {
                if plotstream_proto::Token::parse(t.as_bytes()).is_none() {
                    return Err(format!("fault {spec:?}: token {t:?} is not a valid token"));
                }
                token = Some(t.to_owned());
            }
            Some((k, v)) => params.push((k, v)),
            None if bare.is_none() => bare = Some(part),
            None => return Err(format!("fault {spec:?}: expected key=value, got {part:?}")),
        }
    }
    let get = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let num = |key: &str, v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("fault {spec:?}: {key}={v:?} is not a non-negative number"))
    };
    let int = |key: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("fault {spec:?}: {key}={v:?} is not a whole number"))
    };
    let required =
        |key: &str| get(key).ok_or_else(|| format!("fault {spec:?}: {key}= is required"));
    let prob = |v: &str| {
        num("prob", v).and_then(|p| {
            if p <= 1.0 {
                Ok(p)
            } else {
                Err(format!("fault {spec:?}: prob must be within 0..=1"))
            }
        })
    };
    let code = |v: &str| {
        int("code", v).and_then(|c| {
            if (100..=599).contains(&c) {
                Ok(c as u16)
            } else {
                Err(format!("fault {spec:?}: status {c} is not an HTTP status"))
            }
        })
    };
    let allowed: &[&str] = match name {
        "disconnect" => &["after", "status"],
        "status" => &["code", "prob"],
        "delay" => &["ms", "jitter"],
        "reset" => &["prob"],
        "stall" => &["ms"],
        "idle-timeout" => &[],
        "flap" => &["every"],
        "disk-full" => &["after", "ms"],
        _ => return Err(format!("unknown fault {name:?}: use disconnect, status, delay, reset, stall, idle-timeout, flap or disk-full")),
    };
    if let Some((k, _)) = params.iter().find(|(k, _)| !allowed.contains(k)) {
        return Err(format!(
            "fault {spec:?}: unknown parameter {k:?} (allowed: {})",
            allowed.join(", ")
        ));
    }
    let kind = match name {
        "disconnect" => FaultKind::Disconnect {
            after: int("after", required("after")?)?,
            status: get("status").map_or(Ok(200), code)?,
        },
        "status" => FaultKind::Status {
            code: code(required("code")?)?,
            prob: get("prob").map_or(Ok(1.0), prob)?,
        },
        "delay" => FaultKind::Delay {
            ms: int("ms", required("ms")?)?,
            jitter: get("jitter").map_or(Ok(0), |v| int("jitter", v))?,
        },
        "reset" => FaultKind::Reset {
            prob: prob(required("prob")?)?,
        },
        "stall" => FaultKind::Stall {
            ms: int("ms", required("ms")?)?,
        },
        "idle-timeout" => {
            let v = bare.ok_or_else(|| format!("fault {spec:?}: use idle-timeout:SECONDS"))?;
            FaultKind::IdleTimeout {
                secs: num("seconds", v)?,
            }
        }
        "disk-full" => {
            if token.is_some() {
                return Err(format!(
                    "fault {spec:?}: the disk is shared; token= does not apply"
                ));
            }
            FaultKind::DiskFull {
                after: int("after", required("after")?)?,
                ms: get("ms").map_or(Ok(2000), |v| int("ms", v))?,
            }
        }
        _ => {
            let every = num("every", required("every")?)?;
            if every <= 0.0 {
                return Err(format!("fault {spec:?}: every must be positive"));
            }
            FaultKind::Flap { every }
        }
    };
    if bare.is_some() && name != "idle-timeout" {
        return Err(format!("fault {spec:?}: expected key=value parameters"));
    }
    Ok(Fault { kind, token })
}

/// SplitMix64: small, fast, and the same sequence for the same seed on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of connection number `conn` under `seed`.
    pub fn new(seed: u64, conn: u64) -> Rng {
        Rng(seed ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next value in 0..1.
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        #[allow(clippy::cast_precision_loss)] // 53 bits are exact
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        u
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// What the connection driver must do for one accepted line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineAction {
    /// Apply it.
    Apply,
    /// Refuse it with this status.
    Refuse(Status),
    /// Reset the connection.
    Reset,
}

/// The per-connection fault state.
#[derive(Debug)]
struct ConnFaults<'a> {
    faults: &'a [Fault],
    rng: Rng,
    n_lines: u64,
}

impl<'a> ConnFaults<'a> {
    /// The faults of one connection.
    pub fn new(faults: &'a [Fault], seed: u64, conn: u64) -> ConnFaults<'a> {
        ConnFaults {
            faults,
            rng: Rng::new(seed, conn),
            n_lines: 0,
        }
    }

    /// Seeds the random choices from the token and this connection's number among that
    /// token's connections, so that other traffic (viewers, metrics scrapes, other writers)
    /// never shifts one writer's fault sequence.
    pub fn reseed(&mut self, seed: u64, token: &str, nth: u64) {
        // FNV-1a: stable across platforms and releases, unlike the std hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in token.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.rng = Rng::new(seed ^ h, nth);
    }

    /// Decides for one line of `token`, before it is applied.
    pub fn before_line(&mut self, token: &str) -> (LineAction, Option<&'static str>) {
        for f in self.faults.iter().filter(|f| f.applies(Some(token))) {
            match f.kind {
                FaultKind::Reset { prob } if self.rng.chance(prob) => {
                    return (LineAction::Reset, Some("reset"))
                }
                FaultKind::Status { code, prob } if self.rng.chance(prob) => {
                    return (LineAction::Refuse(Status::new(code)), Some("status"))
                }
                _ => {}
            }
        }
        (LineAction::Apply, None)
    }

    /// The delay to hold an accepted line of `token`.
    pub fn delay(&mut self, token: &str) -> Option<Duration> {
        let mut total = None;
        for f in self.faults.iter().filter(|f| f.applies(Some(token))) {
            if let FaultKind::Delay { ms, jitter } = f.kind {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let extra = (self.rng.next_f64() * (jitter as f64 + 1.0)).floor() as u64;
                total = Some(
                    total.unwrap_or(Duration::ZERO) + Duration::from_millis(ms + extra.min(jitter)),
                );
            }
        }
        total
    }

    /// After a line of `token` was applied: the status to end with, if a disconnect is due.
    pub fn after_line(&mut self, token: &str) -> Option<Status> {
        self.n_lines += 1;
        self.faults
            .iter()
            .filter(|f| f.applies(Some(token)))
            .find_map(|f| match f.kind {
                FaultKind::Disconnect { after, status } if self.n_lines >= after => {
                    Some(Status::new(status))
                }
                _ => None,
            })
    }
}

/// A line held by a `delay` fault until it is due.
#[derive(Debug)]
struct Held {
    due: Duration,
    token: Token,
    update: Update,
}

/// One connection's faults as a sans-IO machine, like the protocol's: the driver tells it what
/// happened (a head admitted, a line), asks it what to do with a line, and waits until
/// [`FaultPlan::poll_timeout`], then calls [`FaultPlan::handle_timeout`]. It reads no clock:
/// `now` is the time since the server started.
#[derive(Debug)]
pub struct FaultPlan<'a> {
    all: &'a [Fault],
    seed: u64,
    lines: ConnFaults<'a>,
    /// The token faults are scoped by: the head's, else the first line's.
    token: Option<String>,
    /// `(from, until)` of a `stall`: nothing is read or processed meanwhile.
    stall: Option<(Duration, Duration)>,
    /// Lines held by `delay`, in arrival order (their dues are too: the delay is per token).
    held: VecDeque<Held>,
    /// The next `flap`: writers only, so it starts once a head is admitted or a line scoped.
    flap_at: Option<Duration>,
}

/// What an admitted head makes the driver do.
#[derive(Debug, Default, PartialEq)]
pub struct Admission {
    /// An `idle-timeout` fault: L28 for this connection.
    pub idle: Option<Duration>,
    /// A `stall` fault started, this long.
    pub stall: Option<Duration>,
    /// The faults that fired, for `plotstream_faults_total`.
    pub fired: Vec<&'static str>,
}

/// What the plan's timer asks of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The stall is over: the time from `from` to now does not count toward L28 (P8, L31).
    Unstalled {
        /// When the stall began.
        from: Duration,
    },
    /// A held line is due: take it with [`FaultPlan::pop_held`].
    Held,
    /// A `flap`: end the request with a healthy `200`.
    Flap,
}

impl<'a> FaultPlan<'a> {
    /// The plan of connection number `conn` under `--seed`.
    pub fn new(all: &'a [Fault], seed: u64, conn: u64) -> FaultPlan<'a> {
        FaultPlan {
            all,
            seed,
            lines: ConnFaults::new(all, seed, conn),
            token: None,
            stall: None,
            held: VecDeque::new(),
            flap_at: None,
        }
    }

    /// The token faults are scoped by, once known.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The head was admitted at `now`, with `token` if it named one. `nth` numbers this
    /// connection among the token's (asked only when faults are configured).
    pub fn admit(
        &mut self,
        token: Option<&str>,
        nth: impl FnOnce(&str) -> u64,
        now: Duration,
    ) -> Admission {
        self.token = token.map(str::to_owned);
        if let (Some(t), false) = (token, self.all.is_empty()) {
            self.lines.reseed(self.seed, t, nth(t));
        }
        let mut out = Admission::default();
        for f in self.all.iter().filter(|f| f.applies(token)) {
            match f.kind {
                FaultKind::IdleTimeout { secs } => {
                    out.fired.push(f.name());
                    out.idle = Some(Duration::from_secs_f64(secs));
                }
                FaultKind::Stall { ms } => {
                    out.fired.push(f.name());
                    let d = Duration::from_millis(ms);
                    out.stall = Some(d);
                    self.stall = Some((now, now + d));
                }
                _ => {}
            }
        }
        self.flap_at = next_flap(self.all, token, now);
        out
    }

    /// A line of `token` arrived; the first one scopes the faults when the head named none.
    pub fn scope(&mut self, token: &str, nth: impl FnOnce(&str) -> u64, now: Duration) {
        if self.token.is_some() {
            return;
        }
        self.token = Some(token.to_owned());
        if !self.all.is_empty() {
            self.lines.reseed(self.seed, token, nth(token));
        }
        self.flap_at = next_flap(self.all, Some(token), now);
    }

    /// True while a stall withholds reads and processing.
    pub fn is_stalled(&self, now: Duration) -> bool {
        self.stall.is_some_and(|(_, until)| now < until)
    }

    /// Decides for one line of `token`, before it is applied.
    pub fn before_line(&mut self, token: &str) -> (LineAction, Option<&'static str>) {
        self.lines.before_line(token)
    }

    /// After a line of `token` was applied: the status to end with, if a disconnect is due.
    pub fn after_line(&mut self, token: &str) -> Option<Status> {
        self.lines.after_line(token)
    }

    /// Holds the line if a `delay` applies to `token`: it is applied when due, in order with
    /// the lines held after it, while reading and timers go on. True if held.
    pub fn hold(&mut self, now: Duration, token: &Token, update: &Update) -> bool {
        match self.lines.delay(token.as_str()) {
            Some(delay) => {
                self.held.push_back(Held {
                    due: now + delay,
                    token: *token,
                    update: update.clone(),
                });
                true
            }
            None => false,
        }
    }

    /// The next held line's due time, if any.
    pub fn next_held(&self) -> Option<Duration> {
        self.held.front().map(|h| h.due)
    }

    /// The oldest held line, if it is due at `now`.
    pub fn pop_held(&mut self, now: Duration) -> Option<(Token, Update)> {
        if self.next_held()? > now {
            return None;
        }
        self.held.pop_front().map(|h| (h.token, h.update))
    }

    /// Drops the held lines (the request ended with a refusal before they were due).
    pub fn drop_held(&mut self) {
        self.held.clear();
    }

    /// When the driver must call [`FaultPlan::handle_timeout`]: the end of a stall, the next
    /// held line, or the next flap, whichever comes first.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let stall = self.stall.map(|(_, until)| until);
        [stall, self.next_held(), self.flap_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// What is due at `now`, one thing at a time (call again while it returns `Some`).
    pub fn handle_timeout(&mut self, now: Duration) -> Option<Due> {
        if let Some((from, until)) = self.stall {
            if now >= until {
                self.stall = None;
                return Some(Due::Unstalled { from });
            }
        }
        if self.next_held().is_some_and(|due| due <= now) {
            return Some(Due::Held);
        }
        if self.flap_at.is_some_and(|at| at <= now) {
            self.flap_at = None;
            return Some(Due::Flap);
        }
        None
    }
}

/// The next flap instant after `now` (both since server start), if a flap fault applies.
fn next_flap(faults: &[Fault], token: Option<&str>, now: Duration) -> Option<Duration> {
    faults
        .iter()
        .filter(|f| f.applies(token))
        .filter_map(|f| match f.kind {
            FaultKind::Flap { every } => {
                let period = Duration::from_secs_f64(every);
                let n = (now.as_secs_f64() / every).floor() + 1.0;
                Some(period.mul_f64(n))
            }
            _ => None,
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn plan_of(specs: &[&str]) -> Vec<Fault> {
        specs.iter().map(|s| parse(s).unwrap()).collect()
    }

    /// #12 item 5: the simulator is a sans-IO plan, so its timers are tested without a socket
    /// or a clock.
    #[test]
    fn a_stall_withholds_until_its_end_then_reports_the_paused_time() {
        let faults = plan_of(&["stall:ms=300"]);
        let mut plan = FaultPlan::new(&faults, 1, 1);
        let admission = plan.admit(Some("tok1"), |_| 0, ms(1000));
        assert_eq!(admission.stall, Some(ms(300)));
        assert_eq!(admission.fired, vec!["stall"]);
        assert!(plan.is_stalled(ms(1299)));
        assert_eq!(plan.poll_timeout(), Some(ms(1300)));
        assert_eq!(plan.handle_timeout(ms(1299)), None);
        assert_eq!(
            plan.handle_timeout(ms(1300)),
            Some(Due::Unstalled { from: ms(1000) })
        );
        assert!(!plan.is_stalled(ms(1300)));
        assert_eq!(plan.poll_timeout(), None);
    }

    #[test]
    fn delayed_lines_come_back_in_order_when_due_and_flaps_recur() {
        let faults = plan_of(&["delay:ms=100", "flap:every=2"]);
        let mut plan = FaultPlan::new(&faults, 1, 1);
        let token = Token::parse(b"tok1").unwrap();
        let update = Update::default();
        plan.scope("tok1", |_| 0, ms(500));
        assert_eq!(plan.token(), Some("tok1"));
        plan.scope("other", |_| 0, ms(600));
        assert_eq!(
            plan.token(),
            Some("tok1"),
            "the first line's token scopes the rest"
        );
        assert!(plan.hold(ms(500), &token, &update));
        assert!(plan.hold(ms(550), &token, &update));
        assert_eq!(plan.poll_timeout(), Some(ms(600)));
        assert!(plan.pop_held(ms(599)).is_none());
        assert_eq!(plan.handle_timeout(ms(600)), Some(Due::Held));
        assert!(plan.pop_held(ms(600)).is_some());
        assert!(plan.pop_held(ms(600)).is_none(), "the second is due at 650");
        assert!(plan.pop_held(ms(650)).is_some());
        assert_eq!(plan.poll_timeout(), Some(ms(2000)), "the flap every 2 s");
        assert_eq!(plan.handle_timeout(ms(2000)), Some(Due::Flap));
        assert_eq!(plan.poll_timeout(), None);
    }

    #[test]
    fn a_scoped_fault_leaves_other_tokens_alone() {
        let faults = plan_of(&["delay:ms=100,token=tok1", "idle-timeout:2,token=tok2"]);
        let mut plan = FaultPlan::new(&faults, 1, 1);
        let admission = plan.admit(Some("tok3"), |_| 0, ms(0));
        assert_eq!(admission, Admission::default());
        let tok3 = Token::parse(b"tok3").unwrap();
        assert!(!plan.hold(ms(0), &tok3, &Update::default()));
        let mut plan = FaultPlan::new(&faults, 1, 2);
        assert_eq!(plan.admit(Some("tok2"), |_| 0, ms(0)).idle, Some(ms(2000)));
    }

    #[test]
    fn specs_parse() {
        assert_eq!(
            parse("disconnect:after=10").unwrap().kind,
            FaultKind::Disconnect {
                after: 10,
                status: 200
            }
        );
        assert_eq!(
            parse("disconnect:after=3,status=408").unwrap().kind,
            FaultKind::Disconnect {
                after: 3,
                status: 408
            }
        );
        assert_eq!(
            parse("status:code=503,prob=0.5,token=abc").unwrap(),
            Fault {
                kind: FaultKind::Status {
                    code: 503,
                    prob: 0.5
                },
                token: Some("abc".into())
            }
        );
        assert_eq!(
            parse("delay:ms=20,jitter=5").unwrap().kind,
            FaultKind::Delay { ms: 20, jitter: 5 }
        );
        assert_eq!(
            parse("reset:prob=0.01").unwrap().kind,
            FaultKind::Reset { prob: 0.01 }
        );
        assert_eq!(
            parse("stall:ms=500").unwrap().kind,
            FaultKind::Stall { ms: 500 }
        );
        assert_eq!(
            parse("idle-timeout:5").unwrap().kind,
            FaultKind::IdleTimeout { secs: 5.0 }
        );
        assert_eq!(
            parse("flap:every=30").unwrap().kind,
            FaultKind::Flap { every: 30.0 }
        );
    }

    #[test]
    fn malformed_specs_say_why() {
        for (spec, want) in [
            ("explode", "unknown fault"),
            ("disconnect", "after= is required"),
            ("disconnect:after=x", "not a whole number"),
            ("status:code=999", "not an HTTP status"),
            ("reset:prob=2", "within 0..=1"),
            ("delay:ms=1,speed=2", "unknown parameter"),
            ("flap:every=0", "positive"),
            ("status:code=500,token=bad token", "not a valid token"),
            ("idle-timeout", "idle-timeout:SECONDS"),
        ] {
            let err = parse(spec).unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let faults = vec![parse("status:code=503,prob=0.3").unwrap()];
        let run = |seed| {
            let mut c = ConnFaults::new(&faults, seed, 7);
            (0..100)
                .map(|_| c.before_line("tok1").0)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let hits = run(42).iter().filter(|a| **a != LineAction::Apply).count();
        assert!((15..=45).contains(&hits), "{hits}");
    }

    #[test]
    fn flaps_fall_on_multiples_of_the_period() {
        let faults = vec![parse("flap:every=2").unwrap()];
        assert_eq!(
            next_flap(&faults, None, Duration::from_millis(500)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            next_flap(&faults, None, Duration::from_secs(2)),
            Some(Duration::from_secs(4))
        );
    }
}
