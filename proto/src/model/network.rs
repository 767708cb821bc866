//! Container networking in the model: the subnets agents lease from IP pools, and the networks
//! a task asks to join.

use std::net::IpAddr;

pub use atoll_ipam::PoolSpec;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// A subnet of an IP pool leased to one agent; that agent's container tasks get addresses from
/// it, and other hosts route to it through the agent's address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AgentSubnet {
    pub pool: String,
    pub network: IpNetwork,
    /// The agent's bridge address in the subnet (its first host address).
    pub gateway: IpAddr,
}

/// A host port forwarded to a port of the task's own address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskPortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// A container network a task joins (Mesos `NetworkInfo`): its own network namespace and an
/// address from the agent's subnet of the pool named.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkRequest {
    /// The IP pool (network) name, e.g. `atoll`.
    pub name: String,
    /// A pinned address, when an admin asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<TaskPortMapping>,
}

/// A named VIP's address: allocated once by the master from the VIP pool, the same on every
/// node, kept across restarts (`/web:80` on framework `marathon` is `web.marathon`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VipAssignment {
    /// The framework name of the tasks that carry the label.
    pub framework: String,
    /// The VIP's name, without the leading slash (`web` for `/web:80`).
    pub name: String,
    pub address: IpAddr,
}
