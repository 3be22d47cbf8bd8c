//! How the fake names a namespace: by cookie, as Linux 5.14+ does, or — after
//! [`FakeSystem::without_cookies`] — by the marks older kernels leave, its
//! lowest process (pid and start time) and its `/run/netns` name, which come
//! and go with the namespace's users.

use std::io;

use super::{FakeSystem, not_found};
use crate::{
    model::tuning::{NamespaceIdentity, ProcessStamp},
    sys::NamespaceAccess,
};

impl FakeSystem {
    /// Makes the node a kernel without namespace cookies (before 5.14).
    pub fn without_cookies(&self) {
        self.state().no_cookies = true;
    }

    /// The last process of namespace `inode` exits: a named one lives on
    /// through its `/run/netns` mount, a nameless one goes.
    pub fn last_process_exits(&self, inode: u32) {
        let mut state = self.state();
        let Some(ns) = state.namespaces.get_mut(&inode) else {
            return;
        };
        match ns.namespace.name.clone() {
            Some(name) => {
                ns.namespace.access = NamespaceAccess::Path(format!("/run/netns/{name}").into());
                ns.namespace.process = None;
            }
            None => {
                state.namespaces.remove(&inode);
            }
        }
    }

    /// Process `pid` starts in namespace `inode` (the lowest pid there now).
    pub fn process_enters(&self, inode: u32, pid: u32) {
        if let Some(ns) = self.state().namespaces.get_mut(&inode) {
            ns.namespace.access = NamespaceAccess::Pid(pid);
            ns.namespace.process = Some(format!("proc{pid}"));
        }
    }

    /// What the kernel would show of namespace `inode` now.
    pub(super) fn identity_of(&self, inode: u32) -> io::Result<NamespaceIdentity> {
        let state = self.state();
        let ns = state
            .namespaces
            .get(&inode)
            .ok_or_else(|| not_found(format!("network namespace {inode} is gone")))?;
        if !state.no_cookies {
            return Ok(NamespaceIdentity {
                cookie: Some(ns.cookie),
                ..NamespaceIdentity::default()
            });
        }
        Ok(NamespaceIdentity {
            cookie: None,
            // Each namespace added is made with a process of its own, started
            // at the tick its cookie would have numbered.
            process: ns.namespace.pid().map(|pid| ProcessStamp {
                pid,
                start_time: ns.cookie * 100 + u64::from(pid),
            }),
            name: ns.namespace.name.clone(),
        })
    }
}
