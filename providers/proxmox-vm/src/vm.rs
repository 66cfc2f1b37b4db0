//! Resource type `vm`: a QEMU virtual machine on Proxmox VE, cloned from a
//! template, configured (CPU, memory, disks, network, cloud-init, tags),
//! started, and described by what its guest agent reports.
//!
//! Create clones the template to a VMID it allocates (`/cluster/nextid`,
//! trying the next one when a concurrent create took it) or the one given,
//! and marks the VM in its description so that a create retried after a
//! crash finds and adopts it instead of cloning again. Update changes the
//! VM in place (a node change migrates it); a change that needs a new VM
//! (template, fixed VMID) is an error saying so. Delete shuts the VM down
//! (then stops it) and destroys it with its disks; a VM that is already
//! gone is success. Read reports drift between the inputs and the VM.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{CreateContext, Drift, Error, ReadOutcome, Recorded, Resource, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{Api, CallError, Proxmox, Retry, uri_escape, uri_unescape};
use crate::task;

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
}

const DISK_PREFIXES: [&str; 5] = ["scsi", "virtio", "sata", "ide", "efidisk"];
const MODELS: [&str; 4] = ["virtio", "e1000", "vmxnet3", "rtl8139"];

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

/// Where a VM is.
#[derive(Debug, Clone)]
struct Located {
    node: String,
    vmid: u32,
    config: Config,
}

impl Resource for Vm {
    type Inputs = VmInputs;
    type Outputs = VmOutputs;

    const TYPE: &'static str = "vm";
    const DESCRIPTION: &'static str = "A QEMU virtual machine on Proxmox VE, cloned from a template: CPU, memory, \
        disks (grow only), network devices, cloud-init (user, SSH keys, IP configuration, DNS), tags, \
        start on boot and protection, changed in place; its MAC and IP addresses and SSH host key \
        (read through the QEMU guest agent) as outputs. A create retried after a crash adopts the VM \
        the crashed run cloned.";
    const REQUIRE_STATE: bool = true;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(&self, inputs: VmInputs, _: CreateContext) -> Result<VmOutputs> {
        inputs.validate()?;
        let api = Api::connect(&inputs.proxmox)?;
        let resources = vm_resources(&api).await?;
        let (located, fresh) = match find_ours(&api, &resources, &inputs.name, inputs.vmid).await? {
            Some(found) => {
                tracing::info!(vmid = found.vmid, node = %found.node, name = %inputs.name, "adopting the VM a previous run cloned");
                (wait_unlocked(&api, &found, &inputs).await?, None)
            }
            None => clone(&api, &resources, &inputs).await?,
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
        converge(&api, located, &inputs, None).await
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
        if text(&located.config, "protection").as_deref() == Some("1") {
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
        let path = format!("nodes/{node}/qemu/{vmid}");
        let query = [
            ("purge", "1".to_string()),
            ("destroy-unreferenced-disks", "1".to_string()),
        ];
        match api
            .call(Method::DELETE, &path, &query, &[], Retry::Idempotent)
            .await
        {
            Ok(upid) => {
                task::wait(
                    &api,
                    &upid,
                    &format!("destroying VM {vmid}"),
                    inputs.timeout(inputs.timeouts.task_seconds),
                    "timeouts.taskSeconds",
                )
                .await?
            }
            Err(e) if e.is_missing_vm() => {}
            Err(e) => return Err(e.error.context(format!("destroying VM {vmid}"))),
        }
        tracing::info!(vmid, node = %node, "destroyed the VM and its disks");
        Ok(())
    }

    async fn read(&self, current: Recorded<VmInputs, VmOutputs>) -> Result<ReadOutcome<VmOutputs>> {
        let inputs = &current.inputs;
        let api = Api::connect(&inputs.proxmox)?;
        let Some(located) = locate(&api, &current.outputs.node, current.outputs.vmid).await? else {
            return Ok(ReadOutcome::Gone);
        };
        let mut drift = plan(inputs, &located.config)
            .map(|p| p.drift)
            .unwrap_or_else(|e| {
                vec![Drift {
                    property: e.field().unwrap_or("disks").to_string(),
                    message: e.to_string(),
                }]
            });
        if located.node != inputs.node {
            drift.push(Drift {
                property: "node".into(),
                message: format!(
                    "the VM is on `{}`, the inputs say `{}`",
                    located.node, inputs.node
                ),
            });
        }
        if !is_ours(&located.config) {
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
            name: text(&located.config, "name").unwrap_or_default(),
            mac_addresses: macs(&located.config),
            ipv4_addresses: if running { guest.ipv4 } else { Vec::new() },
            ipv6_addresses: if running { guest.ipv6 } else { Vec::new() },
            ssh_host_key: guest.host_key.or(current.outputs.ssh_host_key.clone()),
        };
        Ok(ReadOutcome::Exists { outputs, drift })
    }
}

fn check_ours(located: &Located) -> Result<()> {
    if is_ours(&located.config) {
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
        if is_ours(&located.config) && text(&located.config, "name").as_deref() == Some(name) {
            return Ok(Some(located));
        }
        if fixed == Some(vmid) {
            return Err(Error::conflict(format!(
                "VMID {vmid} is taken by another VM (`{}`) on `{}`",
                text(&located.config, "name").unwrap_or_default(),
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

async fn config_of(api: &Api, node: &str, vmid: u32) -> Result<Config, CallError> {
    let value = api
        .get(&format!("nodes/{node}/qemu/{vmid}/config"), &[])
        .await?;
    Ok(value.as_object().cloned().unwrap_or_default())
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

/// Waits while a VM is locked (by a clone still running for a crashed
/// create), and returns its config.
async fn wait_unlocked(api: &Api, found: &Located, inputs: &VmInputs) -> Result<Located> {
    let deadline = Instant::now() + inputs.timeout(inputs.timeouts.clone_seconds);
    let mut located = found.clone();
    let mut pause = task::FIRST_POLL;
    while let Some(lock) = text(&located.config, "lock") {
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
        located.config = config_of(api, &located.node, located.vmid).await?;
    }
    Ok(located)
}

/// Clones the template; the second value says whether this run made the
/// VM (`None` when it found one a dropped request made).
async fn clone(
    api: &Api,
    resources: &[Value],
    inputs: &VmInputs,
) -> Result<(Located, Option<Fresh>)> {
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
    let source = vmid_of(template).unwrap_or_default();
    let source_node = template["node"]
        .as_str()
        .unwrap_or(&inputs.node)
        .to_string();
    const ATTEMPTS: u32 = 10;
    for attempt in 1..=ATTEMPTS {
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
        if source_node != inputs.node {
            form.push(("target".into(), inputs.node.clone()));
        }
        if let Some(storage) = inputs.storage.as_ref().filter(|_| inputs.full_clone) {
            form.push(("storage".into(), storage.clone()));
        }
        if let Some(pool) = &inputs.pool {
            form.push(("pool".into(), pool.clone()));
        }
        let path = format!("nodes/{source_node}/qemu/{source}/clone");
        let what = format!("cloning template {source} to VM {vmid}");
        match api.call(Method::POST, &path, &[], &form, Retry::Once).await {
            Ok(upid) => {
                tracing::info!(vmid, template = source, "clone started");
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
                        let config = config_of(api, &inputs.node, vmid).await?;
                        return Ok((
                            Located {
                                node: inputs.node.clone(),
                                vmid,
                                config,
                            },
                            Some(Fresh::Clone),
                        ));
                    }
                    Err(failed) if failed.transient && attempt < ATTEMPTS => {
                        tracing::warn!(vmid, exit = %failed.exitstatus, "the clone failed on a lock timeout; trying again");
                        pause_before_retry(attempt).await;
                    }
                    Err(failed) => return Err(failed.error),
                }
            }
            // No answer: the clone may or may not have started.
            Err(e) if e.status.is_none() => {
                tracing::warn!(vmid, reason = %e.reason, "no answer to the clone request; looking for the VM");
                let resources = vm_resources(api).await?;
                if let Some(found) = find_ours(api, &resources, &inputs.name, inputs.vmid).await? {
                    return Ok((wait_unlocked(api, &found, inputs).await?, None));
                }
                if attempt == ATTEMPTS {
                    return Err(e.error.context(what));
                }
                pause_before_retry(attempt).await;
            }
            Err(e) if e.is_vmid_taken() && inputs.vmid.is_none() && attempt < ATTEMPTS => {
                tracing::info!(vmid, reason = %e.reason, "the VMID was taken meanwhile; allocating another");
                pause_before_retry(attempt).await;
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
        "could not clone the template after {ATTEMPTS} attempts"
    ))
    .with_hint("other clones keep taking the VMIDs or locks; run again"))
}

/// A short pause that differs between processes, so concurrent creates
/// that collided do not collide again.
async fn pause_before_retry(attempt: u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = u64::from((nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 150);
    tokio::time::sleep(Duration::from_millis(
        50 * u64::from(attempt.min(6)) + jitter,
    ))
    .await;
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

/// Brings the VM to the inputs: node, config, disks, power; then waits for
/// the guest agent.
/// Whether the VM was just cloned by this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Clone,
}

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
        let upid = api
            .call(
                Method::POST,
                &format!("nodes/{}/qemu/{vmid}/migrate", located.node),
                &[],
                &form,
                Retry::Idempotent,
            )
            .await
            .map_err(|e| {
                e.error
                    .context(format!("migrating VM {vmid} to `{}`", inputs.node))
            })?;
        task::wait(
            api,
            &upid,
            &format!("migrating VM {vmid} to `{}`", inputs.node),
            inputs.timeout(inputs.timeouts.migrate_seconds),
            "timeouts.migrateSeconds",
        )
        .await?;
        tracing::info!(vmid, from = %located.node, to = %inputs.node, "migrated the VM");
        located.node = inputs.node.clone();
        located.config = config_of(api, &located.node, vmid).await?;
    }
    let node = located.node.clone();
    let config_path = format!("nodes/{node}/qemu/{vmid}/config");
    // A stale digest (someone changed the config meanwhile) is retried once
    // with the fresh config.
    for attempt in 1..=3 {
        let mut plan = plan(inputs, &located.config)?;
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
            if let Some(digest) = text(&located.config, "digest") {
                form.push(("digest".into(), digest));
            }
            let keys: Vec<&str> = plan
                .set
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(plan.delete.iter().map(String::as_str))
                .collect();
            tracing::info!(vmid, keys = %keys.join(","), "changing the VM's configuration");
            match api
                .call(Method::POST, &config_path, &[], &form, Retry::Idempotent)
                .await
            {
                Ok(upid) => {
                    task::wait(
                        api,
                        &upid,
                        &format!("configuring VM {vmid}"),
                        task_timeout,
                        "timeouts.taskSeconds",
                    )
                    .await?
                }
                Err(e)
                    if (e.reason.contains("checksum mismatch") || e.reason.contains("digest"))
                        && attempt < 3 =>
                {
                    tracing::warn!(vmid, "the config changed meanwhile; reading it again");
                    located.config = config_of(api, &node, vmid).await?;
                    continue;
                }
                Err(e) => return Err(e.error.context(format!("configuring VM {vmid}"))),
            }
        }
        for (slot, gib) in &plan.grow {
            let form = vec![
                ("disk".to_string(), slot.clone()),
                ("size".to_string(), format!("{gib}G")),
            ];
            let upid = api
                .call(
                    Method::PUT,
                    &format!("nodes/{node}/qemu/{vmid}/resize"),
                    &[],
                    &form,
                    Retry::Idempotent,
                )
                .await
                .map_err(|e| {
                    e.error
                        .context(format!("growing `{slot}` of VM {vmid} to {gib} GiB"))
                })?;
            task::wait(
                api,
                &upid,
                &format!("growing `{slot}` of VM {vmid}"),
                task_timeout,
                "timeouts.taskSeconds",
            )
            .await?;
            tracing::info!(vmid, slot, gib, "grew the disk");
        }
        let generated_macs = inputs.networks.iter().any(|n| n.mac.is_none());
        if generated_macs
            || !plan.grow.is_empty()
            || plan.set.iter().any(|(k, _)| k.starts_with("net"))
        {
            located.config = config_of(api, &node, vmid).await?;
        }
        break;
    }
    fedi_protocol::fault::point(FAULT_AFTER_CONFIGURE);
    if inputs.started && !running {
        let upid = api
            .call(
                Method::POST,
                &format!("nodes/{node}/qemu/{vmid}/status/start"),
                &[],
                &[],
                Retry::Idempotent,
            )
            .await
            .map_err(|e| e.error.context(format!("starting VM {vmid}")))?;
        task::wait(
            api,
            &upid,
            &format!("starting VM {vmid}"),
            task_timeout,
            "timeouts.taskSeconds",
        )
        .await?;
        tracing::info!(vmid, "started the VM");
        running = true;
    } else if !inputs.started && running {
        stop(api, &node, vmid, inputs).await?;
        running = false;
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
        mac_addresses: macs(&located.config),
        ipv4_addresses: guest.ipv4,
        ipv6_addresses: guest.ipv6,
        ssh_host_key: guest.host_key,
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
    let shutdown = match api
        .call(
            Method::POST,
            &format!("nodes/{node}/qemu/{vmid}/status/shutdown"),
            &[],
            &form,
            Retry::Idempotent,
        )
        .await
    {
        Ok(upid) => task::wait(
            api,
            &upid,
            &format!("shutting VM {vmid} down"),
            Duration::from_secs(seconds + 30),
            "timeouts.shutdownSeconds",
        )
        .await
        .map_err(|e| e.error),
        Err(e) => Err(e.error),
    };
    if let Err(e) = shutdown {
        tracing::warn!(vmid, error = %e, "graceful shutdown failed; stopping the VM");
        let upid = api
            .call(
                Method::POST,
                &format!("nodes/{node}/qemu/{vmid}/status/stop"),
                &[],
                &[],
                Retry::Idempotent,
            )
            .await
            .map_err(|e| e.error.context(format!("stopping VM {vmid}")))?;
        task::wait(
            api,
            &upid,
            &format!("stopping VM {vmid}"),
            inputs.timeout(inputs.timeouts.task_seconds),
            "timeouts.taskSeconds",
        )
        .await?;
    }
    tracing::info!(vmid, "the VM is stopped");
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
    let has_networks = (0..32).any(|i| located.config.contains_key(&format!("net{i}")));
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
