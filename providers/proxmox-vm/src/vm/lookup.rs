//! Finding VMs: the config (current and pending) of a VMID, where a VM
//! is, the template, VMs an earlier run made (also a clone still writing
//! its temporary config after a lost answer or a crash).

use super::*;

/// A VM's configuration: what runs, and what it becomes when the pending
/// changes are applied.
#[derive(Debug, Clone, Default)]
pub(super) struct VmConfig {
    /// What runs (`GET .../config?current=1`).
    pub(super) current: Config,
    /// With the pending changes applied (`GET .../config`), and the digest.
    pub(super) effective: Config,
}

impl VmConfig {
    /// The config keys with a pending change (a new value or a removal).
    pub(super) fn pending_keys(&self) -> BTreeSet<String> {
        let keys: BTreeSet<&String> = self.current.keys().chain(self.effective.keys()).collect();
        keys.into_iter()
            .filter(|k| *k != "digest" && self.current.get(*k) != self.effective.get(*k))
            .cloned()
            .collect()
    }
}

/// Where a VM is.
#[derive(Debug, Clone)]
pub(super) struct Located {
    pub(super) node: String,
    pub(super) vmid: u32,
    pub(super) config: VmConfig,
}

/// The template to clone: its VMID and node.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub(super) vmid: u32,
    pub(super) node: String,
}

/// `GET /cluster/resources?type=vm`: every VM and template, with its node.
pub(super) async fn vm_resources(api: &Api) -> Result<Vec<Value>> {
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

pub(super) fn vmid_of(resource: &Value) -> Option<u32> {
    resource["vmid"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
}

/// Finds a VM this provider made for `name` (a crashed create's clone).
pub(super) async fn find_ours(
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
pub(super) async fn find_unnamed_clone(
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
pub(super) async fn our_clone_runs(api: &Api, source: &Source, since: u64) -> Result<bool> {
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
pub(super) enum Look {
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
pub(super) async fn look_for_clone(
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
pub(super) async fn config_of(api: &Api, node: &str, vmid: u32) -> Result<VmConfig, CallError> {
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
pub(super) async fn locate(api: &Api, node: &str, vmid: u32) -> Result<Option<Located>> {
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
pub(super) async fn wait_unlocked(
    api: &Api,
    found: &Located,
    inputs: &VmInputs,
) -> Result<Option<Located>> {
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
pub(super) fn find_template(resources: &[Value], inputs: &VmInputs) -> Result<Source> {
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
