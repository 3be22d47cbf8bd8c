//! bpftrace as a peer: run a script on the same kernel events nettune counts, over
//! the same interval, and read its maps.
//!
//! [`Bpftrace::start`] returns once bpftrace's `BEGIN` probe ran, which bpftrace
//! fires after every other probe is attached; [`Bpftrace::stop`] sends SIGINT, on
//! which bpftrace prints its maps and exits.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};

const READY: &str = "nettune-bpftrace-ready";

/// A running bpftrace.
pub struct Bpftrace {
    child: Child,
    output: Option<JoinHandle<Vec<String>>>,
}

impl Bpftrace {
    /// Starts `bpftrace -e <script>` (a `BEGIN` probe is added) and waits until its
    /// probes are attached.
    pub fn start(script: &str) -> anyhow::Result<Self> {
        Self::start_with(false, script)
    }

    /// As [`Bpftrace::start`], allowed to act on what it sees (`--unsafe`:
    /// `signal()`, e.g. to SIGKILL a process at an exact step). `str()` reads
    /// up to 200 bytes (a path compares whole); a string literal stays within
    /// 63.
    pub fn start_unsafe(script: &str) -> anyhow::Result<Self> {
        Self::start_with(true, script)
    }

    fn start_with(unsafe_actions: bool, script: &str) -> anyhow::Result<Self> {
        let script = format!("BEGIN {{ printf(\"{READY}\\n\"); }}\n{script}");
        let mut command = Command::new("bpftrace");
        if unsafe_actions {
            command.env("BPFTRACE_STRLEN", "200").arg("--unsafe");
        }
        let mut child = command
            .args(["-e", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bpftrace (Debian package bpftrace)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        let output = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == READY {
                    tx.send(()).ok();
                } else {
                    lines.push(line);
                }
            }
            lines
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            child.kill().ok();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).ok();
            }
            bail!("bpftrace did not start within 60s: {}", stderr.trim());
        }
        Ok(Self {
            child,
            output: Some(output),
        })
    }

    /// bpftrace's process id (its BPF programs are among its file descriptors).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops bpftrace and returns its maps: each printed `@name[key]: value` line
    /// as `"@name[key]" → value`.
    pub fn stop(mut self) -> anyhow::Result<BTreeMap<String, i64>> {
        let status = self.interrupt_until_exit()?;
        let lines = self
            .output
            .take()
            .context("stopped twice")?
            .join()
            .map_err(|_| anyhow::anyhow!("bpftrace reader panicked"))?;
        if !status.success() {
            let mut stderr = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).ok();
            }
            bail!("bpftrace failed ({status}): {}", stderr.trim());
        }
        Ok(parse_maps(&lines))
    }
}

impl Bpftrace {
    /// Sends SIGINT until bpftrace exits. One is not always enough: bpftrace 0.17
    /// sets a flag in its handler and, when the signal lands between two polls,
    /// goes back to waiting without a timeout (seen: a test stuck 400 s). A later
    /// SIGINT interrupts that wait. After 30 s it is killed and that is an error.
    fn interrupt_until_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = i32::try_from(self.child.id())?;
        for _ in 0..60 {
            // SAFETY: kill sends a signal to our own child process, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
            for _ in 0..10 {
                if let Some(status) = self.child.try_wait()? {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.child.kill().ok();
        self.child.wait().ok();
        bail!("bpftrace did not exit within 30 s of SIGINT")
    }
}

/// A script counting `skb:kfree_skb` per (netns, reason) for the namespaces whose
/// inodes are `namespaces`, attributing each drop as nettune's program does
/// ([`kfree_skb_netns`]), with this kernel's reason ([`kfree_skb_reason`]). Read
/// its map with [`drops_by_netns`]. Needs [`bpftrace_reads_kernel_structs`].
pub fn drops_by_netns_script(namespaces: &[u32]) -> anyhow::Result<String> {
    let filter = namespaces
        .iter()
        .map(|i| format!("$ns == {i}"))
        .collect::<Vec<_>>()
        .join(" || ");
    Ok(format!(
        "tracepoint:skb:kfree_skb {{ {}
            if ({filter}) {{ @drops[$ns, {}] = count(); }}
        }}",
        kfree_skb_netns()?,
        kfree_skb_reason()?
    ))
}

/// A script counting every `skb:kfree_skb` on the machine per reason, under
/// namespace 0, for kernels where bpftrace cannot attribute a drop to a namespace
/// (see [`bpftrace_reads_kernel_structs`]). Read its map with [`drops_by_netns`].
pub fn drops_script() -> anyhow::Result<String> {
    Ok(format!(
        "tracepoint:skb:kfree_skb {{ @drops[0, {}] = count(); }}",
        kfree_skb_reason()?
    ))
}

/// The map of a [`drops_by_netns_script`] run: (netns inode, reason) → drops.
pub fn drops_by_netns(maps: &BTreeMap<String, i64>) -> BTreeMap<(u32, u32), u64> {
    maps.iter()
        .filter_map(|(key, n)| {
            let inner = key.strip_prefix("@drops[")?.strip_suffix(']')?;
            let (ns, reason) = inner.split_once(", ")?;
            Some((
                (ns.parse().ok()?, reason.parse().ok()?),
                u64::try_from(*n).ok()?,
            ))
        })
        .collect()
}

/// Parses `@[1, 2]: 3`, `@name[x]: 4` and `@: 5` lines.
pub fn parse_maps(lines: &[String]) -> BTreeMap<String, i64> {
    lines
        .iter()
        .filter(|l| l.starts_with('@'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(": ")?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // Only reached when `stop` was not called (a failing test): do not leave
        // bpftrace attached.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether bpftrace can read kernel structs here (it takes their layout from the
/// kernel's BTF): `Err` with the reason where it cannot. bpftrace 0.17 does not
/// use the BTF of Debian 11's 5.10 (`bpftrace --info` says `btf: no`), so scripts
/// there cannot follow an skb to its namespace.
pub fn bpftrace_reads_kernel_structs() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let out = Command::new("bpftrace")
                .arg("--info")
                .output()
                .map_err(|e| format!("cannot run bpftrace --info: {e}"))?;
            let info = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let btf = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("btf:"))
                .map(str::trim);
            match btf {
                Some("yes") => Ok(()),
                other => Err(format!(
                    "bpftrace cannot read this kernel's structs (`bpftrace --info`: btf: {})",
                    other.unwrap_or("not reported")
                )),
            }
        })
        .clone()
}

/// A bpftrace expression for the drop reason in a `tracepoint:skb:kfree_skb`
/// probe: `args->reason`, or 0 on kernels whose tracepoint has none (before 5.17
/// every drop reads 0, as nettune records it). From this kernel's format file.
pub fn kfree_skb_reason() -> anyhow::Result<&'static str> {
    Ok(if crate::probes::kfree_skb_has_reason()? {
        "(uint32)args->reason"
    } else {
        "(uint32)0"
    })
}

/// bpftrace statements for a `tracepoint:skb:kfree_skb` probe that set `$ns` to
/// the namespace the drop belongs to, attributed exactly as nettune's program does
/// (the device's namespace, else the socket's, else `rx_sk`'s, which the
/// tracepoint has from 6.12). Needs [`bpftrace_reads_kernel_structs`].
pub fn kfree_skb_netns() -> anyhow::Result<String> {
    let tracefs = nettune::sys::tracefs::Tracefs::find().context("tracefs is not mounted")?;
    let rx_sk = if tracefs.format("skb", "kfree_skb")?.contains_key("rx_sk") {
        "else { if (args->rx_sk != 0) { \
             $ns = ((struct sock *)args->rx_sk)->__sk_common.skc_net.net->ns.inum; } }"
    } else {
        ""
    };
    Ok(format!(
        "$skb = (struct sk_buff *)args->skbaddr;
         $ns = (uint32)0;
         if ($skb->dev != 0) {{
             $ns = $skb->dev->nd_net.net->ns.inum;
         }} else {{
             if ($skb->sk != 0) {{
                 $ns = $skb->sk->__sk_common.skc_net.net->ns.inum;
             }} {rx_sk}
         }}"
    ))
}
