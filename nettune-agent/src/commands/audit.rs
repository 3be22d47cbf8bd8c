//! `nettune audit`: the node's sysctls against a profile, and what kube-proxy
//! will set on this node when it starts.

use std::process::ExitCode;

use nettune::{
    config::Config,
    sys::{Kernel, System as _},
    tune::{
        actuator::Actuator,
        guardrails::Limits,
        kube_proxy::{self, GUIDE},
        profile, tuner,
    },
};

use super::{exit_code, print_json};

/// Prints the audit table; exit code 0 when compliant, 1 when not (what
/// kube-proxy will set is shown, not judged).
pub fn run(config: &Config, profile: &str, json: bool) -> anyhow::Result<ExitCode> {
    let profile = profile::named(profile)?;
    let actuator = Actuator::new(Kernel);
    let rows = profile::audit(&actuator, &profile);
    let links = Kernel.host_links().unwrap_or_default();
    let proxy = nettune::collect::context::read(&Kernel, &links).proxy;
    let cpus = kube_proxy::cpus(&Kernel);
    let limits = Limits {
        config: &config.tuning,
        mem_total: tuner::mem_total(&Kernel),
        page_size: Kernel.page_size(),
    };
    let kube_proxy_rows = proxy
        .starts_with("kube-proxy")
        .then(|| kube_proxy::audit(&actuator, &limits, &GUIDE, cpus));
    if json {
        print_json(&serde_json::json!({
            "profile": profile.name,
            "rows": rows,
            "proxy": proxy,
            "kube_proxy": kube_proxy_rows.as_ref().map(|r| serde_json::json!({
                "settings": GUIDE,
                "cpus": cpus,
                "rows": r,
            })),
        }))?;
    } else {
        println!("profile {}: {}", profile.name, profile.description);
        println!(
            "{:<52} {:<24} {:<24} {:<6} {:<3} IMPACT",
            "SYSCTL", "CURRENT", "RECOMMENDED", "SCOPE", "OK"
        );
        for r in &rows {
            let current = r.current.clone().unwrap_or_else(|| "(unreadable)".into());
            let scope = format!("{:?}", r.scope).to_lowercase();
            let ok = if r.compliant { "yes" } else { "NO" };
            println!(
                "{:<52} {current:<24} {:<24} {scope:<6} {ok:<3} {}",
                r.sysctl, r.recommended, r.impact
            );
        }
        print_kube_proxy(&proxy, cpus, kube_proxy_rows.as_deref());
    }
    Ok(exit_code(rows.iter().all(|r| r.compliant)))
}

fn print_kube_proxy(proxy: &str, cpus: u64, rows: Option<&[kube_proxy::KubeProxyRow]>) {
    let Some(rows) = rows else {
        println!(
            "\nno kube-proxy on this node (proxy: {proxy}): nothing resets these at its start"
        );
        return;
    };
    println!(
        "\n{proxy} with the guide's conntrack settings (maxPerCore {}, min {}, \
         tcpEstablishedTimeout {}s, tcpCloseWaitTimeout {}s) on {cpus} CPUs sets, at each start:",
        GUIDE.max_per_core, GUIDE.min, GUIDE.tcp_established_timeout, GUIDE.tcp_close_wait_timeout
    );
    println!(
        "{:<52} {:<12} {:<12} {:<16} NOTE",
        "SYSCTL", "CURRENT", "KUBE-PROXY", "NETTUNE-CEILING"
    );
    for r in rows {
        let current = r.current.clone().unwrap_or_else(|| "(unreadable)".into());
        let ceiling = r
            .nettune_ceiling
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let note = if r.lowers {
            format!(
                "lowers it at its next start: set {} to leave it alone",
                r.fix
            )
        } else {
            String::new()
        };
        println!(
            "{:<52} {current:<12} {:<12} {ceiling:<16} {note}",
            r.sysctl, r.kube_proxy
        );
    }
}
