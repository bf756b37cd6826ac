//! The pre-aggregated tiers (docs/history.md "Tiers"): an entry of level `l` summarizes the
//! points `[i * 16^l, (i + 1) * 16^l)` by their count and their first, last, lowest-y and
//! highest-y points; a block `(l, j)` holds the entries `16j..16j + 16` of level `l`, which is
//! what entry `j` of level `l + 1` summarizes. Pure values and their records, no I/O.

use super::point::{Point, Reader};

/// How many entries of one level make one entry of the next.
pub const FANOUT: u64 = 16;
/// The coarsest level: an entry of level 4 summarizes 65 536 points.
pub const TOP: u8 = 4;

/// Points one entry of `level` summarizes.
pub fn span(level: u8) -> u64 {
    1 << (4 * u32::from(level))
}

/// A point as a summary keeps it: numbers only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark {
    /// Its position in the stream's history.
    pub n: u64,
    /// Its line's seq.
    pub seq: u64,
    /// Its receive time (ms since the Unix epoch).
    pub t: i64,
    /// Its x as a number (a date's milliseconds), NaN when it has none.
    pub x: f64,
    /// Its y, NaN when it is not a number.
    pub y: f64,
}

impl Mark {
    /// `p`, the point at `n`.
    pub fn of(n: u64, p: &Point) -> Mark {
        Mark::keyed(n, p, p.x.key())
    }

    /// `p`, the point at `n`, whose x's key (`p.x.key()`) is known: `x`.
    pub fn keyed(n: u64, p: &Point, x: f64) -> Mark {
        Mark {
            n,
            seq: p.seq,
            t: p.t,
            x,
            y: match p.y {
                super::point::Val::Num(y) => y,
                _ => f64::NAN,
            },
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.n.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.t.to_le_bytes());
        out.extend_from_slice(&self.x.to_bits().to_le_bytes());
        out.extend_from_slice(&self.y.to_bits().to_le_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Option<Mark> {
        Some(Mark {
            n: u64::from_le_bytes(r.bytes()?),
            seq: u64::from_le_bytes(r.bytes()?),
            t: r.i64()?,
            x: r.f64()?,
            y: r.f64()?,
        })
    }
}

/// What an entry (or any run of consecutive points) keeps: how many points, and four of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Points summarized.
    pub count: u64,
    /// The first.
    pub first: Mark,
    /// The last.
    pub last: Mark,
    /// The one with the lowest numeric y (the first point when none has one).
    pub min: Mark,
    /// The one with the highest numeric y (the first point when none has one).
    pub max: Mark,
}

impl Summary {
    /// One point.
    pub fn of(m: Mark) -> Summary {
        Summary {
            count: 1,
            first: m,
            last: m,
            min: m,
            max: m,
        }
    }

    /// Adds what `later` (the points right after this one's) summarizes. Ties keep the
    /// earlier point, so the result does not depend on how points were grouped.
    pub fn merge(&mut self, later: &Summary) {
        self.count += later.count;
        self.last = later.last;
        if later.min.y < self.min.y || self.min.y.is_nan() && !later.min.y.is_nan() {
            self.min = later.min;
        }
        if later.max.y > self.max.y || self.max.y.is_nan() && !later.max.y.is_nan() {
            self.max = later.max;
        }
    }

    /// Adds the point right after this one's ([`Summary::merge`] of one point, without
    /// building its summary: once per level for every point kept).
    pub fn push(&mut self, m: Mark) {
        self.count += 1;
        self.last = m;
        if m.y < self.min.y || self.min.y.is_nan() && !m.y.is_nan() {
            self.min = m;
        }
        if m.y > self.max.y || self.max.y.is_nan() && !m.y.is_nan() {
            self.max = m;
        }
    }

    /// The distinct points it keeps, in `n` order.
    pub fn marks(&self) -> impl Iterator<Item = Mark> {
        let mut v = [self.first, self.min, self.max, self.last];
        v.sort_by_key(|m| m.n);
        let mut prev = None;
        v.into_iter().filter(move |m| {
            let keep = prev != Some(m.n);
            prev = Some(m.n);
            keep
        })
    }
}

/// A block record, fixed-size fields for speed: `u8 entries`, then per entry `u8 slot` (its
/// place in the block), `u64 count` and its first, last, lowest and highest points (40 bytes
/// each: `n`, `seq`, `t`, x bits, y bits).
pub fn encode_block(entries: &[(u8, Summary)], out: &mut Vec<u8>) {
    out.push(entries.len() as u8);
    for (slot, s) in entries {
        out.push(*slot);
        out.extend_from_slice(&s.count.to_le_bytes());
        for m in [s.first, s.last, s.min, s.max] {
            m.put(out);
        }
    }
}

/// The entries of a block record, `(slot, summary)` with slots increasing and below
/// [`FANOUT`]; `None` unless the bytes are exactly what [`encode_block`] writes.
pub fn decode_block(bytes: &[u8]) -> Option<Vec<(u8, Summary)>> {
    let mut r = Reader(bytes);
    let [count] = r.bytes()?;
    let mut out: Vec<(u8, Summary)> = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let [slot] = r.bytes()?;
        if u64::from(slot) >= FANOUT || out.last().is_some_and(|(s, _)| *s >= slot) {
            return None;
        }
        let n = u64::from_le_bytes(r.bytes()?);
        let first = Mark::read(&mut r)?;
        let last = Mark::read(&mut r)?;
        let min = Mark::read(&mut r)?;
        let max = Mark::read(&mut r)?;
        out.push((
            slot,
            Summary {
                count: n,
                first,
                last,
                min,
                max,
            },
        ));
    }
    r.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u64, y: f64) -> Mark {
        Mark {
            n,
            seq: n + 1,
            t: 5,
            x: n as f64,
            y,
        }
    }

    #[test]
    fn merging_keeps_the_extremes_and_ignores_non_numbers() {
        let mut s = Summary::of(m(0, f64::NAN));
        s.merge(&Summary::of(m(1, 3.0)));
        s.merge(&Summary::of(m(2, -1.0)));
        s.merge(&Summary::of(m(3, 3.0)));
        assert_eq!((s.count, s.min.n, s.max.n, s.last.n), (4, 2, 1, 3));
        let ns: Vec<u64> = s.marks().map(|m| m.n).collect();
        assert_eq!(ns, [0, 1, 2, 3]);
    }

    #[test]
    fn blocks_round_trip_and_refuse_anything_else() {
        let e = vec![(0, Summary::of(m(0, 1.0))), (3, Summary::of(m(48, 2.0)))];
        let mut rec = Vec::new();
        encode_block(&e, &mut rec);
        assert_eq!(decode_block(&rec), Some(e));
        for cut in 0..rec.len() {
            assert_eq!(decode_block(&rec[..cut]), None);
        }
    }
}
