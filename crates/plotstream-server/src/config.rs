//! Everything `plotstream serve` can be told ([`Config`]), where it keeps its state
//! ([`Storage`]) and where its pages' plotly.js comes from ([`PlotlyJs`]).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use plotstream_proto::Limits;

use crate::store::StoreConfig;
use crate::{faults, files};

/// Everything `plotstream serve` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Protocol limits (L1–L29); `--idle-timeout` sets `limits.idle`.
    pub limits: Limits,
    /// Store policy: tokens, duplicates, maxpoints, budgets.
    pub store: StoreConfig,
    /// `--lenient-lines`.
    pub lenient_lines: bool,
    /// `--public-url`: the origin given to clients and pages; else `http://` + Host.
    pub public_url: Option<String>,
    /// `--plotly-js`: where the pages' plotly.js comes from (the copy in the binary by default).
    pub plotly_js: PlotlyJs,
    /// `--viewer-dir`: a development override; `viewer.js` and `viewer.css` are read from this
    /// directory at every request instead of the copies in the binary.
    pub viewer_dir: Option<PathBuf>,
    /// L33: lingering close, time.
    pub linger: Duration,
    /// L34: shutdown drain.
    pub drain: Duration,
    /// L38: SSE keepalive.
    pub keepalive: Duration,
    /// L36/L32: write progress.
    pub write_timeout: Duration,
    /// L10: open connections; past it new ones get 503.
    pub max_connections: usize,
    /// L11: open connections per peer address (0 = off).
    pub max_connections_per_peer: usize,
    /// `--fault`: the simulator's faults.
    pub faults: Vec<faults::Fault>,
    /// `--seed`: makes injected faults reproducible.
    pub seed: u64,
    /// L44: a REST body must arrive whole within this long.
    pub rest_body_deadline: Duration,
    /// L46–L48: the REST file registry's budgets.
    pub files: files::FileLimits,
    /// Where state is kept (`--data-dir`, `--in-memory`).
    pub storage: Storage,
    /// `--sync-interval`: the longest time between two group commits (docs/storage.md DC2).
    pub sync_interval: Duration,
    /// `--lease-time`: on Redis, how long a node's hold on a writer's token outlives the node
    /// (docs/storage.md "Several nodes"; refreshed every third of it).
    pub lease_ttl: Duration,
}

/// Where `serve` keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing survives the process (`--in-memory`; the library's default, for tests).
    InMemory,
    /// The embedded store in this directory (`--data-dir`; the CLI's default).
    Dir(PathBuf),
    /// The embedded store, with the simulator's `disk-full:after=N[,for=MS]` fault.
    DirWithDiskFull {
        /// The directory.
        dir: PathBuf,
        /// Lines committed before the disk fills.
        after: u64,
        /// How long it stays full.
        duration: Duration,
    },
    /// Redis or Valkey at this URL (`--redis`, docs/storage.md "On Redis").
    Redis(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            store: StoreConfig::default(),
            lenient_lines: false,
            public_url: None,
            plotly_js: PlotlyJs::Embedded,
            viewer_dir: None,
            linger: Duration::from_secs(2),
            drain: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_peer: 256,
            faults: Vec::new(),
            seed: 0,
            rest_body_deadline: Duration::from_secs(30),
            files: files::FileLimits::default(),
            storage: Storage::InMemory,
            sync_interval: Duration::from_millis(10),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

/// Where the pages' plotly.js comes from (`--plotly-js PATH|URL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PlotlyJs {
    /// The copy in the binary (plotly.js `PLOTLY_JS_VERSION`), served at
    /// `/assets/plotly-<version>.min.js` and cached for a year.
    #[default]
    Embedded,
    /// A file served at `/assets/plotly.min.js` instead.
    File(PathBuf),
    /// A URL the pages load; the Content-Security-Policy allows exactly its origin.
    Url {
        /// The URL as given.
        url: String,
        /// `scheme://host[:port]` of `url`.
        origin: String,
    },
}

impl FromStr for PlotlyJs {
    type Err = String;

    /// An `http://` or `https://` URL, else a file path.
    fn from_str(s: &str) -> Result<PlotlyJs, String> {
        let lower = s.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Ok(PlotlyJs::File(PathBuf::from(s)));
        }
        let (scheme, rest) = s.split_once("://").ok_or("not a URL")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        // The origin goes into a header and a policy: only what a host and port may hold, so it
        // can neither end the directive (`;`, `,`, space) nor the header (CR, LF).
        let valid = !authority.is_empty()
            && !authority.contains('@')
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
        if !valid {
            return Err(format!(
                "{s:?}: the URL's host must be a plain host[:port] (letters, digits, `-._:[]`)"
            ));
        }
        if s.bytes().any(|b| b.is_ascii_control() || b == b'"') {
            return Err(format!("{s:?}: control characters or quotes in the URL"));
        }
        Ok(PlotlyJs::Url {
            url: s.to_owned(),
            origin: format!("{}://{}", scheme.to_ascii_lowercase(), authority),
        })
    }
}
