//! The binary as a user runs it: `serve` on a free port, `send` from stdin, `token`, SIGTERM.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plotstream");

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server prints its address")
                .unwrap();
            if let Some(addr) = line.strip_prefix("plotstream listening on ") {
                break addr.to_owned();
            }
        };
        // Keep draining stderr so logging never blocks the server.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    fn get(&self, path: &str) -> String {
        let addr = self.base.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// SIGTERM, then wait: the server must stop by itself and exit 0.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn send_streams_stdin_lines_and_reports_the_status() {
    let server = Server::start(&[]);
    let mut send = Command::new(BIN)
        .args(["send", "--target", &server.base, "--token", "clitoken1"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin
        .take()
        .unwrap()
        .write_all(b"{\"x\":1,\"y\":2}\n\n{\"x\":2,\"y\":3}\r\n")
        .unwrap();
    let out = send.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sent 2 lines: 200 OK"), "{err}");
    let inspect = server.get("/api/streams/clitoken1");
    assert!(
        inspect.contains("\"window\":{\"x\":[1,2],\"y\":[2,3]}"),
        "{inspect}"
    );
    server.stop();
}

#[test]
fn send_reports_a_rejected_stream() {
    let server = Server::start(&[]);
    let mut send = Command::new(BIN)
        .args(["send", "--target", &server.base, "--token", "clitoken2"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin
        .take()
        .unwrap()
        .write_all(b"{\"x\":1}\nnot json\n")
        .unwrap();
    let out = send.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("422"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
}

#[test]
fn demo_streams_points_that_the_api_shows() {
    let server = Server::start(&["--demo"]);
    let started = Instant::now();
    loop {
        let r = server.get("/api/streams/demo");
        if r.contains("\"last_seq\":3") {
            assert!(r.contains("\"writer_connected\":true"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
}

#[test]
fn tokens_are_ten_lowercase_alphanumerics() {
    let out = Command::new(BIN)
        .args(["token", "--count", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let tokens: Vec<&str> = text.lines().collect();
    assert_eq!(tokens.len(), 50);
    for t in &tokens {
        assert!(
            t.len() == 10
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{t}"
        );
    }
}

#[test]
fn a_malformed_fault_is_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--fault",
            "reset:prob=2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prob must be within 0..=1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unbuilt_features_fail_with_a_clear_reason() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "/tmp/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not built yet"));
}
