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
//!
//! `NETTUNE_RESULTS_DIR` makes the run also write `results.jsonl` there: a first
//! line naming the kernel, then one line per test and one per [`record`]ed fact,
//! and a last line with the counts (its absence means the run did not finish).
//! `cargo xtask vm-test` reads it back from each VM and from the host.

use std::{
    fmt,
    io::Write as _,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use serde_json::{Value, json};

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
    /// tc programs through TCX links (Linux 6.6+).
    Tcx,
    /// tc programs as filters on a clsact qdisc (netlink).
    Clsact,
    /// fentry programs on the listen-overflow functions (BPF trampolines).
    Fentry,
    /// kprobes (`CONFIG_KPROBES`).
    Kprobe,
    /// The netem qdisc (built in, or a module `modprobe` can load).
    Netem,
    /// Drop reasons: `kfree_skb` carries `enum skb_drop_reason` (Linux 5.17+).
    DropReasons,
    /// Real container runtimes: containerd with runc and the CNI plugins,
    /// podman, and the images `cargo xtask test` builds for them.
    Containers,
}

impl Feature {
    /// Every feature, in the order docs/testing.md lists them.
    pub const ALL: [Self; 12] = [
        Self::Root,
        Self::Btf,
        Self::TpBtf,
        Self::Tracepoint,
        Self::Tc,
        Self::Tcx,
        Self::Clsact,
        Self::Fentry,
        Self::Kprobe,
        Self::Netem,
        Self::DropReasons,
        Self::Containers,
    ];

    /// Name used in `NETTUNE_REQUIRE_FEATURES`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Btf => "btf",
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
            Self::Tc => "tc",
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Netem => "netem",
            Self::DropReasons => "drop_reasons",
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
    /// It ran and everything it checked held.
    Passed,
    /// It could not run here; the reason says why.
    Skipped(String),
}

/// A test's result: `Err` is a failure with its message.
pub type TestResult = anyhow::Result<Outcome>;

/// A registered test.
#[derive(Clone, Copy)]
pub struct Test {
    /// `<module>::<what it proves>`.
    pub name: &'static str,
    /// The test itself.
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

/// Skips unless `modprobe sch_netem` succeeds here (or netem is built in): the
/// kernel's own answer, not a guess from its version.
pub fn require_netem() -> Option<TestResult> {
    let loaded = Path::new("/sys/module/sch_netem").exists();
    let why = if loaded {
        String::new()
    } else {
        match Command::new("modprobe").arg("sch_netem").output() {
            Ok(out) if out.status.success() => String::new(),
            Ok(out) => format!(
                "`modprobe sch_netem` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => format!("cannot run modprobe: {e}"),
        }
    };
    require(Feature::Netem, why.is_empty(), &why)
}

/// Where `NETTUNE_RESULTS_DIR` asks for results, if it does.
fn results_file() -> Option<PathBuf> {
    std::env::var_os("NETTUNE_RESULTS_DIR").map(|d| PathBuf::from(d).join("results.jsonl"))
}

/// Appends one JSON line to the results file, if there is one. A failure to write
/// is reported once per line on stderr: results must not vanish silently.
fn write_result(line: &Value) {
    let Some(path) = results_file() else { return };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!("warning: cannot write {}: {e}", path.display());
    }
}

/// Records a fact a test established (e.g. which variant each signal attached),
/// for `cargo xtask vm-test`'s generated tables. Does nothing unless
/// `NETTUNE_RESULTS_DIR` is set.
pub fn record(key: &str, value: Value) {
    write_result(&json!({ "fact": key, "value": value }));
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|e| format!("unknown ({e})"), |s| s.trim().to_owned())
}

/// Which tests the command line selects: the positional filters (any may match;
/// none selects all), minus every `--skip FILTER`.
struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
}

impl Selection {
    fn from_args(args: impl IntoIterator<Item = String>) -> Self {
        let mut selection = Self {
            filters: Vec::new(),
            skips: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--skip" {
                selection.skips.extend(args.next());
            } else if let Some(skip) = arg.strip_prefix("--skip=") {
                selection.skips.push(skip.to_owned());
            } else if !arg.starts_with('-') {
                selection.filters.push(arg);
            }
        }
        selection
    }

    fn selects(&self, name: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str())))
            && !self.skips.iter().any(|s| name.contains(s.as_str()))
    }
}

/// Runs the tests whose names contain any of the command-line filters (all when
/// none) and none of the `--skip` ones, prints one line each and the summary, and
/// exits non-zero on failure.
pub fn main(tests: &[Test]) -> ! {
    let selection = Selection::from_args(std::env::args().skip(1));
    if let Some(path) = results_file() {
        // A fresh file per run: stale lines from an earlier run would be misread.
        let _ = std::fs::remove_file(&path);
    }
    write_result(&json!({ "kernel": kernel_release() }));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for test in tests.iter().filter(|t| selection.selects(t.name)) {
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(test.run));
        let secs = started.elapsed().as_secs_f64();
        let (outcome, detail) = match result {
            Ok(Ok(Outcome::Passed)) => {
                passed += 1;
                println!("test {} ... ok ({secs:.1}s)", test.name);
                ("passed", String::new())
            }
            Ok(Ok(Outcome::Skipped(reason))) => {
                skipped += 1;
                println!("test {} ... SKIPPED: {reason}", test.name);
                ("skipped", reason)
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("test {} ... FAILED ({secs:.1}s): {e:#}", test.name);
                ("failed", format!("{e:#}"))
            }
            Err(_) => {
                failed += 1;
                println!(
                    "test {} ... FAILED ({secs:.1}s): panicked (see above)",
                    test.name
                );
                ("failed", "panicked".to_owned())
            }
        };
        write_result(&json!({
            "test": test.name,
            "outcome": outcome,
            "detail": detail,
            "seconds": secs,
        }));
    }
    println!("kernel: {passed} passed, {failed} failed, {skipped} skipped");
    write_result(&json!({
        "summary": { "passed": passed, "failed": failed, "skipped": skipped },
    }));
    std::process::exit(i32::from(failed > 0));
}

#[cfg(test)]
mod tests {
    use super::Selection;

    #[test]
    fn filters_select_and_skips_remove() {
        let args = [
            "listen::",
            "--skip",
            "kprobe",
            "--skip=deploy::",
            "--nocapture",
        ];
        let s = Selection::from_args(args.map(str::to_owned));
        assert!(s.selects("listen::fentry_per_socket"));
        assert!(!s.selects("listen::kprobe_per_socket"));
        assert!(!s.selects("drops::x"));
        let all = Selection::from_args(["--skip".to_owned(), "deploy::".to_owned()]);
        assert!(all.selects("drops::x"));
        assert!(!all.selects("deploy::y"));
    }
}
