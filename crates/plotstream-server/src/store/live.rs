//! The live outbox (docs/storage.md "Several nodes", fan-out): on several nodes, the lines an
//! owner applies wait here, grouped in runs per generation, until the cluster driver publishes
//! them to the nodes that follow the stream (one `PUBLISH` per run, all runs of a take in one
//! round trip). It is the fast path only: followers take every line from the stored lines as
//! well, so a line that is never published (an outbox past [`LIVE_MAX_BYTES`], a message
//! lost with a connection) is late, never missing. Nothing here does I/O.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::durable::LiveRun;
use crate::records;

/// L58: bytes of lines waiting to be published past which new lines skip the live path (they
/// still reach other nodes through the stored lines): a slow Redis cannot grow the outbox.
pub const LIVE_MAX_BYTES: usize = 8 << 20;

/// How long a stream whose last publication reached no node is not published again: a stream
/// nobody follows elsewhere costs a `PUBLISH` this often, not one per line.
pub const QUIET_FOR: Duration = Duration::from_millis(200);

/// Lines waiting to be published, and the streams nobody follows elsewhere.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    /// Per generation, the lines waiting.
    runs: HashMap<u64, LiveRun>,
    bytes: usize,
    /// Streams (by token) not to publish until then.
    quiet: HashMap<String, Instant>,
    /// Lines that skipped the live path (L58).
    skipped: u64,
    /// When the first line waiting was queued.
    since: Option<Instant>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues line `seq` of `token`'s stream, generation `gen` and epoch `epoch` (its update
    /// record `record`), unless the stream is quiet or the outbox is full (L58). A seq that
    /// does not follow the run queued for `gen` starts it again (the run is contiguous).
    pub fn push(&self, token: &str, gen: u64, epoch: &str, seq: u64, record: &[u8]) {
        let mut p = self.lock();
        if let Some(until) = p.quiet.get(token) {
            if Instant::now() < *until {
                return;
            }
            p.quiet.remove(token);
        }
        if p.bytes + record.len() + 12 > LIVE_MAX_BYTES {
            p.skipped += 1;
            return;
        }
        if p.runs.is_empty() {
            p.since = Some(Instant::now());
            self.wake.notify_one();
        }
        let run = p.runs.entry(gen).or_insert_with(|| LiveRun {
            token: token.to_owned(),
            gen,
            epoch: epoch.to_owned(),
            last: 0,
            records: Vec::new(),
        });
        let before = run.records.len();
        if run.records.is_empty() || run.last + 1 != seq {
            run.records.clear();
            records::encode_batch(seq, std::iter::empty(), &mut run.records);
        }
        records::encode_batch_more(std::iter::once(record), &mut run.records);
        run.last = seq;
        let after = run.records.len();
        p.bytes = (p.bytes + after).saturating_sub(before);
    }

    /// Takes every run queued, waiting up to `wait` for the first line, then until it has
    /// waited `gather`: lines of a busy node leave in batches, one round trip each, instead of
    /// one message per line (each costs Redis a read and the followers a write).
    pub fn take(&self, wait: Duration, gather: Duration) -> Vec<LiveRun> {
        let mut p = self.lock();
        if p.runs.is_empty() {
            p = self
                .wake
                .wait_timeout(p, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if let Some(since) = p.since {
            let due = since + gather;
            let now = Instant::now();
            if now < due {
                drop(p);
                std::thread::sleep(due - now);
                p = self.lock();
            }
        }
        p.since = None;
        p.bytes = 0;
        p.runs.drain().map(|(_, run)| run).collect()
    }

    /// The last publication of `token`'s stream reached no node: it is not published for
    /// `QUIET_FOR`.
    pub fn quiet(&self, token: &str) {
        let mut p = self.lock();
        let now = Instant::now();
        p.quiet.retain(|_, until| *until > now);
        p.quiet.insert(token.to_owned(), now + QUIET_FOR);
    }

    /// A node started following `token`'s stream: it is published again at once.
    pub fn followed(&self, token: &str) {
        self.lock().quiet.remove(token);
    }

    /// Lines that skipped the live path since the last call (L58).
    pub fn take_skipped(&self) -> u64 {
        std::mem::take(&mut self.lock().skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_per_generation_decode_as_stored_lines() {
        let outbox = Outbox::default();
        outbox.push("t", 7, "e1", 1, b"a");
        outbox.push("u", 9, "e2", 5, b"x");
        outbox.push("t", 7, "e1", 2, b"bb");
        let mut runs = outbox.take(Duration::ZERO, Duration::ZERO);
        runs.sort_unstable_by_key(|r| r.gen);
        assert_eq!(runs.len(), 2);
        let run = &runs[0];
        assert_eq!(
            (run.token.as_str(), run.gen, run.epoch.as_str(), run.last),
            ("t", 7, "e1", 2)
        );
        let lines = records::decode_batch(run.last, &run.records).expect("decodes");
        assert_eq!(lines, vec![(1, &b"a"[..]), (2, &b"bb"[..])]);
        assert!(outbox.take(Duration::ZERO, Duration::ZERO).is_empty());
    }

    #[test]
    fn a_seq_that_does_not_follow_starts_the_run_again() {
        let outbox = Outbox::default();
        outbox.push("t", 7, "e", 1, b"a");
        outbox.push("t", 7, "e", 5, b"e");
        let runs = outbox.take(Duration::ZERO, Duration::ZERO);
        let lines = records::decode_batch(5, &runs[0].records).expect("decodes");
        assert_eq!(lines, vec![(5, &b"e"[..])]);
    }

    #[test]
    fn a_quiet_generation_is_not_queued() {
        let outbox = Outbox::default();
        outbox.quiet("t");
        outbox.push("t", 7, "e", 1, b"a");
        outbox.push("u", 8, "e", 1, b"a");
        let runs = outbox.take(Duration::ZERO, Duration::ZERO);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].token, "u");
    }

    #[test]
    fn past_l58_lines_skip_the_live_path() {
        let outbox = Outbox::default();
        let big = vec![0u8; LIVE_MAX_BYTES / 2];
        outbox.push("t", 1, "e", 1, &big);
        outbox.push("t", 1, "e", 2, &big);
        outbox.push("u", 2, "e", 1, b"small");
        assert_eq!(outbox.take_skipped(), 1);
        let runs = outbox.take(Duration::ZERO, Duration::ZERO);
        assert_eq!(runs.len(), 2);
        // Taken: room again.
        outbox.push("t", 1, "e", 3, &big);
        assert_eq!(outbox.take_skipped(), 0);
    }
}
