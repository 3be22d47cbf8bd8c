//! The system layer: everything nettune reads from or writes to the node outside
//! its own eBPF maps, behind one trait.
//!
//! Like aya routes every syscall through one function that its tests swap for a
//! fake, nettune routes every read of `/proc`, `/run/netns`, rtnetlink and
//! `/proc/sys` through [`System`]: [`Kernel`] is the real node, `fake::FakeSystem`
//! (compiled for tests only) an in-memory one, so collection and tuning are
//! unit-tested without root.
//!
//! The submodules hold the formats: [`btf`] and [`tracefs`] (read once at start-up
//! by [`crate::probes`]), [`procfs`] (counter files), [`netlink`] (interfaces and
//! namespace ids), [`netns`] (finding namespaces and entering one), [`sysctl`]
//! (names to paths, `net.*` only), and [`cri`] (the container runtime's CRI API
//! over its socket, polled from a thread of its own by
//! [`crate::collect::cri`], never from a collection).

pub mod btf;
pub mod cgroups;
pub mod cri;
#[cfg(test)]
pub mod fake;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod procfs;
pub mod sysctl;
pub mod tracefs;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::Path,
};

use crate::model::{
    sample::{LinkCounters, NetnsSysctls},
    tunables::{IP_LOCAL_PORT_RANGE, SOMAXCONN, TCP_MAX_SYN_BACKLOG, TCP_SYNCOOKIES, TCP_TW_REUSE},
    tuning::{NamespaceIdentity, ProcessStamp, Sameness, Target},
    value::Value,
};
pub use netlink::{Link, ListeningSocket};
pub use netns::{Namespace, NamespaceAccess};

/// Gives the heap memory freed so far back to the kernel. Start-up parses the
/// kernel's BTF twice (for offsets, then aya's for BTF attach points) and frees
/// both; glibc's allocator keeps such memory mapped, so without this the idle
/// agent's resident size carried start-up's peak (about 40 of 44 MB measured).
/// musl's allocator returns freed memory by itself.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One look at a namespace's listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerScan {
    /// Its listening TCP sockets.
    pub sockets: Vec<ListeningSocket>,
    /// The sysctls that bound their queues, as set in that namespace.
    pub sysctls: NetnsSysctls,
}

/// What nettune needs from the node, besides its eBPF maps.
pub trait System: Send + Sync {
    /// Every network namespace on the node, by inode.
    fn namespaces(&self) -> BTreeMap<u32, Namespace>;

    /// `/proc/net/<file>` as seen inside `ns`, for each of `files` (in order).
    fn read_net_files(&self, ns: &Namespace, files: &[&str]) -> Vec<io::Result<String>>;

    /// [`Self::read_net_files`] for each of `namespaces`, in order (the kernel's
    /// reads them in one pass; by default one by one).
    fn read_net_files_of(
        &self,
        namespaces: &[&Namespace],
        files: &[&str],
    ) -> Vec<Vec<io::Result<String>>> {
        namespaces
            .iter()
            .map(|ns| self.read_net_files(ns, files))
            .collect()
    }

    /// The interfaces of the agent's own (the host's) namespace.
    fn host_links(&self) -> io::Result<Vec<Link>>;

    /// The host's interfaces' own counters, by ifindex (`IFLA_STATS64`).
    fn host_link_stats(&self) -> io::Result<BTreeMap<u32, LinkCounters>>;

    /// Whether the host's interfaces may have changed since the last call (a
    /// pod's veth appears or goes): `true` when it cannot tell.
    fn host_links_changed(&self) -> bool;

    /// The id the host namespace has given `ns` (`RTM_GETNSID`): what a host-side
    /// veth names as `IFLA_LINK_NETNSID` when its peer lives in `ns`. `None` when
    /// no id is assigned.
    fn netns_id(&self, ns: &Namespace) -> io::Result<Option<i32>>;

    /// What tells the namespace with `inode` from a later one with the same inode.
    fn netns_identity(&self, inode: u32) -> io::Result<NamespaceIdentity>;

    /// The listening TCP sockets of `ns` with their accept queues (`sock_diag`),
    /// and the sysctls that limit those queues there.
    fn scan_listeners(&self, ns: &Namespace) -> io::Result<ListenerScan>;

    /// Where a link under `/proc` points, by its path relative to `/proc`
    /// (`1234/fd/3` → `socket:[56]`, `1234/ns/net` → `net:[4026531840]`).
    fn read_proc_link(&self, path: &str) -> io::Result<String>;

    /// A file under `/proc`, by its path relative to `/proc` (e.g.
    /// `sys/net/netfilter/nf_conntrack_max`, `1234/cgroup`).
    fn read_proc(&self, path: &str) -> io::Result<String>;

    /// The command name (`/proc/<pid>/comm`) of every process on the node.
    fn process_names(&self) -> BTreeSet<String>;

    /// For each socket in `inodes` of network namespace `netns`, the command
    /// name of a process that holds it (`/proc/<pid>/fd/* -> socket:[inode]`),
    /// in one pass over the processes of that namespace (over every process
    /// when it has none); sockets no process holds are absent.
    fn socket_owners(&self, netns: u32, inodes: &BTreeSet<u32>) -> BTreeMap<u32, String>;

    /// The names of the objects pinned in bpffs under `/sys/fs/bpf/<dir>` (e.g.
    /// `tc/globals`, where BPF CNIs pin their maps); empty when there is none.
    fn pinned_bpf(&self, dir: &str) -> BTreeSet<String>;

    /// The agent's namespace's nftables chains (see [`nftables`]).
    fn nftables_chains(&self) -> io::Result<Vec<nftables::Chain>>;

    /// The path (from the cgroup v2 root, `/kubepods/…`) of the cgroup whose id
    /// (`bpf_get_current_cgroup_id`) is `id`, if it still exists.
    fn cgroup_path(&self, id: u64) -> Option<String>;

    /// The inode of the network namespace file at `path` (a bind mount of nsfs,
    /// e.g. `/run/netns/cni-…`); a file that is not a namespace is an error.
    fn namespace_file_inode(&self, path: &Path) -> io::Result<u32>;

    /// The inode of process `pid`'s network namespace.
    fn netns_of_pid(&self, pid: u32) -> io::Result<u32> {
        let link = self.read_proc_link(&format!("{pid}/ns/net"))?;
        link.strip_prefix("net:[")
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("/proc/{pid}/ns/net is {link:?}, not a network namespace"),
                )
            })
    }

    /// Whether the `/proc/sys` in use (`tuning.proc_sys`) is read-only or
    /// missing here (a container's own): sysctls cannot be written through it.
    fn sysctls_read_only(&self) -> bool;

    /// Bytes in a memory page: the kernel sizes some tables in whole pages
    /// (the conntrack hash), rounding what is written to them.
    fn page_size(&self) -> u64;

    /// Reads sysctl `name` (dotted, `net.*` only) at `target`.
    fn read_sysctl(&self, target: &Target, name: &str) -> io::Result<String>;

    /// Writes `value` to sysctl `name` (dotted, `net.*` only) at `target` and
    /// reads it back there; returns what reads back. In a pod's namespace, only
    /// if it is still the one `identity` names: checked with the namespace held
    /// open, so it cannot be replaced between the check, the write and the read.
    fn write_sysctl(
        &self,
        target: &Target,
        identity: Option<&NamespaceIdentity>,
        name: &str,
        value: &str,
    ) -> io::Result<String>;
}

/// A shared or borrowed system is a system (`&FakeSystem` while a test keeps the
/// fake, `Arc<FakeSystem>` across the collection thread).
impl<D> System for D
where
    D: std::ops::Deref + Send + Sync,
    D::Target: System,
{
    fn namespaces(&self) -> BTreeMap<u32, Namespace> {
        (**self).namespaces()
    }

    fn read_net_files(&self, ns: &Namespace, files: &[&str]) -> Vec<io::Result<String>> {
        (**self).read_net_files(ns, files)
    }

    fn read_net_files_of(
        &self,
        namespaces: &[&Namespace],
        files: &[&str],
    ) -> Vec<Vec<io::Result<String>>> {
        (**self).read_net_files_of(namespaces, files)
    }

    fn host_links(&self) -> io::Result<Vec<Link>> {
        (**self).host_links()
    }

    fn host_link_stats(&self) -> io::Result<BTreeMap<u32, LinkCounters>> {
        (**self).host_link_stats()
    }

    fn host_links_changed(&self) -> bool {
        (**self).host_links_changed()
    }

    fn netns_id(&self, ns: &Namespace) -> io::Result<Option<i32>> {
        (**self).netns_id(ns)
    }

    fn netns_identity(&self, inode: u32) -> io::Result<NamespaceIdentity> {
        (**self).netns_identity(inode)
    }

    fn scan_listeners(&self, ns: &Namespace) -> io::Result<ListenerScan> {
        (**self).scan_listeners(ns)
    }

    fn read_proc_link(&self, path: &str) -> io::Result<String> {
        (**self).read_proc_link(path)
    }

    fn read_proc(&self, path: &str) -> io::Result<String> {
        (**self).read_proc(path)
    }

    fn process_names(&self) -> BTreeSet<String> {
        (**self).process_names()
    }

    fn socket_owners(&self, netns: u32, inodes: &BTreeSet<u32>) -> BTreeMap<u32, String> {
        (**self).socket_owners(netns, inodes)
    }

    fn pinned_bpf(&self, dir: &str) -> BTreeSet<String> {
        (**self).pinned_bpf(dir)
    }

    fn nftables_chains(&self) -> io::Result<Vec<nftables::Chain>> {
        (**self).nftables_chains()
    }

    fn cgroup_path(&self, id: u64) -> Option<String> {
        (**self).cgroup_path(id)
    }

    fn namespace_file_inode(&self, path: &Path) -> io::Result<u32> {
        (**self).namespace_file_inode(path)
    }

    fn netns_of_pid(&self, pid: u32) -> io::Result<u32> {
        (**self).netns_of_pid(pid)
    }

    fn sysctls_read_only(&self) -> bool {
        (**self).sysctls_read_only()
    }

    fn page_size(&self) -> u64 {
        (**self).page_size()
    }

    fn read_sysctl(&self, target: &Target, name: &str) -> io::Result<String> {
        (**self).read_sysctl(target, name)
    }

    fn write_sysctl(
        &self,
        target: &Target,
        identity: Option<&NamespaceIdentity>,
        name: &str,
        value: &str,
    ) -> io::Result<String> {
        (**self).write_sysctl(target, identity, name, value)
    }
}

/// The real node: procfs, rtnetlink, setns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kernel;

impl Kernel {
    /// The file of `name`, or an error naming why the name is refused.
    fn sysctl_path(name: &str) -> io::Result<std::path::PathBuf> {
        sysctl::path_under(sysctl::root(), name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// The namespace with `inode`, if it is still on the node.
    fn find(inode: u32) -> io::Result<Namespace> {
        netns::discover().remove(&inode).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("network namespace {inode} is gone"),
            )
        })
    }

    /// Runs `f` in the namespace of `target`.
    fn in_target<R: Send>(target: &Target, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        match target {
            Target::Node => Ok(f()),
            // A net sysctl file resolves to the namespace of the thread that opens it.
            Target::Netns { inode, .. } => {
                netns::inside_expected(&Self::find(*inode)?.handle_path(), *inode, f)
            }
        }
    }
}

impl System for Kernel {
    fn namespaces(&self) -> BTreeMap<u32, Namespace> {
        netns::discover()
    }

    fn read_net_files(&self, ns: &Namespace, files: &[&str]) -> Vec<io::Result<String>> {
        netns::read_net_files(ns, files)
    }

    fn read_net_files_of(
        &self,
        namespaces: &[&Namespace],
        files: &[&str],
    ) -> Vec<Vec<io::Result<String>>> {
        netns::read_net_files_of(namespaces, files)
    }

    fn host_link_stats(&self) -> io::Result<BTreeMap<u32, LinkCounters>> {
        netlink::link_stats()
    }

    fn host_links(&self) -> io::Result<Vec<Link>> {
        netlink::links()
    }

    fn host_links_changed(&self) -> bool {
        // One subscription for the process (the host's namespace is one).
        static EVENTS: std::sync::Mutex<Option<netlink::LinkEvents>> = std::sync::Mutex::new(None);
        let Ok(mut events) = EVENTS.lock() else {
            return true;
        };
        match events.as_mut() {
            Some(e) => e.changed(),
            None => {
                *events = netlink::LinkEvents::open()
                    .map_err(|e| log::warn!("cannot follow link changes ({e}): listing every tick"))
                    .ok();
                true
            }
        }
    }

    fn netns_id(&self, ns: &Namespace) -> io::Result<Option<i32>> {
        let file = fs::File::open(ns.handle_path())?;
        netlink::netns_id(&file)
    }

    fn netns_identity(&self, inode: u32) -> io::Result<NamespaceIdentity> {
        let ns = Self::find(inode)?;
        let cookie =
            netns::inside_expected(&ns.handle_path(), inode, netns::cookie_of_this_thread)??;
        // A process that exits meanwhile is no mark.
        let process = ns.pid().and_then(|pid| {
            let stat = self.read_proc(&format!("{pid}/stat")).ok()?;
            Some(ProcessStamp {
                pid,
                start_time: procfs::start_time(&stat)?,
            })
        });
        Ok(NamespaceIdentity {
            cookie,
            process,
            name: ns.name,
        })
    }

    fn scan_listeners(&self, ns: &Namespace) -> io::Result<ListenerScan> {
        // Both sock_diag and /proc/sys/net answer for the calling thread's namespace.
        let scan = || -> io::Result<ListenerScan> {
            let text = |name: &str| {
                Self::sysctl_path(name)
                    .and_then(|p| sysctl::read_file(&p))
                    .ok()
            };
            let read = |name: &str| text(name).and_then(|t| t.trim().parse().ok());
            Ok(ListenerScan {
                sockets: netlink::listeners()?,
                sysctls: NetnsSysctls {
                    somaxconn: read(SOMAXCONN.name),
                    max_syn_backlog: read(TCP_MAX_SYN_BACKLOG.name),
                    syncookies: read(TCP_SYNCOOKIES.name),
                    ephemeral_ports: text(IP_LOCAL_PORT_RANGE.name).and_then(
                        |t| match Value::parse(&IP_LOCAL_PORT_RANGE, &t) {
                            Ok(Value::Pair(low, high)) => {
                                Some((u32::try_from(low).ok()?, u32::try_from(high).ok()?))
                            }
                            _ => None,
                        },
                    ),
                    tw_reuse: read(TCP_TW_REUSE.name),
                },
            })
        };
        if ns.is_host {
            scan()
        } else {
            netns::inside_expected(&ns.handle_path(), ns.inode, scan)?
        }
    }

    fn read_proc_link(&self, path: &str) -> io::Result<String> {
        Ok(fs::read_link(Path::new("/proc").join(path))?
            .to_string_lossy()
            .into_owned())
    }

    fn read_proc(&self, path: &str) -> io::Result<String> {
        fs::read_to_string(Path::new("/proc").join(path))
    }

    fn process_names(&self) -> BTreeSet<String> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return BTreeSet::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            // A process that exits meanwhile has no comm: skipped.
            .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
            .map(|comm| comm.trim_end().to_owned())
            .collect()
    }

    fn socket_owners(&self, netns: u32, inodes: &BTreeSet<u32>) -> BTreeMap<u32, String> {
        let mut owners = BTreeMap::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return owners;
        };
        let pids: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .collect();
        // The namespace's own processes (one link read each for the rest); a
        // namespace with none (kept by a bind mount) has its sockets held by
        // processes elsewhere, which entered it to make them.
        let own: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|pid| self.netns_of_pid(*pid).ok() == Some(netns))
            .collect();
        for pid in if own.is_empty() { pids } else { own } {
            if owners.len() == inodes.len() {
                break;
            }
            let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let held: Vec<u32> = fds
                .filter_map(Result::ok)
                .filter_map(|fd| fs::read_link(fd.path()).ok())
                .filter_map(|target| {
                    let target = target.to_str()?;
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .filter(|inode| inodes.contains(inode) && !owners.contains_key(inode))
                .collect();
            if held.is_empty() {
                continue;
            }
            // A process that exits meanwhile has no comm: its sockets stay unknown.
            if let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) {
                for inode in held {
                    owners.insert(inode, comm.trim_end().to_owned());
                }
            }
        }
        owners
    }

    fn nftables_chains(&self) -> io::Result<Vec<nftables::Chain>> {
        nftables::chains()
    }

    fn cgroup_path(&self, id: u64) -> Option<String> {
        cgroups::path_of(id)
    }

    fn pinned_bpf(&self, dir: &str) -> BTreeSet<String> {
        fs::read_dir(Path::new("/sys/fs/bpf").join(dir))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn namespace_file_inode(&self, path: &Path) -> io::Result<u32> {
        netns::nsfs_inode(path)
    }

    fn page_size(&self) -> u64 {
        // SAFETY: sysconf reads a constant of the running system.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
    }

    fn sysctls_read_only(&self) -> bool {
        let Ok(path) =
            std::ffi::CString::new(sysctl::root().join("net").as_os_str().as_encoded_bytes())
        else {
            return false;
        };
        // SAFETY: statvfs writes into a zeroed struct we own; the path is
        // NUL-terminated.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &raw mut stat) };
        // Missing (`tuning.proc_sys` naming a mount that is not there) cannot
        // be written either.
        rc != 0 || stat.f_flag & libc::ST_RDONLY != 0
    }

    fn read_sysctl(&self, target: &Target, name: &str) -> io::Result<String> {
        let path = Self::sysctl_path(name)?;
        Self::in_target(target, || sysctl::read_file(&path))?
    }

    fn write_sysctl(
        &self,
        target: &Target,
        identity: Option<&NamespaceIdentity>,
        name: &str,
        value: &str,
    ) -> io::Result<String> {
        let path = Self::sysctl_path(name)?;
        let write_and_read = || -> io::Result<String> {
            fs::write(&path, value)?;
            sysctl::read_file(&path)
        };
        let Target::Netns { inode, .. } = target else {
            return write_and_read();
        };
        let ns = Self::find(*inode)?;
        // Held open from here: the namespace cannot go (and its inode be
        // reused) until the write is read back.
        let file = netns::open_expected(&ns.handle_path(), *inode)?;
        if let Some(expected) = identity {
            // With the namespace open, a cookie is read in it; before 5.14 the
            // marks found now are those of the namespace the open file holds.
            let found = match expected.cookie {
                Some(_) => NamespaceIdentity {
                    cookie: netns::enter_and_run(&file, netns::cookie_of_this_thread)??,
                    ..NamespaceIdentity::default()
                },
                None => self.netns_identity(*inode)?,
            };
            if expected.judge(&found) != Sameness::Same {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "network namespace {inode} is not proven the one journaled (now \
                         {found}, journaled {expected}): nothing written"
                    ),
                ));
            }
        }
        netns::enter_and_run(&file, write_and_read)?
    }
}
