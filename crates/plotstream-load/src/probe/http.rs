//! The side-route client: one HTTP/1.1 request per connection (`Connection: close`), its
//! response read to the Content-Length or to EOF; `GET /metrics` and `POST /api/tokens` on top.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a probe connects, and the `Host` it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` (or a socket address), for `TcpStream::connect`.
    pub addr: String,
    /// The `Host` header's value.
    pub host: String,
}

impl Endpoint {
    /// Connects to `addr`, names `host`.
    pub fn new(addr: &str, host: &str) -> Endpoint {
        Endpoint {
            addr: addr.to_owned(),
            host: host.to_owned(),
        }
    }

    /// A connection with `TCP_NODELAY` (probes write small requests and wait for the answer).
    pub(crate) async fn connect(&self, request: &str) -> Result<TcpStream, Error> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| Error::new(request, ErrorKind::Connect(e)))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        let text = addr.to_string();
        Endpoint {
            addr: text.clone(),
            host: text,
        }
    }
}

/// Why a probe got no usable answer.
#[derive(Debug)]
pub struct Error {
    /// The request, e.g. `GET /metrics`.
    pub request: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong with a probe's request.
#[derive(Debug)]
pub enum ErrorKind {
    /// The connection could not be made.
    Connect(io::Error),
    /// Writing or reading failed, or the peer closed before a complete head.
    Io(io::Error),
    /// No (complete) answer within this long.
    Timeout(Duration),
    /// The answer is not an HTTP/1.x response.
    NotHttp,
    /// The answer's status is not the one the probe needs.
    Status(u16),
    /// The body is not what the route promises.
    Invalid(String),
}

impl Error {
    /// An error of `request`.
    pub fn new(request: &str, kind: ErrorKind) -> Error {
        Error {
            request: request.to_owned(),
            kind,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = &self.request;
        match &self.kind {
            ErrorKind::Connect(e) => write!(f, "{request}: cannot connect: {e}"),
            ErrorKind::Io(e) => write!(f, "{request}: {e}"),
            ErrorKind::Timeout(d) => write!(f, "{request}: no answer within {d:?}"),
            ErrorKind::NotHttp => write!(f, "{request}: not an HTTP response"),
            ErrorKind::Status(status) => write!(f, "{request} answered {status}"),
            ErrorKind::Invalid(why) => write!(f, "{request}: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Connect(e) | ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A complete response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The status code.
    pub status: u16,
    /// Where the body starts.
    pub body_at: usize,
    /// The Content-Length, if the head has one.
    pub content_length: Option<usize>,
}

/// The response head at the start of `buf`: `Ok(None)` until it is complete, `Err` when it is
/// not HTTP.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, ErrorKind> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(body_at)) => {
            let content_length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
            Ok(Some(Head {
                status: response.code.unwrap_or(0),
                body_at,
                content_length,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ErrorKind::NotHttp),
    }
}

/// One request with `Connection: close`; returns the status and the body.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), Error> {
    let what = format!("{method} {path}");
    let work = async {
        let mut stream = endpoint.connect(&what).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            endpoint.host,
            body.len()
        );
        let io = |e| Error::new(&what, ErrorKind::Io(e));
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body).await.map_err(io)?;
        let mut buf = Vec::new();
        // Read to EOF; stop early once Content-Length bytes are in.
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(Some(Head {
                body_at,
                content_length: Some(len),
                ..
            })) = parse_head(&buf)
            {
                if buf.len() >= body_at + len {
                    break;
                }
            }
        }
        Ok(buf)
    };
    let buf = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::new(&what, ErrorKind::Timeout(timeout)))??;
    let head = match parse_head(&buf) {
        Ok(Some(head)) => head,
        Ok(None) => return Err(Error::new(&what, ErrorKind::NotHttp)),
        Err(kind) => return Err(Error::new(&what, kind)),
    };
    let end = head
        .content_length
        .map_or(buf.len(), |l| (head.body_at + l).min(buf.len()));
    Ok((head.status, buf[head.body_at..end].to_vec()))
}

/// `GET path` that must answer 200 within [`TIMEOUT`]; returns the body.
pub async fn get(endpoint: &Endpoint, path: &str) -> Result<Vec<u8>, Error> {
    match request(endpoint, "GET", path, b"", TIMEOUT).await? {
        (200, body) => Ok(body),
        (status, _) => Err(Error::new(
            &format!("GET {path}"),
            ErrorKind::Status(status),
        )),
    }
}

/// Every sample of `GET /metrics`, keyed by `name{labels}`.
pub async fn metrics(endpoint: &Endpoint) -> Result<BTreeMap<String, f64>, Error> {
    let body = get(endpoint, "/metrics").await?;
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

/// Issues `n` registered tokens through `POST /api/tokens?count=k`, in calls of at most
/// [`TOKENS_PER_CALL`] (plotstream's L53; a server may cap a call, not the total).
pub async fn issue_tokens(endpoint: &Endpoint, n: usize) -> Result<Vec<String>, Error> {
    let mut tokens = Vec::with_capacity(n);
    while tokens.len() < n {
        let k = (n - tokens.len()).min(TOKENS_PER_CALL);
        let path = format!("/api/tokens?count={k}");
        let what = format!("POST {path}");
        let invalid = |why: String| Error::new(&what, ErrorKind::Invalid(why));
        let (status, body) = request(endpoint, "POST", &path, b"", Duration::from_secs(30)).await?;
        if !(200..300).contains(&status) {
            return Err(Error::new(&what, ErrorKind::Status(status)));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
        let batch = v
            .get("tokens")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| invalid("the body has no `tokens` array".to_owned()))?;
        if batch.is_empty() {
            return Err(invalid("no token issued".to_owned()));
        }
        tokens.extend(batch.iter().filter_map(|t| t.as_str().map(str::to_owned)));
    }
    Ok(tokens)
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

/// How long a side-route read may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Tokens asked for in one `POST /api/tokens`.
const TOKENS_PER_CALL: usize = 100;

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

    #[test]
    fn heads_parse_once_complete() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: close\r\n\r\nok";
        for cut in 0..wire.len() - 2 {
            assert_eq!(parse_head(&wire[..cut]).ok(), Some(None), "cut at {cut}");
        }
        let head = parse_head(wire).ok().flatten();
        assert_eq!(
            head,
            Some(Head {
                status: 200,
                body_at: wire.len() - 2,
                content_length: Some(2)
            })
        );
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn errors_name_their_request() {
        let e = Error::new("GET /metrics", ErrorKind::Status(404));
        assert_eq!(e.to_string(), "GET /metrics answered 404");
        let e = Error::new("GET /x", ErrorKind::Timeout(Duration::from_secs(10)));
        assert_eq!(e.to_string(), "GET /x: no answer within 10s");
    }
}
