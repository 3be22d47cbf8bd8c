//! A run's record, its bounds, and how it is printed: the table at the end of a
//! run and two runs side by side with the tuning changes between them.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use super::{
    measure::{Dns, Http, Latency, Ping, Throughput},
    target::Endpoint,
};
use crate::tune::journal::Entry;

/// How one test ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    /// It ran; what it measured.
    Measured(T),
    /// It could not run (e.g. no address, nothing listening for iperf3).
    Failed(String),
}

impl<T> Outcome<T> {
    /// The figures, if it ran.
    pub fn measured(&self) -> Option<&T> {
        match self {
            Self::Measured(t) => Some(t),
            Self::Failed(_) => None,
        }
    }
}

/// The sysctls in force when a run started: the node's, and the source
/// namespace's own (per-namespace ones), by dotted name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctls {
    /// Read in the node's namespace.
    pub node: BTreeMap<String, String>,
    /// Read inside the source namespace (per-namespace sysctls only).
    pub source: BTreeMap<String, String>,
}

/// One bound and how a run met it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundCheck {
    /// The flag that set it, e.g. `--max-dns-failures`.
    pub flag: String,
    /// Its value.
    pub limit: f64,
    /// The figure it bounds; `None` when the test did not run.
    pub value: Option<f64>,
    /// Whether the figure is within the bound.
    pub ok: bool,
}

/// Bounds a run must meet (each optional: unset is not checked).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// `--min-throughput-mbps`.
    pub min_throughput_mbps: Option<f64>,
    /// `--max-connect-failures`.
    pub max_connect_failures: Option<u64>,
    /// `--max-connect-p99-ms`.
    pub max_connect_p99_ms: Option<f64>,
    /// `--max-ping-loss` (echo requests without a reply).
    #[serde(default)]
    pub max_ping_loss: Option<u64>,
    /// `--max-dns-failures`.
    pub max_dns_failures: Option<u64>,
    /// `--max-dns-p99-ms`.
    pub max_dns_p99_ms: Option<f64>,
    /// `--max-http-errors` (failed requests and non-2xx responses).
    pub max_http_errors: Option<u64>,
    /// `--max-http-p99-ms`.
    pub max_http_p99_ms: Option<f64>,
    /// `--min-http-rate`.
    pub min_http_rate: Option<f64>,
}

/// One saved run of `nettune check`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Its name in the state directory.
    pub id: String,
    /// Unix time it started, in seconds.
    pub started: f64,
    /// Unix time it ended.
    pub finished: f64,
    /// Where the tests ran from.
    pub from: Endpoint,
    /// Where they went.
    pub to: Endpoint,
    /// Throughput, if asked for.
    pub throughput: Option<Outcome<Throughput>>,
    /// Connect latency, if asked for.
    pub latency: Option<Outcome<Latency>>,
    /// ICMP echo, if asked for.
    #[serde(default)]
    pub ping: Option<Outcome<Ping>>,
    /// DNS, if asked for.
    pub dns: Option<Outcome<Dns>>,
    /// HTTP, if asked for.
    pub http: Option<Outcome<Http>>,
    /// The bounds, checked.
    pub bounds: Vec<BoundCheck>,
    /// Every test ran and met its bounds.
    pub passed: bool,
    /// The sysctls at the start.
    pub sysctls: Sysctls,
    /// The tuning journal at the start (what nettune had changed, with write times).
    pub journal: Vec<Entry>,
}

/// How a figure ranks: which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// More is better (throughput, rate).
    Higher,
    /// Less is better (latency, failures).
    Lower,
}

/// One figure of a run, for the tables.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// `test figure`, e.g. `dns p99`.
    pub name: &'static str,
    /// The value; `None` when the test did not run or measured nothing.
    pub value: Option<f64>,
    /// Its unit.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
}

impl Run {
    /// Every figure, in table order (the same list for every run, so two runs line up).
    pub fn figures(&self) -> Vec<Figure> {
        use Better::{Higher, Lower};
        let f = |name, value: Option<f64>, unit, better| Figure {
            name,
            value,
            unit,
            better,
        };
        let t = self.throughput.as_ref().and_then(Outcome::measured);
        let l = self.latency.as_ref().and_then(Outcome::measured);
        let p = self.ping.as_ref().and_then(Outcome::measured);
        let pr = p.and_then(|p| p.rtt_ms.as_ref());
        let d = self.dns.as_ref().and_then(Outcome::measured);
        let h = self.http.as_ref().and_then(Outcome::measured);
        let lc = l.and_then(|l| l.connect_ms.as_ref());
        let dl = d.and_then(|d| d.latency_ms.as_ref());
        let hl = h.and_then(|h| h.latency_ms.as_ref());
        vec![
            f("throughput", t.map(|t| t.mbps), "Mbit/s", Higher),
            f(
                "throughput retransmits",
                t.and_then(|t| t.retransmits).map(|r| r as f64),
                "",
                Lower,
            ),
            f("connect p50", lc.map(|s| s.p50), "ms", Lower),
            f("connect p99", lc.map(|s| s.p99), "ms", Lower),
            f("connect failures", l.map(|l| l.failures as f64), "", Lower),
            f("ping p50", pr.map(|s| s.p50), "ms", Lower),
            f("ping p99", pr.map(|s| s.p99), "ms", Lower),
            f(
                "ping loss",
                p.map(|p| (p.sent - p.received) as f64),
                "",
                Lower,
            ),
            f("dns mean", dl.map(|s| s.mean), "ms", Lower),
            f("dns p50", dl.map(|s| s.p50), "ms", Lower),
            f("dns p99", dl.map(|s| s.p99), "ms", Lower),
            f("dns failures", d.map(|d| d.failures as f64), "", Lower),
            f("http rate", h.map(|h| h.rate), "req/s", Higher),
            f("http mean", hl.map(|s| s.mean), "ms", Lower),
            f("http p50", hl.map(|s| s.p50), "ms", Lower),
            f("http p99", hl.map(|s| s.p99), "ms", Lower),
            f(
                "http errors",
                h.map(|h| (h.errors + h.non_2xx) as f64),
                "",
                Lower,
            ),
        ]
    }

    /// The tests that could not run, or ran and got nothing through (every
    /// connect, lookup or request failed: the target is not there), with why.
    pub fn failures(&self) -> Vec<(&'static str, String)> {
        fn failed<T>(
            name: &'static str,
            o: Option<&Outcome<T>>,
            nothing: impl Fn(&T) -> Option<String>,
        ) -> Option<(&'static str, String)> {
            match o? {
                Outcome::Failed(why) => Some((name, why.clone())),
                Outcome::Measured(t) => nothing(t).map(|why| (name, why)),
            }
        }
        let reason =
            |e: &Option<String>| e.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        [
            failed("throughput", self.throughput.as_ref(), |_| None),
            failed("latency", self.latency.as_ref(), |l| {
                (l.attempts > 0 && l.failures == l.attempts)
                    .then(|| format!("every connect failed{}", reason(&l.first_error)))
            }),
            failed("ping", self.ping.as_ref(), |p| {
                (p.sent > 0 && p.received == 0).then(|| "no echo reply".to_owned())
            }),
            failed("dns", self.dns.as_ref(), |d| {
                (d.queries > 0 && d.failures == d.queries).then(|| {
                    let rcodes: Vec<String> =
                        d.rcodes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    let timeouts = if d.timeouts > 0 {
                        format!("timeouts {}", d.timeouts)
                    } else {
                        String::new()
                    };
                    format!(
                        "every lookup failed ({})",
                        [rcodes.join(", "), timeouts]
                            .iter()
                            .filter(|s| !s.is_empty())
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }),
            failed("http", self.http.as_ref(), |h| {
                (h.requests > 0 && h.completed == 0)
                    .then(|| format!("no request completed{}", reason(&h.first_error)))
            }),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Checks `bounds` and sets `passed`: every test that was asked for ran,
    /// and each figure is within its bound.
    pub fn check(&mut self, bounds: &Bounds) {
        let figure = |name: &str| self.figures().into_iter().find(|f| f.name == name)?.value;
        let mut checks = Vec::new();
        let mut at_least = |flag: &str, limit: Option<f64>, value: Option<f64>| {
            if let Some(limit) = limit {
                let ok = value.is_some_and(|v| v >= limit);
                checks.push(BoundCheck {
                    flag: flag.into(),
                    limit,
                    value,
                    ok,
                });
            }
        };
        at_least(
            "--min-throughput-mbps",
            bounds.min_throughput_mbps,
            figure("throughput"),
        );
        at_least("--min-http-rate", bounds.min_http_rate, figure("http rate"));
        let mut at_most = |flag: &str, limit: Option<f64>, value: Option<f64>| {
            if let Some(limit) = limit {
                let ok = value.is_some_and(|v| v <= limit);
                checks.push(BoundCheck {
                    flag: flag.into(),
                    limit,
                    value,
                    ok,
                });
            }
        };
        let whole = |n: Option<u64>| n.map(|n| n as f64);
        at_most(
            "--max-connect-failures",
            whole(bounds.max_connect_failures),
            figure("connect failures"),
        );
        at_most(
            "--max-ping-loss",
            whole(bounds.max_ping_loss),
            figure("ping loss"),
        );
        at_most(
            "--max-connect-p99-ms",
            bounds.max_connect_p99_ms,
            figure("connect p99"),
        );
        at_most(
            "--max-dns-failures",
            whole(bounds.max_dns_failures),
            figure("dns failures"),
        );
        at_most("--max-dns-p99-ms", bounds.max_dns_p99_ms, figure("dns p99"));
        at_most(
            "--max-http-errors",
            whole(bounds.max_http_errors),
            figure("http errors"),
        );
        at_most(
            "--max-http-p99-ms",
            bounds.max_http_p99_ms,
            figure("http p99"),
        );
        self.passed = checks.iter().all(|c| c.ok) && self.failures().is_empty();
        self.bounds = checks;
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "nettune check {} → {}{}{}\n\n",
            self.from.spec,
            self.to.spec,
            if self.id.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.id)
            },
            self.to
                .address
                .map(|a| format!(", target {a}"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "{:<24} {:>12}  {:<8} BOUND", "FIGURE", "VALUE", "UNIT");
        for f in self.figures() {
            if f.value.is_none() {
                continue;
            }
            let bound = self
                .bounds
                .iter()
                .find(|b| flag_figure(&b.flag) == Some(f.name))
                .map(|b| {
                    format!(
                        "{} {} {}",
                        b.flag,
                        number(Some(b.limit)),
                        if b.ok { "ok" } else { "FAILED" }
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<24} {:>12}  {:<8} {bound}",
                f.name,
                number(f.value),
                f.unit
            );
        }
        for (test, why) in self.failures() {
            let _ = writeln!(out, "{test:<24} {:>12}  {why}", "FAILED");
        }
        for b in self.bounds.iter().filter(|b| !b.ok && b.value.is_none()) {
            let _ = writeln!(out, "{:<24} {:>12}  the test did not run", b.flag, "FAILED");
        }
        let _ = writeln!(out, "\n{}", if self.passed { "passed" } else { "FAILED" });
        out
    }
}

/// The figure a bound's flag bounds.
fn flag_figure(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "--min-throughput-mbps" => "throughput",
        "--min-http-rate" => "http rate",
        "--max-connect-failures" => "connect failures",
        "--max-connect-p99-ms" => "connect p99",
        "--max-ping-loss" => "ping loss",
        "--max-dns-failures" => "dns failures",
        "--max-dns-p99-ms" => "dns p99",
        "--max-http-errors" => "http errors",
        "--max-http-p99-ms" => "http p99",
        _ => return None,
    })
}

/// A figure with three significant digits or so, `-` when missing.
fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v == v.trunc() && v.abs() < 1e9 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// A difference with its sign.
fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", number(Some(v)))
    } else {
        number(Some(v))
    }
}

/// A tuning change between two runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The sysctl.
    pub sysctl: String,
    /// Where: `node`, the source namespace, or the journal's target.
    pub place: String,
    /// The value at the first run (or the journal's original).
    pub before: Option<String>,
    /// The value at the second run (or the journal's last write).
    pub after: Option<String>,
    /// Unix times of nettune's writes between the two runs, as the journal recorded.
    pub writes: Vec<u64>,
}

/// The tuning changes between `a` and `b`: every sysctl whose value differs
/// between the two runs' readings, with the writes nettune's journal recorded
/// between them — those in the journal as `b` read it at its start and not yet in
/// the journal as `a` read it (exact, where times in whole seconds are not) —
/// and sysctls written in between even where the readings agree (changed and
/// changed back).
pub fn changes(a: &Run, b: &Run) -> Vec<Change> {
    let in_between = |sysctl: &str| -> Vec<u64> {
        let known: Vec<u64> = a
            .journal
            .iter()
            .filter(|e| e.sysctl == sysctl)
            .flat_map(|e| e.writes.iter().copied())
            .collect();
        let mut writes: Vec<u64> = b
            .journal
            .iter()
            .filter(|e| e.sysctl == sysctl)
            .flat_map(|e| e.writes.iter().copied())
            .filter(|t| !known.contains(t) && (*t as f64) >= a.started.floor())
            .collect();
        writes.sort_unstable();
        writes.dedup();
        writes
    };
    let mut out = Vec::new();
    for (place, before, after) in [
        ("node", &a.sysctls.node, &b.sysctls.node),
        ("source", &a.sysctls.source, &b.sysctls.source),
    ] {
        let names: std::collections::BTreeSet<&String> =
            before.keys().chain(after.keys()).collect();
        for name in names {
            let (x, y) = (before.get(name), after.get(name));
            if x != y {
                out.push(Change {
                    sysctl: name.clone(),
                    place: place.into(),
                    before: x.cloned(),
                    after: y.cloned(),
                    writes: in_between(name),
                });
            }
        }
    }
    for entry in &b.journal {
        let writes = in_between(&entry.sysctl);
        if !writes.is_empty() && !out.iter().any(|c| c.sysctl == entry.sysctl) {
            let words = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
            out.push(Change {
                sysctl: entry.sysctl.clone(),
                place: entry.target.to_string(),
                before: Some(words(&entry.original)),
                after: entry.last_written.as_deref().map(words),
                writes,
            });
        }
    }
    out
}

/// Two runs side by side, the change of each figure, and the tuning changes.
pub fn comparison(a: &Run, b: &Run, changes: &[Change]) -> String {
    let mut out = format!(
        "{:<24} {:>18} {:>18} {:>15}  UNIT\n",
        "FIGURE", a.id, b.id, "CHANGE"
    );
    for (x, y) in a.figures().into_iter().zip(b.figures()) {
        if x.value.is_none() && y.value.is_none() {
            continue;
        }
        let change = match (x.value, y.value) {
            (Some(p), Some(q)) => {
                let better = match x.better {
                    Better::Higher => q > p,
                    Better::Lower => q < p,
                };
                let mark = if q == p {
                    ""
                } else if better {
                    " better"
                } else {
                    " worse"
                };
                // From nothing (no failures before), a percentage means nothing: the difference.
                if p == 0.0 {
                    format!("{}{mark}", signed(q - p))
                } else {
                    format!("{:+.1}%{mark}", (q - p) / p.abs() * 100.0)
                }
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:>18} {:>18} {change:>15}  {}",
            x.name,
            number(x.value),
            number(y.value),
            x.unit
        );
    }
    let _ = writeln!(
        out,
        "\nfrom {} → {} and {} → {}",
        a.from.spec, a.to.spec, b.from.spec, b.to.spec
    );
    if changes.is_empty() {
        out.push_str("\nno tuning changes between the two runs\n");
    } else {
        out.push_str("\ntuning changes between the two runs:\n");
        for c in changes {
            let journal = if c.writes.is_empty() {
                "not written by nettune".to_owned()
            } else {
                format!(
                    "written by nettune at {}",
                    c.writes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let _ = writeln!(
                out,
                "  {} ({}): {} → {}  ({journal})",
                c.sysctl,
                c.place,
                c.before.as_deref().unwrap_or("-"),
                c.after.as_deref().unwrap_or("-"),
            );
        }
    }
    out
}
