//! The real SSH/Nix test host ([`fedi_testbeds::ssh_host`]) plus what only
//! these tests need: the provider harness and test systems, built with real
//! Nix from `system.nix` (no nixpkgs).

#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::{Command, Stdio};

use fedi_protocol::testkit::Harness;
pub use fedi_testbeds::ssh_host::{DEPLOYER, TestHost, keygen};

/// The provider, its Nix commands (`nix copy`) under the project's Nix
/// configuration rather than the machine's.
pub fn provider() -> Harness {
    fedi_testbeds::nix::env().iter().fold(
        Harness::new(env!("CARGO_BIN_EXE_fedi-nixos-config")),
        |h, (name, value)| h.env(name, value),
    )
}

/// Builds a test system (see `system.nix`) in the deploying machine's store.
pub fn build_system(name: &str, behaviour: &str, deps: u32, shared: &str) -> String {
    let expression = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/system.nix");
    let output = fedi_testbeds::nix::command("nix-build")
        .args(["--no-out-link", "--quiet"])
        .arg(&expression)
        .args(["--argstr", "name", name])
        .args(["--argstr", "behaviour", behaviour])
        .args(["--arg", "deps", &deps.to_string()])
        .args(["--argstr", "shared", shared])
        .stdin(Stdio::null())
        .output()
        .expect("nix-build (nix-bin) is installed");
    assert!(
        output.status.success(),
        "building the test system failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The closure of a store path in the deploying machine's store.
pub fn closure(path: &str) -> Vec<String> {
    let output = fedi_testbeds::nix::command("nix-store")
        .args(["-qR", path])
        .output()
        .expect("nix-store");
    assert!(output.status.success());
    let mut paths: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    paths.sort();
    paths
}
