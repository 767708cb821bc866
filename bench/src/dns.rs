//! A minimal DNS client for the DNS benchmarks: one UDP socket on loopback, queries built and
//! answers parsed with hickory-proto. Every wait is bounded by the caller's timeout.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

/// A query for `name` (fully qualified) and `qtype`, without EDNS, as dnsperf sends it.
pub fn query_packet(id: u16, name: &str, qtype: RecordType) -> anyhow::Result<Vec<u8>> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).with_context(|| format!("query name {name}"))?;
    message.add_query(Query::query(name, qtype));
    Ok(message.to_vec()?)
}

/// A UDP socket on 127.0.0.1 talking to one server.
pub struct UdpClient {
    socket: UdpSocket,
    next_id: u16,
    buffer: Vec<u8>,
}

impl UdpClient {
    pub async fn connect(server: SocketAddr) -> anyhow::Result<UdpClient> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.context("bind a client socket on 127.0.0.1")?;
        socket.connect(server).await.with_context(|| format!("connect to {server}"))?;
        Ok(UdpClient { socket, next_id: 1, buffer: vec![0; 65_535] })
    }

    /// One query and its response; `None` when no response with the query's id came within
    /// `wait` (stale responses to earlier, timed-out queries are skipped) or nothing listens
    /// on the server's port yet.
    pub async fn ask(&mut self, name: &str, qtype: RecordType, wait: Duration) -> anyhow::Result<Option<Message>> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let packet = query_packet(id, name, qtype)?;
        match self.socket.send(&packet).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(None),
            sent => sent.context("send a query")?,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut self.buffer)).await;
            let len = match received {
                Err(_elapsed) => return Ok(None),
                Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return Ok(None),
                Ok(received) => received.context("receive a response")?,
            };
            let message = Message::from_vec(&self.buffer[..len]).context("parse a response")?;
            if message.metadata.id == id {
                return Ok(Some(message));
            }
        }
    }
}

/// Whether a response answers with at least one record and NOERROR.
pub fn has_answer(message: &Message) -> bool {
    message.metadata.response_code == ResponseCode::NoError && !message.answers.is_empty()
}

/// What two servers must agree on for one question: the rcode, the AA flag, the answer
/// records (owner, TTL, type, data; order ignored, since both shuffle or rotate) and, for
/// SRV, the addresses of the targets in the additional section. Authority sections are left
/// out on purpose: Atoll, like Mesos-DNS, owns the negative-answer SOA by the queried name and
/// adds no NS to positive answers, where an RFC 1035 server uses the apex and may add NS.
pub fn comparable(message: &Message) -> Vec<String> {
    let mut lines =
        vec![format!("rcode {}", message.metadata.response_code), format!("aa {}", message.metadata.authoritative)];
    let mut answers: Vec<String> = message
        .answers
        .iter()
        .map(|r| format!("answer {} {} {} {}", r.name.to_lowercase(), r.ttl, r.record_type(), r.data))
        .collect();
    answers.sort();
    let targets: Vec<Name> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.target.to_lowercase()),
            _ => None,
        })
        .collect();
    let mut additional: Vec<String> = message
        .additionals
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .filter(|r| targets.contains(&r.name.to_lowercase()))
        .map(|r| format!("additional {} {} {} {}", r.name.to_lowercase(), r.ttl, r.record_type(), r.data))
        .collect();
    additional.sort();
    lines.extend(answers);
    lines.extend(additional);
    lines
}
