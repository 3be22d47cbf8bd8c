//! Label sets: one struct per combination of labels a metric carries, so a
//! series cannot be given the wrong labels, too few, or in the wrong order.

/// A metric's labels: their names, and the values of one series in that order.
pub trait Labels {
    /// The label names, in the order the exposition prints them.
    const NAMES: &'static [&'static str];

    /// The values, in the order of [`Self::NAMES`].
    fn into_values(self) -> Vec<String>;
}

/// Declares a label set: a struct with one `String` field per label, named as the
/// label is.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$field_doc:meta])* $field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name {
            $($(#[$field_doc])* pub $field: String,)*
        }

        impl Labels for $name {
            const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            fn into_values(self) -> Vec<String> {
                vec![$(self.$field),*]
            }
        }
    };
}

label_set!(
    /// No labels: one series.
    NoLabels {}
);

label_set!(
    /// A pod (or the node: both empty namespace, `pod="node"`).
    Pod {
        /// The pod's Kubernetes namespace (empty for the node and unnamed ones).
        namespace,
        /// The pod's name, or how nettune names the network namespace.
        pod,
    }
);

label_set!(
    /// A pod and a kernel drop reason.
    PodReason {
        /// See [`Pod::namespace`].
        namespace,
        /// See [`Pod::pod`].
        pod,
        /// The drop reason's name (`enum skb_drop_reason` without its prefix).
        reason,
    }
);

label_set!(
    /// A pod and its host-side interface.
    PodInterface {
        /// See [`Pod::namespace`].
        namespace,
        /// See [`Pod::pod`].
        pod,
        /// The host-side interface's name.
        interface,
    }
);

label_set!(
    /// A listening socket of a pod. Sockets sharing all of these (a
    /// `SO_REUSEPORT` group) are one series.
    Listener {
        /// See [`Pod::namespace`].
        namespace,
        /// See [`Pod::pod`].
        pod,
        /// The local address.
        address,
        /// The local port.
        port,
        /// The process that listened, when known.
        process,
    }
);

label_set!(
    /// A sysctl nettune manages, in one place.
    SysctlTarget {
        /// Its dotted name.
        sysctl,
        /// `node`, or the pod whose namespace it is in.
        target,
    }
);

label_set!(
    /// Tuning decisions of one kind.
    Decision {
        /// The sysctl.
        sysctl,
        /// `raise` or `reserve`.
        action,
        /// The outcome (applied, advised, refused, …).
        result,
    }
);

label_set!(
    /// Verdicts on applied changes.
    Effect {
        /// The sysctl.
        sysctl,
        /// no_effect_yet, effective, ineffective, unknown.
        verdict,
    }
);

label_set!(
    /// A signal's variant.
    SignalVariant {
        /// The signal (`tcp_retransmit`, `drops`, …).
        signal,
        /// The variant (`tp_btf`, `tracepoint`, …).
        variant,
    }
);

label_set!(
    /// The agent's build.
    Build {
        /// nettune's version.
        version,
        /// The running kernel's release.
        kernel,
    }
);

label_set!(
    /// An error the eBPF programs met.
    ProbeError {
        /// Its kind.
        error,
    }
);

label_set!(
    /// A shared kernel map with per-namespace budgets.
    BudgetedMap {
        /// `drops` or `listen_overflows`.
        map,
    }
);

label_set!(
    /// Why urgent events were not delivered.
    LostCause {
        /// `ring_full` or `not_armed`.
        cause,
    }
);

label_set!(
    /// A kind of urgent event.
    EventKind {
        /// `netfilter_drop`, `listen_overflow` or `other`.
        kind,
    }
);

label_set!(
    /// A source of pod names.
    IdentitySource {
        /// `cri`: the container runtime.
        source,
    }
);

label_set!(
    /// A drop reason alone (drops nothing could attribute to a namespace).
    Reason {
        /// See [`PodReason::reason`].
        reason,
    }
);

label_set!(
    /// One of nettune's eBPF programs.
    Program {
        /// Its name in the object (e.g. `kfree_skb_btf`).
        program,
    }
);

label_set!(
    /// Why the tuner runs milder than its config asks.
    DemotionReason {
        /// `proc_sys_read_only` or `journal_unusable`.
        reason,
    }
);

label_set!(
    /// The tuner's mode.
    Mode {
        /// observe, advise or enforce.
        mode,
    }
);

label_set!(
    /// A pod and a DNS response code.
    PodRcode {
        /// See [`Pod::namespace`].
        namespace,
        /// See [`Pod::pod`].
        pod,
        /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, … (`OTHER` for codes above 5).
        rcode,
    }
);

label_set!(
    /// A pod and how its handshakes ended.
    PodResult {
        /// See [`Pod::namespace`].
        namespace,
        /// See [`Pod::pod`].
        pod,
        /// `answered`, `refused` or `timed_out`.
        result,
    }
);

label_set!(
    /// A pod and a direction.
    PodDirection {
        /// See [`Pod::namespace`].
        namespace,
        /// See [`Pod::pod`].
        pod,
        /// `sent` or `received`, by the pod.
        direction,
    }
);

label_set!(
    /// A pod, a direction and a kind of ICMP error.
    PodIcmp {
        /// See [`Pod::namespace`].
        namespace,
        /// See [`Pod::pod`].
        pod,
        /// `sent` or `received`, by the pod.
        direction,
        /// `frag_needed` (IPv6: packet too big), `port_unreachable`,
        /// `host_unreachable`, `net_unreachable`, `admin_prohibited`,
        /// `other_unreachable`, `time_exceeded`.
        kind,
    }
);

label_set!(
    /// A DNS server the pods asked.
    Server {
        /// Its address.
        server,
    }
);

label_set!(
    /// A DNS server and a response code.
    ServerRcode {
        /// See [`Server::server`].
        server,
        /// See [`PodRcode::rcode`].
        rcode,
    }
);

label_set!(
    /// A remote address and port and how handshakes to it failed.
    RemoteResult {
        /// `address:port` (`[v6]:port`).
        remote,
        /// `refused` or `timed_out`.
        result,
    }
);

/// The `pod` label of workloads summed beyond `agent.max_pod_series`, and the
/// `port` (or `interface`) label of what a workload has beyond its own series.
pub const OTHER: &str = "_other";

impl Pod {
    /// The labels of `namespace`/`pod`.
    pub fn new(namespace: &str, pod: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
        }
    }

    /// The labels of the workloads summed under `_other`.
    pub fn other() -> Self {
        Self::new("", OTHER)
    }

    /// These labels with `reason`.
    pub fn with_reason(self, reason: &str) -> PodReason {
        PodReason {
            namespace: self.namespace,
            pod: self.pod,
            reason: reason.to_owned(),
        }
    }

    /// These labels with a DNS response code.
    pub fn with_rcode(self, rcode: &str) -> PodRcode {
        PodRcode {
            namespace: self.namespace,
            pod: self.pod,
            rcode: rcode.to_owned(),
        }
    }

    /// These labels with a handshake's result.
    pub fn with_result(self, result: &str) -> PodResult {
        PodResult {
            namespace: self.namespace,
            pod: self.pod,
            result: result.to_owned(),
        }
    }

    /// These labels with a direction.
    pub fn with_direction(self, direction: &str) -> PodDirection {
        PodDirection {
            namespace: self.namespace,
            pod: self.pod,
            direction: direction.to_owned(),
        }
    }

    /// These labels with an ICMP error's direction and kind.
    pub fn with_icmp(self, direction: &str, kind: &str) -> PodIcmp {
        PodIcmp {
            namespace: self.namespace,
            pod: self.pod,
            direction: direction.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// These labels with `interface`.
    pub fn with_interface(self, interface: &str) -> PodInterface {
        PodInterface {
            namespace: self.namespace,
            pod: self.pod,
            interface: interface.to_owned(),
        }
    }
}

impl SysctlTarget {
    /// `sysctl` at `target`.
    pub fn new(sysctl: &str, target: &str) -> Self {
        Self {
            sysctl: sysctl.to_owned(),
            target: target.to_owned(),
        }
    }
}

label_set!(
    /// The cluster around the node (`model::context`).
    NodeInfo {
        /// The Service proxy.
        proxy,
        /// The CNI.
        cni,
        /// The encapsulation between nodes.
        encapsulation,
        /// Whether NodeLocal DNSCache answers here (`true`/`false`).
        nodelocal_dns,
    }
);

label_set!(
    /// A sysctl and who wrote it.
    SysctlWriter {
        /// The sysctl, dotted.
        sysctl,
        /// The writer's command name.
        writer,
    }
);
