//! The hashed named-VIP assignment (nodes following a Mesos master, with no Atoll master to
//! assign addresses): exactly what its docs guarantee, for random name sets in pools small
//! enough to collide often —
//!
//! 1. it is a function of the set of names: a node that saw another history (names that came
//!    and went, another order) computes the same addresses;
//! 2. adding a name never moves a name that sorts before it;
//! 3. adding a name moves nothing unless its address was, before, another name's (and then only
//!    names sorting after it move);
//!
//! and addresses are distinct, inside the pool, never its network or broadcast address, and
//! given to the first names in order while the pool has room. Driven through the projection,
//! the keys `sync_hashed_assignments` hands out keep a copy of the services exact.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use atoll_lb_core::vips::{Service, VipName, VipProjection, hashed_assignments, sync_hashed_assignments};
use atoll_lb_core::{ServiceKey, key_parts};
use atoll_proto::model::{
    Agent, AgentId, ClusterState, CommandInfo, DiscoveryInfo, DiscoveryPort, Event, EventKind, Framework, FrameworkId,
    FrameworkInfo, Labels, Resources, Task, TaskId, TaskInfo, TaskState, Time,
};
use ipnetwork::Ipv4Network;
use proptest::prelude::*;

fn vip_name() -> impl Strategy<Value = VipName> {
    (prop::sample::select(vec!["marathon", "other"]), "[a-h]{1,2}").prop_map(|(f, n)| VipName::new(f, n))
}

/// Pools from 6 to 62 addresses: collisions are the common case.
fn small_pool() -> impl Strategy<Value = Ipv4Network> {
    (26u8..=29).prop_map(|prefix| Ipv4Network::new(Ipv4Addr::new(198, 19, 0, 0), prefix).unwrap())
}

fn capacity(pool: Ipv4Network) -> usize {
    (pool.size() as usize).saturating_sub(2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn addresses_are_valid_and_the_first_names_get_them(
        names in prop::collection::btree_set(vip_name(), 0..40),
        pool in small_pool(),
    ) {
        let out = hashed_assignments(pool, &names);
        let addresses: BTreeSet<Ipv4Addr> = out.assigned.values().copied().collect();
        prop_assert_eq!(addresses.len(), out.assigned.len(), "distinct");
        for address in &addresses {
            prop_assert!(pool.contains(*address) && *address != pool.network() && *address != pool.broadcast());
        }
        let room = names.len().min(capacity(pool));
        let first: Vec<&VipName> = names.iter().take(room).collect();
        let last: Vec<VipName> = names.iter().skip(room).cloned().collect();
        prop_assert_eq!(out.assigned.keys().collect::<Vec<_>>(), first);
        prop_assert_eq!(out.unassigned, last);
    }

    #[test]
    fn adding_a_name_moves_only_what_the_docs_allow(
        names in prop::collection::btree_set(vip_name(), 0..20),
        new in vip_name(),
        pool in small_pool(),
    ) {
        prop_assume!(!names.contains(&new));
        let mut more = names.clone();
        more.insert(new.clone());
        prop_assume!(more.len() <= capacity(pool));
        let before = hashed_assignments(pool, &names).assigned;
        let after = hashed_assignments(pool, &more).assigned;
        let moved: Vec<&VipName> = names.iter().filter(|m| before[*m] != after[*m]).collect();
        // 2: nothing sorting before the new name moves.
        prop_assert!(moved.iter().all(|m| **m > new), "{:?} moved for {:?}", moved, new);
        // 3: no collision, no move.
        if !before.values().any(|address| *address == after[&new]) {
            prop_assert!(moved.is_empty(), "{:?} moved though {:?} took a free address", moved, new);
        }
    }
}

fn agent() -> Agent {
    Agent::registered(AgentId::new("a1"), "a1.example", SocketAddr::from(([198, 19, 255, 1], 5051)), Time(0))
}

fn framework(id: &str, name: &str) -> Framework {
    Framework::subscribed(FrameworkId::new(id), FrameworkInfo::named(name), Time(0))
}

/// Task `t<i>` of framework `f1` (`marathon`) on host port 31000+i with `VIP_0=/<name>:80`.
fn task(i: usize, name: &str, state: TaskState) -> Task {
    let mut labels = Labels::default();
    labels.insert("VIP_0", format!("/{name}:80"));
    let port = DiscoveryPort { number: 31000 + i as u32, name: String::new(), protocol: "tcp".into(), labels };
    let info = TaskInfo {
        name: format!("t{i}"),
        task_id: TaskId::new(format!("t{i}")),
        agent_id: AgentId::new("a1"),
        resources: Resources::new(),
        command: CommandInfo::shell("true"),
        labels: Labels::default(),
        discovery: Some(DiscoveryInfo {
            visibility: "FRAMEWORK".into(),
            name: format!("t{i}"),
            ports: vec![port],
            labels: Labels::default(),
        }),
        kill_grace_period_secs: None,
        health_check: None,
        networks: Vec::new(),
    };
    let mut task = Task::launched(FrameworkId::new("f1"), info, Time(0));
    task.state = state;
    task
}

/// Applies changed keys to a copy of the services.
fn serve(served: &mut BTreeMap<(Ipv4Addr, u16, u8), Service>, projection: &VipProjection, keys: &[ServiceKey]) {
    for key in keys {
        match projection.service(key) {
            Some(service) => served.insert(key_parts(key), service.clone()),
            None => served.remove(&key_parts(key)),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Tasks start, change their VIP name and die in random order on a 14-address pool: after
    /// every event the addresses are the hashed assignment of the names then carried (whatever
    /// came before), the keys handed out rebuild the services exactly, and a node starting from
    /// the final state alone serves the same.
    #[test]
    fn following_events_equals_starting_from_the_state(
        ops in prop::collection::vec((0usize..6, prop::option::of(0usize..8)), 1..40),
    ) {
        let pool: Ipv4Network = "198.19.0.0/28".parse().unwrap();
        let names = ["web", "db", "api", "cache", "queue", "search", "auth", "log"];
        let mut state = ClusterState {
            agents: vec![agent()],
            frameworks: vec![framework("f1", "marathon")],
            ..ClusterState::default()
        };
        let mut projection = VipProjection::new();
        let mut served = BTreeMap::new();
        let changed = projection.reset(&state, &BTreeMap::new());
        serve(&mut served, &projection, &changed);
        for (index, (i, name)) in ops.into_iter().enumerate() {
            let kind = match name {
                Some(n) => EventKind::TaskUpdated { task: task(i, names[n], TaskState::Running) },
                None => EventKind::TaskUpdated { task: task(i, "gone", TaskState::Killed) },
            };
            let event = Event { index: index as u64 + 1, timestamp: Time(0), kind };
            state.apply(&event);
            state.tasks.retain(|t| !t.state.is_terminal());
            let mut keys = projection.apply(&event);
            let (more, unassigned) = sync_hashed_assignments(&mut projection, pool);
            prop_assert!(unassigned.is_empty());
            keys.extend(more);
            serve(&mut served, &projection, &keys);

            let wanted = projection.wanted_names();
            prop_assert_eq!(projection.assignments(), &hashed_assignments(pool, &wanted).assigned);
            let services: BTreeMap<_, _> = projection.services().map(|s| (key_parts(&s.key), s.clone())).collect();
            prop_assert_eq!(&served, &services);
        }
        let mut fresh = VipProjection::new();
        fresh.reset(&state, &BTreeMap::new());
        sync_hashed_assignments(&mut fresh, pool);
        prop_assert_eq!(fresh.assignments(), projection.assignments());
        prop_assert_eq!(fresh.services().collect::<Vec<_>>(), projection.services().collect::<Vec<_>>());
    }
}
