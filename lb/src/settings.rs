//! `atoll lb` settings: flags and TOML share one typed shape (flags win), resolved and checked
//! into the options the daemon runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use atoll_lb_core::dataplane::DataplanePlan;
use atoll_lb_core::vips::DEFAULT_VIP_POOL;
use atoll_lb_l4::{L4Error, L4Options};
use ipnetwork::Ipv4Network;
use serde::Deserialize;

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

/// Load balancer settings; every field is a flag and a TOML key (kebab-case).
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LbSettings {
    /// Address of the HTTP API (/metrics with per-VIP counters, /v1/services, /health)
    /// [default: 127.0.0.1:8124]
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Where the data-plane plan is kept, so a restarted lb continues with the maps the
    /// kernel still serves [default: /var/lib/atoll/lb]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// bpffs directory for the pinned maps and links [default: /sys/fs/bpf/atoll]
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// cgroup v2 directory the socket programs attach to: every process in it and below
    /// reaches VIPs [default: the cgroup v2 root, i.e. the whole machine]
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Interface whose incoming traffic for VIPs is DNATed to backends (north-south), e.g.
    /// eth0. Never attached unless named
    #[arg(long)]
    pub uplink: Option<String>,
    /// The VIP pool (must match the master's); routed to a blackhole on this machine, so a
    /// VIP connection never leaves it when no program rewrote it [default: 198.19.0.0/17]
    #[arg(long)]
    pub vip_pool: Option<Ipv4Network>,
    /// Maglev table size: a prime, at least 100 × the backends of a service for each to get
    /// within 1% of its share [default: 1021]
    #[arg(long)]
    pub maglev_size: Option<u32>,
    /// Maglev tables (services with identical backends share one) [default: 2048]
    #[arg(long)]
    pub max_tables: Option<u32>,
    /// Services (VIP + port + protocol) [default: 16384]
    #[arg(long)]
    pub max_services: Option<u32>,
    /// Backends (address + port + protocol) [default: 16384]
    #[arg(long)]
    pub max_backends: Option<u32>,
    /// Sockets whose VIP is remembered for replies and getpeername [default: 65536]
    #[arg(long)]
    pub max_sockets: Option<u32>,
    /// North-south flows tracked [default: 32768]
    #[arg(long)]
    pub max_flows: Option<u32>,
    /// Atoll master URL (the global --master on the command line) [default: http://127.0.0.1:5050]
    #[arg(skip)]
    pub master: Option<String>,
    /// Follow an Apache Mesos master instead of an Atoll master (drop-in for DC/OS's
    /// dcos-l4lb): its operator API's event stream, e.g. http://mesos-master:5050. Named VIPs
    /// then get addresses hashed from their names, the same on every node
    #[arg(long)]
    pub mesos_master: Option<String>,
}

/// What the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbOptions {
    pub l4: L4Options,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub vip_pool: Ipv4Network,
    pub master: String,
    /// Follow this Mesos master (its base URL, without a trailing slash) instead of `master`.
    pub mesos_master: Option<String>,
}

impl LbOptions {
    /// The file the data-plane plan is saved in.
    pub fn plan_file(&self) -> PathBuf {
        self.data_dir.join("plan.json")
    }

    /// An empty plan for these map sizes.
    pub fn empty_plan(&self) -> DataplanePlan {
        DataplanePlan::new(self.l4.maglev_size, self.l4.max_tables, self.l4.max_backends)
            .expect("sizes are checked by resolve")
    }
}

impl LbSettings {
    pub fn from_file(path: &Path) -> Result<LbSettings, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })
    }

    /// Flags (self) over file.
    pub fn over(self, file: LbSettings) -> LbSettings {
        LbSettings {
            http_listen: self.http_listen.or(file.http_listen),
            data_dir: self.data_dir.or(file.data_dir),
            pin_dir: self.pin_dir.or(file.pin_dir),
            cgroup: self.cgroup.or(file.cgroup),
            uplink: self.uplink.or(file.uplink),
            vip_pool: self.vip_pool.or(file.vip_pool),
            maglev_size: self.maglev_size.or(file.maglev_size),
            max_tables: self.max_tables.or(file.max_tables),
            max_services: self.max_services.or(file.max_services),
            max_backends: self.max_backends.or(file.max_backends),
            max_sockets: self.max_sockets.or(file.max_sockets),
            max_flows: self.max_flows.or(file.max_flows),
            master: self.master.or(file.master),
            mesos_master: self.mesos_master.or(file.mesos_master),
        }
    }

    pub fn resolve(self) -> Result<LbOptions, SettingsError> {
        let defaults = L4Options::default();
        let l4 = L4Options {
            pin_dir: self.pin_dir.unwrap_or(defaults.pin_dir),
            cgroup: self.cgroup.unwrap_or(defaults.cgroup),
            uplink: self.uplink,
            maglev_size: self.maglev_size.unwrap_or(defaults.maglev_size),
            max_tables: self.max_tables.unwrap_or(defaults.max_tables),
            max_services: self.max_services.unwrap_or(defaults.max_services),
            max_backends: self.max_backends.unwrap_or(defaults.max_backends),
            max_sockets: self.max_sockets.unwrap_or(defaults.max_sockets),
            max_flows: self.max_flows.unwrap_or(defaults.max_flows),
        };
        if let Err(e) = DataplanePlan::new(l4.maglev_size, l4.max_tables, l4.max_backends) {
            let key = match e {
                atoll_lb_core::dataplane::PlanError::TableLimit { .. } => "max-tables",
                atoll_lb_core::dataplane::PlanError::BackendLimit { .. } => "max-backends",
                _ => "maglev-size",
            };
            return Err(invalid(key, e.to_string()));
        }
        match l4.validate() {
            Ok(()) => {}
            Err(L4Error::InvalidOptions(message)) => {
                const KEYS: [(&str, &str); 6] = [
                    ("maglev_size", "maglev-size"),
                    ("max_tables", "max-tables"),
                    ("max_services", "max-services"),
                    ("max_backends", "max-backends"),
                    ("max_sockets", "max-sockets"),
                    ("max_flows", "max-flows"),
                ];
                let key = KEYS
                    .iter()
                    .find(|(field, _)| message.starts_with(field))
                    .map_or(if message.contains("interface") { "uplink" } else { "maglev-size" }, |(_, key)| key);
                return Err(invalid(key, message));
            }
            Err(e) => return Err(invalid("options", e.to_string())),
        }
        if !l4.pin_dir.is_absolute() {
            return Err(invalid("pin-dir", format!("{} is not an absolute path", l4.pin_dir.display())));
        }
        if !l4.cgroup.is_absolute() {
            return Err(invalid("cgroup", format!("{} is not an absolute path", l4.cgroup.display())));
        }
        let vip_pool = self.vip_pool.unwrap_or(DEFAULT_VIP_POOL);
        if vip_pool.prefix() < 8 {
            return Err(invalid("vip-pool", format!("{vip_pool} is wider than a /8: it would blackhole too much")));
        }
        let mesos_master = match self.mesos_master {
            Some(_) if self.master.is_some() => {
                return Err(invalid(
                    "mesos-master",
                    "follows a Mesos master instead of an Atoll master: leave out --master (and ATOLL_MASTER)",
                ));
            }
            Some(url) => Some(atoll_mesos_follow::base_url(&url).map_err(|e| invalid("mesos-master", e))?),
            None => None,
        };
        Ok(LbOptions {
            l4,
            http_listen: self.http_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8124))),
            data_dir: self.data_dir.unwrap_or_else(|| atoll_proto::paths::default_data_dir("lb")),
            vip_pool,
            master: self.master.unwrap_or_else(|| "http://127.0.0.1:5050".into()),
            mesos_master,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_key(settings: LbSettings) -> &'static str {
        match settings.resolve() {
            Err(SettingsError::Invalid { key, .. }) => key,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_resolve_and_bad_values_name_their_setting() {
        let options = LbSettings::default().resolve().unwrap();
        assert_eq!(options.l4, L4Options::default());
        assert_eq!(options.vip_pool, DEFAULT_VIP_POOL);
        assert_eq!(options.http_listen.port(), 8124);

        assert_eq!(error_key(LbSettings { maglev_size: Some(1000), ..Default::default() }), "maglev-size");
        assert_eq!(error_key(LbSettings { max_tables: Some(0), ..Default::default() }), "max-tables");
        assert_eq!(error_key(LbSettings { max_backends: Some(0), ..Default::default() }), "max-backends");
        assert_eq!(error_key(LbSettings { uplink: Some("a/b".into()), ..Default::default() }), "uplink");
        assert_eq!(error_key(LbSettings { max_flows: Some(0), ..Default::default() }), "max-flows");
        assert_eq!(error_key(LbSettings { pin_dir: Some("pins".into()), ..Default::default() }), "pin-dir");
        assert_eq!(
            error_key(LbSettings { vip_pool: Some("10.0.0.0/7".parse().unwrap()), ..Default::default() }),
            "vip-pool"
        );
    }

    #[test]
    fn a_mesos_master_replaces_the_atoll_master() {
        let file: LbSettings = toml::from_str("mesos-master = \"http://mesos.example:5050/\"\n").unwrap();
        let options = LbSettings::default().over(file).resolve().unwrap();
        assert_eq!(options.mesos_master.as_deref(), Some("http://mesos.example:5050"));
        assert_eq!(LbSettings::default().resolve().unwrap().mesos_master, None);
        let both = LbSettings {
            master: Some("http://127.0.0.1:5050".into()),
            mesos_master: Some("http://mesos.example:5050".into()),
            ..Default::default()
        };
        assert_eq!(error_key(both), "mesos-master");
        for bad in ["mesos.example:5050", "https://mesos.example", "http://", "http:///api"] {
            let settings = LbSettings { mesos_master: Some(bad.into()), ..Default::default() };
            assert_eq!(error_key(settings), "mesos-master", "{bad}");
        }
    }

    #[test]
    fn the_file_takes_the_same_keys_and_refuses_unknown_ones() {
        let file: LbSettings = toml::from_str("maglev-size = 251\nuplink = \"eth1\"\n").unwrap();
        let flags = LbSettings { maglev_size: Some(509), ..Default::default() };
        let options = flags.over(file).resolve().unwrap();
        assert_eq!(options.l4.maglev_size, 509);
        assert_eq!(options.l4.uplink.as_deref(), Some("eth1"));
        let error = toml::from_str::<LbSettings>("maglev = 251\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `maglev`"), "{error}");
    }
}
