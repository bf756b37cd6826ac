//! Keeping one point in a stream's history, as ingest does for every accepted line
//! (docs/history.md "What it costs"): the work #14's ingest ratio pays on the ingest threads.
//!
//! - `ours`: `history::Builder` as the store drives it, lazy (the line journal holds the open
//!   chunk), one point a line: `push_open` while the point fits in the open chunk, else
//!   `push_all`, whose seal's writes are gathered owned (as `journal_line` gathers them before it
//!   locks the journal). That is encoding the point, the head's facts, its tier entries, and at
//!   every 1 024th point the seal: the chunk's record and the tier blocks.
//! - `baseline`: the points kept without tiers: each encoded into the open chunk, which is copied
//!   into a record of its own every 1 024 points (what any store of the points does).
//! - `floor`: encoding the points alone, into a buffer cleared every 1 024.
//!
//! One iteration keeps 16 384 points (16 chunks, so one in 1 024 seals), from a builder carried
//! across iterations like a stream's.
//!
//! `history_line` starts where the store does, from a line's parsed update (`{"x": .., "y": ..}`,
//! x a number or a date string as plotly's clients send it):
//!
//! - `borrowed`: `points_of` lends the line's values to the builder (`PointRef`), as the store
//!   keeps them;
//! - `owned`: each point first made a `Point` of its own (a date string copied into it), as
//!   before 2026-12-07's fifth session.
//!
//! `date_key` reads a date string's milliseconds (`parse_date`, every date point's key):
//! `ours` beside `parse_fraction`, the fraction read as before that session (a string
//! `0.<digits>` made and parsed as an `f64`, the rest by `parse_date`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plotstream_benches::points;
use plotstream_proto::json::Str;
use plotstream_proto::{Update, Value};
use plotstream_server::history::point::encode_point;
use plotstream_server::history::point::{format_date, parse_date};
use plotstream_server::history::{points_of, AsPoint, Builder, Point, PointRef, Val, Write, CHUNK};

/// Points an iteration keeps.
const N: usize = 16 * 1024;

fn history_build(c: &mut Criterion) {
    let kept: Vec<Point> = points(N)
        .into_iter()
        .enumerate()
        .map(|(i, (x, y))| Point {
            seq: i as u64 + 1,
            t: x,
            x: Val::Num(x as f64),
            y: Val::Num(y),
        })
        .collect();
    let mut group = c.benchmark_group("history_build");
    group.throughput(Throughput::Elements(N as u64));

    group.bench_function("ours", |b| {
        let mut builder = Builder::new();
        builder.set_lazy(true);
        let mut writes: Vec<Write<'static>> = Vec::new();
        b.iter(|| {
            for p in black_box(&kept) {
                keep(&mut builder, &mut writes, std::iter::once(p));
            }
        });
    });

    group.bench_function("baseline", |b| {
        let mut chunk = Vec::new();
        let mut n = 0u64;
        b.iter(|| {
            for p in black_box(&kept) {
                encode_point(p, &mut chunk);
                n += 1;
                if n.is_multiple_of(CHUNK) {
                    black_box(chunk.clone());
                    chunk.clear();
                }
            }
        });
    });

    group.bench_function("floor", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for (i, p) in black_box(&kept).iter().enumerate() {
                if i % 1024 == 0 {
                    out.clear();
                }
                encode_point(p, &mut out);
            }
            black_box(&out);
        });
    });
    group.finish();
}

/// Keeps one line's `points` in `builder` as the store does: `push_open` while they fit in the
/// open chunk, else `push_all`, its seal's writes gathered owned.
fn keep<P: AsPoint>(
    builder: &mut Builder,
    writes: &mut Vec<Write<'static>>,
    points: impl ExactSizeIterator<Item = P>,
) {
    if builder.fits(points.len()) {
        black_box(builder.push_open(points));
    } else {
        builder.push_all(points, &mut |w| writes.push(w.into_owned()));
        black_box(&*writes);
        writes.clear();
    }
}

/// Keeps every point of `lines` in `builder` as the store does, each point made by `make`.
fn keep_lines<'a, P: AsPoint>(
    builder: &mut Builder,
    writes: &mut Vec<Write<'static>>,
    lines: &'a [Update],
    make: impl Fn(PointRef<'a>) -> P,
) {
    for (i, u) in lines.iter().enumerate() {
        keep(
            builder,
            writes,
            points_of(u, i as u64 + 1, 1_796_595_689_500).map(&make),
        );
    }
}

fn history_line(c: &mut Criterion) {
    let line = |x: Value, y: f64| {
        let mut u = Update::default();
        u.data.push((Str::from("x"), x));
        u.data.push((Str::from("y"), Value::Number(y)));
        u
    };
    let numbers: Vec<Update> = points(N)
        .into_iter()
        .map(|(x, y)| line(Value::Number(x as f64), y))
        .collect();
    let dates: Vec<Update> = points(N)
        .into_iter()
        .map(|(x, y)| {
            let date = format_date(x as f64).unwrap_or_default();
            line(Value::Str(Str::from(date.as_str())), y)
        })
        .collect();
    let mut group = c.benchmark_group("history_line");
    group.throughput(Throughput::Elements(N as u64));
    for (name, lines) in [("numbers", &numbers), ("dates", &dates)] {
        group.bench_function(format!("borrowed/{name}"), |b| {
            let (mut builder, mut writes) = (Builder::new(), Vec::new());
            builder.set_lazy(true);
            b.iter(|| keep_lines(&mut builder, &mut writes, black_box(lines), |p| p));
        });
        group.bench_function(format!("owned/{name}"), |b| {
            let (mut builder, mut writes) = (Builder::new(), Vec::new());
            builder.set_lazy(true);
            b.iter(|| {
                keep_lines(
                    &mut builder,
                    &mut writes,
                    black_box(lines),
                    PointRef::to_point,
                )
            });
        });
    }
    group.finish();
}

fn date_key(c: &mut Criterion) {
    let dates: Vec<String> = points(N)
        .into_iter()
        .map(|(x, y)| format_date(x as f64 + y.abs() / 1000.0).unwrap_or_default())
        .collect();
    let mut group = c.benchmark_group("date_key");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("ours", |b| {
        b.iter(|| {
            for d in black_box(&dates) {
                black_box(parse_date(d));
            }
        });
    });
    group.bench_function("parse_fraction", |b| {
        b.iter(|| {
            for d in black_box(&dates) {
                let (whole, frac) = d.split_once('.').unwrap_or((d, "0"));
                let frac = format!("0.{frac}").parse::<f64>().unwrap_or(0.0) * 1000.0;
                black_box(parse_date(whole).map(|ms| ms + frac));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, history_build, history_line, date_key);
criterion_main!(benches);
