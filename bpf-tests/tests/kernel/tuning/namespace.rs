//! A write goes to the namespace that was found, or nowhere: a `/run/netns`
//! name replaced (or a pid reused) between finding a namespace and writing into
//! it must not redirect the write.

use anyhow::ensure;
use bpf_tests::{
    harness::{Outcome, TestResult, require_root},
    netns::{Netns, ip},
};
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
