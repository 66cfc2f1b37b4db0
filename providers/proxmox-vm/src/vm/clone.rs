//! Cloning the template to a new VMID, safely against concurrent creates
//! and lost answers.

use super::*;

/// Refuses, before cloning, disks the inputs want smaller than the
/// template's (the clone could never converge).
pub(super) async fn check_template_disks(
    api: &Api,
    source: &Source,
    inputs: &VmInputs,
) -> Result<()> {
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

pub(super) fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Clones the template; the second value says whether this run made the
/// VM (`None` when it found one an earlier request made).
pub(super) async fn clone(
    api: &Api,
    source: &Source,
    inputs: &VmInputs,
) -> Result<(Located, Option<Fresh>)> {
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
pub(super) async fn next_id(api: &Api) -> Result<u32> {
    let value = api.get("cluster/nextid", &[]).await?;
    let parsed = match &value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    };
    parsed.ok_or_else(|| Error::internal(format!("/cluster/nextid answered {value}, not a VMID")))
}
