//! A real DNS server for tests: dnsmasq (Debian: dnsmasq-base) in a test's
//! namespace, answering `ok.test` and NXDOMAIN for the rest of `.test`, with no
//! upstream, no cache and no files of the host's.

use std::{
    io::Read as _,
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::netns::Netns;

/// The address dnsmasq answers for `ok.test`.
pub const OK_TEST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// dnsmasq serving `ok.test` (and NXDOMAIN for the rest of `.test`) on `addr` in
/// `ns`, with no upstream; killed on drop.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// Starts it on `addr` in `ns` and waits until it answers.
    pub fn start(ns: &Netns, addr: Ipv4Addr) -> anyhow::Result<Self> {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args([
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--group=root",
                "--pid-file=",
                "--local=/test/",
                "--cache-size=0",
            ])
            .arg(format!("--address=/ok.test/{OK_TEST}"))
            .arg(format!("--listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("dnsmasq (Debian: dnsmasq-base)")?;
        let mut server = Self(child);
        // Up once it answers; a probe from the host namespace, not from a pod.
        let started = Instant::now();
        loop {
            let answer = Command::new("dig")
                .args([
                    "+short",
                    "+time=1",
                    "+tries=1",
                    &format!("@{addr}"),
                    "ok.test",
                ])
                .output()
                .context("dig (Debian: bind9-dnsutils)")?;
            if String::from_utf8_lossy(&answer.stdout).contains(&OK_TEST.to_string()) {
                return Ok(server);
            }
            if let Some(status) = server.0.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = server.0.stderr.take() {
                    e.read_to_string(&mut err)?;
                }
                bail!("dnsmasq exited ({status}): {err}");
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "dnsmasq never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
