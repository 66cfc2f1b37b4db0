//! End-to-end apply of the example operator deployment (three
//! applications: 23 resources) on the local backends, run three times:
//! wall time per phase (evaluation, system builds, each provider, total)
//! and the share of the provider time spent in our code (the provider
//! processes' own CPU time) versus the tools they run (ssh, nix) and
//! waiting for the backends. Compared with applying the same operations
//! one after another (what a script around `fedi-resource-runner` does):
//! the sum of the operations' wall times.
//!
//! `cargo bench -p fedi-local` (as root; builds the providers first with
//! `cargo build --release --workspace --bins`).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let exe = env!("CARGO_BIN_EXE_fedi-local");
    let providers = Path::new(exe).parent().unwrap();
    let mut totals = Vec::new();
    let mut evaluations = Vec::new();
    let mut builds = Vec::new();
    let mut sequential = Vec::new();
    // provider -> (wall, own CPU) per run
    let mut providers_wall: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut cpu_share: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..RUNS {
        let work = tempfile::tempdir().unwrap();
        let report = work.path().join("report.json");
        let output = Command::new(exe)
            .arg("--state-dir")
            .arg(work.path().join("run"))
            .arg("--report")
            .arg(&report)
            .arg("--providers-dir")
            .arg(providers)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "fedi-local failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let phases: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let apply = &phases[0]["report"];
        totals.push(apply["total"].as_f64().unwrap());
        evaluations.push(
            apply["evaluations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_f64().unwrap())
                .sum(),
        );
        builds.push(
            apply["builds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b[1].as_f64().unwrap())
                .sum(),
        );
        let mut run_wall: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut sum = 0.0;
        for op in apply["operations"].as_array().unwrap() {
            let wall = op["wall"].as_f64().unwrap();
            let own = op["cpuOwn"].as_f64().unwrap_or(0.0);
            sum += wall;
            let entry = run_wall
                .entry(op["provider"].as_str().unwrap().to_string())
                .or_default();
            entry.0 += wall;
            entry.1 += own;
        }
        sequential.push(sum);
        for (provider, (wall, own)) in run_wall {
            providers_wall
                .entry(provider.clone())
                .or_default()
                .push(wall);
            cpu_share.entry(provider).or_default().push(own / wall);
        }
    }
    let total = median(totals);
    let evaluation = median(evaluations);
    let build = median(builds);
    let one_by_one = median(sequential);
    println!(
        "end-to-end apply of examples/fediversity/panel.json (23 resources), median of {RUNS} runs"
    );
    println!("  {:<30} {:>9}", "phase", "wall s");
    println!(
        "  {:<30} {:>9.2}   ({:.0}% of the apply)",
        "evaluation (nix-instantiate)",
        evaluation,
        100.0 * evaluation / total
    );
    println!("  {:<30} {:>9.2}", "system builds (nix-build)", build);
    println!(
        "  {:<30} {:>9}   {:>12}",
        "provider operations", "sum wall s", "our code CPU"
    );
    for (provider, walls) in &providers_wall {
        println!(
            "    {:<28} {:>9.2}   {:>11.0}%   (the rest: ssh/nix tools and waiting for the backend)",
            provider,
            median(walls.clone()),
            100.0 * median(cpu_share[provider].clone())
        );
    }
    println!("  {:<30} {:>9.2}", "total apply", total);
    println!(
        "  the same operations one after another: {one_by_one:.2} s; fedi-local runs ready resources side by side: {:.2}x faster",
        one_by_one / total
    );
}
