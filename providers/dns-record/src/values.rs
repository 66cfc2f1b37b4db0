//! Record types and their values: parsed and checked from the inputs'
//! strings before anything is sent, turned into wire data, and read back
//! from what a server serves, in one canonical text form so that what was
//! asked for and what is served compare exactly.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use data_encoding::HEXLOWER_PERMISSIVE;
use fedi_protocol::schemars::{self, JsonSchema};
use hickory_proto::rr::rdata::{self, A, AAAA, CNAME, MX, NS, PTR, SRV, SSHFP, TLSA, TXT};
use hickory_proto::rr::{Name, RData, RecordType as WireType};
use hickory_proto::serialize::binary::{BinDecoder, Restrict};
use serde::{Deserialize, Serialize};

/// DNS record type.
// The variants are the types' names, as in zone files and on the wire.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RecordType {
    /// IPv4 address, e.g. `192.0.2.10`.
    A,
    /// IPv6 address, e.g. `2001:db8::10`.
    AAAA,
    /// Alias of another name, e.g. `web.example.org.` (exactly one value; no
    /// other record may share the name).
    CNAME,
    /// Text, e.g. `v=spf1 -all`: the text itself, unquoted; longer than 255
    /// bytes is fine (it is split into character-strings as DNS requires).
    TXT,
    /// Mail exchanger, `<preference> <host>`, e.g. `10 mail.example.org.`.
    MX,
    /// Service location, `<priority> <weight> <port> <target>`, e.g.
    /// `10 5 443 social.example.org.`.
    SRV,
    /// Certification authority authorization, `<flags> <tag> <value>`, e.g.
    /// `0 issue "letsencrypt.org"` (the quotes are optional).
    CAA,
    /// Name server of a delegated subdomain, e.g. `ns1.example.net.`.
    NS,
    /// Reverse pointer, e.g. `host.example.org.`.
    PTR,
    /// DANE certificate association, `<usage> <selector> <matching type>
    /// <hex>`, e.g. `3 1 1 0123...`.
    TLSA,
    /// SSH host key fingerprint, `<algorithm> <fingerprint type> <hex>`, e.g.
    /// `4 2 0123...`.
    SSHFP,
}

impl RecordType {
    /// The type on the wire.
    pub fn wire(self) -> WireType {
        match self {
            RecordType::A => WireType::A,
            RecordType::AAAA => WireType::AAAA,
            RecordType::CNAME => WireType::CNAME,
            RecordType::TXT => WireType::TXT,
            RecordType::MX => WireType::MX,
            RecordType::SRV => WireType::SRV,
            RecordType::CAA => WireType::CAA,
            RecordType::NS => WireType::NS,
            RecordType::PTR => WireType::PTR,
            RecordType::TLSA => WireType::TLSA,
            RecordType::SSHFP => WireType::SSHFP,
        }
    }

    /// The type's name, as in zone files.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
            RecordType::TXT => "TXT",
            RecordType::MX => "MX",
            RecordType::SRV => "SRV",
            RecordType::CAA => "CAA",
            RecordType::NS => "NS",
            RecordType::PTR => "PTR",
            RecordType::TLSA => "TLSA",
            RecordType::SSHFP => "SSHFP",
        }
    }

    /// The type with its article, for messages: "an A", "a TXT".
    pub fn with_article(self) -> String {
        let article = match self {
            RecordType::A
            | RecordType::AAAA
            | RecordType::MX
            | RecordType::NS
            | RecordType::SRV
            | RecordType::SSHFP => "an",
            _ => "a",
        };
        format!("{article} {self}")
    }

    /// How a value of this type is written, for hints.
    pub fn format(self) -> &'static str {
        match self {
            RecordType::A => "an IPv4 address, e.g. \"192.0.2.10\"",
            RecordType::AAAA => "an IPv6 address, e.g. \"2001:db8::10\"",
            RecordType::CNAME => "a fully qualified name, e.g. \"web.example.org.\"",
            RecordType::TXT => "the text itself, unquoted, e.g. \"v=spf1 -all\"",
            RecordType::MX => "\"<preference> <host>\", e.g. \"10 mail.example.org.\"",
            RecordType::SRV => {
                "\"<priority> <weight> <port> <target>\", e.g. \"10 5 443 social.example.org.\""
            }
            RecordType::CAA => "\"<flags> <tag> <value>\", e.g. \"0 issue letsencrypt.org\"",
            RecordType::NS => "a fully qualified name, e.g. \"ns1.example.net.\"",
            RecordType::PTR => "a fully qualified name, e.g. \"host.example.org.\"",
            RecordType::TLSA => {
                "\"<usage 0-3> <selector 0-1> <matching type 0-2> <hex data>\", e.g. \"3 1 1 <64 hex digits>\""
            }
            RecordType::SSHFP => {
                "\"<algorithm 1-4 or 6> <fingerprint type 1-2> <hex fingerprint>\", e.g. \"4 2 <64 hex digits>\""
            }
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every record type this provider manages.
#[cfg(test)]
const ALL: [RecordType; 11] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::MX,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::NS,
    RecordType::PTR,
    RecordType::TLSA,
    RecordType::SSHFP,
];

/// One record's data, normalized: names lower-cased and fully qualified,
/// addresses parsed, TXT as its bytes (however split), hex lower-cased.
/// Two values are equal exactly when a server treats them as the same
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A.
    A(Ipv4Addr),
    /// AAAA.
    Aaaa(Ipv6Addr),
    /// CNAME.
    Cname(Name),
    /// TXT: the character-strings concatenated.
    Txt(Vec<u8>),
    /// MX.
    Mx(u16, Name),
    /// SRV: priority, weight, port, target.
    Srv(u16, u16, u16, Name),
    /// CAA: flags, tag, value.
    Caa(u8, String, Vec<u8>),
    /// NS.
    Ns(Name),
    /// PTR.
    Ptr(Name),
    /// TLSA: usage, selector, matching type, data.
    Tlsa(u8, u8, u8, Vec<u8>),
    /// SSHFP: algorithm, fingerprint type, fingerprint.
    Sshfp(u8, u8, Vec<u8>),
}

/// The most a TXT record may hold: its RDATA is at most 65535 bytes, one
/// length byte per 255-byte character-string.
const MAX_TXT_BYTES: usize = 65535 / 256 * 255;

impl Value {
    /// Parses the input string `text` as a value of type `ty`. The error is
    /// the problem, in words.
    pub fn parse(ty: RecordType, text: &str) -> Result<Value, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let count = |n: usize| -> Result<(), String> {
            if fields.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "{text:?} has {} field(s), {} value has {n}",
                    fields.len(),
                    ty.with_article()
                ))
            }
        };
        match ty {
            RecordType::A => text
                .trim()
                .parse()
                .map(Value::A)
                .map_err(|_| format!("{text:?} is not an IPv4 address")),
            RecordType::AAAA => {
                let trimmed = text.trim();
                match trimmed.parse::<Ipv6Addr>() {
                    Ok(address) if address.to_ipv4_mapped().is_some() => Err(format!(
                        "{text:?} is an IPv4-mapped IPv6 address; publish the IPv4 address as an A record"
                    )),
                    Ok(address) => Ok(Value::Aaaa(address)),
                    Err(_) if trimmed.parse::<Ipv4Addr>().is_ok() => Err(format!(
                        "{text:?} is an IPv4 address, not an IPv6 address; use type \"A\" for it"
                    )),
                    Err(_) => Err(format!("{text:?} is not an IPv6 address")),
                }
            }
            RecordType::CNAME => parse_target(text).map(Value::Cname),
            RecordType::NS => parse_target(text).map(Value::Ns),
            RecordType::PTR => parse_target(text).map(Value::Ptr),
            RecordType::TXT => {
                if text.len() > MAX_TXT_BYTES {
                    return Err(format!(
                        "the text is {} bytes long; a TXT record holds at most {MAX_TXT_BYTES}",
                        text.len()
                    ));
                }
                Ok(Value::Txt(text.as_bytes().to_vec()))
            }
            RecordType::MX => {
                count(2)?;
                let preference = number::<u16>(fields[0], "preference")?;
                Ok(Value::Mx(preference, parse_target_or_root(fields[1])?))
            }
            RecordType::SRV => {
                count(4)?;
                Ok(Value::Srv(
                    number::<u16>(fields[0], "priority")?,
                    number::<u16>(fields[1], "weight")?,
                    number::<u16>(fields[2], "port")?,
                    parse_target_or_root(fields[3])?,
                ))
            }
            RecordType::CAA => parse_caa(text),
            RecordType::TLSA => {
                count(4)?;
                let usage = small(fields[0], "certificate usage", 3)?;
                let selector = small(fields[1], "selector", 1)?;
                let matching = small(fields[2], "matching type", 2)?;
                let data = hex(fields[3])?;
                let expected = match matching {
                    1 => Some(32),
                    2 => Some(64),
                    _ => None,
                };
                if let Some(expected) = expected.filter(|e| *e != data.len()) {
                    return Err(format!(
                        "matching type {matching} takes a {}-byte digest ({} hex digits), not {} bytes",
                        expected,
                        expected * 2,
                        data.len()
                    ));
                }
                Ok(Value::Tlsa(usage, selector, matching, data))
            }
            RecordType::SSHFP => {
                count(3)?;
                let algorithm = number::<u8>(fields[0], "algorithm")?;
                if !matches!(algorithm, 1..=4 | 6) {
                    return Err(format!(
                        "algorithm {algorithm} is not an SSHFP key algorithm (1 RSA, 2 DSA, 3 ECDSA, 4 Ed25519, 6 Ed448)"
                    ));
                }
                let fingerprint_type = number::<u8>(fields[1], "fingerprint type")?;
                let expected = match fingerprint_type {
                    1 => 20,
                    2 => 32,
                    other => {
                        return Err(format!(
                            "fingerprint type {other} is not an SSHFP fingerprint type (1 SHA-1, 2 SHA-256)"
                        ));
                    }
                };
                let fingerprint = hex(fields[2])?;
                if fingerprint.len() != expected {
                    return Err(format!(
                        "fingerprint type {fingerprint_type} takes a {expected}-byte digest ({} hex digits), not {} bytes",
                        expected * 2,
                        fingerprint.len()
                    ));
                }
                Ok(Value::Sshfp(algorithm, fingerprint_type, fingerprint))
            }
        }
    }

    /// The wire data.
    pub fn to_rdata(&self) -> RData {
        match self {
            Value::A(address) => RData::A(A(*address)),
            Value::Aaaa(address) => RData::AAAA(AAAA(*address)),
            Value::Cname(name) => RData::CNAME(CNAME(name.clone())),
            Value::Ns(name) => RData::NS(NS(name.clone())),
            Value::Ptr(name) => RData::PTR(PTR(name.clone())),
            Value::Txt(bytes) => {
                let chunks: Vec<&[u8]> = if bytes.is_empty() {
                    vec![&[]]
                } else {
                    bytes.chunks(255).collect()
                };
                RData::TXT(TXT::from_bytes(chunks))
            }
            Value::Mx(preference, exchange) => RData::MX(MX::new(*preference, exchange.clone())),
            Value::Srv(priority, weight, port, target) => {
                RData::SRV(SRV::new(*priority, *weight, *port, target.clone()))
            }
            Value::Caa(flags, tag, value) => {
                // The CAA constructors only cover some tags; decode the wire
                // form, which keeps any tag and value byte for byte.
                let mut wire = vec![*flags, tag.len() as u8];
                wire.extend_from_slice(tag.as_bytes());
                wire.extend_from_slice(value);
                let mut decoder = BinDecoder::new(&wire);
                RData::read(
                    &mut decoder,
                    WireType::CAA,
                    Restrict::new(wire.len() as u16),
                )
                .expect("a CAA record built from checked parts decodes")
            }
            Value::Tlsa(usage, selector, matching, data) => RData::TLSA(TLSA::new(
                rdata::tlsa::CertUsage::from(*usage),
                rdata::tlsa::Selector::from(*selector),
                rdata::tlsa::Matching::from(*matching),
                data.clone(),
            )),
            Value::Sshfp(algorithm, fingerprint_type, fingerprint) => RData::SSHFP(SSHFP::new(
                rdata::sshfp::Algorithm::from(*algorithm),
                rdata::sshfp::FingerprintType::from(*fingerprint_type),
                fingerprint.clone(),
            )),
        }
    }

    /// The value of served wire data; `None` for a type this provider does
    /// not manage.
    pub fn from_rdata(data: &RData) -> Option<Value> {
        Some(match data {
            RData::A(A(address)) => Value::A(*address),
            RData::AAAA(AAAA(address)) => Value::Aaaa(*address),
            RData::CNAME(CNAME(name)) => Value::Cname(canonical(name)),
            RData::NS(NS(name)) => Value::Ns(canonical(name)),
            RData::PTR(PTR(name)) => Value::Ptr(canonical(name)),
            RData::TXT(txt) => Value::Txt(txt.txt_data.iter().flatten().copied().collect()),
            RData::MX(mx) => Value::Mx(mx.preference, canonical(&mx.exchange)),
            RData::SRV(srv) => {
                Value::Srv(srv.priority, srv.weight, srv.port, canonical(&srv.target))
            }
            RData::CAA(caa) => Value::Caa(caa.flags(), caa.tag.clone(), caa.value.clone()),
            RData::TLSA(tlsa) => Value::Tlsa(
                u8::from(tlsa.cert_usage),
                u8::from(tlsa.selector),
                u8::from(tlsa.matching),
                tlsa.cert_data.clone(),
            ),
            RData::SSHFP(sshfp) => Value::Sshfp(
                u8::from(sshfp.algorithm),
                u8::from(sshfp.fingerprint_type),
                sshfp.fingerprint.clone(),
            ),
            _ => return None,
        })
    }
}

impl fmt::Display for Value {
    /// The canonical text: what the outputs show, and what an input may say.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::A(address) => write!(f, "{address}"),
            Value::Aaaa(address) => write!(f, "{address}"),
            Value::Cname(name) | Value::Ns(name) | Value::Ptr(name) => write!(f, "{name}"),
            Value::Txt(bytes) => f.write_str(&String::from_utf8_lossy(bytes)),
            Value::Mx(preference, exchange) => write!(f, "{preference} {exchange}"),
            Value::Srv(priority, weight, port, target) => {
                write!(f, "{priority} {weight} {port} {target}")
            }
            Value::Caa(flags, tag, value) => {
                let value = String::from_utf8_lossy(value)
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"");
                write!(f, "{flags} {tag} \"{value}\"")
            }
            Value::Tlsa(usage, selector, matching, data) => write!(
                f,
                "{usage} {selector} {matching} {}",
                HEXLOWER_PERMISSIVE.encode(data)
            ),
            Value::Sshfp(algorithm, fingerprint_type, fingerprint) => write!(
                f,
                "{algorithm} {fingerprint_type} {}",
                HEXLOWER_PERMISSIVE.encode(fingerprint)
            ),
        }
    }
}

/// A name as compared and shown: lower case, fully qualified.
pub fn canonical(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

/// A domain name as written in a value (CNAME, NS, PTR targets; MX hosts;
/// SRV targets): always fully qualified, with or without the trailing dot.
/// A name of one label is refused, since it is almost certainly meant
/// relative to the zone.
pub fn parse_target(text: &str) -> Result<Name, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the name is empty".into());
    }
    if text == "@" || text == "." {
        return Err(format!(
            "{text:?} is not a host name; write the fully qualified name, e.g. \"web.example.org.\""
        ));
    }
    let name = parse_name(text)?;
    if name.num_labels() < 2 {
        return Err(format!(
            "{text:?} has a single label, which looks relative to the zone; names in values are \
             fully qualified: write e.g. \"{}.example.org.\"",
            text.trim_end_matches('.')
        ));
    }
    if name.is_wildcard() {
        return Err(format!("{text:?} is a wildcard, which cannot be a target"));
    }
    Ok(name)
}

/// Like [`parse_target`], but also accepts `.`, the root, which means "no
/// such service" in MX (RFC 7505) and SRV (RFC 2782).
fn parse_target_or_root(text: &str) -> Result<Name, String> {
    if text == "." {
        Ok(Name::root())
    } else {
        parse_target(text)
    }
}

/// Any domain name (labels of at most 63 bytes, 255 in all; international
/// names are converted to their ASCII form), fully qualified and lower case.
pub fn parse_name(text: &str) -> Result<Name, String> {
    if text.contains("..") || text.starts_with('.') && text != "." {
        return Err(format!("{text:?} has an empty label"));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(format!("{text:?} contains white space"));
    }
    let name = Name::from_utf8(text).map_err(|e| format!("{text:?} is not a domain name: {e}"))?;
    Ok(canonical(&name))
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("the {what} {text:?} is not a number in range"))
}

fn small(text: &str, what: &str, max: u8) -> Result<u8, String> {
    let value = number::<u8>(text, what)?;
    if value > max {
        return Err(format!("the {what} {value} is out of range (0 to {max})"));
    }
    Ok(value)
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .map_err(|_| format!("{text:?} is not an even number of hex digits"))
}

/// `<flags> <tag> <value>`; the value may be quoted (`"letsencrypt.org"`),
/// with `\"` and `\\` inside.
fn parse_caa(text: &str) -> Result<Value, String> {
    let mut rest = text.trim();
    let mut next = |what: &str| -> Result<String, String> {
        let end = rest.find(char::is_whitespace).ok_or_else(|| {
            format!("{text:?} has no {what}; a CAA value is \"<flags> <tag> <value>\"")
        })?;
        let field = rest[..end].to_string();
        rest = rest[end..].trim_start();
        Ok(field)
    };
    let flags = number::<u8>(&next("tag")?, "flags")?;
    let tag = next("value")?;
    if tag.is_empty() || tag.len() > 15 || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "the tag {tag:?} is not 1 to 15 letters and digits (e.g. issue, issuewild, iodef)"
        ));
    }
    let tag = tag.to_ascii_lowercase();
    let raw = rest.trim_end();
    let value = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(quoted) => unescape(quoted)?,
        None if raw.contains('"') => {
            return Err(format!(
                "the value {raw:?} has unbalanced quotes; quote the whole value or none of it"
            ));
        }
        None => raw.to_string(),
    };
    Ok(Value::Caa(flags, tag, value.into_bytes()))
}

fn unescape(quoted: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                _ => return Err(format!("{quoted:?}: only \\\" and \\\\ may be escaped")),
            },
            '"' => return Err(format!("{quoted:?} has a quote inside; escape it as \\\"")),
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ty: RecordType, text: &str) -> String {
        let value = Value::parse(ty, text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let back = Value::from_rdata(&value.to_rdata()).expect("a managed type");
        assert_eq!(back, value, "{text}");
        value.to_string()
    }

    #[test]
    fn values_parse_normalize_and_survive_the_wire() {
        assert_eq!(round_trip(RecordType::A, "192.0.2.1"), "192.0.2.1");
        assert_eq!(
            round_trip(RecordType::AAAA, "2001:DB8:0:0::1"),
            "2001:db8::1"
        );
        assert_eq!(
            round_trip(RecordType::CNAME, "Web.Example.ORG"),
            "web.example.org."
        );
        assert_eq!(
            round_trip(RecordType::MX, "10   mail.example.org."),
            "10 mail.example.org."
        );
        assert_eq!(round_trip(RecordType::MX, "0 ."), "0 .");
        assert_eq!(
            round_trip(RecordType::SRV, "10 5 443 social.example.org"),
            "10 5 443 social.example.org."
        );
        assert_eq!(
            round_trip(RecordType::CAA, "0 issue \"letsencrypt.org\""),
            "0 issue \"letsencrypt.org\""
        );
        assert_eq!(
            round_trip(RecordType::CAA, "128 ISSUEWILD ;"),
            "128 issuewild \";\""
        );
        assert_eq!(
            round_trip(
                RecordType::CAA,
                "0 iodef \"mailto:a \\\"b\\\"@example.org\""
            ),
            "0 iodef \"mailto:a \\\"b\\\"@example.org\""
        );
        let digest = "AB".repeat(32);
        assert_eq!(
            round_trip(RecordType::TLSA, &format!("3 1 1 {digest}")),
            format!("3 1 1 {}", "ab".repeat(32))
        );
        assert_eq!(
            round_trip(RecordType::SSHFP, &format!("4 2 {digest}")),
            format!("4 2 {}", "ab".repeat(32))
        );
        let long = "x".repeat(700);
        assert_eq!(round_trip(RecordType::TXT, &long), long);
        assert_eq!(round_trip(RecordType::TXT, ""), "");
        let RData::TXT(txt) = Value::parse(RecordType::TXT, &long).unwrap().to_rdata() else {
            panic!("TXT");
        };
        let sizes: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(sizes, [255, 255, 190]);
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let cases = [
            (RecordType::A, "192.0.2", "is not an IPv4 address"),
            (RecordType::AAAA, "192.0.2.1", "use type \"A\""),
            (RecordType::AAAA, "::ffff:192.0.2.1", "IPv4-mapped"),
            (RecordType::CNAME, "web", "single label"),
            (RecordType::CNAME, "@", "not a host name"),
            (RecordType::CNAME, "a..b", "empty label"),
            (
                RecordType::NS,
                &format!("{}.org", "x".repeat(64)),
                "not a domain name",
            ),
            (
                RecordType::MX,
                "mail.example.org.",
                "has 1 field(s), an MX value has 2",
            ),
            (RecordType::MX, "70000 mail.example.org.", "preference"),
            (RecordType::SRV, "1 2 x host.example.org.", "the port \"x\""),
            (RecordType::CAA, "0 is-sue x", "tag"),
            (RecordType::CAA, "0 issue", "no value"),
            (RecordType::CAA, "0 issue \"x", "unbalanced quotes"),
            (RecordType::TLSA, "4 1 1 00", "certificate usage 4"),
            (RecordType::TLSA, "3 1 1 abcd", "32-byte digest"),
            (RecordType::TLSA, "3 1 0 xyz", "hex digits"),
            (RecordType::SSHFP, "5 2 00", "algorithm 5"),
            (RecordType::SSHFP, "4 2 00", "32-byte digest"),
        ];
        for (ty, text, expected) in cases {
            let error = Value::parse(ty, text).unwrap_err();
            assert!(error.contains(expected), "{ty} {text:?}: {error}");
        }
        let huge = "x".repeat(MAX_TXT_BYTES + 1);
        assert!(
            Value::parse(RecordType::TXT, &huge)
                .unwrap_err()
                .contains("at most")
        );
    }

    #[test]
    fn every_type_is_named_as_on_the_wire() {
        for ty in ALL {
            assert_eq!(ty.wire().to_string(), ty.as_str());
            let json = serde_json::to_value(ty).unwrap();
            assert_eq!(json, ty.as_str());
        }
    }
}
