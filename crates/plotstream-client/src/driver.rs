//! The driver task: one loop per client that owns the socket and the `Writer`.
//!
//! Each turn: make sure a connection exists (reconnecting with backoff), move the writer's
//! bytes to the socket, then wait for a command, the socket (the server's response) or the
//! heartbeat deadline, whichever comes first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plotstream_proto::encode::Num;
use plotstream_proto::writer::{should_reconnect, Writer, WriterConfig, WriterEvent};
use plotstream_proto::{Status, Token, Update};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{lock, ClientEvent, Error, Options, Stats, Target};

/// What the handle asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Line(Line),
    Heartbeat,
    Close(oneshot::Sender<Result<Option<Status>, Error>>),
}

/// One data line, kept for resending.
#[derive(Debug, Clone)]
pub(crate) enum Line {
    Point(Num, Num),
    Update(Box<Update>),
    /// The caller's own bytes, without the LF.
    Raw(Bytes),
}

/// How a connection ended: the server's status and the points it acknowledged (both read by
/// the proto `Writer`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    status: Option<Status>,
    accepted: Option<u64>,
}

/// State the handle reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Mutex<Stats>,
    /// Set when the driver stopped for good: what later calls fail with.
    pub(crate) ended: Mutex<Option<Error>>,
}

#[derive(Debug)]
pub(crate) struct Driver {
    target: Target,
    token: Token,
    options: Options,
    rx: mpsc::Receiver<Command>,
    shared: std::sync::Arc<Shared>,
    events: broadcast::Sender<ClientEvent>,
    origin: Instant,
    /// Consecutive reconnect attempts since the last healthy connection.
    attempt: u32,
    /// Lines a `200` did not accept, to write first on the next connection.
    replay: VecDeque<Line>,
}

/// One open connection.
pub(crate) struct Conn {
    stream: TcpStream,
    writer: Writer,
    /// The last `Options::replay` lines written on this connection.
    sent: VecDeque<Line>,
    n_sent: u64,
    opened: Instant,
    out: Vec<u8>,
}

impl Driver {
    pub(crate) fn new(
        target: Target,
        token: Token,
        options: Options,
        rx: mpsc::Receiver<Command>,
        shared: std::sync::Arc<Shared>,
        events: broadcast::Sender<ClientEvent>,
    ) -> Driver {
        Driver {
            target,
            token,
            options,
            rx,
            shared,
            events,
            origin: Instant::now(),
            attempt: 0,
            replay: VecDeque::new(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn emit(&self, event: ClientEvent) {
        // No receiver is fine: events are optional, the counters are not.
        let _ = self.events.send(event);
    }

    fn stats(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.shared.stats));
    }

    /// Wraps a connected socket: head queued, kept lines replayed.
    pub(crate) fn open(&mut self, stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        let mut config =
            WriterConfig::new(self.options.flavour, self.target.host.clone(), self.token);
        config.heartbeat = self.options.heartbeat;
        let now = self.now();
        let mut writer = Writer::new(config, now);
        writer.handle_connected(now);
        let mut n_connects = 0;
        self.stats(|s| {
            s.n_connects += 1;
            n_connects = s.n_connects;
        });
        self.emit(ClientEvent::Connected { n_connects });
        let mut conn = Conn {
            stream,
            writer,
            sent: VecDeque::new(),
            n_sent: 0,
            opened: Instant::now(),
            out: Vec::new(),
        };
        let n_replayed = self.replay.len() as u64;
        while let Some(line) = self.replay.pop_front() {
            self.write_line(&mut conn, line);
        }
        if n_replayed > 0 {
            self.stats(|s| s.n_points_replayed += n_replayed);
            self.emit(ClientEvent::Replayed {
                n_points: n_replayed,
            });
        }
        conn
    }

    fn write_line(&self, conn: &mut Conn, line: Line) {
        let now = self.now();
        match &line {
            Line::Point(x, y) => conn.writer.write_point(now, *x, *y),
            Line::Update(u) => conn.writer.write_update(now, u, None),
            Line::Raw(line) => conn.writer.write_raw_line(now, line),
        }
        conn.n_sent += 1;
        self.stats(|s| s.n_points += 1);
        if self.options.replay > 0 {
            if conn.sent.len() == self.options.replay {
                conn.sent.pop_front();
            }
            conn.sent.push_back(line);
        }
    }

    /// Waits out the backoff and connects, until a connection opens (`Some`) or the retries
    /// run out (`None`, after `finish`).
    async fn reconnect(&mut self) -> Option<Conn> {
        loop {
            self.attempt += 1;
            if self
                .options
                .backoff
                .max_retries
                .is_some_and(|max| self.attempt > max)
            {
                let last = lock(&self.shared.stats).last_status;
                self.finish(Error::Ended(last), last);
                return None;
            }
            let delay = self.options.backoff.delay(self.attempt);
            self.emit(ClientEvent::Reconnecting {
                attempt: self.attempt,
                delay,
            });
            tokio::time::sleep(delay).await;
            if self.rx.is_closed() && self.rx.is_empty() {
                return None; // The handle is gone and nothing is left to deliver.
            }
            match connect(&self.target.addr, self.options.connect_timeout).await {
                Ok(stream) => {
                    self.stats(|s| s.n_reconnects += 1);
                    return Some(self.open(stream));
                }
                Err(error) => {
                    self.stats(|s| s.n_connect_failures += 1);
                    self.emit(ClientEvent::ConnectFailed {
                        attempt: self.attempt,
                        error,
                    });
                }
            }
        }
    }

    /// Accounts for a connection that ended with `status`, the server having acknowledged
    /// `accepted` points (only a `200` says); returns whether to reconnect.
    fn end(&mut self, mut conn: Conn, Ended { status, accepted }: Ended) -> bool {
        self.stats(|s| {
            s.last_status = status;
            s.n_points_acknowledged += accepted.unwrap_or(0);
        });
        self.emit(ClientEvent::Disconnected {
            status,
            n_points_sent: conn.n_sent,
            n_points_accepted: accepted,
        });
        if let Some(n) = accepted {
            let unaccepted = conn.n_sent.saturating_sub(n);
            let mut kept = 0;
            while kept < unaccepted {
                let Some(line) = conn.sent.pop_back() else {
                    break;
                };
                self.replay.push_front(line);
                kept += 1;
            }
            if kept < unaccepted {
                let lost = unaccepted - kept;
                self.stats(|s| s.n_points_lost += lost);
                self.emit(ClientEvent::Lost { n_points: lost });
            }
        }
        let healthy =
            conn.opened.elapsed() >= self.options.backoff.max || accepted.is_some_and(|n| n > 0);
        if healthy {
            self.attempt = 0;
        }
        should_reconnect(status)
    }

    /// Stops for good: later calls fail with `error`.
    fn finish(&mut self, error: Error, status: Option<Status>) {
        *lock(&self.shared.ended) = Some(error);
        self.rx.close();
        self.emit(ClientEvent::Ended { status });
    }

    /// Sends the close sequence and reads the response.
    async fn close_conn(&self, conn: &mut Conn) -> Result<Ended, Error> {
        conn.writer.close(self.now());
        let _ = conn.flush().await;
        let read = async {
            loop {
                if let Some(r) = conn.read(self.origin).await {
                    return r;
                }
            }
        };
        tokio::time::timeout(self.options.close_timeout, read)
            .await
            .map_err(|_| Error::CloseTimeout)
    }
}

/// The driver loop.
pub(crate) async fn run(mut d: Driver, first: Conn) {
    let mut conn = Some(first);
    let mut closing: Option<oneshot::Sender<Result<Option<Status>, Error>>> = None;
    loop {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match d.reconnect().await {
                Some(c) => c,
                None => {
                    if let Some(reply) = closing.take() {
                        let _ = reply.send(Err(lock(&d.shared.ended)
                            .clone()
                            .unwrap_or(Error::Ended(None))));
                    }
                    return;
                }
            },
        };
        if let Some(reply) = closing.take() {
            match d.close_conn(&mut c).await {
                Err(e) => {
                    d.finish(e.clone(), None);
                    let _ = reply.send(Err(e));
                }
                Ok(ended) => {
                    let status = ended.status;
                    let again = d.end(c, ended);
                    if again && !d.replay.is_empty() {
                        // Some lines were not accepted: deliver them, then close again.
                        closing = Some(reply);
                        continue;
                    }
                    d.finish(Error::Ended(status), status);
                    let _ = reply.send(Ok(status));
                }
            }
            return;
        }
        if c.flush().await.is_err() {
            let ended = c.drain_after_failure(d.origin);
            if !d.end(c, ended) {
                d.finish(Error::Ended(ended.status), ended.status);
                return;
            }
            continue;
        }
        let deadline = c.writer.poll_timeout().map(|t| d.origin + t);
        let wake = tokio::select! {
            cmd = d.rx.recv() => Wake::Command(cmd),
            res = c.stream.readable() => Wake::Readable(res.is_ok()),
            () = sleep_until(deadline) => Wake::Timer,
        };
        match wake {
            Wake::Command(None) => {
                // The handle was dropped: close without anyone waiting for the answer.
                let _ = d.close_conn(&mut c).await;
                return;
            }
            Wake::Command(Some(first)) => {
                let mut next = Some(first);
                let mut n_batched = 0;
                while let Some(cmd) = next.take() {
                    match cmd {
                        Command::Line(line) => d.write_line(&mut c, line),
                        Command::Heartbeat => {
                            c.writer.heartbeat(d.now());
                            d.stats(|s| s.n_heartbeats += 1);
                            d.emit(ClientEvent::Heartbeat);
                        }
                        Command::Close(reply) => {
                            closing = Some(reply);
                            break;
                        }
                    }
                    n_batched += 1;
                    if n_batched < BATCH {
                        next = d.rx.try_recv().ok();
                    }
                }
                if closing.is_some() {
                    // Flush what was queued before the close on this connection first.
                    if c.flush().await.is_err() {
                        let ended = c.drain_after_failure(d.origin);
                        if !d.end(c, ended) {
                            d.finish(Error::Ended(ended.status), ended.status);
                            if let Some(reply) = closing.take() {
                                let _ = reply.send(Ok(ended.status));
                            }
                            return;
                        }
                        continue;
                    }
                }
                conn = Some(c);
            }
            Wake::Readable(ok) => {
                let result = if ok {
                    c.read(d.origin).await
                } else {
                    c.writer.handle_eof(d.now());
                    c.poll_response()
                };
                match result {
                    None => conn = Some(c),
                    Some(ended) => {
                        if !d.end(c, ended) {
                            d.finish(Error::Ended(ended.status), ended.status);
                            return;
                        }
                    }
                }
            }
            Wake::Timer => {
                c.writer.handle_timeout(d.now());
                let before = c.out.len();
                c.writer.poll_transmit(&mut c.out);
                if c.out.len() > before {
                    d.stats(|s| s.n_heartbeats += 1);
                    d.emit(ClientEvent::Heartbeat);
                }
                conn = Some(c);
            }
        }
    }
}

enum Wake {
    Command(Option<Command>),
    Readable(bool),
    Timer,
}

impl Conn {
    async fn flush(&mut self) -> std::io::Result<()> {
        self.writer.poll_transmit(&mut self.out);
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads what is there; the response once it is complete (or the socket ended).
    async fn read(&mut self, origin: Instant) -> Option<Ended> {
        let mut buf = [0u8; 4096];
        match self.stream.readable().await {
            Ok(()) => match self.stream.try_read(&mut buf) {
                Ok(0) => self.writer.handle_eof(origin.elapsed()),
                Ok(n) => self.writer.handle_input(origin.elapsed(), &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => self.writer.handle_eof(origin.elapsed()),
            },
            Err(_) => self.writer.handle_eof(origin.elapsed()),
        }
        self.poll_response()
    }

    /// After a failed write: whatever response already arrived, else none.
    fn drain_after_failure(&mut self, origin: Instant) -> Ended {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.stream.try_read(&mut buf) {
            if n == 0 {
                break;
            }
            self.writer.handle_input(origin.elapsed(), &buf[..n]);
        }
        self.writer.handle_eof(origin.elapsed());
        self.poll_response().unwrap_or(Ended {
            status: None,
            accepted: None,
        })
    }

    fn poll_response(&mut self) -> Option<Ended> {
        self.writer
            .poll_event()
            .map(|WriterEvent::Response { status, points }| Ended {
                status,
                accepted: points,
            })
    }
}

/// Connects with a timeout; the error as text.
pub(crate) async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: timed out after {timeout:?}")),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Commands handled per turn before the bytes go out.
const BATCH: usize = 256;
