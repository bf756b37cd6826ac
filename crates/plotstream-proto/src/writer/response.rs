//! The server's final response, read as it arrives and within L56 (docs/protocol.md §4.1).
//!
//! The protocol's only acknowledgement is the `points` count of the `200` body
//! (`{"status":200,"message":"healthy endpoint disconnect","points":N}`): this module is the one
//! place that reads it. Interim `1xx` responses and empty lines before a status line are
//! skipped; the body is `Content-Length` bytes, or everything until the server closes when the
//! head has no `Content-Length`. The verdict never depends on how the bytes were split.

use bytes::Bytes;

use crate::limits::Limits;
use crate::status::Status;

/// What the server answered, as far as it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The final status; `None` without a complete, well-formed response head.
    pub(crate) status: Option<Status>,
    /// `N` of a complete `200` body holding `"points":N`.
    pub(crate) points: Option<u64>,
}

impl Answer {
    const NONE: Answer = Answer {
        status: None,
        points: None,
    };
}

/// Reads one final response, holding at most `limit` bytes (L56).
#[derive(Debug)]
pub(crate) struct ResponseReader {
    limit: usize,
    /// Invariant: `buf.len() <= limit`.
    buf: Vec<u8>,
    /// Where the head being read starts: after interim responses and empty lines.
    head_start: usize,
    /// `buf[..scanned]` holds no end of that head.
    scanned: usize,
    head: Option<Head>,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    status: Status,
    body_start: usize,
    /// `None`: the body ends when the server closes.
    body_len: Option<usize>,
}

/// Header fields read from a response head; more is a malformed response.
const MAX_FIELDS: usize = 32;

impl ResponseReader {
    pub(crate) fn new(limit: usize) -> ResponseReader {
        ResponseReader {
            limit,
            buf: Vec::new(),
            head_start: 0,
            scanned: 0,
            head: None,
        }
    }

    /// Takes bytes from the server; the answer once it is decided: the response is complete or
    /// malformed, or a byte past the limit arrived before it was complete. The caller stops
    /// feeding then.
    pub(crate) fn push(&mut self, data: &[u8]) -> Option<Answer> {
        let take = data.len().min(self.limit - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if let Some(answer) = self.advance() {
            return Some(self.decided(answer));
        }
        if take < data.len() {
            // L56: the status of a head that arrived whole stands; a body cut short says nothing.
            let status = self.head.map(|h| h.status);
            return Some(self.decided(Answer {
                status,
                points: None,
            }));
        }
        None
    }

    /// The server closed: the answer from what arrived.
    pub(crate) fn eof(&mut self) -> Answer {
        let answer = match self.head {
            None => Answer::NONE,
            Some(head) => {
                let body = &self.buf[head.body_start..];
                match head.body_len {
                    Some(len) if body.len() < len => Answer {
                        status: Some(head.status),
                        points: None,
                    },
                    Some(len) => answer(head.status, &body[..len]),
                    None => answer(head.status, body),
                }
            }
        };
        self.decided(answer)
    }

    fn decided(&mut self, answer: Answer) -> Answer {
        self.buf = Vec::new();
        answer
    }

    fn advance(&mut self) -> Option<Answer> {
        loop {
            let Some(head) = self.head else {
                match self.read_head() {
                    Step::Incomplete => return None,
                    Step::Malformed => return Some(Answer::NONE),
                    Step::Read => continue,
                }
            };
            let body = &self.buf[head.body_start..];
            return match head.body_len {
                Some(len) if body.len() >= len => Some(answer(head.status, &body[..len])),
                _ => None,
            };
        }
    }

    /// Reads the next head if it has arrived whole; a final one is kept in `self.head`.
    fn read_head(&mut self) -> Step {
        let buf = &self.buf;
        while self.head_start < buf.len() && matches!(buf[self.head_start], b'\r' | b'\n') {
            self.head_start += 1;
        }
        let from = self.scanned.max(self.head_start);
        let Some(end) = head_end(&buf[self.head_start..], from - self.head_start) else {
            // Two bytes of overlap: the next search may complete `\n\r\n` across reads.
            self.scanned = buf.len().saturating_sub(2).max(self.head_start);
            return Step::Incomplete;
        };
        self.scanned = self.head_start + end;
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut fields);
        let (n, code) = match resp.parse(&buf[self.head_start..]) {
            Ok(httparse::Status::Complete(n)) => match resp.code {
                Some(code) => (n, code),
                None => return Step::Malformed,
            },
            Ok(httparse::Status::Partial) => return Step::Incomplete,
            Err(_) => return Step::Malformed,
        };
        if (100..200).contains(&code) {
            self.head_start += n;
            return Step::Read;
        }
        let body_len = if code == 204 || code == 304 {
            Some(0)
        } else {
            match content_length(resp.headers) {
                Some(len) => len,
                None => return Step::Malformed,
            }
        };
        self.head = Some(Head {
            status: Status::new(code),
            body_start: self.head_start + n,
            body_len,
        });
        Step::Read
    }
}

/// What one look for a head found.
enum Step {
    /// It has not arrived whole.
    Incomplete,
    /// A head was read: an interim one was skipped, or the final one kept.
    Read,
    /// It is not a response head (or its `Content-Length` is not one number).
    Malformed,
}

/// Where the head in `buf` ends (just past its empty line), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let lf = at + i;
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => at = lf + 1,
        }
    }
    None
}

/// The body length a head declares: `Ok(None)` without `Content-Length`; `None` (malformed)
/// for a value that is not digits or fields that disagree.
fn content_length(fields: &[httparse::Header<'_>]) -> Option<Option<usize>> {
    let mut len = None;
    for field in fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("content-length"))
    {
        let value = field.value.trim_ascii();
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: usize = std::str::from_utf8(value).ok()?.parse().ok()?;
        if len.is_some_and(|l| l != n) {
            return None;
        }
        len = Some(n);
    }
    Some(len)
}

fn answer(status: Status, body: &[u8]) -> Answer {
    Answer {
        status: Some(status),
        points: (status == Status::OK)
            .then(|| acknowledged_points(body))
            .flatten(),
    }
}

/// `N` of a JSON object body holding `"points":N`, N a whole number below 2^53.
fn acknowledged_points(body: &[u8]) -> Option<u64> {
    let body = Bytes::copy_from_slice(body.trim_ascii());
    let members = crate::json::parse_object(&body, &Limits::default()).ok()?;
    let (_, value) = members.iter().find(|(k, _)| k.as_bytes() == b"points")?;
    match *value {
        crate::Value::Number(n) if n >= 0.0 && n.fract() == 0.0 && n < 9_007_199_254_740_992.0 => {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
            let n = n as u64;
            Some(n)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16 * 1024;

    fn ok(points: u64) -> Vec<u8> {
        let mut r = Vec::new();
        crate::status::encode_response(Status::OK, points, &mut r);
        r
    }

    /// Feeds `parts` in order, then EOF if nothing was decided before.
    fn read(limit: usize, parts: &[&[u8]]) -> Answer {
        let mut r = ResponseReader::new(limit);
        for part in parts {
            if let Some(a) = r.push(part) {
                return a;
            }
        }
        r.eof()
    }

    fn answered(status: u16, points: Option<u64>) -> Answer {
        Answer {
            status: Some(Status::new(status)),
            points,
        }
    }

    #[test]
    fn the_200_body_says_how_many_points_were_accepted() {
        assert_eq!(read(LIMIT, &[&ok(17)]), answered(200, Some(17)));
        let mut timeout = Vec::new();
        crate::status::encode_response(Status::REQUEST_TIMEOUT, 9, &mut timeout);
        assert_eq!(read(LIMIT, &[&timeout]), answered(408, None));
        // The bench's hyper sink: another member first, spaces after colons.
        let sink = b"HTTP/1.1 200 OK\r\ncontent-length: 37\r\n\r\n\
                     {\"status\":200,\"bytes\":9, \"points\": 3}";
        assert_eq!(read(LIMIT, &[sink]), answered(200, Some(3)));
        for body in [
            &b"healthy"[..],
            b"{\"points\":-1}",
            b"{\"points\":1.5}",
            b"{\"points\":\"3\"}",
            b"{\"points\":1,\"points\":2}",
            b"{\"point\":1}",
        ] {
            let mut r =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(body);
            assert_eq!(read(LIMIT, &[&r]), answered(200, None), "{body:?}");
        }
    }

    /// The verdict of every split is the verdict of the whole: at each byte, byte by byte, and
    /// with a `100 Continue` and empty lines before the final response.
    #[test]
    fn a_response_split_anywhere_reads_the_same() {
        let mut continued = b"\r\nHTTP/1.1 100 Continue\r\n\r\n".to_vec();
        continued.extend_from_slice(&ok(42));
        let until_close = b"HTTP/1.1 200 OK\nContent-Type: application/json\n\n{\"points\":7}";
        let mut error = Vec::new();
        crate::status::encode_response(Status::LOCKED, 0, &mut error);
        for (wire, expected) in [
            (ok(42), answered(200, Some(42))),
            (continued, answered(200, Some(42))),
            (until_close.to_vec(), answered(200, Some(7))),
            (error, answered(423, None)),
        ] {
            assert_eq!(read(LIMIT, &[&wire]), expected);
            for at in 0..=wire.len() {
                let (a, b) = wire.split_at(at);
                assert_eq!(read(LIMIT, &[a, b]), expected, "split at {at}");
            }
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            assert_eq!(read(LIMIT, &bytes), expected, "byte by byte");
        }
    }

    #[test]
    fn an_incomplete_or_malformed_response_says_what_it_can() {
        let whole = ok(5);
        // The head arrived, the body did not: the status stands, the count is unknown.
        assert_eq!(
            read(LIMIT, &[&whole[..whole.len() - 1]]),
            answered(200, None)
        );
        assert_eq!(read(LIMIT, &[b"HTTP/1.1 408 Req"]), Answer::NONE);
        assert_eq!(read(LIMIT, &[b""]), Answer::NONE);
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let mut r = ResponseReader::new(LIMIT);
            assert_eq!(r.push(bad), Some(Answer::NONE), "{bad:?}");
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(ResponseReader::new(LIMIT).push(&many), Some(Answer::NONE));
    }

    /// A response of `limit + d` bytes, for `d` in −1, 0, +1: a head whose body is padded.
    fn sized(limit: usize, extra: isize) -> Vec<u8> {
        let body = br#"{"status":200,"message":"healthy endpoint disconnect","points":5}"#;
        let total = limit.checked_add_signed(extra).unwrap();
        let pad = |width: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Pad: {}\r\n\r\n",
                body.len(),
                "p".repeat(width)
            )
        };
        let head_len = pad(0).len() + body.len();
        let mut r = pad(total - head_len).into_bytes();
        r.extend_from_slice(body);
        assert_eq!(r.len(), total);
        r
    }

    /// L56 at limit − 1, limit and limit + 1, whole and byte by byte.
    #[test]
    fn what_is_held_is_bounded_by_l56() {
        let limit = 512;
        for (extra, expected) in [
            (-1, answered(200, Some(5))),
            (0, answered(200, Some(5))),
            // The head arrived whole; the body's last byte is past the limit.
            (1, answered(200, None)),
        ] {
            let wire = sized(limit, extra);
            assert_eq!(read(limit, &[&wire]), expected, "limit{extra:+}");
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            assert_eq!(read(limit, &bytes), expected, "limit{extra:+} byte by byte");
        }
        // An endless body after a whole head: the status, no count, and never more than the
        // limit held, however much the server sends.
        let mut r = ResponseReader::new(limit);
        assert_eq!(
            r.push(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            None
        );
        let noise = [b'x'; 100];
        let mut decided = None;
        for _ in 0..1_000 {
            if let Some(a) = r.push(&noise) {
                decided = Some(a);
                break;
            }
            assert!(r.buf.len() <= limit);
        }
        assert_eq!(decided, Some(answered(200, None)));
        // An endless head, and a body that lasts until the server closes: the same bound.
        assert_eq!(
            read(limit, &[b"HTTP/1.1 200 OK\r\n", &[b'x'; 1024]]),
            Answer::NONE
        );
        assert_eq!(
            read(limit, &[b"HTTP/1.1 200 OK\r\n\r\n", &[b'x'; 1024]]),
            answered(200, None)
        );
        // Endless empty lines or interim responses count too.
        assert_eq!(read(limit, &[&[b'\n'; 1024]]), Answer::NONE);
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(100);
        assert_eq!(read(limit, &[&interim]), Answer::NONE);
    }

    /// Pieces that build responses, well-formed or not, so random sequences reach every state.
    const PIECES: &[&[u8]] = &[
        b"HTTP/1.1 ",
        b"200 OK",
        b"100 Continue",
        b"408 Request Timeout",
        b"204 No Content",
        b"\r\n",
        b"\n",
        b"\r",
        b"Content-Length: ",
        b"3",
        b"12",
        b"{\"points\":",
        b"7}",
        b" ",
        b"x",
    ];

    /// Feeds `parts`, checking the bound after every read; then EOF.
    fn read_bounded(limit: usize, parts: &[&[u8]]) -> Answer {
        let mut r = ResponseReader::new(limit);
        for part in parts {
            let answer = r.push(part);
            assert!(r.buf.len() <= limit, "{} held, limit {limit}", r.buf.len());
            if let Some(a) = answer {
                return a;
            }
        }
        r.eof()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Whole, byte by byte, or cut anywhere: one answer, and never more than the limit held.
        #[test]
        fn the_answer_does_not_depend_on_the_reads(
            picks in proptest::collection::vec(0..PIECES.len(), 0..40),
            cuts in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6),
            limit in 16usize..160,
            with_head in proptest::prelude::any::<bool>(),
        ) {
            let head: &[u8] = if with_head {
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n"
            } else {
                b""
            };
            let pieces = picks.iter().flat_map(|&i| PIECES[i].iter().copied());
            let wire: Vec<u8> = head.iter().copied().chain(pieces).collect();
            let whole = read_bounded(limit, &[&wire]);
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            proptest::prop_assert_eq!(read_bounded(limit, &bytes), whole);
            let parts = crate::fuzzing::cut(&wire, &cuts);
            proptest::prop_assert_eq!(read_bounded(limit, &parts), whole);
        }
    }
}
