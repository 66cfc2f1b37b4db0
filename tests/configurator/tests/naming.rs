//! Backend names: an injective function of the operator's domain, within
//! each backend's limits, and two operators (or resources) that would share
//! one are refused, naming both (issue 13).

use fedi_configurator_tests::{eval, eval_expr, example, root};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A panel of `domain` with every application enabled.
fn panel(dir: &Path, file: &str, domain: &str) -> PathBuf {
    let p = dir.join(file);
    let v = json!({
        "domain": domain,
        "admin": {"name": "admin", "email": "admin@mail.test"},
        "applications": {
            "mastodon": {"enable": true},
            "pixelfed": {"enable": true},
            "peertube": {"enable": true},
        },
    });
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    p
}

fn graph(panel: &Path) -> Value {
    eval(panel, &example("hosting.nix"), None, None).unwrap_or_else(|e| panic!("{e}"))
}

/// What a user checks on the backends: the name of each object, by what
/// it is (the resource and the input that names it).
fn objects(g: &Value) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for (name, r) in g["resources"].as_object().unwrap() {
        let inputs = &r["inputs"];
        for field in ["name", "privateKeyPath", "secretKeyPath"] {
            if let Some(v) = inputs[field].as_str() {
                found.insert(format!("{name}.{field}"), v.to_owned());
            }
        }
        if r["provider"] == "dns-record" {
            found.insert(
                format!("{name}.owner"),
                inputs["owner"].as_str().unwrap().into(),
            );
        }
    }
    found.insert(
        "adminPassword.file".into(),
        g["seams"]["adminPassword"]["file"].as_str().unwrap().into(),
    );
    found
}

fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// S3's rules for bucket names, as AWS documents them.
fn is_s3_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
        && !["xn--", "sthree-", "amzn-s3-demo-"]
            .iter()
            .any(|p| name.starts_with(p))
        && !["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Every name is within its backend's limits.
fn assert_within_limits(g: &Value) {
    for (name, r) in g["resources"].as_object().unwrap() {
        let inputs = &r["inputs"];
        match (r["provider"].as_str().unwrap(), r["type"].as_str().unwrap()) {
            ("proxmox-vm", _) => {
                let n = inputs["name"].as_str().unwrap();
                assert!(is_dns_label(n), "{name}: VM name {n:?}");
            }
            ("garage-bucket", "bucket") => {
                let n = inputs["name"].as_str().unwrap();
                assert!(is_s3_bucket_name(n), "{name}: bucket name {n:?}");
            }
            _ => {}
        }
        for field in ["privateKeyPath", "secretKeyPath"] {
            if let Some(p) = inputs[field].as_str() {
                let file = Path::new(p).file_name().unwrap();
                assert!(file.len() <= 255, "{name}.{field}: {p}");
            }
        }
    }
}

#[test]
fn domains_that_collided_under_the_old_naming_get_distinct_names_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    // `replaceStrings ["."] ["-"]` made the same names of these.
    let a = graph(&panel(dir.path(), "a.json", "alice-shop.fedi.test"));
    let b = graph(&panel(dir.path(), "b.json", "alice.shop.fedi.test"));
    let (a, b) = (objects(&a), objects(&b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same resources"
    );
    assert!(a.len() > 20, "{a:?}");
    let a_names: BTreeSet<&String> = a.values().collect();
    for (what, name) in &b {
        assert!(
            !a_names.contains(name),
            "{what} of alice.shop.fedi.test is {name:?}, which alice-shop.fedi.test uses too"
        );
    }
    // Readable, and unchanged for a domain without `-`.
    assert_eq!(b["mastodon-vm.name"], "mastodon-alice-shop-fedi-test");
    assert_eq!(a["mastodon-vm.name"], "mastodon-alice--shop-fedi-test");
    assert_eq!(
        a["mastodon-media-bucket.name"],
        "alice--shop-fedi-test-mastodon-media"
    );
}

#[test]
fn long_and_reserved_names_are_shortened_within_the_limits_and_stay_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let label = "a".repeat(55);
    let domains = [
        format!("{label}.fedi.test"),
        format!("{label}-b.fedi.test"),
        format!("{label}.b.fedi.test"),
        // S3 reserves bucket names starting with `xn--` (IDNs' labels).
        "xn--bcher-kva.fedi.test".to_string(),
        "bcher-kva.fedi.test".to_string(),
    ];
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (i, domain) in domains.iter().enumerate() {
        let g = graph(&panel(dir.path(), &format!("{i}.json"), domain));
        assert_within_limits(&g);
        let mine: BTreeMap<String, String> = objects(&g)
            .into_iter()
            .map(|(what, name)| (name, what))
            .collect();
        for (name, what) in mine {
            if let Some((other, other_what)) =
                seen.insert(name.clone(), (domain.clone(), what.clone()))
            {
                panic!("{what} of {domain} and {other_what} of {other} are both {name:?}");
            }
        }
    }
    // A shortened name keeps its readable start.
    let g = graph(&panel(dir.path(), "long.json", &domains[0]));
    let vm = g["resources"]["mastodon-vm"]["inputs"]["name"]
        .as_str()
        .unwrap();
    assert!(
        vm.starts_with("mastodon-aaaa") && vm.contains("---"),
        "{vm}"
    );
    let idn = graph(&panel(dir.path(), "idn.json", &domains[3]));
    let bucket = idn["resources"]["mastodon-media-bucket"]["inputs"]["name"]
        .as_str()
        .unwrap();
    assert!(
        bucket.starts_with("bcher--kva-fedi-test-mastodon-media---"),
        "{bucket}"
    );
}

fn check_operators(operators: &[(&str, &Path)]) -> Result<Value, String> {
    let hosting = example("hosting.nix");
    let members: Vec<String> = operators
        .iter()
        .map(|(name, panel)| {
            format!(
                "{name} = {{ panelFile = {}; hostingFile = {}; }};",
                panel.display(),
                hosting.display()
            )
        })
        .collect();
    eval_expr(&format!(
        "(import {}/nix/configurator).checkOperators {{ {} }}",
        root().display(),
        members.join(" ")
    ))
}

#[test]
fn operators_that_would_share_a_backend_name_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let a = panel(dir.path(), "a.json", "alice-shop.fedi.test");
    let b = panel(dir.path(), "b.json", "alice.shop.fedi.test");
    let checked = check_operators(&[("alice", &a), ("bob", &b)]).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked["alice"].as_array().unwrap().len() > 20, "{checked}");

    // The same domain twice (a copied panel): every name is shared.
    let copy = panel(dir.path(), "copy.json", "alice-shop.fedi.test");
    let e = check_operators(&[("alice", &a), ("mallory", &copy)]).unwrap_err();
    assert!(e.contains("operator \"alice\""), "{e}");
    assert!(e.contains("operator \"mallory\""), "{e}");
    assert!(e.contains(&a.display().to_string()), "{e}");
    assert!(e.contains(&copy.display().to_string()), "{e}");
    assert!(e.contains("would both use the"), "{e}");
    assert!(e.contains("Fix: give one of them another domain"), "{e}");
}
