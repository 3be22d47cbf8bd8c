//! Latency figures of a test: count, mean and nearest-rank percentiles, the
//! way `ab` reports "percentage of the requests served within a certain time".

use serde::{Deserialize, Serialize};

/// A latency distribution, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// The nearest-rank `p`th percentile of `sorted` (ascending, not empty): the
/// smallest sample with at least `p` % of the samples at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    // ceil(p/100 · n), at least rank 1.
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    sorted[rank.min(n) - 1]
}

impl Summary {
    /// The summary of `seconds` (each one sample), `None` when there are none.
    pub fn of_seconds(seconds: &[f64]) -> Option<Self> {
        let mut ms: Vec<f64> = seconds.iter().map(|s| s * 1000.0).collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        Some(Self {
            count: ms.len() as u64,
            min: ms[0],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
            p50: percentile(&ms, 50.0),
            p90: percentile(&ms, 90.0),
            p99: percentile(&ms, 99.0),
            max: ms[ms.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 90.0), 90.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        // 10 samples: the 99th percentile is the largest, the median the 5th.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 99.0), 10.0);
        assert_eq!(percentile(&ten, 50.0), 5.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn a_summary_is_in_milliseconds_whatever_the_order() {
        let s = Summary::of_seconds(&[0.003, 0.001, 0.002, 0.010]).unwrap();
        assert_eq!((s.count, s.min, s.max), (4, 1.0, 10.0));
        assert!((s.mean - 4.0).abs() < 1e-9);
        assert_eq!((s.p50, s.p90, s.p99), (2.0, 10.0, 10.0));
        assert_eq!(Summary::of_seconds(&[]), None);
    }
}
