//! An in-memory [`System`]: namespaces, their `/proc/net` files, host interfaces
//! and sysctls, all set by a test.
//!
//! It behaves like the kernel where tests depend on it: a sysctl that does not
//! exist cannot be written, a namespace that is gone cannot be entered, a write
//! of nothing (0 bytes, as `fs::write(path, "")` issues) leaves a sysctl's value
//! as it was — exactly what `/proc/sys` does — and a namespace added again with
//! the same inode gets a new cookie, as a new kernel namespace would.

use std::{
    collections::BTreeMap,
    io,
    sync::{Mutex, MutexGuard},
};

use super::{Link, ListenerScan, Namespace, NamespaceAccess, System};
use crate::model::tuning::{NamespaceIdentity, Target};

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

#[derive(Debug)]
struct State {
    namespaces: BTreeMap<u32, FakeNamespace>,
    host_links: Result<Vec<Link>, String>,
    proc: BTreeMap<String, String>,
    node_sysctls: BTreeMap<String, String>,
    proc_links: BTreeMap<String, String>,
    cookies_given: u64,
    listener_scans: u64,
    links_changed: bool,
    listings: u64,
    read_only: bool,
    ignored_writes: std::collections::BTreeSet<(Target, String)>,
    net_file_reads: usize,
}

impl Default for State {
    fn default() -> Self {
        Self {
            namespaces: BTreeMap::new(),
            host_links: Ok(Vec::new()),
            proc: BTreeMap::new(),
            node_sysctls: BTreeMap::new(),
            proc_links: BTreeMap::new(),
            cookies_given: 0,
            listener_scans: 0,
            links_changed: true,
            listings: 0,
            read_only: false,
            ignored_writes: std::collections::BTreeSet::new(),
            net_file_reads: 0,
        }
    }
}

/// A node made of data. Every method takes `&self` (the trait's reads and writes
/// do too), so a test can change the node while a collector or tuner holds it.
#[derive(Debug, Default)]
pub struct FakeSystem {
    state: Mutex<State>,
    /// When set, the next namespace listing waits for a message (or a hang-up).
    gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

fn not_found(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, what)
}

impl FakeSystem {
    /// An empty node: no namespaces, no interfaces, no files.
    pub fn new() -> Self {
        Self::default()
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

    /// Sets the host namespace's interfaces.
    pub fn set_host_links(&self, links: Vec<Link>) {
        let mut state = self.state();
        state.host_links = Ok(links);
        state.links_changed = true;
    }

    /// Makes listing the host's interfaces fail with `reason`.
    pub fn fail_host_links(&self, reason: &str) {
        let mut state = self.state();
        state.host_links = Err(reason.to_owned());
        state.links_changed = true;
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
        self.state().read_only = true;
    }

    /// Makes writes to sysctl `name` at `target` succeed without changing it (a
    /// value the kernel silently keeps).
    pub fn ignore_writes(&self, target: &Target, name: &str) {
        self.state()
            .ignored_writes
            .insert((target.clone(), name.to_owned()));
    }

    /// How many `/proc/net` files were read so far.
    pub fn net_file_reads(&self) -> usize {
        self.state().net_file_reads
    }

    /// The value of sysctl `name` at `target`, if it exists.
    pub fn sysctl(&self, target: &Target, name: &str) -> Option<String> {
        self.read_sysctl(target, name)
            .ok()
            .map(|v| v.trim_end_matches('\n').to_owned())
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
        std::mem::replace(&mut self.state().links_changed, false)
    }

    fn host_links(&self) -> io::Result<Vec<Link>> {
        self.state().host_links.clone().map_err(io::Error::other)
    }

    fn netns_id(&self, ns: &Namespace) -> io::Result<Option<i32>> {
        self.state()
            .namespaces
            .get(&ns.inode)
            .map(|n| n.netns_id)
            .ok_or_else(|| not_found(format!("network namespace {} is gone", ns.inode)))
    }

    fn netns_identity(&self, inode: u32) -> io::Result<NamespaceIdentity> {
        self.state()
            .namespaces
            .get(&inode)
            .map(|n| NamespaceIdentity::Cookie(n.cookie))
            .ok_or_else(|| not_found(format!("network namespace {inode} is gone")))
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

    fn read_sysctl(&self, target: &Target, name: &str) -> io::Result<String> {
        self.with_sysctls(target, |map| {
            map.get(name)
                .map(|v| format!("{v}\n"))
                .ok_or_else(|| not_found(format!("sysctl {name}")))
        })
    }

    fn sysctls_read_only(&self) -> bool {
        self.state().read_only
    }

    fn write_sysctl(&self, target: &Target, name: &str, value: &str) -> io::Result<()> {
        if self.state().read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        if self
            .state()
            .ignored_writes
            .contains(&(target.clone(), name.to_owned()))
        {
            return Ok(());
        }
        self.with_sysctls(target, |map| {
            let slot = map
                .get_mut(name)
                .ok_or_else(|| not_found(format!("sysctl {name}")))?;
            // An empty write issues no write(2): the kernel keeps the value.
            if !value.is_empty() {
                *slot = value.trim_end_matches('\n').to_owned();
            }
            Ok(())
        })
    }
}
