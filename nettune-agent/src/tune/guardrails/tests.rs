use super::*;
use crate::{config::Limit, model::tunables::lookup};

fn config() -> TuningConfig {
    TuningConfig::default()
}

fn limits(config: &TuningConfig) -> Limits<'_> {
    Limits {
        config,
        mem_total: 0,
        page_size: 4096,
    }
}

fn somaxconn() -> &'static Tunable {
    lookup("net.core.somaxconn").unwrap()
}

fn entry(last_written: Option<&str>, writes: Vec<u64>, stood_down: bool) -> Entry {
    Entry {
        sysctl: "net.core.somaxconn".into(),
        target: Target::Node,
        original: "4096".into(),
        last_written: last_written.map(str::to_owned),
        pending: None,
        writes,
        stood_down,
        identity: None,
    }
}

#[test]
fn raises_by_the_step_up_to_the_guides_ceiling() {
    let c = config();
    let l = limits(&c);
    let next = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(4096),
        None,
        &l,
        0,
    );
    assert_eq!(next, Ok(Value::Int(8192)));
    let next = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(30000),
        None,
        &l,
        0,
    );
    assert_eq!(next, Ok(Value::Int(32768)));
    // Pods get the guide's pod value.
    let pod = Target::Netns {
        inode: 7,
        label: "p".into(),
    };
    assert_eq!(
        check_raise(somaxconn(), Some(&pod), &Value::Int(40000), None, &l, 0),
        Ok(Value::Int(65535))
    );
}

#[test]
fn ceiling_reached_is_refused_and_says_so() {
    let mut c = config();
    c.limits.insert(
        "net.core.somaxconn".into(),
        Limit {
            floor: None,
            ceiling: Some(8192),
        },
    );
    let l = limits(&c);
    let (outcome, reason) = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(8192),
        None,
        &l,
        0,
    )
    .unwrap_err();
    assert_eq!(outcome, Outcome::Refused);
    assert!(reason.starts_with("ceiling reached"), "{reason}");
}

#[test]
fn an_admins_higher_value_is_kept() {
    let c = config();
    let l = limits(&c);
    // The admin set 50000 on the node, above the guide's 32768: no change, ever.
    let refused = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(50000),
        None,
        &l,
        0,
    );
    assert!(matches!(refused, Err((Outcome::Refused, _))));
    // A profile asking for less keeps the admin's value too.
    let (outcome, reason) = check_set(
        somaxconn(),
        &Target::Node,
        &Value::Int(50000),
        &Value::Int(32768),
        None,
        &l,
    )
    .unwrap_err();
    assert_eq!(outcome, Outcome::Refused);
    assert!(reason.starts_with("kept 50000"), "{reason}");
}

#[test]
fn an_outside_change_makes_nettune_stand_down() {
    let c = config();
    let l = limits(&c);
    let ours = entry(Some("8192"), vec![0], false);
    let (outcome, reason) = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(6000),
        Some(&ours),
        &l,
        100_000,
    )
    .unwrap_err();
    assert_eq!(outcome, Outcome::StoodDown);
    assert_eq!(
        reason,
        "changed from 8192 (nettune's) to 6000 by someone else: standing down"
    );
    let down = entry(Some("8192"), vec![0], true);
    let (outcome, _) = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(8192),
        Some(&down),
        &l,
        100_000,
    )
    .unwrap_err();
    assert_eq!(outcome, Outcome::Refused);
}

#[test]
fn cooldown_and_hourly_budget() {
    let c = config();
    let l = limits(&c);
    let recent = entry(Some("8192"), vec![1000], false);
    let (_, reason) = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(8192),
        Some(&recent),
        &l,
        1100,
    )
    .unwrap_err();
    assert_eq!(
        reason,
        "cooldown: changed 100 s ago (tuning.cooldown_seconds = 300)"
    );
    assert!(
        check_raise(
            somaxconn(),
            Some(&Target::Node),
            &Value::Int(8192),
            Some(&recent),
            &l,
            1400
        )
        .is_ok()
    );
    let busy = entry(Some("8192"), vec![0, 400, 800, 1200], false);
    let (_, reason) = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(8192),
        Some(&busy),
        &l,
        1600,
    )
    .unwrap_err();
    assert_eq!(reason, "hourly budget spent: 4 changes in the last hour");
}

#[test]
fn exclusions_and_opt_in() {
    let mut c = config();
    c.exclude.push("net.core.somaxconn".into());
    let l = limits(&c);
    let (_, reason) = check_raise(
        somaxconn(),
        Some(&Target::Node),
        &Value::Int(1),
        None,
        &l,
        0,
    )
    .unwrap_err();
    assert_eq!(reason, "excluded by tuning.exclude");
    let c = config();
    let l = limits(&c);
    let (_, reason) = check_raise(somaxconn(), None, &Value::Int(1), None, &l, 0).unwrap_err();
    assert_eq!(
        reason,
        "the workload's namespace is not opted in (tuning.pod_netns, or the pod annotation \
         nettune.io/tune-netns: \"true\")"
    );
}

#[test]
fn conntrack_is_capped_by_memory_and_floors_apply() {
    let mut c = config();
    c.conntrack_memory_percent = 1.0;
    let l = Limits {
        config: &c,
        mem_total: 1 << 30,
        page_size: 4096,
    };
    let spec = lookup("net.netfilter.nf_conntrack_max").unwrap();
    // 1 % of 1 GiB / 320 B = 33554 entries.
    assert_eq!(l.ceiling(spec, &Target::Node), 33_554);
    assert_eq!(
        check_raise(spec, Some(&Target::Node), &Value::Int(30000), None, &l, 0),
        Ok(Value::Int(33_554))
    );
    let mut c = config();
    c.limits.insert(
        "net.core.somaxconn".into(),
        Limit {
            floor: Some(10_000),
            ceiling: None,
        },
    );
    let l = limits(&c);
    assert_eq!(
        check_raise(
            somaxconn(),
            Some(&Target::Node),
            &Value::Int(128),
            None,
            &l,
            0
        ),
        Ok(Value::Int(10_000))
    );
}

#[test]
fn a_profile_never_lowers_any_element_of_a_triple_or_a_range() {
    let c = config();
    let l = limits(&c);
    let set = |name: &str, current: Value, wanted: Value| {
        check_set(
            lookup(name).unwrap(),
            &Target::Node,
            &current,
            &wanted,
            None,
            &l,
        )
    };
    // `apply --profile production` on a node with a higher minimum: the minimum
    // stays, the default is raised.
    assert_eq!(
        set(
            "net.ipv4.tcp_rmem",
            Value::Triple(8192, 262_144, 16_777_216),
            Value::Triple(4096, 12_582_912, 16_777_216)
        ),
        Ok(Value::Triple(8192, 12_582_912, 16_777_216))
    );
    // An admin's larger maximum (above nettune's ceiling) is kept as it is.
    assert_eq!(
        set(
            "net.ipv4.tcp_wmem",
            Value::Triple(4096, 16384, 33_554_432),
            Value::Triple(4096, 12_582_912, 16_777_216)
        ),
        Ok(Value::Triple(4096, 12_582_912, 33_554_432))
    );
    // A range is never narrowed at either end, whatever the widths say.
    assert_eq!(
        set(
            "net.ipv4.ip_local_port_range",
            Value::Pair(10_000, 65_535),
            Value::Pair(1024, 60_999)
        ),
        Ok(Value::Pair(1024, 65_535))
    );
    // Nothing to add in any element: kept.
    let (outcome, reason) = set(
        "net.ipv4.tcp_rmem",
        Value::Triple(8192, 16_777_216, 16_777_216),
        Value::Triple(4096, 12_582_912, 16_777_216),
    )
    .unwrap_err();
    assert_eq!(outcome, Outcome::Refused);
    assert!(reason.starts_with("kept 8192"), "{reason}");
    // A ranked switch is an order: 1 (on) is more than 2 (loopback only).
    assert!(matches!(
        set("net.ipv4.tcp_tw_reuse", Value::Int(1), Value::Int(2)),
        Err((Outcome::Refused, _))
    ));
    assert_eq!(
        set("net.ipv4.tcp_tw_reuse", Value::Int(2), Value::Int(1)),
        Ok(Value::Int(1))
    );
}

#[test]
fn floors_are_on_the_strength_scale_for_every_kind() {
    let floor = |name: &str, floor: u64| {
        let mut c = config();
        c.max_step = 1.1;
        c.limits.insert(
            name.into(),
            Limit {
                floor: Some(floor),
                ceiling: None,
            },
        );
        c
    };
    let raise = |c: &TuningConfig, name: &str, current: Value| {
        check_raise(
            lookup(name).unwrap(),
            Some(&Target::Node),
            &current,
            None,
            &limits(c),
            0,
        )
    };
    // Rank 2 of 0 < 2 < 1 is on (1), not the raw value 2 (loopback only).
    let c = floor("net.ipv4.tcp_tw_reuse", 2);
    assert_eq!(
        raise(&c, "net.ipv4.tcp_tw_reuse", Value::Int(0)),
        Ok(Value::Int(1))
    );
    // A triple's floor is on its maximum.
    let c = floor("net.ipv4.tcp_rmem", 8_388_608);
    assert_eq!(
        raise(
            &c,
            "net.ipv4.tcp_rmem",
            Value::Triple(4096, 131_072, 4_194_304)
        ),
        Ok(Value::Triple(4096, 131_072, 8_388_608))
    );
    // A range's floor is on its width.
    let c = floor("net.ipv4.ip_local_port_range", 40_000);
    assert_eq!(
        raise(
            &c,
            "net.ipv4.ip_local_port_range",
            Value::Pair(32_768, 60_999)
        ),
        Ok(Value::Pair(20_999, 60_999))
    );
}
