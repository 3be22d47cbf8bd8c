//! The `nettune` binary's command line, run as a black box (no root needed).

use std::process::Command;

fn nettune(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nettune"))
        .args(args)
        .env_remove("NETTUNE_CONFIG")
        .env("RUST_LOG", "off")
        .output()
        .expect("run nettune");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file in the temporary directory, removed when the test is done with it.
struct TempFile(std::path::PathBuf);

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("nettune-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    TempFile(path)
}

#[test]
fn an_invalid_config_stops_the_agent_with_exit_code_3_and_names_the_key() {
    let path = temp_file("bad.toml", "[agent]\ninterval_seconds = -2\n");
    let file = path.to_str().unwrap();
    let (code, stdout, stderr) = nettune(&["--config", file, "run"]);
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "nettune: invalid config: {file}:2: agent.interval_seconds: -2 is out of range: \
             must be between 0.05 and 3600 seconds"
        )
    );
}

#[test]
fn a_named_config_that_does_not_exist_is_an_error() {
    let (code, _, stderr) = nettune(&[
        "--config",
        "/nonexistent/nettune.toml",
        "run",
        "--print-config",
    ]);
    assert_eq!(code, Some(3));
    assert!(
        stderr.contains("/nonexistent/nettune.toml: (file): cannot read"),
        "{stderr}"
    );
}

#[test]
fn print_config_merges_file_and_flags() {
    let path = temp_file(
        "good.toml",
        "[agent]\ninterval_seconds = 5.0\n[tuning.limits.\"net.core.somaxconn\"]\nceiling = 8192\n",
    );
    let (code, stdout, _) = nettune(&[
        "--config",
        path.to_str().unwrap(),
        "run",
        "--print-config",
        "--listen",
        "0.0.0.0:9100",
        "--disable-variant",
        "fentry",
    ]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("interval_seconds = 5.0"), "{stdout}");
    assert!(stdout.contains("listen = \"0.0.0.0:9100\""), "{stdout}");
    assert!(
        stdout.contains("disable_variants = [\"fentry\"]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[tuning.limits.\"net.core.somaxconn\"]"),
        "{stdout}"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    let (code, _, stderr) = nettune(&["run", "--interval=-1"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("out of range"), "{stderr}");
    let (code, stdout, _) = nettune(&["--help"]);
    assert_eq!(code, Some(0));
    for command in ["run", "probes", "diagnose"] {
        assert!(stdout.contains(command), "--help does not list {command}");
    }
}

#[test]
fn a_config_naming_a_sysctl_outside_net_is_refused_at_load() {
    for name in [
        "net/../../kernel/core_pattern",
        "kernel.core_pattern",
        "net.ipv4.ip_forward",
    ] {
        let path = temp_file(
            "escape.toml",
            &format!("[tuning]\nexclude = [\"{name}\"]\n"),
        );
        let (code, _, stderr) =
            nettune(&["--config", path.to_str().unwrap(), "run", "--print-config"]);
        assert_eq!(code, Some(3), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("tuning.exclude: `{name}`")),
            "{stderr}"
        );
        let path = temp_file(
            "escape2.toml",
            &format!("[tuning.limits.\"{name}\"]\nceiling = 1\n"),
        );
        let (code, _, stderr) = nettune(&["--config", path.to_str().unwrap(), "rollback"]);
        assert_eq!(code, Some(3), "{name}: {stderr}");
    }
}

#[test]
fn audit_and_apply_dry_run_work_without_root_and_change_nothing() {
    let (code, stdout, _) = nettune(&["audit", "--json"]);
    assert!(matches!(code, Some(0 | 1)), "{stdout}");
    let audit: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(audit["rows"].as_array().unwrap().len(), 16);
    assert_eq!(audit["profile"], "production");
    // kube-proxy's section is there when it runs, null when it does not.
    assert!(audit.get("kube_proxy").is_some(), "{audit}");
    let state = std::env::temp_dir().join(format!("nettune-cli-state-{}", std::process::id()));
    let config = temp_file(
        "state.toml",
        &format!("[tuning]\nstate_dir = \"{}\"\n", state.display()),
    );
    let (code, stdout, stderr) = nettune(&[
        "--config",
        config.to_str().unwrap(),
        "apply",
        "--profile",
        "production",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let decisions: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        decisions
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["result"] != "applied")
    );
    let (code, stdout, _) = nettune(&[
        "--config",
        config.to_str().unwrap(),
        "apply",
        "--profile",
        "nope",
    ]);
    assert_eq!(code, Some(1), "{stdout}");
    let _ = std::fs::remove_dir_all(state);
}

#[test]
fn check_refuses_bad_endpoints_and_bounds_and_compare_needs_saved_runs() {
    // Its help is its own (not the next command's).
    let (code, stdout, _) = nettune(&["check", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("The guide's tests between two pods"),
        "{stdout}"
    );
    let (_, diagnose, _) = nettune(&["diagnose", "--help"]);
    assert!(diagnose.starts_with("Check this node"), "{diagnose}");
    // Usage errors: no endpoints, a count out of range.
    let (code, _, stderr) = nettune(&["check"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--from"), "{stderr}");
    let (code, _, stderr) = nettune(&["check", "--from", "a", "--to", "b", "--seconds", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    // Endpoints that name nothing: exit 1, saying which flag and why.
    let (code, _, stderr) = nettune(&["check", "--from", "a/b/c", "--to", "10.0.0.1"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--from: `a/b/c` is not a pod (namespace/name)"),
        "{stderr}"
    );
    let (code, _, stderr) = nettune(&["check", "--from", "host", "--to", "netns:nettune-cli-none"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "--to: `netns:nettune-cli-none`: no network namespace /run/netns/nettune-cli-none"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = nettune(&[
        "check",
        "--from",
        "host",
        "--to",
        "10.0.0.1",
        "--url",
        "https://x/",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("only http:// URLs are supported"),
        "{stderr}"
    );
    // Nothing saved yet.
    let state = std::env::temp_dir().join(format!("nettune-cli-check-{}", std::process::id()));
    let config = temp_file(
        "check.toml",
        &format!("[tuning]\nstate_dir = \"{}\"\n", state.display()),
    );
    let (code, _, stderr) = nettune(&[
        "--config",
        config.to_str().unwrap(),
        "check",
        "--compare",
        "last",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("`last`: only 0 runs saved"), "{stderr}");
    let (code, stdout, _) = nettune(&["--config", config.to_str().unwrap(), "check", "--list"]);
    assert_eq!((code, stdout.as_str()), (Some(0), ""));
    let _ = std::fs::remove_dir_all(state);
}
