//! Recorded fixtures: recording a session's HTTP exchanges with Proxmox VE
//! into a cassette, and answering from one, with `reqwest-vcr` (a
//! record/replay middleware for reqwest; cassettes in the `vcr-cassette`
//! JSON format).
//!
//! - `FEDI_PROXMOX_RECORD=<cassette>`: every exchange of the process is
//!   appended to the cassette (created if missing) when the API client is
//!   dropped, at the end of each operation. Each provider process adds one
//!   *part* (numbered from 1), so a session of several processes (create,
//!   update, delete, ...) builds one cassette.
//! - `FEDI_PROXMOX_REPLAY=<cassette>` (with `FEDI_PROXMOX_REPLAY_PART=<n>`
//!   when the cassette holds more than one part): the client answers from
//!   part `n` of the cassette, in order, without any network.
//!
//! Neither is set by default, and then no middleware is in the path.
//!
//! A hosting provider records a session against its cluster by setting
//! `FEDI_PROXMOX_RECORD` for the operations it runs (e.g. `fedi-resource-runner
//! create --provider-exe fedi-proxmox-vm ...`, then `read`, `update`,
//! `delete`), and replays it as a test by running the same operations with
//! `FEDI_PROXMOX_REPLAY` and `FEDI_PROXMOX_REPLAY_PART` (see the README's
//! "Recorded fixtures" and `tests/recordings.rs`).
//!
//! Scrubbed before anything is written: the `Authorization` header (the
//! API token, `PVEAPIToken=...`) is replaced by a placeholder, cookie and
//! CSRF headers are removed, the token secret is replaced wherever else it
//! would appear, and the endpoint's host and port are replaced by
//! [`HOST`] so that a recording neither names the cluster nor depends on
//! its address. Requests are matched on method, path and query, form
//! body and (scrubbed) headers.
//!
//! Proxmox puts its error texts in the HTTP reason phrase, which
//! `reqwest-vcr` does not keep (it stores the canonical reason of the
//! status and restores none): a small middleware below it copies the
//! reason phrase into the response header [`REASON_HEADER`], the cassette
//! keeps it there and in the status message, and the client reads it back
//! from the header when recording or replaying.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedi_protocol::{Error, Result};
use reqwest::header::HeaderValue;
use reqwest_middleware::{Middleware, Next};
use reqwest_vcr::{VCRMiddleware, VCRMode};

/// Records the process's exchanges into this cassette.
pub const RECORD_ENV: &str = "FEDI_PROXMOX_RECORD";
/// Answers from this cassette instead of the network.
pub const REPLAY_ENV: &str = "FEDI_PROXMOX_REPLAY";
/// Which part (provider process, from 1) of the cassette to replay.
pub const PART_ENV: &str = "FEDI_PROXMOX_REPLAY_PART";
/// The response header that carries the reason phrase through the cassette.
pub const REASON_HEADER: &str = "x-fedi-reason-phrase";
/// The request header (in the cassette only, never sent) that numbers the
/// provider process an exchange was recorded by.
pub const PART_HEADER: &str = "x-fedi-recording-part";
/// What the `Authorization` header is replaced by.
pub const SCRUBBED: &str = "PVEAPIToken=<scrubbed>";
/// The host recorded URLs get instead of the endpoint's.
pub const HOST: &str = "pve.recorded.invalid";

/// Whether and how exchanges go through a cassette.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Straight to the network (the default).
    Off,
    /// Recording into this cassette.
    Record(PathBuf),
    /// Answering from this cassette.
    Replay(PathBuf),
}

impl Mode {
    /// The mode the environment asks for.
    pub fn from_env() -> Result<Mode> {
        let get = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        match (get(RECORD_ENV), get(REPLAY_ENV)) {
            (None, None) => Ok(Mode::Off),
            (Some(path), None) => Ok(Mode::Record(path.into())),
            (None, Some(path)) => Ok(Mode::Replay(path.into())),
            (Some(_), Some(_)) => Err(Error::invalid_input(
                RECORD_ENV,
                format!("both {RECORD_ENV} and {REPLAY_ENV} are set"),
            )
            .with_hint("record a session or replay one, not both at once")),
        }
    }

    /// Whether responses come through a cassette (and so carry the reason
    /// phrase in [`REASON_HEADER`]).
    pub fn is_on(&self) -> bool {
        *self != Mode::Off
    }
}

/// The middlewares for `mode`, outermost first; `secret` is scrubbed from
/// whatever is recorded.
pub fn middlewares(mode: &Mode, secret: &str) -> Result<Vec<Arc<dyn Middleware>>> {
    match mode {
        Mode::Off => Ok(Vec::new()),
        Mode::Record(path) => {
            let mut cassette = load(path, true)?;
            let part = parts(&cassette).into_iter().max().unwrap_or(0) + 1;
            // Anything recorded without parts (e.g. by hand) stays as it is.
            cassette.recorded_with = format!("reqwest-vcr {}", reqwest_vcr::VERSION);
            let secret = secret.to_string();
            let response_secret = secret.clone();
            let recorder = VCRMiddleware::from(cassette)
                .with_path(path.clone())
                .with_mode(VCRMode::Record)
                .with_modify_request(move |request| {
                    scrub_request(request, &secret);
                    request
                        .headers
                        .insert(PART_HEADER.into(), vec![part.to_string()]);
                })
                .with_modify_response(move |response| {
                    scrub_response(response, &response_secret);
                    if let Some(reason) =
                        response.headers.get(REASON_HEADER).and_then(|v| v.first())
                    {
                        response.status.message = reason.clone();
                    }
                });
            tracing::info!(cassette = %path.display(), part, "recording the Proxmox API exchanges");
            Ok(vec![Arc::new(recorder), Arc::new(KeepReason)])
        }
        Mode::Replay(path) => {
            let mut cassette = load(path, false)?;
            let found = parts(&cassette);
            let part = match std::env::var(PART_ENV).ok().filter(|p| !p.is_empty()) {
                Some(text) => Some(
                    text.parse::<u32>()
                        .ok()
                        .filter(|p| found.contains(p))
                        .ok_or_else(|| {
                            Error::invalid_input(
                                PART_ENV,
                                format!(
                                    "{} has no part {text:?}; it has parts {found:?}",
                                    path.display()
                                ),
                            )
                        })?,
                ),
                None if found.len() > 1 => {
                    return Err(Error::invalid_input(
                        PART_ENV,
                        format!(
                            "{} holds {} parts (one per recorded provider process)",
                            path.display(),
                            found.len()
                        ),
                    )
                    .with_hint(format!("set {PART_ENV} to the part to replay, from 1")));
                }
                None => None,
            };
            cassette.http_interactions.retain_mut(|interaction| {
                let tag = interaction.request.headers.remove(PART_HEADER);
                let of_part = tag
                    .as_ref()
                    .and_then(|v| v.first())
                    .and_then(|p| p.parse::<u32>().ok());
                part.is_none() || of_part == part
            });
            for interaction in &mut cassette.http_interactions {
                let response = &mut interaction.response;
                let canonical = reqwest::StatusCode::from_u16(response.status.code)
                    .ok()
                    .and_then(|s| s.canonical_reason());
                if !response.headers.contains_key(REASON_HEADER)
                    && !response.status.message.is_empty()
                    && Some(response.status.message.as_str()) != canonical
                {
                    response
                        .headers
                        .insert(REASON_HEADER.into(), vec![response.status.message.clone()]);
                }
            }
            let secret = secret.to_string();
            let player = VCRMiddleware::from(cassette)
                .with_path(path.clone())
                .with_mode(VCRMode::Replay)
                .with_rich_diff(true)
                .with_modify_request(move |request| scrub_request(request, &secret));
            Ok(vec![Arc::new(player)])
        }
    }
}

fn load(path: &Path, may_be_missing: bool) -> Result<vcr_cassette::Cassette> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if may_be_missing && e.kind() == std::io::ErrorKind::NotFound => {
            // Fail now, not when the cassette is written at the end.
            std::fs::write(path, b"")
                .map_err(|e| cassette_error(path, "cannot create the cassette", e))?;
            Vec::new()
        }
        Err(e) => return Err(cassette_error(path, "cannot read the cassette", e)),
    };
    if text.iter().all(u8::is_ascii_whitespace) && may_be_missing {
        return Ok(vcr_cassette::Cassette {
            http_interactions: Vec::new(),
            recorded_with: String::new(),
        });
    }
    serde_json::from_slice(&text).map_err(|e| cassette_error(path, "cannot parse the cassette", e))
}

fn cassette_error(
    path: &Path,
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::invalid_input("environment", format!("{what} {}", path.display()))
        .with_source(e)
        .with_hint(format!("check {RECORD_ENV} / {REPLAY_ENV}"))
}

/// The part numbers in a cassette, in order of first appearance.
fn parts(cassette: &vcr_cassette::Cassette) -> Vec<u32> {
    let mut found = Vec::new();
    for interaction in &cassette.http_interactions {
        let part = interaction
            .request
            .headers
            .get(PART_HEADER)
            .and_then(|v| v.first())
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        if !found.contains(&part) {
            found.push(part);
        }
    }
    found
}

fn scrub(text: &mut String, secret: &str) {
    if !secret.is_empty() && text.contains(secret) {
        *text = text.replace(secret, "<scrubbed>");
    }
}

fn scrub_headers(headers: &mut vcr_cassette::Headers, secret: &str) {
    headers.retain(|name, _| {
        !["cookie", "set-cookie", "csrfpreventiontoken"]
            .contains(&name.to_ascii_lowercase().as_str())
    });
    for (name, values) in headers.iter_mut() {
        if name.eq_ignore_ascii_case("authorization") {
            *values = vec![SCRUBBED.to_string()];
        }
        for value in values {
            scrub(value, secret);
        }
    }
}

/// Scrubs a request (recorded, or about to be matched on replay).
fn scrub_request(request: &mut vcr_cassette::Request, secret: &str) {
    scrub_headers(&mut request.headers, secret);
    scrub(&mut request.body.string, secret);
    let _ = request.uri.set_host(Some(HOST));
    let _ = request.uri.set_port(None);
    let _ = request.uri.set_username("");
    let _ = request.uri.set_password(None);
    if let Some(query) = request.uri.query().map(str::to_string)
        && !secret.is_empty()
        && query.contains(secret)
    {
        request
            .uri
            .set_query(Some(&query.replace(secret, "scrubbed")));
    }
}

fn scrub_response(response: &mut vcr_cassette::Response, secret: &str) {
    scrub_headers(&mut response.headers, secret);
    scrub(&mut response.body.string, secret);
    scrub(&mut response.status.message, secret);
}

/// Copies hyper's reason phrase into [`REASON_HEADER`], so that the
/// recorder (which keeps headers, not reason phrases) records it.
struct KeepReason;

#[async_trait::async_trait]
impl Middleware for KeepReason {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let mut response = next.run(request, extensions).await?;
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| r.as_bytes().to_vec());
        if let Some(value) = reason.and_then(|r| HeaderValue::from_bytes(&r).ok()) {
            response.headers_mut().insert(REASON_HEADER, value);
        }
        Ok(response)
    }
}
