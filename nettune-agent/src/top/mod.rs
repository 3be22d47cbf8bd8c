//! `nettune top`: a live, top-style view of the node's network, from an agent
//! running in this process or from a running agent's `/api/v1/snapshot`.
//!
//! - [`app`]: state and key handling (no drawing, no I/O; unit-tested);
//! - `ui`: drawing with ratatui;
//! - `format`: numbers for humans;
//! - this module: where Snapshots come from, the event loop, the terminal guard,
//!   and batch mode — without a terminal (piped, CI, scripts) `top` prints the
//!   same frame as plain text for `-n` refreshes, like `top -b`.

pub mod app;
mod format;
mod source;
mod ui;

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{self, Event, KeyEventKind},
};

use crate::{config::Config, probes::LoadOptions};
use app::{Action, App};
use source::SnapshotSource;
pub use source::{SourceError, TopError};

/// What the user asked for.
pub struct TopOptions {
    /// `http://host:port` of a running agent; `None`: detect one, else embed.
    pub agent: Option<String>,
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

/// Runs `nettune top`.
pub fn run(opts: &TopOptions, config: &Config, load: &LoadOptions) -> Result<(), TopError> {
    let (mut source, label) = SnapshotSource::open(opts, config, load)?;
    let mut app = App::new(label);
    if opts.batch || !std::io::stdout().is_terminal() {
        return batch(&mut source, &mut app, opts);
    }
    let mut terminal = ratatui::init();
    let _guard = TerminalGuard;
    let mut refreshes = 0u64;
    let mut next_refresh = Instant::now();
    loop {
        if Instant::now() >= next_refresh {
            if let Some(result) = source.next(Duration::from_millis(50)) {
                match result {
                    Ok(s) => app.update(s),
                    Err(e) => app.error = Some(e.to_string()),
                }
                refreshes += 1;
                next_refresh = Instant::now() + opts.interval;
            }
            if opts.iterations.is_some_and(|n| refreshes >= n) {
                break;
            }
        }
        terminal.draw(|f| ui::draw(f, &app))?;
        if event::poll(Duration::from_millis(100))?
            && let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
            && app.handle(key) == Action::Quit
        {
            break;
        }
    }
    Ok(())
}

/// Prints `-n` frames (default 1) as plain text, one per refresh.
fn batch(source: &mut SnapshotSource, app: &mut App, opts: &TopOptions) -> Result<(), TopError> {
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
        let deadline = Instant::now() + opts.interval.max(Duration::from_secs(5));
        let snapshot = loop {
            if let Some(r) = source.next(Duration::from_millis(200)) {
                break r;
            }
            if Instant::now() > deadline {
                break Err(SourceError::Late);
            }
        };
        app.update(snapshot?);
        let Ok(_) = terminal.draw(|f| ui::draw(f, app));
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
