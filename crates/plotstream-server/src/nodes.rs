//! What a node does on several nodes (docs/storage.md "Several nodes"): the driver between
//! the store (which does no I/O) and what the nodes share in Redis, through this node's
//! [`Cluster`].
//!
//! - A writer's token is taken with a lease before its first line ([`admit_writer`]): a new
//!   owner gets a new fence, loads the stream from Redis and goes on from its last stored
//!   line; the previous owner hears of it on the owners channel and ends its writer with 423.
//! - Five threads per node ([`start`]): `leases` (refreshes this node's leases every third of
//!   their time, lets go of those whose writers left once their lines are stored, tells the
//!   viewers when Redis is out of reach), `owners` (the announcements of new owners),
//!   `live-out` (publishes the lines this node's writers add as they are applied), `live-in`
//!   (applies what other nodes publish for the streams with viewers here), `follow` (reads the
//!   stored lines of those streams, one `XREAD` for all of them, to fill what the live path
//!   lost, and loads a copy again on a gap or a new epoch).
//! - Reads of a stream this node neither owns nor follows load it first ([`load`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use plotstream_proto::Status;

use crate::cluster::{lock, Cluster, Release};
use crate::durable::{Acquired, ClusterLink, StorageError, Table};
use crate::metrics::Metrics;
use crate::records::StreamMeta;
use crate::shared::Shared;
use crate::store::{Conn, Live, Outbox};

/// How long a follower's `XREAD` waits for new lines before it looks for new streams to follow.
const FOLLOW_BLOCK: Duration = Duration::from_millis(100);

/// How often a follower reads the stored lines of the streams it follows while the live path
/// is up (it waits on them otherwise): the longest a line lost on the live path is late.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// The least time between two reads of the stored lines while the live path is up.
const FOLLOW_MIN: Duration = Duration::from_millis(5);

/// How often a follower checks that the streams it follows are still in the generation it
/// reads (a figure restarted one, or a new owner took it).
const META_CHECK: Duration = Duration::from_millis(100);

/// How long the live-out thread waits for lines before it looks at its stop flag.
const LIVE_WAIT: Duration = Duration::from_millis(100);

/// How long the first line waiting to be published waits for others (see `Outbox::take`).
const LIVE_GATHER: Duration = Duration::from_millis(1);

/// Runs of lines one `XREAD` returns at most.
const FOLLOW_BATCH: usize = 1024;

/// Starts `cluster`'s threads for the node whose state is `shared`, and what a fenced change
/// does: this node stops owning the stream and its writer ends with 423.
pub fn start(cluster: &Cluster, shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    cluster.on_fenced_do(Box::new(move |token: &str, fence: u64| {
        if let Some(shared) = weak.upgrade() {
            shared.store.lost_ownership(token, Some(fence + 1), true);
        }
    }));
    if let Some(rx) = cluster.take_releases() {
        let (l, w, stop) = (
            cluster.sibling(Duration::from_secs(2)),
            Arc::downgrade(shared),
            cluster.stop_flag(),
        );
        cluster.spawn("leases", move || leases(l, &w, &rx, &stop));
    }
    let (l, w, stop) = (
        cluster.sibling(Duration::from_millis(250)),
        Arc::downgrade(shared),
        cluster.stop_flag(),
    );
    cluster.spawn("owners", move || owners(&l, &w, &stop));
    let poll = Arc::new(Poll::default());
    let (l, w, stop, p) = (
        cluster.sibling(Duration::from_secs(2)),
        Arc::downgrade(shared),
        cluster.stop_flag(),
        poll.clone(),
    );
    cluster.spawn("follow", move || follow(l, &w, &stop, &p));
    if let Some(outbox) = shared.store.live().cloned() {
        let (l, m, stop) = (
            cluster.sibling(Duration::from_secs(2)),
            shared.metrics.clone(),
            cluster.stop_flag(),
        );
        cluster.spawn("live-out", move || live_out(l, &outbox, &m, &stop));
    }
    let (l, w, stop) = (
        cluster.sibling(Duration::from_millis(20)),
        Arc::downgrade(shared),
        cluster.stop_flag(),
    );
    cluster.spawn("live-in", move || live_in(l, &w, &stop, &poll));
}

fn gen_of(meta: &[u8]) -> Option<u64> {
    StreamMeta::decode(meta).map(|m| m.gen)
}

/// Takes `token` for this node before a writer streams it here: 423 when another node's
/// writer holds it and takeover is off, 503 when Redis cannot be reached; then the store's own
/// admission (`Store::bind`).
pub async fn admit_writer(
    shared: &Shared,
    conn: &Arc<Conn>,
    token: &plotstream_proto::Token,
) -> Result<(), Status> {
    if let Some(cluster) = &shared.cluster {
        sync_tables(shared).await;
        // Nothing is taken or made for a token that may not stream.
        shared.store.may_write(token.as_str())?;
        // Held until the writer is bound: the leases thread keeps the lease meanwhile.
        let _admitting = shared.store.admitting(token.as_str());
        let takeover = shared.config.store.takeover;
        own(shared, cluster, token.as_str(), takeover, conn.peer).await?;
        return shared.store.bind(conn, token);
    }
    shared.store.bind(conn, token)
}

/// Takes the streams a figure names for this node, so that its changes to them are stored
/// (a writer of one on another node is displaced, as a takeover). The figure lets go of them
/// once its changes are queued (`rest::figures::bind_figure`), and the leases thread once they
/// are stored.
pub async fn own_for_figure(shared: &Shared, tokens: &[String]) -> Result<(), Status> {
    let Some(cluster) = &shared.cluster else {
        return Ok(());
    };
    for token in tokens {
        own(shared, cluster, token, true, None).await?;
    }
    Ok(())
}

async fn own(
    shared: &Shared,
    cluster: &Cluster,
    token: &str,
    takeover: bool,
    peer: Option<std::net::IpAddr>,
) -> Result<(), Status> {
    let t = token.to_owned();
    let acquired = cluster
        .call(move |link| link.acquire(&t, takeover))
        .await
        .map_err(|e| unavailable(shared, &e))?;
    let (fence, clean) = match acquired {
        Acquired::Refused => return Err(Status::LOCKED),
        Acquired::Owned { fence, clean, .. } => (fence, clean),
    };
    if shared.store.fence(token) == fence {
        return Ok(());
    }
    let t = token.to_owned();
    let loaded = cluster
        .call(move |link| link.load_stream(&t, &gen_of))
        .await
        .map_err(|e| unavailable(shared, &e))?;
    // After a clean handover, a copy here that follows the stream reads on to where it is
    // stored before it is installed: behind a writer's last moves, it would otherwise reset
    // its viewers when this node takes over. (After a takeover they reset anyway: a new epoch.)
    let meta = loaded.as_ref().and_then(|ls| StreamMeta::decode(&ls.meta));
    if let (true, Some(meta)) = (clean, meta) {
        let copy = shared
            .store
            .following(token)
            .filter(|(gen, _)| *gen != meta.gen);
        if let Some((gen, last_seq)) = copy {
            let m = meta.clone();
            let read = cluster.call(move |link| read_on(link, gen, last_seq, &m));
            if let Ok(runs) = read.await {
                shared.store.follow_into(token, &runs, &meta);
            }
        }
    }
    // Its history as stored, read after the fence moved: the previous owner's later writes
    // are refused, so this node goes on from exactly what is there (docs/history.md).
    let history = match shared.store.history().cloned() {
        Some(h) => {
            let t = token.to_owned();
            let read = tokio::task::spawn_blocking(move || {
                crate::history::Builder::load(&crate::history::Stored {
                    store: &*h,
                    token: &t,
                })
            })
            .await
            .map_err(|_| Status::UNAVAILABLE)?;
            Some(read.map_err(|e| unavailable(shared, &e))?)
        }
        None => None,
    };
    shared
        .store
        .install(token, loaded, fence, clean, peer, history)
}

fn unavailable(shared: &Shared, e: &StorageError) -> Status {
    tracing::warn!(error = %e, "cluster: Redis did not answer; 503");
    shared.metrics.limit_breach("DC5");
    Status::UNAVAILABLE
}

/// Before a request that reads or changes tokens, files or folders: reloads them if another
/// node changed them since this node last did (one `GET` when nothing changed). This node's
/// own changes are stored first, so a reload never hides them.
pub async fn sync_tables(shared: &Shared) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    let Ok(version) = cluster.call(ClusterLink::tables_version).await else {
        return;
    };
    if version == cluster.tables_seen.load(Ordering::Acquire) {
        return;
    }
    let journal = shared.store.journal();
    let _ = journal.wait(journal.last_ticket()).await;
    let Ok(entries) = cluster.call(ClusterLink::tables).await else {
        return;
    };
    let (mut registered, mut retired, mut files) = (Vec::new(), Vec::new(), Vec::new());
    for (table, key, value) in entries {
        match table {
            Table::Registered => registered.push(key),
            Table::Retired => retired.push(key),
            _ => files.push((table, key, value)),
        }
    }
    shared.store.replace_tokens(registered, retired);
    for dropped in shared.files.replace_all(files) {
        tracing::warn!("cluster: {dropped}");
    }
    cluster.tables_seen.store(version, Ordering::Release);
}

/// Before a read of `token`'s stream: loads this node's copy from Redis unless this node owns
/// it or follows it (a stream with viewers here). Redis unreachable: the copy as it is.
pub async fn load(shared: &Shared, token: &str) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    if !shared.store.needs_load(token) {
        return;
    }
    let t = token.to_owned();
    match cluster
        .call(move |link| link.load_stream(&t, &gen_of))
        .await
    {
        Ok(loaded) => shared.store.refresh(token, loaded),
        Err(e) => {
            tracing::warn!(error = %e, "cluster: cannot load a stream; showing this node's copy")
        }
    }
}

/// Before a listing of streams: loads those another node made that this node has never seen
/// (the counts of copies it has may lag until they are read).
pub async fn load_unseen(shared: &Shared) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    let Ok(tokens) = cluster.call(ClusterLink::tokens).await else {
        return;
    };
    let unseen: Vec<String> = tokens
        .into_iter()
        .filter(|t| shared.store.read_id(t).is_none())
        .collect();
    if unseen.is_empty() {
        return;
    }
    match cluster
        .call(move |link| link.load_streams(&unseen, &gen_of))
        .await
    {
        Ok(loaded) => {
            for ls in loaded {
                let token = ls.token.clone();
                shared.store.refresh(&token, Some(ls));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cluster: cannot load streams for a listing"),
    }
}

/// What a page or feed URL names (see `Store::resolve`), on any node: a read id another node
/// made is looked up in Redis, and the stream loaded.
pub async fn resolve(shared: &Shared, id: &str, allow_token: bool) -> Option<String> {
    let Some(cluster) = &shared.cluster else {
        return shared.store.resolve(id, allow_token);
    };
    let token = match shared.store.resolve(id, allow_token) {
        Some(token) => token,
        None => {
            let i = id.to_owned();
            let by_read_id = cluster
                .call(move |link| link.token_of_read_id(&i))
                .await
                .ok()
                .flatten();
            match by_read_id {
                Some(token) => token,
                None if allow_token && plotstream_proto::Token::parse(id.as_bytes()).is_some() => {
                    id.to_owned()
                }
                None => return None,
            }
        }
    };
    load(shared, &token).await;
    shared.store.resolve(id, allow_token)
}

/// The leases thread: refreshes this node's leases every third of their time, and lets go of
/// those whose writers left once everything journaled before is stored.
fn leases(
    mut link: ClusterLink,
    shared: &Weak<Shared>,
    rx: &mpsc::Receiver<Release>,
    stop: &AtomicBool,
) {
    let period = link.ttl() / 3;
    let mut next_refresh = Instant::now() + period;
    // Tokens to let go of, with when their writers left: kept from round to round while their
    // lines are not stored yet, or Redis did not answer, until their leases would have run out.
    let mut pending: Vec<(String, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let wait = next_refresh
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        // Whoever waits for these tokens hears when this round is through with them (their
        // senders are dropped once it let go of them, or could not).
        let mut heard = Vec::new();
        if let Ok(first) = rx.recv_timeout(wait) {
            for r in std::iter::once(first).chain(rx.try_iter()) {
                pending.push((r.token, Instant::now()));
                heard.push(r.done);
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !pending.is_empty() {
            // Only what is stored may be let go of: the next owner keeps the epoch.
            let journal = shared.store.journal().clone();
            let ticket = journal.last_ticket();
            let deadline = Instant::now() + Duration::from_secs(2);
            let stored = || journal.progress().durable >= ticket;
            while !stored() && !journal.progress().failing && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let ttl = link.ttl();
            pending.retain(|(_, since)| since.elapsed() < ttl);
            if stored() && !pending.is_empty() {
                let mut released: Vec<String> = pending.iter().map(|(t, _)| t.clone()).collect();
                released.retain(|t| !shared.store.held_for_writers(t));
                released.sort();
                released.dedup();
                match link.release(&released) {
                    Ok(()) => {
                        pending.clear();
                        for token in &released {
                            shared.store.disown(token);
                        }
                        // A writer here that took a token again meanwhile takes its lease
                        // again at once (it is absent and the fence is still this node's).
                        let again: Vec<(String, u64)> = released
                            .iter()
                            .filter(|t| shared.store.held_for_writers(t))
                            .map(|t| (t.clone(), shared.store.fence(t)))
                            .collect();
                        drop(std::mem::take(&mut heard));
                        // (A refresh of nothing would be a PING.)
                        let lost = if again.is_empty() {
                            Vec::new()
                        } else {
                            link.refresh(&again).unwrap_or_default()
                        };
                        for (token, _) in lost {
                            shared.store.lost_ownership(&token, None, false);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: cannot let go of leases; trying again");
                    }
                }
            }
        }
        drop(heard);
        if Instant::now() >= next_refresh {
            next_refresh = Instant::now() + period;
            let held = shared.store.leased();
            let refreshed = link.refresh(&held);
            if let Some(cluster) = &shared.cluster {
                cluster
                    .unreachable
                    .store(refreshed.is_err(), Ordering::Relaxed);
            }
            shared.store.set_upstream(refreshed.is_ok());
            match refreshed {
                Ok(lost) => {
                    for (token, _) in lost {
                        tracing::warn!("cluster: a lease was lost; its writer ends with 423");
                        shared.store.lost_ownership(&token, None, false);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cluster: cannot refresh leases"),
            }
        }
    }
}

/// The owners thread: every announced new owner makes this node's copy stale (and ends its
/// writer here, if this node owned it under an older fence).
fn owners(link: &ClusterLink, shared: &Weak<Shared>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let result = link.listen(
            stop,
            |token, fence| {
                if let Some(shared) = shared.upgrade() {
                    shared.store.lost_ownership(token, Some(fence), false);
                }
            },
            |token| {
                if let Some(live) = shared.upgrade().as_ref().and_then(|s| s.store.live()) {
                    live.followed(token);
                }
            },
        );
        if let Err(e) = result {
            tracing::warn!(error = %e, "cluster: the owners channel broke; listening again");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// How the follow thread reads the stored lines: waiting on them while the live path is down,
/// polling while it is up, at once when a live run showed a gap.
#[derive(Debug, Default)]
struct Poll {
    /// This node is subscribed to the live channels.
    live: AtomicBool,
    /// A live run went past its copy: read the stored lines now.
    due: Mutex<bool>,
    wake: Condvar,
}

impl Poll {
    fn now(&self) {
        *lock(&self.due) = true;
        self.wake.notify_one();
    }

    /// Waits `most`, or less if a gap was seen meanwhile.
    fn wait(&self, most: Duration) {
        let due = lock(&self.due);
        let (mut due, _) = self
            .wake
            .wait_timeout_while(due, most, |due| !*due)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *due = false;
    }
}

/// The live-out thread: publishes the lines this node's writers add as soon as they are
/// applied, every run waiting in one round trip (while it is under way, the next lines
/// gather); a generation that reached no node is left quiet for a while.
fn live_out(mut link: ClusterLink, outbox: &Outbox, metrics: &Metrics, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let runs = outbox.take(LIVE_WAIT, LIVE_GATHER);
        let skipped = outbox.take_skipped();
        metrics
            .live_lines_skipped
            .fetch_add(skipped, Ordering::Relaxed);
        match link.publish(&runs) {
            Ok(got) => {
                for (run, n) in runs.iter().zip(got) {
                    if n == 0 {
                        outbox.quiet(&run.token);
                        continue;
                    }
                    let first = run
                        .records
                        .first_chunk::<8>()
                        .map_or(run.last, |b| u64::from_le_bytes(*b));
                    let lines = (run.last + 1).saturating_sub(first);
                    metrics.live_lines_out.fetch_add(lines, Ordering::Relaxed);
                }
            }
            Err(e) => {
                // The followers take these lines from the stored ones.
                tracing::debug!(error = %e, "cluster: cannot publish lines live");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// The live-in thread: applies the lines other nodes publish for the streams this node
/// follows, ahead of their stored copies (which fill whatever this path lost).
fn live_in(mut link: ClusterLink, weak: &Weak<Shared>, stop: &AtomicBool, poll: &Poll) {
    while !stop.load(Ordering::Relaxed) {
        let result = link.live(
            stop,
            || {
                poll.live.store(true, Ordering::Relaxed);
                let follows = weak.upgrade().map(|s| s.store.follows());
                follows.into_iter().flatten().map(|f| f.token).collect()
            },
            |run| {
                let applied = weak.upgrade().map(|s| s.store.follow_live(&run));
                if applied == Some(Live::Ahead) {
                    poll.now();
                }
            },
        );
        poll.live.store(false, Ordering::Relaxed);
        if let Err(e) = result {
            tracing::warn!(error = %e, "cluster: a live channel broke; subscribing again");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The stored lines a copy in generation `gen` at seq `last` lacks to reach the generation
/// `meta` names: the rest of `gen` and of each later one of the epoch (`StreamMeta::prev`;
/// their lines stay a while after they end), as runs `(gen, last seq, record)` in order, for
/// [`Store::follow_into`]. A writer that moved from node to node ended each of them. The
/// newest generation's own lines are not read (the follower's poll, or the load, has them).
/// An error (Redis away) reads nothing: the copy stays where it is, to be tried again.
fn read_on(
    link: &mut ClusterLink,
    gen: u64,
    last: u64,
    meta: &StreamMeta,
) -> Result<Vec<(u64, u64, Vec<u8>)>, StorageError> {
    let later = meta
        .prev
        .iter()
        .position(|g| *g == gen)
        .map_or(&[][..], |i| &meta.prev[i + 1..]);
    let mut out: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    let mut last = last;
    for &g in std::iter::once(&gen).chain(later) {
        loop {
            let runs = link.tail(&[(g, last)], Duration::ZERO, FOLLOW_BATCH)?;
            let Some(end) = runs.last().map(|r| r.1) else {
                break;
            };
            last = end;
            out.extend(runs);
        }
    }
    Ok(out)
}

/// The follow thread: applies the lines other nodes store to this node's copies of the
/// streams with viewers here.
fn follow(mut link: ClusterLink, weak: &Weak<Shared>, stop: &AtomicBool, poll: &Poll) {
    let mut last_check = Instant::now();
    let mut last_read = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // With the live path up, the stored lines only fill its gaps: they are read every
        // FOLLOW_POLL (at once when a live run showed a gap, but not more often than every
        // FOLLOW_MIN), not at every commit of every followed stream.
        let live = poll.live.load(Ordering::Relaxed);
        if live {
            poll.wait(FOLLOW_POLL.saturating_sub(last_read.elapsed()));
            std::thread::sleep(FOLLOW_MIN.saturating_sub(last_read.elapsed()));
        }
        last_read = Instant::now();
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let follows = shared.store.follows();
        if follows.is_empty() {
            drop(shared);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut reload: Vec<String> = follows
            .iter()
            .filter(|f| f.stale)
            .map(|f| f.token.clone())
            .collect();
        if last_check.elapsed() >= META_CHECK {
            last_check = Instant::now();
            let tokens: Vec<String> = follows.iter().map(|f| f.token.clone()).collect();
            if let Ok(metas) = link.metas(&tokens) {
                for (f, meta) in follows.iter().zip(metas) {
                    let Some(meta) = meta.as_deref().and_then(StreamMeta::decode) else {
                        continue;
                    };
                    if meta.gen == f.gen {
                        continue;
                    }
                    // A writer connected to a node again (maybe more than once since the
                    // last check): the copy reads on into the newest generation.
                    match read_on(&mut link, f.gen, f.last_seq, &meta) {
                        Ok(runs) => {
                            if !shared.store.follow_into(&f.token, &runs, &meta) {
                                reload.push(f.token.clone());
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster: cannot read a followed stream");
                        }
                    }
                }
            }
        }
        if !reload.is_empty() {
            for token in reload {
                match link.load_stream(&token, &gen_of) {
                    Ok(loaded) => shared.store.refresh(&token, loaded),
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: cannot load a followed stream");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            continue;
        }
        let reads: Vec<(u64, u64)> = follows.iter().map(|f| (f.gen, f.last_seq)).collect();
        drop(shared);
        let block = if live { Duration::ZERO } else { FOLLOW_BLOCK };
        let runs = match link.tail(&reads, block, FOLLOW_BATCH) {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot read followed streams");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let Some(shared) = weak.upgrade() else {
            return;
        };
        for (gen, last, record) in runs {
            if let Some(f) = follows.iter().find(|f| f.gen == gen) {
                shared.store.follow(&f.token, gen, last, &record);
            }
        }
    }
}
