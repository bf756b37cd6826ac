//! Targets (the endpoints under test), what each one offers, and fresh tokens for every run.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use plotstream_cases::segment::splitmix;
use plotstream_cases::{Program, SetupKind};

use super::wire::{self, ConnOpts};
use crate::probe::inspect::{self, Detail};
use crate::probe::{http, Endpoint};

/// One endpoint under test.
#[derive(Debug)]
pub struct Target {
    /// What the user gave.
    pub url: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The same, for the side routes (`probe`).
    pub endpoint: Endpoint,
    /// The non-default setup it runs with, if any.
    pub kind: Option<SetupKind>,
    /// `GET /api/streams/{token}` works (docs/reliability.md §4.3).
    pub inspection: bool,
    /// `GET /metrics` answers with plotstream's counters.
    pub metrics: bool,
    /// `POST /api/tokens` issues tokens (needed in registered mode).
    pub tokens_api: bool,
    /// Issued, not yet used tokens (registered mode).
    pool: tokio::sync::Mutex<Vec<String>>,
}

impl Target {
    /// Resolves `url` (`http://host:port`) and probes what the endpoint offers.
    pub async fn probe(url: &str, kind: Option<SetupKind>, tokens: &TokenSource) -> Result<Target> {
        let addr = resolve(url).await?;
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Target(format!("{url}: connect timed out")))?
            .map_err(|e| Error::Target(format!("cannot connect to {url}: {e}")))?;
        let endpoint = Endpoint::from(addr);
        let metrics = http::metrics(&endpoint)
            .await
            .map(|m| m.keys().any(|k| k.starts_with("plotstream_")))
            .unwrap_or(false);
        let tokens_api = matches!(http::issue_tokens(&endpoint, 1).await, Ok(t) if t.len() == 1);
        if kind == Some(SetupKind::Registered) && !tokens_api {
            return Err(Error::Target(format!(
                "{url}: a registered-mode target needs POST /api/tokens to issue tokens"
            )));
        }
        let mut target = Target {
            url: url.to_owned(),
            addr,
            endpoint,
            kind,
            inspection: false,
            metrics,
            tokens_api,
            pool: tokio::sync::Mutex::new(Vec::new()),
        };
        // One line to a fresh token, then read it back.
        let token = if kind == Some(SetupKind::Registered) {
            target.issued().await?
        } else {
            tokens.random(10)
        };
        let items = Program::parse("H c(P1) END")?.eval(&[("tok1".to_owned(), token.clone())])?;
        let steps = plotstream_cases::segment::schedule(
            &items,
            plotstream_cases::Segmentation::Whole,
            None,
            1.0,
        );
        let res = wire::run_conn(
            addr,
            &steps,
            ConnOpts {
                wait: PROBE_TIMEOUT,
                keep_writing: false,
                after_eof: false,
            },
        )
        .await;
        if res.status() == Some(200) {
            target.inspection = matches!(inspect::read(&target.endpoint, &token, Detail::Window).await, Ok(Some(i)) if i.last_seq == 1);
        }
        Ok(target)
    }

    /// One issued token (registered mode), from the pool.
    pub async fn issued(&self) -> Result<String> {
        let mut pool = self.pool.lock().await;
        if pool.is_empty() {
            *pool = http::issue_tokens(&self.endpoint, POOL_REFILL).await?;
        }
        pool.pop()
            .ok_or_else(|| Error::Target("POST /api/tokens issued no token".into()))
    }

    /// What the target lacks for a case that needs `inspection` and `metrics`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} ({})",
            self.url,
            self.kind
                .map_or("default setup".to_owned(), |k| format!("{k}"))
        );
        let mut has = Vec::new();
        if self.inspection {
            has.push("inspection");
        }
        if self.metrics {
            has.push("metrics");
        }
        if self.tokens_api {
            has.push("tokens API");
        }
        if !has.is_empty() {
            s.push_str(&format!(": {}", has.join(", ")));
        }
        s
    }
}

/// Fresh tokens: `[a-z0-9]` of any length, unique within a run and very likely across runs.
#[derive(Debug)]
pub struct TokenSource {
    state: Mutex<u64>,
}

impl TokenSource {
    /// Seeded from the clock and the process id, so two runs against one server differ.
    pub fn new() -> TokenSource {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        TokenSource {
            state: Mutex::new(nanos ^ (u64::from(std::process::id()) << 32)),
        }
    }

    /// A random token of `len` characters.
    pub fn random(&self, len: usize) -> String {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (0..len)
            .map(|_| char::from(ALPHABET[(splitmix(&mut state) % 36) as usize]))
            .collect()
    }
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource::new()
    }
}

/// `http://host:port[/]` → a socket address.
pub async fn resolve(url: &str) -> Result<SocketAddr> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(Error::Usage(format!(
            "target {url:?}: only http:// URLs are supported (terminate TLS in front)"
        )));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| Error::Target(format!("cannot resolve {with_port}: {e}")))?
        .next()
        .ok_or_else(|| Error::Target(format!("{with_port} resolves to nothing")))?;
    Ok(addr)
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_REFILL: usize = 500;
