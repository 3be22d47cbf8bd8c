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

/// When urgent events may trigger a collection, and when the kernel should send
/// them.
///
/// A wake-up collects at most once per `min_gap`; the others are counted and wait
/// for the next tick. Each event costs the kernel a ring-buffer wake-up, and the
/// kernel sends one only while its kind is armed (the sender disarms it), so the
/// loop arms the kinds only while an early collection could change something —
/// the tuner enforces — and after a collection an event triggered: again after
/// `min_gap` if it wrote a change (the pressure may still be growing), else only
/// at a later tick, and each fruitless wake-up in a row doubles the ticks
/// skipped (up to [`MAX_SKIPPED_TICKS`]): a firewall dropping packets all day is
/// not news to the tuner, and the tick still sees everything.
#[derive(Debug)]
pub struct EventWakeups {
    min_gap: Duration,
    last: Option<Instant>,
    /// When to arm the kinds again, if later than now.
    rearm_at: Option<Instant>,
    /// Fruitless event-triggered collections in a row.
    fruitless: u32,
    /// Tick collections still to pass before arming again.
    skip_ticks: u32,
    /// Wake-ups that did not collect.
    pub suppressed: u64,
}

/// Most ticks a run of fruitless wake-ups makes the events wait.
pub const MAX_SKIPPED_TICKS: u32 = 63;

/// What to do with the kernel's urgent events after a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arming {
    /// Arm every kind now.
    Arm,
    /// Disarm every kind.
    Disarm,
    /// Leave them disarmed for now ([`EventWakeups::due`] says when).
    Later,
}

impl EventWakeups {
    /// At most one event-triggered collection per `min_gap`.
    pub fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            last: None,
            rearm_at: None,
            fruitless: 0,
            skip_ticks: 0,
            suppressed: 0,
        }
    }

    /// After a collection at `now`, triggered by an event or not, that wrote a
    /// change (`applied`) or not, by an engine that `acts` on urgent events or
    /// not: what to do with the kernel's events.
    pub fn after_collection(
        &mut self,
        now: Instant,
        by_event: bool,
        applied: bool,
        acts: bool,
    ) -> Arming {
        self.rearm_at = None;
        if !acts {
            return Arming::Disarm;
        }
        match (by_event, applied) {
            (false, _) if self.skip_ticks > 0 => {
                self.skip_ticks -= 1;
                Arming::Later
            }
            (false, _) => Arming::Arm,
            (true, true) => {
                self.fruitless = 0;
                self.rearm_at = Some(now + self.min_gap);
                Arming::Later
            }
            (true, false) => {
                // 0, 1, 3, 7, … ticks skipped after 1, 2, 3, 4, … in a row.
                self.skip_ticks = (1u32 << self.fruitless.min(6)) - 1;
                self.skip_ticks = self.skip_ticks.min(MAX_SKIPPED_TICKS);
                self.fruitless = self.fruitless.saturating_add(1);
                Arming::Later
            }
        }
    }

    /// Whether a re-arm planned by [`Self::after_collection`] is due at `now`
    /// (it is then done).
    pub fn due(&mut self, now: Instant) -> bool {
        if self.rearm_at.is_some_and(|at| now >= at) {
            self.rearm_at = None;
            return true;
        }
        false
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
        log_events(
            &mut engine.collector.probes,
            latest.as_ref().map(|p| &p.snapshot),
            &mut engine.events_received,
        );
        let now = Instant::now();
        if let Some(w) = wakeups.as_mut()
            && w.due(now)
        {
            arm(&mut engine.collector.probes, true);
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
            match w.after_collection(Instant::now(), by_event, applied, acts) {
                Arming::Arm => arm(&mut engine.collector.probes, true),
                Arming::Disarm => arm(&mut engine.collector.probes, false),
                Arming::Later => {}
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
    fn events_are_armed_only_while_an_early_collection_could_write() {
        let mut w = EventWakeups::new(Duration::from_millis(100));
        let t0 = Instant::now();
        // Observing or advising: the kernel sends nothing.
        assert_eq!(w.after_collection(t0, false, false, false), Arming::Disarm);
        // Enforcing: armed at every tick.
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        // An event that led to a write: armed again after the gap.
        assert_eq!(w.after_collection(t0, true, true, true), Arming::Later);
        assert!(!w.due(t0 + Duration::from_millis(50)));
        assert!(w.due(t0 + Duration::from_millis(100)));
        assert!(!w.due(t0 + Duration::from_millis(150)), "once");
        // An event that changed nothing: not before the next tick.
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert!(!w.due(t0 + Duration::from_secs(60)));
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        // Fruitless again and again: the ticks skipped double, up to a bound.
        let ticks_until_armed = |w: &mut EventWakeups| {
            assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
            (1..)
                .find(|_| w.after_collection(t0, false, false, true) == Arming::Arm)
                .unwrap()
        };
        let waits: Vec<u32> = (0..9).map(|_| ticks_until_armed(&mut w)).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64, 64]);
        // A useful one starts over.
        assert_eq!(w.after_collection(t0, true, true, true), Arming::Later);
        assert_eq!(ticks_until_armed(&mut w), 1);
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
