//! A cumulative kernel counter and its rate over the last interval.

use serde::{Deserialize, Serialize};

/// A counter as the kernel keeps it (only goes up while its owner exists), with
/// its per-second rate between the last two Samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterRate {
    /// The cumulative count.
    pub total: u64,
    /// `(total - total before) / elapsed seconds`; 0 without an earlier Sample.
    pub per_second: f64,
}

impl CounterRate {
    /// The counter at `now`, with its rate against `before` over `elapsed` seconds.
    ///
    /// A counter that went backwards (a reused namespace inode, an evicted map
    /// entry) reads as no activity, never as a huge number.
    pub fn new(now: u64, before: Option<u64>, elapsed: f64) -> Self {
        let per_second = match before {
            Some(b) if elapsed > 0.0 => now.saturating_sub(b) as f64 / elapsed,
            _ => 0.0,
        };
        Self {
            total: now,
            per_second,
        }
    }

    /// Adds another counter's total and rate (to sum workloads).
    pub fn add(&mut self, other: &Self) {
        self.total = self.total.saturating_add(other.total);
        self.per_second += other.per_second;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_saturate_at_zero_and_need_an_earlier_value() {
        assert_eq!(CounterRate::new(30, Some(10), 2.0).per_second, 10.0);
        assert_eq!(CounterRate::new(3, Some(10), 2.0).per_second, 0.0);
        assert_eq!(CounterRate::new(3, None, 2.0).per_second, 0.0);
        assert_eq!(CounterRate::new(3, Some(1), 0.0).per_second, 0.0);
        let mut a = CounterRate::new(u64::MAX, None, 1.0);
        a.add(&CounterRate::new(5, None, 1.0));
        assert_eq!(a.total, u64::MAX);
    }
}
