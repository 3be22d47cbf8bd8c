use super::*;
use crate::model::tuning::Mode;

fn err(text: &str) -> String {
    Config::parse("/etc/nettune/nettune.toml", text)
        .unwrap_err()
        .to_string()
}

#[test]
fn an_empty_file_means_every_default() {
    let c = Config::parse("x", "").unwrap();
    assert_eq!(c.agent.interval_seconds, 1.0);
    assert_eq!(c.agent.listen.to_string(), "127.0.0.1:9977");
    assert_eq!(c.tuning.mode, Mode::Observe);
    assert!(c.tuning.limits.is_empty());
}

#[test]
fn a_full_file_is_read() {
    let c = Config::parse(
        "x",
        r#"
[agent]
interval_seconds = 2.5
listen = "0.0.0.0:9977"
max_pod_series = 50
node_name = "node-a"

[probes]
disable_variants = ["fentry", "kprobe"]

[tuning]
mode = "enforce"
state_dir = "/tmp/state"

[tuning.limits."net.core.somaxconn"]
floor = 4096
ceiling = 32768
"#,
    )
    .unwrap();
    assert_eq!(c.agent.interval_seconds, 2.5);
    assert_eq!(c.agent.max_pod_series, 50);
    assert_eq!(
        c.probes.disable_variants,
        vec![Variant::Fentry, Variant::Kprobe]
    );
    assert_eq!(c.tuning.mode, Mode::Enforce);
    assert_eq!(
        c.tuning.limits["net.core.somaxconn"],
        Limit {
            floor: Some(4096),
            ceiling: Some(32768)
        }
    );
}

#[test]
fn unknown_key() {
    assert_eq!(
        err("[agent]\nintervall = 1.0\n"),
        "/etc/nettune/nettune.toml:2: agent.intervall: unknown key (expected one of: \
         interval_seconds, listen, api_listen, min_event_interval_seconds, max_pod_series, \
         node_name, wake_on_events, program_stats)"
    );
}

#[test]
fn unknown_table() {
    assert_eq!(
        err("[agnet]\ninterval_seconds = 1.0\n"),
        "/etc/nettune/nettune.toml:1: agnet: unknown key (expected one of: agent, probes, tuning, \
         identity, dns, tcp, cluster)"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        err("[agent]\ninterval_seconds = \"1s\"\n"),
        "/etc/nettune/nettune.toml:2: agent.interval_seconds: wrong type: found string \
         \"1s\", expected a number"
    );
}

#[test]
fn negative_interval() {
    assert_eq!(
        err("[agent]\n\ninterval_seconds = -1.0\n"),
        "/etc/nettune/nettune.toml:3: agent.interval_seconds: -1 is out of range: must be \
         between 0.05 and 3600 seconds"
    );
}

#[test]
fn ceiling_below_floor() {
    assert_eq!(
        err("[tuning.limits.\"net.core.somaxconn\"]\nfloor = 4096\nceiling = 1024\n"),
        "/etc/nettune/nettune.toml:3: tuning.limits.\"net.core.somaxconn\".ceiling: 1024 is \
         below the floor 4096"
    );
}

#[test]
fn sysctls_outside_the_allow_list_are_refused() {
    assert_eq!(
        err("[tuning.limits.\"net/../../kernel/core_pattern\"]\nceiling = 1\n"),
        "/etc/nettune/nettune.toml:1: tuning.limits.\"net/../../kernel/core_pattern\": \
         `net/../../kernel/core_pattern` is not a sysctl name (dotted words of a-z, 0-9 and _, \
         like net.core.somaxconn)"
    );
    assert!(
        err("[tuning.limits.\"kernel.core_pattern\"]\nceiling = 1\n").contains("outside net.*")
    );
    assert!(
        err("[tuning.limits.\"net.ipv4.ip_forward\"]\nceiling = 1\n")
            .contains("not a sysctl nettune manages")
    );
}

#[test]
fn bad_listen_address_and_variant() {
    assert!(err("[agent]\nlisten = \"nowhere\"\n").starts_with(
        "/etc/nettune/nettune.toml:2: agent.listen: `nowhere` is not an address:port"
    ));
    assert!(
        err("[probes]\ndisable_variants = [\"fentri\"]\n")
            .starts_with("/etc/nettune/nettune.toml:2: probes.disable_variants: unknown variant")
    );
}

#[test]
fn a_relative_path_is_refused_with_its_line_and_key() {
    assert_eq!(
        err("[tuning]\nproc_sys = \"host/proc/sys\"\n"),
        "/etc/nettune/nettune.toml:2: tuning.proc_sys: `host/proc/sys` is not an absolute path"
    );
    let c = Config::parse("x.toml", "[tuning]\nproc_sys = \"/host/proc/sys\"\n").unwrap();
    assert_eq!(c.tuning.proc_sys.to_str(), Some("/host/proc/sys"));
}

#[test]
fn printed_config_parses_back() {
    let c = Config::parse(
        "x",
        "[tuning.limits.\"net.core.somaxconn\"]\nceiling = 100\n",
    )
    .unwrap();
    let again = Config::parse("printed", &c.to_toml()).unwrap();
    assert_eq!(again.tuning.limits, c.tuning.limits);
    assert_eq!(again.agent.listen, c.agent.listen);
}

#[test]
fn port_settings_are_checked() {
    assert_eq!(
        err("[tuning]\nlowest_ephemeral_port = 80\n"),
        "/etc/nettune/nettune.toml:2: tuning.lowest_ephemeral_port: 80 is out of range: must be \
         between 1024 and 65535"
    );
    assert_eq!(
        err("[tuning]\nreserved_ports = [\"9100\", \"32767-30000\"]\n"),
        "/etc/nettune/nettune.toml:2: tuning.reserved_ports: `32767-30000` is not a port or a \
         port range like 30000-32767"
    );
    let c = Config::parse("x", "[tuning]\nreserved_ports = [\"8080\"]\n").unwrap();
    assert_eq!(c.tuning.reserved_ports, ["8080"]);
}

#[test]
fn sysctl_names_that_escape_or_look_alike_are_refused() {
    for (name, reason) in [
        ("net/../kernel/core_pattern", "is not a sysctl name"),
        ("net.core.somaxconn/../../x", "is not a sysctl name"),
        // A Cyrillic "с" in somaxconn.
        ("net.core.somax\u{0441}onn", "is not a sysctl name"),
        ("kernel.core_pattern", "is outside net.*"),
        ("net.ipv4.ip_forward", "is not a sysctl nettune manages"),
    ] {
        let text = format!("[tuning]\nexclude = [\"{name}\"]\n");
        let e = err(&text);
        assert!(
            e.contains("tuning.exclude") && e.contains(reason),
            "{name}: {e}"
        );
        let text = format!("[tuning.limits.\"{name}\"]\nceiling = 1\n");
        let e = err(&text);
        assert!(
            e.contains(":1: tuning.limits") && e.contains(reason),
            "{name}: {e}"
        );
    }
}

#[test]
fn absurd_limits_are_refused_with_what_the_kernel_accepts() {
    assert_eq!(
        err("[tuning.limits.\"net.core.somaxconn\"]\nceiling = 9999999999\n"),
        "/etc/nettune/nettune.toml:2: tuning.limits.\"net.core.somaxconn\".ceiling: 9999999999 \
         is out of range: must be between 0 and 2147483647, the most the kernel accepts"
    );
    assert!(
        err("[tuning.limits.\"net.ipv4.ip_local_port_range\"]\nceiling = 70000\n")
            .contains("must be between 0 and 65535")
    );
    assert!(
        err("[tuning.limits.\"net.ipv4.tcp_fin_timeout\"]\nceiling = 10\n")
            .contains("is a setting, not room")
    );
}

#[test]
fn the_runtime_source_is_found_set_or_turned_off() {
    let c = Config::parse("x", "").unwrap();
    assert_eq!(c.identity.cri_socket, None, "found among the usual sockets");
    assert!(!c.identity.cri_disabled());
    let c = Config::parse(
        "x",
        "[identity]\ncri_socket = \"/run/k3s/containerd/containerd.sock\"\n\
         cri_poll_seconds = 0.5\ncri_timeout_seconds = 1.5\n",
    )
    .unwrap();
    assert_eq!(
        c.identity.cri_socket.as_deref(),
        Some(Path::new("/run/k3s/containerd/containerd.sock"))
    );
    assert_eq!(
        (c.identity.cri_poll_seconds, c.identity.cri_timeout_seconds),
        (0.5, 1.5)
    );
    let again = Config::parse("printed", &c.to_toml()).unwrap();
    assert_eq!(again.identity.cri_socket, c.identity.cri_socket);
    assert!(
        Config::parse("x", "[identity]\ncri_socket = \"\"\n")
            .unwrap()
            .identity
            .cri_disabled()
    );
}

#[test]
fn runtime_poll_and_timeout_are_checked() {
    assert_eq!(
        err("[identity]\ncri_poll_seconds = 0\n"),
        "/etc/nettune/nettune.toml:2: identity.cri_poll_seconds: 0 is out of range: must be \
         between 0.1 and 300 seconds"
    );
    assert_eq!(
        err("[identity]\n\ncri_timeout_seconds = 120.0\n"),
        "/etc/nettune/nettune.toml:3: identity.cri_timeout_seconds: 120 is out of range: must \
         be between 0.05 and 60 seconds"
    );
    assert_eq!(
        err("[identity]\ncri_sock = \"/x\"\n"),
        "/etc/nettune/nettune.toml:2: identity.cri_sock: unknown key (expected one of: \
         cri_socket, cri_poll_seconds, cri_timeout_seconds)"
    );
}

#[test]
fn the_readme_lists_every_key_as_the_table_says() {
    let readme = include_str!("../../../README.md");
    let table = print::markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's table of config keys differs from the key table; it should read:\n{table}"
    );
}

#[test]
fn every_key_of_the_table_is_read_back_from_a_printed_config() {
    let printed = Config::default().to_toml();
    for key in keys::KEYS {
        let field = key.field();
        assert!(
            printed.contains(&format!("\n{field} = "))
                || printed.contains(&format!("# {field} unset"))
                || matches!(key.kind, keys::Kind::Limits(_)),
            "{} missing from --print-config:\n{printed}",
            key.name
        );
    }
    Config::parse("printed", &printed).unwrap();
}

#[test]
fn the_tuner_reserves_both_of_the_agents_ports_before_widening() {
    let config = Config::parse(
        "nettune.toml",
        "[agent]\nlisten = \"0.0.0.0:9977\"\napi_listen = \"127.0.0.1:9978\"\n",
    )
    .unwrap();
    let protected = config.tuning_with_own_ports().protected_ports();
    for port in ["9977", "9978"] {
        assert!(
            protected.covers(&crate::model::value::PortList::parse(port).unwrap()),
            "{port} not reserved: {protected}"
        );
    }
}
