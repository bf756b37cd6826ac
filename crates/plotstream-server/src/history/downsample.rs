//! Downsampling (docs/history.md "Downsampling"): consecutive summaries (single points, or
//! tier entries) are put in equal-width buckets by x or by position, and each bucket keeps its
//! first, last, lowest-y and highest-y point (M4), in position order. Pure; property-tested.

use super::tier::{Mark, Summary};

/// What buckets are equal-width in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bucketing {
    /// Positions `lo..hi`.
    N {
        /// The first position.
        lo: u64,
        /// One past the last.
        hi: u64,
    },
    /// x from `lo` to `hi` (x does not decrease).
    X {
        /// The lowest x.
        lo: f64,
        /// The highest x.
        hi: f64,
    },
}

impl Bucketing {
    fn of(&self, m: &Mark, buckets: usize) -> usize {
        let (v, lo, hi) = match *self {
            Bucketing::N { lo, hi } => (m.n as f64, lo as f64, hi as f64),
            Bucketing::X { lo, hi } => (m.x, lo, hi),
        };
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) || !v.is_finite() {
            return 0;
        }
        let b = ((v - lo) / (hi - lo) * buckets as f64).floor();
        if b <= 0.0 {
            0
        } else {
            (b as usize).min(buckets - 1)
        }
    }
}

/// At most `max` of the points `items` summarize, in position order: `max / 4` buckets (at
/// least one), each keeping its first, last, lowest and highest point; a summary belongs to
/// the bucket of its first point. Below four points, the bucket's highest, lowest, first and
/// last are kept in that order of preference.
pub fn downsample(items: &[Summary], max: usize, bucketing: Bucketing) -> Vec<Mark> {
    let buckets = (max / 4).max(1);
    let mut out = Vec::new();
    let mut current: Option<(usize, Summary)> = None;
    let flush = |s: &Summary, out: &mut Vec<Mark>| {
        if max >= 4 {
            out.extend(s.marks());
        } else {
            let mut pick: Vec<Mark> = Vec::new();
            for m in [s.max, s.min, s.first, s.last] {
                if pick.len() < max && !pick.iter().any(|p| p.n == m.n) {
                    pick.push(m);
                }
            }
            pick.sort_by_key(|m| m.n);
            out.extend(pick);
        }
    };
    for s in items {
        let b = bucketing.of(&s.first, buckets);
        match &mut current {
            Some((cb, acc)) if *cb == b => acc.merge(s),
            _ => {
                if let Some((_, acc)) = current.take() {
                    flush(&acc, &mut out);
                }
                current = Some((b, *s));
            }
        }
    }
    if let Some((_, acc)) = current {
        flush(&acc, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn marks(ys: &[Option<f64>], xs: &[f64]) -> Vec<Summary> {
        ys.iter()
            .zip(xs)
            .enumerate()
            .map(|(n, (y, x))| {
                Summary::of(Mark {
                    n: n as u64,
                    seq: n as u64 + 1,
                    t: 0,
                    x: *x,
                    y: y.unwrap_or(f64::NAN),
                })
            })
            .collect()
    }

    fn xs_of(steps: &[u8]) -> Vec<f64> {
        let mut x = 0.0;
        steps
            .iter()
            .map(|s| {
                x += f64::from(*s);
                x
            })
            .collect()
    }

    proptest! {
        /// N is respected; output is in position order and x never decreases; at most N
        /// points of a range come back whole.
        #[test]
        fn bounded_ordered_and_exact_when_small(
            ys in prop::collection::vec(prop::option::weighted(0.9, -1e6f64..1e6), 0..400),
            steps in prop::collection::vec(0u8..5, 400),
            max in 1usize..300,
            by_x in any::<bool>(),
        ) {
            let xs = xs_of(&steps[..ys.len()]);
            let items = marks(&ys, &xs);
            let bucketing = if by_x {
                Bucketing::X { lo: xs.first().copied().unwrap_or(0.0), hi: xs.last().copied().unwrap_or(0.0) }
            } else {
                Bucketing::N { lo: 0, hi: ys.len() as u64 }
            };
            let out = downsample(&items, max, bucketing);
            prop_assert!(out.len() <= max);
            prop_assert!(out.windows(2).all(|w| w[0].n < w[1].n));
            prop_assert!(out.windows(2).all(|w| w[0].x <= w[1].x));
            if ys.len() <= max / 4 && !by_x {
                prop_assert_eq!(out.len(), ys.len());
            }
        }

        /// Every bucket's first, last, lowest and highest point survive.
        #[test]
        fn every_buckets_extremes_survive(
            ys in prop::collection::vec(prop::option::weighted(0.9, -1e6f64..1e6), 1..400),
            steps in prop::collection::vec(0u8..5, 400),
            max in 4usize..300,
            by_x in any::<bool>(),
        ) {
            let xs = xs_of(&steps[..ys.len()]);
            let items = marks(&ys, &xs);
            let bucketing = if by_x {
                Bucketing::X { lo: xs[0], hi: xs[xs.len() - 1] }
            } else {
                Bucketing::N { lo: 0, hi: ys.len() as u64 }
            };
            let buckets = max / 4;
            let out = downsample(&items, max, bucketing);
            let kept: std::collections::HashSet<u64> = out.iter().map(|m| m.n).collect();
            for b in 0..buckets {
                let inside: Vec<&Summary> = items.iter().filter(|s| bucketing.of(&s.first, buckets) == b).collect();
                let (Some(first), Some(last)) = (inside.first(), inside.last()) else { continue };
                prop_assert!(kept.contains(&first.first.n));
                prop_assert!(kept.contains(&last.first.n));
                let numeric: Vec<&&Summary> = inside.iter().filter(|s| !s.first.y.is_nan()).collect();
                if let Some(lo) = numeric.iter().map(|s| s.first.y).reduce(f64::min) {
                    prop_assert!(out.iter().any(|m| m.y == lo && bucketing.of(m, buckets) == b));
                }
                if let Some(hi) = numeric.iter().map(|s| s.first.y).reduce(f64::max) {
                    prop_assert!(out.iter().any(|m| m.y == hi && bucketing.of(m, buckets) == b));
                }
            }
        }
    }
}
