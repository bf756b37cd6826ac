//! The durability contract (docs/storage.md D1–D6) against the real binary: writers that record
//! what each final `200` acknowledged, a server killed with SIGKILL at random moments and
//! restarted on the same data directory, and after every restart a check that every
//! acknowledged point is in its window exactly once and in order, and that nothing appears
//! that was never sent. 20 cycles here; `PLOTSTREAM_SOAK=1` (`cargo xtask soak`) runs 500.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plotstream_client::{Backoff, Client, Options};
use plotstream_proto::encode::Num;
use plotstream_proto::Status;

const BIN: &str = env!("CARGO_BIN_EXE_plotstream");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plotstream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server process, killed (by PID) when dropped, so a failed assertion leaves nothing
/// running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn sigkill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    fn sigterm(&mut self) {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.0.wait().unwrap();
    }
}

/// `plotstream serve --data-dir DIR` on `listen`; returns the process and its address, and
/// what it printed before it.
fn start(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, SocketAddr, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(dir)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server prints its address")
            .unwrap();
        if let Some(a) = line.strip_prefix("plotstream listening on http://") {
            break a.parse().unwrap();
        }
        said.push(line);
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr, said)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The window's `x` values of `token`'s stream (empty if it does not exist).
fn window_x(addr: SocketAddr, token: &str) -> (Vec<u64>, Vec<u64>) {
    let (status, body) = get(addr, &format!("/api/streams/{token}"));
    if status == 404 {
        return (Vec::new(), Vec::new());
    }
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let col = |k: &str| {
        v["window"][k]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap()).collect())
            .unwrap_or_default()
    };
    (col("x"), col("y"))
}

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

/// Checks the contract for one token: the window is strictly increasing (no duplicate, no
/// reorder), holds only points that were sent, and holds every acknowledged point (no
/// eviction happens: the test stays under maxpoints).
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
    let lost: Vec<u64> = acked.difference(&have).copied().collect();
    assert!(
        lost.is_empty(),
        "cycle {cycle} {token}: {} acknowledged points lost, the first: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    acked.len()
}

#[test]
fn acknowledged_points_survive_sigkill_in_order_exactly_once() {
    let cycles: usize = if std::env::var_os("PLOTSTREAM_SOAK").is_some() {
        500
    } else {
        20
    };
    let dir = temp_dir("crash");
    let tokens: Vec<String> = (0..4).map(|i| format!("crash{i}")).collect();
    // The tokens' windows must hold everything the test writes: maxpoints 10 000.
    let extra = [
        "--default-maxpoints",
        "10000",
        "--new-streams-per-peer",
        "0",
    ];
    let (mut child, addr, _) = start(&dir, "127.0.0.1:0", &extra);
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
        child.sigkill();
        let (c, a, said) = start(&dir, &listen, &extra);
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
    let (child, _, _) = start(&dir, &listen, &extra);
    for (token, ledger) in tokens.iter().zip(&ledgers) {
        check(addr, token, ledger, cycles);
    }
    let (_, after) = get(addr, &format!("/api/streams/{}", tokens[0]));
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        after["epoch"], before["epoch"],
        "a clean restart keeps the epoch (D4)"
    );
    assert_eq!(after["digest"], before["digest"]);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        total_acked > cycles * 4,
        "the writers made progress: {total_acked} acknowledged"
    );
    eprintln!(
        "{cycles} kill cycles in {:.1} s, {total_acked} acknowledged points checked",
        started.elapsed().as_secs_f64()
    );
}
