//! A Proxmox VE API server for the tests: HTTPS on 127.0.0.1 with a
//! self-signed certificate made at start, answering like the real API
//! (see `tests/fixtures/real-responses/` and the shapes test):
//!
//! - every body is `{"data": ...}`; errors put their text in the HTTP
//!   reason phrase with `{"data": null}` (plus `message`, as newer versions
//!   do, unless `legacy_errors`), a 400 adds `errors`;
//! - clone, config (POST), resize, start, shutdown, stop, migrate and
//!   delete start tasks (UPIDs) that take time and end `stopped` with an
//!   `exitstatus`; a clone holds `lock: clone` on the new VM until it ends;
//! - configs carry a `digest`, and a stale one is refused;
//! - `/cluster/nextid` answers a string; a missing VM is a 500; the guest
//!   agent answers 500 until the guest has booted; shrinking is refused;
//! - the API token is checked (401 without or with a wrong one).
//!
//! A VM's guest is made up (a DHCP address, a host key derived from its
//! VMID) unless the server was given [`Guests`], which boot a real guest
//! when a start task ends and halt it when the VM stops or is destroyed.
//!
//! Faults can be injected: lock timeouts, 596, clone tasks failing on a
//! lock, a 400 from a task status right after start, a dropped connection
//! on a clone request (after the clone started), slow tasks.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The token the server accepts.
pub const TOKEN_ID: &str = "deployer@pve!fedi";
/// Its secret (kept in a file, as users keep it).
pub const TOKEN_SECRET: &str = "3f9a1c7e-52b4-4d8e-b0a6-c2f1e9d7a455";

/// How long things take.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Added before every answer.
    pub latency: Duration,
    /// A clone task.
    pub clone: Duration,
    /// Other tasks (config, resize, start, stop, destroy, migrate).
    pub task: Duration,
    /// A shutdown task.
    pub shutdown: Duration,
    /// From the end of the start task until the guest agent answers.
    pub boot: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            latency: Duration::ZERO,
            clone: Duration::from_millis(400),
            task: Duration::from_millis(50),
            shutdown: Duration::from_millis(100),
            boot: Duration::from_millis(300),
        }
    }
}

/// Faults to inject; counters count down as they fire.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Clone requests refused with "can't lock file ... got timeout".
    pub lock_timeouts: u32,
    /// Requests answered 596.
    pub unavailable: u32,
    /// Clone tasks that end with a lock timeout (the clone is removed).
    pub clone_task_lock_timeouts: u32,
    /// Task status requests answered 400 right after a task starts.
    pub task_status_400: u32,
    /// The next clone request starts the clone, then the connection drops.
    pub drop_next_clone: bool,
    /// The next task of this type (`qmconfig`, `qmstart`, ...) fails with
    /// this exit status.
    pub fail_next_task: Option<(String, String)>,
    /// Error bodies are only `{"data":null}` (older versions).
    pub legacy_errors: bool,
    /// The guest agent never comes up.
    pub agent_never: bool,
    /// Guests ignore shutdown requests (the task fails after its time).
    pub ignore_shutdown: bool,
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub node: String,
    pub config: Map<String, Value>,
    pub running: bool,
    pub booted_at: Option<Instant>,
    /// The real guest running in the VM, when the server has [`Guests`].
    pub guest: Option<Guest>,
}

/// A booted guest, as its QEMU guest agent reports it.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The addresses of its network interface (`eth0`), with prefixes.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Its SSH host public key line.
    pub host_key: String,
}

/// What runs inside the VMs. Called with the server's state locked, so
/// booting is part of the start task's end, as on a real node.
pub trait Guests: Send {
    /// Boots VM `vmid` from its config (cloud-init's `ciuser`, `sshkeys`,
    /// `ipconfig0`, ...), or says why the guest could not come up.
    fn boot(&mut self, vmid: u32, config: &Map<String, Value>) -> Result<Guest, String>;
    /// Powers the guest off (its disk stays).
    fn halt(&mut self, vmid: u32);
    /// Removes the guest and its disk.
    fn destroy(&mut self, vmid: u32);
}

struct GuestHook(Box<dyn Guests>);

impl std::fmt::Debug for GuestHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guests")
    }
}

#[derive(Debug)]
enum Effect {
    None,
    CloneDone(u32),
    CloneFailed(u32),
    Start(u32),
    Stop(u32),
    Destroy(u32),
    Migrate(u32, String),
}

#[derive(Debug)]
struct Task {
    kind: String,
    id: String,
    starttime: u64,
    end: Instant,
    exit: String,
    effect: Effect,
    done: bool,
    status_400: bool,
}

#[derive(Debug, Default)]
pub struct State {
    pub vms: BTreeMap<u32, Vm>,
    tasks: HashMap<String, Task>,
    /// `METHOD path` of every authenticated request, in order.
    pub log: Vec<String>,
    pub timing: Timing,
    pub faults: Faults,
    counter: u64,
    guests: Option<GuestHook>,
}

/// A running test server; stops when dropped.
pub struct Pve {
    pub port: u16,
    /// SHA-256 fingerprint of its certificate, as Proxmox shows them.
    pub fingerprint: String,
    pub dir: tempfile::TempDir,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pve {
    /// Starts a server with one template, `debian-12` (VMID 9000 on `pve1`).
    pub fn start() -> Pve {
        Pve::start_with(Timing::default())
    }

    /// Starts a server whose VMs boot real guests.
    pub fn start_with_guests(timing: Timing, guests: Box<dyn Guests>) -> Pve {
        let pve = Pve::start_with(timing);
        pve.with(|s| s.guests = Some(GuestHook(guests)));
        pve
    }

    pub fn start_with(timing: Timing) -> Pve {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let cert_der = certified.cert.der().to_vec();
        let fingerprint = Sha256::digest(&cert_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let ca_file = dir.path().join("pve-root-ca.pem");
        std::fs::write(&ca_file, certified.cert.pem()).unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN_SECRET}\n")).unwrap();
        let key_der = certified.signing_key.serialize_der();

        let state = Arc::new(Mutex::new(State {
            timing,
            ..State::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![rustls::pki_types::CertificateDer::from(cert_der)],
                        rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
                    )
                    .unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                        _ = &mut stop_rx => return,
                    };
                    let acceptor = acceptor.clone();
                    let state = shared.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |request| {
                            let state = state.clone();
                            async move { handle(state, request).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        let pve = Pve {
            port,
            fingerprint,
            dir,
            token_file,
            ca_file,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        pve.add_template(9000, "debian-12", "pve1");
        pve
    }

    /// The `proxmox` input for this server, pinned to its certificate.
    pub fn connection(&self) -> Value {
        json!({
            "endpoint": self.endpoint(),
            "tokenId": TOKEN_ID,
            "tokenSecret": {"file": self.token_file},
            "fingerprint": self.fingerprint,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Adds a template VM.
    pub fn add_template(&self, vmid: u32, name: &str, node: &str) {
        let config = json!({
            "name": name, "template": 1, "cores": 1, "sockets": 1, "memory": "2048",
            "ostype": "l26", "scsihw": "virtio-scsi-pci", "boot": "order=scsi0", "agent": "1",
            "scsi0": format!("local-lvm:base-{vmid}-disk-0,size=4G"),
            "ide2": format!("local-lvm:vm-{vmid}-cloudinit,media=cdrom"),
            "net0": "virtio=BC:24:11:00:90:00,bridge=vmbr0",
            "smbios1": "uuid=0b7e7a3c-5d54-4f1e-9f5b-6a8c2d1e3f40",
            "vmgenid": "5c0a0f7e-3b2d-4c1a-8e9f-7d6b5a4c3e21",
        });
        self.with(|s| {
            s.vms.insert(
                vmid,
                Vm {
                    node: node.into(),
                    config: config.as_object().unwrap().clone(),
                    running: false,
                    booted_at: None,
                    guest: None,
                },
            );
        });
    }

    /// Runs `f` on the server's state (after finishing due tasks).
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap();
        state.settle();
        f(&mut state)
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        self.with(|s| f(&mut s.faults));
    }

    pub fn timing(&self, f: impl FnOnce(&mut Timing)) {
        self.with(|s| f(&mut s.timing));
    }

    /// The VM's config, if it exists.
    pub fn config(&self, vmid: u32) -> Option<Map<String, Value>> {
        self.with(|s| s.vms.get(&vmid).map(|v| v.config.clone()))
    }

    pub fn vm(&self, vmid: u32) -> Option<Vm> {
        self.with(|s| s.vms.get(&vmid).cloned())
    }

    /// VMIDs of the VMs that are not templates.
    pub fn vm_ids(&self) -> Vec<u32> {
        self.with(|s| {
            s.vms
                .iter()
                .filter(|(_, v)| !v.config.contains_key("template"))
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// Sets config keys directly, as someone in the web UI would.
    pub fn set_config(&self, vmid: u32, changes: Value) {
        self.with(|s| {
            let vm = s.vms.get_mut(&vmid).unwrap();
            for (k, v) in changes.as_object().unwrap() {
                if v.is_null() {
                    vm.config.remove(k);
                } else {
                    vm.config.insert(k.clone(), v.clone());
                }
            }
        });
    }

    /// The request log so far, and clears it.
    pub fn take_log(&self) -> Vec<String> {
        self.with(|s| std::mem::take(&mut s.log))
    }

    /// Waits until no task is running.
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.with(|s| s.tasks.values().any(|t| !t.done)) {
            assert!(Instant::now() < deadline, "tasks still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A request made by the test itself: status, reason phrase, body.
    pub fn raw(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String, Value) {
        let url = format!("{}/api2/json/{path}", self.endpoint());
        let pem = std::fs::read(&self.ca_file).unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let token = token.map(str::to_string);
        block_on(async move {
            let client = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
                .build()
                .unwrap();
            let mut request = client.request(method, url);
            if let Some(token) = token {
                request = request.header("Authorization", format!("PVEAPIToken={token}"));
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let reason = response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
                .unwrap_or_default();
            let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            (status, reason, body)
        })
    }

    /// `raw` with the right token.
    pub fn api(&self, method: &str, path: &str) -> (u16, String, Value) {
        self.raw(method, path, Some(&format!("{TOKEN_ID}={TOKEN_SECRET}")))
    }
}

impl Drop for Pve {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs an async block on a fresh runtime (the tests are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// What a handler answers: status, reason phrase, body; or drop the
/// connection.
enum Answer {
    Reply(u16, String, Value),
    Drop,
}

fn ok(data: Value) -> Answer {
    Answer::Reply(200, "OK".into(), json!({ "data": data }))
}

fn fail(status: u16, reason: impl Into<String>) -> Answer {
    Answer::Reply(status, reason.into(), Value::Null)
}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let latency = state.lock().unwrap().timing.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = request.method().as_str().to_string();
    let uri = request.uri().to_string();
    let auth = request
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let url = reqwest::Url::parse(&format!("https://pve{uri}")).unwrap();
    let mut params: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let form =
        reqwest::Url::parse(&format!("https://pve/?{}", String::from_utf8_lossy(&body))).unwrap();
    params.extend(form.query_pairs().into_owned());
    let path = url.path().trim_start_matches("/api2/json/").to_string();

    let (answer, legacy) = {
        let mut state = state.lock().unwrap();
        state.settle();
        let legacy = state.faults.legacy_errors;
        let answer = match auth.as_deref() {
            None => fail(401, "No ticket"),
            Some(a) if a != format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}") => {
                fail(401, "invalid token value!")
            }
            Some(_) => {
                state.log.push(format!("{method} {path}"));
                if state.faults.unavailable > 0 {
                    state.faults.unavailable -= 1;
                    fail(596, "Connection timed out")
                } else {
                    state.route(&method, &path, &params)
                }
            }
        };
        (answer, legacy)
    };
    match answer {
        Answer::Drop => Err(std::io::Error::other(
            "dropping the connection (injected fault)",
        )),
        Answer::Reply(status, reason, mut body) => {
            if status != 200 {
                let mut envelope = json!({"data": null});
                if !legacy {
                    envelope["message"] = json!(format!("{reason}\n"));
                }
                if let Value::Object(errors) = body.take() {
                    envelope["errors"] = Value::Object(errors);
                }
                body = envelope;
            }
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response.headers_mut().insert(
                "content-type",
                "application/json;charset=UTF-8".parse().unwrap(),
            );
            if status != 200 {
                response
                    .extensions_mut()
                    .insert(hyper::ext::ReasonPhrase::try_from(reason.into_bytes()).unwrap());
            }
            Ok(response)
        }
    }
}

fn digest(config: &Map<String, Value>) -> String {
    let mut copy = config.clone();
    copy.remove("digest");
    let hex: String = Sha256::digest(Value::Object(copy).to_string().as_bytes())
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect();
    hex
}

fn text(config: &Map<String, Value>, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn size_of(drive: &str) -> u64 {
    let size = drive
        .split(',')
        .find_map(|p| p.strip_prefix("size="))
        .unwrap_or("0");
    let number: u64 = size
        .trim_end_matches(['G', 'M', 'K', 'T'])
        .parse()
        .unwrap_or(0);
    match size.chars().last() {
        Some('T') => number << 40,
        Some('G') => number << 30,
        Some('M') => number << 20,
        Some('K') => number << 10,
        _ => number,
    }
}

fn set_size(drive: &str, gib: u64) -> String {
    let mut parts: Vec<String> = drive
        .split(',')
        .filter(|p| !p.starts_with("size="))
        .map(str::to_string)
        .collect();
    parts.push(format!("size={gib}G"));
    parts.join(",")
}

const NODES: [&str; 2] = ["pve1", "pve2"];

impl State {
    /// Finishes the tasks whose time is up, applying their effects.
    fn settle(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.done && t.end <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for upid in due {
            let task = self.tasks.get_mut(&upid).unwrap();
            task.done = true;
            let (effect, end) = (std::mem::replace(&mut task.effect, Effect::None), task.end);
            let boot = self.timing.boot;
            let agent_never = self.faults.agent_never;
            match effect {
                Effect::None => {}
                Effect::CloneDone(id) => {
                    if let Some(vm) = self.vms.get_mut(&id) {
                        vm.config.remove("lock");
                    }
                }
                Effect::CloneFailed(id) => {
                    self.vms.remove(&id);
                }
                Effect::Start(id) => {
                    if let Some(vm) = self.vms.get_mut(&id) {
                        vm.running = true;
                        vm.booted_at = (!agent_never).then(|| end + boot);
                        if let Some(GuestHook(guests)) = &mut self.guests {
                            match guests.boot(id, &vm.config) {
                                Ok(guest) => vm.guest = Some(guest),
                                Err(problem) => {
                                    // Like a guest that never gets its agent up.
                                    eprintln!("pve test server: VM {id} did not boot: {problem}");
                                    vm.booted_at = None;
                                }
                            }
                        }
                    }
                }
                Effect::Stop(id) => {
                    if let Some(vm) = self.vms.get_mut(&id) {
                        vm.running = false;
                        vm.booted_at = None;
                        if vm.guest.take().is_some()
                            && let Some(GuestHook(guests)) = &mut self.guests
                        {
                            guests.halt(id);
                        }
                    }
                }
                Effect::Destroy(id) => {
                    self.vms.remove(&id);
                    if let Some(GuestHook(guests)) = &mut self.guests {
                        guests.destroy(id);
                    }
                }
                Effect::Migrate(id, target) => {
                    if let Some(vm) = self.vms.get_mut(&id) {
                        vm.node = target;
                        vm.config.remove("lock");
                    }
                }
            }
        }
    }

    fn task(
        &mut self,
        node: &str,
        kind: &str,
        id: u32,
        duration: Duration,
        effect: Effect,
    ) -> Answer {
        self.counter += 1;
        let starttime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let upid = format!(
            "UPID:{node}:{:08X}:{:08X}:{starttime:08X}:{kind}:{id}:{TOKEN_ID}:",
            4000 + self.counter,
            self.counter * 7919
        );
        let (exit, effect) = match self.faults.fail_next_task.take() {
            Some((k, exit)) if k == kind => (exit, Effect::None),
            other => {
                self.faults.fail_next_task = other;
                ("OK".to_string(), effect)
            }
        };
        let status_400 = self.faults.task_status_400 > 0;
        if status_400 {
            self.faults.task_status_400 -= 1;
        }
        self.tasks.insert(
            upid.clone(),
            Task {
                kind: kind.into(),
                id: id.to_string(),
                starttime,
                end: Instant::now() + duration,
                exit,
                effect,
                done: false,
                status_400,
            },
        );
        ok(json!(upid))
    }

    fn next_mac(&mut self) -> String {
        self.counter += 1;
        let n = self.counter;
        format!(
            "BC:24:11:{:02X}:{:02X}:{:02X}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    }

    fn missing(node: &str, vmid: u32) -> Answer {
        fail(
            500,
            format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
        )
    }

    fn route(&mut self, method: &str, path: &str, params: &BTreeMap<String, String>) -> Answer {
        let parts: Vec<&str> = path.split('/').collect();
        match (method, parts.as_slice()) {
            ("GET", ["version"]) => ok(json!({"repoid": "39d8a4de7dfb2c40", "release": "9.0", "version": "9.0.4"})),
            ("GET", ["nodes"]) => ok(Value::Array(
                NODES
                    .iter()
                    .map(|n| json!({
                        "node": n, "status": "online", "type": "node", "id": format!("node/{n}"),
                        "level": "", "uptime": 2236708, "cpu": 0.0035, "maxcpu": 12,
                        "mem": 11508809728u64, "maxmem": 33568288768u64,
                        "disk": 2310930432u64, "maxdisk": 940743983104u64,
                        "ssl_fingerprint": "80:D4:F2:DF:64:95:CD:8D:A0:82:82:AC:48:BA:C0:7A:1B:6B:87:8B:FE:B9:83:1C:95:4E:79:58:77:99:69:F5",
                    }))
                    .collect(),
            )),
            ("GET", ["cluster", "nextid"]) => {
                let free = (100u32..).find(|id| !self.vms.contains_key(id)).unwrap();
                ok(json!(free.to_string()))
            }
            ("GET", ["cluster", "resources"]) => ok(Value::Array(
                self.vms
                    .iter()
                    .map(|(id, vm)| json!({
                        "id": format!("qemu/{id}"), "type": "qemu", "vmid": id, "node": vm.node,
                        "name": text(&vm.config, "name").unwrap_or_default(),
                        "status": if vm.running { "running" } else { "stopped" },
                        "template": if vm.config.contains_key("template") { 1 } else { 0 },
                        "maxmem": 2147483648u64, "maxcpu": 1, "maxdisk": 4294967296u64,
                        "mem": 0, "cpu": 0, "disk": 0, "uptime": 0,
                        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
                    }))
                    .collect(),
            )),
            ("GET", ["nodes", node, "tasks", upid, "status"]) => {
                let Some(task) = self.tasks.get_mut(*upid) else {
                    return fail(500, format!("unable to parse worker upid '{upid}'"));
                };
                if task.status_400 {
                    task.status_400 = false;
                    return Answer::Reply(400, "Parameter verification failed.".into(), json!({"upid": "no such task"}));
                }
                let mut status = json!({
                    "upid": upid, "node": node, "pid": 4000, "pstart": 123456,
                    "starttime": task.starttime, "type": task.kind, "id": task.id,
                    "user": TOKEN_ID.split('!').next().unwrap(), "tokenid": TOKEN_ID.split('!').nth(1).unwrap(),
                    "status": if task.done { "stopped" } else { "running" },
                });
                if task.done {
                    status["exitstatus"] = json!(task.exit);
                }
                ok(status)
            }
            (_, ["nodes", node, "qemu", vmid, rest @ ..]) => {
                let Ok(vmid) = vmid.parse::<u32>() else {
                    return Answer::Reply(400, "Parameter verification failed.".into(), json!({"vmid": "type check ('integer') failed"}));
                };
                if self.vms.get(&vmid).is_none_or(|v| v.node != *node) {
                    return Self::missing(node, vmid);
                }
                self.vm_route(method, node, vmid, rest, params)
            }
            _ => fail(501, format!("Method '{method} /{path}' not implemented")),
        }
    }

    fn vm_route(
        &mut self,
        method: &str,
        node: &str,
        vmid: u32,
        rest: &[&str],
        params: &BTreeMap<String, String>,
    ) -> Answer {
        let timing = self.timing.clone();
        let vm = self.vms.get(&vmid).unwrap().clone();
        let locked = text(&vm.config, "lock");
        match (method, rest) {
            ("GET", ["config"]) => {
                let mut config = vm.config.clone();
                config.insert("digest".into(), json!(digest(&vm.config)));
                ok(Value::Object(config))
            }
            ("POST", ["config"]) => {
                if let Some(lock) = locked {
                    return fail(500, format!("VM is locked ({lock})"));
                }
                if params
                    .get("digest")
                    .is_some_and(|d| *d != digest(&vm.config))
                {
                    return fail(500, "checksum mismatch (file change by other user?)");
                }
                let mut config = vm.config.clone();
                let mut disk_index = 1 + config
                    .keys()
                    .filter(|k| {
                        k.starts_with("scsi") || k.starts_with("virtio") || k.starts_with("sata")
                    })
                    .count();
                for (key, value) in params {
                    match key.as_str() {
                        "digest" | "background_delay" => {}
                        "delete" => {
                            for k in value.split(',') {
                                config.remove(k);
                            }
                        }
                        k if k.starts_with("net") => {
                            let value = if value.split(',').next().is_some_and(|m| !m.contains('='))
                            {
                                let (model, rest) = value.split_once(',').unwrap_or((value, ""));
                                format!("{model}={},{rest}", self.next_mac())
                            } else {
                                value.clone()
                            };
                            config.insert(k.into(), json!(value));
                        }
                        "tags" => {
                            let mut tags: Vec<&str> = value
                                .split([';', ',', ' '])
                                .filter(|t| !t.is_empty())
                                .collect();
                            tags.sort();
                            config.insert("tags".into(), json!(tags.join(";")));
                        }
                        "cores" | "sockets" | "balloon" | "onboot" | "protection" => {
                            match value.parse::<u64>() {
                                Ok(n) => {
                                    config.insert(key.clone(), json!(n));
                                }
                                Err(_) => {
                                    return Answer::Reply(
                                        400,
                                        "Parameter verification failed.".into(),
                                        json!({key.as_str(): format!("type check ('integer') failed - got '{value}'")}),
                                    );
                                }
                            }
                        }
                        k => {
                            let value = match value.split_once(':') {
                                Some((storage, "cloudinit")) => {
                                    format!("{storage}:vm-{vmid}-cloudinit,media=cdrom")
                                }
                                Some((storage, size))
                                    if size.parse::<u64>().is_ok()
                                        && !k.starts_with("ipconfig") =>
                                {
                                    disk_index += 1;
                                    format!("{storage}:vm-{vmid}-disk-{disk_index},size={size}G")
                                }
                                _ => value.clone(),
                            };
                            config.insert(k.into(), json!(value));
                        }
                    }
                }
                self.vms.get_mut(&vmid).unwrap().config = config;
                self.task(node, "qmconfig", vmid, timing.task, Effect::None)
            }
            ("PUT", ["resize"]) => {
                if let Some(lock) = locked {
                    return fail(500, format!("VM is locked ({lock})"));
                }
                let disk = params.get("disk").cloned().unwrap_or_default();
                let Some(drive) = text(&vm.config, &disk) else {
                    return fail(500, format!("disk '{disk}' does not exist"));
                };
                let size = params.get("size").cloned().unwrap_or_default();
                let current = size_of(&drive);
                let (relative, number) = match size.strip_prefix('+') {
                    Some(n) => (true, n),
                    None => (false, size.as_str()),
                };
                let Ok(gib) = number.trim_end_matches('G').parse::<u64>() else {
                    return Answer::Reply(
                        400,
                        "Parameter verification failed.".into(),
                        json!({"size": "value does not match the regex pattern"}),
                    );
                };
                let new = if relative {
                    current + (gib << 30)
                } else {
                    gib << 30
                };
                if new < current {
                    return fail(500, "shrinking disks is not supported");
                }
                let drive = set_size(&drive, new >> 30);
                self.vms
                    .get_mut(&vmid)
                    .unwrap()
                    .config
                    .insert(disk, json!(drive));
                self.task(node, "qmresize", vmid, timing.task, Effect::None)
            }
            ("POST", ["clone"]) => {
                let Some(newid) = params.get("newid").and_then(|n| n.parse::<u32>().ok()) else {
                    return Answer::Reply(
                        400,
                        "Parameter verification failed.".into(),
                        json!({"newid": "property is missing and it is not optional"}),
                    );
                };
                if self.faults.lock_timeouts > 0 {
                    self.faults.lock_timeouts -= 1;
                    return fail(
                        500,
                        format!(
                            "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
                        ),
                    );
                }
                if let Some(existing) = self.vms.get(&newid) {
                    return fail(
                        500,
                        format!("VM {newid} already exists on node '{}'", existing.node),
                    );
                }
                let target = params
                    .get("target")
                    .cloned()
                    .unwrap_or_else(|| node.to_string());
                let mut config = vm.config.clone();
                config.remove("template");
                for (key, value) in config.iter_mut() {
                    let Some(drive) = value.as_str() else {
                        continue;
                    };
                    if drive.contains(&format!("-{vmid}-")) {
                        let mut drive = drive
                            .replace(&format!("base-{vmid}-"), &format!("vm-{newid}-"))
                            .replace(&format!("vm-{vmid}-"), &format!("vm-{newid}-"));
                        if let Some(storage) = params.get("storage")
                            && let Some((_, rest)) = drive.split_once(':')
                        {
                            drive = format!("{storage}:{rest}");
                        }
                        *value = json!(drive);
                    } else if key.starts_with("net") {
                        let _ = key;
                    }
                }
                let nets: Vec<String> = config
                    .keys()
                    .filter(|k| k.starts_with("net"))
                    .cloned()
                    .collect();
                for key in nets {
                    let value = text(&config, &key).unwrap();
                    let rest = value.split_once(',').map(|(_, r)| r).unwrap_or("");
                    let model = value.split('=').next().unwrap_or("virtio").to_string();
                    let mac = self.next_mac();
                    config.insert(key, json!(format!("{model}={mac},{rest}")));
                }
                config.insert(
                    "name".into(),
                    json!(params.get("name").cloned().unwrap_or_else(|| format!(
                        "Copy-of-VM-{}",
                        text(&vm.config, "name").unwrap_or_default()
                    ))),
                );
                if let Some(d) = params.get("description") {
                    config.insert("description".into(), json!(d));
                }
                config.insert("lock".into(), json!("clone"));
                self.vms.insert(
                    newid,
                    Vm {
                        node: target,
                        config,
                        running: false,
                        booted_at: None,
                        guest: None,
                    },
                );
                let effect = if self.faults.clone_task_lock_timeouts > 0 {
                    self.faults.clone_task_lock_timeouts -= 1;
                    self.faults.fail_next_task = Some((
                        "qmclone".into(),
                        format!(
                            "clone failed: can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
                        ),
                    ));
                    Effect::CloneFailed(newid)
                } else {
                    Effect::CloneDone(newid)
                };
                let failing = matches!(effect, Effect::CloneFailed(_));
                let answer = self.task(node, "qmclone", vmid, timing.clone, effect);
                if failing {
                    // The failed clone is cleaned up when its task ends.
                    let upid = match &answer {
                        Answer::Reply(_, _, b) => b["data"].as_str().unwrap().to_string(),
                        Answer::Drop => unreachable!(),
                    };
                    self.tasks.get_mut(&upid).unwrap().effect = Effect::CloneFailed(newid);
                }
                if self.faults.drop_next_clone {
                    self.faults.drop_next_clone = false;
                    return Answer::Drop;
                }
                answer
            }
            ("POST", ["status", action]) => {
                if let Some(lock) = &locked {
                    return fail(500, format!("VM is locked ({lock})"));
                }
                match *action {
                    "start" if vm.running => self
                        .task(node, "qmstart", vmid, timing.task, Effect::None)
                        .with_exit(self, "VM already running"),
                    "start" => self.task(node, "qmstart", vmid, timing.task, Effect::Start(vmid)),
                    "stop" => self.task(node, "qmstop", vmid, timing.task, Effect::Stop(vmid)),
                    "shutdown" if self.faults.ignore_shutdown => {
                        self.faults.fail_next_task = Some((
                            "qmshutdown".into(),
                            "VM quit/powerdown failed - got timeout".into(),
                        ));
                        self.task(node, "qmshutdown", vmid, timing.shutdown, Effect::None)
                    }
                    "shutdown" => self.task(
                        node,
                        "qmshutdown",
                        vmid,
                        timing.shutdown,
                        Effect::Stop(vmid),
                    ),
                    _ => fail(
                        501,
                        format!(
                            "Method 'POST /nodes/{node}/qemu/{vmid}/status/{action}' not implemented"
                        ),
                    ),
                }
            }
            ("GET", ["status", "current"]) => ok(status_current(vmid, &vm)),
            ("POST", ["migrate"]) => {
                let target = params.get("target").cloned().unwrap_or_default();
                if !NODES.contains(&target.as_str()) {
                    return Answer::Reply(
                        400,
                        "Parameter verification failed.".into(),
                        json!({"target": format!("no such cluster node '{target}'")}),
                    );
                }
                if vm.running && params.get("online").map(String::as_str) != Some("1") {
                    return fail(500, "can't migrate running VM without --online");
                }
                self.vms
                    .get_mut(&vmid)
                    .unwrap()
                    .config
                    .insert("lock".into(), json!("migrate"));
                self.task(
                    node,
                    "qmigrate",
                    vmid,
                    timing.task,
                    Effect::Migrate(vmid, target),
                )
            }
            ("DELETE", []) => {
                if let Some(lock) = &locked {
                    return fail(500, format!("VM is locked ({lock})"));
                }
                if text(&vm.config, "protection").as_deref() == Some("1") {
                    return fail(
                        500,
                        format!("can't remove VM {vmid} - protection mode enabled"),
                    );
                }
                if vm.running {
                    return fail(500, format!("VM {vmid} is running - destroy failed"));
                }
                self.task(node, "qmdestroy", vmid, timing.task, Effect::Destroy(vmid))
            }
            ("GET", ["agent", command]) => {
                if !vm.running {
                    return fail(500, format!("VM {vmid} is not running"));
                }
                if vm.booted_at.is_none_or(|at| Instant::now() < at) {
                    return fail(500, "QEMU guest agent is not running");
                }
                match *command {
                    "network-get-interfaces" => ok(json!({"result": interfaces(vmid, &vm)})),
                    "file-read" => {
                        if params.get("file").map(String::as_str)
                            != Some("/etc/ssh/ssh_host_ed25519_key.pub")
                        {
                            return fail(500, "guest-file-open failed: No such file or directory");
                        }
                        let content = format!("{}\n", host_key(vmid, &vm));
                        ok(json!({"content": content, "bytes-read": content.len()}))
                    }
                    _ => fail(
                        501,
                        format!(
                            "Method 'GET /nodes/{node}/qemu/{vmid}/agent/{command}' not implemented"
                        ),
                    ),
                }
            }
            _ => fail(
                501,
                format!(
                    "Method '{method} /nodes/{node}/qemu/{vmid}/{}' not implemented",
                    rest.join("/")
                ),
            ),
        }
    }
}

impl Answer {
    /// Makes the task just started end with `exit`.
    fn with_exit(self, state: &mut State, exit: &str) -> Answer {
        if let Answer::Reply(_, _, body) = &self
            && let Some(task) = body["data"].as_str().and_then(|u| state.tasks.get_mut(u))
        {
            task.exit = exit.to_string();
        }
        self
    }
}

/// The guest's SSH host key (a real guest's, or made up from the VMID and
/// name).
pub fn host_key(vmid: u32, vm: &Vm) -> String {
    if let Some(guest) = &vm.guest {
        return guest.host_key.clone();
    }
    let name = text(&vm.config, "name").unwrap_or_default();
    format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{vmid:0>20}HostKeyOfTheGuest root@{name}")
}

/// The guest's addresses: the static ones of ipconfig0, or a DHCP lease.
fn interfaces(vmid: u32, vm: &Vm) -> Value {
    let mac = text(&vm.config, "net0")
        .and_then(|n| {
            n.split(',')
                .next()
                .and_then(|m| m.split_once('='))
                .map(|(_, mac)| mac.to_lowercase())
        })
        .unwrap_or_default();
    let ipconfig = text(&vm.config, "ipconfig0").unwrap_or_default();
    let mut addresses = Vec::new();
    for part in ipconfig.split(',') {
        match part.split_once('=') {
            Some(("ip", "dhcp")) => addresses.push(json!({"ip-address-type": "ipv4", "ip-address": format!("10.0.{}.{}", vmid / 250, vmid % 250 + 2), "prefix": 16})),
            Some(("ip", cidr)) => {
                let (ip, prefix) = cidr.split_once('/').unwrap();
                addresses.push(json!({"ip-address-type": "ipv4", "ip-address": ip, "prefix": prefix.parse::<u32>().unwrap()}));
            }
            Some(("ip6", cidr)) if cidr.contains('/') => {
                let (ip, prefix) = cidr.split_once('/').unwrap();
                addresses.push(json!({"ip-address-type": "ipv6", "ip-address": ip, "prefix": prefix.parse::<u32>().unwrap()}));
            }
            _ => {}
        }
    }
    if let Some(guest) = &vm.guest {
        addresses = guest
            .addresses
            .iter()
            .map(|(ip, prefix)| {
                let kind = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
                json!({"ip-address-type": kind, "ip-address": ip.to_string(), "prefix": prefix})
            })
            .collect();
    } else if ipconfig.is_empty() {
        addresses.push(json!({"ip-address-type": "ipv4", "ip-address": format!("10.0.{}.{}", vmid / 250, vmid % 250 + 2), "prefix": 16}));
    }
    addresses.push(
        json!({"ip-address-type": "ipv6", "ip-address": "fe80::be24:11ff:fe00:1", "prefix": 64}),
    );
    json!([
        {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
            {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
            {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}],
         "statistics": {"rx-bytes": 0, "rx-dropped": 0, "rx-errs": 0, "rx-packets": 0, "tx-bytes": 0, "tx-dropped": 0, "tx-errs": 0, "tx-packets": 0}},
        {"name": "eth0", "hardware-address": mac, "ip-addresses": addresses,
         "statistics": {"rx-bytes": 1024, "rx-dropped": 0, "rx-errs": 0, "rx-packets": 8, "tx-bytes": 512, "tx-dropped": 0, "tx-errs": 0, "tx-packets": 4}},
    ])
}

/// `status/current`, in the shape of the real answer for a running VM
/// (fixture `qemu-status-current.running.json`).
fn status_current(vmid: u32, vm: &Vm) -> Value {
    let name = text(&vm.config, "name").unwrap_or_default();
    let memory = text(&vm.config, "memory")
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(512)
        << 20;
    let cores: u64 = text(&vm.config, "cores")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    if !vm.running {
        return json!({
            "vmid": vmid, "name": name, "status": "stopped", "qmpstatus": "stopped",
            "cpus": cores, "maxmem": memory, "maxdisk": 4294967296u64, "mem": 0, "disk": 0,
            "cpu": 0, "uptime": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            "ha": {"managed": 0}, "agent": 1,
        });
    }
    let blockstat = || {
        json!({
            "rd_total_time_ns": 0, "flush_total_time_ns": 0, "wr_total_time_ns": 0, "failed_rd_operations": 0,
            "rd_bytes": 0, "wr_bytes": 0, "unmap_operations": 0, "failed_unmap_operations": 0,
            "failed_wr_operations": 0, "account_failed": true, "invalid_unmap_operations": 0,
            "wr_operations": 0, "rd_operations": 0, "failed_flush_operations": 0, "invalid_wr_operations": 0,
            "account_invalid": true, "unmap_total_time_ns": 0, "unmap_merged": 0, "timed_stats": [],
            "unmap_bytes": 0, "invalid_flush_operations": 0, "idle_time_ns": 0, "flush_operations": 0,
            "invalid_rd_operations": 0, "wr_highest_offset": 0, "rd_merged": 0, "wr_merged": 0,
        })
    };
    json!({
        "pid": 1563102, "shares": 1000, "agent": 1, "diskwrite": 0, "cpus": cores,
        "ha": {"managed": 0}, "maxmem": memory,
        "blockstat": {"scsi0": blockstat(), "ide2": blockstat()},
        "uptime": 1, "cpu": 0.01, "running-machine": "pc-i440fx-9.0+pve0", "balloon": memory,
        "qmpstatus": "running", "status": "running", "maxdisk": 4294967296u64, "diskread": 0,
        "freemem": memory / 2,
        "ballooninfo": {"actual": memory, "max_mem": memory, "free_mem": memory / 2, "major_page_faults": 0,
            "minor_page_faults": 0, "mem_swapped_out": 0, "mem_swapped_in": 0, "total_mem": memory, "last_update": 1693252591},
        "vmid": vmid, "balloon_min": memory, "mem": memory / 2,
        "proxmox-support": {"pbs-dirty-bitmap-savevm": true, "pbs-dirty-bitmap": true, "query-bitmap-info": true,
            "pbs-masterkey": true, "backup-max-workers": true, "pbs-dirty-bitmap-migration": true,
            "pbs-library-version": "1.4.1 (UNKNOWN)"},
        "running-qemu": "9.0.2", "name": name, "netout": 0, "netin": 0,
        "nics": {format!("tap{vmid}i0"): {"netout": 0, "netin": 0}},
        "disk": 0,
    })
}
