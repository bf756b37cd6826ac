//! `cargo xtask conform`: the conformance suite (docs/reliability.md §5, §8) against our own
//! `plotstream serve`, plus its calibration against a deliberately broken endpoint.
//!
//! 1. Builds `plotstream` (debug, or release with `--release`) and starts seven servers on free
//!    loopback ports: the default setup, `--tokens registered`, `--lenient-lines`,
//!    `--on-duplicate reject`, one whose timers are the defaults divided by 20 for group E, one
//!    under `ulimit -n 256` for D2 (EMFILE), and keys mode (`--users FILE`, the file made by
//!    `plotstream user add`) for group K.
//! 2. Runs `plotstream conform` against them; every MUST and COMPAT case must pass, and so must
//!    group K (accounts and ownership, SHOULD for other endpoints: `--strict-case K`), as the
//!    user `user add` printed. JUnit XML and per-case JSON land in `<target>/conform/`.
//! 3. Stops the servers (SIGTERM by PID, then a kill if they linger).
//! 4. Runs `cargo test -p plotstream-load --test conform_calibration`, which starts the broken
//!    endpoint (`crates/plotstream-load/tests/broken_endpoint/`) and asserts that the cases its
//!    mutations break do fail, and pass against the real server.
//!
//! The CI step counts two checks: the suite and the calibration.

use std::{
    env,
    path::Path,
    process::{Child, Command, ExitCode, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util;

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let release = args.flag("--release");
    let (positional, passthrough) = args.finish()?;
    if let Some(extra) = positional.first() {
        bail!("`conform` takes no positional argument, got `{extra}`");
    }
    let Checked {
        suite, calibration, ..
    } = check(release, &passthrough)?;
    println!(
        "conform: suite against plotstream serve {}, calibration {}",
        verdict(suite),
        verdict(calibration)
    );
    Ok(if suite && calibration {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What [`check`] found.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The suite passed against `plotstream serve`.
    pub(crate) suite: bool,
    /// The calibration against the broken endpoint passed.
    pub(crate) calibration: bool,
    /// The failed cases and tests, in their own words.
    pub(crate) failures: Vec<String>,
}

/// Runs the suite and the calibration. `extra` goes to `plotstream conform` (for example
/// `--case B5 -v`).
pub(crate) fn check(release: bool, extra: &[String]) -> Result<Checked> {
    let (suite, mut failures) = suite(release, extra)?;
    let (calibration, more) = util::run_teed(&mut util::cargo([
        "test",
        "-p",
        "plotstream-load",
        "--test",
        "conform_calibration",
    ]))?;
    failures.extend(more);
    Ok(Checked {
        suite,
        calibration,
        failures,
    })
}

/// Runs the suite; `(passed, failure lines)`.
fn suite(release: bool, extra: &[String]) -> Result<(bool, Vec<String>)> {
    let mut build = util::cargo(["build", "-p", "plotstream"]);
    if release {
        build.arg("--release");
    }
    if !util::run_echoed(&mut build)? {
        bail!("cargo build -p plotstream failed");
    }
    let target_dir = util::target_dir();
    let binary = target_dir
        .join(if release { "release" } else { "debug" })
        .join(format!("plotstream{}", env::consts::EXE_SUFFIX));
    let out_dir = target_dir.join("conform");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    let mut servers = Vec::new();
    for (name, flags) in SERVERS {
        servers.push(Server::start(&binary, name, flags, None)?);
    }
    servers.push(Server::start(&binary, "fd-limited", &[], Some(FD_LIMIT))?);
    // Keys mode, with one user made by the real binary, as an operator makes it.
    let users = out_dir.join("users.jsonl");
    if users.exists() {
        std::fs::remove_file(&users)
            .with_context(|| format!("cannot remove {}", users.display()))?;
    }
    let mut add = util::user_add_command(&binary, &users, KEYS_USER, None, 1);
    println!("$ {}", util::display_command(&add));
    let account = util::run_user_add(&mut add)?;
    let stream_id = account
        .stream_ids
        .first()
        .with_context(|| format!("`plotstream user add` issued no stream id: {account:?}"))?;
    let users_flag = users.to_string_lossy().into_owned();
    servers.push(Server::start(
        &binary,
        "keys",
        &["--users", &users_flag],
        None,
    )?);
    let url = |name: &str| {
        servers
            .iter()
            .find(|s| s.name == name)
            .map(|s| format!("http://127.0.0.1:{}", s.port))
            .unwrap_or_default()
    };
    let mut cmd = Command::new(&binary);
    cmd.arg("conform")
        .args(["--target", &url("default")])
        .args(["--target-registered", &url("registered")])
        .args(["--target-lenient", &url("lenient")])
        .args(["--target-reject", &url("reject")])
        .args(["--target-timers", &url("timers")])
        .args(["--timer-scale", TIMER_SCALE])
        .args(["--peer-limit", PEER_LIMIT])
        .args(["--target-fd-limited", &url("fd-limited")])
        .args(["--fd-limit", FD_LIMIT])
        .args(["--target-accounts", &url("keys")])
        .arg("--credentials")
        .arg(format!("{}:{}", account.username, account.api_key))
        .args(["--stream-id", stream_id])
        // Our keys mode must pass group K, not merely be NON-STRICT there.
        .args(["--strict-case", "K"])
        .arg("--junit")
        .arg(out_dir.join("junit.xml"))
        .arg("--json")
        .arg(out_dir.join("cases"))
        // Every limit of docs/reliability.md §3 must show in /metrics when it fires.
        .arg("--require-limit-counters")
        .args(extra)
        .env("NO_COLOR", "1");
    if !release {
        // B24's 50 MB/s floor is set for release builds.
        cmd.arg("--unoptimized-target");
    }
    // The key is the keys server's own, but a log is no place for keys.
    println!(
        "$ {}",
        util::display_command(&cmd).replace(&account.api_key, "<its api_key>")
    );
    cmd.stdout(Stdio::piped());
    let (status, mut failures) = run_with_timeout(&mut cmd, SUITE_TIMEOUT);
    let mut stopped_cleanly = true;
    for server in &mut servers {
        if let Err(err) = server.stop() {
            println!("conform: {err:#}");
            failures.push(format!("conform: {err:#}"));
            stopped_cleanly = false;
        }
    }
    let passed = match status {
        Ok(status) => status.success(),
        Err(err) => {
            println!("conform: {err:#}");
            failures.push(format!("conform: {err:#}"));
            false
        }
    };
    if !passed || !stopped_cleanly {
        for server in &servers {
            println!(
                "conform: the last lines of the {} server's log:",
                server.name
            );
            for line in server.log() {
                println!("  | {line}");
            }
        }
    }
    println!(
        "conform: JUnit XML at {}",
        out_dir.join("junit.xml").display()
    );
    Ok((passed && stopped_cleanly, failures))
}

/// The servers the suite needs: name and extra `serve` flags.
const SERVERS: &[(&str, &[&str])] = &[
    ("default", &[]),
    ("registered", &["--tokens", "registered"]),
    ("lenient", &["--lenient-lines"]),
    ("reject", &["--on-duplicate", "reject"]),
    (
        "timers",
        &[
            "--idle-timeout",
            "3s",
            "--head-timeout",
            "500ms",
            "--pre-head-timeout",
            "3s",
            "--unbound-timeout",
            "3s",
        ],
    ),
];
/// The timers server runs L1, L2, L28 and L29 at the defaults divided by this.
const TIMER_SCALE: &str = "20";
/// The default `--max-connections-per-peer` (L11), which D11 checks.
const PEER_LIMIT: &str = "256";
/// The open-file limit of the sixth server, which D2 (EMFILE in the accept loop) needs.
const FD_LIMIT: &str = "256";
/// The user of the keys-mode server, which group K acts as.
const KEYS_USER: &str = "conform";

/// A running `plotstream serve`, stopped by PID when dropped.
#[derive(Debug)]
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    /// The last lines of its stderr.
    log: util::SharedLog,
}

impl Server {
    /// Starts `plotstream serve` with `flags`; with `nofile`, under that RLIMIT_NOFILE (set by
    /// `sh`, which then `exec`s the server, so the PID stays the server's).
    fn start(
        binary: &Path,
        name: &'static str,
        flags: &[&str],
        nofile: Option<&str>,
    ) -> Result<Server> {
        let mut cmd = match nofile {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                sh
            }
            None => Command::new(binary),
        };
        // The suite is one peer that creates thousands of streams on purpose: no L43
        // allowance (the security suite checks L43).
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--new-streams-per-peer",
            "0",
        ])
        .args(flags)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        println!("$ {}", util::display_command(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let (log, lines_rx) = util::drain_stderr(&mut child, LOG_LINES)?;
        let mut server = Server {
            name,
            child,
            port: 0,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = util::parse_listening_port(&line) {
                        server.port = port;
                        println!("conform: the {name} server listens on 127.0.0.1:{port}");
                        return Ok(server);
                    }
                }
                Err(_) => bail!(
                    "the {name} server did not print its port within {} s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    server.log().join("\n")
                ),
            }
        }
    }

    /// SIGTERM to its PID, then a kill if it is still there after [`STOP_TIMEOUT`].
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        util::terminate(&mut self.child)?;
        if wait_timeout(&mut self.child, STOP_TIMEOUT)?.is_some() {
            return Ok(());
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!(
            "the {} server did not stop within {} s of SIGTERM and was killed",
            self.name,
            STOP_TIMEOUT.as_secs()
        )
    }

    fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|log| log.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "passed"
    } else {
        "FAILED"
    }
}

/// Runs `cmd` with inherited stdio and waits up to `timeout`; a run that takes longer is
/// stopped (SIGTERM, then a kill) and is an error.
/// Runs `cmd` (its stdout piped) to its end or `timeout`; its status, and the failure lines of
/// its stdout (echoed as it runs).
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Result<ExitStatus>, Vec<String>) {
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            let err = anyhow::Error::new(err)
                .context(format!("cannot start `{}`", util::display_command(cmd)));
            return (Err(err), Vec::new());
        }
    };
    let tee = util::tee_stdout(&mut child);
    let status = wait_or_stop(&mut child, timeout);
    let failures = match tee {
        Ok(tee) => tee.join().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    (status, failures)
}

fn wait_or_stop(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    if let Some(status) = wait_timeout(child, timeout)? {
        return Ok(status);
    }
    util::terminate(child)?;
    if wait_timeout(child, STOP_TIMEOUT)?.is_none() {
        child.kill()?;
        child.wait()?;
    }
    bail!(
        "`plotstream conform` did not finish within {} s",
        timeout.as_secs()
    )
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The servers drain for up to 10 s after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The whole suite takes about two minutes on two cores; this only catches a hang.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const LOG_LINES: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_the_port() {
        assert_eq!(
            util::parse_listening_port("plotstream listening on http://127.0.0.1:41523"),
            Some(41523)
        );
        assert_eq!(
            util::parse_listening_port("streams: http://127.0.0.1:1/"),
            None
        );
    }

    #[test]
    fn server_names_are_unique() {
        for (idx, (name, _)) in SERVERS.iter().enumerate() {
            assert!(SERVERS[..idx].iter().all(|(other, _)| other != name));
        }
    }
}
