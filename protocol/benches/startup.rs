//! Start-up benchmark: NixOps4 starts one provider process per resource
//! operation, so spawn-to-response is paid per resource.
//!
//! Measures the median time from spawning a process to reading its response
//! line, for (a) the test provider answering a real `create` through the
//! whole framework and (b) the floor, a minimal Rust binary that only writes
//! a fixed response line. Prints both and the ratio (target: under 1.5x).
//!
//! Run: `cargo bench -p fedi-protocol --bench startup` (builds the release
//! examples first).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 300;
const REQUEST: &str = r#"{"createResourceRequest":{"type":"counter","inputProperties":{"step":1},"isStateful":true}}"#;

fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("bench binary lives in target/<profile>/deps")
        .join("examples")
}

fn build_examples() {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-p",
            "fedi-protocol",
            "--example",
            "test-provider",
            "--example",
            "floor-provider",
        ])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the release examples failed");
}

/// Spawn, send the request, read the response line; returns the elapsed
/// time to the response, then lets the process exit.
fn spawn_to_response(exe: &Path) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{REQUEST}").expect("write request");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read response");
    let elapsed = start.elapsed();
    assert!(line.contains("Response"), "unexpected answer: {line}");
    drop(stdin);
    let status = child.wait().expect("wait");
    assert!(status.success());
    elapsed
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too, so do
    // nothing when asked to list or to run as a test.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    build_examples();
    let dir = examples_dir();
    let provider = dir.join("test-provider");
    let floor = dir.join("floor-provider");
    // Warm the page cache.
    for _ in 0..10 {
        spawn_to_response(&provider);
        spawn_to_response(&floor);
    }
    let mut provider_samples = Vec::with_capacity(RUNS);
    let mut floor_samples = Vec::with_capacity(RUNS);
    // Interleave, so that machine noise hits both alike.
    for _ in 0..RUNS {
        provider_samples.push(spawn_to_response(&provider));
        floor_samples.push(spawn_to_response(&floor));
    }
    let provider_median = median(&mut provider_samples);
    let floor_median = median(&mut floor_samples);
    let ratio = provider_median.as_secs_f64() / floor_median.as_secs_f64();
    println!("spawn-to-response, {RUNS} runs each, interleaved");
    println!("{:<42} {:>10} {:>10}", "", "median", "p90");
    println!(
        "{:<42} {:>8.0}us {:>8.0}us",
        "test provider (framework, create)",
        provider_median.as_secs_f64() * 1e6,
        percentile(&provider_samples, 0.9).as_secs_f64() * 1e6
    );
    println!(
        "{:<42} {:>8.0}us {:>8.0}us",
        "floor (fixed response line, no framework)",
        floor_median.as_secs_f64() * 1e6,
        percentile(&floor_samples, 0.9).as_secs_f64() * 1e6
    );
    println!(
        "ratio: {ratio:.2}x the floor (target: under 1.5x) {}",
        if ratio < 1.5 { "OK" } else { "OVER TARGET" }
    );
}
