//! The client side of one stream connection, as a sans-IO state machine.
//!
//! A driver (plotstream-client, the load generator) connects a socket, calls
//! [`Writer::handle_connected`], then [`Writer::write_point`] / [`Writer::write_update`] /
//! [`Writer::heartbeat`] / [`Writer::close`], and moves [`Writer::poll_transmit`]'s bytes to the
//! socket. Bytes from the server go to [`Writer::handle_input`]; the final response comes out of
//! [`Writer::poll_event`] as its status and the points it acknowledged, the protocol's only
//! acknowledgement (docs/protocol.md §4.1), read here and nowhere else, whatever the reads'
//! sizes, holding at most L56 bytes of it. [`Writer::poll_timeout`] is when the automatic
//! heartbeat is due. Time is a monotonic `Duration` since a driver-chosen origin, as in
//! [`crate::ingest`].

mod response;

use std::time::Duration;

use crate::encode::{self, ChunkBatch, Flavour, Num};
use crate::limits::Limits;
use crate::status::Status;
use crate::update::{Token, Update};
use response::ResponseReader;

/// How a writer speaks.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Whose bytes to reproduce.
    pub flavour: Flavour,
    /// The `Host` value, with `:port` when the port is not 80.
    pub host: String,
    /// The stream token: a header for every flavour but Arduino, which names it in each line.
    pub token: Option<Token>,
    /// `plotly-convertTimestamp`, sent by the Arduino flavour.
    pub convert_timestamp: Option<String>,
    /// Send a heartbeat when nothing was written for this long (Plotly's advice: under 30 s
    /// between writes, because the server's idle timeout is 60 s). `None` disables it.
    pub heartbeat: Option<Duration>,
    /// L56: bytes of the server's response held at most ([`Limits::response_bytes`]).
    pub response_bytes: usize,
}

impl WriterConfig {
    /// A config for `token` at `host`, in the given flavour, with a 30 s heartbeat.
    pub fn new(flavour: Flavour, host: impl Into<String>, token: Token) -> WriterConfig {
        WriterConfig {
            flavour,
            host: host.into(),
            token: Some(token),
            convert_timestamp: None,
            heartbeat: Some(Duration::from_secs(30)),
            response_bytes: Limits::default().response_bytes,
        }
    }

    /// The token a line names: the Arduino names its own in every line.
    #[inline]
    fn line_token(&self) -> Option<&Token> {
        if self.flavour == Flavour::Arduino {
            self.token.as_ref()
        } else {
            None
        }
    }
}

/// What the writer's driver must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEvent {
    /// The server answered, or closed; the connection is over.
    Response {
        /// The final status; `None` when the server closed without a response head, or sent
        /// one that is malformed or longer than L56.
        status: Option<Status>,
        /// The points the server acknowledged: `N` of a `200` whose body arrived whole and
        /// says `"points":N` (plotstream's `{"status":200,"message":...,"points":N}`). `None`
        /// for any other status, a body cut short (by the close or by L56), or one without it.
        points: Option<u64>,
    },
}

/// One writer connection.
///
/// # Example: write a stream
///
/// A writer in chart_studio's flavour writes three points and closes; proto's own [`Ingest`]
/// plays the server, and its response goes back to the writer one byte per read. A driver does
/// the same with a socket in between (`plotstream-client` is one).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use bytes::BytesMut;
/// use plotstream_proto::encode::{Flavour, Num};
/// use plotstream_proto::writer::{should_reconnect, Writer, WriterConfig, WriterEvent};
/// use plotstream_proto::{Event, Ingest, IngestConfig, Status, Token};
///
/// let now = Duration::ZERO;
/// let token = Token::parse(b"abcdef1234").expect("a valid token");
/// let config = WriterConfig::new(Flavour::Python, "127.0.0.1:9999", token);
/// let mut writer = Writer::new(config, now);
/// writer.handle_connected(now); // the socket connected: the head is queued
/// for i in 0..3 {
///     writer.write_point(now, Num::Int(i), Num::Float(0.5 * i as f64));
/// }
/// writer.close(now);
/// let mut wire = Vec::new();
/// writer.poll_transmit(&mut wire); // what the driver writes to the socket
///
/// // The server's side.
/// let mut ingest = Ingest::new(IngestConfig::default(), now);
/// ingest.handle_input(now, &mut BytesMut::from(&wire[..]));
/// while let Some(event) = ingest.poll_event(now) {
///     if let Event::Head(_) = event {
///         ingest.admit(now, SystemTime::UNIX_EPOCH);
///     }
/// }
/// let mut response = Vec::new();
/// ingest.poll_transmit(&mut response);
///
/// // Whatever the reads' sizes, the writer reports the status and the points acknowledged.
/// for byte in &response {
///     writer.handle_input(now, std::slice::from_ref(byte));
/// }
/// writer.handle_eof(now);
/// let Some(WriterEvent::Response { status, points }) = writer.poll_event() else {
///     panic!("the response is complete");
/// };
/// assert_eq!(status, Some(Status::OK));
/// assert_eq!(points, Some(3));
/// // A 200 ends one connection; the real clients open the next one.
/// assert!(should_reconnect(status));
/// ```
///
/// [`Ingest`]: crate::Ingest
#[derive(Debug)]
pub struct Writer {
    config: WriterConfig,
    state: State,
    head_sent: bool,
    /// When bytes were last queued (the heartbeat's base).
    last_write: Duration,
    out: Vec<u8>,
    response: ResponseReader,
    /// The event to report, once decided.
    answer: Option<WriterEvent>,
    n_points: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Created; no socket yet.
    Idle,
    /// Connected and writing.
    Open,
    /// The close sequence is queued; waiting for the response.
    Closing,
    /// The response event is ready.
    Answered,
    /// The response (or EOF) arrived and was reported.
    Done,
}

impl Writer {
    /// A writer that has not connected yet.
    pub fn new(config: WriterConfig, now: Duration) -> Writer {
        let response = ResponseReader::new(config.response_bytes);
        Writer {
            config,
            state: State::Idle,
            head_sent: false,
            last_write: now,
            out: Vec::new(),
            response,
            answer: None,
            n_points: 0,
        }
    }

    /// Points (data lines) queued so far.
    pub fn n_points(&self) -> u64 {
        self.n_points
    }

    /// True while writes are accepted.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Bytes queued for [`Writer::poll_transmit`].
    #[inline]
    pub fn n_queued(&self) -> usize {
        self.out.len()
    }

    /// The socket connected. Queues the head, except for node, which sends it with its first
    /// write (docs/protocol.md §2.10).
    pub fn handle_connected(&mut self, now: Duration) {
        self.state = State::Open;
        self.last_write = now;
        if self.config.flavour != Flavour::Node {
            self.queue_head();
        }
    }

    /// Queues the head now if it has not gone out yet: node's own client sends it with its
    /// first write, but a driver may need the stream to exist before that (the load generator
    /// subscribes its viewer first).
    pub fn send_head(&mut self) {
        if self.state == State::Open && !self.head_sent {
            self.queue_head();
        }
    }

    /// Queues one point `{x, y}` as one chunk.
    pub fn write_point(&mut self, now: Duration, x: Num, y: Num) {
        self.write_points(now, [(x, y)]);
    }

    /// Queues points `{x, y}` as one chunk, one line each (`--points-per-chunk`). One point is
    /// the chunk [`Writer::write_point`] writes; no point writes nothing.
    pub fn write_points(&mut self, now: Duration, points: impl IntoIterator<Item = (Num, Num)>) {
        let mut points = points.into_iter();
        let Some((x, y)) = points.next() else {
            return;
        };
        if !self.begin_write(now) {
            return;
        }
        let (flavour, token) = (self.config.flavour, self.config.line_token());
        let Some(second) = points.next() else {
            encode::encode_point_chunk(flavour, x, y, token, &mut self.out);
            self.n_points += 1;
            return;
        };
        let mut batch = ChunkBatch::begin(&mut self.out);
        for (x, y) in [(x, y), second].into_iter().chain(points) {
            batch.push_point(flavour, x, y, token, &mut self.out);
        }
        self.n_points += batch.n_points() as u64;
        batch.finish(&mut self.out);
    }

    /// Queues any update as one chunk; `token` overrides the connection's for this line.
    pub fn write_update(&mut self, now: Duration, update: &Update, token: Option<&Token>) {
        if !self.begin_write(now) {
            return;
        }
        let token = token.or(self.config.line_token());
        let mut line = Vec::new();
        encode::encode_update_line(self.config.flavour, update, token, &mut line);
        crate::chunked::encode_size(
            line.len(),
            self.config.flavour == Flavour::Arduino,
            &mut self.out,
        );
        self.out.extend_from_slice(&line);
        self.out.extend_from_slice(b"\r\n");
        self.n_points += 1;
    }

    /// Queues one line of the caller's own bytes (no LF) as one chunk, unchanged
    /// (`plotstream send` forwards what it reads).
    pub fn write_raw_line(&mut self, now: Duration, line: &[u8]) {
        if !self.begin_write(now) {
            return;
        }
        crate::chunked::encode_size(line.len() + 1, false, &mut self.out);
        self.out.extend_from_slice(line);
        self.out.extend_from_slice(b"\n\r\n");
        self.n_points += 1;
    }

    /// Queues a heartbeat chunk.
    pub fn heartbeat(&mut self, now: Duration) {
        if self.begin_write(now) {
            encode::encode_heartbeat(&mut self.out);
        }
    }

    /// Queues the flavour's close sequence; the response follows through [`Writer::poll_event`].
    pub fn close(&mut self, now: Duration) {
        if self.state != State::Open {
            return;
        }
        if !self.head_sent {
            self.queue_head();
        }
        encode::encode_close(self.config.flavour, &mut self.out);
        self.last_write = now;
        self.state = State::Closing;
    }

    /// Bytes from the server, split anywhere. Once the response is decided (complete,
    /// malformed, or past L56) later bytes are ignored.
    pub fn handle_input(&mut self, _now: Duration, data: &[u8]) {
        if matches!(self.state, State::Done | State::Answered) {
            return;
        }
        if let Some(answer) = self.response.push(data) {
            self.answer(answer);
        }
    }

    /// The server closed (or the connection failed).
    pub fn handle_eof(&mut self, _now: Duration) {
        if !matches!(self.state, State::Done | State::Answered) {
            let answer = self.response.eof();
            self.answer(answer);
        }
    }

    /// Queues a heartbeat if one is due.
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Some(at) = self.poll_timeout() {
            if now >= at {
                self.heartbeat(now);
            }
        }
    }

    /// When the next automatic heartbeat is due.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.state != State::Open {
            return None;
        }
        self.config.heartbeat.map(|every| self.last_write + every)
    }

    /// Appends the bytes to send. Into an empty `out` they move without a copy, and `out`'s
    /// allocation is kept for the next ones.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
    }

    /// The response, once.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<WriterEvent> {
        if self.state != State::Answered {
            return None;
        }
        self.state = State::Done;
        self.answer.take()
    }

    fn answer(&mut self, answer: response::Answer) {
        self.answer = Some(WriterEvent::Response {
            status: answer.status,
            points: answer.points,
        });
        self.state = State::Answered;
    }

    #[inline]
    fn begin_write(&mut self, now: Duration) -> bool {
        if self.state != State::Open {
            return false;
        }
        if !self.head_sent {
            self.queue_head();
        }
        self.last_write = now;
        true
    }

    fn queue_head(&mut self) {
        let c = &self.config;
        let header_token = if c.flavour == Flavour::Arduino {
            None
        } else {
            c.token.as_ref()
        };
        encode::encode_head(
            c.flavour,
            &c.host,
            header_token,
            c.convert_timestamp.as_deref(),
            &mut self.out,
        );
        self.head_sent = true;
    }
}

/// Whether a client should reconnect after this outcome (docs/protocol.md §5): after a close with
/// no response, a healthy disconnect (200, the legacy maintenance flap), a timeout (408) or
/// unavailability (502, 503, 520). Not after 423 (another writer holds the token), nor after
/// any other 4xx, which would repeat.
///
/// ```
/// use plotstream_proto::writer::should_reconnect;
/// use plotstream_proto::Status;
///
/// assert!(should_reconnect(None)); // the server closed without a response
/// assert!(should_reconnect(Some(Status::OK)));
/// assert!(should_reconnect(Some(Status::REQUEST_TIMEOUT)));
/// assert!(!should_reconnect(Some(Status::BAD_REQUEST)));
/// ```
pub fn should_reconnect(status: Option<Status>) -> bool {
    match status {
        None => true,
        Some(s) => matches!(s.code(), 200 | 408 | 502 | 503 | 520),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{run_to_end, Event};
    use crate::IngestConfig;

    fn token() -> Token {
        Token::parse(b"abcdef1234").unwrap()
    }

    /// Everything a writer sends, through the ingest machine: the updates arrive intact.
    #[test]
    fn every_flavour_is_understood_by_ingest() {
        for flavour in [
            Flavour::Python,
            Flavour::Node,
            Flavour::Arduino,
            Flavour::Raw,
        ] {
            let mut cfg = WriterConfig::new(flavour, "127.0.0.1:9999", token());
            if flavour == Flavour::Arduino {
                cfg.convert_timestamp = None;
            }
            let mut w = connected_with(cfg);
            w.write_point(Duration::from_secs(1), Num::Int(1500), Num::Float(0.5));
            w.heartbeat(Duration::from_secs(2));
            w.write_point(Duration::from_secs(3), Num::Int(-3), Num::Float(1e-300));
            let batch = (0..3).map(|i| (Num::Int(i), Num::Float(0.25)));
            w.write_points(Duration::from_secs(3), batch);
            assert_eq!(w.n_points(), 5);
            w.close(Duration::from_secs(4));
            let mut wire = Vec::new();
            w.poll_transmit(&mut wire);
            let (events, response) = run_to_end(IngestConfig::default(), &[&wire], false);
            let n_updates = events
                .iter()
                .filter(
                    |e| matches!(e, Event::Update { token: t, .. } if t.as_str() == "abcdef1234"),
                )
                .count();
            assert_eq!(
                n_updates,
                5,
                "{flavour:?}: {}",
                String::from_utf8_lossy(&wire)
            );
            assert!(response.starts_with(b"HTTP/1.1 200 OK"), "{flavour:?}");
            w.handle_input(Duration::from_secs(5), &response);
            assert_eq!(
                w.poll_event(),
                Some(WriterEvent::Response {
                    status: Some(Status::OK),
                    points: Some(5)
                }),
                "{flavour:?}"
            );
            assert_eq!(w.poll_event(), None);
        }
    }

    /// A writer of `flavour` whose socket connected at 0.
    fn connected(flavour: Flavour) -> Writer {
        connected_with(WriterConfig::new(flavour, "h", token()))
    }

    fn connected_with(config: WriterConfig) -> Writer {
        let mut w = Writer::new(config, Duration::ZERO);
        w.handle_connected(Duration::ZERO);
        w
    }

    fn closed_writer(response_bytes: usize) -> Writer {
        let mut cfg = WriterConfig::new(Flavour::Raw, "h", token());
        cfg.response_bytes = response_bytes;
        let mut w = connected_with(cfg);
        w.write_point(Duration::ZERO, Num::Int(1), Num::Int(2));
        w.close(Duration::ZERO);
        w
    }

    /// The final response fed one byte per read: nothing is reported before its last byte, the
    /// status and count after it, and bytes after the response change nothing.
    #[test]
    fn the_response_is_read_whatever_the_reads() {
        let mut response = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        crate::status::encode_response(Status::OK, 1, &mut response);
        let mut w = closed_writer(Limits::default().response_bytes);
        let (last, before) = response.split_last().unwrap();
        for b in before {
            w.handle_input(Duration::ZERO, std::slice::from_ref(b));
            assert_eq!(w.poll_event(), None);
        }
        w.handle_input(Duration::ZERO, std::slice::from_ref(last));
        w.handle_input(Duration::ZERO, b"HTTP/1.1 408 Request Timeout\r\n\r\n");
        w.handle_eof(Duration::ZERO);
        assert_eq!(
            w.poll_event(),
            Some(WriterEvent::Response {
                status: Some(Status::OK),
                points: Some(1)
            })
        );
        assert_eq!(w.poll_event(), None);
    }

    /// L56: a server that never ends its response gets an answer as soon as it passed the
    /// limit, not an ever-growing buffer.
    #[test]
    fn an_endless_response_is_cut_at_l56() {
        let mut w = closed_writer(256);
        w.handle_input(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{\"points\":",
        );
        let mut n_fed = 0;
        while w.poll_event().is_none() {
            assert!(n_fed <= 256, "still reading after {n_fed} bytes");
            w.handle_input(Duration::ZERO, b"1");
            n_fed += 1;
        }
        let mut w = closed_writer(256);
        w.handle_input(Duration::ZERO, &[b'H'; 257]);
        assert_eq!(
            w.poll_event(),
            Some(WriterEvent::Response {
                status: None,
                points: None
            })
        );
    }

    #[test]
    fn queued_bytes_move_without_a_copy() {
        let mut w = connected(Flavour::Node);
        assert_eq!(w.n_queued(), 0);
        w.send_head();
        let n_head = w.n_queued();
        assert!(n_head > 0);
        w.write_point(Duration::ZERO, Num::Int(0), Num::Int(0));
        let mut out = Vec::new();
        w.poll_transmit(&mut out);
        assert!(out.starts_with(b"POST / HTTP/1.1\r\n"));
        assert!(out.ends_with(b"e\r\n{\"x\":0,\"y\":0}\n\r\n"));
        assert_eq!(w.n_queued(), 0);
        let before = out.len();
        w.write_point(Duration::ZERO, Num::Int(1), Num::Int(1));
        w.poll_transmit(&mut out);
        assert_eq!(&out[before..], b"e\r\n{\"x\":1,\"y\":1}\n\r\n");
    }

    #[test]
    fn heartbeat_is_due_after_quiet_time() {
        let mut w = connected(Flavour::Python);
        assert_eq!(w.poll_timeout(), Some(Duration::from_secs(30)));
        w.write_point(Duration::from_secs(10), Num::Int(1), Num::Int(2));
        assert_eq!(w.poll_timeout(), Some(Duration::from_secs(40)));
        let mut out = Vec::new();
        w.poll_transmit(&mut out);
        w.handle_timeout(Duration::from_secs(40));
        out.clear();
        w.poll_transmit(&mut out);
        assert_eq!(out, b"1\r\n\n\r\n");
    }

    #[test]
    fn node_sends_its_head_with_the_first_write() {
        let mut w = connected(Flavour::Node);
        let mut out = Vec::new();
        w.poll_transmit(&mut out);
        assert!(out.is_empty());
        w.write_point(Duration::ZERO, Num::Int(0), Num::Int(0));
        w.poll_transmit(&mut out);
        assert!(out.starts_with(b"POST / HTTP/1.1\r\nplotly-streamtoken: abcdef1234\r\n"));
        assert!(out.ends_with(b"e\r\n{\"x\":0,\"y\":0}\n\r\n"));
    }

    #[test]
    fn a_close_without_response_is_reported() {
        let mut w = connected(Flavour::Raw);
        w.handle_input(Duration::ZERO, b"HTTP/1.1 408 Req");
        assert_eq!(w.poll_event(), None);
        w.handle_eof(Duration::ZERO);
        assert_eq!(
            w.poll_event(),
            Some(WriterEvent::Response {
                status: None,
                points: None
            })
        );
        assert!(should_reconnect(None));
        assert!(should_reconnect(Some(Status::REQUEST_TIMEOUT)));
        assert!(!should_reconnect(Some(Status::LOCKED)));
    }
}
