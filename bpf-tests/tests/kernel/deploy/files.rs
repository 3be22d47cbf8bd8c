//! Where `deploy/` is, its overlays, and the tests' scratch directories.

use std::path::PathBuf;

use bpf_tests::host::TempDir;

pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub const OVERLAYS: [&str; 4] = [
    "base",
    "overlays/privileged",
    "overlays/enforce",
    "overlays/no-prometheus-operator",
];

pub fn scratch(name: &str) -> anyhow::Result<TempDir> {
    TempDir::new(&format!("deploy-{name}"))
}
