//! Writing secret files safely: atomically, mode 0600, in a directory
//! created 0700.
//!
//! Used for anything a provider generates that must not be world-readable
//! (private keys, S3 secret keys). A crash at any point leaves either the old
//! file or the new one, never a half-written file; a temporary file left by a
//! crash is removed by the next write to the same path.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The [fault point](crate::fault) after the temporary file is written and
/// before it is renamed into place: the worst moment to crash.
pub const FAULT_BEFORE_RENAME: &str = "abort-before-rename";

const TEMP_MARKER: &str = ".fedi-tmp-";

/// Writes `contents` to `path` atomically with mode 0600, creating missing
/// parent directories with mode 0700.
pub fn write_private_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let (dir, name) = split(path)?;
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    }
    remove_stale_temporaries(&dir, &name);
    let temp_path = dir.join(format!(".{name}{TEMP_MARKER}{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)?;
        // The mode given to open is masked by the umask; make sure.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        crate::fault::point(FAULT_BEFORE_RENAME);
        std::fs::rename(&temp_path, path)?;
        // Make the rename itself durable.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp_path);
    }
    result
}

/// Removes `path` if it exists; succeeds when it is already gone.
pub fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn split(path: &Path) -> std::io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| std::io::Error::other(format!("`{}` names no file", path.display())))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Temporary files of earlier writes to the same name that crashed.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARKER}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::debug!(path = %entry.path().display(), "removing a temporary file left by a crash");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_directory_0700_and_file_0600() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("a/b/key");
        write_private_atomic(&path, b"secret").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&root.path().join("a/b")), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    }

    #[test]
    fn replaces_and_cleans_stale_temporaries() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("key");
        let stale = root.path().join(".key.fedi-tmp-999999");
        std::fs::write(&stale, b"half").unwrap();
        write_private_atomic(&path, b"one").unwrap();
        write_private_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!stale.exists());
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["key"]);
    }

    #[test]
    fn remove_if_exists_is_repeatable() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("key");
        std::fs::write(&path, b"x").unwrap();
        remove_if_exists(&path).unwrap();
        remove_if_exists(&path).unwrap();
        assert!(!path.exists());
    }
}
