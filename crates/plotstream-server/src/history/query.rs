//! Reading a stream's history (docs/history.md "Reading"): a range by position, receive time
//! or x resolved to positions by walking the tiers down, the points of a range, and a range
//! downsampled from the coarsest tier that still gives every bucket several entries. Only
//! stored records are read (through [`Source`]), so any node reads what its owner stored.

use std::collections::BTreeMap;

use super::build::{Head, CHUNK, HEAD};
use super::downsample::{downsample, Bucketing};
use super::point::{decode_points, Point};
use super::tier::{decode_block, span, Mark, Summary, FANOUT, TOP};
use crate::error::StorageError;

/// Where a stream's history records are read from: `(index, record)` for the keys of `level`
/// in `from..to`, in index order, at most `limit` of them.
pub trait Source {
    /// The records.
    fn read(
        &self,
        level: u8,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError>;
}

fn damaged(what: &str) -> StorageError {
    StorageError(format!("history: {what} does not decode"))
}

/// A stream's history as stored now: its head and the points after the last seal.
#[derive(Debug)]
pub struct View<'s, S: Source + ?Sized> {
    src: &'s S,
    /// The head, with the parts' points taken into its x facts.
    pub head: Head,
    /// The head as stored (for [`super::Builder::restore`]).
    pub stored: Head,
    /// One past the last stored point.
    pub end: u64,
    /// The points after the last seal (`head.sealed..end`).
    parts: Vec<Point>,
    /// Bytes kept (L59): the sealed chunks' and the parts'.
    pub bytes: u64,
}

/// What a range is given by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Position in the history.
    N,
    /// Receive time (ms since the Unix epoch).
    Time,
    /// x (numbers, or a date's milliseconds): only for a stream whose x is monotone.
    X,
}

impl<'s, S: Source + ?Sized> View<'s, S> {
    /// The parts' points (`head.sealed..end`), for [`super::Builder::restore`].
    pub fn parts(&self) -> &[Point] {
        &self.parts
    }

    /// Reads the head and the parts.
    pub fn load(src: &'s S) -> Result<View<'s, S>, StorageError> {
        let head = match src.read(HEAD, 0, 1, 1)?.first() {
            Some((_, bytes)) => Head::decode(bytes).ok_or_else(|| damaged("the head"))?,
            None => Head::default(),
        };
        let mut parts = Vec::new();
        let mut bytes = head.bytes;
        for (_, rec) in src.read(0, head.sealed, u64::MAX, CHUNK as usize + 1)? {
            let pts = decode_points(&rec).ok_or_else(|| damaged("a part"))?;
            // The points' bytes, without the part's count (as the owner counts its open chunk).
            let mut count = Vec::new();
            super::point::put_varint(pts.len() as u64, &mut count);
            bytes += (rec.len() - count.len()) as u64;
            parts.extend(pts);
        }
        let stored = head.clone();
        let mut head = head;
        for p in &parts {
            head.observe(p);
        }
        if head.sealed == head.first {
            if let Some(p) = parts.first() {
                head.first_t = p.t;
            }
        }
        let end = head.sealed + parts.len() as u64;
        Ok(View {
            src,
            head,
            stored,
            end,
            parts,
            bytes,
        })
    }

    /// The points of `a..b` with their positions, in order, through `each` (a page of
    /// records at a time: memory does not grow with the range). `each` returns false to stop.
    pub fn points(
        &self,
        a: u64,
        b: u64,
        each: &mut dyn FnMut(u64, &Point) -> bool,
    ) -> Result<(), StorageError> {
        let a = a.max(self.head.first);
        let b = b.min(self.end);
        let mut from = a - a % CHUNK;
        while from < b {
            let page = self.src.read(0, from, b, 8)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            from = last + 1;
            for (key, rec) in &page {
                let pts = decode_points(rec).ok_or_else(|| damaged("a points record"))?;
                for (i, p) in pts.iter().enumerate() {
                    let n = key + i as u64;
                    if n >= a && n < b && !each(n, p) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// The entries `i0..i1` of `level` (those that exist), each summarizing its stored
    /// points: the blocks as sealed, with the parts' points merged in.
    pub fn entries(
        &self,
        level: u8,
        i0: u64,
        i1: u64,
    ) -> Result<Vec<(u64, Summary)>, StorageError> {
        let mut out: BTreeMap<u64, Summary> = BTreeMap::new();
        if i0 >= i1 {
            return Ok(Vec::new());
        }
        let (j0, j1) = (i0 / FANOUT, (i1 - 1) / FANOUT + 1);
        let mut from = j0;
        while from < j1 {
            let page = self.src.read(level, from, j1, 256)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            from = last + 1;
            for (j, rec) in &page {
                for (slot, s) in decode_block(rec).ok_or_else(|| damaged("a tier block"))? {
                    let i = j * FANOUT + u64::from(slot);
                    if (i0..i1).contains(&i) {
                        out.insert(i, s);
                    }
                }
            }
        }
        for (k, p) in self.parts.iter().enumerate() {
            let n = self.head.sealed + k as u64;
            let i = n / span(level);
            if (i0..i1).contains(&i) {
                let m = Summary::of(Mark::of(n, p));
                out.entry(i).and_modify(|s| s.merge(&m)).or_insert(m);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The first position at or after `first` whose key (by `by`) is at least `v` (`strict`:
    /// above `v`), or `end`. Keys must not decrease (time never does; x when `by_x`).
    pub fn locate(&self, by: By, v: f64, strict: bool) -> Result<u64, StorageError> {
        let key = |m: &Mark| match by {
            By::N => m.n as f64,
            By::Time => m.t as f64,
            By::X => m.x,
        };
        let past = |k: f64| if strict { k > v } else { k >= v };
        let first = self.head.first;
        let (mut i0, mut i1) = (first / span(TOP), self.end.div_ceil(span(TOP)));
        for level in (1..=TOP).rev() {
            let found = self
                .entries(level, i0, i1)?
                .into_iter()
                .find(|(_, s)| past(key(&s.last)));
            match found {
                Some((i, _)) => (i0, i1) = (i * FANOUT, (i + 1) * FANOUT),
                None => return Ok(self.end.min(i1 * span(level)).max(first)),
            }
        }
        let mut at = i1.min(self.end);
        self.points(i0, i1, &mut |n, p| {
            let k = match by {
                By::N => n as f64,
                By::Time => p.t as f64,
                By::X => p.x.key(),
            };
            if past(k) {
                at = n;
                return false;
            }
            true
        })?;
        Ok(at.max(first))
    }

    /// Summaries that cover exactly `a..b`: entries of `level` where whole ones fit, finer
    /// ones at the edges, single points at the finest.
    pub fn cover(
        &self,
        a: u64,
        b: u64,
        level: u8,
        out: &mut Vec<Summary>,
    ) -> Result<(), StorageError> {
        if a >= b {
            return Ok(());
        }
        if level == 0 {
            return self.points(a, b, &mut |n, p| {
                out.push(Summary::of(Mark::of(n, p)));
                true
            });
        }
        let w = span(level);
        let (i0, i1) = (a.div_ceil(w), b / w);
        if i0 >= i1 {
            return self.cover(a, b, level - 1, out);
        }
        self.cover(a, i0 * w, level - 1, out)?;
        out.extend(self.entries(level, i0, i1)?.into_iter().map(|(_, s)| s));
        self.cover(i1 * w, b, level - 1, out)
    }

    /// At most `max` points of `a..b` that keep every bucket's first, last, lowest and
    /// highest point (docs/history.md "Downsampling"), from the coarsest level up to `top`
    /// that gives each bucket at least 8 entries (`top` 0: from every point).
    pub fn downsample(
        &self,
        a: u64,
        b: u64,
        max: usize,
        bucketing: Bucketing,
        top: u8,
    ) -> Result<Vec<Mark>, StorageError> {
        let a = a.max(self.head.first);
        let b = b.min(self.end);
        let buckets = (max / 4).max(1) as u64;
        let mut level = 0;
        while level < top.min(TOP) && b.saturating_sub(a) / span(level + 1) >= 8 * buckets {
            level += 1;
        }
        let mut items = Vec::new();
        self.cover(a, b, level, &mut items)?;
        Ok(downsample(&items, max, bucketing))
    }
}
