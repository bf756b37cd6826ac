//! The simulator's full disk, around any backend.

use std::time::{Duration, Instant};

use super::ops::{Backend, Batch, Loaded, Op, StorageError};

/// The simulator's `disk-full:after=N[,for=MS]`: commits succeed until `after` lines were
/// written, then fail like a full disk for `for` (default 2 000 ms), then succeed again. The
/// failing commits write nothing, as a real full disk's would not.
#[derive(Debug)]
pub struct DiskFull<B> {
    inner: B,
    after: u64,
    duration: Duration,
    written: u64,
    full_since: Option<Instant>,
    recovered: bool,
}

impl<B: Backend> DiskFull<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, after: u64, duration: Duration) -> DiskFull<B> {
        DiskFull {
            inner,
            after,
            duration,
            written: 0,
            full_since: None,
            recovered: false,
        }
    }
}

impl<B: Backend> Backend for DiskFull<B> {
    fn load(&mut self, gen_of: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
        self.inner.load(gen_of)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let lines = batch
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Line { .. }))
            .count() as u64;
        if !self.recovered && self.written + lines > self.after {
            let since = *self.full_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.duration {
                return Err(StorageError(
                    "No space left on device (os error 28) [fault disk-full]".into(),
                ));
            }
            self.recovered = true;
        }
        self.inner.commit(batch)?;
        self.written += lines;
        Ok(())
    }
}
