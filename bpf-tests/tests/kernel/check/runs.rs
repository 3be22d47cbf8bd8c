//! Check across an apply, between runtime pods, and on a terminal.

use super::*;

pub(super) fn compare_across_an_apply_shows_the_sysctls_it_wrote() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let setup = Setup::new("cmp")?;
    let small = [
        "--tests",
        "latency,dns,http",
        "--connects",
        "50",
        "--dns-queries",
        "50",
        "--dns-name",
        "ok.test",
        "-n",
        "200",
    ];
    let (code, before, stderr) = setup.check(&small)?;
    ensure!(code == 0, "first run: exit {code}\n{before}\n{stderr}");
    // `apply` inside the client's namespace: there it is the node (node-wide
    // sysctls are excluded in the config), so what it writes is the client's.
    let (code, applied, stderr) =
        setup.nettune(Some(setup.client()), &["apply", "--profile", "production"])?;
    ensure!(code == 0, "apply: exit {code}\n{applied}\n{stderr}");
    let (code, after, stderr) = setup.check(&small)?;
    ensure!(code == 0, "second run: exit {code}\n{after}\n{stderr}");

    let (code, compared, stderr) = setup.nettune(None, &["check", "--compare", "last"])?;
    println!("    nettune check --compare last:\n{compared}");
    ensure!(code == 0, "compare: exit {code}\n{stderr}");
    let written = setup
        .client()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range"))??
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    ensure!(
        compared.contains("net.ipv4.ip_local_port_range (source): ")
            && compared.contains(&format!("→ {written}  (written by nettune at")),
        "the widened port range is not among the changes:\n{compared}"
    );
    ensure!(
        compared.contains("net.ipv4.ip_local_reserved_ports (source)"),
        "{compared}"
    );
    // Every figure of both runs is there, side by side.
    for figure in ["connect p50", "dns mean", "http rate"] {
        ensure!(
            compared.lines().filter(|l| l.starts_with(figure)).count() == 1,
            "no {figure}:\n{compared}"
        );
    }
    let (_, json, _) =
        setup.nettune(None, &["check", "--compare", "previous", "last", "--json"])?;
    let json: Value = serde_json::from_str(&json)?;
    let changes = json["tuning_changes"]
        .as_array()
        .context("tuning_changes")?;
    ensure!(
        changes
            .iter()
            .any(|c| c["sysctl"] == "net.ipv4.ip_local_port_range"
                && !c["writes"].as_array().is_none_or(Vec::is_empty)),
        "{json:#}"
    );
    // Comparing the first run with itself: nothing changed in between.
    let first = json["before"]["id"].as_str().context("id")?.to_owned();
    let (_, same, _) = setup.nettune(None, &["check", "--compare", &first, &first])?;
    ensure!(
        same.contains("no tuning changes between the two runs"),
        "{same}"
    );
    let (code, _, _) = setup.nettune(Some(setup.client()), &["rollback"])?;
    ensure!(code == 0, "rollback failed");
    Ok(Outcome::Passed)
}

pub(super) fn between_runtime_pods_named_by_cri_the_figures_match_iperf3_and_ab() -> TestResult {
    if let Some(skip) = require_containers(false) {
        return skip;
    }
    let setup = Setup::with_runtime("pods")?;
    let Peers::Runtime(pods) = &setup.peers else {
        unreachable!("made with a runtime");
    };
    let (client, server) = (&pods.client, &pods.server);
    let dns_server = format!("{}:53", setup.server_addr());
    let (requests, concurrency) = ("1000", "10");
    let (code, stdout, stderr) = setup.check_from_client(
        &[
            NO_FAILURES,
            &[
                "--json",
                "--seconds",
                "3",
                "--connects",
                "100",
                "--dns-queries",
                "100",
                "--dns-name",
                "ok.test",
                "--dns-server",
                &dns_server,
                "-n",
                requests,
                "-c",
                concurrency,
            ],
        ]
        .concat(),
    )?;
    ensure!(code == 0, "check exited {code}:\n{stdout}\n{stderr}");
    let ours: Value = serde_json::from_str(&stdout).context("check --json")?;
    // The pods the runtime named: their namespaces, the server's IP.
    ensure!(
        ours["from"]["kind"] == "pod" && ours["to"]["kind"] == "pod",
        "{}",
        ours["from"]
    );
    ensure!(
        ours["from"]["inode"] == client.inode()?,
        "{} vs {}",
        ours["from"],
        client.inode()?
    );
    ensure!(ours["to"]["inode"] == server.inode()?, "{}", ours["to"]);
    ensure!(
        ours["to"]["address"] == setup.server_addr().to_string(),
        "{}",
        ours["to"]
    );
    compare_throughput(&setup, &ours)?;
    compare_http(&setup, &ours, requests, concurrency)?;
    let dns = &ours["dns"]["measured"];
    ensure!(dns["queries"] == 100 && dns["failures"] == 0, "{dns}");
    // A pod that is not there: exit 1, saying so.
    let (code, _, stderr) = setup.nettune(
        None,
        &[
            "check",
            "--from",
            "nt-check/client",
            "--to",
            "nt-check/nobody",
        ],
    )?;
    ensure!(
        code == 1 && stderr.contains("no ready pod nt-check/nobody"),
        "{stderr}"
    );
    Ok(Outcome::Passed)
}

pub(super) fn on_a_terminal_a_progress_line_runs_until_the_table_replaces_it() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let setup = Setup::new("tty")?;
    let (from, to) = setup.endpoints();
    let command = format!(
        "{} --config {} check --from {from} --to {to} --iperf-port {IPERF_PORT} --tests throughput --seconds 4 --no-save; sleep 60",
        nettune_bin()?.display(),
        setup.scratch.join("nettune.toml").display()
    );
    let session = bpf_tests::tmux::Session::start("check", 100, 30, &command)?;
    let running = session.wait_for(Duration::from_secs(5), "the progress line", |screen| {
        screen.contains("check: throughput ")
    })?;
    println!(
        "    while running: {:?}",
        running
            .lines()
            .find(|l| l.contains("check:"))
            .unwrap_or_default()
    );
    let done = session.wait_for(Duration::from_secs(15), "the table", |screen| {
        screen.contains("passed")
    })?;
    println!("    at the end:\n{}", done.trim_end());
    ensure!(
        !done.contains("check: throughput"),
        "the progress line was left on the screen:\n{done}"
    );
    ensure!(done.contains("Mbit/s"), "{done}");
    Ok(Outcome::Passed)
}
