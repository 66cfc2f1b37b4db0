//! A create (clone, configure, resize, start, wait for the guest agent)
//! against the test server with a per-request latency and task durations
//! injected: wall time and API calls of this provider (one process, as
//! NixOps4 runs it) next to the floor, the minimal call sequence with
//! perfect polling. Prints both and the ratios.
//!
//! Run: `cargo bench -p fedi-proxmox-vm --bench create`.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use fedi_testbeds::pve;

use std::time::{Duration, Instant};

use fedi_protocol::testkit::Harness;
use serde_json::json;

const RUNS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let timing = pve::Timing {
        latency: Duration::from_millis(25),
        clone: Duration::from_millis(3000),
        task: Duration::from_millis(300),
        shutdown: Duration::from_millis(300),
        boot: Duration::from_millis(2000),
    };
    let server = pve::Pve::start_with(timing.clone());
    let provider = Harness::new(env!("CARGO_BIN_EXE_fedi-proxmox-vm"));
    // The floor: cluster/resources, nextid, clone, config GET, config POST,
    // resize, start, agent network, agent file-read, plus one status poll
    // per task (clone, config, resize, start), each landing exactly when
    // the task ends; the agent asked exactly when the guest has booted.
    let floor_calls = 9 + 4;
    let floor = timing.latency * floor_calls + timing.clone + timing.task * 3 + timing.boot;
    let mut times = Vec::new();
    let mut calls = Vec::new();
    for i in 0..RUNS {
        server.take_log();
        let inputs = json!({
            "proxmox": server.connection(),
            "node": "pve1",
            "template": {"name": "debian-12"},
            "name": format!("bench{i}"),
            "cores": 2,
            "memory": 4096,
            "disks": [{"slot": "scsi0", "sizeGib": 20}],
            "cloudInit": {"user": "deployer", "ipConfigs": [{"ipv4": "dhcp"}]},
        });
        let start = Instant::now();
        provider.create("vm", inputs, true).outputs();
        times.push(start.elapsed());
        calls.push(server.take_log().len() as u32);
    }
    let time = times.iter().sum::<Duration>() / RUNS as u32;
    let call_count = calls.iter().sum::<u32>() as f64 / RUNS as f64;
    println!(
        "injected: {} ms per request, clone {} ms, other tasks {} ms, guest boot {} ms",
        timing.latency.as_millis(),
        timing.clone.as_millis(),
        timing.task.as_millis(),
        timing.boot.as_millis()
    );
    println!(
        "fedi-proxmox-vm create: {:>7.0} ms, {call_count:.1} API calls (mean of {RUNS})",
        time.as_secs_f64() * 1000.0
    );
    println!(
        "floor:                  {:>7.0} ms, {floor_calls} API calls",
        floor.as_secs_f64() * 1000.0
    );
    println!(
        "ratio: {:.2}x wall time, {:.2}x API calls",
        time.as_secs_f64() / floor.as_secs_f64(),
        call_count / f64::from(floor_calls)
    );
}
