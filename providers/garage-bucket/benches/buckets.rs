//! Creating N buckets, each with an access key granted read and write on it,
//! against one real Garage server: through this provider (one process per
//! resource, as NixOps4 runs it) versus the `garage` CLI doing the same
//! (`bucket create`, `key create`, `bucket allow`). Prints both and the ratio.
//!
//! Run: `cargo bench -p fedi-garage-bucket --bench buckets` (needs `garage`
//! installed, see tests/install-deps.sh).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

const N: usize = 20;

fn with_provider(garage: &common::GarageServer) -> Duration {
    let provider = common::provider();
    let start = Instant::now();
    for i in 0..N {
        let name = format!("ours-{i}");
        let bucket = provider
            .create(
                "bucket",
                json!({"garage": garage.connection(), "name": name}),
                true,
            )
            .outputs();
        provider
            .create(
                "key",
                json!({
                    "garage": garage.connection(),
                    "name": name,
                    "secretKeyPath": garage.dir.path().join(format!("keys/{name}")),
                    // Wired from the bucket's output, as a deployment does.
                    "permissions": [{"bucket": bucket["bucketId"], "read": true, "write": true}],
                }),
                true,
            )
            .outputs();
    }
    start.elapsed()
}

fn with_cli(garage: &common::GarageServer) -> Duration {
    let config = garage.dir.path().join("garage.toml");
    let run = |args: &[&str]| {
        let output = Command::new("garage")
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .expect("garage CLI");
        assert!(
            output.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let start = Instant::now();
    for i in 0..N {
        let name = format!("cli-{i}");
        run(&["bucket", "create", &name]);
        run(&["key", "create", &name]);
        run(&[
            "bucket", "allow", "--read", "--write", &name, "--key", &name,
        ]);
    }
    start.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let garage = common::GarageServer::start();
    // Warm up both paths once.
    let _ = (with_provider(&garage), with_cli(&garage));
    let garage = common::GarageServer::start();
    let ours = with_provider(&garage);
    let cli = with_cli(&garage);
    println!("{N} buckets, each with a key granted read+write, against one Garage 2.x node");
    println!(
        "{:<52} {:>9.1} ms",
        "fedi-garage-bucket (2 processes per bucket)",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "{:<52} {:>9.1} ms",
        "garage CLI (3 commands per bucket)",
        cli.as_secs_f64() * 1e3
    );
    let ratio = ours.as_secs_f64() / cli.as_secs_f64();
    println!(
        "ratio: {ratio:.2}x the CLI (target: no slower, <= 1.00x) {}",
        if ratio <= 1.0 { "OK" } else { "SLOWER" }
    );
}
