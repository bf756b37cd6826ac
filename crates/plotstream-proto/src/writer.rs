//! The client side of one stream connection, as a sans-IO state machine.
//!
//! A driver (plotstream-client, the load generator) connects a socket, calls
//! [`Writer::handle_connected`], then [`Writer::write_point`] / [`Writer::write_update`] /
//! [`Writer::heartbeat`] / [`Writer::close`], and moves [`Writer::poll_transmit`]'s bytes to the
//! socket. Bytes from the server go to [`Writer::handle_input`]; the final response comes out of
//! [`Writer::poll_event`]. [`Writer::poll_timeout`] is when the automatic heartbeat is due.
//! Time is a monotonic `Duration` since a driver-chosen origin, as in [`crate::ingest`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::encode::{self, Flavour, Num};
use crate::status::Status;
use crate::update::{Token, Update};

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
        }
    }
}

/// What the writer's driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterEvent {
    /// The server answered; the connection is over. `status` is `None` when it closed without
    /// a (complete) response.
    Response {
        /// The status code, if a response head arrived.
        status: Option<Status>,
        /// The response body, as far as it arrived.
        body: Bytes,
    },
}

/// One writer connection.
#[derive(Debug)]
pub struct Writer {
    config: WriterConfig,
    state: State,
    head_sent: bool,
    /// When bytes were last queued (the heartbeat's base).
    last_write: Duration,
    out: Vec<u8>,
    input: BytesMut,
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
    /// The response (or EOF) arrived and was reported.
    Done,
    /// The response event is ready.
    Answered,
}

impl Writer {
    /// A writer that has not connected yet.
    pub fn new(config: WriterConfig, now: Duration) -> Writer {
        Writer {
            config,
            state: State::Idle,
            head_sent: false,
            last_write: now,
            out: Vec::new(),
            input: BytesMut::new(),
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

    /// The socket connected. Queues the head, except for node, which sends it with its first
    /// write (docs/protocol.md §2.10).
    pub fn handle_connected(&mut self, now: Duration) {
        self.state = State::Open;
        self.last_write = now;
        if self.config.flavour != Flavour::Node {
            self.queue_head();
        }
    }

    /// Queues one point `{x, y}` as one chunk.
    pub fn write_point(&mut self, now: Duration, x: Num, y: Num) {
        if !self.begin_write(now) {
            return;
        }
        let token = if self.config.flavour == Flavour::Arduino {
            self.config.token.as_ref()
        } else {
            None
        };
        encode::encode_point_chunk(self.config.flavour, x, y, token, &mut self.out);
        self.n_points += 1;
    }

    /// Queues any update as one chunk; `token` overrides the connection's for this line.
    pub fn write_update(&mut self, now: Duration, update: &Update, token: Option<&Token>) {
        if !self.begin_write(now) {
            return;
        }
        let own = if self.config.flavour == Flavour::Arduino {
            self.config.token.as_ref()
        } else {
            None
        };
        let token = token.or(own);
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

    /// Bytes from the server.
    pub fn handle_input(&mut self, _now: Duration, data: &[u8]) {
        if matches!(self.state, State::Done | State::Answered) {
            return;
        }
        self.input.extend_from_slice(data);
        if response_complete(&self.input) {
            self.state = State::Answered;
        }
    }

    /// The server closed (or the connection failed).
    pub fn handle_eof(&mut self, _now: Duration) {
        if self.state != State::Done {
            self.state = State::Answered;
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

    /// Appends the bytes to send.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    /// The response, once.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<WriterEvent> {
        if self.state != State::Answered {
            return None;
        }
        self.state = State::Done;
        let (status, body) = parse_response(&self.input);
        Some(WriterEvent::Response { status, body })
    }

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
pub fn should_reconnect(status: Option<Status>) -> bool {
    match status {
        None => true,
        Some(s) => matches!(s.code(), 200 | 408 | 502 | 503 | 520),
    }
}

/// The server's final response as far as it arrived: skips any `100 Continue`, and returns the
/// status, the body bytes received and whether the `Content-Length` body is complete. `None`
/// until a whole response head has arrived. Shared by every driver that reads statuses.
pub fn final_response(input: &[u8]) -> Option<(Status, &[u8], bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(n)) = resp.parse(input) else {
        return None;
    };
    let code = resp.code?;
    if code == 100 {
        return final_response(&input[n..]);
    }
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    let body = &input[n..];
    Some((Status::new(code), body, body.len() >= len))
}

fn response_complete(input: &[u8]) -> bool {
    final_response(input).is_some_and(|(_, _, complete)| complete)
}

fn parse_response(input: &[u8]) -> (Option<Status>, Bytes) {
    match final_response(input) {
        Some((status, body, _)) => (Some(status), Bytes::copy_from_slice(body)),
        None => (None, Bytes::new()),
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
            let mut w = Writer::new(cfg, Duration::ZERO);
            w.handle_connected(Duration::ZERO);
            w.write_point(Duration::from_secs(1), Num::Int(1500), Num::Float(0.5));
            w.heartbeat(Duration::from_secs(2));
            w.write_point(Duration::from_secs(3), Num::Int(-3), Num::Float(1e-300));
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
                2,
                "{flavour:?}: {}",
                String::from_utf8_lossy(&wire)
            );
            assert!(response.starts_with(b"HTTP/1.1 200 OK"), "{flavour:?}");
            w.handle_input(Duration::from_secs(5), &response);
            let Some(WriterEvent::Response { status, body }) = w.poll_event() else {
                panic!()
            };
            assert_eq!(status, Some(Status::OK));
            assert!(body.ends_with(b"\"points\":2}"));
        }
    }

    #[test]
    fn heartbeat_is_due_after_quiet_time() {
        let mut w = Writer::new(
            WriterConfig::new(Flavour::Python, "h", token()),
            Duration::ZERO,
        );
        w.handle_connected(Duration::ZERO);
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
        let mut w = Writer::new(
            WriterConfig::new(Flavour::Node, "h", token()),
            Duration::ZERO,
        );
        w.handle_connected(Duration::ZERO);
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
        let mut w = Writer::new(
            WriterConfig::new(Flavour::Raw, "h", token()),
            Duration::ZERO,
        );
        w.handle_connected(Duration::ZERO);
        w.handle_input(Duration::ZERO, b"HTTP/1.1 408 Req");
        assert_eq!(w.poll_event(), None);
        w.handle_eof(Duration::ZERO);
        assert_eq!(
            w.poll_event(),
            Some(WriterEvent::Response {
                status: None,
                body: Bytes::new()
            })
        );
        assert!(should_reconnect(None));
        assert!(should_reconnect(Some(Status::REQUEST_TIMEOUT)));
        assert!(!should_reconnect(Some(Status::LOCKED)));
    }
}
