//! A Mesos master's operator API v1 `SUBSCRIBE` stream (JSON events: `SUBSCRIBED` with the
//! whole state, then `TASK_ADDED`, `TASK_UPDATED`, `AGENT_ADDED`, …) → Atoll's own
//! [`ClusterState`] and [`Event`]s, so that the same [`super::VipProjection`] serves the VIPs of
//! a Mesos/Marathon cluster — what dcos-l4lb (Minuteman) does in DC/OS. A `GET_STATE` response
//! is accepted in place of `SUBSCRIBED` (it is the same state).
//!
//! Reading follows dcos-net's `dcos_net_mesos_listener`, which extracted what the conformance
//! streams in `shared/compat/dcos-net/` were recorded for:
//!
//! - **VIP labels**: every discovery-port label whose key starts with `VIP` or `vip` (`VIP_0`,
//!   but also the SDK's `VIP_<uuid>`), and the legacy task labels `vip_port<N>=tcp://NAME:PORT`
//!   (or `udp://`), which put a VIP on the N-th host port of the task's `ports` resource. The
//!   converted task carries them as `VIP_<n>` labels, the form [`super::task_port_vips`] reads;
//!   keys that are already `VIP_<digits>` keep their name. A value without a leading slash
//!   (`def:80`) is a named VIP like `/def:80`: DC/OS publishes both as
//!   `def.<framework>.l4lb.thisdcos.directory`.
//! - **Where a backend is**: a discovery port labelled `network-scope=host` is a host port, on
//!   the agent's address; one whose number is the container port of a port mapping (Docker
//!   bridge, Mesos CNI `port_mappings`) is reached through that mapping's host port, on the
//!   agent's address too (a bridge address is not routed between hosts); any other port is on
//!   the task's own address when it is on a container network (overlay: `9.0.x.x`), else on the
//!   agent's (host networking). The converted task is the load balancer's view of that: a task
//!   whose VIP ports are on the agent has no own addresses and its ports are host ports; a task
//!   whose VIP ports are on its own address keeps its addresses and joins a network. A task
//!   with both (rare: a bridge task with a VIP on an unmapped container port) is kept on the
//!   agent, and the ports only its own address serves are left out, with a warning.
//! - **Task addresses** come from `container_status.network_infos[].ip_addresses[]` of its
//!   latest status that has any (a `TASK_KILLING` status often has none, and a draining backend
//!   still needs its address); **health** is the latest verdict (`healthy`) reported; the
//!   **state** of a `TASK_UPDATED` is the event's `state`, not its status's (DCOS_OSS-3539).
//! - **Agent address**: the host of its libprocess PID (`slave(1)@172.17.0.3:5051`) if that is
//!   an IP, else `agent_info.hostname` if that is one, else what the caller's resolver makes of
//!   the host name (this module does no I/O: [`hostnames`] lists what to look up first).
//!
//! The edge proxy reads the same stream for its routes ([`PortView::All`]): there every
//! discovery port of a task counts, in order (Marathon-LB's `HAPROXY_{n}_…` labels name ports by
//! index), each placed as a VIP port would be.
//!
//! Reading is lenient as dcos-net's is: a port or label that makes no sense is skipped, not the
//! whole task; an event the stream cannot be followed without (a task without an id) is an
//! error, and leaves the converter as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use atoll_proto::model::{
    Agent, AgentId, AgentState, Attributes, ClusterState, CommandInfo, DiscoveryInfo, DiscoveryPort, Event, EventKind,
    Framework, FrameworkId, FrameworkInfo, HealthCheck, HealthCheckKind, Labels, NetworkRequest, Resources, Source,
    Task, TaskId, TaskState, TaskStatus, Time,
};
use serde_json::Value;

use super::label::is_vip_label_key;

/// The agent port when neither its info nor its PID names one.
const DEFAULT_AGENT_PORT: u16 = 5051;

/// Why an event could not be used (the converter is then unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MesosEventError {
    #[error("a Mesos event is a JSON object with a `type`; this is {0}")]
    NotAnEvent(&'static str),
    #[error("{event}: `{field}` is missing or empty")]
    Missing { event: String, field: &'static str },
    #[error("{event} arrived before SUBSCRIBED: a stream starts with the state")]
    BeforeSubscribed { event: String },
    #[error("TASK_UPDATED for task {task} of framework {framework}, which the stream never added")]
    UnknownTask { framework: String, task: String },
}

fn missing(event: &str, field: &'static str) -> MesosEventError {
    MesosEventError::Missing { event: event.to_owned(), field }
}

/// What one Mesos event means in Atoll's model.
#[derive(Clone, Debug, PartialEq)]
pub enum Converted {
    /// The whole state (`SUBSCRIBED`, `GET_STATE`): start over from it.
    Snapshot(ClusterState),
    /// Changes, in order; none for `HEARTBEAT`, for a `TASK_UPDATED` of a task already gone,
    /// and for event types this module does not know (newer Mesos versions add some).
    Events(Vec<Event>),
}

/// The agent host names (not IPs) a conversion of `record` would ask its resolver about, so
/// that an I/O shell can look them up first.
pub fn hostnames(record: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut add = |entry: &Value| {
        let info = agent_info(entry);
        let pid_host = upid_host(text(entry, "pid"));
        let hostname = text(info, "hostname");
        if pid_host.as_deref().is_some_and(|h| parse_ip(h).is_some()) || parse_ip(hostname).is_some() {
            return;
        }
        names.extend([Some(hostname.to_owned()), pid_host].into_iter().flatten().filter(|h| !h.is_empty()));
    };
    match text(record, "type") {
        "SUBSCRIBED" | "GET_STATE" => {
            let state = state_of(record);
            let agents = state.and_then(|s| s.get("get_agents"));
            for key in ["agents", "recovered_agents"] {
                agents.into_iter().flat_map(|a| list(a, key)).for_each(&mut add);
            }
        }
        "AGENT_ADDED" => {
            if let Some(agent) = record.get("agent_added").and_then(|a| a.get("agent")) {
                add(agent)
            }
        }
        _ => {}
    }
    names
}

/// Which discovery ports of a task the converted task keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortView {
    /// The ports with VIP labels (and the legacy `vip_port<N>` task labels' host ports): what a
    /// layer-4 load balancer serves.
    #[default]
    Vips,
    /// Every discovery port, in order, VIP labels or not (legacy `vip_port<N>` labels add
    /// none): what the edge indexes its `{n}` labels by. A port the task cannot be reached on
    /// at the address its other ports are (a container port of a bridged task that maps it to
    /// no host port) keeps its place with the number 0, which reaches nothing.
    All,
}

/// Follows a Mesos operator stream, one event at a time; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct MesosConverter {
    ports: PortView,
    /// The index of the last snapshot or event produced (Atoll's events are numbered).
    index: u64,
    subscribed: bool,
    heartbeat_secs: Option<f64>,
    agents: BTreeMap<AgentId, Agent>,
    frameworks: BTreeMap<FrameworkId, Framework>,
    /// Live tasks (terminal ones are forgotten once reported).
    tasks: BTreeMap<(FrameworkId, TaskId), MesosTask>,
    warnings: Vec<String>,
    /// Warnings handed out already: a task converted again at each of its status updates
    /// would repeat them. Forgotten at each snapshot, which bounds it.
    said: BTreeSet<String>,
}

impl MesosConverter {
    /// A converter for a load balancer: tasks keep their VIP ports ([`PortView::Vips`]).
    pub fn new() -> MesosConverter {
        MesosConverter::default()
    }

    /// A converter whose tasks keep the discovery ports `ports` says.
    pub fn with_ports(ports: PortView) -> MesosConverter {
        MesosConverter { ports, ..MesosConverter::default() }
    }

    /// Converts one event. `now` stamps the events made; `resolve` turns the host names of
    /// agents (see [`hostnames`]) into addresses.
    pub fn convert(
        &mut self,
        record: &Value,
        now: Time,
        resolve: &dyn Fn(&str) -> Vec<IpAddr>,
    ) -> Result<Converted, MesosEventError> {
        let Some(kind) = record.get("type").and_then(Value::as_str) else {
            return Err(MesosEventError::NotAnEvent(json_kind(record)));
        };
        if matches!(kind, "SUBSCRIBED" | "GET_STATE") {
            return self.snapshot(record, kind, resolve);
        }
        if !self.subscribed {
            return Err(MesosEventError::BeforeSubscribed { event: kind.to_owned() });
        }
        let body = record.get(kind.to_ascii_lowercase()).unwrap_or(&Value::Null);
        let events = match kind {
            "TASK_ADDED" => {
                let task = MesosTask::parse(body.get("task").unwrap_or(&Value::Null), kind, self.ports)?;
                self.put_task(task, true)
            }
            "TASK_UPDATED" => self.update_task(body, kind)?,
            "AGENT_ADDED" => {
                let agent = parse_agent(body.get("agent").unwrap_or(&Value::Null), resolve)
                    .ok_or_else(|| missing(kind, "agent.agent_info.id"))?;
                let added = !self.agents.contains_key(&agent.id);
                self.agents.insert(agent.id.clone(), agent.clone());
                vec![if added { EventKind::AgentAdded { agent } } else { EventKind::AgentUpdated { agent } }]
            }
            "AGENT_REMOVED" => {
                let id = value_of(body, "agent_id").ok_or_else(|| missing(kind, "agent_id"))?;
                let agent_id = AgentId::new(id);
                match self.agents.remove(&agent_id) {
                    Some(_) => vec![EventKind::AgentRemoved { agent_id }],
                    None => Vec::new(),
                }
            }
            "FRAMEWORK_ADDED" | "FRAMEWORK_UPDATED" => {
                let framework = parse_framework(body.get("framework").unwrap_or(&Value::Null))
                    .ok_or_else(|| missing(kind, "framework.framework_info.id"))?;
                let added = !self.frameworks.contains_key(&framework.id);
                self.frameworks.insert(framework.id.clone(), framework.clone());
                vec![if added {
                    EventKind::FrameworkAdded { framework }
                } else {
                    EventKind::FrameworkUpdated { framework }
                }]
            }
            "FRAMEWORK_REMOVED" => {
                let info = body.get("framework_info").unwrap_or(body);
                let id = value_of(info, "id").ok_or_else(|| missing(kind, "framework_info.id"))?;
                let framework_id = FrameworkId::new(id);
                // Its tasks are reported killed separately; until then they serve only fixed
                // VIPs (a named VIP needs its framework's name), as in DC/OS.
                match self.frameworks.remove(&framework_id) {
                    Some(_) => vec![EventKind::FrameworkRemoved { framework_id }],
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        Ok(Converted::Events(
            events
                .into_iter()
                .map(|kind| {
                    self.index += 1;
                    Event { index: self.index, timestamp: now, kind }
                })
                .collect(),
        ))
    }

    /// The state as converted so far.
    pub fn state(&self) -> ClusterState {
        ClusterState {
            index: self.index,
            agents: self.agents.values().cloned().collect(),
            frameworks: self.frameworks.values().cloned().collect(),
            tasks: self.tasks.values().map(|task| task.to_task(self.ports, &mut Vec::new())).collect(),
            ..ClusterState::default()
        }
    }

    /// Whether a `SUBSCRIBED` (or `GET_STATE`) was converted.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    /// The heartbeat interval the master announced in `SUBSCRIBED`: a stream silent for a few
    /// of these is dead.
    pub fn heartbeat_interval_secs(&self) -> Option<f64> {
        self.heartbeat_secs
    }

    /// What was left out since the last call (each said once, to be logged).
    pub fn take_warnings(&mut self) -> Vec<String> {
        let warnings = std::mem::take(&mut self.warnings);
        warnings.into_iter().filter(|w| self.said.insert(w.clone())).collect()
    }

    fn snapshot(
        &mut self,
        record: &Value,
        kind: &str,
        resolve: &dyn Fn(&str) -> Vec<IpAddr>,
    ) -> Result<Converted, MesosEventError> {
        let state = state_of(record).ok_or_else(|| missing(kind, "get_state"))?;
        let mut agents = BTreeMap::new();
        let get_agents = state.get("get_agents").unwrap_or(&Value::Null);
        for entry in list(get_agents, "agents").chain(list(get_agents, "recovered_agents")) {
            if let Some(agent) = parse_agent(entry, resolve) {
                agents.entry(agent.id.clone()).or_insert(agent);
            }
        }
        let mut frameworks = BTreeMap::new();
        let get_frameworks = state.get("get_frameworks").unwrap_or(&Value::Null);
        for entry in list(get_frameworks, "frameworks").chain(list(get_frameworks, "recovered_frameworks")) {
            if let Some(framework) = parse_framework(entry) {
                frameworks.entry(framework.id.clone()).or_insert(framework);
            }
        }
        let mut tasks = BTreeMap::new();
        let get_tasks = state.get("get_tasks").unwrap_or(&Value::Null);
        // `launched_tasks` is the older name of `tasks`; unreachable tasks drain (weight 0) and
        // orphans (their framework has not re-subscribed yet) still run. Pending tasks do not
        // run yet, completed ones no more.
        for key in ["tasks", "launched_tasks", "unreachable_tasks", "orphan_tasks"] {
            for entry in list(get_tasks, key) {
                // One task the stream cannot name must not cost every other VIP.
                match MesosTask::parse(entry, kind, self.ports) {
                    Ok(task) if !task.state.is_terminal() => {
                        tasks.entry(task.key()).or_insert(task);
                    }
                    Ok(_) => {}
                    Err(e) => self.warnings.push(format!("{e} (task skipped)")),
                }
            }
        }
        let heartbeat = record
            .get("subscribed")
            .and_then(|s| s.get("heartbeat_interval_seconds"))
            .and_then(number_f64)
            .filter(|secs| secs.is_finite() && *secs > 0.0);

        self.index += 1;
        self.subscribed = true;
        self.said.clear();
        self.heartbeat_secs = heartbeat.or(self.heartbeat_secs);
        self.agents = agents;
        self.frameworks = frameworks;
        self.tasks = tasks;
        let mut warnings = Vec::new();
        let state = ClusterState {
            index: self.index,
            agents: self.agents.values().cloned().collect(),
            frameworks: self.frameworks.values().cloned().collect(),
            tasks: self.tasks.values().map(|task| task.to_task(self.ports, &mut warnings)).collect(),
            ..ClusterState::default()
        };
        self.warnings.extend(warnings);
        Ok(Converted::Snapshot(state))
    }

    /// Stores a task (forgetting it if terminal) and returns its event.
    fn put_task(&mut self, task: MesosTask, added: bool) -> Vec<EventKind> {
        let converted = task.to_task(self.ports, &mut self.warnings);
        if task.state.is_terminal() {
            self.tasks.remove(&task.key());
        } else {
            self.tasks.insert(task.key(), task);
        }
        vec![if added { EventKind::TaskAdded { task: converted } } else { EventKind::TaskUpdated { task: converted } }]
    }

    fn update_task(&mut self, body: &Value, kind: &str) -> Result<Vec<EventKind>, MesosEventError> {
        let framework = value_of(body, "framework_id").ok_or_else(|| missing(kind, "framework_id"))?;
        let status = body.get("status").filter(|s| s.is_object()).ok_or_else(|| missing(kind, "status"))?;
        let task_id = value_of(status, "task_id").ok_or_else(|| missing(kind, "status.task_id"))?;
        let state_name = Some(text(body, "state")).filter(|s| !s.is_empty()).unwrap_or(text(status, "state"));
        let state = TaskState::from_name(state_name).unwrap_or(TaskState::Unknown);
        let key = (FrameworkId::new(framework), TaskId::new(task_id));
        let Some(mut task) = self.tasks.get(&key).cloned() else {
            // A terminal task is forgotten once reported; a repeat of its end changes nothing.
            if state.is_terminal() {
                return Ok(Vec::new());
            }
            return Err(MesosEventError::UnknownTask { framework: key.0.0, task: key.1.0 });
        };
        task.state = state;
        task.take_status(StatusView::parse(status), true);
        Ok(self.put_task(task, false))
    }
}

/// What a port's `network-scope` label says its number is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// A host port (on the agent's address).
    Host,
    /// A container port (on the task's own address, or mapped to a host port).
    Container,
    /// Unlabelled: a container port on a container network, a host port otherwise.
    Unspecified,
}

/// A discovery port, as read: one carrying VIP labels, or with [`PortView::All`] any.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TaskPort {
    number: u64,
    name: String,
    protocol: String,
    scope: Scope,
    /// `(key, value)` of each VIP label.
    vips: Vec<(String, String)>,
}

/// A port mapping: `host_port` on the agent forwards to `container_port` of the task.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapping {
    protocol: String,
    container_port: u64,
    host_port: u64,
}

/// What the converter keeps of one status.
#[derive(Clone, Debug, PartialEq)]
struct StatusView {
    timestamp: f64,
    healthy: Option<bool>,
    ips: Vec<IpAddr>,
    /// The named (CNI) network the status reports the task on, if any.
    network: Option<String>,
    mappings: Vec<Mapping>,
}

impl StatusView {
    fn parse(status: &Value) -> StatusView {
        let infos: Vec<&Value> =
            status.get("container_status").into_iter().flat_map(|c| list(c, "network_infos")).collect();
        StatusView {
            timestamp: status.get("timestamp").and_then(number_f64).unwrap_or(0.0),
            healthy: status.get("healthy").and_then(Value::as_bool),
            ips: infos
                .iter()
                .flat_map(|info| list(info, "ip_addresses"))
                .filter_map(|address| parse_ip(text(address, "ip_address")))
                .collect(),
            network: infos.iter().map(|info| text(info, "name")).find(|name| !name.is_empty()).map(str::to_owned),
            mappings: infos.iter().flat_map(|info| mappings(info.get("port_mappings"))).collect(),
        }
    }
}

/// What the converter keeps of one live Mesos task: enough to rebuild its Atoll view when a
/// status arrives (the statuses themselves are not kept: they accumulate).
#[derive(Clone, Debug, PartialEq)]
struct MesosTask {
    id: TaskId,
    name: String,
    framework_id: FrameworkId,
    agent_id: AgentId,
    state: TaskState,
    labels: Vec<(String, String)>,
    /// The discovery info's name (a pod's tasks are named after their container, their
    /// discovery info after the pod).
    discovery_name: String,
    ports: Vec<TaskPort>,
    /// The `ports` resource, as ranges (legacy `vip_port<N>` labels index into it).
    port_ranges: Vec<(u64, u64)>,
    /// From the task's container info.
    mappings: Vec<Mapping>,
    /// The container network the task's container info asks for, if any.
    network: Option<String>,
    health_check: Option<HealthCheck>,
    /// When the latest status was sent (seconds since the epoch).
    latest: Option<f64>,
    /// The addresses, container network and port mappings of the latest status that reported
    /// any: a later status without them (`TASK_KILLING`) does not move a draining backend.
    ips: Vec<IpAddr>,
    status_network: Option<String>,
    status_mappings: Vec<Mapping>,
    /// The latest health verdict reported.
    healthy: Option<bool>,
}

impl MesosTask {
    fn parse(task: &Value, event: &str, view: PortView) -> Result<MesosTask, MesosEventError> {
        let id = value_of(task, "task_id").ok_or_else(|| missing(event, "task.task_id"))?;
        let framework_id = value_of(task, "framework_id").ok_or_else(|| missing(event, "task.framework_id"))?;
        let agent_id = value_of(task, "agent_id").or_else(|| value_of(task, "slave_id")).unwrap_or_default();
        let container = task.get("container").unwrap_or(&Value::Null);
        let mut parsed = MesosTask {
            id: TaskId::new(id),
            name: text(task, "name").to_owned(),
            framework_id: FrameworkId::new(framework_id),
            agent_id: AgentId::new(agent_id),
            state: TaskState::from_name(text(task, "state")).unwrap_or(TaskState::Unknown),
            labels: labels(task.get("labels")),
            discovery_name: task.get("discovery").map(|d| text(d, "name")).unwrap_or_default().to_owned(),
            ports: discovery_ports(task.get("discovery"), view),
            port_ranges: port_ranges(task.get("resources")),
            mappings: container_mappings(container),
            network: container_network(container),
            health_check: task.get("health_check").filter(|c| c.is_object()).map(health_check),
            latest: None,
            ips: Vec::new(),
            status_network: None,
            status_mappings: Vec::new(),
            healthy: None,
        };
        let mut statuses: Vec<StatusView> = list(task, "statuses").map(StatusView::parse).collect();
        // Mesos does not promise an order: by time, equal times in the order given.
        statuses.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        for status in statuses {
            parsed.take_status(status, false);
        }
        Ok(parsed)
    }

    fn key(&self) -> (FrameworkId, TaskId) {
        (self.framework_id.clone(), self.id.clone())
    }

    /// Folds in a status; it becomes the latest if `newest` (a `TASK_UPDATED`'s is, whatever
    /// its timestamp says) or if no earlier one is later.
    fn take_status(&mut self, status: StatusView, newest: bool) {
        let StatusView { timestamp, healthy, ips, network, mappings } = status;
        if !ips.is_empty() {
            self.ips = ips;
        }
        if network.is_some() {
            self.status_network = network;
        }
        if !mappings.is_empty() {
            self.status_mappings = mappings;
        }
        if healthy.is_some() {
            self.healthy = healthy;
        }
        if newest || self.latest.is_none_or(|latest| timestamp >= latest) {
            self.latest = Some(timestamp);
        }
    }

    /// Whether the task is on a container network (its own address, not the agent's).
    fn container_network(&self) -> Option<String> {
        self.network.clone().or_else(|| self.status_network.clone())
    }

    /// The ports with where each is served: `(on the agent, port number)`.
    fn placed_ports(&self, view: PortView, warnings: &mut Vec<String>) -> Vec<(bool, u64, TaskPort)> {
        let mut ports = self.ports.clone();
        // Legacy `vip_port<N>=tcp://NAME:PORT` labels: the N-th host port (a VIP only, not a
        // port of its own in the edge's numbering).
        let legacy = if view == PortView::Vips { &self.labels[..] } else { &[] };
        for (key, value) in legacy {
            let lower = key.to_ascii_lowercase();
            let Some(index) = lower.strip_prefix("vip_port").and_then(|n| n.parse::<u64>().ok()) else { continue };
            let Some((protocol, vip)) = value
                .strip_prefix("tcp://")
                .map(|v| ("tcp", v))
                .or_else(|| value.strip_prefix("udp://").map(|v| ("udp", v)))
            else {
                continue;
            };
            match nth_port(&self.port_ranges, index) {
                Some(number) => ports.push(TaskPort {
                    number,
                    name: String::new(),
                    protocol: protocol.to_owned(),
                    scope: Scope::Host,
                    vips: vec![(key.clone(), vip.to_owned())],
                }),
                None => warnings.push(format!(
                    "task {} (framework {}): label {key}={value:?} names host port #{index}, which the task does not have",
                    self.id, self.framework_id
                )),
            }
        }
        let on_network = self.container_network().is_some();
        let mappings: Vec<&Mapping> = self.mappings.iter().chain(&self.status_mappings).collect();
        ports
            .into_iter()
            .map(|port| match port.scope {
                Scope::Host => (true, port.number, port),
                Scope::Container | Scope::Unspecified => {
                    let mapped = mappings.iter().find(|m| {
                        m.container_port == port.number
                            && m.protocol.eq_ignore_ascii_case(port_protocol(&port.protocol))
                    });
                    match mapped {
                        Some(mapping) => (true, mapping.host_port, port),
                        None if !on_network => (true, port.number, port),
                        None => (false, port.number, port),
                    }
                }
            })
            .collect()
    }

    /// The converted view of the task (see the module docs).
    fn to_task(&self, view: PortView, warnings: &mut Vec<String>) -> Task {
        let placed = self.placed_ports(view, warnings);
        // A task without discovery ports but with host ports is reached on those, at the
        // agent's address (the edge reads them when there is no discovery port).
        let on_agent = placed.iter().any(|(agent, _, _)| *agent)
            || (view == PortView::All && placed.is_empty() && !self.port_ranges.is_empty());
        let mut discovery_ports = Vec::new();
        for (agent, mut number, port) in placed {
            if agent != on_agent && view == PortView::All {
                let what = match port.name.as_str() {
                    "" => format!("container port {}", port.number),
                    name => format!("port {name} (container port {})", port.number),
                };
                warnings.push(format!(
                    "task {} (framework {}): {what} cannot be reached: the task's other ports are host ports, and a \
                     task is reached on one address",
                    self.id, self.framework_id,
                ));
                // Kept in its place: the ports after it keep their index.
                number = 0;
            } else if agent != on_agent {
                warnings.push(format!(
                    "task {} (framework {}): {} on container port {} left out: the task's other VIP ports are host \
                     ports, and a task is served on one address",
                    self.id,
                    self.framework_id,
                    port.vips.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", "),
                    port.number
                ));
                continue;
            }
            discovery_ports.push(DiscoveryPort {
                number: u32::try_from(number).unwrap_or(u32::MAX),
                name: port.name,
                protocol: port.protocol,
                labels: vip_labels(&port.vips),
            });
        }
        let (ip_addresses, networks) = match (on_agent, self.container_network()) {
            (false, Some(name)) => (
                self.ips.clone(),
                vec![NetworkRequest {
                    name: if name.is_empty() { "mesos".into() } else { name },
                    ip: None,
                    port_mappings: vec![],
                }],
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let timestamp = Time::from_secs_f64(self.latest.unwrap_or(0.0));
        let mut status = TaskStatus::new(self.id.clone(), self.state, Source::Master, timestamp);
        status.agent_id = Some(self.agent_id.clone());
        status.healthy = self.healthy;
        status.ip_addresses = ip_addresses.clone();
        let ranges = self.port_ranges.iter().map(|&(lo, hi)| (lo, hi.min(u64::from(u16::MAX))));
        Task {
            id: self.id.clone(),
            name: self.name.clone(),
            framework_id: self.framework_id.clone(),
            agent_id: self.agent_id.clone(),
            state: self.state,
            resources: Resources::new().with_ranges("ports", ranges.clone()),
            command: CommandInfo::shell(String::new()),
            labels: Labels(self.labels.iter().cloned().collect()),
            discovery: (!discovery_ports.is_empty()).then(|| DiscoveryInfo {
                visibility: "FRAMEWORK".into(),
                name: self.discovery_name.clone(),
                ports: discovery_ports,
                labels: Labels::default(),
            }),
            kill_grace_period_secs: None,
            health_check: self.health_check.clone(),
            networks,
            ports: ranges.flat_map(|(lo, hi)| lo..=hi).collect(),
            ip_addresses,
            healthy: self.healthy,
            status,
            executor_id: None,
        }
    }
}

/// The VIP labels of a port as `VIP_<n>` labels: `VIP_<digits>` keys as they are, the others
/// (`VIP_<uuid>`, `vip0`, legacy `vip_port0`) numbered after the largest.
fn vip_labels(vips: &[(String, String)]) -> Labels {
    let mut out = Labels::default();
    let mut next = vips
        .iter()
        .filter(|(key, _)| is_vip_label_key(key))
        .filter_map(|(key, _)| key["VIP_".len()..].parse::<u64>().ok())
        .max()
        .map_or(0, |max| max + 1);
    for (key, value) in vips {
        if is_vip_label_key(key) && !out.0.contains_key(key) {
            out.insert(key.clone(), value.clone());
        } else {
            out.insert(format!("VIP_{next}"), value.clone());
            next += 1;
        }
    }
    out
}

/// The protocol a port mapping must have to carry a discovery port: its first one (a
/// `udp,tcp` port is rare and its mappings come one per protocol).
fn port_protocol(protocol: &str) -> &str {
    let first = protocol.split(',').next().unwrap_or_default().trim();
    if first.is_empty() { "tcp" } else { first }
}

/// Discovery ports: with [`PortView::Vips`] those with at least one VIP label (the others do
/// not matter to a load balancer), with [`PortView::All`] every one.
fn discovery_ports(discovery: Option<&Value>, view: PortView) -> Vec<TaskPort> {
    let Some(ports) = discovery.and_then(|d| d.get("ports")) else { return Vec::new() };
    // `{"ports": {"ports": [...]}}` as the v1 API writes it; a bare list as /state does.
    let items = match ports {
        Value::Array(items) => items.as_slice(),
        other => other.get("ports").and_then(Value::as_array).map_or(&[][..], Vec::as_slice),
    };
    items
        .iter()
        .filter_map(|port| {
            let labels = labels(port.get("labels"));
            let vips: Vec<(String, String)> =
                labels.iter().filter(|(key, _)| key.starts_with("VIP") || key.starts_with("vip")).cloned().collect();
            if vips.is_empty() && view == PortView::Vips {
                return None;
            }
            let scope = match labels.iter().find(|(key, _)| key == "network-scope").map(|(_, v)| v.as_str()) {
                Some("host") => Scope::Host,
                Some("container") => Scope::Container,
                _ => Scope::Unspecified,
            };
            Some(TaskPort {
                number: port.get("number").and_then(number_u64).unwrap_or(0),
                name: text(port, "name").to_owned(),
                protocol: text(port, "protocol").to_owned(),
                scope,
                vips,
            })
        })
        .collect()
}

/// The `ports` resource as `(begin, end)` ranges, in order.
fn port_ranges(resources: Option<&Value>) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for resource in resources.and_then(Value::as_array).into_iter().flatten() {
        if text(resource, "name") != "ports" {
            continue;
        }
        match text(resource, "type") {
            "SCALAR" => {
                if let Some(port) = resource.get("scalar").and_then(|s| s.get("value")).and_then(number_u64) {
                    ranges.push((port, port));
                }
            }
            _ => {
                let items = resource.get("ranges").map(|r| list(r, "range"));
                for range in items.into_iter().flatten() {
                    let (Some(begin), Some(end)) =
                        (range.get("begin").and_then(number_u64), range.get("end").and_then(number_u64))
                    else {
                        continue;
                    };
                    if begin <= end {
                        ranges.push((begin, end));
                    }
                }
            }
        }
    }
    ranges
}

/// The `index`-th port of the ranges, counting from 0, without expanding them.
fn nth_port(ranges: &[(u64, u64)], mut index: u64) -> Option<u64> {
    for &(begin, end) in ranges {
        let len = end - begin + 1;
        if index < len {
            return Some(begin + index);
        }
        index -= len;
    }
    None
}

/// Port mappings of the task's container: Docker's, and those of its CNI networks.
fn container_mappings(container: &Value) -> Vec<Mapping> {
    let docker = container.get("docker").and_then(|d| d.get("port_mappings"));
    let networks = list(container, "network_infos").flat_map(|info| mappings(info.get("port_mappings")));
    mappings(docker).into_iter().chain(networks).collect()
}

fn mappings(value: Option<&Value>) -> Vec<Mapping> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let protocol = text(m, "protocol");
            Some(Mapping {
                protocol: if protocol.is_empty() { "tcp".into() } else { protocol.to_ascii_lowercase() },
                container_port: m.get("container_port").and_then(number_u64)?,
                host_port: m.get("host_port").and_then(number_u64).filter(|p| *p > 0)?,
            })
        })
        .collect()
}

/// The container network a task's container info asks for: Docker's bridge or user network,
/// or a named CNI network of the Mesos containerizer. `None` is host networking.
fn container_network(container: &Value) -> Option<String> {
    let named = list(container, "network_infos").map(|info| text(info, "name")).find(|name| !name.is_empty());
    if text(container, "type") == "DOCKER" {
        let docker = container.get("docker").unwrap_or(&Value::Null);
        return match text(docker, "network") {
            "BRIDGE" => Some("bridge".into()),
            "USER" => Some(named.unwrap_or("user").to_owned()),
            "NONE" => Some("none".into()),
            _ => None,
        };
    }
    named.map(str::to_owned)
}

/// A Mesos `HealthCheck` (only its presence matters to the projection; the kind and timing
/// are kept for whoever reads the state).
fn health_check(check: &Value) -> HealthCheck {
    let port_of = |section: &str| {
        check.get(section).and_then(|s| s.get("port")).and_then(number_u64).and_then(|p| u16::try_from(p).ok())
    };
    let kind = match text(check, "type") {
        "HTTP" => HealthCheckKind::Http {
            port: port_of("http").unwrap_or(0),
            path: Some(text(check.get("http").unwrap_or(&Value::Null), "path"))
                .filter(|p| !p.is_empty())
                .unwrap_or("/")
                .to_owned(),
        },
        "TCP" => HealthCheckKind::Tcp { port: port_of("tcp").unwrap_or(0) },
        _ => HealthCheckKind::Command {
            command: CommandInfo::shell(text(check.get("command").unwrap_or(&Value::Null), "value")),
        },
    };
    let mut out = HealthCheck::new(kind);
    let secs = |key: &str| check.get(key).and_then(number_f64).filter(|v| v.is_finite() && *v >= 0.0);
    out.delay_secs = secs("delay_seconds").unwrap_or(out.delay_secs);
    out.interval_secs = secs("interval_seconds").unwrap_or(out.interval_secs);
    out.timeout_secs = secs("timeout_seconds").unwrap_or(out.timeout_secs);
    out.grace_period_secs = secs("grace_period_seconds").unwrap_or(out.grace_period_secs);
    if let Some(failures) = check.get("consecutive_failures").and_then(number_u64) {
        out.consecutive_failures = u32::try_from(failures).unwrap_or(u32::MAX);
    }
    out
}

/// A `SUBSCRIBED`'s or `GET_STATE`'s state.
fn state_of(record: &Value) -> Option<&Value> {
    record
        .get("subscribed")
        .and_then(|s| s.get("get_state"))
        .or_else(|| record.get("get_state"))
        .filter(|s| s.is_object())
}

/// An agent entry's `AgentInfo` (a `recovered_agents` entry is one itself).
fn agent_info(entry: &Value) -> &Value {
    entry.get("agent_info").unwrap_or(entry)
}

fn parse_agent(entry: &Value, resolve: &dyn Fn(&str) -> Vec<IpAddr>) -> Option<Agent> {
    let info = agent_info(entry);
    let id = value_of(info, "id")?;
    let hostname = text(info, "hostname");
    let pid = upid(text(entry, "pid"));
    let port = info
        .get("port")
        .and_then(number_u64)
        .and_then(|p| u16::try_from(p).ok())
        .or_else(|| pid.as_ref().and_then(|(_, port)| port.parse().ok()))
        .unwrap_or(DEFAULT_AGENT_PORT);
    let pid_host = pid.map(|(host, _)| host).unwrap_or_default();
    let ip = parse_ip(&pid_host)
        .or_else(|| parse_ip(hostname))
        .or_else(|| first_ipv4(resolve, hostname))
        .or_else(|| first_ipv4(resolve, &pid_host))
        // Unknown: the projection takes an unspecified address as none.
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let recovered = entry.get("agent_info").is_none();
    Some(Agent {
        id: AgentId::new(id),
        hostname: hostname.to_owned(),
        address: SocketAddr::new(ip, port),
        resources: Resources::new(),
        used: Resources::new(),
        attributes: Attributes::default(),
        state: if recovered { AgentState::Recovered } else { AgentState::Active },
        drain: false,
        deactivated: false,
        drain_config: None,
        registered_at: Time::ZERO,
        version: text(entry, "version").to_owned(),
        subnets: Vec::new(),
    })
}

/// What a host name resolves to, IPv4 first (the data plane serves IPv4).
fn first_ipv4(resolve: &dyn Fn(&str) -> Vec<IpAddr>, host: &str) -> Option<IpAddr> {
    if host.is_empty() {
        return None;
    }
    let ips: Vec<IpAddr> = resolve(host).into_iter().map(|ip| ip.to_canonical()).collect();
    ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()).copied()
}

/// A framework entry's info (a `recovered_frameworks` entry is one itself) as Atoll's.
fn parse_framework(entry: &Value) -> Option<Framework> {
    let info = entry.get("framework_info").unwrap_or(entry);
    let id = value_of(info, "id")?;
    let mut converted = FrameworkInfo::named(text(info, "name"));
    converted.user = text(info, "user").to_owned();
    if !text(info, "role").is_empty() {
        converted.role = text(info, "role").to_owned();
    }
    converted.principal = text(info, "principal").to_owned();
    converted.hostname = text(info, "hostname").to_owned();
    converted.webui_url = text(info, "webui_url").to_owned();
    Some(Framework {
        id: FrameworkId::new(id),
        info: converted,
        connected: entry.get("connected").and_then(Value::as_bool).unwrap_or(true),
        hosted: false,
        registered_at: Time::ZERO,
    })
}

/// Labels as Mesos renders them: `{"labels": [{key, value}]}`, or a bare list.
fn labels(value: Option<&Value>) -> Vec<(String, String)> {
    let items = match value {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Object(object)) => object.get("labels").and_then(Value::as_array).map_or(&[][..], Vec::as_slice),
        _ => &[],
    };
    items
        .iter()
        .map(|l| (text(l, "key").to_owned(), text(l, "value").to_owned()))
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

/// A libprocess PID `id@host:port` as `(host, port)`.
fn upid(pid: &str) -> Option<(String, String)> {
    let (_, address) = pid.split_once('@')?;
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => address.rsplit_once(':')?,
    };
    Some((host.to_owned(), port.to_owned()))
}

fn upid_host(pid: &str) -> Option<String> {
    upid(pid).map(|(host, _)| host)
}

/// An IP in canonical form (an IPv4-mapped IPv6 address is IPv4).
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// `{"value": "..."}` under `key` (Mesos ids), non-empty.
fn value_of(value: &Value, key: &str) -> Option<String> {
    let id = value.get(key)?;
    let text = id.get("value").and_then(Value::as_str).or_else(|| id.as_str())?;
    (!text.is_empty()).then(|| text.to_owned())
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
    value.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A number, also when written as a string (protobuf JSON writes 64-bit integers so).
fn number_u64(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

fn number_f64(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object without a `type`",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_dns(_: &str) -> Vec<IpAddr> {
        Vec::new()
    }

    fn subscribed(tasks: Value) -> Value {
        json!({"type": "SUBSCRIBED", "subscribed": {"heartbeat_interval_seconds": 15, "get_state": {
            "get_agents": {"agents": [
                {"agent_info": {"id": {"value": "S0"}, "hostname": "agent.example", "port": 5051},
                 "pid": "slave(1)@198.19.255.3:5051"},
                {"agent_info": {"id": {"value": "S1"}, "hostname": "named.example"}},
            ]},
            "get_frameworks": {"frameworks": [{"framework_info": {"id": {"value": "F"}, "name": "marathon"}}]},
            "get_tasks": {"tasks": tasks},
        }}})
    }

    fn task(id: &str, ports: Value, extra: Value) -> Value {
        let mut task = json!({
            "task_id": {"value": id}, "framework_id": {"value": "F"}, "agent_id": {"value": "S0"},
            "name": id, "state": "TASK_RUNNING",
            "discovery": {"visibility": "FRAMEWORK", "ports": {"ports": ports}},
            "statuses": [{"state": "TASK_RUNNING", "timestamp": 1.0,
                          "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": "198.19.255.3"}]}]}}],
        });
        for (key, value) in extra.as_object().unwrap() {
            task[key] = value.clone();
        }
        task
    }

    fn snapshot(converter: &mut MesosConverter, record: &Value) -> ClusterState {
        match converter.convert(record, Time::ZERO, &no_dns).unwrap() {
            Converted::Snapshot(state) => state,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    fn events(converter: &mut MesosConverter, record: Value) -> Vec<Event> {
        match converter.convert(&record, Time(7), &no_dns).unwrap() {
            Converted::Events(events) => events,
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn agents_are_found_by_pid_then_hostname_then_the_resolver() {
        let record = subscribed(json!([]));
        assert_eq!(hostnames(&record), BTreeSet::from(["named.example".to_owned()]));
        let resolve = |host: &str| match host {
            "named.example" => vec!["::1".parse().unwrap(), "::ffff:198.19.255.4".parse().unwrap()],
            _ => vec![],
        };
        let mut converter = MesosConverter::new();
        let Converted::Snapshot(state) = converter.convert(&record, Time::ZERO, &resolve).unwrap() else { panic!() };
        let addresses: Vec<String> = state.agents.iter().map(|a| a.address.to_string()).collect();
        assert_eq!(addresses, ["198.19.255.3:5051", "198.19.255.4:5051"]);
        assert_eq!(converter.heartbeat_interval_secs(), Some(15.0));
        let state = snapshot(&mut MesosConverter::new(), &record);
        assert!(state.agents[1].address.ip().is_unspecified(), "unresolved: no address");
    }

    #[test]
    fn the_stream_must_start_with_the_state_and_bad_events_change_nothing() {
        let mut converter = MesosConverter::new();
        let heartbeat = json!({"type": "HEARTBEAT"});
        assert!(matches!(
            converter.convert(&heartbeat, Time::ZERO, &no_dns),
            Err(MesosEventError::BeforeSubscribed { .. })
        ));
        assert_eq!(converter.convert(&json!([1]), Time::ZERO, &no_dns), Err(MesosEventError::NotAnEvent("an array")));
        snapshot(&mut converter, &subscribed(json!([])));
        assert_eq!(events(&mut converter, heartbeat), vec![]);
        assert_eq!(events(&mut converter, json!({"type": "SOMETHING_NEW", "something_new": {}})), vec![]);
        let before = converter.state();
        let bad = json!({"type": "TASK_ADDED", "task_added": {"task": {"name": "x"}}});
        assert!(matches!(converter.convert(&bad, Time::ZERO, &no_dns), Err(MesosEventError::Missing { .. })));
        let unknown = json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F"}, "state": "TASK_RUNNING",
                              "status": {"task_id": {"value": "ghost"}, "state": "TASK_RUNNING"}}});
        assert!(matches!(converter.convert(&unknown, Time::ZERO, &no_dns), Err(MesosEventError::UnknownTask { .. })));
        assert_eq!(converter.state(), before);
    }

    #[test]
    fn events_follow_tasks_agents_and_frameworks() {
        let mut converter = MesosConverter::new();
        let state = snapshot(&mut converter, &subscribed(json!([])));
        assert_eq!(state.index, 1);
        let added = events(
            &mut converter,
            json!({"type": "TASK_ADDED", "task_added": {"task": task("t", json!([{"number": 80, "protocol": "tcp",
                "labels": {"labels": [{"key": "VIP_0", "value": "/web:80"}]}}]), json!({"state": "TASK_STAGING", "statuses": []}))}}),
        );
        assert_eq!(added.len(), 1);
        assert_eq!((added[0].index, added[0].timestamp), (2, Time(7)));
        let EventKind::TaskAdded { task } = &added[0].kind else { panic!("{added:?}") };
        assert_eq!(task.state, TaskState::Staging);
        // The event's state wins over its status's.
        let updated = events(
            &mut converter,
            json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F"}, "state": "TASK_RUNNING",
                "status": {"task_id": {"value": "t"}, "state": "TASK_STARTING", "timestamp": 2.0, "healthy": true}}}),
        );
        let EventKind::TaskUpdated { task } = &updated[0].kind else { panic!("{updated:?}") };
        assert_eq!((task.state, task.healthy), (TaskState::Running, Some(true)));
        let killed = json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F"},
            "state": "TASK_KILLED", "status": {"task_id": {"value": "t"}, "state": "TASK_KILLED", "timestamp": 3.0}}});
        assert_eq!(events(&mut converter, killed.clone()).len(), 1);
        assert!(converter.state().tasks.is_empty(), "terminal tasks are forgotten");
        assert_eq!(events(&mut converter, killed), vec![], "and their end is not repeated");

        let agent = json!({"type": "AGENT_ADDED", "agent_added": {"agent": {"agent_info": {"id": {"value": "S2"},
            "hostname": "198.19.255.9"}}}});
        let EventKind::AgentAdded { agent } = &events(&mut converter, agent)[0].kind else { panic!() };
        assert_eq!(agent.address.to_string(), "198.19.255.9:5051");
        let removed = json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": "S2"}}});
        assert!(matches!(events(&mut converter, removed)[0].kind, EventKind::AgentRemoved { .. }));
        let framework = json!({"type": "FRAMEWORK_UPDATED", "framework_updated": {"framework": {"framework_info":
            {"id": {"value": "F"}, "name": "marathon-user"}}}});
        let EventKind::FrameworkUpdated { framework } = &events(&mut converter, framework)[0].kind else { panic!() };
        assert_eq!(framework.info.name, "marathon-user");
        let gone =
            json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {"framework_info": {"id": {"value": "F"}}}});
        assert!(matches!(events(&mut converter, gone)[0].kind, EventKind::FrameworkRemoved { .. }));
        assert!(converter.state().frameworks.is_empty());
    }

    #[test]
    fn vip_ports_are_placed_where_dcos_places_them() {
        let vip = |value: &str, scope: Option<&str>| {
            let mut labels = vec![json!({"key": "VIP_0", "value": value})];
            labels.extend(scope.map(|s| json!({"key": "network-scope", "value": s})));
            json!({"labels": labels})
        };
        let overlay_status = json!([{"state": "TASK_RUNNING", "timestamp": 1.0, "container_status": {"network_infos":
            [{"name": "dcos", "ip_addresses": [{"ip_address": "9.0.1.6"}]}]}}]);
        let tasks = json!([
            // Host networking: on the agent, whatever the status says.
            task("host", json!([{"number": 31000, "protocol": "tcp", "labels": vip("/a:80", None)}]), json!({})),
            // Overlay: its own address.
            task(
                "overlay",
                json!([{"number": 80, "protocol": "tcp", "labels": vip("/b:80", Some("container"))}]),
                json!({"statuses": overlay_status, "container": {"type": "MESOS", "network_infos": [{"name": "dcos"}]}})
            ),
            // Docker bridge, container port 8080 mapped to host port 20560.
            task(
                "bridge",
                json!([{"number": 8080, "protocol": "tcp", "labels": vip("/c:80", Some("container"))}]),
                json!({"container": {"type": "DOCKER", "docker": {"network": "BRIDGE",
                        "port_mappings": [{"host_port": 20560, "container_port": 8080, "protocol": "tcp"}]}}})
            ),
            // Host scope on a bridge: the number is already the host port.
            task(
                "scoped",
                json!([{"number": 16424, "protocol": "tcp", "labels": vip("/d:80", Some("host"))}]),
                json!({"container": {"type": "MESOS", "network_infos": [{"name": "mesos-bridge"}]}})
            ),
            // Both: kept on the agent, the unmapped container port left out.
            task(
                "mixed",
                json!([{"number": 16425, "protocol": "tcp", "labels": vip("/e:80", Some("host"))},
                                 {"number": 9000, "protocol": "tcp", "labels": vip("/f:80", Some("container"))}]),
                json!({"statuses": overlay_status, "container": {"type": "MESOS", "network_infos": [{"name": "dcos"}]}})
            ),
        ]);
        let mut converter = MesosConverter::new();
        let state = snapshot(&mut converter, &subscribed(tasks));
        let view: BTreeMap<&str, (Vec<IpAddr>, bool, Vec<u32>)> = state
            .tasks
            .iter()
            .map(|t| {
                let ports = t.discovery.iter().flat_map(|d| d.ports.iter().map(|p| p.number)).collect();
                (t.id.as_str(), (t.ip_addresses.clone(), !t.networks.is_empty(), ports))
            })
            .collect();
        let ip = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
        assert_eq!(view["host"], (vec![], false, vec![31000]));
        assert_eq!(view["overlay"], (ip("9.0.1.6"), true, vec![80]));
        assert_eq!(view["bridge"], (vec![], false, vec![20560]));
        assert_eq!(view["scoped"], (vec![], false, vec![16424]));
        assert_eq!(view["mixed"], (vec![], false, vec![16425]));
        let warnings = converter.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("/f:80") && warnings[0].contains("9000"), "{warnings:?}");
        let again = json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F"},
            "state": "TASK_RUNNING", "status": {"task_id": {"value": "mixed"}, "state": "TASK_RUNNING", "timestamp": 5.0}}});
        assert_eq!(events(&mut converter, again).len(), 1);
        assert_eq!(converter.take_warnings(), Vec::<String>::new(), "said once");
    }

    #[test]
    fn vip_label_keys_become_numbered_and_legacy_labels_index_host_ports() {
        let ports = json!([{"number": 10000, "protocol": "tcp", "labels": {"labels": [
            {"key": "VIP_3", "value": "/a:80"}, {"key": "VIP_d8c3", "value": "b:80"}, {"key": "vipx", "value": "/c:80"},
            {"key": "network-scope", "value": "host"}, {"key": "VIPER", "value": "/d:80"}]}}]);
        let extra = json!({
            "labels": {"labels": [{"key": "VIP_PORT1", "value": "udp://e:53"}, {"key": "vip_port9", "value": "tcp://f:80"},
                                  {"key": "vip_port0", "value": "http://g:80"}]},
            "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 10000, "end": 10000},
                                                                                    {"begin": 10005, "end": 10006}]}}],
        });
        let mut converter = MesosConverter::new();
        let state = snapshot(&mut converter, &subscribed(json!([task("t", ports, extra)])));
        let discovery = state.tasks[0].discovery.as_ref().unwrap();
        let first: Vec<(&str, &str)> =
            discovery.ports[0].labels.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(first, [("VIP_3", "/a:80"), ("VIP_4", "b:80"), ("VIP_5", "/c:80"), ("VIP_6", "/d:80")]);
        assert_eq!(discovery.ports.len(), 2, "{discovery:?}");
        assert_eq!(
            (discovery.ports[1].number, discovery.ports[1].protocol.as_str(), discovery.ports[1].labels.get("VIP_0")),
            (10005, "udp", Some("e:53"))
        );
        let warnings = converter.take_warnings();
        assert!(warnings.len() == 1 && warnings[0].contains("vip_port9"), "{warnings:?}");
        assert_eq!(state.tasks[0].ports, vec![10000, 10005, 10006]);
    }

    #[test]
    fn health_is_the_latest_verdict_and_addresses_outlive_statuses_without_any() {
        let extra = json!({
            "health_check": {"type": "HTTP", "http": {"port": 8080, "path": "/ping"}, "interval_seconds": 5},
            "statuses": [
                {"state": "TASK_RUNNING", "timestamp": 3.0, "healthy": false},
                {"state": "TASK_RUNNING", "timestamp": 2.0, "healthy": true, "container_status": {"network_infos":
                    [{"name": "dcos", "ip_addresses": [{"ip_address": "9.0.0.2"}, {"ip_address": "fd01::2"}]}]}},
                {"state": "TASK_STARTING", "timestamp": 1.0},
            ],
        });
        let mut converter = MesosConverter::new();
        let state = snapshot(&mut converter, &subscribed(json!([task("t", json!([]), extra)])));
        let task = &state.tasks[0];
        assert_eq!(task.healthy, Some(false));
        assert_eq!(task.status.timestamp, Time(3000));
        let check = task.health_check.as_ref().unwrap();
        assert_eq!(check.kind, HealthCheckKind::Http { port: 8080, path: "/ping".into() });
        assert_eq!(check.interval_secs, 5.0);
        // On the overlay (an earlier status said so): its own addresses, though the latest
        // status has none.
        let own: Vec<IpAddr> = vec!["9.0.0.2".parse().unwrap(), "fd01::2".parse().unwrap()];
        assert_eq!((&task.ip_addresses, task.networks[0].name.as_str()), (&own, "dcos"));
        let killing = json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F"},
            "state": "TASK_KILLING", "status": {"task_id": {"value": "t"}, "state": "TASK_KILLING", "timestamp": 4.0}}});
        let updated = events(&mut converter, killing);
        let EventKind::TaskUpdated { task } = &updated[0].kind else { panic!() };
        assert_eq!((task.state, task.healthy, &task.ip_addresses), (TaskState::Killing, Some(false), &own));
    }

    #[test]
    fn the_edge_view_keeps_every_port_in_its_place() {
        let port = |number: u64, name: &str, labels: Value| json!({"number": number, "name": name, "protocol": "tcp", "labels": labels});
        let host_scope = json!({"labels": [{"key": "network-scope", "value": "host"}]});
        let container_scope = json!({"labels": [{"key": "network-scope", "value": "container"}]});
        let tasks = json!([
            // Host networking, no VIPs; a legacy VIP label adds no port here.
            task(
                "host",
                json!([port(31000, "http", json!({})), port(31001, "admin", json!({}))]),
                json!({"labels": {"labels": [{"key": "vip_port0", "value": "tcp://a:80"}]},
                        "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}}]})
            ),
            // A bridge with one mapped port and one that is not: the second keeps its place,
            // unreachable.
            task(
                "bridge",
                json!([port(20560, "http", host_scope), port(9000, "debug", container_scope.clone())]),
                json!({"container": {"type": "DOCKER", "docker": {"network": "BRIDGE",
                        "port_mappings": [{"host_port": 20560, "container_port": 8080, "protocol": "tcp"}]}}})
            ),
            // The overlay: container ports on its own address.
            task(
                "overlay",
                json!([port(8080, "http", container_scope)]),
                json!({"container": {"type": "MESOS", "network_infos": [{"name": "dcos"}]},
                        "statuses": [{"state": "TASK_RUNNING", "timestamp": 1.0, "container_status":
                            {"network_infos": [{"name": "dcos", "ip_addresses": [{"ip_address": "9.0.1.6"}]}]}}]})
            ),
            // No discovery info, host ports only: at the agent.
            task(
                "plain",
                json!([]),
                json!({"container": {"type": "DOCKER", "docker": {"network": "BRIDGE"}},
                 "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31005, "end": 31005}]}}]})
            ),
        ]);
        let mut converter = MesosConverter::with_ports(PortView::All);
        let state = snapshot(&mut converter, &subscribed(tasks.clone()));
        // (discovery ports, own addresses, on a network, host ports) by task.
        type View = (Vec<(u32, String)>, Vec<IpAddr>, bool, Vec<u64>);
        let view: BTreeMap<&str, View> = state
            .tasks
            .iter()
            .map(|t| {
                let ports =
                    t.discovery.iter().flat_map(|d| d.ports.iter().map(|p| (p.number, p.name.clone()))).collect();
                (t.id.as_str(), (ports, t.ip_addresses.clone(), !t.networks.is_empty(), t.ports.clone()))
            })
            .collect();
        let named = |ports: &[(u32, &str)]| ports.iter().map(|(n, name)| (*n, name.to_string())).collect::<Vec<_>>();
        assert_eq!(view["host"], (named(&[(31000, "http"), (31001, "admin")]), vec![], false, vec![31000, 31001]));
        assert_eq!(view["bridge"], (named(&[(20560, "http"), (0, "debug")]), vec![], false, vec![]));
        assert_eq!(view["overlay"], (named(&[(8080, "http")]), vec!["9.0.1.6".parse().unwrap()], true, vec![]));
        assert_eq!(view["plain"], (vec![], vec![], false, vec![31005]));
        let warnings = converter.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("port debug (container port 9000) cannot be reached"), "{warnings:?}");

        // The load balancer's view of the same tasks: only VIP ports, legacy labels included.
        let state = snapshot(&mut MesosConverter::new(), &subscribed(tasks));
        let host = state.tasks.iter().find(|t| t.id.as_str() == "host").unwrap();
        let ports: Vec<u32> = host.discovery.iter().flat_map(|d| d.ports.iter().map(|p| p.number)).collect();
        assert_eq!(ports, [31000]);
        assert!(state.tasks.iter().filter(|t| t.id.as_str() != "host").all(|t| t.discovery.is_none()));
    }

    #[test]
    fn helpers_read_mesos_json_leniently() {
        assert_eq!(upid("slave(1)@172.17.0.3:5051"), Some(("172.17.0.3".into(), "5051".into())));
        assert_eq!(upid("slave(1)@[fd01::3]:5051"), Some(("fd01::3".into(), "5051".into())));
        assert_eq!(upid("172.17.0.3:5051"), None);
        assert_eq!(nth_port(&[(10, 11), (20, 20)], 2), Some(20));
        assert_eq!(nth_port(&[(10, 11)], 2), None);
        assert_eq!(number_u64(&json!("31000")), Some(31000));
        assert_eq!(labels(Some(&json!([{"key": "a", "value": "b"}]))), vec![("a".into(), "b".into())]);
        assert_eq!(port_protocol("udp,tcp"), "udp");
        assert_eq!(port_protocol(""), "tcp");
        let docker_user =
            json!({"type": "DOCKER", "docker": {"network": "USER"}, "network_infos": [{"name": "dcos6"}]});
        assert_eq!(container_network(&docker_user).as_deref(), Some("dcos6"));
        assert_eq!(container_network(&json!({"type": "DOCKER", "docker": {"network": "HOST"}})), None);
        assert_eq!(container_network(&json!({"type": "MESOS", "network_infos": [{"ip_addresses": []}]})), None);
    }
}
