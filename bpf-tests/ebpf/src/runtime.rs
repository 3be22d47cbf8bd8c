//! What every test-only eBPF binary needs besides its program: a panic handler
//! (`no_std`) and the license section the kernel reads at load. Each binary
//! includes this file with `mod runtime;`.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: no panic path survives optimisation; the verifier rejects one that did.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
