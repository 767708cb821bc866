//! `atoll edge` settings: flags and TOML share one typed shape (flags win), resolved and
//! checked into the options the proxy runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Edge proxy settings; every field is a flag and a TOML key (kebab-case).
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EdgeSettings {
    /// Plain HTTP listener (HTTP/1.1 and HTTP/2 without TLS) [default: 0.0.0.0:80]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// TLS listener (HTTP/1.1 and HTTP/2 by ALPN), certificates by SNI from --cert-dir
    /// [default: none]
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// Admin API: /v1/routes, /_haproxy_getvhostmap, /metrics, /health [default: 127.0.0.1:9090]
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Directory of certificates for --tls-listen: HOST.crt and HOST.key (PEM) per host,
    /// `_.example.com.crt` for *.example.com, `default.crt` for other names; re-read when
    /// they change [default: /etc/atoll/certs]
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// The group of apps this edge serves (HAPROXY_GROUP, ATOLL_EDGE_GROUP); `*` for all
    /// [default: external]
    #[arg(long)]
    pub group: Option<String>,
    /// Largest request body accepted, in bytes (413 beyond) [default: 10485760]
    #[arg(long)]
    pub max_request_body: Option<u64>,
    /// Largest request head accepted (request line and headers), in bytes (431 beyond)
    /// [default: 65536]
    #[arg(long)]
    pub max_request_headers: Option<u64>,
    /// Time to connect to a backend before trying another [default: 2s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    /// Time a backend may take to answer (504 beyond) [default: 60s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub response_timeout: Option<Duration>,
    /// Other backends tried after a connection failure [default: 2]
    #[arg(long)]
    pub retries: Option<u32>,
    /// On SIGTERM/SIGINT: time requests in flight get to finish [default: 5s]
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub grace_period: Option<Duration>,
    /// Follow a Marathon (`/v2/apps?embed=apps.tasks`, read when its /v2/events announce a
    /// change) instead of the Atoll master's event stream: a drop-in for Marathon-LB on an
    /// existing Mesos/Marathon cluster, e.g. http://marathon.mesos:8080. Not together with
    /// --mesos-master
    #[arg(long)]
    pub marathon: Option<String>,
    /// Follow an Apache Mesos master's operator API event stream instead of the Atoll
    /// master's, e.g. http://mesos-master:5050: the routes come from the labels Marathon copies
    /// onto its tasks (HAPROXY_*, ATOLL_EDGE_*), tasks grouped into apps by their Marathon task
    /// ids. Not together with --marathon
    #[arg(long)]
    pub mesos_master: Option<String>,
    /// Atoll master URL (the global --master on the command line) [default: http://127.0.0.1:5050]
    #[arg(skip)]
    pub master: Option<String>,
}

/// What the proxy runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeOptions {
    pub listen: SocketAddr,
    pub tls_listen: Option<SocketAddr>,
    pub admin_listen: SocketAddr,
    pub cert_dir: PathBuf,
    pub group: String,
    pub max_request_body: u64,
    pub max_request_headers: u64,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    pub grace_period: Duration,
    pub master: String,
    /// Follow this Marathon (its base URL, without a trailing slash) instead of `master`.
    pub marathon: Option<String>,
    /// Follow this Mesos master (its base URL, without a trailing slash) instead of `master`.
    pub mesos_master: Option<String>,
}

impl EdgeSettings {
    pub fn from_file(path: &Path) -> Result<EdgeSettings, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })
    }

    /// Flags (self) over file.
    pub fn over(self, file: EdgeSettings) -> EdgeSettings {
        EdgeSettings {
            listen: self.listen.or(file.listen),
            tls_listen: self.tls_listen.or(file.tls_listen),
            admin_listen: self.admin_listen.or(file.admin_listen),
            cert_dir: self.cert_dir.or(file.cert_dir),
            group: self.group.or(file.group),
            max_request_body: self.max_request_body.or(file.max_request_body),
            max_request_headers: self.max_request_headers.or(file.max_request_headers),
            connect_timeout: self.connect_timeout.or(file.connect_timeout),
            response_timeout: self.response_timeout.or(file.response_timeout),
            retries: self.retries.or(file.retries),
            grace_period: self.grace_period.or(file.grace_period),
            master: self.master.or(file.master),
            marathon: self.marathon.or(file.marathon),
            mesos_master: self.mesos_master.or(file.mesos_master),
        }
    }

    pub fn resolve(self) -> Result<EdgeOptions, SettingsError> {
        let listen = self.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 80)));
        let admin_listen = self.admin_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090)));
        if admin_listen == listen {
            return Err(invalid("admin-listen", format!("{admin_listen} is also the --listen address")));
        }
        if self.tls_listen.is_some_and(|tls| tls == listen || tls == admin_listen) {
            return Err(invalid("tls-listen", "must differ from --listen and --admin-listen"));
        }
        let group = self.group.unwrap_or_else(|| atoll_lb_core::edge::DEFAULT_GROUP.to_owned());
        if group.is_empty() || group.contains(',') || group.contains(char::is_whitespace) {
            return Err(invalid("group", format!("`{group}` is not one group name (or *)")));
        }
        let positive = |key: &'static str, value: Option<Duration>, default: Duration| match value {
            Some(d) if d.is_zero() => Err(invalid(key, "must be longer than 0s")),
            Some(d) => Ok(d),
            None => Ok(default),
        };
        let max_request_body = self.max_request_body.unwrap_or(10 << 20);
        if max_request_body == 0 {
            return Err(invalid("max-request-body", "must be positive"));
        }
        let max_request_headers = self.max_request_headers.unwrap_or(64 << 10);
        if max_request_headers < 1024 {
            return Err(invalid("max-request-headers", "must be at least 1024 bytes"));
        }
        // One source of routes: the two would each publish whole tables over the other's.
        if self.marathon.is_some() && self.mesos_master.is_some() {
            return Err(invalid(
                "mesos-master",
                "--mesos-master and --marathon are both sources of routes: give one of them",
            ));
        }
        let mesos_master = self
            .mesos_master
            .as_deref()
            .map(|url| atoll_mesos_follow::base_url(url).map_err(|e| invalid("mesos-master", e)))
            .transpose()?;
        Ok(EdgeOptions {
            listen,
            tls_listen: self.tls_listen,
            admin_listen,
            cert_dir: self.cert_dir.unwrap_or_else(|| PathBuf::from("/etc/atoll/certs")),
            group,
            max_request_body,
            max_request_headers,
            connect_timeout: positive("connect-timeout", self.connect_timeout, Duration::from_secs(2))?,
            response_timeout: positive("response-timeout", self.response_timeout, Duration::from_secs(60))?,
            retries: self.retries.unwrap_or(2).min(16),
            grace_period: self.grace_period.unwrap_or(Duration::from_secs(5)),
            master: self.master.unwrap_or_else(|| "http://127.0.0.1:5050".into()),
            marathon: self
                .marathon
                .as_deref()
                .map(|url| atoll_mesos_follow::base_url(url).map_err(|e| invalid("marathon", e)))
                .transpose()?,
            mesos_master,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_key(settings: EdgeSettings) -> &'static str {
        match settings.resolve() {
            Err(SettingsError::Invalid { key, .. }) => key,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_resolve_and_bad_values_name_their_setting() {
        let options = EdgeSettings::default().resolve().unwrap();
        assert_eq!(options.listen.port(), 80);
        assert_eq!(options.group, "external");
        assert_eq!(options.tls_listen, None);
        let same = "127.0.0.1:9090".parse().ok();
        assert_eq!(error_key(EdgeSettings { listen: same, ..Default::default() }), "admin-listen");
        assert_eq!(error_key(EdgeSettings { tls_listen: same, ..Default::default() }), "tls-listen");
        assert_eq!(error_key(EdgeSettings { group: Some("a,b".into()), ..Default::default() }), "group");
        assert_eq!(
            error_key(EdgeSettings { connect_timeout: Some(Duration::ZERO), ..Default::default() }),
            "connect-timeout"
        );
        assert_eq!(error_key(EdgeSettings { max_request_body: Some(0), ..Default::default() }), "max-request-body");
    }

    #[test]
    fn a_mesos_master_is_one_source_of_routes() {
        let file: EdgeSettings = toml::from_str("mesos-master = \"http://mesos.example:5050/\"\n").unwrap();
        let options = EdgeSettings::default().over(file.clone()).resolve().unwrap();
        assert_eq!(options.mesos_master.as_deref(), Some("http://mesos.example:5050"));
        assert_eq!(options.marathon, None);
        assert_eq!(EdgeSettings::default().resolve().unwrap().mesos_master, None);
        // With a Marathon as well, from the flags or the file: refused, naming both.
        let marathon = EdgeSettings { marathon: Some("http://marathon.example:8080".into()), ..Default::default() };
        for settings in
            [marathon.clone().over(file), EdgeSettings { mesos_master: Some("http://m:5050".into()), ..marathon }]
        {
            match settings.resolve() {
                Err(SettingsError::Invalid { key: "mesos-master", message }) => {
                    assert!(message.contains("--mesos-master") && message.contains("--marathon"), "{message}")
                }
                other => panic!("expected the two sources refused, got {other:?}"),
            }
        }
        for bad in ["mesos.example:5050", "https://mesos.example", "http://", "http:///api", "http://a b"] {
            let settings = EdgeSettings { mesos_master: Some(bad.into()), ..Default::default() };
            assert_eq!(error_key(settings), "mesos-master", "{bad}");
            let settings = EdgeSettings { marathon: Some(bad.into()), ..Default::default() };
            assert_eq!(error_key(settings), "marathon", "{bad}");
        }
    }

    #[test]
    fn the_file_takes_the_same_keys_and_refuses_unknown_ones() {
        let file: EdgeSettings = toml::from_str("group = \"internal\"\nconnect-timeout = \"500ms\"\n").unwrap();
        let flags = EdgeSettings { group: Some("public".into()), ..Default::default() };
        let options = flags.over(file).resolve().unwrap();
        assert_eq!(options.group, "public");
        assert_eq!(options.connect_timeout, Duration::from_millis(500));
        let error = toml::from_str::<EdgeSettings>("groups = \"x\"\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `groups`"), "{error}");
    }
}
