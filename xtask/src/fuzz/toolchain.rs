//! cargo-fuzz under the nightly toolchain: whether it is there, the `cargo fuzz` command, and
//! how the targets are built (with AddressSanitizer or without).

use std::process::Command;

use crate::util;

/// `Ok` if `cargo +nightly fuzz` runs, else the reason to print after `SKIPPED`.
pub(crate) fn check_available() -> Result<(), &'static str> {
    if !util::succeeds_quietly(&mut util::cargo(["+nightly", "--version"])) {
        return Err("no nightly toolchain; .ci/run installs it");
    }
    if !util::succeeds_quietly(&mut util::cargo(["+nightly", "fuzz", "--version"])) {
        return Err("cargo-fuzz not installed; .ci/run installs it");
    }
    Ok(())
}

/// `cargo +nightly fuzz SUBCOMMAND --fuzz-dir fuzz`, without the variables `cargo run` set for
/// xtask itself (`CARGO_PKG_NAME=xtask`, `CARGO_MANIFEST_DIR`, …): ring's build script asks
/// cargo to rerun when `CARGO_PKG_NAME` changes, and cargo compares it with its own
/// environment, so a `cargo fuzz` typed in a shell and one run by xtask rebuilt ring, rustls
/// and plotstream-server (20-30 s) each time the other had built last.
pub(super) fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = util::cargo(["+nightly", "fuzz", subcommand, "--fuzz-dir", "fuzz"]);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*name)
        {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

/// How the fuzz targets are built (and so run: `cargo fuzz run` builds first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// cargo-fuzz's default: release, debug assertions and overflow checks, AddressSanitizer,
    /// in `fuzz/target`. For `cargo xtask fuzz` and soak, which run long enough to find what
    /// only ASan sees (memory errors in the `unsafe` code of dependencies).
    Asan,
    /// The same without a sanitizer, in [`NO_SANITIZER_TARGET_DIR`] so that neither build
    /// invalidates the other. For CI's smoke run: the cold build costs 30-40 % less CPU
    /// (docs/fuzzing.md) and the targets run 1.8-6 times faster.
    NoSanitizer,
}

impl Build {
    /// `cargo fuzz build` of every target, in one invocation (one compile of the dependency
    /// graph; the `cargo fuzz run` of each target then finds it fresh).
    pub(crate) fn command(self) -> Command {
        let mut cmd = cargo_fuzz("build");
        cmd.args(self.options());
        cmd
    }

    /// The options `cargo fuzz build|run|cmin` take for this build.
    pub(super) fn options(self) -> &'static [&'static str] {
        match self {
            Build::Asan => &[],
            Build::NoSanitizer => &[
                "--sanitizer",
                "none",
                "--target-dir",
                NO_SANITIZER_TARGET_DIR,
            ],
        }
    }
}

/// Where [`Build::NoSanitizer`] builds, relative to the repository root.
const NO_SANITIZER_TARGET_DIR: &str = "fuzz/target/no-sanitizer";
