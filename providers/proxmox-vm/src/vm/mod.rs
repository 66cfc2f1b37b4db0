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

mod clone;
mod codec;
mod converge;
mod guest;
mod inputs;
mod lookup;
mod plan;
mod verbs;

use clone::*;
use codec::*;
use converge::*;
use guest::*;
pub use inputs::*;
use lookup::*;
use plan::*;
use verbs::*;

/// The line this provider adds to the description of every VM it makes:
/// how a retried create recognises its VM, and how delete makes sure it
/// destroys nothing else. (An HTML comment: the notes panel hides it.)
pub const MARKER: &str = "<!-- managed by fedi-proxmox-vm -->";

/// The [fault point](fedi_protocol::fault) right after Proxmox accepted the
/// clone, before it finished.
pub const FAULT_AFTER_CLONE_STARTED: &str = "after-clone-started";
/// The fault point after the VM was configured, before it is started.
pub const FAULT_AFTER_CONFIGURE: &str = "after-configure";

/// The `vm` resource type.
#[derive(Debug, Default)]
pub struct Vm;

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
        let vm = VmApi::new(&api, &node, vmid, inputs);
        if vm.is_running().await? {
            vm.stop().await?;
        }
        vm.destroy().await?;
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
        let running = VmApi::new(&api, &located.node, located.vmid, inputs)
            .is_running()
            .await?;
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
