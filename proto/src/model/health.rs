//! Health checks: what the agent runs next to a task to tell whether it serves.

use serde::{Deserialize, Serialize};

use super::CommandInfo;

/// What one check does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthCheckKind {
    /// `GET <scheme>://<task address>:<port><path>`; a 2xx or 3xx answer is healthy.
    Http {
        port: u16,
        #[serde(default = "default_path")]
        path: String,
    },
    /// A TCP connection to the port is accepted.
    Tcp { port: u16 },
    /// The command exits 0 (run with the task's environment, in its sandbox).
    Command { command: CommandInfo },
}

fn default_path() -> String {
    "/".to_owned()
}

/// A task's health check, with Mesos's timing knobs and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(flatten)]
    pub kind: HealthCheckKind,
    /// Seconds after the task starts before the first check.
    #[serde(default = "default_delay")]
    pub delay_secs: f64,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// Seconds one check may take; longer is a failure.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Consecutive failures after which the task is killed (0: never).
    #[serde(default = "default_failures")]
    pub consecutive_failures: u32,
    /// Failures within this many seconds of the start do not count until the first success.
    #[serde(default = "default_grace")]
    pub grace_period_secs: f64,
}

fn default_delay() -> f64 {
    15.0
}
fn default_interval() -> f64 {
    10.0
}
fn default_timeout() -> f64 {
    20.0
}
fn default_failures() -> u32 {
    3
}
fn default_grace() -> f64 {
    10.0
}

impl HealthCheck {
    /// A check with Mesos's default timing.
    pub fn new(kind: HealthCheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            delay_secs: default_delay(),
            interval_secs: default_interval(),
            timeout_secs: default_timeout(),
            consecutive_failures: default_failures(),
            grace_period_secs: default_grace(),
        }
    }

    /// Why this check cannot run, if it cannot.
    pub fn problem(&self) -> Option<String> {
        for (name, value) in [
            ("delay_secs", self.delay_secs),
            ("interval_secs", self.interval_secs),
            ("timeout_secs", self.timeout_secs),
            ("grace_period_secs", self.grace_period_secs),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Some(format!("health_check.{name} must be a number >= 0"));
            }
        }
        if self.interval_secs <= 0.0 || self.timeout_secs <= 0.0 {
            return Some("health_check.interval_secs and timeout_secs must be greater than 0".into());
        }
        match &self.kind {
            HealthCheckKind::Http { port, path } => {
                if *port == 0 {
                    return Some("health_check.port must not be 0".into());
                }
                if !path.starts_with('/') {
                    return Some(format!("health_check.path `{path}` must start with '/'"));
                }
            }
            HealthCheckKind::Tcp { port } if *port == 0 => return Some("health_check.port must not be 0".into()),
            HealthCheckKind::Tcp { .. } => {}
            HealthCheckKind::Command { command } => return command.problem().map(|p| format!("health_check.{p}")),
        }
        None
    }
}
