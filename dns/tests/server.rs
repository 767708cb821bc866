//! A real server on 127.0.0.1 asked over real UDP and TCP sockets: answers, negative answers,
//! case, EDNS, truncation, live updates, forwarding to a loopback upstream (a second server)
//! and malformed packets. Record data uses the benchmark range 198.18.0.0/15; no traffic goes
//! anywhere but loopback.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use atoll_dns::records::{Change, Name, Record, RecordData};
use atoll_dns::server::{ServerConfig, Zone, ZoneConfig};
use common::{TestServer, WAIT, query, tcp_exchange, udp_exchange, udp_raw};
use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

fn a(name: &str, ip: Ipv4Addr) -> Record {
    Record { name: Name::new(name), data: RecordData::A(ip) }
}

fn mesos_zone() -> Zone {
    let mut changes = vec![
        Change::Add(a("web.marathon.mesos", Ipv4Addr::new(198, 18, 0, 1))),
        Change::Add(a("web.marathon.mesos", Ipv4Addr::new(198, 18, 0, 2))),
        Change::Add(a("web-x1-0.marathon.mesos", Ipv4Addr::new(198, 18, 0, 1))),
        Change::Add(Record {
            name: Name::new("_web._tcp.marathon.mesos"),
            data: RecordData::Srv { priority: 0, weight: 1, port: 8080, target: Name::new("web-x1-0.marathon.mesos") },
        }),
    ];
    for i in 0..40 {
        changes.push(Change::Add(a("forty.marathon.mesos", Ipv4Addr::new(198, 18, 1, i))));
    }
    for i in 0..100 {
        changes.push(Change::Add(a("hundred.marathon.mesos", Ipv4Addr::new(198, 18, 2, i))));
    }
    let zone = Zone::new();
    zone.apply(&changes, 7);
    zone
}

fn mesos_config() -> ServerConfig {
    ServerConfig { zones: vec![ZoneConfig::new("mesos.")], ..ServerConfig::default() }
}

fn addresses(message: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn soa_serial(message: &Message) -> Option<u32> {
    message.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

#[tokio::test]
async fn answers_over_udp_and_tcp_with_negative_answers_and_any_case() {
    let server = TestServer::start(mesos_config(), mesos_zone()).await;
    let want = vec![Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)];

    let packet = query(1, "web.marathon.mesos.", RecordType::A, None);
    let (udp, _) = udp_exchange(server.addr, &packet).await;
    let tcp = tcp_exchange(server.addr, &packet).await;
    for message in [&udp, &tcp] {
        assert_eq!(message.metadata.message_type, MessageType::Response);
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.metadata.authoritative);
        assert!(!message.metadata.recursion_available, "no forwarding configured");
        assert!(message.metadata.recursion_desired, "RD is copied from the query");
        assert_eq!(addresses(message), want);
    }

    let (mixed, _) = udp_exchange(server.addr, &query(2, "WeB.MaRaThOn.MESOS.", RecordType::A, None)).await;
    assert_eq!(mixed.queries[0].name.to_ascii(), "WeB.MaRaThOn.MESOS.", "the question is echoed as asked");
    assert_eq!(addresses(&mixed), want);
    assert!(mixed.answers.iter().all(|r| r.name.to_ascii() == "web.marathon.mesos."));

    let (nxdomain, _) = udp_exchange(server.addr, &query(3, "nope.marathon.mesos.", RecordType::A, None)).await;
    assert_eq!(nxdomain.metadata.response_code, ResponseCode::NXDomain);
    assert!(nxdomain.metadata.authoritative && nxdomain.answers.is_empty());
    assert_eq!(soa_serial(&nxdomain), Some(7), "SOA with the zone's serial in authority");

    let nodata = tcp_exchange(server.addr, &query(4, "web.marathon.mesos.", RecordType::AAAA, None)).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(soa_serial(&nodata), Some(7));

    let (srv, _) = udp_exchange(server.addr, &query(5, "_web._tcp.marathon.mesos.", RecordType::SRV, None)).await;
    assert_eq!(srv.answers.len(), 1);
    assert_eq!(srv.additionals.len(), 1, "the target's address rides along");
    server.stop().await;
}

#[tokio::test]
async fn edns_is_echoed() {
    let server = TestServer::start(mesos_config(), mesos_zone()).await;
    let mut message = Message::from_vec(&query(1, "web.marathon.mesos.", RecordType::A, Some(4096))).unwrap();
    message.edns.as_mut().unwrap().set_dnssec_ok(true);
    let (response, _) = udp_exchange(server.addr, &message.to_vec().unwrap()).await;
    let edns: &Edns = response.edns.as_ref().expect("an OPT record answers an OPT record");
    assert_eq!(edns.version(), 0);
    assert!(edns.flags().dnssec_ok, "DO is copied (RFC 3225)");
    let (plain, _) = udp_exchange(server.addr, &query(2, "web.marathon.mesos.", RecordType::A, None)).await;
    assert!(plain.edns.is_none(), "no OPT without one in the query");
    server.stop().await;
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let server = TestServer::start(mesos_config(), mesos_zone()).await;

    let forty = query(1, "forty.marathon.mesos.", RecordType::A, None);
    let (udp, len) = udp_exchange(server.addr, &forty).await;
    assert!(len <= 512, "a {len}-byte UDP response without EDNS");
    assert!(udp.metadata.truncation, "TC over UDP");
    assert!(udp.answers.len() < 40);
    let tcp = tcp_exchange(server.addr, &forty).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 40);

    // The client's EDNS size lifts the limit...
    let (edns, len) = udp_exchange(server.addr, &query(2, "forty.marathon.mesos.", RecordType::A, Some(1232))).await;
    assert!(len > 512 && !edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 40);

    // ...up to the server's own ceiling, and TC keeps the OPT.
    let hundred = query(3, "hundred.marathon.mesos.", RecordType::A, Some(4096));
    let (udp, len) = udp_exchange(server.addr, &hundred).await;
    assert!(len <= 1232, "a {len}-byte UDP response");
    assert!(udp.metadata.truncation && udp.edns.is_some());
    let tcp = tcp_exchange(server.addr, &hundred).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn changes_applied_to_the_zone_answer_the_next_query() {
    let zone = mesos_zone();
    let server = TestServer::start(mesos_config(), zone.clone()).await;
    let new = a("new.marathon.mesos", Ipv4Addr::new(198, 18, 3, 1));
    let ask = |id| query(id, "new.marathon.mesos.", RecordType::A, None);

    let (before, _) = udp_exchange(server.addr, &ask(1)).await;
    assert_eq!(before.metadata.response_code, ResponseCode::NXDomain);

    zone.apply(&[Change::Add(new.clone())], 8);
    let (added, _) = udp_exchange(server.addr, &ask(2)).await;
    assert_eq!(addresses(&added), [Ipv4Addr::new(198, 18, 3, 1)]);

    zone.apply(&[Change::Remove(new)], 9);
    let (removed, _) = udp_exchange(server.addr, &ask(3)).await;
    assert_eq!(removed.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(soa_serial(&removed), Some(9));
    server.stop().await;
}

#[tokio::test]
async fn names_outside_the_zones_are_forwarded_only_for_allowed_clients() {
    // The upstream: a second instance, authoritative for its own zone, forwarding nothing.
    let upstream_zone = Zone::new();
    upstream_zone.apply(&[Change::Add(a("web.upstream.test", Ipv4Addr::new(198, 18, 4, 1)))], 1);
    let upstream_config = ServerConfig { zones: vec![ZoneConfig::new("upstream.test.")], ..ServerConfig::default() };
    let upstream = TestServer::start(upstream_config, upstream_zone).await;

    let forwarding = ServerConfig { forward: Some(vec![upstream.addr]), ..mesos_config() };
    let server = TestServer::start(forwarding.clone(), mesos_zone()).await;
    let outside = query(1, "web.upstream.test.", RecordType::A, None);
    let (udp, _) = udp_exchange(server.addr, &outside).await;
    let tcp = tcp_exchange(server.addr, &outside).await;
    for message in [&udp, &tcp] {
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.metadata.recursion_available && !message.metadata.authoritative);
        assert_eq!(addresses(message), [Ipv4Addr::new(198, 18, 4, 1)]);
    }
    let (missing, _) = udp_exchange(server.addr, &query(2, "missing.upstream.test.", RecordType::A, None)).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let (inside, _) = udp_exchange(server.addr, &query(3, "web.marathon.mesos.", RecordType::A, None)).await;
    assert!(inside.metadata.authoritative && inside.metadata.recursion_available);

    // Forwarding off: refused.
    let closed = TestServer::start(mesos_config(), mesos_zone()).await;
    // Forwarding on, but loopback is not among the allowed clients: refused.
    let not_allowed = ServerConfig { recursion_allowed: vec!["198.18.0.0/16".parse().unwrap()], ..forwarding };
    let guarded = TestServer::start(not_allowed, mesos_zone()).await;
    for addr in [closed.addr, guarded.addr] {
        let (refused, _) = udp_exchange(addr, &outside).await;
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert!(!refused.metadata.recursion_available && refused.answers.is_empty());
    }
    for server in [server, closed, guarded, upstream] {
        server.stop().await;
    }
}

/// How long to wait for an answer that should not come: not a timing assertion, just how long
/// the test listens before concluding the packet was dropped.
const SILENCE: Duration = Duration::from_millis(300);

async fn formerr_or_nothing(server: SocketAddr, packet: &[u8], what: &str) {
    if let Some(bytes) = udp_raw(server, packet, SILENCE).await {
        let response = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("{what}: unparsable response: {e}"));
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr, "{what}");
    }
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_nothing_and_the_server_keeps_answering() {
    let server = TestServer::start(mesos_config(), mesos_zone()).await;
    let valid = query(0x1234, "web.marathon.mesos.", RecordType::A, None);

    formerr_or_nothing(server.addr, &[], "empty").await;
    formerr_or_nothing(server.addr, &valid[..5], "a truncated header").await;
    formerr_or_nothing(server.addr, &valid[..valid.len() - 3], "a truncated question").await;
    let mut bogus_counts = valid[..12].to_vec();
    bogus_counts[4..6].copy_from_slice(&5u16.to_be_bytes());
    let reply = udp_raw(server.addr, &bogus_counts, WAIT).await.expect("a header that parses gets an answer");
    assert_eq!(Message::from_vec(&reply).unwrap().metadata.response_code, ResponseCode::FormErr);
    let mut many_answers = valid.clone();
    many_answers[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
    formerr_or_nothing(server.addr, &many_answers, "65535 answers announced, none sent").await;
    let mut pointer_loop = valid[..12].to_vec();
    pointer_loop.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    formerr_or_nothing(server.addr, &pointer_loop, "a compression pointer to itself").await;
    let mut response_bit = valid.clone();
    response_bit[2] |= 0x80;
    assert!(udp_raw(server.addr, &response_bit, SILENCE).await.is_none(), "responses are never answered");

    // A burst of random datagrams, then a valid query on the same socket.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = StdRng::seed_from_u64(0xd15);
    for _ in 0..300 {
        let len = rng.random_range(0..600);
        let packet: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        socket.send_to(&packet, server.addr).await.unwrap();
    }
    socket.send_to(&valid, server.addr).await.unwrap();
    let mut buffer = vec![0u8; 65535];
    let answered = timeout(WAIT * 2, async {
        // Random datagrams that happen to parse may be answered first: at most one each.
        for _ in 0..=300 {
            let (len, _) = socket.recv_from(&mut buffer).await.unwrap();
            if let Ok(message) = Message::from_vec(&buffer[..len])
                && message.metadata.id == 0x1234
                && message.metadata.response_code == ResponseCode::NoError
            {
                return message;
            }
        }
        panic!("no answer to the valid query");
    })
    .await
    .expect("the server stopped answering after random datagrams");
    assert_eq!(addresses(&answered).len(), 2);

    // TCP: garbage in a frame, and a frame cut short, then a clean connection still works.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage.write_all(&[0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    let mut sink = Vec::new();
    let _ = timeout(SILENCE, garbage.read_to_end(&mut sink)).await;
    let mut cut = TcpStream::connect(server.addr).await.unwrap();
    cut.write_all(&[0, 200, 1, 2, 3]).await.unwrap();
    drop(cut);
    assert_eq!(addresses(&tcp_exchange(server.addr, &valid).await).len(), 2);
    let (after, _) = udp_exchange(server.addr, &valid).await;
    assert_eq!(addresses(&after).len(), 2);
    server.stop().await;
}
