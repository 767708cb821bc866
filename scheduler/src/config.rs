//! The master's settings: flags and TOML share one typed shape, merged flag-over-file, then
//! validated into the options the master runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use atoll_proto::model::Resources;
use atoll_scheduler_core::allocator::AllocatorConfig;
use atoll_scheduler_core::master::MasterConfig;
use serde::Deserialize;

/// Why the settings were refused; each names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

/// Master settings. Every field is both a flag (`--agent-ping-timeout 15s`) and a TOML key
/// (`agent-ping-timeout = "15s"`); a flag wins over the file, the file over the default.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MasterSettings {
    /// Address for HTTP and gRPC (both on one port) [default: 127.0.0.1:5050]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the registry (agents, frameworks, tasks, event log)
    /// [default: /var/lib/atoll/master as root, else ~/.local/share/atoll/master]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Interval agents heartbeat at, and how long one heartbeat may be late [default: 15s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub agent_ping_timeout: Option<Duration>,
    /// Missed heartbeats after which an agent is unreachable [default: 3]
    #[arg(long)]
    pub max_agent_ping_timeouts: Option<u32>,
    /// How long an unreachable agent may stay away before it and its tasks are gone
    /// [default: 15m]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub agent_gone_timeout: Option<Duration>,
    /// Outstanding offers are rescinded after this long; 0s never [default: 60s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub offer_timeout: Option<Duration>,
    /// Filter applied to declined or unused resources when the framework names none
    /// [default: 5s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub default_refuse: Option<Duration>,
    /// Interval between full allocation rounds (changes allocate at once) [default: 1s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub allocation_interval: Option<Duration>,
    /// Interval between HEARTBEAT events to frameworks and event subscribers [default: 15s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub heartbeat_interval: Option<Duration>,
    /// Events kept in the log for subscribers to resume from [default: 100000]
    #[arg(long)]
    pub event_retention: Option<u64>,
    /// Terminal tasks kept per framework [default: 1000]
    #[arg(long)]
    pub completed_tasks_per_framework: Option<usize>,
    /// Role weights for DRF, e.g. `eng=2,eng/web=1,ops=0.5` [default: all 1]
    #[arg(long)]
    pub role_weights: Option<String>,
    /// Smallest offer worth making, alternatives separated by `|` [default: cpus:0.01|mem:32]
    #[arg(long)]
    pub min_allocatable_resources: Option<String>,
    /// The CIDR of the IP pool `atoll` a new cluster starts with (a /24 per agent), or `none`
    /// [default: 198.18.0.0/16]
    #[arg(long)]
    pub default_pool: Option<String>,
    /// Name the built-in services framework registers under; task DNS names end in
    /// `.<name>.mesos` [default: marathon]
    #[arg(long)]
    pub services_framework_name: Option<String>,
}

macro_rules! merge_fields {
    ($flags:expr, $file:expr, $($field:ident),* $(,)?) => {
        MasterSettings { $($field: $flags.$field.or($file.$field),)* }
    };
}

impl MasterSettings {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &std::path::Path) -> Result<MasterSettings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })
    }

    /// Flags (self) over file.
    pub fn over(self, file: MasterSettings) -> MasterSettings {
        merge_fields!(
            self,
            file,
            listen,
            data_dir,
            agent_ping_timeout,
            max_agent_ping_timeouts,
            agent_gone_timeout,
            offer_timeout,
            default_refuse,
            allocation_interval,
            heartbeat_interval,
            event_retention,
            completed_tasks_per_framework,
            role_weights,
            min_allocatable_resources,
            default_pool,
            services_framework_name,
        )
    }

    /// Fills defaults and validates.
    pub fn resolve(self) -> Result<MasterOptions, ConfigError> {
        let defaults = MasterConfig::default();
        let positive = |key: &'static str, value: Option<Duration>, default: Duration| match value {
            Some(d) if d.is_zero() => Err(invalid(key, "must be greater than zero")),
            Some(d) => Ok(d),
            None => Ok(default),
        };
        let role_weights = match &self.role_weights {
            Some(text) => parse_role_weights(text)?,
            None => BTreeMap::new(),
        };
        let min_allocatable = match &self.min_allocatable_resources {
            Some(text) => text
                .split('|')
                .map(|part| part.parse::<Resources>().map_err(|e| invalid("min-allocatable-resources", e.to_string())))
                .collect::<Result<Vec<_>, _>>()?,
            None => AllocatorConfig::default().min_allocatable,
        };
        let max_pings = self.max_agent_ping_timeouts.unwrap_or(defaults.max_agent_ping_timeouts);
        if max_pings == 0 {
            return Err(invalid("max-agent-ping-timeouts", "must be at least 1"));
        }
        let retention = self.event_retention.unwrap_or(100_000);
        if retention == 0 {
            return Err(invalid("event-retention", "must be at least 1"));
        }
        let config = MasterConfig {
            agent_ping_timeout: positive("agent-ping-timeout", self.agent_ping_timeout, defaults.agent_ping_timeout)?,
            max_agent_ping_timeouts: max_pings,
            agent_gone_timeout: positive("agent-gone-timeout", self.agent_gone_timeout, defaults.agent_gone_timeout)?,
            offer_timeout: match self.offer_timeout {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => defaults.offer_timeout,
            },
            default_refuse: self.default_refuse.unwrap_or(defaults.default_refuse),
            framework_heartbeat_interval: positive(
                "heartbeat-interval",
                self.heartbeat_interval,
                defaults.framework_heartbeat_interval,
            )?,
            allocation_interval: positive(
                "allocation-interval",
                self.allocation_interval,
                defaults.allocation_interval,
            )?,
            completed_tasks_per_framework: self
                .completed_tasks_per_framework
                .unwrap_or(defaults.completed_tasks_per_framework),
            allocator: AllocatorConfig { min_allocatable },
        };
        Ok(MasterOptions {
            listen: self.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5050))),
            data_dir: self.data_dir.unwrap_or_else(|| default_data_dir("master")),
            config,
            event_retention: retention,
            role_weights,
            default_pool: match self.default_pool.as_deref() {
                None => Some(atoll_ipam::default_pool()),
                Some("none") => None,
                Some(cidr) => {
                    let network = cidr.parse().map_err(|_| {
                        invalid("default-pool", format!("`{cidr}` is not a CIDR like 198.18.0.0/16, or none"))
                    })?;
                    Some(atoll_ipam::PoolSpec::new(atoll_ipam::DEFAULT_POOL, vec![network]))
                }
            },
            services_framework_name: match self.services_framework_name {
                Some(name) if name.trim().is_empty() => {
                    return Err(invalid("services-framework-name", "must not be empty"));
                }
                Some(name) => name,
                None => "marathon".to_owned(),
            },
        })
    }
}

/// Everything the master runs with, validated.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub config: MasterConfig,
    pub event_retention: u64,
    pub role_weights: BTreeMap<String, f64>,
    /// Created when the registry has no pools yet.
    pub default_pool: Option<atoll_ipam::PoolSpec>,
    pub services_framework_name: String,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterSettings::default().resolve().expect("defaults are valid")
    }
}

fn parse_role_weights(text: &str) -> Result<BTreeMap<String, f64>, ConfigError> {
    let mut weights = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (role, weight) =
            item.split_once('=').ok_or_else(|| invalid("role-weights", format!("`{item}` is not ROLE=WEIGHT")))?;
        let weight: f64 = weight
            .trim()
            .parse()
            .map_err(|_| invalid("role-weights", format!("`{weight}` (role `{role}`) is not a number")))?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(invalid("role-weights", format!("role `{role}`: weight must be positive")));
        }
        weights.insert(role.trim().to_owned(), weight);
    }
    Ok(weights)
}

pub use atoll_proto::paths::{default_data_dir, default_data_root};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: MasterSettings =
            toml::from_str("listen = \"127.0.0.1:6000\"\nagent-ping-timeout = \"2s\"\nevent-retention = 10\n").unwrap();
        let flags = MasterSettings { event_retention: Some(20), ..MasterSettings::default() };
        let options = flags.over(file).resolve().unwrap();
        assert_eq!(options.listen.port(), 6000);
        assert_eq!(options.config.agent_ping_timeout, Duration::from_secs(2));
        assert_eq!(options.event_retention, 20);
        assert_eq!(options.config.max_agent_ping_timeouts, 3);
    }

    #[test]
    fn bad_settings_name_the_key() {
        assert!(toml::from_str::<MasterSettings>("listn = \"x\"").unwrap_err().to_string().contains("listn"));
        let err = MasterSettings { role_weights: Some("eng=x".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().starts_with("role-weights"), "{err}");
        let err =
            MasterSettings { agent_ping_timeout: Some(Duration::ZERO), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().starts_with("agent-ping-timeout"), "{err}");
        let err = MasterSettings { min_allocatable_resources: Some("cpus:x".into()), ..Default::default() }
            .resolve()
            .unwrap_err();
        assert!(err.to_string().starts_with("min-allocatable-resources"), "{err}");
    }
}
