//! `cargo xtask wheel` and the CI step `wheel` (issue 15 item 2): the Python package.
//!
//! `python/pyproject.toml` makes maturin (`bindings = "bin"`) build a wheel that carries the
//! `plotstream` binary and puts it on PATH. maturin comes from PyPI, pinned in
//! `python/build-requirements.txt`, in the venv `<target>/wheel/maturin`.
//!
//! - `cargo xtask wheel` builds the release wheel, stripped, into `<target>/wheels`, and prints
//!   its path and size; `--target aarch64-unknown-linux-gnu` (or armv7) builds one for an ARM
//!   board with the cross gcc, as `cargo xtask cross` does (into `<target>/wheels/TRIPLE`).
//! - The CI step builds it with the dev profile (the binary earlier steps built is reused: the
//!   wheel takes seconds, not the minutes of a release build), then checks, one count each:
//!   1. `readme`: the fenced blocks of README.md's "For Python users" marked
//!      `<!-- wheel-ci: NAME -->`, run as written in a fresh directory: `install` with `sh -e`
//!      (pip finds the wheel just built through `PIP_FIND_LINKS`, pinned to the workspace version
//!      by `PIP_CONSTRAINT`; the installed `plotstream` must be the wheel's, byte for byte, and
//!      say the workspace version), `serve` started from that venv's `bin/` as the shell would
//!      find it, and `python` run by that venv's python; the stream it wrote and the URL it
//!      printed are then read from the server;
//!   2. `tutorial`: the compat suite's `tutorial` case (`run_tutorial.py`, the whole notebook,
//!      cell by cell, and its checks) with that venv's `plotstream` as the server and its python,
//!      given the compat pins too, as the client.
//!
//!   Without python3's venv, or without maturin (no network), it is SKIPPED.
//!
//! `python/README.md`, the wheel's long description, holds the same marked blocks (a test
//! compares them), so what PyPI shows is what CI ran too.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    compat, cross, http,
    process::{self, Serve, Stop},
    util::{self, Checked},
    venv,
};

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let target: Option<String> = args.value("--target")?;
    let (positional, _) = args.finish()?;
    if let Some(extra) = positional.first() {
        bail!("`wheel` takes no positional argument, got `{extra}`");
    }
    let maturin = maturin().map_err(|reason| anyhow::anyhow!("no maturin: {reason}"))?;
    let out = util::target_dir().join("wheels");
    let wheel = match &target {
        None => build(&maturin, Profile::Release, &out, None)?,
        Some(triple) => {
            let env = cross::build_env(triple)?;
            build(
                &maturin,
                Profile::Release,
                &out.join(triple),
                Some((triple, &env)),
            )?
        }
    };
    println!("wheel: {}", describe(&wheel)?);
    Ok(ExitCode::SUCCESS)
}

/// The CI step (see the module).
pub(crate) fn check() -> Result<Checked> {
    let maturin = match maturin() {
        Ok(maturin) => maturin,
        Err(reason) => return Ok(Checked::skipped(format!("no maturin: {reason}"))),
    };
    let work = util::target_dir().join("wheel");
    let mut out = Checked::default();
    let started = Instant::now();
    let wheel = match build(&maturin, Profile::Dev, &work.join("dist"), None) {
        Ok(wheel) => wheel,
        Err(err) => {
            out.count("wheel: build", Err(err));
            return Ok(out);
        }
    };
    println!(
        "wheel: built {} in {:.1} s",
        describe(&wheel)?,
        started.elapsed().as_secs_f64()
    );
    let readme = fs::read_to_string(util::project_root().join("README.md"))?;
    let blocks = ReadmeBlocks::parse(&readme)?;
    let scratch = fresh_dir(&work.join("readme"))?;
    let venv = scratch.join(blocks.venv()?);
    out.count(
        "wheel: readme",
        readme_as_written(&blocks, &wheel, &scratch, &venv),
    );
    let tutorial = (|| {
        let python = venv::python(&venv);
        let requirements = util::project_root().join(COMPAT_REQUIREMENTS);
        venv::install(&python, &requirements).map_err(anyhow::Error::msg)?;
        compat::tutorial_with(&venv.join("bin/plotstream"), &python, &work)
    })();
    out.count("wheel: tutorial", tutorial);
    Ok(out)
}

/// How the wheel's binary is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// `--profile dev`: the binary `cargo build -p plotstream` made, reused as it is.
    Dev,
    /// `--release --strip`.
    Release,
}

/// The maturin of `<target>/wheel/maturin`, installed from `python/build-requirements.txt`, or
/// why there is none.
fn maturin() -> Result<PathBuf, String> {
    let venv = util::target_dir().join("wheel").join("maturin");
    let requirements = util::project_root().join("python/build-requirements.txt");
    venv::prepare(&requirements, &venv)?;
    Ok(venv.join("bin").join("maturin"))
}

/// `maturin build` of `python/pyproject.toml` into `out` (emptied first), for the host or for
/// a `(triple, the environment that builds for it)`: the wheel, whose name must carry the
/// workspace version.
fn build(
    maturin: &Path,
    profile: Profile,
    out: &Path,
    target: Option<(&str, &[(String, String)])>,
) -> Result<PathBuf> {
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    let mut cmd = Command::new(maturin);
    cmd.arg("build")
        .args(match profile {
            Profile::Dev => &["--profile", "dev"][..],
            Profile::Release => &["--release", "--strip"][..],
        })
        .arg("--out")
        .arg(out)
        .current_dir(util::project_root().join("python"));
    if let Some((triple, env)) = target {
        cmd.args(["--target", triple]).envs(env.iter().cloned());
    }
    if !util::run_echoed(&mut cmd)? {
        bail!("maturin build failed");
    }
    let wheels = util::files_with_suffix(out, ".whl")?;
    let [wheel] = wheels.as_slice() else {
        bail!(
            "maturin build left {} wheels in {}",
            wheels.len(),
            out.display()
        );
    };
    let version = util::workspace_version()?;
    let prefix = format!("{DIST_FILE_NAME}-{version}-py3-none-");
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    if !name.starts_with(&prefix) {
        bail!("the wheel is {name}, not {prefix}*.whl (the workspace version is {version})");
    }
    Ok(wheel.clone())
}

/// `path (N MiB)`.
fn describe(wheel: &Path) -> Result<String> {
    let bytes = fs::metadata(wheel)?.len();
    Ok(format!("{} ({})", wheel.display(), util::mib(bytes)))
}

/// The README's blocks as a user runs them (see the module); what the stream and the server
/// show afterwards.
fn readme_as_written(
    blocks: &ReadmeBlocks,
    wheel: &Path,
    scratch: &Path,
    venv: &Path,
) -> Result<String> {
    let dist = wheel.parent().context("the wheel has no directory")?;
    let constraint = scratch.join("constraint.txt");
    let version = util::workspace_version()?;
    fs::write(&constraint, format!("{DIST_NAME}=={version}\n"))?;
    let mut install = Command::new("sh");
    install
        .arg("-ec")
        .arg(&blocks.install)
        .current_dir(scratch)
        .env("PIP_FIND_LINKS", dist)
        .env("PIP_CONSTRAINT", &constraint)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env_remove("VIRTUAL_ENV");
    println!(
        "wheel: the README's install block, in {}:",
        scratch.display()
    );
    if !util::run_echoed(&mut install)? {
        bail!("the README's install block failed");
    }
    let binary = venv.join("bin").join("plotstream");
    same_binary(venv, wheel, &binary)?;
    let said = util::output_of(Command::new(&binary).arg("--version"))?;
    if said.trim() != format!("plotstream {version}") {
        bail!("{} --version printed {said:?}", binary.display());
    }

    let flags = blocks.serve_flags()?;
    let server = Serve::new(&binary)
        .flags(&flags)
        .current_dir(scratch)
        .named(format!("the README's `plotstream serve {}`", flags.join(" ")))
        .echo()
        .start()
        .context("the README's server listens on port 80, which needs root or CAP_NET_BIND_SERVICE and a free port")?;
    let script = scratch.join("tutorial.py");
    fs::write(&script, &blocks.python)?;
    let home = scratch.join("home");
    fs::create_dir_all(&home)?;
    let mut python = Command::new(venv::python(venv));
    python
        .arg("-u")
        .arg(&script)
        .current_dir(scratch)
        .env("HOME", &home)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    let printed = match run_script(&mut python, &scratch.join("tutorial.log")) {
        Ok(printed) => printed,
        Err(err) => {
            for line in server.log() {
                println!("  | {line}");
            }
            return Err(err);
        }
    };
    let shown = check_stream(server.addr(), &printed);
    drop(server);
    shown
}

/// Runs `cmd` with its output in `log` for at most [`SCRIPT_TIMEOUT`]; what it printed.
fn run_script(cmd: &mut Command, log: &Path) -> Result<String> {
    println!("$ {}", util::display_command(cmd));
    let file = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let mut child = cmd.spawn()?;
    let status = process::finish_within(&mut child, SCRIPT_TIMEOUT, Stop::Crash)?;
    let printed = fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(printed),
        status => bail!(
            "the README's python block {} ({}):\n{printed}",
            status.map_or("did not end in time".to_owned(), |s| format!(
                "exited with {s}"
            )),
            log.display()
        ),
    }
}

/// What the README's python block made: its printed URL serves the figure, and the stream holds
/// every point it wrote, the newest [`README_MAXPOINTS`] in its window.
fn check_stream(addr: std::net::SocketAddr, printed: &str) -> Result<String> {
    let origin = format!("http://{addr}");
    let url = printed
        .lines()
        .find_map(|line| line.trim().strip_prefix(&origin))
        .with_context(|| format!("the python block printed no URL of {origin}:\n{printed}"))?;
    let page = http::get(addr, url)?;
    if page.status != 200 || !page.body.contains("data-events=\"/api/plots/") {
        bail!("GET {origin}{url} answered {}: {}", page.status, page.body);
    }
    let stream = http::inspect(addr, README_TOKEN)?;
    let numbers = |key: &str| stream[key].as_u64();
    if numbers("last_seq") != Some(README_POINTS)
        || numbers("count") != Some(README_MAXPOINTS)
        || numbers("maxpoints") != Some(README_MAXPOINTS)
        || stream["writer_connected"] != serde_json::Value::Bool(false)
    {
        bail!("the stream {README_TOKEN} is not the {README_POINTS} points written, window {README_MAXPOINTS}: {stream}");
    }
    Ok(format!(
        "installed from the wheel, {origin}{url} served, {README_TOKEN}: last_seq {README_POINTS}, window {README_MAXPOINTS}"
    ))
}

/// The installed `binary` is the one inside `wheel`, byte for byte (pip installed our wheel,
/// not a package of the same name from an index).
fn same_binary(venv: &Path, wheel: &Path, binary: &Path) -> Result<()> {
    let mut cmd = Command::new(venv::python(venv));
    cmd.arg("-c").arg(SAME_BINARY_PY).arg(wheel).arg(binary);
    let said = util::output_of(&mut cmd)?;
    if said.trim() != "same" {
        bail!("{} is not the wheel's binary: {said}", binary.display());
    }
    Ok(())
}

const SAME_BINARY_PY: &str = "\
import hashlib, sys, zipfile
wheel, installed = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith('.data/scripts/plotstream'))
    inside = hashlib.sha256(z.read(name)).hexdigest()
with open(installed, 'rb') as f:
    there = hashlib.sha256(f.read()).hexdigest()
print('same' if inside == there else 'sha256 %s, the wheel has %s' % (there, inside))
";

/// The marked blocks of the README: `install`, `serve` and `python`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadmeBlocks {
    install: String,
    serve: String,
    python: String,
}

impl ReadmeBlocks {
    fn parse(text: &str) -> Result<ReadmeBlocks> {
        let blocks = marked_blocks(text)?;
        let take = |name: &str| -> Result<String> {
            let mut found = blocks.iter().filter(|(n, _)| n == name);
            match (found.next(), found.next()) {
                (Some((_, body)), None) => Ok(body.clone()),
                (None, _) => bail!("no block marked `{MARK} {name} -->`"),
                (Some(_), Some(_)) => bail!("two blocks marked `{MARK} {name} -->`"),
            }
        };
        if let Some((name, _)) = blocks
            .iter()
            .find(|(name, _)| !["install", "serve", "python"].contains(&name.as_str()))
        {
            bail!("a block is marked `{MARK} {name} -->`: only install, serve and python run");
        }
        Ok(ReadmeBlocks {
            install: take("install")?,
            serve: take("serve")?,
            python: take("python")?,
        })
    }

    /// The directory the install block makes its venv in (`python3 -m venv DIR`).
    fn venv(&self) -> Result<String> {
        self.install
            .lines()
            .find_map(|line| line.trim().strip_prefix("python3 -m venv "))
            .map(|dir| dir.trim().to_owned())
            .context("the install block makes no venv (`python3 -m venv DIR`)")
    }

    /// The flags of the serve block's one command, `plotstream serve FLAGS`.
    fn serve_flags(&self) -> Result<Vec<String>> {
        let lines: Vec<&str> = self
            .serve
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let [line] = lines.as_slice() else {
            bail!("the serve block is not one command: {:?}", self.serve);
        };
        if line.contains(['"', '\'', '#', '$', '\\', '|', '&', ';']) {
            bail!("the serve block is run without a shell, so it holds plain words only: {line}");
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["plotstream", "serve", flags @ ..] => {
                Ok(flags.iter().map(|f| (*f).to_owned()).collect())
            }
            _ => bail!("the serve block is not `plotstream serve ...`: {line}"),
        }
    }
}

/// Every fenced block right after a `<!-- wheel-ci: NAME -->` line: `(NAME, body)`.
fn marked_blocks(text: &str) -> Result<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((idx, line)) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix(MARK)
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines.next().map(|(_, l)| l.trim_end()).unwrap_or_default();
        if !fence.starts_with("```") || fence.len() == 3 {
            bail!(
                "line {}: `{}` is not followed by a fenced block with a language",
                idx + 1,
                line.trim()
            );
        }
        let mut body = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim_end() == "```" {
                closed = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if !closed {
            bail!(
                "line {}: the block marked `{name}` is never closed",
                idx + 1
            );
        }
        blocks.push((name.trim().to_owned(), body));
    }
    Ok(blocks)
}

/// An empty `dir`.
fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The line before each block the wheel step runs: `<!-- wheel-ci: NAME -->`.
const MARK: &str = "<!-- wheel-ci:";
/// The distribution's name (`python/pyproject.toml`), and as it appears in the wheel's file name.
const DIST_NAME: &str = "plotstream-server";
const DIST_FILE_NAME: &str = "plotstream_server";
/// The compat suite's pins, which the tutorial case needs beside the README's (IPython).
const COMPAT_REQUIREMENTS: &str = "xtask/compat/python/requirements.txt";
/// What the README's python block writes: to this token, this many points, this window.
const README_TOKEN: &str = "abcdef1234";
const README_POINTS: u64 = 100;
const README_MAXPOINTS: u64 = 80;
/// The python block imports plotly and numpy, then writes for 10 s.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    fn readme(path: &str) -> Result<ReadmeBlocks> {
        ReadmeBlocks::parse(&fs::read_to_string(util::project_root().join(path))?)
    }

    /// What PyPI shows (python/README.md) is what CI runs (README.md), and both say what the
    /// step checks afterwards.
    #[test]
    fn both_readmes_run_the_same_blocks() -> Result<()> {
        let main = readme("README.md")?;
        assert_eq!(readme("python/README.md")?, main);
        assert_eq!(main.venv()?, "plotstream-env");
        let flags = main.serve_flags()?;
        assert!(flags.windows(2).any(|w| w == ["--listen", "127.0.0.1:80"]));
        for wanted in [
            format!("'{README_TOKEN}'"),
            format!("range({README_POINTS})"),
            format!("maxpoints={README_MAXPOINTS}"),
        ] {
            assert!(
                main.python.contains(&wanted),
                "no {wanted} in {}",
                main.python
            );
        }
        assert!(main.install.contains(&format!("pip install {DIST_NAME} ")));
        Ok(())
    }

    /// The README installs chart_studio and plotly at the compat suite's pins, so the tutorial
    /// case changes nothing the README installed.
    #[test]
    fn the_readme_pins_what_compat_pins() -> Result<()> {
        let main = readme("README.md")?;
        let requirements = fs::read_to_string(util::project_root().join(COMPAT_REQUIREMENTS))?;
        for pin in venv::pins(&requirements)
            .into_iter()
            .filter(|p| p.contains("=="))
        {
            assert!(
                main.install.contains(&format!("\"{pin}\"")),
                "the README's install block does not pin {pin}"
            );
        }
        Ok(())
    }

    #[test]
    fn marked_blocks_are_found_and_checked() -> Result<()> {
        let text = "x\n<!-- wheel-ci: install -->\n```sh\na\nb\n```\n\n```sh\nnot marked\n```\n";
        assert_eq!(
            marked_blocks(text)?,
            [("install".to_owned(), "a\nb\n".to_owned())]
        );
        assert!(marked_blocks("<!-- wheel-ci: x -->\n\n```sh\na\n```\n").is_err());
        assert!(marked_blocks("<!-- wheel-ci: x -->\n```sh\na\n").is_err());
        let blocks = |serve: &str| ReadmeBlocks {
            install: String::new(),
            serve: serve.to_owned(),
            python: String::new(),
        };
        assert_eq!(
            blocks("plotstream serve --listen 127.0.0.1:0\n").serve_flags()?,
            ["--listen", "127.0.0.1:0"]
        );
        assert!(blocks("plotstream serve --public-url \"$X\"")
            .serve_flags()
            .is_err());
        assert!(blocks("cargo run -- serve").serve_flags().is_err());
        assert!(blocks("plotstream serve\nplotstream serve")
            .serve_flags()
            .is_err());
        Ok(())
    }
}
