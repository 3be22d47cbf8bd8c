//! Parsers for the kernel's counter files under `/proc`: `net/snmp` and
//! `net/netstat` (MIB counters), `net/stat/nf_conntrack`, `net/sockstat` and
//! `net/softnet_stat`.
//!
//! Files under `/proc/net/` are per network namespace: `/proc/<pid>/net/snmp`
//! shows the counters of `<pid>`'s namespace, `/proc/thread-self/net/snmp` those of
//! the calling thread's. Reading is [`super::System`]'s job; this module only
//! parses text, so it is fuzzed and unit-tested without a kernel.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use crate::model::sample::{ConntrackCounters, ListenCounters, TcpSockets};

/// Errors looking up a MIB counter.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// The file has no such counter.
    #[error("{path}: counter {group}:{name} not found")]
    Missing {
        /// The file the counters came from.
        path: String,
        /// The group, e.g. `Tcp`.
        group: String,
        /// The counter, e.g. `RetransSegs`.
        name: String,
    },
}

/// Counters from one MIB file, by (group, name), e.g. ("Tcp", "RetransSegs").
///
/// Borrowed from the file's text and kept in file order: a namespace's
/// `netstat` and `snmp` are parsed every tick, and the few counters nettune
/// needs are found faster by a scan than through a map of owned keys (which
/// cost most of a tick's user time in the profile at 200 namespaces).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mib<'a> {
    path: &'a str,
    values: Vec<(&'a str, &'a str, i64)>,
}

impl<'a> Mib<'a> {
    /// Parses header/value line pairs (`Tcp: A B` then `Tcp: 1 2`); lines that do
    /// not pair up are ignored. `path` names the file in errors.
    pub fn parse(path: &'a str, text: &'a str) -> Self {
        let mut values = Vec::new();
        let mut lines = text.lines();
        while let (Some(header), Some(data)) = (lines.next(), lines.next()) {
            let (Some((group, names)), Some((data_group, numbers))) =
                (header.split_once(':'), data.split_once(':'))
            else {
                continue;
            };
            if group != data_group {
                continue;
            }
            for (name, number) in names.split_whitespace().zip(numbers.split_whitespace()) {
                if let Ok(v) = number.parse::<i64>() {
                    values.push((group, name, v));
                }
            }
        }
        Self { path, values }
    }

    /// One counter, or an error naming it and the file.
    pub fn get(&self, group: &str, name: &str) -> Result<i64, ProcfsError> {
        self.values
            .iter()
            .find(|(g, n, _)| *g == group && *n == name)
            .map(|(_, _, v)| *v)
            .ok_or_else(|| ProcfsError::Missing {
                path: self.path.to_owned(),
                group: group.to_owned(),
                name: name.to_owned(),
            })
    }

    /// One counter as an unsigned count; `None` when missing or negative.
    pub fn count(&self, group: &str, name: &str) -> Option<u64> {
        self.get(group, name)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
    }
}

/// The listen-queue counters of a namespace's `net/netstat`.
pub fn listen_counters(netstat: &Mib<'_>) -> ListenCounters {
    ListenCounters {
        overflows: netstat.count("TcpExt", "ListenOverflows").unwrap_or(0),
        drops: netstat.count("TcpExt", "ListenDrops").unwrap_or(0),
        syn_queue_full: netstat.count("TcpExt", "TCPReqQFullDrop").unwrap_or(0),
    }
}

/// Parses `net/stat/nf_conntrack`: a header and one row of hex numbers per CPU.
/// `entries` is the namespace's table size (the same in every row); the event
/// counters are per CPU and are summed. `None` without a header or rows.
pub fn conntrack(text: &str) -> Option<ConntrackCounters> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let entries = column("entries")?;
    let (insert_failed, drop, early_drop, clash_resolve) = (
        column("insert_failed"),
        column("drop"),
        column("early_drop"),
        column("clashres"),
    );
    // Named `chaintoolong` in the kernel's sources, `chainlength` in this file.
    let chain_too_long = column("chaintoolong").or_else(|| column("chainlength"));
    let mut stats = ConntrackCounters::default();
    let mut rows = 0;
    for line in lines {
        let values: Vec<u64> = line
            .split_whitespace()
            .map(|v| u64::from_str_radix(v, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        let at = |i: Option<usize>| i.and_then(|i| values.get(i)).copied().unwrap_or(0);
        stats.entries = at(Some(entries));
        stats.insert_failed = stats.insert_failed.saturating_add(at(insert_failed));
        stats.drop = stats.drop.saturating_add(at(drop));
        stats.early_drop = stats.early_drop.saturating_add(at(early_drop));
        stats.clash_resolve = stats.clash_resolve.saturating_add(at(clash_resolve));
        stats.chain_too_long = stats.chain_too_long.saturating_add(at(chain_too_long));
        rows += 1;
    }
    (rows > 0).then_some(stats)
}

/// Parses the TCP line of `net/sockstat`:
/// `TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 231`.
pub fn tcp_sockets(text: &str) -> Option<TcpSockets> {
    let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1)?.parse().ok())
    };
    Some(TcpSockets {
        in_use: get("inuse")?,
        time_wait: get("tw")?,
    })
}

/// Sum of the second column (dropped) of `net/softnet_stat`, one hex row per CPU.
pub fn softnet_dropped(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .fold(0, u64::saturating_add)
}

/// The start time (field 22, clock ticks since boot) in a `/proc/<pid>/stat`
/// line. The command (field 2) may hold spaces and parentheses: fields are
/// counted after its last `)`.
pub fn start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the command; field 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The IPv4 addresses local to a namespace, from its `net/fib_trie`: each leaf
/// (`|-- 10.244.77.2`) followed by a `/32 host LOCAL` entry.
pub fn local_ipv4(fib_trie: &str) -> BTreeSet<Ipv4Addr> {
    let mut leaf = None;
    let mut found = BTreeSet::new();
    for line in fib_trie.lines().map(str::trim) {
        if let Some(address) = line.strip_prefix("|-- ") {
            leaf = address.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(address) = leaf
        {
            found.insert(address);
        }
    }
    found
}

/// The IPv6 addresses of a namespace, from its `net/if_inet6` (one per line, 32
/// hex digits first).
pub fn ipv6_addresses(if_inet6: &str) -> BTreeSet<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|hex| hex.len() == 32)
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(Ipv6Addr::from)
        .collect()
}

/// Parses a single-number file such as `sys/net/netfilter/nf_conntrack_max`.
pub fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_stats_sum_cpus_and_keep_entries() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000000a  00000002 00000001 00000000 00000002 00000000 00000000 00000001 00000003 00000001 00000004 00000000 00000000  00000000 00000000 00000000 00000000
0000000a  00000001 00000001 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000001 00000005 00000000  00000000 00000000 00000000 00000000
";
        let s = conntrack(text).unwrap();
        assert_eq!(s.entries, 10);
        assert_eq!((s.insert_failed, s.drop, s.early_drop), (1, 5, 5));
        assert_eq!((s.clash_resolve, s.chain_too_long), (3, 1));
        assert!(conntrack("entries\n").is_none());
        assert!(conntrack("entries found\nzz 1\n").is_none());
    }

    #[test]
    fn sockstat_tcp_line() {
        let text =
            "sockets: used 8\nTCP: inuse 3 orphan 0 tw 17 alloc 4 mem 231\nUDP: inuse 0 mem 0\n";
        assert_eq!(
            tcp_sockets(text),
            Some(TcpSockets {
                in_use: 3,
                time_wait: 17
            })
        );
        assert_eq!(tcp_sockets("UDP: inuse 0\n"), None);
    }

    const SNMP: &str = "Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens RetransSegs
Tcp: 1 200 120000 -1 7 42
";

    #[test]
    fn reads_counters_by_group_and_name() {
        let mib = Mib::parse("snmp", SNMP);
        assert_eq!(mib.get("Tcp", "RetransSegs").unwrap(), 42);
        assert_eq!(mib.get("Tcp", "MaxConn").unwrap(), -1);
        assert_eq!(mib.count("Tcp", "MaxConn"), None);
        assert_eq!(mib.get("Ip", "DefaultTTL").unwrap(), 64);
    }

    #[test]
    fn a_missing_counter_names_file_group_and_counter() {
        let err = Mib::parse("/proc/1/net/snmp", SNMP)
            .get("Tcp", "Nope")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/proc/1/net/snmp: counter Tcp:Nope not found"
        );
    }

    #[test]
    fn mismatched_pairs_are_skipped() {
        let mib = Mib::parse("x", "Tcp: A B\nUdp: 1 2\nTcp: C\nTcp: 5\n");
        assert!(mib.get("Tcp", "A").is_err());
        assert_eq!(mib.get("Tcp", "C").unwrap(), 5);
    }

    #[test]
    fn start_time_counts_fields_after_the_command() {
        let stat =
            "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 50";
        assert_eq!(start_time(stat), Some(98765));
        assert_eq!(start_time("42 (x) S 1"), None);
    }

    #[test]
    fn local_addresses_come_from_fib_trie_and_if_inet6() {
        let fib_trie = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.244.77.0
        /24 link UNICAST
     |-- 10.244.77.2
        /32 host LOCAL
     |-- 10.244.77.255
        /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.244.77.2
        /32 host LOCAL
     |-- 127.0.0.1
        /32 host LOCAL
";
        let v4: Vec<String> = local_ipv4(fib_trie)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(v4, ["10.244.77.2", "127.0.0.1"]);
        let if_inet6 = "00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80     eth0
";
        let v6: Vec<String> = ipv6_addresses(if_inet6)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(v6, ["::1", "fe80::1"]);
        assert!(local_ipv4("").is_empty() && ipv6_addresses("junk\n").is_empty());
    }

    #[test]
    fn softnet_sums_the_dropped_column() {
        assert_eq!(
            softnet_dropped("00000010 00000002 00000000\n00000020 0000000a 00000001\n"),
            12
        );
    }
}
