//! What every task of a load run shares.

use plotstream_proto::encode::Flavour;
use plotstream_proto::Token;
use tokio::sync::watch;
use tokio::time::Instant;

use super::report::Counters;
use super::schedule::Schedule;
use super::targets::Targets;

/// What every task of a run shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Where each stream's writer and viewer go.
    pub(super) targets: Targets,
    pub(super) flavour: Flavour,
    pub(super) schedule: Schedule,
    /// Invariant: one token per stream.
    pub(super) tokens: Vec<Token>,
    pub(super) counters: Counters,
    /// With `--verify`, per stream: `(end_chunk_idx, issued)` for each write in flight or not
    /// yet matched by the viewer, covering chunks from the previous entry's end to `end`.
    pub(super) writes: Vec<std::sync::Mutex<std::collections::VecDeque<(u64, Instant)>>>,
    /// The common start time, once every stream is ready.
    pub(super) start: watch::Receiver<Option<Instant>>,
    /// True on Ctrl-C.
    pub(super) stop: watch::Receiver<bool>,
    pub(super) verify: bool,
}

impl Ctx {
    /// Waits for the common start; `None` if the run was stopped first.
    pub(super) async fn wait_start(&self) -> Option<Instant> {
        let mut start = self.start.clone();
        let mut stop = self.stop.clone();
        loop {
            if let Some(at) = *start.borrow_and_update() {
                return Some(at);
            }
            if *stop.borrow_and_update() {
                return None;
            }
            tokio::select! {
                r = start.changed() => if r.is_err() { return None },
                r = stop.changed() => if r.is_err() { return None },
            }
        }
    }
}
