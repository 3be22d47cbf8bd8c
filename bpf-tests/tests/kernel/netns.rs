//! Reading many namespaces' `/proc/net` files in one pass: namespaces known only
//! by a `/run/netns` path are joined in turn by one thread, so each read must
//! land in its own namespace — checked against `nstat` in each, with a path that
//! no longer names the namespace expected among them (refused, and the next one
//! still read in its own namespace).

use std::{net::UdpSocket, os::unix::fs::MetadataExt as _};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    harness::{Outcome, Test, TestResult, require_root},
    netns::Netns,
};
use nettune::sys::{
    netns::{Namespace, NamespaceAccess, read_net_files_of},
    procfs::Mib,
};

pub const TESTS: &[Test] = &[Test {
    name: "netns::files_of_many_namespaces_read_in_one_pass_equal_each_ones_nstat",
    run: files_of_many_namespaces_read_in_one_pass_equal_each_ones_nstat,
}];

/// `Udp NoPorts` as `nstat` in `ns` (the host's when `None`) reads it
/// (absolute, its history untouched).
fn nstat_udp_no_ports(ns: Option<&Netns>) -> anyhow::Result<u64> {
    let args = ["-asz", "UdpNoPorts"];
    let out = match ns {
        Some(ns) => ns.exec("nstat", &args)?,
        None => {
            let out = std::process::Command::new("nstat").args(args).output()?;
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    out.lines()
        .find_map(|l| l.strip_prefix("UdpNoPorts"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no UdpNoPorts in nstat's output")?
        .parse()
        .context("nstat's UdpNoPorts")
}

fn by_path(ns: &Netns, inode: u32) -> Namespace {
    Namespace {
        inode,
        access: NamespaceAccess::Path(ns.path()),
        name: Some(ns.name().to_owned()),
        process: None,
        is_host: false,
    }
}

fn files_of_many_namespaces_read_in_one_pass_equal_each_ones_nstat() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pods: Vec<Netns> = (0..3)
        .map(|i| Netns::new(&format!("rf{i}")))
        .collect::<anyhow::Result<_>>()?;
    // A different number of datagrams to a closed loopback port in each.
    for (i, ns) in pods.iter().enumerate() {
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        ns.run(|| -> anyhow::Result<()> {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            for _ in 0..(i + 1) * 4 {
                socket.send_to(&[1], "127.0.0.1:9")?;
            }
            Ok(())
        })??;
    }
    let inodes: Vec<u32> = pods
        .iter()
        .map(Netns::inode)
        .collect::<anyhow::Result<_>>()?;
    let host_inode = u32::try_from(std::fs::metadata("/proc/self/ns/net")?.ino())?;
    // The second entry names pod 0's path with pod 1's inode: a path that no
    // longer names the namespace found.
    let namespaces = [
        by_path(&pods[0], inodes[0]),
        by_path(&pods[0], inodes[1]),
        by_path(&pods[1], inodes[1]),
        Namespace {
            inode: host_inode,
            access: NamespaceAccess::Pid(std::process::id()),
            ..by_path(&pods[2], host_inode)
        },
        by_path(&pods[2], inodes[2]),
    ];
    let refs: Vec<&Namespace> = namespaces.iter().collect();
    let read = read_net_files_of(&refs, &["snmp"]);
    let no_ports = |i: usize| -> anyhow::Result<u64> {
        let text = read[i][0]
            .as_ref()
            .map_err(|e| anyhow::anyhow!("entry {i}: {e}"))?;
        Mib::parse("snmp", text)
            .count("Udp", "NoPorts")
            .context("no Udp NoPorts")
    };
    ensure!(
        read[1][0].is_err(),
        "a path naming another namespace was read: {:?}",
        read[1][0]
    );
    for (entry, pod) in [(0, 0), (2, 1), (4, 2)] {
        let (ours, theirs) = (no_ports(entry)?, nstat_udp_no_ports(Some(&pods[pod]))?);
        println!("    pod {pod}: NoPorts read {ours}, nstat {theirs}");
        ensure!(
            ours == theirs,
            "pod {pod}: read {ours}, nstat says {theirs}"
        );
        ensure!(ours == (pod as u64 + 1) * 4, "pod {pod}: {ours} NoPorts");
    }
    // Entry 3 is this process's namespace (the host's), read through its pid.
    let host = no_ports(3)?;
    let host_nstat = nstat_udp_no_ports(None)?;
    println!("    host: NoPorts read {host}, nstat {host_nstat}");
    ensure!(
        host <= host_nstat && host_nstat - host < 1000,
        "the host read through its pid ({host}) is not the host's ({host_nstat})"
    );
    Ok(Outcome::Passed)
}
