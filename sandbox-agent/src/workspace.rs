//! Files in a session's workspace, reached only through paths that stay inside it.
//!
//! A path is checked twice: lexically (relative, no `..`, no empty or `.` parts, no NUL) and then
//! walked component by component with `openat(O_NOFOLLOW)` from the workspace's directory fd, so
//! a symlink anywhere (including one the code plants between our check and our use) is refused
//! rather than followed. Uploads stream into a scratch file and are renamed into place only when
//! complete, so a refused upload changes nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use antwort_common::agent_api::{FileChange, FileChangeKind, FileInfo, FileList};

use crate::interpreter::process::Ownership;
use crate::{Error, Result};

/// Longest accepted relative path, in bytes.
const MAX_PATH_BYTES: usize = 1024;

/// A validated relative path: its parent components and its file name.
#[derive(Debug, Clone)]
pub struct RelPath {
    parents: Vec<String>,
    name: String,
}

impl RelPath {
    /// Lexical checks; the file system is not touched.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |why: &str| Err(Error::BadPath(format!("{raw:?}: {why}")));
        if raw.is_empty() {
            return bad("empty");
        }
        if raw.len() > MAX_PATH_BYTES {
            return bad("too long");
        }
        if raw.contains('\0') {
            return bad("contains NUL");
        }
        if raw.starts_with('/') {
            return bad("absolute paths are not allowed");
        }
        let mut parts: Vec<String> = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => return bad("empty or `.` component"),
                ".." => return bad("`..` is not allowed"),
                p if p.len() > 255 => return bad("component longer than 255 bytes"),
                p => parts.push(p.to_string()),
            }
        }
        let name = parts.pop().expect("at least one component");
        Ok(RelPath { parents: parts, name })
    }

    pub fn display(&self) -> String {
        let mut all = self.parents.clone();
        all.push(self.name.clone());
        all.join("/")
    }
}

fn open_dir(root: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(root, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::Internal(format!("open workspace {}: {e}", root.display())))
}

/// Walks to the parent directory of `path`, refusing symlinks; creates missing directories
/// (owned by `owner`, with its mode) when asked.
fn open_parent(root: &Path, path: &RelPath, create: Option<Ownership>) -> Result<OwnedFd> {
    let mut dir = open_dir(root)?;
    for part in &path.parents {
        if let Some(owner) = create {
            match mkdirat(&dir, part.as_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    let fd = open_subdir(&dir, part, path)?;
                    let _ = fchown(&fd, Some(uid(owner)), Some(gid(owner)));
                    let _ = fchmod(&fd, Mode::from_bits_truncate(dir_mode(owner)));
                    dir = fd;
                    continue;
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::Internal(format!("mkdir {part}: {e}"))),
            }
        }
        dir = open_subdir(&dir, part, path)?;
    }
    Ok(dir)
}

fn open_subdir(dir: &OwnedFd, part: &str, path: &RelPath) -> Result<OwnedFd> {
    openat(
        dir,
        part,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => Error::FileNotFound(path.display()),
        Errno::ELOOP | Errno::ENOTDIR => {
            Error::BadPath(format!("{}: `{part}` is a symlink or not a directory", path.display()))
        }
        e => Error::Internal(format!("open {part}: {e}")),
    })
}

/// Opens a regular file for reading; returns it with its size.
pub fn open_file(root: &Path, path: &RelPath) -> Result<(File, u64)> {
    let dir = open_parent(root, path, None)?;
    let fd = openat(
        &dir,
        path.name.as_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => Error::FileNotFound(path.display()),
        Errno::ELOOP => Error::BadPath(format!("{}: is a symlink", path.display())),
        e => Error::Internal(format!("open {}: {e}", path.display())),
    })?;
    let stat = fstat(&fd).map_err(|e| Error::Internal(format!("stat: {e}")))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Error::BadPath(format!("{}: not a regular file", path.display())));
    }
    Ok((File::from(fd), stat.st_size as u64))
}

/// Deletes a regular file (or symlink, which is removed, not followed).
pub fn delete(root: &Path, path: &RelPath) -> Result<()> {
    let dir = open_parent(root, path, None)?;
    unlinkat(&dir, path.name.as_str(), UnlinkatFlags::NoRemoveDir).map_err(|e| match e {
        Errno::ENOENT => Error::FileNotFound(path.display()),
        Errno::EISDIR => Error::BadPath(format!("{}: is a directory", path.display())),
        e => Error::Internal(format!("delete {}: {e}", path.display())),
    })
}

/// Moves a finished upload from `scratch/tmp_name` to `path` (creating parent directories),
/// hands it to `owner`, and describes it.
pub fn install(
    root: &Path,
    scratch: &Path,
    tmp_name: &str,
    path: &RelPath,
    owner: Ownership,
) -> Result<FileInfo> {
    let from = open_dir(scratch)?;
    let tmp = openat(&from, tmp_name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW, Mode::empty())
        .map_err(|e| Error::Internal(format!("open upload: {e}")))?;
    fchown(&tmp, Some(uid(owner)), Some(gid(owner)))
        .map_err(|e| Error::Internal(format!("chown upload: {e}")))?;
    fchmod(&tmp, Mode::from_bits_truncate(owner.file_mode as _))
        .map_err(|e| Error::Internal(format!("chmod upload: {e}")))?;
    let stat = fstat(&tmp).map_err(|e| Error::Internal(format!("stat: {e}")))?;
    let dir = open_parent(root, path, Some(owner))?;
    renameat(&from, tmp_name, &dir, path.name.as_str()).map_err(|e| match e {
        Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST => {
            Error::BadPath(format!("{}: is a directory", path.display()))
        }
        e => Error::Internal(format!("rename upload: {e}")),
    })?;
    Ok(FileInfo {
        path: path.display(),
        size_bytes: stat.st_size as u64,
        modified_at: stat.st_mtime.max(0) as u64,
    })
}

fn uid(owner: Ownership) -> Uid {
    Uid::from_raw(owner.uid)
}

fn gid(owner: Ownership) -> Gid {
    Gid::from_raw(owner.gid)
}

/// Directories below the workspace get the owner's mode, minus the setuid bit.
fn dir_mode(owner: Ownership) -> nix::libc::mode_t {
    (owner.dir_mode & 0o3777) as nix::libc::mode_t
}

/// One file's identity for change detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

/// Regular files under `root` (not following symlinks), at most `max` of them.
pub fn scan(root: &Path, max: usize) -> (BTreeMap<String, Stamp>, bool) {
    let mut files = BTreeMap::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    let mut truncated = false;
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if files.len() >= max {
                truncated = true;
                return (files, truncated);
            }
            let Ok(name) = entry.file_name().into_string() else { continue };
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.file_type().is_dir() {
                stack.push((entry.path(), rel));
            } else if meta.file_type().is_file() {
                let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
                files.insert(rel, Stamp { size: meta.len(), mtime_ns, inode: meta.ino() });
            }
        }
    }
    (files, truncated)
}

/// The listing of `GET .../files`.
pub fn list(root: &Path, max: usize) -> FileList {
    let (files, truncated) = scan(root, max);
    let files = files
        .into_iter()
        .map(|(path, stamp)| FileInfo {
            path,
            size_bytes: stamp.size,
            modified_at: (stamp.mtime_ns / 1_000_000_000).max(0) as u64,
        })
        .collect();
    FileList { files, truncated }
}

/// What changed between two scans.
pub fn diff(before: &BTreeMap<String, Stamp>, after: &BTreeMap<String, Stamp>) -> Vec<FileChange> {
    let mut changes = Vec::new();
    for (path, stamp) in after {
        let change = match before.get(path) {
            None => Some(FileChangeKind::Created),
            Some(old) if old != stamp => Some(FileChangeKind::Modified),
            Some(_) => None,
        };
        if let Some(change) = change {
            changes.push(FileChange { path: path.clone(), change, size_bytes: stamp.size });
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        changes.push(FileChange {
            path: path.clone(),
            change: FileChangeKind::Deleted,
            size_bytes: 0,
        });
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

/// Seconds since the epoch, for API timestamps.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_checks() {
        for bad in ["", "/etc/passwd", "../x", "a/../../etc/passwd", "a//b", "./a", "a/.", "a\0b"] {
            assert!(matches!(RelPath::parse(bad), Err(Error::BadPath(_))), "{bad:?} accepted");
        }
        let ok = RelPath::parse("dir/sub/file.txt").expect("valid");
        assert_eq!(ok.display(), "dir/sub/file.txt");
        assert_eq!(ok.parents, vec!["dir", "sub"]);
    }

    #[test]
    fn symlinks_are_refused_not_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "s").expect("write");
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("s"))
            .expect("symlink");
        let through_dir = RelPath::parse("link/secret").expect("lexically fine");
        assert!(matches!(open_file(root.path(), &through_dir), Err(Error::BadPath(_))));
        let file_link = RelPath::parse("s").expect("lexically fine");
        assert!(matches!(open_file(root.path(), &file_link), Err(Error::BadPath(_))));
        assert!(matches!(delete(root.path(), &through_dir), Err(Error::BadPath(_))));
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn diff_reports_created_modified_deleted() {
        let stamp = |size| Stamp { size, mtime_ns: 1, inode: 1 };
        let before = BTreeMap::from([("a".to_string(), stamp(1)), ("b".to_string(), stamp(1))]);
        let after = BTreeMap::from([("a".to_string(), stamp(2)), ("c".to_string(), stamp(3))]);
        let kinds: Vec<_> = diff(&before, &after).into_iter().map(|c| (c.path, c.change)).collect();
        assert_eq!(
            kinds,
            vec![
                ("a".into(), FileChangeKind::Modified),
                ("b".into(), FileChangeKind::Deleted),
                ("c".into(), FileChangeKind::Created)
            ]
        );
    }
}
