//! BTF reader tests on hand-built BTF blobs, and on the running kernel's.

use super::*;

type Builder = BtfWriter;

/// struct inner { u32 a; union { u32 b; u64 c; }; }; struct outer { u64 x; struct inner in; };
fn nested() -> Btf {
    let mut b = Builder::new();
    let u32_t = b.int("u32", 4);
    let u64_t = b.int("u64", 8);
    let anon = b.composite(5, "", 8, &[("b", u32_t, 0), ("c", u64_t, 0)]);
    let inner = b.composite(4, "inner", 16, &[("a", u32_t, 0), ("", anon, 64)]);
    let typedef = b.push("inner_t", 8, 0, false, inner);
    b.composite(4, "outer", 24, &[("x", u64_t, 0), ("in", typedef, 64)]);
    Btf::parse(&b.build()).unwrap()
}

#[test]
fn member_offset_follows_nested_and_anonymous_members() {
    let btf = nested();
    assert_eq!(btf.member_offset("outer", &["x"]).unwrap(), 0);
    assert_eq!(btf.member_offset("outer", &["in"]).unwrap(), 8);
    assert_eq!(btf.member_offset("outer", &["in", "a"]).unwrap(), 8);
    // `c` lives in an anonymous union at bit 64 of `inner`, through a typedef.
    assert_eq!(btf.member_offset("outer", &["in", "c"]).unwrap(), 16);
}

#[test]
fn missing_member_names_the_type_and_member() {
    let err = nested().member_offset("outer", &["in", "zz"]).unwrap_err();
    assert_eq!(err.to_string(), "BTF type `in` has no member `zz`");
    let err = nested().member_offset("nope", &["a"]).unwrap_err();
    assert_eq!(err.to_string(), "BTF has no union named `nope`");
}

#[test]
fn bitfields_are_refused() {
    let mut b = Builder::new();
    let u32_t = b.int("u32", 4);
    let id = b.push("flags", 4, 1, true, 4);
    let name = b.str("bit");
    b.words(&[name, u32_t, (1 << 24) | 3]);
    assert_eq!(id, 2);
    let btf = Btf::parse(&b.build()).unwrap();
    assert!(matches!(
        btf.member_offset("flags", &["bit"]),
        Err(BtfError::Bitfield { .. })
    ));
}

#[test]
fn enums_keep_order_and_sign() {
    let mut b = Builder::new();
    b.push("colour", 6, 2, true, 4);
    let (red, blue) = (b.str("RED"), b.str("BLUE"));
    b.words(&[red, 0, blue, (-1i32).cast_unsigned()]);
    b.push("big", 19, 1, false, 8);
    let huge = b.str("HUGE");
    b.words(&[huge, 0, 1]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(
        btf.enum_variants("colour").unwrap(),
        vec![("RED".to_owned(), 0), ("BLUE".to_owned(), -1)]
    );
    assert_eq!(
        btf.enum_variants("big").unwrap(),
        vec![("HUGE".to_owned(), 1 << 32)]
    );
}

#[test]
fn tracepoint_arg_count_skips_the_context_pointer() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let proto = b.push("", 13, 3, false, 0);
    b.words(&[0, 0, 0, int, 0, int]);
    let ptr = b.push("", 2, 0, false, proto);
    b.push("btf_trace_demo", 8, 0, false, ptr);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(btf.tracepoint_arg_count("demo").unwrap(), 2);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(matches!(Btf::parse(&[]), Err(BtfError::Malformed(_))));
    assert!(matches!(Btf::parse(&[0; 64]), Err(BtfError::Malformed(_))));
    let mut truncated = nested_bytes();
    truncated.truncate(40);
    assert!(Btf::parse(&truncated).is_err());
}

fn nested_bytes() -> Vec<u8> {
    let mut b = Builder::new();
    let u32_t = b.int("u32", 4);
    b.composite(4, "s", 4, &[("a", u32_t, 0)]);
    b.build()
}

#[test]
fn missing_file_names_the_path() {
    let err = Btf::from_file(Path::new("/nonexistent/vmlinux"))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("cannot read BTF from /nonexistent/vmlinux")
    );
}

#[test]
fn a_struct_that_contains_itself_anonymously_is_malformed_not_a_stack_overflow() {
    // A malformed `--btf` file: struct loop { <anonymous member of type loop>; }.
    let mut b = Builder::new();
    let own_id = b.next_id;
    b.composite(4, "loop", 8, &[("", own_id, 0)]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert!(matches!(
        btf.member_offset("loop", &["missing"]),
        Err(BtfError::Malformed(_))
    ));
}

#[test]
fn a_struct_that_fans_out_is_malformed_not_a_hang() {
    // Depth alone does not bound the search: 16 levels of types, each with 64
    // anonymous members of the next (no loop, never too deep), are 64^16
    // visits. A work budget does.
    let mut b = Builder::new();
    let mut next = b.int("leaf", 8);
    for level in (0..16).rev() {
        let members: Vec<(&str, u32, u32)> = (0..64).map(|i| ("", next, i * 64)).collect();
        let name = if level == 0 {
            "fan".to_owned()
        } else {
            format!("fan{level}")
        };
        next = b.composite(4, &name, 512, &members);
    }
    let btf = Btf::parse(&b.build()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            btf.member_offset("fan", &["missing"])
                .map_err(|e| e.to_string()),
        );
    });
    // A bound on a hang, not a speed figure: the budget answers in microseconds.
    let answer = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("member_offset still searching after 20 s");
    assert!(
        answer.as_ref().is_err_and(|e| e.contains("malformed")),
        "{answer:?}"
    );
}

#[test]
fn the_running_kernels_btf_resolves_what_the_probes_need() {
    // Every kernel nettune runs on has BTF here (CI too); elsewhere this reads the
    // file only when the kernel provides it.
    let Ok(btf) = Btf::from_sys_fs() else {
        assert!(
            !Path::new(VMLINUX_BTF).exists(),
            "{VMLINUX_BTF} exists but does not parse"
        );
        return;
    };
    let net = btf.member_offset("sock", &["__sk_common", "skc_net", "net"]);
    assert!(net.is_ok(), "{net:?}");
    assert!(btf.member_offset("net", &["ns", "inum"]).is_ok());
    assert!(
        btf.enum_variants("skb_drop_reason")
            .unwrap()
            .iter()
            .any(|(n, _)| n == "SKB_DROP_REASON_NO_SOCKET")
    );
    assert!(btf.tracepoint_arg_count("kfree_skb").unwrap() >= 3);
}
