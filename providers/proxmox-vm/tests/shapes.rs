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
