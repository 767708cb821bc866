//! The crate's one error type. Every message names the pool and the CIDR, address, agent or task
//! at fault, because it ends up verbatim in a 4xx body, a failed task's reason or the CLI.

use std::fmt::{self, Display};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::Subnet;
use crate::addr::Family;

/// Which special address of a subnet a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    /// The first address of the subnet.
    Network,
    /// The subnet's gateway (the bridge address on the agent).
    Gateway,
    /// The last address of the subnet (IPv4 broadcast; kept out in IPv6 too so both families
    /// behave alike).
    Broadcast,
}

impl Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressKind::Network => "network",
            AddressKind::Gateway => "gateway",
            AddressKind::Broadcast => "broadcast",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    // ---- pool definitions ----
    #[error("invalid pool name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidPoolName { name: String },

    #[error("pool {pool}: no CIDR given")]
    NoCidrs { pool: String },

    #[error("pool {pool}: invalid CIDR {cidr}: host bits set (did you mean {network}?)")]
    InvalidCidr { pool: String, cidr: IpNetwork, network: IpNetwork },

    #[error("pool {pool}: CIDR {cidr} overlaps its own CIDR {other}")]
    OverlappingCidrs { pool: String, cidr: IpNetwork, other: IpNetwork },

    #[error("pool {pool} {cidr} overlaps pool {other_pool} {other_cidr}")]
    OverlappingPools { pool: String, cidr: IpNetwork, other_pool: String, other_cidr: IpNetwork },

    #[error(
        "pool {pool}: {family} subnet length /{len} is not valid: it must be between /1 and /{max} so that a \
         subnet holds its network, gateway and broadcast addresses and at least one task address"
    )]
    InvalidSubnetLen { pool: String, family: Family, len: u8, max: u8 },

    #[error("pool {pool}: subnet length /{len} is shorter than the prefix of {cidr}: a /{len} does not fit in it")]
    SubnetLenTooShort { pool: String, len: u8, cidr: IpNetwork },

    #[error("pool {pool}: exclusion {exclude} is not inside any CIDR of the pool")]
    ExclusionOutsidePool { pool: String, exclude: IpNetwork },

    #[error("pool {pool}: no {} subnet is left once the exclusions are taken out", fmt_lens(.lens))]
    NoUsableSubnet { pool: String, lens: Vec<u8> },

    #[error("pool {pool} already exists")]
    PoolExists { pool: String },

    #[error("unknown pool {pool}")]
    UnknownPool { pool: String },

    // ---- changes refused because of live subnet leases ----
    #[error(
        "pool {pool} has {} live subnet lease(s) (agents {}): release them before removing the pool",
        .agents.len(), list(.agents)
    )]
    PoolInUse { pool: String, agents: Vec<String> },

    #[error(
        "pool {pool}: cannot change the {family} subnet length from /{from} to /{to}: {} subnet(s) are leased \
         (agents {})",
        .agents.len(), list(.agents)
    )]
    SubnetLenInUse { pool: String, family: Family, from: u8, to: u8, agents: Vec<String> },

    #[error(
        "pool {pool}: cannot shrink: {} leased subnet(s) would fall outside the pool: {}",
        .subnets.len(), held(.subnets)
    )]
    LeasesOutsidePool { pool: String, subnets: Vec<Subnet> },

    #[error("pool {pool}: exclusion {exclude} covers subnet {subnet} leased to agent {agent}")]
    ExclusionCoversLease { pool: String, exclude: IpNetwork, subnet: IpNetwork, agent: String },

    // ---- subnet leases ----
    #[error("invalid agent id {agent:?}: it must not be empty")]
    InvalidAgentId { agent: String },

    #[error("pool {pool}: no free {} for agent {agent}", fmt_lens(.lens))]
    PoolExhausted { pool: String, agent: String, lens: Vec<u8> },

    #[error("pool {pool}: {ip} is not in the pool ({})", list(.cidrs))]
    AddressNotInPool { pool: String, ip: IpAddr, cidrs: Vec<IpNetwork> },

    #[error("pool {pool}: {ip} is not reserved")]
    NotReserved { pool: String, ip: IpAddr },

    // ---- task addresses (agent side) ----
    #[error("invalid task id {task:?}: it must not be empty")]
    InvalidTaskId { task: String },

    #[error("pool {pool}: this agent has no subnet in the pool (it must lease one from the master first)")]
    NoSubnet { pool: String },

    #[error("pool {pool}: {ip} is not in {}", fmt_subnets(.subnets))]
    AddressNotInSubnet { pool: String, ip: IpAddr, subnets: Vec<IpNetwork> },

    #[error("pool {pool}: {ip} is the {kind} address of subnet {subnet}")]
    SpecialAddress { pool: String, ip: IpAddr, kind: AddressKind, subnet: IpNetwork },

    #[error("pool {pool}: {ip} is reserved")]
    AddressReserved { pool: String, ip: IpAddr },

    #[error("pool {pool}: {ip} is taken by task {task}")]
    AddressTaken { pool: String, ip: IpAddr, task: String },

    #[error("pool {pool}: task {task} already has address {ip}")]
    TaskHasAddress { pool: String, task: String, ip: IpAddr },

    #[error("pool {pool}: {} exhausted", fmt_subnets(.subnets))]
    SubnetExhausted { pool: String, subnets: Vec<IpNetwork> },

    #[error(
        "agent {agent}: cannot drop subnet {subnet} of pool {pool}: {} address(es) still leased (tasks {})",
        .tasks.len(), list(.tasks)
    )]
    SubnetInUse { pool: String, subnet: IpNetwork, agent: String, tasks: Vec<String> },

    #[error("pool {pool}: invalid subnet {subnet}: {reason}")]
    InvalidSubnet { pool: String, subnet: IpNetwork, reason: String },
}

/// "a, b, c" — capped, because a pool can have thousands of agents and this goes into one line.
fn list<T: Display>(items: &[T]) -> String {
    const SHOWN: usize = 10;
    let mut out = items.iter().take(SHOWN).map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}

/// "/24" or "/24 or /64".
fn fmt_lens(lens: &[u8]) -> String {
    lens.iter().map(|l| format!("/{l}")).collect::<Vec<_>>().join(" or ")
}

/// "agent subnet 198.18.3.0/24" or "agent subnets 198.18.3.0/24, 2001:db8::/64".
fn fmt_subnets(nets: &[IpNetwork]) -> String {
    let noun = if nets.len() == 1 { "agent subnet" } else { "agent subnets" };
    format!("{noun} {}", list(nets))
}

/// "198.18.200.0/24 (agent a), …".
fn held(subnets: &[Subnet]) -> String {
    list(&subnets.iter().map(|s| format!("{} (agent {})", s.network, s.agent)).collect::<Vec<_>>())
}
