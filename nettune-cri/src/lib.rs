//! The container runtime's CRI v1 API (package `runtime.v1`) as far as nettune
//! uses it: prost messages and a tonic client ([`RuntimeServiceClient`]),
//! generated at build time from `proto/runtime/v1/cri.proto`, nettune's own
//! subset of the authoritative `api.proto` of k8s.io/cri-api, wire compatible
//! with it (same names, types and field numbers). The agent's blocking client
//! (`nettune::sys::cri::CriClient`) and the kernel tests' containerd both use
//! these types; nothing else writes a CRI message.
//!
//! A field is added in the `.proto` (see its header), never here.

#![warn(missing_docs)]

#[cfg(test)]
mod tests;

/// The generated code: every message, enum and the client.
#[expect(
    unused_qualifications,
    reason = "the client generator spells out `std::result::Result`"
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}

pub use generated::runtime_service_client::RuntimeServiceClient;
pub use generated::*;

impl PodSandboxStatus {
    /// Whether the pod uses the node's network namespace (`hostNetwork`).
    pub fn host_network(&self) -> bool {
        self.linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .is_some_and(|o| o.network() == NamespaceMode::Node)
    }

    /// Every IP of the pod, as the runtime reports them.
    pub fn ips(&self) -> Vec<String> {
        self.network
            .iter()
            .flat_map(|n| {
                std::iter::once(n.ip.clone()).chain(n.additional_ips.iter().map(|p| p.ip.clone()))
            })
            .filter(|ip| !ip.is_empty())
            .collect()
    }
}
