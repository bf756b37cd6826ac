//! Fills a data directory with STREAMS streams of POINTS points each, through the same store
//! and journal `plotstream serve` uses, then closes it cleanly: the input of
//! `cargo xtask bench startup` (docs/storage.md, start-up).
//!
//! `cargo run --release -p plotstream-server --example fill_store -- DIR STREAMS POINTS`

#![allow(clippy::unwrap_used)] // a bench tool: a failure ends it with the reason

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plotstream_proto::update::parse_update;
use plotstream_proto::{Limits, Token};
use plotstream_server::durable::{Backend, Journal, RedbBackend};
use plotstream_server::{Metrics, Store, StoreConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, dir] = &args[..] {
        if cmd == "compact" {
            compact(dir);
            return;
        }
    }
    let [dir, streams, points] = &args[..] else {
        eprintln!("usage: fill_store DIR STREAMS POINTS | fill_store compact DIR");
        std::process::exit(2);
    };
    let (streams, points): (usize, usize) = (streams.parse().unwrap(), points.parse().unwrap());
    let started = Instant::now();
    let mut backend = RedbBackend::open(std::path::Path::new(dir)).unwrap();
    backend.set_clean(false).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (journal, thread) = Journal::start(
        Box::new(backend),
        Duration::from_millis(10),
        metrics.clone(),
    );
    let config = StoreConfig {
        max_streams: streams.max(10_000),
        new_streams_per_peer: 0,
        ..StoreConfig::default()
    };
    let store = Store::with_journal(config, metrics, journal.clone());
    let conn = store.new_conn();
    let t0 = 1_733_500_000_000_u64;
    let mut ndjson_bytes = 0;
    for i in 0..points {
        for s in 0..streams {
            let line = format!(
                "{{\"x\":{},\"y\":{:.6}}}",
                t0 + i as u64 * 1000,
                (s * points + i) as f64 * 0.001
            );
            ndjson_bytes += line.len() + 1;
            let update = parse_update(&Bytes::from(line), &Limits::default()).unwrap();
            let token = Token::parse(format!("stream{s:05}").as_bytes()).unwrap();
            store.apply(&conn, &token, &update).unwrap();
        }
        if journal.is_backlogged() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    store.release(&conn);
    journal.close(Some(thread));
    let size = dir_bytes(dir);
    println!(
        "{{\"streams\":{streams},\"points\":{points},\"fill_s\":{:.2},\"ndjson_bytes\":{ndjson_bytes},\"disk_bytes\":{size}}}",
        started.elapsed().as_secs_f64()
    );
}

fn dir_bytes(dir: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Compacts DIR's store and prints the time and the sizes before and after.
fn compact(dir: &str) {
    let before = dir_bytes(dir);
    let started = Instant::now();
    let mut backend = RedbBackend::open(std::path::Path::new(dir)).unwrap();
    let opened = started.elapsed().as_secs_f64();
    backend.compact().unwrap();
    drop(backend);
    println!(
        "{{\"open_s\":{opened:.2},\"compact_s\":{:.2},\"bytes_before\":{before},\"bytes_after\":{}}}",
        started.elapsed().as_secs_f64() - opened,
        dir_bytes(dir)
    );
}
