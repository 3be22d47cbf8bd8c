//! Kernel MIB counters from procfs: `net/snmp` and `net/netstat`.
//!
//! Both files are pairs of lines, a header naming the counters and a line of values,
//! each prefixed with the group (`Tcp:`, `TcpExt:`, ...). They are per network
//! namespace: `/proc/<pid>/net/snmp` shows the counters of `<pid>`'s netns, and
//! `/proc/thread-self/net/snmp` those of the calling thread's.

use std::{collections::HashMap, fs, path::Path};

/// Errors reading a MIB file.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: counter {group}:{name} not found")]
    Missing {
        path: String,
        group: String,
        name: String,
    },
}

/// Counters from one MIB file, by (group, name), e.g. ("Tcp", "RetransSegs").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mib {
    path: String,
    values: HashMap<(String, String), i64>,
}

impl Mib {
    /// Reads and parses a MIB file such as `/proc/<pid>/net/snmp`.
    pub fn read(path: &Path) -> Result<Self, ProcfsError> {
        let text = fs::read_to_string(path).map_err(|source| ProcfsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(&path.display().to_string(), &text))
    }

    /// Parses header/value line pairs. Lines that do not pair up are ignored.
    pub fn parse(path: &str, text: &str) -> Self {
        let mut values = HashMap::new();
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
                    values.insert((group.to_owned(), name.to_owned()), v);
                }
            }
        }
        Self {
            path: path.to_owned(),
            values,
        }
    }

    /// One counter, or an error naming it and the file.
    pub fn get(&self, group: &str, name: &str) -> Result<i64, ProcfsError> {
        self.values
            .get(&(group.to_owned(), name.to_owned()))
            .copied()
            .ok_or_else(|| ProcfsError::Missing {
                path: self.path.clone(),
                group: group.to_owned(),
                name: name.to_owned(),
            })
    }
}

/// `/proc/net/stat/nf_conntrack` of one namespace: a header and one row of hex
/// numbers per CPU. `entries` is the namespace's table size (the same in every
/// row); the event counters are per CPU and are summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConntrackStats {
    pub entries: u64,
    pub found: u64,
    pub insert: u64,
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub invalid: u64,
}

impl ConntrackStats {
    /// Parses the file; `None` if it has no header or no rows.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split_whitespace().collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (entries, found, insert, insert_failed, drop, early_drop, invalid) = (
            column("entries")?,
            column("found"),
            column("insert"),
            column("insert_failed"),
            column("drop"),
            column("early_drop"),
            column("invalid"),
        );
        let mut stats = Self::default();
        let mut rows = 0;
        for line in lines {
            let values: Vec<u64> = line
                .split_whitespace()
                .map(|v| u64::from_str_radix(v, 16))
                .collect::<Result<_, _>>()
                .ok()?;
            let at = |i: Option<usize>| i.and_then(|i| values.get(i)).copied().unwrap_or(0);
            stats.entries = at(Some(entries));
            stats.found += at(found);
            stats.insert += at(insert);
            stats.insert_failed += at(insert_failed);
            stats.drop += at(drop);
            stats.early_drop += at(early_drop);
            stats.invalid += at(invalid);
            rows += 1;
        }
        (rows > 0).then_some(stats)
    }
}

/// The TCP line of `/proc/net/sockstat`: sockets in use and in TIME_WAIT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpSockstat {
    pub inuse: u64,
    pub time_wait: u64,
}

impl TcpSockstat {
    /// Parses `TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 231`.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let get = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1)?.parse().ok())
        };
        Some(Self {
            inuse: get("inuse")?,
            time_wait: get("tw")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_stats_sum_cpus_and_keep_entries() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000000a  00000000 00000001 00000000 00000002 00000000 00000000 00000000 00000003 00000001 00000004 00000000 00000000  00000000 00000000 00000000 00000000
0000000a  00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000001 00000005 00000000  00000000 00000000 00000000 00000000
";
        let s = ConntrackStats::parse(text).unwrap();
        assert_eq!(s.entries, 10);
        assert_eq!((s.found, s.insert, s.insert_failed), (2, 5, 1));
        assert_eq!((s.drop, s.early_drop, s.invalid), (5, 5, 2));
        assert!(ConntrackStats::parse("entries\n").is_none());
        assert!(ConntrackStats::parse("entries found\nzz 1\n").is_none());
    }

    #[test]
    fn sockstat_tcp_line() {
        let text =
            "sockets: used 8\nTCP: inuse 3 orphan 0 tw 17 alloc 4 mem 231\nUDP: inuse 0 mem 0\n";
        assert_eq!(
            TcpSockstat::parse(text),
            Some(TcpSockstat {
                inuse: 3,
                time_wait: 17
            })
        );
        assert_eq!(TcpSockstat::parse("UDP: inuse 0\n"), None);
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
}
