//! Per-interface traffic seen by tc programs on pods' host-side interfaces.
//!
//! One lookup per packet: the agent inserts an entry for each interface when it
//! attaches, and the programs only update existing entries (keyed by the host
//! netns ifindex, unique within that namespace).

/// `u32` ifindex → [`IfaceTraffic`], per-CPU hash.
pub const IFACE_TRAFFIC_MAP: &str = "IFACE_TRAFFIC";
/// Bound of [`IFACE_TRAFFIC_MAP`]: interfaces watched at once.
pub const MAX_IFACES: u32 = 4096;

/// Traffic through one host-side interface, from the host's point of view:
/// `ingress` is what the pod sent, `egress` what it received.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceTraffic {
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
    pub egress_packets: u64,
    pub egress_bytes: u64,
}

impl IfaceTraffic {
    /// Adds another CPU's counters, saturating.
    #[must_use]
    pub const fn saturating_add(self, o: Self) -> Self {
        Self {
            ingress_packets: self.ingress_packets.saturating_add(o.ingress_packets),
            ingress_bytes: self.ingress_bytes.saturating_add(o.ingress_bytes),
            egress_packets: self.egress_packets.saturating_add(o.egress_packets),
            egress_bytes: self.egress_bytes.saturating_add(o.egress_bytes),
        }
    }
}
