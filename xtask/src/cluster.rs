//! Several `plotstream serve --redis` nodes on one real `redis-server` (docs/storage.md
//! "Several nodes"): the CI step (`check`) and `cargo xtask bench cluster` (`bench`).
//!
//! The step starts redis-server on a free port (its AOF in `<target>/cluster-redis`, fsync on
//! every write) and three nodes, then counts two checks: `plotstream conform` against one node
//! (every MUST and COMPAT case its one target can run), and `plotstream load --verify` with the
//! writers spread over the three nodes and each stream's viewer on another node than its writer
//! (`lost=0`, `duplicated=0`, `out_of_order=0`: cross-node delivery). Takeover across nodes, a
//! node killed, Redis restarted and a figure made on one node and served by another are
//! `crates/plotstream/tests/cluster.rs`, in the test step.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::bench_ingest::{load, serve_with, BENCH_SERVE_FLAGS};
use crate::process::{self, Serve, Server};
use crate::redis::RedisServer;
use crate::util::{self, Checked};

/// Starts `n` nodes on `redis` with `flags`.
fn nodes(bin: &Path, redis: &RedisServer, n: usize, flags: &[&str]) -> Result<Vec<Server>> {
    (0..n)
        .map(|i| {
            let node = Serve::new(bin)
                .flags(["--redis", &redis.url(), "--listen", "127.0.0.1:0"])
                .flags(flags)
                .env("RUST_LOG", "warn")
                .keep_log(200)
                .named(format!("node {i}"))
                .start()?;
            println!("cluster: node {i} listens on {}", node.addr());
            Ok(node)
        })
        .collect()
}

fn url(node: &Server) -> String {
    format!("http://{}", node.addr())
}

/// The CI step (see the module).
pub(crate) fn check() -> Result<Checked> {
    let Some(redis) = RedisServer::start(&util::target_dir().join("cluster-redis"))? else {
        return Ok(Checked::skipped(
            "no redis-server on PATH (.ci/run installs it)",
        ));
    };
    println!(
        "cluster: redis-server {} on port {}",
        redis.version, redis.port
    );
    let bin = process::build_plotstream(false)?;
    // The suite is one peer that creates thousands of streams on purpose (as in `conform`).
    let nodes = nodes(&bin, &redis, 3, &["--new-streams-per-peer", "0"])?;
    let mut out = Checked::default();
    let mut count = |ok: bool, lines: Vec<String>, what: &str| {
        if ok {
            out.passed += 1;
        } else {
            out.failed += 1;
            out.failures.push(format!("cluster: {what} failed"));
            out.failures.extend(
                lines
                    .into_iter()
                    .filter(|l| l.starts_with("FAIL") || l.contains("assertion failed")),
            );
        }
    };
    let mut conform = Command::new(&bin);
    conform
        .args([
            "conform",
            "--target",
            &url(&nodes[0]),
            "--unoptimized-target",
        ])
        .env("NO_COLOR", "1");
    let (ok, lines) = util::run_teed(&mut conform)?;
    count(ok, lines, "conform against a node of three");
    let mut verify = Command::new(&bin);
    verify.arg("load");
    for node in &nodes {
        verify.args(["--target", &url(node)]);
    }
    verify
        .args(["--viewers-on", "other", "--verify"])
        .args(["--streams", "30", "--rate", "3000", "--duration", "5s"])
        .args(["--assert", "lost=0", "--assert", "duplicated=0"])
        .args(["--assert", "out_of_order=0"]);
    let (ok, lines) = util::run_teed(&mut verify)?;
    count(ok, lines, "load --verify with every viewer on another node");
    if out.failed > 0 {
        for (i, node) in nodes.iter().enumerate() {
            println!("cluster: the last lines of node {i}'s log:");
            for line in node.log() {
                println!("  | {line}");
            }
        }
    }
    Ok(out)
}

/// One configuration of the bench: a name and how its load reaches it.
struct Setup<'a> {
    name: &'static str,
    targets: Vec<String>,
    redis: Option<&'a RedisServer>,
    cross: bool,
}

/// `cargo xtask bench cluster`: the same loads against the embedded store, one node on Redis
/// and three nodes on Redis (writers spread, viewers on other nodes), then the three nodes
/// again with Redis's `appendfsync everysec`, in one run.
pub(crate) fn bench() -> Result<ExitCode> {
    let bin = process::build_plotstream(true)?;
    let target_dir = util::target_dir();
    let redis = RedisServer::start(&target_dir.join("bench-cluster-redis"))?
        .context("bench cluster needs redis-server on PATH")?;
    let data = target_dir.join("bench-cluster-store");
    let _ = std::fs::remove_dir_all(&data);
    let mut rows = Vec::new();
    let store = serve_with(&bin, &["--data-dir", &data.display().to_string()])?;
    rows.extend(run_setup(
        &bin,
        &Setup {
            name: "store, 1 node",
            targets: vec![url(&store)],
            redis: None,
            cross: false,
        },
    )?);
    drop(store);
    let one = nodes(&bin, &redis, 1, BENCH_SERVE_FLAGS)?;
    rows.extend(run_setup(
        &bin,
        &Setup {
            name: "redis, 1 node",
            targets: vec![url(&one[0])],
            redis: Some(&redis),
            cross: false,
        },
    )?);
    drop(one);
    let three = nodes(&bin, &redis, 3, BENCH_SERVE_FLAGS)?;
    rows.extend(run_setup(
        &bin,
        &Setup {
            name: "redis, 3 nodes",
            targets: three.iter().map(url).collect(),
            redis: Some(&redis),
            cross: true,
        },
    )?);
    // The same with Redis fsyncing once a second instead of at every commit: what
    // `appendfsync always` costs the viewers on other nodes (its fsyncs block Redis).
    redis.config_set("appendfsync", "everysec")?;
    rows.extend(run_setup(
        &bin,
        &Setup {
            name: "redis everysec, 3 nodes",
            targets: three.iter().map(url).collect(),
            redis: Some(&redis),
            cross: true,
        },
    )?);
    drop(three);
    println!("\n{}", table(&rows));
    let path = target_dir.join("bench-cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The two loads of one setup: 100 streams as fast as they go (5 s), and 100 streams × 100
/// points/s with every viewer verified (10 s).
fn run_setup(bin: &Path, setup: &Setup<'_>) -> Result<Vec<Value>> {
    println!("\n== {}", setup.name);
    let mut rows = Vec::new();
    for (load_name, args) in [
        (
            "bulk",
            &["--streams", "100", "--rate", "2000000", "--duration", "5s"][..],
        ),
        (
            "100 x 100/s",
            &[
                "--streams",
                "100",
                "--rate",
                "10000",
                "--duration",
                "10s",
                "--verify",
            ][..],
        ),
    ] {
        let mut all: Vec<&str> = args.to_vec();
        for t in &setup.targets[1..] {
            all.extend(["--target", t.as_str()]);
        }
        if setup.cross && args.contains(&"--verify") {
            all.extend(["--viewers-on", "other"]);
        }
        let before = setup.redis.map(RedisServer::commands).transpose()?;
        let report = load(bin, &setup.targets[0], &all)?;
        let after = setup.redis.map(RedisServer::commands).transpose()?;
        let sent = report["points_sent"].as_f64().unwrap_or(0.0);
        let commands = match (before, after) {
            #[allow(clippy::cast_precision_loss)]
            (Some(b), Some(a)) if sent > 0.0 => json!((a - b) as f64 / sent),
            _ => Value::Null,
        };
        rows.push(json!({
            "setup": setup.name,
            "load": load_name,
            "points_per_s": report["acknowledged_rate"].as_f64().or_else(|| report["achieved_rate"].as_f64()),
            "e2e_p50_ms": report["e2e_latency_ms"]["p50"],
            "e2e_p99_ms": report["e2e_latency_ms"]["p99"],
            "lost": report["lost"],
            "redis_commands_per_point": commands,
        }));
    }
    Ok(rows)
}

fn table(rows: &[Value]) -> String {
    let mut out = String::from(
        "| setup | load | points/s | write→viewer p50 | p99 | Redis commands/point |\n| --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let ms = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.2} ms"));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} |\n",
            r["setup"].as_str().unwrap_or(""),
            r["load"].as_str().unwrap_or(""),
            r["points_per_s"].as_f64().unwrap_or(0.0),
            ms(&r["e2e_p50_ms"]),
            ms(&r["e2e_p99_ms"]),
            r["redis_commands_per_point"]
                .as_f64()
                .map_or("–".to_owned(), |x| format!("{x:.4}")),
        ));
    }
    out
}
