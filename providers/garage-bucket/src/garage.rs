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
    /// certificates are verified against the system's trusted roots.
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
}

/// How often a call is tried when Garage is unreachable or unavailable.
const ATTEMPTS: u32 = 4;

impl Admin {
    /// A client for `garage`, reading its admin token.
    pub fn connect(garage: &Garage) -> Result<Admin> {
        garage.validate()?;
        let token = garage.admin_token.read("garage.adminToken")?;
        let base = reqwest::Url::parse(&garage.admin_endpoint).map_err(|e| {
            Error::invalid_input("garage.adminEndpoint", "not a URL").with_source(e)
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal("cannot set up the HTTP client").with_source(e))?;
        Ok(Admin { http, base, token })
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
/// instance-metadata probing (which would cost seconds per process).
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
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(garage.region.clone()))
        .endpoint_url(&garage.s3_endpoint)
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A deterministic Garage access key id (`GK` + 24 hex digits) for `seed`,
/// so that a retry after a crash finds the key the crashed run imported.
pub fn derived_key_id(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("GK{hex}")
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
    fn derived_key_ids_are_stable_and_garage_shaped() {
        let id = derived_key_id("fedi-garage-key:mastodon");
        assert_eq!(id, derived_key_id("fedi-garage-key:mastodon"));
        assert_ne!(id, derived_key_id("fedi-garage-key:peertube"));
        assert_eq!(id.len(), 26);
        assert!(id.starts_with("GK") && id[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn website_urls_use_the_web_root_domain() {
        let garage = Garage {
            admin_endpoint: "http://127.0.0.1:3903".into(),
            admin_token: SecretRef::env("X"),
            s3_endpoint: "http://127.0.0.1:3900".into(),
            region: "garage".into(),
            web_endpoint: Some("http://web.garage.localhost:3902".into()),
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
