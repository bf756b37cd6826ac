//! `--assert EXPR`: turns a run into a CI gate.
//!
//! ```text
//! expr    = metric op operand
//! op      = "<" | "<=" | ">" | ">=" | "=" | "==" | "!="
//! operand = factor *( "*" factor )
//! factor  = number [unit] | metric          ; units: us ms s (latencies, in ms), % (÷100), k M
//! metric  = p50 | p90 | p99 | p999 | max    ; e2e latency with --verify, else send latency
//!         | send.p99 | e2e.p99 | server.p99   ; one explicitly (server: from the actual write)
//!         | offered_rate | achieved_rate | acknowledged_rate | points_sent | points_verified | lost | duplicated
//!         | out_of_order | corrupted | seq_gaps | digest_mismatches | count_mismatches
//!         | reconnects | errors | bytes_per_s | status.503 (errors_by_status entries)
//! ```
//!
//! Examples: `p99<50ms`, `lost=0`, `achieved_rate>=0.99*offered_rate`, `e2e.p999<=1s`.

use std::fmt;

use super::report::{Percentiles, Report};

/// One parsed assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    text: String,
    metric: String,
    op: Op,
    operand: Vec<Factor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
enum Factor {
    Number(f64),
    Metric(String),
}

/// Why an assertion could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl Assertion {
    /// Parses one `--assert` expression.
    pub fn parse(text: &str) -> Result<Assertion, ParseError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let err = |why: &str| ParseError(format!("invalid --assert {text:?}: {why}"));
        let (at, op, len) = find_op(&compact).ok_or_else(|| {
            err("expected a comparison such as p99<50ms, lost=0 or achieved_rate>=0.99*offered_rate")
        })?;
        let metric = compact[..at].to_owned();
        if !is_metric(&metric) {
            return Err(err(&format!("unknown metric {metric:?}")));
        }
        let rhs = &compact[at + len..];
        if rhs.is_empty() {
            return Err(err("missing right-hand side"));
        }
        let operand = rhs
            .split('*')
            .map(|f| parse_factor(f).ok_or_else(|| err(&format!("cannot read {f:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Assertion {
            text: text.to_owned(),
            metric,
            op,
            operand,
        })
    }

    /// `None` when the report satisfies it, else the one-line reason.
    pub fn check(&self, report: &Report) -> Option<String> {
        let Some(actual) = metric(report, &self.metric) else {
            return Some(format!(
                "{}: {} was not measured{}",
                self.text,
                self.metric,
                hint(&self.metric)
            ));
        };
        let mut expected = 1.0;
        for factor in &self.operand {
            match factor {
                Factor::Number(n) => expected *= n,
                Factor::Metric(m) => match metric(report, m) {
                    Some(v) => expected *= v,
                    None => return Some(format!("{}: {m} was not measured{}", self.text, hint(m))),
                },
            }
        }
        let holds = match self.op {
            Op::Lt => actual < expected,
            Op::Le => actual <= expected,
            Op::Gt => actual > expected,
            Op::Ge => actual >= expected,
            Op::Eq => actual == expected,
            Op::Ne => actual != expected,
        };
        (!holds).then(|| {
            format!(
                "{}: {} is {}{} (expected {} {})",
                self.text,
                self.metric,
                show(actual),
                unit(&self.metric),
                self.op,
                show(expected)
            )
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "=",
            Op::Ne => "!=",
        })
    }
}

/// The value of `name` in `report`; latencies in milliseconds.
fn metric(report: &Report, name: &str) -> Option<f64> {
    let pick = |p: Option<Percentiles>, q: &str| {
        p.map(|p| match q {
            "p50" => p.p50,
            "p90" => p.p90,
            "p99" => p.p99,
            "p999" => p.p999,
            _ => p.max,
        })
    };
    let n = |v: Option<u64>| v.map(|v| v as f64);
    match name {
        "p50" | "p90" | "p99" | "p999" | "max" => {
            pick(report.e2e_latency_ms.or(report.send_latency_ms), name)
        }
        _ if name.starts_with("send.") => pick(report.send_latency_ms, &name[5..]),
        _ if name.starts_with("e2e.") => pick(report.e2e_latency_ms, &name[4..]),
        _ if name.starts_with("server.") => pick(report.server_latency_ms, &name[7..]),
        _ if name.starts_with("status.") => Some(
            report
                .errors_by_status
                .get(&name[7..])
                .copied()
                .unwrap_or(0) as f64,
        ),
        "offered_rate" => report.offered_rate,
        "achieved_rate" => Some(report.achieved_rate),
        "acknowledged_rate" => report.acknowledged_rate,
        "points_acknowledged" => n(report.points_acknowledged),
        "points_sent" => Some(report.points_sent as f64),
        "points_verified" => n(report.points_verified),
        "lost" => n(report.lost),
        "duplicated" => n(report.duplicated),
        "out_of_order" => n(report.out_of_order),
        "corrupted" => n(report.corrupted),
        "seq_gaps" => n(report.seq_gaps),
        "digest_mismatches" => n(report.digest_mismatches),
        "count_mismatches" => n(report.count_mismatches),
        "reconnects" => Some(report.reconnects as f64),
        "errors" => Some(report.errors_by_status.values().sum::<u64>() as f64),
        "bytes_per_s" => Some(report.bytes_per_s),
        _ => None,
    }
}

fn is_metric(name: &str) -> bool {
    const QUANTILES: [&str; 5] = ["p50", "p90", "p99", "p999", "max"];
    const PLAIN: [&str; 16] = [
        "offered_rate",
        "achieved_rate",
        "acknowledged_rate",
        "points_acknowledged",
        "points_sent",
        "points_verified",
        "lost",
        "duplicated",
        "out_of_order",
        "corrupted",
        "seq_gaps",
        "digest_mismatches",
        "count_mismatches",
        "reconnects",
        "errors",
        "bytes_per_s",
    ];
    let quantile = |q: &str| QUANTILES.contains(&q);
    quantile(name)
        || PLAIN.contains(&name)
        || name.strip_prefix("send.").is_some_and(quantile)
        || name.strip_prefix("e2e.").is_some_and(quantile)
        || name.strip_prefix("server.").is_some_and(quantile)
        || name.strip_prefix("status.").is_some_and(|s| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

fn find_op(s: &str) -> Option<(usize, Op, usize)> {
    let at = s.find(['<', '>', '=', '!'])?;
    let rest = &s[at..];
    let two = |p: &str| rest.starts_with(p);
    Some(if two("<=") {
        (at, Op::Le, 2)
    } else if two(">=") {
        (at, Op::Ge, 2)
    } else if two("==") {
        (at, Op::Eq, 2)
    } else if two("!=") {
        (at, Op::Ne, 2)
    } else if two("<") {
        (at, Op::Lt, 1)
    } else if two(">") {
        (at, Op::Gt, 1)
    } else if two("=") {
        (at, Op::Eq, 1)
    } else {
        return None;
    })
}

fn parse_factor(f: &str) -> Option<Factor> {
    if is_metric(f) && !f.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(Factor::Metric(f.to_owned()));
    }
    let split = f
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(f.len());
    let (num, unit) = f.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "" | "ms" => 1.0,
        "us" | "µs" => 1e-3,
        "s" => 1e3,
        "%" => 1e-2,
        "k" => 1e3,
        "M" => 1e6,
        _ => return None,
    };
    Some(Factor::Number(n * scale))
}

fn unit(metric: &str) -> &'static str {
    let q = metric.rsplit('.').next().unwrap_or(metric);
    if ["p50", "p90", "p99", "p999", "max"].contains(&q) {
        " ms"
    } else {
        ""
    }
}

fn hint(metric: &str) -> &'static str {
    match metric {
        "points_verified" | "lost" | "duplicated" | "out_of_order" | "corrupted" | "seq_gaps"
        | "digest_mismatches" | "count_mismatches" => " (needs --verify)",
        m if m.starts_with("e2e.") => " (needs --verify and a finite --rate)",
        "offered_rate" => " (--rate max offers no rate)",
        _ => "",
    }
}

fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report::example()
    }

    #[track_caller]
    fn check(expr: &str, expected: Option<&str>) {
        let a = Assertion::parse(expr).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.check(&report()).as_deref(), expected, "{expr}");
    }

    #[test]
    fn assertions_hold_or_say_why() {
        check("p99<50ms", Some("p99<50ms: p99 is 60 ms (expected < 50)"));
        check("p99 < 0.1s", None);
        check("send.p99<1ms", None);
        check("e2e.max<=80", None);
        check("lost=0", Some("lost=0: lost is 5 (expected = 0)"));
        check("duplicated==0", None);
        check("achieved_rate>=0.99*offered_rate", None);
        check(
            "achieved_rate>=100%*offered_rate",
            Some("achieved_rate>=100%*offered_rate: achieved_rate is 995 (expected >= 1000)"),
        );
        check("status.503=2", None);
        check("status.408=0", None);
        check("errors!=0", None);
        check(
            "points_sent>1k",
            Some("points_sent>1k: points_sent is 995 (expected > 1000)"),
        );
    }

    #[test]
    fn unmeasured_metrics_fail_with_a_hint() {
        let mut r = report();
        r.lost = None;
        let a = Assertion::parse("lost=0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            a.check(&r).as_deref(),
            Some("lost=0: lost was not measured (needs --verify)")
        );
    }

    #[test]
    fn bad_expressions_are_rejected() {
        for bad in ["p99", "p98<1", "lost=", "lost=zero", "p99<5parsecs", "<3"] {
            assert!(Assertion::parse(bad).is_err(), "{bad}");
        }
    }
}
