//! The cluster event: one entry of the master's ordered, resumable event log.

use serde::{Deserialize, Serialize};

use super::{
    Agent, AgentId, App, AppId, Deployment, DeploymentOutcome, Framework, FrameworkId, PoolSpec, Task, Time,
    VipAssignment,
};

/// One change of cluster state, with its place in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing, without gaps, across master restarts.
    pub index: u64,
    pub timestamp: Time,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What changed. Each variant carries the whole entity, so a consumer never needs to ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    AgentAdded {
        agent: Agent,
    },
    AgentUpdated {
        agent: Agent,
    },
    AgentRemoved {
        agent_id: AgentId,
    },
    FrameworkAdded {
        framework: Framework,
    },
    FrameworkUpdated {
        framework: Framework,
    },
    FrameworkRemoved {
        framework_id: FrameworkId,
    },
    TaskAdded {
        task: Task,
    },
    TaskUpdated {
        task: Task,
    },
    /// An app was created or changed (a new version, or a new instance count).
    AppUpdated {
        app: App,
    },
    AppRemoved {
        app_id: AppId,
    },
    /// A deployment started or changed.
    DeploymentUpdated {
        deployment: Deployment,
    },
    DeploymentFinished {
        deployment: Deployment,
        outcome: DeploymentOutcome,
    },
    /// An IP pool was added or changed (network admins).
    PoolAdded {
        pool: PoolSpec,
    },
    PoolUpdated {
        pool: PoolSpec,
    },
    PoolRemoved {
        name: String,
    },
    /// A named VIP got its address (from the VIP pool), or gave it back.
    VipAssigned {
        vip: VipAssignment,
    },
    VipReleased {
        vip: VipAssignment,
    },
}

impl EventKind {
    /// The Mesos-style name, e.g. `TASK_UPDATED`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::AgentAdded { .. } => "AGENT_ADDED",
            EventKind::AgentUpdated { .. } => "AGENT_UPDATED",
            EventKind::AgentRemoved { .. } => "AGENT_REMOVED",
            EventKind::FrameworkAdded { .. } => "FRAMEWORK_ADDED",
            EventKind::FrameworkUpdated { .. } => "FRAMEWORK_UPDATED",
            EventKind::FrameworkRemoved { .. } => "FRAMEWORK_REMOVED",
            EventKind::TaskAdded { .. } => "TASK_ADDED",
            EventKind::TaskUpdated { .. } => "TASK_UPDATED",
            EventKind::AppUpdated { .. } => "APP_UPDATED",
            EventKind::AppRemoved { .. } => "APP_REMOVED",
            EventKind::DeploymentUpdated { .. } => "DEPLOYMENT_UPDATED",
            EventKind::DeploymentFinished { .. } => "DEPLOYMENT_FINISHED",
            EventKind::PoolAdded { .. } => "POOL_ADDED",
            EventKind::PoolUpdated { .. } => "POOL_UPDATED",
            EventKind::PoolRemoved { .. } => "POOL_REMOVED",
            EventKind::VipAssigned { .. } => "VIP_ASSIGNED",
            EventKind::VipReleased { .. } => "VIP_RELEASED",
        }
    }
}

/// The whole cluster state as of `index` (the last event applied).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub index: u64,
    pub agents: Vec<Agent>,
    pub frameworks: Vec<Framework>,
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub apps: Vec<App>,
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    #[serde(default)]
    pub vips: Vec<VipAssignment>,
}

impl ClusterState {
    /// Folds one event in; the projection every consumer starts from.
    pub fn apply(&mut self, event: &Event) {
        self.index = event.index;
        match &event.kind {
            EventKind::AgentAdded { agent } | EventKind::AgentUpdated { agent } => {
                upsert(&mut self.agents, agent.clone(), |a| a.id == agent.id)
            }
            EventKind::AgentRemoved { agent_id } => self.agents.retain(|a| &a.id != agent_id),
            EventKind::FrameworkAdded { framework } | EventKind::FrameworkUpdated { framework } => {
                upsert(&mut self.frameworks, framework.clone(), |f| f.id == framework.id)
            }
            EventKind::FrameworkRemoved { framework_id } => self.frameworks.retain(|f| &f.id != framework_id),
            EventKind::TaskAdded { task } | EventKind::TaskUpdated { task } => {
                upsert(&mut self.tasks, task.clone(), |t| t.id == task.id && t.framework_id == task.framework_id)
            }
            EventKind::AppUpdated { app } => upsert(&mut self.apps, app.clone(), |a| a.id == app.id),
            EventKind::AppRemoved { app_id } => self.apps.retain(|a| &a.id != app_id),
            EventKind::DeploymentUpdated { deployment } => {
                upsert(&mut self.deployments, deployment.clone(), |d| d.id == deployment.id)
            }
            EventKind::DeploymentFinished { deployment, .. } => self.deployments.retain(|d| d.id != deployment.id),
            EventKind::PoolAdded { pool } | EventKind::PoolUpdated { pool } => {
                upsert(&mut self.pools, pool.clone(), |p| p.name == pool.name)
            }
            EventKind::PoolRemoved { name } => self.pools.retain(|p| &p.name != name),
            EventKind::VipAssigned { vip } => {
                upsert(&mut self.vips, vip.clone(), |v| v.framework == vip.framework && v.name == vip.name)
            }
            EventKind::VipReleased { vip } => {
                self.vips.retain(|v| !(v.framework == vip.framework && v.name == vip.name))
            }
        }
    }
}

fn upsert<T>(items: &mut Vec<T>, item: T, same: impl Fn(&T) -> bool) {
    match items.iter_mut().find(|existing| same(existing)) {
        Some(existing) => *existing = item,
        None => items.push(item),
    }
}

/// What an event-stream subscriber receives.
// Messages are sent one at a time, so the size of the largest variant costs nothing, while
// boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamMessage {
    /// The whole state; live events with higher indexes follow.
    Snapshot {
        state: ClusterState,
    },
    Event {
        event: Event,
    },
    /// The subscriber asked for (or fell to) events the log no longer holds; a snapshot
    /// follows at once.
    FellBehind {
        requested: u64,
        oldest_retained: u64,
    },
    Heartbeat,
}
