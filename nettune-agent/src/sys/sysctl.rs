//! Sysctl files: from a dotted name to a file under `/proc/sys/net`, and nothing
//! else.
//!
//! Which sysctls nettune may touch is the tuner's allow-list
//! ([`crate::tune::tunables`]); this module adds the second line of defence: a
//! name is turned into a path only if it is `net.` followed by dotted words of
//! `[a-z0-9_]`, so no name can address a file outside `/proc/sys/net` (no `..`,
//! no `/`, no other tree), whatever the caller passes.

use std::{
    io::{self, Read as _},
    path::{Path, PathBuf},
};

/// Where the kernel shows sysctls.
pub const PROC_SYS: &str = "/proc/sys";

/// Why a name cannot be a sysctl nettune touches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not dotted words of `[a-z0-9_]`.
    #[error("`{0}` is not a sysctl name (dotted words of a-z, 0-9 and _, like net.core.somaxconn)")]
    Malformed(String),
    /// A well-formed name outside `net.*`.
    #[error("`{0}` is outside net.*: nettune never touches other sysctls")]
    NotNet(String),
}

/// Checks that `name` is a well-formed `net.*` sysctl name.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let well_formed = !name.is_empty()
        && name.split('.').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        });
    if !well_formed {
        return Err(NameError::Malformed(name.to_owned()));
    }
    if !name.starts_with("net.") {
        return Err(NameError::NotNet(name.to_owned()));
    }
    Ok(())
}

/// The file of sysctl `name` under `root` (normally [`PROC_SYS`]).
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
}
