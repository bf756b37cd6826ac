//! The legacy status table and response-head encoding (docs/protocol.md §4.2, §4.1).

/// A final status the stream endpoint can answer with.
///
/// The legacy codes carry npm plotly@1.0.6's `statusmsgs.json` messages verbatim,
/// including its "seperated"; the RFC additions carry their reason phrase in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u16);

impl Status {
    /// 100: `Expect: 100-continue` on an admitted head.
    pub const CONTINUE: Status = Status(100);
    /// 200: the body ended cleanly.
    pub const OK: Status = Status(200);
    /// 308: an operator ended the token's stream.
    pub const PERMANENT_REDIRECT: Status = Status(308);
    /// 400: head or framing syntax, token syntax, unclean end.
    pub const BAD_REQUEST: Status = Status(400);
    /// 403: the token's figure no longer names it.
    pub const FORBIDDEN: Status = Status(403);
    /// 404: an unknown token in registered mode; POST to an unknown path.
    pub const NOT_FOUND: Status = Status(404);
    /// 405: a method other than POST or GET on `/`.
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    /// 406: a data line with no token anywhere; L29.
    pub const NOT_ACCEPTABLE: Status = Status(406);
    /// 408: L2 or L28 expired.
    pub const REQUEST_TIMEOUT: Status = Status(408);
    /// 411: no body framing.
    pub const LENGTH_REQUIRED: Status = Status(411);
    /// 413: a line over L18, a Content-Length over L6.
    pub const CONTENT_TOO_LARGE: Status = Status(413);
    /// 414: a request line over L3.
    pub const URI_TOO_LONG: Status = Status(414);
    /// 415: a Content-Encoding other than identity.
    pub const UNSUPPORTED_MEDIA_TYPE: Status = Status(415);
    /// 417: an Expect other than 100-continue.
    pub const EXPECTATION_FAILED: Status = Status(417);
    /// 422: a line that is not one valid JSON object within limits.
    pub const UNPROCESSABLE: Status = Status(422);
    /// 423: a second holder of the token.
    pub const LOCKED: Status = Status(423);
    /// 431: a head over L4 or L5.
    pub const HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    /// 449: the figure was replaced by one that no longer names the token.
    pub const RETRY_WITH: Status = Status(449);
    /// 500: a bug in the connection handler.
    pub const INTERNAL: Status = Status(500);
    /// 501: a transfer coding other than chunked.
    pub const NOT_IMPLEMENTED: Status = Status(501);
    /// 503: shutdown or a capacity limit.
    pub const UNAVAILABLE: Status = Status(503);
    /// 520: only ever injected by `--fault status`.
    pub const UNKNOWN_ERROR: Status = Status(520);

    /// Wraps any code; codes outside the table get a generic reason phrase.
    pub const fn new(code: u16) -> Status {
        Status(code)
    }

    /// The numeric code.
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The reason phrase of the status line.
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            308 => "Permanent Redirect",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Content Too Large",
            414 => "URI Too Long",
            415 => "Unsupported Media Type",
            417 => "Expectation Failed",
            422 => "Unprocessable Content",
            423 => "Locked",
            431 => "Request Header Fields Too Large",
            449 => "Retry With",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            520 => "Unknown Error",
            _ => "Unknown",
        }
    }

    /// The legacy message (docs/protocol.md §4.2), byte for byte; the reason phrase in lower case
    /// otherwise.
    pub fn message(self) -> &'static str {
        match self.0 {
            200 => "healthy endpoint disconnect",
            308 => "stream had ended",
            400 => "invalid or malformed request syntax",
            403 => "stream token no longer associated with this plot",
            404 => "streamtoken not registered or valid",
            405 => "bad request method: use POST for streaming",
            406 => "bad request header: missing 'plotly-streamtoken'",
            408 => "timeout on active data",
            413 => "line too long",
            422 => "json parse error: please stream newline seperated JSON",
            423 => "connection limit associated with this token has been reached",
            449 => "stream content has changed, reloading clients",
            500 => "internal server error",
            501 => "unsupported transfer coding",
            503 => "internal database error",
            520 => "error in request stream",
            411 => "length required",
            414 => "uri too long",
            415 => "unsupported media type",
            417 => "expectation failed",
            431 => "request header fields too large",
            _ => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// Appends the complete final response for `status` to `out` (docs/protocol.md §4.1).
///
/// A 200 carries the JSON body `{"status":200,"message":...,"points":N}`; every other status a
/// `text/plain` body holding its message. Every response has `Content-Length` and
/// `Connection: close`; 405 adds `Allow: POST, GET` and 503 adds `Retry-After: 5`.
pub fn encode_response(status: Status, n_points: u64, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(96);
    let content_type = if status == Status::OK {
        body.extend_from_slice(b"{\"status\":200,\"message\":\"");
        body.extend_from_slice(status.message().as_bytes());
        body.extend_from_slice(b"\",\"points\":");
        body.extend_from_slice(itoa::Buffer::new().format(n_points).as_bytes());
        body.push(b'}');
        "application/json"
    } else {
        body.extend_from_slice(status.message().as_bytes());
        "text/plain"
    };
    encode_status_line(status, out);
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if status == Status::METHOD_NOT_ALLOWED {
        out.extend_from_slice(b"Allow: POST, GET\r\n");
    }
    if status == Status::UNAVAILABLE {
        out.extend_from_slice(b"Retry-After: 5\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
}

/// Appends `HTTP/1.1 100 Continue\r\n\r\n`.
pub fn encode_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

fn encode_status_line(status: Status, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status.code()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_response_is_byte_exact() {
        let mut out = Vec::new();
        encode_response(Status::OK, 5, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 65\r\nConnection: close\r\n\r\n\
             {\"status\":200,\"message\":\"healthy endpoint disconnect\",\"points\":5}"
        );
    }

    #[test]
    fn timeout_response_is_byte_exact() {
        let mut out = Vec::new();
        encode_response(Status::REQUEST_TIMEOUT, 0, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\ntimeout on active data"
        );
    }

    #[test]
    fn extra_headers_come_before_connection() {
        let mut out = Vec::new();
        encode_response(Status::METHOD_NOT_ALLOWED, 0, &mut out);
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("Allow: POST, GET\r\nConnection: close\r\n"));
        out.clear();
        encode_response(Status::UNAVAILABLE, 0, &mut out);
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("Retry-After: 5\r\nConnection: close\r\n"));
    }

    #[test]
    fn every_body_fits_256_bytes() {
        for code in [
            200, 308, 400, 403, 404, 405, 406, 408, 411, 413, 414, 415, 417, 422, 423, 431, 449,
            500, 501, 503, 520,
        ] {
            assert!(Status::new(code).message().len() <= 256);
            assert_ne!(Status::new(code).reason(), "Unknown", "{code}");
        }
    }
}
