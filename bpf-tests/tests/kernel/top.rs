//! `nettune top` in a real terminal (tmux), against a running agent with live
//! traffic in test namespaces: the sender's row shows non-zero retransmits, `s`
//! changes the sort, `/` filters, `q` exits with the terminal restored (cooked
//! mode, main screen); a 40×12 terminal renders without a panic; `l` shows the
//! listeners, a flooded `listen(8)` server first with its full queue.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use bpf_tests::{
    agent_process::AgentProcess,
    harness::{Outcome, Test, TestResult, require_root},
    loss::Loss,
    scenarios::Pair,
    tmux::Session,
    traffic::bulk_transfer,
};

use crate::agent::nettune_bin;

pub const TESTS: &[Test] = &[
    Test {
        name: "top::live_view_sorts_filters_and_quits_with_the_terminal_restored",
        run: live_view_sorts_filters_and_quits_with_the_terminal_restored,
    },
    Test {
        name: "top::renders_at_40x12_without_panicking",
        run: renders_at_40x12_without_panicking,
    },
    Test {
        name: "top::the_listeners_view_shows_what_a_listener_asked_for_and_its_full_queue",
        run: the_listeners_view_shows_what_a_listener_asked_for_and_its_full_queue,
    },
];

/// A shell line that runs `top` between markers and reports the terminal mode after.
pub(crate) fn wrapped(top: &str) -> String {
    format!(
        "sh -c 'echo BEFORE-TOP; {top}; echo AFTER-TOP rc=$?; \
         stty -a | grep -q -- \"-icanon\" && echo MODE=raw || echo MODE=cooked; sleep 120'"
    )
}

/// Types `q` and waits for `top` to exit; the screen after, with its exit code
/// and the terminal's mode.
pub(crate) fn quit(session: &Session) -> anyhow::Result<String> {
    session.send(&["q"])?;
    session.wait_for(Duration::from_secs(5), "top to exit", |s| {
        s.contains("MODE=")
    })
}

/// The cells of the table row naming `pod`.
fn row<'a>(screen: &'a str, pod: &str) -> Option<Vec<&'a str>> {
    screen.lines().find(|l| l.contains(pod)).map(|l| {
        l.split(['│', ' '])
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    })
}

/// Data rows of the workload table (lines between the header and the border).
fn data_rows(screen: &str) -> Vec<Vec<&str>> {
    rows_under(screen, "POD")
}

/// The first column's data rows under the header line containing `header`.
pub(crate) fn rows_under<'a>(screen: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    screen
        .lines()
        .skip_while(|l| !l.contains(header))
        .skip(1)
        .take_while(|l| !l.contains('└'))
        .map(|l| {
            l.split('│')
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .filter(|cells| !cells.is_empty())
        .collect()
}

fn live_view_sorts_filters_and_quits_with_the_terminal_restored() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.5"])?;
    let pair = Pair::new(14, None)?;
    let sender = format!("netns:{}", pair.sender.name());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> TestResult {
        // Live traffic with loss for as long as the test looks (bounded: 40 rounds).
        let traffic = s.spawn(|| -> anyhow::Result<()> {
            let _loss = Loss::attach(&pair.receiver, &pair.veth.b_name, 500)?;
            for round in 0..40 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // A port per round: under 50 % loss the last round's sockets
                // may still be closing on its port.
                let addr = std::net::SocketAddr::from((pair.veth.b_addr, 6000 + round));
                bulk_transfer(&pair.sender, &pair.receiver, addr, 1 << 20)?;
            }
            Ok(())
        });
        let result = (|| -> TestResult {
            let top = format!(
                "{} top --agent http://{} --interval 0.5",
                nettune_bin()?.display(),
                agent.addr
            );
            let session = Session::start("top", 120, 40, &wrapped(&top))?;
            // Columns at this width: POD RX/s TX/s DROP/s RETX/s OVFL/s.
            let screen = session.wait_for(
                Duration::from_secs(30),
                "the sender's row with retransmits",
                |s| row(s, &sender).is_some_and(|r| r.len() >= 5 && r[4] != "0"),
            )?;
            // Kept for the README's screenshot (docs say how it was made).
            let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/nettune-top-screen.txt");
            let _ = std::fs::write(shot, &screen);
            let cells = row(&screen, &sender).context("no sender row")?;

            println!("    sender row: {cells:?}");
            ensure!(
                screen.contains("DROP/s▼"),
                "not sorted by drops at start:\n{screen}"
            );

            session.send(&["s"])?;
            let screen = session.wait_for(Duration::from_secs(5), "sort by RETX/s", |s| {
                s.contains("RETX/s▼")
            })?;
            let rows = data_rows(&screen);
            let retx: Vec<f64> = rows
                .iter()
                .filter_map(|r| r.get(4)?.trim_end_matches(['k', 'M']).parse().ok())
                .collect();
            ensure!(
                retx.windows(2).all(|w| w[0] >= w[1]),
                "rows not in RETX order: {rows:?}"
            );

            session.send(&["/"])?;
            session.send(&["-l", pair.sender.name()])?;
            session.send(&["Enter"])?;
            // Typed and confirmed: the title shows the text without the cursor.
            let done = format!("filter: {} ", pair.sender.name());
            let screen =
                session.wait_for(Duration::from_secs(5), "the filter", |s| s.contains(&done))?;

            let rows = data_rows(&screen);
            ensure!(
                rows.len() == 1 && rows[0][0] == sender,
                "filter left {rows:?}"
            );

            session.send(&["q"])?;
            let screen = session.wait_for(Duration::from_secs(5), "top to exit", |s| {
                s.contains("MODE=")
            })?;
            println!(
                "    after q: {}",
                screen
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            ensure!(
                screen.contains("AFTER-TOP rc=0"),
                "top did not exit 0:\n{screen}"
            );
            ensure!(
                screen.contains("MODE=cooked"),
                "the terminal was left in raw mode:\n{screen}"
            );
            ensure!(
                screen.contains("BEFORE-TOP") && !screen.contains("workloads ("),
                "the main screen was not restored:\n{screen}"
            );
            Ok(Outcome::Passed)
        })();
        stop.store(true, Ordering::Relaxed);
        traffic
            .join()
            .map_err(|_| anyhow::anyhow!("traffic thread panicked"))??;
        result
    })
}

fn renders_at_40x12_without_panicking() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.5"])?;
    let top = format!(
        "{} top --agent http://{} --interval 0.3",
        nettune_bin()?.display(),
        agent.addr
    );
    let session = Session::start("top-small", 40, 12, &wrapped(&top))?;
    let screen = session.wait_for(Duration::from_secs(20), "the table", |s| {
        s.contains("workloads (") && s.contains("node")
    })?;
    println!(
        "    40x12:\n{}",
        screen
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Open the help at that size too, close it, then quit. Each key waits for
    // the screen the one before made: an Escape followed at once by `q` reaches
    // top as one Alt-q (how terminals encode Alt), which only closes the help.
    session.send(&["?"])?;
    session.wait_for(Duration::from_secs(5), "the help", |s| s.contains(" keys "))?;
    session.send(&["Escape"])?;
    session.wait_for(Duration::from_secs(5), "the help to close", |s| {
        !s.contains(" keys ")
    })?;
    let screen = quit(&session)?;
    ensure!(
        screen.contains("AFTER-TOP rc=0"),
        "top did not exit 0 at 40x12:\n{screen}"
    );
    ensure!(!screen.contains("panicked"), "top panicked:\n{screen}");
    Ok(Outcome::Passed)
}

/// `l` switches to the listeners view: a flooded server that asked for 8 is
/// listed first, with its process, a full queue bar, what it asked for and the
/// namespace's somaxconn; the detail pane says raising somaxconn cannot help.
fn the_listeners_view_shows_what_a_listener_asked_for_and_its_full_queue() -> TestResult {
    if let Some(skip) = require_root() {
        return skip;
    }
    const PORT: u16 = 5320;
    let agent = AgentProcess::start(&nettune_bin()?, &["--interval", "0.5"])?;
    let pair = Pair::new(24, None)?;
    pair.receiver.write_sysctl("net/core/somaxconn", "4096")?;
    // The server starts after the agent's first look at its namespace, as a
    // pod's server starts after its namespace appears.
    agent.wait_for_a_look(pair.receiver.inode()?)?;
    let addr = std::net::SocketAddrV4::new(pair.veth.b_addr, PORT);
    let _listener = pair
        .receiver
        .run(|| bpf_tests::sockets::listener_with_backlog(addr, 8))??;
    let _clients = pair.sender.run(|| {
        (0..40)
            .map(|_| bpf_tests::sockets::connect_nonblocking(addr))
            .collect::<anyhow::Result<Vec<_>>>()
    })??;
    let top = format!(
        "{} top --agent http://{} --interval 0.5",
        nettune_bin()?.display(),
        agent.addr
    );
    let session = Session::start("top-listeners", 130, 30, &wrapped(&top))?;
    session.wait_for(Duration::from_secs(20), "the table", |s| {
        s.contains("workloads (")
    })?;
    session.send(&["l"])?;
    let port = PORT.to_string();
    let screen = session.wait_for(Duration::from_secs(20), "the flooded listener", |s| {
        s.contains("listeners (") && row(s, &port).is_some()
    })?;
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/nettune-top-listeners.txt");
    let _ = std::fs::write(shot, &screen);
    let rows = data_rows(&screen);
    println!(
        "    listeners view, first rows: {:?}",
        &rows[..rows.len().min(3)]
    );
    // POD PORT PROCESS QUEUE/LIMIT(bar, n/m) ASKED SOMAXCONN OVFL/s
    let first = rows.first().context("no listener rows")?;
    ensure!(
        first.get(1) == Some(&port.as_str()),
        "the flooded listener is not first: {rows:?}"
    );
    ensure!(
        first.contains(&"9/8") && first.contains(&"8") && first.contains(&"4096"),
        "row lacks queue 9/8, asked 8 or somaxconn 4096: {first:?}"
    );
    ensure!(
        screen.contains("asked listen() for 8") && screen.contains("raising it changes nothing"),
        "the detail pane does not explain the limit:\n{screen}"
    );
    session.send(&["q"])?;
    session.wait_for(Duration::from_secs(5), "top to exit", |s| {
        s.contains("MODE=")
    })?;
    Ok(Outcome::Passed)
}
