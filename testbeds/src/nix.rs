//! The project's own Nix configuration (`nix/conf/nix.conf`), for every Nix
//! command the tests and the local deployment run, so that none of them
//! depends on how this machine's Nix is configured: neither
//! `/etc/nix/nix.conf` nor `~/.config/nix/nix.conf` is read, and the
//! variables that would override either (`NIX_CONFIG`, `NIX_REMOTE`,
//! `NIX_PATH`) are dropped. See `doc/architecture/008-nix-configuration.md`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// The directory holding the project's `nix.conf` (`nix/conf`).
pub fn conf_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../nix/conf"));
    // Without the `..`: the path also goes into an sshd_config line.
    dir.canonicalize().unwrap_or(dir)
}

/// What to set: `NIX_CONF_DIR` replaces `/etc/nix`; an empty
/// `NIX_USER_CONF_FILES` replaces the user's and `$XDG_CONFIG_DIRS`' files
/// with none (Nix's `getUserConfigFiles` takes the variable as the whole
/// list when it is set).
pub fn env() -> [(&'static str, String); 2] {
    [
        ("NIX_CONF_DIR", conf_dir().display().to_string()),
        ("NIX_USER_CONF_FILES", String::new()),
    ]
}

/// What to drop: each would override the project's configuration (a
/// setting, the store to use, the search path).
pub const DROPPED: [&str; 3] = ["NIX_CONFIG", "NIX_REMOTE", "NIX_PATH"];

/// Points `command` at the project's Nix configuration and nothing else.
pub fn isolate(command: &mut Command) -> &mut Command {
    for name in DROPPED {
        command.env_remove(name);
    }
    command.envs(env())
}

/// The same for a tokio command (the local deployment's providers).
pub fn isolate_tokio(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    for name in DROPPED {
        command.env_remove(name);
    }
    command.envs(env())
}

/// `Command::new(program)`, isolated: the way to run `nix-build`,
/// `nix-instantiate`, `nix-store` or `nix` from the project.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    isolate(&mut command);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build the way the tests build their systems (a plain derivation
    /// whose builder is /bin/sh) succeeds with the machine's and the
    /// user's configuration saying otherwise: a `NIX_CONFIG` that names a
    /// build group nobody has, and a user configuration that turns the
    /// sandbox on (where /bin/sh does not exist).
    #[test]
    fn builds_ignore_the_machines_and_the_users_nix_configuration() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".config/nix")).unwrap();
        std::fs::write(
            home.path().join(".config/nix/nix.conf"),
            "sandbox = true\nbuild-users-group = nixbld\n",
        )
        .unwrap();
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let expression = format!(
            "builtins.derivation {{ name = \"fedi-nix-conf-check\"; system = builtins.currentSystem; \
             builder = \"/bin/sh\"; args = [ \"-c\" \"echo ok > $out\" ]; stamp = \"{stamp}\"; }}"
        );
        let mut build = Command::new("nix-build");
        build
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env("NIX_CONFIG", "build-users-group = no-such-group-anywhere");
        isolate(&mut build);
        let output = build
            .args(["--no-out-link", "--quiet", "-E", &expression])
            .output()
            .expect("nix-build (Debian package nix-bin) is installed");
        assert!(
            output.status.success(),
            "nix-build failed under the project's configuration:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let out = String::from_utf8(output.stdout).unwrap();
        assert_eq!(std::fs::read_to_string(out.trim()).unwrap(), "ok\n");
    }
}
