//! The TCP retransmit signal: per-netns retransmitted skbs, segments and failures.
//!
//! Chain: `tp_btf/tcp_retransmit_skb`, then `tracepoint/tcp/tcp_retransmit_skb`.
//! Both need struct offsets from BTF (socket → netns); the classic one also needs
//! the record layout from tracefs.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{MapError, PerCpuHashMap},
    programs::{BtfTracePoint, TracePoint},
};
use nettune_common::{RetransmitCounters, retransmit::RETRANSMITS_MAP};

use super::{Attempt, Env, LoadError, Probes, SignalStatus, Variant, attach_chain};

/// Signal name in reports and metrics.
pub const SIGNAL: &str = "tcp_retransmit";

const CHAIN: [(Variant, Attempt); 2] = [
    (Variant::TpBtf, attach_tp_btf),
    (Variant::Tracepoint, attach_tracepoint),
];

pub(super) fn attach(ebpf: &mut Ebpf, env: &Env) -> SignalStatus {
    attach_chain(ebpf, env, SIGNAL, &CHAIN)
}

fn need_struct_offsets(env: &Env) -> Result<(), String> {
    match &env.layout.btf_problem {
        Some(problem) => Err(format!("needs kernel struct offsets from BTF: {problem}")),
        None => Ok(()),
    }
}

fn attach_tp_btf(ebpf: &mut Ebpf, env: &Env) -> Result<(), String> {
    need_struct_offsets(env)?;
    let btf = env.aya_btf.as_ref().map_err(Clone::clone)?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut("tcp_retransmit_skb_btf")
        .ok_or("program missing from object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program
        .load("tcp_retransmit_skb", btf)
        .map_err(|e| format!("load: {}", super_error(&e)))?;
    program
        .attach()
        .map_err(|e| format!("attach: {}", super_error(&e)))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, env: &Env) -> Result<(), String> {
    need_struct_offsets(env)?;
    env.tracefs.as_ref().map_err(Clone::clone)?;
    if let Some(problem) = &env.layout.tracefs_problem {
        return Err(format!("needs the tracepoint's record layout: {problem}"));
    }
    let program: &mut TracePoint = ebpf
        .program_mut("tcp_retransmit_skb_tp")
        .ok_or("program missing from object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program
        .load()
        .map_err(|e| format!("load: {}", super_error(&e)))?;
    program
        .attach("tcp", "tcp_retransmit_skb")
        .map_err(|e| format!("attach: {}", super_error(&e)))?;
    Ok(())
}

/// An error with its causes, on one line (aya's errors nest the errno).
fn super_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Probes {
    /// Retransmit counters per netns inode, summed over CPUs.
    pub fn retransmits(&self) -> Result<BTreeMap<u32, RetransmitCounters>, LoadError> {
        let map_err = |e| LoadError::Map {
            name: RETRANSMITS_MAP,
            source: Box::new(e),
        };
        let map = self.ebpf.map(RETRANSMITS_MAP).ok_or_else(|| {
            map_err(MapError::InvalidName {
                name: RETRANSMITS_MAP.to_owned(),
            })
        })?;
        let map: PerCpuHashMap<_, u32, RetransmitCounters> =
            PerCpuHashMap::try_from(map).map_err(map_err)?;
        let mut out = BTreeMap::new();
        for entry in map.iter() {
            // An entry evicted between listing keys and reading it is not an error.
            let Ok((netns, per_cpu)) = entry else {
                continue;
            };
            let total = per_cpu
                .iter()
                .fold(RetransmitCounters::default(), |acc, c| {
                    acc.saturating_add(*c)
                });
            out.insert(netns, total);
        }
        Ok(out)
    }
}
