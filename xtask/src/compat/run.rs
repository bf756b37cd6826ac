//! Running one compat case: its servers, its scratch directories, and its client scripts with a
//! time limit, their output in `compat/logs/<case>.log`.

use std::{
    cell::{Cell, RefCell},
    ffi::OsString,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::env::Env;
use crate::{
    process::{self, Serve, Server, SharedLog, Stop},
    util,
};

/// A case that passed, with what it showed.
#[derive(Debug)]
pub(super) struct Pass(pub(super) String);

/// The environment of one case: its scratch home and the servers it started.
#[derive(Debug)]
pub(super) struct CaseEnv<'a> {
    pub(super) env: &'a Env,
    pub(super) slug: String,
    /// The logs of the servers this case started, printed if it fails.
    servers: RefCell<Vec<(String, SharedLog)>>,
    /// The keys-mode account of [`CaseEnv::keys_server`], given to every client script.
    account: RefCell<Option<util::Account>>,
    /// The client scripts started so far. A case may run several (the phases of S15): the
    /// first gets a fresh home and log, the later ones keep that home and append to that log.
    scripts: Cell<usize>,
}

impl<'a> CaseEnv<'a> {
    pub(super) fn new(env: &'a Env, slug: String) -> CaseEnv<'a> {
        CaseEnv {
            env,
            slug,
            servers: RefCell::new(Vec::new()),
            account: RefCell::new(None),
            scripts: Cell::new(0),
        }
    }

    /// Starts `plotstream serve` with `flags` (plus `--listen 127.0.0.1:0` unless they listen,
    /// and `--in-memory` unless they name a `--data-dir` or a `--redis`), from the repository
    /// root.
    pub(super) fn server(&self, flags: &[&str]) -> Result<Server> {
        let mut serve = Serve::new(&self.env.binary)
            .flags(flags)
            .current_dir(&self.env.root);
        if !serve.has_flag("--listen") {
            serve = serve.flags(["--listen", "127.0.0.1:0"]);
        }
        if !serve.has_flag("--data-dir") && !serve.has_flag("--redis") {
            serve = serve.flags(["--in-memory"]);
        }
        Ok(self.keep_log(serve.start()?))
    }

    /// Starts `stopped`'s server again, with its flags, on the addresses it had: what a client
    /// was told (its `COMPAT_SERVER`, the URLs it got) names the new server.
    pub(super) fn restart(&self, stopped: &Server) -> Result<Server> {
        Ok(self.keep_log(stopped.restart()?))
    }

    /// `server`, its log kept for [`CaseEnv::print_server_logs`].
    fn keep_log(&self, server: Server) -> Server {
        self.servers
            .borrow_mut()
            .push((server.describe(), server.log_handle()));
        server
    }

    /// The flags of a TLS listener on a free loopback port with the suite's self-signed
    /// certificate.
    pub(super) fn tls_listener(&self) -> Result<Vec<String>> {
        let Ok((cert, key)) = &self.env.tls else {
            bail!("no certificate");
        };
        Ok(vec![
            "--tls-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--tls-cert".to_owned(),
            cert.to_string_lossy().into_owned(),
            "--tls-key".to_owned(),
            key.to_string_lossy().into_owned(),
        ])
    }

    /// Starts `plotstream serve --users FILE` with `flags`, FILE made by the real binary as
    /// docs/clients.md says: `plotstream user add demo --users FILE --api-key demokey123
    /// --stream-ids 2`. The account it printed goes to the case's client scripts.
    pub(super) fn keys_server(&self, flags: &[&str]) -> Result<Server> {
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
    pub(super) fn python(
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
        let home = self.home()?;
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
    pub(super) fn node(
        &self,
        script: &str,
        server: &Server,
        vars: &[(&str, OsString)],
    ) -> Result<Pass> {
        let node_modules = self
            .env
            .node_modules
            .as_ref()
            .map_err(|reason| anyhow::anyhow!("no node plotly: {reason}"))?;
        let dir = self.env.root.join("xtask/compat/node");
        let home = self.home()?;
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

    /// The case's `compat/home/<case>` directory: emptied for its first script, as that one
    /// left it for the later ones.
    fn home(&self) -> Result<PathBuf> {
        if self.scripts.get() == 0 {
            self.fresh_dir("home")
        } else {
            Ok(self.env.work.join("home").join(&self.slug))
        }
    }

    /// An empty `compat/<what>/<case>` directory.
    pub(super) fn fresh_dir(&self, what: &str) -> Result<PathBuf> {
        let dir = self.env.work.join(what).join(&self.slug);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Runs `cmd` with its output in `compat/logs/<case>.log` (after the output of the case's
    /// earlier scripts), for at most `timeout`. It passes when it exits with 0; its last
    /// `ok: ...` line is the detail.
    fn run_script(&self, mut cmd: Command, timeout: Duration) -> Result<Pass> {
        let log_path = self
            .env
            .work
            .join("logs")
            .join(format!("{}.log", self.slug));
        let first = self.scripts.replace(self.scripts.get() + 1) == 0;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(!first)
            .write(true)
            .truncate(first)
            .open(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let start = log.metadata()?.len();
        if !first {
            writeln!(log, "---- {}", util::display_command(&cmd))?;
        }
        cmd.stdout(log.try_clone()?).stderr(log);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", util::display_command(&cmd)))?;
        // The script's PID alone gets the kill: it starts no children.
        let status = process::finish_within(&mut child, timeout, Stop::Crash)?;
        let output = fs::read(&log_path).unwrap_or_default();
        let output = String::from_utf8_lossy(output.get(start as usize..).unwrap_or_default());
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

    pub(super) fn print_server_logs(&self) {
        for (name, log) in self.servers.borrow().iter() {
            let lines = process::log_lines(log);
            println!("    {name}, last {SERVER_LOG_TAIL} lines of its log:");
            for line in &lines[lines.len().saturating_sub(SERVER_LOG_TAIL)..] {
                println!("      | {line}");
            }
        }
    }
}

const NODE_TIMEOUT: Duration = Duration::from_secs(30);
const OUTPUT_TAIL: usize = 40;
const SERVER_LOG_TAIL: usize = 20;
