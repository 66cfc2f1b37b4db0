//! `bucket` against a real Garage server.

mod common;

use common::{GarageServer, block_on, provider};
use serde_json::{Value, json};

fn inputs(garage: &GarageServer, extra: Value) -> Value {
    let mut inputs = json!({"garage": garage.connection()});
    inputs
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    inputs
}

fn put(garage: &GarageServer, bucket: &str, key: &str, body: &str) {
    let (id, secret) = garage.test_key(bucket);
    let s3 = common::s3(garage, &id, &secret);
    block_on(
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send(),
    )
    .unwrap();
}

#[test]
fn lifecycle_settings_rename_and_delete() {
    let garage = GarageServer::start();
    let declared = inputs(
        &garage,
        json!({
            "name": "media",
            "maxSize": 1_000_000,
            "maxObjects": 100,
            "website": {"indexDocument": "index.html", "errorDocument": "404.html"},
            "corsRules": [{"allowedOrigins": ["https://video.example.org"], "allowedMethods": ["GET", "HEAD"], "maxAgeSeconds": 600}],
        }),
    );
    let outputs = provider()
        .create("bucket", declared.clone(), true)
        .outputs();
    let info = garage.bucket_info("media").expect("the bucket exists");
    assert_eq!(outputs["bucketId"], info["id"]);
    assert_eq!(outputs["name"], "media");
    assert_eq!(
        outputs["s3Endpoint"],
        format!("http://127.0.0.1:{}", garage.s3_port)
    );
    assert_eq!(outputs["region"], "garage");
    assert_eq!(
        outputs["websiteUrl"],
        format!("http://media.web.garage.localhost:{}/", garage.web_port)
    );
    assert_eq!(
        info["quotas"],
        json!({"maxSize": 1_000_000, "maxObjects": 100})
    );
    assert_eq!(info["websiteAccess"], true);
    assert_eq!(info["websiteConfig"]["indexDocument"], "index.html");
    assert_eq!(info["websiteConfig"]["errorDocument"], "404.html");
    assert_eq!(
        info["corsRules"][0]["AllowedOrigin"],
        json!(["https://video.example.org"])
    );
    assert_eq!(info["corsRules"][0]["MaxAgeSeconds"], 600);

    let read = provider()
        .read("bucket", declared.clone(), outputs.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"], json!([]), "in sync right after create");

    // Change one quota: the other is kept.
    let mut bigger = declared.clone();
    bigger["maxSize"] = json!(2_000_000);
    let updated = provider()
        .update("bucket", bigger.clone(), declared, outputs.clone())
        .outputs();
    assert_eq!(updated["bucketId"], outputs["bucketId"]);
    assert_eq!(
        garage.bucket_info("media").unwrap()["quotas"],
        json!({"maxSize": 2_000_000, "maxObjects": 100})
    );

    // Rename: same bucket, new alias, old alias gone; website off, no CORS.
    let renamed = inputs(
        &garage,
        json!({"name": "media-renamed", "maxSize": 2_000_000, "maxObjects": 100}),
    );
    let after = provider()
        .update("bucket", renamed.clone(), bigger, updated)
        .outputs();
    assert_eq!(after["bucketId"], outputs["bucketId"]);
    assert_eq!(
        after["websiteUrl"],
        Value::Null,
        "present, and null: {after}"
    );
    assert!(garage.bucket_info("media").is_none());
    let info = garage.bucket_info("media-renamed").unwrap();
    assert_eq!(info["websiteAccess"], false);
    assert_eq!(info["corsRules"].as_array().map(Vec::len).unwrap_or(0), 0);

    // Delete (empty, keep): gone; again: still fine.
    provider()
        .delete("bucket", renamed.clone(), after.clone())
        .body("xDeleteResourceResponse");
    assert!(garage.bucket_info("media-renamed").is_none());
    provider()
        .delete("bucket", renamed.clone(), after.clone())
        .body("xDeleteResourceResponse");
    let read = provider()
        .read("bucket", renamed, after)
        .body("xReadResourceResponse");
    assert_eq!(read, json!({"exists": false, "drift": []}));
}

#[test]
fn a_create_retried_after_a_crash_adopts_the_bucket() {
    let garage = GarageServer::start();
    let declared = inputs(&garage, json!({"name": "crashy", "maxObjects": 7}));
    let request = json!({"createResourceRequest": {"type": "bucket", "inputProperties": declared, "isStateful": true}});
    provider().crash_at("after-bucket-create", request);
    let made = garage
        .bucket_info("crashy")
        .expect("the crashed run made the bucket");

    let outputs = provider().create("bucket", declared, true).outputs();
    assert_eq!(outputs["bucketId"], made["id"], "the retry adopted it");
    let buckets = garage.admin(reqwest::Method::GET, "ListBuckets", &[], None);
    assert_eq!(
        buckets.as_array().unwrap().len(),
        1,
        "no duplicate: {buckets}"
    );
    assert_eq!(
        garage.bucket_info("crashy").unwrap()["quotas"]["maxObjects"],
        7
    );
}

#[test]
fn a_bucket_that_is_not_this_resources_is_refused_and_taken_over_only_deliberately() {
    let garage = GarageServer::start();
    // Planted: made by hand, private, with data.
    let planted = garage.admin(
        reqwest::Method::POST,
        "CreateBucket",
        &[],
        Some(json!({"globalAlias": "planted"})),
    );
    put(&garage, "planted", "private.txt", "secret diary");
    let website = inputs(
        &garage,
        json!({"name": "planted", "website": {}, "owner": "fediversity:alice"}),
    );
    let message = provider()
        .create("bucket", website.clone(), true)
        .error_message();
    assert!(
        message.contains("conflict `name`: bucket `planted`")
            && message.contains("is not this resource's"),
        "{message}"
    );
    assert!(message.contains("carries no ownership record"), "{message}");
    assert!(message.contains("takeOver = true"), "{message}");
    let info = garage.bucket_info("planted").unwrap();
    assert_eq!(info["websiteAccess"], false, "still private");
    assert_ne!(garage.web_get("planted", "/private.txt").0, 200);

    // Another owner's bucket of the same name: the error says whose.
    let bob = inputs(
        &garage,
        json!({"name": "shared", "owner": "fediversity:bob"}),
    );
    let bobs = provider().create("bucket", bob.clone(), true).outputs();
    put(&garage, "shared", "bob.jpg", "bob's photo");
    let alice = inputs(
        &garage,
        json!({"name": "shared", "owner": "fediversity:alice", "onDelete": "purge"}),
    );
    let message = provider()
        .create("bucket", alice.clone(), true)
        .error_message();
    assert!(
        message.contains("recorded as the bucket of `fediversity:bob bucket=shared`"),
        "{message}"
    );

    // Deliberately: takeOver adopts it and applies the declared settings...
    let mut take = website.clone();
    take["takeOver"] = json!(true);
    let outputs = provider().create("bucket", take, true).outputs();
    assert_eq!(outputs["bucketId"], planted["id"]);
    assert_eq!(
        garage.bucket_info("planted").unwrap()["websiteAccess"],
        true
    );
    // ... and from then on it is this resource's, without takeOver.
    provider()
        .update("bucket", website.clone(), website.clone(), outputs.clone())
        .outputs();

    // Alice takes bob's over: bob's update and delete are refused after.
    let mut take = alice.clone();
    take["takeOver"] = json!(true);
    let alices = provider().create("bucket", take, true).outputs();
    assert_eq!(alices["bucketId"], bobs["bucketId"]);
    let message = provider()
        .update("bucket", bob.clone(), bob.clone(), bobs.clone())
        .error_message();
    assert!(
        message.contains("recorded as the bucket of `fediversity:alice bucket=shared`"),
        "{message}"
    );
    assert!(message.contains("refusing to update"), "{message}");
    let mut purge = bob.clone();
    purge["onDelete"] = json!("purge");
    let message = provider().delete("bucket", purge, bobs).error_message();
    assert!(message.contains("refusing to delete"), "{message}");
    assert_eq!(
        garage.bucket_info("shared").unwrap()["objects"],
        1,
        "the data is still there"
    );
}

#[test]
fn a_bucket_made_before_ownership_records_is_still_this_resources() {
    let garage = GarageServer::start();
    // As the previous version made it: no record, but its id is in the state.
    let made = garage.admin(
        reqwest::Method::POST,
        "CreateBucket",
        &[],
        Some(json!({"globalAlias": "legacy"})),
    );
    let declared = inputs(
        &garage,
        json!({"name": "legacy", "owner": "fediversity:alice"}),
    );
    let recorded = json!({
        "bucketId": made["id"], "name": "legacy", "region": "garage",
        "s3Endpoint": format!("http://127.0.0.1:{}", garage.s3_port), "websiteUrl": null,
    });
    let outputs = provider()
        .update("bucket", declared.clone(), declared.clone(), recorded)
        .outputs();
    assert_eq!(outputs["bucketId"], made["id"]);
    // Now it carries the record: a create of it is a retry, not a planted one.
    let again = provider()
        .create("bucket", declared.clone(), true)
        .outputs();
    assert_eq!(again["bucketId"], made["id"]);
    provider()
        .delete("bucket", declared, outputs)
        .body("xDeleteResourceResponse");
    assert!(garage.bucket_info("legacy").is_none());
    let keys = garage.admin(reqwest::Method::GET, "ListKeys", &[], None);
    assert_eq!(
        keys.as_array().unwrap().len(),
        0,
        "the ownership key went with it: {keys}"
    );
}

#[test]
fn a_purge_against_an_s3_endpoint_that_never_answers_fails_in_bounded_time_and_leaves_no_key() {
    let garage = GarageServer::start();
    let declared = inputs(&garage, json!({"name": "stuck", "onDelete": "purge"}));
    let outputs = provider()
        .create("bucket", declared.clone(), true)
        .outputs();
    put(&garage, "stuck", "a", "b");

    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let mut hanging = declared.clone();
    hanging["garage"]["s3Endpoint"] = json!(format!("http://127.0.0.1:{port}"));
    hanging["garage"]["s3TimeoutSeconds"] = json!(2);
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(
            provider()
                .delete("bucket", hanging, outputs)
                .error_message(),
        );
    });
    let message = rx
        .recv_timeout(std::time::Duration::from_secs(90))
        .expect("the purge hung for more than 90 s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(
        message.contains("purging bucket") && message.contains("failed through S3"),
        "{message}"
    );
    let keys = garage.admin(reqwest::Method::GET, "ListKeys", &[], None);
    let names: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("fedi-purge")),
        "the temporary purge key is left: {names:?}"
    );
    assert_eq!(
        garage.bucket_info("stuck").unwrap()["objects"],
        1,
        "nothing deleted"
    );
}

#[test]
fn website_access_serves_public_reads() {
    let garage = GarageServer::start();
    let site = inputs(&garage, json!({"name": "site", "website": {}}));
    let outputs = provider().create("bucket", site.clone(), true).outputs();
    put(&garage, "site", "index.html", "<h1>hello fediverse</h1>");
    assert_eq!(
        garage.web_get("site", "/"),
        (200, "<h1>hello fediverse</h1>".to_string())
    );

    let private = inputs(&garage, json!({"name": "site"}));
    provider()
        .update("bucket", private, site, outputs)
        .outputs();
    let (status, _) = garage.web_get("site", "/");
    assert_ne!(status, 200, "website access is off again");
}

#[test]
fn cors_rules_are_served() {
    let garage = GarageServer::start();
    let declared = inputs(
        &garage,
        json!({
            "name": "videos",
            "corsRules": [{"allowedOrigins": ["https://video.example.org"], "allowedMethods": ["GET"], "allowedHeaders": ["*"]}],
        }),
    );
    provider().create("bucket", declared, true).outputs();
    let preflight = |origin: &str| {
        reqwest::blocking::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("http://127.0.0.1:{}/videos/clip.mp4", garage.s3_port),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .send()
            .unwrap()
    };
    let allowed = preflight("https://video.example.org");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://video.example.org")
    );
    // Garage refuses a preflight no rule allows (its error answers carry a
    // generic `*` header, so the status is what tells).
    let other = preflight("https://evil.example.com");
    assert_eq!(other.status(), reqwest::StatusCode::FORBIDDEN);
}

#[test]
fn keep_refuses_to_delete_data_and_purge_removes_everything() {
    let garage = GarageServer::start();
    let keep = inputs(&garage, json!({"name": "precious"}));
    let outputs = provider().create("bucket", keep.clone(), true).outputs();
    let (id, secret) = garage.test_key("precious");
    let s3 = common::s3(&garage, &id, &secret);
    block_on(async {
        for i in 0..3 {
            s3.put_object()
                .bucket("precious")
                .key(format!("toot-{i}.jpg"))
                .body(vec![7u8; 1000].into())
                .send()
                .await
                .unwrap();
        }
        let upload = s3
            .create_multipart_upload()
            .bucket("precious")
            .key("big.mp4")
            .send()
            .await
            .unwrap();
        s3.upload_part()
            .bucket("precious")
            .key("big.mp4")
            .upload_id(upload.upload_id().unwrap())
            .part_number(1)
            .body(vec![1u8; 1024].into())
            .send()
            .await
            .unwrap();
    });

    let message = provider()
        .delete("bucket", keep.clone(), outputs.clone())
        .error_message();
    assert!(
        message.contains("conflict: bucket `precious` still holds 3 objects"),
        "{message}"
    );
    assert!(message.contains("onDelete = \"purge\""), "{message}");
    assert_eq!(
        garage.bucket_info("precious").unwrap()["objects"],
        3,
        "the data is still there"
    );

    let purge = inputs(&garage, json!({"name": "precious", "onDelete": "purge"}));
    let outputs = provider()
        .update("bucket", purge.clone(), keep, outputs)
        .outputs();
    provider()
        .delete("bucket", purge, outputs)
        .body("xDeleteResourceResponse");
    assert!(garage.bucket_info("precious").is_none());
    let keys = garage.admin(reqwest::Method::GET, "ListKeys", &[], None);
    let names: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test-key"], "the temporary purge key is gone");
}

#[test]
fn read_reports_drift() {
    let garage = GarageServer::start();
    let declared = inputs(&garage, json!({"name": "drifty", "maxSize": 1000}));
    let outputs = provider()
        .create("bucket", declared.clone(), true)
        .outputs();
    garage.admin(
        reqwest::Method::POST,
        "UpdateBucket",
        &[("id", outputs["bucketId"].as_str().unwrap())],
        Some(json!({"quotas": {"maxSize": 5000, "maxObjects": null}, "websiteAccess": {"enabled": true, "indexDocument": "x.html"}})),
    );
    let read = provider()
        .read("bucket", declared, outputs)
        .body("xReadResourceResponse");
    let properties = fedi_protocol::testkit::drift_properties(&read);
    assert_eq!(properties, ["maxSize", "website"], "{read}");
}

#[test]
fn bad_inputs_and_backend_failures_are_clear_errors() {
    let garage = GarageServer::start();
    let cases = [
        (
            json!({"name": "Bad_Name"}),
            "invalid input `name`: \"Bad_Name\" is not a valid bucket name",
        ),
        (
            json!({"name": "okay", "corsRules": [{"allowedOrigins": ["*"], "allowedMethods": ["FETCH"]}]}),
            "invalid input `corsRules[0].allowedMethods`: \"FETCH\"",
        ),
        (
            json!({"name": "okay", "onDelete": "shred"}),
            "invalid input `onDelete`: unknown variant `shred`",
        ),
        (
            json!({"name": "okay", "maxSize": -1}),
            "invalid input `maxSize`",
        ),
        // S3's rules, before anything is sent (Garage's own answer named
        // no field).
        (
            json!({"name": "192.168.5.4"}),
            "invalid input `name`: \"192.168.5.4\" is not a valid bucket name: it must not be formatted as an IP address",
        ),
        (
            json!({"name": "xn--bcher-kva"}),
            "invalid input `name`: \"xn--bcher-kva\" is not a valid bucket name: S3 reserves this prefix",
        ),
        (
            json!({"name": "media-s3alias"}),
            "invalid input `name`: \"media-s3alias\" is not a valid bucket name: S3 reserves this suffix",
        ),
        (
            json!({"name": "okay", "owner": "has space"}),
            "invalid input `owner`",
        ),
    ];
    for (extra, expected) in cases {
        let message = provider()
            .create("bucket", inputs(&garage, extra), true)
            .error_message();
        assert!(
            message.contains(expected),
            "{message}\nshould contain: {expected}"
        );
    }

    // A wrong admin token: refused, and never echoed.
    let wrong = garage.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token-5c8e").unwrap();
    let mut declared = inputs(&garage, json!({"name": "okay"}));
    declared["garage"]["adminToken"] = json!({"file": wrong});
    let exchange = provider()
        .env("FEDI_LOG", "trace")
        .create("bucket", declared, true);
    let message = exchange.error_message();
    assert!(message.contains("permission denied"), "{message}");
    assert!(message.contains("garage.adminToken"), "{message}");
    assert!(!message.contains("not-the-token") && !exchange.stderr.contains("not-the-token"));

    // Plain http to another machine: the token would travel in clear.
    let mut declared = inputs(&garage, json!({"name": "okay"}));
    declared["garage"]["adminEndpoint"] = json!("http://garage.example.org:3903");
    let message = provider().create("bucket", declared, true).error_message();
    assert!(
        message.contains("invalid input `garage.adminEndpoint`")
            && message.contains("travel in clear"),
        "{message}"
    );
    assert!(message.contains("https://"), "{message}");

    // A missing token file.
    let mut declared = inputs(&garage, json!({"name": "okay"}));
    declared["garage"]["adminToken"] = json!({"file": garage.dir.path().join("nope")});
    let message = provider().create("bucket", declared, true).error_message();
    assert!(
        message.contains("invalid input `garage.adminToken`: cannot read secret file"),
        "{message}"
    );

    // Garage down: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut declared = inputs(&garage, json!({"name": "okay"}));
    declared["garage"]["adminEndpoint"] = json!(format!("http://127.0.0.1:{closed}"));
    let message = provider().create("bucket", declared, true).error_message();
    assert!(
        message.contains("backend unavailable (retryable): cannot reach the Garage admin API"),
        "{message}"
    );
    assert!(message.contains("garage.adminEndpoint"), "{message}");
}

#[test]
fn the_admin_token_never_reaches_logs_or_responses() {
    let garage = GarageServer::start();
    let declared = inputs(&garage, json!({"name": "quiet", "onDelete": "purge"}));
    let verbose = provider().env("FEDI_LOG", "trace");
    let created = verbose.create("bucket", declared.clone(), true);
    let outputs = created.outputs();
    put(&garage, "quiet", "x", "y");
    let read = verbose.read("bucket", declared.clone(), outputs.clone());
    let deleted = verbose.delete("bucket", declared, outputs);
    deleted.body("xDeleteResourceResponse");
    for exchange in [&created, &read, &deleted] {
        assert!(
            !exchange.stderr.contains(common::ADMIN_TOKEN),
            "{}",
            exchange.stderr
        );
        assert!(!exchange.response.to_string().contains(common::ADMIN_TOKEN));
    }
    assert!(
        deleted.stderr.contains("purged the bucket's data"),
        "{}",
        deleted.stderr
    );
}

#[test]
fn generated_nix_module_and_reference_are_in_sync() {
    fedi_protocol::testkit::assert_generated_in_sync(
        env!("CARGO_BIN_EXE_fedi-garage-bucket"),
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    );
}
