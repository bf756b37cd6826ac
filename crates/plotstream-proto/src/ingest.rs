//! The server side of one ingest connection, as a sans-IO state machine.
//!
//! The driver feeds bytes with [`Ingest::handle_input`], the end of input with
//! [`Ingest::handle_eof`] and expired timers with [`Ingest::handle_timeout`], then drains
//! [`Ingest::poll_event`] and [`Ingest::poll_transmit`]. Decisions that need server state
//! (token registry, takeover, capacity) come back through [`Ingest::admit`],
//! [`Ingest::reject_line`] and [`Ingest::close_with`]. Events are decoded lazily, one per
//! `poll_event`, so a decision taken on an event is in force before the next line is read.
//!
//! Time is a monotonic `Duration` since an origin the driver picks (its start `Instant`, or
//! zero in tests): the machine never reads a clock, so tests and fuzzing control time exactly.

use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use jiff::{tz::TimeZone, Timestamp};

use crate::chunked::{Chunk, ChunkError, ChunkedDecoder};
use crate::head::{Framing, HeadError, HeadParser, IngestHead, RequestHead, Route};
use crate::limits::Limits;
use crate::lines::{Frame, Line, LineError, LineFramer};
use crate::status::{encode_continue, encode_response, Status};
use crate::update::{convert_timestamp, parse_update_into, zone_for, Token, Update, UpdateError};

/// Connection-level policy the protocol layer applies itself.
#[derive(Debug, Clone, Default)]
pub struct IngestConfig {
    /// Every limit of docs/reliability.md §3 that concerns one connection.
    pub limits: Limits,
    /// `--lenient-lines`: skip and count lines that would get 422 (P5).
    pub lenient_lines: bool,
}

/// What the driver must act on.
///
/// [`Ingest::poll_event`] gives `Event` (`U = ()`): an update stays inside the machine, read with
/// [`Ingest::update`], so no line moves its ~300-byte [`Update`] through returns (measured:
/// four `memcpy`s a line). [`run_to_end`] and other recorders keep `Event<Update>`, built with
/// [`Event::with_update`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event<U = ()> {
    /// A head for another route (`GET /`, `/api/...`, `/v2/...`, `POST /clientresp`). The
    /// machine stops; the driver serves it, taking the bytes that followed with
    /// [`Ingest::take_buffered`].
    Request(RequestHead),
    /// A `POST /` head that passed checks (1)–(4) of docs/protocol.md §4.3. The driver checks the
    /// header token (404/403/308), capacity (503) and holders (423), then calls
    /// [`Ingest::admit`] or [`Ingest::close_with`].
    Head(IngestHead),
    /// A data line for `token`. Accepted unless the driver answers [`Ingest::reject_line`].
    Update {
        /// The line's `streamtoken`, else the head's token.
        token: Token,
        /// The update, `streamtoken` removed, `x` converted when the head asked for it: `()`
        /// from `poll_event` (see [`Ingest::update`]), the update itself in a recording.
        update: U,
    },
    /// An empty or whitespace-only line.
    Heartbeat,
    /// A line skipped under `--lenient-lines`, with the reason.
    Rejected(UpdateError),
    /// The request is over. Write [`Ingest::poll_transmit`]'s bytes (none for a silent close),
    /// half-close, linger, close (docs/protocol.md §4.4). No further events follow.
    End(End),
}

impl Event {
    /// This event as a recording keeps it: an `Update` gets `update()` (the machine's
    /// [`Ingest::update`], cloned); every other event is unchanged.
    pub fn with_update(self, update: impl FnOnce() -> Update) -> Event<Update> {
        match self {
            Event::Request(head) => Event::Request(head),
            Event::Head(head) => Event::Head(head),
            Event::Update { token, update: () } => Event::Update {
                token,
                update: update(),
            },
            Event::Heartbeat => Event::Heartbeat,
            Event::Rejected(e) => Event::Rejected(e),
            Event::End(end) => Event::End(end),
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The final status; `None` for a silent close (L1, or a peer that left before a head).
    pub status: Option<Status>,
    /// Trace-update lines accepted on this connection.
    pub n_points: u64,
    /// Lines skipped under `--lenient-lines`.
    pub n_rejected: u64,
    /// What ended it.
    pub reason: EndReason,
}

/// What ended a request, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The body ended cleanly (200).
    Clean,
    /// A head error.
    Head(HeadError),
    /// A chunked-framing error.
    Chunk(ChunkError),
    /// A line over L18.
    Line(LineError),
    /// A line that failed to parse (strict mode), or a bad `streamtoken`.
    Update(UpdateError),
    /// A data line with no token anywhere.
    NoToken,
    /// The peer closed before the end of the body.
    UncleanEnd,
    /// L1: no byte before the pre-head deadline.
    PreHeadTimeout,
    /// L2: the head did not complete in time.
    HeadTimeout,
    /// L28: no completed line in time.
    IdleTimeout,
    /// L29: no data line bound a token in time.
    Unbound,
    /// The driver ended it ([`Ingest::reject_line`] or [`Ingest::close_with`]).
    Driver,
}

/// One ingest connection. See the module documentation for the driving loop.
#[derive(Debug)]
pub struct Ingest {
    config: IngestConfig,
    state: State,
    /// Received bytes not yet decoded.
    buf: BytesMut,
    /// Decoded body data not yet framed into lines.
    data: Bytes,
    head_parser: HeadParser,
    framer: LineFramer,
    body: Body,
    head: Option<IngestHead>,
    zone: Option<(TimeZone, Timestamp)>,
    accepted_at: Duration,
    first_byte_at: Option<Duration>,
    head_done_at: Option<Duration>,
    /// The idle timer's base: end of head, then each completed line (L28).
    last_line_at: Option<Duration>,
    /// A token is bound: the head's, or one of an accepted data line (L29).
    bound: bool,
    /// The last event was an update the driver may still refuse.
    last_was_update: bool,
    /// The update of the last [`Event::Update`], parsed in place (see [`Ingest::update`]).
    update: Update,
    eof: bool,
    n_points: u64,
    n_rejected: u64,
    transmit: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    AwaitAdmission,
    Body,
    /// The body ended cleanly; the final tail (if any) has been handed out.
    BodyDone,
    HandedOff,
    Ended(End),
    EndReported,
}

#[derive(Debug)]
enum Body {
    None,
    Chunked(ChunkedDecoder),
    /// Content-Length bytes still to read.
    Length(u64),
}

impl Ingest {
    /// A connection accepted at `now`.
    pub fn new(config: IngestConfig, now: Duration) -> Ingest {
        let framer = LineFramer::new(config.limits.line_bytes);
        Ingest {
            config,
            state: State::Head,
            buf: BytesMut::new(),
            data: Bytes::new(),
            head_parser: HeadParser::new(),
            framer,
            body: Body::None,
            head: None,
            zone: None,
            accepted_at: now,
            first_byte_at: None,
            head_done_at: None,
            last_line_at: None,
            bound: false,
            last_was_update: false,
            update: Update::default(),
            eof: false,
            n_points: 0,
            n_rejected: 0,
            transmit: Vec::new(),
        }
    }

    // ---- getters -------------------------------------------------------------------------

    /// The admitted head, once there is one.
    pub fn head(&self) -> Option<&IngestHead> {
        self.head.as_ref()
    }

    /// Trace-update lines accepted so far.
    pub fn n_points(&self) -> u64 {
        self.n_points
    }

    /// True once the `End` event was produced.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended(_) | State::EndReported)
    }

    /// Bytes buffered inside the machine (input, undecoded data and a partial line), for
    /// memory accounting.
    pub fn n_buffered(&self) -> usize {
        self.buf.len() + self.data.len() + self.framer.n_pending()
    }

    /// True while the driver should keep reading: the request is not over.
    pub fn wants_input(&self) -> bool {
        matches!(
            self.state,
            State::Head | State::Body | State::AwaitAdmission
        )
    }

    // ---- inputs --------------------------------------------------------------------------

    /// Bytes from the peer. Takes the contents of `data` (zero-copy when nothing is pending).
    pub fn handle_input(&mut self, now: Duration, data: &mut BytesMut) {
        if data.is_empty() {
            return;
        }
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(now);
        }
        if self.buf.is_empty() {
            std::mem::swap(&mut self.buf, data);
        } else {
            self.buf.extend_from_slice(data);
            data.clear();
        }
    }

    /// The peer half-closed (or the read failed). Buffered complete lines are still decoded;
    /// then the request ends uncleanly unless the body already ended.
    pub fn handle_eof(&mut self, _now: Duration) {
        self.eof = true;
    }

    /// A timer from [`Ingest::poll_timeout`] may have expired.
    pub fn handle_timeout(&mut self, now: Duration) {
        let Some((deadline, reason)) = self.deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        match reason {
            EndReason::PreHeadTimeout => self.end_silent(reason),
            EndReason::HeadTimeout | EndReason::IdleTimeout => {
                self.end(Status::REQUEST_TIMEOUT, reason)
            }
            EndReason::Unbound => self.end(Status::NOT_ACCEPTABLE, reason),
            _ => {}
        }
    }

    // ---- commands ------------------------------------------------------------------------

    /// Admits the head announced by [`Event::Head`]. `wall` is the wall-clock time of the end
    /// of the head, the T0 of `plotly-convertTimestamp` (docs/protocol.md §3.7).
    pub fn admit(&mut self, now: Duration, wall: SystemTime) {
        if self.state != State::AwaitAdmission {
            return;
        }
        let Some(head) = self.head.as_ref() else {
            return;
        };
        if head.expect_unsupported {
            self.end(
                Status::EXPECTATION_FAILED,
                EndReason::Head(HeadError::Expectation),
            );
            return;
        }
        if head.expect_continue {
            encode_continue(&mut self.transmit);
        }
        if let Some(name) = &head.convert_timestamp {
            let t0 = Timestamp::try_from(wall).unwrap_or(Timestamp::UNIX_EPOCH);
            self.zone = Some((zone_for(name), t0));
        }
        self.bound = head.token.is_some();
        self.body = match head.framing {
            Framing::Chunked => Body::Chunked(ChunkedDecoder::new(&self.config.limits)),
            Framing::Length(n) => Body::Length(n),
        };
        self.head_done_at = Some(now);
        self.last_line_at = Some(now);
        self.state = State::Body;
    }

    /// Refuses the update of the last [`Event::Update`] and ends the request with `status`
    /// (404 unknown token, 423 under `--on-duplicate reject`, 403, 308).
    pub fn reject_line(&mut self, status: Status) {
        if self.last_was_update {
            self.n_points -= 1;
            self.last_was_update = false;
        }
        self.end(status, EndReason::Driver);
    }

    /// Ends the request now with `status`: a refused head, a takeover (423), shutdown (503),
    /// a replaced figure (449), a healthy disconnect (200). A partial line is discarded.
    pub fn close_with(&mut self, status: Status) {
        self.end(status, EndReason::Driver);
    }

    /// Changes the idle timeout (L28) of this connection from now on, e.g. for a
    /// per-token override once the head's token is known.
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.config.limits.idle = idle;
    }

    /// Pauses the idle timer while the driver withholds reads on purpose (P8, L31): the time
    /// from `from` to `now` does not count toward L28.
    pub fn handle_paused(&mut self, from: Duration, now: Duration) {
        if let Some(t) = self.last_line_at.as_mut() {
            *t += now.saturating_sub(from);
        }
    }

    /// The update of the last [`Event::Update`] that [`Ingest::poll_event`] returned: its
    /// `streamtoken` taken out (the event carries the effective token), `x` converted when the
    /// head asked for it. Valid until the next `poll_event`.
    pub fn update(&self) -> &Update {
        &self.update
    }

    /// The bytes after a head handed off with [`Event::Request`].
    pub fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The earliest time at which [`Ingest::handle_timeout`] should be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadline().map(|(at, _)| at)
    }

    /// Appends bytes to send to the peer: `100 Continue`, then the final response.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.transmit);
    }

    /// The next event, decoded lazily from buffered input. `None`: nothing to do until more
    /// input, a timeout or a command.
    #[must_use]
    #[inline]
    pub fn poll_event(&mut self, now: Duration) -> Option<Event> {
        self.last_was_update = false;
        loop {
            match self.state {
                State::Head => return self.poll_head(now),
                State::AwaitAdmission | State::HandedOff | State::EndReported => return None,
                State::Ended(end) => {
                    self.state = State::EndReported;
                    return Some(Event::End(end));
                }
                State::BodyDone => {
                    self.end(Status::OK, EndReason::Clean);
                }
                State::Body => {
                    if let Some(event) = self.poll_body(now) {
                        return Some(event);
                    }
                    if self.state == State::Body {
                        return None;
                    }
                }
            }
        }
    }

    fn poll_head(&mut self, _now: Duration) -> Option<Event> {
        if self.buf.is_empty() {
            if self.eof {
                self.end_silent(EndReason::UncleanEnd);
                return self.poll_ended();
            }
            return None;
        }
        match self.head_parser.parse(&self.buf, &self.config.limits) {
            Ok(None) => {
                if self.eof {
                    self.end(Status::BAD_REQUEST, EndReason::UncleanEnd);
                    return self.poll_ended();
                }
                None
            }
            Err(e) => {
                self.end(e.status(), EndReason::Head(e));
                self.poll_ended()
            }
            Ok(Some(head)) => {
                let _ = self.buf.split_to(head.len);
                match head.route() {
                    Route::Ingest => match IngestHead::from_head(&head, &self.config.limits) {
                        Ok(ingest) => {
                            self.head = Some(ingest.clone());
                            self.state = State::AwaitAdmission;
                            Some(Event::Head(ingest))
                        }
                        Err(e) => {
                            self.end(e.status(), EndReason::Head(e));
                            self.poll_ended()
                        }
                    },
                    Route::MethodNotAllowed => {
                        self.end(
                            Status::METHOD_NOT_ALLOWED,
                            EndReason::Head(HeadError::Syntax),
                        );
                        self.poll_ended()
                    }
                    Route::Invalid => {
                        self.end(Status::BAD_REQUEST, EndReason::Head(HeadError::Syntax));
                        self.poll_ended()
                    }
                    Route::Other => {
                        self.state = State::HandedOff;
                        Some(Event::Request(head))
                    }
                }
            }
        }
    }

    fn poll_ended(&mut self) -> Option<Event> {
        match self.state {
            State::Ended(end) => {
                self.state = State::EndReported;
                Some(Event::End(end))
            }
            _ => None,
        }
    }

    /// One step of the body: a line event, or `None` after changing state or running dry.
    #[inline]
    fn poll_body(&mut self, now: Duration) -> Option<Event> {
        loop {
            if !self.data.is_empty() {
                match self.framer.next(&mut self.data) {
                    Ok(Some(Frame::InData { len, consumed })) => {
                        // Parsed in place: no reference count moves for a numeric point,
                        // and the update is built where the driver will read it.
                        let parsed = parse_update_into(
                            &self.data,
                            &self.data[..len],
                            &self.config.limits,
                            &mut self.update,
                        );
                        self.data.advance(consumed);
                        return self.on_parsed(now, parsed);
                    }
                    Ok(Some(Frame::Copied(line))) => return self.on_line(now, Line::Data(line)),
                    Ok(Some(Frame::Heartbeat)) => return self.on_line(now, Line::Heartbeat),
                    Ok(None) => {}
                    Err(e) => {
                        self.end(Status::CONTENT_TOO_LARGE, EndReason::Line(e));
                        return None;
                    }
                }
                continue;
            }
            match &mut self.body {
                Body::Chunked(dec) => match dec.decode(&mut self.buf) {
                    Ok(Some(Chunk::Data(d))) => self.data = d,
                    Ok(Some(Chunk::End)) => return self.on_clean_end(now),
                    Ok(None) => return self.on_dry(),
                    Err(e) => {
                        self.end(Status::BAD_REQUEST, EndReason::Chunk(e));
                        return None;
                    }
                },
                Body::Length(left) => {
                    if *left == 0 {
                        return self.on_clean_end(now);
                    }
                    if self.buf.is_empty() {
                        return self.on_dry();
                    }
                    #[allow(clippy::cast_possible_truncation)] // min with buf.len()
                    let n = (*left).min(self.buf.len() as u64) as usize;
                    *left -= n as u64;
                    self.data = self.buf.split_to(n).freeze();
                }
                Body::None => return None,
            }
        }
    }

    fn on_dry(&mut self) -> Option<Event> {
        // Out of input: the last update's string slices must not keep the read buffer alive
        // while the connection idles.
        self.update.clear();
        if self.eof {
            self.end(Status::BAD_REQUEST, EndReason::UncleanEnd);
        }
        None
    }

    fn on_clean_end(&mut self, now: Duration) -> Option<Event> {
        self.state = State::BodyDone;
        let line = self.framer.finish()?;
        self.on_line(now, line)
    }

    fn on_line(&mut self, now: Duration, line: Line) -> Option<Event> {
        let bytes = match line {
            Line::Heartbeat => {
                self.last_line_at = Some(now);
                return Some(Event::Heartbeat);
            }
            Line::Data(bytes) => bytes,
        };
        let parsed = parse_update_into(&bytes, &bytes, &self.config.limits, &mut self.update);
        self.on_parsed(now, parsed)
    }

    #[inline]
    fn on_parsed(&mut self, now: Duration, parsed: Result<(), UpdateError>) -> Option<Event> {
        self.last_line_at = Some(now);
        match parsed {
            Ok(()) => {}
            Err(e) if e.status() == Status::UNPROCESSABLE && self.config.lenient_lines => {
                self.n_rejected += 1;
                return Some(Event::Rejected(e));
            }
            Err(e) => {
                self.end(e.status(), EndReason::Update(e));
                return None;
            }
        };
        let token = match self
            .update
            .token
            .take()
            .or_else(|| self.head.as_ref().and_then(|h| h.token))
        {
            Some(t) => t,
            None => {
                self.end(Status::NOT_ACCEPTABLE, EndReason::NoToken);
                return None;
            }
        };
        if let Some((zone, t0)) = &self.zone {
            convert_timestamp(&mut self.update, zone, *t0);
        }
        self.bound = true;
        self.n_points += 1;
        self.last_was_update = true;
        Some(Event::Update { token, update: () })
    }

    fn end(&mut self, status: Status, reason: EndReason) {
        if self.is_ended() {
            return;
        }
        self.framer.discard();
        self.buf = BytesMut::new();
        self.data = Bytes::new();
        encode_response(status, self.n_points, &mut self.transmit);
        self.state = State::Ended(End {
            status: Some(status),
            n_points: self.n_points,
            n_rejected: self.n_rejected,
            reason,
        });
    }

    fn end_silent(&mut self, reason: EndReason) {
        if self.is_ended() {
            return;
        }
        self.buf = BytesMut::new();
        self.state = State::Ended(End {
            status: None,
            n_points: self.n_points,
            n_rejected: self.n_rejected,
            reason,
        });
    }

    fn deadline(&self) -> Option<(Duration, EndReason)> {
        let l = &self.config.limits;
        match self.state {
            State::Head => Some(match self.first_byte_at {
                None => (self.accepted_at + l.pre_head, EndReason::PreHeadTimeout),
                Some(t) => (t + l.head_deadline, EndReason::HeadTimeout),
            }),
            State::Body => {
                let idle = (self.last_line_at? + l.idle, EndReason::IdleTimeout);
                if self.bound {
                    return Some(idle);
                }
                let unbound = (self.head_done_at? + l.unbound, EndReason::Unbound);
                Some(if unbound.0 <= idle.0 { unbound } else { idle })
            }
            _ => None,
        }
    }
}

/// Feeds a whole request through a fresh machine with a permissive driver (every head admitted,
/// every line accepted), delivering `input` in `pieces` as the peer would, then EOF.
/// Used by tests, fuzzing and benches.
pub fn run_to_end(
    config: IngestConfig,
    pieces: &[&[u8]],
    eof: bool,
) -> (Vec<Event<Update>>, Vec<u8>) {
    let now = Duration::ZERO;
    let mut ingest = Ingest::new(config, now);
    let mut events = Vec::new();
    let mut out = Vec::new();
    let drain = |ingest: &mut Ingest, events: &mut Vec<Event<Update>>| {
        while let Some(ev) = ingest.poll_event(now) {
            if let Event::Head(_) = ev {
                ingest.admit(now, SystemTime::UNIX_EPOCH);
            }
            events.push(ev.with_update(|| ingest.update().clone()));
        }
    };
    for piece in pieces {
        let mut b = BytesMut::from(*piece);
        ingest.handle_input(now, &mut b);
        drain(&mut ingest, &mut events);
    }
    if eof {
        ingest.handle_eof(now);
        drain(&mut ingest, &mut events);
    }
    ingest.poll_transmit(&mut out);
    (events, out)
}

#[cfg(test)]
mod tests;
