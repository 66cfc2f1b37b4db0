//! Recorded fixtures: a session recorded against the test server
//! (`FEDI_PROXMOX_RECORD`) replays (`FEDI_PROXMOX_REPLAY`) without any
//! server to the same outcomes, with the token scrubbed from the cassette.
//!
//! The shipped recording, `tests/fixtures/recordings/session.json`, and the
//! outcomes of the live run it was recorded in, `session.expected.json`,
//! are rewritten by `FEDI_REGENERATE=1 cargo test -p fedi-proxmox-vm
//! --test recordings`.

use fedi_testbeds::pve;

use std::path::{Path, PathBuf};

use fedi_protocol::testkit::Harness;
use pve::{Pve, TOKEN_SECRET};
use serde_json::{Value, json};

const RECORD: &str = "FEDI_PROXMOX_RECORD";
const REPLAY: &str = "FEDI_PROXMOX_REPLAY";
const PART: &str = "FEDI_PROXMOX_REPLAY_PART";

fn provider() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_fedi-proxmox-vm"))
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recordings")
}

fn inputs(connection: &Value, name: &str) -> Value {
    json!({
        "proxmox": connection,
        "node": "pve1",
        "template": {"name": "debian-12"},
        "name": name,
        "tags": ["fediversity", "alice"],
        "cores": 2,
        "memory": 2048,
        "disks": [{"slot": "scsi0", "sizeGib": 8}],
        "networks": [{"bridge": "vmbr0"}, {"bridge": "vmbr1", "mac": "BC:24:11:AA:BB:CC"}],
        "cloudInit": {
            "user": "deployer",
            "ipConfigs": [{"ipv4": "192.0.2.10/24", "gateway4": "192.0.2.1", "ipv6": "2001:db8::10/64"}, {"ipv4": "dhcp"}],
        },
        "timeouts": {"agentSeconds": 10, "cloneSeconds": 20, "taskSeconds": 10, "shutdownSeconds": 2},
    })
}

/// The session: create (after one lock timeout), read, update in place,
/// a create refused by a lock that stays taken, delete. `part(n)` is the
/// provider for the n-th process; `before(n)` runs before it.
fn session(connection: &Value, part: impl Fn(u32) -> Harness, before: impl Fn(u32)) -> Value {
    let declared = inputs(connection, "web1");
    before(1);
    let created = part(1).create("vm", declared.clone(), true).outputs();
    before(2);
    let read = part(2)
        .read("vm", declared.clone(), created.clone())
        .body("xReadResourceResponse");
    let mut changed = declared.clone();
    changed["cores"] = json!(4);
    changed["disks"][0]["sizeGib"] = json!(12);
    before(3);
    let updated = part(3)
        .update("vm", changed.clone(), declared, created.clone())
        .outputs();
    before(4);
    let refused = part(4)
        .create("vm", inputs(connection, "web2"), true)
        .error_message();
    before(5);
    let deleted = part(5)
        .delete("vm", changed, updated.clone())
        .body("xDeleteResourceResponse");
    json!({"created": created, "read": read, "updated": updated, "refused": refused, "deleted": deleted})
}

/// Replays `cassette` with a connection to nowhere and another token.
fn replay(cassette: &Path) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "not-the-recorded-token\n").unwrap();
    let pin = ["00"; 32].join(":");
    let connection = json!({
        "endpoint": "https://pve.replay.invalid:8006",
        "tokenId": "replayer@pve!test",
        "tokenSecret": {"file": token},
        "fingerprint": pin,
    });
    session(
        &connection,
        |n| {
            provider()
                .env(REPLAY, cassette.to_str().unwrap())
                .env(PART, &n.to_string())
        },
        |_| {},
    )
}

/// What a session's outcomes must show, live or replayed.
fn check_outcomes(outcomes: &Value) {
    let created = &outcomes["created"];
    assert!(created["vmid"].as_u64().unwrap() >= 100, "{created}");
    assert_eq!(created["ipv4Addresses"], json!(["192.0.2.10"]), "{created}");
    assert_eq!(
        created["ipv6Addresses"],
        json!(["2001:db8::10"]),
        "{created}"
    );
    let macs = created["macAddresses"].as_array().unwrap();
    assert_eq!(macs.len(), 2, "{created}");
    assert_eq!(macs[1], "BC:24:11:AA:BB:CC");
    assert!(
        created["sshHostKey"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 "),
        "{created}"
    );
    assert_eq!(outcomes["read"]["drift"], json!([]), "{outcomes}");
    assert_eq!(outcomes["updated"]["vmid"], created["vmid"]);
    let refused = outcomes["refused"].as_str().unwrap();
    assert!(
        refused.contains("can't lock file '/var/lock/qemu-server/lock-")
            && refused.contains("got timeout"),
        "the reason phrase is kept: {refused}"
    );
}

fn assert_scrubbed(cassette: &str, pve_port: Option<u16>) {
    assert!(!cassette.contains(TOKEN_SECRET), "the token secret leaked");
    assert!(cassette.contains("PVEAPIToken=<scrubbed>"), "placeholder");
    assert!(
        !cassette.contains("deployer@pve!fedi="),
        "token id and secret"
    );
    if let Some(port) = pve_port {
        assert!(!cassette.contains(&format!(":{port}")), "no test port");
    }
    assert!(!cassette.contains("https://127.0.0.1"), "no endpoint");
    assert!(
        cassette.contains("https://pve.recorded.invalid/api2/json/"),
        "placeholder host"
    );
}

#[test]
fn a_recorded_session_replays_without_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("session.json");
    let outcomes;
    let port;
    {
        let pve = Pve::start();
        port = pve.port;
        let record = provider().env(RECORD, cassette.to_str().unwrap());
        outcomes = session(
            &pve.connection(),
            |_| record.clone(),
            |n| match n {
                1 => pve.faults(|f| f.lock_timeouts = 1),
                4 => pve.faults(|f| f.lock_timeouts = 5),
                _ => {}
            },
        );
        assert!(pve.vm_ids().iter().all(|id| *id >= 9000), "deleted");
        // The server is dropped here: the replay has nothing to talk to.
    }
    check_outcomes(&outcomes);
    let text = std::fs::read_to_string(&cassette).unwrap();
    assert_scrubbed(&text, Some(port));
    let recorded: Value = serde_json::from_str(&text).unwrap();
    let parts: std::collections::BTreeSet<&str> = recorded["http_interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["request"]["headers"]["x-fedi-recording-part"][0]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(parts.len(), 5, "one part per provider process: {parts:?}");
    assert!(
        recorded["http_interactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("got timeout")),
        "the reason phrase is the recorded status message"
    );

    let replayed = replay(&cassette);
    assert_eq!(replayed, outcomes, "replay gives what the live run gave");

    if std::env::var("FEDI_REGENERATE").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(shipped()).unwrap();
        std::fs::write(shipped().join("session.json"), &text).unwrap();
        std::fs::write(
            shipped().join("session.expected.json"),
            serde_json::to_string_pretty(&outcomes).unwrap() + "\n",
        )
        .unwrap();
    }
}

#[test]
fn the_shipped_recording_replays_to_the_live_outcomes() {
    let cassette = shipped().join("session.json");
    let text = std::fs::read_to_string(&cassette).unwrap();
    assert_scrubbed(&text, None);
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(shipped().join("session.expected.json")).unwrap(),
    )
    .unwrap();
    check_outcomes(&expected);
    assert_eq!(replay(&cassette), expected);
}

#[test]
fn a_replay_that_asks_something_else_fails_clearly() {
    let cassette = shipped().join("session.json");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "x\n").unwrap();
    let connection = json!({
        "endpoint": "https://pve.replay.invalid:8006",
        "tokenId": "replayer@pve!test",
        "tokenSecret": {"file": token},
    });
    let player = provider().env(REPLAY, cassette.to_str().unwrap());
    // Several parts and none chosen.
    let message = player
        .create("vm", inputs(&connection, "web1"), true)
        .error_message();
    assert!(message.contains("5 parts"), "{message}");
    // Other inputs than recorded: no answer in the cassette, no network.
    let mut other = inputs(&connection, "web1");
    other["name"] = json!("elsewhere");
    let message = player
        .env(PART, "1")
        .create("vm", other, true)
        .error_message();
    assert!(
        message.contains("the cassette has no answer to GET "),
        "{message}"
    );
}
