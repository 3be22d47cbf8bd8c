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
    sync::mpsc,
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
        let script = format!("BEGIN {{ printf(\"{READY}\\n\"); }}\n{script}");
        let mut child = Command::new("bpftrace")
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
/// (device's netns, else the socket's, else `rx_sk`'s). Read its map with
/// [`drops_by_netns`].
pub fn drops_by_netns_script(namespaces: &[u32]) -> String {
    let filter = namespaces
        .iter()
        .map(|i| format!("$ns == {i}"))
        .collect::<Vec<_>>()
        .join(" || ");
    format!(
        "tracepoint:skb:kfree_skb {{
            $skb = (struct sk_buff *)args->skbaddr;
            $ns = (uint32)0;
            if ($skb->dev != 0) {{
                $ns = $skb->dev->nd_net.net->ns.inum;
            }} else {{
                if ($skb->sk != 0) {{
                    $ns = $skb->sk->__sk_common.skc_net.net->ns.inum;
                }} else {{
                    if (args->rx_sk != 0) {{
                        $ns = ((struct sock *)args->rx_sk)->__sk_common.skc_net.net->ns.inum;
                    }}
                }}
            }}
            if ({filter}) {{ @drops[$ns, (uint32)args->reason] = count(); }}
        }}"
    )
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
