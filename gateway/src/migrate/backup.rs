//! Backups of every file `migrate` changes, and the manifest that lets
//! `--rollback` put each one back byte for byte (or remove it when it did not
//! exist). A file is backed up once: a second `migrate` after the installer
//! has rewritten a vhost keeps the first backup, the state before any migrate.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "manifest.json";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file migrate changed.
    pub path: PathBuf,
    /// Its copy in the backup directory; `None`: it did not exist.
    pub backup: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct Manifest {
    pub files: Vec<Entry>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl Manifest {
    /// The manifest in `dir`, or an empty one when there is none yet.
    pub fn load(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub fn has(&self, path: &Path) -> bool {
        self.files.iter().any(|e| e.path == path)
    }

    /// Copy `path` as it is now into `dir` and record it, unless it is
    /// recorded already. The manifest is on disk before this returns, so a
    /// crash after it leaves a rollback that works.
    pub fn back_up(&mut self, dir: &Path, path: &Path) -> Result<(), String> {
        if self.has(path) {
            return Ok(());
        }
        create_private_dir(dir)?;
        let entry = match std::fs::metadata(path) {
            Ok(meta) => {
                let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
                let name = self.backup_name(dir, path);
                write_atomic(&dir.join(&name), &bytes, Some(0o600), None)?;
                Entry {
                    path: path.to_owned(),
                    backup: Some(name),
                    mode: Some(meta.permissions().mode() & 0o7777),
                    uid: Some(meta.uid()),
                    gid: Some(meta.gid()),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entry {
                path: path.to_owned(),
                backup: None,
                mode: None,
                uid: None,
                gid: None,
            },
            Err(e) => return Err(io_err(path, e)),
        };
        self.files.push(entry);
        self.save(dir)
    }

    fn backup_name(&self, dir: &Path, path: &Path) -> String {
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let mut n = self.files.len() + 1;
        loop {
            let name = format!("{n}-{base}");
            if !dir.join(&name).exists() {
                return name;
            }
            n += 1;
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(&dir.join(MANIFEST), &text, Some(0o600), None)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(dir, e))
}

/// Owner and mode a rewritten file keeps.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The mode and owner of `path` now, to give its replacement.
pub fn current_mode(path: &Path) -> (Option<u32>, Option<Owner>) {
    match std::fs::metadata(path) {
        Ok(m) => (
            Some(m.permissions().mode() & 0o7777),
            Some(Owner {
                uid: m.uid(),
                gid: m.gid(),
            }),
        ),
        Err(_) => (None, None),
    }
}

/// Replace `path` whole: a temporary file beside it, renamed over it.
/// `mode` defaults to 0644 (configuration Apache and the gateway read).
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: Option<u32>,
    owner: Option<Owner>,
) -> Result<(), String> {
    crate::files::write_whole(
        path,
        bytes,
        mode.unwrap_or(0o644),
        owner.map(|o| (o.uid, o.gid)),
        crate::files::Existing::Replace,
    )
    .map_err(|e| io_err(path, e))
}

/// What a rollback did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Put back from this backup file.
    From(PathBuf),
    /// Removed: it did not exist before migrate.
    Removed,
    /// Did not exist before migrate and does not now.
    AlreadyAbsent,
}

/// Restore `entry` (or only say what would be done, with `dry_run`).
pub fn restore(dir: &Path, entry: &Entry, dry_run: bool) -> Result<Restored, String> {
    match &entry.backup {
        Some(name) => {
            let src = dir.join(name);
            let bytes = std::fs::read(&src).map_err(|e| io_err(&src, e))?;
            if !dry_run {
                let owner = match (entry.uid, entry.gid) {
                    (Some(uid), Some(gid)) => Some(Owner { uid, gid }),
                    _ => None,
                };
                write_atomic(&entry.path, &bytes, entry.mode, owner)?;
            }
            Ok(Restored::From(src))
        }
        None => {
            if !entry.path.exists() {
                return Ok(Restored::AlreadyAbsent);
            }
            if !dry_run {
                std::fs::remove_file(&entry.path).map_err(|e| io_err(&entry.path, e))?;
            }
            Ok(Restored::Removed)
        }
    }
}

/// After a complete rollback: the backups have served, remove them.
pub fn discard(dir: &Path, manifest: &Manifest) -> Result<(), String> {
    for name in manifest.files.iter().filter_map(|e| e.backup.as_ref()) {
        let p = dir.join(name);
        std::fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
    }
    let m = dir.join(MANIFEST);
    std::fs::remove_file(&m).map_err(|e| io_err(&m, e))?;
    // Only if empty: anything else there is not ours to remove.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
