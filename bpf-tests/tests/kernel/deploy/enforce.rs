//! The enforce overlay's container, run under podman + runc with exactly the
//! rendered manifest's settings: not privileged, the base's capabilities only,
//! no new privileges — and it still raises a test namespace's somaxconn through
//! the node's `/proc/sys` the overlay mounts, and `nettune rollback` inside it
//! restores the original.

use std::path::PathBuf;

use anyhow::ensure;
use bpf_tests::{
    containerd::require_containers,
    harness::{Outcome, TestResult},
    host::{SharedRunNetns, Tracefs},
    podman::Podman,
    scenarios::{Pair, somaxconn},
};

use super::{files::scratch, pod::DaemonSetPod};
use crate::tuning::config::{capped_at_8, storm_until_raised_in};

pub fn the_enforce_overlays_pod_tunes_and_rolls_back_without_privileges() -> TestResult {
    if let Some(skip) = require_containers(true) {
        return skip;
    }
    let _tracefs = Tracefs::ensure()?;
    let _shared = SharedRunNetns::ensure()?;
    let dir = scratch("enforce")?;
    let (state, runtime) = (dir.join("state"), dir.join("no-runtime"));
    std::fs::create_dir_all(&state)?;
    std::fs::create_dir_all(&runtime)?;
    let state_dir = state.clone();
    let host = move |path: &str| match path {
        "/var/lib/nettune" => state_dir.clone(),
        "/run/containerd" => runtime.clone(),
        other => PathBuf::from(other),
    };
    let host_before = somaxconn(None)?;
    let pair = Pair::new(18, None)?;
    let original = capped_at_8(&pair)?;
    let opt_in = format!("pod_netns = [\"netns:{}\"]\n", pair.receiver.name());
    let mut podman = Podman::new()?;
    let pod = DaemonSetPod::start_overlay(
        &mut podman,
        "nettune-enforce",
        "overlays/enforce",
        &opt_in,
        &dir.join("files"),
        &host,
    )?;
    let spec = pod.spec.clone();
    let (effective, expected, no_new_privs) = pod.permissions()?;
    ensure!(
        !spec.privileged && spec.drop == ["ALL"] && !spec.privilege_escalation,
        "the overlay must keep drop ALL, no privilege escalation, and not be privileged"
    );
    ensure!(
        effective == expected && no_new_privs,
        "CapEff {effective:#x} (expected {expected:#x}), NoNewPrivs set: {no_new_privs}"
    );
    ensure!(
        spec.mounts
            .iter()
            .any(|m| m.path == "/host/proc/sys" && !m.read_only),
        "the overlay does not mount the node's /proc/sys read-write"
    );

    let raised = storm_until_raised_in(&pair, 5804, original)
        .map_err(|e| e.context(format!("log:\n{}", pod.podman.logs(&pod.name))))?;
    println!(
        "    CapEff {effective:#x} ({:?}), not privileged, NoNewPrivs: somaxconn in the test \
         namespace {original} → {raised}; host {host_before}",
        spec.add
    );
    ensure!(raised > original, "somaxconn was not raised");
    ensure!(
        std::fs::read_to_string(state.join("journal.json"))?.contains("net.core.somaxconn"),
        "the journal on the node's state directory has no entry"
    );
    let out = pod
        .podman
        .run(&["exec", &pod.name, "/nettune", "rollback"])?;
    println!("    rollback inside the container: {}", out.stdout);
    ensure!(out.ok, "rollback failed: {} {}", out.stdout, out.stderr);
    ensure!(
        somaxconn(Some(&pair.receiver))? == original,
        "rollback did not restore {original}"
    );
    ensure!(
        somaxconn(None)? == host_before,
        "the host's somaxconn changed"
    );
    Ok(Outcome::Passed)
}
