//! `cargo xtask cross` and the CI step `cross` (issue 15 item 3): plotstream for the Raspberry
//! Pi and other ARM boards, and the files that run it as a service (`packaging/`).
//!
//! The binaries are built with the system's cross compilers (Debian's `gcc-aarch64-linux-gnu`,
//! `libc6-dev-arm64-cross`, `gcc-arm-linux-gnueabihf`, `libc6-dev-armhf-cross`) and the rustup
//! targets: this module sets `CARGO_TARGET_<TRIPLE>_LINKER`, `CC_<triple>` and `AR_<triple>` itself
//! (ring compiles C), so no `.cargo/config.toml` is needed. They run under qemu's user-mode
//! emulation (`qemu-user`: `qemu-aarch64 -L /usr/aarch64-linux-gnu`).
//!
//! - `cargo xtask cross` builds `plotstream` in release for every [`TARGETS`] entry, prints each
//!   binary's size and stripped size, leaves the stripped copy in
//!   `<target>/cross/plotstream-<triple>`, and smoke-tests it under qemu when qemu is there.
//! - The CI step checks, one count each: `config`, the sample configuration
//!   (`packaging/plotstream.toml`) read by the native binary with `--print-config`, every line of
//!   it in what that prints, and the unit through `systemd-analyze verify` when there is one;
//!   `aarch64 build`, in [`CI_PROFILE`] (release at `opt-level = 1`: a release build takes
//!   minutes more on two cores); `aarch64 run`, that binary under qemu: `--version`, then
//!   `serve --in-memory --listen 127.0.0.1:0` with a chunked writer and the stream's inspection.
//!   A part the machine cannot do (no cross gcc, no rust target, no qemu) is SKIPPED with the
//!   reason, and the step says so in its summary.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{
    http,
    process::{self, Serve, Stop},
    util::{self, Checked},
};

/// A board's target: the rust triple and the Debian cross toolchain and emulator that go with it.
#[derive(Debug, Clone, Copy)]
struct Target {
    triple: &'static str,
    /// The prefix of the cross tools: `aarch64-linux-gnu` for `aarch64-linux-gnu-gcc`.
    gnu: &'static str,
    /// The Debian packages that bring the cross gcc and libc.
    packages: &'static str,
    qemu: &'static str,
    boards: &'static str,
}

/// The boards' targets, the one CI builds first.
const TARGETS: [Target; 2] = [
    Target {
        triple: "aarch64-unknown-linux-gnu",
        gnu: "aarch64-linux-gnu",
        packages: "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
        qemu: "qemu-aarch64",
        boards: "Raspberry Pi 3, 4, 5 and Zero 2 W with a 64-bit OS, and other arm64 boards",
    },
    Target {
        triple: "armv7-unknown-linux-gnueabihf",
        gnu: "arm-linux-gnueabihf",
        packages: "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
        qemu: "qemu-arm",
        boards: "Raspberry Pi 2, 3, 4 with a 32-bit OS, and other armv7 boards",
    },
];

/// How a binary is built: cargo's profile and the `--config` settings that define it.
#[derive(Debug, Clone, Copy)]
struct Profile {
    name: &'static str,
    config: &'static [&'static str],
}

const RELEASE: Profile = Profile {
    name: "release",
    config: &[],
};

/// CI's profile for the aarch64 build: release at `opt-level = 1`, no debug info, 16 codegen
/// units. Defined here with `--config`, not in Cargo.toml, since only this step uses it.
const CI_PROFILE: Profile = Profile {
    name: "cross-ci",
    config: &[
        "profile.cross-ci.inherits=\"release\"",
        "profile.cross-ci.opt-level=1",
        "profile.cross-ci.debug=0",
        "profile.cross-ci.codegen-units=16",
    ],
};

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let only: Option<String> = args.value("--target")?;
    let (positional, _) = args.finish()?;
    if let Some(extra) = positional.first() {
        bail!("`cross` takes no positional argument, got `{extra}`");
    }
    let targets: Vec<Target> = TARGETS
        .into_iter()
        .filter(|t| only.as_deref().is_none_or(|only| t.triple == only))
        .collect();
    if targets.is_empty() {
        bail!(
            "no target {only:?}; the targets are {:?}",
            TARGETS.map(|t| t.triple)
        );
    }
    let out = util::target_dir().join("cross");
    fs::create_dir_all(&out)?;
    let mut ok = true;
    for target in targets {
        if let Err(reason) = target.can_build() {
            bail!("cannot build {}: {reason}", target.triple);
        }
        let started = Instant::now();
        let binary = target.build(RELEASE)?;
        let secs = started.elapsed().as_secs_f64();
        let stripped = out.join(format!("plotstream-{}", target.triple));
        println!(
            "cross: {} ({}) built in {secs:.0} s: {}",
            target.triple,
            target.boards,
            target.sizes(&binary, &stripped)?
        );
        println!("cross: stripped copy at {}", stripped.display());
        match target.runner() {
            Ok(runner) => match smoke(&binary, &runner) {
                Ok(detail) => println!("cross: {} under qemu: ok: {detail}", target.triple),
                Err(err) => {
                    println!("cross: {} under qemu: FAILED: {err:#}", target.triple);
                    ok = false;
                }
            },
            Err(reason) => println!("cross: {} not run: {reason}", target.triple),
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The CI step (see the module).
pub(crate) fn check() -> Result<Checked> {
    let mut out = Checked::default();
    out.count("cross: config", check_packaging());
    let target = TARGETS[0];
    if let Err(reason) = target.can_build() {
        out.skip(&format!("cross: {} build", target.triple), reason);
        return Ok(out);
    }
    let started = Instant::now();
    let built = target.build(CI_PROFILE).and_then(|binary| {
        let stripped = util::target_dir()
            .join("cross")
            .join(format!("plotstream-{}-{}", target.triple, CI_PROFILE.name));
        fs::create_dir_all(stripped.parent().unwrap_or(Path::new(".")))?;
        let sizes = target.sizes(&binary, &stripped)?;
        Ok((binary, sizes))
    });
    let secs = started.elapsed().as_secs_f64();
    let binary = match built {
        Ok((binary, sizes)) => {
            out.count(
                &format!("cross: {} build", target.triple),
                Ok(format!(
                    "profile {} in {secs:.0} s: {sizes}",
                    CI_PROFILE.name
                )),
            );
            binary
        }
        Err(err) => {
            out.count(&format!("cross: {} build", target.triple), Err(err));
            return Ok(out);
        }
    };
    match target.runner() {
        Ok(runner) => {
            let started = Instant::now();
            let ran = smoke(&binary, &runner)
                .map(|detail| format!("{detail} ({:.1} s)", started.elapsed().as_secs_f64()));
            out.count(&format!("cross: {} run under qemu", target.triple), ran);
        }
        Err(reason) => out.skip(&format!("cross: {} run under qemu", target.triple), reason),
    }
    Ok(out)
}

impl Target {
    /// Whether this machine can build for the target: its cross gcc and its rust standard
    /// library (rustup's target) are installed; else what to install.
    fn can_build(&self) -> Result<(), String> {
        let gcc = format!("{}-gcc", self.gnu);
        if !util::succeeds_quietly(Command::new(&gcc).arg("--version")) {
            return Err(format!(
                "no {gcc}; install the Debian packages {} (.ci/run does)",
                self.packages
            ));
        }
        let installed =
            util::output_of(Command::new("rustup").args(["target", "list", "--installed"]));
        match installed {
            Ok(list) if list.lines().any(|line| line.trim() == self.triple) => Ok(()),
            Ok(_) => Err(format!(
                "the rust target is not installed: rustup target add {} (.ci/run does)",
                self.triple
            )),
            // Without rustup, the toolchain may still have the target: let the build say.
            Err(_) => Ok(()),
        }
    }

    /// What cargo needs to build for the target with the cross gcc: the linker, and the C
    /// compiler and archiver the `cc` crate uses (for ring).
    fn env(&self) -> [(String, String); 3] {
        let gcc = format!("{}-gcc", self.gnu);
        let env_triple = self.triple.replace('-', "_");
        [
            (
                format!("CARGO_TARGET_{}_LINKER", env_triple.to_uppercase()),
                gcc.clone(),
            ),
            (format!("CC_{env_triple}"), gcc),
            (format!("AR_{env_triple}"), format!("{}-ar", self.gnu)),
        ]
    }

    /// `cargo build -p plotstream --target TRIPLE --profile P`, linked and compiled with the
    /// cross gcc: the binary.
    fn build(&self, profile: Profile) -> Result<PathBuf> {
        let mut cmd = util::cargo(["build", "-p", "plotstream", "--target", self.triple]);
        cmd.args(["--profile", profile.name]);
        for setting in profile.config {
            cmd.args(["--config", setting]);
        }
        cmd.envs(self.env());
        if !util::run_echoed(&mut cmd)? {
            bail!("cargo build for {} failed", self.triple);
        }
        Ok(util::target_dir()
            .join(self.triple)
            .join(profile.name)
            .join("plotstream"))
    }

    /// `N MiB, stripped M MiB`; the stripped copy is left at `stripped`.
    fn sizes(&self, binary: &Path, stripped: &Path) -> Result<String> {
        let mut strip = Command::new(format!("{}-strip", self.gnu));
        strip.arg("-o").arg(stripped).arg(binary);
        util::output_of(&mut strip)?;
        Ok(format!(
            "{} {}, stripped {}",
            binary.display(),
            util::mib(fs::metadata(binary)?.len()),
            util::mib(fs::metadata(stripped)?.len())
        ))
    }

    /// `qemu-ARCH -L /usr/GNU`, or why the binary cannot run here.
    fn runner(&self) -> Result<Vec<String>, String> {
        let sysroot = format!("/usr/{}", self.gnu);
        if !Path::new(&sysroot).join("lib").is_dir() {
            return Err(format!("no {sysroot}/lib (the packages {})", self.packages));
        }
        for qemu in [self.qemu.to_owned(), format!("{}-static", self.qemu)] {
            if util::succeeds_quietly(Command::new(&qemu).arg("--version")) {
                return Ok(vec![qemu, "-L".to_owned(), sysroot]);
            }
        }
        Err(format!(
            "no {}; install the Debian package qemu-user (.ci/run does)",
            self.qemu
        ))
    }
}

/// The environment that builds for `triple`, one of [`TARGETS`], with the cross gcc (for
/// `cargo xtask wheel --target`); an error says what this machine lacks.
pub(crate) fn build_env(triple: &str) -> Result<[(String, String); 3]> {
    let target = TARGETS
        .into_iter()
        .find(|t| t.triple == triple)
        .with_context(|| {
            format!(
                "no target {triple}; the targets are {:?}",
                TARGETS.map(|t| t.triple)
            )
        })?;
    target
        .can_build()
        .map_err(|reason| anyhow::anyhow!("cannot build {triple}: {reason}"))?;
    Ok(target.env())
}

/// The binary under `runner`: `--version` says the workspace version, and `serve` takes a
/// chunked writer's lines and shows them through its inspection route.
fn smoke(binary: &Path, runner: &[String]) -> Result<String> {
    let version = util::workspace_version()?;
    let mut cmd = Command::new(&runner[0]);
    cmd.args(&runner[1..]).arg(binary).arg("--version");
    let said = util::output_of(&mut cmd)?;
    if said.trim() != format!("plotstream {version}") {
        bail!("`{}` printed {said:?}", util::display_command(&cmd));
    }
    let mut server = Serve::new(binary)
        .runner(runner)
        .flags(["--in-memory", "--listen", "127.0.0.1:0"])
        .named(format!("plotstream serve under {}", runner[0]))
        .echo()
        .start()?;
    let checked = write_and_inspect(server.addr());
    let stopped = server.stop(Stop::Graceful);
    if checked.is_err() || !matches!(stopped, Ok(status) if status.success()) {
        println!("cross: the emulated server's log:");
        for line in server.log() {
            println!("  | {line}");
        }
    }
    let detail = checked?;
    match stopped? {
        status if status.success() => Ok(format!(
            "{said_version}; {detail}; stopped by SIGTERM",
            said_version = said.trim()
        )),
        status => bail!("the server exited with {status} after SIGTERM"),
    }
}

/// Writes [`POINTS`] points to a fresh token of the server at `addr`, then reads them back.
fn write_and_inspect(addr: std::net::SocketAddr) -> Result<String> {
    let lines: Vec<String> = (1..=POINTS)
        .map(|i| format!("{{\"x\":{i},\"y\":{}}}", i * i))
        .collect();
    let response = http::write_lines(addr, TOKEN, &lines)?;
    if response.status != 200 {
        bail!(
            "the writer's final response is {}: {}",
            response.status,
            response.body
        );
    }
    let stream = http::inspect(addr, TOKEN)?;
    let xs: Vec<u64> = (1..=POINTS).collect();
    let ys: Vec<u64> = xs.iter().map(|x| x * x).collect();
    if stream["last_seq"].as_u64() != Some(POINTS)
        || stream["window"]["x"] != serde_json::json!(xs)
        || stream["window"]["y"] != serde_json::json!(ys)
    {
        bail!("the inspection of {TOKEN} is not the {POINTS} points written: {stream}");
    }
    Ok(format!(
        "{POINTS} lines written (200), GET /api/streams/{TOKEN}: last_seq {POINTS}, window as written"
    ))
}

/// The sample configuration through the real parser, and the unit through systemd's.
fn check_packaging() -> Result<String> {
    let root = util::project_root();
    let config = root.join("packaging/plotstream.toml");
    let binary = process::build_plotstream(false)?;
    let mut cmd = Command::new(&binary);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .arg("--print-config");
    let printed = util::output_of(&mut cmd)?;
    let text = fs::read_to_string(&config)?;
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if settings.is_empty() {
        bail!("{} sets nothing", config.display());
    }
    if let Some(missing) = settings.iter().find(|s| !printed.lines().any(|l| l == **s)) {
        bail!(
            "`{}` does not print `{missing}`:\n{printed}",
            util::display_command(&cmd)
        );
    }
    let unit = root.join("packaging/plotstream.service");
    let unit_text = fs::read_to_string(&unit)?;
    if !unit_text.contains(&format!("{UNIT_BINARY} serve --config {UNIT_CONFIG}\n")) {
        bail!(
            "{} does not run `{UNIT_BINARY} serve --config {UNIT_CONFIG}`",
            unit.display()
        );
    }
    let verified = verify_unit(&unit_text, &binary)?;
    Ok(format!(
        "{} read by serve --print-config ({} settings); {verified}",
        config.display(),
        settings.len()
    ))
}

/// `systemd-analyze verify` of the unit, its binary the one just built (verify wants it to
/// exist), in a scratch copy; what it found, or that it is not installed.
fn verify_unit(unit: &str, binary: &Path) -> Result<String> {
    if !util::succeeds_quietly(Command::new("systemd-analyze").arg("--version")) {
        return Ok("no systemd-analyze, the unit is not verified".to_owned());
    }
    let dir = util::target_dir().join("cross");
    fs::create_dir_all(&dir)?;
    let copy = dir.join("plotstream.service");
    fs::write(&copy, unit.replace(UNIT_BINARY, &binary.to_string_lossy()))?;
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg(&copy);
    let output = cmd.output().context("cannot run systemd-analyze verify")?;
    // It exits with 0 on unknown keys and bad values too, and says so on stderr.
    let said = String::from_utf8_lossy(&output.stderr);
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("plotstream.service"))
        .collect();
    if !output.status.success() || !about_unit.is_empty() {
        bail!(
            "systemd-analyze verify: {}\n{}",
            output.status,
            about_unit.join("\n")
        );
    }
    Ok("systemd-analyze verify: no complaint".to_owned())
}

/// What the service runs (packaging/plotstream.service; README.md "On a Raspberry Pi").
const UNIT_BINARY: &str = "/usr/local/bin/plotstream";
const UNIT_CONFIG: &str = "/etc/plotstream/plotstream.toml";
/// The emulated server's writer: this token, this many points.
const TOKEN: &str = "crosscheck01";
const POINTS: u64 = 5;
