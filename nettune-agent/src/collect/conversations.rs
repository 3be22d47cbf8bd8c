//! Conversations between ticks: the DNS queries and TCP handshakes that stayed
//! unanswered past their timeout and the handshakes refused, taken out of the
//! kernel's maps each tick and counted per interface, per DNS server and per
//! remote address. The kernel side sees answers only; what never came is
//! counted here. The counts of an interface go with it; a remote's go when
//! room is needed for a new one and it is the one updated longest ago.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

use crate::{
    model::sample::{DnsServerSample, RemoteSample, Sample},
    probes::{ProbeReadings, Taken},
};

/// Remote addresses (and DNS servers) whose failures are kept at most.
pub const MAX_REMOTES: usize = 1024;

/// What stayed unanswered or was refused, so far.
#[derive(Debug, Default)]
pub struct ConversationTracker {
    dns_unanswered: BTreeMap<u32, u64>,
    connects_timed_out: BTreeMap<u32, u64>,
    server_unanswered: BTreeMap<IpAddr, u64>,
    /// Remote → its counts and the take that last changed them.
    remotes: BTreeMap<SocketAddr, (RemoteSample, u64)>,
    takes: u64,
}

/// An address as the programs key it (IPv6, IPv4 mapped), as people read it.
pub fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

impl ConversationTracker {
    /// Counts what one tick took out of the maps.
    pub fn count(&mut self, taken: &Taken) {
        self.takes += 1;
        for q in &taken.dns {
            *self.dns_unanswered.entry(q.ifindex).or_default() += 1;
            let server = ip_of(q.server);
            // Servers are few (the cluster's DNS, a node-local cache); bounded all the same.
            if self.server_unanswered.len() < MAX_REMOTES
                || self.server_unanswered.contains_key(&server)
            {
                *self.server_unanswered.entry(server).or_default() += 1;
            }
        }
        for h in &taken.handshakes {
            *self.connects_timed_out.entry(h.ifindex).or_default() += 1;
            self.remote(SocketAddr::new(ip_of(h.remote), h.remote_port))
                .timed_out += 1;
        }
        for (remote, n) in &taken.refused {
            self.remote(SocketAddr::new(ip_of(remote.addr), remote.port))
                .refused += n;
        }
    }

    /// `remote`'s counts, made room for if new.
    fn remote(&mut self, remote: SocketAddr) -> &mut RemoteSample {
        if !self.remotes.contains_key(&remote) && self.remotes.len() >= MAX_REMOTES {
            let stalest = self
                .remotes
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(r, _)| *r);
            if let Some(r) = stalest {
                self.remotes.remove(&r);
            }
        }
        let entry = self.remotes.entry(remote).or_default();
        entry.1 = self.takes;
        &mut entry.0
    }

    /// Forgets the interfaces not in `present`.
    pub fn keep_interfaces(&mut self, present: &BTreeSet<u32>) {
        self.dns_unanswered.retain(|i, _| present.contains(i));
        self.connects_timed_out.retain(|i, _| present.contains(i));
    }

    /// Fills the Sample's interfaces (those it has), DNS servers and remotes
    /// from the programs' counters and what was counted here.
    pub fn fill(&self, sample: &mut Sample, readings: &ProbeReadings) {
        for (ifindex, (_, conversations)) in &readings.conversations {
            if let Some(iface) = sample.interfaces.get_mut(ifindex) {
                iface.conversations = Some(*conversations);
            }
        }
        for (ifindex, iface) in &mut sample.interfaces {
            iface.dns_unanswered = self.dns_unanswered.get(ifindex).copied().unwrap_or(0);
            iface.connects_timed_out = self.connects_timed_out.get(ifindex).copied().unwrap_or(0);
        }
        sample.dns_servers = readings
            .dns_servers
            .iter()
            .map(|(addr, counters)| {
                let ip = ip_of(*addr);
                let unanswered = self.server_unanswered.get(&ip).copied().unwrap_or(0);
                let server = DnsServerSample {
                    counters: *counters,
                    unanswered,
                };
                (ip, server)
            })
            .collect();
        sample.remotes = self.remotes.iter().map(|(r, (s, _))| (*r, *s)).collect();
    }
}

#[cfg(test)]
mod tests {
    use nettune_common::{DnsQueryKey, HandshakeKey, Remote};

    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[10] = 0xff;
        out[11] = 0xff;
        out[12..].copy_from_slice(&a);
        out
    }

    #[test]
    fn what_expired_is_counted_per_interface_server_and_remote() {
        let mut t = ConversationTracker::default();
        let dns = DnsQueryKey {
            ifindex: 7,
            pod_port: 40000,
            id: 1,
            server: v4([10, 96, 0, 10]),
        };
        let syn = HandshakeKey {
            ifindex: 7,
            local_port: 40001,
            remote_port: 443,
            remote: v4([10, 96, 1, 1]),
        };
        let refused = Remote {
            addr: v4([10, 96, 1, 1]),
            port: 443,
            _pad: 0,
        };
        t.count(&Taken {
            dns: vec![dns, DnsQueryKey { id: 2, ..dns }],
            handshakes: vec![syn],
            refused: [(refused, 3)].into(),
        });
        assert_eq!(t.dns_unanswered[&7], 2);
        assert_eq!(
            t.server_unanswered[&"10.96.0.10".parse::<IpAddr>().unwrap()],
            2
        );
        let remote = t.remotes[&"10.96.1.1:443".parse::<SocketAddr>().unwrap()].0;
        assert_eq!((remote.timed_out, remote.refused), (1, 3));
        t.keep_interfaces(&BTreeSet::new());
        assert!(t.dns_unanswered.is_empty() && t.connects_timed_out.is_empty());
        assert_eq!(ip_of([0; 16]), "::".parse::<IpAddr>().unwrap());
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    #[test]
    fn a_new_remote_beyond_the_bound_replaces_the_one_updated_longest_ago() {
        let mut t = ConversationTracker::default();
        let remote = |i: usize| SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 80));
        for i in 0..MAX_REMOTES {
            t.takes += 1;
            t.remote(remote(i)).refused += 1;
        }
        t.takes += 1;
        t.remote(remote(0)).refused += 1;
        t.takes += 1;
        t.remote(remote(MAX_REMOTES)).refused += 1;
        assert_eq!(t.remotes.len(), MAX_REMOTES);
        assert!(t.remotes.contains_key(&remote(0)), "updated lately: kept");
        assert!(!t.remotes.contains_key(&remote(1)), "the stalest: replaced");
        assert!(t.remotes.contains_key(&remote(MAX_REMOTES)));
    }
}
