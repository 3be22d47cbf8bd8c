//! Loading nettune's eBPF object and attaching, for each signal, the best variant
//! this kernel supports; reading the programs' maps.
//!
//! Kernel differences stop here. Each signal has an ordered chain of variants
//! (e.g. `tp_btf` before the classic tracepoint, fentry before kprobe before a
//! procfs counter); [`Probes::load`] tries them in order, keeps the first that
//! loads and attaches, and records why each other one did not in a
//! [`Report`]. Everything downstream reads the same [`ProbeReadings`] whatever
//! variant is attached, through the [`ProbeSource`] trait that
//! `fake::FakeProbes` also implements (in tests).
//!
//! - [`offsets`]: kernel struct and tracepoint offsets, resolved from BTF and
//!   tracefs, handed to the programs before load;
//! - `chain`: trying a signal's variants in order;
//! - one module per signal: [`retransmit`], [`drops`], [`listen`], [`connect`],
//!   [`conversations`] (tc on host-side veths); `sock_state`, the program two of them
//!   share; [`events`] (the urgent-event ring buffer) and `maps` (reading
//!   per-CPU maps).

#[cfg(test)]
mod arch;
mod batch;
mod chain;
pub mod connect;
pub mod conversations;
pub mod drops;
pub mod events;
#[cfg(test)]
pub mod fake;
pub mod listen;
mod maps;
pub mod offsets;
pub mod retransmit;
mod sock_state;
pub mod sysctl_writes;

use std::collections::{BTreeMap, BTreeSet};

use aya::{Ebpf, EbpfLoader};
use nettune_common::{
    BudgetKey, Conversations, DnsCounters, DropKey, EventKind, ListenKey, ListenOrigin,
    ListenOverflow, ListenSocket, ProbeError, RetransmitCounters,
};

use chain::AttachContext;
pub use chain::{AttachError, LoadOptions, NamespaceBudgets};
pub use conversations::{InterfaceChanges, Taken, Timeouts};

use crate::{
    model::{
        drop_reasons::{DropReasons, NameSource},
        probes::Report,
        sample::{LostEvents, ProgramStats},
    },
    sys::{Link, btf::Btf, tracefs::Tracefs},
};
use offsets::ResolvedOffsets;

/// The eBPF object, built by build.rs with the pinned nightly and embedded here.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nettune"));

/// The probes could not load at all (as opposed to one variant failing, which is
/// recorded and falls back).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The object itself did not load (e.g. a map could not be created).
    #[error("cannot load nettune's eBPF object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
}

/// A map of the loaded programs could not be read or written (each tick).
#[derive(Debug, thiserror::Error)]
#[error("eBPF map `{name}`: {source}")]
pub struct MapReadError {
    /// The map's name.
    pub name: &'static str,
    /// aya's error.
    #[source]
    pub source: Box<aya::maps::MapError>,
}

/// Everything the programs' maps hold, read once per tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeReadings {
    /// Retransmit counters per netns inode.
    pub retransmits: BTreeMap<u32, RetransmitCounters>,
    /// Drops per (netns, ifindex, reason).
    pub drops: BTreeMap<DropKey, u64>,
    /// Overflows per listening socket (fentry/kprobe variants only).
    pub listen_overflows: BTreeMap<ListenKey, ListenOverflow>,
    /// How sockets that started listening lately did, by (netns, inode).
    pub listen_origins: BTreeMap<ListenSocket, ListenOrigin>,
    /// connect() calls that failed with `EADDRNOTAVAIL`, per netns inode.
    pub connect_eaddrnotavail: BTreeMap<u32, u64>,
    /// Conversations per watched host-side interface: ifindex → (name, counters).
    pub conversations: BTreeMap<u32, (String, Conversations)>,
    /// DNS per server address (IPv4-mapped for IPv4).
    pub dns_servers: BTreeMap<[u8; 16], DnsCounters>,
    /// Writers of `net.*` sysctls seen (with the `cgroup_sysctl` variant).
    pub sysctl_writers: Vec<crate::model::sysctl_writers::SysctlWriterFigures>,
    /// The programs' own errors.
    pub probe_errors: Vec<(ProbeError, u64)>,
    /// Urgent events the kernel side could not send.
    pub lost_events: LostEvents,
    /// Each program's runs and run time, by name, while the kernel counts them
    /// (`agent.program_stats`).
    pub program_stats: BTreeMap<String, ProgramStats>,
}

impl ProbeReadings {
    /// Every namespace the maps counted something in.
    pub fn namespaces_seen(&self) -> impl Iterator<Item = u32> + '_ {
        self.retransmits
            .keys()
            .copied()
            .chain(self.drops.keys().map(|k| k.netns))
            .chain(self.connect_eaddrnotavail.keys().copied())
            .chain(self.listen_origins.keys().map(|s| s.netns))
    }
}

/// What collection needs from the probes: the real [`Probes`], or a fake.
pub trait ProbeSource {
    /// What attached, what was skipped and why.
    fn report(&self) -> &Report;

    /// This kernel's drop reason names.
    fn drop_reasons(&self) -> &DropReasons;

    /// Reads every map once.
    fn read(&self) -> Result<ProbeReadings, MapReadError>;

    /// Removes every map entry of namespaces not in `alive`, so a departed pod's
    /// figures disappear (and its inode, if the kernel reuses it, starts from
    /// zero). Returns how many entries were removed. Namespace 0 (drops nothing
    /// could attribute) is kept.
    fn forget_namespaces(&mut self, alive: &BTreeSet<u32>) -> Result<usize, MapReadError>;

    /// Removes every map entry of namespace `netns` keyed by an interface not in
    /// `listed` (that namespace's interfaces, as just listed), so a departed
    /// pod's host-side veth releases its entries though the host namespace stays
    /// (issue 19, defect 11). Returns how many entries were removed. Ifindex 0
    /// (drops with no device) is kept.
    fn forget_interfaces(
        &mut self,
        netns: u32,
        listed: &BTreeSet<u32>,
    ) -> Result<usize, MapReadError>;

    /// Forgets listen origins already taken, so the next read returns only new
    /// ones.
    fn forget_listen_origins(&mut self, taken: &[ListenSocket]) -> Result<(), MapReadError>;

    /// Attaches the tc programs to host-side veths in `veths` not yet watched, and
    /// forgets watched ones that are no longer there.
    fn watch_interfaces(&mut self, veths: &[&Link]) -> InterfaceChanges;

    /// The urgent-event ring buffer's fd, to wait on (none by default).
    fn events_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    /// Takes every urgent event waiting (none by default).
    fn drain_events(&mut self) -> Vec<nettune_common::Event> {
        Vec::new()
    }

    /// Forwards the programs' pending diagnostics to this process's log.
    fn flush_kernel_log(&mut self) {}

    /// Takes out of the kernel maps the DNS queries sent more than
    /// `timeouts.dns` ago and the TCP handshakes started more than
    /// `timeouts.handshake` ago still unanswered, and the handshakes refused
    /// since the last call (nothing by default).
    fn take_unanswered_and_refused(&mut self, _timeouts: Timeouts) -> Result<Taken, MapReadError> {
        Ok(Taken::default())
    }

    /// Makes the kernel hold other writers of each sysctl in `floors` (dotted
    /// name → lowest value) to its floor, and lets go of every other (nothing
    /// by default).
    fn set_guards(&mut self, _floors: &BTreeMap<String, u64>) -> Result<(), MapReadError> {
        Ok(())
    }

    /// Counts connects failing for lack of a local port while `on` (the
    /// on-demand `connect_eaddrnotavail` program, see [`connect`]); returns
    /// whether it counts now (never, by default).
    fn watch_connects(&mut self, _on: bool) -> bool {
        false
    }

    /// Arms (or disarms) urgent events of `kind`: an armed kind is sent once,
    /// then disarmed by the program that sent it (nothing by default).
    fn arm_events(&mut self, _kind: EventKind, _armed: bool) -> Result<(), MapReadError> {
        Ok(())
    }

    /// Makes `namespaces` the quiet ones: they send no urgent events even while
    /// the kind is armed (nothing by default). The kernel holds
    /// [`nettune_common::events::QUIET_NAMESPACES`] of them.
    fn quiet_namespaces(&mut self, _namespaces: &[u32]) {}

    /// Diagnostics forwarded so far (none by default).
    fn kernel_log_records(&self) -> u64 {
        0
    }
}

/// The programs' diagnostics on their way to this process's logger, counted.
struct KernelLog {
    records: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl log::Log for KernelLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.records
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::logger().log(record);
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

/// The loaded object with every signal's chosen variant attached. Dropping it
/// detaches every program and frees every map (nothing is pinned).
pub struct Probes {
    ebpf: Ebpf,
    report: Report,
    drop_reasons: DropReasons,
    events: Option<events::EventReader>,
    traffic: conversations::Watcher,
    /// Keeps the kernel counting runs and run time while held
    /// (`agent.program_stats`).
    _stats: Option<std::os::fd::OwnedFd>,
    /// The programs' own rare diagnostics (aya-log), forwarded to our log.
    kernel_log: Option<aya_log::EbpfLogger<KernelLog>>,
    /// The guards last written to the kernel (`tuning.guard`).
    guards: BTreeMap<String, u64>,
    /// `inet_sock_set_state` while it is attached ([`sock_state`]: on demand).
    sock_state_link: Option<sock_state::Link>,
    /// How many it forwarded.
    kernel_log_records: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Probes {
    /// Loads the object with this kernel's offsets and attaches every signal.
    ///
    /// Only a broken object is an error; a signal whose variants all fail is
    /// recorded in the report as not attached.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        let mut warnings = Vec::new();
        if let Err(e) = raise_memlock_limit() {
            warnings.push(format!(
                "could not raise RLIMIT_MEMLOCK ({e}); harmless on Linux 5.11+, where BPF \
                 memory is charged to the cgroup instead"
            ));
        }
        let tracefs = match &options.tracefs_path {
            Some(path) => Tracefs::at_checked(path),
            None => Tracefs::find_or_mount(),
        };
        if let Err(e) = &tracefs {
            warnings.push(format!("{e}; classic tracepoint variants are unavailable"));
        }
        let btf = match &options.btf_path {
            Some(path) => Btf::from_file(path),
            None => Btf::from_sys_fs(),
        };
        if let Err(e) = &btf {
            warnings.push(format!(
                "{e}; BTF is needed for kernel struct offsets and tp_btf/fentry: signals \
                 that read kernel structs fall back to procfs counters where they have one"
            ));
        }
        let offsets = ResolvedOffsets::resolve(btf.as_ref(), tracefs.as_ref());
        // Our parsed BTF held all of vmlinux's types: drop it before loading.
        drop(btf);
        if offsets.drop_reasons.source == NameSource::None {
            warnings.push(
                "drop reason names unavailable (no BTF enum skb_drop_reason, no tracefs \
                 format): reasons are shown as numbers"
                    .to_owned(),
            );
        }
        // aya needs its own parse of the kernel's BTF to find tp_btf/fentry
        // targets: parse it once, for the loader and every program.
        let aya_btf = match &options.btf_path {
            Some(path) => aya::Btf::parse_file(path, aya::Endianness::default()),
            None => aya::Btf::from_sys_fs(),
        }
        .map_err(std::sync::Arc::new);
        let mut loader = EbpfLoader::new();
        if let Ok(btf) = &aya_btf {
            loader.btf(btf);
        }
        let mut ebpf = loader
            .override_global(
                nettune_common::offsets::OFFSETS_GLOBAL,
                &offsets.offsets,
                true,
            )
            .override_global(
                nettune_common::events::URGENT_EVENTS_GLOBAL,
                &u32::from(!options.without_urgent_events),
                true,
            )
            .override_global(
                nettune_common::budget::DROPS_BUDGET_GLOBAL,
                &options.budgets.drops,
                true,
            )
            .override_global(
                nettune_common::budget::LISTEN_BUDGET_GLOBAL,
                &options.budgets.listen,
                true,
            )
            .override_global(
                nettune_common::sysctl_writes::AGENT_TGID_GLOBAL,
                &std::process::id(),
                true,
            )
            // Unknown (0): every namespace but 0 gets a budget, the host's too.
            .override_global(
                nettune_common::budget::HOST_NETNS_GLOBAL,
                &crate::sys::netns::own_inode().unwrap_or(0),
                true,
            )
            .load(OBJECT)
            .map_err(|e| LoadError::Object(Box::new(e)))?;
        let context = AttachContext {
            options: options.clone(),
            aya_btf,
            tracefs: tracefs.map_err(std::sync::Arc::new),
            offsets,
        };
        let signals = vec![
            retransmit::attach(&mut ebpf, &context),
            drops::attach(&mut ebpf, &context),
            listen::attach(&mut ebpf, &context),
            listen::attach_backlogs(&mut ebpf, &context),
            connect::attach(&mut ebpf, &context),
            conversations::attach(&mut ebpf, &context),
            drops::conntrack_status(),
            sysctl_writes::attach(&mut ebpf, &context),
        ];
        let events = match events::EventReader::new(&mut ebpf) {
            Ok(reader) => Some(reader),
            Err(e) => {
                warnings.push(format!("urgent events unavailable: {e}"));
                None
            }
        };
        // Every kind armed: the first of each reaches whoever reads the ring; the
        // daemon then arms them only while an early collection could matter.
        if let Some(reader) = events.as_ref().filter(|_| !options.without_urgent_events) {
            for kind in [EventKind::NetfilterDrop, EventKind::ListenOverflow] {
                reader.arm(kind, true);
            }
        }
        let kernel_log_records = std::sync::Arc::default();
        let counted = KernelLog {
            records: std::sync::Arc::clone(&kernel_log_records),
        };
        let kernel_log = match aya_log::EbpfLogger::init_with_logger(&mut ebpf, counted) {
            Ok(logger) => Some(logger),
            Err(e) => {
                warnings.push(format!("the programs' diagnostics are not forwarded: {e}"));
                None
            }
        };
        let AttachContext {
            aya_btf, offsets, ..
        } = context;
        // aya's parse of the kernel's BTF is not needed any more.
        drop(aya_btf);
        let drop_reasons = offsets.drop_reasons;
        let stats = options
            .program_stats
            .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
            .and_then(|enabled| {
                enabled
                    .map_err(|e| {
                        warnings.push(format!(
                            "program statistics unavailable ({e}; BPF_ENABLE_STATS needs Linux \
                             5.8 and CAP_SYS_ADMIN): nettune_program_* series are left out"
                        ));
                    })
                    .ok()
            });
        crate::sys::release_free_memory();
        Ok(Self {
            ebpf,
            report: Report { signals, warnings },
            drop_reasons,
            events,
            traffic: conversations::Watcher::default(),
            _stats: stats,
            kernel_log,
            kernel_log_records,
            guards: BTreeMap::new(),
            sock_state_link: None,
        })
    }

    /// Each loaded program's runs and run time, while the kernel counts them.
    fn program_stats(&self) -> BTreeMap<String, ProgramStats> {
        if self._stats.is_none() {
            return BTreeMap::new();
        }
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some((
                    name.to_owned(),
                    ProgramStats {
                        runs: info.run_count(),
                        run_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    },
                ))
            })
            .collect()
    }

    /// Sum over CPUs of the programs' own error counters, by error kind.
    fn probe_errors(&self) -> Result<Vec<(ProbeError, u64)>, MapReadError> {
        let slots = maps::per_cpu_array_sums(&self.ebpf, "PROBE_ERRORS")?;
        Ok(ProbeError::ALL
            .iter()
            .map(|&e| (e, slots.get(e as usize).copied().unwrap_or(0)))
            .collect())
    }
}

impl ProbeSource for Probes {
    fn report(&self) -> &Report {
        &self.report
    }

    fn drop_reasons(&self) -> &DropReasons {
        &self.drop_reasons
    }

    fn read(&self) -> Result<ProbeReadings, MapReadError> {
        Ok(ProbeReadings {
            retransmits: self.retransmits()?,
            drops: self.drops()?,
            listen_overflows: self.listen_overflows()?,
            listen_origins: self.listen_origins()?,
            connect_eaddrnotavail: self.connect_eaddrnotavail()?,
            conversations: self.conversations()?,
            dns_servers: self.dns_servers()?,
            sysctl_writers: self.sysctl_writes()?,
            probe_errors: self.probe_errors()?,
            lost_events: self
                .events
                .as_ref()
                .map(events::EventReader::lost)
                .unwrap_or_default(),
            program_stats: self.program_stats(),
        })
    }

    fn forget_namespaces(&mut self, alive: &BTreeSet<u32>) -> Result<usize, MapReadError> {
        let gone = |netns: u32| netns != 0 && !alive.contains(&netns);
        let ebpf = &mut self.ebpf;
        Ok(maps::remove_keys::<u32, RetransmitCounters>(
            ebpf,
            nettune_common::retransmit::RETRANSMITS_MAP,
            |k| gone(*k),
        )? + maps::remove_keys::<DropKey, u64>(ebpf, nettune_common::drops::DROPS_MAP, |k| {
            gone(k.netns)
        })? + maps::remove_keys::<ListenKey, ListenOverflow>(
            ebpf,
            nettune_common::listen::LISTEN_OVERFLOWS_MAP,
            |k| gone(k.netns),
        )? + maps::remove_keys::<u32, u64>(
            ebpf,
            nettune_common::connect::CONNECT_EADDRNOTAVAIL_MAP,
            |k| gone(*k),
        )? + maps::remove_plain_keys::<BudgetKey, u32>(
            ebpf,
            nettune_common::budget::BUDGET_MAP,
            |k| gone(k.netns),
        )?)
    }

    fn forget_interfaces(
        &mut self,
        netns: u32,
        listed: &BTreeSet<u32>,
    ) -> Result<usize, MapReadError> {
        // DROPS is the one map keyed by interface (conversations are released
        // with their tc programs, in `watch_interfaces`).
        maps::remove_keys::<DropKey, u64>(&mut self.ebpf, nettune_common::drops::DROPS_MAP, |k| {
            k.netns == netns && k.ifindex != 0 && !listed.contains(&k.ifindex)
        })
    }

    fn forget_listen_origins(&mut self, taken: &[ListenSocket]) -> Result<(), MapReadError> {
        maps::remove_entries::<ListenSocket, ListenOrigin>(
            &mut self.ebpf,
            nettune_common::listen::LISTEN_ORIGINS_MAP,
            taken,
        )
    }

    fn watch_interfaces(&mut self, veths: &[&Link]) -> InterfaceChanges {
        self.refresh_interfaces(veths)
    }

    fn events_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        self.events.as_ref().map(|r| r.ring.as_fd())
    }

    fn drain_events(&mut self) -> Vec<nettune_common::Event> {
        self.events
            .as_mut()
            .map(events::EventReader::drain)
            .unwrap_or_default()
    }

    fn flush_kernel_log(&mut self) {
        if let Some(logger) = self.kernel_log.as_mut() {
            logger.flush();
        }
    }

    fn arm_events(&mut self, kind: EventKind, armed: bool) -> Result<(), MapReadError> {
        if let Some(reader) = &self.events {
            reader.arm(kind, armed);
        }
        Ok(())
    }

    fn quiet_namespaces(&mut self, namespaces: &[u32]) {
        if let Some(reader) = &self.events {
            reader.set_quiet(namespaces);
        }
    }

    fn take_unanswered_and_refused(&mut self, timeouts: Timeouts) -> Result<Taken, MapReadError> {
        self.take_conversations(timeouts)
    }

    fn set_guards(&mut self, floors: &BTreeMap<String, u64>) -> Result<(), MapReadError> {
        self.write_guards(floors)
    }

    fn watch_connects(&mut self, on: bool) -> bool {
        match self.set_sock_state_attached(on) {
            Ok(attached) => attached,
            Err(e) => {
                log::warn!("{}: {e}", connect::SIGNAL);
                self.sock_state_link.is_some()
            }
        }
    }

    fn kernel_log_records(&self) -> u64 {
        self.kernel_log_records
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Lifts the locked-memory limit that kernels before 5.11 charge BPF maps against.
fn raise_memlock_limit() -> std::io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct we own; it has no other effects.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
