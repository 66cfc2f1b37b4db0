//! The NixOps4 state file format (`state-schema-v0.json`), for state-storage
//! resources: a sequence of [`StateEvent`]s whose patches, applied in order to
//! `null`, give the [`State`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One entry of a state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEvent {
    /// Monotonically increasing position of the event.
    pub index: u64,
    /// When it happened (`time`, RFC 3339) and anything else recorded.
    pub meta: StateEventMeta,
    /// The change.
    pub patch: json_patch::Patch,
}

/// [`StateEvent::meta`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEventMeta {
    /// RFC 3339 time of the event.
    pub time: String,
    /// Further fields (e.g. `event`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The whole deployment state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Always `nixopsState`.
    #[serde(rename = "_type")]
    pub type_: StateType,
    /// Resources by name.
    pub resources: Map<String, Value>,
    /// Nested deployments.
    pub deployments: Map<String, Value>,
}

/// The only state type there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateType {
    /// `nixopsState`.
    #[serde(rename = "nixopsState")]
    NixopsState,
}

/// Applies `events` in order, starting from nothing, and returns the state.
pub fn replay<'a>(
    events: impl IntoIterator<Item = &'a StateEvent>,
) -> Result<Value, json_patch::PatchError> {
    let mut state = Value::Null;
    for event in events {
        json_patch::patch(&mut state, &event.patch)?;
    }
    Ok(state)
}
