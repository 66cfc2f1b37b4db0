//! Bringing a VM to its inputs: migrate, configure, grow disks, restart
//! for pending changes, power, then the guest agent. The calls are the
//! typed verbs of [`super::verbs`].

use super::*;

/// Whether the VM was just cloned by this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fresh {
    Clone,
}

/// Brings the VM to the inputs: node, config, disks, power (restarting it
/// when changes are pending and the inputs say so); then waits for the
/// guest agent.
pub(super) async fn converge(
    api: &Api,
    mut located: Located,
    inputs: &VmInputs,
    previous: Option<Fresh>,
) -> Result<VmOutputs> {
    let vmid = located.vmid;
    // A fresh clone is stopped; an adopted or existing VM may run.
    let mut running = match previous {
        Some(Fresh::Clone) => false,
        _ => {
            VmApi::new(api, &located.node, vmid, inputs)
                .is_running()
                .await?
        }
    };
    if located.node != inputs.node {
        VmApi::new(api, &located.node, vmid, inputs)
            .migrate(&inputs.node, running)
            .await?;
        tracing::info!(vmid, from = %located.node, to = %inputs.node, "migrated the VM");
        located.node = inputs.node.clone();
        located.config = config_of(api, &located.node, vmid).await?;
    }
    let node = located.node.clone();
    let vm = VmApi::new(api, &node, vmid, inputs);
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
            match vm.configure(form).await {
                Ok(()) => {}
                Err(Failure::Call(e)) if e.is_stale_digest() && attempt < 3 => {
                    tracing::warn!(vmid, reason = %e.reason, "the config changed meanwhile; reading it again");
                    located.config = config_of(api, &node, vmid).await?;
                    continue;
                }
                Err(f) => return Err(f.error(&format!("configuring VM {vmid}"))),
            }
        }
        for (slot, gib) in &plan.grow {
            vm.resize(slot, *gib).await?;
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
                vm.stop().await?;
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
        vm.start().await?;
        tracing::info!(vmid, "started the VM");
        running = true;
    } else if !inputs.started && running {
        vm.stop().await?;
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
