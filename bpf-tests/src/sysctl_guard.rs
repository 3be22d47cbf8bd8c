//! Changing a node-wide sysctl for a test, with the original put back on drop.

use std::path::PathBuf;

/// The sysctl at `path` as it was; restored when this is dropped.
pub struct Restore {
    path: PathBuf,
    original: String,
}

impl Restore {
    /// Remembers `path`'s value, then writes `value` there.
    pub fn set(path: &str, value: &str) -> anyhow::Result<Self> {
        let guard = Self::remember(path)?;
        std::fs::write(path, value)?;
        Ok(guard)
    }

    /// Remembers `path`'s value to put it back on drop, for something else
    /// about to change it (e.g. the CNI bridge plugin and `ip_forward`).
    pub fn remember(path: &str) -> anyhow::Result<Self> {
        Ok(Self {
            path: path.into(),
            original: std::fs::read_to_string(path)?,
        })
    }

    /// Writes `value` again (the guard still restores the first original).
    pub fn write(&self, value: &str) -> anyhow::Result<()> {
        Ok(std::fs::write(&self.path, value)?)
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.original) {
            eprintln!(
                "warning: could not restore {} to {}: {e}",
                self.path.display(),
                self.original.trim()
            );
        }
    }
}
