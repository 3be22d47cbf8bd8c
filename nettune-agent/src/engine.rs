//! The engine: collection and tuning together — what `nettune run` does every
//! tick, and what `nettune top` runs in-process when no agent is running.

use crate::{
    collect::{Collector, Tick, cri::RuntimeWatcher},
    config::Config,
    model::{
        sample::ReceivedEvents,
        snapshot::Published,
        tuning::{Demotion, Mode, Outcome},
    },
    probes::{MapReadError, ProbeSource, Probes},
    sys::{Kernel, System},
    tune::tuner::{self, Tuner},
};

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
    /// Why the mode is milder than the config's, if it is.
    mode_demoted: Option<Demotion>,
    /// Polls the container runtime for pod names (stopped with the engine).
    _runtime: Option<RuntimeWatcher>,
}

impl<P: ProbeSource, S: System + Clone + Send + 'static> Engine<P, S> {
    /// A collector over `probes`, pod names from the container runtime (polled
    /// on a thread of its own; `identity.cri_socket = ""` turns it off) and,
    /// unless the journal is unusable, a tuner: without one it observes, and
    /// says why ([`Demotion::JournalUnusable`]).
    pub fn new(probes: P, system: S, config: &Config) -> Self {
        let mem_total = tuner::mem_total(&system);
        let mut config = config.clone();
        let mut mode_demoted = None;
        if config.tuning.mode == Mode::Enforce && system.sysctls_read_only() {
            log::warn!(
                "{} is read-only or missing here (a container's own /proc/sys: mount the node's and set \
                 tuning.proc_sys to it, as the enforce overlay does): tuning switches from \
                 enforce to advise; observing continues",
                config.tuning.proc_sys.display()
            );
            config.tuning.mode = Mode::Advise;
            mode_demoted = Some(Demotion::ProcSysReadOnly);
        }
        let tuner = match Tuner::new(system.clone(), config.tuning_with_own_ports(), mem_total) {
            Ok(t) => Some(t),
            // Observing needs no journal.
            Err(e) if config.tuning.mode == Mode::Observe => {
                log::warn!("tuning state unavailable ({e}); observing only");
                None
            }
            // Advising and enforcing do; the node's observation goes on without
            // them (an agent the kubelet restarts forever observes nothing), and
            // the file is left as it is: it may hold the only record of originals.
            Err(e) => {
                log::error!(
                    "tuning is off: {e}. Observing continues; restart the agent once the \
                     journal is fixed (nettune_tuning_demoted{{reason=\"journal_unusable\"}} is 1 \
                     until then)"
                );
                config.tuning.mode = Mode::Observe;
                mode_demoted = Some(Demotion::JournalUnusable);
                None
            }
        };
        let config = &config;
        let runtime = RuntimeWatcher::start(&config.identity, system.clone());
        let mut collector = Collector::new(probes, system, config);
        if let Some(watcher) = &runtime {
            collector = collector.with_runtime(watcher.board());
        }
        Self {
            collector,
            tuner,
            suppressed_event_collections: 0,
            events_received: ReceivedEvents::default(),
            mode_demoted,
            _runtime: runtime,
        }
    }

    /// An engine for someone looking at the node (`nettune top` without a running
    /// agent): it observes, or at most advises, whatever the config's mode — a
    /// viewer never writes a sysctl.
    pub fn for_viewer(probes: P, system: S, config: &Config) -> Self {
        let mut config = config.clone();
        if config.tuning.mode == Mode::Enforce {
            config.tuning.mode = Mode::Advise;
        }
        Self::new(probes, system, &config)
    }

    /// Whether an urgent collection could change something: the tuner writes
    /// (enforce mode). Observing and advising wait for the tick.
    pub fn acts_on_urgent_events(&self) -> bool {
        self.tuner.is_some() && self.collector.mode() == Mode::Enforce
    }

    /// One collection, then a tuning round on its Snapshot; returns the tick,
    /// what to publish, and whether the round wrote a change.
    pub fn step(&mut self) -> Result<Step, MapReadError> {
        let tick = self.collector.tick()?;
        let mut applied = false;
        let mut mode_demoted = self.mode_demoted;
        let tuning = self.tuner.as_mut().map(|t| {
            applied = t
                .round(&tick.snapshot, tuner::now_unix())
                .iter()
                .any(|d| d.result == Outcome::Applied);
            if t.journal_error().is_some() {
                mode_demoted = Some(Demotion::JournalUnusable);
            }
            t.state()
        });
        if let Some(t) = &self.tuner
            && let Err(e) = self.collector.probes.set_guards(&t.guard_floors())
        {
            log::warn!("tuning.guard: cannot update the kernel's guards: {e}");
        }
        let published = Published {
            snapshot: tick.snapshot.clone(),
            tuning,
            mode_demoted,
            kernel_log_records: self.collector.probes.kernel_log_records(),
            run_netns_unpropagated: crate::sys::netns::run_netns_unpropagated(),
            event_collections_suppressed: self.suppressed_event_collections,
            events_received: self.events_received,
        };
        Ok(Step {
            tick,
            published,
            applied,
        })
    }
}

/// What one [`Engine::step`] did.
pub struct Step {
    /// The collection.
    pub tick: Tick,
    /// What to publish.
    pub published: Published,
    /// Whether the tuning round wrote a change.
    pub applied: bool,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        model::{sample::NetnsSysctls, tuning::Target},
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
                sysctls: NetnsSysctls {
                    somaxconn: Some(4096),
                    ..NetnsSysctls::default()
                },
            },
        );
        system.make_sysctls_read_only();
        let state = std::env::temp_dir().join(format!("nettune-ro-{}", std::process::id()));
        let mut config = Config::without_runtime();
        config.tuning.mode = Mode::Enforce;
        config.tuning.state_dir.clone_from(&state);
        let mut engine = Engine::new(FakeProbes::default(), system.clone(), &config);
        engine.step().unwrap();
        system.set_net_file(
            1,
            "netstat",
            Some("TcpExt: ListenOverflows ListenDrops TCPReqQFullDrop\nTcpExt: 50 50 0\n"),
        );
        let Step {
            tick, published, ..
        } = engine.step().unwrap();
        assert!(tick.snapshot.workloads[0].listen_overflows.per_second > 0.0);
        assert_eq!(tick.snapshot.mode, Mode::Advise);
        assert_eq!(published.mode_demoted, Some(Demotion::ProcSysReadOnly));
        let decisions = published.tuning.unwrap().recent;
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!(decisions[0].result, Outcome::Advised);
        assert_eq!(
            system
                .sysctl(&Target::Node, "net.core.somaxconn")
                .as_deref(),
            Some("4096")
        );
        let _ = std::fs::remove_dir_all(state);
    }

    #[test]
    fn a_corrupt_journal_turns_the_tuner_off_and_observing_goes_on() {
        let system = Arc::new(FakeSystem::new());
        system.add_namespace(1, None, true);
        system.set_sysctl(&Target::Node, "net.core.somaxconn", "4096");
        let state = std::env::temp_dir().join(format!("nettune-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(&state).unwrap();
        let journal = state.join("journal.json");
        std::fs::write(&journal, "{").unwrap();
        let mut config = Config::without_runtime();
        config.tuning.mode = Mode::Enforce;
        config.tuning.state_dir.clone_from(&state);
        crate::sys::fake::logs::take();
        // It starts: a corrupt journal does not stop the agent.
        let mut engine = Engine::new(FakeProbes::default(), system.clone(), &config);
        let Step { published, .. } = engine.step().unwrap();
        assert_eq!(published.snapshot.mode, Mode::Observe);
        assert_eq!(published.mode_demoted, Some(Demotion::JournalUnusable));
        assert!(published.tuning.is_none());
        assert!(!engine.acts_on_urgent_events());
        let errors: Vec<String> = crate::sys::fake::logs::take()
            .into_iter()
            .filter(|(level, _)| *level == log::Level::Error)
            .map(|(_, line)| line)
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(&journal.display().to_string())
                && errors[0].contains("fix or move it")
                && errors[0].contains("restart"),
            "{}",
            errors[0]
        );
        // Left as it was: it may hold the only record of the originals.
        assert_eq!(std::fs::read_to_string(&journal).unwrap(), "{");
        let _ = std::fs::remove_dir_all(state);
    }
}
