//! The environment of the compat suite: the server binary, and the real clients installed under
//! `<target dir>/compat/`: a Python venv with the pinned chart_studio and plotly, npm plotly
//! 1.0.6, a self-signed certificate for the TLS cases, and whether the cluster case can start a
//! `redis-server`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{process, util, venv};

/// What a case needs besides the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Needs {
    Python,
    Node,
    NodeTls,
    /// Python and a `redis-server` on PATH (the cluster case).
    PythonRedis,
}

/// What every case can use: the server binary and the prepared clients.
#[derive(Debug)]
pub(super) struct Env {
    pub(super) root: PathBuf,
    /// `<target dir>/compat`.
    pub(super) work: PathBuf,
    pub(super) binary: PathBuf,
    /// The venv's python, or why there is none.
    pub(super) python: Result<PathBuf, String>,
    /// The `node_modules` holding plotly 1.0.6, or why there is none.
    pub(super) node_modules: Result<PathBuf, String>,
    /// The self-signed certificate and key, or why there are none.
    pub(super) tls: Result<(PathBuf, PathBuf), String>,
    /// Whether `redis-server` runs (`redis-server --version`), or why not.
    pub(super) redis: Result<(), String>,
}

impl Env {
    /// Builds the server and prepares what the selected cases need (`selected`, one per case).
    pub(super) fn prepare(selected: &[Needs]) -> Result<Env> {
        let needs = |wanted: &[Needs]| selected.iter().any(|need| wanted.contains(need));
        let root = util::project_root();
        let work = util::target_dir().join("compat");
        fs::create_dir_all(work.join("logs"))
            .with_context(|| format!("cannot create {}", work.display()))?;

        let binary = process::build_plotstream(false)?;

        let not_needed = "not needed by the selected cases";
        let python = if needs(&[Needs::Python, Needs::PythonRedis]) {
            venv::prepare(
                &root.join("xtask/compat/python/requirements.txt"),
                &work.join("venv"),
            )
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
        let redis = if needs(&[Needs::PythonRedis]) {
            if util::succeeds_quietly(Command::new("redis-server").arg("--version")) {
                Ok(())
            } else {
                Err(NO_REDIS.to_owned())
            }
        } else {
            Err(not_needed.to_owned())
        };
        for (what, result) in [
            ("python venv", python.as_ref().map(|_| ())),
            ("node plotly", node_modules.as_ref().map(|_| ())),
            ("certificate", tls.as_ref().map(|_| ())),
            ("redis-server", redis.as_ref().copied()),
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
            redis,
        })
    }

    /// The environment of a case run by another command: `binary` as the server, `python` (a
    /// venv with the pins of `xtask/compat/python/requirements.txt`) as the client, logs and
    /// homes under `work`; no node, certificate or Redis.
    pub(super) fn with_client(binary: &Path, python: &Path, work: &Path) -> Result<Env> {
        fs::create_dir_all(work.join("logs"))
            .with_context(|| format!("cannot create {}", work.display()))?;
        let not_here = "not prepared for this run";
        Ok(Env {
            root: util::project_root(),
            work: work.to_path_buf(),
            binary: binary.to_path_buf(),
            python: Ok(python.to_path_buf()),
            node_modules: Err(not_here.to_owned()),
            tls: Err(not_here.to_owned()),
            redis: Err(not_here.to_owned()),
        })
    }

    /// Why a case that needs `needs` is skipped: only the TLS case, when openssl is missing, and
    /// the cluster case, when redis-server is (`.ci/run` installs both). A missing Python or node
    /// is a failure of the cases that need it, not a skip.
    pub(super) fn missing(&self, needs: Needs) -> Option<String> {
        match (&self.tls, &self.redis, needs) {
            (Err(reason), _, Needs::NodeTls) if reason.contains(NO_OPENSSL) => Some(reason.clone()),
            (_, Err(reason), Needs::PythonRedis) => Some(reason.clone()),
            _ => None,
        }
    }
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
    util::npm_install(&dir).map_err(|err| format!("{err:#}"))?;
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

const NO_OPENSSL: &str = "openssl not installed";
const NO_REDIS: &str = "no redis-server on PATH";
