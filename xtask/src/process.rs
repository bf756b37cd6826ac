//! The child processes of the xtask commands, handled one way for `compat`, `conform`, `browser`
//! and `bench ingest`:
//!
//! - [`Serve`] starts `plotstream serve` on loopback (optionally under `ulimit -n`), reads the
//!   address of every listener from the `plotstream listening on …` lines it prints on stderr,
//!   and hands back a [`Server`];
//! - [`Supervised`] drains the output of any child on a thread for the child's whole life (so its
//!   logging never blocks it), keeps its newest lines, and stops it by PID when dropped;
//! - [`end`] stops a child: SIGTERM to its PID alone, then a kill if it is still there after
//!   [`STOP_TIMEOUT`] ([`Stop::Graceful`]), or a kill at once ([`Stop::Crash`]);
//!   [`finish_within`] waits for a child and ends it when it overruns.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util;

/// A child's output lines, newest last, at most the number [`Supervised::spawn`] was told to keep.
pub(crate) type SharedLog = Arc<Mutex<VecDeque<String>>>;

/// A copy of a [`SharedLog`]'s lines.
pub(crate) fn log_lines(log: &SharedLog) -> Vec<String> {
    log.lock()
        .map(|log| log.iter().cloned().collect())
        .unwrap_or_default()
}

/// Which output of a child [`Supervised`] reads; the other one goes to `/dev/null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    Stdout,
    Stderr,
}

/// A running child whose watched output is drained into a log; stopped by PID when dropped
/// (SIGTERM, then a kill after [`STOP_TIMEOUT`]).
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    /// What messages call it: a name such as `the keys server`, or the command line.
    what: String,
    log: SharedLog,
    /// The drained lines, until [`Supervised::wait_for`] found what it waited for; dropped then,
    /// so that the reader thread only fills the log.
    lines: Option<mpsc::Receiver<String>>,
}

impl Supervised {
    /// Starts `cmd` with stdin from `/dev/null`, `watch` piped and drained (its newest `keep`
    /// lines kept), the other output discarded. `what` names it in messages (the command line
    /// when `None`).
    pub(crate) fn spawn(
        cmd: &mut Command,
        watch: Watch,
        keep: usize,
        what: Option<String>,
    ) -> Result<Supervised> {
        cmd.stdin(Stdio::null());
        match watch {
            Watch::Stdout => cmd.stdout(Stdio::piped()).stderr(Stdio::null()),
            Watch::Stderr => cmd.stdout(Stdio::null()).stderr(Stdio::piped()),
        };
        let shown = util::display_command(cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let pipe: Option<Box<dyn Read + Send>> = match watch {
            Watch::Stdout => child.stdout.take().map(|p| Box::new(p) as _),
            Watch::Stderr => child.stderr.take().map(|p| Box::new(p) as _),
        };
        let pipe = pipe.context("the child has no output pipe")?;
        let log: SharedLog = Arc::default();
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader_log = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut log) = reader_log.lock() {
                    if log.len() == keep {
                        log.pop_front();
                    }
                    log.push_back(line.clone());
                }
                // The receiver is gone once the caller found its line; the log still grows.
                let _ = lines_tx.send(line);
            }
        });
        Ok(Supervised {
            child,
            what: what.unwrap_or_else(|| format!("`{shown}`")),
            log,
            lines: Some(lines_rx),
        })
    }

    /// Reads the child's lines until `found` returns a value, for at most [`START_TIMEOUT`];
    /// `waiting_for` says what in the error, which carries the log so far. Reading stops here:
    /// call it once.
    pub(crate) fn wait_for<T>(
        &mut self,
        waiting_for: &str,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let lines = self
            .lines
            .take()
            .context("the child's lines were read already")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = found(&line) {
                        return Ok(value);
                    }
                }
                // `self` is dropped by the caller's `?`, which stops the child.
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "{} did not print {waiting_for} within {} s; its log:\n{}",
                    self.describe(),
                    START_TIMEOUT.as_secs(),
                    self.log().join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "{} exited before it printed {waiting_for}; its log:\n{}",
                    self.describe(),
                    self.log().join("\n")
                ),
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `what (pid N)`.
    pub(crate) fn describe(&self) -> String {
        format!("{} (pid {})", self.what, self.child.id())
    }

    /// The kept lines so far.
    pub(crate) fn log(&self) -> Vec<String> {
        log_lines(&self.log)
    }

    /// The log itself, which keeps growing while the child runs.
    pub(crate) fn log_handle(&self) -> SharedLog {
        Arc::clone(&self.log)
    }

    /// Stops the child as `how` says and waits for it: its exit status. A graceful stop that
    /// needed the kill is an `Err`.
    pub(crate) fn stop(&mut self, how: Stop) -> Result<ExitStatus> {
        match end(&mut self.child, how)? {
            Ended::Exited(status) => Ok(status),
            Ended::Killed(status) if how == Stop::Crash => Ok(status),
            Ended::Killed(_) => bail!(
                "{} did not stop within {} s of SIGTERM and was killed",
                self.describe(),
                STOP_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Drop for Supervised {
    /// SIGTERM to the child's PID, then a kill if it has not stopped in time (said on stdout).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Err(err) = self.stop(Stop::Graceful) {
                println!("xtask: {err:#}");
            }
        }
    }
}

/// How [`end`] stops a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// SIGTERM, then a kill after [`STOP_TIMEOUT`]: a server drains its connections, flushes its
    /// store and exits.
    Graceful,
    /// A kill at once (SIGKILL): a crash, nothing runs after it.
    Crash,
}

/// How a child ended under [`end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It exited by itself: it was gone already, or it answered SIGTERM in time.
    Exited(ExitStatus),
    /// It was killed.
    Killed(ExitStatus),
}

/// Stops `child` as `how` says and reaps it.
pub(crate) fn end(child: &mut Child, how: Stop) -> Result<Ended> {
    if let Some(status) = child.try_wait()? {
        return Ok(Ended::Exited(status));
    }
    if how == Stop::Graceful {
        terminate(child)?;
        if let Some(status) = wait_timeout(child, STOP_TIMEOUT)? {
            return Ok(Ended::Exited(status));
        }
    }
    child.kill().context("cannot kill the child process")?;
    Ok(Ended::Killed(child.wait()?))
}

/// Waits up to `timeout` for `child`: its status, or `None` when it overran and was ended as
/// `how` says.
pub(crate) fn finish_within(
    child: &mut Child,
    timeout: Duration,
    how: Stop,
) -> Result<Option<ExitStatus>> {
    if let Some(status) = wait_timeout(child, timeout)? {
        return Ok(Some(status));
    }
    end(child, how)?;
    Ok(None)
}

/// Waits up to `timeout` for `child`; `None` if it is still running.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
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

/// Asks `child` to stop: SIGTERM on Unix, sent to its PID alone; a kill elsewhere.
pub(crate) fn terminate(child: &mut Child) -> Result<()> {
    if cfg!(unix) {
        let pid = child.id().to_string();
        // A failing kill means the process has just exited on its own; the caller's wait sees it.
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("cannot run kill")?;
        Ok(())
    } else {
        child.kill().context("cannot stop the child process")
    }
}

/// Runs `cargo build -p plotstream` (with `--release` when `release`): the binary it built.
pub(crate) fn build_plotstream(release: bool) -> Result<PathBuf> {
    let mut build = util::cargo(["build", "-p", "plotstream"]);
    if release {
        build.arg("--release");
    }
    if !util::run_echoed(&mut build)? {
        bail!("cargo build -p plotstream failed");
    }
    Ok(util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join(format!("plotstream{}", std::env::consts::EXE_SUFFIX)))
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// How to start `plotstream serve`: the binary and its flags, and how to run it. Every server
/// gets `NO_COLOR=1`, stdin and stdout from and to `/dev/null`, and its stderr drained into a log.
#[derive(Debug, Clone)]
pub(crate) struct Serve {
    binary: PathBuf,
    /// A program that runs the binary, with its arguments before the binary's path: the cross
    /// step's `qemu-aarch64 -L SYSROOT`.
    runner: Vec<String>,
    /// The flags after `serve`.
    flags: Vec<String>,
    /// An RLIMIT_NOFILE set by `sh`, which then `exec`s the server, so the PID stays the server's.
    nofile: Option<u32>,
    env: Vec<(&'static str, String)>,
    current_dir: Option<PathBuf>,
    /// How many of its newest log lines to keep.
    keep: usize,
    name: Option<String>,
    /// Print `$ command` before starting it.
    echo: bool,
}

impl Serve {
    pub(crate) fn new(binary: &Path) -> Serve {
        Serve {
            binary: binary.to_path_buf(),
            runner: Vec::new(),
            flags: Vec::new(),
            nofile: None,
            env: Vec::new(),
            current_dir: None,
            keep: usize::MAX,
            name: None,
            echo: false,
        }
    }

    /// Appends `flags` to the flags after `serve`. It waits for one `plotstream listening on`
    /// line per `--listen` and `--tls-listen` among them (one when there is none).
    pub(crate) fn flags<I, S>(mut self, flags: I) -> Serve
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.flags
            .extend(flags.into_iter().map(|flag| flag.as_ref().to_owned()));
        self
    }

    pub(crate) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Runs the binary with `runner` (a program and its arguments): `runner… binary serve …`.
    /// The runner must exec the binary or be it (qemu-user runs it in its own process), so
    /// that the PID stopped is the server's.
    pub(crate) fn runner(mut self, runner: &[String]) -> Serve {
        self.runner = runner.to_vec();
        self
    }

    /// Runs the server under `ulimit -n nofile`.
    pub(crate) fn nofile(mut self, nofile: u32) -> Serve {
        self.nofile = Some(nofile);
        self
    }

    pub(crate) fn env(mut self, name: &'static str, value: &str) -> Serve {
        self.env.push((name, value.to_owned()));
        self
    }

    pub(crate) fn current_dir(mut self, dir: &Path) -> Serve {
        self.current_dir = Some(dir.to_path_buf());
        self
    }

    /// Keeps only the newest `lines` of its log (all by default).
    pub(crate) fn keep_log(mut self, lines: usize) -> Serve {
        self.keep = lines;
        self
    }

    /// What messages call the server, instead of its command line.
    pub(crate) fn named(mut self, name: String) -> Serve {
        self.name = Some(name);
        self
    }

    /// Prints `$ command` when starting it.
    pub(crate) fn echo(mut self) -> Serve {
        self.echo = true;
        self
    }

    /// The command that starts the server.
    pub(crate) fn command(&self) -> Command {
        // What runs: the runner's program with its arguments and the binary, or the binary.
        let mut words: Vec<&std::ffi::OsStr> = self.runner.iter().map(|w| w.as_ref()).collect();
        words.push(self.binary.as_os_str());
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .args(&words);
                sh
            }
            None => {
                let mut cmd = Command::new(words[0]);
                cmd.args(&words[1..]);
                cmd
            }
        };
        cmd.arg("serve").args(&self.flags).env("NO_COLOR", "1");
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts the server and waits until every listener has printed its address.
    pub(crate) fn start(&self) -> Result<Server> {
        let mut cmd = self.command();
        if self.echo {
            println!("$ {}", util::display_command(&cmd));
        }
        let listeners = self
            .flags
            .iter()
            .filter(|flag| *flag == "--listen" || *flag == "--tls-listen")
            .count()
            .max(1);
        let what = self
            .name
            .clone()
            .unwrap_or_else(|| format!("plotstream serve {}", self.flags.join(" ")));
        let mut process = Supervised::spawn(&mut cmd, Watch::Stderr, self.keep, Some(what))?;
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        process.wait_for("the address of every listener", |line| {
            match parse_listening(line) {
                Some(Listening { tls: false, addr }) => plain.push(addr),
                Some(Listening { tls: true, addr }) => tls.push(addr),
                None => {}
            }
            (plain.len() + tls.len() >= listeners).then_some(())
        })?;
        Ok(Server {
            process,
            plain,
            tls,
            serve: self.clone(),
        })
    }
}

/// A running `plotstream serve`, stopped by PID when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    process: Supervised,
    /// The plaintext listeners, in the order of the flags.
    plain: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    /// How it was started.
    serve: Serve,
}

impl Server {
    /// The plaintext listener clients use: the last one (the first may be port 80).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.plain
            .last()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The TLS listeners, in the order of the flags.
    pub(crate) fn tls(&self) -> &[SocketAddr] {
        &self.tls
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(crate) fn describe(&self) -> String {
        self.process.describe()
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.process.log()
    }

    pub(crate) fn log_handle(&self) -> SharedLog {
        self.process.log_handle()
    }

    /// Stops the server by PID and waits for it to exit. A graceful stop that takes longer than
    /// [`STOP_TIMEOUT`] is an `Err` (and the server is killed).
    pub(crate) fn stop(&mut self, how: Stop) -> Result<ExitStatus> {
        self.process.stop(how)
    }

    /// Starts this (stopped) server again, with its flags, on the addresses it had: what a client
    /// was told (its server URL, the URLs it got) names the new server.
    pub(crate) fn restart(&self) -> Result<Server> {
        let mut serve = self.serve.clone();
        serve.flags = same_addresses(&serve.flags, &self.plain, &self.tls);
        serve.start()
    }
}

/// A `plotstream listening on http://ADDR` (or `https://`) line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listening {
    pub(crate) tls: bool,
    pub(crate) addr: SocketAddr,
}

/// The listener a `plotstream listening on http://127.0.0.1:PORT` (or `https://`) line names.
pub(crate) fn parse_listening(line: &str) -> Option<Listening> {
    let url = line.trim().strip_prefix("plotstream listening on ")?;
    let (tls, addr) = match url.strip_prefix("https://") {
        Some(addr) => (true, addr),
        None => (false, url.strip_prefix("http://")?),
    };
    Some(Listening {
        tls,
        addr: addr.parse().ok()?,
    })
}

/// `flags` with the value of each `--listen` and `--tls-listen` replaced by the address that
/// listener bound, in order: the flags that start a server again where it was (a port 0 becomes
/// the port it got).
fn same_addresses(flags: &[String], plain: &[SocketAddr], tls: &[SocketAddr]) -> Vec<String> {
    let (mut plain, mut tls) = (plain.iter(), tls.iter());
    let mut out = Vec::with_capacity(flags.len());
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        out.push(flag.clone());
        let bound = match flag.as_str() {
            "--listen" => plain.next(),
            "--tls-listen" => tls.next(),
            _ => continue,
        };
        if let Some(value) = flags.next() {
            out.push(bound.map_or_else(|| value.clone(), SocketAddr::to_string));
        }
    }
    out
}

/// The binary is built before it starts, so printing its addresses takes milliseconds; a durable
/// store recovers before it binds.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The server drains its connections for up to 10 s after SIGTERM (`Config::drain`).
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(line: &str, expected: Option<(bool, SocketAddr)>) {
        let parsed = parse_listening(line).map(|l| (l.tls, l.addr));
        assert_eq!(parsed, expected, "line: {line:?}");
    }

    #[test]
    fn listening_lines_give_the_addresses() {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        check(
            "plotstream listening on http://127.0.0.1:9999",
            Some((false, local(9999))),
        );
        check(
            "plotstream listening on http://127.0.0.1:41523\n",
            Some((false, local(41523))),
        );
        check(
            "plotstream listening on https://127.0.0.1:443\n",
            Some((true, local(443))),
        );
        check(
            "plotstream listening on http://[::1]:8080",
            Some((false, "[::1]:8080".parse().unwrap_or(local(0)))),
        );
        check(
            "live view of the demo stream: http://127.0.0.1:9999/streams/demo",
            None,
        );
        check("streams: http://127.0.0.1:9999/", None);
        check("plotstream listening on http://x", None);
        check("plotstream listening on http://127.0.0.1:", None);
        check("plotstream listening on http://127.0.0.1:99999", None);
        check("2024-01-01T00:00:00Z  INFO plotstream: started", None);
    }

    #[test]
    fn a_restart_listens_where_the_server_listened() {
        let flags: Vec<String> = [
            "--listen",
            "127.0.0.1:80",
            "--data-dir",
            "d",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned)
        .into();
        let plain = [
            SocketAddr::from(([127, 0, 0, 1], 80)),
            SocketAddr::from(([127, 0, 0, 1], 41234)),
        ];
        let tls = [SocketAddr::from(([127, 0, 0, 1], 41235))];
        assert_eq!(
            same_addresses(&flags, &plain, &tls),
            [
                "--listen",
                "127.0.0.1:80",
                "--data-dir",
                "d",
                "--listen",
                "127.0.0.1:41234",
                "--tls-listen",
                "127.0.0.1:41235"
            ]
        );
    }

    /// A child that prints its address on stdout, as the bench's hyper sink does, is read, kept
    /// in the log and stopped by SIGTERM; one that exits first is an error that says so.
    #[cfg(unix)]
    #[test]
    fn supervised_children_are_read_logged_and_stopped() -> Result<()> {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo starting; echo listening on 127.0.0.1:1; exec sleep 30",
        ]);
        let mut child = Supervised::spawn(&mut cmd, Watch::Stdout, 1, Some("the sink".into()))?;
        let addr = child.wait_for("where it listens", |line| {
            line.strip_prefix("listening on ").map(str::to_owned)
        })?;
        assert_eq!(addr, "127.0.0.1:1");
        assert_eq!(child.log(), ["listening on 127.0.0.1:1"]);
        let status = child.stop(Stop::Graceful)?;
        assert!(!status.success(), "sleep ended by SIGTERM: {status}");

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo no address here"]);
        let mut child = Supervised::spawn(&mut cmd, Watch::Stdout, 10, None)?;
        let err = child
            .wait_for("where it listens", |_| None::<()>)
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("exited before it printed where it listens; its log:\nno address here"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn the_ulimit_wrapper_execs_the_server_with_its_flags() {
        let serve = Serve::new(Path::new("/bin/plotstream"))
            .flags(["--listen", "127.0.0.1:0"])
            .nofile(256);
        assert_eq!(
            util::display_command(&serve.command()),
            "sh -c ulimit -n 256 && exec \"$0\" \"$@\" /bin/plotstream serve --listen 127.0.0.1:0"
        );
        let plain = Serve::new(Path::new("/bin/plotstream")).flags(["--demo"]);
        assert_eq!(
            util::display_command(&plain.command()),
            "/bin/plotstream serve --demo"
        );
        let emulated = plain.runner(&["qemu-aarch64".to_owned(), "-L".to_owned(), "/x".to_owned()]);
        assert_eq!(
            util::display_command(&emulated.command()),
            "qemu-aarch64 -L /x /bin/plotstream serve --demo"
        );
    }
}
