//! `fedi-dns-record`: the NixOps4 resource provider for DNS records on a
//! zone's authoritative server, by RFC 2136 dynamic updates signed with
//! TSIG.
//!
//! Resource types:
//! - [`record`]: one record set (name and type), replaced atomically.
//!
//! Modules: [`values`] (record types and their values), [`update`]
//! (building, signing and sending UPDATE messages), [`query`] (asking the
//! server what it serves), [`rcode`] (what a failure means for the user).

mod query;
mod rcode;
mod record;
mod update;
mod values;

fn main() -> std::process::ExitCode {
    fedi_protocol::provider!(
        "dns-record",
        "DNS records on the hosting provider's authoritative DNS server, written by RFC 2136 \
         dynamic updates signed with TSIG (BIND, Knot DNS, PowerDNS and others accept them): \
         each change one atomic update, confirmed by querying the server, never clobbering \
         records it did not write."
    )
    .resource(record::DnsRecord)
    .run()
}
