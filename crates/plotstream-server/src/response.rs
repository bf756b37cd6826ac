//! What every route answers with: a complete [`Response`], the REST error body, and the
//! bounded reading of a request body (L44, L45, L50). The routes (`http`, `pages`, `rest`,
//! `sse`) import this; it imports none of them.

use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use plotstream_proto::Status;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::shared::Shared;
use crate::transport::Io;

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

    /// HTML, with the headers every page carries: `csp` (from `pages::csp`), no MIME
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

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
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

/// A Chart Studio error: 4xx, JSON `{"errors":[{"message":...}]}` (docs/protocol.md §7.6).
pub fn error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        json!({"errors": [{"message": message}]}).to_string(),
    )
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
            return Err(error(413, "request body too large (L45)"));
        }
        Err(_) => return Err(error(400, "invalid request framing")),
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
                return Err(error(503, "server busy, retry (L50)").header("Retry-After", "1"));
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
            Ok(_) => return Err(error(400, "request body ended early")),
            Err(_) => {
                shared.metrics.limit_breach("L44");
                return Err(error(408, "request body too slow (L44)"));
            }
        }
    }
    Ok(body)
}
