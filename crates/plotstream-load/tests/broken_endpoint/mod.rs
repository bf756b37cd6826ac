//! A deliberately broken streaming endpoint for calibrating `plotstream conform`
//! (docs/reliability.md §8: "a suite that passes every server proves nothing").
//!
//! It is a proxy in front of a real `plotstream-server`. Chunked ingest bodies go through its
//! own chunked decoder, which carries three seeded mutations, and are re-framed correctly for
//! the real server:
//!
//! - an empty line where a size line is expected is read as size 0, the end of the body (M11);
//! - a bare LF ends a size line, like the head's lines (M15);
//! - a line that is not JSON is dropped, so the body "accepts" it (P5 broken).
//!
//! And whenever the real server answers with an error, the proxy relays the response and then
//! resets the connection (SO_LINGER 0) instead of closing gracefully (M8). It also holds back
//! the first [`Lateness::times`] `100 Continue` responses by [`Lateness::delay`], which
//! calibrates the runner's timing bounds and their quiet rerun. Everything else is relayed
//! untouched, so cases that do not meet a mutation pass.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How the endpoint delays its `100 Continue` responses.
#[derive(Debug, Clone, Copy)]
pub struct Lateness {
    /// Added before each delayed `100 Continue`.
    pub delay: Duration,
    /// How many `100 Continue` responses are delayed, counted over the endpoint's life.
    pub times: usize,
}

/// Every `100 Continue` 300 ms late: far outside the 100 ms bound of A19 and E9.
pub const ALWAYS_LATE: Lateness = Lateness {
    delay: Duration::from_millis(300),
    times: usize::MAX,
};

/// Serves the broken endpoint on `listener`, forwarding to `backend`, until dropped.
pub async fn serve(listener: TcpListener, backend: SocketAddr, lateness: Lateness) {
    let continues = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let continues = continues.clone();
        tokio::spawn(async move {
            let _ = handle(client, backend, lateness, &continues).await;
        });
    }
}

async fn handle(
    mut client: TcpStream,
    backend: SocketAddr,
    lateness: Lateness,
    continues: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    // The head, as the client sent it.
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if let Some(i) = find(&buf, b"\n\n") {
            break i + 2;
        }
        if buf.len() > 64 * 1024 {
            break buf.len();
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let chunked_ingest = head.starts_with("post / ")
        && head
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut server = TcpStream::connect(backend).await?;
    server.set_nodelay(true)?;
    server.write_all(&buf[..head_end]).await?;
    let rest = buf[head_end..].to_vec();
    let (client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, server_wr) = server.into_split();
    let body = if chunked_ingest {
        tokio::spawn(decoded_body(rest, client_rd, server_wr))
    } else {
        tokio::spawn(raw_body(rest, client_rd, server_wr))
    };

    // The response: relay it; after an error status, reset instead of closing gracefully.
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match server_rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if response.is_empty()
            && chunk[..n].starts_with(b"HTTP/1.1 100")
            && continues.fetch_add(1, Ordering::Relaxed) < lateness.times
        {
            tokio::time::sleep(lateness.delay).await;
        }
        response.extend_from_slice(&chunk[..n]);
        client_wr.write_all(&chunk[..n]).await?;
        if final_status(&response).is_some_and(|s| s >= 400) && complete(&response) {
            break;
        }
    }
    if final_status(&response).is_some_and(|s| s >= 400) {
        // M8: close at once with SO_LINGER 0: a reset and no FIN, which can erase the status.
        let sock = socket2::SockRef::from(client_wr.as_ref());
        let _ = sock.set_linger(Some(Duration::ZERO));
        // Dropping a write half would send a FIN first; forgetting it leaves the close to the
        // read half, which the aborted body task drops.
        client_wr.forget();
        body.abort();
        let _ = body.await;
        return Ok(());
    }
    let _ = client_wr.shutdown().await;
    // Drain what the client still sends, briefly, so that the close is not a reset.
    if let Ok(Ok(mut client_rd)) = tokio::time::timeout(Duration::from_millis(500), body).await {
        let mut sink = [0u8; 16 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(n) = client_rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}

/// Forwards a chunked body through the mutated decoder; returns the client's read half.
async fn decoded_body(
    rest: Vec<u8>,
    mut client_rd: OwnedReadHalf,
    mut server_wr: OwnedWriteHalf,
) -> OwnedReadHalf {
    let mut decoder = Decoder {
        buf: rest,
        lines: Vec::new(),
    };
    loop {
        match decoder.step() {
            Step::Forward(bytes) => {
                if server_wr.write_all(&bytes).await.is_err() {
                    return client_rd;
                }
            }
            Step::End => {
                let _ = server_wr.write_all(b"0\r\n\r\n").await;
                // Bytes after the (mis)read end are not forwarded.
                return client_rd;
            }
            Step::More => {
                let mut chunk = [0u8; 16 * 1024];
                match client_rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        let _ = server_wr.shutdown().await;
                        return client_rd;
                    }
                    Ok(n) => decoder.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }
}

/// Forwards everything else untouched; returns the client's read half.
async fn raw_body(
    rest: Vec<u8>,
    mut client_rd: OwnedReadHalf,
    mut server_wr: OwnedWriteHalf,
) -> OwnedReadHalf {
    if server_wr.write_all(&rest).await.is_err() {
        return client_rd;
    }
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match client_rd.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = server_wr.shutdown().await;
                return client_rd;
            }
            Ok(n) => {
                if server_wr.write_all(&chunk[..n]).await.is_err() {
                    return client_rd;
                }
            }
        }
    }
}

enum Step {
    Forward(Vec<u8>),
    End,
    More,
}

/// The mutated chunked decoder: it yields correctly framed chunks for the real server.
struct Decoder {
    buf: Vec<u8>,
    /// The current (incomplete) line of decoded data.
    lines: Vec<u8>,
}

impl Decoder {
    fn step(&mut self) -> Step {
        // The size line ends at the first LF (a bare LF is fine here: M15).
        let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
            return Step::More;
        };
        let mut line = self.buf[..lf].to_vec();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            // M11: an empty size line is the last-chunk.
            return Step::End;
        }
        let digits: Vec<u8> = line.iter().copied().take_while(|&b| b != b';').collect();
        let Some(size) = std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| usize::from_str_radix(d.trim(), 16).ok())
        else {
            // Let the real server refuse it.
            let mut garbage = line.clone();
            garbage.extend_from_slice(b"\r\n");
            self.buf.drain(..=lf);
            return Step::Forward(garbage);
        };
        if size == 0 {
            return Step::End;
        }
        // Data and whatever line end follows it (CRLF or a bare LF).
        let data_start = lf + 1;
        if self.buf.len() < data_start + size + 1 {
            return Step::More;
        }
        let data = self.buf[data_start..data_start + size].to_vec();
        let mut after = data_start + size;
        if self.buf.get(after) == Some(&b'\r') {
            if self.buf.len() < after + 2 {
                return Step::More;
            }
            after += 1;
        }
        if self.buf.get(after) == Some(&b'\n') {
            after += 1;
        }
        self.buf.drain(..after);
        let mut out = Vec::new();
        for b in data {
            self.lines.push(b);
            if b == b'\n' {
                let line = std::mem::take(&mut self.lines);
                let text = &line[..line.len() - 1];
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                let blank = text.iter().all(|b| *b == b' ' || *b == b'\t');
                // "Accepts" a bad JSON line by not passing it on.
                if blank || serde_json::from_slice::<serde_json::Value>(text).is_ok() {
                    out.extend_from_slice(format!("{:x}\r\n", line.len()).as_bytes());
                    out.extend_from_slice(&line);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        Step::Forward(out)
    }
}

fn final_status(response: &[u8]) -> Option<u16> {
    let mut rest = response;
    loop {
        let end = find(rest, b"\r\n\r\n")?;
        let status: u16 = std::str::from_utf8(rest.get(9..12)?).ok()?.parse().ok()?;
        if status >= 200 {
            return Some(status);
        }
        rest = &rest[end + 4..];
    }
}

fn complete(response: &[u8]) -> bool {
    let Some(end) = find(response, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    response.len() >= end + 4 + len
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
