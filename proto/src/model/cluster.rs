//! Agents, frameworks, labels and attributes: the non-task parts of cluster state.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{AgentId, AgentSubnet, FrameworkId, Ranges, Resources, Time};

/// Key/value labels, ordered by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }
}

/// One agent attribute value, as Mesos `--attributes` allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    Scalar(f64),
    Ranges(Vec<(u64, u64)>),
    Text(String),
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::Scalar(v) => write!(f, "{v}"),
            AttributeValue::Ranges(r) => write!(f, "{}", Ranges::from_pairs(r.iter().copied())),
            AttributeValue::Text(t) => f.write_str(t),
        }
    }
}

/// Agent attributes, e.g. `rack:r1;zone:a;level:3`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(pub BTreeMap<String, AttributeValue>);

/// Why an attribute string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("attribute `{0}`: expected NAME:VALUE")]
    MissingColon(String),
    #[error("attribute `{0}` given twice")]
    Duplicate(String),
    #[error("attribute `{0}`: empty name or value")]
    Empty(String),
}

impl FromStr for Attributes {
    type Err = AttributeError;

    fn from_str(text: &str) -> Result<Attributes, AttributeError> {
        let mut attributes = BTreeMap::new();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once(':').ok_or_else(|| AttributeError::MissingColon(item.to_owned()))?;
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() || value.is_empty() {
                return Err(AttributeError::Empty(item.to_owned()));
            }
            let parsed = if let Ok(number) = value.parse::<f64>() {
                AttributeValue::Scalar(number)
            } else if value.starts_with('[') {
                match format!("r:{value}").parse::<Resources>() {
                    Ok(r) => AttributeValue::Ranges(r.ranges("r").pairs().to_vec()),
                    Err(_) => AttributeValue::Text(value.to_owned()),
                }
            } else {
                AttributeValue::Text(value.to_owned())
            };
            if attributes.insert(name.to_owned(), parsed).is_some() {
                return Err(AttributeError::Duplicate(name.to_owned()));
            }
        }
        Ok(Attributes(attributes))
    }
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{name}:{value}")?;
        }
        Ok(())
    }
}

/// What an agent tells the master about itself when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub hostname: String,
    /// The address other nodes reach the agent's HTTP API on.
    pub address: SocketAddr,
    pub resources: Resources,
    #[serde(default)]
    pub attributes: Attributes,
}

/// Where an agent stands with the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentState {
    /// Registered, heartbeating, offered.
    Active,
    /// Being drained: no offers, its tasks are being killed.
    Draining,
    /// Drained: no offers and no tasks left, until reactivated.
    Drained,
    /// Missed too many heartbeats; its tasks are unreachable.
    Unreachable,
    /// Unreachable for longer than the policy allows; removed, its tasks gone.
    Gone,
    /// Known from the registry after a master restart, not yet re-registered.
    Recovered,
    /// Not offered, by an operator's wish, while its tasks keep running; until reactivated.
    Deactivated,
}

impl AgentState {
    pub fn name(self) -> &'static str {
        match self {
            AgentState::Active => "ACTIVE",
            AgentState::Draining => "DRAINING",
            AgentState::Drained => "DRAINED",
            AgentState::Unreachable => "UNREACHABLE",
            AgentState::Gone => "GONE",
            AgentState::Recovered => "RECOVERED",
            AgentState::Deactivated => "DEACTIVATED",
        }
    }
}

/// How an agent is drained (Mesos's `DrainConfig`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainConfig {
    /// The longest grace period its tasks' kills get (their own when shorter); none: their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grace_period_secs: Option<f64>,
    /// Once drained, the agent is marked gone (its tasks gone, it may not come back).
    #[serde(default)]
    pub mark_gone: bool,
}

/// An agent as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub hostname: String,
    /// `ip:port` of the agent's HTTP API.
    pub address: SocketAddr,
    pub resources: Resources,
    /// Resources held by the agent's non-terminal tasks.
    pub used: Resources,
    pub attributes: Attributes,
    pub state: AgentState,
    /// The operator asked to drain it; kept until reactivated, across restarts.
    #[serde(default)]
    pub drain: bool,
    /// The operator asked to stop offering it, tasks left running; kept until reactivated,
    /// across restarts.
    #[serde(default)]
    pub deactivated: bool,
    /// How the operator asked to drain it (with `drain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_config: Option<DrainConfig>,
    pub registered_at: Time,
    #[serde(default)]
    pub version: String,
    /// Subnets of IP pools leased to this agent (container networking).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<AgentSubnet>,
}

impl Agent {
    /// A newly registered, active agent with nothing offered or used yet; resources and
    /// attributes are set by whoever registers it.
    pub fn registered(id: AgentId, hostname: impl Into<String>, address: SocketAddr, now: Time) -> Agent {
        Agent {
            id,
            hostname: hostname.into(),
            address,
            resources: Resources::new(),
            used: Resources::new(),
            attributes: Attributes::default(),
            state: AgentState::Active,
            drain: false,
            deactivated: false,
            drain_config: None,
            registered_at: now,
            version: String::new(),
            subnets: Vec::new(),
        }
    }
}

/// Mesos framework capabilities that change how the master treats a framework.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Capability {
    RevocableResources,
    TaskKillingState,
    GpuResources,
    SharedResources,
    /// Gets TASK_UNREACHABLE/TASK_GONE/TASK_DROPPED instead of TASK_LOST.
    PartitionAware,
    MultiRole,
    ReservationRefinement,
    RegionAware,
}

/// What a framework says about itself when it subscribes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    pub name: String,
    #[serde(default)]
    pub user: String,
    /// The role whose share the framework's allocations count against (default `*`).
    #[serde(default = "default_role")]
    pub role: String,
    /// Seconds a disconnected framework keeps its tasks before they are killed.
    #[serde(default)]
    pub failover_timeout_secs: f64,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub principal: String,
    #[serde(default)]
    pub webui_url: String,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

pub fn default_role() -> String {
    "*".to_owned()
}

impl FrameworkInfo {
    pub fn named(name: impl Into<String>) -> FrameworkInfo {
        FrameworkInfo {
            name: name.into(),
            user: String::new(),
            role: default_role(),
            failover_timeout_secs: 0.0,
            hostname: String::new(),
            principal: String::new(),
            webui_url: String::new(),
            capabilities: Vec::new(),
            labels: Labels::default(),
        }
    }

    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// A framework as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Framework {
    pub id: FrameworkId,
    pub info: FrameworkInfo,
    pub connected: bool,
    /// Runs inside the master (a built-in framework).
    pub hosted: bool,
    pub registered_at: Time,
}

impl Framework {
    /// A framework subscribed (connected) at `now`, not hosted in the master.
    pub fn subscribed(id: FrameworkId, info: FrameworkInfo, now: Time) -> Framework {
        Framework { id, info, connected: true, hosted: false, registered_at: now }
    }
}
