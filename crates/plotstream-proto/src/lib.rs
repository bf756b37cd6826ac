//! Sans-IO, zero-copy implementation of the Plotly streaming protocol.
//!
//! This crate decodes and encodes the protocol spoken by chart_studio's `py.Stream`, npm
//! `plotly`, the Arduino/ESP8266 libraries and plotstream's own tools: a long-lived
//! `POST /` with a chunked body of newline-delimited JSON trace updates (docs/protocol.md §2–§4).
//! It performs no I/O and reads no clock: bytes come in through `handle_*` methods, time comes
//! in as a `now: Duration` since an origin the driver picks, and everything the driver must do
//! comes out of `poll_*` methods. The tokio drivers live in `plotstream-server` and
//! `plotstream-client`; this crate is what they share.
//!
//! Policy (`P1`), limit (`L18`), invariant (`I2`) and case (`B5`) ids in this crate are defined in
//! `docs/reliability.md`; client quirks (`K2`) and sections (`§2.9`) in `docs/protocol.md`.
//!
//! # Data flow (server side)
//!
//! ```text
//!  socket bytes ──► Ingest::handle_input(now, &mut BytesMut)      (buffer moved, not copied)
//!                      │
//!                      ▼
//!   head::HeadParser ─ httparse + reliability P1/P2, L3–L5 ──► Event::Head ──► driver:
//!                      │                                          admit() / close_with()
//!                      ▼
//!   chunked::ChunkedDecoder ─ RFC 9112 §7.1 + the K2 empty-line tolerance, L12–L17
//!     (or a Content-Length counter)
//!                      │  Bytes: zero-copy slices of the input buffer
//!                      ▼
//!   lines::LineFramer ─ split at LF, strip one CR, BOM at body start, L18
//!                      │  Bytes: a slice of the chunk, or one copy if the line straddled
//!                      ▼
//!   update::parse_update_into ─ json (strict, L19–L22), streamtoken, key rules,
//!                      │   convertTimestamp; built in place inside the machine
//!                      ▼
//!  Ingest::poll_event(now) ──► Event::Update (read it with Ingest::update) / Heartbeat /
//!                              Rejected / End
//!  Ingest::poll_transmit   ──► `100 Continue`, the final response (status::encode_response)
//!  Ingest::poll_timeout    ──► the next deadline (L1, L2, L28, L29)
//! ```
//!
//! The client side runs the other way: [`encode`] writes points and updates in each real
//! client's flavour, and [`writer::Writer`] adds the head, heartbeats, the close sequence and the
//! response. Its documentation has the example that writes a stream, and
//! [`writer::should_reconnect`] says when a client reconnects.
//!
//! # Example: decode a stream
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use bytes::BytesMut;
//! use plotstream_proto::{Event, Ingest, IngestConfig, Value};
//!
//! // What chart_studio sends: its head, one point, a heartbeat, and its close sequence.
//! let wire = "POST / HTTP/1.1\r\nHost: 127.0.0.1:9999\r\nAccept-Encoding: identity\r\n\
//!             Transfer-Encoding: chunked\r\nHost: 127.0.0.1\r\nplotly-streamtoken: abcdef1234\r\n\r\n\
//!             13\r\n{\"x\": 1, \"y\": 0.5}\n\r\n1\r\n\n\r\n\r\n0\r\n\r\n";
//! let now = Duration::ZERO;
//! let mut ingest = Ingest::new(IngestConfig::default(), now);
//! ingest.handle_input(now, &mut BytesMut::from(wire));
//!
//! let mut points = Vec::new();
//! let mut status = None;
//! while let Some(event) = ingest.poll_event(now) {
//!     match event {
//!         // The driver would check the token registry and holders here.
//!         Event::Head(_) => ingest.admit(now, SystemTime::UNIX_EPOCH),
//!         // The update is read in place, until the next `poll_event`.
//!         Event::Update { token, .. } => points.push((token, ingest.update().clone())),
//!         Event::End(end) => status = end.status,
//!         _ => {}
//!     }
//! }
//! assert_eq!(points.len(), 1);
//! assert_eq!(points[0].0.as_str(), "abcdef1234");
//! assert_eq!(points[0].1.data[1].1, Value::Number(0.5));
//! assert_eq!(status.map(|s| s.code()), Some(200));
//!
//! let mut response = Vec::new();
//! ingest.poll_transmit(&mut response);
//! assert!(response.ends_with(br#"{"status":200,"message":"healthy endpoint disconnect","points":1}"#));
//! ```

#![deny(missing_docs)]

// The README's example is a doctest too, so the one crates.io shows compiles and passes.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod canonical;
pub mod chunked;
pub mod encode;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod head;
pub mod ingest;
pub mod json;
pub mod limits;
pub mod lines;
pub mod maxpoints;
pub mod status;
pub mod update;
pub mod writer;

pub use ingest::{End, EndReason, Event, Ingest, IngestConfig};
pub use json::{Str, Value};
pub use limits::Limits;
pub use maxpoints::Maxpoints;
pub use status::Status;
pub use update::{Token, Update};

/// Any protocol error, by layer. Each maps to the status it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The request head.
    Head(head::HeadError),
    /// The chunked coding.
    Chunk(chunked::ChunkError),
    /// Line framing.
    Line(lines::LineError),
    /// A line's content.
    Update(update::UpdateError),
}

impl Error {
    /// The status this error is answered with (docs/protocol.md §4.2).
    pub fn status(self) -> Status {
        match self {
            Error::Head(e) => e.status(),
            Error::Chunk(_) => Status::BAD_REQUEST,
            Error::Line(_) => Status::CONTENT_TOO_LARGE,
            Error::Update(e) => e.status(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Head(e) => e.fmt(f),
            Error::Chunk(e) => e.fmt(f),
            Error::Line(e) => e.fmt(f),
            Error::Update(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}
