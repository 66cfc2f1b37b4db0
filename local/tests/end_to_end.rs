//! The README's main command as a test: `fedi-local` applies the example
//! panel to the local backends, applies the changed panel (PeerTube
//! disabled, Mastodon resized), and destroys everything. `fedi-local`
//! itself checks the backends against the state after each phase (and
//! fails when they differ); this test checks the report of what was done
//! and that no secret reached the output or the provider logs.
//!
//! Needs root (a private network namespace, mount namespaces for the
//! guests) and the provider binaries (`cargo test --workspace` builds them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn providers_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_fedi-local"))
        .parent()
        .unwrap()
        .to_path_buf();
    for provider in [
        "ssh-key",
        "garage-bucket",
        "proxmox-vm",
        "dns-record",
        "nixos-config",
    ] {
        assert!(
            dir.join(format!("fedi-{provider}")).is_file(),
            "fedi-{provider} is not built in {}: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
            dir.display()
        );
    }
    dir
}

fn names(phase: &Value, action: &str) -> BTreeSet<String> {
    phase["report"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["action"] == action)
        .map(|op| op["resource"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn apply_change_and_destroy_the_example_deployment() {
    let providers = providers_dir();
    let work = tempfile::tempdir().unwrap();
    let state_dir = work.path().join("run");
    let report_file = work.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_fedi-local"))
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--report")
        .arg(&report_file)
        .arg("--providers-dir")
        .arg(&providers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fedi-local failed:\n{stdout}\n{stderr}"
    );
    let phases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(phases.len(), 3);

    // 1. Everything of the three applications, created once each.
    let apps = ["mastodon", "pixelfed", "peertube"];
    let mut all = set(&["deployer-key"]);
    for app in apps {
        for suffix in ["vm", "s3-key", "dns-a", "dns-aaaa", "deployment"] {
            all.insert(format!("{app}-{suffix}"));
        }
    }
    for bucket in [
        "mastodon-media",
        "pixelfed-media",
        "peertube-streaming-playlists",
        "peertube-web-videos",
    ] {
        all.insert(format!("{bucket}-bucket"));
    }
    let first = &phases[0];
    assert_eq!(names(first, "create"), all);
    assert_eq!(
        first["report"]["operations"].as_array().unwrap().len(),
        all.len()
    );
    let checked = &first["checked"];
    assert_eq!(
        strings(&checked["vms"]),
        [
            "mastodon-alice-fedi-test",
            "peertube-alice-fedi-test",
            "pixelfed-alice-fedi-test"
        ]
    );
    assert_eq!(
        strings(&checked["buckets"]),
        [
            "alice-fedi-test-mastodon-media",
            "alice-fedi-test-peertube-streaming-playlists",
            "alice-fedi-test-peertube-web-videos",
            "alice-fedi-test-pixelfed-media"
        ]
    );
    assert_eq!(strings(&checked["keys"]).len(), 3);
    assert_eq!(strings(&checked["records"]).len(), 6);
    assert_eq!(strings(&checked["deployments"]).len(), 3);
    assert_eq!(
        first["report"]["urls"]["pixelfed"], "https://photos.alice.fedi.test",
        "the panel's subdomain is used"
    );

    // 2. PeerTube disabled, Mastodon resized: exactly that happens.
    let second = &phases[1];
    assert_eq!(names(second, "update"), set(&["mastodon-vm"]));
    assert_eq!(names(second, "create"), BTreeSet::new());
    let peertube: BTreeSet<String> = all
        .iter()
        .filter(|n| n.starts_with("peertube-"))
        .cloned()
        .collect();
    assert_eq!(names(second, "delete"), peertube);
    let unchanged: BTreeSet<String> = strings(&second["report"]["unchanged"])
        .into_iter()
        .collect();
    let untouched: BTreeSet<String> = all
        .iter()
        .filter(|n| !n.starts_with("peertube-") && *n != "mastodon-vm")
        .cloned()
        .collect();
    assert_eq!(unchanged, untouched, "nothing else is touched");
    let checked = &second["checked"];
    assert_eq!(
        strings(&checked["vms"]),
        ["mastodon-alice-fedi-test", "pixelfed-alice-fedi-test"]
    );
    assert!(
        strings(&checked["buckets"])
            .iter()
            .all(|b| !b.contains("peertube")),
        "PeerTube's buckets are gone: {checked}"
    );
    assert_eq!(strings(&checked["records"]).len(), 4);
    let after_change = stdout.split("== apply changed panel").nth(1).unwrap();
    assert!(
        after_change
            .lines()
            .any(|l| l.contains("VM       mastodon-alice-fedi-test")
                && l.ends_with(", 4 cores, 8192 MiB)")),
        "Mastodon is medium now:\n{stdout}"
    );

    // 3. Destroy: every resource deleted once, nothing left anywhere.
    let third = &phases[2];
    assert_eq!(
        names(third, "delete"),
        untouched.union(&set(&["mastodon-vm"])).cloned().collect()
    );
    for kind in ["vms", "buckets", "keys", "records", "deployments"] {
        assert_eq!(
            third["checked"][kind],
            serde_json::json!([]),
            "{kind} left behind"
        );
    }
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(state_dir.join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["resources"], serde_json::json!({}));

    // fedi-local checked its provider logs for every secret of the run
    // after each phase; the output has none of them either.
    // At least: three backend tokens, the admin password, three S3 secrets
    // and the deployer key's lines.
    let counted: Vec<usize> = stdout
        .lines()
        .filter_map(|l| {
            l.split("none of the run's ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(counted.len(), 3, "one secret check per phase:\n{stdout}");
    assert!(
        counted.iter().all(|n| *n >= 8),
        "secrets checked: {counted:?}"
    );
    let admin_password =
        std::fs::read_to_string(state_dir.join("secrets/alice-fedi-test-admin-password")).unwrap();
    for secret in [
        admin_password.trim(),
        fedi_testbeds::pve::TOKEN_SECRET,
        fedi_testbeds::garage::ADMIN_TOKEN,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret leaked"
        );
    }
}
