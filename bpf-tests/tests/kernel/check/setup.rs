//! The fixture: a target namespace with iperf3, an HTTP server and dnsmasq, and its teardown.

use super::*;

/// A small HTTP/1.0 server on `addr` inside `ns`: 200 with a short body for
/// `/`, 404 for anything else; one thread per connection; stopped on drop.
pub(super) struct HttpServer {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) addr: SocketAddr,
    /// Where its connections came from, since the last [`HttpServer::peers`].
    pub(super) peers: Arc<Mutex<BTreeSet<IpAddr>>>,
    pub(super) thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl HttpServer {
    pub(super) fn start(ns: &Netns, addr: SocketAddr) -> anyhow::Result<Self> {
        // Bound inside the namespace; served from anywhere (the socket stays there).
        let listener = ns.run(|| TcpListener::bind(addr))??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let peers = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = peers.clone();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let Ok(mut stream) = stream else { continue };
                if let (Ok(peer), Ok(mut seen)) = (stream.peer_addr(), seen.lock()) {
                    seen.insert(peer.ip());
                }
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let found = request.starts_with(b"GET / ");
                    let body = if found {
                        "hello from the server\n"
                    } else {
                        "no\n"
                    };
                    let status = if found { "200 OK" } else { "404 Not Found" };
                    let _ = write!(
                        stream,
                        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
            Ok(())
        });
        Ok(Self {
            stop,
            addr,
            peers,
            thread: Some(thread),
        })
    }

    /// The addresses connections came from since the last call.
    pub(super) fn peers(&self) -> BTreeSet<IpAddr> {
        self.peers
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop (from the host: the route goes through it).
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `/etc/netns/<name>/resolv.conf` naming `server` (what `ip netns exec` shows
/// the namespace's processes, and what nettune reads for it); removed on drop.
pub(super) struct ResolvConf(PathBuf);

impl ResolvConf {
    pub(super) fn write(ns: &Netns, server: Ipv4Addr) -> anyhow::Result<Self> {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), format!("nameserver {server}\n"))?;
        Ok(Self(dir))
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // /etc/netns itself, when nothing else is in it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// Two pods of a private containerd.
pub(super) struct RuntimePods {
    // Pods before the runtime: their namespaces go with their sandboxes.
    pub(super) client: Pod,
    pub(super) server: Pod,
    pub(super) _containerd: Containerd,
}

/// Two pods (client, server) with the servers running and, for namespaces, the
/// client's resolv.conf naming dnsmasq.
pub(super) struct Setup {
    pub(super) _resolv: Option<ResolvConf>,
    pub(super) http: HttpServer,
    pub(super) _dnsmasq: Dnsmasq,
    pub(super) _iperf: Spawned,
    pub(super) scratch: TempDir,
    pub(super) peers: Peers,
}

impl Setup {
    /// Between two pod-like namespaces routed through the host.
    pub(super) fn new(tag: &str) -> anyhow::Result<Self> {
        Self::start(tag, Peers::Namespaces(Pods::new(2, tag)?), "")
    }

    /// Between two pods a real containerd made (`nt-check/client`, `nt-check/server`).
    pub(super) fn with_runtime(tag: &str) -> anyhow::Result<Self> {
        let mut containerd = Containerd::start()?;
        let spec = |name| PodSpec {
            name,
            namespace: "nt-check",
            annotations: &[],
            host_network: false,
        };
        let client = containerd.run_pod(&spec("client"))?;
        let server = containerd.run_pod(&spec("server"))?;
        let identity = format!(
            "[identity]\ncri_socket = \"{}\"\ncri_timeout_seconds = 2.0\n",
            containerd.socket.display()
        );
        Self::start(
            tag,
            Peers::Runtime(Box::new(RuntimePods {
                client,
                server,
                _containerd: containerd,
            })),
            &identity,
        )
    }

    pub(super) fn start(tag: &str, peers: Peers, config: &str) -> anyhow::Result<Self> {
        let (client, server, server_ip) = match &peers {
            Peers::Namespaces(pods) => (&pods.pods[0].ns, &pods.pods[1].ns, pods.pods[1].addr()),
            Peers::Runtime(pods) => (
                pods.client.netns()?,
                pods.server.netns()?,
                pods.server.ip.context("the server pod has no IP")?,
            ),
        };
        let addr = server_ip.to_string();
        let iperf = Spawned::start(
            "ip",
            &[
                "netns",
                "exec",
                server.name(),
                "iperf3",
                "-s",
                "-B",
                &addr,
                "-p",
                IPERF_PORT,
            ],
        )
        .context("iperf3 (Debian: iperf3)")?;
        let dnsmasq = Dnsmasq::start(server, server_ip)?;
        let http = HttpServer::start(server, SocketAddr::new(server_ip.into(), HTTP_PORT))?;
        let resolv = match &peers {
            Peers::Namespaces(_) => Some(ResolvConf::write(client, server_ip)?),
            Peers::Runtime(_) => None,
        };
        let scratch = TempDir::new(&format!("check-{tag}"))?;
        // Node-wide sysctls would change the host when `apply` runs: leave them out.
        let node_wide: Vec<String> = nettune::model::tunables::ALL
            .iter()
            .filter(|t| t.scope == nettune::model::tunables::Scope::Node)
            .map(|t| format!("\"{}\"", t.name))
            .collect();
        std::fs::write(
            scratch.join("nettune.toml"),
            format!(
                "[tuning]\nstate_dir = \"{}\"\nexclude = [{}]\n{config}",
                scratch.join("state").display(),
                node_wide.join(", ")
            ),
        )?;
        // iperf3 -s needs a moment to listen.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect_timeout(
            &format!("{addr}:{IPERF_PORT}").parse()?,
            Duration::from_millis(200),
        )
        .is_err()
        {
            ensure!(
                std::time::Instant::now() < deadline,
                "iperf3 -s never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            _resolv: resolv,
            http,
            _dnsmasq: dnsmasq,
            _iperf: iperf,
            scratch,
            peers,
        })
    }

    pub(super) fn client(&self) -> &Netns {
        match &self.peers {
            Peers::Namespaces(pods) => &pods.pods[0].ns,
            Peers::Runtime(pods) => pods.client.netns().expect("checked at the start"),
        }
    }

    pub(super) fn client_addr(&self) -> Ipv4Addr {
        match &self.peers {
            Peers::Namespaces(pods) => pods.pods[0].addr(),
            Peers::Runtime(pods) => pods.client.ip.expect("a pod of its own network"),
        }
    }

    /// Runs `nettune check ARGS`, and checks that every connection the HTTP
    /// server saw meanwhile came from the client's address: the tests ran inside
    /// its namespace (the host reaches the server too, from another address).
    pub(super) fn check_from_client(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        self.http.peers();
        let result = self.check(args)?;
        let peers = self.http.peers();
        let client = IpAddr::V4(self.client_addr());
        ensure!(
            !peers.is_empty() && peers.iter().all(|p| *p == client),
            "connections from {peers:?}, not only from the client's {client}"
        );
        Ok(result)
    }

    pub(super) fn server_addr(&self) -> Ipv4Addr {
        match &self.peers {
            Peers::Namespaces(pods) => pods.pods[1].addr(),
            Peers::Runtime(pods) => pods.server.ip.expect("checked at the start"),
        }
    }

    /// `--from` and `--to`: `netns:` names, or the pods' `namespace/name`.
    pub(super) fn endpoints(&self) -> (String, String) {
        match &self.peers {
            Peers::Namespaces(pods) => (
                pods.pods[0].ns.name().to_owned(),
                format!("netns:{}", pods.pods[1].ns.name()),
            ),
            Peers::Runtime(pods) => (
                format!("{}/{}", pods.client.namespace, pods.client.name),
                format!("{}/{}", pods.server.namespace, pods.server.name),
            ),
        }
    }

    /// `nettune --config … check --from client --to server ARGS`: exit code,
    /// stdout, stderr.
    pub(super) fn check(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let (from, to) = self.endpoints();
        let port = HTTP_PORT.to_string();
        let mut all = vec!["check", "--from", &from, "--to", &to, "--port", &port];
        all.extend_from_slice(&["--iperf-port", IPERF_PORT]);
        all.extend_from_slice(args);
        self.nettune(None, &all)
    }

    /// `nettune --config … ARGS`, inside `ns` when given.
    pub(super) fn nettune(
        &self,
        ns: Option<&Netns>,
        args: &[&str],
    ) -> anyhow::Result<(i32, String, String)> {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name()]).arg(nettune_bin()?);
                c
            }
            None => Command::new(nettune_bin()?),
        };
        let out = cmd
            .arg("--config")
            .arg(self.scratch.join("nettune.toml"))
            .args(args)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
