//! End-to-end apply of the example operator deployment (three
//! applications: 20 resources) on the local backends, as NixOps4 applies
//! it (every ready resource side by side) and one operation at a time
//! (`--jobs 1`: what a script around `fedi-resource-runner` does), the two
//! alternating in the same benchmark run so that both meet the same
//! machine. Reports, for the side-by-side runs, the wall time per phase
//! (evaluation, system builds, each provider, total) and the share of the
//! provider time spent in our code (the provider processes' own CPU time)
//! versus the tools they run (ssh, nix) and waiting for the backends; and
//! the measured ratio of the two totals.
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

/// One whole `fedi-local` run; the report of its first apply.
fn apply(exe: &str, providers: &Path, jobs: Option<usize>) -> Value {
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("report.json");
    let mut command = Command::new(exe);
    command
        .arg("--state-dir")
        .arg(work.path().join("run"))
        .arg("--report")
        .arg(&report)
        .arg("--providers-dir")
        .arg(providers)
        // Only the first apply is measured: the same panel again is a
        // no-op, and the destroy cleans up.
        .arg("--changed-panel")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fediversity/panel.json"));
    if let Some(jobs) = jobs {
        command.arg("--jobs").arg(jobs.to_string());
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "fedi-local failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let phases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    phases[0]["report"].clone()
}

fn main() {
    let exe = env!("CARGO_BIN_EXE_fedi-local");
    let providers = Path::new(exe).parent().unwrap();
    let mut totals = Vec::new();
    let mut sequential_totals = Vec::new();
    let mut evaluations = Vec::new();
    let mut builds = Vec::new();
    let mut operations = 0;
    let mut providers_wall: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut cpu_share: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..RUNS {
        // Alternate which goes first, so neither always meets a warmer cache.
        let (side_by_side, one_by_one) = if run % 2 == 0 {
            let a = apply(exe, providers, None);
            (a, apply(exe, providers, Some(1)))
        } else {
            let b = apply(exe, providers, Some(1));
            (apply(exe, providers, None), b)
        };
        let ops = side_by_side["operations"].as_array().unwrap();
        assert_eq!(
            ops.len(),
            one_by_one["operations"].as_array().unwrap().len(),
            "both runs do the same operations"
        );
        operations = ops.len();
        totals.push(side_by_side["total"].as_f64().unwrap());
        sequential_totals.push(one_by_one["total"].as_f64().unwrap());
        evaluations.push(
            side_by_side["evaluations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_f64().unwrap())
                .sum(),
        );
        builds.push(
            side_by_side["builds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b[1].as_f64().unwrap())
                .sum(),
        );
        let mut run_wall: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for op in ops {
            let entry = run_wall
                .entry(op["provider"].as_str().unwrap().to_string())
                .or_default();
            entry.0 += op["wall"].as_f64().unwrap();
            entry.1 += op["cpuOwn"].as_f64().unwrap_or(0.0);
        }
        for (provider, (wall, own)) in run_wall {
            providers_wall
                .entry(provider.clone())
                .or_default()
                .push(wall);
            cpu_share.entry(provider).or_default().push(own / wall);
        }
    }
    let total = median(totals.clone());
    let sequential = median(sequential_totals.clone());
    let evaluation = median(evaluations);
    let build = median(builds);
    println!(
        "end-to-end apply of examples/fediversity/panel.json ({operations} operations), median of {RUNS} runs each way"
    );
    println!("  {:<30} {:>9}", "phase (side by side)", "wall s");
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
    println!("  runs: side by side {totals:.2?} s; one at a time {sequential_totals:.2?} s");
    println!(
        "  one operation at a time (--jobs 1), measured: {sequential:.2} s; every ready one side by side: {total:.2} s: {:.2}x faster",
        sequential / total
    );
}
