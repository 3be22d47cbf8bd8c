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

#[cfg(test)]
mod tests {
    use super::*;

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
