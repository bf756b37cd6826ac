//! The runner's own small HTTP/1.1 client for the side routes: the inspection route
//! (docs/reliability.md §4.3), `POST /api/tokens`, `/metrics` and an SSE viewer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::jcs;

/// What `GET /api/streams/{token}` says about one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// The newest seq (0 if none).
    pub last_seq: u64,
    /// The longest attribute array.
    pub count: u64,
    /// Lines skipped in lenient mode.
    pub rejected_lines: u64,
    /// The window's length per attribute (0 when the target does not say).
    pub maxpoints: u64,
    /// The stored window.
    pub window: serde_json::Value,
    /// The server's digest.
    pub digest: String,
    /// Set when `digest` is not the SHA-256 of the RFC 8785 form of `window`.
    pub digest_error: Option<String>,
}

/// One request with `Connection: close`; returns the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut buf = Vec::new();
        // Read to EOF; stop early once Content-Length bytes are in.
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some((_, body_start, Some(len))) = split_head(&buf) {
                if buf.len() >= body_start + len {
                    break;
                }
            }
        }
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{method} {path}: no answer within {timeout:?}"))??;
    let Some((status, body_start, len)) = split_head(&buf) else {
        bail!("{method} {path}: not an HTTP response");
    };
    let end = len.map_or(buf.len(), |l| (body_start + l).min(buf.len()));
    Ok((status, buf[body_start..end].to_vec()))
}

/// Reads the inspection of `token`: `Ok(None)` for an unknown stream (404). With `full`, the
/// window is parsed and its digest checked; without, only the counters are read (cheap, for
/// the many runs that only compare counts).
pub async fn inspect_counts(addr: SocketAddr, token: &str) -> Result<Option<Inspection>> {
    let (status, body) = request(
        addr,
        "GET",
        &format!("/api/streams/{token}"),
        b"",
        INSPECT_TIMEOUT,
    )
    .await?;
    match status {
        404 => Ok(None),
        200 => {
            let text = String::from_utf8_lossy(&body);
            let number = |key: &str| -> Option<u64> {
                let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
                let digits: String = text[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            };
            match (number("last_seq"), number("rejected_lines")) {
                (Some(last_seq), Some(rejected_lines)) => Ok(Some(Inspection {
                    last_seq,
                    count: number("count").unwrap_or(0),
                    rejected_lines,
                    maxpoints: number("maxpoints").unwrap_or(0),
                    window: serde_json::Value::Null,
                    digest: String::new(),
                    digest_error: None,
                })),
                // Not plotstream's field layout: parse it properly.
                _ => inspect(addr, token).await,
            }
        }
        other => bail!("GET /api/streams/{token} answered {other}"),
    }
}

/// Reads the inspection of `token`, window and digest included: `Ok(None)` for an unknown
/// stream (404).
pub async fn inspect(addr: SocketAddr, token: &str) -> Result<Option<Inspection>> {
    let (status, body) = request(
        addr,
        "GET",
        &format!("/api/streams/{token}"),
        b"",
        INSPECT_TIMEOUT,
    )
    .await?;
    match status {
        404 => Ok(None),
        200 => {
            let v: serde_json::Value =
                serde_json::from_slice(&body).context("inspection body is not JSON")?;
            let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
            let window = v.get("window").cloned().unwrap_or(serde_json::Value::Null);
            let digest = v
                .get("digest")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let ours = hex(&Sha256::digest(jcs::encode(&window).as_bytes()));
            let digest_error = (ours != digest)
                .then(|| format!("digest {digest:?} is not SHA-256(JCS(window)) = {ours}"));
            Ok(Some(Inspection {
                last_seq: field("last_seq").context("inspection has no last_seq")?,
                count: field("count").unwrap_or(0),
                rejected_lines: field("rejected_lines").unwrap_or(0),
                maxpoints: field("maxpoints").unwrap_or(0),
                window,
                digest,
                digest_error,
            }))
        }
        other => bail!("GET /api/streams/{token} answered {other}"),
    }
}

/// Issues `n` registered tokens through `POST /api/tokens?count=k`, in calls of at most
/// [`TOKENS_PER_CALL`] (plotstream's L53; a server may cap a call, not the total).
pub async fn issue_tokens(addr: SocketAddr, n: usize) -> Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(n);
    while tokens.len() < n {
        let k = (n - tokens.len()).min(TOKENS_PER_CALL);
        let (status, body) = request(
            addr,
            "POST",
            &format!("/api/tokens?count={k}"),
            b"",
            Duration::from_secs(30),
        )
        .await?;
        if !(200..300).contains(&status) {
            bail!("POST /api/tokens?count={k} answered {status}");
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("tokens body is not JSON")?;
        let batch = v
            .get("tokens")
            .and_then(serde_json::Value::as_array)
            .context("tokens body has no `tokens` array")?;
        if batch.is_empty() {
            bail!("POST /api/tokens?count={k} issued no token");
        }
        tokens.extend(batch.iter().filter_map(|t| t.as_str().map(str::to_owned)));
    }
    Ok(tokens)
}

/// Tokens asked for in one `POST /api/tokens`.
const TOKENS_PER_CALL: usize = 100;

/// Every sample of `GET /metrics`, keyed by `name{labels}`.
pub async fn metrics(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let (status, body) = request(addr, "GET", "/metrics", b"", INSPECT_TIMEOUT).await?;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&body).lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = line.rsplit_once(' ') {
            if let Ok(v) = v.parse::<f64>() {
                out.insert(k.to_owned(), v);
            }
        }
    }
    Ok(out)
}

/// An SSE viewer of one stream: the raw events it read.
#[derive(Debug)]
pub struct Viewer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Viewer {
    /// Subscribes to `token` and waits for the response head.
    pub async fn open(addr: SocketAddr, token: &str) -> Result<Viewer> {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "GET /api/streams/{token}/events?interval=0 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut v = Viewer {
            stream,
            buf: Vec::new(),
        };
        // Up to 2 s for the head and the first event (the snapshot).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut chunk = vec![0u8; 16 * 1024];
        while !v.has_event() {
            match tokio::time::timeout_at(deadline, v.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => v.buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        if !v.buf.starts_with(b"HTTP/1.1 200") {
            bail!(
                "the viewer got {:?}",
                String::from_utf8_lossy(&v.buf[..v.buf.len().min(60)])
            );
        }
        Ok(v)
    }

    /// Whether the head and one complete event have arrived.
    fn has_event(&self) -> bool {
        let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        self.buf[head_end + 4..].windows(2).any(|w| w == b"\n\n")
    }

    /// Checks SSE framing: every event has exactly one `data:` line, which is one JSON text.
    /// Returns the number of events and the `data` of each.
    pub fn check_events(&self) -> Result<Vec<serde_json::Value>> {
        let text = String::from_utf8_lossy(&self.buf);
        let Some((_, body)) = text.split_once("\r\n\r\n") else {
            bail!("no SSE body");
        };
        let mut out = Vec::new();
        for event in body.split("\n\n") {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .collect();
            let is_event = event.lines().any(|l| l.starts_with("event:"));
            if !is_event && data.is_empty() {
                continue; // a keepalive comment or the tail
            }
            if data.len() != 1 {
                bail!("an SSE event with {} data lines: {event:?}", data.len());
            }
            let v: serde_json::Value = serde_json::from_str(data[0].trim_start())
                .with_context(|| format!("SSE data is not one JSON text: {:?}", data[0]))?;
            out.push(v);
        }
        Ok(out)
    }
}

/// `(status, body start, Content-Length)` of a response whose head is complete.
fn split_head(buf: &[u8]) -> Option<(u16, usize, Option<usize>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    Some((status, end, len))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `base64(user:key)` (RFC 4648, padded): what follows `Basic ` in the `Authorization` that
/// chart_studio sends (docs/protocol.md §7.3).
pub fn basic(user: &str, key: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{key}").into_bytes();
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for group in raw.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (idx, b)| n | u32::from(*b) << (16 - 8 * idx));
        for idx in 0..4 {
            if idx <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * idx) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_base64_of_user_colon_key() {
        assert_eq!(basic("demo", "demokey123"), "ZGVtbzpkZW1va2V5MTIz");
        assert_eq!(basic("a", ""), "YTo=");
        assert_eq!(basic("ab", ""), "YWI6");
        assert_eq!(basic("", ""), "Og==");
    }
}
