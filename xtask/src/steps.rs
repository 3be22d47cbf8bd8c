//! The `==> step` lines that `cargo xtask test` and `bench` print around each step.

use std::time::Instant;

/// Prints `==> name` and returns when it started.
pub fn step(name: &str) -> Instant {
    println!("\n==> {name}");
    Instant::now()
}

/// Prints `==> name: done in N s`.
pub fn done(name: &str, started: Instant) {
    println!(
        "==> {name}: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
