//! Finding the node's network namespaces, and running code inside one.
//!
//! A namespace is found through a process inside it (`/proc/<pid>/ns/net`) or a
//! bind mount (`/run/netns/<name>`, as `ip netns add` and some CNIs make). Its key
//! is the namespace inode, the same number the eBPF programs record. An entry of
//! `/run/netns` counts only if it is a namespace (an nsfs mount): in a container
//! whose `/run/netns` mount does not receive the host's later mounts (no
//! `mountPropagation: HostToContainer`, or a host directory that is not a shared
//! mount), a namespace created after the container started shows up as the empty
//! file `ip netns` mounts it on, whose inode is a disk inode that no program ever
//! records. Files under
//! `/proc/<pid>/net/` show the counters of that pid's namespace; a namespace with
//! no process is read from a thread that joins it with `setns(2)` for the read
//! only ([`inside`]).

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// How to reach a namespace's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceAccess {
    /// Through a process inside it: `/proc/<pid>/net/...`.
    Pid(u32),
    /// Through a bind mount, joined with setns for each read.
    Path(PathBuf),
}

/// One network namespace on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace inode (`ls -L -i /proc/<pid>/ns/net`).
    pub inode: u32,
    /// How to reach its files.
    pub access: NamespaceAccess,
    /// Its name under `/run/netns`, if it has one.
    pub name: Option<String>,
    /// The command of the lowest pid inside it, if any.
    pub process: Option<String>,
    /// Whether this is the agent's own (the host's) namespace.
    pub is_host: bool,
}

impl Namespace {
    /// The file that stands for the namespace (`/proc/<pid>/ns/net` or the bind
    /// mount), to open for `setns` or `RTM_GETNSID`.
    pub fn handle_path(&self) -> PathBuf {
        match &self.access {
            NamespaceAccess::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            NamespaceAccess::Path(path) => path.clone(),
        }
    }

    /// The pid the namespace is read through, if a process lives in it.
    pub fn pid(&self) -> Option<u32> {
        match self.access {
            NamespaceAccess::Pid(pid) => Some(pid),
            NamespaceAccess::Path(_) => None,
        }
    }
}

/// Where `ip netns` keeps named namespaces.
pub const RUN_NETNS: &str = "/run/netns";

/// The inode of the namespace a `/proc/<pid>/ns/net`-like path refers to.
pub fn inode_of(path: &Path) -> io::Result<u32> {
    let ino = fs::metadata(path)?.ino();
    u32::try_from(ino).map_err(|_| io::Error::other("namespace inode above u32"))
}

/// `NSFS_MAGIC` (`include/uapi/linux/magic.h`): the filesystem of namespace files.
pub const NSFS_MAGIC: u64 = 0x6e73_6673;

/// The filesystem magic number of the file system `path` lives on (`statfs(2)`).
fn filesystem_magic(path: &Path) -> io::Result<u64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is ours to write.
    if unsafe { libc::statfs(c_path.as_ptr(), &raw mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `f_type` is signed on glibc and unsigned on musl.
    Ok(u64::try_from(stat.f_type).unwrap_or(0))
}

/// The inode of the namespace bound at `path` (e.g. `/run/netns/<name>`), or an
/// error when `path` is not a namespace file at all.
pub fn nsfs_inode(path: &Path) -> io::Result<u32> {
    let magic = filesystem_magic(path)?;
    if magic != NSFS_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a namespace (filesystem magic {magic:#x}, not nsfs)",
                path.display()
            ),
        ));
    }
    inode_of(path)
}

/// Set once `/run/netns` showed an entry that is not a namespace mount.
static SAW_UNMOUNTED_ENTRY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether `/run/netns` showed entries that are not namespace mounts (it does not
/// receive the node's later mounts), for the JSON API.
pub fn run_netns_unpropagated() -> bool {
    SAW_UNMOUNTED_ENTRY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Says once per process that `/run/netns` shows files that are not namespaces.
fn warn_not_a_namespace(error: &io::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    SAW_UNMOUNTED_ENTRY.store(true, std::sync::atomic::Ordering::Relaxed);
    ONCE.call_once(|| {
        log::warn!(
            "skipping {RUN_NETNS} entries that are not namespace mounts ({error}): this \
             {RUN_NETNS} does not receive the node's later mounts; mount it with \
             mountPropagation: HostToContainer from a shared mount on the node"
        );
    });
}

/// The agent's own network namespace.
pub fn own_inode() -> io::Result<u32> {
    inode_of(Path::new("/proc/self/ns/net"))
}

/// Every network namespace reachable through `/proc` and `/run/netns`.
pub fn discover() -> BTreeMap<u32, Namespace> {
    let host = own_inode().unwrap_or(0);
    let mut found = BTreeMap::new();
    if let Ok(dir) = fs::read_dir(RUN_NETNS) {
        for entry in dir.flatten() {
            let path = entry.path();
            let inode = match nsfs_inode(&path) {
                Ok(inode) => inode,
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        warn_not_a_namespace(&e);
                    }
                    continue;
                }
            };
            found.entry(inode).or_insert_with(|| Namespace {
                inode,
                access: NamespaceAccess::Path(path.clone()),
                name: Some(entry.file_name().to_string_lossy().into_owned()),
                process: None,
                is_host: inode == host,
            });
        }
    }
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(inode) = inode_of(Path::new(&format!("/proc/{pid}/ns/net"))) else {
            continue;
        };
        let ns = found.entry(inode).or_insert_with(|| Namespace {
            inode,
            access: NamespaceAccess::Pid(pid),
            name: None,
            process: None,
            is_host: inode == host,
        });
        // Prefer reading through a pid: no setns needed.
        if ns.process.is_none() {
            ns.access = NamespaceAccess::Pid(pid);
            ns.process = fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|c| c.trim().to_owned());
        }
    }
    found
}

/// Reads `/proc/net/<file>` as seen inside `ns`, for each of `files`.
pub fn read_net_files(ns: &Namespace, files: &[&str]) -> Vec<io::Result<String>> {
    read_net_files_of(&[ns], files).pop().unwrap_or_default()
}

/// Each error of `e` once per file of `files`.
fn all_failed(files: &[&str], e: &io::Error) -> Vec<io::Result<String>> {
    files
        .iter()
        .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
        .collect()
}

/// Reads `/proc/net/<file>` as seen inside each of `namespaces`, for each of
/// `files`: one list per namespace, in order. Namespaces with a process are read
/// through it; those known only by a path (`/run/netns`) on one thread that
/// joins each in turn — a thread per namespace was a tenth of an idle agent's
/// CPU at 500 such namespaces.
pub fn read_net_files_of(
    namespaces: &[&Namespace],
    files: &[&str],
) -> Vec<Vec<io::Result<String>>> {
    // Those with a process now; those by path filled in below.
    let mut out: Vec<Vec<io::Result<String>>> = namespaces
        .iter()
        .map(|ns| match &ns.access {
            NamespaceAccess::Pid(pid) => read_through_pid(ns, *pid, files),
            NamespaceAccess::Path(_) => Vec::new(),
        })
        .collect();
    let by_path: Vec<(usize, &Path, u32)> = namespaces
        .iter()
        .enumerate()
        .filter_map(|(i, ns)| match &ns.access {
            NamespaceAccess::Path(path) => Some((i, path.as_path(), ns.inode)),
            NamespaceAccess::Pid(_) => None,
        })
        .collect();
    if by_path.is_empty() {
        return out;
    }
    // A thread of its own, which ends in whichever namespace it joined last.
    let read = std::thread::scope(|s| {
        s.spawn(|| {
            by_path
                .iter()
                .map(|(_, path, inode)| read_joined(path, *inode, files))
                .collect::<Vec<_>>()
        })
        .join()
    })
    .unwrap_or_else(|_| {
        let e = io::Error::other("namespace thread panicked");
        by_path.iter().map(|_| all_failed(files, &e)).collect()
    });
    for ((i, _, _), files_read) in by_path.iter().zip(read) {
        out[*i] = files_read;
    }
    out
}

/// Joins namespace `inode` through `path` (checked as [`open_expected`] does)
/// on the calling thread and reads the files there; nothing read if it cannot.
fn read_joined(path: &Path, inode: u32, files: &[&str]) -> Vec<io::Result<String>> {
    match open_expected(path, inode).and_then(|ns| join(&ns)) {
        Ok(()) => files
            .iter()
            .map(|f| fs::read_to_string(format!("/proc/thread-self/net/{f}")))
            .collect(),
        Err(e) => all_failed(files, &e),
    }
}

/// Moves the calling thread into the namespace `ns` is open on. Only for a
/// thread of our own that ends (or joins another) after its work there.
fn join(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace fd we own changes only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the files through `/proc/<pid>/net`. A pid found in the namespace at the
/// last listing may have exited and been reused by a process elsewhere: read only
/// while it is, before and after, still a process of this namespace.
fn read_through_pid(ns: &Namespace, pid: u32, files: &[&str]) -> Vec<io::Result<String>> {
    let handle = ns.handle_path();
    let still_there = || match inode_of(&handle) {
        Ok(inode) if inode == ns.inode => Ok(()),
        Ok(other) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "pid {pid} is in network namespace {other} now, not {}",
                ns.inode
            ),
        )),
        Err(e) => Err(e),
    };
    if let Err(e) = still_there() {
        return all_failed(files, &e);
    }
    let read: Vec<io::Result<String>> = files
        .iter()
        .map(|f| fs::read_to_string(format!("/proc/{pid}/net/{f}")))
        .collect();
    match still_there() {
        Ok(()) => read,
        Err(e) => all_failed(files, &e),
    }
}

/// Runs `f` on a short-lived thread that joined the namespace at `ns_path`.
pub fn inside<R: Send>(ns_path: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    enter_and_run(&File::open(ns_path)?, f)
}

/// Opens the namespace at `path` once — without blocking (a FIFO planted there
/// cannot stall us), as nsfs, and only if it is namespace `inode` — so what runs
/// in it next runs in the one that was found, not in whatever the path names by
/// then (a pid that died and was reused, a `/run/netns` name replaced).
pub fn open_expected(path: &Path, inode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs on a descriptor we own, into a struct we own.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &raw mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let found = file.metadata()?.ino();
    if u64::try_from(stat.f_type).unwrap_or(0) != NSFS_MAGIC || found != u64::from(inode) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is no longer network namespace {inode} (it names inode {found} now): \
                 nothing done there",
                path.display()
            ),
        ));
    }
    Ok(file)
}

/// Runs `f` on a short-lived thread that joined namespace `inode` through
/// `path`, checked as [`open_expected`] does.
pub fn inside_expected<R: Send>(
    path: &Path,
    inode: u32,
    f: impl FnOnce() -> R + Send,
) -> io::Result<R> {
    enter_and_run(&open_expected(path, inode)?, f)
}

/// Runs `f` on a short-lived thread that joined the namespace `ns` is open on.
pub fn enter_and_run<R: Send>(ns: &File, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // This thread ends right after `f`.
            join(ns)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    })
}

/// The calling thread's network namespace cookie (`SO_NETNS_COOKIE`), `None` on
/// kernels without it (before 5.14).
pub fn cookie_of_this_thread() -> io::Result<Option<u64>> {
    // SAFETY: plain socket creation; closed below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and is owned here alone.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = libc::socklen_t::try_from(size_of::<u64>()).unwrap_or(8);
    // SO_NETNS_COOKIE (include/uapi/asm-generic/socket.h).
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(Some(cookie))
    } else {
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(None),
            e => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespace_files_count_as_namespaces() {
        assert!(nsfs_inode(Path::new("/proc/self/ns/net")).is_ok());
        let dir = std::env::temp_dir().join(format!("nettune-nsfs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("not-a-namespace");
        fs::write(&plain, "").unwrap();
        assert_eq!(
            nsfs_inode(&plain).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(nsfs_inode(&dir.join("missing")).is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_pid_now_in_another_namespace_reads_nothing_for_the_one_listed() {
        // This process, as the pid a departed namespace was listed with (its
        // process exited and the pid went to a process in another namespace).
        let own = own_inode().unwrap();
        let listed = |inode| Namespace {
            inode,
            access: NamespaceAccess::Pid(std::process::id()),
            name: None,
            process: None,
            is_host: false,
        };
        let reused = read_net_files(&listed(own.wrapping_add(1)), &["snmp", "netstat"]);
        assert!(
            reused.iter().all(|r| r
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)),
            "{reused:?}"
        );
        let read = read_net_files(&listed(own), &["snmp"]);
        assert!(read[0].as_ref().is_ok_and(|t| t.contains("Udp:")));
    }
}
