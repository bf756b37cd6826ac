//! `plotstream demo` and `plotstream send`: writers built on `plotstream-client`, which parses
//! the URL, drives the proto `Writer`, heartbeats and reconnects.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use plotstream_client::{Backoff, Client, ClientEvent, Error, Options};
use plotstream_proto::encode::Flavour;
use plotstream_proto::json::Str;
use plotstream_proto::{Status, Update, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;

/// Streams the tutorial's signal `cos(5·i/50)·cos(i/50) + noise` with x = wall-clock time, one
/// point per `interval`, forever (until the process stops), reconnecting as chart_studio would.
/// `quiet` suppresses the messages about failed connects on stderr.
pub async fn demo(target: &str, token: &str, interval: Duration, quiet: bool) -> Result<()> {
    let options = Options {
        flavour: Flavour::Python,
        ..Options::default()
    };
    let backoff = options.backoff.clone();
    let report = |error: &str, delay: Duration| {
        if !quiet {
            eprintln!("demo: cannot connect to {error}; retrying in {delay:?}");
        }
    };
    let mut attempt = 0;
    let client = loop {
        match Client::connect(target, token, options.clone()).await {
            Ok(client) => break client,
            Err(Error::Connect(error)) => {
                attempt += 1;
                let delay = backoff.delay(attempt);
                report(&error, delay);
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut events = client.events();
    let mut rng = Rng::seeded();
    let mut ticker = tokio::time::interval(interval);
    // After a stall, go on at the normal pace rather than bursting points with one timestamp.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            event = events.recv() => {
                if let Ok(ClientEvent::ConnectFailed { attempt, error }) = event {
                    report(&error, backoff.delay(attempt + 1));
                }
                continue;
            }
        }
        #[allow(clippy::cast_precision_loss)] // i stays far below 2^52
        let t = i as f64;
        let y = (5.0 * t / 50.0).cos() * (t / 50.0).cos() + 0.1 * rng.normal();
        let update = Update {
            token: None,
            data: plotstream_proto::update::smallvec![
                (Str::from_static("x"), Value::Str(Str::from(wall_clock()))),
                (Str::from_static("y"), Value::Number(y)),
            ],
            line: Vec::new(),
            layout: None,
        };
        client
            .write_update(update)
            .await
            .context("the demo stream")?;
        i += 1;
    }
}

/// Forwards stdin's lines to `token`, heartbeating while stdin is quiet; prints the final status.
/// The first end the server gives is reported, not retried, and nothing is resent.
pub async fn send(target: &str, token: &str, heartbeat: Duration) -> Result<()> {
    let options = Options {
        flavour: Flavour::Python,
        heartbeat: Some(heartbeat),
        backoff: Backoff {
            max_retries: Some(0),
            ..Backoff::default()
        },
        replay: 0,
        ..Options::default()
    };
    let client = Client::connect(target, token, options).await?;
    let mut events = client.events();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let early = tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => {
                    let line = line.trim_end_matches('\r');
                    if line.is_empty() {
                        continue;
                    }
                    match client.write_line(line.to_owned()).await {
                        Ok(()) => continue,
                        Err(Error::Ended(status)) => status,
                        Err(e) => return Err(e.into()),
                    }
                }
                None => break,
            },
            status = ended(&mut events) => status,
        };
        bail!("the server ended the stream early: {}", describe(early));
    }
    let closed = client.close().await?;
    match closed.status {
        Some(s) if s == Status::OK => {
            eprintln!("sent {} lines: {s}", closed.stats.n_points);
            Ok(())
        }
        other => bail!("stream ended with {}", describe(other)),
    }
}

/// The status the client ended with, once it ended.
async fn ended(events: &mut broadcast::Receiver<ClientEvent>) -> Option<Status> {
    loop {
        match events.recv().await {
            Ok(ClientEvent::Ended { status }) => return status,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

fn describe(status: Option<Status>) -> String {
    status.map_or("no response".to_owned(), |s| s.to_string())
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
