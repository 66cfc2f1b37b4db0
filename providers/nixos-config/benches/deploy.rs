//! Deploying a closure of many small store paths to the test host (sshd in
//! its own namespaces with its own store, as in the tests), side by side
//! with the nixops4-nixos way: `nix copy --to ssh-ng://` then `ssh host
//! <system>/bin/switch-to-configuration switch`. Each round deploys a fresh
//! system (new paths) with both, each to its own empty host; then the time
//! of an unchanged redeploy with the provider.
//!
//! Run: `cargo bench -p fedi-nixos-config --bench deploy`.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestHost, build_system};

const PATHS: u32 = 200;
const ROUNDS: usize = 3;

fn provider_deploy(host: &TestHost, system: &str) -> Duration {
    let start = Instant::now();
    let exchange = common::provider().create("deployment", host.inputs(system), false);
    let elapsed = start.elapsed();
    exchange.outputs();
    elapsed
}

fn nixops4_nixos_way(host: &TestHost, system: &str) -> Duration {
    let opts = format!(
        "-p {} -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile={}",
        host.port,
        host.deployer_key.display(),
        host.dir.join("known_hosts").display()
    );
    std::fs::write(
        host.dir.join("known_hosts"),
        format!("[127.0.0.1]:{} {}\n", host.port, host.host_key),
    )
    .unwrap();
    let start = Instant::now();
    let copy = fedi_testbeds::nix::command("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--no-check-sigs",
        ])
        .args(["--to", "ssh-ng://root@127.0.0.1", system])
        .env("NIX_SSHOPTS", &opts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(copy.success());
    let switch = Command::new("ssh")
        .args(opts.split_whitespace())
        .arg("root@127.0.0.1")
        .arg(format!(
            "nix-env -p /nix/var/nix/profiles/system --set {system} && {system}/bin/switch-to-configuration switch"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(switch.success());
    start.elapsed()
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut unchanged = Vec::new();
    let tag = std::process::id();
    for round in 0..ROUNDS {
        let a = build_system(
            &format!("bench-a-{tag}-{round}"),
            "ok",
            PATHS,
            &format!("bench-a-{tag}-{round}"),
        );
        let b = build_system(
            &format!("bench-b-{tag}-{round}"),
            "ok",
            PATHS,
            &format!("bench-b-{tag}-{round}"),
        );
        let host_a = TestHost::start();
        let host_b = TestHost::start();
        // Alternate who goes first.
        if round % 2 == 0 {
            ours.push(provider_deploy(&host_a, &a));
            theirs.push(nixops4_nixos_way(&host_b, &b));
        } else {
            theirs.push(nixops4_nixos_way(&host_b, &b));
            ours.push(provider_deploy(&host_a, &a));
        }
        assert_eq!(host_a.store_paths().len(), PATHS as usize + 2);
        unchanged.push(provider_deploy(&host_a, &a));
    }
    let (ours, theirs, unchanged) = (
        median(&mut ours),
        median(&mut theirs),
        median(&mut unchanged),
    );
    println!(
        "deploy of a {}-path closure (median of {ROUNDS}): fedi-nixos-config {:.0} ms, \
         nix copy + ssh switch-to-configuration {:.0} ms, ratio {:.2}x; unchanged redeploy {:.0} ms",
        PATHS + 2,
        ours.as_secs_f64() * 1000.0,
        theirs.as_secs_f64() * 1000.0,
        ours.as_secs_f64() / theirs.as_secs_f64(),
        unchanged.as_secs_f64() * 1000.0,
    );
}
