//! The embedded store: one redb file (docs/storage.md "Choosing the embedded store").

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::ops::{Backend, Batch, HistKv, Loaded, LoadedStream, Op, StorageError, Table};

/// The on-disk store: one redb file, `plotstream.redb`, in the data directory.
#[derive(Debug)]
pub struct RedbBackend {
    /// `None` after a failed commit: redb refuses every operation after an I/O error until
    /// the file is opened again, so the next commit reopens it (and redb repairs it).
    db: Option<Arc<redb::Database>>,
    path: PathBuf,
    /// The database as history readers get it (`None` while closed).
    shared: Arc<Mutex<Option<Arc<redb::Database>>>>,
}

const META: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("stream_meta");
const LINES: redb::TableDefinition<'_, (u64, u64), &[u8]> = redb::TableDefinition::new("lines");
const SNAPS: redb::TableDefinition<'_, u64, (u64, &[u8])> = redb::TableDefinition::new("snapshots");
const KV: redb::TableDefinition<'_, (u8, &str), &[u8]> = redb::TableDefinition::new("kv");
/// History records by `(token, level, index)` (docs/history.md "Records").
const HIST: redb::TableDefinition<'_, (&str, u8, u64), &[u8]> =
    redb::TableDefinition::new("history");
/// History records of [`OUT_OF_LINE`] bytes or more, each under a number one past the highest
/// kept; `HIST` holds a [reference](part_ref) to each (docs/storage.md "Records"). A record
/// goes when its reference does, in the same commit.
const PARTS: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("history_parts");

/// A history record this long or longer is stored in `PARTS`, not in `HIST` itself. redb
/// rebuilds the whole leaf a key goes into: a sealed chunk (some 30 KiB) kept among the small
/// records rewritten at every seal (tier blocks, the head) was copied again with each of them,
/// and a new chunk copied the one before it. In `PARTS` every insert is the tree's last key,
/// which redb puts in a leaf of its own without copying any other (docs/history.md "What it
/// costs").
const OUT_OF_LINE: usize = 1024;

/// `HIST`'s value for the record numbered `id` in `PARTS`: a zero byte, then `id`. No record
/// is nine bytes that begin with a zero (a points record or block that begins with a zero
/// count is that one byte; a head begins with `{`), so a record stored before `PARTS` existed
/// is never mistaken for one.
fn part_ref(id: u64) -> [u8; 9] {
    let mut r = [0; 9];
    r[1..].copy_from_slice(&id.to_le_bytes());
    r
}

/// The `PARTS` number a `HIST` value refers to, if it is a [reference](part_ref).
fn part_id(value: &[u8]) -> Option<u64> {
    match value {
        [0, id @ ..] => Some(u64::from_le_bytes(id.try_into().ok()?)),
        _ => None,
    }
}

/// redb's page cache (its default is 1 GiB): reads of history fill it, so without a bound an
/// export of a week would keep a week's pages in memory (docs/history.md "What it costs").
const CACHE_BYTES: usize = 64 << 20;

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError(format!("{}: {what}: {e}", path.display()))
}

impl RedbBackend {
    /// The database file inside `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join("plotstream.redb")
    }

    /// Opens (or creates) the store in `dir`. Refuses, naming the file, when it is damaged
    /// beyond what redb repairs or another process has it open.
    pub fn open(dir: &Path) -> Result<RedbBackend, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(dir, "cannot create the data directory", e))?;
        let path = Self::file_in(dir);
        let db = Arc::new(Self::open_file(&path)?);
        Ok(RedbBackend {
            shared: Arc::new(Mutex::new(Some(db.clone()))),
            db: Some(db),
            path,
        })
    }

    fn open_file(path: &Path) -> Result<redb::Database, StorageError> {
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(|s| {
                tracing::warn!(
                    progress = s.progress(),
                    "store: repairing after an unclean stop"
                );
            })
            .create(path)
            .map_err(|e| err(path, "cannot open the store", e))?;
        let w = db.begin_write().map_err(|e| err(path, "begin", e))?;
        {
            w.open_table(META)
                .map_err(|e| err(path, "stream_meta", e))?;
            w.open_table(LINES).map_err(|e| err(path, "lines", e))?;
            w.open_table(SNAPS).map_err(|e| err(path, "snapshots", e))?;
            w.open_table(KV).map_err(|e| err(path, "kv", e))?;
            w.open_table(HIST).map_err(|e| err(path, "history", e))?;
            w.open_table(PARTS)
                .map_err(|e| err(path, "history_parts", e))?;
        }
        w.commit().map_err(|e| err(path, "commit", e))?;
        Ok(db)
    }

    /// Rewrites the file without its free pages (redb's `compact`): the file shrinks to about
    /// what it holds. Returns whether it did anything.
    pub fn compact(&mut self) -> Result<bool, StorageError> {
        let p = self.path.clone();
        self.db()?;
        // redb compacts only a database nobody else holds: readers get it back after.
        self.set_shared(None);
        let result = match self.db.as_mut().and_then(Arc::get_mut) {
            Some(db) => db.compact().map_err(|e| err(&p, "compact", e)),
            None => Ok(false),
        };
        self.set_shared(self.db.clone());
        result
    }

    fn set_shared(&self, db: Option<Arc<redb::Database>>) {
        *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = db;
    }

    /// Reads history records beside the commits (docs/history.md "Reading").
    pub fn history_reader(&self) -> RedbHistory {
        RedbHistory {
            db: self.shared.clone(),
            path: self.path.clone(),
        }
    }

    fn db(&mut self) -> Result<&redb::Database, StorageError> {
        if self.db.is_none() {
            let db = Arc::new(Self::open_file(&self.path)?);
            self.set_shared(Some(db.clone()));
            self.db = Some(db);
            tracing::info!(path = %self.path.display(), "store reopened after a failed commit");
        }
        self.db
            .as_deref()
            .ok_or_else(|| StorageError("the store is closed".into()))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let result = self.try_write(batch);
        if result.is_err() {
            // Dropped now, reopened by the next attempt.
            self.db = None;
            self.set_shared(None);
        }
        result
    }

    fn try_write(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let p = &self.path.clone();
        let w = self.db()?.begin_write().map_err(|e| err(p, "begin", e))?;
        {
            let mut meta = w.open_table(META).map_err(|e| err(p, "stream_meta", e))?;
            let mut lines = w.open_table(LINES).map_err(|e| err(p, "lines", e))?;
            let mut snaps = w.open_table(SNAPS).map_err(|e| err(p, "snapshots", e))?;
            let mut kv = w.open_table(KV).map_err(|e| err(p, "kv", e))?;
            let mut hist = w.open_table(HIST).map_err(|e| err(p, "history", e))?;
            for op in &batch.ops {
                match op {
                    Op::Meta { token, record } => {
                        meta.insert(token.as_str(), record.as_slice())
                            .map_err(|e| err(p, "write", e))?;
                    }
                    Op::Line { .. }
                    | Op::HistPoints { .. }
                    | Op::HistPut { .. }
                    | Op::HistTrim { .. }
                    | Op::HistDrop { .. } => {}
                    Op::Snapshot { gen, seq, record } => {
                        snaps
                            .insert(*gen, (*seq, record.as_slice()))
                            .map_err(|e| err(p, "write", e))?;
                        lines
                            .retain_in((*gen, 0)..=(*gen, *seq), |_, _| false)
                            .map_err(|e| err(p, "write", e))?;
                    }
                    Op::DropGen { gen } => {
                        snaps.remove(*gen).map_err(|e| err(p, "write", e))?;
                        lines
                            .retain_in((*gen, 0)..=(*gen, u64::MAX), |_, _| false)
                            .map_err(|e| err(p, "write", e))?;
                    }
                    Op::DropStream { token } => {
                        meta.remove(token.as_str())
                            .map_err(|e| err(p, "write", e))?;
                    }
                    Op::Put { table, key, value } => {
                        let k = (table.id(), key.as_str());
                        match value {
                            Some(v) => {
                                kv.insert(k, v.as_slice()).map_err(|e| err(p, "write", e))?;
                            }
                            None => {
                                kv.remove(k).map_err(|e| err(p, "write", e))?;
                            }
                        }
                    }
                }
            }
            let mut parts = w
                .open_table(PARTS)
                .map_err(|e| err(p, "history_parts", e))?;
            let mut next_part = {
                use redb::ReadableTable as _;
                let last = parts.last().map_err(|e| err(p, "read", e))?;
                last.map_or(0, |(k, _)| k.value().saturating_add(1))
            };
            for w in batch.hist_writes() {
                match w {
                    HistKv::Put {
                        token,
                        level,
                        index,
                        value,
                    } => {
                        let key = (token, level, index);
                        let old = if value.len() >= OUT_OF_LINE {
                            // Written where redb keeps it, not assembled first.
                            let mut slot = parts
                                .insert_reserve(next_part, value.len())
                                .map_err(|e| err(p, "write", e))?;
                            value.write_into(slot.as_mut());
                            drop(slot);
                            next_part = next_part.saturating_add(1);
                            hist.insert(key, part_ref(next_part - 1).as_slice())
                        } else {
                            hist.insert(key, &*value.to_cow())
                        };
                        let old = old.map_err(|e| err(p, "write", e))?;
                        if let Some(id) = old.and_then(|v| part_id(v.value())) {
                            parts.remove(id).map_err(|e| err(p, "write", e))?;
                        }
                    }
                    HistKv::Delete {
                        token,
                        level,
                        from,
                        to,
                    } => {
                        let mut gone = Vec::new();
                        hist.retain_in((token, level, from)..(token, level, to), |_, v| {
                            gone.extend(part_id(v));
                            false
                        })
                        .map_err(|e| err(p, "write", e))?;
                        for id in gone {
                            parts.remove(id).map_err(|e| err(p, "write", e))?;
                        }
                    }
                }
            }
            let mut record = Vec::new();
            for run in batch.line_runs(true) {
                run.encode(&mut record);
                lines
                    .insert((run.gen, run.last), record.as_slice())
                    .map_err(|e| err(p, "write", e))?;
            }
        }
        w.commit().map_err(|e| err(p, "commit", e))
    }
}

impl Backend for RedbBackend {
    fn load(&mut self, gen_of: &dyn Fn(&[u8]) -> Option<u64>) -> Result<Loaded, StorageError> {
        use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _};
        let p = &self.path.clone();
        let r = self.db()?.begin_read().map_err(|e| err(p, "begin", e))?;
        let meta = r.open_table(META).map_err(|e| err(p, "stream_meta", e))?;
        let lines = r.open_table(LINES).map_err(|e| err(p, "lines", e))?;
        let snaps = r.open_table(SNAPS).map_err(|e| err(p, "snapshots", e))?;
        let kv = r.open_table(KV).map_err(|e| err(p, "kv", e))?;
        let mut out = Loaded::default();
        for row in kv.iter().map_err(|e| err(p, "read", e))? {
            let (k, v) = row.map_err(|e| err(p, "read", e))?;
            let (id, key) = k.value();
            match Table::from_id(id) {
                Some(Table::Server) if key == "clean" => {
                    out.clean = v.value() == b"1";
                }
                Some(t) => out.entries.push((t, key.to_owned(), v.value().to_vec())),
                None => tracing::warn!(id, key, "store: an entry of an unknown table is ignored"),
            }
        }
        out.fresh = kv.is_empty().unwrap_or(false) && meta.is_empty().unwrap_or(false);
        if out.fresh {
            out.clean = true;
        }
        for row in meta.iter().map_err(|e| err(p, "read", e))? {
            let (k, v) = row.map_err(|e| err(p, "read", e))?;
            let record = v.value().to_vec();
            let mut s = LoadedStream {
                token: k.value().to_owned(),
                ..LoadedStream::default()
            };
            if let Some(gen) = gen_of(&record) {
                let mut after = 0;
                if let Some(snap) = snaps.get(gen).map_err(|e| err(p, "read", e))? {
                    let (seq, rec) = snap.value();
                    after = seq;
                    s.snapshot = Some((seq, rec.to_vec()));
                }
                for batch in lines
                    .range((gen, after.saturating_add(1))..=(gen, u64::MAX))
                    .map_err(|e| err(p, "read", e))?
                {
                    let (k, v) = batch.map_err(|e| err(p, "read", e))?;
                    if !s.push_stored(k.value().1, v.value(), after) {
                        break;
                    }
                }
            }
            s.meta = record;
            out.streams.push(s);
        }
        Ok(out)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StorageError> {
        self.write(batch)
    }
}

/// Reads a redb store's history records beside its commits (a read transaction per page).
#[derive(Debug, Clone)]
pub struct RedbHistory {
    db: Arc<Mutex<Option<Arc<redb::Database>>>>,
    path: PathBuf,
}

impl crate::history::Store for RedbHistory {
    fn read(
        &self,
        token: &str,
        level: u8,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        use redb::ReadableDatabase as _;
        if from >= to {
            return Ok(Vec::new());
        }
        let p = &self.path;
        let db = self
            .db
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StorageError("the store is reopening".into()))?;
        let r = db.begin_read().map_err(|e| err(p, "begin", e))?;
        let hist = r.open_table(HIST).map_err(|e| err(p, "history", e))?;
        let parts = r
            .open_table(PARTS)
            .map_err(|e| err(p, "history_parts", e))?;
        let mut out = Vec::new();
        for row in hist
            .range((token, level, from)..(token, level, to))
            .map_err(|e| err(p, "read", e))?
            .take(limit)
        {
            let (k, v) = row.map_err(|e| err(p, "read", e))?;
            let v = v.value();
            // A reference whose record is missing stays as it is: no record decodes from it,
            // so the reader keeps what came before it, as for any damaged record.
            let part = match part_id(v) {
                Some(id) => parts.get(id).map_err(|e| err(p, "read", e))?,
                None => None,
            };
            out.push((
                k.value().2,
                part.map_or_else(|| v.to_vec(), |g| g.value().to_vec()),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::point::{decode_points, encode_point};
    use crate::history::{Point, Store as _, Val, Write};
    use redb::{ReadableDatabase as _, ReadableTableMetadata as _};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("plotstream-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// `count` points from `n` on, encoded back to back.
    fn points(n: u64, count: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in n..n + count {
            let p = Point {
                seq: i + 1,
                t: 1_000 + i as i64,
                x: Val::Num(i as f64),
                y: Val::Num(0.5),
            };
            encode_point(&p, &mut out);
        }
        out
    }

    fn commit(b: &mut RedbBackend, writes: Vec<Write<'_>>) {
        let token: Arc<str> = "tok".into();
        let mut batch = Batch::default();
        for w in writes {
            batch.push_history(&token, w);
        }
        b.commit(&batch).unwrap();
    }

    fn parts_kept(b: &mut RedbBackend) -> u64 {
        let r = b.db().unwrap().begin_read().unwrap();
        r.open_table(PARTS).unwrap().len().unwrap()
    }

    fn level0(b: &RedbBackend) -> Vec<(u64, Vec<Point>)> {
        let rows = b.history_reader().read("tok", 0, 0, u64::MAX, 100).unwrap();
        rows.into_iter()
            .map(|(n, v)| (n, decode_points(&v).unwrap_or_default()))
            .collect()
    }

    /// A chunk's points (some 30 KiB) go to `PARTS` and read back as they were written; a
    /// short part stays in `HIST`; a record written again and a trim leave no part behind.
    #[test]
    fn a_long_record_is_kept_out_of_line_read_back_and_removed_with_its_key() {
        let d = dir("parts");
        let mut b = RedbBackend::open(&d).unwrap();
        commit(&mut b, vec![Write::points(0, 1000, &points(0, 1000))]);
        commit(&mut b, vec![Write::points(1000, 3, &points(1000, 3))]);
        assert_eq!(parts_kept(&mut b), 1, "only the long part is out of line");
        let read = level0(&b);
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].0, read[0].1.len()), (0, 1000));
        assert_eq!(read[0].1[999].seq, 1000);
        assert_eq!((read[1].0, read[1].1.len()), (1000, 3));
        // The same key again (a sealed chunk replacing its parts): the old part goes.
        commit(
            &mut b,
            vec![Write::Put {
                level: 0,
                index: 0,
                value: {
                    let mut v = vec![0xe8, 0x07];
                    v.extend_from_slice(&points(0, 1000));
                    v
                },
                replaces: 1003,
            }],
        );
        assert_eq!(parts_kept(&mut b), 1);
        assert_eq!(level0(&b).len(), 1);
        assert_eq!(level0(&b)[0].1.len(), 1000);
        // Retention drops the keys and, with them, their parts.
        commit(&mut b, vec![Write::Trim { before: 1024 }]);
        assert_eq!(parts_kept(&mut b), 0);
        assert!(level0(&b).is_empty());
        // An open tier block written again (they pass 1 KiB at 12 entries): its old record
        // goes; written short, it has none.
        let block = |len: usize| Write::Put {
            level: 1,
            index: 0,
            value: vec![0x8c; len],
            replaces: 0,
        };
        commit(&mut b, vec![block(2000)]);
        commit(&mut b, vec![block(1500)]);
        assert_eq!(parts_kept(&mut b), 1, "the block's first record went");
        let read = b.history_reader().read("tok", 1, 0, 1, 10).unwrap();
        assert_eq!(read, vec![(0, vec![0x8c; 1500])]);
        commit(&mut b, vec![block(100)]);
        assert_eq!(parts_kept(&mut b), 0, "a short record keeps none");
        commit(&mut b, vec![Write::points(1024, 1000, &points(1024, 1000))]);
        drop(b);
        let mut b = RedbBackend::open(&d).unwrap();
        assert_eq!(parts_kept(&mut b), 1);
        assert_eq!(level0(&b)[0].1[0].seq, 1025, "read back after a reopen");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A store written before `PARTS` existed holds its long records in `HIST` itself: they
    /// read as they were. A reference whose record is missing (a damaged file) reads as a
    /// record that does not decode, not as an error or a panic.
    #[test]
    fn a_record_kept_inline_reads_as_it_was_and_a_dangling_reference_as_damaged() {
        let d = dir("parts-old");
        let mut b = RedbBackend::open(&d).unwrap();
        let mut inline = vec![0xe8, 0x07];
        inline.extend_from_slice(&points(0, 1000));
        {
            let w = b.db().unwrap().begin_write().unwrap();
            {
                let mut hist = w.open_table(HIST).unwrap();
                hist.insert(("tok", 0, 0), inline.as_slice()).unwrap();
                hist.insert(("tok", 0, 1000), part_ref(7).as_slice())
                    .unwrap();
            }
            w.commit().unwrap();
        }
        let rows = b.history_reader().read("tok", 0, 0, u64::MAX, 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, inline);
        assert_eq!(rows[1].1, part_ref(7));
        assert!(decode_points(&rows[1].1).is_none());
        // Removing the inline record and the dangling reference removes no part.
        commit(&mut b, vec![Write::Trim { before: 2048 }]);
        assert!(level0(&b).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
