//! The sysctl-writers signal (`nettune-ebpf/src/sysctl_writes.rs`): a
//! `cgroup/sysctl` program on the cgroup v2 root names who wrote which `net.*`
//! sysctl. Compared with the writes the test makes itself, by two real writers
//! (procps' `sysctl` and a shell's redirect), in a namespace it created.

use anyhow::{Context as _, ensure};
use bpf_tests::{
    harness::{Outcome, Test, TestResult, require_root},
    netns::Netns,
    probes::{load, read},
};
use nettune::{
    model::{probes::Variant, sysctl_writers::SysctlWriterFigures},
    probes::{ProbeSource as _, sysctl_writes::SIGNAL},
};

pub const TESTS: &[Test] = &[Test {
    name: "sysctl_writers::each_writer_of_a_sysctl_is_named_with_its_writes_and_value",
    run: each_writer_of_a_sysctl_is_named_with_its_writes_and_value,
}];

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
