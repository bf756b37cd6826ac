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
//! A snapshot trims its generation's stream to the lines after it (`XTRIM MINID`), so a stream
//! holds about one window of lines, as on disk. Redis transactions do not roll back: a commit
//! retried after a lost `EXEC` reply may find its lines already there, which `XADD` reports as
//! an id "equal or smaller" than the stream's top and this backend counts as written (every
//! other op is idempotent).

use std::time::Duration;

use redis::{Connection, RedisResult, Value};

use super::ops::{Backend, Batch, Loaded, LoadedStream, Op, StorageError, Table};

/// Where every key of a server lives.
const PREFIX: &str = "plotstream:";

/// Connect, read and write timeouts: a Redis that does not answer fails the commit (DC5: 503
/// to writers) instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Streams whose lines one round trip reads at start-up.
const LOAD_PIPELINE: usize = 512;

/// The environment variable a password comes from when the URL has none.
pub const PASSWORD_ENV: &str = "PLOTSTREAM_REDIS_PASSWORD";

/// One entry of an `XRANGE` reply: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// A server's state in Redis.
pub struct RedisBackend {
    client: redis::Client,
    /// `None` after a failed command: the next commit reconnects.
    conn: Option<Connection>,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.shown)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl RedisBackend {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS);
    /// a password missing from the URL comes from `PLOTSTREAM_REDIS_PASSWORD` if set. Refuses,
    /// naming the URL (without its password), when Redis cannot be reached or refuses us.
    pub fn open(url: &str) -> Result<RedisBackend, StorageError> {
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
        let mut backend = RedisBackend {
            client,
            conn: None,
            shown,
        };
        let version = backend.server_version()?;
        tracing::info!(redis = %backend.shown, version = %version, "store: Redis");
        backend.warn_unless_fsync_always();
        Ok(backend)
    }

    /// `url` as messages show it: without its password.
    pub fn shown_url(url: &str) -> String {
        without_password(url)
    }

    fn conn(&mut self) -> Result<&mut Connection, StorageError> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(TIMEOUT)
                .map_err(|e| self.err("cannot connect", &e))?;
            conn.set_read_timeout(Some(TIMEOUT))
                .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| self.err("cannot set timeouts", &e))?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StorageError("the Redis connection is closed".into()))
    }

    fn err(&self, what: &str, e: &dyn std::fmt::Display) -> StorageError {
        StorageError(format!("{}: {what}: {e}", self.shown))
    }

    /// Runs `f` on the connection; any failure drops it, so the next call reconnects.
    fn with_conn<T>(
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
                self.shown
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
                redis = %self.shown,
                appendonly = aof,
                appendfsync = fsync,
                "store: this Redis does not fsync every write: acknowledged lines survive a \
                 plotstream crash, but not necessarily a Redis crash or power loss \
                 (docs/storage.md \"On Redis\")"
            );
        }
    }

    fn key(rest: &str) -> String {
        format!("{PREFIX}{rest}")
    }

    fn lines_key(gen: u64) -> String {
        format!("{PREFIX}lines:{gen}")
    }

    fn kv_key(table: Table) -> String {
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
            redis::cmd("HGETALL").arg(Self::key("meta")).query(c)
        })?;
        let snaps: Vec<(u64, Vec<u8>)> = self.with_conn("HGETALL", |c| {
            redis::cmd("HGETALL").arg(Self::key("snap")).query(c)
        })?;
        out.fresh = out.entries.is_empty() && meta.is_empty() && snaps.is_empty();
        if out.fresh {
            out.clean = true;
        }
        let snaps: std::collections::HashMap<u64, Vec<u8>> = snaps.into_iter().collect();
        let mut streams: Vec<(LoadedStream, Option<u64>, u64)> = Vec::with_capacity(meta.len());
        for (token, record) in meta {
            let gen = gen_of(&record);
            let mut s = LoadedStream {
                token,
                meta: record,
                ..LoadedStream::default()
            };
            let mut after = 0;
            if let Some(stored) = gen.and_then(|g| snaps.get(&g)) {
                match stored.split_first_chunk::<8>() {
                    Some((seq, record)) => {
                        after = u64::from_be_bytes(*seq);
                        s.snapshot = Some((after, record.to_vec()));
                    }
                    // Too short to hold its seq: damaged; recovery reports it (DC6).
                    None => s.snapshot = Some((0, Vec::new())),
                }
            }
            streams.push((s, gen, after));
        }
        // The lines after each snapshot, many streams a round trip.
        for chunk in streams.chunks_mut(LOAD_PIPELINE) {
            let mut pipe = redis::pipe();
            for (_, gen, after) in chunk.iter() {
                pipe.cmd("XRANGE")
                    .arg(Self::lines_key(gen.unwrap_or(0)))
                    .arg(format!("{}-0", after.saturating_add(1)))
                    .arg("+");
            }
            let replies: Vec<Vec<StreamEntry>> = self.with_conn("XRANGE", |c| pipe.query(c))?;
            for ((s, gen, after), entries) in chunk.iter_mut().zip(replies) {
                if gen.is_none() {
                    continue;
                }
                for (id, fields) in entries {
                    let last = id
                        .split_once('-')
                        .and_then(|(ms, _)| ms.parse::<u64>().ok())
                        .unwrap_or(0);
                    let record = fields
                        .into_iter()
                        .find(|(f, _)| f == "r")
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    if !s.push_stored(last, &record, *after) {
                        break;
                    }
                }
            }
        }
        out.streams = streams.into_iter().map(|(s, _, _)| s).collect();
        Ok(out)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        // Which commands are XADDs, whose "already there" is not an error (see the module).
        let mut appends = Vec::new();
        for op in &batch.ops {
            match op {
                Op::Meta { token, record } => {
                    pipe.cmd("HSET")
                        .arg(Self::key("meta"))
                        .arg(token)
                        .arg(record);
                }
                Op::Line { .. } => continue,
                Op::Snapshot { gen, seq, record } => {
                    let mut value = Vec::with_capacity(8 + record.len());
                    value.extend_from_slice(&seq.to_be_bytes());
                    value.extend_from_slice(record);
                    pipe.cmd("HSET").arg(Self::key("snap")).arg(gen).arg(value);
                    appends.push(false);
                    pipe.cmd("XTRIM")
                        .arg(Self::lines_key(*gen))
                        .arg("MINID")
                        .arg(format!("{}-0", seq.saturating_add(1)));
                }
                Op::DropGen { gen } => {
                    pipe.cmd("HDEL").arg(Self::key("snap")).arg(gen);
                    appends.push(false);
                    pipe.cmd("DEL").arg(Self::lines_key(*gen));
                }
                Op::DropStream { token } => {
                    pipe.cmd("HDEL").arg(Self::key("meta")).arg(token);
                }
                Op::Put { table, key, value } => match value {
                    Some(v) => {
                        pipe.cmd("HSET").arg(Self::kv_key(*table)).arg(key).arg(v);
                    }
                    None => {
                        pipe.cmd("HDEL").arg(Self::kv_key(*table)).arg(key);
                    }
                },
            }
            appends.push(false);
        }
        let mut record = Vec::new();
        for run in batch.line_runs() {
            run.encode(&mut record);
            pipe.cmd("XADD")
                .arg(Self::lines_key(run.gen))
                .arg(format!("{}-0", run.last))
                .arg("r")
                .arg(record.as_slice());
            appends.push(true);
        }
        if appends.is_empty() {
            return Ok(());
        }
        let replies: Vec<RedisResult<Value>> = self.with_conn("commit", |c| pipe.query(c))?;
        for (reply, is_append) in replies.into_iter().zip(appends) {
            match reply {
                Ok(_) => {}
                Err(e) if is_append && e.to_string().contains("equal or smaller") => {}
                Err(e) => return Err(self.err("commit", &e)),
            }
        }
        Ok(())
    }
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
