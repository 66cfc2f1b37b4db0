//! The wire types against the official NixOps4 schema and its examples.

use fedi_protocol::state::{self, State, StateEvent};
use fedi_protocol::testkit::{Direction, SchemaValidator, jsonschema, offline_validator};
use fedi_protocol::wire::*;
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/nixops4-examples"
);
const STATE_SCHEMA: &str = include_str!("../schema/state-schema-v0.json");

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{EXAMPLES}/{name}")).expect("example exists");
    serde_json::from_str(&text).expect("example is JSON")
}

fn props(value: Value) -> Properties {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn extant() -> ExtantResource {
    ExtantResource {
        type_: "file".into(),
        input_properties: props(json!({"name": "a.txt", "contents": "hi"})),
        output_properties: Some(props(json!({"size": 2}))),
    }
}

/// One value of every request kind (the `match` makes adding a kind without
/// covering it here a compile error).
fn every_request() -> Vec<Request> {
    let all = vec![
        Request::CreateResourceRequest(CreateResourceRequest {
            type_: "file".into(),
            input_properties: props(json!({"name": "a", "nested": {"x": [1, null]}})),
            is_stateful: true,
        }),
        Request::UpdateResourceRequest(UpdateResourceRequest {
            resource: extant(),
            input_properties: props(json!({"name": "b"})),
        }),
        Request::UpdateResourceRequest(UpdateResourceRequest {
            resource: ExtantResource {
                output_properties: None,
                ..extant()
            },
            input_properties: props(json!({})),
        }),
        Request::StateResourceReadRequest(StateResourceReadRequest { resource: extant() }),
        Request::StateResourceEvent(StateResourceEvent {
            resource: extant(),
            event: "create".into(),
            nixops_version: "0.1.0".into(),
            patch: serde_json::from_value(json!([
                {"op": "add", "path": "/resources/x", "value": {"type": "file"}},
                {"op": "remove", "path": "/resources/y"},
                {"op": "replace", "path": "/a", "value": 1},
                {"op": "move", "from": "/a", "path": "/b"},
                {"op": "copy", "from": "/b", "path": "/c"},
                {"op": "test", "path": "/c", "value": 1}
            ]))
            .expect("patch"),
        }),
        Request::XDeleteResourceRequest(DeleteResourceRequest { resource: extant() }),
        Request::XReadResourceRequest(ReadResourceRequest { resource: extant() }),
    ];
    for request in &all {
        match request {
            Request::CreateResourceRequest(_)
            | Request::UpdateResourceRequest(_)
            | Request::StateResourceReadRequest(_)
            | Request::StateResourceEvent(_)
            | Request::XDeleteResourceRequest(_)
            | Request::XReadResourceRequest(_) => {}
        }
    }
    all
}

fn every_response() -> Vec<Response> {
    let all = vec![
        Response::CreateResourceResponse(CreateResourceResponse {
            output_properties: props(json!({"id": "vm-1"})),
        }),
        Response::CreateResourceResponse(CreateResourceResponse {
            output_properties: props(json!({})),
        }),
        Response::UpdateResourceResponse(UpdateResourceResponse {
            output_properties: props(json!({"id": "vm-1"})),
        }),
        Response::StateResourceEventResponse(StateResourceEventResponse {}),
        Response::StateResourceReadResponse(StateResourceReadResponse {
            state: props(json!({"_type": "nixopsState", "resources": {}, "deployments": {}})),
        }),
        Response::error("something failed\nhint: fix it"),
        Response::XDeleteResourceResponse(DeleteResourceResponse {}),
        Response::XReadResourceResponse(ReadResourceResponse {
            exists: true,
            output_properties: Some(props(json!({"size": 3}))),
            drift: vec![Drift {
                property: "contents".into(),
                message: "differs".into(),
            }],
        }),
        Response::XReadResourceResponse(ReadResourceResponse {
            exists: false,
            output_properties: None,
            drift: vec![],
        }),
    ];
    for response in &all {
        match response {
            Response::CreateResourceResponse(_)
            | Response::UpdateResourceResponse(_)
            | Response::StateResourceEventResponse(_)
            | Response::StateResourceReadResponse(_)
            | Response::ErrorResponse(_)
            | Response::XDeleteResourceResponse(_)
            | Response::XReadResourceResponse(_) => {}
        }
    }
    all
}

#[test]
fn every_request_we_serialize_validates_and_round_trips() {
    for request in every_request() {
        let value = serde_json::to_value(&request).expect("serializes");
        SchemaValidator::get().assert_valid(Direction::Request, &value);
        let line = serde_json::to_vec(&request).expect("serializes");
        assert_eq!(Request::parse_line(&line).expect("parses back"), request);
    }
}

#[test]
fn every_response_we_serialize_validates_and_round_trips() {
    for response in every_response() {
        let value: Value = serde_json::from_str(&response.to_line()).expect("one JSON line");
        assert!(!response.to_line().contains('\n'), "a response is one line");
        SchemaValidator::get().assert_valid(Direction::Response, &value);
        let back: Response = serde_json::from_value(value).expect("parses back");
        assert_eq!(back, response);
    }
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let validator = SchemaValidator::get();
    let bad = [
        json!({"createResourceRequest": {"type": "x", "inputProperties": {}}}),
        json!({"createResourceRequest": {"type": "x", "inputProperties": {}, "isStateful": false, "extra": 1}}),
        json!({"createResourceRequest": {"type": 1, "inputProperties": {}, "isStateful": false}}),
        json!({"stateResourceEvent": {"resource": {"type": "x", "inputProperties": {}}, "event": "e",
            "nixopsVersion": "1", "patch": [{"op": "frobnicate", "path": "/a"}]}}),
        json!({"xDeleteResourceRequest": {}}),
        json!({"frobnicateRequest": {}}),
    ];
    for message in bad {
        assert!(
            !validator.errors(Direction::Request, &message).is_empty(),
            "should be rejected: {message}"
        );
    }
    for message in [
        json!({"errorResponse": {}}),
        json!({"errorResponse": {"message": "x", "code": 1}}),
        json!({"createResourceResponse": {"outputProperties": []}}),
        json!({"xReadResourceResponse": {"exists": true}}),
    ] {
        assert!(
            !validator.errors(Direction::Response, &message).is_empty(),
            "should be rejected: {message}"
        );
    }
}

#[test]
fn official_request_and_response_examples_parse() {
    let request: CreateResourceRequest =
        serde_json::from_value(example("v0-CreateResourceRequest.json")).expect("parses");
    assert_eq!(request.type_, "file");
    assert!(!request.is_stateful);
    assert_eq!(request.input_properties["path"], "pubkey.txt");
    let wrapped =
        serde_json::to_value(Request::CreateResourceRequest(request)).expect("serializes");
    SchemaValidator::get().assert_valid(Direction::Request, &wrapped);

    let response: CreateResourceResponse =
        serde_json::from_value(example("v0-CreateResourceResponse.json")).expect("parses");
    assert_eq!(
        response.output_properties["interfaces"]["eth0"]["ipv4"],
        "198.51.100.11"
    );
    let wrapped =
        serde_json::to_value(Response::CreateResourceResponse(response)).expect("serializes");
    SchemaValidator::get().assert_valid(Direction::Response, &wrapped);
}

fn state_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(STATE_SCHEMA).expect("state schema is JSON");
    offline_validator(&schema).expect("state schema compiles")
}

#[test]
fn official_state_examples_parse_validate_and_replay() {
    let validator = state_validator();
    for name in ["state-v0-empty.json", "resolved-state.json"] {
        let value = example(name);
        assert!(validator.is_valid(&value), "{name} validates");
        let parsed: State = serde_json::from_value(value.clone()).expect("parses as a State");
        assert_eq!(
            serde_json::to_value(&parsed).expect("serializes"),
            value,
            "{name} round-trips"
        );
    }
    let initial: StateEvent =
        serde_json::from_value(example("state-v0-initial-event.json")).expect("parses");
    assert!(validator.is_valid(&serde_json::to_value(&initial).expect("serializes")));

    // state-file.json is a stream of events, one after the other.
    let text = std::fs::read_to_string(format!("{EXAMPLES}/state-file.json")).expect("exists");
    let events: Vec<StateEvent> = serde_json::Deserializer::from_str(&text)
        .into_iter::<StateEvent>()
        .collect::<Result<_, _>>()
        .expect("every event parses");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].meta.extra["event"], "create");
    for event in &events {
        assert!(validator.is_valid(&serde_json::to_value(event).expect("serializes")));
    }
    let replayed = state::replay(&events).expect("patches apply");
    let resolved: State = serde_json::from_value(replayed).expect("replayed state is a State");
    assert_eq!(
        resolved,
        serde_json::from_value(example("resolved-state.json")).expect("parses")
    );
}

#[test]
fn bad_lines_are_explained() {
    let cases: [(&[u8], &str); 7] = [
        (b"not json", "not valid JSON"),
        (b"[1,2]", "a JSON array, not an object"),
        (b"\"text\"", "a JSON string, not an object"),
        (b"{}", "exactly one key"),
        (b"{\"deleteEverything\": {}}", "unknown request kind `deleteEverything`"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (
            b"{\"createResourceRequest\": {\"type\": \"f\", \"inputProperties\": {}, \"isStateful\": \"yes\"}}",
            "at `createResourceRequest.isStateful`: invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (line, expected) in cases {
        let error = Request::parse_line(line).expect_err("bad line");
        assert!(
            error.contains(expected),
            "{error:?} should contain {expected:?}"
        );
    }
}
