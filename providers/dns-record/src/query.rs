//! Queries to the zone's authoritative server, with `hickory-resolver`
//! pointed at that server alone: what it serves before a change (to refuse
//! clobbering someone else's records) and after it (to confirm the change
//! is served). The cache is emptied before every query, so each answer is
//! the server's current one.

use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::{DnsError, NetError};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};

use crate::update::{Endpoint, Failure, Transport};

/// Asks one server, and nothing else.
pub struct Lookup {
    resolver: Resolver<TokioRuntimeProvider>,
}

impl Lookup {
    /// A resolver that asks only `endpoint`: UDP, and TCP for truncated
    /// answers (or TCP only).
    pub fn new(endpoint: &Endpoint) -> Result<Lookup, Failure> {
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = endpoint.address.port();
        let connections = match endpoint.transport {
            Transport::Udp => {
                let mut udp = ConnectionConfig::udp();
                udp.port = endpoint.address.port();
                vec![udp, tcp]
            }
            Transport::Tcp => vec![tcp],
        };
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            endpoint.address.ip(),
            true,
            connections,
        )]);
        let mut options = ResolverOpts::default();
        options.timeout = endpoint.timeout;
        options.attempts = 1;
        options.recursion_desired = false;
        options.use_hosts_file = ResolveHosts::Never;
        options.num_concurrent_reqs = 1;
        let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(Failure::from_net)?;
        Ok(Lookup { resolver })
    }

    /// The RRset `name`/`ty` as served, TTLs included; empty when there is
    /// none (the name does not exist, or has no records of that type). Names
    /// compare case-insensitively.
    pub async fn rrset(&self, name: &Name, ty: RecordType) -> Result<Vec<Record>, Failure> {
        self.resolver.clear_cache();
        match self.resolver.lookup(name.clone(), ty).await {
            // NS records below the apex delegate: the server answers with a
            // referral, the records in the authority section.
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .chain(lookup.authorities().iter().filter(|_| ty == RecordType::NS))
                .filter(|r| r.record_type() == ty && &r.name == name)
                .cloned()
                .collect()),
            Err(NetError::Dns(DnsError::NoRecordsFound(none)))
                if matches!(
                    none.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                Ok(Vec::new())
            }
            Err(error) => Err(Failure::from_net(error)),
        }
    }
}
