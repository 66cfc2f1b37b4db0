//! TLS for the Proxmox VE API: the system's roots (default), a CA file, or
//! a pinned SHA-256 certificate fingerprint.
//!
//! Proxmox VE nodes ship self-signed certificates. Instead of "verify or
//! insecure", a user can trust the cluster's CA (`/etc/pve/pve-root-ca.pem`)
//! or pin the node certificate's fingerprint (shown by `pvenode cert info`
//! and in the `ssl_fingerprint` of `GET /nodes`). A pin checks the exact
//! certificate the server presents (and the handshake signature made with
//! its key); it replaces chain and host name checks, as SSH host key
//! pinning does.

use std::path::Path;
use std::sync::{Arc, Mutex};

use fedi_protocol::{Error, Result};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// A SHA-256 fingerprint as Proxmox shows it: `AB:CD:...` (32 bytes).
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a fingerprint given with or without colons, in either case.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let hex = hex.strip_prefix("sha256/").unwrap_or(&hex);
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The fingerprint of the last certificate that did not match the pin, so
/// that the error can say which certificate the server presented.
#[derive(Debug, Default)]
pub struct PinMismatch(Mutex<Option<String>>);

impl PinMismatch {
    /// The presented fingerprint, if a handshake failed on the pin.
    pub fn seen(&self) -> Option<String> {
        self.0.lock().ok()?.clone()
    }
}

#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    mismatch: Arc<PinMismatch>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let digest = Sha256::digest(end_entity.as_ref());
        if digest.as_slice() == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let seen = format_fingerprint(&digest);
        if let Ok(mut slot) = self.mismatch.0.lock() {
            *slot = Some(seen.clone());
        }
        Err(rustls::Error::General(format!(
            "the server's certificate has SHA-256 fingerprint {seen}, not the pinned one"
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls configuration that accepts exactly the certificate with SHA-256
/// fingerprint `pin`.
pub fn pinned(pin: [u8; 32]) -> Result<(rustls::ClientConfig, Arc<PinMismatch>)> {
    let provider = provider();
    let mismatch = Arc::new(PinMismatch::default());
    let verifier = PinnedVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
        mismatch: mismatch.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("cannot set up TLS").with_source(e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, mismatch))
}

/// A rustls configuration that trusts only the CA certificates in the PEM
/// file at `path` (with the usual chain, validity and host name checks).
pub fn with_ca_file(path: &Path, field: &str) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::invalid_input(field, format!("cannot read CA file `{}`", path.display()))
            .with_source(e)
            .with_hint("give the cluster's CA certificate, e.g. a copy of /etc/pve/pve-root-ca.pem")
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_blocks(&pem) {
        roots.add(CertificateDer::from(der)).map_err(|e| {
            Error::invalid_input(
                field,
                format!("`{}` holds an unusable certificate", path.display()),
            )
            .with_source(e)
        })?;
    }
    if roots.is_empty() {
        return Err(Error::invalid_input(
            field,
            format!("`{}` holds no PEM certificate", path.display()),
        )
        .with_hint("the file must contain `-----BEGIN CERTIFICATE-----` blocks"));
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal("cannot set up TLS").with_source(e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The DER contents of the `CERTIFICATE` blocks of a PEM file.
fn pem_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(body) = current.take()
                && let Some(der) = base64_decode(&body)
            {
                blocks.push(der);
            }
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    blocks
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_proxmox_and_plain_forms() {
        let proxmox = "80:D4:F2:DF:64:95:CD:8D:A0:82:82:AC:48:BA:C0:7A:1B:6B:87:8B:FE:B9:83:1C:95:4E:79:58:77:99:69:F5";
        let parsed = parse_fingerprint(proxmox).unwrap();
        assert_eq!(format_fingerprint(&parsed), proxmox);
        assert_eq!(
            parse_fingerprint(&proxmox.replace(':', "").to_lowercase()),
            Some(parsed)
        );
        assert_eq!(parse_fingerprint("80:D4"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn pem_blocks_decode() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_blocks(pem), vec![vec![0, 1, 2, 3]]);
    }
}
