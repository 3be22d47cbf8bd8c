//! What the cluster view asks Prometheus, and the rows its answers make. Every
//! screen is one or two aggregations: each column a `sum by` the node label (or,
//! inside a node, by pod), tagged with `nettune_column` by `label_replace` and
//! joined with `or`, so the nodes of a whole cluster are one query whose answer
//! has a sample per node and column, never a series per pod.

use std::collections::BTreeMap;

use super::prometheus::{Answer, Sample};

/// The label that names a column in the combined answers.
pub const COLUMN_LABEL: &str = "nettune_column";

/// The listeners a node's screen lists at most (those overflowing most).
pub const LISTENERS: usize = 100;

/// A column of the nodes and pods tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    /// The node's or pod's name (sorts by name).
    Name,
    /// Workloads the agent watches (nodes only).
    Pods,
    /// Bytes received by pods per second.
    Rx,
    /// Bytes sent by pods per second.
    Tx,
    /// Drops per second.
    Drops,
    /// Retransmitted segments per second.
    Retransmits,
    /// Listen-queue overflows per second.
    Overflows,
    /// DNS queries unanswered or failed (not NOERROR, not NXDOMAIN) per second.
    DnsFailures,
    /// Sysctl changes applied in the last hour (nodes only).
    Tuning,
}

impl Column {
    /// The nodes table's columns, in order.
    pub const NODES: [Self; 9] = [
        Self::Name,
        Self::Pods,
        Self::Rx,
        Self::Tx,
        Self::Drops,
        Self::Retransmits,
        Self::Overflows,
        Self::DnsFailures,
        Self::Tuning,
    ];
    /// The pods table's columns, in order.
    pub const PODS: [Self; 7] = [
        Self::Name,
        Self::Rx,
        Self::Tx,
        Self::Drops,
        Self::Retransmits,
        Self::Overflows,
        Self::DnsFailures,
    ];

    /// Its tag in answers.
    fn key(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Pods => "pods",
            Self::Rx => "rx",
            Self::Tx => "tx",
            Self::Drops => "drops",
            Self::Retransmits => "retransmits",
            Self::Overflows => "overflows",
            Self::DnsFailures => "dns_failures",
            Self::Tuning => "tuning",
        }
    }

    /// The expression summed for this column, `sel` the matchers every series
    /// must have (empty, or e.g. `node="a"`).
    fn expression(self, sel: &str) -> Option<String> {
        let m = |extra: &str| selector(&[sel, extra]);
        Some(match self {
            Self::Name => return None,
            Self::Pods => format!("nettune_workloads{}", m("")),
            Self::Rx => format!("rate(nettune_pod_receive_bytes_total{}[1m])", m("")),
            Self::Tx => format!("rate(nettune_pod_transmit_bytes_total{}[1m])", m("")),
            Self::Drops => format!("rate(nettune_drops_total{}[1m])", m("")),
            Self::Retransmits => {
                format!("rate(nettune_tcp_retransmit_segments_total{}[1m])", m(""))
            }
            Self::Overflows => format!("rate(nettune_listen_overflows_total{}[1m])", m("")),
            Self::DnsFailures => format!(
                "(rate(nettune_dns_unanswered_total{}[1m]) or \
                 rate(nettune_dns_responses_total{}[1m]))",
                m(""),
                m(r#"rcode!~"NOERROR|NXDOMAIN""#)
            ),
            Self::Tuning => format!(
                "increase(nettune_tuning_decisions_total{}[1h])",
                m(r#"result="applied""#)
            ),
        })
    }
}

/// A row of the nodes or pods table: its name and a value per column (`None`:
/// no series).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// The node's name, or the pod's `namespace/name` (`name` outside one).
    pub name: String,
    /// The pod's Kubernetes namespace and name (pods only).
    pub pod: Option<(String, String)>,
    /// Values by column.
    pub values: BTreeMap<Column, f64>,
    /// Drops per second by kernel reason, those above zero.
    pub reasons: BTreeMap<String, f64>,
}

impl Row {
    /// The value of `column` (0 without a series).
    pub fn value(&self, column: Column) -> f64 {
        self.values.get(&column).copied().unwrap_or(0.0)
    }
}

/// A listening socket of a node's pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListenerRow {
    /// The pod's `namespace/name`.
    pub pod: String,
    /// The port.
    pub port: String,
    /// The process that listened.
    pub process: String,
    /// Connections waiting to be accepted.
    pub queue: Option<f64>,
    /// The accept queue's limit.
    pub limit: Option<f64>,
    /// Overflows per second.
    pub overflows: f64,
}

/// `{a,b}` of the non-empty matchers, or nothing.
fn selector(matchers: &[&str]) -> String {
    let parts: Vec<&str> = matchers.iter().copied().filter(|m| !m.is_empty()).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// `label="value"`, the value escaped as PromQL strings are.
pub fn matcher(label: &str, value: &str) -> String {
    let escaped = value.replace('\\', r"\\").replace('"', "\\\"");
    format!("{label}=\"{escaped}\"")
}

/// `columns` summed by `by`, each tagged, joined with `or`; and the drops by
/// reason (above zero) the same way.
fn combined(columns: &[Column], by: &str, sel: &str) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .filter_map(|c| {
            let e = c.expression(sel)?;
            Some(format!(
                "label_replace(sum by ({by}) ({e}), \"{COLUMN_LABEL}\", \"{}\", \"\", \"\")",
                c.key()
            ))
        })
        .collect();
    parts.push(format!(
        "label_replace(sum by ({by}, reason) (rate(nettune_drops_total{}[1m])) > 0, \
         \"{COLUMN_LABEL}\", \"reason\", \"\", \"\")",
        selector(&[sel])
    ));
    parts.join(" or ")
}

/// The nodes table: one query for every node, grouped by `node_label`.
pub fn nodes(node_label: &str) -> String {
    combined(&Column::NODES, node_label, "")
}

/// Inside `node`: its pods (one query) and its listeners (another, the
/// [`LISTENERS`] overflowing most and every queue's length and limit).
pub fn node(node_label: &str, node: &str) -> [String; 2] {
    let sel = matcher(node_label, node);
    let by = "namespace, pod, port, process";
    let m = selector(&[&sel]);
    let listeners = format!(
        "label_replace(topk({LISTENERS}, sum by ({by}) \
         (rate(nettune_listen_socket_overflows_total{m}[1m]))), \"{COLUMN_LABEL}\", \"overflows\", \"\", \"\") \
         or label_replace(max by ({by}) (nettune_listen_queue_length{m}), \"{COLUMN_LABEL}\", \"queue\", \"\", \"\") \
         or label_replace(max by ({by}) (nettune_listen_backlog_limit{m}), \"{COLUMN_LABEL}\", \"limit\", \"\", \"\")"
    );
    [combined(&Column::PODS, "namespace, pod", &sel), listeners]
}

fn label<'a>(s: &'a Sample, name: &str) -> &'a str {
    s.labels.get(name).map_or("", String::as_str)
}

/// Rows from a combined answer, named by `name` (the node label's value, or the
/// pod).
fn rows(answer: &Answer, name: impl Fn(&Sample) -> (String, Option<(String, String)>)) -> Vec<Row> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for s in &answer.samples {
        let (key, pod) = name(s);
        let row = rows.entry(key.clone()).or_insert_with(|| Row {
            name: key,
            pod,
            ..Row::default()
        });
        let tag = label(s, COLUMN_LABEL);
        if tag == "reason" {
            row.reasons.insert(label(s, "reason").to_owned(), s.value);
        } else if let Some(c) = Column::NODES.iter().find(|c| c.key() == tag) {
            row.values.insert(*c, s.value);
        }
    }
    rows.into_values().collect()
}

/// The nodes table from the answer to [`nodes`].
pub fn node_rows(answer: &Answer, node_label: &str) -> Vec<Row> {
    rows(answer, |s| (label(s, node_label).to_owned(), None))
}

/// `namespace/pod`, or `pod` outside a Kubernetes namespace.
fn pod_name(namespace: &str, pod: &str) -> String {
    if namespace.is_empty() {
        pod.to_owned()
    } else {
        format!("{namespace}/{pod}")
    }
}

/// The pods table from the first answer of [`node`].
pub fn pod_rows(answer: &Answer) -> Vec<Row> {
    rows(answer, |s| {
        let (namespace, pod) = (label(s, "namespace"), label(s, "pod"));
        (
            pod_name(namespace, pod),
            Some((namespace.to_owned(), pod.to_owned())),
        )
    })
}

/// The listeners from the second answer of [`node`], overflowing most first,
/// then the fullest.
pub fn listener_rows(answer: &Answer) -> Vec<ListenerRow> {
    let mut rows: BTreeMap<(String, String, String), ListenerRow> = BTreeMap::new();
    for s in &answer.samples {
        let pod = pod_name(label(s, "namespace"), label(s, "pod"));
        let (port, process) = (label(s, "port").to_owned(), label(s, "process").to_owned());
        let row = rows
            .entry((pod.clone(), port.clone(), process.clone()))
            .or_insert_with(|| ListenerRow {
                pod,
                port,
                process,
                ..ListenerRow::default()
            });
        match label(s, COLUMN_LABEL) {
            "overflows" => row.overflows = s.value,
            "queue" => row.queue = Some(s.value),
            "limit" => row.limit = Some(s.value),
            _ => {}
        }
    }
    let fill = |l: &ListenerRow| l.queue.unwrap_or(0.0) / l.limit.unwrap_or(1.0).max(1.0);
    let mut rows: Vec<ListenerRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        b.overflows
            .total_cmp(&a.overflows)
            .then(fill(b).total_cmp(&fill(a)))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::cluster::prometheus::parse;

    #[test]
    fn the_nodes_query_is_one_aggregation_per_column_joined() {
        let q = nodes("node");
        assert!(q.starts_with(
            "label_replace(sum by (node) (nettune_workloads), \"nettune_column\", \"pods\", \"\", \"\") or "
        ), "{q}");
        assert!(
            q.contains(
                "label_replace(sum by (node) ((rate(nettune_dns_unanswered_total[1m]) or \
             rate(nettune_dns_responses_total{rcode!~\"NOERROR|NXDOMAIN\"}[1m]))), \
             \"nettune_column\", \"dns_failures\", \"\", \"\")"
            ),
            "{q}"
        );
        assert!(q.contains("increase(nettune_tuning_decisions_total{result=\"applied\"}[1h])"));
        assert!(
            q.ends_with(
                "label_replace(sum by (node, reason) (rate(nettune_drops_total[1m])) > 0, \
             \"nettune_column\", \"reason\", \"\", \"\")"
            ),
            "{q}"
        );
        assert_eq!(
            q.matches(" or ").count(),
            9,
            "8 columns, reasons, and the DNS `or`"
        );
    }

    #[test]
    fn a_node_s_queries_select_it_with_its_name_escaped() {
        let [pods, listeners] = node("kubernetes_node", r#"a"b\c"#);
        assert!(
            pods.contains(r#"rate(nettune_drops_total{kubernetes_node="a\"b\\c"}[1m])"#),
            "{pods}"
        );
        assert!(
            pods.contains(r#"{kubernetes_node="a\"b\\c",rcode!~"NOERROR|NXDOMAIN"}"#),
            "{pods}"
        );
        assert!(!pods.contains("nettune_workloads") && !pods.contains("tuning_decisions"));
        assert!(
            listeners.contains("topk(100, sum by (namespace, pod, port, process)"),
            "{listeners}"
        );
    }

    #[test]
    fn answers_fold_into_rows_with_a_value_per_column_and_reasons() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"nettune_column":"drops","node":"node-1"},"value":[1,"40.5"]},
            {"metric":{"nettune_column":"drops","node":"node-2"},"value":[1,"0.5"]},
            {"metric":{"nettune_column":"pods","node":"node-1"},"value":[1,"3"]},
            {"metric":{"nettune_column":"reason","node":"node-1","reason":"NETFILTER_DROP"},"value":[1,"40"]}]}}"#;
        let rows = node_rows(&parse(200, body.as_bytes()).unwrap(), "node");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "node-1");
        assert_eq!(rows[0].value(Column::Drops), 40.5);
        assert_eq!(rows[0].value(Column::Pods), 3.0);
        assert_eq!(rows[0].reasons["NETFILTER_DROP"], 40.0);
        assert_eq!(rows[1].values.get(&Column::Pods), None);

        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"nettune_column":"drops","namespace":"shop","pod":"web-1"},"value":[1,"2"]},
            {"metric":{"nettune_column":"drops","namespace":"","pod":"node"},"value":[1,"1"]}]}}"#;
        let pods = pod_rows(&parse(200, body.as_bytes()).unwrap());
        let names: Vec<&str> = pods.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["node", "shop/web-1"]);
        assert_eq!(pods[1].pod, Some(("shop".into(), "web-1".into())));

        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"nettune_column":"queue","namespace":"","pod":"node","port":"22","process":"sshd"},"value":[1,"0"]},
            {"metric":{"nettune_column":"limit","namespace":"","pod":"node","port":"22","process":"sshd"},"value":[1,"128"]},
            {"metric":{"nettune_column":"queue","namespace":"shop","pod":"web-1","port":"80","process":"nginx"},"value":[1,"9"]},
            {"metric":{"nettune_column":"limit","namespace":"shop","pod":"web-1","port":"80","process":"nginx"},"value":[1,"8"]},
            {"metric":{"nettune_column":"overflows","namespace":"shop","pod":"web-1","port":"80","process":"nginx"},"value":[1,"3.5"]}]}}"#;
        let listeners = listener_rows(&parse(200, body.as_bytes()).unwrap());
        assert_eq!(listeners[0].pod, "shop/web-1");
        assert_eq!(
            (listeners[0].queue, listeners[0].limit),
            (Some(9.0), Some(8.0))
        );
        assert_eq!(listeners[0].overflows, 3.5);
        assert_eq!(listeners[1].port, "22");
    }
}
