//! What the binary-driven tests share: server and Redis processes killed by PID when dropped,
//! HTTP and SSE reads, and a plain writer.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plotstream_client::{Client, Options};
use plotstream_proto::encode::Num;
use plotstream_proto::Status;

pub const BIN: &str = env!("CARGO_BIN_EXE_plotstream");

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plotstream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server process, killed (by PID) when dropped, so a failed assertion leaves nothing
/// running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn sigkill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    pub fn sigterm(&mut self) {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.0.wait().unwrap();
    }
}

/// Where a test server keeps its state.
pub enum Keep {
    /// `--data-dir DIR`.
    Dir(PathBuf),
    /// `--redis URL` of a redis-server this test started.
    Redis(RedisServer),
}

impl Keep {
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        match self {
            Keep::Dir(dir) => vec!["--data-dir".into(), dir.into()],
            Keep::Redis(r) => vec!["--redis".into(), r.url().into()],
        }
    }
}

/// A real `redis-server` (the system's package) on a free loopback port, with its AOF in a
/// fresh directory and fsync on every write (`appendfsync always`), killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl RedisServer {
    pub fn start(name: &str) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = RedisServer {
            port,
            dir: temp_dir(name),
            proc: None,
        };
        r.restart();
        r
    }

    /// Sends one command (its words, no spaces inside) and returns the raw reply's first line.
    pub fn command(&self, words: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        writeln!(s, "{}\r", words.join(" ")).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, from its AOF) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server: install the system's package (apt-get install redis-server)");
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    pub fn sigkill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.sigkill();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.sigkill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `plotstream serve` keeping its state in `keep`, on `listen`; returns the process and its
/// address, and what it printed before it.
pub fn start_in(keep: &Keep, listen: &str, extra: &[&str]) -> (Proc, SocketAddr, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen])
        .args(keep.args())
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server prints its address")
            .unwrap();
        if let Some(a) = line.strip_prefix("plotstream listening on http://") {
            break a.parse().unwrap();
        }
        said.push(line);
    };
    // `PLOTSTREAM_TEST_LOG=1` shows what the servers say, to debug a failure.
    let show = std::env::var_os("PLOTSTREAM_TEST_LOG").is_some();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if show {
                eprintln!("[{addr}] {line}");
            }
        }
    });
    (Proc(child), addr, said)
}

/// `plotstream serve --data-dir DIR` (see [`start_in`]).
pub fn start(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, SocketAddr, Vec<String>) {
    start_in(&Keep::Dir(dir.to_owned()), listen, extra)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The window's `x` values of `token`'s stream (empty if it does not exist).
pub fn window_x(addr: SocketAddr, token: &str) -> (Vec<u64>, Vec<u64>) {
    let (status, body) = get(addr, &format!("/api/streams/{token}"));
    if status == 404 {
        return (Vec::new(), Vec::new());
    }
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let col = |k: &str| {
        v["window"][k]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap()).collect())
            .unwrap_or_default()
    };
    (col("x"), col("y"))
}

/// Writes `xs` to `token` on one connection and returns the final status.
pub fn write_points(addr: SocketAddr, token: &str, xs: std::ops::Range<u64>) -> Option<Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(&format!("http://{addr}"), token, Options::default())
            .await
            .unwrap();
        for x in xs {
            #[allow(clippy::cast_possible_wrap)]
            client
                .write_point(Num::Int(x as i64), Num::Int(x as i64))
                .await
                .unwrap();
        }
        client.close().await.ok().and_then(|c| c.status)
    })
}

/// Opens the stream's SSE feed with `Last-Event-ID`, returns the socket after the head.
pub fn feed(addr: SocketAddr, token: &str, last_event_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /api/streams/{token}/events?interval=0 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last_event_id}\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    s
}

/// What arrives on `s` within its read timeout.
pub fn drain(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn inspect(addr: SocketAddr, token: &str) -> serde_json::Value {
    let (status, body) = get(addr, &format!("/api/streams/{token}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}
