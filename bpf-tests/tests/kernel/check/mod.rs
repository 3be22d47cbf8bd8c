//! `nettune check` between two pod-like namespaces routed through the host,
//! against real servers the test starts in the server's namespace — `iperf3 -s`,
//! dnsmasq, a small HTTP server — and compared with the same tools run by hand
//! from the client's namespace in the same test: iperf3's own JSON, dnsperf and
//! dig, and `ab`.
//!
//! Tolerances (a 2-core machine shared with other work; each pair of figures is
//! measured back to back, not at once):
//! - throughput through nettune's iperf3 run: within a factor of [`IPERF_FACTOR`]
//!   of iperf3's by hand; the built-in stream within [`BUILTIN_FACTOR`];
//! - DNS: the mean lookup time within [`DNS_MEAN_MS`] ms of dnsperf's (one query
//!   outstanding, as nettune sends them), the same count of answers, and every
//!   lookup of a name dnsmasq does not know is the NXDOMAIN dig shows;
//! - HTTP: requests per second and the mean request time within a factor of
//!   [`HTTP_FACTOR`] of ab's (same -n and -c), the same count of failures and of
//!   non-2xx responses;
//! - connect: the median within 1 ms of ab's median connect time (ab counts
//!   whole milliseconds);
//! - ICMP echo: the mean round trip within [`PING_MEAN_MS`] ms of `ping`'s, every
//!   request answered both ways.

mod peers;
mod runs;
mod setup;

/// Bounds every run of `check` in these tests must meet: no failure at all.
const NO_FAILURES: &[&str] = &[
    "--max-dns-failures",
    "0",
    "--max-http-errors",
    "0",
    "--max-connect-failures",
    "0",
];

use peers::{compare_http, compare_throughput};
use setup::*;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    bench::{pods::Pods, process::Spawned},
    containerd::{Containerd, Pod, PodSpec, require_containers},
    harness::{Outcome, Test, TestResult, require_root},
    host::TempDir,
    netns::Netns,
};
use serde_json::Value;

use bpf_tests::dns::Dnsmasq;

use crate::{agent::nettune_bin, conversations::DnsperfReport};

pub const TESTS: &[Test] = &[
    Test {
        name: "check::figures_match_iperf3_dnsperf_dig_and_ab_run_by_hand",
        run: peers::figures_match_iperf3_dnsperf_dig_and_ab_run_by_hand,
    },
    Test {
        name: "check::compare_across_an_apply_shows_the_sysctls_it_wrote",
        run: runs::compare_across_an_apply_shows_the_sysctls_it_wrote,
    },
    Test {
        name: "check::on_a_terminal_a_progress_line_runs_until_the_table_replaces_it",
        run: runs::on_a_terminal_a_progress_line_runs_until_the_table_replaces_it,
    },
    Test {
        name: "check::between_runtime_pods_named_by_cri_the_figures_match_iperf3_and_ab",
        run: runs::between_runtime_pods_named_by_cri_the_figures_match_iperf3_and_ab,
    },
];

/// nettune's iperf3 figure may differ from iperf3's by hand by this factor.
const IPERF_FACTOR: f64 = 2.0;
/// The built-in stream's figure may differ from iperf3's by hand by this factor.
const BUILTIN_FACTOR: f64 = 4.0;
/// nettune's mean DNS lookup time may differ from dnsperf's by this many ms.
const DNS_MEAN_MS: f64 = 1.0;
/// nettune's mean ICMP round trip may differ from ping's by this many ms.
const PING_MEAN_MS: f64 = 1.0;
/// nettune's HTTP rate and mean time may differ from ab's by this factor.
const HTTP_FACTOR: f64 = 3.0;

const IPERF_PORT: &str = "5231";
const HTTP_PORT: u16 = 8089;

/// The client and the server: pod-like namespaces, or pods of a real containerd.
enum Peers {
    Namespaces(Pods),
    Runtime(Box<RuntimePods>),
}
