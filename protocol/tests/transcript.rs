//! Transcript fixtures: every operation of the test provider, recorded and
//! checked with insta; and the generated Nix module and reference page.

mod common;

use common::test_provider;
use fedi_protocol::docgen;
use fedi_protocol::testkit::Redactions;
use serde_json::json;

#[test]
fn every_operation_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let provider = test_provider().recording();
    let file = json!({"path": dir.path().join("f.txt"), "contents": "one"});
    let outputs = provider.create("file", file.clone(), false).outputs();
    provider.read("file", file.clone(), outputs.clone());
    let changed = json!({"path": dir.path().join("f.txt"), "contents": "three"});
    let outputs = provider
        .update("file", changed.clone(), file, outputs)
        .outputs();
    provider.delete("file", changed, outputs);
    let counter = provider
        .create("counter", json!({"step": 2}), true)
        .outputs();
    provider.update("counter", json!({"step": 5}), json!({"step": 2}), counter);
    provider.create("counter", json!({"step": 2}), false);
    let state = json!({"path": dir.path().join("state.jsonl")});
    provider.state_event(
        "state_file",
        state.clone(),
        json!({}),
        "create",
        json!([{"op": "add", "path": "", "value": {"_type": "nixopsState", "resources": {}, "deployments": {}}}]),
    );
    provider.state_read("state_file", state, json!({}));
    provider.create("misbehave", json!({"fail": "conflict"}), false);

    let redactions = Redactions::new().path(dir.path(), "[TMP]");
    insta::assert_snapshot!(provider.transcript().to_jsonl(&redactions));
}

#[test]
fn generated_nix_module_and_markdown() {
    let schema = test_provider().provider_schema();
    insta::assert_snapshot!("test-provider.nix", docgen::nix_module(&schema));
    insta::assert_snapshot!("test-provider.md", docgen::markdown(&schema));
}

#[test]
fn redactions_replace_keys_and_paths() {
    let redactions = Redactions::new()
        .key("fingerprint", "[fp]")
        .text("/tmp/abc", "[TMP]");
    let value =
        redactions.apply(json!({"a": [{"fingerprint": "SHA256:xyz", "path": "/tmp/abc/key"}]}));
    assert_eq!(
        value,
        json!({"a": [{"fingerprint": "[fp]", "path": "[TMP]/key"}]})
    );
}
