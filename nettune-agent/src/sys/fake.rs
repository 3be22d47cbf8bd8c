//! An in-memory [`System`]: namespaces, their `/proc/net` files, host interfaces
//! and sysctls, all set by a test.
//!
//! It behaves like the kernel where tests depend on it: a sysctl that does not
//! exist cannot be written, a namespace that is gone cannot be entered, a write
//! of nothing (0 bytes, as `fs::write(path, "")` issues) leaves a sysctl's value
//! as it was — exactly what `/proc/sys` does — and a namespace added again with
//! the same inode gets a new cookie, as a new kernel namespace would. Like the
//! kernel on 4 KiB pages, it rounds `nf_conntrack_buckets` up to a multiple of
//! 512 (a page of hash heads).

use std::{
    collections::BTreeMap,
    io,
    path::Path,
    sync::{Mutex, MutexGuard},
};

use super::{Link, ListenerScan, Namespace, NamespaceAccess, System};

mod identity;
pub mod logs;
use crate::model::{
    sample::LinkCounters,
    tuning::{NamespaceIdentity, Sameness, Target},
};

/// One fake namespace.
#[derive(Clone, Debug)]
struct FakeNamespace {
    namespace: Namespace,
    /// `/proc/net/<file>` contents by file name (`snmp`, `stat/nf_conntrack`, …).
    net_files: BTreeMap<String, String>,
    /// Sysctl values by dotted name, as the kernel prints them (no newline).
    sysctls: BTreeMap<String, String>,
    /// The id the host namespace gave it.
    netns_id: Option<i32>,
    /// Its cookie: unique per namespace ever added.
    cookie: u64,
    /// Its listeners and their sysctls.
    listeners: ListenerScan,
}

#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<u32, FakeNamespace>,
    host_links: Vec<Link>,
    /// Set: listing the host's interfaces fails with this.
    host_links_error: Option<String>,
    /// Each host interface's own counters.
    link_stats: BTreeMap<u32, LinkCounters>,
    proc: BTreeMap<String, String>,
    node_sysctls: BTreeMap<String, String>,
    proc_links: BTreeMap<String, String>,
    cookies_given: u64,
    listener_scans: u64,
    /// The host's interfaces are as last listed (a new fake's are not).
    links_listed: bool,
    listings: u64,
    read_only: bool,
    /// Namespaces have no cookie (a kernel before 5.14).
    no_cookies: bool,
    ignored_writes: std::collections::BTreeSet<(Target, String)>,
    net_file_reads: usize,
    processes: std::collections::BTreeSet<String>,
    pinned: BTreeMap<String, std::collections::BTreeSet<String>>,
    nft_chains: Vec<super::nftables::Chain>,
    cgroups: BTreeMap<u64, String>,
    /// Socket inode → the command holding it.
    socket_owners: BTreeMap<u32, String>,
}

/// A node made of data. Every method takes `&self` (the trait's reads and writes
/// do too), so a test can change the node while a collector or tuner holds it.
#[derive(Debug, Default)]
pub struct FakeSystem {
    state: Mutex<State>,
    /// When set, the next namespace listing waits for a message (or a hang-up).
    gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// What happens right before the next write of a sysctl (by name).
    before_write: Hook,
    /// What happens right after the next write of a sysctl (by name).
    after_write: Hook,
    /// What happens right after the next read of a sysctl (by name).
    after_read: Hook,
}

/// Something to run once right after the next read or write of one sysctl: the
/// disk filling up, the process being killed, another process acting in
/// between.
#[derive(Default)]
struct Hook(Mutex<Option<(String, Action)>>);

/// What a [`Hook`] runs, given the system (to change the node in between).
type Action = Box<dyn FnOnce(&FakeSystem) + Send>;

impl Hook {
    fn set(&self, name: &str, action: impl FnOnce(&FakeSystem) + Send + 'static) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((name.to_owned(), Box::new(action)));
    }

    /// Runs the action if it waits for `name` (outside the lock: it may use
    /// the system again).
    fn fire(&self, name: &str, system: &FakeSystem) {
        let action = {
            let mut slot = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match slot.take() {
                Some((n, action)) if n == name => Some(action),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        if let Some(action) = action {
            action(system);
        }
    }
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.debug_tuple("Hook")
            .field(&slot.as_ref().map(|(name, _)| name.clone()))
            .finish()
    }
}

/// `value` as the kernel keeps it in sysctl `name`: `nf_conntrack_buckets`
/// is resized to whole pages of 8-byte hash heads (`nf_ct_alloc_hashtable`).
fn kernel_rounding(name: &str, value: &str) -> String {
    match (name, value.trim().parse::<u64>()) {
        ("net.netfilter.nf_conntrack_buckets", Ok(v)) => {
            v.div_ceil(512).saturating_mul(512).to_string()
        }
        _ => value.to_owned(),
    }
}

fn not_found(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, what)
}

impl FakeSystem {
    /// An empty node: no namespaces, no interfaces, no files.
    pub fn new() -> Self {
        Self::default()
    }

    /// A process named `comm` runs on the node.
    pub fn add_process(&self, comm: &str) {
        self.state().processes.insert(comm.to_owned());
    }

    /// A process named `comm` holds socket `inode`.
    pub fn set_socket_owner(&self, inode: u32, comm: &str) {
        self.state().socket_owners.insert(inode, comm.to_owned());
    }

    /// The node's nftables ruleset has `chain` in `table` of `family` (`NFPROTO_*`).
    pub fn add_nft_chain(&self, family: u8, table: &str, chain: &str) {
        self.state().nft_chains.push(super::nftables::Chain {
            family,
            table: table.to_owned(),
            chain: chain.to_owned(),
        });
    }

    /// The cgroup with id `id` is at `path` (from the v2 root).
    pub fn set_cgroup_path(&self, id: u64, path: &str) {
        self.state().cgroups.insert(id, path.to_owned());
    }

    /// `name` is pinned under `/sys/fs/bpf/<dir>`.
    pub fn pin_bpf(&self, dir: &str, name: &str) {
        self.state()
            .pinned
            .entry(dir.to_owned())
            .or_default()
            .insert(name.to_owned());
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a namespace; `name` makes it a named one (`/run/netns/<name>`), else it
    /// is reached through pid `inode` and its process is `proc<inode>`.
    pub fn add_namespace(&self, inode: u32, name: Option<&str>, is_host: bool) {
        let namespace = Namespace {
            inode,
            access: match name {
                Some(n) => NamespaceAccess::Path(format!("/run/netns/{n}").into()),
                None => NamespaceAccess::Pid(inode),
            },
            name: name.map(str::to_owned),
            process: name.is_none().then(|| format!("proc{inode}")),
            is_host,
        };
        let mut state = self.state();
        state.cookies_given += 1;
        let cookie = state.cookies_given;
        state.namespaces.insert(
            inode,
            FakeNamespace {
                namespace,
                net_files: BTreeMap::new(),
                sysctls: BTreeMap::new(),
                netns_id: None,
                cookie,
                listeners: ListenerScan::default(),
            },
        );
    }

    /// Makes the next namespace listing wait until the returned sender sends or
    /// is dropped: a collection stuck in the kernel, for tests of what must not
    /// wait for one.
    pub fn hold_next_listing(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
        tx
    }

    /// Removes a namespace (the pod went away).
    pub fn remove_namespace(&self, inode: u32) {
        self.state().namespaces.remove(&inode);
    }

    /// Sets `/proc/net/<file>` in namespace `inode` (`None`: the file vanishes).
    pub fn set_net_file(&self, inode: u32, file: &str, text: Option<&str>) {
        if let Some(ns) = self.state().namespaces.get_mut(&inode) {
            match text {
                Some(t) => ns.net_files.insert(file.to_owned(), t.to_owned()),
                None => ns.net_files.remove(file),
            };
        }
    }

    /// Sets what a scan of namespace `inode`'s listeners finds.
    pub fn set_listeners(&self, inode: u32, scan: ListenerScan) {
        if let Some(ns) = self.state().namespaces.get_mut(&inode) {
            ns.listeners = scan;
        }
    }

    /// Makes the link `/proc/<path>` point at `target` (e.g. `12/fd/3` →
    /// `socket:[42]`); `None` removes it.
    pub fn set_proc_link(&self, path: &str, target: Option<&str>) {
        let links = &mut self.state().proc_links;
        match target {
            Some(t) => links.insert(path.to_owned(), t.to_owned()),
            None => links.remove(path),
        };
    }

    /// How many times the namespaces were listed, so far.
    pub fn listings(&self) -> u64 {
        self.state().listings
    }

    /// How many times namespace listeners were scanned, so far.
    pub fn listener_scans(&self) -> u64 {
        self.state().listener_scans
    }

    /// Sets the id the host namespace gave namespace `inode`.
    pub fn set_netns_id(&self, inode: u32, id: Option<i32>) {
        if let Some(ns) = self.state().namespaces.get_mut(&inode) {
            ns.netns_id = id;
        }
    }

    /// Sets host interface `ifindex`'s own counters.
    pub fn set_link_stats(&self, ifindex: u32, counters: LinkCounters) {
        self.state().link_stats.insert(ifindex, counters);
    }

    /// Sets the host namespace's interfaces.
    pub fn set_host_links(&self, links: Vec<Link>) {
        let mut state = self.state();
        state.host_links = links;
        state.host_links_error = None;
        state.links_listed = false;
    }

    /// Makes listing the host's interfaces fail with `reason`.
    pub fn fail_host_links(&self, reason: &str) {
        let mut state = self.state();
        state.host_links_error = Some(reason.to_owned());
        state.links_listed = false;
    }

    /// Sets `/proc/<path>`.
    pub fn set_proc(&self, path: &str, text: &str) {
        self.state().proc.insert(path.to_owned(), text.to_owned());
    }

    /// Makes sysctl `name` exist at `target` with `value`.
    pub fn set_sysctl(&self, target: &Target, name: &str, value: &str) {
        let mut state = self.state();
        let map = match target {
            Target::Node => Some(&mut state.node_sysctls),
            Target::Netns { inode, .. } => state.namespaces.get_mut(inode).map(|n| &mut n.sysctls),
        };
        if let Some(map) = map {
            map.insert(name.to_owned(), value.to_owned());
        }
    }

    /// Removes sysctl `name` at `target` (e.g. a module that is not loaded).
    pub fn remove_sysctl(&self, target: &Target, name: &str) {
        let mut state = self.state();
        match target {
            Target::Node => {
                state.node_sysctls.remove(name);
            }
            Target::Netns { inode, .. } => {
                if let Some(ns) = state.namespaces.get_mut(inode) {
                    ns.sysctls.remove(name);
                }
            }
        }
    }

    /// Mounts `/proc/sys` read-only: every sysctl write fails with EROFS.
    pub fn make_sysctls_read_only(&self) {
        self.set_sysctls_read_only(true);
    }

    /// `/proc/sys` read-only (`true`) or writable again.
    pub fn set_sysctls_read_only(&self, read_only: bool) {
        self.state().read_only = read_only;
    }

    /// Makes writes to sysctl `name` at `target` succeed without changing it (a
    /// value the kernel silently keeps).
    pub fn ignore_writes(&self, target: &Target, name: &str) {
        self.state()
            .ignored_writes
            .insert((target.clone(), name.to_owned()));
    }

    /// Runs `fault` once, right after the next write of sysctl `name` took (and
    /// before the write returns): a panic there is the process killed between
    /// the write and anything after it.
    pub fn after_next_write(&self, name: &str, fault: impl FnOnce(&Self) + Send + 'static) {
        self.after_write.set(name, fault);
    }

    /// Runs `fault` once, right before the next write of sysctl `name` (it
    /// then goes ahead): the process killed, or the node changed, between
    /// journaling a change and making it.
    pub fn before_next_write(&self, name: &str, fault: impl FnOnce(&Self) + Send + 'static) {
        self.before_write.set(name, fault);
    }

    /// Runs `action` once, right after the next read of sysctl `name` (before
    /// the read returns): another process acting between a read and what the
    /// reader does with it.
    pub fn after_next_read(&self, name: &str, action: impl FnOnce(&Self) + Send + 'static) {
        self.after_read.set(name, action);
    }

    /// How many `/proc/net` files were read so far.
    pub fn net_file_reads(&self) -> usize {
        self.state().net_file_reads
    }

    /// The value of sysctl `name` at `target`, if it exists.
    /// (A test's own look: no read hook fires.)
    pub fn sysctl(&self, target: &Target, name: &str) -> Option<String> {
        self.with_sysctls(target, |map| {
            map.get(name)
                .cloned()
                .ok_or_else(|| not_found(format!("sysctl {name}")))
        })
        .ok()
    }

    fn with_sysctls<R>(
        &self,
        target: &Target,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut state = self.state();
        match target {
            Target::Node => f(&mut state.node_sysctls),
            Target::Netns { inode, .. } => match state.namespaces.get_mut(inode) {
                Some(ns) => f(&mut ns.sysctls),
                None => Err(not_found(format!("network namespace {inode} is gone"))),
            },
        }
    }
}

impl System for FakeSystem {
    fn namespaces(&self) -> BTreeMap<u32, Namespace> {
        self.state().listings += 1;
        let gate = self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        self.state()
            .namespaces
            .iter()
            .map(|(inode, ns)| (*inode, ns.namespace.clone()))
            .collect()
    }

    fn read_net_files(&self, ns: &Namespace, files: &[&str]) -> Vec<io::Result<String>> {
        let mut state = self.state();
        state.net_file_reads += files.len();
        let found = state.namespaces.get(&ns.inode);
        files
            .iter()
            .map(|f| match found {
                None => Err(not_found(format!("network namespace {} is gone", ns.inode))),
                Some(n) => n
                    .net_files
                    .get(*f)
                    .cloned()
                    .ok_or_else(|| not_found(format!("/proc/net/{f}"))),
            })
            .collect()
    }

    fn host_links_changed(&self) -> bool {
        !std::mem::replace(&mut self.state().links_listed, true)
    }

    fn host_link_stats(&self) -> io::Result<BTreeMap<u32, LinkCounters>> {
        Ok(self.state().link_stats.clone())
    }

    fn host_links(&self) -> io::Result<Vec<Link>> {
        let state = self.state();
        match &state.host_links_error {
            Some(reason) => Err(io::Error::other(reason.clone())),
            None => Ok(state.host_links.clone()),
        }
    }

    fn netns_id(&self, ns: &Namespace) -> io::Result<Option<i32>> {
        self.state()
            .namespaces
            .get(&ns.inode)
            .map(|n| n.netns_id)
            .ok_or_else(|| not_found(format!("network namespace {} is gone", ns.inode)))
    }

    fn netns_identity(&self, inode: u32) -> io::Result<NamespaceIdentity> {
        self.identity_of(inode)
    }

    fn scan_listeners(&self, ns: &Namespace) -> io::Result<ListenerScan> {
        let mut state = self.state();
        state.listener_scans += 1;
        state
            .namespaces
            .get(&ns.inode)
            .map(|n| n.listeners.clone())
            .ok_or_else(|| not_found(format!("network namespace {} is gone", ns.inode)))
    }

    fn read_proc_link(&self, path: &str) -> io::Result<String> {
        self.state()
            .proc_links
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(format!("/proc/{path}")))
    }

    fn read_proc(&self, path: &str) -> io::Result<String> {
        self.state()
            .proc
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(format!("/proc/{path}")))
    }

    fn process_names(&self) -> std::collections::BTreeSet<String> {
        self.state().processes.clone()
    }

    fn socket_owners(
        &self,
        _netns: u32,
        inodes: &std::collections::BTreeSet<u32>,
    ) -> BTreeMap<u32, String> {
        let state = self.state();
        inodes
            .iter()
            .filter_map(|i| Some((*i, state.socket_owners.get(i)?.clone())))
            .collect()
    }

    fn pinned_bpf(&self, dir: &str) -> std::collections::BTreeSet<String> {
        self.state().pinned.get(dir).cloned().unwrap_or_default()
    }

    fn nftables_chains(&self) -> io::Result<Vec<super::nftables::Chain>> {
        Ok(self.state().nft_chains.clone())
    }

    fn cgroup_path(&self, id: u64) -> Option<String> {
        self.state().cgroups.get(&id).cloned()
    }

    fn namespace_file_inode(&self, path: &Path) -> io::Result<u32> {
        self.state()
            .namespaces
            .values()
            .find(|n| n.namespace.access == NamespaceAccess::Path(path.to_path_buf()))
            .map(|n| n.namespace.inode)
            .ok_or_else(|| not_found(format!("{} is not a namespace", path.display())))
    }

    fn read_sysctl(&self, target: &Target, name: &str) -> io::Result<String> {
        let value = self.with_sysctls(target, |map| {
            map.get(name)
                .map(|v| format!("{v}\n"))
                .ok_or_else(|| not_found(format!("sysctl {name}")))
        });
        self.after_read.fire(name, self);
        value
    }

    fn page_size(&self) -> u64 {
        4096
    }

    fn sysctls_read_only(&self) -> bool {
        self.state().read_only
    }

    fn write_sysctl(
        &self,
        target: &Target,
        identity: Option<&NamespaceIdentity>,
        name: &str,
        value: &str,
    ) -> io::Result<String> {
        self.before_write.fire(name, self);
        if self.state().read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        if let (Target::Netns { inode, .. }, Some(expected)) = (target, identity)
            && expected.judge(&self.netns_identity(*inode)?) != Sameness::Same
        {
            return Err(not_found(format!(
                "network namespace {inode} is not proven the one journaled: nothing written"
            )));
        }
        let ignored = self
            .state()
            .ignored_writes
            .contains(&(target.clone(), name.to_owned()));
        // What the namespace holds after the write is what the read-back there
        // sees (the real write holds the namespace open until then).
        let kept = self.with_sysctls(target, |map| {
            let slot = map
                .get_mut(name)
                .ok_or_else(|| not_found(format!("sysctl {name}")))?;
            // An empty write issues no write(2): the kernel keeps the value.
            if !ignored && !value.is_empty() {
                *slot = kernel_rounding(name, value.trim_end_matches('\n'));
            }
            Ok(slot.clone())
        })?;
        self.after_write.fire(name, self);
        Ok(format!("{kept}\n"))
    }
}
