//! Tidy checks: repository-wide rules that are cheaper to test than to review.
//!
//! They are ordinary `#[test]`s, so `cargo test --workspace` runs them. Each failure lists every
//! offending file and line, not just the first.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::util::{self, files_with_suffix, manifest_entries, project_root, unquote};

/// STYLE.md convention 1: the protocol crate depends on no I/O runtime or network stack.
#[test]
fn proto_has_no_io_dependencies() -> Result<()> {
    let manifest = read(&project_root().join("crates/plotstream-proto/Cargo.toml"))?;
    let mut offenders = Vec::new();
    for entry in manifest_entries(&manifest) {
        let Some(name) = dependency_name(&entry) else {
            continue;
        };
        if FORBIDDEN_PROTO_DEPENDENCIES.contains(&name.as_str()) {
            offenders.push(format!("[{}] {}", entry.table, entry.key));
        }
    }
    assert!(
        offenders.is_empty(),
        "plotstream-proto is sans-IO (STYLE.md 1) but depends on:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// README codemap: the case catalogue depends on nothing of ours, so that `plotstream-proto`'s
/// tests can read it without a dependency cycle (and two copies of proto's types).
#[test]
fn cases_depend_on_nothing_of_ours() -> Result<()> {
    let manifest = read(&project_root().join("crates/plotstream-cases/Cargo.toml"))?;
    let ours: Vec<String> = manifest_entries(&manifest)
        .iter()
        .filter_map(dependency_name)
        .filter(|name| name.starts_with("plotstream"))
        .collect();
    assert!(
        ours.is_empty(),
        "plotstream-cases depends on nothing of ours, but on: {}",
        ours.join(", ")
    );
    Ok(())
}

/// STYLE.md convention 1: the protocol crate does no I/O and reads no clock; time comes in as a
/// `now` argument. Comment lines are skipped, so docs may say what is forbidden.
#[test]
fn proto_src_does_no_io_and_reads_no_clock() -> Result<()> {
    let src = project_root().join("crates/plotstream-proto/src");
    let mut offenders = Vec::new();
    for path in files_with_suffix(&src, ".rs")? {
        let text = read(&path)?;
        for (line_idx, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for pattern in FORBIDDEN_PROTO_CODE {
                if line.contains(pattern) {
                    offenders.push(format!("{}:{}: `{pattern}`", relative(&path), line_idx + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "plotstream-proto performs no I/O and reads no clock (STYLE.md 1):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// STYLE.md convention 10: internal crates are `publish = false` and take the workspace lints.
#[test]
fn crates_are_unpublished_and_use_workspace_lints() -> Result<()> {
    let mut offenders = Vec::new();
    for manifest_path in crate_manifests()? {
        let entries = manifest_entries(&read(&manifest_path)?);
        let has = |table: &str, key: &str, value: &str| {
            entries
                .iter()
                .any(|e| e.table == table && e.key == key && e.value == value)
        };
        if !has("package", "publish", "false") {
            offenders.push(format!(
                "{}: missing `publish = false`",
                relative(&manifest_path)
            ));
        }
        let lints_inline = has("lints", "workspace", "true");
        let lints_dotted = entries
            .iter()
            .any(|e| e.table.is_empty() && e.key == "lints.workspace" && e.value == "true");
        if !lints_inline && !lints_dotted {
            offenders.push(format!(
                "{}: missing `[lints] workspace = true`",
                relative(&manifest_path)
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "crate manifests break STYLE.md 10:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// STYLE.md convention 6: library crates document every public item.
#[test]
fn libraries_deny_missing_docs() -> Result<()> {
    let mut offenders = Vec::new();
    for manifest_path in crate_manifests()? {
        let Some(crate_dir) = manifest_path.parent() else {
            continue;
        };
        let lib_rs = crate_dir.join("src/lib.rs");
        if lib_rs.is_file() && !read(&lib_rs)?.contains("#![deny(missing_docs)]") {
            offenders.push(relative(&lib_rs));
        }
    }
    assert!(
        offenders.is_empty(),
        "library crates need `#![deny(missing_docs)]` (STYLE.md 6):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// STYLE.md convention 7: no ignored tests and no `should_panic` tests; a test that cannot run in
/// CI does not exist, and peer data never panics.
#[test]
fn no_ignored_or_should_panic_tests() -> Result<()> {
    // Spelled in pieces so that this file does not trip its own check.
    let forbidden = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let root = project_root();
    let mut offenders = Vec::new();
    for dir in ["crates", "benches"] {
        let dir = root.join(dir);
        if !dir.is_dir() {
            continue;
        }
        for path in files_with_suffix(&dir, ".rs")? {
            let text = read(&path)?;
            for (line_idx, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for pattern in forbidden {
                    if line.contains(pattern) {
                        offenders.push(format!(
                            "{}:{}: `{pattern}]`",
                            relative(&path),
                            line_idx + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "no ignored and no should_panic tests (STYLE.md 7):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// The dependency an entry declares, if it is one: `tokio = ...` under `[dependencies]` or a
/// target-specific dependency table, a `[dependencies.tokio]` table, or a renamed
/// `x = { package = "tokio" }`.
fn dependency_name(entry: &util::ManifestEntry) -> Option<String> {
    let is_dependency_table =
        entry.table == "dependencies" || entry.table.ends_with(".dependencies");
    if let Some(name) = entry.table.strip_prefix("dependencies.") {
        return Some(name.trim_matches('"').to_owned());
    }
    if !is_dependency_table {
        return None;
    }
    if let Some((_, renamed)) = entry.value.split_once("package") {
        if let Some((_, name)) = renamed.split_once('=') {
            let name = name.split([',', '}']).next().unwrap_or_default();
            return Some(unquote(name).to_owned());
        }
    }
    Some(entry.key.clone())
}

/// `crates/*/Cargo.toml`, plus xtask's own manifest.
fn crate_manifests() -> Result<Vec<PathBuf>> {
    let root = project_root();
    let mut manifests = vec![root.join("xtask/Cargo.toml")];
    for entry in fs::read_dir(root.join("crates"))? {
        let manifest = entry?.path().join("Cargo.toml");
        if manifest.is_file() {
            manifests.push(manifest);
        }
    }
    manifests.sort();
    Ok(manifests)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn relative(path: &Path) -> String {
    let root = project_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

const FORBIDDEN_PROTO_DEPENDENCIES: &[&str] =
    &["tokio", "mio", "socket2", "async-std", "hyper", "reqwest"];

const FORBIDDEN_PROTO_CODE: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "std::net",
    "tokio",
    "std::thread::sleep",
];

#[test]
fn dependency_names_cover_every_spelling() {
    let entries = manifest_entries(
        "\
[dependencies]
bytes = \"1\"
net = { package = \"tokio\", version = \"1\" }
[target.'cfg(unix)'.dependencies]
mio = \"1\"
[dependencies.hyper]
version = \"1\"
[dev-dependencies]
tokio = \"1\"
",
    );
    let names: Vec<String> = entries.iter().filter_map(dependency_name).collect();
    assert_eq!(names, ["bytes", "tokio", "mio", "hyper"]);
}
