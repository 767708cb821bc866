//! An agent's side: task addresses within the subnets the master leased to it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::addr::{self, Family, Span};
use crate::interval::IntervalSet;
use crate::{AddressKind, IpamError, Lease, Subnet};

/// The task addresses of one agent. Every method either applies fully or changes nothing.
///
/// Persisted by the agent as its subnets, reserved addresses and leases; the free-address sets
/// are rebuilt (and everything re-validated) on deserialization.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LeasesRepr", into = "LeasesRepr")]
pub struct Leases {
    /// In the order given by the master; within a pool, earlier subnets are used first.
    slots: Vec<Slot>,
    /// Addresses no task may get; a task that already held one when it was reserved keeps it.
    reserved: BTreeSet<IpAddr>,
    by_ip: BTreeMap<IpAddr, Lease>,
    /// task → pool → address: one address per task and pool.
    by_task: BTreeMap<String, BTreeMap<String, IpAddr>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    subnet: Subnet,
    span: Span,
    /// Host addresses that are neither the gateway, reserved nor leased. The network and last
    /// addresses are never in it.
    free: IntervalSet,
}

impl Slot {
    fn new(subnet: Subnet, span: Span, reserved: &BTreeSet<IpAddr>, leased: &BTreeMap<IpAddr, Lease>) -> Slot {
        let mut free = IntervalSet::new();
        free.insert(span.lo + 1, span.hi - 1);
        free.remove_point(addr::to_u128(subnet.gateway));
        let range = addr::from_u128(span.family, span.lo)..=addr::from_u128(span.family, span.hi);
        for ip in reserved.range(range.clone()).chain(leased.range(range).map(|(ip, _)| ip)) {
            free.remove_point(addr::to_u128(*ip));
        }
        Slot { subnet, span, free }
    }

    fn kind_of(&self, ip: IpAddr) -> Option<AddressKind> {
        let x = addr::to_u128(ip);
        if x == self.span.lo {
            Some(AddressKind::Network)
        } else if ip == self.subnet.gateway {
            Some(AddressKind::Gateway)
        } else if x == self.span.hi {
            Some(AddressKind::Broadcast)
        } else {
            None
        }
    }
}

/// Checks a subnet from the master before using it, against the ones already accepted.
fn check_subnet(subnet: &Subnet, accepted: &[(Subnet, Span)]) -> Result<Span, IpamError> {
    let invalid =
        |reason: String| IpamError::InvalidSubnet { pool: subnet.pool.clone(), subnet: subnet.network, reason };
    if addr::has_host_bits(&subnet.network) {
        return Err(invalid("host bits set".to_string()));
    }
    let family = Family::of_net(&subnet.network);
    let prefix = subnet.network.prefix();
    if prefix == 0 || prefix > family.max_subnet_len() {
        return Err(invalid(format!("a subnet must be a /1 to /{} to hold a task address", family.max_subnet_len())));
    }
    let span = Span::of(&subnet.network);
    let gw = subnet.gateway;
    if !(span.contains_ip(gw) && span.lo < addr::to_u128(gw) && addr::to_u128(gw) < span.hi) {
        return Err(invalid(format!("gateway {gw} is not a host address of the subnet")));
    }
    if let Some((other, _)) = accepted.iter().find(|(_, s)| s.overlaps(&span)) {
        return Err(invalid(format!("it overlaps subnet {} of pool {}", other.network, other.pool)));
    }
    Ok(span)
}

impl Leases {
    /// Leases over the subnets the master gave this agent and the reserved addresses in them
    /// ([`crate::Pools::subnets_of`], [`crate::Pools::reserved_of`]). A malformed subnet (host
    /// bits, too small, bad gateway, overlapping an earlier one) is skipped; use
    /// [`Leases::set_subnets`] on `Leases::default()` to get the error instead.
    pub fn new(subnets: Vec<Subnet>, reserved: Vec<IpAddr>) -> Leases {
        let reserved: BTreeSet<IpAddr> = reserved.into_iter().collect();
        let mut accepted = Vec::new();
        for subnet in subnets {
            if let Ok(span) = check_subnet(&subnet, &accepted) {
                accepted.push((subnet, span));
            }
        }
        let slots = accepted.into_iter().map(|(s, span)| Slot::new(s, span, &reserved, &BTreeMap::new())).collect();
        Leases { slots, reserved, ..Leases::default() }
    }

    /// Replaces the subnets and reserved addresses (after the master leased, released or
    /// reserved something). Refused if a subnet that still has task leases would be dropped.
    /// Newly reserved addresses that a task holds stay with it until it is released.
    pub fn set_subnets(&mut self, subnets: Vec<Subnet>, reserved: Vec<IpAddr>) -> Result<(), IpamError> {
        let mut accepted: Vec<(Subnet, Span)> = Vec::new();
        for subnet in subnets {
            let span = check_subnet(&subnet, &accepted)?;
            accepted.push((subnet, span));
        }
        let mut by_ip = self.by_ip.clone();
        for lease in by_ip.values_mut() {
            let Some((subnet, _)) = accepted.iter().find(|(s, _)| s.pool == lease.pool && s.network == lease.subnet)
            else {
                let tasks = self
                    .by_ip
                    .values()
                    .filter(|l| l.pool == lease.pool && l.subnet == lease.subnet)
                    .map(|l| l.task.clone())
                    .collect();
                return Err(IpamError::SubnetInUse {
                    pool: lease.pool.clone(),
                    subnet: lease.subnet,
                    agent: lease.agent.clone(),
                    tasks,
                });
            };
            if subnet.gateway == lease.ip {
                return Err(IpamError::InvalidSubnet {
                    pool: subnet.pool.clone(),
                    subnet: subnet.network,
                    reason: format!("its gateway {} is leased to task {}", lease.ip, lease.task),
                });
            }
            // The subnet is the same; its holder's id is whatever the master says now.
            lease.agent.clone_from(&subnet.agent);
            lease.gateway = subnet.gateway;
        }
        let reserved: BTreeSet<IpAddr> = reserved.into_iter().collect();
        self.slots = accepted.into_iter().map(|(s, span)| Slot::new(s, span, &reserved, &by_ip)).collect();
        self.reserved = reserved;
        self.by_ip = by_ip;
        Ok(())
    }

    /// An address for `task` on `pool`: the lowest free host address of the agent's subnets of
    /// that pool (never the network, last or gateway address, nor a reserved one), or `want` if
    /// given and free (an admin pinning an address). A task has one address per pool: asking
    /// again returns the lease it already has, so a retried launch does not leak.
    pub fn allocate(&mut self, pool: &str, task: &str, want: Option<IpAddr>) -> Result<Lease, IpamError> {
        if task.is_empty() {
            return Err(IpamError::InvalidTaskId { task: task.to_string() });
        }
        let in_pool: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].subnet.pool == pool).collect();
        if in_pool.is_empty() {
            return Err(IpamError::NoSubnet { pool: pool.to_string() });
        }
        if let Some(&held) = self.by_task.get(task).and_then(|m| m.get(pool)) {
            if want.is_none_or(|w| w == held) {
                return Ok(self.by_ip[&held].clone());
            }
            return Err(IpamError::TaskHasAddress { pool: pool.to_string(), task: task.to_string(), ip: held });
        }
        let networks = || in_pool.iter().map(|&i| self.slots[i].subnet.network).collect::<Vec<_>>();
        let (i, x) = match want {
            Some(ip) => {
                let Some(&i) = in_pool.iter().find(|&&i| self.slots[i].span.contains_ip(ip)) else {
                    return Err(IpamError::AddressNotInSubnet { pool: pool.to_string(), ip, subnets: networks() });
                };
                let slot = &self.slots[i];
                if let Some(kind) = slot.kind_of(ip) {
                    return Err(IpamError::SpecialAddress {
                        pool: pool.to_string(),
                        ip,
                        kind,
                        subnet: slot.subnet.network,
                    });
                }
                if let Some(holder) = self.by_ip.get(&ip) {
                    return Err(IpamError::AddressTaken { pool: pool.to_string(), ip, task: holder.task.clone() });
                }
                if self.reserved.contains(&ip) {
                    return Err(IpamError::AddressReserved { pool: pool.to_string(), ip });
                }
                // Not special, taken nor reserved: the free set must have it.
                debug_assert!(slot.free.contains(addr::to_u128(ip)));
                (i, addr::to_u128(ip))
            }
            None => {
                let Some(&i) = in_pool.iter().find(|&&i| self.slots[i].free.len() > 0) else {
                    return Err(IpamError::SubnetExhausted { pool: pool.to_string(), subnets: networks() });
                };
                (i, self.slots[i].free.first().expect("non-empty"))
            }
        };
        let slot = &mut self.slots[i];
        let taken = slot.free.remove_point(x);
        debug_assert!(taken, "a free address was not in the free set");
        let lease = Lease {
            ip: addr::from_u128(slot.span.family, x),
            pool: pool.to_string(),
            subnet: slot.subnet.network,
            gateway: slot.subnet.gateway,
            agent: slot.subnet.agent.clone(),
            task: task.to_string(),
        };
        self.by_ip.insert(lease.ip, lease.clone());
        self.by_task.entry(task.to_string()).or_default().insert(pool.to_string(), lease.ip);
        Ok(lease)
    }

    /// Releases every address of the task (it reached a terminal state); returns them by address.
    pub fn release(&mut self, task: &str) -> Vec<Lease> {
        let Some(held) = self.by_task.remove(task) else {
            return Vec::new();
        };
        let mut out: Vec<Lease> = held.into_values().map(|ip| self.free(ip)).collect();
        out.sort_by_key(|l| l.ip);
        out
    }

    fn free(&mut self, ip: IpAddr) -> Lease {
        let lease = self.by_ip.remove(&ip).expect("by_task and by_ip agree");
        // A reserved address goes back to nobody.
        if !self.reserved.contains(&ip) {
            let x = addr::to_u128(ip);
            let slot = self.slots.iter_mut().find(|s| s.span.contains_ip(ip)).expect("leases lie in a subnet");
            slot.free.insert(x, x);
        }
        lease
    }

    /// All leases, by address.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.by_ip.values()
    }

    /// The leases of one task.
    pub fn leases_of(&self, task: &str) -> Vec<&Lease> {
        self.by_task.get(task).map(|m| m.values().map(|ip| &self.by_ip[ip]).collect()).unwrap_or_default()
    }

    /// The agent's subnets, in the order given.
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.slots.iter().map(|s| &s.subnet)
    }

    pub fn reserved(&self) -> impl Iterator<Item = &IpAddr> {
        self.reserved.iter()
    }

    /// Reconciliation after a restart: releases every lease whose task is not in `live` (it ended
    /// while the agent was down, or its launch never completed); returns them by address.
    pub fn retain_tasks(&mut self, live: &BTreeSet<String>) -> Vec<Lease> {
        let gone: Vec<String> = self.by_task.keys().filter(|t| !live.contains(*t)).cloned().collect();
        let mut out: Vec<Lease> = gone.iter().flat_map(|t| self.release(t)).collect();
        out.sort_by_key(|l| l.ip);
        out
    }

    /// How many addresses of the pool a task can still get on this agent.
    pub fn free_count(&self, pool: &str) -> u128 {
        self.slots.iter().filter(|s| s.subnet.pool == pool).map(|s| s.free.len()).sum()
    }

    /// Re-adds a persisted lease, checking it against the subnets.
    fn restore(&mut self, mut lease: Lease) -> Result<(), IpamError> {
        if lease.task.is_empty() {
            return Err(IpamError::InvalidTaskId { task: lease.task });
        }
        let pool = lease.pool.clone();
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.subnet.pool == pool && s.subnet.network == lease.subnet && s.span.contains_ip(lease.ip))
        else {
            let subnets = self.slots.iter().filter(|s| s.subnet.pool == pool).map(|s| s.subnet.network).collect();
            return Err(IpamError::AddressNotInSubnet { pool, ip: lease.ip, subnets });
        };
        let slot = &mut self.slots[i];
        if let Some(kind) = slot.kind_of(lease.ip) {
            return Err(IpamError::SpecialAddress { pool, ip: lease.ip, kind, subnet: slot.subnet.network });
        }
        if let Some(holder) = self.by_ip.get(&lease.ip) {
            return Err(IpamError::AddressTaken { pool, ip: lease.ip, task: holder.task.clone() });
        }
        if let Some(&ip) = self.by_task.get(&lease.task).and_then(|m| m.get(&pool)) {
            return Err(IpamError::TaskHasAddress { pool, task: lease.task, ip });
        }
        slot.free.remove_point(addr::to_u128(lease.ip));
        lease.agent.clone_from(&slot.subnet.agent);
        lease.gateway = slot.subnet.gateway;
        self.by_task.entry(lease.task.clone()).or_default().insert(pool, lease.ip);
        self.by_ip.insert(lease.ip, lease);
        Ok(())
    }
}

/// What is persisted; the free sets are derived.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeasesRepr {
    subnets: Vec<Subnet>,
    #[serde(default)]
    reserved: Vec<IpAddr>,
    #[serde(default)]
    leases: Vec<Lease>,
}

impl From<Leases> for LeasesRepr {
    fn from(l: Leases) -> LeasesRepr {
        LeasesRepr {
            subnets: l.slots.into_iter().map(|s| s.subnet).collect(),
            reserved: l.reserved.into_iter().collect(),
            leases: l.by_ip.into_values().collect(),
        }
    }
}

/// Loading re-validates everything, so a corrupt file cannot produce a duplicate address.
impl TryFrom<LeasesRepr> for Leases {
    type Error = IpamError;

    fn try_from(repr: LeasesRepr) -> Result<Leases, IpamError> {
        let mut leases = Leases::default();
        leases.set_subnets(repr.subnets, repr.reserved)?;
        for lease in repr.leases {
            leases.restore(lease)?;
        }
        Ok(leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::IpNetwork;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sub(pool: &str, network: &str, gateway: &str) -> Subnet {
        Subnet { pool: pool.into(), network: net(network), gateway: ip(gateway), agent: "A".into() }
    }

    fn agent() -> Leases {
        Leases::new(
            vec![sub("atoll", "198.18.3.0/24", "198.18.3.1"), sub("v6", "2001:db8:0:7::/64", "2001:db8:0:7::1")],
            vec![ip("198.18.3.3")],
        )
    }

    /// Runs a failing operation and checks its message and that nothing changed.
    fn fails<T: std::fmt::Debug>(leases: &mut Leases, op: impl FnOnce(&mut Leases) -> Result<T, IpamError>) -> String {
        let before = leases.clone();
        let err = op(leases).expect_err("operation should fail");
        assert_eq!(*leases, before, "state changed by a failed operation: {err}");
        err.to_string()
    }

    #[test]
    fn lowest_free_skips_special_and_reserved_addresses() {
        let mut l = agent();
        assert_eq!(l.free_count("atoll"), 256 - 4);
        let a = l.allocate("atoll", "t1", None).unwrap();
        assert_eq!(
            a,
            Lease {
                ip: ip("198.18.3.2"),
                pool: "atoll".into(),
                subnet: net("198.18.3.0/24"),
                gateway: ip("198.18.3.1"),
                agent: "A".into(),
                task: "t1".into()
            }
        );
        assert_eq!(l.allocate("atoll", "t2", None).unwrap().ip, ip("198.18.3.4"));
        // Asking again for the same task and pool gives the same lease.
        assert_eq!(l.allocate("atoll", "t1", None).unwrap(), a);
        assert_eq!(l.allocate("atoll", "t1", Some(ip("198.18.3.2"))).unwrap(), a);
        assert_eq!(l.free_count("atoll"), 256 - 6);
        // Released addresses come back first.
        assert_eq!(l.release("t1"), vec![a]);
        assert_eq!(l.release("t1"), vec![]);
        assert_eq!(l.allocate("atoll", "t3", None).unwrap().ip, ip("198.18.3.2"));
        // IPv6: the /64 is one range, not 2^64 entries.
        let v6 = l.allocate("v6", "t3", None).unwrap();
        assert_eq!(v6.ip, ip("2001:db8:0:7::2"));
        assert_eq!(l.free_count("v6"), (1u128 << 64) - 4);
        assert_eq!(l.allocate("v6", "t4", Some(ip("2001:db8:0:7:ffff:ffff:ffff:fffe"))).unwrap().task, "t4");
        assert_eq!(l.leases_of("t3").len(), 2);
        assert_eq!(l.release("t3").len(), 2);
    }

    #[test]
    fn allocate_errors() {
        let mut l = agent();
        l.allocate("atoll", "t1", None).unwrap(); // .2
        let cases = [
            ("atoll", "", None, "invalid task id \"\": it must not be empty"),
            (
                "web",
                "t",
                None,
                "pool web: this agent has no subnet in the pool (it must lease one from the master first)",
            ),
            ("atoll", "t", Some("198.18.4.2"), "pool atoll: 198.18.4.2 is not in agent subnet 198.18.3.0/24"),
            ("atoll", "t", Some("2001:db8:0:7::9"), "pool atoll: 2001:db8:0:7::9 is not in agent subnet 198.18.3.0/24"),
            ("atoll", "t", Some("198.18.3.0"), "pool atoll: 198.18.3.0 is the network address of subnet 198.18.3.0/24"),
            ("atoll", "t", Some("198.18.3.1"), "pool atoll: 198.18.3.1 is the gateway address of subnet 198.18.3.0/24"),
            (
                "atoll",
                "t",
                Some("198.18.3.255"),
                "pool atoll: 198.18.3.255 is the broadcast address of subnet 198.18.3.0/24",
            ),
            (
                "v6",
                "t",
                Some("2001:db8:0:7:ffff:ffff:ffff:ffff"),
                "pool v6: 2001:db8:0:7:ffff:ffff:ffff:ffff is the broadcast address of subnet 2001:db8:0:7::/64",
            ),
            ("atoll", "t", Some("198.18.3.3"), "pool atoll: 198.18.3.3 is reserved"),
            ("atoll", "t", Some("198.18.3.2"), "pool atoll: 198.18.3.2 is taken by task t1"),
            ("atoll", "t1", Some("198.18.3.9"), "pool atoll: task t1 already has address 198.18.3.2"),
        ];
        for (pool, task, want, msg) in cases {
            assert_eq!(fails(&mut l, |l| l.allocate(pool, task, want.map(ip))), msg);
        }
    }

    #[test]
    fn exhaustion_exactly_when_full() {
        let mut l = Leases::new(vec![sub("atoll", "198.18.3.0/29", "198.18.3.1")], vec![ip("198.18.3.4")]);
        // 8 addresses: network, gateway, broadcast, one reserved → 4 for tasks.
        let got: Vec<IpAddr> = (0..4).map(|i| l.allocate("atoll", &format!("t{i}"), None).unwrap().ip).collect();
        assert_eq!(got, ["198.18.3.2", "198.18.3.3", "198.18.3.5", "198.18.3.6"].map(ip));
        assert_eq!(l.free_count("atoll"), 0);
        assert_eq!(
            fails(&mut l, |l| l.allocate("atoll", "t9", None)),
            "pool atoll: agent subnet 198.18.3.0/29 exhausted"
        );
        l.release("t2");
        assert_eq!(l.allocate("atoll", "t9", None).unwrap().ip, ip("198.18.3.5"));

        let mut two =
            Leases::new(vec![sub("p", "198.18.3.0/30", "198.18.3.1"), sub("p", "198.18.4.0/30", "198.18.4.1")], vec![]);
        two.allocate("p", "a", None).unwrap();
        assert_eq!(two.allocate("p", "b", None).unwrap().ip, ip("198.18.4.2"));
        assert_eq!(
            fails(&mut two, |l| l.allocate("p", "c", None)),
            "pool p: agent subnets 198.18.3.0/30, 198.18.4.0/30 exhausted"
        );
    }

    #[test]
    fn set_subnets_refuses_dropping_a_subnet_in_use() {
        let mut l = agent();
        l.allocate("atoll", "t2", None).unwrap();
        l.allocate("atoll", "t1", None).unwrap();
        let v6 = sub("v6", "2001:db8:0:7::/64", "2001:db8:0:7::1");
        assert_eq!(
            fails(&mut l, |l| l.set_subnets(vec![v6.clone()], vec![])),
            "agent A: cannot drop subnet 198.18.3.0/24 of pool atoll: 2 address(es) still leased (tasks t2, t1)"
        );
        // Dropping an unused subnet, adding one and reserving an address in use are fine.
        let atoll = sub("atoll", "198.18.3.0/24", "198.18.3.1");
        let web = sub("web", "198.19.0.0/24", "198.19.0.1");
        l.set_subnets(vec![atoll.clone(), web.clone()], vec![ip("198.18.3.2"), ip("198.19.0.2")]).unwrap();
        assert_eq!(l.allocate("web", "t1", None).unwrap().ip, ip("198.19.0.3"));
        assert_eq!(l.release("t2")[0].ip, ip("198.18.3.2"));
        // Reserved now, so it does not come back.
        assert_eq!(l.allocate("atoll", "t5", None).unwrap().ip, ip("198.18.3.3"));

        let bad = [
            (sub("x", "198.20.0.1/24", "198.20.0.2"), "pool x: invalid subnet 198.20.0.1/24: host bits set"),
            (
                sub("x", "198.20.0.0/31", "198.20.0.1"),
                "pool x: invalid subnet 198.20.0.0/31: a subnet must be a /1 to /30 to hold a task address",
            ),
            (
                sub("x", "198.20.0.0/24", "198.20.0.255"),
                "pool x: invalid subnet 198.20.0.0/24: gateway 198.20.0.255 is not a host address of the subnet",
            ),
            (
                sub("x", "198.20.0.0/24", "2001:db8::1"),
                "pool x: invalid subnet 198.20.0.0/24: gateway 2001:db8::1 is not a host address of the subnet",
            ),
            (
                sub("x", "198.19.0.0/16", "198.19.0.1"),
                "pool x: invalid subnet 198.19.0.0/16: it overlaps subnet 198.19.0.0/24 of pool web",
            ),
        ];
        for (s, msg) in bad {
            assert_eq!(fails(&mut l, |l| l.set_subnets(vec![atoll.clone(), web.clone(), s], vec![])), msg);
        }
        let mut gw_taken = atoll.clone();
        gw_taken.gateway = ip("198.18.3.3");
        assert_eq!(
            fails(&mut l, |l| l.set_subnets(vec![gw_taken, web.clone()], vec![])),
            "pool atoll: invalid subnet 198.18.3.0/24: its gateway 198.18.3.3 is leased to task t5"
        );
        // `new` skips what set_subnets refuses.
        let l2 = Leases::new(vec![atoll.clone(), sub("x", "198.18.3.0/25", "198.18.3.1")], vec![]);
        assert_eq!(l2.subnets().collect::<Vec<_>>(), vec![&atoll]);
    }

    #[test]
    fn restart_keeps_addresses_and_reconciles() {
        let mut l = agent();
        let a = l.allocate("atoll", "a", None).unwrap();
        let b = l.allocate("atoll", "b", Some(ip("198.18.3.77"))).unwrap();
        let c = l.allocate("v6", "b", None).unwrap();
        let json = serde_json::to_string(&l).unwrap();
        let mut back: Leases = serde_json::from_str(&json).unwrap();
        assert_eq!(back, l);
        let live: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(back.retain_tasks(&live), vec![a.clone()]);
        assert_eq!(back.leases().cloned().collect::<Vec<_>>(), vec![b, c]);
        assert_eq!(back.allocate("atoll", "z", None).unwrap().ip, a.ip);
    }

    #[test]
    fn lease_json_uses_cli_field_names() {
        let mut l = agent();
        let lease = l.allocate("atoll", "t1", None).unwrap();
        let v = serde_json::to_value(&lease).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ip": "198.18.3.2", "pool": "atoll", "subnet": "198.18.3.0/24",
                "gateway": "198.18.3.1", "agent_id": "A", "task_id": "t1"})
        );
    }

    #[test]
    fn corrupt_state_is_refused() {
        let mut l = agent();
        l.allocate("atoll", "a", None).unwrap();
        l.allocate("atoll", "b", None).unwrap();
        let json = serde_json::to_string(&l).unwrap();
        let dup = json.replace("198.18.3.4\"", "198.18.3.2\"");
        let err = serde_json::from_str::<Leases>(&dup).unwrap_err().to_string();
        assert!(err.contains("pool atoll: 198.18.3.2 is taken by task a"), "{err}");
        let gw = json.replace("\"ip\":\"198.18.3.4\"", "\"ip\":\"198.18.3.1\"");
        let err = serde_json::from_str::<Leases>(&gw).unwrap_err().to_string();
        assert!(err.contains("198.18.3.1 is the gateway address of subnet 198.18.3.0/24"), "{err}");
        let outside = json.replace("\"ip\":\"198.18.3.4\"", "\"ip\":\"198.18.9.4\"");
        let err = serde_json::from_str::<Leases>(&outside).unwrap_err().to_string();
        assert!(err.contains("198.18.9.4 is not in agent subnet 198.18.3.0/24"), "{err}");
    }
}
