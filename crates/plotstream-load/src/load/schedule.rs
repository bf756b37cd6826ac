//! The open-loop schedule: when each chunk of each stream is due, and what its points are.
//!
//! Every chunk has an intended send time fixed before the run starts (wrk2's rule): stream `s`
//! sends chunk `j` at `phase(s) + j · interval`, where `interval` is the chunk period of one
//! stream and the phases spread the streams evenly over one period. Latencies are measured
//! from these times, so a server that stalls the generator shows up as latency instead of
//! silently lowering the offered load (coordinated omission).
//!
//! Point `i` of a stream is `{x: i, y: value(s, i)}`: the verifier recognises every point by
//! its `x`, checks its `y`, and knows its intended time without any shared state.

use std::time::Duration;

/// The offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Points per second over all streams; `0` holds idle connections (heartbeats only).
    PerSecond(f64),
    /// As fast as each connection goes (closed loop: no intended times, no e2e latency).
    Max,
}

/// Parses `20000`, `20k`, `1.5M` or `max`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1e3),
        Some(b'M') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid rate {s:?}: expected points/s (e.g. 20000, 20k, 1M) or max")
    })?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid rate {s:?}: must be a non-negative number"));
    }
    Ok(Rate::PerSecond(n * mult))
}

/// When the chunks of every stream are due.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Streams.
    pub n_streams: usize,
    /// Points per chunk (`--points-per-chunk`).
    pub points_per_chunk: u64,
    /// The measured period.
    pub duration: Duration,
    /// One stream's chunk period in nanoseconds; `None` for [`Rate::Max`] and for idle runs.
    interval_ns: Option<f64>,
    rate: Rate,
}

impl Schedule {
    /// The schedule for `rate` points/s over `n_streams`, `points_per_chunk` points per chunk.
    pub fn new(rate: Rate, n_streams: usize, points_per_chunk: u64, duration: Duration) -> Self {
        let interval_ns = match rate {
            Rate::PerSecond(r) if r > 0.0 => {
                let per_stream = r / n_streams as f64;
                Some(points_per_chunk as f64 * 1e9 / per_stream)
            }
            _ => None,
        };
        Schedule {
            n_streams,
            points_per_chunk,
            duration,
            interval_ns,
            rate,
        }
    }

    /// True when chunks have intended times (a finite, non-zero rate).
    pub fn is_open_loop(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// True for `--rate 0`: connections only.
    pub fn is_idle(&self) -> bool {
        self.rate == Rate::PerSecond(0.0)
    }

    /// The offered rate in points/s, `None` for [`Rate::Max`].
    pub fn offered_rate(&self) -> Option<f64> {
        match self.rate {
            Rate::PerSecond(r) => Some(r),
            Rate::Max => None,
        }
    }

    /// The intended send time of chunk `chunk_idx` of stream `stream_idx`, from the start.
    pub fn intended(&self, stream_idx: usize, chunk_idx: u64) -> Duration {
        match self.interval_ns {
            Some(interval) => {
                let phase = interval * stream_idx as f64 / self.n_streams as f64;
                Duration::from_nanos((phase + interval * chunk_idx as f64) as u64)
            }
            None => Duration::ZERO,
        }
    }

    /// Chunks of stream `stream_idx` due in the run: those intended before `duration`
    /// (unbounded for [`Rate::Max`], zero when idle).
    pub fn n_chunks(&self, stream_idx: usize) -> u64 {
        match self.interval_ns {
            Some(interval) => {
                let phase = interval * stream_idx as f64 / self.n_streams as f64;
                let span = self.duration.as_nanos() as f64 - phase;
                if span <= 0.0 {
                    0
                } else {
                    (span / interval).ceil() as u64
                }
            }
            None if self.is_idle() => 0,
            None => u64::MAX,
        }
    }

    /// Chunks of stream `stream_idx` due at `elapsed` since the start (at most `n_chunks`).
    pub fn due(&self, stream_idx: usize, elapsed: Duration) -> u64 {
        match self.interval_ns {
            Some(interval) => {
                let phase = interval * stream_idx as f64 / self.n_streams as f64;
                let t = elapsed.as_nanos() as f64 - phase;
                if t < 0.0 {
                    0
                } else {
                    ((t / interval).floor() as u64 + 1).min(self.n_chunks(stream_idx))
                }
            }
            None => self.n_chunks(stream_idx),
        }
    }

    /// Points scheduled over the whole run (`None` for [`Rate::Max`]).
    pub fn n_points_scheduled(&self) -> Option<u64> {
        self.interval_ns.map(|_| {
            (0..self.n_streams)
                .map(|s| self.n_chunks(s) * self.points_per_chunk)
                .sum()
        })
    }
}

/// The `y` of point `point_idx` of stream `stream_idx`: a 32-bit hash scaled by 2^-16, so it
/// has up to 16 fractional bits (realistic digits) and every flavour writes it exactly.
pub fn value(stream_idx: usize, point_idx: u64) -> f64 {
    let mut h = (stream_idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ point_idx;
    h = (h ^ (h >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    f64::from((h & 0xFFFF_FFFF) as u32) / 65536.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("20000"), Ok(Rate::PerSecond(20000.0)));
        assert_eq!(parse_rate("20k"), Ok(Rate::PerSecond(20000.0)));
        assert_eq!(parse_rate("1.5M"), Ok(Rate::PerSecond(1.5e6)));
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn chunks_are_spread_and_counted() {
        // 4 streams × 10 points/s, 1 point per chunk, 1 s: period 100 ms, phases 0/25/50/75 ms.
        let s = Schedule::new(Rate::PerSecond(40.0), 4, 1, Duration::from_secs(1));
        assert_eq!(s.intended(0, 0), Duration::ZERO);
        assert_eq!(s.intended(1, 0), Duration::from_millis(25));
        assert_eq!(s.intended(1, 2), Duration::from_millis(225));
        assert_eq!(s.n_chunks(0), 10);
        assert_eq!(s.n_chunks(3), 10);
        assert_eq!(s.n_points_scheduled(), Some(40));
        assert_eq!(s.due(1, Duration::from_millis(24)), 0);
        assert_eq!(s.due(1, Duration::from_millis(25)), 1);
        assert_eq!(s.due(1, Duration::from_millis(226)), 3);
        assert_eq!(s.due(1, Duration::from_secs(5)), 10);
        // Batching: 10 points per chunk at the same rate is one chunk per second per stream.
        let b = Schedule::new(Rate::PerSecond(40.0), 4, 10, Duration::from_secs(2));
        assert_eq!(b.n_chunks(0), 2);
        assert_eq!(b.n_points_scheduled(), Some(80));
    }

    #[test]
    fn idle_and_max() {
        let idle = Schedule::new(Rate::PerSecond(0.0), 3, 1, Duration::from_secs(1));
        assert!(idle.is_idle() && !idle.is_open_loop());
        assert_eq!(idle.n_chunks(0), 0);
        let max = Schedule::new(Rate::Max, 3, 100, Duration::from_secs(1));
        assert_eq!(max.offered_rate(), None);
        assert_eq!(max.due(2, Duration::ZERO), u64::MAX);
    }

    #[test]
    fn values_are_exact_in_every_notation() {
        for i in 0..1000 {
            let v = value(7, i);
            assert!((0.0..65536.0).contains(&v));
            assert_eq!((v * 65536.0).fract(), 0.0);
        }
        assert_ne!(value(0, 1), value(1, 1));
    }
}
