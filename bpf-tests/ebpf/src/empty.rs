//! Test-only empty tc classifier: the reference a tc program's per-packet cost is
//! measured against (`cargo xtask bench`, section `kernel_cost`). It does nothing
//! but hand the packet on, so its `run_time_ns / run_cnt` is what the kernel's tc
//! hook, the program call and BPF statistics cost by themselves.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// `TC_ACT_UNSPEC` / `TCX_NEXT`: the next program sees the packet, as with nettune's.
const NEXT: i32 = -1;

#[classifier]
fn empty(_ctx: TcContext) -> i32 {
    NEXT
}
