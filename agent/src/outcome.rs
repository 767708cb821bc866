//! How a task ended, as a Mesos terminal status: a pure function of what the agent knows once
//! the executor is gone (its exit record, whether a kill was asked for, whether the kernel's
//! OOM killer struck, and agent-side launch failures).

use atoll_proto::model::{AgentId, Reason, Scalar, Source, TaskId, TaskState, TaskStatus, Time};

use crate::executor::ExitRecord;
use crate::launch::signal_name;

/// Everything the terminal status is derived from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExitFacts {
    /// What the executor recorded; `None` when it died without writing one.
    pub record: Option<ExitRecord>,
    pub kill_requested: bool,
    /// The kill arrived before the task was announced running.
    pub killed_during_launch: bool,
    pub oom_killed: bool,
    /// The task's memory limit, for the OOM message.
    pub memory_limit_mib: Option<f64>,
    /// The agent could not start or hear from the executor (spawn failed, no announcement).
    pub agent_failure: Option<String>,
    /// The kill was the agent's, after the health check failed this many times in a row.
    pub health_check_failures: Option<u32>,
}

/// Identity and stamp of the update being made.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub task_id: TaskId,
    pub agent_id: AgentId,
    pub now: Time,
    pub uuid: uuid::Uuid,
}

impl Stamp {
    /// A status with the stamp's identity, ready for its state-specific fields.
    pub fn status(&self, state: TaskState, source: Source) -> TaskStatus {
        let mut status = TaskStatus::new(self.task_id.clone(), state, source, self.now);
        status.agent_id = Some(self.agent_id.clone());
        status.uuid = Some(self.uuid);
        status
    }
}

/// The terminal status for a task whose executor is gone. A requested kill explains any end;
/// then agent-side launch failures, the executor's launch error, an OOM kill, and finally the
/// command's own exit status.
pub fn terminal_status(facts: &ExitFacts, stamp: &Stamp) -> TaskStatus {
    let record = facts.record.as_ref();
    let exit_code = record.and_then(|r| r.exit_code);
    let exit_signal = record.and_then(|r| r.signal);
    let with_exit = |mut status: TaskStatus| {
        status.exit_code = exit_code;
        status.exit_signal = exit_signal;
        status
    };
    if facts.kill_requested {
        if facts.killed_during_launch {
            return with_exit(
                stamp
                    .status(TaskState::Killed, Source::Agent)
                    .with_reason(Reason::TaskKilledDuringLaunch, "Task killed before it started"),
            );
        }
        let mut status = with_exit(stamp.status(TaskState::Killed, Source::Executor));
        status.message = Some(match (facts.health_check_failures, exit_signal) {
            (Some(n), _) => {
                status.healthy = Some(false);
                format!("task was killed because its health check failed {n} times in a row")
            }
            (None, Some(signal)) => format!("Command terminated by signal {}", signal_name(signal)),
            (None, None) => "Task killed".to_owned(),
        });
        return status;
    }
    if let Some(message) = &facts.agent_failure {
        return stamp.status(TaskState::Failed, Source::Agent).with_reason(Reason::ContainerLaunchFailed, message);
    }
    if let Some(message) = record.and_then(|r| r.launch_error.as_ref()) {
        return stamp.status(TaskState::Failed, Source::Agent).with_reason(Reason::ContainerLaunchFailed, message);
    }
    if facts.oom_killed {
        let message = match facts.memory_limit_mib {
            Some(mib) => format!("memory limit of {} MiB exceeded", Scalar::from_f64(mib)),
            None => "memory limit exceeded".to_owned(),
        };
        return with_exit(
            stamp.status(TaskState::Failed, Source::Agent).with_reason(Reason::ContainerLimitationMemory, message),
        );
    }
    match (record, exit_code, exit_signal) {
        (Some(_), Some(0), _) => {
            let mut status = with_exit(stamp.status(TaskState::Finished, Source::Executor));
            status.message = Some("Command exited with status 0".to_owned());
            status
        }
        (Some(_), Some(code), _) => {
            let mut status = with_exit(stamp.status(TaskState::Failed, Source::Executor));
            status.message = Some(format!("Command exited with status {code}"));
            status
        }
        (Some(_), None, Some(signal)) => {
            let mut status = with_exit(stamp.status(TaskState::Failed, Source::Executor));
            status.message = Some(format!("Command terminated by signal {}", signal_name(signal)));
            status
        }
        (Some(_), None, None) => stamp
            .status(TaskState::Failed, Source::Agent)
            .with_reason(Reason::ExecutorTerminated, "The executor recorded neither an exit status nor a signal"),
        (None, _, _) => stamp
            .status(TaskState::Failed, Source::Agent)
            .with_reason(Reason::ExecutorTerminated, "The executor exited without recording how the task ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp { task_id: TaskId::new("t1"), agent_id: AgentId::new("a1"), now: Time(5), uuid: uuid::Uuid::from_u128(7) }
    }

    fn exited(code: Option<i32>, signal: Option<i32>) -> Option<ExitRecord> {
        Some(ExitRecord { pid: Some(10), exit_code: code, signal, launch_error: None, finished_at_ms: 1 })
    }

    type Summary<'a> = (TaskState, Option<Reason>, Option<&'a str>, Source, Option<i32>, Option<i32>);

    fn summary(s: &TaskStatus) -> Summary<'_> {
        (s.state, s.reason, s.message.as_deref(), s.source, s.exit_code, s.exit_signal)
    }

    #[test]
    fn exit_status_decides_finished_or_failed() {
        let s = terminal_status(&ExitFacts { record: exited(Some(0), None), ..Default::default() }, &stamp());
        assert_eq!(
            summary(&s),
            (TaskState::Finished, None, Some("Command exited with status 0"), Source::Executor, Some(0), None)
        );
        assert_eq!(
            (s.uuid, s.agent_id.as_ref().map(AgentId::as_str), s.timestamp),
            (Some(uuid::Uuid::from_u128(7)), Some("a1"), Time(5))
        );

        let s = terminal_status(&ExitFacts { record: exited(Some(3), None), ..Default::default() }, &stamp());
        assert_eq!(
            summary(&s),
            (TaskState::Failed, None, Some("Command exited with status 3"), Source::Executor, Some(3), None)
        );

        let s = terminal_status(&ExitFacts { record: exited(None, Some(9)), ..Default::default() }, &stamp());
        assert_eq!(
            summary(&s),
            (TaskState::Failed, None, Some("Command terminated by signal SIGKILL"), Source::Executor, None, Some(9))
        );
    }

    #[test]
    fn kill_request_explains_any_end() {
        for record in [exited(None, Some(15)), exited(Some(0), None), None] {
            let facts = ExitFacts { record, kill_requested: true, oom_killed: true, ..Default::default() };
            assert_eq!(terminal_status(&facts, &stamp()).state, TaskState::Killed);
        }
        let facts = ExitFacts { record: exited(None, Some(15)), kill_requested: true, ..Default::default() };
        let s = terminal_status(&facts, &stamp());
        assert_eq!((s.message.as_deref(), s.healthy), (Some("Command terminated by signal SIGTERM"), None));
        let health = ExitFacts { health_check_failures: Some(3), ..facts };
        let s = terminal_status(&health, &stamp());
        assert_eq!(
            (s.state, s.healthy, s.message.as_deref(), s.exit_signal),
            (
                TaskState::Killed,
                Some(false),
                Some("task was killed because its health check failed 3 times in a row"),
                Some(15)
            )
        );
        let during = ExitFacts { kill_requested: true, killed_during_launch: true, ..Default::default() };
        let s = terminal_status(&during, &stamp());
        assert_eq!(
            (s.state, s.reason, s.source),
            (TaskState::Killed, Some(Reason::TaskKilledDuringLaunch), Source::Agent)
        );
    }

    #[test]
    fn oom_is_a_memory_limitation() {
        let facts = ExitFacts {
            record: exited(None, Some(9)),
            oom_killed: true,
            memory_limit_mib: Some(32.0),
            ..Default::default()
        };
        let s = terminal_status(&facts, &stamp());
        assert_eq!(
            summary(&s),
            (
                TaskState::Failed,
                Some(Reason::ContainerLimitationMemory),
                Some("memory limit of 32 MiB exceeded"),
                Source::Agent,
                None,
                Some(9)
            )
        );
    }

    #[test]
    fn launch_failures_and_lost_executors() {
        let mut record = exited(None, None);
        if let Some(r) = record.as_mut() {
            r.launch_error = Some("failed to execute `nope`: No such file or directory".into());
            r.pid = None;
        }
        let s = terminal_status(&ExitFacts { record, ..Default::default() }, &stamp());
        assert_eq!((s.state, s.reason), (TaskState::Failed, Some(Reason::ContainerLaunchFailed)));
        assert_eq!(s.message.as_deref(), Some("failed to execute `nope`: No such file or directory"));

        let facts = ExitFacts { agent_failure: Some("executor did not start".into()), ..Default::default() };
        let s = terminal_status(&facts, &stamp());
        assert_eq!(
            (s.state, s.reason, s.source),
            (TaskState::Failed, Some(Reason::ContainerLaunchFailed), Source::Agent)
        );

        let s = terminal_status(&ExitFacts::default(), &stamp());
        assert_eq!((s.state, s.reason), (TaskState::Failed, Some(Reason::ExecutorTerminated)));
    }
}
