//! The drivers of the cases that bytes cannot say (a case's `driver`): D11 fills the per-peer
//! connection limit (L11), D2 exhausts the target's file descriptors (L39), Q11 asks for
//! thousands of tokens. Each returns its variant's outcome directly.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use plotstream_cases::{Case, End};

use super::plan::Runner;
use super::target::Target;
use super::verdict::{VariantOutcome, RERUN_MARK};
use super::wire::{Conn, ConnOpts};
use crate::probe::{http, inspect};

/// Runs the driver `name` of `case`.
pub async fn drive(
    runner: &Runner,
    case: &Case,
    name: &str,
    notes: &mut Vec<String>,
) -> VariantOutcome {
    match name {
        "peer_limit" => peer_limit(runner, case).await,
        "issue_tokens" => issue_tokens(runner, case).await,
        "emfile" => emfile(runner, notes).await,
        other => VariantOutcome::Skip(format!("unknown driver {other}")),
    }
}

/// D11: with L11 on, the (limit + 1)th connection from one address gets 503.
async fn peer_limit(runner: &Runner, case: &Case) -> VariantOutcome {
    let Some(limit) = runner.opts.peer_limit.filter(|&l| l > 0) else {
        return VariantOutcome::Skip(
            "needs --peer-limit N: the main target's L11 (max connections per peer)".to_owned(),
        );
    };
    let target = runner.main.clone();
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
async fn emfile(runner: &Runner, notes: &mut Vec<String>) -> VariantOutcome {
    let Some(target) = runner.fd_limited.clone() else {
        return VariantOutcome::Skip(
            "needs --target-fd-limited URL: an endpoint started under RLIMIT_NOFILE (ulimit -n 256), as in the S12 scenario"
                .to_owned(),
        );
    };
    match emfile_round(runner, &target, notes).await {
        Err(EmfileMiss::Late(first)) => {
            // Every permit: nothing else of the suite runs beside the rerun.
            let _all = runner.jobs.acquire_many(runner.jobs_total).await;
            match emfile_round(runner, &target, notes).await {
                Ok(()) => {
                    notes.push(format!(
                        "{} (the first round was late: {first})",
                        RERUN_MARK
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
    runner: &Runner,
    target: &Target,
    notes: &mut Vec<String>,
) -> Result<(), EmfileMiss> {
    use tokio::io::AsyncWriteExt;
    let addr = target.addr;
    let errors = || async {
        http::metrics(&target.endpoint)
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
    let writer_token = runner.tokens.random(10);
    let mut writer = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| broken(format!("the writer could not connect: {e}")))?;
    writer
        .write_all(format!("{}{}", head(&writer_token), line(1)).as_bytes())
        .await
        .map_err(|e| broken(format!("the writer's first write failed: {e}")))?;
    if target.inspection {
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(inspect::read(&target.endpoint, &writer_token, inspect::Detail::Window).await, Ok(Some(i)) if i.last_seq >= 1)
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
    let n = runner.opts.fd_limit.max(16) * 25 / 16;
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
    if held.len() < runner.opts.fd_limit {
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
    let token = runner.tokens.random(10);
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
                runner.opts.fd_limit
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
async fn issue_tokens(runner: &Runner, case: &Case) -> VariantOutcome {
    let target = runner.main.clone();
    if !target.tokens_api {
        return VariantOutcome::Skip("needs POST /api/tokens on the target".to_owned());
    }
    let n = usize::try_from(case.count.unwrap_or(10_000)).unwrap_or(10_000);
    let _permit = runner.jobs.acquire().await;
    let tokens = match http::issue_tokens(&target.endpoint, n).await {
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
        return VariantOutcome::Fail(format!("{} duplicate tokens among {n}", n - unique.len()));
    }
    VariantOutcome::Pass
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
        let open = http::metrics(&target.endpoint)
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
