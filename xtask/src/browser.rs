//! `cargo xtask browser`: the live viewer in a real browser.
//!
//! Builds `plotstream`, starts `plotstream serve --demo` on a free port, and runs
//! `xtask/browser/check.mjs` (playwright-core driving the system's headless Chromium) against
//! it. The check passes when, on `/streams/demo`, the plot has a trace that grows over three
//! seconds, `#state` says `live` and `#rate` shows a positive rate; when a figure made through
//! `POST /clientresp` with a plotly.js 2 layout and an HTML-injecting file name draws its points
//! and titles, and the index shows that name as text without running it; when the figure's
//! `.embed` page can be framed from another origin and its full page cannot; and when no page
//! logged a Content-Security-Policy violation or a console error, or requested anything from
//! another origin. It leaves full-page screenshots in `<target dir>/browser-check.png` (the
//! live view) and `browser-check-figure.png`.
//!
//! Playwright never downloads a browser here: the check needs Chromium from the system (`.ci/run`
//! installs it) and node with npm; without them the CI step is skipped, not failed. plotly.js
//! comes from the server's binary, so nothing is installed for the viewer.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::util;

pub(crate) fn run(args: util::Args) -> Result<ExitCode> {
    let (positional, _) = args.finish()?;
    if let Some(extra) = positional.first() {
        bail!("`browser` takes no positional argument, got `{extra}`");
    }
    let chromium = match check_available() {
        Ok(chromium) => chromium,
        Err(reason) => bail!("{reason}"),
    };
    Ok(if check(&chromium)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The Chromium to drive if the check can run, else the reason to print after `SKIPPED`.
pub(crate) fn check_available() -> Result<PathBuf, &'static str> {
    let chromium = Some(PathBuf::from(SYSTEM_CHROMIUM))
        .filter(|path| path.is_file())
        .or_else(|| find_on_path("chromium"))
        .ok_or("chromium not installed; .ci/run installs it")?;
    if !util::succeeds_quietly(Command::new("node").arg("--version"))
        || !util::succeeds_quietly(Command::new("npm").arg("--version"))
    {
        return Err("node and npm not installed");
    }
    Ok(chromium)
}

/// Runs the whole check with `chromium`; `Ok(true)` if it passed.
///
/// `Err` means the check could not run (npm install or the build failed, the server did not
/// start). The server is stopped on every path, including errors.
pub(crate) fn check(chromium: &Path) -> Result<bool> {
    let root = util::project_root();
    npm_install(&root.join("xtask/browser"))?;
    if !util::run_echoed(&mut util::cargo(["build", "-p", "plotstream"]))? {
        bail!("cargo build -p plotstream failed");
    }
    let target_dir = util::target_dir();
    let binary = target_dir
        .join("debug")
        .join(format!("plotstream{}", env::consts::EXE_SUFFIX));
    let screenshot = target_dir.join(SCREENSHOT_FILE);
    // check.mjs names the figure page's screenshot after the first one.
    let figure_screenshot = target_dir.join(FIGURE_SCREENSHOT_FILE);
    // A screenshot of an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&screenshot);
    let _ = std::fs::remove_file(&figure_screenshot);

    let mut server = Server::start(&binary)?;
    let origin = format!("http://127.0.0.1:{}", server.port);
    let mut node = Command::new("node");
    node.arg(root.join("xtask/browser/check.mjs"))
        .arg(&origin)
        .arg(&screenshot)
        .env("CHROMIUM_PATH", chromium)
        .current_dir(&root);
    let passed = run_with_timeout(&mut node, CHECK_TIMEOUT);
    let stopped = server.stop();

    let passed = passed?;
    let stopped_cleanly = match stopped {
        Ok(status) if status.success() => true,
        Ok(status) => {
            println!("browser: the server exited with {status} after SIGTERM");
            false
        }
        Err(err) => {
            println!("browser: {err:#}");
            false
        }
    };
    if !passed || !stopped_cleanly {
        println!("browser: the server's log:");
        for line in server.log() {
            println!("  | {line}");
        }
    }
    for path in [&screenshot, &figure_screenshot] {
        if path.is_file() {
            println!("browser: screenshot at {}", path.display());
        }
    }
    Ok(passed && stopped_cleanly)
}

/// A running `plotstream serve --demo`, stopped when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    port: u16,
    /// Every stderr line so far, printed when the check fails.
    log: util::SharedLog,
}

impl Server {
    /// Starts the demo server on a free port and waits for the line that names the port.
    fn start(binary: &Path) -> Result<Server> {
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--demo", "--in-memory", "--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        println!("$ {}", util::display_command(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let (log, lines_rx) = util::drain_stderr(&mut child, usize::MAX)?;

        let mut server = Server {
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
                        println!("browser: the demo server listens on 127.0.0.1:{port}");
                        return Ok(server);
                    }
                }
                // `server` is dropped on return, which stops the child.
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "the server did not print its port within {} s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    server.log().join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "the server exited before printing its port; its log:\n{}",
                    server.log().join("\n")
                ),
            }
        }
    }

    /// Stops the server with SIGTERM, which it answers with a graceful shutdown, and waits for it.
    /// After [`STOP_TIMEOUT`] it is killed, and that is an error.
    fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        util::terminate(&mut self.child)?;
        if let Some(status) = wait_timeout(&mut self.child, STOP_TIMEOUT)? {
            return Ok(status);
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!(
            "the server did not stop within {} s of SIGTERM and was killed",
            STOP_TIMEOUT.as_secs()
        )
    }

    fn log(&self) -> Vec<String> {
        util::log_lines(&self.log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Err(err) = self.stop() {
                println!("browser: {err:#}");
            }
        }
    }
}

/// Runs `cmd` with inherited stdio; `Ok(true)` if it exited with 0 within `timeout`.
///
/// A command that runs too long gets SIGTERM first, so that node can close Chromium, and is
/// killed if that does not end it.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<bool> {
    println!("$ {}", util::display_command(cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", util::display_command(cmd)))?;
    if let Some(status) = wait_timeout(&mut child, timeout)? {
        return Ok(status.success());
    }
    println!(
        "browser: `{}` did not finish within {} s; stopping it",
        util::display_command(cmd),
        timeout.as_secs()
    );
    util::terminate(&mut child)?;
    if wait_timeout(&mut child, STOP_TIMEOUT)?.is_none() {
        child.kill()?;
        child.wait()?;
    }
    Ok(false)
}

/// Runs `npm install` in `dir` unless every dependency of its `package.json` is already installed
/// at exactly the pinned version.
pub(crate) fn npm_install(dir: &Path) -> Result<()> {
    let manifest_path = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .with_context(|| format!("cannot parse {}", manifest_path.display()))?;
    let stale = stale_dependencies(&manifest, |name| {
        let path = dir.join("node_modules").join(name).join("package.json");
        let text = std::fs::read_to_string(path).ok()?;
        let installed: Value = serde_json::from_str(&text).ok()?;
        installed["version"].as_str().map(str::to_owned)
    });
    if stale.is_empty() {
        println!("npm: {} is current", dir.join("node_modules").display());
        return Ok(());
    }
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-audit", "--no-fund"])
        .current_dir(dir);
    if !util::run_echoed(&mut cmd)? {
        bail!("npm install failed in {}", dir.display());
    }
    Ok(())
}

/// The dependencies of a `package.json` that are not installed at the version it names.
/// `installed_version(name)` reads `node_modules/<name>/package.json`.
fn stale_dependencies(
    manifest: &Value,
    installed_version: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let Some(dependencies) = manifest["dependencies"].as_object() else {
        return Vec::new();
    };
    dependencies
        .iter()
        .filter(|(name, spec)| {
            // A range (`^1.2.3`) never equals an installed version, so it is always installed
            // afresh; this repository pins exact versions.
            installed_version(name).as_deref() != spec.as_str()
        })
        .map(|(name, _)| name.clone())
        .collect()
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

/// `chromium` in a directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

const SYSTEM_CHROMIUM: &str = "/usr/bin/chromium";
const SCREENSHOT_FILE: &str = "browser-check.png";
const FIGURE_SCREENSHOT_FILE: &str = "browser-check-figure.png";
/// check.mjs gives each of its three pages and the framing check 20 s to draw (about 10 s in
/// all when they do) and watches the live view for 3 s; the rest is Chromium's start.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// The binary is built before it starts, so printing its port takes milliseconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The server drains its connections for up to 10 s after SIGTERM (`Config::drain`).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check_port(line: &str, expected: Option<u16>) {
        assert_eq!(util::parse_listening_port(line), expected, "line: {line:?}");
    }

    #[test]
    fn listening_lines_give_the_port() {
        check_port("plotstream listening on http://127.0.0.1:9999", Some(9999));
        check_port(
            "plotstream listening on http://127.0.0.1:41523\n",
            Some(41523),
        );
        check_port("plotstream listening on http://[::1]:8080", Some(8080));
        check_port(
            "live view of the demo stream: http://127.0.0.1:9999/streams/demo",
            None,
        );
        check_port("plotstream listening on http://127.0.0.1:", None);
        check_port("plotstream listening on http://127.0.0.1:99999", None);
        check_port("2024-01-01T00:00:00Z  INFO plotstream: started", None);
    }

    #[test]
    fn stale_dependencies_are_the_ones_not_installed_as_pinned() {
        let manifest = json!({
            "name": "x",
            "dependencies": {"current": "1.2.3", "older": "2.0.0", "missing": "3.0.0", "range": "^4.0.0"}
        });
        let installed = |name: &str| match name {
            "current" => Some("1.2.3".to_owned()),
            "older" => Some("1.9.0".to_owned()),
            "range" => Some("4.1.0".to_owned()),
            _ => None,
        };
        let mut stale = stale_dependencies(&manifest, installed);
        stale.sort();
        assert_eq!(stale, ["missing", "older", "range"]);
        assert!(stale_dependencies(&json!({"name": "x"}), |_| None).is_empty());
    }
}
