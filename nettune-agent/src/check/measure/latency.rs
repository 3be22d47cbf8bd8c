//! TCP connect latency.

use crate::check::stats::Summary;
use serde::{Deserialize, Serialize};
use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use super::*;

/// What the connect test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// The address connected to.
    pub address: SocketAddr,
    /// Connects tried.
    pub attempts: u64,
    /// Connects that failed (refused, unreachable, timed out).
    pub failures: u64,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Time from `connect()` to established, of those that succeeded.
    pub connect_ms: Option<Summary>,
}

/// `count` TCP connects to `addr`, one after the other, each closed at once;
/// stops early when `budget` is spent.
pub fn connect_latency(
    addr: SocketAddr,
    count: u64,
    timeout: Duration,
    budget: Duration,
    progress: &dyn Progress,
) -> Latency {
    let started = Instant::now();
    let (mut times, mut failures, mut attempts, mut first_error) = (Vec::new(), 0, 0, None);
    while attempts < count && started.elapsed() < budget {
        attempts += 1;
        let t = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                times.push(t.elapsed().as_secs_f64());
                drop(stream);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        progress.step("latency", attempts, count);
    }
    Latency {
        address: addr,
        attempts,
        failures,
        first_error,
        connect_ms: Summary::of_seconds(&times),
    }
}
