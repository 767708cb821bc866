//! Atoll's cluster state in the JSON shapes of Apache Mesos's read-only master endpoints
//! (`/master/state`, `/master/state-summary`, `/master/frameworks`, `/master/slaves`,
//! `/master/tasks`, `/metrics/snapshot`, `/version`), so that tools written against a Mesos
//! master (Mesos-DNS, dashboards, scripts) read an Atoll master unchanged.
//!
//! Pure: a [`ClusterState`] and the master's [`MasterIdentity`] in, a `serde_json::Value` out;
//! no I/O and no clock (the time is an argument where one is needed). The shapes follow Mesos
//! 1.11's `master/readonly_handler.cpp` and `common/http.cpp` field for field, including their
//! quirks: resources always carry `cpus`, `gpus`, `mem` and `disk`, ranges are strings like
//! `[31000-31009, 31020-31029]`, task labels are a list of `{key, value}` while discovery labels
//! are `{"labels": [...]}` (the protobuf form), and a task on the host network reports the
//! agent's address in `container_status.network_infos`, as a Mesos agent fills it in.
//!
//! Where Atoll keeps less than Mesos, the output says less rather than invent: a task carries
//! only its latest status (Atoll does not keep the history), offers are not listed (they live
//! in the allocator, not in the cluster state), and the terminal-state task counters of
//! `/metrics/snapshot` count the completed tasks the master still retains.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use atoll_proto::model::{
    Agent, AgentState, AttributeValue, ClusterState, Framework, HealthCheck, HealthCheckKind, Labels, Ranges,
    ResourceValue, Resources, Source, Task, TaskState, Time,
};
use serde_json::{Map, Value, json};

/// The Mesos release whose HTTP API Atoll speaks; what Mesos clients read as the master's
/// `version` (some refuse masters older than they need).
pub const MESOS_VERSION: &str = "1.11.0";

/// How many tasks `/master/tasks` returns without a `limit` (Mesos's `TASK_LIMIT`).
pub const TASK_LIMIT: usize = 100;

/// Capabilities of an Atoll master, by their Mesos names (`MasterInfo.Capability`).
const MASTER_CAPABILITIES: [&str; 1] = ["AGENT_DRAINING"];

/// Capabilities of an Atoll agent, by their Mesos names (`SlaveInfo.Capability`): hierarchical
/// roles are how Atoll's DRF allocator reads role names, and agents can be drained.
const AGENT_CAPABILITIES: [&str; 3] = ["MULTI_ROLE", "HIERARCHICAL_ROLE", "AGENT_DRAINING"];

/// Who the master is, for the fields of the state that describe it (`id`, `pid`, `leader`,
/// `leader_info`, `start_time`, `flags`). Atoll runs one master, which always leads.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterIdentity {
    /// Mesos's master id: new at every start of the master process.
    pub id: String,
    /// Where the master is reached (its HTTP and gRPC port), never the wildcard address.
    pub address: SocketAddr,
    /// The master's host name; the IP itself unless told otherwise (Mesos with
    /// `--hostname_lookup=false`), so `/master/redirect` never depends on a name lookup.
    pub hostname: String,
    pub start_time: Time,
    /// When it became the leader; with one master, when it started.
    pub elected_time: Time,
    /// The master's settings under Mesos flag names, as strings (Mesos's `flags`).
    pub flags: BTreeMap<String, String>,
}

impl MasterIdentity {
    /// A master reached at `address`, started at `start_time`, leading since then.
    pub fn new(id: impl Into<String>, address: SocketAddr, start_time: Time) -> MasterIdentity {
        MasterIdentity {
            id: id.into(),
            address,
            hostname: address.ip().to_string(),
            start_time,
            elected_time: start_time,
            flags: BTreeMap::new(),
        }
    }

    /// The master's libprocess PID, `master@IP:PORT` (`master@[IPv6]:PORT`).
    pub fn pid(&self) -> String {
        format!("master@{}", self.address)
    }

    /// Mesos's `MasterInfo` as the state's `leader_info` shows it, with the `address` newer
    /// clients read.
    pub fn master_info(&self) -> Value {
        let ip = self.address.ip().to_string();
        // Mesos's `ip` is the IPv4 address as it sits in memory (network order) read as a
        // number on a little-endian host: 127.0.0.1 is 16777343. An IPv6 master has none.
        let packed_ip = match self.address.ip() {
            std::net::IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
            std::net::IpAddr::V6(_) => 0,
        };
        json!({
            "id": self.id,
            "ip": packed_ip,
            "pid": self.pid(),
            "port": self.address.port(),
            "hostname": self.hostname,
            "address": {"hostname": self.hostname, "ip": ip, "port": self.address.port()},
            "version": MESOS_VERSION,
            "capabilities": MASTER_CAPABILITIES.iter().map(|c| json!({"type": c})).collect::<Vec<_>>(),
        })
    }

    /// Where `/master/redirect` sends a client: the leader's protocol-relative base URL
    /// (`//HOST:PORT`), as Mesos builds it. Atoll's one master leads, so this is itself.
    pub fn redirect_location(&self) -> String {
        if self.hostname.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("//[{}]:{}", self.hostname, self.address.port())
        } else {
            format!("//{}:{}", self.hostname, self.address.port())
        }
    }
}

/// What Mesos reports about its build. Atoll has no build script, so the time comes from the
/// reproducible-builds convention `SOURCE_DATE_EPOCH` at compile time (0 without it), and a
/// `git_sha` only when `ATOLL_GIT_SHA` was set at compile time (Mesos omits it when unknown).
#[derive(Clone, Debug, PartialEq)]
pub struct BuildInfo {
    pub date: String,
    pub time: u64,
    pub user: String,
    pub git_sha: Option<String>,
}

/// This binary's [`BuildInfo`].
pub fn build_info() -> BuildInfo {
    let time = option_env!("SOURCE_DATE_EPOCH").and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    BuildInfo {
        date: format_utc(time),
        time,
        user: String::new(),
        git_sha: option_env!("ATOLL_GIT_SHA").filter(|s| !s.is_empty()).map(str::to_owned),
    }
}

/// Mesos's `/version` body: `version`, `build_date`, `build_time`, `build_user` and, when
/// known, `git_sha`.
pub fn version_json() -> Value {
    let build = build_info();
    let mut body = json!({
        "version": MESOS_VERSION,
        "build_date": build.date,
        "build_time": build.time,
        "build_user": build.user,
    });
    if let Some(sha) = build.git_sha {
        body["git_sha"] = json!(sha);
    }
    body
}

/// `seconds` since the epoch as Mesos writes `build_date`: `2016-02-15 10:00:28` (UTC).
fn format_utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// A range set as Mesos stringifies `Value::Ranges`: `[31000-31009, 31020-31029]`.
pub fn ranges_string(ranges: &Ranges) -> String {
    let parts: Vec<String> = ranges.pairs().iter().map(|(b, e)| format!("{b}-{e}")).collect();
    format!("[{}]", parts.join(", "))
}

/// A resource vector as Mesos's endpoints write one: `cpus`, `gpus`, `mem` and `disk` always
/// (zero when absent), other scalars as numbers, ranges as strings.
pub fn resources_json(resources: &Resources) -> Value {
    let mut out = Map::new();
    for name in ["cpus", "gpus", "mem", "disk"] {
        out.insert(name.into(), json!(0.0));
    }
    for (name, value) in resources.iter() {
        let value = match value {
            ResourceValue::Scalar(s) => json!(s.as_f64()),
            ResourceValue::Ranges(r) => json!(ranges_string(r)),
        };
        out.insert(name.into(), value);
    }
    Value::Object(out)
}

/// Resources as the list of Mesos `Resource` messages the `*_full` fields of `/master/slaves`
/// carry (all unreserved: Atoll has no reservations).
fn resources_full(resources: &Resources) -> Value {
    let list: Vec<Value> = resources
        .iter()
        .map(|(name, value)| match value {
            ResourceValue::Scalar(s) => {
                json!({"name": name, "type": "SCALAR", "scalar": {"value": s.as_f64()}, "role": "*"})
            }
            ResourceValue::Ranges(r) => {
                let range: Vec<Value> = r.pairs().iter().map(|(b, e)| json!({"begin": b, "end": e})).collect();
                json!({"name": name, "type": "RANGES", "ranges": {"range": range}, "role": "*"})
            }
        })
        .collect();
    Value::Array(list)
}

/// Labels as Mesos writes a task's: `[{"key": …, "value": …}]`.
fn labels_list(labels: &Labels) -> Value {
    Value::Array(labels.0.iter().map(|(k, v)| json!({"key": k, "value": v})).collect())
}

/// Labels as the protobuf JSON of a `Labels` message: `{"labels": [{key, value}]}`.
fn labels_message(labels: &Labels) -> Value {
    json!({ "labels": labels_list(labels) })
}

fn attributes_json(agent: &Agent) -> Value {
    let mut out = Map::new();
    for (name, value) in &agent.attributes.0 {
        let value = match value {
            AttributeValue::Scalar(v) => json!(v),
            AttributeValue::Ranges(pairs) => json!(ranges_string(&Ranges::from_pairs(pairs.iter().copied()))),
            AttributeValue::Text(t) => json!(t),
        };
        out.insert(name.clone(), value);
    }
    Value::Object(out)
}

/// The host an agent is reached at: its IP, or its host name when it listens on the wildcard
/// address (the name may itself be an address).
fn agent_host(agent: &Agent) -> String {
    let ip = agent.address.ip().to_canonical();
    if ip.is_unspecified() { agent.hostname.clone() } else { ip.to_string() }
}

/// The agent's libprocess PID as Mesos shows it: `slave(1)@IP:PORT`.
pub fn agent_pid(agent: &Agent) -> String {
    let host = agent_host(agent);
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("slave(1)@[{host}]:{}", agent.address.port())
    } else {
        format!("slave(1)@{host}:{}", agent.address.port())
    }
}

/// The agent's own address, when it has one (not the wildcard, or a host name that is an IP).
fn agent_ip(agent: &Agent) -> Option<IpAddr> {
    agent_host(agent).parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Registered with the master: Mesos lists these in `slaves`. Recovered agents (known from the
/// registry, not yet back) are `recovered_slaves`; unreachable ones are only counted; gone ones
/// are not shown.
fn is_registered(agent: &Agent) -> bool {
    matches!(agent.state, AgentState::Active | AgentState::Draining | AgentState::Drained | AgentState::Deactivated)
}

/// Mesos's `active`: registered, connected and not deactivated (a drained or draining agent is
/// deactivated in Mesos too).
fn agent_active(agent: &Agent) -> bool {
    agent.state == AgentState::Active && !agent.drain
}

/// Which list of its framework a task is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskList {
    Live,
    Unreachable,
    Completed,
}

fn task_list(task: &Task) -> TaskList {
    if task.state.is_terminal() {
        TaskList::Completed
    } else if task.state == TaskState::Unreachable {
        TaskList::Unreachable
    } else {
        TaskList::Live
    }
}

/// A framework with its tasks: a registered one, or a completed one (removed, its tasks still
/// retained by the master; only its id is known then).
struct FrameworkView<'a> {
    id: &'a str,
    framework: Option<&'a Framework>,
    tasks: Vec<&'a Task>,
}

impl FrameworkView<'_> {
    fn role(&self) -> &str {
        self.framework.map_or("*", |f| f.info.role.as_str())
    }

    fn tasks_in(&self, list: TaskList) -> impl Iterator<Item = &&Task> {
        self.tasks.iter().filter(move |t| task_list(t) == list)
    }

    /// What its live tasks hold (Mesos's `totalUsedResources`).
    fn used(&self) -> Resources {
        let mut used = Resources::new();
        for task in self.tasks_in(TaskList::Live) {
            used.add(&task.resources);
        }
        used
    }
}

/// The state, indexed the way every endpoint needs it.
struct View<'a> {
    state: &'a ClusterState,
    master: &'a MasterIdentity,
    agents: HashMap<&'a str, &'a Agent>,
    registered: Vec<FrameworkView<'a>>,
    completed: Vec<FrameworkView<'a>>,
}

impl<'a> View<'a> {
    fn new(state: &'a ClusterState, master: &'a MasterIdentity) -> View<'a> {
        let agents = state.agents.iter().map(|a| (a.id.as_str(), a)).collect();
        let mut by_framework: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
        for task in &state.tasks {
            by_framework.entry(task.framework_id.as_str()).or_default().push(task);
        }
        let mut registered = Vec::new();
        for framework in &state.frameworks {
            let tasks = by_framework.remove(framework.id.as_str()).unwrap_or_default();
            registered.push(FrameworkView { id: framework.id.as_str(), framework: Some(framework), tasks });
        }
        let completed =
            by_framework.into_iter().map(|(id, tasks)| FrameworkView { id, framework: None, tasks }).collect();
        View { state, master, agents, registered, completed }
    }

    fn agent(&self, id: &str) -> Option<&'a Agent> {
        self.agents.get(id).copied()
    }

    /// Mesos's `SlaveWriter`: one registered agent.
    fn slave(&self, agent: &Agent) -> Value {
        let mut out = json!({
            "id": agent.id.as_str(),
            "hostname": agent.hostname,
            "port": agent.address.port(),
            "attributes": attributes_json(agent),
            "pid": agent_pid(agent),
            "registered_time": agent.registered_at.as_secs_f64(),
            "resources": resources_json(&agent.resources),
            "used_resources": resources_json(&agent.used),
            "offered_resources": resources_json(&Resources::new()),
            "reserved_resources": {},
            "unreserved_resources": resources_json(&agent.resources),
            "active": agent_active(agent),
            "deactivated": !agent_active(agent),
            "version": agent.version,
            "capabilities": AGENT_CAPABILITIES,
        });
        if matches!(agent.state, AgentState::Draining | AgentState::Drained) {
            out["drain_info"] = crate::mesos_operator::drain_info(agent);
        }
        out
    }

    /// Mesos's `SlaveInfo` JSON, for `recovered_slaves`.
    fn slave_info(&self, agent: &Agent) -> Value {
        json!({
            "id": agent.id.as_str(),
            "hostname": agent.hostname,
            "port": agent.address.port(),
            "attributes": attributes_json(agent),
        })
    }

    fn registered_agents(&self) -> impl Iterator<Item = &'a Agent> + use<'a> {
        self.state.agents.iter().filter(|a| is_registered(a))
    }

    fn recovered_agents(&self) -> impl Iterator<Item = &'a Agent> + use<'a> {
        self.state.agents.iter().filter(|a| a.state == AgentState::Recovered)
    }

    /// Mesos's `Summary<Framework>`.
    fn framework_summary(&self, view: &FrameworkView<'_>) -> Value {
        let info = view.framework.map(|f| &f.info);
        let hosted = view.framework.is_some_and(|f| f.hosted);
        let connected = view.framework.is_some_and(|f| f.connected);
        let hostname = match info {
            Some(info) if info.hostname.is_empty() && hosted => self.master.hostname.clone(),
            Some(info) => info.hostname.clone(),
            None => String::new(),
        };
        let capabilities: Vec<Value> = info
            .map(|i| i.capabilities.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
            .unwrap_or_default();
        let mut out = json!({
            "id": view.id,
            "name": info.map_or("", |i| i.name.as_str()),
            "used_resources": resources_json(&view.used()),
            "offered_resources": resources_json(&Resources::new()),
            "capabilities": capabilities,
            "hostname": hostname,
            "webui_url": info.map_or("", |i| i.webui_url.as_str()),
            "active": connected,
            "connected": connected,
            "recovered": false,
        });
        // Mesos omits the PID of HTTP frameworks; a hosted framework runs inside the master, so
        // its scheduler is at the master's address (Mesos-DNS's `<framework>.mesos` then names
        // the leader, as Atoll's own DNS does for hosted frameworks).
        if hosted {
            out["pid"] = json!(format!("scheduler-{}@{}", view.id, self.master.address));
        }
        out
    }

    /// Mesos's `FullFrameworkWriter`.
    fn framework_full(&self, view: &FrameworkView<'_>) -> Value {
        let mut out = self.framework_summary(view);
        let info = view.framework.map(|f| &f.info);
        let role = view.role().to_owned();
        let fields = [
            ("user", json!(info.map_or("", |i| i.user.as_str()))),
            ("failover_timeout", json!(info.map_or(0.0, |i| i.failover_timeout_secs))),
            // Atoll's agents always keep their tasks across restarts (Mesos's checkpointing).
            ("checkpoint", json!(true)),
            ("registered_time", json!(view.framework.map_or(0.0, |f| f.registered_at.as_secs_f64()))),
            ("unregistered_time", json!(0.0)),
            ("resources", resources_json(&view.used())),
            ("role", json!(role)),
            // Mesos writes `roles` for multi-role frameworks only; both keep tools simple.
            ("roles", json!([role])),
            ("tasks", self.task_list(view, TaskList::Live)),
            ("unreachable_tasks", self.task_list(view, TaskList::Unreachable)),
            ("completed_tasks", self.task_list(view, TaskList::Completed)),
            ("offers", json!([])),
            ("executors", json!([])),
            ("offer_constraints", json!({})),
        ];
        for (key, value) in fields {
            out[key] = value;
        }
        if let Some(info) = info {
            if !info.principal.is_empty() {
                out["principal"] = json!(info.principal);
            }
            if !info.labels.is_empty() {
                out["labels"] = labels_list(&info.labels);
            }
        }
        out
    }

    fn task_list(&self, view: &FrameworkView<'_>, list: TaskList) -> Value {
        Value::Array(view.tasks_in(list).map(|t| self.task(t, view.role())).collect())
    }

    /// Mesos's `json(Task)`.
    fn task(&self, task: &Task, role: &str) -> Value {
        let agent = self.agent(task.agent_id.as_str());
        let mut out = json!({
            "id": task.id.as_str(),
            "name": task.name,
            "framework_id": task.framework_id.as_str(),
            "executor_id": "",
            "slave_id": task.agent_id.as_str(),
            "state": task.state.name(),
            "resources": resources_json(&task.resources),
            "role": role,
            "statuses": [status_json(task, agent)],
        });
        if let Some(user) = &task.command.user {
            out["user"] = json!(user);
        }
        if !task.labels.is_empty() {
            out["labels"] = labels_list(&task.labels);
        }
        if let Some(discovery) = &task.discovery {
            let ports: Vec<Value> = discovery
                .ports
                .iter()
                .map(|p| {
                    let mut port = json!({"number": p.number});
                    if !p.name.is_empty() {
                        port["name"] = json!(p.name);
                    }
                    if !p.protocol.is_empty() {
                        port["protocol"] = json!(p.protocol);
                    }
                    if !p.labels.is_empty() {
                        port["labels"] = labels_message(&p.labels);
                    }
                    port
                })
                .collect();
            let mut value = json!({"visibility": discovery.visibility, "ports": {"ports": ports}});
            if !discovery.name.is_empty() {
                value["name"] = json!(discovery.name);
            }
            if !discovery.labels.is_empty() {
                value["labels"] = labels_message(&discovery.labels);
            }
            out["discovery"] = value;
        }
        if !task.networks.is_empty() {
            let networks: Vec<Value> = task
                .networks
                .iter()
                .map(|n| {
                    let mut network = json!({"name": n.name});
                    if let Some(ip) = n.ip {
                        network["ip_addresses"] = json!([ip_address_json(ip)]);
                    }
                    if !n.port_mappings.is_empty() {
                        network["port_mappings"] = port_mappings_json(n);
                    }
                    network
                })
                .collect();
            out["container"] = json!({"type": "MESOS", "network_infos": networks});
        }
        if let Some(check) = &task.health_check {
            out["health_check"] = health_check_json(check);
        }
        out
    }

    fn frameworks_matching(&self, wanted: Option<&str>) -> (Vec<Value>, Vec<Value>) {
        let keep = |v: &&FrameworkView<'_>| wanted.is_none_or(|id| v.id == id);
        let registered = self.registered.iter().filter(keep).map(|v| self.framework_full(v)).collect();
        let completed = self.completed.iter().filter(keep).map(|v| self.framework_full(v)).collect();
        (registered, completed)
    }
}

/// `{"protocol": "IPv4", "ip_address": "…"}`, a `NetworkInfo.IPAddress`.
fn ip_address_json(ip: IpAddr) -> Value {
    let protocol = if ip.to_canonical().is_ipv4() { "IPv4" } else { "IPv6" };
    json!({"protocol": protocol, "ip_address": ip.to_canonical().to_string()})
}

fn port_mappings_json(network: &atoll_proto::model::NetworkRequest) -> Value {
    network
        .port_mappings
        .iter()
        .map(|m| json!({"host_port": m.host_port, "container_port": m.container_port, "protocol": m.protocol}))
        .collect()
}

/// The task's `network_infos` as its agent reports them: one per container network with the
/// task's own addresses, or for host networking one carrying the agent's address (a Mesos agent
/// fills that in when the container has no network of its own).
fn network_infos(task: &Task, agent: Option<&Agent>) -> Vec<Value> {
    if task.networks.is_empty() {
        return agent
            .and_then(agent_ip)
            .map(|ip| vec![json!({"ip_addresses": [ip_address_json(ip)]})])
            .unwrap_or_default();
    }
    // Atoll keeps a task's addresses as one list: with one address per network they pair up in
    // order; otherwise they all belong to the first network.
    let per_network = task.ip_addresses.len() == task.networks.len();
    task.networks
        .iter()
        .enumerate()
        .map(|(i, network)| {
            let ips: Vec<Value> = if per_network {
                vec![ip_address_json(task.ip_addresses[i])]
            } else if i == 0 {
                task.ip_addresses.iter().map(|ip| ip_address_json(*ip)).collect()
            } else {
                Vec::new()
            };
            let mut info = json!({"name": network.name});
            if !ips.is_empty() {
                info["ip_addresses"] = Value::Array(ips);
            }
            if !network.port_mappings.is_empty() {
                info["port_mappings"] = port_mappings_json(network);
            }
            info
        })
        .collect()
}

/// Mesos's `json(TaskStatus)` of the task's latest status: `state`, `timestamp` (seconds, a
/// float), `container_status` on statuses from the agent, `healthy` once a check answered.
fn status_json(task: &Task, agent: Option<&Agent>) -> Value {
    let status = &task.status;
    let mut out = json!({"state": status.state.name(), "timestamp": status.timestamp.as_secs_f64()});
    // Master-made statuses (staging, lost, reconciliation) have no container to describe.
    if status.source != Source::Master {
        let infos = network_infos(task, agent);
        if !infos.is_empty() {
            out["container_status"] = json!({"network_infos": infos});
        }
    }
    // The verdict stays on the task when a later update (without one) replaced the status.
    let healthy = status.healthy.or(if status.state == TaskState::Running { task.healthy } else { None });
    if let Some(healthy) = healthy {
        out["healthy"] = json!(healthy);
    }
    out
}

/// The protobuf JSON of a Mesos `HealthCheck`.
fn health_check_json(check: &HealthCheck) -> Value {
    let mut out = match &check.kind {
        HealthCheckKind::Http { port, path } => {
            json!({"type": "HTTP", "http": {"scheme": "http", "port": port, "path": path}})
        }
        HealthCheckKind::Tcp { port } => json!({"type": "TCP", "tcp": {"port": port}}),
        HealthCheckKind::Command { command } => {
            let mut cmd = json!({"shell": command.shell, "value": command.value});
            if !command.shell {
                cmd["arguments"] = json!(command.arguments);
            }
            json!({"type": "COMMAND", "command": cmd})
        }
    };
    out["delay_seconds"] = json!(check.delay_secs);
    out["interval_seconds"] = json!(check.interval_secs);
    out["timeout_seconds"] = json!(check.timeout_secs);
    out["consecutive_failures"] = json!(check.consecutive_failures);
    out["grace_period_seconds"] = json!(check.grace_period_secs);
    out
}

/// `GET /master/state` (and `/state.json`): the whole cluster, as Mesos's `state` handler writes
/// it.
pub fn mesos_state(state: &ClusterState, master: &MasterIdentity) -> Value {
    let view = View::new(state, master);
    let build = build_info();
    let activated = view.registered_agents().filter(|a| agent_active(a)).count();
    let deactivated = view.registered_agents().count() - activated;
    let unreachable = state.agents.iter().filter(|a| a.state == AgentState::Unreachable).count();
    let mut out = json!({
        "version": MESOS_VERSION,
        "build_date": build.date,
        "build_time": build.time,
        "build_user": build.user,
        "start_time": master.start_time.as_secs_f64(),
        "elected_time": master.elected_time.as_secs_f64(),
        "id": master.id,
        "pid": master.pid(),
        "hostname": master.hostname,
        "capabilities": MASTER_CAPABILITIES,
        "activated_slaves": activated,
        "deactivated_slaves": deactivated,
        "unreachable_slaves": unreachable,
        "leader": master.pid(),
        "leader_info": master.master_info(),
        "flags": master.flags,
        "slaves": view.registered_agents().map(|a| view.slave(a)).collect::<Vec<_>>(),
        "recovered_slaves": view.recovered_agents().map(|a| view.slave_info(a)).collect::<Vec<_>>(),
        "frameworks": view.registered.iter().map(|f| view.framework_full(f)).collect::<Vec<_>>(),
        "completed_frameworks": view.completed.iter().map(|f| view.framework_full(f)).collect::<Vec<_>>(),
        // Mesos keeps both for backward compatibility, always empty.
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    });
    if let Some(sha) = build.git_sha {
        out["git_sha"] = json!(sha);
    }
    out
}

/// Task counts by state, as `/master/state-summary` adds them to each agent and framework.
#[derive(Default)]
struct StateCounts(BTreeMap<&'static str, usize>);

impl StateCounts {
    fn count(&mut self, task: &Task) {
        *self.0.entry(task.state.name()).or_default() += 1;
    }

    /// The counters Mesos writes (it leaves out the gone and dropped states).
    fn write(&self, out: &mut Value) {
        for state in [
            TaskState::Staging,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Finished,
            TaskState::Killed,
            TaskState::Failed,
            TaskState::Lost,
            TaskState::Error,
            TaskState::Unreachable,
        ] {
            out[state.name()] = json!(self.0.get(state.name()).copied().unwrap_or(0));
        }
    }
}

/// `GET /master/state-summary`: agents and frameworks without their tasks, with task counts by
/// state and which frameworks run on which agents.
pub fn state_summary(state: &ClusterState, master: &MasterIdentity) -> Value {
    let view = View::new(state, master);
    let mut agent_counts: HashMap<&str, StateCounts> = HashMap::new();
    let mut agent_frameworks: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut frameworks = Vec::new();
    for framework in &view.registered {
        let mut counts = StateCounts::default();
        let mut agents = BTreeSet::new();
        for task in &framework.tasks {
            counts.count(task);
            agent_counts.entry(task.agent_id.as_str()).or_default().count(task);
            agent_frameworks.entry(task.agent_id.as_str()).or_default().insert(framework.id);
            agents.insert(task.agent_id.as_str());
        }
        let mut out = view.framework_summary(framework);
        counts.write(&mut out);
        out["slave_ids"] = json!(agents);
        frameworks.push(out);
    }
    let slaves: Vec<Value> = view
        .registered_agents()
        .map(|agent| {
            let mut out = view.slave(agent);
            match agent_counts.get(agent.id.as_str()) {
                Some(counts) => counts.write(&mut out),
                None => StateCounts::default().write(&mut out),
            }
            out["framework_ids"] = json!(agent_frameworks.get(agent.id.as_str()).cloned().unwrap_or_default());
            out
        })
        .collect();
    json!({"hostname": master.hostname, "slaves": slaves, "frameworks": frameworks})
}

/// `GET /master/frameworks[?framework_id=ID]`.
pub fn frameworks(state: &ClusterState, master: &MasterIdentity, framework_id: Option<&str>) -> Value {
    let view = View::new(state, master);
    let (registered, completed) = view.frameworks_matching(framework_id);
    json!({"frameworks": registered, "completed_frameworks": completed, "unregistered_frameworks": []})
}

/// `GET /master/slaves[?slave_id=ID]`: the agents with their resources also as full `Resource`
/// lists (`*_full`), as Mesos adds them there.
pub fn slaves(state: &ClusterState, master: &MasterIdentity, slave_id: Option<&str>) -> Value {
    let view = View::new(state, master);
    let wanted = |a: &&Agent| slave_id.is_none_or(|id| a.id.as_str() == id);
    let slaves: Vec<Value> = view
        .registered_agents()
        .filter(wanted)
        .map(|agent| {
            let mut out = view.slave(agent);
            out["reserved_resources_full"] = json!({});
            out["unreserved_resources_full"] = resources_full(&agent.resources);
            out["used_resources_full"] = resources_full(&agent.used);
            out["offered_resources_full"] = json!([]);
            out
        })
        .collect();
    let recovered: Vec<Value> = view.recovered_agents().filter(wanted).map(|a| view.slave_info(a)).collect();
    json!({"slaves": slaves, "recovered_slaves": recovered})
}

/// The order of `/master/tasks`, by the timestamp of each task's first listed status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskOrder {
    Ascending,
    Descending,
}

/// The query of `/master/tasks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskQuery {
    pub limit: usize,
    pub offset: usize,
    pub order: TaskOrder,
    pub framework_id: Option<String>,
    pub task_id: Option<String>,
}

impl Default for TaskQuery {
    fn default() -> TaskQuery {
        TaskQuery { limit: TASK_LIMIT, offset: 0, order: TaskOrder::Descending, framework_id: None, task_id: None }
    }
}

impl TaskQuery {
    /// Reads the query parameters as Mesos does: `limit` (default 100), `offset` (default 0),
    /// `order` (`asc`, anything else descending), `framework_id`, `task_id`. A value that is not
    /// a number falls back to the default and unknown parameters are ignored, as in Mesos.
    pub fn from_params(params: &HashMap<String, String>) -> TaskQuery {
        let number = |key: &str| params.get(key).and_then(|v| v.trim().parse::<usize>().ok());
        TaskQuery {
            limit: number("limit").unwrap_or(TASK_LIMIT),
            offset: number("offset").unwrap_or(0),
            order: if params.get("order").map(String::as_str) == Some("asc") {
                TaskOrder::Ascending
            } else {
                TaskOrder::Descending
            },
            framework_id: params.get("framework_id").cloned(),
            task_id: params.get("task_id").cloned(),
        }
    }
}

/// `GET /master/tasks`: the tasks of every framework (live, unreachable and completed), sorted
/// by status timestamp, then `offset` and `limit` applied.
pub fn tasks(state: &ClusterState, master: &MasterIdentity, query: &TaskQuery) -> Value {
    let view = View::new(state, master);
    let mut selected: Vec<(&Task, &str)> = view
        .registered
        .iter()
        .chain(&view.completed)
        .filter(|f| query.framework_id.as_deref().is_none_or(|id| f.id == id))
        .flat_map(|f| f.tasks.iter().map(move |t| (*t, f.role())))
        .filter(|(t, _)| query.task_id.as_deref().is_none_or(|id| t.id.as_str() == id))
        .collect();
    // Stable, so tasks updated at the same moment keep the state's order.
    match query.order {
        TaskOrder::Ascending => selected.sort_by_key(|(t, _)| t.status.timestamp),
        TaskOrder::Descending => selected.sort_by_key(|(t, _)| std::cmp::Reverse(t.status.timestamp)),
    }
    let tasks: Vec<Value> =
        selected.into_iter().skip(query.offset).take(query.limit).map(|(t, role)| view.task(t, role)).collect();
    json!({ "tasks": tasks })
}

/// `GET /metrics/snapshot`: the Mesos master metrics the cluster state answers, as one flat
/// object of numbers. `now` gives `master/uptime_secs`.
pub fn metrics_snapshot(state: &ClusterState, master: &MasterIdentity, now: Time) -> Value {
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    let mut set = |name: &str, value: f64| {
        metrics.insert(format!("master/{name}"), value);
    };
    set("elected", 1.0);
    set("uptime_secs", now.saturating_since(master.start_time).as_secs_f64());

    let registered: Vec<&Agent> = state.agents.iter().filter(|a| is_registered(a)).collect();
    let count_agents = |pred: &dyn Fn(&Agent) -> bool| state.agents.iter().filter(|a| pred(a)).count() as f64;
    set("slaves_active", count_agents(&|a| is_registered(a) && agent_active(a)));
    set("slaves_inactive", count_agents(&|a| is_registered(a) && !agent_active(a)));
    set("slaves_connected", registered.len() as f64);
    // Atoll has no "registered but disconnected" agents: a silent agent becomes unreachable.
    set("slaves_disconnected", 0.0);
    set("slaves_unreachable", count_agents(&|a| a.state == AgentState::Unreachable));
    set("slaves_recovered", count_agents(&|a| a.state == AgentState::Recovered));

    let connected = state.frameworks.iter().filter(|f| f.connected).count() as f64;
    let all = state.frameworks.len() as f64;
    set("frameworks_active", connected);
    set("frameworks_inactive", all - connected);
    set("frameworks_connected", connected);
    set("frameworks_disconnected", all - connected);

    let mut by_state: BTreeMap<TaskState, f64> = BTreeMap::new();
    for task in &state.tasks {
        *by_state.entry(task.state).or_default() += 1.0;
    }
    for task_state in TaskState::ALL {
        let name = task_state.name().trim_start_matches("TASK_").to_ascii_lowercase();
        set(&format!("tasks_{name}"), by_state.get(&task_state).copied().unwrap_or(0.0));
    }

    let mut total = Resources::new();
    let mut used = Resources::new();
    for agent in &registered {
        total.add(&agent.resources);
        used.add(&agent.used);
    }
    for resource in ["cpus", "gpus", "mem", "disk"] {
        let total = total.scalar(resource).as_f64();
        let used = used.scalar(resource).as_f64();
        set(&format!("{resource}_total"), total);
        set(&format!("{resource}_used"), used);
        set(&format!("{resource}_percent"), if total > 0.0 { used / total } else { 0.0 });
    }
    json!(metrics)
}

#[cfg(test)]
mod tests;
