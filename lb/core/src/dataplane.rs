//! The plan of the kernel maps' contents: services in, ordered map operations out.
//!
//! The kernel reads four maps: services (key → [`ServiceValue`]: a table index and the count of
//! active backends), backends (id → [`Backend`]), and the Maglev tables (index → `M` backend ids).
//! The kernel may read them at any moment, so the plan orders every change such that **after
//! each single operation** the maps are consistent:
//!
//! 1. New backends are upserted first (ids are stable: the same address, port and protocol keep
//!    their id for as long as any service uses them).
//! 2. New tables are written next, whole, at an index no service points at.
//! 3. Then each changed service's value is switched to its new table in one write: an update
//!    is atomic per service.
//! 4. Last, backends no service uses any more are removed, and tables no service uses go back to
//!    the free list (a table needs no removal: nothing points at it).
//!
//! Services whose backend sets are identical (the same address, port, protocol and weight for
//! every backend) share one table, so memory grows with the number of distinct backend sets,
//! not of VIPs: at the default `M` = 1021 a table is 4,084 bytes, and 10,000 VIPs take at most
//! 10,000 × 4,084 B ≈ 40.8 MB of tables if no two share a backend set (plus 24 B per service and
//! 12 B per backend), and 4 KB if they all share one. A service whose backends are all draining
//! has `count` 0 and `table` [`NO_TABLE`]: the kernel must read `count` first and leave the
//! connection alone when it is 0.
//!
//! Tables are keyed by backend (address, port, protocol, weight) rather than by the ids in
//! them, and backend ids are per protocol, so a TCP and a UDP service on the same backends
//! have two tables (their entries name different backend ids).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;

use crate::maglev::{self, MaglevBackend, MaglevError, MaglevSize};
use crate::vips::Service;
use serde::{Deserialize, Serialize};

use crate::{Backend, DisplayKey, OrdKey, ServiceKey, ServiceValue, backend_value, key_parts, service_key};

/// `ServiceValue::table` of a service with no active backend (its `count` is 0). Never a valid
/// index: `max_tables` is below it.
pub const NO_TABLE: u32 = u32::MAX;

/// One write to the kernel maps, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    UpsertBackend {
        id: u32,
        backend: Backend,
    },
    /// The whole table: `maglev_size` backend ids.
    WriteTable {
        table: u32,
        entries: Vec<u32>,
    },
    UpsertService {
        key: ServiceKey,
        value: ServiceValue,
    },
    RemoveService {
        key: ServiceKey,
    },
    RemoveBackend {
        id: u32,
    },
}

/// Why an update was refused (the plan is then unchanged and no operation is returned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Size(#[from] MaglevError),
    #[error("max_tables must be from 1 to {max} (got {got})")]
    TableLimit { got: u32, max: u32 },
    #[error("max_backends must be from 1 to {max} (got {got})")]
    BackendLimit { got: u32, max: u32 },
    #[error("the update needs {needed} Maglev tables at once; the table map holds {max}")]
    TooManyTables { needed: usize, max: u32 },
    #[error("the update needs {needed} backends at once; the backend map holds {max}")]
    TooManyBackends { needed: usize, max: u32 },
    #[error("service {} has {backends} active backends, more than its Maglev table's {size} entries", DisplayKey(.key))]
    TableTooSmall { key: ServiceKey, backends: usize, size: u32 },
    #[error("service {} is given twice in one update", DisplayKey(.0))]
    DuplicateService(ServiceKey),
}

/// A backend's identity: the kernel's id is per address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct BackendAddr {
    address: Ipv4Addr,
    port: u16,
    proto: u8,
}

/// A table's identity: its active backends with their weights, sorted.
type TableKey = Vec<(BackendAddr, u32)>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BackendEntry {
    id: u32,
    /// Services using it (draining or not).
    refs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TableEntry {
    index: u32,
    refs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Installed {
    /// Every backend with its weight, sorted.
    backends: Vec<(BackendAddr, u32)>,
    table: Option<TableKey>,
    #[serde(with = "service_value")]
    value: ServiceValue,
}

/// Ids handed out fresh first, then freed ones oldest first: a freed id (or table index) is
/// reused as late as possible, which keeps a kernel program that read the old value just
/// before the switch from finding someone else's data there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct IdPool {
    next: u64,
    /// One past the last id.
    end: u64,
    free: VecDeque<u32>,
}

impl IdPool {
    fn new(first: u32, end: u64) -> IdPool {
        IdPool { next: u64::from(first), end, free: VecDeque::new() }
    }

    fn take(&mut self) -> u32 {
        if self.next < self.end {
            self.next += 1;
            return (self.next - 1) as u32;
        }
        // Callers check capacity first; running out is a bug.
        self.free.pop_front().expect("capacity was checked")
    }

    fn give_back(&mut self, id: u32) {
        self.free.push_back(id);
    }
}

/// The kernel maps' intended contents, and the operations that get them there. It is
/// serializable so a restarted control plane continues with the ids and table indexes the
/// (pinned, still serving) maps hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplanePlan {
    size: MaglevSize,
    max_tables: u32,
    max_backends: u32,
    #[serde(with = "pairs")]
    backends: BTreeMap<BackendAddr, BackendEntry>,
    backend_ids: IdPool,
    #[serde(with = "pairs")]
    tables: BTreeMap<TableKey, TableEntry>,
    table_ids: IdPool,
    #[serde(with = "pairs")]
    services: BTreeMap<OrdKey, Installed>,
    rev_nat_ids: IdPool,
}

/// Maps whose keys are not strings, as a list of pairs (JSON objects need string keys).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?.into_iter().collect())
    }
}

/// The kernel's `ServiceValue` (no serde in the no_std crate) as its four fields.
mod service_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ServiceValue;

    pub fn serialize<S: Serializer>(value: &ServiceValue, serializer: S) -> Result<S::Ok, S::Error> {
        (value.table, value.count, value.rev_nat, value.flags).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ServiceValue, D::Error> {
        let (table, count, rev_nat, flags) = <(u32, u32, u32, u32)>::deserialize(deserializer)?;
        Ok(ServiceValue { table, count, rev_nat, flags })
    }
}

impl DataplanePlan {
    /// An empty plan for maps of the given sizes: tables of `maglev_size` entries (a prime),
    /// `max_tables` of them (indexes `0..max_tables`), `max_backends` backends (ids
    /// `1..=max_backends`; 0 is never an id, so a zeroed entry is never a backend).
    pub fn new(maglev_size: u32, max_tables: u32, max_backends: u32) -> Result<DataplanePlan, PlanError> {
        let size = MaglevSize::new(maglev_size)?;
        if max_tables == 0 || max_tables == NO_TABLE {
            return Err(PlanError::TableLimit { got: max_tables, max: NO_TABLE - 1 });
        }
        if max_backends == 0 || max_backends == u32::MAX {
            return Err(PlanError::BackendLimit { got: max_backends, max: u32::MAX - 1 });
        }
        Ok(DataplanePlan {
            size,
            max_tables,
            max_backends,
            backends: BTreeMap::new(),
            backend_ids: IdPool::new(1, u64::from(max_backends) + 1),
            tables: BTreeMap::new(),
            table_ids: IdPool::new(0, u64::from(max_tables)),
            services: BTreeMap::new(),
            // Reverse-NAT ids name services in the kernel (counters, socket reverse NAT); 0 is none.
            rev_nat_ids: IdPool::new(1, u64::from(u32::MAX)),
        })
    }

    /// Brings the given services to their current state; services not given are left as they
    /// are (see [`DataplanePlan::remove`]). Returns the operations for the services that changed
    /// (none for those already installed as given), in a safe order. On error nothing changes.
    ///
    /// A service's backends are taken once per address and port (the larger weight wins).
    pub fn update(&mut self, services: &[&Service]) -> Result<Vec<MapOp>, PlanError> {
        let mut seen = BTreeSet::new();
        let mut changes: Vec<(OrdKey, Vec<(BackendAddr, u32)>)> = Vec::new();
        for service in services {
            let key = key_parts(&service.key);
            if !seen.insert(key) {
                return Err(PlanError::DuplicateService(service.key));
            }
            let wanted = desired_backends(service);
            if self.services.get(&key).is_some_and(|installed| installed.backends == wanted) {
                continue;
            }
            let active = wanted.iter().filter(|(_, weight)| *weight > 0).count();
            if active > self.size.get() as usize {
                return Err(PlanError::TableTooSmall { key: service.key, backends: active, size: self.size.get() });
            }
            changes.push((key, wanted));
        }
        changes.sort_by_key(|(key, _)| *key);

        // Capacity at the peak: old backends and tables are released only after every service
        // has switched, so everything new must fit next to everything in use.
        let new_backends: BTreeSet<BackendAddr> = changes
            .iter()
            .flat_map(|(_, wanted)| wanted.iter().map(|(addr, _)| *addr))
            .filter(|addr| !self.backends.contains_key(addr))
            .collect();
        let needed = self.backends.len() + new_backends.len();
        if needed > self.max_backends as usize {
            return Err(PlanError::TooManyBackends { needed, max: self.max_backends });
        }
        let new_tables: BTreeSet<TableKey> = changes
            .iter()
            .filter_map(|(_, wanted)| table_key(wanted))
            .filter(|table| !self.tables.contains_key(table))
            .collect();
        let needed = self.tables.len() + new_tables.len();
        if needed > self.max_tables as usize {
            return Err(PlanError::TooManyTables { needed, max: self.max_tables });
        }

        // Nothing can fail from here on.
        let mut ops = Vec::new();
        for addr in new_backends {
            let id = self.backend_ids.take();
            self.backends.insert(addr, BackendEntry { id, refs: 0 });
            ops.push(MapOp::UpsertBackend { id, backend: backend_value(addr.address, addr.port, addr.proto) });
        }
        for table in new_tables {
            let index = self.table_ids.take();
            ops.push(MapOp::WriteTable { table: index, entries: self.build_table(&table) });
            self.tables.insert(table, TableEntry { index, refs: 0 });
        }
        let mut released: Vec<Installed> = Vec::new();
        for (key, wanted) in changes {
            for (addr, _) in &wanted {
                self.backends.get_mut(addr).expect("upserted above").refs += 1;
            }
            let table = table_key(&wanted);
            let index = match &table {
                Some(table) => {
                    let entry = self.tables.get_mut(table).expect("written above");
                    entry.refs += 1;
                    entry.index
                }
                None => NO_TABLE,
            };
            let old = self.services.remove(&key);
            let rev_nat = match &old {
                Some(old) => old.value.rev_nat,
                None => self.rev_nat_ids.take(),
            };
            let count = wanted.iter().filter(|(_, weight)| *weight > 0).count() as u32;
            let value = ServiceValue { table: index, count, rev_nat, flags: 0 };
            // Only a draining or returning backend that keeps the same active set leaves the
            // value as it was: then there is nothing to write.
            if old.as_ref().is_none_or(|old| old.value != value) {
                ops.push(MapOp::UpsertService { key: service_key(key.0, key.1, key.2), value });
            }
            self.services.insert(key, Installed { backends: wanted, table, value });
            released.extend(old);
        }
        for old in released {
            self.release(old, &mut ops);
        }
        Ok(ops)
    }

    /// Removes a service: its entry first, then the backends no other service uses (their
    /// tables go back to the free list). Unknown keys give no operation.
    pub fn remove(&mut self, key: &ServiceKey) -> Vec<MapOp> {
        let Some(installed) = self.services.remove(&key_parts(key)) else { return Vec::new() };
        let mut ops = vec![MapOp::RemoveService { key: *key }];
        self.rev_nat_ids.give_back(installed.value.rev_nat);
        self.release(installed, &mut ops);
        ops
    }

    /// Every operation that programs empty maps to the current plan (e.g. after the maps were
    /// recreated), in the same safe order.
    pub fn replay(&self) -> Vec<MapOp> {
        let mut ops: Vec<MapOp> = self
            .backends
            .iter()
            .map(|(addr, entry)| MapOp::UpsertBackend {
                id: entry.id,
                backend: backend_value(addr.address, addr.port, addr.proto),
            })
            .collect();
        for (table, entry) in &self.tables {
            ops.push(MapOp::WriteTable { table: entry.index, entries: self.build_table(table) });
        }
        for (key, installed) in &self.services {
            ops.push(MapOp::UpsertService { key: service_key(key.0, key.1, key.2), value: installed.value });
        }
        ops
    }

    /// Tables in use.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Backends in use.
    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// Services installed.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Bytes of map data in use: tables (`M` × 4 each), services (8 B key + 16 B value) and
    /// backends (4 B id + 8 B value); the kernel's per-entry overhead is not counted.
    pub fn memory_bytes(&self) -> u64 {
        let tables = self.tables.len() as u64 * u64::from(self.size.get()) * 4;
        let services = self.services.len() as u64 * (8 + 16);
        let backends = self.backends.len() as u64 * (4 + 8);
        tables + services + backends
    }

    pub fn maglev_size(&self) -> u32 {
        self.size.get()
    }

    pub fn max_tables(&self) -> u32 {
        self.max_tables
    }

    pub fn max_backends(&self) -> u32 {
        self.max_backends
    }

    /// The value the services map holds for `key`.
    pub fn service_value(&self, key: &ServiceKey) -> Option<ServiceValue> {
        self.services.get(&key_parts(key)).map(|installed| installed.value)
    }

    /// Every installed service and its value, by address, port and protocol (e.g. to name the
    /// per-service counters, which are keyed by `rev_nat`).
    pub fn service_values(&self) -> impl Iterator<Item = (ServiceKey, ServiceValue)> + '_ {
        self.services.iter().map(|(key, installed)| (service_key(key.0, key.1, key.2), installed.value))
    }

    /// Every backend with its id, by address, port and protocol (to check a saved plan
    /// against the maps a restarted daemon finds).
    pub fn backend_values(&self) -> impl Iterator<Item = (u32, Backend)> + '_ {
        self.backends.iter().map(|(addr, entry)| (entry.id, backend_value(addr.address, addr.port, addr.proto)))
    }

    /// The id of the backend `address:port/proto`, if a service uses it.
    pub fn backend_id(&self, address: Ipv4Addr, port: u16, proto: u8) -> Option<u32> {
        self.backends.get(&BackendAddr { address, port, proto }).map(|entry| entry.id)
    }

    /// Drops a replaced or removed service's hold on its backends and table.
    fn release(&mut self, old: Installed, ops: &mut Vec<MapOp>) {
        if let Some(table) = old.table {
            let entry = self.tables.get_mut(&table).expect("a service's table is planned");
            entry.refs -= 1;
            if entry.refs == 0 {
                let index = entry.index;
                self.tables.remove(&table);
                self.table_ids.give_back(index);
            }
        }
        for (addr, _) in old.backends {
            let entry = self.backends.get_mut(&addr).expect("a service's backend is planned");
            entry.refs -= 1;
            if entry.refs == 0 {
                let id = entry.id;
                self.backends.remove(&addr);
                self.backend_ids.give_back(id);
                ops.push(MapOp::RemoveBackend { id });
            }
        }
    }

    fn build_table(&self, table: &TableKey) -> Vec<u32> {
        let backends: Vec<MaglevBackend<u32>> = table
            .iter()
            .map(|(addr, weight)| MaglevBackend {
                name: format!("{}:{}", addr.address, addr.port),
                weight: *weight,
                value: self.backends[addr].id,
            })
            .collect();
        // Table keys hold at least one active backend, at most M (checked), with distinct names
        // (one protocol per table, one entry per address and port).
        maglev::build(self.size, &backends).expect("a table key is a valid Maglev input")
    }
}

/// A service's backends as the plan keys them: one per address and port (the larger weight
/// wins), sorted.
fn desired_backends(service: &Service) -> Vec<(BackendAddr, u32)> {
    let proto = service.key.proto;
    let mut merged: BTreeMap<BackendAddr, u32> = BTreeMap::new();
    for backend in &service.backends {
        let addr = BackendAddr { address: backend.address, port: backend.port, proto };
        let weight = merged.entry(addr).or_insert(backend.weight);
        *weight = (*weight).max(backend.weight);
    }
    merged.into_iter().collect()
}

/// The table a backend set needs: its active backends, or none when all are draining.
fn table_key(backends: &[(BackendAddr, u32)]) -> Option<TableKey> {
    let active: TableKey = backends.iter().filter(|(_, weight)| *weight > 0).copied().collect();
    (!active.is_empty()).then_some(active)
}
