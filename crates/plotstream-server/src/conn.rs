//! One connection: drive `Ingest` over a socket, or hand the request to the HTTP routes.
//!
//! The loop is quinn's `ConnectionDriver` shape: read → `handle_input` → drain `poll_event`
//! → write `poll_transmit` → wait for the socket, the machine's deadline, a takeover or
//! shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use plotstream_proto::{Event, Ingest, IngestConfig, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;

use crate::faults::{self, ConnFaults, FaultKind, LineAction};
use crate::transport::{close_gracefully, Io};
use crate::Shared;

/// Serves one accepted connection to the end: counts it (L10, L11, by its real address on
/// every transport), completes the TLS handshake for a TLS listener, then drives it.
pub async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    shared: Arc<Shared>,
) {
    let m = &shared.metrics;
    m.connections_total.fetch_add(1, Ordering::Relaxed);
    // Undone on drop, whichever way this task ends: no path can leave the counts wrong.
    let open = crate::guard::ConnGuard::new(&shared, peer.ip());
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(&tcp);
    let _ =
        sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
    let limit = shared.config.max_connections_per_peer;
    let too_many = open.n_open > shared.config.max_connections as u64;
    let refused = too_many || (limit > 0 && open.n_from_peer > limit);
    // A refused TLS peer gets its 503 too, but only a short handshake to get it.
    let handshake = if refused {
        Duration::from_secs(1).min(shared.config.limits.head_deadline)
    } else {
        shared.config.limits.head_deadline
    };
    let stream = match Io::accept(tcp, tls.as_ref(), handshake).await {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            return;
        }
    };
    if refused {
        // L10, L11: refuse fast, with a short linger, so the refusal costs little.
        m.limit_breach(if too_many { "L10" } else { "L11" });
        m.response(503);
        let mut out = Vec::new();
        plotstream_proto::status::encode_response(Status::UNAVAILABLE, 0, &mut out);
        let refuse = Box::pin(close_gracefully(stream, &out, true, &shared));
        let _ = tokio::time::timeout(Duration::from_millis(100), refuse).await;
    } else {
        drive(stream, peer, &shared).await;
    }
}

async fn drive(mut stream: Io, peer: SocketAddr, shared: &Arc<Shared>) {
    let config = IngestConfig {
        limits: shared.config.limits.clone(),
        lenient_lines: shared.config.lenient_lines,
    };
    let mut ingest = Ingest::new(config, shared.now());
    let conn = shared.store.new_conn_from(Some(peer.ip()));
    let mut shutdown = shared.shutdown.clone();
    let mut out = Vec::new();
    let mut eof = false;
    let mut faults = ConnFaults::new(&shared.config.faults, shared.config.seed, conn.id);
    // The token the simulator scopes faults by: the head's, else the first line's.
    let mut fault_token: Option<String> = None;
    let mut stall_until: Option<Duration> = None;
    // Lines held by a `delay` fault: (due, token, update), in arrival order.
    let mut held: std::collections::VecDeque<(
        Duration,
        plotstream_proto::Token,
        plotstream_proto::Update,
    )> = std::collections::VecDeque::new();
    // Flaps end writers only, so the timer starts once a head is admitted.
    let mut flap_at: Option<Duration> = None;
    loop {
        let now = shared.now();
        // A stall withholds everything: neither reads nor buffered lines are processed.
        while stall_until.is_none_or(|t| now >= t) {
            let Some(event) = ingest.poll_event(now) else {
                break;
            };
            match event {
                Event::Head(head) => {
                    let admitted = match &head.token {
                        Some(token) => shared.store.bind(&conn, token),
                        None => Ok(()),
                    };
                    match admitted {
                        Ok(()) => {
                            // Logs show a token's fingerprint only (docs/reliability.md §1.4).
                            let token = head
                                .token
                                .as_ref()
                                .map(plotstream_proto::Token::fingerprint);
                            tracing::info!(%peer, token = token.as_deref().unwrap_or("-"), "stream admitted");
                            ingest.admit(now, SystemTime::now());
                            fault_token = head.token.as_ref().map(|t| t.as_str().to_owned());
                            if let (Some(t), false) =
                                (&fault_token, shared.config.faults.is_empty())
                            {
                                faults.reseed(shared.config.seed, t, shared.next_token_conn(t));
                            }
                            for f in shared
                                .config
                                .faults
                                .iter()
                                .filter(|f| f.applies(fault_token.as_deref()))
                            {
                                match f.kind {
                                    FaultKind::IdleTimeout { secs } => {
                                        shared.metrics.fault(f.name());
                                        ingest.set_idle_timeout(Duration::from_secs_f64(secs));
                                    }
                                    FaultKind::Stall { ms } => {
                                        shared.metrics.fault(f.name());
                                        tracing::info!(%peer, ms, "fault: stall");
                                        stall_until = Some(now + Duration::from_millis(ms));
                                    }
                                    _ => {}
                                }
                            }
                            flap_at = faults::next_flap(
                                &shared.config.faults,
                                fault_token.as_deref(),
                                now,
                            );
                        }
                        Err(status) => ingest.close_with(status),
                    }
                }
                // The update stays in the machine (`ingest.update()`): no copy per line.
                Event::Update { ref token, .. } => {
                    if fault_token.is_none() {
                        fault_token = Some(token.as_str().to_owned());
                        if !shared.config.faults.is_empty() {
                            faults.reseed(
                                shared.config.seed,
                                token.as_str(),
                                shared.next_token_conn(token.as_str()),
                            );
                        }
                        flap_at =
                            faults::next_flap(&shared.config.faults, fault_token.as_deref(), now);
                    }
                    match faults.before_line(token.as_str()) {
                        (LineAction::Reset, name) => {
                            shared.metrics.fault(name.unwrap_or("reset"));
                            tracing::info!(%peer, "fault: reset");
                            shared.store.release(&conn);
                            // The one deliberate reset: SO_LINGER 0, then close.
                            stream.reset_on_close();
                            return;
                        }
                        (LineAction::Refuse(status), name) => {
                            shared.metrics.fault(name.unwrap_or("status"));
                            tracing::info!(%peer, status = status.code(), "fault: status");
                            ingest.reject_line(status);
                            continue;
                        }
                        (LineAction::Apply, _) => {}
                    }
                    let update = ingest.update();
                    if let Some(delay) = faults.delay(token.as_str()) {
                        // Held from its arrival, in parallel with the lines after it: reading
                        // and timers go on meanwhile (applied in order by `apply_held`).
                        shared.metrics.fault("delay");
                        held.push_back((now + delay, *token, update.clone()));
                        continue;
                    }
                    if let Err(status) = shared.store.apply(&conn, token, update) {
                        ingest.reject_line(status);
                    } else if let Some(status) = faults.after_line(token.as_str()) {
                        shared.metrics.fault("disconnect");
                        tracing::info!(%peer, status = status.code(), "fault: disconnect");
                        ingest.close_with(status);
                    }
                }
                Event::Heartbeat => {
                    shared.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                Event::Rejected(e) => {
                    let token = ingest.head().and_then(|h| h.token);
                    shared.store.count_rejected(token.as_ref());
                    shared.metrics.line_rejected(reason(&e));
                    if let Some(limit) = limit_of(&plotstream_proto::EndReason::Update(e)) {
                        shared.metrics.limit_breach(limit);
                    }
                }
                Event::Request(head) => {
                    let rest = ingest.take_buffered();
                    // Boxed: the HTTP routes' future is large and rare; inline, its size would
                    // be reserved in every ingest connection's task.
                    Box::pin(crate::http::serve(stream, head, rest, shared.clone(), peer)).await;
                    return;
                }
                Event::End(end) => {
                    // Lines held by a delay fault were accepted: apply them before the status.
                    while let Some(&(due, _, _)) = held.front() {
                        tokio::time::sleep_until((shared.origin + due).into()).await;
                        apply_held(
                            &mut held,
                            shared.now(),
                            shared,
                            &conn,
                            &mut ingest,
                            &mut faults,
                        );
                    }
                    // Release bindings before the response is written (P7, M32).
                    shared.store.release(&conn);
                    ingest.poll_transmit(&mut out);
                    if let Some(limit) = limit_of(&end.reason) {
                        shared.metrics.limit_breach(limit);
                    }
                    if let Some(status) = end.status {
                        shared.metrics.response(status.code());
                        tracing::info!(
                            %peer,
                            status = status.code(),
                            points = end.n_points,
                            rejected = end.n_rejected,
                            reason = ?end.reason,
                            "request ended"
                        );
                    }
                    Box::pin(close_gracefully(stream, &out, end.status.is_some(), shared)).await;
                    return;
                }
            }
        }
        ingest.poll_transmit(&mut out);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                shared.store.release(&conn);
                return;
            }
            out.clear();
        }
        if ingest.is_ended() {
            continue;
        }
        let deadline = ingest.poll_timeout().map(|d| shared.origin + d);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let stalled = stall_until.is_some_and(|t| shared.now() < t);
        let stall_end = async {
            match stall_until {
                Some(t) if stalled => tokio::time::sleep_until((shared.origin + t).into()).await,
                _ => std::future::pending().await,
            }
        };
        let held_due = held.front().map(|(due, _, _)| *due);
        let held_sleep = async {
            match held_due {
                Some(t) => tokio::time::sleep_until((shared.origin + t).into()).await,
                None => std::future::pending().await,
            }
        };
        let flap = async {
            match flap_at {
                Some(t) => tokio::time::sleep_until((shared.origin + t).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = held_sleep => apply_held(&mut held, shared.now(), shared, &conn, &mut ingest, &mut faults),
            () = stall_end => {
                // Withheld reads do not count toward the idle timer (P8, L31).
                if let Some(t) = stall_until.take() {
                    let stalled_from = t.saturating_sub(stall_ms(&shared.config.faults, fault_token.as_deref()));
                    ingest.handle_paused(stalled_from, shared.now());
                }
            }
            () = flap => {
                shared.metrics.fault("flap");
                tracing::info!(%peer, "fault: flap (healthy disconnect)");
                flap_at = None;
                ingest.close_with(Status::OK);
            }
            res = stream.read_chunk(), if !eof && !stalled => match res {
                Ok(buf) if buf.is_empty() => {
                    eof = true;
                    ingest.handle_eof(shared.now());
                }
                Ok(buf) if buf.len() <= SMALL_READ => {
                    // A head, a heartbeat or one point: hand the machine a right-sized copy,
                    // so the 16 KiB read buffer is freed now instead of being kept by an idle
                    // connection (10 000 idle streams held 16.9 KB each).
                    let mut small = BytesMut::from(&buf[..]);
                    ingest.handle_input(shared.now(), &mut small);
                }
                Ok(mut buf) => ingest.handle_input(shared.now(), &mut buf),
                Err(_) => {
                    eof = true;
                    ingest.handle_eof(shared.now());
                }
            },
            () = sleep, if !stalled => ingest.handle_timeout(shared.now()),
            () = conn.kicked.notified() => {
                if let Some(status) = conn.kick_status() {
                    ingest.close_with(status);
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    ingest.close_with(Status::UNAVAILABLE);
                }
            }
        }
    }
}

fn reason(e: &plotstream_proto::update::UpdateError) -> &'static str {
    use plotstream_proto::update::UpdateError;
    match e {
        UpdateError::Json(_) => "json",
        UpdateError::NotObject => "not_object",
        UpdateError::Shape(_) => "shape",
        UpdateError::Token => "token",
    }
}

fn stall_ms(faults: &[faults::Fault], token: Option<&str>) -> Duration {
    faults
        .iter()
        .filter(|f| f.applies(token))
        .find_map(|f| match f.kind {
            FaultKind::Stall { ms } => Some(Duration::from_millis(ms)),
            _ => None,
        })
        .unwrap_or_default()
}

/// Applies the held lines that are due, in order. A refusal ends the request with its status
/// and drops the lines held after it, as a refusal at that line would have.
fn apply_held(
    held: &mut std::collections::VecDeque<(
        Duration,
        plotstream_proto::Token,
        plotstream_proto::Update,
    )>,
    now: Duration,
    shared: &Shared,
    conn: &Arc<crate::store::Conn>,
    ingest: &mut Ingest,
    faults: &mut ConnFaults<'_>,
) {
    while held.front().is_some_and(|(due, _, _)| *due <= now) {
        let Some((_, token, update)) = held.pop_front() else {
            break;
        };
        match shared.store.apply(conn, &token, &update) {
            Err(status) => {
                held.clear();
                ingest.close_with(status);
            }
            Ok(_) => {
                if let Some(status) = faults.after_line(token.as_str()) {
                    shared.metrics.fault("disconnect");
                    held.clear();
                    ingest.close_with(status);
                }
            }
        }
    }
}

/// Reads up to this many bytes are copied into an exact-size buffer (see `drive`).
const SMALL_READ: usize = 1024;

/// The L-number of docs/reliability.md §3 behind an end, for `plotstream_limit_breaches_total`.
fn limit_of(reason: &plotstream_proto::EndReason) -> Option<&'static str> {
    use plotstream_proto::chunked::ChunkError;
    use plotstream_proto::head::HeadError;
    use plotstream_proto::json::JsonError;
    use plotstream_proto::update::UpdateError;
    use plotstream_proto::EndReason;
    Some(match reason {
        EndReason::PreHeadTimeout => "L1",
        EndReason::HeadTimeout => "L2",
        EndReason::Head(HeadError::RequestLineTooLong) => "L3",
        EndReason::Head(HeadError::TooLarge) => "L4",
        EndReason::Head(HeadError::TooManyFields) => "L5",
        EndReason::Head(HeadError::BodyTooLarge) => "L6",
        EndReason::Chunk(ChunkError::SizeOverflow) => "L12",
        EndReason::Chunk(ChunkError::ExtensionTooLong) => "L14",
        EndReason::Chunk(ChunkError::TooManyEmptyLines) => "L15",
        EndReason::Chunk(ChunkError::OverheadBudget) => "L16",
        EndReason::Chunk(ChunkError::TrailersTooLarge) => "L17",
        EndReason::Line(_) => "L18",
        EndReason::Update(UpdateError::Json(JsonError::TooDeep)) => "L19",
        EndReason::Update(UpdateError::Json(JsonError::StringTooLong)) => "L20",
        EndReason::Update(UpdateError::Json(JsonError::TooManyMembers)) => "L21",
        EndReason::Update(UpdateError::Json(JsonError::ArrayTooLong)) => "L22",
        EndReason::IdleTimeout => "L28",
        EndReason::Unbound => "L29",
        _ => return None,
    })
}
