//! The load generator against the plotstream server on port 0, in small bounded runs: a healthy
//! server loses nothing (in every client's bytes), a proxy that drops and repeats lines is
//! caught exactly, and a proxy that delays lines shows up in the write→viewer latency. No test
//! sleeps to wait for an outcome, and timing bounds are floors the injected fault guarantees.
//! Several `--target`s are two recording proxies in front of one server: each proxy is a node,
//! and what it carried shows where each stream's writer, viewer and inspection went.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plotstream_load::load::{measure, Assertion, LoadArgs, Report, TargetLoad, ViewersOn};
use plotstream_load::Error;
use plotstream_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), plotstream_server::durable::StorageError>>,
}

impl Server {
    async fn start() -> Server {
        let listener = plotstream_server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let config = Config {
            linger: Duration::from_millis(200),
            drain: Duration::from_secs(3),
            max_connections_per_peer: 0,
            ..Config::default()
        };
        let task = tokio::spawn(plotstream_server::run(vec![listener], config, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn load(target: SocketAddr, extra: &[&str]) -> Report {
    let url = format!("http://{target}");
    let mut argv = vec!["--target", &url];
    argv.extend_from_slice(extra);
    load_args(&argv).await.unwrap()
}

/// A verified, quiet run with `argv` (which names the targets).
async fn load_args(argv: &[&str]) -> Result<Report, Error> {
    let mut argv = argv.to_vec();
    argv.extend_from_slice(&["--quiet", "--verify"]);
    let args = LoadArgs::from_args(argv).unwrap();
    let run = measure(&args, std::future::pending());
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a bounded run ends within 60 s")
}

#[track_caller]
fn assert_clean(r: &Report) {
    let scheduled = r.points_scheduled.unwrap();
    assert_eq!(r.points_sent, scheduled, "{}", r.to_json());
    assert_eq!(r.points_verified, Some(scheduled), "{}", r.to_json());
    for (name, v) in [
        ("lost", r.lost),
        ("duplicated", r.duplicated),
        ("out_of_order", r.out_of_order),
        ("corrupted", r.corrupted),
        ("seq_gaps", r.seq_gaps),
        ("digest_mismatches", r.digest_mismatches),
        ("count_mismatches", r.count_mismatches),
    ] {
        assert_eq!(v, Some(0), "{name}: {}", r.to_json());
    }
    assert!(r.errors_by_status.is_empty(), "{}", r.to_json());
    assert_eq!(r.send_latency_ms.map(|p| p.count), Some(scheduled));
    // An Arduino stream exists only after its first line, so its viewer subscribes late and
    // sees the first points in its snapshot, without a latency sample.
    let e2e = r.e2e_latency_ms.map_or(0, |p| p.count);
    if r.client == "arduino" {
        assert!(e2e <= scheduled && e2e >= scheduled / 2, "{}", r.to_json());
    } else {
        assert_eq!(e2e, scheduled, "{}", r.to_json());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_server_loses_nothing() {
    let server = Server::start().await;
    // 4 streams × 200 points/s for 1 s.
    let r = load(
        server.addr,
        &["--streams", "4", "--rate", "800", "--duration", "1s"],
    )
    .await;
    assert_eq!(r.points_scheduled, Some(800));
    assert_clean(&r);
    for expr in ["lost=0", "duplicated=0", "achieved_rate>=0.5*offered_rate"] {
        assert_eq!(Assertion::parse(expr).unwrap().check(&r), None, "{expr}");
    }
    // One target: the report is the one from before several targets.
    assert_eq!(r.target, format!("http://{}", server.addr));
    assert_eq!(r.viewers_on, None);
    let json = r.to_json();
    assert!(
        !json.contains("\"targets\"") && !json.contains("viewers_on"),
        "{json}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_spread_over_targets_and_viewers_cross_to_the_other() {
    let server = Server::start().await;
    let a = Proxy::start(server.addr, Fault::None).await;
    let b = Proxy::start(server.addr, Fault::None).await;
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    // 4 streams × 100 points/s for 1 s, over two targets.
    let r = load_args(&[
        "--target",
        &url_a,
        "--target",
        &url_b,
        "--viewers-on",
        "other",
        "--token-prefix",
        PREFIX,
        "--streams",
        "4",
        "--rate",
        "400",
        "--duration",
        "1s",
    ])
    .await
    .unwrap();
    assert_eq!(r.points_scheduled, Some(400));
    assert_clean(&r);
    // Stream i's writer on target i % 2, its viewer and inspection on (i + 1) % 2.
    assert_eq!(a.streams(Kind::Writer), [0, 2]);
    assert_eq!(b.streams(Kind::Writer), [1, 3]);
    assert_eq!(a.streams(Kind::Viewer), [1, 3]);
    assert_eq!(b.streams(Kind::Viewer), [0, 2]);
    assert_eq!(a.streams(Kind::Inspection), [1, 3]);
    assert_eq!(b.streams(Kind::Inspection), [0, 2]);
    assert_eq!(r.target, format!("{url_a},{url_b}"));
    assert_eq!(r.viewers_on, Some(ViewersOn::Other));
    let placed = |url: &str| TargetLoad {
        url: url.to_owned(),
        writers: 2,
        viewers: 2,
    };
    assert_eq!(r.targets, [placed(&url_a), placed(&url_b)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_stay_with_their_writer_by_default() {
    let server = Server::start().await;
    let a = Proxy::start(server.addr, Fault::None).await;
    let b = Proxy::start(server.addr, Fault::None).await;
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let r = load_args(&[
        "--target",
        &url_a,
        "--target",
        &url_b,
        "--token-prefix",
        PREFIX,
        "--streams",
        "3",
        "--rate",
        "300",
        "--duration",
        "500ms",
    ])
    .await
    .unwrap();
    assert_clean(&r);
    for kind in [Kind::Writer, Kind::Viewer, Kind::Inspection] {
        assert_eq!(a.streams(kind), [0, 2], "{kind:?}");
        assert_eq!(b.streams(kind), [1], "{kind:?}");
    }
    assert_eq!(r.viewers_on, Some(ViewersOn::Same));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_other_with_one_target_is_a_usage_error() {
    let r = load_args(&["--target", "http://127.0.0.1:9", "--viewers-on", "other"]).await;
    assert!(
        matches!(&r, Err(Error::Usage(m)) if m.contains("--viewers-on other needs at least two --target")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_flavour_is_verified() {
    let server = Server::start().await;
    for (client, k) in [
        ("python", "1"),
        ("node", "1"),
        ("arduino", "1"),
        ("raw", "10"),
    ] {
        let r = load(
            server.addr,
            &[
                "--streams",
                "2",
                "--rate",
                "400",
                "--duration",
                "500ms",
                "--client",
                client,
                "--points-per-chunk",
                k,
            ],
        )
        .await;
        assert_eq!(r.points_scheduled, Some(200), "{client}: {}", r.to_json());
        assert_eq!(r.client, client);
        assert_clean(&r);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_repeated_lines_are_counted() {
    let server = Server::start().await;
    let proxy = Proxy::start(
        server.addr,
        Fault::Mangle {
            drop_every: 10,
            repeat_every: 7,
        },
    )
    .await;
    let r = load(
        proxy.addr,
        &["--streams", "2", "--rate", "200", "--duration", "1s"],
    )
    .await;
    let dropped = proxy.dropped.load(Ordering::Relaxed);
    let repeated = proxy.repeated.load(Ordering::Relaxed);
    assert_eq!(r.points_sent, 200);
    assert_eq!((dropped, repeated), (20, 26), "100 lines per stream");
    assert_eq!(r.lost, Some(dropped), "{}", r.to_json());
    assert_eq!(r.duplicated, Some(repeated), "{}", r.to_json());
    assert_eq!(r.points_verified, Some(200 - dropped));
    assert_eq!(r.out_of_order, Some(0));
    assert_eq!(r.seq_gaps, Some(0), "the server's own seqs have no gap");
    assert_eq!(r.count_mismatches, Some(2));
    let failure = Assertion::parse("lost=0").unwrap().check(&r);
    assert_eq!(
        failure.as_deref(),
        Some("lost=0: lost is 20 (expected = 0)")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_delay_shows_in_write_to_viewer_latency() {
    let server = Server::start().await;
    let delay = Duration::from_millis(200);
    let proxy = Proxy::start(server.addr, Fault::Delay(delay)).await;
    let r = load(
        proxy.addr,
        &["--streams", "2", "--rate", "100", "--duration", "1s"],
    )
    .await;
    assert_clean(&r);
    let e2e = r.e2e_latency_ms.unwrap();
    // Every line reaches the server at least 200 ms after it was written, which is after its
    // intended time: no point can be seen sooner.
    assert!(e2e.p50 >= 200.0, "{e2e:?}");
    // The proxy's delay is the server side's share, whatever the generator's own lateness.
    let share = r.server_latency_ms.unwrap();
    assert!(share.p50 >= 200.0, "{share:?}");
    assert!(e2e.max < 10_000.0, "{e2e:?}");
    assert!(
        Assertion::parse("e2e.p50<200ms")
            .unwrap()
            .check(&r)
            .is_some(),
        "{e2e:?}"
    );
    server.stop().await;
}

/// What the proxy does to ingest bodies (other requests pass untouched).
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Drop every `drop_every`-th data line of a connection, and send every `repeat_every`-th
    /// (of those not dropped) twice.
    Mangle { drop_every: u64, repeat_every: u64 },
    /// Forward every chunk this long after it arrived, in order.
    Delay(Duration),
    /// Forward everything as is.
    None,
}

/// What a request to a proxy was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `POST /`: a writer.
    Writer,
    /// `GET /api/streams/{token}/events`: a viewer.
    Viewer,
    /// `GET /api/streams/{token}`: the inspection read.
    Inspection,
}

/// The token prefix of the runs whose requests the proxies attribute to streams.
const PREFIX: &str = "xnode";

struct Proxy {
    addr: SocketAddr,
    dropped: Arc<AtomicU64>,
    repeated: Arc<AtomicU64>,
    /// Each request's kind and the index of the stream its head names (tokens `PREFIX` + index).
    requests: Requests,
}

type Requests = Arc<Mutex<Vec<(Kind, usize)>>>;

impl Proxy {
    async fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let repeated = Arc::new(AtomicU64::new(0));
        let requests = Requests::default();
        let counts = (dropped.clone(), repeated.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counts = counts.clone();
                tokio::spawn(async move {
                    let _ = relay(client, upstream, fault, counts).await;
                });
            }
        });
        Proxy {
            addr,
            dropped,
            repeated,
            requests,
        }
    }

    /// The streams whose requests of `kind` came through this proxy.
    fn streams(&self, kind: Kind) -> Vec<usize> {
        let requests = self.requests.lock().unwrap();
        let set: BTreeSet<usize> = requests
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, s)| *s)
            .collect();
        set.into_iter().collect()
    }
}

/// What a complete request head is for, and which stream it names (`PREFIX` + 5 digits).
fn classify(head: &[u8]) -> Option<(Kind, usize)> {
    let head = String::from_utf8_lossy(head);
    let request_line = head.lines().next()?;
    let kind = if request_line.starts_with("POST / ") {
        Kind::Writer
    } else if request_line.starts_with("GET /api/streams/") && request_line.contains("/events") {
        Kind::Viewer
    } else if request_line.starts_with("GET /api/streams/") {
        Kind::Inspection
    } else {
        return None;
    };
    let at = head.find(PREFIX)? + PREFIX.len();
    let stream_idx = head.get(at..at + 5)?.parse().ok()?;
    Some((kind, stream_idx))
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    (dropped, repeated, requests): (Arc<AtomicU64>, Arc<AtomicU64>, Requests),
) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    let _ = server.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    // The whole request head, to record what it is for.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if let Some(request) = classify(&buf) {
        requests.lock().unwrap().push(request);
    }
    if !buf.starts_with(b"POST") {
        server.write_all(&buf).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, server_wr) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
    });
    // Forwarding goes through one ordered queue; with a delay each piece waits its turn.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let forwarder = tokio::spawn(async move {
        let mut server_wr = server_wr;
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if server_wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = server_wr.shutdown().await;
    });
    let delay = match fault {
        Fault::Delay(d) => d,
        Fault::Mangle { .. } | Fault::None => Duration::ZERO,
    };
    let send = |bytes: Vec<u8>| {
        let _ = tx.send((tokio::time::Instant::now() + delay, bytes));
    };
    // The head, as is.
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            send(buf.drain(..end + 4).collect());
            break;
        }
        let n = client_rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // Chunks, one at a time: `size CRLF data CRLF`.
    let mut line_idx: u64 = 0;
    let mut passthrough = false;
    loop {
        while !passthrough {
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let size_text = String::from_utf8_lossy(&buf[..eol]).trim().to_owned();
            if size_text.is_empty() {
                send(buf.drain(..eol + 2).collect());
                continue;
            }
            let size = usize::from_str_radix(&size_text, 16).unwrap_or(0);
            if size == 0 {
                passthrough = true;
                break;
            }
            if buf.len() < eol + 2 + size + 2 {
                break;
            }
            let piece: Vec<u8> = buf.drain(..eol + 2 + size + 2).collect();
            let is_heartbeat = size == 1;
            if let (
                Fault::Mangle {
                    drop_every,
                    repeat_every,
                },
                false,
            ) = (fault, is_heartbeat)
            {
                line_idx += 1;
                if line_idx.is_multiple_of(drop_every) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if line_idx.is_multiple_of(repeat_every) {
                    repeated.fetch_add(1, Ordering::Relaxed);
                    send(piece.clone());
                }
            }
            send(piece);
        }
        if passthrough && !buf.is_empty() {
            send(std::mem::take(&mut buf));
        }
        let n = client_rd.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    drop(tx);
    let _ = forwarder.await;
    Ok(())
}
