//! Which kernel features the host's kernel tests must not skip.

/// Features the CI machine kind (Debian 12, Linux 6.18, root) has; see
/// docs/testing.md. fentry (refused with EPERM), kprobes (not configured) and
/// netem (no module loading) are absent there and not listed.
const CI_REQUIRED_FEATURES: &str =
    "root,btf,tp_btf,tracepoint,tc,tcx,clsact,drop_reasons,containers";

/// The features the host's kernel tests must not skip: `NETTUNE_REQUIRE_FEATURES`
/// if set, else on CI (`CI` set) what the CI machine kind has, else none.
pub fn required_features() -> Option<String> {
    std::env::var("NETTUNE_REQUIRE_FEATURES")
        .ok()
        .or_else(|| std::env::var_os("CI").map(|_| CI_REQUIRED_FEATURES.to_owned()))
}
