//! Small per-namespace counters: connect() failures for lack of a local port.

/// `u32` netns inode → connect() calls that failed with `EADDRNOTAVAIL`.
pub const CONNECT_EADDRNOTAVAIL_MAP: &str = "CONNECT_EADDRNOTAVAIL";
