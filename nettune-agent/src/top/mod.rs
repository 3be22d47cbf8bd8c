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
mod ui;

use std::{
    io::IsTerminal as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{self, Event, KeyEventKind},
};

use crate::{
    config::Config,
    daemon::Engine,
    model::snapshot::Published,
    probes::{LoadOptions, Probes},
    serve::client,
};
use app::{Action, App};

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

/// Where Snapshots come from.
enum SnapshotSource {
    /// A running agent's `/api/v1/snapshot`.
    Remote(SocketAddr),
    /// An agent on a thread of this process.
    Embedded {
        rx: mpsc::Receiver<Result<Published, String>>,
        stop: Arc<AtomicBool>,
    },
}

impl Drop for SnapshotSource {
    fn drop(&mut self) {
        if let Self::Embedded { stop, .. } = self {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

const REMOTE_TIMEOUT: Duration = Duration::from_secs(3);

impl SnapshotSource {
    /// The agent at `agent`, else one answering on this node's configured address,
    /// else an agent embedded in this process (needs root).
    fn open(
        opts: &TopOptions,
        config: &Config,
        load: &LoadOptions,
    ) -> anyhow::Result<(Self, String)> {
        if let Some(url) = &opts.agent {
            let addr = client::parse_base(url)?;
            return Ok((Self::Remote(addr), url.clone()));
        }
        let local = config.agent.api_listen;
        if let Ok((200, _)) =
            client::get_raw_blocking(local, "/readyz", Duration::from_millis(300), 1024)
        {
            return Ok((Self::Remote(local), format!("http://{local}")));
        }
        let probes = Probes::load(load).context(
            "no agent answers on agent.listen, and starting one here needs root (or pass --agent URL)",
        )?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let engine = Engine::for_viewer(probes, crate::sys::Kernel, config)?;
        let interval = opts.interval;
        let stop_thread = stop.clone();
        std::thread::spawn(move || run_embedded(engine, interval, &stop_thread, &tx));
        Ok((Self::Embedded { rx, stop }, "embedded agent".into()))
    }

    /// The next Snapshot, waiting at most `timeout`; `None` if none is ready yet.
    fn next(&mut self, timeout: Duration) -> Option<Result<Published, String>> {
        match self {
            Self::Remote(addr) => Some(
                client::get(*addr, "/api/v1/snapshot", REMOTE_TIMEOUT)
                    .map_err(|e| e.to_string())
                    .and_then(|body| {
                        serde_json::from_slice(&body).map_err(|e| format!("bad snapshot: {e}"))
                    }),
            ),
            Self::Embedded { rx, .. } => match rx.recv_timeout(timeout) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Some(Err("the embedded agent stopped".into()))
                }
            },
        }
    }
}

fn run_embedded(
    mut engine: Engine,
    interval: Duration,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Result<Published, String>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = engine.step().map(|(_, p)| p).map_err(|e| e.to_string());
        if tx.send(result).is_err() {
            return;
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
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
pub fn run(opts: &TopOptions, config: &Config, load: &LoadOptions) -> anyhow::Result<()> {
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
                    Err(e) => app.error = Some(e),
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
fn batch(source: &mut SnapshotSource, app: &mut App, opts: &TopOptions) -> anyhow::Result<()> {
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120u16);
    let height = std::env::var("LINES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40u16);
    let mut terminal = Terminal::new(TestBackend::new(width, height))?;
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
                break Err("no snapshot in time".into());
            }
        };
        app.update(snapshot.map_err(anyhow::Error::msg)?);
        terminal.draw(|f| ui::draw(f, app))?;
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
