//! The viewer: `GET /api/streams/{id}/events?interval=0` (docs/reliability.md §4.4), read as
//! Server-Sent Events however the bytes arrive.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http::{parse_head, Endpoint, Error, ErrorKind};

/// One event of a feed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its `event:` type (empty when it has none).
    pub kind: String,
    /// Its `data:` lines, joined by `\n`.
    pub data: String,
    /// How many `data:` lines it had.
    pub data_lines: usize,
}

impl Event {
    /// Its data as JSON: exactly one `data:` line holding one JSON text, as plotstream's
    /// events are framed.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        if self.data_lines != 1 {
            return Err(format!(
                "an SSE event with {} data lines: {:?}",
                self.data_lines, self.data
            ));
        }
        serde_json::from_str(&self.data)
            .map_err(|e| format!("SSE data is not one JSON text ({e}): {:?}", self.data))
    }
}

/// The SSE line parser's state between reads.
#[derive(Debug, Default)]
pub struct Feed {
    event: Event,
}

impl Feed {
    /// The next complete event in `buf`, consuming its lines. Comments (keepalives) and blank
    /// lines between events make no event.
    pub fn next_event(&mut self, buf: &mut Vec<u8>) -> Option<Event> {
        let mut consumed = 0;
        let mut found = None;
        while let Some(nl) = buf[consumed..].iter().position(|&b| b == b'\n') {
            let line = &buf[consumed..consumed + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            consumed += nl + 1;
            if line.is_empty() {
                if !self.event.kind.is_empty() || self.event.data_lines > 0 {
                    found = Some(std::mem::take(&mut self.event));
                    break;
                }
                continue;
            }
            let line = String::from_utf8_lossy(line);
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event.kind = value.to_owned(),
                "data" => {
                    if self.event.data_lines > 0 {
                        self.event.data.push('\n');
                    }
                    self.event.data.push_str(value);
                    self.event.data_lines += 1;
                }
                _ => {} // `id`, comments (keepalives)
            }
        }
        buf.drain(..consumed);
        found
    }
}

/// An open feed: the connection, and what was read of it but not yet parsed.
#[derive(Debug)]
pub struct Subscription {
    stream: TcpStream,
    buf: Vec<u8>,
    feed: Feed,
    chunk: Box<[u8]>,
}

impl Subscription {
    /// Subscribes to stream `id` with `interval=0` and waits (at most `timeout`) for the
    /// response head; any status but 200 is an error ([`ErrorKind::Status`]).
    pub async fn open(
        endpoint: &Endpoint,
        id: &str,
        timeout: Duration,
    ) -> Result<Subscription, Error> {
        let path = format!("/api/streams/{id}/events?interval=0");
        let what = format!("GET {path}");
        let work = async {
            let mut stream = endpoint.connect(&what).await?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                endpoint.host
            );
            let io = |e| Error::new(&what, ErrorKind::Io(e));
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; READ_SIZE].into_boxed_slice();
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) => return Err(io(std::io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(io(e)),
                }
                match parse_head(&buf) {
                    Ok(Some(head)) if head.status == 200 => {
                        buf.drain(..head.body_at);
                        return Ok(Subscription {
                            stream,
                            buf,
                            feed: Feed::default(),
                            chunk,
                        });
                    }
                    Ok(Some(head)) => {
                        return Err(Error::new(&what, ErrorKind::Status(head.status)))
                    }
                    Ok(None) => {}
                    Err(kind) => return Err(Error::new(&what, kind)),
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::new(&what, ErrorKind::Timeout(timeout)))?
    }

    /// The next event among the bytes already read.
    pub fn next_event(&mut self) -> Option<Event> {
        self.feed.next_event(&mut self.buf)
    }

    /// Reads what the server sent next; `Ok(false)` at EOF. Cancel-safe: a read that did not
    /// complete loses nothing.
    pub async fn read_more(&mut self) -> std::io::Result<bool> {
        let n = self.stream.read(&mut self.chunk).await?;
        self.buf.extend_from_slice(&self.chunk[..n]);
        Ok(n > 0)
    }
}

/// Subscribes to `id` and returns the complete events that arrive within `wait`, reading
/// until there is at least one (the snapshot comes first).
pub async fn first_events(
    endpoint: &Endpoint,
    id: &str,
    wait: Duration,
) -> Result<Vec<Event>, Error> {
    let deadline = Instant::now() + wait;
    let mut sub = Subscription::open(endpoint, id, wait).await?;
    let mut events = Vec::new();
    loop {
        while let Some(event) = sub.next_event() {
            events.push(event);
        }
        if !events.is_empty() {
            return Ok(events);
        }
        match tokio::time::timeout_at(deadline, sub.read_more()).await {
            Ok(Ok(true)) => {}
            _ => return Ok(events),
        }
    }
}

/// Bytes read from a feed at a time.
const READ_SIZE: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: &str) -> Event {
        Event {
            kind: kind.into(),
            data: data.into(),
            data_lines: 1,
        }
    }

    #[test]
    fn events_split_anywhere() {
        let wire = b"event: snapshot\nid: e:0\ndata: {\"a\":1}\n\n: keepalive\n\nevent: update\r\ndata: {\"b\":2}\r\n\r\n";
        for split in 0..wire.len() {
            let mut feed = Feed::default();
            let mut buf = wire[..split].to_vec();
            let mut events = Vec::new();
            while let Some(e) = feed.next_event(&mut buf) {
                events.push(e);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(e) = feed.next_event(&mut buf) {
                events.push(e);
            }
            assert_eq!(
                events,
                [event("snapshot", "{\"a\":1}"), event("update", "{\"b\":2}")],
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_event_is_one_data_line_of_json() {
        let mut buf = b"data: 1\ndata: 2\n\nevent: x\n\nevent: y\ndata: {\n\n".to_vec();
        let mut feed = Feed::default();
        let two = feed.next_event(&mut buf).expect("an event");
        assert_eq!((two.data.as_str(), two.data_lines), ("1\n2", 2));
        assert!(two.json().is_err_and(|e| e.contains("2 data lines")));
        let none = feed.next_event(&mut buf).expect("an event");
        assert!(none.json().is_err_and(|e| e.contains("0 data lines")));
        let bad = feed.next_event(&mut buf).expect("an event");
        assert!(bad.json().is_err_and(|e| e.contains("not one JSON text")));
        assert_eq!(
            event("snapshot", " {\"a\":1}").json(),
            Ok(serde_json::json!({"a": 1}))
        );
    }
}
