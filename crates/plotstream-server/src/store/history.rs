//! What the store keeps for history (docs/history.md): each stream's builder beside its window
//! (`Kept`), the reader and L60's count (`Histories`). The owner turns every applied line into
//! points under the stream's lock (`persist`: no I/O, the records go to the journal with the
//! line, and builders are restored at start-up); retention drops the oldest chunks (`sweep`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::history::{self, Builder};

/// What the store keeps for history.
#[derive(Debug, Default)]
pub(super) struct Histories {
    /// Where history records are read (set when the store is durable and keeps history).
    pub(super) store: OnceLock<Arc<dyn history::Store>>,
    /// L60: the history bytes of every stream.
    pub(super) bytes: AtomicU64,
}

/// A stream's history, as its owner builds it.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) token: Arc<str>,
    pub(super) builder: Builder,
    /// Its points op in the journal's pending batch.
    pub(super) run: crate::durable::Run,
    /// `(chunk, parts)`: the parts the open chunk's points were stored in so far (a chunk of
    /// at most [`history::KEEP_PARTS`] keeps them as its records when sealed).
    pub(super) parts: (u64, u32),
    /// Its stored history could not be read at start-up: nothing more is added to it rather
    /// than overwrite what is there (the log says why).
    pub(super) broken: bool,
    /// What the shared counts hold of it: they are brought up to it once a read, not once a
    /// line (`Store::count_history`).
    pub(super) counted: Counted,
}

/// What the shared counts (L60's bytes, `/metrics`' points) hold of one stream's history.
#[derive(Debug, Default)]
pub(super) struct Counted {
    /// Its bytes as L60's total counts them.
    pub(super) bytes: u64,
    /// Points kept since the points counter was last brought up.
    pub(super) points: u64,
}

impl Kept {
    /// `token`'s history, built by `builder` (counted as it is), its open chunk's parts so
    /// far `parts`.
    pub(super) fn new(token: &str, builder: Builder, parts: (u64, u32), broken: bool) -> Box<Kept> {
        Box::new(Kept {
            token: Arc::from(token),
            counted: Counted {
                bytes: builder.bytes(),
                points: 0,
            },
            builder,
            run: crate::durable::Run::default(),
            parts,
            broken,
        })
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
