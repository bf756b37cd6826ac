//! The segmentation modes of docs/reliability.md §7: how a case's bytes are cut into writes, and
//! where mode O cuts them. Both runners cut the same way, so "split" means the same positions
//! over a socket and through the in-memory state machine.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::dsl::Item;
use crate::setup::Segmentation;

/// One step of a connection's schedule: a write, a pause or a connection event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One `write` call.
    Write(Vec<u8>),
    /// Sleep.
    Pause(Duration),
    /// Half-close.
    Eof,
    /// Close with SO_LINGER 0.
    Rst,
    /// Timing origin.
    Mark,
    /// Wait for `100 Continue`.
    AwaitContinue,
}

/// Cuts `items` into writes for one mode. `split_at` is k for mode O (a cut after payload byte
/// k); `pause_scale` divides every pause.
pub fn schedule(
    items: &[Item],
    mode: Segmentation,
    split_at: Option<usize>,
    pause_scale: f64,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = 0usize;
    let flush = |pending: &mut Vec<u8>, steps: &mut Vec<Step>| {
        if !pending.is_empty() {
            steps.push(Step::Write(std::mem::take(pending)));
        }
    };
    for item in items {
        match item {
            Item::Bytes(bytes) => {
                if mode == Segmentation::Bytewise {
                    for &b in bytes {
                        steps.push(Step::Write(vec![b]));
                    }
                    offset += bytes.len();
                    continue;
                }
                let mut rest = bytes.as_slice();
                if let Some(k) = split_at {
                    if k > offset && k < offset + rest.len() {
                        let (a, b) = rest.split_at(k - offset);
                        pending.extend_from_slice(a);
                        flush(&mut pending, &mut steps);
                        rest = b;
                        offset = k;
                    } else if k == offset {
                        flush(&mut pending, &mut steps);
                    }
                }
                pending.extend_from_slice(rest);
                offset += rest.len();
            }
            Item::Flush => {
                if mode == Segmentation::Timed {
                    flush(&mut pending, &mut steps);
                }
            }
            Item::Pause(ms) => {
                flush(&mut pending, &mut steps);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // ms
                let scaled = (*ms as f64 / pause_scale).round() as u64;
                steps.push(Step::Pause(Duration::from_millis(scaled)));
            }
            Item::Eof => {
                flush(&mut pending, &mut steps);
                steps.push(Step::Eof);
            }
            Item::Rst => {
                flush(&mut pending, &mut steps);
                steps.push(Step::Rst);
            }
            Item::Mark => {
                flush(&mut pending, &mut steps);
                steps.push(Step::Mark);
            }
            Item::AwaitContinue => {
                flush(&mut pending, &mut steps);
                steps.push(Step::AwaitContinue);
            }
        }
    }
    flush(&mut pending, &mut steps);
    steps
}

/// The cut positions of mode O for `bytes` (a variant's whole payload): every k for inputs up
/// to 4 KiB; else the positions around CR, LF, `;`, `"` and UTF-8 lead bytes near both ends
/// plus 64 seeded random ones; at most `limit`. `seed` is mixed with the case and variant
/// names (see [`seed_for`]), so a variant is cut at the same positions in every run.
pub fn split_points(bytes: &[u8], seed: u64, limit: Option<usize>) -> Vec<usize> {
    let len = bytes.len();
    if len < 2 {
        return Vec::new();
    }
    let mut state = seed;
    let mut points: Vec<usize> = if len <= SMALL_INPUT {
        (1..len).collect()
    } else {
        let mut p = BTreeSet::new();
        for (i, b) in bytes.iter().enumerate() {
            let near_end = i < EDGE || i + EDGE > len;
            let interesting = matches!(b, b'\r' | b'\n' | b';' | b'"') || *b >= 0xc0 || *b == 0xef;
            if near_end && interesting {
                for k in i.saturating_sub(1)..=(i + 2) {
                    p.insert(k);
                }
            }
        }
        let mut p: Vec<usize> = p.into_iter().filter(|&k| k > 0 && k < len).collect();
        if p.len() > MAX_INTERESTING {
            sample(&mut p, MAX_INTERESTING, &mut state);
        }
        for _ in 0..RANDOM_SPLITS {
            p.push(1 + pick(&mut state, len - 1));
        }
        p.sort_unstable();
        p.dedup();
        p
    };
    if let Some(limit) = limit {
        if points.len() > limit {
            sample(&mut points, limit, &mut state);
        }
    }
    points
}

/// The seed of a variant's split positions: the run's seed mixed with the case id and the
/// variant name (FNV-1a, stable across runs and platforms, unlike the std hasher).
pub fn seed_for(seed: u64, case_id: &str, variant: &str) -> u64 {
    seed ^ fnv1a(case_id) ^ fnv1a(variant)
}

/// splitmix64: a small, good PRNG for split positions and tokens (not for secrets).
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A partial Fisher–Yates shuffle keeping `n` of `points`, then back into order.
fn sample(points: &mut Vec<usize>, n: usize, state: &mut u64) {
    for i in 0..n.min(points.len()) {
        let j = i + pick(state, points.len() - i);
        points.swap(i, j);
    }
    points.truncate(n);
    points.sort_unstable();
}

/// A number below `n` (> 0).
fn pick(state: &mut u64, n: usize) -> usize {
    // Invariant: the remainder is below `n`, a usize, so it fits one.
    usize::try_from(splitmix(state) % n as u64).unwrap_or(0)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Inputs up to this size are split at every offset (§7).
pub const SMALL_INPUT: usize = 4096;
/// Interesting positions are taken within this many bytes of either end.
const EDGE: usize = 256;
/// At most this many interesting positions per large input.
const MAX_INTERESTING: usize = 96;
/// Seeded random positions per large input (§7).
const RANDOM_SPLITS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Item> {
        vec![
            Item::Bytes(b"abc".to_vec()),
            Item::Flush,
            Item::Bytes(b"de".to_vec()),
            Item::Pause(100),
            Item::Bytes(b"f".to_vec()),
            Item::Eof,
        ]
    }

    fn writes(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Write(b) => String::from_utf8_lossy(b).into_owned(),
                Step::Pause(d) => format!("<{}>", d.as_millis()),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn modes_cut_where_they_should() {
        let i = items();
        assert_eq!(
            writes(&schedule(&i, Segmentation::Whole, None, 1.0)),
            ["abcde", "<100>", "f", "Eof"]
        );
        assert_eq!(
            writes(&schedule(&i, Segmentation::Timed, None, 2.0)),
            ["abc", "de", "<50>", "f", "Eof"]
        );
        assert_eq!(
            writes(&schedule(&i, Segmentation::Split, Some(2), 1.0)),
            ["ab", "cde", "<100>", "f", "Eof"]
        );
        assert_eq!(
            writes(&schedule(&i, Segmentation::Split, Some(3), 1.0)),
            ["abc", "de", "<100>", "f", "Eof"]
        );
        assert_eq!(
            writes(&schedule(&i, Segmentation::Split, Some(4), 1.0)),
            ["abcd", "e", "<100>", "f", "Eof"]
        );
        assert_eq!(
            writes(&schedule(&i, Segmentation::Bytewise, None, 1.0)),
            ["a", "b", "c", "d", "e", "<100>", "f", "Eof"]
        );
    }

    #[test]
    fn small_inputs_split_everywhere_large_ones_where_it_matters() {
        assert_eq!(split_points(b"abcd", 1, None), [1, 2, 3]);
        assert_eq!(split_points(b"a", 1, None), Vec::<usize>::new());
        let mut big = vec![b'a'; 10_000];
        big[5] = b'\r';
        big[9_990] = b'\n';
        let points = split_points(&big, 7, None);
        assert!(
            points.len() <= MAX_INTERESTING + RANDOM_SPLITS,
            "{points:?}"
        );
        for k in [4, 5, 6, 7, 9_989, 9_990, 9_991, 9_992] {
            assert!(points.contains(&k), "{k} in {points:?}");
        }
        assert_eq!(points, split_points(&big, 7, None), "seeded");
        assert_eq!(split_points(&big, 7, Some(10)).len(), 10);
    }
}
