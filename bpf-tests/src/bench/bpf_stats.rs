//! What each BPF program costs the kernel: `run_time_ns / run_cnt`, counted while
//! `kernel.bpf_stats_enabled` is 1.
//!
//! The kernel keeps both counters per program and shows them in the fdinfo of
//! every file descriptor that holds the program (`/proc/<pid>/fdinfo/<fd>`:
//! `prog_id`, `run_time_ns`, `run_cnt`), so the programs of the agent, of a
//! bpftrace process and of this process are found by their owner's pid — no
//! bpftool needed. Statistics add a fixed cost to every run (about 62 ns on the
//! development machine), the same for every program compared.

use std::collections::BTreeMap;

use anyhow::Context as _;

use crate::sysctl_guard::Restore;

/// The switch for per-program statistics.
pub const BPF_STATS_ENABLED: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns per-program statistics on until the guard is dropped.
pub fn enable() -> anyhow::Result<Restore> {
    Restore::set(BPF_STATS_ENABLED, "1").context("enabling kernel.bpf_stats_enabled")
}

/// One program's counters at one moment.
#[derive(Clone, Debug)]
pub struct ProgRun {
    /// The kernel's program id.
    pub id: u32,
    /// The program's name as the kernel keeps it (at most 15 bytes).
    pub name: String,
    /// The process holding it.
    pub pid: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgRun {
    /// Nanoseconds per run; NaN when it did not run.
    pub fn ns_per_run(&self) -> f64 {
        if self.run_cnt == 0 {
            f64::NAN
        } else {
            self.run_time_ns as f64 / self.run_cnt as f64
        }
    }
}

/// The counters of every program some processes hold, by program id.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(pub BTreeMap<u32, ProgRun>);

impl Snapshot {
    /// Reads the counters of every program held by `pids`.
    pub fn take(pids: &[u32]) -> anyhow::Result<Self> {
        let names = program_names();
        let mut all = BTreeMap::new();
        for &pid in pids {
            for (id, (run_time_ns, run_cnt)) in programs_of(pid)? {
                let name = names.get(&id).cloned().unwrap_or_default();
                all.insert(
                    id,
                    ProgRun {
                        id,
                        name,
                        pid,
                        run_time_ns,
                        run_cnt,
                    },
                );
            }
        }
        Ok(Self(all))
    }

    /// What each program did since `before` (programs absent then count from 0).
    pub fn since(&self, before: &Self) -> Vec<ProgRun> {
        self.0
            .values()
            .map(|now| {
                let (t, n) = before
                    .0
                    .get(&now.id)
                    .map_or((0, 0), |b| (b.run_time_ns, b.run_cnt));
                ProgRun {
                    run_time_ns: now.run_time_ns.saturating_sub(t),
                    run_cnt: now.run_cnt.saturating_sub(n),
                    ..now.clone()
                }
            })
            .collect()
    }
}

/// (run_time_ns, run_cnt) of each program `pid` holds, by program id.
pub fn programs_of(pid: u32) -> anyhow::Result<BTreeMap<u32, (u64, u64)>> {
    let mut out = BTreeMap::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("pid {pid}"))?;
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        // The fd may close between the two reads: skip it then.
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        if let Some((id, counters)) = parse_fdinfo(&info) {
            out.insert(id, counters);
        }
    }
    Ok(out)
}

/// `prog_id`, then (`run_time_ns`, `run_cnt`), from a program fd's fdinfo text.
pub fn parse_fdinfo(text: &str) -> Option<(u32, (u64, u64))> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let id = u32::try_from(field("prog_id")?).ok()?;
    Some((id, (field("run_time_ns")?, field("run_cnt")?)))
}

/// Every loaded program's name, by id (programs that vanish meanwhile are skipped).
fn program_names() -> BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_fdinfo;

    #[test]
    fn fdinfo_fields() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\n\
                    prog_tag:\tdeadbeef\nmemlock:\t4096\nprog_id:\t812\n\
                    run_time_ns:\t1234\nrun_cnt:\t10\nrecursion_misses:\t0\n";
        assert_eq!(parse_fdinfo(text), Some((812, (1234, 10))));
        assert_eq!(parse_fdinfo("prog_id:\t1\n"), None);
    }
}
