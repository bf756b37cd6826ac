//! The load and fault scenarios of docs/reliability.md §6, bounded and on loopback. The quick
//! profile runs in `cargo xtask ci`; `cargo xtask soak` sets `PLOTSTREAM_SOAK=1` for larger
//! counts and longer runs. Ground truth is the senders' logs, the viewers' logs and the
//! inspection digest, compared with an independent model of the window.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plotstream_proto::canonical::write_jcs;
use plotstream_proto::Value;
use plotstream_server::Config;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn soak() -> bool {
    std::env::var_os("PLOTSTREAM_SOAK").is_some()
}

fn h(token: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: {token}\r\nTransfer-Encoding: chunked\r\n\r\n")
}

fn c(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

fn line(n: u64) -> String {
    format!("{{\"x\":{n},\"y\":{}}}\n", n * 2)
}

struct Server {
    addr: SocketAddr,
    spawned: plotstream_server::Spawned,
}

impl Server {
    async fn start(config: Config) -> Server {
        let spawned = plotstream_server::Spawned::start(config).await.unwrap();
        Server {
            addr: spawned.addr,
            spawned,
        }
    }

    async fn start_on(addr: SocketAddr, config: Config) -> Server {
        let spawned = plotstream_server::Spawned::start_on(addr, config)
            .await
            .unwrap();
        Server {
            addr: spawned.addr,
            spawned,
        }
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(15), self.spawned.stop())
            .await
            .unwrap();
    }

    async fn inspect(&self, token: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(format!("GET /api/streams/{token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1)
            .unwrap_or(serde_json::Value::Null)
    }
}

fn config() -> Config {
    Config {
        linger: Duration::from_millis(100),
        drain: Duration::from_secs(3),
        max_connections_per_peer: 0,
        ..Config::default()
    }
}

/// The window model: newest `maxpoints` of x and y; its RFC 8785 digest.
fn model_digest(xs: &[u64], maxpoints: usize) -> String {
    let keep = &xs[xs.len().saturating_sub(maxpoints)..];
    #[allow(clippy::cast_precision_loss)]
    let arr = |f: &dyn Fn(u64) -> u64| {
        Value::Array(keep.iter().map(|&n| Value::Number(f(n) as f64)).collect())
    };
    let window = Value::Object(vec![
        ("x".into(), arr(&|n| n)),
        ("y".into(), arr(&|n| n * 2)),
    ]);
    let mut out = Vec::new();
    write_jcs(&window, &mut out);
    Sha256::digest(&out)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tiny deterministic generator for offsets and framings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn read_all(s: &mut TcpStream) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), s.read(&mut chunk))
            .await
            .expect("the server answers in time")
        {
            Ok(0) => return (String::from_utf8_lossy(&buf).into_owned(), false),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), true),
        }
    }
}

/// Encodes lines with a framing: one line per chunk, several per chunk, lines split across
/// chunks, or chart_studio's close; returns the body bytes.
fn frame(lines: &[String], rng: &mut Rng) -> String {
    let mut body = String::new();
    let mut i = 0;
    while i < lines.len() {
        let k = (1 + rng.below(8) as usize).min(lines.len() - i);
        let joined: String = lines[i..i + k].concat();
        if rng.below(20) == 0 && joined.len() > 2 {
            // 5 %: split the group across two chunks at a random offset.
            let cut = 1 + rng.below(joined.len() as u64 - 1) as usize;
            body.push_str(&c(&joined[..cut]));
            body.push_str(&c(&joined[cut..]));
        } else {
            body.push_str(&c(&joined));
        }
        i += k;
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_many_streams_keep_completeness_order_and_exact_windows() {
    let (n_streams, n_lines) = if soak() { (200, 400) } else { (40, 60) };
    let server = Server::start(config()).await;
    let mut tasks = Vec::new();
    for s in 0..n_streams {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let token = format!("s1tok{s}");
            let mut rng = Rng(0x9e37_79b9 + s as u64);
            let lines: Vec<String> = (1..=n_lines).map(line).collect();
            let body = frame(&lines, &mut rng);
            let close = if s % 10 == 0 {
                "\r\n0\r\n\r\n"
            } else {
                "0\r\n\r\n"
            };
            let bytes = format!("{}{body}{close}", h(&token));
            let mut w = TcpStream::connect(addr).await.unwrap();
            w.set_nodelay(true).unwrap();
            // Writes at a modest pace, in pieces, as a sensor would.
            for piece in bytes.as_bytes().chunks(97) {
                w.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            let (text, reset) = read_all(&mut w).await;
            assert!(
                !reset && text.starts_with("HTTP/1.1 200 "),
                "{token}: {text}"
            );
            token
        }));
    }
    for t in tasks {
        let token = t.await.unwrap();
        let st = server.inspect(&token).await;
        let xs: Vec<u64> = (1..=n_lines).collect();
        assert_eq!(st["last_seq"], n_lines, "{token}: I1");
        assert_eq!(
            st["digest"].as_str().unwrap(),
            model_digest(&xs, 500),
            "{token}: I3/I4"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_churn_returns_to_baseline() {
    let (rounds, per_round) = if soak() { (60, 200) } else { (5, 40) };
    // Churn creates more streams than L26 allows by default; S2 measures cleanup, not L26.
    let mut cfg = config();
    cfg.store.max_streams = 1_000_000;
    let server = Server::start(cfg).await;
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let baseline = fds();
    for r in 0..rounds {
        let mut tasks = Vec::new();
        for i in 0..per_round {
            let addr = server.addr;
            tasks.push(tokio::spawn(async move {
                let token = format!("s2r{r}i{i}");
                let body: String = (1..=10).map(|n| c(&line(n))).collect();
                let mut w = TcpStream::connect(addr).await.unwrap();
                w.write_all(format!("{}{body}0\r\n\r\n", h(&token)).as_bytes())
                    .await
                    .unwrap();
                let (text, _) = read_all(&mut w).await;
                assert!(text.ends_with("\"points\":10}"), "{text}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert_eq!(server.inspect("s2r0i0").await["last_seq"], 10);
    // Connections linger at most L33 after their response; fds return to baseline.
    let started = Instant::now();
    while fds() > baseline + 5 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fds {} vs baseline {baseline}",
            fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reset_mid_body_keeps_exactly_the_completed_lines() {
    let runs = if soak() { 2000 } else { 150 };
    let server = Server::start(config()).await;
    let mut rng = Rng(0x5eed_0003);
    for run in 0..runs {
        let token = format!("s3r{run}");
        let n = 1 + rng.below(5);
        let lines: String = (1..=n).map(|k| c(&line(k))).collect();
        let mut w = TcpStream::connect(server.addr).await.unwrap();
        w.set_nodelay(true).unwrap();
        w.write_all(format!("{}{lines}", h(&token)).as_bytes())
            .await
            .unwrap();
        while server.inspect(&token).await["last_seq"].as_u64() != Some(n) {
            tokio::task::yield_now().await;
        }
        // Part of the next line, cut anywhere: size line, extension, data, a UTF-8 sequence.
        let next = "1a;ext=v\r\n{\"x\":\"\u{e9}\u{e9}\",\"y\":77}\n\r\n".to_owned();
        let cut = rng.below(next.len() as u64 - 1) as usize + 1;
        let cut = (0..=cut)
            .rev()
            .find(|&k| next.is_char_boundary(k))
            .unwrap_or(0);
        w.write_all(&next.as_bytes()[..cut.min(next.len() - 3)])
            .await
            .unwrap();
        socket2::SockRef::from(&w)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(w);
        // A reconnect is admitted at once, and the stream holds exactly n lines.
        let mut again = TcpStream::connect(server.addr).await.unwrap();
        again
            .write_all(format!("{}0\r\n\r\n", h(&token)).as_bytes())
            .await
            .unwrap();
        let (text, _) = read_all(&mut again).await;
        assert!(text.starts_with("HTTP/1.1 200 "), "{token}: {text}");
        assert_eq!(
            server.inspect(&token).await["last_seq"].as_u64(),
            Some(n),
            "{token}: cut at {cut}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_silent_client_times_out_or_is_taken_over() {
    let mut cfg = config();
    cfg.limits.idle = Duration::from_millis(400);
    let server = Server::start(cfg).await;
    // Without reconnect: 408 at L28, completed lines kept.
    let mut w = TcpStream::connect(server.addr).await.unwrap();
    w.write_all(format!("{}{}", h("s4a"), c(&line(1))).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let (text, _) = read_all(&mut w).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.inspect("s4a").await["last_seq"], 1);
    // With reconnect: the new writer is admitted at once; the silent one gets 423.
    let mut old = TcpStream::connect(server.addr).await.unwrap();
    old.write_all(format!("{}{}", h("s4b"), c(&line(1))).as_bytes())
        .await
        .unwrap();
    while server.inspect("s4b").await["last_seq"].as_u64() != Some(1) {
        tokio::task::yield_now().await;
    }
    let mut new = TcpStream::connect(server.addr).await.unwrap();
    new.write_all(format!("{}{}0\r\n\r\n", h("s4b"), c(&line(2))).as_bytes())
        .await
        .unwrap();
    assert!(read_all(&mut new).await.0.starts_with("HTTP/1.1 200 "));
    assert!(read_all(&mut old).await.0.starts_with("HTTP/1.1 423 "));
    assert_eq!(
        server.inspect("s4b").await["window"]["x"],
        serde_json::json!([1, 2])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_fin_mid_body_is_never_200() {
    let runs = if soak() { 1000 } else { 100 };
    let server = Server::start(config()).await;
    let mut rng = Rng(0x5eed_0005);
    let body: String = (1..=4).map(|k| c(&line(k))).collect::<String>() + "0\r\n\r\n";
    for run in 0..runs {
        let token = format!("s5r{run}");
        let bytes = format!("{}{body}", h(&token));
        let head_len = h(&token).len();
        // Cut anywhere inside the body, before its last byte.
        let cut = head_len + rng.below((bytes.len() - head_len - 1) as u64) as usize;
        let mut w = TcpStream::connect(server.addr).await.unwrap();
        w.write_all(&bytes.as_bytes()[..cut]).await.unwrap();
        w.shutdown().await.unwrap();
        let (text, reset) = read_all(&mut w).await;
        assert!(!reset, "{token}: a reset instead of a status");
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "{token} cut {cut}: {text}"
        );
        let completed = bytes.as_bytes()[head_len..cut]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            / 2;
        let seq = server.inspect(&token).await["last_seq"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            seq <= 4 && seq + 1 >= completed.min(4),
            "{token}: {seq} lines for cut {cut}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_s7_restart_rebinds_at_once_with_a_new_epoch() {
    let server = Server::start(config()).await;
    let addr = server.addr;
    let mut w = TcpStream::connect(addr).await.unwrap();
    w.write_all(format!("{}{}", h("s6"), c(&line(1))).as_bytes())
        .await
        .unwrap();
    while server.inspect("s6").await["last_seq"].as_u64() != Some(1) {
        tokio::task::yield_now().await;
    }
    let epoch = server.inspect("s6").await["epoch"].clone();
    let stopping = tokio::spawn(server.stop());
    let (text, reset) = read_all(&mut w).await;
    assert!(
        !reset && text.starts_with("HTTP/1.1 503 ") && text.contains("Retry-After: 5"),
        "{text}"
    );
    stopping.await.unwrap();
    // Restart on the same port at once (SO_REUSEADDR), as after a crash.
    let server = Server::start_on(addr, config()).await;
    let mut w = TcpStream::connect(addr).await.unwrap();
    w.write_all(format!("{}{}0\r\n\r\n", h("s6"), c(&line(2))).as_bytes())
        .await
        .unwrap();
    assert!(read_all(&mut w).await.0.starts_with("HTTP/1.1 200 "));
    let st = server.inspect("s6").await;
    assert_ne!(st["epoch"], epoch, "history was lost, so the epoch changed");
    assert_eq!(st["last_seq"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_eviction_matches_the_model() {
    let n = if soak() { 1_000_000 } else { 50_000 };
    let server = Server::start(config()).await;
    let mut body = String::new();
    for k in 1..=n {
        body.push_str(&line(k));
        if k % 200 == 0 {
            body = c(&body);
            body.insert_str(0, "");
        }
    }
    // One chunk per 200 lines.
    let mut bytes = h("s10");
    let mut group = String::new();
    for k in 1..=n {
        group.push_str(&line(k));
        if k % 200 == 0 || k == n {
            bytes.push_str(&c(&group));
            group.clear();
        }
    }
    bytes.push_str("0\r\n\r\n");
    let mut w = TcpStream::connect(server.addr).await.unwrap();
    let (mut r, mut wr) = w.split();
    let (_, (text, _)) = tokio::join!(
        async { wr.write_all(bytes.as_bytes()).await.unwrap() },
        async {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).await.unwrap();
            (String::from_utf8_lossy(&buf).into_owned(), false)
        }
    );
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    let st = server.inspect("s10").await;
    let xs: Vec<u64> = (1..=n).collect();
    assert_eq!(st["count"], 500);
    assert_eq!(st["digest"].as_str().unwrap(), model_digest(&xs, 500));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_impaired_loopback_keeps_order_without_spurious_timeouts() {
    let server = Server::start(config()).await;
    // An in-process proxy that re-segments at random offsets and delays 0–50 ms per piece.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let upstream = server.addr;
    tokio::spawn(async move {
        let mut seed = 1u64;
        while let Ok((mut down, _)) = proxy.accept().await {
            seed += 1;
            tokio::spawn(async move {
                let mut up = TcpStream::connect(upstream).await.unwrap();
                up.set_nodelay(true).unwrap();
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let mut rng = Rng(seed * 7919);
                let forward = async {
                    let mut buf = vec![0u8; 8192];
                    loop {
                        let n = match dr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut rest = &buf[..n];
                        while !rest.is_empty() {
                            let k = (1 + rng.below(64) as usize).min(rest.len());
                            tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
                            if uw.write_all(&rest[..k]).await.is_err() {
                                return;
                            }
                            rest = &rest[k..];
                        }
                    }
                    let _ = uw.shutdown().await;
                };
                let back = async {
                    let _ = tokio::io::copy(&mut ur, &mut dw).await;
                    let _ = dw.shutdown().await;
                };
                tokio::join!(forward, back);
            });
        }
    });
    let streams = if soak() { 50 } else { 10 };
    let mut tasks = Vec::new();
    for s in 0..streams {
        tasks.push(tokio::spawn(async move {
            let token = format!("s11t{s}");
            let body: String = (1..=30).map(|k| c(&line(k))).collect();
            let mut w = TcpStream::connect(proxy_addr).await.unwrap();
            w.write_all(format!("{}{body}0\r\n\r\n", h(&token)).as_bytes())
                .await
                .unwrap();
            let (text, _) = read_all(&mut w).await;
            assert!(text.starts_with("HTTP/1.1 200 "), "{token}: {text}");
            token
        }));
    }
    for t in tasks {
        let token = t.await.unwrap();
        let xs: Vec<u64> = (1..=30).collect();
        assert_eq!(
            server.inspect(&token).await["digest"].as_str().unwrap(),
            model_digest(&xs, 500),
            "{token}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s14_hostile_connections_do_not_hurt_normal_streams() {
    let server = Server::start(config()).await;
    let addr = server.addr;
    let hostile = tokio::spawn(async move {
        let mut outcomes = BTreeMap::new();
        for i in 0..40 {
            let bytes = if i % 2 == 0 {
                // D5: extension floods trip the overhead budget.
                format!(
                    "{}{}",
                    h(&format!("hx{i}")),
                    format!("1;{}\r\nX\r\n", "a".repeat(4000)).repeat(8)
                )
            } else {
                // C15: an over-long line trips L18.
                format!("{}{}", h(&format!("hl{i}")), c(&"A".repeat(70_000)))
            };
            let mut w = TcpStream::connect(addr).await.unwrap();
            let _ = w.write_all(bytes.as_bytes()).await;
            let (text, _) = read_all(&mut w).await;
            *outcomes
                .entry(text.get(9..12).unwrap_or("---").to_owned())
                .or_insert(0) += 1;
        }
        outcomes
    });
    let mut normal = Vec::new();
    for s in 0..20 {
        normal.push(tokio::spawn(async move {
            let token = format!("s14n{s}");
            let body: String = (1..=50).map(|k| c(&line(k))).collect();
            let mut w = TcpStream::connect(addr).await.unwrap();
            w.write_all(format!("{}{body}0\r\n\r\n", h(&token)).as_bytes())
                .await
                .unwrap();
            assert!(read_all(&mut w).await.0.starts_with("HTTP/1.1 200 "));
            token
        }));
    }
    for t in normal {
        let token = t.await.unwrap();
        let xs: Vec<u64> = (1..=50).collect();
        assert_eq!(
            server.inspect(&token).await["digest"].as_str().unwrap(),
            model_digest(&xs, 500)
        );
    }
    let outcomes = hostile.await.unwrap();
    assert_eq!(outcomes.get("400"), Some(&20), "{outcomes:?}");
    assert_eq!(outcomes.get("413"), Some(&20), "{outcomes:?}");
    server.stop().await;
}
