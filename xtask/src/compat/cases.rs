//! The compat cases, in the order they run: the tutorial, docs/protocol.md §9.2's scenarios, the
//! clients through the simulator's faults, the clients against keys mode, chart_studio across
//! restarts, then the tutorial across two nodes of one Redis. Each starts the servers it needs
//! and runs one client script (S15 three).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    env::Needs,
    run::{CaseEnv, Pass},
};
use crate::{
    process::{self, Server, Stop},
    redis::RedisServer,
};

/// One case of the suite; a failure is an `Err` saying what differed.
#[derive(Debug)]
pub(super) struct Case {
    pub(super) id: &'static str,
    pub(super) name: &'static str,
    pub(super) needs: Needs,
    pub(super) run: fn(&CaseEnv<'_>) -> Result<Pass>,
}

impl Case {
    /// A file-name-safe name of the case: `v11-idle-408-node-reports-it-mid-stream`.
    pub(super) fn slug(&self) -> String {
        let text = format!("{} {}", self.id, self.name).to_lowercase();
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
}

/// The cases `filters` pick: a filter shaped like an ID (`V11`, `F3`, `U2`, `S15`, `tutorial`,
/// `cluster`) picks the cases of that ID, any other one the cases whose name contains it; no
/// filter picks every case.
pub(super) fn selected(filters: &[String]) -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|case| {
            filters.is_empty()
                || filters.iter().any(|filter| {
                    let is_id = filter.eq_ignore_ascii_case("tutorial")
                        || filter.eq_ignore_ascii_case("cluster")
                        || filter.len() > 1
                            && filter.starts_with(['V', 'v', 'F', 'f', 'U', 'u', 'S', 's'])
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
/// through the simulator's faults, the clients against keys mode, chart_studio across restarts,
/// then the tutorial across two nodes.
fn cases() -> Vec<Case> {
    use Needs::{Node, NodeTls, Python, PythonRedis};
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
        case(
            "S15",
            "restarts: py.plot and py.Stream, SIGTERM, SIGKILL; same URL and window, streaming on",
            Python,
            s15_restart,
        ),
        case(
            "cluster",
            "the streaming tutorial against node A of two on one Redis; its page and stream read from node B",
            PythonRedis,
            cluster_tutorial,
        ),
    ]
}

// ---- the Python and node cases -------------------------------------------------------------------

/// The tutorial, unchanged, against a server on port 80 (its stream port) and a free port.
pub(super) fn tutorial(env: &CaseEnv<'_>) -> Result<Pass> {
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
    let tls = env.tls_listener()?;
    // plot() reaches the server through the TLS port; the figure's URL should name the plain
    // listener, which needs --public-url, so that listener's port is chosen before the start.
    let listen = format!("127.0.0.1:{}", process::free_port()?);
    let public_url = format!("http://{listen}");
    let mut flags = vec!["--listen", &listen, "--public-url", &public_url];
    flags.extend(tls.iter().map(String::as_str));
    let server = env.server(&flags)?;
    node_over_tls(env, "v20_plot_tls.js", &server)
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
    let tls = env.tls_listener()?;
    let mut flags = vec!["--listen", "127.0.0.1:0"];
    flags.extend(tls.iter().map(String::as_str));
    let server = env.keys_server(&flags)?;
    node_over_tls(env, "u5_plot_keys.js", &server)
}

// ---- the client across restarts (issue 11) --------------------------------------------------------

/// S15: chart_studio against `serve --data-dir`, through a graceful stop and a crash. The script's
/// phases run between the restarts; each restart is the same flags on the same address and data
/// directory, so the URLs `py.plot` returned still name the server.
fn s15_restart(env: &CaseEnv<'_>) -> Result<Pass> {
    let data = env.fresh_dir("data")?;
    let data = data.to_string_lossy();
    let mut server = env.server(&[
        "--data-dir",
        &data,
        "--sync-interval",
        RESTART_SYNC_INTERVAL,
    ])?;
    let Pass(before) = env.python("s15_restart.py", &["plot"], &server, SCRIPT_TIMEOUT)?;

    let status = server.stop(Stop::Graceful)?;
    let said = server
        .log()
        .into_iter()
        .find(|line| line.contains("graceful shutdown"));
    if !status.success() || said.is_none() {
        bail!(
            "after SIGTERM, {} exited with {status} and {}",
            server.describe(),
            said.map_or(
                "never said it flushed its store".to_owned(),
                |line| format!("said `{line}`")
            )
        );
    }
    let mut server = env.restart(&server)?;
    let Pass(graceful) = env.python("s15_restart.py", &["after-stop"], &server, SCRIPT_TIMEOUT)?;

    server.stop(Stop::Crash)?;
    let server = env.restart(&server)?;
    let Pass(crash) = env.python("s15_restart.py", &["after-crash"], &server, SCRIPT_TIMEOUT)?;
    Ok(Pass(format!(
        "{before}; SIGTERM, restart: {graceful}; SIGKILL, restart: {crash}"
    )))
}

// ---- the tutorial across two nodes (issue 13; docs/storage.md "Several nodes") ------------------

/// The tutorial, unchanged, against node A of two `serve --redis` nodes on one fresh
/// redis-server (A on port 80 as in the tutorial case); `run_tutorial.py --reader B` then reads
/// the figure's pages, its feed and the stream's inspection from node B too, and compares them
/// with node A's. Everything stops by PID when the case ends: the nodes, then Redis.
fn cluster_tutorial(env: &CaseEnv<'_>) -> Result<Pass> {
    let redis = RedisServer::start(&env.fresh_dir("redis")?)?
        .context("no redis-server on PATH (install the system's package)")?;
    let url = redis.url();
    let node_a = env
        .server(&[
            "--redis",
            &url,
            "--listen",
            "127.0.0.1:80",
            "--listen",
            "127.0.0.1:0",
        ])
        .context(
            "node A streams the unmodified tutorial on port 80, so it must listen on \
             127.0.0.1:80 (root or CAP_NET_BIND_SERVICE, and a free port)",
        )?;
    let node_b = env.server(&["--redis", &url])?;
    let reader = format!("http://{}", node_b.addr());
    let Pass(detail) = env.python(
        "run_tutorial.py",
        &["--reader", &reader],
        &node_a,
        TUTORIAL_TIMEOUT,
    )?;
    Ok(Pass(format!("redis-server {}: {detail}", redis.version)))
}

/// Runs a node script against `server`, told the port of its first TLS listener in
/// `COMPAT_TLS_PORT`.
fn node_over_tls(env: &CaseEnv<'_>, script: &str, server: &Server) -> Result<Pass> {
    let tls = server
        .tls()
        .first()
        .context("the server has no TLS listener")?;
    let port = tls.port().to_string();
    env.node(script, server, &[("COMPAT_TLS_PORT", port.into())])
}

/// The tutorial sleeps 5 s, streams for 12 s and imports IPython, numpy and plotly.
const TUTORIAL_TIMEOUT: Duration = Duration::from_secs(120);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The fault cases' `--linger`: short, so that their writes, spaced by more than it, take
/// fractions of a second, and none lands inside it (docs/protocol.md §5.1.3).
const FAULT_LINGER: &str = "100ms";
/// S15's `--sync-interval`: long beside the moment between a phase's last final `200` and the
/// SIGKILL that follows it, so that a `200` sent before its lines are committed loses points that
/// the script checks (with the server's wait for the commit removed, S15 fails).
const RESTART_SYNC_INTERVAL: &str = "1s";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario V1–V23 runs somewhere: here with a real client, or as a case of the
    /// conformance catalogue that `cargo xtask conform` runs (not one it skips).
    #[test]
    fn cases_have_distinct_slugs_and_cover_every_scenario() {
        let cases = cases();
        let slugs: Vec<String> = cases.iter().map(Case::slug).collect();
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
        assert_eq!(ids(&["s15"]), ["S15"]);
        assert_eq!(ids(&["restarts"]), ["S15"]);
        assert_eq!(ids(&["cluster"]), ["cluster"]);
        assert_eq!(ids(&["Redis"]), ["cluster"]);
        assert_eq!(ids(&[]).len(), cases().len());
    }
}
