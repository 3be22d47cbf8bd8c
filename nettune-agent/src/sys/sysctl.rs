//! Sysctl files: from a dotted name to a file under `/proc/sys/net`, and nothing
//! else.
//!
//! Which sysctls nettune may touch is the tuner's allow-list
//! ([`crate::tune::tunables`]); this module adds the second line of defence: a
//! name is turned into a path only if it is `net.` followed by dotted words of
//! `[a-z0-9_]`, so no name can address a file outside `/proc/sys/net` (no `..`,
//! no `/`, no other tree), whatever the caller passes.

use std::path::{Path, PathBuf};

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
