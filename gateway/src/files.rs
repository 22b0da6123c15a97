//! Replacing a file the admin or Apache reads, whole or not at all: a
//! temporary file beside it (so the rename cannot cross filesystems), given
//! its mode and owner, synced, then renamed over the old one, or linked into
//! place only if nothing is there yet. (Pushed state has its own writer in
//! `state::persist`, which also syncs the directory and streams its body.)

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What to do when `path` already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Fail with [`io::ErrorKind::AlreadyExists`] instead.
    Keep,
}

/// Write `bytes` to `path` with `mode`, and `owner` (uid, gid) when given.
/// Only root can give a file away; as anyone else the file keeps its
/// writer's ownership, so a failed chown is not an error.
pub fn write_whole(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    existing: Existing,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid));
    }
    tmp.as_file().sync_all()?;
    match existing {
        Existing::Replace => tmp.persist(path).map(|_| ()).map_err(|e| e.error),
        Existing::Keep => tmp.persist_noclobber(path).map(|_| ()).map_err(|e| e.error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_or_keeps_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        write_whole(&path, b"one", 0o640, None, Existing::Keep).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        let err = write_whole(&path, b"two", 0o644, None, Existing::Keep).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_whole(&path, b"two", 0o644, None, Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
