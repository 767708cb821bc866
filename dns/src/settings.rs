//! `atoll dns` settings: flags and TOML share one typed shape (flags win), resolved and checked
//! into the options the daemon runs with.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::projection::{IpSource, LabelSpec};

/// Why the settings were refused; each names the setting.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { key, message: message.into() }
}

/// DNS settings; every field is a flag and a TOML key (kebab-case).
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DnsSettings {
    /// UDP and TCP address to answer on; repeatable [default: 127.0.0.1:53]
    #[arg(long = "listen")]
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Address of the HTTP API (Mesos-DNS's /v1/..., /metrics) [default: 127.0.0.1:8123]
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Where the last cluster state applied is kept, so a restarted DNS answers at once and
    /// resumes the event stream where it left off [default: /var/lib/atoll/dns as root, else
    /// ~/.local/share/atoll/dns]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The domain tasks are named under [default: mesos]
    #[arg(long)]
    pub domain: Option<String>,
    /// The zone of named VIPs [default: l4lb.thisdcos.directory]
    #[arg(long)]
    pub vip_domain: Option<String>,
    /// TTL of task and VIP records, in seconds [default: 5]
    #[arg(long)]
    pub ttl: Option<u32>,
    /// Label rules for names: rfc1123 or rfc952 [default: rfc1123]
    #[arg(long)]
    pub label_spec: Option<String>,
    /// Where a task's address comes from, in order: netinfo, docker, mesos, host
    /// [default: netinfo,mesos,host]
    #[arg(long)]
    pub ip_sources: Option<String>,
    /// Upstream resolver for names outside the zones; repeatable [default: the nameservers
    /// of /etc/resolv.conf]
    #[arg(long = "upstream")]
    #[serde(default)]
    pub upstream: Vec<SocketAddr>,
    /// Refuse names outside the zones instead of forwarding them
    #[arg(long)]
    #[serde(default)]
    pub no_forward: bool,
    /// Client networks allowed to use forwarding; repeatable [default: 127.0.0.0/8, ::1/128,
    /// 198.18.0.0/16]
    #[arg(long = "recursion-allowed")]
    #[serde(default)]
    pub recursion_allowed: Vec<String>,
    /// Publish every RUNNING task, healthy or not, as Mesos-DNS did
    #[arg(long)]
    #[serde(default)]
    pub publish_unhealthy: bool,
    /// Host name of this DNS server within the domain (`<name>.<domain>`) [default: ns1]
    #[arg(long)]
    pub soa_mname: Option<String>,
    /// Port to answer on at the bridge gateway of every subnet of this node's agents (where
    /// container tasks' resolv.conf points); 0 turns it off [default: 53]
    #[arg(long)]
    pub gateway_port: Option<u16>,
    /// Drop-in mode: serve names for an Apache Mesos master (its operator API, else polling
    /// /master/state) instead of an Atoll master
    #[arg(long)]
    pub mesos_master: Option<String>,
    /// With --mesos-master: the pool the load balancers give named VIPs their hashed addresses
    /// from (`atoll lb --vip-pool`; they must match) [default: 198.19.0.0/17]
    #[arg(long)]
    pub vip_pool: Option<ipnetwork::Ipv4Network>,
    /// Atoll master URL (the global --master on the command line) [default: http://127.0.0.1:5050]
    #[arg(skip)]
    pub master: Option<String>,
}

impl DnsSettings {
    pub fn from_file(path: &Path) -> Result<DnsSettings, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })
    }

    /// Flags (self) over file; lists given on the command line replace the file's.
    pub fn over(self, file: DnsSettings) -> DnsSettings {
        let pick = |flags: Vec<String>, file: Vec<String>| if flags.is_empty() { file } else { flags };
        DnsSettings {
            listen: if self.listen.is_empty() { file.listen } else { self.listen },
            http_listen: self.http_listen.or(file.http_listen),
            data_dir: self.data_dir.or(file.data_dir),
            domain: self.domain.or(file.domain),
            vip_domain: self.vip_domain.or(file.vip_domain),
            ttl: self.ttl.or(file.ttl),
            label_spec: self.label_spec.or(file.label_spec),
            ip_sources: self.ip_sources.or(file.ip_sources),
            upstream: if self.upstream.is_empty() { file.upstream } else { self.upstream },
            no_forward: self.no_forward || file.no_forward,
            recursion_allowed: pick(self.recursion_allowed, file.recursion_allowed),
            publish_unhealthy: self.publish_unhealthy || file.publish_unhealthy,
            soa_mname: self.soa_mname.or(file.soa_mname),
            gateway_port: self.gateway_port.or(file.gateway_port),
            mesos_master: self.mesos_master.or(file.mesos_master),
            vip_pool: self.vip_pool.or(file.vip_pool),
            master: self.master.or(file.master),
        }
    }

    pub fn resolve(self) -> Result<DnsOptions, SettingsError> {
        let domain = self.domain.unwrap_or_else(|| "mesos".into()).trim_matches('.').to_ascii_lowercase();
        if domain.is_empty() || domain.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return Err(invalid("domain", format!("`{domain}` is not a domain name")));
        }
        let vip_domain = self
            .vip_domain
            .unwrap_or_else(|| crate::projection::DEFAULT_VIP_DOMAIN.into())
            .trim_matches('.')
            .to_ascii_lowercase();
        if vip_domain.is_empty() || vip_domain == domain || vip_domain.split('.').any(|l| l.is_empty() || l.len() > 63)
        {
            return Err(invalid("vip-domain", format!("`{vip_domain}` is not a domain name apart from --domain")));
        }
        let label_spec = match self.label_spec.as_deref().unwrap_or("rfc1123") {
            "rfc1123" | "RFC1123" => LabelSpec::Rfc1123,
            "rfc952" | "RFC952" => LabelSpec::Rfc952,
            other => return Err(invalid("label-spec", format!("`{other}` is not rfc1123 or rfc952"))),
        };
        let ip_sources = match &self.ip_sources {
            None => vec![IpSource::NetInfo, IpSource::Mesos, IpSource::Host],
            Some(text) => text
                .split(',')
                .map(|s| match s.trim() {
                    "netinfo" => Ok(IpSource::NetInfo),
                    "docker" => Ok(IpSource::Docker),
                    "mesos" => Ok(IpSource::Mesos),
                    "host" => Ok(IpSource::Host),
                    other => Err(invalid("ip-sources", format!("`{other}` is not netinfo, docker, mesos or host"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if ip_sources.is_empty() {
            return Err(invalid("ip-sources", "name at least one source"));
        }
        let recursion_allowed = if self.recursion_allowed.is_empty() {
            vec![
                "127.0.0.0/8".parse().expect("valid"),
                "::1/128".parse().expect("valid"),
                "198.18.0.0/16".parse().expect("valid"),
            ]
        } else {
            self.recursion_allowed
                .iter()
                .map(|n| {
                    n.parse()
                        .map_err(|_| invalid("recursion-allowed", format!("`{n}` is not a network like 10.0.0.0/8")))
                })
                .collect::<Result<Vec<ipnetwork::IpNetwork>, _>>()?
        };
        let forward = if self.no_forward {
            None
        } else if self.upstream.is_empty() {
            Some(resolv_conf_nameservers())
        } else {
            Some(self.upstream)
        };
        let soa_mname = self.soa_mname.unwrap_or_else(|| "ns1".into());
        if soa_mname.is_empty() || soa_mname.contains('.') {
            return Err(invalid("soa-mname", "a single label such as ns1"));
        }
        let ttl = self.ttl.unwrap_or(5);
        if ttl == 0 {
            return Err(invalid("ttl", "must be at least 1 second"));
        }
        let mesos_master = self
            .mesos_master
            .as_deref()
            .map(|url| atoll_mesos_follow::base_url(url).map_err(|e| invalid("mesos-master", e)))
            .transpose()?;
        let master = self.master.unwrap_or_else(|| "http://127.0.0.1:5050".into());
        check_url("master", &master)?;
        Ok(DnsOptions {
            listen: if self.listen.is_empty() { vec![SocketAddr::from(([127, 0, 0, 1], 53))] } else { self.listen },
            http_listen: self.http_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8123))),
            domain,
            vip_domain,
            ttl,
            label_spec,
            ip_sources,
            forward,
            recursion_allowed,
            health_aware: !self.publish_unhealthy,
            soa_mname,
            mesos_master,
            vip_pool: self.vip_pool.unwrap_or(atoll_lb_core::vips::DEFAULT_VIP_POOL),
            master,
            data_dir: Some(self.data_dir.unwrap_or_else(|| atoll_proto::paths::default_data_dir("dns"))),
            gateway_port: match self.gateway_port.unwrap_or(53) {
                0 => None,
                port => Some(port),
            },
        })
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), SettingsError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| invalid(key, format!("`{url}` is not an http:// URL")))?;
    if rest.trim_end_matches('/').is_empty() {
        return Err(invalid(key, format!("`{url}` names no host")));
    }
    Ok(())
}

/// The nameservers of /etc/resolv.conf, port 53.
fn resolv_conf_nameservers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Resolved DNS options.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    pub listen: Vec<SocketAddr>,
    pub http_listen: SocketAddr,
    pub domain: String,
    pub vip_domain: String,
    pub ttl: u32,
    pub label_spec: LabelSpec,
    pub ip_sources: Vec<IpSource>,
    /// Upstreams, or None when forwarding is off.
    pub forward: Option<Vec<SocketAddr>>,
    pub recursion_allowed: Vec<ipnetwork::IpNetwork>,
    pub health_aware: bool,
    pub soa_mname: String,
    pub mesos_master: Option<String>,
    /// Where named VIPs on a Mesos master get their hashed addresses (as the load balancers).
    pub vip_pool: ipnetwork::Ipv4Network,
    pub master: String,
    /// None: keep nothing (tests and `atoll up` pass a directory).
    pub data_dir: Option<PathBuf>,
    /// None: do not answer on the agents' bridge gateways.
    pub gateway_port: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_bad_values_name_the_setting() {
        let file: DnsSettings = toml::from_str("domain = \"cluster\"\nttl = 30\nno-forward = true\n").unwrap();
        let flags = DnsSettings { ttl: Some(7), ..DnsSettings::default() };
        let options = flags.over(file).resolve().unwrap();
        assert_eq!((options.domain.as_str(), options.ttl), ("cluster", 7));
        assert!(options.forward.is_none());
        for (settings, key) in [
            (DnsSettings { label_spec: Some("rfc2".into()), ..Default::default() }, "label-spec"),
            (DnsSettings { ip_sources: Some("netinfo,cloud".into()), ..Default::default() }, "ip-sources"),
            (DnsSettings { recursion_allowed: vec!["10.0.0.0/33".into()], ..Default::default() }, "recursion-allowed"),
            (DnsSettings { ttl: Some(0), ..Default::default() }, "ttl"),
            (DnsSettings { mesos_master: Some("mesos:5050".into()), ..Default::default() }, "mesos-master"),
            (DnsSettings { mesos_master: Some("https://mesos:5050".into()), ..Default::default() }, "mesos-master"),
        ] {
            let err = settings.resolve().unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
        assert!(toml::from_str::<DnsSettings>("domian = \"x\"").is_err());
    }
}
