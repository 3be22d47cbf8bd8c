//! `deploy/` checked offline: every manifest and rendered overlay against the
//! Kubernetes schemas, the alert rules with promtool, the metrics the rules and
//! the dashboard use against a live agent's, the ConfigMap's configs.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    bench::pods::Pods,
    daemonset::{self, RunSpec},
    dns::Dnsmasq,
    harness::{Outcome, TestResult, require_root},
    sockets::{connect_nonblocking, listener_with_backlog},
    traffic::send_df_datagrams,
};
use xtask::process::output as run;

use crate::agent::nettune_bin;

use super::files::{OVERLAYS, deploy_dir, scratch};

pub fn manifests_and_overlays_validate() -> TestResult {
    let validate = std::env::var_os("KUBERNETES_VALIDATE").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/venv/bin/kubernetes-validate")
        },
        PathBuf::from,
    );
    ensure!(
        validate.exists(),
        "{} missing: run `cargo xtask setup`",
        validate.display()
    );
    let dir = scratch("validate")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("base"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    for overlay in OVERLAYS {
        let rendered = run(Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy_dir().join(overlay)))?;
        let file = dir.join(format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, rendered)?;
        files.push(file);
    }
    files.sort();
    for version in 25..=32 {
        let mut cmd = Command::new(&validate);
        cmd.args(["--strict", "-k", &format!("1.{version}.0")])
            .args(&files);
        run(&mut cmd).with_context(|| format!("Kubernetes 1.{version}"))?;
    }
    println!(
        "    {} files valid for Kubernetes 1.25 to 1.32",
        files.len()
    );
    Ok(Outcome::Passed)
}

/// The rule groups of deploy/base/prometheusrule.yaml as a Prometheus rules file.
pub(super) fn rules_file() -> anyhow::Result<String> {
    let rule = std::fs::read_to_string(deploy_dir().join("base/prometheusrule.yaml"))?;
    let spec = rule
        .split_once("\nspec:\n")
        .context("no spec in the PrometheusRule")?
        .1;
    Ok(spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n"))
}

pub fn alert_rules_pass_promtool() -> TestResult {
    let dir = scratch("rules")?;
    let rules = rules_file()?;
    std::fs::write(dir.join("rules.yaml"), &rules)?;
    let tests = std::fs::read_to_string(deploy_dir().join("tests/rules_test.yaml"))?;
    std::fs::write(dir.join("rules_test.yaml"), &tests)?;
    run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("rules.yaml")))?;
    run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.join("rules_test.yaml")))?;
    // Every alert has a case that fires it and a case that does not.
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    ensure!(alerts.len() >= 9, "only {} alerts", alerts.len());
    for alert in &alerts {
        let cases: Vec<&str> = tests
            .split(&format!("alertname: {alert}\n"))
            .skip(1)
            .map(str::trim_start)
            .collect();
        ensure!(
            cases.iter().any(|c| c.starts_with("exp_alerts: []")),
            "{alert}: no quiet case"
        );
        ensure!(
            cases.iter().any(|c| c.starts_with("exp_alerts:\n")),
            "{alert}: no firing case"
        );
    }
    println!(
        "    {} alerts, each with a firing and a quiet promtool case",
        alerts.len()
    );
    Ok(Outcome::Passed)
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("nettune_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

pub fn rules_and_dashboard_use_only_exported_metrics() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    // Advise mode, and a journal entry that leaves the value as it is, so that the
    // tuner's metrics exist without writing anything.
    let dir = scratch("live")?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")?;
    std::fs::write(
        state.join("journal.json"),
        format!(
            r#"{{"version":1,"entries":[{{"sysctl":"net.core.somaxconn","target":"node","original":"{}","last_written":null,"writes":[],"stood_down":false}}]}}"#,
            somaxconn.trim()
        ),
    )?;
    let config = dir.join("nettune.toml");
    std::fs::write(
        &config,
        format!(
            "[tuning]\nmode = \"advise\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )?;
    let agent = AgentProcess::start(
        &nettune_bin()?,
        &[
            "--config",
            config.to_str().context("path")?,
            "--interval",
            "0.3",
        ],
    )?;
    // A listen overflow on the host: a decision (advised), and a drop.
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 5990);
    let _listener = listener_with_backlog(addr, 0)?;
    let _clients = (0..20)
        .map(|_| connect_nonblocking(addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Two pods that converse: DNS to a dnsmasq, a refused connect, datagrams too
    // large for the narrower hop into the server (ICMP fragmentation needed).
    let pods = Pods::new(2, "live")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    let _dnsmasq = Dnsmasq::start(&server.ns, server.addr())?;
    bpf_tests::netns::ip(&["link", "set", "dev", server.host_iface(), "mtu", "1300"])?;
    let converse = || -> anyhow::Result<()> {
        let at = format!("@{}", server.addr());
        client
            .ns
            .exec("dig", &["+short", "+time=1", "+tries=1", &at, "ok.test"])?;
        let closed = std::net::SocketAddr::from((server.addr(), 9));
        let refused = client
            .ns
            .run(move || std::net::TcpStream::connect_timeout(&closed, Duration::from_secs(1)))?;
        ensure!(refused.is_err(), "a connect to a closed port succeeded");
        send_df_datagrams(&client.ns, closed, 1400, 1)
    };
    let needed: BTreeSet<String> = metric_names(&rules_file()?)
        .union(&metric_names(&std::fs::read_to_string(
            deploy_dir().join("grafana/nettune-dashboard.json"),
        )?))
        .cloned()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Again each round: the pods' veths are watched within a tick or two.
        converse()?;
        let exported: BTreeSet<String> = agent
            .metrics()?
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        // A histogram's `_bucket`, `_sum` and `_count` series come with its name.
        let missing: Vec<&String> = needed
            .iter()
            .filter(|name| {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix));
                !exported.contains(*name) && base.is_none_or(|b| !exported.contains(b))
            })
            .collect();
        if missing.is_empty() {
            println!(
                "    {} metrics used by rules and dashboard, all exported",
                needed.len()
            );
            break;
        }
        ensure!(Instant::now() < deadline, "never exported: {missing:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    Ok(Outcome::Passed)
}

pub fn configmap_configs_pass_validation() -> TestResult {
    for (overlay, file) in [
        ("base", "base/nettune.toml"),
        ("overlays/enforce", "overlays/enforce/nettune.toml"),
    ] {
        let path = deploy_dir().join(file);
        let text = std::fs::read_to_string(&path)?;
        let config = nettune::config::Config::parse(&path.display().to_string(), &text)?;
        let spec = RunSpec::from_objects(&daemonset::render(&deploy_dir().join(overlay))?, "n")?;
        ensure!(
            spec.ports.get("metrics") == Some(&config.agent.listen.port()),
            "{file}: agent.listen {} is not the DaemonSet's metrics port {:?}",
            config.agent.listen,
            spec.ports.get("metrics")
        );
        // The kubelet's probes go to the loopback listener, which the public
        // port's clients cannot fill (issue 19, defect 9).
        for probe in [&spec.liveness, &spec.readiness] {
            ensure!(
                probe.addr() == config.agent.api_listen && probe.addr().ip().is_loopback(),
                "{overlay}: the probe {} goes to {}, not to agent.api_listen {} on loopback",
                probe.path,
                probe.addr(),
                config.agent.api_listen
            );
        }
        let expected = if file.contains("enforce") {
            "Enforce"
        } else {
            "Observe"
        };
        ensure!(
            format!("{:?}", config.tuning.mode) == expected,
            "{file}: mode {:?}",
            config.tuning.mode
        );
    }
    let rendered = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir().join("overlays/enforce")))?;
    ensure!(
        rendered.contains("mode = \"enforce\""),
        "the enforce overlay's ConfigMap is not in enforce mode"
    );
    Ok(Outcome::Passed)
}
