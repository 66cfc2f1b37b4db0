//! Wire types of the NixOps4 resource protocol v0, plus this suite's
//! extensions.
//!
//! Every type here serializes to exactly the shape of
//! `resource-schema-v0.json` (checked by the test suite against the official
//! schema). A request or response is a JSON object with a single key naming
//! its kind, e.g. `{"createResourceRequest": {...}}`.
//!
//! Extension kinds start with `x` (`xDeleteResourceRequest`,
//! `xReadResourceRequest`, and their responses). NixOps4 v0 never sends them;
//! they are described by `schema/extensions-v0.json` in this crate.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object: the shape of input and output properties.
pub type Properties = Map<String, Value>;

/// `createResourceRequest`: make a resource from its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateResourceRequest {
    /// The provider-defined resource type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The inputs, as declared in the deployment.
    pub input_properties: Properties,
    /// Whether NixOps4 will persist the response (the resource has a `state`).
    pub is_stateful: bool,
}

/// `createResourceResponse`: the outputs of a created resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateResourceResponse {
    /// The outputs, as seen by the Nix expressions.
    pub output_properties: Properties,
}

/// A resource as recorded in the state: its type, inputs and (optionally)
/// outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtantResource {
    /// The provider-defined resource type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The inputs the resource was last created or updated with.
    pub input_properties: Properties,
    /// The outputs the provider returned then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_properties: Option<Properties>,
}

/// `updateResourceRequest`: bring an existing (stateful) resource to new
/// inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateResourceRequest {
    /// The resource as recorded in the state.
    pub resource: ExtantResource,
    /// The new inputs.
    pub input_properties: Properties,
}

/// `updateResourceResponse`: the outputs after an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateResourceResponse {
    /// The outputs, as seen by the Nix expressions.
    pub output_properties: Properties,
}

/// `stateResourceReadRequest`: a state-storage resource returns the whole
/// deployment state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateResourceReadRequest {
    /// The state-storage resource.
    pub resource: ExtantResource,
}

/// `stateResourceReadResponse`: the current deployment state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateResourceReadResponse {
    /// The state of all managed resources.
    pub state: Properties,
}

/// `stateResourceEvent`: a state-storage resource records one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateResourceEvent {
    /// The state-storage resource.
    pub resource: ExtantResource,
    /// The operation that produced this change.
    pub event: String,
    /// The version of NixOps4 that produced it.
    pub nixops_version: String,
    /// RFC 6902 operations to apply to the state.
    pub patch: json_patch::Patch,
}

/// `stateResourceEventResponse`: an empty acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateResourceEventResponse {}

/// `errorResponse`: the operation failed; `message` says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// A human-readable explanation.
    pub message: String,
}

/// Extension `xDeleteResourceRequest`: remove the real-world resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteResourceRequest {
    /// The resource as recorded in the state (or, for a stateless resource,
    /// its inputs and the outputs of its last create).
    pub resource: ExtantResource,
}

/// Extension `xDeleteResourceResponse`: the resource is gone (or already was).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteResourceResponse {}

/// Extension `xReadResourceRequest`: look at the real-world resource and
/// report what it is now (refresh / drift detection). Changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadResourceRequest {
    /// The resource as recorded in the state.
    pub resource: ExtantResource,
}

/// Extension `xReadResourceResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadResourceResponse {
    /// Whether the resource still exists.
    pub exists: bool,
    /// Its current outputs, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_properties: Option<Properties>,
    /// Differences between the recorded resource and the real one; empty when
    /// in sync.
    #[serde(default)]
    pub drift: Vec<Drift>,
}

/// One difference between what was recorded and what is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Drift {
    /// The input or output property that differs.
    pub property: String,
    /// What differs, in words (never a secret value).
    pub message: String,
}

/// A message NixOps4 (or the runner) sends to a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Request {
    /// Create a resource.
    CreateResourceRequest(CreateResourceRequest),
    /// Update a stateful resource.
    UpdateResourceRequest(UpdateResourceRequest),
    /// Read a state-storage resource's state.
    StateResourceReadRequest(StateResourceReadRequest),
    /// Record a state event in a state-storage resource.
    StateResourceEvent(StateResourceEvent),
    /// Extension: delete a resource.
    XDeleteResourceRequest(DeleteResourceRequest),
    /// Extension: read (refresh) a resource.
    XReadResourceRequest(ReadResourceRequest),
}

/// A message a provider answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    /// Answer to `createResourceRequest`.
    CreateResourceResponse(CreateResourceResponse),
    /// Answer to `updateResourceRequest`.
    UpdateResourceResponse(UpdateResourceResponse),
    /// Answer to `stateResourceEvent`.
    StateResourceEventResponse(StateResourceEventResponse),
    /// Answer to `stateResourceReadRequest`.
    StateResourceReadResponse(StateResourceReadResponse),
    /// Any operation failed.
    ErrorResponse(ErrorResponse),
    /// Extension: answer to `xDeleteResourceRequest`.
    XDeleteResourceResponse(DeleteResourceResponse),
    /// Extension: answer to `xReadResourceRequest`.
    XReadResourceResponse(ReadResourceResponse),
}

impl Request {
    /// The wire names of every request kind this crate understands.
    pub const KINDS: [&'static str; 6] = [
        "createResourceRequest",
        "updateResourceRequest",
        "stateResourceReadRequest",
        "stateResourceEvent",
        "xDeleteResourceRequest",
        "xReadResourceRequest",
    ];

    /// The wire name of this request's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::CreateResourceRequest(_) => Self::KINDS[0],
            Request::UpdateResourceRequest(_) => Self::KINDS[1],
            Request::StateResourceReadRequest(_) => Self::KINDS[2],
            Request::StateResourceEvent(_) => Self::KINDS[3],
            Request::XDeleteResourceRequest(_) => Self::KINDS[4],
            Request::XReadResourceRequest(_) => Self::KINDS[5],
        }
    }

    /// The resource type the request is about.
    pub fn resource_type(&self) -> &str {
        match self {
            Request::CreateResourceRequest(r) => &r.type_,
            Request::UpdateResourceRequest(r) => &r.resource.type_,
            Request::StateResourceReadRequest(r) => &r.resource.type_,
            Request::StateResourceEvent(r) => &r.resource.type_,
            Request::XDeleteResourceRequest(r) => &r.resource.type_,
            Request::XReadResourceRequest(r) => &r.resource.type_,
        }
    }

    /// Whether this kind is one of this suite's extensions (not in NixOps4 v0).
    pub fn is_extension(&self) -> bool {
        matches!(
            self,
            Request::XDeleteResourceRequest(_) | Request::XReadResourceRequest(_)
        )
    }

    /// Parses one request line, explaining precisely what is wrong with a bad
    /// one (not JSON, not an object, unknown kind, malformed body).
    pub fn parse_line(line: &[u8]) -> Result<Request, String> {
        let text = std::str::from_utf8(line).map_err(|e| {
            format!(
                "the request line is not valid UTF-8 (invalid byte at offset {}); \
                 send one JSON object per line, UTF-8 encoded",
                e.valid_up_to()
            )
        })?;
        let value: Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "the request line is not valid JSON ({e}); send one JSON object per line, \
                 such as {{\"createResourceRequest\": {{...}}}}"
            )
        })?;
        let Value::Object(object) = value else {
            return Err(format!(
                "the request line is a JSON {}, not an object; a request is an object with one \
                 key naming its kind ({})",
                json_kind(&value),
                Self::KINDS.join(", ")
            ));
        };
        if object.len() != 1 {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(format!(
                "a request object must have exactly one key naming its kind, but this one has {} \
                 ({}); valid kinds: {}",
                object.len(),
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                },
                Self::KINDS.join(", ")
            ));
        }
        let (kind, body) = object.into_iter().next().expect("exactly one key");
        fn body_of<T: serde::de::DeserializeOwned>(kind: &str, body: Value) -> Result<T, String> {
            serde_path_to_error::deserialize(body).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." {
                    kind.to_string()
                } else {
                    format!("{kind}.{path}")
                };
                format!("malformed {kind}: at `{at}`: {}", e.inner())
            })
        }
        Ok(match kind.as_str() {
            "createResourceRequest" => Request::CreateResourceRequest(body_of(&kind, body)?),
            "updateResourceRequest" => Request::UpdateResourceRequest(body_of(&kind, body)?),
            "stateResourceReadRequest" => Request::StateResourceReadRequest(body_of(&kind, body)?),
            "stateResourceEvent" => Request::StateResourceEvent(body_of(&kind, body)?),
            "xDeleteResourceRequest" => Request::XDeleteResourceRequest(body_of(&kind, body)?),
            "xReadResourceRequest" => Request::XReadResourceRequest(body_of(&kind, body)?),
            other => {
                return Err(format!(
                    "unknown request kind `{other}`; this provider understands {}",
                    Self::KINDS.join(", ")
                ));
            }
        })
    }
}

impl Response {
    /// An `errorResponse` with the given message.
    pub fn error(message: impl Into<String>) -> Response {
        Response::ErrorResponse(ErrorResponse {
            message: message.into(),
        })
    }

    /// The response as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).expect("responses always serialize")
    }
}

/// "object", "array", ... for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
