//! Queries to the zone's authoritative server, and to it alone: what it
//! serves before a change (to refuse clobbering someone else's records) and
//! after it (to confirm the change is served). Every query is one message
//! sent by [`exchange`] (a connected UDP socket, so that a closed port
//! fails at once, TCP for truncated answers, or TCP only), so each answer
//! is the server's current one and each wait is `timeoutSeconds` once.

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};

use crate::update::{Endpoint, Failure, exchange};

/// Asks one server, and nothing else.
pub struct Lookup {
    endpoint: Endpoint,
}

impl Lookup {
    /// A lookup that asks only `endpoint`: UDP, and TCP for truncated
    /// answers (or TCP only).
    pub fn new(endpoint: &Endpoint) -> Result<Lookup, Failure> {
        Ok(Lookup {
            endpoint: *endpoint,
        })
    }

    /// The RRset `name`/`ty` as served, TTLs included; empty when there is
    /// none (the name does not exist, or has no records of that type). Names
    /// compare case-insensitively.
    pub async fn rrset(&self, name: &Name, ty: RecordType) -> Result<Vec<Record>, Failure> {
        let mut message = Message::query();
        message.metadata.recursion_desired = false;
        message.add_query(Query::query(name.clone(), ty));
        let bytes = message
            .to_vec()
            .map_err(|e| Failure::Protocol(format!("cannot encode the query: {e}")))?;
        let response = exchange(&self.endpoint, &bytes).await?;
        match response.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            code => return Err(Failure::Rcode(code)),
        }
        let message = response.into_message();
        // NS records below the apex delegate: the server answers with a
        // referral, the records in the authority section. A CNAME at the
        // name comes back for a query of another type; it is filtered out
        // here (the caller asks for CNAMEs separately).
        Ok(message
            .answers
            .iter()
            .chain(message.authorities.iter().filter(|_| ty == RecordType::NS))
            .filter(|r| r.record_type() == ty && &r.name == name)
            .cloned()
            .collect())
    }
}
