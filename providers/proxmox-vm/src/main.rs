//! `fedi-proxmox-vm`: the NixOps4 resource provider for virtual machines on
//! Proxmox VE.
//!
//! Resource type [`vm`]: a QEMU VM cloned from a template, configured,
//! started, and described by its guest agent. [`api`] is the Proxmox VE API
//! client, [`task`] follows Proxmox tasks, [`tls`] verifies the API's
//! certificate (system roots, a CA file, or a pinned fingerprint); [`vcr`]
//! records and replays sessions (`FEDI_PROXMOX_RECORD`,
//! `FEDI_PROXMOX_REPLAY`).

mod api;
mod task;
mod tls;
mod vcr;
mod vm;

fn main() -> std::process::ExitCode {
    fedi_protocol::provider!(
        "proxmox-vm",
        "Virtual machines on Proxmox VE, cloned from templates: CPU, memory, disks, network, \
         cloud-init and tags changed in place, addresses and SSH host key reported by the QEMU \
         guest agent. The API token is read from a file or the environment; TLS is verified \
         against the system roots, a CA file or a pinned certificate fingerprint."
    )
    .resource(vm::Vm)
    .run()
}
