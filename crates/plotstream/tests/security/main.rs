//! The security suite: the binary as an attacker meets it. Each test replays one finding of
//! the security review (docs/security.md lists them) against `plotstream serve` and asserts
//! the fix: anonymous and wrong-key requests change nothing and learn no write token, no
//! single peer locks others out, and no request pattern grows memory past its budget.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod budgets;
mod protected;
mod rest_auth;
mod streams;
mod tls;
mod viewers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_plotstream");

/// A running `plotstream serve`, stopped (by PID) on drop.
#[allow(missing_debug_implementations)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addr = None;
        let mut tls_addr = None;
        let wants_tls = args.contains(&"--tls-listen");
        while addr.is_none() || (wants_tls && tls_addr.is_none()) {
            let line = lines
                .next()
                .expect("the server prints its address")
                .unwrap();
            if let Some(a) = line.strip_prefix("plotstream listening on http://") {
                addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("plotstream listening on https://") {
                tls_addr = Some(a.parse().unwrap());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.unwrap(),
            tls_addr,
        }
    }

    /// Sends `request` (a whole HTTP/1.1 request) and returns the response.
    pub fn raw(&self, request: &[u8]) -> Reply {
        raw_from(self.addr, None, request)
    }

    /// `METHOD path` with `headers` and `body`, Content-Length added.
    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        r.push_str("\r\n");
        r.push_str(body);
        self.raw(r.as_bytes())
    }

    pub fn get(&self, path: &str) -> Reply {
        self.req("GET", path, &[], "")
    }

    /// A chunked ingest body of `lines` for `token` (header token).
    pub fn ingest(&self, token: &str, lines: &[String]) -> Reply {
        let mut r = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nplotly-streamtoken: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        for l in lines {
            let l = format!("{l}\n");
            r.push_str(&format!("{:x}\r\n{l}\r\n", l.len()));
        }
        r.push_str("0\r\n\r\n");
        self.raw(r.as_bytes())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmRSS of the server, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// `(VmRSS, VmHWM)` of the server, in bytes.
    pub fn rss_and_peak(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap()
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The value of the unlabelled metric `name` exactly.
    pub fn gauge(&self, name: &str) -> Option<u64> {
        self.get("/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// The sum of every sample whose name and labels start with `name`.
    pub fn metric(&self, name: &str) -> u64 {
        let m = self.get("/metrics").body;
        m.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// Sends `request` from `local` (an address of 127.0.0.0/8, so one machine can play several
/// peers) and reads the whole response.
pub fn raw_from(addr: SocketAddr, local: Option<&str>, request: &[u8]) -> Reply {
    let mut s = connect_from(addr, local);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_reply(&out)
}

pub fn connect_from(addr: SocketAddr, local: Option<&str>) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(l) = local {
        let l: SocketAddr = format!("{l}:0").parse().unwrap();
        sock.bind(&l.into()).unwrap();
    }
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

pub fn parse_reply(out: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `Authorization: Basic base64(user:key)`.
pub fn basic(user: &str, key: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{key}").into_bytes();
    let mut out = String::from("Basic ");
    for c in raw.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plotstream-security-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `plotstream user ...` with `--users FILE`; the printed JSON line.
pub fn user_cmd(users: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("user")
        .args(args)
        .arg("--users")
        .arg(users)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plotstream user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A user's credentials as `user add` printed them.
#[derive(Debug)]
pub struct Account {
    pub name: String,
    pub key: String,
    pub tokens: Vec<String>,
}

impl Account {
    pub fn add(users: &Path, name: &str) -> Account {
        let j = user_cmd(users, &["add", name, "--stream-ids", "3"]);
        Account {
            name: j["username"].as_str().unwrap().to_owned(),
            key: j["api_key"].as_str().unwrap().to_owned(),
            tokens: j["stream_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        }
    }

    pub fn auth(&self) -> String {
        basic(&self.name, &self.key)
    }
}

/// The body chart_studio posts for a one-trace streaming plot.
pub fn plot_body(token: &str, extra: &str) -> String {
    format!(
        r#"{{"figure": {{"data": [{{"type": "scatter", "stream": {{"token": "{token}", "maxpoints": 80}}}}], "layout": {{}}}}, "filename": "p"{extra}}}"#
    )
}

/// The number after `~user/` in a web_url, and the user.
pub fn fid_of(reply: &Reply) -> String {
    reply.json()["file"]["fid"].as_str().unwrap().to_owned()
}

/// Points as NDJSON lines.
pub fn points(n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"x":{i},"y":{i}}}"#)).collect()
}
