//! `record` end to end: the provider binary run as NixOps4 runs it, against
//! real Knot DNS and BIND 9 servers started by the tests, with what they
//! serve checked by `kdig`. Every test runs against both servers.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{ZONE, fqdn, servers, with};
use fedi_protocol::testkit::{Harness, Redactions, assert_generated_in_sync};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;

fn provider() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_fedi-dns-record"))
}

/// A record to write: name, type, values given, what `kdig` shows, the
/// output values.
type Case<'a> = (&'a str, &'a str, Vec<&'a str>, Vec<String>, Vec<String>);

#[test]
fn every_record_type_is_written_and_served() {
    let sshfp = "4 2 ".to_string() + &"ab".repeat(32);
    let tlsa = "3 1 1 ".to_string() + &"0f".repeat(32);
    // (name, type, values given, what kdig shows, output values)
    let cases: Vec<Case> = vec![
        (
            "a",
            "A",
            vec!["192.0.2.2", "192.0.2.1"],
            vec!["192.0.2.1".into(), "192.0.2.2".into()],
            vec!["192.0.2.1".into(), "192.0.2.2".into()],
        ),
        (
            "aaaa",
            "AAAA",
            vec!["2001:DB8:0::1"],
            vec!["2001:db8::1".into()],
            vec!["2001:db8::1".into()],
        ),
        (
            "www",
            "CNAME",
            vec!["Web.Example.Test"],
            vec!["web.example.test.".into()],
            vec!["web.example.test.".into()],
        ),
        (
            "@",
            "TXT",
            vec!["v=spf1 -all", "hello \"world\""],
            vec!["\"hello \\\"world\\\"\"".into(), "\"v=spf1 -all\"".into()],
            vec!["hello \"world\"".into(), "v=spf1 -all".into()],
        ),
        (
            "@",
            "MX",
            // (BIND refuses an MX host inside the zone without an address.)
            vec!["10 mx1.example.net.", "20 MX2.example.net"],
            vec!["10 mx1.example.net.".into(), "20 mx2.example.net.".into()],
            vec!["10 mx1.example.net.".into(), "20 mx2.example.net.".into()],
        ),
        (
            "_matrix._tcp",
            "SRV",
            vec!["10 5 8448 matrix.example.test."],
            vec!["10 5 8448 matrix.example.test.".into()],
            vec!["10 5 8448 matrix.example.test.".into()],
        ),
        (
            "@",
            "CAA",
            vec![
                "0 issue \"letsencrypt.org\"",
                "0 iodef mailto:ops@example.test",
            ],
            vec![
                "0 iodef \"mailto:ops@example.test\"".into(),
                "0 issue \"letsencrypt.org\"".into(),
            ],
            vec![
                "0 iodef \"mailto:ops@example.test\"".into(),
                "0 issue \"letsencrypt.org\"".into(),
            ],
        ),
        (
            "lab",
            "NS",
            vec!["ns1.example.net.", "ns2.example.net."],
            vec!["ns1.example.net.".into(), "ns2.example.net.".into()],
            vec!["ns1.example.net.".into(), "ns2.example.net.".into()],
        ),
        (
            "1.2.0.192",
            "PTR",
            vec!["host.example.test."],
            vec!["host.example.test.".into()],
            vec!["host.example.test.".into()],
        ),
        (
            "_443._tcp.social",
            "TLSA",
            vec![&tlsa],
            vec![tlsa.clone()],
            vec![tlsa.clone()],
        ),
        (
            "ssh",
            "SSHFP",
            vec![&sshfp],
            vec![sshfp.clone()],
            vec![sshfp.clone()],
        ),
    ];
    for server in servers() {
        for (name, ty, values, dug, outputs) in &cases {
            let inputs = server.inputs(name, ty, values);
            let created = provider().create("record", inputs.clone(), false);
            let out = created.outputs();
            assert_eq!(
                out["values"],
                json!(outputs),
                "{} {ty}: {}",
                server.kind.name(),
                created.stderr
            );
            assert_eq!(out["type"], *ty);
            assert_eq!(out["ttl"], 300);
            assert_eq!(out["fqdn"], fqdn(name).trim_end_matches('.'));
            assert_eq!(out["zone"], ZONE);
            // NS records delegate: the server answers them as a referral.
            let seen = if *ty == "NS" {
                let mut lines: Vec<String> = server
                    .kdig(&["+noall", "+authority", &fqdn(name), "NS"])
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
                    .collect();
                lines.sort();
                lines
            } else {
                server
                    .dig(name, ty)
                    .into_iter()
                    .map(|l| l.trim().to_string())
                    .collect()
            };
            let mut expected = dug.clone();
            expected.sort();
            let normalize =
                |v: &[String]| -> Vec<String> { v.iter().map(|s| s.to_uppercase()).collect() };
            assert_eq!(
                normalize(&seen),
                normalize(&expected),
                "{} {ty}",
                server.kind.name()
            );
            let owner_name = match *name {
                "@" => "_fedi-owner".to_string(),
                name => format!("_fedi-owner-{name}"),
            };
            assert!(
                server
                    .dig(&owner_name, "TXT")
                    .contains(&format!("\"fedi-dns-record owner=default type={ty}\"")),
                "{} {ty}: the ownership record",
                server.kind.name()
            );
            // Stateless: create runs again on every deployment; with nothing
            // to change it sends nothing.
            let serial = server.serial();
            let again = provider().create("record", inputs, false).outputs();
            assert_eq!(again, out);
            assert_eq!(
                server.serial(),
                serial,
                "{} {ty}: nothing sent",
                server.kind.name()
            );
        }
    }
}

/// Queries one name and type over UDP, over and over, in a thread, until
/// stopped: what a resolver sees while the provider works.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Vec<usize>>>,
}

impl Sampler {
    /// Samples each of `names` (one query each per round, in order) for
    /// `ty`; a round records the number of answer records per name.
    fn start(port: u16, names: &[&str], ty: RecordType) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let names: Vec<Name> = names
            .iter()
            .map(|n| Name::from_str(&fqdn(n)).unwrap())
            .collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(("127.0.0.1", port)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut rounds = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let round = names
                    .iter()
                    .map(|name| answers(&socket, name, ty))
                    .collect();
                rounds.push(round);
            }
            rounds
        });
        // Make sure it runs before the change starts.
        std::thread::sleep(Duration::from_millis(50));
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<Vec<usize>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The number of answer records the server gives for `name`/`ty`.
fn answers(socket: &UdpSocket, name: &Name, ty: RecordType) -> usize {
    let mut query = Message::query();
    query.add_query(Query::query(name.clone(), ty));
    socket.send(&query.to_vec().unwrap()).unwrap();
    let mut buffer = [0u8; 4096];
    let length = socket.recv(&mut buffer).expect("the server answers");
    let answer = Message::from_vec(&buffer[..length]).unwrap();
    assert!(
        matches!(
            answer.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ),
        "{answer:?}"
    );
    answer.answers.len()
}

#[test]
fn ttl_name_and_type_changes_are_one_update_without_a_gap() {
    for server in servers() {
        let kind = server.kind.name();
        let v1 = server.inputs("www", "A", &["192.0.2.10"]);
        let out1 = provider().create("record", v1.clone(), true).outputs();

        // TTL change: one UPDATE (the serial moves by one), never a moment
        // without an answer.
        let sampler = Sampler::start(server.port, &["www"], RecordType::A);
        let serial = server.serial();
        let v2 = with(&v1, json!({"ttl": 600}));
        let out2 = provider()
            .update("record", v2.clone(), v1.clone(), out1.clone())
            .outputs();
        let rounds = sampler.finish();
        assert_eq!(out2["ttl"], 600);
        assert_eq!(server.ttls("www", "A"), [600], "{kind}");
        assert_eq!(server.serial(), serial + 1, "{kind}: one UPDATE");
        assert!(rounds.len() > 3, "{kind}: sampled {} times", rounds.len());
        assert!(
            rounds.iter().all(|r| r[0] == 1),
            "{kind}: a gap: {rounds:?}"
        );

        // Name change: www disappears as web appears, in the same UPDATE.
        let sampler = Sampler::start(server.port, &["www", "web"], RecordType::A);
        let serial = server.serial();
        let v3 = with(&v2, json!({"name": "web"}));
        let out3 = provider()
            .update("record", v3.clone(), v2.clone(), out2.clone())
            .outputs();
        let rounds = sampler.finish();
        assert_eq!(out3["fqdn"], "web.example.test");
        assert_eq!(server.dig("web", "A"), ["192.0.2.10"], "{kind}");
        assert!(
            server.dig("www", "A").is_empty(),
            "{kind}: the old name is gone"
        );
        assert!(
            server.dig("_fedi-owner-www", "TXT").is_empty(),
            "{kind}: its ownership record too"
        );
        assert_eq!(server.serial(), serial + 1, "{kind}: one UPDATE");
        // www is asked first in each round: once it is gone, web is there.
        assert!(
            rounds.iter().all(|r| r[0] == 1 || r[1] == 1),
            "{kind}: a gap: {rounds:?}"
        );
        assert!(rounds.iter().any(|r| r[0] == 1), "{kind}: sampled before");

        // Type change: the A records become an alias, in one UPDATE; a
        // query for A gets an answer (the A records, then the CNAME) all
        // along.
        server.nsupdate("update add target.example.test. 300 A 192.0.2.99");
        let sampler = Sampler::start(server.port, &["web"], RecordType::A);
        let serial = server.serial();
        let v4 = with(
            &v3,
            json!({"type": "CNAME", "values": ["target.example.test."]}),
        );
        let out4 = provider()
            .update("record", v4.clone(), v3.clone(), out3.clone())
            .outputs();
        let rounds = sampler.finish();
        assert_eq!(out4["values"], json!(["target.example.test."]));
        assert_eq!(
            server.dig("web", "A"),
            ["192.0.2.99", "target.example.test."],
            "{kind}"
        );
        assert_eq!(server.serial(), serial + 1, "{kind}: one UPDATE");
        assert!(
            rounds.iter().all(|r| r[0] >= 1),
            "{kind}: a gap: {rounds:?}"
        );

        // And back to an A record, with new values.
        let v5 = with(&v3, json!({"values": ["192.0.2.11"]}));
        let out5 = provider()
            .update("record", v5.clone(), v4.clone(), out4.clone())
            .outputs();
        assert_eq!(out5["values"], json!(["192.0.2.11"]));
        assert_eq!(server.dig("web", "A"), ["192.0.2.11"], "{kind}");
        assert!(server.dig("web", "CNAME").is_empty(), "{kind}");
    }
}

#[test]
fn records_someone_else_manages_are_never_clobbered_silently() {
    for server in servers() {
        let kind = server.kind.name();
        let serial = server.serial();

        // An A record from the zone file.
        let inputs = server.inputs("legacy", "A", &["192.0.2.20"]);
        let refused = provider().create("record", inputs.clone(), false);
        let message = refused.error_message();
        assert!(
            message.starts_with(
                "record: conflict `name`: `legacy.example.test` already has A records that this \
                 resource did not write: \"198.51.100.1\" (TTL 300)"
            ),
            "{kind}: {message}"
        );
        assert!(message.contains("set `takeOver = true`"), "{message}");
        assert_eq!(
            server.dig("legacy", "A"),
            ["198.51.100.1"],
            "{kind}: untouched"
        );

        // An alias excludes other records at its name.
        let message = provider()
            .create("record", server.inputs("alias", "TXT", &["x"]), false)
            .error_message();
        assert!(
            message.contains(
                "`alias.example.test` is an alias (CNAME to elsewhere.example.net.) that this \
                 resource did not write"
            ),
            "{kind}: {message}"
        );
        assert_eq!(server.serial(), serial, "{kind}: nothing was sent");

        // With takeOver, the records become this resource's.
        let taken = provider()
            .create("record", with(&inputs, json!({"takeOver": true})), false)
            .outputs();
        assert_eq!(taken["values"], json!(["192.0.2.20"]));
        assert_eq!(server.dig("legacy", "A"), ["192.0.2.20"], "{kind}");
        // From now on they are known as ours: new values need no takeOver.
        provider()
            .create(
                "record",
                with(&inputs, json!({"values": ["192.0.2.21"]})),
                false,
            )
            .outputs();
        assert_eq!(server.dig("legacy", "A"), ["192.0.2.21"], "{kind}");

        // Two deployments (owners) on one zone: the second is refused, and
        // told who owns the records.
        let first = with(
            &server.inputs("shared", "A", &["192.0.2.30"]),
            json!({"owner": "blue"}),
        );
        provider().create("record", first, false).outputs();
        let second = with(
            &server.inputs("shared", "A", &["192.0.2.31"]),
            json!({"owner": "green"}),
        );
        let message = provider().create("record", second, false).error_message();
        assert!(
            message.contains("(its ownership record names owner `blue`)"),
            "{kind}: {message}"
        );
        assert_eq!(server.dig("shared", "A"), ["192.0.2.30"], "{kind}");

        // Stateless type change at one name: the owner's CNAME is replaced.
        let alias = server.inputs("flip", "CNAME", &["target.example.net."]);
        provider().create("record", alias, false).outputs();
        provider()
            .create("record", server.inputs("flip", "A", &["192.0.2.40"]), false)
            .outputs();
        assert_eq!(server.dig("flip", "A"), ["192.0.2.40"], "{kind}");
        assert!(server.dig("flip", "CNAME").is_empty(), "{kind}");

        // A wildcard answers for every name below it; that is not a record
        // at the name, so creating one there is no clobbering.
        assert_eq!(server.dig("host.wild", "A"), ["198.51.100.9"]);
        provider()
            .create(
                "record",
                server.inputs("host.wild", "A", &["192.0.2.50"]),
                false,
            )
            .outputs();
        assert_eq!(server.dig("host.wild", "A"), ["192.0.2.50"], "{kind}");
        assert_eq!(server.dig("other.wild", "A"), ["198.51.100.9"], "{kind}");
    }
}

#[test]
fn wrong_key_wrong_zone_and_server_down_are_explained() {
    for server in servers() {
        let kind = server.kind.name();
        let base = server.inputs("www", "A", &["192.0.2.60"]);
        let serial = server.serial();
        let wrong_secret = server.dir.path().join("wrong.secret");
        std::fs::write(
            &wrong_secret,
            "2Md2BTzCuTl78hfe0gsVrpwXq1q0hW8hGr9Ag53EuJg=\n",
        )
        .unwrap();
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cases = [
            (
                json!({"tsig": {"keyName": "deploy", "secret": {"file": wrong_secret}}}),
                "permission denied `tsig.secret`: the server at 127.0.0.1:PORT could not verify \
                 the signature of the UPDATE to zone `example.test` (TSIG BADSIG)",
            ),
            (
                json!({"tsig": {"keyName": "nobody", "secret": {"file": server.deploy_secret_file}}}),
                "permission denied `tsig.keyName`: the server at 127.0.0.1:PORT does not accept \
                 the TSIG key `nobody` for the UPDATE to zone `example.test` (TSIG BADKEY)",
            ),
            (
                json!({"tsig": {"keyName": "deploy", "algorithm": "hmac-sha512", "secret": {"file": server.deploy_secret_file}}}),
                "(TSIG BADKEY)",
            ),
            (
                json!({"tsig": {"keyName": "readonly", "secret": {"file": server.readonly_secret_file}}}),
                "permission denied `tsig.keyName`: the server at 127.0.0.1:PORT ",
            ),
            (
                json!({"tsig": null}),
                "permission denied `tsig`: the server at 127.0.0.1:PORT ",
            ),
            (
                json!({"zone": "other.test", "name": "www"}),
                "invalid input `zone`: the server at 127.0.0.1:PORT refused a query about zone \
                 `other.test` (REFUSED, code 5): it is probably not authoritative for `other.test`",
            ),
            (
                json!({"server": {"address": "127.0.0.1", "port": closed_port}, "transport": "tcp"}),
                "backend unavailable (retryable) `server`: cannot reach 127.0.0.1:CLOSED for a \
                 query about zone `example.test`",
            ),
            (
                json!({"server": {"address": "127.0.0.1", "port": closed_port}, "timeoutSeconds": 1}),
                "backend unavailable (retryable) `server`: cannot reach 127.0.0.1:CLOSED for a \
                 query about zone `example.test`: nothing listens on UDP port CLOSED (ICMP port \
                 unreachable)",
            ),
        ];
        for (extra, expected) in cases {
            let expected = expected
                .replace("PORT", &server.port.to_string())
                .replace("CLOSED", &closed_port.to_string());
            let exchange = provider().create("record", with(&base, extra.clone()), false);
            let message = exchange.error_message();
            assert!(
                message.contains(&expected),
                "{kind}, {extra}:\n{message}\nshould contain:\n{expected}"
            );
            assert!(message.contains("\nhint: "), "{kind}: {message}");
            assert!(!message.contains("truncated HMAC"), "{message}");
        }
        // The readonly key, known but not allowed to update: BIND refuses,
        // Knot answers BADKEY; both say what to allow where.
        let message = provider()
            .create(
                "record",
                with(
                    &base,
                    json!({"tsig": {"keyName": "readonly", "secret": {"file": server.readonly_secret_file}}}),
                ),
                false,
            )
            .error_message();
        match server.kind {
            common::Kind::Bind => assert!(message.contains("(REFUSED, code 5)"), "{message}"),
            common::Kind::Knot => assert!(message.contains("(TSIG BADKEY)"), "{message}"),
        }
        assert!(message.contains("action: update"), "{message}");
        assert_eq!(server.serial(), serial, "{kind}: nothing changed");
        assert!(server.dig("www", "A").is_empty(), "{kind}");
    }
}

#[test]
fn a_txt_record_too_big_for_udp_is_served_over_tcp() {
    // 24 strings of 250 bytes: no UDP answer (even with EDNS) holds it.
    let text: String = (0..24)
        .map(|i| format!("{i:02}").repeat(125))
        .collect::<Vec<_>>()
        .join("");
    for server in servers() {
        let kind = server.kind.name();
        let inputs = with(
            &server.inputs("big", "TXT", &[&text]),
            json!({"transport": "udp"}),
        );
        let out = provider().create("record", inputs.clone(), true).outputs();
        assert_eq!(out["values"], json!([text]), "{kind}");
        // Over UDP the server says the answer is truncated...
        let udp = server.kdig(&["+notcp", "+ignore", "+noedns", &fqdn("big"), "TXT"]);
        assert!(
            udp.contains(" tc"),
            "{kind}: not truncated over UDP:\n{udp}"
        );
        // ...over TCP it is all there, as 255-byte strings.
        let tcp = server.kdig(&["+tcp", "+short", &fqdn("big"), "TXT"]);
        let served: String = tcp
            .split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(served, text, "{kind}");
        // Read sees it whole too.
        let read = provider()
            .read("record", inputs, out.clone())
            .body("xReadResourceResponse");
        assert_eq!(read["drift"], json!([]), "{kind}");
        assert_eq!(read["outputProperties"], out);
    }
}

/// What a [`Relay`] does with the n-th UPDATE datagram (from 0): `true`
/// forwards it, `false` drops it.
type OnUpdate = Box<dyn Fn(usize) -> bool + Send>;

/// A UDP relay in front of a server, which passes queries and hands every
/// UPDATE datagram to a hook (which may drop it, or change the zone before
/// it goes on), and keeps the UPDATE datagrams it saw.
struct Relay {
    port: u16,
    updates: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    fn start(server_port: u16, on_update: OnUpdate) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        back.connect(("127.0.0.1", server_port)).unwrap();
        for socket in [&front, &back] {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
        }
        let port = front.local_addr().unwrap().port();
        let clients: Arc<Mutex<std::collections::HashMap<u16, std::net::SocketAddr>>> =
            Arc::default();
        let updates: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let inbound = {
            let (front, back, clients, updates, stop) = (
                front.clone(),
                back.clone(),
                clients.clone(),
                updates.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut buffer = [0u8; 65535];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, from)) = front.recv_from(&mut buffer) else {
                        continue;
                    };
                    let datagram = &buffer[..length];
                    let id = u16::from_be_bytes([datagram[0], datagram[1]]);
                    let opcode = (datagram[2] >> 3) & 0x0f;
                    if opcode == 5 {
                        let seen = {
                            let mut updates = updates.lock().unwrap();
                            updates.push(datagram.to_vec());
                            updates.len() - 1
                        };
                        if !on_update(seen) {
                            continue; // lost on the way
                        }
                    }
                    clients.lock().unwrap().insert(id, from);
                    back.send(datagram).unwrap();
                }
            })
        };
        let outbound = {
            let (front, back, clients, stop) = (front, back, clients, stop.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 65535];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(length) = back.recv(&mut buffer) else {
                        continue;
                    };
                    let id = u16::from_be_bytes([buffer[0], buffer[1]]);
                    if let Some(client) = clients.lock().unwrap().get(&id) {
                        let _ = front.send_to(&buffer[..length], client);
                    }
                }
            })
        };
        Relay {
            port,
            updates,
            stop,
            threads: vec![inbound, outbound],
        }
    }

    /// Inputs that reach the server through the relay.
    fn inputs(
        &self,
        server: &common::Server,
        name: &str,
        ty: &str,
        values: &[&str],
    ) -> serde_json::Value {
        with(
            &server.inputs(name, ty, values),
            json!({"server": {"address": "127.0.0.1", "port": self.port}}),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_lost_update_datagram_is_resent_with_its_signature() {
    for server in servers() {
        let kind = server.kind.name();
        // The first UPDATE datagram is lost; the rest go through.
        let relay = Relay::start(server.port, Box::new(|n| n > 0));
        let inputs = relay.inputs(&server, "resent", "A", &["192.0.2.70"]);
        let out = provider().create("record", inputs, false).outputs();
        assert_eq!(out["values"], json!(["192.0.2.70"]), "{kind}");
        assert_eq!(server.dig("resent", "A"), ["192.0.2.70"], "{kind}");
        let updates = relay.updates.lock().unwrap().clone();
        // The first was lost; a retransmission got through (a slow answer
        // may cause more).
        assert!(
            updates.len() >= 2,
            "{kind}: {} UPDATE datagrams",
            updates.len()
        );
        assert!(
            updates.iter().all(|u| *u == updates[0]),
            "{kind}: each is the same signed message, byte for byte"
        );
    }
}

#[test]
fn udp_to_a_closed_port_fails_fast_and_silence_takes_timeout_seconds_once() {
    let server = servers().into_iter().next().expect("a DNS server");
    let base = server.inputs("fast", "A", &["192.0.2.80"]);
    // Nothing listens on this loopback UDP port: the kernel answers ICMP
    // port unreachable, which must end the wait at once.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = std::time::Instant::now();
    let message = provider()
        .create(
            "record",
            with(
                &base,
                json!({"server": {"address": "127.0.0.1", "port": closed_port}, "timeoutSeconds": 10}),
            ),
            false,
        )
        .error_message();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a closed UDP port fails fast, not after `timeoutSeconds` (took {took:?}): {message}"
    );
    let expected = format!(
        "backend unavailable (retryable) `server`: cannot reach 127.0.0.1:{closed_port} for a \
         query about zone `example.test`: nothing listens on UDP port {closed_port} (ICMP port \
         unreachable)"
    );
    assert!(
        message.contains(&expected),
        "{message}\nshould contain:\n{expected}"
    );
    assert!(message.contains("\nhint: "), "{message}");

    // A server that takes the datagrams and never answers: one wait of
    // `timeoutSeconds`, and the message says how long it waited.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let message = provider()
        .create(
            "record",
            with(
                &base,
                json!({"server": {"address": "127.0.0.1", "port": silent_port}, "timeoutSeconds": 2}),
            ),
            false,
        )
        .error_message();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "one wait of timeoutSeconds = 2 (took {took:?}): {message}"
    );
    let expected = format!(
        "backend unavailable (retryable) `server`: no answer from 127.0.0.1:{silent_port} to a \
         query about zone `example.test` within 2 s"
    );
    assert!(
        message.contains(&expected),
        "{message}\nshould contain:\n{expected}"
    );
    drop(silent);

    // The UPDATE itself unanswered (the relay passes queries, drops every
    // UPDATE): one wait of `timeoutSeconds` too.
    let relay = Relay::start(server.port, Box::new(|_| false));
    let inputs = with(
        &relay.inputs(&server, "fast", "A", &["192.0.2.80"]),
        json!({"timeoutSeconds": 2}),
    );
    let started = std::time::Instant::now();
    let message = provider().create("record", inputs, false).error_message();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "one wait of timeoutSeconds = 2 for the UPDATE (took {took:?}): {message}"
    );
    assert!(
        message.contains(&format!(
            "no answer from 127.0.0.1:{} to the UPDATE to zone `example.test` within 2 s",
            relay.port
        )),
        "{message}"
    );
    assert!(server.dig("fast", "A").is_empty());
}

#[test]
fn a_change_by_someone_else_while_updating_is_not_overwritten() {
    for server in servers() {
        let kind = server.kind.name();
        let (port, secret) = (server.port, server.deploy_secret.clone());
        // This resource's records, then new values for them; just before
        // the UPDATE reaches the server, someone else changes the records.
        provider()
            .create("record", server.inputs("race", "A", &["192.0.2.1"]), false)
            .outputs();
        let hook_secret = secret.clone();
        let relay = Relay::start(
            server.port,
            Box::new(move |n| {
                if n == 0 {
                    common::knsupdate(
                        port,
                        &hook_secret,
                        "update delete race.example.test. A\nupdate add race.example.test. 300 A 192.0.2.77",
                    );
                }
                true
            }),
        );
        let message = provider()
            .create(
                "record",
                relay.inputs(&server, "race", "A", &["192.0.2.2"]),
                false,
            )
            .error_message();
        assert!(
            message.starts_with(
                "record: conflict: the records changed between reading and replacing them, so \
                 the server did not apply the UPDATE to zone `example.test` (NXRRSET, code 8: a \
                 prerequisite failed)"
            ),
            "{kind}: {message}"
        );
        assert!(message.contains("run the deployment again"), "{message}");
        assert_eq!(
            server.dig("race", "A"),
            ["192.0.2.77"],
            "{kind}: their change stays"
        );
        drop(relay);

        // A name that was free when looked at, taken before the UPDATE.
        let relay = Relay::start(
            server.port,
            Box::new(move |n| {
                if n == 0 {
                    common::knsupdate(
                        port,
                        &secret,
                        "update add race2.example.test. 300 A 192.0.2.78",
                    );
                }
                true
            }),
        );
        let message = provider()
            .create(
                "record",
                relay.inputs(&server, "race2", "A", &["192.0.2.3"]),
                false,
            )
            .error_message();
        assert!(
            message.contains("(YXRRSET, code 7: a prerequisite failed)"),
            "{kind}: {message}"
        );
        assert_eq!(
            server.dig("race2", "A"),
            ["192.0.2.78"],
            "{kind}: their record stays"
        );
    }
}

#[test]
fn lifecycle_with_state_read_drift_and_delete() {
    for server in servers() {
        let kind = server.kind.name();
        let inputs = server.inputs("cycle", "AAAA", &["2001:db8::1", "2001:db8::2"]);
        let created = provider().create("record", inputs.clone(), true).outputs();

        let read = provider()
            .read("record", inputs.clone(), created.clone())
            .body("xReadResourceResponse");
        assert_eq!(read["exists"], true);
        assert_eq!(read["drift"], json!([]), "{kind}");
        assert_eq!(read["outputProperties"], created);

        // Someone changes the records by hand: read reports it.
        server.nsupdate(
            "update delete cycle.example.test. AAAA 2001:db8::2\nupdate add cycle.example.test. 60 AAAA 2001:db8::3",
        );
        let read = provider()
            .read("record", inputs.clone(), created.clone())
            .body("xReadResourceResponse");
        let drift = fedi_protocol::testkit::drift_properties(&read);
        assert_eq!(drift, ["values", "ttl"], "{kind}: {read}");
        assert!(
            read["drift"][0]["message"]
                .as_str()
                .unwrap()
                .contains("\"2001:db8::3\""),
            "{read}"
        );

        // The next update puts back what is declared: these are its records.
        let fixed = provider()
            .update("record", inputs.clone(), inputs.clone(), created.clone())
            .outputs();
        assert_eq!(fixed, created);
        assert_eq!(server.dig("cycle", "AAAA"), ["2001:db8::1", "2001:db8::2"]);

        // Delete, twice: the second finds nothing and succeeds.
        provider()
            .delete("record", inputs.clone(), fixed.clone())
            .body("xDeleteResourceResponse");
        assert!(server.dig("cycle", "AAAA").is_empty(), "{kind}");
        assert!(server.dig("_fedi-owner-cycle", "TXT").is_empty(), "{kind}");
        provider()
            .delete("record", inputs.clone(), fixed.clone())
            .body("xDeleteResourceResponse");
        let read = provider()
            .read("record", inputs.clone(), fixed.clone())
            .body("xReadResourceResponse");
        assert_eq!(read, json!({"exists": false, "drift": []}));

        // Records someone else put there after this resource wrote its own
        // (no ownership record, other values) are not deleted.
        let created = provider().create("record", inputs.clone(), true).outputs();
        server.nsupdate(
            "update delete cycle.example.test. AAAA\nupdate delete _fedi-owner-cycle.example.test. TXT\nupdate add cycle.example.test. 300 AAAA 2001:db8::99",
        );
        let message = provider()
            .delete("record", inputs.clone(), created.clone())
            .error_message();
        assert!(
            message.contains(
                "`cycle.example.test` now holds AAAA records this resource did not write: \
                 \"2001:db8::99\" (TTL 300); they are left untouched"
            ),
            "{kind}: {message}"
        );
        assert_eq!(server.dig("cycle", "AAAA"), ["2001:db8::99"], "{kind}");
    }
}

#[test]
fn moving_to_another_zone_or_server_writes_the_new_records_first() {
    let servers = servers();
    for server in &servers {
        let kind = server.kind.name();
        // Another zone on the same server: one message cannot touch two
        // zones, so the new records are written, then the old removed.
        let old = server.inputs("mover", "A", &["192.0.2.80"]);
        let out = provider().create("record", old.clone(), true).outputs();
        let new = with(&old, json!({"zone": common::SECOND_ZONE, "name": "mover"}));
        let moved = provider()
            .update("record", new.clone(), old.clone(), out.clone())
            .outputs();
        assert_eq!(moved["zone"], common::SECOND_ZONE);
        assert_eq!(moved["fqdn"], format!("mover.{}", common::SECOND_ZONE));
        assert_eq!(
            server.dig(&format!("mover.{}.", common::SECOND_ZONE), "A"),
            ["192.0.2.80"],
            "{kind}"
        );
        assert!(
            server.dig("mover", "A").is_empty(),
            "{kind}: the old record is gone"
        );
        assert!(server.dig("_fedi-owner-mover", "TXT").is_empty(), "{kind}");
    }
    // Another server: from Knot to BIND.
    let (knot, bind) = (&servers[0], &servers[1]);
    let old = knot.inputs("migrant", "A", &["192.0.2.81"]);
    let out = provider().create("record", old.clone(), true).outputs();
    let new = bind.inputs("migrant", "A", &["192.0.2.81"]);
    let moved = provider().update("record", new, old, out).outputs();
    assert_eq!(moved["values"], json!(["192.0.2.81"]));
    assert_eq!(bind.dig("migrant", "A"), ["192.0.2.81"]);
    assert!(
        knot.dig("migrant", "A").is_empty(),
        "removed from the old server"
    );
}

#[test]
fn bad_inputs_are_clear_errors_naming_the_field() {
    let base = json!({
        "server": {"address": "127.0.0.1", "port": 9},
        "zone": ZONE,
        "name": "www",
        "type": "A",
        "values": ["192.0.2.1"],
    });
    let cases = [
        (
            json!({"type": "SOA"}),
            "invalid input `type`: unknown variant `SOA`",
        ),
        (
            json!({"values": ["192.0.2"]}),
            "invalid input `values[0]`: \"192.0.2\" is not an IPv4 address\nhint: an A value is an IPv4 address",
        ),
        (
            json!({"values": []}),
            "invalid input `values`: no values are given",
        ),
        (
            json!({"type": "MX", "values": ["mail.example.test"]}),
            "invalid input `values[0]`: \"mail.example.test\" has 1 field(s), an MX value has 2",
        ),
        (
            json!({"type": "CNAME", "values": ["web"]}),
            "invalid input `values[0]`: \"web\" has a single label",
        ),
        (
            json!({"name": "www.example.test"}),
            "invalid input `name`: `www.example.test` ends with the zone's name but has no trailing dot",
        ),
        (
            json!({"name": "www.example.org."}),
            "invalid input `name`: `www.example.org` is not inside zone `example.test`",
        ),
        (
            json!({"server": {"address": "ns1.example.test"}}),
            "invalid input `server.address`: \"ns1.example.test\" is not an IP address",
        ),
        (
            json!({"tsig": {"keyName": "deploy", "secret": "c2VjcmV0"}}),
            "invalid input `tsig.secret`: a secret is never given literally",
        ),
        (
            json!({"tsig": {"keyName": "deploy", "secret": {"env": "FEDI_TEST_UNSET_TSIG"}}}),
            "invalid input `tsig.secret`: environment variable `FEDI_TEST_UNSET_TSIG` is not set",
        ),
        (
            json!({"tsig": {"keyName": "deploy", "algorithm": "hmac-md5", "secret": {"env": "X"}}}),
            "invalid input `tsig.algorithm`: unknown variant `hmac-md5`",
        ),
        (
            json!({"transport": "quic"}),
            "invalid input `transport`: unknown variant `quic`",
        ),
        (
            json!({"valeus": []}),
            "invalid input `valeus`: unknown field",
        ),
    ];
    for (extra, expected) in cases {
        let message = provider()
            .create("record", with(&base, extra.clone()), false)
            .error_message();
        assert!(
            message.contains(expected),
            "for {extra}:\n{message}\nshould contain: {expected}"
        );
        assert!(!message.contains("c2VjcmV0"), "{message}");
    }
}

#[test]
fn the_tsig_secret_never_reaches_logs_or_errors() {
    for server in servers() {
        let kind = server.kind.name();
        let verbose = provider()
            .env("FEDI_LOG", "trace")
            .env("FEDI_TEST_TSIG", &server.deploy_secret);
        let by_env = with(
            &server.inputs("secret", "TXT", &["hello"]),
            json!({"tsig": {"keyName": "deploy", "secret": {"env": "FEDI_TEST_TSIG"}}}),
        );
        let created = verbose.create("record", by_env.clone(), true);
        let out = created.outputs();
        let updated_inputs = with(&by_env, json!({"values": ["bye"], "name": "secret2"}));
        let updated = verbose.update(
            "record",
            updated_inputs.clone(),
            by_env.clone(),
            out.clone(),
        );
        let read = verbose.read("record", updated_inputs.clone(), updated.outputs());
        // A wrong key and a bad secret: their errors do not show it either.
        let wrong_name = verbose.create(
            "record",
            with(
                &by_env,
                json!({"tsig": {"keyName": "nobody", "secret": {"env": "FEDI_TEST_TSIG"}}}),
            ),
            false,
        );
        let garbage = server.dir.path().join("garbage.secret");
        std::fs::write(&garbage, format!("{}!!\n", server.deploy_secret)).unwrap();
        let bad = verbose.create(
            "record",
            with(
                &by_env,
                json!({"tsig": {"keyName": "deploy", "secret": {"file": garbage}}}),
            ),
            false,
        );
        let deleted = verbose.delete("record", updated_inputs, updated.outputs());
        deleted.body("xDeleteResourceResponse");
        let bytes = data_encoding::BASE64
            .decode(server.deploy_secret.as_bytes())
            .expect("the TSIG secret is base64");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        for exchange in [&created, &updated, &read, &wrong_name, &bad, &deleted] {
            for secret in [server.deploy_secret.as_str(), hex.as_str()] {
                assert!(
                    !exchange.stderr.contains(secret),
                    "{kind}: the secret is on stderr:\n{}",
                    exchange.stderr
                );
                assert!(
                    !exchange.response.to_string().contains(secret),
                    "{kind}: the secret is in a response"
                );
            }
        }
        assert!(
            created.stderr.contains("sending UPDATE"),
            "{kind}: the logs are there: {}",
            created.stderr
        );
        assert!(wrong_name.error_message().contains("BADKEY"));
        assert!(bad.error_message().contains("is not base64"));
    }
}

#[test]
fn transcript() {
    for server in servers() {
        let provider = provider().recording();
        let inputs = server.inputs("social", "A", &["192.0.2.90"]);
        let created = provider.create("record", inputs.clone(), true).outputs();
        let renamed = with(
            &server.inputs("fedi", "A", &["192.0.2.91", "192.0.2.90"]),
            json!({"ttl": 60}),
        );
        let updated = provider
            .update("record", renamed.clone(), inputs, created)
            .outputs();
        provider.read("record", renamed.clone(), updated.clone());
        provider.delete("record", renamed.clone(), updated.clone());
        provider.delete("record", renamed.clone(), updated.clone());
        provider.create(
            "record",
            server.inputs("legacy", "A", &["192.0.2.92"]),
            true,
        );
        provider.create("record", server.inputs("www", "MX", &["10"]), true);
        let redactions = Redactions::new()
            .path(server.dir.path(), "[TMP]")
            .text(format!("127.0.0.1:{}", server.port), "[server]");
        let text = provider.transcript().to_jsonl(&redactions);
        let text = text.replace(&format!("\"port\":{}", server.port), "\"port\":\"[port]\"");
        // Both servers behave the same: one snapshot for both.
        insta::assert_snapshot!("transcript", text);
    }
}

#[test]
fn generated_nix_module_and_reference_are_in_sync() {
    assert_generated_in_sync(
        env!("CARGO_BIN_EXE_fedi-dns-record"),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    );
}
