//! Reaching Proxmox VE: the connection inputs, and an API client over
//! `reqwest` that unwraps `{"data": ...}` envelopes, keeps the HTTP reason
//! phrase (where Proxmox puts its error text), and retries what is
//! transient a bounded number of times.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{Error, ErrorKind, ExposeSecret, Result, SecretRef};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{tls, vcr};

/// How to reach a Proxmox VE cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Proxmox {
    /// URL of the API of any node of the cluster, e.g.
    /// `https://pve1.hoster.example:8006`.
    pub endpoint: String,
    /// The API token's id, `USER@REALM!TOKENID`, e.g.
    /// `deployer@pve!fediversity` (made with `pveum user token add`).
    pub token_id: String,
    /// The API token's secret (the UUID `pveum` shows once), read from a
    /// file or an environment variable at operation time.
    pub token_secret: SecretRef,
    /// A PEM file with the CA certificate(s) to trust instead of the
    /// system's roots, e.g. a copy of the cluster's `/etc/pve/pve-root-ca.pem`.
    /// Host names are still checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of the node's certificate, as `pvenode cert
    /// info` prints it (`AB:CD:...`, colons optional): exactly that
    /// certificate is accepted, whoever signed it. Exclusive with `caFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Proxmox {
    /// Checks the connection inputs, before anything is sent.
    pub fn validate(&self) -> Result<()> {
        match reqwest::Url::parse(&self.endpoint) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
            _ => {
                return Err(Error::invalid_input(
                    "proxmox.endpoint",
                    format!("{:?} is not an https URL", self.endpoint),
                )
                .with_hint("give the API URL of a node, e.g. https://pve1.example.org:8006"));
            }
        }
        let valid_id = self.token_id.split_once('!').is_some_and(|(user, token)| {
            user.split_once('@')
                .is_some_and(|(name, realm)| !name.is_empty() && !realm.is_empty())
                && !token.is_empty()
                && !token.contains(['=', ' '])
        });
        if !valid_id {
            return Err(Error::invalid_input(
                "proxmox.tokenId",
                format!("{:?} is not an API token id", self.token_id),
            )
            .with_hint("give it as USER@REALM!TOKENID, e.g. deployer@pve!fediversity"));
        }
        if self.ca_file.is_some() && self.fingerprint.is_some() {
            return Err(Error::invalid_input(
                "proxmox.fingerprint",
                "both `caFile` and `fingerprint` are set",
            )
            .with_hint("trust either the cluster's CA (caFile) or one pinned certificate (fingerprint), not both"));
        }
        if let Some(pin) = &self.fingerprint
            && tls::parse_fingerprint(pin).is_none()
        {
            return Err(Error::invalid_input(
                "proxmox.fingerprint",
                format!("{pin:?} is not a SHA-256 fingerprint"),
            )
            .with_hint("give 32 hex bytes as `pvenode cert info` shows them, e.g. AB:CD:..."));
        }
        Ok(())
    }
}

/// A failed API call: the HTTP status and reason phrase when Proxmox
/// answered, and the error to show.
#[derive(Debug)]
pub struct CallError {
    /// The HTTP status; `None` when no answer came (connection failed or
    /// was dropped).
    pub status: Option<StatusCode>,
    /// Proxmox's reason phrase (its error text), or the transport error.
    pub reason: String,
    /// The error to show.
    pub error: Error,
}

impl CallError {
    /// Whether the reason says the VM's configuration does not exist.
    pub fn is_missing_vm(&self) -> bool {
        self.status.is_some()
            && (self.reason.contains("does not exist") || self.reason.contains("no such VM"))
    }

    /// Whether the reason says a VMID is already taken.
    pub fn is_vmid_taken(&self) -> bool {
        self.status.is_some()
            && (self.reason.contains("already exists") || self.reason.contains("already in use"))
    }

    /// Whether the answer was lost: no answer (connection failed, dropped
    /// or reset mid-answer), or 596, which pveproxy answers when it gave up
    /// waiting for pvedaemon (pve-http-server's `proxy_request`, `timeout
    /// => 30`) while the work may go on. Either way the request may or may
    /// not have been carried out.
    pub fn is_lost(&self) -> bool {
        self.status.is_none_or(|s| s.as_u16() == 596)
    }

    /// Whether Proxmox refused a stale `digest`: `update_vm_api` says
    /// "checksum mismatch (file change by other user?)" ("missmatch" before
    /// qemu-server 8.2.5), `PVE::Tools::assert_if_modified` "detected
    /// modified configuration - file changed by other user? Try again.".
    pub fn is_stale_digest(&self) -> bool {
        self.status.is_some()
            && (self.reason.contains("checksum mismatch")
                || self.reason.contains("checksum missmatch")
                || self.reason.contains("detected modified configuration"))
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        e.error
    }
}

/// Whether a request may be sent again when no answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads and settings that end the same however often they are sent.
    Idempotent,
    /// A request that makes or destroys something (a clone, a DELETE):
    /// when the answer is lost (no answer, or a 596), it is not sent again;
    /// the caller must look at what happened instead.
    Once,
}

/// How often a transient failure (lock timeout, 596, connection error) is
/// tried in all.
pub const ATTEMPTS: u32 = 5;

/// The Proxmox VE API.
pub struct Api {
    http: reqwest_middleware::ClientWithMiddleware,
    /// Whether exchanges go through a cassette (`FEDI_PROXMOX_RECORD` or
    /// `FEDI_PROXMOX_REPLAY`, see [`vcr`]).
    cassette: vcr::Mode,
    base: reqwest::Url,
    endpoint: String,
    token_id: String,
    ca_file: Option<PathBuf>,
    auth: HeaderValue,
    pin: Option<Arc<tls::PinMismatch>>,
    calls: std::cell::Cell<u32>,
}

impl Api {
    /// A client for `proxmox`, reading its token secret.
    pub fn connect(proxmox: &Proxmox) -> Result<Api> {
        proxmox.validate()?;
        let cassette = vcr::Mode::from_env()?;
        let secret = proxmox.token_secret.read("proxmox.tokenSecret")?;
        let mut auth = HeaderValue::from_str(&format!(
            "PVEAPIToken={}={}",
            proxmox.token_id,
            secret.expose_secret()
        ))
        .map_err(|_| {
            Error::invalid_input(
                "proxmox.tokenSecret",
                format!(
                    "the secret in {} holds characters an HTTP header cannot carry",
                    proxmox.token_secret.describe()
                ),
            )
        })?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120));
        let mut pin = None;
        if let Some(fingerprint) = &proxmox.fingerprint {
            let bytes = tls::parse_fingerprint(fingerprint).expect("validated");
            let (config, mismatch) = tls::pinned(bytes)?;
            builder = builder.tls_backend_preconfigured(config);
            pin = Some(mismatch);
        } else if let Some(ca) = &proxmox.ca_file {
            builder = builder.tls_backend_preconfigured(tls::with_ca_file(ca, "proxmox.caFile")?);
        }
        let http = builder
            .build()
            .map_err(|e| Error::internal("cannot set up the HTTP client").with_source(e))?;
        // No middleware unless a cassette is asked for.
        let http = vcr::middlewares(&cassette, secret.expose_secret())?
            .into_iter()
            .fold(reqwest_middleware::ClientBuilder::new(http), |b, m| {
                b.with_arc(m)
            })
            .build();
        let mut base = reqwest::Url::parse(&proxmox.endpoint).expect("validated");
        base.set_path("/api2/json/");
        Ok(Api {
            http,
            cassette,
            base,
            endpoint: proxmox.endpoint.clone(),
            token_id: proxmox.token_id.clone(),
            ca_file: proxmox.ca_file.clone(),
            auth,
            pin,
            calls: Default::default(),
        })
    }

    /// The API token's id (`USER@REALM!TOKENID`), which task lists name as
    /// the user that started a task.
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// How many HTTP requests this client sent.
    pub fn calls(&self) -> u32 {
        self.calls.get()
    }

    /// `GET path?query`, the `data` of the answer.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CallError> {
        self.call(Method::GET, path, query, &[], Retry::Idempotent)
            .await
    }

    /// Calls the API and returns the `data` of the answer. Retries, with
    /// backoff, what is transient: 596 (pveproxy could not reach
    /// pvedaemon), lock timeouts, and (for [`Retry::Idempotent`] requests)
    /// connections that failed or dropped.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        form: &[(String, String)],
        retry: Retry,
    ) -> Result<Value, CallError> {
        let mut url = self.base.join(path).map_err(|e| CallError {
            status: None,
            reason: String::new(),
            error: Error::internal(format!("cannot form the API URL for {path}")).with_source(e),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut delay = Duration::from_millis(250);
        for attempt in 1..=ATTEMPTS {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.auth.clone());
            if !form.is_empty() {
                request = request.form(form);
            }
            tracing::debug!(%method, path, attempt, "Proxmox API call");
            self.calls.set(self.calls.get() + 1);
            let failure = match request.send().await {
                Ok(response) => match self.decode(&method, path, response).await {
                    Ok(value) => return Ok(value),
                    // A 596 may come after the work was done: only what
                    // ends the same when sent twice is sent again.
                    Err(e) if e.is_lost() && retry == Retry::Once => return Err(e),
                    Err(e) if is_transient(&e) => e,
                    Err(e) => return Err(e),
                },
                Err(reqwest_middleware::Error::Reqwest(e)) => {
                    let failure = self.transport_error(&method, path, e);
                    // An untrusted certificate does not get better by
                    // asking again.
                    let untrusted = failure.error.kind() == ErrorKind::PermissionDenied;
                    if retry == Retry::Once || self.pin_refused() || untrusted {
                        return Err(failure);
                    }
                    failure
                }
                Err(reqwest_middleware::Error::Middleware(e)) => {
                    return Err(self.cassette_error(&method, path, e));
                }
            };
            if attempt == ATTEMPTS {
                return Err(CallError {
                    error: failure.error.context(format!("after {ATTEMPTS} attempts")),
                    ..failure
                });
            }
            tracing::warn!(%method, path, attempt, reason = %failure.reason, "transient Proxmox failure, retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(4));
        }
        unreachable!("the last attempt returns")
    }

    /// The cassette middleware failed: on replay, the request is not in
    /// the cassette (the provider asked something the recorded session
    /// did not).
    fn cassette_error(&self, method: &Method, path: &str, e: impl std::fmt::Display) -> CallError {
        let (field, what, hint) = match &self.cassette {
            vcr::Mode::Replay(cassette) => (
                vcr::REPLAY_ENV,
                format!(
                    "replaying {}: the cassette has no answer to {method} {path} at this point",
                    cassette.display()
                ),
                "the provider's requests differ from the recorded session's (other inputs, \
                 another part, or changed code); record the session again",
            ),
            _ => (
                vcr::RECORD_ENV,
                format!("recording {method} {path} failed"),
                "check the cassette path in FEDI_PROXMOX_RECORD",
            ),
        };
        CallError {
            status: None,
            reason: e.to_string(),
            error: Error::invalid_input(field, what)
                .with_source(std::io::Error::other(e.to_string()))
                .with_hint(hint),
        }
    }

    fn pin_refused(&self) -> bool {
        self.pin.as_ref().is_some_and(|p| p.seen().is_some())
    }

    fn transport_error(&self, method: &Method, path: &str, e: reqwest::Error) -> CallError {
        if let Some(seen) = self.pin.as_ref().and_then(|p| p.seen()) {
            return CallError {
                status: None,
                reason: "certificate does not match the pin".into(),
                error: Error::invalid_input(
                    "proxmox.fingerprint",
                    format!(
                        "the server at {} presented a certificate with SHA-256 fingerprint {seen}, \
                         which is not the pinned one; nothing was sent",
                        self.endpoint
                    ),
                )
                .with_hint(
                    "if the node's certificate was renewed, check the new fingerprint on the node \
                     (`pvenode cert info`) and update `proxmox.fingerprint`; otherwise something \
                     is intercepting the connection",
                ),
            };
        }
        let text = chain(&e);
        let tls = text.contains("certificate") || text.contains("UnknownIssuer");
        let error = if tls && let Some(ca) = &self.ca_file {
            Error::permission_denied(format!(
                "the TLS certificate of {} is not signed by the CA in `proxmox.caFile` ({})",
                self.endpoint,
                ca.display()
            ))
            .with_field("proxmox.caFile")
            .with_source(e.without_url())
            .with_hint(
                "check that the file is the cluster's CA (/etc/pve/pve-root-ca.pem) and that the \
                 endpoint's host name is in the node's certificate, or pin the node's certificate \
                 with `proxmox.fingerprint` (`pvenode cert info`) instead",
            )
        } else if tls {
            Error::permission_denied(format!(
                "the TLS certificate of {} is not trusted",
                self.endpoint
            ))
            .with_source(e.without_url())
            .with_hint(
                "Proxmox VE uses self-signed certificates: set `proxmox.caFile` to the cluster's CA \
                 (/etc/pve/pve-root-ca.pem) or `proxmox.fingerprint` to the node certificate's \
                 SHA-256 fingerprint (`pvenode cert info`)",
            )
        } else {
            Error::unavailable(format!(
                "no answer from the Proxmox VE API at {} to {method} {path}",
                self.endpoint
            ))
            .with_source(e.without_url())
            .with_hint("check `proxmox.endpoint` and that the node is up and reachable")
        };
        CallError {
            status: None,
            reason: text,
            error,
        }
    }

    async fn decode(
        &self,
        method: &Method,
        path: &str,
        response: reqwest::Response,
    ) -> Result<Value, CallError> {
        let status = response.status();
        let reason = response
            .extensions()
            .get::<hyper_reason::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok().map(str::to_string))
            .or_else(|| {
                // Through a cassette, the reason phrase travels in a header.
                self.cassette
                    .is_on()
                    .then(|| response.headers().get(vcr::REASON_HEADER))
                    .flatten()
                    .and_then(|v| v.to_str().ok().map(str::to_string))
            })
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let text = response.text().await.map_err(|e| CallError {
            status: Some(status),
            reason: reason.clone(),
            error: Error::unavailable(format!("reading the answer to {method} {path} failed"))
                .with_source(e.without_url()),
        })?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            let Some(Value::Object(mut envelope)) = body else {
                return Err(CallError {
                    status: Some(status),
                    reason,
                    error: Error::internal(format!(
                        "the answer to {method} {path} is not a {{\"data\": ...}} JSON envelope"
                    )),
                });
            };
            return Ok(envelope.remove("data").unwrap_or(Value::Null));
        }
        Err(self.refusal(method, path, status, reason, body.as_ref()))
    }

    fn refusal(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        reason: String,
        body: Option<&Value>,
    ) -> CallError {
        let mut what = format!(
            "Proxmox VE refused {method} {path}: {} {reason}",
            status.as_u16()
        );
        // Newer versions repeat the reason as the first line of `message`
        // and add detail lines; keep those.
        if let Some(message) = body.and_then(|b| b.get("message")).and_then(Value::as_str) {
            let detail: Vec<&str> = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !reason.contains(l))
                .collect();
            if !detail.is_empty() {
                what.push_str(&format!(" ({})", detail.join("; ")));
            }
        }
        if let Some(Value::Object(errors)) = body.and_then(|b| b.get("errors")) {
            let list: Vec<String> = errors
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or(&v.to_string()).trim()))
                .collect();
            what.push_str(&format!(" [{}]", list.join("; ")));
        }
        let error = match status.as_u16() {
            // Since pve-manager 9.1.5 every token failure reads only
            // "Authentication failed!": name the token and the endpoint.
            401 => Error::permission_denied(format!(
                "{what} (API token `{}` at {})",
                self.token_id, self.endpoint
            ))
            .with_field("proxmox.tokenSecret")
            .with_hint(
                "check `proxmox.tokenId` and that `proxmox.tokenSecret` holds that token's secret \
                 (tokens can expire or be removed with `pveum user token remove`)",
            ),
            403 => Error::permission_denied(what).with_hint(
                "give the token's user the privileges it needs on the node, storage and pool \
                 (e.g. the PVEVMAdmin role, Datastore.AllocateSpace, and VM.Clone on the \
                 template), or create the token without privilege separation",
            ),
            400 => Error::invalid_input("inputs", what),
            596 => Error::unavailable(what)
                .with_hint("pveproxy could not reach pvedaemon on the node; check the node"),
            _ if reason.contains("got timeout") => Error::unavailable(what).with_hint(
                "another operation holds the lock (e.g. a parallel clone of the same template); \
                 run again",
            ),
            _ if reason.contains("does not exist") => Error::not_found(what),
            _ if reason.contains("locked") || reason.contains("already exists") => {
                Error::conflict(what)
            }
            _ => Error::new(ErrorKind::Conflict, what),
        };
        CallError {
            status: Some(status),
            reason,
            error,
        }
    }
}

/// Whether a refusal is worth sending again: 596, a lock timeout, a 503.
fn is_transient(e: &CallError) -> bool {
    match e.status.map(|s| s.as_u16()) {
        Some(596) | Some(503) => true,
        Some(500) => e.reason.contains("got timeout"),
        _ => false,
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// hyper's reason phrase extension, as reqwest passes it on.
mod hyper_reason {
    pub use hyper::ext::ReasonPhrase;
}

/// Percent-encodes everything but unreserved characters, as Proxmox wants
/// `sshkeys` (it URL-decodes the value it stores).
pub fn uri_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`uri_escape`].
pub fn uri_unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxmox() -> Proxmox {
        Proxmox {
            endpoint: "https://pve1.example.org:8006".into(),
            token_id: "deployer@pve!fedi".into(),
            token_secret: SecretRef::env("X"),
            ca_file: None,
            fingerprint: None,
        }
    }

    #[test]
    fn connection_inputs_are_checked() {
        assert!(proxmox().validate().is_ok());
        let mut p = proxmox();
        p.endpoint = "http://pve1:8006".into();
        assert_eq!(p.validate().unwrap_err().field(), Some("proxmox.endpoint"));
        let mut p = proxmox();
        p.token_id = "deployer@pve".into();
        assert_eq!(p.validate().unwrap_err().field(), Some("proxmox.tokenId"));
        let mut p = proxmox();
        p.fingerprint = Some("AB:CD".into());
        assert_eq!(
            p.validate().unwrap_err().field(),
            Some("proxmox.fingerprint")
        );
    }

    #[test]
    fn ssh_keys_escape_round_trip() {
        let keys = "ssh-ed25519 AAAAC3Nz+/= me@host\nssh-rsa AAAB x";
        let escaped = uri_escape(keys);
        assert!(!escaped.contains(' ') && !escaped.contains('\n') && !escaped.contains('+'));
        assert_eq!(uri_unescape(&escaped), keys);
    }
}
