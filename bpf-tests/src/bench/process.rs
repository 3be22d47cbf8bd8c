//! A process's CPU time and memory from procfs, and peers started for a benchmark
//! (iperf3, node_exporter) that are stopped on drop.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// User + system CPU seconds `pid` has used, all threads (`/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are 11 and 12 here.
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / hz as f64)
}

/// Resident memory now and at its peak, in MiB (`VmRSS`, `VmHWM`).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

/// `pid`'s [`Memory`] from `/proc/<pid>/status`.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        let n: f64 = line
            .trim_start_matches(':')
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(n / 1024.0)
    };
    Ok(Memory {
        rss_mib: kib("VmRSS")?,
        peak_mib: kib("VmHWM")?,
    })
}

/// CPU used by a process over an interval, as a share of one core.
pub struct CpuMeter {
    pid: u32,
    cpu: f64,
    at: Instant,
}

impl CpuMeter {
    /// Starts measuring `pid` now.
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            cpu: cpu_seconds(pid)?,
            at: Instant::now(),
        })
    }

    /// Share of one core used since the start (0.05 = 5 % of a core), and restarts.
    pub fn lap(&mut self) -> anyhow::Result<f64> {
        let (cpu, at) = (cpu_seconds(self.pid)?, Instant::now());
        let share = (cpu - self.cpu) / at.duration_since(self.at).as_secs_f64();
        (self.cpu, self.at) = (cpu, at);
        Ok(share)
    }
}

/// A helper process for a benchmark; SIGTERM (then SIGKILL) and reaped on drop.
pub struct Spawned {
    child: Child,
}

impl Spawned {
    /// Starts `program args` with stdout and stderr discarded.
    pub fn start(program: &str, args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        Ok(Self { child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("process {} exited early: {status}", self.child.id());
        }
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child, reaped below.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins the calling thread to `cpu` (so a sender and a receiver share one core,
/// as the datapath benchmark wants; see docs/benchmarks.md).
pub fn pin_thread_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is checked against the set's capacity by the macro's contract.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this thread; `set` is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) } != 0 {
        bail!(
            "sched_setaffinity({cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
