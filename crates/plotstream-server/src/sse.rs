//! Server-Sent Events for viewers (RELIABILITY.md §4.4): `snapshot` first, then `update`
//! events coalesced by `interval`, `reset` + a fresh snapshot when the viewer lagged, and
//! `reset` (shutdown) at the end. Every `data:` line is one JSON text whose CR and LF are
//! escaped by construction, so an event can never be split (C18).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use plotstream_proto::head::RequestHead;
use plotstream_proto::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::close_gracefully;
use crate::http::Response;
use crate::store::{Fanout, Subscription, ViewerMsg};
use crate::Shared;

/// Serves one viewer until it leaves, lags three times in 60 s, stalls (L36) or shutdown.
pub async fn serve(mut stream: TcpStream, head: &RequestHead, token: String, shared: Arc<Shared>) {
    let interval = head
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("interval=")))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_millis(50), Duration::from_millis);
    let mut sub = match shared.store.subscribe(&token) {
        Ok(Some(sub)) => sub,
        Ok(None) => {
            let r = Response::json(404, r#"{"errors":[{"message":"Not found"}]}"#);
            close_gracefully(stream, &r.encode(), true, &shared).await;
            return;
        }
        Err(status) => {
            let r = Response::error(status);
            close_gracefully(stream, &r.encode(), true, &shared).await;
            return;
        }
    };
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n",
    );
    snapshot_event(&sub, &mut out);
    let mut pending: Vec<Arc<Fanout>> = Vec::new();
    let mut last_flush: Option<Instant> = None;
    let mut lag_times: Vec<Instant> = Vec::new();
    let mut shutdown = shared.shutdown.clone();
    let mut keepalive = tokio::time::interval(shared.config.keepalive);
    keepalive.tick().await;
    let mut probe = [0u8; 64];
    loop {
        if !out.is_empty() {
            if !write(&mut stream, &out, &shared).await {
                break;
            }
            out.clear();
        }
        if sub.lagged.load(Ordering::Acquire) {
            // L35: never a silent gap. Drop what is queued, say so, resubscribe.
            let now = Instant::now();
            lag_times.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
            lag_times.push(now);
            shared.metrics.viewer_reset("lagged");
            if lag_times.len() >= 3 {
                shared
                    .metrics
                    .viewers_dropped
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
            pending.clear();
            let missed = sub.last_seq;
            match shared.store.subscribe(&token) {
                Ok(Some(fresh)) => {
                    event(
                        &mut out,
                        "reset",
                        &sub.epoch,
                        fresh.last_seq,
                        &format!(
                            "{{\"epoch\":\"{}\",\"reason\":\"lagged\",\"after_seq\":{missed}}}",
                            sub.epoch
                        ),
                    );
                    sub = fresh;
                    snapshot_event(&sub, &mut out);
                }
                _ => break,
            }
            continue;
        }
        let flush_at = match (pending.is_empty(), last_flush) {
            (true, _) => None,
            (false, Some(t)) => Some(t + interval),
            (false, None) => Some(Instant::now()),
        };
        let flush_sleep = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = sub.rx.recv() => match msg {
                Some(ViewerMsg::Update(u)) => {
                    sub.last_seq = u.seq;
                    pending.push(u);
                    while let Ok(ViewerMsg::Update(u)) = sub.rx.try_recv() {
                        sub.last_seq = u.seq;
                        pending.push(u);
                    }
                    // The first update after a quiet period never waits.
                    let quiet = last_flush.is_none_or(|t| t.elapsed() >= interval);
                    if interval.is_zero() || quiet {
                        flush(&sub.epoch, &mut pending, &mut out);
                        last_flush = Some(Instant::now());
                    }
                }
                Some(ViewerMsg::Reset(reason)) => {
                    flush(&sub.epoch, &mut pending, &mut out);
                    event(&mut out, "reset", &sub.epoch, sub.last_seq, &format!("{{\"epoch\":\"{}\",\"reason\":\"{reason}\"}}", sub.epoch));
                    let _ = write(&mut stream, &out, &shared).await;
                    break;
                }
                None => break,
            },
            () = flush_sleep => {
                flush(&sub.epoch, &mut pending, &mut out);
                last_flush = Some(Instant::now());
            }
            _ = keepalive.tick() => out.extend_from_slice(b": keepalive\n\n"),
            res = stream.read(&mut probe) => {
                // A viewer sends nothing after its head; EOF or an error means it left.
                if matches!(res, Ok(0) | Err(_)) {
                    break;
                }
            }
            _ = shutdown.changed() => {
                flush(&sub.epoch, &mut pending, &mut out);
                event(&mut out, "reset", &sub.epoch, sub.last_seq, &format!("{{\"epoch\":\"{}\",\"reason\":\"shutdown\"}}", sub.epoch));
                let _ = write(&mut stream, &out, &shared).await;
                break;
            }
        }
    }
    let _ = stream.shutdown().await;
    let _ = Status::OK;
}

async fn write(stream: &mut TcpStream, bytes: &[u8], shared: &Shared) -> bool {
    // L36: a viewer that takes nothing for 10 s is dropped.
    match tokio::time::timeout(shared.config.write_timeout, stream.write_all(bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            shared
                .metrics
                .viewers_dropped
                .fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

fn snapshot_event(sub: &Subscription, out: &mut Vec<u8>) {
    event(out, "snapshot", &sub.epoch, sub.last_seq, &sub.snapshot);
}

fn flush(epoch: &str, pending: &mut Vec<Arc<Fanout>>, out: &mut Vec<u8>) {
    let (Some(first), Some(last)) = (pending.first(), pending.last()) else {
        return;
    };
    let (from, to) = (first.seq, last.seq);
    let mut data =
        format!("{{\"epoch\":\"{epoch}\",\"from_seq\":{from},\"to_seq\":{to},\"data\":[");
    for (i, u) in pending.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str(&String::from_utf8_lossy(&u.json));
    }
    data.push_str("]}");
    event(out, "update", epoch, to, &data);
    pending.clear();
}

fn event(out: &mut Vec<u8>, kind: &str, epoch: &str, seq: u64, data: &str) {
    debug_assert!(!data.contains('\n') && !data.contains('\r'));
    out.extend_from_slice(format!("event: {kind}\nid: {epoch}:{seq}\ndata: {data}\n\n").as_bytes());
}
