//! The Redis backend (`serve --redis URL`, docs/storage.md "On Redis"): the same ops as the
//! embedded store, each commit one `MULTI`/`EXEC` transaction on Redis ≥ 7 or Valkey.
//!
//! Keys, all under one prefix (`plotstream:`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `meta` | hash | token → stream metadata record |
//! | `snap` | hash | generation → 8-byte big-endian seq, then the snapshot record |
//! | `lines:<gen>` | stream | one entry per stream and commit, id `<last seq>-0`, field `r`: the lines' record (`records::encode_batch`) |
//! | `kv:<table>` | hash | the small tables (registered, retired, files, folders, server) |
//!
//! A snapshot trims its generation's stream (`XTRIM MINID`) to the lines after the snapshot
//! this node stored [`KEPT_COMMITS`] commits earlier: a load needs only those after the last
//! snapshot, other nodes that follow the stream by its lines need a margin. Redis transactions do not roll back: a commit
//! retried after a lost `EXEC` reply may find its lines already there, which `XADD` reports as
//! an id "equal or smaller" than the stream's top and this backend counts as written (every
//! other op is idempotent).

use std::time::Duration;

use redis::{Connection, RedisResult, Value};

use plotstream_proto::Token;

use super::ops::{Backend, Batch, Loaded, LoadedStream, Op, StorageError, Table};
use crate::records::StreamMeta;

/// Where every key of a server lives.
const PREFIX: &str = "plotstream:";

/// Connect, read and write timeouts: a Redis that does not answer fails the commit (DC5: 503
/// to writers) instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The counter every commit that changes the small tables (tokens, files, folders) moves.
pub(super) const TABLES_VERSION: &str = "tables";

/// Commits of a stream's lines kept past its snapshots, for other nodes that follow it (see
/// `RedisBackend::trims`).
const KEPT_COMMITS: usize = 16;

/// How long the lines of a dropped generation stay readable for other nodes' followers.
const DROPPED_LINES_MS: u64 = 30_000;

/// Streams whose lines one round trip reads at start-up.
const LOAD_PIPELINE: usize = 512;

/// The environment variable a password comes from when the URL has none.
pub const PASSWORD_ENV: &str = "PLOTSTREAM_REDIS_PASSWORD";

/// One entry of an `XRANGE` reply: its id and its fields.
pub(super) type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// A server's state in Redis.
pub struct RedisBackend {
    link: RedisLink,
    /// The token of each generation this process wrote metadata for: the fence scripts check
    /// the stream's owner by token.
    owners: std::collections::HashMap<u64, String>,
    /// Per generation, the seq of its last snapshot in each of the last [`KEPT_COMMITS`]
    /// commits that stored one: a snapshot trims the lines only up to the oldest, so another
    /// node that follows the stream up to that many commits behind still finds every line.
    trims: std::collections::HashMap<u64, std::collections::VecDeque<u64>>,
    /// Told the token of a stream whose changes were refused because another node owns it now,
    /// before the commit's ticket is published (so its writer is not acknowledged).
    on_fenced: Option<OnFenced>,
}

/// What a backend calls when another node's fence refused a stream's changes.
pub type OnFenced = std::sync::Arc<dyn Fn(&str, u64) + Send + Sync>;

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// One connection to Redis, reconnected after any failure: the backend's (the committer
/// thread's) and each cluster thread's own.
pub struct RedisLink {
    client: redis::Client,
    /// `None` after a failed command: the next call reconnects.
    conn: Option<Connection>,
    /// The URL without its password, for messages.
    pub(super) shown: String,
    /// Read and write timeout.
    timeout: Duration,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("url", &self.shown)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl RedisLink {
    /// A link to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS); a
    /// password missing from the URL comes from `PLOTSTREAM_REDIS_PASSWORD` if set. Nothing is
    /// sent yet.
    pub fn new(url: &str) -> Result<RedisLink, StorageError> {
        let shown = without_password(url);
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| StorageError(format!("{shown}: not a Redis URL: {e}")))?;
        let info = match (
            info.redis_settings().password(),
            std::env::var(PASSWORD_ENV),
        ) {
            (None, Ok(password)) if !password.is_empty() => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            _ => info,
        };
        let client =
            redis::Client::open(info).map_err(|e| StorageError(format!("{shown}: {e}")))?;
        Ok(RedisLink {
            client,
            conn: None,
            shown,
            timeout: TIMEOUT,
        })
    }

    /// The same Redis with another read timeout (a blocking read's link).
    pub fn with_timeout(&self, timeout: Duration) -> RedisLink {
        RedisLink {
            client: self.client.clone(),
            conn: None,
            shown: self.shown.clone(),
            timeout,
        }
    }

    /// A new connection of its own (pub/sub), with this link's timeouts.
    pub fn connect(&self) -> Result<Connection, StorageError> {
        let conn = self
            .client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|e| self.err("cannot connect", &e))?;
        conn.set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| self.err("cannot set timeouts", &e))?;
        Ok(conn)
    }

    fn conn(&mut self) -> Result<&mut Connection, StorageError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StorageError("the Redis connection is closed".into()))
    }

    /// `what` failed with `e`, named with the URL (never its password).
    pub fn err(&self, what: &str, e: &dyn std::fmt::Display) -> StorageError {
        StorageError(format!("{}: {what}: {e}", self.shown))
    }

    /// Runs `f` on the connection; any failure drops it, so the next call reconnects.
    pub fn with_conn<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StorageError> {
        let result = f(self.conn()?);
        result.map_err(|e| {
            self.conn = None;
            self.err(what, &e)
        })
    }
}

impl RedisBackend {
    /// Connects to `url` (see [`RedisLink::new`]). Refuses, naming the URL (without its
    /// password), when Redis cannot be reached, refuses us or is older than 7.
    /// `on_fenced` hears of streams another node took over (see [`OnFenced`]).
    pub fn open(url: &str, on_fenced: Option<OnFenced>) -> Result<RedisBackend, StorageError> {
        let mut backend = RedisBackend {
            link: RedisLink::new(url)?,
            owners: std::collections::HashMap::new(),
            trims: std::collections::HashMap::new(),
            on_fenced,
        };
        let version = backend.server_version()?;
        tracing::info!(redis = %backend.link.shown, version = %version, "store: Redis");
        backend.warn_unless_fsync_always();
        Ok(backend)
    }

    /// `url` as messages show it: without its password.
    pub fn shown_url(url: &str) -> String {
        without_password(url)
    }

    fn err(&self, what: &str, e: &dyn std::fmt::Display) -> StorageError {
        self.link.err(what, e)
    }

    /// The `MINID` a snapshot of `gen` at `seq` trims to (empty: nothing yet), and `seq`
    /// remembered for the commits after this one (several snapshots in one commit count once).
    fn trim_before(&mut self, gen: u64, seq: u64) -> String {
        let kept = self.trims.entry(gen).or_default();
        let minid = match kept.front() {
            Some(oldest) if kept.len() >= KEPT_COMMITS => format!("{}-0", oldest + 1),
            _ => String::new(),
        };
        if kept.back().is_some_and(|last| *last >= seq) {
            return minid;
        }
        kept.push_back(seq);
        while kept.len() > KEPT_COMMITS {
            kept.pop_front();
        }
        minid
    }

    fn with_conn<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StorageError> {
        self.link.with_conn(what, f)
    }

    /// Redis's version; refuses servers older than 7 (`XTRIM MINID` is 6.2, the rest of the
    /// cluster work needs 7).
    fn server_version(&mut self) -> Result<String, StorageError> {
        let info: String = self.with_conn("INFO", |c| redis::cmd("INFO").arg("server").query(c))?;
        let version = info
            .lines()
            .find_map(|l| {
                l.strip_prefix("valkey_version:")
                    .or_else(|| l.strip_prefix("redis_version:"))
            })
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let valkey = info.contains("valkey_version:");
        if !valkey && major < 7 {
            return Err(StorageError(format!(
                "{}: Redis {version} is too old: plotstream needs Redis 7 or later, or Valkey",
                self.link.shown
            )));
        }
        Ok(version)
    }

    /// An acknowledged line is on Redis's disk only with `appendonly yes` and `appendfsync
    /// always`; say so at start-up otherwise (CONFIG may be disabled: then say nothing).
    fn warn_unless_fsync_always(&mut self) {
        let get = |c: &mut Connection, name: &str| -> RedisResult<Vec<String>> {
            redis::cmd("CONFIG").arg("GET").arg(name).query(c)
        };
        let Ok(aof) = self.with_conn("CONFIG GET", |c| get(c, "appendonly")) else {
            return;
        };
        let Ok(fsync) = self.with_conn("CONFIG GET", |c| get(c, "appendfsync")) else {
            return;
        };
        let aof = aof.get(1).map_or("", String::as_str);
        let fsync = fsync.get(1).map_or("", String::as_str);
        if aof != "yes" || fsync != "always" {
            tracing::warn!(
                redis = %self.link.shown,
                appendonly = aof,
                appendfsync = fsync,
                "store: this Redis does not fsync every write: acknowledged lines survive a \
                 plotstream crash, but not necessarily a Redis crash or power loss \
                 (docs/storage.md \"On Redis\")"
            );
        }
    }

    pub(super) fn kv_key(table: Table) -> String {
        format!("{PREFIX}kv:{}", table.id())
    }
}

impl Backend for RedisBackend {
    fn load(&mut self, gen_of: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
        let mut out = Loaded::default();
        let tables = [
            Table::Registered,
            Table::Retired,
            Table::Files,
            Table::Folders,
            Table::Server,
        ];
        for table in tables {
            let entries: Vec<(String, Vec<u8>)> = self.with_conn("HGETALL", |c| {
                redis::cmd("HGETALL").arg(Self::kv_key(table)).query(c)
            })?;
            for (key, value) in entries {
                match table {
                    Table::Server if key == "clean" => out.clean = value == b"1",
                    Table::Server => {}
                    t => out.entries.push((t, key, value)),
                }
            }
        }
        let meta: Vec<(String, Vec<u8>)> = self.with_conn("HGETALL", |c| {
            redis::cmd("HGETALL").arg(key("meta")).query(c)
        })?;
        out.fresh = out.entries.is_empty() && meta.is_empty();
        if out.fresh {
            out.clean = true;
        }
        out.streams = self.with_conn("load", |c| read_streams(c, meta, gen_of))?;
        Ok(out)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        // What each command's reply means (see `Reply`).
        let mut replies_are = Vec::new();
        for (i, op) in batch.ops.iter().enumerate() {
            match op {
                Op::Meta { token, record } => match StreamMeta::decode(record) {
                    Some(meta) => {
                        self.owners.insert(meta.gen, token.clone());
                        pipe.cmd("EVAL")
                            .arg(META_SCRIPT)
                            .arg(3)
                            .arg(key("owner"))
                            .arg(key("meta"))
                            .arg(key("readid"))
                            .arg(token)
                            .arg(fence_of(meta.gen))
                            .arg(record)
                            .arg(&meta.read_id);
                        replies_are.push(Reply::Fenced(token.clone(), fence_of(meta.gen)));
                    }
                    None => {
                        pipe.cmd("HSET").arg(key("meta")).arg(token).arg(record);
                        replies_are.push(Reply::Plain);
                    }
                },
                // History on Redis: not yet (the server keeps none there; docs/history.md).
                Op::Line { .. }
                | Op::HistPoints { .. }
                | Op::HistPut { .. }
                | Op::HistTrim { .. }
                | Op::HistDrop { .. } => {}
                Op::Snapshot { gen, seq, record } => {
                    let Some(token) = self.owners.get(gen).cloned() else {
                        tracing::warn!(
                            gen,
                            "store: a snapshot of a generation without metadata; skipped"
                        );
                        continue;
                    };
                    let mut value = Vec::with_capacity(8 + record.len());
                    value.extend_from_slice(&seq.to_be_bytes());
                    value.extend_from_slice(record);
                    pipe.cmd("EVAL")
                        .arg(SNAP_SCRIPT)
                        .arg(3)
                        .arg(key("owner"))
                        .arg(key("snap"))
                        .arg(lines_key(*gen))
                        .arg(&token)
                        .arg(fence_of(*gen))
                        .arg(gen)
                        .arg(value)
                        .arg(self.trim_before(*gen, *seq));
                    replies_are.push(Reply::Fenced(token, fence_of(*gen)));
                }
                Op::DropGen { gen } => {
                    // Fenced like the changes it goes with: the new generation's metadata right
                    // after it (`Journal::push_all`: a new owner, a restart), else the fence it
                    // was made under.
                    // Other nodes may still be reading its last lines (a writer that moved to
                    // another node): they go a while later.
                    let next_meta = match batch.ops.get(i + 1) {
                        Some(Op::Meta { token, record }) => {
                            StreamMeta::decode(record).map(|m| (token.clone(), fence_of(m.gen)))
                        }
                        _ => None,
                    };
                    let owner = next_meta
                        .or_else(|| self.owners.get(gen).map(|t| (t.clone(), fence_of(*gen))));
                    match owner {
                        Some((token, fence)) => {
                            pipe.cmd("EVAL")
                                .arg(DROP_SCRIPT)
                                .arg(3)
                                .arg(key("owner"))
                                .arg(key("snap"))
                                .arg(lines_key(*gen))
                                .arg(&token)
                                .arg(fence)
                                .arg(gen)
                                .arg(DROPPED_LINES_MS);
                            replies_are.push(Reply::Fenced(token, fence));
                        }
                        None => {
                            pipe.cmd("HDEL").arg(key("snap")).arg(gen);
                            pipe.cmd("PEXPIRE")
                                .arg(lines_key(*gen))
                                .arg(DROPPED_LINES_MS);
                            replies_are.extend([Reply::Plain, Reply::Plain]);
                        }
                    }
                }
                Op::DropStream { token } => {
                    pipe.cmd("HDEL").arg(key("meta")).arg(token);
                    replies_are.push(Reply::Plain);
                }
                Op::Put { table, key, value } => {
                    match value {
                        Some(v) => pipe.cmd("HSET").arg(Self::kv_key(*table)).arg(key).arg(v),
                        None => pipe.cmd("HDEL").arg(Self::kv_key(*table)).arg(key),
                    };
                    replies_are.push(Reply::Plain);
                }
            }
        }
        // Other nodes reload the small tables when this counter moves (docs/storage.md
        // "Several nodes").
        if batch
            .ops
            .iter()
            .any(|op| matches!(op, Op::Put { table, .. } if *table != Table::Server))
        {
            pipe.cmd("INCR").arg(key(TABLES_VERSION));
            replies_are.push(Reply::Plain);
        }
        // Every run of lines in one script: a busy node's commit costs Redis one script call,
        // not one per stream.
        let mut appends = redis::cmd("EVAL");
        let (mut keys, mut args, mut appended) = (vec![key("owner")], Vec::new(), Vec::new());
        let mut record = Vec::new();
        for run in batch.line_runs(false) {
            let Some(token) = self.owners.get(&run.gen) else {
                tracing::warn!(
                    gen = run.gen,
                    "store: lines of a generation without metadata; skipped"
                );
                continue;
            };
            run.encode(&mut record);
            keys.push(lines_key(run.gen));
            args.push(token.as_bytes().to_vec());
            args.push(fence_of(run.gen).to_string().into_bytes());
            args.push(format!("{}-0", run.last).into_bytes());
            args.push(std::mem::take(&mut record));
            appended.push((token.clone(), fence_of(run.gen)));
        }
        if !appended.is_empty() {
            appends
                .arg(APPEND_SCRIPT)
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            pipe.add_command(appends);
            replies_are.push(Reply::Appends(appended));
        }
        for op in &batch.ops {
            if let Op::DropGen { gen } = op {
                self.owners.remove(gen);
                self.trims.remove(gen);
            }
        }
        if replies_are.is_empty() {
            return Ok(());
        }
        let replies: Vec<RedisResult<Value>> = self.with_conn("commit", |c| pipe.query(c))?;
        let mut fenced: Vec<(String, u64)> = Vec::new();
        for (reply, is) in replies.into_iter().zip(replies_are) {
            match (reply, is) {
                (Err(e), _) => return Err(self.err("commit", &e)),
                (Ok(Value::Int(0)), Reply::Fenced(token, fence)) => {
                    if !fenced.contains(&(token.clone(), fence)) {
                        fenced.push((token, fence));
                    }
                }
                (Ok(Value::Array(codes)), Reply::Appends(runs)) => {
                    for (code, run) in codes.iter().zip(runs) {
                        if matches!(code, Value::Int(0)) && !fenced.contains(&run) {
                            fenced.push(run);
                        }
                    }
                }
                (Ok(_), _) => {}
            }
        }
        for (token, fence) in fenced {
            tracing::warn!(
                token = %Token::parse(token.as_bytes()).map_or_else(|| "-".to_owned(), |t| t.fingerprint()),
                "store: another node owns this stream now; this node's changes to it were not stored"
            );
            if let Some(on_fenced) = &self.on_fenced {
                on_fenced(&token, fence);
            }
        }
        Ok(())
    }
}

/// What a commit's reply means.
enum Reply {
    /// `OK` or a count: nothing to check beyond success.
    Plain,
    /// A fenced script's, with the fence the change was made under: `0` when another node
    /// owns the stream of this token now (the change was not applied), `1` applied, `2`
    /// already there (a retried commit's lines).
    Fenced(String, u64),
    /// The line appends' script: one such code per run, in order (`(token, fence)` each).
    Appends(Vec<(String, u64)>),
}

/// The fence number a generation was made under (docs/storage.md "Several nodes"): every
/// generation of a stream a node owns is `fence << FENCE_SHIFT | n`.
pub const FENCE_SHIFT: u32 = 20;

/// The fence number of generation `gen`.
pub fn fence_of(gen: u64) -> u64 {
    gen >> FENCE_SHIFT
}

/// Applies the metadata of `ARGV[1]` only while its owner's fence is `ARGV[2]`, and indexes
/// its read id.
const META_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
return 1";

/// Stores a snapshot only while the fence holds, and trims the lines before `ARGV[5]` (none
/// when empty).
const SNAP_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if ARGV[5] ~= '' then redis.call('XTRIM', KEYS[3], 'MINID', ARGV[5]) end
return 1";

/// Drops generation `ARGV[3]` (its snapshot now, its lines after `ARGV[4]` ms) only while the
/// fence holds.
const DROP_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1";

/// Appends runs of lines, run `i` (key `KEYS[i + 1]`, arguments `token, fence, id, record` from
/// `ARGV[4i - 3]`) only while its stream's fence holds. Returns a code per run: `0` fenced, `1`
/// appended, `2` already there (a retried commit's lines).
const APPEND_SCRIPT: &str = r"
local out = {}
for i = 2, #KEYS do
  local a = (i - 2) * 4
  if redis.call('HGET', KEYS[1], ARGV[a + 1]) ~= ARGV[a + 2] then
    out[i - 1] = 0
  else
    local ok = redis.pcall('XADD', KEYS[i], ARGV[a + 3], 'r', ARGV[a + 4])
    if type(ok) == 'table' and ok.err then
      if not string.find(ok.err, 'equal or smaller', 1, true) then
        return redis.error_reply(ok.err)
      end
      out[i - 1] = 2
    else
      out[i - 1] = 1
    end
  end
end
return out";

/// The streams whose metadata records `meta` holds, each with its snapshot and the lines after
/// it, many streams a round trip (start-up, and a cluster node loading one stream).
pub(super) fn read_streams(
    c: &mut Connection,
    meta: Vec<(String, Vec<u8>)>,
    gen_of: &dyn Fn(&[u8]) -> Option<u64>,
) -> RedisResult<Vec<LoadedStream>> {
    let mut streams: Vec<(LoadedStream, Option<u64>, u64)> = meta
        .into_iter()
        .map(|(token, record)| {
            let gen = gen_of(&record);
            let s = LoadedStream {
                token,
                meta: record,
                ..LoadedStream::default()
            };
            (s, gen, 0)
        })
        .collect();
    for chunk in streams.chunks_mut(LOAD_PIPELINE) {
        // The snapshots, then the lines after each.
        let mut pipe = redis::pipe();
        for (_, gen, _) in chunk.iter() {
            pipe.cmd("HGET").arg(key("snap")).arg(gen.unwrap_or(0));
        }
        let snaps: Vec<Option<Vec<u8>>> = pipe.query(c)?;
        for ((s, gen, after), stored) in chunk.iter_mut().zip(snaps) {
            let Some(stored) = stored.filter(|_| gen.is_some()) else {
                continue;
            };
            match stored.split_first_chunk::<8>() {
                Some((seq, record)) => {
                    *after = u64::from_be_bytes(*seq);
                    s.snapshot = Some((*after, record.to_vec()));
                }
                // Too short to hold its seq: damaged; recovery reports it (DC6).
                None => s.snapshot = Some((0, Vec::new())),
            }
        }
        let mut pipe = redis::pipe();
        for (_, gen, after) in chunk.iter() {
            pipe.cmd("XRANGE")
                .arg(lines_key(gen.unwrap_or(0)))
                .arg(format!("{}-0", after.saturating_add(1)))
                .arg("+");
        }
        let replies: Vec<Vec<StreamEntry>> = pipe.query(c)?;
        for ((s, gen, after), entries) in chunk.iter_mut().zip(replies) {
            if gen.is_none() {
                continue;
            }
            for (id, fields) in entries {
                let (last, record) = entry_record(&id, fields);
                if !s.push_stored(last, &record, *after) {
                    break;
                }
            }
        }
    }
    Ok(streams.into_iter().map(|(s, _, _)| s).collect())
}

/// An entry of a `lines:<gen>` stream: its last seq (the id's first part) and its record.
pub(super) fn entry_record(id: &str, fields: Vec<(String, Vec<u8>)>) -> (u64, Vec<u8>) {
    let last = id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .unwrap_or(0);
    let record = fields
        .into_iter()
        .find(|(f, _)| f == "r")
        .map(|(_, v)| v)
        .unwrap_or_default();
    (last, record)
}

/// A key under the prefix.
pub(super) fn key(rest: &str) -> String {
    format!("{PREFIX}{rest}")
}

/// The Redis Stream of generation `gen`'s lines.
pub(super) fn lines_key(gen: u64) -> String {
    format!("{PREFIX}lines:{gen}")
}

/// `url` with the password of its user part replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split_once(':').map_or(&rest[..at], |(u, _)| u);
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            without_password("redis://:s3cret@db.example:6380/2"),
            "redis://:***@db.example:6380/2"
        );
        assert_eq!(
            without_password("rediss://ops:s3cret@db/0"),
            "rediss://ops:***@db/0"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
