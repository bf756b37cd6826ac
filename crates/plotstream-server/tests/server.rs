//! The server over real loopback sockets: policies of docs/reliability.md §2 that need server
//! state, the invariants of §4, viewers, and shutdown. Timers are configured short; no test
//! sleeps to wait for an outcome, they read until the server answers.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use plotstream_server::{Config, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn h(token: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: {token}\r\nTransfer-Encoding: chunked\r\n\r\n")
}

fn c(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

fn point(n: u64) -> String {
    c(&format!("{{\"x\":{n},\"y\":{n}}}\n"))
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

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(15), self.spawned.stop())
            .await
            .unwrap();
    }

    async fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends `bytes` on a fresh connection and reads until the server closes.
    async fn exchange(&self, bytes: &str) -> Reply {
        let mut s = self.connect().await;
        s.write_all(bytes.as_bytes()).await.unwrap();
        read_reply(&mut s).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.exchange(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
            .await
    }

    async fn inspect(&self, token: &str) -> serde_json::Value {
        let r = self.get(&format!("/api/streams/{token}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        serde_json::from_str(r.body()).unwrap()
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    text: String,
    /// The server closed with FIN (read returned 0), not a reset.
    fin: bool,
}

impl Reply {
    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let fin = loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break false,
            Err(_) => panic!(
                "no reply within 10 s; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, text, fin }
}

fn quick() -> Config {
    Config {
        linger: Duration::from_millis(200),
        drain: Duration::from_secs(3),
        ..Config::default()
    }
}

#[tokio::test]
async fn chart_studio_transcript_is_applied_and_answered() {
    let server = Server::start(quick()).await;
    let mut s = server.connect().await;
    let head = "POST / HTTP/1.1\r\nHost: 127.0.0.1:40541\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\nHost: 127.0.0.1\r\nplotly-streamtoken: abcdef1234\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    for part in [
        "2e\r\n{\"x\": \"2026-01-01 10:00:00.000000\", \"y\": 0.5}\n\r\n",
        "21\r\n{\"x\": [1, 2, 3], \"y\": [4, 5, 6]}\n\r\n",
        "1\r\n\n\r\n",
        "2b\r\n{\"x\": 1, \"y\": 2, \"layout\": {\"title\": \"t\"}}\n\r\n",
        "31\r\n{\"marker\": {\"color\": \"red\"}, \"x\": [7], \"y\": [8]}\n\r\n",
        "\r\n0\r\n\r\n",
    ] {
        s.write_all(part.as_bytes()).await.unwrap();
    }
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 200);
    assert!(r.fin, "FIN, not a reset");
    assert!(
        r.text
            .ends_with("{\"status\":200,\"message\":\"healthy endpoint disconnect\",\"points\":4}"),
        "{}",
        r.text
    );
    let st = server.inspect("abcdef1234").await;
    assert_eq!(st["last_seq"], 4);
    assert_eq!(st["window"]["x"], serde_json::json!([7]));
    assert_eq!(st["window"]["marker.color"], serde_json::json!(["red"]));
    assert_eq!(st["writer_connected"], false);
    assert_eq!(st["digest"].as_str().unwrap().len(), 64);
    server.stop().await;
}

#[tokio::test]
async fn wire_delivery_whole_split_and_bytewise_agree() {
    let server = Server::start(quick()).await;
    let body = format!(
        "{}{}{}1\r\n\n\r\n\r\n0\r\n\r\n",
        point(1),
        c("{\"x\":3,"),
        c("\"y\":3}\n")
    );
    let mut digests = Vec::new();
    for (i, mode) in ["whole", "split", "bytewise"].iter().enumerate() {
        let token = format!("wire{i}");
        let bytes = format!("{}{}", h(&token), body);
        let mut s = server.connect().await;
        match *mode {
            "whole" => s.write_all(bytes.as_bytes()).await.unwrap(),
            "split" => {
                let (a, b) = bytes.split_at(bytes.len() / 2 + 3);
                s.write_all(a.as_bytes()).await.unwrap();
                s.write_all(b.as_bytes()).await.unwrap();
            }
            _ => {
                for b in bytes.as_bytes() {
                    s.write_all(&[*b]).await.unwrap();
                }
            }
        }
        let r = read_reply(&mut s).await;
        assert_eq!(r.status, 200, "{mode}: {}", r.text);
        digests.push(server.inspect(&token).await["digest"].clone());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    server.stop().await;
}

#[tokio::test]
async fn takeover_gives_the_old_writer_423_and_keeps_order() {
    let server = Server::start(quick()).await;
    let mut x = server.connect().await;
    x.write_all(format!("{}{}{}", h("tok1"), point(1), point(2)).as_bytes())
        .await
        .unwrap();
    // Wait until X's lines are visible, so the takeover order is known.
    while server
        .inspect_maybe("tok1")
        .await
        .is_none_or(|v| v["last_seq"] != 2)
    {
        tokio::task::yield_now().await;
    }
    let mut y = server.connect().await;
    y.write_all(format!("{}{}", h("tok1"), point(3)).as_bytes())
        .await
        .unwrap();
    let rx = read_reply(&mut x).await;
    assert_eq!(rx.status, 423, "{}", rx.text);
    assert!(rx.fin);
    y.write_all(format!("{}0\r\n\r\n", point(4)).as_bytes())
        .await
        .unwrap();
    let ry = read_reply(&mut y).await;
    assert_eq!(ry.status, 200);
    let st = server.inspect("tok1").await;
    assert_eq!(st["window"]["x"], serde_json::json!([1, 2, 3, 4]));
    server.stop().await;
}

#[tokio::test]
async fn reject_mode_refuses_the_second_writer_after_its_head() {
    let mut config = quick();
    config.store = StoreConfig {
        takeover: false,
        ..StoreConfig::default()
    };
    let server = Server::start(config).await;
    let mut x = server.connect().await;
    x.write_all(format!("{}{}", h("tok1"), point(1)).as_bytes())
        .await
        .unwrap();
    while server.inspect_maybe("tok1").await.is_none() {
        tokio::task::yield_now().await;
    }
    let ry = server
        .exchange(&format!("{}{}0\r\n\r\n", h("tok1"), point(9)))
        .await;
    assert_eq!(ry.status, 423);
    x.write_all(format!("{}0\r\n\r\n", point(2)).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut x).await.status, 200);
    assert_eq!(
        server.inspect("tok1").await["window"]["x"],
        serde_json::json!([1, 2])
    );
    server.stop().await;
}

#[tokio::test]
async fn one_shot_writers_never_meet_their_own_binding() {
    for takeover in [true, false] {
        let mut config = quick();
        config.store.takeover = takeover;
        let server = Server::start(config).await;
        for n in 0..100 {
            let r = server
                .exchange(&format!("{}{}0\r\n\r\n", h("tok1"), point(n)))
                .await;
            assert_eq!(r.status, 200, "run {n}: {}", r.text);
        }
        assert_eq!(server.inspect("tok1").await["last_seq"], 100);
        server.stop().await;
    }
}

#[tokio::test]
async fn registered_mode_and_issued_tokens() {
    let mut config = quick();
    config.store.tokens_open = false;
    let server = Server::start(config).await;
    let r = server
        .exchange(&format!("{}{}0\r\n\r\n", h("nosuch"), point(1)))
        .await;
    assert_eq!(r.status, 404);
    assert!(
        server.get("/api/streams/nosuch").await.status == 404,
        "no stream was created"
    );
    let r = server
        .exchange("POST /api/tokens?count=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(r.status, 201);
    let tokens: serde_json::Value = serde_json::from_str(r.body()).unwrap();
    let tokens = tokens["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    for t in tokens {
        let t = t.as_str().unwrap();
        assert!(
            t.len() == 10
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{t}"
        );
    }
    let t = tokens[0].as_str().unwrap();
    let r = server
        .exchange(&format!("{}{}0\r\n\r\n", h(t), point(1)))
        .await;
    assert_eq!(r.status, 200);
    // C24: an unknown line token gets 404 at that line; earlier lines stay.
    let body = format!(
        "{}{}{}{}0\r\n\r\n",
        h(t),
        point(2),
        c("{\"x\":1,\"y\":1,\"streamtoken\":\"nosuch\"}\n"),
        point(3)
    );
    let r = server.exchange(&body).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        server.inspect(t).await["window"]["x"],
        serde_json::json!([1, 2])
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_timeout_408_and_lines_kept() {
    let mut config = quick();
    config.limits.idle = Duration::from_millis(300);
    let server = Server::start(config).await;
    let mut s = server.connect().await;
    s.write_all(format!("{}{}", h("tok1"), point(1)).as_bytes())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 408);
    assert!(r.text.ends_with("timeout on active data"));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(server.inspect("tok1").await["last_seq"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_keeps_uploading_still_reads_the_error() {
    let server = Server::start(quick()).await;
    let mut s = server.connect().await;
    s.write_all(format!("{}{}{}", h("tok1"), point(1), c("{bad\n")).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 422 "),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Q12: more data after the 422 is drained, not applied, and the close is a FIN.
    let _ = s.write_all(point(2).as_bytes()).await;
    let r = read_reply(&mut s).await;
    assert!(r.fin, "a reset would make chart_studio raise");
    assert_eq!(server.inspect("tok1").await["last_seq"], 1);
    server.stop().await;
}

#[tokio::test]
async fn lenient_lines_are_counted() {
    let mut config = quick();
    config.lenient_lines = true;
    let server = Server::start(config).await;
    let body = format!(
        "{}{}{}{}{}0\r\n\r\n",
        h("tok1"),
        point(1),
        point(2),
        c("{\"x\":1,\"y\":}\n"),
        point(3)
    );
    let r = server.exchange(&body).await;
    assert_eq!(r.status, 200);
    assert!(r.body().contains("\"points\":3"));
    let st = server.inspect("tok1").await;
    assert_eq!(
        (st["last_seq"].as_u64(), st["rejected_lines"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(server
        .get("/metrics")
        .await
        .text
        .contains("plotstream_lines_rejected_total{reason=\"json\"} 1"));
    server.stop().await;
}

/// `GET /` stays small with thousands of streams: live streams first, at most 500 rows, and a
/// pointer to the API for the rest.
#[tokio::test]
async fn the_index_lists_live_streams_first_and_at_most_500() {
    let server = Server::start(quick()).await;
    for i in 0..520 {
        server
            .exchange(&format!(
                "{}{}0\r\n\r\n",
                h(&format!("done{i:04}")),
                point(1)
            ))
            .await;
    }
    // A live writer whose token sorts after all the others.
    let mut live = server.connect().await;
    live.write_all(format!("{}{}", h("zzlive"), point(1)).as_bytes())
        .await
        .unwrap();
    while server.get("/api/streams/zzlive").await.status != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let index = server.get("/").await;
    assert_eq!(index.text.matches("<tr><td><a href=").count(), 500);
    let first = index.text.find("href=\"/streams/").unwrap();
    assert!(index.text[first..].starts_with("href=\"/streams/zzlive\""));
    assert!(index.text.contains("and 21 more streams"), "{}", index.text);
    drop(live);
    server.stop().await;
}

#[tokio::test]
async fn routes_and_methods() {
    let server = Server::start(quick()).await;
    let r = server
        .exchange("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(r.status, 405);
    assert!(r.text.contains("Allow: POST, GET\r\n"));
    assert_eq!(
        server
            .exchange("POST /foo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .status,
        404
    );
    assert_eq!(server.get("/healthz").await.status, 200);
    server
        .exchange(&format!("{}{}0\r\n\r\n", h("tok1"), point(1)))
        .await;
    let index = server.get("/").await;
    assert!(index.text.contains("href=\"/streams/tok1\""));
    let page = server.get("/streams/tok1").await;
    assert!(page.text.contains("/api/streams/tok1/events"));
    let list: serde_json::Value =
        serde_json::from_str(server.get("/api/streams").await.body()).unwrap();
    assert_eq!(list[0]["token"], "tok1");
    assert_eq!(server.get("/api/streams/none").await.status, 404);
    // A1: a GET with a token header neither binds nor disturbs the token.
    let r = server
        .exchange("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(server.inspect("tok1").await["writer_connected"], false);
    server.stop().await;
}

/// Reads SSE events until `until` says stop.
async fn read_events(
    s: &mut TcpStream,
    mut until: impl FnMut(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("events in time")
            .unwrap();
        if n == 0 {
            return events;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let raw = String::from_utf8(buf.drain(..end + 2).collect()).unwrap();
            let mut kind = String::new();
            let mut data = String::new();
            for line in raw.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            if !kind.is_empty() {
                events.push((kind, serde_json::from_str(&data).unwrap()));
            }
        }
        if until(&events) {
            return events;
        }
    }
}

async fn subscribe(server: &Server, token: &str, interval: u64) -> TcpStream {
    let mut s = server.connect().await;
    s.write_all(
        format!("GET /api/streams/{token}/events?interval={interval} HTTP/1.1\r\nHost: x\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"));
    s
}

/// I5: seqs covered by update events after a snapshot, checked continuous.
fn covered(events: &[(String, serde_json::Value)]) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut expect_next = None;
    for (kind, v) in events {
        match kind.as_str() {
            "snapshot" => expect_next = v["last_seq"].as_u64().map(|s| s + 1),
            "update" => {
                let from = v["from_seq"].as_u64().unwrap();
                assert_eq!(Some(from), expect_next, "gap or duplicate at {v}");
                for op in v["data"].as_array().unwrap() {
                    seqs.push(op["seq"].as_u64().unwrap());
                }
                expect_next = Some(v["to_seq"].as_u64().unwrap() + 1);
            }
            _ => {}
        }
    }
    seqs
}

#[tokio::test]
async fn a_viewer_attached_first_sees_every_seq_once_in_order() {
    let server = Server::start(quick()).await;
    server
        .exchange(&format!("{}{}0\r\n\r\n", h("tok1"), point(0)))
        .await;
    let mut v = subscribe(&server, "tok1", 0).await;
    let mut coalesced = subscribe(&server, "tok1", 50).await;
    let body: String = (1..=200).map(point).collect();
    let r = server
        .exchange(&format!("{}{body}0\r\n\r\n", h("tok1")))
        .await;
    assert_eq!(r.status, 200);
    for s in [&mut v, &mut coalesced] {
        let events = read_events(s, |e| covered(e).len() == 200).await;
        assert_eq!(events[0].0, "snapshot");
        assert_eq!(covered(&events), (2..=201).collect::<Vec<_>>());
    }
    server.stop().await;
}

#[tokio::test]
async fn a_late_viewers_first_update_follows_its_snapshot() {
    let server = Server::start(quick()).await;
    let mut w = server.connect().await;
    w.write_all(format!("{}{}", h("tok1"), (1..=50).map(point).collect::<String>()).as_bytes())
        .await
        .unwrap();
    while server
        .inspect_maybe("tok1")
        .await
        .is_none_or(|v| v["last_seq"] != 50)
    {
        tokio::task::yield_now().await;
    }
    let mut v = subscribe(&server, "tok1", 0).await;
    w.write_all((51..=60).map(point).collect::<String>().as_bytes())
        .await
        .unwrap();
    let events = read_events(&mut v, |e| covered(e).len() == 10).await;
    assert_eq!(events[0].1["last_seq"], 50);
    assert_eq!(events[0].1["window"]["x"].as_array().unwrap().len(), 50);
    assert_eq!(covered(&events), (51..=60).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_writers_with_503_and_viewers_with_reset() {
    let server = Server::start(quick()).await;
    let mut w = server.connect().await;
    w.write_all(format!("{}{}", h("tok1"), point(1)).as_bytes())
        .await
        .unwrap();
    while server.inspect_maybe("tok1").await.is_none() {
        tokio::task::yield_now().await;
    }
    let mut v = subscribe(&server, "tok1", 0).await;
    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    let r = read_reply(&mut w).await;
    assert_eq!(r.status, 503);
    assert!(r.text.contains("Retry-After: 5\r\n"));
    assert!(r.fin);
    let events = read_events(&mut v, |e| e.iter().any(|(k, _)| k == "reset")).await;
    assert_eq!(events.last().unwrap().1["reason"], "shutdown");
    stopping.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

impl Server {
    async fn inspect_maybe(&self, token: &str) -> Option<serde_json::Value> {
        let r = self.get(&format!("/api/streams/{token}")).await;
        (r.status == 200).then(|| serde_json::from_str(r.body()).unwrap())
    }
}

#[tokio::test]
async fn timers_on_real_sockets() {
    let mut config = quick();
    config.limits.pre_head = Duration::from_millis(200);
    config.limits.head_deadline = Duration::from_millis(300);
    config.limits.unbound = Duration::from_millis(300);
    let server = Server::start(config).await;
    // E1: a connection that never speaks is closed silently.
    let mut s = server.connect().await;
    let r = read_reply(&mut s).await;
    assert_eq!((r.text.as_str(), r.fin), ("", true));
    // E2: the head must complete in time.
    let mut s = server.connect().await;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.status, 408);
    // E13: heartbeats do not hold a token-less connection.
    let mut s = server.connect().await;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.status, 406);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_requests_get_one_response() {
    let server = Server::start(quick()).await;
    let r = server
        .exchange(&"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(10_000))
        .await;
    assert_eq!(r.text.matches("HTTP/1.1").count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_lagging_viewer_gets_reset_and_a_snapshot_never_a_gap() {
    let mut config = quick();
    config.store.viewer_queue = 4;
    let server = Server::start(config).await;
    server
        .exchange(&format!("{}{}0\r\n\r\n", h("tok1"), point(0)))
        .await;
    let mut v = subscribe(&server, "tok1", 0).await;
    // Big replacing lines fill the socket buffers while the viewer reads nothing, so its
    // queue overflows.
    let big = format!("{{\"x\":[{}]}}\n", vec!["1234567.25"; 5_000].join(","));
    let body: String = (0..300).map(|_| c(&big)).collect();
    let r = server
        .exchange(&format!("{}{body}0\r\n\r\n", h("tok1")))
        .await;
    assert_eq!(r.status, 200);
    let events = read_events(&mut v, |e| {
        e.iter().any(|(k, _)| k == "reset")
            && e.last()
                .is_some_and(|(k, v)| k == "update" && v["to_seq"] == 301)
            || e.last()
                .is_some_and(|(k, v)| k == "snapshot" && v["last_seq"] == 301)
    })
    .await;
    let resets: Vec<_> = events.iter().filter(|(k, _)| k == "reset").collect();
    assert!(!resets.is_empty(), "the viewer lagged");
    assert_eq!(resets[0].1["reason"], "lagged");
    // covered() asserts continuity between each snapshot and the updates after it.
    let _ = covered(&events);
    let after_reset = events
        .iter()
        .skip_while(|(k, _)| k != "reset")
        .nth(1)
        .unwrap();
    assert_eq!(
        after_reset.0, "snapshot",
        "a reset is followed by a fresh snapshot"
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_per_peer_are_limited() {
    let server = Server::start(Config {
        max_connections_per_peer: 3,
        ..quick()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = server.connect().await;
        s.write_all(
            h("tok9")
                .replace("tok9", &format!("t{}", held.len()))
                .as_bytes(),
        )
        .await
        .unwrap();
        held.push(s);
    }
    // The 4th connection from the same address gets 503 (D11), once the server has accepted
    // the first three.
    let mut refused = None;
    for _ in 0..200 {
        let r = server.get("/healthz").await;
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused
        .expect("a 503 for the 4th connection")
        .text
        .contains("Retry-After: 5"));
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        if server.get("/healthz").await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "admitted again once the others closed");
    server.stop().await;
}

#[tokio::test]
async fn limit_breaches_are_counted_by_l_number() {
    let server = Server::start(quick()).await;
    let long = format!("{{\"x\":\"{}\"}}\n", "A".repeat(70_000));
    assert_eq!(
        server
            .exchange(&format!("{}{}", h("tok1"), c(&long)))
            .await
            .status,
        413
    );
    let ext = format!("{}1;{}\r\n\n\r\n", h("tok2"), "a".repeat(5000));
    assert_eq!(server.exchange(&ext).await.status, 400);
    let metrics = server.get("/metrics").await.text;
    assert!(
        metrics.contains("plotstream_limit_breaches_total{limit=\"L18\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plotstream_limit_breaches_total{limit=\"L14\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

/// P9, L33: a client still inside a long write when the server answers (D8: 10 000 pipelined
/// requests in one write; E8) must still read the whole response, even one far larger than the
/// socket buffers. Past the 64 KiB drain the server stops reading, but it closes (a reset, as
/// input is left unread) only once the client has acknowledged every response byte: a reset
/// discards whatever the server had not sent yet. The CI machine's D8 failed exactly so: its
/// `GET /` listed 170 kB of streams and the client got a reset instead of a status.
#[tokio::test]
async fn a_client_that_reads_late_after_a_big_write_still_gets_the_whole_response() {
    let mut config = quick();
    config.linger = Duration::from_millis(1500);
    config.limits.json_string = 64 * 1024;
    let server = Server::start(config).await;
    // A window of ~600 kB: 12 points whose `text` is 50 000 characters.
    let mut body = h("big");
    for n in 0..12 {
        body.push_str(&c(&format!(
            "{{\"x\":{n},\"y\":{n},\"text\":\"{}\"}}\n",
            "A".repeat(50_000)
        )));
    }
    body.push_str("0\r\n\r\n");
    assert_eq!(server.exchange(&body).await.status, 200);

    let mut s = server.connect().await;
    let one = "GET /api/streams/big HTTP/1.1\r\nHost: x\r\n\r\n";
    // ~430 kB: well past the 64 KiB drain.
    let pipelined = one.repeat(10_000);
    let (mut rd, mut wr) = s.split();
    let write = async {
        let _ = wr.write_all(pipelined.as_bytes()).await;
    };
    let read_late = async {
        // The client is busy (writing, or descheduled) for a while before it reads.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    };
    let ((), got) = tokio::join!(write, read_late);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200 "),
        "the status was lost to a reset: {:?}",
        &text[..text.len().min(200)]
    );
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 600_000, "{length}");
    assert_eq!(
        body.len(),
        length,
        "the response was cut short by a reset after {} of {length} body bytes",
        body.len()
    );
    drop(s);
    server.stop().await;
}

impl Reply {
    /// The value of header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split_once("\r\n\r\n").map_or("", |(h, _)| h);
        head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Creates a plot through `POST /clientresp` as chart_studio does (the form is sent raw, as
/// the server reads it).
async fn create_plot(server: &Server, user: &str, filename: &str) -> Reply {
    let body = format!(
        "un={user}&args=[{{\"x\":[1,2],\"y\":[3,4]}}]&kwargs={{\"filename\":\"{filename}\",\"fileopt\":\"new\"}}"
    );
    server
        .exchange(&format!(
            "POST /clientresp HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await
}

/// Every page carries the Content-Security-Policy and loads scripts only by `src` from this
/// server; user names and file names come out escaped; only `.embed` pages (and their 404)
/// may be framed by other sites.
#[tokio::test]
async fn pages_carry_the_policy_and_no_inline_script() {
    let server = Server::start(quick()).await;
    server
        .exchange(&format!("{}{}0\r\n\r\n", h("tok1"), point(1)))
        .await;
    let hostile_user = "<b>u\"'";
    let hostile_name = "<img src=x onerror=window.__xss=1>";
    let refused = create_plot(&server, hostile_user, "fine").await;
    assert_eq!(refused.status, 200);
    assert!(
        refused.body().contains("invalid user name"),
        "user names are [A-Za-z0-9_.-]: {}",
        refused.body()
    );
    assert_eq!(
        create_plot(&server, "alice", hostile_name).await.status,
        200
    );
    let created = create_plot(&server, "alice", "fine").await;
    let url: serde_json::Value = serde_json::from_str(created.body()).unwrap();
    // `http://x/~alice/<random n>`: fids are not sequential.
    let page = url["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://x")
        .to_owned();
    let full = format!("{page}/");
    let embed = format!("{page}.embed");
    let cases = [
        ("/", 200, false),
        ("/streams/tok1", 200, false),
        (full.as_str(), 200, false),
        (embed.as_str(), 200, true),
        ("/~alice/9/", 404, false),
        ("/~alice/9.embed", 404, true),
    ];
    for (path, status, embed) in cases {
        let r = server.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        let csp = r.header("Content-Security-Policy").unwrap_or_else(|| {
            panic!("{path}: no Content-Security-Policy: {}", r.text);
        });
        assert!(
            csp.starts_with("default-src 'self'; script-src 'self'; "),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(
            csp.contains("frame-ancestors 'self'"),
            !embed,
            "{path}: {csp}"
        );
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("Referrer-Policy"), Some("no-referrer"), "{path}");
        for (i, _) in r.body().match_indices("<script") {
            assert!(
                r.body()[i..].starts_with("<script src=\"/assets/"),
                "{path}: a script not loaded from /assets/: {}",
                r.body()
            );
        }
        assert!(!r.body().contains(hostile_name), "{path}: {}", r.body());
    }
    let index = server.get("/").await;
    assert!(
        index
            .body()
            .contains("&#60;img src=x onerror=window.__xss=1&#62;"),
        "{}",
        index.body()
    );
    assert!(!index.body().contains(hostile_user));
    let figure = server.get(&full).await;
    assert!(figure
        .body()
        .contains("<script src=\"/assets/plotly-3.0.1.min.js\"></script>"));
    server.stop().await;
}

/// plotly.js, its licence and the viewer's files come from the binary.
#[tokio::test]
async fn assets_come_from_the_binary() {
    let server = Server::start(quick()).await;
    let cases = [
        (
            "/assets/plotly-3.0.1.min.js",
            "public, max-age=31536000, immutable",
            "/**\n* plotly.js v3.0.1\n",
        ),
        (
            "/assets/plotly.min.js",
            "public, max-age=3600",
            "/**\n* plotly.js v3.0.1\n",
        ),
        (
            "/assets/plotly.js.LICENSE.txt",
            "public, max-age=3600",
            "The MIT License (MIT)\n\nCopyright (c) 2021 Plotly, Inc\n",
        ),
        (
            "/assets/viewer.js?v=0123",
            "public, max-age=3600",
            "// plotstream live viewer.",
        ),
        ("/assets/viewer.css", "public, max-age=3600", "body {"),
    ];
    for (path, cache, start) in cases {
        let r = server.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Cache-Control"), Some(cache), "{path}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(
            r.body().starts_with(start),
            "{path}: {:?}",
            &r.body()[..r.body().len().min(80)]
        );
    }
    let js = server.get("/assets/plotly-3.0.1.min.js").await;
    assert_eq!(js.body().len(), 4_653_932);
    assert_eq!(server.get("/assets/node_modules").await.status, 404);
    server.stop().await;
}

/// `--plotly-js URL`: the pages load it, and the policy allows exactly its origin.
#[tokio::test]
async fn a_plotly_js_url_is_loaded_and_allowed() {
    let config = Config {
        plotly_js: "https://cdn.example:8443/plotly-3.0.1.min.js"
            .parse()
            .unwrap(),
        ..quick()
    };
    let server = Server::start(config).await;
    let r = server.get("/streams/tok1").await;
    assert!(
        r.body()
            .contains("<script src=\"https://cdn.example:8443/plotly-3.0.1.min.js\"></script>"),
        "{}",
        r.body()
    );
    let csp = r.header("Content-Security-Policy").unwrap();
    assert!(
        csp.contains("; script-src 'self' https://cdn.example:8443; "),
        "{csp}"
    );
    server.stop().await;
}

/// `GET /` stays small with thousands of plots too (20 000 anonymous plots once made it 5.2 MB).
#[tokio::test]
async fn the_index_lists_at_most_500_plots() {
    let server = Server::start(quick()).await;
    for i in 0..503 {
        assert_eq!(
            create_plot(&server, "anon", &format!("p{i}")).await.status,
            200
        );
    }
    let index = server.get("/").await;
    assert_eq!(index.body().matches("<li><a href=\"/~anon/").count(), 500);
    assert!(
        index.body().contains("and 3 more plots"),
        "{}",
        index.body()
    );
    server.stop().await;
}
