//! The state of `nettune top`: the latest Snapshot, a minute of history per
//! workload, and what the user chose (sort, filter, selection, pane, pause).
//! No drawing and no I/O here: [`App::handle`] maps keys to state changes.

use std::collections::{BTreeMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::table::{Common, Controls, cycle};

use crate::model::{
    snapshot::{Listener, Published, Snapshot, WorkloadFigures},
    tuning::TuningState,
};

/// Columns the workload table can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortColumn {
    /// By pod name.
    Pod,
    /// By bytes received per second.
    Rx,
    /// By bytes sent per second.
    Tx,
    /// By drops per second.
    Drops,
    /// By retransmitted segments per second.
    Retransmits,
    /// By listen overflows per second.
    Overflows,
    /// By TCP handshakes refused or timed out per second.
    ConnectFailures,
    /// By DNS queries unanswered per second.
    DnsUnanswered,
}

impl SortColumn {
    const ALL: [Self; 8] = [
        Self::Pod,
        Self::Rx,
        Self::Tx,
        Self::Drops,
        Self::Retransmits,
        Self::Overflows,
        Self::ConnectFailures,
        Self::DnsUnanswered,
    ];

    fn shifted(self, by: isize) -> Self {
        cycle(&Self::ALL, self, by)
    }

    /// The column's sort key for `w` (numbers; pods sort by name separately).
    fn key(self, w: &WorkloadFigures) -> f64 {
        let iface = w.interface.as_ref();
        match self {
            Self::Pod => 0.0,
            Self::Rx => iface.map_or(0.0, |i| i.rx_bytes.per_second),
            Self::Tx => iface.map_or(0.0, |i| i.tx_bytes.per_second),
            Self::Drops => w.drops.per_second,
            Self::Retransmits => w.retransmit_segments.per_second,
            Self::Overflows => w.listen_overflows.per_second,
            Self::ConnectFailures => w.conversations.as_ref().map_or(0.0, |c| {
                c.connects.refused.per_second + c.connects.timed_out.per_second
            }),
            Self::DnsUnanswered => w
                .conversations
                .as_ref()
                .map_or(0.0, |c| c.dns.unanswered.per_second),
        }
    }
}

/// What the main table lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// One row per workload (network namespace).
    Workloads,
    /// One row per listening socket.
    Listeners,
    /// One row per workload that asked DNS: queries, answers, failures, latency.
    Dns,
}

/// A row of the listeners view.
#[derive(Clone, Copy, Debug)]
pub struct ListenerRow<'a> {
    /// The workload it belongs to.
    pub workload: &'a WorkloadFigures,
    /// The socket.
    pub listener: &'a Listener,
}

/// Which pane the arrow keys move in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    /// The workload table.
    Workloads,
    /// The tuner's decisions.
    Tuning,
}

/// Per-workload history for sparklines (one point per refresh, a minute or so).
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Drops per second, in hundredths.
    pub drops: VecDeque<u64>,
    /// Retransmitted segments per second, in hundredths.
    pub retransmits: VecDeque<u64>,
}

const HISTORY: usize = 60;

/// Everything the UI shows and the user chose.
pub struct App {
    /// The latest Snapshot.
    pub snapshot: Option<Snapshot>,
    /// The tuner's state beside it (absent without a tuner).
    pub tuning: Option<TuningState>,
    /// A minute of rates per namespace inode, for the sparklines.
    pub history: BTreeMap<u32, History>,
    /// The column rows are sorted by.
    pub sort: SortColumn,
    /// Order, filter (pod, namespace, process, port), selection, pause, help.
    pub table: Controls,
    /// The pane the arrow keys move in.
    pub pane: Pane,
    /// What the main table lists.
    pub view: View,
    /// Lines scrolled in the tuning pane.
    pub tuning_scroll: usize,
    /// Where the figures come from (embedded agent or a URL).
    pub source: String,
    /// The last error getting a Snapshot, shown in the footer.
    pub error: Option<String>,
}

/// What a key asks the caller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Carry on.
    None,
    /// Leave `top`.
    Quit,
    /// Fetch figures now (what the screen shows changed).
    Refresh,
}

impl App {
    /// A view of `source` with nothing received yet.
    pub fn new(source: String) -> Self {
        Self {
            snapshot: None,
            tuning: None,
            history: BTreeMap::new(),
            sort: SortColumn::Drops,
            table: Controls::default(),
            pane: Pane::Workloads,
            view: View::Workloads,
            tuning_scroll: 0,
            source,
            error: None,
        }
    }

    /// Takes a newly published tick (ignored while paused) and extends the
    /// history.
    pub fn update(&mut self, published: Published) {
        if self.table.paused {
            return;
        }
        let Published {
            snapshot, tuning, ..
        } = published;
        self.tuning = tuning;
        for w in &snapshot.workloads {
            let h = self.history.entry(w.netns).or_default();
            // Sparklines take integers: keep hundredths of a unit per second.
            push(&mut h.drops, (w.drops.per_second * 100.0) as u64);
            push(
                &mut h.retransmits,
                (w.retransmit_segments.per_second * 100.0) as u64,
            );
        }
        let alive: Vec<u32> = snapshot.workloads.iter().map(|w| w.netns).collect();
        self.history.retain(|k, _| alive.contains(k));
        self.snapshot = Some(snapshot);
        self.error = None;
        self.clamp_selection();
    }

    /// The workloads shown: filtered by text, sorted by the chosen column.
    pub fn rows(&self) -> Vec<&WorkloadFigures> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let mut rows: Vec<&WorkloadFigures> = s
            .workloads
            .iter()
            .filter(|w| {
                self.table.matches([
                    w.workload.display_name().as_str(),
                    w.process.as_deref().unwrap_or(""),
                ])
            })
            .collect();
        rows.sort_by(|a, b| {
            let order = if self.sort == SortColumn::Pod {
                a.workload.display_name().cmp(&b.workload.display_name())
            } else {
                self.sort.key(a).total_cmp(&self.sort.key(b))
            };
            self.table
                .ordered(order)
                .then_with(|| a.workload.display_name().cmp(&b.workload.display_name()))
        });
        rows
    }

    /// The listening sockets shown: filtered by text (pod, namespace, process,
    /// port), those overflowing most first, then the fullest queues.
    pub fn listener_rows(&self) -> Vec<ListenerRow<'_>> {
        let Some(s) = &self.snapshot else {
            return Vec::new();
        };
        let mut rows: Vec<ListenerRow<'_>> = s
            .listeners
            .iter()
            .filter_map(|listener| {
                Some(ListenerRow {
                    workload: s.workload(listener.netns)?,
                    listener,
                })
            })
            .filter(|r| {
                let w = &r.workload.workload;
                self.table.matches([
                    w.pod.as_str(),
                    w.namespace.as_str(),
                    r.listener.port.to_string().as_str(),
                    r.listener.process.as_deref().unwrap_or(""),
                ])
            })
            .collect();
        let fill = |l: &Listener| f64::from(l.queue) / f64::from(l.limit.max(1));
        rows.sort_by(|a, b| {
            let (x, y) = (a.listener, b.listener);
            y.overflows
                .per_second
                .total_cmp(&x.overflows.per_second)
                .then(fill(y).total_cmp(&fill(x)))
                .then_with(|| a.workload.workload.pod.cmp(&b.workload.workload.pod))
                .then(x.port.cmp(&y.port))
        });
        rows
    }

    /// The workloads that asked DNS, in the table's order (the DNS view).
    pub fn dns_rows(&self) -> Vec<&WorkloadFigures> {
        let mut rows = self.rows();
        rows.retain(|w| {
            w.conversations
                .as_ref()
                .is_some_and(|c| c.dns.queries.total > 0)
        });
        rows
    }

    /// The selected workload, if any (workloads and DNS views).
    pub fn selected_row(&self) -> Option<&WorkloadFigures> {
        match self.view {
            View::Dns => self.dns_rows(),
            _ => self.rows(),
        }
        .get(self.table.selected)
        .copied()
    }

    /// The selected listener, if any (listeners view).
    pub fn selected_listener(&self) -> Option<ListenerRow<'_>> {
        self.listener_rows().get(self.table.selected).copied()
    }

    /// Rows in the current view.
    fn row_count(&self) -> usize {
        match self.view {
            View::Workloads => self.rows().len(),
            View::Listeners => self.listener_rows().len(),
            View::Dns => self.dns_rows().len(),
        }
    }

    fn clamp_selection(&mut self) {
        let n = self.row_count();
        self.table.clamp(n);
    }

    fn move_selection(&mut self, by: isize) {
        match self.pane {
            Pane::Workloads => {
                let n = self.row_count();
                self.table.move_selection(by, n);
            }
            Pane::Tuning => {
                self.tuning_scroll = (self.tuning_scroll as isize + by).max(0) as usize;
            }
        }
    }

    /// Shows `view`, or the workloads if it is already shown.
    fn toggle_view(&mut self, view: View) {
        self.view = if self.view == view {
            View::Workloads
        } else {
            view
        };
        self.table.selected = 0;
    }

    /// Applies one key press.
    pub fn handle(&mut self, key: KeyEvent) -> Action {
        let key = match self.table.handle(key) {
            Common::Quit => return Action::Quit,
            Common::Done => {
                self.clamp_selection();
                return Action::None;
            }
            Common::Sort(by) => {
                self.sort = self.sort.shifted(by);
                return Action::None;
            }
            Common::Move(by) => {
                self.move_selection(by);
                self.clamp_selection();
                return Action::None;
            }
            Common::Other(key) => key,
        };
        match key.code {
            KeyCode::Char('r') => self.history.clear(),
            KeyCode::Char('l') => self.toggle_view(View::Listeners),
            KeyCode::Char('d') => {
                self.toggle_view(View::Dns);
                if self.view == View::Dns {
                    self.sort = SortColumn::DnsUnanswered;
                    self.table.descending = true;
                }
            }
            KeyCode::Tab => {
                self.pane = match self.pane {
                    Pane::Workloads => Pane::Tuning,
                    Pane::Tuning => Pane::Workloads,
                }
            }
            _ => {}
        }
        self.clamp_selection();
        Action::None
    }
}

fn push(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        counter::CounterRate,
        snapshot::{WorkloadFigures, for_tests},
        workload::Workload,
    };
    use ratatui::crossterm::event::KeyModifiers;

    fn snapshot() -> Published {
        let w = |pod: &str, netns, drops: f64, retx: f64| {
            let mut w = WorkloadFigures::new(netns, Workload::pod("default", pod, ""));
            w.drops = CounterRate {
                total: 1,
                per_second: drops,
            };
            w.retransmit_segments = CounterRate {
                total: 1,
                per_second: retx,
            };
            w
        };
        Published {
            snapshot: for_tests(vec![
                w("alpha", 1, 5.0, 1.0),
                w("bravo", 2, 1.0, 9.0),
                w("charlie", 3, 3.0, 0.0),
            ]),
            tuning: None,
            mode_demoted: None,
            kernel_log_records: 0,
            run_netns_unpropagated: false,
            event_collections_suppressed: 0,
            events_received: Default::default(),
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn pods(app: &App) -> Vec<&str> {
        app.rows().iter().map(|w| w.workload.pod.as_str()).collect()
    }

    fn listener(netns: u32, port: u16, queue: u32, limit: u32, overflows: f64) -> Listener {
        Listener {
            netns,
            address: std::net::Ipv4Addr::UNSPECIFIED.into(),
            port,
            inode: u32::from(port),
            process: Some(format!("srv{port}")),
            requested_backlog: None,
            capped_by_somaxconn: None,
            limit,
            queue,
            overflows: CounterRate {
                total: 1,
                per_second: overflows,
            },
            attribution: crate::model::sample::Attribution::AtLimit,
        }
    }

    #[test]
    fn the_listeners_view_puts_the_overflowing_then_the_fullest_first_and_filters_by_port() {
        let mut app = App::new("test".into());
        let mut published = snapshot();
        published.snapshot.listeners = vec![
            listener(1, 80, 1, 128, 0.0),
            listener(2, 8080, 9, 8, 40.0),
            listener(3, 9000, 100, 128, 0.0),
            listener(99, 7, 0, 1, 0.0),
        ];
        app.update(published);
        app.handle(key(KeyCode::Char('l')));
        assert_eq!(app.view, View::Listeners);
        let ports: Vec<u16> = app
            .listener_rows()
            .iter()
            .map(|r| r.listener.port)
            .collect();
        // Port 7's namespace is not a workload any more: not shown.
        assert_eq!(ports, [8080, 9000, 80]);
        app.handle(key(KeyCode::Down));
        assert_eq!(app.selected_listener().map(|r| r.listener.port), Some(9000));
        for c in ['/', '9', '0', '0'] {
            app.handle(key(KeyCode::Char(c)));
        }
        app.handle(key(KeyCode::Enter));
        let ports: Vec<u16> = app
            .listener_rows()
            .iter()
            .map(|r| r.listener.port)
            .collect();
        assert_eq!(ports, [9000]);
        assert_eq!(app.table.selected, 0);
        app.handle(key(KeyCode::Char('l')));
        assert_eq!(app.view, View::Workloads);
    }

    #[test]
    fn sorts_by_drops_then_cycles_columns() {
        let mut app = App::new("test".into());
        app.update(snapshot());
        assert_eq!(pods(&app), ["alpha", "charlie", "bravo"]);
        app.handle(key(KeyCode::Char('s')));
        assert_eq!(app.sort, SortColumn::Retransmits);
        assert_eq!(pods(&app), ["bravo", "alpha", "charlie"]);
        app.handle(key(KeyCode::Char('S')));
        app.handle(key(KeyCode::Char('S')));
        assert_eq!(app.sort, SortColumn::Tx);
        app.handle(key(KeyCode::Char('o')));
        assert!(!app.table.descending);
    }

    #[test]
    fn filter_selection_pause_and_quit() {
        let mut app = App::new("test".into());
        app.update(snapshot());
        for c in ['/', 'r', 'a', 'v'] {
            app.handle(key(KeyCode::Char(c)));
        }
        app.handle(key(KeyCode::Enter));
        assert_eq!(pods(&app), ["bravo"]);
        app.handle(key(KeyCode::Down));
        assert_eq!(app.table.selected, 0);
        app.handle(key(KeyCode::Char('/')));
        app.handle(key(KeyCode::Esc));
        assert_eq!(pods(&app).len(), 3);
        app.handle(key(KeyCode::PageDown));
        assert_eq!(app.selected_row().unwrap().workload.pod, "bravo");
        app.handle(key(KeyCode::Char('p')));
        let mut next = snapshot();
        next.snapshot.workloads.clear();
        app.update(next);
        assert_eq!(pods(&app).len(), 3, "paused: the old figures stay");
        assert_eq!(app.history[&1].drops.back(), Some(&500));
        assert_eq!(app.handle(key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn d_lists_the_pods_that_asked_dns_worst_first_and_toggles_back() {
        let mut published = snapshot();
        for (w, unanswered) in published.snapshot.workloads.iter_mut().zip([0.5, 2.0]) {
            let mut c = crate::model::conversations::ConversationFigures::default();
            c.dns.queries = CounterRate {
                total: 10,
                per_second: 5.0,
            };
            c.dns.unanswered = CounterRate {
                total: 1,
                per_second: unanswered,
            };
            w.conversations = Some(c);
        }
        let mut app = App::new("test".into());
        app.update(published);
        app.handle(key(KeyCode::Char('d')));
        assert_eq!(app.view, View::Dns);
        // charlie asked nothing: not listed; bravo leaves more unanswered.
        let names: Vec<&str> = app
            .dns_rows()
            .iter()
            .map(|w| w.workload.pod.as_str())
            .collect();
        assert_eq!(names, ["bravo", "alpha"]);
        assert_eq!(
            app.selected_row().map(|w| w.workload.pod.as_str()),
            Some("bravo")
        );
        app.handle(key(KeyCode::Char('d')));
        assert_eq!(app.view, View::Workloads);
    }
}
