//! Replacing a record, spawn to result, next to what an operator would run
//! instead: `nsupdate` sending one signed UPDATE (delete the RRset, add the
//! new record) with the same key, to the same Knot DNS server (started
//! here on 127.0.0.1). The provider does more per replacement: it looks at
//! what is served first (ownership), sends the UPDATE, and queries again to
//! confirm; one process per replacement, as NixOps4 runs it.
//!
//! Run: `cargo bench -p fedi-dns-record --bench replace`.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kind, Server, ZONE};
use serde_json::json;

const RUNS: usize = 100;

fn address(i: usize) -> String {
    format!("192.0.2.{}", i % 250 + 1)
}

fn provider_replace(server: &Server, i: usize) -> Duration {
    let inputs = server.inputs("bench-provider", "A", &[&address(i)]);
    let request = json!({"createResourceRequest": {
        "type": "record", "inputProperties": inputs, "isStateful": false,
    }});
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedi-dns-record"))
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

fn nsupdate_replace(server: &Server, i: usize) -> Duration {
    let name = format!("bench-nsupdate.{ZONE}.");
    let script = format!(
        "server 127.0.0.1 {}\nzone {ZONE}\nupdate delete {name} A\nupdate add {name} 300 A {}\nsend\n",
        server.port,
        address(i)
    );
    let start = Instant::now();
    let mut child = Command::new("nsupdate")
        .arg("-y")
        .arg(format!("hmac-sha256:deploy:{}", server.deploy_secret))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("nsupdate is installed (bind9-dnsutils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    let status = child.wait().expect("wait");
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
    let server = Server::start(Kind::Knot);
    for i in 0..10 {
        provider_replace(&server, 1000 + i);
        nsupdate_replace(&server, 1000 + i);
    }
    let mut ours = Vec::with_capacity(RUNS);
    let mut theirs = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        ours.push(provider_replace(&server, i));
        theirs.push(nsupdate_replace(&server, i));
    }
    assert_eq!(server.dig("bench-provider", "A"), [address(RUNS - 1)]);
    assert_eq!(server.dig("bench-nsupdate", "A"), [address(RUNS - 1)]);
    let ours = median(&mut ours);
    let theirs = median(&mut theirs);
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    println!(
        "A record replacement on Knot DNS, TSIG hmac-sha256, spawn to result, {RUNS} runs each, interleaved (median)"
    );
    println!(
        "{:<60} {:>8.0}us",
        "fedi-dns-record create (look, UPDATE, confirm)",
        ours.as_secs_f64() * 1e6
    );
    println!(
        "{:<60} {:>8.0}us",
        "nsupdate -y ... (one UPDATE: delete RRset, add)",
        theirs.as_secs_f64() * 1e6
    );
    println!(
        "ratio: {ratio:.2}x nsupdate (target: no slower, <= 1.00x) {}",
        if ratio <= 1.0 { "OK" } else { "SLOWER" }
    );
}
