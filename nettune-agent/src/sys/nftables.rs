//! The chains of the calling thread's network namespace's nftables ruleset,
//! through nfnetlink (`NFT_MSG_GETCHAIN`, a dump): which table of which family
//! each chain is in. Enough to tell what a Service proxy left — kube-proxy's
//! nftables mode its `kube-proxy` tables, its iptables mode (through
//! iptables-nft) a `KUBE-SERVICES` chain in the `nat` table — without running
//! `nft`, and without reading a rule.

use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::netlink::request_on;

/// `NFNL_SUBSYS_NFTABLES` (`linux/netfilter/nfnetlink.h`).
const SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_GETCHAIN` (`linux/netfilter/nf_tables.h`).
const MSG_GETCHAIN: u16 = 4;
/// `NFTA_CHAIN_TABLE`, `NFTA_CHAIN_NAME`.
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
/// The attribute type without the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One chain: its table's family (`NFPROTO_*`: 1 inet, 2 ip, 10 ip6, …), its
/// table and its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Chain {
    /// `NFPROTO_*` of its table.
    pub family: u8,
    /// Its table.
    pub table: String,
    /// Its name.
    pub chain: String,
}

impl Chain {
    /// The family as `nft` names it (`ip`, `ip6`, `inet`, …).
    pub fn family_name(&self) -> &'static str {
        match self.family {
            1 => "inet",
            2 => "ip",
            3 => "arp",
            5 => "netdev",
            7 => "bridge",
            10 => "ip6",
            _ => "unknown",
        }
    }
}

/// The request (a `nfgenmsg` for every family) and each reply (a chain).
#[derive(Debug)]
enum ChainMessage {
    Dump,
    Chain(Chain),
}

#[derive(Debug, thiserror::Error)]
#[error("not an nftables chain message: {0}")]
struct Malformed(&'static str);

impl NetlinkSerializable for ChainMessage {
    fn message_type(&self) -> u16 {
        (SUBSYS_NFTABLES << 8) | MSG_GETCHAIN
    }

    fn buffer_len(&self) -> usize {
        4
    }

    fn serialize(&self, buffer: &mut [u8]) {
        // nfgenmsg: family NFPROTO_UNSPEC (all), version NFNETLINK_V0, res_id 0.
        buffer[..4].fill(0);
    }
}

impl NetlinkDeserializable for ChainMessage {
    type Error = Malformed;

    fn deserialize(_header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        let (&family, mut rest) = payload.split_first().ok_or(Malformed("no nfgenmsg"))?;
        rest = rest.get(3..).ok_or(Malformed("short nfgenmsg"))?;
        let mut chain = Chain {
            family,
            ..Chain::default()
        };
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
            let value = rest
                .get(4..len)
                .ok_or(Malformed("attribute past the end"))?;
            let text = || {
                let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                String::from_utf8_lossy(&value[..end]).into_owned()
            };
            match kind {
                CHAIN_TABLE => chain.table = text(),
                CHAIN_NAME => chain.chain = text(),
                _ => {}
            }
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        }
        Ok(Self::Chain(chain))
    }
}

/// Every chain of the calling thread's namespace, in every family. A kernel
/// without nf_tables answers with an error (`EPROTONOSUPPORT` or `ENOENT`).
pub fn chains() -> io::Result<Vec<Chain>> {
    let replies = request_on(
        NETLINK_NETFILTER,
        ChainMessage::Dump,
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            ChainMessage::Chain(c) => Some(c),
            ChainMessage::Dump => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).unwrap();
        let mut a = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    #[test]
    fn a_chain_reply_gives_its_family_table_and_name() {
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(attribute(CHAIN_TABLE, b"nat\0"));
        payload.extend(attribute(2, &7u64.to_be_bytes()));
        payload.extend(attribute(CHAIN_NAME, b"KUBE-SERVICES\0"));
        let ChainMessage::Chain(chain) =
            ChainMessage::deserialize(&NetlinkHeader::default(), &payload).unwrap()
        else {
            panic!("not a chain");
        };
        assert_eq!(
            chain,
            Chain {
                family: 2,
                table: "nat".into(),
                chain: "KUBE-SERVICES".into()
            }
        );
        assert_eq!(chain.family_name(), "ip");
        assert!(ChainMessage::deserialize(&NetlinkHeader::default(), &[2, 0]).is_err());
        let mut bad = vec![2, 0, 0, 0];
        bad.extend([40, 0, 1, 0]);
        assert!(ChainMessage::deserialize(&NetlinkHeader::default(), &bad).is_err());
    }
}
