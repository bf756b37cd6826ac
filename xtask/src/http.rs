//! A few HTTP/1.1 exchanges over plain TCP, for the checks that read a server's routes or write
//! a few lines to one of its streams without starting a client program (the wheel step reads
//! what the README's tutorial made; the cross step writes to a server running under qemu).
//! Every response of `plotstream serve` ends with `Connection: close`, so a response is read to
//! EOF.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Context, Result};

/// A response: its status code and its body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// `GET path` from `addr`.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .with_context(|| format!("GET http://{addr}{path}"))
}

/// `GET /api/streams/{token}` from `addr` as JSON: the stream's inspection (docs/serve.md,
/// Routes). Anything but `200` is an error.
pub(crate) fn inspect(addr: SocketAddr, token: &str) -> Result<serde_json::Value> {
    let response = get(addr, &format!("/api/streams/{token}"))?;
    if response.status != 200 {
        bail!(
            "GET /api/streams/{token} answered {}: {}",
            response.status,
            response.body
        );
    }
    serde_json::from_str(&response.body)
        .with_context(|| format!("GET /api/streams/{token} is not JSON: {}", response.body))
}

/// Writes `lines` to the stream `token` as chart_studio does: `POST /` with a
/// `plotly-streamtoken` head and a chunked body, one chunk per line; the server's final response
/// once the body ended.
pub(crate) fn write_lines(addr: SocketAddr, token: &str, lines: &[String]) -> Result<Response> {
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nplotly-streamtoken: {token}\r\n\r\n"
    )
    .into_bytes();
    for line in lines {
        let line = format!("{line}\n");
        request.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    exchange(addr, &request).with_context(|| format!("POST / to http://{addr} (token {token})"))
}

/// Sends `request` on a fresh connection and reads the response until the server closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(request)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    parse(&bytes)
}

/// The status and body of a whole response (head, blank line, body).
pub(crate) fn parse(bytes: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no complete response head in {text:?}");
    };
    let status = head
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP/1.1 status line in {head:?}"))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

/// Generous: the server under qemu runs emulated, and a writer's `200` waits for a commit.
const TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_give_their_status_and_body() -> Result<()> {
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")?,
            Response {
                status: 200,
                body: "{}".to_owned()
            }
        );
        assert_eq!(parse(b"HTTP/1.1 404 Not Found\r\n\r\n")?.status, 404);
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
        Ok(())
    }
}
