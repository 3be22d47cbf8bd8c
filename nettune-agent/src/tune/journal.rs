//! The journal: every sysctl nettune manages, with the value it found there, on disk
//! before nettune first writes it.
//!
//! `<state_dir>/journal.json` is replaced atomically (write a temporary file, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new
//! journal, never half of one. The order is always: journal the original and the
//! value about to be written, then write the sysctl, then journal the value written — so after a crash at any point
//! `nettune rollback` knows every original. A journal that cannot be parsed is an
//! error, never silently replaced: it may hold the only record of an original.
//!
//! Every write is journaled ahead ([`Journal::record_intent`]): the original (on
//! the first write), the value about to be written and the attempt's time, all
//! on disk before the sysctl is written. A process killed between the write and
//! its record ([`Journal::record_write`]) thus leaves a value the journal names
//! as nettune's own ([`Entry::owns`]); a record that fails after the write makes
//! the tuner undo the write.
//!
//! Several processes share the file: the daemon, and `nettune rollback` or `apply`
//! run next to it (`kubectl exec … nettune rollback`). Every change therefore takes
//! an exclusive `flock` on `<state_dir>/journal.lock`, re-reads the file, applies
//! the one change and writes it back, so no process writes back entries another
//! one removed. An enforcing daemon holds that lock for a whole round — read,
//! decide, write ([`Journal::hold`]) — and `nettune rollback` for the whole
//! rollback, so neither acts on what the other is about to change. A rollback
//! leaves a record ([`RolledBack`]) of when it restored a value, with the
//! hour's changes there: a daemon counts it in the cooldown and the hourly
//! budget, so a rollback is never followed by an immediate raise.

use std::{
    fs::{self, File},
    io::Write as _,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::{
    tunables::Tunable,
    tuning::{NamespaceIdentity, Target},
    value::Value,
};

const FILE: &str = "journal.json";
const LOCK_FILE: &str = "journal.lock";
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
    /// The last value nettune wrote and recorded (absent if no write completed).
    pub last_written: Option<String>,
    /// The value nettune is about to write: journaled before the write, cleared
    /// once the write is recorded. Left behind by a crash (or a record that
    /// failed) in between; a current value equal to it is nettune's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// Unix times of nettune's attempts to write here in the last hour, each
    /// journaled with its intent whether or not the write then took: the
    /// cooldown and the hourly budget.
    pub writes: Vec<u64>,
    /// Someone else changed the value after nettune did: hands off.
    pub stood_down: bool,
    /// For a pod's namespace: which namespace it was, so nettune never writes
    /// (or restores) into a later one that got the same inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<NamespaceIdentity>,
}

impl Entry {
    /// The value nettune last left here: its last recorded write, else the
    /// original (nothing nettune wrote took).
    pub fn ours(&self) -> &str {
        self.last_written.as_deref().unwrap_or(&self.original)
    }

    /// Whether `current` is a value nettune put (or left) here: its last
    /// recorded write (else the original), or the value of a pending intent —
    /// written, but the process died (or the journal failed) before recording it.
    pub fn owns(&self, spec: &Tunable, current: &Value) -> bool {
        std::iter::once(self.ours())
            .chain(self.pending.as_deref())
            .any(|v| Value::parse(spec, v).is_ok_and(|v| &v == current))
    }

    /// Why nothing is written or restored here while the namespace found at
    /// the inode (`now`) cannot be proven the journaled one, and the original
    /// to restore by hand if it is.
    pub fn unproven(&self, now: &NamespaceIdentity) -> String {
        let then = self
            .identity
            .as_ref()
            .map_or_else(|| "no mark".to_owned(), ToString::to_string);
        format!(
            "cannot prove {} is the namespace nettune changed {} in (journaled: {then}; now: \
             {now}): nothing written; if it is, restore its original by hand there: sysctl -w \
             {}='{}'",
            self.target, self.sysctl, self.sysctl, self.original
        )
    }
}

/// The journal file and the entries last read from it.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    lock_path: PathBuf,
    entries: Vec<Entry>,
    rolled_back: Vec<RolledBack>,
    /// The exclusive lock, while [`Self::hold`] keeps it.
    held: Option<Lock>,
}

/// A value `nettune rollback` restored within the last hour: when, and the
/// changes nettune made there before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    /// The sysctl's dotted name.
    pub sysctl: String,
    /// Where.
    pub target: Target,
    /// Unix times of nettune's changes there within the hour, the restore last.
    pub changes: Vec<u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rolled_back: Vec<RolledBack>,
}

/// How long a change counts (the hourly budget's window).
const CHANGES_KEPT_SECONDS: u64 = 3600;

/// An `flock` held until dropped.
#[derive(Debug)]
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: unlocks a descriptor this guard owns; closing it would too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Journal {
    /// Opens `<dir>/journal.json` (creating `dir`); a missing file is an empty journal.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let mut journal = Self {
            path: dir.join(FILE),
            lock_path: dir.join(LOCK_FILE),
            entries: Vec::new(),
            rolled_back: Vec::new(),
            held: None,
        };
        fs::create_dir_all(dir).map_err(|e| journal.io_error(e))?;
        journal.reload()?;
        Ok(journal)
    }

    fn io_error(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Takes the exclusive lock and keeps it until [`Self::release`]: every
    /// read and change in between is this process's alone (other processes'
    /// reads and changes wait), so a decision made from what was read is
    /// written before anyone else can change it.
    pub fn hold(&mut self) -> Result<(), JournalError> {
        if self.held.is_none() {
            self.held = Some(self.take_lock(true)?);
        }
        Ok(())
    }

    /// Lets go of what [`Self::hold`] took.
    pub fn release(&mut self) {
        self.held = None;
    }

    /// The lock to read (shared) or change (exclusive) the file; nothing to take
    /// while [`Self::hold`] keeps it.
    fn lock(&self, exclusive: bool) -> Result<Option<Lock>, JournalError> {
        if self.held.is_some() {
            return Ok(None);
        }
        self.take_lock(exclusive).map(Some)
    }

    /// Takes the journal's lock, waiting for it.
    fn take_lock(&self, exclusive: bool) -> Result<Lock, JournalError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| self.io_error(e))?;
        let how = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), how) } != 0 {
            return Err(self.io_error(std::io::Error::last_os_error()));
        }
        Ok(Lock(file))
    }

    /// The journal on disk now (the caller holds the lock).
    fn read_disk(&self) -> Result<OnDisk, JournalError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => {
                let disk: OnDisk =
                    serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                if disk.version != VERSION {
                    return Err(JournalError::Corrupt {
                        path: self.path.clone(),
                        reason: format!("version {} (this nettune reads {VERSION})", disk.version),
                    });
                }
                Ok(disk)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OnDisk {
                version: VERSION,
                ..OnDisk::default()
            }),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// Re-reads the file: what other processes changed becomes visible.
    pub fn reload(&mut self) -> Result<(), JournalError> {
        let _lock = self.lock(false)?;
        let disk = self.read_disk()?;
        (self.entries, self.rolled_back) = (disk.entries, disk.rolled_back);
        Ok(())
    }

    /// Under the exclusive lock: re-reads the file, applies `change`, writes it
    /// back (if `change` says it changed anything).
    fn modify(&mut self, change: impl FnOnce(&mut OnDisk) -> bool) -> Result<(), JournalError> {
        let _lock = self.lock(true)?;
        let mut disk = self.read_disk()?;
        if change(&mut disk) {
            self.persist(&disk)?;
        }
        (self.entries, self.rolled_back) = (disk.entries, disk.rolled_back);
        Ok(())
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every managed value, as last read.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of `sysctl` at `target`, if nettune manages it.
    pub fn entry(&self, sysctl: &str, target: &Target) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.sysctl == sysctl && &e.target == target)
    }

    /// Journals the intent to write `value` to (sysctl, target) at unix time
    /// `now`, durably, before the write: the original `current` (on the first
    /// write, in the namespace `identity` names), the value about to be written
    /// and the attempt (which the cooldown and the hourly budget count). A
    /// pending intent that `current` shows took is adopted as written first.
    pub fn record_intent(
        &mut self,
        sysctl: &str,
        target: &Target,
        current: &str,
        identity: Option<NamespaceIdentity>,
        value: &str,
        now: u64,
    ) -> Result<(), JournalError> {
        self.modify(|OnDisk { entries, .. }| {
            let at = match entries
                .iter()
                .position(|e| e.sysctl == sysctl && &e.target == target)
            {
                Some(at) => at,
                None => {
                    entries.push(Entry {
                        sysctl: sysctl.to_owned(),
                        target: target.clone(),
                        original: current.to_owned(),
                        last_written: None,
                        pending: None,
                        writes: Vec::new(),
                        stood_down: false,
                        identity,
                    });
                    entries.len() - 1
                }
            };
            let e = &mut entries[at];
            // The same namespace under the label people know it by now.
            e.target = target.clone();
            if e.pending.as_deref() == Some(current) {
                e.last_written = e.pending.take();
            }
            e.pending = Some(value.to_owned());
            e.writes
                .retain(|t| now.saturating_sub(*t) < CHANGES_KEPT_SECONDS);
            e.writes.push(now);
            true
        })
    }

    /// Applies `change` to the entry of (sysctl, target), if there is one.
    fn modify_entry(
        &mut self,
        sysctl: &str,
        target: &Target,
        change: impl FnOnce(&mut Entry),
    ) -> Result<(), JournalError> {
        self.modify(|OnDisk { entries, .. }| {
            match entries
                .iter_mut()
                .find(|e| e.sysctl == sysctl && &e.target == target)
            {
                Some(e) => {
                    change(e);
                    true
                }
                None => false,
            }
        })
    }

    /// Records `identity` as the marks the namespace of (sysctl, target) is
    /// known by now (judged the journaled one: a mark gained since is kept for
    /// when another goes).
    pub fn remark(
        &mut self,
        sysctl: &str,
        target: &Target,
        identity: NamespaceIdentity,
    ) -> Result<(), JournalError> {
        self.modify_entry(sysctl, target, |e| e.identity = Some(identity))
    }

    /// Records that the intended write of `value` took (and how the kernel
    /// reads it back): nettune's value from now on.
    pub fn record_write(
        &mut self,
        sysctl: &str,
        target: &Target,
        value: &str,
    ) -> Result<(), JournalError> {
        self.modify_entry(sysctl, target, |e| {
            e.last_written = Some(value.to_owned());
            e.pending = None;
        })
    }

    /// Marks (sysctl, target) as managed by someone else from now on.
    pub fn stand_down(&mut self, sysctl: &str, target: &Target) -> Result<(), JournalError> {
        self.modify_entry(sysctl, target, |e| e.stood_down = true)
    }

    /// Forgets (sysctl, target): its namespace is gone, or it is not a sysctl
    /// nettune manages.
    pub fn remove(&mut self, sysctl: &str, target: &Target) -> Result<(), JournalError> {
        self.modify(|OnDisk { entries, .. }| {
            let before = entries.len();
            entries.retain(|e| !(e.sysctl == sysctl && &e.target == target));
            entries.len() != before
        })
    }

    /// Forgets (sysctl, target) after a rollback restored its original at
    /// `now`, leaving a [`RolledBack`] record of it and of the hour's changes.
    pub fn forget_restored(
        &mut self,
        sysctl: &str,
        target: &Target,
        now: u64,
    ) -> Result<(), JournalError> {
        self.modify(
            |OnDisk {
                 entries,
                 rolled_back,
                 ..
             }| {
                let Some(at) = entries
                    .iter()
                    .position(|e| e.sysctl == sysctl && &e.target == target)
                else {
                    return false;
                };
                let entry = entries.remove(at);
                rolled_back.retain(|r| !(r.sysctl == sysctl && &r.target == target));
                let mut changes = entry.writes;
                changes.push(now);
                rolled_back.push(RolledBack {
                    sysctl: entry.sysctl,
                    target: entry.target,
                    changes,
                });
                for r in rolled_back.iter_mut() {
                    r.changes
                        .retain(|t| now.saturating_sub(*t) < CHANGES_KEPT_SECONDS);
                }
                rolled_back.retain(|r| !r.changes.is_empty());
                true
            },
        )
    }

    /// The record of a rollback of (sysctl, target) within the hour, if any.
    pub fn rolled_back(&self, sysctl: &str, target: &Target) -> Option<&RolledBack> {
        self.rolled_back
            .iter()
            .find(|r| r.sysctl == sysctl && &r.target == target)
    }

    /// Removes the temporary files of earlier writes that never reached their
    /// rename (a writer killed, or out of disk). Only under the exclusive lock:
    /// every write holds it, so no temporary file found then is in use.
    fn remove_leftovers(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let prefix = format!("{}.tmp.", name.to_string_lossy());
        let Ok(files) = fs::read_dir(dir) else {
            return;
        };
        for file in files.flatten() {
            if file.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(file.path());
            }
        }
    }

    /// Writes `disk` atomically and durably (the caller holds the lock).
    fn persist(&self, disk: &OnDisk) -> Result<(), JournalError> {
        let text = serde_json::to_string_pretty(disk)
            .map_err(|e| self.io_error(std::io::Error::other(e)))?;
        self.remove_leftovers();
        // Unique per process, so no other writer can clobber it.
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let written = File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            // Out of disk, read-only: the journal stays as it was, and no
            // half-written copy stays next to it.
            let _ = fs::remove_file(&tmp);
            return Err(self.io_error(e));
        }
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
