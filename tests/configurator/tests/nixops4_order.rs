//! The configurator's members in NixOps4's evaluation order, with plain
//! `nix-instantiate` (no nixpkgs; `nix/tests/glue.nix` checks the same
//! inside the module system where nixpkgs' lib is at hand):
//! `nix/tests/nixops4-order.nix` gives the members of
//! `nix/nixops4/resources.nix` their outputs through `nixops4-eval`'s
//! fixpoint, known only from what the providers returned. NixOps4 forces
//! one member's inputs at a time and applies the member as soon as they
//! evaluate, so a bad panel must fail every member's inputs, and an output
//! a provider left out of its response fails whoever reads it.

use fedi_configurator_tests::{eval, eval_expr, example, provider_types, root};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::Path;

const PROVIDERS: [&str; 5] = [
    "ssh-key",
    "proxmox-vm",
    "garage-bucket",
    "dns-record",
    "nixos-config",
];

/// A path as a Nix expression (paths here hold no `"`, `\` or `${`).
fn nix_path(p: &Path) -> String {
    format!("(/. + \"{}\")", p.display())
}

/// The declared output names of every resource type, by provider, from the
/// generated reference pages (top-level names only).
fn output_names() -> Value {
    let mut providers = Map::new();
    for provider in PROVIDERS {
        let mut types = Map::new();
        for (name, t) in provider_types(provider) {
            let names: Vec<&String> = t
                .outputs
                .keys()
                .filter(|n| !n.contains(['.', '[']))
                .collect();
            types.insert(name, json!(names));
        }
        providers.insert(provider.to_owned(), Value::Object(types));
    }
    Value::Object(providers)
}

/// One operator's members in NixOps4's order, for one panel.
struct Order {
    dir: tempfile::TempDir,
    panel: std::path::PathBuf,
}

impl Order {
    fn new(panel: &Value) -> Order {
        let dir = tempfile::tempdir().unwrap();
        let panel_file = dir.path().join("panel.json");
        std::fs::write(&panel_file, serde_json::to_vec_pretty(panel).unwrap()).unwrap();
        std::fs::write(
            dir.path().join("output-names.json"),
            output_names().to_string(),
        )
        .unwrap();
        Order {
            dir,
            panel: panel_file,
        }
    }

    /// `select` applied to `o`, the operator's members (`o.<name>.resource`)
    /// with `returned` (a Nix expression, in which `graph` is the pure
    /// configurator's graph) the outputs of the members applied so far.
    fn eval(&self, returned: &str, select: &str) -> Result<Value, String> {
        let root = root();
        let hosting = nix_path(&example("hosting.nix"));
        let panel = nix_path(&self.panel);
        let expr = format!(
            "let
               graph = (import {configurator}).configureFiles {{ panelFile = {panel}; hostingFile = {hosting}; }};
               fakeOutputs = import {fake} graph.resources;
               o = (import {order} {{
                 panelFile = {panel};
                 hostingFile = {hosting};
                 outputNames = builtins.fromJSON (builtins.readFile {names});
                 returned = {returned};
               }}).members;
             in {select}",
            configurator = nix_path(&root.join("nix/configurator")),
            fake = nix_path(&root.join("nix/tests/fake-outputs.nix")),
            order = nix_path(&root.join("nix/tests/nixops4-order.nix")),
            names = nix_path(&self.dir.path().join("output-names.json")),
        );
        eval_expr(&expr)
    }

    /// One member's inputs alone, nothing applied yet.
    fn inputs_before_anything(&self, member: &str) -> Result<Value, String> {
        self.eval("{ }", &format!("o.\"{member}\".resource.inputs"))
    }
}

fn example_panel() -> Value {
    serde_json::from_slice(&std::fs::read(example("panel.json")).unwrap()).unwrap()
}

fn example_graph() -> Value {
    eval(&example("panel.json"), &example("hosting.nix"), None, None)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn with_nothing_applied_exactly_the_ready_members_evaluate() {
    let graph = example_graph();
    let order = Order::new(&example_panel());
    let mut evaluated = BTreeSet::new();
    for name in graph["resources"].as_object().unwrap().keys() {
        match order.inputs_before_anything(name) {
            Ok(_) => {
                evaluated.insert(name.clone());
            }
            Err(e) => assert!(e.contains("is not applied yet"), "{name}: {e}"),
        }
    }
    assert!(!evaluated.is_empty());
    assert_eq!(evaluated, strings(&graph["ready"]));
}

#[test]
fn a_bad_panel_fails_every_members_inputs_before_any_is_applied() {
    let names: Vec<String> = example_graph()["resources"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // Read by one resource's inputs (size, onDisable, subdomain), or only
    // by a NixOS system (registrations, transcoding, the admin's e-mail).
    let cases: [(&str, &str, Value, &str); 6] = [
        (
            "mastodon",
            "size",
            json!("huge"),
            "field \"applications.mastodon.size\" must be one of \"small\", \"medium\", \"large\"",
        ),
        (
            "mastodon",
            "registrations",
            json!("everyone"),
            "field \"applications.mastodon.registrations\" must be one of \"open\", \"approval\", \"closed\"",
        ),
        (
            "peertube",
            "onDisable",
            json!("delete"),
            "field \"applications.peertube.onDisable\" must be one of \"keep\", \"purge\"",
        ),
        (
            "peertube",
            "transcoding",
            json!("yes"),
            "field \"applications.peertube.transcoding\" must be true or false",
        ),
        (
            "pixelfed",
            "subdomain",
            json!("Photos"),
            "field \"applications.pixelfed.subdomain\" must be one DNS label",
        ),
        (
            "",
            "email",
            json!("alice"),
            "field \"admin.email\" must be an e-mail address",
        ),
    ];
    for (app, field, value, message) in cases {
        let mut panel = example_panel();
        if app.is_empty() {
            panel["admin"][field] = value;
        } else {
            panel["applications"][app][field] = value;
        }
        let order = Order::new(&panel);
        let check = |what: &str, result: Result<Value, String>| {
            let e = match result {
                Ok(v) => panic!("{message}: {what} evaluated to {v}"),
                Err(e) => e,
            };
            assert!(e.contains(message), "{what}: {e}");
            assert!(
                e.contains("Fix: correct it in the panel JSON"),
                "{what}: {e}"
            );
            assert!(
                e.contains(&order.panel.display().to_string()),
                "{what}: {e}"
            );
        };
        check("the member set", order.eval("{ }", "builtins.attrNames o"));
        for name in &names {
            check(name, order.inputs_before_anything(name));
        }
    }
}

#[test]
fn an_output_left_out_of_a_response_fails_its_readers_as_under_nixops4() {
    let order = Order::new(&example_panel());
    // Every declared output returned: every member's inputs evaluate.
    let all = order
        .eval(
            "fakeOutputs",
            "builtins.mapAttrs (_: m: m.resource.inputs) o",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        all.as_object().unwrap().len(),
        example_graph()["resources"].as_object().unwrap().len()
    );

    let lacking =
        "fakeOutputs // { mastodon-vm = removeAttrs fakeOutputs.mastodon-vm [ \"sshHostKey\" ]; }";
    let e = order
        .eval(lacking, "o.mastodon-deployment.resource.inputs")
        .expect_err("the deployment reads the VM's sshHostKey");
    assert!(
        e.contains("Resource alice.mastodon-vm does not have output sshHostKey"),
        "{e}"
    );
    order
        .eval(lacking, "o.mastodon-dns-a.resource.inputs")
        .unwrap_or_else(|e| panic!("the A record does not read sshHostKey: {e}"));
}

#[test]
fn the_fake_outputs_are_exactly_each_providers_declared_outputs() {
    let graph = example_graph();
    let order = Order::new(&example_panel());
    let fake = order
        .eval(
            "{ }",
            "builtins.mapAttrs (_: builtins.attrNames) fakeOutputs",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let declared = output_names();
    for (name, resource) in graph["resources"].as_object().unwrap() {
        let provider = resource["provider"].as_str().unwrap();
        let kind = resource["type"].as_str().unwrap();
        assert_eq!(
            strings(&fake[name]),
            strings(&declared[provider][kind]),
            "{name} ({provider} {kind}): nix/tests/fake-outputs.nix must return exactly the declared outputs"
        );
    }
}

#[test]
fn the_local_hosting_file_works_with_its_backends_as_hosting_args() {
    let root = root();
    let configure = |args: &str| {
        eval_expr(&format!(
            "builtins.attrNames ((import {}).configureFiles {{
               panelFile = {};
               hostingFile = {};
               {args}
             }}).resources",
            nix_path(&root.join("nix/configurator")),
            nix_path(&example("panel.json")),
            nix_path(&root.join("examples/local/hosting.nix")),
        ))
    };
    let names = configure(&format!(
        "hostingArgs.backends = import {};",
        nix_path(&root.join("nix/tests/fake-backends.nix"))
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let expected: BTreeSet<String> = example_graph()["resources"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(strings(&names), expected);

    let e = configure("").expect_err("the file needs `backends`");
    assert!(
        e.contains("is a function that needs the argument backends, which was not given"),
        "{e}"
    );
    assert!(e.contains("Fix: pass it as hosting arguments"), "{e}");
}
