//! `deploy/`, validated offline: every manifest and every rendered overlay against
//! the Kubernetes schemas of 1.25 to 1.32; the alert rules with promtool (a firing
//! and a quiet case per alert); every metric the rules and the dashboard use is one
//! a live agent exports; the ConfigMap's nettune.toml passes the agent's own
//! validation.

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    harness::{Outcome, Test, TestResult, require_root},
    sockets::{connect_nonblocking, listener_with_backlog},
};

use crate::agent::nettune_bin;

pub const TESTS: &[Test] = &[
    Test {
        name: "deploy::manifests_and_overlays_validate_for_kubernetes_1_25_to_1_32",
        run: manifests_and_overlays_validate,
    },
    Test {
        name: "deploy::alert_rules_pass_promtool_with_a_firing_and_a_quiet_case_each",
        run: alert_rules_pass_promtool,
    },
    Test {
        name: "deploy::rules_and_dashboard_use_only_metrics_the_agent_exports",
        run: rules_and_dashboard_use_only_exported_metrics,
    },
    Test {
        name: "deploy::configmap_configs_pass_the_agents_validation",
        run: configmap_configs_pass_validation,
    },
];

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

const OVERLAYS: [&str; 4] = [
    "base",
    "overlays/privileged",
    "overlays/enforce",
    "overlays/no-prometheus-operator",
];

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("nettune-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn manifests_and_overlays_validate() -> TestResult {
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
    std::fs::remove_dir_all(dir)?;
    Ok(Outcome::Passed)
}

/// The rule groups of deploy/base/prometheusrule.yaml as a Prometheus rules file.
fn rules_file() -> anyhow::Result<String> {
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

fn alert_rules_pass_promtool() -> TestResult {
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
    std::fs::remove_dir_all(dir)?;
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

fn rules_and_dashboard_use_only_exported_metrics() -> TestResult {
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
    let needed: BTreeSet<String> = metric_names(&rules_file()?)
        .union(&metric_names(&std::fs::read_to_string(
            deploy_dir().join("grafana/nettune-dashboard.json"),
        )?))
        .cloned()
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let exported: BTreeSet<String> = agent
            .metrics()?
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = needed.difference(&exported).collect();
        if missing.is_empty() {
            println!(
                "    {} metrics used by rules and dashboard, all exported",
                needed.len()
            );
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "never exported: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    std::fs::remove_dir_all(dir)?;
    Ok(Outcome::Passed)
}

fn configmap_configs_pass_validation() -> TestResult {
    for file in ["base/nettune.toml", "overlays/enforce/nettune.toml"] {
        let path = deploy_dir().join(file);
        let text = std::fs::read_to_string(&path)?;
        let config = nettune::config::Config::parse(&path.display().to_string(), &text)?;
        ensure!(
            config.agent.listen.port() == 9977,
            "{file}: the DaemonSet's probes use port 9977"
        );
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
