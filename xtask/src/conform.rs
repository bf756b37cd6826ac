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
    path::Path,
    process::{Command, ExitCode, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    process::{self, Serve, Server, Stop},
    util,
};

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
    let binary = process::build_plotstream(release)?;
    let out_dir = util::target_dir().join("conform");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    let mut servers = Vec::new();
    for (name, flags) in SERVERS {
        servers.push(start(&binary, name, flags, None)?);
    }
    servers.push(start(&binary, "fd-limited", &[], Some(FD_LIMIT))?);
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
    servers.push(start(&binary, "keys", &["--users", &users_flag], None)?);
    let url = |name: &str| {
        servers
            .iter()
            .find(|(other, _)| *other == name)
            .map(|(_, s)| format!("http://127.0.0.1:{}", s.port()))
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
        .args(["--fd-limit", &FD_LIMIT.to_string()])
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
    for (_, server) in &mut servers {
        if let Err(err) = server.stop(Stop::Graceful) {
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
        for (name, server) in &servers {
            println!("conform: the last lines of the {name} server's log:");
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
const FD_LIMIT: u32 = 256;
/// The user of the keys-mode server, which group K acts as.
const KEYS_USER: &str = "conform";

/// Starts `plotstream serve --in-memory` on a free loopback port with `flags`; with `nofile`,
/// under that RLIMIT_NOFILE. It keeps the last [`LOG_LINES`] of its log.
fn start(
    binary: &Path,
    name: &'static str,
    flags: &[&str],
    nofile: Option<u32>,
) -> Result<(&'static str, Server)> {
    // The suite is one peer that creates thousands of streams on purpose: no L43
    // allowance (the security suite checks L43).
    let mut serve = Serve::new(binary)
        .flags([
            "--in-memory",
            "--listen",
            "127.0.0.1:0",
            "--new-streams-per-peer",
            "0",
        ])
        .flags(flags)
        .env("RUST_LOG", "warn")
        .keep_log(LOG_LINES)
        .named(format!("the {name} server"))
        .echo();
    if let Some(nofile) = nofile {
        serve = serve.nofile(nofile);
    }
    let server = serve.start()?;
    println!(
        "conform: the {name} server listens on 127.0.0.1:{}",
        server.port()
    );
    Ok((name, server))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "passed"
    } else {
        "FAILED"
    }
}

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
    // A run that takes longer is stopped (SIGTERM, then a kill) and is an error.
    let status = match process::finish_within(&mut child, timeout, Stop::Graceful) {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err(anyhow::anyhow!(
            "`plotstream conform` did not finish within {} s",
            timeout.as_secs()
        )),
        Err(err) => Err(err),
    };
    let failures = match tee {
        Ok(tee) => tee.join().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    (status, failures)
}

/// The whole suite takes about two minutes on two cores; this only catches a hang.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
const LOG_LINES: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_unique() {
        for (idx, (name, _)) in SERVERS.iter().enumerate() {
            assert!(SERVERS[..idx].iter().all(|(other, _)| other != name));
        }
    }
}
