//! The store on several nodes (docs/storage.md "Several nodes"): a stream's copy is either
//! owned by this node under a fence (its writer is here; every change is stored under that
//! fence) or follows Redis (lines applied as another node stores them, reloaded when stale).
//! Nothing here does I/O: the cluster driver (`crate::cluster`) reads Redis and hands the
//! results in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use plotstream_proto::Status;

use super::live::Outbox;
use super::persist::rebuild;
use super::queue::ViewerMsg;
use super::report::{Follow, Live};
use super::stream::{new_epoch, Prepared, Stream};
use super::{Refusal, Store};
use crate::durable::{LiveRun, LoadedStream, Op, FENCE_SHIFT};
use crate::records::{self, StreamMeta, PREV_GENS};

/// What the store keeps only on several nodes.
#[derive(Debug, Default)]
pub(super) struct Nodes {
    /// The lines this node's writers add, for the nodes that follow them.
    pub(super) live: Option<Arc<Outbox>>,
    /// This node cannot reach Redis (its viewers are told, `ViewerMsg::Upstream`).
    pub(super) upstream_down: AtomicBool,
    /// Tokens whose writers are being admitted (their lease taken, not yet bound), with how
    /// many: the leases thread does not let go of them meanwhile.
    admitting: Mutex<HashMap<String, usize>>,
}

impl Nodes {
    pub(super) fn new(clustered: bool) -> Nodes {
        Nodes {
            live: clustered.then(Arc::default),
            ..Nodes::default()
        }
    }

    fn admitting(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.admitting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A writer of `token` being admitted on several nodes ([`Store::admitting`]), until dropped.
#[derive(Debug)]
pub struct Admitting<'a> {
    store: &'a Store,
    token: String,
}

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        let mut admitting = self.store.nodes.admitting();
        if let Some(n) = admitting.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                admitting.remove(&self.token);
            }
        }
    }
}

impl Store {
    /// A writer of `token` is being admitted: until the guard is dropped (once it is bound),
    /// this node keeps the token's lease and its ownership ([`Store::disown`],
    /// [`Store::held_for_writers`]), so the writer never binds to a copy let go of meanwhile.
    pub fn admitting(&self, token: &str) -> Admitting<'_> {
        *self.nodes.admitting().entry(token.to_owned()).or_default() += 1;
        Admitting {
            store: self,
            token: token.to_owned(),
        }
    }

    /// True while a writer of `token` is here or being admitted: its lease is kept.
    pub fn held_for_writers(&self, token: &str) -> bool {
        self.has_writer(token) || self.nodes.admitting().contains_key(token)
    }

    /// A new generation under `fence`: unique across the cluster, because the fence is.
    pub(super) fn gen_under(&self, fence: u64) -> u64 {
        (fence << FENCE_SHIFT) | (self.new_gen() & ((1 << FENCE_SHIFT) - 1))
    }

    /// The fence under which this node owns `token`'s stream (0: it does not).
    pub fn fence(&self, token: &str) -> u64 {
        self.find(token).map_or(0, |cell| cell.lock().fence)
    }

    /// True when `token`'s copy here must be loaded before it is read: it is not owned here,
    /// and it is stale or absent, or no viewer keeps it following Redis.
    pub fn needs_load(&self, token: &str) -> bool {
        let Some(cell) = self.find(token) else {
            return true;
        };
        let s = cell.lock();
        s.fence == 0 && (s.stale || s.viewers.iter().all(|v| v.tx.is_closed()))
    }

    /// This node now owns `token`'s stream under `fence` (its lease was just taken): the copy
    /// becomes what Redis holds (`loaded`), in a new generation under the fence, with a new
    /// epoch unless the previous owner let go `clean`ly. Viewers here stay, reset if what they
    /// saw changed. A writer of the old copy here is displaced (its lease was lost). A stream
    /// new to the cluster counts against L25, L26 and `peer`'s L43 allowance like any other.
    pub fn install(
        &self,
        token: &str,
        loaded: Option<LoadedStream>,
        fence: u64,
        clean: bool,
        peer: Option<IpAddr>,
        history: Option<crate::history::Builder>,
    ) -> Result<(), Refusal> {
        let stored_gen = loaded
            .as_ref()
            .and_then(|ls| StreamMeta::decode(&ls.meta))
            .map(|m| m.gen);
        let mut loaded = loaded;
        let mut history = history;
        loop {
            let cell = match self.find(token) {
                Some(cell) => cell,
                None if loaded.is_none() => {
                    let (cell, created) =
                        self.create(token, self.config.default_maxpoints, peer, fence)?;
                    if created {
                        let mut s = cell.lock();
                        self.set_history(&mut s, token, history.take());
                        return Ok(());
                    }
                    cell
                }
                None => {
                    self.create(token, self.config.default_maxpoints, None, 0)?
                        .0
                }
            };
            let mut guard = cell.lock();
            let s = &mut *guard;
            if s.removed {
                continue;
            }
            if s.fence == fence {
                return Ok(());
            }
            if let Some(w) = s.writer.take() {
                w.displace(Status::LOCKED);
            }
            let mut moved = None;
            if let Some(ls) = loaded.take() {
                // A clean handover to a copy that followed goes on as updates; anything else
                // (a new epoch, a copy that missed lines) is a reset and a snapshot.
                if !(clean && self.catch_up(s, &ls)) {
                    let (budget, ceiling) = (self.config.stream_bytes, self.config.max_maxpoints);
                    let rebuilt = rebuild(ls, true, budget, ceiling);
                    if rebuilt.damaged {
                        // Read while another node changed it, or damaged in Redis: storing
                        // it as this node's generation would make the loss permanent.
                        tracing::warn!(notes = ?rebuilt.notes, "cluster: a stream loaded incomplete; 503");
                        return Err(Status::UNAVAILABLE);
                    }
                    if let Some(mut new) = rebuilt.stream {
                        // Even a stream stored empty: a follower may have applied lines the
                        // previous owner published and never stored.
                        if !clean {
                            new.epoch = new_epoch();
                        }
                        // Lines it still holds go first (an owner's, of the generation that
                        // the stored one replaces).
                        self.queue_lines(s);
                        moved = self.replace(s, new);
                    }
                }
            }
            s.fence = fence;
            s.stale = false;
            // The stored generation it goes on from joins the epoch's earlier ones, for
            // followers still in it (`StreamMeta::prev`); a new epoch starts without.
            if let (true, Some(gen)) = (clean, stored_gen) {
                s.prev_gens.push(gen);
                let over = s.prev_gens.len().saturating_sub(PREV_GENS);
                s.prev_gens.drain(..over);
            } else {
                s.prev_gens.clear();
            }
            self.set_history(s, token, history.take());
            if stored_gen.is_some_and(|g| g != s.gen) {
                if let Some(gen) = stored_gen {
                    self.queue_lines(s);
                    self.journal.push(Op::DropGen { gen });
                }
            }
            self.store_new_gen(token, s);
            cell.watched.store(!s.viewers.is_empty(), Ordering::Relaxed);
            drop(guard);
            self.reindex(token, moved);
            return Ok(());
        }
    }

    /// `token`'s copy, which this node does not own, becomes what Redis holds (`loaded`;
    /// `None`: nothing, and the copy is left as it is). A copy this node owns is left alone.
    pub fn refresh(&self, token: &str, loaded: Option<LoadedStream>) {
        let Some(ls) = loaded else {
            return;
        };
        let cell = match self.find(token) {
            Some(cell) => cell,
            None => match self.create(token, self.config.default_maxpoints, None, 0) {
                Ok((cell, _)) => cell,
                Err(_) => return,
            },
        };
        let mut guard = cell.lock();
        let s = &mut *guard;
        if s.removed || s.fence != 0 {
            return;
        }
        let mut moved = None;
        if s.stale || !self.catch_up(s, &ls) {
            let (budget, ceiling) = (self.config.stream_bytes, self.config.max_maxpoints);
            if let Some(new) = rebuild(ls, true, budget, ceiling).stream {
                moved = self.replace(s, new);
            }
        }
        s.stale = false;
        drop(guard);
        self.reindex(token, moved);
    }

    /// Brings copy `s` up to `ls` by applying the lines it lacks, fanned out to its viewers as
    /// updates: only when `ls` is the same epoch and shape and its snapshot is not past the
    /// copy. False when it is not (the caller replaces the copy).
    fn catch_up(&self, s: &mut Stream, ls: &LoadedStream) -> bool {
        let Some(meta) = StreamMeta::decode(&ls.meta) else {
            return false;
        };
        if meta.epoch != s.epoch
            || meta.maxpoints != s.window.maxpoints()
            || ls
                .snapshot
                .as_ref()
                .is_some_and(|(seq, _)| *seq > s.last_seq)
        {
            return false;
        }
        if !self.apply_stored(s, ls.lines.iter().map(|(seq, r)| (*seq, r.as_slice()))) {
            return false;
        }
        s.gen = meta.gen;
        s.prev_gens = meta.prev;
        s.claimed_by = meta.claimed_by;
        s.rejected_lines = meta.rejected_lines;
        s.displaced_lines = meta.displaced_lines;
        true
    }

    /// Applies stored lines `(seq, update record)` after copy `s`'s last seq, as the owner
    /// applied them, fanning them out. False at the first that does not follow or decode.
    fn apply_stored<'a>(
        &self,
        s: &mut Stream,
        lines: impl Iterator<Item = (u64, &'a [u8])>,
    ) -> bool {
        let mut prepared = Prepared::default();
        for (seq, bytes) in lines {
            if seq <= s.last_seq {
                continue;
            }
            let update = (seq == s.last_seq + 1)
                .then(|| records::decode_line(bytes).map(|(update, _)| update))
                .flatten();
            let Some(update) = update else {
                return false;
            };
            prepared.sizes_and_record(&update, false);
            let before = s.window.bytes();
            let global_full = self.total_bytes.load(Ordering::Relaxed) >= self.config.total_bytes;
            s.apply(
                &update,
                &mut prepared,
                self.config.stream_bytes,
                global_full,
            );
            self.account_bytes(before, s.window.bytes());
        }
        true
    }

    /// Replaces `old`'s state with `new`'s, keeping its viewers (reset unless what they saw is
    /// what `new` shows: same epoch and last seq) and its byte count true. Returns the read id
    /// change for [`Store::reindex`], which takes the index lock once the stream's is released
    /// (lock order).
    fn replace(&self, old: &mut Stream, mut new: Stream) -> Option<(String, String)> {
        let same = new.epoch == old.epoch && new.last_seq == old.last_seq;
        new.viewers = std::mem::take(&mut old.viewers);
        new.writer = old.writer.take();
        new.idle_since = old.idle_since;
        self.account_bytes(old.window.bytes(), new.window.bytes());
        let moved =
            (new.read_id != old.read_id).then(|| (old.read_id.clone(), new.read_id.clone()));
        *old = new;
        if !same {
            for v in &old.viewers {
                if v.tx.try_send(ViewerMsg::Reset("epoch")).is_err() {
                    v.queue.mark_lagged();
                }
            }
        }
        moved
    }

    /// Points the read id index at `token` for a copy whose read id moved (see `replace`).
    fn reindex(&self, token: &str, moved: Option<(String, String)>) {
        if let Some((old, new)) = moved {
            let mut index = self.index_mut();
            index.by_read_id.remove(&old);
            index.by_read_id.insert(new, token.to_owned());
        }
    }

    /// Another node owns `token`'s stream now (announced under `fence`, or `None`: its lease
    /// said so): if this node owned it under an older fence, the copy stops being owned, its
    /// writer here ends with 423, and the copy is loaded again at its next read. `refused`: a
    /// fence refused this node's changes, so the writer that left last ends with 423 too (its
    /// final status is still waiting for those lines).
    pub fn lost_ownership(&self, token: &str, fence: Option<u64>, refused: bool) {
        let Some(cell) = self.find(token) else {
            return;
        };
        let mut s = cell.lock();
        // A copy that only follows learns of a new generation from Redis itself (the
        // follower's check), without a reload.
        if s.fence == 0 || fence.is_some_and(|f| s.fence >= f) {
            return;
        }
        // A writer here when it was lost: what this node showed its viewers may not all be
        // stored, load it again. Without one, every line was stored before the lease went (the
        // leases thread waits for that), and the follower goes on into the new owner's
        // generation (or reloads, if the new owner started a new epoch).
        s.stale = s.writer.is_some() || refused;
        s.fence = 0;
        self.set_history(&mut s, token, None);
        if let Some(w) = s.writer.take() {
            w.displace(Status::LOCKED);
            self.metrics.takeovers.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(w) = s
            .last_writer
            .take()
            .filter(|_| refused)
            .and_then(|w| w.upgrade())
        {
            w.displace(Status::LOCKED);
        }
    }

    /// This node let go of `token`'s lease with every line stored: unless a writer here took
    /// it again, the copy now follows Redis like any other node's (so a new owner elsewhere
    /// is seen even if its announcement was missed).
    pub fn disown(&self, token: &str) {
        if self.nodes.admitting().contains_key(token) {
            return;
        }
        if let Some(cell) = self.find(token) {
            let mut s = cell.lock();
            if s.writer.is_none() {
                s.fence = 0;
                s.last_writer = None;
                self.set_history(&mut s, token, None);
            }
        }
    }

    /// Replaces the registered and retired token sets (on several nodes, when another node
    /// changed them).
    pub fn replace_tokens(&self, registered: Vec<String>, retired: Vec<String>) {
        let mut sets = self.tokens();
        sets.registered = registered.into_iter().collect();
        sets.retired = retired.into_iter().collect();
    }

    /// The tokens this node holds a writer's lease for, with their fences.
    pub fn leased(&self) -> Vec<(String, u64)> {
        self.cells()
            .into_iter()
            .filter_map(|(t, cell)| {
                let s = cell.lock();
                (s.fence != 0 && s.writer.is_some()).then(|| (t, s.fence))
            })
            .collect()
    }

    /// True while a writer here holds `token`.
    pub fn has_writer(&self, token: &str) -> bool {
        self.find(token)
            .is_some_and(|cell| cell.lock().writer.is_some())
    }

    /// The streams with viewers here that this node does not own: they follow Redis.
    pub fn follows(&self) -> Vec<Follow> {
        self.cells()
            .into_iter()
            .filter_map(|(token, cell)| {
                let mut s = cell.lock();
                s.viewers.retain(|v| !v.tx.is_closed());
                (s.fence == 0 && !s.viewers.is_empty() && !s.removed).then(|| Follow {
                    token,
                    gen: s.gen,
                    last_seq: s.last_seq,
                    stale: s.stale,
                })
            })
            .collect()
    }

    /// Where `token`'s copy here is, `(gen, last_seq)`, if it follows Redis (not owned here,
    /// not stale).
    pub fn following(&self, token: &str) -> Option<(u64, u64)> {
        let cell = self.find(token)?;
        let s = cell.lock();
        (s.fence == 0 && !s.stale && !s.removed).then_some((s.gen, s.last_seq))
    }

    /// Applies `runs` of stored lines (`nodes::read_on`: the rest of the generations a
    /// writer's moves ended) to `token`'s copy here, moving it into each run's generation in
    /// turn, then into `meta`'s, from where it is. False when the copy must be loaded (another
    /// epoch, a run that does not follow).
    pub fn follow_into(
        &self,
        token: &str,
        runs: &[(u64, u64, Vec<u8>)],
        meta: &StreamMeta,
    ) -> bool {
        for (gen, last, record) in runs {
            if !(self.switch_gen(token, *gen, &meta.epoch)
                && self.follow(token, *gen, *last, record))
            {
                return false;
            }
        }
        self.switch_gen(token, meta.gen, &meta.epoch)
    }

    /// `token`'s stream went on in generation `gen` (epoch `epoch`): if this copy (not owned
    /// here) is in that epoch, it follows the new generation from where it is (a gap there
    /// makes it stale, see [`Store::follow`]), unless it is in a later one already (the live
    /// path moved it: generations only grow, their fences do). False when it must be loaded.
    pub fn switch_gen(&self, token: &str, gen: u64, epoch: &str) -> bool {
        let Some(cell) = self.find(token) else {
            return false;
        };
        let mut s = cell.lock();
        if s.fence != 0 || s.epoch != epoch {
            return false;
        }
        s.gen = s.gen.max(gen);
        true
    }

    /// Applies a run of lines another node stored for `token` (generation `gen`, the record
    /// of the lines up to `last`) to this node's copy, fanning them out to its viewers, with
    /// the seqs the owner gave them. False when the run does not follow the copy (a gap, a
    /// record that does not decode): the copy is marked stale, to be loaded again.
    pub fn follow(&self, token: &str, gen: u64, last: u64, record: &[u8]) -> bool {
        let Some(cell) = self.find(token) else {
            return true;
        };
        let mut guard = cell.lock();
        let s = &mut *guard;
        if s.fence != 0 || s.gen != gen || s.removed {
            return true;
        }
        let applied = records::decode_batch(last, record)
            .is_some_and(|lines| self.apply_stored(s, lines.into_iter()));
        s.stale |= !applied;
        applied
    }

    /// Applies a run of lines the owner of its stream published as it applied them
    /// ([`Store::live`]), like [`Store::follow`], except that a run that does not follow the
    /// copy changes nothing ([`Live::Ahead`]): the stored lines fill the gap (the live path may
    /// lose messages; the stored lines are complete). Lines the copy has are skipped, whichever
    /// path brought them first. A run of a later generation in the copy's epoch that goes on
    /// from its last seq moves the copy into that generation (a writer that moved cleanly to
    /// another node; nothing of the earlier one can be missing).
    pub fn follow_live(&self, run: &LiveRun) -> Live {
        let Some(cell) = self.find(&run.token) else {
            return Live::Ignored;
        };
        let mut guard = cell.lock();
        let s = &mut *guard;
        if s.fence != 0 || s.removed || s.stale {
            return Live::Ignored;
        }
        let Some(lines) = records::decode_batch(run.last, &run.records) else {
            return Live::Ignored;
        };
        let first = lines.first().map_or(0, |(seq, _)| *seq);
        let next = s.last_seq + 1;
        if run.gen != s.gen && (run.gen < s.gen || run.epoch != s.epoch || first != next) {
            return Live::Ignored;
        }
        if first > next {
            return Live::Ahead;
        }
        s.gen = run.gen;
        let before = s.last_seq;
        s.stale |= !self.apply_stored(s, lines.into_iter());
        let n = s.last_seq.saturating_sub(before);
        self.metrics.live_lines_in.fetch_add(n, Ordering::Relaxed);
        Live::Applied
    }

    /// The outbox of the lines this node's writers add (on several nodes; `None` on one).
    pub fn live(&self) -> Option<&Arc<Outbox>> {
        self.nodes.live.as_ref()
    }
}
