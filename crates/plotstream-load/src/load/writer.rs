//! One writer task per stream: connect (at its ramp slot), send the head, wait for the common
//! start, then write every chunk when it is due, in the chosen client's bytes; close with the
//! client's close sequence and read the final status.
//!
//! A task that falls behind writes everything due in one go (up to [`MAX_WRITE`] bytes), and
//! each chunk's latency is counted from its intended time, so lateness is never hidden. If the
//! server ends the stream mid-run, the status is counted and the task reconnects where the
//! real clients would ([`should_reconnect`]), with capped backoff.

use std::sync::Arc;
use std::time::Duration;

use plotstream_proto::encode::{self, ChunkBatch, Flavour, Num};
use plotstream_proto::writer::final_response;
use plotstream_proto::writer::should_reconnect;
use plotstream_proto::Status;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::report::Counters;
use super::schedule::value;
use super::Ctx;

/// What one writer did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Points written to sockets (the verifier expects x = 0..n_points_sent).
    pub n_points_sent: u64,
    /// The status of the final close, if one arrived.
    pub final_status: Option<u16>,
    /// True once the first connection opened.
    pub connected: bool,
    /// When the last data write completed.
    pub sent_until: Option<Instant>,
    /// Points the final `200` body acknowledged (`"points":N`), when it says.
    pub n_points_acked: Option<u64>,
    /// When the final response arrived.
    pub closed_at: Option<Instant>,
}

/// Runs stream `stream_idx`: connects at `connect_at`, reports on `opened` (true once the head
/// is written, false if it never connects), then follows the schedule.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    stream_idx: usize,
    connect_at: Instant,
    opened: oneshot::Sender<bool>,
) -> Outcome {
    let mut out = Outcome::default();
    tokio::time::sleep_until(connect_at).await;
    let mut conn = match connect_with_retries(&ctx, stream_idx).await {
        Some(c) => c,
        None => {
            let _ = opened.send(false);
            return out;
        }
    };
    out.connected = true;
    Counters::add(&ctx.counters.streams_connected, 1);
    let _ = opened.send(true);

    let mut stop = ctx.stop.clone();
    let Some(start) = ctx.wait_start().await else {
        close(&ctx, &mut conn, &mut out).await;
        return out;
    };
    let schedule = &ctx.schedule;
    let k = schedule.points_per_chunk;
    let n_chunks = schedule.n_chunks(stream_idx);
    let send_end = if schedule.is_open_loop() {
        start + schedule.duration + LATE_CUTOFF
    } else {
        start + schedule.duration
    };
    let token = (ctx.flavour == Flavour::Arduino).then(|| &ctx.tokens[stream_idx]);
    let mut latencies = ctx.counters.send_latency.local();
    // Grows to what the rate needs; 10 000 slow streams should not hold 10 000 big buffers.
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk_idx: u64 = 0;
    let mut last_write = Instant::now();
    let mut backoff = 0u32;
    'run: loop {
        if *stop.borrow() {
            break;
        }
        let now = Instant::now();
        let finished = if schedule.is_idle() || !schedule.is_open_loop() {
            now >= send_end
        } else {
            chunk_idx >= n_chunks || now >= send_end
        };
        if finished {
            break;
        }
        let due = schedule.due(stream_idx, now - start);
        if due > chunk_idx {
            let first = chunk_idx;
            buf.clear();
            while chunk_idx < due && buf.len() < MAX_WRITE {
                encode_chunk(ctx.flavour, stream_idx, chunk_idx, k, token, &mut buf);
                chunk_idx += 1;
            }
            let n_points = (chunk_idx - first) * k;
            if let Some(writes) = ctx.writes.get(stream_idx) {
                // Before the write: the viewer may see the points before this task runs again.
                lock(writes).push_back((chunk_idx, Instant::now()));
            }
            let written = conn.stream.write_all(&buf).await;
            let done = Instant::now();
            // Counted as sent even if the write failed: the bytes may have reached the server,
            // and the verifier decides what arrived.
            out.n_points_sent += n_points;
            Counters::add(&ctx.counters.points_sent, n_points);
            Counters::add(&ctx.counters.bytes_sent, buf.len() as u64);
            for j in first..chunk_idx {
                let intended = if schedule.is_open_loop() {
                    start + schedule.intended(stream_idx, j)
                } else {
                    now
                };
                latencies.record(done.saturating_duration_since(intended), k);
            }
            last_write = done;
            out.sent_until = Some(done);
            if written.is_err() {
                let status = conn.read_end().await;
                if !recover(&ctx, stream_idx, &mut conn, status, &mut backoff).await {
                    return out;
                }
            }
            continue;
        }
        let next_due = if schedule.is_open_loop() && chunk_idx < n_chunks {
            start + schedule.intended(stream_idx, chunk_idx)
        } else {
            send_end
        };
        let heartbeat_at = last_write + HEARTBEAT;
        let wake = next_due.min(heartbeat_at).min(send_end);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= heartbeat_at {
                    buf.clear();
                    encode::encode_heartbeat(&mut buf);
                    if conn.stream.write_all(&buf).await.is_err() {
                        let status = conn.read_end().await;
                        if !recover(&ctx, stream_idx, &mut conn, status, &mut backoff).await {
                            return out;
                        }
                    }
                    last_write = Instant::now();
                }
            }
            res = conn.stream.readable() => {
                // Servers say nothing until the final response: this is the end of the stream.
                let status = if res.is_ok() { conn.read_some() } else { Some(None) };
                if let Some(status) = status {
                    if !recover(&ctx, stream_idx, &mut conn, status, &mut backoff).await {
                        return out;
                    }
                }
            }
            _ = stop.changed() => break 'run,
        }
    }
    drop(latencies);
    close(&ctx, &mut conn, &mut out).await;
    out
}

/// Appends chunk `chunk_idx` of stream `stream_idx`: points `chunk_idx·k ..` as one chunk.
pub fn encode_chunk(
    flavour: Flavour,
    stream_idx: usize,
    chunk_idx: u64,
    k: u64,
    token: Option<&plotstream_proto::Token>,
    out: &mut Vec<u8>,
) {
    let first = chunk_idx * k;
    if k == 1 {
        let y = Num::Float(value(stream_idx, first));
        encode::encode_point_chunk(flavour, point_x(first), y, token, out);
        return;
    }
    let mut batch = ChunkBatch::begin(out);
    for i in first..first + k {
        let y = Num::Float(value(stream_idx, i));
        batch.push_point(flavour, point_x(i), y, token, out);
    }
    batch.finish(out);
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A queue of timestamps: still consistent after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn point_x(i: u64) -> Num {
    // Point indices stay far below 2^63.
    Num::Int(i64::try_from(i).unwrap_or(i64::MAX))
}

/// One writer connection.
struct Conn {
    stream: TcpStream,
    /// Response bytes so far.
    response: Vec<u8>,
}

impl Conn {
    /// Reads what is there without waiting: `Some(status)` once the response is complete or
    /// the connection ended (`Some(None)`: no response).
    fn read_some(&mut self) -> Option<Option<u16>> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return Some(parse_status(&self.response)),
                Ok(n) => {
                    self.response.extend_from_slice(&chunk[..n]);
                    if let Some(status) = complete_status(&self.response) {
                        return Some(Some(status));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(_) => return Some(parse_status(&self.response)),
            }
        }
    }

    /// Reads until the response is complete or the connection ends (bounded).
    async fn read_end(&mut self) -> Option<u16> {
        let read = async {
            loop {
                if self.stream.readable().await.is_err() {
                    return parse_status(&self.response);
                }
                if let Some(status) = self.read_some() {
                    return status;
                }
            }
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, read)
            .await
            .unwrap_or(None)
    }
}

async fn open(ctx: &Ctx, stream_idx: usize) -> Result<Conn, &'static str> {
    let connect = TcpStream::connect(&ctx.target.addr);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        _ => return Err("connect"),
    };
    let _ = stream.set_nodelay(true);
    if !ctx.schedule.is_open_loop() && !ctx.schedule.is_idle() {
        // `--rate max`: bound what the kernel buffers per connection, so the run ends soon
        // after its duration and the acknowledged rate is what the server did in that time.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(MAX_MODE_SNDBUF);
    }
    let mut head = Vec::with_capacity(256);
    let token = (ctx.flavour != Flavour::Arduino).then(|| &ctx.tokens[stream_idx]);
    // Every flavour's head goes out at connect time (node's real client sends it with the
    // first write), so the stream exists before its viewer subscribes.
    encode::encode_head(ctx.flavour, &ctx.target.host, token, None, &mut head);
    let mut conn = Conn {
        stream,
        response: Vec::new(),
    };
    if conn.stream.write_all(&head).await.is_err() {
        return Err("io");
    }
    Counters::add(&ctx.counters.connects, 1);
    Ok(conn)
}

async fn connect_with_retries(ctx: &Ctx, stream_idx: usize) -> Option<Conn> {
    for attempt in 0..CONNECT_ATTEMPTS {
        match open(ctx, stream_idx).await {
            Ok(c) => return Some(c),
            Err(kind) => {
                ctx.counters.error(kind);
                if *ctx.stop.borrow() {
                    return None;
                }
                tokio::time::sleep(backoff_delay(attempt)).await;
            }
        }
    }
    None
}

/// The server ended the stream with `status`: count it, and reconnect if a real client would.
/// Returns false when the stream is over.
async fn recover(
    ctx: &Ctx,
    stream_idx: usize,
    conn: &mut Conn,
    status: Option<u16>,
    backoff: &mut u32,
) -> bool {
    ctx.counters
        .error(status.map_or_else(|| "no_response".to_owned(), |s| s.to_string()));
    if !should_reconnect(status.map(Status::new)) {
        return false;
    }
    while *backoff < RECONNECT_ATTEMPTS {
        tokio::time::sleep(backoff_delay(*backoff)).await;
        *backoff += 1;
        if *ctx.stop.borrow() {
            return false;
        }
        match open(ctx, stream_idx).await {
            Ok(c) => {
                *conn = c;
                Counters::add(&ctx.counters.reconnects, 1);
                return true;
            }
            Err(kind) => ctx.counters.error(kind),
        }
    }
    false
}

/// Sends the close sequence and reads the final status (and the acknowledged points of a
/// `200`); a non-200 counts as an error.
async fn close(ctx: &Ctx, conn: &mut Conn, out: &mut Outcome) {
    let mut bytes = Vec::new();
    encode::encode_close(ctx.flavour, &mut bytes);
    // After a failed write there may still be a response to read.
    let _ = conn.stream.write_all(&bytes).await;
    let status = conn.read_end().await;
    out.closed_at = Some(Instant::now());
    if status == Some(200) {
        out.n_points_acked = acknowledged_points(&conn.response);
    } else {
        ctx.counters
            .error(status.map_or_else(|| "no_response".to_owned(), |s| s.to_string()));
    }
    out.final_status = status;
}

/// `N` from a body holding `"points":N` (plotstream's `200`, the bench's hyper sink).
fn acknowledged_points(response: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"points\":";
    let at = response.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: String = response[at..]
        .iter()
        .map(|&b| char::from(b))
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The status once the response (head and Content-Length body) is complete.
fn complete_status(buf: &[u8]) -> Option<u16> {
    final_response(buf)
        .filter(|(_, _, complete)| *complete)
        .map(|(s, _, _)| s.code())
}

/// The status of a response head, complete body or not.
fn parse_status(buf: &[u8]) -> Option<u16> {
    final_response(buf).map(|(s, _, _)| s.code())
}

fn backoff_delay(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.pow(attempt.min(5))).min(Duration::from_secs(2))
}

/// `SO_SNDBUF` of `--rate max` connections.
const MAX_MODE_SNDBUF: usize = 256 * 1024;
/// Bytes encoded per socket write when behind schedule (or at `--rate max`).
pub const MAX_WRITE: usize = 64 * 1024;
/// How long past the duration a late writer may go on sending what was due.
const LATE_CUTOFF: Duration = Duration::from_secs(1);
/// A heartbeat after this long without a write (Plotly's advice: under 30 s).
const HEARTBEAT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_ATTEMPTS: u32 = 5;
const RECONNECT_ATTEMPTS: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_complete_only_with_their_body() {
        let mut r = Vec::new();
        plotstream_proto::status::encode_response(Status::OK, 3, &mut r);
        assert_eq!(complete_status(&r), Some(200));
        assert_eq!(complete_status(&r[..r.len() - 1]), None);
        assert_eq!(parse_status(&r[..r.len() - 1]), Some(200));
        assert_eq!(parse_status(b"HTTP/1.1 40"), None);
        assert_eq!(acknowledged_points(&r), Some(3));
        assert_eq!(acknowledged_points(b"HTTP/1.1 408 x\r\n\r\ntimeout"), None);
    }

    #[test]
    fn chunks_hold_consecutive_points() {
        let mut one = Vec::new();
        encode_chunk(Flavour::Raw, 0, 5, 1, None, &mut one);
        assert!(one.starts_with(b"") && one.windows(6).any(|w| w == b"{\"x\":5"));
        let mut many = Vec::new();
        encode_chunk(Flavour::Python, 0, 2, 3, None, &mut many);
        let text = String::from_utf8(many).unwrap_or_default();
        let xs: Vec<&str> = text.matches("{\"x\": ").collect();
        assert_eq!(xs.len(), 3);
        assert!(
            text.contains("{\"x\": 6,") && text.contains("{\"x\": 8,"),
            "{text}"
        );
    }
}
