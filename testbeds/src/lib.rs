//! Real local backends, started as child processes (or, for Proxmox VE, an
//! in-process HTTPS server) on loopback or inside a network namespace the
//! caller created, and stopped when dropped.
//!
//! The providers' tests use them one at a time; the local end-to-end
//! deployment (`fedi-local`) starts them all and lets the Proxmox server's
//! VMs boot as SSH/Nix hosts ([`pve::Guests`]).
//!
//! Everything here panics on set-up failures with the backend's log: these
//! are test fixtures, not production code.

#![allow(missing_docs)] // fixtures; their fields say what they are

pub mod dns;
pub mod garage;
pub mod nix;
pub mod pve;
pub mod ssh_host;
