//! The agent's settings: flags and TOML share one typed shape ([`AgentSettings`]), merged
//! flag-over-file, then resolved into the [`AgentOptions`] the agent runs with. Resolving fills
//! the defaults, detects the resources nobody specified (from /proc and the data dir's
//! filesystem) and refuses bad values naming the setting.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_proto::model::{Attributes, Ranges, ResourceValue, Resources, Scalar};
use serde::Deserialize;

/// Why the settings were refused; each names the setting (or the file).
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

const DEFAULT_PORTS: (u64, u64) = (31000, 32000);
/// Memory kept for the OS and the agent itself: min(1 GiB, half).
const MEM_RESERVE_MIB: f64 = 1024.0;
/// Disk kept free on the data dir's filesystem: min(5 GiB, half).
const DISK_RESERVE_MIB: f64 = 5120.0;
/// Retries of an unacknowledged status update back off up to this.
pub const STATUS_RETRY_MAX: Duration = Duration::from_secs(60);

/// Agent settings. Every field is both a flag (`--default-kill-grace 5s`) and a TOML key
/// (`default-kill-grace = "5s"`); a flag wins over the file, the file over the default.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AgentSettings {
    /// Address of the agent's HTTP API (state, task logs, metrics) [default: 127.0.0.1:5051]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// URL of the master (its HTTP port also serves gRPC) [default: http://127.0.0.1:5050].
    /// On the command line this is `atoll`'s global `--master` (or ATOLL_MASTER).
    #[arg(skip)]
    pub master: Option<String>,
    /// Directory for the agent's id, task checkpoints and sandboxes
    /// [default: /var/lib/atoll/agent as root, else ~/.local/share/atoll/agent]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// IP other nodes reach this agent on [default: the IP of --listen]
    #[arg(long)]
    pub advertise_ip: Option<IpAddr>,
    /// Host name reported to the master and given to tasks as HOST [default: the system's]
    #[arg(long)]
    pub hostname: Option<String>,
    /// Resources offered, e.g. `cpus:2;mem:2048;disk:10000;ports:[31000-32000]`; names left
    /// out are detected [default: online cpus; memory minus min(1 GiB, 50%); free disk of the
    /// data dir minus min(5 GiB, 50%); ports [31000-32000]]
    #[arg(long)]
    pub resources: Option<String>,
    /// Attributes, e.g. `rack:r1;zone:a` [default: none]
    #[arg(long)]
    pub attributes: Option<String>,
    /// Time between SIGTERM and SIGKILL when a task without a kill policy is killed
    /// [default: 3s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub default_kill_grace: Option<Duration>,
    /// Sandboxes of tasks completed longer ago than this are deleted [default: 7d]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub sandbox_gc_age: Option<Duration>,
    /// While the data dir's filesystem is fuller than this fraction, completed sandboxes are
    /// deleted oldest first [default: 0.9]
    #[arg(long)]
    pub sandbox_gc_disk_threshold: Option<f64>,
    /// First resend interval of an unacknowledged status update; it doubles up to 60s
    /// [default: 2s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub status_retry_interval: Option<Duration>,
    /// Cgroup (relative to each hierarchy) under which task cgroups are created
    /// [default: atoll/agent-<8 hex digits of a hash of the data dir>]
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Binary run as `<executor> executor --spec FILE` to supervise each task
    /// [default: this program]
    #[arg(long)]
    pub executor: Option<PathBuf>,
    /// Container networking: tasks that ask for a network get their own network namespace, a
    /// veth into the agent's bridge and an address from the agent's subnet; the agent enables IP
    /// forwarding and routes to other agents' subnets in the network namespace it runs in.
    /// `--container-networking` alone turns it on, `=false` off [default: on when running as
    /// root (and once the master assigns a subnet)]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub container_networking: Option<bool>,
    /// Name of the agent's bridge for container tasks [default: atoll0]
    #[arg(long)]
    pub bridge: Option<String>,
    /// Egress for container tasks: what leaves the agent's subnets through any interface but the
    /// bridge, for anywhere but another container subnet, is masqueraded behind the host's
    /// address, by an nftables table of the agent's own (`atoll_<agent tag>`, in the network
    /// namespace the agent runs in; needs `nft`, Debian package nftables). Only with container
    /// networking. `--masquerade` alone turns it on [default: off]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub masquerade: Option<bool>,
}

macro_rules! merge_fields {
    ($flags:expr, $file:expr, $($field:ident),* $(,)?) => {
        AgentSettings { $($field: $flags.$field.or($file.$field),)* }
    };
}

/// Everything the agent runs with, validated.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where the HTTP API listens; port 0 picks a free port (the advertised address then
    /// carries the port actually bound).
    pub listen: SocketAddr,
    pub master: String,
    /// Absolute, with symlinks of its existing part resolved.
    pub data_dir: PathBuf,
    pub advertise_ip: Option<IpAddr>,
    pub hostname: String,
    /// Complete: every resource given or detected.
    pub resources: Resources,
    pub attributes: Attributes,
    pub default_kill_grace: Duration,
    pub sandbox_gc_age: Duration,
    pub sandbox_gc_disk_threshold: f64,
    pub status_retry_interval: Duration,
    pub status_retry_max: Duration,
    pub cgroup_root: String,
    pub executor: PathBuf,
    /// Place tasks in cgroups where this process can create them (always true from settings;
    /// false runs every task in its process group only, as happens without root).
    pub cgroups: bool,
    /// `Some(true)`/`Some(false)`: container networking forced on/off; `None`: on when root.
    pub container_networking: Option<bool>,
    /// The bridge container tasks are attached to.
    pub bridge: String,
    /// Masquerade container egress (meaningful with container networking only).
    pub masquerade: bool,
    /// The `nft` program that manages the masquerade table (not a setting; `nft` from `PATH`).
    pub nft: PathBuf,
}

impl AgentOptions {
    /// Whether tasks may use container networks on this agent (they still need a subnet).
    pub fn container_networking_enabled(&self) -> bool {
        self.container_networking.unwrap_or_else(crate::net::is_root)
    }

    /// The address sent to the master, given the port actually bound.
    pub fn advertised_address(&self, bound_port: u16) -> SocketAddr {
        SocketAddr::new(self.advertise_ip.unwrap_or(self.listen.ip()), bound_port)
    }
}

impl AgentSettings {
    /// Reads a TOML file of settings (same keys as the flags, e.g. `data-dir = "/srv/agent"`).
    pub fn from_file(path: &Path) -> Result<AgentSettings, crate::AgentError> {
        Ok(Self::read_file(path)?)
    }

    fn read_file(path: &Path) -> Result<AgentSettings, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })
    }

    /// Flags (self) over file.
    pub fn over(self, file: AgentSettings) -> AgentSettings {
        merge_fields!(
            self,
            file,
            listen,
            master,
            data_dir,
            advertise_ip,
            hostname,
            resources,
            attributes,
            default_kill_grace,
            sandbox_gc_age,
            sandbox_gc_disk_threshold,
            status_retry_interval,
            cgroup_root,
            executor,
            container_networking,
            bridge,
            masquerade,
        )
    }

    /// Fills defaults, detects resources and validates; errors name the setting.
    pub fn resolve(self) -> Result<AgentOptions, crate::AgentError> {
        Ok(self.resolve_settings()?)
    }

    fn resolve_settings(self) -> Result<AgentOptions, SettingsError> {
        let master = self.master.unwrap_or_else(|| "http://127.0.0.1:5050".to_owned());
        check_master_url(&master)?;
        let data_dir =
            normalize_dir(&self.data_dir.unwrap_or_else(default_data_dir)).map_err(|e| invalid("data-dir", e))?;
        let hostname = match self.hostname {
            Some(h) if h.trim().is_empty() => return Err(invalid("hostname", "must not be empty")),
            Some(h) => h,
            None => system_hostname(),
        };
        let given: Resources = match &self.resources {
            Some(text) => {
                text.parse().map_err(|e: atoll_proto::model::ResourceError| invalid("resources", e.to_string()))?
            }
            None => Resources::new(),
        };
        let resources =
            complete_resources(&given, &HostFacts::probe(&data_dir)).map_err(|m| invalid("resources", m))?;
        let attributes: Attributes = match &self.attributes {
            Some(text) => {
                text.parse().map_err(|e: atoll_proto::model::AttributeError| invalid("attributes", e.to_string()))?
            }
            None => Attributes::default(),
        };
        let threshold = self.sandbox_gc_disk_threshold.unwrap_or(0.9);
        if !(threshold.is_finite() && threshold > 0.0 && threshold <= 1.0) {
            return Err(invalid("sandbox-gc-disk-threshold", format!("{threshold} is not a fraction in (0, 1]")));
        }
        let status_retry_interval = match self.status_retry_interval {
            Some(d) if d.is_zero() => return Err(invalid("status-retry-interval", "must be greater than zero")),
            Some(d) => d,
            None => Duration::from_secs(2),
        };
        let cgroup_root = match self.cgroup_root {
            Some(root) => {
                check_cgroup_root(&root)?;
                root
            }
            None => default_cgroup_root(&data_dir),
        };
        let executor = match self.executor {
            Some(path) => path,
            None => {
                std::env::current_exe().map_err(|e| invalid("executor", format!("cannot find this program: {e}")))?
            }
        };
        let bridge = self.bridge.unwrap_or_else(|| crate::net::DEFAULT_BRIDGE.to_owned());
        crate::net::check_ifname(&bridge).map_err(|m| invalid("bridge", m))?;
        Ok(AgentOptions {
            listen: self.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5051))),
            master,
            data_dir,
            advertise_ip: self.advertise_ip,
            hostname,
            resources,
            attributes,
            default_kill_grace: self.default_kill_grace.unwrap_or(Duration::from_secs(3)),
            sandbox_gc_age: self.sandbox_gc_age.unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            sandbox_gc_disk_threshold: threshold,
            status_retry_interval,
            status_retry_max: STATUS_RETRY_MAX.max(status_retry_interval),
            cgroup_root,
            executor,
            cgroups: true,
            container_networking: self.container_networking,
            bridge,
            masquerade: self.masquerade.unwrap_or(false),
            nft: PathBuf::from(crate::net::masquerade::DEFAULT_NFT),
        })
    }
}

fn check_master_url(url: &str) -> Result<(), SettingsError> {
    let Some(rest) = url.strip_prefix("http://") else {
        let message = if url.starts_with("https://") {
            format!("`{url}`: TLS is not supported; use an http:// URL")
        } else {
            format!("`{url}` is not an http:// URL")
        };
        return Err(invalid("master", message));
    };
    if rest.trim_end_matches('/').is_empty() {
        return Err(invalid("master", format!("`{url}` has no host")));
    }
    tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|e| invalid("master", format!("`{url}`: {e}")))?;
    Ok(())
}

/// Same rules as the cgroup code applies to paths: relative, no `.`/`..`/empty components.
fn check_cgroup_root(root: &str) -> Result<(), SettingsError> {
    let bad =
        root.is_empty() || root.starts_with('/') || root.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(invalid("cgroup-root", format!("`{root}` must be a relative path like atoll/agent-1")));
    }
    Ok(())
}

fn default_data_dir() -> PathBuf {
    atoll_proto::paths::default_data_dir("agent")
}

/// Makes `dir` absolute and resolves symlinks in the part that exists, without creating
/// anything: the cgroup root is derived from this, so two spellings of one directory must
/// agree.
fn normalize_dir(dir: &Path) -> Result<PathBuf, String> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?.join(dir)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => {
                let mut out = real;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                if out.exists() && !out.is_dir() {
                    return Err(format!("{} is not a directory", out.display()));
                }
                return Ok(out);
            }
            Err(_) => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Ok(absolute);
                };
                if name == ".." {
                    return Err(format!("{}: cannot resolve `..` below a missing directory", absolute.display()));
                }
                if name != "." {
                    rest.push(name.to_owned());
                }
                existing = parent;
            }
        }
    }
}

/// `atoll/agent-<8 hex>` of an FNV-1a hash of the (normalized) data dir: stable across
/// restarts and Rust versions, and distinct for two agents on one host.
pub(crate) fn default_cgroup_root(data_dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("atoll/agent-{:08x}", (hash >> 32) as u32 ^ hash as u32)
}

fn system_hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() { "localhost".to_owned() } else { name }
}

/// What resource detection needs to know about the machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HostFacts {
    pub cpus: Option<u64>,
    pub mem_total_mib: Option<f64>,
    pub disk_free_mib: Option<f64>,
}

impl HostFacts {
    fn probe(data_dir: &Path) -> HostFacts {
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let cpus = u64::try_from(online).ok().filter(|&n| n > 0);
        let mem_total_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
        });
        let disk_free_mib = nearest_existing(data_dir).and_then(|dir| {
            rustix::fs::statvfs(dir).ok().map(|s| (s.f_bavail as f64) * (s.f_frsize as f64) / (1024.0 * 1024.0))
        });
        HostFacts { cpus, mem_total_mib, disk_free_mib }
    }
}

pub(crate) fn nearest_existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Fills in `cpus`, `mem`, `disk` and `ports` where `given` lacks them. Amounts reserve
/// headroom for the node itself (see the setting's documentation).
pub(crate) fn complete_resources(given: &Resources, facts: &HostFacts) -> Result<Resources, String> {
    let mut out = given.clone();
    let missing = |name: &str| given.get(name).is_none();
    if missing("cpus") {
        let cpus = facts.cpus.ok_or("cannot count the online cpus; give cpus:N")?;
        out.add_scalar("cpus", Scalar::from_f64(cpus as f64));
    }
    if missing("mem") {
        let total = facts.mem_total_mib.ok_or("cannot read MemTotal from /proc/meminfo; give mem:MiB")?;
        let reserve = MEM_RESERVE_MIB.min(total / 2.0);
        out.add_scalar("mem", Scalar::from_f64((total - reserve).floor()));
    }
    if missing("disk") {
        let free = facts.disk_free_mib.ok_or("cannot measure the data dir's filesystem; give disk:MiB")?;
        let reserve = DISK_RESERVE_MIB.min(free / 2.0);
        out.add_scalar("disk", Scalar::from_f64((free - reserve).floor()));
    }
    if missing("ports") {
        out.add_ranges("ports", &Ranges::from_pairs([DEFAULT_PORTS]));
    }
    if let Some(ResourceValue::Scalar(_)) = given.get("ports") {
        return Err("ports must be ranges, e.g. ports:[31000-32000]".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts { cpus: Some(4), mem_total_mib: Some(8192.0), disk_free_mib: Some(4000.0) }
    }

    #[test]
    fn missing_resources_are_detected_with_headroom() {
        let r = complete_resources(&Resources::new(), &facts()).expect("complete");
        assert_eq!(r.to_string(), "cpus:4;disk:2000;mem:7168;ports:[31000-32000]");
        let small = HostFacts { mem_total_mib: Some(1000.0), ..facts() };
        assert_eq!(
            complete_resources(&Resources::new(), &small).expect("complete").scalar("mem"),
            Scalar::from_f64(500.0)
        );
    }

    #[test]
    fn given_resources_win_and_extra_ones_are_kept() {
        let given: Resources = "cpus:0.5;gpus:1;ports:[8000-8001]".parse().expect("parse");
        let r = complete_resources(&given, &HostFacts { cpus: None, ..facts() }).expect("complete");
        assert_eq!(r.to_string(), "cpus:0.5;disk:2000;gpus:1;mem:7168;ports:[8000-8001]");
        let no_cpus = complete_resources(&Resources::new(), &HostFacts { cpus: None, ..facts() });
        assert!(no_cpus.expect_err("no cpus").contains("cpus"));
        let scalar_ports: Resources = "ports:3".parse().expect("parse");
        assert!(complete_resources(&scalar_ports, &facts()).is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_toml_uses_flag_names() {
        let file: AgentSettings = toml::from_str(
            "listen = \"127.0.0.1:6000\"\ndata-dir = \"/srv/a\"\ndefault-kill-grace = \"5s\"\n\
             sandbox-gc-disk-threshold = 0.5\n",
        )
        .expect("toml");
        let flags = AgentSettings { listen: Some("127.0.0.1:7000".parse().expect("addr")), ..Default::default() };
        let merged = flags.over(file);
        assert_eq!(merged.listen, Some("127.0.0.1:7000".parse().expect("addr")));
        assert_eq!(merged.data_dir, Some(PathBuf::from("/srv/a")));
        assert_eq!(merged.default_kill_grace, Some(Duration::from_secs(5)));
        assert_eq!(merged.sandbox_gc_disk_threshold, Some(0.5));
        let unknown = toml::from_str::<AgentSettings>("lisen = \"x\"").expect_err("unknown key");
        assert!(unknown.to_string().contains("lisen"), "{unknown}");
    }

    #[test]
    fn resolve_fills_defaults_and_names_bad_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = AgentSettings {
            data_dir: Some(dir.path().join("agent")),
            resources: Some("cpus:1;mem:128;disk:100".into()),
            ..Default::default()
        };
        let o = base.clone().resolve().expect("resolve");
        assert_eq!(o.listen, "127.0.0.1:5051".parse().expect("addr"));
        assert_eq!(o.master, "http://127.0.0.1:5050");
        assert_eq!(o.default_kill_grace, Duration::from_secs(3));
        assert_eq!(o.status_retry_interval, Duration::from_secs(2));
        assert_eq!(o.resources.to_string(), "cpus:1;disk:100;mem:128;ports:[31000-32000]");
        let real = std::fs::canonicalize(dir.path()).expect("canonicalize").join("agent");
        assert_eq!(o.data_dir, real);
        assert_eq!(o.cgroup_root, default_cgroup_root(&real));
        assert!(o.cgroup_root.starts_with("atoll/agent-") && o.cgroup_root.len() == "atoll/agent-".len() + 8);
        assert_eq!(o.advertised_address(1234), "127.0.0.1:1234".parse().expect("addr"));

        let err = |s: AgentSettings| s.resolve().expect_err("invalid").to_string();
        assert!(err(AgentSettings { resources: Some("cpus:x".into()), ..base.clone() }).starts_with("resources: "));
        assert!(err(AgentSettings { attributes: Some("rack".into()), ..base.clone() }).starts_with("attributes: "));
        assert!(err(AgentSettings { master: Some("https://m:5050".into()), ..base.clone() }).starts_with("master: "));
        assert!(err(AgentSettings { master: Some("m:5050".into()), ..base.clone() }).starts_with("master: "));
        assert!(
            err(AgentSettings { sandbox_gc_disk_threshold: Some(1.5), ..base.clone() })
                .starts_with("sandbox-gc-disk-threshold: ")
        );
        assert!(err(AgentSettings { cgroup_root: Some("/abs".into()), ..base.clone() }).starts_with("cgroup-root: "));
        assert!(
            err(AgentSettings { status_retry_interval: Some(Duration::ZERO), ..base })
                .starts_with("status-retry-interval: ")
        );
    }

    #[test]
    fn container_networking_flag_toml_and_bridge() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: AgentSettings,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
                .map(|c| c.settings)
        };
        assert_eq!(parse(&[]).expect("parse").container_networking, None);
        assert_eq!(parse(&["--container-networking"]).expect("parse").container_networking, Some(true));
        assert_eq!(parse(&["--container-networking=false"]).expect("parse").container_networking, Some(false));
        assert_eq!(parse(&["--bridge", "br7"]).expect("parse").bridge.as_deref(), Some("br7"));
        let file: AgentSettings = toml::from_str("container-networking = false\nbridge = \"atoll9\"\n").expect("toml");
        assert_eq!((file.container_networking, file.bridge.as_deref()), (Some(false), Some("atoll9")));

        let dir = tempfile::tempdir().expect("tempdir");
        let base = AgentSettings {
            data_dir: Some(dir.path().join("agent")),
            resources: Some("cpus:1;mem:128;disk:100".into()),
            ..Default::default()
        };
        let o = base.clone().resolve().expect("resolve");
        assert_eq!((o.bridge.as_str(), o.container_networking), ("atoll0", None));
        assert_eq!(o.container_networking_enabled(), crate::net::is_root());
        let off = AgentSettings { container_networking: Some(false), ..base.clone() }.resolve().expect("resolve");
        assert!(!off.container_networking_enabled());
        let err = AgentSettings { bridge: Some("far-too-long-bridge".into()), ..base }.resolve().expect_err("bad");
        assert!(err.to_string().starts_with("bridge: "), "{err}");
    }

    #[test]
    fn masquerade_is_off_unless_asked_for() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: AgentSettings,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
                .map(|c| c.settings.masquerade)
        };
        assert_eq!(parse(&[]).expect("parse"), None);
        assert_eq!(parse(&["--masquerade"]).expect("parse"), Some(true));
        assert_eq!(parse(&["--masquerade=false"]).expect("parse"), Some(false));
        let file: AgentSettings = toml::from_str("masquerade = true\n").expect("toml");
        assert_eq!(file.masquerade, Some(true));
        assert_eq!(AgentSettings { masquerade: Some(false), ..Default::default() }.over(file).masquerade, Some(false));

        let dir = tempfile::tempdir().expect("tempdir");
        let base = AgentSettings {
            data_dir: Some(dir.path().join("agent")),
            resources: Some("cpus:1;mem:128;disk:100".into()),
            ..Default::default()
        };
        let o = base.clone().resolve().expect("resolve");
        assert!(!o.masquerade);
        assert_eq!(o.nft, PathBuf::from("nft"));
        assert!(AgentSettings { masquerade: Some(true), ..base }.resolve().expect("resolve").masquerade);
    }

    #[test]
    fn config_files_are_read_and_their_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "master = \"http://10.0.0.1:5050\"\nsandbox-gc-age = \"2d\"\n").expect("write");
        let settings = AgentSettings::from_file(&path).expect("read");
        assert_eq!(settings.master.as_deref(), Some("http://10.0.0.1:5050"));
        assert_eq!(settings.sandbox_gc_age, Some(Duration::from_secs(2 * 86_400)));
        std::fs::write(&path, "default-kill-grace = \"soon\"\n").expect("write");
        let err = AgentSettings::from_file(&path).expect_err("bad duration").to_string();
        assert!(err.contains("agent.toml") && err.contains("default-kill-grace"), "{err}");
        let missing = AgentSettings::from_file(&dir.path().join("nope.toml")).expect_err("missing").to_string();
        assert!(missing.contains("nope.toml"), "{missing}");
    }

    #[test]
    fn cgroup_root_hash_is_stable() {
        assert_eq!(
            default_cgroup_root(Path::new("/var/lib/atoll/agent")),
            default_cgroup_root(Path::new("/var/lib/atoll/agent"))
        );
        assert_ne!(default_cgroup_root(Path::new("/a")), default_cgroup_root(Path::new("/b")));
    }
}
