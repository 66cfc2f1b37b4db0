//! The test server answers in the shapes of the real Proxmox VE API: its
//! bodies are compared with every recorded body in
//! `tests/fixtures/real-responses/` (same keys, same value types), and its
//! error, auth and task behaviour with the facts in the README there.

use fedi_testbeds::pve;

use std::path::Path;

use pve::{Pve, TOKEN_ID};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-responses");
    assert!(
        dir.join(name.replace(".json", ".source.txt")).exists(),
        "{name} has its source"
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences in shape between `real` and `ours`, at `path`. Members of
/// maps keyed by device (`blockstat`, `nics`) are compared by value shape.
fn differences(path: &str, real: &Value, ours: &Value, out: &mut Vec<String>) {
    if kind(real) != kind(ours) {
        out.push(format!(
            "{path}: {} in the real answer, {} in ours",
            kind(real),
            kind(ours)
        ));
        return;
    }
    match (real, ours) {
        (Value::Object(r), Value::Object(o))
            if path.ends_with("blockstat") || path.ends_with("nics") =>
        {
            let sample = r.values().next().unwrap();
            for (k, v) in o {
                differences(&format!("{path}.{k}"), sample, v, out);
            }
        }
        (Value::Object(r), Value::Object(o)) => {
            for (k, v) in r {
                match o.get(k) {
                    Some(ov) => differences(&format!("{path}.{k}"), v, ov, out),
                    None => out.push(format!("{path}.{k}: missing in ours")),
                }
            }
            for k in o.keys().filter(|k| !r.contains_key(*k)) {
                out.push(format!("{path}.{k}: not in the real answer"));
            }
        }
        (Value::Array(r), Value::Array(o)) => {
            if let Some(sample) = r.first() {
                for (i, v) in o.iter().enumerate() {
                    differences(&format!("{path}[{i}]"), sample, v, out);
                }
            }
        }
        _ => {}
    }
}

fn assert_same_shape(name: &str, ours: &Value) {
    let mut out = Vec::new();
    differences("", &fixture(name), ours, &mut out);
    assert!(out.is_empty(), "{name}:\n{}", out.join("\n"));
}

#[test]
fn bodies_have_the_shapes_of_the_real_api() {
    let pve = Pve::start();
    let (status, _, version) = pve.api("GET", "version");
    assert_eq!(status, 200);
    assert_same_shape("version.bpg-test-fixture.json", &version);
    let (_, _, nodes) = pve.api("GET", "nodes");
    assert_same_shape("nodes.json", &nodes);

    // A running VM with its guest booted.
    let (_, _, upid) = pve.api("POST", "nodes/pve1/qemu/9000/clone?newid=101&name=matt");
    assert!(upid["data"].as_str().unwrap().starts_with("UPID:pve1:"));
    pve.wait_idle();
    pve.api("POST", "nodes/pve1/qemu/101/status/start");
    pve.wait_idle();
    let (_, _, current) = pve.api("GET", "nodes/pve1/qemu/101/status/current");
    assert_same_shape("qemu-status-current.running.json", &current);

    // Errors: text in the reason phrase, `{"data": null}`, and `message`
    // repeating it (newer versions) or not (older ones).
    let (status, reason, body) = pve.api("GET", "nodes/pve1/qemu/555/config");
    assert_eq!(
        (status, reason.as_str()),
        (
            500,
            "Configuration file 'nodes/pve1/qemu-server/555.conf' does not exist"
        )
    );
    assert_same_shape("error-500-with-message.bpg-test-fixture.json", &body);
    assert!(body["message"].as_str().unwrap().starts_with(&reason));
    pve.faults(|f| f.legacy_errors = true);
    let (_, _, body) = pve.api("GET", "nodes/pve1/qemu/555/config");
    assert_eq!(body, json!({"data": null}));
}

#[test]
fn behaves_like_the_real_api() {
    let pve = Pve::start();
    // Token checked.
    let (status, reason, body) = pve.raw("GET", "version", None);
    assert_eq!((status, reason.as_str()), (401, "No ticket"));
    assert_eq!(body["data"], Value::Null);
    let (status, _, _) = pve.raw("GET", "version", Some(&format!("{TOKEN_ID}=wrong")));
    assert_eq!(status, 401);
    // nextid is a string.
    assert_eq!(pve.api("GET", "cluster/nextid").2["data"], json!("100"));
    // A clone holds `lock: clone` until its task ends; config changes fail meanwhile.
    let (_, _, upid) = pve.api("POST", "nodes/pve1/qemu/9000/clone?newid=100&name=a");
    let upid = upid["data"].as_str().unwrap().to_string();
    let (_, _, config) = pve.api("GET", "nodes/pve1/qemu/100/config");
    assert_eq!(config["data"]["lock"], "clone");
    let (status, reason, _) = pve.api("POST", "nodes/pve1/qemu/100/config?cores=2");
    assert_eq!((status, reason.as_str()), (500, "VM is locked (clone)"));
    let (_, _, task) = pve.api("GET", &format!("nodes/pve1/tasks/{upid}/status"));
    assert_eq!(task["data"]["status"], "running");
    assert!(task["data"].get("exitstatus").is_none());
    pve.wait_idle();
    let (_, _, task) = pve.api("GET", &format!("nodes/pve1/tasks/{upid}/status"));
    assert_eq!(
        (
            task["data"]["status"].clone(),
            task["data"]["exitstatus"].clone()
        ),
        (json!("stopped"), json!("OK"))
    );
    // The VMID is taken now.
    let (status, reason, _) = pve.api("POST", "nodes/pve1/qemu/9000/clone?newid=100&name=b");
    assert_eq!(
        (status, reason.as_str()),
        (500, "VM 100 already exists on node 'pve1'")
    );
    // Digests: a stale one is refused.
    let (status, reason, _) = pve.api("POST", "nodes/pve1/qemu/100/config?cores=2&digest=0000");
    assert_eq!(
        (status, reason.as_str()),
        (500, "checksum mismatch (file change by other user?)")
    );
    // Shrinking is refused.
    let (status, reason, _) = pve.api("PUT", "nodes/pve1/qemu/100/resize?disk=scsi0&size=1G");
    assert_eq!(
        (status, reason.as_str()),
        (500, "shrinking disks is not supported")
    );
    // The guest agent answers 500 until the guest has booted.
    pve.api("POST", "nodes/pve1/qemu/100/status/start");
    pve.wait_idle();
    let (status, reason, _) = pve.api("GET", "nodes/pve1/qemu/100/agent/network-get-interfaces");
    assert_eq!(
        (status, reason.as_str()),
        (500, "QEMU guest agent is not running")
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let (status, _, agent) = pve.api("GET", "nodes/pve1/qemu/100/agent/network-get-interfaces");
    assert_eq!(status, 200);
    assert_eq!(agent["data"]["result"][1]["name"], "eth0");
    // 596 when injected.
    pve.faults(|f| f.unavailable = 1);
    assert_eq!(pve.api("GET", "version").0, 596);
    assert_eq!(pve.api("GET", "version").0, 200);
}

/// Behaviours taken from upstream's sources (each named in `pve.rs`):
/// pending changes, the clone's temporary config, clone refusals, unknown
/// keys, duplicate starts and destroys, both digest texts, both auth texts.
#[test]
fn follows_upstream_qemu_server() {
    let pve = Pve::start();
    pve.timing(|t| t.clone = std::time::Duration::from_millis(600));
    // clone_vm: only `lock: clone` until the first disk is copied; then
    // name and description, still locked; unlocked at the end.
    let (_, _, _) = pve.api(
        "POST",
        "nodes/pve1/qemu/9000/clone?newid=100&name=a&full=1&pool=operators",
    );
    let config = pve.api("GET", "nodes/pve1/qemu/100/config").2["data"].clone();
    assert_eq!(config["lock"], "clone");
    assert!(config.get("name").is_none(), "{config}");
    let resources = pve.api("GET", "cluster/resources").2["data"].clone();
    let entry = resources
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vmid"] == 100)
        .unwrap()
        .clone();
    assert_eq!(
        (entry["name"].clone(), entry["lock"].clone()),
        (json!("VM 100"), json!("clone"))
    );
    let active = pve
        .api(
            "GET",
            "nodes/pve1/tasks?source=active&typefilter=qmclone&vmid=9000",
        )
        .2["data"]
        .clone();
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["user"], TOKEN_ID);
    std::thread::sleep(std::time::Duration::from_millis(350));
    let config = pve.api("GET", "nodes/pve1/qemu/100/config").2["data"].clone();
    assert_eq!(
        (config["name"].clone(), config["lock"].clone()),
        (json!("a"), json!("clone"))
    );
    pve.wait_idle();
    let config = pve.api("GET", "nodes/pve1/qemu/100/config").2["data"].clone();
    assert!(config.get("lock").is_none());
    assert!(
        config["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-100-disk-0"),
        "full: {config}"
    );
    assert_eq!(pve.with(|s| s.pools["operators"].clone()), vec![100]);
    // Linked clones name their base; `storage` is refused for them, and
    // local storage cannot go to another node.
    pve.api("POST", "nodes/pve1/qemu/9000/clone?newid=101&name=b&full=0");
    pve.wait_idle();
    let config = pve.api("GET", "nodes/pve1/qemu/101/config").2["data"].clone();
    assert!(
        config["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:base-9000-disk-0/vm-101-disk-0"),
        "{config}"
    );
    let (status, reason, _) = pve.api(
        "POST",
        "nodes/pve1/qemu/9000/clone?newid=102&full=0&storage=fast",
    );
    assert_eq!(
        (status, reason.as_str()),
        (500, "parameter 'storage' not allowed for linked clones")
    );
    let (status, reason, _) = pve.api(
        "POST",
        "nodes/pve1/qemu/9000/clone?newid=102&full=1&target=pve2",
    );
    assert_eq!(
        (status, reason.as_str()),
        (500, "can't clone VM to node 'pve2' (VM uses local storage)")
    );
    // Parameters outside a method's schema, and bad booleans: 400.
    let (status, _, body) = pve.api("POST", "nodes/pve1/qemu/9000/clone?newid=102&fulll=1");
    assert_eq!(status, 400);
    assert!(body["errors"]["fulll"].is_string(), "{body}");
    let (status, _, body) = pve.api("POST", "nodes/pve1/qemu/9000/clone?newid=102&full=maybe");
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"]["full"],
        "type check ('boolean') failed - got 'maybe'"
    );
    // Unknown config keys: 400, naming the key.
    let (status, _, body) = pve.api("POST", "nodes/pve1/qemu/100/config?corse=2");
    assert_eq!(status, 400);
    assert!(
        body["errors"]["corse"]
            .as_str()
            .unwrap()
            .contains("not defined in schema"),
        "{body}"
    );
    // Pending: a running VM takes hot-pluggable changes at once and keeps
    // the rest pending until it stops or starts.
    pve.api("POST", "nodes/pve1/qemu/100/status/start");
    pve.wait_idle();
    let (status, _, _) = pve.api(
        "POST",
        "nodes/pve1/qemu/100/config?cores=4&memory=4096&tags=x&balloon=1024",
    );
    assert_eq!(status, 200);
    pve.wait_idle();
    let effective = pve.api("GET", "nodes/pve1/qemu/100/config").2["data"].clone();
    let current = pve.api("GET", "nodes/pve1/qemu/100/config?current=1").2["data"].clone();
    assert_eq!(
        (effective["cores"].clone(), effective["memory"].clone()),
        (json!(4), json!("4096"))
    );
    assert_eq!(
        (current["cores"].clone(), current["memory"].clone()),
        (json!(1), json!("2048"))
    );
    assert_eq!(
        (current["tags"].clone(), current["balloon"].clone()),
        (json!("x"), json!(1024)),
        "hot-pluggable"
    );
    let pending = pve.api("GET", "nodes/pve1/qemu/100/pending").2["data"].clone();
    let cores = pending
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "cores")
        .unwrap()
        .clone();
    assert_eq!(cores, json!({"key": "cores", "value": 1, "pending": 4}));
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "digest")
    );
    // A start sent again while running ends "already running".
    let (_, _, upid) = pve.api("POST", "nodes/pve1/qemu/100/status/start");
    pve.wait_idle();
    let task = pve
        .api(
            "GET",
            &format!("nodes/pve1/tasks/{}/status", upid["data"].as_str().unwrap()),
        )
        .2["data"]
        .clone();
    assert_eq!(task["exitstatus"], "VM 100 already running");
    pve.api("POST", "nodes/pve1/qemu/100/status/shutdown");
    pve.wait_idle();
    let current = pve.api("GET", "nodes/pve1/qemu/100/config?current=1").2["data"].clone();
    assert_eq!(
        (current["cores"].clone(), current["memory"].clone()),
        (json!(4), json!("4096")),
        "applied at stop"
    );
    // Digest texts: update_vm_api's, old and new.
    let (_, reason, _) = pve.api("POST", "nodes/pve1/qemu/100/config?cores=2&digest=00");
    assert_eq!(reason, "checksum mismatch (file change by other user?)");
    pve.faults(|f| f.old_texts = true);
    let (_, reason, _) = pve.api("POST", "nodes/pve1/qemu/100/config?cores=2&digest=00");
    assert_eq!(reason, "checksum missmatch (file change by other user?)");
    let (_, reason, _) = pve.api(
        "PUT",
        "nodes/pve1/qemu/100/resize?disk=scsi0&size=9G&digest=00",
    );
    assert_eq!(
        reason,
        "detected modified configuration - file changed by other user? Try again."
    );
    // A DELETE sent again while the first destroy runs ends "does not exist".
    pve.timing(|t| t.task = std::time::Duration::from_millis(300));
    pve.api("DELETE", "nodes/pve1/qemu/100");
    assert_eq!(pve.config(100).unwrap()["lock"], "destroyed");
    let (_, _, upid) = pve.api("DELETE", "nodes/pve1/qemu/100");
    pve.wait_idle();
    let task = pve
        .api(
            "GET",
            &format!("nodes/pve1/tasks/{}/status", upid["data"].as_str().unwrap()),
        )
        .2["data"]
        .clone();
    assert_eq!(
        task["exitstatus"],
        "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist"
    );
    assert!(pve.config(100).is_none());
    // Token failures: "Authentication failed!" since pve-manager 9.1.5.
    pve.faults(|f| f.unified_auth_errors = true);
    let (status, reason, _) = pve.raw("GET", "version", Some(&format!("{TOKEN_ID}=wrong")));
    assert_eq!((status, reason.as_str()), (401, "Authentication failed!"));
    // Lock timeouts as a task's exit status, doing nothing; counted.
    pve.faults(|f| {
        f.task_lock_timeouts.insert("qmconfig".into(), 1);
    });
    let (_, _, upid) = pve.api("POST", "nodes/pve1/qemu/101/config?cores=3");
    pve.wait_idle();
    let task = pve
        .api(
            "GET",
            &format!("nodes/pve1/tasks/{}/status", upid["data"].as_str().unwrap()),
        )
        .2["data"]
        .clone();
    assert_eq!(
        task["exitstatus"],
        "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
    );
    assert_eq!(
        pve.config(101).unwrap().get("cores"),
        Some(&json!(1)),
        "nothing changed"
    );
    assert_eq!(pve.fired("task_lock_timeout:qmconfig"), 1);
}
