//! nettune's kernel tests: real programs in this kernel, real traffic in test
//! namespaces, compared with the kernel's own counters. Run as root with
//! `cargo xtask test` (or `cargo test -p bpf-tests --test kernel [FILTER]`).
//!
//! One module per signal, paired by name with the program in `nettune-ebpf/src/`.

mod agent;
mod drops;
mod retransmit;

fn main() {
    let tests: Vec<bpf_tests::harness::Test> =
        [agent::TESTS, retransmit::TESTS, drops::TESTS].concat();
    bpf_tests::harness::main(&tests);
}
