//! Named VIP addresses without a master to assign them: on a Mesos cluster (`atoll lb
//! --mesos-master`) there is no Atoll master whose event log carries `VIP_ASSIGNED`, and the
//! load balancers of the nodes do not talk to each other. Every node must still give a name the
//! same address, so the address is a function of what every node sees alike: the set of names
//! the cluster's tasks carry.
//!
//! The scheme: the names, in their sorted order ([`VipName`]'s order: framework, then name),
//! each take the first free address of their own probe sequence, which starts at
//! `SipHash(name@framework) mod capacity` and walks the pool's host addresses upwards, wrapping
//! around. SipHash with a fixed key (`crate::siphash`), not the standard library's hasher, so
//! the result depends on nothing that may change between Rust releases or machines.
//!
//! What this guarantees, for a pool with room for all names (the property tests check exactly
//! these):
//!
//! 1. The assignment is a function of the set of names: the order they were seen in, and any
//!    name that came and went, make no difference. A node that starts late computes what the
//!    others computed.
//! 2. Adding a name never moves a name that sorts before it.
//! 3. Adding a name moves no name at all unless the new name's address was, before, the address
//!    of another name (necessarily one sorting after it). Only then do names sorting after it
//!    move: the one displaced, and possibly others its new probe displaces in turn.
//! 4. Removing a name is adding it read backwards: nothing moves unless its address was one
//!    that a name sorting after it would otherwise have had.
//!
//! The tradeoff: a history-free function of the set cannot be collision-free, so (3) is the
//! price of (1). With `n` names in a pool of `c` addresses, a new name displaces another with
//! probability below `n / c` — under 1% for 300 names in the default /17 (32 766 addresses).
//! The master's allocator ([`super::VipAllocator`]) has no such price, because it remembers its
//! decisions; nodes following a Mesos master have nowhere to remember them together.
//!
//! Fixed VIPs (`198.19.0.7:80`) are not avoided: a fixed VIP inside the pool may share its
//! address with a named one (on the same port, their backends would be merged). Fixed VIPs
//! belong outside the pool.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::{VipName, VipProjection};
use crate::ServiceKey;
use crate::siphash::siphash24;

/// The SipHash key of the probe start: fixed forever, since changing it moves every name.
const KEY: [u8; 16] = *b"atoll-vip-names1";

/// The outcome of [`hashed_assignments`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HashedAssignments {
    /// Each name's address.
    pub assigned: BTreeMap<VipName, Ipv4Addr>,
    /// The names the pool had no room for (the last ones in sorted order), sorted.
    pub unassigned: Vec<VipName>,
}

/// The addresses of `names` in `pool` (see the module docs for what they guarantee). The
/// pool's network and broadcast addresses are never given out, so a /31 or /32 has no room.
pub fn hashed_assignments(pool: Ipv4Network, names: &BTreeSet<VipName>) -> HashedAssignments {
    let first = u32::from(pool.network()).saturating_add(1);
    let last = u32::from(pool.broadcast()).saturating_sub(1);
    let capacity = if first > last { 0 } else { u64::from(last - first) + 1 };
    let mut taken = BTreeSet::new();
    let mut out = HashedAssignments::default();
    for name in names {
        if taken.len() as u64 >= capacity {
            out.unassigned.push(name.clone());
            continue;
        }
        let mut slot = probe_start(name) % capacity;
        // Terminates: there is a free slot, and the walk visits every slot once.
        while taken.contains(&slot) {
            slot = (slot + 1) % capacity;
        }
        taken.insert(slot);
        // The slot is below the capacity, itself at most 2^32 - 2.
        let address = Ipv4Addr::from(first + slot as u32);
        out.assigned.insert(name.clone(), address);
    }
    out
}

/// Where `name`'s probe sequence starts, before reduction to the pool: the hash of
/// `name@framework`, the form the brief names and operators read.
fn probe_start(name: &VipName) -> u64 {
    siphash24(&KEY, format!("{}@{}", name.name, name.framework).as_bytes())
}

/// The named VIPs the live tasks of `state` carry (a Mesos master's state, as
/// [`super::mesos::MesosConverter`] makes it) with their hashed addresses in `pool`: exactly
/// what every `atoll lb --mesos-master` of the cluster serves, for DNS to publish.
pub fn hashed_names_of(state: &atoll_proto::model::ClusterState, pool: Ipv4Network) -> HashedAssignments {
    let mut projection = VipProjection::new();
    projection.reset(state, &BTreeMap::new());
    hashed_assignments(pool, &projection.wanted_names())
}

/// Sets the projection's named VIP addresses to the hashed assignment of the names its live
/// tasks carry ([`VipProjection::wanted_names`]): new names get theirs, names no task carries
/// any more lose theirs (their services have no backends left), names a collision moved move.
/// Returns the keys whose service changed (possibly repeated) and the names the pool had no
/// room for.
pub fn sync_hashed_assignments(projection: &mut VipProjection, pool: Ipv4Network) -> (Vec<ServiceKey>, Vec<VipName>) {
    let wanted = projection.wanted_names();
    let HashedAssignments { assigned, unassigned } = hashed_assignments(pool, &wanted);
    let current = projection.assignments().clone();
    let mut changed = Vec::new();
    for name in current.keys().filter(|name| !assigned.contains_key(*name)) {
        changed.extend(projection.remove_assignment(name));
    }
    for (name, address) in assigned {
        if current.get(&name) != Some(&address) {
            changed.extend(projection.set_assignment(name, address));
        }
    }
    (changed, unassigned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<VipName> {
        list.iter().map(|n| VipName::new("marathon", *n)).collect()
    }

    #[test]
    fn addresses_are_in_the_pool_distinct_and_fixed_forever() {
        let pool: Ipv4Network = "198.19.0.0/17".parse().unwrap();
        let out = hashed_assignments(pool, &names(&["web", "db", "shop/api"]));
        assert!(out.unassigned.is_empty());
        let addresses: BTreeSet<Ipv4Addr> = out.assigned.values().copied().collect();
        assert_eq!(addresses.len(), 3);
        for address in addresses {
            assert!(pool.contains(address) && address != pool.network() && address != pool.broadcast());
        }
        // Pinned: every node of every version must compute these; a change here moves VIPs
        // under running clients.
        let pinned = [("db", [198, 19, 24, 199]), ("shop/api", [198, 19, 73, 49]), ("web", [198, 19, 32, 214])];
        let pinned: BTreeMap<VipName, Ipv4Addr> =
            pinned.into_iter().map(|(name, ip)| (VipName::new("marathon", name), Ipv4Addr::from(ip))).collect();
        assert_eq!(out.assigned, pinned);
        let web = out.assigned[&VipName::new("marathon", "web")];
        assert_eq!(web, hashed_assignments(pool, &names(&["web"])).assigned[&VipName::new("marathon", "web")]);
        assert_eq!(probe_start(&VipName::new("marathon", "web")), siphash24(&KEY, b"web@marathon"));
        // The same name on another framework is another VIP, hashed apart.
        let other = hashed_assignments(pool, &[VipName::new("other", "web")].into());
        assert_ne!(other.assigned[&VipName::new("other", "web")], web);
    }

    #[test]
    fn a_collision_moves_only_the_name_sorting_after() {
        // In a 6-address pool `a` and `d` both start probing at 198.19.0.3.
        let pool: Ipv4Network = "198.19.0.0/29".parse().unwrap();
        let (a, d) = (VipName::new("m", "a"), VipName::new("m", "d"));
        let alone = hashed_assignments(pool, &[d.clone()].into()).assigned;
        assert_eq!(alone[&d], Ipv4Addr::new(198, 19, 0, 3));
        let both = hashed_assignments(pool, &[a.clone(), d.clone()].into()).assigned;
        assert_eq!((both[&a], both[&d]), (Ipv4Addr::new(198, 19, 0, 3), Ipv4Addr::new(198, 19, 0, 4)));
        // Whichever was seen first: the set decides.
        assert_eq!(hashed_assignments(pool, &[d, a].into()).assigned, both);
    }

    #[test]
    fn a_full_pool_leaves_the_last_names_out() {
        let pool: Ipv4Network = "198.19.0.0/30".parse().unwrap();
        let out = hashed_assignments(pool, &names(&["a", "b", "c", "d"]));
        assert_eq!(out.assigned.len(), 2);
        assert_eq!(out.unassigned, vec![VipName::new("marathon", "c"), VipName::new("marathon", "d")]);
        let values: BTreeSet<Ipv4Addr> = out.assigned.values().copied().collect();
        assert_eq!(values, [Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2)].into());
        for tiny in ["198.19.0.0/31", "198.19.0.7/32"] {
            let out = hashed_assignments(tiny.parse().unwrap(), &names(&["a"]));
            assert!(out.assigned.is_empty() && out.unassigned.len() == 1, "{tiny}");
        }
    }
}
