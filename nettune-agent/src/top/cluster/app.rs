//! The cluster view's state: the nodes, the node entered (its pods or its
//! listeners), what the last refresh cost or why it failed, and what the user
//! chose — with the node view's keys ([`Controls`]). No drawing, no I/O.

use std::time::Instant;

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::{
    queries::{Column, ListenerRow, Row},
    source::{Cost, Figures, Focus},
};
use crate::top::{
    app::Action,
    table::{Common, Controls, cycle},
};

/// One table's choices: its sort column and the shared controls.
#[derive(Clone, Debug)]
pub struct Level {
    /// The column rows are sorted by.
    pub sort: Column,
    /// Order, filter, selection, pause, help.
    pub table: Controls,
}

impl Default for Level {
    fn default() -> Self {
        Self {
            sort: Column::Drops,
            table: Controls::default(),
        }
    }
}

/// Everything the cluster view shows and the user chose.
pub struct ClusterApp {
    /// The Prometheus asked.
    pub source: String,
    /// The nodes (the last answer that had them).
    pub nodes: Vec<Row>,
    /// The node entered, if any.
    pub node: Option<String>,
    /// Its pods.
    pub pods: Vec<Row>,
    /// Its listeners.
    pub listeners: Vec<ListenerRow>,
    /// Inside a node: the listeners, not the pods.
    pub show_listeners: bool,
    /// The nodes table's choices.
    pub nodes_level: Level,
    /// The pods (and listeners) table's choices.
    pub node_level: Level,
    /// What the last refresh cost.
    pub cost: Option<Cost>,
    /// Why the last refresh failed.
    pub error: Option<String>,
    /// When figures last came.
    pub updated: Option<Instant>,
}

impl ClusterApp {
    /// A view of `source` with nothing received yet.
    pub fn new(source: String) -> Self {
        Self {
            source,
            nodes: Vec::new(),
            node: None,
            pods: Vec::new(),
            listeners: Vec::new(),
            show_listeners: false,
            nodes_level: Level::default(),
            node_level: Level::default(),
            cost: None,
            error: None,
            updated: None,
        }
    }

    /// What the screen shows, to ask for.
    pub fn focus(&self) -> Focus {
        self.node.clone().map_or(Focus::Nodes, Focus::Node)
    }

    /// The current table's choices.
    pub fn level(&self) -> &Level {
        if self.node.is_some() {
            &self.node_level
        } else {
            &self.nodes_level
        }
    }

    fn level_mut(&mut self) -> &mut Level {
        if self.node.is_some() {
            &mut self.node_level
        } else {
            &mut self.nodes_level
        }
    }

    /// Takes an answer: its cost and error always, its rows unless paused or
    /// asked for another screen; an error keeps the figures there were.
    pub fn update(&mut self, figures: Figures) {
        self.cost = Some(figures.cost);
        self.error = figures.error;
        if self.error.is_some() || figures.focus != self.focus() || self.level().table.paused {
            return;
        }
        match figures.focus {
            Focus::Nodes => self.nodes = figures.rows,
            Focus::Node(_) => {
                self.pods = figures.rows;
                self.listeners = figures.listeners;
            }
        }
        self.updated = Some(Instant::now());
        self.clamp();
    }

    /// The rows of the current table (nodes or pods), filtered and sorted.
    pub fn rows(&self) -> Vec<&Row> {
        let level = self.level();
        let all = if self.node.is_some() {
            &self.pods
        } else {
            &self.nodes
        };
        let mut rows: Vec<&Row> = all
            .iter()
            .filter(|r| level.table.matches([r.name.as_str()]))
            .collect();
        rows.sort_by(|a, b| {
            let order = match level.sort {
                Column::Name => a.name.cmp(&b.name),
                c => a.value(c).total_cmp(&b.value(c)),
            };
            level.table.ordered(order).then_with(|| a.name.cmp(&b.name))
        });
        rows
    }

    /// The node's listeners, filtered (pod, port, process), overflowing most
    /// first.
    pub fn listener_rows(&self) -> Vec<&ListenerRow> {
        let table = &self.node_level.table;
        self.listeners
            .iter()
            .filter(|l| table.matches([l.pod.as_str(), l.port.as_str(), l.process.as_str()]))
            .collect()
    }

    /// The selected row (nodes or pods).
    pub fn selected_row(&self) -> Option<&Row> {
        self.rows().get(self.level().table.selected).copied()
    }

    fn row_count(&self) -> usize {
        if self.node.is_some() && self.show_listeners {
            self.listener_rows().len()
        } else {
            self.rows().len()
        }
    }

    fn clamp(&mut self) {
        let n = self.row_count();
        self.level_mut().table.clamp(n);
    }

    /// Applies one key press: the node view's keys, Enter to go into the
    /// selected node, Esc (or Backspace, ←) to come back, `l` for its listeners.
    pub fn handle(&mut self, key: KeyEvent) -> Action {
        let level = self.level();
        let typing = level.table.editing_filter || level.table.show_help;
        if self.node.is_some()
            && !typing
            && matches!(key.code, KeyCode::Esc | KeyCode::Backspace | KeyCode::Left)
        {
            self.node = None;
            self.show_listeners = false;
            return Action::Refresh;
        }
        let columns: &[Column] = if self.node.is_some() {
            &Column::PODS
        } else {
            &Column::NODES
        };
        let key = match self.level_mut().table.handle(key) {
            Common::Quit => return Action::Quit,
            Common::Done => {
                self.clamp();
                return Action::None;
            }
            Common::Sort(by) => {
                let level = self.level_mut();
                level.sort = cycle(columns, level.sort, by);
                return Action::None;
            }
            Common::Move(by) => {
                let n = self.row_count();
                self.level_mut().table.move_selection(by, n);
                return Action::None;
            }
            Common::Other(key) => key,
        };
        match key.code {
            KeyCode::Enter | KeyCode::Right if self.node.is_none() => {
                if let Some(row) = self.selected_row() {
                    self.node = Some(row.name.clone());
                    self.pods.clear();
                    self.listeners.clear();
                    self.node_level.table.selected = 0;
                    return Action::Refresh;
                }
            }
            KeyCode::Char('l') if self.node.is_some() => {
                self.show_listeners = !self.show_listeners;
                self.node_level.table.selected = 0;
            }
            _ => {}
        }
        Action::None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::crossterm::event::KeyModifiers;

    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn row(name: &str, drops: f64, retx: f64) -> Row {
        Row {
            name: name.into(),
            values: [(Column::Drops, drops), (Column::Retransmits, retx)].into(),
            ..Row::default()
        }
    }

    fn figures(focus: Focus, rows: Vec<Row>, error: Option<&str>) -> Figures {
        Figures {
            focus,
            rows,
            listeners: vec![],
            cost: Cost {
                queries: 1,
                elapsed: Duration::from_millis(3),
                samples_read: Some(10),
                series: 3,
            },
            error: error.map(str::to_owned),
        }
    }

    fn names(app: &ClusterApp) -> Vec<&str> {
        app.rows().iter().map(|r| r.name.as_str()).collect()
    }

    fn nodes() -> Vec<Row> {
        vec![row("a", 1.0, 9.0), row("b", 5.0, 0.0), row("c", 0.0, 1.0)]
    }

    #[test]
    fn nodes_rank_by_drops_sort_and_filter_with_the_node_view_s_keys() {
        let mut app = ClusterApp::new("http://p:9090".into());
        app.update(figures(Focus::Nodes, nodes(), None));
        assert_eq!(names(&app), ["b", "a", "c"]);
        app.handle(key(KeyCode::Char('s')));
        assert_eq!(app.nodes_level.sort, Column::Retransmits);
        assert_eq!(names(&app), ["a", "c", "b"]);
        app.handle(key(KeyCode::Char('o')));
        assert_eq!(names(&app), ["b", "c", "a"]);
        for c in ['/', 'c'] {
            app.handle(key(KeyCode::Char(c)));
        }
        app.handle(key(KeyCode::Enter));
        assert_eq!(names(&app), ["c"]);
        assert_eq!(app.handle(key(KeyCode::Char('q'))), Action::Quit);
    }

    #[test]
    fn enter_goes_into_the_selected_node_and_esc_comes_back_to_it() {
        let mut app = ClusterApp::new("http://p:9090".into());
        app.update(figures(Focus::Nodes, nodes(), None));
        app.handle(key(KeyCode::Down));
        assert_eq!(app.handle(key(KeyCode::Enter)), Action::Refresh);
        assert_eq!(app.focus(), Focus::Node("a".into()));
        // A late answer for the nodes is not taken as the node's pods.
        app.update(figures(Focus::Nodes, nodes(), None));
        assert!(app.rows().is_empty());
        let pods = vec![row("shop/web-1", 4.0, 0.0), row("node", 0.5, 0.0)];
        app.update(figures(Focus::Node("a".into()), pods, None));
        assert_eq!(names(&app), ["shop/web-1", "node"]);
        app.handle(key(KeyCode::Char('l')));
        assert!(app.show_listeners);
        assert_eq!(app.handle(key(KeyCode::Esc)), Action::Refresh);
        assert_eq!(app.focus(), Focus::Nodes);
        assert_eq!(app.selected_row().map(|r| r.name.as_str()), Some("a"));
        // Esc at the top leaves.
        assert_eq!(app.handle(key(KeyCode::Esc)), Action::Quit);
    }

    #[test]
    fn an_error_is_kept_beside_the_last_figures_until_an_answer_comes() {
        let mut app = ClusterApp::new("http://p:9090".into());
        app.update(figures(Focus::Nodes, nodes(), None));
        app.update(figures(Focus::Nodes, vec![], Some("cannot connect")));
        assert_eq!(app.error.as_deref(), Some("cannot connect"));
        assert_eq!(names(&app).len(), 3, "the last figures stay");
        app.update(figures(Focus::Nodes, vec![row("a", 0.0, 0.0)], None));
        assert_eq!(app.error, None);
        assert_eq!(names(&app), ["a"]);
        assert_eq!(app.cost.as_ref().map(|c| c.queries), Some(1));
    }
}
