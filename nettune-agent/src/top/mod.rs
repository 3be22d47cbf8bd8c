//! `nettune top`: a live, top-style view of the node's network, from an agent
//! running in this process or from a running agent's `/api/v1/snapshot`; or of
//! the whole cluster, from Prometheus (`--prometheus`, [`cluster`]).
//!
//! - [`app`]: state and key handling (no drawing, no I/O; unit-tested);
//! - `table`: the keys and choices every table shares (sort, order, filter,
//!   pause, help, moving), the node's and the cluster's;
//! - `ui`: drawing with ratatui (`ui::common`: what both views draw alike);
//! - `format`: numbers for humans;
//! - this module: where Snapshots come from, the event loop, the terminal guard,
//!   and batch mode — without a terminal (piped, CI, scripts) `top` prints the
//!   same frame as plain text for `-n` refreshes, like `top -b`.

pub mod app;
pub mod cluster;
mod format;
mod source;
mod table;
mod ui;

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use ratatui::{
    Frame, Terminal,
    backend::TestBackend,
    crossterm::event::{self, Event, KeyEvent, KeyEventKind},
};

use crate::{config::Config, probes::LoadOptions};
use app::{Action, App};
use source::SnapshotSource;
pub use source::{SourceError, TopError};

/// What the user asked for.
pub struct TopOptions {
    /// `http://host:port` of a running agent; `None`: detect one, else embed.
    pub agent: Option<String>,
    /// `http://host:port[/path]` of a Prometheus: the cluster view instead.
    pub prometheus: Option<String>,
    /// The label naming each series' node in that Prometheus.
    pub node_label: String,
    /// Time between refreshes.
    pub interval: Duration,
    /// Stop after this many refreshes.
    pub iterations: Option<u64>,
    /// Plain-text frames even on a terminal.
    pub batch: bool,
}

/// Restores the terminal however `top` ends (return, error); ratatui's panic hook
/// covers panics.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// A screen `top` shows: where its figures come from, its drawing, its keys.
trait Screen {
    /// Asks for figures when due and takes what came within `wait` (`None`:
    /// nothing yet). The screen shows its errors; `Err` hands them to batch mode.
    fn refresh(&mut self, wait: Duration) -> Option<Result<(), SourceError>>;
    /// Draws the whole screen.
    fn draw(&self, frame: &mut Frame<'_>);
    /// Applies one key press.
    fn handle(&mut self, key: KeyEvent) -> Action;
}

/// The node view: Snapshots from an agent.
struct NodeScreen {
    source: SnapshotSource,
    app: App,
}

impl Screen for NodeScreen {
    fn refresh(&mut self, wait: Duration) -> Option<Result<(), SourceError>> {
        Some(match self.source.next(wait)? {
            Ok(s) => {
                self.app.update(s);
                Ok(())
            }
            Err(e) => {
                self.app.error = Some(e.to_string());
                Err(e)
            }
        })
    }

    fn draw(&self, frame: &mut Frame<'_>) {
        ui::draw(frame, &self.app);
    }

    fn handle(&mut self, key: KeyEvent) -> Action {
        self.app.handle(key)
    }
}

/// Runs `nettune top`.
pub fn run(opts: &TopOptions, config: &Config, load: &LoadOptions) -> Result<(), TopError> {
    if let Some(url) = &opts.prometheus {
        return show(
            &mut cluster::ClusterScreen::open(url, &opts.node_label)?,
            opts,
        );
    }
    let (source, label) = SnapshotSource::open(opts, config, load)?;
    show(
        &mut NodeScreen {
            source,
            app: App::new(label),
        },
        opts,
    )
}

/// Shows `screen` on the terminal, or as text frames without one.
fn show(screen: &mut impl Screen, opts: &TopOptions) -> Result<(), TopError> {
    if opts.batch || !std::io::stdout().is_terminal() {
        return batch(screen, opts);
    }
    let mut terminal = ratatui::init();
    let _guard = TerminalGuard;
    let mut refreshes = 0u64;
    let mut next_refresh = Instant::now();
    loop {
        if Instant::now() >= next_refresh {
            if screen.refresh(Duration::from_millis(50)).is_some() {
                refreshes += 1;
                next_refresh = Instant::now() + opts.interval;
            }
            if opts.iterations.is_some_and(|n| refreshes >= n) {
                break;
            }
        }
        terminal.draw(|f| screen.draw(f))?;
        if event::poll(Duration::from_millis(100))?
            && let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
        {
            match screen.handle(key) {
                Action::Quit => break,
                Action::Refresh => next_refresh = Instant::now(),
                Action::None => {}
            }
        }
    }
    Ok(())
}

/// Prints `-n` frames (default 1) as plain text, one per refresh.
fn batch(screen: &mut impl Screen, opts: &TopOptions) -> Result<(), TopError> {
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120u16);
    let height = std::env::var("LINES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40u16);
    // An in-memory backend cannot fail.
    let Ok(mut terminal) = Terminal::new(TestBackend::new(width, height));
    for i in 0..opts.iterations.unwrap_or(1) {
        if i > 0 {
            std::thread::sleep(opts.interval);
        }
        // Longer than a query to Prometheus may take.
        let deadline = Instant::now() + opts.interval.max(Duration::from_secs(8));
        loop {
            if let Some(r) = screen.refresh(Duration::from_millis(200)) {
                r?;
                break;
            }
            if Instant::now() > deadline {
                return Err(SourceError::Late.into());
            }
        }
        let Ok(_) = terminal.draw(|f| screen.draw(f));
        let buffer = terminal.backend().buffer();
        let mut frame = String::new();
        for y in 0..buffer.area.height {
            let line: String = (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect();
            frame.push_str(line.trim_end());
            frame.push('\n');
        }
        frame.push('\n');
        match std::io::Write::write_all(&mut std::io::stdout().lock(), frame.as_bytes()) {
            // The reader went away (`| head`): done, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}
