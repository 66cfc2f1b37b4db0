//! Helpers for the tests of the pure-Nix cluster configurator
//! (`nix/configurator/`): evaluate it with `nix-instantiate --eval --strict
//! --json` on a panel and a hosting configuration, and read the generated
//! provider reference pages (`doc/providers/*.md`) to check the resource
//! graph against the providers' real inputs and outputs.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A file of `examples/fediversity/`.
pub fn example(name: &str) -> PathBuf {
    root().join("examples/fediversity").join(name)
}

/// Evaluates the configurator on these files (absolute paths); `Ok` with
/// the graph as JSON, or `Err` with Nix's standard error.
///
/// Nix runs with the `dummy://` store: evaluation needs no store, no state
/// directory and no network, and none is touched.
pub fn eval(
    panel: &Path,
    hosting: &Path,
    outputs: Option<&Path>,
    systems: Option<&Path>,
) -> Result<Value, String> {
    let mut cmd = fedi_testbeds::nix::command("nix-instantiate");
    cmd.args(["--store", "dummy://", "--eval", "--strict", "--json"])
        .arg(root().join("nix/configurator/eval.nix"))
        .arg("--argstr")
        .arg("panelFile")
        .arg(panel)
        .arg("--argstr")
        .arg("hostingFile")
        .arg(hosting);
    if let Some(o) = outputs {
        cmd.arg("--argstr").arg("outputsFile").arg(o);
    }
    if let Some(s) = systems {
        cmd.arg("--argstr").arg("systemsFile").arg(s);
    }
    run_json(&mut cmd)
}

/// Runs a `nix-instantiate --json` command: `Ok` with what it printed,
/// `Err` with Nix's standard error.
fn run_json(cmd: &mut std::process::Command) -> Result<Value, String> {
    let out = cmd
        .output()
        .expect("run nix-instantiate (Debian package nix-bin; tests/install-deps.sh installs it)");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One row of a reference page's inputs or outputs table.
#[derive(Debug, Clone)]
pub struct Field {
    /// Whether the field is required.
    pub required: bool,
}

/// A resource type as its generated reference page describes it.
#[derive(Debug, Default)]
pub struct ResourceType {
    /// Input names, dotted (`server.address`, `keys[].file`).
    pub inputs: BTreeMap<String, Field>,
    /// Output names.
    pub outputs: BTreeMap<String, Field>,
    /// `- Requires state: yes`.
    pub requires_state: bool,
}

/// Reads `doc/providers/<provider>.md` and returns its resource types.
pub fn provider_types(provider: &str) -> BTreeMap<String, ResourceType> {
    let path = root().join(format!("doc/providers/{provider}.md"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut types: BTreeMap<String, ResourceType> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut table = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("## Resource type `") {
            let name = rest.trim_end_matches('`').to_owned();
            types.insert(name.clone(), ResourceType::default());
            current = Some(name);
            table = "";
        } else if line == "### Inputs" {
            table = "inputs";
        } else if line == "### Outputs" {
            table = "outputs";
        } else if let Some(t) = current.as_ref().and_then(|c| types.get_mut(c)) {
            if line == "- Requires state: yes" {
                t.requires_state = true;
            }
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            if cols.len() > 4 && cols[1].starts_with('`') {
                let name = cols[1].trim_matches('`').to_owned();
                let field = Field {
                    required: cols[3] == "yes",
                };
                match table {
                    "inputs" => t.inputs.insert(name, field),
                    "outputs" => t.outputs.insert(name, field),
                    _ => None,
                };
            }
        }
    }
    assert!(!types.is_empty(), "no resource types in {path:?}");
    types
}

/// Whether a value is a placeholder for an output or a system not known yet.
pub fn is_placeholder(v: &Value) -> bool {
    v.get("__output").is_some() || v.get("__system").is_some()
}

/// All `__output` placeholders in a value: (resource, output).
pub fn output_refs(v: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    collect(v, &mut found);
    found
}

fn collect(v: &Value, found: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("__output") {
                found.push((
                    r["resource"].as_str().unwrap_or_default().to_owned(),
                    r["output"].as_str().unwrap_or_default().to_owned(),
                ));
            } else {
                m.values().for_each(|x| collect(x, found));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, found)),
        _ => {}
    }
}

/// Any placeholder (`__output` or `__system`) anywhere in a value.
pub fn has_placeholder(v: &Value) -> bool {
    match v {
        Value::Object(m) => is_placeholder(v) || m.values().any(has_placeholder),
        Value::Array(a) => a.iter().any(has_placeholder),
        _ => false,
    }
}

/// Evaluates a Nix expression (builtins only, `dummy://` store) to JSON;
/// `Err` with Nix's standard error.
pub fn eval_expr(expr: &str) -> Result<Value, String> {
    run_json(
        fedi_testbeds::nix::command("nix-instantiate")
            .args([
                "--store", "dummy://", "--eval", "--strict", "--json", "--expr",
            ])
            .arg(expr),
    )
}
