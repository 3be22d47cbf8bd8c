//! A write goes to the namespace that was found, or nowhere: a `/run/netns`
//! name replaced (or a pid reused) between finding a namespace and writing into
//! it must not redirect the write; and a namespace that loses one mark
//! (its last process exits) is still known by another.

use anyhow::ensure;
use bpf_tests::{
    harness::{Outcome, TestResult, require_root},
    netns::{Netns, ip},
    scenarios::{Pair, somaxconn},
};

use super::config::{TestConfig, capped_at_8, storm_until_raised_in};
use nettune::sys::netns::inside_expected;

const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// The namespace bound at a `/run/netns` name is replaced by another under the
/// same name (as `ip netns del` and `add` do, or a CNI recreating a sandbox):
/// nettune's way into a namespace — the one every read, identity check, write
/// and read-back uses — refuses the new one for the inode it was told, and
/// nothing is written there; for the new inode it writes as before.
pub fn a_write_never_lands_in_a_namespace_that_replaced_the_one_found() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let ns = Netns::new("repl")?;
    let (path, found) = (ns.path(), ns.inode()?);
    // Held open, the old namespace keeps its inode, so the new one cannot get it
    // (5.10 hands a freed inode number to the next namespace at once).
    let _old = std::fs::File::open(&path)?;
    ip(&["netns", "del", ns.name()])?;
    ip(&["netns", "add", ns.name()])?;
    let now = ns.inode()?;
    ensure!(now != found, "the new namespace got the old inode {found}");
    let before = ns.run(|| std::fs::read_to_string(SOMAXCONN))??;
    let refused = inside_expected(&path, found, || std::fs::write(SOMAXCONN, "1234"));
    let after = ns.run(|| std::fs::read_to_string(SOMAXCONN))??;
    println!(
        "    {} was namespace {found}, is {now}: {refused:?}; somaxconn there {} → {}",
        path.display(),
        before.trim(),
        after.trim()
    );
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no longer network namespace")),
        "the replaced namespace was entered: {refused:?}"
    );
    ensure!(
        after == before,
        "somaxconn changed in the namespace that replaced it"
    );
    // The namespace it is now is entered as before.
    inside_expected(&path, now, || std::fs::write(SOMAXCONN, "1234"))??;
    let written = ns.run(|| std::fs::read_to_string(SOMAXCONN))??;
    ensure!(
        written.trim() == "1234",
        "a write to the right inode: {written}"
    );
    Ok(Outcome::Passed)
}

/// A process kept alive in a namespace until dropped (killed and reaped).
struct Resident(std::process::Child);

impl Resident {
    fn exit(mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `/run/netns` namespace with a process in it when nettune changes its
/// somaxconn; the process exits (the mount keeps the namespace): before 5.14
/// (no cookie) the namespace's lowest process was its mark, and without the
/// name recorded beside it rollback took it for gone and left the tuned value.
/// Its journaled identity holds every mark; rollback restores the original.
pub fn a_namespace_whose_last_process_exits_is_still_the_one_rollback_restores() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let pair = Pair::new(17, None)?;
    let original = capped_at_8(&pair)?;
    let resident = Resident(
        std::process::Command::new("ip")
            .args(["netns", "exec", pair.receiver.name(), "sleep", "600"])
            .spawn()?,
    );
    let config = TestConfig::new("last-process", &[&pair.receiver])?;
    let agent = config.start_agent()?;
    let raised = storm_until_raised_in(&pair, 5803, original)?;
    drop(agent);
    let journal = std::fs::read_to_string(config.state.join("journal.json"))?;
    let entry: serde_json::Value = serde_json::from_str(&journal)?;
    let identity = entry["entries"]
        .as_array()
        .and_then(|e| e.first())
        .map(|e| e["identity"].clone())
        .unwrap_or_default();
    println!("    somaxconn {original} → {raised}; journaled identity {identity}");
    ensure!(
        identity["process"].is_object() && identity["name"] == pair.receiver.name(),
        "the journal does not keep both marks: {identity}"
    );
    resident.exit()?;
    let left = xtask::process::tool("ip", &["netns", "pids", pair.receiver.name()], "iproute2")?;
    ensure!(left.trim().is_empty(), "processes left inside: {left}");
    let (code, out) = config.nettune(&["rollback"])?;
    println!("    after its last process exited: {}", out.trim());
    ensure!(code == Some(0), "rollback exit {code:?}: {out}");
    ensure!(
        somaxconn(Some(&pair.receiver))? == original,
        "rollback did not restore {original}: {out}"
    );
    Ok(Outcome::Passed)
}
