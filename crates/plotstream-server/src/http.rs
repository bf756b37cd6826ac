//! Every route but the ingest endpoint: pages, inspection, SSE, tokens, metrics, assets.
//! One request per connection; every response carries `Connection: close` and, except SSE,
//! `Content-Length`, followed by the graceful close (RELIABILITY.md P9).

use std::sync::Arc;

use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use plotstream_proto::Status;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::conn::close_gracefully;
use crate::store::push_json_str;
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

/// Serves one non-ingest request.
pub async fn serve(
    mut stream: TcpStream,
    head: RequestHead,
    mut rest: BytesMut,
    shared: Arc<Shared>,
) {
    let path = head.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = head.method.as_str();
    let response = match (method, segments.as_slice()) {
        ("GET", [""]) => pages::index(&shared),
        ("GET", ["healthz"]) => Response::new(200, "text/plain", "ok"),
        ("GET", ["metrics"]) => {
            Response::new(200, "text/plain; version=0.0.4", shared.metrics.render())
        }
        ("GET", ["api", "streams"]) => Response::json(200, streams_json(&shared)),
        ("GET", ["api", "streams", token]) => match shared.store.inspect(token) {
            Some(json) => Response::json(200, json),
            None => Response::json(404, r#"{"errors":[{"message":"Not found"}]}"#),
        },
        ("GET", ["api", "streams", token, "events"]) => {
            let token = (*token).to_owned();
            sse::serve(stream, &head, sse::Feed::Stream(token), shared).await;
            return;
        }
        ("GET", ["streams", token]) => {
            if plotstream_proto::Token::parse(token.as_bytes()).is_some() {
                pages::stream_page(&shared, token)
            } else {
                Response::error(Status::NOT_FOUND)
            }
        }
        ("GET", ["assets", file]) => pages::asset(&shared, file).await,
        ("GET", ["api", "plots", fid, "events"]) => match crate::rest::plot_feed(&shared, fid) {
            Some(feed) => {
                sse::serve(stream, &head, feed, shared).await;
                return;
            }
            None => Response::json(404, r#"{"errors":[{"message":"Not found"}]}"#),
        },
        ("GET", [user, n] | [user, n, ""]) if user.starts_with('~') => {
            let user = &user[1..];
            let embed = n.ends_with(".embed");
            match crate::rest::page_fid(&shared, user, n) {
                Some(fid) => pages::figure_page(&shared, &fid, embed),
                None => pages::not_found(&shared, embed),
            }
        }
        (_, ["v2", ..]) => crate::rest::serve_v2(&mut stream, &head, &mut rest, &shared).await,
        ("POST", ["clientresp"]) => {
            crate::rest::serve_clientresp(&mut stream, &head, &mut rest, &shared).await
        }
        ("POST", ["api", "tokens"]) => {
            // The body, if any, is not needed; drain what Content-Length announces (bounded).
            let _ = read_body(&mut stream, &head, &mut rest, 64 * 1024).await;
            let count = head
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("count=")))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(1)
                .clamp(1, 10_000);
            Response::json(201, issue_tokens(&shared, count))
        }
        ("POST", _) => Response::error(Status::NOT_FOUND),
        ("GET", _) => Response::new(404, "text/plain", "not found"),
        _ => Response::error(Status::METHOD_NOT_ALLOWED).header("Allow", "POST, GET"),
    };
    shared.metrics.response(response.status);
    close_gracefully(stream, &response.encode(), true, &shared).await;
}

/// Issues `count` tokens of exactly 10 `[a-z0-9]` characters from the OS CSPRNG (L8), unique
/// among registered tokens, and registers them.
pub fn issue_tokens(shared: &Shared, count: usize) -> String {
    let mut out = String::from("{\"tokens\":[");
    for i in 0..count {
        let token = loop {
            let t = new_token();
            if !shared.store.is_registered(&t) {
                break t;
            }
        };
        shared.store.register(&token, None);
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, &token);
    }
    out.push_str("]}");
    out
}

/// One token: 10 characters of `[a-z0-9]`, unbiased (rejection sampling).
pub fn new_token() -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut token = String::with_capacity(10);
    while token.len() < 10 {
        let mut b = [0u8; 16];
        let _ = getrandom::fill(&mut b);
        for byte in b {
            // 252 = 7 × 36: reject the tail so every character is equally likely.
            if byte < 252 && token.len() < 10 {
                token.push(char::from(ALPHABET[usize::from(byte % 36)]));
            }
        }
    }
    token
}

fn streams_json(shared: &Shared) -> String {
    let mut out = String::from("[");
    for (i, s) in shared.store.list().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"token\":");
        push_json_str(&mut out, &s.token);
        out.push_str(&format!(
            ",\"last_seq\":{},\"count\":{},\"writer_connected\":{},\"viewers\":{}}}",
            s.last_seq, s.count, s.writer_connected, s.n_viewers
        ));
    }
    out.push(']');
    out
}

/// Reads a `Content-Length` body of at most `max` bytes.
pub async fn read_body(
    stream: &mut TcpStream,
    head: &RequestHead,
    rest: &mut BytesMut,
    max: usize,
) -> Option<Vec<u8>> {
    let len: usize = head
        .field("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0);
    if len > max {
        return None;
    }
    while rest.len() < len {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
        {
            Ok(Ok(n)) if n > 0 => rest.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    Some(rest.split_to(len).to_vec())
}
