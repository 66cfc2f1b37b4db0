//! The Proxmox test server's VMs, booted as real SSH/Nix hosts: each VM's
//! guest is an sshd in namespaces of its own ([`SshHost::boot`]) listening
//! on the VM's address on port 22, an address put on the bridge `vmbr0` of
//! the private network namespace the local deployment runs in (the VM's
//! "DHCP lease"). Root's authorised keys are cloud-init's `sshkeys`. The
//! guest's disk (its /nix, /root, /run) is a directory that outlives a
//! reboot and goes with the VM.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use fedi_testbeds::pve::{Guest, Guests};
use fedi_testbeds::ssh_host::SshHost;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// The bridge the guests' addresses live on.
pub const BRIDGE: &str = "vmbr0";

/// The guests of the local Proxmox server.
pub struct LocalGuests {
    root: PathBuf,
    running: BTreeMap<u32, SshHost>,
}

impl LocalGuests {
    /// Guests whose disks live under `root`.
    pub fn new(root: &Path) -> LocalGuests {
        LocalGuests {
            root: root.to_path_buf(),
            running: BTreeMap::new(),
        }
    }
}

/// Where VM `vmid`'s guest keeps its disk under `root`.
pub fn disk(root: &Path, vmid: u32) -> PathBuf {
    root.join(format!("vm-{vmid}"))
}

/// The VM's addresses: IPv4 from 10.77.0.0/16, IPv6 from fd77::/64.
pub fn addresses(vmid: u32) -> (Ipv4Addr, Ipv6Addr) {
    let v4 = Ipv4Addr::new(10, 77, (vmid / 250) as u8, (vmid % 250 + 2) as u8);
    let v6 = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, vmid as u16);
    (v4, v6)
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || stderr.contains("File exists") {
        Ok(())
    } else {
        bail!("ip {}: {}", args.join(" "), stderr.trim())
    }
}

/// Puts the VM's addresses on the bridge (its "DHCP lease").
fn lease(v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
    ip(&["addr", "add", &format!("{v4}/16"), "dev", BRIDGE])
        .with_context(|| format!("cannot give the guest {v4}"))?;
    ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        BRIDGE,
        "nodad",
    ])
    .with_context(|| format!("cannot give the guest {v6}"))
}

impl Guests for LocalGuests {
    fn boot(
        &mut self,
        vmid: u32,
        config: &Map<String, Value>,
    ) -> std::result::Result<Guest, String> {
        let user = config
            .get("ciuser")
            .and_then(Value::as_str)
            .unwrap_or("root");
        if user != "root" {
            return Err(format!(
                "the local guests log in as root only, not cloud-init user {user:?}"
            ));
        }
        let keys = config
            .get("sshkeys")
            .and_then(Value::as_str)
            // Proxmox keeps `sshkeys` percent-encoded.
            .map(|keys| percent_decode_str(keys).decode_utf8_lossy().into_owned())
            .ok_or("cloud-init has no SSH keys (sshkeys): nobody could log in")?;
        let (v4, v6) = addresses(vmid);
        // The trait speaks in messages (the test server puts them in the
        // task log); keep every cause in the text.
        lease(v4, v6).map_err(|e| format!("{e:#}"))?;
        let host = SshHost::boot(&disk(&self.root, vmid), IpAddr::V4(v4), &keys);
        let guest = Guest {
            addresses: vec![(IpAddr::V4(v4), 16), (IpAddr::V6(v6), 64)],
            host_key: host.host_key.clone(),
        };
        self.running.insert(vmid, host);
        Ok(guest)
    }

    fn halt(&mut self, vmid: u32) {
        // Dropping the host kills its namespace's processes.
        self.running.remove(&vmid);
        let (v4, v6) = addresses(vmid);
        let _ = ip(&["addr", "del", &format!("{v4}/16"), "dev", BRIDGE]);
        let _ = ip(&["-6", "addr", "del", &format!("{v6}/64"), "dev", BRIDGE]);
    }

    fn destroy(&mut self, vmid: u32) {
        self.halt(vmid);
        let _ = std::fs::remove_dir_all(disk(&self.root, vmid));
    }
}
