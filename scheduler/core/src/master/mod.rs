//! The master's decision core: agents, frameworks, offers and tasks, and the event log they
//! produce.
//!
//! Every input (an agent registering, a framework call, an operator request, the passing of
//! time) is a method call with `now` as an argument; every consequence is an [`Output`]
//! collected in order and taken by the I/O shell with [`Master::take_outputs`]. The shell
//! persists the events of a batch before it delivers any message, so nothing a framework or
//! agent hears about can be lost by a crash. The core holds no sockets, no clock and no RNG.

mod ipam;
mod types;
mod vips;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use atoll_proto::model::{
    Agent, AgentId, AgentState, App, AppId, Capability, ClusterState, Deployment, DrainConfig, Event, EventKind,
    ExecutorId, Framework, FrameworkId, FrameworkInfo, OfferId, Reason, Resources, Source, Task, TaskId, TaskInfo,
    TaskState, TaskStatus, Time, VipAssignment,
};

use crate::allocator::{Allocation, Allocator};

pub use ipam::{AgentNetworks, PoolView, SubnetView, TaskLease};
pub use types::*;

type TaskKey = (FrameworkId, TaskId);

struct AgentEntry {
    /// The public view; `used` is recomputed whenever the view is read.
    view: Agent,
    conn: Option<ConnId>,
    last_seen: Time,
    unreachable_since: Option<Time>,
    /// Non-terminal tasks on the agent.
    tasks: BTreeSet<TaskKey>,
}

struct FrameworkEntry {
    view: Framework,
    conn: Option<ConnId>,
    disconnected_at: Option<Time>,
}

struct Offer {
    framework_id: FrameworkId,
    agent_id: AgentId,
    resources: Resources,
    created: Time,
}

/// What the registry held when the master stopped; see [`Master::recover`].
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The index of the last event written.
    pub last_index: u64,
    pub agents: Vec<Agent>,
    pub frameworks: Vec<Framework>,
    pub tasks: Vec<Task>,
    pub apps: Vec<App>,
    pub deployments: Vec<Deployment>,
    /// The IP pools with their subnet leases (None: a registry from before IPAM).
    pub pools: Option<atoll_ipam::Pools>,
    pub vips: Vec<VipAssignment>,
    /// Role weights operators set at run time (`UPDATE_WEIGHTS`); they win over configured ones.
    pub weights: BTreeMap<String, f64>,
}

/// The master's whole domain state. One owner (the shell's master task) drives it.
pub struct Master {
    config: MasterConfig,
    /// Unique per master run, so ids minted by different runs never collide.
    run_id: String,
    counter: u64,
    last_index: u64,
    agents: BTreeMap<AgentId, AgentEntry>,
    frameworks: BTreeMap<FrameworkId, FrameworkEntry>,
    tasks: BTreeMap<TaskKey, Task>,
    /// Terminal tasks per framework, oldest first, for the retention window.
    completed: BTreeMap<FrameworkId, VecDeque<TaskId>>,
    offers: BTreeMap<OfferId, Offer>,
    /// Kept for the built-in services framework, which owns their meaning; the master keeps
    /// them in its log and registry so they are durable and everyone sees them.
    apps: BTreeMap<AppId, App>,
    deployments: BTreeMap<String, Deployment>,
    /// IP pools and the subnet each agent holds (see `ipam.rs`).
    ipam: atoll_ipam::Pools,
    /// Named VIPs and their addresses (see `vips.rs`).
    vips: BTreeMap<(String, String), VipAssignment>,
    vip_allocator: atoll_lb_core::vips::VipAllocator,
    removed_frameworks: BTreeSet<FrameworkId>,
    /// Kills asked for while the task's agent was away, sent when it re-registers.
    pending_kills: BTreeMap<TaskKey, Option<f64>>,
    allocator: Allocator,
    /// Weights operators set at run time, kept so they outlive restarts and win over the
    /// configured ones.
    operator_weights: BTreeMap<String, f64>,
    agent_conns: BTreeMap<ConnId, AgentId>,
    framework_conns: BTreeMap<ConnId, FrameworkId>,
    /// Agents whose free resources changed since the last allocation.
    dirty_agents: BTreeSet<AgentId>,
    /// Something changed that may interest every agent (a framework came or revived).
    full_allocation_due: bool,
    next_full_allocation: Time,
    outbox: Vec<Output>,
}

impl Master {
    /// A master with an empty registry.
    pub fn new(config: MasterConfig, run_id: impl Into<String>, now: Time) -> Master {
        Master::recover(config, run_id, Recovered::default(), now)
    }

    /// A master that starts from what the registry held. Agents must re-register (until then
    /// they are `RECOVERED` and get no offers; silent ones become unreachable after the usual
    /// silence limit, counted from now); frameworks are disconnected until they re-subscribe
    /// (their failover timeout counts from now); tasks keep their state and resources.
    pub fn recover(config: MasterConfig, run_id: impl Into<String>, registry: Recovered, now: Time) -> Master {
        let allocator = Allocator::new(config.allocator.clone());
        let mut master = Master {
            run_id: run_id.into(),
            counter: 0,
            last_index: registry.last_index,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            tasks: BTreeMap::new(),
            completed: BTreeMap::new(),
            offers: BTreeMap::new(),
            apps: registry.apps.into_iter().map(|a| (a.id.clone(), a)).collect(),
            deployments: registry.deployments.into_iter().map(|d| (d.id.clone(), d)).collect(),
            ipam: registry.pools.unwrap_or_default(),
            vip_allocator: Master::vip_allocator(&registry.vips).0,
            vips: registry.vips.into_iter().map(|v| ((v.framework.clone(), v.name.clone()), v)).collect(),
            removed_frameworks: BTreeSet::new(),
            pending_kills: BTreeMap::new(),
            allocator,
            operator_weights: BTreeMap::new(),
            agent_conns: BTreeMap::new(),
            framework_conns: BTreeMap::new(),
            dirty_agents: BTreeSet::new(),
            full_allocation_due: true,
            next_full_allocation: now,
            outbox: Vec::new(),
            config,
        };
        for (role, weight) in registry.weights {
            master.allocator.set_weight(&role, weight);
            master.operator_weights.insert(role, weight);
        }
        for agent in registry.agents {
            let gone = agent.state == AgentState::Gone;
            if !gone {
                master.allocator.add_agent(agent.id.clone(), agent.resources.clone());
                master.allocator.deactivate_agent(&agent.id);
            }
            let unreachable_since = (agent.state == AgentState::Unreachable).then_some(now);
            master.agents.insert(
                agent.id.clone(),
                AgentEntry { view: agent, conn: None, last_seen: now, unreachable_since, tasks: BTreeSet::new() },
            );
        }
        for framework in registry.frameworks {
            master.allocator.add_framework(framework.id.clone(), &framework.info.role, false);
            master.frameworks.insert(
                framework.id.clone(),
                FrameworkEntry { view: framework, conn: None, disconnected_at: Some(now) },
            );
        }
        let mut terminal: Vec<(Time, TaskKey)> = Vec::new();
        for task in registry.tasks {
            let key = (task.framework_id.clone(), task.id.clone());
            if task.state.is_terminal() {
                terminal.push((task.status.timestamp, key.clone()));
            } else if let Some(agent) = master.agents.get_mut(&task.agent_id) {
                agent.tasks.insert(key.clone());
                if agent.view.state != AgentState::Gone {
                    master.allocator.add_used(&task.agent_id, &task.framework_id, &task.resources);
                }
            }
            master.tasks.insert(key, task);
        }
        terminal.sort();
        for (_, (framework_id, task_id)) in terminal {
            master.completed.entry(framework_id).or_default().push_back(task_id);
        }
        let recovered: Vec<AgentId> = master
            .agents
            .iter()
            .filter(|(_, a)| !matches!(a.view.state, AgentState::Gone | AgentState::Unreachable))
            .map(|(id, _)| id.clone())
            .collect();
        for id in recovered {
            master.set_agent_state(&id, AgentState::Recovered, now);
        }
        // Tasks from before an assignment existed (or a lost one) get theirs now.
        let live: Vec<Task> = master.tasks.values().filter(|t| !t.state.is_terminal()).cloned().collect();
        for task in &live {
            master.assign_vips_for(task, now);
        }
        let connected: Vec<FrameworkId> =
            master.frameworks.iter().filter(|(_, f)| f.view.connected).map(|(id, _)| id.clone()).collect();
        for id in connected {
            if let Some(entry) = master.frameworks.get_mut(&id) {
                entry.view.connected = false;
                let framework = entry.view.clone();
                master.emit(now, EventKind::FrameworkUpdated { framework });
            }
        }
        master
    }

    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// Everything to do, in order, since the last call.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outbox)
    }

    /// The index of the last event produced.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    // ----- views -------------------------------------------------------------------------

    /// The whole state as of [`Master::last_index`].
    pub fn state(&self) -> ClusterState {
        ClusterState {
            index: self.last_index,
            agents: self.agents.keys().filter_map(|id| self.agent(id)).collect(),
            frameworks: self.frameworks.values().map(|f| f.view.clone()).collect(),
            tasks: self.tasks.values().cloned().collect(),
            apps: self.apps.values().cloned().collect(),
            deployments: self.deployments.values().cloned().collect(),
            pools: self.ipam.pools().cloned().collect(),
            vips: self.vips.values().cloned().collect(),
        }
    }

    pub fn apps(&self) -> impl Iterator<Item = &App> {
        self.apps.values()
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.deployments.values()
    }

    /// Records a change of an app or deployment (made by the services framework, which owns
    /// their meaning) in the event log. Other kinds of events are the master's own.
    pub fn record(&mut self, kind: EventKind, now: Time) -> Result<(), MasterError> {
        match &kind {
            EventKind::AppUpdated { app } => {
                self.apps.insert(app.id.clone(), app.clone());
            }
            EventKind::AppRemoved { app_id } => {
                self.apps.remove(app_id);
            }
            EventKind::DeploymentUpdated { deployment } => {
                self.deployments.insert(deployment.id.clone(), deployment.clone());
            }
            EventKind::DeploymentFinished { deployment, .. } => {
                self.deployments.remove(&deployment.id);
            }
            other => return Err(MasterError::NotRecordable(other.name())),
        }
        self.emit(now, kind);
        Ok(())
    }

    pub fn agent(&self, id: &AgentId) -> Option<Agent> {
        let entry = self.agents.get(id)?;
        let mut view = entry.view.clone();
        view.used = self.used_on(entry);
        Some(view)
    }

    pub fn framework(&self, id: &FrameworkId) -> Option<&Framework> {
        self.frameworks.get(id).map(|f| &f.view)
    }

    pub fn task(&self, framework_id: &FrameworkId, task_id: &TaskId) -> Option<&Task> {
        self.tasks.get(&(framework_id.clone(), task_id.clone()))
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Finds a task by id alone, as operators name them.
    pub fn find_task(&self, task_id: &TaskId) -> Result<&Task, MasterError> {
        let found: Vec<&Task> = self.tasks.values().filter(|t| &t.id == task_id).collect();
        match found.as_slice() {
            [] => Err(MasterError::UnknownTask(task_id.clone())),
            [task] => Ok(task),
            many => {
                // Prefer the one live task when older, finished ones share its id.
                let live: Vec<&&Task> = many.iter().filter(|t| !t.state.is_terminal()).collect();
                if let [task] = live.as_slice() {
                    return Ok(task);
                }
                let names: Vec<String> = many.iter().map(|t| t.framework_id.to_string()).collect();
                Err(MasterError::AmbiguousTask(task_id.clone(), names.join(", ")))
            }
        }
    }

    /// How many agents are in each state (for metrics, without copying the state).
    pub fn agent_state_counts(&self) -> BTreeMap<AgentState, usize> {
        let mut counts = BTreeMap::new();
        for entry in self.agents.values() {
            *counts.entry(entry.view.state).or_default() += 1;
        }
        counts
    }

    /// How many known tasks are in each state.
    pub fn task_state_counts(&self) -> BTreeMap<TaskState, usize> {
        let mut counts = BTreeMap::new();
        for task in self.tasks.values() {
            *counts.entry(task.state).or_default() += 1;
        }
        counts
    }

    /// Frameworks connected and disconnected.
    pub fn framework_counts(&self) -> (usize, usize) {
        let connected = self.frameworks.values().filter(|f| f.view.connected).count();
        (connected, self.frameworks.len() - connected)
    }

    pub fn outstanding_offers(&self) -> usize {
        self.offers.len()
    }

    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// Sets a role's DRF weight from the configuration, unless an operator set that role's
    /// weight at run time (as Mesos, where weights updated through the API win over `--weights`).
    pub fn set_role_weight(&mut self, role: &str, weight: f64) {
        if !self.operator_weights.contains_key(&crate::allocator::normalize_role(role)) {
            self.allocator.set_weight(role, weight);
        }
    }

    /// Operators change role weights at run time (Mesos's `UPDATE_WEIGHTS`): all of them or
    /// none, saved with the batch, effective from the next allocation.
    pub fn update_weights(&mut self, weights: &[(String, f64)]) -> Result<(), MasterError> {
        for (role, weight) in weights {
            validate_role_name(role)?;
            if !(weight.is_finite() && *weight > 0.0) {
                return Err(MasterError::BadWeight { role: role.clone(), weight: weight.to_string() });
            }
        }
        for (role, weight) in weights {
            self.allocator.set_weight(role, *weight);
            self.operator_weights.insert(crate::allocator::normalize_role(role), *weight);
        }
        self.outbox.push(Output::SaveWeights(self.operator_weights.clone()));
        self.full_allocation_due = true;
        Ok(())
    }

    /// Every role whose weight was set, configured or at run time, with that weight.
    pub fn role_weights(&self) -> BTreeMap<String, f64> {
        self.allocator.weights()
    }

    fn used_on(&self, entry: &AgentEntry) -> Resources {
        let mut used = Resources::new();
        for key in &entry.tasks {
            if let Some(task) = self.tasks.get(key) {
                used.add(&task.resources);
            }
        }
        used
    }

    // ----- agents ------------------------------------------------------------------------

    /// An agent connects (first time: no id) or comes back (with its id and its tasks).
    pub fn register_agent(
        &mut self,
        conn: ConnId,
        registration: AgentRegistration,
        now: Time,
    ) -> Result<AgentId, MasterError> {
        let AgentRegistration { agent_id, info, version, tasks } = registration;
        if info.hostname.trim().is_empty() {
            return Err(MasterError::BadAgentInfo("hostname must not be empty".into()));
        }
        if info.address.port() == 0 {
            return Err(MasterError::BadAgentInfo("address must have a port".into()));
        }
        let known = agent_id.as_ref().and_then(|id| self.agents.get(id).map(|a| (id.clone(), a.view.state)));
        let agent_id = match known {
            Some((id, AgentState::Gone)) => {
                self.outbox.push(Output::ToAgent {
                    conn,
                    command: AgentCommand::Shutdown { message: format!("agent {id} was marked gone; register anew") },
                });
                return Err(MasterError::AgentGone(id));
            }
            Some((id, _)) => {
                self.reregister_known_agent(conn, &id, info, version, tasks, now);
                id
            }
            None => {
                // A brand-new agent, or one whose id this registry never saw (its history
                // was lost): either way it joins with the id it has, or a fresh one.
                let id = agent_id.unwrap_or_else(|| self.mint_agent_id());
                let view = Agent {
                    id: id.clone(),
                    hostname: info.hostname,
                    address: info.address,
                    resources: info.resources.clone(),
                    used: Resources::new(),
                    attributes: info.attributes,
                    state: AgentState::Active,
                    drain: false,
                    deactivated: false,
                    drain_config: None,
                    registered_at: now,
                    version,
                    subnets: Vec::new(),
                };
                self.allocator.add_agent(id.clone(), info.resources);
                self.agents.insert(
                    id.clone(),
                    AgentEntry {
                        view,
                        conn: Some(conn),
                        last_seen: now,
                        unreachable_since: None,
                        tasks: BTreeSet::new(),
                    },
                );
                self.agent_conns.insert(conn, id.clone());
                self.lease_subnets_for(&id);
                let agent = self.agent(&id).expect("just inserted");
                self.emit(now, EventKind::AgentAdded { agent });
                self.reconcile_reported_tasks(&id, tasks, now);
                id
            }
        };
        self.outbox.push(Output::ToAgent {
            conn,
            command: AgentCommand::Registered {
                agent_id: agent_id.clone(),
                heartbeat_interval: self.config.agent_ping_timeout,
                networks: self.agent_networks(&agent_id),
            },
        });
        self.dirty_agents.insert(agent_id.clone());
        Ok(agent_id)
    }

    fn reregister_known_agent(
        &mut self,
        conn: ConnId,
        id: &AgentId,
        info: atoll_proto::model::AgentInfo,
        version: String,
        tasks: Vec<ReportedTask>,
        now: Time,
    ) {
        let Some(entry) = self.agents.get_mut(id) else { return };
        if let Some(old) = entry.conn.replace(conn) {
            self.agent_conns.remove(&old);
            self.outbox.push(Output::CloseAgent { conn: old });
        }
        self.agent_conns.insert(conn, id.clone());
        entry.last_seen = now;
        entry.unreachable_since = None;
        let resources_changed = entry.view.resources != info.resources;
        let info_changed = resources_changed
            || entry.view.hostname != info.hostname
            || entry.view.address != info.address
            || entry.view.attributes != info.attributes
            || entry.view.version != version;
        entry.view.hostname = info.hostname;
        entry.view.address = info.address;
        entry.view.resources = info.resources.clone();
        entry.view.attributes = info.attributes;
        entry.view.version = version;
        if resources_changed {
            // The agent is known to the allocator unless it was gone, which returned above.
            let _ = self.allocator.update_agent_total(id, info.resources);
        }
        let subnets_before = self.agents.get(id).map(|a| a.view.subnets.clone()).unwrap_or_default();
        self.lease_subnets_for(id);
        let info_changed = info_changed || self.agents.get(id).is_some_and(|a| a.view.subnets != subnets_before);
        self.reconcile_reported_tasks(id, tasks, now);
        self.send_pending_kills(id);
        let state = self.settled_state(id);
        if state == AgentState::Active {
            self.allocator.activate_agent(id);
        }
        let state_changed = self.agents.get(id).is_some_and(|a| a.view.state != state);
        self.set_agent_state(id, state, now);
        if !state_changed && info_changed {
            // Changes of address or resources are news even when the state is not.
            if let Some(agent) = self.agent(id) {
                self.emit(now, EventKind::AgentUpdated { agent });
            }
        }
    }

    /// Makes the master's view of an agent's tasks agree with what the agent reports.
    fn reconcile_reported_tasks(&mut self, agent_id: &AgentId, reported: Vec<ReportedTask>, now: Time) {
        let Some(conn) = self.agents.get(agent_id).and_then(|a| a.conn) else { return };
        let mut seen: BTreeSet<TaskKey> = BTreeSet::new();
        for ReportedTask { framework_id, info, status } in reported {
            let key = (framework_id.clone(), info.task_id.clone());
            seen.insert(key.clone());
            let framework_live = self.frameworks.contains_key(&framework_id);
            if !framework_live {
                self.outbox.push(Output::ToAgent {
                    conn,
                    command: AgentCommand::ShutdownFramework { framework_id: framework_id.clone() },
                });
                continue;
            }
            if status.state.is_terminal() {
                // Its terminal update is on its way through the agent's retry queue.
                continue;
            }
            match self.tasks.get(&key) {
                Some(task) if !task.state.is_terminal() => {
                    if task.state != status.state || task.agent_id != *agent_id {
                        let was_unreachable = task.state == TaskState::Unreachable;
                        self.apply_agent_status(&key, agent_id, status.clone(), now);
                        if was_unreachable {
                            self.tell_framework_status(&key, now, Some(Reason::AgentReregistered));
                        }
                    }
                }
                Some(task)
                    if task.status.source == Source::Master
                        && matches!(task.state, TaskState::Lost | TaskState::Gone) =>
                {
                    // The master gave it up while the agent was away; it is alive after all.
                    self.readd_task(key.clone(), agent_id, info, status, now);
                    self.tell_framework_status(&key, now, Some(Reason::AgentReregistered));
                }
                Some(_) => {
                    // Ended by the master (e.g. its framework tore it down): end it for real.
                    self.outbox.push(Output::ToAgent {
                        conn,
                        command: AgentCommand::Kill {
                            framework_id,
                            task_id: info.task_id,
                            grace_secs: None,
                            max_grace_secs: None,
                        },
                    });
                }
                None => {
                    self.readd_task(key.clone(), agent_id, info, status, now);
                    self.tell_framework_status(&key, now, Some(Reason::AgentReregistered));
                }
            }
        }
        let missing: Vec<TaskKey> = self
            .agents
            .get(agent_id)
            .map(|a| a.tasks.iter().filter(|k| !seen.contains(*k)).cloned().collect())
            .unwrap_or_default();
        for key in missing {
            let Some(task) = self.tasks.get(&key) else { continue };
            let partition_aware = self.partition_aware(&key.0);
            let state = match (task.state, partition_aware) {
                (_, false) => TaskState::Lost,
                (TaskState::Staging, true) => TaskState::Dropped,
                (_, true) => TaskState::Gone,
            };
            let status = self.master_status(&key, state, now).with_reason(
                Reason::AgentReregistered,
                "the agent re-registered without this task (its launch was lost, or it was cleaned up)",
            );
            self.set_status_and_notify(&key, status, now);
        }
    }

    fn readd_task(&mut self, key: TaskKey, agent_id: &AgentId, info: TaskInfo, status: TaskStatus, now: Time) {
        let mut task = Task::launched(key.0.clone(), info, now);
        task.agent_id = agent_id.clone();
        task.set_status(status);
        let existed = self.tasks.contains_key(&key);
        if existed && let Some(queue) = self.completed.get_mut(&key.0) {
            queue.retain(|id| id != &key.1);
        }
        self.allocator.add_used(agent_id, &key.0, &task.resources);
        if let Some(entry) = self.agents.get_mut(agent_id) {
            entry.tasks.insert(key.clone());
        }
        self.tasks.insert(key, task.clone());
        self.assign_vips_for(&task, now);
        let kind = if existed { EventKind::TaskUpdated { task } } else { EventKind::TaskAdded { task } };
        self.emit(now, kind);
    }

    pub fn agent_heartbeat(&mut self, conn: ConnId, now: Time) -> Result<(), MasterError> {
        let id = self.agent_conns.get(&conn).cloned().ok_or(MasterError::AgentNotRegistered)?;
        if let Some(entry) = self.agents.get_mut(&id) {
            entry.last_seen = now;
        }
        Ok(())
    }

    /// The agent's stream ended. It stays registered (and its tasks running) until it has
    /// been silent for the silence limit; meanwhile it gets no offers.
    pub fn agent_disconnected(&mut self, conn: ConnId, now: Time) {
        let Some(id) = self.agent_conns.remove(&conn) else { return };
        if let Some(entry) = self.agents.get_mut(&id)
            && entry.conn == Some(conn)
        {
            entry.conn = None;
        }
        self.allocator.deactivate_agent(&id);
        self.rescind_offers(|o| o.agent_id == id, now);
    }

    /// A status update from the agent running the task (always with a uuid).
    pub fn status_update(
        &mut self,
        conn: ConnId,
        framework_id: FrameworkId,
        status: TaskStatus,
        now: Time,
    ) -> Result<(), MasterError> {
        let agent_id = self.agent_conns.get(&conn).cloned().ok_or(MasterError::AgentNotRegistered)?;
        if let Some(entry) = self.agents.get_mut(&agent_id) {
            entry.last_seen = now;
        }
        let key = (framework_id.clone(), status.task_id.clone());
        let ack_ourselves = |master: &mut Master, status: &TaskStatus| {
            if let Some(uuid) = status.uuid {
                master.outbox.push(Output::ToAgent {
                    conn,
                    command: AgentCommand::Acknowledge {
                        framework_id: framework_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid,
                    },
                });
            }
        };
        let Some(task) = self.tasks.get(&key) else {
            // Nobody to tell: acknowledge it so the agent stops re-sending, and stop the
            // task if it still runs.
            ack_ourselves(self, &status);
            if !status.state.is_terminal() {
                self.outbox.push(Output::ToAgent {
                    conn,
                    command: AgentCommand::Kill {
                        framework_id: framework_id.clone(),
                        task_id: status.task_id,
                        grace_secs: None,
                        max_grace_secs: None,
                    },
                });
            }
            return Ok(());
        };
        let duplicate = status.uuid.is_some() && task.status.uuid == status.uuid;
        if !duplicate {
            if task.state.is_terminal() {
                // The master already ended it (e.g. teardown); the agent's word comes late.
                ack_ourselves(self, &status);
                return Ok(());
            }
            self.apply_agent_status(&key, &agent_id, status.clone(), now);
        }
        match self.frameworks.get(&framework_id) {
            Some(f) => {
                if let Some(fconn) = f.conn {
                    self.outbox.push(Output::ToFramework { conn: fconn, event: SchedulerEvent::Update(status) });
                }
            }
            None => ack_ourselves(self, &status),
        }
        Ok(())
    }

    /// Takes the agent's status as the task's latest, with everything that follows from it.
    fn apply_agent_status(&mut self, key: &TaskKey, agent_id: &AgentId, status: TaskStatus, now: Time) {
        let Some(task) = self.tasks.get_mut(key) else { return };
        let became_terminal = !task.state.is_terminal() && status.state.is_terminal();
        task.agent_id = agent_id.clone();
        task.set_status(status);
        let task = task.clone();
        self.emit(now, EventKind::TaskUpdated { task });
        if became_terminal {
            self.task_ended(key, now);
        }
    }

    // ----- frameworks --------------------------------------------------------------------

    /// A framework subscribes (first time: no id) or fails over to a new connection.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        framework_id: Option<FrameworkId>,
        info: FrameworkInfo,
        hosted: bool,
        now: Time,
    ) -> Result<FrameworkId, MasterError> {
        if info.name.trim().is_empty() {
            return Err(MasterError::EmptyFrameworkName);
        }
        if let Some(id) = &framework_id {
            if self.removed_frameworks.contains(id) {
                return Err(MasterError::FrameworkRemoved(id.clone()));
            }
            if let Some(existing) = self.frameworks.get(id)
                && existing.view.info.role != info.role
            {
                return Err(MasterError::RoleChange {
                    framework: id.clone(),
                    from: existing.view.info.role.clone(),
                    to: info.role,
                });
            }
        }
        let id = match framework_id {
            Some(id) if self.frameworks.contains_key(&id) => {
                let entry = self.frameworks.get_mut(&id).expect("checked");
                if let Some(old) = entry.conn.replace(conn) {
                    self.framework_conns.remove(&old);
                    self.outbox.push(Output::ToFramework {
                        conn: old,
                        event: SchedulerEvent::Error("framework failed over to a new connection".into()),
                    });
                    self.outbox.push(Output::CloseFramework { conn: old });
                }
                entry.disconnected_at = None;
                entry.view.connected = true;
                entry.view.hosted = hosted;
                entry.view.info = info;
                let framework = entry.view.clone();
                self.framework_conns.insert(conn, id.clone());
                // Offers sent to the old connection are unknown to the new one.
                self.rescind_offers(|o| o.framework_id == id, now);
                self.allocator.activate_framework(&id);
                self.emit(now, EventKind::FrameworkUpdated { framework });
                id
            }
            requested => {
                let id = requested.unwrap_or_else(|| self.mint_framework_id());
                let framework =
                    Framework { id: id.clone(), info: info.clone(), connected: true, hosted, registered_at: now };
                self.allocator.add_framework(id.clone(), &info.role, true);
                self.frameworks.insert(
                    id.clone(),
                    FrameworkEntry { view: framework.clone(), conn: Some(conn), disconnected_at: None },
                );
                self.framework_conns.insert(conn, id.clone());
                self.emit(now, EventKind::FrameworkAdded { framework });
                id
            }
        };
        self.outbox.push(Output::ToFramework {
            conn,
            event: SchedulerEvent::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval: self.config.framework_heartbeat_interval,
            },
        });
        self.full_allocation_due = true;
        Ok(id)
    }

    /// The framework's event stream ended. Its tasks keep running for its failover timeout.
    pub fn framework_disconnected(&mut self, conn: ConnId, now: Time) {
        let Some(id) = self.framework_conns.remove(&conn) else { return };
        let Some(entry) = self.frameworks.get_mut(&id) else { return };
        if entry.conn != Some(conn) {
            return;
        }
        entry.conn = None;
        entry.disconnected_at = Some(now);
        entry.view.connected = false;
        let framework = entry.view.clone();
        self.allocator.deactivate_framework(&id);
        self.rescind_offers(|o| o.framework_id == id, now);
        self.emit(now, EventKind::FrameworkUpdated { framework });
        if self.failover_expired(&id, now) {
            self.remove_framework(&id, now);
        }
    }

    /// A call on an established subscription.
    pub fn framework_call(
        &mut self,
        conn: ConnId,
        framework_id: &FrameworkId,
        call: SchedulerCall,
        now: Time,
    ) -> Result<(), MasterError> {
        if self.removed_frameworks.contains(framework_id) {
            return Err(MasterError::FrameworkRemoved(framework_id.clone()));
        }
        let entry =
            self.frameworks.get(framework_id).ok_or_else(|| MasterError::UnknownFramework(framework_id.clone()))?;
        if entry.conn != Some(conn) {
            return Err(MasterError::NotSubscribed(framework_id.clone()));
        }
        match call {
            SchedulerCall::Accept { offer_ids, launches, groups, refuse } => {
                self.accept(conn, framework_id, offer_ids, launches, groups, refuse, now)
            }
            SchedulerCall::Decline { offer_ids, refuse } => {
                let until = now.saturating_add(refuse.unwrap_or(self.config.default_refuse));
                for offer_id in offer_ids {
                    if self.offers.get(&offer_id).is_some_and(|o| &o.framework_id == framework_id) {
                        let offer = self.offers.remove(&offer_id).expect("checked");
                        self.allocator.recover(&offer.agent_id, framework_id, &offer.resources, Some(until));
                    }
                }
            }
            SchedulerCall::Revive => {
                self.allocator.revive(framework_id);
                self.full_allocation_due = true;
            }
            SchedulerCall::Suppress => self.allocator.suppress(framework_id),
            SchedulerCall::Kill { task_id, grace_secs, .. } => {
                let key = (framework_id.clone(), task_id);
                self.kill(&key, grace_secs, conn, now);
            }
            SchedulerCall::Acknowledge { agent_id, task_id, uuid } => {
                let key = (framework_id.clone(), task_id.clone());
                let agent_id = self.tasks.get(&key).map(|t| t.agent_id.clone()).unwrap_or(agent_id);
                if let Some(agent_conn) = self.agents.get(&agent_id).and_then(|a| a.conn) {
                    self.outbox.push(Output::ToAgent {
                        conn: agent_conn,
                        command: AgentCommand::Acknowledge { framework_id: framework_id.clone(), task_id, uuid },
                    });
                }
            }
            SchedulerCall::Reconcile { tasks } => self.reconcile(conn, framework_id, tasks, now),
            SchedulerCall::Teardown => self.remove_framework(framework_id, now),
            SchedulerCall::Shutdown { executor_id, agent_id } => {
                let tasks = self.executor_tasks(framework_id, &agent_id, &executor_id)?;
                for key in tasks {
                    self.send_kill(&key, None);
                }
            }
            SchedulerCall::Message { agent_id, executor_id } => {
                self.executor_tasks(framework_id, &agent_id, &executor_id)?;
            }
            SchedulerCall::Request { requests } => {
                for (agent_id, _) in requests {
                    if let Some(agent_id) = agent_id
                        && !self.agents.contains_key(&agent_id)
                    {
                        return Err(MasterError::UnknownAgent(agent_id));
                    }
                }
            }
            SchedulerCall::UpdateFramework { info, suppressed_roles } => {
                self.update_framework(framework_id, info, &suppressed_roles, now)?;
            }
        }
        Ok(())
    }

    /// The live tasks of the framework's executor on the agent (a task launched on its own is
    /// its own executor, under its task id, as Mesos's command executor is).
    fn executor_tasks(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        executor_id: &ExecutorId,
    ) -> Result<Vec<TaskKey>, MasterError> {
        let agent = self.agents.get(agent_id).ok_or_else(|| MasterError::UnknownAgent(agent_id.clone()))?;
        let tasks: Vec<TaskKey> = agent
            .tasks
            .iter()
            .filter(|key| &key.0 == framework_id)
            .filter(|key| {
                self.tasks.get(*key).is_some_and(|task| match &task.executor_id {
                    Some(id) => id == executor_id,
                    None => task.id.as_str() == executor_id.as_str(),
                })
            })
            .cloned()
            .collect();
        if tasks.is_empty() {
            return Err(MasterError::UnknownExecutor {
                framework: framework_id.clone(),
                executor: executor_id.clone(),
                agent: agent_id.clone(),
            });
        }
        Ok(tasks)
    }

    /// UPDATE_FRAMEWORK: a subscribed framework changes its info in place. Its role, user and
    /// principal stay (the allocator's accounts and the agents' users hang on them).
    fn update_framework(
        &mut self,
        framework_id: &FrameworkId,
        info: FrameworkInfo,
        suppressed_roles: &[String],
        now: Time,
    ) -> Result<(), MasterError> {
        if info.name.trim().is_empty() {
            return Err(MasterError::EmptyFrameworkName);
        }
        let entry =
            self.frameworks.get(framework_id).ok_or_else(|| MasterError::UnknownFramework(framework_id.clone()))?;
        let old = &entry.view.info;
        let fixed = [
            ("role", &old.role, &info.role),
            ("user", &old.user, &info.user),
            ("principal", &old.principal, &info.principal),
        ];
        for (field, from, to) in fixed {
            if from != to {
                if field == "role" {
                    return Err(MasterError::RoleChange {
                        framework: framework_id.clone(),
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                return Err(MasterError::FrameworkFieldChange {
                    framework: framework_id.clone(),
                    field,
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
        let suppressed = suppressed_roles.iter().any(|r| r == &info.role);
        let entry = self.frameworks.get_mut(framework_id).expect("checked");
        let changed = entry.view.info != info;
        entry.view.info = info;
        let framework = entry.view.clone();
        if suppressed {
            self.allocator.suppress(framework_id);
        } else {
            self.allocator.unsuppress(framework_id);
            self.full_allocation_due = true;
        }
        if changed {
            self.emit(now, EventKind::FrameworkUpdated { framework });
        }
        Ok(())
    }

    // One call's parts, as the scheduler API has them.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        conn: ConnId,
        framework_id: &FrameworkId,
        offer_ids: Vec<OfferId>,
        launches: Vec<TaskInfo>,
        groups: Vec<TaskGroup>,
        refuse: Option<Duration>,
        now: Time,
    ) {
        let mut problem: Option<String> = None;
        let mut agent: Option<AgentId> = None;
        let mut unique = BTreeSet::new();
        for offer_id in &offer_ids {
            if !unique.insert(offer_id.clone()) {
                problem = Some(format!("offer {offer_id} is given twice"));
                break;
            }
            match self.offers.get(offer_id) {
                None => {
                    problem = Some(format!("offer {offer_id} is no longer valid (expired, rescinded or used)"));
                    break;
                }
                Some(o) if &o.framework_id != framework_id => {
                    problem = Some(format!("offer {offer_id} was made to another framework"));
                    break;
                }
                Some(o) => match &agent {
                    Some(a) if a != &o.agent_id => {
                        problem = Some("offers span more than one agent".to_owned());
                        break;
                    }
                    _ => agent = Some(o.agent_id.clone()),
                },
            }
        }
        if offer_ids.is_empty() {
            problem = Some("no offers given".into());
        }
        if let Some(problem) = problem {
            // The valid offers among them go back untouched; every task is dropped.
            for offer_id in &offer_ids {
                if self.offers.get(offer_id).is_some_and(|o| &o.framework_id == framework_id) {
                    let offer = self.offers.remove(offer_id).expect("checked");
                    self.allocator.recover(&offer.agent_id, framework_id, &offer.resources, None);
                    self.dirty_agents.insert(offer.agent_id);
                }
            }
            let state = if self.partition_aware(framework_id) { TaskState::Dropped } else { TaskState::Lost };
            let grouped = groups.into_iter().flat_map(|g| g.tasks);
            for task in launches.into_iter().chain(grouped) {
                let status = TaskStatus::new(task.task_id, state, Source::Master, now)
                    .with_reason(Reason::InvalidOffers, problem.clone());
                self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Update(status) });
            }
            return;
        }
        let agent_id = agent.expect("at least one valid offer");
        let mut pool = Resources::new();
        for offer_id in &offer_ids {
            let offer = self.offers.remove(offer_id).expect("validated");
            pool.add(&offer.resources);
        }
        let mut in_this_call = BTreeSet::new();
        for task in launches {
            let invalid = self.launch_problem(framework_id, &agent_id, &task, &pool, &mut in_this_call);
            if let Some(message) = invalid {
                let status = TaskStatus::new(task.task_id, TaskState::Error, Source::Master, now)
                    .with_reason(Reason::TaskInvalid, message);
                self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Update(status) });
                continue;
            }
            pool.subtract(&task.resources);
            self.launch(framework_id, &agent_id, task, None, now);
        }
        for group in groups {
            match self.group_problem(framework_id, &agent_id, &group, &pool, &mut in_this_call) {
                Some(message) => {
                    for task in group.tasks {
                        let status = TaskStatus::new(task.task_id, TaskState::Error, Source::Master, now)
                            .with_reason(Reason::TaskGroupInvalid, message.clone());
                        self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Update(status) });
                    }
                }
                None => {
                    let executor_running = !self.live_group(framework_id, &agent_id, &group.executor_id).is_empty();
                    for (i, mut task) in group.tasks.into_iter().enumerate() {
                        if i == 0 && !executor_running {
                            task.resources.add(&group.executor_resources);
                        }
                        pool.subtract(&task.resources);
                        self.launch(framework_id, &agent_id, task, Some(group.executor_id.clone()), now);
                    }
                }
            }
        }
        let until = now.saturating_add(refuse.unwrap_or(self.config.default_refuse));
        self.allocator.recover(&agent_id, framework_id, &pool, Some(until));
        self.dirty_agents.insert(agent_id);
    }

    /// Why a task group cannot launch from `pool`, if it cannot: any of its tasks, its executor,
    /// or all of it together not fitting. Nothing is changed either way.
    fn group_problem(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        group: &TaskGroup,
        pool: &Resources,
        in_this_call: &mut BTreeSet<TaskId>,
    ) -> Option<String> {
        let executor = group.executor_id.as_str();
        if executor.trim().is_empty() || executor.contains(['/', '\0']) || executor == "." || executor == ".." {
            return Some(format!("executor_id `{executor}` must be non-empty without '/' or NUL, nor '.' or '..'"));
        }
        if group.tasks.is_empty() {
            return Some("a task group needs at least one task".into());
        }
        let executor_running = !self.live_group(framework_id, agent_id, &group.executor_id).is_empty();
        let mut needed = Resources::new();
        if !executor_running {
            if let Err(e) = pool.check_kinds(&group.executor_resources) {
                return Some(format!("executor resources: {e}"));
            }
            needed.add(&group.executor_resources);
        }
        for task in &group.tasks {
            let mut fits = pool.clone();
            fits.subtract(&needed);
            if let Some(problem) = self.launch_problem(framework_id, agent_id, task, &fits, in_this_call) {
                return Some(format!("task `{}`: {problem}", task.task_id));
            }
            needed.add(&task.resources);
        }
        None
    }

    /// The live tasks of a task group's executor on an agent.
    fn live_group(&self, framework_id: &FrameworkId, agent_id: &AgentId, executor_id: &ExecutorId) -> Vec<TaskKey> {
        let Some(agent) = self.agents.get(agent_id) else { return Vec::new() };
        agent
            .tasks
            .iter()
            .filter(|key| &key.0 == framework_id)
            .filter(|key| {
                self.tasks
                    .get(*key)
                    .is_some_and(|t| !t.state.is_terminal() && t.executor_id.as_ref() == Some(executor_id))
            })
            .cloned()
            .collect()
    }

    /// Records a validated task (its resources already taken from the offers) and sends it to
    /// its agent.
    fn launch(
        &mut self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        task: TaskInfo,
        executor_id: Option<ExecutorId>,
        now: Time,
    ) {
        let framework = self.frameworks.get(framework_id).map(|f| f.view.clone()).expect("checked by caller");
        let agent_conn = self.agents.get(agent_id).and_then(|a| a.conn);
        let key = (framework_id.clone(), task.task_id.clone());
        let mut added = Task::launched(framework_id.clone(), task.clone(), now);
        added.executor_id = executor_id;
        if self.tasks.contains_key(&key) {
            // The id belonged to a finished task; the new one replaces its record.
            if let Some(queue) = self.completed.get_mut(framework_id) {
                queue.retain(|id| id != &key.1);
            }
        }
        self.tasks.insert(key.clone(), added.clone());
        if let Some(entry) = self.agents.get_mut(agent_id) {
            entry.tasks.insert(key.clone());
        }
        self.assign_vips_for(&added, now);
        self.emit(now, EventKind::TaskAdded { task: added });
        match agent_conn {
            Some(agent_conn) => self
                .outbox
                .push(Output::ToAgent { conn: agent_conn, command: AgentCommand::Launch { framework, task } }),
            None => {
                let state = if self.partition_aware(framework_id) { TaskState::Dropped } else { TaskState::Lost };
                let status = self
                    .master_status(&key, state, now)
                    .with_reason(Reason::AgentDisconnected, "the agent disconnected before the launch");
                self.set_status_and_notify(&key, status, now);
            }
        }
    }

    fn launch_problem(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        task: &TaskInfo,
        pool: &Resources,
        in_this_call: &mut BTreeSet<TaskId>,
    ) -> Option<String> {
        if task.task_id.as_str().trim().is_empty() {
            return Some("task_id must not be empty".into());
        }
        if task.task_id.as_str().contains(['/', '\0']) || task.task_id.as_str() == "." || task.task_id.as_str() == ".."
        {
            return Some(format!("task_id `{}` must not contain '/' or NUL, nor be '.' or '..'", task.task_id));
        }
        if !in_this_call.insert(task.task_id.clone()) {
            return Some(format!("task_id `{}` appears twice in this call", task.task_id));
        }
        let key = (framework_id.clone(), task.task_id.clone());
        if self.tasks.get(&key).is_some_and(|t| !t.state.is_terminal()) {
            return Some(format!("task_id `{}` is already in use by a live task", task.task_id));
        }
        if task.name.trim().is_empty() {
            return Some("name must not be empty".into());
        }
        if &task.agent_id != agent_id {
            return Some(format!("agent_id `{}` is not the agent of the offers (`{agent_id}`)", task.agent_id));
        }
        if task.resources.is_empty() {
            return Some("a task must use some resources".into());
        }
        if let Err(e) = pool.check_kinds(&task.resources) {
            return Some(e.to_string());
        }
        if !pool.contains(&task.resources) {
            return Some(format!(
                "resources {} are not available in the offers (left: {})",
                task.resources,
                if pool.is_empty() { "nothing".to_owned() } else { pool.to_string() }
            ));
        }
        if let Some(problem) = task.command.problem() {
            return Some(problem);
        }
        if task.kill_grace_period_secs.is_some_and(|g| !g.is_finite() || g < 0.0) {
            return Some("kill_policy.grace_period must be a non-negative duration".into());
        }
        None
    }

    fn kill(&mut self, key: &TaskKey, grace_secs: Option<f64>, reply_to: ConnId, now: Time) {
        let Some(task) = self.tasks.get(key) else {
            let state = if self.partition_aware(&key.0) { TaskState::Unknown } else { TaskState::Lost };
            let status = TaskStatus::new(key.1.clone(), state, Source::Master, now)
                .with_reason(Reason::Reconciliation, "the master does not know this task");
            self.outbox.push(Output::ToFramework { conn: reply_to, event: SchedulerEvent::Update(status) });
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        self.send_kill(key, grace_secs);
    }

    fn send_kill(&mut self, key: &TaskKey, grace_secs: Option<f64>) {
        let Some(task) = self.tasks.get(key) else { return };
        let grace = grace_secs.or(task.kill_grace_period_secs);
        let agent = self.agents.get(&task.agent_id);
        let max_grace_secs = agent
            .filter(|a| a.view.drain)
            .and_then(|a| a.view.drain_config)
            .and_then(|config| config.max_grace_period_secs);
        match agent.and_then(|a| a.conn) {
            Some(conn) => self.outbox.push(Output::ToAgent {
                conn,
                command: AgentCommand::Kill {
                    framework_id: key.0.clone(),
                    task_id: key.1.clone(),
                    grace_secs: grace,
                    max_grace_secs,
                },
            }),
            // The agent is away; the kill is carried out when it comes back.
            None => {
                self.pending_kills.insert(key.clone(), grace);
            }
        }
    }

    fn send_pending_kills(&mut self, agent_id: &AgentId) {
        let keys: Vec<TaskKey> = self
            .pending_kills
            .keys()
            .filter(|k| self.tasks.get(*k).is_some_and(|t| &t.agent_id == agent_id))
            .cloned()
            .collect();
        for key in keys {
            let grace = self.pending_kills.remove(&key).flatten();
            if self.tasks.get(&key).is_some_and(|t| !t.state.is_terminal()) {
                self.send_kill(&key, grace);
            }
        }
    }

    fn reconcile(
        &mut self,
        conn: ConnId,
        framework_id: &FrameworkId,
        asked: Vec<(TaskId, Option<AgentId>)>,
        now: Time,
    ) {
        let mut answers = Vec::new();
        if asked.is_empty() {
            for task in self.tasks.values().filter(|t| &t.framework_id == framework_id && !t.state.is_terminal()) {
                answers.push(self.reconciliation_status(task, now));
            }
        } else {
            for (task_id, _agent) in asked {
                match self.tasks.get(&(framework_id.clone(), task_id.clone())) {
                    Some(task) => answers.push(self.reconciliation_status(task, now)),
                    None => {
                        let state =
                            if self.partition_aware(framework_id) { TaskState::Unknown } else { TaskState::Lost };
                        answers.push(
                            TaskStatus::new(task_id, state, Source::Master, now)
                                .with_reason(Reason::Reconciliation, "the master does not know this task"),
                        );
                    }
                }
            }
        }
        for status in answers {
            self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Update(status) });
        }
    }

    fn reconciliation_status(&self, task: &Task, now: Time) -> TaskStatus {
        let mut status = task.status.clone();
        status.uuid = None;
        status.source = Source::Master;
        status.reason = Some(Reason::Reconciliation);
        status.timestamp = now;
        status
    }

    /// Ends a framework: its tasks are killed on their agents and marked killed at once.
    fn remove_framework(&mut self, framework_id: &FrameworkId, now: Time) {
        let Some(entry) = self.frameworks.remove(framework_id) else { return };
        if let Some(conn) = entry.conn {
            self.framework_conns.remove(&conn);
            self.outbox.push(Output::CloseFramework { conn });
        }
        self.rescind_offers(|o| &o.framework_id == framework_id, now);
        let live: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, t)| &k.0 == framework_id && !t.state.is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        let mut agents_told = BTreeSet::new();
        for key in &live {
            let agent_id = self.tasks[key].agent_id.clone();
            if agents_told.insert(agent_id.clone())
                && let Some(conn) = self.agents.get(&agent_id).and_then(|a| a.conn)
            {
                self.outbox.push(Output::ToAgent {
                    conn,
                    command: AgentCommand::ShutdownFramework { framework_id: framework_id.clone() },
                });
            }
            let status = self
                .master_status(key, TaskState::Killed, now)
                .with_reason(Reason::FrameworkRemoved, "the framework was removed");
            self.set_status_and_notify(key, status, now);
        }
        self.allocator.remove_framework(framework_id);
        self.removed_frameworks.insert(framework_id.clone());
        self.emit(now, EventKind::FrameworkRemoved { framework_id: framework_id.clone() });
    }

    fn failover_expired(&self, framework_id: &FrameworkId, now: Time) -> bool {
        let Some(entry) = self.frameworks.get(framework_id) else { return false };
        let Some(since) = entry.disconnected_at else { return false };
        if entry.conn.is_some() {
            return false;
        }
        let timeout = entry.view.info.failover_timeout_secs;
        let timeout = if timeout.is_finite() && timeout > 0.0 {
            Duration::from_secs_f64(timeout.min(1e9))
        } else {
            Duration::ZERO
        };
        now.saturating_since(since) >= timeout
    }

    // ----- operator ----------------------------------------------------------------------

    /// Stops offering the agent and kills its tasks gracefully (within `config`'s maximum
    /// grace period, if any); it stays drained until reactivated, or is marked gone once
    /// drained if `config` says so.
    pub fn drain_agent(&mut self, agent_id: &AgentId, config: DrainConfig, now: Time) -> Result<Agent, MasterError> {
        let entry = self.agents.get_mut(agent_id).ok_or_else(|| MasterError::UnknownAgent(agent_id.clone()))?;
        if entry.view.state == AgentState::Gone {
            return Err(MasterError::AgentGone(agent_id.clone()));
        }
        if let Some(max) = config.max_grace_period_secs
            && !(max.is_finite() && max >= 0.0)
        {
            return Err(MasterError::BadDrain(format!("max_grace_period {max} is not a duration >= 0")));
        }
        entry.view.drain_config = Some(config);
        let tasks: Vec<TaskKey> = entry.tasks.iter().cloned().collect();
        self.allocator.deactivate_agent(agent_id);
        self.rescind_offers(|o| &o.agent_id == agent_id, now);
        self.set_operator_intent(agent_id, Intent::Drain, now);
        for key in &tasks {
            self.send_kill(key, None);
        }
        self.mark_gone_if_drained(agent_id, now);
        Ok(self.agent(agent_id).expect("exists"))
    }

    /// A drain asked to mark the agent gone once drained: now it is.
    fn mark_gone_if_drained(&mut self, agent_id: &AgentId, now: Time) {
        let drained = self.agents.get(agent_id).is_some_and(|a| {
            a.view.state == AgentState::Drained && a.view.drain_config.is_some_and(|config| config.mark_gone)
        });
        if drained {
            let _ = self.mark_agent_gone(agent_id, now);
        }
    }

    /// Stops offering the agent while its tasks keep running (Mesos's `DEACTIVATE_AGENT`);
    /// it stays deactivated until reactivated.
    pub fn deactivate_agent(&mut self, agent_id: &AgentId, now: Time) -> Result<Agent, MasterError> {
        let entry = self.agents.get(agent_id).ok_or_else(|| MasterError::UnknownAgent(agent_id.clone()))?;
        if entry.view.state == AgentState::Gone {
            return Err(MasterError::AgentGone(agent_id.clone()));
        }
        self.allocator.deactivate_agent(agent_id);
        self.rescind_offers(|o| &o.agent_id == agent_id, now);
        self.set_operator_intent(agent_id, Intent::Deactivate, now);
        Ok(self.agent(agent_id).expect("exists"))
    }

    /// Ends a drain or a deactivation: the agent is offered again.
    pub fn reactivate_agent(&mut self, agent_id: &AgentId, now: Time) -> Result<Agent, MasterError> {
        let entry = self.agents.get_mut(agent_id).ok_or_else(|| MasterError::UnknownAgent(agent_id.clone()))?;
        if entry.view.state == AgentState::Gone {
            return Err(MasterError::AgentGone(agent_id.clone()));
        }
        self.set_operator_intent(agent_id, Intent::Reactivate, now);
        if self.agents.get(agent_id).is_some_and(|a| a.view.state == AgentState::Active) {
            self.allocator.activate_agent(agent_id);
            self.dirty_agents.insert(agent_id.clone());
        }
        Ok(self.agent(agent_id).expect("exists"))
    }

    /// An operator kills a task by id (with its own grace period).
    pub fn operator_kill(&mut self, task_id: &TaskId, now: Time) -> Result<Task, MasterError> {
        let task = self.find_task(task_id)?.clone();
        if task.state.is_terminal() {
            return Err(MasterError::TaskTerminal(task_id.clone()));
        }
        let key = (task.framework_id.clone(), task.id.clone());
        let _ = now;
        self.send_kill(&key, None);
        Ok(task)
    }

    // ----- time --------------------------------------------------------------------------

    /// Runs every timer that is due at `now` and allocates what changed (and, every
    /// allocation interval, everything).
    pub fn tick(&mut self, now: Time) {
        self.expire_agents(now);
        self.expire_frameworks(now);
        self.expire_offers(now);
        self.allocate(now);
    }

    fn expire_agents(&mut self, now: Time) {
        let silence = self.config.agent_silence_limit();
        let gone_after = self.config.agent_gone_timeout;
        let mut to_unreachable = Vec::new();
        let mut to_gone = Vec::new();
        for (id, entry) in &self.agents {
            match entry.view.state {
                AgentState::Gone => {}
                AgentState::Unreachable => {
                    if entry.unreachable_since.is_some_and(|t| now.saturating_since(t) >= gone_after) {
                        to_gone.push(id.clone());
                    }
                }
                _ => {
                    if now.saturating_since(entry.last_seen) >= silence {
                        to_unreachable.push(id.clone());
                    }
                }
            }
        }
        for id in to_unreachable {
            self.mark_unreachable(&id, now);
        }
        for id in to_gone {
            self.mark_gone(&id, now);
        }
    }

    fn mark_unreachable(&mut self, agent_id: &AgentId, now: Time) {
        let Some(entry) = self.agents.get_mut(agent_id) else { return };
        entry.unreachable_since = Some(now);
        if let Some(conn) = entry.conn.take() {
            self.agent_conns.remove(&conn);
            self.outbox.push(Output::CloseAgent { conn });
        }
        let tasks: Vec<TaskKey> = entry.tasks.iter().cloned().collect();
        self.allocator.deactivate_agent(agent_id);
        self.rescind_offers(|o| &o.agent_id == agent_id, now);
        self.set_agent_state(agent_id, AgentState::Unreachable, now);
        for key in tasks {
            let state = if self.partition_aware(&key.0) { TaskState::Unreachable } else { TaskState::Lost };
            let status = self.master_status(&key, state, now).with_reason(
                Reason::AgentDisconnected,
                format!("agent {agent_id} has not been heard from for {:?}", self.config.agent_silence_limit()),
            );
            self.set_status_and_notify(&key, status, now);
        }
        let conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
        for conn in conns {
            self.outbox
                .push(Output::ToFramework { conn, event: SchedulerEvent::Failure { agent_id: agent_id.clone() } });
        }
    }

    fn mark_gone(&mut self, agent_id: &AgentId, now: Time) {
        self.remove_gone_agent(
            agent_id,
            TaskState::Gone,
            Reason::AgentRemoved,
            &format!("agent {agent_id} stayed unreachable and was marked gone"),
            now,
        );
    }

    /// An operator says the agent is gone for good (Mesos's `MARK_AGENT_GONE`): its tasks are
    /// TASK_GONE_BY_OPERATOR, its resources leave the allocator, and it may not come back.
    pub fn mark_agent_gone(&mut self, agent_id: &AgentId, now: Time) -> Result<Agent, MasterError> {
        let entry = self.agents.get(agent_id).ok_or_else(|| MasterError::UnknownAgent(agent_id.clone()))?;
        if entry.view.state == AgentState::Gone {
            return Err(MasterError::AgentGone(agent_id.clone()));
        }
        self.rescind_offers(|o| &o.agent_id == agent_id, now);
        self.remove_gone_agent(
            agent_id,
            TaskState::GoneByOperator,
            Reason::AgentRemovedByOperator,
            &format!("agent {agent_id} was marked gone by an operator"),
            now,
        );
        Ok(self.agent(agent_id).expect("exists"))
    }

    fn remove_gone_agent(&mut self, agent_id: &AgentId, state: TaskState, reason: Reason, message: &str, now: Time) {
        let Some(entry) = self.agents.get(agent_id) else { return };
        let tasks: Vec<TaskKey> = entry.tasks.iter().cloned().collect();
        for key in tasks {
            let status = self.master_status(&key, state, now).with_reason(reason, message.to_owned());
            self.set_status_and_notify(&key, status, now);
        }
        self.allocator.remove_agent(agent_id);
        self.release_subnets_of(agent_id);
        self.set_agent_state(agent_id, AgentState::Gone, now);
    }

    fn expire_frameworks(&mut self, now: Time) {
        let expired: Vec<FrameworkId> =
            self.frameworks.keys().filter(|id| self.failover_expired(id, now)).cloned().collect();
        for id in expired {
            self.remove_framework(&id, now);
        }
    }

    fn expire_offers(&mut self, now: Time) {
        let Some(timeout) = self.config.offer_timeout else { return };
        self.rescind_offers(|o| now.saturating_since(o.created) >= timeout, now);
    }

    fn allocate(&mut self, now: Time) {
        let allocations = if self.full_allocation_due || now >= self.next_full_allocation {
            self.full_allocation_due = false;
            self.dirty_agents.clear();
            self.next_full_allocation = now.saturating_add(self.config.allocation_interval);
            self.allocator.allocate(now)
        } else if !self.dirty_agents.is_empty() {
            let agents: Vec<AgentId> = std::mem::take(&mut self.dirty_agents).into_iter().collect();
            self.allocator.allocate_agents(&agents, now)
        } else {
            return;
        };
        self.make_offers(allocations, now);
    }

    fn make_offers(&mut self, allocations: Vec<Allocation>, now: Time) {
        let mut per_framework: BTreeMap<FrameworkId, Vec<OfferView>> = BTreeMap::new();
        for Allocation { framework, agent, resources } in allocations {
            let reachable = self.frameworks.get(&framework).is_some_and(|f| f.conn.is_some())
                && self.agents.get(&agent).is_some_and(|a| a.conn.is_some());
            if !reachable {
                self.allocator.recover(&agent, &framework, &resources, None);
                continue;
            }
            let id = self.mint_offer_id();
            let (f, a) = (&self.frameworks[&framework], &self.agents[&agent]);
            let view = OfferView {
                id: id.clone(),
                framework_id: framework.clone(),
                agent_id: agent.clone(),
                hostname: a.view.hostname.clone(),
                agent_address: a.view.address,
                attributes: a.view.attributes.clone(),
                resources: resources.clone(),
                role: f.view.info.role.clone(),
            };
            self.offers.insert(id, Offer { framework_id: framework.clone(), agent_id: agent, resources, created: now });
            per_framework.entry(framework).or_default().push(view);
        }
        for (framework_id, offers) in per_framework {
            if let Some(conn) = self.frameworks.get(&framework_id).and_then(|f| f.conn) {
                self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Offers(offers) });
            }
        }
    }

    fn rescind_offers(&mut self, which: impl Fn(&Offer) -> bool, _now: Time) {
        let ids: Vec<OfferId> = self.offers.iter().filter(|(_, o)| which(o)).map(|(id, _)| id.clone()).collect();
        for id in ids {
            let offer = self.offers.remove(&id).expect("listed");
            self.allocator.recover(&offer.agent_id, &offer.framework_id, &offer.resources, None);
            self.dirty_agents.insert(offer.agent_id.clone());
            if let Some(conn) = self.frameworks.get(&offer.framework_id).and_then(|f| f.conn) {
                self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Rescind(id) });
            }
        }
    }

    // ----- shared steps ------------------------------------------------------------------

    /// A status the master itself sets (unreachable, lost, killed by teardown, …).
    fn master_status(&self, key: &TaskKey, state: TaskState, now: Time) -> TaskStatus {
        let mut status = TaskStatus::new(key.1.clone(), state, Source::Master, now);
        if let Some(task) = self.tasks.get(key) {
            status.agent_id = Some(task.agent_id.clone());
            status.healthy = task.healthy;
            status.ip_addresses = task.ip_addresses.clone();
        }
        status
    }

    /// Sets a master-originated status, records it and tells the framework (no uuid: the
    /// master keeps no retry queue; frameworks reconcile).
    fn set_status_and_notify(&mut self, key: &TaskKey, status: TaskStatus, now: Time) {
        let Some(task) = self.tasks.get_mut(key) else { return };
        if task.state.is_terminal() {
            return;
        }
        let became_terminal = status.state.is_terminal();
        task.set_status(status.clone());
        let task = task.clone();
        self.emit(now, EventKind::TaskUpdated { task });
        if became_terminal {
            self.task_ended(key, now);
        }
        if let Some(conn) = self.frameworks.get(&key.0).and_then(|f| f.conn) {
            self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Update(status) });
        }
    }

    /// Tells the framework the task's current status (after an agent came back).
    fn tell_framework_status(&mut self, key: &TaskKey, now: Time, reason: Option<Reason>) {
        let Some(task) = self.tasks.get(key) else { return };
        let mut status = task.status.clone();
        status.uuid = None;
        status.source = Source::Master;
        status.reason = reason;
        status.timestamp = now;
        if let Some(conn) = self.frameworks.get(&key.0).and_then(|f| f.conn) {
            self.outbox.push(Output::ToFramework { conn, event: SchedulerEvent::Update(status) });
        }
    }

    /// Book-keeping when a task turns terminal: free its resources, advance a drain, keep
    /// the completed-task window bounded.
    fn task_ended(&mut self, key: &TaskKey, now: Time) {
        let Some(task) = self.tasks.get(key) else { return };
        let agent_id = task.agent_id.clone();
        let resources = task.resources.clone();
        if let Some(executor_id) = task.executor_id.clone()
            && task.state != TaskState::Finished
        {
            // A task group lives and dies whole, as under Mesos's default executor.
            for sibling in self.live_group(&key.0, &agent_id, &executor_id) {
                if self.tasks.get(&sibling).is_some_and(|t| t.state != TaskState::Killing) {
                    self.send_kill(&sibling, None);
                }
            }
        }
        self.pending_kills.remove(key);
        if let Some(entry) = self.agents.get_mut(&agent_id) {
            entry.tasks.remove(key);
            if entry.view.state != AgentState::Gone {
                self.allocator.recover(&agent_id, &key.0, &resources, None);
                self.dirty_agents.insert(agent_id.clone());
            }
        }
        if self.agents.get(&agent_id).is_some_and(|a| a.view.drain && a.view.state == AgentState::Draining) {
            let state = self.settled_state(&agent_id);
            self.set_agent_state(&agent_id, state, now);
            self.mark_gone_if_drained(&agent_id, now);
        }
        let queue = self.completed.entry(key.0.clone()).or_default();
        queue.push_back(key.1.clone());
        let limit = self.config.completed_tasks_per_framework;
        let mut forgotten = Vec::new();
        while queue.len() > limit {
            if let Some(old) = queue.pop_front() {
                forgotten.push(old);
            }
        }
        for task_id in forgotten {
            let old_key = (key.0.clone(), task_id.clone());
            if self.tasks.get(&old_key).is_some_and(|t| t.state.is_terminal()) {
                self.tasks.remove(&old_key);
                self.outbox.push(Output::ForgetTask { framework_id: key.0.clone(), task_id });
            }
        }
    }

    /// The state a reachable agent should be in given the operator's drain or deactivation.
    fn settled_state(&self, agent_id: &AgentId) -> AgentState {
        let Some(entry) = self.agents.get(agent_id) else { return AgentState::Gone };
        match entry.view.state {
            AgentState::Gone => AgentState::Gone,
            AgentState::Unreachable if entry.conn.is_none() => AgentState::Unreachable,
            AgentState::Recovered if entry.conn.is_none() => AgentState::Recovered,
            _ if entry.view.drain && entry.tasks.is_empty() => AgentState::Drained,
            _ if entry.view.drain => AgentState::Draining,
            _ if entry.view.deactivated => AgentState::Deactivated,
            _ => AgentState::Active,
        }
    }

    fn set_agent_state(&mut self, agent_id: &AgentId, state: AgentState, now: Time) {
        let Some(entry) = self.agents.get_mut(agent_id) else { return };
        if entry.view.state == state {
            return;
        }
        entry.view.state = state;
        if let Some(agent) = self.agent(agent_id) {
            self.emit(now, EventKind::AgentUpdated { agent });
        }
    }

    /// Sets the operator's wish for the agent and the state it yields, recording either
    /// change. A drain keeps a deactivation asked for before it: reactivating ends both.
    fn set_operator_intent(&mut self, agent_id: &AgentId, intent: Intent, now: Time) {
        let Some(entry) = self.agents.get_mut(agent_id) else { return };
        let (drain, deactivated) = match intent {
            Intent::Drain => (true, entry.view.deactivated),
            Intent::Deactivate => (entry.view.drain, true),
            Intent::Reactivate => (false, false),
        };
        if !drain {
            entry.view.drain_config = None;
        }
        let flag_changed = entry.view.drain != drain || entry.view.deactivated != deactivated;
        entry.view.drain = drain;
        entry.view.deactivated = deactivated;
        let state = self.settled_state(agent_id);
        let state_changed = self.agents.get(agent_id).is_some_and(|a| a.view.state != state);
        self.set_agent_state(agent_id, state, now);
        if flag_changed
            && !state_changed
            && let Some(agent) = self.agent(agent_id)
        {
            self.emit(now, EventKind::AgentUpdated { agent });
        }
    }

    fn partition_aware(&self, framework_id: &FrameworkId) -> bool {
        self.frameworks.get(framework_id).is_some_and(|f| f.view.info.has(Capability::PartitionAware))
    }

    fn emit(&mut self, now: Time, kind: EventKind) {
        self.last_index += 1;
        self.outbox.push(Output::Event(Event { index: self.last_index, timestamp: now, kind }));
    }

    fn mint(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn mint_agent_id(&mut self) -> AgentId {
        let n = self.mint();
        AgentId(format!("{}-S{n}", self.run_id))
    }

    fn mint_framework_id(&mut self) -> FrameworkId {
        let n = self.mint();
        FrameworkId(format!("{}-{n:04}", self.run_id))
    }

    fn mint_offer_id(&mut self) -> OfferId {
        let n = self.mint();
        OfferId(format!("{}-O{n}", self.run_id))
    }
}

/// What an operator asked of an agent.
#[derive(Clone, Copy)]
enum Intent {
    Drain,
    Deactivate,
    Reactivate,
}

#[cfg(test)]
mod tests;

/// Mesos's rules for role names: no empty name or path component, none that is `.` or `..` or
/// starts with `-`, no whitespace, backslash or control characters, and not `*` (the default
/// role has no weight of its own).
pub fn validate_role_name(role: &str) -> Result<(), MasterError> {
    let bad = |why: &str| Err(MasterError::BadRole { role: role.to_owned(), why: why.to_owned() });
    if role.is_empty() {
        return bad("it is empty");
    }
    if role == "*" {
        return bad("`*` is the default role");
    }
    if role.starts_with('/') || role.ends_with('/') {
        return bad("it starts or ends with `/`");
    }
    if let Some(c) = role.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '\\') {
        return bad(&format!("it contains {c:?}"));
    }
    for part in role.split('/') {
        if part.is_empty() {
            return bad("it has an empty path component");
        }
        if part == "." || part == ".." {
            return bad(&format!("a path component is `{part}`"));
        }
        if part.starts_with('-') {
            return bad("a path component starts with `-`");
        }
    }
    Ok(())
}
