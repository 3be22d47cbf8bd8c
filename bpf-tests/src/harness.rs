//! A minimal test harness for kernel tests.
//!
//! libtest has no "skipped" outcome: a test that returns early because it lacks root
//! would be reported as passed. Here a test returns [`Outcome`]: passed, or skipped
//! with the reason; a panic or an error is a failure. The run ends with
//! `kernel: N passed, N failed, N skipped`, and the process fails if anything failed.
//!
//! `NETTUNE_REQUIRE_FEATURES` (comma-separated [`Feature`] names, or `all`) turns a
//! skip for a listed feature into a failure: CI sets it for what its machine has, so
//! kernel tests cannot quietly stop running.

use std::{fmt, panic::AssertUnwindSafe, time::Instant};

/// A kernel or environment feature a test may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Running as root (loading programs, creating namespaces).
    Root,
    /// `/sys/kernel/btf/vmlinux`.
    Btf,
    /// BTF-enabled tracepoints (`tp_btf`).
    TpBtf,
    /// Classic tracepoints through tracefs.
    Tracepoint,
    /// tc programs (TCX or clsact).
    Tc,
    /// Real container runtimes: containerd with runc and the CNI plugins,
    /// podman, and the images `cargo xtask test` builds for them.
    Containers,
}

impl Feature {
    /// Name used in `NETTUNE_REQUIRE_FEATURES`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Btf => "btf",
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
            Self::Tc => "tc",
            Self::Containers => "containers",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a test ended, short of failing.
#[derive(Debug)]
pub enum Outcome {
    Passed,
    Skipped(String),
}

/// A test's result: `Err` is a failure with its message.
pub type TestResult = anyhow::Result<Outcome>;

/// A registered test.
#[derive(Clone, Copy)]
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

/// Whether `NETTUNE_REQUIRE_FEATURES` requires `feature`.
pub fn is_required(feature: Feature) -> bool {
    std::env::var("NETTUNE_REQUIRE_FEATURES").is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|f| f == "all" || f == feature.name())
    })
}

/// Skips (returns `Err(skip)`) when `present` is false, or fails if the feature
/// is required. Use as `if let Some(skip) = require(..) { return skip; }`.
pub fn require(feature: Feature, present: bool, why_missing: &str) -> Option<TestResult> {
    if present {
        None
    } else if is_required(feature) {
        Some(Err(anyhow::anyhow!(
            "feature `{feature}` is required here (NETTUNE_REQUIRE_FEATURES) but missing: {why_missing}"
        )))
    } else {
        Some(Ok(Outcome::Skipped(format!(
            "needs {feature}: {why_missing}"
        ))))
    }
}

/// Skips unless running as root.
pub fn require_root() -> Option<TestResult> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    require(Feature::Root, root, "not running as root")
}

/// Runs the tests whose names contain any of the command-line filters (all when
/// none), prints one line each and the summary, and exits non-zero on failure.
pub fn main(tests: &[Test]) -> ! {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for test in tests {
        if !filters.is_empty() && !filters.iter().any(|f| test.name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(test.run));
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(Ok(Outcome::Passed)) => {
                passed += 1;
                println!("test {} ... ok ({secs:.1}s)", test.name);
            }
            Ok(Ok(Outcome::Skipped(reason))) => {
                skipped += 1;
                println!("test {} ... SKIPPED: {reason}", test.name);
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("test {} ... FAILED ({secs:.1}s): {e:#}", test.name);
            }
            Err(_) => {
                failed += 1;
                println!(
                    "test {} ... FAILED ({secs:.1}s): panicked (see above)",
                    test.name
                );
            }
        }
    }
    println!("kernel: {passed} passed, {failed} failed, {skipped} skipped");
    std::process::exit(i32::from(failed > 0));
}
