//! One writer task per stream: connect (at its ramp slot), send the head, wait for the common
//! start, then write every chunk when it is due, in the chosen client's bytes; close with the
//! client's close sequence and read the final status.
//!
//! The bytes (head, chunks, heartbeats, close) and the reading of the response are the proto
//! [`Writer`]'s; this task schedules, moves bytes and counts. A task that falls behind writes
//! everything due in one go (up to [`MAX_WRITE`] bytes), and each chunk's latency is counted
//! from its intended time, so lateness is never hidden. If the server ends the stream mid-run,
//! the status is counted and the task reconnects where the real clients would
//! ([`should_reconnect`]), with capped backoff.

use std::sync::Arc;
use std::time::Duration;

use plotstream_client::Backoff;
use plotstream_proto::encode::Num;
use plotstream_proto::writer::{should_reconnect, Writer, WriterConfig, WriterEvent};
use plotstream_proto::Status;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ctx::Ctx;
use super::report::Counters;
use super::schedule::value;

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
    let mut latencies = ctx.counters.send_latency.local();
    // Grows to what the rate needs; 10 000 slow streams should not hold 10 000 big buffers.
    // It trades places with the writer's own buffer at each write, so nothing is copied.
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk_idx: u64 = 0;
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
            let at = conn.at(now);
            while chunk_idx < due && conn.writer.n_queued() < MAX_WRITE {
                conn.writer
                    .write_points(at, points(stream_idx, chunk_idx, k));
                chunk_idx += 1;
            }
            buf.clear();
            conn.writer.poll_transmit(&mut buf);
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
            out.sent_until = Some(done);
            if written.is_err() {
                let WriterEvent::Response { status, .. } = conn.read_end().await;
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
        let heartbeat_at = conn
            .writer
            .poll_timeout()
            .map_or(send_end, |t| conn.origin + t);
        let wake = next_due.min(heartbeat_at).min(send_end);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                conn.writer.handle_timeout(conn.at(Instant::now()));
                buf.clear();
                conn.writer.poll_transmit(&mut buf);
                if !buf.is_empty() && conn.stream.write_all(&buf).await.is_err() {
                    let WriterEvent::Response { status, .. } = conn.read_end().await;
                    if !recover(&ctx, stream_idx, &mut conn, status, &mut backoff).await {
                        return out;
                    }
                }
            }
            res = conn.stream.readable() => {
                // Servers say nothing until the final response: this is the end of the stream.
                let event = if res.is_ok() { conn.read_some() } else { Some(conn.eof()) };
                if let Some(WriterEvent::Response { status, .. }) = event {
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

/// The points of chunk `chunk_idx` of stream `stream_idx`: `chunk_idx·k ..`, as `{x, y}`.
fn points(stream_idx: usize, chunk_idx: u64, k: u64) -> impl Iterator<Item = (Num, Num)> {
    let first = chunk_idx * k;
    (first..first + k).map(move |i| (point_x(i), Num::Float(value(stream_idx, i))))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A queue of timestamps: still consistent after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn point_x(i: u64) -> Num {
    // Point indices stay far below 2^63.
    Num::Int(i64::try_from(i).unwrap_or(i64::MAX))
}

/// One writer connection: the socket and the proto machine that speaks on it.
struct Conn {
    stream: TcpStream,
    writer: Writer,
    /// The writer's time origin: its `now` is the time since.
    origin: Instant,
}

impl Conn {
    fn at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    /// Reads what is there without waiting: the response once it is complete or the
    /// connection ended.
    fn read_some(&mut self) -> Option<WriterEvent> {
        let mut chunk = [0u8; 4096];
        loop {
            let now = self.at(Instant::now());
            match self.stream.try_read(&mut chunk) {
                Ok(0) => self.writer.handle_eof(now),
                Ok(n) => self.writer.handle_input(now, &chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(_) => self.writer.handle_eof(now),
            }
            if let Some(event) = self.writer.poll_event() {
                return Some(event);
            }
        }
    }

    /// The connection failed: the response as far as it arrived.
    fn eof(&mut self) -> WriterEvent {
        self.writer.handle_eof(self.at(Instant::now()));
        self.writer.poll_event().unwrap_or(NO_RESPONSE)
    }

    /// Reads until the response is complete or the connection ends (bounded).
    async fn read_end(&mut self) -> WriterEvent {
        let read = async {
            loop {
                if self.stream.readable().await.is_err() {
                    return self.eof();
                }
                if let Some(event) = self.read_some() {
                    return event;
                }
            }
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, read)
            .await
            .unwrap_or(NO_RESPONSE)
    }
}

const NO_RESPONSE: WriterEvent = WriterEvent::Response {
    status: None,
    points: None,
};

async fn open(ctx: &Ctx, stream_idx: usize) -> Result<Conn, &'static str> {
    let target = ctx.targets.writer(stream_idx);
    let connect = TcpStream::connect(&target.addr);
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
    let origin = Instant::now();
    let mut config = WriterConfig::new(ctx.flavour, target.host.clone(), ctx.tokens[stream_idx]);
    config.heartbeat = Some(HEARTBEAT);
    let mut writer = Writer::new(config, Duration::ZERO);
    writer.handle_connected(Duration::ZERO);
    // Every flavour's head goes out at connect time (node's real client sends it with the
    // first write), so the stream exists before its viewer subscribes.
    writer.send_head();
    let mut head = Vec::new();
    writer.poll_transmit(&mut head);
    let mut conn = Conn {
        stream,
        writer,
        origin,
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
                tokio::time::sleep(BACKOFF.delay(attempt + 1)).await;
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
    status: Option<Status>,
    backoff: &mut u32,
) -> bool {
    count_error(ctx, status);
    if !should_reconnect(status) {
        return false;
    }
    while *backoff < RECONNECT_ATTEMPTS {
        tokio::time::sleep(BACKOFF.delay(*backoff + 1)).await;
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
    conn.writer.close(conn.at(Instant::now()));
    let mut bytes = Vec::new();
    conn.writer.poll_transmit(&mut bytes);
    // After a failed write there may still be a response to read.
    let _ = conn.stream.write_all(&bytes).await;
    let WriterEvent::Response { status, points } = conn.read_end().await;
    out.closed_at = Some(Instant::now());
    if status == Some(Status::OK) {
        out.n_points_acked = points;
    } else {
        count_error(ctx, status);
    }
    out.final_status = status.map(Status::code);
}

/// Counts an end of stream other than the final `200` by its status code.
fn count_error(ctx: &Ctx, status: Option<Status>) {
    ctx.counters
        .error(status.map_or_else(|| "no_response".to_owned(), |s| s.code().to_string()));
}

/// Reconnect delays: 100 ms, doubling, at most 2 s.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(2),
    max_retries: None,
};
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
    use plotstream_proto::encode::Flavour;
    use plotstream_proto::Token;

    fn chunk(flavour: Flavour, chunk_idx: u64, k: u64) -> String {
        let token = Token::parse(b"abcdef1234").unwrap();
        let mut w = Writer::new(WriterConfig::new(flavour, "h", token), Duration::ZERO);
        w.handle_connected(Duration::ZERO);
        let mut out = Vec::new();
        w.poll_transmit(&mut out);
        out.clear();
        w.write_points(Duration::ZERO, points(0, chunk_idx, k));
        w.poll_transmit(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn chunks_hold_consecutive_points() {
        let one = chunk(Flavour::Raw, 5, 1);
        let (size, line) = one.split_once("\r\n").unwrap_or_default();
        assert!(
            line.starts_with("{\"x\":5,") && line.ends_with("}\n\r\n"),
            "{one}"
        );
        assert_eq!(usize::from_str_radix(size, 16).ok(), Some(line.len() - 2));
        let text = chunk(Flavour::Python, 2, 3);
        let xs: Vec<&str> = text.matches("{\"x\": ").collect();
        assert_eq!(xs.len(), 3);
        assert!(
            text.contains("{\"x\": 6,") && text.contains("{\"x\": 8,"),
            "{text}"
        );
    }

    #[test]
    fn reconnects_back_off_from_100ms_to_2s() {
        let delays: Vec<u128> = (1..=7).map(|n| BACKOFF.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
