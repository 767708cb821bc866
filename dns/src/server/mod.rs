//! The DNS server: authoritative for Atoll's zones from the served record set, forwarding
//! other names for allowed clients, over UDP and TCP.
//!
//! - [`answer`] is the whole decision, pure: records + config + client + question → response
//!   contents or "forward" (Mesos-DNS's behaviour inside the zones, see its module).
//! - [`Zone`] is the served data, written by the projection's owner, read by every query.
//! - [`serve`] / [`serve_on`] run hickory-server's UDP/TCP machinery with a request handler
//!   that applies EDNS, UDP size limits and truncation, and forwards through
//!   hickory-resolver.
//!
//! hickory-server logs every request at `info` under `hickory_server`: daemons should filter
//! that target to `warn`.

mod answer;
mod config;
mod forward;
mod handler;
mod listen;
mod zone;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;

pub use answer::{Answer, Response, answer};
pub use config::{ConfigError, ServerConfig, ZoneConfig, default_recursion_allowed};
pub use forward::{ForwardError, Forwarder};
pub use handler::MAX_UDP_PAYLOAD;
pub use listen::Listeners;
pub use zone::Zone;

/// Why the server could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("no address to listen on")]
    NoListenAddress,
    #[error("cannot listen on {addr} ({protocol}): {source}")]
    Bind { addr: SocketAddr, protocol: &'static str, source: std::io::Error },
    #[error("invalid DNS configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("the DNS server stopped: {0}")]
    Stopped(String),
}

/// A TCP client gets this long between queries before its connection is closed, so idle or
/// slow clients cannot hold connections forever.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection before the handler waits for the client to read.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Binds UDP and TCP on every address in `listen` and serves until `shutdown` resolves.
pub async fn serve(
    listen: &[SocketAddr],
    config: ServerConfig,
    zone: Zone,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_on(Listeners::bind(listen).await?, config, zone, shutdown).await
}

/// Serves on sockets bound beforehand until `shutdown` resolves; in-flight TCP connections are
/// closed then.
pub async fn serve_on(
    listeners: Listeners,
    config: ServerConfig,
    zone: Zone,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    config.validate()?;
    if listeners.pairs.is_empty() {
        return Err(ServerError::NoListenAddress);
    }
    let forwarder = match &config.forward {
        Some(upstreams) => Some(Forwarder::new(upstreams)?),
        None => None,
    };
    let handler = handler::Handler { config: Arc::new(config), zone, forwarder };
    let mut server = Server::new(handler);
    for (udp, tcp) in listeners.pairs {
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    let stop = server.shutdown_token().clone();
    let done = server.block_until_done();
    tokio::pin!(done);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut done => {
            // The sockets' tasks only end by themselves on an unrecoverable socket error.
            return match result {
                Ok(()) => Err(ServerError::Stopped("every listener closed".to_owned())),
                Err(e) => Err(ServerError::Stopped(e.to_string())),
            };
        }
        () = &mut shutdown => stop.cancel(),
    }
    done.await.map_err(|e| ServerError::Stopped(e.to_string()))
}
