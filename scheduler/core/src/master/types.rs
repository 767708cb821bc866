//! The master core's vocabulary: its configuration, the calls it takes, what it sends.

use std::time::Duration;

use atoll_proto::model::{
    AgentId, AgentInfo, Attributes, ExecutorId, Framework, FrameworkId, FrameworkInfo, OfferId, Resources, TaskId,
    TaskInfo, TaskStatus,
};

use super::ipam::AgentNetworks;
use crate::allocator::AllocatorConfig;

/// Timeouts and policies of the master; the I/O shell fills it from flags and TOML.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// How often agents heartbeat, and how long one heartbeat may be missing.
    pub agent_ping_timeout: Duration,
    /// Missed heartbeats after which an agent is unreachable (silent for timeout × this).
    pub max_agent_ping_timeouts: u32,
    /// How long an unreachable agent may stay away before it is marked gone and its tasks
    /// with it.
    pub agent_gone_timeout: Duration,
    /// Outstanding offers are rescinded after this long.
    pub offer_timeout: Option<Duration>,
    /// Filter applied when a framework declines or leaves resources unused without saying.
    pub default_refuse: Duration,
    /// Seconds between scheduler HEARTBEAT events, told to frameworks on subscription.
    pub framework_heartbeat_interval: Duration,
    /// Every agent gets a full allocation round this often (changes allocate at once).
    pub allocation_interval: Duration,
    /// Terminal tasks kept per framework for inspection; older ones are forgotten.
    pub completed_tasks_per_framework: usize,
    pub allocator: AllocatorConfig,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 3,
            agent_gone_timeout: Duration::from_secs(15 * 60),
            offer_timeout: Some(Duration::from_secs(60)),
            default_refuse: Duration::from_secs(5),
            framework_heartbeat_interval: Duration::from_secs(15),
            allocation_interval: Duration::from_secs(1),
            completed_tasks_per_framework: 1000,
            allocator: AllocatorConfig::default(),
        }
    }
}

impl MasterConfig {
    /// How long an agent may be silent before it is unreachable.
    pub fn agent_silence_limit(&self) -> Duration {
        self.agent_ping_timeout * self.max_agent_ping_timeouts.max(1)
    }
}

/// A connection (framework event stream or agent stream), numbered by the I/O shell. The
/// core only ever talks to connections, so a stale one is told apart from its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A scheduler call after decoding (everything but SUBSCRIBE).
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerCall {
    Accept {
        offer_ids: Vec<OfferId>,
        launches: Vec<TaskInfo>,
        /// Task groups (LAUNCH_GROUP): each launched whole or not at all.
        groups: Vec<TaskGroup>,
        refuse: Option<Duration>,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        refuse: Option<Duration>,
    },
    Revive,
    Suppress,
    Kill {
        task_id: TaskId,
        agent_id: Option<AgentId>,
        grace_secs: Option<f64>,
    },
    Acknowledge {
        agent_id: AgentId,
        task_id: TaskId,
        uuid: uuid::Uuid,
    },
    /// Empty `tasks` asks for every live task of the framework (implicit reconciliation).
    Reconcile {
        tasks: Vec<(TaskId, Option<AgentId>)>,
    },
    Teardown,
    /// Stop an executor: every task of the framework it runs on that agent is killed.
    Shutdown {
        executor_id: ExecutorId,
        agent_id: AgentId,
    },
    /// A message for an executor. Atoll's executors are its own (like Mesos's command and
    /// default executors), which take no framework messages, so it is checked and counted.
    Message {
        agent_id: AgentId,
        executor_id: ExecutorId,
    },
    /// A request for resources, which the allocator takes as Mesos's does: it decides alone.
    Request {
        requests: Vec<(Option<AgentId>, Resources)>,
    },
    /// The framework's info changes without a new subscription.
    UpdateFramework {
        info: FrameworkInfo,
        suppressed_roles: Vec<String>,
    },
}

impl SchedulerCall {
    /// The call's type as the scheduler API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SchedulerCall::Accept { .. } => "ACCEPT",
            SchedulerCall::Decline { .. } => "DECLINE",
            SchedulerCall::Revive => "REVIVE",
            SchedulerCall::Suppress => "SUPPRESS",
            SchedulerCall::Kill { .. } => "KILL",
            SchedulerCall::Acknowledge { .. } => "ACKNOWLEDGE",
            SchedulerCall::Reconcile { .. } => "RECONCILE",
            SchedulerCall::Teardown => "TEARDOWN",
            SchedulerCall::Shutdown { .. } => "SHUTDOWN",
            SchedulerCall::Message { .. } => "MESSAGE",
            SchedulerCall::Request { .. } => "REQUEST",
            SchedulerCall::UpdateFramework { .. } => "UPDATE_FRAMEWORK",
        }
    }
}

/// Tasks launched together by one executor (Mesos's LAUNCH_GROUP): all start or none, and one
/// that fails or is killed takes the others with it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskGroup {
    pub executor_id: ExecutorId,
    /// The executor's own resources, taken from the offer with the tasks' (unless that executor
    /// already runs there); they are accounted with the group's first task.
    pub executor_resources: Resources,
    pub tasks: Vec<TaskInfo>,
}

/// An offer as sent to a framework.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferView {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub agent_address: std::net::SocketAddr,
    pub attributes: Attributes,
    pub resources: Resources,
    pub role: String,
}

/// What the master sends a framework on its event stream.
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerEvent {
    Subscribed {
        framework_id: FrameworkId,
        heartbeat_interval: Duration,
    },
    Offers(Vec<OfferView>),
    Rescind(OfferId),
    Update(TaskStatus),
    /// An agent was lost (it became unreachable).
    Failure {
        agent_id: AgentId,
    },
    Error(String),
}

/// A task an agent still knows about when it (re-)registers.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedTask {
    pub framework_id: FrameworkId,
    pub info: TaskInfo,
    pub status: TaskStatus,
}

/// What the master tells an agent.
// Commands live only between the core and a socket; boxing the launch would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum AgentCommand {
    Registered {
        agent_id: AgentId,
        heartbeat_interval: Duration,
        networks: AgentNetworks,
    },
    /// The agent's subnets or reserved addresses changed.
    Networks {
        networks: AgentNetworks,
    },
    Launch {
        framework: Framework,
        task: TaskInfo,
    },
    Kill {
        framework_id: FrameworkId,
        task_id: TaskId,
        grace_secs: Option<f64>,
        /// The longest grace period the kill may take, whatever the task's or the agent's
        /// default (a drain's `max_grace_period`).
        max_grace_secs: Option<f64>,
    },
    Acknowledge {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: uuid::Uuid,
    },
    ShutdownFramework {
        framework_id: FrameworkId,
    },
    /// The master no longer knows this agent: kill everything and register anew.
    Shutdown {
        message: String,
    },
}

/// Something the I/O shell must do, in order, after persisting the events of the batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Append to the event log (and fold into the registry).
    Event(atoll_proto::model::Event),
    /// Drop a terminal task from the registry; it fell out of the completed-task window.
    ForgetTask {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    ToFramework {
        conn: ConnId,
        event: SchedulerEvent,
    },
    /// Close a framework stream (failed over to another connection, or removed).
    CloseFramework {
        conn: ConnId,
    },
    ToAgent {
        conn: ConnId,
        command: AgentCommand,
    },
    CloseAgent {
        conn: ConnId,
    },
    /// Persist the IP pools and their subnet leases (in the same commit as the batch).
    SavePools(Box<atoll_ipam::Pools>),
    /// Persist the role weights operators set at run time (in the same commit as the batch).
    SaveWeights(std::collections::BTreeMap<String, f64>),
    /// Something an operator should see in the master's log.
    Warning(String),
}

/// Why the master refused a request. Every variant maps to a 4xx / gRPC status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MasterError {
    #[error("unknown agent `{0}`")]
    UnknownAgent(AgentId),
    #[error("unknown framework `{0}`")]
    UnknownFramework(FrameworkId),
    #[error("framework `{0}` has been removed")]
    FrameworkRemoved(FrameworkId),
    #[error("connection is not subscribed as framework `{0}`")]
    NotSubscribed(FrameworkId),
    #[error("framework `{framework}` cannot change its role from `{from}` to `{to}`")]
    RoleChange { framework: FrameworkId, from: String, to: String },
    #[error("framework_info.name must not be empty")]
    EmptyFrameworkName,
    #[error("unknown task `{0}`")]
    UnknownTask(TaskId),
    #[error("task id `{0}` is ambiguous: it exists in frameworks {1}")]
    AmbiguousTask(TaskId, String),
    #[error("task `{0}` is already terminal")]
    TaskTerminal(TaskId),
    #[error("agent `{0}` is gone")]
    AgentGone(AgentId),
    #[error("connection is not registered as an agent")]
    AgentNotRegistered,
    #[error("agent_info: {0}")]
    BadAgentInfo(String),
    #[error("{0} events are the master's own; only app and deployment changes are recorded")]
    NotRecordable(&'static str),
    #[error(transparent)]
    Ipam(atoll_ipam::IpamError),
    #[error("drain_config: {0}")]
    BadDrain(String),
    #[error("framework `{framework}` cannot change its {field} (`{from}` to `{to}`)")]
    FrameworkFieldChange { framework: FrameworkId, field: &'static str, from: String, to: String },
    #[error("unknown executor `{executor}` of framework `{framework}` on agent `{agent}`")]
    UnknownExecutor { framework: FrameworkId, executor: ExecutorId, agent: AgentId },
    #[error("role `{role}`: {why}")]
    BadRole { role: String, why: String },
    #[error("role `{role}`: weight {weight} is not a number > 0")]
    BadWeight { role: String, weight: String },
    #[error("pool {pool} has {count} live task address(es) ({tasks}); stop those tasks first")]
    PoolInUse { pool: String, count: usize, tasks: String },
}

/// An agent's registration request.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRegistration {
    pub agent_id: Option<AgentId>,
    pub info: AgentInfo,
    pub version: String,
    pub tasks: Vec<ReportedTask>,
}
