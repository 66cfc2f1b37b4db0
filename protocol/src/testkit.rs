//! The test kit every provider's tests use (feature `testkit`).
//!
//! - [`Harness`] runs a provider binary the way NixOps4 does: one process per
//!   operation, one request line in, one response line out, EOF, exit 0. It
//!   checks that stdout holds exactly that one line, validates the request
//!   and the response against the official NixOps4 schema (or this suite's
//!   extension schema for `x...` kinds), and keeps the provider's stderr for
//!   assertions (e.g. that no secret was logged).
//! - [`Transcript`] records the exchanges as JSON lines, with
//!   [`Redactions`] for ids, secrets, times and temporary paths, ready for
//!   `insta::assert_snapshot!`.
//! - [`SchemaValidator`] validates any message.
//! - [`assert_generated_in_sync`] checks a provider's committed Nix module and
//!   reference page against its `--schema`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::docgen;
use crate::schema::ProviderSchema;

/// The official NixOps4 resource protocol schema (draft-04).
pub const RESOURCE_SCHEMA_V0: &str = include_str!("../schema/resource-schema-v0.json");
/// SchemaStore's JSON Patch schema, which the official schema refers to.
pub const JSON_PATCH_SCHEMA: &str = include_str!("../schema/json-patch.json");
/// This suite's extension messages (`xDeleteResource...`, `xReadResource...`).
pub const EXTENSIONS_SCHEMA_V0: &str = include_str!("../schema/extensions-v0.json");

/// Re-exported so tests validate other documents with the same version.
pub use jsonschema;

const JSON_PATCH_URI: &str = "https://json.schemastore.org/json-patch.json";
const RESOURCE_SCHEMA_URI: &str =
    "https://nixops.dev/manual/development/schema/resource-schema-v0.json";

/// Validates protocol messages, offline.
pub struct SchemaValidator {
    request: jsonschema::Validator,
    response: jsonschema::Validator,
    extension_request: jsonschema::Validator,
    extension_response: jsonschema::Validator,
}

/// Whether a message is a request or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent to the provider.
    Request,
    /// Sent by the provider.
    Response,
}

impl SchemaValidator {
    /// The shared validator (compiling the schemas once per test binary).
    pub fn get() -> &'static SchemaValidator {
        static VALIDATOR: OnceLock<SchemaValidator> = OnceLock::new();
        VALIDATOR.get_or_init(SchemaValidator::new)
    }

    fn new() -> SchemaValidator {
        let official = parse_schema(RESOURCE_SCHEMA_V0);
        let extensions = parse_schema(EXTENSIONS_SCHEMA_V0);
        // The official root has `additionalProperties: false` beside its
        // `oneOf`, which (draft-04 has no `properties` there) rejects every
        // non-empty object; so validate against its `Request` and `Response`
        // definitions, which are what the root's `oneOf` means.
        let build = |root: &Value, definition: &str| {
            let mut schema = root.clone();
            let object = schema.as_object_mut().expect("schema is an object");
            object.remove("oneOf");
            object.remove("additionalProperties");
            object.insert("$ref".into(), json!(format!("#/definitions/{definition}")));
            offline_validator(&schema)
                .unwrap_or_else(|e| panic!("schema definition {definition} does not compile: {e}"))
        };
        SchemaValidator {
            request: build(&official, "Request"),
            response: build(&official, "Response"),
            extension_request: build(&extensions, "Request"),
            extension_response: build(&extensions, "Response"),
        }
    }

    /// The reasons `message` does not validate; empty when it does.
    /// `x...` kinds are validated against the extension schema, all others
    /// against the official one.
    pub fn errors(&self, direction: Direction, message: &Value) -> Vec<String> {
        let is_extension = message
            .as_object()
            .and_then(|o| o.keys().next())
            .is_some_and(|k| k.starts_with('x'));
        let validator = match (direction, is_extension) {
            (Direction::Request, false) => &self.request,
            (Direction::Response, false) => &self.response,
            (Direction::Request, true) => &self.extension_request,
            (Direction::Response, true) => &self.extension_response,
        };
        validator
            .iter_errors(message)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect()
    }

    /// Panics with the reasons when `message` does not validate.
    pub fn assert_valid(&self, direction: Direction, message: &Value) {
        let errors = self.errors(direction, message);
        assert!(
            errors.is_empty(),
            "{direction:?} does not validate against the protocol schema:\n{}\nmessage: {message}",
            errors.join("\n")
        );
    }
}

/// Resolves the schemas' external `$ref`s from the bundled copies, so
/// validation never touches the network.
struct BundledSchemas;

impl jsonschema::Retrieve for BundledSchemas {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        match uri.as_str().trim_end_matches('#') {
            JSON_PATCH_URI => Ok(parse_schema(JSON_PATCH_SCHEMA)),
            RESOURCE_SCHEMA_URI => Ok(parse_schema(RESOURCE_SCHEMA_V0)),
            other => Err(format!("no bundled schema for `{other}` (validation is offline)").into()),
        }
    }
}

/// Compiles a draft-04 schema whose external `$ref`s point at the NixOps4
/// or JSON Patch schemas, resolving them from the bundled copies.
pub fn offline_validator(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .with_retriever(BundledSchemas)
        .build(schema)
        .map_err(|e| e.to_string())
}

fn parse_schema(text: &str) -> Value {
    serde_json::from_str(text).expect("bundled schema is JSON")
}

/// What one provider process did for one request.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request sent.
    pub request: Value,
    /// The response line, parsed.
    pub response: Value,
    /// Everything the provider wrote to stderr (its log).
    pub stderr: String,
}

impl Exchange {
    /// The `outputProperties` of a create/update response, or panics with the
    /// error message.
    pub fn outputs(&self) -> Value {
        for kind in ["createResourceResponse", "updateResourceResponse"] {
            if let Some(body) = self.response.get(kind) {
                return body["outputProperties"].clone();
            }
        }
        panic!("expected outputs, got {}", self.response)
    }

    /// The `errorResponse` message, or panics.
    pub fn error_message(&self) -> String {
        match self
            .response
            .pointer("/errorResponse/message")
            .and_then(Value::as_str)
        {
            Some(message) => message.to_string(),
            None => panic!("expected an errorResponse, got {}", self.response),
        }
    }

    /// The response body of the given kind, or panics.
    pub fn body(&self, kind: &str) -> Value {
        match self.response.get(kind) {
            Some(body) => body.clone(),
            None => panic!("expected {kind}, got {}", self.response),
        }
    }
}

/// Exchanges recorded by a [`Harness`] and its clones.
type SharedExchanges = std::sync::Arc<std::sync::Mutex<Vec<(Value, Value)>>>;

/// Runs a provider executable as NixOps4 does, one process per request.
#[derive(Debug, Clone)]
pub struct Harness {
    exe: PathBuf,
    env: Vec<(String, String)>,
    transcript: Option<SharedExchanges>,
    /// The provider's `--schema`, read once, for the outputs check.
    schema: std::sync::Arc<OnceLock<ProviderSchema>>,
}

impl Harness {
    /// A harness for the executable (in tests, `env!("CARGO_BIN_EXE_<name>")`).
    pub fn new(exe: impl Into<PathBuf>) -> Harness {
        Harness {
            exe: exe.into(),
            env: Vec::new(),
            transcript: None,
            schema: Default::default(),
        }
    }

    /// Sets an environment variable for every provider process.
    pub fn env(mut self, name: &str, value: &str) -> Harness {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Records every exchange from now on; see [`Harness::transcript`].
    pub fn recording(mut self) -> Harness {
        self.transcript = Some(Default::default());
        self
    }

    /// The exchanges recorded so far.
    pub fn transcript(&self) -> Transcript {
        let exchanges = self
            .transcript
            .as_ref()
            .map(|t| t.lock().expect("transcript lock").clone())
            .unwrap_or_default();
        Transcript { exchanges }
    }

    /// Sends one raw line (a newline is added) to a fresh provider process
    /// and returns what came back. Asserts the protocol discipline: exactly
    /// one line on stdout, valid against the schema, and exit status 0.
    pub fn send_raw(&self, line: &[u8]) -> (Value, String) {
        let mut command = Command::new(&self.exe);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.exe.display()));
        {
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(line).expect("write request");
            stdin.write_all(b"\n").expect("write newline");
        }
        let output = child.wait_with_output().expect("wait for provider");
        let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "provider exited with {} after EOF\nstderr:\n{stderr}",
            output.status
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one response line on stdout, got {}:\n{stdout}\nstderr:\n{stderr}",
            lines.len()
        );
        assert!(
            stdout.ends_with('\n'),
            "the response line must end with a newline"
        );
        let response: Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", lines[0]));
        SchemaValidator::get().assert_valid(Direction::Response, &response);
        (response, stderr)
    }

    /// Sends `request` to a provider process told to abort at the
    /// [fault point](crate::fault) `point`, and asserts that it died there
    /// without answering, as a `kill -9` at that moment would. Returns its
    /// stderr. A provider that answers instead never reached the point,
    /// which fails the test.
    pub fn crash_at(&self, point: &str, request: Value) -> String {
        SchemaValidator::get().assert_valid(Direction::Request, &request);
        let mut child = Command::new(&self.exe)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(crate::fault::FAULT_ENV, point)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.exe.display()));
        {
            let mut stdin = child.stdin.take().expect("piped stdin");
            writeln!(stdin, "{request}").expect("write request");
        }
        let output = child.wait_with_output().expect("wait for provider");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success() && output.stdout.is_empty(),
            "the provider was to abort at fault point `{point}`, but it {} and answered {:?}\nstderr:\n{stderr}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
        // Died there, by the abort, and not of some other failure on the way.
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&output.status),
            Some(SIGABRT),
            "the provider was to die of SIGABRT at fault point `{point}`, but it {}\nstderr:\n{stderr}",
            output.status
        );
        assert!(
            stderr.contains(&crate::fault::abort_marker(point)),
            "the provider died, but not at fault point `{point}` (no abort marker)\nstderr:\n{stderr}"
        );
        stderr
    }

    /// Sends one request (validated against the schema first).
    pub fn send(&self, request: Value) -> Exchange {
        SchemaValidator::get().assert_valid(Direction::Request, &request);
        let line = serde_json::to_vec(&request).expect("request serializes");
        let (response, stderr) = self.send_raw(&line);
        self.assert_every_output_present(&request, &response);
        if let Some(transcript) = &self.transcript {
            transcript
                .lock()
                .expect("transcript lock")
                .push((request.clone(), response.clone()));
        }
        Exchange {
            request,
            response,
            stderr,
        }
    }

    /// `createResourceRequest`.
    pub fn create(&self, resource_type: &str, inputs: Value, is_stateful: bool) -> Exchange {
        self.send(json!({"createResourceRequest": {
            "type": resource_type, "inputProperties": inputs, "isStateful": is_stateful,
        }}))
    }

    /// `updateResourceRequest`, from the previous inputs and outputs.
    pub fn update(
        &self,
        resource_type: &str,
        inputs: Value,
        previous_inputs: Value,
        previous_outputs: Value,
    ) -> Exchange {
        self.send(json!({"updateResourceRequest": {
            "resource": extant(resource_type, previous_inputs, Some(previous_outputs)),
            "inputProperties": inputs,
        }}))
    }

    /// `xDeleteResourceRequest` (extension).
    pub fn delete(&self, resource_type: &str, inputs: Value, outputs: Value) -> Exchange {
        self.send(json!({"xDeleteResourceRequest": {
            "resource": extant(resource_type, inputs, Some(outputs)),
        }}))
    }

    /// `xReadResourceRequest` (extension).
    pub fn read(&self, resource_type: &str, inputs: Value, outputs: Value) -> Exchange {
        self.send(json!({"xReadResourceRequest": {
            "resource": extant(resource_type, inputs, Some(outputs)),
        }}))
    }

    /// `stateResourceReadRequest`.
    pub fn state_read(&self, resource_type: &str, inputs: Value, outputs: Value) -> Exchange {
        self.send(json!({"stateResourceReadRequest": {
            "resource": extant(resource_type, inputs, Some(outputs)),
        }}))
    }

    /// `stateResourceEvent`.
    pub fn state_event(
        &self,
        resource_type: &str,
        inputs: Value,
        outputs: Value,
        event: &str,
        patch: Value,
    ) -> Exchange {
        self.send(json!({"stateResourceEvent": {
            "resource": extant(resource_type, inputs, Some(outputs)),
            "event": event,
            "nixopsVersion": "0.0.0-test",
            "patch": patch,
        }}))
    }

    /// Asserts that a response with outputs has every output its resource
    /// type declares (`null` when empty): NixOps4 knows only the outputs a
    /// provider returned, so any other one fails its readers with "does not
    /// have output". Every provider test that goes through [`Harness::send`]
    /// checks it.
    fn assert_every_output_present(&self, request: &Value, response: &Value) {
        let Some(outputs) = [
            "createResourceResponse",
            "updateResourceResponse",
            "xReadResourceResponse",
        ]
        .iter()
        .find_map(|kind| response.get(kind)?.get("outputProperties")?.as_object()) else {
            return;
        };
        let Some(resource_type) = request
            .as_object()
            .and_then(|r| r.values().next())
            .and_then(|body| body.get("type").or_else(|| body.pointer("/resource/type")))
            .and_then(Value::as_str)
        else {
            return;
        };
        let schema = self.schema.get_or_init(|| self.provider_schema());
        let declared = schema
            .resource_types
            .get(resource_type)
            .map(|t| crate::schema::properties_at(&t.outputs, ""))
            .unwrap_or_default();
        let missing = missing_outputs(&declared, outputs);
        assert!(
            missing.is_empty(),
            "the `{resource_type}` response leaves out the declared outputs {missing:?} \
             (NixOps4 fails every reader of a missing output; send them as null):\n{response}"
        );
    }

    /// The provider's `--schema` output.
    pub fn provider_schema(&self) -> ProviderSchema {
        let output = Command::new(&self.exe)
            .arg("--schema")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} --schema: {e}", self.exe.display()));
        assert!(
            output.status.success(),
            "--schema failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("--schema prints a ProviderSchema")
    }
}

/// SIGABRT's number (6 on every Linux architecture).
const SIGABRT: i32 = 6;

/// The `property` of each drift entry of an `xReadResourceResponse` body,
/// in order; panics when the body has no drift list.
pub fn drift_properties(read: &Value) -> Vec<&str> {
    read["drift"]
        .as_array()
        .unwrap_or_else(|| panic!("no drift list in {read}"))
        .iter()
        .map(|d| {
            d["property"]
                .as_str()
                .expect("a drift entry names its property")
        })
        .collect()
}

/// The names in `declared` that `outputs` lacks.
pub fn missing_outputs(declared: &[String], outputs: &Map<String, Value>) -> Vec<String> {
    declared
        .iter()
        .filter(|name| !outputs.contains_key(name.as_str()))
        .cloned()
        .collect()
}

fn extant(resource_type: &str, inputs: Value, outputs: Option<Value>) -> Value {
    let mut resource = Map::new();
    resource.insert("type".into(), json!(resource_type));
    resource.insert("inputProperties".into(), inputs);
    if let Some(outputs) = outputs {
        resource.insert("outputProperties".into(), outputs);
    }
    Value::Object(resource)
}

/// Recorded request/response pairs.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// `(request, response)` in order.
    pub exchanges: Vec<(Value, Value)>,
}

impl Transcript {
    /// The transcript as JSON lines, a request line then its response line,
    /// keys sorted, with `redactions` applied.
    pub fn to_jsonl(&self, redactions: &Redactions) -> String {
        let mut out = String::new();
        for (request, response) in &self.exchanges {
            for message in [request, response] {
                let redacted = redactions.apply(message.clone());
                out.push_str(&serde_json::to_string(&sorted(redacted)).expect("serializes"));
                out.push('\n');
            }
        }
        out
    }
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Replacements that make transcripts stable: values of named keys
/// (generated ids, keys, times) and substrings (temporary directories).
#[derive(Debug, Clone, Default)]
pub struct Redactions {
    keys: Vec<(String, String)>,
    texts: Vec<(String, String)>,
}

impl Redactions {
    /// No redactions.
    pub fn new() -> Redactions {
        Redactions::default()
    }

    /// Replaces the value of every member named `key` with `placeholder`.
    pub fn key(mut self, key: &str, placeholder: &str) -> Redactions {
        self.keys.push((key.to_string(), placeholder.to_string()));
        self
    }

    /// Replaces every occurrence of `text` inside strings with `placeholder`.
    pub fn text(mut self, text: impl AsRef<str>, placeholder: &str) -> Redactions {
        self.texts
            .push((text.as_ref().to_string(), placeholder.to_string()));
        self
    }

    /// Replaces a path (and so everything below it) with `placeholder`.
    pub fn path(self, path: &Path, placeholder: &str) -> Redactions {
        self.text(path.to_string_lossy(), placeholder)
    }

    /// Applies the redactions to a message.
    pub fn apply(&self, value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| match self.keys.iter().find(|(key, _)| *key == k) {
                        Some((_, placeholder)) => (k, json!(placeholder)),
                        None => (k, self.apply(v)),
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.apply(v)).collect()),
            Value::String(mut s) => {
                for (text, placeholder) in &self.texts {
                    if !text.is_empty() {
                        s = s.replace(text.as_str(), placeholder);
                    }
                }
                Value::String(s)
            }
            other => other,
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it),
/// for a backend a test starts.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Checks that `nix/providers/<name>.nix` and `doc/providers/<name>.md`
/// under `workspace_root` are what the generator writes from the provider's
/// `--schema`. With `FEDI_REGENERATE=1` in the environment, rewrites them
/// instead.
pub fn assert_generated_in_sync(exe: impl Into<PathBuf>, workspace_root: &Path) {
    let schema = Harness::new(exe).provider_schema();
    let files = [
        (
            workspace_root
                .join("nix/providers")
                .join(format!("{}.nix", schema.name)),
            docgen::nix_module(&schema),
        ),
        (
            workspace_root
                .join("doc/providers")
                .join(format!("{}.md", schema.name)),
            docgen::markdown(&schema),
        ),
    ];
    let regenerate = std::env::var("FEDI_REGENERATE").is_ok_and(|v| v == "1");
    for (path, expected) in files {
        if regenerate {
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&path, &expected).expect("write generated file");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == expected,
            "{} is not what the generator writes from `{} --schema`; regenerate it with \
             `FEDI_REGENERATE=1 cargo test --workspace generated` and commit the result",
            path.display(),
            schema.executable
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_sent_as_null_counts_as_present_and_a_left_out_one_does_not() {
        let declared = vec!["publicKey".to_string(), "privateKey".to_string()];
        let complete = json!({"publicKey": "ssh-ed25519 AAAA", "privateKey": null});
        assert!(missing_outputs(&declared, complete.as_object().unwrap()).is_empty());
        let partial = json!({"publicKey": "ssh-ed25519 AAAA"});
        assert_eq!(
            missing_outputs(&declared, partial.as_object().unwrap()),
            ["privateKey"]
        );
    }
}
