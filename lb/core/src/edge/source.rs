//! The edge's input: apps with their labels, ports and tasks, from the master's cluster state
//! or from Marathon's `/v2/apps?embed=apps.tasks` JSON (Marathon-LB's own input, which the
//! compatibility fixtures are); from a Mesos master's tasks alone, see [`super::mesos`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use atoll_proto::model::{ClusterState, DiscoveryPort, Task, TaskState};
use serde::Deserialize;

use super::BackendState;

/// The label the services framework puts on every task of an app: the app's id.
pub const APP_ID_LABEL: &str = "ATOLL_APP_ID";

/// An app as the edge sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeApp {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<EdgePort>,
    pub tasks: Vec<EdgeTask>,
    /// Instances asked for (blue/green draining counts with it).
    pub instances: u32,
    pub has_health_checks: bool,
}

/// One port of an app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgePort {
    /// The service port (`portDefinitions[n].port`, `portMappings[n].servicePort`), if any.
    pub service_port: Option<u32>,
}

/// How a task stands for taking requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskHealth {
    /// RUNNING, and healthy or without a health check.
    Ready,
    /// RUNNING with a failing (or not yet reported) health check.
    Unhealthy,
    /// KILLING, unreachable, or drained by a blue/green deployment.
    Draining,
}

impl TaskHealth {
    pub fn state(self) -> BackendState {
        match self {
            TaskHealth::Ready => BackendState::Active,
            TaskHealth::Unhealthy => BackendState::Unhealthy,
            TaskHealth::Draining => BackendState::Draining,
        }
    }
}

/// A live task of an app: where each of its ports is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeTask {
    pub id: String,
    pub health: TaskHealth,
    /// Indexed like the app's ports; `None` where the port cannot be reached (yet).
    pub endpoints: Vec<Option<SocketAddr>>,
}

/// The apps of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeApps {
    pub apps: Vec<EdgeApp>,
}

impl EdgeApps {
    /// The apps of the master's state with their live tasks. An app's current labels apply
    /// to all its tasks (as Marathon-LB reads them); tasks whose app is gone (killed with it,
    /// still draining) keep the labels they were launched with.
    pub fn from_state(state: &ClusterState) -> EdgeApps {
        let agents: BTreeMap<_, IpAddr> = state.agents.iter().map(|a| (&a.id, a.address.ip())).collect();
        let mut apps: BTreeMap<String, EdgeApp> = state
            .apps
            .iter()
            .map(|app| {
                let definition = &app.definition;
                let ports = match (&definition.port_definitions, &definition.container) {
                    (_, Some(container)) if !container.port_mappings.is_empty() => {
                        container.port_mappings.iter().map(|_| EdgePort { service_port: None }).collect()
                    }
                    (Some(defs), _) => {
                        defs.iter().map(|d| EdgePort { service_port: (d.port != 0).then_some(d.port) }).collect()
                    }
                    _ => Vec::new(),
                };
                let id = app.id.to_string();
                let edge_app = EdgeApp {
                    id: id.clone(),
                    labels: definition.labels.clone(),
                    ports,
                    tasks: Vec::new(),
                    instances: definition.instances,
                    has_health_checks: !definition.health_checks.is_empty(),
                };
                (id, edge_app)
            })
            .collect();
        for task in &state.tasks {
            let Some(health) = task_health(task) else { continue };
            let Some(app_id) = task.labels.get(APP_ID_LABEL) else { continue };
            let agent_ip = agents.get(&task.agent_id).copied();
            let endpoints = task_endpoints(task, agent_ip);
            let app = apps.entry(app_id.to_owned()).or_insert_with(|| EdgeApp {
                id: app_id.to_owned(),
                labels: task.labels.0.clone(),
                ports: endpoints.iter().map(|_| EdgePort::default()).collect(),
                tasks: Vec::new(),
                instances: 0,
                has_health_checks: task.health_check.is_some(),
            });
            app.tasks.push(EdgeTask { id: task.id.to_string(), health, endpoints });
        }
        EdgeApps { apps: apps.into_values().collect() }
    }
}

/// `None`: not a backend at all (not started, or ended).
pub(super) fn task_health(task: &Task) -> Option<TaskHealth> {
    match task.state {
        TaskState::Running => Some(match (task.healthy, task.health_check.is_some()) {
            (Some(true), _) | (None, false) => TaskHealth::Ready,
            _ => TaskHealth::Unhealthy,
        }),
        TaskState::Killing | TaskState::Unreachable => Some(TaskHealth::Draining),
        _ => None,
    }
}

/// Each app port's address: the task's own IP with the port number on a container network
/// (the number is the container port), else the agent's IP with the host port. The app ports
/// are the discovery ports (a `tcp,udp` port once), else the host ports.
pub(super) fn task_endpoints(task: &Task, agent_ip: Option<IpAddr>) -> Vec<Option<SocketAddr>> {
    let container = !task.networks.is_empty();
    let own_ip = task.ip_addresses.iter().copied().find(|ip| !ip.is_unspecified());
    // An agent whose address is not known (a Mesos agent by an unresolved host name) has none.
    let ip = if container { own_ip } else { agent_ip.filter(|ip| !ip.is_unspecified()) };
    let numbers: Vec<u32> = match &task.discovery {
        Some(discovery) if !discovery.ports.is_empty() => app_port_numbers(&discovery.ports),
        _ => task.ports.iter().map(|&p| p as u32).collect(),
    };
    numbers
        .into_iter()
        .map(|port| match (ip, u16::try_from(port)) {
            (Some(ip), Ok(port)) if port != 0 => Some(SocketAddr::new(ip, port)),
            _ => None,
        })
        .collect()
}

/// The number of each app port among discovery ports: Marathon and Atoll list a port of
/// several protocols (`tcp,udp`) once per protocol, one after the other with the same name and
/// number, while the app (and its `{n}` labels) counts it once.
fn app_port_numbers(ports: &[DiscoveryPort]) -> Vec<u32> {
    let mut numbers = Vec::new();
    let mut previous: Option<&DiscoveryPort> = None;
    for port in ports {
        let same_port =
            previous.is_some_and(|p| p.number == port.number && p.name == port.name && p.protocol != port.protocol);
        if !same_port {
            numbers.push(port.number);
        }
        previous = Some(port);
    }
    numbers
}

/// Marathon's `GET /v2/apps?embed=apps.tasks` (the fields the edge reads; others ignored, as
/// Marathon-LB ignores them).
#[derive(Clone, Debug, Deserialize)]
pub struct MarathonApps {
    pub apps: Vec<MarathonApp>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonApp {
    pub id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub port_definitions: Option<Vec<MarathonPortDefinition>>,
    #[serde(default)]
    pub container: Option<MarathonContainer>,
    #[serde(default)]
    pub networks: Option<Vec<MarathonNetwork>>,
    /// Marathon before 1.5: IP-per-task when present.
    #[serde(default)]
    pub ip_address: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub health_checks: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    pub tasks: Vec<MarathonTask>,
    #[serde(default = "one")]
    pub instances: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
pub struct MarathonPortDefinition {
    #[serde(default)]
    pub port: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonContainer {
    #[serde(default)]
    pub port_mappings: Option<Vec<MarathonPortMapping>>,
    #[serde(default)]
    pub docker: Option<MarathonDocker>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonDocker {
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub port_mappings: Option<Vec<MarathonPortMapping>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonPortMapping {
    #[serde(default)]
    pub container_port: u32,
    #[serde(default)]
    pub service_port: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct MarathonNetwork {
    #[serde(default)]
    pub mode: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonTask {
    pub id: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub ports: Vec<u32>,
    #[serde(default)]
    pub ip_addresses: Vec<MarathonIpAddress>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub health_check_results: Option<Vec<MarathonHealthResult>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonIpAddress {
    pub ip_address: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct MarathonHealthResult {
    #[serde(default)]
    pub alive: bool,
}

impl MarathonApp {
    fn port_mappings(&self) -> Option<&Vec<MarathonPortMapping>> {
        let container = self.container.as_ref()?;
        container.port_mappings.as_ref().or_else(|| container.docker.as_ref().and_then(|d| d.port_mappings.as_ref()))
    }

    /// IP-per-task: a Marathon 1.5 `container` network (not `container/bridge`), or a
    /// pre-1.5 `ipAddress`. Then tasks are reached on their own IP and the container port.
    pub fn ip_per_task(&self) -> bool {
        self.ip_address.is_some() || self.networks.iter().flatten().any(|n| n.mode == "container")
    }

    /// The app's ports with their service ports.
    pub fn ports(&self) -> Vec<EdgePort> {
        match (self.port_mappings(), &self.port_definitions) {
            (Some(mappings), _) if !mappings.is_empty() => mappings
                .iter()
                .map(|m| EdgePort { service_port: (m.service_port != 0).then_some(m.service_port) })
                .collect(),
            (_, Some(defs)) => {
                defs.iter().map(|d| EdgePort { service_port: (d.port != 0).then_some(d.port) }).collect()
            }
            _ => Vec::new(),
        }
    }

    fn task_health(&self, task: &MarathonTask) -> Option<TaskHealth> {
        match task.state.as_deref() {
            Some("TASK_RUNNING") | None => {}
            Some("TASK_KILLING") | Some("TASK_UNREACHABLE") => return Some(TaskHealth::Draining),
            Some(_) => return None,
        }
        if self.health_checks.is_empty() {
            return Some(TaskHealth::Ready);
        }
        // Marathon-LB's rule: alive when any of its checks says so.
        match &task.health_check_results {
            Some(results) if results.iter().any(|r| r.alive) => Some(TaskHealth::Ready),
            _ => Some(TaskHealth::Unhealthy),
        }
    }

    fn task_endpoints(&self, task: &MarathonTask) -> Vec<Option<SocketAddr>> {
        if self.ip_per_task() {
            let ip = task.ip_addresses.iter().find_map(|a| a.ip_address.parse::<IpAddr>().ok());
            let container_ports: Vec<u32> =
                self.port_mappings().map(|m| m.iter().map(|m| m.container_port).collect()).unwrap_or_default();
            container_ports
                .iter()
                .map(|&port| match (ip, u16::try_from(port)) {
                    (Some(ip), Ok(port)) if port != 0 => Some(SocketAddr::new(ip, port)),
                    _ => None,
                })
                .collect()
        } else {
            let ip = task.host.parse::<IpAddr>().ok();
            task.ports
                .iter()
                .map(|&port| match (ip, u16::try_from(port)) {
                    (Some(ip), Ok(port)) if port != 0 => Some(SocketAddr::new(ip, port)),
                    _ => None,
                })
                .collect()
        }
    }

    pub fn to_edge_app(&self) -> EdgeApp {
        EdgeApp {
            id: if self.id.starts_with('/') { self.id.clone() } else { format!("/{}", self.id) },
            instances: self.instances,
            has_health_checks: !self.health_checks.is_empty(),
            labels: self.labels.clone(),
            ports: self.ports(),
            tasks: self
                .tasks
                .iter()
                .filter_map(|t| {
                    self.task_health(t).map(|health| EdgeTask {
                        id: t.id.clone(),
                        health,
                        endpoints: self.task_endpoints(t),
                    })
                })
                .collect(),
        }
    }
}

impl MarathonApps {
    pub fn to_edge_apps(&self) -> EdgeApps {
        EdgeApps { apps: self.apps.iter().map(MarathonApp::to_edge_app).collect() }
    }
}
