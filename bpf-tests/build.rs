//! Builds the test-only eBPF programs (bpf-tests/ebpf) into OUT_DIR.
fn main() -> anyhow::Result<()> {
    xtask::build_ebpf_crate("nettune-test-ebpf", "bpf-tests/ebpf")
}
