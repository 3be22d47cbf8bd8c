//! The fault-injection suite: one change (somaxconn 4096 → 8192 in an opted-in
//! pod's namespace) stopped at every step — before its intent is journaled,
//! between the intent and the write, between the write and its record, after
//! the record — by every fault the node can throw at it: the process killed,
//! the state directory full, `/proc/sys` read-only, the journal corrupted, the
//! namespace replaced by another with the same inode. After each, the agent
//! restarts over what is on disk and `nettune rollback` runs: the journal reads,
//! rollback restores the original exactly (read back), nothing is left in the
//! journal, and no value is ever written into a namespace nettune did not
//! journal. A corrupted journal is never replaced: the change is undone, and
//! rollback refuses with the file named.

use std::path::Path;

use super::*;

/// Where in the change the fault strikes.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The tuner has read the current value, nothing is journaled yet.
    BeforeIntent,
    /// The intent is journaled, the sysctl not written yet.
    BeforeWrite,
    /// The sysctl is written, its record not journaled yet.
    BeforeRecord,
    /// The change is complete.
    AfterRecord,
}

/// What strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL: nothing after it runs.
    Kill,
    /// ENOSPC on the state directory: no journal write succeeds.
    DiskFull,
    /// EROFS on `/proc/sys`: no sysctl write succeeds.
    ProcSysReadOnly,
    /// `journal.json` overwritten with garbage.
    CorruptJournal,
    /// The pod's namespace gone, and a new one with the same inode in its place.
    NamespaceReplaced,
}

const STEPS: [Step; 4] = [
    Step::BeforeIntent,
    Step::BeforeWrite,
    Step::BeforeRecord,
    Step::AfterRecord,
];
const FAULTS: [Fault; 5] = [
    Fault::Kill,
    Fault::DiskFull,
    Fault::ProcSysReadOnly,
    Fault::CorruptJournal,
    Fault::NamespaceReplaced,
];
const SOMAXCONN: &str = "net.core.somaxconn";
/// What the namespace that replaces the pod's has: a value nettune never wrote.
const SUCCESSOR_VALUE: &str = "1111";

/// Makes `fault` happen on `system`, with the journal in `state`.
fn strike(fault: Fault, system: &FakeSystem, state: &Path) {
    match fault {
        Fault::Kill => panic!("killed"),
        Fault::DiskFull => {
            fs::create_dir_all(state.join(format!("journal.json.tmp.{}", std::process::id())))
                .unwrap();
        }
        Fault::ProcSysReadOnly => system.set_sysctls_read_only(true),
        Fault::CorruptJournal => fs::write(state.join("journal.json"), "{").unwrap(),
        Fault::NamespaceReplaced => {
            system.remove_namespace(7);
            system.add_namespace(7, Some("pod-a"), false);
            system.set_sysctl(&pod_a(), SOMAXCONN, SUCCESSOR_VALUE);
        }
    }
}

/// The node after the fault, as an operator finds it: room on the disk again,
/// `/proc/sys` writable again (a corrupted journal stays as it is).
fn repair(system: &FakeSystem, state: &Path) {
    let _ = fs::remove_dir_all(state.join(format!("journal.json.tmp.{}", std::process::id())));
    system.set_sysctls_read_only(false);
}

/// Runs the change with `fault` at `step`; returns whether the process lived.
fn change_with(f: &Fixture, fault: Fault, step: Step) -> bool {
    let state = f.state.clone();
    let at = move |system: &FakeSystem| strike(fault, system, &state);
    match step {
        Step::BeforeIntent => f.system.after_next_read(SOMAXCONN, at),
        Step::BeforeWrite => f.system.before_next_write(SOMAXCONN, at),
        Step::BeforeRecord => f.system.after_next_write(SOMAXCONN, at),
        Step::AfterRecord => {}
    }
    let mut t = f.tuner_with(Mode::Enforce, |c| c.pod_netns = vec!["netns:pod-a".into()]);
    let lived = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.round(&pod_a_overflowing(), 0)
    }))
    .is_ok();
    drop(t);
    if let Step::AfterRecord = step {
        assert_eq!(
            f.system.sysctl(&pod_a(), SOMAXCONN).as_deref(),
            Some("8192")
        );
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            strike(fault, &f.system, &f.state);
        }))
        .is_ok();
    }
    lived
}

#[test]
fn every_step_stopped_by_every_fault_leaves_a_journal_rollback_restores_exactly() {
    let mut failures = Vec::new();
    for step in STEPS {
        for fault in FAULTS {
            let case = format!("{fault:?} {step:?}");
            let f = Fixture::new(&format!("fault-{fault:?}-{step:?}"));
            f.system.add_namespace(7, Some("pod-a"), false);
            f.system.set_sysctl(&pod_a(), SOMAXCONN, "4096");
            let lived = change_with(&f, fault, step);
            repair(&f.system, &f.state);
            if let Err(why) = check_after_restart(&f, fault, step) {
                failures.push(format!("{case} (process lived: {lived}): {why}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The restart and the rollback, and what they must leave.
fn check_after_restart(f: &Fixture, fault: Fault, step: Step) -> Result<(), String> {
    let value = || f.system.sysctl(&pod_a(), SOMAXCONN);
    if fault == Fault::CorruptJournal {
        // Never replaced, never guessed: the file stays for a human, rollback
        // names it, and a change it struck midway did not stay behind its
        // back (a change complete before it stays: only the file knows its
        // original).
        let left = if let Step::AfterRecord = step {
            "8192"
        } else {
            "4096"
        };
        let text = fs::read_to_string(f.state.join("journal.json")).map_err(|e| e.to_string())?;
        if text != "{" {
            return Err(format!("the corrupt journal was replaced: {text}"));
        }
        let mut journal = match Journal::open(&f.state) {
            Err(e) if e.to_string().contains("journal.json") => {
                return check_value(value(), left);
            }
            Err(e) => return Err(format!("an error that does not name the file: {e}")),
            Ok(j) => j,
        };
        return match rollback(&Actuator::new(&f.system), &mut journal, false, 10) {
            Err(e) if e.to_string().contains("journal.json") => check_value(value(), left),
            other => Err(format!("rollback over a corrupt journal: {other:?}")),
        };
    }
    // The restart: a tuner over what is on disk, a quiet round.
    let mut t = f.tuner_with(Mode::Enforce, |c| c.pod_netns = vec!["netns:pod-a".into()]);
    let quiet = crate::model::snapshot::for_tests(Vec::new());
    t.round(&quiet, 5);
    drop(t);
    let mut journal = Journal::open(&f.state).map_err(|e| format!("journal after restart: {e}"))?;
    let report = rollback(&Actuator::new(&f.system), &mut journal, false, 10)
        .map_err(|e| format!("rollback: {e}"))?;
    if !report.failed.is_empty() || !report.stood_down.is_empty() {
        return Err(format!("rollback left work: {report:?}"));
    }
    let left = Journal::open(&f.state).map_err(|e| e.to_string())?;
    if !left.entries().is_empty() {
        return Err(format!("entries left after rollback: {:?}", left.entries()));
    }
    let expected = if fault == Fault::NamespaceReplaced {
        SUCCESSOR_VALUE
    } else {
        "4096"
    };
    check_value(value(), expected)
}

fn check_value(found: Option<String>, expected: &str) -> Result<(), String> {
    if found.as_deref() == Some(expected) {
        Ok(())
    } else {
        Err(format!("somaxconn {found:?}, expected {expected}"))
    }
}
