//! `nettune run`: the collection loop and the HTTP server, until SIGINT/SIGTERM.
//!
//! Every tick (and at once when an urgent event arrives in the ring buffer) the
//! [`Collector`] reads the kernel and publishes a Snapshot to the HTTP endpoints.

use std::{
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
    time::Duration,
};

use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    collect::{Collector, Tick, cri::RuntimeWatcher},
    config::Config,
    model::{snapshot::Published, tuning::Mode},
    probes::{LoadError, Probes},
    serve::server::{self, ServerState},
    sys::Kernel,
    tune::{
        journal::JournalError,
        tuner::{self, Tuner},
    },
};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP address cannot be bound.
    #[error("cannot listen on {addr} (agent.listen): {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signals or the event fd could not be set up.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The journal is unusable and the mode needs it.
    #[error("the tuner cannot start: {0}")]
    Journal(#[from] JournalError),
}

/// Collection and tuning together: what `nettune run` does every tick, and what
/// `nettune top` runs in-process when no agent is running.
pub struct Engine {
    /// Reads the node every tick.
    pub collector: Collector,
    tuner: Option<Tuner<Kernel>>,
    /// Polls the container runtime for pod names (stopped with the engine).
    _runtime: Option<RuntimeWatcher>,
}

impl Engine {
    /// A collector over `probes`, pod names from the container runtime (polled
    /// on a thread of its own) and, unless the journal is unusable in observe
    /// mode, a tuner.
    pub fn new(probes: Probes, config: Config) -> Result<Self, DaemonError> {
        let tuner = match Tuner::new(
            Kernel,
            config.tuning_with_own_ports(),
            tuner::mem_total(&Kernel),
        ) {
            Ok(t) => Some(t),
            // Observing needs no journal; advising and enforcing do.
            Err(e) if config.tuning.mode == Mode::Observe => {
                log::warn!("tuning state unavailable ({e}); observing only");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let runtime = RuntimeWatcher::start(&config.identity);
        let mut collector = Collector::new(probes, Kernel, &config);
        if let Some(watcher) = &runtime {
            collector = collector.with_runtime(watcher.board());
        }
        Ok(Self {
            collector,
            tuner,
            _runtime: runtime,
        })
    }

    /// One collection, then a tuning round on its Snapshot; returns the tick and
    /// what to publish.
    pub fn step(&mut self) -> Result<(Tick, Published), LoadError> {
        self.collector.probes.flush_kernel_log();
        let tick = self.collector.tick()?;
        let tuning = self.tuner.as_mut().map(|t| {
            t.round(&tick.snapshot, tuner::now_unix());
            t.state()
        });
        let published = Published {
            snapshot: tick.snapshot.clone(),
            tuning,
        };
        Ok((tick, published))
    }
}

/// The ring buffer's fd, borrowed for epoll: it lives as long as the probes.
struct EventsFd(RawFd);

impl AsRawFd for EventsFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Runs the agent until SIGINT or SIGTERM; the probes are detached on return.
pub async fn run(config: Config, probes: Probes) -> Result<(), DaemonError> {
    let addr = config.agent.listen;
    let interval = Duration::from_secs_f64(config.agent.interval_seconds);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    log::info!("serving /metrics, /api/v1/snapshot, /healthz and /readyz on http://{addr}");
    let state = Arc::new(ServerState::new(
        config.agent.max_pod_series as usize,
        interval,
    ));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let router = server::router(state.clone());
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.changed().await;
                })
                .await
        }
    });

    let events = probes
        .events_fd()
        .filter(|_| config.agent.wake_on_events)
        .map(|fd| {
            let fd = EventsFd(fd.as_raw_fd());
            // SAFETY: the ring buffer's fd belongs to `probes`, which the collector
            // owns until after `events` is dropped (below), so it stays open and
            // refers to the same ring buffer for the AsyncFd's whole life.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .transpose()?;

    log::info!("tuning mode: {:?}", config.tuning.mode);
    let mut engine = Engine::new(probes, config)?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    log::info!("running; Ctrl-C or SIGTERM stops");
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = ticker.tick() => {}
            ready = async {
                match &events {
                    Some(fd) => fd.readable().await.map(Some),
                    None => std::future::pending().await,
                }
            } => {
                if let Ok(Some(mut guard)) = ready {
                    guard.clear_ready();
                }
            }
        }
        // Drain the ring on every pass, woken by it or not, so it never fills up.
        let latest = state.latest();
        log_events(
            &mut engine.collector.probes,
            latest.as_ref().map(|p| &p.snapshot),
        );
        match engine.step() {
            Ok((tick, published)) => {
                log_tick(&tick);
                state.publish(published);
            }
            Err(e) => log::warn!("collection failed: {e}"),
        }
    }
    log::info!("signal received; detaching");
    drop(events);
    drop(engine);

    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

fn log_events(probes: &mut Probes, last: Option<&crate::model::snapshot::Snapshot>) {
    for event in probes.drain_events() {
        let owner = last.and_then(|s| s.workload(event.netns)).map_or_else(
            || format!("netns {}", event.netns),
            |w| w.workload.display_name(),
        );
        match event.kind {
            k if k == nettune_common::EventKind::NetfilterDrop as u32 => log::info!(
                "urgent: netfilter dropped a packet in {owner} (ifindex {}): conntrack table full or a firewall rule",
                event.ifindex
            ),
            k if k == nettune_common::EventKind::ListenOverflow as u32 => log::info!(
                "urgent: accept queue of port {} overflowed in {owner}",
                event.port
            ),
            other => log::debug!("urgent event of unknown kind {other}"),
        }
    }
}

fn log_tick(tick: &Tick) {
    for (ifindex, name) in &tick.interfaces.added {
        log::info!("watching interface {name} (ifindex {ifindex})");
    }
    for (ifindex, name) in &tick.interfaces.removed {
        log::info!("interface {name} (ifindex {ifindex}) is gone");
    }
    for (name, reason) in &tick.interfaces.failed {
        log::warn!("cannot watch interface {name}: {reason}");
    }
    if tick.forgotten_entries > 0 {
        log::debug!(
            "released {} map entries of departed namespaces",
            tick.forgotten_entries
        );
    }
    let s = &tick.snapshot;
    log::debug!(
        "{} workloads; node-wide {:.1} drops/s, {:.1} retransmitted segments/s, {:.1} listen overflows/s",
        s.workloads.len(),
        s.totals.drops_per_second,
        s.totals.retransmit_segments_per_second,
        s.totals.listen_overflows_per_second
    );
}
