//! Several `plotstream serve` nodes on one real Redis (docs/storage.md "Several nodes"), driven
//! as a user would: raw writers and SSE viewers on different nodes, a takeover across nodes, a
//! node killed with SIGKILL, Redis killed and restarted from its AOF.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

mod support;

use support::*;

/// Redis and `n` nodes on it.
struct Cluster {
    nodes: Vec<(Proc, SocketAddr)>,
    redis: RedisServer,
}

impl Cluster {
    fn start(name: &str, n: usize, extra: &[&str]) -> Cluster {
        let redis = RedisServer::start(name);
        let keep = Keep::Redis(redis);
        let nodes = (0..n)
            .map(|_| {
                let (p, addr, _) = start_in(&keep, "127.0.0.1:0", extra);
                (p, addr)
            })
            .collect();
        let Keep::Redis(redis) = keep else {
            unreachable!()
        };
        Cluster { nodes, redis }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].1
    }
}

/// A writer on its own connection: `POST /` chunked, the token in the head.
struct Writer(TcpStream);

impl Writer {
    fn open(addr: SocketAddr, token: &str) -> Writer {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nplotly-streamtoken: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Writer(s)
    }

    /// Sends `{"x":x,"y":x}` lines; false once the server has closed.
    fn points(&mut self, xs: impl IntoIterator<Item = u64>) -> bool {
        let mut body = String::new();
        for x in xs {
            body.push_str(&format!("{{\"x\":{x},\"y\":{x}}}\n"));
        }
        write!(self.0, "{:x}\r\n{body}\r\n", body.len()).is_ok()
    }

    /// Ends the body and returns the final status (0 when none came).
    fn close(mut self) -> u16 {
        let _ = self.0.write_all(b"0\r\n\r\n");
        self.status()
    }

    /// The status the server ended the request with (0 when none came).
    fn status(&mut self) -> u16 {
        let mut out = String::new();
        let _ = self.0.read_to_string(&mut out);
        out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
    }
}

/// Writes `xs` on one connection; the final status.
fn write_all(addr: SocketAddr, token: &str, xs: std::ops::Range<u64>) -> u16 {
    let mut w = Writer::open(addr, token);
    w.points(xs);
    w.close()
}

/// An SSE viewer, reading in the background: every `(epoch, seq, x)` it was shown (a
/// snapshot's window counts as the points up to its last seq), and every reset.
struct Viewer {
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    /// `(epoch, seq, x)` in the order shown.
    points: Vec<(String, u64, u64)>,
    resets: usize,
    /// Each reset's `reason`.
    reasons: Vec<String>,
    snapshots: usize,
    /// Each `status` event's `upstream`.
    statuses: Vec<String>,
}

impl Viewer {
    fn open(addr: SocketAddr, token: &str) -> Viewer {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /api/streams/{token}/events?interval=0 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let into = seen.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut buf = [0u8; 8192];
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = text.find("\n\n") {
                    let event: String = text.drain(..end + 2).collect();
                    into.lock().unwrap().take(&event);
                }
            }
        });
        Viewer { seen }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the viewer was shown seq `seq` (or 10 s).
    fn wait_for(&self, seq: u64) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen();
            if seen.points.last().is_some_and(|p| p.1 >= seq) || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Seen {
    fn take(&mut self, event: &str) {
        let kind = event
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or("");
        let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
            return;
        };
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let epoch = v["epoch"].as_str().unwrap_or("").to_owned();
        match kind {
            "snapshot" => {
                self.snapshots += 1;
                self.points.clear();
                let xs = v["window"]["x"].as_array().cloned().unwrap_or_default();
                let last = v["last_seq"].as_u64().unwrap();
                let first = last + 1 - xs.len() as u64;
                for (i, x) in xs.iter().enumerate() {
                    self.points
                        .push((epoch.clone(), first + i as u64, x.as_u64().unwrap()));
                }
            }
            "update" => {
                for op in v["data"].as_array().unwrap() {
                    let seq = op["seq"].as_u64().unwrap();
                    let x = op["append"]["x"][0].as_u64().unwrap();
                    self.points.push((epoch.clone(), seq, x));
                }
            }
            "status" => self
                .statuses
                .push(v["upstream"].as_str().unwrap_or("").to_owned()),
            "reset" => {
                self.resets += 1;
                self.reasons
                    .push(v["reason"].as_str().unwrap_or("").to_owned());
            }
            _ => {}
        }
    }
}

/// Checks a viewer's points: one epoch, seqs consecutive, and returns the xs.
fn consecutive(seen: &Seen) -> Vec<u64> {
    for w in seen.points.windows(2) {
        assert_eq!(w[0].0, w[1].0, "one epoch: {seen:?}");
        assert_eq!(
            w[0].1 + 1,
            w[1].1,
            "no gap, no duplicate, no reorder: {seen:?}"
        );
    }
    seen.points.iter().map(|p| p.2).collect()
}

#[test]
fn a_viewer_on_another_node_sees_the_same_ids_as_one_on_the_writers_node() {
    let c = Cluster::start("cluster-fanout", 3, &[]);
    assert_eq!(write_all(c.addr(0), "fanout1", 0..1), 200);
    let on_a = Viewer::open(c.addr(0), "fanout1");
    let on_b = Viewer::open(c.addr(1), "fanout1");
    std::thread::sleep(Duration::from_millis(300));
    let mut w = Writer::open(c.addr(0), "fanout1");
    for chunk in 0..20 {
        assert!(w.points(1 + chunk * 10..1 + (chunk + 1) * 10));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(w.close(), 200);
    // The writer moves to another node as soon as it has its 200, and again, and back: each
    // status waited until its node let go of the lease, so each move is clean; a follower
    // behind reads the rest of each generation it missed; viewers see one sequence.
    assert_eq!(write_all(c.addr(2), "fanout1", 201..251), 200);
    assert_eq!(write_all(c.addr(1), "fanout1", 251..301), 200);
    assert_eq!(write_all(c.addr(1), "fanout1", 301..351), 200);
    assert_eq!(write_all(c.addr(0), "fanout1", 351..401), 200);
    let a = on_a.wait_for(401);
    let b = on_b.wait_for(401);
    assert_eq!(consecutive(&a), (0..401).collect::<Vec<_>>());
    assert_eq!(a.points, b.points, "the same ids on both nodes");
    assert_eq!(
        (a.resets, b.resets),
        (0, 0),
        "a clean move needs no reset: {:?} {:?}",
        a.reasons,
        b.reasons
    );
    // Any node answers the inspection with the same window.
    let digests: Vec<String> = (0..3)
        .map(|i| {
            inspect(c.addr(i), "fanout1")["digest"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(digests.windows(2).all(|d| d[0] == d[1]), "{digests:?}");
}

#[test]
fn a_takeover_on_another_node_ends_the_first_writer_with_423_and_nothing_interleaves() {
    let c = Cluster::start("cluster-takeover", 2, &[]);
    let viewer_token = "takeover1";
    assert_eq!(write_all(c.addr(0), viewer_token, 0..1), 200);
    let on_b = Viewer::open(c.addr(1), viewer_token);
    let mut first = Writer::open(c.addr(0), viewer_token);
    assert!(first.points(1..50));
    std::thread::sleep(Duration::from_millis(200));
    // The same token on node B: B takes it over.
    let b = c.addr(1);
    let second = std::thread::spawn(move || write_all(b, viewer_token, 1000..1050));
    std::thread::sleep(Duration::from_millis(300));
    // The first writer goes on as if nothing happened; its node ends it with 423.
    let _ = first.points(50..60);
    assert_eq!(first.status(), 423, "the displaced writer ends with 423");
    assert_eq!(second.join().unwrap(), 200);
    let window = inspect(c.addr(0), viewer_token);
    let xs: Vec<u64> = window["window"]["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let split = xs.iter().position(|x| *x >= 1000).unwrap();
    assert!(xs[..split].iter().all(|x| *x < 60), "{xs:?}");
    assert_eq!(xs[split..], (1000..1050).collect::<Vec<_>>()[..], "{xs:?}");
    assert!(xs[..split].windows(2).all(|w| w[0] + 1 == w[1]), "{xs:?}");
    // The viewer on B ends in the same state; seqs never went back.
    let seen = on_b.wait_for(window["last_seq"].as_u64().unwrap());
    let shown: Vec<u64> = seen.points.iter().map(|p| p.2).collect();
    assert_eq!(shown, xs, "{seen:?}");
}

#[test]
fn a_dead_nodes_writer_is_admitted_by_another_within_the_lease_and_keeps_what_was_acknowledged() {
    let mut c = Cluster::start(
        "cluster-node-dies",
        2,
        &["--on-duplicate", "reject", "--lease-time", "1s"],
    );
    assert_eq!(write_all(c.addr(0), "dies1", 0..20), 200);
    let mut open = Writer::open(c.addr(0), "dies1");
    assert!(open.points(20..30));
    std::thread::sleep(Duration::from_millis(300));
    c.nodes[0].0.sigkill();
    drop(open);
    // Node B refuses the token while A's lease lives (reject), then admits it.
    let killed = Instant::now();
    let admitted = loop {
        let status = write_all(c.addr(1), "dies1", 100..110);
        if status == 200 {
            break killed.elapsed();
        }
        assert_eq!(status, 423, "refused while the dead node's lease lives");
        assert!(killed.elapsed() < Duration::from_secs(5), "never admitted");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(admitted <= Duration::from_millis(1_500), "{admitted:?}");
    let xs: Vec<u64> = inspect(c.addr(1), "dies1")["window"]["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    // Every acknowledged point, once, in order; what A stored of the open request may follow.
    assert_eq!(xs[..20], (0..20).collect::<Vec<_>>()[..], "{xs:?}");
    let tail = xs.iter().position(|x| *x >= 100).unwrap();
    assert!(
        xs[20..tail]
            .iter()
            .enumerate()
            .all(|(i, x)| *x == 20 + i as u64),
        "{xs:?}"
    );
    assert_eq!(xs[tail..], (100..110).collect::<Vec<_>>()[..], "{xs:?}");
}

#[test]
fn nodes_refuse_writes_while_redis_is_down_and_resume_when_it_returns() {
    let mut c = Cluster::start("cluster-redis-restart", 2, &[]);
    let mut acked: Vec<u64> = (0..10).collect();
    assert_eq!(write_all(c.addr(0), "redis1", 0..10), 200);
    let on_b = Viewer::open(c.addr(1), "redis1");
    std::thread::sleep(Duration::from_millis(300));
    c.redis.sigkill();
    let refused = Instant::now();
    assert_eq!(
        write_all(c.addr(0), "redis1", 10..20),
        503,
        "nothing is acknowledged that cannot be stored"
    );
    assert!(
        refused.elapsed() < Duration::from_secs(6),
        "{:?}",
        refused.elapsed()
    );
    // A node with no writer says it is not ready too, within a lease refresh and a timeout.
    let idle = c.addr(1);
    let until = |status: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(idle, "/healthz").0 != status {
            assert!(
                Instant::now() < deadline,
                "/healthz never answered {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until(503);
    // B's viewer keeps its window and is told the node is reconnecting, then that it is back.
    let told = |what: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while on_b.seen().statuses != what {
            assert!(Instant::now() < deadline, "{:?}", on_b.seen().statuses);
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    told(&["reconnecting"]);
    assert_eq!(on_b.seen().points.len(), 10);
    c.redis.restart();
    until(200);
    told(&["reconnecting", "ok"]);
    // No node restarts: writes resume on both nodes once Redis answers again. A refused
    // batch is never sent again (it may or may not have been stored: 503 acknowledges nothing).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut next = 20;
    let mut resumed = 0;
    while resumed < 2 {
        let status = write_all(c.addr(resumed % 2), "redis1", next..next + 10);
        if status == 200 {
            acked.extend(next..next + 10);
            resumed += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "still {status} after Redis returned"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        next += 10;
    }
    let window = inspect(c.addr(0), "redis1");
    let xs: Vec<u64> = window["window"]["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(
        xs.windows(2).all(|w| w[0] < w[1]),
        "once each, in order: {xs:?}"
    );
    assert!(
        acked.iter().all(|x| xs.contains(x)),
        "every acknowledged point: {xs:?}"
    );
    assert!(xs.iter().all(|x| *x < next), "{xs:?}");
    let seen = on_b.wait_for(window["last_seq"].as_u64().unwrap());
    assert_eq!(
        seen.points.iter().map(|p| p.2).collect::<Vec<_>>(),
        xs,
        "{seen:?}"
    );
}

/// `POST /v2/plots` of a figure with one streamed trace of `token` on `addr`; its fid.
fn figure(addr: SocketAddr, token: &str) -> String {
    let body = serde_json::json!({
        "figure": {"data": [{"type": "scatter", "x": [], "y": [], "stream": {"token": token, "maxpoints": 50}}], "layout": {}},
        "filename": "cluster-figure"
    })
    .to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v2/plots HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap();
    json["file"]["fid"].as_str().unwrap().to_owned()
}

#[test]
fn a_figure_made_on_one_node_is_served_and_streamed_by_the_others() {
    let c = Cluster::start("cluster-figure", 3, &[]);
    let fid = figure(c.addr(0), "figtok1");
    let (user, n) = fid.split_once(':').unwrap();
    // Its page, from another node.
    let (status, page) = get(c.addr(1), &format!("/~{user}/{n}"));
    assert_eq!(status, 200, "{page}");
    // The figure set maxpoints 50: a writer on a third node streams into that window.
    assert_eq!(write_all(c.addr(2), "figtok1", 0..80), 200);
    let window = inspect(c.addr(1), "figtok1");
    assert_eq!(window["maxpoints"], 50, "{window}");
    let xs: Vec<u64> = window["window"]["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(xs, (30..80).collect::<Vec<_>>());
    // The listing of plots on the third node has it too.
    let (status, listing) = get(c.addr(2), "/");
    assert_eq!(status, 200);
    assert!(listing.contains(n), "{listing}");
    // A stream only node A has seen is in every node's listing.
    assert_eq!(write_all(c.addr(0), "listed1", 0..3), 200);
    let (status, streams) = get(c.addr(1), "/api/streams");
    assert_eq!(status, 200);
    assert!(streams.contains("\"listed1\""), "{streams}");
}

#[test]
fn a_viewer_on_another_node_gets_every_line_even_when_a_snapshot_covers_it() {
    // Windows of 10: the owner stores a snapshot every few lines, often in the same commit as
    // the lines it covers; the other node follows by lines and must still get each of them.
    let c = Cluster::start("cluster-snapshots", 2, &["--default-maxpoints", "10"]);
    assert_eq!(write_all(c.addr(0), "snaps1", 0..1), 200);
    let on_b = Viewer::open(c.addr(1), "snaps1");
    std::thread::sleep(Duration::from_millis(300));
    let mut w = Writer::open(c.addr(0), "snaps1");
    for x in 1..300 {
        assert!(w.points(x..x + 1));
        if x % 7 == 0 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    assert_eq!(w.close(), 200);
    let seen = on_b.wait_for(300);
    assert_eq!(seen.resets, 0, "resets: {:?}", seen.reasons);
    assert_eq!(consecutive(&seen).last(), Some(&299));
    assert_eq!(
        inspect(c.addr(1), "snaps1")["digest"],
        inspect(c.addr(0), "snaps1")["digest"]
    );
}

#[test]
fn a_token_that_may_not_stream_is_refused_before_anything_is_made_for_it() {
    let c = Cluster::start("cluster-registered", 2, &["--tokens", "registered"]);
    assert_eq!(write_all(c.addr(0), "unregistered1", 0..3), 404);
    assert_eq!(
        c.redis
            .command(&["HEXISTS", "plotstream:owner", "unregistered1"]),
        ":0"
    );
    assert_eq!(
        c.redis
            .command(&["HEXISTS", "plotstream:meta", "unregistered1"]),
        ":0"
    );
    // A token registered on node B streams on node A.
    let mut s = TcpStream::connect(c.addr(1)).unwrap();
    write!(
        s,
        "POST /api/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    let body: serde_json::Value =
        serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap();
    let token = body["tokens"][0].as_str().unwrap().to_owned();
    assert_eq!(write_all(c.addr(0), &token, 0..3), 200);
}

/// The value of counter `name` in `addr`'s `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn lines_reach_another_node_live_and_the_stored_lines_fill_what_the_live_path_lost() {
    let c = Cluster::start("cluster-live", 2, &[]);
    assert_eq!(write_all(c.addr(0), "live1", 0..1), 200);
    let on_b = Viewer::open(c.addr(1), "live1");
    // B follows and subscribes; a generation nobody followed is published again after 200 ms.
    std::thread::sleep(Duration::from_millis(500));
    let mut w = Writer::open(c.addr(0), "live1");
    for x in 1..200 {
        assert!(w.points(x..x + 1));
        std::thread::sleep(Duration::from_millis(1));
    }
    on_b.wait_for(199);
    let live = metric(c.addr(1), "plotstream_live_lines_in_total");
    assert!(live > 0, "B applied lines from the live path");
    assert!(metric(c.addr(0), "plotstream_live_lines_out_total") >= live);
    // Every subscriber's connection dropped: what is published until they are back is lost.
    c.redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for x in 200..400 {
        assert!(w.points(x..x + 1));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(w.close(), 200);
    // x is seq - 1: x = 399 is seq 400 (waiting for 399 raced the last stored poll).
    let seen = on_b.wait_for(400);
    assert_eq!(seen.resets, 0, "resets: {:?}", seen.reasons);
    assert_eq!(consecutive(&seen), (0..400).collect::<Vec<_>>());
    // B was without its subscription for at least 200 ms of these lines: the stored lines
    // brought some of them.
    assert!(metric(c.addr(1), "plotstream_live_lines_in_total") < 399);
}

#[test]
fn writers_taking_a_token_over_on_one_node_get_200_or_423_never_503() {
    // Each writer that leaves lets its node's lease go once its lines are stored; the next
    // writer, admitted meanwhile, must never find the copy let go of (a 503 for its lines).
    let c = Cluster::start("cluster-churn", 1, &["--new-streams-per-peer", "0"]);
    let addr = c.addr(0);
    let threads: Vec<_> = (0..16u64)
        .map(|k| {
            std::thread::spawn(move || {
                let token = format!("churn{}", k % 2);
                (0..150u64)
                    .map(|i| write_all(addr, &token, i * 3..i * 3 + 3))
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 423),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
}

/// docs/history.md on Redis: a stream's history is written by its owner, read from any node,
/// and goes on from where it was when another node takes the stream over.
#[test]
fn history_is_kept_in_redis_read_on_any_node_and_goes_on_after_a_takeover() {
    let c = Cluster::start("cluster-history", 2, &[]);
    let xs = |i: usize| -> Vec<u64> {
        let (status, body) = get(c.addr(i), "/api/streams/hist1/history?by=n&format=ndjson");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["x"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(write_all(c.addr(0), "hist1", 0..3000), 200);
    assert_eq!(xs(1), (0..3000).collect::<Vec<_>>(), "read on another node");
    assert_eq!(write_all(c.addr(1), "hist1", 3000..5000), 200);
    assert_eq!(
        xs(0),
        (0..5000).collect::<Vec<_>>(),
        "the new owner went on from the stored history"
    );
    let (status, body) = get(c.addr(0), "/api/streams/hist1/history?by=x&max_points=40");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let points = v["points"].as_array().unwrap();
    assert!(points.len() <= 40);
    assert_eq!(points[0][3], 0);
    assert_eq!(points[points.len() - 1][3], 4999);
}
