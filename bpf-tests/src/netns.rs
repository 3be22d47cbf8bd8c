//! Network namespaces and veth pairs that remove themselves.
//!
//! The loader stays in the host namespace (`ip netns exec` would remount /sys and
//! hide tracefs); only the work that must happen inside a namespace — sockets,
//! tc attach and detach, reading `/proc/thread-self/net/*` — runs on a thread that
//! has joined it with `setns(2)`, which affects that thread alone.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    xtask::process::tool("ip", args, "iproute2").map(drop)
}

/// A named network namespace (`/run/netns/<name>`), deleted on drop when the
/// test created it.
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Creates `nt<pid>-<tag><n>` with its loopback up.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("nt{}-{tag}{id}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace someone else mounted at `/run/netns/<name>` (e.g. a pod
    /// sandbox's), left alone on drop.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The namespace's inode number: what nettune uses as its netns key.
    pub fn inode(&self) -> anyhow::Result<u32> {
        let ino = std::fs::metadata(self.path())?.ino();
        Ok(u32::try_from(ino)?)
    }

    /// Runs `ip -n <name> <args>`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// One counter of this namespace's `/proc/net/<file>` (e.g. `snmp`, `netstat`).
    pub fn mib(&self, file: &str, group: &str, name: &str) -> anyhow::Result<i64> {
        let path = PathBuf::from("/proc/thread-self/net").join(file);
        let text = self.run(|| std::fs::read_to_string(&path))??;
        let path = path.display().to_string();
        let mib = nettune::sys::procfs::Mib::parse(&path, &text);
        Ok(mib.get(group, name)?)
    }

    /// Writes a per-namespace sysctl, e.g. `net/ipv4/ip_local_port_range`.
    pub fn write_sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = PathBuf::from("/proc/sys").join(key);
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("writing {value} to {} in {}", path.display(), self.name))
    }

    /// Runs a command inside this namespace (`ip netns exec`) and returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let all = [&["netns", "exec", self.name.as_str(), program], args].concat();
        xtask::process::tool("ip", &all, "iproute2")
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
        let file = File::open(self.path())?;
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&file)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns {} panicked", self.name))?
        })
    }

    /// Starts `f` on a thread inside this namespace.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<R>>> {
        let file = File::open(self.path())?;
        Ok(std::thread::spawn(move || {
            enter(&file)?;
            Ok(f())
        }))
    }
}

/// Moves the calling thread into the namespace behind `file`.
fn enter(file: &File) -> anyhow::Result<()> {
    // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete test namespace: {e}");
        }
    }
}

/// A veth pair joining two namespaces, with an IPv4 /24 between them. It goes away
/// with either namespace.
pub struct Veth {
    /// Interface name on each side (the same name exists once in each namespace).
    pub a_name: String,
    pub b_name: String,
    pub a_addr: std::net::Ipv4Addr,
    pub b_addr: std::net::Ipv4Addr,
}

impl Veth {
    /// Joins `ns` to the host namespace, like a pod's interface: `a_name` is the
    /// host side (`10.203.<subnet>.1`), `b_name` the side in `ns` (`.2`).
    /// IPv6 is off on both ends so that no neighbour discovery adds packets.
    pub fn to_host(ns: &Netns, subnet: u8) -> anyhow::Result<HostVeth> {
        Self::to_host_named(
            ns,
            &format!("nth{}x{subnet}", std::process::id() % 10000),
            &format!("vt{subnet}p"),
            (
                std::net::Ipv4Addr::new(10, 203, subnet, 1),
                std::net::Ipv4Addr::new(10, 203, subnet, 2),
            ),
            24,
        )
    }

    /// As [`Veth::to_host`], with the host side named `host`, the side in `ns`
    /// named `pod`, and `(host address, pod address)/prefix` between them.
    pub fn to_host_named(
        ns: &Netns,
        host: &str,
        pod: &str,
        (a_addr, b_addr): (std::net::Ipv4Addr, std::net::Ipv4Addr),
        prefix: u8,
    ) -> anyhow::Result<HostVeth> {
        ip(&[
            "link",
            "add",
            "name",
            host,
            "type",
            "veth",
            "peer",
            "name",
            pod,
            "netns",
            ns.name(),
        ])?;
        let guard = HostVeth {
            veth: Self {
                a_name: host.to_owned(),
                b_name: pod.to_owned(),
                a_addr,
                b_addr,
            },
        };
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1")?;
        ns.write_sysctl(&format!("net/ipv6/conf/{pod}/disable_ipv6"), "1")?;
        ip(&["addr", "add", &format!("{a_addr}/{prefix}"), "dev", host])?;
        ns.ip(&["addr", "add", &format!("{b_addr}/{prefix}"), "dev", pod])?;
        ip(&["link", "set", host, "up"])?;
        ns.ip(&["link", "set", pod, "up"])?;
        Ok(guard)
    }

    /// Connects `a` and `b` with `10.203.<subnet>.1` on `a` and `.2` on `b`, IPv4
    /// only. `index` pins both interfaces' ifindex (to test ifindex collisions).
    ///
    /// The pair is created from inside `a`: older kernels (6.1 does, 6.18 does
    /// not) look a requested index up in the *calling* namespace and answer `File
    /// exists` when the caller already has an interface with that number.
    pub fn connect(a: &Netns, b: &Netns, subnet: u8, index: Option<u32>) -> anyhow::Result<Self> {
        let (a_name, b_name) = (format!("vt{subnet}a"), format!("vt{subnet}b"));
        let index = index.map(|i| i.to_string());
        let mut args = vec!["link", "add", "name", &a_name];
        if let Some(i) = &index {
            args.extend(["index", i]);
        }
        args.extend(["type", "veth", "peer", "name", &b_name]);
        if let Some(i) = &index {
            args.extend(["index", i]);
        }
        args.extend(["netns", b.name()]);
        a.ip(&args)?;
        // No IPv6: neighbour discovery and MLD would add packets (and, on kernels
        // without drop reasons, drops that look like any other) to what tests count.
        a.write_sysctl(&format!("net/ipv6/conf/{a_name}/disable_ipv6"), "1")?;
        b.write_sysctl(&format!("net/ipv6/conf/{b_name}/disable_ipv6"), "1")?;
        let a_addr = std::net::Ipv4Addr::new(10, 203, subnet, 1);
        let b_addr = std::net::Ipv4Addr::new(10, 203, subnet, 2);
        a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", &a_name])?;
        b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", &b_name])?;
        a.ip(&["link", "set", &a_name, "up"])?;
        b.ip(&["link", "set", &b_name, "up"])?;
        Ok(Self {
            a_name,
            b_name,
            a_addr,
            b_addr,
        })
    }
}

/// A veth whose host side lives in the host namespace; deleted on drop (the pod
/// side goes with it).
pub struct HostVeth {
    pub veth: Veth,
}

impl HostVeth {
    /// The host side's ifindex.
    pub fn host_ifindex(&self) -> anyhow::Result<u32> {
        let path = format!("/sys/class/net/{}/ifindex", self.veth.a_name);
        Ok(std::fs::read_to_string(&path)
            .with_context(|| path.clone())?
            .trim()
            .parse()?)
    }

    /// Reads `/sys/class/net/<host side>/statistics/<counter>`.
    pub fn host_counter(&self, counter: &str) -> anyhow::Result<u64> {
        let path = format!("/sys/class/net/{}/statistics/{counter}", self.veth.a_name);
        Ok(std::fs::read_to_string(&path)
            .with_context(|| path.clone())?
            .trim()
            .parse()?)
    }
}

impl Drop for HostVeth {
    fn drop(&mut self) {
        // Already gone if its namespace was deleted first.
        let _ = ip(&["link", "del", &self.veth.a_name]);
    }
}
