//! What a failed exchange means for the user: each response code and TSIG
//! error becomes an [`Error`] of the right kind, naming the input to look
//! at, the likely cause and what to do; never a bare number.

use std::net::SocketAddr;
use std::time::Duration;

use fedi_protocol::{Error, SecretString};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::tsig::TsigError;

use crate::update::Failure;

/// What was going on when an exchange failed.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// Whether an UPDATE (rather than a query) was sent.
    pub updating: bool,
    /// The server.
    pub server: SocketAddr,
    /// The zone.
    pub zone: &'a Name,
    /// The TSIG key's name, if the message was signed.
    pub key: Option<&'a Name>,
    /// The timeout per answer.
    pub timeout: Duration,
    /// The TSIG secret, when it was read: removed from every text of the
    /// error (a backend's or the network library's words included).
    pub secret: Option<&'a SecretString>,
}

/// The error for `failure` in `situation`, scrubbed of the TSIG secret.
pub fn explain(failure: Failure, situation: &Situation<'_>) -> Error {
    let error = explain_unscrubbed(failure, situation);
    match situation.secret {
        Some(secret) => error.scrub_secrets(&[secret]),
        None => error,
    }
}

fn explain_unscrubbed(failure: Failure, situation: &Situation<'_>) -> Error {
    let server = situation.server;
    let zone = zone_text(situation.zone);
    let what = if situation.updating {
        format!("the UPDATE to zone `{zone}`")
    } else {
        format!("a query about zone `{zone}`")
    };
    let key = situation.key.map(|k| k.to_string());
    let key = key.as_deref().map(|k| k.trim_end_matches('.'));
    match failure {
        Failure::Rcode(code) => explain_rcode(code, situation, &what, key),
        Failure::Tsig(error) => {
            let key = key.unwrap_or("?");
            match error {
                TsigError::BadSig => Error::permission_denied(format!(
                    "the server at {server} could not verify the signature of {what} (TSIG \
                     BADSIG): the secret is not the one the server has for key `{key}`"
                ))
                .with_field("tsig.secret")
                .with_hint(
                    "put the key's secret (base64, as in the server's configuration) in the file \
                     or variable `tsig.secret` names, and check `tsig.algorithm`",
                ),
                TsigError::BadKey => Error::permission_denied(format!(
                    "the server at {server} does not accept the TSIG key `{key}` for {what} \
                     (TSIG BADKEY): it knows no key of that name and algorithm, or (Knot) the key \
                     may not update the zone"
                ))
                .with_field("tsig.keyName")
                .with_hint(format!(
                    "give the key's name exactly as the server's configuration does (BIND: `key \
                     \"NAME\"`; Knot: `key: - id: NAME`) and its algorithm in `tsig.algorithm`; \
                     on Knot, also allow it in the zone's `acl` (`key: {key}`, `action: update`)"
                )),
                TsigError::BadTime => Error::permission_denied(format!(
                    "the server at {server} rejected the time of the signature of {what} (TSIG \
                     BADTIME): its clock and this machine's differ by more than 5 minutes"
                ))
                .with_hint("synchronise both clocks (NTP), then run again"),
                other => Error::permission_denied(format!(
                    "the server at {server} rejected the signature of {what} (TSIG error {other:?})"
                ))
                .with_field("tsig")
                .with_hint("check `tsig.keyName`, `tsig.algorithm` and the secret"),
            }
        }
        Failure::Unauthenticated(problem) => Error::permission_denied(format!(
            "the server at {server} did not authenticate {what}: {problem}"
        ))
        .with_field("tsig.secret")
        .with_hint(
            "the secret or the algorithm is probably not the key's: check `tsig.secret` and \
             `tsig.algorithm` against the server's configuration",
        ),
        Failure::Timeout => Error::unavailable(format!(
            "no answer from {server} to {what} within {} s",
            situation.timeout.as_secs_f64()
        ))
        .with_field("server")
        .with_hint(
            "check `server.address` and `server.port` (the zone's primary server), that the \
             server runs, and that no firewall drops DNS; on a slow link raise `timeoutSeconds`",
        ),
        Failure::Network(problem) => Error::unavailable(format!(
            "cannot reach {server} for {what}: {problem}"
        ))
        .with_field("server")
        .with_hint(
            "check `server.address` and `server.port` (the zone's primary server) and that the \
             server runs",
        ),
        Failure::Protocol(problem) => {
            Error::internal(format!("{what} at {server} failed: {problem}"))
                .with_hint("run again with FEDI_LOG=debug and report the log")
        }
    }
}

fn explain_rcode(
    code: ResponseCode,
    situation: &Situation<'_>,
    what: &str,
    key: Option<&str>,
) -> Error {
    let server = situation.server;
    let zone = zone_text(situation.zone);
    let name = rcode_name(code);
    match code {
        ResponseCode::Refused if situation.updating => {
            let error =
                Error::permission_denied(format!("the server at {server} refused {what} ({name})"));
            match key {
                Some(key) => error.with_field("tsig.keyName").with_hint(format!(
                    "the key `{key}` is probably not allowed to change this zone, name or type: \
                     allow it on the server (BIND: `update-policy {{ grant {key} zonesub ANY; }};` \
                     in the zone; Knot: an `acl` with `key: {key}` and `action: update` on the \
                     zone), and check that `zone` is a zone this server is primary for; or the \
                     server's own checks rejected the records (BIND refuses an MX or SRV host \
                     inside the zone that has no address record): its log says which"
                )),
                None => error.with_field("tsig").with_hint(
                    "the server takes no unsigned updates from this machine: set `tsig` to a key \
                     the server allows to update the zone",
                ),
            }
        }
        ResponseCode::Refused => Error::invalid_input(
            "zone",
            format!(
                "the server at {server} refused {what} ({name}): it is probably not \
                 authoritative for `{zone}`"
            ),
        )
        .with_hint(
            "check that `zone` is the zone's name (e.g. \"example.org\", not a name inside it) and \
             that `server` is its primary server and answers queries from this machine (BIND: \
             `allow-query`)",
        ),
        // RFC 2136 says "not authoritative", RFC 8945 "not authorized": the
        // zone answered queries, so the second is the likely one.
        ResponseCode::NotAuth if situation.updating => {
            let error = Error::permission_denied(format!(
                "the server at {server} answered {what} with {name}: it does not let {} update \
                 the zone, or is not its primary server",
                key.map_or(
                    "unsigned messages from this machine".to_string(),
                    |k| format!("the key `{k}`")
                )
            ));
            match key {
                Some(key) => error.with_field("tsig.keyName").with_hint(format!(
                    "allow the key on the server (Knot: an `acl` with `key: {key}` and `action: \
                     update` on the zone; BIND: `update-policy {{ grant {key} zonesub ANY; }};`), \
                     and check that `server` is the zone's primary, not a secondary"
                )),
                None => error.with_field("tsig").with_hint(
                    "the server wants signed updates: set `tsig` to a key the server allows to \
                     update the zone",
                ),
            }
        }
        ResponseCode::NotAuth => Error::invalid_input(
            "zone",
            format!("the server at {server} is not authoritative for zone `{zone}` ({name})"),
        )
        .with_hint(
            "give the zone's name as `zone` (e.g. \"example.org\", not a name inside it or its \
             parent) and its primary server as `server`",
        ),
        ResponseCode::NotZone => Error::invalid_input(
            "name",
            format!("the server at {server} says a name of {what} is outside the zone ({name})"),
        )
        .with_hint("the record's `name` must be inside `zone`"),
        ResponseCode::YXRRSet
        | ResponseCode::NXRRSet
        | ResponseCode::YXDomain
        | ResponseCode::NXDomain => Error::conflict(format!(
            "the records changed between reading and replacing them, so the server did not \
             apply {what} ({name}: a prerequisite failed)"
        ))
        .with_hint("someone else is changing the same records; run the deployment again"),
        ResponseCode::ServFail => Error::unavailable(format!(
            "the server at {server} failed to process {what} ({name})"
        ))
        .with_hint(
            "look in the server's log; common causes: the zone did not load, its journal or zone \
             file cannot be written, or signing the zone failed",
        ),
        ResponseCode::NotImp => Error::unsupported(format!(
            "the server at {server} does not implement {what} ({name})"
        ))
        .with_field("server")
        .with_hint(
            "enable dynamic updates for the zone on the server, or point `server` at its primary",
        ),
        ResponseCode::FormErr => Error::internal(format!(
            "the server at {server} could not parse {what} ({name})"
        ))
        .with_hint("run again with FEDI_LOG=debug and report the log"),
        other => Error::internal(format!(
            "the server at {server} answered {what} with {}",
            rcode_name(other)
        ))
        .with_hint("look in the server's log"),
    }
}

/// The code's mnemonic, as in RFC 2136 and dig's output, with its number.
fn rcode_name(code: ResponseCode) -> String {
    let mnemonic = match code {
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        _ => return format!("response code {}", u16::from(code)),
    };
    format!("{mnemonic}, code {}", u16::from(code))
}

fn zone_text(zone: &Name) -> String {
    let text = zone.to_string();
    match text.trim_end_matches('.') {
        "" => ".".to_string(),
        trimmed => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation<'a>(zone: &'a Name, key: Option<&'a Name>) -> Situation<'a> {
        Situation {
            updating: true,
            server: "127.0.0.1:53".parse().unwrap(),
            zone,
            key,
            timeout: Duration::from_secs(2),
            secret: None,
        }
    }

    #[test]
    fn the_secret_is_scrubbed_from_texts_of_the_backend() {
        let zone = Name::from_ascii("example.org.").unwrap();
        let key = Name::from_ascii("deploy.").unwrap();
        let secret = SecretString::from("c2VjcmV0LXRzaWcta2V5LXZhbHVl");
        let situation = Situation {
            secret: Some(&secret),
            ..situation(&zone, Some(&key))
        };
        for failure in [
            Failure::Network("peer said c2VjcmV0LXRzaWcta2V5LXZhbHVl".into()),
            Failure::Protocol("cannot parse c2VjcmV0LXRzaWcta2V5LXZhbHVl".into()),
            Failure::Unauthenticated("echo: c2VjcmV0LXRzaWcta2V5LXZhbHVl".into()),
        ] {
            let text = explain(failure, &situation).to_string();
            assert!(!text.contains("c2VjcmV0"), "{text}");
            assert!(text.contains("[REDACTED]"), "{text}");
        }
    }

    #[test]
    fn codes_are_explained_with_field_and_fix() {
        let zone = Name::from_ascii("example.org.").unwrap();
        let key = Name::from_ascii("deploy.").unwrap();
        let refused = explain(
            Failure::Rcode(ResponseCode::Refused),
            &situation(&zone, Some(&key)),
        );
        assert_eq!(refused.field(), Some("tsig.keyName"));
        assert!(
            refused.to_string().contains("(REFUSED, code 5)"),
            "{refused}"
        );
        assert!(refused.hint().unwrap().contains("grant deploy zonesub"));

        let notauth = explain(
            Failure::Rcode(ResponseCode::NotAuth),
            &situation(&zone, Some(&key)),
        );
        assert_eq!(notauth.field(), Some("tsig.keyName"));
        assert!(
            notauth
                .to_string()
                .contains("does not let the key `deploy` update"),
            "{notauth}"
        );
        let query = Situation {
            updating: false,
            ..situation(&zone, None)
        };
        let refused = explain(Failure::Rcode(ResponseCode::Refused), &query);
        assert_eq!(refused.field(), Some("zone"));
        assert!(
            refused
                .to_string()
                .contains("not authoritative for `example.org`"),
            "{refused}"
        );

        let badsig = explain(
            Failure::Tsig(TsigError::BadSig),
            &situation(&zone, Some(&key)),
        );
        assert_eq!(badsig.field(), Some("tsig.secret"));
        let badkey = explain(
            Failure::Tsig(TsigError::BadKey),
            &situation(&zone, Some(&key)),
        );
        assert_eq!(badkey.field(), Some("tsig.keyName"));
        assert!(badkey.to_string().contains("`deploy`"), "{badkey}");

        let timeout = explain(Failure::Timeout, &situation(&zone, None));
        assert_eq!(timeout.kind(), fedi_protocol::ErrorKind::Unavailable);
        assert!(timeout.to_string().contains("within 2 s"), "{timeout}");

        let conflict = explain(
            Failure::Rcode(ResponseCode::YXRRSet),
            &situation(&zone, None),
        );
        assert_eq!(conflict.kind(), fedi_protocol::ErrorKind::Conflict);
        assert!(
            conflict.to_string().contains("YXRRSET, code 7"),
            "{conflict}"
        );
    }
}
