//! The sockets: one UDP socket and one TCP listener on the same address and port for every
//! listen address, bound before serving so a caller learns the ports (port 0) and bind
//! failures up front.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

use super::ServerError;

/// How often a free port (port 0) is tried for UDP and TCP together before giving up: another
/// process can take the TCP side of a port between the two binds.
const PORT_ATTEMPTS: usize = 16;

/// Bound UDP sockets and TCP listeners, pairwise on the same address.
#[derive(Debug)]
pub struct Listeners {
    pub(crate) pairs: Vec<(UdpSocket, TcpListener)>,
}

impl Listeners {
    /// Binds UDP and TCP on every address; port 0 picks one free port for both.
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Listeners, ServerError> {
        if addrs.is_empty() {
            return Err(ServerError::NoListenAddress);
        }
        let mut pairs = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            pairs.push(bind_pair(addr).await?);
        }
        Ok(Listeners { pairs })
    }

    /// Binds UDP and TCP on addresses that may not be assigned to an interface yet
    /// (`IP_FREEBIND`): an agent's bridge gateway is listened on as soon as it is known, and
    /// answers once the agent brings its bridge up.
    pub fn bind_freebind(addrs: &[SocketAddr]) -> Result<Listeners, ServerError> {
        if addrs.is_empty() {
            return Err(ServerError::NoListenAddress);
        }
        let mut pairs = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            pairs.push(freebind_pair(addr)?);
        }
        Ok(Listeners { pairs })
    }

    /// The addresses bound (with the ports picked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.pairs.iter().filter_map(|(udp, _)| udp.local_addr().ok()).collect()
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), ServerError> {
    let bind_error = |protocol, source| ServerError::Bind { addr, protocol, source };
    let attempts = if addr.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await.map_err(|e| bind_error("UDP", e))?;
        let bound = udp.local_addr().map_err(|e| bind_error("UDP", e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 => last = Some(e),
            Err(e) => return Err(bind_error("TCP", e)),
        }
    }
    Err(bind_error("TCP", last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse))))
}

fn freebind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), ServerError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = |kind: Type, protocol: Protocol, name: &'static str| -> Result<Socket, ServerError> {
        let bind_error = |source| ServerError::Bind { addr, protocol: name, source };
        let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol)).map_err(bind_error)?;
        if addr.is_ipv4() {
            socket.set_freebind_v4(true).map_err(bind_error)?;
        } else {
            socket.set_freebind_v6(true).map_err(bind_error)?;
        }
        socket.set_reuse_address(true).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        socket.bind(&addr.into()).map_err(bind_error)?;
        Ok(socket)
    };
    let udp = socket(Type::DGRAM, Protocol::UDP, "UDP")?;
    let tcp = socket(Type::STREAM, Protocol::TCP, "TCP")?;
    tcp.listen(1024).map_err(|source| ServerError::Bind { addr, protocol: "TCP", source })?;
    let udp = UdpSocket::from_std(udp.into()).map_err(|source| ServerError::Bind { addr, protocol: "UDP", source })?;
    let tcp =
        TcpListener::from_std(tcp.into()).map_err(|source| ServerError::Bind { addr, protocol: "TCP", source })?;
    Ok((udp, tcp))
}
