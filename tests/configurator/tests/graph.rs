//! The configurator's resource graph, evaluated with real Nix on the
//! example panels and hosting configuration: its shape, its agreement with
//! the providers' generated reference pages, the flow of outputs, and the
//! errors a bad panel or hosting configuration gets.

use fedi_configurator_tests::{
    eval, example, has_placeholder, is_placeholder, output_refs, provider_types,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn graph(panel: &str) -> Value {
    eval(&example(panel), &example("hosting.nix"), None, None).unwrap_or_else(|e| panic!("{e}"))
}

fn resources(g: &Value) -> &serde_json::Map<String, Value> {
    g["resources"].as_object().expect("resources")
}

fn names(g: &Value) -> BTreeSet<String> {
    resources(g).keys().cloned().collect()
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

/// The panel example with one change, evaluated; Nix's error expected.
fn bad_panel(change: impl FnOnce(&mut Value)) -> String {
    let mut panel: Value =
        serde_json::from_slice(&std::fs::read(example("panel.json")).unwrap()).unwrap();
    change(&mut panel);
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "panel.json", &panel);
    match eval(&p, &example("hosting.nix"), None, None) {
        Ok(_) => panic!("the panel {panel} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn full_panel_snapshot() {
    insta::assert_json_snapshot!("panel-all-applications", graph("panel.json"));
}

#[test]
fn single_application_snapshot() {
    insta::assert_json_snapshot!("panel-mastodon-only", graph("panel-mastodon.json"));
}

#[test]
fn each_enabled_application_gets_its_resources_and_a_disabled_one_none() {
    let all = names(&graph("panel.json"));
    for app in ["mastodon", "pixelfed", "peertube"] {
        for suffix in ["vm", "s3-key", "dns-a", "dns-aaaa", "deployment"] {
            assert!(all.contains(&format!("{app}-{suffix}")), "{app}-{suffix}");
        }
    }
    for bucket in [
        "mastodon-media-bucket",
        "pixelfed-media-bucket",
        "peertube-streaming-playlists-bucket",
        "peertube-web-videos-bucket",
    ] {
        assert!(all.contains(bucket), "{bucket}");
    }
    assert!(all.contains("deployer-key"));
    assert_eq!(all.len(), 1 + 3 * 5 + 4, "{all:?}");

    // peertube is disabled, pixelfed absent: only Mastodon's resources.
    let one = names(&graph("panel-mastodon.json"));
    let expected: BTreeSet<String> = [
        "deployer-key",
        "mastodon-vm",
        "mastodon-media-bucket",
        "mastodon-s3-key",
        "mastodon-dns-a",
        "mastodon-dns-aaaa",
        "mastodon-deployment",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(one, expected);
}

#[test]
fn buckets_and_keys_match_each_applications_needs() {
    let g = graph("panel.json");
    let r = resources(&g);
    let media = &r["mastodon-media-bucket"]["inputs"];
    assert_eq!(media["name"], "alice-fedi-test-mastodon-media");
    assert_eq!(media["website"], json!({}));
    assert!(media.get("corsRules").is_none());
    assert_eq!(media["onDelete"], "keep");
    for b in ["streaming-playlists", "web-videos"] {
        let i = &r[&format!("peertube-{b}-bucket")]["inputs"];
        assert_eq!(i["website"], json!({}));
        assert_eq!(i["onDelete"], "purge", "the panel's onDisable");
        let cors = &i["corsRules"][0];
        assert_eq!(cors["allowedOrigins"], json!(["*"]));
        assert!(
            cors["allowedMethods"]
                .as_array()
                .unwrap()
                .contains(&json!("GET"))
        );
    }
    // A key's permissions: read and write on exactly its own buckets.
    let perms = r["peertube-s3-key"]["inputs"]["permissions"]
        .as_array()
        .unwrap();
    let buckets: BTreeSet<_> = perms
        .iter()
        .map(|p| {
            assert_eq!(
                (&p["read"], &p["write"], &p["owner"]),
                (&json!(true), &json!(true), &json!(false))
            );
            p["bucket"]["__output"]["resource"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        buckets,
        BTreeSet::from([
            "peertube-streaming-playlists-bucket".to_owned(),
            "peertube-web-videos-bucket".to_owned()
        ])
    );
    assert_eq!(
        r["pixelfed-dns-a"]["inputs"]["name"],
        "photos.alice.fedi.test."
    );
    assert_eq!(g["urls"]["pixelfed"], "https://photos.alice.fedi.test");
    // Sized per application and panel size.
    assert_eq!(r["mastodon-vm"]["inputs"]["memory"], 4096);
    assert_eq!(r["peertube-vm"]["inputs"]["cores"], 8);
}

#[test]
fn dependencies_name_existing_resources_and_cover_every_placeholder() {
    for panel in ["panel.json", "panel-mastodon.json"] {
        let g = graph(panel);
        let all = names(&g);
        for (name, res) in resources(&g) {
            let deps: BTreeSet<String> = res["dependsOn"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_owned())
                .collect();
            for d in &deps {
                assert!(all.contains(d), "{name} depends on a missing {d}");
                assert_ne!(d, name, "{name} depends on itself");
            }
            for (from, _) in output_refs(&res["inputs"])
                .into_iter()
                .chain(output_refs(res.get("service").unwrap_or(&Value::Null)))
            {
                assert!(
                    deps.contains(&from),
                    "{name} uses {from} without depending on it"
                );
            }
            let ready = g["ready"].as_array().unwrap().contains(&json!(name));
            assert_eq!(ready, !has_placeholder(&res["inputs"]), "{name}");
        }
    }
}

/// Flattens a value's input names the way the reference pages write them,
/// checking at each object that it has the required fields.
fn check_inputs(
    what: &str,
    prefix: &str,
    value: &Value,
    table: &std::collections::BTreeMap<String, fedi_configurator_tests::Field>,
) {
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {prefix} is not an object"));
    for (k, v) in obj {
        let path = format!("{prefix}{k}");
        assert!(
            table.contains_key(&path),
            "{what}: input {path} is not in the provider's schema"
        );
        if is_placeholder(v) {
            continue;
        }
        match v {
            Value::Object(_) if table.keys().any(|n| n.starts_with(&format!("{path}."))) => {
                check_inputs(what, &format!("{path}."), v, table)
            }
            Value::Array(items) if table.keys().any(|n| n.starts_with(&format!("{path}[]."))) => {
                for item in items {
                    if !is_placeholder(item) {
                        check_inputs(what, &format!("{path}[]."), item, table);
                    }
                }
            }
            _ => {}
        }
    }
    for (name, field) in table {
        if let Some(rest) = name.strip_prefix(prefix)
            && field.required
            && !rest.contains(['.', '['])
        {
            assert!(
                obj.contains_key(rest),
                "{what}: required input {name} is missing"
            );
        }
    }
}

#[test]
fn inputs_outputs_and_state_agree_with_the_providers_reference_pages() {
    let g = graph("panel.json");
    let r = resources(&g);
    for (name, res) in r {
        let provider = res["provider"].as_str().unwrap();
        let types = provider_types(provider);
        let ty = &types[res["type"].as_str().unwrap()];
        check_inputs(name, "", &res["inputs"], &ty.inputs);
        assert_eq!(
            res["state"] == "required",
            ty.requires_state,
            "{name}: state {} vs the provider's requireState",
            res["state"]
        );
        // Every placeholder names an output the referenced resource has.
        for (from, output) in output_refs(&res["inputs"])
            .into_iter()
            .chain(output_refs(res.get("service").unwrap_or(&Value::Null)))
        {
            let other = &r[&from];
            let other_types = provider_types(other["provider"].as_str().unwrap());
            let outputs = &other_types[other["type"].as_str().unwrap()].outputs;
            assert!(
                outputs.contains_key(&output),
                "{name} uses {from}.{output}, not an output"
            );
        }
    }
}

/// Fake outputs for every resource of a graph, as the providers return them.
fn fake_outputs(g: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (i, (name, res)) in resources(g).iter().enumerate() {
        let o = match (
            res["provider"].as_str().unwrap(),
            res["type"].as_str().unwrap(),
        ) {
            ("ssh-key", "keypair") => json!({
                "algorithm": "ed25519", "bits": 256, "fingerprint": "SHA256:fake",
                "privateKeyPath": res["inputs"]["privateKeyPath"],
                "publicKey": "ssh-ed25519 AAAAdeployer deployer"}),
            ("proxmox-vm", "vm") => json!({
                "ipv4Addresses": [format!("192.0.2.{}", 10 + i), "198.51.100.1"],
                "ipv6Addresses": [format!("2001:db8::{}", 10 + i)],
                "macAddresses": ["BC:24:11:00:00:01"], "name": res["inputs"]["name"],
                "node": "pve1", "vmid": 100 + i,
                "sshHostKey": format!("ssh-ed25519 AAAAhost{i} root@{name}")}),
            ("garage-bucket", "bucket") => json!({
                "bucketId": format!("id-{name}"), "name": res["inputs"]["name"],
                "region": "garage", "s3Endpoint": "http://127.0.0.1:3900",
                "websiteUrl": format!("http://{}.web.garage.localhost:3902/", res["inputs"]["name"].as_str().unwrap())}),
            ("garage-bucket", "key") => json!({
                "accessKeyId": format!("GK{name}"), "name": res["inputs"]["name"],
                "secretKeyPath": res["inputs"]["secretKeyPath"]}),
            ("dns-record", "record") => json!({
                "fqdn": "x", "ttl": 300, "type": res["inputs"]["type"], "values": [], "zone": "fedi.test"}),
            ("nixos-config", "deployment") => json!({
                "changed": true, "keys": [], "pathsCopied": 1, "system": "/nix/store/x"}),
            other => panic!("no fake outputs for {other:?}"),
        };
        out.insert(name.clone(), o);
    }
    Value::Object(out)
}

#[test]
fn known_outputs_replace_the_placeholders() {
    let first = graph("panel.json");
    assert!(
        first["pending"]
            .as_array()
            .unwrap()
            .contains(&json!("mastodon-vm"))
    );
    let dir = tempfile::tempdir().unwrap();
    let outputs = write(dir.path(), "outputs.json", &fake_outputs(&first));
    let systems = write(
        dir.path(),
        "systems.json",
        &json!({"mastodon": "/nix/store/aaaa-nixos-system-mastodon",
                "pixelfed": "/nix/store/bbbb-nixos-system-pixelfed",
                "peertube": "/nix/store/cccc-nixos-system-peertube"}),
    );

    // Outputs known, systems not built: only the deployments wait, and
    // their service configurations are complete.
    let second = eval(
        &example("panel.json"),
        &example("hosting.nix"),
        Some(&outputs),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        second["pending"],
        json!([
            "mastodon-deployment",
            "peertube-deployment",
            "pixelfed-deployment"
        ])
    );
    for app in ["mastodon", "pixelfed", "peertube"] {
        assert_eq!(second["seams"]["nixosSystems"][app]["buildable"], true);
        assert!(!has_placeholder(
            &second["resources"][format!("{app}-deployment")]["service"]
        ));
    }

    let third = eval(
        &example("panel.json"),
        &example("hosting.nix"),
        Some(&outputs),
        Some(&systems),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(third["pending"], json!([]));
    let r = resources(&third);
    let fake = fake_outputs(&first);
    for (name, res) in r {
        assert!(
            !has_placeholder(&res["inputs"]),
            "{name} still has a placeholder"
        );
    }
    let vm = &fake["mastodon-vm"];
    assert_eq!(r["mastodon-dns-a"]["inputs"]["values"], vm["ipv4Addresses"]);
    assert_eq!(
        r["mastodon-dns-aaaa"]["inputs"]["values"],
        vm["ipv6Addresses"]
    );
    let d = &r["mastodon-deployment"];
    assert_eq!(d["inputs"]["host"], vm["ipv4Addresses"][0]);
    assert_eq!(d["inputs"]["hostPublicKey"], vm["sshHostKey"]);
    assert_eq!(
        d["inputs"]["system"],
        "/nix/store/aaaa-nixos-system-mastodon"
    );
    assert_eq!(
        d["inputs"]["sshKeyFile"],
        fake["deployer-key"]["privateKeyPath"]
    );
    assert_eq!(
        d["inputs"]["keys"][0]["file"],
        fake["mastodon-s3-key"]["secretKeyPath"]
    );
    assert_eq!(d["service"]["s3"]["accessKeyId"], "GKmastodon-s3-key");
    assert_eq!(
        d["service"]["s3"]["buckets"]["media"]["publicUrl"],
        fake["mastodon-media-bucket"]["websiteUrl"]
    );
    assert_eq!(
        r["peertube-vm"]["inputs"]["cloudInit"]["sshKeys"],
        json!(["ssh-ed25519 AAAAdeployer deployer"])
    );
    assert_eq!(
        r["peertube-s3-key"]["inputs"]["permissions"][0]["bucket"],
        "id-peertube-streaming-playlists-bucket"
    );
    // The admin password is a generated file, never a literal.
    assert_eq!(
        d["inputs"]["keys"][1]["file"],
        third["seams"]["adminPassword"]["file"]
    );
    assert!(
        !serde_json::to_string(&third)
            .unwrap()
            .contains("\"password\":")
    );
}

#[test]
fn a_vm_without_an_address_is_refused_with_the_fix() {
    let first = graph("panel-mastodon.json");
    let mut outputs = fake_outputs(&first);
    outputs["mastodon-vm"]["ipv4Addresses"] = json!([]);
    let dir = tempfile::tempdir().unwrap();
    let o = write(dir.path(), "outputs.json", &outputs);
    let e = eval(
        &example("panel-mastodon.json"),
        &example("hosting.nix"),
        Some(&o),
        None,
    )
    .unwrap_err();
    assert!(
        e.contains("resource \"mastodon-vm\" reported an empty \"ipv4Addresses\""),
        "{e}"
    );
    assert!(e.contains("QEMU guest agent"), "{e}");
}

#[test]
fn bad_panels_fail_naming_the_field_and_the_fix() {
    let e = bad_panel(|p| p["applications"]["matrix"] = json!({"enable": true}));
    assert!(e.contains("unknown application \"matrix\""), "{e}");
    assert!(
        e.contains("the known applications are mastodon, peertube, pixelfed"),
        "{e}"
    );
    assert!(e.contains("Fix: remove it from the panel JSON"), "{e}");

    let e = bad_panel(|p| p["applications"]["mastodon"]["subdoman"] = json!("social"));
    assert!(
        e.contains("unknown field \"applications.mastodon.subdoman\""),
        "{e}"
    );
    assert!(e.contains("Fix: remove it or correct its spelling"), "{e}");

    let e = bad_panel(|p| {
        p["admin"].as_object_mut().unwrap().remove("email");
    });
    assert!(e.contains("missing field \"admin.email\""), "{e}");
    assert!(e.contains("Fix: add it to the panel JSON"), "{e}");

    let e = bad_panel(|p| {
        p["applications"]["pixelfed"]
            .as_object_mut()
            .unwrap()
            .remove("enable");
    });
    assert!(
        e.contains("missing field \"applications.pixelfed.enable\", true or false"),
        "{e}"
    );

    let e = bad_panel(|p| p["applications"]["peertube"]["size"] = json!("huge"));
    assert!(
        e.contains(
            "field \"applications.peertube.size\" must be one of \"small\", \"medium\", \"large\""
        ),
        "{e}"
    );

    let e = bad_panel(|p| p["domain"] = json!("Alice.Example"));
    assert!(
        e.contains("field \"domain\" must be a lowercase domain name"),
        "{e}"
    );

    let e = bad_panel(|p| p["domain"] = json!("alice.elsewhere.test"));
    assert!(e.contains("is not in the DNS zone \"fedi.test\""), "{e}");

    let e = bad_panel(|p| p["applications"]["pixelfed"]["subdomain"] = json!("mastodon"));
    assert!(e.contains("both use the subdomain \"mastodon\""), "{e}");
}

#[test]
fn a_literal_secret_in_the_hosting_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hosting = dir.path().join("hosting.nix");
    let original = std::fs::read_to_string(example("hosting.nix")).unwrap();
    let changed = original.replace(
        "adminToken.file = \"${stateDir}/secrets/garage-admin-token\";",
        "adminToken = { file = \"/x\"; env = \"X\"; };",
    );
    assert_ne!(original, changed);
    std::fs::write(&hosting, changed).unwrap();
    let e = eval(&example("panel.json"), &hosting, None, None).unwrap_err();
    assert!(
        e.contains("field \"garage.adminToken\" must name exactly one of `file` and `env`"),
        "{e}"
    );
}
