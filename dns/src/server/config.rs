//! What the server serves and for whom: its authoritative zones (with their SOA), the upstream
//! resolvers for everything else, and the client networks allowed to use them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::rr::Name as DnsName;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::records::Name;

/// Why a server configuration cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} `{name}` is not a valid DNS name: {reason}")]
    InvalidName { field: &'static str, name: String, reason: String },
    #[error("zone `{0}` is configured twice")]
    DuplicateZone(Name),
    #[error("forwarding is on but no upstream resolver is given")]
    NoUpstreams,
}

/// One authoritative zone and its SOA. Mesos-DNS's defaults: `ns1.<domain>` as the primary,
/// `root.ns1.<domain>` as the mailbox, refresh 60, retry 600, expire 86400, minimum 60.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `mesos.`.
    pub domain: Name,
    /// TTL of every record served from the zone, SOA and NS included.
    pub ttl: u32,
    /// SOA MNAME, also the target of the apex NS record.
    pub soa_mname: Name,
    /// SOA RNAME (the operator's mailbox, `root.ns1.mesos.`).
    pub soa_rname: Name,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308, capped by `ttl` since the SOA record itself carries it).
    pub minimum: u32,
}

impl ZoneConfig {
    /// A zone with the defaults above and Atoll's task TTL of 5 seconds.
    pub fn new(domain: &str) -> ZoneConfig {
        let domain = Name::new(domain);
        let soa_mname = Name::new(&format!("ns1.{domain}"));
        let soa_rname = Name::new(&format!("root.{soa_mname}"));
        ZoneConfig { domain, ttl: 5, soa_mname, soa_rname, refresh: 60, retry: 600, expire: 86400, minimum: 60 }
    }
}

/// The server's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Zones answered authoritatively, from the served record set.
    pub zones: Vec<ZoneConfig>,
    /// Upstream resolvers for names outside the zones; `None` refuses those names.
    pub forward: Option<Vec<SocketAddr>>,
    /// Clients allowed to use forwarding: never an open resolver to the world.
    pub recursion_allowed: Vec<IpNetwork>,
}

impl Default for ServerConfig {
    /// The `mesos.` zone, no forwarding, recursion for loopback and the container pool.
    fn default() -> ServerConfig {
        ServerConfig {
            zones: vec![ZoneConfig::new("mesos.")],
            forward: None,
            recursion_allowed: default_recursion_allowed(),
        }
    }
}

/// Loopback (v4 and v6) and the default container pool 198.18.0.0/16.
pub fn default_recursion_allowed() -> Vec<IpNetwork> {
    let net4 = |ip: [u8; 4], prefix| Ipv4Network::new(Ipv4Addr::from(ip), prefix).map(IpNetwork::V4);
    let net6 = Ipv6Network::new(Ipv6Addr::LOCALHOST, 128).map(IpNetwork::V6);
    // The prefixes are constants in range, so these never fail; filter rather than unwrap anyway.
    [net4([127, 0, 0, 0], 8), net6, net4([198, 18, 0, 0], 16)].into_iter().flatten().collect()
}

impl ServerConfig {
    /// The most specific zone containing `name`, if any.
    pub fn zone_for(&self, name: &Name) -> Option<&ZoneConfig> {
        self.zones.iter().filter(|zone| name.is_in(&zone.domain)).max_by_key(|zone| zone.domain.as_str().len())
    }

    /// Whether `client` may have names outside the zones forwarded (and so sees RA set).
    pub fn recursion_available(&self, client: IpAddr) -> bool {
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        let client = client.to_canonical();
        self.forward.is_some() && self.recursion_allowed.iter().any(|net| net.contains(client))
    }

    /// Checks that every name is a valid DNS name and no zone is configured twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, zone) in self.zones.iter().enumerate() {
            dns_name("zone domain", &zone.domain)?;
            dns_name("SOA mname", &zone.soa_mname)?;
            dns_name("SOA rname", &zone.soa_rname)?;
            if self.zones[..i].iter().any(|other| other.domain == zone.domain) {
                return Err(ConfigError::DuplicateZone(zone.domain.clone()));
            }
        }
        if self.forward.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::NoUpstreams);
        }
        Ok(())
    }
}

/// The wire form of a record name.
pub(crate) fn dns_name(field: &'static str, name: &Name) -> Result<DnsName, ConfigError> {
    DnsName::from_ascii(name.as_str()).map_err(|e| ConfigError::InvalidName {
        field,
        name: name.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_zone_wins() {
        let config = ServerConfig {
            zones: vec![ZoneConfig::new("directory."), ZoneConfig::new("l4lb.thisdcos.directory.")],
            ..ServerConfig::default()
        };
        let zone = config.zone_for(&Name::new("web.marathon.l4lb.thisdcos.directory")).map(|z| z.domain.clone());
        assert_eq!(zone, Some(Name::new("l4lb.thisdcos.directory.")));
        assert_eq!(config.zone_for(&Name::new("example.com.")), None);
        assert_eq!(config.zone_for(&Name::new("xdirectory.")), None);
    }

    #[test]
    fn recursion_needs_forwarding_and_an_allowed_client() {
        let mut config = ServerConfig::default();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!config.recursion_available(local), "no upstreams, no recursion");
        config.forward = Some(vec!["127.0.0.1:5353".parse().unwrap()]);
        assert!(config.recursion_available(local));
        assert!(config.recursion_available("::ffff:127.0.0.1".parse().unwrap()));
        assert!(config.recursion_available("::1".parse().unwrap()));
        assert!(config.recursion_available("198.18.3.4".parse().unwrap()));
        assert!(!config.recursion_available("198.19.0.1".parse().unwrap()));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut config = ServerConfig::default();
        assert!(config.validate().is_ok());
        config.zones[0].soa_mname = Name::new(&format!("{}.mesos", "x".repeat(64)));
        assert!(matches!(config.validate(), Err(ConfigError::InvalidName { field: "SOA mname", .. })));
        let mut config = ServerConfig::default();
        config.zones.push(ZoneConfig::new("MESOS"));
        assert!(matches!(config.validate(), Err(ConfigError::DuplicateZone(_))));
        config.zones.pop();
        config.forward = Some(vec![]);
        assert!(matches!(config.validate(), Err(ConfigError::NoUpstreams)));
    }
}
