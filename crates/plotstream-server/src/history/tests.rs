//! The history end to end without I/O: points built into records as a backend stores them
//! (through `Batch::hist_writes`, the backends' own translation), read back through `View`.

use std::sync::Arc;

use super::build::{Builder, Head, Write, HEAD};
use super::downsample::{downsample, Bucketing};
use super::mem::Mem;
use super::point::{decode_points, Point, Val};
use super::query::{By, View};
use super::tier::{decode_block, Mark, Summary, TOP};
use crate::durable::Batch;

/// Pushes `w` into `batch`.
fn journal(token: &Arc<str>, batch: &mut Batch, w: Write<'_>) {
    batch.push_history(token, w);
}

/// A day at 1 Hz-like point `i`: x a date string one second apart, y a slow wave with a spike
/// at every 10 007th point.
fn point(i: u64) -> Point {
    let x = super::point::format_date(1_796_515_200_000.0 + i as f64 * 1000.0).unwrap_or_default();
    let y = if i % 10_007 == 5 {
        1000.0 + i as f64
    } else {
        ((i as f64) / 500.0).sin()
    };
    Point {
        seq: i + 1,
        t: 1_796_515_200_000 + i as i64,
        x: Val::Str(x.into()),
        y: Val::Num(y),
    }
}

/// `total` points, committed every `every`.
fn build(total: u64, every: u64) -> (Mem, Builder) {
    let token: Arc<str> = Arc::from("tok");
    let mut mem = Mem::default();
    let mut b = Builder::new();
    let mut batch = Batch::default();
    for i in 0..total {
        b.push(&point(i), &mut |w| journal(&token, &mut batch, w));
        if (i + 1) % every == 0 {
            mem.commit(&std::mem::take(&mut batch));
        }
    }
    mem.commit(&batch);
    (mem, b)
}

fn raw(view: &View<'_, Mem>, a: u64, b: u64) -> Vec<(u64, Point)> {
    let mut out = Vec::new();
    view.points(a, b, &mut |n, p| {
        out.push((n, p.clone()));
        true
    })
    .unwrap_or_default();
    out
}

#[test]
fn every_point_is_read_back_whatever_the_commits() {
    for every in [1, 7, 1000, 5000] {
        let (mem, b) = build(5_000, every);
        let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(view.end, 5_000);
        assert_eq!(b.end, 5_000);
        let all = raw(&view, 0, 5_000);
        assert_eq!(all.len(), 5_000, "every {every}");
        assert!(all.iter().all(|(n, p)| *p == point(*n)));
        assert_eq!(raw(&view, 1020, 1030).len(), 10);
        assert!(view.head.by_x());
        // The parts of sealed chunks are gone: only whole chunks and the open one's parts.
        let level0 = mem.0.range((0, 0)..(1, 0)).count();
        assert!(level0 <= 4 + usize::try_from(8 * 1024 / every.min(1024) / 8).unwrap_or(0) + 200);
    }
}

#[test]
fn ranges_by_time_and_by_x_find_the_exact_positions() {
    let (mem, _) = build(70_000, 100);
    let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
    for n in [0u64, 1, 15, 16, 1023, 1024, 4095, 65_535, 65_536, 69_999] {
        let p = point(n);
        assert_eq!(view.locate(By::Time, p.t as f64, false).unwrap_or(0), n);
        assert_eq!(view.locate(By::Time, p.t as f64, true).unwrap_or(0), n + 1);
        assert_eq!(view.locate(By::X, p.x.key(), false).unwrap_or(0), n);
        assert_eq!(view.locate(By::X, p.x.key() - 0.5, false).unwrap_or(0), n);
    }
    assert_eq!(view.locate(By::Time, 0.0, false).unwrap_or(1), 0);
    assert_eq!(view.locate(By::Time, f64::MAX, false).unwrap_or(0), 70_000);
}

#[test]
fn a_downsampled_range_is_bounded_real_and_keeps_the_extremes() {
    let (mem, _) = build(86_400, 250);
    let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
    let all = raw(&view, 0, 86_400);
    for (a, b, max) in [
        (0u64, 86_400u64, 2000usize),
        (13, 80_001, 1000),
        (40_000, 40_300, 2000),
        (5, 9, 3),
    ] {
        let lo = point(a).x.key();
        let hi = point(b - 1).x.key();
        let out = view
            .downsample(a, b, max, Bucketing::X { lo, hi }, TOP)
            .unwrap_or_default();
        assert!(out.len() <= max, "{a}..{b}: {} > {max}", out.len());
        assert!(out.windows(2).all(|w| w[0].n < w[1].n && w[0].x <= w[1].x));
        for m in &out {
            assert!((a..b).contains(&m.n));
            assert_eq!(*m, Mark::of(m.n, &all[m.n as usize].1), "a real point");
        }
        let range = &all[a as usize..b as usize];
        let ymax = range
            .iter()
            .map(|(n, p)| Mark::of(*n, p).y)
            .fold(f64::MIN, f64::max);
        let ymin = range
            .iter()
            .map(|(n, p)| Mark::of(*n, p).y)
            .fold(f64::MAX, f64::min);
        assert!(
            out.iter().any(|m| m.y == ymax),
            "{a}..{b}: the highest point"
        );
        if max >= 4 {
            assert!(
                out.iter().any(|m| m.y == ymin),
                "{a}..{b}: the lowest point"
            );
            assert_eq!(out.first().map(|m| m.n), Some(a));
            assert_eq!(out.last().map(|m| m.n), Some(b - 1));
        }
        if b - a <= max as u64 / 4 {
            // Small enough that every bucket is one point: exact.
            assert_eq!(out.len() as u64, b - a);
        }
    }
}

#[test]
fn the_tiers_give_what_the_points_give() {
    // Downsampling from tier entries equals downsampling the same covering by single points,
    // bucket for bucket (the entries are exact summaries of their points).
    let (mem, _) = build(20_000, 333);
    let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (777u64, 19_500u64);
    for level in 1..=3u8 {
        let mut coarse = Vec::new();
        view.cover(a, b, level, &mut coarse)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(coarse.iter().map(|s| s.count).sum::<u64>(), b - a);
        assert_eq!(coarse.first().map(|s| s.first.n), Some(a));
        assert_eq!(coarse.last().map(|s| s.last.n), Some(b - 1));
        let mut fine: Vec<Summary> = Vec::new();
        view.cover(a, b, 0, &mut fine)
            .unwrap_or_else(|e| panic!("{e}"));
        // Group the single points exactly as the coarse covering does.
        let mut grouped = Vec::new();
        let mut it = fine.into_iter();
        for c in &coarse {
            let mut s = it.next().unwrap_or_else(|| panic!("short"));
            for _ in 1..c.count {
                s.merge(&it.next().unwrap_or_else(|| panic!("short")));
            }
            assert_eq!(s, *c, "level {level}");
            grouped.push(s);
        }
        let bucketing = Bucketing::N { lo: a, hi: b };
        assert_eq!(
            downsample(&coarse, 400, bucketing),
            downsample(&grouped, 400, bucketing)
        );
    }
}

#[test]
fn every_stored_tier_entry_summarizes_its_points_one_by_one() {
    // The builder joins a point to level 1 and a finished level-1 entry to the levels above;
    // each stored entry must be what pushing its points one by one gives (ties included).
    let total = 70_001;
    let (mem, _) = build(total, 1000);
    let all: Vec<Point> = (0..total).map(point).collect();
    let mut checked = [0usize; 5];
    for (&(level, index), record) in mem.0.range((1, 0)..(TOP + 1, 0)) {
        let entries = decode_block(record).unwrap_or_else(|| panic!("block ({level}, {index})"));
        for (slot, got) in entries {
            let span = super::tier::span(level);
            let start = (index * 16 + u64::from(slot)) * span;
            let end = (start + span).min(mem_sealed(&mem));
            let mut want = Summary::of(Mark::of(start, &all[start as usize]));
            for n in start + 1..end {
                want.push(Mark::of(n, &all[n as usize]));
            }
            assert_eq!(got, want, "level {level} block {index} slot {slot}");
            checked[usize::from(level)] += 1;
        }
    }
    assert!(
        checked[1..].iter().all(|c| *c > 0),
        "every level stored: {checked:?}"
    );
}

/// The first point not in a sealed chunk, as the stored head says.
fn mem_sealed(mem: &Mem) -> u64 {
    mem.0
        .get(&(HEAD, 0))
        .and_then(|h| Head::decode(h))
        .unwrap_or_default()
        .sealed
}

#[test]
fn a_restored_builder_goes_on_as_if_nothing_happened() {
    let token: Arc<str> = Arc::from("tok");
    let (mut mem, _) = build(70_001, 10);
    // Restore from what is stored, as a restart does.
    let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
    let head = view.head.clone();
    let stored_head = mem
        .0
        .get(&(HEAD, 0))
        .and_then(|h| Head::decode(h))
        .unwrap_or_default();
    let open = Builder::open_blocks(stored_head.sealed)
        .filter_map(|(l, j)| Some((l, decode_block(mem.0.get(&(l, j))?)?)))
        .collect();
    let parts: Vec<Point> = mem
        .0
        .range((0, stored_head.sealed)..(1, 0))
        .flat_map(|(_, r)| decode_points(r).unwrap_or_default())
        .collect();
    let mut b = Builder::restore(stored_head, open, &parts);
    assert_eq!(b.end, 70_001);
    assert_eq!(b.head.x, head.x);
    let mut batch = Batch::default();
    for i in 70_001..140_000 {
        b.push(&point(i), &mut |w| journal(&token, &mut batch, w));
    }
    mem.commit(&batch);
    let (whole, _) = build(140_000, 10);
    // The same keys, but for the open chunk's parts (committed at other moments here).
    let open = |k: &&(u8, u64)| k.0 != 0 || k.1 < 140_000 / 1024 * 1024;
    let (got, want): (Vec<_>, Vec<_>) = (
        mem.0.keys().filter(open).collect(),
        whole.0.keys().filter(open).collect(),
    );
    let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).collect();
    let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "extra {extra:?} missing {missing:?}"
    );
    for (k, v) in &whole.0 {
        if k.0 != 0 && k.0 != HEAD {
            assert_eq!(mem.0.get(k), Some(v), "block {k:?}");
        }
    }
}

#[test]
fn a_trim_drops_whole_chunks_and_reads_start_after_them() {
    let token: Arc<str> = Arc::from("tok");
    let (mut mem, mut b) = build(10_000, 100);
    let before = View::load(&mem).unwrap_or_else(|e| panic!("{e}")).bytes;
    assert_eq!(before, b.bytes());
    let mut dropped = 0;
    for _ in 0..4 {
        let first = b.head.first;
        let len = mem.0.get(&(0, first)).map_or(0, Vec::len) as u64;
        dropped += len;
        let mut batch = Batch::default();
        let next_t = point(first + 1024).t;
        assert!(b.trim(1024, len, next_t, &mut |w| journal(&token, &mut batch, w)));
        mem.commit(&batch);
    }
    let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(view.bytes, before - dropped);
    assert_eq!(view.head.first_t, point(4096).t);
    let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
    let all = raw(&view, 0, 10_000);
    assert_eq!(all.first().map(|(n, _)| *n), Some(4096));
    assert_eq!(all.len(), 10_000 - 4096);
    assert_eq!(view.locate(By::Time, 0.0, false).unwrap_or(0), 4096);
    let out = view
        .downsample(
            0,
            10_000,
            100,
            Bucketing::N {
                lo: 4096,
                hi: 10_000,
            },
            TOP,
        )
        .unwrap_or_default();
    assert!(out.iter().all(|m| m.n >= 4096));
}

#[test]
fn a_line_of_many_points_is_stored_as_its_points_one_by_one() {
    // Lines of 700 points cross chunk boundaries: parts split there, seals come in between.
    let token: Arc<str> = Arc::from("tok");
    let mut mem = Mem::default();
    let mut b = Builder::new();
    let mut batch = Batch::default();
    let points: Vec<Point> = (0..7_000).map(point).collect();
    for line in points.chunks(700) {
        b.push_all(line, &mut |w| journal(&token, &mut batch, w));
        mem.commit(&std::mem::take(&mut batch));
    }
    let (one_by_one, _) = build(7_000, 700);
    // The same tier blocks and head; the same points read back (each chunk here keeps its
    // two or three parts, one point at a time makes more than KEEP_PARTS: one record).
    let upper = |m: &Mem| {
        m.0.range((1, 0)..)
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(upper(&mem), upper(&one_by_one));
    let (a, b) = (View::load(&mem), View::load(&one_by_one));
    let (a, b) = (
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(raw(&a, 0, 7_000), raw(&b, 0, 7_000));
    assert_eq!(raw(&a, 0, 7_000).len(), 7_000);
}

/// The level-0 keys of `mem` from `a` to `b`.
fn level0(mem: &Mem, a: u64, b: u64) -> Vec<u64> {
    mem.0.range((0, a)..(0, b)).map(|(k, _)| k.1).collect()
}

#[test]
fn a_chunk_in_few_parts_keeps_them_and_one_in_many_is_written_whole() {
    let token: Arc<str> = Arc::from("tok");
    let points: Vec<Point> = (0..3_072).map(point).collect();
    for (line, parts) in [(128, 8usize), (64, 16), (60, 18), (32, 32)] {
        let (mut mem, mut b, mut batch) = (Mem::default(), Builder::new(), Batch::default());
        for l in points[..2_048].chunks(line) {
            b.push_all(l, &mut |w| journal(&token, &mut batch, w));
            mem.commit(&std::mem::take(&mut batch));
        }
        // Up to KEEP_PARTS parts, the seal writes the points no second time.
        let first = level0(&mem, 0, 1024);
        if parts <= 16 {
            assert_eq!(first.len(), parts, "lines of {line}");
        } else {
            assert_eq!(first, [0], "lines of {line}");
        }
        let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(raw(&view, 0, 2_048).len(), 2_048, "lines of {line}");
        // A restored builder cannot know how many parts its open chunk has: it writes it
        // whole.
        for l in points[2_048..2_048 + 3 * line].chunks(line) {
            b.push_all(l, &mut |w| journal(&token, &mut batch, w));
            mem.commit(&std::mem::take(&mut batch));
        }
        let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
        let mut b = Builder::load(&mem).unwrap_or_else(|e| panic!("{e}"));
        drop(view);
        b.push_all(&points[2_048 + 3 * line..], &mut |w| {
            journal(&token, &mut batch, w);
        });
        mem.commit(&batch);
        assert_eq!(level0(&mem, 2_048, 3_072), [2_048], "lines of {line}");
        let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
        let all = raw(&view, 0, 3_072);
        assert_eq!(all.len(), 3_072, "lines of {line}");
        assert!(all.iter().all(|(n, p)| *p == point(*n)));
    }
}

#[test]
fn lines_that_fit_the_open_chunk_store_what_push_all_stores() {
    // The store queues a line that stays in the open chunk with its part (`push_open`, one
    // journal lock) and any other through `push_all`: the records must not depend on which.
    let token: Arc<str> = Arc::from("tok");
    let sizes = [1usize, 3, 1, 700, 2, 1, 1021, 1, 1, 5, 1024, 1, 2048, 3];
    let points: Vec<Point> = (0..10_000).map(point).collect();
    let (mut fast, mut slow) = (Mem::default(), Mem::default());
    let (mut bf, mut bs) = (Builder::new(), Builder::new());
    let mut at = 0;
    for (i, size) in sizes.iter().cycle().take(25).enumerate() {
        let line = &points[at..at + size];
        at += size;
        let (mut batch_f, mut batch_s) = (Batch::default(), Batch::default());
        if bf.fits(line.len()) {
            let (n, count, bytes) = bf.push_open(line);
            assert_eq!(count as usize, line.len());
            journal(&token, &mut batch_f, Write::points(n, count, bytes));
        } else {
            bf.push_all(line, &mut |w| journal(&token, &mut batch_f, w));
        }
        bs.push_all(line, &mut |w| journal(&token, &mut batch_s, w));
        fast.commit(&batch_f);
        slow.commit(&batch_s);
        assert_eq!(fast.0, slow.0, "after line {i} ({size} points)");
    }
    assert_eq!((bf.end, &bf.head), (bs.end, &bs.head));
    assert!(bf.end > 3 * 1024, "the lines crossed chunks");
    assert!(!bf.fits(1024) && bf.fits(0));
}

#[test]
fn streams_whose_x_is_a_category_or_missing_read_back_past_a_seal() {
    // Their head once held x's last value as -inf, which JSON cannot carry: the head written at
    // the first seal did not read back (found by the viewer's check: 503 past 1 024 points).
    for x in [Val::None, Val::Str("k".into())] {
        let token: Arc<str> = Arc::from("tok");
        let mut mem = Mem::default();
        let mut b = Builder::new();
        let mut batch = Batch::default();
        for i in 0..3_000u64 {
            let p = Point {
                seq: i + 1,
                t: i as i64,
                x: x.clone(),
                y: Val::Num(i as f64),
            };
            b.push(&p, &mut |w| journal(&token, &mut batch, w));
        }
        mem.commit(&batch);
        let view = View::load(&mem).unwrap_or_else(|e| panic!("{x:?}: {e}"));
        assert_eq!(view.end, 3_000);
        assert!(!view.head.by_x());
        let out = view
            .downsample(0, 3_000, 100, Bucketing::N { lo: 0, hi: 3_000 }, TOP)
            .unwrap_or_default();
        assert_eq!(out.last().map(|m| m.y), Some(2_999.0));
    }
}

/// A lazy builder (the store's, on one node) writes only the part that ends each chunk; the
/// open chunk's points are stored when the store asks ([`Builder::unwritten`], before a
/// snapshot drops their lines or for a reader). Whatever lines and asks, what is stored then
/// reads back every point once, in order, and a builder restored from it goes on.
#[test]
fn a_lazy_builder_stores_every_point_once_when_asked_and_at_each_seal() {
    let token: Arc<str> = Arc::from("tok");
    for (line, ask_every) in [(1, 500), (7, 3), (100, 1), (333, 2), (1, 1_000_000)] {
        let mut mem = Mem::default();
        let mut b = Builder::new();
        b.set_lazy(true);
        let mut batch = Batch::default();
        let (mut i, mut lines) = (0u64, 0u64);
        while i < 5_000 {
            let n = line.min(5_000 - i);
            let points: Vec<Point> = (i..i + n).map(point).collect();
            if b.fits(points.len()) {
                b.push_open(&points);
            } else {
                b.push_all(&points, &mut |w| journal(&token, &mut batch, w));
            }
            i += n;
            lines += 1;
            if lines.is_multiple_of(ask_every) {
                if let Some((n, count, bytes)) = b.unwritten() {
                    journal(&token, &mut batch, Write::points(n, count, bytes));
                }
                b.mark_written();
            }
            mem.commit(&std::mem::take(&mut batch));
            if i == 2_600 {
                // A restart: what is stored, and the lines' points after it, replayed.
                let stored = View::load(&mem).unwrap_or_else(|e| panic!("{e}")).end;
                let mut again = Builder::load(&mem).unwrap_or_else(|e| panic!("{e}"));
                again.set_lazy(true);
                assert_eq!(again.end, stored);
                let rest: Vec<Point> = (stored..i).map(point).collect();
                again.push_all(&rest, &mut |w| journal(&token, &mut batch, w));
                mem.commit(&std::mem::take(&mut batch));
                b = again;
            }
        }
        let unwritten = b.unwritten().map_or(0, |(_, count, _)| u64::from(count));
        assert_eq!(unwritten, b.end - View::load(&mem).map_or(0, |v| v.end));
        if let Some((n, count, bytes)) = b.unwritten() {
            journal(&token, &mut batch, Write::points(n, count, bytes));
        }
        b.mark_written();
        mem.commit(&batch);
        let view = View::load(&mem).unwrap_or_else(|e| panic!("{e}"));
        let all = raw(&view, 0, 5_000);
        assert_eq!(all.len(), 5_000, "lines of {line}, asked every {ask_every}");
        assert!(all.iter().all(|(n, p)| *p == point(*n)));
        assert!(b.unwritten().is_none());
    }
}
