//! `cargo xtask compat`: the real Plotly clients of the streaming era against a real
//! `plotstream serve` (issue 4; docs/protocol.md §9.2, scenarios V1–V23).
//!
//! The suite installs the clients on a fresh machine, under `<target dir>/compat/`:
//!
//! - `venv/`: a Python venv with `xtask/compat/python/requirements.txt` (`chart_studio==1.1.0`,
//!   `plotly==6.0.0`, `ipython`, `numpy`), reused while that file is unchanged;
//! - `node/`: `npm install` of `xtask/compat/node/package.json` (`plotly@1.0.6`);
//! - `cert.pem`, `key.pem`: a self-signed certificate for `127.0.0.1` made with `openssl`, for
//!   the TLS listener node's `plot()` needs (without openssl only that case is skipped).
//!
//! Every case starts its own `plotstream serve` (built with `cargo build -p plotstream`) on
//! loopback ports with the flags it needs, so that no case sees another's streams or figures, and
//! stops it by PID when it ends, whatever happened. The tutorial's server also listens on port 80:
//! chart_studio's stream port is fixed, and the tutorial runs unchanged. Python and node cases are
//! the scripts of `xtask/compat/{python,node}`, run with a time limit, their output kept in
//! `compat/logs/`. Each case prints one line, `compat ID name ... ok`, and counts as one passed
//! or failed test.
//!
//! Only real client programs run here. The scenarios that are byte transcripts (the Arduino and
//! ESP8266 sketches, chart_studio's §2.9 bytes, V12–V17, V19's `/clientresp`) are cases of the
//! conformance catalogue (`crates/plotstream-cases/cases/V*.toml`), run by `cargo xtask
//! conform` over sockets and by `plotstream-proto`'s tests through `Ingest`.
//!
//! Cases F1–F6 (issue 7) drive the same clients through the simulator (`serve --fault`, with a
//! short `--linger`) and check what each loses and how it recovers against docs/protocol.md §5:
//! chart_studio through `disconnect`, `flap`, seeded `status` and `reset`
//! (`xtask/compat/python/simulator.py` holds the §5.1.3 accounting), node through `disconnect`
//! with a status and through `delay`, watched by a viewer.
//!
//! Cases U1–U5 run the same clients against keys mode (`serve --users FILE`): the users file is
//! made by the real binary (`plotstream user add demo --users FILE --api-key demokey123
//! --stream-ids 2`), and the account it prints reaches the scripts as `COMPAT_USERNAME`,
//! `COMPAT_API_KEY` and `COMPAT_STREAM_IDS`. They check `py.plot`, `py.Stream`, the embed and
//! secret URLs with the right key, and what chart_studio and node show for a wrong one.

use std::{
    cell::RefCell,
    env,
    ffi::OsString,
    fs,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{browser, util};

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let list = args.flag("--list");
    let (filters, _) = args.finish()?;
    if list {
        for case in selected(&filters) {
            println!("{} {}", case.id, case.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tally = suite(&filters)?;
    // Flush before the last line so that nothing a child wrote can land after it.
    std::io::stdout().flush()?;
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the suite contributes to `cargo xtask ci`: one count per case.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) skipped: u64,
    /// `ID name: first line of the error` for each failed case.
    pub(crate) failures: Vec<String>,
}

/// Prepares the clients and runs every case whose `ID name` contains one of `filters` (all cases
/// without filters). `Err` means the suite could not run at all (the server does not build).
pub(crate) fn suite(filters: &[String]) -> Result<Tally> {
    let started = Instant::now();
    let cases = selected(filters);
    if cases.is_empty() {
        bail!("no compat case matches {filters:?}; `cargo xtask compat --list` lists them");
    }
    let env = Env::prepare(&cases)?;
    let mut tally = Tally::default();
    for case in cases {
        let line = format!("compat {} {}", case.id, case.name);
        print!("{line} ... ");
        std::io::stdout().flush()?;
        let case_started = Instant::now();
        if let Some(reason) = env.missing(case.needs) {
            println!("SKIPPED ({reason})");
            tally.skipped += 1;
            continue;
        }
        let case_env = CaseEnv {
            env: &env,
            slug: slug(&case),
            servers: RefCell::new(Vec::new()),
            account: RefCell::new(None),
        };
        let result = (case.run)(&case_env);
        let secs = case_started.elapsed().as_secs_f64();
        match result {
            Ok(Pass(detail)) => {
                println!("ok ({secs:.1} s): {detail}");
                tally.passed += 1;
            }
            Err(err) => {
                println!("FAILED ({secs:.1} s)");
                let text = format!("{err:#}");
                tally.failures.push(format!(
                    "compat {}: {}",
                    case_env.slug,
                    text.lines().next().unwrap_or_default()
                ));
                for line in text.lines() {
                    println!("    {line}");
                }
                case_env.print_server_logs();
                tally.failed += 1;
            }
        }
    }
    println!(
        "compat: {} passed, {} failed, {} skipped in {:.1} s",
        tally.passed,
        tally.failed,
        tally.skipped,
        started.elapsed().as_secs_f64()
    );
    Ok(tally)
}

/// A case that passed, with what it showed.
#[derive(Debug)]
pub(crate) struct Pass(String);

/// What a case needs besides the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Python,
    Node,
    NodeTls,
}

/// One case of the suite; a failure is an `Err` saying what differed.
#[derive(Debug)]
struct Case {
    id: &'static str,
    name: &'static str,
    needs: Needs,
    run: fn(&CaseEnv<'_>) -> Result<Pass>,
}

/// The cases `filters` pick: a filter shaped like an ID (`V11`, `F3`, `U2`, `tutorial`) picks
/// the cases of that ID, any other one the cases whose name contains it; no filter picks every
/// case.
fn selected(filters: &[String]) -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|case| {
            filters.is_empty()
                || filters.iter().any(|filter| {
                    let is_id = filter.eq_ignore_ascii_case("tutorial")
                        || filter.len() > 1
                            && filter.starts_with(['V', 'v', 'F', 'f', 'U', 'u'])
                            && filter[1..].bytes().all(|b| b.is_ascii_digit());
                    if is_id {
                        case.id.eq_ignore_ascii_case(filter)
                    } else {
                        case.name.to_lowercase().contains(&filter.to_lowercase())
                    }
                })
        })
        .collect()
}

/// The cases in the order they run: the tutorial, docs/protocol.md §9.2's scenarios, the clients
/// through the simulator's faults, then the clients against keys mode.
fn cases() -> Vec<Case> {
    use Needs::{Node, NodeTls, Python};
    let case = |id, name, needs, run| Case {
        id,
        name,
        needs,
        run,
    };
    vec![
        case(
            "tutorial",
            "the Plotly streaming tutorial, cell by cell, streaming to port 80",
            Python,
            tutorial,
        ),
        case(
            "V1",
            "chart_studio seed stream: py.Stream writes, heartbeat, close",
            Python,
            v1_chart_studio,
        ),
        case(
            "V2",
            "node stream(): callback 200 healthy endpoint disconnect",
            Node,
            v2_node_stream,
        ),
        case(
            "V3",
            "node stream() without a write: late head accepted, L1 closes silently",
            Node,
            v3_node_late_head,
        ),
        case(
            "V10",
            "chart_studio with an unknown token, --tokens registered",
            Python,
            v10_registered,
        ),
        case(
            "V11",
            "idle 408: chart_studio loses one write, the next reconnects",
            Python,
            v11_chart_studio_idle,
        ),
        case(
            "V11",
            "idle 408: node reports it mid-stream",
            Node,
            v11_node_idle,
        ),
        case(
            "V18",
            "423 (takeover) while chart_studio writes every 100 ms",
            Python,
            v18_takeover,
        ),
        case(
            "V18",
            "408 (idle) while chart_studio writes every 100 ms",
            Python,
            v18_idle,
        ),
        case(
            "V20",
            "node plot() over TLS, then stream() to the learned host",
            NodeTls,
            v20_node_plot_tls,
        ),
        case(
            "V21",
            "py.plot, first run and re-run",
            Python,
            v21_plot_rerun,
        ),
        case("V22", "py.plot with sharing='secret'", Python, v22_secret),
        case("V23", "py.iplot and tls.embed", Python, v23_iplot_embed),
        case(
            "F1",
            "chart_studio through disconnect:after=5: one write lost per end",
            Python,
            f1_disconnect,
        ),
        case(
            "F2",
            "chart_studio through flap:every=1: one write lost per flap",
            Python,
            f2_flap,
        ),
        case(
            "F3",
            "chart_studio through status:code=503 --seed 7, twice: the same losses",
            Python,
            f3_status_seeded,
        ),
        case(
            "F4",
            "chart_studio through reset: the only ConnectionResetError",
            Python,
            f4_reset,
        ),
        case(
            "F5",
            "node stream() through disconnect:after=3,status=408: no reconnect",
            Node,
            f5_node_disconnect_408,
        ),
        case(
            "F6",
            "node stream() through delay:ms=300: every point arrives, late",
            Node,
            f6_node_delay,
        ),
        case(
            "U1",
            "keys mode: py.plot first run and re-run, py.Stream to the user's stream id",
            Python,
            u1_keys_plot_stream,
        ),
        case(
            "U2",
            "keys mode: py.iplot and tls.embed, the embed URL over HTTP",
            Python,
            u2_keys_embed,
        ),
        case(
            "U3",
            "keys mode: sharing='secret' is served with its share_key, 404 without",
            Python,
            u3_keys_secret,
        ),
        case(
            "U4",
            "keys mode: chart_studio with a wrong key raises PlotlyRequestError 401",
            Python,
            u4_keys_wrong_key,
        ),
        case(
            "U5",
            "keys mode: node plot() with a wrong key, then the right one",
            NodeTls,
            u5_node_plot_keys,
        ),
    ]
}

// ---- the Python and node cases -------------------------------------------------------------------

fn tutorial(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env
        .server(&["--listen", "127.0.0.1:80", "--listen", "127.0.0.1:0"])
        .context(
            "the unmodified tutorial streams to port 80 (py.Stream.HTTP_PORT is fixed), so the \
             server must listen on 127.0.0.1:80, which needs root or CAP_NET_BIND_SERVICE and a \
             free port",
        )?;
    env.python("run_tutorial.py", &[], &server, TUTORIAL_TIMEOUT)
}

fn v1_chart_studio(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    env.python("v1_seed_stream.py", &[], &server, SCRIPT_TIMEOUT)
}

fn v10_registered(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--tokens", "registered"])?;
    env.python("v10_registered_unknown.py", &[], &server, SCRIPT_TIMEOUT)
}

fn v11_chart_studio_idle(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--idle-timeout", "2s"])?;
    env.python("v11_idle.py", &[], &server, SCRIPT_TIMEOUT)
}

fn v18_takeover(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    env.python("v18_server_ends.py", &["takeover"], &server, SCRIPT_TIMEOUT)
}

fn v18_idle(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--idle-timeout", "2s"])?;
    env.python("v18_server_ends.py", &["idle"], &server, SCRIPT_TIMEOUT)
}

fn v21_plot_rerun(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    env.python("v21_plot_rerun.py", &[], &server, SCRIPT_TIMEOUT)
}

fn v22_secret(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    env.python("v22_secret.py", &[], &server, SCRIPT_TIMEOUT)
}

fn v23_iplot_embed(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    env.python("v23_iplot_embed.py", &[], &server, SCRIPT_TIMEOUT)
}

fn v2_node_stream(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    env.node("v2_stream_basic.js", &server, &[])
}

fn v3_node_late_head(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[])?;
    let slow = env.server(&["--pre-head-timeout", "2s"])?;
    let slow_port = slow.addr().port().to_string();
    env.node(
        "v3_stream_late_head.js",
        &server,
        &[("COMPAT_SLOW_PORT", slow_port.into())],
    )
}

fn v11_node_idle(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--idle-timeout", "2s"])?;
    env.node("v11_stream_idle_408.js", &server, &[])
}

fn v20_node_plot_tls(env: &CaseEnv<'_>) -> Result<Pass> {
    let Ok((cert, key)) = &env.env.tls else {
        bail!("no certificate");
    };
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    // plot() reaches the server through the TLS port; the figure's URL should name the plain
    // listener, which needs --public-url, so that listener's port is chosen before the start.
    let listen = format!("127.0.0.1:{}", free_port()?);
    let public_url = format!("http://{listen}");
    let server = env.server(&[
        "--listen",
        &listen,
        "--public-url",
        &public_url,
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ])?;
    let tls_port = server
        .tls
        .first()
        .context("the server has no TLS listener")?
        .port()
        .to_string();
    env.node(
        "v20_plot_tls.js",
        &server,
        &[("COMPAT_TLS_PORT", tls_port.into())],
    )
}

// ---- the clients through the simulator's faults (issue 7) ----------------------------------------

fn f1_disconnect(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--fault", "disconnect:after=5", "--linger", FAULT_LINGER])?;
    env.python("f1_disconnect.py", &[], &server, SCRIPT_TIMEOUT)
}

fn f2_flap(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--fault", "flap:every=1", "--linger", FAULT_LINGER])?;
    env.python("f2_flap.py", &[], &server, SCRIPT_TIMEOUT)
}

fn f3_status_seeded(env: &CaseEnv<'_>) -> Result<Pass> {
    // Two fresh servers with the same seed: the script runs the same writes against each.
    let flags = [
        "--fault",
        "status:code=503,prob=0.3",
        "--seed",
        "7",
        "--linger",
        FAULT_LINGER,
    ];
    let first = env.server(&flags)?;
    let second = env.server(&flags)?;
    let other = format!("http://{}", second.addr());
    env.python("f3_status_seeded.py", &[&other], &first, SCRIPT_TIMEOUT)
}

fn f4_reset(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[
        "--fault",
        "reset:prob=1,token=f4always01",
        "--fault",
        "reset:prob=0.5,token=f4half0001",
        "--seed",
        "1",
        "--linger",
        FAULT_LINGER,
    ])?;
    env.python("f4_reset.py", &[], &server, SCRIPT_TIMEOUT)
}

fn f5_node_disconnect_408(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&[
        "--fault",
        "disconnect:after=3,status=408",
        "--linger",
        FAULT_LINGER,
    ])?;
    env.node("f5_stream_disconnect_408.js", &server, &[])
}

fn f6_node_delay(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.server(&["--fault", "delay:ms=300"])?;
    env.node("f6_stream_delay.js", &server, &[])
}

// ---- the clients against keys mode (`serve --users FILE`) -----------------------------------------

fn u1_keys_plot_stream(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.keys_server(&[])?;
    env.python("u1_keys_plot_stream.py", &[], &server, SCRIPT_TIMEOUT)
}

fn u2_keys_embed(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.keys_server(&[])?;
    env.python("u2_keys_embed.py", &[], &server, SCRIPT_TIMEOUT)
}

fn u3_keys_secret(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.keys_server(&[])?;
    env.python("u3_keys_secret.py", &[], &server, SCRIPT_TIMEOUT)
}

fn u4_keys_wrong_key(env: &CaseEnv<'_>) -> Result<Pass> {
    let server = env.keys_server(&[])?;
    env.python("u4_keys_wrong_key.py", &[], &server, SCRIPT_TIMEOUT)
}

fn u5_node_plot_keys(env: &CaseEnv<'_>) -> Result<Pass> {
    let Ok((cert, key)) = &env.env.tls else {
        bail!("no certificate");
    };
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let server = env.keys_server(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ])?;
    let tls_port = server
        .tls
        .first()
        .context("the server has no TLS listener")?
        .port()
        .to_string();
    env.node(
        "u5_plot_keys.js",
        &server,
        &[("COMPAT_TLS_PORT", tls_port.into())],
    )
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(listener.local_addr()?.port())
}

// ---- the environment -----------------------------------------------------------------------------

/// What every case can use: the server binary and the prepared clients.
#[derive(Debug)]
struct Env {
    root: PathBuf,
    /// `<target dir>/compat`.
    work: PathBuf,
    binary: PathBuf,
    /// The venv's python, or why there is none.
    python: Result<PathBuf, String>,
    /// The `node_modules` holding plotly 1.0.6, or why there is none.
    node_modules: Result<PathBuf, String>,
    /// The self-signed certificate and key, or why there are none.
    tls: Result<(PathBuf, PathBuf), String>,
}

impl Env {
    /// Builds the server and prepares what `cases` need.
    fn prepare(cases: &[Case]) -> Result<Env> {
        let needs = |wanted: &[Needs]| cases.iter().any(|case| wanted.contains(&case.needs));
        let root = util::project_root();
        let target_dir = util::target_dir();
        let work = target_dir.join("compat");
        fs::create_dir_all(work.join("logs"))
            .with_context(|| format!("cannot create {}", work.display()))?;

        if !util::run_echoed(&mut util::cargo(["build", "-p", "plotstream"]))? {
            bail!("cargo build -p plotstream failed");
        }
        let binary = target_dir
            .join("debug")
            .join(format!("plotstream{}", env::consts::EXE_SUFFIX));

        let not_needed = "not needed by the selected cases";
        let python = if needs(&[Needs::Python]) {
            prepare_venv(&root, &work)
        } else {
            Err(not_needed.to_owned())
        };
        let node_modules = if needs(&[Needs::Node, Needs::NodeTls]) {
            prepare_node(&root, &work)
        } else {
            Err(not_needed.to_owned())
        };
        let tls = if needs(&[Needs::NodeTls]) {
            prepare_cert(&work)
        } else {
            Err(not_needed.to_owned())
        };
        for (what, result) in [
            ("python venv", python.as_ref().map(|_| ())),
            ("node plotly", node_modules.as_ref().map(|_| ())),
            ("certificate", tls.as_ref().map(|_| ())),
        ] {
            if let Err(reason) = result {
                if reason != not_needed {
                    println!("compat: no {what}: {reason}");
                }
            }
        }
        Ok(Env {
            root,
            work,
            binary,
            python,
            node_modules,
            tls,
        })
    }

    /// Why a case that needs `needs` is skipped: only the TLS case, when openssl is missing.
    /// A missing Python or node is a failure of the cases that need it, not a skip.
    fn missing(&self, needs: Needs) -> Option<String> {
        match (&self.tls, needs) {
            (Err(reason), Needs::NodeTls) if reason.contains(NO_OPENSSL) => Some(reason.clone()),
            _ => None,
        }
    }
}

/// The environment of one case: its scratch home and the servers it started.
#[derive(Debug)]
struct CaseEnv<'a> {
    env: &'a Env,
    slug: String,
    /// The logs of the servers this case started, printed if it fails.
    servers: RefCell<Vec<(String, SharedLog)>>,
    /// The keys-mode account of [`CaseEnv::keys_server`], given to every client script.
    account: RefCell<Option<util::Account>>,
}

impl CaseEnv<'_> {
    /// Starts `plotstream serve` with `flags` (plus `--listen 127.0.0.1:0` unless they listen).
    fn server(&self, flags: &[&str]) -> Result<Server> {
        let server = Server::start(&self.env.binary, &self.env.root, flags)?;
        self.servers
            .borrow_mut()
            .push((server.describe(), Arc::clone(&server.log)));
        Ok(server)
    }

    /// Starts `plotstream serve --users FILE` with `flags`, FILE made by the real binary as
    /// docs/clients.md says: `plotstream user add demo --users FILE --api-key demokey123
    /// --stream-ids 2`. The account it printed goes to the case's client scripts.
    fn keys_server(&self, flags: &[&str]) -> Result<Server> {
        let dir = self.env.work.join("users");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let users = dir.join(format!("{}.jsonl", self.slug));
        if users.exists() {
            fs::remove_file(&users)
                .with_context(|| format!("cannot remove {}", users.display()))?;
        }
        let account = util::run_user_add(&mut util::user_add_command(
            &self.env.binary,
            &users,
            "demo",
            Some("demokey123"),
            2,
        ))?;
        if account.stream_ids.len() != 2 {
            bail!(
                "`plotstream user add --stream-ids 2` issued {:?}",
                account.stream_ids
            );
        }
        *self.account.borrow_mut() = Some(account);
        let users = users.to_string_lossy().into_owned();
        let mut all = vec!["--users", users.as_str()];
        all.extend_from_slice(flags);
        self.server(&all)
    }

    /// Runs a script of `xtask/compat/python` with the venv against `server`.
    fn python(
        &self,
        script: &str,
        args: &[&str],
        server: &Server,
        timeout: Duration,
    ) -> Result<Pass> {
        let python = self
            .env
            .python
            .as_ref()
            .map_err(|reason| anyhow::anyhow!("no python venv: {reason}"))?;
        let dir = self.env.root.join("xtask/compat/python");
        let home = self.fresh_home()?;
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(dir.join(script))
            .args(args)
            .current_dir(&dir)
            .env("PLOTLY_DIR", home.join(".plotly"))
            .env("IPYTHONDIR", home.join(".ipython"))
            .env("PYTHONDONTWRITEBYTECODE", "1");
        self.client_env(&mut cmd, server, &home);
        self.run_script(cmd, timeout)
    }

    /// Runs a script of `xtask/compat/node` with plotly 1.0.6 against `server`.
    fn node(&self, script: &str, server: &Server, vars: &[(&str, OsString)]) -> Result<Pass> {
        let node_modules = self
            .env
            .node_modules
            .as_ref()
            .map_err(|reason| anyhow::anyhow!("no node plotly: {reason}"))?;
        let dir = self.env.root.join("xtask/compat/node");
        let home = self.fresh_home()?;
        let mut cmd = Command::new("node");
        cmd.arg(dir.join(script))
            .current_dir(&dir)
            .env("NODE_PATH", node_modules);
        if let Ok((cert, _)) = &self.env.tls {
            cmd.env("NODE_EXTRA_CA_CERTS", cert);
        }
        for (name, value) in vars {
            cmd.env(name, value);
        }
        self.client_env(&mut cmd, server, &home);
        self.run_script(cmd, NODE_TIMEOUT)
    }

    /// What every client script gets: the server, a scratch home, no proxy for loopback, and in
    /// keys mode the account.
    fn client_env(&self, cmd: &mut Command, server: &Server, home: &Path) {
        cmd.env("COMPAT_SERVER", format!("http://{}", server.addr()))
            .env("HOME", home)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .stdin(Stdio::null());
        if let Some(account) = self.account.borrow().as_ref() {
            cmd.env("COMPAT_USERNAME", &account.username)
                .env("COMPAT_API_KEY", &account.api_key)
                .env("COMPAT_STREAM_IDS", account.stream_ids.join(","));
        }
    }

    /// An empty `compat/home/<case>` directory.
    fn fresh_home(&self) -> Result<PathBuf> {
        let home = self.env.work.join("home").join(&self.slug);
        if home.exists() {
            fs::remove_dir_all(&home)
                .with_context(|| format!("cannot empty {}", home.display()))?;
        }
        fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
        Ok(home)
    }

    /// Runs `cmd` with its output in `compat/logs/<case>.log`, for at most `timeout`. It passes
    /// when it exits with 0; its last `ok: ...` line is the detail.
    fn run_script(&self, mut cmd: Command, timeout: Duration) -> Result<Pass> {
        let log_path = self
            .env
            .work
            .join("logs")
            .join(format!("{}.log", self.slug));
        let log = fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", util::display_command(&cmd)))?;
        let status = browser::wait_timeout(&mut child, timeout)?;
        if status.is_none() {
            // The script's PID alone: it starts no children.
            child.kill().context("cannot stop the script")?;
            child.wait()?;
        }
        let output = fs::read_to_string(&log_path).unwrap_or_default();
        let detail = output
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("ok: "))
            .map(str::to_owned);
        match (status, detail) {
            (Some(status), Some(detail)) if status.success() => Ok(Pass(detail)),
            (status, _) => {
                let how = status.map_or_else(
                    || format!("did not finish within {} s", timeout.as_secs()),
                    |status| format!("exited with {status}"),
                );
                let lines: Vec<&str> = output.lines().collect();
                let tail = lines[lines.len().saturating_sub(OUTPUT_TAIL)..].join("\n");
                bail!(
                    "`{}` {how}; its output ({}), last {OUTPUT_TAIL} lines:\n{tail}",
                    util::display_command(&cmd),
                    log_path.display()
                )
            }
        }
    }

    fn print_server_logs(&self) {
        for (name, log) in self.servers.borrow().iter() {
            let lines = util::log_lines(log);
            println!("    {name}, last {SERVER_LOG_TAIL} lines of its log:");
            for line in &lines[lines.len().saturating_sub(SERVER_LOG_TAIL)..] {
                println!("      | {line}");
            }
        }
    }
}

/// A server's stderr lines, filled by its reader thread.
use util::SharedLog;

/// A file-name-safe name of a case: `v11-idle-408-node-reports-it-mid-stream`.
fn slug(case: &Case) -> String {
    let text = format!("{} {}", case.id, case.name).to_lowercase();
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').chars().take(60).collect()
}

/// Creates (or reuses) the venv with the pinned clients; its python.
fn prepare_venv(root: &Path, work: &Path) -> Result<PathBuf, String> {
    let requirements = root.join("xtask/compat/python/requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .map_err(|err| format!("cannot read {}: {err}", requirements.display()))?;
    let venv = work.join("venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(PINS_MARKER);
    if python.is_file() && fs::read_to_string(&marker).is_ok_and(|pins| pins == wanted) {
        println!(
            "compat: {} is current ({})",
            venv.display(),
            pins_summary(&wanted)
        );
        return Ok(python);
    }
    if !python.is_file() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        if !util::run_echoed(&mut create).map_err(|err| format!("{err:#}"))? {
            return Err("`python3 -m venv` failed (on Debian, install python3-venv)".into());
        }
    }
    let mut install = Command::new(&python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "-r",
        ])
        .arg(&requirements);
    if !util::run_echoed(&mut install).map_err(|err| format!("{err:#}"))? {
        return Err(format!("pip install -r {} failed", requirements.display()));
    }
    fs::write(&marker, &wanted)
        .map_err(|err| format!("cannot write {}: {err}", marker.display()))?;
    Ok(python)
}

/// `chart_studio==1.1.0, plotly==6.0.0, ...`: the requirement lines without comments.
fn pins_summary(requirements: &str) -> String {
    requirements
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Installs `xtask/compat/node/package.json` into `compat/node`; its `node_modules`.
fn prepare_node(root: &Path, work: &Path) -> Result<PathBuf, String> {
    if !util::succeeds_quietly(Command::new("node").arg("--version"))
        || !util::succeeds_quietly(Command::new("npm").arg("--version"))
    {
        return Err("node and npm are not installed".into());
    }
    let dir = work.join("node");
    fs::create_dir_all(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let source = root.join("xtask/compat/node/package.json");
    let manifest =
        fs::read(&source).map_err(|err| format!("cannot read {}: {err}", source.display()))?;
    let copy = dir.join("package.json");
    if fs::read(&copy).ok().as_deref() != Some(manifest.as_slice()) {
        fs::write(&copy, &manifest)
            .map_err(|err| format!("cannot write {}: {err}", copy.display()))?;
    }
    browser::npm_install(&dir).map_err(|err| format!("{err:#}"))?;
    Ok(dir.join("node_modules"))
}

/// A fresh self-signed certificate for `127.0.0.1`, valid for two days.
fn prepare_cert(work: &Path) -> Result<(PathBuf, PathBuf), String> {
    if !util::succeeds_quietly(Command::new("openssl").arg("version")) {
        return Err(NO_OPENSSL.into());
    }
    let (cert, key) = (work.join("cert.pem"), work.join("key.pem"));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
    ])
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    println!("$ {}", util::display_command(&cmd));
    if !util::succeeds_quietly(&mut cmd) {
        return Err("openssl req failed".into());
    }
    Ok((cert, key))
}

// ---- the server ----------------------------------------------------------------------------------

/// A running `plotstream serve`, stopped by PID when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    /// The plaintext listeners, in the order of the flags.
    plain: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    flags: Vec<String>,
    /// Every stderr line so far.
    log: SharedLog,
}

impl Server {
    /// Starts the server and waits until every listener has printed its address.
    fn start(binary: &Path, root: &Path, flags: &[&str]) -> Result<Server> {
        let mut flags: Vec<String> = flags.iter().map(|flag| (*flag).to_owned()).collect();
        if !flags.iter().any(|flag| flag == "--listen") {
            flags.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let listeners = flags
            .iter()
            .filter(|flag| *flag == "--listen" || *flag == "--tls-listen")
            .count();
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .args(&flags)
            .current_dir(root)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let (log, lines_rx) = util::drain_stderr(&mut child, usize::MAX)?;
        let mut server = Server {
            child,
            plain: Vec::new(),
            tls: Vec::new(),
            flags,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while server.plain.len() + server.tls.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => match parse_listening(&line) {
                    Some((false, addr)) => server.plain.push(addr),
                    Some((true, addr)) => server.tls.push(addr),
                    None => {}
                },
                // `server` is dropped on return, which stops the child.
                Err(_) => bail!(
                    "`{}` did not start: {}",
                    util::display_command(&cmd),
                    server.log().join(" / ")
                ),
            }
        }
        Ok(server)
    }

    /// The plaintext listener clients use: the last one (the first may be port 80).
    fn addr(&self) -> SocketAddr {
        self.plain
            .last()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn describe(&self) -> String {
        format!(
            "plotstream serve {} (pid {})",
            self.flags.join(" "),
            self.child.id()
        )
    }

    fn log(&self) -> Vec<String> {
        util::log_lines(&self.log)
    }
}

impl Drop for Server {
    /// SIGTERM to the server's PID, then a kill if it has not stopped in time.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = util::terminate(&mut self.child);
        if !matches!(
            browser::wait_timeout(&mut self.child, STOP_TIMEOUT),
            Ok(Some(_))
        ) {
            println!(
                "compat: {} did not stop after SIGTERM; killing it",
                self.describe()
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `(is TLS, address)` of `plotstream listening on http://127.0.0.1:PORT` (or `https://`).
fn parse_listening(line: &str) -> Option<(bool, SocketAddr)> {
    let url = line.trim().strip_prefix("plotstream listening on ")?;
    let (tls, addr) = match url.strip_prefix("https://") {
        Some(addr) => (true, addr),
        None => (false, url.strip_prefix("http://")?),
    };
    Some((tls, addr.parse().ok()?))
}

/// The marker, inside the venv, of the requirements it was installed with.
const PINS_MARKER: &str = "plotstream-requirements.txt";
const NO_OPENSSL: &str = "openssl not installed";
/// The tutorial sleeps 5 s, streams for 12 s and imports IPython, numpy and plotly.
const TUTORIAL_TIMEOUT: Duration = Duration::from_secs(120);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The fault cases' `--linger`: short, so that their writes, spaced by more than it, take
/// fractions of a second, and none lands inside it (docs/protocol.md §5.1.3).
const FAULT_LINGER: &str = "100ms";
const NODE_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The server drains its connections for up to 10 s after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(12);
const OUTPUT_TAIL: usize = 40;
const SERVER_LOG_TAIL: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_the_addresses() {
        assert_eq!(
            parse_listening("plotstream listening on http://127.0.0.1:9999"),
            Some((false, SocketAddr::from(([127, 0, 0, 1], 9999))))
        );
        assert_eq!(
            parse_listening("plotstream listening on https://127.0.0.1:443\n"),
            Some((true, SocketAddr::from(([127, 0, 0, 1], 443))))
        );
        assert_eq!(parse_listening("streams: http://127.0.0.1:9999/"), None);
        assert_eq!(parse_listening("plotstream listening on http://x"), None);
    }

    /// Every scenario V1–V23 runs somewhere: here with a real client, or as a case of the
    /// conformance catalogue that `cargo xtask conform` runs (not one it skips).
    #[test]
    fn cases_have_distinct_slugs_and_cover_every_scenario() {
        let cases = cases();
        let slugs: Vec<String> = cases.iter().map(slug).collect();
        for (idx, slug) in slugs.iter().enumerate() {
            assert!(!slugs[..idx].contains(slug), "duplicate slug {slug}");
        }
        let catalogue = plotstream_cases::catalogue().unwrap();
        for n in 1..=23 {
            let id = format!("V{n}");
            let conform = catalogue.iter().any(|c| {
                c.id == id && c.skip.is_none() && c.variants.iter().any(|v| v.skip.is_none())
            });
            assert!(
                conform || cases.iter().any(|case| case.id == id),
                "{id} runs neither here nor in the catalogue"
            );
        }

        for n in 1..=6 {
            let id = format!("F{n}");
            assert!(cases.iter().any(|case| case.id == id), "no case for {id}");
        }
        for n in 1..=5 {
            let id = format!("U{n}");
            assert!(cases.iter().any(|case| case.id == id), "no case for {id}");
        }
    }

    #[test]
    fn filters_pick_ids_exactly_and_names_by_substring() {
        let ids = |filters: &[&str]| -> Vec<&str> {
            let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
            selected(&filters).iter().map(|case| case.id).collect()
        };
        assert_eq!(ids(&["v2"]), ["V2"]);
        assert_eq!(ids(&["V11", "tutorial"]), ["tutorial", "V11", "V11"]);
        assert_eq!(ids(&["secret"]), ["V22", "U3"]);
        assert_eq!(ids(&["f3"]), ["F3"]);
        assert_eq!(ids(&["through reset"]), ["F4"]);
        assert_eq!(ids(&["u4", "V21"]), ["V21", "U4"]);
        assert_eq!(ids(&["keys mode"]), ["U1", "U2", "U3", "U4", "U5"]);
        assert_eq!(ids(&[]).len(), cases().len());
    }

    #[test]
    fn pins_are_summarised_without_comments() {
        assert_eq!(
            pins_summary("# why\nchart_studio==1.1.0\n\nplotly==6.0.0\n"),
            "chart_studio==1.1.0, plotly==6.0.0"
        );
    }
}
