//! Naming a file the kernel identified at mmap time by device and inode.
//! eBPF sends its path within its filesystem (the dentry names up to the
//! filesystem's root); this places that path under each mount of the
//! filesystem the target sees (/proc/PID/mountinfo) and accepts a
//! candidate only when stat through the target's root finds the same
//! device and inode. /proc/PID/maps cannot serve: by the time it is read,
//! another file may be mapped at the address.
use std::{os::unix::fs::MetadataExt, path::Path};

use procfs::process::Process;

use crate::model::{aspace::FileId, stats::FileInfo};

/// The file `id` whose path in its filesystem is `fs_path`, as the target
/// names it; None when no mount of its filesystem leads to that very file
/// (deleted, renamed, or below a mount the target cannot see).
pub fn resolve(pid: u32, id: FileId, fs_path: &str) -> Option<FileInfo> {
    let mounts = Process::new(pid as i32).ok()?.mountinfo().ok()?;
    let majmin = format!("{}:{}", id.major, id.minor);
    mounts
        .into_iter()
        .filter(|m| m.majmin == majmin)
        .filter_map(|m| candidate(&m.root, &m.mount_point.to_string_lossy(), fs_path))
        .find_map(|path| {
            let meta = std::fs::metadata(super::in_target_root(pid, Path::new(&path))).ok()?;
            let same = FileId::from_user_dev(meta.dev(), meta.ino()) == id;
            same.then(|| FileInfo { id, path, size_bytes: Some(meta.size()) })
        })
}

/// `fs_path` seen through a mount of `root` (the directory of the
/// filesystem it shows) at `mount_point`; None when the file lies outside.
fn candidate(root: &str, mount_point: &str, fs_path: &str) -> Option<String> {
    let below = if root == "/" { Some(fs_path) } else { fs_path.strip_prefix(root).filter(|r| r.starts_with('/')) }?;
    Some(if mount_point == "/" { below.to_string() } else { format!("{}{below}", mount_point.trim_end_matches('/')) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_placed_under_the_mount_that_shows_it() {
        assert_eq!(candidate("/", "/", "/srv/index.faiss").as_deref(), Some("/srv/index.faiss"));
        assert_eq!(candidate("/", "/data", "/srv/index.faiss").as_deref(), Some("/data/srv/index.faiss"));
        // A bind mount of /srv at /mnt/s shows /srv/index.faiss as /mnt/s/index.faiss ...
        assert_eq!(candidate("/srv", "/mnt/s", "/srv/index.faiss").as_deref(), Some("/mnt/s/index.faiss"));
        // ... and nothing outside /srv, nor a sibling that shares the prefix.
        assert_eq!(candidate("/srv", "/mnt/s", "/etc/passwd"), None);
        assert_eq!(candidate("/srv", "/mnt/s", "/srv2/x"), None);
    }

    #[test]
    fn a_file_of_this_process_resolves_to_its_path_and_a_wrong_inode_does_not() {
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let meta = std::fs::metadata(&exe).unwrap();
        let id = FileId::from_user_dev(meta.dev(), meta.ino());
        let mounts = Process::myself().unwrap().mountinfo().unwrap();
        // The executable's path within its filesystem: its path minus the mount point of its filesystem.
        let mount = mounts
            .into_iter()
            .filter(|m| m.majmin == format!("{}:{}", id.major, id.minor) && exe.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .unwrap();
        let rel = exe.strip_prefix(&mount.mount_point).unwrap();
        let fs_path = format!("{}/{}", mount.root.trim_end_matches('/'), rel.display());
        let found = resolve(std::process::id(), id, &fs_path).unwrap();
        assert_eq!(Path::new(&found.path), exe);
        assert_eq!(found.size_bytes, Some(meta.size()));
        let other = FileId { inode: meta.ino() + 1, ..id };
        assert!(resolve(std::process::id(), other, &fs_path).is_none());
    }
}
