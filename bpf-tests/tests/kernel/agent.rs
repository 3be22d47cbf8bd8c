//! The `nettune` binary end to end: `nettune run` attaches its programs and, on
//! SIGINT or SIGTERM, exits 0 leaving no program or link of its own behind.

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use bpf_tests::{
    agent_process::{AgentProcess, http_get, metric},
    harness::{Outcome, Test, TestResult, require_root},
};

pub const TESTS: &[Test] = &[
    Test {
        name: "agent::run_detaches_everything_on_sigint",
        run: || run_detaches_everything_on(libc::SIGINT),
    },
    Test {
        name: "agent::run_detaches_everything_on_sigterm",
        run: || run_detaches_everything_on(libc::SIGTERM),
    },
    Test {
        name: "agent::a_failed_kernel_read_is_counted_and_logged_rarely_through_aya_log",
        run: a_failed_kernel_read_is_counted_and_logged_rarely_through_aya_log,
    },
    Test {
        name: "agent::a_fifo_planted_in_run_netns_stalls_neither_collection_nor_the_endpoints",
        run: a_fifo_planted_in_run_netns_stalls_neither_collection_nor_the_endpoints,
    },
    Test {
        name: "agent::after_sigkill_a_restart_leaves_one_clsact_filter_per_direction",
        run: after_sigkill_a_restart_leaves_one_clsact_filter_per_direction,
    },
    Test {
        name: "agent::with_proc_sys_read_only_enforce_becomes_advise_and_the_api_says_why",
        run: with_proc_sys_read_only_enforce_becomes_advise_and_the_api_says_why,
    },
    Test {
        name: "agent::health_answers_while_one_client_holds_a_thousand_connections",
        run: health_answers_while_one_client_holds_a_thousand_connections,
    },
    Test {
        name: "agent::without_root_nettune_fails_with_a_clear_message",
        run: without_root_nettune_fails_with_a_clear_message,
    },
    Test {
        name: "agent::without_root_or_sudo_xtask_run_fails_in_one_line",
        run: without_root_or_sudo_xtask_run_fails_in_one_line,
    },
];

/// The user the "not root" tests run as.
const NOBODY: u32 = 65534;

/// Runs `program args` as `nobody`; returns (exit code, stderr lines).
///
/// The checkout may sit in a directory `nobody` cannot enter (a clone under
/// `/root`, mode 0700): the binary is copied to a directory of its own that
/// anyone can enter, and run from there.
fn run_as_nobody(
    program: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<(Option<i32>, Vec<String>)> {
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
    let dir = std::env::temp_dir().join(format!(
        "nettune-nobody-{}-{}",
        std::process::id(),
        program
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("bin")
    ));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.join(program.file_name().context("no file name")?);
    std::fs::copy(program, &copy)
        .with_context(|| format!("copying {} for nobody", program.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    let out = Command::new(&copy)
        .args(args)
        .current_dir(&dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .env_remove("RUST_LOG")
        .output()
        .with_context(|| format!("running {} as nobody", copy.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok((
        out.status.code(),
        stderr.lines().map(str::to_owned).collect(),
    ))
}

fn without_root_nettune_fails_with_a_clear_message() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    // Wherever the checkout is, even in a directory only root can enter.
    let private = std::env::temp_dir().join(format!("nettune-private-{}", std::process::id()));
    std::fs::create_dir_all(&private)?;
    std::fs::set_permissions(
        &private,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )?;
    let inside = private.join("nettune");
    std::fs::copy(nettune_bin()?, &inside)?;
    let ran = run_as_nobody(&inside, &["probes"]);
    let _ = std::fs::remove_dir_all(&private);
    let (code, stderr) = ran?;
    let last = stderr.last().map_or("", String::as_str);
    ensure!(code == Some(1), "exit code {code:?}, stderr: {stderr:?}");
    ensure!(
        last.starts_with("nettune: loading eBPF programs failed (not running as root"),
        "the error does not say root is needed: {last}"
    );
    ensure!(
        !stderr.iter().any(|l| l.contains("panicked")),
        "nettune panicked: {stderr:?}"
    );
    Ok(Outcome::Passed)
}

fn without_root_or_sudo_xtask_run_fails_in_one_line() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    // `nobody` has no sudo rights (and sudo may not even be installed).
    let (code, stderr) = run_as_nobody(&workspace_bin("XTASK_BIN", "xtask")?, &["run"])?;
    ensure!(code == Some(1), "exit code {code:?}, stderr: {stderr:?}");
    ensure!(stderr.len() == 1, "expected one line, got: {stderr:?}");
    ensure!(
        stderr[0].contains("needs root") && stderr[0].contains("sudo"),
        "unclear message: {}",
        stderr[0]
    );
    Ok(Outcome::Passed)
}

/// A workspace binary: the path in `env_var` (set by `cargo xtask test`), else the
/// workspace's debug build of `name`.
fn workspace_bin(env_var: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(env_var).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug")
                .join(name)
        },
        PathBuf::from,
    );
    ensure!(
        path.exists(),
        "{} does not exist: build it (`cargo build --bin {name}`) or set {env_var}",
        path.display()
    );
    Ok(path)
}

/// The `nettune` binary.
pub fn nettune_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("NETTUNE_BIN", "nettune")
}

/// Ids of loaded programs and links, to tell ours apart from what was there before.
pub fn loaded_ids() -> anyhow::Result<(HashSet<u32>, HashSet<u32>)> {
    let programs = aya::programs::loaded_programs()
        .map(|p| p.map(|p| p.id()))
        .collect::<Result<_, _>>()?;
    let links = aya::programs::loaded_links()
        .map(|l| l.map(|l| l.id()))
        .collect::<Result<_, _>>()?;
    Ok((programs, links))
}

fn run_detaches_everything_on(signal: libc::c_int) -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let (programs_before, links_before) = loaded_ids()?;
    // Started once `/readyz` answers 200: attached and a first collection done.
    let agent = AgentProcess::start_logged(&nettune_bin()?, &["--interval", "0.2"])?;
    let (programs_running, links_running) = loaded_ids()?;
    let ours: Vec<_> = programs_running.difference(&programs_before).collect();
    let our_links: Vec<_> = links_running.difference(&links_before).collect();
    // What attached, as the JSON API reports it.
    let probes = agent.snapshot()?["probes"].clone();
    let retransmit = probes["signals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["signal"] == "tcp_retransmit")
        .map(|s| s["attached"].clone());
    let log = agent.log();
    // The kubelet's grace period is longer; nettune promises 5 s.
    let status = agent.stop(signal, Duration::from_secs(5))?;
    ensure!(
        !ours.is_empty(),
        "no program was loaded while running; log:\n{}",
        log.join("\n")
    );
    ensure!(!our_links.is_empty(), "no link was created while running");
    ensure!(status.success(), "nettune exited with {status}");
    all_unloaded(&ours, &our_links)?;
    ensure!(
        retransmit.is_some_and(|v| v.is_string()),
        "the API does not say which tcp_retransmit variant attached: {probes}"
    );
    Ok(Outcome::Passed)
}

/// Waits until none of `programs` and `links` is loaded any more. The kernel
/// frees a program after an RCU grace period once its last fd closes, so its id
/// can outlive the process by a moment: poll, with a 5 s deadline.
pub fn all_unloaded(programs: &[&u32], links: &[&u32]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (programs_after, links_after) = loaded_ids()?;
        let programs_left: Vec<_> = programs
            .iter()
            .filter(|id| programs_after.contains(id))
            .collect();
        let links_left: Vec<_> = links.iter().filter(|id| links_after.contains(id)).collect();
        if programs_left.is_empty() && links_left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("5s after exit, programs {programs_left:?} and links {links_left:?} remain");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// BTF whose every struct member sits at offset 0: `sock`'s network namespace
/// pointer then reads the socket's address pair, which is not a kernel address,
/// so every retransmit's namespace lookup fails inside the program.
fn btf_with_offsets_that_point_nowhere() -> Vec<u8> {
    let mut w = nettune::sys::btf::BtfWriter::new();
    let u16_t = w.int("u16", 2);
    let u32_t = w.int("u32", 4);
    let ns_common = w.composite(4, "ns_common", 4, &[("inum", u32_t, 0)]);
    let net = w.composite(4, "net", 4, &[("ns", ns_common, 0)]);
    let net_ptr = w.pointer(net);
    let possible = w.composite(4, "possible_net_t", 8, &[("net", net_ptr, 0)]);
    let common = w.composite(
        4,
        "sock_common",
        8,
        &[("skc_net", possible, 0), ("skc_num", u16_t, 0)],
    );
    w.composite(
        4,
        "sock",
        8,
        &[
            ("__sk_common", common, 0),
            ("sk_ack_backlog", u32_t, 0),
            ("sk_max_ack_backlog", u32_t, 0),
        ],
    );
    w.composite(4, "sk_buff", 8, &[("cb", u32_t, 0)]);
    w.composite(4, "tcp_skb_cb", 8, &[("tcp_gso_segs", u16_t, 0)]);
    w.build()
}

fn a_failed_kernel_read_is_counted_and_logged_rarely_through_aya_log() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let btf = std::env::temp_dir().join(format!("nettune-bad-btf-{}", std::process::id()));
    std::fs::write(&btf, btf_with_offsets_that_point_nowhere())?;
    let started = Instant::now();
    let btf_arg = btf.to_str().context("path")?;
    let result = (|| -> anyhow::Result<(f64, usize, u64)> {
        let agent =
            AgentProcess::start_logged(&nettune_bin()?, &["--interval", "0.2", "--btf", btf_arg])?;
        let pair = bpf_tests::scenarios::Pair::new(41, None)?;
        // 10 % loss: enough retransmits (each one error) to outnumber the CPUs'
        // log lines even under emulation, where 5 % can leave a single event.
        pair.lossy_transfer(2 << 20, 1000)?;
        // The transfer is over: wait until the agent's figure has caught up with
        // it (two equal, non-zero readings a tick apart), not just its first tick.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = 0.0;
        loop {
            let metrics = agent.metrics()?;
            let errors = metric(
                &metrics,
                "nettune_probe_errors_total",
                &[("error", "kernel_read")],
            )
            .unwrap_or(0.0);
            let settled = errors > 0.0 && errors == last;
            last = errors;
            if settled {
                // It runs with what it has, and says what is missing.
                ensure!(
                    metric(
                        &metrics,
                        "nettune_probe_attached",
                        &[("signal", "tcp_retransmit"), ("variant", "tp_btf")]
                    ) == Some(0.0),
                    "the skipped tp_btf variant is not exported"
                );
                // Let the agent forward the kernel's log (it flushes every tick).
                std::thread::sleep(Duration::from_millis(600));
                let forwarded = agent.snapshot()?["kernel_log_records"]
                    .as_u64()
                    .context("no kernel_log_records in the snapshot")?;
                return Ok((
                    errors,
                    pair.sender.mib("snmp", "Tcp", "RetransSegs")? as usize,
                    forwarded,
                ));
            }
            ensure!(
                Instant::now() < deadline,
                "kernel_read errors did not settle within 10 s (last {errors})"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    })();
    let _ = std::fs::remove_file(&btf);
    let (errors, retransmits, logged) = result?;
    let logged = usize::try_from(logged)?;
    let cpus = std::thread::available_parallelism()?.get();
    println!(
        "    {errors} kernel_read errors counted over {retransmits} retransmits; {logged} log records forwarded ({cpus} CPUs)"
    );
    ensure!(logged >= 1, "the program's warning never reached the log");
    // At most one line per CPU per 10 s (LOG_EVERY_NS in nettune-ebpf/src/errors.rs).
    let windows = 1 + usize::try_from(started.elapsed().as_secs() / 10)?;
    ensure!(
        logged <= cpus * windows,
        "{logged} log records for {errors} errors in {windows} 10 s window(s): the \
         kernel-side rate limit did not hold"
    );
    ensure!(
        errors > logged as f64,
        "too few errors to show the rate limit"
    );
    Ok(Outcome::Passed)
}

/// Hostile input: a FIFO in `/run/netns` (anyone who can write there can plant
/// one). Opening it to enter "the namespace" would block forever; the agent must
/// keep collecting and answering.
fn a_fifo_planted_in_run_netns_stalls_neither_collection_nor_the_endpoints() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    std::fs::create_dir_all("/run/netns")?;
    let fifo = PathBuf::from(format!("/run/netns/nettune-fifo-{}", std::process::id()));
    let c_path = std::ffi::CString::new(fifo.to_str().context("path")?)?;
    // SAFETY: mkfifo reads a NUL-terminated path we own.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    ensure!(made == 0, "mkfifo: {}", std::io::Error::last_os_error());
    let result = (|| -> anyhow::Result<(f64, f64)> {
        let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.2"])?;
        let uptime = || -> anyhow::Result<f64> {
            let (status, body) = http_get(agent.addr, "/api/v1/snapshot")?;
            ensure!(status == 200, "/api/v1/snapshot answered {status}");
            let json: serde_json::Value = serde_json::from_str(&body)?;
            json["uptime_seconds"].as_f64().context("no uptime")
        };
        let first = uptime()?;
        std::thread::sleep(Duration::from_millis(800));
        Ok((first, uptime()?))
    })();
    let _ = std::fs::remove_file(&fifo);
    let (first, second) = result?;
    println!(
        "    with a FIFO in /run/netns: snapshots at {first:.1} s and {second:.1} s of uptime"
    );
    ensure!(second > first, "collections stopped: {first} then {second}");
    Ok(Outcome::Passed)
}

/// Issue 19, defect 9: one client holding 1,000 connections to the agent's
/// port (half idle, half sending headers slowly) must not starve `/healthz`
/// (the kubelet restarts an agent whose liveness goes unanswered) nor a scrape.
fn health_answers_while_one_client_holds_a_thousand_connections() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.5"])?;
    let hog = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let held = (0..1000)
        .map(|i| -> anyhow::Result<std::net::TcpStream> {
            let stream = bpf_tests::sockets::connect_from(hog, agent.addr)?;
            if i % 2 == 1 {
                // Slow: a request line, then nothing.
                use std::io::Write as _;
                let _ = (&stream).write_all(b"GET /metrics HTTP/1.1\r\n");
            }
            Ok(stream)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::sleep(Duration::from_millis(500));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let started = Instant::now();
        let answer = http_get(agent.addr, path);
        ensure!(
            matches!(answer, Ok((200, _))),
            "{path} with 1,000 connections held by {hog}: {answer:?}"
        );
        println!(
            "    {path}: 200 in {:.0} ms beside 1,000 connections from {hog}",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    drop(held);
    Ok(Outcome::Passed)
}

/// Our filters on `dev`'s clsact `direction` (`ingress`/`egress`), from `tc`.
fn our_filters(dev: &str, direction: &str) -> anyhow::Result<usize> {
    let out = Command::new("tc")
        .args(["filter", "show", "dev", dev, direction])
        .output()
        .context("running tc")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.contains("pod_ingress") || l.contains("pod_egress"))
        .count())
}

/// clsact filters outlive a process killed with SIGKILL (TCX links do not): a
/// restarted agent must replace its stale filters, not add a second copy.
fn after_sigkill_a_restart_leaves_one_clsact_filter_per_direction() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pod = bpf_tests::netns::Netns::new("kill")?;
    let veth = bpf_tests::netns::Veth::to_host(&pod, 35)?;
    let dev = veth.veth.a_name.clone();
    let start = || {
        AgentProcess::start(
            &nettune_bin()?,
            &["--interval", "0.2", "--disable-variant", "tcx"],
        )
    };
    let wait_attached = |agent: &AgentProcess| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.metrics()?.contains(&format!("interface=\"{dev}\"")) {
            ensure!(Instant::now() < deadline, "{dev} was never watched");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    let agent = start()?;
    wait_attached(&agent)?;
    agent.kill_hard()?;
    let stale = (our_filters(&dev, "ingress")?, our_filters(&dev, "egress")?);
    let agent = start()?;
    wait_attached(&agent)?;
    let after = (our_filters(&dev, "ingress")?, our_filters(&dev, "egress")?);
    println!(
        "    clsact filters of ours on {dev}: after SIGKILL {stale:?}, after the restart {after:?}"
    );
    ensure!(
        stale == (1, 1),
        "SIGKILL left {stale:?} filters (expected one each)"
    );
    ensure!(
        after == (1, 1),
        "the restart left {after:?} filters: stale ones piled up"
    );
    drop(agent);
    Ok(Outcome::Passed)
}

/// A container without the privileged `/proc` overlay sees `/proc/sys` read-only:
/// the agent in enforce mode must advise instead, say why in its JSON API
/// (`mode_demoted`), and keep observing.
fn with_proc_sys_read_only_enforce_becomes_advise_and_the_api_says_why() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let base = std::env::temp_dir().join(format!("nettune-ro-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let config = base.join("nettune.toml");
    std::fs::write(
        &config,
        format!(
            "[tuning]\nmode = \"enforce\"\nstate_dir = \"{}\"\n",
            base.join("state").display()
        ),
    )?;
    let port = bpf_tests::agent_process::free_port()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let script = format!(
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && \
         exec {} --config {} run --interval 0.2 --listen {addr} --api-listen {addr}",
        nettune_bin()?.display(),
        config.display()
    );
    let mut agent = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .context("running unshare")?;
    let stderr = agent.stderr.take().context("no stderr")?;
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let result = (|| -> anyhow::Result<(String, serde_json::Value)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(addr, "/readyz") {
                // A few more collections: the demotion stays.
                std::thread::sleep(Duration::from_millis(600));
                let (_, metrics) = http_get(addr, "/metrics")?;
                let (_, snapshot) = http_get(addr, "/api/v1/snapshot")?;
                return Ok((metrics, serde_json::from_str(&snapshot)?));
            }
            ensure!(Instant::now() < deadline, "the agent was not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    // SAFETY: signals our own child (the agent, exec'd by sh), reaped right after.
    unsafe { libc::kill(i32::try_from(agent.id())?, libc::SIGTERM) };
    agent.wait()?;
    let _ = std::fs::remove_dir_all(&base);
    let log = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let (metrics, snapshot) = result?;
    println!(
        "    mode {}, demoted because {}; observing: {:?} workloads",
        snapshot["mode"],
        snapshot["mode_demoted"],
        metric(&metrics, "nettune_workloads", &[])
    );
    ensure!(
        snapshot["mode"] == "advise" && snapshot["mode_demoted"] == "proc_sys_read_only",
        "the API does not say enforce became advise because /proc/sys is read-only: mode \
         {}, mode_demoted {}; log:\n{}",
        snapshot["mode"],
        snapshot["mode_demoted"],
        log.join("\n")
    );
    ensure!(
        metric(&metrics, "nettune_tuning_mode", &[("mode", "advise")]) == Some(1.0),
        "the tuner is not advising"
    );
    ensure!(
        metric(&metrics, "nettune_workloads", &[]).is_some(),
        "observing stopped"
    );
    Ok(Outcome::Passed)
}
