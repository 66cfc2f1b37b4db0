//! Rules for the paths of private files on the deploying machine (private
//! keys, S3 secret keys): where they may be, and how they are read and
//! written so that no other local user can plant, swap or read them.
//!
//! A [`PrivatePath`] is checked when it is parsed:
//!
//! - **absolute**, with no `.` or `..` component: where key material lands
//!   must not depend on the directory NixOps4 was started in;
//! - **not in the Nix store** (every local user can read it) and not a
//!   directory.
//!
//! And when it is used:
//!
//! - **no directory on the way may be changed by another user**: every
//!   existing directory from `/` down to the file's parent is owned by us or
//!   root and is not writable by group or others. The one exception is a
//!   sticky directory (`/tmp`) *above* the parent: there others may create
//!   entries but not replace ours, and the parent we use must then be ours
//!   (created 0700, or checked). The parent itself is never allowed to be
//!   writable by others, sticky or not, so no one else can put a file where
//!   we read or write ours. Symbolic links on the way are followed only when
//!   they are owned by us or root, and the directories they lead to are
//!   checked the same way;
//! - **the file itself is never reached through a symbolic link**: it is
//!   opened with `O_NOFOLLOW` (and `O_NONBLOCK`, so a FIFO cannot hang us),
//!   must be a regular file owned by us, and must not be readable or
//!   writable by group or others; otherwise it is refused, not adopted and
//!   not overwritten;
//! - missing directories are created with mode 0700, one at a time, each
//!   checked after it exists; the file is written atomically with mode 0600
//!   ([`crate::files::write_private_atomic`]: a new temporary file created
//!   with `O_EXCL`, renamed over the old one, which replaces a symbolic link
//!   rather than following it).
//!
//! Every refusal is an [`Error`] naming the input field, the path, what is
//! wrong and what to do.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};

/// A private file's path that passed the static rules; see the [module
/// docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivatePath {
    field: String,
    path: PathBuf,
}

/// The user id files must belong to: the effective user running us.
fn our_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

impl PrivatePath {
    /// Checks `path`, the value of the input `field`: absolute, no `.` or
    /// `..`, not in the Nix store, names a file. Looks at the file system
    /// only to refuse an existing directory.
    pub fn parse(field: &str, path: &Path) -> Result<PrivatePath> {
        check_absolute(field, path)?;
        if path.starts_with("/nix/store") {
            return Err(Error::invalid_input(
                field,
                format!(
                    "`{}` is in the Nix store, which every local user can read",
                    path.display()
                ),
            )
            .with_hint("choose a path outside the store, e.g. /var/lib/deployer/keys/<name>"));
        }
        if path.file_name().is_none() || path.parent().is_none() {
            return Err(
                Error::invalid_input(field, format!("`{}` names no file", path.display()))
                    .with_hint("give the path of the file itself, e.g. /var/lib/deployer/keys/id"),
            );
        }
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(Error::invalid_input(
                field,
                format!("`{}` is a directory", path.display()),
            )
            .with_hint("give the path of the file itself, e.g. <directory>/id_ed25519"));
        }
        Ok(PrivatePath {
            field: field.to_string(),
            path: path.to_path_buf(),
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input field it came from.
    pub fn field(&self) -> &str {
        &self.field
    }

    fn parent(&self) -> &Path {
        // `parse` made sure there is one.
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// Checks the existing directories on the way (see the [module
    /// docs](self)); a missing part is fine, [`PrivatePath::write`] creates
    /// it.
    pub fn check_directories(&self) -> Result<()> {
        check_directories(&self.field, self.parent(), false)
    }

    /// Reads the file: `None` when there is none. Refuses a symbolic link, a
    /// file that is not a regular file, not owned by us or readable or
    /// writable by others, and a directory on the way that others can
    /// change.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        self.check_directories()?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(&self.path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(Error::conflict(format!(
                    "`{}` is a symbolic link; a private file is never reached through one (it \
                     could point at a file someone else chose)",
                    self.path.display()
                ))
                .with_field(&self.field)
                .with_hint(
                    "replace the link by the file itself (mode 0600, owned by the deploying \
                     user), or choose another path",
                ));
            }
            Err(e) => {
                return Err(Error::invalid_input(
                    &self.field,
                    format!("cannot read `{}`", self.path.display()),
                )
                .with_source(std::io::Error::from(e))
                .with_hint("the deploying user must be able to read the file"));
            }
        };
        let mut file = File::from(fd);
        let metadata = file.metadata().map_err(|e| {
            Error::internal(format!("cannot stat `{}`", self.path.display())).with_source(e)
        })?;
        self.check_file(&metadata)?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(|e| {
            Error::invalid_input(
                &self.field,
                format!("cannot read `{}`", self.path.display()),
            )
            .with_source(e)
            .with_hint("the deploying user must be able to read the file")
        })?;
        Ok(Some(contents))
    }

    fn check_file(&self, metadata: &std::fs::Metadata) -> Result<()> {
        let path = self.path.display();
        if !metadata.is_file() {
            return Err(Error::conflict(format!(
                "`{path}` exists but is not a regular file; it is left untouched"
            ))
            .with_field(&self.field)
            .with_hint("move it away or choose another path"));
        }
        let uid = our_uid();
        if metadata.uid() != uid {
            return Err(Error::conflict(format!(
                "`{path}` belongs to uid {}, not to the deploying user (uid {uid}); a file \
                 someone else put there is not adopted, and it is left untouched",
                metadata.uid()
            ))
            .with_field(&self.field)
            .with_hint(
                "if the file is really yours, `chown` it to the deploying user; otherwise move \
                 it away or choose another path",
            ));
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::conflict(format!(
                "`{path}` has mode {mode:04o}: group or others may read or change it, so it \
                 can no longer be trusted as private; it is left untouched"
            ))
            .with_field(&self.field)
            .with_hint(
                "if it is still secret, `chmod 600` it and run again; if others may have read \
                 it, replace it (for a key: move it away, or change `rotationTrigger`)",
            ));
        }
        Ok(())
    }

    /// Writes `contents` atomically with mode 0600, creating missing
    /// directories with mode 0700 and checking every directory on the way.
    pub fn write(&self, contents: &[u8]) -> Result<()> {
        check_directories(&self.field, self.parent(), true)?;
        crate::files::write_private_atomic(&self.path, contents).map_err(|e| {
            Error::invalid_input(
                &self.field,
                format!("cannot write `{}`", self.path.display()),
            )
            .with_source(e)
            .with_hint("choose a path in a directory the deploying user can write")
        })
    }

    /// Removes the file (never what a symbolic link there points at);
    /// succeeds when it is already gone.
    pub fn remove(&self) -> Result<()> {
        self.check_directories()?;
        crate::files::remove_if_exists(&self.path).map_err(|e| {
            Error::internal(format!("cannot remove `{}`", self.path.display()))
                .with_field(&self.field)
                .with_source(e)
        })
    }
}

/// Refuses a relative path and one with a `.` or `..` component, naming
/// `field`.
pub fn check_absolute(field: &str, path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(Error::invalid_input(
            field,
            format!(
                "`{}` is a relative path; it would depend on the directory the deployment was \
                 started in",
                path.display()
            ),
        )
        .with_hint("give an absolute path, e.g. /var/lib/deployer/keys/<name>"));
    }
    // `Path::components` drops inner `.`; look at the text too.
    let text = path.as_os_str().as_encoded_bytes();
    let dotted = path.components().any(|c| matches!(c, Component::ParentDir))
        || text
            .split(|b| *b == b'/')
            .any(|part| part == b"." || part == b"..");
    if dotted {
        return Err(Error::invalid_input(
            field,
            format!(
                "`{}` has a `.` or `..` component; give the path without them",
                path.display()
            ),
        )
        .with_hint("write the absolute path as it is meant, e.g. /var/lib/deployer/keys/<name>"));
    }
    Ok(())
}

/// Checks (and with `create`, makes) the directories from `/` to `dir`.
fn check_directories(field: &str, dir: &Path, create: bool) -> Result<()> {
    let mut current = PathBuf::from("/");
    let parts: Vec<_> = dir.components().skip(1).collect();
    check_directory(field, &current, parts.is_empty())?;
    for (i, part) in parts.iter().enumerate() {
        current.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&current) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Ok(());
                }
                match std::fs::DirBuilder::new().mode(0o700).create(&current) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Error::invalid_input(
                            field,
                            format!("cannot create the directory `{}`", current.display()),
                        )
                        .with_source(e)
                        .with_hint("choose a path in a directory the deploying user can write"));
                    }
                }
            }
            Err(e) => {
                return Err(Error::invalid_input(
                    field,
                    format!("cannot look at `{}`", current.display()),
                )
                .with_source(e));
            }
        }
        check_directory(field, &current, last)?;
    }
    Ok(())
}

/// One step of [`check_directories`]: `path` exists.
fn check_directory(field: &str, path: &Path, is_parent: bool) -> Result<()> {
    let uid = our_uid();
    let metadata = std::fs::symlink_metadata(path).map_err(|e| {
        Error::invalid_input(field, format!("cannot look at `{}`", path.display())).with_source(e)
    })?;
    if metadata.file_type().is_symlink() {
        if metadata.uid() != uid && metadata.uid() != 0 {
            return Err(unsafe_directory(
                field,
                path,
                format!(
                    "is a symbolic link owned by uid {}, who could point it anywhere",
                    metadata.uid()
                ),
            ));
        }
        // Follow it, and check where it leads.
        let target = std::fs::canonicalize(path).map_err(|e| {
            Error::invalid_input(field, format!("cannot resolve `{}`", path.display()))
                .with_source(e)
        })?;
        return check_directories(field, &target, false);
    }
    if !metadata.is_dir() {
        return Err(Error::invalid_input(
            field,
            format!("`{}` is not a directory", path.display()),
        )
        .with_hint("choose a path whose parent directories exist as directories"));
    }
    if metadata.uid() != uid && metadata.uid() != 0 {
        return Err(unsafe_directory(
            field,
            path,
            format!("belongs to uid {}, not to us or root", metadata.uid()),
        ));
    }
    let mode = metadata.mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (is_parent || !sticky) {
        let why = if is_parent && sticky {
            format!(
                "has mode {:04o}: others can create files in it (sticky or not, the directory \
                 holding a private file must be writable only by its owner)",
                mode & 0o7777
            )
        } else {
            format!(
                "has mode {:04o}: group or others can create, rename or remove files in it",
                mode & 0o7777
            )
        };
        return Err(unsafe_directory(field, path, why));
    }
    Ok(())
}

fn unsafe_directory(field: &str, path: &Path, why: String) -> Error {
    Error::invalid_input(
        field,
        format!(
            "the directory `{}` {why}; a private file there could be planted, swapped or \
             redirected by another user",
            path.display()
        ),
    )
    .with_hint(
        "keep private files in a directory only the deploying user (or root) can change, e.g. \
         /var/lib/deployer/keys (mode 0700), or a new subdirectory the provider creates: point \
         the path below one that does not exist yet",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private(path: &Path) -> PrivatePath {
        PrivatePath::parse("privateKeyPath", path).unwrap()
    }

    #[test]
    fn relative_and_dotted_paths_are_refused_naming_the_field() {
        for (path, expected) in [
            ("keys/id", "is a relative path"),
            ("/var/lib/../etc/id", "`..` component"),
            ("/var/./lib/id", "`..` component"),
        ] {
            let error = PrivatePath::parse("privateKeyPath", Path::new(path)).unwrap_err();
            let text = error.to_string();
            assert!(
                text.starts_with("invalid input `privateKeyPath`:"),
                "{text}"
            );
            assert!(text.contains(expected), "{text}");
            assert!(text.contains("hint: "), "{text}");
        }
        assert!(PrivatePath::parse("k", Path::new("/nix/store/abc-key")).is_err());
        assert!(PrivatePath::parse("k", Path::new("/")).is_err());
    }

    #[test]
    fn writes_0600_below_new_0700_directories_and_reads_back() {
        let root = tempfile::tempdir().unwrap();
        let path = private(&root.path().join("a/b/key"));
        assert_eq!(path.read().unwrap(), None);
        path.write(b"secret").unwrap();
        assert_eq!(path.read().unwrap().as_deref(), Some(&b"secret"[..]));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(path.path()), 0o600);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        path.remove().unwrap();
        path.remove().unwrap();
        assert_eq!(path.read().unwrap(), None);
    }

    #[test]
    fn a_symlink_at_the_file_is_refused_and_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("elsewhere");
        std::fs::write(&target, b"theirs").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = root.path().join("key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = private(&link).read().unwrap_err().to_string();
        assert!(error.contains("is a symbolic link"), "{error}");
        assert!(error.contains("`privateKeyPath`"), "{error}");
    }

    #[test]
    fn a_parent_others_can_write_is_refused_even_when_sticky() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        for mode in [0o777, 0o1777, 0o770] {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
            let path = private(&shared.join("key"));
            let error = path.write(b"x").unwrap_err().to_string();
            assert!(error.contains("the directory `"), "{error}");
            assert!(error.contains(&format!("{mode:04o}")), "{error}");
            assert!(!shared.join("key").exists());
            assert!(path.read().is_err());
        }
        // Below a sticky directory, a directory of our own is fine.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        private(&shared.join("mine/key")).write(b"x").unwrap();
    }

    #[test]
    fn loose_permissions_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = private(&root.path().join("key"));
        path.write(b"x").unwrap();
        std::fs::set_permissions(path.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = path.read().unwrap_err().to_string();
        assert!(error.contains("has mode 0644"), "{error}");
        assert!(error.contains("chmod 600"), "{error}");
    }
}
