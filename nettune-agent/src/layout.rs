//! Resolving [`KernelOffsets`] for the running kernel.
//!
//! Struct offsets come from BTF; classic tracepoint record offsets from tracefs.
//! Each half can be missing independently: the result says which, so the probe
//! chain can skip exactly the variants that need the missing half, with the reason.

use nettune_common::{KernelOffsets, offsets::ABSENT};

use crate::{
    btf::{Btf, BtfError},
    tracefs::{Tracefs, TracefsError},
};

/// Offsets for this kernel, and why a part of them could not be resolved.
#[derive(Debug)]
pub struct Layout {
    pub offsets: KernelOffsets,
    /// Why struct offsets (from BTF) are unknown; programs that read kernel
    /// structs cannot run without them.
    pub btf_problem: Option<String>,
    /// Why classic tracepoint record offsets are unknown.
    pub tracefs_problem: Option<String>,
}

impl Layout {
    /// Resolves every offset it can from `btf` and `tracefs`.
    pub fn resolve(btf: Result<&Btf, &BtfError>, tracefs: Result<&Tracefs, &TracefsError>) -> Self {
        let mut offsets = KernelOffsets {
            tp_retransmit_err: ABSENT,
            ..KernelOffsets::default()
        };
        let btf_problem = match btf {
            Ok(btf) => struct_offsets(btf, &mut offsets)
                .err()
                .map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        let tracefs_problem = match tracefs {
            Ok(tracefs) => tracepoint_offsets(tracefs, &mut offsets)
                .err()
                .map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        Self {
            offsets,
            btf_problem,
            tracefs_problem,
        }
    }
}

fn struct_offsets(btf: &Btf, offsets: &mut KernelOffsets) -> Result<(), BtfError> {
    offsets.sock_net = btf.member_offset("sock", &["__sk_common", "skc_net", "net"])?;
    offsets.net_inum = btf.member_offset("net", &["ns", "inum"])?;
    offsets.skb_tcp_gso_segs = btf.member_offset("sk_buff", &["cb"])?
        + btf.member_offset("tcp_skb_cb", &["tcp_gso_segs"])?;
    offsets.tp_btf_retransmit_args = btf.tracepoint_arg_count("tcp_retransmit_skb")?;
    Ok(())
}

fn tracepoint_offsets(tracefs: &Tracefs, offsets: &mut KernelOffsets) -> Result<(), TracefsError> {
    let fields = tracefs.format("tcp", "tcp_retransmit_skb")?;
    let field = |name: &str| {
        fields
            .get(name)
            .map(|f| f.offset)
            .ok_or_else(|| TracefsError::NoField {
                event: "tcp/tcp_retransmit_skb".into(),
                field: name.into(),
            })
    };
    offsets.tp_retransmit_skaddr = field("skaddr")?;
    offsets.tp_retransmit_skbaddr = field("skbaddr")?;
    // `err` arrived in Linux 6.12; before, the event only fired on success.
    offsets.tp_retransmit_err = field("err").unwrap_or(ABSENT);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn missing_sources_are_reported_not_fatal() {
        let btf_err = Btf::from_file(Path::new("/nonexistent/btf")).err().unwrap();
        let tracefs = Tracefs::at("/nonexistent/tracefs");
        let layout = Layout::resolve(Err(&btf_err), Ok(&tracefs));
        assert!(layout.btf_problem.unwrap().contains("/nonexistent/btf"));
        assert!(
            layout
                .tracefs_problem
                .unwrap()
                .contains("cannot read tracepoint format")
        );
        assert_eq!(layout.offsets.tp_retransmit_err, ABSENT);
    }
}
