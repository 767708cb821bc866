//! The projection fed with Atoll's snapshot and events: records appear when a task runs and
//! vanish the moment it stops, is killed or turns unhealthy; shared names keep every address;
//! and the changes it hands out always rebuild exactly its records, whatever the event order
//! (incremental == batch).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use atoll_dns::projection::{DnsConfig, Masters, Projection};
use atoll_dns::records::{Change, Name, RecordData, RecordSet, RecordType};
use atoll_proto::model::{
    Agent, AgentId, AgentState, ClusterState, CommandInfo, DiscoveryInfo, DiscoveryPort, Event, EventKind, Framework,
    FrameworkId, FrameworkInfo, HealthCheck, HealthCheckKind, Labels, Resources, Task, TaskId, TaskInfo, TaskState,
    Time,
};
use proptest::prelude::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP")
}

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

/// A task in `state` with the given host ports and own IPs.
fn task(framework: &str, id: &str, name: &str, agent: &str, state: TaskState, ports: &[u64], ips: &[&str]) -> Task {
    let info = TaskInfo {
        name: name.into(),
        task_id: TaskId::new(id),
        agent_id: AgentId::new(agent),
        resources: Resources::new().with_ranges("ports", ports.iter().map(|&p| (p, p))),
        command: CommandInfo::shell("true"),
        labels: Labels::default(),
        discovery: None,
        kill_grace_period_secs: None,
        health_check: None,
        networks: Vec::new(),
    };
    let mut task = Task::launched(FrameworkId::new(framework), info, Time(0));
    task.state = state;
    task.ip_addresses = ips.iter().map(|text| ip(text)).collect();
    task
}

/// Drives a projection and a record set built only from the changes it hands out, checking
/// after every step that each change really changed the served set and that both agree.
struct Harness {
    projection: Projection,
    served: RecordSet,
    state: ClusterState,
    index: u64,
}

impl Harness {
    fn new(config: DnsConfig) -> Harness {
        Harness {
            projection: Projection::new(config),
            served: RecordSet::new(),
            state: ClusterState::default(),
            index: 0,
        }
    }

    fn serve(&mut self, changes: Vec<Change>) -> Vec<Change> {
        let mut seen = BTreeSet::new();
        for change in &changes {
            let (record, effective) = match change {
                Change::Add(record) => (record, self.served.insert(record.clone())),
                Change::Remove(record) => (record, self.served.remove(record)),
            };
            assert!(effective, "{change:?} changes nothing");
            assert!(seen.insert(record.clone()), "{record:?} changed twice in one call");
        }
        assert_eq!(&self.served, self.projection.records(), "the changes rebuild the records");
        changes
    }

    fn event(&mut self, kind: EventKind) -> Vec<Change> {
        self.index += 1;
        let event = Event { index: self.index, timestamp: Time(self.index), kind };
        self.state.apply(&event);
        let changes = self.projection.apply(&event);
        assert_eq!(self.projection.serial(), self.index as u32);
        self.serve(changes)
    }

    fn set_masters(&mut self, masters: Masters) -> Vec<Change> {
        let changes = self.projection.set_masters(masters);
        self.serve(changes)
    }

    fn task(&mut self, task: Task) -> Vec<Change> {
        self.event(EventKind::TaskUpdated { task })
    }

    fn values(&self, name: &str, kind: RecordType) -> BTreeSet<String> {
        self.projection
            .records()
            .get(&Name::new(name), kind)
            .map(|data| match data {
                RecordData::A(ip) => ip.to_string(),
                RecordData::Aaaa(ip) => ip.to_string(),
                RecordData::Srv { port, target, .. } => format!("{target}:{port}"),
            })
            .collect()
    }

    fn a(&self, name: &str) -> BTreeSet<String> {
        self.values(name, RecordType::A)
    }

    fn srv(&self, name: &str) -> BTreeSet<String> {
        self.values(name, RecordType::Srv)
    }

    /// The whole state again from scratch gives the same records.
    fn check_batch(&self) {
        let mut fresh = Projection::new(self.projection.config().clone());
        fresh.set_masters(self.projection.masters().clone());
        fresh.reset(&self.state);
        assert_eq!(fresh.records(), self.projection.records(), "incremental == batch");
        assert_eq!(unordered(&fresh.enumerate()), unordered(&self.projection.enumerate()));
    }
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn unordered(enumerate: &serde_json::Value) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for framework in enumerate["frameworks"].as_array().unwrap() {
        lines.insert(format!("framework {}", framework["name"]));
        for task in framework["tasks"].as_array().unwrap() {
            for record in task["records"].as_array().unwrap() {
                lines.insert(format!("{} {} {} {record}", framework["name"], task["id"], task["name"]));
            }
        }
    }
    lines
}

/// An agent and the `marathon` framework, with the masters known.
fn cluster(config: DnsConfig) -> Harness {
    let mut h = Harness::new(config);
    h.set_masters(Masters {
        leader: Some("198.19.255.1:5050".parse().unwrap()),
        masters: vec!["198.19.255.1:5050".parse().unwrap()],
    });
    h.event(EventKind::AgentAdded { agent: agent("run-S0", "198.19.255.10") });
    h.event(EventKind::FrameworkAdded { framework: framework("fw", "marathon") });
    h
}

#[test]
fn a_running_task_gets_its_names_and_loses_them_when_killed() {
    let mut h = cluster(DnsConfig::default());
    assert_eq!(h.a("slave.mesos."), set(&["198.19.255.10"]));
    assert_eq!(h.srv("_slave._tcp.mesos."), set(&["slave.mesos.:5051"]));
    assert_eq!(h.a("leader.mesos."), set(&["198.19.255.1"]));
    assert_eq!(h.srv("_leader._udp.mesos."), set(&["leader.mesos.:5050"]));
    assert_eq!(h.a("master0.mesos."), set(&["198.19.255.1"]));
    assert_eq!(h.a("ns1.mesos."), set(&[]), "no DNS address configured");

    let staging = task("fw", "web.1", "web", "run-S0", TaskState::Staging, &[31000], &[]);
    assert!(h.event(EventKind::TaskAdded { task: staging.clone() }).is_empty(), "only RUNNING tasks have names");

    let running = Task { state: TaskState::Running, ip_addresses: vec![ip("198.18.0.5")], ..staging.clone() };
    let added = h.task(running.clone());
    assert!(added.iter().all(|c| matches!(c, Change::Add(_))));
    let hash = atoll_dns::projection::hash::task_id_hash("web.1");
    let canonical = format!("web-{hash}-s0.marathon.mesos.");
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.18.0.5"]));
    assert_eq!(h.a(&canonical), set(&["198.18.0.5"]));
    assert_eq!(h.a("web.marathon.slave.mesos."), set(&["198.19.255.10"]));
    let slave_target = format!("web-{hash}-s0.marathon.slave.mesos.:31000");
    for name in ["_web._tcp.marathon.mesos.", "_web._udp.marathon.mesos.", "_web._tcp.marathon.slave.mesos."] {
        assert_eq!(h.srv(name), set(&[&slave_target]), "{name}");
    }
    h.check_batch();

    // An update that changes nothing DNS cares about hands out nothing.
    assert!(h.task(Task { healthy: None, ..running.clone() }).is_empty());

    let removed = h.task(Task { state: TaskState::Killing, ..running.clone() });
    assert_eq!(removed.len(), added.len());
    assert!(removed.iter().all(|c| matches!(c, Change::Remove(_))));
    assert!(h.a("web.marathon.mesos.").is_empty());
    assert!(h.srv("_web._tcp.marathon.mesos.").is_empty());
    h.check_batch();
}

#[test]
fn health_aware_publishes_only_healthy_or_unchecked_tasks() {
    let checked = Task {
        health_check: Some(HealthCheck::new(HealthCheckKind::Tcp { port: 31000 })),
        ..task("fw", "web.1", "web", "run-S0", TaskState::Running, &[31000], &["198.18.0.5"])
    };
    let mut h = cluster(DnsConfig::default());
    h.task(checked.clone());
    assert!(h.a("web.marathon.mesos.").is_empty(), "no verdict yet: not ready");
    h.task(Task { healthy: Some(true), ..checked.clone() });
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.18.0.5"]));
    h.task(Task { healthy: Some(false), ..checked.clone() });
    assert!(h.a("web.marathon.mesos.").is_empty(), "unhealthy: gone at once");
    h.check_batch();

    // As Mesos-DNS: every RUNNING task, healthy or not.
    let mut h = cluster(DnsConfig { health_aware: false, ..DnsConfig::default() });
    h.task(Task { healthy: Some(false), ..checked });
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.18.0.5"]));
}

#[test]
fn tasks_sharing_a_name_share_it_until_the_last_one_goes() {
    let mut h = cluster(DnsConfig::default());
    h.event(EventKind::AgentAdded { agent: agent("run-S1", "198.19.255.11") });
    let one = task("fw", "web.1", "web", "run-S0", TaskState::Running, &[31000], &["198.18.0.5"]);
    let two = task("fw", "web.2", "web", "run-S1", TaskState::Running, &[31000], &["198.18.1.5"]);
    h.task(one.clone());
    h.task(two.clone());
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.18.0.5", "198.18.1.5"]));
    assert_eq!(h.a("web.marathon.slave.mesos."), set(&["198.19.255.10", "198.19.255.11"]));
    assert_eq!(h.srv("_web._tcp.marathon.mesos.").len(), 2);
    h.task(Task { state: TaskState::Finished, ..one });
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.18.1.5"]));
    h.check_batch();

    // Host networking on one agent: both tasks produce the very same records; they stay until
    // both are gone.
    let three = task("fw", "web.3", "web", "run-S1", TaskState::Running, &[], &[]);
    h.task(three.clone());
    h.task(Task { ip_addresses: vec![], ..two.clone() });
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.19.255.11"]));
    h.task(Task { state: TaskState::Killed, ..three });
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.19.255.11"]), "web.2 still produces it");
    h.task(Task { state: TaskState::Killed, ..two });
    assert!(h.a("web.marathon.mesos.").is_empty());
    assert!(!h.projection.records().names().any(|n| n.as_str().contains("web")));
    h.check_batch();
}

#[test]
fn an_agent_address_change_moves_its_names_and_its_tasks() {
    let mut h = cluster(DnsConfig::default());
    h.task(task("fw", "web.1", "web", "run-S0", TaskState::Running, &[31000], &[]));
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.19.255.10"]), "host networking: the agent's IP");
    let changes = h.event(EventKind::AgentUpdated { agent: agent("run-S0", "198.19.255.20") });
    assert!(!changes.is_empty());
    assert_eq!(h.a("slave.mesos."), set(&["198.19.255.20"]));
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.19.255.20"]));
    assert_eq!(h.a("web.marathon.slave.mesos."), set(&["198.19.255.20"]));
    h.check_batch();

    // Resources in use change all the time; that is no change for DNS.
    let mut busy = agent("run-S0", "198.19.255.20");
    busy.used = Resources::new().with_scalar("cpus", 1.0);
    assert!(h.event(EventKind::AgentUpdated { agent: busy.clone() }).is_empty());

    // An unreachable agent leaves the cluster, with its tasks' names.
    h.event(EventKind::AgentUpdated { agent: Agent { state: AgentState::Unreachable, ..busy.clone() } });
    assert!(h.a("slave.mesos.").is_empty());
    assert!(h.a("web.marathon.mesos.").is_empty());
    h.event(EventKind::AgentUpdated { agent: busy });
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.19.255.20"]));
    h.event(EventKind::AgentRemoved { agent_id: AgentId::new("run-S0") });
    assert!(h.a("web.marathon.mesos.").is_empty());
    h.check_batch();
}

#[test]
fn framework_names_discovery_ports_and_hosted_frameworks() {
    let mut h = cluster(DnsConfig::default());
    let mut discovered = task("fw", "api.1", "api-task", "run-S0", TaskState::Running, &[31005], &["198.18.0.7"]);
    discovered.discovery = Some(DiscoveryInfo {
        visibility: "FRAMEWORK".into(),
        name: "api".into(),
        ports: vec![
            DiscoveryPort { number: 8080, name: "http".into(), protocol: "tcp".into(), labels: Labels::default() },
            DiscoveryPort { number: 53, name: String::new(), protocol: String::new(), labels: Labels::default() },
        ],
        labels: Labels::default(),
    });
    h.task(discovered);
    let hash = atoll_dns::projection::hash::task_id_hash("api.1");
    let target = |suffix: &str| format!("api-{hash}-s0.marathon.{suffix}");
    assert_eq!(h.a("api.marathon.mesos."), set(&["198.18.0.7"]), "the discovery name wins");
    assert!(h.a("api-task.marathon.mesos.").is_empty());
    assert_eq!(h.srv("_http._api._tcp.marathon.mesos."), set(&[&target("mesos.:8080")]));
    assert_eq!(h.srv("_api._tcp.marathon.mesos."), set(&[&target("mesos.:8080"), &target("mesos.:53")]));
    assert_eq!(h.srv("_api._udp.marathon.mesos."), set(&[&target("mesos.:53")]), "no protocol: tcp and udp");
    assert_eq!(h.srv("_api._tcp.marathon.slave.mesos."), set(&[&target("slave.mesos.:31005")]));

    // The framework's name is sanitised; renaming it renames its tasks.
    h.event(EventKind::FrameworkUpdated { framework: framework("fw", "My Services-1.0") });
    assert_eq!(h.a("api.myservices-1.0.mesos."), set(&["198.18.0.7"]));
    assert!(h.a("api.marathon.mesos.").is_empty());
    // Removed: its tasks' names go with it (they come back with it).
    h.event(EventKind::FrameworkRemoved { framework_id: FrameworkId::new("fw") });
    assert!(h.a("api.myservices-1.0.mesos.").is_empty());
    h.event(EventKind::FrameworkAdded { framework: framework("fw", "marathon") });
    assert_eq!(h.a("api.marathon.mesos."), set(&["198.18.0.7"]));
    h.check_batch();

    // A framework hosted by the master lives where the leader is.
    let services = Framework { hosted: true, ..framework("svc", "services") };
    h.event(EventKind::FrameworkAdded { framework: services });
    assert_eq!(h.a("services.mesos."), set(&["198.19.255.1"]));
    assert_eq!(h.srv("_framework._tcp.services.mesos."), set(&["services.mesos.:5050"]));
    h.set_masters(Masters {
        leader: Some("198.19.255.2:5050".parse().unwrap()),
        masters: vec!["198.19.255.1:5050".parse().unwrap(), "198.19.255.2:5050".parse().unwrap()],
    });
    assert_eq!(h.a("services.mesos."), set(&["198.19.255.2"]));
    assert_eq!(h.a("leader.mesos."), set(&["198.19.255.2"]));
    assert_eq!(h.a("master.mesos."), set(&["198.19.255.1", "198.19.255.2"]));
    assert_eq!(h.a("master1.mesos."), set(&["198.19.255.2"]));
    h.check_batch();

    let enumerate = h.projection.enumerate();
    let frameworks = enumerate["frameworks"].as_array().unwrap();
    assert_eq!(frameworks.len(), 2);
    let marathon = frameworks.iter().find(|f| f["name"] == "marathon").unwrap();
    assert_eq!(marathon["tasks"][0]["id"], "api.1");
    assert_eq!(marathon["tasks"][0]["name"], "api-task");
    assert!(
        marathon["tasks"][0]["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &serde_json::json!({"name": "api.marathon.mesos.", "host": "198.18.0.7", "rtype": "A"}))
    );
}

#[test]
fn the_server_name_and_the_snapshot_serial() {
    let config = DnsConfig { dns_ips: vec![ip("127.0.0.1"), ip("::1")], ..DnsConfig::default() };
    let mut h = Harness::new(config);
    let mut state = ClusterState { index: 42, ..ClusterState::default() };
    state.agents.push(agent("a", "198.19.255.10"));
    state.frameworks.push(framework("fw", "marathon"));
    state.tasks.push(task("fw", "t", "web", "a", TaskState::Running, &[], &[]));
    let changes = h.projection.reset(&state);
    h.serve(changes);
    h.state = state;
    h.index = 42;
    assert_eq!(h.projection.serial(), 42);
    assert_eq!(h.a("ns1.mesos."), set(&["127.0.0.1"]));
    assert_eq!(h.values("ns1.mesos.", RecordType::Aaaa), set(&["::1"]));
    assert_eq!(h.projection.ns_name(), Name::new("ns1.mesos"));
    assert_eq!(h.projection.zones(), vec![Name::new("mesos"), Name::new("l4lb.thisdcos.directory")]);
    assert_eq!(h.a("web.marathon.mesos."), set(&["198.19.255.10"]));
    // A later snapshot replaces everything; only the difference is handed out.
    let mut later = h.state.clone();
    later.index = 50;
    later.tasks.clear();
    let changes = h.projection.reset(&later);
    assert!(changes.iter().all(|c| matches!(c, Change::Remove(r) if r.name.as_str().contains("web"))));
    h.serve(changes);
    assert_eq!(h.projection.serial(), 50);
    let changes = h.projection.set_dns_ips(vec![ip("198.19.255.53")]);
    h.serve(changes);
    assert_eq!(h.a("ns1.mesos."), set(&["198.19.255.53"]));
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Op {
    Event(Box<EventKind>),
    Masters(Masters),
}

const IPS: [&str; 4] = ["198.18.0.1", "198.18.0.2", "198.18.1.1", "fd00::1"];

fn agent_strategy() -> impl Strategy<Value = Agent> {
    (
        0..3usize,
        0..IPS.len(),
        prop_oneof![Just(AgentState::Active), Just(AgentState::Unreachable), Just(AgentState::Recovered)],
        0..2u32,
    )
        .prop_map(|(n, address, state, used)| {
            let mut agent = agent(&format!("run-S{n}"), IPS[address]);
            agent.state = state;
            agent.used = Resources::new().with_scalar("cpus", f64::from(used));
            agent
        })
}

fn framework_strategy() -> impl Strategy<Value = Framework> {
    (0..2usize, prop::sample::select(vec!["marathon", "Marathon", "chronos 2.0", "svc"]), any::<bool>())
        .prop_map(|(n, name, hosted)| Framework { hosted, ..framework(&format!("fw{n}"), name) })
}

fn task_strategy() -> impl Strategy<Value = Task> {
    let state = prop::sample::select(vec![
        TaskState::Staging,
        TaskState::Running,
        TaskState::Running,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
    ]);
    let discovery = prop::option::of((prop::sample::select(vec!["web", "api"]), any::<bool>()));
    (
        (0..2usize, 0..5usize, prop::sample::select(vec!["web", "web", "db", "Web_1"]), 0..4usize, state),
        (any::<bool>(), prop::option::of(any::<bool>()), prop::sample::subsequence(IPS.to_vec(), 0..3)),
        (prop::sample::subsequence(vec![31000u64, 31001], 0..3), discovery),
    )
        .prop_map(|((fw, n, name, agent, state), (checked, healthy, ips), (ports, discovery))| {
            let mut task =
                task(&format!("fw{fw}"), &format!("t{n}"), name, &format!("run-S{agent}"), state, &ports, &ips);
            task.health_check = checked.then(|| HealthCheck::new(HealthCheckKind::Tcp { port: 31000 }));
            task.healthy = healthy;
            task.discovery = discovery.map(|(name, named_port)| DiscoveryInfo {
                visibility: "FRAMEWORK".into(),
                name: name.into(),
                ports: vec![DiscoveryPort {
                    number: 80,
                    name: if named_port { "http".into() } else { String::new() },
                    protocol: String::new(),
                    labels: Labels::default(),
                }],
                labels: Labels::default(),
            });
            task
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let event = |kind: EventKind| Op::Event(Box::new(kind));
    let leader = prop::option::of(prop::sample::select(vec!["198.19.255.1:5050", "198.19.255.2:5050"]));
    let masters = leader.prop_map(|leader| {
        Op::Masters(Masters {
            leader: leader.map(|l| l.parse().unwrap()),
            masters: vec!["198.19.255.1:5050".parse().unwrap()],
        })
    });
    prop_oneof![
        2 => agent_strategy().prop_map(move |agent| event(EventKind::AgentUpdated { agent })),
        1 => (0..3usize).prop_map(move |n| event(EventKind::AgentRemoved { agent_id: AgentId(format!("run-S{n}")) })),
        2 => framework_strategy().prop_map(move |framework| event(EventKind::FrameworkUpdated { framework })),
        1 => (0..2usize).prop_map(move |n| {
            event(EventKind::FrameworkRemoved { framework_id: FrameworkId(format!("fw{n}")) })
        }),
        6 => task_strategy().prop_map(move |task| event(EventKind::TaskUpdated { task })),
        1 => masters,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the history: the changes handed out rebuild the records exactly (each one
    /// effective, none twice in a call), and the result equals a fresh projection of the final
    /// state.
    #[test]
    fn incremental_equals_batch(ops in prop::collection::vec(op_strategy(), 1..40), health_aware in any::<bool>()) {
        let mut h = Harness::new(DnsConfig { health_aware, dns_ips: vec![ip("127.0.0.1")], ..DnsConfig::default() });
        for op in ops {
            match op {
                Op::Event(kind) => { h.event(*kind); }
                Op::Masters(masters) => { h.set_masters(masters); }
            }
        }
        h.check_batch();
    }
}

#[test]
fn named_vips_resolve_in_their_zone_and_go_when_released() {
    let mut h = Harness::new(DnsConfig::default());
    let vip = atoll_proto::model::VipAssignment {
        framework: "marathon".into(),
        name: "shop/web".into(),
        address: "198.19.0.7".parse().unwrap(),
    };
    h.event(EventKind::VipAssigned { vip: vip.clone() });
    assert_eq!(h.a("shopweb.marathon.l4lb.thisdcos.directory."), set(&["198.19.0.7"]));
    assert_eq!(h.a("shopweb.l4lb.thisdcos.directory."), set(&["198.19.0.7"]));
    // A snapshot carries them too.
    let changes = h.projection.reset(&h.state.clone());
    assert!(changes.is_empty(), "nothing changed: {changes:?}");
    h.event(EventKind::VipReleased { vip });
    assert!(h.a("shopweb.marathon.l4lb.thisdcos.directory.").is_empty());
}
