//! The SSH side: OpenSSH's own `ssh`, with
//!
//! - the host key pinned: a generated known_hosts file holding only the
//!   key from the inputs, under a fixed alias, strict checking, no
//!   trust-on-first-use, no prompts (`BatchMode`), and no configuration
//!   file read (`-F none`: a `KnownHostsCommand` in `~/.ssh/config` or
//!   `/etc/ssh/ssh_config` would bypass the pin);
//! - connection sharing: the first command becomes a ControlMaster that
//!   every later command (and `nix copy`, through `NIX_SSHOPTS`) reuses, so a
//!   deployment authenticates once or twice, not once per step;
//! - bounded waits: `ConnectTimeout` (which also bounds the banner exchange),
//!   keep-alives, and a deadline on every command;
//! - errors that say what failed: refused, timed out, wrong host key (with
//!   the fingerprint the host offered), key not authorised.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fedi_protocol::{Error, Result};

use crate::process::{self, Finished, shell_quote};

/// The alias the pinned key is recorded under in the generated known_hosts.
const HOST_ALIAS: &str = "fedi-nixos-config-target";

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file, if any (otherwise ssh's defaults and agent).
    pub key_file: Option<PathBuf>,
    /// The pinned host key, `<type> <base64>`.
    pub host_key: String,
    /// Its SHA256 fingerprint, for messages.
    pub host_key_fingerprint: String,
    /// Bound on connecting (TCP and SSH banner).
    pub connect_timeout: Duration,
    /// Run remote commands through `sudo -n`.
    pub sudo: bool,
    /// The `ssh` executable.
    pub ssh: PathBuf,
}

impl Target {
    /// `user@host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// A shared connection to the target, its files in a private temporary
/// directory (removed, and the master closed, on drop).
pub struct Session {
    target: Target,
    dir: tempfile::TempDir,
    /// Bumped to get a brand-new master connection.
    generation: u32,
}

/// Why a remote command did not give its answer.
pub enum Failure {
    /// `ssh` itself failed (exit 255 or deadline): connection, key or auth.
    Connection(Error),
    /// The remote command ran and failed.
    Remote(Finished),
}

impl Session {
    /// Prepares (does not yet open) a session.
    pub fn new(target: Target) -> Result<Session> {
        // Short path: the control socket's path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("fedi-nc-")
            .tempdir()
            .map_err(|e| Error::internal("cannot create a temporary directory").with_source(e))?;
        let known_hosts = dir.path().join("known_hosts");
        fedi_protocol::PrivatePath::parse("hostPublicKey", &known_hosts)
            .and_then(|file| file.write(format!("{HOST_ALIAS} {}\n", target.host_key).as_bytes()))
            .map_err(|e| e.context("writing the pinned known_hosts file".to_string()))?;
        Ok(Session {
            target,
            dir,
            generation: 0,
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn control_path(&self) -> PathBuf {
        self.dir.path().join(format!("cm{}", self.generation))
    }

    /// The options every `ssh` of this session gets (also `NIX_SSHOPTS`).
    pub fn options(&self) -> Vec<String> {
        let t = &self.target;
        let mut options = vec![
            // No configuration file at all, neither ~/.ssh/config nor
            // /etc/ssh/ssh_config: an option there that this list does not
            // set (a `KnownHostsCommand`, a `ProxyCommand`, a `Match exec`)
            // could bypass the host-key pin or run commands.
            "-F".to_string(),
            "none".into(),
            "-p".into(),
            t.port.to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("HostKeyAlias={HOST_ALIAS}"),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "UpdateHostKeys=no".into(),
            "-o".into(),
            "CheckHostIP=no".into(),
            "-o".into(),
            format!("ConnectTimeout={}", t.connect_timeout.as_secs().max(1)),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            format!("ControlPath={}", self.control_path().display()),
            // Lingers this long after the last command, so a crashed
            // provider does not leave it behind for ever.
            "-o".into(),
            "ControlPersist=60".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        if let Some(key) = &t.key_file {
            options.extend([
                "-i".into(),
                key.display().to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        options
    }

    /// `user@host`.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.target.user, self.target.host)
    }

    /// Runs `script` with `sh` on the target (through `sudo -n` when asked),
    /// `input` on its stdin, within `deadline`.
    pub fn run(
        &self,
        step: &str,
        script: &str,
        input: Option<&[u8]>,
        deadline: Duration,
    ) -> std::result::Result<Finished, Failure> {
        self.run_watching(step, script, input, deadline, None)
    }

    /// Like [`Session::run`], calling `watch` with each line of the remote
    /// command's stdout as it arrives.
    pub fn run_watching(
        &self,
        step: &str,
        script: &str,
        input: Option<&[u8]>,
        deadline: Duration,
        watch: Option<process::LineWatcher>,
    ) -> std::result::Result<Finished, Failure> {
        let remote = if self.target.sudo {
            format!("sudo -n sh -c {}", shell_quote(script))
        } else {
            format!("sh -c {}", shell_quote(script))
        };
        let mut command = Command::new(&self.target.ssh);
        command
            .args(self.options())
            .arg(self.destination())
            .arg("--")
            .arg(remote);
        tracing::debug!(step, host = %self.target.describe(), "running a remote command");
        let finished =
            process::run_watching(&mut command, input, deadline, watch).map_err(|e| {
                Failure::Connection(
                    Error::invalid_input(
                        "sshExecutable",
                        format!("cannot run `{}`", self.target.ssh.display()),
                    )
                    .with_source(e)
                    .with_hint("install OpenSSH's client or give its path in `sshExecutable`"),
                )
            })?;
        if finished.timed_out() {
            return Err(Failure::Connection(
                Error::unavailable(format!(
                    "{step} on {}: no answer within {} s",
                    self.target.describe(),
                    deadline.as_secs()
                ))
                .with_hint(
                    "check that the host is up and reachable; raise the timeout for slow hosts",
                ),
            ));
        }
        match finished.code() {
            Some(0) => Ok(finished),
            Some(255) | None => Err(Failure::Connection(classify(
                &self.target,
                step,
                &finished.stderr,
            ))),
            Some(_) => Err(Failure::Remote(finished)),
        }
    }

    /// Like [`Session::run`], turning a failing remote command into an
    /// error that names the step and shows the tail of its output.
    pub fn run_ok(
        &self,
        step: &str,
        script: &str,
        input: Option<&[u8]>,
        deadline: Duration,
    ) -> Result<String> {
        match self.run(step, script, input, deadline) {
            Ok(done) => Ok(done.stdout),
            Err(Failure::Connection(e)) => Err(e),
            Err(Failure::Remote(done)) => Err(self.remote_failure(step, &done)),
        }
    }

    /// The error for a remote command that ran and failed.
    pub fn remote_failure(&self, step: &str, done: &Finished) -> Error {
        let output = process::tail(&format!("{}{}", done.stdout, done.stderr), 15);
        let mut error = Error::internal(format!(
            "{step} on {} failed (exit status {}): {output}",
            self.target.describe(),
            done.code().unwrap_or(-1)
        ));
        if self.target.sudo && output.contains("sudo") {
            error = error.with_hint(format!(
                "`{}` must be allowed to run commands with sudo without a password \
                 (`security.sudo.wheelNeedsPassword = false` or a NOPASSWD rule)",
                self.target.user
            ));
        }
        error
    }

    /// Closes the current shared connection and starts the next command on
    /// a brand-new one (new TCP connection, new authentication).
    pub fn reconnect(&mut self) {
        self.close();
        self.generation += 1;
    }

    /// Closes the shared connection, if one is open.
    pub fn close(&self) {
        if !self.control_path().exists() {
            return;
        }
        let mut command = Command::new(&self.target.ssh);
        command
            .args(self.options())
            .args(["-O", "exit"])
            .arg(self.destination());
        let _ = process::run(&mut command, None, Duration::from_secs(5));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Turns `ssh`'s own failure (exit 255) into an error a user can act on.
pub fn classify(target: &Target, step: &str, stderr: &str) -> Error {
    let at = target.describe();
    let last = process::tail(stderr, 3);
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key verification failed")
    {
        let offered = stderr
            .split_whitespace()
            .find(|w| w.starts_with("SHA256:"))
            .map(|f| f.trim_end_matches('.').to_string())
            .unwrap_or_else(|| "a key of another type".into());
        return Error::permission_denied(format!(
            "{step}: {at} offered host key {offered}, not the pinned {}; refusing to connect",
            target.host_key_fingerprint
        ))
        .with_field("hostPublicKey")
        .with_hint(
            "if the host was reinstalled, put its new key in `hostPublicKey` (`ssh-keyscan -t \
             ed25519 <host>`, checked out of band); otherwise someone may be intercepting the \
             connection",
        );
    }
    if stderr.contains("no matching host key type") {
        return Error::permission_denied(format!(
            "{step}: {at} has no host key of the pinned type ({})",
            target.host_key.split_whitespace().next().unwrap_or("?")
        ))
        .with_field("hostPublicKey")
        .with_hint("pin one of the keys the host has (`ssh-keyscan <host>`)");
    }
    if stderr.contains("Permission denied (") {
        return Error::permission_denied(format!(
            "{step}: {at} did not accept the deployer's key for user `{}`: {last}",
            target.user
        ))
        .with_field("sshKeyFile")
        .with_hint(format!(
            "authorise the public key of `sshKeyFile` for `{}` on the host \
             (`users.users.{}.openssh.authorizedKeys.keys`)",
            target.user, target.user
        ));
    }
    if stderr.contains("Could not resolve hostname") {
        return Error::invalid_input(
            "host",
            format!("{step}: cannot resolve `{}`: {last}", target.host),
        )
        .with_hint("check the host name, or give an address");
    }
    let timed_out = stderr.contains("timed out") || stderr.contains("banner exchange");
    let refused = stderr.contains("Connection refused");
    let what = if timed_out {
        format!(
            "no SSH answer from {at} within {} s",
            target.connect_timeout.as_secs()
        )
    } else if refused {
        format!("{at} refused the connection")
    } else {
        format!("the SSH connection to {at} failed")
    };
    Error::unavailable(format!("{step}: {what}: {last}")).with_hint(if refused {
        "check that sshd runs on the host and listens on `port`".to_string()
    } else {
        format!(
            "check that the host is up and reachable on port {}; raise `connectTimeout` for slow networks",
            target.port
        )
    })
}
