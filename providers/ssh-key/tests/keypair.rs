//! `keypair` end to end: the provider binary run as NixOps4 runs it, its keys
//! checked with OpenSSH's own `ssh-keygen`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fedi_protocol::testkit::{Harness, Redactions, assert_generated_in_sync};
use serde_json::{Value, json};

fn provider() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_fedi-ssh-key"))
}

/// `ssh-keygen -y -f path` (with `-P passphrase`): the public key OpenSSH
/// derives from our private key file.
fn ssh_keygen_public(path: &Path, passphrase: Option<&str>) -> Result<String, String> {
    let mut command = Command::new("ssh-keygen");
    command
        .arg("-y")
        .arg("-P")
        .arg(passphrase.unwrap_or(""))
        .arg("-f")
        .arg(path);
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen is installed (openssh-client)");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap().trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `ssh-keygen -l -f path`: `<bits> <fingerprint> <comment> (<TYPE>)`.
fn ssh_keygen_fingerprint(path: &Path) -> (u32, String) {
    let output = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut fields = text.split_whitespace();
    let bits = fields.next().unwrap().parse().unwrap();
    (bits, fields.next().unwrap().to_string())
}

/// The key type and base64 of an OpenSSH public key line (no comment).
fn key_material(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn every_algorithm_makes_keys_openssh_accepts() {
    let keys = Keys::new();
    let cases = [
        (json!({}), "ssh-ed25519", 256),
        (json!({"algorithm": "rsa"}), "ssh-rsa", 3072),
        (
            json!({"algorithm": "rsa", "rsaBits": 4096}),
            "ssh-rsa",
            4096,
        ),
        (json!({"algorithm": "ecdsa"}), "ecdsa-sha2-nistp256", 256),
        (
            json!({"algorithm": "ecdsa", "ecdsaCurve": "P-384"}),
            "ecdsa-sha2-nistp384",
            384,
        ),
    ];
    for (i, (extra, key_type, bits)) in cases.into_iter().enumerate() {
        let path = keys.path(&format!("keys/key{i}"));
        let mut inputs = json!({"privateKeyPath": path, "comment": format!("test-{i}")});
        inputs
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let outputs = provider().create("keypair", inputs, true).outputs();
        let public = outputs["publicKey"].as_str().unwrap();
        assert!(public.starts_with(&format!("{key_type} ")), "{public}");
        assert!(public.ends_with(&format!(" test-{i}")), "{public}");
        assert_eq!(outputs["bits"], bits);
        assert_eq!(outputs["privateKeyPath"], json!(path));
        assert!(
            outputs.get("privateKey").is_none_or(Value::is_null),
            "the private key is not an output by default"
        );

        let derived = ssh_keygen_public(&path, None).expect("ssh-keygen reads our key");
        assert_eq!(key_material(&derived), key_material(public));
        let (keygen_bits, keygen_fingerprint) = ssh_keygen_fingerprint(&path);
        assert_eq!(keygen_fingerprint, outputs["fingerprint"].as_str().unwrap());
        assert_eq!(keygen_bits, bits);
        assert_eq!(mode(&path), 0o600);
    }
    assert_eq!(mode(&keys.path("keys")), 0o700);
}

#[test]
fn passphrase_encrypts_the_key_and_never_shows_up() {
    let keys = Keys::new();
    let secret_file = keys.path("passphrase");
    std::fs::write(&secret_file, "correct horse battery staple\n").unwrap();
    let path = keys.path("id_enc");
    let exchange = provider().env("FEDI_LOG", "trace").create(
        "keypair",
        json!({"privateKeyPath": path, "passphrase": {"file": secret_file}}),
        true,
    );
    let outputs = exchange.outputs();
    let derived = ssh_keygen_public(&path, Some("correct horse battery staple")).expect("decrypts");
    assert_eq!(
        key_material(&derived),
        key_material(outputs["publicKey"].as_str().unwrap())
    );
    assert!(
        ssh_keygen_public(&path, None).is_err(),
        "the file is encrypted"
    );
    assert!(ssh_keygen_public(&path, Some("wrong")).is_err());
    assert!(
        !exchange.stderr.contains("correct horse"),
        "{}",
        exchange.stderr
    );

    // Changing the passphrase re-encrypts the same key.
    let new_secret = keys.path("passphrase2");
    std::fs::write(&new_secret, "tr0ub4dor&3").unwrap();
    let updated = provider()
        .update(
            "keypair",
            json!({"privateKeyPath": path, "passphrase": {"file": new_secret}}),
            json!({"privateKeyPath": path, "passphrase": {"file": secret_file}}),
            outputs.clone(),
        )
        .outputs();
    assert_eq!(updated["fingerprint"], outputs["fingerprint"]);
    assert!(ssh_keygen_public(&path, Some("tr0ub4dor&3")).is_ok());
    assert!(ssh_keygen_public(&path, Some("correct horse battery staple")).is_err());
}

#[test]
fn lifecycle_keeps_the_key_until_asked_for_a_new_one() {
    let keys = Keys::new();
    let path = keys.path("deployer");
    let inputs = json!({"privateKeyPath": path, "comment": "one"});
    let created = provider().create("keypair", inputs.clone(), true).outputs();

    // Same inputs: same key, file untouched.
    let before = std::fs::read(&path).unwrap();
    let same = provider()
        .update("keypair", inputs.clone(), inputs.clone(), created.clone())
        .outputs();
    assert_eq!(same, created);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A new comment: same key, new comment, in the file too.
    let commented = json!({"privateKeyPath": path, "comment": "two"});
    let recommented = provider()
        .update("keypair", commented.clone(), inputs, created.clone())
        .outputs();
    assert_eq!(recommented["fingerprint"], created["fingerprint"]);
    assert!(recommented["publicKey"].as_str().unwrap().ends_with(" two"));
    assert!(ssh_keygen_public(&path, None).unwrap().ends_with(" two"));

    // Rotation trigger: a new key.
    let rotated_inputs =
        json!({"privateKeyPath": path, "comment": "two", "rotationTrigger": {"epoch": 2}});
    let rotated = provider()
        .update(
            "keypair",
            rotated_inputs.clone(),
            commented,
            recommented.clone(),
        )
        .outputs();
    assert_ne!(rotated["fingerprint"], created["fingerprint"]);
    assert_eq!(
        ssh_keygen_fingerprint(&path).1,
        rotated["fingerprint"].as_str().unwrap()
    );

    // Algorithm change: a new key of the new algorithm.
    let ecdsa_inputs = json!({"privateKeyPath": path, "comment": "two", "rotationTrigger": {"epoch": 2}, "algorithm": "ecdsa"});
    let ecdsa = provider()
        .update(
            "keypair",
            ecdsa_inputs.clone(),
            rotated_inputs,
            rotated.clone(),
        )
        .outputs();
    assert_ne!(ecdsa["fingerprint"], rotated["fingerprint"]);
    assert_eq!(ecdsa["algorithm"], "ecdsa");

    // Path change: the same key moves.
    let moved_path = keys.path("elsewhere/deployer");
    let moved_inputs = json!({"privateKeyPath": moved_path, "comment": "two", "rotationTrigger": {"epoch": 2}, "algorithm": "ecdsa"});
    let moved = provider()
        .update("keypair", moved_inputs.clone(), ecdsa_inputs, ecdsa.clone())
        .outputs();
    assert_eq!(moved["fingerprint"], ecdsa["fingerprint"]);
    assert!(!path.exists());
    assert_eq!(
        ssh_keygen_fingerprint(&moved_path).1,
        moved["fingerprint"].as_str().unwrap()
    );

    // Read: in sync.
    let read = provider()
        .read("keypair", moved_inputs.clone(), moved.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["exists"], true);
    assert_eq!(read["drift"], json!([]));
    assert_eq!(read["outputProperties"], moved);

    // Delete, twice.
    provider()
        .delete("keypair", moved_inputs.clone(), moved.clone())
        .body("xDeleteResourceResponse");
    assert!(!moved_path.exists());
    provider()
        .delete("keypair", moved_inputs.clone(), moved.clone())
        .body("xDeleteResourceResponse");
    let read = provider()
        .read("keypair", moved_inputs, moved)
        .body("xReadResourceResponse");
    assert_eq!(read, json!({"exists": false, "drift": []}));
}

#[test]
fn a_missing_key_file_on_update_is_an_error_not_a_new_key() {
    let keys = Keys::new();
    let path = keys.path("id");
    let inputs = json!({"privateKeyPath": path});
    let created = provider().create("keypair", inputs.clone(), true).outputs();
    std::fs::remove_file(&path).unwrap();
    let message = provider()
        .update("keypair", inputs.clone(), inputs, created)
        .error_message();
    assert!(
        message.contains("not found `privateKeyPath`: the private key file"),
        "{message}"
    );
    assert!(message.contains("is missing"), "{message}");
    assert!(
        message.contains("copy the key file from the machine that created it"),
        "{message}"
    );
    assert!(message.contains("change `rotationTrigger`"), "{message}");
    assert!(!path.exists(), "no key was generated silently");
}

#[test]
fn a_replaced_key_file_is_reported_and_protected() {
    let keys = Keys::new();
    let path = keys.path("id");
    let inputs = json!({"privateKeyPath": path});
    let created = provider().create("keypair", inputs.clone(), true).outputs();
    // Someone puts another key there.
    let other = keys.path("other");
    provider()
        .create("keypair", json!({"privateKeyPath": other}), true)
        .outputs();
    std::fs::rename(&other, &path).unwrap();

    let read = provider()
        .read("keypair", inputs.clone(), created.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"][0]["property"], "publicKey");
    let update = provider()
        .update("keypair", inputs.clone(), inputs.clone(), created.clone())
        .error_message();
    assert!(update.contains("holds another key"), "{update}");
    let delete = provider()
        .delete("keypair", inputs, created)
        .error_message();
    assert!(delete.contains("left untouched"), "{delete}");
    assert!(path.exists(), "someone else's key is not deleted");
}

#[test]
fn create_adopts_a_matching_key_left_by_a_crashed_attempt_and_refuses_others() {
    let keys = Keys::new();
    let path = keys.path("id");
    let first = provider()
        .create("keypair", json!({"privateKeyPath": path}), true)
        .outputs();
    // NixOps4 never recorded `first` (the run crashed): create runs again.
    let retry = provider()
        .create(
            "keypair",
            json!({"privateKeyPath": path, "comment": "x"}),
            true,
        )
        .outputs();
    assert_eq!(retry["fingerprint"], first["fingerprint"]);
    assert!(retry["publicKey"].as_str().unwrap().ends_with(" x"));

    let before = std::fs::read(&path).unwrap();
    let message = provider()
        .create(
            "keypair",
            json!({"privateKeyPath": path, "algorithm": "rsa"}),
            true,
        )
        .error_message();
    assert!(
        message.contains("already holds a 256-bit ed25519 key"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the existing key is untouched"
    );

    let junk = keys.path("junk");
    std::fs::write(&junk, "not a key").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let message = provider()
        .create("keypair", json!({"privateKeyPath": junk}), true)
        .error_message();
    assert!(
        message.contains("is not an OpenSSH private key"),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(&junk).unwrap(), "not a key");
}

#[test]
fn a_crash_while_replacing_leaves_the_old_key_whole() {
    let keys = Keys::new();
    let path = keys.path("id");
    let inputs = json!({"privateKeyPath": path});
    let created = provider().create("keypair", inputs.clone(), true).outputs();
    let rotate = json!({"privateKeyPath": path, "rotationTrigger": 1});
    let request = json!({"updateResourceRequest": {
        "resource": {"type": "keypair", "inputProperties": inputs, "outputProperties": created},
        "inputProperties": rotate,
    }});
    // Crash at the worst moment: the new key written to a temporary file,
    // not yet renamed over the old one.
    provider().crash_at("abort-before-rename", request);
    assert_eq!(
        ssh_keygen_fingerprint(&path).1,
        created["fingerprint"].as_str().unwrap(),
        "old key intact"
    );
    let leftovers: Vec<String> = std::fs::read_dir(keys.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "the crashed write left its temporary file: {leftovers:?}"
    );

    // NixOps4 retries: the rotation completes and the temporary file goes.
    let rotated = provider()
        .update(
            "keypair",
            rotate,
            json!({"privateKeyPath": path}),
            created.clone(),
        )
        .outputs();
    assert_ne!(rotated["fingerprint"], created["fingerprint"]);
    assert_eq!(
        ssh_keygen_fingerprint(&path).1,
        rotated["fingerprint"].as_str().unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(keys.dir.path())
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(leftovers.len(), 1);
}

#[test]
fn a_kill_at_any_moment_never_leaves_a_half_written_key() {
    let keys = Keys::new();
    let path = keys.path("id");
    let inputs = json!({"privateKeyPath": path, "algorithm": "rsa", "rsaBits": 4096});
    let mut recorded = provider().create("keypair", inputs.clone(), true).outputs();
    for (round, delay_ms) in [0u64, 5, 20, 50, 100, 200, 400].into_iter().enumerate() {
        let rotate = json!({"privateKeyPath": path, "algorithm": "rsa", "rsaBits": 4096, "rotationTrigger": round});
        let request = json!({"updateResourceRequest": {
            "resource": {"type": "keypair", "inputProperties": inputs, "outputProperties": recorded},
            "inputProperties": rotate,
        }});
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedi-ssh-key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "{request}").unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        // Whatever the moment, the file is a whole key that OpenSSH reads
        // completely (private part included): the old key, or the new one
        // if the process got as far as the rename.
        let derived = ssh_keygen_public(&path, None)
            .unwrap_or_else(|e| panic!("round {round} (killed after {delay_ms} ms): {e}"));
        let fingerprint = ssh_keygen_fingerprint(&path).1;
        // If it finished before the kill, the file holds the new key; if it
        // was killed, NixOps4 recorded nothing and the next round starts
        // from the recorded outputs, whatever the file holds.
        let finished = serde_json::from_slice::<Value>(&output.stdout)
            .ok()
            .and_then(|r| {
                r.pointer("/updateResourceResponse/outputProperties")
                    .cloned()
            });
        if let Some(outputs) = finished {
            assert_eq!(outputs["fingerprint"], fingerprint);
            assert_eq!(
                key_material(outputs["publicKey"].as_str().unwrap()),
                key_material(&derived)
            );
            recorded = outputs;
        }
        assert_eq!(mode(&path), 0o600);
    }
    // A completed run afterwards leaves exactly the key file: no temporary
    // file of a killed run survives.
    let last = json!({"privateKeyPath": path, "algorithm": "rsa", "rsaBits": 4096, "rotationTrigger": "last"});
    let outputs = provider()
        .update("keypair", last, inputs, recorded)
        .outputs();
    assert_eq!(
        ssh_keygen_fingerprint(&path).1,
        outputs["fingerprint"].as_str().unwrap()
    );
    let names: Vec<_> = std::fs::read_dir(keys.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["id"]);
}

#[test]
fn bad_inputs_are_clear_errors_naming_the_field() {
    let keys = Keys::new();
    let path = keys.path("id");
    let cases = [
        (
            json!({"privateKeyPath": path, "algoritm": "rsa"}),
            "invalid input `algoritm`: unknown field",
        ),
        (
            json!({"privateKeyPath": path, "algorithm": "dsa"}),
            "invalid input `algorithm`: unknown variant `dsa`, expected one of `ed25519`, `rsa`, `ecdsa`",
        ),
        (
            json!({"algorithm": "rsa"}),
            "invalid input `privateKeyPath`: missing field `privateKeyPath`",
        ),
        (
            json!({"privateKeyPath": path, "algorithm": "rsa", "rsaBits": 2048}),
            "invalid input `rsaBits`: 2048 is not a supported RSA key size",
        ),
        (
            json!({"privateKeyPath": path, "ecdsaCurve": "P-521"}),
            "invalid input `ecdsaCurve`: unknown variant `P-521`",
        ),
        (
            json!({"privateKeyPath": path, "passphrase": {"file": keys.path("nope")}}),
            "invalid input `passphrase`: cannot read secret file",
        ),
        (
            json!({"privateKeyPath": path, "passphrase": "hunter2"}),
            "invalid input `passphrase`: a secret is never given literally",
        ),
        (
            json!({"privateKeyPath": keys.dir.path()}),
            "invalid input `privateKeyPath`: `",
        ),
    ];
    for (inputs, expected) in cases {
        let message = provider()
            .create("keypair", inputs.clone(), true)
            .error_message();
        assert!(
            message.contains(expected),
            "for {inputs}:\n{message}\nshould contain: {expected}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
    // A path that cannot be written: its parent is a regular file.
    let blocker = keys.path("file");
    std::fs::write(&blocker, "").unwrap();
    let message = provider()
        .create(
            "keypair",
            json!({"privateKeyPath": blocker.join("id")}),
            true,
        )
        .error_message();
    assert!(
        message.contains("invalid input `privateKeyPath`: `")
            && message.contains("is not a directory"),
        "{message}"
    );
    // Without state the key would be lost.
    let message = provider()
        .create("keypair", json!({"privateKeyPath": path}), false)
        .error_message();
    assert!(message.contains("requires state"), "{message}");
}

#[test]
fn private_key_material_never_reaches_logs_or_errors() {
    let keys = Keys::new();
    let path = keys.path("id");
    let verbose = provider().env("FEDI_LOG", "trace");
    let inputs = json!({"privateKeyPath": path});
    let created = verbose.create("keypair", inputs.clone(), true);
    let file = std::fs::read_to_string(&path).unwrap();
    // The base64 body of the private key file, line by line.
    let secret_lines: Vec<&str> = file.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!secret_lines.is_empty());
    let outputs = created.outputs();
    let rotated = verbose.update(
        "keypair",
        json!({"privateKeyPath": path, "rotationTrigger": 1}),
        inputs.clone(),
        outputs.clone(),
    );
    let read = verbose.read("keypair", inputs.clone(), outputs.clone());
    let replaced = verbose.update("keypair", inputs.clone(), inputs.clone(), outputs.clone());
    for exchange in [&created, &rotated, &read, &replaced] {
        for line in &secret_lines {
            assert!(
                !exchange.stderr.contains(line),
                "private key on stderr:\n{}",
                exchange.stderr
            );
            assert!(
                !exchange.response.to_string().contains(line),
                "private key in a response"
            );
        }
        assert!(!exchange.stderr.contains("PRIVATE KEY"));
    }
    assert!(
        created
            .stderr
            .contains("generated a new 256-bit ed25519 key"),
        "logs are there: {}",
        created.stderr
    );
}

#[test]
fn expose_private_key_is_an_explicit_opt_in() {
    let keys = Keys::new();
    let path = keys.path("id");
    let outputs = provider()
        .create(
            "keypair",
            json!({"privateKeyPath": path, "exposePrivateKey": true}),
            true,
        )
        .outputs();
    assert_eq!(
        outputs["privateKey"].as_str().unwrap(),
        std::fs::read_to_string(&path).unwrap()
    );
}

#[test]
fn transcript() {
    let keys = Keys::new();
    let provider = provider().recording();
    let path = keys.path("deployer");
    let inputs = json!({"privateKeyPath": path, "comment": "deployer"});
    let created = provider.create("keypair", inputs.clone(), true).outputs();
    let renamed = json!({"privateKeyPath": path, "comment": "deployer@example.org"});
    let updated = provider
        .update("keypair", renamed.clone(), inputs, created)
        .outputs();
    provider.read("keypair", renamed.clone(), updated.clone());
    provider.delete("keypair", renamed.clone(), updated.clone());
    provider.delete("keypair", renamed.clone(), updated.clone());
    provider.update("keypair", renamed.clone(), renamed, updated);
    provider.create(
        "keypair",
        json!({"privateKeyPath": path, "algorithm": "dsa"}),
        true,
    );
    let redactions = Redactions::new()
        .key("publicKey", "[public key]")
        .key("fingerprint", "[fingerprint]")
        .path(keys.dir.path(), "[TMP]");
    let text = provider.transcript().to_jsonl(&redactions);
    // Fingerprints inside error messages vary too.
    let text = regex_free_redact(&text);
    insta::assert_snapshot!(text);
}

/// Replaces `SHA256:<base64>` fingerprints inside messages.
fn regex_free_redact(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("SHA256:") {
        out.push_str(&rest[..i]);
        out.push_str("[fingerprint]");
        rest = &rest[i + 7..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn generated_nix_module_and_reference_are_in_sync() {
    assert_generated_in_sync(
        env!("CARGO_BIN_EXE_fedi-ssh-key"),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    );
}

#[test]
fn a_comment_with_control_characters_is_refused_naming_the_field() {
    let keys = Keys::new();
    let path = keys.path("id");
    for comment in [
        "deployer\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIntruder attacker",
        "deployer\rx",
        "deployer\0x",
        "tab\there",
    ] {
        let message = provider()
            .create(
                "keypair",
                json!({"privateKeyPath": path, "comment": comment}),
                true,
            )
            .error_message();
        assert!(
            message.contains("invalid input `comment`: "),
            "{comment:?}: {message}"
        );
        assert!(message.contains("control character"), "{message}");
        assert!(message.contains("hint: "), "{message}");
        assert!(!path.exists(), "no key was written for {comment:?}");
    }
    // Also on update: the comment cannot smuggle a second line in.
    let inputs = json!({"privateKeyPath": path, "comment": "one"});
    let created = provider().create("keypair", inputs.clone(), true).outputs();
    let message = provider()
        .update(
            "keypair",
            json!({"privateKeyPath": path, "comment": "one\nssh-ed25519 AAAA x"}),
            inputs,
            created.clone(),
        )
        .error_message();
    assert!(message.contains("invalid input `comment`: "), "{message}");
    assert_eq!(
        ssh_keygen_public(&path, None).unwrap().lines().count(),
        1,
        "the key file still has a one-line public key"
    );
}

#[test]
fn a_relative_or_dotted_private_key_path_is_refused() {
    let keys = Keys::new();
    for (path, expected) in [
        (json!("keys/id"), "is a relative path"),
        (json!("./id"), "is a relative path"),
        (
            json!(format!("{}/a/../id", keys.dir.path().display())),
            "`..` component",
        ),
    ] {
        let message = provider()
            .create("keypair", json!({"privateKeyPath": path}), true)
            .error_message();
        assert!(
            message.contains("invalid input `privateKeyPath`: "),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("hint: "), "{message}");
    }
    // The provider runs in the test's working directory: nothing landed there.
    assert!(!Path::new("keys/id").exists());
    assert!(!Path::new("id").exists());
}

#[test]
fn update_to_a_path_holding_another_key_refuses_and_leaves_it() {
    let keys = Keys::new();
    let path = keys.path("id");
    let inputs = json!({"privateKeyPath": path});
    let created = provider().create("keypair", inputs.clone(), true).outputs();
    // Someone else's key lives where the update wants to move ours.
    let theirs = keys.path("theirs");
    let other = provider()
        .create("keypair", json!({"privateKeyPath": theirs}), true)
        .outputs();
    let before = std::fs::read(&theirs).unwrap();
    for moved in [
        json!({"privateKeyPath": theirs}),
        json!({"privateKeyPath": theirs, "rotationTrigger": 1}),
    ] {
        let message = provider()
            .update("keypair", moved, inputs.clone(), created.clone())
            .error_message();
        assert!(message.contains("conflict `privateKeyPath`: "), "{message}");
        assert!(message.contains("holds another key"), "{message}");
        assert!(message.contains("left untouched"), "{message}");
        assert_eq!(
            std::fs::read(&theirs).unwrap(),
            before,
            "their key is untouched"
        );
        assert_eq!(
            ssh_keygen_fingerprint(&path).1,
            created["fingerprint"].as_str().unwrap(),
            "our key stays where it was"
        );
    }
    assert_eq!(
        ssh_keygen_fingerprint(&theirs).1,
        other["fingerprint"].as_str().unwrap()
    );
}

#[test]
fn create_refuses_planted_keys_symlinks_and_shared_directories() {
    let keys = Keys::new();
    // A key file someone planted in a directory everyone can write.
    let shared = keys.path("shared");
    std::fs::create_dir(&shared).unwrap();
    let planted = shared.join("id");
    provider()
        .create(
            "keypair",
            json!({"privateKeyPath": keys.path("planted")}),
            true,
        )
        .outputs();
    std::fs::rename(keys.path("planted"), &planted).unwrap();
    for mode in [0o777, 0o1777, 0o775] {
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
        let message = provider()
            .create("keypair", json!({"privateKeyPath": planted}), true)
            .error_message();
        assert!(
            message.contains("invalid input `privateKeyPath`: the directory `"),
            "{mode:o}: {message}"
        );
        assert!(message.contains(&format!("mode {mode:04o}")), "{message}");
        assert!(message.contains("hint: "), "{message}");
    }
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A symbolic link at the path: never followed, nothing written through it.
    let target = keys.path("target");
    std::fs::write(&target, "precious").unwrap();
    let link = keys.path("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let message = provider()
        .create("keypair", json!({"privateKeyPath": link}), true)
        .error_message();
    assert!(message.contains("is a symbolic link"), "{message}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A symlinked key file pointing at a real key is not adopted either.
    let real = keys.path("real");
    provider()
        .create("keypair", json!({"privateKeyPath": real}), true)
        .outputs();
    let link2 = keys.path("link2");
    std::os::unix::fs::symlink(&real, &link2).unwrap();
    let message = provider()
        .create("keypair", json!({"privateKeyPath": link2}), true)
        .error_message();
    assert!(message.contains("is a symbolic link"), "{message}");

    // A key file with loose permissions, or of another user.
    let loose = keys.path("loose");
    provider()
        .create("keypair", json!({"privateKeyPath": loose}), true)
        .outputs();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = provider()
        .create("keypair", json!({"privateKeyPath": loose}), true)
        .error_message();
    assert!(message.contains("has mode 0644"), "{message}");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&loose, Some(65534), Some(65534)).unwrap();
    let message = provider()
        .create("keypair", json!({"privateKeyPath": loose}), true)
        .error_message();
    assert!(message.contains("belongs to uid 65534"), "{message}");
    assert!(message.contains("conflict `privateKeyPath`: "), "{message}");
}

#[test]
fn a_crash_while_moving_the_key_is_recovered_by_the_retry() {
    let keys = Keys::new();
    let points = [
        (false, "ssh-key-before-removing-old-path"),
        (true, "ssh-key-before-removing-old-path"),
        (false, "ssh-key-after-removing-old-path"),
    ];
    for (round, (rotate, point)) in points.into_iter().enumerate() {
        let path = keys.path(&format!("id{round}"));
        let moved_path = keys.path(&format!("moved/id{round}"));
        let inputs = json!({"privateKeyPath": path});
        let created = provider().create("keypair", inputs.clone(), true).outputs();
        let mut moved = json!({"privateKeyPath": moved_path, "comment": "moved"});
        if rotate {
            moved["rotationTrigger"] = json!(1);
        }
        let request = json!({"updateResourceRequest": {
            "resource": {"type": "keypair", "inputProperties": inputs, "outputProperties": created},
            "inputProperties": moved,
        }});
        // The key is written at the new path; the old one is not removed
        // yet, or already removed but the answer not sent.
        provider().crash_at(point, request);
        assert!(moved_path.exists(), "the crashed run wrote the new path");
        assert_eq!(
            path.exists(),
            point.contains("before"),
            "old path after crashing at {point}"
        );

        // NixOps4 recorded nothing: the same update runs again.
        let retried = provider()
            .update("keypair", moved.clone(), inputs.clone(), created.clone())
            .outputs();
        assert_eq!(
            ssh_keygen_fingerprint(&moved_path).1,
            retried["fingerprint"].as_str().unwrap()
        );
        assert_eq!(rotate, retried["fingerprint"] != created["fingerprint"]);
        assert!(
            !path.exists(),
            "the old file is gone after the retry ({point})"
        );
        assert!(
            ssh_keygen_public(&moved_path, None)
                .unwrap()
                .ends_with(" moved")
        );
    }
}
