//! Spawn-to-response for an ed25519 `create`, next to what a user would run
//! instead: `ssh-keygen -t ed25519 -N '' -f <path>`. Both write a new key
//! file; the provider also answers the protocol and computes the outputs.
//!
//! Run: `cargo bench -p fedi-ssh-key --bench create`.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 200;

fn provider_create(dir: &Path, i: usize) -> Duration {
    let path = dir.join(format!("provider-{i}"));
    let request = format!(
        r#"{{"createResourceRequest":{{"type":"keypair","inputProperties":{{"privateKeyPath":"{}"}},"isStateful":true}}}}"#,
        path.display()
    );
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedi-ssh-key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn provider");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{request}").expect("write");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let elapsed = start.elapsed();
    assert!(line.contains("createResourceResponse"), "{line}");
    drop(stdin);
    assert!(child.wait().expect("wait").success());
    elapsed
}

fn ssh_keygen(dir: &Path, i: usize) -> Duration {
    let path = dir.join(format!("keygen-{i}"));
    let start = Instant::now();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen is installed");
    let elapsed = start.elapsed();
    assert!(status.success());
    elapsed
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..10 {
        provider_create(dir.path(), 10_000 + i);
        ssh_keygen(dir.path(), 10_000 + i);
    }
    let mut ours = Vec::with_capacity(RUNS);
    let mut theirs = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        ours.push(provider_create(dir.path(), i));
        theirs.push(ssh_keygen(dir.path(), i));
    }
    let ours = median(&mut ours);
    let theirs = median(&mut theirs);
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    println!("ed25519 key creation, spawn to result, {RUNS} runs each, interleaved (median)");
    println!(
        "{:<52} {:>8.0}us",
        "fedi-ssh-key create (protocol request/response)",
        ours.as_secs_f64() * 1e6
    );
    println!(
        "{:<52} {:>8.0}us",
        "ssh-keygen -t ed25519 -N '' -f ...",
        theirs.as_secs_f64() * 1e6
    );
    println!(
        "ratio: {ratio:.2}x ssh-keygen (target: no slower, <= 1.00x) {}",
        if ratio <= 1.0 { "OK" } else { "SLOWER" }
    );
}
