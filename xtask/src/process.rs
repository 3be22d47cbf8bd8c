//! Running commands: with their output shown, captured, streamed with a
//! deadline, or as root. Used by xtask and by the kernel tests (bpf-tests).

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `sudo` can run commands without asking for a password.
pub fn can_sudo() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Describes a command for messages: `program arg arg`.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited output; fails if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout (trimmed) if it succeeds, `None` otherwise
/// (its stderr is discarded): for questions such as "which version is installed".
pub fn output_if_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `cmd` and returns its stdout as it is; fails naming the command and what
/// it printed (stdout, then stderr: some tools report on stdout).
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` (from Debian package `package`, named when it fails) and
/// returns its stdout.
pub fn tool(program: &str, args: &[&str], package: &str) -> anyhow::Result<String> {
    output(Command::new(program).args(args))
        .with_context(|| format!("{program} (Debian package {package})"))
}

/// A command that runs `binary` as root: directly, or through sudo keeping the
/// variables `env` names.
pub fn as_root(binary: &str, env: &[&str]) -> anyhow::Result<Command> {
    if is_root() {
        Ok(Command::new(binary))
    } else if can_sudo() {
        let mut c = Command::new("sudo");
        c.arg(format!("--preserve-env={}", env.join(",")))
            .args(["--", binary]);
        Ok(c)
    } else {
        bail!("{binary} needs root: run as root, or give this user sudo")
    }
}

/// Runs `cmd`, echoing its stdout line by line while keeping it; returns
/// whether it succeeded and what it printed.
pub fn tee(cmd: &mut Command) -> anyhow::Result<(bool, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    let mut captured = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            captured.push_str(&line);
            captured.push('\n');
        }
    }
    Ok((child.wait()?.success(), captured))
}

/// How a command run by [`stream_with_deadline`] ended.
pub struct Streamed {
    /// Its exit status; `None` when it was killed at the deadline.
    pub status: Option<std::process::ExitStatus>,
    /// The last lines it printed (stdout and stderr), for error messages.
    pub tail: Vec<String>,
}

/// Lines of a command's output kept for [`Streamed::tail`].
const TAIL_LINES: usize = 30;

/// Set by SIGINT/SIGTERM while [`stream_with_deadline`] runs: its child is in a
/// process group of its own, which a Ctrl-C on the terminal does not reach.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Runs `cmd` in a process group of its own, stdin from /dev/null, printing each
/// line of its stdout and stderr with `prefix` as it comes. If it is still running
/// after `timeout`, the whole group gets SIGTERM, then SIGKILL 5 s later (a VM's
/// qemu is a grandchild: killing only the child would leave it running).
pub fn stream_with_deadline(
    cmd: &mut Command,
    prefix: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<Streamed> {
    use std::os::unix::process::CommandExt as _;
    use std::time::{Duration, Instant};

    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    let group = i32::try_from(child.id())?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            note_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            note_interrupt as *const () as libc::sighandler_t,
        );
    }
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let signal_group = |signal| {
        // SAFETY: signals the process group we created for this child only.
        unsafe { libc::kill(-group, signal) };
    };
    let deadline = Instant::now() + timeout;
    let mut killed_at = None;
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                show(&mut tail, prefix, line);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Some(child.wait()?);
            }
        }
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let interrupted = INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
        match killed_at {
            None if interrupted => {
                println!("{prefix}interrupted: stopping its process group");
                signal_group(libc::SIGTERM);
                killed_at = Some(Instant::now());
            }
            None if Instant::now() > deadline => {
                println!("{prefix}still running after {timeout:?}: stopping its process group");
                signal_group(libc::SIGTERM);
                killed_at = Some(Instant::now());
            }
            Some(at) if at.elapsed() > Duration::from_secs(5) => {
                signal_group(libc::SIGKILL);
                child.wait()?;
                break None;
            }
            _ => {}
        }
    };
    // Whatever the child left behind in its group goes with it, so the pipes close.
    signal_group(libc::SIGKILL);
    for reader in readers {
        let _ = reader.join();
    }
    for line in rx.try_iter() {
        show(&mut tail, prefix, line);
    }
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("interrupted");
    }
    let status = if killed_at.is_some() { None } else { status };
    Ok(Streamed {
        status,
        tail: tail.into_iter().collect(),
    })
}

/// Prints `line` with `prefix` and keeps it among the last [`TAIL_LINES`].
fn show(tail: &mut std::collections::VecDeque<String>, prefix: &str, line: String) {
    println!("{prefix}{line}");
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}
