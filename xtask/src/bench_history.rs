//! `cargo xtask bench history`: issue #14's reads of a stream's history (docs/history.md)
//! against `plotstream serve --data-dir` (release), each beside the same read without tiers.
//!
//! Two streams are written over plain TCP, as a Plotly client writes them (`POST /`, chunked,
//! 64 KiB chunks of NDJSON lines): a day at 1 Hz (86 400 points) and a week at 10 Hz
//! (6 048 000 points), x counting from 0, y a smooth wave with a few one-sample spikes and dips.
//! Then, each request timed from connect to the body's last byte (the server closes):
//!
//! | name | read |
//! |---|---|
//! | `history/day_2000`, `history/week_2000` | the whole stream, `by=x&max_points=2000` |
//! | `…_no_tiers` | the same with `&tiers=off` (M4 from every point: the baseline) |
//! | `history/week_zoom_2000` (and `…_no_tiers`) | `from=3000000&to=3600000` of the week, the same way |
//! | `history/export_csv_day`, `history/export_csv_week` | every point as CSV: MB/s, and the server's VmRSS peak over the RSS just before |
//! | `history/export_csv_day_cold`, `…_week_cold` | the same exports from a server started afresh on the same data (nothing read yet: the store's cache fills) |
//! | `history/ingest_week` | the week's write (informative), and the history bytes it stored |
//!
//! Each downsampled read runs 20 times after 2 warm-ups, and every answer is checked: `200`,
//! at most 2 000 points, each a real one, the range's first and last, and every spike and dip
//! in range, so a fast wrong answer fails the bench. Results are merged into
//! `<target>/bench-summary.json` by name and printed. Takes about two minutes.

use std::f64::consts::TAU;
use std::io::{BufRead as _, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::bench_ingest::{serve_with, vm_rss_kib};
use crate::{http, process, util};

pub(crate) fn run() -> Result<ExitCode> {
    let started = Instant::now();
    let bin = process::build_plotstream(true)?;
    let target_dir = util::target_dir();
    let data = target_dir.join("bench-history");
    let _ = std::fs::remove_dir_all(&data);
    println!("\n== plotstream serve --data-dir {}", data.display());
    // Dropped on every path out of this function, which stops it.
    let server = serve_with(&bin, &["--data-dir", &data.display().to_string()])?;
    let (addr, pid) = (server.addr(), server.pid());

    println!("\n== writing the streams");
    ingest(addr, &DAY)?;
    let week = ingest(addr, &WEEK)?;
    let stored = history_bytes(addr)?;
    #[allow(clippy::cast_precision_loss)] // KiB below 2^52
    let rss_after_ingest = vm_rss_kib(pid)? as f64 / 1024.0;
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let per_point = stored / (DAY.n_points + WEEK.n_points) as f64;
    println!(
        "  history holds {:.1} MiB ({per_point:.1} B per point)",
        stored / MIB
    );
    let ingest_row = json!({
        "name": "history/ingest_week",
        "points": WEEK.n_points,
        "seconds": week.seconds,
        "points_per_s": week.points_per_s(),
        "mb_per_s": week.body_bytes / week.seconds / 1e6,
        "history_mib_both_streams": stored / MIB,
        "history_bytes_per_point": per_point,
        "rss_after_ingest_mib": rss_after_ingest,
    });

    // The exports first, before the reads without tiers have read every point once.
    println!("\n== exports (format=csv, every point; the server's VmRSS every 5 ms)");
    let mut exports = vec![
        export(addr, pid, &DAY, "history/export_csv_day")?,
        export(addr, pid, &WEEK, "history/export_csv_week")?,
    ];

    println!("\n== downsampled reads ({RUNS} runs after {WARMUPS} warm-ups each)");
    let mut results = Vec::new();
    for query in &QUERIES {
        results.push(time_query(addr, query)?);
    }
    compare_with_baselines(&mut results);
    drop(server);

    // The same exports from a server that has read nothing yet: what the store's cache adds.
    println!("\n== the exports again from a freshly started server");
    let server = serve_with(&bin, &["--data-dir", &data.display().to_string()])?;
    let (addr, pid) = (server.addr(), server.pid());
    exports.push(export(addr, pid, &DAY, "history/export_csv_day_cold")?);
    exports.push(export(addr, pid, &WEEK, "history/export_csv_week_cold")?);
    drop(server);
    results.extend(exports);
    results.push(ingest_row);

    let (summary_path, _) = crate::bench_summary::merge_into_file(&target_dir, results.clone())?;
    println!();
    print!("{}", table(&results));
    println!(
        "wrote {} ({:.0} s)",
        summary_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A stream the bench writes: x is `0..n_points`, y [`Series::y`].
struct Series {
    token: &'static str,
    n_points: u64,
    /// `(x, y)` of the one-sample spikes (far above the wave) and dips (far below).
    spikes: &'static [(u64, f64)],
}

impl Series {
    /// y at `x`: a spike, or two sines (one period per third of the stream, and 200 per stream)
    /// rounded to 3 decimals, so the NDJSON stays short and the value read back is the same f64.
    fn y(&self, x: u64) -> f64 {
        if let Some(&(_, y)) = self.spikes.iter().find(|(at, _)| *at == x) {
            return y;
        }
        #[allow(clippy::cast_precision_loss)] // x < 2^23
        let phase = x as f64 / self.n_points as f64 * TAU;
        let wave = 10.0 * (3.0 * phase).sin() + 2.0 * (200.0 * phase).sin();
        (wave * 1e3).round() / 1e3
    }
}

/// What one write took.
struct Ingested {
    points: u64,
    body_bytes: f64,
    seconds: f64,
}

impl Ingested {
    fn points_per_s(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // a count below 2^52
        let points = self.points as f64;
        points / self.seconds
    }
}

/// Writes `series` as one chunked `POST /` and checks that its final `200` counts every point.
/// The body is made before the clock starts, so the time is the server's (and the socket's).
fn ingest(addr: SocketAddr, series: &Series) -> Result<Ingested> {
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nplotly-streamtoken: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        series.token
    )
    .into_bytes();
    let mut lines = Vec::with_capacity(CHUNK_BYTES + 64);
    let mut body_bytes = 0usize;
    for x in 0..series.n_points {
        writeln!(lines, "{{\"x\":{x},\"y\":{}}}", series.y(x))?;
        if lines.len() >= CHUNK_BYTES || x + 1 == series.n_points {
            write!(request, "{:x}\r\n", lines.len())?;
            request.extend_from_slice(&lines);
            request.extend_from_slice(b"\r\n");
            body_bytes += lines.len();
            lines.clear();
        }
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let t0 = Instant::now();
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let written = stream.write_all(&request);
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let seconds = t0.elapsed().as_secs_f64();
    if let Err(err) = written {
        // The server answered early: say what it answered.
        bail!(
            "writing {} failed: {err}; the server said {:?}",
            series.token,
            String::from_utf8_lossy(&answer)
        );
    }
    read.with_context(|| format!("reading the answer to {}'s write", series.token))?;
    let answer = http::parse(&answer)?;
    ensure!(
        answer.status == 200,
        "writing {} answered {}: {}",
        series.token,
        answer.status,
        answer.body
    );
    let body: Value = serde_json::from_str(&answer.body)
        .with_context(|| format!("the final response is not JSON: {}", answer.body))?;
    let points = body["points"].as_u64().unwrap_or(0);
    ensure!(
        points == series.n_points,
        "{} acknowledged {points} of {} points",
        series.token,
        series.n_points
    );
    #[allow(clippy::cast_precision_loss)] // bytes below 2^52
    let ingested = Ingested {
        points,
        body_bytes: body_bytes as f64,
        seconds,
    };
    println!(
        "  {}: {points} points ({:.1} MB of NDJSON) acknowledged in {seconds:.2} s: {:.0} points/s",
        series.token,
        ingested.body_bytes / 1e6,
        ingested.points_per_s()
    );
    Ok(ingested)
}

/// `plotstream_history_bytes` once it has settled (the gauge is updated every second).
fn history_bytes(addr: SocketAddr) -> Result<f64> {
    let read = || -> Result<f64> {
        let metrics = http::get(addr, "/metrics")?;
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix("plotstream_history_bytes "))
            .and_then(|value| value.trim().parse().ok())
            .context("no plotstream_history_bytes in /metrics")
    };
    let mut last = read()?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = read()?;
        if now > 0.0 && now == last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// One downsampled read, timed.
struct Query {
    row: &'static str,
    series: &'static Series,
    /// `from` and `to` (x, inclusive), or the whole stream.
    zoom: Option<(u64, u64)>,
    tiers: bool,
    target_ms: Option<f64>,
}

impl Query {
    fn path(&self) -> String {
        let mut path = format!(
            "/api/streams/{}/history?by=x&max_points={MAX_POINTS}",
            self.series.token
        );
        if let Some((from, to)) = self.zoom {
            path.push_str(&format!("&from={from}&to={to}"));
        }
        if !self.tiers {
            path.push_str("&tiers=off");
        }
        path
    }

    /// The first and last x the answer must hold.
    fn range(&self) -> (u64, u64) {
        self.zoom.unwrap_or((0, self.series.n_points - 1))
    }
}

/// Runs `query` [`WARMUPS`] + [`RUNS`] times, checks every answer, and times the last [`RUNS`].
fn time_query(addr: SocketAddr, query: &Query) -> Result<Value> {
    let path = query.path();
    let mut ms = Vec::with_capacity(RUNS);
    let mut n_points = 0;
    let mut body = Vec::new();
    for run_idx in 0..WARMUPS + RUNS {
        body.clear();
        let got = fetch(addr, &path, |bytes| body.extend_from_slice(bytes))?;
        ensure!(
            got.status == 200,
            "GET {path} answered {}: {}",
            got.status,
            String::from_utf8_lossy(&body)
        );
        n_points = check_downsampled(&body, query).with_context(|| format!("GET {path}"))?;
        if run_idx >= WARMUPS {
            ms.push(got.elapsed.as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    let (median, p95) = (percentile(&ms, 0.5), percentile(&ms, 0.95));
    println!(
        "  {:<28} median {median:>8.2} ms  p95 {p95:>8.2} ms  {n_points} points  GET {path}",
        query.row
    );
    let mut row = json!({
        "name": query.row,
        "ms_median": median,
        "ms_p95": p95,
        "ms_min": ms.first().copied().unwrap_or(0.0),
        "points_in_range": query.range().1 - query.range().0 + 1,
        "points_returned": n_points,
        "runs": RUNS,
    });
    if let Some(target) = query.target_ms {
        row["target_ms"] = json!(target);
    }
    Ok(row)
}

/// Checks a downsampled JSON answer to `query` (docs/history.md "Reading"): the whole stream is
/// there, at most [`MAX_POINTS`] points in order, each a real point of the series, the range's
/// first and last, and every spike and dip in range. Returns how many points it holds.
fn check_downsampled(body: &[u8], query: &Query) -> Result<usize> {
    let series = query.series;
    let answer: Value = serde_json::from_slice(body).context("the answer is not JSON")?;
    ensure!(
        answer["first_n"] == json!(0) && answer["end_n"] == json!(series.n_points),
        "the stream holds points {} to {}, not 0 to {}",
        answer["first_n"],
        answer["end_n"],
        series.n_points
    );
    ensure!(answer["downsampled"] == json!(true), "not downsampled");
    let points = answer["points"].as_array().context("no points")?;
    ensure!(
        !points.is_empty() && points.len() <= MAX_POINTS,
        "{} points for max_points={MAX_POINTS}",
        points.len()
    );
    let (lo, hi) = query.range();
    let mut kept = Vec::with_capacity(points.len());
    for point in points {
        // [n, seq, t, x, y]; x counts from 0 as n does.
        let (n, x, y) = (point[0].as_u64(), point[3].as_u64(), point[4].as_f64());
        let (Some(n), Some(x), Some(y)) = (n, x, y) else {
            bail!("not an [n, seq, t, x, y] point with an integer x: {point}");
        };
        ensure!(
            n == x && (lo..=hi).contains(&x) && y == series.y(x),
            "not a point of the series in {lo}..={hi}: {point}"
        );
        ensure!(
            kept.last().is_none_or(|&(before, _)| before < x),
            "points out of order at {point}"
        );
        kept.push((x, y));
    }
    ensure!(
        kept.first().map(|p| p.0) == Some(lo) && kept.last().map(|p| p.0) == Some(hi),
        "the range's ends {lo} and {hi} are not kept: {:?} .. {:?}",
        kept.first(),
        kept.last()
    );
    for spike in series.spikes.iter().filter(|s| (lo..=hi).contains(&s.0)) {
        ensure!(kept.contains(spike), "the spike {spike:?} is missing");
    }
    Ok(points.len())
}

/// Fills in each tiered row the median of its `…_no_tiers` row and their ratio.
fn compare_with_baselines(rows: &mut [Value]) {
    let baselines: Vec<(String, f64)> = rows
        .iter()
        .filter_map(|row| {
            let name = row["name"].as_str()?.strip_suffix("_no_tiers")?;
            Some((name.to_owned(), row["ms_median"].as_f64()?))
        })
        .collect();
    for row in rows.iter_mut() {
        let Some((_, baseline)) = baselines.iter().find(|(name, _)| row["name"] == **name) else {
            continue;
        };
        let ours = row["ms_median"].as_f64().unwrap_or(0.0);
        row["no_tiers_ms_median"] = json!(baseline);
        row["speedup_over_no_tiers"] = json!(if ours > 0.0 { baseline / ours } else { 0.0 });
    }
}

/// Exports every point of `series` as CSV, counting its rows, while a thread samples the
/// server's VmRSS: the summary row `row`.
fn export(addr: SocketAddr, pid: u32, series: &Series, row: &str) -> Result<Value> {
    let path = format!("/api/streams/{}/history?by=x&format=csv", series.token);
    let before = vm_rss_kib(pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<u64> {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss_kib(pid)?);
                std::thread::sleep(RSS_EVERY);
            }
            Ok(peak.max(vm_rss_kib(pid)?))
        })
    };
    let mut csv = Csv::default();
    let got = fetch(addr, &path, |bytes| csv.feed(bytes));
    stop.store(true, Ordering::Relaxed);
    let peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))??;
    let got = got?;
    ensure!(got.status == 200, "GET {path} answered {}", got.status);
    csv.check(series).with_context(|| format!("GET {path}"))?;
    let seconds = got.elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // bytes and KiB below 2^52
    let (mb_per_s, before_mib, peak_mib) = (
        got.body_bytes as f64 / seconds / 1e6,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    println!(
        "  {}: {} rows, {:.1} MB in {seconds:.2} s: {mb_per_s:.1} MB/s; VmRSS {before_mib:.1} MiB before, peak {peak_mib:.1} MiB (+{:.1})",
        series.token,
        csv.lines,
        got.body_bytes as f64 / 1e6,
        peak_mib - before_mib
    );
    Ok(json!({
        "name": row,
        "bytes": got.body_bytes,
        "rows": csv.lines - 1,
        "seconds": seconds,
        "mb_per_s": mb_per_s,
        "target_mb_per_s": 50.0,
        "rss_before_mib": before_mib,
        "peak_rss_mib": peak_mib,
        "peak_rss_delta_mib": peak_mib - before_mib,
    }))
}

/// A CSV body seen a read at a time: its lines counted, its first two and last kept.
#[derive(Default)]
struct Csv {
    lines: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Csv {
    fn feed(&mut self, bytes: &[u8]) {
        if self.head.len() < CSV_KEEP {
            let take = bytes.len().min(CSV_KEEP - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.tail
            .extend_from_slice(&bytes[bytes.len().saturating_sub(CSV_KEEP)..]);
        if self.tail.len() > 2 * CSV_KEEP {
            self.tail.drain(..self.tail.len() - CSV_KEEP);
        }
        // `skip_until` runs std's memchr, which stays fast in xtask's debug build.
        let mut rest = bytes;
        while !rest.is_empty() {
            let before = rest;
            match rest.skip_until(b'\n') {
                Ok(k) if k > 0 && before[k - 1] == b'\n' => self.lines += 1,
                _ => {}
            }
        }
    }

    /// The header, one row per point, and the first and last rows those of x = 0 and the last x.
    fn check(&self, series: &Series) -> Result<()> {
        ensure!(
            self.lines == series.n_points + 1,
            "{} lines for {} points and a header",
            self.lines,
            series.n_points
        );
        let head = String::from_utf8_lossy(&self.head);
        let mut head_lines = head.lines();
        ensure!(
            head_lines.next() == Some("n,seq,time,x,y"),
            "no CSV header: {head:?}"
        );
        let tail = String::from_utf8_lossy(&self.tail);
        let first = head_lines.next().unwrap_or("");
        let last = tail.trim_end().lines().last().unwrap_or("");
        for (row, x) in [(first, 0), (last, series.n_points - 1)] {
            let fields: Vec<&str> = row.split(',').collect();
            ensure!(
                fields.len() == 5
                    && fields[0] == x.to_string()
                    && fields[3] == x.to_string()
                    && fields[4].parse::<f64>().ok() == Some(series.y(x)),
                "the row of x={x} is {row:?}"
            );
        }
        Ok(())
    }
}

/// A timed `GET`: connect to the body's last byte.
struct Fetched {
    status: u16,
    body_bytes: u64,
    elapsed: Duration,
}

/// `GET path` with `Connection: close`; the body goes to `body` a read at a time.
fn fetch(addr: SocketAddr, path: &str, mut body: impl FnMut(&[u8])) -> Result<Fetched> {
    let t0 = Instant::now();
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut status = None;
    let mut body_bytes = 0;
    loop {
        let k = stream
            .read(&mut buf)
            .with_context(|| format!("reading GET {path}"))?;
        if k == 0 {
            break;
        }
        if status.is_some() {
            body_bytes += k as u64;
            body(&buf[..k]);
            continue;
        }
        head.extend_from_slice(&buf[..k]);
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            ensure!(head.len() < 64 * 1024, "no end of head in 64 KiB");
            continue;
        };
        let rest = head.split_off(end + 4);
        status = Some(http::parse(&head)?.status);
        body_bytes += rest.len() as u64;
        body(&rest);
    }
    Ok(Fetched {
        status: status.with_context(|| format!("GET {path}: no response head"))?,
        body_bytes,
        elapsed: t0.elapsed(),
    })
}

/// The nearest-rank percentile `p` of `sorted`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )] // a few dozen samples
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

fn table(results: &[Value]) -> String {
    let mut out = String::from(
        "history benchmark (release server on loopback, the client on the same 2 cores)\n",
    );
    for r in results {
        let name = r["name"].as_str().unwrap_or("?");
        let num = |key: &str| r[key].as_f64().unwrap_or(0.0);
        let mut line = format!("{name:<32}");
        if let Some(median) = r["ms_median"].as_f64() {
            line.push_str(&format!(
                " median {median:>8.2} ms  p95 {:>8.2} ms  {:>5} of {:>9} points",
                num("ms_p95"),
                r["points_returned"],
                r["points_in_range"]
            ));
            if let Some(target) = r["target_ms"].as_f64() {
                let verdict = if median <= target { "met" } else { "MISSED" };
                line.push_str(&format!("  target <= {target:.0} ms {verdict}"));
            }
            if let Some(speedup) = r["speedup_over_no_tiers"].as_f64() {
                line.push_str(&format!(
                    "  no tiers {:.2} ms ({speedup:.1}x)",
                    num("no_tiers_ms_median")
                ));
            }
        } else if let Some(rate) = r["target_mb_per_s"].as_f64() {
            let mb_per_s = num("mb_per_s");
            line.push_str(&format!(
                " {:>7.1} MB in {:>5.2} s = {mb_per_s:>6.1} MB/s (target >= {rate:.0} {})  {} rows  peak VmRSS +{:.1} MiB over {:.1}",
                num("bytes") / 1e6,
                num("seconds"),
                if mb_per_s >= rate { "met" } else { "MISSED" },
                r["rows"],
                num("peak_rss_delta_mib"),
                num("rss_before_mib")
            ));
        } else {
            line.push_str(&format!(
                " {:>7} points in {:.2} s = {:.0} points/s ({:.1} MB/s); history {:.1} B/point",
                r["points"],
                num("seconds"),
                num("points_per_s"),
                num("mb_per_s"),
                num("history_bytes_per_point")
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A day at 1 Hz.
static DAY: Series = Series {
    token: "benchday000001",
    n_points: 86_400,
    spikes: &[
        (12_345, 1000.0),
        (43_210, 1001.0),
        (60_000, -1000.0),
        (77_777, 1002.0),
    ],
};

/// A week at 10 Hz; three of its spikes and dips are in the zoomed range.
static WEEK: Series = Series {
    token: "benchweek00001",
    n_points: 6_048_000,
    spikes: &[
        (1_000_003, 1000.0),
        (3_141_592, 1001.0),
        (3_333_333, -1001.0),
        (3_500_001, 1002.0),
        (4_200_000, -1000.0),
        (5_999_999, 1003.0),
    ],
};

static QUERIES: [Query; 6] = [
    Query {
        row: "history/day_2000",
        series: &DAY,
        zoom: None,
        tiers: true,
        target_ms: Some(20.0),
    },
    Query {
        row: "history/day_2000_no_tiers",
        series: &DAY,
        zoom: None,
        tiers: false,
        target_ms: None,
    },
    Query {
        row: "history/week_2000",
        series: &WEEK,
        zoom: None,
        tiers: true,
        target_ms: Some(100.0),
    },
    Query {
        row: "history/week_2000_no_tiers",
        series: &WEEK,
        zoom: None,
        tiers: false,
        target_ms: None,
    },
    Query {
        row: "history/week_zoom_2000",
        series: &WEEK,
        zoom: Some((3_000_000, 3_600_000)),
        tiers: true,
        target_ms: Some(100.0),
    },
    Query {
        row: "history/week_zoom_2000_no_tiers",
        series: &WEEK,
        zoom: Some((3_000_000, 3_600_000)),
        tiers: false,
        target_ms: None,
    },
];

/// `max_points` of every downsampled read.
const MAX_POINTS: usize = 2000;
const WARMUPS: usize = 2;
const RUNS: usize = 20;
/// NDJSON bytes per chunk of a write (a chunk ends at the first line past it).
const CHUNK_BYTES: usize = 64 * 1024;
/// How often the server's VmRSS is read during an export.
const RSS_EVERY: Duration = Duration::from_millis(5);
/// Bytes kept of a CSV export's start and end, to check its first and last rows.
const CSV_KEEP: usize = 256;
/// Generous: a write of the week, or a read without tiers on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(120);
const MIB: f64 = 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    /// A small series: a day's shape in 100 points.
    static SMALL: Series = Series {
        token: "benchsmall0001",
        n_points: 100,
        spikes: &[(10, 1000.0), (50, -1000.0)],
    };

    fn csv_of(series: &Series) -> Vec<u8> {
        let mut csv = b"n,seq,time,x,y\n".to_vec();
        for x in 0..series.n_points {
            writeln!(csv, "{x},1,2026-12-06T00:00:00.000Z,{x},{}", series.y(x))
                .expect("writes to a Vec do not fail");
        }
        csv
    }

    #[test]
    fn a_csv_body_is_counted_and_checked_however_it_is_split() {
        let body = csv_of(&SMALL);
        for split in 0..=body.len() {
            let mut csv = Csv::default();
            csv.feed(&body[..split]);
            csv.feed(&body[split..]);
            assert_eq!(csv.lines, SMALL.n_points + 1, "split at {split}");
            assert!(csv.check(&SMALL).is_ok(), "split at {split}");
        }
        let mut one_by_one = Csv::default();
        for byte in &body {
            one_by_one.feed(std::slice::from_ref(byte));
        }
        assert!(one_by_one.check(&SMALL).is_ok());
        let mut short = Csv::default();
        short.feed(&body[..body.len() - 20]);
        assert!(short.check(&SMALL).is_err());
    }

    fn answer(xs: &[u64]) -> Vec<u8> {
        let points: Vec<Value> = xs
            .iter()
            .map(|&x| json!([x, 1, 0, x, SMALL.y(x)]))
            .collect();
        serde_json::to_vec(&json!({
            "first_n": 0, "end_n": 100, "downsampled": true, "points": points
        }))
        .expect("a Value serializes")
    }

    #[track_caller]
    fn check(xs: &[u64], zoom: Option<(u64, u64)>, ok: bool) {
        let query = Query {
            row: "small",
            series: &SMALL,
            zoom,
            tiers: true,
            target_ms: None,
        };
        let got = check_downsampled(&answer(xs), &query);
        assert_eq!(got.is_ok(), ok, "{xs:?} in {zoom:?}: {got:?}");
    }

    #[test]
    fn a_downsampled_answer_holds_the_ends_and_every_spike_in_range() {
        check(&[0, 10, 50, 99], None, true);
        check(&[0, 10, 99], None, false); // the dip is missing
        check(&[0, 50, 99], None, false); // the spike is missing
        check(&[1, 10, 50, 99], None, false); // the first point is missing
        check(&[0, 10, 50, 98], None, false);
        check(&[0, 50, 10, 99], None, false); // out of order
        check(&[40, 50, 60], Some((40, 60)), true);
        check(&[40, 41, 60], Some((40, 60)), false);
        check(&[39, 50, 60], Some((40, 60)), false); // outside the range
    }

    #[test]
    fn percentiles_are_nearest_rank_and_baselines_pair_by_name() {
        let ms: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&ms, 0.5), 10.0);
        assert_eq!(percentile(&ms, 0.95), 19.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let mut rows = vec![
            json!({"name": "history/a", "ms_median": 2.0}),
            json!({"name": "history/a_no_tiers", "ms_median": 10.0}),
            json!({"name": "history/b", "ms_median": 1.0}),
        ];
        compare_with_baselines(&mut rows);
        assert_eq!(rows[0]["speedup_over_no_tiers"], json!(5.0));
        assert_eq!(rows[1].get("speedup_over_no_tiers"), None);
        assert_eq!(rows[2].get("no_tiers_ms_median"), None);
    }
}
