//! The sysctl-writers signal: who writes the node's `net.*` sysctls
//! (`nettune-ebpf/src/sysctl_writes.rs`), from a `cgroup/sysctl` program on the
//! root of the cgroup v2 hierarchy, which sees every write through `/proc/sys`.
//!
//! Chain: `cgroup_sysctl`, then `procfs`: without the hook, a change is still
//! seen when the tuner reads the value again, but not who made it.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSysctl, ProgramError},
};
use nettune_common::{
    SysctlWrite, SysctlWriter,
    sysctl_writes::{SYSCTL_GUARDS_MAP, SYSCTL_NAME_LEN, SYSCTL_WRITES_MAP},
};

use crate::model::{
    probes::{SignalStatus, Variant},
    sysctl_writers::SysctlWriterFigures,
    text::{printable, printable_c},
};

use super::{
    MapReadError, Probes,
    chain::{AttachContext, AttachError, Attempt, attach_chain, attach_error, load_error, program},
    maps,
};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "sysctl_writers";

const PROGRAM: &str = "sysctl_writes";

/// Where the root of the cgroup v2 hierarchy is mounted: on its own (unified
/// layout), or beside the v1 controllers (systemd's hybrid layout).
const CGROUP_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::CgroupSysctl, attach_on_root),
    (Variant::Procfs, |_, _| Ok(())),
];

pub(super) fn attach(ebpf: &mut Ebpf, context: &AttachContext) -> SignalStatus {
    attach_chain(ebpf, context, SIGNAL, &CHAIN)
}

fn attach_on_root(ebpf: &mut Ebpf, _: &AttachContext) -> Result<(), AttachError> {
    // cgroup v1 alone has no v2 root to attach to: say so rather than EBADF.
    let root = CGROUP_ROOTS
        .iter()
        .find(|r| std::path::Path::new(r).join("cgroup.controllers").exists())
        .ok_or_else(|| {
            attach_error(CGROUP_ROOTS[0])(ProgramError::IOError(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no cgroup v2 hierarchy at {}", CGROUP_ROOTS.join(" or ")),
            )))
        })?;
    let cgroup =
        std::fs::File::open(root).map_err(|e| attach_error(root)(ProgramError::IOError(e)))?;
    let p: &mut CgroupSysctl = program(ebpf, PROGRAM)?;
    p.load().map_err(load_error(PROGRAM))?;
    // Through a BPF link where the kernel has them (5.7+), which sits beside
    // any other program there (systemd's, a CNI's) and takes no flags; ours
    // only observes.
    p.attach(&cgroup, CgroupAttachMode::Single)
        .map_err(attach_error(root))?;
    Ok(())
}

/// A map entry as the model has it.
fn record(key: &SysctlWriter, write: &SysctlWrite) -> SysctlWriterFigures {
    let len = usize::try_from(write.value_len)
        .unwrap_or(0)
        .min(write.value.len());
    SysctlWriterFigures {
        sysctl: printable_c(&key.name).replace('/', "."),
        command: printable_c(&key.comm),
        pid: write.tgid,
        cgroup_id: write.cgroup_id,
        value: printable(
            String::from_utf8_lossy(&write.value[..len])
                .trim_matches(|c: char| c == '\0' || c.is_whitespace()),
        ),
        writes: write.count,
        own: write.tgid == std::process::id(),
        refused: write.refused,
        pod: None,
        netns: None,
    }
}

/// A dotted sysctl name as the program sees it: `net/core/somaxconn`, NUL-padded.
fn kernel_name(sysctl: &str) -> [u8; SYSCTL_NAME_LEN] {
    let mut name = [0; SYSCTL_NAME_LEN];
    for (slot, byte) in name.iter_mut().zip(sysctl.replace('.', "/").bytes()) {
        *slot = byte;
    }
    name
}

impl Probes {
    /// Writes `floors` to the guards map where they differ from what it holds.
    /// Without the hook nothing can be refused: said once.
    pub(super) fn write_guards(
        &mut self,
        floors: &BTreeMap<String, u64>,
    ) -> Result<(), MapReadError> {
        if &self.guards == floors {
            return Ok(());
        }
        if self.report.signal(SIGNAL).and_then(|s| s.attached) != Some(Variant::CgroupSysctl) {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                log::warn!(
                    "tuning.guard: the cgroup/sysctl program did not attach ({}), so no write \
                     can be refused: the guarded sysctls are only watched",
                    self.report.signal(SIGNAL).map_or_else(String::new, |s| s
                        .skipped
                        .iter()
                        .map(|k| k.reason.clone())
                        .collect::<Vec<_>>()
                        .join("; "))
                );
            });
            self.guards = floors.clone();
            return Ok(());
        }
        let map = self
            .ebpf
            .map_mut(SYSCTL_GUARDS_MAP)
            .ok_or_else(|| maps::missing(SYSCTL_GUARDS_MAP))?;
        let mut guards: HashMap<&mut MapData, [u8; SYSCTL_NAME_LEN], u64> =
            HashMap::try_from(map).map_err(maps::map_error(SYSCTL_GUARDS_MAP))?;
        for gone in self.guards.keys().filter(|s| !floors.contains_key(*s)) {
            let _ = guards.remove(&kernel_name(gone));
        }
        for (sysctl, floor) in floors {
            guards
                .insert(&kernel_name(sysctl), floor, 0)
                .map_err(maps::map_error(SYSCTL_GUARDS_MAP))?;
        }
        self.guards = floors.clone();
        Ok(())
    }

    /// Every writer of a `net.*` sysctl seen so far (none without the hook).
    pub(super) fn sysctl_writes(&self) -> Result<Vec<SysctlWriterFigures>, MapReadError> {
        if self.report.signal(SIGNAL).and_then(|s| s.attached) != Some(Variant::CgroupSysctl) {
            return Ok(Vec::new());
        }
        let entries: BTreeMap<SysctlWriter, SysctlWrite> =
            maps::hash_entries(&self.ebpf, SYSCTL_WRITES_MAP)?;
        Ok(entries.iter().map(|(k, v)| record(k, v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_entry_reads_as_the_sysctl_dotted_with_the_value_written() {
        let mut key = SysctlWriter {
            name: [0; 64],
            comm: [0; 16],
        };
        key.name[..18].copy_from_slice(b"net/core/somaxconn");
        key.comm[..10].copy_from_slice(b"kube-proxy");
        let mut write = SysctlWrite {
            count: 3,
            cgroup_id: 77,
            tgid: 812,
            value_len: 6,
            ..SysctlWrite::default()
        };
        write.value[..6].copy_from_slice(b"65535\n");
        assert_eq!(
            record(&key, &write),
            SysctlWriterFigures {
                sysctl: "net.core.somaxconn".into(),
                command: "kube-proxy".into(),
                pid: 812,
                cgroup_id: 77,
                value: "65535".into(),
                writes: 3,
                own: false,
                refused: 0,
                pod: None,
                netns: None,
            }
        );
    }
}
