//! Where `nettune top` gets its Snapshots: a running agent's JSON API, or an
//! agent embedded in this process.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use super::TopOptions;
use crate::{
    config::Config,
    engine::Engine,
    model::snapshot::Published,
    probes::{LoadError, LoadOptions, MapReadError, Probes},
    serve::client::{self, HttpError},
};

/// Why `nettune top` cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// `--agent` is not a usable URL.
    #[error(transparent)]
    Url(HttpError),
    /// No agent answers, and none can be started here.
    #[error(
        "no agent answers on agent.api_listen ({addr}), and starting one here needs root (or \
         pass --agent URL): {source}"
    )]
    NoAgent {
        /// The address asked.
        addr: SocketAddr,
        /// Why the probes did not load.
        #[source]
        source: LoadError,
    },
    /// The terminal could not be drawn on.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// No Snapshot came (batch mode).
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Why a refresh brought no Snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The agent did not answer as asked.
    #[error(transparent)]
    Remote(#[from] HttpError),
    /// It answered something that is not a Snapshot.
    #[error("bad snapshot: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The embedded agent's collection failed.
    #[error("collection failed: {0}")]
    Collection(#[from] MapReadError),
    /// The embedded agent is gone.
    #[error("the embedded agent stopped")]
    Stopped,
    /// Nothing came in time.
    #[error("no snapshot in time")]
    Late,
}

/// Where Snapshots come from.
pub(super) enum SnapshotSource {
    /// A running agent's `/api/v1/snapshot`.
    Remote(SocketAddr),
    /// An agent on a thread of this process.
    Embedded {
        rx: mpsc::Receiver<Result<Published, SourceError>>,
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
    pub(super) fn open(
        opts: &TopOptions,
        config: &Config,
        load: &LoadOptions,
    ) -> Result<(Self, String), TopError> {
        if let Some(url) = &opts.agent {
            let addr = client::parse_base(url).map_err(TopError::Url)?;
            return Ok((Self::Remote(addr), url.clone()));
        }
        let local = config.agent.api_listen;
        if let Ok((200, _)) =
            client::get_raw_blocking(local, "/readyz", Duration::from_millis(300), 1024)
        {
            return Ok((Self::Remote(local), format!("http://{local}")));
        }
        let probes = Probes::load(load).map_err(|source| TopError::NoAgent {
            addr: local,
            source,
        })?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let engine = Engine::for_viewer(probes, crate::sys::Kernel, config);
        let interval = opts.interval;
        let stop_thread = stop.clone();
        std::thread::spawn(move || run_embedded(engine, interval, &stop_thread, &tx));
        Ok((Self::Embedded { rx, stop }, "embedded agent".into()))
    }

    /// The next Snapshot, waiting at most `timeout`; `None` if none is ready yet.
    pub(super) fn next(&mut self, timeout: Duration) -> Option<Result<Published, SourceError>> {
        match self {
            Self::Remote(addr) => Some(
                client::get(*addr, "/api/v1/snapshot", REMOTE_TIMEOUT)
                    .map_err(SourceError::from)
                    .and_then(|body| Ok(serde_json::from_slice(&body)?)),
            ),
            Self::Embedded { rx, .. } => match rx.recv_timeout(timeout) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(SourceError::Stopped)),
            },
        }
    }
}

fn run_embedded(
    mut engine: Engine,
    interval: Duration,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Result<Published, SourceError>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = engine
            .step()
            .map(|step| step.published)
            .map_err(SourceError::from);
        if tx.send(result).is_err() {
            return;
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
