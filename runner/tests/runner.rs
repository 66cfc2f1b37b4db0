//! The runner against the protocol crate's test provider, through the same
//! flags as the official `nixops4-resource-runner`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn test_provider() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/test-provider");
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`), which build it",
        path.display()
    );
    path
}

fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedi-resource-runner"))
        .args(args)
        .output()
        .unwrap()
}

fn json_stdout(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "runner failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn create_with_individual_inputs_then_read_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.txt");
    let exe = test_provider();
    let exe = exe.to_str().unwrap();
    let path_str = path.to_str().unwrap();
    let outputs = json_stdout(&runner(&[
        "create",
        "--provider-exe",
        exe,
        "--type",
        "file",
        "--input-str",
        "path",
        path_str,
        "--input-str",
        "contents",
        "hi there",
    ]));
    assert_eq!(outputs, json!({"size": 8}));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hi there");

    let inputs = json!({"path": path, "contents": "hi there"}).to_string();
    let read = json_stdout(&runner(&[
        "read",
        "--provider-exe",
        exe,
        "--type",
        "file",
        "--inputs-json",
        &inputs,
        "--outputs-json",
        "{\"size\":8}",
    ]));
    assert_eq!(
        read,
        json!({"exists": true, "outputProperties": {"size": 8}, "drift": []})
    );

    let deleted = json_stdout(&runner(&[
        "delete",
        "--provider-exe",
        exe,
        "--type",
        "file",
        "--inputs-json",
        &inputs,
        "--outputs-json",
        "{\"size\":8}",
    ]));
    assert_eq!(deleted, json!({}));
    assert!(!path.exists());
}

#[test]
fn stateful_create_and_update() {
    let exe = test_provider();
    let exe = exe.to_str().unwrap();
    let created = json_stdout(&runner(&[
        "create",
        "--provider-exe",
        exe,
        "--type",
        "counter",
        "--input-json",
        "step",
        "2",
        "--stateful",
    ]));
    assert_eq!(created, json!({"value": 2, "tokenLength": null}));
    let updated = json_stdout(&runner(&[
        "update",
        "--provider-exe",
        exe,
        "--type",
        "counter",
        "--inputs-json",
        "{\"step\": 3}",
        "--previous-inputs-json",
        "{\"step\": 2}",
        "--previous-outputs-json",
        &created.to_string(),
    ]));
    assert_eq!(updated, json!({"value": 5, "tokenLength": null}));
}

#[test]
fn provider_errors_go_to_stderr_with_failure_status() {
    let exe = test_provider();
    let output = runner(&[
        "create",
        "--provider-exe",
        exe.to_str().unwrap(),
        "--type",
        "counter",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: counter: invalid input `state`"),
        "{stderr}"
    );
}

#[test]
fn duplicate_inputs_are_refused() {
    let exe = test_provider();
    let output = runner(&[
        "create",
        "--provider-exe",
        exe.to_str().unwrap(),
        "--type",
        "counter",
        "--inputs-json",
        "{\"step\": 1}",
        "--input-json",
        "step",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("duplicate input: step"));
}

#[test]
fn missing_provider_is_a_clear_error() {
    let output = runner(&[
        "create",
        "--provider-exe",
        "/nonexistent/provider",
        "--type",
        "x",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot start provider `/nonexistent/provider`"),
        "{stderr}"
    );
}

#[test]
fn state_event_then_state_read() {
    let dir = tempfile::tempdir().unwrap();
    let exe = test_provider();
    let exe = exe.to_str().unwrap();
    let inputs = json!({"path": dir.path().join("s.jsonl")}).to_string();
    let patch = json!([{"op": "add", "path": "", "value": {"_type": "nixopsState", "resources": {}, "deployments": {}}}]).to_string();
    json_stdout(&runner(&[
        "state-event",
        "--provider-exe",
        exe,
        "--type",
        "state_file",
        "--inputs-json",
        &inputs,
        "--outputs-json",
        "{}",
        "--event",
        "create",
        "--nixops-version",
        "0.0.0",
        "--patch-json",
        &patch,
    ]));
    let state = json_stdout(&runner(&[
        "state-read",
        "--provider-exe",
        exe,
        "--type",
        "state_file",
        "--inputs-json",
        &inputs,
        "--outputs-json",
        "{}",
    ]));
    assert_eq!(
        state,
        json!({"_type": "nixopsState", "resources": {}, "deployments": {}})
    );
}

#[test]
fn generate_writes_module_and_reference_page() {
    let dir = tempfile::tempdir().unwrap();
    let nix_dir = dir.path().join("nix");
    let doc_dir = dir.path().join("doc");
    let output = runner(&[
        "generate",
        "--provider-exe",
        test_provider().to_str().unwrap(),
        "--nix-dir",
        nix_dir.to_str().unwrap(),
        "--doc-dir",
        doc_dir.to_str().unwrap(),
    ]);
    json_stdout(&output);
    let module = std::fs::read_to_string(nix_dir.join("test.nix")).unwrap();
    assert!(module.contains("resourceTypes = {"), "{module}");
    assert!(module.contains("requireState = true;"));
    let page = std::fs::read_to_string(doc_dir.join("test.md")).unwrap();
    assert!(page.contains("## Resource type `counter`"), "{page}");
}
