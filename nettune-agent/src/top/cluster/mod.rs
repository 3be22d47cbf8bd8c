//! `nettune top --prometheus URL`: the live view of a whole cluster, read from
//! the Prometheus that already scrapes every node's agent — nothing of nettune's
//! own aggregates. Nodes ranked by drops, retransmits, listen overflows, DNS
//! failures and tuning changes; Enter shows a node's pods, `l` its listeners;
//! the node view's keys, sorting, filter and help.
//!
//! - `prometheus`: the HTTP API and its JSON (instant queries);
//! - `queries`: the PromQL (one aggregation per screen) and the rows answers make;
//! - `source`: a thread asking what the screen shows;
//! - `app`: state and keys; `ui`: drawing.

mod app;
mod prometheus;
mod queries;
mod source;
mod ui;

use std::time::Duration;

use ratatui::{Frame, crossterm::event::KeyEvent};

use super::{Screen, SourceError, TopError, app::Action};
use app::ClusterApp;
use prometheus::Prometheus;
use source::ClusterSource;

/// The label that names a node's series when none is given: what the
/// ServiceMonitor in `deploy/` sets from the pod's node.
pub const DEFAULT_NODE_LABEL: &str = "node";

/// The cluster view: its state and the thread asking Prometheus.
pub(super) struct ClusterScreen {
    source: ClusterSource,
    app: ClusterApp,
}

impl ClusterScreen {
    /// The view of the Prometheus at `url`, nodes named by `node_label`.
    pub(super) fn open(url: &str, node_label: &str) -> Result<Self, TopError> {
        let prometheus = Prometheus::new(url).map_err(TopError::Url)?;
        let app = ClusterApp::new(prometheus.url().to_owned());
        Ok(Self {
            source: ClusterSource::start(prometheus, node_label.to_owned()),
            app,
        })
    }
}

impl Screen for ClusterScreen {
    fn refresh(&mut self, wait: Duration) -> Option<Result<(), SourceError>> {
        self.source.request(&self.app.focus());
        let figures = self.source.next(wait)?;
        // An answer for the screen left behind: ask again at once.
        let current = figures.focus == self.app.focus();
        self.app.update(figures);
        current.then_some(Ok(()))
    }

    fn draw(&self, frame: &mut Frame<'_>) {
        ui::draw(frame, &self.app);
    }

    fn handle(&mut self, key: KeyEvent) -> Action {
        self.app.handle(key)
    }
}
