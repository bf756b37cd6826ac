//! The simulator: faults injected on purpose so clients can be tested against the failures of
//! a real service (docs/serve.md "Test your client against plotstream"), reproducibly under
//! `--seed`.
//!
//! Every spec may be scoped to one token with `,token=T`. Random choices come from a
//! generator seeded with `--seed` and the connection's accept number, so the same seed and the
//! same client behaviour give the same faults.

use std::time::Duration;

use plotstream_proto::Status;

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
        _ => return Err(format!("unknown fault {name:?}: use disconnect, status, delay, reset, stall, idle-timeout or flap")),
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
pub struct ConnFaults<'a> {
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

/// The next flap instant after `now` (both since server start), if a flap fault applies.
pub fn next_flap(faults: &[Fault], token: Option<&str>, now: Duration) -> Option<Duration> {
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
