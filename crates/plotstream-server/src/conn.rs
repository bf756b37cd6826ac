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

use crate::faults::{Due, FaultPlan, LineAction};
use crate::shared::Shared;
use crate::transport::{close_gracefully, Io};

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
    // History keeps each line's receive time: one clock read per read, not per line.
    let keeps_history = shared.store.history().is_some();
    let mut shutdown = shared.shutdown.clone();
    let mut out = Vec::new();
    let mut eof = false;
    let mut plan = FaultPlan::new(&shared.config.faults, shared.config.seed, conn.id);
    loop {
        let now = shared.now();
        // A stall withholds everything: neither reads nor buffered lines are processed.
        while !plan.is_stalled(now) {
            let Some(event) = ingest.poll_event(now) else {
                break;
            };
            match event {
                Event::Head(head) => {
                    // Nothing waits in a stream while this connection waits.
                    shared.store.flush_lines(&conn);
                    let admitted = match &head.token {
                        Some(token) => crate::nodes::admit_writer(shared, &conn, token).await,
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
                            let admission = plan.admit(
                                head.token.as_ref().map(plotstream_proto::Token::as_str),
                                |t| shared.next_token_conn(t),
                                now,
                            );
                            for name in admission.fired {
                                shared.metrics.fault(name);
                            }
                            if let Some(idle) = admission.idle {
                                ingest.set_idle_timeout(idle);
                            }
                            if let Some(d) = admission.stall {
                                tracing::info!(%peer, ms = d.as_millis(), "fault: stall");
                            }
                        }
                        Err(status) => ingest.close_with(status),
                    }
                }
                // The update stays in the machine (`ingest.update()`): no copy per line.
                Event::Update { ref token, .. } => {
                    plan.scope(token.as_str(), |t| shared.next_token_conn(t), now);
                    match plan.before_line(token.as_str()) {
                        (LineAction::Reset, name) => {
                            shared.metrics.fault(name.unwrap_or("reset"));
                            tracing::info!(%peer, "fault: reset");
                            let _ = shared.release_writer(&conn);
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
                    if shared.cluster.is_some() && !conn.holds(token.as_str()) {
                        // On several nodes a token is taken for this node before its first
                        // line here (a token named in the lines, not the head).
                        shared.store.flush_lines(&conn);
                        if let Err(status) = crate::nodes::admit_writer(shared, &conn, token).await
                        {
                            ingest.reject_line(status);
                            continue;
                        }
                    }
                    let update = ingest.update();
                    if plan.hold(now, token, update) {
                        // Held from its arrival, in parallel with the lines after it: reading
                        // and timers go on meanwhile (applied in order by `apply_held`).
                        shared.metrics.fault("delay");
                        continue;
                    }
                    if let Err(status) = shared.store.apply(&conn, token, update) {
                        ingest.reject_line(status);
                    } else if let Some(status) = plan.after_line(token.as_str()) {
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
                    shared.store.flush_lines(&conn);
                    let rest = ingest.take_buffered();
                    // Boxed: the HTTP routes' future is large and rare; inline, its size would
                    // be reserved in every ingest connection's task.
                    Box::pin(crate::http::serve(stream, head, rest, shared.clone(), peer)).await;
                    return;
                }
                Event::End(end) => {
                    // Lines held by a delay fault were accepted: apply them before the status.
                    while let Some(due) = plan.next_held() {
                        shared.store.flush_lines(&conn);
                        tokio::time::sleep_until(shared.origin + due).await;
                        apply_held(&mut plan, shared.now(), shared, &conn, &mut ingest);
                    }
                    // Release bindings before the response is written (P7, M32).
                    let leases = shared.release_writer(&conn);
                    ingest.poll_transmit(&mut out);
                    // DC1: the final response (its `points` count is the only acknowledgement
                    // the protocol has) waits until every line it counts is durable; if the
                    // store cannot write, the lines are not acknowledged: 503 + Retry-After.
                    let mut final_status = end.status;
                    let ticket = conn.last_ticket.load(Ordering::Acquire);
                    if let (Some(status), true) = (end.status, ticket > 0) {
                        let stored = shared.store.journal().wait(ticket).await.is_ok();
                        let kicked = conn.kick_status().filter(|_| shared.cluster.is_some());
                        if let (true, Some(kick), 200) = (stored, kicked, status.code()) {
                            // On several nodes: another node took a token while these lines
                            // were being stored, and its fence refused some of them (the
                            // backend displaced this writer before the commit's ticket).
                            out.clear();
                            plotstream_proto::status::encode_response(kick, end.n_points, &mut out);
                            final_status = Some(kick);
                        } else if !stored && status.code() == 200 {
                            out.clear();
                            plotstream_proto::status::encode_response(
                                Status::UNAVAILABLE,
                                end.n_points,
                                &mut out,
                            );
                            shared.metrics.limit_breach("DC5");
                            final_status = Some(Status::UNAVAILABLE);
                        }
                    }
                    // On several nodes: the leases go before a 200 too, so a writer that moves
                    // to another node at once keeps the stream's epoch (bounded: the leases
                    // thread waits at most 2 s for the journal, Redis 2 s a call). A refusal
                    // (a failing store, Redis away) goes out at once.
                    let reachable = shared.cluster.as_ref().is_some_and(|c| !c.is_unreachable());
                    if reachable && final_status.is_some_and(|s| s.code() == 200) {
                        leases.wait(Duration::from_secs(5)).await;
                    }
                    if let Some(limit) = limit_of(&end.reason) {
                        shared.metrics.limit_breach(limit);
                    }
                    if let Some(status) = final_status {
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
        // The read's lines go to the journal together (docs/storage.md "Lines").
        shared.store.flush_lines(&conn);
        ingest.poll_transmit(&mut out);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                let _ = shared.release_writer(&conn);
                return;
            }
            out.clear();
        }
        if ingest.is_ended() {
            continue;
        }
        if shared.store.journal().is_backlogged() {
            // L55: the disk is slower than ingest; read on once this writer's lines are stored.
            let ticket = conn.last_ticket.load(Ordering::Acquire);
            let _ = shared.store.journal().wait(ticket).await;
        }
        let deadline = ingest.poll_timeout().map(|d| shared.origin + d);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let stalled = plan.is_stalled(shared.now());
        // One timer for every fault: the end of a stall, a held line, a flap.
        let fault_timer = async {
            match plan.poll_timeout() {
                Some(t) => tokio::time::sleep_until(shared.origin + t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = fault_timer => match plan.handle_timeout(shared.now()) {
                Some(Due::Unstalled { from }) => {
                    // Withheld reads do not count toward the idle timer (P8, L31).
                    ingest.handle_paused(from, shared.now());
                }
                Some(Due::Held) => apply_held(&mut plan, shared.now(), shared, &conn, &mut ingest),
                Some(Due::Flap) => {
                    shared.metrics.fault("flap");
                    tracing::info!(%peer, "fault: flap (healthy disconnect)");
                    ingest.close_with(Status::OK);
                }
                None => {}
            },
            res = stream.read_chunk(), if !eof && !stalled => match res {
                Ok(buf) if buf.is_empty() => {
                    eof = true;
                    ingest.handle_eof(shared.now());
                }
                Ok(buf) if buf.len() <= SMALL_READ => {
                    if keeps_history {
                        conn.mark_received();
                    }
                    // A head, a heartbeat or one point: hand the machine a right-sized copy,
                    // so the 16 KiB read buffer is freed now instead of being kept by an idle
                    // connection (10 000 idle streams held 16.9 KB each).
                    let mut small = BytesMut::from(&buf[..]);
                    ingest.handle_input(shared.now(), &mut small);
                }
                Ok(mut buf) => {
                    if keeps_history {
                        conn.mark_received();
                    }
                    ingest.handle_input(shared.now(), &mut buf);
                }
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

/// Applies the held lines that are due, in order. A refusal ends the request with its status
/// and drops the lines held after it, as a refusal at that line would have.
fn apply_held(
    plan: &mut FaultPlan<'_>,
    now: Duration,
    shared: &Shared,
    conn: &Arc<crate::store::Conn>,
    ingest: &mut Ingest,
) {
    while let Some((token, update)) = plan.pop_held(now) {
        match shared.store.apply(conn, &token, &update) {
            Err(status) => {
                plan.drop_held();
                ingest.close_with(status);
            }
            Ok(_) => {
                if let Some(status) = plan.after_line(token.as_str()) {
                    shared.metrics.fault("disconnect");
                    plan.drop_held();
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
