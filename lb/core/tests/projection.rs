//! The VIP projection fed with snapshots and events: which tasks are backends, at which
//! address and weight; named VIPs waiting for their address; label problems reported once; and,
//! for random event sequences, the changed keys it hands out always rebuild exactly its
//! services, which equal both a from-scratch reset and an independent naive computation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use atoll_lb_core::vips::{BackendSpec, LabelError, Service, VipLabel, VipName, VipProjection, is_vip_label_key};
use atoll_lb_core::{PROTO_TCP, PROTO_UDP, ServiceKey, key_parts, service_key};
use atoll_proto::model::{
    Agent, AgentId, ClusterState, CommandInfo, DiscoveryInfo, DiscoveryPort, Event, EventKind, Framework, FrameworkId,
    FrameworkInfo, HealthCheck, HealthCheckKind, Labels, NetworkRequest, Resources, Task, TaskId, TaskInfo, TaskState,
    Time, VipAssignment,
};
use proptest::prelude::*;

fn agent(id: &str, address: &str) -> Agent {
    Agent::registered(
        AgentId::new(id),
        format!("{id}.example"),
        SocketAddr::new(address.parse().unwrap(), 5051),
        Time(0),
    )
}

fn framework(id: &str, name: &str) -> Framework {
    Framework::subscribed(FrameworkId::new(id), FrameworkInfo::named(name), Time(0))
}

/// A discovery port: number, protocol, VIP labels (`VIP_0`, `VIP_1`, … in order).
fn port(number: u32, protocol: &str, vips: &[&str]) -> DiscoveryPort {
    let mut labels = Labels::default();
    for (i, value) in vips.iter().enumerate() {
        labels.insert(format!("VIP_{i}"), *value);
    }
    DiscoveryPort { number, name: String::new(), protocol: protocol.into(), labels }
}

fn task(framework: &str, id: &str, agent: &str, state: TaskState, ports: Vec<DiscoveryPort>) -> Task {
    let info = TaskInfo {
        name: id.into(),
        task_id: TaskId::new(id),
        agent_id: AgentId::new(agent),
        resources: Resources::new(),
        command: CommandInfo::shell("true"),
        labels: Labels::default(),
        discovery: Some(DiscoveryInfo {
            visibility: "FRAMEWORK".into(),
            name: id.into(),
            ports,
            labels: Labels::default(),
        }),
        kill_grace_period_secs: None,
        health_check: None,
        networks: Vec::new(),
    };
    let mut task = Task::launched(FrameworkId::new(framework), info, Time(0));
    task.state = state;
    task
}

fn on_container_network(mut task: Task, ip: Option<&str>) -> Task {
    task.networks = vec![NetworkRequest { name: "atoll".into(), ip: None, port_mappings: Vec::new() }];
    task.ip_addresses = ip.into_iter().map(|ip| ip.parse().unwrap()).collect();
    task
}

fn with_health_check(mut task: Task, healthy: Option<bool>) -> Task {
    task.health_check = Some(HealthCheck::new(HealthCheckKind::Tcp { port: 80 }));
    task.healthy = healthy;
    task
}

fn key(address: &str, port: u16, proto: u8) -> ServiceKey {
    service_key(address.parse().unwrap(), port, proto)
}

fn spec(address: &str, port: u16, weight: u32, task: &str) -> BackendSpec {
    BackendSpec { address: address.parse().unwrap(), port, weight, task: task.into() }
}

/// Drives a projection and a copy of its services built only from the keys it hands out.
struct Harness {
    projection: VipProjection,
    served: BTreeMap<(Ipv4Addr, u16, u8), Service>,
    state: ClusterState,
    index: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness { projection: VipProjection::new(), served: BTreeMap::new(), state: ClusterState::default(), index: 0 }
    }

    fn serve(&mut self, changed: Vec<ServiceKey>) -> Vec<ServiceKey> {
        let mut seen = BTreeSet::new();
        for key in &changed {
            let parts = key_parts(key);
            assert!(seen.insert(parts), "{key:?} handed out twice in one call");
            let now = self.projection.service(key).cloned();
            assert_ne!(self.served.get(&parts), now.as_ref(), "{key:?} handed out but unchanged");
            match now {
                Some(service) => self.served.insert(parts, service),
                None => self.served.remove(&parts),
            };
        }
        let all: BTreeMap<_, _> = self.projection.services().map(|s| (key_parts(&s.key), s.clone())).collect();
        assert_eq!(self.served, all, "the changed keys rebuild the services");
        changed
    }

    fn event(&mut self, kind: EventKind) -> Vec<ServiceKey> {
        self.index += 1;
        let event = Event { index: self.index, timestamp: Time(self.index), kind };
        self.state.apply(&event);
        let changed = self.projection.apply(&event);
        assert_eq!(self.projection.index(), self.index);
        self.serve(changed)
    }

    fn task(&mut self, task: Task) -> Vec<ServiceKey> {
        self.event(EventKind::TaskUpdated { task })
    }

    fn assign(&mut self, framework: &str, name: &str, address: &str) -> Vec<ServiceKey> {
        let vip = VipAssignment { framework: framework.into(), name: name.into(), address: address.parse().unwrap() };
        self.event(EventKind::VipAssigned { vip })
    }

    fn backends(&self, key: &ServiceKey) -> Vec<BackendSpec> {
        self.projection.service(key).map(|s| s.backends.clone()).unwrap_or_default()
    }

    /// Incremental == batch == naive.
    fn check_batch(&self) {
        let mut fresh = VipProjection::new();
        fresh.reset(&self.state, &BTreeMap::new());
        let fresh: Vec<&Service> = fresh.services().collect();
        let incremental: Vec<&Service> = self.projection.services().collect();
        assert_eq!(fresh, incremental, "incremental == batch");
        let naive = naive(&self.state);
        let incremental: BTreeMap<_, _> = self.projection.services().map(|s| (key_parts(&s.key), s.clone())).collect();
        assert_eq!(incremental, naive, "incremental == naive");
    }
}

/// `marathon` (id `fw`) and an agent at 198.19.255.10.
fn cluster() -> Harness {
    let mut h = Harness::new();
    assert!(h.event(EventKind::AgentAdded { agent: agent("a1", "198.19.255.10") }).is_empty());
    assert!(h.event(EventKind::FrameworkAdded { framework: framework("fw", "marathon") }).is_empty());
    h
}

#[test]
fn a_named_vip_serves_once_assigned_at_the_host_port() {
    let mut h = cluster();
    let web = VipName::new("marathon", "web");
    let staging = task("fw", "web.1", "a1", TaskState::Staging, vec![port(31000, "tcp", &["/web:80"])]);
    assert!(h.task(staging.clone()).is_empty());
    assert_eq!(h.projection.unassigned(), std::slice::from_ref(&web), "asked for before the task runs");
    assert!(h.task(Task { state: TaskState::Running, ..staging.clone() }).is_empty(), "no address yet");

    let vip = key("198.19.0.1", 80, PROTO_TCP);
    assert_eq!(h.assign("marathon", "web", "198.19.0.1"), [vip]);
    assert!(h.projection.unassigned().is_empty());
    let service = h.projection.service(&vip).unwrap();
    assert_eq!(service.names, std::slice::from_ref(&web));
    assert_eq!(service.backends, [spec("198.19.255.10", 31000, 1, "web.1")]);
    assert_eq!((service.active_backends(), service.draining_backends()), (1, 0));

    // A second instance on another agent.
    h.event(EventKind::AgentAdded { agent: agent("a2", "198.19.255.11") });
    let second = task("fw", "web.2", "a2", TaskState::Running, vec![port(31001, "tcp", &["/web:80"])]);
    assert_eq!(h.task(second.clone()), [vip]);
    assert_eq!(h.backends(&vip).len(), 2);

    // KILLING drains, terminal removes; the last one gone removes the service.
    assert_eq!(h.task(Task { state: TaskState::Killing, ..second.clone() }), [vip]);
    assert_eq!(h.backends(&vip)[1], spec("198.19.255.11", 31001, 0, "web.2"));
    assert_eq!(h.task(Task { state: TaskState::Killed, ..second }), [vip]);
    assert_eq!(h.backends(&vip).len(), 1);
    assert_eq!(h.task(Task { state: TaskState::Finished, ..staging }), [vip]);
    assert!(h.projection.service(&vip).is_none());
    h.check_batch();
}

#[test]
fn container_tasks_are_backends_on_their_own_address_and_container_port() {
    let mut h = cluster();
    h.assign("marathon", "db", "198.19.0.7");
    let vip = key("198.19.0.7", 5432, PROTO_TCP);
    let pending =
        on_container_network(task("fw", "db.1", "a1", TaskState::Running, vec![port(5432, "", &["/db:5432"])]), None);
    assert!(h.task(pending.clone()).is_empty(), "its address is not known yet, and the agent's would be wrong");
    assert_eq!(h.task(on_container_network(pending, Some("198.18.0.5"))), [vip]);
    assert_eq!(h.backends(&vip), [spec("198.18.0.5", 5432, 1, "db.1")]);
    // Its agent's address changing does not move it.
    assert!(h.event(EventKind::AgentUpdated { agent: agent("a1", "198.19.255.99") }).is_empty());
    h.check_batch();
}

#[test]
fn health_decides_the_weight() {
    let mut h = cluster();
    h.assign("marathon", "web", "198.19.0.1");
    let vip = key("198.19.0.1", 80, PROTO_TCP);
    let base = task("fw", "web.1", "a1", TaskState::Running, vec![port(31000, "tcp", &["/web:80"])]);
    assert!(h.task(with_health_check(base.clone(), None)).is_empty(), "no verdict yet: not a backend");
    assert_eq!(h.task(with_health_check(base.clone(), Some(true))), [vip]);
    assert_eq!(h.backends(&vip)[0].weight, 1);
    assert_eq!(h.task(Task { state: TaskState::Unreachable, ..with_health_check(base.clone(), Some(true)) }), [vip]);
    assert_eq!(h.backends(&vip)[0].weight, 0, "unreachable drains");
    assert_eq!(h.task(with_health_check(base.clone(), Some(true))), [vip]);
    assert_eq!(h.backends(&vip)[0].weight, 1, "back");
    assert_eq!(h.task(with_health_check(base.clone(), Some(false))), [vip]);
    assert_eq!(h.backends(&vip)[0].weight, 0, "unhealthy drains");
    assert!(h.task(Task { state: TaskState::Killing, ..with_health_check(base, Some(false)) }).is_empty(), "still 0");
    h.check_batch();
}

#[test]
fn both_protocols_fixed_vips_and_frameworks_keep_vips_apart() {
    let mut h = cluster();
    h.event(EventKind::FrameworkAdded { framework: framework("fw2", "other") });
    let dns =
        task("fw", "dns.1", "a1", TaskState::Running, vec![port(31053, "udp,tcp", &["/dns:53", "198.19.200.1:53"])]);
    let changed = h.task(dns);
    assert_eq!(
        changed,
        [key("198.19.200.1", 53, PROTO_TCP), key("198.19.200.1", 53, PROTO_UDP)],
        "fixed: no assignment"
    );
    assert!(h.projection.service(&changed[0]).unwrap().names.is_empty());
    assert_eq!(
        h.assign("marathon", "dns", "198.19.0.2"),
        [key("198.19.0.2", 53, PROTO_TCP), key("198.19.0.2", 53, PROTO_UDP)]
    );

    // `/web:80` on two frameworks: two VIPs.
    h.assign("marathon", "web", "198.19.0.3");
    h.assign("other", "web", "198.19.0.4");
    h.task(task("fw", "web.1", "a1", TaskState::Running, vec![port(31080, "tcp", &["/web:80"])]));
    h.task(task("fw2", "web.1", "a1", TaskState::Running, vec![port(31081, "tcp", &["/web:80"])]));
    assert_eq!(h.backends(&key("198.19.0.3", 80, PROTO_TCP)), [spec("198.19.255.10", 31080, 1, "web.1")]);
    assert_eq!(h.backends(&key("198.19.0.4", 80, PROTO_TCP)), [spec("198.19.255.10", 31081, 1, "web.1")]);

    // A framework removed takes its named VIPs' backends with it; fixed ones stay.
    let changed = h.event(EventKind::FrameworkRemoved { framework_id: FrameworkId::new("fw") });
    assert!(changed.contains(&key("198.19.0.3", 80, PROTO_TCP)));
    assert!(h.projection.service(&key("198.19.200.1", 53, PROTO_UDP)).is_some());
    h.check_batch();
}

#[test]
fn agents_moving_and_assignments_moving_move_services() {
    let mut h = cluster();
    h.assign("marathon", "web", "198.19.0.1");
    h.task(task("fw", "web.1", "a1", TaskState::Running, vec![port(31000, "tcp", &["/web:80"])]));
    let vip = key("198.19.0.1", 80, PROTO_TCP);
    let mut busier = agent("a1", "198.19.255.10");
    busier.used = Resources::new().with_ranges("ports", [(31000, 31000)]);
    assert!(h.event(EventKind::AgentUpdated { agent: busier }).is_empty(), "only the address matters");
    assert_eq!(h.event(EventKind::AgentUpdated { agent: agent("a1", "198.19.255.20") }), [vip]);
    assert_eq!(h.backends(&vip)[0].address, Ipv4Addr::new(198, 19, 255, 20));
    assert_eq!(h.event(EventKind::AgentRemoved { agent_id: AgentId::new("a1") }), [vip]);
    h.event(EventKind::AgentAdded { agent: agent("a1", "198.19.255.10") });

    let moved = key("198.19.0.9", 80, PROTO_TCP);
    assert_eq!(h.assign("marathon", "web", "198.19.0.9"), [vip, moved]);
    let vip2 =
        VipAssignment { framework: "marathon".into(), name: "web".into(), address: "198.19.0.9".parse().unwrap() };
    assert_eq!(h.event(EventKind::VipReleased { vip: vip2 }), [moved]);
    assert_eq!(h.projection.unassigned(), [VipName::new("marathon", "web")]);
    let changed = h.projection.set_assignment(VipName::new("marathon", "web"), Ipv4Addr::new(198, 19, 0, 1));
    assert_eq!(h.serve(changed), [vip]);
    let changed = h.projection.remove_assignment(&VipName::new("marathon", "web"));
    assert_eq!(h.serve(changed), [vip]);
}

#[test]
fn label_problems_are_reported_once_and_spare_the_good_labels() {
    let mut h = cluster();
    let bad = task(
        "fw",
        "web.1",
        "a1",
        TaskState::Running,
        vec![
            port(31000, "tcp", &["web", "198.19.200.1:80"]),
            port(31001, "sctp", &["/x:1"]),
            port(70000, "", &["/y:1"]),
        ],
    );
    assert_eq!(h.task(bad.clone()), [key("198.19.200.1", 80, PROTO_TCP)], "the good label works");
    let problems = h.projection.take_new_problems();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(matches!(problems[0].error, LabelError::MissingPort(_)));
    assert_eq!((problems[0].label.as_str(), problems[0].value.as_str(), problems[0].port), ("VIP_0", "web", 31000));
    assert!(matches!(problems[1].error, LabelError::UnknownProtocol(_)));
    assert!(matches!(problems[2].error, LabelError::PortNumber(70000)));
    assert!(problems[0].to_string().contains("task web.1"), "{}", problems[0]);

    h.task(Task { healthy: Some(true), ..bad.clone() });
    assert!(h.projection.take_new_problems().is_empty(), "not again for the same task");
    assert_eq!(h.projection.problems().count(), 3);
    let mut state = h.state.clone();
    state.index += 1;
    let changed = h.projection.reset(&state, &BTreeMap::new());
    assert!(changed.is_empty(), "the same state again changes nothing");
    assert!(h.projection.take_new_problems().is_empty(), "nor after a reset with the same problems");
    h.task(Task { state: TaskState::Failed, ..bad });
    assert_eq!(h.projection.problems().count(), 0, "gone with the task");
}

#[test]
fn reset_reports_the_difference_and_takes_assignments() {
    let mut h = cluster();
    h.task(task("fw", "web.1", "a1", TaskState::Running, vec![port(31000, "tcp", &["/web:80", "198.19.200.1:80"])]));
    let mut projection = VipProjection::new();
    let mut assignments = BTreeMap::new();
    assignments.insert(VipName::new("marathon", "web"), Ipv4Addr::new(198, 19, 0, 1));
    let changed = projection.reset(&h.state, &assignments);
    assert_eq!(changed, [key("198.19.0.1", 80, PROTO_TCP), key("198.19.200.1", 80, PROTO_TCP)]);
    assert_eq!(projection.assignments(), &assignments);
    assert!(projection.reset(&h.state, &assignments).is_empty());
    assert_eq!(projection.reset(&ClusterState::default(), &BTreeMap::new()).len(), 2, "everything went away");
}

// ---- random event sequences ----

/// The naive reading of the issue: services straight from the folded state.
fn naive(state: &ClusterState) -> BTreeMap<(Ipv4Addr, u16, u8), Service> {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped().filter(|ip| !ip.is_unspecified()),
        _ => None,
    };
    let assignments: BTreeMap<VipName, Ipv4Addr> = state
        .vips
        .iter()
        .filter_map(|v| Some((VipName::new(v.framework.clone(), v.name.clone()), v4(v.address)?)))
        .collect();
    type Backends = BTreeMap<(Ipv4Addr, u16), BackendSpec>;
    let mut services: BTreeMap<(Ipv4Addr, u16, u8), (BTreeSet<VipName>, Backends)> = BTreeMap::new();
    for task in &state.tasks {
        let weight = match (task.state, task.healthy, task.health_check.is_some()) {
            (TaskState::Running, Some(true), _) | (TaskState::Running, None, false) => 1,
            (TaskState::Running, Some(false), _) | (TaskState::Killing | TaskState::Unreachable, _, _) => 0,
            _ => continue,
        };
        let address = match task.ip_addresses.iter().find_map(|ip| v4(*ip)) {
            Some(ip) => ip,
            None if !task.networks.is_empty() => continue,
            None => match state.agents.iter().find(|a| a.id == task.agent_id).and_then(|a| v4(a.address.ip())) {
                Some(ip) => ip,
                None => continue,
            },
        };
        let framework = state.frameworks.iter().find(|f| f.id == task.framework_id).map(|f| f.info.name.clone());
        for port in task.discovery.iter().flat_map(|d| &d.ports) {
            let Ok(number) = u16::try_from(port.number) else { continue };
            if number == 0 {
                continue;
            }
            let protos: Vec<u8> = match port.protocol.as_str() {
                "" | "tcp" => vec![PROTO_TCP],
                "udp" => vec![PROTO_UDP],
                "udp,tcp" | "tcp,udp" => vec![PROTO_TCP, PROTO_UDP],
                _ => continue,
            };
            for (label, value) in &port.labels.0 {
                if !is_vip_label_key(label) {
                    continue;
                }
                let (address_of_vip, vip_port, name) = match VipLabel::parse(value) {
                    Ok(VipLabel::Fixed { address, port }) => (Some(address), port, None),
                    Ok(VipLabel::Named { name, port }) => {
                        let Some(framework) = &framework else { continue };
                        let name = VipName::new(framework.clone(), name);
                        (assignments.get(&name).copied(), port, Some(name))
                    }
                    Err(_) => continue,
                };
                let Some(vip_address) = address_of_vip else { continue };
                for &proto in &protos {
                    let (names, backends) = services.entry((vip_address, vip_port, proto)).or_default();
                    names.extend(name.clone());
                    let candidate = BackendSpec { address, port: number, weight, task: task.id.0.clone() };
                    let slot = backends.entry((address, number)).or_insert_with(|| candidate.clone());
                    if candidate.weight > slot.weight || (candidate.weight == slot.weight && candidate.task < slot.task)
                    {
                        *slot = candidate;
                    }
                }
            }
        }
    }
    services
        .into_iter()
        .map(|(k, (names, backends))| {
            let service = Service {
                key: service_key(k.0, k.1, k.2),
                names: names.into_iter().collect(),
                backends: backends.into_values().collect(),
            };
            (k, service)
        })
        .collect()
}

const AGENT_ADDRESSES: [&str; 4] = ["198.19.255.1", "198.19.255.2", "0.0.0.0", "::1"];
const LABELS: [&str; 6] = ["/web:80", "web:80", "/db:5432", "198.19.200.1:53", "garbage", "/web:81"];
const PROTOCOLS: [&str; 5] = ["", "tcp", "udp", "udp,tcp", "sctp"];
const STATES: [TaskState; 7] = [
    TaskState::Staging,
    TaskState::Running,
    TaskState::Running,
    TaskState::Running,
    TaskState::Killing,
    TaskState::Unreachable,
    TaskState::Finished,
];

#[derive(Clone, Debug)]
enum Step {
    Agent {
        agent: usize,
        address: Option<usize>,
    },
    Framework {
        framework: usize,
        name: Option<usize>,
    },
    Task {
        id: usize,
        framework: usize,
        agent: usize,
        state: usize,
        health: Option<Option<bool>>,
        ip: Option<u8>,
        container: bool,
        ports: Vec<(u32, usize, Vec<usize>)>,
    },
    Assign {
        framework_name: usize,
        name: usize,
        address: Option<u8>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let port =
        (prop::sample::select(vec![80u32, 8080, 0]), 0..PROTOCOLS.len(), prop::collection::vec(0..LABELS.len(), 0..3));
    prop_oneof![
        1 => (0..3usize, prop::option::of(0..AGENT_ADDRESSES.len()))
            .prop_map(|(agent, address)| Step::Agent { agent, address }),
        1 => (0..2usize, prop::option::weighted(0.8, 0..2usize))
            .prop_map(|(framework, name)| Step::Framework { framework, name }),
        4 => (
            0..5usize,
            0..2usize,
            0..3usize,
            0..STATES.len(),
            prop::option::of(prop::option::of(any::<bool>())),
            prop::option::of(1..4u8),
            any::<bool>(),
            prop::collection::vec(port, 0..3),
        )
            .prop_map(|(id, framework, agent, state, health, ip, container, ports)| Step::Task {
                id, framework, agent, state, health, ip, container, ports
            }),
        1 => (0..2usize, 0..3usize, prop::option::of(1..4u8)).prop_map(|(framework_name, name, address)| Step::Assign {
            framework_name, name, address
        }),
    ]
}

const FRAMEWORK_NAMES: [&str; 2] = ["marathon", "other"];
const VIP_NAMES: [&str; 3] = ["web", "db", "cache"];

fn kind_of(step: &Step) -> EventKind {
    match step.clone() {
        Step::Agent { agent: a, address: Some(address) } => {
            EventKind::AgentUpdated { agent: agent(&format!("a{a}"), AGENT_ADDRESSES[address]) }
        }
        Step::Agent { agent, address: None } => EventKind::AgentRemoved { agent_id: AgentId::new(format!("a{agent}")) },
        Step::Framework { framework: f, name: Some(name) } => {
            EventKind::FrameworkUpdated { framework: framework(&format!("f{f}"), FRAMEWORK_NAMES[name]) }
        }
        Step::Framework { framework, name: None } => {
            EventKind::FrameworkRemoved { framework_id: FrameworkId::new(format!("f{framework}")) }
        }
        Step::Task { id, framework, agent, state, health, ip, container, ports } => {
            let ports = ports
                .into_iter()
                .map(|(number, protocol, labels)| {
                    let labels: Vec<&str> = labels.into_iter().map(|l| LABELS[l]).collect();
                    port(number, PROTOCOLS[protocol], &labels)
                })
                .collect();
            let mut task =
                task(&format!("f{framework}"), &format!("t{id}"), &format!("a{agent}"), STATES[state], ports);
            if let Some(healthy) = health {
                task = with_health_check(task, healthy);
            }
            if container {
                let ip = ip.map(|i| format!("198.18.0.{i}"));
                task = on_container_network(task, ip.as_deref());
            } else if let Some(i) = ip {
                task.ip_addresses = vec![format!("198.18.0.{i}").parse().unwrap()];
            }
            EventKind::TaskUpdated { task }
        }
        Step::Assign { framework_name, name, address } => {
            let vip = VipAssignment {
                framework: FRAMEWORK_NAMES[framework_name].into(),
                name: VIP_NAMES[name].into(),
                address: format!("198.19.0.{}", address.unwrap_or(1)).parse().unwrap(),
            };
            if address.is_some() { EventKind::VipAssigned { vip } } else { EventKind::VipReleased { vip } }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_event_sequences_keep_incremental_batch_and_naive_equal(steps in prop::collection::vec(step(), 1..40)) {
        let mut h = Harness::new();
        for step in &steps {
            h.event(kind_of(step));
            h.check_batch();
        }
        // Problems are handed out once.
        h.projection.take_new_problems();
        prop_assert!(h.projection.take_new_problems().is_empty());
    }
}
