//! Resource type `deployment`: a NixOS system closure deployed onto an
//! existing host over SSH.
//!
//! One deployment, in order (each step skipped when it has nothing to do):
//!
//! 1. validate the inputs (before any connection): the system is a store
//!    path with `bin/switch-to-configuration`, the host key parses, key
//!    files are readable and outside the store;
//! 2. probe the host over a shared, pinned SSH connection: what it runs,
//!    its profile generation, whether the closure is already there. When it
//!    already runs exactly this system (for the goal), stop here: nothing is
//!    copied or switched (keys are still brought up to date);
//! 3. copy the closure with `nix copy --to ssh-ng://` over the same
//!    connection;
//! 4. upload the keys meant for before activation;
//! 5. activate: a runner started detached on the host (`systemd-run`, else
//!    `setsid nohup`) sets the profile and runs `switch-to-configuration`,
//!    rolling back by itself when that fails. The deployer polls its status
//!    and reconnects when the connection drops;
//! 6. magic rollback (`switch`, `test`): a brand-new SSH connection
//!    confirms; without a confirmation in `confirmTimeout` seconds the host
//!    rolls back to the previous generation by itself;
//! 7. upload the keys meant for after activation.
//!
//! Lifecycle: create and update both deploy (stateless by default; with a
//! state, the outputs record the generation). Delete leaves the host and its
//! system as they are and forgets the deployment: we did not create the
//! host, and switching it to "nothing" is not a state a NixOS host can be
//! in. Read reports what the host runs now, with drift when it is another
//! system.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{CreateContext, Drift, Error, ReadOutcome, Recorded, Resource, Result};
use serde::{Deserialize, Serialize};

use crate::nix::{self, CopyOptions};
use crate::remote;
use crate::ssh::{Failure, Session, Target};

/// Inputs of `deployment`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInputs {
    /// The system to deploy: the store path of a built NixOS system
    /// (`nixosConfigurations.<name>.config.system.build.toplevel`), present
    /// in the deploying machine's store.
    pub system: String,
    /// Host name or address of the target.
    pub host: String,
    /// SSH port of the target.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User to log in as: `root`, or a user allowed passwordless `sudo`
    /// (then set `sudo = true`).
    #[serde(default = "default_user")]
    pub user: String,
    /// Private key file to log in with (on the deploying machine). Unset:
    /// OpenSSH's defaults and agent.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
    /// The host's public SSH key, `ssh-ed25519 AAAA...` (a comment is
    /// allowed). The connection is refused when the host offers another
    /// key: no trust on first use, no prompts.
    pub host_public_key: String,
    /// What to do with the system: `switch` (activate now and make it the
    /// boot default), `boot` (boot default only), `test` (activate now, not
    /// for boot), `dry-activate` (show what would change; change nothing).
    #[serde(default)]
    pub goal: Goal,
    /// Run the remote steps through `sudo -n` (passwordless sudo) because
    /// `user` is not root; the closure is copied through `sudo -n
    /// nix-daemon`.
    #[serde(default)]
    pub sudo: bool,
    /// Let the target fetch store paths from its own substituters instead of
    /// receiving them from the deploying machine.
    #[serde(default)]
    pub substitute_on_destination: bool,
    /// Require signatures the target trusts on copied paths (Nix's default).
    /// Turn off only when the deploying user is trusted by the target's Nix
    /// anyway, or on test hosts.
    #[serde(default = "yes")]
    pub check_signatures: bool,
    /// Seconds to wait for the host to answer a connection (TCP and SSH
    /// banner) before giving up.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Seconds the whole copy of the closure may take.
    #[serde(default = "default_copy_timeout")]
    pub copy_timeout: u64,
    /// Seconds `switch-to-configuration` may take before the deployment
    /// gives up waiting (the switch itself continues on the host).
    #[serde(default = "default_activation_timeout")]
    pub activation_timeout: u64,
    /// After activating, a brand-new SSH connection must confirm within
    /// `confirmTimeout` seconds; otherwise the host rolls back to the
    /// previous generation by itself. Default: on for `switch` and `test`,
    /// off (and not allowed) for `boot` and `dry-activate`.
    #[serde(default)]
    pub magic_rollback: Option<bool>,
    /// Seconds the host waits for the confirmation of magic rollback.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout: u64,
    /// Secret files to put on the host, outside the Nix store.
    #[serde(default)]
    pub keys: Vec<KeyInput>,
    /// The `ssh` executable (OpenSSH).
    #[serde(default = "default_ssh")]
    pub ssh_executable: PathBuf,
    /// The `nix` executable (for `nix copy`).
    #[serde(default = "default_nix")]
    pub nix_executable: PathBuf,
}

/// A secret file uploaded to the host over SSH, never through the store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyInput {
    /// File name on the host (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// File on the deploying machine holding the content (read when the
    /// deployment runs; never logged, never an input value).
    pub file: PathBuf,
    /// Directory on the host; created (mode 0755) when missing.
    #[serde(default = "default_key_dir")]
    pub dest_dir: String,
    /// Owner of the file on the host.
    #[serde(default = "default_user")]
    pub owner: String,
    /// Group of the file on the host.
    #[serde(default = "default_user")]
    pub group: String,
    /// Mode of the file on the host, octal.
    #[serde(default = "default_permissions")]
    pub permissions: String,
    /// Upload before activation (so services find it when they start) or
    /// after (when its owner is a user the new system creates).
    #[serde(default)]
    pub upload_at: UploadAt,
}

/// When a key is uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UploadAt {
    /// Before activation.
    #[default]
    PreActivation,
    /// After activation (and its confirmation).
    PostActivation,
}

/// What `switch-to-configuration` is asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// Activate now and make it the boot default.
    #[default]
    Switch,
    /// Make it the boot default; activate at the next boot.
    Boot,
    /// Activate now; the boot default stays.
    Test,
    /// Show what activation would change; change nothing.
    DryActivate,
}

impl Goal {
    fn as_str(self) -> &'static str {
        match self {
            Goal::Switch => "switch",
            Goal::Boot => "boot",
            Goal::Test => "test",
            Goal::DryActivate => "dry-activate",
        }
    }

    fn sets_profile(self) -> bool {
        matches!(self, Goal::Switch | Goal::Boot)
    }
}

fn default_port() -> u16 {
    22
}
fn default_user() -> String {
    "root".into()
}
fn yes() -> bool {
    true
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_copy_timeout() -> u64 {
    3600
}
fn default_activation_timeout() -> u64 {
    600
}
fn default_confirm_timeout() -> u64 {
    30
}
fn default_ssh() -> PathBuf {
    "ssh".into()
}
fn default_nix() -> PathBuf {
    "nix".into()
}
fn default_key_dir() -> String {
    "/run/keys".into()
}
fn default_permissions() -> String {
    "0600".into()
}

/// Outputs of `deployment`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentOutputs {
    /// The deployed system's store path.
    pub system: String,
    /// The system profile's generation on the host after the deployment
    /// (unset when the host has no system profile, e.g. after `test` on a
    /// fresh host).
    pub generation: Option<u64>,
    /// Whether anything changed on the host (system activated, profile set,
    /// key written).
    pub changed: bool,
    /// How many store paths were copied to the host (0 when it had them).
    pub paths_copied: u64,
    /// The system the host ran before (unset when it ran none).
    pub previous_system: Option<String>,
    /// Paths of the keys on the host.
    pub keys: Vec<String>,
}

/// A key's content, read on the deploying machine; never shown.
struct KeyContent(Vec<u8>);

impl std::fmt::Debug for KeyContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[derive(Debug)]
struct Key {
    input: KeyInput,
    content: KeyContent,
}

impl Key {
    fn remote_path(&self) -> String {
        format!(
            "{}/{}",
            self.input.dest_dir.trim_end_matches('/'),
            self.input.name
        )
    }
}

/// The inputs, checked.
struct Plan {
    target: Target,
    system: String,
    goal: Goal,
    magic: bool,
    keys: Vec<Key>,
    inputs: DeploymentInputs,
}

fn is_simple_name(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('-')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl DeploymentInputs {
    fn plan(self) -> Result<Plan> {
        let system = self.system.trim_end_matches('/').to_string();
        let rest = system.strip_prefix("/nix/store/").unwrap_or_default();
        if rest.is_empty() || rest.contains('/') || !is_simple_name(rest) {
            return Err(Error::invalid_input(
                "system",
                format!("`{system}` is not a store path"),
            )
            .with_hint(
                "give the built system, e.g. `nixosConfigurations.<name>.config.system.build.toplevel`",
            ));
        }
        if !Path::new(&system).exists() {
            return Err(Error::invalid_input(
                "system",
                format!("`{system}` is not in the deploying machine's Nix store"),
            )
            .with_hint(
                "build it first (referring to it from the deployment's Nix expression does)",
            ));
        }
        if self.goal != Goal::DryActivate || Path::new(&system).join("bin").exists() {
            let switch = Path::new(&system).join("bin/switch-to-configuration");
            if !switch.exists() {
                return Err(Error::invalid_input(
                    "system",
                    format!(
                        "`{system}` is not a NixOS system: it has no bin/switch-to-configuration"
                    ),
                )
                .with_hint("give `config.system.build.toplevel` of a NixOS configuration"));
            }
        }
        let host = self.host.trim().to_string();
        if host.is_empty()
            || host.starts_with('-')
            || host.contains(|c: char| c.is_whitespace() || matches!(c, '@' | '/' | '\'' | '"'))
        {
            return Err(Error::invalid_input(
                "host",
                format!("`{host}` is not a host name or address"),
            )
            .with_hint("give a name such as `web1.example.org` or an address; the user goes in `user`, the port in `port`"));
        }
        if self.port == 0 {
            return Err(Error::invalid_input("port", "0 is not a port"));
        }
        if !is_simple_name(&self.user) {
            return Err(Error::invalid_input(
                "user",
                format!("`{}` is not a user name", self.user),
            ));
        }
        let key = ssh_key::PublicKey::from_openssh(self.host_public_key.trim()).map_err(|e| {
            Error::invalid_input(
                "hostPublicKey",
                "not an OpenSSH public key line (`ssh-ed25519 AAAA...`)",
            )
            .with_source(e)
            .with_hint("take it from the host (`/etc/ssh/ssh_host_ed25519_key.pub`) or `ssh-keyscan -t ed25519 <host>`, checked out of band")
        })?;
        let host_key = key
            .to_openssh()
            .map_err(|e| Error::internal("cannot encode the host key").with_source(e))?;
        let host_key: String = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(file) = &self.ssh_key_file {
            fedi_protocol::paths::check_absolute("sshKeyFile", file)?;
            if let Err(e) = std::fs::File::open(file) {
                return Err(Error::invalid_input(
                    "sshKeyFile",
                    format!("cannot read `{}`", file.display()),
                )
                .with_source(e)
                .with_hint("give a private key file readable by the user running the deployment"));
            }
            if file.to_string_lossy().contains(char::is_whitespace) {
                return Err(Error::invalid_input(
                    "sshKeyFile",
                    format!(
                        "`{}` contains white space, which `NIX_SSHOPTS` cannot carry",
                        file.display()
                    ),
                )
                .with_hint("move or link the key to a path without spaces"));
            }
        }
        for (field, value) in [
            ("connectTimeout", self.connect_timeout),
            ("copyTimeout", self.copy_timeout),
            ("activationTimeout", self.activation_timeout),
            ("confirmTimeout", self.confirm_timeout),
        ] {
            if value == 0 {
                return Err(Error::invalid_input(field, "must be at least 1 second"));
            }
        }
        let magic = match (self.goal, self.magic_rollback) {
            (Goal::Switch | Goal::Test, setting) => setting.unwrap_or(true),
            (goal, Some(true)) => {
                return Err(Error::invalid_input(
                    "magicRollback",
                    format!(
                        "does not apply to goal `{}`: nothing is activated now",
                        goal.as_str()
                    ),
                )
                .with_hint("remove `magicRollback`, or use goal `switch` or `test`"));
            }
            (_, _) => false,
        };
        let keys = self.read_keys()?;
        let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        Ok(Plan {
            target: Target {
                host,
                port: self.port,
                user: self.user.clone(),
                key_file: self.ssh_key_file.clone(),
                host_key,
                host_key_fingerprint: fingerprint,
                connect_timeout: Duration::from_secs(self.connect_timeout),
                sudo: self.sudo,
                ssh: self.ssh_executable.clone(),
            },
            system,
            goal: self.goal,
            magic,
            keys,
            inputs: self,
        })
    }

    fn read_keys(&self) -> Result<Vec<Key>> {
        let mut keys: Vec<Key> = Vec::new();
        for (index, input) in self.keys.iter().enumerate() {
            let field = |name: &str| format!("keys[{index}].{name}");
            if !is_simple_name(&input.name) || input.name.starts_with('.') {
                return Err(Error::invalid_input(
                    field("name"),
                    format!("`{}` is not a plain file name", input.name),
                )
                .with_hint("use letters, digits, `.`, `_` and `-`; put directories in `destDir`"));
            }
            let dir = &input.dest_dir;
            if !dir.starts_with('/')
                || dir.split('/').any(|c| c == "..")
                || dir.starts_with("/nix/store")
                || dir.contains(|c: char| c.is_control())
            {
                return Err(Error::invalid_input(
                    field("destDir"),
                    format!("`{dir}` is not an absolute directory outside the Nix store"),
                ));
            }
            for (name, value) in [("owner", &input.owner), ("group", &input.group)] {
                if !is_simple_name(value) {
                    return Err(Error::invalid_input(
                        field(name),
                        format!("`{value}` is not a user or group name"),
                    ));
                }
            }
            let mode = &input.permissions;
            if !(3..=4).contains(&mode.len()) || u32::from_str_radix(mode, 8).is_err() {
                return Err(Error::invalid_input(
                    field("permissions"),
                    format!("`{mode}` is not an octal mode"),
                )
                .with_hint(
                    "e.g. \"0600\" (owner reads and writes) or \"0640\" (and the group reads)",
                ));
            }
            if input.file.starts_with("/nix/store") {
                return Err(Error::invalid_input(
                    field("file"),
                    format!(
                        "`{}` is in the Nix store, which every local user can read",
                        input.file.display()
                    ),
                )
                .with_hint(
                    "keep secrets outside the store, e.g. in /run/secrets or /var/lib/<service>",
                ));
            }
            let content = std::fs::read(&input.file).map_err(|e| {
                Error::invalid_input(
                    field("file"),
                    format!("cannot read `{}`", input.file.display()),
                )
                .with_source(e)
                .with_hint(
                    "create the file (readable by the user running the deployment) or fix the path",
                )
            })?;
            let key = Key {
                input: input.clone(),
                content: KeyContent(content),
            };
            if keys.iter().any(|k| k.remote_path() == key.remote_path()) {
                return Err(Error::invalid_input(
                    field("name"),
                    format!(
                        "`{}` is the destination of another key too",
                        key.remote_path()
                    ),
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }
}

/// What the probe found on the host.
#[derive(Debug, Default)]
struct Probe {
    uid: Option<u32>,
    current: Option<String>,
    profile: Option<String>,
    generation: Option<u64>,
    valid: bool,
    busy: Option<Activation>,
    last: Option<LastActivation>,
}

/// An activation the host knows of (running, or finished).
#[derive(Debug, Default)]
struct Activation {
    id: String,
    system: String,
    goal: String,
    /// The system that ran before it.
    previous: Option<String>,
}

/// The last activation, finished but not collected by any deployer (the
/// one that started it died).
#[derive(Debug)]
struct LastActivation {
    activation: Activation,
    status: String,
}

fn parse_probe(text: &str) -> Probe {
    let mut probe = Probe::default();
    let mut busy = Activation::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let some = (!value.trim().is_empty()).then(|| value.trim().to_string());
        match key {
            "uid" => probe.uid = value.trim().parse().ok(),
            "current" => probe.current = some,
            "profile" => probe.profile = some,
            "generation" => probe.generation = generation_of(value.trim()),
            "valid" => probe.valid = value.trim() == "1",
            "busy" => busy.id = value.trim().to_string(),
            "busy_system" => busy.system = value.trim().to_string(),
            "busy_goal" => busy.goal = value.trim().to_string(),
            "busy_previous" => busy.previous = some,
            "last" => {
                let fields: Vec<&str> = value.split('\t').collect();
                if let [id, system, goal, previous, status] = fields.as_slice() {
                    probe.last = Some(LastActivation {
                        activation: Activation {
                            id: id.to_string(),
                            system: system.to_string(),
                            goal: goal.to_string(),
                            previous: (!previous.is_empty()).then(|| previous.to_string()),
                        },
                        status: status.trim().to_string(),
                    });
                }
            }
            _ => {}
        }
    }
    if !busy.id.is_empty() {
        probe.busy = Some(busy);
    }
    probe
}

/// `system-12-link` → 12; `-` or garbage → none.
fn generation_of(text: &str) -> Option<u64> {
    let text = text.strip_prefix("system-").unwrap_or(text);
    text.strip_suffix("-link").unwrap_or(text).parse().ok()
}

const PROBE_DEADLINE: Duration = Duration::from_secs(60);

/// How long the confirming command waits on the host for the runner to
/// take the confirmation (it looks every 50 ms).
const CONFIRM_WAIT: Duration = Duration::from_secs(10);

fn probe(session: &Session, system: &str) -> Result<Probe> {
    let out = session.run_ok(
        "looking at the host",
        &remote::probe(system),
        None,
        PROBE_DEADLINE + session.target().connect_timeout,
    )?;
    Ok(parse_probe(&out))
}

/// Uploads the keys of one stage; returns whether any changed.
fn upload_keys(session: &Session, keys: &[Key], stage: UploadAt) -> Result<bool> {
    let mut changed = false;
    for key in keys.iter().filter(|k| k.input.upload_at == stage) {
        let k = &key.input;
        let step = format!("uploading key `{}` to {}", k.name, key.remote_path());
        let script = remote::upload_key(
            k.dest_dir.trim_end_matches('/'),
            &k.name,
            &k.owner,
            &k.group,
            &k.permissions,
        );
        let out = session
            .run_ok(&step, &script, Some(&key.content.0), PROBE_DEADLINE)
            .map_err(|e| e.with_field(format!("keys.{}", k.name)))?;
        let this = out.trim() == "changed";
        tracing::info!(key = %k.name, path = %key.remote_path(), changed = this, "key uploaded");
        changed |= this;
    }
    Ok(changed)
}

/// The runner's final word.
enum Outcome {
    Done(Option<u64>),
    Failed {
        exit: String,
        rolled_back_to: Option<u64>,
        rollback: String,
    },
    Unconfirmed {
        rolled_back_to: Option<u64>,
        rollback: String,
    },
}

fn parse_status(line: &str) -> Option<Outcome> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["done", generation] => Some(Outcome::Done(generation_of(generation))),
        ["failed", exit, generation, rollback] => Some(Outcome::Failed {
            exit: exit.to_string(),
            rolled_back_to: generation_of(generation),
            rollback: rollback.to_string(),
        }),
        ["unconfirmed", generation, rollback] => Some(Outcome::Unconfirmed {
            rolled_back_to: generation_of(generation),
            rollback: rollback.to_string(),
        }),
        _ => None,
    }
}

/// Waits for the runner's status until it is final (or, with
/// `activated_is_enough`, `activated`) or `deadline` passes, reconnecting
/// when the connection drops. The waiting happens on the host (one remote
/// command per 30 s at most), not in round trips. Returns the last line.
fn wait_status(
    session: &mut Session,
    id: &str,
    deadline: Instant,
    activated_is_enough: bool,
) -> Result<String> {
    let until =
        |l: &str| (activated_is_enough && l.starts_with("activated")) || parse_status(l).is_some();
    let mut last_error: Option<Error>;
    let mut last_line = String::from("none");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let seconds = remaining.as_secs().clamp(1, 30);
        let budget = Duration::from_secs(seconds + 10) + session.target().connect_timeout;
        match session.run(
            "checking on the activation",
            &remote::wait_status(id, activated_is_enough, seconds),
            None,
            budget,
        ) {
            Ok(done) => {
                last_line = done.stdout.trim().to_string();
                last_error = None;
                if until(&last_line) {
                    return Ok(last_line);
                }
            }
            Err(Failure::Connection(e)) => {
                tracing::warn!(error = %e, "lost the connection to the host; the activation continues there; reconnecting");
                session.reconnect();
                last_error = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(Failure::Remote(done)) => {
                return Err(session.remote_failure("checking on the activation", &done));
            }
        }
        if Instant::now() >= deadline {
            let mut error = Error::unavailable(format!(
                "activating on {}: no final outcome in time (last status: {last_line}); the \
                 runner continues on the host, its log is {}/{id}.log",
                session.target().describe(),
                remote::STATE_DIR
            ))
            .with_hint("raise `activationTimeout` if activation is slow, then deploy again");
            if let Some(e) = last_error {
                error = error.with_source(e);
            }
            return Err(error);
        }
    }
}

fn log_tail(session: &Session, id: &str) -> String {
    session
        .run_ok(
            "reading the activation log",
            &remote::log_tail(id),
            None,
            PROBE_DEADLINE,
        )
        .map(|t| crate::process::tail(&t, 15))
        .unwrap_or_else(|e| format!("(log unavailable: {e})"))
}

fn rolled_back(to: Option<u64>, how: &str) -> String {
    match (how, to) {
        ("rolled-back", Some(generation)) => {
            format!("the host rolled back to generation {generation}")
        }
        ("rolled-back", None) => "the host rolled back to the system it ran before".into(),
        ("nothing-to-roll-back", _) => "there was no previous generation to roll back to".into(),
        _ => "ROLLING BACK FAILED too; the host needs attention".into(),
    }
}

/// Activates `plan.system`, detached, and waits for the outcome (and the
/// magic rollback confirmation). Returns the generation.
fn activate(session: &mut Session, plan: &Plan) -> Result<Option<u64>> {
    let id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        std::process::id()
    );
    let goal = plan.goal.as_str();
    let runner = remote::runner(
        &id,
        &plan.system,
        goal,
        plan.magic,
        plan.inputs.confirm_timeout,
    );
    let step = format!("starting `switch-to-configuration {goal}`");
    let activation_deadline = Instant::now() + Duration::from_secs(plan.inputs.activation_timeout);
    let watch_id = id.clone();
    let started = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&started);
    let watch: crate::process::LineWatcher = Box::new(move |line: &str| {
        if line.starts_with("launched") {
            seen.store(true, Ordering::SeqCst);
            tracing::info!(id = %watch_id, how = %line, goal, "activation started on the host");
            fedi_protocol::fault::point("after-activation-started");
        }
    });
    let wait = plan.inputs.activation_timeout.min(30);
    let launched = match session.run_watching(
        &step,
        &remote::launch(&id, &plan.system, goal, wait),
        Some(runner.as_bytes()),
        PROBE_DEADLINE + Duration::from_secs(wait),
        Some(watch),
    ) {
        Ok(done) => done.stdout,
        Err(Failure::Connection(e)) if started.load(Ordering::SeqCst) => {
            // Started, then the connection dropped: the activation goes on;
            // follow it over a new connection.
            tracing::warn!(error = %e, "lost the connection to the host; the activation continues there; reconnecting");
            session.reconnect();
            String::new()
        }
        Err(Failure::Connection(e)) => return Err(e),
        Err(Failure::Remote(done)) if done.code() == Some(3) => {
            return Err(Error::conflict(format!(
                "another activation is running on {} ({}); not starting a second one",
                session.target().describe(),
                done.stdout.trim()
            ))
            .with_hint(
                "wait for it to finish (its log is in /run/fedi-nixos-config), then deploy again",
            ));
        }
        Err(Failure::Remote(done)) => return Err(session.remote_failure(&step, &done)),
    };
    let status = launched
        .lines()
        .rfind(|l| !l.starts_with("launched"))
        .map(str::to_string);
    follow(session, plan, &id, activation_deadline, status)
}

/// Follows the activation `id` (started by this deployment, or by one that
/// died) to its end: waits for it, confirms it over a brand-new connection
/// (magic rollback), and turns its outcome into the result.
fn follow(
    session: &mut Session,
    plan: &Plan,
    id: &str,
    activation_deadline: Instant,
    status: Option<String>,
) -> Result<Option<u64>> {
    // Whether the host knows the outcome was collected (see `remote::probe`).
    let mut collected = false;
    let line = match status.filter(|l| l.starts_with("activated") || parse_status(l).is_some()) {
        Some(line) => line,
        None => wait_status(session, id, activation_deadline, true)?,
    };
    let outcome = if line.starts_with("activated") {
        // Magic rollback: confirm over a brand-new connection. A system that
        // locked us out cannot be confirmed, and the host rolls back. The
        // confirming command also waits on the host for the runner's final
        // word, so a confirmed activation needs no further round trip.
        session.reconnect();
        let confirm_deadline = Instant::now() + Duration::from_secs(plan.inputs.confirm_timeout);
        // The first reason a fresh connection failed: what locked us out.
        let mut failure: Option<Error> = None;
        let mut confirmed: Option<String> = None;
        loop {
            match session.run(
                "confirming over a new connection",
                &remote::confirm(id, CONFIRM_WAIT.as_secs()),
                None,
                PROBE_DEADLINE + CONFIRM_WAIT,
            ) {
                Ok(done) => {
                    confirmed = Some(done.stdout.trim().to_string());
                    break;
                }
                Err(Failure::Connection(e)) => {
                    tracing::warn!(error = %e, "cannot confirm the new system over a fresh connection yet");
                    failure.get_or_insert(e);
                    session.reconnect();
                }
                Err(Failure::Remote(done)) => {
                    failure.get_or_insert(session.remote_failure("confirming", &done));
                }
            }
            if Instant::now() >= confirm_deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // The runner has the last word: confirmed, or rolled back. Past the
        // confirmation window it rolls back, which restores access when the
        // new system was what locked us out.
        let line = match confirmed.filter(|l| parse_status(l).is_some()) {
            Some(line) => {
                collected = true;
                line
            }
            None => {
                let final_deadline = Instant::now()
                    + Duration::from_secs(plan.inputs.activation_timeout)
                    + Duration::from_secs(2);
                wait_status(session, id, final_deadline, false)?
            }
        };
        let outcome = parse_status(&line).expect("final status");
        if let (Outcome::Unconfirmed { .. }, Some(e)) = (&outcome, &failure) {
            tracing::warn!(error = %e, "the new system could not be confirmed");
        }
        (outcome, failure)
    } else {
        (parse_status(&line).expect("final status"), None)
    };
    if !collected && !matches!(outcome.0, Outcome::Failed { .. }) {
        // (A failure is marked collected when its log is read.)
        if let Err(e) = session.run_ok(
            "recording that the outcome was reported",
            &remote::reported(id),
            None,
            PROBE_DEADLINE,
        ) {
            tracing::warn!(error = %e, "cannot mark the activation's outcome as reported");
        }
    }
    outcome_result(session, plan, id, outcome)
}

/// The result of a finished activation: its generation, or the error
/// saying what failed and what the host rolled back to.
fn outcome_result(
    session: &Session,
    plan: &Plan,
    id: &str,
    outcome: (Outcome, Option<Error>),
) -> Result<Option<u64>> {
    let goal = plan.goal.as_str();
    let describe = session.target().describe();
    match outcome {
        (Outcome::Done(generation), _) => Ok(generation),
        (
            Outcome::Failed {
                exit,
                rolled_back_to,
                rollback,
            },
            _,
        ) => {
            let log = log_tail(session, id);
            Err(Error::invalid_input(
                "system",
                format!(
                    "activating {} on {describe} failed: `switch-to-configuration {goal}` exited \
                     with status {exit}; {}. Last lines of its output:\n{log}",
                    plan.system,
                    rolled_back(rolled_back_to, &rollback)
                ),
            )
            .with_hint(format!(
                "fix the configuration and deploy again; the whole log is {}/{id}.log on the host",
                remote::STATE_DIR
            )))
        }
        (
            Outcome::Unconfirmed {
                rolled_back_to,
                rollback,
            },
            failure,
        ) => {
            let mut error = Error::invalid_input(
                "system",
                format!(
                    "the new system {} was activated on {describe} but could not be confirmed over \
                     a new SSH connection within {} s (magic rollback), so {}",
                    plan.system,
                    plan.inputs.confirm_timeout,
                    rolled_back(rolled_back_to, &rollback)
                ),
            )
            .with_hint(
                "the new configuration probably locks the deployer out (SSH, firewall, network, \
                 authorized keys); fix it, or raise `confirmTimeout` if the host is just slow",
            );
            if let Some(e) = failure {
                error = error.with_source(e);
            }
            Err(error)
        }
    }
}

/// Whether the host already is where `goal` would bring it.
fn already_there(probe: &Probe, system: &str, goal: Goal) -> bool {
    let current = probe.current.as_deref() == Some(system);
    let profile = probe.profile.as_deref() == Some(system);
    match goal {
        Goal::Switch => current && profile,
        Goal::Test => current,
        Goal::Boot => profile,
        Goal::DryActivate => false,
    }
}

impl Plan {
    /// The keys' contents (whole, and each line of 8 bytes or more), to be
    /// scrubbed from every error: remote output (an activation log, a
    /// failing command's tail) goes into errors and could quote them.
    fn secret_texts(&self) -> Vec<fedi_protocol::SecretString> {
        let mut texts = Vec::new();
        for key in &self.keys {
            let text = String::from_utf8_lossy(&key.content.0);
            let whole = text.trim();
            if !whole.is_empty() {
                texts.push(fedi_protocol::SecretString::from(whole.to_string()));
            }
            for line in whole.lines().map(str::trim).filter(|l| l.len() >= 8) {
                if line != whole {
                    texts.push(fedi_protocol::SecretString::from(line.to_string()));
                }
            }
        }
        texts
    }
}

/// `result` with the plan's secrets scrubbed from its error.
fn scrubbed<T>(secrets: &[fedi_protocol::SecretString], result: Result<T>) -> Result<T> {
    result.map_err(|e| e.scrub_secrets(&secrets.iter().collect::<Vec<_>>()))
}

fn deploy(inputs: DeploymentInputs) -> Result<DeploymentOutputs> {
    let plan = inputs.plan()?;
    let secrets = plan.secret_texts();
    scrubbed(&secrets, deploy_plan(plan))
}

fn deploy_plan(plan: Plan) -> Result<DeploymentOutputs> {
    let started = Instant::now();
    let mut session = Session::new(plan.target.clone())?;
    let describe = plan.target.describe();
    tracing::info!(host = %describe, system = %plan.system, goal = plan.goal.as_str(), "deploying");
    let found = probe(&session, &plan.system)?;
    let goal = plan.goal.as_str();
    if found.uid.is_some_and(|uid| uid != 0) {
        return Err(Error::invalid_input(
            "sudo",
            format!(
                "`{}` is not root on {describe}, and activating a system (setting the system \
                 profile, running `switch-to-configuration`) needs root",
                plan.target.user
            ),
        )
        .with_hint(format!(
            "set `sudo = true` and allow `{}` passwordless sudo on the host \
             (`security.sudo.wheelNeedsPassword = false` with the user in `wheel`, or a NOPASSWD \
             rule), or log in as `root`",
            plan.target.user
        )));
    }
    let keys = plan.keys.iter().map(Key::remote_path).collect();
    if let Some(busy) = &found.busy {
        if busy.system != plan.system || busy.goal != goal {
            return Err(Error::conflict(format!(
                "another activation is running on {describe} ({}: `{}` of {})",
                busy.id, busy.goal, busy.system
            ))
            .with_hint(
                "wait for it to finish (its log is in /run/fedi-nixos-config), then deploy again",
            ));
        }
        // A deployment of exactly this died after starting the activation:
        // follow that one to its end instead of starting another.
        tracing::info!(host = %describe, id = %busy.id, "this system's activation, started by an earlier deployment, still runs; following it");
        upload_keys(&session, &plan.keys, UploadAt::PreActivation)?;
        let activation_deadline =
            Instant::now() + Duration::from_secs(plan.inputs.activation_timeout);
        let generation = follow(&mut session, &plan, &busy.id, activation_deadline, None)?;
        upload_keys(&session, &plan.keys, UploadAt::PostActivation)?;
        tracing::info!(host = %describe, generation, elapsed_ms = started.elapsed().as_millis() as u64, "deployed");
        return Ok(DeploymentOutputs {
            system: plan.system.clone(),
            generation: if plan.goal.sets_profile() {
                generation
            } else {
                found.generation
            },
            changed: plan.goal != Goal::DryActivate,
            paths_copied: 0,
            previous_system: busy.previous.clone(),
            keys,
        });
    }
    // The outcome of this system's last activation, which nobody reported
    // (the deployment that started it died): report it rather than
    // activating again, unless it was rolled back for want of confirmation.
    let mut adopted: Option<&Activation> = None;
    if let Some(last) = found
        .last
        .as_ref()
        .filter(|l| l.activation.system == plan.system && l.activation.goal == goal)
    {
        let id = &last.activation.id;
        if let Err(e) = session.run_ok(
            "recording that the outcome was reported",
            &remote::reported(id),
            None,
            PROBE_DEADLINE,
        ) {
            tracing::warn!(error = %e, "cannot mark the activation's outcome as reported");
        }
        match parse_status(&last.status) {
            Some(Outcome::Done(_)) => adopted = Some(&last.activation),
            Some(outcome @ Outcome::Failed { .. }) => {
                tracing::info!(host = %describe, id = %id, "this system's activation, started by an earlier deployment, failed; reporting it");
                outcome_result(&session, &plan, id, (outcome, None))?;
            }
            _ => {
                tracing::info!(host = %describe, id = %id, status = %last.status, "this system's last activation, started by an earlier deployment, did not complete; activating again");
            }
        }
    }
    if already_there(&found, &plan.system, plan.goal) {
        let changed = upload_keys(&session, &plan.keys, UploadAt::PreActivation)?
            | upload_keys(&session, &plan.keys, UploadAt::PostActivation)?;
        tracing::info!(host = %describe, elapsed_ms = started.elapsed().as_millis() as u64, "the host already runs this system; nothing copied or switched");
        return Ok(DeploymentOutputs {
            system: plan.system,
            generation: found.generation,
            changed: changed || adopted.is_some(),
            paths_copied: 0,
            previous_system: match adopted {
                Some(activation) => activation.previous.clone(),
                None => found.current,
            },
            keys,
        });
    }
    let paths_copied = if found.valid {
        0
    } else {
        let copied = nix::copy(
            &session,
            &plan.system,
            &CopyOptions {
                nix: &plan.inputs.nix_executable,
                substitute_on_destination: plan.inputs.substitute_on_destination,
                check_signatures: plan.inputs.check_signatures,
                deadline: Duration::from_secs(plan.inputs.copy_timeout),
            },
        )?;
        tracing::info!(host = %describe, paths = copied, "closure copied");
        copied
    };
    fedi_protocol::fault::point("after-copy");
    let mut changed = upload_keys(&session, &plan.keys, UploadAt::PreActivation)?;
    let generation = activate(&mut session, &plan)?;
    changed |= plan.goal != Goal::DryActivate;
    changed |= upload_keys(&session, &plan.keys, UploadAt::PostActivation)?;
    tracing::info!(host = %describe, generation, elapsed_ms = started.elapsed().as_millis() as u64, "deployed");
    Ok(DeploymentOutputs {
        system: plan.system,
        generation: if plan.goal.sets_profile() {
            generation
        } else {
            found.generation
        },
        changed,
        paths_copied,
        previous_system: found.current,
        keys,
    })
}

/// The `deployment` resource type.
#[derive(Debug, Default)]
pub struct Deployment;

impl Resource for Deployment {
    type Inputs = DeploymentInputs;
    type Outputs = DeploymentOutputs;

    const TYPE: &'static str = "deployment";
    const DESCRIPTION: &'static str = "A NixOS system deployed onto an existing host over SSH \
        (pinned host key, one shared connection): the closure copied with `nix copy`, activated \
        detached from the connection, rolled back by the host itself when activation fails or a \
        fresh connection cannot confirm it (magic rollback), secret files uploaded outside the \
        store. Deploying what the host already runs copies and switches nothing. Deleting leaves \
        the host as it is and forgets it.";
    const REQUIRE_STATE: bool = false;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(
        &self,
        inputs: DeploymentInputs,
        _: CreateContext,
    ) -> Result<DeploymentOutputs> {
        deploy(inputs)
    }

    async fn update(
        &self,
        inputs: DeploymentInputs,
        _previous: Recorded<DeploymentInputs, DeploymentOutputs>,
    ) -> Result<DeploymentOutputs> {
        deploy(inputs)
    }

    /// Leaves the host and what it runs as they are: there is no "no
    /// system" state to switch a NixOS host to, and the host itself belongs
    /// to another resource (or to nobody here). Never connects.
    async fn delete(&self, current: Recorded<DeploymentInputs, DeploymentOutputs>) -> Result<()> {
        tracing::info!(
            host = %current.inputs.host,
            system = %current.outputs.system,
            "forgetting the deployment; the host keeps running its system"
        );
        Ok(())
    }

    async fn read(
        &self,
        current: Recorded<DeploymentInputs, DeploymentOutputs>,
    ) -> Result<ReadOutcome<DeploymentOutputs>> {
        let recorded = current.outputs;
        let plan = current.inputs.plan()?;
        let session = Session::new(plan.target.clone())?;
        let found = probe(&session, &recorded.system)?;
        let mut drift = Vec::new();
        let running = found.current.clone().unwrap_or_else(|| "nothing".into());
        if matches!(plan.goal, Goal::Switch | Goal::Test) && running != recorded.system {
            drift.push(Drift {
                property: "system".into(),
                message: format!("the host runs {running}"),
            });
        }
        if plan.goal.sets_profile() && found.generation != recorded.generation {
            drift.push(Drift {
                property: "generation".into(),
                message: format!(
                    "the system profile is at generation {}",
                    found.generation.map_or("none".into(), |g| g.to_string())
                ),
            });
        }
        Ok(ReadOutcome::Exists {
            outputs: DeploymentOutputs {
                generation: found.generation,
                changed: false,
                paths_copied: 0,
                ..recorded
            },
            drift,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_and_statuses_parse() {
        assert_eq!(generation_of("system-12-link"), Some(12));
        assert_eq!(generation_of("-"), None);
        assert!(matches!(
            parse_status("done 3"),
            Some(Outcome::Done(Some(3)))
        ));
        assert!(matches!(
            parse_status("failed 1 2 rolled-back"),
            Some(Outcome::Failed {
                rolled_back_to: Some(2),
                ..
            })
        ));
        assert!(parse_status("activated 3").is_none());
        assert!(parse_status("running").is_none());
    }

    #[test]
    fn probe_output_parses() {
        let p =
            parse_probe("current=/nix/store/a-x\nprofile=\ngeneration=system-4-link\nvalid=1\n");
        assert_eq!(p.current.as_deref(), Some("/nix/store/a-x"));
        assert_eq!(p.profile, None);
        assert_eq!(p.generation, Some(4));
        assert!(p.valid);
        assert!(p.busy.is_none());
    }
}
