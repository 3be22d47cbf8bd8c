//! Each figure against the same tool run by hand on the same path.

use super::*;

/// nettune's throughput (iperf3) next to iperf3's by hand; returns iperf3's Mbit/s.
pub(super) fn compare_throughput(setup: &Setup, ours: &Value) -> anyhow::Result<f64> {
    let server = setup.server_addr().to_string();
    let by_hand: Value = serde_json::from_str(&setup.client().exec(
        "iperf3",
        &["-c", &server, "-p", IPERF_PORT, "-t", "3", "-J"],
    )?)?;
    let theirs = f64_at(&by_hand, &["end", "sum_received", "bits_per_second"])? / 1e6;
    let measured = &ours["throughput"]["measured"];
    let mbps = f64_at(measured, &["mbps"])?;
    println!("    throughput: nettune (iperf3) {mbps:.0} Mbit/s, iperf3 by hand {theirs:.0}");
    ensure!(measured["tool"] == "iperf3", "{}", ours["throughput"]);
    ensure!(
        within_factor(mbps, theirs, IPERF_FACTOR),
        "throughput {mbps} vs iperf3's {theirs}"
    );
    Ok(theirs)
}

/// nettune's HTTP and connect figures next to `ab`'s with the same -n and -c.
pub(super) fn compare_http(
    setup: &Setup,
    ours: &Value,
    requests: &str,
    concurrency: &str,
) -> anyhow::Result<()> {
    let url = format!("http://{}:{HTTP_PORT}/", setup.server_addr());
    let ab = setup
        .client()
        .exec("ab", &["-n", requests, "-c", concurrency, &url])?;
    let http = &ours["http"]["measured"];
    let (ours_rate, ours_mean) = (
        f64_at(http, &["rate"])?,
        f64_at(http, &["latency_ms", "mean"])?,
    );
    let (ab_rate, ab_mean) = (
        ab_figure(&ab, "Requests per second:")?,
        ab_figure(&ab, "Time per request:")?,
    );
    println!(
        "    http: nettune {ours_rate:.0} req/s mean {ours_mean:.2} ms; ab {ab_rate:.0} req/s mean {ab_mean:.2} ms"
    );
    ensure!(
        http["completed"].as_f64() == requests.parse().ok()
            && http["errors"] == 0
            && http["non_2xx"] == 0,
        "{http}"
    );
    ensure!(
        ab_figure(&ab, "Failed requests:")? == 0.0 && !ab.contains("Non-2xx"),
        "{ab}"
    );
    ensure!(
        within_factor(ours_rate, ab_rate, HTTP_FACTOR),
        "rate {ours_rate} vs ab's {ab_rate}"
    );
    ensure!(
        within_factor(ours_mean, ab_mean, HTTP_FACTOR) || (ours_mean - ab_mean).abs() < 1.0,
        "mean {ours_mean} ms vs ab's {ab_mean} ms"
    );
    let connect = &ours["latency"]["measured"];
    let ours_p50 = f64_at(connect, &["connect_ms", "p50"])?;
    let ab_connect = ab_connect_median(&ab)?;
    println!(
        "    connect: nettune p50 {ours_p50:.3} ms p99 {:.3} ms; ab median {ab_connect} ms",
        f64_at(connect, &["connect_ms", "p99"])?
    );
    ensure!(connect["failures"] == 0, "{connect}");
    ensure!(
        (ours_p50 - ab_connect).abs() <= 1.0,
        "connect p50 {ours_p50} vs ab's {ab_connect}"
    );
    Ok(())
}

pub(super) fn f64_at(v: &Value, path: &[&str]) -> anyhow::Result<f64> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .with_context(|| format!("no {} in {v}", path.join(".")))
}

/// What ab printed: a line's first number after `label`.
pub(super) fn ab_figure(text: &str, label: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {label:?} in ab's report:\n{text}"))
}

/// The median of ab's `Connect:` row (min mean sd median max).
pub(super) fn ab_connect_median(text: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Connect:"))
        .and_then(|rest| rest.split_whitespace().nth(3)?.parse().ok())
        .with_context(|| format!("no Connect: row in ab's report:\n{text}"))
}

pub(super) fn within_factor(ours: f64, theirs: f64, factor: f64) -> bool {
    ours <= theirs * factor && ours >= theirs / factor
}

pub(super) fn figures_match_iperf3_dnsperf_dig_and_ab_run_by_hand() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let setup = Setup::new("chk")?;
    let server = setup.server_addr().to_string();
    let (requests, concurrency) = ("2000", "10");

    // nettune check, every test, with bounds it meets.
    let (code, stdout, stderr) = setup.check_from_client(
        &[
            NO_FAILURES,
            &[
                "--json",
                "--seconds",
                "3",
                "--connects",
                "200",
                "--dns-queries",
                "300",
                "--dns-name",
                "ok.test",
                "-n",
                requests,
                "-c",
                concurrency,
                "--min-throughput-mbps",
                "1",
            ],
        ]
        .concat(),
    )?;
    ensure!(code == 0, "check exited {code}:\n{stdout}\n{stderr}");
    ensure!(
        !stderr.contains("check:"),
        "a progress line without a terminal:\n{stderr}"
    );
    let ours: Value = serde_json::from_str(&stdout).context("check --json")?;
    let measured = |test: &str| ours[test]["measured"].clone();

    // Throughput: iperf3 by hand, from the same namespace to the same server.
    let theirs_mbps = compare_throughput(&setup, &ours)?;

    // The built-in stream, to a sink nettune starts in the server's namespace.
    let (code, stdout, stderr) = setup.check(&[
        "--json",
        "--no-save",
        "--tests",
        "throughput",
        "--builtin-stream",
        "--seconds",
        "3",
    ])?;
    ensure!(
        code == 0,
        "built-in stream: exit {code}:\n{stdout}\n{stderr}"
    );
    let builtin: Value = serde_json::from_str(&stdout)?;
    let builtin_mbps = f64_at(&builtin["throughput"]["measured"], &["mbps"])?;
    println!("    throughput: nettune built-in {builtin_mbps:.0} Mbit/s");
    ensure!(builtin["throughput"]["measured"]["tool"] == "builtin");
    ensure!(
        within_factor(builtin_mbps, theirs_mbps, BUILTIN_FACTOR),
        "built-in {builtin_mbps} vs iperf3's {theirs_mbps}"
    );

    // ICMP echo: ping by hand, the same count; nettune's requests leave the
    // client's namespace (its OutEchos), not the host's.
    let out_echos = || setup.client().mib("snmp", "Icmp", "OutEchos");
    let echos_before = out_echos()?;
    let (code, stdout, stderr) = setup.check(&[
        "--json",
        "--no-save",
        "--tests",
        "ping",
        "--pings",
        "50",
        "--max-ping-loss",
        "0",
    ])?;
    ensure!(code == 0, "ping: exit {code}:\n{stdout}\n{stderr}");
    ensure!(
        out_echos()? - echos_before == 50,
        "the client sent {} echo requests",
        out_echos()? - echos_before
    );
    let pinged: Value = serde_json::from_str(&stdout)?;
    let echo = &pinged["ping"]["measured"];
    let by_hand = setup
        .client()
        .exec("ping", &["-c", "50", "-i", "0.01", "-q", &server])?;
    // "rtt min/avg/max/mdev = 0.031/0.046/0.090/0.012 ms"
    let avg: f64 = by_hand
        .lines()
        .find_map(|l| l.split(" = ").nth(1)?.split('/').nth(1)?.parse().ok())
        .with_context(|| format!("no rtt line in ping's report:\n{by_hand}"))?;
    let ours_avg = f64_at(echo, &["rtt_ms", "mean"])?;
    println!(
        "    ping: nettune mean {ours_avg:.3} ms, {} of 50; ping avg {avg:.3} ms",
        echo["received"]
    );
    ensure!(
        by_hand.contains("50 packets transmitted, 50 received"),
        "{by_hand}"
    );
    ensure!(echo["sent"] == 50 && echo["received"] == 50, "{echo}");
    ensure!(
        (ours_avg - avg).abs() <= PING_MEAN_MS,
        "mean {ours_avg} ms vs ping's {avg} ms"
    );

    // DNS: dnsperf with one query outstanding, the same name and count.
    let dns = measured("dns");
    ensure!(
        dns["server"] == format!("{server}:53"),
        "asked {} (not the resolv.conf's)",
        dns["server"]
    );
    let file = setup.scratch.join("queries.txt");
    std::fs::write(&file, "ok.test A\n".repeat(300))?;
    let report = setup.client().exec(
        "dnsperf",
        &[
            "-s",
            &server,
            "-d",
            &file.display().to_string(),
            "-n",
            "1",
            "-q",
            "1",
            "-t",
            "1",
        ],
    )?;
    let theirs = DnsperfReport::parse(&report)?;
    let ours_mean = f64_at(&dns, &["latency_ms", "mean"])?;
    println!(
        "    dns: nettune mean {ours_mean:.3} ms p99 {:.3} ms, {} failures; dnsperf mean {:.3} ms, completed {} lost {}",
        f64_at(&dns, &["latency_ms", "p99"])?,
        dns["failures"],
        theirs.mean_latency * 1000.0,
        theirs.completed,
        theirs.lost
    );
    ensure!(dns["queries"] == 300 && dns["failures"] == 0, "{dns}");
    ensure!(
        dns["rcodes"]["NOERROR"] == theirs.completed,
        "{dns} vs {theirs:?}"
    );
    ensure!(theirs.lost == 0 && theirs.sent == 300, "{theirs:?}");
    ensure!(
        (ours_mean - theirs.mean_latency * 1000.0).abs() <= DNS_MEAN_MS,
        "mean {ours_mean} ms vs dnsperf's {} s",
        theirs.mean_latency
    );

    // HTTP and connect: ab with the same -n and -c.
    compare_http(&setup, &ours, requests, concurrency)?;
    ensure!(
        measured("latency")["attempts"] == 200,
        "{}",
        ours["latency"]
    );

    // Failing its bounds: a name dnsmasq does not know (dig: NXDOMAIN) and a
    // path the server does not have (ab: non-2xx) — exit 1 and the table says so.
    let dig = setup.client().exec(
        "dig",
        &["+time=1", "+tries=1", &format!("@{server}"), "nx.test"],
    )?;
    ensure!(dig.contains("status: NXDOMAIN"), "{dig}");
    let missing = format!("http://{server}:{HTTP_PORT}/missing");
    let ab_missing = setup
        .client()
        .exec("ab", &["-n", "50", "-c", "5", &missing])?;
    let ab_non_2xx = ab_figure(&ab_missing, "Non-2xx responses:")?;
    let (code, table, stderr) = setup.check_from_client(&[
        "--no-save",
        "--tests",
        "dns,http",
        "--dns-queries",
        "20",
        "--dns-name",
        "nx.test",
        "-n",
        "50",
        "-c",
        "5",
        "--url",
        &missing,
        "--max-dns-failures",
        "0",
        "--max-http-errors",
        "0",
    ])?;
    println!("    failing run (exit {code}):\n{table}");
    ensure!(
        code == 1,
        "exit {code} for failed bounds:\n{table}\n{stderr}"
    );
    for line in [
        "dns failures",
        "--max-dns-failures 0 FAILED",
        "--max-http-errors 0 FAILED",
        "FAILED\n",
    ] {
        ensure!(table.contains(line), "no {line:?} in\n{table}");
    }
    let row = |name: &str| -> anyhow::Result<f64> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} row in\n{table}"))
    };
    ensure!(row("dns failures")? == 20.0, "{table}");
    ensure!(
        row("http errors")? == ab_non_2xx,
        "nettune's non-2xx vs ab's {ab_non_2xx}:\n{table}"
    );
    let (code, json, _) = setup.check(&[
        "--no-save",
        "--json",
        "--tests",
        "dns",
        "--dns-queries",
        "5",
        "--dns-name",
        "nx.test",
        "--max-dns-failures",
        "4",
    ])?;
    let nx: Value = serde_json::from_str(&json)?;
    ensure!(
        code == 1 && nx["dns"]["measured"]["rcodes"]["NXDOMAIN"] == 5,
        "{json}"
    );

    // One saved run (the others were --no-save).
    let (_, list, _) = setup.nettune(None, &["check", "--list"])?;
    ensure!(
        list.lines().count() == 1 && list.contains("passed"),
        "{list}"
    );
    Ok(Outcome::Passed)
}
