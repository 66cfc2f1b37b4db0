//! The framework as NixOps4 sees it: the test provider run as a process, one
//! request per process, every message checked against the official schema.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{example_exe, test_provider};
use fedi_protocol::testkit::{Direction, SchemaValidator};
use serde_json::{Value, json};

#[test]
fn stateless_file_create_is_idempotent_and_delete_read_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.txt");
    let provider = test_provider();
    let inputs = json!({"path": path, "contents": "hello"});

    let first = provider.create("file", inputs.clone(), false).outputs();
    assert_eq!(first, json!({"size": 5}));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    // Stateless resources are created on every apply.
    let again = provider.create("file", inputs.clone(), false).outputs();
    assert_eq!(again, first);

    let read = provider
        .read("file", inputs.clone(), first.clone())
        .body("xReadResourceResponse");
    assert_eq!(
        read,
        json!({"exists": true, "outputProperties": {"size": 5}, "drift": []})
    );

    std::fs::write(&path, "changed behind our back").unwrap();
    let read = provider
        .read("file", inputs.clone(), first.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"][0]["property"], "contents");

    provider
        .delete("file", inputs.clone(), first.clone())
        .body("xDeleteResourceResponse");
    assert!(!path.exists());
    // Deleting what is gone succeeds.
    provider
        .delete("file", inputs.clone(), first.clone())
        .body("xDeleteResourceResponse");
    let read = provider
        .read("file", inputs, first)
        .body("xReadResourceResponse");
    assert_eq!(read, json!({"exists": false, "drift": []}));
}

#[test]
fn stateful_counter_create_then_update_uses_previous_outputs() {
    let provider = test_provider();
    let created = provider
        .create("counter", json!({"step": 3}), true)
        .outputs();
    // `tokenLength` is unset and its type skips it, yet it is in the
    // response: NixOps4 knows only the outputs a provider returned.
    assert_eq!(created, json!({"value": 3, "tokenLength": null}));
    let updated = provider
        .update(
            "counter",
            json!({"step": 4, "label": "x"}),
            json!({"step": 3}),
            created,
        )
        .outputs();
    assert_eq!(updated, json!({"value": 7, "tokenLength": null}));
}

#[test]
fn require_state_without_state_says_to_add_one() {
    let message = test_provider()
        .create("counter", json!({}), false)
        .error_message();
    assert!(message.contains("requires state"), "{message}");
    assert!(message.contains("give the resource a `state`"), "{message}");
}

#[test]
fn unknown_resource_type_lists_the_supported_ones() {
    let message = test_provider()
        .create("nope", json!({}), false)
        .error_message();
    assert_eq!(
        message,
        "unknown resource type `nope`: provider `test` supports `counter`, `file`, `misbehave`, `state_file`"
    );
}

#[test]
fn unknown_input_field_is_named_with_the_valid_ones() {
    let message = test_provider()
        .create("counter", json!({"stepp": 2}), true)
        .error_message();
    assert!(
        message.starts_with("counter: invalid input `stepp`: unknown field"),
        "{message}"
    );
    assert!(
        message.contains("use one of: label, step, token"),
        "{message}"
    );
}

#[test]
fn unknown_nested_input_field_is_named_by_path() {
    let message = test_provider()
        .create("counter", json!({"token": {"file": "/x", "mode": 1}}), true)
        .error_message();
    assert!(message.contains("`token`"), "{message}");
    assert!(message.contains("unknown field `mode`"), "{message}");
}

#[test]
fn missing_and_mistyped_fields_are_named_with_the_expected_type() {
    let provider = test_provider();
    let missing = provider
        .create("file", json!({"path": "/tmp/x"}), false)
        .error_message();
    assert_eq!(
        missing,
        "file: invalid input `contents`: missing field `contents`\nhint: set `contents` (a string)"
    );
    let mistyped = provider
        .create("counter", json!({"step": "four"}), true)
        .error_message();
    assert!(mistyped.contains("invalid input `step`"), "{mistyped}");
    assert!(mistyped.contains("expected u64"), "{mistyped}");
    assert!(mistyped.contains("(an integer)"), "{mistyped}");
}

#[test]
fn null_inputs_count_as_absent() {
    // Nix options left at `default = null` arrive as null.
    let outputs = test_provider()
        .create("counter", json!({"step": null, "label": null}), true)
        .outputs();
    assert_eq!(outputs, json!({"value": 1, "tokenLength": null}));
}

#[test]
fn secrets_are_read_from_files_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("token");
    std::fs::write(&secret_path, "super-secret-token-value\n").unwrap();
    let provider = test_provider().env("FEDI_LOG", "trace");
    let exchange = provider.create("counter", json!({"token": {"file": secret_path}}), true);
    assert_eq!(exchange.outputs()["tokenLength"], 24);
    assert!(
        exchange.stderr.contains("read the token"),
        "the debug line was logged: {}",
        exchange.stderr
    );
    assert!(
        !exchange.stderr.contains("super-secret"),
        "{}",
        exchange.stderr
    );
    assert!(!exchange.response.to_string().contains("super-secret"));

    let literal = provider.create(
        "counter",
        json!({"token": "super-secret-token-value"}),
        true,
    );
    let message = literal.error_message();
    assert!(message.contains("never given literally"), "{message}");
    assert!(!message.contains("super-secret"), "{message}");
    assert!(
        !literal.stderr.contains("super-secret"),
        "{}",
        literal.stderr
    );

    let missing = provider
        .create(
            "counter",
            json!({"token": {"env": "FEDI_TEST_UNSET_TOKEN"}}),
            true,
        )
        .error_message();
    assert!(
        missing.contains(
            "invalid input `token`: environment variable `FEDI_TEST_UNSET_TOKEN` is not set"
        ),
        "{missing}"
    );
}

#[test]
fn error_kinds_render_with_cause_and_hint() {
    let provider = test_provider();
    let expected = [
        ("invalidInput", "invalid input"),
        ("notFound", "not found"),
        ("conflict", "conflict"),
        ("unavailable", "backend unavailable (retryable)"),
        ("permissionDenied", "permission denied"),
        ("internal", "internal error"),
    ];
    for (kind, label) in expected {
        let message = provider
            .create("misbehave", json!({"fail": kind}), false)
            .error_message();
        assert_eq!(
            message,
            format!("misbehave: {label}: asked to fail: the underlying cause\nhint: do not ask")
        );
    }
}

#[test]
fn unsupported_operations_answer_with_an_error() {
    let provider = test_provider();
    let delete = provider
        .delete("counter", json!({}), json!({"value": 1}))
        .error_message();
    assert_eq!(
        delete,
        "counter: unsupported operation: resource type `counter` does not implement `xDeleteResourceRequest`"
    );
    let read = provider
        .read("counter", json!({}), json!({"value": 1}))
        .error_message();
    assert!(
        read.contains("does not implement `xReadResourceRequest`"),
        "{read}"
    );
    let state = provider
        .state_read("counter", json!({}), json!({"value": 1}))
        .error_message();
    assert!(state.contains("is not a state storage"), "{state}");
}

#[test]
fn update_without_recorded_outputs_is_explained() {
    let exchange = test_provider().send(json!({"updateResourceRequest": {
        "resource": {"type": "counter", "inputProperties": {}},
        "inputProperties": {"step": 1},
    }}));
    let message = exchange.error_message();
    assert!(
        message.contains("`resource.outputProperties`: the recorded resource has no outputs"),
        "{message}"
    );
}

#[test]
fn a_stray_print_goes_to_stderr_not_the_protocol_channel() {
    let exchange =
        test_provider().create("misbehave", json!({"print": "GARBAGE ON STDOUT"}), false);
    // Harness::send already asserted that stdout held exactly one valid line.
    assert_eq!(
        exchange.response,
        json!({"createResourceResponse": {"outputProperties": {}}})
    );
    assert!(
        exchange.stderr.contains("GARBAGE ON STDOUT"),
        "{}",
        exchange.stderr
    );
}

#[test]
fn a_panic_becomes_an_error_response() {
    let exchange = test_provider().create("misbehave", json!({"panic": true}), false);
    let message = exchange.error_message();
    assert!(
        message.contains("the provider panicked (asked to panic)"),
        "{message}"
    );
}

/// Runs the provider with raw stdin bytes, returning (stdout lines, status).
fn run_raw(input: &[u8]) -> (Vec<String>, std::process::ExitStatus, String) {
    let mut child = Command::new(example_exe("test-provider"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Write from a thread: the provider answers while we are still writing.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    let lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    for line in &lines {
        let value: Value = serde_json::from_str(line).unwrap();
        SchemaValidator::get().assert_valid(Direction::Response, &value);
    }
    (
        lines,
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn eof_without_any_request_is_a_clean_exit() {
    let (lines, status, _) = run_raw(b"");
    assert!(lines.is_empty());
    assert!(status.success());
}

#[test]
fn many_requests_in_one_process_each_get_one_answer_even_bad_ones() {
    let mut input = Vec::new();
    input.extend_from_slice(b"this is not json\n");
    input.extend_from_slice(b"[\"an array\"]\n");
    input.extend_from_slice(b"\xc3\x28 invalid utf-8\n");
    input.extend_from_slice(b"{\"launchMissiles\": {}}\n");
    input.extend_from_slice(b"{\"createResourceRequest\":{\"type\":\"counter\",\"inputProperties\":{},\"isStateful\":true}}\n");
    let (lines, status, _) = run_raw(&input);
    assert!(status.success());
    assert_eq!(lines.len(), 5, "{lines:?}");
    let messages: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        messages[0]["errorResponse"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(
        messages[1]["errorResponse"]["message"]
            .as_str()
            .unwrap()
            .contains("array, not an object")
    );
    assert!(
        messages[2]["errorResponse"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid UTF-8")
    );
    assert!(
        messages[3]["errorResponse"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown request kind `launchMissiles`")
    );
    assert_eq!(
        messages[4],
        json!({"createResourceResponse": {"outputProperties": {"value": 1, "tokenLength": null}}})
    );
}

#[test]
fn an_absurdly_long_line_is_refused_without_killing_the_provider() {
    let mut input = Vec::with_capacity(fedi_protocol::MAX_LINE_BYTES + 200);
    input.extend_from_slice(
        b"{\"createResourceRequest\":{\"type\":\"file\",\"inputProperties\":{\"contents\":\"",
    );
    input.resize(fedi_protocol::MAX_LINE_BYTES + 100, b'a');
    input.extend_from_slice(b"\"}}}\n");
    input.extend_from_slice(b"{\"createResourceRequest\":{\"type\":\"counter\",\"inputProperties\":{},\"isStateful\":true}}\n");
    let (lines, status, _) = run_raw(&input);
    assert!(status.success());
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("too long"), "{}", lines[0]);
    assert!(lines[1].contains("createResourceResponse"));
}

#[test]
fn state_storage_answers_many_events_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.jsonl");
    let resource =
        json!({"type": "state_file", "inputProperties": {"path": path}, "outputProperties": {}});
    let events = [
        json!([{"op": "add", "path": "", "value": {"_type": "nixopsState", "resources": {}, "deployments": {}}}]),
        json!([{"op": "add", "path": "/resources/a", "value": {"type": "file", "inputProperties": {}}}]),
        json!([{"op": "add", "path": "/resources/b", "value": {"type": "counter", "inputProperties": {}}}]),
        json!([{"op": "remove", "path": "/resources/a"}]),
    ];
    let mut input = String::new();
    for patch in &events {
        let request = json!({"stateResourceEvent": {"resource": resource, "event": "apply", "nixopsVersion": "0.0.0", "patch": patch}});
        SchemaValidator::get().assert_valid(Direction::Request, &request);
        input.push_str(&request.to_string());
        input.push('\n');
    }
    input.push_str(&json!({"stateResourceReadRequest": {"resource": resource}}).to_string());
    input.push('\n');
    let (lines, status, stderr) = run_raw(input.as_bytes());
    assert!(status.success(), "{stderr}");
    assert_eq!(lines.len(), 5);
    for line in &lines[..4] {
        assert_eq!(line, "{\"stateResourceEventResponse\":{}}");
    }
    let read: Value = serde_json::from_str(&lines[4]).unwrap();
    assert_eq!(
        read,
        json!({"stateResourceReadResponse": {"state": {"_type": "nixopsState", "deployments": {}, "resources": {"b": {"type": "counter", "inputProperties": {}}}}}})
    );
}

#[test]
fn schema_flag_describes_every_type_with_operations() {
    let schema = test_provider().provider_schema();
    assert_eq!(schema.name, "test");
    let types: Vec<&str> = schema.resource_types.keys().map(String::as_str).collect();
    assert_eq!(types, ["counter", "file", "misbehave", "state_file"]);
    let file = &schema.resource_types["file"];
    assert!(!file.require_state);
    assert!(file.operations.delete && file.operations.read && !file.operations.state_storage);
    assert_eq!(file.inputs["required"], json!(["path", "contents"]));
    assert!(schema.resource_types["counter"].require_state);
    assert!(schema.resource_types["state_file"].operations.state_storage);
}

#[test]
fn unexpected_arguments_fail_with_usage_on_stderr() {
    let output = Command::new(example_exe("test-provider"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--schema"));
}
