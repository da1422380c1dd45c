//! Descriptive statistics over measured samples: the one percentile function
//! every report uses, and a [`Summary`] built on it.
//!
//! Percentiles interpolate linearly between the two closest ranks, which is
//! numpy's default (`method="linear"`): for `n` sorted samples, percentile `p`
//! sits at rank `p / 100 × (n − 1)`. The standard deviation is the sample
//! standard deviation (divisor `n − 1`), since a run's requests are a sample
//! of the engine's behaviour; it is 0 for a single sample.
//!
//! Non-finite samples (NaN, ±∞) are ignored. This module does not choose which
//! records enter a statistic; callers pass successful requests only.

use serde::{Deserialize, Serialize};

/// Count, moments, extremes and the usual percentiles of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of finite samples summarised.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divisor n − 1); 0 for one sample.
    pub stddev: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Median (50th percentile).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there is no finite sample.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let sorted = sorted_finite(samples);
        let (min, max) = (*sorted.first()?, *sorted.last()?);
        let (mean, stddev) = mean_and_stddev(&sorted);
        let at = |p| percentile_sorted(&sorted, p).unwrap_or(f64::NAN);
        Some(Self {
            count: sorted.len() as u64,
            mean,
            stddev,
            min,
            max,
            p50: at(50.0),
            p90: at(90.0),
            p95: at(95.0),
            p99: at(99.0),
        })
    }

    /// Summarises integer samples such as nanosecond latencies.
    pub fn of_u64(samples: &[u64]) -> Option<Self> {
        let samples: Vec<f64> = samples.iter().map(|&sample| sample as f64).collect();
        Self::of(&samples)
    }
}

/// Percentile `p` (0–100, clamped) of `samples` in any order, interpolating
/// linearly between closest ranks; `None` without finite samples or for a NaN `p`.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    percentile_sorted(&sorted_finite(samples), p)
}

/// [`percentile`] for samples already sorted ascending and all finite.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if p.is_nan() {
        return None;
    }
    let last = sorted.len().checked_sub(1)?;
    let rank = p.clamp(0.0, 100.0) / 100.0 * last as f64;
    let below = (rank.floor() as usize).min(last);
    let above = (below + 1).min(last);
    let fraction = rank - below as f64;
    let (low, high) = (sorted[below], sorted[above]);
    if fraction == 0.0 || low == high {
        return Some(low);
    }

    // Rounding may put the interpolated value a hair outside its two ranks;
    // clamping keeps the result monotonic in `p` and within [min, max].
    Some((low + (high - low) * fraction).clamp(low, high))
}

/// The finite samples, sorted ascending.
fn sorted_finite(samples: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> =
        samples.iter().copied().filter(|sample| sample.is_finite()).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    sorted
}

/// Mean and sample standard deviation by Welford's method (stable for large values).
fn mean_and_stddev(samples: &[f64]) -> (f64, f64) {
    let mut mean = 0.0;
    let mut squares = 0.0;
    for (index, &sample) in samples.iter().enumerate() {
        let delta = sample - mean;
        mean += delta / (index + 1) as f64;
        squares += delta * (sample - mean);
    }
    let stddev = match samples.len() {
        0 | 1 => 0.0,
        n => (squares / (n - 1) as f64).sqrt(),
    };
    (mean, stddev)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn matches_numpy_linear_percentiles() {
        let data = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&data, 50.0), Some(2.5));
        assert!(close(percentile(&data, 90.0).unwrap_or_default(), 3.7));
        let data = [35.0, 20.0, 15.0, 50.0, 40.0];
        assert!(close(percentile(&data, 40.0).unwrap_or_default(), 29.0));
        assert_eq!(percentile(&data, 100.0), Some(50.0));
    }

    #[test]
    fn empty_and_single_inputs() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[7.0], f64::NAN), None);
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&[7.0]).expect("one sample");
        assert_eq!((one.count, one.mean, one.stddev, one.p99), (1, 7.0, 0.0, 7.0));
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        assert_eq!(percentile(&[f64::NAN, 1.0, f64::INFINITY, 3.0], 50.0), Some(2.0));
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn summary_of_known_samples() {
        let summary = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).expect("samples");
        assert_eq!((summary.count, summary.mean, summary.min, summary.max), (8, 5.0, 2.0, 9.0));
        assert!(close(summary.stddev, (32.0f64 / 7.0).sqrt()));
        assert_eq!(summary.p50, 4.5);
        let from_ints = Summary::of_u64(&[2, 4, 4, 4, 5, 5, 7, 9]).expect("samples");
        assert_eq!(from_ints, summary);
    }

    fn samples() -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(-1e12f64..1e12, 1..64)
    }

    proptest! {
        #[test]
        fn percentile_is_monotonic_in_p(
            data in samples(),
            a in 0.0f64..=100.0,
            b in 0.0f64..=100.0,
        ) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(percentile(&data, low) <= percentile(&data, high));
        }

        #[test]
        fn percentile_stays_within_min_and_max(data in samples(), p in 0.0f64..=100.0) {
            let value = percentile(&data, p).expect("non-empty");
            let min = data.iter().copied().fold(f64::INFINITY, f64::min);
            let max = data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(min <= value && value <= max);
            prop_assert_eq!(percentile(&data, 0.0), Some(min));
            prop_assert_eq!(percentile(&data, 100.0), Some(max));
        }

        #[test]
        fn percentile_ignores_input_order(
            data in samples(),
            p in 0.0f64..=100.0,
            seed in any::<u64>(),
        ) {
            let mut shuffled = data.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(percentile(&data, p), percentile(&shuffled, p));
            prop_assert_eq!(Summary::of(&data), Summary::of(&shuffled));
        }
    }
}
