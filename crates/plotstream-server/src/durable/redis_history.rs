//! The history on Redis (docs/storage.md "On Redis"): one sorted set per stream,
//! `hist:<token>`, every score 0, each member a record's 9-byte key (its level, then its index
//! big-endian) followed by the record, so that members sort by key: `ZRANGEBYLEX` reads a key
//! range in index order and `ZREMRANGEBYLEX` deletes one.
//!
//! A commit's history writes ([`Batch::hist_writes`]) go into its `MULTI` as one script call,
//! each stream's applied only while the stream's `owner` fence is the one this node holds it
//! under, as its lines are: a node that lost a stream never writes into its history. Every
//! write is idempotent (a put removes its key's member first, a delete removes a key range), so
//! a commit retried after a lost `EXEC` reply writes the same set again.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::Connection;

use plotstream_proto::Token;

use super::ops::{Batch, HistKv, StorageError};

/// Reads a Redis store's history records beside its commits, over a connection of its own
/// (never the committer's), reconnected on the call after a failure.
pub struct RedisHistory {
    client: redis::Client,
    /// The URL without its password, for messages.
    shown: String,
    /// The keys' prefix: a stream's set is this followed by its token.
    prefix: String,
    /// Connect, read and write timeout.
    timeout: Duration,
    /// `None` until the first read and after a failed one.
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory")
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisHistory {
    /// A reader of the sets `prefix<token>` through `client`; nothing is sent yet.
    pub(super) fn new(
        client: &redis::Client,
        shown: &str,
        prefix: String,
        timeout: Duration,
    ) -> RedisHistory {
        RedisHistory {
            client: client.clone(),
            shown: shown.to_owned(),
            prefix,
            timeout,
            conn: Mutex::new(None),
        }
    }

    fn err(&self, what: &str, e: &dyn std::fmt::Display) -> StorageError {
        StorageError(format!("{}: history: {what}: {e}", self.shown))
    }

    fn connect(&self) -> Result<Connection, StorageError> {
        let conn = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.err("cannot connect", &e))?;
        conn.set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.err("cannot set timeouts", &e))?;
        Ok(conn)
    }
}

impl crate::history::Store for RedisHistory {
    fn read(
        &self,
        token: &str,
        level: u8,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        if from >= to || limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("ZRANGEBYLEX");
        cmd.arg(format!("{}{token}", self.prefix))
            .arg(bound(b'[', level, from))
            .arg(bound(b'(', level, to))
            .arg("LIMIT")
            .arg(0)
            .arg(i64::try_from(limit).unwrap_or(i64::MAX));
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.connect()?),
        };
        let members: Vec<Vec<u8>> = cmd.query(conn).map_err(|e| {
            *slot = None;
            self.err("ZRANGEBYLEX", &e)
        })?;
        members
            .into_iter()
            .map(|mut member| {
                let Some((key, _)) = member.split_first_chunk::<KEY_LEN>() else {
                    return Err(self.err("read", &"a member shorter than its key"));
                };
                let index = index_of(key);
                member.drain(..KEY_LEN);
                Ok((index, member))
            })
            .collect()
    }
}

/// The history writes of `batch` as one script call on the sets `prefix<token>`, and the
/// `(token, fence)` of each stream it writes, in the order of the script's reply codes (`0`:
/// the fence refused that stream's writes, none of them was applied; `1`: applied). `None`
/// when the batch has no history writes.
///
/// A stream's writes are made under the fence (`fence_of`) of its newest generation in
/// `owners` (generation → token: those this process wrote metadata for, this commit's
/// included); those of a stream without one are skipped, as its lines are.
pub(super) fn script(
    batch: &Batch,
    owner_key: &str,
    prefix: &str,
    owners: &HashMap<u64, String>,
    fence_of: fn(u64) -> u64,
) -> Option<(redis::Cmd, Vec<(String, u64)>)> {
    let writes = batch.hist_writes();
    if writes.is_empty() {
        return None;
    }
    let mut newest: HashMap<&str, u64> = HashMap::new();
    for (gen, token) in owners {
        let g = newest.entry(token.as_str()).or_insert(*gen);
        *g = (*g).max(*gen);
    }
    // Each stream's writes in their order; streams have keys of their own, so their order
    // between streams does not matter.
    let mut streams: Vec<(&str, Vec<HistKv<'_>>)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for w in writes {
        let token = match &w {
            HistKv::Put { token, .. } | HistKv::Delete { token, .. } => *token,
        };
        let i = *at.entry(token).or_insert_with(|| {
            streams.push((token, Vec::new()));
            streams.len() - 1
        });
        streams[i].1.push(w);
    }
    let (mut keys, mut args, mut written) = (vec![owner_key.to_owned()], Vec::new(), Vec::new());
    for (token, writes) in streams {
        let Some(f) = newest.get(token).map(|gen| fence_of(*gen)) else {
            tracing::warn!(
                token = %Token::parse(token.as_bytes()).map_or_else(|| "-".to_owned(), |t| t.fingerprint()),
                "store: history of a stream without metadata; skipped"
            );
            continue;
        };
        keys.push(format!("{prefix}{token}"));
        args.push(token.as_bytes().to_vec());
        args.push(f.to_string().into_bytes());
        args.push(writes.len().to_string().into_bytes());
        for w in writes {
            let (min, max, member) = match w {
                HistKv::Put {
                    level,
                    index,
                    value,
                    ..
                } => {
                    let key = key_of(level, index);
                    let mut member = Vec::with_capacity(KEY_LEN + value.len());
                    member.extend_from_slice(&key);
                    value.extend_into(&mut member);
                    let max = match successor(key) {
                        Some(next) => [&b"("[..], &next].concat(),
                        None => b"+".to_vec(),
                    };
                    ([&b"["[..], &key].concat(), max, member)
                }
                HistKv::Delete {
                    level, from, to, ..
                } => (bound(b'[', level, from), bound(b'(', level, to), Vec::new()),
            };
            args.extend([min, max, member]);
        }
        written.push((token.to_owned(), f));
    }
    if written.is_empty() {
        return None;
    }
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(HIST_SCRIPT).arg(keys.len()).arg(keys).arg(args);
    Some((cmd, written))
}

/// A member's key: its level, then its index big-endian.
fn key_of(level: u8, index: u64) -> [u8; KEY_LEN] {
    let mut key = [0; KEY_LEN];
    key[0] = level;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The index of a member's key.
fn index_of(key: &[u8; KEY_LEN]) -> u64 {
    let mut index = [0; 8];
    index.copy_from_slice(&key[1..]);
    u64::from_be_bytes(index)
}

/// A lex range bound (`[`: inclusive, `(`: exclusive) at key `(level, index)`: the members of
/// the keys `(level, from..to)` are exactly those in `[key(from)` .. `(key(to)`, since each
/// starts with its key.
fn bound(kind: u8, level: u8, index: u64) -> Vec<u8> {
    [&[kind][..], &key_of(level, index)].concat()
}

/// The smallest key above every member that starts with `key` (the key as a 72-bit number plus
/// one), or `None` for the last key.
fn successor(mut key: [u8; KEY_LEN]) -> Option<[u8; KEY_LEN]> {
    for byte in key.iter_mut().rev() {
        match byte.checked_add(1) {
            Some(b) => {
                *byte = b;
                return Some(key);
            }
            None => *byte = 0,
        }
    }
    None
}

/// A key's bytes in a member.
const KEY_LEN: usize = 9;

/// Applies each stream's history writes only while its fence holds. `KEYS[1]` is the `owner`
/// hash, `KEYS[i]` the stream's set; its arguments are `token, fence, n`, then `n` writes of
/// three each: `min, max` of a lex range to remove, then a member to add (empty: none).
/// Returns a code per stream: `0` fenced (nothing written), `1` applied.
const HIST_SCRIPT: &str = r"
local out = {}
local a = 0
for i = 2, #KEYS do
  local n = tonumber(ARGV[a + 3])
  if redis.call('HGET', KEYS[1], ARGV[a + 1]) == ARGV[a + 2] then
    for w = 0, n - 1 do
      local b = a + 3 + w * 3
      redis.call('ZREMRANGEBYLEX', KEYS[i], ARGV[b + 1], ARGV[b + 2])
      if ARGV[b + 3] ~= '' then redis.call('ZADD', KEYS[i], 0, ARGV[b + 3]) end
    end
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
  a = a + 3 + n * 3
end
return out";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;
    use crate::durable::{Backend, OnFenced, Op, RedisBackend, FENCE_SHIFT};
    use crate::history::{Builder, Point, Store, Stored, Val, View, Write, HEAD};
    use crate::records::StreamMeta;

    /// A `redis-server` (the system's package) on a free loopback port, without persistence,
    /// killed by PID when dropped.
    struct Server {
        child: Child,
        url: String,
    }

    impl Server {
        /// Starts one and waits until it says it accepts connections.
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("a free port: {e}"));
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
                .arg("--dir")
                .arg(std::env::temp_dir())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("redis-server (apt-get install redis-server): {e}"));
            let stdout = child.stdout.take().unwrap_or_else(|| panic!("piped"));
            let mut said = BufReader::new(stdout).lines();
            let mut server = Server {
                child,
                url: format!("redis://127.0.0.1:{port}"),
            };
            loop {
                match said.next() {
                    Some(Ok(line)) if line.contains("Ready to accept connections") => break,
                    Some(Ok(_)) => {}
                    _ => {
                        let _ = server.child.wait();
                        panic!("redis-server on port {port} stopped before it was ready");
                    }
                }
            }
            // Drained, so that its log never fills the pipe.
            std::thread::spawn(move || said.for_each(drop));
            server
        }

        fn run<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
            redis::Client::open(self.url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| cmd.query(&mut c))
                .unwrap_or_else(|e| panic!("{e}"))
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The keys as redb and `history/tests.rs` keep them: what Redis must hold, key for key.
    #[derive(Default, PartialEq, Debug)]
    struct Model(BTreeMap<(u8, u64), Vec<u8>>);

    impl Model {
        /// Asserts that `self` holds what `want` does, naming the keys that differ.
        #[track_caller]
        fn assert_is(&self, want: &Model, what: &str) {
            let differ: Vec<_> = self
                .0
                .keys()
                .chain(want.0.keys())
                .filter(|k| self.0.get(k) != want.0.get(k))
                .collect();
            assert!(
                differ.is_empty(),
                "{what}: {} keys differ, the first {:?}",
                differ.len(),
                &differ[..differ.len().min(8)]
            );
        }

        /// Applies the writes of `token`'s history in `batch`.
        fn commit(&mut self, batch: &Batch, token: &str) {
            for w in batch.hist_writes() {
                match w {
                    HistKv::Put {
                        token: t,
                        level,
                        index,
                        value,
                    } if t == token => {
                        self.0.insert((level, index), value.to_cow().into_owned());
                    }
                    HistKv::Delete {
                        token: t,
                        level,
                        from,
                        to,
                    } if t == token => {
                        self.0
                            .retain(|k, _| !(k.0 == level && (from..to).contains(&k.1)));
                    }
                    _ => {}
                }
            }
        }
    }

    /// A backend holding `tokens` (a generation each) under fence 7 (as their owner), its
    /// reader, and the fences it was refused under.
    fn open(server: &Server, tokens: &[&str]) -> (RedisBackend, RedisHistory, Refused) {
        let refused: Refused = Arc::default();
        let heard = refused.clone();
        let on_fenced: OnFenced = Arc::new(move |token: &str, fence| {
            heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((token.to_owned(), fence));
        });
        let mut backend =
            RedisBackend::open(&server.url, Some(on_fenced)).unwrap_or_else(|e| panic!("{e}"));
        let mut ops = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let _: i64 = server.run(redis::cmd("HSET").arg(OWNER).arg(*token).arg(FENCE));
            let meta = StreamMeta {
                gen: FENCE << FENCE_SHIFT | (i as u64 + 1),
                prev: Vec::new(),
                read_id: format!("read{i}"),
                epoch: "e".into(),
                maxpoints: 10,
                claimed_by: None,
                rejected_lines: 0,
                displaced_lines: 0,
                budget_limited: false,
            };
            ops.push(Op::Meta {
                token: (*token).to_owned(),
                record: meta.encode(),
            });
        }
        commit(&mut backend, &Batch::of(ops));
        let reader = backend.history_reader();
        (backend, reader, refused)
    }

    type Refused = Arc<Mutex<Vec<(String, u64)>>>;

    fn commit(backend: &mut RedisBackend, batch: &Batch) {
        backend.commit(batch).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Pushes `w` into `batch`.
    fn journal(token: &Arc<str>, batch: &mut Batch, w: Write<'_>) {
        batch.push_history(token, w);
    }

    fn point(i: u64) -> Point {
        Point {
            seq: i + 1,
            t: 1_796_515_200_000 + i as i64,
            x: Val::Num(i as f64),
            y: Val::Num((i as f64 / 300.0).sin()),
        }
    }

    /// Points `from..to` of `token` into `b`, committed every `every` points to `backend` and
    /// to `model`.
    fn push(
        backend: &mut RedisBackend,
        model: &mut Model,
        b: &mut Builder,
        token: &str,
        from: u64,
        to: u64,
        every: u64,
    ) {
        let token: Arc<str> = Arc::from(token);
        let mut batch = Batch::default();
        for i in from..to {
            b.push(&point(i), &mut |w| journal(&token, &mut batch, w));
            if (i + 1) % every == 0 {
                let batch = std::mem::take(&mut batch);
                commit(backend, &batch);
                model.commit(&batch, &token);
            }
        }
        commit(backend, &batch);
        model.commit(&batch, &token);
    }

    /// Everything Redis holds for `token`, read back through the reader, as a model.
    fn stored(reader: &RedisHistory, token: &str) -> Model {
        let mut out = Model::default();
        for level in (0..=crate::history::tier::TOP).chain([HEAD]) {
            let records = reader
                .read(token, level, 0, u64::MAX, usize::MAX)
                .unwrap_or_else(|e| panic!("{e}"));
            out.0
                .extend(records.into_iter().map(|(i, r)| ((level, i), r)));
        }
        out
    }

    fn points(view: &View<'_, Stored<'_>>, a: u64, b: u64) -> Vec<(u64, Point)> {
        let mut out = Vec::new();
        view.points(a, b, &mut |n, p| {
            out.push((n, p.clone()));
            true
        })
        .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    const OWNER: &str = "plotstream:owner";
    const FENCE: u64 = 7;

    #[test]
    fn every_point_is_read_back_from_redis_whatever_the_commits() {
        let server = Server::start();
        let tokens = ["every1", "every7", "every1000"];
        let (mut backend, reader, refused) = open(&server, &tokens);
        for (token, every) in tokens.into_iter().zip([1, 7, 1000]) {
            let (mut model, mut b) = (Model::default(), Builder::new());
            push(&mut backend, &mut model, &mut b, token, 0, 5_000, every);
            stored(&reader, token).assert_is(&model, &format!("every {every}"));
            let src = Stored {
                store: &reader,
                token,
            };
            let view = View::load(&src).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((view.end, view.head.sealed), (5_000, 4_096));
            assert_eq!(view.bytes, b.bytes());
            let all = points(&view, 0, 5_000);
            assert_eq!(all.len(), 5_000, "every {every}");
            assert!(all.iter().all(|(n, p)| *p == point(*n)));
            assert_eq!(points(&view, 1020, 1030).len(), 10);
            // A seal replaced its chunk's parts: below the open chunk, only whole chunks.
            let level0: Vec<u64> = model.0.keys().filter(|k| k.0 == 0).map(|k| k.1).collect();
            let sealed: Vec<u64> = level0.iter().copied().filter(|i| *i < 4_096).collect();
            assert_eq!(sealed, [0, 1024, 2048, 3072]);
            // The head, rewritten at every seal, is one record.
            assert_eq!(model.0.keys().filter(|k| k.0 == HEAD).count(), 1);
        }
        assert!(refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty());
    }

    #[test]
    fn a_trim_drops_whole_chunks_and_a_drop_drops_everything() {
        let server = Server::start();
        let (mut backend, reader, _) = open(&server, &["tok", "other"]);
        let (mut model, mut b) = (Model::default(), Builder::new());
        push(&mut backend, &mut model, &mut b, "tok", 0, 10_000, 100);
        let (mut other, mut ob) = (Model::default(), Builder::new());
        push(&mut backend, &mut other, &mut ob, "other", 0, 3_000, 500);
        let token: Arc<str> = Arc::from("tok");
        for _ in 0..4 {
            let first = b.head.first;
            let len = model.0.get(&(0, first)).map_or(0, Vec::len) as u64;
            let mut batch = Batch::default();
            let next_t = point(first + 1024).t;
            assert!(b.trim(1024, len, next_t, &mut |w| journal(&token, &mut batch, w)));
            commit(&mut backend, &batch);
            model.commit(&batch, &token);
        }
        stored(&reader, "tok").assert_is(&model, "tok");
        let src = Stored {
            store: &reader,
            token: "tok",
        };
        let view = View::load(&src).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(view.head.first, 4096);
        assert_eq!(view.bytes, b.bytes());
        let all = points(&view, 0, 10_000);
        assert_eq!(all.first().map(|(n, _)| *n), Some(4096));
        assert_eq!(all.len(), 10_000 - 4096);
        assert!(all.iter().all(|(n, p)| *p == point(*n)));

        commit(
            &mut backend,
            &Batch::of(vec![Op::HistDrop {
                token: "tok".into(),
            }]),
        );
        stored(&reader, "tok").assert_is(&Model::default(), "dropped");
        let exists: i64 = server.run(redis::cmd("EXISTS").arg("plotstream:hist:tok"));
        assert_eq!(exists, 0, "an emptied set is no key");
        let view = View::load(&src).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(view.end, 0);
        stored(&reader, "other").assert_is(&other, "another stream's history stays");
    }

    #[test]
    fn a_commit_refused_by_the_fence_stores_no_history() {
        let server = Server::start();
        let (mut backend, reader, refused) = open(&server, &["lost", "kept"]);
        let (mut lost, mut lb) = (Model::default(), Builder::new());
        push(&mut backend, &mut lost, &mut lb, "lost", 0, 2_000, 300);
        let before = stored(&reader, "lost");
        before.assert_is(&lost, "before");
        // Another node takes the stream over: its fence moves on.
        let _: i64 = server.run(redis::cmd("HSET").arg(OWNER).arg("lost").arg(FENCE + 1));
        let (lost_token, kept_token): (Arc<str>, Arc<str>) = ("lost".into(), "kept".into());
        let (mut kept, mut kb) = (Model::default(), Builder::new());
        let mut batch = Batch::default();
        for i in 2_000..3_100 {
            lb.push(&point(i), &mut |w| journal(&lost_token, &mut batch, w));
        }
        for i in 0..1_100 {
            kb.push(&point(i), &mut |w| journal(&kept_token, &mut batch, w));
        }
        batch.ops.push(Op::HistDrop {
            token: "lost".into(),
        });
        commit(&mut backend, &batch);
        kept.commit(&batch, "kept");
        stored(&reader, "lost").assert_is(&before, "nothing written, nothing dropped");
        stored(&reader, "kept").assert_is(&kept, "the other stream's history is stored");
        let heard = refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(heard, [("lost".to_owned(), FENCE)]);
    }

    #[test]
    fn reads_keep_to_their_range_and_limit_and_reconnect_after_a_failure() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<RedisHistory>();
        let server = Server::start();
        let (mut backend, reader, _) = open(&server, &["tok"]);
        let token: Arc<str> = Arc::from("tok");
        let mut batch = Batch::default();
        for (level, index) in [(1, 0), (1, 1), (1, 2), (1, u64::MAX), (2, 0), (0, 5)] {
            journal(
                &token,
                &mut batch,
                Write::Put {
                    level,
                    index,
                    value: vec![level, 1],
                    replaces: 0,
                },
            );
        }
        // A key rewritten in the same commit holds the last value.
        journal(
            &token,
            &mut batch,
            Write::Put {
                level: 1,
                index: 1,
                value: vec![9],
                replaces: 0,
            },
        );
        commit(&mut backend, &batch);
        let read = |from, to, limit| {
            reader
                .read("tok", 1, from, to, limit)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let all = vec![(0, vec![1, 1]), (1, vec![9]), (2, vec![1, 1])];
        assert_eq!(read(0, u64::MAX, 10), all);
        assert_eq!(read(0, 3, 2), all[..2]);
        assert_eq!(read(1, 2, 10), all[1..2]);
        assert_eq!(read(2, 2, 10), []);
        assert_eq!(read(0, 3, 0), []);
        assert_eq!(read(u64::MAX - 1, u64::MAX, 10), [], "the end is excluded");
        assert_eq!(read(3, u64::MAX, 10), [], "(1, MAX) is past every `to`");
        let _: redis::Value =
            server.run(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal"));
        // Redis closes the other connections before it answers: the reader's next read fails,
        // and the one after reconnects.
        let failed = reader.read("tok", 1, 0, 3, 10);
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(read(0, 3, 10), all);
    }

    #[test]
    fn keys_sort_as_their_level_and_index() {
        assert_eq!(successor(key_of(1, 5)), Some(key_of(1, 6)));
        assert_eq!(successor(key_of(1, u64::MAX)), Some(key_of(2, 0)));
        assert_eq!(successor(key_of(HEAD, u64::MAX)), None);
        assert!(key_of(0, u64::MAX) < key_of(1, 0));
        assert!(key_of(1, 255) < key_of(1, 256));
        assert_eq!(
            index_of(&key_of(3, 0x0102_0304_0506_0708)),
            0x0102_0304_0506_0708
        );
    }
}
