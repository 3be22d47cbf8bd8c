use std::{io::Read as _, net::TcpStream};

use super::{
    testing::{get, serving},
    *,
};

fn published() -> Published {
    Published {
        snapshot: crate::model::snapshot::for_tests(Vec::new()),
        tuning: None,
        mode_demoted: None,
        kernel_log_records: 0,
        run_netns_unpropagated: false,
        event_collections_suppressed: 0,
        events_received: Default::default(),
    }
}

#[test]
fn a_tick_is_rendered_only_when_asked_for_and_only_once() {
    let state = Arc::new(ServerState::new(100, Duration::from_secs(1)));
    for _ in 0..10 {
        state.publish(published());
    }
    assert_eq!(state.renders(), 0, "ticks nobody asked for were rendered");
    let (addr, stop) = serving(state.clone(), Endpoints::All);
    for _ in 0..3 {
        assert_eq!(get(addr, "/metrics"), 200);
        assert_eq!(get(addr, "/api/v1/snapshot"), 200);
    }
    assert_eq!(
        state.renders(),
        2,
        "one render per endpoint for the one tick"
    );
    state.publish(published());
    assert_eq!(get(addr, "/metrics"), 200);
    assert_eq!(state.renders(), 3);
    stop.send(true).unwrap();
}

#[test]
fn the_metrics_and_the_json_api_keep_the_same_pods() {
    use crate::model::{
        snapshot::WorkloadFigures,
        workload::{Workload, WorkloadKind},
    };
    let mut workloads = vec![WorkloadFigures::new(1, Workload::node())];
    for i in 0..5 {
        let pod = Workload::new(WorkloadKind::NamedNetns, format!("netns:p{i}"));
        workloads.push(WorkloadFigures::new(10 + i, pod));
    }
    let state = ServerState::new(2, Duration::from_secs(1));
    state.publish(Published {
        snapshot: crate::model::snapshot::for_tests(workloads),
        ..published()
    });
    let json: serde_json::Value = serde_json::from_slice(&state.snapshot_json().unwrap()).unwrap();
    let in_json: Vec<&str> = json["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pod"].as_str().unwrap())
        .collect();
    let text = String::from_utf8(state.metrics_text().unwrap().to_vec()).unwrap();
    let in_metrics: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("nettune_tcp_retransmit_segments_total{"))
        .filter_map(|l| l.split("pod=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(in_json, ["node", "netns:p0", "netns:p1"]);
    assert_eq!(
        in_metrics.into_iter().collect::<Vec<_>>(),
        ["_other", "netns:p0", "netns:p1", "node"]
    );
    assert_eq!(json["workloads_folded"], 3);
}

/// `/metrics`' value of the series starting with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_folded_counter_never_decreases_and_a_pod_keeps_its_own_series_until_it_goes() {
    use crate::model::{
        counter::CounterRate,
        snapshot::WorkloadFigures,
        workload::{Workload, WorkloadKind},
    };
    // The node and pods (netns, name, retransmitted segments so far).
    let tick = |pods: &[(u32, &str, u64)]| {
        let mut workloads = vec![WorkloadFigures::new(1, Workload::node())];
        for (netns, name, retransmits) in pods {
            let pod = Workload::new(WorkloadKind::NamedNetns, format!("netns:{name}"));
            let mut w = WorkloadFigures::new(*netns, pod);
            w.retransmit_segments = CounterRate {
                total: *retransmits,
                per_second: 0.0,
            };
            workloads.push(w);
        }
        workloads.sort_by(|a, b| a.workload.pod.cmp(&b.workload.pod));
        Published {
            snapshot: crate::model::snapshot::for_tests(workloads),
            ..published()
        }
    };
    let state = ServerState::new(1, Duration::from_secs(1));
    let metrics = |state: &ServerState, p: Published| {
        state.publish(p);
        String::from_utf8(state.metrics_text().unwrap().to_vec()).unwrap()
    };
    let series = |pod: &str| {
        format!("nettune_tcp_retransmit_segments_total{{namespace=\"\",pod=\"{pod}\"}}")
    };
    let text = metrics(&state, tick(&[(10, "b", 5), (11, "c", 7), (12, "d", 11)]));
    assert_eq!(value(&text, &series("netns:b")), Some(5.0));
    assert_eq!(value(&text, &series("_other")), Some(18.0));
    // A folded pod goes: `_other` stays where it was, then counts on.
    let text = metrics(&state, tick(&[(10, "b", 5), (11, "c", 9)]));
    assert_eq!(value(&text, &series("_other")), Some(18.0), "{text}");
    let text = metrics(&state, tick(&[(10, "b", 5), (11, "c", 12)]));
    assert_eq!(value(&text, &series("_other")), Some(21.0));
    // A pod that sorts first arrives: b keeps its own series, a is folded.
    let text = metrics(&state, tick(&[(9, "a", 1), (10, "b", 6), (11, "c", 12)]));
    assert_eq!(value(&text, &series("netns:b")), Some(6.0), "{text}");
    assert_eq!(value(&text, &series("netns:a")), None);
    assert_eq!(value(&text, &series("_other")), Some(22.0));
    // The pod with its own series goes: its slot is free for the next newcomer,
    // folded pods stay folded (moving them out would lower `_other`).
    let text = metrics(&state, tick(&[(9, "a", 1), (11, "c", 12), (13, "e", 3)]));
    assert_eq!(value(&text, &series("netns:e")), Some(3.0), "{text}");
    assert_eq!(value(&text, &series("_other")), Some(22.0));
}

#[test]
fn the_json_api_is_not_served_with_the_metrics_only() {
    let state = Arc::new(ServerState::new(100, Duration::from_secs(1)));
    state.publish(Published {
        snapshot: crate::model::snapshot::for_tests(Vec::new()),
        tuning: None,
        mode_demoted: None,
        kernel_log_records: 0,
        run_netns_unpropagated: false,
        event_collections_suppressed: 0,
        events_received: Default::default(),
    });
    let (addr, stop) = serving(state, Endpoints::Metrics);
    assert_eq!(get(addr, "/metrics"), 200);
    assert_eq!(get(addr, "/api/v1/snapshot"), 404);
    let _ = stop.send(true);
}

/// Defect 9 of issue 19: one client holding connections open (idle, or
/// sending its headers slowly) must not starve the kubelet's `/healthz`
/// nor a scrape.
#[test]
fn health_and_metrics_answer_while_one_client_holds_a_thousand_connections() {
    use std::net::{IpAddr, Ipv4Addr};
    let state = Arc::new(ServerState::new(100, Duration::from_secs(1)));
    state.publish(published());
    let (addr, stop) = serving(state, Endpoints::Metrics);
    let hog = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut held = testing::connections_from(hog, addr, 500, b"");
    held.extend(testing::connections_from(
        hog,
        addr,
        500,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
    ));
    // Let the server take in (and close or hold) everything.
    std::thread::sleep(Duration::from_millis(500));
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            get(addr, path),
            200,
            "{path} did not answer with 1,000 connections held by {hog}"
        );
    }
    drop(held);
    let _ = stop.send(true);
}

#[test]
fn a_client_that_sends_nothing_is_cut_off_and_extra_connections_are_closed() {
    let state = Arc::new(ServerState::new(100, Duration::from_secs(1)));
    let (addr, stop) = serving(state, Endpoints::All);
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 8)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let closed_at_once = idle
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            matches!((&**s).read(&mut [0; 16]), Ok(0))
        })
        .count();
    assert_eq!(
        closed_at_once,
        MAX_CONNECTIONS + 8 - MAX_CONNECTIONS_PER_CLIENT,
        "one client kept more than its share"
    );
    // The ones admitted are cut off once the header timeout passes.
    let first = &idle[0];
    first.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
    let n = (&*first).read(&mut [0; 512]);
    assert!(
        n.is_ok(),
        "an idle client kept its connection past the header timeout: {n:?}"
    );
    let _ = stop.send(true);
}
