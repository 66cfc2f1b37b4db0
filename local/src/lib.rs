//! The local end-to-end deployment: the cluster configurator applied the
//! way NixOps4 does ([`engine`]) onto real local backends ([`backends`]:
//! Garage, Knot DNS, the Proxmox VE API test server whose VMs boot as
//! SSH/Nix guests, [`guests`]) inside a private network namespace
//! ([`netns`]).
//!
//! The binary `fedi-local` is the README's main command; its end-to-end
//! test drives the same phases through this library, so that it can query
//! the backends itself between them (they live in the namespace and stop
//! with the process that started them).

pub mod backends;
pub mod engine;
pub mod graph;
pub mod guests;
pub mod netns;
pub mod session;
pub mod state;
pub mod verify;

use std::path::{Path, PathBuf};

/// The repository (configurator, examples), as built.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
