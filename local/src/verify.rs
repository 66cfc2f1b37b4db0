//! After each phase, the backends are compared with the state: exactly the
//! recorded VMs, buckets, keys, records and deployed systems exist, each as
//! recorded, and nothing else (nothing orphaned, nothing duplicated).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::backends::Backends;
use crate::guests;
use crate::state::{Applied, State};

/// What was checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checked {
    /// VMs on the Proxmox server (templates aside).
    pub vms: Vec<String>,
    /// Buckets in Garage.
    pub buckets: Vec<String>,
    /// Access keys in Garage.
    pub keys: Vec<String>,
    /// DNS records served (`name type values`).
    pub records: Vec<String>,
    /// Guests running the system their deployment recorded.
    pub deployments: Vec<String>,
}

fn of<'a>(
    state: &'a State,
    provider: &'a str,
    type_: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Applied)> {
    state
        .resources
        .iter()
        .filter(move |(_, r)| r.provider == provider && r.type_ == type_)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Compares the backends with `state`. `records_seen` are the `(name,
/// type)` of every record any phase had: those not in the state must be
/// gone. Returns what was checked, or every difference.
pub fn verify(
    backends: &Backends,
    state: &State,
    records_seen: &BTreeSet<(String, String)>,
) -> Result<Checked, Vec<String>> {
    let mut problems = Vec::new();
    let mut checked = Checked::default();

    // VMs: exactly the recorded ones, with the recorded size.
    let vms: Vec<(u32, String, String, String)> = backends.pve.with(|s| {
        s.vms
            .iter()
            .filter(|(_, vm)| !vm.config.contains_key("template"))
            .map(|(id, vm)| {
                let get = |k: &str| vm.config.get(k).map(text).unwrap_or_default();
                (*id, get("name"), get("memory"), get("cores"))
            })
            .collect()
    });
    let wanted_vms = sorted(
        of(state, "proxmox-vm", "vm")
            .map(|(_, r)| text(r.input("name")))
            .collect(),
    );
    let have_vms = sorted(vms.iter().map(|v| v.1.clone()).collect());
    if wanted_vms != have_vms {
        problems.push(format!(
            "Proxmox has the VMs {have_vms:?}; the state records {wanted_vms:?}"
        ));
    }
    for (_, r) in of(state, "proxmox-vm", "vm") {
        let name = text(r.input("name"));
        if let Some((_, _, memory, cores)) = vms.iter().find(|v| v.1 == name) {
            let (want_memory, want_cores) = (text(r.input("memory")), text(r.input("cores")));
            if *memory != want_memory || *cores != want_cores {
                problems.push(format!(
                    "VM {name} has {cores} cores and {memory} MiB; its inputs say {want_cores} and {want_memory}"
                ));
            }
        }
    }
    checked.vms = have_vms;
    // Every VM's guest disk, and no other.
    let disks: BTreeSet<String> = std::fs::read_dir(&backends.guests_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let vm_disks: BTreeSet<String> = vms.iter().map(|v| format!("vm-{}", v.0)).collect();
    if disks != vm_disks {
        problems.push(format!(
            "guest disks {disks:?} do not match the VMs {vm_disks:?}"
        ));
    }

    // Buckets and keys.
    let wanted = sorted(
        of(state, "garage-bucket", "bucket")
            .map(|(_, r)| text(r.input("name")))
            .collect(),
    );
    let have = backends.garage.bucket_aliases();
    if wanted != have {
        problems.push(format!(
            "Garage has the buckets {have:?}; the state records {wanted:?}"
        ));
    }
    checked.buckets = have;
    let wanted = sorted(
        of(state, "garage-bucket", "key")
            .map(|(_, r)| text(r.input("name")))
            .collect(),
    );
    let have = backends.garage.key_names();
    if wanted != have {
        problems.push(format!(
            "Garage has the keys {have:?}; the state records {wanted:?}"
        ));
    }
    checked.keys = have;

    // Records: the recorded ones served as recorded; the others gone.
    for (name, type_) in records_seen {
        let served = backends.dns.dig(name, type_);
        let recorded = of(state, "dns-record", "record")
            .find(|(_, r)| text(r.input("name")) == *name && text(r.input("type")) == *type_);
        match recorded {
            Some((_, r)) => {
                let mut wanted: Vec<String> = r
                    .output("values")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                wanted.sort();
                if served != wanted {
                    problems.push(format!(
                        "{name} {type_} is served as {served:?}; recorded {wanted:?}"
                    ));
                } else {
                    checked
                        .records
                        .push(format!("{name} {type_} {}", served.join(" ")));
                }
            }
            None if !served.is_empty() => problems.push(format!(
                "{name} {type_} is still served ({served:?}) but no resource has it"
            )),
            None => {}
        }
    }

    // Deployments: the guest runs the recorded system, with its keys.
    for (name, r) in of(state, "nixos-config", "deployment") {
        let vmid = r
            .depends_on
            .iter()
            .filter_map(|d| state.resources.get(d))
            .find(|d| d.provider == "proxmox-vm")
            .and_then(|vm| vm.outputs.get("vmid")?.as_u64());
        let Some(vmid) = vmid else {
            problems.push(format!("{name}: no VM recorded for it"));
            continue;
        };
        let disk = guests::disk(&backends.guests_dir, vmid as u32);
        let current = std::fs::read_link(disk.join("run/current-system"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if current != text(r.input("system")) {
            problems.push(format!(
                "{name}: the guest runs {current:?}, not the recorded system {}",
                r.input("system")
            ));
            continue;
        }
        for key in r.input("keys").as_array().into_iter().flatten() {
            let on_guest = std::fs::read(disk.join("run/keys").join(text(&key["name"])));
            let local = std::fs::read(text(&key["file"]));
            if on_guest.is_err() || on_guest.ok() != local.ok() {
                problems.push(format!(
                    "{name}: key {} on the guest differs from its file",
                    key["name"]
                ));
            }
        }
        checked.deployments.push(format!("{name} {current}"));
    }

    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}

/// Adds the secrets this run knows now to `known`: the backends' tokens
/// and TSIG secret, and every file under `dir/secrets`, `dir/s3` and
/// `dir/keys` (the body lines of private keys).
pub fn collect_secrets(backends: &Backends, dir: &Path, known: &mut BTreeSet<String>) {
    for file in [
        &backends.pve.token_file,
        &backends.garage.token_file,
        &backends.dns.deploy_secret_file,
    ] {
        if let Ok(text) = std::fs::read_to_string(file) {
            known.insert(text.trim().to_string());
        }
    }
    for sub in ["secrets", "s3", "keys"] {
        for entry in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if text.contains("PRIVATE KEY-----") {
                known.extend(
                    text.lines()
                        .filter(|l| !l.starts_with("-----") && l.len() >= 20)
                        .map(str::to_string),
                );
            } else if !text.starts_with("ssh-") {
                known.insert(text.trim().to_string());
            }
        }
    }
    known.retain(|s| s.len() >= 8);
}

/// The provider logs under `logs` that contain one of `secrets`.
pub fn leaks(secrets: &BTreeSet<String>, logs: &Path) -> Vec<String> {
    let mut leaks = Vec::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if secrets.iter().any(|s| text.contains(s.as_str())) {
            leaks.push(format!(
                "a secret is in the provider log {}",
                entry.path().display()
            ));
        }
    }
    leaks
}
