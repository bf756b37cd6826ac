//! Encoding one point `{"x":<i64 ms>,"y":<f64>}\n` as one chunk (docs/performance.md, Targets,
//! first row).
//!
//! - `ours`: `encode_point_chunk` in the Raw flavour.
//! - `baseline`: `serde_json::to_writer` of a `#[derive(Serialize)]` struct into a scratch
//!   `Vec`, `\n`, then hyper-style framing (hex size from a stack buffer, data, CRLF).
//! - `floor`: formatting the two numbers alone (`itoa` + `zmij`), nothing written anywhere.
//!
//! One iteration encodes the 1024 precomputed points, each into a cleared buffer whose capacity
//! is reused, so the figure per element is the cost of one point.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plotstream_benches::{points, write_chunk_size, N_POINTS};
use plotstream_proto::encode::{encode_point_chunk, Flavour, Num};
use serde::Serialize;

#[derive(Serialize)]
struct Point {
    x: i64,
    y: f64,
}

fn encode_point(c: &mut Criterion) {
    let points = points(N_POINTS);
    let mut group = c.benchmark_group("encode_point");
    group.throughput(Throughput::Elements(N_POINTS as u64));

    group.bench_function("ours", |b| {
        let mut buf = Vec::with_capacity(256);
        b.iter(|| {
            for &(x, y) in black_box(&points) {
                buf.clear();
                encode_point_chunk(Flavour::Raw, Num::Int(x), Num::Float(y), None, &mut buf);
                black_box(buf.as_slice());
            }
        });
    });

    group.bench_function("baseline", |b| {
        let mut line = Vec::with_capacity(256);
        let mut buf = Vec::with_capacity(256);
        b.iter(|| {
            for &(x, y) in black_box(&points) {
                line.clear();
                buf.clear();
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut line, &Point { x, y });
                line.push(b'\n');
                write_chunk_size(line.len(), &mut buf);
                buf.extend_from_slice(&line);
                buf.extend_from_slice(b"\r\n");
                black_box(buf.as_slice());
            }
        });
    });

    group.bench_function("floor", |b| {
        b.iter(|| {
            for &(x, y) in black_box(&points) {
                let mut ib = itoa::Buffer::new();
                let mut zb = zmij::Buffer::new();
                black_box(ib.format(x));
                black_box(zb.format(y));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, encode_point);
criterion_main!(benches);
