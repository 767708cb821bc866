//! Atoll IPAM: pure allocation logic for address pools, per-agent subnets and per-task addresses.
//!
//! # Model
//!
//! Two levels, two owners, so that starting a task never waits for the master:
//!
//! * **The master is the authority over pools and subnet leases** ([`Pools`]). A network admin
//!   defines named pools ([`PoolSpec`]: IPv4 and/or IPv6 CIDRs, a subnet length per family,
//!   exclusions, reserved addresses). Each agent that needs addresses from a pool leases one subnet
//!   of it (`/24` of `198.18.0.0/16` by default, see [`default_pool`]); the gateway (the agent's
//!   bridge address) is the first host address of that subnet. Two agents never hold overlapping
//!   subnets, and an agent asking again gets the same subnet back, so a restarted agent keeps its
//!   subnet. The master persists [`Pools`] (it is serde) and announces changes on the event log.
//! * **Each agent allocates task addresses locally** ([`Leases`]) within the subnets the master
//!   gave it: the lowest free host address, or one an admin pinned. No other agent can hand out
//!   an address in those subnets, so no round trip and no coordination are needed, and a
//!   duplicate address across the cluster is impossible as long as the subnets are disjoint. The
//!   agent persists [`Leases`] (serde) so a restarted agent's tasks keep their addresses.
//!
//! **Reconciliation**: after a restart the agent loads its [`Leases`] and calls
//! [`Leases::retain_tasks`] with the tasks that are still alive; every lease of a task that is
//! gone is released (nothing leaks). The master only releases an agent's subnet once the agent is
//! gone or has no tasks on the pool ([`Leases::set_subnets`] refuses to drop a subnet in use).
//!
//! **Exclusions** work at subnet granularity: a subnet that touches an excluded range is never
//! leased, so an agent's subnet is always wholly usable and agents need no exclusion list. To
//! keep single addresses away from tasks, reserve them ([`Pools::reserve`]); the agents whose
//! subnet contains a reserved address learn it through [`Pools::reserved_of`].
//!
//! A pool with several CIDRs hands out subnets from the first CIDR (in the spec's order) that has
//! room; an agent holds one subnet per pool and a task gets one address per pool (a dual-stack
//! task uses one IPv4 and one IPv6 pool).
//!
//! # Guarantees
//!
//! Every mutating method either applies fully or returns an [`IpamError`] and changes nothing.
//! Allocation never scans address space: free subnets and free addresses are kept as sets of
//! ranges, so a fresh IPv6 /64 costs the same as an IPv4 /24 and every operation is O(log n).
//! This crate has no I/O, clock or randomness; both sides wrap it in their own persistence.

mod addr;
mod error;
mod interval;
mod leases;
mod pools;

use std::net::IpAddr;

pub use addr::Family;
pub use error::{AddressKind, IpamError};
pub use ipnetwork::IpNetwork;
pub use leases::Leases;
pub use pools::Pools;
use serde::{Deserialize, Serialize};

/// The name of the pool every cluster starts with.
pub const DEFAULT_POOL: &str = "atoll";
/// Default IPv4 subnet length leased to each agent.
pub const DEFAULT_SUBNET_LEN_V4: u8 = 24;
/// Default IPv6 subnet length leased to each agent.
pub const DEFAULT_SUBNET_LEN_V6: u8 = 64;

/// A named address pool, as a network admin defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Name of the pool, as apps refer to it (`networks[].name`); letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The pool's address ranges, IPv4 and/or IPv6, without host bits; no two may overlap, nor
    /// overlap another pool. Subnets are taken from the first CIDR with room.
    pub cidrs: Vec<IpNetwork>,
    /// Prefix length of the subnet each agent leases from the IPv4 CIDRs (at most /30).
    #[serde(default = "default_subnet_len_v4")]
    pub subnet_len_v4: u8,
    /// Prefix length of the subnet each agent leases from the IPv6 CIDRs (at most /126).
    #[serde(default = "default_subnet_len_v6")]
    pub subnet_len_v6: u8,
    /// Ranges never handed out; a subnet touching one of them is never leased.
    #[serde(default)]
    pub exclude: Vec<IpNetwork>,
    /// Single addresses no task may get (routers, hosts already using them, …).
    #[serde(default)]
    pub reserved: Vec<IpAddr>,
}

fn default_subnet_len_v4() -> u8 {
    DEFAULT_SUBNET_LEN_V4
}

fn default_subnet_len_v6() -> u8 {
    DEFAULT_SUBNET_LEN_V6
}

impl PoolSpec {
    /// A pool with the default subnet lengths and no exclusions or reservations.
    pub fn new(name: impl Into<String>, cidrs: Vec<IpNetwork>) -> PoolSpec {
        PoolSpec {
            name: name.into(),
            cidrs,
            subnet_len_v4: DEFAULT_SUBNET_LEN_V4,
            subnet_len_v6: DEFAULT_SUBNET_LEN_V6,
            exclude: Vec::new(),
            reserved: Vec::new(),
        }
    }

    /// The subnet length for one family.
    pub fn subnet_len(&self, family: Family) -> u8 {
        match family {
            Family::V4 => self.subnet_len_v4,
            Family::V6 => self.subnet_len_v6,
        }
    }
}

/// The default is the cluster's default pool, [`default_pool`].
impl Default for PoolSpec {
    fn default() -> PoolSpec {
        default_pool()
    }
}

/// The pool every cluster starts with: `atoll` = 198.18.0.0/16 (inside the benchmark range, so it
/// never collides with real networks), one /24 per agent.
pub fn default_pool() -> PoolSpec {
    PoolSpec::new(DEFAULT_POOL, vec!["198.18.0.0/16".parse().expect("valid literal")])
}

/// A subnet of a pool leased to one agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subnet {
    pub pool: String,
    pub network: IpNetwork,
    /// The first host address of the subnet: the agent's bridge address and its tasks' default route.
    pub gateway: IpAddr,
    #[serde(rename = "agent_id")]
    pub agent: String,
}

/// A task's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub ip: IpAddr,
    pub pool: String,
    /// The agent subnet the address is in (the task's prefix length comes from here).
    pub subnet: IpNetwork,
    pub gateway: IpAddr,
    #[serde(rename = "agent_id")]
    pub agent: String,
    #[serde(rename = "task_id")]
    pub task: String,
}

/// How full a pool is, for `atoll ipam pool show` and `/v1/ipam/pools/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub pool: String,
    /// Subnets the pool can hand out (exclusions taken out).
    pub subnets_total: u128,
    pub subnets_leased: u128,
    pub subnets_free: u128,
    /// The leased subnets, by address: which agent holds which.
    pub subnets: Vec<Subnet>,
}
