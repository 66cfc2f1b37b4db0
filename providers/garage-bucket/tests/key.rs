//! `key` against a real Garage server, checked through its admin and S3 APIs.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{GarageServer, block_on, provider};
use fedi_protocol::testkit::Redactions;
use serde_json::{Value, json};

fn bucket(garage: &GarageServer, name: &str) -> Value {
    provider()
        .create(
            "bucket",
            json!({"garage": garage.connection(), "name": name}),
            true,
        )
        .outputs()
}

fn key_inputs(garage: &GarageServer, extra: Value) -> Value {
    let mut inputs = json!({
        "garage": garage.connection(),
        "name": "mastodon",
        "secretKeyPath": garage.dir.path().join("keys/mastodon"),
    });
    inputs
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    inputs
}

/// What Garage says the key may do: alias -> [read, write, owner].
fn grants(garage: &GarageServer, key_id: &str) -> Vec<(String, [bool; 3])> {
    let info = garage.key_info(key_id).expect("the key exists");
    let mut grants: Vec<(String, [bool; 3])> = info["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let p = &b["permissions"];
            (
                b["globalAliases"][0].as_str().unwrap().to_string(),
                [p["read"] == true, p["write"] == true, p["owner"] == true],
            )
        })
        .filter(|(_, flags)| flags.iter().any(|f| *f))
        .collect();
    grants.sort();
    grants
}

fn can_write(garage: &GarageServer, key_id: &str, secret: &str, bucket: &str) -> bool {
    let s3 = common::s3(garage, key_id, secret);
    block_on(
        s3.put_object()
            .bucket(bucket)
            .key("probe")
            .body(b"x".to_vec().into())
            .send(),
    )
    .is_ok()
}

#[test]
fn exact_permissions_are_granted_and_revoked() {
    let garage = GarageServer::start();
    bucket(&garage, "media");
    bucket(&garage, "backups");
    let first = key_inputs(
        &garage,
        json!({
            "permissions": [
                {"bucket": "media", "read": true, "write": true},
                {"bucket": "backups", "read": true},
            ],
            "verify": true,
        }),
    );
    let outputs = provider().create("key", first.clone(), true).outputs();
    let id = outputs["accessKeyId"].as_str().unwrap().to_string();
    assert!(id.starts_with("GK"));
    assert_eq!(
        grants(&garage, &id),
        [
            ("backups".into(), [true, false, false]),
            ("media".into(), [true, true, false])
        ]
    );
    assert_eq!(
        garage.key_info(&id).unwrap()["permissions"]["createBucket"],
        false
    );

    // The secret file holds Garage's secret, mode 0600, and it works.
    let path = garage.dir.path().join("keys/mastodon");
    assert_eq!(outputs["secretKeyPath"], json!(path));
    let secret = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(
        secret,
        garage.key_info(&id).unwrap()["secretAccessKey"]
            .as_str()
            .unwrap()
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(can_write(&garage, &id, &secret, "media"));
    assert!(
        !can_write(&garage, &id, &secret, "backups"),
        "read-only on backups"
    );

    // Exact: media loses write and gains owner, backups is dropped, the key
    // may create buckets.
    let second = key_inputs(
        &garage,
        json!({
            "permissions": [{"bucket": "media", "read": true, "owner": true}],
            "allowCreateBucket": true,
        }),
    );
    let updated = provider()
        .update("key", second.clone(), first, outputs.clone())
        .outputs();
    assert_eq!(updated["accessKeyId"], outputs["accessKeyId"]);
    assert_eq!(
        grants(&garage, &id),
        [("media".into(), [true, false, true])]
    );
    assert_eq!(
        garage.key_info(&id).unwrap()["permissions"]["createBucket"],
        true
    );
    assert!(!can_write(&garage, &id, &secret, "media"));

    let read = provider()
        .read("key", second.clone(), updated.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"], json!([]), "{read}");

    // Someone grants more behind the deployment's back: read says so, and
    // the next update takes it away again.
    let media = garage.bucket_info("media").unwrap();
    garage.admin(
        reqwest::Method::POST,
        "AllowBucketKey",
        &[],
        Some(json!({"bucketId": media["id"], "accessKeyId": id, "permissions": {"write": true}})),
    );
    let read = provider()
        .read("key", second.clone(), updated.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"][0]["property"], "permissions", "{read}");
    provider()
        .update("key", second.clone(), second.clone(), updated.clone())
        .outputs();
    assert_eq!(
        grants(&garage, &id),
        [("media".into(), [true, false, true])]
    );

    // Delete: the key and its secret file go; again is fine.
    provider()
        .delete("key", second.clone(), updated.clone())
        .body("xDeleteResourceResponse");
    assert!(garage.key_info(&id).is_none());
    assert!(!path.exists());
    provider()
        .delete("key", second, updated)
        .body("xDeleteResourceResponse");
}

#[test]
fn a_missing_secret_file_is_fetched_again_never_regenerated() {
    let garage = GarageServer::start();
    let inputs = key_inputs(&garage, json!({}));
    let outputs = provider().create("key", inputs.clone(), true).outputs();
    let path = garage.dir.path().join("keys/mastodon");
    let secret = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    let read = provider()
        .read("key", inputs.clone(), outputs.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"][0]["property"], "secretKeyPath");
    let again = provider()
        .update("key", inputs.clone(), inputs, outputs.clone())
        .outputs();
    assert_eq!(again, outputs);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        secret,
        "the same secret, from Garage"
    );
}

#[test]
fn a_create_retried_after_a_crash_finds_the_key() {
    let garage = GarageServer::start();
    bucket(&garage, "media");
    let inputs = key_inputs(
        &garage,
        json!({"permissions": [{"bucket": "media", "read": true}]}),
    );
    let request = json!({"createResourceRequest": {"type": "key", "inputProperties": inputs, "isStateful": true}});
    provider().crash_at("after-key-create", request);

    let outputs = provider().create("key", inputs, true).outputs();
    let keys = garage.admin(reqwest::Method::GET, "ListKeys", &[], None);
    // The bucket's ownership key aside.
    let keys: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| {
            !k["name"]
                .as_str()
                .unwrap()
                .starts_with("fedi-garage-bucket ownership:")
        })
        .collect();
    assert_eq!(keys.len(), 1, "one key, no orphan: {keys:?}");
    assert_eq!(keys[0]["id"], outputs["accessKeyId"]);
    assert_eq!(
        grants(&garage, outputs["accessKeyId"].as_str().unwrap()),
        [("media".into(), [true, false, false])]
    );
}

#[test]
fn a_second_owner_with_the_same_key_name_never_gets_the_first_owners_secret() {
    let garage = GarageServer::start();
    let alice = key_inputs(
        &garage,
        json!({"owner": "fediversity:alice-shop-fedi-test"}),
    );
    let a = provider().create("key", alice, true).outputs();
    let b_path = garage.dir.path().join("keys/bob");
    let bob = key_inputs(
        &garage,
        json!({"owner": "fediversity:alice.shop", "secretKeyPath": b_path}),
    );
    let b = provider().create("key", bob, true).outputs();
    assert_ne!(a["accessKeyId"], b["accessKeyId"], "two keys");
    let a_secret = std::fs::read_to_string(garage.dir.path().join("keys/mastodon")).unwrap();
    let b_secret = std::fs::read_to_string(&b_path).unwrap();
    assert_ne!(a_secret, b_secret, "bob was handed alice's secret");

    // The id is not the guessable `GK` + SHA-256 of the name any more.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"fedi-garage-key:mastodon");
    let guessable: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    assert_ne!(a["accessKeyId"], format!("GK{guessable}"));

    // Another hosting secret, other ids: nobody without it can plant one.
    let secret_file = garage.dir.path().join("key-id-secret");
    std::fs::write(&secret_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut other = key_inputs(
        &garage,
        json!({"owner": "fediversity:alice-shop-fedi-test", "secretKeyPath": garage.dir.path().join("keys/c")}),
    );
    other["garage"]["keyIdSecret"] = json!({"file": secret_file});
    let c = provider().create("key", other, true).outputs();
    assert_ne!(c["accessKeyId"], a["accessKeyId"]);

    // A short secret is refused, naming the field, never echoing it.
    std::fs::write(&secret_file, "short-5ec\n").unwrap();
    let mut weak = key_inputs(
        &garage,
        json!({"secretKeyPath": garage.dir.path().join("keys/d")}),
    );
    weak["garage"]["keyIdSecret"] = json!({"file": secret_file});
    let message = provider().create("key", weak, true).error_message();
    assert!(
        message.contains("invalid input `garage.keyIdSecret`"),
        "{message}"
    );
    assert!(!message.contains("short-5ec"), "{message}");
}

#[test]
fn a_key_that_is_not_provably_this_resources_is_refused_until_taken_over() {
    let garage = GarageServer::start();
    let inputs = key_inputs(&garage, json!({"owner": "fediversity:alice"}));
    let outputs = provider().create("key", inputs.clone(), true).outputs();
    let id = outputs["accessKeyId"].as_str().unwrap().to_string();
    // Someone renames it (another resource of this owner took the name).
    garage.admin(
        reqwest::Method::POST,
        "UpdateKey",
        &[("id", &id)],
        Some(json!({"name": "someone-else"})),
    );
    // The state is lost and the resource is created again: not adopted.
    let message = provider()
        .create("key", inputs.clone(), true)
        .error_message();
    assert!(
        message.contains(&format!(
            "the Garage key {id} is named \"someone-else\", not \"mastodon\""
        )),
        "{message}"
    );
    assert!(message.contains("refusing to adopt"), "{message}");
    assert!(message.contains("takeOver = true"), "{message}");
    // Update and delete compare the recorded name first.
    let message = provider()
        .update("key", inputs.clone(), inputs.clone(), outputs.clone())
        .error_message();
    assert!(message.contains("refusing to update"), "{message}");
    let message = provider()
        .delete("key", inputs.clone(), outputs.clone())
        .error_message();
    assert!(message.contains("refusing to delete"), "{message}");
    assert_eq!(
        garage.key_info(&id).unwrap()["name"],
        "someone-else",
        "untouched"
    );

    // Deliberately: takeOver adopts it and renames it back.
    let mut take = inputs.clone();
    take["takeOver"] = json!(true);
    let adopted = provider().create("key", take, true).outputs();
    assert_eq!(adopted["accessKeyId"], id.as_str());
    assert_eq!(garage.key_info(&id).unwrap()["name"], "mastodon");
}

#[test]
fn a_planted_secret_file_is_not_overwritten() {
    let garage = GarageServer::start();
    let path = garage.dir.path().join("keys/mastodon");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "another key's secret\n").unwrap();
    let inputs = key_inputs(&garage, json!({}));
    let message = provider().create("key", inputs, true).error_message();
    assert!(message.contains("`secretKeyPath`"), "{message}");
    assert!(
        message.contains("does not hold this key's secret"),
        "{message}"
    );
    assert!(!message.contains("another key's secret\n"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "another key's secret\n"
    );
}

#[test]
fn verify_fails_the_deployment_when_s3_refuses() {
    let garage = GarageServer::start();
    bucket(&garage, "media");
    let mut inputs = key_inputs(
        &garage,
        json!({"permissions": [{"bucket": "media", "read": true, "write": true}], "verify": true}),
    );
    // S3 signatures with another region are refused by Garage.
    inputs["garage"]["region"] = json!("elsewhere");
    let message = provider().create("key", inputs, true).error_message();
    assert!(message.contains("permission denied `verify`: verification: key `mastodon` cannot write in bucket `media`"), "{message}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let garage = GarageServer::start();
    bucket(&garage, "media");
    let cases = [
        (
            json!({"permissions": [{"bucket": "nowhere", "read": true}]}),
            "not found `permissions[0].bucket`: bucket `nowhere` does not exist",
        ),
        (
            json!({"permissions": [{"bucket": "media", "read": true}, {"bucket": "media", "write": true}]}),
            "invalid input `permissions[1].bucket`: bucket `media` is listed twice",
        ),
        (
            json!({"permissions": [{"bucket": "media"}]}),
            "invalid input `permissions[0]`: grants nothing",
        ),
        (
            json!({"permissions": [{"bucket": "media", "delete": true}]}),
            "invalid input `permissions[0].delete`: unknown field",
        ),
        (
            json!({"secretKeyPath": "/nix/store/x-secret"}),
            "invalid input `secretKeyPath`: is in the Nix store",
        ),
    ];
    for (extra, expected) in cases {
        let message = provider()
            .create("key", key_inputs(&garage, extra), true)
            .error_message();
        assert!(
            message.contains(expected),
            "{message}\nshould contain: {expected}"
        );
    }
}

#[test]
fn secrets_never_reach_logs_or_responses() {
    let garage = GarageServer::start();
    bucket(&garage, "media");
    let inputs = key_inputs(
        &garage,
        json!({"permissions": [{"bucket": "media", "read": true, "write": true}], "verify": true}),
    );
    let verbose = provider().env("FEDI_LOG", "trace");
    let created = verbose.create("key", inputs.clone(), true);
    let outputs = created.outputs();
    let secret = std::fs::read_to_string(garage.dir.path().join("keys/mastodon"))
        .unwrap()
        .trim()
        .to_string();
    let updated = verbose.update("key", inputs.clone(), inputs.clone(), outputs.clone());
    let read = verbose.read("key", inputs, outputs);
    for exchange in [&created, &updated, &read] {
        for secret in [secret.as_str(), common::ADMIN_TOKEN] {
            assert!(
                !exchange.stderr.contains(secret),
                "secret on stderr:\n{}",
                exchange.stderr
            );
            assert!(!exchange.response.to_string().contains(secret));
        }
    }
    assert!(
        created
            .stderr
            .contains("verified the key's permissions through S3"),
        "{}",
        created.stderr
    );
}

#[test]
fn transcript() {
    let garage = GarageServer::start();
    let provider = provider().recording();
    let media = json!({"garage": garage.connection(), "name": "media", "maxSize": 1_000_000, "website": {}});
    let bucket = provider.create("bucket", media.clone(), true).outputs();
    provider.read("bucket", media.clone(), bucket.clone());
    let inputs = key_inputs(
        &garage,
        json!({"permissions": [{"bucket": "media", "read": true, "write": true}]}),
    );
    let key = provider.create("key", inputs.clone(), true).outputs();
    provider.read("key", inputs.clone(), key.clone());
    provider.delete("key", inputs, key);
    provider.delete("bucket", media.clone(), bucket.clone());
    provider.delete("bucket", media, bucket);
    let mut redactions = Redactions::new()
        .key("bucketId", "[bucket id]")
        .path(garage.dir.path(), "[TMP]");
    for (port, name) in [
        (garage.admin_port, "[admin port]"),
        (garage.s3_port, "[s3 port]"),
        (garage.web_port, "[web port]"),
    ] {
        redactions = redactions.text(format!(":{port}"), &format!(":{name}"));
    }
    insta::assert_snapshot!(provider.transcript().to_jsonl(&redactions));
}
