//! Typed resource types: what a provider author implements.
//!
//! A resource type is a value implementing [`Resource`]: its name,
//! description, whether it needs state, an inputs struct and an outputs
//! struct (serde + schemars), and async operations. The framework decodes and
//! validates inputs (unknown, missing and mistyped fields are errors that name
//! the field), enforces `requireState`, encodes outputs and renders errors.

use std::future::Future;
use std::pin::Pin;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::schema::ResourceTypeSchema;
use crate::wire::{self, Drift, ExtantResource, Properties, Request, Response};

/// What a create operation knows besides the inputs.
#[derive(Debug, Clone, Copy)]
pub struct CreateContext {
    /// Whether NixOps4 persists this resource's outputs (it has a `state`).
    pub is_stateful: bool,
}

/// A resource as recorded: the inputs and outputs of its last create or
/// update.
#[derive(Debug, Clone)]
pub struct Recorded<I, O> {
    /// The inputs it was last applied with.
    pub inputs: I,
    /// The outputs returned then.
    pub outputs: O,
}

/// What [`Resource::read`] found.
#[derive(Debug, Clone)]
pub enum ReadOutcome<O> {
    /// The resource exists; `outputs` are its current outputs and `drift`
    /// lists how it differs from what was recorded (empty when in sync).
    Exists {
        /// Current outputs.
        outputs: O,
        /// Differences from the recorded resource.
        drift: Vec<Drift>,
    },
    /// The resource no longer exists.
    Gone,
}

/// A resource type. See the [module docs](self) and the crate's test provider
/// (`examples/test-provider.rs`) for a complete example.
///
/// Operations are `async fn`s without a `Send` bound: a provider serves one
/// request at a time on a single-threaded runtime, which keeps start-up cheap.
#[allow(async_fn_in_trait)]
pub trait Resource: 'static {
    /// Inputs, as declared in the deployment. Use `#[serde(rename_all =
    /// "camelCase")]`; doc comments become the option descriptions. Do not
    /// use `deny_unknown_fields`: the framework rejects unknown fields of new
    /// inputs itself, and tolerates them in recorded inputs from older
    /// versions.
    type Inputs: DeserializeOwned + JsonSchema;
    /// Outputs, as seen by the Nix expressions and recorded in the state.
    type Outputs: Serialize + DeserializeOwned + JsonSchema;

    /// The resource type's name, as written in the deployment.
    const TYPE: &'static str;
    /// What the resource is, for the generated docs and modules.
    const DESCRIPTION: &'static str;
    /// Whether the resource must have a `state` (its outputs must persist).
    const REQUIRE_STATE: bool;
    /// Whether [`Resource::delete`] is implemented.
    const SUPPORTS_DELETE: bool = false;
    /// Whether [`Resource::read`] is implemented.
    const SUPPORTS_READ: bool = false;
    /// Whether this resource is a state storage (answers
    /// `stateResourceReadRequest` and `stateResourceEvent`).
    const IS_STATE_STORAGE: bool = false;

    /// Creates the resource. For a stateless resource this runs on every
    /// apply, so it must be idempotent; for a stateful one a retry after a
    /// crash must find and adopt what the crashed attempt made.
    async fn create(&self, inputs: Self::Inputs, context: CreateContext) -> Result<Self::Outputs>;

    /// Brings an existing resource to new inputs. Only called for stateful
    /// resources.
    async fn update(
        &self,
        inputs: Self::Inputs,
        previous: Recorded<Self::Inputs, Self::Outputs>,
    ) -> Result<Self::Outputs>;

    /// Removes the resource. Must succeed when it is already gone.
    async fn delete(&self, current: Recorded<Self::Inputs, Self::Outputs>) -> Result<()> {
        let _ = current;
        Err(unsupported::<Self>("delete"))
    }

    /// Looks at the real resource and reports what it is now. Changes nothing.
    async fn read(
        &self,
        current: Recorded<Self::Inputs, Self::Outputs>,
    ) -> Result<ReadOutcome<Self::Outputs>> {
        let _ = current;
        Err(unsupported::<Self>("read"))
    }

    /// State storage: returns the whole deployment state.
    async fn state_read(
        &self,
        resource: Recorded<Self::Inputs, Self::Outputs>,
    ) -> Result<Properties> {
        let _ = resource;
        Err(unsupported::<Self>("stateResourceReadRequest"))
    }

    /// State storage: records one state event.
    async fn state_event(
        &self,
        resource: Recorded<Self::Inputs, Self::Outputs>,
        event: StateEvent,
    ) -> Result<()> {
        let _ = (resource, event);
        Err(unsupported::<Self>("stateResourceEvent"))
    }
}

/// A `stateResourceEvent`, minus the resource it is sent to.
#[derive(Debug, Clone)]
pub struct StateEvent {
    /// The operation that produced the change.
    pub event: String,
    /// The NixOps4 version that sent it.
    pub nixops_version: String,
    /// The change, as RFC 6902 operations.
    pub patch: json_patch::Patch,
}

fn unsupported<R: Resource + ?Sized>(operation: &str) -> Error {
    Error::unsupported(format!(
        "resource type `{}` does not implement `{operation}`",
        R::TYPE
    ))
}

/// A boxed future of a response; providers run on one thread, so no `Send`.
pub(crate) type ResponseFuture<'a> = Pin<Box<dyn Future<Output = Response> + 'a>>;

/// A resource type with its types erased, as the server holds it.
pub(crate) trait ErasedResource {
    fn schema(&self) -> ResourceTypeSchema;
    fn handle(&self, request: Request) -> ResponseFuture<'_>;
}

/// Wraps a [`Resource`] for the server.
pub(crate) struct Typed<R>(pub R);

impl<R: Resource> ErasedResource for Typed<R> {
    fn schema(&self) -> ResourceTypeSchema {
        ResourceTypeSchema::of::<R>()
    }

    fn handle(&self, request: Request) -> ResponseFuture<'_> {
        Box::pin(async move {
            let kind = request.kind();
            match self.dispatch(request).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::debug!(kind, error = %error, "operation failed");
                    Response::error(format!("{}: {error}", R::TYPE))
                }
            }
        })
    }
}

impl<R: Resource> Typed<R> {
    async fn dispatch(&self, request: Request) -> Result<Response> {
        let resource = &self.0;
        match request {
            Request::CreateResourceRequest(request) => {
                if R::REQUIRE_STATE && !request.is_stateful {
                    return Err(Error::invalid_input(
                        "state",
                        format!(
                            "resource type `{}` requires state, but this resource has none, so \
                             what it creates would be forgotten after this run",
                            R::TYPE
                        ),
                    )
                    .with_hint(
                        "give the resource a `state` in the deployment (a state-storage \
                         resource such as a state file), so that its outputs persist",
                    ));
                }
                let inputs = decode_inputs::<R::Inputs>(&request.input_properties)?;
                let context = CreateContext {
                    is_stateful: request.is_stateful,
                };
                let outputs = resource.create(inputs, context).await?;
                Ok(Response::CreateResourceResponse(
                    wire::CreateResourceResponse {
                        output_properties: encode_outputs::<R>(&outputs)?,
                    },
                ))
            }
            Request::UpdateResourceRequest(request) => {
                let inputs = decode_inputs::<R::Inputs>(&request.input_properties)?;
                let previous = decode_recorded::<R>(&request.resource)?;
                let outputs = resource.update(inputs, previous).await?;
                Ok(Response::UpdateResourceResponse(
                    wire::UpdateResourceResponse {
                        output_properties: encode_outputs::<R>(&outputs)?,
                    },
                ))
            }
            Request::XDeleteResourceRequest(request) => {
                if !R::SUPPORTS_DELETE {
                    return Err(unsupported::<R>("xDeleteResourceRequest"));
                }
                let current = decode_recorded::<R>(&request.resource)?;
                resource.delete(current).await?;
                Ok(Response::XDeleteResourceResponse(
                    wire::DeleteResourceResponse {},
                ))
            }
            Request::XReadResourceRequest(request) => {
                if !R::SUPPORTS_READ {
                    return Err(unsupported::<R>("xReadResourceRequest"));
                }
                let current = decode_recorded::<R>(&request.resource)?;
                let response = match resource.read(current).await? {
                    ReadOutcome::Exists { outputs, drift } => wire::ReadResourceResponse {
                        exists: true,
                        output_properties: Some(encode_outputs::<R>(&outputs)?),
                        drift,
                    },
                    ReadOutcome::Gone => wire::ReadResourceResponse {
                        exists: false,
                        output_properties: None,
                        drift: Vec::new(),
                    },
                };
                Ok(Response::XReadResourceResponse(response))
            }
            Request::StateResourceReadRequest(request) => {
                if !R::IS_STATE_STORAGE {
                    return Err(not_state_storage::<R>());
                }
                let current = decode_recorded::<R>(&request.resource)?;
                let state = resource.state_read(current).await?;
                Ok(Response::StateResourceReadResponse(
                    wire::StateResourceReadResponse { state },
                ))
            }
            Request::StateResourceEvent(request) => {
                if !R::IS_STATE_STORAGE {
                    return Err(not_state_storage::<R>());
                }
                let current = decode_recorded::<R>(&request.resource)?;
                let event = StateEvent {
                    event: request.event,
                    nixops_version: request.nixops_version,
                    patch: request.patch,
                };
                resource.state_event(current, event).await?;
                Ok(Response::StateResourceEventResponse(
                    wire::StateResourceEventResponse {},
                ))
            }
        }
    }
}

fn not_state_storage<R: Resource>() -> Error {
    Error::unsupported(format!(
        "resource type `{}` is not a state storage, so it cannot read or record deployment state",
        R::TYPE
    ))
    .with_hint("use a state-storage resource (such as a state file) as the deployment's `state`")
}

/// Decodes new inputs strictly: unknown fields, missing fields and wrong
/// types are [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
/// errors naming the field.
///
/// Members whose value is `null` count as absent (a Nix option left at its
/// `null` default).
pub fn decode_inputs<T: DeserializeOwned + JsonSchema>(inputs: &Properties) -> Result<T> {
    let value = strip_nulls(Value::Object(inputs.clone()));
    let mut unknown: Vec<String> = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let decoded: std::result::Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&value, &mut on_unknown));
    if let Some(path) = unknown.first() {
        return Err(unknown_field_error::<T>(path));
    }
    decoded.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            // A missing top-level field: serde says "missing field `x`".
            let field = missing_field_name(&inner).unwrap_or_default();
            let expected = describe_expected::<T>(&field);
            Error::invalid_input(
                if field.is_empty() {
                    "inputs".into()
                } else {
                    field
                },
                inner,
            )
            .with_hint(expected)
        } else if !path.contains('.') {
            Error::invalid_input(&path, inner).with_hint(describe_expected::<T>(&path))
        } else {
            Error::invalid_input(&path, inner)
        }
    })
}

/// Decodes recorded inputs and outputs, tolerating fields that an older or
/// newer version of the provider wrote.
fn decode_recorded<R: Resource>(
    resource: &ExtantResource,
) -> Result<Recorded<R::Inputs, R::Outputs>> {
    if resource.type_ != R::TYPE {
        // The server routes by type, so this means a confused caller.
        return Err(Error::internal(format!(
            "request for type `{}` routed to `{}`",
            resource.type_,
            R::TYPE
        )));
    }
    let inputs = serde_path_to_error::deserialize(strip_nulls(Value::Object(
        resource.input_properties.clone(),
    )))
    .map_err(|e| {
        Error::invalid_input(
            format!("resource.inputProperties.{}", e.path()),
            format!(
                "the recorded inputs do not fit this provider: {}",
                e.inner()
            ),
        )
        .with_hint(
            "the state was written by an incompatible provider version; re-create the resource",
        )
    })?;
    let outputs_value = resource.output_properties.clone().ok_or_else(|| {
        Error::invalid_input(
            "resource.outputProperties",
            "the recorded resource has no outputs",
        )
        .with_hint("the resource was never created successfully; create it instead")
    })?;
    let outputs = serde_path_to_error::deserialize(strip_nulls(Value::Object(outputs_value)))
        .map_err(|e| {
            Error::invalid_input(
                format!("resource.outputProperties.{}", e.path()),
                format!(
                    "the recorded outputs do not fit this provider: {}",
                    e.inner()
                ),
            )
            .with_hint(
                "the state was written by an incompatible provider version; re-create the resource",
            )
        })?;
    Ok(Recorded { inputs, outputs })
}

/// Encodes outputs with every declared output present: one left out (an
/// unset `Option` that its type skips) is sent as `null`. NixOps4 knows a
/// resource's outputs only from its provider's response, so a reader of an
/// output that is missing there fails with "does not have output"; the
/// generated modules' `default = null` never applies.
fn encode_outputs<R: Resource>(outputs: &R::Outputs) -> Result<Properties> {
    match serde_json::to_value(outputs) {
        Ok(Value::Object(mut map)) => {
            let schema = crate::schema::schema_value::<R::Outputs>();
            for name in crate::schema::properties_at(&schema, "") {
                map.entry(name).or_insert(Value::Null);
            }
            Ok(map)
        }
        Ok(other) => Err(Error::internal(format!(
            "outputs of `{}` serialize to a JSON {}, not an object",
            R::TYPE,
            wire::json_kind(&other)
        ))),
        Err(e) => Err(Error::internal("cannot serialize outputs").with_source(e)),
    }
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn missing_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn unknown_field_error<T: JsonSchema>(path: &str) -> Error {
    let schema = crate::schema::schema_value::<T>();
    // `a.b.c` is field `c` of the object at `a.b`.
    let parent = path.rsplit_once('.').map_or("", |(parent, _)| parent);
    let valid = crate::schema::properties_at(&schema, parent);
    let hint = if valid.is_empty() {
        "remove it".to_string()
    } else {
        format!("remove it or use one of: {}", valid.join(", "))
    };
    Error::invalid_input(
        bracket_indices(path),
        "unknown field (a typo, or an option of another provider version?); the provider does \
         not proceed with inputs it does not understand",
    )
    .with_hint(hint)
}

/// `disks.0.size` (serde_ignored's notation) as `disks[0].size`
/// (serde_path_to_error's), so that all errors name paths alike.
fn bracket_indices(path: &str) -> String {
    let mut out = String::new();
    for segment in path.split('.') {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

fn describe_expected<T: JsonSchema>(field: &str) -> String {
    let schema = crate::schema::schema_value::<T>();
    match crate::schema::property_type(&schema, field) {
        Some(ty) => format!("set `{field}` ({ty})"),
        None => format!("set `{field}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Outer {
        name: String,
        #[serde(default)]
        disks: Vec<Disk>,
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Disk {
        size_gib: u32,
        #[serde(default)]
        storage: Option<String>,
    }

    fn decode(value: serde_json::Value) -> Result<Outer> {
        match value {
            Value::Object(map) => decode_inputs::<Outer>(&map),
            _ => unreachable!(),
        }
    }

    #[test]
    fn unknown_nested_field_is_named_by_path_with_its_siblings() {
        let error =
            decode(serde_json::json!({"name": "a", "disks": [{"sizeGib": 1, "storag": "x"}]}))
                .expect_err("unknown field");
        assert_eq!(error.field(), Some("disks[0].storag"));
        assert_eq!(
            error.hint(),
            Some("remove it or use one of: sizeGib, storage")
        );
    }

    #[test]
    fn mistyped_nested_field_is_named_by_path() {
        let error = decode(serde_json::json!({"name": "a", "disks": [{"sizeGib": "big"}]}))
            .expect_err("mistyped");
        assert_eq!(error.field(), Some("disks[0].sizeGib"));
        assert!(error.to_string().contains("expected u32"), "{error}");
    }

    #[test]
    fn nulls_are_absent_and_valid_inputs_decode() {
        let outer =
            decode(serde_json::json!({"name": "a", "disks": [{"sizeGib": 3, "storage": null}]}))
                .expect("valid");
        assert_eq!(outer.disks[0].size_gib, 3);
        assert_eq!(outer.disks[0].storage, None);
        assert_eq!(outer.name, "a");
    }
}
