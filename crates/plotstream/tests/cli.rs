//! The binary as a user runs it: `serve` on a free port, `send` from stdin, `load` over two
//! targets, `token`, SIGTERM.

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
        Server::spawn(Command::new(BIN), args)
    }

    /// Under RLIMIT_NOFILE `nofile`: `sh` sets it and `exec`s the server (same PID).
    fn start_limited(nofile: u32, args: &[&str]) -> Server {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(BIN);
        Server::spawn(sh, args)
    }

    fn spawn(mut cmd: Command, args: &[&str]) -> Server {
        let mut child = cmd
            .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
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

/// `--version` reports `[workspace.package] version`, which every crate of ours takes (tidy
/// checks that the published ones say `version.workspace = true` and that the workspace's
/// dependencies on them name the same version).
#[test]
fn version_is_the_crates_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let manifest = std::fs::read_to_string(root).unwrap();
    let package = manifest.split("[workspace.package]").nth(1).unwrap();
    let version = package
        .lines()
        .find_map(|line| line.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("plotstream {version}\n")
    );
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
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
            "--in-memory",
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
fn a_damaged_store_is_refused_with_the_file_named() {
    let dir = std::env::temp_dir().join(format!("plotstream-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plotstream.redb"),
        b"this is not a database, just bytes",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plotstream.redb"), "{err}");
}

/// The server's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// docs/reliability.md S12 (with D2, L39): descriptor pressure beside 10 established writers. The
/// server runs under `ulimit -n 256`; 400 idle connections exhaust its descriptors, so
/// `accept` fails with EMFILE for the whole pressure. The server must not exit or spin (it
/// backs off 100 ms per failure), the 10 writers keep every line in order (I1), and a new
/// writer is admitted soon after the pressure stops. 3 s of pressure here; 2 min under
/// `cargo xtask soak` (`PLOTSTREAM_SOAK=1`), in rounds of fresh connections so the server's
/// pre-head timeout cannot lift the pressure.
#[test]
fn s12_descriptor_pressure_beside_established_writers() {
    let soak = std::env::var_os("PLOTSTREAM_SOAK").is_some();
    let pressure = if soak {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(3)
    };
    let server = Server::start_limited(256, &[]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let head = |token: &str| {
        format!("POST / HTTP/1.1\r\nHost: x\r\nplotly-streamtoken: {token}\r\nTransfer-Encoding: chunked\r\n\r\n")
    };
    let line = |n: u64| {
        let l = format!("{{\"x\":{n},\"y\":{n}}}\n");
        format!("{:x}\r\n{l}\r\n", l.len())
    };
    let read_status = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out)
            .get(9..12)
            .unwrap_or("")
            .to_owned()
    };
    // Ten writers, 20 lines/s each, until told to stop; each returns (lines sent, status).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..10)
        .map(|i| {
            let (addr, stop) = (addr.clone(), stop.clone());
            let (head, line) = (head(&format!("s12writer{i}")), line);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_nodelay(true).unwrap();
                s.write_all(head.as_bytes()).unwrap();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    s.write_all(line(n).as_bytes()).unwrap();
                    std::thread::sleep(Duration::from_millis(50));
                }
                s.write_all(b"0\r\n\r\n").unwrap();
                (n, read_status(&mut s))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let pid = server.child.id();
    let mut busy = Duration::ZERO;
    let mut held_for = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < pressure {
        let round = (pressure - started.elapsed()).min(Duration::from_secs(20));
        let mut held = Vec::new();
        for _ in 0..400 {
            if let Ok(s) =
                TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
            {
                held.push(s);
            }
        }
        assert!(held.len() >= 256, "only {} connections opened", held.len());
        // The server's CPU while accept() fails: a busy loop would use a whole core.
        let cpu_before = cpu_time(pid);
        let hold_started = Instant::now();
        std::thread::sleep(round);
        busy += cpu_time(pid) - cpu_before;
        held_for += hold_started.elapsed();
        drop(held);
    }
    // A new writer is admitted once the pressure stops.
    let after = Instant::now();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(format!("{}{}0\r\n\r\n", head("s12late"), line(1)).as_bytes())
        .unwrap();
    assert_eq!(read_status(&mut s), "200");
    let admitted = after.elapsed();

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (i, w) in writers.into_iter().enumerate() {
        let (n, status) = w.join().unwrap();
        assert_eq!(status, "200", "writer {i}");
        // I1: every line accepted, in order; the window holds the newest 500.
        let r = server.get(&format!("/api/streams/s12writer{i}"));
        assert!(
            r.contains(&format!("\"last_seq\":{n},")),
            "writer {i} sent {n}: {r}"
        );
        let xs: Vec<String> = (n.saturating_sub(500) + 1..=n)
            .map(|x| x.to_string())
            .collect();
        assert!(
            r.contains(&format!("\"x\":[{}]", xs.join(","))),
            "writer {i}: {r}"
        );
    }
    let metrics = server.get("/metrics");
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("plotstream_accept_errors_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        errors > 0.0,
        "accept never failed: the pressure did not exhaust descriptors"
    );
    let share = busy.as_secs_f64() / held_for.as_secs_f64();
    eprintln!(
        "S12: {errors} accept errors, server CPU {:.1} % of {:.1} s of pressure, new writer admitted in {} ms",
        share * 100.0,
        held_for.as_secs_f64(),
        admitted.as_millis()
    );
    assert!(
        share < 0.5,
        "the accept loop spins: {:.0} % CPU",
        share * 100.0
    );
    assert!(admitted < Duration::from_secs(5), "{admitted:?}");
    server.stop();
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("plotstream-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn print_config(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--print-config")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// #15 item 4: `serve --config FILE` takes every flag as a key, the command line overrides it,
/// and `--print-config` prints what is in effect in a form that reads back the same.
#[test]
fn a_config_file_sets_flags_that_the_command_line_overrides() {
    let file = temp_file(
        "config",
        "default-maxpoints = 7\nidle-timeout = \"30s\"\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nlenient-lines = true\n",
    );
    let f = file.to_str().unwrap();
    let (ok, printed, err) = print_config(&["--config", f]);
    assert!(ok, "{err}");
    for line in [
        "default-maxpoints = 7",
        "idle-timeout = \"30s\"",
        "lenient-lines = true",
        "listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]",
        "max-maxpoints = 10000",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} in\n{printed}");
    }
    // The command line wins, and a repeatable flag given there replaces the file's list.
    let (ok, over, err) = print_config(&[
        "--config",
        f,
        "--default-maxpoints",
        "9",
        "--listen",
        "127.0.0.1:3",
    ]);
    assert!(ok, "{err}");
    assert!(over.lines().any(|l| l == "default-maxpoints = 9"), "{over}");
    assert!(
        over.lines().any(|l| l == "listen = [\"127.0.0.1:3\"]"),
        "{over}"
    );
    // What it prints reads back to the same.
    let again = temp_file("config-again", &printed);
    let (ok, reread, err) = print_config(&["--config", again.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(reread, printed);
    // And a server started from it uses it.
    let server = Server::start(&["--config", f]);
    let mut send = Command::new(BIN)
        .args(["send", "--target", &server.base, "--token", "cfgtoken1"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: String = (1..=10).map(|i| format!("{{\"x\":{i}}}\n")).collect();
    send.stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(send.wait_with_output().unwrap().status.success());
    let inspect = server.get("/api/streams/cfgtoken1");
    assert!(inspect.contains("\"maxpoints\":7"), "{inspect}");
    assert!(inspect.contains("\"x\":[4,5,6,7,8,9,10]"), "{inspect}");
    server.stop();
    for p in [file, again] {
        let _ = std::fs::remove_file(p);
    }
}

/// Whatever is wrong in a config file is named with the file (and the key, where there is one).
#[test]
fn a_bad_config_file_is_refused_naming_the_key_and_the_file() {
    for (name, text, says) in [
        ("unknown", "colour = \"red\"\n", "unknown key \"colour\""),
        (
            "switch",
            "in-memory = \"yes\"\n",
            "key \"in-memory\": --in-memory is a switch",
        ),
        (
            "list",
            "idle-timeout = [\"1s\"]\n",
            "key \"idle-timeout\": --idle-timeout takes one value",
        ),
        (
            "value",
            "idle-timeout = \"soon\"\n",
            "invalid value 'soon' for '--idle-timeout",
        ),
        (
            "conflict",
            "in-memory = true\ndata-dir = \"x\"\n",
            "cannot be used with",
        ),
        ("table", "[serve]\nopen = true\n", "unknown key \"serve\""),
        ("toml", "open = \n", "not valid TOML"),
        (
            "huge",
            &format!("# {}\n", "x".repeat(1 << 20)),
            "(L57: 1048576)",
        ),
    ] {
        let file = temp_file(&format!("bad-{name}"), text);
        let f = file.to_str().unwrap();
        let (ok, _, err) = print_config(&["--config", f]);
        assert!(!ok, "{name}: accepted");
        assert!(err.contains(f), "{name}: the file is not named: {err}");
        assert!(err.contains(says), "{name}: {err}");
        let _ = std::fs::remove_file(file);
    }
}

/// `plotstream load` with its arguments, quiet, JSON report: (success, stdout, stderr).
fn load(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("load")
        .args(args)
        .args(["--quiet", "--report", "json"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn load_writes_to_one_target_and_verifies_from_the_other() {
    let server = Server::start(&[]);
    // One server under two names: two targets as the load generator sees them.
    let port = server.base.rsplit(':').next().unwrap();
    let other = format!("http://localhost:{port}");
    let (ok, out, err) = load(&[
        "--target",
        &server.base,
        "--target",
        &other,
        "--viewers-on",
        "other",
        "--verify",
        "--streams",
        "4",
        "--rate",
        "400",
        "--duration",
        "500ms",
        "--assert",
        "lost=0",
        "--assert",
        "duplicated=0",
        "--assert",
        "out_of_order=0",
        "--assert",
        "digest_mismatches=0",
    ]);
    assert!(ok, "{err}\n{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["target"],
        format!("{},{other}", server.base),
        "{out}"
    );
    assert_eq!(report["viewers_on"], "other", "{out}");
    assert_eq!(
        report["targets"],
        serde_json::json!([
            {"url": server.base, "writers": 2, "viewers": 2},
            {"url": other, "writers": 2, "viewers": 2},
        ]),
        "{out}"
    );
    assert_eq!(report["points_verified"], 200, "{out}");

    // One target has no other node.
    let (ok, out, err) = load(&[
        "--target",
        &server.base,
        "--viewers-on",
        "other",
        "--verify",
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("--viewers-on other needs at least two --target"),
        "{err}"
    );
    server.stop();
}
