//! What people read: the live progress line on stderr, and the text report on stdout.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::ctx::Ctx;
use super::report::{Counters, Percentiles, Report};
use super::targets::ViewersOn;

/// Prints progress until `done` flips: a line rewritten in place on a terminal, plain lines
/// every `every` otherwise.
pub(crate) async fn progress(ctx: Arc<Ctx>, every: Duration, mut done: watch::Receiver<bool>) {
    let tty = std::io::stderr().is_terminal();
    let period = if tty {
        Duration::from_millis(250)
    } else {
        every
    };
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = done.changed() => break,
        }
        let now = Instant::now();
        let sent = Counters::get(&ctx.counters.points_sent);
        let rate = (sent - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, sent);
        let line = status_line(&ctx, now, rate);
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if tty {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

fn status_line(ctx: &Ctx, now: Instant, rate: f64) -> String {
    let c = &ctx.counters;
    let n = ctx.schedule.n_streams;
    let mut line = match *ctx.start.borrow() {
        Some(start) => format!(
            "[{:>6.1}s/{:.0}s]",
            now.saturating_duration_since(start).as_secs_f64(),
            ctx.schedule.duration.as_secs_f64()
        ),
        None => "[connecting]".to_owned(),
    };
    let _ = write!(
        line,
        " streams {}/{n}  sent {} ({}/s)",
        Counters::get(&c.streams_connected),
        group(Counters::get(&c.points_sent)),
        group(rate as u64)
    );
    if ctx.verify {
        let _ = write!(
            line,
            "  viewers {}/{n}  verified {}",
            Counters::get(&c.viewers_subscribed),
            group(Counters::get(&c.points_verified))
        );
    }
    let _ = write!(line, "  errors {}", c.n_errors());
    if let Some(p) = c.send_latency.percentiles() {
        let _ = write!(line, "  send p99 {:.2}ms", p.p99);
    }
    if let Some(p) = c.e2e_latency.percentiles() {
        let _ = write!(line, "  e2e p99 {:.2}ms", p.p99);
    }
    line
}

/// The report as text (oha's shape: summary, verification, latency, errors).
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Summary:");
    if r.targets.len() > 1 {
        targets_block(&mut s, r);
    } else {
        let _ = writeln!(s, "  Target:          {}", r.target);
    }
    let _ = writeln!(
        s,
        "  Streams:         {} (client {}, {} point{}/chunk)",
        r.streams,
        r.client,
        r.points_per_chunk,
        if r.points_per_chunk == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "  Duration:        {:.2} s (connect {:.2} s){}",
        r.duration_s,
        r.connect_s,
        if r.interrupted { ", interrupted" } else { "" }
    );
    let offered = r.offered_rate.map_or_else(
        || "max".to_owned(),
        |o| format!("{} points/s", group(o as u64)),
    );
    let _ = writeln!(s, "  Offered rate:    {offered}");
    let pct = r
        .offered_rate
        .filter(|o| *o > 0.0)
        .map_or_else(String::new, |o| {
            format!(" ({:.2} %)", 100.0 * r.achieved_rate / o)
        });
    let _ = writeln!(
        s,
        "  Achieved rate:   {} points/s{pct}",
        group(r.achieved_rate as u64)
    );
    if let (Some(n), Some(rate)) = (r.points_acknowledged, r.acknowledged_rate) {
        let _ = writeln!(
            s,
            "  Acknowledged:    {} points, {} points/s (by the final 200s)",
            group(n),
            group(rate as u64)
        );
    }
    let _ = writeln!(
        s,
        "  Points sent:     {}{}",
        group(r.points_sent),
        r.points_scheduled
            .map_or_else(String::new, |n| format!(" of {} scheduled", group(n)))
    );
    let _ = writeln!(
        s,
        "  Bytes sent:      {} ({:.2} MB/s)",
        group(r.bytes_sent),
        r.bytes_per_s / 1e6
    );
    let _ = writeln!(s, "  Reconnects:      {}", r.reconnects);
    if let Some(verified) = r.points_verified {
        let n = |v: Option<u64>| v.unwrap_or(0);
        let _ = writeln!(s, "\nVerification (SSE interval=0 + inspection):");
        let _ = writeln!(s, "  Verified:        {}", group(verified));
        let _ = writeln!(
            s,
            "  Lost:            {}   Duplicated: {}   Out of order: {}   Corrupted: {}",
            n(r.lost),
            n(r.duplicated),
            n(r.out_of_order),
            n(r.corrupted)
        );
        let _ = writeln!(
            s,
            "  Seq gaps:        {}   Viewer resets: {}   Unobserved: {}",
            n(r.seq_gaps),
            n(r.viewer_resets),
            n(r.unobserved)
        );
        let _ = writeln!(
            s,
            "  Inspection:      {} digest mismatches, {} last_seq mismatches",
            n(r.digest_mismatches),
            n(r.count_mismatches)
        );
    }
    latency_block(
        &mut s,
        "Send latency (intended time -> written)",
        r.send_latency_ms,
    );
    latency_block(
        &mut s,
        "Write -> viewer latency (intended time -> SSE)",
        r.e2e_latency_ms,
    );
    latency_block(
        &mut s,
        "Server share (write issued -> SSE)",
        r.server_latency_ms,
    );
    let _ = writeln!(s, "\nErrors:");
    if r.errors_by_status.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for (kind, n) in &r.errors_by_status {
        let _ = writeln!(s, "  {kind:<16} {n}");
    }
    s
}

/// Several targets: the placement, then one line per target.
fn targets_block(s: &mut String, r: &Report) {
    let placement = match r.viewers_on {
        _ if r.points_verified.is_none() => "no viewers",
        Some(ViewersOn::Other) => "viewers on the next target",
        Some(ViewersOn::Same) | None => "viewers on the writer's target",
    };
    let _ = writeln!(
        s,
        "  Targets:         {} (writers round-robin, {placement})",
        r.targets.len()
    );
    for t in &r.targets {
        let _ = writeln!(
            s,
            "    {}   writers {}   viewers {}",
            t.url, t.writers, t.viewers
        );
    }
}

fn latency_block(s: &mut String, title: &str, p: Option<Percentiles>) {
    let Some(p) = p else { return };
    let _ = writeln!(s, "\n{title}, ms ({} samples):", group(p.count));
    let _ = writeln!(
        s,
        "  p50 {:.3}   p90 {:.3}   p99 {:.3}   p99.9 {:.3}   max {:.3}",
        p.p50, p.p90, p.p99, p.p999, p.max
    );
}

/// `1234567` → `1 234 567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::targets::TargetLoad;
    use super::*;

    #[test]
    fn groups_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1 000");
        assert_eq!(group(1234567), "1 234 567");
    }

    #[test]
    fn one_target_is_one_line_several_name_each_and_the_placement() {
        let mut r = Report::example();
        let one = text(&r);
        assert!(one.contains("\n  Target:          http://h\n"), "{one}");
        assert!(!one.contains("Targets:"), "{one}");
        r.target = "http://a:1,http://b:2".to_owned();
        r.viewers_on = Some(ViewersOn::Other);
        r.targets = vec![
            TargetLoad {
                url: "http://a:1".to_owned(),
                writers: 2,
                viewers: 1,
            },
            TargetLoad {
                url: "http://b:2".to_owned(),
                writers: 1,
                viewers: 2,
            },
        ];
        let two = text(&r);
        assert!(
            two.contains(
                "  Targets:         2 (writers round-robin, viewers on the next target)\n    \
                 http://a:1   writers 2   viewers 1\n    http://b:2   writers 1   viewers 2\n"
            ),
            "{two}"
        );
        assert!(!two.contains("  Target: "), "{two}");
    }
}
