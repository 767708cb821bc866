//! Long-running apps (Marathon-compatible definitions) and their deployments, as the built-in
//! services framework keeps them and the event log carries them.
//!
//! The JSON shape is Marathon's (camelCase, the same field names and defaults), so definitions
//! written for Marathon deploy unchanged; unknown fields are refused. Parsing only checks
//! shapes and types; the meaning (ranges, exclusive fields, constraints) is checked by the
//! services framework, which names the JSON path of every problem.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Time;

/// An app id: an absolute path such as `/shop/web`, kept normalized (leading slash, no
/// trailing slash, no empty segments).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(pub String);

impl AppId {
    /// Normalizes `shop/web`, `/shop/web/` and `//shop/web` to `/shop/web`. Segments must be
    /// lowercase letters, digits, '-' or '.', not start or end with '-' or '.', as Marathon
    /// requires; `..` and `.` are refused.
    pub fn parse(text: &str) -> Result<AppId, String> {
        let segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return Err("must name an app, e.g. /shop/web".into());
        }
        for segment in &segments {
            let valid = segment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && !segment.starts_with(['-', '.'])
                && !segment.ends_with(['-', '.']);
            if !valid {
                return Err(format!(
                    "segment `{segment}` must be lowercase letters, digits, '-' or '.', and start and end with a letter or digit"
                ));
            }
        }
        Ok(AppId(format!("/{}", segments.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, outermost first: `/shop/web` → `["shop", "web"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// Marathon's task name: the segments innermost first, joined by '.' (`/shop/web` →
    /// `web.shop`), so DNS names read `web.shop.marathon.mesos`.
    pub fn task_name(&self) -> String {
        let mut segments: Vec<&str> = self.segments().collect();
        segments.reverse();
        segments.join(".")
    }

    /// The prefix of this app's task ids: `/shop/web` → `shop_web`.
    pub fn task_id_prefix(&self) -> String {
        self.segments().collect::<Vec<_>>().join("_")
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host port an app asks for (host networking).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortDefinition {
    /// 0: any offered port; otherwise the port wanted (required only with `requirePorts`).
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_protocol() -> String {
    "tcp".to_owned()
}

/// A network an app joins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// `host` or `container` (`container/bridge` is accepted and refused with a reason).
    #[serde(default = "default_network_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Atoll: a pinned address for the (single) instance on a container network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<std::net::IpAddr>,
}

fn default_network_mode() -> String {
    "host".to_owned()
}

/// A container port and how it is reached (container networking).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: u32,
    /// Absent: no host port; 0: any offered port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `container`: only the Mesos containerizer (`MESOS`), as there is no Docker engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(rename = "type", default = "default_container_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

fn default_container_type() -> String {
    "MESOS".to_owned()
}

/// The command of a COMMAND health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCommand {
    pub value: String,
}

/// A Marathon health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckDefinition {
    /// `MESOS_HTTP`, `MESOS_TCP` or `COMMAND` (`HTTP` and `TCP` are taken as their MESOS_ forms).
    #[serde(default = "default_health_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which of the app's ports to check (default 0), unless `port` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<HealthCommand>,
    #[serde(default = "default_grace_period")]
    pub grace_period_seconds: f64,
    #[serde(default = "default_interval")]
    pub interval_seconds: f64,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "default_max_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default = "default_delay")]
    pub delay_seconds: f64,
}

fn default_health_protocol() -> String {
    "MESOS_HTTP".to_owned()
}
fn default_grace_period() -> f64 {
    300.0
}
fn default_interval() -> f64 {
    60.0
}
fn default_timeout() -> f64 {
    20.0
}
fn default_max_failures() -> u32 {
    3
}
fn default_delay() -> f64 {
    15.0
}

/// How a new version replaces the old one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeStrategy {
    /// Fraction of `instances` that must stay healthy during an upgrade (0 to 1).
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    /// Fraction of `instances` that may run on top of them during an upgrade (0 to 1).
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0 }
    }
}

/// A Marathon app definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppDefinition {
    /// Checked and normalized by the services framework (`AppId::parse`).
    pub id: String,
    #[serde(default = "one_instance")]
    pub instances: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// MiB.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// MiB.
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Absent with host networking: one port, any offered (Marathon's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheckDefinition>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    /// `[["hostname", "UNIQUE"], ["rack", "GROUP_BY", "3"], ["rack", "LIKE", "r[12]"], …]`.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default = "default_backoff")]
    pub backoff_seconds: f64,
    #[serde(default = "default_backoff_factor")]
    pub backoff_factor: f64,
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
}

fn one_instance() -> u32 {
    1
}
fn default_cpus() -> f64 {
    1.0
}
fn default_mem() -> f64 {
    128.0
}
fn default_backoff() -> f64 {
    1.0
}
fn default_backoff_factor() -> f64 {
    1.15
}
fn default_max_launch_delay() -> f64 {
    300.0
}

/// An app as the services framework keeps it: its definition and the version that
/// definition is (a timestamp, as Marathon's versions are).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: AppId,
    pub definition: AppDefinition,
    /// When this definition was deployed; tasks carry it so old and new versions are told apart.
    pub version: Time,
    /// When the app's definition last changed in a way that needs new tasks (not a scale).
    pub config_version: Time,
}

/// What a deployment does to an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeploymentAction {
    StartApplication,
    ScaleApplication,
    RestartApplication,
    StopApplication,
}

/// How a deployment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentOutcome {
    Succeeded,
    /// Superseded by a forced change, or cancelled.
    Canceled,
    Failed,
}

/// A change in progress, kept until the app matches its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub app_id: AppId,
    pub action: DeploymentAction,
    /// The app version this deployment brings about (`App::version`).
    pub version: Time,
    /// The definition before the change, for a rollback; absent for a new app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<AppDefinition>,
    pub started_at: Time,
}
