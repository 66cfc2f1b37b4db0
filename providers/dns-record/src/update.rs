//! RFC 2136 dynamic updates: building one UPDATE message (prerequisites,
//! deletions and additions that the server applies all or nothing), signing
//! it with TSIG, sending it, and checking the answer.
//!
//! The message is signed once, here, before it is sent; the transport only
//! carries bytes. So every UDP retransmission and the TCP retry after a
//! truncated UDP answer send the very same signed message (a signer inside
//! the transport would have to sign each attempt; some clients lose the
//! signature there). The answer's signature is checked here too, after
//! looking at the TSIG error the server put in it: a server that could not
//! verify our signature answers unsigned, with BADSIG, BADKEY or BADTIME.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedi_protocol::schemars::{self, JsonSchema};
use futures_util::StreamExt;
use hickory_net::DnsStreamHandle;
use hickory_net::NetError;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_proto::op::{
    DnsResponse, Message, OpCode, Query, ResponseCode, SerialMessage, UpdateMessage,
};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use serde::{Deserialize, Serialize};

/// Messages up to this size go over UDP when the transport is UDP; larger
/// ones over TCP, as `nsupdate` does.
const MAX_UDP_REQUEST: usize = 512;

/// How far apart the server's clock and ours may be (seconds), the usual
/// TSIG fudge.
const FUDGE: u16 = 300;

/// How messages reach the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP, switching to TCP for messages over 512 bytes and for answers
    /// that come back truncated (e.g. a large TXT record set).
    #[default]
    Udp,
    /// TCP only.
    Tcp,
}

/// Where the zone's primary server is and how to talk to it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Address and port.
    pub address: SocketAddr,
    /// UDP (with TCP when needed) or TCP.
    pub transport: Transport,
    /// How long to wait for each answer.
    pub timeout: Duration,
}

/// A TSIG key: its name and a signer holding its secret.
#[derive(Clone)]
pub struct Key {
    /// The key's name, as the server knows it.
    pub name: Name,
    signer: TSigner,
    /// The secret as it was read (base64 text), to scrub it from any text
    /// that goes into an error.
    text: Option<std::sync::Arc<fedi_protocol::SecretString>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl Key {
    /// A key from its parts; the error says what is wrong, never the secret.
    pub fn new(name: Name, algorithm: TsigAlgorithm, secret: Vec<u8>) -> Result<Key, String> {
        let signer = TSigner::new(secret, algorithm, name.clone(), FUDGE)
            .map_err(|e| format!("cannot use the key: {e}"))?;
        Ok(Key {
            name,
            signer,
            text: None,
        })
    }

    /// Remembers the secret as it was read, so that [`Key::secret_text`]
    /// can scrub it from error texts.
    pub fn with_text(mut self, text: fedi_protocol::SecretString) -> Key {
        self.text = Some(std::sync::Arc::new(text));
        self
    }

    /// The secret as it was read, if known.
    pub fn secret_text(&self) -> Option<&fedi_protocol::SecretString> {
        self.text.as_deref()
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The server answered with this error code.
    Rcode(ResponseCode),
    /// The server could not authenticate our message and said why (the
    /// TSIG error of its unsigned answer).
    Tsig(TsigError),
    /// The answer does not carry a valid signature of our key.
    Unauthenticated(String),
    /// No answer in time.
    Timeout,
    /// Connecting, sending or receiving failed.
    Network(String),
    /// The answer could not be understood, or the message not built.
    Protocol(String),
}

impl Failure {
    /// Classifies a hickory error.
    pub fn from_net(error: NetError) -> Failure {
        // hickory says "... truncated HMACs ..." when it checks an answer's
        // TSIG and finds no MAC: the server did not accept our signature
        // (wrong secret or algorithm), not a truncation.
        if error.to_string().contains("truncated HMAC") {
            return Failure::Unauthenticated(
                "the server's answer carries no signature: it did not accept ours".into(),
            );
        }
        match error {
            NetError::Timeout => Failure::Timeout,
            NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Failure::Timeout,
            NetError::Io(io) => Failure::Network(io.to_string()),
            NetError::Proto(proto) => Failure::Protocol(proto.to_string()),
            NetError::Dns(hickory_net::DnsError::ResponseCode(code)) => Failure::Rcode(code),
            other => Failure::Network(other.to_string()),
        }
    }
}

/// One UPDATE message for a zone, built up section by section.
#[derive(Debug, Clone)]
pub struct Update {
    message: Message,
}

impl Update {
    /// An empty UPDATE for `zone`.
    pub fn new(zone: &Name) -> Update {
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut section = Query::new();
        section
            .set_name(zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        message.add_zone(section);
        Update { message }
    }

    /// Prerequisite: no RRset `name`/`ty` exists (RFC 2136 2.4.3).
    pub fn require_absent(&mut self, name: &Name, ty: RecordType) -> &mut Update {
        let mut record = Record::update0(name.clone(), 0, ty);
        record.dns_class = DNSClass::NONE;
        self.message.add_pre_requisite(record);
        self
    }

    /// Prerequisite: an RRset `name`/`ty` exists, whatever it holds (RFC
    /// 2136 2.4.1).
    pub fn require_exists(&mut self, name: &Name, ty: RecordType) -> &mut Update {
        let mut record = Record::update0(name.clone(), 0, ty);
        record.dns_class = DNSClass::ANY;
        self.message.add_pre_requisite(record);
        self
    }

    /// Prerequisite: the RRset of these records holds exactly them (RFC 2136
    /// 2.4.2); `records` as served, all of one name and type.
    pub fn require_exactly(&mut self, records: &[Record]) -> &mut Update {
        for record in records {
            let mut record = record.clone();
            record.ttl = 0;
            record.dns_class = DNSClass::IN;
            self.message.add_pre_requisite(record);
        }
        self
    }

    /// Deletes the RRset `name`/`ty`, if any (RFC 2136 2.5.2).
    pub fn delete_rrset(&mut self, name: &Name, ty: RecordType) -> &mut Update {
        let mut record = Record::update0(name.clone(), 0, ty);
        record.dns_class = DNSClass::ANY;
        self.message.add_update(record);
        self
    }

    /// Deletes one record, if it is there (RFC 2136 2.5.4).
    pub fn delete_record(&mut self, name: &Name, data: RData) -> &mut Update {
        let mut record = Record::from_rdata(name.clone(), 0, data);
        record.dns_class = DNSClass::NONE;
        self.message.add_update(record);
        self
    }

    /// Adds one record (RFC 2136 2.5.1).
    pub fn add(&mut self, name: &Name, ttl: u32, data: RData) -> &mut Update {
        self.message
            .add_update(Record::from_rdata(name.clone(), ttl, data));
        self
    }

    /// Whether the message changes anything (it may hold prerequisites only).
    pub fn changes_something(&self) -> bool {
        !self.message.updates().is_empty()
    }

    /// Signs the message with `key` (if any), sends it to `endpoint`, and
    /// checks the answer: `Ok` only for a NOERROR answer signed with our key.
    pub async fn send(self, endpoint: &Endpoint, key: Option<&Key>) -> Result<(), Failure> {
        let mut message = self.message;
        let verifier = match key {
            Some(key) => message
                .finalize(&key.signer, unix_now())
                .map_err(|e| Failure::Protocol(format!("cannot sign the message: {e}")))?,
            None => None,
        };
        let bytes = message
            .to_vec()
            .map_err(|e| Failure::Protocol(format!("cannot encode the message: {e}")))?;
        tracing::debug!(
            server = %endpoint.address,
            bytes = bytes.len(),
            prerequisites = message.prerequisites().len(),
            updates = message.updates().len(),
            signed = key.is_some(),
            "sending UPDATE"
        );
        let response = exchange(endpoint, &bytes).await?;
        // The verifier's type is not public in hickory; hand over a closure.
        let verify = |answer: &[u8]| match verifier {
            Some(mut verifier) => verifier.verify(answer).is_ok(),
            None => true,
        };
        check(&response, key, verify)
    }
}

/// Seconds since the epoch, for the TSIG time.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends a message (already encoded, and signed if it is to be) and returns
/// the answer: over UDP when the transport is UDP and the message fits,
/// again over TCP when the UDP answer comes back truncated; otherwise over
/// TCP. Each transport waits at most `endpoint.timeout` once.
pub async fn exchange(endpoint: &Endpoint, bytes: &[u8]) -> Result<DnsResponse, Failure> {
    if endpoint.transport == Transport::Udp && bytes.len() <= MAX_UDP_REQUEST {
        let response = udp(endpoint, bytes).await?;
        if !response.truncation {
            return Ok(response);
        }
        tracing::debug!("the UDP answer is truncated; sending the same message over TCP");
    }
    tcp(endpoint, bytes).await
}

/// Sends the datagram on a *connected* UDP socket, so that an ICMP "port
/// unreachable" from the server's host ends the wait at once
/// (`ECONNREFUSED` on the socket) instead of being ignored; resends the same
/// bytes after 1 s, 2 s, 4 s ... until an answer with our message id comes
/// or `endpoint.timeout` has passed (once, in all).
async fn udp(endpoint: &Endpoint, bytes: &[u8]) -> Result<DnsResponse, Failure> {
    let started = tokio::time::Instant::now();
    let deadline = started + endpoint.timeout;
    let server = endpoint.address;
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| Failure::Network(format!("cannot open a UDP socket: {e}")))?;
    socket
        .connect(server)
        .await
        .map_err(|e| udp_error(server, e))?;
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let mut resend_after = Duration::from_secs(1);
    let mut buffer = vec![0u8; 65535];
    loop {
        socket.send(bytes).await.map_err(|e| udp_error(server, e))?;
        let resend_at = (tokio::time::Instant::now() + resend_after).min(deadline);
        resend_after *= 2;
        loop {
            match tokio::time::timeout_at(resend_at, socket.recv(&mut buffer)).await {
                Err(_) if resend_at >= deadline => return Err(Failure::Timeout),
                Err(_) => {
                    tracing::debug!(server = %server, "no answer yet; sending the same datagram again");
                    break;
                }
                Ok(Err(e)) => return Err(udp_error(server, e)),
                Ok(Ok(length)) => {
                    let answer = &buffer[..length];
                    if answer.len() >= 2 && u16::from_be_bytes([answer[0], answer[1]]) == id {
                        return DnsResponse::from_buffer(answer.to_vec())
                            .map_err(|e| Failure::Protocol(e.to_string()));
                    }
                    tracing::debug!("ignoring a UDP datagram with another id");
                }
            }
        }
    }
}

fn udp_error(server: SocketAddr, error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::ConnectionRefused {
        Failure::Network(format!(
            "nothing listens on UDP port {} (ICMP port unreachable)",
            server.port()
        ))
    } else {
        Failure::Network(format!("UDP to {server}: {error}"))
    }
}

/// Sends the signed bytes over a new TCP connection and reads the answer.
async fn tcp(endpoint: &Endpoint, bytes: &[u8]) -> Result<DnsResponse, Failure> {
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let exchange = async {
        let (connect, mut handle) = TcpClientStream::new(
            endpoint.address,
            None,
            Some(endpoint.timeout),
            TokioRuntimeProvider::default(),
        );
        let mut stream = connect.await.map_err(Failure::from_net)?;
        handle
            .send(SerialMessage::new(bytes.to_vec(), endpoint.address))
            .map_err(Failure::from_net)?;
        loop {
            match stream.next().await {
                Some(Ok(answer)) => {
                    let (buffer, _) = answer.into_parts();
                    if buffer.len() >= 2 && u16::from_be_bytes([buffer[0], buffer[1]]) == id {
                        return DnsResponse::from_buffer(buffer)
                            .map_err(|e| Failure::Protocol(e.to_string()));
                    }
                    tracing::debug!("ignoring a TCP message with another id");
                }
                Some(Err(e)) => return Err(Failure::from_net(e)),
                None => {
                    return Err(Failure::Network(
                        "the server closed the TCP connection without answering".into(),
                    ));
                }
            }
        }
    };
    tokio::time::timeout(endpoint.timeout, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// Checks the answer: the server's TSIG error first (it answers unsigned
/// when it could not verify us), then our key's signature on the answer,
/// then the response code.
fn check(
    response: &DnsResponse,
    key: Option<&Key>,
    verify: impl FnOnce(&[u8]) -> bool,
) -> Result<(), Failure> {
    let code = response.response_code;
    if key.is_some() {
        match response.signature() {
            Some(tsig) => {
                if let Some(error) = tsig.data.error {
                    return Err(Failure::Tsig(error));
                }
                // Any failure here means the answer is not from someone
                // holding our key; hickory's own words for it can mislead.
                if !verify(response.as_buffer()) {
                    return Err(Failure::Unauthenticated(
                        "the answer's signature does not verify with our key".into(),
                    ));
                }
            }
            None if code != ResponseCode::NoError => return Err(Failure::Rcode(code)),
            None => {
                return Err(Failure::Unauthenticated(
                    "the server answered without signing its answer".into(),
                ));
            }
        }
    }
    if code == ResponseCode::NoError {
        Ok(())
    } else {
        Err(Failure::Rcode(code))
    }
}

/// The TSIG algorithms a key may have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Algorithm {
    /// HMAC-SHA256: what `tsig-keygen` and `keymgr -t` make by default.
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// HMAC-SHA384.
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    /// HMAC-SHA512.
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl Algorithm {
    /// hickory's name for it.
    pub fn tsig(self) -> TsigAlgorithm {
        match self {
            Algorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            Algorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            Algorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;

    #[test]
    fn one_message_holds_prerequisites_deletions_and_additions_in_order() {
        let zone = Name::from_ascii("example.org.").unwrap();
        let name = Name::from_ascii("www.example.org.").unwrap();
        let mut update = Update::new(&zone);
        assert!(!update.changes_something());
        update
            .require_absent(&name, RecordType::A)
            .delete_rrset(&name, RecordType::A)
            .add(&name, 300, RData::A(A::new(192, 0, 2, 1)));
        assert!(update.changes_something());
        let message = update.message;
        assert_eq!(message.op_code, OpCode::Update);
        assert_eq!(message.zones()[0].name(), &zone);
        assert_eq!(message.prerequisites()[0].dns_class, DNSClass::NONE);
        let updates = message.updates();
        assert_eq!(updates[0].dns_class, DNSClass::ANY);
        assert_eq!(updates[1].dns_class, DNSClass::IN);
        assert_eq!(updates[1].ttl, 300);
    }

    #[test]
    fn a_signed_message_verifies_with_the_same_key_only() {
        let name = Name::from_ascii("deploy.").unwrap();
        let key = Key::new(
            name.clone(),
            TsigAlgorithm::HmacSha256,
            b"0123456789abcdef".to_vec(),
        )
        .unwrap();
        let other = Key::new(
            name,
            TsigAlgorithm::HmacSha256,
            b"fedcba9876543210".to_vec(),
        )
        .unwrap();
        let mut message = Update::new(&Name::from_ascii("example.org.").unwrap()).message;
        message.finalize(&key.signer, unix_now()).unwrap();
        let bytes = message.to_vec().unwrap();
        assert!(key.signer.verify_message_byte(&bytes, None, true).is_ok());
        assert!(
            other
                .signer
                .verify_message_byte(&bytes, None, true)
                .is_err()
        );
        assert!(!format!("{key:?}").contains("0123456789abcdef"));
    }
}
