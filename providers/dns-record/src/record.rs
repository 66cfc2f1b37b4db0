//! Resource type `record`: one RRset (a name and a type, with its values
//! and TTL) on a zone's primary server, changed by RFC 2136 dynamic
//! updates signed with TSIG.
//!
//! Every change is one UPDATE message, which the server applies all or
//! nothing: the old RRset is deleted and the new records added in the same
//! message, so no moment exists where the name does not resolve, whether
//! the values, the TTL, the name or the type change.
//!
//! Lifecycle:
//! - create: looks at what the server serves first. An absent RRset is
//!   created; one with the same values is adopted; one with other values is
//!   replaced only if this resource's ownership record says it wrote it, or
//!   with `takeOver = true`, and otherwise refused with what is there. So
//!   create is an idempotent replace, and works without state;
//! - update: as create, and when the name or type changed, the RRset at the
//!   recorded name and type is removed in the same message (if it still
//!   holds what this resource wrote);
//! - delete: removes the RRset (if it still holds what this resource
//!   wrote); already gone is success;
//! - read: reports what is served and how it differs from what was
//!   recorded.
//!
//! After each change the server is queried again: a server that accepted the
//! UPDATE but serves something else is an error.
//!
//! The ownership record is a TXT record next to the name, at
//! `_fedi-owner-<first label>.<rest of the name>` (`_fedi-owner.<zone>` for
//! the zone itself), holding `fedi-dns-record owner=<owner> type=<type>`,
//! written in the same message as the RRset. It is what lets a stateless resource tell its own records
//! from someone else's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use data_encoding::{BASE64, BASE64_NOPAD};
use fedi_protocol::schemars::{self, JsonSchema};
use fedi_protocol::{
    CreateContext, Drift, Error, ExposeSecret, ReadOutcome, Recorded, Resource, Result, SecretRef,
};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record};
use serde::{Deserialize, Serialize};

use crate::query::Lookup;
use crate::rcode::{Situation, explain};
use crate::update::{Algorithm, Endpoint, Failure, Key, Transport, Update};
use crate::values::{RecordType, Value, canonical, parse_name};

/// Inputs of `record`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordInputs {
    /// The zone's primary server: the authoritative server that accepts
    /// dynamic updates (RFC 2136) for the zone.
    pub server: ServerInput,
    /// The zone, as the server has it, e.g. `example.org`.
    pub zone: String,
    /// The record's name: relative to the zone (`social`, `_matrix._tcp`,
    /// `*.apps`; `@` or `""` for the zone itself), or fully qualified with
    /// a trailing dot (`social.example.org.`). Changing it moves the record
    /// in one update (with state; without state the old name is not
    /// known).
    pub name: String,
    /// The record type. Changing it replaces the record in one update (with
    /// state).
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The values, at least one, each written as the type requires: A
    /// `192.0.2.10`; AAAA `2001:db8::10`; CNAME, NS and PTR a fully
    /// qualified name (`web.example.org.`, the trailing dot optional); TXT
    /// the text itself, unquoted, of any length; MX `10 mail.example.org.`;
    /// SRV `10 5 443 social.example.org.`; CAA `0 issue "letsencrypt.org"`
    /// (quotes optional); TLSA `3 1 1 <hex>`; SSHFP `4 2 <hex>`. All of them
    /// are checked before anything is sent.
    pub values: Vec<String>,
    /// Time to live, in seconds. Changing it replaces the records in one
    /// update, without a moment where the name does not resolve.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// The TSIG key that signs the updates; leave it unset only for a server
    /// that takes unsigned updates from this machine.
    #[serde(default)]
    pub tsig: Option<TsigInput>,
    /// `udp` (TCP for messages over 512 bytes and truncated answers) or
    /// `tcp`.
    #[serde(default)]
    pub transport: Transport,
    /// How long to wait for each answer from the server, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Replace an RRset of this name and type that exists with other values
    /// and was not written by this resource (nor by its `owner`). Off by
    /// default: such an RRset is refused, with what it holds.
    #[serde(default)]
    pub take_over: bool,
    /// Keep an ownership record, a TXT record next to the name
    /// (`_fedi-owner-www.example.org` for `www.example.org`), that marks the
    /// RRset as written by `owner`; it lets a stateless resource
    /// change its own records while refusing to clobber others'. Turn it
    /// off for a server whose update policy allows only the record itself;
    /// then changing the values of an existing RRset needs state or
    /// `takeOver`.
    #[serde(default = "yes")]
    pub ownership_record: bool,
    /// Who owns the records, in the ownership record: letters, digits and
    /// `.-_:`. Give each deployment that shares a zone its own owner.
    #[serde(default = "default_owner")]
    pub owner: String,
}

fn default_ttl() -> u32 {
    3600
}

fn default_timeout() -> u32 {
    5
}

fn yes() -> bool {
    true
}

fn default_owner() -> String {
    "default".into()
}

/// The zone's primary server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerInput {
    /// Its IP address, IPv4 or IPv6 (a host name is not resolved).
    pub address: String,
    /// Its DNS port.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    53
}

/// A TSIG key (RFC 8945) the server allows to update the zone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TsigInput {
    /// The key's name, exactly as in the server's configuration (BIND: `key
    /// "NAME"`; Knot: `key: - id: NAME`).
    pub key_name: String,
    /// The key's algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The key's secret, base64 (`{ file = ...; }` or `{ env = ...; }`). A
    /// file written by `tsig-keygen` or `keymgr -t` works as it is.
    pub secret: SecretRef,
}

/// Outputs of `record`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordOutputs {
    /// The record's fully qualified name, without the trailing dot, e.g.
    /// `social.example.org`: a service's domain.
    pub fqdn: String,
    /// The zone, without the trailing dot.
    pub zone: String,
    /// The record type.
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The TTL the server serves, in seconds.
    pub ttl: u32,
    /// The values the server serves, in canonical form (names fully
    /// qualified and lower case, IPv6 addresses compressed), sorted.
    pub values: Vec<String>,
}

/// The TTL of ownership records.
const MARKER_TTL: u32 = 3600;
/// The label in front of a name that holds its ownership records.
const MARKER_LABEL: &str = "_fedi-owner";
/// How ownership records start.
const MARKER_PREFIX: &str = "fedi-dns-record";

/// An ownership record: which owner wrote the RRset of a name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    name: Name,
    text: String,
}

impl Marker {
    /// The ownership record of `name`'s `ty` records, in `zone`: at
    /// `_fedi-owner-<first label>.<rest>`, a sibling of the name (not below
    /// it, where a delegation would hide it), or `_fedi-owner.<zone>` for
    /// the apex. `None` when the name would be too long.
    fn new(zone: &Name, name: &Name, ty: RecordType, owner: &str) -> Option<Marker> {
        let marker_name = if name == zone {
            zone.prepend_label(MARKER_LABEL).ok()?
        } else {
            let mut label = format!("{MARKER_LABEL}-").into_bytes();
            label.extend_from_slice(name.iter().next()?);
            name.base_name().prepend_label(label).ok()?
        };
        Some(Marker {
            name: marker_name,
            text: format!("{MARKER_PREFIX} owner={owner} type={ty}"),
        })
    }

    fn rdata(&self) -> RData {
        RData::TXT(TXT::from_bytes(vec![self.text.as_bytes()]))
    }
}

/// Validated inputs: all that is needed to act; nothing sent or read yet.
#[derive(Debug, Clone)]
struct Plan {
    endpoint: Endpoint,
    tsig: Option<TsigInput>,
    key_name: Option<Name>,
    zone: Name,
    name: Name,
    ty: RecordType,
    values: Vec<Value>,
    ttl: u32,
    take_over: bool,
    owner: String,
    /// The ownership record this resource keeps (when `ownershipRecord`).
    marker: Option<Marker>,
    /// The ownership record it would keep: removed when turned off.
    own_marker: Option<Marker>,
}

impl RecordInputs {
    /// Checks every input, values included, before anything is sent.
    fn plan(&self) -> Result<Plan> {
        let address: IpAddr = self.server.address.trim().parse().map_err(|_| {
            Error::invalid_input(
                "server.address",
                format!("{:?} is not an IP address", self.server.address),
            )
            .with_hint(
                "give the IP address of the zone's primary server, e.g. \"192.0.2.53\" or \
                 \"2001:db8::53\" (host names are not resolved)",
            )
        })?;
        if self.server.port == 0 {
            return Err(
                Error::invalid_input("server.port", "port 0 is not a DNS port")
                    .with_hint("leave `port` unset for 53, or give the server's port"),
            );
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err(Error::invalid_input(
                "timeoutSeconds",
                format!("{} is not between 1 and 300", self.timeout_seconds),
            )
            .with_hint("leave it unset for 5 seconds"));
        }
        let zone = parse_name(self.zone.trim()).map_err(|problem| {
            Error::invalid_input("zone", problem)
                .with_hint("give the zone's name, e.g. \"example.org\"")
        })?;
        if zone.is_root() {
            return Err(
                Error::invalid_input("zone", "the root zone cannot be updated")
                    .with_hint("give the zone's name, e.g. \"example.org\""),
            );
        }
        let name = resolve_name(&self.name, &zone)?;
        let ty = self.record_type;
        if name == zone && matches!(ty, RecordType::CNAME | RecordType::NS) {
            return Err(Error::invalid_input(
                "name",
                format!(
                    "{} record cannot be at the zone's apex `{}`",
                    ty.with_article(),
                    show(&zone)
                ),
            )
            .with_hint(if ty == RecordType::CNAME {
                "the apex holds the zone's SOA and NS records, which an alias excludes; give a \
                 name inside the zone, e.g. \"www\""
            } else {
                "the apex NS records are the zone's own delegation, which updates do not replace; \
                 NS records here delegate a subdomain: give its name, e.g. \"lab\""
            }));
        }
        let values = self.parse_values()?;
        if self.ttl > 2_147_483_647 {
            return Err(Error::invalid_input(
                "ttl",
                format!(
                    "{} is above the largest TTL, 2147483647 (RFC 2181)",
                    self.ttl
                ),
            )
            .with_hint("use a TTL in seconds, e.g. 3600"));
        }
        if self.owner.is_empty()
            || self.owner.len() > 100
            || !self
                .owner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(Error::invalid_input(
                "owner",
                format!(
                    "{:?} is not 1 to 100 letters, digits and `.-_:`",
                    self.owner
                ),
            )
            .with_hint("e.g. \"fediversity-prod\""));
        }
        let own_marker = Marker::new(&zone, &name, ty, &self.owner);
        if self.ownership_record && own_marker.is_none() {
            return Err(Error::invalid_input(
                "name",
                format!(
                    "`{}` is too long for its ownership record (`{MARKER_LABEL}-` in front of \
                     its first label)",
                    show(&name)
                ),
            )
            .with_hint("set `ownershipRecord = false`, or use a shorter name"));
        }
        let key_name = match &self.tsig {
            Some(tsig) => Some(parse_name(tsig.key_name.trim()).map_err(|problem| {
                Error::invalid_input("tsig.keyName", problem)
                    .with_hint("give the key's name as the server's configuration has it")
            })?),
            None => None,
        };
        Ok(Plan {
            endpoint: Endpoint {
                address: SocketAddr::new(address, self.server.port),
                transport: self.transport,
                timeout: Duration::from_secs(u64::from(self.timeout_seconds)),
            },
            tsig: self.tsig.clone(),
            key_name,
            zone,
            name,
            ty,
            values,
            ttl: self.ttl,
            take_over: self.take_over,
            owner: self.owner.clone(),
            marker: own_marker.clone().filter(|_| self.ownership_record),
            own_marker,
        })
    }

    fn parse_values(&self) -> Result<Vec<Value>> {
        let ty = self.record_type;
        if self.values.is_empty() {
            return Err(
                Error::invalid_input("values", "no values are given").with_hint(format!(
                    "give at least one value, {}; to remove the record, delete the resource",
                    ty.format()
                )),
            );
        }
        if ty == RecordType::CNAME && self.values.len() > 1 {
            return Err(Error::invalid_input(
                "values",
                format!("a CNAME has exactly one value, not {}", self.values.len()),
            )
            .with_hint("an alias points at one name; keep one value"));
        }
        let mut values: Vec<Value> = Vec::with_capacity(self.values.len());
        for (i, text) in self.values.iter().enumerate() {
            let field = format!("values[{i}]");
            let value = Value::parse(ty, text).map_err(|problem| {
                Error::invalid_input(&field, problem).with_hint(format!(
                    "{} value is {}",
                    ty.with_article(),
                    ty.format()
                ))
            })?;
            if let Some(first) = values.iter().position(|v| *v == value) {
                return Err(Error::invalid_input(
                    field,
                    format!("{text:?} is the same record as values[{first}]"),
                )
                .with_hint("list each value once"));
            }
            values.push(value);
        }
        Ok(values)
    }
}

impl Plan {
    /// Reads the TSIG secret (only now, when it is needed).
    fn key(&self) -> Result<Option<Key>> {
        let (Some(tsig), Some(name)) = (&self.tsig, &self.key_name) else {
            return Ok(None);
        };
        let secret = tsig.secret.read("tsig.secret")?;
        let bytes = decode_secret(secret.expose_secret()).ok_or_else(|| {
            Error::invalid_input(
                "tsig.secret",
                format!("the secret in {} is not base64", tsig.secret.describe()),
            )
            .with_hint(
                "put the key's base64 secret there, as `tsig-keygen` or `keymgr -t` print it (a \
                 file they wrote works as it is)",
            )
        })?;
        Key::new(name.clone(), tsig.algorithm.tsig(), bytes)
            .map(|key| Some(key.with_text(secret)))
            .map_err(|problem| Error::invalid_input("tsig", problem))
    }

    fn situation<'a>(&'a self, updating: bool, key: Option<&'a Key>) -> Situation<'a> {
        Situation {
            updating,
            server: self.endpoint.address,
            zone: &self.zone,
            key: key.map(|k| &k.name),
            secret: key.and_then(Key::secret_text),
            timeout: self.endpoint.timeout,
        }
    }

    fn lookup(&self) -> Result<Lookup> {
        Lookup::new(&self.endpoint).map_err(|f| explain(f, &self.situation(false, None)))
    }

    /// The outputs for what `seen` shows.
    fn outputs(&self, seen: &Seen) -> RecordOutputs {
        let mut values: Vec<String> = seen.values.iter().map(Value::to_string).collect();
        values.sort();
        RecordOutputs {
            fqdn: show(&self.name),
            zone: show(&self.zone),
            record_type: self.ty,
            ttl: seen.ttl.unwrap_or(self.ttl),
            values,
        }
    }
}

/// The secret's bytes: base64, alone or inside what `tsig-keygen` (`secret
/// "..."`) or `keymgr -t` (`secret: ...`) write.
fn decode_secret(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let candidate = if let Some(start) = text.find("secret \"") {
        let rest = &text[start + 8..];
        &rest[..rest.find('"')?]
    } else if let Some(start) = text.find("secret:") {
        rest_of_line(&text[start + 7..])
    } else {
        text
    };
    let candidate = candidate.trim();
    let bytes = BASE64
        .decode(candidate.as_bytes())
        .or_else(|_| BASE64_NOPAD.decode(candidate.as_bytes()))
        .ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

fn rest_of_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The record's name, fully qualified, from the `name` input.
fn resolve_name(input: &str, zone: &Name) -> Result<Name> {
    let text = input.trim();
    let zone_text = show(zone);
    let bad = |problem: String| {
        Error::invalid_input("name", problem).with_hint(format!(
            "give a name relative to the zone (\"social\", \"@\" for `{zone_text}` itself) or a \
             fully qualified one with a trailing dot (\"social.{zone_text}.\")"
        ))
    };
    let name =
        if text.is_empty() || text == "@" {
            zone.clone()
        } else if text.ends_with('.') {
            let name = parse_name(text).map_err(bad)?;
            if !zone.zone_of(&name) {
                return Err(Error::invalid_input(
                    "name",
                    format!("`{}` is not inside zone `{zone_text}`", show(&name)),
                )
                .with_hint(format!(
                    "give a name in `{zone_text}`, or the zone that holds this name as `zone`"
                )));
            }
            name
        } else {
            let lower = text.to_ascii_lowercase();
            if lower == zone_text || lower.ends_with(&format!(".{zone_text}")) {
                return Err(Error::invalid_input(
                "name",
                format!(
                    "`{text}` ends with the zone's name but has no trailing dot, so it would mean \
                     `{text}.{zone_text}`"
                ),
            )
            .with_hint(format!(
                "write \"{}\" (relative to the zone) or \"{text}.\" (fully qualified)",
                match lower.strip_suffix(&zone_text).map(|r| r.trim_end_matches('.')) {
                    Some("") | None => "@",
                    Some(relative) => relative,
                }
            )));
            }
            let relative = parse_name(&format!("{text}.")).map_err(bad)?;
            let mut relative = relative;
            relative.set_fqdn(false);
            relative
                .append_domain(zone)
                .map_err(|e| bad(format!("`{text}.{zone_text}` is not a domain name: {e}")))?
        };
    if name.iter().skip(1).any(|label| label == b"*") {
        return Err(bad(format!(
            "`{}` has `*` inside it; a wildcard is only the leftmost label",
            show(&name)
        )));
    }
    Ok(canonical(&name))
}

/// A name as users write it: no trailing dot.
fn show(name: &Name) -> String {
    let text = name.to_string();
    match text.trim_end_matches('.') {
        "" => ".".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// Values as a list for messages.
fn list(values: &[Value]) -> String {
    let mut texts: Vec<String> = values
        .iter()
        .map(|v| format!("{v:?}", v = v.to_string()))
        .collect();
    texts.sort();
    texts.join(", ")
}

/// Whether two sets of values are the same records.
fn same(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().all(|v| b.contains(v))
}

/// What the server serves at a name and type.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The RRset as served; empty when there is none.
    records: Vec<Record>,
    /// Its values.
    values: Vec<Value>,
    /// Its TTL.
    ttl: Option<u32>,
    /// A CNAME at the name, when the type looked at is another one.
    cname: Vec<Record>,
    /// The texts of the ownership records at the name.
    owners: Vec<String>,
}

impl Seen {
    fn exists(&self) -> bool {
        !self.records.is_empty()
    }

    fn owned_by(&self, marker: Option<&Marker>) -> bool {
        marker.is_some_and(|m| self.owners.contains(&m.text))
    }

    /// Owners other than `marker`'s that claim this type, for messages.
    fn other_owner(&self, ty: RecordType, marker: Option<&Marker>) -> Option<String> {
        let suffix = format!(" type={ty}");
        self.owners
            .iter()
            .filter(|t| marker.is_none_or(|m| **t != m.text))
            .filter(|t| t.starts_with(MARKER_PREFIX) && t.ends_with(&suffix))
            .find_map(|t| {
                t.split_whitespace()
                    .find_map(|f| f.strip_prefix("owner="))
                    .map(str::to_string)
            })
    }

    fn describe(&self) -> String {
        format!(
            "{} (TTL {})",
            list(&self.values),
            self.ttl.map_or("?".into(), |t| t.to_string())
        )
    }
}

/// Looks at `name`/`ty` (and a CNAME there, and its ownership records).
async fn observe(
    plan: &Plan,
    lookup: &Lookup,
    name: &Name,
    ty: RecordType,
    marker: Option<&Marker>,
) -> Result<Seen> {
    let situation = plan.situation(false, None);
    let wire = ty.wire();
    let rrset = lookup.rrset(name, wire);
    let cname = async {
        if ty == RecordType::CNAME {
            Ok(Vec::new())
        } else {
            lookup
                .rrset(name, hickory_proto::rr::RecordType::CNAME)
                .await
        }
    };
    let owners = async {
        match marker {
            Some(marker) => {
                lookup
                    .rrset(&marker.name, hickory_proto::rr::RecordType::TXT)
                    .await
            }
            None => Ok(Vec::new()),
        }
    };
    let (rrset, cname, owners) = tokio::join!(rrset, cname, owners);
    let cname = cname.map_err(|f| explain(f, &situation))?;
    // With a CNAME at the name, a query for another type follows the alias;
    // the name itself holds nothing else.
    let records = if cname.is_empty() {
        rrset.map_err(|f| explain(f, &situation))?
    } else {
        Vec::new()
    };
    let owners = owners
        .map_err(|f| explain(f, &situation))?
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                String::from_utf8_lossy(
                    &txt.txt_data.iter().flatten().copied().collect::<Vec<u8>>(),
                )
                .into_owned(),
            ),
            _ => None,
        })
        .collect();
    let values = records
        .iter()
        .filter_map(|r| Value::from_rdata(&r.data))
        .collect();
    let ttl = records.iter().map(|r| r.ttl).min();
    Ok(Seen {
        records,
        values,
        ttl,
        cname,
        owners,
    })
}

/// What this resource wrote before, as recorded.
#[derive(Debug, Clone)]
struct Previous {
    name: Name,
    ty: RecordType,
    values: Vec<Value>,
    marker: Option<Marker>,
}

impl Previous {
    fn of(recorded: &Recorded<RecordInputs, RecordOutputs>) -> Result<Previous> {
        let outputs = &recorded.outputs;
        let damaged = |field: &str, problem: String| {
            Error::invalid_input(format!("resource.outputProperties.{field}"), problem)
                .with_hint("the state is damaged; restore it from a backup")
        };
        let name = parse_name(&format!("{}.", outputs.fqdn.trim_end_matches('.')))
            .map_err(|p| damaged("fqdn", p))?;
        let ty = outputs.record_type;
        let values = outputs
            .values
            .iter()
            .map(|v| Value::parse(ty, v))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|p| damaged("values", p))?;
        let zone = parse_name(&format!("{}.", outputs.zone.trim_end_matches('.')))
            .map_err(|p| damaged("zone", p))?;
        let marker = if recorded.inputs.ownership_record {
            Marker::new(&zone, &name, ty, &recorded.inputs.owner)
        } else {
            None
        };
        Ok(Previous {
            name,
            ty,
            values,
            marker,
        })
    }
}

/// Brings the server to `plan` in one UPDATE. `previous` is what this
/// resource recorded on the same server and zone, if anything.
async fn apply(plan: &Plan, previous: Option<&Previous>) -> Result<RecordOutputs> {
    let key = plan.key()?;
    let lookup = plan.lookup()?;
    let moved = previous.filter(|p| p.name != plan.name || p.ty != plan.ty);
    let here = observe(plan, &lookup, &plan.name, plan.ty, plan.own_marker.as_ref());
    let there = async {
        match moved {
            Some(p) => observe(plan, &lookup, &p.name, p.ty, p.marker.as_ref())
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let (here, there) = tokio::join!(here, there);
    let (here, there) = (here?, there?);
    let place = show(&plan.name);
    let ty = plan.ty;
    let mut update = Update::new(&plan.zone);
    let mut removed_old = false;

    // The RRset at the recorded name and type, when that changed.
    if let (Some(old), Some(there)) = (moved, &there)
        && there.exists()
    {
        if same(&there.values, &old.values) || there.owned_by(old.marker.as_ref()) {
            update
                .require_exactly(&there.records)
                .delete_rrset(&old.name, old.ty.wire());
            removed_old = true;
            tracing::info!(name = %show(&old.name), r#type = %old.ty, "removing the recorded RRset in the same update");
        } else {
            tracing::warn!(
                name = %show(&old.name),
                r#type = %old.ty,
                "the recorded RRset now holds records this resource did not write; leaving it"
            );
        }
    }
    if let Some(old_marker) = previous.and_then(|p| p.marker.as_ref())
        && plan.marker.as_ref() != Some(old_marker)
    {
        update.delete_record(&old_marker.name, old_marker.rdata());
    }

    // A CNAME at the name excludes every other type.
    let cname_is_previous =
        moved.is_some_and(|p| p.name == plan.name && p.ty == RecordType::CNAME && removed_old);
    if !here.cname.is_empty() && !cname_is_previous {
        let cname_marker = plan
            .marker
            .as_ref()
            .and_then(|_| Marker::new(&plan.zone, &plan.name, RecordType::CNAME, &plan.owner));
        let target = here
            .cname
            .iter()
            .filter_map(|r| Value::from_rdata(&r.data))
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if here.owned_by(cname_marker.as_ref()) || plan.take_over {
            update
                .require_exactly(&here.cname)
                .delete_rrset(&plan.name, hickory_proto::rr::RecordType::CNAME);
            if let Some(marker) = &cname_marker {
                update.delete_record(&marker.name, marker.rdata());
            }
            tracing::info!(name = %place, target, "replacing the alias (CNAME) at the name in the same update");
        } else {
            return Err(Error::conflict(format!(
                "`{place}` is an alias (CNAME to {target}) that this resource did not write, and \
                 an alias excludes every other record at its name; it is left untouched"
            ))
            .with_field("name")
            .with_hint(
                "remove the CNAME on the server, set `takeOver = true` to replace it, or choose \
                 another `name`",
            ));
        }
    }

    // The RRset itself.
    let owned = here.owned_by(plan.marker.as_ref())
        || previous.is_some_and(|p| p.name == plan.name && p.ty == plan.ty);
    if !here.exists() {
        update.require_absent(&plan.name, ty.wire());
    } else if same(&here.values, &plan.values) {
        if !owned {
            tracing::info!(name = %place, r#type = %ty, "adopting the RRset already there with the same values");
        }
    } else if owned {
        update.require_exactly(&here.records);
    } else if plan.take_over {
        // Whatever is there goes (no prerequisite: what a query showed may
        // come from a wildcard).
        tracing::warn!(name = %place, r#type = %ty, was = %here.describe(), "taking over an RRset this resource did not write");
    } else if !exists_really(plan, key.as_ref(), ty).await? {
        // What the query showed was made up from a wildcard.
        update.require_absent(&plan.name, ty.wire());
    } else {
        let owner = here
            .other_owner(ty, plan.own_marker.as_ref())
            .map(|o| format!(" (its ownership record names owner `{o}`)"))
            .unwrap_or_default();
        return Err(Error::conflict(format!(
            "`{place}` already has {ty} records that this resource did not write: {}{owner}; \
             they are left untouched",
            here.describe()
        ))
        .with_field("name")
        .with_hint(
            "to manage them with this resource, set `takeOver = true` (their values are then \
             replaced by `values`); otherwise choose another `name`, or remove them on the server",
        ));
    }

    let marker_missing = plan
        .marker
        .as_ref()
        .is_some_and(|m| !here.owners.contains(&m.text));
    let stale_marker = plan.marker.is_none() && here.owned_by(plan.own_marker.as_ref());
    let in_place = here.exists()
        && same(&here.values, &plan.values)
        && here.ttl == Some(plan.ttl)
        && !marker_missing
        && !stale_marker
        && !update.changes_something();
    if in_place {
        tracing::info!(name = %place, r#type = %ty, "already served as declared; nothing to change");
        return Ok(plan.outputs(&here));
    }

    update.delete_rrset(&plan.name, ty.wire());
    for value in &plan.values {
        update.add(&plan.name, plan.ttl, value.to_rdata());
    }
    match (&plan.marker, &plan.own_marker) {
        (Some(marker), _) => {
            update.add(&marker.name, MARKER_TTL, marker.rdata());
        }
        (None, Some(own)) => {
            update.delete_record(&own.name, own.rdata());
        }
        (None, None) => {}
    }
    update
        .send(&plan.endpoint, key.as_ref())
        .await
        .map_err(|f| explain(f, &plan.situation(true, key.as_ref())))?;
    tracing::info!(
        name = %place,
        r#type = %ty,
        ttl = plan.ttl,
        values = %list(&plan.values),
        "updated"
    );

    // Confirm: the server must now serve exactly what was asked for.
    let (now, old_now) = tokio::join!(observe(plan, &lookup, &plan.name, ty, None), async {
        match moved.filter(|_| removed_old) {
            Some(old) => observe(plan, &lookup, &old.name, old.ty, None)
                .await
                .map(Some),
            None => Ok(None),
        }
    });
    let now = now?;
    if !same(&now.values, &plan.values) || now.ttl != Some(plan.ttl) {
        return Err(Error::conflict(format!(
            "the server at {} accepted the update but serves {} for {ty} `{place}`, not {} (TTL {})",
            plan.endpoint.address,
            if now.exists() { now.describe() } else { "nothing".into() },
            list(&plan.values),
            plan.ttl
        ))
        .with_hint(
            "something on the server ignored or rewrote the change: a CNAME cannot share its name \
             with other records (are there other records at this name?), a server policy may \
             limit TTLs or record types, or `server` is not the server that answers for the zone",
        ));
    }
    if let (Some(old), Some(old_now)) = (moved, old_now?)
        && old_now.exists()
    {
        return Err(Error::conflict(format!(
            "the server at {} accepted the update but still serves {} {} at `{}`",
            plan.endpoint.address,
            old.ty,
            old_now.describe(),
            show(&old.name)
        ))
        .with_hint("look in the server's log; then remove that RRset on the server"));
    }
    Ok(plan.outputs(&now))
}

/// Whether the RRset really exists, asked with an UPDATE that holds only the
/// prerequisite "RRset exists": unlike a query, it is not answered from a
/// wildcard.
async fn exists_really(plan: &Plan, key: Option<&Key>, ty: RecordType) -> Result<bool> {
    let mut probe = Update::new(&plan.zone);
    probe.require_exists(&plan.name, ty.wire());
    match probe.send(&plan.endpoint, key).await {
        Ok(()) => Ok(true),
        Err(Failure::Rcode(ResponseCode::NXRRSet)) => Ok(false),
        Err(failure) => Err(explain(failure, &plan.situation(true, key))),
    }
}

/// Removes what this resource wrote at `plan`'s name and type; `recorded`
/// are the values it last saw served. Already gone is success.
async fn remove(plan: &Plan, recorded: &[Value]) -> Result<()> {
    let key = plan.key()?;
    let lookup = plan.lookup()?;
    let place = show(&plan.name);
    let ty = plan.ty;
    let seen = observe(plan, &lookup, &plan.name, ty, plan.own_marker.as_ref()).await?;
    let mut update = Update::new(&plan.zone);
    if seen.exists() {
        let ours = same(&seen.values, recorded)
            || same(&seen.values, &plan.values)
            || seen.owned_by(plan.own_marker.as_ref());
        if !ours && !plan.take_over {
            return Err(Error::conflict(format!(
                "`{place}` now holds {ty} records this resource did not write: {}; they are left \
                 untouched",
                seen.describe()
            ))
            .with_field("name")
            .with_hint(
                "someone changed them since this resource wrote them: remove them on the server \
                 if they should go, or set `takeOver = true` and delete again",
            ));
        }
        update
            .require_exactly(&seen.records)
            .delete_rrset(&plan.name, ty.wire());
    } else {
        tracing::info!(name = %place, r#type = %ty, "the RRset is already gone");
    }
    if let Some(own) = plan
        .own_marker
        .as_ref()
        .filter(|m| seen.owners.contains(&m.text))
    {
        update.delete_record(&own.name, own.rdata());
    }
    if !update.changes_something() {
        return Ok(());
    }
    update
        .send(&plan.endpoint, key.as_ref())
        .await
        .map_err(|f| explain(f, &plan.situation(true, key.as_ref())))?;
    let now = observe(plan, &lookup, &plan.name, ty, None).await?;
    if now.exists() {
        return Err(Error::conflict(format!(
            "the server at {} accepted the deletion but still serves {ty} `{place}`: {}",
            plan.endpoint.address,
            now.describe()
        ))
        .with_hint("look in the server's log; then remove the RRset on the server"));
    }
    tracing::info!(name = %place, r#type = %ty, "deleted");
    Ok(())
}

/// The `record` resource type.
#[derive(Debug, Default)]
pub struct DnsRecord;

impl Resource for DnsRecord {
    type Inputs = RecordInputs;
    type Outputs = RecordOutputs;

    const TYPE: &'static str = "record";
    const DESCRIPTION: &'static str = "One DNS record set (a name and a type, its values and \
        TTL) in a zone on its primary server, written by RFC 2136 dynamic updates signed with \
        TSIG. Each change is one atomic update (the old records are removed in the same message \
        that adds the new ones, also when the TTL, name or type changes), confirmed by querying \
        the server afterwards. Records this resource did not write are never replaced without \
        `takeOver`. Works with or without state.";
    const REQUIRE_STATE: bool = false;
    const SUPPORTS_DELETE: bool = true;
    const SUPPORTS_READ: bool = true;

    async fn create(&self, inputs: RecordInputs, _: CreateContext) -> Result<RecordOutputs> {
        let plan = inputs.plan()?;
        apply(&plan, None).await
    }

    async fn update(
        &self,
        inputs: RecordInputs,
        previous: Recorded<RecordInputs, RecordOutputs>,
    ) -> Result<RecordOutputs> {
        let plan = inputs.plan()?;
        let old = Previous::of(&previous)?;
        let old_zone = parse_name(&format!("{}.", previous.outputs.zone.trim_end_matches('.')))
            .map_err(|p| Error::invalid_input("resource.outputProperties.zone", p))?;
        if previous.inputs.server == inputs.server && old_zone == plan.zone {
            return apply(&plan, Some(&old)).await;
        }
        // Another server or zone: one message cannot do both. Write the new
        // records first, then remove the old ones, so the name never stops
        // resolving.
        let outputs = apply(&plan, None).await?;
        let mut old_plan = previous.inputs.plan()?;
        old_plan.name = old.name.clone();
        old_plan.ty = old.ty;
        old_plan.zone = old_zone;
        tracing::info!(
            name = %show(&old.name),
            server = %old_plan.endpoint.address,
            "removing the records at the previous server or zone"
        );
        remove(&old_plan, &old.values).await?;
        Ok(outputs)
    }

    async fn delete(&self, current: Recorded<RecordInputs, RecordOutputs>) -> Result<()> {
        let old = Previous::of(&current)?;
        let mut plan = current.inputs.plan()?;
        plan.name = old.name.clone();
        plan.ty = old.ty;
        remove(&plan, &old.values).await
    }

    async fn read(
        &self,
        current: Recorded<RecordInputs, RecordOutputs>,
    ) -> Result<ReadOutcome<RecordOutputs>> {
        let old = Previous::of(&current)?;
        let plan = current.inputs.plan()?;
        let lookup = plan.lookup()?;
        let seen = observe(&plan, &lookup, &old.name, old.ty, old.marker.as_ref()).await?;
        if !seen.exists() {
            return Ok(ReadOutcome::Gone);
        }
        let mut drift = Vec::new();
        let recorded = &current.outputs;
        if !same(&seen.values, &old.values) {
            drift.push(Drift {
                property: "values".into(),
                message: format!(
                    "the server serves {}, recorded were {}",
                    list(&seen.values),
                    list(&old.values)
                ),
            });
        }
        if seen.ttl != Some(recorded.ttl) {
            drift.push(Drift {
                property: "ttl".into(),
                message: format!(
                    "the server serves TTL {}, recorded was {}",
                    seen.ttl.map_or("?".into(), |t| t.to_string()),
                    recorded.ttl
                ),
            });
        }
        if old.marker.is_some() && !seen.owned_by(old.marker.as_ref()) {
            drift.push(Drift {
                property: "ownershipRecord".into(),
                message: format!(
                    "the ownership record at `{}` is missing",
                    old.marker
                        .as_ref()
                        .map(|m| show(&m.name))
                        .unwrap_or_default()
                ),
            });
        }
        let mut outputs = plan.outputs(&seen);
        outputs.fqdn = show(&old.name);
        outputs.record_type = old.ty;
        Ok(ReadOutcome::Exists { outputs, drift })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(extra: serde_json::Value) -> RecordInputs {
        let mut base = json!({
            "server": {"address": "127.0.0.1"},
            "zone": "example.org",
            "name": "www",
            "type": "A",
            "values": ["192.0.2.1"],
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).expect("inputs parse")
    }

    fn name_of(name: &str) -> String {
        let zone = parse_name("example.org").unwrap();
        match resolve_name(name, &zone) {
            Ok(name) => name.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn names_are_relative_to_the_zone_unless_they_end_with_a_dot() {
        assert_eq!(name_of("www"), "www.example.org.");
        assert_eq!(name_of("@"), "example.org.");
        assert_eq!(name_of(""), "example.org.");
        assert_eq!(name_of("_matrix._tcp"), "_matrix._tcp.example.org.");
        assert_eq!(name_of("*.apps"), "*.apps.example.org.");
        assert_eq!(name_of("WWW.Example.org."), "www.example.org.");
        assert_eq!(name_of("example.org."), "example.org.");
        assert!(
            name_of("www.example.org").contains("write \"www\""),
            "{}",
            name_of("www.example.org")
        );
        assert!(name_of("example.org").contains("write \"@\""));
        assert!(name_of("www.example.net.").contains("not inside zone"));
        assert!(name_of("a.*.b").contains("wildcard"));
        assert!(name_of("a..b").contains("empty label"));
    }

    #[test]
    fn plans_check_everything_before_sending() {
        let plan = inputs(json!({})).plan().unwrap();
        assert_eq!(plan.endpoint.address.to_string(), "127.0.0.1:53");
        assert_eq!(plan.ttl, 3600);
        assert_eq!(
            plan.marker.unwrap().text,
            "fedi-dns-record owner=default type=A"
        );
        let cases = [
            (
                json!({"server": {"address": "ns1.example.org"}}),
                "server.address",
            ),
            (
                json!({"server": {"address": "127.0.0.1", "port": 0}}),
                "server.port",
            ),
            (json!({"values": []}), "values"),
            (json!({"values": ["192.0.2.1", "192.0.2.01"]}), "values[1]"),
            (json!({"values": ["x"]}), "values[0]"),
            (
                json!({"type": "CNAME", "values": ["a.example.org.", "b.example.org."]}),
                "values",
            ),
            (
                json!({"type": "CNAME", "name": "@", "values": ["a.example.org."]}),
                "name",
            ),
            (
                json!({"type": "NS", "name": "@", "values": ["ns.example.net."]}),
                "name",
            ),
            (json!({"ttl": 4_000_000_000u32}), "ttl"),
            (json!({"owner": "two words"}), "owner"),
            (json!({"timeoutSeconds": 0}), "timeoutSeconds"),
            (json!({"zone": "."}), "zone"),
        ];
        for (extra, field) in cases {
            let error = inputs(extra.clone()).plan().unwrap_err();
            assert_eq!(error.field(), Some(field), "{extra}: {error}");
            assert!(error.hint().is_some(), "{extra}: {error}");
        }
    }

    #[test]
    fn secrets_are_read_from_plain_base64_or_key_files() {
        let plain = decode_secret("gEezNJTJyaDoSKCFdf3MPiegeCz4zhMyq/Y5S303DCQ=\n").unwrap();
        assert_eq!(plain.len(), 32);
        let bind = "key \"deploy\" {\n\talgorithm hmac-sha256;\n\tsecret \"gEezNJTJyaDoSKCFdf3MPiegeCz4zhMyq/Y5S303DCQ=\";\n};\n";
        assert_eq!(decode_secret(bind).unwrap(), plain);
        let knot = "# hmac-sha256:deploy:gEezNJTJyaDoSKCFdf3MPiegeCz4zhMyq/Y5S303DCQ=\nkey:\n  - id: deploy\n    algorithm: hmac-sha256\n    secret: gEezNJTJyaDoSKCFdf3MPiegeCz4zhMyq/Y5S303DCQ=\n";
        assert_eq!(decode_secret(knot).unwrap(), plain);
        assert!(decode_secret("not base64!").is_none());
    }
}
