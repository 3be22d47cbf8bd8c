//! Repeated measurements summarised: median and spread.

use serde::{Deserialize, Serialize};

/// The median, extremes and quartiles of repeated measurements, with the samples.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles (linear interpolation).
    pub q1: f64,
    pub q3: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples` (NaNs are left out); all zero when there are none.
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return Self::default();
        }
        Self {
            median: quantile(&sorted, 0.5),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            q1: quantile(&sorted, 0.25),
            q3: quantile(&sorted, 0.75),
            samples: samples.to_vec(),
        }
    }

    /// A single measurement (no spread).
    pub fn one(value: f64) -> Self {
        Self::of(&[value])
    }

    /// How many measurements.
    pub fn n(&self) -> usize {
        self.samples.len()
    }

    /// Each sample multiplied by `factor` (unit changes).
    pub fn scaled(&self, factor: f64) -> Self {
        let samples: Vec<f64> = self.samples.iter().map(|v| v * factor).collect();
        Self::of(&samples)
    }
}

/// The `q` quantile of sorted, non-empty `v`, interpolating between neighbours.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn median_and_quartiles_of_odd_and_even_counts() {
        let s = Summary::of(&[5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.q1, s.q3), (2.5, 1.75, 3.25));
        assert_eq!(Summary::of(&[]).n(), 0);
    }
}
