//! The master's side: pools and which agent holds which subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::addr::{self, Family, Span};
use crate::interval::IntervalSet;
use crate::{IpamError, PoolSpec, PoolUsage, Subnet};

/// All pools and their subnet leases. Every method either applies fully or changes nothing.
///
/// Persisted by the master as its pool specs plus, per pool, which agent holds which subnet; the
/// free-subnet index is rebuilt (and the whole state re-validated) on deserialization.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PoolsRepr", into = "PoolsRepr")]
pub struct Pools {
    pools: BTreeMap<String, Pool>,
}

/// One pool: its spec and the state derived from it plus the leases.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pool {
    spec: PoolSpec,
    /// One per CIDR, in the spec's order (that order is the allocation preference).
    blocks: Vec<Block>,
    /// agent → leased subnet.
    leases: BTreeMap<String, IpNetwork>,
    /// Network address of each leased subnet → agent, to find whose subnet an address is in.
    owners: BTreeMap<IpAddr, String>,
}

/// One CIDR of a pool, cut into subnets numbered from 0.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    span: Span,
    /// Subnet length for this CIDR's family.
    len: u8,
    /// log2 of the subnet size: subnet `i` starts at `span.lo + (i << shift)`.
    shift: u32,
    /// Subnets not touched by an exclusion.
    usable: u128,
    /// Indices of the subnets neither excluded nor leased.
    free: IntervalSet,
}

impl Block {
    fn index_of(&self, ip: u128) -> u128 {
        (ip - self.span.lo) >> self.shift
    }

    fn network(&self, index: u128) -> IpNetwork {
        addr::network(self.span.family, self.span.lo + (index << self.shift), self.len)
    }
}

fn subnet(pool: &str, network: IpNetwork, agent: &str) -> Subnet {
    let span = Span::of(&network);
    Subnet {
        pool: pool.to_string(),
        network,
        gateway: addr::from_u128(span.family, span.lo + 1),
        agent: agent.to_string(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a spec on its own (not against other pools or leases).
fn validate_spec(spec: &PoolSpec) -> Result<(), IpamError> {
    let pool = || spec.name.clone();
    if !valid_name(&spec.name) {
        return Err(IpamError::InvalidPoolName { name: spec.name.clone() });
    }
    if spec.cidrs.is_empty() {
        return Err(IpamError::NoCidrs { pool: pool() });
    }
    for family in [Family::V4, Family::V6] {
        let len = spec.subnet_len(family);
        // Both lengths are checked even if the pool has no CIDR of that family, so a typo is
        // caught now rather than when a CIDR of the other family is added.
        if len == 0 || len > family.max_subnet_len() {
            return Err(IpamError::InvalidSubnetLen { pool: pool(), family, len, max: family.max_subnet_len() });
        }
    }
    for (i, cidr) in spec.cidrs.iter().enumerate() {
        if addr::has_host_bits(cidr) {
            return Err(IpamError::InvalidCidr { pool: pool(), cidr: *cidr, network: strip(cidr) });
        }
        let len = spec.subnet_len(Family::of_net(cidr));
        if len < cidr.prefix() {
            return Err(IpamError::SubnetLenTooShort { pool: pool(), len, cidr: *cidr });
        }
        if let Some(other) = spec.cidrs[..i].iter().find(|o| Span::of(o).overlaps(&Span::of(cidr))) {
            return Err(IpamError::OverlappingCidrs { pool: pool(), cidr: *cidr, other: *other });
        }
    }
    for exclude in &spec.exclude {
        if addr::has_host_bits(exclude) {
            return Err(IpamError::InvalidCidr { pool: pool(), cidr: *exclude, network: strip(exclude) });
        }
        if !spec.cidrs.iter().any(|c| Span::of(c).overlaps(&Span::of(exclude))) {
            return Err(IpamError::ExclusionOutsidePool { pool: pool(), exclude: *exclude });
        }
    }
    for ip in &spec.reserved {
        if !spec.cidrs.iter().any(|c| Span::of(c).contains_ip(*ip)) {
            return Err(IpamError::AddressNotInPool { pool: pool(), ip: *ip, cidrs: spec.cidrs.clone() });
        }
    }
    Ok(())
}

/// The network a CIDR with host bits meant.
fn strip(cidr: &IpNetwork) -> IpNetwork {
    addr::network(Family::of_net(cidr), Span::of(cidr).lo, cidr.prefix())
}

/// Checks that no CIDR of `spec` overlaps a CIDR of another pool.
fn check_overlaps<'a>(spec: &PoolSpec, others: impl Iterator<Item = &'a PoolSpec>) -> Result<(), IpamError> {
    for other in others.filter(|o| o.name != spec.name) {
        for cidr in &spec.cidrs {
            if let Some(o) = other.cidrs.iter().find(|o| Span::of(o).overlaps(&Span::of(cidr))) {
                return Err(IpamError::OverlappingPools {
                    pool: spec.name.clone(),
                    cidr: *cidr,
                    other_pool: other.name.clone(),
                    other_cidr: *o,
                });
            }
        }
    }
    Ok(())
}

impl Pool {
    /// Builds a pool from a validated spec and its leases, checking that every lease is a subnet
    /// of the pool, clear of the exclusions and of the other leases.
    fn build(spec: PoolSpec, leases: BTreeMap<String, IpNetwork>) -> Result<Pool, IpamError> {
        let mut blocks = Vec::with_capacity(spec.cidrs.len());
        for cidr in &spec.cidrs {
            let span = Span::of(cidr);
            let len = spec.subnet_len(span.family);
            let shift = u32::from(span.family.bits() - len);
            let mut free = IntervalSet::new();
            free.insert(0, (1u128 << (len - cidr.prefix())) - 1);
            for exclude in &spec.exclude {
                let ex = Span::of(exclude);
                if ex.overlaps(&span) {
                    let (lo, hi) = (ex.lo.max(span.lo), ex.hi.min(span.hi));
                    free.remove((lo - span.lo) >> shift, (hi - span.lo) >> shift);
                }
            }
            blocks.push(Block { span, len, shift, usable: free.len(), free });
        }
        if blocks.iter().all(|b| b.usable == 0) {
            let lens = spec_lens(&spec);
            return Err(IpamError::NoUsableSubnet { pool: spec.name, lens });
        }

        let outside: Vec<Subnet> = leases
            .iter()
            .filter(|(_, net)| !blocks.iter().any(|b| b.span.contains(&Span::of(net))))
            .map(|(agent, net)| subnet(&spec.name, *net, agent))
            .collect();
        if !outside.is_empty() {
            return Err(IpamError::LeasesOutsidePool { pool: spec.name, subnets: outside });
        }

        let mut owners = BTreeMap::new();
        for (agent, net) in &leases {
            let span = Span::of(net);
            let invalid = |reason: String| IpamError::InvalidSubnet { pool: spec.name.clone(), subnet: *net, reason };
            let block = blocks.iter_mut().find(|b| b.span.contains(&span)).expect("checked above");
            if net.prefix() != block.len || addr::has_host_bits(net) {
                return Err(invalid(format!("agent {agent}'s subnet is not a /{} of the pool", block.len)));
            }
            if let Some(exclude) = spec.exclude.iter().find(|e| Span::of(e).overlaps(&span)) {
                return Err(IpamError::ExclusionCoversLease {
                    pool: spec.name.clone(),
                    exclude: *exclude,
                    subnet: *net,
                    agent: agent.clone(),
                });
            }
            if !block.free.remove_point(block.index_of(span.lo)) {
                let other = owners.get(&net.network()).cloned().unwrap_or_default();
                return Err(invalid(format!("leased to both agent {other} and agent {agent}")));
            }
            owners.insert(net.network(), agent.clone());
        }
        Ok(Pool { spec, blocks, leases, owners })
    }

    fn subnet_of(&self, agent: &str) -> Option<Subnet> {
        self.leases.get(agent).map(|net| subnet(&self.spec.name, *net, agent))
    }

    /// The leased subnet an address falls in, if any.
    fn owner_of(&self, ip: IpAddr) -> Option<Subnet> {
        let block = self.blocks.iter().find(|b| b.span.contains_ip(ip))?;
        let index = block.index_of(addr::to_u128(ip));
        let network = block.network(index);
        let agent = self.owners.get(&network.network())?;
        Some(subnet(&self.spec.name, network, agent))
    }

    fn agents(&self) -> Vec<String> {
        self.leases.keys().cloned().collect()
    }
}

/// The subnet lengths of the families a pool has, for messages ("/24", "/24 or /64").
fn spec_lens(spec: &PoolSpec) -> Vec<u8> {
    let families: BTreeSet<Family> = spec.cidrs.iter().map(Family::of_net).collect();
    families.into_iter().map(|f| spec.subnet_len(f)).collect()
}

impl Pools {
    /// No pools. (The master adds [`crate::default_pool`] when it bootstraps a cluster.)
    pub fn new() -> Pools {
        Pools::default()
    }

    pub fn add_pool(&mut self, spec: PoolSpec) -> Result<(), IpamError> {
        if !valid_name(&spec.name) {
            return Err(IpamError::InvalidPoolName { name: spec.name });
        }
        if self.pools.contains_key(&spec.name) {
            return Err(IpamError::PoolExists { pool: spec.name });
        }
        validate_spec(&spec)?;
        check_overlaps(&spec, self.pools())?;
        let pool = Pool::build(spec, BTreeMap::new())?;
        self.pools.insert(pool.spec.name.clone(), pool);
        Ok(())
    }

    /// Replaces a pool's spec. Growing is always fine; a change is refused if a leased subnet
    /// would fall outside the pool or under an exclusion, or if the subnet length of a family
    /// with leased subnets changes (their agents' addresses would no longer match).
    pub fn update_pool(&mut self, spec: PoolSpec) -> Result<(), IpamError> {
        let Some(old) = self.pools.get(&spec.name) else {
            return Err(IpamError::UnknownPool { pool: spec.name });
        };
        validate_spec(&spec)?;
        check_overlaps(&spec, self.pools())?;
        for family in [Family::V4, Family::V6] {
            let (from, to) = (old.spec.subnet_len(family), spec.subnet_len(family));
            let agents: Vec<String> =
                old.leases.iter().filter(|(_, net)| Family::of_net(net) == family).map(|(a, _)| a.clone()).collect();
            if from != to && !agents.is_empty() {
                return Err(IpamError::SubnetLenInUse { pool: spec.name, family, from, to, agents });
            }
        }
        let pool = Pool::build(spec, old.leases.clone())?;
        self.pools.insert(pool.spec.name.clone(), pool);
        Ok(())
    }

    /// Removes a pool; refused while any agent holds a subnet of it.
    pub fn remove_pool(&mut self, name: &str) -> Result<PoolSpec, IpamError> {
        let pool = self.get(name)?;
        if !pool.leases.is_empty() {
            return Err(IpamError::PoolInUse { pool: name.to_string(), agents: pool.agents() });
        }
        Ok(self.pools.remove(name).expect("looked up above").spec)
    }

    /// The agent's subnet of `pool`: the one it already holds (so asking again, e.g. after a
    /// restart, is harmless), else the lowest free subnet of the first CIDR with room.
    pub fn lease_subnet(&mut self, pool: &str, agent: &str) -> Result<Subnet, IpamError> {
        if agent.is_empty() {
            return Err(IpamError::InvalidAgentId { agent: agent.to_string() });
        }
        let p = self.get_mut(pool)?;
        if let Some(held) = p.subnet_of(agent) {
            return Ok(held);
        }
        let Some(block) = p.blocks.iter_mut().find(|b| b.free.len() > 0) else {
            return Err(IpamError::PoolExhausted {
                pool: pool.to_string(),
                agent: agent.to_string(),
                lens: spec_lens(&p.spec),
            });
        };
        let index = block.free.first().expect("non-empty");
        block.free.remove_point(index);
        let network = block.network(index);
        p.leases.insert(agent.to_string(), network);
        p.owners.insert(network.network(), agent.to_string());
        Ok(subnet(pool, network, agent))
    }

    /// Gives the agent's subnet back to the pool. The caller makes sure the agent no longer uses
    /// it (the agent is gone, or its `Leases::set_subnets` without it succeeded).
    pub fn release_subnet(&mut self, pool: &str, agent: &str) -> Result<Option<Subnet>, IpamError> {
        let p = self.get_mut(pool)?;
        let Some(network) = p.leases.remove(agent) else {
            return Ok(None);
        };
        p.owners.remove(&network.network());
        let span = Span::of(&network);
        let block = p.blocks.iter_mut().find(|b| b.span.contains(&span)).expect("leases lie inside the pool");
        let index = block.index_of(span.lo);
        block.free.insert(index, index);
        Ok(Some(subnet(pool, network, agent)))
    }

    /// The subnets an agent holds, by pool name.
    pub fn subnets_of(&self, agent: &str) -> Vec<Subnet> {
        self.pools.values().filter_map(|p| p.subnet_of(agent)).collect()
    }

    /// The reserved addresses inside the agent's subnets: what the agent passes to its `Leases`.
    pub fn reserved_of(&self, agent: &str) -> Vec<IpAddr> {
        let mut out = BTreeSet::new();
        for p in self.pools.values() {
            if let Some(net) = p.leases.get(agent) {
                let span = Span::of(net);
                out.extend(p.spec.reserved.iter().filter(|ip| span.contains_ip(**ip)));
            }
        }
        out.into_iter().collect()
    }

    /// Every leased subnet (what each host routes to), by pool then address.
    pub fn subnets(&self) -> Vec<Subnet> {
        let mut out = Vec::new();
        for p in self.pools.values() {
            let mut subnets: Vec<Subnet> =
                p.leases.iter().map(|(agent, net)| subnet(&p.spec.name, *net, agent)).collect();
            subnets.sort_by_key(|s| (Family::of_net(&s.network), addr::to_u128(s.network.network())));
            out.extend(subnets);
        }
        out
    }

    pub fn usage(&self, pool: &str) -> Result<PoolUsage, IpamError> {
        let p = self.get(pool)?;
        let mut subnets: Vec<Subnet> = p.leases.iter().map(|(agent, net)| subnet(pool, *net, agent)).collect();
        subnets.sort_by_key(|s| (Family::of_net(&s.network), addr::to_u128(s.network.network())));
        Ok(PoolUsage {
            pool: pool.to_string(),
            subnets_total: p.blocks.iter().map(|b| b.usable).sum(),
            subnets_leased: subnets.len() as u128,
            subnets_free: p.blocks.iter().map(|b| b.free.len()).sum(),
            subnets,
        })
    }

    /// The pool specs, by name.
    pub fn pools(&self) -> impl Iterator<Item = &PoolSpec> {
        self.pools.values().map(|p| &p.spec)
    }

    pub fn pool(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.get(name).map(|p| &p.spec)
    }

    /// Reserves an address of the pool so no task gets it (reserving twice is harmless). If the
    /// address lies in a leased subnet, that subnet is returned: its agent must learn about it
    /// (see [`Pools::reserved_of`]). A task already holding the address keeps it.
    pub fn reserve(&mut self, pool: &str, ip: IpAddr) -> Result<Option<Subnet>, IpamError> {
        let p = self.get_mut(pool)?;
        if !p.blocks.iter().any(|b| b.span.contains_ip(ip)) {
            return Err(IpamError::AddressNotInPool { pool: pool.to_string(), ip, cidrs: p.spec.cidrs.clone() });
        }
        if !p.spec.reserved.contains(&ip) {
            p.spec.reserved.push(ip);
        }
        Ok(p.owner_of(ip))
    }

    /// Undoes [`Pools::reserve`]; returns the leased subnet the address is in, whose agent must learn it.
    pub fn unreserve(&mut self, pool: &str, ip: IpAddr) -> Result<Option<Subnet>, IpamError> {
        let p = self.get_mut(pool)?;
        if !p.spec.reserved.contains(&ip) {
            return Err(IpamError::NotReserved { pool: pool.to_string(), ip });
        }
        p.spec.reserved.retain(|r| *r != ip);
        Ok(p.owner_of(ip))
    }

    fn get(&self, pool: &str) -> Result<&Pool, IpamError> {
        self.pools.get(pool).ok_or_else(|| IpamError::UnknownPool { pool: pool.to_string() })
    }

    fn get_mut(&mut self, pool: &str) -> Result<&mut Pool, IpamError> {
        self.pools.get_mut(pool).ok_or_else(|| IpamError::UnknownPool { pool: pool.to_string() })
    }
}

/// What is persisted: the specs and the leases; everything else is derived.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolsRepr {
    pools: Vec<PoolRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolRepr {
    spec: PoolSpec,
    /// agent → subnet.
    #[serde(default)]
    leases: BTreeMap<String, IpNetwork>,
}

impl From<Pools> for PoolsRepr {
    fn from(pools: Pools) -> PoolsRepr {
        PoolsRepr { pools: pools.pools.into_values().map(|p| PoolRepr { spec: p.spec, leases: p.leases }).collect() }
    }
}

/// Loading re-validates everything, so a hand-edited or corrupt file cannot produce overlapping
/// subnets (and then duplicate addresses).
impl TryFrom<PoolsRepr> for Pools {
    type Error = IpamError;

    fn try_from(repr: PoolsRepr) -> Result<Pools, IpamError> {
        let mut pools = Pools::new();
        for PoolRepr { spec, leases } in repr.pools {
            if let Some(agent) = leases.keys().find(|a| a.is_empty()) {
                return Err(IpamError::InvalidAgentId { agent: agent.clone() });
            }
            pools.add_pool(spec.clone())?;
            let pool = Pool::build(spec, leases)?;
            pools.pools.insert(pool.spec.name.clone(), pool);
        }
        Ok(pools)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_pool;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn spec(name: &str, cidrs: &[&str]) -> PoolSpec {
        PoolSpec::new(name, cidrs.iter().map(|c| net(c)).collect())
    }

    fn with_default() -> Pools {
        let mut pools = Pools::new();
        pools.add_pool(default_pool()).unwrap();
        pools
    }

    /// Runs a failing operation and checks its message and that nothing changed.
    fn fails<T: std::fmt::Debug>(pools: &mut Pools, op: impl FnOnce(&mut Pools) -> Result<T, IpamError>) -> String {
        let before = pools.clone();
        let err = op(pools).expect_err("operation should fail");
        assert_eq!(*pools, before, "state changed by a failed operation: {err}");
        err.to_string()
    }

    #[test]
    fn default_pool_leases_24s_with_first_address_as_gateway() {
        let mut pools = with_default();
        let a = pools.lease_subnet("atoll", "A").unwrap();
        assert_eq!(
            a,
            Subnet {
                pool: "atoll".into(),
                network: net("198.18.0.0/24"),
                gateway: ip("198.18.0.1"),
                agent: "A".into()
            }
        );
        let b = pools.lease_subnet("atoll", "B").unwrap();
        assert_eq!(b.network, net("198.18.1.0/24"));
        // Idempotent: the same answer again, nothing else consumed.
        assert_eq!(pools.lease_subnet("atoll", "A").unwrap(), a);
        let usage = pools.usage("atoll").unwrap();
        assert_eq!((usage.subnets_total, usage.subnets_leased, usage.subnets_free), (256, 2, 254));
        assert_eq!(usage.subnets, vec![a.clone(), b.clone()]);
        assert_eq!(pools.subnets_of("A"), vec![a.clone()]);
        // Released subnets are reused, lowest first.
        assert_eq!(pools.release_subnet("atoll", "A").unwrap(), Some(a));
        assert_eq!(pools.release_subnet("atoll", "A").unwrap(), None);
        assert_eq!(pools.lease_subnet("atoll", "C").unwrap().network, net("198.18.0.0/24"));
    }

    #[test]
    fn ipv6_pool_with_huge_space_is_cheap() {
        let mut pools = Pools::new();
        let mut s = spec("v6", &["2001:db8::/32", "198.18.0.0/30"]);
        s.subnet_len_v4 = 30;
        pools.add_pool(s).unwrap();
        let a = pools.lease_subnet("v6", "A").unwrap();
        assert_eq!(a.network, net("2001:db8::/64"));
        assert_eq!(a.gateway, ip("2001:db8::1"));
        assert_eq!(pools.lease_subnet("v6", "B").unwrap().network, net("2001:db8:0:1::/64"));
        let usage = pools.usage("v6").unwrap();
        assert_eq!(usage.subnets_total, (1u128 << 32) + 1);
        assert_eq!(usage.subnets_free, (1u128 << 32) - 1);
    }

    #[test]
    fn second_cidr_used_when_first_is_full_and_exhaustion_is_reported() {
        let mut pools = Pools::new();
        let mut s = spec("small", &["198.18.0.0/23", "2001:db8::/64"]);
        s.subnet_len_v6 = 65;
        pools.add_pool(s).unwrap();
        let got: Vec<_> =
            ["a", "b", "c", "d"].iter().map(|a| pools.lease_subnet("small", a).unwrap().network).collect();
        assert_eq!(
            got,
            vec![net("198.18.0.0/24"), net("198.18.1.0/24"), net("2001:db8::/65"), net("2001:db8::8000:0:0:0/65")]
        );
        let msg = fails(&mut pools, |p| p.lease_subnet("small", "e"));
        assert_eq!(msg, "pool small: no free /24 or /65 for agent e");
    }

    #[test]
    fn exhausted_message() {
        let mut pools = Pools::new();
        pools.add_pool(spec("atoll", &["198.18.0.0/24"])).unwrap();
        pools.lease_subnet("atoll", "B").unwrap();
        assert_eq!(fails(&mut pools, |p| p.lease_subnet("atoll", "A")), "pool atoll: no free /24 for agent A");
        assert_eq!(pools.usage("atoll").unwrap().subnets_free, 0);
    }

    #[test]
    fn invalid_specs() {
        let mut pools = with_default();
        let cases: Vec<(PoolSpec, &str)> = vec![
            (spec("", &["10.0.0.0/8"]), "invalid pool name \"\": use 1 to 64 letters, digits, '-', '_' or '.'"),
            (spec("a b", &["10.0.0.0/8"]), "invalid pool name \"a b\": use 1 to 64 letters, digits, '-', '_' or '.'"),
            (spec("web", &[]), "pool web: no CIDR given"),
            (
                spec("web", &["198.19.0.5/24"]),
                "pool web: invalid CIDR 198.19.0.5/24: host bits set (did you mean 198.19.0.0/24?)",
            ),
            (
                spec("web", &["198.19.0.0/25"]),
                "pool web: subnet length /24 is shorter than the prefix of 198.19.0.0/25: a /24 does not fit in it",
            ),
            (spec("web", &["198.18.0.0/17"]), "pool web 198.18.0.0/17 overlaps pool atoll 198.18.0.0/16"),
            (
                spec("web", &["198.19.0.0/24", "198.19.0.0/16"]),
                "pool web: CIDR 198.19.0.0/16 overlaps its own CIDR 198.19.0.0/24",
            ),
            (spec("atoll", &["10.0.0.0/8"]), "pool atoll already exists"),
        ];
        for (s, want) in cases {
            assert_eq!(fails(&mut pools, |p| p.add_pool(s)), want);
        }

        let mut s = spec("web", &["198.19.0.0/16"]);
        s.subnet_len_v4 = 31;
        assert_eq!(
            fails(&mut pools, |p| p.add_pool(s.clone())),
            "pool web: IPv4 subnet length /31 is not valid: it must be between /1 and /30 so that a subnet holds its \
             network, gateway and broadcast addresses and at least one task address"
        );
        s.subnet_len_v4 = 24;
        s.subnet_len_v6 = 127;
        assert!(
            fails(&mut pools, |p| p.add_pool(s.clone())).starts_with("pool web: IPv6 subnet length /127 is not valid")
        );
        s.subnet_len_v6 = 64;

        s.exclude = vec![net("198.19.0.1/24")];
        assert_eq!(
            fails(&mut pools, |p| p.add_pool(s.clone())),
            "pool web: invalid CIDR 198.19.0.1/24: host bits set (did you mean 198.19.0.0/24?)"
        );
        s.exclude = vec![net("10.0.0.0/24")];
        assert_eq!(
            fails(&mut pools, |p| p.add_pool(s.clone())),
            "pool web: exclusion 10.0.0.0/24 is not inside any CIDR of the pool"
        );
        s.exclude = vec![net("198.19.0.0/17"), net("198.19.128.0/17")];
        assert_eq!(
            fails(&mut pools, |p| p.add_pool(s.clone())),
            "pool web: no /24 subnet is left once the exclusions are taken out"
        );
        s.exclude = vec![];
        s.reserved = vec![ip("10.0.0.1")];
        assert_eq!(
            fails(&mut pools, |p| p.add_pool(s.clone())),
            "pool web: 10.0.0.1 is not in the pool (198.19.0.0/16)"
        );
    }

    #[test]
    fn exclusions_take_out_whole_subnets() {
        let mut pools = Pools::new();
        let mut s = spec("p", &["198.18.0.0/22"]);
        s.exclude = vec![net("198.18.0.0/28"), net("198.18.2.0/23")];
        pools.add_pool(s).unwrap();
        assert_eq!(pools.usage("p").unwrap().subnets_total, 1);
        assert_eq!(pools.lease_subnet("p", "a").unwrap().network, net("198.18.1.0/24"));
        assert_eq!(fails(&mut pools, |p| p.lease_subnet("p", "b")), "pool p: no free /24 for agent b");
    }

    #[test]
    fn unknown_pool_and_bad_agent() {
        let mut pools = with_default();
        assert_eq!(fails(&mut pools, |p| p.lease_subnet("web", "A")), "unknown pool web");
        assert_eq!(fails(&mut pools, |p| p.release_subnet("web", "A")), "unknown pool web");
        assert_eq!(fails(&mut pools, |p| p.remove_pool("web")), "unknown pool web");
        assert_eq!(fails(&mut pools, |p| p.update_pool(spec("web", &["10.0.0.0/8"]))), "unknown pool web");
        assert_eq!(fails(&mut pools, |p| p.reserve("web", ip("10.0.0.1"))), "unknown pool web");
        assert_eq!(fails(&mut pools, |p| p.usage("web").map(drop)), "unknown pool web");
        assert_eq!(fails(&mut pools, |p| p.lease_subnet("atoll", "")), "invalid agent id \"\": it must not be empty");
    }

    #[test]
    fn remove_refused_while_leased() {
        let mut pools = with_default();
        pools.lease_subnet("atoll", "b").unwrap();
        pools.lease_subnet("atoll", "a").unwrap();
        assert_eq!(
            fails(&mut pools, |p| p.remove_pool("atoll")),
            "pool atoll has 2 live subnet lease(s) (agents a, b): release them before removing the pool"
        );
        pools.release_subnet("atoll", "a").unwrap();
        pools.release_subnet("atoll", "b").unwrap();
        assert_eq!(pools.remove_pool("atoll").unwrap(), default_pool());
        assert_eq!(pools, Pools::new());
    }

    #[test]
    fn agent_list_is_capped() {
        let mut pools = with_default();
        for i in 0..12 {
            pools.lease_subnet("atoll", &format!("a{i:02}")).unwrap();
        }
        assert_eq!(
            fails(&mut pools, |p| p.remove_pool("atoll")),
            "pool atoll has 12 live subnet lease(s) (agents a00, a01, a02, a03, a04, a05, a06, a07, a08, a09 and 2 \
             more): release them before removing the pool"
        );
    }

    #[test]
    fn update_grows_and_refuses_to_strand_leases() {
        let mut pools = with_default();
        pools.add_pool(spec("web", &["198.19.0.0/24"])).unwrap();
        pools.lease_subnet("atoll", "A").unwrap(); // 198.18.0.0/24
        for i in 0..3 {
            pools.lease_subnet("atoll", &format!("x{i}")).unwrap();
        }
        pools.release_subnet("atoll", "x0").unwrap();
        pools.release_subnet("atoll", "x1").unwrap(); // x2 keeps 198.18.3.0/24

        // Growing: fine, and leases are kept.
        let mut grown = default_pool();
        grown.cidrs.push(net("2001:db8::/48"));
        pools.update_pool(grown.clone()).unwrap();
        assert_eq!(pools.subnets_of("A")[0].network, net("198.18.0.0/24"));

        // Overlapping another pool.
        let mut s = grown.clone();
        s.cidrs.push(net("198.19.0.0/16"));
        assert_eq!(fails(&mut pools, |p| p.update_pool(s)), "pool atoll 198.19.0.0/16 overlaps pool web 198.19.0.0/24");

        // Shrinking below a lease.
        let mut s = grown.clone();
        s.cidrs = vec![net("198.18.2.0/23")];
        assert_eq!(
            fails(&mut pools, |p| p.update_pool(s)),
            "pool atoll: cannot shrink: 1 leased subnet(s) would fall outside the pool: 198.18.0.0/24 (agent A)"
        );
        let mut s = grown.clone();
        s.cidrs = vec![net("198.18.4.0/22")];
        assert_eq!(
            fails(&mut pools, |p| p.update_pool(s)),
            "pool atoll: cannot shrink: 2 leased subnet(s) would fall outside the pool: 198.18.0.0/24 (agent A), \
             198.18.3.0/24 (agent x2)"
        );
        // Shrinking around the leases is fine.
        let mut s = grown.clone();
        s.cidrs = vec![net("198.18.0.0/22")];
        let mut shrunk = pools.clone();
        shrunk.update_pool(s).unwrap();
        assert_eq!(shrunk.usage("atoll").unwrap().subnets_free, 2);

        // Excluding a leased subnet.
        let mut s = grown.clone();
        s.exclude = vec![net("198.18.3.128/25")];
        assert_eq!(
            fails(&mut pools, |p| p.update_pool(s)),
            "pool atoll: exclusion 198.18.3.128/25 covers subnet 198.18.3.0/24 leased to agent x2"
        );

        // Changing the subnet length of a family in use; the other family may change.
        let mut s = grown.clone();
        s.subnet_len_v4 = 25;
        assert_eq!(
            fails(&mut pools, |p| p.update_pool(s)),
            "pool atoll: cannot change the IPv4 subnet length from /24 to /25: 2 subnet(s) are leased (agents A, x2)"
        );
        let mut s = grown.clone();
        s.subnet_len_v6 = 56;
        pools.update_pool(s).unwrap();
    }

    #[test]
    fn reserve_reports_the_agent_to_tell() {
        let mut pools = with_default();
        let a = pools.lease_subnet("atoll", "A").unwrap();
        assert_eq!(pools.reserve("atoll", ip("198.18.0.7")).unwrap(), Some(a.clone()));
        assert_eq!(pools.reserve("atoll", ip("198.18.0.7")).unwrap(), Some(a.clone()));
        assert_eq!(pools.reserve("atoll", ip("198.18.9.7")).unwrap(), None);
        assert_eq!(pools.pool("atoll").unwrap().reserved, vec![ip("198.18.0.7"), ip("198.18.9.7")]);
        assert_eq!(pools.reserved_of("A"), vec![ip("198.18.0.7")]);
        assert_eq!(pools.reserved_of("B"), Vec::<IpAddr>::new());
        assert_eq!(
            fails(&mut pools, |p| p.reserve("atoll", ip("10.1.2.3"))),
            "pool atoll: 10.1.2.3 is not in the pool (198.18.0.0/16)"
        );
        assert_eq!(pools.unreserve("atoll", ip("198.18.0.7")).unwrap(), Some(a));
        assert_eq!(
            fails(&mut pools, |p| p.unreserve("atoll", ip("198.18.0.7"))),
            "pool atoll: 198.18.0.7 is not reserved"
        );
        // The agent the address moves to later learns it too.
        assert_eq!(pools.lease_subnet("atoll", "B").unwrap().network, net("198.18.1.0/24"));
        pools.release_subnet("atoll", "A").unwrap();
        pools.lease_subnet("atoll", "C").unwrap();
        assert_eq!(pools.reserved_of("C"), Vec::<IpAddr>::new());
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut pools = with_default();
        let mut v6 = spec("v6", &["2001:db8::/48"]);
        v6.reserved = vec![ip("2001:db8::5")];
        pools.add_pool(v6).unwrap();
        pools.lease_subnet("atoll", "A").unwrap();
        pools.lease_subnet("v6", "A").unwrap();
        pools.lease_subnet("atoll", "B").unwrap();
        let json = serde_json::to_string(&pools).unwrap();
        let back: Pools = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pools);

        // A corrupt file with two agents on one subnet is refused.
        let bad = json.replace("198.18.1.0/24", "198.18.0.0/24");
        let err = serde_json::from_str::<Pools>(&bad).unwrap_err().to_string();
        assert!(err.contains("pool atoll: invalid subnet 198.18.0.0/24: leased to both agent A and agent B"), "{err}");
        let bad = json.replace("198.18.1.0/24", "198.18.1.0/25");
        let err = serde_json::from_str::<Pools>(&bad).unwrap_err().to_string();
        assert!(err.contains("agent B's subnet is not a /24 of the pool"), "{err}");
    }

    #[test]
    fn pool_spec_json() {
        let s: PoolSpec = serde_json::from_str(r#"{"name":"atoll","cidrs":["198.18.0.0/16"]}"#).unwrap();
        assert_eq!(s, default_pool());
        let err = serde_json::from_str::<PoolSpec>(r#"{"name":"a","cidrs":[],"subnet_len":24}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `subnet_len`"), "{err}");
    }
}
