//! Builds the eBPF object (nettune-ebpf) with the pinned nightly into OUT_DIR, where
//! `probes` embeds it with `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    xtask::build_ebpf_crate("nettune-ebpf", "nettune-ebpf")
}
