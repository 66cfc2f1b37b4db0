//! Real authoritative servers for the tests and the benchmark: Knot DNS
//! (`knotd`) and BIND 9 (`named`), each started as a child process on
//! 127.0.0.1 with a port it picks, a temporary directory holding its
//! configuration, the zone `example.test` and TSIG keys, and killed on drop.
//!
//! Keys: `deploy` may update the zone; `readonly` is known to the server but
//! not allowed to update. The zones are `example.test` and `second.test`; the first starts with
//! records someone else manages:
//! `legacy` A 198.51.100.1, `alias` CNAME elsewhere.example.net., and a
//! wildcard `*.wild` A 198.51.100.9.

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The zone every server serves.
pub const ZONE: &str = "example.test";
/// A second zone on each server, which `deploy` may update too.
pub const SECOND_ZONE: &str = "second.test";

const ZONE_FILE: &str = "$ORIGIN example.test.
$TTL 300
@       SOA   ns1 hostmaster 1 3600 600 86400 300
@       NS    ns1
ns1     A     127.0.0.1
legacy  A     198.51.100.1
alias   CNAME elsewhere.example.net.
*.wild  A     198.51.100.9
";

const SECOND_ZONE_FILE: &str = "$ORIGIN second.test.
$TTL 300
@       SOA   ns1.example.test. hostmaster.example.test. 1 3600 600 86400 300
@       NS    ns1.example.test.
";

/// Which server software.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Knot DNS.
    Knot,
    /// BIND 9.
    Bind,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Knot => "knot",
            Kind::Bind => "bind",
        }
    }
}

/// A running server; killed when dropped.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The secret of `deploy` (base64), also in `deploy_secret_file`.
    pub deploy_secret: String,
    pub deploy_secret_file: PathBuf,
    /// The secret of `readonly`.
    pub readonly_secret_file: PathBuf,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both servers, started side by side.
pub fn servers() -> Vec<Server> {
    let knot = std::thread::spawn(|| Server::start(Kind::Knot));
    let bind = Server::start(Kind::Bind);
    vec![knot.join().expect("knot thread"), bind]
}

/// A base64 HMAC-SHA256 secret, made by the server's own tool.
fn make_secret(kind: Kind, name: &str) -> String {
    let output = match kind {
        Kind::Knot => Command::new("keymgr")
            .args(["-t", name, "hmac-sha256"])
            .output(),
        Kind::Bind => Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", name])
            .output(),
    }
    .unwrap_or_else(|e| panic!("cannot run the key generator of {}: {e}", kind.name()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    // keymgr: `    secret: BASE64`; tsig-keygen: `	secret "BASE64";`.
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("secret"))
        .expect("a secret line");
    line.trim()
        .trim_start_matches("secret")
        .trim_start_matches(':')
        .trim()
        .trim_matches(|c| c == '"' || c == ';')
        .to_string()
}

/// A port free for both UDP and TCP on 127.0.0.1 (the OS picks it).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

impl Server {
    /// Starts a server; panics with its log when it does not come up.
    pub fn start(kind: Kind) -> Server {
        Server::start_with_zones(kind, &[(ZONE, ZONE_FILE), (SECOND_ZONE, SECOND_ZONE_FILE)])
    }

    /// Starts a server for the given zones (name, zone file text), each
    /// updatable with `deploy`; panics with its log when it does not come up.
    pub fn start_with_zones(kind: Kind, zones: &[(&str, &str)]) -> Server {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            match Server::try_start(kind, zones) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("{} did not start:\n{last_log}", kind.name());
    }

    fn try_start(kind: Kind, zones: &[(&str, &str)]) -> Result<Server, String> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let port = free_port();
        let deploy = make_secret(kind, "deploy");
        let readonly = make_secret(kind, "readonly");
        let deploy_secret_file = root.join("deploy.secret");
        let readonly_secret_file = root.join("readonly.secret");
        write_private(&deploy_secret_file, &format!("{deploy}\n"));
        write_private(&readonly_secret_file, &format!("{readonly}\n"));
        for (zone, text) in zones {
            fs::write(root.join(format!("{zone}.zone")), text).unwrap();
        }
        let knot_zones: String = zones
            .iter()
            .map(|(zone, _)| format!("  - domain: {zone}\n    acl: update\n"))
            .collect();
        let bind_zones: String = zones
            .iter()
            .map(|(zone, _)| {
                format!(
                    "zone \"{zone}\" {{ type primary; file \"{r}/{zone}.zone\"; update-policy {{ grant deploy zonesub ANY; }}; }};\n",
                    r = root.display()
                )
            })
            .collect();
        let log = root.join("server.log");
        let mut command = match kind {
            Kind::Knot => {
                fs::create_dir_all(root.join("run")).unwrap();
                fs::create_dir_all(root.join("db")).unwrap();
                let config = format!(
                    "server:\n    rundir: \"{r}/run\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
                     control:\n    listen: \"{r}/run/knot.sock\"\n\
                     log:\n  - target: stderr\n    any: info\n\
                     database:\n    storage: \"{r}/db\"\n\
                     key:\n  - id: deploy\n    algorithm: hmac-sha256\n    secret: {deploy}\n  - id: readonly\n    algorithm: hmac-sha256\n    secret: {readonly}\n\
                     acl:\n  - id: update\n    key: deploy\n    action: update\n\
                     template:\n  - id: default\n    storage: \"{r}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n\
                     zone:\n{knot_zones}",
                    r = root.display()
                );
                fs::write(root.join("knot.conf"), config).unwrap();
                let mut command = Command::new("knotd");
                command.arg("-c").arg(root.join("knot.conf"));
                command
            }
            Kind::Bind => {
                let config = format!(
                    "options {{\n  directory \"{r}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  pid-file \"{r}/named.pid\";\n  session-keyfile \"{r}/session.key\";\n  recursion no;\n  dnssec-validation no;\n  notify no;\n}};\n\
                     controls {{ }};\n\
                     key \"deploy\" {{ algorithm hmac-sha256; secret \"{deploy}\"; }};\n\
                     key \"readonly\" {{ algorithm hmac-sha256; secret \"{readonly}\"; }};\n\
                     {bind_zones}",
                    r = root.display()
                );
                fs::write(root.join("named.conf"), config).unwrap();
                let mut command = Command::new("named");
                command.arg("-g").arg("-c").arg(root.join("named.conf"));
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (is it installed?): {e}", kind.name()));
        let mut server = Server {
            kind,
            port,
            dir,
            deploy_secret: deploy,
            deploy_secret_file,
            readonly_secret_file,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                return Err(fs::read_to_string(&log).unwrap_or_default());
            }
            if !server
                .kdig(&["+short", &format!("{}.", zones[0].0), "SOA"])
                .trim()
                .is_empty()
            {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(fs::read_to_string(&log).unwrap_or_default())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `kdig +short` for a name relative to the zone (or `ZONE` itself):
    /// what a user sees, one line per record, sorted.
    pub fn dig(&self, name: &str, ty: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .kdig(&["+short", &fqdn(name), ty])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    }

    /// The TTLs of the answer records for `name` and `ty`.
    pub fn ttls(&self, name: &str, ty: &str) -> Vec<u32> {
        self.kdig(&["+noall", "+answer", &fqdn(name), ty])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }

    /// The zone's SOA serial.
    pub fn serial(&self) -> u32 {
        let soa = self.dig("@", "SOA");
        soa[0].split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    /// Runs kdig against this server (TCP or UDP as given in `args`).
    pub fn kdig(&self, args: &[&str]) -> String {
        let output = Command::new("kdig")
            .arg("@127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+time=2", "+retry=1"])
            .args(args)
            .output()
            .expect("kdig is installed (knot-dnsutils)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Sends `commands` (update lines) with `knsupdate`, signed with
    /// `deploy`: someone else changing the zone.
    pub fn nsupdate(&self, commands: &str) {
        knsupdate(self.port, &self.deploy_secret, commands);
    }

    /// Inputs of a `record` on this server, signed with `deploy`.
    pub fn inputs(&self, name: &str, ty: &str, values: &[&str]) -> Value {
        json!({
            "server": {"address": "127.0.0.1", "port": self.port},
            "zone": ZONE,
            "name": name,
            "type": ty,
            "values": values,
            "ttl": 300,
            "tsig": {"keyName": "deploy", "secret": {"file": self.deploy_secret_file}},
        })
    }
}

/// Sends `commands` (update lines) to the server at `port` with
/// `knsupdate`, signed with the `deploy` key whose secret is `secret`.
pub fn knsupdate(port: u16, secret: &str, commands: &str) {
    let script = format!("server 127.0.0.1 {port}\nzone {ZONE}\n{commands}\nsend\n");
    let mut child = Command::new("knsupdate")
        .arg("-y")
        .arg(format!("hmac-sha256:deploy:{secret}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("knsupdate is installed (knot-dnsutils)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "knsupdate failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `name` in the zone, fully qualified (`@` is the zone itself).
pub fn fqdn(name: &str) -> String {
    match name {
        "@" | "" => format!("{ZONE}."),
        n if n.ends_with('.') => n.to_string(),
        n => format!("{n}.{ZONE}."),
    }
}

/// `base` with the members of `extra` set.
pub fn with(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    out.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    out
}
