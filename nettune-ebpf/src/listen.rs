//! Listeners: the backlog each `listen()` asked for, and accept-queue overflows per
//! listening socket.
//!
//! `syscalls/sys_enter_listen` records (process, descriptor) → (backlog, the
//! caller's namespace) for every `listen()` call on every kernel; the agent resolves the descriptor to the
//! socket and so knows what the application asked for, which `sock_diag` cannot
//! tell (it shows only `min(backlog, somaxconn)`).
//!
//! The kernel checks `sk_acceptq_is_full(listener)` in `tcp_conn_request` (a SYN
//! arrives) and in `tcp_v{4,6}_syn_recv_sock` (the handshake's last ACK arrives);
//! either way a full queue counts `ListenOverflows` and drops. Probing both
//! functions on entry with the same test sees each overflow with the listener's
//! port, queue length and limit. Variants: fentry (trampolines), then kprobe. Where
//! neither exists (this project's CI kernel), the agent uses each namespace's
//! `ListenOverflows` counter instead.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, kprobe, map, tracepoint},
    maps::{LruHashMap, PerCpuHashMap},
    programs::{FEntryContext, ProbeContext, TracePointContext},
};
use nettune_common::{
    EventKind, ListenCall, ListenKey, ListenOverflow, ListenRequest, ProbeError,
    listen::{MAX_LISTEN_CALLS, MAX_LISTENERS},
    offsets::ABSENT,
};

use crate::{counters, errors, events, kernel};

#[map]
static LISTEN_OVERFLOWS: PerCpuHashMap<ListenKey, ListenOverflow> =
    PerCpuHashMap::with_max_entries(MAX_LISTENERS, 0);

#[map]
static LISTEN_CALLS: LruHashMap<ListenCall, ListenRequest> =
    LruHashMap::with_max_entries(MAX_LISTEN_CALLS, 0);

#[tracepoint(category = "syscalls", name = "sys_enter_listen")]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    errors::check(&ctx, record_listen_call(&ctx));
    0
}

#[inline(always)]
fn record_listen_call(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    // SAFETY: offsets of `fd` and `backlog` from this kernel's format file
    // (syscall arguments are 8 bytes each).
    let (fd, backlog) = unsafe {
        (
            ctx.read_at::<u64>(off.tp_listen_fd as usize),
            ctx.read_at::<u64>(off.tp_listen_backlog as usize),
        )
    };
    let (Ok(fd), Ok(backlog)) = (fd, backlog) else {
        return Err(ProbeError::TracepointRead);
    };
    let call = ListenCall {
        // The upper half is the thread group id: the process.
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: fd as u32,
    };
    let request = ListenRequest {
        // The kernel compares `(unsigned int)backlog` with somaxconn: keep that.
        backlog: backlog as u32,
        // The calling thread's namespace (threads of one process may differ); 0
        // without BTF offsets, or for an exiting task: the agent then asks /proc.
        netns: if off.task_nsproxy == ABSENT {
            0
        } else {
            kernel::netns_of_current_task(off).unwrap_or(0)
        },
    };
    LISTEN_CALLS
        .insert(&call, &request, 0)
        .map_err(|_| ProbeError::MapUpdate)
}

// tcp_conn_request(rsk_ops, af_ops, sk, skb): the listener is argument 2.
#[fentry(function = "tcp_conn_request")]
pub fn tcp_conn_request_fentry(ctx: FEntryContext) -> i32 {
    errors::check(&ctx, check_listener(ctx.arg(2)));
    0
}

// tcp_v4_syn_recv_sock(sk, skb, req, dst, req_unhash, own_req): listener is argument 0.
#[fentry(function = "tcp_v4_syn_recv_sock")]
pub fn tcp_v4_syn_recv_sock_fentry(ctx: FEntryContext) -> i32 {
    errors::check(&ctx, check_listener(ctx.arg(0)));
    0
}

#[fentry(function = "tcp_v6_syn_recv_sock")]
pub fn tcp_v6_syn_recv_sock_fentry(ctx: FEntryContext) -> i32 {
    errors::check(&ctx, check_listener(ctx.arg(0)));
    0
}

#[kprobe]
pub fn tcp_conn_request_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(2) {
        errors::check(&ctx, check_listener(sk));
    }
    0
}

#[kprobe]
pub fn tcp_syn_recv_sock_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        errors::check(&ctx, check_listener(sk));
    }
    0
}

#[inline(always)]
fn check_listener(sk: *const u8) -> Result<(), ProbeError> {
    let off = kernel::offsets();
    let backlog: u32 = kernel::read(sk, off.sock_ack_backlog)?;
    let max_backlog: u32 = kernel::read(sk, off.sock_max_ack_backlog)?;
    // sk_acceptq_is_full(): the kernel's own test.
    if backlog <= max_backlog {
        return Ok(());
    }
    let netns = kernel::netns_of_sock::<kernel::ProbeRead>(sk, off)?;
    let port: u16 = kernel::read(sk, off.sock_num)?;
    let key = ListenKey {
        netns,
        port,
        _pad: 0,
    };
    let stats = counters::entry(&LISTEN_OVERFLOWS, &key, &ListenOverflow::default())?;
    // SAFETY: this CPU's value of a per-CPU map entry; no other writer runs here.
    let stats = unsafe { &mut *stats };
    stats.overflows += 1;
    stats.backlog = backlog;
    stats.max_backlog = max_backlog;
    events::emit(EventKind::ListenOverflow, netns, 0, u32::from(port));
    Ok(())
}
