//! `nettune run`: the collection loop on a thread of its own, and the HTTP
//! endpoints on the async runtime, until SIGINT/SIGTERM.
//!
//! A collection (a `/proc` scan, setns threads, netlink, map walks, a tuning
//! round) can take a while on a busy node; it never runs on the thread that
//! serves HTTP, so `/metrics`, `/healthz` and `/readyz` answer from the last
//! published tick without waiting. The loop collects every tick and, when an
//! urgent event arrives in the ring buffer, at once — but at most once per
//! `agent.min_event_interval_seconds` ([`EventWakeups`]): a flood of events
//! anyone outside the node can cause (netfilter drops) must not keep collections
//! running back to back. Suppressed wake-ups are counted.

use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::signal::unix::SignalKind;

use crate::{
    collect::{Collector, Tick, cri::RuntimeWatcher},
    config::Config,
    model::{
        sample::ReceivedEvents,
        snapshot::{Published, Snapshot},
        tuning::Mode,
    },
    probes::{LoadError, ProbeSource, Probes},
    serve::server::{self, ServerState},
    sys::{Kernel, System},
    tune::{
        journal::JournalError,
        tuner::{self, Tuner},
    },
};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// An HTTP address cannot be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The config key that named it.
        key: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signals or the collection thread could not be set up.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The journal is unusable and the mode needs it.
    #[error("the tuner cannot start: {0}")]
    Journal(#[from] JournalError),
}

/// Collection and tuning together: what `nettune run` does every tick, and what
/// `nettune top` runs in-process when no agent is running.
pub struct Engine<P: ProbeSource = Probes, S: System + Clone = Kernel> {
    /// Reads the node every tick.
    pub collector: Collector<P, S>,
    tuner: Option<Tuner<S>>,
    /// Event-triggered collections skipped by the minimum gap, so far.
    pub suppressed_event_collections: u64,
    /// Urgent events taken from the ring buffer, so far.
    pub events_received: ReceivedEvents,
    /// Polls the container runtime for pod names (stopped with the engine).
    _runtime: Option<RuntimeWatcher>,
}

impl<P: ProbeSource, S: System + Clone> Engine<P, S> {
    /// A collector over `probes`, pod names from the container runtime (polled
    /// on a thread of its own; `identity.cri_socket = ""` turns it off) and,
    /// unless the journal is unusable in observe mode, a tuner.
    pub fn new(probes: P, system: S, config: &Config) -> Result<Self, DaemonError> {
        let mem_total = tuner::mem_total(&system);
        let mut config = config.clone();
        if config.tuning.mode == Mode::Enforce && system.sysctls_read_only() {
            log::warn!(
                "/proc/sys is read-only here (a container without the privileged /proc \
                 overlay?): tuning switches from enforce to advise; observing continues"
            );
            config.tuning.mode = Mode::Advise;
        }
        let config = &config;
        let tuner = match Tuner::new(system.clone(), config.tuning_with_own_ports(), mem_total) {
            Ok(t) => Some(t),
            // Observing needs no journal; advising and enforcing do.
            Err(e) if config.tuning.mode == Mode::Observe => {
                log::warn!("tuning state unavailable ({e}); observing only");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let runtime = RuntimeWatcher::start(&config.identity);
        let mut collector = Collector::new(probes, system, config);
        if let Some(watcher) = &runtime {
            collector = collector.with_runtime(watcher.board());
        }
        Ok(Self {
            collector,
            tuner,
            suppressed_event_collections: 0,
            events_received: ReceivedEvents::default(),
            _runtime: runtime,
        })
    }

    /// An engine for someone looking at the node (`nettune top` without a running
    /// agent): it observes, or at most advises, whatever the config's mode — a
    /// viewer never writes a sysctl.
    pub fn for_viewer(probes: P, system: S, config: &Config) -> Result<Self, DaemonError> {
        let mut config = config.clone();
        if config.tuning.mode == Mode::Enforce {
            config.tuning.mode = Mode::Advise;
        }
        Self::new(probes, system, &config)
    }

    /// One collection, then a tuning round on its Snapshot; returns the tick and
    /// what to publish.
    pub fn step(&mut self) -> Result<(Tick, Published), LoadError> {
        let tick = self.collector.tick()?;
        let tuning = self.tuner.as_mut().map(|t| {
            t.round(&tick.snapshot, tuner::now_unix());
            t.state()
        });
        let published = Published {
            snapshot: tick.snapshot.clone(),
            tuning,
            event_collections_suppressed: self.suppressed_event_collections,
            events_received: self.events_received,
        };
        Ok((tick, published))
    }
}

/// When urgent events may trigger a collection: at most one per `min_gap`; the
/// others are counted and wait for the next tick (or the next allowed event).
#[derive(Debug)]
pub struct EventWakeups {
    min_gap: Duration,
    last: Option<Instant>,
    /// Wake-ups that did not collect.
    pub suppressed: u64,
}

impl EventWakeups {
    /// At most one event-triggered collection per `min_gap`.
    pub fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            last: None,
            suppressed: 0,
        }
    }

    /// Events arrived at `now`: whether to collect now.
    pub fn on_events(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.min_gap => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Waits at most `timeout` for the ring buffer's fd to be readable.
fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&raw mut pfd, 1, ms) > 0 }
}

/// How often the collection loop looks at the stop flag while it waits.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// The collection loop: collects every `interval` and on (coalesced) urgent
/// events, publishes into `state`, until `stop` is set. Owns the engine: the
/// probes are detached when it returns.
pub fn collection_loop<P: ProbeSource, S: System + Clone>(
    mut engine: Engine<P, S>,
    interval: Duration,
    mut wakeups: Option<EventWakeups>,
    state: &ServerState,
    stop: &AtomicBool,
) {
    let mut next_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = next_tick.saturating_duration_since(now).min(STOP_CHECK);
        let events_fd = engine.collector.probes.events_fd().map(|fd| fd.as_raw_fd());
        let woken = match (events_fd, wakeups.as_ref()) {
            (Some(fd), Some(_)) => wait_readable(fd, wait),
            _ => {
                std::thread::sleep(wait);
                false
            }
        };
        // Drain the ring on every pass, woken by it or not, so it never fills up.
        let latest = state.latest();
        log_events(
            &mut engine.collector.probes,
            latest.as_ref().map(|p| &p.snapshot),
            &mut engine.events_received,
        );
        let now = Instant::now();
        let by_event = woken && wakeups.as_mut().is_some_and(|w| w.on_events(now));
        if !by_event && now < next_tick {
            continue;
        }
        if now >= next_tick {
            next_tick = now + interval;
        }
        engine.suppressed_event_collections = wakeups.as_ref().map_or(0, |w| w.suppressed);
        engine.collector.probes.flush_kernel_log();
        match engine.step() {
            Ok((tick, published)) => {
                log_tick(&tick);
                state.publish(published);
            }
            Err(e) => log::warn!("collection failed: {e}"),
        }
    }
}

/// Binds `addr` for `key`.
async fn bind(
    addr: std::net::SocketAddr,
    key: &'static str,
) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, key, source })
}

/// Runs the agent until SIGINT or SIGTERM; the probes are detached on return.
pub async fn run(config: Config, probes: Probes) -> Result<(), DaemonError> {
    let agent = &config.agent;
    let interval = Duration::from_secs_f64(agent.interval_seconds);
    let state = Arc::new(ServerState::new(agent.max_pod_series as usize, interval));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    if agent.api_listen == agent.listen {
        let listener = bind(agent.listen, "agent.listen").await?;
        log::info!(
            "serving /metrics, /healthz, /readyz and /api/v1/snapshot on http://{}",
            agent.listen
        );
        servers.push(tokio::spawn(server::serve(
            listener,
            server::router(state.clone(), server::Endpoints::All),
            stop_rx.clone(),
        )));
    } else {
        let metrics = bind(agent.listen, "agent.listen").await?;
        let api = bind(agent.api_listen, "agent.api_listen").await?;
        log::info!(
            "serving /metrics, /healthz and /readyz on http://{}, the JSON API on http://{}",
            agent.listen,
            agent.api_listen
        );
        servers.push(tokio::spawn(server::serve(
            metrics,
            server::router(state.clone(), server::Endpoints::Metrics),
            stop_rx.clone(),
        )));
        servers.push(tokio::spawn(server::serve(
            api,
            server::router(state.clone(), server::Endpoints::All),
            stop_rx.clone(),
        )));
    }

    log::info!("tuning mode: {:?}", config.tuning.mode);
    let engine = Engine::new(probes, Kernel, &config)?;
    let wakeups = agent
        .wake_on_events
        .then(|| EventWakeups::new(Duration::from_secs_f64(agent.min_event_interval_seconds)));
    if wakeups.is_none() {
        log::info!("urgent events off (agent.wake_on_events = false): collecting every tick only");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let collection = std::thread::Builder::new().name("collect".into()).spawn({
        let (state, stop) = (state.clone(), stop.clone());
        move || collection_loop(engine, interval, wakeups, &state, &stop)
    })?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    log::info!("running; Ctrl-C or SIGTERM stops");
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    log::info!("signal received; detaching");
    stop.store(true, Ordering::Relaxed);
    // The loop finishes its pass (a collection at most) and drops the probes.
    let joined = tokio::task::spawn_blocking(move || collection.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        log::warn!("the collection thread ended abnormally");
    }
    let _ = stop_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    Ok(())
}

/// Logs and counts every event waiting in the ring buffer.
fn log_events(
    probes: &mut impl ProbeSource,
    last: Option<&Snapshot>,
    received: &mut ReceivedEvents,
) {
    for event in probes.drain_events() {
        received.count(event.kind);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        probes::fake::FakeProbes,
        serve::server::{
            Endpoints,
            testing::{get, serving},
        },
        sys::fake::FakeSystem,
    };

    #[test]
    fn metrics_and_health_answer_while_a_collection_is_stuck() {
        let system = Arc::new(FakeSystem::new());
        system.add_namespace(1, None, true);
        let state = Arc::new(ServerState::new(100, Duration::from_millis(50)));
        let engine = Engine::new(
            FakeProbes::default(),
            system.clone(),
            &Config::without_runtime(),
        )
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let collecting = std::thread::spawn({
            let (state, stop) = (state.clone(), stop.clone());
            move || collection_loop(engine, Duration::from_millis(50), None, &state, &stop)
        });
        while state.latest().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The next collection hangs in the "kernel" until `release` goes.
        let release = system.hold_next_listing();
        std::thread::sleep(Duration::from_millis(200));
        let (addr, stop_serving) = serving(state, Endpoints::All);
        for path in ["/metrics", "/healthz", "/readyz", "/api/v1/snapshot"] {
            assert_eq!(get(addr, path), 200, "{path} waited for the collection");
        }
        stop.store(true, Ordering::Relaxed);
        drop(release);
        collecting.join().unwrap();
        let _ = stop_serving.send(true);
    }

    #[test]
    fn a_flood_of_events_collects_at_most_once_per_gap_and_counts_the_rest() {
        let mut w = EventWakeups::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let collected: Vec<bool> = (0..10)
            .map(|i| w.on_events(t0 + Duration::from_millis(i * 30)))
            .collect();
        // t = 0, 120 and 240 ms collect; the seven in between wait.
        assert_eq!(
            collected,
            [
                true, false, false, false, true, false, false, false, true, false
            ]
        );
        assert_eq!(w.suppressed, 7);
        let mut w = EventWakeups::new(Duration::ZERO);
        assert!((0..5).all(|_| w.on_events(t0)));
    }

    #[test]
    fn every_event_taken_from_the_ring_is_counted_by_kind() {
        use nettune_common::{Event, EventKind};
        let event = |kind: u32| Event {
            kind,
            ..Event::default()
        };
        let mut probes = FakeProbes {
            events: vec![
                event(EventKind::NetfilterDrop as u32),
                event(EventKind::ListenOverflow as u32),
                event(EventKind::NetfilterDrop as u32),
                event(99),
            ],
            ..Default::default()
        };
        let mut received = ReceivedEvents::default();
        log_events(&mut probes, None, &mut received);
        log_events(&mut probes, None, &mut received);
        assert_eq!(
            received,
            ReceivedEvents {
                netfilter_drop: 2,
                listen_overflow: 1,
                other: 1,
            }
        );
    }
}

#[cfg(test)]
mod read_only_tests {
    use super::*;
    use crate::{
        model::{sample::ListenSysctls, tuning::Target},
        probes::fake::FakeProbes,
        sys::{ListenerScan, ListeningSocket, fake::FakeSystem},
    };

    #[test]
    fn a_read_only_proc_sys_turns_enforce_into_advise_and_observing_goes_on() {
        let system = Arc::new(FakeSystem::new());
        system.add_namespace(1, None, true);
        system.set_sysctl(&Target::Node, "net.core.somaxconn", "4096");
        system.set_net_file(
            1,
            "netstat",
            Some("TcpExt: ListenOverflows ListenDrops TCPReqQFullDrop\nTcpExt: 0 0 0\n"),
        );
        // A listener that asked for more than somaxconn, full: the rule would raise.
        system.set_listeners(
            1,
            ListenerScan {
                sockets: vec![ListeningSocket {
                    address: std::net::Ipv4Addr::UNSPECIFIED.into(),
                    port: 80,
                    inode: 5,
                    queue: 4097,
                    limit: 4096,
                }],
                sysctls: ListenSysctls {
                    somaxconn: Some(4096),
                    ..ListenSysctls::default()
                },
            },
        );
        system.make_sysctls_read_only();
        let state = std::env::temp_dir().join(format!("nettune-ro-{}", std::process::id()));
        let mut config = Config::without_runtime();
        config.tuning.mode = Mode::Enforce;
        config.tuning.state_dir.clone_from(&state);
        let mut engine = Engine::new(FakeProbes::default(), system.clone(), &config).unwrap();
        engine.step().unwrap();
        system.set_net_file(
            1,
            "netstat",
            Some("TcpExt: ListenOverflows ListenDrops TCPReqQFullDrop\nTcpExt: 50 50 0\n"),
        );
        let (tick, published) = engine.step().unwrap();
        assert!(tick.snapshot.workloads[0].listen_overflows.per_second > 0.0);
        let decisions = published.tuning.unwrap().recent;
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!(decisions[0].result, crate::model::tuning::Outcome::Advised);
        assert_eq!(
            system
                .sysctl(&Target::Node, "net.core.somaxconn")
                .as_deref(),
            Some("4096")
        );
        let _ = std::fs::remove_dir_all(state);
    }
}
