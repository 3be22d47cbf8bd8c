//! What each rule observes, as `diagnose` prints it: the evidence and the fix
//! with this node's values, all of them taken from the tunables table.

use crate::{
    config::TuningConfig,
    diagnose,
    model::{
        context::NodeContext,
        conversations::{
            ConversationFigures, DnsFigures, DnsServerFigures, LatencyHistogram, RemoteFigures,
        },
        counter::CounterRate,
        sample::{Attribution, NetnsSysctls},
        snapshot::{ConntrackFigures, Listener, Snapshot, WorkloadFigures},
        workload::{Workload, WorkloadKind},
    },
    tune::rules::Severity,
};

fn rate(per_second: f64) -> CounterRate {
    CounterRate {
        total: (per_second * 10.0) as u64,
        per_second,
    }
}

fn node() -> WorkloadFigures {
    WorkloadFigures::new(1, Workload::node())
}

fn snapshot(workloads: Vec<WorkloadFigures>) -> Snapshot {
    crate::model::snapshot::for_tests(workloads)
}

fn ids(s: &Snapshot) -> Vec<&'static str> {
    diagnose::findings(s, &TuningConfig::default())
        .iter()
        .map(|f| f.id)
        .collect()
}

#[test]
fn a_full_conntrack_table_is_critical_with_the_fix() {
    let mut pod = WorkloadFigures::new(2, Workload::new(WorkloadKind::NamedNetns, "netns:test"));
    pod.conntrack = Some(ConntrackFigures {
        entries: 100,
        drop: rate(7.0),
        ..ConntrackFigures::default()
    });
    let mut s = snapshot(vec![node(), pod]);
    s.conntrack_max = Some(100);
    let f = diagnose::findings(&s, &TuningConfig::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].id, f[0].severity),
        ("conntrack_full", Severity::Critical)
    );
    assert!(
        f[0].evidence
            .starts_with("netns:test: 100 of 100 conntrack entries (100 %), 7.0 packets/s dropped"),
        "{}",
        f[0].evidence
    );
    assert!(
        f[0].fix
            .contains("sysctl -w net.netfilter.nf_conntrack_max=1048576"),
        "the guide's value, from the tunables table: {}",
        f[0].fix
    );
}

#[test]
fn a_quiet_node_has_no_findings() {
    let mut n = node();
    n.conntrack = Some(ConntrackFigures {
        entries: 1000,
        ..ConntrackFigures::default()
    });
    n.tcp_time_wait = Some(100);
    n.netns_sysctls = Some(NetnsSysctls {
        ephemeral_ports: Some((32768, 60999)),
        ..NetnsSysctls::default()
    });
    n.out_segments = rate(10_000.0);
    n.retransmit_segments = rate(10.0);
    let mut s = snapshot(vec![n]);
    s.conntrack_max = Some(262_144);
    assert!(ids(&s).is_empty(), "{:?}", ids(&s));
}

#[test]
fn each_signal_maps_to_its_problem() {
    let mut n = node();
    n.tcp_time_wait = Some(20_000);
    n.netns_sysctls = Some(NetnsSysctls {
        ephemeral_ports: Some((32768, 60999)),
        ..NetnsSysctls::default()
    });
    n.out_segments = rate(10_000.0);
    n.retransmit_segments = rate(500.0);
    n.listen_overflows = rate(3.0);
    let mut s = snapshot(vec![n]);
    s.softnet_dropped = Some(rate(9.0));
    assert_eq!(
        ids(&s),
        [
            "listen_overflows",
            "port_exhaustion",
            "backlog_drops",
            "tcp_retransmissions"
        ]
    );
    let ports = diagnose::findings(&s, &TuningConfig::default())
        .into_iter()
        .find(|f| f.id == "port_exhaustion")
        .unwrap();
    assert_eq!(
        ports.evidence,
        "20000 sockets in TIME_WAIT for 28232 local ports (32768-60999)"
    );
    assert!(
        ports
            .fix
            .contains("net.ipv4.ip_local_port_range (guide: 1024 65535)"),
        "{}",
        ports.fix
    );
}

/// A listener of the node on `port` with `queue` waiting for `limit`.
fn listener(port: u16, queue: u32, limit: u32) -> Listener {
    Listener {
        netns: 1,
        address: std::net::Ipv4Addr::UNSPECIFIED.into(),
        port,
        inode: u32::from(port),
        process: None,
        requested_backlog: None,
        capped_by_somaxconn: None,
        limit,
        queue,
        overflows: rate(0.0),
        attribution: Attribution::AtLimit,
    }
}

/// The node overflowing with `listeners` and somaxconn `somaxconn`.
fn overflowing(listeners: Vec<Listener>, somaxconn: u32) -> diagnose::Finding {
    let mut n = node();
    n.listen_overflows = rate(40.0);
    n.netns_sysctls = Some(NetnsSysctls {
        somaxconn: Some(somaxconn),
        ..NetnsSysctls::default()
    });
    let mut s = snapshot(vec![n]);
    s.listeners = listeners;
    diagnose::findings(&s, &TuningConfig::default()).remove(0)
}

#[test]
fn a_listener_whose_own_backlog_is_the_cap_is_told_to_raise_it_not_somaxconn() {
    let f = overflowing(vec![listener(8080, 9, 8), listener(22, 0, 128)], 4096);
    assert_eq!(
        f.evidence,
        "40.0 listen overflows/s in node; full: 0.0.0.0:8080 (queue 9 of 8)"
    );
    assert!(
        f.fix.contains("port 8080 has a limit of 8")
            && f.fix.contains("raising it changes nothing"),
        "{}",
        f.fix
    );
}

#[test]
fn a_listener_at_somaxconn_is_told_to_raise_it_and_listen_again() {
    let f = overflowing(vec![listener(80, 129, 128)], 128);
    assert!(
        f.fix.contains(
            "raise net.core.somaxconn (nettune goes up to 32768 on the node, 65535 in pods)"
        ) && f.fix.contains("until the application listens again"),
        "{}",
        f.fix
    );
}

#[test]
fn without_a_full_listener_the_fix_says_where_to_look() {
    let f = overflowing(vec![listener(80, 0, 128)], 4096);
    assert!(
        f.fix.contains("no listener") && f.fix.contains("ss -lnt"),
        "{}",
        f.fix
    );
}

/// A pod with conversations, as the tc programs and the collector leave them.
fn talking_pod(netns: u32) -> WorkloadFigures {
    let mut pod = WorkloadFigures::new(netns, Workload::new(WorkloadKind::Pod, "shop/web"));
    pod.conversations = Some(ConversationFigures::default());
    pod
}

fn conversations(w: &mut WorkloadFigures) -> &mut ConversationFigures {
    w.conversations.as_mut().unwrap()
}

fn finding(s: &Snapshot, id: &str) -> Option<diagnose::Finding> {
    diagnose::findings(s, &TuningConfig::default())
        .into_iter()
        .find(|f| f.id == id)
}

#[test]
fn unanswered_dns_is_critical_and_names_the_server() {
    let mut pod = talking_pod(2);
    let dns = &mut conversations(&mut pod).dns;
    dns.queries = rate(10.0);
    dns.unanswered = rate(2.0);
    let mut server = DnsServerFigures {
        server: "10.96.0.10".parse().unwrap(),
        dns: DnsFigures::default(),
    };
    server.dns.queries = rate(10.0);
    server.dns.unanswered = rate(2.0);
    let mut s = snapshot(vec![node(), pod]);
    s.dns_servers = vec![server];
    let f = finding(&s, "dns_failures").expect("a DNS finding");
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.evidence
            .starts_with("shop/web: 10.0 DNS queries/s, 2.0 unanswered/s (20 in all)"),
        "{}",
        f.evidence
    );
    assert!(
        f.evidence
            .contains("10.96.0.10 (20 unanswered, 0 failed of 100 queries)"),
        "{}",
        f.evidence
    );
    assert!(f.fix.contains("NodeLocal DNSCache"), "{}", f.fix);
}

#[test]
fn slow_dns_is_a_warning_and_fast_nxdomain_is_nothing() {
    let mut pod = talking_pod(2);
    let dns = &mut conversations(&mut pod).dns;
    dns.queries = rate(10.0);
    dns.responses.insert("NXDOMAIN".into(), rate(10.0));
    // 100 answered, all within 10 ms: NXDOMAIN is an answer, not a failure.
    dns.latency = LatencyHistogram {
        buckets: vec![(0.01, 100), (1.0, 100)],
        count: 100,
        sum_seconds: 0.1,
    };
    let quiet = snapshot(vec![node(), pod.clone()]);
    assert!(finding(&quiet, "dns_failures").is_none());
    // 10 of 100 beyond a second: slow.
    conversations(&mut pod).dns.latency.buckets = vec![(0.01, 80), (1.0, 90)];
    let f = finding(&snapshot(vec![node(), pod]), "dns_failures").expect("slow DNS");
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.evidence.contains("10 of 100 answers took over 1 s"),
        "{}",
        f.evidence
    );
}

#[test]
fn the_conntrack_race_joins_a_pods_dns_with_the_nodes_insert_failures() {
    let mut pod = talking_pod(2);
    let dns = &mut conversations(&mut pod).dns;
    dns.queries = rate(10.0);
    dns.retries = rate(0.2);
    // No race on the node: DNS retries alone are not the race.
    let mut n = node();
    n.conntrack = Some(ConntrackFigures::default());
    assert!(
        finding(
            &snapshot(vec![n.clone(), pod.clone()]),
            "dns_conntrack_race"
        )
        .is_none()
    );
    n.conntrack = Some(ConntrackFigures {
        insert_failed: rate(0.2),
        clash_resolve: rate(1.0),
        ..ConntrackFigures::default()
    });
    let f = finding(&snapshot(vec![n, pod]), "dns_conntrack_race").expect("the race");
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(
        f.evidence,
        "shop/web: 0 DNS queries unanswered and 2 sent again (glibc resends after its 5 s \
         timeout); the node: 2 conntrack insertions failed, 10 clashes resolved"
    );
    for fix in ["NodeLocal DNSCache", "single-request-reopen", "use-vc"] {
        assert!(f.fix.contains(fix), "{}", f.fix);
    }
}

#[test]
fn connect_timeouts_name_the_remotes_that_fail() {
    let mut pod = talking_pod(2);
    let c = &mut conversations(&mut pod).connects;
    c.attempts = rate(10.0);
    c.answered = rate(9.0);
    c.timed_out = rate(1.0);
    let mut s = snapshot(vec![node(), pod.clone()]);
    s.connect_failures = vec![RemoteFigures {
        remote: "10.96.3.4:8080".parse().unwrap(),
        refused: rate(0.0),
        timed_out: rate(1.0),
    }];
    let f = finding(&s, "connect_failures").expect("connect failures");
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.evidence
            .contains("10.96.3.4:8080 (0 refused, 10 timed out)"),
        "{}",
        f.evidence
    );
    // One failure in a hundred attempts is under the 5 %.
    conversations(&mut pod).connects.attempts = rate(100.0);
    assert!(finding(&snapshot(vec![node(), pod]), "connect_failures").is_none());
}

#[test]
fn frag_needed_names_the_pod_and_the_mtu() {
    let mut pod = talking_pod(2);
    let icmp = &mut conversations(&mut pod).icmp;
    icmp.received.insert("frag_needed".into(), rate(0.5));
    icmp.smallest_mtu = Some(1300);
    let mut n = node();
    n.drops_by_reason.insert("PKT_TOO_BIG".into(), rate(0.3));
    let f = finding(&snapshot(vec![n, pod]), "path_mtu").expect("a path MTU finding");
    assert_eq!(
        f.evidence,
        "shop/web: 5 ICMP fragmentation-needed / packet-too-big errors received (0.5/s); the \
         smallest MTU reported: 1300; the node dropped PKT_TOO_BIG 3"
    );
    assert!(
        f.fix.contains("at most 1300") && f.fix.contains("net.ipv4.tcp_mtu_probing=1"),
        "{}",
        f.fix
    );
}

/// The node's context as `collect::context` reads it on a VXLAN node.
fn vxlan_context() -> NodeContext {
    NodeContext {
        proxy: "kube-proxy-ipvs".into(),
        cni: "flannel".into(),
        encapsulation: "vxlan".into(),
        overhead_bytes: 50,
        uplink: Some(("eth0".into(), 1500)),
        pod_mtu: Some(1500),
        keepalive_time: Some(7200),
        conntrack_established_timeout: Some(432_000),
        ..NodeContext::default()
    }
}

#[test]
fn pods_at_the_uplinks_mtu_over_vxlan_get_the_cni_mtu_fix() {
    let mut pod = talking_pod(2);
    conversations(&mut pod)
        .icmp
        .received
        .insert("frag_needed".into(), rate(0.4));
    let mut s = snapshot(vec![node(), pod]);
    s.context = Some(vxlan_context());
    let f = finding(&s, "pod_mtu").expect("a pod MTU finding");
    assert_eq!(
        f.evidence,
        "pods' interfaces have MTU 1500; eth0 carries 1500, less 50 bytes of vxlan (flannel): \
         1450 fits; pods received 4 fragmentation-needed errors"
    );
    assert!(f.fix.starts_with("set the CNI's MTU to 1450"), "{}", f.fix);
    // Pods at 1450 fit.
    let mut fits = vxlan_context();
    fits.pod_mtu = Some(1450);
    s.context = Some(fits);
    assert!(finding(&s, "pod_mtu").is_none());
}

#[test]
fn keepalive_after_ipvs_or_the_load_balancer_forgets_is_a_finding() {
    let mut s = snapshot(vec![node()]);
    s.context = Some(vxlan_context());
    let f = finding(&s, "idle_timeouts").expect("ipvs forgets first");
    assert!(
        f.evidence.starts_with(
            "tcp_keepalive_time is 7200 s, IPVS's TCP timeout (kube-proxy ipvs mode; its \
             default) 900 s"
        ),
        "{}",
        f.evidence
    );
    assert!(
        f.fix.contains("below 900 (the guide: 600)") && f.fix.contains("tcp_keepalive_intvl 30"),
        "{}",
        f.fix
    );
    // A configured load balancer's 350 s is shorter still.
    let mut lb = vxlan_context();
    lb.lb_idle_timeout = Some(350);
    s.context = Some(lb);
    let f = finding(&s, "idle_timeouts").unwrap();
    assert!(
        f.evidence
            .contains("the load balancer's idle timeout 350 s"),
        "{}",
        f.evidence
    );
    // Keepalive at 600 without ipvs or a load balancer: nothing forgets first.
    let mut fine = vxlan_context();
    fine.proxy = "kube-proxy".into();
    fine.keepalive_time = Some(600);
    s.context = Some(fine);
    assert!(finding(&s, "idle_timeouts").is_none());
}
