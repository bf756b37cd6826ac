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
//! Then, where redis-server is installed, `xtask/browser/reconnecting.mjs` watches the live view
//! of a `serve --demo --redis` node while Redis is killed and started again: the page must say
//! `reconnecting` and keep its points, then `live` with new ones
//! (`browser-check-reconnecting.png`).
//!
//! Last, `xtask/browser/history.mjs` explores a day of points on a `serve --data-dir` of its
//! own: the day at a glance downsampled (spikes kept), two minutes of it zoomed with every point,
//! the CSV link, and back to live without a reload (`browser-check-history.png`, the zoom, and
//! `browser-check-history-day.png`).
//!
//! Playwright never downloads a browser here: the check needs Chromium from the system (`.ci/run`
//! installs it) and node with npm; without them the CI step is skipped, not failed. plotly.js
//! comes from the server's binary, so nothing is installed for the viewer.

use std::{
    env,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    process::{self, Serve, Stop},
    redis::RedisServer,
    util,
};

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
    util::npm_install(&root.join("xtask/browser"))?;
    let binary = process::build_plotstream(false)?;
    let target_dir = util::target_dir();
    let screenshot = target_dir.join(SCREENSHOT_FILE);
    // check.mjs names the figure page's screenshot after the first one.
    let figure_screenshot = target_dir.join(FIGURE_SCREENSHOT_FILE);
    // A screenshot of an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&screenshot);
    let _ = std::fs::remove_file(&figure_screenshot);

    let mut server = Serve::new(&binary)
        .flags(["--demo", "--in-memory", "--listen", "127.0.0.1:0"])
        .named("the demo server".to_owned())
        .echo()
        .start()?;
    let origin = format!("http://127.0.0.1:{}", server.port());
    println!("browser: the demo server listens on {origin}");
    let mut node = Command::new("node");
    node.arg(root.join("xtask/browser/check.mjs"))
        .arg(&origin)
        .arg(&screenshot)
        .env("CHROMIUM_PATH", chromium)
        .current_dir(&root);
    let passed = run_with_timeout(&mut node, CHECK_TIMEOUT);
    let stopped = server.stop(Stop::Graceful);

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
    let reconnects = reconnecting(&binary, chromium)?;
    let explores = history(&binary, chromium)?;
    Ok(passed && stopped_cleanly && reconnects && explores)
}

/// `reconnecting.mjs`: the live view of a node on Redis while Redis is killed and started
/// again from its AOF, the harness doing each when the page says it is ready for it. Passes
/// when the page says `reconnecting` keeping its points, then `live` with new ones. Skipped,
/// with a line, where there is no redis-server.
fn reconnecting(binary: &Path, chromium: &Path) -> Result<bool> {
    let root = util::project_root();
    let target_dir = util::target_dir();
    let Some(mut redis) = RedisServer::start(&target_dir.join("browser-redis"))? else {
        println!("browser: no redis-server; the reconnecting check is SKIPPED");
        return Ok(true);
    };
    let screenshot = target_dir.join(RECONNECTING_SCREENSHOT_FILE);
    let _ = std::fs::remove_file(&screenshot);
    let url = redis.url();
    let mut server = Serve::new(binary)
        .flags(["--demo", "--redis", &url, "--lease-time", "1s"])
        .flags(["--listen", "127.0.0.1:0"])
        .named("the demo node on Redis".to_owned())
        .echo()
        .start()?;
    let origin = format!("http://127.0.0.1:{}", server.port());
    let mut node = Command::new("node");
    node.arg(root.join("xtask/browser/reconnecting.mjs"))
        .arg(&origin)
        .arg(&screenshot)
        .env("CHROMIUM_PATH", chromium)
        .current_dir(&root)
        .stdout(Stdio::piped());
    println!("$ {}", util::display_command(&node));
    let mut child = node.spawn().context("cannot start node")?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut passed = false;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        println!("browser: the page says `{line}`");
        match line.as_str() {
            "live" => redis.kill(),
            "reconnecting" => {
                if let Err(e) = redis.restart() {
                    println!("browser: {e:#}");
                    break;
                }
            }
            "live again" => {
                passed = true;
                break;
            }
            _ => {}
        }
    }
    match process::wait_timeout(&mut child, Duration::from_secs(10))? {
        Some(status) => passed &= status.success(),
        None => {
            process::end(&mut child, Stop::Graceful)?;
            passed = false;
        }
    }
    let stopped = server.stop(Stop::Graceful);
    if !passed
        || !stopped
            .as_ref()
            .is_ok_and(std::process::ExitStatus::success)
    {
        println!("browser: the node's log:");
        for line in server.log() {
            println!("  | {line}");
        }
    }
    if screenshot.is_file() {
        println!("browser: screenshot at {}", screenshot.display());
    }
    Ok(passed)
}

/// `history.mjs`: a server with a fresh data directory, to which the check writes a day of points
/// and whose viewer it drives through that day's history. Passes when the check does and the
/// server stops cleanly; the data directory is removed either way.
fn history(binary: &Path, chromium: &Path) -> Result<bool> {
    let root = util::project_root();
    let target_dir = util::target_dir();
    let data_dir = target_dir.join("browser-history-data");
    let screenshot = target_dir.join(HISTORY_SCREENSHOT_FILE);
    let day_screenshot = target_dir.join(HISTORY_DAY_SCREENSHOT_FILE);
    for path in [&screenshot, &day_screenshot] {
        let _ = std::fs::remove_file(path);
    }
    // A directory left by an interrupted run would hold that run's stream.
    let _ = std::fs::remove_dir_all(&data_dir);
    let data_dir_flag = data_dir.display().to_string();
    let mut server = Serve::new(binary)
        .flags(["--data-dir", &data_dir_flag, "--listen", "127.0.0.1:0"])
        .named("the history server".to_owned())
        .echo()
        .start()?;
    let origin = format!("http://127.0.0.1:{}", server.port());
    let mut node = Command::new("node");
    node.arg(root.join("xtask/browser/history.mjs"))
        .arg(&origin)
        .arg(&screenshot)
        .env("CHROMIUM_PATH", chromium)
        .current_dir(&root);
    let passed = run_with_timeout(&mut node, HISTORY_TIMEOUT);
    let stopped = server.stop(Stop::Graceful);
    let passed = passed?;
    let stopped_cleanly = stopped
        .as_ref()
        .is_ok_and(std::process::ExitStatus::success);
    if !passed || !stopped_cleanly {
        println!("browser: the history server's log:");
        for line in server.log() {
            println!("  | {line}");
        }
    }
    for path in [&screenshot, &day_screenshot] {
        if path.is_file() {
            println!("browser: screenshot at {}", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(passed && stopped_cleanly)
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
    if let Some(status) = process::wait_timeout(&mut child, timeout)? {
        return Ok(status.success());
    }
    println!(
        "browser: `{}` did not finish within {} s; stopping it",
        util::display_command(cmd),
        timeout.as_secs()
    );
    process::end(&mut child, Stop::Graceful)?;
    Ok(false)
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
const RECONNECTING_SCREENSHOT_FILE: &str = "browser-check-reconnecting.png";
const HISTORY_SCREENSHOT_FILE: &str = "browser-check-history.png";
/// history.mjs names the day's screenshot after the zoom's.
const HISTORY_DAY_SCREENSHOT_FILE: &str = "browser-check-history-day.png";
/// check.mjs gives each of its three pages and the framing check 20 s to draw (about 10 s in
/// all when they do) and watches the live view for 3 s; the rest is Chromium's start.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// history.mjs writes its day in about 2 s and gives each of its phases 30 s; it takes about 16 s
/// when they pass.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(120);
