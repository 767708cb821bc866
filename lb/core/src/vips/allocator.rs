//! Named VIP addresses: the master's allocator. Nodes never allocate; they read the master's
//! assignments from the event log, which is what makes an address identical on every node and
//! stable across restarts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use super::VipName;

/// The default VIP pool: half of the benchmark range's second /16, blackholed on every node.
pub const DEFAULT_VIP_POOL: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::new(198, 19, 0, 0), 17) {
    Some(pool) => pool,
    None => panic!("a valid prefix"),
};

/// Why an assignment was refused (the allocator is then unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipError {
    #[error("the VIP pool {pool} is exhausted ({assigned} VIPs assigned)")]
    Exhausted { pool: Ipv4Network, assigned: usize },
    #[error("{address} is not in the VIP pool {pool}")]
    OutsidePool { address: Ipv4Addr, pool: Ipv4Network },
    #[error("{address} is the network or broadcast address of the VIP pool {pool}")]
    Reserved { address: Ipv4Addr, pool: Ipv4Network },
    #[error("{address} is already the address of VIP {by}")]
    AddressTaken { address: Ipv4Addr, by: VipName },
    #[error("VIP {name} already has the address {address}")]
    NameTaken { name: VipName, address: Ipv4Addr },
    #[error("a VIP needs a framework and a name (got `{0}`)")]
    InvalidName(VipName),
}

/// Assigns each named VIP a stable address from the pool.
///
/// Addresses are handed out in order from a cursor that moves past each new assignment and
/// wraps at the end of the pool: a released address is reused only after the rest of the pool,
/// so clients holding a stale address (DNS caches) do not reach a different service soon after
/// a VIP went away. The pool's network and broadcast addresses are never handed out (a /31 or
/// /32 pool therefore holds none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AllocatorState", into = "AllocatorState")]
pub struct VipAllocator {
    pool: Ipv4Network,
    /// Where the search for a free address starts (host order).
    cursor: u32,
    by_name: BTreeMap<VipName, Ipv4Addr>,
    by_address: BTreeMap<Ipv4Addr, VipName>,
}

impl Default for VipAllocator {
    fn default() -> VipAllocator {
        VipAllocator::new(DEFAULT_VIP_POOL)
    }
}

impl VipAllocator {
    /// An empty allocator over `pool` (host bits in the pool's address are ignored).
    pub fn new(pool: Ipv4Network) -> VipAllocator {
        let pool = Ipv4Network::new(pool.network(), pool.prefix()).expect("the prefix was valid");
        let cursor = u32::from(pool.network()).wrapping_add(1);
        VipAllocator { pool, cursor, by_name: BTreeMap::new(), by_address: BTreeMap::new() }
    }

    /// An allocator holding known assignments (e.g. the master's registry after a restart); the
    /// cursor continues after the highest address assigned.
    pub fn from_assignments(
        pool: Ipv4Network,
        assignments: impl IntoIterator<Item = (VipName, Ipv4Addr)>,
    ) -> Result<VipAllocator, VipError> {
        let mut allocator = VipAllocator::new(pool);
        for (name, address) in assignments {
            allocator.record(name, address)?;
        }
        if let Some(highest) = allocator.by_address.keys().next_back() {
            allocator.cursor = u32::from(*highest).wrapping_add(1);
        }
        Ok(allocator)
    }

    pub fn pool(&self) -> Ipv4Network {
        self.pool
    }

    /// How many addresses the pool can hand out (all but network and broadcast).
    pub fn capacity(&self) -> u32 {
        let (first, last) = self.host_range();
        if first > last { 0 } else { last - first + 1 }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The address of `name`, assigning the next free one if it has none yet (idempotent).
    pub fn assign(&mut self, name: &VipName) -> Result<Ipv4Addr, VipError> {
        if let Some(address) = self.by_name.get(name) {
            return Ok(*address);
        }
        check_name(name)?;
        let (first, last) = self.host_range();
        let capacity = self.capacity();
        let mut candidate = if (first..=last).contains(&self.cursor) { self.cursor } else { first };
        for _ in 0..capacity {
            let address = Ipv4Addr::from(candidate);
            if !self.by_address.contains_key(&address) {
                self.insert(name.clone(), address);
                self.cursor = if candidate == last { first } else { candidate + 1 };
                return Ok(address);
            }
            candidate = if candidate == last { first } else { candidate + 1 };
        }
        Err(VipError::Exhausted { pool: self.pool, assigned: self.by_name.len() })
    }

    /// Records an assignment decided elsewhere (replaying the event log). Idempotent for the
    /// same name and address; refuses an address outside the pool, reserved, or held by
    /// another name, and a name that already has another address.
    pub fn record(&mut self, name: VipName, address: Ipv4Addr) -> Result<(), VipError> {
        check_name(&name)?;
        if !self.pool.contains(address) {
            return Err(VipError::OutsidePool { address, pool: self.pool });
        }
        if address == self.pool.network() || address == self.pool.broadcast() {
            return Err(VipError::Reserved { address, pool: self.pool });
        }
        if let Some(by) = self.by_address.get(&address) {
            return if *by == name { Ok(()) } else { Err(VipError::AddressTaken { address, by: by.clone() }) };
        }
        if let Some(existing) = self.by_name.get(&name) {
            return Err(VipError::NameTaken { name, address: *existing });
        }
        self.insert(name, address);
        Ok(())
    }

    /// Gives `name`'s address back; returns it if there was one.
    pub fn release(&mut self, name: &VipName) -> Option<Ipv4Addr> {
        let address = self.by_name.remove(name)?;
        self.by_address.remove(&address);
        Some(address)
    }

    pub fn get(&self, name: &VipName) -> Option<Ipv4Addr> {
        self.by_name.get(name).copied()
    }

    /// Which VIP has `address`.
    pub fn name_of(&self, address: Ipv4Addr) -> Option<&VipName> {
        self.by_address.get(&address)
    }

    /// Every assignment, by name.
    pub fn assignments(&self) -> impl Iterator<Item = (&VipName, Ipv4Addr)> {
        self.by_name.iter().map(|(name, address)| (name, *address))
    }

    fn insert(&mut self, name: VipName, address: Ipv4Addr) {
        self.by_address.insert(address, name.clone());
        self.by_name.insert(name, address);
    }

    /// The first and last host addresses (host order); first > last when there are none.
    fn host_range(&self) -> (u32, u32) {
        let network = u32::from(self.pool.network());
        let broadcast = u32::from(self.pool.broadcast());
        (network.saturating_add(1), broadcast.saturating_sub(1))
    }
}

fn check_name(name: &VipName) -> Result<(), VipError> {
    if name.framework.is_empty() || name.name.is_empty() {
        return Err(VipError::InvalidName(name.clone()));
    }
    Ok(())
}

/// The serialized form: the pool, the cursor and the assignments as a list (a map keyed by a
/// struct has no JSON form). Loading validates everything `record` would.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocatorState {
    /// The pool, e.g. `198.19.0.0/17`.
    pool: Ipv4Network,
    /// The next address to try.
    next: Ipv4Addr,
    assignments: Vec<Assigned>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assigned {
    framework: String,
    name: String,
    address: Ipv4Addr,
}

impl From<VipAllocator> for AllocatorState {
    fn from(allocator: VipAllocator) -> AllocatorState {
        AllocatorState {
            pool: allocator.pool,
            next: Ipv4Addr::from(allocator.cursor),
            assignments: allocator
                .by_name
                .into_iter()
                .map(|(name, address)| Assigned { framework: name.framework, name: name.name, address })
                .collect(),
        }
    }
}

impl TryFrom<AllocatorState> for VipAllocator {
    type Error = VipError;

    fn try_from(state: AllocatorState) -> Result<VipAllocator, VipError> {
        let mut allocator = VipAllocator::new(state.pool);
        for assigned in state.assignments {
            allocator.record(VipName::new(assigned.framework, assigned.name), assigned.address)?;
        }
        allocator.cursor = u32::from(state.next);
        Ok(allocator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> VipName {
        VipName::new("marathon", n)
    }

    #[test]
    fn assigns_in_order_idempotently_and_skips_reserved_addresses() {
        let mut allocator = VipAllocator::default();
        assert_eq!(allocator.pool().to_string(), "198.19.0.0/17");
        assert_eq!(allocator.capacity(), 32_766);
        let web = allocator.assign(&name("web")).unwrap();
        assert_eq!(web, Ipv4Addr::new(198, 19, 0, 1), "never the network address");
        assert_eq!(allocator.assign(&name("web")).unwrap(), web, "idempotent");
        assert_eq!(allocator.assign(&name("db")).unwrap(), Ipv4Addr::new(198, 19, 0, 2));
        assert_eq!(allocator.get(&name("db")), Some(Ipv4Addr::new(198, 19, 0, 2)));
        assert_eq!(allocator.name_of(web), Some(&name("web")));
        assert_eq!(allocator.len(), 2);
        // The same name on another framework is another VIP.
        assert_eq!(allocator.assign(&VipName::new("other", "web")).unwrap(), Ipv4Addr::new(198, 19, 0, 3));
        assert!(matches!(allocator.assign(&VipName::new("", "web")), Err(VipError::InvalidName(_))));
    }

    #[test]
    fn released_addresses_come_back_last_and_exhaustion_is_an_error() {
        let pool: Ipv4Network = "198.19.0.0/30".parse().unwrap();
        let mut allocator = VipAllocator::new(pool);
        assert_eq!(allocator.capacity(), 2);
        let a = allocator.assign(&name("a")).unwrap();
        let b = allocator.assign(&name("b")).unwrap();
        assert_eq!((a, b), (Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2)));
        let before = allocator.clone();
        assert_eq!(allocator.assign(&name("c")), Err(VipError::Exhausted { pool, assigned: 2 }));
        assert_eq!(allocator, before, "a refused assignment changes nothing");
        assert_eq!(allocator.release(&name("a")), Some(a));
        assert_eq!(allocator.release(&name("a")), None);
        assert_eq!(allocator.assign(&name("c")).unwrap(), a, "the only free one");

        let mut wide = VipAllocator::new("198.19.0.0/29".parse().unwrap());
        let first = wide.assign(&name("a")).unwrap();
        wide.release(&name("a"));
        assert_ne!(wide.assign(&name("b")).unwrap(), first, "not reused while others are free");

        for tiny in ["198.19.0.0/31", "198.19.0.7/32"] {
            let mut tiny = VipAllocator::new(tiny.parse().unwrap());
            assert_eq!(tiny.capacity(), 0);
            assert!(matches!(tiny.assign(&name("a")), Err(VipError::Exhausted { .. })));
        }
    }

    #[test]
    fn recording_validates_and_serde_round_trips() {
        let mut allocator = VipAllocator::default();
        let inside = Ipv4Addr::new(198, 19, 3, 4);
        allocator.record(name("web"), inside).unwrap();
        allocator.record(name("web"), inside).unwrap();
        assert!(matches!(allocator.record(name("db"), inside), Err(VipError::AddressTaken { .. })));
        assert!(matches!(allocator.record(name("web"), Ipv4Addr::new(198, 19, 3, 5)), Err(VipError::NameTaken { .. })));
        assert!(matches!(
            allocator.record(name("x"), Ipv4Addr::new(198, 19, 128, 1)),
            Err(VipError::OutsidePool { .. })
        ));
        assert!(matches!(allocator.record(name("x"), Ipv4Addr::new(198, 19, 0, 0)), Err(VipError::Reserved { .. })));
        assert!(matches!(
            allocator.record(name("x"), Ipv4Addr::new(198, 19, 127, 255)),
            Err(VipError::Reserved { .. })
        ));
        allocator.assign(&name("db")).unwrap();

        let json = serde_json::to_string(&allocator).unwrap();
        let back: VipAllocator = serde_json::from_str(&json).unwrap();
        assert_eq!(back, allocator);
        let mut json: serde_json::Value = serde_json::from_str(&json).unwrap();
        json["assignments"][0]["address"] = "198.19.3.4".into();
        assert!(serde_json::from_value::<VipAllocator>(json).is_err(), "a duplicate address is refused");

        let restored =
            VipAllocator::from_assignments(DEFAULT_VIP_POOL, allocator.assignments().map(|(n, a)| (n.clone(), a)))
                .unwrap();
        assert_eq!(restored.get(&name("web")), Some(inside));
        let mut restored = restored;
        assert_eq!(restored.assign(&name("new")).unwrap(), Ipv4Addr::new(198, 19, 3, 5), "after the highest");
    }
}
