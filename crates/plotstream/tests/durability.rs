//! The durability contract (docs/storage.md DC1–DC6) against the real binary: writers that record
//! what each final `200` acknowledged, a server killed with SIGKILL at random moments and
//! restarted on the same data directory, and after every restart a check that every
//! acknowledged point is in its window exactly once and in order, and that nothing appears
//! that was never sent. 20 cycles here; `PLOTSTREAM_SOAK=1` (`cargo xtask soak`) runs 500.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plotstream_client::{Backoff, Client, Options};
use plotstream_proto::encode::Num;
use plotstream_proto::Status;

mod support;

use support::*;

/// What one writer sent and what the server acknowledged.
#[derive(Debug, Default)]
struct Ledger {
    sent: BTreeSet<u64>,
    acked: BTreeSet<u64>,
}

/// Writes batches of points (x = a counter unique to this writer, y = x) on one connection
/// each, closing after each batch: a `200 {"points":n}` acknowledges the batch's first n.
/// Connection failures (the server is dead) are expected: the batch is unacknowledged and the
/// writer goes on with new x values once the server is back.
async fn writer(url: String, token: String, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let options = Options {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            max_retries: Some(0),
        },
        connect_timeout: Duration::from_secs(2),
        close_timeout: Duration::from_secs(5),
        replay: 0,
        heartbeat: None,
        ..Options::default()
    };
    let mut next = 1u64;
    let mut batch_len = 1;
    while !stop.load(Ordering::Relaxed) {
        batch_len = batch_len % 40 + 7;
        let Ok(client) = Client::connect(&url, &token, options.clone()).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let first = next;
        let mut written = 0;
        for _ in 0..batch_len {
            ledger.lock().unwrap().sent.insert(next);
            #[allow(clippy::cast_possible_wrap)]
            let x = Num::Int(next as i64);
            next += 1;
            if client.write_point(x, x).await.is_err() {
                break;
            }
            written += 1;
        }
        if let Ok(closed) = client.close().await {
            if closed.status == Some(Status::OK) {
                let n = closed.stats.n_points_acknowledged.min(written);
                ledger.lock().unwrap().acked.extend(first..first + n);
            }
        }
    }
}

/// The streams' window length in the crash test.
const MAXPOINTS: usize = 10_000;

/// Checks the contract for one token: the window is strictly increasing (no duplicate, no
/// reorder), holds only points that were sent, and holds every acknowledged point not older
/// than the window's oldest once the window is full.
fn check(addr: SocketAddr, token: &str, ledger: &Mutex<Ledger>, cycle: usize) -> usize {
    // Acknowledgements first: anything acknowledged before the window is read must be in it.
    let acked = ledger.lock().unwrap().acked.clone();
    let (xs, ys) = window_x(addr, token);
    let sent = ledger.lock().unwrap().sent.clone();
    assert_eq!(
        xs, ys,
        "cycle {cycle} {token}: x and y of one point differ: a torn line"
    );
    for w in xs.windows(2) {
        assert!(
            w[0] < w[1],
            "cycle {cycle} {token}: {} then {}: duplicate or out of order",
            w[0],
            w[1]
        );
    }
    for x in &xs {
        assert!(
            sent.contains(x),
            "cycle {cycle} {token}: point {x} was never sent"
        );
    }
    let have: BTreeSet<u64> = xs.iter().copied().collect();
    // A full window has evicted its oldest points (maxpoints): those are not lost.
    let oldest_kept = if xs.len() >= MAXPOINTS { xs[0] } else { 0 };
    let lost: Vec<u64> = acked
        .difference(&have)
        .copied()
        .filter(|x| *x >= oldest_kept)
        .collect();
    assert!(
        lost.is_empty(),
        "cycle {cycle} {token}: {} acknowledged points lost, the first: {:?} (window: {} points from {:?})",
        lost.len(),
        &lost[..lost.len().min(20)],
        xs.len(),
        xs.first()
    );
    acked.len()
}

#[test]
fn acknowledged_points_survive_sigkill_in_order_exactly_once() {
    let dir = temp_dir("crash");
    crash_cycles(&mut Keep::Dir(dir.clone()), kill_cycles(), Victim::Server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// DC1–DC4 on Redis (#13): the same SIGKILL cycles with `--redis`.
#[test]
fn acknowledged_points_survive_sigkill_on_redis() {
    let mut keep = Keep::Redis(RedisServer::start("crash-redis"));
    crash_cycles(&mut keep, kill_cycles(), Victim::Server);
}

/// Redis itself SIGKILLed mid-run and restarted from its AOF (`appendfsync always`) while the
/// server runs on: writers get 503 meanwhile, ingest resumes without restarting the server
/// (DC5 on Redis), and a server restarted afterwards from Redis has every acknowledged point.
#[test]
fn acknowledged_points_survive_redis_being_killed() {
    let mut keep = Keep::Redis(RedisServer::start("kill-redis"));
    crash_cycles(&mut keep, 5, Victim::Redis);
}

/// What a crash cycle kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// The server (SIGKILL), started again at once.
    Server,
    /// Redis (SIGKILL), started again after a pause; once the server reports itself healthy
    /// again, the server too, so the check reads what Redis kept.
    Redis,
}

fn kill_cycles() -> usize {
    if std::env::var_os("PLOTSTREAM_SOAK").is_some() {
        500
    } else {
        20
    }
}

/// Writers with ledgers against a server keeping its state in `keep`; `cycles` times, after a
/// random pause, SIGKILLs the server and starts it again, then checks every token's window
/// against its ledger; finally a graceful stop must keep epochs and windows exactly.
fn crash_cycles(keep: &mut Keep, cycles: usize, victim: Victim) {
    let tokens: Vec<String> = (0..4).map(|i| format!("crash{i}")).collect();
    // The tokens' windows must hold everything the test writes: maxpoints 10 000.
    let extra = [
        "--default-maxpoints",
        "10000",
        "--new-streams-per-peer",
        "0",
    ];
    let (mut child, addr, _) = start_in(keep, "127.0.0.1:0", &extra);
    let listen = addr.to_string();
    let url = format!("http://{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ledgers: Vec<Arc<Mutex<Ledger>>> = tokens.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (token, ledger) in tokens.iter().zip(&ledgers) {
        tasks.push(rt.spawn(writer(
            url.clone(),
            token.clone(),
            ledger.clone(),
            stop.clone(),
        )));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let started = Instant::now();
    let mut total_acked = 0;
    for cycle in 0..cycles {
        std::thread::sleep(Duration::from_millis(50 + rand(400)));
        if let (Victim::Redis, Keep::Redis(redis)) = (victim, &mut *keep) {
            redis.sigkill();
            std::thread::sleep(Duration::from_millis(100 + rand(400)));
            redis.restart();
            let deadline = Instant::now() + Duration::from_secs(15);
            while get(addr, "/healthz").0 != 200 {
                assert!(
                    Instant::now() < deadline,
                    "cycle {cycle}: the server did not resume after Redis came back"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(50 + rand(200)));
        }
        child.sigkill();
        let (c, a, said) = start_in(keep, &listen, &extra);
        child = c;
        assert_eq!(a, addr);
        assert!(
            said.iter().all(|l| !l.contains("recovery:")),
            "cycle {cycle}: a kill must not damage the store: {said:?}"
        );
        total_acked = 0;
        for (token, ledger) in tokens.iter().zip(&ledgers) {
            total_acked += check(addr, token, ledger, cycle);
        }
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    });
    // A graceful stop after the last cycle keeps everything too, epochs included.
    let (_, before) = get(addr, &format!("/api/streams/{}", tokens[0]));
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    child.sigterm();
    let (child, _, _) = start_in(keep, &listen, &extra);
    for (token, ledger) in tokens.iter().zip(&ledgers) {
        check(addr, token, ledger, cycles);
    }
    let (_, after) = get(addr, &format!("/api/streams/{}", tokens[0]));
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        after["epoch"], before["epoch"],
        "a clean restart keeps the epoch (DC4)"
    );
    assert_eq!(after["digest"], before["digest"]);
    drop(child);
    assert!(
        total_acked > cycles * 4,
        "the writers made progress: {total_acked} acknowledged"
    );
    eprintln!(
        "{cycles} kill cycles in {:.1} s, {total_acked} acknowledged points checked",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn viewers_resume_after_a_clean_restart_and_reset_after_a_crash() {
    let dir = temp_dir("resume");
    let (mut server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    let listen = addr.to_string();
    assert_eq!(write_points(addr, "resume1", 1..6), Some(Status::OK));
    let before = inspect(addr, "resume1");
    let epoch = before["epoch"].as_str().unwrap().to_owned();
    assert_eq!(before["last_seq"], 5);

    // DC4, clean: same epoch; an EventSource at 5 gets no snapshot, then seq 6 as an update.
    server.sigterm();
    let (mut server, _, _) = start(&dir, &listen, &[]);
    assert_eq!(inspect(addr, "resume1")["epoch"], epoch.as_str());
    let mut viewer = feed(addr, "resume1", &format!("{epoch}:5"));
    let first = drain(&mut viewer);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.contains("event: snapshot"),
        "a resumed viewer gets no snapshot: {first}"
    );
    assert_eq!(write_points(addr, "resume1", 6..7), Some(Status::OK));
    let next = drain(&mut viewer);
    assert!(
        next.contains(&format!("event: update\nid: {epoch}:6\n")),
        "the next event is seq 6 of the same epoch: {next}"
    );
    // A viewer that is behind gets a snapshot of the same epoch: no gap either way.
    let mut behind = feed(addr, "resume1", &format!("{epoch}:3"));
    assert!(drain(&mut behind).contains(&format!("event: snapshot\nid: {epoch}:6\n")));

    // DC4, crash: the durable tail may be shorter than what viewers saw: a new epoch.
    server.sigkill();
    let (server, _, _) = start(&dir, &listen, &[]);
    let after = inspect(addr, "resume1");
    assert_ne!(after["epoch"], epoch.as_str(), "a crash starts a new epoch");
    assert_eq!(after["window"]["x"], serde_json::json!([1, 2, 3, 4, 5, 6]));
    let mut viewer = feed(addr, "resume1", &format!("{epoch}:6"));
    let got = drain(&mut viewer);
    assert!(
        got.contains(&format!(
            "event: snapshot\nid: {}:6\n",
            after["epoch"].as_str().unwrap()
        )),
        "a viewer of the old epoch gets the new epoch's snapshot: {got}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_carries_on_after_a_restart() {
    let dir = temp_dir("demo");
    let (mut server, addr, _) = start(&dir, "127.0.0.1:0", &["--demo"]);
    let listen = addr.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let (status, body) = get(addr, "/api/streams/demo");
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["last_seq"].as_u64().unwrap() >= 5 {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "the demo writes");
        std::thread::sleep(Duration::from_millis(100));
    };
    server.sigterm();
    let (_server, _, said) = start(&dir, &listen, &["--demo"]);
    assert!(said.iter().any(|l| l.starts_with("recovered ")), "{said:?}");
    let after = inspect(addr, "demo");
    let seq_before = before["last_seq"].as_u64().unwrap();
    assert!(after["last_seq"].as_u64().unwrap() >= seq_before, "{after}");
    let x_before = before["window"]["x"].as_array().unwrap();
    let x_after = after["window"]["x"].as_array().unwrap();
    assert_eq!(
        &x_after[..x_before.len().min(x_after.len())],
        &x_before[..],
        "the earlier demo points are still there"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while inspect(addr, "demo")["last_seq"].as_u64().unwrap() < seq_before + 5 {
        assert!(
            Instant::now() < deadline,
            "the demo carries on after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(_server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() {
    let dir = temp_dir("diskfull");
    let (server, addr, _) = start(
        &dir,
        "127.0.0.1:0",
        &["--fault", "disk-full:after=10,ms=1500"],
    );
    assert_eq!(write_points(addr, "full1", 1..11), Some(Status::OK));
    assert_eq!(get(addr, "/healthz").0, 200);
    // The 11th line fills the disk: the commit fails, so the final response is not a 200.
    assert_eq!(
        write_points(addr, "full1", 11..12),
        Some(Status::UNAVAILABLE)
    );
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 503, "{body}");
    let (_, metrics) = get(addr, "/metrics");
    assert!(metrics.contains("plotstream_store_failing 1"), "{metrics}");
    // New lines are refused, not applied; reads and viewers work.
    assert_eq!(
        write_points(addr, "full1", 100..101),
        Some(Status::UNAVAILABLE)
    );
    let w = inspect(addr, "full1");
    assert_eq!(w["window"]["x"].as_array().unwrap().len(), 11, "{w}");
    let mut viewer = feed(addr, "full1", "none");
    assert!(drain(&mut viewer).contains("event: snapshot"));
    // Space returns: ingest resumes without a restart, and what was kept stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(addr, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "the store recovers by itself");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(write_points(addr, "full1", 12..13), Some(Status::OK));
    drop(server); // SIGKILL
    let (server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    let xs: Vec<u64> = (1..13).collect();
    assert_eq!(inspect(addr, "full1")["window"]["x"], serde_json::json!(xs));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs of `size` at a fresh directory, unmounted on drop; `None` where mounting is not
/// allowed (not root, no CAP_SYS_ADMIN).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir = temp_dir(name);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_real_full_disk_refuses_writes_and_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount("realfull", "8m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the disk-full fault covers DC5"
        );
        return;
    };
    let data = fs.0.join("data");
    let (server, addr, _) = start(&data, "127.0.0.1:0", &[]);
    assert_eq!(write_points(addr, "real1", 1..11), Some(Status::OK));
    // Fill the disk but for a little room.
    let filler = fs.0.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut next = 11;
    let mut refused = false;
    for _ in 0..200 {
        let status = write_points(addr, "real1", next..next + 50);
        next += 50;
        if status == Some(Status::UNAVAILABLE) {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk ends in 503");
    assert_eq!(get(addr, "/healthz").0, 503);
    let kept = inspect(addr, "real1");
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(addr, "/healthz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the store recovers when space returns"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        write_points(addr, "real1", 100_000..100_001),
        Some(Status::OK)
    );
    drop(server);
    let (server, addr, said) = start(&data, "127.0.0.1:0", &[]);
    let after = inspect(addr, "real1");
    let xs = |v: &serde_json::Value| v["window"]["x"].as_array().unwrap().clone();
    assert!(xs(&after).starts_with(&xs(&kept)[..10]), "{said:?}");
    assert_eq!(xs(&after).last().unwrap(), 100_000);
    drop(server);
}

/// An unreachable Redis stops start-up with its URL named, and the password never shown.
#[test]
fn an_unreachable_redis_is_refused_without_showing_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--redis"])
        .arg(format!("redis://:s3cret-pw@127.0.0.1:{port}/0"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
}
