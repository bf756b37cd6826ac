//! A stream's history beyond its window (docs/history.md): every accepted point, kept in the
//! durable store with its line's seq and receive time, within `--retention` and the byte caps
//! L59 and L60; tiers that summarize it as it arrives, so a downsampled range costs in
//! proportion to what it returns; and the route that reads it.
//!
//! `point` is one point and its records, `tier` the summaries and their blocks, `build` the
//! owner's side (points in, records to store out), `query` the readers' side over stored
//! records, `downsample` the bucketing, `export` a request's parameters and its rows. All of it
//! is without I/O; `serve` is the route.

pub mod build;
pub mod downsample;
pub mod export;
pub mod point;
pub mod query;
pub mod serve;
pub mod tier;

pub use build::{Builder, Head, Write, XKind, CHUNK, HEAD, KEEP_PARTS};
pub use downsample::Bucketing;
pub use point::{points_of, AsPoint, LinePoints, Point, PointRef, Val, ValRef};
pub use query::{By, Source, View};

#[cfg(any(test, feature = "fuzzing"))]
pub mod mem;
#[cfg(test)]
mod tests;

/// Where history records are read from, beside the commits: `(index, record)` for the keys
/// `(token, level, from..to)`, in index order, at most `limit`.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The records.
    fn read(
        &self,
        token: &str,
        level: u8,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, crate::error::StorageError>;
}

/// One stream's records in a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The stream's write token.
    pub token: &'a str,
}

impl Source for Stored<'_> {
    fn read(
        &self,
        level: u8,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, crate::error::StorageError> {
        self.store.read(self.token, level, from, to, limit)
    }
}
