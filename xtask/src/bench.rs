//! `cargo xtask bench`: runs the criterion benches and summarises them as ratios.
//!
//! Every benchmark group pairs our implementation (`<group>/ours`) with a baseline measured in the
//! same run (`<group>/baseline`), and may carry extra reference points (`floor`, `python`, ...).
//! The summary is `<target dir>/bench-summary.json`, a JSON array with one object per group:
//!
//! ```text
//! {"name": "encode_point", "ours_ns": 41.2, "baseline_ns": 73.9, "ratio": 0.56,
//!  "floor_ns": 33.0, "throughput": {"elements": 1}, "ours_ns_per_element": 41.2, ...}
//! ```
//!
//! The file is merged, not overwritten: a group measured now replaces the entry of the same name,
//! and entries of groups not measured now are kept, so separate bench runs (codec, ingest) add up.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::bench_summary::merge_into_file;
use crate::util;

pub(crate) fn run(mut args: util::Args) -> Result<ExitCode> {
    let no_run = args.flag("--no-run");
    let (positional, passthrough) = args.finish()?;
    let filter = positional.first().cloned();
    if filter.as_deref() == Some("ingest") {
        return crate::bench_ingest::run();
    }
    if filter.as_deref() == Some("history") {
        return crate::bench_history::run();
    }
    if filter.as_deref() == Some("cluster") {
        return crate::cluster::bench();
    }
    if filter.as_deref() == Some("engines") {
        return engines(&passthrough);
    }

    let started = SystemTime::now();
    if !no_run {
        // `--bench '*'`: only the criterion targets, not the library's libtest harness, which
        // rejects criterion's options.
        let mut cmd = util::cargo(["bench", "-p", BENCH_PACKAGE, "--bench", "*", "--"]);
        cmd.args(filter.iter()).args(&passthrough);
        if !util::run_echoed(&mut cmd)? {
            anyhow::bail!("cargo bench failed");
        }
    }

    let target_dir = util::target_dir();
    let criterion_dir = target_dir.join("criterion");
    // Without --no-run, only what this run measured: criterion keeps results of older runs and of
    // benches the filter excluded, and those must not overwrite the summary's entries.
    let since = (!no_run).then_some(started);
    let measurements = read_criterion(&criterion_dir, since)?;
    if measurements.is_empty() {
        anyhow::bail!(
            "no criterion results under {}{}",
            criterion_dir.display(),
            if no_run { "" } else { " from this run" }
        );
    }
    let fresh = summarise(&measurements);

    let (summary_path, merged) = merge_into_file(&target_dir, fresh)?;
    println!();
    print!("{}", table(&merged));
    println!("wrote {}", summary_path.display());
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask bench engines [-- ARGS]`: redb, fjall and SQLite on the durable store's workload
/// (docs/storage.md). bench-engines/ is a workspace of its own, so CI never compiles it; its data
/// directory is `<target>/engines-tmp`, which must be on a real disk (it prints the file system).
fn engines(passthrough: &[String]) -> Result<ExitCode> {
    let dir = util::target_dir().join("engines-tmp");
    let mut cmd = util::cargo([
        "run",
        "--release",
        "--manifest-path",
        "bench-engines/Cargo.toml",
        "--",
        "--dir",
    ]);
    cmd.arg(&dir).args(passthrough);
    if !util::run_echoed(&mut cmd)? {
        anyhow::bail!("bench-engines failed");
    }
    Ok(ExitCode::SUCCESS)
}

/// One criterion result: a benchmark id and its mean time per iteration.
#[derive(Debug, Clone, PartialEq)]
struct Measurement {
    /// The group, with criterion's parameter (`value_str`) appended as `/param` when there is one.
    group: String,
    /// `ours`, `baseline`, or an extra reference such as `floor`.
    function: String,
    mean_ns: f64,
    throughput: Option<Throughput>,
}

/// Work done by one iteration, as criterion recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Throughput {
    Elements(u64),
    Bytes(u64),
}

/// Reads every `new/benchmark.json` + `new/estimates.json` pair under `criterion_dir`, keeping
/// only the ones written at or after `since` when it is given.
fn read_criterion(criterion_dir: &Path, since: Option<SystemTime>) -> Result<Vec<Measurement>> {
    if !criterion_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut measurements = Vec::new();
    for estimates_path in util::files_with_suffix(criterion_dir, "/new/estimates.json")? {
        if let Some(since) = since {
            let modified = fs::metadata(&estimates_path)?.modified()?;
            if modified < since {
                continue;
            }
        }
        let benchmark_path = estimates_path.with_file_name("benchmark.json");
        let benchmark = read_json(&benchmark_path)?;
        let estimates = read_json(&estimates_path)?;
        if let Some(measurement) = parse_measurement(&benchmark, &estimates) {
            measurements.push(measurement);
        } else {
            eprintln!(
                "xtask: warning: cannot read {}; skipped",
                benchmark_path.display()
            );
        }
    }
    Ok(measurements)
}

fn parse_measurement(benchmark: &Value, estimates: &Value) -> Option<Measurement> {
    let mut group = benchmark["group_id"].as_str()?.to_owned();
    if let Some(param) = benchmark["value_str"].as_str() {
        group.push('/');
        group.push_str(param);
    }
    // A bare `bench_function` outside a group has no function id: it is "ours".
    let function = benchmark["function_id"]
        .as_str()
        .unwrap_or("ours")
        .to_owned();
    let mean_ns = estimates["mean"]["point_estimate"].as_f64()?;
    let throughput = match &benchmark["throughput"] {
        Value::Object(map) => {
            if let Some(n) = map.get("Elements").and_then(Value::as_u64) {
                Some(Throughput::Elements(n))
            } else if let Some(n) = map.get("ElementsAndBytes") {
                n["elements"].as_u64().map(Throughput::Elements)
            } else {
                map.get("Bytes")
                    .or_else(|| map.get("BytesDecimal"))
                    .and_then(Value::as_u64)
                    .map(Throughput::Bytes)
            }
        }
        _ => None,
    };
    Some(Measurement {
        group,
        function,
        mean_ns,
        throughput,
    })
}

/// One summary object per group, in group order.
fn summarise(measurements: &[Measurement]) -> Vec<Value> {
    let mut groups: Vec<&str> = measurements.iter().map(|m| m.group.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();

    groups
        .into_iter()
        .map(|group| {
            let mut members: Vec<&Measurement> =
                measurements.iter().filter(|m| m.group == group).collect();
            members.sort_by_key(|m| column_rank(&m.function));
            let mean = |function: &str| {
                members
                    .iter()
                    .find(|m| m.function == function)
                    .map(|m| m.mean_ns)
            };
            let ours = mean("ours");
            let baseline = mean("baseline");
            let ratio = ours.zip(baseline).map(|(ours, baseline)| ours / baseline);

            let mut entry = Map::new();
            entry.insert("name".into(), json!(group));
            entry.insert("ours_ns".into(), json!(ours));
            entry.insert("baseline_ns".into(), json!(baseline));
            entry.insert("ratio".into(), json!(ratio));
            for m in &members {
                if m.function != "ours" && m.function != "baseline" {
                    entry.insert(format!("{}_ns", m.function), json!(m.mean_ns));
                }
            }
            if let Some(throughput) = members.iter().find_map(|m| m.throughput) {
                match throughput {
                    Throughput::Elements(n) => {
                        entry.insert("throughput".into(), json!({ "elements": n }));
                        for m in &members {
                            entry.insert(
                                format!("{}_ns_per_element", m.function),
                                json!(m.mean_ns / n as f64),
                            );
                        }
                    }
                    Throughput::Bytes(n) => {
                        entry.insert("throughput".into(), json!({ "bytes": n }));
                        for m in &members {
                            // Bytes per nanosecond is GB/s (decimal).
                            entry.insert(
                                format!("{}_gb_per_s", m.function),
                                json!(n as f64 / m.mean_ns),
                            );
                        }
                    }
                }
            }
            Value::Object(entry)
        })
        .collect()
}

/// The summary as an aligned text table: one row per group, one column per function id.
fn table(entries: &[Value]) -> String {
    // Columns: the `*_ns` fields, ours and baseline first, in first-seen order.
    let mut columns: Vec<String> = vec!["ours".into(), "baseline".into()];
    for entry in entries {
        for key in entry.as_object().into_iter().flat_map(Map::keys) {
            if let Some(function) = key.strip_suffix("_ns") {
                if !function.ends_with("_per_element") && !columns.iter().any(|c| c == function) {
                    columns.push(function.to_owned());
                }
            }
        }
    }

    let mut rows = vec![{
        let mut header = vec!["name".to_owned()];
        header.extend(columns.iter().map(|c| format!("{c} ns")));
        header.extend(["ratio".to_owned(), "throughput".to_owned()]);
        header
    }];
    for entry in entries {
        let mut row = vec![entry["name"].as_str().unwrap_or("?").to_owned()];
        for column in &columns {
            row.push(format_number(&entry[format!("{column}_ns")], 1));
        }
        row.push(format_number(&entry["ratio"], 3));
        row.push(describe_throughput(entry));
        rows.push(row);
    }

    let n_columns = rows[0].len();
    let widths: Vec<usize> = (0..n_columns)
        .map(|col| rows.iter().map(|row| row[col].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (col, cell) in row.iter().enumerate() {
            if col == 0 {
                line.push_str(&format!("{cell:<width$}", width = widths[col]));
            } else {
                line.push_str(&format!("  {cell:>width$}", width = widths[col]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn describe_throughput(entry: &Value) -> String {
    if let Some(n) = entry["throughput"]["elements"].as_u64() {
        let per_element = format_number(&entry["ours_ns_per_element"], 2);
        format!("{n} elem, ours {per_element} ns/elem")
    } else if let Some(n) = entry["throughput"]["bytes"].as_u64() {
        let rate = format_number(&entry["ours_gb_per_s"], 2);
        format!("{n} B, ours {rate} GB/s")
    } else {
        "-".to_owned()
    }
}

fn format_number(value: &Value, decimals: usize) -> String {
    match value.as_f64() {
        Some(number) => format!("{number:.decimals$}"),
        None => "-".to_owned(),
    }
}

/// Sorts `ours`, then `baseline`, then the extras by name.
fn column_rank(function: &str) -> (u8, String) {
    match function {
        "ours" => (0, String::new()),
        "baseline" => (1, String::new()),
        other => (2, other.to_owned()),
    }
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

const BENCH_PACKAGE: &str = "plotstream-benches";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_summary::{merge, to_json};

    fn measurement(group: &str, function: &str, mean_ns: f64, n_points: u64) -> Measurement {
        Measurement {
            group: group.into(),
            function: function.into(),
            mean_ns,
            throughput: Some(Throughput::Elements(n_points)),
        }
    }

    #[test]
    fn parses_criterion_files() {
        let benchmark = json!({
            "group_id": "decode_body",
            "function_id": "baseline",
            "value_str": null,
            "throughput": {"Bytes": 4096},
            "full_id": "decode_body/baseline",
            "directory_name": "decode_body/baseline",
            "title": "decode_body/baseline"
        });
        let estimates = json!({
            "mean": {"confidence_interval": {"confidence_level": 0.95, "lower_bound": 1.0, "upper_bound": 3.0},
                     "point_estimate": 2.5, "standard_error": 0.1},
            "median": {"confidence_interval": {"confidence_level": 0.95, "lower_bound": 1.0, "upper_bound": 3.0},
                       "point_estimate": 2.0, "standard_error": 0.1}
        });
        assert_eq!(
            parse_measurement(&benchmark, &estimates),
            Some(Measurement {
                group: "decode_body".into(),
                function: "baseline".into(),
                mean_ns: 2.5,
                throughput: Some(Throughput::Bytes(4096)),
            })
        );
    }

    #[test]
    fn summarises_pairs_with_extras_and_throughput() {
        let measurements = [
            measurement("encode_point", "baseline", 80.0, 1),
            measurement("encode_point", "ours", 40.0, 1),
            measurement("encode_point", "floor", 33.0, 1),
            measurement("decode", "ours", 1000.0, 100),
        ];
        let summary = summarise(&measurements);
        assert_eq!(summary.len(), 2);
        let decode = &summary[0];
        assert_eq!(decode["name"], "decode");
        assert_eq!(decode["baseline_ns"], Value::Null);
        assert_eq!(decode["ratio"], Value::Null);
        assert_eq!(decode["ours_ns_per_element"], 10.0);

        let encode = &summary[1];
        assert_eq!(encode["name"], "encode_point");
        assert_eq!(encode["ours_ns"], 40.0);
        assert_eq!(encode["baseline_ns"], 80.0);
        assert_eq!(encode["ratio"], 0.5);
        assert_eq!(encode["floor_ns"], 33.0);
        assert_eq!(encode["throughput"], json!({"elements": 1}));

        let text = table(&summary);
        assert!(text.starts_with("name"), "{text}");
        assert!(text.contains("floor ns"), "{text}");
        assert!(text.contains("0.500"), "{text}");
    }

    #[test]
    fn json_keeps_reading_order_and_round_trips() -> Result<()> {
        let entries = vec![
            json!({"ratio": 0.5, "name": "a", "floor_ns": 1.0, "ours_ns": 2.0,
                                  "baseline_ns": 4.0, "throughput": {"elements": 1}}),
        ];
        let text = to_json(&entries)?;
        assert!(
            text.starts_with("[\n  {\n    \"name\": \"a\",\n    \"ours_ns\": 2.0,"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Vec<Value>>(&text)?, entries);
        assert_eq!(
            serde_json::from_str::<Vec<Value>>(&to_json(&[])?)?,
            Vec::<Value>::new()
        );
        Ok(())
    }

    #[test]
    fn merge_replaces_by_name_and_keeps_the_rest() {
        let previous = vec![
            json!({"name": "a", "ours_ns": 1.0}),
            json!({"name": "ingest", "ours_ns": 2.0}),
        ];
        let fresh = vec![
            json!({"name": "a", "ours_ns": 3.0}),
            json!({"name": "b", "ours_ns": 4.0}),
        ];
        let merged = merge(previous, fresh);
        assert_eq!(
            merged,
            vec![
                json!({"name": "a", "ours_ns": 3.0}),
                json!({"name": "ingest", "ours_ns": 2.0}),
                json!({"name": "b", "ours_ns": 4.0}),
            ]
        );
    }
}
