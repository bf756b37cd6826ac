//! `cargo xtask bench ingest`: `plotstream serve` (release) under `plotstream load` on
//! loopback, beside two references measured in the same run, and the RSS of idle streams.
//!
//! Scenarios (each run is short; the whole bench takes about two minutes):
//!
//! | name | load |
//! |---|---|
//! | `ingest/tcp_ceiling` | one loopback TCP connection, 64 KiB and 4 KiB writes, no HTTP |
//! | `ingest/1_stream_bulk` | 1 stream, `--rate max`, 1000 points per chunk |
//! | `ingest/100_streams_bulk` | 100 streams, `--rate max`, 1000 points per chunk; also against the hyper sink |
//! | `ingest/100_streams_per_point` | 100 streams, `--rate max`, 1 point per chunk (the Plotly clients' shape); also against the hyper sink |
//! | `ingest/10000_streams` | 10 000 streams × 10 points/s, `--ramp 1s` |
//! | `ingest/latency_100x100` | 100 streams × 100 points/s with `--verify`: write → viewer percentiles |
//! | `ingest/idle_rss_10000` | the server's VmRSS with 10 000 idle streams connected |
//! | `ingest/store/…`, `ingest/store_window_only/…` | bulk, per-point and latency runs on `--data-dir`, with history (the default) and without (`--retention 0`); bulk and per-point in three alternating pairs, the median pair's rates and ratio reported |
//!
//! The hyper sink (`crates/plotstream-load/examples/hyper_sink.rs`) reads bodies and counts
//! bytes, nothing else. Results are merged into `<target>/bench-summary.json` by name and
//! printed. The load generator runs on the same two cores as the server, as docs/performance.md's
//! targets say.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

mod cpu;
mod paired;
use cpu::Cpu;
use paired::paired_store_rows;

use crate::{
    process::{Serve, Server, Supervised, Watch},
    redis::RedisServer,
    util,
};

/// 100 bulk writers, 1 000 points a chunk, as fast as they go, 5 s.
const BULK_100: &[&str] = &[
    "--streams",
    "100",
    "--rate",
    "max",
    "--points-per-chunk",
    "1000",
    "--duration",
    "5s",
];

/// 100 writers of one point a chunk (the Plotly clients' shape), as fast as they go, 5 s.
const PER_POINT_100: &[&str] = &[
    "--streams",
    "100",
    "--rate",
    "max",
    "--points-per-chunk",
    "1",
    "--duration",
    "5s",
];

/// 100 streams x 100 points/s with a verifying viewer each: write -> viewer latency, 5 s.
const LATENCY_100: &[&str] = &[
    "--streams",
    "100",
    "--rate",
    "10000",
    "--duration",
    "5s",
    "--verify",
];

pub(crate) fn run() -> Result<ExitCode> {
    let started = Instant::now();
    let mut build = util::cargo([
        "build",
        "--release",
        "-p",
        "plotstream",
        "-p",
        "plotstream-load",
        "--example",
        "hyper_sink",
        "--bin",
        "plotstream",
    ]);
    if !util::run_echoed(&mut build)? {
        bail!("cargo build --release failed");
    }
    let target_dir = util::target_dir();
    let bin = target_dir.join("release/plotstream");
    let sink_bin = target_dir.join("release/examples/hyper_sink");
    let mut results: Vec<Value> = Vec::new();

    println!("\n== loopback TCP ceiling (one connection, 2 s each)");
    let tcp_64k = tcp_ceiling(64 * 1024, Duration::from_secs(2))?;
    let tcp_4k = tcp_ceiling(4 * 1024, Duration::from_secs(2))?;
    println!("64 KiB writes: {tcp_64k:.2} GB/s; 4 KiB writes: {tcp_4k:.2} GB/s");
    results.push(json!({
        "name": "ingest/tcp_ceiling",
        "gb_per_s_64k_writes": tcp_64k,
        "gb_per_s_4k_writes": tcp_4k,
    }));

    println!("\n== hyper sink (reference)");
    let hyper_bulk;
    let hyper_per_point;
    {
        let mut cmd = Command::new(&sink_bin);
        cmd.arg("127.0.0.1:0");
        let mut sink = Supervised::spawn(&mut cmd, Watch::Stdout, usize::MAX, None)?;
        let addr = sink.wait_for("where it listens", |line| {
            line.trim().strip_prefix("listening on ").map(str::to_owned)
        })?;
        println!("started {} on {addr}", sink.describe());
        let url = format!("http://{addr}");
        hyper_bulk = load(&bin, &url, BULK_100)?;
        hyper_per_point = load(&bin, &url, PER_POINT_100)?;
    }

    println!("\n== plotstream serve");
    let server = serve(&bin)?;
    let url = format!("http://{}", server.addr());
    let one = load(
        &bin,
        &url,
        &[
            "--streams",
            "1",
            "--rate",
            "max",
            "--points-per-chunk",
            "1000",
            "--duration",
            "5s",
        ],
    )?;
    results.push(entry("ingest/1_stream_bulk", &one, None, Some(5e6)));
    let bulk = load(&bin, &url, BULK_100)?;
    results.push(entry(
        "ingest/100_streams_bulk",
        &bulk,
        Some(&hyper_bulk),
        Some(5e6),
    ));
    let per_point = load(&bin, &url, PER_POINT_100)?;
    results.push(entry(
        "ingest/100_streams_per_point",
        &per_point,
        Some(&hyper_per_point),
        Some(300e3),
    ));
    let latency = load(&bin, &url, LATENCY_100)?;
    let mut lat = entry("ingest/latency_100x100", &latency, None, None);
    lat["e2e_latency_ms"] = latency["e2e_latency_ms"].clone();
    lat["server_latency_ms"] = latency["server_latency_ms"].clone();
    lat["lost"] = latency["lost"].clone();
    lat["target_p99_ms"] = json!(5.0);
    results.push(lat.clone());
    drop(server);

    // docs/storage.md: the same runs with the durable store on, against the in-memory ones
    // above (same machine, same minute).
    println!("\n== plotstream serve --data-dir (durable store)");
    let data = target_dir.join("bench-store");
    let _ = std::fs::remove_dir_all(&data);
    let memory = InMemory {
        bulk: &bulk,
        per_point: &per_point,
        latency: &lat,
    };
    // docs/history.md: the same runs keeping the window only (`--retention 0`) and with
    // history (issue #14's target: at least 0.75 of the window-only rate), in `STORE_ROUNDS`
    // pairs whose order alternates, each server on a fresh data directory: a shared machine
    // whose speed drifts from one minute to the next moves both sides of a pair alike. Each row
    // is the pair with the median ratio, the other pairs' rates and ratios beside it.
    let data_arg = data.display().to_string();
    let (window_only, store) = paired_store_rows(|history, first| {
        let _ = std::fs::remove_dir_all(&data);
        let (name, mut args) = ("store", vec!["--data-dir", data_arg.as_str()]);
        let name = if history {
            name
        } else {
            args.extend(["--retention", "0"]);
            "store_window_only"
        };
        let server = serve_with(&bin, &args)?;
        let rows = storage_rows(&bin, &server, name, &memory, None, first)?;
        drop(server);
        Ok(rows)
    })?;
    let _ = std::fs::remove_dir_all(&data);
    results.extend(window_only);
    results.extend(store);
    // docs/storage.md "On Redis": the same runs on `serve --redis`, a local redis-server with
    // `appendfsync always` (the setting under which an acknowledgement means what it does on
    // disk), and what each point costs Redis in commands.
    if let Some(redis) = RedisServer::start(&target_dir.join("bench-redis"))? {
        println!(
            "\n== plotstream serve --redis (redis-server {} on port {})",
            redis.version, redis.port
        );
        let server = serve_with(&bin, &["--redis", &redis.url()])?;
        results.extend(storage_rows(
            &bin,
            &server,
            "redis",
            &memory,
            Some(&redis),
            true,
        )?);
        drop(server);
    } else {
        println!("\n== plotstream serve --redis: SKIPPED (no redis-server on PATH)");
    }
    results.push(startup(&bin, &target_dir)?);
    // A fresh server: L10 allows 10 000 connections, and the previous runs' may still linger.
    let server = serve(&bin)?;
    let url = format!("http://{}", server.addr());
    let many = load(
        &bin,
        &url,
        &[
            "--streams",
            "10000",
            "--rate",
            "100000",
            "--ramp",
            "1s",
            "--duration",
            "5s",
        ],
    )?;
    let mut many_entry = entry("ingest/10000_streams", &many, None, None);
    many_entry["connect_s"] = many["connect_s"].clone();
    results.push(many_entry);
    drop(server);

    println!("\n== idle streams");
    results.push(idle_rss(&bin, 10_000)?);

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

/// One summary entry from a load report, with the reference's rate and the target when given.
fn entry(name: &str, report: &Value, reference: Option<&Value>, target: Option<f64>) -> Value {
    let rate = points_per_s(report);
    let mut e = json!({
        "name": name,
        "points_per_s": rate,
        "written_points_per_s": report["achieved_rate"],
        "points_acknowledged": report["points_acknowledged"],
        "points_sent": report["points_sent"],
        "mb_per_s": report["bytes_per_s"].as_f64().unwrap_or(0.0) / 1e6,
        "streams": report["streams"],
        "points_per_chunk": report["points_per_chunk"],
        "send_p99_ms": report["send_latency_ms"]["p99"],
        "errors": report["errors_by_status"],
    });
    if let Some(reference) = reference {
        let hyper = points_per_s(reference);
        e["hyper_points_per_s"] = json!(hyper);
        e["ratio_to_hyper"] = json!(if hyper > 0.0 { rate / hyper } else { 0.0 });
    }
    if let Some(target) = target {
        e["target_points_per_s"] = json!(target);
    }
    e
}

/// What the server ingested: the rate its final `200`s acknowledged, else what was written.
fn points_per_s(report: &Value) -> f64 {
    report["acknowledged_rate"]
        .as_f64()
        .or_else(|| report["achieved_rate"].as_f64())
        .unwrap_or(0.0)
}

/// Runs `plotstream load --report json --quiet` and returns its report.
pub(crate) fn load(bin: &Path, url: &str, args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new(bin);
    cmd.args(["load", "--target", url, "--report", "json", "--quiet"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    println!("$ {}", util::display_command(&cmd));
    let out = cmd.output().context("cannot run plotstream load")?;
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "plotstream load printed no JSON report: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    println!(
        "  achieved {:.0} points/s ({:.1} MB/s), sent {}, errors {}, send p99 {} ms{}",
        report["achieved_rate"].as_f64().unwrap_or(0.0),
        report["bytes_per_s"].as_f64().unwrap_or(0.0) / 1e6,
        report["points_sent"],
        report["errors_by_status"],
        report["send_latency_ms"]["p99"],
        match report["e2e_latency_ms"]["p99"].as_f64() {
            Some(p) => format!(
                ", e2e p50 {} p99 {p} ms, server share p50 {} p99 {} ms, lost {}",
                report["e2e_latency_ms"]["p50"],
                report["server_latency_ms"]["p50"],
                report["server_latency_ms"]["p99"],
                report["lost"]
            ),
            None => String::new(),
        }
    );
    Ok(report)
}

fn serve(bin: &Path) -> Result<Server> {
    serve_with(bin, &["--in-memory"])
}

/// What every bench's `plotstream serve` gets: one peer (the load generator) opens thousands of
/// connections and streams, and idles between phases.
pub(crate) const BENCH_SERVE_FLAGS: &[&str] = &[
    "--max-connections-per-peer",
    "0",
    "--new-streams-per-peer",
    "0",
    "--idle-timeout",
    "120s",
];

/// `plotstream serve` with `storage` (`--in-memory` or `--data-dir DIR`) and the bench's flags;
/// stopped when dropped (SIGTERM: a durable server records its clean stop; a kill after 15 s).
pub(crate) fn serve_with(bin: &Path, storage: &[&str]) -> Result<Server> {
    let server = Serve::new(bin)
        .flags(storage)
        .flags(["--listen", "127.0.0.1:0"])
        .flags(BENCH_SERVE_FLAGS)
        .env("RUST_LOG", "warn")
        .start()?;
    println!("started {} on {}", server.describe(), server.addr());
    Ok(server)
}

/// docs/storage.md start-up: 10 000 streams x 500 points written through the store (the
/// `fill_store` example), then the time from spawning `plotstream serve --data-dir` until it
/// listens (it recovers before it binds), and the disk use per NDJSON byte.
fn startup(bin: &Path, target_dir: &Path) -> Result<Value> {
    println!("\n== start-up with 10 000 streams x 500 points");
    let mut build = util::cargo([
        "build",
        "--release",
        "-p",
        "plotstream-server",
        "--example",
        "fill_store",
    ]);
    if !util::run_echoed(&mut build)? {
        bail!("cargo build --release --example fill_store failed");
    }
    let data = target_dir.join("bench-startup");
    let _ = std::fs::remove_dir_all(&data);
    let out = Command::new(target_dir.join("release/examples/fill_store"))
        .arg(&data)
        .args(["10000", "500"])
        .output()?;
    if !out.status.success() {
        bail!(
            "fill_store failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fill: Value = serde_json::from_slice(&out.stdout)?;
    println!("fill: {fill}");
    let mut ready = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let server = serve_with(bin, &["--data-dir", &data.display().to_string()])?;
        ready.push(started.elapsed().as_secs_f64());
        drop(server);
    }
    ready.sort_by(f64::total_cmp);
    println!("ready after {ready:?} s");
    let ndjson = fill["ndjson_bytes"].as_f64().unwrap_or(1.0);
    let disk = fill["disk_bytes"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "name": "startup/10000x500",
        "ready_s": ready,
        "target_ready_s": 2.0,
        "fill_s": fill["fill_s"],
        "disk_bytes": disk,
        "ndjson_bytes": ndjson,
        "disk_per_ndjson_byte": disk / ndjson,
    }))
}

/// The server's VmRSS before and with `n` idle streams (heads sent, no points) held by
/// `plotstream load --rate 0`.
fn idle_rss(bin: &Path, n: usize) -> Result<Value> {
    let server = serve(bin)?;
    let before = vm_rss_kib(server.pid())?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "load",
        "--target",
        &format!("http://{}", server.addr()),
        "--rate",
        "0",
    ])
    .args([
        "--streams",
        &n.to_string(),
        "--ramp",
        "1s",
        "--duration",
        "8s",
    ])
    .args(["--report", "json", "--quiet"])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped());
    println!("$ {}", util::display_command(&cmd));
    let mut holder = cmd.spawn().context("cannot run plotstream load")?;
    // Count the server's sockets in /proc rather than asking /metrics: at L10 (10 000
    // connections) one more request would be refused.
    let t0 = Instant::now();
    let base = open_fds(server.pid())?;
    let mut open = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        open = open_fds(server.pid())?.saturating_sub(base);
        if open >= n as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let connected_s = t0.elapsed().as_secs_f64();
    let with = vm_rss_kib(server.pid())?;
    if open < n as u64 {
        bail!("only {open} of {n} idle streams connected within 8 s");
    }
    let _ = holder.wait();
    drop(server);
    let per_stream = (with.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "  {open} connections after {connected_s:.1} s: VmRSS {:.1} MiB (before {:.1} MiB, {per_stream:.0} B per stream)",
        with as f64 / 1024.0,
        before as f64 / 1024.0
    );
    Ok(json!({
        "name": format!("ingest/idle_rss_{n}"),
        "rss_mib": with as f64 / 1024.0,
        "rss_before_mib": before as f64 / 1024.0,
        "bytes_per_stream": per_stream,
        "connections_open": open,
        "target_rss_mib": 100.0,
    }))
}

fn open_fds(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

pub(crate) fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Bytes per second through one loopback connection with `write_size` writes for `secs`.
fn tcp_ceiling(write_size: usize, secs: Duration) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![b'x'; write_size];
    let t0 = Instant::now();
    while t0.elapsed() < secs {
        for _ in 0..64 {
            s.write_all(&buf)?;
        }
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let n = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    Ok(n as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

fn table(results: &[Value]) -> String {
    let mut out = String::from(
        "ingest benchmark (loopback, server and load generator on the same 2 cores)\n",
    );
    for r in results {
        let name = r["name"].as_str().unwrap_or("?");
        let line = if let Some(rate) = r["points_per_s"].as_f64() {
            let mut l = format!(
                "{name:<32} {:>12.0} points/s {:>8.1} MB/s",
                rate,
                r["mb_per_s"].as_f64().unwrap_or(0.0)
            );
            if let Some(h) = r["hyper_points_per_s"].as_f64() {
                l.push_str(&format!(
                    "   hyper sink {h:>12.0} points/s (ratio {:.2})",
                    r["ratio_to_hyper"].as_f64().unwrap_or(0.0)
                ));
            }
            if let Some(t) = r["target_points_per_s"].as_f64() {
                l.push_str(&format!("   target {t:.0}"));
            }
            if let Some(ratio) = r["ratio_to_window_only"].as_f64() {
                l.push_str(&format!("   {ratio:.2} of window-only (target >= 0.75)"));
                if let Some(rounds) = r["rounds_ratio_to_window_only"].as_array() {
                    let each: Vec<String> = rounds
                        .iter()
                        .map(|v| format!("{:.2}", v.as_f64().unwrap_or(0.0)))
                        .collect();
                    l.push_str(&format!(", the median of {}", each.join(", ")));
                }
            }
            if let Some(ratio) = r["cpu_ratio_to_window_only"].as_f64() {
                let each: Vec<String> = (r["rounds_cpu_ratio_to_window_only"].as_array())
                    .map(|a| {
                        a.iter()
                            .map(|v| format!("{:.2}", v.as_f64().unwrap_or(0.0)))
                            .collect()
                    })
                    .unwrap_or_default();
                l.push_str(&format!(
                    "; by CPU per point (server and load generator) {ratio:.2}, the median of {}",
                    each.join(", ")
                ));
            }
            if let Some(p) = r["e2e_latency_ms"].as_object() {
                l.push_str(&format!(
                    "   e2e p50 {} p99 {} max {} ms (target p99 <= 5); server share p50 {} p99 {} ms",
                    p["p50"],
                    p["p99"],
                    p["max"],
                    r["server_latency_ms"]["p50"],
                    r["server_latency_ms"]["p99"]
                ));
            }
            l
        } else if let Some(gb) = r["gb_per_s_64k_writes"].as_f64() {
            format!(
                "{name:<32} {gb:.2} GB/s (64 KiB writes), {:.2} GB/s (4 KiB writes)",
                r["gb_per_s_4k_writes"].as_f64().unwrap_or(0.0)
            )
        } else if let Some(rss) = r["rss_mib"].as_f64() {
            format!(
                "{name:<32} {rss:.1} MiB RSS with {} idle streams ({:.0} B/stream; target <= 100 MiB)",
                r["connections_open"],
                r["bytes_per_stream"].as_f64().unwrap_or(0.0)
            )
        } else {
            name.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The in-memory rows a storage's rows are compared with.
struct InMemory<'a> {
    bulk: &'a Value,
    per_point: &'a Value,
    latency: &'a Value,
}

/// The bulk, per-point and latency rows against `server` (a storage other than memory), named
/// `ingest/<storage>/...`, each beside its in-memory row; with `redis`, the Redis commands per
/// point too.
fn storage_rows(
    bin: &Path,
    server: &Server,
    storage: &str,
    memory: &InMemory<'_>,
    redis: Option<&RedisServer>,
    with_latency: bool,
) -> Result<Vec<Value>> {
    let url = format!("http://{}", server.addr());
    let mut rows = Vec::new();
    for (row, args, reference) in [
        ("100_streams_bulk", BULK_100, memory.bulk),
        ("100_streams_per_point", PER_POINT_100, memory.per_point),
    ] {
        let before = redis.map(RedisServer::commands).transpose()?;
        let cpu = Cpu::now(server.pid())?;
        let report = load(bin, &url, args)?;
        let (server_cpu, load_cpu) = cpu.since(server.pid())?;
        let mut e = entry(&format!("ingest/{storage}/{row}"), &report, None, None);
        let acked = report["points_acknowledged"].as_f64().unwrap_or(0.0);
        if acked > 0.0 {
            e["server_cpu_ns_per_point"] = json!(server_cpu * 1e9 / acked);
            e["load_cpu_ns_per_point"] = json!(load_cpu * 1e9 / acked);
        }
        let in_memory = points_per_s(reference);
        e["in_memory_points_per_s"] = json!(in_memory);
        e["ratio_to_in_memory"] = json!(if in_memory > 0.0 {
            points_per_s(&report) / in_memory
        } else {
            0.0
        });
        if redis.is_none() {
            // #11's target for the embedded store.
            e["target_ratio"] = json!(0.75);
        }
        if let (Some(redis), Some(before)) = (redis, before) {
            let commands = redis.commands()?.saturating_sub(before);
            let points = report["points_acknowledged"]
                .as_f64()
                .or_else(|| report["points_sent"].as_f64())
                .unwrap_or(0.0);
            #[allow(clippy::cast_precision_loss)] // a count of commands
            let per_point = if points > 0.0 {
                commands as f64 / points
            } else {
                0.0
            };
            e["redis_commands"] = json!(commands);
            e["redis_commands_per_point"] = json!(per_point);
        }
        rows.push(e);
    }
    if !with_latency {
        return Ok(rows);
    }
    let latency = load(bin, &url, LATENCY_100)?;
    let mut e = entry(
        &format!("ingest/{storage}/latency_100x100"),
        &latency,
        None,
        None,
    );
    e["e2e_latency_ms"] = latency["e2e_latency_ms"].clone();
    e["in_memory_e2e_latency_ms"] = memory.latency["e2e_latency_ms"].clone();
    e["lost"] = latency["lost"].clone();
    rows.push(e);
    Ok(rows)
}
