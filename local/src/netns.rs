//! The private network namespace the local deployment runs in: the VMs'
//! addresses, the bridge and every backend's port live there and vanish
//! with it, so nothing touches the machine's network.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::guests::BRIDGE;

/// Set in a process that already runs in its own network namespace.
pub const IN_NAMESPACE: &str = "FEDI_LOCAL_IN_NETNS";

/// Whether this process is the one re-executed in a private namespace.
pub fn inside() -> bool {
    std::env::var_os(IN_NAMESPACE).is_some()
}

/// The command running `exe args` in a new network namespace (needs root),
/// marked with [`IN_NAMESPACE`].
pub fn command(exe: &Path, args: impl IntoIterator<Item = OsString>) -> Command {
    let mut command = Command::new("unshare");
    command
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args(args)
        .env(IN_NAMESPACE, "1");
    command
}

/// Whether this process runs as root (namespaces need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Sets up the namespace this process runs in: loopback and the VMs'
/// bridge.
pub fn set_up() -> Result<()> {
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["link", "add", BRIDGE, "type", "bridge"],
        vec!["link", "set", BRIDGE, "up"],
    ] {
        let output = Command::new("ip")
            .args(&args)
            .output()
            .context("cannot run `ip` (install iproute2)")?;
        if !output.status.success() {
            bail!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    // The guests' IPv4 addresses share 10.77.0.0/16: the first is the
    // subnet's primary address, and Linux deletes every secondary with the
    // primary unless told to promote one, so deleting the first VM would
    // cut off all the others.
    let promote = format!("/proc/sys/net/ipv4/conf/{BRIDGE}/promote_secondaries");
    std::fs::write(&promote, "1").with_context(|| format!("cannot write {promote}"))?;
    Ok(())
}
