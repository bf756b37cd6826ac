//! The fuzz targets (the `[[bin]]`s of `fuzz/Cargo.toml`) and their committed corpus.

use std::fs;

use anyhow::{Context, Result};

use crate::util;

/// The fuzz target names, in `fuzz/Cargo.toml` order.
pub(crate) fn targets() -> Result<Vec<String>> {
    let manifest = util::project_root().join("fuzz/Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    Ok(util::manifest_entries(&text)
        .into_iter()
        .filter(|entry| entry.table == "bin" && entry.key == "name")
        .map(|entry| util::unquote(&entry.value).to_owned())
        .collect())
}

/// The committed corpus of a target: how many inputs and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Corpus {
    pub(crate) n_files: u64,
    pub(crate) n_bytes: u64,
}

impl Corpus {
    /// The committed corpus of `target` (empty if it has none).
    pub(crate) fn of(target: &str) -> Corpus {
        let dir = util::project_root().join("fuzz/corpus").join(target);
        let mut corpus = Corpus::default();
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() {
                    corpus.n_files += 1;
                    corpus.n_bytes += meta.len();
                }
            }
        }
        corpus
    }

    /// `12 inputs, 3 KiB`.
    pub(super) fn describe(self) -> String {
        let size = if self.n_bytes < 10 * 1024 {
            format!("{} B", self.n_bytes)
        } else {
            format!("{} KiB", self.n_bytes / 1024)
        };
        format!("{} inputs, {size}", self.n_files)
    }
}
