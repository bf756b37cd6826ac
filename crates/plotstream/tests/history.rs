//! History as a user meets it (docs/history.md): the real binary, written to with the Rust
//! client, killed and restarted, read back through `GET /api/streams/{id}/history`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use support::{get, start, temp_dir, write_points};

/// Every point of `token`'s history as `(n, x, y)` (NDJSON, by position).
fn all_points(addr: std::net::SocketAddr, token: &str) -> Vec<(u64, u64, u64)> {
    let (status, body) = get(
        addr,
        &format!("/api/streams/{token}/history?by=n&format=ndjson"),
    );
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["n"].as_u64().unwrap(),
                v["x"].as_u64().unwrap(),
                v["y"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The value of the `/metrics` line `name` (0 when there is none).
fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let (_, metrics) = get(addr, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn acknowledged_history_survives_sigkill_and_a_restart_goes_on_from_it() {
    let dir = temp_dir("history-kill");
    let (mut server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    // More than a window (500) and several chunks (1 024 each), with an open chunk left over.
    assert_eq!(
        write_points(addr, "histkill001", 0..5_000).map(|s| s.code()),
        Some(200)
    );
    server.sigkill();
    let (mut server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    let pts = all_points(addr, "histkill001");
    assert_eq!(pts.len(), 5_000, "every acknowledged point, once");
    assert!(pts
        .iter()
        .enumerate()
        .all(|(i, p)| *p == (i as u64, i as u64, i as u64)));
    // The restored builder goes on where the stored history ends.
    assert_eq!(
        write_points(addr, "histkill001", 5_000..7_000).map(|s| s.code()),
        Some(200)
    );
    server.sigterm();
    let (_server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    let pts = all_points(addr, "histkill001");
    assert_eq!(pts.len(), 7_000);
    assert!(pts
        .iter()
        .enumerate()
        .all(|(i, p)| *p == (i as u64, i as u64, i as u64)));
    let v = json(
        addr,
        "/api/streams/histkill001/history?by=x&from=100&to=6900&max_points=40",
    );
    let points = v["points"].as_array().unwrap();
    assert_eq!(v["downsampled"], true);
    assert_eq!(v["bucketed_by"], "x");
    assert!(points.len() <= 40 && points.len() >= 20, "{}", points.len());
    assert_eq!(points[0][3], 100);
    assert_eq!(points[points.len() - 1][3], 6900);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The open chunk's newest points are held by the line journal alone until a snapshot, a
/// reader or the chunk's seal stores them (docs/history.md "Records"): a SIGKILL then must not
/// lose them, and a reader sees them at once.
#[test]
fn points_only_the_line_journal_holds_survive_sigkill_and_are_read_at_once() {
    let dir = temp_dir("history-tail");
    let (mut server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    // One line per point: snapshots every 500 lines, a seal at 1 024, then 276 points that only
    // their lines hold.
    assert_eq!(
        write_points(addr, "histtail001", 0..1_300).map(|s| s.code()),
        Some(200)
    );
    server.sigkill();
    let (mut server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    // Every point 0..n, once, in order (a short message, not two long lists).
    let expect = |n: u64| {
        let ok = move |pts: &[(u64, u64, u64)]| {
            pts.len() as u64 == n && pts.iter().zip(0..).all(|(p, i)| *p == (i, i, i))
        };
        move |pts: Vec<(u64, u64, u64)>| {
            assert!(
                ok(&pts),
                "{} points, expected {n}; first {:?}, last {:?}",
                pts.len(),
                pts.first(),
                pts.last()
            );
        }
    };
    expect(1_300)(all_points(addr, "histtail001"));
    // A reader asks for them (the restored ones, and 30 more, are stored as a part), then
    // more come that only lines hold.
    assert_eq!(
        write_points(addr, "histtail001", 1_300..1_330).map(|s| s.code()),
        Some(200)
    );
    expect(1_330)(all_points(addr, "histtail001"));
    assert_eq!(
        write_points(addr, "histtail001", 1_330..1_400).map(|s| s.code()),
        Some(200)
    );
    server.sigkill();
    let (mut server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    expect(1_400)(all_points(addr, "histtail001"));
    // Past the next snapshot (seq 1 500) and seal (2 048), and a graceful stop.
    assert_eq!(
        write_points(addr, "histtail001", 1_400..2_100).map(|s| s.code()),
        Some(200)
    );
    server.sigterm();
    let (_server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    expect(2_100)(all_points(addr, "histtail001"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_drops_the_oldest_chunks_by_bytes_and_by_age() {
    let dir = temp_dir("history-retention");
    let (_server, addr, _) = start(
        &dir,
        "127.0.0.1:0",
        &["--history-stream-mb", "1", "--retention", "3s"],
    );
    // About 30 bytes a point: 60 000 points is past L59's 1 MiB.
    assert_eq!(
        write_points(addr, "histbytes01", 0..60_000).map(|s| s.code()),
        Some(200)
    );
    let metric = |name: &str| metric(addr, name);
    // Retention looks every second, and drops chunk after chunk until the stream is within L59.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric("plotstream_history_bytes") > 1 << 20 {
        assert!(
            Instant::now() < deadline,
            "L59 did not drop the oldest chunks"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = json(addr, "/api/streams/histbytes01/history?by=n&from=0&to=0");
    let first = v["first_n"].as_u64().unwrap();
    assert!(
        first > 0 && first.is_multiple_of(1024),
        "L59 dropped whole chunks from the oldest: {first}"
    );
    let pts = all_points(addr, "histbytes01");
    assert_eq!(pts.first().map(|p| p.0), Some(first));
    assert_eq!(
        pts.last().map(|p| p.1),
        Some(59_999),
        "the newest points stay"
    );
    assert_eq!(
        pts.len() as u64,
        60_000 - first,
        "no gap after the first point kept"
    );
    assert!(metric("plotstream_history_chunks_dropped_total") > 0);
    let (_, metrics) = get(addr, "/metrics");
    assert!(
        metrics.contains("plotstream_limit_breaches_total{limit=\"L59\"}"),
        "{metrics}"
    );

    // By age: everything sealed goes once it is older than --retention; the open chunk stays.
    let dir = temp_dir("history-age");
    let (_server, addr, _) = start(&dir, "127.0.0.1:0", &["--retention", "3s"]);
    assert_eq!(
        write_points(addr, "histage0001", 0..3_000).map(|s| s.code()),
        Some(200)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = json(addr, "/api/streams/histage0001/history?by=n&from=0&to=0");
        if v["first_n"] == 2048 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chunks older than 3 s were not dropped: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(all_points(addr, "histage0001").len(), 3_000 - 2048);
    let _ = std::fs::remove_dir_all(&dir);
}

/// L27 drops an idle stream and its history: L60's count and `/metrics` let go of its bytes
/// too (they stayed counted before, so L60 trimmed other streams for bytes nobody kept).
#[test]
fn an_evicted_streams_history_leaves_the_total() {
    let dir = temp_dir("history-evicted");
    let (_server, addr, _) = start(&dir, "127.0.0.1:0", &["--idle-stream-ttl", "2s"]);
    assert_eq!(
        write_points(addr, "histevict01", 0..3_000).map(|s| s.code()),
        Some(200)
    );
    let metric = |name: &str| metric(addr, name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric("plotstream_history_points_total") < 3_000 {
        assert!(Instant::now() < deadline, "the points were never counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric("plotstream_history_bytes") > 3_000 * 20);
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric("plotstream_history_bytes") > 0 {
        assert!(
            Instant::now() < deadline,
            "the evicted stream's history is still counted: {} bytes",
            metric("plotstream_history_bytes")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = get(addr, "/api/streams/histevict01/history");
    assert_eq!(status, 404, "the stream and its history are gone");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn requests_are_bounded_and_refused_with_a_reason() {
    let dir = temp_dir("history-requests");
    let (_server, addr, _) = start(&dir, "127.0.0.1:0", &[]);
    assert_eq!(
        write_points(addr, "histreq0001", 0..10).map(|s| s.code()),
        Some(200)
    );
    let status = |q: &str| get(addr, &format!("/api/streams/histreq0001/history?{q}")).0;
    // L61 at limit - 1, limit and limit + 1.
    assert_eq!(status("max_points=99999"), 200);
    assert_eq!(status("max_points=100000"), 200);
    assert_eq!(status("max_points=100001"), 400);
    for bad in [
        "by=y",
        "from=yesterday",
        "format=xml",
        "max_points=0",
        "from=%ZZ",
    ] {
        assert_eq!(status(bad), 400, "{bad}");
    }
    assert_eq!(get(addr, "/api/streams/nosuchtoken1/history").0, 404);
    // CSV of a range, as the viewer's download link asks for it.
    let (s, csv) = get(
        addr,
        "/api/streams/histreq0001/history?by=n&from=2&to=4&format=csv",
    );
    assert_eq!(s, 200);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert_eq!(rows[0], "n,seq,time,x,y");
    assert!(
        rows[1].starts_with("2,3,") && rows[1].ends_with(",2,2"),
        "{csv}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_that_keeps_no_history_says_so() {
    let dir = temp_dir("history-none");
    let (_server, addr, _) = start(&dir, "127.0.0.1:0", &["--retention", "0"]);
    assert_eq!(
        write_points(addr, "histmem0001", 0..10).map(|s| s.code()),
        Some(200)
    );
    let (status, body) = get(addr, "/api/streams/histmem0001/history");
    assert_eq!(status, 404);
    assert!(body.contains("keeps no history"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
