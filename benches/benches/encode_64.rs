//! Encoding 64 points per chunk (the Raw writer's `--points-per-chunk 64`).
//!
//! - `ours`: `ChunkBatch::begin`, 64 × `push_point`, `finish`.
//! - `baseline`: 64 × (`serde_json::to_writer` + `\n`) into a scratch `Vec`, then hyper-style
//!   framing around it.
//!
//! One iteration encodes the 1024 precomputed points as 16 chunks into a cleared buffer.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plotstream_benches::{points, write_chunk_size, N_POINTS};
use plotstream_proto::encode::{ChunkBatch, Flavour, Num};
use serde::Serialize;

const PER_CHUNK: usize = 64;

#[derive(Serialize)]
struct Point {
    x: i64,
    y: f64,
}

fn encode_64(c: &mut Criterion) {
    let points = points(N_POINTS);
    let mut group = c.benchmark_group("encode_64");
    group.throughput(Throughput::Elements(N_POINTS as u64));

    group.bench_function("ours", |b| {
        let mut buf = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            buf.clear();
            for chunk in black_box(&points).chunks(PER_CHUNK) {
                let mut batch = ChunkBatch::begin(&mut buf);
                for &(x, y) in chunk {
                    batch.push_point(Flavour::Raw, Num::Int(x), Num::Float(y), None, &mut buf);
                }
                batch.finish(&mut buf);
            }
            black_box(buf.as_slice());
        });
    });

    group.bench_function("baseline", |b| {
        let mut lines = Vec::with_capacity(8 * 1024);
        let mut buf = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            buf.clear();
            for chunk in black_box(&points).chunks(PER_CHUNK) {
                lines.clear();
                for &(x, y) in chunk {
                    // Writing into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut lines, &Point { x, y });
                    lines.push(b'\n');
                }
                write_chunk_size(lines.len(), &mut buf);
                buf.extend_from_slice(&lines);
                buf.extend_from_slice(b"\r\n");
            }
            black_box(buf.as_slice());
        });
    });
    group.finish();
}

criterion_group!(benches, encode_64);
criterion_main!(benches);
