//! The listen-overflow signal (`nettune-ebpf/src/listen.rs`, and the procfs
//! fallback): listeners that never accept, hammered by connects from another
//! namespace.
//!
//! - Whatever variant attaches, nettune's per-netns overflow figure equals the
//!   delta of that namespace's `ListenOverflows`, and the drops seen meanwhile
//!   equal bpftrace's.
//! - Under the fentry variant, and under the kprobe variant forced with fentry
//!   disabled, the per-listener map names each listener's port with its queue
//!   limit, `min(listen() backlog, somaxconn)`, a queue length past that limit,
//!   and overflow counts that add up to the namespace's `ListenOverflows` delta:
//!   the kernel's own counter, which nettune does not read for these figures.
//!
//! Listeners, from the running agent: the backlog an application asked for (the
//! `sys_enter_listen` tracepoint), its limit and queue (`sock_diag`, compared with
//! `ss`), and its overflows (equal to the namespace's `ListenOverflows` delta);
//! a listener older than the agent has an unknown request but exact figures.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::{AgentProcess, listener_in},
    harness::{Feature, Outcome, Test, TestResult, record, require_root},
    host::TempDir,
    netns::Netns,
    probes::{load, read, require_variant},
    scenarios::Pair,
    sockets::{connect_nonblocking, listener_with_backlog},
};
use nettune::{
    model::probes::Variant,
    probes::{ProbeSource as _, Probes, listen::SIGNAL},
};
use serde_json::{Value, json};

use crate::{
    drops::{drops_equal_bpftrace, probes_with_drops},
    tuning::TestConfig,
};

pub const TESTS: &[Test] = &[
    Test {
        name: "listen::overflows_equal_the_namespace_listenoverflows_delta",
        run: overflows_equal_the_namespace_listenoverflows_delta,
    },
    Test {
        name: "listen::fentry_per_socket_overflows_add_up_to_listenoverflows",
        run: || per_socket_overflows_add_up_to_listenoverflows(Variant::Fentry, Feature::Fentry),
    },
    Test {
        name: "listen::kprobe_per_socket_overflows_add_up_to_listenoverflows",
        run: || per_socket_overflows_add_up_to_listenoverflows(Variant::Kprobe, Feature::Kprobe),
    },
    Test {
        name: "listen::a_backlog_of_8_is_reported_as_asked_with_its_overflows_and_somaxconn_stays",
        run: a_backlog_of_8_is_reported_as_asked_with_its_overflows_and_somaxconn_stays,
    },
    Test {
        name: "listen::nginx_forking_after_listen_keeps_the_backlog_it_asked_for",
        run: nginx_forking_after_listen_keeps_the_backlog_it_asked_for,
    },
    Test {
        name: "listen::a_listener_older_than_the_agent_has_an_unknown_request_and_exact_figures",
        run: a_listener_older_than_the_agent_has_an_unknown_request_and_exact_figures,
    },
];

const PORT: u16 = 5300;
const CONNECTS: usize = 100;

fn agent_overflows(probes: &Probes, ns: &Netns) -> anyhow::Result<u64> {
    let sample = bpf_tests::probes::sample(probes)?;
    let inode = ns.inode()?;
    sample
        .netns
        .get(&inode)
        .and_then(|n| n.listen)
        .map(|l| l.overflows)
        .ok_or_else(|| anyhow::anyhow!("the sample has no listen counters for netns {inode}"))
}

fn overflows_equal_the_namespace_listenoverflows_delta() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = probes_with_drops()?;
    let variant = probes.report().signal(SIGNAL).and_then(|s| s.attached);
    ensure!(
        variant.is_some(),
        "listen_overflow did not attach: {:?}",
        probes.report().signal(SIGNAL)
    );
    let pair = Pair::new(6, None)?;
    let server_addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let listener = pair
        .receiver
        .run(|| listener_with_backlog(server_addr, 1))??;

    let agent_before = agent_overflows(&probes, &pair.receiver)?;
    let kernel_before = pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")?;
    drops_equal_bpftrace(&probes, &[&pair.sender, &pair.receiver], || {
        flood_until_quiet(&pair, &[server_addr], CONNECTS)
    })?;
    let kernel =
        u64::try_from(pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")? - kernel_before)?;
    let agent = agent_overflows(&probes, &pair.receiver)? - agent_before;
    println!("    {variant:?}: nettune {agent} overflows, ListenOverflows rose by {kernel}");
    ensure!(
        kernel > 0,
        "{CONNECTS} connects to a listen(1) server caused no overflow"
    );
    ensure!(
        agent == kernel,
        "nettune says {agent} overflows, the namespace's counter {kernel}"
    );
    drop(listener);
    Ok(Outcome::Passed)
}

/// A listener of the per-socket test: its port, `listen()` backlog, and the limit
/// the kernel must apply (somaxconn is 3 in the test namespace).
const LISTENERS: [(u16, i32, u32); 2] = [(5301, 1, 1), (5302, 8, 3)];
const SOMAXCONN: &str = "3";

fn per_socket_overflows_add_up_to_listenoverflows(
    variant: Variant,
    feature: Feature,
) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let others: Vec<Variant> = [Variant::Fentry, Variant::Kprobe]
        .into_iter()
        .filter(|v| *v != variant)
        .collect();
    let probes = load(&others)?;
    if let Some(skip) = require_variant(&probes, SIGNAL, variant, feature) {
        return skip;
    }
    let pair = Pair::new(7, None)?;
    pair.receiver
        .write_sysctl("net/core/somaxconn", SOMAXCONN)?;
    let servers: Vec<SocketAddrV4> = LISTENERS
        .iter()
        .map(|(port, _, _)| SocketAddrV4::new(pair.veth.b_addr, *port))
        .collect();
    let _listeners = pair.receiver.run(|| {
        LISTENERS
            .iter()
            .zip(&servers)
            .map(|((_, backlog, _), addr)| listener_with_backlog(*addr, *backlog))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let kernel_before = pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")?;
    flood_until_quiet(&pair, &servers, CONNECTS)?;
    let kernel =
        u64::try_from(pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")? - kernel_before)?;

    let inode = pair.receiver.inode()?;
    let entries = read(&probes)?.listen_overflows;
    let mut total = 0;
    let mut seen = Vec::new();
    for (port, backlog, limit) in LISTENERS {
        let entry = entries
            .iter()
            .find(|(k, _)| k.netns == inode && k.port == port)
            .map(|(_, v)| *v)
            .with_context(|| format!("no per-listener entry for port {port}: {entries:?}"))?;
        println!(
            "    {variant}: port {port} listen({backlog}): {} overflows, queue {} of limit {}",
            entry.overflows, entry.backlog, entry.max_backlog
        );
        ensure!(entry.overflows > 0, "port {port}: no overflows counted");
        ensure!(
            entry.max_backlog == limit,
            "port {port}: limit {} != min(backlog {backlog}, somaxconn {SOMAXCONN}) = {limit}",
            entry.max_backlog
        );
        ensure!(
            entry.backlog > limit,
            "port {port}: an overflow with the queue at {} of {limit}",
            entry.backlog
        );
        total += entry.overflows;
        seen.push(json!([
            port,
            backlog,
            entry.max_backlog,
            entry.backlog,
            entry.overflows
        ]));
    }
    let others_in_ns: u64 = entries
        .iter()
        .filter(|(k, _)| k.netns == inode && !LISTENERS.iter().any(|l| l.0 == k.port))
        .map(|(_, v)| v.overflows)
        .sum();
    println!("    {variant}: per-listener total {total}, ListenOverflows rose by {kernel}");
    ensure!(others_in_ns == 0, "overflows counted on other ports");
    ensure!(
        total == kernel,
        "per-listener overflows add up to {total}, the namespace's ListenOverflows rose by {kernel}"
    );
    record(
        &format!("listen_overflow_{variant}"),
        json!({ "listeners": seen, "listen_overflows": kernel }),
    );
    Ok(Outcome::Passed)
}
/// Opens `count` connections from `pair`'s sender to each of `servers` (never
/// accepted), lets their SYNs come back once, closes them, and waits until the
/// receiver's `ListenOverflows` has not moved for 1 s: late handshakes of closed
/// clients can still arrive.
fn flood_until_quiet(pair: &Pair, servers: &[SocketAddrV4], count: usize) -> anyhow::Result<()> {
    let clients = pair.sender.run(|| {
        servers
            .iter()
            .flat_map(|s| (0..count).map(|_| connect_nonblocking(*s)))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    // The first SYN retransmit comes after 1 s.
    std::thread::sleep(Duration::from_millis(1500));
    drop(clients);
    let overflows = || pair.receiver.mib("netstat", "TcpExt", "ListenOverflows");
    let mut last = overflows()?;
    let mut quiet_since = std::time::Instant::now();
    let deadline = quiet_since + Duration::from_secs(30);
    while quiet_since.elapsed() < Duration::from_secs(1) {
        ensure!(
            std::time::Instant::now() < deadline,
            "overflows never stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = overflows()?;
        if now != last {
            (last, quiet_since) = (now, std::time::Instant::now());
        }
    }
    Ok(())
}

/// A server that asks `listen()` for 8 in a namespace with somaxconn 4096,
/// flooded and never accepting: nettune names the port with requested 8, limit
/// 8, a full queue and the namespace's overflow count; the somaxconn rule, in
/// enforce mode for that namespace, writes nothing and names the backlog.
fn a_backlog_of_8_is_reported_as_asked_with_its_overflows_and_somaxconn_stays() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const PORT: u16 = 5310;
    let pair = Pair::new(20, None)?;
    pair.receiver.write_sysctl("net/core/somaxconn", "4096")?;
    let inode = pair.receiver.inode()?;
    let config = TestConfig::with("backlog8", &[&pair.receiver], "cooldown_seconds = 1\n")?;
    let agent = config.start_agent()?;
    // Started after nettune's first look at its namespace, as a pod's server
    // starts after its namespace appears.
    agent.wait_for_a_look(inode)?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let listener = pair.receiver.run(|| listener_with_backlog(addr, 8))??;
    agent.wait_for(
        "the listener with its backlog",
        Duration::from_secs(10),
        |s| listener_in(s, inode, PORT).filter(|l| l["requested_backlog"] == 8),
    )?;
    let agent_overflows =
        |s: &Value| listener_in(s, inode, PORT).map(|l| l["overflows"]["total"].as_u64());
    let before_agent = agent_overflows(&agent.snapshot()?).flatten().unwrap_or(0);
    let before_kernel = pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")?;
    flood_until_quiet(&pair, &[addr], 60)?;
    let kernel =
        u64::try_from(pair.receiver.mib("netstat", "TcpExt", "ListenOverflows")? - before_kernel)?;
    // The agent takes the last count in on a later tick: wait for it (counts only
    // grow, so one past the kernel's stays past it and fails below).
    let ours = |s: &Value| {
        agent_overflows(s)
            .flatten()
            .map(|n| n.saturating_sub(before_agent))
    };
    let _ = agent.wait_for(
        "nettune's overflow count to reach the namespace's",
        Duration::from_secs(10),
        |s| ours(s).filter(|n| *n >= kernel),
    );
    let snapshot = agent.snapshot()?;
    let l = listener_in(&snapshot, inode, PORT).context("the listener is gone")?;
    let ours = ours(&snapshot).unwrap_or(0);
    println!(
        "    port {PORT}: asked {}, limit {}, queue {}, process {}, overflows nettune {ours} \
         ({}) / ListenOverflows {kernel}",
        l["requested_backlog"], l["limit"], l["queue"], l["process"], l["attribution"]
    );
    ensure!(
        kernel > 0,
        "60 connects to a listen(8) server caused no overflow"
    );
    ensure!(
        l["requested_backlog"] == 8 && l["limit"] == 8,
        "asked/limit: {l}"
    );
    ensure!(
        l["queue"].as_u64() >= Some(8),
        "the queue is not at its limit: {l}"
    );
    ensure!(l["process"].is_string(), "no process named: {l}");
    ensure!(
        ours == kernel,
        "nettune counts {ours} overflows, the namespace {kernel}"
    );
    let metrics = agent.metrics()?;
    let series = |name: &str| {
        metrics
            .lines()
            .find(|m| m.starts_with(name) && m.contains(&format!("port=\"{PORT}\"")))
            .map(str::to_owned)
    };
    for (name, value) in [
        ("nettune_listen_backlog_requested{", " 8"),
        ("nettune_listen_backlog_limit{", " 8"),
    ] {
        let line = series(name).with_context(|| format!("no {name}… series for {PORT}"))?;
        ensure!(line.ends_with(value), "{line}");
    }
    let decision = agent.wait_for("a somaxconn decision", Duration::from_secs(10), |s| {
        s["tuning"]["recent"]
            .as_array()?
            .iter()
            .rev()
            .find(|d| d["sysctl"] == "net.core.somaxconn")
            .cloned()
    })?;
    println!(
        "    decision: [{}] {}",
        decision["result"], decision["reason"]
    );
    ensure!(decision["result"] == "futile", "{decision}");
    let reason = decision["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("asked listen() for 8") && reason.contains("backlog to 4096"),
        "the advice does not name the application's backlog: {reason}"
    );
    let now: String = pair
        .receiver
        .run(|| std::fs::read_to_string("/proc/sys/net/core/somaxconn"))??;
    ensure!(now.trim() == "4096", "somaxconn changed to {now}");
    drop((listener, agent));
    let (code, out) = config.nettune(&["rollback"])?;
    ensure!(
        code == Some(0) && out.contains("nothing to roll back"),
        "{code:?} {out}"
    );
    Ok(Outcome::Passed)
}

/// `ss -ltn` in `ns` for `port`: (Recv-Q, Send-Q) — for a listener, its queue
/// and limit.
fn ss_queue(ns: &Netns, port: u16) -> anyhow::Result<(u64, u64)> {
    let out = ns.exec("ss", &["-ltnH", &format!("sport = :{port}")])?;
    let mut fields = out.split_whitespace().skip(1);
    let mut next =
        || -> anyhow::Result<u64> { Ok(fields.next().context("short ss line")?.parse()?) };
    Ok((next()?, next()?))
}

/// A listener started before the agent: its request is unknown, its limit and
/// queue equal what `ss` reads from the kernel.
fn a_listener_older_than_the_agent_has_an_unknown_request_and_exact_figures() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const PORT: u16 = 5311;
    let pair = Pair::new(21, None)?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let listener = pair.receiver.run(|| listener_with_backlog(addr, 16))??;
    let clients = pair.sender.run(|| {
        (0..3)
            .map(|_| connect_nonblocking(addr))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    std::thread::sleep(Duration::from_millis(300));
    let inode = pair.receiver.inode()?;
    let agent = AgentProcess::start(&crate::agent::nettune_bin()?, &["--interval", "0.3"])?;
    let l = agent.wait_for("the older listener", Duration::from_secs(20), |s| {
        listener_in(s, inode, PORT)
    })?;
    let (queue, limit) = ss_queue(&pair.receiver, PORT)?;
    println!(
        "    nettune: asked {}, limit {}, queue {}; ss: queue {queue}, limit {limit}",
        l["requested_backlog"], l["limit"], l["queue"]
    );
    ensure!(
        l["requested_backlog"].is_null(),
        "a request nettune cannot know: {l}"
    );
    ensure!(
        l["limit"] == limit && l["queue"] == queue && limit == 16 && queue == 3,
        "nettune {l} vs ss ({queue}, {limit})"
    );
    let metrics = agent.metrics()?;
    ensure!(
        !metrics
            .lines()
            .any(|m| m.starts_with("nettune_listen_backlog_requested{")
                && m.contains(&format!("port=\"{PORT}\""))),
        "a requested backlog was exported for a listener older than the agent"
    );
    drop((clients, listener));
    Ok(Outcome::Passed)
}

/// nginx in its default daemon mode, stopped (SIGQUIT, then SIGKILL) on drop.
struct Nginx {
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx inside `ns`, listening on `addr` with `backlog=`; returns
    /// once its starting process (the one that called `listen()`) has exited.
    fn start(ns: &Netns, addr: SocketAddrV4, backlog: u32) -> anyhow::Result<Self> {
        let dir = TempDir::new("nginx")?;
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon on;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
                 http {{ access_log off; client_body_temp_path {d}/body;\n\
                 server {{ listen {addr} backlog={backlog}; return 204; }} }}\n"
            ),
        )?;
        let conf = dir.join("nginx.conf");
        let error_log = dir.join("error.log");
        let nginx = Self { dir };
        ns.exec(
            "nginx",
            &[
                "-p",
                &d,
                "-c",
                &conf.display().to_string(),
                "-e",
                &error_log.display().to_string(),
            ],
        )
        .context("nginx (Debian package nginx-light)")?;
        Ok(nginx)
    }

    /// The master's pid (not the process that called `listen()`: that one
    /// forked it and exited).
    fn master(&self) -> anyhow::Result<u32> {
        Ok(std::fs::read_to_string(self.dir.join("nginx.pid"))?
            .trim()
            .parse()?)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Ok(pid) = self.master() else { return };
        let pid = libc::pid_t::try_from(pid).unwrap_or(0);
        for signal in [libc::SIGQUIT, libc::SIGKILL] {
            // SAFETY: signals a process this test started.
            unsafe { libc::kill(pid, signal) };
            for _ in 0..50 {
                // SAFETY: signal 0 only checks that the process exists.
                if unsafe { libc::kill(pid, 0) } != 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// nginx's default daemon mode calls `listen()` and then forks, and the process
/// that listened exits: what it asked for is still known, because it is read
/// from the socket (`sock_diag`) and its owner found among the processes that
/// hold it, not from the process that listened. Compared with `ss`, which
/// reads the same socket from the kernel.
fn nginx_forking_after_listen_keeps_the_backlog_it_asked_for() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const PORT: u16 = 5312;
    let pair = Pair::new(22, None)?;
    pair.receiver.write_sysctl("net/core/somaxconn", "4096")?;
    let inode = pair.receiver.inode()?;
    let agent = AgentProcess::start(&crate::agent::nettune_bin()?, &["--interval", "0.3"])?;
    agent.wait_for_a_look(inode)?;
    // Started after the agent's look, as nginx (re)starts on a node nettune watches.
    let nginx = Nginx::start(&pair.receiver, SocketAddrV4::new(pair.veth.b_addr, PORT), 8)?;
    let master = nginx.master()?;
    let l = agent.wait_for("nginx's listener", Duration::from_secs(20), |s| {
        listener_in(s, inode, PORT).filter(|l| !l["requested_backlog"].is_null())
    });
    let (queue, limit) = ss_queue(&pair.receiver, PORT)?;
    let l = l.with_context(|| {
        format!("nginx's listener never had a request (ss: limit {limit}, queue {queue})")
    })?;
    println!(
        "    nginx (master pid {master}): asked {}, limit {}, process {}; ss: limit {limit}",
        l["requested_backlog"], l["limit"], l["process"]
    );
    ensure!(
        l["requested_backlog"] == 8 && l["limit"] == limit && limit == 8,
        "nettune {l} vs ss limit {limit}"
    );
    ensure!(l["process"] == "nginx", "the process that listened: {l}");
    drop(nginx);
    Ok(Outcome::Passed)
}
