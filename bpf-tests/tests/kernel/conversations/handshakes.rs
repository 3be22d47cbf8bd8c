//! TCP handshakes and resets against the client's view and the namespace's TCP counters.

use super::*;

/// Closes `stream` with an RST (SO_LINGER with a zero timeout).
pub(super) fn reset(stream: TcpStream) -> anyhow::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized `linger` value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            u32::try_from(size_of::<libc::linger>())?,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
    Ok(())
}

/// One namespace's TCP counters: (OutRsts, EstabResets, TCPSynRetrans).
pub(super) fn tcp_counters(ns: &Netns) -> anyhow::Result<[i64; 3]> {
    Ok([
        ns.mib("snmp", "Tcp", "OutRsts")?,
        ns.mib("snmp", "Tcp", "EstabResets")?,
        ns.mib("netstat", "TcpExt", "TCPSynRetrans")?,
    ])
}

pub(super) fn handshakes_and_resets_equal_the_clients_view_and_the_tcp_counters() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let probes = match load_conversations() {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let pods = Pods::new(2, "hs")?;
    let (server, client) = (&pods.pods[0], &pods.pods[1]);
    let (open, closed, silent) = (5701u16, 5702u16, 5703u16);
    // SYNs to `silent` never reach a socket.
    nft_drop(&server.ns, "input", &format!("tcp dport {silent}"))?;
    let config = config_with_timeouts(5.0, 1.0);
    let mut collector = watching(probes, &config, &[server, client])?;
    let (client_before, server_before) = (
        conversations_of(&mut collector, client)?,
        conversations_of(&mut collector, server)?,
    );
    let (client_tcp_before, server_tcp_before) =
        (tcp_counters(&client.ns)?, tcp_counters(&server.ns)?);

    // The server accepts five connections; it resets the third and the fourth.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let addr = server.addr();
    let accepting = server.ns.spawn(move || -> anyhow::Result<()> {
        let listener = TcpListener::bind((addr, open))?;
        ready_tx.send(()).ok();
        for i in 0..5 {
            let (mut stream, _) = listener.accept()?;
            if i == 2 || i == 3 {
                // Only once the client says it is connected: a reset that
                // lands before the client's connect() has returned is that
                // connect's error (ECONNRESET), not an established reset.
                let mut hello = [0u8; 1];
                stream.read_exact(&mut hello)?;
                reset(stream)?;
            } else {
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
        }
        Ok(())
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the server never listened")?;
    let seen = client.ns.run(move || -> anyhow::Result<[u32; 3]> {
        let mut seen = [0u32; 3]; // connected, refused, timed out
        for i in 0..5 {
            let mut stream = TcpStream::connect_timeout(
                &SocketAddr::from((addr, open)),
                Duration::from_secs(3),
            )?;
            seen[0] += 1;
            match i {
                // The client resets the first two.
                0 | 1 => reset(stream)?,
                // The server resets these: say we are here, wait for it.
                2 | 3 => {
                    stream.write_all(b"!")?;
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                }
                _ => {
                    stream.write_all(b"bye")?;
                }
            }
        }
        for port in std::iter::repeat_n(closed, 3).chain(std::iter::repeat_n(silent, 2)) {
            match TcpStream::connect_timeout(
                &SocketAddr::from((addr, port)),
                Duration::from_millis(2500),
            ) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => seen[1] += 1,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => seen[2] += 1,
                other => bail!("connect to port {port}: {other:?}"),
            }
        }
        Ok(seen)
    })??;
    accepting
        .join()
        .map_err(|_| anyhow::anyhow!("the server panicked"))???;
    // Past the handshake timeout, the silent port's SYNs are timed out.
    std::thread::sleep(Duration::from_millis(1200));
    collector.tick()?;
    let (client_after, server_after) = (
        conversations_of(&mut collector, client)?,
        conversations_of(&mut collector, server)?,
    );
    let (client_tcp, server_tcp) = (tcp_counters(&client.ns)?, tcp_counters(&server.ns)?);
    let kernel = |after: [i64; 3], before: [i64; 3], i: usize| u64::try_from(after[i] - before[i]);

    let c = (&client_after.connects, &client_before.connects);
    let attempts = c.0.attempts.total - c.1.attempts.total;
    let answered = c.0.answered.total - c.1.answered.total;
    let refused = c.0.refused.total - c.1.refused.total;
    let timed_out = c.0.timed_out.total - c.1.timed_out.total;
    let syn_retransmits = c.0.syn_retransmits.total - c.1.syn_retransmits.total;
    println!(
        "    client saw: {} connected, {} refused, {} timed out; TCPSynRetrans {}",
        seen[0],
        seen[1],
        seen[2],
        kernel(client_tcp, client_tcp_before, 2)?
    );
    println!(
        "    nettune: {attempts} attempts, {answered} answered, {refused} refused, {timed_out} timed out, {syn_retransmits} SYN retransmits"
    );
    ensure!(
        attempts == 10,
        "attempts: nettune {attempts}, the client made 10"
    );
    ensure!(
        answered == u64::from(seen[0]),
        "answered: nettune {answered}, client {}",
        seen[0]
    );
    ensure!(
        refused == u64::from(seen[1]),
        "refused: nettune {refused}, client {}",
        seen[1]
    );
    ensure!(
        timed_out == u64::from(seen[2]),
        "timed out: nettune {timed_out}, client {}",
        seen[2]
    );
    ensure!(
        seen == [5, 3, 2],
        "the client's view is not the test's plan: {seen:?}"
    );
    ensure!(
        syn_retransmits == kernel(client_tcp, client_tcp_before, 2)?,
        "SYN retransmits: nettune {syn_retransmits}, TCPSynRetrans {}",
        kernel(client_tcp, client_tcp_before, 2)?
    );

    // OutRsts counts every RST a namespace sends; EstabResets every established
    // connection a reset ended, whichever side sent it (the server's refusals of
    // the closed port end no connection).
    let sent = |after: &ConversationFigures, before: &ConversationFigures| {
        after.resets_sent.total - before.resets_sent.total
    };
    let received = |after: &ConversationFigures, before: &ConversationFigures| {
        after.resets_received.total - before.resets_received.total
    };
    let (client_sent, client_received) = (
        sent(&client_after, &client_before),
        received(&client_after, &client_before),
    );
    let (server_sent, server_received) = (
        sent(&server_after, &server_before),
        received(&server_after, &server_before),
    );
    let resets = [
        (
            "client sent",
            client_sent,
            "client OutRsts",
            kernel(client_tcp, client_tcp_before, 0)?,
        ),
        (
            "server sent",
            server_sent,
            "server OutRsts",
            kernel(server_tcp, server_tcp_before, 0)?,
        ),
        (
            "client sent + received",
            client_sent + client_received,
            "client EstabResets",
            kernel(client_tcp, client_tcp_before, 1)?,
        ),
        (
            "server sent + received - refusals",
            server_sent + server_received - refused,
            "server EstabResets",
            kernel(server_tcp, server_tcp_before, 1)?,
        ),
    ];
    for (ours_name, ours, theirs_name, theirs) in resets {
        println!("    RSTs {ours_name}: nettune {ours}, {theirs_name} {theirs}");
        ensure!(
            ours == theirs,
            "RSTs {ours_name}: nettune {ours}, {theirs_name} {theirs}"
        );
    }
    ensure!(
        client_received == 2 && server_received == 2,
        "RSTs received: client {client_received}, server {server_received}; each side reset two"
    );

    // The worst remotes: the closed port refused, the silent one timed out.
    let snapshot = collector.tick()?.snapshot;
    let failures = |port: u16| {
        snapshot
            .connect_failures
            .iter()
            .find(|r| r.remote == SocketAddr::from((addr, port)))
            .map(|r| (r.refused.total, r.timed_out.total))
    };
    ensure!(
        failures(closed) == Some((3, 0)) && failures(silent) == Some((0, 2)),
        "per remote: closed {:?}, silent {:?}",
        failures(closed),
        failures(silent)
    );
    Ok(Outcome::Passed)
}

// ---- ICMP ----------------------------------------------------------------------
