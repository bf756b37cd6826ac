//! The Chart Studio file registry behind the REST subset (PROTOCOL.md §7): grids, plots and
//! folders per user, with fids `<user>:<n>` unique per user across grids and plots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use serde_json::{json, Value as Json};

/// A stored plot.
#[derive(Debug, Clone)]
pub struct Plot {
    /// The traces as sent (`stream`, `xsrc`… included).
    pub data: Vec<Json>,
    /// The layout as sent.
    pub layout: Json,
    /// Set when the plot was created with `share_key_enabled`.
    pub share_key: Option<String>,
}

#[derive(Debug, Clone)]
enum Kind {
    Grid(Vec<Column>),
    Plot(Plot),
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    uid: String,
    data: Json,
}

#[derive(Debug, Clone)]
struct File {
    path: Option<String>,
    kind: Kind,
}

#[derive(Debug, Default)]
struct UserFiles {
    next: u64,
    files: BTreeMap<u64, File>,
    folders: BTreeSet<String>,
}

/// Every user's files.
#[derive(Debug, Default)]
pub struct Files {
    users: Mutex<HashMap<String, UserFiles>>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `<user>:<n>`.
    pub fid: String,
    /// `grid` or `plot`.
    pub filetype: &'static str,
}

impl Files {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserFiles>> {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a folder path; false if it existed.
    pub fn make_folder(&self, user: &str, path: &str) -> bool {
        self.lock()
            .entry(user.to_owned())
            .or_default()
            .folders
            .insert(path.to_owned())
    }

    /// The file at `path` owned by `user`.
    pub fn lookup(&self, user: &str, path: &str) -> Option<Found> {
        let users = self.lock();
        let u = users.get(user)?;
        u.files
            .iter()
            .rev()
            .find(|(_, f)| f.path.as_deref() == Some(path))
            .map(|(n, f)| Found {
                fid: format!("{user}:{n}"),
                filetype: match f.kind {
                    Kind::Grid(_) => "grid",
                    Kind::Plot(_) => "plot",
                },
            })
    }

    /// Deletes a grid; false if there was none.
    pub fn delete(&self, fid: &str) -> bool {
        let Some((user, n)) = split_fid(fid) else {
            return false;
        };
        self.lock()
            .get_mut(user)
            .and_then(|u| u.files.remove(&n))
            .is_some()
    }

    /// Stores a grid; returns its fid and `[(name, uid)]` in column order.
    pub fn create_grid(
        &self,
        user: &str,
        path: Option<String>,
        cols: &serde_json::Map<String, Json>,
    ) -> (String, Vec<(String, String)>) {
        let mut ordered: Vec<(&String, &Json)> = cols.iter().collect();
        ordered.sort_by_key(|(_, c)| c.get("order").and_then(Json::as_u64).unwrap_or(u64::MAX));
        let mut columns: Vec<Column> = Vec::new();
        for (name, col) in ordered {
            let uid = loop {
                let uid = random_id(6);
                if !columns.iter().any(|c| c.uid == uid) {
                    break uid;
                }
            };
            columns.push(Column {
                name: name.clone(),
                uid,
                data: col.get("data").cloned().unwrap_or(json!([])),
            });
        }
        let out = columns
            .iter()
            .map(|c| (c.name.clone(), c.uid.clone()))
            .collect();
        let fid = self.insert(user, path, Kind::Grid(columns));
        (fid, out)
    }

    /// The data of grid column `<fid>:<uid>`.
    pub fn column(&self, reference: &str) -> Option<Json> {
        let (fid, uid) = reference.rsplit_once(':')?;
        let (user, n) = split_fid(fid)?;
        let users = self.lock();
        match &users.get(user)?.files.get(&n)?.kind {
            Kind::Grid(cols) => cols.iter().find(|c| c.uid == uid).map(|c| c.data.clone()),
            Kind::Plot(_) => None,
        }
    }

    /// Stores a new plot; returns its fid.
    pub fn create_plot(&self, user: &str, path: Option<String>, plot: Plot) -> String {
        self.insert(user, path, Kind::Plot(plot))
    }

    /// Replaces a plot; returns the old one, or `None` if `fid` is not a plot.
    pub fn replace_plot(&self, fid: &str, plot: Plot) -> Option<Plot> {
        let (user, n) = split_fid(fid)?;
        let mut users = self.lock();
        let file = users.get_mut(user)?.files.get_mut(&n)?;
        match &mut file.kind {
            Kind::Plot(old) => Some(std::mem::replace(old, plot)),
            Kind::Grid(_) => None,
        }
    }

    /// A stored plot.
    pub fn plot(&self, fid: &str) -> Option<Plot> {
        let (user, n) = split_fid(fid)?;
        let users = self.lock();
        match &users.get(user)?.files.get(&n)?.kind {
            Kind::Plot(p) => Some(p.clone()),
            Kind::Grid(_) => None,
        }
    }

    /// Every plot as `(fid, path)`, for the index page.
    pub fn plots(&self) -> Vec<(String, Option<String>)> {
        let users = self.lock();
        let mut out = Vec::new();
        for (user, u) in users.iter() {
            for (n, f) in &u.files {
                if matches!(f.kind, Kind::Plot(_)) {
                    out.push((format!("{user}:{n}"), f.path.clone()));
                }
            }
        }
        out.sort();
        out
    }

    fn insert(&self, user: &str, path: Option<String>, kind: Kind) -> String {
        let mut users = self.lock();
        let u = users.entry(user.to_owned()).or_default();
        u.next += 1;
        let n = u.next;
        u.files.insert(n, File { path, kind });
        format!("{user}:{n}")
    }
}

/// `<user>:<n>` → (user, n).
pub fn split_fid(fid: &str) -> Option<(&str, u64)> {
    let (user, n) = fid.rsplit_once(':')?;
    Some((user, n.parse().ok()?))
}

/// `n` characters of `[a-z0-9]` from the OS random source.
pub fn random_id(n: usize) -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 16];
        let _ = getrandom::fill(&mut b);
        for byte in b {
            // 252 = 7 × 36: reject the tail so every character is equally likely.
            if byte < 252 && out.len() < n {
                out.push(char::from(ALPHABET[usize::from(byte % 36)]));
            }
        }
    }
    out
}
