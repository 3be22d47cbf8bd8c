//! nettune's kernel tests: real programs in this kernel, real traffic in test
//! namespaces, compared with the kernel's own counters. Run as root with
//! `cargo xtask test` (or `cargo test -p bpf-tests --test kernel [FILTER]`).
//!
//! One module per signal, paired by name with the program in `nettune-ebpf/src/`.

mod agent;
mod budget;
mod check;
mod connect;
mod conntrack;
mod context;
mod conversations;
mod deploy;
mod drops;
mod exporter;
mod listen;
mod netns;
mod pods;
mod probes;
mod retransmit;
mod sysctl_writers;
mod top;
mod top_cluster;
mod tuning;

fn main() {
    let tests: Vec<bpf_tests::harness::Test> = [
        agent::TESTS,
        retransmit::TESTS,
        drops::TESTS,
        budget::TESTS,
        listen::TESTS,
        conntrack::TESTS,
        netns::TESTS,
        connect::TESTS,
        conversations::TESTS,
        context::TESTS,
        pods::TESTS,
        probes::TESTS,
        sysctl_writers::TESTS,
        exporter::TESTS,
        tuning::TESTS,
        top::TESTS,
        top_cluster::TESTS,
        deploy::TESTS,
        check::TESTS,
    ]
    .concat();
    bpf_tests::harness::main(&tests);
}
