//! Tidy checks: repository-wide rules that are cheaper to test than to review.
//!
//! They are ordinary `#[test]`s, so `cargo test --workspace` runs them. Each failure lists every
//! offending file and line, not just the first. By rule family:
//!
//! - `manifests`: what the `Cargo.toml` files may say: the codemap's dependency directions, no I/O
//!   runtime in the protocol crate, no `anyhow` in libraries, published crates ready for
//!   crates.io and internal ones unpublished, the workspace lints, documented libraries;
//! - `sources`: what Rust source may contain: no I/O or clock in the protocol crate, no ignored
//!   tests, no file over 700 lines outside tests;
//! - `imports`: no import circle between the files of a crate;
//! - `packaging`: the Python package's manifest has the workspace version and builds the binary;
//! - `docs`: the spec in `docs/`: cited ids and sections exist, catalogue cases belong to
//!   described groups, relative links resolve, nothing cites the spec files that were replaced.
//!
//! A guard whose rule the code does not meet yet lists the exceptions in an allowlist constant,
//! with the reason; the guard fails when the code gets worse than the list.

mod docs;
mod imports;
mod lexer;
mod manifests;
mod packaging;
mod sources;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::util::project_root;

/// Every file under `dirs` of `root` whose name ends with one of `suffixes` (any file when
/// `suffixes` is empty), skipping build output, dependencies and fuzz corpora.
pub(super) fn source_files(root: &Path, dirs: &[&str], suffixes: &[&str]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    while let Some(dir) = pending.pop() {
        if !dir.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_ref()) {
                    pending.push(path);
                }
            } else if suffixes.is_empty() || suffixes.iter().any(|s| name.ends_with(s)) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

pub(super) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(super) fn relative(path: &Path) -> String {
    let root = project_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Directories no tidy walk enters: build output, installed dependencies, fuzz inputs.
const SKIPPED_DIRS: &[&str] = &[
    "target",
    ".git",
    "node_modules",
    "corpus",
    "artifacts",
    "__pycache__",
];
