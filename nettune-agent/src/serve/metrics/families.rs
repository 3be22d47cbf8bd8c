//! Metric families under construction: typed series in, the Prometheus text
//! exposition out, in the order of [`catalog::ALL`].
//!
//! Each series is written as text the moment it is added, into its family's
//! buffer. Building the `prometheus` crate's protobuf families first (a struct
//! and two owned strings per label of every series) and encoding them after was
//! most of a rendering's time at hundreds of pods; the output is the same text
//! its encoder writes (values formatted alike, label values escaped alike).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use super::{
    catalog::{self, Kind, Metric},
    labels::Labels,
};
use crate::model::conversations::LatencyHistogram;

/// The families of one rendering.
pub(super) struct Families {
    /// Each declared metric's series, as exposition lines.
    bodies: Vec<String>,
    /// Metric name → its family's position.
    index: HashMap<&'static str, usize>,
    /// Series summed over several sources (workloads folded under `_other`),
    /// by family and label values.
    sums: BTreeMap<(usize, Vec<String>), f64>,
    /// The same, for histograms.
    histogram_sums: BTreeMap<(usize, Vec<String>), LatencyHistogram>,
}

impl Families {
    /// One empty family per declared metric.
    pub fn new() -> Self {
        let index = catalog::ALL
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name, i))
            .collect();
        Self {
            bodies: vec![String::new(); catalog::ALL.len()],
            index,
            sums: BTreeMap::new(),
            histogram_sums: BTreeMap::new(),
        }
    }

    fn position<L: Labels>(&self, metric: &Metric<L>) -> usize {
        // Every `Metric` is declared by `catalog!`, which also lists it in ALL.
        self.index[metric.name]
    }

    /// Adds one series.
    pub fn add<L: Labels>(&mut self, metric: &Metric<L>, labels: L, value: f64) {
        let at = self.position(metric);
        self.push(at, &labels.into_values(), value);
    }

    /// Adds `value` to the series with these labels, which several sources share
    /// (rendered once, as their sum, by [`Self::finish`]).
    pub fn add_to_sum<L: Labels>(&mut self, metric: &Metric<L>, labels: L, value: f64) {
        let at = self.position(metric);
        *self.sums.entry((at, labels.into_values())).or_default() += value;
    }

    /// Adds one histogram series.
    pub fn add_histogram<L: Labels>(
        &mut self,
        metric: &Metric<L>,
        labels: L,
        h: &LatencyHistogram,
    ) {
        let at = self.position(metric);
        self.push_histogram(at, &labels.into_values(), h);
    }

    /// Adds `h` to the histogram with these labels, which several sources share.
    pub fn add_histogram_to_sum<L: Labels>(
        &mut self,
        metric: &Metric<L>,
        labels: L,
        h: &LatencyHistogram,
    ) {
        let at = self.position(metric);
        self.histogram_sums
            .entry((at, labels.into_values()))
            .or_default()
            .add(h);
    }

    fn push(&mut self, at: usize, values: &[String], value: f64) {
        let desc = &catalog::ALL[at];
        // Declared a histogram and given a number: a bug the catalog's tests
        // catch; rendering goes on without the series.
        if desc.kind == Kind::Histogram {
            debug_assert!(false, "{} is a histogram", desc.name);
            return;
        }
        sample(
            &mut self.bodies[at],
            desc.name,
            "",
            desc.labels,
            values,
            None,
            value,
        );
    }

    fn push_histogram(&mut self, at: usize, values: &[String], h: &LatencyHistogram) {
        let desc = &catalog::ALL[at];
        let body = &mut self.bodies[at];
        let mut line = |suffix: &str, le: Option<&str>, value: f64| {
            sample(body, desc.name, suffix, desc.labels, values, le, value);
        };
        for (bound, count) in &h.buckets {
            line("_bucket", Some(&bound.to_string()), *count as f64);
        }
        if !h.buckets.iter().any(|(b, _)| *b == f64::INFINITY) {
            line("_bucket", Some("+Inf"), h.count as f64);
        }
        line("_sum", None, h.sum_seconds);
        line("_count", None, h.count as f64);
    }

    /// The exposition of every family with series, summed series included;
    /// summed counters through `kept`, so that none decreases while the agent
    /// runs.
    pub fn finish(mut self, kept: &mut FoldedCounters) -> String {
        let mut sums = std::mem::take(&mut self.sums);
        for (key, value) in &mut sums {
            if catalog::ALL[key.0].kind == Kind::Counter {
                *value = kept.next(key, *value);
            }
        }
        // A counter whose every source went keeps its last value.
        for (key, k) in &kept.0 {
            sums.entry(key.clone()).or_insert(k.last);
        }
        for ((at, values), value) in sums {
            self.push(at, &values, value);
        }
        for ((at, values), h) in std::mem::take(&mut self.histogram_sums) {
            self.push_histogram(at, &values, &h);
        }
        let size = self.bodies.iter().map(String::len).sum::<usize>();
        let mut out = String::with_capacity(size + 256 * catalog::ALL.len());
        for (desc, body) in catalog::ALL.iter().zip(&self.bodies) {
            if body.is_empty() {
                continue;
            }
            let kind = match desc.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let help = escape(desc.help, false);
            let _ = write!(
                out,
                "# HELP {0} {help}\n# TYPE {0} {kind}\n{body}",
                desc.name
            );
        }
        out
    }
}

/// Writes one exposition line: `name{labels} value`, with `le` last if given.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    names: &[&str],
    values: &[String],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let extra = le.map(|le| ("le", le));
    let mut separator = '{';
    for (label, v) in names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .chain(extra)
    {
        out.push(separator);
        out.push_str(label);
        out.push_str("=\"");
        out.push_str(&escape(v, true));
        out.push('"');
        separator = ',';
    }
    if separator == ',' {
        out.push('}');
    }
    // `Display` of f64, as the text encoder writes values.
    let _ = writeln!(out, " {value}");
}

/// `v` escaped for the exposition: backslash and newline always, the double
/// quote inside label values.
fn escape(v: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '\n']) && !(quote && v.contains('"')) {
        return v.into();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.into()
}

/// Every summed counter (`_other`) rendered so far: its last value and what
/// sources that left it took with them. A folded pod that goes would otherwise
/// lower the sum, which Prometheus reads as a counter reset (a false rate spike).
#[derive(Debug, Default)]
pub(super) struct FoldedCounters(BTreeMap<(usize, Vec<String>), Kept>);

#[derive(Debug, Default)]
struct Kept {
    last: f64,
    carry: f64,
}

impl FoldedCounters {
    /// The value to render for the summed counter `key` whose sources now sum
    /// to `sum`: never below the last one; a drop is taken as sources leaving
    /// (their counts are carried from then on).
    fn next(&mut self, key: &(usize, Vec<String>), sum: f64) -> f64 {
        let k = self.0.entry(key.clone()).or_default();
        let mut value = sum + k.carry;
        if value < k.last {
            k.carry += k.last - value;
            value = k.last;
        }
        k.last = value;
        value
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{
        Encoder as _, TextEncoder,
        proto::{Gauge, LabelPair, Metric as Series, MetricFamily, MetricType},
    };

    use super::*;

    /// The line the `prometheus` crate's encoder writes for one gauge.
    fn encoded(labels: &[(&str, &str)], value: f64) -> String {
        let mut series = Series::default();
        series.set_label(
            labels
                .iter()
                .map(|(n, v)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*n).to_owned());
                    pair.set_value((*v).to_owned());
                    pair
                })
                .collect(),
        );
        let mut g = Gauge::default();
        g.set_value(value);
        series.set_gauge(g);
        let mut family = MetricFamily::default();
        family.set_name("m".into());
        family.set_help("h".into());
        family.set_field_type(MetricType::GAUGE);
        family.mut_metric().push(series);
        let mut buf = Vec::new();
        TextEncoder::new().encode(&[family], &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        text.lines().last().unwrap().to_owned() + "\n"
    }

    #[test]
    fn lines_are_what_the_prometheus_encoder_writes() {
        let awkward = "a\"b\\c\nd é";
        for (labels, value) in [
            (vec![], 0.0),
            (vec![("pod", "web")], 1.5),
            (vec![("pod", awkward), ("port", "53")], 12_345_678_901.0),
            (vec![("pod", "")], f64::INFINITY),
            (vec![("pod", "x")], -0.25),
        ] {
            let names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
            let values: Vec<String> = labels.iter().map(|(_, v)| (*v).to_owned()).collect();
            let mut ours = String::new();
            sample(&mut ours, "m", "", &names, &values, None, value);
            assert_eq!(ours, encoded(&labels, value), "{labels:?} {value}");
        }
    }
}
