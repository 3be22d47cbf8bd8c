//! The journal: every sysctl nettune manages, with the value it found there, on disk
//! before nettune first writes it.
//!
//! `<state_dir>/journal.json` is replaced atomically (write a temporary file, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new
//! journal, never half of one. The order is always: journal the original, then
//! write the sysctl, then journal the value written — so after a crash at any point
//! `nettune rollback` knows every original. A journal that cannot be parsed is an
//! error, never silently replaced: it may hold the only record of an original.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::tuning::Target;

const FILE: &str = "journal.json";
const VERSION: u32 = 1;

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but cannot be understood.
    #[error(
        "journal {path} is corrupt ({reason}); fix or move it by hand: it may hold the only record of original values"
    )]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
}

/// One managed sysctl in one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// Where.
    pub target: Target,
    /// The value found before nettune's first write: what rollback restores.
    pub original: String,
    /// The last value nettune wrote (absent if the write never completed).
    pub last_written: Option<String>,
    /// Unix times of nettune's writes in the last hour (the hourly budget).
    pub writes: Vec<u64>,
    /// Someone else changed the value after nettune did: hands off.
    pub stood_down: bool,
}

/// The journal file and its entries.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<Entry>,
}

impl Journal {
    /// Opens `<dir>/journal.json` (creating `dir`); a missing file is an empty journal.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let path = dir.join(FILE);
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let entries = match fs::read_to_string(&path) {
            Ok(text) => {
                let disk: OnDisk =
                    serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if disk.version != VERSION {
                    return Err(JournalError::Corrupt {
                        path,
                        reason: format!("version {} (this nettune reads {VERSION})", disk.version),
                    });
                }
                disk.entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(e)),
        };
        Ok(Self { path, entries })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every managed value.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of `sysctl` at `target`, if nettune manages it.
    pub fn entry(&self, sysctl: &str, target: &Target) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.sysctl == sysctl && &e.target == target)
    }

    fn entry_mut(&mut self, sysctl: &str, target: &Target) -> Option<&mut Entry> {
        self.entries
            .iter_mut()
            .find(|e| e.sysctl == sysctl && &e.target == target)
    }

    /// Records `original` for (sysctl, target) unless already recorded; durable on
    /// return.
    pub fn record_original(
        &mut self,
        sysctl: &str,
        target: &Target,
        original: &str,
    ) -> Result<(), JournalError> {
        if self.entry(sysctl, target).is_some() {
            return Ok(());
        }
        self.entries.push(Entry {
            sysctl: sysctl.to_owned(),
            target: target.clone(),
            original: original.to_owned(),
            last_written: None,
            writes: Vec::new(),
            stood_down: false,
        });
        self.persist()
    }

    /// Records a completed write at unix time `now`, keeping an hour of history.
    pub fn record_write(
        &mut self,
        sysctl: &str,
        target: &Target,
        value: &str,
        now: u64,
    ) -> Result<(), JournalError> {
        if let Some(e) = self.entry_mut(sysctl, target) {
            e.last_written = Some(value.to_owned());
            e.writes.retain(|t| now.saturating_sub(*t) < 3600);
            e.writes.push(now);
        }
        self.persist()
    }

    /// Marks (sysctl, target) as managed by someone else from now on.
    pub fn stand_down(&mut self, sysctl: &str, target: &Target) -> Result<(), JournalError> {
        if let Some(e) = self.entry_mut(sysctl, target) {
            e.stood_down = true;
        }
        self.persist()
    }

    /// Forgets (sysctl, target), after a rollback restored it.
    pub fn remove(&mut self, sysctl: &str, target: &Target) -> Result<(), JournalError> {
        self.entries
            .retain(|e| !(e.sysctl == sysctl && &e.target == target));
        self.persist()
    }

    /// Writes the journal atomically and durably.
    fn persist(&self) -> Result<(), JournalError> {
        let io_err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let disk = OnDisk {
            version: VERSION,
            entries: self.entries.clone(),
        };
        let text =
            serde_json::to_string_pretty(&disk).map_err(|e| io_err(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = File::create(&tmp).map_err(io_err)?;
        file.write_all(text.as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        fs::rename(&tmp, &self.path).map_err(io_err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nettune-journal-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn originals_survive_a_reopen_and_are_recorded_once() {
        let d = dir("reopen");
        let mut j = Journal::open(&d).unwrap();
        j.record_original("net.core.somaxconn", &Target::Node, "4096")
            .unwrap();
        j.record_write("net.core.somaxconn", &Target::Node, "8192", 1000)
            .unwrap();
        // A second "original" (e.g. after our own write) must not replace the first.
        j.record_original("net.core.somaxconn", &Target::Node, "8192")
            .unwrap();
        let j = Journal::open(&d).unwrap();
        let e = j.entry("net.core.somaxconn", &Target::Node).unwrap();
        assert_eq!(e.original, "4096");
        assert_eq!(e.last_written.as_deref(), Some("8192"));
        assert_eq!(e.writes, vec![1000]);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn write_history_keeps_one_hour() {
        let d = dir("history");
        let mut j = Journal::open(&d).unwrap();
        j.record_original("net.core.somaxconn", &Target::Node, "1")
            .unwrap();
        for t in [0, 1000, 3000, 4000] {
            j.record_write("net.core.somaxconn", &Target::Node, "2", t)
                .unwrap();
        }
        assert_eq!(
            j.entry("net.core.somaxconn", &Target::Node).unwrap().writes,
            vec![1000, 3000, 4000]
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_corrupt_journal_is_refused_not_replaced() {
        let d = dir("corrupt");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(FILE), "{not json").unwrap();
        let err = Journal::open(&d).unwrap_err().to_string();
        assert!(err.contains("is corrupt"), "{err}");
        assert_eq!(fs::read_to_string(d.join(FILE)).unwrap(), "{not json");
        fs::remove_dir_all(d).unwrap();
    }
}
