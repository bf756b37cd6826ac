//! Criterion benches of plotstream hot paths (`benches/*.rs`), each beside its baseline.
//!
//! Every bench is one criterion group named after the bench, with the ids `ours` and
//! `baseline` (and extras such as `floor` or `framing`); `cargo xtask bench` pairs them by
//! group. This library holds the deterministic inputs they share.

#![deny(missing_docs)]

/// Points per value set: the benches cycle through this many precomputed points.
pub const N_POINTS: usize = 1024;

/// The millisecond timestamp of the first point (2023-11-14).
pub const T0_MS: i64 = 1_700_000_000_000;

/// `n` realistic points: `x` a millisecond clock advancing 1–64 ms per point, `y` a random
/// full-precision double in [-1000, 1000) (16–17 significant digits, the slow case for
/// shortest formatting and for parsing).
pub fn points(n: usize) -> Vec<(i64, f64)> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut x = T0_MS;
    (0..n)
        .map(|_| {
            x += 1 + (rng.next_u64() % 64) as i64;
            (x, rng.unit() * 2000.0 - 1000.0)
        })
        .collect()
}

/// `n` points with `y` a random full-precision double in [0, 1), like
/// `{"x":1700000000123,"y":0.123456789012345}`.
pub fn unit_points(n: usize) -> Vec<(i64, f64)> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    (0..n).map(|i| (T0_MS + i as i64, rng.unit())).collect()
}

/// A xorshift64 generator: deterministic inputs without a dependency.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A uniform double in [0, 1) with all 53 bits random.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Appends `n` in lowercase hex and CRLF, the way hyper's `ChunkSize` does: digits on the stack,
/// one append. The baselines' chunk framing.
pub fn write_chunk_size(n: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    let mut i = 16;
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = HEX[v & 0xf];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    out.extend_from_slice(&buf[i..]);
}
