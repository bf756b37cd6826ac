//! `cargo xtask fuzz --coverage`: line coverage of each target over its committed corpus, from
//! `cargo fuzz coverage` and the nightly toolchain's `llvm-cov`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::corpus::Corpus;
use super::toolchain::cargo_fuzz;
use crate::util;

/// `cargo fuzz coverage` of each target over its committed corpus, then `llvm-cov export`:
/// prints the line coverage of every source file of ours that the target reaches.
pub(super) fn print_coverage(targets: &[String]) -> Result<bool> {
    let llvm_cov = llvm_cov()?;
    let root = util::project_root();
    let mut ok = true;
    for target in targets {
        let corpus = Path::new("fuzz/corpus").join(target);
        let mut cmd = cargo_fuzz("coverage");
        cmd.arg(target);
        cmd.arg(&corpus);
        if !util::succeeds_quietly(&mut cmd) {
            println!(
                "coverage {target}: FAILED (`{}`)",
                util::display_command(&cmd)
            );
            ok = false;
            continue;
        }
        // cargo-fuzz builds for coverage under `<current dir>/target/<host>/coverage`, apart
        // from the fuzzing build, whatever the target directory.
        let host = host_triple()?;
        let binary = root
            .join("target")
            .join(&host)
            .join("coverage")
            .join(&host)
            .join("release")
            .join(target);
        let profdata = root
            .join("fuzz/coverage")
            .join(target)
            .join("coverage.profdata");
        let output = Command::new(&llvm_cov)
            .arg("export")
            .arg("-summary-only")
            .arg(format!("-instr-profile={}", profdata.display()))
            .arg(&binary)
            .output()
            .with_context(|| format!("cannot run {}", llvm_cov.display()))?;
        if !output.status.success() {
            println!(
                "coverage {target}: llvm-cov failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            ok = false;
            continue;
        }
        let mut files = covered_files(&output.stdout, &root)?;
        let report = Command::new(&llvm_cov)
            .args(["report", "-show-functions"])
            .arg(format!("-instr-profile={}", profdata.display()))
            .arg(&binary)
            // The files the `config` target includes by path, under the name given here.
            .arg(format!(
                "-path-equivalence={}/fuzz/fuzz_targets/../..,{}",
                root.display(),
                root.display()
            ))
            .args(files.iter().map(|f| root.join(&f.path)))
            .output()
            .with_context(|| format!("cannot run {}", llvm_cov.display()))?;
        add_reached_functions(&String::from_utf8_lossy(&report.stdout), &root, &mut files);
        let sum = |f: fn(&FileCoverage) -> (u64, u64)| {
            files
                .iter()
                .map(f)
                .fold((0, 0), |(c, n), (fc, fnn)| (c + fc, n + fnn))
        };
        let (covered, count) = sum(|f| (f.covered, f.count));
        let (fn_covered, fn_count) = sum(|f| f.in_functions);
        println!(
            "coverage {target} ({}): {} of the {fn_count} lines of the functions it reaches; \
             {} of the {count} lines of the {} files",
            Corpus::of(target).describe(),
            percent(fn_covered, fn_count),
            percent(covered, count),
            files.len()
        );
        for f in &files {
            println!(
                "  {:<44} functions {:>7} ({:>4}/{:<4}) file {:>7} ({}/{})",
                f.path,
                percent(f.in_functions.0, f.in_functions.1),
                f.in_functions.0,
                f.in_functions.1,
                percent(f.covered, f.count),
                f.covered,
                f.count
            );
        }
    }
    Ok(ok)
}

/// Line coverage of one source file.
#[derive(Debug, PartialEq, Eq)]
struct FileCoverage {
    /// Relative to the repository root.
    path: String,
    covered: u64,
    count: u64,
    /// `(covered, count)` over the functions (closures included) with a line reached.
    in_functions: (u64, u64),
}

/// The files of this repository (not the fuzz targets themselves, not dependencies) with at
/// least one line reached, from `llvm-cov export -summary-only` JSON.
fn covered_files(json: &[u8], root: &Path) -> Result<Vec<FileCoverage>> {
    let export: serde_json::Value =
        serde_json::from_slice(json).context("llvm-cov export gave no JSON")?;
    let root = format!("{}/", root.display());
    let mut files = Vec::new();
    for file in export["data"][0]["files"].as_array().into_iter().flatten() {
        let Some(path) = file["filename"].as_str() else {
            continue;
        };
        let path = lexical(path);
        let Some(path) = path.strip_prefix(&root) else {
            continue;
        };
        if !path.starts_with("crates/") {
            continue;
        }
        let lines = &file["summary"]["lines"];
        let (Some(covered), Some(count)) = (lines["covered"].as_u64(), lines["count"].as_u64())
        else {
            continue;
        };
        if covered > 0 {
            files.push(FileCoverage {
                path: path.to_owned(),
                covered,
                count,
                in_functions: (0, 0),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Adds to `files` the lines of the functions with a line reached, from `llvm-cov report
/// -show-functions`: a `File '…':` line, then one row per function, `NAME` and nine columns
/// (regions, missed, cover, lines, missed, cover, branches, missed, cover).
fn add_reached_functions(report: &str, root: &Path, files: &mut [FileCoverage]) {
    let root = format!("{}/", root.display());
    let mut current: Option<usize> = None;
    for line in report.lines() {
        if let Some(path) = line
            .strip_prefix("File '")
            .and_then(|l| l.strip_suffix("':"))
        {
            let path = lexical(path);
            let path = path.strip_prefix(&root).unwrap_or(&path);
            current = files.iter().position(|f| f.path == path);
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(idx), [name, _, _, _, lines, missed, _, _, _, _]) = (current, &fields[..]) else {
            continue;
        };
        let (Ok(lines), Ok(missed)) = (lines.parse::<u64>(), missed.parse::<u64>()) else {
            continue;
        };
        if *name != "TOTAL" && missed < lines {
            let f = &mut files[idx].in_functions;
            *f = (f.0 + lines - missed, f.1 + lines);
        }
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    // Counts of source lines: far below 2^52, exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let p = part as f64 * 100.0 / whole as f64;
    format!("{p:.1} %")
}

/// The nightly toolchain's `llvm-cov` (component `llvm-tools-preview`).
fn llvm_cov() -> Result<PathBuf> {
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("cannot run rustc +nightly")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let path = sysroot
        .join("lib/rustlib")
        .join(host_triple()?)
        .join("bin/llvm-cov");
    if !path.exists() {
        bail!(
            "no {}; add it with `rustup component add llvm-tools-preview --toolchain nightly`",
            path.display()
        );
    }
    Ok(path)
}

fn host_triple() -> Result<String> {
    let output = Command::new("rustc")
        .args(["+nightly", "-vV"])
        .output()
        .context("cannot run rustc +nightly -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// `path` with its `..` taken away lexically: the `config` target includes the binary's files
/// by `#[path]`, so llvm-cov names them `…/fuzz/fuzz_targets/../../crates/…`.
fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            ".." if parts.last().is_some_and(|p| !p.is_empty() && *p != "..") => {
                parts.pop();
            }
            "." => {}
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_our_reached_files_from_llvm_cov_export() {
        let json = br#"{"data":[{"files":[
            {"filename":"/r/crates/plotstream-proto/src/head.rs","summary":{"lines":{"count":200,"covered":190}}},
            {"filename":"/r/crates/plotstream-proto/src/json.rs","summary":{"lines":{"count":500,"covered":0}}},
            {"filename":"/r/fuzz/fuzz_targets/head.rs","summary":{"lines":{"count":1,"covered":1}}},
            {"filename":"/home/.cargo/registry/src/httparse/src/lib.rs","summary":{"lines":{"count":900,"covered":300}}}
        ]}]}"#;
        assert_eq!(
            covered_files(json, Path::new("/r")).unwrap(),
            vec![FileCoverage {
                path: "crates/plotstream-proto/src/head.rs".to_owned(),
                covered: 190,
                count: 200,
                in_functions: (0, 0),
            }]
        );
        let mut files = covered_files(json, Path::new("/r")).unwrap();
        let report = "File '/r/crates/plotstream-proto/src/head.rs':\n\
            Name      Regions    Miss   Cover     Lines    Miss   Cover  Branches    Miss   Cover\n\
            --------------------------------------------------------------------------------\n\
            _RNvparse      10       2  80.00%        20       3  85.00%         0       0   0.00%\n\
            _RNvunused      4       4   0.00%         6       6   0.00%         0       0   0.00%\n\
            _RNvcheck       2       0 100.00%         5       0 100.00%         0       0   0.00%\n\
            TOTAL          16       6  62.50%        31       9  70.97%         0       0   0.00%\n";
        add_reached_functions(report, Path::new("/r"), &mut files);
        assert_eq!(files[0].in_functions, (22, 25));
        assert_eq!(percent(190, 200), "95.0 %");
        // Files a target includes by path.
        assert_eq!(
            lexical("/r/fuzz/fuzz_targets/../../crates/plotstream/src/config_file.rs"),
            "/r/crates/plotstream/src/config_file.rs"
        );
        assert_eq!(lexical("../a/./b"), "../a/b");
        assert_eq!(percent(0, 0), "-");
    }
}
