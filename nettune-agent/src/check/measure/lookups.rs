//! DNS lookups against the target's resolver.

use crate::check::{
    dns::{self, Lookup},
    stats::Summary,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use super::*;

/// What the DNS test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    /// The nameserver asked.
    pub server: SocketAddr,
    /// Where it was read from (or `--dns-server`).
    pub resolv_conf: String,
    /// The name looked up.
    pub name: String,
    /// Lookups sent.
    pub queries: u64,
    /// Lookups without a NOERROR answer holding an address.
    pub failures: u64,
    /// Lookups never answered within the timeout.
    pub timeouts: u64,
    /// Answers by response code.
    pub rcodes: BTreeMap<String, u64>,
    /// Time to an answer, of those answered.
    pub latency_ms: Option<Summary>,
}

/// `count` lookups of `name` at `server`, one after the other.
pub fn dns_lookups(
    server: SocketAddr,
    source: &Path,
    name: &str,
    count: u64,
    timeout: Duration,
    budget: Duration,
    progress: &dyn Progress,
) -> anyhow::Result<Dns> {
    dns::encode_query(0, name)?;
    let started = Instant::now();
    let mut result = Dns {
        server,
        resolv_conf: source.display().to_string(),
        name: name.to_owned(),
        queries: 0,
        failures: 0,
        timeouts: 0,
        rcodes: BTreeMap::new(),
        latency_ms: None,
    };
    let mut times = Vec::new();
    // Ids start from the process id so two runs side by side do not share them.
    let mut id = std::process::id() as u16;
    while result.queries < count && started.elapsed() < budget {
        result.queries += 1;
        id = id.wrapping_add(1);
        let lookup = dns::lookup(server, name, id, timeout);
        if !lookup.succeeded() {
            result.failures += 1;
        }
        match lookup {
            Lookup::Answered { seconds, rcode, .. } => {
                times.push(seconds);
                *result.rcodes.entry(dns::rcode_name(rcode)).or_default() += 1;
            }
            Lookup::TimedOut => result.timeouts += 1,
            Lookup::Error(e) => {
                *result.rcodes.entry(format!("error: {e}")).or_default() += 1;
            }
        }
        progress.step("dns", result.queries, count);
    }
    result.latency_ms = Summary::of_seconds(&times);
    Ok(result)
}
