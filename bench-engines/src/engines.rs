//! The three candidates (and `Null`) behind [`Engine`], each as the server would use it: three
//! tables, one durable transaction per commit, with the engine's own defaults otherwise.

use std::{collections::HashMap, path::Path};

use crate::{line_key, Batch, Engine, Result, Scan};

/// Stores nothing: the harness's own cost.
#[derive(Debug)]
pub struct Null;

impl Engine for Null {
    fn commit(&mut self, _batch: &Batch) -> Result<()> {
        Ok(())
    }
    fn scan(&mut self) -> Result<Scan> {
        Ok(Scan::default())
    }
    fn compact(&mut self) -> Result<bool> {
        Ok(false)
    }
    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// redb: one file, a copy-on-write B-tree; Durability::Immediate (the default) fsyncs per commit.
// Two versions: 4.6 (the one main pins) and 5.0 (the latest); their APIs differ only in
// `compact` and `retain_in`'s type parameters, here.

macro_rules! redb_engine {
    ($engine:ident, $redb:ident, quick_repair: $quick:expr, [$($range_key:ty)?], $compact:expr) => {
        pub struct $engine {
            db: $redb::Database,
        }

        impl $engine {
            const LINES: $redb::TableDefinition<'static, &'static [u8; 16], &'static [u8]> =
                $redb::TableDefinition::new("lines");
            const META: $redb::TableDefinition<'static, &'static str, &'static [u8]> =
                $redb::TableDefinition::new("meta");
            const SNAPS: $redb::TableDefinition<'static, u64, &'static [u8]> =
                $redb::TableDefinition::new("snaps");

            pub fn open(dir: &Path) -> Result<Self> {
                let db = $redb::Database::create(dir.join("plotstream.redb"))?;
                let tx = db.begin_write()?;
                tx.open_table(Self::LINES)?;
                tx.open_table(Self::META)?;
                tx.open_table(Self::SNAPS)?;
                tx.commit()?;
                Ok($engine { db })
            }
        }

        impl Engine for $engine {
            fn commit(&mut self, batch: &Batch) -> Result<()> {
                let mut tx = self.db.begin_write()?;
                tx.set_durability($redb::Durability::Immediate)?;
                tx.set_quick_repair($quick);
                {
                    let mut lines = tx.open_table(Self::LINES)?;
                    for (key, value) in &batch.lines {
                        lines.insert(key, value.as_slice())?;
                    }
                    for trim in &batch.trims {
                        let (from, below) = (
                            line_key(trim.stream, trim.from),
                            line_key(trim.stream, trim.below),
                        );
                        lines.retain_in$(::<$range_key, _>)?(&from..&below, |_, _| false)?;
                    }
                }
                if !batch.meta.is_empty() {
                    let mut meta = tx.open_table(Self::META)?;
                    for (key, value) in &batch.meta {
                        meta.insert(key.as_str(), value.as_slice())?;
                    }
                }
                if !batch.snaps.is_empty() {
                    let mut snaps = tx.open_table(Self::SNAPS)?;
                    for (key, value) in &batch.snaps {
                        snaps.insert(key, value.as_slice())?;
                    }
                }
                tx.commit()?;
                Ok(())
            }

            fn scan(&mut self) -> Result<Scan> {
                use $redb::{ReadableDatabase as _, ReadableTable as _};
                let tx = self.db.begin_read()?;
                let mut scan = Scan::default();
                for entry in tx.open_table(Self::LINES)?.iter()? {
                    let (k, v) = entry?;
                    scan.add(k.value(), v.value());
                    scan.lines += 1;
                }
                for entry in tx.open_table(Self::META)?.iter()? {
                    let (k, v) = entry?;
                    scan.add(k.value().as_bytes(), v.value());
                    scan.meta += 1;
                }
                for entry in tx.open_table(Self::SNAPS)?.iter()? {
                    let (k, v) = entry?;
                    scan.add(&k.value().to_be_bytes(), v.value());
                    scan.snaps += 1;
                }
                Ok(scan)
            }

            fn compact(&mut self) -> Result<bool> {
                // Each call compacts some; repeat until it says nothing more is possible.
                let compact = $compact;
                for _ in 0..100 {
                    if !compact(&mut self.db)? {
                        break;
                    }
                }
                Ok(true)
            }

            fn close(self: Box<Self>) -> Result<()> {
                self.db.close()?;
                Ok(())
            }
        }
    };
}

redb_engine!(Redb4, redb4, quick_repair: false, [&[u8; 16]], |db: &mut redb4::Database| db
    .compact());
// Quick repair: each commit also saves the allocator state and uses two-phase commit (two fsyncs),
// so that opening after a crash need not walk and verify the whole file.
redb_engine!(Redb4Quick, redb4, quick_repair: true, [&[u8; 16]], |db: &mut redb4::Database| db
    .compact());
redb_engine!(Redb, redb, quick_repair: false, [], |db: &mut redb::Database| db
    .compact(redb::CompactionMode::Balanced));

// ---------------------------------------------------------------------------------------------
// fjall: a directory, an LSM tree per keyspace and one shared journal; a write batch with
// PersistMode::SyncData fdatasyncs the journal, as redb and SQLite fdatasync their files.

pub struct Fjall {
    db: fjall::Database,
    lines: fjall::Keyspace,
    meta: fjall::Keyspace,
    snaps: fjall::Keyspace,
}

impl Fjall {
    pub fn open(dir: &Path) -> Result<Self> {
        use fjall::KeyspaceCreateOptions;
        let db = fjall::Database::builder(dir).open()?;
        let lines = db.keyspace("lines", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let snaps = db.keyspace("snaps", KeyspaceCreateOptions::default)?;
        Ok(Fjall {
            db,
            lines,
            meta,
            snaps,
        })
    }
}

impl Engine for Fjall {
    fn commit(&mut self, batch: &Batch) -> Result<()> {
        let mut wb = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        // fjall has no range delete: the keys to delete are found by a range scan of what is
        // committed, and each gets a tombstone. A line of this batch that the trim covers is not
        // written at all (the scan cannot see it), which is what the other engines end with.
        let mut below: HashMap<u64, u64> = HashMap::new();
        for trim in &batch.trims {
            below.insert(trim.stream, trim.below);
            let range = line_key(trim.stream, trim.from)..line_key(trim.stream, trim.below);
            for guard in self.lines.range(range) {
                wb.remove(&self.lines, guard.key()?);
            }
        }
        for (key, value) in &batch.lines {
            let stream = u64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
            let seq = u64::from_be_bytes(key[8..].try_into().expect("8 bytes"));
            if below.get(&stream).is_some_and(|&b| seq < b) {
                continue;
            }
            wb.insert(&self.lines, key.as_slice(), value.as_slice());
        }
        for (key, value) in &batch.meta {
            wb.insert(&self.meta, key.as_bytes(), value.as_slice());
        }
        for (key, value) in &batch.snaps {
            wb.insert(&self.snaps, key.to_be_bytes().as_slice(), value.as_slice());
        }
        if wb.is_empty() {
            // An empty batch is not written, so it would not be synced either.
            self.db.persist(fjall::PersistMode::SyncData)?;
            return Ok(());
        }
        wb.commit()?;
        Ok(())
    }

    fn scan(&mut self) -> Result<Scan> {
        let mut scan = Scan::default();
        for (ks, count) in [
            (&self.lines, &mut scan.lines),
            (&self.meta, &mut scan.meta),
            (&self.snaps, &mut scan.snaps),
        ] {
            let mut n = 0;
            let mut part = Scan::default();
            for guard in ks.iter() {
                let (k, v) = guard.into_inner()?;
                part.add(&k, &v);
                n += 1;
            }
            *count = n;
            scan.bytes += part.bytes;
            scan.sum = scan.sum.wrapping_add(part.sum);
        }
        Ok(scan)
    }

    fn compact(&mut self) -> Result<bool> {
        // Both are `#[doc(hidden)]` in fjall 3.1: flush the memtable, then a major compaction.
        for ks in [&self.lines, &self.meta, &self.snaps] {
            ks.rotate_memtable_and_wait()?;
            ks.major_compact()?;
        }
        Ok(true)
    }

    fn close(self: Box<Self>) -> Result<()> {
        // Dropping the database persists the journal with SyncAll.
        self.db.persist(fjall::PersistMode::SyncAll)?;
        drop(self);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite (bundled, through rusqlite): one file plus its WAL; journal_mode=WAL, synchronous=FULL.

pub struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    pub fn open(dir: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open(dir.join("plotstream.sqlite"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if mode != "wal" {
            return Err(format!("journal_mode is {mode}, not wal").into());
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS lines(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS snaps(k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
        )?;
        Ok(Sqlite { conn })
    }
}

impl Engine for Sqlite {
    fn commit(&mut self, batch: &Batch) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT OR REPLACE INTO lines(k, v) VALUES (?1, ?2)")?;
            for (key, value) in &batch.lines {
                insert.execute((key.as_slice(), value.as_slice()))?;
            }
            let mut delete = tx.prepare_cached("DELETE FROM lines WHERE k >= ?1 AND k < ?2")?;
            for trim in &batch.trims {
                let from = line_key(trim.stream, trim.from);
                let below = line_key(trim.stream, trim.below);
                delete.execute((from.as_slice(), below.as_slice()))?;
            }
            let mut meta =
                tx.prepare_cached("INSERT OR REPLACE INTO meta(k, v) VALUES (?1, ?2)")?;
            for (key, value) in &batch.meta {
                meta.execute((key.as_str(), value.as_slice()))?;
            }
            let mut snaps =
                tx.prepare_cached("INSERT OR REPLACE INTO snaps(k, v) VALUES (?1, ?2)")?;
            for (key, value) in &batch.snaps {
                snaps.execute((*key as i64, value.as_slice()))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn scan(&mut self) -> Result<Scan> {
        let mut scan = Scan::default();
        let mut stmt = self.conn.prepare("SELECT k, v FROM lines")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            scan.add(row.get_ref(0)?.as_blob()?, row.get_ref(1)?.as_blob()?);
            scan.lines += 1;
        }
        let mut stmt = self.conn.prepare("SELECT k, v FROM meta")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            scan.add(row.get_ref(0)?.as_bytes()?, row.get_ref(1)?.as_blob()?);
            scan.meta += 1;
        }
        let mut stmt = self.conn.prepare("SELECT k, v FROM snaps")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let key = row.get_ref(0)?.as_i64()?.to_be_bytes();
            scan.add(&key, row.get_ref(1)?.as_blob()?);
            scan.snaps += 1;
        }
        Ok(scan)
    }

    fn compact(&mut self) -> Result<bool> {
        self.conn.execute_batch("VACUUM")?;
        let _: (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?;
        Ok(true)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.conn.close().map_err(|(_, err)| err)?;
        Ok(())
    }
}
