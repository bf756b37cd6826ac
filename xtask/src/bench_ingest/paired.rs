//! The durable store's window-only and history rows in alternating pairs (issue #14's ratio).

use anyhow::Result;
use serde_json::{json, Value};

/// Pairs of runs of the durable store rows keeping the window only and with history.
const STORE_ROUNDS: usize = 5;

/// The window-only and history rows of the durable store, each bulk and per-point row the
/// median of [`STORE_ROUNDS`] pairs. `run(history, first)` starts a server on a fresh data
/// directory, with history or keeping the window only, and runs the rows (the latency row too
/// when `first`, the first pair's).
pub(super) fn paired_store_rows(
    mut run: impl FnMut(bool, bool) -> Result<Vec<Value>>,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut rounds: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
    for round in 0..STORE_ROUNDS {
        let first = round == 0;
        // W H, H W, W H, ...: the order alternates.
        let (without, with) = if round % 2 == 0 {
            let without = run(false, first)?;
            (without, run(true, first)?)
        } else {
            let with = run(true, first)?;
            (run(false, first)?, with)
        };
        rounds.push((without, with));
    }
    let rate = |r: &Value| r["points_per_s"].as_f64().unwrap_or(0.0);
    let ratio = |with: &Value, without: &Value| quotient(rate(with), rate(without));
    // What a point costs both processes (server and load generator): at max rate on two cores
    // throughput is about two cores over it.
    let cpu = |r: &Value| {
        r["server_cpu_ns_per_point"].as_f64().unwrap_or(0.0)
            + r["load_cpu_ns_per_point"].as_f64().unwrap_or(0.0)
    };
    let cpu_ratio = |with: &Value, without: &Value| quotient(cpu(without), cpu(with));
    let (mut window_only, mut store) = (Vec::new(), Vec::new());
    let n_rows = rounds.first().map_or(0, |(w, _)| w.len());
    for i in 0..n_rows {
        let pairs: Vec<(&Value, &Value)> = rounds
            .iter()
            .filter_map(|(w, h)| Some((w.get(i)?, h.get(i)?)))
            .collect();
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by(|&a, &b| {
            ratio(pairs[a].1, pairs[a].0).total_cmp(&ratio(pairs[b].1, pairs[b].0))
        });
        let Some(&median) = order.get(order.len() / 2) else {
            continue;
        };
        let (without, with) = pairs[median];
        let (mut without, mut with) = (without.clone(), with.clone());
        with["window_only_points_per_s"] = json!(rate(&without));
        with["ratio_to_window_only"] = json!(ratio(&with, &without));
        with["target_ratio_to_window_only"] = json!(0.75);
        let mut by_cpu: Vec<f64> = pairs.iter().map(|(w, h)| cpu_ratio(h, w)).collect();
        if !by_cpu.is_empty() && by_cpu.iter().all(|r| *r > 0.0) {
            with["rounds_cpu_ratio_to_window_only"] = json!(by_cpu);
            by_cpu.sort_by(f64::total_cmp);
            with["cpu_ratio_to_window_only"] = json!(by_cpu[by_cpu.len() / 2]);
        }
        if pairs.len() > 1 {
            with["rounds_ratio_to_window_only"] =
                json!(pairs.iter().map(|(w, h)| ratio(h, w)).collect::<Vec<_>>());
            with["rounds_points_per_s"] =
                json!(pairs.iter().map(|(_, h)| rate(h)).collect::<Vec<_>>());
            without["rounds_points_per_s"] =
                json!(pairs.iter().map(|(w, _)| rate(w)).collect::<Vec<_>>());
        }
        window_only.push(without);
        store.push(with);
    }
    Ok((window_only, store))
}

/// `a / b`, or 0 when `b` is not positive (a run that measured nothing).
fn quotient(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}
