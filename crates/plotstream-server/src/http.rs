//! Every route but the ingest endpoint: pages, inspection, SSE, tokens, metrics, assets.
//! One request per connection; every response carries `Connection: close` and, except SSE,
//! `Content-Length`, followed by the graceful close (docs/reliability.md P9).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use plotstream_proto::Status;
use tokio::io::AsyncReadExt;

use crate::store::push_json_str;
use crate::transport::{close_gracefully, Io};
use crate::{pages, sse, Shared};

/// A complete response.
pub struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    extra: Vec<(&'static str, String)>,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            extra: Vec::new(),
        }
    }

    /// JSON.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "application/json", body)
    }

    /// HTML, with the headers every page carries: `csp` (from [`pages::csp`]), no MIME
    /// sniffing, and no `Referer` (page URLs may hold share keys and tokens).
    pub fn html(status: u16, body: impl Into<Vec<u8>>, csp: String) -> Response {
        Response::new(status, "text/html; charset=utf-8", body)
            .header("Content-Security-Policy", csp)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
    }

    /// A plain-text error with the legacy message of `status`.
    pub fn error(status: Status) -> Response {
        Response::new(status.code(), "text/plain", status.message())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.extra.push((name, value.into()));
        self
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let reason = Status::new(self.status).reason();
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.extra {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Serves one non-ingest request from `peer`.
pub async fn serve(
    mut stream: Io,
    head: RequestHead,
    mut rest: BytesMut,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    let path = head.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = head.method.as_str();
    // Keys mode never shows or accepts a write token where a read id will do (pages, feeds,
    // listings, inspection); open mode still takes tokens, which are names there.
    let keys_mode = shared.config.store.users.is_some();
    let not_found = || Response::json(404, r#"{"errors":[{"message":"Not found"}]}"#);
    let response = match (method, segments.as_slice()) {
        ("GET", [""]) => pages::index(&shared),
        ("GET", ["healthz"]) => Response::new(200, "text/plain", "ok"),
        ("GET", ["metrics"]) => {
            Response::new(200, "text/plain; version=0.0.4", shared.metrics.render())
        }
        ("GET", ["api", "streams"]) => Response::json(200, streams_json(&shared, !keys_mode)),
        ("GET", ["api", "streams", id]) => match shared
            .store
            .resolve(id, !keys_mode)
            .and_then(|token| shared.store.inspect(&token, !keys_mode))
        {
            Some(json) => Response::json(200, json),
            None => not_found(),
        },
        ("GET", ["api", "streams", id, "events"]) => match shared.store.resolve(id, !keys_mode) {
            Some(token) => {
                sse::serve(stream, &head, sse::Feed::Stream(token), shared).await;
                return;
            }
            None => not_found(),
        },
        // The page addresses its feeds by the id it was opened with: a read id (keys mode), or
        // in open mode also a token, even one that has not streamed yet.
        ("GET", ["streams", id])
            if shared.store.resolve(id, !keys_mode).is_some()
                || (!keys_mode && plotstream_proto::Token::parse(id.as_bytes()).is_some()) =>
        {
            pages::stream_page(&shared, id)
        }
        ("GET", ["streams", _]) => Response::error(Status::NOT_FOUND),
        ("GET", ["assets", file]) => pages::asset(&shared, file).await,
        ("GET", ["api", "plots", fid, "events"]) => {
            match crate::rest::visible_plot(&shared, &head, fid) {
                Some(plot) => {
                    let feed = crate::rest::plot_feed(&shared, fid, &plot);
                    sse::serve(stream, &head, feed, shared).await;
                    return;
                }
                None => not_found(),
            }
        }
        ("GET", [user, n] | [user, n, ""]) if user.starts_with('~') => {
            let embed = n.ends_with(".embed");
            let fid = crate::rest::page_fid(&user[1..], n);
            let share_key = head
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("share_key=")));
            match fid.filter(|fid| crate::rest::visible_plot(&shared, &head, fid).is_some()) {
                Some(fid) => pages::figure_page(&shared, &fid, share_key, embed),
                None => pages::not_found(&shared, embed),
            }
        }
        (_, ["v2", ..]) => {
            crate::rest::serve_v2(&mut stream, &head, &mut rest, &shared, peer.ip()).await
        }
        ("POST", ["clientresp"]) => {
            crate::rest::serve_clientresp(&mut stream, &head, &mut rest, &shared, peer.ip()).await
        }
        ("POST", ["api", "tokens"]) => {
            match read_body(&mut stream, &head, &mut rest, 64 * 1024, &shared).await {
                Ok(_) => post_tokens(&shared, &head, peer),
                Err(r) => r,
            }
        }
        ("POST", _) => Response::error(Status::NOT_FOUND),
        ("GET", _) => Response::new(404, "text/plain", "not found"),
        _ => Response::error(Status::METHOD_NOT_ALLOWED).header("Allow", "POST, GET"),
    };
    shared.metrics.response(response.status);
    close_gracefully(stream, &response.encode(), true, &shared).await;
}

/// `POST /api/tokens?count=N` (at most L53 a call). In keys mode the caller's credentials are
/// required and the tokens are written to the users file as theirs. Without users, only a
/// loopback peer (the operator on the machine) may issue tokens, which registered mode then
/// admits: an anonymous peer on the network can no longer mint write capabilities.
fn post_tokens(shared: &Shared, head: &RequestHead, peer: SocketAddr) -> Response {
    let count = head
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("count=")))
        .map_or(Some(1), |n| n.parse::<usize>().ok());
    let Some(count) = count.filter(|n| (1..=MAX_TOKENS_PER_CALL).contains(n)) else {
        return crate::rest::error(
            400,
            &format!("count must be 1 to {MAX_TOKENS_PER_CALL} (L53)"),
        );
    };
    if let Some(users) = &shared.config.store.users {
        let user = match crate::rest::caller(shared, head) {
            Ok(Some(u)) => u,
            Ok(None) => {
                return crate::rest::error(401, "Authentication credentials were not provided.")
            }
            Err(r) => return r,
        };
        return match users.issue_tokens(&user, count) {
            Ok(tokens) => Response::json(201, serde_json::json!({ "tokens": tokens }).to_string()),
            Err(e) => crate::rest::error(403, &e.to_string()),
        };
    }
    if !peer.ip().is_loopback() {
        return crate::rest::error(
            403,
            "tokens are issued to loopback peers, or with credentials in keys mode (--users)",
        );
    }
    match issue_tokens(shared, count) {
        Some(body) => Response::json(201, body),
        None => crate::rest::error(403, "registered token limit reached (L54)"),
    }
}

/// Issues `count` tokens of exactly 10 `[a-z0-9]` characters from the OS CSPRNG (L8), unique
/// among registered tokens, and registers them; `None` once the registered set is full.
pub fn issue_tokens(shared: &Shared, count: usize) -> Option<String> {
    let mut out = String::from("{\"tokens\":[");
    for i in 0..count {
        let token = loop {
            let t = new_token();
            if !shared.store.is_registered(&t) {
                break t;
            }
        };
        shared.store.register(&token).ok()?;
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, &token);
    }
    out.push_str("]}");
    Some(out)
}

/// One token: 10 characters of `[a-z0-9]` from the OS CSPRNG (L8).
pub fn new_token() -> String {
    crate::random::chars(crate::random::LOWER_DIGITS, 10)
}

/// `GET /api/streams`: every stream with its read `id`; its write `token` only when
/// `show_tokens` (open mode).
fn streams_json(shared: &Shared, show_tokens: bool) -> String {
    let mut out = String::from("[");
    for (i, s) in shared.store.list().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        push_json_str(&mut out, &s.read_id);
        if show_tokens {
            out.push_str(",\"token\":");
            push_json_str(&mut out, &s.token);
        }
        out.push_str(&format!(
            ",\"last_seq\":{},\"count\":{},\"writer_connected\":{},\"viewers\":{}}}",
            s.last_seq, s.count, s.writer_connected, s.n_viewers
        ));
    }
    out.push(']');
    out
}

/// Reads a REST body: `Content-Length` framing only, by P2's rules (a duplicate
/// `Content-Length` or any `Transfer-Encoding` is 400, as on the ingest route), at most `max`
/// bytes (L45, 413 before any byte is read), within L44 for the whole body (a body trickled
/// byte by byte no longer holds a connection and its buffer open), and within the server's
/// budget of REST bytes in flight (L50, 503 with `Retry-After`).
pub async fn read_body(
    stream: &mut Io,
    head: &RequestHead,
    rest: &mut BytesMut,
    max: u64,
    shared: &Shared,
) -> Result<Vec<u8>, Response> {
    use plotstream_proto::head::HeadError;
    let len = match plotstream_proto::head::content_length(head, max) {
        Ok(n) => n,
        Err(HeadError::BodyTooLarge) => {
            shared.metrics.limit_breach("L45");
            return Err(crate::rest::error(413, "request body too large (L45)"));
        }
        Err(_) => return Err(crate::rest::error(400, "invalid request framing")),
    };
    // `max` fits in memory; so does `len` below it.
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
    let _permit = if kib == 0 {
        None
    } else {
        match shared.rest_budget.clone().try_acquire_many_owned(kib) {
            Ok(p) => Some(p),
            Err(_) => {
                shared.metrics.limit_breach("L50");
                return Err(
                    crate::rest::error(503, "server busy, retry (L50)").header("Retry-After", "1")
                );
            }
        }
    };
    let deadline = tokio::time::Instant::now() + shared.config.rest_body_deadline;
    let mut body = Vec::with_capacity(len.min(rest.len().max(64 * 1024)));
    let take = rest.len().min(len);
    body.extend_from_slice(&rest.split_to(take));
    while body.len() < len {
        let mut chunk = [0u8; 8192];
        let want = (len - body.len()).min(chunk.len());
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..want])).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(crate::rest::error(400, "request body ended early")),
            Err(_) => {
                shared.metrics.limit_breach("L44");
                return Err(crate::rest::error(408, "request body too slow (L44)"));
            }
        }
    }
    Ok(body)
}

/// L53: tokens issued by one `POST /api/tokens`.
pub const MAX_TOKENS_PER_CALL: usize = 100;
