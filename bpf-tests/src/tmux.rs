//! Driving a terminal program the way a person does: tmux runs it in a pane of a
//! given size, `send-keys` types, `capture-pane` reads the screen.

use std::time::{Duration, Instant};

use anyhow::bail;

/// A detached tmux session, killed on drop.
pub struct Session {
    name: String,
}

fn tmux(args: &[&str]) -> anyhow::Result<String> {
    xtask::process::tool("tmux", args, "tmux")
}

impl Session {
    /// Starts `command` (run by sh) in a `width`×`height` pane.
    pub fn start(tag: &str, width: u16, height: u16, command: &str) -> anyhow::Result<Self> {
        let name = format!("nettune-{tag}-{}", std::process::id());
        let (w, h) = (width.to_string(), height.to_string());
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            &w,
            "-y",
            &h,
            command,
        ])?;
        Ok(Self { name })
    }

    /// The visible screen, as text.
    pub fn capture(&self) -> anyhow::Result<String> {
        tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    /// Types `keys` (tmux key names or literal text).
    pub fn send(&self, keys: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["send-keys", "-t", self.name.as_str()];
        args.extend_from_slice(keys);
        tmux(&args).map(drop)
    }

    /// Waits until the screen satisfies `ok`, returning it; fails after `timeout`
    /// with the last screen.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture()?;
            if ok(&screen) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                bail!("after {timeout:?}, still waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.name]);
    }
}
