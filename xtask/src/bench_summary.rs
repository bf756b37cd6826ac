//! `bench-summary.json`, the one file every bench writes its results into (criterion's,
//! `bench ingest`'s and `bench history`'s): merging fresh entries by name, and the JSON in reading order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value};

/// Merges `fresh` into `<target_dir>/bench-summary.json` (see [`merge`]) and writes it back: the
/// file's path and the merged entries.
pub(crate) fn merge_into_file(
    target_dir: &Path,
    fresh: Vec<Value>,
) -> Result<(PathBuf, Vec<Value>)> {
    let path = target_dir.join(FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array", path.display()))?,
        Err(_) => Vec::new(),
    };
    let merged = merge(previous, fresh);
    std::fs::write(&path, to_json(&merged)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, merged))
}

/// `previous` with every entry named in `fresh` replaced in place, then the new names appended.
pub(crate) fn merge(previous: Vec<Value>, fresh: Vec<Value>) -> Vec<Value> {
    let name = |entry: &Value| entry["name"].as_str().map(str::to_owned);
    let mut merged = previous;
    for entry in fresh {
        match merged.iter_mut().find(|old| name(old) == name(&entry)) {
            Some(old) => *old = entry,
            None => merged.push(entry),
        }
    }
    merged
}

/// The summary as pretty JSON with each object's keys in reading order: `name`, the times and
/// ratio, then throughput figures (serde_json's map would sort them alphabetically).
pub(crate) fn to_json(entries: &[Value]) -> Result<String> {
    let mut text = String::from("[");
    for (entry_idx, entry) in entries.iter().enumerate() {
        text.push_str(if entry_idx == 0 { "\n  {" } else { ",\n  {" });
        let mut keys: Vec<&String> = entry.as_object().into_iter().flat_map(Map::keys).collect();
        keys.sort_by_key(|key| key_rank(key));
        for (key_idx, key) in keys.into_iter().enumerate() {
            text.push_str(if key_idx == 0 { "\n    " } else { ",\n    " });
            text.push_str(&serde_json::to_string(key)?);
            text.push_str(": ");
            text.push_str(&serde_json::to_string(&entry[key])?);
        }
        text.push_str("\n  }");
    }
    text.push_str("\n]\n");
    Ok(text)
}

/// Orders summary keys: name, ours, baseline, ratio, extra times, throughput, derived rates.
fn key_rank(key: &str) -> (u8, String) {
    let rank = match key {
        "name" => 0,
        "ours_ns" => 1,
        "baseline_ns" => 2,
        "ratio" => 3,
        "throughput" => 5,
        _ if key.ends_with("_ns") => 4,
        _ => 6,
    };
    (rank, key.to_owned())
}

/// The summary's file name, in the target directory.
const FILE: &str = "bench-summary.json";
