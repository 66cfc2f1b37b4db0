//! What to change so a VM's configuration matches the inputs; also the
//! drift `read` reports.

use super::*;

/// What to change so the VM matches the inputs.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Config keys to set.
    pub(super) set: Vec<(String, String)>,
    /// Config keys to remove.
    pub(super) delete: Vec<String>,
    /// Disks to grow: slot, new size in GiB.
    pub(super) grow: Vec<(String, u64)>,
    /// The differences, for read.
    pub(super) drift: Vec<Drift>,
    /// A difference that cannot be changed (a disk would shrink).
    pub(super) refused: Option<Error>,
    /// Which config key each drifted property is about: (property, key).
    pub(super) sources: Vec<(String, String)>,
}

impl Plan {
    pub(super) fn change(
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

    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty() && self.grow.is_empty()
    }
}

pub(super) fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "nothing".into(),
    }
}

/// Compares the inputs with the VM's config.
pub(super) fn plan(inputs: &VmInputs, config: &Config) -> Result<Plan> {
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
