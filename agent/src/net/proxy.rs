//! Host port → task port forwarders (see the module docs of [`super`] for why userspace). One
//! tokio task per mapping; aborting it closes the listener and every relayed connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use atoll_proto::model::TaskPortMapping;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A UDP client that sent nothing for this long is forgotten.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// At most this many UDP clients are relayed at once per mapping (the oldest is dropped).
const UDP_MAX_CLIENTS: usize = 1024;
/// At most this many TCP connections are relayed at once per mapping.
const TCP_MAX_CONNECTIONS: usize = 4096;

/// A bound listener for one mapping, ready to serve.
pub enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The address the host side listens on: every address of the task's family.
fn listen_addr(task_ip: IpAddr, port: u16) -> SocketAddr {
    match task_ip {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

/// Binds the host side of `mapping` now (a taken port is an error the launch reports).
pub fn bind(mapping: &TaskPortMapping, task_ip: IpAddr) -> io::Result<Bound> {
    let addr = listen_addr(task_ip, mapping.host_port);
    let describe = |e: io::Error| {
        io::Error::new(e.kind(), format!("cannot listen on host port {}/{}: {e}", mapping.host_port, mapping.protocol))
    };
    if mapping.protocol == "udp" {
        let socket = std::net::UdpSocket::bind(addr).map_err(describe)?;
        socket.set_nonblocking(true)?;
        Ok(Bound::Udp(UdpSocket::from_std(socket)?))
    } else {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // A restarted agent rebinds while connections of the previous one linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr).map_err(describe)?;
        Ok(Bound::Tcp(socket.listen(1024).map_err(describe)?))
    }
}

/// Serves a bound mapping until aborted.
pub async fn serve(bound: Bound, target: SocketAddr) {
    match bound {
        Bound::Tcp(listener) => serve_tcp(listener, target).await,
        Bound::Udp(socket) => serve_udp(Arc::new(socket), target).await,
    }
}

/// Binds (retrying while the port is still held, e.g. by the agent this one replaces) and
/// serves; for forwarders re-created after an agent restart.
pub async fn bind_and_serve(mapping: TaskPortMapping, task_ip: IpAddr) {
    let target = SocketAddr::new(task_ip, mapping.container_port);
    let mut warned = false;
    let mut delay = Duration::from_millis(100);
    loop {
        match bind(&mapping, task_ip) {
            Ok(bound) => {
                if warned {
                    tracing::info!(host_port = mapping.host_port, %target, "port mapping restored");
                }
                return serve(bound, target).await;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(%target, "{e}; retrying");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((client, _)) => {
                if connections.len() >= TCP_MAX_CONNECTIONS {
                    continue;
                }
                connections.spawn(relay_tcp(client, target));
            }
            Err(e) => {
                tracing::debug!(%target, "accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay_tcp(mut client: TcpStream, target: SocketAddr) {
    let _ = client.set_nodelay(true);
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            tracing::debug!(%target, "port mapping: cannot connect to the task: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%target, "port mapping: connecting to the task timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

struct UdpClient {
    upstream: Arc<UdpSocket>,
    relay: AbortHandle,
    last_seen: tokio::time::Instant,
}

async fn serve_udp(socket: Arc<UdpSocket>, target: SocketAddr) {
    let mut clients: HashMap<SocketAddr, UdpClient> = HashMap::new();
    let mut relays = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    let mut sweep = tokio::time::interval(UDP_IDLE / 2);
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            _ = sweep.tick() => {
                let now = tokio::time::Instant::now();
                clients.retain(|_, c| {
                    let keep = now.duration_since(c.last_seen) < UDP_IDLE;
                    if !keep {
                        c.relay.abort();
                    }
                    keep
                });
                continue;
            }
            Some(_) = relays.join_next(), if !relays.is_empty() => continue,
        };
        let Ok((n, from)) = received else { continue };
        if !clients.contains_key(&from) {
            if clients.len() >= UDP_MAX_CLIENTS
                && let Some(oldest) = clients.iter().min_by_key(|(_, c)| c.last_seen).map(|(a, _)| *a)
                && let Some(c) = clients.remove(&oldest)
            {
                c.relay.abort();
            }
            let local = listen_addr(target.ip(), 0);
            let Ok(upstream) = UdpSocket::bind(local).await else { continue };
            if upstream.connect(target).await.is_err() {
                continue;
            }
            let upstream = Arc::new(upstream);
            let (reply_up, reply_down) = (upstream.clone(), socket.clone());
            let relay = relays.spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok(n) = reply_up.recv(&mut buf).await {
                    let _ = reply_down.send_to(&buf[..n], from).await;
                }
            });
            clients.insert(from, UdpClient { upstream, relay, last_seen: tokio::time::Instant::now() });
        }
        if let Some(client) = clients.get_mut(&from) {
            client.last_seen = tokio::time::Instant::now();
            let _ = client.upstream.send(&buf[..n]).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn mapping(host_port: u16, container_port: u16, protocol: &str) -> TaskPortMapping {
        TaskPortMapping { host_port, container_port, protocol: protocol.into() }
    }

    #[tokio::test]
    async fn tcp_and_udp_are_relayed_to_the_task_port() {
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // The "task": a TCP echo and a UDP echo on loopback.
        let tcp_task = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_port = tcp_task.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = tcp_task.accept().await.unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).await.unwrap();
            conn.write_all(&buf).await.unwrap();
        });
        let udp_task = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_port = udp_task.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (n, from) = udp_task.recv_from(&mut buf).await.unwrap();
            udp_task.send_to(&buf[..n], from).await.unwrap();
        });

        let host_tcp = free_port();
        let tcp = bind(&mapping(host_tcp, tcp_port, "tcp"), local).unwrap();
        let tcp_relay = tokio::spawn(serve(tcp, SocketAddr::new(local, tcp_port)));
        let host_udp = free_port();
        let udp = bind(&mapping(host_udp, udp_port, "udp"), local).unwrap();
        let udp_relay = tokio::spawn(serve(udp, SocketAddr::new(local, udp_port)));

        let mut client = TcpStream::connect(("127.0.0.1", host_tcp)).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"hello");

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", ("127.0.0.1", host_udp)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.port(), host_udp, "the reply comes from the mapped port");

        // A taken host port is an error naming it; aborting frees the port.
        let err = bind(&mapping(host_tcp, tcp_port, "tcp"), local).err().expect("port taken");
        assert!(err.to_string().contains(&format!("host port {host_tcp}/tcp")), "{err}");
        tcp_relay.abort();
        udp_relay.abort();
        let _ = tcp_relay.await;
        assert!(bind(&mapping(host_tcp, tcp_port, "tcp"), local).is_ok());
    }
}
