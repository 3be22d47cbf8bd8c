//! The sysctl-writers signal (`nettune-ebpf/src/sysctl_writes.rs`): a
//! `cgroup/sysctl` program on the cgroup v2 root names who wrote which `net.*`
//! sysctl. Compared with the writes the test makes itself, by two real writers
//! (procps' `sysctl` and a shell's redirect), in a namespace it created.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    harness::{Outcome, Test, TestResult, require_root},
    netns::Netns,
    probes::{load, read},
};

use crate::agent::nettune_bin;
use nettune::{
    model::{probes::Variant, sysctl_writers::SysctlWriterFigures},
    probes::{ProbeSource as _, sysctl_writes::SIGNAL},
};

pub const TESTS: &[Test] = &[
    Test {
        name: "sysctl_writers::each_writer_of_a_sysctl_is_named_with_its_writes_and_value",
        run: each_writer_of_a_sysctl_is_named_with_its_writes_and_value,
    },
    Test {
        name: "sysctl_writers::a_writer_in_a_pods_cgroup_is_named_with_its_pod",
        run: a_writer_in_a_pods_cgroup_is_named_with_its_pod,
    },
];

fn each_writer_of_a_sysctl_is_named_with_its_writes_and_value() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = load(&[])?;
    let status = probes.report().signal(SIGNAL).cloned();
    if status.as_ref().and_then(|s| s.attached) != Some(Variant::CgroupSysctl) {
        return Ok(Outcome::Skipped(format!(
            "needs cgroup_sysctl: {:?}",
            status.map(|s| s.skipped)
        )));
    }
    let writer = |all: &[SysctlWriterFigures], command: &str| {
        all.iter()
            .find(|w| w.sysctl == "net.core.somaxconn" && w.command == command)
            .cloned()
    };
    let before = read(&probes)?.sysctl_writers;
    let writes_before = |command: &str| writer(&before, command).map_or(0, |w| w.writes);
    let ns = Netns::new("sw")?;
    for value in ["1234", "1235"] {
        ns.exec("sysctl", &["-w", &format!("net.core.somaxconn={value}")])?;
    }
    ns.exec("sh", &["-c", "echo 2345 > /proc/sys/net/core/somaxconn"])?;
    let after = read(&probes)?.sysctl_writers;
    let procps = writer(&after, "sysctl").context("procps' sysctl not seen")?;
    let shell = writer(&after, "sh").context("the shell's write not seen")?;
    println!("    {procps:?}\n    {shell:?}");
    ensure!(
        procps.writes - writes_before("sysctl") == 2 && procps.value == "1235",
        "sysctl -w: 2 writes, the last 1235; nettune saw {procps:?}"
    );
    ensure!(
        shell.writes - writes_before("sh") == 1 && shell.value == "2345",
        "the shell: 1 write of 2345; nettune saw {shell:?}"
    );
    ensure!(
        !procps.own && procps.pid != std::process::id(),
        "a write of another process counted as nettune's own"
    );
    // The namespace's value is what the last writer wrote.
    let now = ns.exec("cat", &["/proc/sys/net/core/somaxconn"])?;
    ensure!(now.trim() == "2345", "somaxconn in the namespace is {now}");
    Ok(Outcome::Passed)
}

/// A pod's UID as the kubelet writes it into the pod's cgroup path.
const POD_UID: &str = "0e5b2f0c-3d43-4a6f-9a53-2d1f6f2a1b7c";

/// A short-lived `sysctl -w` (gone before anyone could look at its process)
/// run in a cgroup laid out as the kubelet's cgroupfs driver lays out a pod's
/// container (`…/kubepods/burstable/pod<uid>/<container>`), writing in a test
/// namespace: the agent names its pod from its cgroup id alone — here `pod
/// <uid>`, no runtime knowing it.
fn a_writer_in_a_pods_cgroup_is_named_with_its_pod() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = load(&[])?;
    let attached = probes.report().signal(SIGNAL).and_then(|s| s.attached);
    drop(probes);
    if attached != Some(Variant::CgroupSysctl) {
        return Ok(Outcome::Skipped(
            "needs cgroup_sysctl: the writer's cgroup is what it gives".into(),
        ));
    }
    let root = nettune::sys::cgroups::root().context("no cgroup v2 hierarchy")?;
    let base = root.join(format!("nettune-test-{}", std::process::id()));
    let container = base.join(format!("kubepods/burstable/pod{POD_UID}/0123abcd"));
    std::fs::create_dir_all(&container)?;
    let ns = Netns::new("swpod")?;
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.3"])?;
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {} sysctl -q -w net.core.somaxconn=1236",
        container.display(),
        ns.name()
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()?;
    let named = agent.wait_for("the writer's pod", Duration::from_secs(10), |s| {
        s["sysctl_writers"].as_array()?.iter().find_map(|w| {
            (w["command"] == "sysctl"
                && w["sysctl"] == "net.core.somaxconn"
                && w["value"] == "1236")
                .then(|| w["pod"].as_str().map(str::to_owned))
                .flatten()
        })
    });
    drop(agent);
    // Empty once the writer exited: removable, deepest first.
    for dir in container.ancestors().take_while(|d| d.starts_with(&base)) {
        let _ = std::fs::remove_dir(dir);
    }
    ensure!(status.success(), "the write failed: {status}");
    let pod = named?;
    println!("    sysctl -w from {}: pod {pod}", container.display());
    ensure!(pod == format!("pod {POD_UID}"), "named {pod}");
    Ok(Outcome::Passed)
}
