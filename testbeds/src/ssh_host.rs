//! A real test host: OpenSSH's sshd in mount and PID namespaces of its own
//! (`unshare`), with its own /nix (an empty store, filled by `nix copy`),
//! /root and /run, a generated host key and an authorised deployer key,
//! listening on a loopback port of its own. Dropping it kills the
//! namespace's init (sshd), which takes every process in it along (also
//! activations started detached) and releases its mounts.
//!
//! Besides root, the host has a user `deployer` (same authorised key,
//! passwordless sudo): its account and sudoers exist only inside the
//! namespace, in private copies of /etc/passwd, /etc/group, /etc/shadow and
//! /etc/sudoers bound over the machine's (which stay untouched), with its
//! home in the host's own /home.
//!
//! Its Nix commands (those of every SSH session, also through sudo) read
//! the project's Nix configuration ([`crate::nix`]), not the machine's.
//!
//! The same host serves as a Proxmox guest in the local deployment
//! ([`SshHost::boot`]): listening on the VM's address on port 22 inside a
//! network namespace the caller made, with the keys cloud-init would
//! install, and a directory that outlives a reboot.

use std::net::{IpAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedi_protocol::testkit::Redactions;
use serde_json::{Value, json};

pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(status.success());
}

/// The non-root user of the test host (passwordless sudo).
pub const DEPLOYER: &str = "deployer";

/// A uid and gid free in the machine's /etc/passwd and /etc/group.
fn free_id() -> u32 {
    let taken = |file: &str| -> Vec<u32> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(':').nth(2)?.parse().ok())
            .collect()
    };
    let (users, groups) = (taken("/etc/passwd"), taken("/etc/group"));
    (4000..60000)
        .find(|id| !users.contains(id) && !groups.contains(id))
        .expect("a free uid")
}

/// Writes the namespace-private account files and sudoers under `etc`, with
/// the machine's accounts plus `deployer`.
fn private_etc(etc: &Path, id: u32) {
    std::fs::create_dir_all(etc.join("sudoers.d")).unwrap();
    let with = |file: &str, line: String| {
        let mut text = std::fs::read_to_string(format!("/etc/{file}")).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        std::fs::write(etc.join(file), text).unwrap();
    };
    with(
        "passwd",
        format!("{DEPLOYER}:x:{id}:{id}:test deployer:/home/{DEPLOYER}:/bin/sh\n"),
    );
    with("group", format!("{DEPLOYER}:x:{id}:\n"));
    with("shadow", format!("{DEPLOYER}:*:19000:0:99999:7:::\n"));
    std::fs::set_permissions(etc.join("shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(
        etc.join("sudoers"),
        format!(
            "Defaults env_reset\n\
             Defaults secure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
             Defaults env_keep += \"NIX_CONF_DIR NIX_USER_CONF_FILES\"\n\
             root ALL=(ALL:ALL) ALL\n\
             {DEPLOYER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(etc.join("sudoers"), std::fs::Permissions::from_mode(0o440)).unwrap();
}

/// A running SSH/Nix host.
pub struct SshHost {
    child: Child,
    /// Everything of the host: `nix/`, `root/`, `run/`, keys, log.
    pub dir: PathBuf,
    /// Removes `dir` on drop, for hosts that do not outlive the test.
    _temp: Option<tempfile::TempDir>,
    /// Where sshd listens.
    pub address: IpAddr,
    pub port: u16,
    /// The deployer's private key (authorised for root and [`DEPLOYER`]);
    /// for a booted guest, none (cloud-init's keys are authorised).
    pub deployer_key: PathBuf,
    /// The host's public key line.
    pub host_key: String,
}

/// The tests' name for a host on loopback.
pub type TestHost = SshHost;

impl SshHost {
    /// A host on a free loopback port, in a temporary directory, with a
    /// fresh deployer key.
    pub fn start() -> SshHost {
        let temp = tempfile::Builder::new()
            .prefix("fedi-host-")
            .tempdir()
            .unwrap();
        let d = temp.path().to_path_buf();
        std::fs::create_dir_all(d.join("deployer")).unwrap();
        std::fs::set_permissions(d.join("deployer"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let deployer_key = d.join("deployer/id_ed25519");
        keygen(&deployer_key);
        let authorized = std::fs::read_to_string(d.join("deployer/id_ed25519.pub")).unwrap();
        let address = IpAddr::from([127, 0, 0, 1]);
        let port = fedi_protocol::testkit::free_tcp_port();
        let mut host = SshHost::start_in(&d, address, port, &authorized);
        host._temp = Some(temp);
        host.deployer_key = deployer_key;
        host
    }

    /// Boots a guest: `dir` holds its disk (created on the first boot,
    /// kept by the caller across reboots), sshd listens on `address` port
    /// 22 (the caller has put the address on an interface of its network
    /// namespace), root's authorised keys are `authorized_keys` (what
    /// cloud-init writes from the VM's `sshkeys`).
    pub fn boot(dir: &Path, address: IpAddr, authorized_keys: &str) -> SshHost {
        SshHost::start_in(dir, address, 22, authorized_keys)
    }

    fn start_in(d: &Path, address: IpAddr, port: u16, authorized_keys: &str) -> SshHost {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is not installed: run `bash tests/install-deps.sh` (openssh-server)"
        );
        for sub in ["nix", "root/.ssh", "run", "home/deployer/.ssh"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for (sub, mode) in [("root", 0o700), ("root/.ssh", 0o700)] {
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        if !d.join("host_key").exists() {
            keygen(&d.join("host_key"));
        }
        let authorized = d.join("root/.ssh/authorized_keys");
        std::fs::write(&authorized, authorized_keys).unwrap();
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The non-root user: same key, its own home, sudo without password.
        let id = free_id();
        private_etc(&d.join("etc"), id);
        let home = d.join("home/deployer");
        std::fs::copy(&authorized, home.join(".ssh/authorized_keys")).unwrap();
        for (path, mode) in [
            (home.join(".ssh/authorized_keys"), 0o600),
            (home.join(".ssh"), 0o700),
            (home.clone(), 0o700),
        ] {
            std::os::unix::fs::chown(&path, Some(id), Some(id)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::set_permissions(d.join("home"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress {address}\nHostKey {}\nPidFile none\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nStrictModes yes\nMaxSessions 50\n\
                 MaxStartups 50\nAuthorizedKeysFile .ssh/authorized_keys\n\
                 SetEnv NIX_CONF_DIR={} NIX_USER_CONF_FILES=\n",
                d.join("host_key").display(),
                crate::nix::conf_dir().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let script = format!(
            "set -e; mount --bind {d}/nix /nix; mount --bind {d}/root /root; \
             mount --bind {d}/run /run; mount --bind {d}/home /home; \
             for f in passwd group shadow sudoers sudoers.d; do mount --bind {d}/etc/$f /etc/$f; done; \
             mkdir -p /run/sshd; exec /usr/sbin/sshd -D -e -f {config}",
            d = d.display(),
            config = config.display()
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start unshare");
        let host_key = std::fs::read_to_string(d.join("host_key.pub"))
            .unwrap()
            .trim()
            .to_string();
        let mut host = SshHost {
            child,
            dir: d.to_path_buf(),
            _temp: None,
            address,
            port,
            deployer_key: PathBuf::new(),
            host_key,
        };
        host.wait_listening();
        host
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.address, self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the test host's sshd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the test host's sshd did not listen within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.as_path().join("sshd.log")).unwrap_or_default()
    }

    /// A path on the host, as seen from outside its namespace.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.dir.as_path().join(inside.trim_start_matches('/'))
    }

    /// A file on the host, or "" when it is missing.
    pub fn read(&self, inside: &str) -> String {
        std::fs::read_to_string(self.path(inside)).unwrap_or_default()
    }

    /// Where a symlink on the host points, if it exists.
    pub fn link(&self, inside: &str) -> Option<String> {
        std::fs::read_link(self.path(inside))
            .ok()
            .map(|p| p.display().to_string())
    }

    /// The store paths in the host's own store (`/nix/store/<name>`).
    pub fn store_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = std::fs::read_dir(self.path("/nix/store"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .map(|n| format!("/nix/store/{n}"))
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        paths
    }

    /// The system profile's generation link (`system-N-link`).
    pub fn generation(&self) -> Option<String> {
        self.link("/nix/var/nix/profiles/system")
    }

    /// Lines of /root/activations (what the test systems' switches did).
    pub fn activations(&self) -> Vec<String> {
        self.read("/root/activations")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The inputs deploying `system` to this host.
    pub fn inputs(&self, system: &str) -> Value {
        json!({
            "system": system,
            "host": self.address.to_string(),
            "port": self.port,
            "sshKeyFile": self.deployer_key,
            "hostPublicKey": self.host_key,
            "checkSignatures": false,
            "confirmTimeout": 5,
            "activationTimeout": 60,
        })
    }

    /// The inputs deploying `system` as the non-root [`DEPLOYER`], through
    /// sudo or not.
    pub fn inputs_as_deployer(&self, system: &str, sudo: bool) -> Value {
        let mut inputs = self.inputs(system);
        inputs["user"] = json!(DEPLOYER);
        inputs["sudo"] = json!(sudo);
        inputs
    }

    /// Transcript redactions for this host.
    pub fn redactions(&self) -> Redactions {
        Redactions::new()
            .key("port", "<port>")
            .key("hostPublicKey", "<host key>")
            .path(self.dir.as_path(), "<host dir>")
    }

    /// Waits until no activation runs on the host any more.
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.path("/run/fedi-nixos-config/active").exists() {
            assert!(Instant::now() < deadline, "an activation is still running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        // SIGKILL to unshare: --kill-child kills the namespace's init
        // (sshd), and with it every process of the namespace.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The namespace (and its mounts) ends with its init; wait until
        // its sshd no longer answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((self.address, self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
