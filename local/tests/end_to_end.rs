//! The README's main job as a test, checked against the world: the example
//! panel is applied to the local backends, then the changed panel
//! (PeerTube disabled, Mastodon resized), then everything is destroyed;
//! after each phase the test asks the backends themselves what exists, the
//! way a user would check: the Proxmox VE API for the VMs, their sizes and
//! the addresses the guest agent reports; Knot, by DNS queries, for every
//! application's A and AAAA; Garage's admin API for buckets, keys and
//! permissions; each guest's filesystem for the system it runs and the keys
//! it was given. The providers run at trace level, and their logs and the
//! state are scanned for every secret of the run.
//!
//! The backends live in a private network namespace and stop with the
//! process that started them, so the test re-executes itself in one
//! (`unshare --net`, hence root) and drives the phases through the
//! `fedi_local` library, looking at the backends in between. Needs the
//! provider binaries (`cargo test --workspace` builds them).

#![allow(clippy::print_stdout)] // the inner run's progress, shown on failure

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fedi_local::backends::Backends;
use fedi_local::engine::{Action, Report};
use fedi_local::session::{Options, Session};
use fedi_local::{guests, netns, repo};
use serde_json::{Value, json};

const TEST: &str = "apply_change_and_destroy_the_example_deployment";
/// The outer test's scratch directory, handed to the run in the namespace.
const WORK_ENV: &str = "FEDI_LOCAL_TEST_WORK";
const DOMAIN: &str = "alice.fedi.test";
const SLUG: &str = "alice-fedi-test";
const APPS: [&str; 3] = ["mastodon", "pixelfed", "peertube"];

fn providers_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_fedi-local"))
        .parent()
        .unwrap()
        .to_path_buf();
    for provider in [
        "ssh-key",
        "garage-bucket",
        "proxmox-vm",
        "dns-record",
        "nixos-config",
    ] {
        assert!(
            dir.join(format!("fedi-{provider}")).is_file(),
            "fedi-{provider} is not built in {}: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
            dir.display()
        );
    }
    dir
}

#[test]
fn apply_change_and_destroy_the_example_deployment() {
    if netns::inside() {
        let work = PathBuf::from(std::env::var_os(WORK_ENV).expect("set by the outer test"));
        run_and_check(&work);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut command = netns::command(
        &exe,
        [TEST, "--exact", "--nocapture", "--test-threads=1"].map(OsString::from),
    );
    command.env(WORK_ENV, work.path());
    let output = output_within(command, DEADLINE);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the run in a private network namespace failed{}:\n{stdout}\n{stderr}",
        if netns::is_root() {
            ""
        } else {
            " (it needs root: namespaces)"
        }
    );
    println!("{stdout}");
    // The run's own output (progress, panics) has no secret either.
    let secrets: Vec<(String, String)> =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("secrets.json")).unwrap())
            .unwrap();
    assert!(secrets.len() >= 12, "secrets: {}", secrets.len());
    for (source, secret) in &secrets {
        assert!(
            !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
            "the {source} is in the test's output"
        );
    }
}

/// The whole run, backends' start-up and three phases (about 15 s on a
/// 2-core machine).
const DEADLINE: Duration = Duration::from_secs(600);

/// Runs `command` in a process group of its own and collects its output;
/// past `deadline` the whole group (the run, its backends and guests) is
/// killed and the test fails with what it printed so far.
fn output_within(mut command: Command, deadline: Duration) -> Output {
    let mut child = command
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) runs");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "the run did not end within {deadline:?}; killed. Its output:\n{}\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap()),
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// What one application looks like when it is deployed.
struct App {
    name: &'static str,
    host: String,
    cores: u64,
    memory: u64,
    buckets: &'static [&'static str],
}

fn app(name: &'static str, sub: &str, (cores, memory): (u64, u64)) -> App {
    App {
        name,
        host: format!("{sub}.{DOMAIN}"),
        cores,
        memory,
        buckets: match name {
            "peertube" => &["streaming-playlists", "web-videos"],
            _ => &["media"],
        },
    }
}

/// The whole run, inside the namespace.
fn run_and_check(work: &Path) {
    let mut session = Session::start(Options {
        state_dir: Some(work.join("run")),
        providers_dir: providers_dir(),
        max_jobs: None,
        provider_log: Some("trace".into()),
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut secrets = Secrets::default();
    let mut operations = 0;

    // 1. The example panel: the three applications at the panel's sizes
    // (applications.nix: Mastodon small, Pixelfed medium by default,
    // PeerTube large), Pixelfed on its own subdomain.
    let panel = repo().join("examples/fediversity/panel.json");
    let first = session.apply(&panel).unwrap_or_else(|e| panic!("{e:#}"));
    let mut all = BTreeSet::from(["deployer-key".to_string()]);
    for a in APPS {
        for suffix in ["vm", "s3-key", "dns-a", "dns-aaaa", "deployment"] {
            all.insert(format!("{a}-{suffix}"));
        }
    }
    for bucket in [
        "mastodon-media",
        "pixelfed-media",
        "peertube-streaming-playlists",
        "peertube-web-videos",
    ] {
        all.insert(format!("{bucket}-bucket"));
    }
    assert_eq!(did(&first, Action::Create), all, "everything created");
    assert_eq!(first.operations.len(), all.len(), "each once");
    assert_eq!(
        first.urls.get("pixelfed").map(String::as_str),
        Some("https://photos.alice.fedi.test")
    );
    let apps = [
        app("mastodon", "mastodon", (2, 4096)),
        app("pixelfed", "photos", (2, 4096)),
        app("peertube", "peertube", (8, 16384)),
    ];
    let world = World::observe(&session.backends);
    check_deployed(&session, &world, &apps);
    secrets.collect(&session, &world);
    operations += first.operations.len();
    secrets.scan(&session, operations);
    let systems_before: BTreeMap<String, String> = world
        .guests
        .iter()
        .map(|(vm, g)| (vm.clone(), g.system.clone()))
        .collect();

    // 2. PeerTube disabled, Mastodon one size up: exactly that happens.
    let changed = repo().join("examples/local/panel-changed.json");
    let second = session.apply(&changed).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(did(&second, Action::Update), set(&["mastodon-vm"]));
    assert_eq!(did(&second, Action::Create), BTreeSet::new());
    let peertube: BTreeSet<String> = all
        .iter()
        .filter(|n| n.starts_with("peertube-"))
        .cloned()
        .collect();
    assert_eq!(did(&second, Action::Delete), peertube);
    let untouched: BTreeSet<String> = all
        .iter()
        .filter(|n| !n.starts_with("peertube-") && *n != "mastodon-vm")
        .cloned()
        .collect();
    let unchanged: BTreeSet<String> = second.unchanged.iter().cloned().collect();
    assert_eq!(unchanged, untouched, "nothing else is touched");
    let apps = [
        app("mastodon", "mastodon", (4, 8192)),
        app("pixelfed", "photos", (2, 4096)),
    ];
    let world = World::observe(&session.backends);
    check_deployed(&session, &world, &apps);
    for (vm, guest) in &world.guests {
        assert_eq!(
            Some(&guest.system),
            systems_before.get(vm),
            "{vm} still runs the system it had"
        );
    }
    secrets.collect(&session, &world);
    operations += second.operations.len();
    secrets.scan(&session, operations);

    // 3. Destroy: every resource deleted once, nothing left anywhere.
    let third = session.destroy().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        did(&third, Action::Delete),
        untouched.union(&set(&["mastodon-vm"])).cloned().collect()
    );
    let world = World::observe(&session.backends);
    check_deployed(&session, &world, &[]);
    assert_eq!(session.state.state.resources.len(), 0);
    operations += third.operations.len();
    secrets.scan(&session, operations);

    std::fs::write(
        work.join("secrets.json"),
        serde_json::to_string(&secrets.all).unwrap(),
    )
    .unwrap();
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The resources an apply did `action` to.
fn did(report: &Report, action: Action) -> BTreeSet<String> {
    report
        .operations
        .iter()
        .filter(|op| op.action == action)
        .map(|op| op.resource.clone())
        .collect()
}

/// A VM as the Proxmox VE API reports it.
#[derive(Debug, Clone, PartialEq)]
struct Vm {
    vmid: u32,
    cores: u64,
    memory: u64,
    running: bool,
    /// Global addresses the guest agent reports on eth0.
    ipv4: BTreeSet<IpAddr>,
    ipv6: BTreeSet<IpAddr>,
}

/// A bucket as Garage's admin API reports it.
#[derive(Debug, Clone, PartialEq)]
struct Bucket {
    website: bool,
    /// Key name -> (read, write, owner).
    keys: BTreeMap<String, (bool, bool, bool)>,
}

/// An access key as Garage's admin API reports it.
#[derive(Debug, Clone)]
struct Key {
    id: String,
    secret: String,
}

/// A guest as its own filesystem shows it.
#[derive(Debug, Clone)]
struct Guest {
    /// Where /run/current-system points.
    system: String,
    /// The system's service configuration (its `service.json`).
    service: Value,
    /// What the activation published in /root/fediversity/service.json.
    published: Value,
    /// The last line of /root/activations.
    last_activation: String,
    /// The files in /run/keys and their content.
    keys: BTreeMap<String, String>,
    /// root's authorised keys (type and key, no comment).
    authorized: BTreeSet<String>,
}

/// What the backends hold, asked from each of them.
struct World {
    vms: BTreeMap<String, Vm>,
    /// (name, type) -> values, by a DNS query to Knot, for every
    /// application's host name, enabled or not.
    dns: BTreeMap<(String, String), BTreeSet<String>>,
    buckets: BTreeMap<String, Bucket>,
    keys: BTreeMap<String, Key>,
    /// By VM name.
    guests: BTreeMap<String, Guest>,
    /// The guest disks on the Proxmox node.
    disks: BTreeSet<String>,
}

fn pve_get(backends: &Backends, path: &str) -> Value {
    let (status, reason, body) = backends.pve.api("GET", path);
    assert_eq!(status, 200, "GET {path}: {reason} {body}");
    body["data"].clone()
}

fn number(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

fn garage_get(backends: &Backends, endpoint: &str, query: &[(&str, &str)]) -> Value {
    backends
        .garage
        .admin(reqwest::Method::GET, endpoint, query, None)
}

/// An SSH public key line without its comment.
fn key_of(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl World {
    fn observe(backends: &Backends) -> World {
        let mut vms = BTreeMap::new();
        for r in pve_get(backends, "cluster/resources").as_array().unwrap() {
            if r["type"] != "qemu" || r["template"] == 1 {
                continue;
            }
            let vmid = r["vmid"].as_u64().unwrap() as u32;
            let node = r["node"].as_str().unwrap();
            // `current=1`: what the VM runs with, not changes pending a
            // restart.
            let config = pve_get(
                backends,
                &format!("nodes/{node}/qemu/{vmid}/config?current=1"),
            );
            let status = pve_get(
                backends,
                &format!("nodes/{node}/qemu/{vmid}/status/current"),
            );
            let running = status["status"] == "running";
            let (mut ipv4, mut ipv6) = (BTreeSet::new(), BTreeSet::new());
            if running {
                let interfaces = pve_get(
                    backends,
                    &format!("nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"),
                );
                for interface in interfaces["result"].as_array().unwrap() {
                    if interface["name"] == "lo" {
                        continue;
                    }
                    for a in interface["ip-addresses"].as_array().unwrap() {
                        let ip: IpAddr = a["ip-address"].as_str().unwrap().parse().unwrap();
                        match ip {
                            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => {
                                ipv4.insert(ip);
                            }
                            IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unicast_link_local() => {
                                ipv6.insert(ip);
                            }
                            _ => {}
                        }
                    }
                }
            }
            let name = config["name"].as_str().unwrap().to_string();
            let vm = Vm {
                vmid,
                cores: number(&config["cores"]),
                memory: number(&config["memory"]),
                running,
                ipv4,
                ipv6,
            };
            assert!(
                vms.insert(name.clone(), vm).is_none(),
                "two VMs named {name}"
            );
        }

        let mut dns = BTreeMap::new();
        for host in ["mastodon", "photos", "peertube"] {
            let name = format!("{host}.{DOMAIN}");
            for ty in ["A", "AAAA"] {
                // kdig +short: exactly the values a resolver gets.
                let values = backends.dns.dig(&format!("{name}."), ty);
                dns.insert((name.clone(), ty.to_string()), values.into_iter().collect());
            }
        }

        let mut buckets = BTreeMap::new();
        for b in garage_get(backends, "ListBuckets", &[]).as_array().unwrap() {
            let id = b["id"].as_str().unwrap();
            let info = garage_get(backends, "GetBucketInfo", &[("id", id)]);
            let aliases = info["globalAliases"].as_array().unwrap();
            assert_eq!(aliases.len(), 1, "bucket {id} has one name: {info}");
            let keys = info["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let p = &k["permissions"];
                    (
                        k["name"].as_str().unwrap().to_string(),
                        (p["read"] == true, p["write"] == true, p["owner"] == true),
                    )
                })
                .collect();
            buckets.insert(
                aliases[0].as_str().unwrap().to_string(),
                Bucket {
                    website: info["websiteAccess"] == true,
                    keys,
                },
            );
        }

        let mut keys = BTreeMap::new();
        for k in garage_get(backends, "ListKeys", &[]).as_array().unwrap() {
            let id = k["id"].as_str().unwrap();
            let info = garage_get(
                backends,
                "GetKeyInfo",
                &[("id", id), ("showSecretKey", "true")],
            );
            let name = info["name"].as_str().unwrap().to_string();
            // Ownership keys are the buckets' owner records, checked there.
            if name.starts_with(fedi_testbeds::garage::OWNERSHIP_KEY_PREFIX) {
                continue;
            }
            let key = Key {
                id: id.to_string(),
                secret: info["secretAccessKey"].as_str().unwrap().to_string(),
            };
            assert!(
                keys.insert(name.clone(), key).is_none(),
                "two keys named {name}"
            );
        }

        let mut guests = BTreeMap::new();
        for (name, vm) in &vms {
            let disk = guests::disk(&backends.guests_dir, vm.vmid);
            let Ok(system) = std::fs::read_link(disk.join("run/current-system")) else {
                continue;
            };
            let system = system.display().to_string();
            // The guest's /nix is its disk's nix/.
            let in_store = disk.join(system.trim_start_matches('/'));
            let json = |path: &Path| -> Value {
                serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
                    .unwrap_or(Value::Null)
            };
            let keys = std::fs::read_dir(disk.join("run/keys"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read_to_string(e.path()).unwrap(),
                    )
                })
                .collect();
            let read = |p: &str| std::fs::read_to_string(disk.join(p)).unwrap_or_default();
            guests.insert(
                name.clone(),
                Guest {
                    service: json(&in_store.join("service.json")),
                    published: json(&disk.join("root/fediversity/service.json")),
                    last_activation: read("root/activations")
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .to_string(),
                    keys,
                    authorized: read("root/.ssh/authorized_keys")
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(key_of)
                        .collect(),
                    system,
                },
            );
        }

        let disks = std::fs::read_dir(&backends.guests_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();

        World {
            vms,
            dns,
            buckets,
            keys,
            guests,
            disks,
        }
    }
}

/// Checks that the world holds exactly `apps`, each as a user expects it.
fn check_deployed(session: &Session, world: &World, apps: &[App]) {
    // VMs: exactly one per application, at its size, running, with one
    // global IPv4 and one IPv6 address.
    let want: BTreeMap<String, (u64, u64, bool)> = apps
        .iter()
        .map(|a| (format!("{}-{SLUG}", a.name), (a.cores, a.memory, true)))
        .collect();
    let have: BTreeMap<String, (u64, u64, bool)> = world
        .vms
        .iter()
        .map(|(n, vm)| (n.clone(), (vm.cores, vm.memory, vm.running)))
        .collect();
    assert_eq!(have, want, "Proxmox's VMs (cores, MiB, running)");
    for (name, vm) in &world.vms {
        assert_eq!(
            (vm.ipv4.len(), vm.ipv6.len()),
            (1, 1),
            "{name}'s guest agent reports one IPv4 and one IPv6 address: {vm:?}"
        );
    }
    let disks: BTreeSet<String> = world
        .vms
        .values()
        .map(|vm| format!("vm-{}", vm.vmid))
        .collect();
    assert_eq!(world.disks, disks, "a guest disk for each VM, no other");

    // DNS: each application's name answers with its VM's addresses, as
    // the guest agent reports them; the others do not resolve.
    let strings = |ips: &BTreeSet<IpAddr>| ips.iter().map(IpAddr::to_string).collect();
    let mut want = BTreeMap::new();
    for host in ["mastodon", "photos", "peertube"] {
        for ty in ["A", "AAAA"] {
            want.insert(
                (format!("{host}.{DOMAIN}"), ty.to_string()),
                BTreeSet::new(),
            );
        }
    }
    for a in apps {
        let vm = &world.vms[&format!("{}-{SLUG}", a.name)];
        want.insert((a.host.clone(), "A".into()), strings(&vm.ipv4));
        want.insert((a.host.clone(), "AAAA".into()), strings(&vm.ipv6));
        // And the guest is there: its sshd answers on the address.
        let address = SocketAddr::new(*vm.ipv4.first().unwrap(), 22);
        TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{}'s guest at {address}: {e}", a.name));
    }
    assert_eq!(world.dns, want, "what Knot answers");

    // Buckets: exactly the applications' own, public, each writable by its
    // application's key alone (read and write, not owner).
    let mut want = BTreeMap::new();
    for a in apps {
        for b in a.buckets {
            want.insert(
                format!("{SLUG}-{}-{b}", a.name),
                Bucket {
                    website: true,
                    // And its owner record (ADR 009): an ownership key
                    // without permissions.
                    keys: BTreeMap::from([
                        (format!("{SLUG}-{}", a.name), (true, true, false)),
                        (
                            format!(
                                "{}fediversity:{SLUG} bucket={SLUG}-{}-{b}",
                                fedi_testbeds::garage::OWNERSHIP_KEY_PREFIX,
                                a.name
                            ),
                            (false, false, false),
                        ),
                    ]),
                },
            );
        }
    }
    assert_eq!(world.buckets, want, "Garage's buckets");
    let want: BTreeSet<String> = apps.iter().map(|a| format!("{SLUG}-{}", a.name)).collect();
    let have: BTreeSet<String> = world.keys.keys().cloned().collect();
    assert_eq!(have, want, "Garage's access keys");

    // Guests: each runs its application's system, which it activated, with
    // the S3 secret Garage has for its key and the operator's admin
    // password; the deployer's key still gets in.
    let have: BTreeSet<&String> = world.guests.keys().collect();
    let want: BTreeSet<&String> = world.vms.keys().collect();
    assert_eq!(have, want, "every VM's guest runs a deployed system");
    println!(
        "  world     VMs {:?}\n            DNS {:?}\n            buckets {:?}\n            guests {:?}",
        world.vms,
        world.dns,
        world.buckets.keys().collect::<Vec<_>>(),
        world
            .guests
            .iter()
            .map(|(vm, g)| (vm, &g.system))
            .collect::<Vec<_>>()
    );
    if apps.is_empty() {
        // The deployer key and the admin password are gone with the rest.
        return;
    }
    let deployer = session.dir.join(format!("keys/{SLUG}-deployer"));
    let public = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&deployer)
        .output()
        .expect("ssh-keygen (openssh-client) runs");
    assert!(
        public.status.success(),
        "the deployer key {}",
        deployer.display()
    );
    let deployer_public = key_of(&String::from_utf8_lossy(&public.stdout));
    let admin_password =
        std::fs::read_to_string(session.dir.join(format!("secrets/{SLUG}-admin-password")))
            .unwrap();
    for a in apps {
        let vm = format!("{}-{SLUG}", a.name);
        let guest = &world.guests[&vm];
        let key = &world.keys[&format!("{SLUG}-{}", a.name)];
        assert!(
            guest.system.starts_with("/nix/store/")
                && guest.system.ends_with(&format!(
                    "-nixos-system-{}-{}",
                    a.name,
                    a.host.replace('.', "-")
                )),
            "{vm} runs {}",
            guest.system
        );
        let buckets: serde_json::Map<String, Value> = a
            .buckets
            .iter()
            .map(|b| (b.to_string(), json!(format!("{SLUG}-{}-{b}", a.name))))
            .collect();
        let service = &guest.service;
        assert_eq!(
            (
                &service["application"],
                &service["domain"],
                &service["s3"]["accessKeyId"],
                service["s3"]["buckets"].as_object().map(|o| o
                    .iter()
                    .map(|(k, v)| (k.clone(), v["name"].clone()))
                    .collect()),
            ),
            (
                &json!(a.name),
                &json!(a.host),
                &json!(key.id),
                Some(buckets)
            ),
            "{vm}'s system is its application's, with its Garage key"
        );
        assert_eq!(&guest.published, service, "{vm} activated its system");
        assert_eq!(guest.last_activation, format!("switch {}", guest.system));
        assert_eq!(
            guest.keys,
            BTreeMap::from([
                ("admin-password".to_string(), admin_password.clone()),
                ("s3-secret-key".to_string(), format!("{}\n", key.secret)),
            ]),
            "{vm}'s /run/keys"
        );
        assert_eq!(guest.authorized, BTreeSet::from([deployer_public.clone()]));
    }
}

/// Every secret of the run, by where it comes from.
#[derive(Default)]
struct Secrets {
    /// (source, secret)
    all: Vec<(String, String)>,
}

impl Secrets {
    fn add(&mut self, source: &str, secret: &str) {
        let secret = secret.trim();
        assert!(secret.len() >= 8, "the {source} is too short to look for");
        let entry = (source.to_string(), secret.to_string());
        if !self.all.contains(&entry) {
            self.all.push(entry);
        }
    }

    fn count(&self, source: &str) -> usize {
        self.all.iter().filter(|(s, _)| s == source).count()
    }

    /// The private lines of an OpenSSH private key file (the first base64
    /// line is the format's fixed header, the same in every key).
    fn add_private_key(&mut self, source: &str, file: &Path) {
        let text = std::fs::read_to_string(file).unwrap();
        let body: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect();
        assert!(body.len() > 2, "{} is a private key", file.display());
        for line in &body[1..] {
            if line.len() >= 20 {
                self.add(source, line);
            }
        }
    }

    /// Adds what the backends and the state directory hold now.
    fn collect(&mut self, session: &Session, world: &World) {
        let b = &session.backends;
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        self.add("Proxmox API token", &read(&b.pve.token_file));
        self.add("Garage admin token", &read(&b.garage.token_file));
        self.add("TSIG secret", &read(&b.dns.deploy_secret_file));
        self.add("TSIG secret", &b.dns.deploy_secret);
        self.add("read-only TSIG secret", &read(&b.dns.readonly_secret_file));
        self.add(
            "admin password",
            &read(&session.dir.join(format!("secrets/{SLUG}-admin-password"))),
        );
        for key in world.keys.values() {
            self.add("S3 secret key", &key.secret);
        }
        self.add_private_key(
            "deployer key",
            &session.dir.join(format!("keys/{SLUG}-deployer")),
        );
        for vm in world.vms.values() {
            let disk = guests::disk(&b.guests_dir, vm.vmid);
            self.add_private_key("guest host key", &disk.join("host_key"));
        }
    }

    /// Scans every provider log and the state for every secret; the logs
    /// must be `operations` (one per operation so far), each at debug level
    /// or below (FEDI_LOG=trace took effect).
    fn scan(&self, session: &Session, operations: usize) {
        // The sources were all seen (phase 1 has three S3 keys, three
        // guests; later phases add none).
        for (source, at_least) in [
            ("Proxmox API token", 1),
            ("Garage admin token", 1),
            ("TSIG secret", 1),
            ("read-only TSIG secret", 1),
            ("admin password", 1),
            ("S3 secret key", 3),
            ("deployer key", 1),
            ("guest host key", 3),
        ] {
            assert!(
                self.count(source) >= at_least,
                "the secret scan saw {} of the {source} (at least {at_least})",
                self.count(source)
            );
        }
        assert_eq!(self.count("S3 secret key"), 3);
        assert_eq!(self.count("TSIG secret"), 1, "the file holds the secret");

        let mut files: Vec<PathBuf> = std::fs::read_dir(session.logs())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        assert_eq!(files.len(), operations, "one provider log per operation");
        let mut trace_lines = 0;
        for log in &files {
            let text = std::fs::read_to_string(log).unwrap();
            trace_lines += text.lines().filter(|l| l.contains(" TRACE ")).count();
            assert!(
                text.lines()
                    .any(|l| l.contains(" DEBUG ") || l.contains(" TRACE ")),
                "{} has no debug or trace line: the providers did not log at trace level:\n{text}",
                log.display()
            );
        }
        assert!(trace_lines > 0, "no provider logged at trace level");
        files.push(session.dir.join("state.json"));
        let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
        for (source, _) in &self.all {
            *sources.entry(source).or_default() += 1;
        }
        println!(
            "  checked   {} secrets ({sources:?}) in {} provider logs ({trace_lines} trace lines) and the state",
            self.all.len(),
            operations
        );
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (source, secret) in &self.all {
                assert!(
                    !text.contains(secret.as_str()),
                    "the {source} is in {}",
                    file.display()
                );
            }
        }
    }
}
