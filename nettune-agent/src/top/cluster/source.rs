//! Where the cluster view's figures come from: a thread that asks Prometheus
//! what the screen shows (the nodes, or one node's pods and listeners) and
//! sends back plain rows with what the queries cost, or why there are none. The
//! terminal never waits on Prometheus: a slow one only makes figures late.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{
    prometheus::{Answer, Prometheus, QueryError},
    queries::{self, ListenerRow, Row},
};

/// How long one query may take before it counts as failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a screen shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Focus {
    /// Every node.
    Nodes,
    /// One node's pods and listeners.
    Node(String),
}

/// What the queries of one refresh cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cost {
    /// Queries sent.
    pub queries: usize,
    /// Their time, end to end.
    pub elapsed: Duration,
    /// Samples Prometheus read for them, when it says.
    pub samples_read: Option<u64>,
    /// Series in the answers.
    pub series: usize,
}

/// The answer to one refresh.
#[derive(Clone, Debug)]
pub struct Figures {
    /// What was asked.
    pub focus: Focus,
    /// The rows: nodes, or the node's pods.
    pub rows: Vec<Row>,
    /// The node's listeners (inside a node).
    pub listeners: Vec<ListenerRow>,
    /// What it cost (what was spent before an error too).
    pub cost: Cost,
    /// Why the figures are missing.
    pub error: Option<String>,
}

/// A thread asking Prometheus; at most one request in flight.
pub struct ClusterSource {
    requests: mpsc::Sender<Focus>,
    answers: mpsc::Receiver<Figures>,
    in_flight: bool,
}

impl ClusterSource {
    /// Starts asking `prometheus`, grouping nodes by `node_label`.
    pub fn start(prometheus: Prometheus, node_label: String) -> Self {
        let (requests, asked) = mpsc::channel::<Focus>();
        let (answer, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for focus in asked {
                if answer.send(fetch(&prometheus, &node_label, focus)).is_err() {
                    return;
                }
            }
        });
        Self {
            requests,
            answers,
            in_flight: false,
        }
    }

    /// Asks for `focus` unless a request is still out.
    pub fn request(&mut self, focus: &Focus) {
        if !self.in_flight && self.requests.send(focus.clone()).is_ok() {
            self.in_flight = true;
        }
    }

    /// An answer, waiting at most `wait`.
    pub fn next(&mut self, wait: Duration) -> Option<Figures> {
        let figures = self.answers.recv_timeout(wait).ok()?;
        self.in_flight = false;
        Some(figures)
    }
}

/// Runs the queries of `focus`.
fn fetch(prometheus: &Prometheus, node_label: &str, focus: Focus) -> Figures {
    let mut cost = Cost::default();
    let started = Instant::now();
    let mut ask = |promql: &str| -> Result<Answer, QueryError> {
        cost.queries += 1;
        let answer = prometheus.query(promql, QUERY_TIMEOUT)?;
        cost.series += answer.samples.len();
        if let Some(n) = answer.samples_read {
            *cost.samples_read.get_or_insert(0) += n;
        }
        Ok(answer)
    };
    let result = match &focus {
        Focus::Nodes => {
            ask(&queries::nodes(node_label)).map(|a| (queries::node_rows(&a, node_label), vec![]))
        }
        Focus::Node(node) => {
            let [pods, listeners] = queries::node(node_label, node);
            ask(&pods).and_then(|p| {
                let l = ask(&listeners)?;
                Ok((queries::pod_rows(&p), queries::listener_rows(&l)))
            })
        }
    };
    cost.elapsed = started.elapsed();
    let (rows, listeners, error) = match result {
        Ok((rows, listeners)) => (rows, listeners, None),
        Err(e) => (vec![], vec![], Some(e.to_string())),
    };
    Figures {
        focus,
        rows,
        listeners,
        cost,
        error,
    }
}
