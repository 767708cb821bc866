//! Forwarding of names outside Atoll's zones to upstream resolvers (hickory-resolver: it
//! spreads queries over the upstreams, fails over, retries truncated answers over TCP and
//! caches). Whether a client may be forwarded for is decided before this, by `answer`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Query, ResponseCode};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};

use super::answer::Response;

/// Why forwarding cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forwarding needs at least one upstream resolver")]
    NoUpstreams,
    #[error("cannot set up the forwarding resolver: {0}")]
    Resolver(String),
}

/// How long one upstream gets before the next is tried: a stub resolver's own timeout is
/// typically 5 s, and it must see our SERVFAIL before giving up on us.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The upstream resolvers.
pub struct Forwarder {
    resolver: TokioResolver,
    upstreams: Vec<SocketAddr>,
}

impl Forwarder {
    pub fn new(upstreams: &[SocketAddr]) -> Result<Forwarder, ForwardError> {
        if upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let servers = upstreams
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut connection| {
                        connection.port = addr.port();
                        connection
                    })
                    .collect();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut options = ResolverOpts::default();
        options.timeout = UPSTREAM_TIMEOUT;
        options.attempts = 2;
        // Clients ask fully qualified names; /etc/hosts is the host's business, not the cluster's.
        options.ndots = 0;
        options.use_hosts_file = ResolveHosts::Never;
        // A forwarder must pass CNAME chains on (RFC 1034 4.3.2).
        options.preserve_intermediates = true;
        options.recursion_desired = true;
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = options;
        let resolver = builder.build().map_err(|e| ForwardError::Resolver(e.to_string()))?;
        Ok(Forwarder { resolver, upstreams: upstreams.to_vec() })
    }

    /// The upstreams' answer, or SERVFAIL when none answered.
    pub async fn forward(&self, query: &Query) -> Response {
        let mut response = Response::empty(ResponseCode::NoError, false, true);
        match self.resolver.lookup(query.name.clone(), query.query_type).await {
            Ok(lookup) => response.answers = lookup.answers().to_vec(),
            Err(NetError::Dns(DnsError::NoRecordsFound(no_records))) => {
                response.rcode = no_records.response_code;
                response.authority.extend(no_records.soa.map(|soa| soa.into_record_of_rdata()));
            }
            Err(error) => {
                tracing::debug!(name = %query.name, qtype = %query.query_type, %error, "forwarding failed");
                response.rcode = ResponseCode::ServFail;
            }
        }
        response
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("upstreams", &self.upstreams).finish()
    }
}
