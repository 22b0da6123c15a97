//! Crash-safe replacement of the files in `state.dir`: a reader after a crash
//! or power loss finds the previous file or the new one, never a torn mix.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Write `name` in `dir` through `write`: temporary file in the same
/// directory (so the rename cannot cross filesystems), fsync it, rename it over
/// the old file, fsync the directory so the rename itself is durable.
pub(crate) fn write_atomic<F>(dir: &Path, name: &str, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    // tempfile creates the file 0600: it holds host UUIDs and token digests.
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(name))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    {
        let mut w = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
        write(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

fn temp_prefix(name: &str) -> String {
    format!(".{name}.")
}

/// Remove temporary files a crash left behind; they were never renamed, so
/// nothing depends on them.
pub(crate) fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = temp_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(s) = file_name.to_str() else {
            continue;
        };
        if s.starts_with(&prefix) && s.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Why a persisted file was not used.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Invalid(String),
    Version(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
            ReadError::Invalid(e) => write!(f, "not valid: {e}"),
            ReadError::Version(v) => write!(
                f,
                "format version {v} is not supported (expected {FORMAT_VERSION})"
            ),
        }
    }
}

pub(crate) const FORMAT_VERSION: u64 = 1;

#[derive(Deserialize)]
struct Header {
    version: u64,
}

/// Read a versioned JSON file. `Ok(None)` when it does not exist.
pub(crate) fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, ReadError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    // The version is checked first so a file from a newer release is reported
    // as such instead of as whichever field happens not to parse.
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|e| ReadError::Invalid(e.to_string()))?;
    if header.version != FORMAT_VERSION {
        return Err(ReadError::Version(header.version));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ReadError::Invalid(e.to_string()))
}

/// Rename an untrusted file out of the way, keeping it for the admin to
/// inspect: `<name>.corrupt-<UTC timestamp>`.
pub(crate) fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let stamp = utc_stamp(SystemTime::now());
    let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    for n in 0u32..1000 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let target = path.with_file_name(format!("{base}.corrupt-{stamp}{suffix}"));
        if target.exists() {
            continue;
        }
        fs::rename(path, &target)?;
        return Ok(target);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "too many moved-aside copies with the same timestamp",
    ))
}

fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0)) {
        Ok(dt) => format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        ),
        Err(_) => secs.to_string(),
    }
}

/// Milliseconds since the Unix epoch; times before it count as the epoch.
pub(crate) fn to_unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The inverse of `to_unix_millis`, saturating instead of overflowing.
pub(crate) fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f.json", |w| w.write_all(b"one")).unwrap();
        write_atomic(dir.path(), "f.json", |w| w.write_all(b"two")).unwrap();
        assert_eq!(fs::read(dir.path().join("f.json")).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_old_file_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f.json", |w| w.write_all(b"one")).unwrap();
        let err = write_atomic(dir.path(), "f.json", |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(dir.path().join("f.json")).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f.json", |w| w.write_all(b"{}")).unwrap();
        let mode = fs::metadata(dir.path().join("f.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[test]
    fn stale_temps_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".f.json.abc.tmp"), b"x").unwrap();
        fs::write(dir.path().join("keep.json"), b"x").unwrap();
        remove_stale_temps(dir.path(), "f.json");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("keep.json")]);
    }

    #[test]
    fn move_aside_uses_a_timestamp_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        fs::write(&p, b"1").unwrap();
        let a = move_aside(&p).unwrap();
        fs::write(&p, b"2").unwrap();
        let b = move_aside(&p).unwrap();
        assert_ne!(a, b);
        assert!(!p.exists());
        let name = a.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with("f.json.corrupt-") && name.ends_with('Z'),
            "{name}"
        );
        assert_eq!(fs::read(&a).unwrap(), b"1");
        assert_eq!(fs::read(&b).unwrap(), b"2");
    }

    #[test]
    fn millis_round_trip_and_saturate() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_unix_millis(to_unix_millis(t)), t);
        assert_eq!(to_unix_millis(UNIX_EPOCH - Duration::from_secs(5)), 0);
        let _ = from_unix_millis(u64::MAX);
    }

    #[test]
    fn versions_are_checked_before_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        fs::write(&p, br#"{"version":2,"whatever":[1]}"#).unwrap();
        let r = read_versioned::<serde_json::Value>(&p);
        assert!(matches!(r, Err(ReadError::Version(2))));
        assert!(
            read_versioned::<serde_json::Value>(&dir.path().join("absent"))
                .unwrap()
                .is_none()
        );
    }
}
