//! Which architecture's kernel ABI the embedded eBPF object was built for.
//!
//! One object is built per target architecture (`xtask::build_ebpf_crate` passes
//! aya-ebpf `--cfg bpf_target_arch` from the agent's own target), and each
//! binary embeds the one of its architecture. The objects differ only where the
//! kernel ABI does: a kprobe reads its arguments from the saved registers,
//! `struct pt_regs` on x86-64 (`rdi`, `rsi`, `rdx`, …) and `struct
//! user_pt_regs` on aarch64 (`regs[0..7]`). BTF programs (tp_btf, fentry),
//! classic tracepoints (offsets read from tracefs), tc and cgroup programs are
//! the same bytes for both. No syscall tracepoint is attached.
//!
//! `KPROBE_ARG_OFFSETS` says where argument `n` lives in the context for the
//! architecture this crate is compiled for; the test below checks the embedded
//! object's kprobes against it, so an object built for the wrong architecture
//! (reading garbage registers) fails here rather than in a kernel. Test-only.

/// Byte offset of kprobe argument `n` (0-based) in the probe's context, for
/// this binary's architecture.
#[cfg(target_arch = "x86_64")]
const KPROBE_ARG_OFFSETS: [i16; 6] = {
    // struct pt_regs: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi …
    const REG: i16 = 8;
    [14 * REG, 13 * REG, 12 * REG, 11 * REG, 9 * REG, 8 * REG]
};

/// Byte offset of kprobe argument `n` (0-based) in the probe's context, for
/// this binary's architecture.
#[cfg(target_arch = "aarch64")]
const KPROBE_ARG_OFFSETS: [i16; 6] = [0, 8, 16, 24, 32, 40];

#[cfg(test)]
mod tests {
    use aya_obj::Object;

    use super::{super::OBJECT, KPROBE_ARG_OFFSETS};

    /// The context offset of the first 64-bit load from the context register
    /// (r1) before anything overwrites r1: where the program reads its argument.
    fn first_context_load(object: &Object, program: &str) -> Option<i16> {
        let function = object.functions.values().find(|f| f.name == program)?;
        const LDX_MEM_DW: u8 = 0x79;
        for insn in &function.instructions {
            if insn.code == LDX_MEM_DW && insn.src_reg() == 1 {
                return Some(insn.off);
            }
            if insn.dst_reg() == 1 {
                return None;
            }
        }
        None
    }

    #[test]
    fn the_embedded_kprobes_read_this_architectures_argument_registers() {
        let object = Object::parse(OBJECT).expect("the embedded object parses");
        // (program, argument it reads): see nettune-ebpf/src/listen.rs.
        for (program, argument) in [
            ("tcp_conn_request_kprobe", 2),
            ("tcp_syn_recv_sock_kprobe", 0),
        ] {
            assert_eq!(
                first_context_load(&object, program),
                Some(KPROBE_ARG_OFFSETS[argument]),
                "{program} should read argument {argument} at offset {} of this \
                 architecture's registers ({})",
                KPROBE_ARG_OFFSETS[argument],
                std::env::consts::ARCH
            );
        }
    }
}
