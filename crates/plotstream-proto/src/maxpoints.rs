//! A trace's `stream.maxpoints` (docs/protocol.md §3.4, L23): how many values a stream's window
//! keeps per attribute. One type for the default, the ceiling and the clamp, so that a figure's
//! value, a flag and a stored window are bounded the same way everywhere.

use std::fmt;

/// Values kept per attribute: `0..=` a ceiling (`--max-maxpoints`, [`Maxpoints::MAX`] by
/// default). Built only through [`Maxpoints::new`] and [`Maxpoints::from_figure`], which clamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Maxpoints(usize);

impl Maxpoints {
    /// A trace whose figure sets none keeps 500 (`--default-maxpoints`).
    pub const DEFAULT: Maxpoints = Maxpoints(500);
    /// plotly.js's own maximum, the default of `--max-maxpoints` and of L22 (values per array).
    pub const MAX: Maxpoints = Maxpoints(10_000);

    /// `n`, clamped to `ceiling`.
    pub fn new(n: usize, ceiling: Maxpoints) -> Maxpoints {
        Maxpoints(n.min(ceiling.0))
    }

    /// A figure's `stream.maxpoints` as plotly.js reads it: truncated, clamped to
    /// `0..=ceiling`; not a finite positive number gives 0.
    pub fn from_figure(mp: f64, ceiling: Maxpoints) -> Maxpoints {
        if !mp.is_finite() || mp <= 0.0 {
            return Maxpoints(0);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped below
        let n = mp.trunc().min(ceiling.0 as f64) as usize;
        Maxpoints(n)
    }

    /// A ceiling itself (`--max-maxpoints N`): any `N` the operator chooses.
    pub fn ceiling(n: usize) -> Maxpoints {
        Maxpoints(n)
    }

    /// The count.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for Maxpoints {
    fn default() -> Self {
        Maxpoints::DEFAULT
    }
}

impl fmt::Display for Maxpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_values_are_read_as_plotly_js_reads_them() {
        let max = Maxpoints::MAX;
        assert_eq!(Maxpoints::from_figure(80.0, max).get(), 80);
        assert_eq!(Maxpoints::from_figure(80.9, max).get(), 80);
        assert_eq!(Maxpoints::from_figure(-3.0, max).get(), 0);
        assert_eq!(Maxpoints::from_figure(f64::NAN, max).get(), 0);
        assert_eq!(Maxpoints::from_figure(f64::INFINITY, max).get(), 0);
        assert_eq!(Maxpoints::from_figure(1e300, max), max);
        assert_eq!(
            Maxpoints::from_figure(50.0, Maxpoints::ceiling(20)).get(),
            20
        );
        assert_eq!(Maxpoints::new(500, Maxpoints::ceiling(100)).get(), 100);
        assert_eq!(Maxpoints::default(), Maxpoints::DEFAULT);
    }
}
