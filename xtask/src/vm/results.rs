//! What a kernel test run left in its results directory
//! (`results.jsonl`), and the report printed from it.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use serde_json::Value;

/// One test's result, as the harness wrote it.
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: String,
    /// The failure or the skip's reason.
    pub detail: String,
}

/// Everything one kernel's run left in its results directory.
pub struct RunResult {
    /// `5.10`, `6.1`, `6.12` or `host`.
    pub label: String,
    /// The kernel package booted (VMs only).
    pub package: Option<String>,
    /// The kernel's release, as the guest reported it.
    pub release: Option<String>,
    /// Each test's result.
    pub tests: Vec<TestOutcome>,
    /// Facts the tests recorded (variants, drop reasons, figures).
    pub facts: BTreeMap<String, Value>,
    /// Whether the harness reached its end.
    pub complete: bool,
    /// Why the run did not complete, if it did not.
    pub problem: Option<String>,
    /// Wall-clock time of the run.
    pub seconds: f64,
}

impl RunResult {
    /// A run with no results yet.
    fn empty(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            package: None,
            release: None,
            tests: Vec::new(),
            facts: BTreeMap::new(),
            complete: false,
            problem: None,
            seconds: 0.0,
        }
    }

    /// A run that could not happen, and why.
    pub fn not_run(label: &str, problem: String) -> Self {
        Self {
            problem: Some(problem),
            ..Self::empty(label)
        }
    }

    /// Reads `<dir>/results.jsonl` (absent: a run that never started).
    pub fn read(label: &str, dir: &Path) -> anyhow::Result<Self> {
        let mut run = Self::empty(label);
        let path = dir.join("results.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(run);
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: not JSON: {line}", path.display()))?;
            let text_of = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
            if let Some(kernel) = v["kernel"].as_str() {
                run.release = Some(kernel.to_owned());
            } else if v.get("test").is_some() {
                run.tests.push(TestOutcome {
                    name: text_of("test"),
                    outcome: text_of("outcome"),
                    detail: text_of("detail"),
                });
            } else if let Some(fact) = v["fact"].as_str() {
                run.facts.insert(fact.to_owned(), v["value"].clone());
            } else if v.get("summary").is_some() {
                run.complete = true;
            }
        }
        Ok(run)
    }

    /// (passed, failed, skipped); a run that did not complete counts one failure.
    pub fn counts(&self) -> (u64, u64, u64) {
        let count = |o: &str| self.tests.iter().filter(|t| t.outcome == o).count() as u64;
        (
            count("passed"),
            count("failed") + u64::from(self.problem.is_some()),
            count("skipped"),
        )
    }

    /// `vm 6.1 (6.1.0-56-amd64)` or `host (6.18.…)`.
    fn title(&self) -> String {
        let kind = if self.label == "host" { "" } else { "vm " };
        let release = self.release.as_deref().unwrap_or("did not start");
        format!("{kind}{} ({release})", self.label)
    }
}

/// (passed, failed, skipped) over every run.
pub fn totals(runs: &[RunResult]) -> (u64, u64, u64) {
    runs.iter()
        .map(RunResult::counts)
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

/// Prints one block per kernel: its counts, then one line per test.
pub fn print_report(runs: &[RunResult]) {
    println!("\n==> kernel matrix");
    for run in runs {
        let (passed, failed, skipped) = run.counts();
        let package = run
            .package
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default();
        println!(
            "{}{package}: {passed} passed, {failed} failed, {skipped} skipped in {:.0}s",
            run.title(),
            run.seconds
        );
        for test in &run.tests {
            let detail = if test.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", test.detail.lines().next().unwrap_or_default())
            };
            let outcome = match test.outcome.as_str() {
                "passed" => "ok",
                "failed" => "FAILED",
                other => other,
            };
            println!("  {outcome:<8} {}{detail}", test.name);
        }
        if let Some(problem) = &run.problem {
            println!("  FAILED   {problem}");
        }
    }
}
