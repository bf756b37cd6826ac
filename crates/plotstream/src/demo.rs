//! `plotstream demo` and `plotstream send`: writers built on `plotstream_proto::writer`, over
//! plain tokio sockets, reconnecting after the server ends a stream.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use plotstream_proto::encode::Flavour;
use plotstream_proto::json::Str;
use plotstream_proto::writer::{should_reconnect, Writer, WriterConfig, WriterEvent};
use plotstream_proto::{Token, Update, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One open writer connection.
struct Conn {
    stream: TcpStream,
    writer: Writer,
    origin: Instant,
}

impl Conn {
    async fn open(host: &str, token: &Token, heartbeat: Duration, origin: Instant) -> Result<Conn> {
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        let mut cfg = WriterConfig::new(Flavour::Python, host, *token);
        cfg.heartbeat = Some(heartbeat);
        let now = origin.elapsed();
        let mut writer = Writer::new(cfg, now);
        writer.handle_connected(now);
        let mut conn = Conn {
            stream,
            writer,
            origin,
        };
        conn.flush().await?;
        Ok(conn)
    }

    async fn flush(&mut self) -> Result<()> {
        let mut out = Vec::new();
        self.writer.poll_transmit(&mut out);
        if !out.is_empty() {
            self.stream.write_all(&out).await?;
        }
        Ok(())
    }

    /// Non-blocking check for a response: the server ended the stream.
    fn ended(&mut self) -> Option<Option<plotstream_proto::Status>> {
        let mut buf = [0u8; 1024];
        let now = self.origin.elapsed();
        match self.stream.try_read(&mut buf) {
            Ok(0) => self.writer.handle_eof(now),
            Ok(n) => self.writer.handle_input(now, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.writer.handle_eof(now),
        }
        self.writer
            .poll_event()
            .map(|WriterEvent::Response { status, .. }| status)
    }

    async fn close(mut self) -> Result<Option<plotstream_proto::Status>> {
        let now = self.origin.elapsed();
        self.writer.close(now);
        self.flush().await?;
        let mut buf = [0u8; 1024];
        loop {
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf)).await??;
            let now = self.origin.elapsed();
            if n == 0 {
                self.writer.handle_eof(now);
            } else {
                self.writer.handle_input(now, &buf[..n]);
            }
            if let Some(WriterEvent::Response { status, .. }) = self.writer.poll_event() {
                return Ok(status);
            }
        }
    }
}

fn host_of(target: &str) -> Result<String> {
    let rest = target
        .strip_prefix("http://")
        .context("--target must start with http://")?;
    let host = rest.split('/').next().unwrap_or(rest);
    Ok(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    })
}

fn parse_token(token: &str) -> Result<Token> {
    match Token::parse(token.as_bytes()) {
        Some(t) => Ok(t),
        None => bail!("invalid token {token:?}: use 1 to 64 characters of [A-Za-z0-9_-]"),
    }
}

/// Streams the tutorial's signal `cos(5·i/50)·cos(i/50) + noise` with x = wall-clock time, one
/// point per `interval`, forever (until the process stops). `quiet` suppresses per-reconnect
/// messages on stderr.
pub async fn demo(target: &str, token: &str, interval: Duration, quiet: Option<()>) -> Result<()> {
    let host = host_of(target)?;
    let token = parse_token(token)?;
    let origin = Instant::now();
    let mut rng = Rng::seeded();
    let mut ticker = tokio::time::interval(interval);
    // After a stall, go on at the normal pace rather than bursting points with one timestamp.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(100);
    let mut i: u64 = 0;
    loop {
        ticker.tick().await;
        if conn.is_none() {
            match Conn::open(&host, &token, Duration::from_secs(30), origin).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    if quiet.is_none() {
                        eprintln!("demo: {e:#}; retrying in {backoff:?}");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        #[allow(clippy::cast_precision_loss)] // i stays far below 2^52
        let t = i as f64;
        let y = (5.0 * t / 50.0).cos() * (t / 50.0).cos() + 0.1 * rng.normal();
        let x = wall_clock();
        let update = Update {
            token: None,
            data: plotstream_proto::update::smallvec![
                (Str::from_static("x"), Value::Str(Str::from(x))),
                (Str::from_static("y"), Value::Number(y)),
            ],
            line: Vec::new(),
            layout: None,
        };
        c.writer.write_update(origin.elapsed(), &update, None);
        let failed = c.flush().await.is_err();
        let ended = c.ended();
        if failed || ended.is_some() {
            if ended.flatten().is_some_and(|s| !should_reconnect(Some(s))) {
                bail!(
                    "the server ended the demo stream with {:?}",
                    ended.flatten()
                );
            }
            conn = None;
        }
        i += 1;
    }
}

/// Forwards stdin's lines to `token`, heartbeating while stdin is quiet; prints the final status.
pub async fn send(target: &str, token: &str, heartbeat: Duration) -> Result<()> {
    let host = host_of(target)?;
    let token = parse_token(token)?;
    let origin = Instant::now();
    let mut conn = Conn::open(&host, &token, heartbeat, origin).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let deadline = conn.writer.poll_timeout().map(|d| origin + d);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => {
                    let line = line.trim_end_matches('\r');
                    if line.is_empty() { continue; }
                    conn.writer.write_raw_line(origin.elapsed(), line.as_bytes());
                }
                None => break,
            },
            () = sleep => conn.writer.handle_timeout(origin.elapsed()),
        }
        conn.flush().await?;
        if let Some(status) = conn.ended() {
            bail!(
                "the server ended the stream early: {}",
                status.map_or("no response".to_owned(), |s| s.to_string())
            );
        }
    }
    let n = conn.writer.n_points();
    match conn.close().await? {
        Some(s) if s.code() == 200 => {
            eprintln!("sent {n} lines: {s}");
            Ok(())
        }
        other => bail!(
            "stream ended with {}",
            other.map_or("no response".to_owned(), |s| s.to_string())
        ),
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC, the tutorial's x format.
fn wall_clock() -> String {
    let ts = plotstream_proto::update::Timestamp::try_from(SystemTime::now())
        .unwrap_or(plotstream_proto::update::Timestamp::UNIX_EPOCH);
    plotstream_proto::update::format_offset(0.0, &plotstream_proto::update::TimeZone::UTC, ts)
        .unwrap_or_default()
}

/// A small xorshift generator with a Box–Muller normal: demo noise needs no crypto.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        Rng(u64::from_le_bytes(b) | 1)
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        #[allow(clippy::cast_precision_loss)]
        let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        u
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
