//! A tokio writer for Rust programs that stream points to a plotstream (or any Plotly
//! streaming) endpoint: a thin driver around [`plotstream_proto::writer::Writer`].
//!
//! [`Client::connect`] opens the stream and spawns its driver task (quinn's
//! `ConnectionDriver` shape): the [`Client`] handle queues writes into a bounded channel, and the
//! driver moves them to the socket, sends a heartbeat when nothing was written for
//! [`Options::heartbeat`] (so the server's idle timeout, 60 s by default, never fires), reads
//! the server's response when it ends the stream, and reconnects with capped exponential
//! backoff where the real clients reconnect ([`should_reconnect`]: no response, 200, 408, 502,
//! 503, 520). Every connect, disconnect, reconnect attempt and heartbeat is reported as a
//! [`ClientEvent`] ([`Client::events`]) and counted in [`Stats`] ([`Client::stats`]).
//!
//! When the server ends a stream with `200`, its body says how many points it accepted on that
//! connection (`{"status":200,...,"points":N}`, read by the proto `Writer`). The driver keeps
//! the last [`Options::replay`] lines it wrote and resends the ones the server did not accept
//! on the next connection, so a healthy disconnect (a server restart with a drain, the hosted
//! service's maintenance flap) loses nothing. After a close without a response, or any other
//! status, the server's count is unknown and nothing is resent: delivery is at most once there.
//!
//! The examples run against an in-process `plotstream-server`: this one writes a stream, and
//! [`Client::events`] has one that watches the client reconnect after the server ends a stream.
//!
//! # Example: write a stream
//!
//! ```
//! use plotstream_client::{Client, Options};
//! use plotstream_proto::encode::Num;
//! use plotstream_proto::Status;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An in-process server on a free port.
//! let listener = plotstream_server::bind("127.0.0.1:0".parse()?)?;
//! let url = format!("http://{}", listener.local_addr()?);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(plotstream_server::run(
//!     vec![listener],
//!     plotstream_server::Config::default(),
//!     async move { let _ = stopped.await; },
//! ));
//!
//! let client = Client::connect(&url, "abcdef1234", Options::default()).await?;
//! for i in 0..3 {
//!     client.write_point(Num::Int(i), Num::Float(0.5 * i as f64)).await?;
//! }
//! let closed = client.close().await?;
//! assert_eq!(closed.status, Some(Status::OK));
//! // The server's 200 body counted the three points.
//! assert_eq!(closed.stats.n_points_acknowledged, 3);
//! assert_eq!(closed.stats.n_reconnects, 0);
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

// The README's example is a doctest too, so the one crates.io shows compiles and passes.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod driver;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plotstream_proto::encode::{Flavour, Num};
use plotstream_proto::{Status, Token, Update};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use plotstream_proto::writer::should_reconnect;

/// How a [`Client`] connects, writes and recovers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whose bytes to send: [`Flavour::Raw`] (compact, fastest) unless you want to reproduce a
    /// real client's wire format.
    pub flavour: Flavour,
    /// Send a heartbeat after this long without a write. The server's idle timeout is 60 s by
    /// default; Plotly's advice is a write at least every 30 s. `None` disables it.
    pub heartbeat: Option<Duration>,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// How long one TCP connect may take.
    pub connect_timeout: Duration,
    /// How long [`Client::close`] waits for the server's final response.
    pub close_timeout: Duration,
    /// Writes queued in the handle before `write_*` waits (backpressure).
    pub queue: usize,
    /// Lines kept per connection for resending after a `200` that did not accept them all.
    /// `0` disables resending.
    pub replay: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flavour: Flavour::Raw,
            heartbeat: Some(Duration::from_secs(30)),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            queue: 1024,
            replay: 4096,
        }
    }
}

/// Capped exponential backoff: attempt `n` (from 1) waits `initial · 2^(n−1)`, at most `max`.
///
/// The attempt count starts again from 1 once a connection was healthy: it lasted at least
/// `max`, or the server acknowledged points on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// Give up after this many consecutive attempts without a healthy connection (`None`:
    /// never give up).
    pub max_retries: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_retries: None,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << shift)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Something the driver did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A connection is open and its head queued. `n_connects` counts every connection so far,
    /// the first included.
    Connected {
        /// Connections so far.
        n_connects: u64,
    },
    /// An automatic or explicit heartbeat went out.
    Heartbeat,
    /// The server ended the connection, or it failed.
    Disconnected {
        /// The server's status; `None` when it closed without a (complete) response or the
        /// socket failed.
        status: Option<Status>,
        /// Points written on that connection.
        n_points_sent: u64,
        /// Points the server said it accepted (only a `200` says).
        n_points_accepted: Option<u64>,
    },
    /// Waiting `delay` before reconnect attempt `attempt` (1-based, consecutive).
    Reconnecting {
        /// Consecutive attempt number.
        attempt: u32,
        /// The backoff delay before it.
        delay: Duration,
    },
    /// A reconnect attempt failed to connect.
    ConnectFailed {
        /// Consecutive attempt number.
        attempt: u32,
        /// Why, as text.
        error: String,
    },
    /// Points a `200` did not accept were resent on the new connection.
    Replayed {
        /// How many.
        n_points: u64,
    },
    /// Points a `200` did not accept, too old to be kept for resending.
    Lost {
        /// How many.
        n_points: u64,
    },
    /// No more connections: the status does not call for a reconnect, retries ran out, or
    /// the client was closed.
    Ended {
        /// The last status seen.
        status: Option<Status>,
    },
}

/// Counters of one client's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections opened, the first included.
    pub n_connects: u64,
    /// Connections opened after the first.
    pub n_reconnects: u64,
    /// Connect attempts that failed.
    pub n_connect_failures: u64,
    /// Points (data lines) written to sockets, resent ones included.
    pub n_points: u64,
    /// Points the server acknowledged in `200` bodies.
    pub n_points_acknowledged: u64,
    /// Points resent after a `200` that did not accept them.
    pub n_points_replayed: u64,
    /// Points known unaccepted that could not be resent.
    pub n_points_lost: u64,
    /// Heartbeats sent.
    pub n_heartbeats: u64,
    /// The last status the server ended a connection with.
    pub last_status: Option<Status>,
}

/// What [`Client::close`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The final status: `Some(200)` when the server applied the whole body.
    pub status: Option<Status>,
    /// The counters at the end.
    pub stats: Stats,
}

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL is not `http://host[:port][/]`.
    Url(String),
    /// The token is not 1 to 64 characters of `[A-Za-z0-9_-]`.
    Token,
    /// The first connect failed.
    Connect(String),
    /// The stream ended for good: the server's last status, retries exhausted, or closed.
    Ended(Option<Status>),
    /// The close sequence got no response within [`Options::close_timeout`].
    CloseTimeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Url(u) => write!(f, "invalid url {u:?}: expected http://host[:port]"),
            Error::Token => f.write_str("invalid token: use 1 to 64 characters of [A-Za-z0-9_-]"),
            Error::Connect(e) => write!(f, "cannot connect to {e}"),
            Error::Ended(Some(s)) => write!(f, "stream ended with {s}"),
            Error::Ended(None) => f.write_str("stream ended without a response"),
            Error::CloseTimeout => f.write_str("no response to the close sequence"),
        }
    }
}

impl std::error::Error for Error {}

/// Where a stream goes: `host:port` for the socket and the `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, for `TcpStream::connect`.
    pub addr: String,
    /// The `Host` value: `host`, with `:port` unless it is 80.
    pub host: String,
}

impl Target {
    /// Parses `http://host[:port][/...]`; the port defaults to 80.
    pub fn parse(url: &str) -> Result<Target, Error> {
        let bad = || Error::Url(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let (name, port) = match authority.rsplit_once(':') {
            Some((name, port)) if !name.is_empty() && !port.contains(']') => {
                (name, port.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        Ok(Target {
            addr: format!("{name}:{port}"),
            host: if port == 80 {
                name.to_owned()
            } else {
                format!("{name}:{port}")
            },
        })
    }
}

/// A handle to one stream. Cheap to use from one task; writes are queued to the driver.
///
/// Dropping it without [`Client::close`] sends the close sequence without waiting for the
/// response.
#[derive(Debug)]
pub struct Client {
    tx: mpsc::Sender<driver::Command>,
    shared: Arc<driver::Shared>,
    events: broadcast::Sender<ClientEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects to `url` (`http://host:port`) and starts streaming to `token`. Fails if the
    /// first connect fails; later failures are retried per [`Options::backoff`].
    pub async fn connect(url: &str, token: &str, options: Options) -> Result<Client, Error> {
        let target = Target::parse(url)?;
        let token = Token::parse(token.as_bytes()).ok_or(Error::Token)?;
        let stream = driver::connect(&target.addr, options.connect_timeout)
            .await
            .map_err(Error::Connect)?;
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(driver::Shared {
            stats: Mutex::new(Stats::default()),
            ended: Mutex::new(None),
        });
        let mut driver =
            driver::Driver::new(target, token, options, rx, shared.clone(), events.clone());
        // Opened here, so the first `Connected` happens before anyone can subscribe: events
        // seen through `events()` start with what follows the first connect, whatever the
        // scheduling.
        let conn = driver.open(stream);
        let task = tokio::spawn(driver::run(driver, conn));
        Ok(Client {
            tx,
            shared,
            events,
            task,
        })
    }

    /// Queues one point `{x, y}`. Waits only when the queue is full.
    pub async fn write_point(&self, x: Num, y: Num) -> Result<(), Error> {
        self.send(driver::Command::Line(driver::Line::Point(x, y)))
            .await
    }

    /// Queues any trace update (arrays replace, scalars append, `layout` patches).
    pub async fn write_update(&self, update: Update) -> Result<(), Error> {
        self.send(driver::Command::Line(driver::Line::Update(Box::new(
            update,
        ))))
        .await
    }

    /// Queues one line of the caller's own bytes (JSON, without its LF), sent unchanged as one
    /// chunk (`plotstream send` forwards what it reads). A line holding an LF would reach the
    /// server as several lines and throw the acknowledged count off.
    pub async fn write_line(&self, line: impl Into<bytes::Bytes>) -> Result<(), Error> {
        self.send(driver::Command::Line(driver::Line::Raw(line.into())))
            .await
    }

    /// Queues a heartbeat now (the driver also sends them on its own).
    pub async fn heartbeat(&self) -> Result<(), Error> {
        self.send(driver::Command::Heartbeat).await
    }

    /// Sends everything queued, then the close sequence, and waits for the final response.
    pub async fn close(mut self) -> Result<Closed, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(driver::Command::Close(reply)).await?;
        let status = match answer.await {
            Ok(result) => result?,
            Err(_) => return Err(self.ended()),
        };
        let _ = (&mut self.task).await;
        Ok(Closed {
            status,
            stats: self.stats(),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Events from now on (the first connection's `Connected` is before any subscriber).
    ///
    /// # Example: reconnect
    ///
    /// ```
    /// use std::time::Duration;
    /// use plotstream_client::{Backoff, Client, ClientEvent, Options};
    /// use plotstream_proto::Status;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A server that ends streams idle for 200 ms with 408, and a client without heartbeats:
    /// // the client reports the timeout and reconnects after its first backoff delay.
    /// let mut config = plotstream_server::Config::default();
    /// config.limits.idle = Duration::from_millis(200);
    /// let listener = plotstream_server::bind("127.0.0.1:0".parse()?)?;
    /// let url = format!("http://{}", listener.local_addr()?);
    /// tokio::spawn(plotstream_server::run(vec![listener], config, std::future::pending()));
    ///
    /// let options = Options {
    ///     heartbeat: None,
    ///     backoff: Backoff { initial: Duration::from_millis(10), ..Backoff::default() },
    ///     ..Options::default()
    /// };
    /// let client = Client::connect(&url, "sensor0001", options).await?;
    /// let mut events = client.events();
    /// let timeout = ClientEvent::Disconnected {
    ///     status: Some(Status::REQUEST_TIMEOUT),
    ///     n_points_sent: 0,
    ///     n_points_accepted: None,
    /// };
    /// assert_eq!(events.recv().await?, timeout);
    /// assert_eq!(
    ///     events.recv().await?,
    ///     ClientEvent::Reconnecting { attempt: 1, delay: Duration::from_millis(10) }
    /// );
    /// assert_eq!(events.recv().await?, ClientEvent::Connected { n_connects: 2 });
    /// assert_eq!(client.stats().n_reconnects, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A receiver that falls more than 256 events behind loses the oldest
    /// (`RecvError::Lagged`); [`Client::stats`] counts everything.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    /// True once the driver stopped for good (see [`ClientEvent::Ended`]).
    pub fn is_ended(&self) -> bool {
        lock(&self.shared.ended).is_some()
    }

    async fn send(&self, command: driver::Command) -> Result<(), Error> {
        self.tx.send(command).await.map_err(|_| self.ended())
    }

    fn ended(&self) -> Error {
        lock(&self.shared.ended)
            .clone()
            .unwrap_or(Error::Ended(None))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain counters, still consistent to read.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const EVENT_CAPACITY: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:9999").ok();
        assert_eq!(
            t,
            Some(Target {
                addr: "127.0.0.1:9999".into(),
                host: "127.0.0.1:9999".into()
            })
        );
        let t = Target::parse("http://plot.example/").ok();
        assert_eq!(
            t,
            Some(Target {
                addr: "plot.example:80".into(),
                host: "plot.example".into()
            })
        );
        let t = Target::parse("http://[::1]:8080").ok();
        assert_eq!(t.map(|t| t.addr), Some("[::1]:8080".into()));
        for bad in [
            "https://x",
            "http://",
            "http://h:notaport",
            "http://u@h",
            "x:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(70),
            max_retries: None,
        };
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 70, 70, 70]);
        assert_eq!(b.delay(1000), Duration::from_millis(70));
    }
}
