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
//! - the API token is checked (401 without or with a wrong one);
//! - changes to a running VM that are not hot-pluggable stay pending until
//!   it stops or starts (`GET .../config` has them applied, `?current=1`
//!   not, `GET .../pending` lists both);
//! - a clone's new config is only `lock: clone` until its first disk is
//!   copied; linked clones and clones to another node follow upstream's
//!   storage rules; unknown config keys are a 400;
//! - a start or destroy sent again while the first runs ends the way
//!   upstream's worker ends it (`already running`, `does not exist`).
//!
//! Every request is logged with its parameters ([`State::requests`]), and
//! every injected fault that fires is counted ([`Pve::fired`]).
//!
//! A VM's guest is made up (a DHCP address, a host key derived from its
//! VMID) unless the server was given [`Guests`], which boot a real guest
//! when a start task ends and halt it when the VM stops or is destroyed.
//!
//! Faults can be injected: lock timeouts (in the answer or as a task's exit
//! status), 596, clone tasks failing on a lock or a VMID clash, a 400 from
//! a task status right after start, answers lost after the work was done
//! (a dropped connection, or pveproxy's 596), slow tasks.

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
    /// Requests whose answer is lost after the server did the work: the
    /// first request matching each entry.
    pub lose_answer: Vec<LostAnswer>,
    /// Tasks of a type (`qmconfig`, `qmresize`, `qmstart`, `qmshutdown`,
    /// `qmstop`, `qmdestroy`) that end with a config lock timeout, doing
    /// nothing, this many times.
    pub task_lock_timeouts: BTreeMap<String, u32>,
    /// Clone tasks whose new VMID a concurrent clone takes first: the task
    /// ends "unable to create VM N: config file already exists" and the
    /// VMID holds someone else's VM.
    pub clone_task_vmid_clash: u32,
    /// Token failures answer `Authentication failed!`, as pve-manager
    /// 9.1.5 and later do; otherwise the older texts.
    pub unified_auth_errors: bool,
    /// Texts of qemu-server before 8.2.5 ("checksum missmatch").
    pub old_texts: bool,
    /// Config changes sent with a digest find the config changed by
    /// someone else just before (its digest is stale), this many times.
    pub stale_digests: u32,
}

/// An answer lost after the work: the first request with this method and
/// a path ending in `path_suffix` (e.g. `/clone`, `/status/start`, or the
/// VMID for a DELETE) is carried out, then answered this way.
#[derive(Debug, Clone)]
pub struct LostAnswer {
    /// `GET`, `POST`, `PUT`, `DELETE`.
    pub method: String,
    /// How the path ends.
    pub path_suffix: String,
    /// How the answer is lost.
    pub how: Loss,
}

/// How an answer is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The connection drops (reset mid-answer).
    Drop,
    /// pveproxy gave up waiting for pvedaemon (its proxy timeout is 30 s)
    /// and answers 596 while the work goes on.
    Proxy596,
}

impl LostAnswer {
    /// The first `method` request whose path ends in `path_suffix`.
    pub fn new(method: &str, path_suffix: &str, how: Loss) -> LostAnswer {
        LostAnswer {
            method: method.into(),
            path_suffix: path_suffix.into(),
            how,
        }
    }
}

/// One authenticated request: method, path (after `/api2/json/`), and its
/// query and form parameters.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The HTTP method.
    pub method: String,
    /// The path after `/api2/json/`.
    pub path: String,
    /// Query and form parameters.
    pub params: BTreeMap<String, String>,
}

/// A VM (or template) of the test server.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The node its config is on.
    pub node: String,
    /// The current configuration: what runs (`GET .../config?current=1`).
    pub config: Map<String, Value>,
    /// Changes waiting for the next stop or start (qemu-server's
    /// `[PENDING]` section): new values.
    pub pending: Map<String, Value>,
    /// Keys waiting to be removed at the next stop or start.
    pub pending_delete: Vec<String>,
    /// A clone's real config, written when its first disk is copied
    /// (until then the config is only `lock: clone`).
    staged: Option<(Instant, Map<String, Value>)>,
    /// Whether it runs.
    pub running: bool,
    pub booted_at: Option<Instant>,
    /// The real guest running in the VM, when the server has [`Guests`].
    pub guest: Option<Guest>,
}

impl Vm {
    fn new(node: &str, config: Map<String, Value>) -> Vm {
        Vm {
            node: node.into(),
            config,
            pending: Map::new(),
            pending_delete: Vec::new(),
            staged: None,
            running: false,
            booted_at: None,
            guest: None,
        }
    }

    /// The configuration with pending changes applied (`GET .../config`).
    pub fn effective(&self) -> Map<String, Value> {
        let mut config = self.config.clone();
        for key in &self.pending_delete {
            config.remove(key);
        }
        for (k, v) in &self.pending {
            config.insert(k.clone(), v.clone());
        }
        config
    }

    /// Applies the pending changes, as qemu-server's
    /// `vmconfig_apply_pending` does when the VM stops (`vm_stop_cleanup`)
    /// or starts (`vm_start_nolock`).
    fn apply_pending(&mut self) {
        self.config = self.effective();
        self.pending.clear();
        self.pending_delete.clear();
    }
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
    /// The clone's task ends: the lock goes, the config moves to the
    /// target node, the VM joins the pool.
    CloneDone(u32, String, Option<String>),
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

/// What the server holds; [`Pve::with`] gives access.
#[derive(Debug, Default)]
pub struct State {
    /// VMs and templates by VMID.
    pub vms: BTreeMap<u32, Vm>,
    tasks: HashMap<String, Task>,
    /// `METHOD path` of every authenticated request, in order.
    pub log: Vec<String>,
    /// Every authenticated request with its parameters, in order.
    pub requests: Vec<Logged>,
    /// How often each injected fault fired, by name (see [`Pve::fired`]).
    pub fired: BTreeMap<String, u32>,
    /// Resource pools and their members.
    pub pools: BTreeMap<String, Vec<u32>>,
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
        pve.with(|s| s.pools.insert("operators".into(), Vec::new()));
        pve
    }

    /// How often the injected fault `name` fired: `lock_timeout`,
    /// `unavailable`, `clone_task_lock_timeout`, `task_status_400`,
    /// `lost_answer_drop`, `lost_answer_596`, `task_lock_timeout:<type>`,
    /// `clone_task_vmid_clash`, `fail_next_task`, `stale_digest`.
    pub fn fired(&self, name: &str) -> u32 {
        self.with(|s| s.fired.get(name).copied().unwrap_or(0))
    }

    /// The requests so far with their parameters, and clears them.
    pub fn take_requests(&self) -> Vec<Logged> {
        self.with(|s| std::mem::take(&mut s.requests))
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
            s.vms
                .insert(vmid, Vm::new(node, config.as_object().unwrap().clone()));
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
            // pve-manager 9.1.5 "unify error message in case of auth
            // failure" (PVE/HTTPServer.pm, auth_handler); older versions
            // answer PVE::AccessControl::verify_token's own text.
            Some(a) if a != format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}") => {
                if state.faults.unified_auth_errors {
                    fail(401, "Authentication failed!")
                } else {
                    fail(401, "invalid token value!")
                }
            }
            Some(_) => {
                state.log.push(format!("{method} {path}"));
                state.requests.push(Logged {
                    method: method.clone(),
                    path: path.clone(),
                    params: params.clone(),
                });
                if state.faults.unavailable > 0 {
                    state.faults.unavailable -= 1;
                    state.fire("unavailable");
                    fail(596, "Connection timed out")
                } else {
                    let answer = state.route(&method, &path, &params);
                    // The work is done; the answer may still be lost on the
                    // way back (pve-http-server's proxy_request gives up
                    // after `timeout => 30` and AnyEvent::HTTP answers 596).
                    let lost = state
                        .faults
                        .lose_answer
                        .iter()
                        .position(|l| l.method == method && path.ends_with(&l.path_suffix));
                    match lost.map(|i| state.faults.lose_answer.remove(i).how) {
                        Some(Loss::Drop) => {
                            state.fire("lost_answer_drop");
                            Answer::Drop
                        }
                        Some(Loss::Proxy596) => {
                            state.fire("lost_answer_596");
                            fail(596, "Connection timed out")
                        }
                        None => answer,
                    }
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

/// The digest of the whole config file, `[PENDING]` section included, as
/// qemu-server's `load_config` computes it over the file.
fn digest(vm: &Vm) -> String {
    let mut copy = vm.config.clone();
    copy.remove("digest");
    let file = json!([copy, vm.pending, vm.pending_delete]);
    let hex: String = Sha256::digest(file.to_string().as_bytes())
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

/// The cluster's storages and whether each is shared (reachable from every
/// node): `local` and `local-lvm` as on a fresh node, `fast` a local
/// LVM-thin, `ceph` shared RBD.
const STORAGES: [(&str, bool); 4] = [
    ("local", false),
    ("local-lvm", false),
    ("fast", false),
    ("ceph", true),
];

/// Options qemu-server applies to a running VM at once
/// (`$fast_plug_option` in PVE/QemuServer.pm, plus the cloud-init options
/// of `$confdesc_cloudinit`).
const FAST_PLUG: [&str; 22] = [
    "description",
    "hookscript",
    "lock",
    "migrate_downtime",
    "migrate_speed",
    "name",
    "onboot",
    "protection",
    "shares",
    "startup",
    "tags",
    "vmstatestorage",
    "cicustom",
    "cipassword",
    "citype",
    "ciupgrade",
    "ciuser",
    "nameserver",
    "searchdomain",
    "sshkeys",
    "cpuunits",
    "cpulimit",
];

/// The config keys `POST .../config` accepts (a subset of qemu-server's
/// `$confdesc` with `additionalProperties => 0`), with the numbered ones
/// by prefix.
const CONFIG_KEYS: [&str; 26] = [
    "name",
    "description",
    "tags",
    "cores",
    "sockets",
    "vcpus",
    "memory",
    "balloon",
    "shares",
    "cpu",
    "numa",
    "hotplug",
    "onboot",
    "protection",
    "agent",
    "ostype",
    "scsihw",
    "boot",
    "ciuser",
    "cipassword",
    "sshkeys",
    "nameserver",
    "searchdomain",
    "smbios1",
    "vmgenid",
    "citype",
];
const NUMBERED_KEYS: [&str; 7] = [
    "net", "scsi", "virtio", "sata", "ide", "ipconfig", "efidisk",
];
/// Parameters of `POST .../config` that are not config keys.
const CONFIG_PARAMS: [&str; 5] = ["delete", "digest", "background_delay", "revert", "skiplock"];

fn known_config_key(key: &str) -> bool {
    CONFIG_KEYS.contains(&key)
        || NUMBERED_KEYS.iter().any(|p| {
            key.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
}

/// The hotplug features of a config (`parse_hotplug_features` in
/// PVE/QemuServer.pm: unset or `1` is the default `network,disk,usb`, `0`
/// none).
fn hotplug_features(config: &Map<String, Value>) -> Vec<String> {
    let value = text(config, "hotplug").unwrap_or_else(|| "1".into());
    match value.as_str() {
        "0" => Vec::new(),
        "1" => vec!["network".into(), "disk".into(), "usb".into()],
        list => list.split(',').map(str::to_string).collect(),
    }
}

/// Whether qemu-server applies this change to a running VM now, or leaves
/// it pending (`vmconfig_hotplug_pending` in PVE/QemuServer.pm: `die
/// "skip\n"` keeps an option pending). `new` is `None` for a removal.
fn hot_pluggable(config: &Map<String, Value>, key: &str, new: Option<&str>) -> bool {
    let features = hotplug_features(config);
    let has = |f: &str| features.iter().any(|x| x == f);
    let numbered = |p: &str| {
        key.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    if FAST_PLUG.contains(&key) || numbered("ipconfig") {
        return true;
    }
    match key {
        // Turning the balloon device on or off is not hot-pluggable.
        "balloon" => {
            let on = |v: Option<String>| v.is_none_or(|v| v != "0");
            on(text(config, "balloon")) == on(new.map(str::to_string))
        }
        // Memory hotplug needs NUMA (PVE/QemuServer/Memory.pm,
        // qemu_memory_hotplug: "NUMA needs to be enabled for memory
        // hotplug").
        "memory" => has("memory") && text(config, "numa").as_deref() == Some("1"),
        "vcpus" => has("cpu"),
        "hotplug" => {
            let old = text(config, "hotplug").unwrap_or_default();
            let new = new.unwrap_or_default();
            ![old.as_str(), new]
                .iter()
                .any(|v| v.contains("memory") || v.contains("cpu"))
        }
        _ if numbered("net") => {
            // vmconfig_update_net: bridge, tag, firewall, rate and
            // link_down change live; a new model or MAC needs network
            // hotplug.
            has("network")
                || new.is_some_and(|n| {
                    let head = |v: &str| v.split(',').next().unwrap_or("").to_lowercase();
                    text(config, key).is_some_and(|old| head(&old) == head(n))
                })
        }
        // The cloud-init drive is regenerated last, whatever the slot.
        _ if new.is_some_and(|n| n.contains("cloudinit")) => true,
        _ if numbered("scsi") || numbered("virtio") => has("disk"),
        // ide, sata, efidisk and everything else: pending.
        _ => false,
    }
}

impl State {
    /// Finishes the tasks whose time is up, applying their effects.
    fn settle(&mut self) {
        let now = Instant::now();
        // clone_vm writes the clone's config after its first disk is copied.
        for vm in self.vms.values_mut() {
            if vm.staged.as_ref().is_some_and(|(at, _)| *at <= now) {
                vm.config = vm.staged.take().unwrap().1;
            }
        }
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
                Effect::CloneDone(id, target, pool) => {
                    if let Some(vm) = self.vms.get_mut(&id) {
                        if let Some((_, config)) = vm.staged.take() {
                            vm.config = config;
                        }
                        vm.config.remove("lock");
                        // The config moves to the target node last.
                        vm.node = target;
                    }
                    if let Some(pool) = pool {
                        self.pools.entry(pool).or_default().push(id);
                    }
                }
                Effect::CloneFailed(id) => {
                    self.vms.remove(&id);
                }
                Effect::Start(id) => {
                    if let Some(vm) = self.vms.get_mut(&id) {
                        vm.apply_pending();
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
                        // _do_vm_stop -> vm_stop_cleanup(..., 1) applies
                        // what was pending.
                        vm.apply_pending();
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
                    for members in self.pools.values_mut() {
                        members.retain(|m| *m != id);
                    }
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

    /// Starts a task, which may end as an injected fault says: a config
    /// lock timeout (for tasks whose worker takes the lock, as
    /// `update_vm_api`, `resize_vm`, `vm_start`, `vm_shutdown`, `vm_stop`
    /// and `destroy_vm` do in PVE/API2/Qemu.pm) or `fail_next_task`.
    fn task(
        &mut self,
        node: &str,
        kind: &str,
        id: u32,
        duration: Duration,
        effect: Effect,
    ) -> Answer {
        let (exit, effect) = if self.take_task_lock_timeout(kind) {
            (lock_timeout_text(id), Effect::None)
        } else {
            match self.faults.fail_next_task.take() {
                Some((k, exit)) if k == kind => {
                    self.fire("fail_next_task");
                    (exit, Effect::None)
                }
                other => {
                    self.faults.fail_next_task = other;
                    ("OK".to_string(), effect)
                }
            }
        };
        self.new_task(node, kind, id, duration, effect, exit)
    }

    fn new_task(
        &mut self,
        node: &str,
        kind: &str,
        id: u32,
        duration: Duration,
        effect: Effect,
        exit: String,
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
        let status_400 = self.faults.task_status_400 > 0;
        if status_400 {
            self.faults.task_status_400 -= 1;
            self.fire("task_status_400");
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

    /// Counts a fault that fired.
    fn fire(&mut self, name: &str) {
        *self.fired.entry(name.to_string()).or_default() += 1;
    }

    /// Whether the next task of `kind` is to end on a config lock timeout
    /// (the fault counts down and is counted as fired).
    fn take_task_lock_timeout(&mut self, kind: &str) -> bool {
        match self.faults.task_lock_timeouts.get_mut(kind) {
            Some(n) if *n > 0 => {
                *n -= 1;
                self.fire(&format!("task_lock_timeout:{kind}"));
                true
            }
            _ => false,
        }
    }

    /// A task of `kind` on `id` that is still running.
    fn active_task(&self, kind: &str, id: u32) -> bool {
        let id = id.to_string();
        self.tasks
            .values()
            .any(|t| !t.done && t.kind == kind && t.id == id)
    }

    /// A task that ends with `exit` and does nothing.
    fn failing_task(&mut self, node: &str, kind: &str, id: u32, exit: String) -> Answer {
        let duration = self.timing.task;
        self.new_task(node, kind, id, duration, Effect::None, exit)
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
                    .map(|(id, vm)| {
                        // PVE/QemuServer.pm, vmstatus: `name` is "VM N"
                        // while the config has none (a clone's temporary
                        // file), and `lock` is shown when set.
                        let mut entry = json!({
                            "id": format!("qemu/{id}"), "type": "qemu", "vmid": id, "node": vm.node,
                            "name": text(&vm.config, "name").unwrap_or_else(|| format!("VM {id}")),
                            "status": if vm.running { "running" } else { "stopped" },
                            "template": if vm.config.contains_key("template") { 1 } else { 0 },
                            "maxmem": 2147483648u64, "maxcpu": 1, "maxdisk": 4294967296u64,
                            "mem": 0, "cpu": 0, "disk": 0, "uptime": 0,
                            "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
                        });
                        if let Some(lock) = text(&vm.config, "lock") {
                            entry["lock"] = json!(lock);
                        }
                        if let Some((pool, _)) = self.pools.iter().find(|(_, m)| m.contains(id)) {
                            entry["pool"] = json!(pool);
                        }
                        entry
                    })
                    .collect(),
            )),
            // PVE/API2/Tasks.pm, node_tasks: `source=active` lists the
            // running ones; finished ones carry `status` (the exit status)
            // and `endtime`.
            ("GET", ["nodes", node, "tasks"]) => {
                let mut list: Vec<(u64, Value)> = self
                    .tasks
                    .iter()
                    .filter(|(upid, t)| {
                        upid.starts_with(&format!("UPID:{node}:"))
                            && params.get("typefilter").is_none_or(|k| *k == t.kind)
                            && params.get("vmid").is_none_or(|v| *v == t.id)
                            && (params.get("source").map(String::as_str) != Some("active") || !t.done)
                    })
                    .map(|(upid, t)| {
                        let mut entry = json!({
                            "upid": upid, "node": node, "pid": 4000, "pstart": 123456,
                            "starttime": t.starttime, "type": t.kind, "id": t.id,
                            "user": TOKEN_ID,
                        });
                        if t.done {
                            entry["status"] = json!(t.exit);
                            entry["endtime"] = json!(t.starttime + 1);
                        }
                        (t.starttime, entry)
                    })
                    .collect();
                list.sort_by_key(|(start, _)| std::cmp::Reverse(*start));
                ok(Value::Array(list.into_iter().map(|(_, e)| e).collect()))
            }
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
        // Every API method's schema has `additionalProperties => 0`
        // (PVE/API2/Qemu.pm), and PVE::JSONSchema checks booleans.
        let allowed: Option<&[&str]> = match (method, rest) {
            ("POST", ["clone"]) => Some(&[
                "newid",
                "name",
                "description",
                "full",
                "target",
                "storage",
                "pool",
                "format",
                "snapname",
                "bwlimit",
            ]),
            ("PUT", ["resize"]) => Some(&["disk", "size", "digest", "skiplock"]),
            ("POST", ["status", "start"]) => Some(&["skiplock", "timeout", "machine"]),
            ("POST", ["status", "shutdown"]) => {
                Some(&["timeout", "forceStop", "keepActive", "skiplock"])
            }
            ("POST", ["status", "stop"]) => {
                Some(&["timeout", "keepActive", "skiplock", "overrule-shutdown"])
            }
            ("POST", ["migrate"]) => Some(&[
                "target",
                "online",
                "with-local-disks",
                "force",
                "migration_network",
                "migration_type",
                "targetstorage",
                "bwlimit",
            ]),
            ("DELETE", []) => Some(&["purge", "destroy-unreferenced-disks", "skiplock"]),
            ("GET", ["config"]) => Some(&["current", "snapshot"]),
            _ => None,
        };
        if let Some(allowed) = allowed {
            let booleans = [
                "full",
                "online",
                "with-local-disks",
                "forceStop",
                "keepActive",
                "purge",
                "destroy-unreferenced-disks",
                "current",
                "skiplock",
            ];
            let mut errors = Map::new();
            for (k, v) in params {
                if !allowed.contains(&k.as_str()) {
                    errors.insert(k.clone(), json!("property is not defined in schema and the schema does not allow additional properties"));
                } else if booleans.contains(&k.as_str())
                    && !["0", "1", "true", "false", "yes", "no", "on", "off"].contains(&v.as_str())
                {
                    errors.insert(
                        k.clone(),
                        json!(format!("type check ('boolean') failed - got '{v}'")),
                    );
                }
            }
            if !errors.is_empty() {
                return Answer::Reply(
                    400,
                    "Parameter verification failed.".into(),
                    Value::Object(errors),
                );
            }
        }
        match (method, rest) {
            // PVE/API2/Qemu.pm, vm_config: pending changes applied, unless
            // `current=1`.
            ("GET", ["config"]) => {
                let current = params.get("current").is_some_and(|c| c == "1");
                let mut config = if current {
                    vm.config.clone()
                } else {
                    vm.effective()
                };
                config.insert("digest".into(), json!(digest(&vm)));
                ok(Value::Object(config))
            }
            // PVE/API2/Qemu.pm, vm_pending (pve-guest-common PVE::GuestHelpers::
            // config_with_pending_array): one entry per key, with `value`
            // (current), `pending` and `delete` where they apply; `digest`
            // is one of them, since load_config sets it.
            ("GET", ["pending"]) => {
                let mut keys: Vec<&String> = vm
                    .config
                    .keys()
                    .chain(vm.pending.keys())
                    .chain(vm.pending_delete.iter())
                    .collect();
                keys.sort();
                keys.dedup();
                let mut list: Vec<Value> = keys
                    .into_iter()
                    .map(|k| {
                        let mut entry = json!({"key": k});
                        if let Some(v) = vm.config.get(k) {
                            entry["value"] = v.clone();
                        }
                        if let Some(v) = vm.pending.get(k) {
                            entry["pending"] = v.clone();
                        }
                        if vm.pending_delete.contains(k) {
                            entry["delete"] = json!(1);
                        }
                        entry
                    })
                    .collect();
                list.push(json!({"key": "digest", "value": digest(&vm)}));
                ok(Value::Array(list))
            }
            ("POST", ["config"]) => {
                // The API schema has `additionalProperties => 0`
                // (PVE::JSONSchema::validate: "property is not defined in
                // schema and the schema does not allow additional
                // properties").
                let unknown: Map<String, Value> = params
                    .keys()
                    .filter(|k| !known_config_key(k) && !CONFIG_PARAMS.contains(&k.as_str()))
                    .map(|k| (k.clone(), json!("property is not defined in schema and the schema does not allow additional properties")))
                    .collect();
                if !unknown.is_empty() {
                    return Answer::Reply(
                        400,
                        "Parameter verification failed.".into(),
                        Value::Object(unknown),
                    );
                }
                if let Some(lock) = locked {
                    return fail(500, format!("VM is locked ({lock})"));
                }
                // update_vm_api's load_and_check_config; qemu-server before
                // 8.2.5 ("fix typos in user-visible strings") said
                // "missmatch".
                let stale = self.faults.stale_digests > 0 && params.contains_key("digest");
                if stale {
                    // Someone else changed the config meanwhile.
                    self.faults.stale_digests -= 1;
                    self.fire("stale_digest");
                    let other = self.next_mac();
                    self.vms
                        .get_mut(&vmid)
                        .unwrap()
                        .config
                        .insert("vmgenid".into(), json!(other));
                }
                if stale || params.get("digest").is_some_and(|d| *d != digest(&vm)) {
                    return fail(
                        500,
                        if self.faults.old_texts {
                            "checksum missmatch (file change by other user?)"
                        } else {
                            "checksum mismatch (file change by other user?)"
                        },
                    );
                }
                // The worker takes the config lock before it changes
                // anything (`lock_config($vmid, $updatefn)`).
                if self.take_task_lock_timeout("qmconfig") {
                    return self.failing_task(node, "qmconfig", vmid, lock_timeout_text(vmid));
                }
                let mut config = vm.effective();
                let mut disk_index = 1 + config
                    .keys()
                    .filter(|k| {
                        k.starts_with("scsi") || k.starts_with("virtio") || k.starts_with("sata")
                    })
                    .count();
                let mut changes: Vec<(String, Option<Value>)> = Vec::new();
                for (key, value) in params {
                    match key.as_str() {
                        "digest" | "background_delay" | "revert" | "skiplock" => {}
                        "delete" => {
                            for k in value.split(',').filter(|k| !k.is_empty()) {
                                changes.push((k.to_string(), None));
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
                            changes.push((k.into(), Some(json!(value))));
                        }
                        "tags" => {
                            let mut tags: Vec<&str> = value
                                .split([';', ',', ' '])
                                .filter(|t| !t.is_empty())
                                .collect();
                            tags.sort();
                            changes.push(("tags".into(), Some(json!(tags.join(";")))));
                        }
                        "cores" | "sockets" | "vcpus" | "balloon" | "onboot" | "protection"
                        | "numa" => match value.parse::<u64>() {
                            Ok(n) => changes.push((key.clone(), Some(json!(n)))),
                            Err(_) => {
                                return Answer::Reply(
                                    400,
                                    "Parameter verification failed.".into(),
                                    json!({key.as_str(): format!("type check ('integer') failed - got '{value}'")}),
                                );
                            }
                        },
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
                            changes.push((k.into(), Some(json!(value))));
                        }
                    }
                }
                let vm = self.vms.get_mut(&vmid).unwrap();
                if !vm.running {
                    // vmconfig_apply_pending: a stopped VM takes everything.
                    for (k, v) in changes {
                        match v {
                            Some(v) => config.insert(k, v),
                            None => config.remove(&k),
                        };
                    }
                    vm.config = config;
                    vm.pending.clear();
                    vm.pending_delete.clear();
                } else {
                    // Every change goes to [PENDING] first; then
                    // vmconfig_hotplug_pending applies what it can.
                    for (k, v) in changes {
                        let new = v.as_ref().map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                        let unchanged = vm.config.get(&k) == v.as_ref();
                        vm.pending.remove(&k);
                        vm.pending_delete.retain(|d| *d != k);
                        if unchanged {
                            continue;
                        }
                        if hot_pluggable(&vm.config, &k, new.as_deref()) {
                            match v {
                                Some(v) => vm.config.insert(k, v),
                                None => vm.config.remove(&k),
                            };
                        } else {
                            match v {
                                Some(v) => {
                                    vm.pending.insert(k, v);
                                }
                                None => vm.pending_delete.push(k),
                            }
                        }
                    }
                }
                self.task(node, "qmconfig", vmid, timing.task, Effect::None)
            }
            ("PUT", ["resize"]) => {
                if let Some(lock) = locked {
                    return fail(500, format!("VM is locked ({lock})"));
                }
                // resize_vm: PVE::Tools::assert_if_modified.
                if params.get("digest").is_some_and(|d| *d != digest(&vm)) {
                    return fail(
                        500,
                        "detected modified configuration - file changed by other user? Try again.",
                    );
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
                // The worker takes the config lock (since qemu-server 8.0.2
                // resize runs as a task).
                if self.take_task_lock_timeout("qmresize") {
                    return self.failing_task(node, "qmresize", vmid, lock_timeout_text(vmid));
                }
                let drive = set_size(&drive, new >> 30);
                self.vms
                    .get_mut(&vmid)
                    .unwrap()
                    .config
                    .insert(disk, json!(drive));
                self.task(node, "qmresize", vmid, timing.task, Effect::None)
            }
            // PVE/API2/Qemu.pm, clone_vm: `$load_and_check` runs before the
            // fork and again in the worker; the worker writes "# qmclone
            // temporary file\nlock: clone\n" first and the config (name,
            // description, drives) after each copied disk; the config moves
            // to the target node and the VM joins the pool at the end.
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
                    self.fire("lock_timeout");
                    return fail(500, lock_timeout_text(vmid));
                }
                // PVE::Cluster::check_vmid_unused.
                if let Some(existing) = self.vms.get(&newid) {
                    return fail(
                        500,
                        format!("VM {newid} already exists on node '{}'", existing.node),
                    );
                }
                if let Some(pool) = params.get("pool")
                    && !self.pools.contains_key(pool)
                {
                    return fail(500, format!("pool '{pool}' does not exist"));
                }
                let target = params.get("target").filter(|t| *t != node).cloned();
                if let Some(t) = &target
                    && !NODES.contains(&t.as_str())
                {
                    return fail(500, format!("no such cluster node '{t}'"));
                }
                let storage = params.get("storage").cloned();
                let shared = |sid: &str| STORAGES.iter().any(|(s, shared)| *s == sid && *shared);
                if let Some(sid) = &storage {
                    if !STORAGES.iter().any(|(s, _)| s == sid) {
                        return fail(500, format!("storage '{sid}' does not exist"));
                    }
                    if target.is_some() && !shared(sid) {
                        return fail(500, format!("can't clone to non-shared storage '{sid}'"));
                    }
                }
                let is_template = vm.config.contains_key("template");
                let full = params.get("full").map(|f| f == "1").unwrap_or(!is_template);
                if storage.is_some() && !full {
                    return fail(500, "parameter 'storage' not allowed for linked clones");
                }
                let drives: Vec<(String, String)> = vm
                    .config
                    .iter()
                    .filter_map(|(k, v)| {
                        let v = v.as_str()?;
                        (v.contains(&format!("-{vmid}-")) && !v.contains("media=cdrom"))
                            .then(|| (k.clone(), v.to_string()))
                    })
                    .collect();
                // $check_storage_access_clone: shared only when every disk is.
                let sharedvm = drives
                    .iter()
                    .all(|(_, d)| shared(d.split(':').next().unwrap_or("")));
                if let Some(t) = &target
                    && !sharedvm
                {
                    return fail(
                        500,
                        format!("can't clone VM to node '{t}' (VM uses local storage)"),
                    );
                }
                let mut config = vm.config.clone();
                config.remove("template");
                for (key, value) in config.iter_mut() {
                    let Some(drive) = value.as_str() else {
                        continue;
                    };
                    if !drive.contains(&format!("-{vmid}-")) {
                        continue;
                    }
                    let (sid, volume) = drive.split_once(':').unwrap_or(("local-lvm", drive));
                    let (volume, options) = volume.split_once(',').unwrap_or((volume, ""));
                    let own = volume
                        .replace(&format!("base-{vmid}-"), &format!("vm-{newid}-"))
                        .replace(&format!("vm-{vmid}-"), &format!("vm-{newid}-"));
                    let cdrom = options.contains("media=cdrom");
                    // A linked clone's volume names its base
                    // (`base-9000-disk-0/vm-101-disk-0`); a full one is a copy.
                    let volume = if full || cdrom || key.starts_with("efidisk") {
                        own
                    } else {
                        format!("{volume}/{own}")
                    };
                    let sid = storage.as_deref().filter(|_| !cdrom).unwrap_or(sid);
                    *value = json!(if options.is_empty() {
                        format!("{sid}:{volume}")
                    } else {
                        format!("{sid}:{volume},{options}")
                    });
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
                if self.faults.clone_task_vmid_clash > 0 {
                    // A concurrent clone wrote the VMID's config first; the
                    // worker's second $load_and_check dies.
                    self.faults.clone_task_vmid_clash -= 1;
                    self.fire("clone_task_vmid_clash");
                    let mut other = Map::new();
                    other.insert("name".into(), json!("someone-elses-clone"));
                    other.insert("memory".into(), json!("1024"));
                    self.vms.insert(newid, Vm::new(node, other));
                    return self.failing_task(
                        node,
                        "qmclone",
                        vmid,
                        format!("unable to create VM {newid}: config file already exists"),
                    );
                }
                let mut temporary = Map::new();
                temporary.insert("lock".into(), json!("clone"));
                let mut new_vm = Vm::new(node, temporary);
                // The first disk is copied half-way through the clone.
                new_vm.staged = Some((Instant::now() + timing.clone / 2, config));
                self.vms.insert(newid, new_vm);
                let failing = self.faults.clone_task_lock_timeouts > 0;
                if failing {
                    self.faults.clone_task_lock_timeouts -= 1;
                    self.fire("clone_task_lock_timeout");
                    // The worker unlinks the config and dies "clone failed: ...".
                    return self.new_task(
                        node,
                        "qmclone",
                        vmid,
                        timing.clone,
                        Effect::CloneFailed(newid),
                        format!("clone failed: {}", lock_timeout_text(vmid)),
                    );
                }
                let effect = Effect::CloneDone(
                    newid,
                    target.unwrap_or_else(|| node.to_string()),
                    params.get("pool").cloned(),
                );
                let answer = self.task(node, "qmclone", vmid, timing.clone, effect);
                if self.faults.drop_next_clone {
                    self.faults.drop_next_clone = false;
                    self.fire("lost_answer_drop");
                    return Answer::Drop;
                }
                answer
            }
            ("POST", ["status", action]) => {
                if let Some(lock) = &locked {
                    return fail(500, format!("VM is locked ({lock})"));
                }
                match *action {
                    // PVE/QemuServer.pm, vm_start: under the config lock
                    // (so after a start still running), `die "VM $vmid
                    // already running\n"`.
                    "start" if vm.running || self.active_task("qmstart", vmid) => self
                        .failing_task(node, "qmstart", vmid, format!("VM {vmid} already running")),
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
                // destroy_vm's $early_checks do not look at the lock; its
                // worker does (PVE::QemuServer::destroy_vm). A destroy
                // holds `lock: destroyed` while it runs.
                if let Some(lock) = locked.as_ref().filter(|l| *l != "destroyed") {
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
                // A DELETE sent again while the first destroy runs: its
                // worker waits for the lock, then repeats $early_checks on
                // a config that is gone.
                if self.active_task("qmdestroy", vmid) {
                    return self.failing_task(
                        node,
                        "qmdestroy",
                        vmid,
                        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
                    );
                }
                let answer = self.task(node, "qmdestroy", vmid, timing.task, Effect::Destroy(vmid));
                let destroying = match &answer {
                    Answer::Reply(_, _, body) => body["data"]
                        .as_str()
                        .and_then(|u| self.tasks.get(u))
                        .is_some_and(|t| matches!(t.effect, Effect::Destroy(_))),
                    Answer::Drop => false,
                };
                if destroying {
                    self.vms
                        .get_mut(&vmid)
                        .unwrap()
                        .config
                        .insert("lock".into(), json!("destroyed"));
                }
                answer
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

/// The text of a config lock timeout (PVE::Tools::lock_file_full, as
/// PVE::AbstractConfig::lock_config raises it).
fn lock_timeout_text(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
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
