//! The client against real sockets: the plotstream server on port 0 with short timers, and
//! tiny fake endpoints that end connections the ways real servers do. No test sleeps to wait
//! for an outcome: each one waits for the client's events or the server's answer.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use plotstream_client::{Backoff, Client, ClientEvent, Options};
use plotstream_proto::encode::Num;
use plotstream_proto::Status;
use plotstream_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), plotstream_server::durable::StorageError>>,
}

impl Server {
    async fn start(config: Config) -> Server {
        let listener = plotstream_server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(plotstream_server::run(vec![listener], config, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn inspect(&self, token: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(format!("GET /api/streams/{token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        serde_json::from_str(body).unwrap()
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

fn quick() -> Config {
    Config {
        linger: Duration::from_millis(200),
        drain: Duration::from_secs(3),
        ..Config::default()
    }
}

/// Waits (bounded) for the first event matching `pred`, returning every event seen until then.
async fn until(
    events: &mut broadcast::Receiver<ClientEvent>,
    mut pred: impl FnMut(&ClientEvent) -> bool,
) -> Vec<ClientEvent> {
    let mut seen = Vec::new();
    let wait = async {
        loop {
            let e = events.recv().await.unwrap();
            let done = pred(&e);
            seen.push(e);
            if done {
                break;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_err()
    {
        panic!("event not seen within 10 s; saw {seen:?}");
    }
    seen
}

/// A fake endpoint: `handle(connection_idx, socket)` for each accepted connection.
async fn fake<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(usize, TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut conn_idx = 0;
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(conn_idx, s));
            conn_idx += 1;
        }
    });
    addr
}

/// Reads until `done(bytes so far)`, or EOF.
async fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !done(&buf) {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn ok_response(n_points: u64) -> Vec<u8> {
    let mut out = Vec::new();
    plotstream_proto::status::encode_response(Status::OK, n_points, &mut out);
    out
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_open() {
    let mut config = quick();
    config.limits.idle = Duration::from_millis(400);
    let server = Server::start(config).await;
    let options = Options {
        heartbeat: Some(Duration::from_millis(50)),
        ..Options::default()
    };
    let client = Client::connect(&server.url(), "hbeat00001", options)
        .await
        .unwrap();
    let mut events = client.events();
    client.write_point(Num::Int(1), Num::Int(1)).await.unwrap();
    // Twelve automatic heartbeats take at least 600 ms: longer than the 400 ms idle timeout.
    let mut n_heartbeats = 0;
    let seen = until(&mut events, |e| {
        n_heartbeats += usize::from(matches!(e, ClientEvent::Heartbeat));
        n_heartbeats == 12
    })
    .await;
    assert!(
        seen.iter()
            .all(|e| matches!(e, ClientEvent::Heartbeat | ClientEvent::Connected { .. })),
        "{seen:?}"
    );
    assert_eq!(server.inspect("hbeat00001").await["writer_connected"], true);
    let closed = client.close().await.unwrap();
    assert_eq!(closed.status, Some(Status::OK));
    assert_eq!(closed.stats.n_points_acknowledged, 1);
    assert_eq!(closed.stats.n_reconnects, 0);
    assert!(closed.stats.n_heartbeats >= 12);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_timeout_is_reported_and_the_client_reconnects() {
    let mut config = quick();
    config.limits.idle = Duration::from_millis(600);
    let server = Server::start(config).await;
    let options = Options {
        heartbeat: None,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(5),
            max_retries: None,
        },
        ..Options::default()
    };
    let client = Client::connect(&server.url(), "idle000001", options)
        .await
        .unwrap();
    let mut events = client.events();
    client.write_point(Num::Int(1), Num::Int(10)).await.unwrap();
    let seen = until(&mut events, |e| {
        matches!(e, ClientEvent::Connected { n_connects: 2 })
    })
    .await;
    assert_eq!(
        seen,
        [
            ClientEvent::Disconnected {
                status: Some(Status::REQUEST_TIMEOUT),
                n_points_sent: 1,
                n_points_accepted: None
            },
            ClientEvent::Reconnecting {
                attempt: 1,
                delay: Duration::from_millis(10)
            },
            ClientEvent::Connected { n_connects: 2 },
        ]
    );
    client.write_point(Num::Int(2), Num::Int(20)).await.unwrap();
    let closed = client.close().await.unwrap();
    assert_eq!(closed.status, Some(Status::OK));
    assert_eq!(closed.stats.n_reconnects, 1);
    assert_eq!(closed.stats.n_points, 2);
    let st = server.inspect("idle000001").await;
    assert_eq!(st["last_seq"], 2);
    assert_eq!(st["window"]["x"], serde_json::json!([1, 2]));
    server.stop().await;
}

#[tokio::test]
async fn points_a_200_did_not_accept_are_resent_on_the_next_connection() {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let addr = fake(move |conn_idx, mut s| {
        let lines_tx = lines_tx.clone();
        async move {
            if conn_idx == 0 {
                // Take three points, acknowledge two, end the stream (the hosted flap).
                read_until(&mut s, |b| count(b, b"}\n") >= 3).await;
                s.write_all(&ok_response(2)).await.unwrap();
            } else {
                let body = read_until(&mut s, |b| b.ends_with(b"0\r\n\r\n")).await;
                let _ = lines_tx.send(body);
                s.write_all(&ok_response(2)).await.unwrap();
            }
            let _ = s.shutdown().await;
            read_until(&mut s, |_| false).await;
        }
    })
    .await;
    let options = Options {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            ..Backoff::default()
        },
        ..Options::default()
    };
    let client = Client::connect(&format!("http://{addr}"), "replay0001", options)
        .await
        .unwrap();
    let mut events = client.events();
    for i in 1..=3 {
        client.write_point(Num::Int(i), Num::Int(i)).await.unwrap();
    }
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Replayed { .. })).await;
    assert_eq!(
        seen.first(),
        Some(&ClientEvent::Disconnected {
            status: Some(Status::OK),
            n_points_sent: 3,
            n_points_accepted: Some(2)
        })
    );
    assert_eq!(seen.last(), Some(&ClientEvent::Replayed { n_points: 1 }));
    client.write_point(Num::Int(4), Num::Int(4)).await.unwrap();
    let closed = client.close().await.unwrap();
    assert_eq!(closed.status, Some(Status::OK));
    assert_eq!(closed.stats.n_points_replayed, 1);
    assert_eq!(closed.stats.n_points_acknowledged, 4);
    let body = String::from_utf8(lines_rx.recv().await.unwrap()).unwrap();
    let points: Vec<&str> = body.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(points, [r#"{"x":3,"y":3}"#, r#"{"x":4,"y":4}"#], "{body}");
}

#[tokio::test]
async fn backoff_doubles_while_connections_keep_failing_then_gives_up() {
    // Accepts and hangs up at once: no response, every time.
    let addr = fake(|_, s| async move { drop(s) }).await;
    let options = Options {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(2),
            max_retries: Some(3),
        },
        ..Options::default()
    };
    let client = Client::connect(&format!("http://{addr}"), "flaky00001", options)
        .await
        .unwrap();
    let mut events = client.events();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Ended { .. })).await;
    let delays: Vec<u128> = seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Reconnecting { delay, .. } => Some(delay.as_millis()),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [10, 20, 40], "{seen:?}");
    assert_eq!(seen.last(), Some(&ClientEvent::Ended { status: None }));
    assert!(client.is_ended());
    let err = client.write_point(Num::Int(1), Num::Int(1)).await;
    assert_eq!(err, Err(plotstream_client::Error::Ended(None)));
    let stats = client.stats();
    assert_eq!(stats.n_connects, 4);
    assert_eq!(stats.n_reconnects, 3);
}

#[tokio::test]
async fn a_status_that_repeats_ends_the_client() {
    let server = Server::start(Config {
        store: plotstream_server::StoreConfig {
            tokens_open: false,
            ..plotstream_server::StoreConfig::default()
        },
        ..quick()
    })
    .await;
    let client = Client::connect(&server.url(), "unknown001", Options::default())
        .await
        .unwrap();
    let mut events = client.events();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Ended { .. })).await;
    assert_eq!(
        seen.last(),
        Some(&ClientEvent::Ended {
            status: Some(Status::NOT_FOUND)
        })
    );
    assert!(!seen
        .iter()
        .any(|e| matches!(e, ClientEvent::Reconnecting { .. })));
    let err = client.write_point(Num::Int(1), Num::Int(1)).await;
    assert_eq!(
        err,
        Err(plotstream_client::Error::Ended(Some(Status::NOT_FOUND)))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refused_first_connect_is_an_error() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let err = Client::connect(&format!("http://{addr}"), "refused001", Options::default())
        .await
        .unwrap_err();
    assert!(matches!(err, plotstream_client::Error::Connect(_)), "{err}");
    let err = Client::connect("ftp://x", "t", Options::default())
        .await
        .unwrap_err();
    assert!(matches!(err, plotstream_client::Error::Url(_)));
    let err = Client::connect(&format!("http://{addr}"), "bad token", Options::default())
        .await
        .unwrap_err();
    assert_eq!(err, plotstream_client::Error::Token);
}

#[tokio::test]
async fn a_response_that_trickles_in_is_read_whole() {
    let addr = fake(|_, mut s| async move {
        let _ = s.set_nodelay(true);
        read_until(&mut s, |b| b.ends_with(b"0\r\n\r\n")).await;
        let mut response = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        response.extend_from_slice(&ok_response(2));
        for b in response {
            s.write_all(&[b]).await.unwrap();
        }
        let _ = s.shutdown().await;
        read_until(&mut s, |_| false).await;
    })
    .await;
    let client = Client::connect(&format!("http://{addr}"), "trickle001", Options::default())
        .await
        .unwrap();
    client.write_line(r#"{"x":1,"y":1}"#).await.unwrap();
    client.write_line(r#"{"x":2,"y":2}"#).await.unwrap();
    let closed = client.close().await.unwrap();
    assert_eq!(closed.status, Some(Status::OK));
    assert_eq!(closed.stats.n_points_acknowledged, 2);
    assert_eq!(closed.stats.n_points_replayed, 0);
}

/// L56: a server that never finishes its response ends the connection once the client has
/// held that much of it; the client neither waits for the rest nor buffers it.
#[tokio::test]
async fn an_endless_response_ends_the_connection() {
    let addr = fake(|_, mut s| async move {
        read_until(&mut s, |b| b.ends_with(b"\r\n\r\n")).await;
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n{\"points\":";
        if s.write_all(head).await.is_err() {
            return;
        }
        let noise = [b'7'; 4096];
        while s.write_all(&noise).await.is_ok() {}
    })
    .await;
    let options = Options {
        backoff: Backoff {
            max_retries: Some(0),
            ..Backoff::default()
        },
        ..Options::default()
    };
    let client = Client::connect(&format!("http://{addr}"), "endless001", options)
        .await
        .unwrap();
    let mut events = client.events();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Ended { .. })).await;
    assert_eq!(
        seen.first(),
        Some(&ClientEvent::Disconnected {
            status: Some(Status::OK),
            n_points_sent: 0,
            n_points_accepted: None
        }),
        "{seen:?}"
    );
    assert_eq!(client.stats().n_points_acknowledged, 0);
}
