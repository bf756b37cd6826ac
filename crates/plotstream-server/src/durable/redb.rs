//! The embedded store: one redb file (docs/storage.md "Choosing the embedded store").

use std::path::{Path, PathBuf};

use super::ops::{Backend, Batch, Loaded, LoadedStream, Op, StorageError, Table};

/// The on-disk store: one redb file, `plotstream.redb`, in the data directory.
#[derive(Debug)]
pub struct RedbBackend {
    /// `None` after a failed commit: redb refuses every operation after an I/O error until
    /// the file is opened again, so the next commit reopens it (and redb repairs it).
    db: Option<redb::Database>,
    path: PathBuf,
}

const META: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("stream_meta");
const LINES: redb::TableDefinition<'_, (u64, u64), &[u8]> = redb::TableDefinition::new("lines");
const SNAPS: redb::TableDefinition<'_, u64, (u64, &[u8])> = redb::TableDefinition::new("snapshots");
const KV: redb::TableDefinition<'_, (u8, &str), &[u8]> = redb::TableDefinition::new("kv");

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
        let db = Self::open_file(&path)?;
        Ok(RedbBackend { db: Some(db), path })
    }

    fn open_file(path: &Path) -> Result<redb::Database, StorageError> {
        let db = redb::Database::builder()
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
        }
        w.commit().map_err(|e| err(path, "commit", e))?;
        Ok(db)
    }

    /// Rewrites the file without its free pages (redb's `compact`): the file shrinks to about
    /// what it holds. Returns whether it did anything.
    pub fn compact(&mut self) -> Result<bool, StorageError> {
        let p = self.path.clone();
        self.db()?;
        let db = self
            .db
            .as_mut()
            .ok_or_else(|| StorageError("the store is closed".into()))?;
        db.compact().map_err(|e| err(&p, "compact", e))
    }

    fn db(&mut self) -> Result<&redb::Database, StorageError> {
        if self.db.is_none() {
            self.db = Some(Self::open_file(&self.path)?);
            tracing::info!(path = %self.path.display(), "store reopened after a failed commit");
        }
        self.db
            .as_ref()
            .ok_or_else(|| StorageError("the store is closed".into()))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StorageError> {
        let result = self.try_write(batch);
        if result.is_err() {
            // Dropped now, reopened by the next attempt.
            self.db = None;
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
            for op in &batch.ops {
                match op {
                    Op::Meta { token, record } => {
                        meta.insert(token.as_str(), record.as_slice())
                            .map_err(|e| err(p, "write", e))?;
                    }
                    Op::Line { .. } => {}
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
