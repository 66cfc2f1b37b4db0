//! `deployment` end to end: the provider binary run as NixOps4 runs it,
//! deploying systems built with real Nix to a real sshd with its own store
//! (see `common`), and checking what arrived and ran there.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestHost, build_system, closure, provider};
use fedi_protocol::testkit::assert_generated_in_sync;
use serde_json::json;

#[test]
fn first_deploy_unchanged_redeploy_and_changed_system() {
    let host = TestHost::start();
    let one = build_system("lifecycle-one", "ok", 3, "lifecycle");
    let two = build_system("lifecycle-two", "ok", 3, "lifecycle");

    // First deploy: the closure arrives in the host's own store, the
    // profile gets generation 1, the switch ran once.
    assert!(host.store_paths().is_empty());
    let first = provider().create("deployment", host.inputs(&one), false);
    let out = first.outputs();
    assert_eq!(out["system"], json!(one));
    assert_eq!(out["generation"], json!(1));
    assert_eq!(out["changed"], json!(true));
    assert_eq!(out["pathsCopied"], json!(closure(&one).len()));
    assert_eq!(out["previousSystem"], json!(null));
    assert_eq!(host.store_paths(), closure(&one));
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(one.as_str())
    );
    assert_eq!(host.read("/root/boot-default").trim(), one);
    assert_eq!(
        host.activations(),
        [format!("switch {one}"), format!("done switch {one}")]
    );

    // Unchanged: nothing copied, nothing switched, quickly.
    let start = Instant::now();
    let again = provider().create("deployment", host.inputs(&one), false);
    let elapsed = start.elapsed();
    let out = again.outputs();
    assert_eq!(out["changed"], json!(false));
    assert_eq!(out["pathsCopied"], json!(0));
    assert_eq!(out["generation"], json!(1));
    assert_eq!(out["previousSystem"], json!(one));
    assert_eq!(host.activations().len(), 2, "no second switch");
    assert!(
        elapsed < Duration::from_secs(3),
        "unchanged redeploy took {elapsed:?}"
    );

    // Changed: only the new paths are copied (the shared ones stay as
    // they were registered), generation 2, the switch ran.
    let registered = |p: &str| std::fs::symlink_metadata(host.path(p)).unwrap().ctime();
    let shared: Vec<String> = closure(&one)
        .into_iter()
        .filter(|p| closure(&two).contains(p))
        .collect();
    assert_eq!(shared.len(), 3, "the dependencies are shared");
    let before: Vec<i64> = shared.iter().map(|p| registered(p)).collect();
    let changed = provider().update("deployment", host.inputs(&two), host.inputs(&one), out);
    let out = changed.outputs();
    assert_eq!(out["generation"], json!(2));
    assert_eq!(out["changed"], json!(true));
    assert_eq!(out["previousSystem"], json!(one));
    assert_eq!(
        out["pathsCopied"],
        json!(closure(&two).len() - shared.len())
    );
    let after: Vec<i64> = shared.iter().map(|p| registered(p)).collect();
    assert_eq!(before, after, "shared paths were not copied again");
    let mut expected = closure(&one);
    expected.extend(closure(&two));
    expected.sort();
    expected.dedup();
    assert_eq!(host.store_paths(), expected);
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(two.as_str())
    );
    assert_eq!(host.generation().as_deref(), Some("system-2-link"));

    // Read reports what runs; drift once the host runs something else.
    let read = provider().read("deployment", host.inputs(&two), changed.outputs());
    assert_eq!(read.body("xReadResourceResponse")["drift"], json!([]));
    provider()
        .create("deployment", host.inputs(&one), false)
        .outputs();
    let read = provider().read("deployment", host.inputs(&two), changed.outputs());
    let drift = read.body("xReadResourceResponse")["drift"].clone();
    assert_eq!(drift[0]["property"], "system", "{drift}");

    // Delete forgets: the host keeps running its system.
    let deleted = provider().delete("deployment", host.inputs(&one), changed.outputs());
    deleted.body("xDeleteResourceResponse");
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(one.as_str())
    );
}

#[test]
fn each_goal_does_what_it_says() {
    let host = TestHost::start();
    let one = build_system("goals-one", "ok", 1, "goals");
    let two = build_system("goals-two", "ok", 1, "goals");
    let with_goal = |system: &str, goal: &str| {
        let mut inputs = host.inputs(system);
        inputs["goal"] = json!(goal);
        inputs
    };

    // test: running, not for boot, no profile.
    let out = provider()
        .create("deployment", with_goal(&one, "test"), false)
        .outputs();
    assert_eq!(out["generation"], json!(null));
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(one.as_str())
    );
    assert_eq!(host.generation(), None);
    assert_eq!(host.read("/root/boot-default"), "");

    // boot: profile and boot entry, the running system stays.
    let out = provider()
        .create("deployment", with_goal(&two, "boot"), false)
        .outputs();
    assert_eq!(out["generation"], json!(1));
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));
    assert_eq!(host.read("/root/boot-default").trim(), two);
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(one.as_str())
    );

    // dry-activate: runs, changes nothing.
    let activations = host.activations().len();
    let out = provider()
        .create("deployment", with_goal(&one, "dry-activate"), false)
        .outputs();
    assert_eq!(out["changed"], json!(false));
    assert_eq!(host.activations().len(), activations + 2);
    assert_eq!(
        host.activations()[activations],
        format!("dry-activate {one}")
    );
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));
    assert_eq!(host.read("/root/boot-default").trim(), two);

    // Magic rollback does not apply to boot.
    let mut inputs = with_goal(&two, "boot");
    inputs["magicRollback"] = json!(true);
    let error = provider()
        .create("deployment", inputs, false)
        .error_message();
    assert!(error.contains("invalid input `magicRollback`"), "{error}");
}

#[test]
fn a_host_offering_another_key_is_refused_naming_that_key() {
    let host = TestHost::start();
    let system = build_system("hostkey", "ok", 1, "hostkey");
    let other = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("k"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut inputs = host.inputs(&system);
    inputs["hostPublicKey"] = json!(
        std::fs::read_to_string(other.path().join("k.pub"))
            .unwrap()
            .trim()
    );
    let error = provider()
        .create("deployment", inputs, false)
        .error_message();
    let fingerprint = String::from_utf8(
        std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(host.dir.join("host_key.pub"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_string();
    assert!(
        error.starts_with("deployment: permission denied `hostPublicKey`"),
        "{error}"
    );
    assert!(
        error.contains(&format!("offered host key {fingerprint}")),
        "{error}"
    );
    assert!(error.contains("hint:"), "{error}");
    assert!(host.store_paths().is_empty(), "nothing was copied");
    assert!(host.activations().is_empty());
}

#[test]
fn an_unreachable_host_fails_in_bounded_time_saying_so() {
    let system = build_system("unreachable", "ok", 1, "unreachable");
    let host_key = {
        let host = TestHost::start();
        host.host_key.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    std::fs::write(&key, "not used").unwrap();

    // Nothing listens: refused at once.
    let port = fedi_protocol::testkit::free_tcp_port();
    let inputs = json!({"system": system, "host": "127.0.0.1", "port": port,
        "hostPublicKey": host_key, "sshKeyFile": key, "connectTimeout": 2});
    let error = provider()
        .create("deployment", inputs, false)
        .error_message();
    assert!(error.contains("backend unavailable (retryable)"), "{error}");
    assert!(
        error.contains(&format!("root@127.0.0.1:{port} refused the connection")),
        "{error}"
    );

    // Something accepts TCP but never speaks SSH: bounded by connectTimeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let inputs = json!({"system": system, "host": "127.0.0.1", "port": port,
        "hostPublicKey": host_key, "sshKeyFile": key, "connectTimeout": 2});
    let start = Instant::now();
    let error = provider()
        .create("deployment", inputs, false)
        .error_message();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    assert!(
        error.contains("no SSH answer from root@127.0.0.1"),
        "{error}"
    );
    assert!(error.contains("within 2 s"), "{error}");
}

#[test]
fn a_failing_activation_is_rolled_back_and_reported_with_its_output() {
    let host = TestHost::start();
    let good = build_system("rollback-good", "ok", 1, "rollback");
    let bad = build_system("rollback-bad", "fail", 1, "rollback");
    provider()
        .create("deployment", host.inputs(&good), false)
        .outputs();
    let error = provider()
        .create("deployment", host.inputs(&bad), false)
        .error_message();
    assert!(
        error.starts_with("deployment: invalid input `system`"),
        "{error}"
    );
    assert!(error.contains("exited with status 4"), "{error}");
    assert!(
        error.contains("the host rolled back to generation 1"),
        "{error}"
    );
    assert!(
        error.contains("error: test.service failed to start"),
        "{error}"
    );
    assert!(error.contains("hint: fix the configuration"), "{error}");
    // The good system runs again, generation 1 is current, the failed one
    // is gone from the profile.
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(good.as_str())
    );
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));
    assert!(!host.path("/nix/var/nix/profiles/system-2-link").exists());
    assert_eq!(host.read("/root/boot-default").trim(), good);
    assert_eq!(
        host.activations().last().unwrap(),
        &format!("done switch {good}")
    );
    host.wait_idle();
}

#[test]
fn a_system_that_locks_the_deployer_out_is_rolled_back_by_the_host() {
    let host = TestHost::start();
    let good = build_system("lockout-good", "ok", 1, "lockout");
    let bad = build_system("lockout-bad", "lockout", 1, "lockout");
    provider()
        .create("deployment", host.inputs(&good), false)
        .outputs();
    let mut inputs = host.inputs(&bad);
    inputs["confirmTimeout"] = json!(3);
    let start = Instant::now();
    let exchange = provider().create("deployment", inputs, false);
    let error = exchange.error_message();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert!(
        exchange.stderr.contains("cannot confirm the new system"),
        "{}",
        exchange.stderr
    );
    assert!(
        error.contains("could not be confirmed over a new SSH connection within 3 s"),
        "{error}"
    );
    assert!(
        error.contains("the host rolled back to generation 1"),
        "{error}"
    );
    assert!(
        error.contains("did not accept the deployer's key"),
        "{error}"
    );
    // Access is back, and so is the good system.
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(good.as_str())
    );
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));
    assert!(host.path("/root/.ssh/authorized_keys").exists());
    let out = provider()
        .create("deployment", host.inputs(&good), false)
        .outputs();
    assert_eq!(out["changed"], json!(false));
    host.wait_idle();
}

#[test]
fn the_switch_survives_the_connection_dropping_and_its_outcome_is_reported() {
    let host = TestHost::start();
    let system = build_system("drop", "drop", 1, "drop");
    let exchange = provider().create("deployment", host.inputs(&system), false);
    let out = exchange.outputs();
    assert_eq!(out["generation"], json!(1));
    assert_eq!(
        host.activations(),
        [
            format!("switch {system}"),
            "dropped the SSH connections and carried on".to_string(),
            format!("done switch {system}")
        ]
    );
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(system.as_str())
    );
}

#[test]
fn keys_arrive_atomically_with_owner_and_mode_and_are_never_logged() {
    let host = TestHost::start();
    let system = build_system("keys", "ok", 1, "keys");
    let secrets = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-garage-key-7f2b";
    std::fs::write(secrets.path().join("s3"), secret).unwrap();
    std::fs::write(secrets.path().join("admin"), "admin-password-91c\n").unwrap();
    let mut inputs = host.inputs(&system);
    inputs["keys"] = json!([
        {"name": "s3-secret", "file": secrets.path().join("s3")},
        {"name": "admin", "file": secrets.path().join("admin"), "destDir": "/root/app/secrets",
         "owner": "root", "group": "daemon", "permissions": "0640", "uploadAt": "post-activation"},
    ]);
    let exchange = provider()
        .env("FEDI_LOG", "trace")
        .create("deployment", inputs.clone(), false);
    let out = exchange.outputs();
    assert_eq!(
        out["keys"],
        json!(["/run/keys/s3-secret", "/root/app/secrets/admin"])
    );
    let s3 = host.path("/run/keys/s3-secret");
    assert_eq!(std::fs::read_to_string(&s3).unwrap(), secret);
    let meta = std::fs::metadata(&s3).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let admin = host.path("/root/app/secrets/admin");
    assert_eq!(
        std::fs::read_to_string(&admin).unwrap(),
        "admin-password-91c\n"
    );
    let meta = std::fs::metadata(&admin).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), 1, "group daemon");
    // Nothing else in the directories: no temporary file left.
    let names: Vec<_> = std::fs::read_dir(host.path("/run/keys"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["s3-secret"]);
    // Not in the store, not in the log, not in the response.
    for path in host.store_paths() {
        let text = std::fs::read_to_string(host.path(&path)).unwrap_or_default();
        assert!(!text.contains(secret), "{path}");
    }
    assert!(!exchange.stderr.contains(secret), "{}", exchange.stderr);
    assert!(
        !exchange.stderr.contains("admin-password"),
        "{}",
        exchange.stderr
    );
    assert!(!exchange.response.to_string().contains(secret));

    // Same content again: unchanged. A new content: replaced, changed.
    let out = provider()
        .create("deployment", inputs.clone(), false)
        .outputs();
    assert_eq!(out["changed"], json!(false));
    std::fs::write(secrets.path().join("s3"), "rotated").unwrap();
    let out = provider().create("deployment", inputs, false).outputs();
    assert_eq!(out["changed"], json!(true));
    assert_eq!(std::fs::read_to_string(&s3).unwrap(), "rotated");
}

#[test]
fn unsigned_paths_are_refused_with_the_way_out() {
    let host = TestHost::start();
    let system = build_system("unsigned", "ok", 1, "unsigned");
    let mut inputs = host.inputs(&system);
    inputs["checkSignatures"] = json!(true);
    let error = provider()
        .create("deployment", inputs, false)
        .error_message();
    assert!(error.contains("without a signature it trusts"), "{error}");
    assert!(error.contains("nix store sign"), "{error}");
    assert!(error.contains("checkSignatures = false"), "{error}");
    assert!(host.activations().is_empty());
}

#[test]
fn bad_inputs_are_refused_before_connecting() {
    let system = build_system("inputs", "ok", 1, "inputs");
    let base = json!({"system": system, "host": "127.0.0.1", "port": 9,
        "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lOJyc3Qjl1UVrRQnxW7fH1ncTdfWSPMWUy9Rj8Jv"});
    let cases = [
        (
            json!({"system": "/tmp/x"}),
            "invalid input `system`: `/tmp/x` is not a store path",
        ),
        (
            json!({"system": "/nix/store/00000000000000000000000000000000-missing"}),
            "is not in the deploying machine's Nix store",
        ),
        (json!({"host": "root@web"}), "invalid input `host`"),
        (
            json!({"hostPublicKey": "not a key"}),
            "invalid input `hostPublicKey`",
        ),
        (json!({"goal": "reboot"}), "`goal`"),
        (
            json!({"sshKeyFile": "/nonexistent/key"}),
            "invalid input `sshKeyFile`: cannot read",
        ),
        (
            json!({"sshKeyFile": "deployer/id_ed25519"}),
            "invalid input `sshKeyFile`: `deployer/id_ed25519` is a relative path",
        ),
        (
            json!({"keys": [{"name": "../x", "file": "/etc/hostname"}]}),
            "invalid input `keys[0].name`",
        ),
        (
            json!({"keys": [{"name": "x", "file": "/nonexistent/secret"}]}),
            "invalid input `keys[0].file`",
        ),
        (
            json!({"keys": [{"name": "x", "file": "/etc/hostname", "permissions": "rw"}]}),
            "invalid input `keys[0].permissions`",
        ),
        (
            json!({"confirmTimeout": 0}),
            "invalid input `confirmTimeout`",
        ),
    ];
    for (patch, expected) in cases {
        let mut inputs = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            inputs[k] = v.clone();
        }
        let start = Instant::now();
        let error = provider()
            .create("deployment", inputs, false)
            .error_message();
        assert!(
            error.contains(expected),
            "expected `{expected}` in: {error}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn transcript() {
    let host = TestHost::start();
    let system = build_system("transcript", "ok", 1, "transcript");
    let harness = provider().recording();
    let first = harness.create("deployment", host.inputs(&system), false);
    harness.create("deployment", host.inputs(&system), false);
    harness.read("deployment", host.inputs(&system), first.outputs());
    harness.delete("deployment", host.inputs(&system), first.outputs());
    let mut bad = host.inputs(&system);
    bad["port"] = json!(0);
    harness.create("deployment", bad, false);
    let redactions = host.redactions().text(&system[..44], "/nix/store/<hash>");
    insta::assert_snapshot!(harness.transcript().to_jsonl(&redactions));
}

#[test]
fn generated_nix_module_and_reference_are_in_sync() {
    assert_generated_in_sync(
        env!("CARGO_BIN_EXE_fedi-nixos-config"),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    );
}

#[test]
fn a_non_root_user_deploys_through_sudo_and_without_it_is_told_so() {
    let host = TestHost::start();
    let system = build_system("sudo", "ok", 2, "sudo");

    // Without sudo: refused before anything is copied, naming the fix.
    let error = provider()
        .create("deployment", host.inputs_as_deployer(&system, false), false)
        .error_message();
    assert!(
        error.starts_with("deployment: invalid input `sudo`"),
        "{error}"
    );
    assert!(
        error.contains("`deployer` is not root on deployer@127.0.0.1"),
        "{error}"
    );
    assert!(error.contains("set `sudo = true`"), "{error}");
    assert!(error.contains("passwordless sudo"), "{error}");
    assert!(host.store_paths().is_empty(), "nothing was copied");
    assert!(host.activations().is_empty(), "nothing was activated");

    // With sudo: the same result as root's, done by root on the host.
    let out = provider()
        .create("deployment", host.inputs_as_deployer(&system, true), false)
        .outputs();
    assert_eq!(out["generation"], json!(1));
    assert_eq!(out["changed"], json!(true));
    assert_eq!(out["pathsCopied"], json!(closure(&system).len()));
    assert_eq!(host.store_paths(), closure(&system));
    for path in closure(&system) {
        let meta = std::fs::symlink_metadata(host.path(&path)).unwrap();
        assert_eq!(
            meta.uid(),
            0,
            "{path} is owned by root, as the daemon adds it"
        );
    }
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));
    let profile = std::fs::symlink_metadata(host.path("/nix/var/nix/profiles/system-1-link"));
    assert_eq!(profile.unwrap().uid(), 0, "root set the profile");
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(system.as_str())
    );
    assert_eq!(host.read("/root/boot-default").trim(), system);
    assert_eq!(
        host.activations(),
        [format!("switch {system}"), format!("done switch {system}")],
        "the switch ran once, as root (it writes to /root)"
    );

    // Unchanged, through sudo too.
    let out = provider()
        .create("deployment", host.inputs_as_deployer(&system, true), false)
        .outputs();
    assert_eq!(out["changed"], json!(false));
    assert_eq!(out["generation"], json!(1));
    assert_eq!(host.activations().len(), 2);
}

/// A provider for runs that abort: its temporary files (the SSH session's
/// directory, which an aborted run cannot remove) go to `tmp`.
fn crashing_provider(tmp: &Path) -> fedi_protocol::testkit::Harness {
    provider().env("TMPDIR", &tmp.display().to_string())
}

#[test]
fn a_deployment_that_died_after_the_copy_completes_when_retried() {
    let host = TestHost::start();
    let system = build_system("crash-copy", "ok", 3, "crash-copy");
    let tmp = tempfile::tempdir().unwrap();
    let request = json!({"createResourceRequest": {
        "type": "deployment", "inputProperties": host.inputs(&system), "isStateful": false}});
    let stderr = crashing_provider(tmp.path()).crash_at("after-copy", request);
    assert!(stderr.contains("closure copied"), "{stderr}");
    // The closure arrived, nothing was activated.
    assert_eq!(host.store_paths(), closure(&system));
    assert!(host.activations().is_empty());
    assert_eq!(host.generation(), None);
    let registered = |p: &str| std::fs::symlink_metadata(host.path(p)).unwrap().ctime();
    let before: Vec<i64> = closure(&system).iter().map(|p| registered(p)).collect();

    let out = provider()
        .create("deployment", host.inputs(&system), false)
        .outputs();
    assert_eq!(out["pathsCopied"], json!(0), "nothing copied twice");
    let after: Vec<i64> = closure(&system).iter().map(|p| registered(p)).collect();
    assert_eq!(before, after, "the paths were not copied again");
    assert_eq!(out["generation"], json!(1));
    assert_eq!(out["changed"], json!(true));
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(system.as_str())
    );
    assert_eq!(
        host.activations(),
        [format!("switch {system}"), format!("done switch {system}")]
    );
}

#[test]
fn a_retry_follows_the_activation_a_dead_deployment_started_and_confirms_it() {
    let host = TestHost::start();
    let good = build_system("crash-activation-good", "ok", 1, "crash-activation");
    let slow = build_system("crash-activation-slow", "slow", 1, "crash-activation");
    let first = provider()
        .create("deployment", host.inputs(&good), false)
        .outputs();
    assert_eq!(first["generation"], json!(1));
    let tmp = tempfile::tempdir().unwrap();
    let request = json!({"createResourceRequest": {
        "type": "deployment", "inputProperties": host.inputs(&slow), "isStateful": false}});
    let stderr = crashing_provider(tmp.path()).crash_at("after-activation-started", request);
    assert!(
        stderr.contains("activation started on the host"),
        "{stderr}"
    );
    // The detached switch goes on without the deployer (it takes 3 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.activations().last() != Some(&format!("switch {slow}")) {
        assert!(Instant::now() < deadline, "{:?}", host.activations());
        std::thread::sleep(Duration::from_millis(20));
    }

    // A deployment of another system meanwhile is refused, naming it.
    let error = provider()
        .create("deployment", host.inputs(&good), false)
        .error_message();
    assert!(error.contains("another activation is running"), "{error}");
    assert!(error.contains(&slow), "{error}");

    // The retry follows that activation and confirms it (magic rollback)
    // instead of starting a second one.
    let exchange = provider().create("deployment", host.inputs(&slow), false);
    let out = exchange.outputs();
    assert!(
        exchange
            .stderr
            .contains("started by an earlier deployment, still runs"),
        "{}",
        exchange.stderr
    );
    assert_eq!(out["generation"], json!(2));
    assert_eq!(out["changed"], json!(true));
    assert_eq!(out["pathsCopied"], json!(0));
    assert_eq!(out["previousSystem"], json!(good));
    host.wait_idle();
    // Confirmed: well past the confirmation window (5 s) it still runs.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(slow.as_str())
    );
    assert_eq!(host.generation().as_deref(), Some("system-2-link"));
    let switches = host
        .activations()
        .iter()
        .filter(|l| **l == format!("switch {slow}"))
        .count();
    assert_eq!(switches, 1, "activated once: {:?}", host.activations());
    assert_eq!(
        host.activations().last(),
        Some(&format!("done switch {slow}"))
    );
}

#[test]
fn a_retry_reports_the_failure_of_the_activation_a_dead_deployment_started() {
    let host = TestHost::start();
    let good = build_system("crash-fail-good", "ok", 1, "crash-fail");
    let bad = build_system("crash-fail-bad", "fail", 1, "crash-fail");
    provider()
        .create("deployment", host.inputs(&good), false)
        .outputs();
    let tmp = tempfile::tempdir().unwrap();
    let request = json!({"createResourceRequest": {
        "type": "deployment", "inputProperties": host.inputs(&bad), "isStateful": false}});
    crashing_provider(tmp.path()).crash_at("after-activation-started", request);
    // The failing switch ends, and the host rolls back, by itself.
    host.wait_idle();
    assert_eq!(
        host.link("/run/current-system").as_deref(),
        Some(good.as_str())
    );
    let activations = host.activations();

    // The retry reports that outcome, with the output, without activating
    // the failing system a second time.
    let error = provider()
        .create("deployment", host.inputs(&bad), false)
        .error_message();
    assert!(error.contains("exited with status 4"), "{error}");
    assert!(
        error.contains("the host rolled back to generation 1"),
        "{error}"
    );
    assert!(
        error.contains("error: test.service failed to start"),
        "{error}"
    );
    assert_eq!(host.activations(), activations, "not activated again");
    assert_eq!(host.generation().as_deref(), Some("system-1-link"));

    // Once reported, deploying it again is a new attempt.
    let error = provider()
        .create("deployment", host.inputs(&bad), false)
        .error_message();
    assert!(error.contains("exited with status 4"), "{error}");
    assert_eq!(
        host.activations()
            .iter()
            .filter(|l| **l == format!("switch {bad}"))
            .count(),
        2
    );
    host.wait_idle();
}

#[test]
fn a_key_upload_never_follows_what_a_service_user_planted_in_dest_dir() {
    let host = TestHost::start();
    let system = build_system("planted", "ok", 1, "planted");
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("admin"), "admin-password-5e1\n").unwrap();
    // `destDir` is writable by the service user (mode 0777 stands for it).
    let dest_dir = host.path("/root/app/svc");
    std::fs::create_dir_all(&dest_dir).unwrap();
    std::fs::set_permissions(&dest_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // What the service user planted: the key's name a link to a directory
    // of root's, and the old predictable temporary name a link to a file of
    // root's.
    let victim_dir = host.path("/root/victim-dir");
    std::fs::create_dir_all(&victim_dir).unwrap();
    let victim = host.path("/root/victim");
    std::fs::write(&victim, "root only").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("/root/victim-dir", dest_dir.join("admin")).unwrap();
    std::os::unix::fs::symlink("/root/victim", dest_dir.join(".admin.fedi-tmp")).unwrap();

    let mut inputs = host.inputs(&system);
    inputs["keys"] = json!([
        {"name": "admin", "file": secrets.path().join("admin"), "destDir": "/root/app/svc",
         "owner": "root", "group": "daemon", "permissions": "0640"},
    ]);
    let out = provider()
        .create("deployment", inputs.clone(), false)
        .outputs();
    assert_eq!(out["keys"], json!(["/root/app/svc/admin"]));
    // The key replaced the link; nothing went through either link.
    let admin = dest_dir.join("admin");
    let meta = std::fs::symlink_metadata(&admin).unwrap();
    assert!(meta.is_file(), "the key is a file, not the planted link");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, 1));
    assert_eq!(
        std::fs::read_to_string(&admin).unwrap(),
        "admin-password-5e1\n"
    );
    assert_eq!(
        std::fs::read_dir(&victim_dir).unwrap().count(),
        0,
        "nothing was moved into the directory the link pointed at"
    );
    let victim_meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only");
    assert_eq!(victim_meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((victim_meta.uid(), victim_meta.gid()), (0, 0));
    // No staging directory is left behind.
    let staging: Vec<_> = std::fs::read_dir(&dest_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("fedi-upload"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
    // Again, unchanged.
    let out = provider().create("deployment", inputs, false).outputs();
    assert_eq!(out["changed"], json!(false));
}

/// The provider in a mount namespace of its own where root's home (from
/// /etc/passwd, which `ssh` reads, not `$HOME`) and `$HOME` are `home`, and
/// `/etc/ssh/ssh_config` is `system_config`.
fn provider_with_ssh_configs(
    dir: &Path,
    home: &Path,
    system_config: &Path,
) -> fedi_protocol::testkit::Harness {
    let passwd: String = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .map(|line| {
            let mut fields: Vec<String> = line.split(':').map(str::to_string).collect();
            if fields.first().is_some_and(|f| f == "root") && fields.len() == 7 {
                fields[5] = home.display().to_string();
            }
            fields.join(":") + "\n"
        })
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    let wrapper = dir.join("provider.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private sh -c 'mount --bind {passwd} \
             /etc/passwd && mount --bind {config} /etc/ssh/ssh_config && exec \"$0\" \"$@\"' {exe} \"$@\"\n",
            passwd = dir.join("passwd").display(),
            config = system_config.display(),
            exe = env!("CARGO_BIN_EXE_fedi-nixos-config"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    fedi_testbeds::nix::env()
        .iter()
        .fold(
            fedi_protocol::testkit::Harness::new(&wrapper),
            |h, (name, value)| h.env(name, value),
        )
        .env("HOME", &home.display().to_string())
}

#[test]
fn hostile_ssh_configs_cannot_bypass_the_host_key_pin() {
    let host = TestHost::start();
    let system = build_system("sshconfig", "ok", 1, "sshconfig");
    let dir = tempfile::tempdir().unwrap();
    // A pinned key that is not the host's: the deployment must be refused.
    let other = dir.path().join("other");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let mut inputs = host.inputs(&system);
    inputs["hostPublicKey"] = json!(
        std::fs::read_to_string(dir.path().join("other.pub"))
            .unwrap()
            .trim()
    );
    // Configurations that vouch for whatever key the host offers.
    let offered = dir.path().join("offered");
    std::fs::write(
        &offered,
        format!("fedi-nixos-config-target {}\n", host.host_key),
    )
    .unwrap();
    let hostile = format!(
        "Host *\n  KnownHostsCommand /bin/cat {offered}\n  StrictHostKeyChecking no\n",
        offered = offered.display()
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/config"), &hostile).unwrap();
    std::fs::set_permissions(
        home.join(".ssh/config"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let system_config = dir.path().join("ssh_config");
    std::fs::write(&system_config, &hostile).unwrap();
    let error = provider_with_ssh_configs(dir.path(), &home, &system_config)
        .create("deployment", inputs, false)
        .error_message();
    assert!(
        error.starts_with("deployment: permission denied `hostPublicKey`"),
        "{error}"
    );
    assert!(error.contains("refusing to connect"), "{error}");
    assert!(host.store_paths().is_empty(), "nothing was copied");
    assert!(host.activations().is_empty());
    // With the right pin, the same hostile configurations change nothing.
    let out = provider_with_ssh_configs(dir.path(), &home, &system_config)
        .create("deployment", host.inputs(&system), false)
        .outputs();
    assert_eq!(out["system"], json!(system));
}

#[test]
fn a_lock_taken_by_a_concurrent_deploy_is_never_taken_over_before_its_pid_is_written() {
    let host = TestHost::start();
    let system = build_system("lockrace", "ok", 1, "lockrace");
    let state = host.path("/run/fedi-nixos-config");
    let lock = state.join("active");
    // A concurrent deployment's lock as it is between taking it and its
    // runner recording its pid: an older version's (no launcher pid), and
    // this version's (the launching shell's pid, alive: pid 1 of the host).
    for launcher in [None, Some("1")] {
        std::fs::create_dir_all(&lock).unwrap();
        std::fs::write(lock.join("id"), "concurrent-42\n").unwrap();
        std::fs::write(lock.join("system"), format!("{system}\n")).unwrap();
        std::fs::write(lock.join("goal"), "switch\n").unwrap();
        std::fs::write(lock.join("previous"), "\n").unwrap();
        if let Some(pid) = launcher {
            std::fs::write(lock.join("launcher"), format!("{pid}\n")).unwrap();
        }
        let error = provider()
            .create("deployment", host.inputs(&system), false)
            .error_message();
        assert!(
            error.contains("conflict: another activation is running on"),
            "{launcher:?}: {error}"
        );
        assert!(error.contains("concurrent-42"), "{error}");
        assert!(host.activations().is_empty(), "nothing was activated");
        assert_eq!(
            std::fs::read_to_string(lock.join("id")).unwrap(),
            "concurrent-42\n",
            "the other deployment's lock is intact"
        );
        std::fs::remove_dir_all(&lock).unwrap();
    }
    // A lock whose launcher is gone and that never got a pid is stale: it
    // is taken over.
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(lock.join("id"), "crashed-7\n").unwrap();
    std::fs::write(lock.join("launcher"), "999999\n").unwrap();
    let out = provider()
        .create("deployment", host.inputs(&system), false)
        .outputs();
    assert_eq!(out["system"], json!(system));
    assert_eq!(
        host.activations().last().unwrap(),
        &format!("done switch {system}")
    );
    host.wait_idle();
    let leftovers: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".active") || n.starts_with(".stale"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn key_contents_quoted_by_the_host_are_scrubbed_from_errors() {
    let host = TestHost::start();
    let system = build_system("leak", "leak", 1, "leak");
    let secrets = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-printed-by-activation-4d1";
    std::fs::write(secrets.path().join("s3"), secret).unwrap();
    let mut inputs = host.inputs(&system);
    inputs["keys"] = json!([{"name": "s3", "file": secrets.path().join("s3")}]);
    let exchange = provider().create("deployment", inputs, false);
    let error = exchange.error_message();
    // The activation's output is in the error, without the key.
    assert!(error.contains("loading keys:"), "{error}");
    assert!(error.contains("app.service failed to start"), "{error}");
    assert!(!error.contains(secret), "{error}");
    assert!(error.contains("[REDACTED]"), "{error}");
    host.wait_idle();
}

#[test]
fn two_deployments_racing_for_the_host_activate_one_system_and_refuse_the_other() {
    let host = TestHost::start();
    let first = build_system("race-a", "slow", 1, "race");
    let second = build_system("race-b", "slow", 1, "race");
    // Both copied first, so that the two launches meet.
    for system in [&first, &second] {
        let mut inputs = host.inputs(system);
        inputs["goal"] = json!("dry-activate");
        provider().create("deployment", inputs, false).outputs();
    }
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let runs: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|system| {
            let inputs = host.inputs(&system);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                provider().create("deployment", inputs, false).response
            })
        })
        .collect();
    let responses: Vec<serde_json::Value> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let won: Vec<_> = responses
        .iter()
        .filter_map(|r| r.pointer("/createResourceResponse/outputProperties/system"))
        .collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one deployment activates: {responses:?}"
    );
    let lost = responses
        .iter()
        .find_map(|r| r.pointer("/errorResponse/message").and_then(|m| m.as_str()))
        .expect("the other is refused");
    assert!(lost.contains("another activation is running on"), "{lost}");
    host.wait_idle();
    let switches: Vec<_> = host
        .activations()
        .into_iter()
        .filter(|l| l.starts_with("done switch"))
        .collect();
    assert_eq!(
        switches,
        [format!("done switch {}", won[0].as_str().unwrap())]
    );
    assert_eq!(host.link("/run/current-system").as_deref(), won[0].as_str());
}
