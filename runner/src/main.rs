//! `fedi-resource-runner`: drive any NixOps4 resource provider executable
//! from the command line, one process per operation, as NixOps4 does.
//!
//! The subcommands and flags match the official `nixops4-resource-runner`
//! (`create`, `update`, `state-read`, `state-event`; `--provider-exe`,
//! `--type`, `--input-str`, `--input-json`, `--inputs-json`,
//! `--previous-inputs-json`, `--previous-outputs-json`, `--stateful`), so
//! instructions written for one work with the other. It adds `delete` and
//! `read` (this suite's protocol extensions) and `generate` (Nix module and
//! reference page from a provider's `--schema`).
//!
//! Results go to stdout as JSON; a provider's error goes to stderr and the
//! exit status is 1.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use fedi_protocol::client::ProviderClient;
use fedi_protocol::wire::{
    CreateResourceRequest, DeleteResourceRequest, ExtantResource, Properties, ReadResourceRequest,
    Request, Response, StateResourceEvent, StateResourceReadRequest, UpdateResourceRequest,
};
use fedi_protocol::{ProviderSchema, docgen};
use serde_json::Value;

/// Run NixOps4 resource provider operations from the command line.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Commands,
}

/// Where the provider is and which resource type to address.
#[derive(clap::Args, Debug)]
struct Target {
    /// The executable that implements the resource operations.
    #[arg(long)]
    provider_exe: PathBuf,
    /// The resource type: an identifier recognized by the provider.
    #[arg(long("type"))]
    resource_type: String,
}

/// A resource as recorded: where its provider is, its type, inputs and
/// outputs.
#[derive(clap::Args, Debug)]
struct RecordedResource {
    #[command(flatten)]
    target: Target,
    /// The input properties, as recorded.
    #[arg(long("inputs-json"))]
    inputs_json: String,
    /// The output properties, as recorded.
    #[arg(long("outputs-json"))]
    outputs_json: String,
}

impl RecordedResource {
    fn resource(&self) -> Result<ExtantResource, String> {
        extant(
            &self.target,
            &self.inputs_json,
            "--inputs-json",
            &self.outputs_json,
            "--outputs-json",
        )
    }
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Create a resource; prints its outputs.
    Create {
        #[command(flatten)]
        target: Target,
        /// The whole input properties, as a JSON object.
        #[arg(long("inputs-json"))]
        inputs_json: Option<String>,
        /// One input property as JSON (repeatable).
        #[arg(long("input-json"), short('j'), number_of_values = 2, value_names = ["NAME", "JSON"])]
        input_json: Vec<String>,
        /// One input property as a raw string (repeatable).
        #[arg(long("input-str"), short('s'), number_of_values = 2, value_names = ["NAME", "STR"])]
        input_str: Vec<String>,
        /// Declare that the outputs will be persisted (the resource has a `state`).
        #[arg(long)]
        stateful: bool,
    },
    /// Update a stateful resource; prints its new outputs.
    Update {
        #[command(flatten)]
        target: Target,
        /// The new input properties, as a JSON object.
        #[arg(long("inputs-json"))]
        inputs_json: String,
        /// The previous input properties, as recorded in the state.
        #[arg(long("previous-inputs-json"))]
        previous_inputs_json: String,
        /// The previous output properties, as recorded in the state.
        #[arg(long("previous-outputs-json"))]
        previous_outputs_json: String,
    },
    /// Delete a resource (extension `xDeleteResourceRequest`).
    Delete(RecordedResource),
    /// Read (refresh) a resource and report drift (extension `xReadResourceRequest`).
    Read(RecordedResource),
    /// Read the deployment state from a state-storage resource.
    StateRead(RecordedResource),
    /// Send a state event to a state-storage resource.
    StateEvent {
        #[command(flatten)]
        recorded: RecordedResource,
        /// The operation that produced this change.
        #[arg(long)]
        event: String,
        /// The version of NixOps that produced this event.
        #[arg(long)]
        nixops_version: String,
        /// JSON Patch operations to apply to the state.
        #[arg(long("patch-json"))]
        patch_json: String,
    },
    /// Write the NixOps4 provider module and Markdown reference page of a
    /// provider, from its `--schema`.
    Generate {
        /// The provider executable.
        #[arg(long)]
        provider_exe: PathBuf,
        /// Directory for `<name>.nix`.
        #[arg(long, default_value = "nix/providers")]
        nix_dir: PathBuf,
        /// Directory for `<name>.md`.
        #[arg(long, default_value = "doc/providers")]
        doc_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.command) {
        Ok(output) => {
            // stdout-ok: the runner is a CLI; its result is its output.
            #[allow(clippy::print_stdout)]
            {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Commands) -> Result<String, String> {
    let (target, request) = match command {
        Commands::Generate {
            provider_exe,
            nix_dir,
            doc_dir,
        } => return generate(&provider_exe, &nix_dir, &doc_dir),
        Commands::Create {
            target,
            inputs_json,
            input_json,
            input_str,
            stateful,
        } => {
            let inputs = gather_inputs(inputs_json.as_deref(), &input_json, &input_str)?;
            let request = Request::CreateResourceRequest(CreateResourceRequest {
                type_: target.resource_type.clone(),
                input_properties: inputs,
                is_stateful: stateful,
            });
            (target, request)
        }
        Commands::Update {
            target,
            inputs_json,
            previous_inputs_json,
            previous_outputs_json,
        } => {
            let request = Request::UpdateResourceRequest(UpdateResourceRequest {
                resource: extant(
                    &target,
                    &previous_inputs_json,
                    "--previous-inputs-json",
                    &previous_outputs_json,
                    "--previous-outputs-json",
                )?,
                input_properties: object(&inputs_json, "--inputs-json")?,
            });
            (target, request)
        }
        Commands::Delete(recorded) => {
            let resource = recorded.resource()?;
            (
                recorded.target,
                Request::XDeleteResourceRequest(DeleteResourceRequest { resource }),
            )
        }
        Commands::Read(recorded) => {
            let resource = recorded.resource()?;
            (
                recorded.target,
                Request::XReadResourceRequest(ReadResourceRequest { resource }),
            )
        }
        Commands::StateRead(recorded) => {
            let resource = recorded.resource()?;
            (
                recorded.target,
                Request::StateResourceReadRequest(StateResourceReadRequest { resource }),
            )
        }
        Commands::StateEvent {
            recorded,
            event,
            nixops_version,
            patch_json,
        } => {
            let resource = recorded.resource()?;
            let patch: json_patch::Patch = serde_json::from_str(&patch_json)
                .map_err(|e| format!("--patch-json is not a JSON Patch: {e}"))?;
            let request = Request::StateResourceEvent(StateResourceEvent {
                resource,
                event,
                nixops_version,
                patch,
            });
            (recorded.target, request)
        }
    };
    let response = exchange(&target.provider_exe, &request)?;
    let result = match response {
        Response::CreateResourceResponse(r) => Value::Object(r.output_properties),
        Response::UpdateResourceResponse(r) => Value::Object(r.output_properties),
        Response::StateResourceReadResponse(r) => Value::Object(r.state),
        Response::StateResourceEventResponse(_) | Response::XDeleteResourceResponse(_) => {
            Value::Object(Properties::new())
        }
        Response::XReadResourceResponse(r) => serde_json::to_value(r).map_err(|e| e.to_string())?,
        Response::ErrorResponse(e) => return Err(e.message),
    };
    serde_json::to_string_pretty(&result).map_err(|e| e.to_string())
}

fn exchange(exe: &Path, request: &Request) -> Result<Response, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime
        .block_on(async {
            let mut client = ProviderClient::spawn(exe)?;
            let response = client.request(request).await?;
            client.close().await?;
            Ok::<_, fedi_protocol::client::ClientError>(response)
        })
        .map_err(|e| error_chain(&e))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

fn object(json: &str, flag: &str) -> Result<Properties, String> {
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{flag} must be a JSON object")),
        Err(e) => Err(format!("{flag} is not valid JSON: {e}")),
    }
}

fn extant(
    target: &Target,
    inputs: &str,
    inputs_flag: &str,
    outputs: &str,
    outputs_flag: &str,
) -> Result<ExtantResource, String> {
    Ok(ExtantResource {
        type_: target.resource_type.clone(),
        input_properties: object(inputs, inputs_flag)?,
        output_properties: Some(object(outputs, outputs_flag)?),
    })
}

/// Merges `--inputs-json`, `--input-json` and `--input-str`; a name given
/// twice is an error (as in the official runner: no silent overriding).
fn gather_inputs(
    inputs_json: Option<&str>,
    input_json: &[String],
    input_str: &[String],
) -> Result<Properties, String> {
    let mut inputs = match inputs_json {
        Some(json) => object(json, "--inputs-json")?,
        None => Properties::new(),
    };
    for pair in input_json.chunks(2) {
        let [name, json] = pair else {
            unreachable!("clap takes two values")
        };
        let value = serde_json::from_str(json)
            .map_err(|e| format!("--input-json {name}: the value is not valid JSON: {e}"))?;
        if inputs.insert(name.clone(), value).is_some() {
            return Err(format!("duplicate input: {name}"));
        }
    }
    for pair in input_str.chunks(2) {
        let [name, text] = pair else {
            unreachable!("clap takes two values")
        };
        if inputs
            .insert(name.clone(), Value::String(text.clone()))
            .is_some()
        {
            return Err(format!("duplicate input: {name}"));
        }
    }
    Ok(inputs)
}

fn generate(exe: &Path, nix_dir: &Path, doc_dir: &Path) -> Result<String, String> {
    let output = Command::new(exe)
        .arg("--schema")
        .output()
        .map_err(|e| format!("cannot run `{} --schema`: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} --schema` failed ({}): {}",
            exe.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let schema: ProviderSchema = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "`{} --schema` printed something else than a provider schema: {e}",
            exe.display()
        )
    })?;
    let nix = nix_dir.join(format!("{}.nix", schema.name));
    let doc = doc_dir.join(format!("{}.md", schema.name));
    for (path, contents) in [
        (&nix, docgen::nix_module(&schema)),
        (&doc, docgen::markdown(&schema)),
    ] {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let written = serde_json::json!({"nixModule": nix, "referencePage": doc});
    serde_json::to_string_pretty(&written).map_err(|e| e.to_string())
}
