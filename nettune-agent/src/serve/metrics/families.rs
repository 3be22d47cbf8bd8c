//! Metric families under construction: typed series in, `prometheus` protobuf
//! families out, in the order of [`catalog::ALL`].

use std::collections::{BTreeMap, HashMap};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric as Series, MetricFamily, MetricType,
};

use super::{
    catalog::{self, Kind, Metric},
    labels::Labels,
};
use crate::model::conversations::LatencyHistogram;

/// The families of one rendering.
pub(super) struct Families {
    families: Vec<MetricFamily>,
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
        let families = catalog::ALL
            .iter()
            .map(|m| {
                let mut family = MetricFamily::default();
                family.set_name(m.name.to_owned());
                family.set_help(m.help.to_owned());
                family.set_field_type(match m.kind {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                    Kind::Histogram => MetricType::HISTOGRAM,
                });
                family
            })
            .collect();
        let index = catalog::ALL
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name, i))
            .collect();
        Self {
            families,
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
        self.push(at, labels.into_values(), value);
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
        let mut series = Self::labelled(at, labels.into_values());
        series.set_histogram(histogram(h));
        self.families[at].mut_metric().push(series);
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

    /// A series of family `at` with these label values and no value yet.
    fn labelled(at: usize, values: Vec<String>) -> Series {
        let desc = &catalog::ALL[at];
        let mut series = Series::default();
        series.set_label(
            desc.labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value(value);
                    pair
                })
                .collect(),
        );
        series
    }

    fn push(&mut self, at: usize, values: Vec<String>, value: f64) {
        let mut series = Self::labelled(at, values);
        match catalog::ALL[at].kind {
            Kind::Counter => {
                let mut c = Counter::default();
                c.set_value(value);
                series.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = Gauge::default();
                g.set_value(value);
                series.set_gauge(g);
            }
            // Declared a histogram and given a number: a bug the catalog's
            // tests catch; rendering goes on without the series.
            Kind::Histogram => {
                debug_assert!(false, "{} is a histogram", catalog::ALL[at].name);
                return;
            }
        }
        self.families[at].mut_metric().push(series);
    }

    /// The families, summed series included; summed counters through `kept`, so
    /// that none decreases while the agent runs.
    pub fn finish(mut self, kept: &mut FoldedCounters) -> Vec<MetricFamily> {
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
            self.push(at, values, value);
        }
        for ((at, values), h) in std::mem::take(&mut self.histogram_sums) {
            let mut series = Self::labelled(at, values);
            series.set_histogram(histogram(&h));
            self.families[at].mut_metric().push(series);
        }
        self.families
    }
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

/// `h` as the exposition's histogram (the +Inf bucket is the encoder's: the count).
fn histogram(h: &LatencyHistogram) -> Histogram {
    let mut out = Histogram::default();
    out.set_sample_count(h.count);
    out.set_sample_sum(h.sum_seconds);
    out.set_bucket(
        h.buckets
            .iter()
            .map(|(bound, count)| {
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(*count);
                b
            })
            .collect(),
    );
    out
}
