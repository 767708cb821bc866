//! The normalized input of the projection: just what naming needs from frameworks, agents and
//! tasks, whether it came from Atoll's model (snapshot and events) or from a Mesos
//! `/master/state`. Both sources are reduced to these types first so one generator serves
//! both, and so an event that changes nothing DNS cares about (an agent's used resources, a
//! framework reconnecting) is recognised by plain equality and costs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use atoll_proto::model::{self, AgentState, TaskState};

/// Identifies a task. Mesos lists a task under its framework, and a `/master/state` can hold
/// two entries with the same id (Mesos-DNS's own fake state does, and publishes both), so
/// `occurrence` counts earlier entries with the same framework and id (always 0 from Atoll).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub framework_id: String,
    pub task_id: String,
    pub occurrence: u32,
}

/// Where a framework's scheduler is, for `<framework>.<domain>` and
/// `_framework._tcp.<framework>.<domain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameworkHost {
    /// Mesos: the host and port of the scheduler's libprocess PID, or only its `hostname` when it
    /// has no PID (then there is no SRV). Atoll: the framework's `hostname` when it is an IP.
    Address { ips: Vec<IpAddr>, port: Option<u16> },
    /// Runs inside the leading master (Atoll's hosted frameworks): the leader's IP and port, so
    /// the names follow a fail-over.
    Leader,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameworkInput {
    /// As the framework calls itself; sanitised only when names are made.
    pub name: String,
    pub host: FrameworkHost,
}

/// An agent that is part of the cluster (Mesos: listed in `slaves`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentInput {
    /// Its addresses (Mesos: the host of its PID, resolved when a name). Empty when unknown:
    /// its tasks are still published, without `.slave` addresses.
    pub ips: Vec<IpAddr>,
    /// The agent's API port (Mesos: its PID's), for `_slave._tcp`.
    pub port: Option<u16>,
}

/// A task's own addresses, one list per Mesos-DNS IP source (`host` is the agent's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskIps {
    /// Container network addresses from the task status (`network_infos`); Atoll's task IPs.
    pub netinfo: Vec<IpAddr>,
    /// `Docker.NetworkSettings.IPAddress` status labels.
    pub docker: Vec<IpAddr>,
    /// `MesosContainerizer.NetworkSettings.IPAddress` status labels.
    pub mesos: Vec<IpAddr>,
}

/// A port of a task's discovery info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryPort {
    pub number: u64,
    pub name: String,
    pub protocol: String,
    /// Kept for VIP names (`VIP_0` labels live on ports in DC/OS).
    pub labels: Vec<(String, String)>,
}

/// Mesos `DiscoveryInfo`, as far as naming goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    pub name: String,
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInput {
    pub id: String,
    pub name: String,
    pub agent_id: String,
    pub state: TaskState,
    /// The task defines a health check (then it is healthy only once a check said so).
    pub has_health_check: bool,
    /// The latest verdict, if any.
    pub healthy: Option<bool>,
    pub ips: TaskIps,
    /// Host ports from the `ports` resource, in resource order.
    pub ports: Vec<u64>,
    pub discovery: Option<Discovery>,
    /// Kept for VIP names (a later issue); naming ignores them.
    pub labels: Vec<(String, String)>,
}

impl TaskInput {
    /// Mesos-DNS `HasDiscoveryInfo`: discovery info counts only when it names the task.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref().filter(|d| !d.name.is_empty())
    }

    /// Whether a health-aware DNS publishes it: healthy, or without a health check. A task whose
    /// check has not answered yet is not ready for traffic.
    pub fn is_healthy_enough(&self) -> bool {
        match self.healthy {
            Some(healthy) => healthy,
            None => !self.has_health_check,
        }
    }
}

/// One entry plus the order it was first seen in, so `/v1/enumerate` lists frameworks and
/// tasks in the master's order as Mesos-DNS does.
#[derive(Clone, Debug)]
pub(crate) struct Entry<T> {
    pub seq: u64,
    pub value: T,
}

/// The whole normalized input, with the reverse indexes incremental updates need (which tasks
/// to redo when an agent or a framework changes).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub(crate) frameworks: BTreeMap<String, Entry<FrameworkInput>>,
    pub(crate) agents: BTreeMap<String, AgentInput>,
    pub(crate) tasks: BTreeMap<TaskKey, Entry<TaskInput>>,
    tasks_by_agent: BTreeMap<String, BTreeSet<TaskKey>>,
    tasks_by_framework: BTreeMap<String, BTreeSet<TaskKey>>,
    next_seq: u64,
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    /// Sets or (with `None`) removes a framework; whether anything changed.
    pub fn put_framework(&mut self, id: &str, framework: Option<FrameworkInput>) -> bool {
        match framework {
            Some(value) => match self.frameworks.get_mut(id) {
                Some(entry) if entry.value == value => false,
                Some(entry) => {
                    entry.value = value;
                    true
                }
                None => {
                    let seq = self.bump();
                    self.frameworks.insert(id.to_owned(), Entry { seq, value });
                    true
                }
            },
            None => self.frameworks.remove(id).is_some(),
        }
    }

    /// Sets or (with `None`) removes an agent; whether anything changed.
    pub fn put_agent(&mut self, id: &str, agent: Option<AgentInput>) -> bool {
        match agent {
            Some(value) if self.agents.get(id) == Some(&value) => false,
            Some(value) => {
                self.agents.insert(id.to_owned(), value);
                true
            }
            None => self.agents.remove(id).is_some(),
        }
    }

    /// Sets or (with `None`) removes a task; whether anything changed.
    pub fn put_task(&mut self, key: TaskKey, task: Option<TaskInput>) -> bool {
        let old_agent = match (self.tasks.get(&key), &task) {
            (None, None) => return false,
            (Some(entry), Some(task)) if &entry.value == task => return false,
            (Some(entry), _) => Some(entry.value.agent_id.clone()),
            (None, Some(_)) => None,
        };
        if let Some(agent) = old_agent {
            unindex(&mut self.tasks_by_agent, &agent, &key);
        }
        match task {
            Some(value) => {
                index(&mut self.tasks_by_agent, &value.agent_id, &key);
                index(&mut self.tasks_by_framework, &key.framework_id, &key);
                match self.tasks.get_mut(&key) {
                    Some(entry) => entry.value = value,
                    None => {
                        let seq = self.bump();
                        self.tasks.insert(key, Entry { seq, value });
                    }
                }
            }
            None => {
                unindex(&mut self.tasks_by_framework, &key.framework_id, &key);
                self.tasks.remove(&key);
            }
        }
        true
    }

    pub fn framework(&self, id: &str) -> Option<&FrameworkInput> {
        self.frameworks.get(id).map(|entry| &entry.value)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentInput> {
        self.agents.get(id)
    }

    pub fn task(&self, key: &TaskKey) -> Option<&TaskInput> {
        self.tasks.get(key).map(|entry| &entry.value)
    }

    pub fn tasks_on_agent(&self, agent_id: &str) -> impl Iterator<Item = &TaskKey> {
        self.tasks_by_agent.get(agent_id).into_iter().flatten()
    }

    pub fn tasks_of_framework(&self, framework_id: &str) -> impl Iterator<Item = &TaskKey> {
        self.tasks_by_framework.get(framework_id).into_iter().flatten()
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// The model of an Atoll cluster state.
    pub fn from_cluster_state(state: &model::ClusterState) -> Model {
        let mut built = Model::new();
        for agent in &state.agents {
            built.put_agent(agent.id.as_str(), agent_input(agent));
        }
        for framework in &state.frameworks {
            built.put_framework(framework.id.as_str(), Some(framework_input(framework)));
        }
        for task in &state.tasks {
            let (key, input) = task_input(task);
            built.put_task(key, Some(input));
        }
        built
    }
}

fn index(map: &mut BTreeMap<String, BTreeSet<TaskKey>>, id: &str, key: &TaskKey) {
    map.entry(id.to_owned()).or_default().insert(key.clone());
}

fn unindex(map: &mut BTreeMap<String, BTreeSet<TaskKey>>, id: &str, key: &TaskKey) {
    if let Some(keys) = map.get_mut(id) {
        keys.remove(key);
        if keys.is_empty() {
            map.remove(id);
        }
    }
}

/// An Atoll agent as naming sees it; `None` when it is not part of the cluster right now.
/// Unreachable and gone agents are left out as Mesos leaves them out of `slaves` (their tasks
/// are not running anyway). Recovered ones (known after a master restart, not yet back) stay:
/// their tasks most likely still run, and dropping their names for the few seconds until they
/// re-register would make every name flap on a master fail-over.
pub fn agent_input(agent: &model::Agent) -> Option<AgentInput> {
    match agent.state {
        AgentState::Active
        | AgentState::Draining
        | AgentState::Drained
        | AgentState::Recovered
        | AgentState::Deactivated => {}
        AgentState::Unreachable | AgentState::Gone => return None,
    }
    let ip = agent.address.ip().to_canonical();
    // An agent bound to the wildcard address is reachable at none of it; its host name may
    // still be an address.
    let ips = if ip.is_unspecified() { agent.hostname.parse::<IpAddr>().ok().into_iter().collect() } else { vec![ip] };
    Some(AgentInput { ips, port: Some(agent.address.port()) })
}

/// An Atoll framework as naming sees it. Atoll does not learn where an outside scheduler runs
/// beyond the `hostname` it declares, so only an IP there gives it an address (and no SRV: no
/// scheduler port is known, as for a Mesos framework without a PID).
pub fn framework_input(framework: &model::Framework) -> FrameworkInput {
    let host = if framework.hosted {
        FrameworkHost::Leader
    } else {
        let ips = framework.info.hostname.parse::<IpAddr>().map(|ip| ip.to_canonical()).ok().into_iter().collect();
        FrameworkHost::Address { ips, port: None }
    };
    FrameworkInput { name: framework.info.name.clone(), host }
}

/// An Atoll task as naming sees it. Atoll's task IPs are the addresses of its own network
/// namespace: the `netinfo` source; the agent's address is the `host` source.
pub fn task_input(task: &model::Task) -> (TaskKey, TaskInput) {
    let key = TaskKey { framework_id: task.framework_id.0.clone(), task_id: task.id.0.clone(), occurrence: 0 };
    let labels = |labels: &model::Labels| labels.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    let discovery = task.discovery.as_ref().map(|d| Discovery {
        name: d.name.clone(),
        ports: d
            .ports
            .iter()
            .map(|p| DiscoveryPort {
                number: u64::from(p.number),
                name: p.name.clone(),
                protocol: p.protocol.clone(),
                labels: labels(&p.labels),
            })
            .collect(),
    });
    let input = TaskInput {
        id: task.id.0.clone(),
        name: task.name.clone(),
        agent_id: task.agent_id.0.clone(),
        state: task.state,
        has_health_check: task.health_check.is_some(),
        healthy: task.healthy,
        ips: TaskIps {
            netinfo: task.ip_addresses.iter().map(|ip| ip.to_canonical()).collect(),
            docker: Vec::new(),
            mesos: Vec::new(),
        },
        ports: task.ports.clone(),
        discovery,
        labels: labels(&task.labels),
    };
    (key, input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(agent: &str) -> TaskInput {
        TaskInput {
            id: "t".into(),
            name: "web".into(),
            agent_id: agent.into(),
            state: TaskState::Running,
            has_health_check: false,
            healthy: None,
            ips: TaskIps::default(),
            ports: vec![],
            discovery: None,
            labels: vec![],
        }
    }

    #[test]
    fn reverse_indexes_follow_moves_and_removals() {
        let mut model = Model::new();
        let key = TaskKey { framework_id: "f".into(), task_id: "t".into(), occurrence: 0 };
        assert!(model.put_task(key.clone(), Some(task("a1"))));
        assert!(!model.put_task(key.clone(), Some(task("a1"))), "an equal task is no change");
        assert_eq!(model.tasks_on_agent("a1").count(), 1);
        assert!(model.put_task(key.clone(), Some(task("a2"))));
        assert_eq!(model.tasks_on_agent("a1").count(), 0);
        assert_eq!(model.tasks_on_agent("a2").count(), 1);
        assert_eq!(model.tasks_of_framework("f").count(), 1);
        assert!(model.put_task(key.clone(), None));
        assert!(!model.put_task(key, None));
        assert_eq!(model.tasks_on_agent("a2").count(), 0);
        assert_eq!(model.tasks_of_framework("f").count(), 0);
    }

    #[test]
    fn health() {
        let mut t = task("a");
        assert!(t.is_healthy_enough(), "no check");
        t.has_health_check = true;
        assert!(!t.is_healthy_enough(), "check without a verdict yet");
        t.healthy = Some(true);
        assert!(t.is_healthy_enough());
        t.healthy = Some(false);
        assert!(!t.is_healthy_enough());
    }
}
