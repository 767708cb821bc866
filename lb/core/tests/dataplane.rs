//! The data plane plan against a simulated map store that checks, after every single
//! operation, what the kernel relies on: a service's table is fully written and names only live
//! backends, nothing in use is overwritten or removed, identical backend sets share one table,
//! and nothing leaks once every service is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use atoll_lb_core::dataplane::{DataplanePlan, MapOp, NO_TABLE, PlanError};
use atoll_lb_core::vips::{BackendSpec, Service};
use atoll_lb_core::{Backend, PROTO_TCP, PROTO_UDP, ServiceKey, ServiceValue, key_parts, service_key};
use proptest::prelude::*;

/// The kernel's maps, as the programs would see them between two operations.
#[derive(Clone, Debug, Default, PartialEq)]
struct Store {
    size: usize,
    backends: HashMap<u32, Backend>,
    tables: HashMap<u32, Vec<u32>>,
    services: HashMap<ServiceKey, ServiceValue>,
}

impl Store {
    fn new(size: u32) -> Store {
        Store { size: size as usize, ..Store::default() }
    }

    /// Backend ids a live service can reach through its table.
    fn reachable(&self) -> BTreeSet<u32> {
        self.services
            .values()
            .filter(|value| value.count > 0)
            .flat_map(|value| self.tables[&value.table].iter().copied())
            .collect()
    }

    fn apply(&mut self, op: &MapOp) {
        match op {
            MapOp::UpsertBackend { id, backend } => {
                assert_ne!(*id, 0, "0 is never a backend id");
                if self.backends.get(id).is_some_and(|old| old != backend) {
                    assert!(!self.reachable().contains(id), "backend {id} changed while a service uses it");
                }
                self.backends.insert(*id, *backend);
            }
            MapOp::WriteTable { table, entries } => {
                assert_eq!(entries.len(), self.size, "tables are written whole");
                let in_use = self.services.values().any(|v| v.count > 0 && v.table == *table);
                if in_use {
                    assert_eq!(self.tables.get(table), Some(entries), "table {table} overwritten while in use");
                }
                for id in entries {
                    assert!(self.backends.contains_key(id), "table {table} names backend {id} before it exists");
                }
                self.tables.insert(*table, entries.clone());
            }
            MapOp::UpsertService { key, value } => {
                self.services.insert(*key, *value);
            }
            MapOp::RemoveService { key } => {
                assert!(self.services.remove(key).is_some(), "removing an absent service");
            }
            MapOp::RemoveBackend { id } => {
                assert!(!self.reachable().contains(id), "backend {id} removed while a service uses it");
                assert!(self.backends.remove(id).is_some(), "removing an absent backend");
            }
        }
        self.check();
    }

    /// What must hold between any two operations.
    fn check(&self) {
        for (key, value) in &self.services {
            if value.count == 0 {
                assert_eq!(value.table, NO_TABLE, "a service without active backends points at no table");
                continue;
            }
            let table = self.tables.get(&value.table).expect("a service's table is written before it points there");
            let ids: BTreeSet<u32> = table.iter().copied().collect();
            for id in &ids {
                assert!(self.backends.contains_key(id), "{key:?}: table entry {id} is not a live backend");
            }
            // Weights here are small enough for every active backend to own entries.
            assert_eq!(ids.len(), value.count as usize, "{key:?}: count is the number of active backends");
        }
    }

    /// The (address, port, weight-class) set a service really reaches.
    fn reached(&self, key: &ServiceKey) -> BTreeSet<(Ipv4Addr, u16)> {
        let value = self.services[key];
        if value.count == 0 {
            return BTreeSet::new();
        }
        self.tables[&value.table]
            .iter()
            .map(|id| {
                let backend = self.backends[id];
                (Ipv4Addr::from(backend.address.to_ne_bytes()), u16::from_be(backend.port))
            })
            .collect()
    }
}

fn vip(last: u8, port: u16, proto: u8) -> ServiceKey {
    service_key(Ipv4Addr::new(198, 19, 0, last), port, proto)
}

fn backend(last: u8, port: u16, weight: u32) -> BackendSpec {
    BackendSpec { address: Ipv4Addr::new(198, 18, 0, last), port, weight, task: format!("task-{last}-{port}") }
}

fn service(key: ServiceKey, backends: Vec<BackendSpec>) -> Service {
    Service { key, names: Vec::new(), backends }
}

fn apply_all(store: &mut Store, ops: &[MapOp]) {
    for op in ops {
        store.apply(op);
    }
}

#[test]
fn a_new_service_writes_backends_then_its_table_then_itself() {
    let mut plan = DataplanePlan::new(251, 8, 16).unwrap();
    let web = service(vip(1, 80, PROTO_TCP), vec![backend(1, 8080, 1), backend(2, 8080, 1)]);
    let ops = plan.update(&[&web]).unwrap();
    let kinds: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            MapOp::UpsertBackend { .. } => "backend",
            MapOp::WriteTable { .. } => "table",
            MapOp::UpsertService { .. } => "service",
            MapOp::RemoveService { .. } => "remove service",
            MapOp::RemoveBackend { .. } => "remove backend",
        })
        .collect();
    assert_eq!(kinds, ["backend", "backend", "table", "service"]);
    let mut store = Store::new(251);
    apply_all(&mut store, &ops);
    let value = plan.service_value(&web.key).unwrap();
    assert_eq!((value.count, value.rev_nat, value.flags), (2, 1, 0));
    assert_eq!(plan.backend_id(Ipv4Addr::new(198, 18, 0, 1), 8080, PROTO_TCP), Some(1));
    assert_eq!(plan.backend_id(Ipv4Addr::new(198, 18, 0, 1), 8080, PROTO_UDP), None);
    assert_eq!(plan.update(&[&web]).unwrap(), [], "nothing changed, nothing to do");
    assert_eq!(plan.memory_bytes(), 251 * 4 + 24 + 2 * 12);
}

#[test]
fn a_change_writes_a_new_table_before_switching_and_keeps_backend_ids() {
    let mut plan = DataplanePlan::new(251, 8, 16).unwrap();
    let mut store = Store::new(251);
    let key = vip(1, 80, PROTO_TCP);
    apply_all(&mut store, &plan.update(&[&service(key, vec![backend(1, 80, 1), backend(2, 80, 1)])]).unwrap());
    let first = plan.service_value(&key).unwrap();

    // Backend 2 drains, backend 3 arrives.
    let changed = service(key, vec![backend(1, 80, 1), backend(2, 80, 0), backend(3, 80, 1)]);
    let ops = plan.update(&[&changed]).unwrap();
    let new_table = match &ops[..] {
        [MapOp::UpsertBackend { id: 3, .. }, MapOp::WriteTable { table, .. }, MapOp::UpsertService { value, .. }] => {
            assert_eq!(value.table, *table);
            *table
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_ne!(new_table, first.table, "a table in use is never rewritten");
    apply_all(&mut store, &ops);
    assert_eq!(plan.backend_id(Ipv4Addr::new(198, 18, 0, 1), 80, PROTO_TCP), Some(1), "ids are stable");
    assert_eq!(plan.service_value(&key).unwrap().rev_nat, first.rev_nat, "so is the service's id");
    assert_eq!(plan.table_count(), 1, "the old table went back to the free list");
    assert_eq!(plan.backend_count(), 3, "a draining backend stays for its existing flows");

    // Backend 2 is gone: only its removal, after the switch.
    let gone = service(key, vec![backend(1, 80, 1), backend(3, 80, 1)]);
    let ops = plan.update(&[&gone]).unwrap();
    assert_eq!(ops, [MapOp::RemoveBackend { id: 2 }], "the same active set: the service value stays");
    apply_all(&mut store, &ops);
}

#[test]
fn identical_backend_sets_share_one_table_and_draining_services_have_none() {
    let mut plan = DataplanePlan::new(251, 8, 16).unwrap();
    let mut store = Store::new(251);
    let backends = vec![backend(1, 80, 1), backend(2, 80, 2)];
    let a = service(vip(1, 80, PROTO_TCP), backends.clone());
    let b = service(vip(2, 443, PROTO_TCP), backends.iter().rev().cloned().collect());
    let udp = service(vip(1, 80, PROTO_UDP), backends.clone());
    let ops = plan.update(&[&a, &b, &udp]).unwrap();
    apply_all(&mut store, &ops);
    let tables = ops.iter().filter(|op| matches!(op, MapOp::WriteTable { .. })).count();
    assert_eq!(tables, 2, "one for TCP, one for UDP (backend ids are per protocol)");
    assert_eq!(plan.service_value(&a.key).unwrap().table, plan.service_value(&b.key).unwrap().table);
    assert_eq!(plan.table_count(), 2);

    let draining = service(vip(3, 80, PROTO_TCP), vec![backend(4, 80, 0)]);
    let ops = plan.update(&[&draining]).unwrap();
    apply_all(&mut store, &ops);
    let value = plan.service_value(&draining.key).unwrap();
    assert_eq!((value.count, value.table), (0, NO_TABLE));
    assert!(matches!(ops[0], MapOp::UpsertBackend { .. }), "the draining backend is known for existing flows");

    let ops = plan.remove(&a.key);
    assert_eq!(ops, [MapOp::RemoveService { key: a.key }], "b still uses the table and backends");
    apply_all(&mut store, &ops);
    assert_eq!(plan.remove(&a.key), [], "unknown keys give nothing");
    for key in [b.key, udp.key, draining.key] {
        let ops = plan.remove(&key);
        assert!(matches!(ops[0], MapOp::RemoveService { .. }));
        apply_all(&mut store, &ops);
    }
    assert_eq!((plan.table_count(), plan.backend_count(), plan.service_count()), (0, 0, 0));
    assert_eq!(plan.memory_bytes(), 0);
    assert!(store.backends.is_empty() && store.services.is_empty());
}

#[test]
fn capacity_errors_are_precise_and_change_nothing() {
    assert!(matches!(DataplanePlan::new(1000, 8, 16), Err(PlanError::Size(_))));
    assert!(matches!(DataplanePlan::new(251, 0, 16), Err(PlanError::TableLimit { got: 0, .. })));
    assert!(matches!(DataplanePlan::new(251, NO_TABLE, 16), Err(PlanError::TableLimit { .. })));
    assert!(matches!(DataplanePlan::new(251, 8, 0), Err(PlanError::BackendLimit { got: 0, .. })));

    let mut plan = DataplanePlan::new(7, 1, 3).unwrap();
    let a = service(vip(1, 80, PROTO_TCP), vec![backend(1, 80, 1)]);
    plan.update(&[&a]).unwrap();
    let before = plan.clone();

    // A second, different backend set needs a second table while the first is in use.
    let b = service(vip(2, 80, PROTO_TCP), vec![backend(2, 80, 1)]);
    assert_eq!(plan.update(&[&b]), Err(PlanError::TooManyTables { needed: 2, max: 1 }));
    // Changing a's set also needs both tables at once (the new one is written first).
    let a2 = service(a.key, vec![backend(2, 80, 1)]);
    assert_eq!(plan.update(&[&a2]), Err(PlanError::TooManyTables { needed: 2, max: 1 }));
    let many = service(vip(3, 80, PROTO_TCP), (1..=4).map(|i| backend(i, 80, 0)).collect());
    assert_eq!(plan.update(&[&many]), Err(PlanError::TooManyBackends { needed: 4, max: 3 }));
    let wide = service(vip(4, 80, PROTO_TCP), (1..=8).map(|i| backend(i, 80, 1)).collect());
    let error = plan.update(&[&wide]).unwrap_err();
    assert_eq!(error, PlanError::TableTooSmall { key: wide.key, backends: 8, size: 7 });
    assert_eq!(
        error.to_string(),
        "service 198.19.0.4:80/tcp has 8 active backends, more than its Maglev table's 7 entries"
    );
    assert_eq!(plan.update(&[&a, &a]), Err(PlanError::DuplicateService(a.key)));
    assert_eq!(plan, before, "refused updates change nothing");

    // The same backend set as a shares its table: that fits.
    let shared = service(vip(5, 80, PROTO_TCP), vec![backend(1, 80, 1)]);
    assert_eq!(plan.update(&[&shared]).unwrap().len(), 1);
}

#[test]
fn replaying_the_plan_rebuilds_the_same_maps() {
    let mut plan = DataplanePlan::new(251, 8, 16).unwrap();
    let mut store = Store::new(251);
    let services = [
        service(vip(1, 80, PROTO_TCP), vec![backend(1, 80, 1), backend(2, 80, 1)]),
        service(vip(2, 80, PROTO_TCP), vec![backend(1, 80, 1), backend(2, 80, 1)]),
        service(vip(3, 53, PROTO_UDP), vec![backend(3, 53, 1), backend(4, 53, 0)]),
    ];
    apply_all(&mut store, &plan.update(&services.iter().collect::<Vec<_>>()).unwrap());
    apply_all(&mut store, &plan.remove(&services[0].key));
    let mut fresh = Store::new(251);
    apply_all(&mut fresh, &plan.replay());
    // The incremental store may hold tables nobody points at any more; compare what is live.
    store.tables.retain(|index, _| store.services.values().any(|v| v.table == *index));
    assert_eq!(fresh, store);
}

#[test]
fn a_saved_plan_continues_with_the_same_ids_and_tables() {
    let mut plan = DataplanePlan::new(251, 8, 16).unwrap();
    let a = service(vip(1, 80, PROTO_TCP), vec![backend(1, 80, 1), backend(2, 80, 2)]);
    let b = service(vip(2, 53, PROTO_UDP), vec![backend(3, 53, 1)]);
    plan.update(&[&a, &b]).unwrap();
    plan.remove(&a.key);

    let saved = serde_json::to_string(&plan).unwrap();
    let mut restored: DataplanePlan = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored, plan);
    // The next change hands out the same ids either way.
    let c = service(vip(3, 80, PROTO_TCP), vec![backend(4, 80, 1)]);
    assert_eq!(restored.update(&[&c]).unwrap(), plan.update(&[&c]).unwrap());

    // A size that is not a prime is refused on load, not discovered later by the kernel.
    let broken = saved.replacen("\"size\":251", "\"size\":250", 1);
    assert_ne!(broken, saved);
    assert!(serde_json::from_str::<DataplanePlan>(&broken).is_err());
}

/// One step of the random workload: the full set of services wanted now, as (key index,
/// backends as (backend index, weight)).
type Step = BTreeMap<usize, Vec<(usize, u32)>>;

const KEYS: usize = 8;
const BACKENDS: usize = 10;

fn key_of(index: usize) -> ServiceKey {
    let proto = if index.is_multiple_of(2) { PROTO_TCP } else { PROTO_UDP };
    vip((index / 2) as u8 + 1, 80, proto)
}

fn backend_of(index: usize, weight: u32) -> BackendSpec {
    backend((index / 2) as u8 + 1, 8080 + (index % 2) as u16, weight)
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Few distinct backend sets, so that sharing happens often.
    let backends = prop::collection::btree_map(0..BACKENDS, 0u32..=3, 0..5)
        .prop_map(|map| map.into_iter().collect::<Vec<(usize, u32)>>());
    let step = prop::collection::btree_map(0..KEYS, backends, 0..KEYS);
    prop::collection::vec(step, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_updates_keep_the_maps_consistent_after_every_operation(
        steps in steps(),
        max_tables in 1u32..=10,
        max_backends in 1u32..=20,
    ) {
        const SIZE: u32 = 251;
        let mut plan = DataplanePlan::new(SIZE, max_tables, max_backends).unwrap();
        let mut store = Store::new(SIZE);
        let mut installed: BTreeMap<usize, Vec<(usize, u32)>> = BTreeMap::new();
        for step in &steps {
            // Services no longer wanted go first (that frees room), then one update for the rest.
            for index in installed.keys().copied().collect::<Vec<_>>() {
                if !step.contains_key(&index) {
                    apply_all(&mut store, &plan.remove(&key_of(index)));
                    installed.remove(&index);
                }
            }
            let services: Vec<Service> = step
                .iter()
                .map(|(&index, backends)| {
                    service(key_of(index), backends.iter().map(|&(b, w)| backend_of(b, w)).collect())
                })
                .collect();
            let before = plan.clone();
            match plan.update(&services.iter().collect::<Vec<_>>()) {
                Ok(ops) => {
                    apply_all(&mut store, &ops);
                    installed.extend(step.iter().map(|(k, v)| (*k, v.clone())));
                }
                Err(PlanError::TooManyTables { max, .. }) => {
                    prop_assert_eq!(max, max_tables);
                    prop_assert_eq!(&plan, &before, "a refused update changes nothing");
                }
                Err(PlanError::TooManyBackends { needed, max }) => {
                    prop_assert!(needed > max as usize && max == max_backends);
                    prop_assert_eq!(&plan, &before, "a refused update changes nothing");
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }

            // The store serves exactly what is installed.
            let keys: BTreeSet<_> = store.services.keys().map(key_parts).collect();
            let wanted: BTreeSet<_> = installed.keys().map(|&i| key_parts(&key_of(i))).collect();
            prop_assert_eq!(keys, wanted);
            let mut table_of_set: HashMap<(u8, Vec<(usize, u32)>), u32> = HashMap::new();
            for (&index, backends) in &installed {
                let key = key_of(index);
                let active: Vec<(usize, u32)> = backends.iter().copied().filter(|(_, w)| *w > 0).collect();
                let expected: BTreeSet<(Ipv4Addr, u16)> = active.iter().map(|&(b, w)| {
                    let spec = backend_of(b, w);
                    (spec.address, spec.port)
                }).collect();
                prop_assert_eq!(store.reached(&key), expected);
                prop_assert_eq!(store.services[&key].count as usize, active.len());
                if !active.is_empty() {
                    let table = store.services[&key].table;
                    let shared = *table_of_set.entry((key.proto, active)).or_insert(table);
                    prop_assert_eq!(shared, table, "identical backend sets share one table");
                }
            }
            // No leaks: every stored backend belongs to an installed service, and every table
            // the plan holds is one a service points at.
            let used: BTreeSet<(Ipv4Addr, u16, u8)> = installed.iter().flat_map(|(&index, backends)| {
                let proto = key_of(index).proto;
                backends.iter().map(move |&(b, w)| { let s = backend_of(b, w); (s.address, s.port, proto) })
            }).collect();
            prop_assert_eq!(store.backends.len(), used.len());
            prop_assert_eq!(plan.backend_count(), used.len());
            let pointed: BTreeSet<u32> = store.services.values().filter(|v| v.count > 0).map(|v| v.table).collect();
            prop_assert_eq!(plan.table_count(), pointed.len());
            prop_assert!(plan.table_count() <= max_tables as usize && plan.backend_count() <= max_backends as usize);
        }
        for index in installed.keys() {
            apply_all(&mut store, &plan.remove(&key_of(*index)));
        }
        prop_assert!(store.services.is_empty() && store.backends.is_empty());
        let left = (plan.table_count(), plan.backend_count(), plan.service_count(), plan.memory_bytes());
        prop_assert_eq!(left, (0, 0, 0, 0));
    }
}
