//! The cgroup v2 hierarchy: from a cgroup id (what `bpf_get_current_cgroup_id`
//! gives, the directory's inode number) back to its path, to tell which pod a
//! process that has since exited was in.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Where the v2 root is mounted: on its own, or systemd's hybrid layout's.
pub const ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// Most directories one search visits: a node's hierarchy has a few thousand.
const MOST_VISITED: usize = 50_000;
/// Deepest a search goes (`kubepods.slice/…/cri-containerd-….scope` is 4).
const DEEPEST: usize = 12;

/// The v2 root, if the node has one.
pub fn root() -> Option<&'static Path> {
    ROOTS
        .iter()
        .map(Path::new)
        .find(|r| r.join("cgroup.controllers").exists())
}

/// The path from the v2 root of the cgroup with id `id`, `/` for the root;
/// `None` when no cgroup has it (it went) or the search ran past its bounds.
pub fn path_of(id: u64) -> Option<String> {
    let root = root()?;
    find(root, id).map(|found| {
        let relative = found.strip_prefix(root).unwrap_or(&found);
        format!("/{}", relative.display())
    })
}

/// Breadth-first search under `root` for the directory whose inode is `id`.
fn find(root: &Path, id: u64) -> Option<PathBuf> {
    let mut level = vec![root.to_path_buf()];
    let mut visited = 0;
    for _ in 0..=DEEPEST {
        let mut next = Vec::new();
        for dir in level {
            visited += 1;
            if visited > MOST_VISITED {
                return None;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            if meta.ino() == id {
                return Some(dir);
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            next.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        if next.is_empty() {
            return None;
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_found_by_its_inode_within_the_bounds() {
        let base = std::env::temp_dir().join(format!("nettune-cgroups-{}", std::process::id()));
        let deep = base.join("kubepods/burstable/podx/ctr");
        fs::create_dir_all(&deep).unwrap();
        let id = fs::metadata(&deep).unwrap().ino();
        assert_eq!(find(&base, id), Some(deep));
        assert_eq!(find(&base, u64::MAX), None);
        fs::remove_dir_all(base).unwrap();
    }
}
