//! Property tests: random sequences of pool changes, subnet leases, task allocations, releases,
//! reservations and restarts, driven the way the master and the agents drive the crate, checked
//! against brute-force models of "lowest free" and against the cluster-wide invariants (no
//! duplicate address, no overlapping subnets, every address inside its agent's subnet and never a
//! special, excluded or newly reserved address).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use atoll_ipam::{IpNetwork, IpamError, Lease, Leases, PoolSpec, Pools, Subnet};
use proptest::prelude::*;

const AGENTS: usize = 4;
const TASKS: u8 = 8;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn agent_name(i: usize) -> String {
    format!("agent-{i}")
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

fn span(n: &IpNetwork) -> (u128, u128) {
    (to_u128(n.network()), to_u128(n.broadcast()))
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    let ((alo, ahi), (blo, bhi)) = (span(a), span(b));
    a.is_ipv4() == b.is_ipv4() && alo <= bhi && blo <= ahi
}

/// The pools the sequences pick from: tiny subnets so exhaustion happens, exclusions, a mixed
/// IPv4/IPv6 pool, one that overlaps another, and one of real /64s.
fn candidates() -> Vec<PoolSpec> {
    // /30s: one task address each, so exhaustion is common.
    let mut p4 = PoolSpec::new("p4", vec![net("198.18.0.0/27")]);
    p4.subnet_len_v4 = 30;
    p4.exclude = vec![net("198.18.0.8/30")];
    let mut mix = PoolSpec::new("mix", vec![net("198.18.1.0/28"), net("2001:db8::/123")]);
    mix.subnet_len_v4 = 29;
    mix.subnet_len_v6 = 125;
    let mut clash = PoolSpec::new("clash", vec![net("198.18.0.0/26")]);
    clash.subnet_len_v4 = 30;
    let big6 = PoolSpec::new("big6", vec![net("2001:db8:1::/63")]);
    vec![p4, mix, clash, big6]
}

/// Changed specs for `update_pool`: grow, shrink, exclude more, change a subnet length.
fn updates() -> Vec<PoolSpec> {
    let c = candidates();
    let mut grow = c[0].clone();
    grow.cidrs.push(net("198.18.2.0/28"));
    let mut shrink = c[0].clone();
    shrink.cidrs = vec![net("198.18.0.0/28")];
    let mut exclude = c[0].clone();
    exclude.exclude.push(net("198.18.0.16/29"));
    let mut relen = c[1].clone();
    relen.subnet_len_v4 = 30;
    let mut six_only = c[1].clone();
    six_only.cidrs = vec![net("2001:db8::/123")];
    vec![grow, shrink, exclude, relen, six_only, c[0].clone(), c[1].clone()]
}

#[derive(Clone, Debug)]
enum Op {
    AddPool(usize),
    UpdatePool(usize),
    RemovePool(usize),
    LeaseSubnet { pool: usize, agent: usize },
    ReleaseSubnet { pool: usize, agent: usize },
    Allocate { agent: usize, pool: usize, task: u8, want: Option<u8> },
    Release { agent: usize, task: u8 },
    Restart { agent: usize, live: u8 },
    MasterRestart,
    Reserve { pool: usize, cidr: usize, subnet: u8, host: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let pool = 0..4usize;
    let agent = 0..AGENTS;
    prop_oneof![
        2 => pool.clone().prop_map(Op::AddPool),
        1 => (0..7usize).prop_map(Op::UpdatePool),
        1 => pool.clone().prop_map(Op::RemovePool),
        4 => (pool.clone(), agent.clone()).prop_map(|(pool, agent)| Op::LeaseSubnet { pool, agent }),
        1 => (pool.clone(), agent.clone()).prop_map(|(pool, agent)| Op::ReleaseSubnet { pool, agent }),
        // pool: 0..4 names a candidate pool; above that, one of the agent's subnets' pools.
        12 => (agent.clone(), 0..16usize, 0..TASKS, proptest::option::weighted(0.3, any::<u8>()))
            .prop_map(|(agent, pool, task, want)| Op::Allocate { agent, pool, task, want }),
        4 => (agent.clone(), 0..TASKS).prop_map(|(agent, task)| Op::Release { agent, task }),
        1 => (agent.clone(), any::<u8>()).prop_map(|(agent, live)| Op::Restart { agent, live }),
        1 => Just(Op::MasterRestart),
        2 => (pool, 0..2usize, any::<u8>(), 0..8u8)
            .prop_map(|(pool, cidr, subnet, host)| Op::Reserve { pool, cidr, subnet, host }),
    ]
}

struct Cluster {
    pools: Pools,
    agents: Vec<Leases>,
}

impl Cluster {
    /// What an agent does when the master tells it its subnets changed.
    fn sync(&mut self, agent: usize) {
        let name = agent_name(agent);
        self.agents[agent]
            .set_subnets(self.pools.subnets_of(&name), self.pools.reserved_of(&name))
            .expect("syncing the master's answer never drops a subnet in use");
    }
}

/// The lowest address a task could get on the agent for a pool, by brute force over small
/// subnets (None when a subnet is too big to enumerate).
fn brute_force_free(leases: &Leases, pool: &str) -> Option<Vec<IpAddr>> {
    let reserved: BTreeSet<IpAddr> = leases.reserved().copied().collect();
    let taken: BTreeSet<IpAddr> = leases.leases().map(|l| l.ip).collect();
    let mut free = Vec::new();
    for s in leases.subnets().filter(|s| s.pool == pool) {
        let (lo, hi) = span(&s.network);
        if hi - lo > 4096 {
            return None;
        }
        for x in lo + 1..hi {
            let ip = from_u128(s.gateway, x);
            if ip != s.gateway && !reserved.contains(&ip) && !taken.contains(&ip) {
                free.push(ip);
            }
        }
    }
    Some(free)
}

fn check_invariants(c: &Cluster) -> Result<(), TestCaseError> {
    // Subnets: disjoint across all agents and pools; each agent knows exactly the master's view.
    let all = c.pools.subnets();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            prop_assert!(!overlaps(&a.network, &b.network), "subnets {:?} and {:?} overlap", a, b);
        }
    }
    for (i, agent) in c.agents.iter().enumerate() {
        let name = agent_name(i);
        prop_assert_eq!(agent.subnets().cloned().collect::<Vec<_>>(), c.pools.subnets_of(&name));
        prop_assert_eq!(agent.reserved().copied().collect::<Vec<_>>(), c.pools.reserved_of(&name));
    }
    // Leases: unique cluster-wide, each inside its agent's subnet of its pool, never a special or
    // excluded address.
    let mut seen: BTreeMap<IpAddr, &Lease> = BTreeMap::new();
    for (i, agent) in c.agents.iter().enumerate() {
        let mine = c.pools.subnets_of(&agent_name(i));
        for lease in agent.leases() {
            if let Some(other) = seen.insert(lease.ip, lease) {
                prop_assert!(false, "{} leased twice: {:?} and {:?}", lease.ip, other, lease);
            }
            let subnet: Vec<&Subnet> =
                mine.iter().filter(|s| s.pool == lease.pool && s.network == lease.subnet).collect();
            prop_assert_eq!(subnet.len(), 1, "lease {:?} not in a subnet of its agent", lease);
            let s = subnet[0];
            prop_assert_eq!(&lease.agent, &agent_name(i));
            prop_assert_eq!(lease.gateway, s.gateway);
            prop_assert!(s.network.contains(lease.ip));
            prop_assert!(lease.ip != s.network.network() && lease.ip != s.network.broadcast() && lease.ip != s.gateway);
            let spec = c.pools.pool(&lease.pool).expect("a pool with leases exists");
            prop_assert!(!spec.exclude.iter().any(|e| e.contains(lease.ip)), "{:?} is excluded", lease);
        }
        for pool in c.pools.pools() {
            if let Some(free) = brute_force_free(agent, &pool.name) {
                prop_assert_eq!(agent.free_count(&pool.name), free.len() as u128);
            }
        }
    }
    Ok(())
}

/// Applies one op, checking its outcome; failed operations must leave everything unchanged.
fn step(c: &mut Cluster, op: &Op) -> Result<(), TestCaseError> {
    let cands = candidates();
    let before_pools = c.pools.clone();
    let before_agents = c.agents.clone();
    let unchanged = |c: &Cluster, err: &IpamError| -> Result<(), TestCaseError> {
        prop_assert_eq!(&c.pools, &before_pools, "pools changed by failed {:?}: {}", op, err);
        prop_assert_eq!(&c.agents, &before_agents, "leases changed by failed {:?}: {}", op, err);
        Ok(())
    };
    match *op {
        Op::AddPool(i) => {
            let spec = cands[i].clone();
            match c.pools.add_pool(spec.clone()) {
                Ok(()) => prop_assert_eq!(c.pools.pool(&spec.name), Some(&spec)),
                Err(e) => {
                    prop_assert!(
                        matches!(e, IpamError::PoolExists { .. } | IpamError::OverlappingPools { .. }),
                        "unexpected {}",
                        e
                    );
                    unchanged(c, &e)?;
                }
            }
        }
        Op::UpdatePool(i) => {
            let spec = updates()[i].clone();
            match c.pools.update_pool(spec.clone()) {
                Ok(()) => {
                    prop_assert_eq!(c.pools.pool(&spec.name), Some(&spec));
                    // Leased subnets survive an update unchanged.
                    prop_assert_eq!(c.pools.subnets(), before_pools.subnets());
                    for a in 0..AGENTS {
                        c.sync(a);
                    }
                }
                Err(e) => unchanged(c, &e)?,
            }
        }
        Op::RemovePool(i) => {
            let name = &cands[i].name;
            let leased = c.pools.usage(name).map(|u| u.subnets_leased);
            match c.pools.remove_pool(name) {
                Ok(spec) => {
                    prop_assert_eq!(leased, Ok(0));
                    prop_assert_eq!(&spec.name, name);
                }
                Err(e) => {
                    prop_assert!(leased.is_err() || leased != Ok(0));
                    unchanged(c, &e)?;
                }
            }
        }
        Op::LeaseSubnet { pool, agent } => {
            let (name, agent_id) = (&cands[pool].name, agent_name(agent));
            let held = c.pools.subnets_of(&agent_id).into_iter().find(|s| &s.pool == name);
            let free = c.pools.usage(name).map(|u| u.subnets_free);
            match c.pools.lease_subnet(name, &agent_id) {
                Ok(s) => {
                    if let Some(held) = held {
                        prop_assert_eq!(&s, &held, "a second lease must give the same subnet");
                        prop_assert_eq!(&c.pools, &before_pools);
                    } else {
                        prop_assert_eq!(c.pools.usage(name).unwrap().subnets_free, free.unwrap() - 1);
                    }
                    prop_assert_eq!(to_u128(s.gateway), to_u128(s.network.network()) + 1);
                    c.sync(agent);
                }
                Err(e) => {
                    match e {
                        IpamError::PoolExhausted { .. } => prop_assert_eq!(free, Ok(0)),
                        IpamError::UnknownPool { .. } => prop_assert!(free.is_err()),
                        _ => prop_assert!(false, "unexpected {}", e),
                    }
                    unchanged(c, &e)?;
                }
            }
        }
        Op::ReleaseSubnet { pool, agent } => {
            // The agent lets go first; it refuses while tasks hold addresses in the subnet, and
            // then the master keeps the lease too (else another agent could get the subnet).
            let (name, agent_id) = (&cands[pool].name, agent_name(agent));
            let keep: Vec<Subnet> = c.pools.subnets_of(&agent_id).into_iter().filter(|s| &s.pool != name).collect();
            let in_use = c.agents[agent].leases().any(|l| &l.pool == name);
            match c.agents[agent].set_subnets(keep, c.pools.reserved_of(&agent_id)) {
                Ok(()) => {
                    prop_assert!(!in_use);
                    if c.pools.pool(name).is_some() {
                        c.pools.release_subnet(name, &agent_id).unwrap();
                    }
                    c.sync(agent);
                }
                Err(e) => {
                    prop_assert!(in_use && matches!(e, IpamError::SubnetInUse { .. }), "unexpected {}", e);
                    unchanged(c, &e)?;
                }
            }
        }
        Op::Allocate { agent, pool, task, want } => {
            let l = &mut c.agents[agent];
            let held: Vec<String> = l.subnets().map(|s| s.pool.clone()).collect();
            let name = &match pool {
                0..4 => cands[pool].name.clone(),
                _ if held.is_empty() => cands[pool % 4].name.clone(),
                _ => held[pool % held.len()].clone(),
            };
            let task = format!("t{task}");
            let first = l.subnets().find(|s| &s.pool == name).cloned();
            let want = match (want, &first) {
                (Some(w), _) if w >= 250 => Some("198.51.100.1".parse().unwrap()),
                (Some(w), Some(s)) => {
                    let (lo, hi) = span(&s.network);
                    Some(from_u128(s.gateway, lo + u128::from(w) % (hi - lo + 1)))
                }
                (Some(_), None) => Some("198.18.0.2".parse().unwrap()),
                (None, _) => None,
            };
            let had = l.leases_of(&task).into_iter().find(|x| &x.pool == name).cloned();
            let lowest = brute_force_free(l, name).map(|f| f.first().copied());
            let free_before = l.free_count(name);
            match l.allocate(name, &task, want) {
                Ok(lease) => {
                    if let Some(had) = had {
                        prop_assert_eq!(&lease, &had, "allocate must be idempotent per task and pool");
                    } else {
                        match want {
                            Some(w) => prop_assert_eq!(lease.ip, w),
                            None => {
                                if let Some(lowest) = lowest {
                                    prop_assert_eq!(Some(lease.ip), lowest, "not the lowest free address");
                                }
                            }
                        }
                        prop_assert_eq!(l.free_count(name), free_before - 1);
                        let spec = c.pools.pool(name).unwrap();
                        prop_assert!(!spec.reserved.contains(&lease.ip), "reserved {} handed out", lease.ip);
                    }
                }
                Err(e) => {
                    match &e {
                        // Exhaustion is reported exactly when nothing is free.
                        IpamError::SubnetExhausted { .. } => {
                            prop_assert_eq!(free_before, 0);
                            if let Some(lowest) = lowest {
                                prop_assert_eq!(lowest, None);
                            }
                        }
                        IpamError::NoSubnet { .. } => prop_assert!(first.is_none()),
                        IpamError::AddressTaken { .. }
                        | IpamError::AddressReserved { .. }
                        | IpamError::SpecialAddress { .. }
                        | IpamError::AddressNotInSubnet { .. }
                        | IpamError::TaskHasAddress { .. } => prop_assert!(want.is_some()),
                        _ => prop_assert!(false, "unexpected {}", e),
                    }
                    if want.is_none() && free_before > 0 {
                        prop_assert!(
                            !matches!(e, IpamError::SubnetExhausted { .. }),
                            "exhausted with {} free",
                            free_before
                        );
                    }
                    unchanged(c, &e)?;
                }
            }
        }
        Op::Release { agent, task } => {
            let task = format!("t{task}");
            let l = &mut c.agents[agent];
            let held: Vec<Lease> = l.leases_of(&task).into_iter().cloned().collect();
            let released = l.release(&task);
            prop_assert_eq!(released.len(), held.len());
            prop_assert!(l.leases_of(&task).is_empty());
            // Released addresses can be had again (unless reserved meanwhile).
            let after = l.clone();
            for lease in &released {
                if l.reserved().any(|r| *r == lease.ip) {
                    continue;
                }
                let again = l.allocate(&lease.pool, "probe", Some(lease.ip));
                prop_assert_eq!(again.map(|x| x.ip), Ok(lease.ip));
                l.release("probe");
            }
            prop_assert_eq!(&*l, &after);
        }
        Op::Restart { agent, live } => {
            let l = &mut c.agents[agent];
            let json = serde_json::to_string(&*l).unwrap();
            let mut back: Leases = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &*l);
            let live: BTreeSet<String> = (0..TASKS).filter(|t| live & (1 << t) != 0).map(|t| format!("t{t}")).collect();
            let dead: usize = l.leases().filter(|x| !live.contains(&x.task)).count();
            let released = back.retain_tasks(&live);
            prop_assert_eq!(released.len(), dead);
            prop_assert!(back.leases().all(|x| live.contains(&x.task)));
            *l = back;
        }
        Op::MasterRestart => {
            let json = serde_json::to_string(&c.pools).unwrap();
            let back: Pools = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &c.pools);
            c.pools = back;
        }
        Op::Reserve { pool, cidr, subnet, host } => {
            let spec = &cands[pool];
            let cidr = spec.cidrs[cidr % spec.cidrs.len()];
            let len = if cidr.is_ipv4() { spec.subnet_len_v4 } else { spec.subnet_len_v6 };
            let bits = if cidr.is_ipv4() { 32 } else { 128 };
            let size = 1u128 << (bits - len);
            let count = 1u128 << (len - cidr.prefix());
            let ip =
                from_u128(cidr.ip(), span(&cidr).0 + (u128::from(subnet) % count) * size + u128::from(host) % size);
            let current = c.pools.pool(&spec.name).cloned();
            match c.pools.reserve(&spec.name, ip) {
                Ok(owner) => {
                    let now = c.pools.pool(&spec.name).unwrap();
                    prop_assert!(now.reserved.contains(&ip));
                    let current = current.expect("reserving in an unknown pool fails");
                    prop_assert!(current.cidrs.iter().any(|n| n.contains(ip)), "reserved {} outside {:?}", ip, current);
                    let expected =
                        c.pools.subnets().into_iter().find(|s| s.pool == spec.name && s.network.contains(ip));
                    prop_assert_eq!(&owner, &expected);
                    if let Some(owner) = owner {
                        let agent = (0..AGENTS).find(|a| agent_name(*a) == owner.agent).unwrap();
                        c.sync(agent);
                    }
                }
                Err(e) => {
                    let outside = current.is_none_or(|p| !p.cidrs.iter().any(|n| n.contains(ip)));
                    prop_assert!(outside, "reserving {} failed: {}", ip, e);
                    unchanged(c, &e)?;
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        // Integration tests have no lib.rs for the default persistence to anchor on.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_keep_every_invariant(
        init in proptest::collection::vec((0..4usize, 0..AGENTS), 0..8),
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        // Start from a cluster that has pools and leased subnets, so most sequences exercise task
        // addresses and exhaustion rather than "no such pool"; the ops still add, change and
        // remove pools and subnets.
        let mut c = Cluster { pools: Pools::new(), agents: vec![Leases::default(); AGENTS] };
        let everyone = (0..AGENTS).flat_map(|agent| [0, 1].map(|pool| Op::LeaseSubnet { pool, agent }));
        let random = init.into_iter().map(|(pool, agent)| Op::LeaseSubnet { pool, agent });
        let setup = [0, 1, 3].map(Op::AddPool).into_iter().chain(everyone).chain(random);
        for op in setup.chain(ops) {
            let op = &op;
            step(&mut c, op)?;
            check_invariants(&c)?;
        }
    }
}
