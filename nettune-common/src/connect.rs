//! `connect()` failing before a local port was found: the namespace ran out of
//! ephemeral ports (`EADDRNOTAVAIL`).

/// `u32` netns inode → connects that failed for lack of a local port, per-CPU hash.
pub const CONNECT_EADDRNOTAVAIL_MAP: &str = "CONNECT_EADDRNOTAVAIL";
