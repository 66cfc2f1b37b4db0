//! The configurator's resource graph, evaluated with real Nix
//! (`nix-instantiate`, no nixpkgs) from `nix/configurator/eval.nix`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Map, Value};

/// One resource of the graph.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// The provider (`ssh-key`, `proxmox-vm`, ...).
    pub provider: String,
    /// The provider's resource type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The inputs, possibly holding `__output` / `__system` placeholders.
    pub inputs: Map<String, Value>,
    /// The resources whose outputs the inputs use.
    pub depends_on: Vec<String>,
    /// What a deployment's NixOS system is built from.
    #[serde(default)]
    pub service: Option<Value>,
}

/// A NixOS system the configurator waits for.
#[derive(Debug, Clone, Deserialize)]
pub struct NixosSystem {
    /// The deployment resource that deploys it.
    pub resource: String,
    /// Whether its `service` holds no placeholder any more.
    pub buildable: bool,
}

/// The generated-secret seam (the operator's admin password).
#[derive(Debug, Clone, Deserialize)]
pub struct GeneratedSecret {
    /// Where it lives on the deploying machine.
    pub file: PathBuf,
    /// How many random bytes.
    pub bytes: usize,
}

/// The configurator's seams.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seams {
    /// The operator's admin password.
    pub admin_password: GeneratedSecret,
    /// The NixOS systems, by application.
    pub nixos_systems: BTreeMap<String, NixosSystem>,
}

/// The whole graph.
#[derive(Debug, Clone, Deserialize)]
pub struct Graph {
    /// Every resource, by name.
    pub resources: BTreeMap<String, Resource>,
    /// Resources whose inputs are all known.
    pub ready: Vec<String>,
    /// Resources that wait for outputs or a system.
    pub pending: Vec<String>,
    /// The operator's URLs, by application.
    pub urls: BTreeMap<String, String>,
    /// The seams.
    pub seams: Seams,
}

/// Where the configurator and its inputs are.
#[derive(Debug, Clone)]
pub struct Configurator {
    /// `nix/configurator/eval.nix`.
    pub eval_nix: PathBuf,
    /// The operator's panel JSON.
    pub panel: PathBuf,
    /// The hosting provider's configuration (a Nix file).
    pub hosting: PathBuf,
}

impl Configurator {
    /// Evaluates the graph with the outputs and systems known so far
    /// (written as JSON files into `scratch`). Returns it and the time taken.
    pub fn evaluate(
        &self,
        outputs: &BTreeMap<String, Map<String, Value>>,
        systems: &BTreeMap<String, String>,
        scratch: &Path,
    ) -> Result<(Graph, Duration)> {
        let outputs_file = scratch.join("outputs.json");
        let systems_file = scratch.join("systems.json");
        write_json(&outputs_file, outputs)?;
        write_json(&systems_file, systems)?;
        let started = Instant::now();
        let output = fedi_testbeds::nix::command("nix-instantiate")
            .args(["--eval", "--strict", "--json", "--readonly-mode"])
            .arg(&self.eval_nix)
            .arg("--argstr")
            .arg("panelFile")
            .arg(&self.panel)
            .arg("--argstr")
            .arg("hostingFile")
            .arg(&self.hosting)
            .arg("--argstr")
            .arg("outputsFile")
            .arg(&outputs_file)
            .arg("--argstr")
            .arg("systemsFile")
            .arg(&systems_file)
            .stdin(Stdio::null())
            .output()
            .context("cannot run nix-instantiate (install nix-bin)")?;
        let took = started.elapsed();
        if !output.status.success() {
            bail!(
                "the configurator refused the configuration:\n{}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let graph = serde_json::from_slice(&output.stdout)
            .context("the configurator's graph has an unexpected shape")?;
        Ok((graph, took))
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .with_context(|| format!("cannot serialize {}", path.display()))?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
