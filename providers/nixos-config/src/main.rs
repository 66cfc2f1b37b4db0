//! `fedi-nixos-config`: the NixOps4 resource provider that deploys a NixOS
//! system onto an existing host over SSH.
//!
//! Resource types:
//! - [`deployment`]: a built system closure copied to a host (`nix copy --to
//!   ssh-ng://`), activated detached from the SSH connection, confirmed by a
//!   fresh connection (magic rollback), with secret files uploaded beside it.
//!
//! Modules: [`process`] runs child programs with deadlines and captured
//! output; [`ssh`] holds the shared, strictly pinned SSH connection; [`nix`]
//! copies closures; [`remote`] is the shell the target runs (probe, key
//! upload, the detached activation runner).

mod deployment;
mod nix;
mod process;
mod remote;
mod ssh;

fn main() -> std::process::ExitCode {
    fedi_protocol::provider!(
        "nixos-config",
        "Deploys a NixOS system closure onto an existing host over SSH: copies it with \
         `nix copy`, activates it detached from the connection, rolls back when activation \
         fails or a fresh SSH connection cannot confirm it (magic rollback), and uploads secret \
         files outside the Nix store."
    )
    .resource(deployment::Deployment)
    .run()
}
