//! Tasks: what a framework asks to run (TaskInfo), how it is doing (TaskStatus, TaskState).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{AgentId, ExecutorId, FrameworkId, HealthCheck, Labels, NetworkRequest, Resources, TaskId, Time};

/// Mesos task states, with their Mesos names (`TASK_RUNNING`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_GONE_BY_OPERATOR")]
    GoneByOperator,
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

impl TaskState {
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// A terminal task never changes state again and holds no resources.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    /// The Mesos name, e.g. `TASK_RUNNING`.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    pub fn from_name(name: &str) -> Option<TaskState> {
        let wanted = name.to_ascii_uppercase();
        let wanted = if wanted.starts_with("TASK_") { wanted } else { format!("TASK_{wanted}") };
        TaskState::ALL.into_iter().find(|s| s.name() == wanted)
    }

    /// Whether a task may move from `self` to `next`. Terminal states are final; an
    /// unreachable task may come back to any live state when its agent returns.
    pub fn can_become(self, next: TaskState) -> bool {
        if self.is_terminal() {
            return false;
        }
        match next {
            TaskState::Staging => false,
            TaskState::Starting => matches!(self, TaskState::Staging | TaskState::Unreachable),
            TaskState::Running => !matches!(self, TaskState::Killing),
            TaskState::Killing => true,
            TaskState::Unreachable => true,
            TaskState::Unknown => false,
            _ => true,
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who produced a status update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    #[serde(rename = "SOURCE_MASTER")]
    Master,
    #[serde(rename = "SOURCE_AGENT")]
    Agent,
    #[serde(rename = "SOURCE_EXECUTOR")]
    Executor,
}

macro_rules! reasons {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Why a task reached its state (Mesos `TaskStatus.Reason`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Reason {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    CommandExecutorFailed => "REASON_COMMAND_EXECUTOR_FAILED",
    ContainerLaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
    ContainerLimitation => "REASON_CONTAINER_LIMITATION",
    ContainerLimitationDisk => "REASON_CONTAINER_LIMITATION_DISK",
    ContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
    ContainerPreempted => "REASON_CONTAINER_PREEMPTED",
    ExecutorRegistrationTimeout => "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
    ExecutorReregistrationTimeout => "REASON_EXECUTOR_REREGISTRATION_TIMEOUT",
    ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
    ExecutorUnregistered => "REASON_EXECUTOR_UNREGISTERED",
    FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
    GcError => "REASON_GC_ERROR",
    InvalidFrameworkId => "REASON_INVALID_FRAMEWORKID",
    InvalidOffers => "REASON_INVALID_OFFERS",
    MasterDisconnected => "REASON_MASTER_DISCONNECTED",
    Reconciliation => "REASON_RECONCILIATION",
    ResourcesUnknown => "REASON_RESOURCES_UNKNOWN",
    AgentDisconnected => "REASON_AGENT_DISCONNECTED",
    AgentRemoved => "REASON_AGENT_REMOVED",
    AgentRemovedByOperator => "REASON_AGENT_REMOVED_BY_OPERATOR",
    AgentReregistered => "REASON_AGENT_REREGISTERED",
    AgentRestarted => "REASON_AGENT_RESTARTED",
    AgentUnknown => "REASON_AGENT_UNKNOWN",
    AgentDraining => "REASON_AGENT_DRAINING",
    TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
    TaskCheckStatusUpdated => "REASON_TASK_CHECK_STATUS_UPDATED",
    TaskHealthCheckStatusUpdated => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
    TaskGroupInvalid => "REASON_TASK_GROUP_INVALID",
    TaskGroupUnauthorized => "REASON_TASK_GROUP_UNAUTHORIZED",
    TaskInvalid => "REASON_TASK_INVALID",
    TaskUnauthorized => "REASON_TASK_UNAUTHORIZED",
    TaskUnknown => "REASON_TASK_UNKNOWN",
    ContainerUpdateFailed => "REASON_CONTAINER_UPDATE_FAILED",
    IoSwitchboardExited => "REASON_IO_SWITCHBOARD_EXITED",
    MaxCompletionTimeReached => "REASON_MAX_COMPLETION_TIME_REACHED",
}

/// A task's state at one moment, as reported to its framework.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    pub timestamp: Time,
    /// Present on updates that must be acknowledged (agent-originated ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
}

impl TaskStatus {
    /// A status with only the required parts; the rest is filled with struct update syntax.
    pub fn new(task_id: TaskId, state: TaskState, source: Source, timestamp: Time) -> TaskStatus {
        TaskStatus {
            task_id,
            state,
            message: None,
            source,
            reason: None,
            agent_id: None,
            timestamp,
            uuid: None,
            healthy: None,
            ip_addresses: Vec::new(),
            executor_pid: None,
            exit_code: None,
            exit_signal: None,
        }
    }

    pub fn with_reason(mut self, reason: Reason, message: impl Into<String>) -> TaskStatus {
        self.reason = Some(reason);
        self.message = Some(message.into());
        self
    }
}

/// What to run: a shell command line, or an argv run directly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// With `shell` the value runs under `/bin/sh -c`; without it `value` is the executable
    /// and `arguments` the whole argv.
    pub shell: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl CommandInfo {
    pub fn shell(line: impl Into<String>) -> CommandInfo {
        CommandInfo { shell: true, value: line.into(), arguments: Vec::new(), environment: Vec::new(), user: None }
    }

    pub fn argv(argv: Vec<String>) -> CommandInfo {
        let value = argv.first().cloned().unwrap_or_default();
        CommandInfo { shell: false, value, arguments: argv, environment: Vec::new(), user: None }
    }

    /// Why this command cannot run, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.shell {
            if self.value.trim().is_empty() {
                return Some("command.value is empty".into());
            }
        } else if self.value.is_empty() {
            return Some("command.value (the executable) is empty".into());
        }
        if self.value.contains('\0') || self.arguments.iter().any(|a| a.contains('\0')) {
            return Some("command contains a NUL byte".into());
        }
        if let Some((name, _)) =
            self.environment.iter().find(|(n, _)| n.is_empty() || n.contains('=') || n.contains('\0'))
        {
            return Some(format!("command.environment has an invalid variable name `{name}`"));
        }
        None
    }

    /// A one-line human rendering.
    pub fn display(&self) -> String {
        if self.shell || self.arguments.is_empty() { self.value.clone() } else { self.arguments.join(" ") }
    }
}

/// A port a task exposes, for service discovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryPort {
    pub number: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// Mesos `DiscoveryInfo`: how a task wants to be found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    pub visibility: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<DiscoveryPort>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// A task as a framework launches it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: TaskId,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub command: CommandInfo,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryInfo>,
    /// Seconds between SIGTERM and SIGKILL when the task is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_period_secs: Option<f64>,
    /// Run by the agent next to the task; its verdict is the status's `healthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Container networks to join; empty means host networking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkRequest>,
}

/// A task as the cluster knows it: what was launched, where, and its latest status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub state: TaskState,
    pub resources: Resources,
    pub command: CommandInfo,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_period_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkRequest>,
    /// Host ports from the task's `ports` resource, lowest first.
    pub ports: Vec<u64>,
    /// The task's own addresses (empty for host networking).
    pub ip_addresses: Vec<IpAddr>,
    /// The health check verdict, when the task has one.
    pub healthy: Option<bool>,
    pub status: TaskStatus,
    /// The executor of the task group it was launched in (LAUNCH_GROUP); none for a task
    /// launched on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<ExecutorId>,
}

impl Task {
    /// The view of a just-launched task, before any status arrived.
    pub fn launched(framework_id: FrameworkId, info: TaskInfo, now: Time) -> Task {
        let mut status = TaskStatus::new(info.task_id.clone(), TaskState::Staging, Source::Master, now);
        status.agent_id = Some(info.agent_id.clone());
        let ports = info.resources.ranges("ports").values().collect();
        Task {
            id: info.task_id,
            name: info.name,
            framework_id,
            agent_id: info.agent_id,
            state: TaskState::Staging,
            resources: info.resources,
            command: info.command,
            labels: info.labels,
            discovery: info.discovery,
            kill_grace_period_secs: info.kill_grace_period_secs,
            health_check: info.health_check,
            networks: info.networks,
            ports,
            ip_addresses: Vec::new(),
            healthy: None,
            status,
            executor_id: None,
        }
    }

    /// Takes a new status as the latest one, keeping derived fields in step.
    pub fn set_status(&mut self, status: TaskStatus) {
        self.state = status.state;
        if status.healthy.is_some() {
            self.healthy = status.healthy;
        }
        if !status.ip_addresses.is_empty() {
            self.ip_addresses = status.ip_addresses.clone();
        }
        self.status = status;
    }

    pub fn info(&self) -> TaskInfo {
        TaskInfo {
            name: self.name.clone(),
            task_id: self.id.clone(),
            agent_id: self.agent_id.clone(),
            resources: self.resources.clone(),
            command: self.command.clone(),
            labels: self.labels.clone(),
            discovery: self.discovery.clone(),
            kill_grace_period_secs: self.kill_grace_period_secs,
            health_check: self.health_check.clone(),
            networks: self.networks.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip_through_serde_and_lookup() {
        for state in TaskState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.name()));
            assert_eq!(TaskState::from_name(state.name()), Some(state));
        }
        assert_eq!(TaskState::from_name("running"), Some(TaskState::Running));
        for reason in Reason::ALL {
            assert_eq!(serde_json::to_string(reason).unwrap(), format!("\"{}\"", reason.name()));
        }
    }

    #[test]
    fn commands_with_nothing_to_run_are_refused() {
        assert!(CommandInfo::shell("  ").problem().is_some());
        assert!(CommandInfo::argv(vec![]).problem().is_some());
        assert!(CommandInfo::argv(vec!["/bin/true".into()]).problem().is_none());
        let mut env = CommandInfo::shell("true");
        env.environment.push(("A=B".into(), "x".into()));
        assert!(env.problem().is_some());
    }
}
