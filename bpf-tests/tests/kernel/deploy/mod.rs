//! `deploy/`, validated offline: every manifest and every rendered overlay against
//! the Kubernetes schemas of 1.25 to 1.32; the alert rules with promtool (a firing
//! and a quiet case per alert); every metric the rules and the dashboard use is one
//! a live agent exports; the ConfigMap's nettune.toml passes the agent's own
//! validation. And run for real: the image `cargo xtask image` builds is the
//! Dockerfile's and runs under podman and containerd; the DaemonSet's container,
//! with the settings the rendered manifest gives it, runs under podman + runc
//! and does its job with those permissions only. The alert rules also run live,
//! in a real Prometheus, against real faults.
//!
//! One file per concern: `files` (where deploy/ is), `manifests` (the offline
//! checks), `alerts` and `alerts_dns` (the rules live), `image` (the container image), `pod` (the DaemonSet's pod run for
//! real), `enforce` (the enforce overlay's pod, writing without privileges).

mod alerts;
mod alerts_dns;
mod enforce;
mod files;
mod image;
mod manifests;
mod pod;

use bpf_tests::harness::Test;

pub const TESTS: &[Test] = &[
    Test {
        name: "deploy::manifests_and_overlays_validate_for_kubernetes_1_25_to_1_32",
        run: manifests::manifests_and_overlays_validate,
    },
    Test {
        name: "deploy::alert_rules_pass_promtool_with_a_firing_and_a_quiet_case_each",
        run: manifests::alert_rules_pass_promtool,
    },
    Test {
        name: "deploy::the_shipped_alerts_fire_for_real_faults_and_resolve",
        run: alerts::the_shipped_alerts_fire_for_real_faults_and_resolve,
    },
    Test {
        name: "deploy::the_dns_and_conntrack_alerts_fire_for_real_faults_and_resolve",
        run: alerts_dns::the_dns_and_conntrack_alerts_fire_for_real_faults_and_resolve,
    },
    Test {
        name: "deploy::rules_and_dashboard_use_only_metrics_the_agent_exports",
        run: manifests::rules_and_dashboard_use_only_exported_metrics,
    },
    Test {
        name: "deploy::configmap_configs_pass_the_agents_validation",
        run: manifests::configmap_configs_pass_validation,
    },
    Test {
        name: "deploy::the_image_is_the_dockerfiles_and_runs_under_podman_and_containerd",
        run: image::the_image_is_the_dockerfiles_and_runs_under_podman_and_containerd,
    },
    Test {
        name: "deploy::the_daemonsets_pod_runs_under_podman_with_the_manifests_settings",
        run: pod::the_daemonsets_pod_runs_under_podman_with_the_manifests_settings,
    },
    Test {
        name: "deploy::the_enforce_overlays_pod_tunes_and_rolls_back_without_privileges",
        run: enforce::the_enforce_overlays_pod_tunes_and_rolls_back_without_privileges,
    },
    Test {
        name: "deploy::without_mount_propagation_a_later_namespace_is_not_taken_for_its_empty_file",
        run: pod::without_mount_propagation_a_later_namespace_is_not_taken_for_its_empty_file,
    },
];
