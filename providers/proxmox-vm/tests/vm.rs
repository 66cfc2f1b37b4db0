//! `vm` against the Proxmox VE test server (`tests/pve`).

use fedi_testbeds::pve;

use std::path::Path;

use fedi_protocol::testkit::{Harness, Redactions};
use pve::{Pve, TOKEN_SECRET};
use serde_json::{Value, json};

fn provider() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_fedi-proxmox-vm"))
}

fn inputs(pve: &Pve, extra: Value) -> Value {
    let mut inputs = json!({
        "proxmox": pve.connection(),
        "node": "pve1",
        "template": {"name": "debian-12"},
        "name": "web1",
        "timeouts": {"agentSeconds": 10, "cloneSeconds": 20, "taskSeconds": 10, "shutdownSeconds": 2},
    });
    for (k, v) in extra.as_object().unwrap() {
        inputs[k] = v.clone();
    }
    inputs
}

fn vmid(outputs: &Value) -> u32 {
    outputs["vmid"].as_u64().unwrap() as u32
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHo7m0d5yXbGv3fY2t6H8XyJ3kqkqjVQm9yq2m3H1Pp0 deployer";

#[test]
fn create_with_every_input_then_update_read_and_delete() {
    let pve = Pve::start();
    let declared = inputs(
        &pve,
        json!({
            "fullClone": true,
            "storage": "fast",
            "pool": "operators",
            "description": "Mastodon for alice",
            "tags": ["Fediversity", "mastodon", "alice"],
            "cores": 2,
            "sockets": 1,
            "memory": 4096,
            "balloon": 2048,
            "disks": [{"slot": "scsi0", "sizeGib": 20}, {"slot": "scsi1", "sizeGib": 50}],
            "networks": [{"bridge": "vmbr0", "vlan": 42, "firewall": true}, {"bridge": "vmbr1", "model": "e1000", "mac": "BC:24:11:AA:BB:CC"}],
            "onBoot": true,
            "protection": false,
            "cloudInit": {
                "user": "deployer",
                "sshKeys": [KEY],
                "ipConfigs": [{"ipv4": "192.0.2.10/24", "gateway4": "192.0.2.1", "ipv6": "2001:db8::10/64", "gateway6": "2001:db8::1"}, {"ipv4": "dhcp"}],
                "nameservers": ["192.0.2.53", "2001:db8::53"],
                "searchDomain": "alice.example",
            },
        }),
    );
    let created = provider().create("vm", declared.clone(), true);
    let outputs = created.outputs();
    let id = vmid(&outputs);
    assert!(id >= 100, "{outputs}");
    assert_eq!(outputs["node"], "pve1");
    assert_eq!(outputs["name"], "web1");
    assert_eq!(outputs["ipv4Addresses"], json!(["192.0.2.10"]));
    assert_eq!(outputs["ipv6Addresses"], json!(["2001:db8::10"]));
    let vm = pve.vm(id).unwrap();
    assert!(vm.running, "started");
    assert_eq!(outputs["sshHostKey"], json!(pve::host_key(id, &vm)));
    let config = vm.config;
    assert_eq!(config["name"], "web1");
    assert_eq!(
        config["description"],
        format!("Mastodon for alice\n<!-- managed by fedi-proxmox-vm -->")
    );
    assert_eq!(config["tags"], "alice;fediversity;mastodon");
    assert_eq!(
        (config["cores"].clone(), config["sockets"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(config["memory"], "4096");
    assert_eq!(config["balloon"], 2048);
    assert_eq!(config["onboot"], 1);
    assert!(
        config.get("protection").is_none_or(|p| p == 0),
        "no protection"
    );
    assert!(
        config["scsi0"]
            .as_str()
            .unwrap()
            .starts_with(&format!("fast:vm-{id}-disk-0")),
        "cloned to the storage: {}",
        config["scsi0"]
    );
    assert!(
        config["scsi0"].as_str().unwrap().ends_with("size=20G"),
        "grown: {}",
        config["scsi0"]
    );
    assert!(
        config["scsi1"].as_str().unwrap().starts_with("fast:")
            && config["scsi1"].as_str().unwrap().ends_with("size=50G"),
        "{}",
        config["scsi1"]
    );
    let net0 = config["net0"].as_str().unwrap();
    assert!(
        net0.starts_with("virtio=BC:24:11:")
            && net0.contains("bridge=vmbr0")
            && net0.contains("tag=42")
            && net0.contains("firewall=1"),
        "{net0}"
    );
    assert_eq!(config["net1"], "e1000=BC:24:11:AA:BB:CC,bridge=vmbr1");
    assert_eq!(
        outputs["macAddresses"],
        json!([net0[7..24].to_string(), "BC:24:11:AA:BB:CC"])
    );
    assert_eq!(config["ciuser"], "deployer");
    assert_eq!(
        config["sshkeys"],
        KEY.replace(' ', "%20").replace('+', "%2B")
    );
    assert_eq!(
        config["ipconfig0"],
        "ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64,gw6=2001:db8::1"
    );
    assert_eq!(config["ipconfig1"], "ip=dhcp");
    assert_eq!(config["nameserver"], "192.0.2.53 2001:db8::53");
    assert_eq!(config["searchdomain"], "alice.example");
    assert_eq!(config["agent"], "1");
    assert!(!config.contains_key("lock"));

    let read = provider()
        .read("vm", declared.clone(), outputs.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"], json!([]), "in sync right after create");
    assert_eq!(read["outputProperties"], outputs);

    // Same tags in another order: nothing to change.
    let mut reordered = declared.clone();
    reordered["tags"] = json!(["alice", "MASTODON", "fediversity"]);
    pve.take_log();
    let same = provider()
        .update("vm", reordered.clone(), declared.clone(), outputs.clone())
        .outputs();
    assert_eq!(same, outputs);
    let log = pve.take_log();
    assert!(
        !log.iter()
            .any(|l| l.starts_with("POST") || l.starts_with("PUT")),
        "no change sent: {log:?}"
    );

    // Update in place: CPU, memory, disk growth, network, cloud-init, tags, description.
    let mut changed = reordered.clone();
    changed["cores"] = json!(4);
    changed["memory"] = json!(8192);
    changed["disks"][0]["sizeGib"] = json!(30);
    changed["networks"] = json!([{"bridge": "vmbr2"}]);
    changed["cloudInit"]["ipConfigs"] = json!([{"ipv4": "dhcp", "ipv6": "auto"}]);
    changed["cloudInit"]["nameservers"] = json!([]);
    changed["tags"] = json!(["alice"]);
    changed["description"] = json!("moved");
    let updated = provider()
        .update("vm", changed.clone(), reordered, outputs.clone())
        .outputs();
    assert_eq!(vmid(&updated), id);
    let config = pve.config(id).unwrap();
    assert_eq!(config["cores"], 4);
    assert_eq!(config["memory"], "8192");
    assert!(config["scsi0"].as_str().unwrap().ends_with("size=30G"));
    assert_eq!(
        config["net0"],
        format!("virtio={},bridge=vmbr2", &net0[7..24]),
        "MAC kept"
    );
    assert!(!config.contains_key("net1"), "removed");
    assert!(!config.contains_key("ipconfig1") && !config.contains_key("nameserver"));
    assert_eq!(config["ipconfig0"], "ip=dhcp,ip6=auto");
    assert_eq!(config["tags"], "alice");
    assert_eq!(
        config["description"],
        "moved\n<!-- managed by fedi-proxmox-vm -->"
    );
    assert_eq!(updated["macAddresses"], json!([net0[7..24].to_string()]));
    assert_eq!(
        updated["ipv4Addresses"].as_array().unwrap().len(),
        1,
        "DHCP lease: {updated}"
    );

    // Stop it.
    let mut stopped = changed.clone();
    stopped["started"] = json!(false);
    let after = provider()
        .update("vm", stopped.clone(), changed, updated)
        .outputs();
    assert!(!pve.vm(id).unwrap().running);
    assert_eq!(after["ipv4Addresses"], json!([]));

    // Delete; again; read: gone.
    provider()
        .delete("vm", stopped.clone(), after.clone())
        .body("xDeleteResourceResponse");
    assert!(pve.config(id).is_none());
    provider()
        .delete("vm", stopped.clone(), after.clone())
        .body("xDeleteResourceResponse");
    let read = provider()
        .read("vm", stopped, after)
        .body("xReadResourceResponse");
    assert_eq!(read, json!({"exists": false, "drift": []}));
}

#[test]
fn read_reports_drift_made_outside() {
    let pve = Pve::start();
    let declared = inputs(
        &pve,
        json!({"tags": ["b", "a"], "cores": 2, "disks": [{"slot": "scsi0", "sizeGib": 8}]}),
    );
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    pve.set_config(
        id,
        json!({"cores": 3, "tags": "a;b;c", "scsi0": format!("local-lvm:vm-{id}-disk-0,size=16G")}),
    );
    let read = provider()
        .read("vm", declared.clone(), outputs.clone())
        .body("xReadResourceResponse");
    let properties = fedi_protocol::testkit::drift_properties(&read);
    assert_eq!(properties, ["tags", "cores", "disks[0].sizeGib"], "{read}");
    assert!(
        read["drift"][2]["message"]
            .as_str()
            .unwrap()
            .contains("cannot shrink"),
        "{read}"
    );
    // The update refuses the shrink, before changing anything.
    let error = provider()
        .update("vm", declared.clone(), declared, outputs)
        .error_message();
    assert!(
        error.contains("invalid input `disks[0].sizeGib`")
            && error.contains("16 GiB")
            && error.contains("cannot shrink"),
        "{error}"
    );
    assert_eq!(pve.config(id).unwrap()["cores"], 3, "nothing was changed");
}

#[test]
fn shrinking_and_rebuilding_changes_are_clear_errors() {
    let pve = Pve::start();
    let declared = inputs(
        &pve,
        json!({"disks": [{"slot": "scsi0", "sizeGib": 10}], "waitForAgent": false}),
    );
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    pve.take_log();
    let mut smaller = declared.clone();
    smaller["disks"][0]["sizeGib"] = json!(5);
    let error = provider()
        .update("vm", smaller, declared.clone(), outputs.clone())
        .error_message();
    assert!(
        error.contains("`disks[0].sizeGib`")
            && error.contains("cannot shrink")
            && error.contains("hint: disks only grow"),
        "{error}"
    );
    let mut other = declared.clone();
    other["template"] = json!({"vmid": 9001});
    let error = provider()
        .update("vm", other, declared.clone(), outputs.clone())
        .error_message();
    assert!(
        error.contains("`template`") && error.contains("needs a new VM"),
        "{error}"
    );
    let mut fixed = declared.clone();
    fixed["vmid"] = json!(4242);
    let error = provider()
        .update("vm", fixed, declared, outputs)
        .error_message();
    assert!(
        error.contains("`vmid`") && error.contains("needs a new VM"),
        "{error}"
    );
    assert!(pve.take_log().is_empty(), "refused before any call");
}

#[test]
fn invalid_inputs_name_the_field_before_any_call() {
    let pve = Pve::start();
    let cases = [
        (json!({"name": "not a name"}), "`name`"),
        (
            json!({"template": {"vmid": 9000, "name": "x"}}),
            "`template`",
        ),
        (json!({"vmid": 7}), "`vmid`"),
        (json!({"tags": ["ok", "no spaces"]}), "`tags`"),
        (json!({"cores": 0}), "`cores`"),
        (json!({"balloon": 99999}), "`balloon`"),
        (
            json!({"disks": [{"slot": "hda", "sizeGib": 1}]}),
            "`disks[0].slot`",
        ),
        (
            json!({"networks": [{"bridge": "vmbr0", "vlan": 5000}]}),
            "`networks[0].vlan`",
        ),
        (
            json!({"networks": [{"bridge": "vmbr0", "mac": "01:00:00:00:00:01"}]}),
            "`networks[0].mac`",
        ),
        (
            json!({"cloudInit": {"sshKeys": ["hello"]}}),
            "`cloudInit.sshKeys[0]`",
        ),
        (
            json!({"cloudInit": {"ipConfigs": [{"ipv4": "dhcp", "gateway4": "192.0.2.1"}]}}),
            "`cloudInit.ipConfigs[0].gateway4`",
        ),
        (
            json!({"cloudInit": {"ipConfigs": [{"ipv6": "fe80::1"}]}}),
            "`cloudInit.ipConfigs[0].ipv6`",
        ),
        (
            json!({"cloudInit": {"nameservers": ["dns.example"]}}),
            "`cloudInit.nameservers[0]`",
        ),
        (json!({"hostKeyPath": "relative"}), "`hostKeyPath`"),
        (
            json!({"timeouts": {"taskSeconds": 0}}),
            "`timeouts.taskSeconds`",
        ),
    ];
    for (extra, field) in cases {
        let error = provider()
            .create("vm", inputs(&pve, extra.clone()), true)
            .error_message();
        assert!(
            error.contains(&format!("invalid input {field}")),
            "{extra}: {error}"
        );
    }
    let mut bad = inputs(&pve, json!({}));
    bad["proxmox"]["endpoint"] = json!("http://127.0.0.1:1");
    assert!(
        provider()
            .create("vm", bad, true)
            .error_message()
            .contains("`proxmox.endpoint`")
    );
    let mut bad = inputs(&pve, json!({}));
    bad["proxmox"]["tokenSecret"] = json!(TOKEN_SECRET);
    let error = provider().create("vm", bad, true).error_message();
    assert!(
        error.contains("never given literally") && !error.contains(TOKEN_SECRET),
        "{error}"
    );
    assert!(pve.take_log().is_empty(), "nothing was sent");
}

#[test]
fn concurrent_creates_get_distinct_vmids() {
    let pve = Pve::start();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let declared = inputs(
                &pve,
                json!({"name": format!("par{i}"), "waitForAgent": false}),
            );
            std::thread::spawn(move || provider().create("vm", declared, true).outputs())
        })
        .collect();
    let mut ids: Vec<u32> = handles
        .into_iter()
        .map(|h| vmid(&h.join().unwrap()))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(pve.vm_ids(), ids, "no stray VMs");
    for id in ids {
        let name = pve.config(id).unwrap()["name"].clone();
        assert!(name.as_str().unwrap().starts_with("par"));
    }
}

/// A create told to abort at fault point `fault`; checks that it died
/// there (the provider logs the point before it aborts).
fn crash_at(fault: &str, declared: &Value) {
    let request = json!({"createResourceRequest": {"type": "vm", "inputProperties": declared, "isStateful": true}});
    let stderr = provider().env("FEDI_LOG", "warn").crash_at(fault, request);
    assert!(
        stderr.contains("aborting at the injected fault point") && stderr.contains(fault),
        "{stderr}"
    );
}

#[test]
fn a_create_retried_after_a_crash_adopts_the_clone() {
    let pve = Pve::start();
    pve.timing(|t| t.clone = std::time::Duration::from_secs(4));
    let declared = inputs(&pve, json!({"cores": 3}));
    crash_at("after-clone-started", &declared);
    let ids = pve.vm_ids();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        pve.config(ids[0]).unwrap()["lock"],
        "clone",
        "the clone still runs"
    );
    // clone_vm has not written the name yet (only `lock: clone`): the
    // re-run must find its clone without it.
    assert!(
        pve.config(ids[0]).unwrap().get("name").is_none(),
        "{:?}",
        pve.config(ids[0])
    );

    let outputs = provider().create("vm", declared.clone(), true).outputs();
    assert_eq!(vmid(&outputs), ids[0], "adopted");
    assert_eq!(pve.vm_ids(), ids, "no second clone");
    assert_eq!(pve.config(ids[0]).unwrap()["cores"], 3);

    // Crash after configuring: the retry adopts and starts.
    let other = inputs(&pve, json!({"name": "web2"}));
    crash_at("after-configure", &other);
    let web2 = pve
        .vm_ids()
        .into_iter()
        .find(|id| pve.config(*id).unwrap()["name"] == "web2")
        .expect("configured before the crash");
    assert!(!pve.vm(web2).unwrap().running, "died before the start");
    let outputs = provider().create("vm", other, true).outputs();
    assert_eq!(pve.vm_ids().len(), 2);
    assert!(pve.vm(vmid(&outputs)).unwrap().running);
}

#[test]
fn a_dropped_connection_during_the_clone_does_not_clone_twice() {
    let pve = Pve::start();
    pve.faults(|f| f.drop_next_clone = true);
    let outputs = provider()
        .create("vm", inputs(&pve, json!({"waitForAgent": false})), true)
        .outputs();
    assert_eq!(pve.vm_ids(), vec![vmid(&outputs)]);
}

#[test]
fn transient_failures_are_retried_and_bounded() {
    let pve = Pve::start();
    pve.faults(|f| {
        f.lock_timeouts = 2;
        f.unavailable = 1;
        f.task_status_400 = 1;
        f.clone_task_lock_timeouts = 1;
    });
    let created = provider().create("vm", inputs(&pve, json!({})), true);
    let outputs = created.outputs();
    assert_eq!(
        pve.vm_ids(),
        vec![vmid(&outputs)],
        "the failed clone is gone, one VM left"
    );
    assert!(
        created.stderr.contains("transient Proxmox failure"),
        "{}",
        created.stderr
    );

    // Endless lock timeouts: a bounded number of attempts, then an error
    // that keeps Proxmox's reason phrase.
    pve.faults(|f| f.lock_timeouts = 100);
    let error = provider()
        .create("vm", inputs(&pve, json!({"name": "web2"})), true)
        .error_message();
    assert!(
        error.contains("500 can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"),
        "{error}"
    );
    assert!(
        error.contains("after 5 attempts") && error.contains("backend unavailable (retryable)"),
        "{error}"
    );
}

#[test]
fn a_failed_task_keeps_its_exit_status_and_leaves_the_vm_adoptable() {
    let pve = Pve::start();
    pve.faults(|f| {
        f.fail_next_task = Some((
            "qmstart".into(),
            "start failed: QEMU exited with code 1".into(),
        ))
    });
    let declared = inputs(&pve, json!({}));
    let error = provider()
        .create("vm", declared.clone(), true)
        .error_message();
    assert!(
        error.contains("start failed: QEMU exited with code 1")
            && error.contains("running the create again adopts it"),
        "{error}"
    );
    let ids = pve.vm_ids();
    let outputs = provider().create("vm", declared, true).outputs();
    assert_eq!(pve.vm_ids(), ids);
    assert_eq!(vmid(&outputs), ids[0]);
}

#[test]
fn the_agent_wait_has_a_timeout_and_can_be_skipped() {
    let pve = Pve::start();
    pve.faults(|f| f.agent_never = true);
    let mut declared = inputs(&pve, json!({}));
    declared["timeouts"]["agentSeconds"] = json!(1);
    let started = std::time::Instant::now();
    let error = provider()
        .create("vm", declared.clone(), true)
        .error_message();
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert!(
        error.contains("`timeouts.agentSeconds`")
            && error.contains("QEMU guest agent is not running")
            && error.contains("waitForAgent = false"),
        "{error}"
    );
    declared["waitForAgent"] = json!(false);
    let outputs = provider().create("vm", declared, true).outputs();
    assert_eq!(outputs["ipv4Addresses"], json!([]));
    assert_eq!(
        outputs["sshHostKey"],
        Value::Null,
        "present, and null: {outputs}"
    );
    assert!(pve.vm(vmid(&outputs)).unwrap().running);
}

#[test]
fn fixed_vmid_template_by_vmid_linked_clone_and_node_change() {
    let pve = Pve::start();
    pve.add_template(9100, "debian-12-pve2", "pve2");
    let declared = inputs(
        &pve,
        json!({"vmid": 4242, "template": {"vmid": 9100}, "fullClone": false, "waitForAgent": false}),
    );
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    assert_eq!(vmid(&outputs), 4242);
    assert_eq!(
        pve.vm(4242).unwrap().node,
        "pve1",
        "cloned across to the node"
    );
    // Someone else's VM on a fixed VMID: refused.
    let error = provider()
        .create(
            "vm",
            inputs(&pve, json!({"name": "other", "vmid": 9000})),
            true,
        )
        .error_message();
    assert!(
        error.contains("`vmid`") && error.contains("9000"),
        "{error}"
    );
    // A node change migrates, online since it runs.
    let mut moved = declared.clone();
    moved["node"] = json!("pve2");
    let after = provider()
        .update("vm", moved.clone(), declared, outputs)
        .outputs();
    assert_eq!(after["node"], "pve2");
    assert_eq!(pve.vm(4242).unwrap().node, "pve2");
    assert!(pve.vm(4242).unwrap().running);
    provider()
        .delete("vm", moved, after)
        .body("xDeleteResourceResponse");
    assert!(pve.vm(4242).is_none());
}

#[test]
fn delete_shuts_down_then_stops_and_respects_protection() {
    let pve = Pve::start();
    let declared = inputs(&pve, json!({"protection": true, "waitForAgent": false}));
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    let error = provider()
        .delete("vm", declared.clone(), outputs.clone())
        .error_message();
    assert!(
        error.contains("protection") && error.contains("set `protection = false`"),
        "{error}"
    );
    assert!(pve.vm(id).is_some());
    let mut unprotected = declared.clone();
    unprotected["protection"] = json!(false);
    let outputs = provider()
        .update("vm", unprotected.clone(), declared, outputs)
        .outputs();
    pve.faults(|f| f.ignore_shutdown = true);
    let deleted = provider().delete("vm", unprotected.clone(), outputs.clone());
    deleted.body("xDeleteResourceResponse");
    assert!(
        deleted
            .stderr
            .contains("graceful shutdown failed; stopping"),
        "{}",
        deleted.stderr
    );
    assert!(pve.vm(id).is_none());
    // A VMID now used by a VM we did not make is left alone.
    pve.add_template(id, "someone-else", "pve1");
    let error = provider()
        .delete("vm", unprotected, outputs)
        .error_message();
    assert!(
        error.contains("not marked as made by this provider"),
        "{error}"
    );
    assert!(pve.vm(id).is_some());
}

#[test]
fn tls_pin_ca_file_and_untrusted_certificates() {
    let pve = Pve::start();
    let mut declared = inputs(&pve, json!({"waitForAgent": false}));
    let wrong = "AA:".repeat(31) + "AA";
    declared["proxmox"]["fingerprint"] = json!(wrong);
    let error = provider()
        .create("vm", declared.clone(), true)
        .error_message();
    assert!(
        error.contains("invalid input `proxmox.fingerprint`"),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "fingerprint {}, which is not the pinned one",
            pve.fingerprint
        )),
        "{error}"
    );
    assert!(error.contains("pvenode cert info"), "{error}");
    assert!(pve.take_log().is_empty(), "nothing reached the API");

    let mut no_trust = declared.clone();
    no_trust["proxmox"]
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    let error = provider()
        .create("vm", no_trust.clone(), true)
        .error_message();
    assert!(
        error.contains("permission denied")
            && error.contains("not trusted")
            && error.contains("caFile"),
        "{error}"
    );
    assert!(!error.contains("attempts"), "not retried: {error}");
    // A CA file that did not sign the certificate: the hint is about that
    // file, not about setting one.
    let other = Pve::start();
    let mut wrong_ca = no_trust.clone();
    wrong_ca["proxmox"]["caFile"] = json!(other.ca_file);
    let error = provider().create("vm", wrong_ca, true).error_message();
    assert!(
        error.contains("`proxmox.caFile`")
            && error.contains("not signed by the CA")
            && !error.contains("attempts"),
        "{error}"
    );

    let mut with_ca = no_trust;
    with_ca["proxmox"]["caFile"] = json!(pve.ca_file);
    let outputs = provider().create("vm", with_ca, true).outputs();
    assert!(pve.vm(vmid(&outputs)).is_some());
}

#[test]
fn a_wrong_token_is_refused_and_no_token_is_ever_shown() {
    let pve = Pve::start();
    let wrong = pve.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token-0000\n").unwrap();
    let mut declared = inputs(&pve, json!({}));
    declared["proxmox"]["tokenSecret"] = json!({"file": wrong});
    let exchange = provider()
        .env("FEDI_LOG", "trace")
        .create("vm", declared, true);
    let error = exchange.error_message();
    assert!(
        error.contains("permission denied")
            && error.contains("401 invalid token value!")
            && error.contains("`proxmox.tokenSecret`"),
        "{error}"
    );
    assert!(
        !exchange.stderr.contains("not-the-token-0000") && !error.contains("not-the-token-0000")
    );

    let verbose = provider().env("FEDI_LOG", "trace");
    let declared = inputs(&pve, json!({}));
    let created = verbose.create("vm", declared.clone(), true);
    let outputs = created.outputs();
    let read = verbose.read("vm", declared.clone(), outputs.clone());
    let deleted = verbose.delete("vm", declared, outputs);
    for exchange in [&created, &read, &deleted] {
        assert!(!exchange.stderr.contains(TOKEN_SECRET), "token in the log");
        assert!(
            !exchange.response.to_string().contains(TOKEN_SECRET),
            "token in a response"
        );
        assert!(!exchange.stderr.is_empty(), "the log is there");
    }
}

#[test]
fn transcript() {
    let pve = Pve::start();
    let provider = provider().recording();
    let declared = inputs(
        &pve,
        json!({"tags": ["web"], "cloudInit": {"user": "deployer", "sshKeys": [KEY]}}),
    );
    let outputs = provider.create("vm", declared.clone(), true).outputs();
    provider.read("vm", declared.clone(), outputs.clone());
    let mut bigger = declared.clone();
    bigger["memory"] = json!(4096);
    let outputs = provider
        .update("vm", bigger.clone(), declared, outputs)
        .outputs();
    provider.delete("vm", bigger, outputs);
    let redactions = Redactions::new()
        .key("macAddresses", "[macs]")
        .key("fingerprint", "[fingerprint]")
        .path(pve.dir.path(), "[TMP]")
        .text(pve.endpoint(), "[endpoint]");
    insta::assert_snapshot!(provider.transcript().to_jsonl(&redactions));
}

#[test]
fn generated_nix_module_and_reference_are_in_sync() {
    fedi_protocol::testkit::assert_generated_in_sync(
        env!("CARGO_BIN_EXE_fedi-proxmox-vm"),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    );
}

/// The config a running VM runs with (`?current=1`), not the one with
/// pending changes applied.
fn running_config(pve: &Pve, id: u32) -> Value {
    let (status, reason, body) = pve.api("GET", &format!("nodes/pve1/qemu/{id}/config?current=1"));
    assert_eq!(status, 200, "{reason}");
    body["data"].clone()
}

fn count(log: &[String], suffix: &str) -> usize {
    log.iter().filter(|l| l.ends_with(suffix)).count()
}

#[test]
fn resizing_a_running_vm_restarts_it_only_when_a_change_is_pending() {
    let pve = Pve::start();
    let declared = inputs(&pve, json!({}));
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    // cores and memory are not hot-pluggable with the default hotplug:
    // pending, so the default `restart` shuts the VM down and starts it.
    let mut bigger = declared.clone();
    bigger["cores"] = json!(4);
    bigger["memory"] = json!(4096);
    pve.take_log();
    let updated = provider()
        .update("vm", bigger.clone(), declared.clone(), outputs)
        .outputs();
    let log = pve.take_log();
    assert_eq!(
        (
            count(&log, "/status/shutdown"),
            count(&log, "/status/start")
        ),
        (1, 1),
        "{log:?}"
    );
    let running = running_config(&pve, id);
    assert_eq!(
        (running["cores"].clone(), running["memory"].clone()),
        (json!(4), json!("4096"))
    );
    assert!(pve.vm(id).unwrap().running);
    assert_eq!(updated["pendingChanges"], json!([]));
    assert!(
        updated["sshHostKey"].is_string(),
        "the agent answered again: {updated}"
    );
    let read = provider()
        .read("vm", bigger.clone(), updated.clone())
        .body("xReadResourceResponse");
    assert_eq!(read["drift"], json!([]), "{read}");
    // Tags and balloon are hot-pluggable: no restart for them.
    let mut tagged = bigger.clone();
    tagged["tags"] = json!(["web"]);
    tagged["balloon"] = json!(1024);
    let after = provider()
        .update("vm", tagged.clone(), bigger, updated)
        .outputs();
    let log = pve.take_log();
    assert_eq!(
        count(&log, "/status/shutdown") + count(&log, "/status/start"),
        0,
        "{log:?}"
    );
    assert_eq!(running_config(&pve, id)["tags"], "web");
    assert_eq!(after["pendingChanges"], json!([]));
    assert_eq!(pve.vm_ids(), vec![id]);
}

#[test]
fn keep_pending_reports_changes_that_wait_for_a_restart() {
    let pve = Pve::start();
    let declared = inputs(&pve, json!({"onPendingChanges": "keep-pending"}));
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    let mut bigger = declared.clone();
    bigger["cores"] = json!(2);
    bigger["memory"] = json!(3072);
    bigger["cpu"] = json!({"type": "host"});
    pve.take_log();
    let updated = provider()
        .update("vm", bigger.clone(), declared, outputs)
        .outputs();
    let log = pve.take_log();
    assert_eq!(
        count(&log, "/status/shutdown") + count(&log, "/status/start"),
        0,
        "no restart: {log:?}"
    );
    assert_eq!(
        updated["pendingChanges"],
        json!(["cores", "memory", "cpu.type"])
    );
    let running = running_config(&pve, id);
    assert_eq!(
        (running["cores"].clone(), running["memory"].clone()),
        (json!(1), json!("2048")),
        "still the old size"
    );
    assert_eq!(pve.config(id).unwrap()["cores"], 1);
    assert_eq!(pve.vm(id).unwrap().pending["cores"], 2);
    // Read says so, truthfully.
    let read = provider()
        .read("vm", bigger.clone(), updated.clone())
        .body("xReadResourceResponse");
    let drift = fedi_protocol::testkit::drift_properties(&read);
    assert_eq!(drift, ["cores", "memory", "cpu.type"], "{read}");
    assert!(
        read["drift"][0]["message"]
            .as_str()
            .unwrap()
            .contains("pending in Proxmox"),
        "{read}"
    );
    assert_eq!(
        read["outputProperties"]["pendingChanges"],
        json!(["cores", "memory", "cpu.type"])
    );
    // An update with nothing new sends nothing (the change is pending).
    let again = provider()
        .update("vm", bigger.clone(), bigger.clone(), updated)
        .outputs();
    let log = pve.take_log();
    assert!(!log.iter().any(|l| l.starts_with("POST")), "{log:?}");
    // A restart in a maintenance window applies them; read is in sync.
    pve.api("POST", &format!("nodes/pve1/qemu/{id}/status/shutdown"));
    pve.wait_idle();
    pve.api("POST", &format!("nodes/pve1/qemu/{id}/status/start"));
    pve.wait_idle();
    let read = provider()
        .read("vm", bigger.clone(), again)
        .body("xReadResourceResponse");
    assert_eq!(read["drift"], json!([]), "{read}");
    assert_eq!(read["outputProperties"]["pendingChanges"], json!([]));
    assert_eq!(running_config(&pve, id)["cpu"], "host");
}

#[test]
fn memory_hotplug_with_numa_changes_memory_without_a_restart() {
    let pve = Pve::start();
    let declared = inputs(
        &pve,
        json!({"hotplug": ["network", "disk", "usb", "memory"], "numa": true, "waitForAgent": false}),
    );
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    assert_eq!(
        pve.config(id).unwrap()["hotplug"],
        "disk,memory,network,usb"
    );
    let mut bigger = declared.clone();
    bigger["memory"] = json!(8192);
    pve.take_log();
    let updated = provider().update("vm", bigger, declared, outputs).outputs();
    let log = pve.take_log();
    assert_eq!(count(&log, "/status/shutdown"), 0, "{log:?}");
    assert_eq!(running_config(&pve, id)["memory"], "8192");
    assert_eq!(updated["pendingChanges"], json!([]));
    // Memory hotplug without NUMA is refused before any call.
    let error = provider()
        .create(
            "vm",
            inputs(&pve, json!({"name": "web2", "hotplug": ["memory"]})),
            true,
        )
        .error_message();
    assert!(
        error.contains("invalid input `hotplug`") && error.contains("numa = true"),
        "{error}"
    );
}

#[test]
fn a_lost_answer_to_the_clone_is_looked_at_not_sent_again() {
    for how in [pve::Loss::Drop, pve::Loss::Proxy596] {
        let pve = Pve::start();
        pve.timing(|t| t.clone = std::time::Duration::from_millis(800));
        pve.faults(|f| {
            f.lose_answer
                .push(pve::LostAnswer::new("POST", "/clone", how))
        });
        let created = provider().create("vm", inputs(&pve, json!({"waitForAgent": false})), true);
        let outputs = created.outputs();
        let fault = match how {
            pve::Loss::Drop => "lost_answer_drop",
            pve::Loss::Proxy596 => "lost_answer_596",
        };
        assert_eq!(pve.fired(fault), 1, "{how:?}");
        let log = pve.take_log();
        assert_eq!(count(&log, "/clone"), 1, "not sent again: {log:?}");
        assert_eq!(pve.vm_ids(), vec![vmid(&outputs)], "exactly one VM");
        assert!(
            created
                .stderr
                .contains("the answer to the clone request was lost"),
            "{}",
            created.stderr
        );
    }
}

#[test]
fn a_vmid_clash_in_the_clone_task_takes_another_vmid() {
    let pve = Pve::start();
    pve.faults(|f| f.clone_task_vmid_clash = 1);
    let outputs = provider()
        .create("vm", inputs(&pve, json!({"waitForAgent": false})), true)
        .outputs();
    assert_eq!(pve.fired("clone_task_vmid_clash"), 1);
    let ids = pve.vm_ids();
    assert_eq!(ids.len(), 2, "ours and the concurrent clone's: {ids:?}");
    assert_eq!(vmid(&outputs), 101);
    assert_eq!(
        pve.config(100).unwrap()["name"],
        "someone-elses-clone",
        "left alone"
    );
    // With a fixed VMID it is a clear error naming `vmid`.
    pve.faults(|f| f.clone_task_vmid_clash = 1);
    let error = provider()
        .create(
            "vm",
            inputs(
                &pve,
                json!({"name": "web2", "vmid": 500, "waitForAgent": false}),
            ),
            true,
        )
        .error_message();
    assert!(
        error.contains("`vmid`") && error.contains("config file already exists"),
        "{error}"
    );
}

#[test]
fn lock_timeouts_inside_tasks_are_retried_everywhere() {
    let pve = Pve::start();
    pve.faults(|f| {
        for kind in ["qmconfig", "qmresize", "qmstart"] {
            f.task_lock_timeouts.insert(kind.into(), 1);
        }
    });
    let declared = inputs(
        &pve,
        json!({"cores": 2, "disks": [{"slot": "scsi0", "sizeGib": 8}]}),
    );
    let created = provider().create("vm", declared.clone(), true);
    let outputs = created.outputs();
    for kind in ["qmconfig", "qmresize", "qmstart"] {
        assert_eq!(pve.fired(&format!("task_lock_timeout:{kind}")), 1, "{kind}");
    }
    let id = vmid(&outputs);
    assert_eq!(pve.vm_ids(), vec![id]);
    assert_eq!(pve.config(id).unwrap()["cores"], 2);
    assert!(pve.vm(id).unwrap().running);
    pve.faults(|f| {
        for kind in ["qmshutdown", "qmdestroy"] {
            f.task_lock_timeouts.insert(kind.into(), 1);
        }
    });
    provider()
        .delete("vm", declared, outputs)
        .body("xDeleteResourceResponse");
    for kind in ["qmshutdown", "qmdestroy"] {
        assert_eq!(pve.fired(&format!("task_lock_timeout:{kind}")), 1, "{kind}");
    }
    assert!(pve.vm_ids().is_empty(), "nothing left behind");
    // A lock that never frees: a bounded number of tries, a clear error,
    // and the VM left for the next run, which adopts it.
    pve.faults(|f| {
        f.task_lock_timeouts.insert("qmstart".into(), 100);
    });
    let declared = inputs(&pve, json!({"name": "web2"}));
    let error = provider()
        .create("vm", declared.clone(), true)
        .error_message();
    assert!(
        error.contains("backend unavailable (retryable)")
            && error.contains("can't lock file")
            && error.contains("running the create again adopts it"),
        "{error}"
    );
    assert_eq!(pve.fired("task_lock_timeout:qmstart"), 1 + 5, "5 tries");
    pve.faults(|f| {
        f.task_lock_timeouts.clear();
    });
    let ids = pve.vm_ids();
    assert_eq!(ids.len(), 1);
    let outputs = provider().create("vm", declared, true).outputs();
    assert_eq!(
        pve.vm_ids(),
        vec![vmid(&outputs)],
        "adopted, not cloned again"
    );
    assert_eq!(ids, vec![vmid(&outputs)]);
}

#[test]
fn lost_answers_to_start_and_delete_and_a_duplicate_delete_end_well() {
    let pve = Pve::start();
    pve.faults(|f| {
        f.lose_answer.push(pve::LostAnswer::new(
            "POST",
            "/status/start",
            pve::Loss::Proxy596,
        ))
    });
    let declared = inputs(&pve, json!({}));
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    assert_eq!(pve.fired("lost_answer_596"), 1);
    assert!(
        pve.vm(id).unwrap().running,
        "the resent start ended `already running`"
    );
    // The DELETE's answer is lost while the destroy goes on.
    pve.timing(|t| t.task = std::time::Duration::from_millis(400));
    pve.faults(|f| {
        f.lose_answer.push(pve::LostAnswer::new(
            "DELETE",
            &format!("/qemu/{id}"),
            pve::Loss::Proxy596,
        ))
    });
    pve.take_log();
    let deleted = provider().delete("vm", declared.clone(), outputs.clone());
    deleted.body("xDeleteResourceResponse");
    assert_eq!(pve.fired("lost_answer_596"), 2);
    assert_eq!(
        count(&pve.take_log(), &format!("/qemu/{id}")),
        1,
        "the DELETE was not sent again"
    );
    assert!(pve.vm_ids().is_empty());
    // A destroy already running when the delete sends its own: that one
    // ends "does not exist", which is success once the VM is gone.
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    pve.api("POST", &format!("nodes/pve1/qemu/{id}/status/stop"));
    pve.wait_idle();
    pve.timing(|t| t.task = std::time::Duration::from_millis(1500));
    pve.api("DELETE", &format!("nodes/pve1/qemu/{id}"));
    let deleted = provider().delete("vm", declared, outputs);
    deleted.body("xDeleteResourceResponse");
    assert!(
        deleted
            .stderr
            .contains("an earlier destroy got there first"),
        "{}",
        deleted.stderr
    );
    assert!(pve.vm_ids().is_empty());
}

#[test]
fn a_stale_digest_is_retried_with_either_upstream_text() {
    for old in [false, true] {
        let pve = Pve::start();
        pve.faults(|f| f.old_texts = old);
        let declared = inputs(&pve, json!({"waitForAgent": false}));
        let outputs = provider().create("vm", declared.clone(), true).outputs();
        pve.faults(|f| f.stale_digests = 1);
        let mut changed = declared.clone();
        changed["description"] = json!("new notes");
        let updated = provider()
            .update("vm", changed, declared, outputs)
            .outputs();
        assert_eq!(pve.fired("stale_digest"), 1);
        assert!(
            pve.config(vmid(&updated)).unwrap()["description"]
                .as_str()
                .unwrap()
                .starts_with("new notes")
        );
    }
}

#[test]
fn what_is_sent_is_what_the_inputs_say_and_small_disks_are_refused_before_cloning() {
    let pve = Pve::start();
    let declared = inputs(
        &pve,
        json!({"fullClone": true, "storage": "fast", "pool": "operators", "waitForAgent": false}),
    );
    provider().create("vm", declared, true).outputs();
    let clone = pve
        .take_requests()
        .into_iter()
        .find(|r| r.path.ends_with("/clone"))
        .unwrap();
    assert_eq!(clone.params.get("full").map(String::as_str), Some("1"));
    assert_eq!(
        clone.params.get("storage").map(String::as_str),
        Some("fast")
    );
    assert_eq!(
        clone.params.get("pool").map(String::as_str),
        Some("operators")
    );
    assert_eq!(pve.with(|s| s.pools["operators"].len()), 1);
    let linked = inputs(
        &pve,
        json!({"name": "web2", "fullClone": false, "storage": "fast", "waitForAgent": false}),
    );
    let outputs = provider().create("vm", linked, true).outputs();
    let clone = pve
        .take_requests()
        .into_iter()
        .find(|r| r.path.ends_with("/clone"))
        .unwrap();
    assert_eq!(clone.params.get("full").map(String::as_str), Some("0"));
    assert!(
        !clone.params.contains_key("storage"),
        "no storage for linked clones"
    );
    assert!(!clone.params.contains_key("pool"));
    let scsi0 = pve.config(vmid(&outputs)).unwrap()["scsi0"].clone();
    assert!(
        scsi0
            .as_str()
            .unwrap()
            .starts_with("local-lvm:base-9000-disk-0/"),
        "{scsi0}"
    );
    // The template's disk is 4 GiB: 2 GiB is refused before cloning.
    let before = pve.vm_ids();
    pve.take_log();
    let error = provider()
        .create(
            "vm",
            inputs(
                &pve,
                json!({"name": "web3", "disks": [{"slot": "scsi0", "sizeGib": 2}]}),
            ),
            true,
        )
        .error_message();
    assert!(
        error.contains("`disks[0].sizeGib`") && error.contains("template's `scsi0` is 4 GiB"),
        "{error}"
    );
    assert!(!pve.take_log().iter().any(|l| l.ends_with("/clone")));
    assert_eq!(pve.vm_ids(), before);
}

#[test]
fn the_unified_auth_failure_names_the_token_and_endpoint() {
    let pve = Pve::start();
    pve.faults(|f| f.unified_auth_errors = true);
    let wrong = pve.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token-0000\n").unwrap();
    let mut declared = inputs(&pve, json!({}));
    declared["proxmox"]["tokenSecret"] = json!({"file": wrong});
    let exchange = provider().create("vm", declared, true);
    let error = exchange.error_message();
    assert!(
        error.contains("401 Authentication failed!")
            && error.contains(pve::TOKEN_ID)
            && error.contains(&pve.endpoint())
            && !error.contains("not-the-token-0000"),
        "{error}"
    );
}

#[test]
fn lost_answers_to_configure_and_resize_are_sent_again_safely() {
    let pve = Pve::start();
    let declared = inputs(&pve, json!({"waitForAgent": false}));
    let outputs = provider().create("vm", declared.clone(), true).outputs();
    let id = vmid(&outputs);
    pve.faults(|f| {
        f.lose_answer
            .push(pve::LostAnswer::new("POST", "/config", pve::Loss::Proxy596));
        f.lose_answer
            .push(pve::LostAnswer::new("PUT", "/resize", pve::Loss::Drop));
    });
    let mut changed = declared.clone();
    changed["tags"] = json!(["web"]);
    changed["disks"] = json!([{"slot": "scsi0", "sizeGib": 9}]);
    pve.take_log();
    let updated = provider()
        .update("vm", changed.clone(), declared, outputs)
        .outputs();
    assert_eq!(
        (pve.fired("lost_answer_596"), pve.fired("lost_answer_drop")),
        (1, 1)
    );
    let log = pve.take_log();
    // The config POST came back as a stale digest the second time (the
    // first had been applied): read again, nothing left to change.
    assert_eq!(count(&log, "/config"), 2, "{log:?}");
    assert_eq!(count(&log, "/resize"), 2, "{log:?}");
    let config = pve.config(id).unwrap();
    assert_eq!(config["tags"], "web");
    assert!(config["scsi0"].as_str().unwrap().ends_with("size=9G"));
    let read = provider()
        .read("vm", changed, updated)
        .body("xReadResourceResponse");
    assert_eq!(read["drift"], json!([]), "{read}");
}
