//! Accounts the Chart Studio way: a user name, an API key and the stream tokens the user owns.
//!
//! They live in one users file (`plotstream user add NAME --users FILE` writes it,
//! `plotstream serve --users FILE` reads it and turns on keys mode). One JSON object per line:
//!
//! ```text
//! {"username":"demo","key_salt":"q3…","key_sha256":"9f…","stream_ids":["abcdef1234","zyxwvu9876"]}
//! ```
//!
//! Only a salted SHA-256 of each key is stored. Keys that plotstream makes are 24 characters
//! of `[A-Za-z0-9]` from the OS CSPRNG (142 bits), far beyond brute force, so a fast hash is
//! the right tool (as for API tokens generally); a key chosen by the user (`--api-key`, to keep
//! an existing `~/.plotly/.credentials`) must be at least [`MIN_KEY_LEN`] characters.
//!
//! Writers (the CLI, and the server when it issues tokens) take an exclusive lock on
//! `FILE.lock`, read, change, write `FILE.tmp`, fsync and rename, so a reader never sees a
//! half-written file and two writers never lose each other's change. The server re-reads the
//! file when its modification time or size changes: before every authentication (so a rotated
//! key stops working at once) and every [`REFRESH`] in the background (for ingest).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::text::hex;

/// One user as stored in the users file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// `[A-Za-z0-9_.-]{1,64}` ([`valid_username`]).
    pub username: String,
    /// Random salt, hex.
    pub key_salt: String,
    /// `sha256(salt ‖ api_key)`, lowercase hex.
    pub key_sha256: String,
    /// The write tokens this user owns: only these may stream, only the owner's figures may
    /// bind them.
    #[serde(default)]
    pub stream_ids: Vec<String>,
}

impl UserRecord {
    /// A record for `username` with `api_key` (hashed here) and `stream_ids`.
    pub fn new(username: &str, api_key: &str, stream_ids: Vec<String>) -> UserRecord {
        let key_salt = random_alnum(16);
        let key_sha256 = key_hash(&key_salt, api_key);
        UserRecord {
            username: username.to_owned(),
            key_salt,
            key_sha256,
            stream_ids,
        }
    }

    /// True if `api_key` is this user's key (compared in constant time).
    pub fn verify(&self, api_key: &str) -> bool {
        let got = key_hash(&self.key_salt, api_key);
        let (a, b) = (got.as_bytes(), self.key_sha256.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Replaces the key.
    pub fn set_key(&mut self, api_key: &str) {
        self.key_salt = random_alnum(16);
        self.key_sha256 = key_hash(&self.key_salt, api_key);
    }
}

/// Why the users file could not be read or changed.
#[derive(Debug)]
pub enum UsersError {
    /// Reading, writing or locking failed.
    Io(PathBuf, std::io::Error),
    /// A line is not a valid user record.
    Line(PathBuf, usize, String),
    /// A change was refused (unknown user, name taken, bad name…).
    Refused(String),
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::Io(p, e) => write!(f, "users file {}: {e}", p.display()),
            UsersError::Line(p, n, why) => write!(f, "users file {} line {n}: {why}", p.display()),
            UsersError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UsersError {}

/// Reads every record of the users file; a missing file is an empty list.
pub fn load(path: &Path) -> Result<Vec<UserRecord>, UsersError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(UsersError::Io(path.to_owned(), e)),
    };
    parse(&text).map_err(|(n, why)| UsersError::Line(path.to_owned(), n, why))
}

/// Parses users-file text: one JSON record per line; blank lines and `#` comments skipped.
/// Names must be valid and unique, tokens valid (L7), listed once and owned by one user only.
pub fn parse(text: &str) -> Result<Vec<UserRecord>, (usize, String)> {
    let mut users: Vec<UserRecord> = Vec::new();
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rec: UserRecord = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
        if !valid_username(&rec.username) {
            return Err((i + 1, "user name must match [A-Za-z0-9_.-]{1,64}".into()));
        }
        if users.iter().any(|u| u.username == rec.username) {
            return Err((i + 1, format!("user {} appears twice", rec.username)));
        }
        if rec.stream_ids.len() > MAX_TOKENS_PER_USER {
            return Err((
                i + 1,
                format!("more than {MAX_TOKENS_PER_USER} stream ids (L49)"),
            ));
        }
        if let Some(t) = rec
            .stream_ids
            .iter()
            .find(|t| plotstream_proto::Token::parse(t.as_bytes()).is_none())
        {
            return Err((
                i + 1,
                format!("stream id {t:?} is not [A-Za-z0-9_-]{{1,64}}"),
            ));
        }
        let mut listed = HashSet::new();
        if let Some(t) = rec.stream_ids.iter().find(|t| !listed.insert(t.as_str())) {
            return Err((i + 1, format!("stream id {t:?} appears twice")));
        }
        users.push(rec);
    }
    for u in &users {
        for t in &u.stream_ids {
            if let Some(other) = owners.insert(t, &u.username) {
                if other != u.username {
                    return Err((
                        0,
                        format!("stream id {t} belongs to {other} and {}", u.username),
                    ));
                }
            }
        }
    }
    Ok(users)
}

/// Changes the users file under its lock: reads it, applies `change`, writes it back
/// atomically (tmp file, fsync, rename). Returns what `change` returned.
pub fn modify<T>(
    path: &Path,
    change: impl FnOnce(&mut Vec<UserRecord>) -> Result<T, UsersError>,
) -> Result<T, UsersError> {
    let io = |e| UsersError::Io(path.to_owned(), e);
    let lock_path = with_suffix(path, ".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    lock.lock().map_err(io)?;
    let mut users = load(path)?;
    let out = change(&mut users)?;
    let text = render(&users);
    let tmp = with_suffix(path, ".tmp");
    {
        let mut opts = OpenOptions::new();
        opts.create(true).truncate(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    drop(lock);
    Ok(out)
}

/// The users file as the server sees it: re-read when it changes, looked up without I/O.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    current: RwLock<Arc<Snapshot>>,
    /// (modified, len) of the file last read.
    seen: Mutex<Option<(SystemTime, u64)>>,
}

/// One reading of the users file.
#[derive(Debug, Default)]
pub struct Snapshot {
    users: HashMap<String, UserRecord>,
    owner_of: HashMap<String, String>,
}

impl Snapshot {
    fn new(records: Vec<UserRecord>) -> Snapshot {
        let mut owner_of = HashMap::new();
        for u in &records {
            for t in &u.stream_ids {
                owner_of.insert(t.clone(), u.username.clone());
            }
        }
        Snapshot {
            users: records
                .into_iter()
                .map(|u| (u.username.clone(), u))
                .collect(),
            owner_of,
        }
    }

    /// The user who owns write token `token`.
    pub fn owner_of(&self, token: &str) -> Option<&str> {
        self.owner_of.get(token).map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True without users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl Users {
    /// Reads `path` (it must exist and parse: a server that silently started without its
    /// users would be open).
    pub fn open(path: &Path) -> Result<Users, UsersError> {
        let records = load(path)?;
        if !path.exists() {
            return Err(UsersError::Refused(format!(
                "users file {} does not exist; create it with `plotstream user add NAME --users {}`",
                path.display(),
                path.display()
            )));
        }
        let users = Users {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(Snapshot::new(records))),
            seen: Mutex::new(file_stamp(path)),
        };
        Ok(users)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current snapshot (no I/O).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file if its stamp changed. A file that became unreadable or invalid keeps
    /// the last good snapshot and logs why (never falls open).
    pub fn refresh(&self) {
        let stamp = file_stamp(&self.path);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == stamp {
            return;
        }
        match load(&self.path) {
            Ok(records) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Arc::new(Snapshot::new(records));
                *seen = stamp;
            }
            Err(e) => {
                tracing::warn!(error = %e, "users file unreadable; keeping the last good one")
            }
        }
    }

    /// Checks `username:api_key` against a fresh reading of the file: the user, or `None` for
    /// an unknown user or a wrong key (one answer for both, so names cannot be probed).
    pub fn authenticate(&self, username: &str, api_key: &str) -> Option<String> {
        self.refresh();
        let snap = self.snapshot();
        snap.users
            .get(username)
            .filter(|u| u.verify(api_key))
            .map(|u| u.username.clone())
    }

    /// Gives `username` `count` new tokens (L8 form, unique among every user's tokens),
    /// written to the file before they are returned.
    pub fn issue_tokens(&self, username: &str, count: usize) -> Result<Vec<String>, UsersError> {
        let out = modify(&self.path, |users| {
            let taken: std::collections::HashSet<String> = users
                .iter()
                .flat_map(|u| u.stream_ids.iter().cloned())
                .collect();
            let user = users
                .iter_mut()
                .find(|u| u.username == username)
                .ok_or_else(|| UsersError::Refused(format!("no user {username}")))?;
            if user.stream_ids.len() + count > MAX_TOKENS_PER_USER {
                return Err(UsersError::Refused(format!(
                    "a user owns at most {MAX_TOKENS_PER_USER} stream ids (L49)"
                )));
            }
            let mut fresh = Vec::with_capacity(count);
            while fresh.len() < count {
                let t = crate::random::new_token();
                if !taken.contains(&t) && !fresh.contains(&t) {
                    fresh.push(t);
                }
            }
            user.stream_ids.extend(fresh.iter().cloned());
            Ok(fresh)
        })?;
        self.refresh();
        Ok(out)
    }
}

/// The users file's text for `users`, one JSON record per line, as [`modify`] writes it.
pub(crate) fn render(users: &[UserRecord]) -> String {
    let mut text = String::new();
    for u in users {
        // Serialising a struct of strings cannot fail.
        text.push_str(&serde_json::to_string(u).unwrap_or_default());
        text.push('\n');
    }
    text
}

/// `[A-Za-z0-9_.-]{1,64}`: the one rule for user names on every route (they reach URLs,
/// fids and pages).
pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A new API key: 24 characters of `[A-Za-z0-9]` from the OS CSPRNG.
pub fn new_api_key() -> String {
    random_alnum(24)
}

fn random_alnum(n: usize) -> String {
    crate::random::chars(crate::random::ALNUM, n)
}

fn key_hash(salt: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(key.as_bytes());
    hex(&h.finalize())
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// L49: stream ids one user may own.
pub const MAX_TOKENS_PER_USER: usize = 1000;

/// The shortest API key a user may choose (`plotstream user add --api-key`).
pub const MIN_KEY_LEN: usize = 10;

/// How often the server re-reads a changed users file in the background.
pub const REFRESH: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_and_rotate() {
        let mut u = UserRecord::new("demo", "demokey123", vec!["abcdef1234".into()]);
        assert!(u.verify("demokey123"));
        assert!(!u.verify("demokey124"));
        assert!(!u.verify(""));
        assert!(!u.key_sha256.contains("demokey"));
        u.set_key("other-key-1");
        assert!(!u.verify("demokey123"));
        assert!(u.verify("other-key-1"));
    }

    #[test]
    fn parse_refuses_bad_names_duplicates_and_shared_tokens() {
        let rec = |name: &str, t: &str| {
            serde_json::to_string(&UserRecord::new(name, "0123456789", vec![t.into()])).unwrap()
        };
        assert_eq!(
            parse(&format!("# users\n\n{}\n", rec("a", "t1")))
                .unwrap()
                .len(),
            1
        );
        assert!(parse(&rec("<img>", "t1")).is_err());
        assert!(parse(&format!("{}\n{}", rec("a", "t1"), rec("a", "t2"))).is_err());
        assert!(parse(&format!("{}\n{}", rec("a", "t1"), rec("b", "t1"))).is_err());
        assert!(parse(&rec("a", "../etc")).is_err());
        assert!(parse("{not json").is_err());
    }

    /// Found by the `users` fuzz property: one record listing a stream id twice was accepted
    /// (the id counted twice toward L49 and showed twice in listings).
    #[test]
    fn fuzz_users_stream_id_twice_in_one_record_is_refused() {
        let twice = UserRecord::new("a", "0123456789", vec!["t1".into(), "t1".into()]);
        let text = format!("# users\n{}\n", serde_json::to_string(&twice).unwrap());
        assert_eq!(
            parse(&text),
            Err((2, "stream id \"t1\" appears twice".to_owned()))
        );
    }

    #[test]
    fn usernames() {
        for ok in ["demo", "a.b-c_d", "A9", &"x".repeat(64)] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in ["", "a b", "<img", "a/b", "é", &"x".repeat(65), "a:b"] {
            assert!(!valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn modify_writes_atomically_and_issue_tokens_persists() {
        let dir = std::env::temp_dir().join(format!("plotstream-users-{}", random_alnum(8)));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.jsonl");
        modify(&path, |u| {
            u.push(UserRecord::new("demo", "demokey123", Vec::new()));
            Ok(())
        })
        .unwrap();
        let users = Users::open(&path).unwrap();
        assert_eq!(
            users.authenticate("demo", "demokey123"),
            Some("demo".into())
        );
        assert_eq!(users.authenticate("demo", "nope"), None);
        assert_eq!(users.authenticate("nobody", "demokey123"), None);
        let t = users.issue_tokens("demo", 3).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(users.snapshot().owner_of(&t[0]), Some("demo"));
        assert_eq!(load(&path).unwrap()[0].stream_ids, t);
        fs::remove_dir_all(&dir).unwrap();
    }
}
