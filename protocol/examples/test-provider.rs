//! A tiny provider for the crate's own tests: every operation, stateful and
//! stateless, state storage, errors of every kind, a panic and stray prints.
//!
//! Run it by hand: `cargo run -p fedi-protocol --example test-provider -- --schema`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use fedi_protocol::schemars::JsonSchema;
use fedi_protocol::{
    CreateContext, Drift, Error, ErrorKind, ReadOutcome, Recorded, Resource, Result, ResultExt,
    SecretRef, StateEvent, wire::Properties,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A file with given contents (stateless, idempotent).
struct File;

/// Inputs of `file`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FileInputs {
    /// Where the file goes.
    path: PathBuf,
    /// What it holds.
    contents: String,
}

/// Outputs of `file`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FileOutputs {
    /// Its size in bytes.
    size: u64,
}

impl Resource for File {
    type Inputs = FileInputs;
    type Outputs = FileOutputs;
    const TYPE: &'static str = "file";
    const DESCRIPTION: &'static str = "A file with the given contents.";
    const REQUIRE_STATE: bool = false;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(&self, inputs: FileInputs, _: CreateContext) -> Result<FileOutputs> {
        if std::fs::read_to_string(&inputs.path).ok().as_deref() != Some(&inputs.contents) {
            std::fs::write(&inputs.path, &inputs.contents).map_err(|e| {
                Error::invalid_input("path", format!("cannot write `{}`", inputs.path.display()))
                    .with_source(e)
            })?;
        }
        Ok(FileOutputs {
            size: inputs.contents.len() as u64,
        })
    }

    async fn update(
        &self,
        inputs: FileInputs,
        previous: Recorded<FileInputs, FileOutputs>,
    ) -> Result<FileOutputs> {
        if previous.inputs.path != inputs.path {
            self.delete(previous).await?;
        }
        self.create(inputs, CreateContext { is_stateful: true })
            .await
    }

    async fn delete(&self, current: Recorded<FileInputs, FileOutputs>) -> Result<()> {
        match std::fs::remove_file(&current.inputs.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::internal(format!(
                "cannot remove `{}`",
                current.inputs.path.display()
            ))
            .with_source(e)),
            _ => Ok(()),
        }
    }

    async fn read(
        &self,
        current: Recorded<FileInputs, FileOutputs>,
    ) -> Result<ReadOutcome<FileOutputs>> {
        match std::fs::read_to_string(&current.inputs.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReadOutcome::Gone),
            Err(e) => Err(Error::internal("cannot read the file").with_source(e)),
            Ok(contents) => {
                let mut drift = Vec::new();
                if contents != current.inputs.contents {
                    drift.push(Drift {
                        property: "contents".into(),
                        message: "the file's contents differ from the declared ones".into(),
                    });
                }
                Ok(ReadOutcome::Exists {
                    outputs: FileOutputs {
                        size: contents.len() as u64,
                    },
                    drift,
                })
            }
        }
    }
}

/// A counter that grows on every update (stateful; no delete or read).
struct Counter;

/// Inputs of `counter`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct CounterInputs {
    /// How much each update adds.
    #[serde(default = "one")]
    step: u64,
    /// A label, changed to trigger an update.
    #[serde(default)]
    label: Option<String>,
    /// Where a token would come from (to exercise secret references).
    #[serde(default)]
    token: Option<SecretRef>,
}

fn one() -> u64 {
    1
}

/// Outputs of `counter`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct CounterOutputs {
    /// The current value.
    value: u64,
    /// The length of the token, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_length: Option<usize>,
}

impl Resource for Counter {
    type Inputs = CounterInputs;
    type Outputs = CounterOutputs;
    const TYPE: &'static str = "counter";
    const DESCRIPTION: &'static str = "A number that grows by `step` on each update.";
    const REQUIRE_STATE: bool = true;

    async fn create(&self, inputs: CounterInputs, _: CreateContext) -> Result<CounterOutputs> {
        Ok(CounterOutputs {
            value: inputs.step,
            token_length: token_length(&inputs)?,
        })
    }

    async fn update(
        &self,
        inputs: CounterInputs,
        previous: Recorded<CounterInputs, CounterOutputs>,
    ) -> Result<CounterOutputs> {
        tracing::info!(label = ?inputs.label, "counting");
        Ok(CounterOutputs {
            value: previous.outputs.value + inputs.step,
            token_length: token_length(&inputs)?,
        })
    }
}

fn token_length(inputs: &CounterInputs) -> Result<Option<usize>> {
    use fedi_protocol::ExposeSecret;
    inputs
        .token
        .as_ref()
        .map(|token| {
            let secret = token.read("token")?;
            tracing::debug!(?secret, "read the token");
            Ok(secret.expose_secret().len())
        })
        .transpose()
}

/// A state storage in a JSON-lines file of events.
struct StateFile;

/// Inputs of `state_file`.
#[derive(Deserialize, JsonSchema)]
struct StateFileInputs {
    /// The events file.
    path: PathBuf,
}

/// Outputs of `state_file` (none).
#[derive(Serialize, Deserialize, JsonSchema)]
struct NoOutputs {}

impl Resource for StateFile {
    type Inputs = StateFileInputs;
    type Outputs = NoOutputs;
    const TYPE: &'static str = "state_file";
    const DESCRIPTION: &'static str = "Deployment state as a file of JSON Patch events.";
    const REQUIRE_STATE: bool = false;
    const IS_STATE_STORAGE: bool = true;

    async fn create(&self, _: StateFileInputs, _: CreateContext) -> Result<NoOutputs> {
        Ok(NoOutputs {})
    }

    async fn update(
        &self,
        _: StateFileInputs,
        _: Recorded<StateFileInputs, NoOutputs>,
    ) -> Result<NoOutputs> {
        Ok(NoOutputs {})
    }

    async fn state_read(
        &self,
        resource: Recorded<StateFileInputs, NoOutputs>,
    ) -> Result<Properties> {
        let text = match std::fs::read_to_string(&resource.inputs.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            other => other.or_error(ErrorKind::Internal, || "cannot read the state file".into())?,
        };
        let mut state = serde_json::json!({});
        for line in text.lines() {
            let event: Value = serde_json::from_str(line)
                .or_error(ErrorKind::Internal, || "corrupt state event".into())?;
            let patch: json_patch::Patch = serde_json::from_value(event["patch"].clone())
                .or_error(ErrorKind::Internal, || "corrupt state patch".into())?;
            json_patch::patch(&mut state, &patch)
                .or_error(ErrorKind::Internal, || "state patch does not apply".into())?;
        }
        match state {
            Value::Object(map) => Ok(map),
            _ => Err(Error::internal("the state is not an object")),
        }
    }

    async fn state_event(
        &self,
        resource: Recorded<StateFileInputs, NoOutputs>,
        event: StateEvent,
    ) -> Result<()> {
        let line = serde_json::json!({"event": event.event, "patch": event.patch});
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&resource.inputs.path)
            .or_error(ErrorKind::Internal, || "cannot open the state file".into())?;
        writeln!(file, "{line}").or_error(ErrorKind::Internal, || "cannot append".into())
    }
}

/// Misbehaves on purpose: prints to stdout, fails, panics.
struct Misbehave;

/// Inputs of `misbehave`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct MisbehaveInputs {
    /// Print this to stdout before answering.
    #[serde(default)]
    print: Option<String>,
    /// Fail with an error of this kind.
    #[serde(default)]
    fail: Option<FailKind>,
    /// Panic.
    #[serde(default)]
    panic: bool,
}

/// Error kinds `misbehave` can fail with.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "camelCase")]
enum FailKind {
    InvalidInput,
    NotFound,
    Conflict,
    Unavailable,
    PermissionDenied,
    Internal,
}

impl Resource for Misbehave {
    type Inputs = MisbehaveInputs;
    type Outputs = NoOutputs;
    const TYPE: &'static str = "misbehave";
    const DESCRIPTION: &'static str = "Prints to stdout, fails or panics, as asked.";
    const REQUIRE_STATE: bool = false;

    async fn create(&self, inputs: MisbehaveInputs, _: CreateContext) -> Result<NoOutputs> {
        if let Some(text) = inputs.print {
            // stdout-ok: this is the stray print the framework must divert.
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
            let _ = std::io::stdout().flush();
        }
        if inputs.panic {
            panic!("asked to panic");
        }
        if let Some(kind) = inputs.fail {
            let kind = match kind {
                FailKind::InvalidInput => ErrorKind::InvalidInput,
                FailKind::NotFound => ErrorKind::NotFound,
                FailKind::Conflict => ErrorKind::Conflict,
                FailKind::Unavailable => ErrorKind::Unavailable,
                FailKind::PermissionDenied => ErrorKind::PermissionDenied,
                FailKind::Internal => ErrorKind::Internal,
            };
            return Err(Error::new(kind, "asked to fail")
                .with_source(std::io::Error::other("the underlying cause"))
                .with_hint("do not ask"));
        }
        Ok(NoOutputs {})
    }

    async fn update(
        &self,
        inputs: MisbehaveInputs,
        _: Recorded<MisbehaveInputs, NoOutputs>,
    ) -> Result<NoOutputs> {
        self.create(inputs, CreateContext { is_stateful: true })
            .await
    }
}

fn main() -> ExitCode {
    fedi_protocol::Provider::new(
        "test",
        "A provider for the protocol crate's own tests.",
        env!("CARGO_PKG_VERSION"),
        "test-provider",
    )
    .resource(File)
    .resource(Counter)
    .resource(StateFile)
    .resource(Misbehave)
    .run()
}
