//! nettune's kernel tests: real programs in this kernel, real traffic in test
//! namespaces, compared with the kernel's own counters. Run as root with
//! `cargo xtask test` (or `cargo test -p bpf-tests --test kernel [FILTER]`).
//!
//! One module per signal, paired by name with the program in `nettune-ebpf/src/`.

mod agent;
mod connect;
mod conntrack;
mod deploy;
mod drops;
mod exporter;
mod listen;
mod pods;
mod probes;
mod retransmit;
mod top;
mod traffic;
mod tuning;

fn main() {
    let tests: Vec<bpf_tests::harness::Test> = [
        agent::TESTS,
        retransmit::TESTS,
        drops::TESTS,
        listen::TESTS,
        conntrack::TESTS,
        connect::TESTS,
        traffic::TESTS,
        pods::TESTS,
        probes::TESTS,
        exporter::TESTS,
        tuning::TESTS,
        top::TESTS,
        deploy::TESTS,
    ]
    .concat();
    bpf_tests::harness::main(&tests);
}
