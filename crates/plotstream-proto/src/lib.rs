//! Sans-IO, zero-copy implementation of the Plotly streaming protocol.
//!
//! PLACEHOLDER crate doc: data-flow picture and an asserting example follow.

#![deny(missing_docs)]

pub mod chunked;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod head;
pub mod ingest;
pub mod json;
pub mod limits;
pub mod lines;
pub mod status;
pub mod update;

pub use ingest::{End, EndReason, Event, Ingest, IngestConfig};
pub use json::{Str, Value};
pub use limits::Limits;
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
    /// The status this error is answered with (PROTOCOL.md §4.2).
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
