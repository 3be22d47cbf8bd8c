//! Results: one JSON file per section under `target/nettune-bench/`, and
//! `docs/benchmarks.md` rendered from those files alone, so every figure in the
//! document comes from a run of `cargo xtask bench`. Hand-written explanations
//! (profiles of a miss, what was tried) live in `docs/benchmarks-notes.md`, which
//! is copied in verbatim.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::stats::Summary;

/// The sections, in the order the document shows them.
pub const SECTIONS: &[&str] = &[
    "kernel_cost",
    "datapath",
    "footprint",
    "scale",
    "storm",
    "reaction",
];

/// `target/nettune-bench/`.
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/nettune-bench")
}

/// Where the document and its hand-written notes live.
pub fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// One section's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    /// File name and `--section` name, e.g. `kernel_cost`.
    pub name: String,
    pub title: String,
    /// How the figures are measured (Markdown).
    pub method: String,
    /// Measured with `--quick` (fewer repetitions, shorter windows).
    pub quick: bool,
    pub date: String,
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// Generated remarks that carry figures (e.g. the drop rate achieved).
    pub facts: Vec<String>,
}

impl Section {
    /// A section measured now on this machine, without rows yet.
    pub fn new(name: &str, title: &str, method: &str, quick: bool) -> Self {
        Self {
            name: name.into(),
            title: title.into(),
            method: method.into(),
            quick,
            date: now_utc(),
            machine: Machine::now(),
            rows: Vec::new(),
            facts: Vec::new(),
        }
    }

    /// Writes `target/nettune-bench/<name>.json`.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let dir = results_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", self.name));
        std::fs::write(&path, serde_json::to_string_pretty(self)?)?;
        Ok(path)
    }

    /// Reads `target/nettune-bench/<name>.json`, if a run wrote it.
    pub fn read(name: &str) -> anyhow::Result<Option<Self>> {
        let path = results_dir().join(format!("{name}.json"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).with_context(|| path.display().to_string())?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }
}

/// What the figures were measured on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    /// `/proc/loadavg`'s 1-minute figure when the section started: how busy it was.
    pub load_1m: f64,
    /// Network namespaces and links present before the section created any: the
    /// agent watches them all, so they weigh on its figures.
    pub netns_before: usize,
    pub links_before: usize,
}

impl Machine {
    /// This machine, now.
    pub fn now() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let count = |dir: &str| std::fs::read_dir(dir).map_or(0, Iterator::count);
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: mem_kib / (1024.0 * 1024.0),
            load_1m: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            netns_before: count("/run/netns"),
            links_before: count("/sys/class/net"),
        }
    }
}

/// One figure: its measurements, the reference measured beside it, the target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub figure: String,
    pub unit: String,
    pub value: Summary,
    pub reference: Option<Reference>,
    pub target: Option<Target>,
}

/// The figure a [`Row`] is compared with, measured in the same run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub value: Summary,
}

/// What a figure must be: a bound on its median, or on median / reference median.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub of: Of,
    pub cmp: Cmp,
    pub bound: f64,
    /// As the issue states it, e.g. `≤ bpftrace's keyed count`.
    pub text: String,
    /// Something to aim at rather than a target: shown as reached or not, not missed.
    #[serde(default)]
    pub aim: bool,
}

/// What a [`Target`] bounds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Of {
    Value,
    Ratio,
}

/// How a [`Target`] compares.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Cmp {
    Below,
    AtMost,
    AtLeast,
    Equal,
}

impl Target {
    /// `median / reference ≤ bound`.
    pub fn ratio_at_most(bound: f64, text: &str) -> Self {
        Self::new(Of::Ratio, Cmp::AtMost, bound, text)
    }

    /// `median / reference ≥ bound`.
    pub fn ratio_at_least(bound: f64, text: &str) -> Self {
        Self::new(Of::Ratio, Cmp::AtLeast, bound, text)
    }

    /// `median < bound` (in the row's unit).
    pub fn below(bound: f64, text: &str) -> Self {
        Self::new(Of::Value, Cmp::Below, bound, text)
    }

    /// This bound as an aim rather than a target.
    #[must_use]
    pub fn as_aim(mut self) -> Self {
        self.aim = true;
        self
    }

    /// Every measurement equals the reference's (exact counts).
    pub fn exact(text: &str) -> Self {
        Self::new(Of::Ratio, Cmp::Equal, 1.0, text)
    }

    fn new(of: Of, cmp: Cmp, bound: f64, text: &str) -> Self {
        Self {
            of,
            cmp,
            bound,
            text: text.into(),
            aim: false,
        }
    }
}

impl Row {
    /// A figure with its measurements.
    pub fn new(figure: impl Into<String>, unit: &str, value: Summary) -> Self {
        Self {
            figure: figure.into(),
            unit: unit.into(),
            value,
            reference: None,
            target: None,
        }
    }

    /// Sets the reference measured beside it.
    #[must_use]
    pub fn against(mut self, name: impl Into<String>, value: Summary) -> Self {
        self.reference = Some(Reference {
            name: name.into(),
            value,
        });
        self
    }

    /// Sets the target.
    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// Median over the reference's median.
    pub fn ratio(&self) -> Option<f64> {
        let r = self.reference.as_ref()?;
        (r.value.median != 0.0).then(|| self.value.median / r.value.median)
    }

    /// Whether the target is met; `None` without a target or a figure to judge.
    pub fn met(&self) -> Option<bool> {
        let t = self.target.as_ref()?;
        if self.value.n() == 0 {
            return None;
        }
        if let (Of::Ratio, Cmp::Equal) = (t.of, t.cmp) {
            let r = self.reference.as_ref()?;
            return Some(self.value.samples == r.value.samples);
        }
        let x = match t.of {
            Of::Value => self.value.median,
            Of::Ratio => self.ratio()?,
        };
        Some(match t.cmp {
            Cmp::Below => x < t.bound,
            Cmp::AtMost => x <= t.bound,
            Cmp::AtLeast => x >= t.bound,
            Cmp::Equal => x == t.bound,
        })
    }
}

/// Renders docs/benchmarks.md from every section's results and the notes.
pub fn render(sections: &[Section], notes: Option<&str>) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         <!-- Generated by `cargo xtask bench`: do not edit by hand. Notes go in \
         docs/benchmarks-notes.md. -->\n\n\
         **This file is generated** by `cargo xtask bench` (as root; `--quick` for a short \
         run, `--section NAME` to re-run one section) from `target/nettune-bench/<section>.json`: \
         every figure below comes from a run of that command, each next to a reference \
         measured in the same run, repeated, with its median and spread. Hand-written \
         explanations are in the last part, copied from `docs/benchmarks-notes.md`.\n"
    );
    if let Some(first) = sections.first() {
        let m = &first.machine;
        let _ = writeln!(
            md,
            "Machine: {} cores ({}), {:.0} GiB, kernel {}. Dates, modes and the machine's load \
             are given per section; a busy machine moves figure and reference together, the \
             ratio less.\n",
            m.cores, m.cpu, m.memory_gib, m.kernel
        );
    }
    summary_table(&mut md, sections);
    for s in sections {
        section(&mut md, s);
    }
    md.push_str("## Notes (hand-written, from docs/benchmarks-notes.md)\n\n");
    match notes {
        Some(n) => md.push_str(n.trim_end()),
        None => md.push_str("(none yet)"),
    }
    md.push('\n');
    md
}

fn summary_table(md: &mut String, sections: &[Section]) {
    md.push_str("## Targets at a glance\n\n| section | figure | median | reference | ratio | target | met |\n|---|---|---|---|---|---|---|\n");
    for s in sections {
        for r in s.rows.iter().filter(|r| r.target.is_some()) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                s.name,
                r.figure,
                value(r.value.median, &r.unit),
                reference(r),
                ratio(r),
                r.target.as_ref().map_or("", |t| t.text.as_str()),
                met(r)
            );
        }
    }
    md.push('\n');
}

fn section(md: &mut String, s: &Section) {
    let m = &s.machine;
    let _ = writeln!(
        md,
        "## {}\n\n*`cargo xtask bench{} --section {}`, {} UTC, kernel {}, load {:.2} at start, \
         {} namespaces and {} links present before it started.*\n\n{}\n",
        s.title,
        if s.quick { " --quick" } else { "" },
        s.name,
        s.date,
        m.kernel,
        m.load_1m,
        m.netns_before,
        m.links_before,
        s.method.trim()
    );
    md.push_str("| figure | median | spread | reference (same run) | ratio | target | met |\n|---|---|---|---|---|---|---|\n");
    for r in &s.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.figure,
            value(r.value.median, &r.unit),
            spread(&r.value, &r.unit),
            reference(r),
            ratio(r),
            r.target.as_ref().map_or("", |t| t.text.as_str()),
            met(r)
        );
    }
    md.push('\n');
    for f in &s.facts {
        let _ = writeln!(md, "- {f}");
    }
    if !s.facts.is_empty() {
        md.push('\n');
    }
}

fn reference(r: &Row) -> String {
    r.reference.as_ref().map_or_else(String::new, |x| {
        format!("{}: {}", x.name, value(x.value.median, &r.unit))
    })
}

fn ratio(r: &Row) -> String {
    r.ratio().map_or_else(String::new, |x| {
        if x != 0.0 && x.abs() < 0.1 {
            format!("{x:.3}")
        } else {
            format!("{x:.2}")
        }
    })
}

fn met(r: &Row) -> &'static str {
    let aim = r.target.as_ref().is_some_and(|t| t.aim);
    match (r.met(), aim) {
        (Some(true), false) => "met",
        (Some(false), false) => "**missed**",
        (Some(true), true) => "aim reached",
        (Some(false), true) => "aim not reached",
        (None, _) => "",
    }
}

/// `v` with a precision that suits its size, and its unit.
pub fn value(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 || v == v.trunc() {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 0.1 {
        2
    } else {
        3
    };
    let sep = if unit.is_empty() || unit.starts_with('%') || unit.starts_with('/') {
        ""
    } else {
        " "
    };
    format!("{v:.digits$}{sep}{unit}")
}

fn spread(s: &Summary, unit: &str) -> String {
    match s.n() {
        0 => "no data".into(),
        1 => "one measurement".into(),
        n if n >= 4 => format!(
            "{}–{} (IQR {}–{}), n={n}",
            value(s.min, ""),
            value(s.max, unit),
            value(s.q1, ""),
            value(s.q3, "")
        ),
        n => format!("{}–{}, n={n}", value(s.min, ""), value(s.max, unit)),
    }
}

/// Now, as `YYYY-MM-DD HH:MM` in UTC (civil-from-days, no time zone database).
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's days → civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02}")
}

#[cfg(test)]
mod tests {
    use super::{Row, Summary, Target, value};

    #[test]
    fn targets_on_ratio_value_and_exactness() {
        let r = Row::new("x", "ns", Summary::of(&[90.0, 100.0, 110.0]))
            .against("peer", Summary::of(&[100.0, 100.0, 100.0]))
            .target(Target::ratio_at_most(1.0, "≤ peer"));
        assert_eq!(r.met(), Some(true));
        let r = r.target(Target::below(50.0, "< 50"));
        assert_eq!(r.met(), Some(false));
        let exact = Row::new("n", "", Summary::of(&[5.0]))
            .against("k", Summary::of(&[5.0]))
            .target(Target::exact("equal"));
        assert_eq!(exact.met(), Some(true));
        assert_eq!(Row::new("n", "", Summary::of(&[])).met(), None);
    }

    #[test]
    fn values_keep_a_sensible_precision() {
        assert_eq!(value(202.4, "ns"), "202 ns");
        assert_eq!(value(12.34, "ms"), "12.3 ms");
        assert_eq!(value(0.5, "% of a core"), "0.50% of a core");
        assert_eq!(value(3.0, ""), "3");
    }
}
