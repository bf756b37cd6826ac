//! Helpers shared by the subcommands: the repository root, command running, argument parsing, a
//! line-based reader of the few manifest facts we need, keys-mode accounts, the failure lines of a
//! step's output, and `npm install` of a pinned `package.json`. Child processes that must be
//! watched and stopped are `process`'s.

use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The repository root: the parent of this crate's directory.
pub(crate) fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// A `cargo` command run from the repository root.
///
/// This is the rustup proxy on `PATH`, not `$CARGO`, so that `+nightly` works.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(project_root());
    cmd
}

/// Prints `$ cmd args…` and runs `cmd` with inherited stdio; `Ok(true)` if it exited with 0.
pub(crate) fn run_echoed(cmd: &mut Command) -> Result<bool> {
    println!("$ {}", display_command(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display_command(cmd)))?;
    Ok(status.success())
}

/// Runs `cmd` with its output discarded; `true` if it started and exited with 0.
pub(crate) fn succeeds_quietly(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The command line of `cmd` as a shell user would type it.
pub(crate) fn display_command(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// The target directory cargo actually uses (it honours `CARGO_TARGET_DIR` and config files).
pub(crate) fn target_dir() -> PathBuf {
    let from_metadata = cargo(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| serde_json::from_slice::<serde_json::Value>(&output.stdout).ok())
        .and_then(|meta| meta["target_directory"].as_str().map(PathBuf::from));
    // `cargo metadata` fails while a workspace member does not parse; fall back on the usual rules.
    from_metadata.unwrap_or_else(|| match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => project_root().join(dir),
        None => project_root().join("target"),
    })
}

/// `[workspace.package] version` of the root manifest: the version of every crate, of
/// `plotstream --version` and of the wheel.
pub(crate) fn workspace_version() -> Result<String> {
    let manifest = std::fs::read_to_string(project_root().join("Cargo.toml"))
        .context("cannot read the root Cargo.toml")?;
    manifest_entries(&manifest)
        .into_iter()
        .find(|e| e.table == "workspace.package" && e.key == "version")
        .map(|e| unquote(&e.value).to_owned())
        .context("[workspace.package] has no version")
}

/// Runs `cmd` and returns its stdout; a failure to start or a non-zero exit is an error that
/// carries its stderr.
pub(crate) fn output_of(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", display_command(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` exited with {}: {}",
            display_command(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `12.3 MiB`.
pub(crate) fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!("{mib:.1} MiB")
}

/// Command-line arguments after the subcommand: `--flag`, `--flag VALUE`, positionals, and
/// everything after a bare `--` kept verbatim.
#[derive(Debug)]
pub(crate) struct Args {
    args: Vec<String>,
    passthrough: Vec<String>,
}

impl Args {
    pub(crate) fn new(mut args: Vec<String>) -> Args {
        let passthrough = match args.iter().position(|arg| arg == "--") {
            Some(idx) => {
                let rest = args.split_off(idx);
                rest[1..].to_vec()
            }
            None => Vec::new(),
        };
        Args { args, passthrough }
    }

    /// Removes `--name` and reports whether it was there.
    pub(crate) fn flag(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|arg| arg != name);
        self.args.len() != before
    }

    /// Removes `--name VALUE` (or `--name=VALUE`) and parses VALUE.
    pub(crate) fn value<T>(&mut self, name: &str) -> Result<Option<T>>
    where
        T: std::str::FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let prefix = format!("{name}=");
        let Some(idx) = self
            .args
            .iter()
            .position(|arg| arg == name || arg.starts_with(&prefix))
        else {
            return Ok(None);
        };
        let arg = self.args.remove(idx);
        let text = match arg.strip_prefix(&prefix) {
            Some(text) => text.to_owned(),
            None if idx < self.args.len() => self.args.remove(idx),
            None => bail!("`{name}` needs a value"),
        };
        let value = text
            .parse()
            .with_context(|| format!("bad value `{text}` for `{name}`"))?;
        Ok(Some(value))
    }

    /// The remaining positional arguments; fails on an unknown `--flag`.
    pub(crate) fn finish(self) -> Result<(Vec<String>, Vec<String>)> {
        if let Some(unknown) = self.args.iter().find(|arg| arg.starts_with('-')) {
            bail!("unknown option `{unknown}`");
        }
        Ok((self.args, self.passthrough))
    }
}

/// One `key = value` line of a TOML manifest, with the table it sits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestEntry {
    /// The table header without brackets: `package`, `dependencies`, `bin` for `[[bin]]`,
    /// `target.'cfg(unix)'.dependencies`.
    pub(crate) table: String,
    pub(crate) key: String,
    /// The raw value text, comment stripped.
    pub(crate) value: String,
    /// Its line number, from 1.
    pub(crate) line: usize,
}

/// Reads `key = value` lines table by table.
///
/// This is deliberately not a TOML parser: it is exact for the flat manifests this repository
/// writes (one entry per line), and it keeps xtask's build to two dependencies. Lines without `=`
/// (continuations of multi-line arrays) are skipped.
pub(crate) fn manifest_entries(text: &str) -> Vec<ManifestEntry> {
    let mut table = String::new();
    let mut entries = Vec::new();
    for (line_idx, line) in text.lines().enumerate() {
        let line = strip_comment(line).trim();
        if let Some(header) = line.strip_prefix('[') {
            table = header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            entries.push(ManifestEntry {
                table: table.clone(),
                key: key.trim().trim_matches('"').to_owned(),
                value: value.trim().to_owned(),
                line: line_idx + 1,
            });
        }
    }
    entries
}

/// `"text"` without its quotes, for simple string values.
pub(crate) fn unquote(value: &str) -> &str {
    value.trim().trim_matches('"')
}

/// Every file under `dir` (recursively) whose name ends with `suffix`, sorted.
pub(crate) fn files_with_suffix(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `line` up to a `#` that is outside a basic string.
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    for (idx, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..idx],
            _ => {}
        }
    }
    line
}

/// A keys-mode account as `plotstream user add` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) username: String,
    pub(crate) api_key: String,
    pub(crate) stream_ids: Vec<String>,
}

/// `plotstream user add NAME --users FILE [--api-key KEY] --stream-ids N` with the real binary
/// (it creates `users` if missing; without a key it makes a random one); run it with
/// [`run_user_add`].
pub(crate) fn user_add_command(
    binary: &Path,
    users: &Path,
    name: &str,
    api_key: Option<&str>,
    n_stream_ids: usize,
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["user", "add", name, "--users"])
        .arg(users)
        .args(["--stream-ids", &n_stream_ids.to_string()]);
    if let Some(key) = api_key {
        cmd.args(["--api-key", key]);
    }
    cmd
}

/// Runs a [`user_add_command`] and reads the account from the JSON line it prints.
pub(crate) fn run_user_add(cmd: &mut Command) -> Result<Account> {
    let output = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", display_command(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed: {}",
            display_command(cmd),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_account(&String::from_utf8_lossy(&output.stdout))
}

/// `{"username","api_key","stream_ids"}`, the line `plotstream user add` prints.
pub(crate) fn parse_account(line: &str) -> Result<Account> {
    let json: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("`plotstream user add` printed {line:?}, not one JSON line"))?;
    let text = |key: &str| {
        json[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("`plotstream user add` printed no {key}: {line}"))
    };
    let stream_ids = json["stream_ids"]
        .as_array()
        .with_context(|| format!("`plotstream user add` printed no stream_ids: {line}"))?
        .iter()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    Ok(Account {
        username: text("username")?,
        api_key: text("api_key")?,
        stream_ids,
    })
}

/// What a CI step made of several checks (`cluster`, `wheel`, `cross`): one count each, and the
/// failures in its own words; or why it did not run at all.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    /// Why the step did not run (what the machine lacks).
    pub(crate) skipped: Option<String>,
    /// The checks of a step that ran which this machine could not make: `what: why`.
    pub(crate) skipped_parts: Vec<String>,
    pub(crate) failures: Vec<String>,
}

impl Checked {
    pub(crate) fn skipped(reason: impl Into<String>) -> Checked {
        Checked {
            skipped: Some(reason.into()),
            ..Checked::default()
        }
    }

    /// Skips the check `what` because of `why` (said on a line of its own, and in the summary).
    pub(crate) fn skip(&mut self, what: &str, why: impl std::fmt::Display) {
        println!("{what}: SKIPPED ({why})");
        self.skipped_parts.push(format!("{what}: {why}"));
    }

    /// Counts the check `what`: passed, or failed with `why` (printed, and kept for the summary).
    pub(crate) fn count(&mut self, what: &str, result: Result<String>) {
        match result {
            Ok(detail) => {
                println!("{what}: ok: {detail}");
                self.passed += 1;
            }
            Err(err) => {
                let text = format!("{err:#}");
                println!("{what}: FAILED: {text}");
                self.failed += 1;
                self.failures.push(format!(
                    "{what}: {}",
                    text.lines().next().unwrap_or_default()
                ));
            }
        }
    }
}

/// The lines of a step's output worth repeating in the CI summary, where a reader of only the
/// end of the log sees them: a failed conformance case with its reasons, a panicking test with
/// its message, a failed compat case with its error.
#[derive(Debug, Default)]
pub(crate) struct FailureLines {
    lines: Vec<String>,
    /// Lines still to keep after a match (its indented details, a panic's message).
    follow: usize,
}

impl FailureLines {
    /// At most this many lines per step; each cut to `WIDTH` characters.
    const MAX: usize = 30;
    const WIDTH: usize = 400;

    pub(crate) fn see(&mut self, line: &str) {
        let line = line.trim_end();
        let starts_failure = line.starts_with("FAIL ")
            || line.starts_with("FAILED")
            || line.contains("panicked at")
            || (line.contains(": FAILED (") && !line.starts_with("    "));
        let keep = if starts_failure {
            self.follow = 3;
            true
        } else if self.follow > 0 && !line.trim().is_empty() {
            self.follow -= 1;
            true
        } else {
            self.follow = 0;
            false
        };
        if keep && self.lines.len() < Self::MAX {
            self.lines.push(line.chars().take(Self::WIDTH).collect());
        }
    }

    pub(crate) fn into_lines(self) -> Vec<String> {
        self.lines
    }
}

/// Echoes `stdout` line by line until EOF, handing each line to `on_line`; returns the
/// [`FailureLines`] it saw.
pub(crate) fn echo_lines(stdout: impl std::io::Read, mut on_line: impl FnMut(&str)) -> Vec<String> {
    use std::io::{BufRead, Write};
    let mut failures = FailureLines::default();
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
        let text = String::from_utf8_lossy(&line);
        failures.see(&text);
        on_line(&text);
    }
    failures.into_lines()
}

/// [`echo_lines`] of the child's piped stdout, on a thread.
pub(crate) fn tee_stdout(
    child: &mut std::process::Child,
) -> Result<std::thread::JoinHandle<Vec<String>>> {
    let stdout = child
        .stdout
        .take()
        .context("the child has no stdout pipe")?;
    Ok(std::thread::spawn(move || echo_lines(stdout, |_| {})))
}

/// Runs `cmd` like [`run_echoed`], keeping its [`FailureLines`]: `(succeeded, failure lines)`.
pub(crate) fn run_teed(cmd: &mut Command) -> Result<(bool, Vec<String>)> {
    println!("$ {}", display_command(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", display_command(cmd)))?;
    let tee = tee_stdout(&mut child)?;
    let status = child.wait().context("cannot wait for the child")?;
    let lines = tee.join().unwrap_or_default();
    Ok((status.success(), lines))
}

/// Runs `npm install` in `dir` unless every dependency of its `package.json` is already installed
/// at exactly the pinned version.
pub(crate) fn npm_install(dir: &Path) -> Result<()> {
    let manifest_path = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("cannot parse {}", manifest_path.display()))?;
    let stale = stale_dependencies(&manifest, |name| {
        let path = dir.join("node_modules").join(name).join("package.json");
        let text = std::fs::read_to_string(path).ok()?;
        let installed: serde_json::Value = serde_json::from_str(&text).ok()?;
        installed["version"].as_str().map(str::to_owned)
    });
    if stale.is_empty() {
        println!("npm: {} is current", dir.join("node_modules").display());
        return Ok(());
    }
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-audit", "--no-fund"])
        .current_dir(dir);
    if !run_echoed(&mut cmd)? {
        bail!("npm install failed in {}", dir.display());
    }
    Ok(())
}

/// The dependencies of a `package.json` that are not installed at the version it names.
/// `installed_version(name)` reads `node_modules/<name>/package.json`.
fn stale_dependencies(
    manifest: &serde_json::Value,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_lines_keep_failed_cases_and_panics_with_their_details() {
        let mut f = FailureLines::default();
        for line in [
            "PASS       A1   MUST   fine (3 ms)",
            "FAIL       E2   MUST   head deadline (612 ms)",
            "           at 612 ms, not within 400..600 ms",
            "",
            "test ok_test ... ok",
            "thread 'x' (12) panicked at tests/a.rs:3:5:",
            "assertion `left == right` failed: E9 late",
            "  left: Fail",
            " right: Pass",
            "note: run with `RUST_BACKTRACE=1`",
            "PASS       A2   MUST   fine (3 ms)",
        ] {
            f.see(line);
        }
        assert_eq!(
            f.into_lines(),
            [
                "FAIL       E2   MUST   head deadline (612 ms)",
                "           at 612 ms, not within 400..600 ms",
                "thread 'x' (12) panicked at tests/a.rs:3:5:",
                "assertion `left == right` failed: E9 late",
                "  left: Fail",
                " right: Pass",
            ]
        );
    }

    #[test]
    fn accounts_are_read_from_the_user_add_line() -> Result<()> {
        let account = parse_account(
            "{\"api_key\":\"demokey123\",\"stream_ids\":[\"thc44y3djs\",\"k1suez70vz\"],\"username\":\"demo\"}\n",
        )?;
        assert_eq!(
            account,
            Account {
                username: "demo".to_owned(),
                api_key: "demokey123".to_owned(),
                stream_ids: vec!["thc44y3djs".to_owned(), "k1suez70vz".to_owned()],
            }
        );
        assert!(parse_account("error: user demo exists").is_err());
        assert!(parse_account("{\"username\":\"demo\"}").is_err());
        Ok(())
    }

    #[test]
    fn manifest_entries_follow_tables() {
        let text = "\
[package]
name = \"plotstream-fuzz\" # the package
publish = false

[dependencies]
libfuzzer-sys = \"0.4\"
plotstream-proto = { path = \"../crates/plotstream-proto\", features = [\"fuzzing\"] }

[[bin]]
name = \"head\"
";
        let entries = manifest_entries(text);
        let find = |table: &str, key: &str| {
            entries
                .iter()
                .find(|entry| entry.table == table && entry.key == key)
                .map(|entry| entry.value.clone())
        };
        assert_eq!(
            find("package", "name").as_deref(),
            Some("\"plotstream-fuzz\"")
        );
        assert_eq!(find("package", "publish").as_deref(), Some("false"));
        assert_eq!(
            find("dependencies", "libfuzzer-sys").as_deref(),
            Some("\"0.4\"")
        );
        assert!(find("dependencies", "plotstream-proto").is_some());
        assert_eq!(find("bin", "name").as_deref(), Some("\"head\""));
    }

    #[test]
    fn comments_inside_strings_are_kept() {
        assert_eq!(strip_comment(r##"a = "x#y" # c"##), r#"a = "x#y" "#);
        assert_eq!(strip_comment(r##"a = "q\"#" # c"##), r##"a = "q\"#" "##);
    }

    #[test]
    fn args_split_flags_values_and_passthrough() -> Result<()> {
        let raw = ["head", "--secs", "5", "--no-run", "--", "-jobs=2"];
        let mut args = Args::new(raw.iter().map(|arg| (*arg).to_owned()).collect());
        assert!(args.flag("--no-run"));
        assert_eq!(args.value::<u64>("--secs")?, Some(5));
        let (positional, passthrough) = args.finish()?;
        assert_eq!(positional, ["head"]);
        assert_eq!(passthrough, ["-jobs=2"]);

        let mut args = Args::new(vec!["--secs=7".to_owned()]);
        assert_eq!(args.value::<u64>("--secs")?, Some(7));
        assert!(Args::new(vec!["--bogus".to_owned()]).finish().is_err());
        Ok(())
    }

    #[test]
    fn stale_dependencies_are_the_ones_not_installed_as_pinned() {
        let manifest = serde_json::json!({
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
        assert!(stale_dependencies(&serde_json::json!({"name": "x"}), |_| None).is_empty());
    }
}
