//! The Chart Studio file registry behind the REST subset (docs/protocol.md §7): grids, plots and
//! folders per user, with fids `<user>:<n>`.
//!
//! Hardening (security issue): `n` is random (12 digits), not sequential, so fids cannot be
//! enumerated; every change is checked against the file's owner; grid columns and figures are
//! kept as the JSON text that was sent (a parsed `serde_json::Value` of numbers costs ~17× the
//! bytes), and every file counts against its user's file count (L46) and bytes (L47) and the
//! server's REST bytes (L48).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::durable::{Journal, Op, Table};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value as Json;

/// A stored plot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plot {
    /// `figure.data` as sent, one JSON text per trace (`stream`, `xsrc`… included).
    pub traces: Vec<Box<RawValue>>,
    /// `figure.layout` as sent (`{}` when absent).
    pub layout: Box<RawValue>,
    /// Set when the plot was created with `share_key_enabled`.
    pub share_key: Option<String>,
    /// `world_readable` as sent (default true): listed, and viewable without a key.
    pub world_readable: bool,
}

impl Plot {
    /// The bytes this plot holds, for the quotas.
    pub fn n_bytes(&self) -> usize {
        self.traces.iter().map(|t| t.get().len()).sum::<usize>() + self.layout.get().len()
    }

    /// Each trace, parsed.
    pub fn traces(&self) -> impl Iterator<Item = Json> + '_ {
        self.traces
            .iter()
            .map(|t| serde_json::from_str(t.get()).unwrap_or(Json::Null))
    }

    /// The stream tokens its traces name (`stream.token`, valid L7 tokens only).
    pub fn tokens(&self) -> Vec<String> {
        self.traces().filter_map(|t| stream_token(&t)).collect()
    }
}

/// The valid `stream.token` of a trace.
pub fn stream_token(trace: &Json) -> Option<String> {
    let t = trace.pointer("/stream/token")?.as_str()?;
    plotstream_proto::Token::parse(t.as_bytes()).map(|_| t.to_owned())
}

/// Budgets of the file registry.
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    /// L46: files (grids, plots, folders) per user.
    pub files_per_user: usize,
    /// L47: stored JSON bytes per user.
    pub bytes_per_user: usize,
    /// L48: stored JSON bytes over all users.
    pub bytes_total: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            files_per_user: 1000,
            bytes_per_user: 64 << 20,
            bytes_total: 512 << 20,
        }
    }
}

/// Why a file operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileError {
    /// No such file (or not of the kind the route names).
    NotFound,
    /// The file belongs to another user.
    NotOwner,
    /// L46.
    TooManyFiles,
    /// L47.
    UserQuota,
    /// L48.
    ServerFull,
}

impl FileError {
    /// The HTTP status and the message of the JSON error body.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            FileError::NotFound => (404, "Not found"),
            FileError::NotOwner => (403, "You do not have permission to perform this action."),
            FileError::TooManyFiles => (403, "file limit reached for this user (L46)"),
            FileError::UserQuota => (403, "storage quota reached for this user (L47)"),
            FileError::ServerFull => (403, "server storage budget reached (L48)"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Kind {
    Grid {
        columns: Vec<Column>,
        world_readable: bool,
    },
    Plot(Plot),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Column {
    name: String,
    uid: String,
    data: Box<RawValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct File {
    /// Creation order within the user (fids are random, so not their order).
    created: u64,
    path: Option<String>,
    kind: Kind,
    n_bytes: usize,
}

#[derive(Debug, Default)]
struct UserFiles {
    n_created: u64,
    files: BTreeMap<u64, File>,
    folders: BTreeSet<String>,
    n_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<String, UserFiles>,
    n_bytes: usize,
}

/// Every user's files.
#[derive(Debug)]
pub struct Files {
    limits: FileLimits,
    inner: Mutex<Inner>,
    /// Where changes go to be durable (docs/storage.md).
    journal: Arc<Journal>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `<user>:<n>`.
    pub fid: String,
    /// `grid` or `plot`.
    pub filetype: &'static str,
}

/// One row of the plot listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotEntry {
    /// `<user>:<n>`.
    pub fid: String,
    /// The file's path, if it has one.
    pub path: Option<String>,
    /// Listed to everyone.
    pub world_readable: bool,
}

impl Default for Files {
    fn default() -> Files {
        Files::new(FileLimits::default())
    }
}

impl Files {
    /// An empty registry with `limits`.
    pub fn new(limits: FileLimits) -> Files {
        Files::with_journal(limits, Journal::memory())
    }

    /// An empty registry whose changes go to `journal`.
    pub fn with_journal(limits: FileLimits, journal: Arc<Journal>) -> Files {
        Files {
            limits,
            inner: Mutex::default(),
            journal,
        }
    }

    /// Journals file `n` of `user` (its current record, or its removal).
    fn store_file(&self, user: &str, n: u64, file: Option<&File>) {
        if self.journal.is_durable() {
            self.journal.push(Op::Put {
                table: Table::Files,
                key: format!("{user}\u{0}{n}"),
                value: file.map(|f| serde_json::to_vec(f).unwrap_or_default()),
            });
        }
    }

    /// Takes the files and folders a durable store held (start-up). Returns what it could
    /// not read, one sentence each (docs/storage.md D6). Quotas are recounted, not trusted.
    pub fn restore(&self, entries: Vec<(Table, String, Vec<u8>)>) -> Vec<String> {
        let mut dropped = Vec::new();
        let mut inner = self.lock();
        for (table, key, value) in entries {
            let Some((user, rest)) = key.split_once('\u{0}') else {
                dropped.push(format!("file entry {key:?}: unreadable key, dropped"));
                continue;
            };
            match table {
                Table::Folders => {
                    inner.n_bytes += rest.len();
                    let u = inner.users.entry(user.to_owned()).or_default();
                    if u.folders.insert(rest.to_owned()) {
                        u.n_bytes += rest.len();
                    }
                }
                Table::Files => {
                    let (Ok(n), Ok(file)) =
                        (rest.parse::<u64>(), serde_json::from_slice::<File>(&value))
                    else {
                        dropped.push(format!("file {user}:{rest}: unreadable record, dropped"));
                        continue;
                    };
                    inner.n_bytes += file.n_bytes;
                    let u = inner.users.entry(user.to_owned()).or_default();
                    u.n_bytes += file.n_bytes;
                    u.n_created = u.n_created.max(file.created);
                    u.files.insert(n, file);
                }
                _ => {}
            }
        }
        dropped
    }

    /// Replaces every file and folder with `entries` (on several nodes, when another node
    /// changed them). Returns what it could not read, as [`Files::restore`].
    pub fn replace_all(&self, entries: Vec<(Table, String, Vec<u8>)>) -> Vec<String> {
        *self.lock() = Inner::default();
        self.restore(entries)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a folder path; `Ok(false)` if it existed.
    pub fn make_folder(&self, user: &str, path: &str) -> Result<bool, FileError> {
        let mut inner = self.lock();
        let n_bytes = path.len();
        self.check_room(&inner, user, n_bytes, 0)?;
        let created = inner
            .users
            .entry(user.to_owned())
            .or_default()
            .folders
            .insert(path.to_owned());
        if created {
            inner.n_bytes += n_bytes;
            if let Some(u) = inner.users.get_mut(user) {
                u.n_bytes += n_bytes;
            }
            if self.journal.is_durable() {
                self.journal.push(Op::Put {
                    table: Table::Folders,
                    key: format!("{user}\u{0}{path}"),
                    value: Some(Vec::new()),
                });
            }
        }
        Ok(created)
    }

    /// The newest file at `path` owned by `user`.
    pub fn lookup(&self, user: &str, path: &str) -> Option<Found> {
        let inner = self.lock();
        let u = inner.users.get(user)?;
        u.files
            .iter()
            .filter(|(_, f)| f.path.as_deref() == Some(path))
            .max_by_key(|(_, f)| f.created)
            .map(|(n, f)| Found {
                fid: format!("{user}:{n}"),
                filetype: match f.kind {
                    Kind::Grid { .. } => "grid",
                    Kind::Plot(_) => "plot",
                },
            })
    }

    /// Deletes `user`'s grid `fid`. A plot is not a grid: `NotFound`.
    pub fn delete_grid(&self, user: &str, fid: &str) -> Result<(), FileError> {
        let (owner, n) = split_fid(fid).ok_or(FileError::NotFound)?;
        let mut inner = self.lock();
        let files = &mut inner.users.get_mut(owner).ok_or(FileError::NotFound)?.files;
        match files.get(&n) {
            Some(File {
                kind: Kind::Grid { .. },
                ..
            }) if owner == user => {}
            Some(File {
                kind: Kind::Grid { .. },
                ..
            }) => return Err(FileError::NotOwner),
            _ => return Err(FileError::NotFound),
        }
        let gone = files.remove(&n).map_or(0, |f| f.n_bytes);
        if let Some(u) = inner.users.get_mut(owner) {
            u.n_bytes -= gone;
        }
        inner.n_bytes -= gone;
        self.store_file(owner, n, None);
        Ok(())
    }

    /// Stores a grid; returns its fid and `[(name, uid)]` in column order.
    pub fn create_grid(
        &self,
        user: &str,
        path: Option<String>,
        world_readable: bool,
        cols: Vec<(String, Box<RawValue>)>,
    ) -> Result<(String, Vec<(String, String)>), FileError> {
        let mut columns: Vec<Column> = Vec::new();
        for (name, data) in cols {
            let uid = loop {
                let uid = crate::random::id(6);
                if !columns.iter().any(|c| c.uid == uid) {
                    break uid;
                }
            };
            columns.push(Column { name, uid, data });
        }
        let out = columns
            .iter()
            .map(|c| (c.name.clone(), c.uid.clone()))
            .collect();
        let n_bytes = columns
            .iter()
            .map(|c| c.name.len() + c.data.get().len())
            .sum();
        let fid = self.insert(
            user,
            path,
            Kind::Grid {
                columns,
                world_readable,
            },
            n_bytes,
        )?;
        Ok((fid, out))
    }

    /// The data of grid column `<fid>:<uid>`, if `user` may read it (it owns the grid, or the
    /// grid is world-readable): a figure cannot pull another user's private grid into a page.
    pub fn column(&self, user: &str, reference: &str) -> Option<Json> {
        let (fid, uid) = reference.rsplit_once(':')?;
        let (owner, n) = split_fid(fid)?;
        let inner = self.lock();
        match &inner.users.get(owner)?.files.get(&n)?.kind {
            Kind::Grid {
                columns,
                world_readable,
            } if *world_readable || owner == user => columns
                .iter()
                .find(|c| c.uid == uid)
                .and_then(|c| serde_json::from_str(c.data.get()).ok()),
            _ => None,
        }
    }

    /// Stores a new plot; returns its fid.
    pub fn create_plot(
        &self,
        user: &str,
        path: Option<String>,
        plot: Plot,
    ) -> Result<String, FileError> {
        let n_bytes = plot.n_bytes();
        self.insert(user, path, Kind::Plot(plot), n_bytes)
    }

    /// Replaces `user`'s plot `fid`; returns the old one.
    pub fn replace_plot(&self, user: &str, fid: &str, plot: Plot) -> Result<Plot, FileError> {
        let (owner, n) = split_fid(fid).ok_or(FileError::NotFound)?;
        let mut inner = self.lock();
        let old_bytes = match inner.users.get(owner).and_then(|u| u.files.get(&n)) {
            Some(File {
                kind: Kind::Plot(_),
                n_bytes,
                ..
            }) if owner == user => *n_bytes,
            Some(File {
                kind: Kind::Plot(_),
                ..
            }) => return Err(FileError::NotOwner),
            _ => return Err(FileError::NotFound),
        };
        let n_bytes = plot.n_bytes();
        self.check_room(&inner, user, n_bytes, old_bytes)?;
        inner.n_bytes = inner.n_bytes + n_bytes - old_bytes;
        let u = inner.users.get_mut(owner).ok_or(FileError::NotFound)?;
        u.n_bytes = u.n_bytes + n_bytes - old_bytes;
        let file = u.files.get_mut(&n).ok_or(FileError::NotFound)?;
        file.n_bytes = n_bytes;
        let old = match &mut file.kind {
            Kind::Plot(old) => std::mem::replace(old, plot),
            Kind::Grid { .. } => return Err(FileError::NotFound),
        };
        let file = file.clone();
        drop(inner);
        self.store_file(owner, n, Some(&file));
        Ok(old)
    }

    /// A stored plot.
    pub fn plot(&self, fid: &str) -> Option<Plot> {
        let (user, n) = split_fid(fid)?;
        let inner = self.lock();
        match &inner.users.get(user)?.files.get(&n)?.kind {
            Kind::Plot(p) => Some(p.clone()),
            Kind::Grid { .. } => None,
        }
    }

    /// True if a plot of `user` other than `except` names `token`.
    pub fn names_token(&self, user: &str, token: &str, except: &str) -> bool {
        let inner = self.lock();
        let Some(u) = inner.users.get(user) else {
            return false;
        };
        u.files.iter().any(|(n, f)| match &f.kind {
            Kind::Plot(p) => {
                format!("{user}:{n}") != except && p.tokens().iter().any(|t| t == token)
            }
            Kind::Grid { .. } => false,
        })
    }

    /// The owner of another user's plot that names `token`, if any: a figure may not bind a
    /// token that another user's figure streams to.
    pub fn token_claimed_by_other(&self, user: &str, token: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .users
            .iter()
            .filter(|(owner, _)| owner.as_str() != user)
            .find(|(_, u)| {
                u.files.values().any(|f| match &f.kind {
                    Kind::Plot(p) => p.tokens().iter().any(|t| t == token),
                    Kind::Grid { .. } => false,
                })
            })
            .map(|(owner, _)| owner.clone())
    }

    /// Plots for the index: at most `max` (world-readable ones only unless `all`), sorted by
    /// fid, and how many more there are.
    pub fn plots(&self, all: bool, max: usize) -> (Vec<PlotEntry>, usize) {
        let inner = self.lock();
        let mut out = Vec::new();
        for (user, u) in &inner.users {
            for (n, f) in &u.files {
                if let Kind::Plot(p) = &f.kind {
                    if all || p.world_readable {
                        out.push(PlotEntry {
                            fid: format!("{user}:{n}"),
                            path: f.path.clone(),
                            world_readable: p.world_readable,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.fid.cmp(&b.fid));
        let more = out.len().saturating_sub(max);
        out.truncate(max);
        (out, more)
    }

    fn check_room(
        &self,
        inner: &Inner,
        user: &str,
        n_bytes: usize,
        freed: usize,
    ) -> Result<(), FileError> {
        let u = inner.users.get(user);
        let (n_files, user_bytes) =
            u.map_or((0, 0), |u| (u.files.len() + u.folders.len(), u.n_bytes));
        if freed == 0 && n_files >= self.limits.files_per_user {
            return Err(FileError::TooManyFiles);
        }
        if user_bytes - freed + n_bytes > self.limits.bytes_per_user {
            return Err(FileError::UserQuota);
        }
        if inner.n_bytes - freed + n_bytes > self.limits.bytes_total {
            return Err(FileError::ServerFull);
        }
        Ok(())
    }

    fn insert(
        &self,
        user: &str,
        path: Option<String>,
        kind: Kind,
        n_bytes: usize,
    ) -> Result<String, FileError> {
        let mut inner = self.lock();
        let n_bytes = n_bytes + path.as_ref().map_or(0, String::len);
        self.check_room(&inner, user, n_bytes, 0)?;
        inner.n_bytes += n_bytes;
        let u = inner.users.entry(user.to_owned()).or_default();
        let n = loop {
            let n = random_fid_number();
            if !u.files.contains_key(&n) {
                break n;
            }
        };
        u.n_bytes += n_bytes;
        u.n_created += 1;
        let file = File {
            created: u.n_created,
            path,
            kind,
            n_bytes,
        };
        self.store_file(user, n, Some(&file));
        u.files.insert(n, file);
        Ok(format!("{user}:{n}"))
    }
}

/// `<user>:<n>` → (user, n).
pub fn split_fid(fid: &str) -> Option<(&str, u64)> {
    let (user, n) = fid.rsplit_once(':')?;
    if !crate::users::valid_username(user) || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((user, n.parse().ok()?))
}

/// A random 12-digit file number: fids cannot be enumerated (about 2^40 per user), and they
/// stay integers, which `py.iplot` and `tls.embed` parse out of the URL (docs/protocol.md §7.6).
fn random_fid_number() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    100_000_000_000 + u64::from_le_bytes(b) % 900_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn plot(token: &str) -> Plot {
        Plot {
            traces: vec![raw(&format!(r#"{{"stream":{{"token":"{token}"}}}}"#))],
            layout: raw("{}"),
            share_key: None,
            world_readable: true,
        }
    }

    #[test]
    fn fids_are_random_twelve_digit_numbers() {
        let files = Files::default();
        let a = files.create_plot("demo", None, plot("t1")).unwrap();
        let b = files.create_plot("demo", None, plot("t2")).unwrap();
        let (_, na) = split_fid(&a).unwrap();
        let (_, nb) = split_fid(&b).unwrap();
        assert!((100_000_000_000..1_000_000_000_000).contains(&na));
        assert_ne!(na + 1, nb, "not sequential");
    }

    #[test]
    fn only_the_owner_changes_a_file_and_grids_are_not_plots() {
        let files = Files::default();
        let p = files.create_plot("alice", None, plot("t1")).unwrap();
        let (g, _) = files
            .create_grid("alice", None, false, vec![("c".into(), raw("[1,2]"))])
            .unwrap();
        assert_eq!(files.delete_grid("alice", &p), Err(FileError::NotFound));
        assert_eq!(files.delete_grid("mallory", &g), Err(FileError::NotOwner));
        assert_eq!(
            files.replace_plot("mallory", &p, plot("t9")).unwrap_err(),
            FileError::NotOwner
        );
        assert!(files.plot(&p).is_some());
        assert_eq!(files.delete_grid("alice", &g), Ok(()));
    }

    #[test]
    fn private_grid_columns_are_readable_by_their_owner_only() {
        let files = Files::default();
        let (g, cols) = files
            .create_grid("alice", None, false, vec![("c".into(), raw("[1,2]"))])
            .unwrap();
        let r = format!("{g}:{}", cols[0].1);
        assert_eq!(files.column("alice", &r), Some(serde_json::json!([1, 2])));
        assert_eq!(files.column("mallory", &r), None);
    }

    #[test]
    fn quotas_hold_at_the_limit() {
        let files = Files::new(FileLimits {
            files_per_user: 2,
            bytes_per_user: 1000,
            bytes_total: 1500,
        });
        files.create_plot("a", None, plot("t1")).unwrap();
        files.create_plot("a", None, plot("t2")).unwrap();
        assert_eq!(
            files.create_plot("a", None, plot("t3")).unwrap_err(),
            FileError::TooManyFiles
        );
        let big = |n: usize| vec![("c".to_owned(), raw(&format!("[{}]", "1,".repeat(n) + "1")))];
        assert_eq!(
            files.create_grid("b", None, true, big(600)).unwrap_err(),
            FileError::UserQuota
        );
        files.create_grid("b", None, true, big(300)).unwrap();
        files.create_grid("c", None, true, big(300)).unwrap();
        assert_eq!(
            files.create_grid("d", None, true, big(300)).unwrap_err(),
            FileError::ServerFull
        );
    }

    #[test]
    fn listings_hide_private_plots_and_are_capped() {
        let files = Files::default();
        files.create_plot("a", None, plot("t1")).unwrap();
        let mut secret = plot("t2");
        secret.world_readable = false;
        files.create_plot("a", None, secret).unwrap();
        assert_eq!(files.plots(false, 10).0.len(), 1);
        assert_eq!(files.plots(true, 10).0.len(), 2);
        assert_eq!(files.plots(true, 1).1, 1);
    }
}
