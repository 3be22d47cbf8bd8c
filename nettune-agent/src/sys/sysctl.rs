//! Sysctl files: from a dotted name to a file under `/proc/sys/net`, and nothing
//! else.
//!
//! Which sysctls nettune may touch is the tuner's allow-list
//! ([`crate::model::tunables`]); this module adds the second line of defence: a
//! name is turned into a path only if it is `net.` followed by dotted words of
//! `[a-z0-9_]`, so no name can address a file outside `/proc/sys/net` (no `..`,
//! no `/`, no other tree), whatever the caller passes.

use std::{
    io::{self, Read as _},
    path::{Path, PathBuf},
};

pub use crate::model::tunables::{NameError, check_name};

/// Where the kernel shows sysctls.
pub const PROC_SYS: &str = "/proc/sys";

/// The `/proc/sys` the agent reads and writes, once [`use_root`] set it.
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `root` the `/proc/sys` every later read and write goes through
/// (`tuning.proc_sys`): a container's own `/proc/sys` is read-only unless it
/// is privileged, the node's mounted elsewhere is not. Set once, at start; a
/// second call changes nothing.
pub fn use_root(root: PathBuf) {
    let _ = ROOT.set(root);
}

/// The `/proc/sys` in use: [`use_root`]'s, else [`PROC_SYS`]. A net sysctl
/// file resolves to the namespace of the thread that opens it whichever
/// procfs mount it is opened through.
pub fn root() -> &'static Path {
    ROOT.get().map_or(Path::new(PROC_SYS), PathBuf::as_path)
}

/// The file of sysctl `name` under `root` (normally [`root()`]).
pub fn path_under(root: &Path, name: &str) -> Result<PathBuf, NameError> {
    check_name(name)?;
    Ok(root.join(name.replace('.', "/")))
}

/// Reads a sysctl file with one large `read(2)`.
///
/// Some sysctl handlers cannot continue a read where the previous one stopped:
/// `ip_local_reserved_ports` (a "large bitmap") answers a second read with end of
/// file, so `fs::read_to_string`, which starts with a 32-byte probe, gets its
/// first 32 bytes and nothing more.
pub fn read_file(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut bytes = vec![0; 64 * 1024];
    let mut len = 0;
    loop {
        let n = file.read(&mut bytes[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if len == bytes.len() {
            bytes.resize(bytes.len() * 2, 0);
        }
    }
    bytes.truncate(len);
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_under_proc_sys_net_only() {
        assert_eq!(
            path_under(Path::new(PROC_SYS), "net.core.somaxconn").unwrap(),
            Path::new("/proc/sys/net/core/somaxconn")
        );
        for bad in [
            "net/../../kernel/core_pattern",
            "net..core",
            "",
            "NET.core.somaxconn",
            "net.core.somaxconn/../../x",
        ] {
            assert_eq!(
                path_under(Path::new(PROC_SYS), bad),
                Err(NameError::Malformed(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            check_name("kernel.core_pattern"),
            Err(NameError::NotNet("kernel.core_pattern".into()))
        );
    }

    #[test]
    fn every_tunable_maps_under_proc_sys_net() {
        for t in crate::model::tunables::ALL {
            let path = path_under(Path::new(PROC_SYS), t.name).unwrap();
            assert!(path.starts_with("/proc/sys/net/"), "{}", path.display());
        }
    }
}
