//! Request heads: incremental parsing on `httparse` into an owned head (docs/reliability.md P1, P2,
//! L3–L5), and the ingest-specific checks of docs/protocol.md §2.1–§2.3.

use bytes::Bytes;

use crate::limits::Limits;
use crate::status::Status;
use crate::update::Token;

/// An owned, parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, case preserved (methods are case-sensitive).
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Every field in wire order, names as sent, values with surrounding OWS trimmed.
    pub headers: Vec<(String, Bytes)>,
    /// Bytes the head occupied, leading empty lines and the final empty line included.
    pub len: usize,
}

impl RequestHead {
    /// The values of every field named `name` (case-insensitive).
    pub fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }

    /// The value of the first field named `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }

    /// The path of the target: the absolute form reduced to its path, the query removed.
    pub fn path(&self) -> &str {
        let mut t = self.target.as_str();
        if let Some(rest) = t
            .strip_prefix("http://")
            .or_else(|| t.strip_prefix("https://"))
        {
            t = rest.find('/').map_or("/", |i| &rest[i..]);
        }
        t.split(['?', '#']).next().unwrap_or(t)
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Which handler the request belongs to (docs/protocol.md §1.3).
    pub fn route(&self) -> Route {
        if self.target == "*" {
            return Route::Invalid;
        }
        if self.path() == "/" {
            return match self.method.as_str() {
                "POST" => Route::Ingest,
                "GET" => Route::Other,
                _ => Route::MethodNotAllowed,
            };
        }
        Route::Other
    }
}

/// Where a head goes after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /`: the stream endpoint.
    Ingest,
    /// Another method on `/`: 405.
    MethodNotAllowed,
    /// A target the endpoint cannot serve (`*`): 400.
    Invalid,
    /// REST, viewer, inspection or index routes: the server's business.
    Other,
}

/// Why a head is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request line or field (400).
    Syntax,
    /// Request line over L3 (414).
    RequestLineTooLong,
    /// Head over L4 (431).
    TooLarge,
    /// More than L5 fields (431).
    TooManyFields,
    /// Transfer-Encoding with Content-Length, HTTP/1.0 with Transfer-Encoding, a malformed
    /// Transfer-Encoding list or Content-Length (400).
    Framing,
    /// A transfer coding other than chunked (501).
    UnsupportedCoding,
    /// Neither Transfer-Encoding nor Content-Length (411).
    NoFraming,
    /// Content-Length over L6 (413).
    BodyTooLarge,
    /// Content-Encoding other than identity (415).
    ContentEncoding,
    /// More than one `plotly-streamtoken` field, or one that breaks L7 (400).
    Token,
    /// An `Expect` other than `100-continue` (417).
    Expectation,
}

impl HeadError {
    /// The status this rejection is answered with (docs/protocol.md §4.2).
    pub fn status(self) -> Status {
        match self {
            HeadError::Syntax | HeadError::Framing | HeadError::Token => Status::BAD_REQUEST,
            HeadError::RequestLineTooLong => Status::URI_TOO_LONG,
            HeadError::TooLarge | HeadError::TooManyFields => Status::HEADER_FIELDS_TOO_LARGE,
            HeadError::UnsupportedCoding => Status::NOT_IMPLEMENTED,
            HeadError::NoFraming => Status::LENGTH_REQUIRED,
            HeadError::BodyTooLarge => Status::CONTENT_TOO_LARGE,
            HeadError::ContentEncoding => Status::UNSUPPORTED_MEDIA_TYPE,
            HeadError::Expectation => Status::EXPECTATION_FAILED,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::Syntax => "malformed request head",
            HeadError::RequestLineTooLong => "request line over the limit",
            HeadError::TooLarge => "request head over the limit",
            HeadError::TooManyFields => "too many header fields",
            HeadError::Framing => "conflicting or malformed body framing",
            HeadError::UnsupportedCoding => "unsupported transfer coding",
            HeadError::NoFraming => "no transfer-encoding or content-length",
            HeadError::BodyTooLarge => "content-length over the limit",
            HeadError::ContentEncoding => "unsupported content-encoding",
            HeadError::Token => "missing, repeated or malformed plotly-streamtoken",
            HeadError::Expectation => "unsupported expectation",
        })
    }
}

impl std::error::Error for HeadError {}

/// Incremental head parser: call [`HeadParser::parse`] with the whole buffered input after each
/// read. Work per call is proportional to the new bytes, except for one `httparse` pass per
/// completed line (at most L5 + 1 of them).
#[derive(Debug, Default, Clone)]
pub struct HeadParser {
    /// Invariant: every byte before `scanned` has been looked at for line ends.
    scanned: usize,
    /// Start of the line being read.
    line_start: usize,
    seen_request_line: bool,
    n_fields: usize,
}

impl HeadParser {
    /// A parser at the start of a connection.
    pub fn new() -> HeadParser {
        HeadParser::default()
    }

    /// True once any byte of the head has arrived (L1 gives way to L2).
    pub fn is_started(&self) -> bool {
        self.scanned > 0
    }

    /// Parses `buf`, the connection's input from its first byte. `Ok(None)`: need more bytes.
    /// On success the head occupies `buf[..head.len]`.
    ///
    /// The verdict does not depend on how the input was split: it is the one a byte-by-byte feed
    /// gives, where the first violation in byte order decides. A limit is crossed by one byte,
    /// the first whose arrival breaks it:
    /// - L3: the byte after the request line's first L3 bytes, or the one after that if it is a
    ///   CR (a CR may still end the line), unless an LF ends the line first;
    /// - L4: byte L4 + 1 of the input (leading empty lines count), unless the head ended before;
    /// - L5: the LF that ends field line L5 + 1.
    ///
    /// A syntax error (400) wins over a limit when it lies *before* the crossing byte in the
    /// sense that a byte-by-byte feed had already looked there: in a line whose LF came before
    /// the crossing byte, or in the first 64 bytes of a request line that had not yet ended.
    /// A malformed byte further into a request line that is still open, or in the line whose LF
    /// crosses L4 or L5, comes after the limit. The same byte never crosses L3 and L5 (an LF
    /// never crosses L3, and L5 counts only fields); when one byte crosses L3 and L4, L3 (414)
    /// wins; when one LF crosses L4 and L5, L4 does.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
        let mut new_line = false;
        loop {
            let lf = memchr::memchr(b'\n', &buf[self.scanned..]).map(|i| self.scanned + i);
            // No line ends before `lf` (or the end of the input): only L3 and L4 can be crossed
            // there. An over-long request line is refused here, before its LF.
            if let Some((at, error)) = self.crossing(buf, lf.unwrap_or(buf.len()), limits) {
                return Err(self.first_in_byte_order(buf, at, error, limits));
            }
            let Some(lf) = lf else { break };
            self.scanned = lf + 1;
            if lf + 1 > limits.head_bytes {
                return Err(self.first_in_byte_order(buf, lf, HeadError::TooLarge, limits));
            }
            let line = &buf[self.line_start..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.seen_request_line {
                    return finish(buf, lf + 1, limits).map(Some);
                }
                self.line_start = lf + 1;
                continue; // P1: empty lines before the request line are skipped.
            }
            if self.seen_request_line {
                self.n_fields += 1;
                if self.n_fields > limits.head_fields {
                    let error = HeadError::TooManyFields;
                    return Err(self.first_in_byte_order(buf, lf, error, limits));
                }
            }
            self.seen_request_line = true;
            self.line_start = lf + 1;
            new_line = true;
        }
        self.scanned = buf.len();
        // Syntax errors are found as soon as they are visible: after every completed line, and
        // while a request line is young (a TLS hello or a bad method fails at its first bytes).
        // Complete lines are checked as they complete, and only the first 64 bytes of a young
        // request line before that, so the verdict does not depend on how input was split.
        if new_line {
            check_partial(&buf[..self.line_start], limits)?;
        } else if !self.seen_request_line {
            check_partial(
                &buf[..self.scanned.min(self.line_start + YOUNG_LINE)],
                limits,
            )?;
        }
        Ok(None)
    }

    /// The first limit crossed by a byte of `buf[self.scanned..end]`, where no LF lies, and the
    /// index of that byte. Bytes before `self.scanned` crossed nothing (or were refused).
    fn crossing(&self, buf: &[u8], end: usize, limits: &Limits) -> Option<(usize, HeadError)> {
        let l3 = (!self.seen_request_line)
            .then(|| {
                let at = self.line_start + limits.request_line;
                at + usize::from(buf.get(at) == Some(&b'\r'))
            })
            .filter(|at| *at < end);
        let l4 = Some(limits.head_bytes).filter(|at| *at < end);
        match (l3, l4) {
            (Some(l3), Some(l4)) if l4 < l3 => Some((l4, HeadError::TooLarge)),
            (Some(l3), _) => Some((l3, HeadError::RequestLineTooLong)),
            (None, l4) => l4.map(|at| (at, HeadError::TooLarge)),
        }
    }

    /// `error`, a limit crossed by byte `at` of the line that starts at `self.line_start`,
    /// unless a byte-by-byte feed would have found a syntax error in `buf[..at]` first: in the
    /// lines completed before this one, or, while the request line is still open, in its first
    /// 64 bytes.
    fn first_in_byte_order(
        &self,
        buf: &[u8],
        at: usize,
        error: HeadError,
        limits: &Limits,
    ) -> HeadError {
        let looked_at = if self.seen_request_line {
            &buf[..self.line_start]
        } else {
            &buf[..at.min(self.line_start + YOUNG_LINE)]
        };
        check_partial(looked_at, limits).err().unwrap_or(error)
    }
}

fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), HeadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.head_fields + 1];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(_) => Ok(()),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyFields),
        Err(_) => Err(HeadError::Syntax),
    }
}

fn finish(buf: &[u8], end: usize, limits: &Limits) -> Result<RequestHead, HeadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.head_fields + 1];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Syntax),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(_) => return Err(HeadError::Syntax),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Syntax);
    };
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), Bytes::copy_from_slice(trim_ows(h.value))))
        .collect::<Vec<_>>();
    if headers.len() > limits.head_fields {
        return Err(HeadError::TooManyFields);
    }
    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        headers,
        len: end,
    })
}

/// How the body of an ingest request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    Length(u64),
}

/// What the stream endpoint reads from a `POST /` head (docs/protocol.md §2.1).
#[derive(Debug, Clone, PartialEq)]
pub struct IngestHead {
    /// The connection's default token (`plotly-streamtoken`).
    pub token: Option<Token>,
    /// The body framing.
    pub framing: Framing,
    /// The `plotly-convertTimestamp` zone name, quotes removed.
    pub convert_timestamp: Option<String>,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// An `Expect` other than `100-continue` was sent (417 after admission, docs/protocol.md §4.3).
    pub expect_unsupported: bool,
}

impl IngestHead {
    /// Checks framing, encoding and the token header in the order of docs/protocol.md §4.3 (3)–(4).
    pub fn from_head(head: &RequestHead, limits: &Limits) -> Result<IngestHead, HeadError> {
        let framing = framing(head, limits)?;
        if let Some(enc) = head.field("content-encoding") {
            if !enc.eq_ignore_ascii_case(b"identity") {
                return Err(HeadError::ContentEncoding);
            }
        }
        let mut tokens = head.fields("plotly-streamtoken");
        let token = match (tokens.next(), tokens.next()) {
            (None, _) => None,
            (Some(v), None) => Some(Token::parse(v).ok_or(HeadError::Token)?),
            (Some(_), Some(_)) => return Err(HeadError::Token),
        };
        let convert_timestamp = head.field("plotly-converttimestamp").map(|v| {
            String::from_utf8_lossy(v)
                .trim()
                .trim_matches('"')
                .to_owned()
        });
        let mut expect_continue = false;
        let mut expect_unsupported = false;
        for value in head.fields("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                expect_unsupported = true;
            }
        }
        Ok(IngestHead {
            token,
            framing,
            convert_timestamp,
            expect_continue,
            expect_unsupported,
        })
    }
}

/// docs/reliability.md P2: exactly one framing per request.
fn framing(head: &RequestHead, limits: &Limits) -> Result<Framing, HeadError> {
    let mut te_fields = head.fields("transfer-encoding").peekable();
    let has_cl = head.field("content-length").is_some();
    if te_fields.peek().is_some() {
        if has_cl || head.version == 0 {
            return Err(HeadError::Framing);
        }
        let mut elements: Vec<&[u8]> = Vec::new();
        for field in te_fields {
            elements.extend(
                field
                    .split(|b| *b == b',')
                    .map(trim_ows)
                    .filter(|e| !e.is_empty()),
            );
        }
        let is_chunked = |e: &[u8]| {
            let name = e.split(|b| *b == b';').next().unwrap_or(e);
            trim_ows(name).eq_ignore_ascii_case(b"chunked")
        };
        let n_chunked = elements.iter().filter(|e| is_chunked(e)).count();
        let Some(last) = elements.last() else {
            return Err(HeadError::Framing);
        };
        if n_chunked > 1 || (n_chunked == 1 && !is_chunked(last)) {
            return Err(HeadError::Framing);
        }
        if n_chunked == 1 && !last.eq_ignore_ascii_case(b"chunked") {
            return Err(HeadError::Framing); // chunked with parameters
        }
        if elements.len() > 1 || n_chunked == 0 {
            return Err(HeadError::UnsupportedCoding);
        }
        return Ok(Framing::Chunked);
    }
    match single_content_length(head)? {
        None => Err(HeadError::NoFraming),
        Some(n) if n > limits.content_length => Err(HeadError::BodyTooLarge),
        Some(n) => Ok(Framing::Length(n)),
    }
}

/// The body length of a request to a route that takes bodies by `Content-Length` only (the
/// REST subset, `/clientresp`), under P2's rules: `Transfer-Encoding` in any form is refused
/// (`Framing`), `Content-Length` must be one field of `1*DIGIT` that fits u64, and over `max`
/// it is `BodyTooLarge` before any body byte is read. No `Content-Length` is an empty body.
pub fn content_length(head: &RequestHead, max: u64) -> Result<u64, HeadError> {
    if head.field("transfer-encoding").is_some() {
        return Err(HeadError::Framing);
    }
    match single_content_length(head)? {
        Some(n) if n > max => Err(HeadError::BodyTooLarge),
        n => Ok(n.unwrap_or(0)),
    }
}

/// P2: one `Content-Length` field of `1*DIGIT` that fits u64; repeats, lists and signs are
/// `Framing`.
fn single_content_length(head: &RequestHead) -> Result<Option<u64>, HeadError> {
    let mut cl_fields = head.fields("content-length");
    match (cl_fields.next(), cl_fields.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(HeadError::Framing),
        (Some(v), None) => {
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Framing);
            }
            v.iter()
                .try_fold(0u64, |acc, d| {
                    acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                })
                .map(Some)
                .ok_or(HeadError::Framing)
        }
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// How many bytes of a request line are checked for syntax before its LF arrives.
const YOUNG_LINE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        HeadParser::new().parse(bytes, &Limits::default())
    }

    fn ingest(head: &str) -> Result<IngestHead, HeadError> {
        let h = parse_all(head.as_bytes())
            .expect("syntax")
            .expect("complete");
        IngestHead::from_head(&h, &Limits::default())
    }

    const H: &str = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn chart_studio_head_with_two_hosts() {
        let h = "POST / HTTP/1.1\r\nHost: 127.0.0.1:40541\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\n\r\n";
        let ih = ingest(h).unwrap();
        assert_eq!(ih.framing, Framing::Chunked);
        assert_eq!(ih.token.unwrap().as_str(), "tok1");
    }

    #[test]
    fn bare_lf_and_leading_empty_lines() {
        let h = "\r\n\n\nPOST / HTTP/1.1\nHost: 127.0.0.1\nplotly-streamtoken: tok1\nTransfer-Encoding: chunked\n\n{";
        let head = parse_all(h.as_bytes()).unwrap().unwrap();
        assert_eq!(head.len, h.len() - 1);
        assert_eq!(head.route(), Route::Ingest);
    }

    #[test]
    fn incremental_parse_gives_the_same_head() {
        let mut p = HeadParser::new();
        for n in 1..H.len() {
            assert_eq!(
                p.parse(&H.as_bytes()[..n], &Limits::default()),
                Ok(None),
                "at {n}"
            );
        }
        assert_eq!(
            p.parse(H.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap()
                .len,
            H.len()
        );
    }

    #[test]
    fn malformed_fields_are_400() {
        for field in ["X-A : v", "X-A: a\rb", "X-A: a\x00b", ": v", "X-A: a\r\n b"] {
            let h = format!(
                "POST / HTTP/1.1\r\nHost: a\r\n{field}\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            assert_eq!(parse_all(h.as_bytes()), Err(HeadError::Syntax), "{field:?}");
        }
        let h = "POST / HTTP/1.1\r\n\tX-A: v\r\n\r\n";
        assert_eq!(parse_all(h.as_bytes()), Err(HeadError::Syntax));
    }

    #[test]
    fn bad_request_lines_fail_early() {
        for line in [
            "POST / http/1.1\r\n",
            "POST / HTTP/1.10\r\n",
            "POST  / HTTP/1.1\r\n",
            "POST / HTTP/2.0\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(
                parse_all(line.as_bytes()),
                Err(HeadError::Syntax),
                "{line:?}"
            );
        }
        assert_eq!(
            parse_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Err(HeadError::Syntax)
        );
    }

    #[test]
    fn limits_at_boundaries() {
        let l = Limits::default();
        let line = |n: usize| format!("POST /{} HTTP/1.1\r\n", "a".repeat(n - 15));
        assert_eq!(line(8192).len(), 8194);
        assert!(parse_all(format!("{}\r\n", line(8192)).as_bytes())
            .unwrap()
            .is_some());
        assert_eq!(
            parse_all(format!("{}\r\n", line(8193)).as_bytes()),
            Err(HeadError::RequestLineTooLong)
        );
        // Detected as the 8 193rd byte arrives, before the line ends.
        assert_eq!(
            parse_all(&line(8193).as_bytes()[..8194]),
            Err(HeadError::RequestLineTooLong)
        );
        assert_eq!(
            parse_all(&line(8192).as_bytes()[..8193]),
            Ok(None),
            "8 192 bytes and a CR may still end well"
        );
        assert_eq!(
            parse_all(&line(8193).as_bytes()[..8195]),
            Err(HeadError::RequestLineTooLong)
        );

        let head_of = |total: usize| {
            let base = "POST / HTTP/1.1\r\nX: \r\n\r\n".len();
            format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(total - base))
        };
        assert!(parse_all(head_of(l.head_bytes).as_bytes())
            .unwrap()
            .is_some());
        assert_eq!(
            parse_all(head_of(l.head_bytes + 1).as_bytes()),
            Err(HeadError::TooLarge)
        );
        assert_eq!(
            parse_all(&head_of(l.head_bytes + 100).as_bytes()[..l.head_bytes + 1]),
            Err(HeadError::TooLarge)
        );

        let fields = |n: usize| format!("POST / HTTP/1.1\r\n{}\r\n", "X: v\r\n".repeat(n));
        assert!(parse_all(fields(31).as_bytes()).unwrap().is_some());
        assert!(parse_all(fields(32).as_bytes()).unwrap().is_some());
        assert_eq!(
            parse_all(fields(33).as_bytes()),
            Err(HeadError::TooManyFields)
        );
    }

    /// Feeds `input` whole, byte by byte, and split in two at every offset (at most 500 of
    /// them for long inputs) and checks that each gives `expected`: `Ok(Some(len))` for a head
    /// of `len` bytes, `Ok(None)` for one still incomplete, or the error.
    #[track_caller]
    fn check_verdict(input: &[u8], limits: &Limits, expected: Result<Option<usize>, HeadError>) {
        let feed = |pieces: &[&[u8]]| {
            let mut p = HeadParser::new();
            let mut end = 0;
            let mut verdict = Ok(None);
            for piece in pieces {
                end += piece.len();
                verdict = p.parse(&input[..end], limits).map(|h| h.map(|h| h.len));
                if verdict != Ok(None) {
                    break;
                }
            }
            verdict
        };
        assert_eq!(feed(&[input]), expected, "whole");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&bytes), expected, "byte by byte");
        let step = (input.len() / 500).max(1);
        for at in (1..input.len()).step_by(step) {
            let (a, b) = input.split_at(at);
            assert_eq!(feed(&[a, b]), expected, "split at {at}");
        }
    }

    /// Small limits, so that L3–L5 cross within a few hundred bytes.
    fn small() -> Limits {
        Limits {
            request_line: 100,
            head_bytes: 200,
            head_fields: 4,
            ..Limits::default()
        }
    }

    #[test]
    fn fuzz_head_bad_request_line_then_too_many_fields() {
        // cargo fuzz run head (issue #16), minimized: 34 one-byte lines, the fewest bytes that
        // cross L5. The request line `a` is malformed as its LF arrives; the 33rd field comes
        // later. Whole it was 431 TooManyFields, byte by byte 400 Syntax.
        check_verdict(
            &b"a\n".repeat(34),
            &Limits::default(),
            Err(HeadError::Syntax),
        );
        // The input as the fuzzer found it.
        let found = [
            &b"\xff\n"[..],
            &b"\x8a\n".repeat(3),
            b"2\n",
            &b"\x8a\n".repeat(7),
            b"2\n",
            &b"\x8a\n".repeat(21),
        ]
        .concat();
        assert_eq!(found.len(), 68);
        check_verdict(&found, &Limits::default(), Err(HeadError::Syntax));
        // With one line fewer no limit is crossed: 68 bytes are the minimum.
        check_verdict(
            &b"a\n".repeat(33),
            &Limits::default(),
            Err(HeadError::Syntax),
        );
    }

    #[test]
    fn limit_errors_yield_to_earlier_syntax_errors() {
        let l = small();
        let fields = |n: usize| "X: v\r\n".repeat(n);
        for (input, expected) in [
            // L5: a malformed field before the one that crosses it wins.
            (
                format!("POST / HTTP/1.1\r\nbad\r\n{}", fields(4)),
                Err(HeadError::Syntax),
            ),
            // ... but the crossing line's own bytes come too late: its LF crosses L5 first.
            (
                format!("POST / HTTP/1.1\r\n{}bad\r\n", fields(4)),
                Err(HeadError::TooManyFields),
            ),
            // L4: a malformed field completed before byte 201 arrives wins; one completed after
            // it does not.
            (
                format!("POST / HTTP/1.1\r\nbad\r\nX: {}\r\n", "v".repeat(200)),
                Err(HeadError::Syntax),
            ),
            (
                format!("POST / HTTP/1.1\r\nX: {}\r\nbad\r\n", "v".repeat(200)),
                Err(HeadError::TooLarge),
            ),
            // L4 crossed by the LF of the empty line that would have ended the head.
            (
                format!("POST / HTTP/1.1\r\nbad\r\nX: {}\r\n\r\n", "v".repeat(172)),
                Err(HeadError::Syntax),
            ),
            (
                format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(177)),
                Err(HeadError::TooLarge),
            ),
            // L3: the first 64 bytes of a young request line count, later ones do not.
            (
                format!("\x16\x03\x01{}\n", "a".repeat(120)),
                Err(HeadError::Syntax),
            ),
            (
                format!("GET /{}\x01{} HTTP/1.1\r\n", "a".repeat(58), "a".repeat(60)),
                Err(HeadError::Syntax),
            ),
            (
                format!("GET /{}\x01{} HTTP/1.1\r\n", "a".repeat(59), "a".repeat(60)),
                Err(HeadError::RequestLineTooLong),
            ),
            // L3 before L4, even when the request line's LF comes after L4.
            (
                format!("GET /{} HTTP/1.1\r\n", "a".repeat(300)),
                Err(HeadError::RequestLineTooLong),
            ),
            // Leading empty lines shift the request line's 64 bytes with it.
            (
                format!("\r\n\n\r\n\x01{}\n", "a".repeat(120)),
                Err(HeadError::Syntax),
            ),
        ] {
            check_verdict(input.as_bytes(), &l, expected);
        }
    }

    #[test]
    fn limit_errors_yield_to_earlier_syntax_errors_at_default_limits() {
        let l = Limits::default();
        // A TLS hello whose first LF comes after L3: 400, as its first byte already said.
        let tls = [&b"\x16\x03\x01"[..], &[b'a'; 9000], b"\n"].concat();
        check_verdict(&tls, &l, Err(HeadError::Syntax));
        // A request line over L3 whose LF comes after L4: 414 at its 8 193rd byte.
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(20_000));
        check_verdict(long.as_bytes(), &l, Err(HeadError::RequestLineTooLong));
        // A malformed field, then a field over L4: 400 as the malformed field's LF arrives.
        let big = format!(
            "POST / HTTP/1.1\r\nbad\r\nX: {}\r\n\r\n",
            "v".repeat(17_000)
        );
        check_verdict(big.as_bytes(), &l, Err(HeadError::Syntax));
    }

    #[test]
    fn transfer_encoding_table() {
        let with_te = |te: &str| {
            ingest(&H.replace(
                "Transfer-Encoding: chunked",
                &format!("Transfer-Encoding: {te}"),
            ))
        };
        for (te, expected) in [
            ("gzip, chunked", Err(HeadError::UnsupportedCoding)),
            ("chunked, gzip", Err(HeadError::Framing)),
            ("identity", Err(HeadError::UnsupportedCoding)),
            ("xchunked", Err(HeadError::UnsupportedCoding)),
            ("chunkedchunked", Err(HeadError::UnsupportedCoding)),
            ("chunked;x=1", Err(HeadError::Framing)),
            ("", Err(HeadError::Framing)),
            (",", Err(HeadError::Framing)),
            ("chunked, chunked", Err(HeadError::Framing)),
            ("\u{a0}chunked", Err(HeadError::UnsupportedCoding)),
        ] {
            assert_eq!(
                with_te(te).map(|h| h.framing),
                expected.map(|()| Framing::Chunked),
                "{te:?}"
            );
        }
        for te in [
            "Chunked",
            "CHUNKED",
            "chunked \t",
            ",chunked",
            "chunked,",
            " , chunked , ",
        ] {
            assert_eq!(with_te(te).unwrap().framing, Framing::Chunked, "{te:?}");
        }
        let two = H.replace(
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        );
        assert_eq!(ingest(&two), Err(HeadError::Framing));
        let upper = H.replace("Transfer-Encoding", "TRANSFER-ENCODING");
        assert_eq!(ingest(&upper).unwrap().framing, Framing::Chunked);
    }

    #[test]
    fn content_length_table() {
        let cl = |v: &str| {
            ingest(&format!(
                "POST / HTTP/1.1\r\nplotly-streamtoken: tok1\r\nContent-Length: {v}\r\n\r\n"
            ))
        };
        assert_eq!(cl("28").unwrap().framing, Framing::Length(28));
        for bad in [
            "+14",
            "-1",
            "0x0e",
            "1_4",
            "",
            "14, 15",
            "14, 14",
            "99999999999999999999999",
        ] {
            assert_eq!(cl(bad), Err(HeadError::Framing), "{bad:?}");
        }
        assert_eq!(cl("8388608").unwrap().framing, Framing::Length(8_388_608));
        assert_eq!(cl("8388609"), Err(HeadError::BodyTooLarge));
        let two = "POST / HTTP/1.1\r\nContent-Length: 14\r\nContent-Length: 14\r\n\r\n";
        assert_eq!(ingest(two), Err(HeadError::Framing));
        let both = H.replace("\r\n\r\n", "\r\nContent-Length: 14\r\n\r\n");
        assert_eq!(ingest(&both), Err(HeadError::Framing));
        let http10 =
            "POST / HTTP/1.0\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(ingest(http10), Err(HeadError::Framing));
        assert_eq!(
            ingest("POST / HTTP/1.1\r\nplotly-streamtoken: tok1\r\n\r\n"),
            Err(HeadError::NoFraming)
        );
    }

    #[test]
    fn token_header_rules() {
        let extra = H.replace("\r\n\r\n", "\r\nplotly-streamtoken: tok2\r\n\r\n");
        assert_eq!(ingest(&extra), Err(HeadError::Token));
        for bad in [
            "tok1, tok2",
            "../../etc/passwd",
            "tok 1",
            "",
            &"A".repeat(65),
        ] {
            assert_eq!(
                ingest(&H.replace("tok1", bad)),
                Err(HeadError::Token),
                "{bad:?}"
            );
        }
        assert!(ingest(&H.replace("tok1", &"A".repeat(64))).is_ok());
        assert!(
            ingest(&H.replace("plotly-streamtoken", "PLOTLY-STREAMTOKEN"))
                .unwrap()
                .token
                .is_some()
        );
        let tz = H.replace(
            "\r\n\r\n",
            "\r\nPlotly-ConvertTimestamp: \"America/Montreal\"\r\n\r\n",
        );
        assert_eq!(
            ingest(&tz).unwrap().convert_timestamp.as_deref(),
            Some("America/Montreal")
        );
        let gz = H.replace("\r\n\r\n", "\r\nContent-Encoding: gzip\r\n\r\n");
        assert_eq!(ingest(&gz), Err(HeadError::ContentEncoding));
    }

    #[test]
    fn routes() {
        let route = |h: &str| parse_all(h.as_bytes()).unwrap().unwrap().route();
        assert_eq!(
            route("POST http://127.0.0.1/ HTTP/1.1\r\n\r\n"),
            Route::Ingest
        );
        assert_eq!(route("POST /?a=b HTTP/1.1\r\n\r\n"), Route::Ingest);
        assert_eq!(route("POST /foo HTTP/1.1\r\n\r\n"), Route::Other);
        assert_eq!(route("POST * HTTP/1.1\r\n\r\n"), Route::Invalid);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::Other);
        for m in ["PUT", "DELETE", "OPTIONS", "post"] {
            assert_eq!(
                route(&format!("{m} / HTTP/1.1\r\n\r\n")),
                Route::MethodNotAllowed,
                "{m}"
            );
        }
    }
}
