//! A real Garage server for the tests: single node, on loopback ports of its
//! own, in a temporary directory, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The admin token of every test server (in a file, as users keep it).
pub const ADMIN_TOKEN: &str = "test-admin-token-4f1c2a9e7d";

/// What the names of fedi-garage-bucket's ownership keys start with (the
/// provider's `owner::OWNERSHIP_KEY_PREFIX`).
pub const OWNERSHIP_KEY_PREFIX: &str = "fedi-garage-bucket ownership: owner=";

pub struct GarageServer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub admin_port: u16,
    pub s3_port: u16,
    pub web_port: u16,
    pub token_file: PathBuf,
}

/// The garage binary: on PATH, or where `cargo install` puts it.
pub fn garage_exe() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("CARGO_HOME").map(|h| Path::new(&h).join("bin/garage")))
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/garage")));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the garage server is not installed: run `bash tests/install-deps.sh` (cargo install garage)"
    );
}

impl GarageServer {
    pub fn start() -> GarageServer {
        let dir = tempfile::tempdir().unwrap();
        let (rpc_port, s3_port, web_port, admin_port) = (
            fedi_protocol::testkit::free_tcp_port(),
            fedi_protocol::testkit::free_tcp_port(),
            fedi_protocol::testkit::free_tcp_port(),
            fedi_protocol::testkit::free_tcp_port(),
        );
        let config = format!(
            r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[s3_web]
bind_addr = "127.0.0.1:{web_port}"
root_domain = ".web.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{ADMIN_TOKEN}"
"#,
            dir = dir.path().display(),
            rpc_secret = "0123456789abcdef".repeat(4),
        );
        let config_path = dir.path().join("garage.toml");
        std::fs::write(&config_path, config).unwrap();
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
        let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(garage_exe())
            .arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node"])
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start garage");
        let server = GarageServer {
            child,
            dir,
            admin_port,
            s3_port,
            web_port,
            token_file,
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(health) = self.try_admin(reqwest::Method::GET, "GetClusterHealth", &[], None)
                && health["status"] == "healthy"
            {
                return;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default();
                panic!("garage did not become healthy within 60 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `garage` input of our resources for this server.
    pub fn connection(&self) -> Value {
        json!({
            "adminEndpoint": format!("http://127.0.0.1:{}", self.admin_port),
            "adminToken": {"file": self.token_file},
            "s3Endpoint": format!("http://127.0.0.1:{}", self.s3_port),
            "region": "garage",
            "webEndpoint": format!("http://web.garage.localhost:{}", self.web_port),
        })
    }

    fn try_admin(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, String> {
        let client = reqwest::blocking::Client::new();
        let mut url = reqwest::Url::parse(&format!(
            "http://127.0.0.1:{}/v2/{endpoint}",
            self.admin_port
        ))
        .unwrap();
        url.query_pairs_mut().extend_pairs(query);
        let mut request = client.request(method, url).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        })
    }

    /// An admin API call made by the test itself, to check what Garage has.
    pub fn admin(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Value {
        self.try_admin(method, endpoint, query, body)
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"))
    }

    pub fn bucket_info(&self, alias: &str) -> Option<Value> {
        self.try_admin(
            reqwest::Method::GET,
            "GetBucketInfo",
            &[("globalAlias", alias)],
            None,
        )
        .ok()
    }

    pub fn key_info(&self, id: &str) -> Option<Value> {
        self.try_admin(
            reqwest::Method::GET,
            "GetKeyInfo",
            &[("id", id), ("showSecretKey", "true")],
            None,
        )
        .ok()
    }

    /// A key made by the test (not by the provider) with rights on a bucket.
    pub fn test_key(&self, bucket_alias: &str) -> (String, String) {
        let key = self.admin(
            reqwest::Method::POST,
            "CreateKey",
            &[],
            Some(json!({"name": "test-key"})),
        );
        let id = key["accessKeyId"].as_str().unwrap().to_string();
        let secret = key["secretAccessKey"].as_str().unwrap().to_string();
        let bucket = self.bucket_info(bucket_alias).expect("bucket exists");
        self.admin(
            reqwest::Method::POST,
            "AllowBucketKey",
            &[],
            Some(json!({"bucketId": bucket["id"], "accessKeyId": id, "permissions": {"read": true, "write": true, "owner": true}})),
        );
        (id, secret)
    }

    /// The global aliases of every bucket, sorted.
    pub fn bucket_aliases(&self) -> Vec<String> {
        let buckets = self.admin(reqwest::Method::GET, "ListBuckets", &[], None);
        let mut aliases: Vec<String> = buckets
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| b["globalAliases"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        aliases.sort();
        aliases
    }

    /// The names of every access key, sorted, fedi-garage-bucket's
    /// ownership keys aside (one per bucket it manages: no permissions, no
    /// secret anyone holds, the bucket's owner record; ADR 009): the keys a
    /// deployment declared.
    pub fn key_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .all_key_names()
            .into_iter()
            .filter(|n| !n.starts_with(OWNERSHIP_KEY_PREFIX))
            .collect();
        names.sort();
        names
    }

    /// The names of fedi-garage-bucket's ownership keys, sorted.
    pub fn ownership_key_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .all_key_names()
            .into_iter()
            .filter(|n| n.starts_with(OWNERSHIP_KEY_PREFIX))
            .collect();
        names.sort();
        names
    }

    fn all_key_names(&self) -> Vec<String> {
        let keys = self.admin(reqwest::Method::GET, "ListKeys", &[], None);
        keys.as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["name"].as_str().map(str::to_string))
            .collect()
    }

    /// A GET on the `[s3_web]` endpoint for website bucket `alias`.
    pub fn web_get(&self, alias: &str, path: &str) -> (u16, String) {
        let response = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.web_port))
            .header("Host", format!("{alias}.web.garage.localhost"))
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }
}

impl Drop for GarageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
