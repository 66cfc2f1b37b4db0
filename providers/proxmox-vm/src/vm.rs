//! Resource type `vm`: a QEMU virtual machine on Proxmox VE, cloned from a
//! template, configured (CPU, memory, disks, network, cloud-init, tags),
//! started, and described by what its guest agent reports.
//!
//! Create clones the template to a VMID it allocates (`/cluster/nextid`,
//! trying the next one when a concurrent create took it) or the one given,
//! and marks the VM in its description so that a create retried after a
//! crash finds and adopts it instead of cloning again. Update changes the
//! VM in place (a node change migrates it); a change that needs a new VM
//! (template, fixed VMID) is an error saying so. Changes Proxmox cannot
//! hot-plug into a running VM (cores, sockets, CPU type, memory without
//! memory hotplug) stay pending there until the VM restarts: update then
//! restarts it (shutdown, then start) or leaves them pending, as
//! `onPendingChanges` says. Delete shuts the VM down (then stops it) and
//! destroys it with its disks; a VM that is already gone is success. Read
//! compares the inputs with what runs and reports pending changes as drift.
//!
//! Requests that make or destroy a VM are never sent again blindly: when
//! the answer to a clone or a DELETE is lost (dropped, or pveproxy's 596),
//! the provider looks at the VMID it asked for (its config, its lock, the
//! node's running tasks) and goes on from what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{CreateContext, Drift, Error, ReadOutcome, Recorded, Resource, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{ATTEMPTS, Api, CallError, Proxmox, Retry, uri_escape, uri_unescape};
use crate::task::{self, Failure, Job, Outcome};

/// The line this provider adds to the description of every VM it makes:
/// how a retried create recognises its VM, and how delete makes sure it
/// destroys nothing else. (An HTML comment: the notes panel hides it.)
pub const MARKER: &str = "<!-- managed by fedi-proxmox-vm -->";

/// The [fault point](fedi_protocol::fault) right after Proxmox accepted the
/// clone, before it finished.
pub const FAULT_AFTER_CLONE_STARTED: &str = "after-clone-started";
/// The fault point after the VM was configured, before it is started.
pub const FAULT_AFTER_CONFIGURE: &str = "after-configure";

/// Inputs of `vm`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmInputs {
    /// How to reach the Proxmox VE cluster.
    pub proxmox: Proxmox,
    /// The node the VM runs on, e.g. `pve1`. Changing it migrates the VM
    /// (online when it runs).
    pub node: String,
    /// The template to clone. Changing it needs a new VM.
    pub template: Template,
    /// Make a full clone (independent disks). `false` makes a linked clone,
    /// which needs a storage with snapshots (LVM-thin, ZFS, Ceph).
    #[serde(default = "yes")]
    pub full_clone: bool,
    /// Storage for the clone's disks (full clones only), e.g. `local-lvm`;
    /// also where new disks and a missing cloud-init drive are made. Unset:
    /// the template's storage. Used at creation.
    #[serde(default)]
    pub storage: Option<String>,
    /// Resource pool to put the VM in at creation.
    #[serde(default)]
    pub pool: Option<String>,
    /// A fixed VMID (100 to 999999999). Unset: the next free one is
    /// allocated, safely against concurrent creates. Changing it needs a
    /// new VM.
    #[serde(default)]
    pub vmid: Option<u32>,
    /// The VM's name, a DNS name such as `mastodon-alice`.
    pub name: String,
    /// Notes shown in the Proxmox UI (Markdown).
    #[serde(default)]
    pub description: String,
    /// Tags. Proxmox lowercases and sorts them; they are compared as a set,
    /// so their order causes no drift.
    #[serde(default)]
    pub tags: Vec<String>,
    /// CPU cores per socket.
    #[serde(default = "one")]
    pub cores: u32,
    /// CPU sockets.
    #[serde(default = "one")]
    pub sockets: u32,
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory: u64,
    /// Minimum memory in MiB for ballooning; `0` turns the balloon device
    /// off. Unset: left as the template has it.
    #[serde(default)]
    pub balloon: Option<u64>,
    /// Disk sizes. Disks only grow: a size below the current one is an
    /// error (Proxmox cannot shrink disks). A slot the template lacks is
    /// made on `storage`.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Network devices `net0`, `net1`, ... in this order. Devices beyond the
    /// list are removed. Empty: the template's devices are kept as they are.
    #[serde(default)]
    pub networks: Vec<Network>,
    /// Start the VM when its node boots.
    #[serde(default)]
    pub on_boot: bool,
    /// Protection: Proxmox refuses to remove the VM or its disks. Delete
    /// then fails until it is turned off.
    #[serde(default)]
    pub protection: bool,
    /// Whether the VM runs. `false` shuts it down (then stops it after
    /// `timeouts.shutdownSeconds`).
    #[serde(default = "yes")]
    pub started: bool,
    /// What to do with changes Proxmox cannot apply to the running VM
    /// (cores, sockets, CPU type, memory without memory hotplug): they stay
    /// pending in Proxmox until the VM restarts. `restart`: shut the VM
    /// down gracefully (stopping it after `timeouts.shutdownSeconds`) and
    /// start it again, only when such a change is pending. `keep-pending`:
    /// leave them pending (the `pendingChanges` output and read say so)
    /// until someone restarts the VM, e.g. in a maintenance window.
    #[serde(default)]
    pub on_pending_changes: OnPendingChanges,
    /// Hotplug features (`network`, `disk`, `cpu`, `memory`, `usb`,
    /// `cloudinit`); empty turns hotplug off. `memory` needs `numa = true`.
    /// Unset: left as the template has it (Proxmox's default is `network`,
    /// `disk`, `usb`).
    #[serde(default)]
    pub hotplug: Option<Vec<String>>,
    /// NUMA emulation (needed for memory hotplug). Unset: left as the
    /// template has it.
    #[serde(default)]
    pub numa: Option<bool>,
    /// CPU settings. Unset: left as the template has them.
    #[serde(default)]
    pub cpu: Option<Cpu>,
    /// Cloud-init settings (the template needs cloud-init in the guest; a
    /// cloud-init drive is added when missing). Unset: left as they are.
    #[serde(default)]
    pub cloud_init: Option<CloudInit>,
    /// Wait for the QEMU guest agent to report the VM's addresses and SSH
    /// host key. `false`: return once the VM is started; the address and
    /// host key outputs stay empty.
    #[serde(default = "yes")]
    pub wait_for_agent: bool,
    /// The file holding the SSH host public key, read through the guest
    /// agent.
    #[serde(default = "default_host_key_path")]
    pub host_key_path: String,
    /// How long each phase may take.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// What [`VmInputs::on_pending_changes`] does with changes that need a
/// restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnPendingChanges {
    /// Shut the VM down and start it again when such a change is pending
    /// (like bpg's `reboot_after_update`, but only when needed).
    #[default]
    Restart,
    /// Leave them pending until the VM restarts; report them.
    KeepPending,
}

/// CPU settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// The emulated CPU type, e.g. `host`, `x86-64-v2-AES`, `kvm64`.
    /// Changing it on a running VM needs a restart.
    #[serde(default, rename = "type")]
    pub cpu_type: Option<String>,
}

/// Which template to clone: exactly one of `vmid` and `name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// The template's VMID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// The template's name (it must be unique in the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One disk's size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// The disk's slot: `scsi0`, `virtio0`, `sata0`, `ide0`, ...
    pub slot: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// Storage for a disk the template lacks. Unset: `storage`.
    #[serde(default)]
    pub storage: Option<String>,
}

/// One network device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// The bridge, e.g. `vmbr0`.
    pub bridge: String,
    /// The device model: `virtio`, `e1000`, `vmxnet3`, `rtl8139`.
    #[serde(default = "default_model")]
    pub model: String,
    /// VLAN tag (1 to 4094).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// MAC address, e.g. `BC:24:11:00:00:01`. Unset: the one Proxmox
    /// generated is kept.
    #[serde(default)]
    pub mac: Option<String>,
    /// Use the Proxmox firewall on this device.
    #[serde(default)]
    pub firewall: bool,
}

/// Cloud-init settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudInit {
    /// The user cloud-init creates (with the SSH keys). Unset: the image's
    /// default user.
    #[serde(default)]
    pub user: Option<String>,
    /// SSH public keys for the user, e.g. an `ssh-key` keypair's
    /// `publicKey` output.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// IP configuration of `net0`, `net1`, ... in order.
    #[serde(default)]
    pub ip_configs: Vec<IpConfig>,
    /// DNS servers. Empty: the node's.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// DNS search domain. Unset: the node's.
    #[serde(default)]
    pub search_domain: Option<String>,
}

/// IP configuration of one network device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// `dhcp`, or a static address with prefix length, e.g.
    /// `192.0.2.10/24`. Unset: no IPv4.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// IPv4 gateway (static addresses only).
    #[serde(default)]
    pub gateway4: Option<String>,
    /// `dhcp`, `auto` (SLAAC) or a static address with prefix length, e.g.
    /// `2001:db8::10/64`. Unset: no IPv6.
    #[serde(default)]
    pub ipv6: Option<String>,
    /// IPv6 gateway (static addresses only).
    #[serde(default)]
    pub gateway6: Option<String>,
}

/// Timeouts, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// For the clone task.
    #[serde(default = "default_clone_timeout")]
    pub clone_seconds: u64,
    /// For each other task (configure, resize, start, stop, destroy).
    #[serde(default = "default_task_timeout")]
    pub task_seconds: u64,
    /// For the guest agent to report addresses and the host key after
    /// start.
    #[serde(default = "default_agent_timeout")]
    pub agent_seconds: u64,
    /// For a graceful shutdown before the VM is stopped.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_seconds: u64,
    /// For a migration to another node.
    #[serde(default = "default_migrate_timeout")]
    pub migrate_seconds: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            clone_seconds: default_clone_timeout(),
            task_seconds: default_task_timeout(),
            agent_seconds: default_agent_timeout(),
            shutdown_seconds: default_shutdown_timeout(),
            migrate_seconds: default_migrate_timeout(),
        }
    }
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_memory() -> u64 {
    2048
}
fn default_model() -> String {
    "virtio".into()
}
fn default_host_key_path() -> String {
    "/etc/ssh/ssh_host_ed25519_key.pub".into()
}
fn default_clone_timeout() -> u64 {
    900
}
fn default_task_timeout() -> u64 {
    300
}
fn default_agent_timeout() -> u64 {
    300
}
fn default_shutdown_timeout() -> u64 {
    180
}
fn default_migrate_timeout() -> u64 {
    1800
}

/// Outputs of `vm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmOutputs {
    /// The VM's id.
    pub vmid: u32,
    /// The node it runs on.
    pub node: String,
    /// Its name.
    pub name: String,
    /// MAC addresses of `net0`, `net1`, ...
    pub mac_addresses: Vec<String>,
    /// IPv4 addresses the guest agent reports (without loopback).
    pub ipv4_addresses: Vec<String>,
    /// IPv6 addresses the guest agent reports (without loopback and
    /// link-local).
    pub ipv6_addresses: Vec<String>,
    /// The guest's SSH host public key, read through the guest agent (a
    /// channel through the hypervisor, not the network), for pinning in
    /// `known_hosts`. Unset when not waiting for the agent.
    #[serde(default)]
    pub ssh_host_key: Option<String>,
    /// Inputs whose change Proxmox holds pending until the VM restarts
    /// (with `onPendingChanges = "keep-pending"`), e.g. `["cores",
    /// "memory"]`; empty when what runs is what the inputs say.
    #[serde(default)]
    pub pending_changes: Vec<String>,
}

const DISK_PREFIXES: [&str; 5] = ["scsi", "virtio", "sata", "ide", "efidisk"];
const MODELS: [&str; 4] = ["virtio", "e1000", "vmxnet3", "rtl8139"];
/// qemu-server's hotplug features (`parse_hotplug_features`).
const HOTPLUG: [&str; 6] = ["network", "disk", "cpu", "memory", "usb", "cloudinit"];

impl VmInputs {
    fn timeout(&self, seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// Checks everything that can be checked without asking Proxmox.
    pub fn validate(&self) -> Result<()> {
        self.proxmox.validate()?;
        if !valid_dns_name(&self.node) {
            return Err(Error::invalid_input(
                "node",
                format!("{:?} is not a node name", self.node),
            )
            .with_hint("give the node's name as `pvecm nodes` lists it, e.g. pve1"));
        }
        match (&self.template.vmid, &self.template.name) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::invalid_input("template", "give exactly one of `vmid` and `name`")
                    .with_hint("e.g. template = { name = \"debian-12-cloud\"; } or template = { vmid = 9000; }"));
            }
            (Some(id), None) => check_vmid("template.vmid", *id)?,
            (None, Some(name)) if name.is_empty() => {
                return Err(Error::invalid_input("template.name", "is empty"));
            }
            _ => {}
        }
        if let Some(id) = self.vmid {
            check_vmid("vmid", id)?;
        }
        if !valid_dns_name(&self.name) {
            return Err(Error::invalid_input(
                "name",
                format!("{:?} is not a valid VM name", self.name),
            )
            .with_hint(
                "Proxmox wants a DNS name: letters, digits, `-` and `.`, e.g. mastodon-alice",
            ));
        }
        for tag in &self.tags {
            let lower = tag.to_lowercase();
            let ok = lower.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && lower
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c));
            if !ok {
                return Err(Error::invalid_input("tags", format!("{tag:?} is not a valid tag"))
                    .with_hint("tags are letters, digits and `_ - + .`, starting with a letter, digit or `_`"));
            }
        }
        if self.cores == 0 || self.cores > 1024 {
            return Err(
                Error::invalid_input("cores", format!("{} is out of range", self.cores))
                    .with_hint("give 1 to 1024 cores per socket"),
            );
        }
        if self.sockets == 0 || self.sockets > 16 {
            return Err(Error::invalid_input(
                "sockets",
                format!("{} is out of range", self.sockets),
            )
            .with_hint("give 1 to 16 sockets"));
        }
        if self.memory < 16 {
            return Err(Error::invalid_input(
                "memory",
                format!("{} MiB is too little", self.memory),
            )
            .with_hint("memory is in MiB, e.g. 2048 for 2 GiB"));
        }
        if let Some(balloon) = self.balloon
            && balloon > self.memory
        {
            return Err(Error::invalid_input(
                "balloon",
                format!("{balloon} MiB is more than `memory` ({} MiB)", self.memory),
            )
            .with_hint("the balloon minimum must not exceed memory; 0 turns ballooning off"));
        }
        let mut slots = Vec::new();
        for (i, disk) in self.disks.iter().enumerate() {
            let valid_slot = DISK_PREFIXES.iter().any(|p| {
                disk.slot
                    .strip_prefix(p)
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            });
            if !valid_slot {
                return Err(Error::invalid_input(
                    format!("disks[{i}].slot"),
                    format!("{:?} is not a disk slot", disk.slot),
                )
                .with_hint("use scsi0, virtio0, sata0, ide0, ..."));
            }
            if slots.contains(&&disk.slot) {
                return Err(Error::invalid_input(
                    format!("disks[{i}].slot"),
                    format!("`{}` is listed twice", disk.slot),
                ));
            }
            slots.push(&disk.slot);
            if disk.size_gib == 0 {
                return Err(Error::invalid_input(format!("disks[{i}].sizeGib"), "is 0"));
            }
        }
        for (i, net) in self.networks.iter().enumerate() {
            if !MODELS.contains(&net.model.as_str()) {
                return Err(Error::invalid_input(
                    format!("networks[{i}].model"),
                    format!("{:?} is not a supported model", net.model),
                )
                .with_hint(format!("use one of {}", MODELS.join(", "))));
            }
            if net.bridge.is_empty()
                || !net
                    .bridge
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::invalid_input(
                    format!("networks[{i}].bridge"),
                    format!("{:?} is not a bridge name", net.bridge),
                )
                .with_hint("give a bridge of the node, e.g. vmbr0"));
            }
            if let Some(vlan) = net.vlan
                && !(1..=4094).contains(&vlan)
            {
                return Err(Error::invalid_input(
                    format!("networks[{i}].vlan"),
                    format!("{vlan} is out of range"),
                )
                .with_hint("VLAN tags are 1 to 4094"));
            }
            if let Some(mac) = &net.mac
                && !valid_mac(mac)
            {
                return Err(Error::invalid_input(format!("networks[{i}].mac"), format!("{mac:?} is not a MAC address"))
                        .with_hint("give six hex bytes with colons, e.g. BC:24:11:00:00:01 (unicast: the first byte even)"));
            }
        }
        if let Some(ci) = &self.cloud_init {
            for (i, key) in ci.ssh_keys.iter().enumerate() {
                let parts: Vec<&str> = key.split_whitespace().collect();
                if parts.len() < 2
                    || !(parts[0].starts_with("ssh-")
                        || parts[0].starts_with("ecdsa-")
                        || parts[0].starts_with("sk-"))
                    || key.contains('\n')
                {
                    return Err(Error::invalid_input(format!("cloudInit.sshKeys[{i}]"), "is not an OpenSSH public key line")
                        .with_hint("give one key per entry, as in authorized_keys: `ssh-ed25519 AAAA... comment`"));
                }
            }
            if ci.ip_configs.len() > self.networks.len().max(1) && !self.networks.is_empty() {
                return Err(Error::invalid_input(
                    "cloudInit.ipConfigs",
                    format!(
                        "{} IP configurations for {} network devices",
                        ci.ip_configs.len(),
                        self.networks.len()
                    ),
                )
                .with_hint("give one entry per network device, in the same order"));
            }
            for (i, ip) in ci.ip_configs.iter().enumerate() {
                check_ip(&format!("cloudInit.ipConfigs[{i}]"), ip)?;
            }
            for (i, server) in ci.nameservers.iter().enumerate() {
                if server.parse::<std::net::IpAddr>().is_err() {
                    return Err(Error::invalid_input(
                        format!("cloudInit.nameservers[{i}]"),
                        format!("{server:?} is not an IP address"),
                    ));
                }
            }
        }
        if let Some(features) = &self.hotplug {
            for (i, feature) in features.iter().enumerate() {
                if !HOTPLUG.contains(&feature.as_str()) {
                    return Err(Error::invalid_input(
                        format!("hotplug[{i}]"),
                        format!("{feature:?} is not a hotplug feature"),
                    )
                    .with_hint(format!("use some of {}", HOTPLUG.join(", "))));
                }
            }
            if features.iter().any(|f| f == "memory") && self.numa != Some(true) {
                return Err(Error::invalid_input(
                    "hotplug",
                    "memory hotplug needs NUMA, and `numa` is not true",
                )
                .with_hint("set `numa = true` with `memory` hotplug"));
            }
        }
        if let Some(cpu_type) = self.cpu.as_ref().and_then(|c| c.cpu_type.as_ref())
            && (cpu_type.is_empty()
                || !cpu_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(Error::invalid_input(
                "cpu.type",
                format!("{cpu_type:?} is not a CPU type"),
            )
            .with_hint("e.g. host, x86-64-v2-AES or kvm64, as `qm set --cpu` takes them"));
        }
        if !self.host_key_path.starts_with('/') {
            return Err(
                Error::invalid_input("hostKeyPath", "is not an absolute path")
                    .with_hint("e.g. /etc/ssh/ssh_host_ed25519_key.pub"),
            );
        }
        for (field, value) in [
            ("timeouts.cloneSeconds", self.timeouts.clone_seconds),
            ("timeouts.taskSeconds", self.timeouts.task_seconds),
            ("timeouts.shutdownSeconds", self.timeouts.shutdown_seconds),
            ("timeouts.migrateSeconds", self.timeouts.migrate_seconds),
        ] {
            if value == 0 {
                return Err(Error::invalid_input(field, "is 0").with_hint("give a time in seconds"));
            }
        }
        Ok(())
    }
}

fn check_vmid(field: &str, id: u32) -> Result<()> {
    if (100..=999_999_999).contains(&id) {
        return Ok(());
    }
    Err(
        Error::invalid_input(field, format!("{id} is not a valid VMID"))
            .with_hint("VMIDs are 100 to 999999999"),
    )
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn check_ip(field: &str, ip: &IpConfig) -> Result<()> {
    let cidr = |text: &str, v6: bool| -> bool {
        let Some((addr, prefix)) = text.split_once('/') else {
            return false;
        };
        let Ok(prefix) = prefix.parse::<u8>() else {
            return false;
        };
        if v6 {
            addr.parse::<std::net::Ipv6Addr>().is_ok() && prefix <= 128
        } else {
            addr.parse::<std::net::Ipv4Addr>().is_ok() && prefix <= 32
        }
    };
    if let Some(v4) = &ip.ipv4
        && v4 != "dhcp"
        && !cidr(v4, false)
    {
        return Err(Error::invalid_input(
            format!("{field}.ipv4"),
            format!("{v4:?} is neither `dhcp` nor an address with prefix"),
        )
        .with_hint("e.g. \"dhcp\" or \"192.0.2.10/24\""));
    }
    if let Some(gw) = &ip.gateway4 {
        if ip.ipv4.as_deref().is_none_or(|v| v == "dhcp") {
            return Err(Error::invalid_input(
                format!("{field}.gateway4"),
                "is set without a static `ipv4`",
            )
            .with_hint("a gateway goes with a static address; DHCP brings its own"));
        }
        if gw.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Error::invalid_input(
                format!("{field}.gateway4"),
                format!("{gw:?} is not an IPv4 address"),
            ));
        }
    }
    if let Some(v6) = &ip.ipv6
        && v6 != "dhcp"
        && v6 != "auto"
        && !cidr(v6, true)
    {
        return Err(Error::invalid_input(
            format!("{field}.ipv6"),
            format!("{v6:?} is neither `dhcp`, `auto` nor an address with prefix"),
        )
        .with_hint("e.g. \"auto\" or \"2001:db8::10/64\""));
    }
    if let Some(gw) = &ip.gateway6 {
        if ip
            .ipv6
            .as_deref()
            .is_none_or(|v| v == "dhcp" || v == "auto")
        {
            return Err(Error::invalid_input(
                format!("{field}.gateway6"),
                "is set without a static `ipv6`",
            ));
        }
        if gw.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Error::invalid_input(
                format!("{field}.gateway6"),
                format!("{gw:?} is not an IPv6 address"),
            ));
        }
    }
    Ok(())
}

/// A VM's configuration as `GET .../config` answers it.
type Config = Map<String, Value>;

/// A config value as text (Proxmox answers numbers for some keys).
fn text(config: &Config, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The declared notes with the marker line.
fn marked_description(description: &str) -> String {
    if description.is_empty() {
        MARKER.to_string()
    } else {
        format!("{}\n{MARKER}", description.trim_end())
    }
}

fn is_ours(config: &Config) -> bool {
    text(config, "description").is_some_and(|d| d.contains(MARKER))
}

/// Normalised tags: lowercase, sorted, without duplicates.
fn normalise_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = tags
        .into_iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn current_tags(config: &Config) -> Vec<String> {
    let text = text(config, "tags").unwrap_or_default();
    normalise_tags(text.split([';', ',', ' ']))
}

/// Disk size in bytes from a drive string (`local-lvm:vm-1-disk-0,size=8G`).
fn disk_size(drive: &str) -> Option<u64> {
    let size = drive.split(',').find_map(|p| p.strip_prefix("size="))?;
    let (digits, unit) = size.split_at(
        size.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(size.len()),
    );
    let value: f64 = digits.parse().ok()?;
    let factor: f64 = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * factor) as u64)
}

const GIB: u64 = 1024 * 1024 * 1024;

/// A `netN` value parsed: model, MAC and the other options.
#[derive(Debug, Default, PartialEq)]
struct Net {
    model: String,
    mac: Option<String>,
    options: BTreeMap<String, String>,
}

fn parse_net(value: &str) -> Net {
    let mut net = Net::default();
    for (i, part) in value.split(',').enumerate() {
        let (key, val) = part.split_once('=').unwrap_or((part, ""));
        if i == 0 && MODELS.contains(&key) {
            net.model = key.to_string();
            if !val.is_empty() {
                net.mac = Some(val.to_uppercase());
            }
        } else if key == "macaddr" {
            net.mac = Some(val.to_uppercase());
        } else {
            net.options.insert(key.to_string(), val.to_string());
        }
    }
    net
}

fn net_value(net: &Network, mac: Option<&str>) -> String {
    let mut value = match mac {
        Some(mac) => format!("{}={},bridge={}", net.model, mac.to_uppercase(), net.bridge),
        None => format!("{},bridge={}", net.model, net.bridge),
    };
    if net.firewall {
        value.push_str(",firewall=1");
    }
    if let Some(tag) = net.vlan {
        value.push_str(&format!(",tag={tag}"));
    }
    value
}

fn ip_value(ip: &IpConfig) -> String {
    let mut parts = Vec::new();
    if let Some(v4) = &ip.ipv4 {
        parts.push(format!("ip={v4}"));
    }
    if let Some(gw) = &ip.gateway4 {
        parts.push(format!("gw={gw}"));
    }
    if let Some(v6) = &ip.ipv6 {
        parts.push(format!("ip6={v6}"));
    }
    if let Some(gw) = &ip.gateway6 {
        parts.push(format!("gw6={gw}"));
    }
    parts.join(",")
}

/// What to change so the VM matches the inputs.
#[derive(Debug, Default)]
struct Plan {
    /// Config keys to set.
    set: Vec<(String, String)>,
    /// Config keys to remove.
    delete: Vec<String>,
    /// Disks to grow: slot, new size in GiB.
    grow: Vec<(String, u64)>,
    /// The differences, for read.
    drift: Vec<Drift>,
    /// A difference that cannot be changed (a disk would shrink).
    refused: Option<Error>,
    /// Which config key each drifted property is about: (property, key).
    sources: Vec<(String, String)>,
}

impl Plan {
    fn change(
        &mut self,
        property: &str,
        key: &str,
        current: Option<String>,
        wanted: Option<String>,
        shown: impl Fn(&Option<String>) -> String,
    ) {
        if current == wanted {
            return;
        }
        self.sources.push((property.to_string(), key.to_string()));
        self.drift.push(Drift {
            property: property.to_string(),
            message: format!(
                "Proxmox has {}, the inputs say {}",
                shown(&current),
                shown(&wanted)
            ),
        });
        match wanted {
            Some(value) => self.set.push((key.to_string(), value)),
            None => self.delete.push(key.to_string()),
        }
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty() && self.grow.is_empty()
    }
}

fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "nothing".into(),
    }
}

/// Compares the inputs with the VM's config.
fn plan(inputs: &VmInputs, config: &Config) -> Result<Plan> {
    let mut plan = Plan::default();
    plan.change(
        "name",
        "name",
        text(config, "name"),
        Some(inputs.name.clone()),
        shown,
    );
    let description = text(config, "description").unwrap_or_default();
    let declared = marked_description(&inputs.description);
    if description.trim_end() != declared {
        plan.drift.push(Drift {
            property: "description".into(),
            message: "the notes differ from the inputs".into(),
        });
        plan.set.push(("description".into(), declared));
    }
    let tags = normalise_tags(inputs.tags.iter().map(String::as_str));
    let have = current_tags(config);
    if tags != have {
        plan.drift.push(Drift {
            property: "tags".into(),
            message: format!(
                "Proxmox has [{}], the inputs say [{}]",
                have.join(", "),
                tags.join(", ")
            ),
        });
        if tags.is_empty() {
            plan.delete.push("tags".into());
        } else {
            plan.set.push(("tags".into(), tags.join(";")));
        }
    }
    let or =
        |key: &str, default: &str| Some(text(config, key).unwrap_or_else(|| default.to_string()));
    plan.change(
        "cores",
        "cores",
        or("cores", "1"),
        Some(inputs.cores.to_string()),
        shown,
    );
    plan.change(
        "sockets",
        "sockets",
        or("sockets", "1"),
        Some(inputs.sockets.to_string()),
        shown,
    );
    plan.change(
        "memory",
        "memory",
        or("memory", "512"),
        Some(inputs.memory.to_string()),
        shown,
    );
    if let Some(features) = &inputs.hotplug {
        // `1` and unset both mean the default.
        let set = |text: &str| -> BTreeSet<String> {
            match text {
                "1" => ["network", "disk", "usb"].map(String::from).into(),
                "0" | "" => BTreeSet::new(),
                list => list.split(',').map(str::to_string).collect(),
            }
        };
        let have = set(&text(config, "hotplug").unwrap_or_else(|| "1".into()));
        let want: BTreeSet<String> = features.iter().cloned().collect();
        if have != want {
            let value = if want.is_empty() {
                "0".to_string()
            } else {
                want.iter().cloned().collect::<Vec<_>>().join(",")
            };
            plan.change(
                "hotplug",
                "hotplug",
                text(config, "hotplug"),
                Some(value),
                shown,
            );
        }
    }
    if let Some(numa) = inputs.numa {
        plan.change(
            "numa",
            "numa",
            or("numa", "0"),
            Some(if numa { "1" } else { "0" }.to_string()),
            shown,
        );
    }
    if let Some(wanted) = inputs.cpu.as_ref().and_then(|c| c.cpu_type.as_ref()) {
        // `cpu` is `[cputype=]TYPE[,flags=...]`; kvm64 when unset.
        let have = text(config, "cpu");
        let have_type = have
            .as_deref()
            .map(|c| {
                let first = c.split(',').next().unwrap_or("");
                first.strip_prefix("cputype=").unwrap_or(first).to_string()
            })
            .unwrap_or_else(|| "kvm64".into());
        if have_type != *wanted {
            plan.change("cpu.type", "cpu", have.clone(), Some(wanted.clone()), shown);
        }
    }
    if let Some(balloon) = inputs.balloon {
        plan.change(
            "balloon",
            "balloon",
            text(config, "balloon"),
            Some(balloon.to_string()),
            shown,
        );
    }
    let flag = |b: bool| Some(if b { "1" } else { "0" }.to_string());
    plan.change(
        "onBoot",
        "onboot",
        or("onboot", "0"),
        flag(inputs.on_boot),
        shown,
    );
    plan.change(
        "protection",
        "protection",
        or("protection", "0"),
        flag(inputs.protection),
        shown,
    );
    let agent_on = text(config, "agent")
        .is_some_and(|a| a == "1" || a.starts_with("1,") || a.contains("enabled=1"));
    if !agent_on {
        plan.set.push(("agent".into(), "1".into()));
    }
    for (i, disk) in inputs.disks.iter().enumerate() {
        let field = format!("disks[{i}].sizeGib");
        match text(config, &disk.slot) {
            Some(drive) => {
                let size = disk_size(&drive).unwrap_or(0);
                let wanted = disk.size_gib * GIB;
                if wanted < size {
                    let error = Error::invalid_input(
                        field,
                        format!(
                            "`{}` is {} GiB in Proxmox; {} GiB would shrink it, and Proxmox cannot shrink disks",
                            disk.slot,
                            size.div_ceil(GIB),
                            disk.size_gib
                        ),
                    )
                    .with_hint("disks only grow: give the current size or more (shrinking needs a new VM)");
                    plan.drift.push(Drift {
                        property: format!("disks[{i}].sizeGib"),
                        message: error.to_string(),
                    });
                    plan.refused.get_or_insert(error);
                    continue;
                }
                if wanted > size {
                    plan.drift.push(Drift {
                        property: format!("disks[{i}]"),
                        message: format!(
                            "`{}` is {} bytes, the inputs say {} GiB",
                            disk.slot, size, disk.size_gib
                        ),
                    });
                    plan.grow.push((disk.slot.clone(), disk.size_gib));
                }
            }
            None => {
                let Some(storage) = disk.storage.as_ref().or(inputs.storage.as_ref()) else {
                    return Err(Error::invalid_input(
                        format!("disks[{i}].storage"),
                        format!(
                            "the VM has no disk `{}` and no storage is given to make it on",
                            disk.slot
                        ),
                    )
                    .with_hint(
                        "set `storage` (or this disk's `storage`), or use a slot the template has",
                    ));
                };
                plan.sources
                    .push((format!("disks[{i}]"), disk.slot.clone()));
                plan.drift.push(Drift {
                    property: format!("disks[{i}]"),
                    message: format!("`{}` does not exist", disk.slot),
                });
                plan.set
                    .push((disk.slot.clone(), format!("{storage}:{}", disk.size_gib)));
            }
        }
    }
    if !inputs.networks.is_empty() {
        for (i, net) in inputs.networks.iter().enumerate() {
            let key = format!("net{i}");
            let current = text(config, &key).map(|v| parse_net(&v));
            let mac = net
                .mac
                .clone()
                .or_else(|| current.as_ref().and_then(|c| c.mac.clone()));
            let wanted = parse_net(&net_value(net, mac.as_deref()));
            let same = current.as_ref().is_some_and(|c| {
                c.model == wanted.model
                    && (net.mac.is_none() || c.mac == wanted.mac)
                    && c.options.get("bridge") == wanted.options.get("bridge")
                    && c.options.get("tag") == wanted.options.get("tag")
                    && c.options.get("firewall").map(String::as_str).unwrap_or("0")
                        == wanted
                            .options
                            .get("firewall")
                            .map(String::as_str)
                            .unwrap_or("0")
            });
            if !same {
                plan.sources.push((format!("networks[{i}]"), key.clone()));
                plan.drift.push(Drift {
                    property: format!("networks[{i}]"),
                    message: format!(
                        "Proxmox has {}, the inputs say {:?}",
                        shown(&text(config, &key)),
                        net_value(net, mac.as_deref())
                    ),
                });
                plan.set.push((key, net_value(net, mac.as_deref())));
            }
        }
        for i in inputs.networks.len()..32 {
            let key = format!("net{i}");
            if config.contains_key(&key) {
                plan.drift.push(Drift {
                    property: "networks".into(),
                    message: format!("Proxmox has `{key}`, which the inputs do not list"),
                });
                plan.delete.push(key);
            }
        }
    }
    if let Some(ci) = &inputs.cloud_init {
        let has_drive = config
            .values()
            .any(|v| v.as_str().is_some_and(|s| s.contains("cloudinit")));
        if !has_drive {
            let Some(storage) = &inputs.storage else {
                return Err(Error::invalid_input("cloudInit", "the VM has no cloud-init drive and no `storage` is given to make one")
                    .with_hint("add a cloud-init drive to the template (`qm set ID --ide2 STORAGE:cloudinit`) or set `storage`"));
            };
            let slot = ["ide2", "ide0", "ide1", "ide3", "sata5"]
                .into_iter()
                .find(|s| !config.contains_key(*s))
                .unwrap_or("ide2");
            plan.drift.push(Drift {
                property: "cloudInit".into(),
                message: "the VM has no cloud-init drive".into(),
            });
            plan.set.push((slot.into(), format!("{storage}:cloudinit")));
        }
        plan.change(
            "cloudInit.user",
            "ciuser",
            text(config, "ciuser"),
            ci.user.clone(),
            shown,
        );
        let keys = (!ci.ssh_keys.is_empty()).then(|| ci.ssh_keys.join("\n"));
        let have = text(config, "sshkeys").map(|k| uri_unescape(&k).trim_end().to_string());
        if have != keys {
            plan.drift.push(Drift {
                property: "cloudInit.sshKeys".into(),
                message: "the SSH keys differ from the inputs".into(),
            });
            match keys {
                Some(keys) => plan.set.push(("sshkeys".into(), uri_escape(&keys))),
                None => plan.delete.push("sshkeys".into()),
            }
        }
        for i in 0..32 {
            let key = format!("ipconfig{i}");
            let wanted = ci.ip_configs.get(i).map(ip_value).filter(|v| !v.is_empty());
            let current = text(config, &key);
            if current.is_some() || wanted.is_some() {
                plan.change(
                    &format!("cloudInit.ipConfigs[{i}]"),
                    &key,
                    current,
                    wanted,
                    shown,
                );
            }
        }
        let servers = (!ci.nameservers.is_empty()).then(|| ci.nameservers.join(" "));
        plan.change(
            "cloudInit.nameservers",
            "nameserver",
            text(config, "nameserver"),
            servers,
            shown,
        );
        plan.change(
            "cloudInit.searchDomain",
            "searchdomain",
            text(config, "searchdomain"),
            ci.search_domain.clone(),
            shown,
        );
    }
    Ok(plan)
}

fn macs(config: &Config) -> Vec<String> {
    (0..32)
        .filter_map(|i| text(config, &format!("net{i}")))
        .filter_map(|v| parse_net(&v).mac)
        .collect()
}

/// What the guest agent reported.
#[derive(Debug, Default)]
struct Guest {
    ipv4: Vec<String>,
    ipv6: Vec<String>,
    host_key: Option<String>,
}

/// The `vm` resource type.
#[derive(Debug, Default)]
pub struct Vm;

/// A VM's configuration: what runs, and what it becomes when the pending
/// changes are applied.
#[derive(Debug, Clone, Default)]
struct VmConfig {
    /// What runs (`GET .../config?current=1`).
    current: Config,
    /// With the pending changes applied (`GET .../config`), and the digest.
    effective: Config,
}

impl VmConfig {
    /// The config keys with a pending change (a new value or a removal).
    fn pending_keys(&self) -> BTreeSet<String> {
        let keys: BTreeSet<&String> = self.current.keys().chain(self.effective.keys()).collect();
        keys.into_iter()
            .filter(|k| *k != "digest" && self.current.get(*k) != self.effective.get(*k))
            .cloned()
            .collect()
    }
}

/// Where a VM is.
#[derive(Debug, Clone)]
struct Located {
    node: String,
    vmid: u32,
    config: VmConfig,
}

/// The template to clone: its VMID and node.
#[derive(Debug, Clone)]
struct Source {
    vmid: u32,
    node: String,
}

impl Resource for Vm {
    type Inputs = VmInputs;
    type Outputs = VmOutputs;

    const TYPE: &'static str = "vm";
    const DESCRIPTION: &'static str = "A QEMU virtual machine on Proxmox VE, cloned from a template: CPU, memory, \
        disks (grow only), network devices, cloud-init (user, SSH keys, IP configuration, DNS), tags, \
        start on boot and protection, changed in place (changes that need a restart restart it, or stay \
        pending, as `onPendingChanges` says); its MAC and IP addresses and SSH host key \
        (read through the QEMU guest agent) as outputs. A create retried after a crash or a lost \
        answer adopts the VM the earlier attempt cloned.";
    const REQUIRE_STATE: bool = true;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(&self, inputs: VmInputs, _: CreateContext) -> Result<VmOutputs> {
        inputs.validate()?;
        let api = Api::connect(&inputs.proxmox)?;
        let resources = vm_resources(&api).await?;
        let source = find_template(&resources, &inputs)?;
        let found = match find_ours(&api, &resources, &inputs.name, inputs.vmid).await? {
            Some(found) => Some(found),
            None => find_unnamed_clone(&api, &resources, &inputs, &source).await?,
        };
        let adopted = match found {
            Some(found) => {
                tracing::info!(vmid = found.vmid, node = %found.node, name = %inputs.name, "adopting the VM a previous run cloned");
                wait_unlocked(&api, &found, &inputs).await?
            }
            None => None,
        };
        let (located, fresh) = match adopted {
            Some(located) => (located, None),
            None => clone(&api, &source, &inputs).await?,
        };
        let vmid = located.vmid;
        let result = converge(&api, located, &inputs, fresh).await;
        tracing::debug!(calls = api.calls(), "API calls made");
        result.map_err(|e| {
            e.context(format!(
                "VM {vmid} (`{}`) was cloned and is left in place, marked as this provider's; running the create again adopts it",
                inputs.name
            ))
        })
    }

    async fn update(
        &self,
        inputs: VmInputs,
        previous: Recorded<VmInputs, VmOutputs>,
    ) -> Result<VmOutputs> {
        inputs.validate()?;
        if inputs.template != previous.inputs.template {
            return Err(Error::invalid_input("template", "changing the template needs a new VM, which this update does not make")
                .with_hint("to rebuild the VM from the new template, delete the resource and create it again (its disks are lost), or give the new VM another name"));
        }
        if let Some(id) = inputs.vmid
            && id != previous.outputs.vmid
        {
            return Err(Error::invalid_input(
                "vmid",
                format!(
                    "the VM has VMID {}; changing it to {id} needs a new VM",
                    previous.outputs.vmid
                ),
            )
            .with_hint("keep the VMID, or delete the resource and create it again"));
        }
        for (i, disk) in inputs.disks.iter().enumerate() {
            if let Some(old) = previous.inputs.disks.iter().find(|d| d.slot == disk.slot)
                && disk.size_gib < old.size_gib
            {
                return Err(Error::invalid_input(
                    format!("disks[{i}].sizeGib"),
                    format!(
                        "`{}` was {} GiB; {} GiB would shrink it, and Proxmox cannot shrink disks",
                        disk.slot, old.size_gib, disk.size_gib
                    ),
                )
                .with_hint(
                    "disks only grow: give the current size or more (shrinking needs a new VM)",
                ));
            }
        }
        let api = Api::connect(&inputs.proxmox)?;
        let located = locate(&api, &previous.outputs.node, previous.outputs.vmid).await?.ok_or_else(|| {
            Error::not_found(format!("VM {} (`{}`) no longer exists in Proxmox", previous.outputs.vmid, previous.outputs.name))
                .with_hint("it was removed outside this deployment; remove the resource from the state to create it anew")
        })?;
        check_ours(&located)?;
        let result = converge(&api, located, &inputs, None).await;
        tracing::debug!(calls = api.calls(), "API calls made");
        result
    }

    async fn delete(&self, current: Recorded<VmInputs, VmOutputs>) -> Result<()> {
        let inputs = &current.inputs;
        let api = Api::connect(&inputs.proxmox)?;
        let (node, vmid) = (&current.outputs.node, current.outputs.vmid);
        let Some(located) = locate(&api, node, vmid).await? else {
            tracing::info!(vmid, "the VM is already gone");
            return Ok(());
        };
        check_ours(&located)?;
        if text(&located.config.current, "protection").as_deref() == Some("1") {
            return Err(Error::conflict(format!(
                "VM {vmid} (`{}`) has protection on, so Proxmox refuses to remove it",
                current.outputs.name
            ))
            .with_hint("set `protection = false`, apply, then delete"));
        }
        let node = located.node.clone();
        if is_running(&api, &node, vmid).await? {
            stop(&api, &node, vmid, inputs).await?;
        }
        destroy(&api, &node, vmid, inputs).await?;
        tracing::info!(vmid, node = %node, "destroyed the VM and its disks");
        Ok(())
    }

    async fn read(&self, current: Recorded<VmInputs, VmOutputs>) -> Result<ReadOutcome<VmOutputs>> {
        let inputs = &current.inputs;
        let api = Api::connect(&inputs.proxmox)?;
        let Some(located) = locate(&api, &current.outputs.node, current.outputs.vmid).await? else {
            return Ok(ReadOutcome::Gone);
        };
        // What runs is compared with the inputs; a change Proxmox holds
        // pending is drift until the VM restarts.
        let pending = pending_properties(inputs, &located.config);
        let mut drift = plan(inputs, &located.config.current)
            .map(|p| p.drift)
            .unwrap_or_else(|e| {
                vec![Drift {
                    property: e.field().unwrap_or("disks").to_string(),
                    message: e.to_string(),
                }]
            });
        for d in &mut drift {
            if pending.contains(&d.property) {
                d.message.push_str(
                    "; the change is pending in Proxmox and takes effect when the VM restarts",
                );
            }
        }
        if located.node != inputs.node {
            drift.push(Drift {
                property: "node".into(),
                message: format!(
                    "the VM is on `{}`, the inputs say `{}`",
                    located.node, inputs.node
                ),
            });
        }
        if !is_ours(&located.config.current) {
            drift.push(Drift {
                property: "description".into(),
                message: format!(
                    "the notes lack the line `{MARKER}`, so delete will refuse this VM"
                ),
            });
        }
        let running = is_running(&api, &located.node, located.vmid).await?;
        if running != inputs.started {
            drift.push(Drift {
                property: "started".into(),
                message: format!("the VM is {}", if running { "running" } else { "stopped" }),
            });
        }
        let guest = if running {
            guest_info(&api, &located, inputs, None)
                .await
                .unwrap_or_default()
        } else {
            Guest::default()
        };
        let outputs = VmOutputs {
            vmid: located.vmid,
            node: located.node.clone(),
            name: text(&located.config.current, "name").unwrap_or_default(),
            mac_addresses: macs(&located.config.current),
            ipv4_addresses: if running { guest.ipv4 } else { Vec::new() },
            ipv6_addresses: if running { guest.ipv6 } else { Vec::new() },
            ssh_host_key: guest.host_key.or(current.outputs.ssh_host_key.clone()),
            pending_changes: pending,
        };
        Ok(ReadOutcome::Exists { outputs, drift })
    }
}

/// The inputs whose change Proxmox holds pending: properties where what
/// runs differs from the inputs and whose config key has a pending change.
/// (Pending changes to keys the inputs do not manage are not ours.)
fn pending_properties(inputs: &VmInputs, config: &VmConfig) -> Vec<String> {
    let keys = config.pending_keys();
    if keys.is_empty() {
        return Vec::new();
    }
    let Ok(plan) = plan(inputs, &config.current) else {
        return Vec::new();
    };
    let mut out: Vec<String> = plan
        .sources
        .into_iter()
        .filter(|(_, key)| keys.contains(key))
        .map(|(property, _)| property)
        .collect();
    out.dedup();
    out
}

fn check_ours(located: &Located) -> Result<()> {
    if is_ours(&located.config.current) {
        return Ok(());
    }
    Err(Error::conflict(format!(
        "VM {} on `{}` is not marked as made by this provider (its notes lack `{MARKER}`), so it is left alone",
        located.vmid, located.node
    ))
    .with_hint("the VMID may have been reused by another VM; check in Proxmox, and remove the resource from the state if its VM is gone"))
}

/// `GET /cluster/resources?type=vm`: every VM and template, with its node.
async fn vm_resources(api: &Api) -> Result<Vec<Value>> {
    let list = api
        .get("cluster/resources", &[("type", "vm".into())])
        .await?;
    Ok(list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["type"] == "qemu")
        .collect())
}

fn vmid_of(resource: &Value) -> Option<u32> {
    resource["vmid"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
}

/// Finds a VM this provider made for `name` (a crashed create's clone).
async fn find_ours(
    api: &Api,
    resources: &[Value],
    name: &str,
    fixed: Option<u32>,
) -> Result<Option<Located>> {
    for resource in resources {
        let Some(vmid) = vmid_of(resource) else {
            continue;
        };
        let named = resource["name"].as_str() == Some(name);
        if !(named || fixed == Some(vmid)) || resource["template"].as_u64() == Some(1) {
            continue;
        }
        let node = resource["node"].as_str().unwrap_or_default().to_string();
        let config = match config_of(api, &node, vmid).await {
            Ok(config) => config,
            Err(e) if e.is_missing_vm() => continue,
            Err(e) => return Err(e.error),
        };
        let located = Located { node, vmid, config };
        let current = &located.config.current;
        if is_ours(current) && text(current, "name").as_deref() == Some(name) {
            return Ok(Some(located));
        }
        if fixed == Some(vmid) {
            // A clone still writing its temporary config has no name yet;
            // find_unnamed_clone looks at it.
            if text(current, "lock").as_deref() == Some("clone") && text(current, "name").is_none()
            {
                continue;
            }
            return Err(Error::conflict(format!(
                "VMID {vmid} is taken by another VM (`{}`) on `{}`",
                text(current, "name").unwrap_or_default(),
                located.node
            ))
            .with_field("vmid")
            .with_hint("choose a free VMID, or leave `vmid` unset to allocate one"));
        }
        tracing::warn!(
            vmid,
            "a VM with the same name exists that this provider did not make; leaving it alone"
        );
    }
    Ok(None)
}

/// A clone that a crashed run of this create may have started and that
/// has not written its config yet: qemu-server's clone_vm writes only
/// `lock: clone` until the first disk is copied, so the VM has no name
/// (`/cluster/resources` shows `VM N`). Looked at only while the
/// template's node runs a clone of the template started by this token;
/// adopted once the clone has written this VM's name and the marker.
async fn find_unnamed_clone(
    api: &Api,
    resources: &[Value],
    inputs: &VmInputs,
    source: &Source,
) -> Result<Option<Located>> {
    let unnamed: Vec<u32> = resources
        .iter()
        .filter(|r| r["lock"] == "clone" && r["template"].as_u64() != Some(1))
        .filter_map(|r| {
            let vmid = vmid_of(r)?;
            let name = r["name"].as_str().unwrap_or_default();
            (name.is_empty() || name == format!("VM {vmid}")).then_some(vmid)
        })
        .filter(|vmid| inputs.vmid.is_none_or(|fixed| fixed == *vmid))
        .collect();
    if unnamed.is_empty() || !our_clone_runs(api, source, 0).await? {
        return Ok(None);
    }
    for vmid in unnamed {
        tracing::info!(
            vmid,
            "an unnamed clone of the template is being copied; waiting to see whether it is this VM"
        );
        if let Look::Ours(located) = look_for_clone(api, inputs, source, vmid, 0).await? {
            return Ok(Some(located));
        }
    }
    Ok(None)
}

/// Whether the template's node runs a clone of the template started by
/// this API token at or after `since` (seconds since the epoch), from its
/// task list (PVE/API2/Tasks.pm, node_tasks).
async fn our_clone_runs(api: &Api, source: &Source, since: u64) -> Result<bool> {
    let tasks = api
        .get(
            &format!("nodes/{}/tasks", source.node),
            &[
                ("source", "active".to_string()),
                ("typefilter", "qmclone".to_string()),
                ("vmid", source.vmid.to_string()),
            ],
        )
        .await?;
    let token = api.token_id();
    Ok(tasks.as_array().into_iter().flatten().any(|t| {
        let user = t["user"].as_str().unwrap_or_default();
        let ours = user == token
            || t["tokenid"]
                .as_str()
                .is_some_and(|id| format!("{user}!{id}") == token);
        ours && t["starttime"].as_u64().unwrap_or(u64::MAX) >= since
    }))
}

/// What is at a VMID a clone was asked for.
enum Look {
    /// Our clone, finished.
    Ours(Located),
    /// Another VM.
    NotOurs,
    /// Nothing (the clone never started, or failed and was removed).
    Nothing,
}

/// After a lost answer to a clone (or a crash), looks at the VMID that was
/// asked for until it knows what happened: the clone's config (on the
/// template's node until the clone ends, then on the target node), its
/// `lock: clone` while it copies, and the node's running clone tasks while
/// no config is there yet. Bounded by `timeouts.cloneSeconds`.
async fn look_for_clone(
    api: &Api,
    inputs: &VmInputs,
    source: &Source,
    vmid: u32,
    since: u64,
) -> Result<Look> {
    let deadline = Instant::now() + inputs.timeout(inputs.timeouts.clone_seconds);
    let mut pause = task::FIRST_POLL;
    let mut nodes = vec![source.node.clone()];
    if inputs.node != source.node {
        nodes.push(inputs.node.clone());
    }
    loop {
        let mut seen = None;
        for node in &nodes {
            match config_of(api, node, vmid).await {
                Ok(config) => {
                    seen = Some((node.clone(), config));
                    break;
                }
                Err(e) if e.is_missing_vm() => {}
                Err(e) => return Err(e.error),
            }
        }
        match seen {
            Some((node, config)) if text(&config.current, "name").is_some() => {
                let located = Located { node, vmid, config };
                let current = &located.config.current;
                if !(is_ours(current) && text(current, "name").as_deref() == Some(&inputs.name)) {
                    return Ok(Look::NotOurs);
                }
                tracing::info!(vmid, "the clone is ours; waiting for it to finish");
                return Ok(match wait_unlocked(api, &located, inputs).await? {
                    Some(located) => Look::Ours(located),
                    None => Look::Nothing,
                });
            }
            Some(_) => {
                tracing::info!(vmid, "the clone has not written its config yet");
            }
            None => {
                if !our_clone_runs(api, source, since).await? {
                    return Ok(Look::Nothing);
                }
                tracing::info!(
                    vmid,
                    "a clone of the template by this token runs; looking again"
                );
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::unavailable(format!(
                "after a lost answer, VM {vmid} was still being cloned after {}s",
                inputs.timeouts.clone_seconds
            ))
            .with_field("timeouts.cloneSeconds")
            .with_hint("the clone goes on in Proxmox (see the node's task log); run again later to adopt it, or raise `timeouts.cloneSeconds`"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(task::MAX_POLL);
    }
}

/// The VM's configuration, current and pending, from one `GET
/// .../pending` (qemu-server's vm_pending: per key `value`, `pending` and
/// `delete`; the `digest` entry is the file's digest).
async fn config_of(api: &Api, node: &str, vmid: u32) -> Result<VmConfig, CallError> {
    let value = api
        .get(&format!("nodes/{node}/qemu/{vmid}/pending"), &[])
        .await?;
    let mut config = VmConfig::default();
    let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    for entry in value.as_array().into_iter().flatten() {
        let Some(key) = entry["key"].as_str() else {
            continue;
        };
        let current = present(entry.get("value"));
        let deleted = match &entry["delete"] {
            Value::Number(n) => n.as_u64().unwrap_or(0) > 0,
            Value::String(s) => s != "0",
            _ => false,
        };
        let effective = match present(entry.get("pending")) {
            Some(pending) => Some(pending),
            None if deleted => None,
            None => current.clone(),
        };
        if let Some(v) = current {
            config.current.insert(key.into(), v);
        }
        if let Some(v) = effective {
            config.effective.insert(key.into(), v);
        }
    }
    Ok(config)
}

/// The VM with `vmid`, on `node` or (when moved) wherever the cluster says.
async fn locate(api: &Api, node: &str, vmid: u32) -> Result<Option<Located>> {
    match config_of(api, node, vmid).await {
        Ok(config) => {
            return Ok(Some(Located {
                node: node.to_string(),
                vmid,
                config,
            }));
        }
        Err(e) if e.is_missing_vm() => {}
        Err(e) => return Err(e.error),
    }
    let resources = vm_resources(api).await?;
    let Some(elsewhere) = resources
        .iter()
        .find(|r| vmid_of(r) == Some(vmid))
        .and_then(|r| r["node"].as_str())
    else {
        return Ok(None);
    };
    match config_of(api, elsewhere, vmid).await {
        Ok(config) => Ok(Some(Located {
            node: elsewhere.to_string(),
            vmid,
            config,
        })),
        Err(e) if e.is_missing_vm() => Ok(None),
        Err(e) => Err(e.error),
    }
}

/// Waits while a VM is locked (by a clone still running), and returns its
/// config; `None` when the VM went away meanwhile (the clone failed, and
/// clone_vm removed its config).
async fn wait_unlocked(api: &Api, found: &Located, inputs: &VmInputs) -> Result<Option<Located>> {
    let deadline = Instant::now() + inputs.timeout(inputs.timeouts.clone_seconds);
    let mut located = found.clone();
    let mut pause = task::FIRST_POLL;
    while let Some(lock) = text(&located.config.current, "lock") {
        if Instant::now() >= deadline {
            return Err(Error::unavailable(format!("VM {} is still locked ({lock}) after {}s", located.vmid, inputs.timeouts.clone_seconds))
                .with_field("timeouts.cloneSeconds")
                .with_hint("the clone of the earlier run is still going on; run again later, or raise `timeouts.cloneSeconds`"));
        }
        tracing::info!(
            vmid = located.vmid,
            lock,
            "waiting for the VM's lock to clear"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(task::MAX_POLL);
        // The clone's config moves to the target node when it ends.
        match locate(api, &located.node, located.vmid).await? {
            Some(now) => located = now,
            None => return Ok(None),
        }
    }
    Ok(Some(located))
}

/// The template to clone, from the cluster's resources.
fn find_template(resources: &[Value], inputs: &VmInputs) -> Result<Source> {
    let template = resources
        .iter()
        .filter(|r| match (&inputs.template.vmid, &inputs.template.name) {
            (Some(id), _) => vmid_of(r) == Some(*id),
            (None, Some(name)) => {
                r["template"].as_u64() == Some(1) && r["name"].as_str() == Some(name)
            }
            _ => false,
        })
        .collect::<Vec<_>>();
    let template = match template.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::not_found(format!("no template {} in the cluster", match (&inputs.template.vmid, &inputs.template.name) {
                (Some(id), _) => format!("with VMID {id}"),
                (_, name) => format!("named `{}`", name.clone().unwrap_or_default()),
            }))
            .with_field("template")
            .with_hint("check the template's VMID or name in Proxmox (and that the token may see it: VM.Audit)"));
        }
        many => {
            let ids: Vec<String> = many
                .iter()
                .filter_map(|r| vmid_of(r))
                .map(|v| v.to_string())
                .collect();
            return Err(Error::conflict(format!(
                "several templates are named `{}` (VMIDs {})",
                inputs.template.name.clone().unwrap_or_default(),
                ids.join(", ")
            ))
            .with_field("template.name")
            .with_hint("give the template by `vmid` instead"));
        }
    };
    Ok(Source {
        vmid: vmid_of(template).unwrap_or_default(),
        node: template["node"]
            .as_str()
            .unwrap_or(&inputs.node)
            .to_string(),
    })
}

/// Refuses, before cloning, disks the inputs want smaller than the
/// template's (the clone could never converge).
async fn check_template_disks(api: &Api, source: &Source, inputs: &VmInputs) -> Result<()> {
    if inputs.disks.is_empty() {
        return Ok(());
    }
    let config = config_of(api, &source.node, source.vmid).await?;
    for (i, disk) in inputs.disks.iter().enumerate() {
        let Some(size) = text(&config.current, &disk.slot).and_then(|d| disk_size(&d)) else {
            continue;
        };
        if disk.size_gib * GIB < size {
            return Err(Error::invalid_input(
                format!("disks[{i}].sizeGib"),
                format!(
                    "the template's `{}` is {} GiB; a clone cannot have it at {} GiB, since Proxmox cannot shrink disks",
                    disk.slot,
                    size.div_ceil(GIB),
                    disk.size_gib
                ),
            )
            .with_hint("give the template's size or more"));
        }
    }
    Ok(())
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Clones the template; the second value says whether this run made the
/// VM (`None` when it found one an earlier request made).
async fn clone(api: &Api, source: &Source, inputs: &VmInputs) -> Result<(Located, Option<Fresh>)> {
    check_template_disks(api, source, inputs).await?;
    const CLONE_ATTEMPTS: u32 = 10;
    let mut target = (source.node != inputs.node).then(|| inputs.node.clone());
    for attempt in 1..=CLONE_ATTEMPTS {
        let vmid = match inputs.vmid {
            Some(id) => id,
            None => next_id(api).await?,
        };
        let mut form = vec![
            ("newid".to_string(), vmid.to_string()),
            ("name".to_string(), inputs.name.clone()),
            (
                "description".to_string(),
                marked_description(&inputs.description),
            ),
            (
                "full".to_string(),
                if inputs.full_clone { "1" } else { "0" }.to_string(),
            ),
        ];
        if let Some(target) = &target {
            form.push(("target".into(), target.clone()));
        }
        if let Some(storage) = inputs.storage.as_ref().filter(|_| inputs.full_clone) {
            form.push(("storage".into(), storage.clone()));
        }
        if let Some(pool) = &inputs.pool {
            form.push(("pool".into(), pool.clone()));
        }
        let path = format!("nodes/{}/qemu/{}/clone", source.node, source.vmid);
        let what = format!("cloning template {} to VM {vmid}", source.vmid);
        // Task start times are whole seconds; allow for the node's clock.
        let sent_at = now_seconds().saturating_sub(60);
        match api.call(Method::POST, &path, &[], &form, Retry::Once).await {
            Ok(upid) => {
                tracing::info!(vmid, template = source.vmid, "clone started");
                fedi_protocol::fault::point(FAULT_AFTER_CLONE_STARTED);
                match task::wait(
                    api,
                    &upid,
                    &what,
                    inputs.timeout(inputs.timeouts.clone_seconds),
                    "timeouts.cloneSeconds",
                )
                .await
                {
                    Ok(()) => {
                        let node = target.clone().unwrap_or_else(|| source.node.clone());
                        let config = config_of(api, &node, vmid).await?;
                        return Ok((Located { node, vmid, config }, Some(Fresh::Clone)));
                    }
                    Err(failed)
                        if failed.outcome == Outcome::LockTimeout && attempt < CLONE_ATTEMPTS =>
                    {
                        tracing::warn!(vmid, exit = %failed.exitstatus, "the clone failed on a lock timeout; trying again");
                        task::pause(attempt).await;
                    }
                    Err(failed)
                        if failed.outcome == Outcome::VmidClash
                            && inputs.vmid.is_none()
                            && attempt < CLONE_ATTEMPTS =>
                    {
                        tracing::info!(vmid, exit = %failed.exitstatus, "a concurrent clone took the VMID; allocating another");
                        task::pause(attempt).await;
                    }
                    Err(failed) if failed.outcome == Outcome::VmidClash => {
                        return Err(failed.error.with_field("vmid").with_hint(
                            "choose a free VMID, or leave `vmid` unset to allocate one",
                        ));
                    }
                    Err(failed) => return Err(failed.error),
                }
            }
            // No answer, or 596: the clone may be under way. Look at the
            // VMID asked for instead of cloning again.
            Err(e) if e.is_lost() => {
                tracing::warn!(vmid, reason = %e.reason, "the answer to the clone request was lost; looking at the VMID");
                match look_for_clone(api, inputs, source, vmid, sent_at).await? {
                    Look::Ours(located) => return Ok((located, None)),
                    Look::NotOurs if inputs.vmid.is_some() => {
                        return Err(
                            Error::conflict(format!("VMID {vmid} is taken by another VM"))
                                .with_field("vmid")
                                .with_hint(
                                    "choose a free VMID, or leave `vmid` unset to allocate one",
                                ),
                        );
                    }
                    Look::NotOurs | Look::Nothing if attempt < CLONE_ATTEMPTS => {
                        tracing::info!(vmid, "no clone of ours is there; cloning again");
                        task::pause(attempt).await;
                    }
                    Look::NotOurs | Look::Nothing => return Err(e.error.context(what)),
                }
            }
            // clone_vm refuses another node for a template on local
            // storage ("can't clone VM to node '...' (VM uses local
            // storage)", "can't clone to non-shared storage '...'"): clone
            // on the template's node; converge then migrates the VM.
            Err(e)
                if target.is_some()
                    && (e.reason.contains("uses local storage")
                        || e.reason.contains("non-shared storage")) =>
            {
                tracing::info!(vmid, reason = %e.reason, "cloning on the template's node instead; the VM is migrated afterwards");
                target = None;
            }
            Err(e) if e.is_vmid_taken() && inputs.vmid.is_none() && attempt < CLONE_ATTEMPTS => {
                tracing::info!(vmid, reason = %e.reason, "the VMID was taken meanwhile; allocating another");
                task::pause(attempt).await;
            }
            Err(e) if e.is_vmid_taken() && inputs.vmid.is_some() => {
                return Err(e
                    .error
                    .with_field("vmid")
                    .with_hint("choose a free VMID, or leave `vmid` unset to allocate one"));
            }
            Err(e) => return Err(e.error.context(what)),
        }
    }
    Err(Error::unavailable(format!(
        "could not clone the template after {CLONE_ATTEMPTS} attempts"
    ))
    .with_hint("other clones keep taking the VMIDs or locks; run again"))
}

/// `/cluster/nextid`, which answers a string although documented as an
/// integer.
async fn next_id(api: &Api) -> Result<u32> {
    let value = api.get("cluster/nextid", &[]).await?;
    let parsed = match &value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    };
    parsed.ok_or_else(|| Error::internal(format!("/cluster/nextid answered {value}, not a VMID")))
}

async fn is_running(api: &Api, node: &str, vmid: u32) -> Result<bool> {
    let status = api
        .get(&format!("nodes/{node}/qemu/{vmid}/status/current"), &[])
        .await?;
    Ok(status["status"] == "running")
}

/// Whether the VM was just cloned by this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Clone,
}

/// A task-starting request on the VM: `verb` is the path below
/// `nodes/{node}/qemu/{vmid}/`.
fn job<'a>(
    method: Method,
    node: &str,
    vmid: u32,
    verb: &str,
    form: Vec<(String, String)>,
    what: String,
    (timeout, timeout_field): (Duration, &'a str),
) -> Job<'a> {
    Job {
        method,
        path: format!("nodes/{node}/qemu/{vmid}/{verb}"),
        form,
        what,
        timeout,
        timeout_field,
        done_if: &[],
    }
}

/// Brings the VM to the inputs: node, config, disks, power (restarting it
/// when changes are pending and the inputs say so); then waits for the
/// guest agent.
async fn converge(
    api: &Api,
    mut located: Located,
    inputs: &VmInputs,
    previous: Option<Fresh>,
) -> Result<VmOutputs> {
    let vmid = located.vmid;
    let task_timeout = inputs.timeout(inputs.timeouts.task_seconds);
    // A fresh clone is stopped; an adopted or existing VM may run.
    let mut running = match previous {
        Some(Fresh::Clone) => false,
        _ => is_running(api, &located.node, vmid).await?,
    };
    if located.node != inputs.node {
        let mut form = vec![("target".to_string(), inputs.node.clone())];
        if running {
            form.push(("online".into(), "1".into()));
            form.push(("with-local-disks".into(), "1".into()));
        }
        let what = format!("migrating VM {vmid} to `{}`", inputs.node);
        task::run(
            api,
            &job(
                Method::POST,
                &located.node,
                vmid,
                "migrate",
                form,
                what.clone(),
                (
                    inputs.timeout(inputs.timeouts.migrate_seconds),
                    "timeouts.migrateSeconds",
                ),
            ),
        )
        .await
        .map_err(|f| f.error(&what))?;
        tracing::info!(vmid, from = %located.node, to = %inputs.node, "migrated the VM");
        located.node = inputs.node.clone();
        located.config = config_of(api, &located.node, vmid).await?;
    }
    let node = located.node.clone();
    let mut changed = false;
    // A stale digest (someone changed the config meanwhile) is retried
    // with the fresh config. What is sent is planned against the config
    // with pending changes applied, so a change already pending is not
    // sent again.
    for attempt in 1..=3 {
        let mut plan = plan(inputs, &located.config.effective)?;
        if let Some(refused) = plan.refused.take() {
            return Err(refused);
        }
        if plan.is_empty() {
            break;
        }
        if !plan.set.is_empty() || !plan.delete.is_empty() {
            let mut form = plan.set.clone();
            if !plan.delete.is_empty() {
                form.push(("delete".into(), plan.delete.join(",")));
            }
            if let Some(digest) = text(&located.config.effective, "digest") {
                form.push(("digest".into(), digest));
            }
            let keys: Vec<&str> = plan
                .set
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(plan.delete.iter().map(String::as_str))
                .collect();
            tracing::info!(vmid, keys = %keys.join(","), "changing the VM's configuration");
            let what = format!("configuring VM {vmid}");
            match task::run(
                api,
                &job(
                    Method::POST,
                    &node,
                    vmid,
                    "config",
                    form,
                    what.clone(),
                    (task_timeout, "timeouts.taskSeconds"),
                ),
            )
            .await
            {
                Ok(()) => {}
                Err(Failure::Call(e)) if e.is_stale_digest() && attempt < 3 => {
                    tracing::warn!(vmid, reason = %e.reason, "the config changed meanwhile; reading it again");
                    located.config = config_of(api, &node, vmid).await?;
                    continue;
                }
                Err(f) => return Err(f.error(&what)),
            }
        }
        for (slot, gib) in &plan.grow {
            let form = vec![
                ("disk".to_string(), slot.clone()),
                ("size".to_string(), format!("{gib}G")),
            ];
            let what = format!("growing `{slot}` of VM {vmid} to {gib} GiB");
            task::run(
                api,
                &job(
                    Method::PUT,
                    &node,
                    vmid,
                    "resize",
                    form,
                    what.clone(),
                    (task_timeout, "timeouts.taskSeconds"),
                ),
            )
            .await
            .map_err(|f| f.error(&what))?;
            tracing::info!(vmid, slot, gib, "grew the disk");
        }
        changed = true;
        break;
    }
    let generated_macs = inputs.networks.iter().any(|n| n.mac.is_none());
    if changed && (running || generated_macs || !located.config.current.contains_key("net0")) {
        located.config = config_of(api, &node, vmid).await?;
    }
    // What Proxmox could not hot-plug stays pending until a restart.
    let pending = pending_properties(inputs, &located.config);
    let mut restarted = false;
    if running && !pending.is_empty() {
        match inputs.on_pending_changes {
            OnPendingChanges::Restart => {
                tracing::info!(vmid, pending = %pending.join(", "), "these changes need a restart; shutting the VM down to start it again");
                stop(api, &node, vmid, inputs).await?;
                running = false;
                restarted = true;
            }
            OnPendingChanges::KeepPending => {
                tracing::warn!(vmid, pending = %pending.join(", "), "these changes stay pending until the VM restarts (onPendingChanges = \"keep-pending\")");
            }
        }
    }
    fedi_protocol::fault::point(FAULT_AFTER_CONFIGURE);
    if inputs.started && !running {
        let what = format!("starting VM {vmid}");
        let mut start = job(
            Method::POST,
            &node,
            vmid,
            "status/start",
            Vec::new(),
            what.clone(),
            (task_timeout, "timeouts.taskSeconds"),
        );
        // A start sent again (after a lost answer) ends "already running".
        start.done_if = &[Outcome::AlreadyRunning];
        task::run(api, &start).await.map_err(|f| f.error(&what))?;
        tracing::info!(vmid, "started the VM");
        running = true;
    } else if !inputs.started && running {
        stop(api, &node, vmid, inputs).await?;
        running = false;
        restarted = true;
    }
    if restarted {
        // Stopping applied the pending changes: show what runs now.
        located.config = config_of(api, &node, vmid).await?;
    }
    let guest = if running && inputs.wait_for_agent {
        guest_info(
            api,
            &located,
            inputs,
            Some(inputs.timeout(inputs.timeouts.agent_seconds)),
        )
        .await?
    } else {
        Guest::default()
    };
    Ok(VmOutputs {
        vmid,
        node,
        name: inputs.name.clone(),
        mac_addresses: macs(&located.config.current),
        ipv4_addresses: guest.ipv4,
        ipv6_addresses: guest.ipv6,
        ssh_host_key: guest.host_key,
        pending_changes: pending_properties(inputs, &located.config),
    })
}

/// Shuts the VM down gracefully (Proxmox stops it when the shutdown times
/// out), and stops it if the shutdown task failed.
async fn stop(api: &Api, node: &str, vmid: u32, inputs: &VmInputs) -> Result<()> {
    let seconds = inputs.timeouts.shutdown_seconds;
    let form = vec![
        ("timeout".to_string(), seconds.to_string()),
        ("forceStop".to_string(), "1".to_string()),
    ];
    let shutdown = task::run(
        api,
        &job(
            Method::POST,
            node,
            vmid,
            "status/shutdown",
            form,
            format!("shutting VM {vmid} down"),
            (
                Duration::from_secs(seconds + 30),
                "timeouts.shutdownSeconds",
            ),
        ),
    )
    .await;
    if let Err(failure) = shutdown {
        // A shutdown sent again after a lost answer finds the VM stopped.
        if !is_running(api, node, vmid).await? {
            tracing::info!(vmid, "the VM is stopped");
            return Ok(());
        }
        let e = failure.error("shutting the VM down");
        tracing::warn!(vmid, error = %e, "graceful shutdown failed; stopping the VM");
        let what = format!("stopping VM {vmid}");
        task::run(
            api,
            &job(
                Method::POST,
                node,
                vmid,
                "status/stop",
                Vec::new(),
                what.clone(),
                (
                    inputs.timeout(inputs.timeouts.task_seconds),
                    "timeouts.taskSeconds",
                ),
            ),
        )
        .await
        .map_err(|f| f.error(&what))?;
    }
    tracing::info!(vmid, "the VM is stopped");
    Ok(())
}

/// Destroys the VM with its disks. The DELETE is not sent again blindly:
/// after a lost answer the VM is looked at first (gone: done; `lock:
/// destroyed`: the destroy runs, wait for it; otherwise it never arrived,
/// send it again). A destroy that ends "does not exist" (sent again while
/// the first ran) is success once the VM is gone.
async fn destroy(api: &Api, node: &str, vmid: u32, inputs: &VmInputs) -> Result<()> {
    let path = format!("nodes/{node}/qemu/{vmid}");
    let query = [
        ("purge", "1".to_string()),
        ("destroy-unreferenced-disks", "1".to_string()),
    ];
    let what = format!("destroying VM {vmid}");
    let timeout = inputs.timeout(inputs.timeouts.task_seconds);
    for attempt in 1..=ATTEMPTS {
        match api
            .call(Method::DELETE, &path, &query, &[], Retry::Once)
            .await
        {
            Ok(upid) => {
                match task::wait(api, &upid, &what, timeout, "timeouts.taskSeconds").await {
                    Ok(()) => return Ok(()),
                    Err(failed) if failed.outcome == Outcome::AlreadyGone => {
                        tracing::info!(vmid, exit = %failed.exitstatus, "an earlier destroy got there first");
                        return wait_gone(api, node, vmid, inputs).await;
                    }
                    Err(failed) if failed.outcome == Outcome::LockTimeout && attempt < ATTEMPTS => {
                        tracing::warn!(vmid, exit = %failed.exitstatus, "the destroy timed out on the config lock; trying again");
                        task::pause(attempt).await;
                    }
                    Err(failed) => return Err(failed.error),
                }
            }
            Err(e) if e.is_missing_vm() => return Ok(()),
            Err(e) if e.is_lost() => {
                tracing::warn!(vmid, reason = %e.reason, "the answer to the DELETE was lost; looking at the VM");
                match locate(api, node, vmid).await? {
                    None => return Ok(()),
                    Some(l) if text(&l.config.current, "lock").as_deref() == Some("destroyed") => {
                        return wait_gone(api, &l.node, vmid, inputs).await;
                    }
                    Some(_) if attempt < ATTEMPTS => task::pause(attempt).await,
                    Some(_) => return Err(e.error.context(what)),
                }
            }
            Err(e) => return Err(e.error.context(what)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Waits, within `timeouts.taskSeconds`, until the VM's config is gone.
async fn wait_gone(api: &Api, node: &str, vmid: u32, inputs: &VmInputs) -> Result<()> {
    let deadline = Instant::now() + inputs.timeout(inputs.timeouts.task_seconds);
    let mut pause = task::FIRST_POLL;
    while locate(api, node, vmid).await?.is_some() {
        if Instant::now() >= deadline {
            return Err(Error::unavailable(format!(
                "VM {vmid} is still being destroyed after {}s",
                inputs.timeouts.task_seconds
            ))
            .with_field("timeouts.taskSeconds")
            .with_hint("the destroy goes on in Proxmox (see the node's task log); run the delete again later"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(task::MAX_POLL);
    }
    Ok(())
}

/// Asks the guest agent for addresses and the host key; with `wait`,
/// polls (with backoff) until the agent answers with an address, at most
/// that long.
async fn guest_info(
    api: &Api,
    located: &Located,
    inputs: &VmInputs,
    wait: Option<Duration>,
) -> Result<Guest> {
    let (node, vmid) = (&located.node, located.vmid);
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    let mut last: String;
    let has_networks = (0..32).any(|i| located.config.current.contains_key(&format!("net{i}")));
    loop {
        match api
            .get(
                &format!("nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"),
                &[],
            )
            .await
        {
            Ok(answer) => {
                let mut guest = Guest::default();
                if let Some(interfaces) = answer["result"].as_array() {
                    for interface in interfaces {
                        for address in interface["ip-addresses"].as_array().into_iter().flatten() {
                            let Some(ip) = address["ip-address"].as_str() else {
                                continue;
                            };
                            match ip.parse::<std::net::IpAddr>() {
                                Ok(std::net::IpAddr::V4(v4))
                                    if !v4.is_loopback() && !v4.is_link_local() =>
                                {
                                    guest.ipv4.push(ip.to_string())
                                }
                                Ok(std::net::IpAddr::V6(v6))
                                    if !v6.is_loopback()
                                        && (v6.segments()[0] & 0xffc0) != 0xfe80 =>
                                {
                                    guest.ipv6.push(ip.to_string())
                                }
                                _ => {}
                            }
                        }
                    }
                    if !has_networks || !guest.ipv4.is_empty() || !guest.ipv6.is_empty() {
                        match read_host_key(api, node, vmid, &inputs.host_key_path).await {
                            Ok(key) => {
                                guest.host_key = Some(key);
                                return Ok(guest);
                            }
                            Err(reason) => last = reason,
                        }
                    } else {
                        last = "the guest agent reports no address yet".into();
                    }
                } else {
                    // Windows guests answer 200 with {"result": {"error": ...}}.
                    last = format!("the guest agent answered {}", answer["result"]);
                }
            }
            Err(e) if e.status.is_some_and(|s| s.as_u16() == 500) => last = e.reason.clone(),
            Err(e) => return Err(e.error),
        }
        let Some(limit) = wait else {
            return Ok(Guest::default());
        };
        if started.elapsed() >= limit {
            return Err(Error::unavailable(format!("VM {vmid} runs, but its guest agent gave no address and host key within {}s ({last})", limit.as_secs()))
                .with_field("timeouts.agentSeconds")
                .with_hint("check that the image runs qemu-guest-agent and gets an address; raise `timeouts.agentSeconds`, or set `waitForAgent = false` to go on without addresses"));
        }
        tracing::debug!(vmid, reason = %last, "waiting for the guest agent");
        tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(5));
    }
}

async fn read_host_key(
    api: &Api,
    node: &str,
    vmid: u32,
    path: &str,
) -> std::result::Result<String, String> {
    match api
        .get(
            &format!("nodes/{node}/qemu/{vmid}/agent/file-read"),
            &[("file", path.to_string())],
        )
        .await
    {
        Ok(answer) => {
            let content = answer["content"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_string();
            if content.split_whitespace().count() >= 2 {
                Ok(content)
            } else {
                Err(format!("`{path}` holds no public key yet"))
            }
        }
        Err(e) => Err(e.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_a_set() {
        assert_eq!(
            normalise_tags(["Web", "fedi", "web", " a "]),
            vec!["a", "fedi", "web"]
        );
        let mut config = Config::new();
        config.insert("tags".into(), Value::String("fedi;web".into()));
        assert_eq!(current_tags(&config), vec!["fedi", "web"]);
    }

    #[test]
    fn disk_sizes_parse() {
        assert_eq!(disk_size("local-lvm:vm-100-disk-0,size=8G"), Some(8 * GIB));
        assert_eq!(
            disk_size("local:100/vm-100-disk-0.qcow2,discard=on,size=512M"),
            Some(512 * 1024 * 1024)
        );
        assert_eq!(disk_size("local-lvm:vm-100-disk-0"), None);
    }

    #[test]
    fn nets_round_trip() {
        let net = Network {
            bridge: "vmbr0".into(),
            model: "virtio".into(),
            vlan: Some(10),
            mac: None,
            firewall: true,
        };
        let value = net_value(&net, Some("bc:24:11:00:00:01"));
        assert_eq!(
            value,
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=10"
        );
        let parsed = parse_net(&value);
        assert_eq!(parsed.mac.as_deref(), Some("BC:24:11:00:00:01"));
        assert_eq!(parsed.options.get("tag").map(String::as_str), Some("10"));
    }

    #[test]
    fn macs_must_be_unicast() {
        assert!(valid_mac("BC:24:11:00:00:01"));
        assert!(!valid_mac("01:24:11:00:00:01"));
        assert!(!valid_mac("BC:24:11:00:00"));
    }
}
