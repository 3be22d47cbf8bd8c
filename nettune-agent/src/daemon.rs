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

mod wakeups;

pub use wakeups::{Arming, EventWakeups, MAX_SKIPPED_TICKS, QUIET_FOR};

use crate::{
    collect::Tick,
    config::Config,
    engine::Engine,
    model::{sample::ReceivedEvents, snapshot::Snapshot},
    probes::{ProbeSource, Probes},
    serve::server::{self, ServerState},
    sys::{Kernel, System},
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
pub fn collection_loop<P: ProbeSource, S: System + Clone + Send + 'static>(
    mut engine: Engine<P, S>,
    interval: Duration,
    mut wakeups: Option<EventWakeups>,
    state: &ServerState,
    stop: &AtomicBool,
) {
    let mut next_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Veths still waiting for their tc programs are attached between ticks,
        // a bounded time at a pass, with no wait while more are waiting.
        let catching_up = engine.collector.catch_up().is_some_and(|changes| {
            log_interfaces(&changes);
            changes.pending > 0
        });
        let now = Instant::now();
        let wait = if catching_up {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(now).min(STOP_CHECK)
        };
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
        let events = log_events(
            &mut engine.collector.probes,
            latest.as_ref().map(|p| &p.snapshot),
            &mut engine.events_received,
        );
        let now = Instant::now();
        if let Some(w) = wakeups.as_mut() {
            w.note_events(&events);
            if w.due(now) {
                arm(&mut engine.collector.probes, true);
            }
        }
        let by_event = woken && wakeups.as_mut().is_some_and(|w| w.on_events(now));
        if !by_event && now < next_tick {
            continue;
        }
        if now >= next_tick {
            next_tick = now + interval;
        }
        engine.suppressed_event_collections = wakeups.as_ref().map_or(0, |w| w.suppressed);
        engine.collector.probes.flush_kernel_log();
        let acts = engine.acts_on_urgent_events();
        let applied = match engine.step() {
            Ok(step) => {
                log_tick(&step.tick);
                state.publish(step.published);
                step.applied
            }
            Err(e) => {
                log::warn!("collection failed: {e}");
                false
            }
        };
        if let Some(w) = wakeups.as_mut() {
            let now = Instant::now();
            match w.after_collection(now, by_event, applied, acts) {
                Arming::Arm => arm(&mut engine.collector.probes, true),
                Arming::Disarm => arm(&mut engine.collector.probes, false),
                Arming::Later => {}
            }
            if let Some(quiet) = w.quieting(now) {
                log_quiet(&quiet);
                engine.collector.probes.quiet_namespaces(&quiet);
            }
        }
    }
}

/// Arms or disarms every kind of urgent event.
fn arm(probes: &mut impl ProbeSource, armed: bool) {
    for kind in [
        nettune_common::EventKind::NetfilterDrop,
        nettune_common::EventKind::ListenOverflow,
    ] {
        if let Err(e) = probes.arm_events(kind, armed) {
            log::debug!("cannot arm urgent events: {e}");
        }
    }
}

/// Logs which namespaces are quiet for urgent events now.
fn log_quiet(quiet: &[u32]) {
    if quiet.is_empty() {
        log::info!("urgent: no namespace is quiet now");
    } else {
        log::info!(
            "urgent: events of netns {quiet:?} woke a collection in vain: not sent for {} s after",
            QUIET_FOR.as_secs()
        );
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
    let engine = Engine::new(probes, Kernel, &config);
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

/// Logs and counts every event waiting in the ring buffer; returns them.
fn log_events(
    probes: &mut impl ProbeSource,
    last: Option<&Snapshot>,
    received: &mut ReceivedEvents,
) -> Vec<nettune_common::Event> {
    let events = probes.drain_events();
    for event in &events {
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
    events
}

/// Logs what attaching tc programs changed.
fn log_interfaces(changes: &crate::probes::InterfaceChanges) {
    for (ifindex, name) in &changes.added {
        log::info!("watching interface {name} (ifindex {ifindex})");
    }
    for (ifindex, name) in &changes.removed {
        log::info!("interface {name} (ifindex {ifindex}) is gone");
    }
    for (name, reason) in &changes.failed {
        log::warn!("cannot watch interface {name}: {reason}");
    }
    if changes.pending > 0 {
        log::debug!("{} interfaces left to attach", changes.pending);
    }
}

fn log_tick(tick: &Tick) {
    log_interfaces(&tick.interfaces);
    if tick.forgotten_entries > 0 {
        log::debug!(
            "released {} map entries of departed namespaces and interfaces",
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
        );
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
