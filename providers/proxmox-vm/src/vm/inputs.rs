//! The inputs and outputs of `vm`, and the checks that need no API call.

use super::*;

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

pub(super) fn yes() -> bool {
    true
}
pub(super) fn one() -> u32 {
    1
}
pub(super) fn default_memory() -> u64 {
    2048
}
pub(super) fn default_model() -> String {
    "virtio".into()
}
pub(super) fn default_host_key_path() -> String {
    "/etc/ssh/ssh_host_ed25519_key.pub".into()
}
pub(super) fn default_clone_timeout() -> u64 {
    900
}
pub(super) fn default_task_timeout() -> u64 {
    300
}
pub(super) fn default_agent_timeout() -> u64 {
    300
}
pub(super) fn default_shutdown_timeout() -> u64 {
    180
}
pub(super) fn default_migrate_timeout() -> u64 {
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

pub(super) const DISK_PREFIXES: [&str; 5] = ["scsi", "virtio", "sata", "ide", "efidisk"];
pub(super) const MODELS: [&str; 4] = ["virtio", "e1000", "vmxnet3", "rtl8139"];
/// qemu-server's hotplug features (`parse_hotplug_features`).
pub(super) const HOTPLUG: [&str; 6] = ["network", "disk", "cpu", "memory", "usb", "cloudinit"];

impl VmInputs {
    pub(super) fn timeout(&self, seconds: u64) -> Duration {
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

pub(super) fn check_vmid(field: &str, id: u32) -> Result<()> {
    if (100..=999_999_999).contains(&id) {
        return Ok(());
    }
    Err(
        Error::invalid_input(field, format!("{id} is not a valid VMID"))
            .with_hint("VMIDs are 100 to 999999999"),
    )
}

pub(super) fn valid_dns_name(name: &str) -> bool {
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

pub(super) fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

pub(super) fn check_ip(field: &str, ip: &IpConfig) -> Result<()> {
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
