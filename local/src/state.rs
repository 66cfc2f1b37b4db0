//! The deployment state: what was applied, as NixOps4 records it (type,
//! inputs, outputs), plus the provider and dependencies, so that a resource
//! the configuration no longer has can be deleted in the right order.
//! Written after every operation (atomically, mode 0600: outputs such as
//! key paths are not secret, but the state is the operator's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One applied resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The provider.
    pub provider: String,
    /// The provider's resource type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The inputs it was last created or updated with.
    pub inputs: Map<String, Value>,
    /// The outputs the provider returned then.
    pub outputs: Map<String, Value>,
    /// The resources whose outputs its inputs used.
    pub depends_on: Vec<String>,
}

impl Applied {
    /// An input, or `null` when it is absent.
    pub fn input(&self, name: &str) -> &Value {
        self.inputs.get(name).unwrap_or(&Value::Null)
    }

    /// An output, or `null` when it is absent.
    pub fn output(&self, name: &str) -> &Value {
        self.outputs.get(name).unwrap_or(&Value::Null)
    }
}

/// The state file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Applied resources, by name.
    pub resources: BTreeMap<String, Applied>,
    /// The built NixOS systems, by application.
    #[serde(default)]
    pub systems: BTreeMap<String, String>,
}

/// The state and where it is kept.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// The current content.
    pub state: State,
}

impl StateFile {
    /// Loads `path`, or an empty state when it does not exist.
    pub fn open(path: &Path) -> Result<StateFile> {
        let state = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "the state file {} is not a deployment state; move it aside to start afresh",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read the state {}", path.display()));
            }
        };
        Ok(StateFile {
            path: path.to_path_buf(),
            state,
        })
    }

    /// Writes the state (atomically).
    pub fn save(&self) -> Result<()> {
        let text =
            serde_json::to_string_pretty(&self.state).context("cannot serialize the state")?;
        fedi_protocol::files::write_private_atomic(&self.path, text.as_bytes())
            .with_context(|| format!("cannot write the state {}", self.path.display()))
    }

    /// Records a resource and saves.
    pub fn record(&mut self, name: &str, applied: Applied) -> Result<()> {
        self.state.resources.insert(name.to_string(), applied);
        self.save()
    }

    /// Forgets a resource and saves.
    pub fn forget(&mut self, name: &str) -> Result<()> {
        self.state.resources.remove(name);
        self.save()
    }

    /// The recorded resources among `names` that no other recorded
    /// resource among `names` depends on: the ones to delete first.
    pub fn deletable_first(&self, names: &BTreeSet<String>) -> Vec<String> {
        names
            .iter()
            .filter(|name| {
                !names.iter().any(|other| {
                    self.state
                        .resources
                        .get(other)
                        .is_some_and(|r| r.depends_on.contains(name))
                })
            })
            .cloned()
            .collect()
    }
}
