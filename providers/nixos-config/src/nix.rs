//! Copying the system closure with the user's own `nix copy --to ssh-ng://`,
//! over the session's shared SSH connection (`NIX_SSHOPTS`; Nix 2.8 takes
//! no port in an `ssh-ng://` URL, so the port goes there too).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fedi_protocol::{Error, Result};

use crate::process;
use crate::ssh::{self, Session};

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions<'a> {
    /// The `nix` executable.
    pub nix: &'a Path,
    /// Let the target fetch what it can from its own substituters.
    pub substitute_on_destination: bool,
    /// Require signatures the target trusts (Nix's default).
    pub check_signatures: bool,
    /// Bound on the whole copy.
    pub deadline: Duration,
}

/// Copies the closure of `path` to the target; returns how many store paths
/// were actually sent (or substituted there), 0 when all were present.
pub fn copy(session: &Session, path: &str, options: &CopyOptions<'_>) -> Result<u64> {
    let target = session.target();
    let mut url = format!("ssh-ng://{}", session.destination());
    if target.sudo {
        url.push_str("?remote-program=sudo%20-n%20nix-daemon");
    }
    let mut command = Command::new(options.nix);
    command
        .args([
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--to",
        ])
        .arg(&url);
    if options.substitute_on_destination {
        command.arg("--substitute-on-destination");
    }
    if !options.check_signatures {
        command.arg("--no-check-sigs");
    }
    command
        .arg(path)
        .env("NIX_SSHOPTS", session.options().join(" "));
    tracing::info!(host = %target.describe(), path, "copying the closure");
    let done = process::run(&mut command, None, options.deadline).map_err(|e| {
        Error::invalid_input(
            "nixExecutable",
            format!("cannot run `{}`", options.nix.display()),
        )
        .with_source(e)
        .with_hint("install Nix on the deploying machine or give its path in `nixExecutable`")
    })?;
    if done.timed_out() {
        return Err(Error::unavailable(format!(
            "copying {path} to {}: not done within {} s",
            target.describe(),
            options.deadline.as_secs()
        ))
        .with_hint(
            "raise `copyTimeout`, or let the target substitute (`substituteOnDestination`)",
        ));
    }
    let copied = copied_paths(&done.stderr);
    if done.success() {
        return Ok(copied.unwrap_or(0));
    }
    let stderr = &done.stderr;
    if stderr.contains("lacks a valid signature") {
        return Err(Error::permission_denied(format!(
            "copying {path} to {}: the target refused paths without a signature it trusts: {}",
            target.describe(),
            process::tail(stderr, 2)
        ))
        .with_hint(format!(
            "sign the closure (`nix store sign --key-file <key> -r {path}`, with the public key in \
             the target's `nix.settings.trusted-public-keys`), or make `{}` a trusted user on the \
             target (`nix.settings.trusted-users`), or set `checkSignatures = false`",
            target.user
        )));
    }
    if stderr.contains("ssh:") || stderr.contains("Host key verification failed") {
        return Err(ssh::classify(target, "copying the closure", stderr));
    }
    Err(Error::internal(format!(
        "copying {path} to {} with `nix copy` failed: {}",
        target.describe(),
        process::tail(stderr, 8)
    )))
}

/// `copying 3 paths...` from `nix copy`'s log.
fn copied_paths(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        line.trim()
            .strip_prefix("copying ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_number_of_copied_paths() {
        assert_eq!(
            super::copied_paths("copying 3 paths...\ncopying path '/nix/store/x' to 'y'...\n"),
            Some(3)
        );
        assert_eq!(super::copied_paths("copying 0 paths...\n"), Some(0));
        assert_eq!(super::copied_paths("error: x\n"), None);
    }
}
