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
//!
//! Case S15 (issue 11; docs/reliability.md §6) runs chart_studio against a durable server
//! (`serve --data-dir`, a fresh `compat/data/<case>`): `xtask/compat/python/s15_restart.py`
//! runs in three phases, which share the case's home (and so a state file) and log. Between
//! them the server is stopped by PID, with SIGTERM and then with SIGKILL, and started again with
//! the same flags on the same address ([`CaseEnv::restart`]), so the URLs `py.plot` returned
//! still name it.
//!
//! Case `cluster` (issue 13; docs/storage.md "Several nodes") starts a `redis-server` on a free
//! port ([`crate::redis::RedisServer`], its AOF in `compat/redis/<case>`) and two `serve --redis`
//! nodes on it, runs the tutorial unchanged against node A, and `run_tutorial.py --reader` reads
//! the figure's pages (the URLs `py.plot` returned, with node B's address), its feed and the
//! stream's inspection from node B, which must equal node A's. Without `redis-server` on PATH the
//! case is skipped.
//!
//! The module by concern: `cases` (the table and what each case does), `env` (building the server,
//! installing the clients, the certificate), `run` (one case: its servers, homes and scripts). The
//! servers themselves are [`crate::process::Serve`]'s, like every other xtask command's.

mod cases;
mod env;
mod run;

use std::{io::Write, path::Path, process::ExitCode, time::Instant};

use anyhow::{bail, Result};

use self::{
    cases::selected,
    env::Env,
    run::{CaseEnv, Pass},
};
use crate::util;

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

/// The `tutorial` case with `binary` as the server and `python` as the client's interpreter (a
/// venv with the pins of `xtask/compat/python/requirements.txt`), its logs and homes under
/// `work`: the wheel step runs it with the `plotstream` and the python of the venv it installed
/// the wheel into. Its detail line, or what failed (the server's log printed).
pub(crate) fn tutorial_with(binary: &Path, python: &Path, work: &Path) -> Result<String> {
    let env = Env::with_client(binary, python, work)?;
    let case_env = CaseEnv::new(&env, "tutorial".to_owned());
    match cases::tutorial(&case_env) {
        Ok(Pass(detail)) => Ok(detail),
        Err(err) => {
            case_env.print_server_logs();
            Err(err)
        }
    }
}

/// Prepares the clients and runs every case whose `ID name` contains one of `filters` (all cases
/// without filters). `Err` means the suite could not run at all (the server does not build).
pub(crate) fn suite(filters: &[String]) -> Result<Tally> {
    let started = Instant::now();
    let cases = selected(filters);
    if cases.is_empty() {
        bail!("no compat case matches {filters:?}; `cargo xtask compat --list` lists them");
    }
    let needs: Vec<_> = cases.iter().map(|case| case.needs).collect();
    let env = Env::prepare(&needs)?;
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
        let case_env = CaseEnv::new(&env, case.slug());
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
