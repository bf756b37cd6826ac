//! The pre-aggregated tiers (docs/history.md "Tiers"): an entry of level `l` summarizes the
//! points `[i * 16^l, (i + 1) * 16^l)` by their count and their first, last, lowest-y and
//! highest-y points; a block `(l, j)` holds the entries `16j..16j + 16` of level `l`, which is
//! what entry `j` of level `l + 1` summarizes. Pure values and their records, no I/O.

use super::point::{put_varint, AsPoint, PointRef, Reader, ValRef};

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
    pub fn of(n: u64, p: &impl AsPoint) -> Mark {
        let p = p.as_point();
        Mark::keyed(n, p, p.x.key())
    }

    /// `p`, the point at `n`, whose x's key (`p.x.key()`) is known: `x`.
    pub fn keyed(n: u64, p: PointRef<'_>, x: f64) -> Mark {
        Mark {
            n,
            seq: p.seq,
            t: p.t,
            x,
            y: match p.y {
                ValRef::Num(y) => y,
                _ => f64::NAN,
            },
        }
    }

    /// The fixed-size encoding of blocks before [`COMPACT`] (40 bytes: `n`, `seq`, `t`, x
    /// bits, y bits), for the test that they are read still.
    #[cfg(test)]
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

/// The first byte of a block record is `COMPACT | entries`; before it, blocks were written
/// with fixed-size fields, their first byte the count alone (at most [`FANOUT`]), and are read
/// still.
const COMPACT: u8 = 0x80;

/// A block record: `COMPACT | entries`, then per entry `u8 slot` (its place in the block),
/// `varint count`, a byte saying which of its marks are the same point (bits 0–1: the lowest
/// is its own (0), the first (1) or the last (2); bits 2–3: the same for the highest; bit 4:
/// the last is the first), and the marks that are not: first, last, lowest, highest. A mark is
/// its `n`, `seq` and `t` as zigzag varints of the change from the mark before it in the block
/// (from zeros), then its x and y bits (8 bytes each). About 90 bytes an entry, half the
/// fixed-size encoding: tier blocks are a fifth of what history writes (docs/history.md "What
/// it costs").
pub fn encode_block(entries: &[(u8, Summary)], out: &mut Vec<u8>) {
    out.push(COMPACT | entries.len() as u8);
    let mut prev = Delta::default();
    for (slot, s) in entries {
        out.push(*slot);
        put_varint(s.count, out);
        let same = |m: &Mark| {
            if m.n == s.first.n {
                1
            } else if m.n == s.last.n {
                2
            } else {
                0
            }
        };
        let (lo, hi, one) = (same(&s.min), same(&s.max), s.last.n == s.first.n);
        out.push(lo | hi << 2 | u8::from(one) << 4);
        prev.put(&s.first, out);
        if !one {
            prev.put(&s.last, out);
        }
        if lo == 0 {
            prev.put(&s.min, out);
        }
        if hi == 0 {
            prev.put(&s.max, out);
        }
    }
}

/// The entries of a block record, `(slot, summary)` with slots increasing and below
/// [`FANOUT`]; `None` unless the bytes are a block [`encode_block`] writes (or the fixed-size
/// encoding before it) and nothing else.
pub fn decode_block(bytes: &[u8]) -> Option<Vec<(u8, Summary)>> {
    let mut r = Reader(bytes);
    let [head] = r.bytes()?;
    let compact = head & COMPACT != 0;
    let count = head & !COMPACT;
    if u64::from(count) > FANOUT {
        return None;
    }
    let mut out: Vec<(u8, Summary)> = Vec::with_capacity(usize::from(count));
    let mut prev = Delta::default();
    for _ in 0..count {
        let [slot] = r.bytes()?;
        if u64::from(slot) >= FANOUT || out.last().is_some_and(|(s, _)| *s >= slot) {
            return None;
        }
        let summary = if compact {
            let count = r.varint()?;
            let [same] = r.bytes()?;
            let (lo, hi, one) = (same & 3, (same >> 2) & 3, same & 16 != 0);
            if same > 31 || lo == 3 || hi == 3 {
                return None;
            }
            let first = prev.read(&mut r)?;
            let last = if one { first } else { prev.read(&mut r)? };
            let mut pick = |which| match which {
                1 => Some(first),
                2 => Some(last),
                _ => prev.read(&mut r),
            };
            let min = pick(lo)?;
            let max = pick(hi)?;
            Summary {
                count,
                first,
                last,
                min,
                max,
            }
        } else {
            Summary {
                count: u64::from_le_bytes(r.bytes()?),
                first: Mark::read(&mut r)?,
                last: Mark::read(&mut r)?,
                min: Mark::read(&mut r)?,
                max: Mark::read(&mut r)?,
            }
        };
        out.push((slot, summary));
    }
    r.is_empty().then_some(out)
}

/// The mark before, which a compact block's marks are written as changes from.
#[derive(Debug, Default)]
struct Delta {
    n: u64,
    seq: u64,
    t: i64,
}

impl Delta {
    fn put(&mut self, m: &Mark, out: &mut Vec<u8>) {
        put_varint(zigzag(m.n.wrapping_sub(self.n) as i64), out);
        put_varint(zigzag(m.seq.wrapping_sub(self.seq) as i64), out);
        put_varint(zigzag(m.t.wrapping_sub(self.t)), out);
        out.extend_from_slice(&m.x.to_bits().to_le_bytes());
        out.extend_from_slice(&m.y.to_bits().to_le_bytes());
        (self.n, self.seq, self.t) = (m.n, m.seq, m.t);
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Option<Mark> {
        let m = Mark {
            n: self.n.wrapping_add(unzigzag(r.varint()?) as u64),
            seq: self.seq.wrapping_add(unzigzag(r.varint()?) as u64),
            t: self.t.wrapping_add(unzigzag(r.varint()?)),
            x: r.f64()?,
            y: r.f64()?,
        };
        (self.n, self.seq, self.t) = (m.n, m.seq, m.t);
        Some(m)
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
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

    /// Entries whose lowest and highest are their own points, the first or the last, of one
    /// point and of several, with times and seqs that go back between marks.
    fn entries() -> Vec<(u8, Summary)> {
        let mut wide = Summary::of(m(16, 5.0));
        for (n, y) in [(17, -3.0), (18, 9.0), (31, 1.0)] {
            wide.push(Mark { t: 3, ..m(n, y) });
        }
        let mut ramp = Summary::of(m(32, 1.0));
        ramp.push(m(47, 2.0));
        let mut flat = Summary::of(m(u64::MAX - 2, f64::NAN));
        flat.push(Mark {
            seq: 0,
            t: i64::MIN,
            ..m(u64::MAX - 1, f64::NAN)
        });
        vec![
            (0, Summary::of(m(0, 1.0))),
            (1, wide),
            (2, ramp),
            (3, Summary::of(m(48, 2.0))),
            (15, flat),
        ]
    }

    #[test]
    fn blocks_round_trip_and_refuse_anything_else() {
        let e = entries();
        let mut rec = Vec::new();
        encode_block(&e, &mut rec);
        // NaN is not equal to itself: compared by their records.
        let back = decode_block(&rec).unwrap_or_default();
        let mut again = Vec::new();
        encode_block(&back, &mut again);
        assert_eq!(again, rec);
        assert_eq!(back[..4], e[..4]);
        assert!(rec.len() < 5 * 169 / 2, "{} bytes", rec.len());
        for cut in 0..rec.len() {
            assert_eq!(decode_block(&rec[..cut]), None);
        }
        let mut longer = rec.clone();
        longer.push(0);
        assert_eq!(decode_block(&longer), None);
        for bad in [
            [0x80 | 17].as_slice(),
            &[0x81, 16],
            &[0x82, 3, 1, 0, 0, 1, 1],
        ] {
            assert_eq!(decode_block(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn blocks_written_before_the_compact_encoding_are_read_still() {
        let e = entries();
        let mut old = vec![e.len() as u8];
        for (slot, s) in &e {
            old.push(*slot);
            old.extend_from_slice(&s.count.to_le_bytes());
            for m in [s.first, s.last, s.min, s.max] {
                m.put(&mut old);
            }
        }
        let back = decode_block(&old).unwrap_or_default();
        assert_eq!(back[..4], e[..4]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_block(&back, &mut a);
        encode_block(&e, &mut b);
        assert_eq!(a, b);
    }
}
