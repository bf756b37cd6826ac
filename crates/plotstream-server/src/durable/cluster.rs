//! What several nodes on one Redis share beyond the store's records (docs/storage.md "Several
//! nodes"): the writer leases and the fences that order owners, one stream read on demand, the
//! read-id index, the channel that announces a new owner, and the tail of a stream's lines.
//!
//! Keys (beside the backend's, under the same prefix):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `lease:<token>` | string, expires | the node whose writer holds the token |
//! | `owner` | hash | token → the fence of the node that owns the stream now |
//! | `released` | hash | token → the last fence whose node let go of it cleanly |
//! | `fence` | string | the last fence handed out (`INCR`) |
//! | `readid` | hash | read id → token |
//! | `tables` | string | moved by every commit that changes tokens, files or folders |
//! | `owners` | channel | `<token> <fence> <node>` whenever a stream gets a new owner |
//! | `follows` | channel | `<token>` whenever a node starts following a stream |
//! | `live:<token>` | channel | the stream's lines as its owner applies them ([`LiveRun`]) |
//!
//! Every change a node stores for a stream is checked, in the same script, against the
//! stream's `owner` fence (the backend's scripts): a node that lost a stream, however slow or
//! paused, can never interleave its lines with the new owner's.

use std::time::Duration;

use redis::Value;

use super::ops::{LoadedStream, StorageError, Table};
use super::redis::{
    entry_record, key, lines_key, read_streams, RedisBackend, RedisLink, StreamEntry,
    TABLES_VERSION,
};

/// How many times a stream is read when its generation changes while it is read.
const LOAD_TRIES: usize = 3;

/// The channel on which a new owner is announced.
pub const OWNERS_CHANNEL: &str = "plotstream:owners";

/// The channel on which a node says it now follows a stream (`<token>`): its owner publishes
/// the stream's lines again at once, quiet or not.
pub const FOLLOWS_CHANNEL: &str = "plotstream:follows";

/// Lines of one generation as its owner applied them, published on the stream's live channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRun {
    /// The stream's write token (its channel).
    pub token: String,
    /// The generation.
    pub gen: u64,
    /// The stream's epoch (a follower in the same epoch may go on into a new generation).
    pub epoch: String,
    /// The last line's seq.
    pub last: u64,
    /// The lines' records, in the stored lines' format (`records::encode_batch`).
    pub records: Vec<u8>,
}

impl LiveRun {
    /// The message: gen and last seq (8 bytes each, little-endian), the epoch's length (1 byte)
    /// and the epoch, then the records.
    fn encode(&self) -> Vec<u8> {
        let epoch = &self.epoch.as_bytes()[..self.epoch.len().min(255)];
        let mut out = Vec::with_capacity(17 + epoch.len() + self.records.len());
        out.extend_from_slice(&self.gen.to_le_bytes());
        out.extend_from_slice(&self.last.to_le_bytes());
        out.push(u8::try_from(epoch.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(epoch);
        out.extend_from_slice(&self.records);
        out
    }

    /// The message `bytes` of `token`'s channel; `None` unless it is what `encode` writes
    /// (records are checked where they are applied).
    pub fn decode(token: &str, bytes: &[u8]) -> Option<LiveRun> {
        let (gen, rest) = bytes.split_first_chunk::<8>()?;
        let (last, rest) = rest.split_first_chunk::<8>()?;
        let (n, rest) = rest.split_first()?;
        let (epoch, records) = rest.split_at_checked(usize::from(*n))?;
        Some(LiveRun {
            token: token.to_owned(),
            gen: u64::from_le_bytes(*gen),
            epoch: std::str::from_utf8(epoch).ok()?.to_owned(),
            last: u64::from_le_bytes(*last),
            records: records.to_vec(),
        })
    }
}

const LIVE_PREFIX: &str = "live:";

fn live_channel(token: &str) -> String {
    key(&format!("{LIVE_PREFIX}{token}"))
}

/// How often a live subscription is brought to the generations this node follows.
const LIVE_RESUBSCRIBE: Duration = Duration::from_millis(20);

/// Takes a stream's lease for node `ARGV[1]` (`ARGV[2]` ms), unless another node's lease is
/// live and `ARGV[3]` (takeover) is `0`. Returns `{state, fence, clean}`: state `0` refused,
/// `1` this node held it already (fence unchanged), `2` a new fence; `clean` is `1` when the
/// previous owner let go cleanly (or there was none).
const ACQUIRE_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or 0), 1}
end
if cur and ARGV[3] == '0' then return {0, 0, 0} end
local prev = redis.call('HGET', KEYS[2], ARGV[4])
local clean = 0
if prev == false or redis.call('HGET', KEYS[4], ARGV[4]) == prev then clean = 1 end
local f = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[4], f)
redis.call('PUBLISH', ARGV[5], ARGV[4] .. ' ' .. f .. ' ' .. ARGV[1])
return {2, f, clean}";

/// Extends the lease if this node holds it, or takes it again if it expired while nobody else
/// took the stream (Redis was away longer than the lease); `0` when another node owns it now.
const REFRESH_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur == false and redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Lets go of the lease if this node holds it, recording that its fence ended cleanly.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local f = redis.call('HGET', KEYS[2], ARGV[2])
if f then redis.call('HSET', KEYS[3], ARGV[2], f) end
return 1";

/// What [`ClusterLink::acquire`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Another node's writer holds the token and takeover is off (423).
    Refused,
    /// This node owns the stream under `fence`.
    Owned {
        /// The fence its changes are stored under.
        fence: u64,
        /// True when this call made the fence (a new owner): the node must load the stream.
        new: bool,
        /// The previous owner let go cleanly (or there was none): nothing it showed its viewers
        /// can be missing from Redis, so the stream keeps its epoch.
        clean: bool,
    },
}

/// One node's link to the cluster's shared state.
#[derive(Debug)]
pub struct ClusterLink {
    link: RedisLink,
    /// This process's node id (random, new at every start).
    node: String,
    ttl: Duration,
}

fn lease_key(token: &str) -> String {
    key(&format!("lease:{token}"))
}

impl ClusterLink {
    /// A link for node `node` whose leases last `ttl`.
    pub fn new(url: &str, node: String, ttl: Duration) -> Result<ClusterLink, StorageError> {
        Ok(ClusterLink {
            link: RedisLink::new(url)?,
            node,
            ttl,
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease time.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Another link to the same Redis (each thread has its own connection), whose reads wait
    /// at most `timeout`.
    pub fn sibling(&self, timeout: Duration) -> ClusterLink {
        ClusterLink {
            link: self.link.with_timeout(timeout),
            node: self.node.clone(),
            ttl: self.ttl,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Takes `token`'s lease for this node (a writer is about to stream it here).
    pub fn acquire(&mut self, token: &str, takeover: bool) -> Result<Acquired, StorageError> {
        let ttl = self.ttl_ms();
        let node = self.node.clone();
        let reply: (u64, u64, u64) = self.link.with_conn("acquire", |c| {
            redis::cmd("EVAL")
                .arg(ACQUIRE_SCRIPT)
                .arg(4)
                .arg(lease_key(token))
                .arg(key("owner"))
                .arg(key("fence"))
                .arg(key("released"))
                .arg(&node)
                .arg(ttl)
                .arg(u8::from(takeover))
                .arg(token)
                .arg(OWNERS_CHANNEL)
                .query(c)
        })?;
        Ok(match reply {
            (0, _, _) => Acquired::Refused,
            (state, fence, clean) => Acquired::Owned {
                fence,
                new: state == 2,
                clean: clean == 1,
            },
        })
    }

    /// Extends the leases of `held` (token, fence), one round trip (a `PING` when there are
    /// none, so a node without writers still learns that Redis is away); returns those this
    /// node lost.
    pub fn refresh(&mut self, held: &[(String, u64)]) -> Result<Vec<(String, u64)>, StorageError> {
        if held.is_empty() {
            self.link
                .with_conn("PING", |c| redis::cmd("PING").query::<String>(c))?;
            return Ok(Vec::new());
        }
        let ttl = self.ttl_ms();
        let mut pipe = redis::pipe();
        for (token, fence) in held {
            pipe.cmd("EVAL")
                .arg(REFRESH_SCRIPT)
                .arg(2)
                .arg(lease_key(token))
                .arg(key("owner"))
                .arg(&self.node)
                .arg(ttl)
                .arg(token)
                .arg(fence);
        }
        let kept: Vec<u8> = self.link.with_conn("refresh", |c| pipe.query(c))?;
        Ok(held
            .iter()
            .zip(kept)
            .filter(|(_, k)| *k == 0)
            .map(|(h, _)| h.clone())
            .collect())
    }

    /// Lets go of the leases of `tokens` (their writers left and their lines are stored).
    pub fn release(&mut self, tokens: &[String]) -> Result<(), StorageError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for token in tokens {
            pipe.cmd("EVAL")
                .arg(RELEASE_SCRIPT)
                .arg(3)
                .arg(lease_key(token))
                .arg(key("owner"))
                .arg(key("released"))
                .arg(&self.node)
                .arg(token);
        }
        self.link
            .with_conn("release", |c| pipe.query::<Vec<Value>>(c))
            .map(drop)
    }

    /// `token`'s stream as Redis holds it now, if it exists.
    pub fn load_stream(
        &mut self,
        token: &str,
        gen_of: &dyn Fn(&[u8]) -> Option<u64>,
    ) -> Result<Option<LoadedStream>, StorageError> {
        self.link.with_conn("load", |c| {
            let meta_of = |c: &mut redis::Connection| -> redis::RedisResult<Option<Vec<u8>>> {
                redis::cmd("HGET").arg(key("meta")).arg(token).query(c)
            };
            let mut loaded = None;
            // The metadata, snapshot and lines are read in turn: a new generation made
            // meanwhile (another node took the stream) may have dropped the snapshot read
            // next. Read again, a few times, until the generation held still.
            for _ in 0..LOAD_TRIES {
                let Some(meta) = meta_of(c)? else {
                    return Ok(None);
                };
                let gen = gen_of(&meta);
                loaded = read_streams(c, vec![(token.to_owned(), meta)], gen_of)?.pop();
                if meta_of(c)?.as_deref().and_then(gen_of) == gen {
                    break;
                }
            }
            Ok(loaded)
        })
    }

    /// The streams of `tokens` as Redis holds them now (those that exist), many a round trip.
    pub fn load_streams(
        &mut self,
        tokens: &[String],
        gen_of: &dyn Fn(&[u8]) -> Option<u64>,
    ) -> Result<Vec<LoadedStream>, StorageError> {
        let metas = self.metas(tokens)?;
        let found: Vec<(String, Vec<u8>)> = tokens
            .iter()
            .zip(metas)
            .filter_map(|(t, m)| Some((t.clone(), m?)))
            .collect();
        self.link
            .with_conn("load", |c| read_streams(c, found, gen_of))
    }

    /// The metadata records of `tokens` (`None` for a stream that is gone), one round trip.
    pub fn metas(&mut self, tokens: &[String]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.link.with_conn("HMGET", |c| {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(key("meta"));
            for t in tokens {
                cmd.arg(t);
            }
            cmd.query(c)
        })
    }

    /// The token of read id `id`, if some node made it.
    pub fn token_of_read_id(&mut self, id: &str) -> Result<Option<String>, StorageError> {
        self.link.with_conn("HGET", |c| {
            redis::cmd("HGET").arg(key("readid")).arg(id).query(c)
        })
    }

    /// The version of the small tables (moved by every commit that changes them).
    pub fn tables_version(&mut self) -> Result<u64, StorageError> {
        self.link.with_conn("GET", |c| {
            redis::cmd("GET")
                .arg(key(TABLES_VERSION))
                .query::<Option<u64>>(c)
                .map(Option::unwrap_or_default)
        })
    }

    /// The small tables' entries `(table, key, value)`: registered and retired tokens, files
    /// and folders.
    pub fn tables(&mut self) -> Result<Vec<(Table, String, Vec<u8>)>, StorageError> {
        let tables = [
            Table::Registered,
            Table::Retired,
            Table::Files,
            Table::Folders,
        ];
        let mut pipe = redis::pipe();
        for table in tables {
            pipe.cmd("HGETALL").arg(RedisBackend::kv_key(table));
        }
        let all: Vec<Vec<(String, Vec<u8>)>> = self.link.with_conn("HGETALL", |c| pipe.query(c))?;
        Ok(tables
            .into_iter()
            .zip(all)
            .flat_map(|(t, entries)| entries.into_iter().map(move |(k, v)| (t, k, v)))
            .collect())
    }

    /// Every stream's token.
    pub fn tokens(&mut self) -> Result<Vec<String>, StorageError> {
        self.link
            .with_conn("HKEYS", |c| redis::cmd("HKEYS").arg(key("meta")).query(c))
    }

    /// The lines stored after `after` of each `(gen, after)`, waiting up to `block` (zero:
    /// not at all) for the first: `(gen, last seq, record)` per stored run, in order. One round trip for every
    /// stream this node follows (`XREAD`), not one per point.
    pub fn tail(
        &mut self,
        follows: &[(u64, u64)],
        block: Duration,
        count: usize,
    ) -> Result<Vec<(u64, u64, Vec<u8>)>, StorageError> {
        if follows.is_empty() {
            return Ok(Vec::new());
        }
        let ms = u64::try_from(block.as_millis()).unwrap_or(0);
        type Reply = Option<Vec<(String, Vec<StreamEntry>)>>;
        let reply: Reply = self.link.with_conn("XREAD", |c| {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(count);
            // `BLOCK 0` would wait forever: no wait is no `BLOCK`.
            if ms > 0 {
                cmd.arg("BLOCK").arg(ms);
            }
            cmd.arg("STREAMS");
            for (gen, _) in follows {
                cmd.arg(lines_key(*gen));
            }
            for (_, after) in follows {
                cmd.arg(format!("{after}-0"));
            }
            cmd.query(c)
        })?;
        let mut out = Vec::new();
        for (stream_key, entries) in reply.unwrap_or_default() {
            let Some(gen) = stream_key
                .rsplit(':')
                .next()
                .and_then(|g| g.parse::<u64>().ok())
            else {
                continue;
            };
            for (id, fields) in entries {
                let (last, record) = entry_record(&id, fields);
                out.push((gen, last, record));
            }
        }
        Ok(out)
    }

    /// Publishes `runs` on their streams' live channels, in one round trip. Returns, per run,
    /// how many nodes got it.
    pub fn publish(&mut self, runs: &[LiveRun]) -> Result<Vec<u64>, StorageError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        self.link.with_conn("PUBLISH", |c| {
            let mut pipe = redis::pipe();
            for run in runs {
                pipe.cmd("PUBLISH")
                    .arg(live_channel(&run.token))
                    .arg(run.encode());
            }
            pipe.query(c)
        })
    }

    /// Subscribes to the live channels of the streams `want()` returns (asked again every
    /// `LIVE_RESUBSCRIBE`), calling `on(run)` for each message, until `stop` is set or the
    /// connection breaks (`Err`: subscribe again; messages sent meanwhile are lost, which the
    /// stored lines make up for).
    pub fn live(
        &mut self,
        stop: &std::sync::atomic::AtomicBool,
        mut want: impl FnMut() -> Vec<String>,
        mut on: impl FnMut(LiveRun),
    ) -> Result<(), StorageError> {
        let mut conn = self.link.connect()?;
        let mut pubsub = conn.as_pubsub();
        let mut subscribed = std::collections::HashSet::<String>::new();
        let mut synced = std::time::Instant::now() - LIVE_RESUBSCRIBE;
        let prefix = key(LIVE_PREFIX);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if synced.elapsed() >= LIVE_RESUBSCRIBE {
                synced = std::time::Instant::now();
                let wanted: std::collections::HashSet<String> = want().into_iter().collect();
                let gone: Vec<String> = subscribed
                    .difference(&wanted)
                    .map(|t| live_channel(t))
                    .collect();
                let new: Vec<String> = wanted
                    .difference(&subscribed)
                    .map(|t| live_channel(t))
                    .collect();
                // A confirmation slower than the read timeout is skipped when it comes (it is
                // not a message): the command was sent.
                let sent = |r: redis::RedisResult<()>, what| match r {
                    Err(e) if !e.is_timeout() => Err(self.link.err(what, &e)),
                    _ => Ok(()),
                };
                if !gone.is_empty() {
                    sent(pubsub.unsubscribe(&gone), "UNSUBSCRIBE")?;
                }
                if !new.is_empty() {
                    sent(pubsub.subscribe(&new), "SUBSCRIBE")?;
                    // Their owners publish at once, even a stream nobody followed a moment ago.
                    let _: Result<Vec<u64>, _> = self.link.with_conn("PUBLISH", |c| {
                        let mut pipe = redis::pipe();
                        for token in wanted.difference(&subscribed) {
                            pipe.cmd("PUBLISH").arg(FOLLOWS_CHANNEL).arg(token);
                        }
                        pipe.query(c)
                    });
                }
                subscribed = wanted;
            }
            let msg = match pubsub.get_message() {
                Ok(msg) => msg,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(self.link.err("a live channel", &e)),
            };
            let token = msg.get_channel_name().strip_prefix(prefix.as_str());
            if let Some(run) = token.and_then(|t| LiveRun::decode(t, msg.get_payload_bytes())) {
                on(run);
            }
        }
        Ok(())
    }

    /// Listens on [`OWNERS_CHANNEL`] and [`FOLLOWS_CHANNEL`], calling `on_owner(token, fence)`
    /// for each other node's announcement of a new owner and `on_follow(token)` for each
    /// stream a node starts following, until `stop` is set (checked at least every read
    /// timeout of this link) or the connection breaks (`Err`: listen again).
    pub fn listen(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        mut on_owner: impl FnMut(&str, u64),
        mut on_follow: impl FnMut(&str),
    ) -> Result<(), StorageError> {
        let mut conn = self.link.connect()?;
        let mut pubsub = conn.as_pubsub();
        pubsub
            .subscribe(&[OWNERS_CHANNEL, FOLLOWS_CHANNEL])
            .map_err(|e| self.link.err("SUBSCRIBE", &e))?;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let msg = match pubsub.get_message() {
                Ok(msg) => msg,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(self.link.err("the owners channel", &e)),
            };
            let payload: String = msg.get_payload().unwrap_or_default();
            if msg.get_channel_name() == FOLLOWS_CHANNEL {
                on_follow(&payload);
                continue;
            }
            let mut parts = payload.split(' ');
            if let (Some(token), Some(Ok(fence)), Some(node)) =
                (parts.next(), parts.next().map(str::parse), parts.next())
            {
                // This node's own announcements change nothing here.
                if node != self.node {
                    on_owner(token, fence);
                }
            }
        }
        Ok(())
    }
}
