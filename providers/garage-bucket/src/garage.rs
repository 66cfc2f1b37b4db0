//! Reaching Garage: the connection inputs every resource type shares, the
//! admin API v2 client, and S3 clients.

use std::time::Duration;

use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{Error, ExposeSecret, Result, SecretRef, SecretString};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How to reach a Garage cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Garage {
    /// URL of the admin API (`[admin] api_bind_addr` in garage.toml), e.g.
    /// `https://garage-admin.example.org` or `http://[::1]:3903`. HTTPS
    /// certificates are verified against the system's trusted roots;
    /// `http://` is refused unless the host is a loopback address (the
    /// admin token would travel in clear).
    pub admin_endpoint: String,
    /// The admin API token (`admin_token` in garage.toml, or a token made
    /// with `garage admin-token create`), read from a file or an
    /// environment variable.
    pub admin_token: SecretRef,
    /// URL of the S3 API (`[s3_api] api_bind_addr`), e.g.
    /// `https://s3.example.org`. Used for outputs, `onDelete = "purge"` and
    /// `verify`.
    pub s3_endpoint: String,
    /// S3 region (`[s3_api] s3_region`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Base URL of the `[s3_web]` endpoint, with its `root_domain` as the
    /// host, e.g. `https://web.example.org`: a website bucket `b` is then
    /// served at `https://b.web.example.org/`. Without it, no website URL
    /// is output.
    #[serde(default)]
    pub web_endpoint: Option<String>,
    /// The hosting provider's secret from which access key ids are derived
    /// (HMAC-SHA256 of the resource's `owner` and `name`), so that nobody
    /// without it can predict or plant the id of a key this provider will
    /// make or adopt: a file or environment variable holding at least 16
    /// random bytes, the same for every deployment that manages these
    /// keys. Unset: the admin token is used (then rotating the token
    /// changes the ids of keys made after it; existing keys keep theirs).
    #[serde(default)]
    pub key_id_secret: Option<SecretRef>,
    /// How long one S3 request may take to connect and between reads, in
    /// seconds (purge and `verify` use S3); its retries together take at
    /// most three times as long.
    #[serde(default = "default_s3_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub s3_timeout_seconds: u64,
}

fn default_s3_timeout() -> u64 {
    30
}

fn default_region() -> String {
    "garage".to_string()
}

impl Garage {
    /// Checks the endpoints are URLs, before anything is sent.
    pub fn validate(&self) -> Result<()> {
        for (field, url) in [
            ("garage.adminEndpoint", Some(&self.admin_endpoint)),
            ("garage.s3Endpoint", Some(&self.s3_endpoint)),
            ("garage.webEndpoint", self.web_endpoint.as_ref()),
        ] {
            let Some(url) = url else { continue };
            match reqwest::Url::parse(url) {
                Ok(parsed)
                    if field == "garage.adminEndpoint"
                        && parsed.scheme() == "http"
                        && !is_loopback(&parsed) =>
                {
                    return Err(Error::invalid_input(
                        field,
                        format!(
                            "{url:?} is plain http:// to a host that is not this machine: the admin token would travel in clear"
                        ),
                    )
                    .with_hint(
                        "give an https:// URL (Garage's admin API behind a TLS proxy), or reach it through a loopback address, e.g. an SSH tunnel to http://127.0.0.1:3903",
                    ));
                }
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
                _ => {
                    return Err(Error::invalid_input(
                        field,
                        format!("{url:?} is not an http(s) URL"),
                    )
                    .with_hint(
                        "give a URL such as https://garage.example.org or http://127.0.0.1:3903",
                    ));
                }
            }
        }
        if !(1..=3600).contains(&self.s3_timeout_seconds) {
            return Err(Error::invalid_input(
                "garage.s3TimeoutSeconds",
                format!("{} is not between 1 and 3600", self.s3_timeout_seconds),
            )
            .with_hint("give the seconds one S3 request may take, e.g. 30"));
        }
        if self.region.is_empty() {
            return Err(Error::invalid_input("garage.region", "is empty")
                .with_hint("give the `s3_region` of garage.toml, e.g. \"garage\""));
        }
        Ok(())
    }

    /// The public URL of website bucket `alias`, when a web endpoint is set.
    pub fn website_url(&self, alias: &str) -> Option<String> {
        let base = reqwest::Url::parse(self.web_endpoint.as_deref()?).ok()?;
        let host = base.host_str()?.trim_start_matches('.');
        let port = base.port().map(|p| format!(":{p}")).unwrap_or_default();
        Some(format!("{}://{alias}.{host}{port}/", base.scheme()))
    }
}

/// Whether `url`'s host is this machine (127.0.0.0/8, ::1, localhost).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

/// Bucket information, as `GetBucketInfo` returns it (the fields we use).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketInfo {
    pub id: String,
    pub global_aliases: Vec<String>,
    pub website_access: bool,
    #[serde(default)]
    pub website_config: Option<WebsiteConfig>,
    #[serde(default)]
    pub cors_rules: Option<Vec<ApiCorsRule>>,
    pub objects: i64,
    pub bytes: i64,
    #[serde(default)]
    pub unfinished_multipart_uploads: i64,
    pub quotas: Quotas,
    /// The keys with permissions or local aliases on the bucket.
    #[serde(default)]
    pub keys: Vec<BucketKey>,
}

/// A key with permissions or local aliases on a bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketKey {
    pub access_key_id: String,
    pub name: String,
    #[serde(default)]
    pub bucket_local_aliases: Vec<String>,
}

/// A bucket's website configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebsiteConfig {
    pub index_document: String,
    pub error_document: Option<String>,
}

/// Quotas; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    pub max_size: Option<u64>,
    pub max_objects: Option<u64>,
}

/// A CORS rule in Garage's JSON form (S3's singular XML names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCorsRule {
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        rename = "MaxAgeSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age_seconds: Option<i64>,
    #[serde(rename = "AllowedOrigin")]
    pub allowed_origins: Vec<String>,
    #[serde(rename = "AllowedMethod")]
    pub allowed_methods: Vec<String>,
    #[serde(rename = "AllowedHeader", default)]
    pub allowed_headers: Vec<String>,
    #[serde(rename = "ExposeHeader", default)]
    pub expose_headers: Vec<String>,
}

/// Access key information, as `GetKeyInfo` returns it.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub access_key_id: String,
    pub name: String,
    #[serde(default, deserialize_with = "secret_opt")]
    pub secret_access_key: Option<SecretString>,
    pub permissions: KeyPermissions,
    pub buckets: Vec<KeyBucket>,
}

impl std::fmt::Debug for KeyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyInfo")
            .field("access_key_id", &self.access_key_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn secret_opt<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(SecretString::from))
}

/// Key-wide permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPermissions {
    #[serde(default)]
    pub create_bucket: bool,
}

/// A bucket a key has permissions on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyBucket {
    pub id: String,
    pub global_aliases: Vec<String>,
    #[serde(default)]
    pub local_aliases: Vec<String>,
    pub permissions: Permissions,
}

/// A key's permissions on a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub read: bool,
    #[serde(default)]
    pub write: bool,
    #[serde(default)]
    pub owner: bool,
}

impl Permissions {
    /// The flags set in `self` and not in `other`.
    pub fn minus(self, other: Permissions) -> Permissions {
        Permissions {
            read: self.read && !other.read,
            write: self.write && !other.write,
            owner: self.owner && !other.owner,
        }
    }

    /// Whether any flag is set.
    pub fn any(self) -> bool {
        self.read || self.write || self.owner
    }
}

/// An error body of the admin API.
#[derive(Debug, Deserialize)]
struct ApiError {
    code: String,
    message: String,
}

/// A failed admin API call: the Garage error code (when Garage answered)
/// and a rendered error for the user.
#[derive(Debug)]
pub struct CallError {
    /// `NoSuchBucket`, `BucketAlreadyExists`, ... when Garage answered.
    pub code: Option<String>,
    /// The error to show.
    pub error: Error,
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        e.error
    }
}

/// The Garage admin API v2.
pub struct Admin {
    http: reqwest::Client,
    base: reqwest::Url,
    token: SecretString,
    id_secret: SecretString,
}

/// How often a call is tried when Garage is unreachable or unavailable.
const ATTEMPTS: u32 = 4;

impl Admin {
    /// A client for `garage`, reading its admin token.
    pub fn connect(garage: &Garage) -> Result<Admin> {
        garage.validate()?;
        let token = garage.admin_token.read("garage.adminToken")?;
        let id_secret = match &garage.key_id_secret {
            Some(secret) => {
                let value = secret.read("garage.keyIdSecret")?;
                if value.expose_secret().len() < 16 {
                    return Err(Error::invalid_input(
                        "garage.keyIdSecret",
                        format!("{} holds fewer than 16 characters", secret.describe()),
                    )
                    .with_hint("put at least 16 random bytes in it, e.g. `head -c 32 /dev/urandom | base64`"));
                }
                value
            }
            None => token.clone(),
        };
        let base = reqwest::Url::parse(&garage.admin_endpoint).map_err(|e| {
            Error::invalid_input("garage.adminEndpoint", "not a URL").with_source(e)
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal("cannot set up the HTTP client").with_source(e))?;
        Ok(Admin {
            http,
            base,
            token,
            id_secret,
        })
    }

    /// Calls `endpoint` (e.g. `GetBucketInfo`) and decodes the answer.
    /// Retries, with backoff, while Garage cannot be reached or says it is
    /// unavailable (503).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T, CallError> {
        let mut url = self
            .base
            .join(&format!("v2/{endpoint}"))
            .map_err(|e| CallError {
                code: None,
                error: Error::invalid_input("garage.adminEndpoint", "cannot form an API URL")
                    .with_source(e),
            })?;
        url.query_pairs_mut().extend_pairs(query);
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(self.token.expose_secret());
            if let Some(body) = body {
                request = request.json(body);
            }
            tracing::debug!(endpoint, attempt, "admin API call");
            let failure = match request.send().await {
                Ok(response) => match self.decode(endpoint, response).await {
                    Err(e) if e.code.as_deref() == Some("ServiceUnavailable") => e,
                    other => return other,
                },
                Err(e) => CallError {
                    code: None,
                    error: Error::unavailable(format!(
                        "cannot reach the Garage admin API at {}",
                        self.base
                    ))
                    .with_source(strip_url(e))
                    .with_hint(
                        "check `garage.adminEndpoint` and that Garage is running and reachable",
                    ),
                },
            };
            if attempt == ATTEMPTS {
                return Err(failure);
            }
            tracing::warn!(
                endpoint,
                attempt,
                "Garage unavailable, retrying in {delay:?}"
            );
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        unreachable!("the last attempt returns")
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        response: reqwest::Response,
    ) -> Result<T, CallError> {
        let status = response.status();
        let text = response.text().await.map_err(|e| CallError {
            code: None,
            error: Error::unavailable(format!("reading the answer to {endpoint} failed"))
                .with_source(strip_url(e)),
        })?;
        if status.is_success() {
            // Some endpoints answer with an empty body; decode that as null.
            let value: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).map_err(|e| CallError {
                    code: None,
                    error: Error::internal(format!("Garage's answer to {endpoint} is not JSON"))
                        .with_source(e),
                })?
            };
            return serde_json::from_value(value).map_err(|e| CallError {
                code: None,
                error: Error::internal(format!(
                    "Garage's answer to {endpoint} has an unexpected shape"
                ))
                .with_source(e)
                .with_hint("this provider supports Garage 2.x (admin API v2)"),
            });
        }
        let api: Option<ApiError> = serde_json::from_str(&text).ok();
        let (code, message) = match api {
            Some(api) => (Some(api.code), api.message),
            None => (None, text.chars().take(200).collect()),
        };
        let what = format!(
            "Garage refused {endpoint} ({status}{}): {message}",
            code.as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default()
        );
        let error = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::permission_denied(what).with_hint(
                "check that `garage.adminToken` holds the `admin_token` of garage.toml, or a token with this endpoint in its scope",
            ),
            StatusCode::NOT_FOUND => Error::not_found(what),
            StatusCode::CONFLICT => Error::conflict(what),
            StatusCode::BAD_REQUEST => Error::invalid_input("inputs", what),
            s if s.is_server_error() => Error::unavailable(what),
            _ => Error::internal(what),
        };
        Err(CallError { code, error })
    }

    /// An access key id (`GK` + 24 hex digits) for `purpose` and `parts`,
    /// derived with the hosting provider's secret (`garage.keyIdSecret`):
    /// the same on every retry, and unpredictable without the secret.
    pub fn derive_key_id(&self, purpose: &str, parts: &[&str]) -> String {
        let mut message = format!("fedi-garage-bucket\0{purpose}");
        for part in parts {
            message.push('\0');
            message.push_str(part);
        }
        key_id_from(&hmac_sha256(
            self.id_secret.expose_secret().as_bytes(),
            message.as_bytes(),
        ))
    }

    /// `GetBucketInfo` by global alias or id; `None` when there is none.
    pub async fn bucket(&self, by: BucketRef<'_>) -> Result<Option<BucketInfo>> {
        let query = match by {
            BucketRef::Alias(alias) => [("globalAlias", alias)],
            BucketRef::Id(id) => [("id", id)],
        };
        match self.call(Method::GET, "GetBucketInfo", &query, None).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if matches!(e.code.as_deref(), Some("NoSuchBucket")) => Ok(None),
            Err(e) => Err(e.error),
        }
    }

    /// `GetKeyInfo`; `None` when there is no such key.
    pub async fn key(&self, id: &str, show_secret: bool) -> Result<Option<KeyInfo>> {
        let show = if show_secret { "true" } else { "false" };
        match self
            .call(
                Method::GET,
                "GetKeyInfo",
                &[("id", id), ("showSecretKey", show)],
                None,
            )
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(e) if matches!(e.code.as_deref(), Some("NoSuchAccessKey")) => Ok(None),
            Err(e) => Err(e.error),
        }
    }

    /// `AllowBucketKey` or `DenyBucketKey` with the flags set in `flags`.
    pub async fn change_permissions(
        &self,
        allow: bool,
        bucket_id: &str,
        key_id: &str,
        flags: Permissions,
    ) -> Result<(), CallError> {
        let endpoint = if allow {
            "AllowBucketKey"
        } else {
            "DenyBucketKey"
        };
        let body = json!({"bucketId": bucket_id, "accessKeyId": key_id, "permissions": flags});
        self.call::<Value>(Method::POST, endpoint, &[], Some(&body))
            .await?;
        Ok(())
    }
}

/// How to look a bucket up.
#[derive(Debug, Clone, Copy)]
pub enum BucketRef<'a> {
    /// By global alias (its S3 name).
    Alias(&'a str),
    /// By id.
    Id(&'a str),
}

/// reqwest errors print the URL; ours carry no secrets, but keep messages
/// short and uniform.
fn strip_url(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

/// An S3 client for Garage with static credentials: no credential chain or
/// instance-metadata probing (which would cost seconds per process), and
/// bounded: `garage.s3TimeoutSeconds` to connect, between reads and per
/// attempt, three times that for a request with its retries.
pub fn s3_client(
    garage: &Garage,
    access_key_id: &str,
    secret: &SecretString,
) -> aws_sdk_s3::Client {
    let credentials = aws_sdk_s3::config::Credentials::new(
        access_key_id,
        secret.expose_secret(),
        None,
        None,
        "fedi-garage-bucket",
    );
    let limit = Duration::from_secs(garage.s3_timeout_seconds);
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(limit.min(Duration::from_secs(10)))
        .read_timeout(limit)
        .operation_attempt_timeout(limit)
        .operation_timeout(limit * 3)
        .build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(garage.region.clone()))
        .endpoint_url(&garage.s3_endpoint)
        .credentials_provider(credentials)
        .force_path_style(true)
        .timeout_config(timeouts)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn key_id_from(digest: &[u8]) -> String {
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("GK{hex}")
}

/// A short, stable tag for `seed` (not a secret, not an identity): names
/// of probe objects.
pub fn short_tag(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random secret access key (64 hex digits, as Garage makes them).
pub fn random_secret() -> SecretString {
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    SecretString::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        let mac = hmac_sha256(
            &long_key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn derived_key_ids_are_garage_shaped() {
        let id = key_id_from(&hmac_sha256(b"secret", b"x"));
        assert_eq!(id.len(), 26);
        assert!(id.starts_with("GK") && id[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_admin_endpoint_is_https_or_loopback() {
        let mut garage = Garage {
            admin_endpoint: "http://127.0.0.1:3903".into(),
            admin_token: SecretRef::env("X"),
            s3_endpoint: "http://127.0.0.1:3900".into(),
            region: "garage".into(),
            web_endpoint: None,
            key_id_secret: None,
            s3_timeout_seconds: 30,
        };
        for ok in [
            "http://127.0.0.1:3903",
            "http://[::1]:3903",
            "http://localhost:3903",
            "https://garage.example.org",
        ] {
            garage.admin_endpoint = ok.into();
            garage.validate().unwrap();
        }
        for clear in ["http://garage.example.org:3903", "http://10.0.0.5:3903"] {
            garage.admin_endpoint = clear.into();
            let e = garage.validate().unwrap_err();
            assert_eq!(e.field(), Some("garage.adminEndpoint"), "{clear}");
            assert!(e.to_string().contains("travel in clear"), "{e}");
            assert!(e.hint().unwrap().contains("https://"), "{e}");
        }
    }

    #[test]
    fn website_urls_use_the_web_root_domain() {
        let garage = Garage {
            admin_endpoint: "http://127.0.0.1:3903".into(),
            admin_token: SecretRef::env("X"),
            s3_endpoint: "http://127.0.0.1:3900".into(),
            region: "garage".into(),
            web_endpoint: Some("http://web.garage.localhost:3902".into()),
            key_id_secret: None,
            s3_timeout_seconds: 30,
        };
        assert_eq!(
            garage.website_url("media").as_deref(),
            Some("http://media.web.garage.localhost:3902/")
        );
    }

    #[test]
    fn permission_differences() {
        let rw = Permissions {
            read: true,
            write: true,
            owner: false,
        };
        let r = Permissions {
            read: true,
            ..Default::default()
        };
        assert_eq!(
            rw.minus(r),
            Permissions {
                write: true,
                ..Default::default()
            }
        );
        assert!(!r.minus(rw).any());
    }
}
