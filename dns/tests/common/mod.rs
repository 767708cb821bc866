//! Shared by the DNS integration tests: where the conformance data lives, a server on
//! loopback, and a minimal client over real UDP and TCP sockets. Every wait is bounded.

// Each test binary uses a different part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use atoll_dns::server::{Listeners, ServerConfig, ServerError, Zone, serve_on};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name as DnsName, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long one exchange may take before it counts as unanswered: generous, since the test
/// machine may be loaded; nothing asserts how fast an answer comes.
pub const WAIT: Duration = Duration::from_secs(5);

/// The shared conformance data: `$ATOLL_COMPAT_DIR`, else `shared/compat` beside the checkout.
pub fn compat_dir() -> PathBuf {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("ATOLL_COMPAT_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("mesos-dns").is_dir() {
            return dir;
        }
        tried.push(dir);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat");
    if beside.join("mesos-dns").is_dir() {
        return beside;
    }
    tried.push(beside);
    panic!(
        "the conformance data (a compat dir with mesos-dns/ inside) is missing; tried {tried:?}. \
         Set ATOLL_COMPAT_DIR to the shared compat directory."
    );
}

/// A server on 127.0.0.1, a free port, UDP and TCP.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig, zone: Zone) -> TestServer {
        let listeners = Listeners::bind(&["127.0.0.1:0".parse().unwrap()]).await.expect("bind 127.0.0.1:0");
        let addr = listeners.local_addrs()[0];
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(listeners, config, zone, async move {
            let _ = stopped.await;
        }));
        TestServer { addr, stop, task }
    }

    /// Stops the server and checks it stopped cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let result = timeout(WAIT, self.task).await.expect("the server did not stop").expect("the server panicked");
        result.expect("the server failed");
    }
}

pub fn query(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(DnsName::from_ascii(name).expect("query name"), qtype));
    if let Some(payload) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        message.set_edns(opt);
    }
    message.to_vec().expect("encode query")
}

/// Sends `packet` over UDP and returns the first datagram back within `wait`, if any.
pub async fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client socket");
    socket.send_to(packet, server).await.expect("send");
    let mut buffer = vec![0u8; 65535];
    let (len, _) = timeout(wait, socket.recv_from(&mut buffer)).await.ok()?.expect("recv");
    buffer.truncate(len);
    Some(buffer)
}

/// A query over UDP and its parsed response, retried a bounded number of times.
pub async fn udp_exchange(server: SocketAddr, packet: &[u8]) -> (Message, usize) {
    for _ in 0..3 {
        if let Some(bytes) = udp_raw(server, packet, WAIT).await {
            let message = Message::from_vec(&bytes).expect("parse UDP response");
            assert_eq!(message.metadata.id, u16::from_be_bytes([packet[0], packet[1]]), "response id");
            return (message, bytes.len());
        }
    }
    panic!("no UDP response from {server}");
}

/// A query over TCP (length-prefixed) and its parsed response.
pub async fn tcp_exchange(server: SocketAddr, packet: &[u8]) -> Message {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.expect("connect");
        let len = u16::try_from(packet.len()).expect("query fits a TCP frame");
        stream.write_all(&len.to_be_bytes()).await.expect("write length");
        stream.write_all(packet).await.expect("write query");
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.expect("read length");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.expect("read response");
        Message::from_vec(&body).expect("parse TCP response")
    };
    timeout(WAIT, exchange).await.expect("no TCP response")
}
