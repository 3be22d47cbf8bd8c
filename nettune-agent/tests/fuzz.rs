//! Every parser of outside input, fed generated input (proptest, on the stable
//! toolchain): BTF, procfs counter files, conntrack statistics, the config
//! loader, ring-buffer records, tracefs format files, netlink replies, sysctl
//! values. None may panic, hang or allocate without bound; each answers with a
//! value or an error. The number of cases per property is bounded (proptest's
//! default, 256, or `PROPTEST_CASES`), which time-boxes the run inside
//! `cargo xtask test`; failing inputs proptest finds are kept in
//! `tests/fuzz.proptest-regressions` and replayed first on every run.

use nettune::{
    config::Config,
    model::{tunables, value},
    probes::events,
    sys::{
        btf::{Btf, BtfWriter},
        netlink, procfs,
        tracefs::{parse_format, parse_print_symbolic},
    },
};
use proptest::prelude::*;

/// Text that looks like a kernel counter file: words, numbers, separators.
fn counter_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[A-Za-z]{1,12}:?",
            "[0-9a-f]{1,16}",
            "-?[0-9]{1,20}",
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("\n".to_owned()),
            Just(":".to_owned()),
            ".{0,4}",
        ],
        0..200,
    )
    .prop_map(|parts| parts.concat())
}

/// BTF whose types are generated: valid headers, so the parser gets past them.
fn btf_blob() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            0u32..24,
            0u32..6,
            any::<bool>(),
            0u32..64,
            prop::collection::vec(any::<u32>(), 0..12),
        ),
        0..24,
    )
    .prop_map(|types| {
        let mut w = BtfWriter::new();
        for (kind, vlen, flag, size_or_type, words) in types {
            let name = format!("t{}", w.next_id);
            w.push(&name, kind, vlen, flag, size_or_type);
            w.words(&words);
        }
        w.build()
    })
}

proptest! {
    #[test]
    fn btf_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Btf::parse(&bytes);
    }

    #[test]
    fn btf_with_generated_types(blob in btf_blob(), path in prop::collection::vec("t[0-9]{1,2}", 1..4)) {
        if let Ok(btf) = Btf::parse(&blob) {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let _ = btf.member_offset(path[0], &path[1..]);
            let _ = btf.enum_variants(path[0]);
            let _ = btf.tracepoint_arg_count(path[0]);
        }
    }

    #[test]
    fn procfs_files(text in counter_text()) {
        let mib = procfs::Mib::parse("fuzz", &text);
        let _ = procfs::listen_counters(&mib);
        let _ = mib.count("Tcp", "RetransSegs");
        let _ = procfs::conntrack(&text);
        let _ = procfs::tcp_sockets(&text);
        let _ = procfs::softnet_dropped(&text);
        let _ = procfs::start_time(&text);
        let _ = procfs::number(&text);
    }

    #[test]
    fn config_files(text in "([a-z_\\[\\]\\.\"= 0-9\\n-]|tuning|agent|probes|limits){0,200}") {
        let _ = Config::parse("fuzz.toml", &text);
    }

    #[test]
    fn ring_buffer_records(record in prop::collection::vec(any::<u8>(), 0..64)) {
        let decoded = events::decode(&record);
        prop_assert_eq!(decoded.is_some(), record.len() >= 24);
    }

    #[test]
    fn tracefs_format_files(text in "(field:|offset:|size:|signed:|[a-z_ ]{0,10}|[0-9]{0,6}|;|\\t|\\n|\\[|\\]|\\{|\\}|,|\"|__print_symbolic\\(REC->reason){0,120}") {
        let _ = parse_format(&text);
        let _ = parse_print_symbolic(&text);
    }

    #[test]
    fn netlink_datagrams(bytes in prop::collection::vec(any::<u8>(), 0..256), dump in any::<bool>()) {
        let _ = netlink::parse_datagram::<netlink_packet_route::RouteNetlinkMessage>(&bytes, 1, dump);
        let _ = netlink::parse_datagram::<netlink_packet_sock_diag::SockDiagMessage>(&bytes, 1, dump);
    }

    #[test]
    fn sysctl_values(text in "[0-9 ,\\t\\n-]{0,40}") {
        for spec in tunables::ALL {
            let _ = value::Value::parse(spec, &text);
        }
        if let Some(list) = value::PortList::parse(&text) {
            // What is printed parses back to the same list.
            prop_assert_eq!(value::PortList::parse(&list.to_string()), Some(list));
        }
    }
}
