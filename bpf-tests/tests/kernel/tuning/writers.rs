//! Another writer of a value nettune manages: a process named `kube-proxy`
//! (procps' `sysctl` run through a link of that name, as the real one's
//! command shows) lowers `nf_conntrack_max` after nettune raised it. nettune
//! stands down naming it with its pid and value, says what to change in
//! kube-proxy's configuration, and counts the write.

use std::{
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::metric,
    harness::{Outcome, TestResult, require_root},
    scenarios::Pair,
    sockets::{connect_nonblocking, listener_with_backlog},
    sysctl_guard::Restore,
};

use super::config::TestConfig;

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const PORT: u16 = 5814;
/// `nf_conntrack_max` while the test namespace fills it.
const SMALL: u64 = 40;

fn conntrack_max() -> anyhow::Result<u64> {
    Ok(std::fs::read_to_string(CONNTRACK_MAX)?.trim().parse()?)
}

/// A test namespace filling a conntrack table of [`SMALL`] under an enforcing
/// agent (with `tuning`, more `[tuning]` keys) until it raises
/// `nf_conntrack_max`; the original table size comes back when the returned
/// guard drops.
struct Raised {
    pair: Pair,
    config: TestConfig,
    agent: bpf_tests::agent_process::AgentProcess,
    held: Vec<std::os::fd::OwnedFd>,
    addr: SocketAddrV4,
    raised: u64,
    _listener: std::os::fd::OwnedFd,
    restore: Restore,
}

fn raise_conntrack_max(subnet: u8, tag: &str, tuning: &str) -> anyhow::Result<Raised> {
    let pair = Pair::new(subnet, None)?;
    pair.receiver.exec(
        "nft",
        &["add table inet nettune_test; add chain inet nettune_test input { type filter hook input priority 0; }; add rule inet nettune_test input ct state new,established accept"],
    )?;
    // The only namespace using conntrack here; the original comes back on drop.
    let restore = Restore::set(CONNTRACK_MAX, &SMALL.to_string())?;
    let config = TestConfig::with(
        tag,
        &[],
        &format!(
            "cooldown_seconds = 1\nexclude = [\"net.netfilter.nf_conntrack_buckets\"]\n{tuning}"
        ),
    )?;
    let agent = config.start_agent()?;
    let addr = SocketAddrV4::new(pair.veth.b_addr, PORT);
    let listener = pair.receiver.run(|| listener_with_backlog(addr, 4096))??;
    // 36 connections held: 90 % of the table, and nettune raises it.
    let held = pair.sender.run(|| {
        (0..36)
            .map(|_| connect_nonblocking(addr))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let deadline = Instant::now() + Duration::from_secs(15);
    while conntrack_max()? == SMALL {
        ensure!(
            Instant::now() < deadline,
            "nf_conntrack_max was not raised within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Raised {
        raised: conntrack_max()?,
        pair,
        config,
        agent,
        held,
        addr,
        _listener: listener,
        restore,
    })
}

/// Runs procps' `sysctl -w net.netfilter.nf_conntrack_max=<value>` as a process
/// named `kube-proxy` (through a link of that name), in a cgroup of its own
/// when `own_cgroup` (as a kube-proxy pod is: not the agent's). Returns whether
/// the write succeeded.
fn kube_proxy_writes(config: &TestConfig, value: u64, own_cgroup: bool) -> anyhow::Result<bool> {
    let bin = config.state.parent().context("base")?.join("bin");
    std::fs::create_dir_all(&bin)?;
    let kube_proxy = bin.join("kube-proxy");
    if !kube_proxy.exists() {
        std::os::unix::fs::symlink("/usr/sbin/sysctl", &kube_proxy)?;
    }
    let write = format!(
        "{} -q -w net.netfilter.nf_conntrack_max={value}",
        kube_proxy.display()
    );
    // The cgroup v2 root: unified, or systemd's hybrid layout's.
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|r| std::path::Path::new(r).join("cgroup.controllers").exists())
        .context("no cgroup v2 hierarchy")?;
    let cgroup =
        std::path::Path::new(root).join(format!("nettune-test-kube-proxy-{}", std::process::id()));
    let script = if own_cgroup {
        std::fs::create_dir_all(&cgroup)?;
        format!(
            "echo $$ > {}/cgroup.procs && exec {write}",
            cgroup.display()
        )
    } else {
        format!("exec {write}")
    };
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::null())
        .status()?;
    if own_cgroup {
        let _ = std::fs::remove_dir(&cgroup);
    }
    Ok(status.success())
}

/// Skips unless the `cgroup/sysctl` program loads here (its helpers came to
/// cgroup programs after 5.10 and 6.1), saying `why` the test needs it.
fn require_cgroup_sysctl(why: &str) -> Option<TestResult> {
    use nettune::probes::ProbeSource as _;
    let probes = match nettune::probes::Probes::load(&nettune::probes::LoadOptions::default()) {
        Ok(p) => p,
        Err(e) => return Some(Err(e.into())),
    };
    let status = probes
        .report()
        .signal(nettune::probes::sysctl_writes::SIGNAL)
        .cloned();
    (status.as_ref().and_then(|s| s.attached)
        != Some(nettune::model::probes::Variant::CgroupSysctl))
    .then(|| {
        Ok(Outcome::Skipped(format!(
            "needs cgroup_sysctl ({why}): {:?}",
            status.map(|s| s.skipped)
        )))
    })
}

pub fn kube_proxy_lowering_nf_conntrack_max_is_named_counted_and_advised() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    if let Some(skip) = require_cgroup_sysctl("it names the writer") {
        return skip;
    }
    let Raised {
        pair,
        config,
        agent,
        mut held,
        addr,
        raised,
        restore,
        ..
    } = raise_conntrack_max(27, "writer", "")?;
    // kube-proxy starts and sets its own value.
    ensure!(
        kube_proxy_writes(&config, SMALL, false)?,
        "kube-proxy's write failed"
    );
    // Still 90 % full of the value kube-proxy set: the next decision stands down.
    let deadline = Instant::now() + Duration::from_secs(15);
    let stood_down = loop {
        held.push(pair.sender.run(|| connect_nonblocking(addr))??);
        let s = agent.snapshot()?;
        let found = s["tuning"]["recent"].as_array().and_then(|d| {
            d.iter()
                .find(|d| {
                    d["sysctl"] == "net.netfilter.nf_conntrack_max" && d["result"] == "stood_down"
                })
                .cloned()
        });
        if let Some(d) = found {
            break d;
        }
        ensure!(Instant::now() < deadline, "no stand-down within 15 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let metrics = agent.metrics()?;
    let counted = metric(
        &metrics,
        "nettune_sysctl_foreign_writes_total",
        &[
            ("sysctl", "net.netfilter.nf_conntrack_max"),
            ("writer", "kube-proxy"),
        ],
    );
    drop((held, agent));
    let after = conntrack_max()?;
    drop(restore);
    let reason = stood_down["reason"].as_str().unwrap_or_default().to_owned();
    println!(
        "    nf_conntrack_max {SMALL} → {raised}, kube-proxy → {after}: {reason}; counted {counted:?}"
    );
    ensure!(
        reason.contains("kube-proxy (pid") && reason.contains(&format!("wrote {SMALL}")),
        "the stand-down does not name kube-proxy and its value: {reason}"
    );
    ensure!(
        reason.contains("conntrack.maxPerCore: 0"),
        "the stand-down does not say what to change: {reason}"
    );
    ensure!(
        counted.is_some_and(|n| n >= 1.0),
        "the write is not counted in nettune_sysctl_foreign_writes_total: {counted:?}"
    );
    ensure!(
        after == SMALL,
        "nettune wrote over kube-proxy's value: {after}"
    );
    Ok(Outcome::Passed)
}

/// With `tuning.guard` on `nf_conntrack_max`, kube-proxy (in a cgroup of its
/// own) cannot lower what nettune raised: the kernel refuses its write
/// (`sysctl` fails), the value stays, the refusal is counted and logged with
/// the writer; a write that does not lower it goes through; `nettune rollback`, run beside the
/// running agent (in its cgroup), still restores the original.
pub fn with_the_guard_kube_proxy_cannot_lower_nf_conntrack_max_and_rollback_still_can() -> TestResult
{
    if let Some(skip) = require_root() {
        return skip;
    }
    if let Some(skip) = require_cgroup_sysctl("the guard is that program") {
        return skip;
    }
    let Raised {
        config,
        agent,
        held,
        raised,
        restore,
        ..
    } = raise_conntrack_max(
        28,
        "guard",
        "guard = [\"net.netfilter.nf_conntrack_max\"]\n",
    )?;
    // The guard takes the raised value at the end of the round that wrote it.
    std::thread::sleep(Duration::from_millis(700));
    let lowered = kube_proxy_writes(&config, SMALL, true)?;
    let after_lowering = conntrack_max()?;
    // Writing what nettune has (not lowering it) goes through.
    let same = kube_proxy_writes(&config, raised, true)?;
    std::thread::sleep(Duration::from_millis(700));
    let metrics = agent.metrics()?;
    let refusals = metric(
        &metrics,
        "nettune_sysctl_guard_refusals_total",
        &[
            ("sysctl", "net.netfilter.nf_conntrack_max"),
            ("writer", "kube-proxy"),
        ],
    );
    // Beside the running agent, whose guard still holds 80.
    let (code, out) = config.nettune(&["rollback"])?;
    let restored = conntrack_max()?;
    drop((held, agent));
    drop(restore);
    println!(
        "    raised to {raised}; kube-proxy lowering to {SMALL}: succeeded {lowered}, now \
         {after_lowering}; writing {raised}: succeeded {same}; refusals counted {refusals:?}; \
         rollback beside the agent: {}",
        out.trim()
    );
    ensure!(
        !lowered && after_lowering == raised,
        "kube-proxy lowered the guarded value: now {after_lowering}"
    );
    ensure!(same, "a write that does not lower the value was refused");
    ensure!(
        refusals == Some(1.0),
        "nettune_sysctl_guard_refusals_total: {refusals:?}"
    );
    ensure!(
        code == Some(0) && restored == SMALL,
        "rollback beside the agent: exit {code:?}, nf_conntrack_max {restored}: {out}"
    );
    Ok(Outcome::Passed)
}

/// With a process named `kube-proxy` on the node, `nettune audit` shows what
/// kube-proxy with the guide's settings will set at its start: `nf_conntrack_max`
/// = max(32768 × CPUs, 131072), CPUs as `nproc` counts them (Go's NumCPU: the
/// CPUs it may run on), next to the node's value, and whether that lowers it.
pub fn audit_shows_what_kube_proxy_will_set_at_its_start() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let config = TestConfig::with("audit", &[], "")?;
    let bin = config.state.parent().context("base")?.join("bin");
    std::fs::create_dir_all(&bin)?;
    let kube_proxy = bin.join("kube-proxy");
    std::os::unix::fs::symlink("/usr/bin/sleep", &kube_proxy)?;
    let mut running = std::process::Command::new(&kube_proxy).arg("60").spawn()?;
    let audit = config.nettune(&["audit", "--json"]);
    let _ = running.kill();
    let _ = running.wait();
    let (_, out) = audit?;
    let audit: serde_json::Value = serde_json::from_str(&out)?;
    let cpus: u64 = xtask::process::tool("nproc", &[], "coreutils")?
        .trim()
        .parse()?;
    let current = conntrack_max()?;
    let expected = (32768 * cpus).max(131_072);
    let row = audit["kube_proxy"]["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["sysctl"] == "net.netfilter.nf_conntrack_max")
        })
        .cloned()
        .context("no kube-proxy row for nf_conntrack_max")?;
    println!(
        "    proxy {}; {cpus} CPUs: kube-proxy sets nf_conntrack_max {}, now {current}: {row}",
        audit["proxy"], row["kube_proxy"]
    );
    ensure!(audit["proxy"] == "kube-proxy", "proxy {}", audit["proxy"]);
    ensure!(
        row["kube_proxy"] == expected
            && row["current"].as_str() == Some(current.to_string().as_str()),
        "expected kube-proxy {expected} over {current}: {row}"
    );
    ensure!(
        row["lowers"] == (current > expected) && row["nettune_ceiling"].as_u64().is_some(),
        "{row}"
    );
    Ok(Outcome::Passed)
}
