//! The wire layer of docs/reliability.md §7: one loopback TCP connection with TCP_NODELAY and one
//! `write` per segment, a reader that parses the response as it arrives, and a timestamped
//! log of both directions.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plotstream_cases::segment::Step;
use plotstream_cases::End;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Options for one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnOpts {
    /// How long to wait for a response, and then for the end.
    pub wait: Duration,
    /// Keep writing after the final response (E8); otherwise the schedule stops there.
    pub keep_writing: bool,
    /// When the outcome is `open`, half-close and log what the server does next.
    pub after_eof: bool,
}

/// The direction of a logged segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    Out,
    /// Server to client.
    In,
    /// A connection event (EOF, reset, timeout), described in the bytes.
    Event,
}

/// One line of the wire log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Since connect.
    pub at: Duration,
    /// Direction.
    pub dir: Dir,
    /// The bytes, or the event's description.
    pub bytes: Vec<u8>,
}

/// A parsed response head.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body (per Content-Length).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What one connection saw.
#[derive(Debug, Clone)]
pub struct ConnResult {
    /// The final response, if one arrived complete.
    pub response: Option<Response>,
    /// How the connection ended.
    pub end: End,
    /// Milliseconds from the origin to the final status (or to the end when there is none).
    pub status_ms: Option<u64>,
    /// Milliseconds from the last write to the FIN.
    pub fin_ms: Option<u64>,
    /// Milliseconds from the end of the write before it to the `100 Continue`.
    pub continue_ms: Option<u64>,
    /// Bytes that arrived after the final response (a second response, say).
    pub extra: usize,
    /// Bytes that do not parse as a response.
    pub garbage: Option<String>,
    /// A write that failed or stalled, and why.
    pub write_error: Option<String>,
    /// Milliseconds from connect to the final status.
    pub status_since_first_write_ms: Option<f64>,
    /// What happened after the runner half-closed a connection that was still open.
    pub after_eof: Option<String>,
    /// Both directions, timestamped.
    pub log: Vec<LogEntry>,
    /// Payload bytes written.
    pub bytes_written: usize,
}

impl ConnResult {
    /// The status, if a complete final response arrived.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// One line: `status=400 end=fin (12 ms)`.
    pub fn describe(&self) -> String {
        let mut s = match self.status() {
            Some(c) => format!("status={c}"),
            None => "status=none".to_owned(),
        };
        let _ = write!(s, " end={}", self.end);
        if let Some(ms) = self.status_ms {
            let _ = write!(s, " ({ms} ms)");
        }
        if let Some(ms) = self.continue_ms {
            let _ = write!(s, " 100-continue at {ms} ms");
        }
        if self.extra > 0 {
            let _ = write!(s, " +{} bytes after the response", self.extra);
        }
        if let Some(g) = &self.garbage {
            let _ = write!(s, " unparsable response: {g}");
        }
        if let Some(e) = &self.write_error {
            let _ = write!(s, " ({e})");
        }
        if let Some(e) = &self.after_eof {
            let _ = write!(s, " [after the runner's EOF: {e}]");
        }
        s
    }
}

/// Reader state shared with the writer.
#[derive(Debug, Default, Clone)]
struct ReadState {
    bytes: Vec<u8>,
    continue_at: Option<Instant>,
    final_at: Option<Instant>,
    complete: Option<(Response, usize)>,
    garbage: Option<String>,
    /// EOF (true) or reset (false), and when.
    ended: Option<(Instant, bool)>,
    log: Vec<(Instant, Dir, Vec<u8>)>,
}

/// Runs one connection to `addr` through `steps`, then waits for its outcome.
pub async fn run_conn(addr: SocketAddr, steps: &[Step], opts: ConnOpts) -> ConnResult {
    match Conn::open(addr, opts).await {
        Ok(mut conn) => {
            conn.send(steps).await;
            conn.finish().await
        }
        Err(failed) => *failed,
    }
}

/// An open connection: send steps in several calls (scripts), then [`Conn::finish`].
#[derive(Debug)]
pub struct Conn {
    t0: Instant,
    opts: ConnOpts,
    wr: tokio::net::tcp::OwnedWriteHalf,
    rx: watch::Receiver<ReadState>,
    reader: tokio::task::JoinHandle<()>,
    origin: Option<Instant>,
    write_ends: Vec<Instant>,
    out_log: Vec<(Instant, Dir, Vec<u8>)>,
    write_error: Option<String>,
    first_write_at: Option<Duration>,
    bytes_written: usize,
    eof_sent: bool,
    reset: bool,
    stopped: bool,
    /// A write failed because the server reset the connection.
    write_reset: bool,
}

impl Conn {
    /// Connects with TCP_NODELAY and starts the reader.
    pub async fn open(addr: SocketAddr, opts: ConnOpts) -> Result<Conn, Box<ConnResult>> {
        let t0 = Instant::now();
        let stream = match tokio::time::timeout(opts.wait, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Box::new(failed_connect(
                    t0,
                    &format!("connect failed: {e}"),
                )))
            }
            Err(_) => return Err(Box::new(failed_connect(t0, "connect timed out"))),
        };
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let (tx, rx) = watch::channel(ReadState::default());
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        tx.send_modify(|s| {
                            s.ended = Some((Instant::now(), true));
                            s.log.push((Instant::now(), Dir::Event, b"FIN".to_vec()));
                        });
                        break;
                    }
                    Ok(n) => {
                        let now = Instant::now();
                        tx.send_modify(|s| {
                            s.bytes.extend_from_slice(&buf[..n]);
                            s.log.push((now, Dir::In, buf[..n].to_vec()));
                            parse_progress(s, now);
                        });
                    }
                    Err(e) => {
                        let text = format!("read error: {e}");
                        tx.send_modify(|s| {
                            s.ended = Some((Instant::now(), false));
                            s.log.push((Instant::now(), Dir::Event, text.into_bytes()));
                        });
                        break;
                    }
                }
            }
        });
        Ok(Conn {
            t0,
            opts,
            wr,
            rx,
            reader,
            origin: None,
            write_ends: Vec::new(),
            out_log: Vec::new(),
            write_error: None,
            first_write_at: None,
            bytes_written: 0,
            eof_sent: false,
            reset: false,
            stopped: false,
            write_reset: false,
        })
    }

    /// Sends `steps`; stops early once the server answered (unless `keep_writing`) or ended
    /// the connection, or a write fails.
    pub async fn send(&mut self, steps: &[Step]) {
        // A client that keeps writing (E8, Q12) stops only when a write fails.
        let keep_writing = self.opts.keep_writing;
        let stop =
            move |s: &ReadState| !keep_writing && (s.ended.is_some() || s.final_at.is_some());
        let mut rx = self.rx.clone();
        for step in steps {
            if self.stopped || self.reset || stop(&rx.borrow()) {
                break;
            }
            match step {
                Step::Write(bytes) => {
                    let started = Instant::now();
                    self.first_write_at.get_or_insert(started - self.t0);
                    let stall = self.opts.wait.max(Duration::from_secs(5));
                    let write = tokio::time::timeout(stall, self.wr.write_all(bytes));
                    // `wait_for` also ends when the reader is gone (after EOF); only a true
                    // predicate means "stop".
                    let answered = async {
                        if keep_writing || rx.wait_for(|s| stop(s)).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        res = write => match res {
                            Ok(Ok(())) => {
                                self.bytes_written += bytes.len();
                                self.out_log.push((started, Dir::Out, bytes.clone()));
                                self.write_ends.push(Instant::now());
                            }
                            Ok(Err(e)) => {
                                self.out_log.push((started, Dir::Out, bytes.clone()));
                                self.out_log.push((Instant::now(), Dir::Event, format!("write error: {e}").into_bytes()));
                                self.write_error = Some(format!("write failed: {e}"));
                                self.write_reset |= matches!(
                                    e.kind(),
                                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                                );
                                self.stopped = true;
                            }
                            Err(_) => {
                                self.write_error = Some("write stalled: the peer stopped reading".to_owned());
                                self.out_log.push((Instant::now(), Dir::Event, b"write stalled".to_vec()));
                                self.stopped = true;
                            }
                        },
                        () = answered => {
                            self.out_log.push((started, Dir::Out, bytes.clone()));
                            self.out_log.push((Instant::now(), Dir::Event, b"write abandoned: the server answered".to_vec()));
                            self.stopped = true;
                        }
                    }
                }
                Step::Pause(d) => {
                    let answered = async {
                        if keep_writing || rx.wait_for(|s| stop(s)).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        () = tokio::time::sleep(*d) => {}
                        () = answered => self.stopped = true,
                    }
                }
                Step::Eof => {
                    let _ = self.wr.shutdown().await;
                    self.eof_sent = true;
                    self.out_log
                        .push((Instant::now(), Dir::Event, b"client EOF".to_vec()));
                    self.write_ends.push(Instant::now());
                }
                Step::Rst => {
                    let sock = socket2::SockRef::from(self.wr.as_ref());
                    let _ = sock.set_linger(Some(Duration::ZERO));
                    self.out_log
                        .push((Instant::now(), Dir::Event, b"client RST".to_vec()));
                    self.reset = true;
                }
                Step::Mark => self.origin = Some(Instant::now()),
                Step::AwaitContinue => {
                    let _ = tokio::time::timeout(
                        self.opts.wait,
                        rx.wait_for(|s| {
                            s.continue_at.is_some() || s.final_at.is_some() || s.ended.is_some()
                        }),
                    )
                    .await;
                }
            }
        }
    }

    /// Whether a final response arrived within `timeout`.
    pub async fn wait_status(&self, timeout: Duration) -> bool {
        let mut rx = self.rx.clone();
        let answered = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.final_at.is_some() || s.ended.is_some()),
        )
        .await
        .is_ok();
        answered
    }

    /// Waits for the outcome: the response and the end, each up to the wait. A connection
    /// still open without a response is recorded as `open`, then half-closed to see what the
    /// server does (logged only).
    pub async fn finish(self) -> ConnResult {
        let Conn {
            t0,
            opts,
            mut wr,
            rx,
            reader,
            origin,
            write_ends,
            out_log,
            write_error,
            first_write_at,
            bytes_written,
            eof_sent,
            reset,
            write_reset,
            ..
        } = self;
        let last_write = write_ends.last().copied().unwrap_or(t0);
        let (s, after_eof, forced_end) = if reset {
            // Dropping both halves with linger 0 sends the reset.
            drop(wr);
            reader.abort();
            let _ = reader.await;
            let s = rx.borrow().clone();
            (s, None, None)
        } else {
            let mut after_eof = None;
            let mut forced_end = None;
            let mut snapshot = None;
            let mut rx_e = rx.clone();
            let responded = tokio::time::timeout(
                opts.wait,
                rx_e.wait_for(|s| s.complete.is_some() || s.ended.is_some() || s.garbage.is_some()),
            )
            .await
            .is_ok();
            if responded {
                let _ = tokio::time::timeout(opts.wait, rx_e.wait_for(|s| s.ended.is_some())).await;
            } else if !eof_sent && !opts.after_eof {
                forced_end = Some(End::Open);
                snapshot = Some(rx.borrow().clone());
            } else if !eof_sent {
                let before = rx.borrow().clone();
                let _ = wr.shutdown().await;
                let reacted =
                    tokio::time::timeout(AFTER_EOF_WAIT, rx_e.wait_for(|s| s.ended.is_some()))
                        .await
                        .is_ok();
                let s = rx.borrow().clone();
                let got = s.bytes.len() - before.bytes.len();
                let status = s.complete.as_ref().map_or_else(
                    || "no response".to_owned(),
                    |(r, _)| format!("status {}", r.status),
                );
                after_eof = Some(if reacted {
                    format!("{status}, {got} bytes, then the end")
                } else {
                    format!("{status}, still open")
                });
                forced_end = Some(End::Open);
                snapshot = Some(before);
            }
            reader.abort();
            let s = snapshot.unwrap_or_else(|| rx.borrow().clone());
            drop(wr);
            // A client that kept writing learns of a reset from its writes, after the reader
            // saw the FIN: that is a reset all the same (M8).
            if opts.keep_writing && write_reset && forced_end.is_none() {
                forced_end = Some(if s.complete.is_some() {
                    End::RstAfterStatus
                } else {
                    End::Rst
                });
            }
            (s, after_eof, forced_end)
        };
        finish(
            t0,
            s,
            out_log,
            origin,
            &write_ends,
            last_write,
            write_error,
            first_write_at,
            bytes_written,
            after_eof,
            forced_end,
        )
    }
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn finish(
    t0: Instant,
    s: ReadState,
    out_log: Vec<(Instant, Dir, Vec<u8>)>,
    origin: Option<Instant>,
    write_ends: &[Instant],
    last_write: Instant,
    write_error: Option<String>,
    first_write_at: Option<Duration>,
    bytes_written: usize,
    after_eof: Option<String>,
    forced_end: Option<End>,
) -> ConnResult {
    let response = s.complete.as_ref().map(|(r, _)| r.clone());
    let extra = s
        .complete
        .as_ref()
        .map_or(0, |(_, used)| s.bytes.len().saturating_sub(*used));
    let end = forced_end.unwrap_or(match (s.ended, response.is_some()) {
        (Some((_, true)), true) => End::Fin,
        (Some((_, true)), false) => End::Silent,
        (Some((_, false)), true) => End::RstAfterStatus,
        (Some((_, false)), false) => End::Rst,
        (None, _) => End::Open,
    });
    // The origin of `within_ms`: `mark`, else the last write that ended before the event.
    let event_at = s.final_at.or(s.ended.map(|(t, _)| t));
    let status_ms = event_at.map(|at| {
        let from = origin.unwrap_or_else(|| {
            write_ends
                .iter()
                .copied()
                .filter(|w| *w <= at)
                .max()
                .unwrap_or(t0)
        });
        at.saturating_duration_since(from).as_millis() as u64
    });
    let fin_ms = match s.ended {
        Some((at, true)) => Some(at.saturating_duration_since(last_write).as_millis() as u64),
        _ => None,
    };
    let continue_ms = s.continue_at.map(|at| {
        let from = write_ends
            .iter()
            .copied()
            .filter(|w| *w <= at)
            .max()
            .unwrap_or(t0);
        at.saturating_duration_since(from).as_millis() as u64
    });
    let status_since_first_write_ms = match (s.final_at, first_write_at) {
        (Some(at), Some(first)) => Some((at - t0).saturating_sub(first).as_secs_f64() * 1000.0),
        _ => None,
    };
    let mut log: Vec<(Instant, Dir, Vec<u8>)> = out_log;
    log.extend(s.log);
    log.sort_by_key(|(at, _, _)| *at);
    ConnResult {
        response,
        end,
        status_ms,
        fin_ms,
        continue_ms,
        extra,
        garbage: s.garbage,
        write_error,
        status_since_first_write_ms,
        after_eof,
        log: log
            .into_iter()
            .map(|(at, dir, bytes)| LogEntry {
                at: at.saturating_duration_since(t0),
                dir,
                bytes,
            })
            .collect(),
        bytes_written,
    }
}

fn failed_connect(t0: Instant, why: &str) -> ConnResult {
    ConnResult {
        response: None,
        end: End::Rst,
        status_ms: None,
        fin_ms: None,
        continue_ms: None,
        extra: 0,
        garbage: Some(why.to_owned()),
        write_error: None,
        status_since_first_write_ms: None,
        after_eof: None,
        log: vec![LogEntry {
            at: t0.elapsed(),
            dir: Dir::Event,
            bytes: why.as_bytes().to_vec(),
        }],
        bytes_written: 0,
    }
}

/// Parses interim and final responses out of what has arrived so far.
fn parse_progress(s: &mut ReadState, now: Instant) {
    if s.complete.is_some() || s.garbage.is_some() {
        return;
    }
    let mut pos = 0;
    loop {
        let buf = &s.bytes[pos..];
        if buf.is_empty() {
            return;
        }
        if !b"HTTP/1.".starts_with(&buf[..buf.len().min(7)]) {
            s.garbage = Some(format!(
                "{:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(40)])
            ));
            return;
        }
        let Some(head_len) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
            if buf.len() > 64 * 1024 {
                s.garbage = Some("response head over 64 KiB".to_owned());
            }
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_len - 4]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let Some(status) = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
        else {
            s.garbage = Some(format!("bad status line {status_line:?}"));
            return;
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        if (100..200).contains(&status) {
            if status == 100 {
                s.continue_at.get_or_insert(now);
            }
            pos += head_len;
            continue;
        }
        s.final_at.get_or_insert(now);
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        match len {
            Some(len) if buf.len() >= head_len + len => {
                let body = buf[head_len..head_len + len].to_vec();
                s.complete = Some((
                    Response {
                        status,
                        headers,
                        body,
                    },
                    pos + head_len + len,
                ));
            }
            Some(_) => {}
            None => {
                // No Content-Length: the body runs to EOF. Report the head now.
                s.complete = Some((
                    Response {
                        status,
                        headers,
                        body: buf[head_len..].to_vec(),
                    },
                    s.bytes.len(),
                ));
            }
        }
        return;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How long to watch a connection after the runner half-closed it (for the log only).
const AFTER_EOF_WAIT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_interim_and_extra_bytes() {
        let mut s = ReadState {
            bytes: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nokHTTP".to_vec(),
            ..ReadState::default()
        };
        parse_progress(&mut s, Instant::now());
        assert!(s.continue_at.is_some());
        let (r, used) = s.complete.clone().unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("connection")),
            (200, &b"ok"[..], Some("close"))
        );
        assert_eq!(s.bytes.len() - used, 4);
        let mut g = ReadState {
            bytes: b"garbage".to_vec(),
            ..ReadState::default()
        };
        parse_progress(&mut g, Instant::now());
        assert!(g.garbage.is_some());
    }
}
