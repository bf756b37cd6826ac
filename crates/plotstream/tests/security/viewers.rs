//! Finding 6 on the real binary: 200 SSE viewers that never read while ~10 MB is ingested (each
//! viewer used to build its own copies of the whole backlog, and the server peaked at 1.2–1.5
//! GiB; L35 bounds a viewer's queue at 1 024 events or 1 MiB, and the encoded updates are shared
//! by every viewer), and 200 viewers that never read subscribing to a stream whose window is at
//! L24's 4 MiB (each built its own snapshot). The server's peak resident set (VmHWM in
//! `/proc/<pid>/status`) stays under a budget.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::Server;

/// The server's peak resident set under the attack. Each viewer pins at most 1 MiB of
/// updates (L35), the same shared updates here, plus at most 16 KiB of write staging and its
/// snapshot; the process itself takes ~17 MiB. Measured with this test (debug build, 2 cores):
/// a peak of 1 447–1 721 MiB before the fix (f1fd92c), 25–31 MiB after.
const RSS_BUDGET: u64 = 96 * 1024 * 1024;

const VIEWERS: usize = 200;
const LINES: usize = 1_000;

fn chunk(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

#[test]
fn two_hundred_viewers_that_never_read_stay_within_the_rss_budget() {
    let server = Server::start(&["--max-connections-per-peer", "0"]);
    let head = "POST / HTTP/1.1\r\nHost: x\r\nplotly-streamtoken: rss1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let reply = server.raw(format!("{head}{}0\r\n\r\n", chunk("{\"x\":0}\n")).as_bytes());
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"GET /api/streams/rss1/events?interval=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        viewers.push(s);
    }
    let started = Instant::now();
    while server.gauge("plotstream_viewers") != Some(VIEWERS as u64) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "viewers subscribed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (before, _) = server.rss_and_peak();
    // ~10 MB: 1 000 lines of ~10 kB.
    let line = format!("{{\"x\":[{}]}}\n", vec!["1234567.25"; 900].join(","));
    let mut body = String::from(head);
    for _ in 0..LINES {
        body.push_str(&chunk(&line));
    }
    body.push_str("0\r\n\r\n");
    let reply = server.raw(body.as_bytes());
    assert_eq!(reply.status, 200, "{reply:?}");
    // The viewers' sessions go on working through what was queued after the 200, and nothing
    // signals when they are done: sample the resident set until it stops growing (at most
    // 5 s), then read its peak, which the kernel keeps whenever it happened.
    let started = Instant::now();
    let mut last = server.rss_and_peak().0;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let (now, _) = server.rss_and_peak();
        if now <= last || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        last = now;
    }
    let (rss, peak) = server.rss_and_peak();
    eprintln!(
        "{VIEWERS} viewers that never read, {} MB ingested: VmRSS {} MiB before ingest, {} MiB after, peak (VmHWM) {} MiB; queued bytes max {:?}",
        line.len() * LINES / 1_000_000,
        before >> 20,
        rss >> 20,
        peak >> 20,
        server.gauge("plotstream_viewer_queued_bytes_max"),
    );
    assert!(
        peak <= RSS_BUDGET,
        "peak RSS {} MiB over the {} MiB budget",
        peak >> 20,
        RSS_BUDGET >> 20
    );
    drop(viewers);
}

/// The server's peak resident set with 200 viewers that never read, each subscribed to the
/// same idle stream whose window is at L24 (4 MiB of JCS): the viewers share one snapshot, so
/// this is the process, the window and a few copies of it. Measured with this test (debug
/// build): a peak of 840 MiB before snapshots were shared (8404b3e; subscribing took 15 s; at f1fd92c
/// the 200 did not finish subscribing within 60 s), 28–40 MiB after.
const SNAPSHOT_RSS_BUDGET: u64 = 96 * 1024 * 1024;

#[test]
fn two_hundred_viewers_of_a_big_window_share_its_snapshot() {
    let server = Server::start(&[
        "--max-connections-per-peer",
        "0",
        "--default-maxpoints",
        "10000",
    ]);
    let head = "POST / HTTP/1.1\r\nHost: x\r\nplotly-streamtoken: big1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let text = "A".repeat(500);
    let mut body = String::from(head);
    for n in 0..10_000 {
        body.push_str(&chunk(&format!("{{\"x\":{n},\"text\":\"{text}\"}}\n")));
    }
    body.push_str("0\r\n\r\n");
    let reply = server.raw(body.as_bytes());
    assert_eq!(reply.status, 200, "{reply:?}");
    let bytes = server.get("/api/streams/big1").json()["bytes"]
        .as_u64()
        .unwrap();
    assert!(bytes > 4_000_000, "the window is at L24: {bytes} bytes");
    let (before, _) = server.rss_and_peak();
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"GET /api/streams/big1/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        viewers.push(s);
    }
    let started = Instant::now();
    while server.gauge("plotstream_viewers") != Some(VIEWERS as u64) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "viewers subscribed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss, peak) = server.rss_and_peak();
    eprintln!(
        "{VIEWERS} viewers that never read of a 4 MiB window: VmRSS {} MiB before they came, {} MiB after, peak (VmHWM) {} MiB",
        before >> 20,
        rss >> 20,
        peak >> 20,
    );
    assert!(
        peak <= SNAPSHOT_RSS_BUDGET,
        "peak RSS {} MiB over the {} MiB budget",
        peak >> 20,
        SNAPSHOT_RSS_BUDGET >> 20
    );
    drop(viewers);
}
