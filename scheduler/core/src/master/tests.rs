//! Scenario and property tests of the master core: inputs in, outputs and events checked.

use std::net::SocketAddr;
use std::time::Duration;

use atoll_proto::model::{AgentInfo, Attributes, CommandInfo, Labels};
use proptest::prelude::*;

use super::*;

const AGENT_CONN: ConnId = ConnId(1);
const FW_CONN: ConnId = ConnId(100);

fn t(secs: f64) -> Time {
    Time((secs * 1000.0) as u64)
}

fn agent_info(port: u16) -> AgentInfo {
    AgentInfo {
        hostname: format!("host-{port}"),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        resources: "cpus:4;mem:4096;disk:1000;ports:[31000-31009]".parse().unwrap(),
        attributes: Attributes::default(),
    }
}

fn framework(name: &str, partition_aware: bool) -> FrameworkInfo {
    let mut info = FrameworkInfo::named(name);
    info.failover_timeout_secs = 60.0;
    if partition_aware {
        info.capabilities.push(Capability::PartitionAware);
    }
    info
}

fn task_info(id: &str, agent: &AgentId, resources: &str) -> TaskInfo {
    TaskInfo {
        name: id.to_owned(),
        task_id: TaskId::new(id),
        agent_id: agent.clone(),
        resources: resources.parse().unwrap(),
        command: CommandInfo::shell("sleep 100"),
        labels: Labels::default(),
        discovery: None,
        kill_grace_period_secs: None,
        health_check: None,
        networks: Vec::new(),
    }
}

/// A master with one agent and one subscribed framework, outputs drained.
struct Cluster {
    master: Master,
    agent: AgentId,
    framework: FrameworkId,
    events: Vec<Event>,
}

impl Cluster {
    fn new(partition_aware: bool) -> Cluster {
        let mut master = Master::new(MasterConfig::default(), "run", t(0.0));
        let agent = master
            .register_agent(
                AGENT_CONN,
                AgentRegistration { agent_id: None, info: agent_info(5051), version: "test".into(), tasks: vec![] },
                t(0.0),
            )
            .unwrap();
        let framework = master.subscribe(FW_CONN, None, framework("fw", partition_aware), false, t(0.0)).unwrap();
        let mut cluster = Cluster { master, agent, framework, events: Vec::new() };
        cluster.drain();
        cluster
    }

    /// Takes the outputs, keeping the events.
    fn drain(&mut self) -> Vec<Output> {
        let outputs = self.master.take_outputs();
        for output in &outputs {
            if let Output::Event(event) = output {
                self.events.push(event.clone());
            }
        }
        outputs
    }

    fn offers(&mut self, now: Time) -> Vec<OfferView> {
        self.master.tick(now);
        self.drain()
            .into_iter()
            .filter_map(|o| match o {
                Output::ToFramework { event: SchedulerEvent::Offers(offers), .. } => Some(offers),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn launch(&mut self, id: &str, resources: &str, now: Time) -> Vec<Output> {
        let offers = self.offers(now);
        assert!(!offers.is_empty(), "expected an offer");
        let call = SchedulerCall::Accept {
            offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
            launches: vec![task_info(id, &self.agent, resources)],
            groups: Vec::new(),
            refuse: Some(Duration::ZERO),
        };
        let framework = self.framework.clone();
        self.master.framework_call(FW_CONN, &framework, call, now).unwrap();
        self.drain()
    }

    fn update(&mut self, id: &str, state: TaskState, now: Time) -> Vec<Output> {
        let mut status = TaskStatus::new(TaskId::new(id), state, Source::Executor, now);
        status.uuid = Some(uuid::Uuid::new_v4());
        status.agent_id = Some(self.agent.clone());
        let framework = self.framework.clone();
        self.master.status_update(AGENT_CONN, framework, status, now).unwrap();
        self.drain()
    }

    fn task_state(&self, id: &str) -> TaskState {
        self.master.task(&self.framework, &TaskId::new(id)).unwrap().state
    }

    fn updates_to_framework(outputs: &[Output]) -> Vec<TaskStatus> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::ToFramework { event: SchedulerEvent::Update(s), .. } => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn offer_accept_launch_run_finish() {
    let mut c = Cluster::new(false);
    let out = c.launch("web", "cpus:1;mem:128;ports:[31000-31000]", t(1.0));
    assert!(
        out.iter().any(
            |o| matches!(o, Output::ToAgent { command: AgentCommand::Launch { .. }, conn } if *conn == AGENT_CONN)
        )
    );
    assert!(c.events.iter().any(|e| matches!(&e.kind, EventKind::TaskAdded { task } if task.state == TaskState::Staging && task.ports == vec![31000])));
    assert_eq!(c.master.agent(&c.agent).unwrap().used, "cpus:1;mem:128;ports:[31000-31000]".parse().unwrap());

    let out = c.update("web", TaskState::Running, t(2.0));
    assert_eq!(Cluster::updates_to_framework(&out)[0].state, TaskState::Running);
    assert_eq!(c.task_state("web"), TaskState::Running);

    c.update("web", TaskState::Finished, t(3.0));
    assert_eq!(c.task_state("web"), TaskState::Finished);
    assert!(c.master.agent(&c.agent).unwrap().used.is_empty(), "resources come back when the task ends");
}

#[test]
fn unused_part_of_an_offer_is_offered_again() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1;mem:128", t(1.0));
    let offers = c.offers(t(3.0));
    let offered: Resources = offers.iter().fold(Resources::new(), |acc, o| acc.plus(&o.resources));
    assert_eq!(offered.scalar("cpus"), atoll_proto::model::Scalar::from_f64(3.0));
}

#[test]
fn acknowledgements_reach_the_agent() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    let out = c.update("a", TaskState::Running, t(2.0));
    let uuid = Cluster::updates_to_framework(&out)[0].uuid.unwrap();
    let fw = c.framework.clone();
    let call = SchedulerCall::Acknowledge { agent_id: c.agent.clone(), task_id: TaskId::new("a"), uuid };
    c.master.framework_call(FW_CONN, &fw, call, t(2.1)).unwrap();
    let out = c.drain();
    assert!(out.iter().any(
        |o| matches!(o, Output::ToAgent { command: AgentCommand::Acknowledge { uuid: u, .. }, .. } if *u == uuid)
    ));
}

#[test]
fn duplicate_status_updates_are_forwarded_but_recorded_once() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    let mut status = TaskStatus::new(TaskId::new("a"), TaskState::Running, Source::Executor, t(2.0));
    status.uuid = Some(uuid::Uuid::new_v4());
    let before = c.events.len();
    let fw = c.framework.clone();
    c.master.status_update(AGENT_CONN, fw.clone(), status.clone(), t(2.0)).unwrap();
    c.drain();
    c.master.status_update(AGENT_CONN, fw, status, t(3.0)).unwrap();
    let out = c.drain();
    assert_eq!(c.events.len(), before + 1);
    assert_eq!(Cluster::updates_to_framework(&out).len(), 1, "the retry is forwarded again");
}

#[test]
fn invalid_launches_change_nothing() {
    let mut c = Cluster::new(false);
    let offers = c.offers(t(1.0));
    let ids: Vec<OfferId> = offers.iter().map(|o| o.id.clone()).collect();
    let fw = c.framework.clone();
    let events_before = c.events.len();

    let too_big = task_info("big", &c.agent, "cpus:64");
    let mut no_command = task_info("nocmd", &c.agent, "cpus:1");
    no_command.command = CommandInfo::shell("");
    let mut wrong_agent = task_info("elsewhere", &AgentId::new("other"), "cpus:1");
    wrong_agent.name = "x".into();
    let call = SchedulerCall::Accept {
        offer_ids: ids,
        launches: vec![too_big, no_command, wrong_agent],
        groups: Vec::new(),
        refuse: None,
    };
    c.master.framework_call(FW_CONN, &fw, call, t(1.0)).unwrap();
    let out = c.drain();
    let updates = Cluster::updates_to_framework(&out);
    assert_eq!(updates.len(), 3);
    for u in &updates {
        assert_eq!(u.state, TaskState::Error);
        assert_eq!(u.reason, Some(Reason::TaskInvalid));
        assert!(u.message.as_deref().is_some_and(|m| !m.is_empty()));
    }
    assert!(updates[0].message.as_ref().unwrap().contains("not available"), "{:?}", updates[0].message);
    assert_eq!(c.events.len(), events_before, "no task was added");
    assert!(!out.iter().any(|o| matches!(o, Output::ToAgent { .. })));
    assert!(c.master.agent(&c.agent).unwrap().used.is_empty());
}

#[test]
fn unknown_offers_drop_tasks_and_return_the_valid_offers() {
    let mut c = Cluster::new(true);
    let offers = c.offers(t(1.0));
    let mut ids: Vec<OfferId> = offers.iter().map(|o| o.id.clone()).collect();
    ids.push(OfferId::new("no-such-offer"));
    let fw = c.framework.clone();
    let call = SchedulerCall::Accept {
        offer_ids: ids,
        launches: vec![task_info("a", &c.agent, "cpus:1")],
        groups: Vec::new(),
        refuse: None,
    };
    c.master.framework_call(FW_CONN, &fw, call, t(1.0)).unwrap();
    let updates = Cluster::updates_to_framework(&c.drain());
    assert_eq!(updates[0].state, TaskState::Dropped);
    assert_eq!(updates[0].reason, Some(Reason::InvalidOffers));
    assert_eq!(c.master.outstanding_offers(), 0);
    // No filter was set: the resources are offered again at once.
    assert!(!c.offers(t(1.1)).is_empty());
}

#[test]
fn duplicate_task_ids_are_refused() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    let out = c.launch("a", "cpus:1", t(2.0));
    let updates = Cluster::updates_to_framework(&out);
    assert_eq!(updates[0].state, TaskState::Error);
    assert!(updates[0].message.as_ref().unwrap().contains("already in use"));
}

#[test]
fn declined_offers_are_filtered_for_refuse_seconds() {
    let mut c = Cluster::new(false);
    let offers = c.offers(t(1.0));
    let fw = c.framework.clone();
    let call = SchedulerCall::Decline {
        offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
        refuse: Some(Duration::from_secs(10)),
    };
    c.master.framework_call(FW_CONN, &fw, call, t(1.0)).unwrap();
    c.drain();
    assert!(c.offers(t(5.0)).is_empty(), "filtered");
    assert!(!c.offers(t(11.5)).is_empty(), "filter expired");
}

#[test]
fn revive_clears_filters_and_suppress_stops_offers() {
    let mut c = Cluster::new(false);
    let fw = c.framework.clone();
    let offers = c.offers(t(1.0));
    let decline = SchedulerCall::Decline {
        offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
        refuse: Some(Duration::from_secs(100)),
    };
    c.master.framework_call(FW_CONN, &fw, decline, t(1.0)).unwrap();
    c.master.framework_call(FW_CONN, &fw, SchedulerCall::Revive, t(2.0)).unwrap();
    assert!(!c.offers(t(2.0)).is_empty());
    let offers = c.offers(t(3.0));
    assert!(offers.is_empty(), "still outstanding");
    c.master.framework_call(FW_CONN, &fw, SchedulerCall::Suppress, t(3.0)).unwrap();
    // Rescinded by timeout, then not offered again while suppressed.
    assert!(c.offers(t(100.0)).is_empty());
}

#[test]
fn outstanding_offers_are_rescinded_after_the_timeout() {
    let mut c = Cluster::new(false);
    let offers = c.offers(t(1.0));
    assert_eq!(offers.len(), 1);
    c.master.tick(t(62.0));
    let out = c.drain();
    assert!(
        out.iter().any(
            |o| matches!(o, Output::ToFramework { event: SchedulerEvent::Rescind(id), .. } if *id == offers[0].id)
        )
    );
}

#[test]
fn silent_agent_becomes_unreachable_then_comes_back() {
    let mut c = Cluster::new(true);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(2.0));
    c.master.agent_heartbeat(AGENT_CONN, t(10.0)).unwrap();
    c.master.tick(t(50.0));
    c.drain();
    assert_eq!(c.task_state("a"), TaskState::Running, "not yet: 45 s since the last heartbeat at 10 s");
    c.master.tick(t(56.0));
    let out = c.drain();
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Unreachable);
    assert_eq!(c.task_state("a"), TaskState::Unreachable);
    assert!(out.iter().any(|o| matches!(o, Output::ToFramework { event: SchedulerEvent::Failure { .. }, .. })));

    let task = c.master.task(&c.framework, &TaskId::new("a")).unwrap().clone();
    let mut status = task.status.clone();
    status.state = TaskState::Running;
    let registration = AgentRegistration {
        agent_id: Some(c.agent.clone()),
        info: agent_info(5051),
        version: "test".into(),
        tasks: vec![ReportedTask { framework_id: c.framework.clone(), info: task.info(), status }],
    };
    c.master.register_agent(ConnId(2), registration, t(60.0)).unwrap();
    let out = c.drain();
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Active);
    assert_eq!(c.task_state("a"), TaskState::Running);
    let updates = Cluster::updates_to_framework(&out);
    assert_eq!(updates[0].reason, Some(Reason::AgentReregistered));
}

#[test]
fn non_partition_aware_tasks_are_lost_and_may_return() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(2.0));
    c.master.tick(t(100.0));
    c.drain();
    assert_eq!(c.task_state("a"), TaskState::Lost);
    assert!(c.master.agent(&c.agent).unwrap().used.is_empty());
    let task = c.master.task(&c.framework, &TaskId::new("a")).unwrap().clone();
    let mut status = task.status.clone();
    status.state = TaskState::Running;
    status.source = Source::Executor;
    let registration = AgentRegistration {
        agent_id: Some(c.agent.clone()),
        info: agent_info(5051),
        version: "test".into(),
        tasks: vec![ReportedTask { framework_id: c.framework.clone(), info: task.info(), status }],
    };
    c.master.register_agent(ConnId(2), registration, t(101.0)).unwrap();
    c.drain();
    assert_eq!(c.task_state("a"), TaskState::Running);
    assert!(!c.master.agent(&c.agent).unwrap().used.is_empty());
}

#[test]
fn unreachable_agents_are_gone_after_the_policy_timeout() {
    let mut c = Cluster::new(true);
    c.launch("a", "cpus:1", t(1.0));
    c.master.tick(t(100.0));
    c.master.tick(t(100.0 + 15.0 * 60.0));
    c.drain();
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Gone);
    assert_eq!(c.task_state("a"), TaskState::Gone);
    let registration = AgentRegistration {
        agent_id: Some(c.agent.clone()),
        info: agent_info(5051),
        version: "test".into(),
        tasks: vec![],
    };
    let err = c.master.register_agent(ConnId(3), registration, t(2000.0)).unwrap_err();
    assert_eq!(err, MasterError::AgentGone(c.agent.clone()));
    assert!(c.drain().iter().any(|o| matches!(o, Output::ToAgent { command: AgentCommand::Shutdown { .. }, .. })));
}

#[test]
fn reregistration_without_a_task_drops_it() {
    let mut c = Cluster::new(true);
    c.launch("a", "cpus:1", t(1.0));
    let registration = AgentRegistration {
        agent_id: Some(c.agent.clone()),
        info: agent_info(5051),
        version: "test".into(),
        tasks: vec![],
    };
    c.master.register_agent(ConnId(2), registration, t(2.0)).unwrap();
    c.drain();
    assert_eq!(c.task_state("a"), TaskState::Dropped);
}

#[test]
fn drain_kills_tasks_then_reactivate_offers_again() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(2.0));
    c.master.drain_agent(&c.agent.clone(), DrainConfig::default(), t(3.0)).unwrap();
    let out = c.drain();
    assert!(out.iter().any(
        |o| matches!(o, Output::ToAgent { command: AgentCommand::Kill { task_id, .. }, .. } if task_id.as_str() == "a")
    ));
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Draining);
    assert!(c.offers(t(4.0)).is_empty(), "draining agents get no offers");
    c.update("a", TaskState::Killing, t(4.0));
    c.update("a", TaskState::Killed, t(5.0));
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Drained);
    assert!(c.offers(t(6.0)).is_empty());
    c.master.reactivate_agent(&c.agent.clone(), t(7.0)).unwrap();
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Active);
    assert!(!c.offers(t(7.0)).is_empty());
    assert!(matches!(
        c.master.drain_agent(&AgentId::new("nope"), DrainConfig::default(), t(8.0)),
        Err(MasterError::UnknownAgent(_))
    ));
}

#[test]
fn deactivate_stops_offers_keeps_tasks_and_reactivate_offers_again() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(2.0));
    let outstanding = c.offers(t(2.5));
    assert!(!outstanding.is_empty());
    let agent = c.master.deactivate_agent(&c.agent.clone(), t(3.0)).unwrap();
    assert_eq!((agent.state, agent.deactivated, agent.drain), (AgentState::Deactivated, true, false));
    let out = c.drain();
    assert!(!out.iter().any(|o| matches!(o, Output::ToAgent { command: AgentCommand::Kill { .. }, .. })));
    assert!(
        out.iter().any(
            |o| matches!(o, Output::ToFramework { event: SchedulerEvent::Rescind(id), .. } if *id == outstanding[0].id)
        ),
        "outstanding offers are rescinded"
    );
    assert!(c.offers(t(4.0)).is_empty(), "deactivated agents get no offers");
    assert_eq!(c.task_state("a"), TaskState::Running);
    // A silent agent's state moves as usual and comes back deactivated, still unoffered.
    c.master.agent_disconnected(AGENT_CONN, t(5.0));
    c.drain();
    let again = AgentRegistration {
        agent_id: Some(c.agent.clone()),
        info: agent_info(5051),
        version: "test".into(),
        tasks: vec![ReportedTask {
            framework_id: c.framework.clone(),
            info: c.master.task(&c.framework, &TaskId::new("a")).unwrap().info(),
            status: c.master.task(&c.framework, &TaskId::new("a")).unwrap().status.clone(),
        }],
    };
    c.master.register_agent(AGENT_CONN, again, t(6.0)).unwrap();
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Deactivated);
    assert!(c.offers(t(7.0)).is_empty());
    // Draining a deactivated agent kills its tasks; reactivating ends both.
    c.master.drain_agent(&c.agent.clone(), DrainConfig::default(), t(8.0)).unwrap();
    c.update("a", TaskState::Killed, t(9.0));
    let agent = c.master.agent(&c.agent).unwrap();
    assert_eq!((agent.state, agent.deactivated, agent.drain), (AgentState::Drained, true, true));
    let agent = c.master.reactivate_agent(&c.agent.clone(), t(10.0)).unwrap();
    assert_eq!((agent.state, agent.deactivated, agent.drain), (AgentState::Active, false, false));
    assert!(!c.offers(t(10.0)).is_empty());
    assert!(matches!(c.master.deactivate_agent(&AgentId::new("nope"), t(11.0)), Err(MasterError::UnknownAgent(_))));
    let updated = c.events.iter().filter(|e| matches!(&e.kind, EventKind::AgentUpdated { agent } if agent.deactivated));
    assert!(updated.count() >= 1, "the deactivation is in the event log");
}

#[test]
fn kill_goes_to_the_agent_with_the_grace_period() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    let fw = c.framework.clone();
    let call = SchedulerCall::Kill { task_id: TaskId::new("a"), agent_id: None, grace_secs: Some(7.0) };
    c.master.framework_call(FW_CONN, &fw, call, t(2.0)).unwrap();
    let out = c.drain();
    assert!(out.iter().any(
        |o| matches!(o, Output::ToAgent { command: AgentCommand::Kill { grace_secs: Some(g), .. }, .. } if *g == 7.0)
    ));
    let call = SchedulerCall::Kill { task_id: TaskId::new("nope"), agent_id: None, grace_secs: None };
    c.master.framework_call(FW_CONN, &fw, call, t(2.0)).unwrap();
    let updates = Cluster::updates_to_framework(&c.drain());
    assert_eq!(updates[0].state, TaskState::Lost);
}

#[test]
fn kills_for_an_absent_agent_wait_for_its_return() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(1.5));
    c.master.agent_disconnected(AGENT_CONN, t(2.0));
    c.master.operator_kill(&TaskId::new("a"), t(2.0)).unwrap();
    assert!(!c.drain().iter().any(|o| matches!(o, Output::ToAgent { command: AgentCommand::Kill { .. }, .. })));
    let task = c.master.task(&c.framework, &TaskId::new("a")).unwrap().clone();
    let registration = AgentRegistration {
        agent_id: Some(c.agent.clone()),
        info: agent_info(5051),
        version: "test".into(),
        tasks: vec![ReportedTask { framework_id: c.framework.clone(), info: task.info(), status: task.status.clone() }],
    };
    c.master.register_agent(ConnId(2), registration, t(3.0)).unwrap();
    assert!(
        c.drain()
            .iter()
            .any(|o| matches!(o, Output::ToAgent { command: AgentCommand::Kill { .. }, conn } if *conn == ConnId(2)))
    );
}

#[test]
fn reconciliation_explicit_and_implicit() {
    let mut c = Cluster::new(true);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(2.0));
    let fw = c.framework.clone();
    c.master.framework_call(FW_CONN, &fw, SchedulerCall::Reconcile { tasks: vec![] }, t(3.0)).unwrap();
    let updates = Cluster::updates_to_framework(&c.drain());
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state, TaskState::Running);
    assert_eq!(updates[0].reason, Some(Reason::Reconciliation));
    assert!(updates[0].uuid.is_none());
    let call = SchedulerCall::Reconcile { tasks: vec![(TaskId::new("a"), None), (TaskId::new("ghost"), None)] };
    c.master.framework_call(FW_CONN, &fw, call, t(3.0)).unwrap();
    let updates = Cluster::updates_to_framework(&c.drain());
    assert_eq!(updates.iter().map(|u| u.state).collect::<Vec<_>>(), vec![TaskState::Running, TaskState::Unknown]);
}

#[test]
fn teardown_kills_everything_and_removes_the_framework() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    let fw = c.framework.clone();
    c.master.framework_call(FW_CONN, &fw, SchedulerCall::Teardown, t(2.0)).unwrap();
    let out = c.drain();
    assert!(out.iter().any(|o| matches!(o, Output::ToAgent { command: AgentCommand::ShutdownFramework { .. }, .. })));
    assert_eq!(c.task_state("a"), TaskState::Killed);
    assert!(c.master.framework(&fw).is_none());
    assert!(matches!(
        c.master.framework_call(FW_CONN, &fw, SchedulerCall::Revive, t(3.0)),
        Err(MasterError::FrameworkRemoved(_))
    ));
    assert!(matches!(
        c.master.subscribe(ConnId(5), Some(fw.clone()), framework("fw", false), false, t(3.0)),
        Err(MasterError::FrameworkRemoved(_))
    ));
    // The agent's late KILLED update is acknowledged by the master itself.
    let out = c.update("a", TaskState::Killed, t(4.0));
    assert!(out.iter().any(|o| matches!(o, Output::ToAgent { command: AgentCommand::Acknowledge { .. }, .. })));
}

#[test]
fn disconnected_framework_is_removed_after_its_failover_timeout() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    c.master.framework_disconnected(FW_CONN, t(2.0));
    c.master.tick(t(30.0));
    c.drain();
    assert_eq!(c.task_state("a"), TaskState::Staging, "within the 60 s failover timeout");
    let fw = c.framework.clone();
    // Failing over within the timeout keeps everything.
    c.master.subscribe(ConnId(101), Some(fw.clone()), framework("fw", false), false, t(40.0)).unwrap();
    c.master.framework_disconnected(ConnId(101), t(41.0));
    c.master.agent_heartbeat(AGENT_CONN, t(40.0)).unwrap();
    c.master.agent_heartbeat(AGENT_CONN, t(80.0)).unwrap();
    c.master.tick(t(102.0));
    c.drain();
    assert_eq!(c.task_state("a"), TaskState::Killed);
    assert!(c.master.framework(&fw).is_none());
}

#[test]
fn failover_closes_the_old_connection_and_refuses_role_changes() {
    let mut c = Cluster::new(false);
    let fw = c.framework.clone();
    c.master.subscribe(ConnId(101), Some(fw.clone()), framework("fw", false), false, t(1.0)).unwrap();
    let out = c.drain();
    assert!(out.iter().any(|o| matches!(o, Output::CloseFramework { conn } if *conn == FW_CONN)));
    assert!(matches!(
        c.master.framework_call(FW_CONN, &fw, SchedulerCall::Revive, t(1.0)),
        Err(MasterError::NotSubscribed(_))
    ));
    let mut other_role = framework("fw", false);
    other_role.role = "eng".into();
    assert!(matches!(
        c.master.subscribe(ConnId(102), Some(fw), other_role, false, t(2.0)),
        Err(MasterError::RoleChange { .. })
    ));
    assert!(matches!(
        c.master.subscribe(ConnId(103), None, FrameworkInfo::named(" "), false, t(2.0)),
        Err(MasterError::EmptyFrameworkName)
    ));
}

#[test]
fn recovery_keeps_tasks_and_waits_for_agents() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(2.0));
    let state = c.master.state();
    let registry = Recovered {
        last_index: state.index,
        agents: state.agents.clone(),
        frameworks: state.frameworks.clone(),
        tasks: state.tasks.clone(),
        ..Recovered::default()
    };
    let mut master = Master::recover(MasterConfig::default(), "run2", registry, t(10.0));
    let events = master.take_outputs();
    assert!(events.iter().all(|o| matches!(o, Output::Event(e) if e.index > state.index)));
    assert_eq!(master.agent(&c.agent).unwrap().state, AgentState::Recovered);
    assert_eq!(master.task(&c.framework, &TaskId::new("a")).unwrap().state, TaskState::Running);
    assert!(!master.framework(&c.framework).unwrap().connected);

    let task = master.task(&c.framework, &TaskId::new("a")).unwrap().clone();
    master.subscribe(ConnId(7), Some(c.framework.clone()), framework("fw", false), false, t(11.0)).unwrap();
    let registration = AgentRegistration {
        agent_id: Some(c.agent.clone()),
        info: agent_info(5051),
        version: "test".into(),
        tasks: vec![ReportedTask { framework_id: c.framework.clone(), info: task.info(), status: task.status.clone() }],
    };
    master.register_agent(ConnId(8), registration, t(12.0)).unwrap();
    master.take_outputs();
    assert_eq!(master.agent(&c.agent).unwrap().state, AgentState::Active);
    assert_eq!(master.task(&c.framework, &TaskId::new("a")).unwrap().state, TaskState::Running);
    // Only the free part of the agent is offered: the running task still holds its cpu.
    master.tick(t(13.0));
    let offered: Vec<Resources> = master
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::ToFramework { event: SchedulerEvent::Offers(offers), .. } => Some(offers),
            _ => None,
        })
        .flatten()
        .map(|o| o.resources)
        .collect();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].scalar("cpus"), atoll_proto::model::Scalar::from_f64(3.0));
}

#[test]
fn completed_tasks_are_kept_within_the_window() {
    let config = MasterConfig { completed_tasks_per_framework: 2, ..MasterConfig::default() };
    let mut c = Cluster::new(false);
    c.master.config = config;
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let now = 1.0 + i as f64 * 10.0;
        c.launch(id, "cpus:1", t(now));
        c.update(id, TaskState::Finished, t(now + 1.0));
    }
    assert!(c.master.task(&c.framework, &TaskId::new("a")).is_none());
    assert!(c.master.task(&c.framework, &TaskId::new("c")).is_some());
}

#[test]
fn bad_agent_registrations_are_refused() {
    let mut master = Master::new(MasterConfig::default(), "run", t(0.0));
    let mut info = agent_info(5051);
    info.hostname = "".into();
    let err = master
        .register_agent(
            ConnId(1),
            AgentRegistration { agent_id: None, info, version: String::new(), tasks: vec![] },
            t(0.0),
        )
        .unwrap_err();
    assert!(matches!(err, MasterError::BadAgentInfo(_)));
    assert!(master.take_outputs().is_empty());
    assert!(master.agent_heartbeat(ConnId(9), t(1.0)).is_err());
}

// ----- properties ------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    RegisterAgent(u8),
    Heartbeat(u8),
    DisconnectAgent(u8),
    Subscribe(u8),
    DisconnectFramework(u8),
    AcceptAll { framework: u8, cpus: u8, grouped: bool },
    DeclineAll(u8),
    Update { task: u8, state: u8 },
    Kill(u8),
    Drain(u8),
    Deactivate(u8),
    Reactivate(u8),
    Teardown(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3).prop_map(Op::RegisterAgent),
        (0u8..3).prop_map(Op::Heartbeat),
        (0u8..3).prop_map(Op::DisconnectAgent),
        (0u8..3).prop_map(Op::Subscribe),
        (0u8..3).prop_map(Op::DisconnectFramework),
        (0u8..3, 1u8..3, any::<bool>()).prop_map(|(framework, cpus, grouped)| Op::AcceptAll {
            framework,
            cpus,
            grouped
        }),
        (0u8..3).prop_map(Op::DeclineAll),
        (0u8..20, 0u8..6).prop_map(|(task, state)| Op::Update { task, state }),
        (0u8..20).prop_map(Op::Kill),
        (0u8..3).prop_map(Op::Drain),
        (0u8..3).prop_map(Op::Deactivate),
        (0u8..3).prop_map(Op::Reactivate),
        (0u8..3).prop_map(Op::Teardown),
        (1u16..30_000).prop_map(Op::Advance),
    ]
}

struct World {
    master: Master,
    now: Time,
    conns: u64,
    agent_conn: [Option<ConnId>; 3],
    agent_id: [Option<AgentId>; 3],
    fw_conn: [Option<ConnId>; 3],
    fw_id: [Option<FrameworkId>; 3],
    offers: Vec<OfferView>,
    launched: Vec<(FrameworkId, TaskId, AgentId)>,
    events: Vec<Event>,
}

impl World {
    fn conn(&mut self) -> ConnId {
        self.conns += 1;
        ConnId(self.conns)
    }

    fn run(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::RegisterAgent(i) => {
                let conn = self.conn();
                let i = i as usize;
                let tasks = self.agent_id[i]
                    .as_ref()
                    .map(|agent| {
                        self.launched
                            .iter()
                            .filter(|(_, _, a)| a == agent)
                            .filter_map(|(f, t, _)| self.master.task(f, t))
                            .filter(|task| !task.state.is_terminal())
                            .map(|task| ReportedTask {
                                framework_id: task.framework_id.clone(),
                                info: task.info(),
                                status: task.status.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let registration = AgentRegistration {
                    agent_id: self.agent_id[i].clone(),
                    info: agent_info(5000 + i as u16),
                    version: String::new(),
                    tasks,
                };
                match self.master.register_agent(conn, registration, now) {
                    Ok(id) => {
                        self.agent_id[i] = Some(id);
                        self.agent_conn[i] = Some(conn);
                    }
                    Err(MasterError::AgentGone(_)) => self.agent_id[i] = None,
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Heartbeat(i) => {
                if let Some(conn) = self.agent_conn[i as usize] {
                    let _ = self.master.agent_heartbeat(conn, now);
                }
            }
            Op::DisconnectAgent(i) => {
                if let Some(conn) = self.agent_conn[i as usize].take() {
                    self.master.agent_disconnected(conn, now);
                }
            }
            Op::Subscribe(i) => {
                let conn = self.conn();
                let i = i as usize;
                let mut info = framework(&format!("fw{i}"), i == 1);
                info.failover_timeout_secs = 20.0;
                if let Ok(id) = self.master.subscribe(conn, self.fw_id[i].clone(), info, false, now) {
                    self.fw_id[i] = Some(id);
                    self.fw_conn[i] = Some(conn);
                } else {
                    self.fw_id[i] = None;
                }
            }
            Op::DisconnectFramework(i) => {
                if let Some(conn) = self.fw_conn[i as usize].take() {
                    self.master.framework_disconnected(conn, now);
                }
            }
            Op::AcceptAll { framework, cpus, grouped } => {
                let (Some(conn), Some(id)) = (self.fw_conn[framework as usize], self.fw_id[framework as usize].clone())
                else {
                    return;
                };
                let mine: Vec<OfferView> = self.offers.iter().filter(|o| o.framework_id == id).cloned().collect();
                if let Some(first) = mine.first() {
                    let same_agent: Vec<OfferId> =
                        mine.iter().filter(|o| o.agent_id == first.agent_id).map(|o| o.id.clone()).collect();
                    let mut tasks = Vec::new();
                    for _ in 0..if grouped { 2 } else { 1 } {
                        let task_id = TaskId(format!("t{}", self.launched.len()));
                        tasks.push(task_info(task_id.as_str(), &first.agent_id, &format!("cpus:{cpus};mem:10")));
                        self.launched.push((id.clone(), task_id, first.agent_id.clone()));
                    }
                    let (launches, groups) = if grouped {
                        let executor = format!("ex-{}", self.launched.len());
                        (Vec::new(), vec![group(&executor, tasks, "cpus:0.1;mem:32")])
                    } else {
                        (tasks, Vec::new())
                    };
                    let call = SchedulerCall::Accept { offer_ids: same_agent, launches, groups, refuse: None };
                    let _ = self.master.framework_call(conn, &id, call, now);
                }
            }
            Op::DeclineAll(i) => {
                let (Some(conn), Some(id)) = (self.fw_conn[i as usize], self.fw_id[i as usize].clone()) else { return };
                let ids = self.offers.iter().filter(|o| o.framework_id == id).map(|o| o.id.clone()).collect();
                let _ =
                    self.master.framework_call(conn, &id, SchedulerCall::Decline { offer_ids: ids, refuse: None }, now);
            }
            Op::Update { task, state } => {
                let Some((fw, task_id, agent)) = self.launched.get(task as usize).cloned() else { return };
                let Some(index) = self.agent_id.iter().position(|a| a.as_ref() == Some(&agent)) else { return };
                let Some(conn) = self.agent_conn[index] else { return };
                let state = [
                    TaskState::Starting,
                    TaskState::Running,
                    TaskState::Killing,
                    TaskState::Finished,
                    TaskState::Failed,
                    TaskState::Killed,
                ][state as usize];
                let current = self.master.task(&fw, &task_id).map(|t| t.state);
                if current.is_some_and(|c| !c.can_become(state)) {
                    return;
                }
                let mut status = TaskStatus::new(task_id, state, Source::Executor, now);
                status.uuid = Some(uuid::Uuid::from_u128(self.events.len() as u128 + 1));
                let _ = self.master.status_update(conn, fw, status, now);
            }
            Op::Kill(task) => {
                if let Some((_, task_id, _)) = self.launched.get(task as usize).cloned() {
                    let _ = self.master.operator_kill(&task_id, now);
                }
            }
            Op::Drain(i) => {
                if let Some(id) = self.agent_id[i as usize].clone() {
                    let _ = self.master.drain_agent(&id, DrainConfig::default(), now);
                }
            }
            Op::Deactivate(i) => {
                if let Some(id) = self.agent_id[i as usize].clone() {
                    let _ = self.master.deactivate_agent(&id, now);
                }
            }
            Op::Reactivate(i) => {
                if let Some(id) = self.agent_id[i as usize].clone() {
                    let _ = self.master.reactivate_agent(&id, now);
                }
            }
            Op::Teardown(i) => {
                if let (Some(conn), Some(id)) = (self.fw_conn[i as usize], self.fw_id[i as usize].clone()) {
                    let _ = self.master.framework_call(conn, &id, SchedulerCall::Teardown, now);
                }
            }
            Op::Advance(ms) => self.now = Time(self.now.0 + ms as u64),
        }
        self.master.tick(self.now);
        for output in self.master.take_outputs() {
            match output {
                Output::Event(e) => self.events.push(e),
                Output::ToFramework { event: SchedulerEvent::Offers(offers), .. } => self.offers.extend(offers),
                Output::ToFramework { event: SchedulerEvent::Rescind(id), .. } => self.offers.retain(|o| o.id != id),
                _ => {}
            }
        }
        // Offers the framework used or declined are gone as well.
        let live: std::collections::BTreeSet<OfferId> = self.master.offers.keys().cloned().collect();
        self.offers.retain(|o| live.contains(&o.id));
    }
}

fn common_values(a: &atoll_proto::model::Ranges, b: &atoll_proto::model::Ranges) -> atoll_proto::model::Ranges {
    let mut only_a = a.clone();
    only_a.remove(b);
    let mut common = a.clone();
    common.remove(&only_a);
    common
}

fn without_used(mut state: ClusterState) -> ClusterState {
    for agent in &mut state.agents {
        agent.used = Resources::new();
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The event log is gapless and its projection is exactly the master's state; no agent
    /// is ever overcommitted and no offer overlaps another or a running task.
    #[test]
    fn events_project_to_state_and_nothing_is_overcommitted(ops in proptest::collection::vec(op(), 1..80)) {
        let mut world = World {
            master: Master::new(MasterConfig::default(), "p", Time(0)),
            now: Time(0),
            conns: 0,
            agent_conn: [None, None, None],
            agent_id: [None, None, None],
            fw_conn: [None, None, None],
            fw_id: [None, None, None],
            offers: Vec::new(),
            launched: Vec::new(),
            events: Vec::new(),
        };
        for op in ops {
            world.run(op);
            let state = world.master.state();
            for agent in &state.agents {
                let mut committed = agent.used.clone();
                for offer in world.offers.iter().filter(|o| o.agent_id == agent.id) {
                    let shared = common_values(&committed.ranges("ports"), &offer.resources.ranges("ports"));
                    prop_assert!(shared.is_empty(), "offer {} reuses ports {} on {}", offer.resources, shared, agent.id);
                    committed.add(&offer.resources);
                }
                let offered = world.offers.iter().any(|o| o.agent_id == agent.id);
                prop_assert!(!offered || agent.state == AgentState::Active, "{} is {:?} yet offered", agent.id, agent.state);
                if agent.state == AgentState::Deactivated {
                    prop_assert!(agent.deactivated && !agent.drain, "{} is deactivated without the operator's say", agent.id);
                }
                if agent.state != AgentState::Gone {
                    prop_assert!(agent.resources.contains(&committed), "{} overcommitted: {} of {}", agent.id, committed, agent.resources);
                }
            }
        }
        for (i, event) in world.events.iter().enumerate() {
            prop_assert_eq!(event.index, i as u64 + 1);
        }
        let mut projected = ClusterState::default();
        for event in &world.events {
            projected.apply(event);
        }
        let mut expected = without_used(world.master.state());
        let mut projected = without_used(projected);
        // The projection keeps tasks the master forgot from its window; compare live ones.
        projected.tasks.retain(|t| world.master.task(&t.framework_id, &t.id).is_some());
        for list in [&mut expected.tasks, &mut projected.tasks] {
            list.sort_by(|a, b| (&a.framework_id, &a.id).cmp(&(&b.framework_id, &b.id)));
        }
        expected.agents.sort_by(|a, b| a.id.cmp(&b.id));
        projected.agents.sort_by(|a, b| a.id.cmp(&b.id));
        expected.frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        projected.frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        prop_assert_eq!(projected, expected);
    }
}

// ----- IPAM ------------------------------------------------------------------------------

fn networks_sent(outputs: &[Output]) -> Vec<AgentNetworks> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToAgent { command: AgentCommand::Networks { networks }, .. } => Some(networks.clone()),
            Output::ToAgent { command: AgentCommand::Registered { networks, .. }, .. } => Some(networks.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn pools_give_every_agent_a_subnet_and_new_agents_get_theirs_at_registration() {
    let mut c = Cluster::new(false);
    c.master.add_pool(atoll_ipam::default_pool(), t(1.0)).unwrap();
    let out = c.drain();
    let sent = networks_sent(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].subnets[0].network.to_string(), "198.18.0.0/24");
    assert_eq!(sent[0].subnets[0].gateway.to_string(), "198.18.0.1");
    assert!(c.events.iter().any(|e| matches!(&e.kind, EventKind::PoolAdded { pool } if pool.name == "atoll")));
    assert!(c.events.iter().any(|e| matches!(&e.kind, EventKind::AgentUpdated { agent } if agent.subnets.len() == 1)));

    let second = c
        .master
        .register_agent(
            ConnId(2),
            AgentRegistration { agent_id: None, info: agent_info(5052), version: String::new(), tasks: vec![] },
            t(2.0),
        )
        .unwrap();
    let out = c.drain();
    assert_eq!(networks_sent(&out)[0].subnets[0].network.to_string(), "198.18.1.0/24");
    assert!(
        c.events.iter().any(
            |e| matches!(&e.kind, EventKind::AgentAdded { agent } if agent.id == second && agent.subnets.len() == 1)
        )
    );
}

#[test]
fn bad_pools_change_nothing() {
    let mut c = Cluster::new(false);
    c.master.add_pool(atoll_ipam::default_pool(), t(1.0)).unwrap();
    c.drain();
    let before = c.events.len();
    let overlapping = atoll_ipam::PoolSpec::new("web", vec!["198.18.0.0/17".parse().unwrap()]);
    let err = c.master.add_pool(overlapping, t(2.0)).unwrap_err();
    assert!(err.to_string().contains("overlaps pool atoll"), "{err}");
    assert!(c.drain().is_empty());
    assert_eq!(c.events.len(), before);
    assert!(matches!(c.master.remove_pool("nope", t(3.0)), Err(MasterError::Ipam(_))));
}

#[test]
fn a_pool_with_live_task_addresses_cannot_be_removed_and_gone_agents_give_subnets_back() {
    let mut c = Cluster::new(true);
    c.master.add_pool(atoll_ipam::default_pool(), t(1.0)).unwrap();
    c.launch("a", "cpus:1", t(2.0));
    let mut status = TaskStatus::new(TaskId::new("a"), TaskState::Running, Source::Executor, t(3.0));
    status.uuid = Some(uuid::Uuid::new_v4());
    status.ip_addresses = vec!["198.18.0.2".parse().unwrap()];
    let fw = c.framework.clone();
    c.master.status_update(AGENT_CONN, fw, status, t(3.0)).unwrap();
    c.drain();
    let leases = c.master.task_leases();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].subnet.to_string(), "198.18.0.0/24");
    let err = c.master.remove_pool("atoll", t(4.0)).unwrap_err();
    assert!(matches!(err, MasterError::PoolInUse { count: 1, .. }), "{err}");
    let view = c.master.pool_view("atoll").unwrap();
    assert_eq!((view.subnets_leased, view.subnets[0].leases, view.subnets[0].free), (1, 1, 252));

    assert!(c.master.reserve_address("atoll", "198.18.0.2".parse().unwrap(), t(5.0)).is_err(), "taken by a task");
    c.master.reserve_address("atoll", "198.18.0.9".parse().unwrap(), t(5.0)).unwrap();
    let sent = networks_sent(&c.drain());
    assert_eq!(sent[0].reserved, vec!["198.18.0.9".parse::<std::net::IpAddr>().unwrap()]);

    // The agent goes away for good: its subnet is free again, and the pool can go.
    c.master.tick(t(100.0));
    c.master.tick(t(100.0 + 15.0 * 60.0));
    c.drain();
    assert!(c.master.agent(&c.agent).unwrap().subnets.is_empty());
    c.master.remove_pool("atoll", t(2000.0)).unwrap();
    c.drain();
    assert!(c.events.iter().any(|e| matches!(&e.kind, EventKind::PoolRemoved { name } if name == "atoll")));
}

// ----- VIPs ------------------------------------------------------------------------------

fn with_vip(mut info: TaskInfo, label: &str) -> TaskInfo {
    let mut labels = Labels::default();
    labels.insert("VIP_0", label);
    info.discovery = Some(atoll_proto::model::DiscoveryInfo {
        visibility: "FRAMEWORK".into(),
        name: info.name.clone(),
        ports: vec![atoll_proto::model::DiscoveryPort {
            number: 31000,
            name: "http".into(),
            protocol: "tcp".into(),
            labels,
        }],
        labels: Labels::default(),
    });
    info
}

#[test]
fn named_vips_get_one_stable_address_per_name() {
    let mut c = Cluster::new(false);
    let offers = c.offers(t(1.0));
    let fw = c.framework.clone();
    let tasks = vec![
        with_vip(task_info("a", &c.agent, "cpus:1"), "/web:80"),
        with_vip(task_info("b", &c.agent, "cpus:1"), "/web:80"),
        with_vip(task_info("c", &c.agent, "cpus:1"), "/db:5432"),
    ];
    let call = SchedulerCall::Accept {
        offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
        launches: tasks,
        groups: Vec::new(),
        refuse: None,
    };
    c.master.framework_call(FW_CONN, &fw, call, t(1.0)).unwrap();
    c.drain();
    let assigned: Vec<&VipAssignment> = c
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::VipAssigned { vip } => Some(vip),
            _ => None,
        })
        .collect();
    assert_eq!(assigned.len(), 2, "one per name: {assigned:?}");
    assert_eq!(assigned[0].name, "web");
    assert_eq!(assigned[0].framework, "fw");
    assert!(assigned.iter().all(|v| v.address.to_string().starts_with("198.19.")));
    assert_ne!(assigned[0].address, assigned[1].address);

    // A restarted master keeps them.
    let state = c.master.state();
    let registry = Recovered {
        last_index: state.index,
        agents: state.agents.clone(),
        frameworks: state.frameworks.clone(),
        tasks: state.tasks.clone(),
        vips: state.vips.clone(),
        ..Recovered::default()
    };
    let mut master = Master::recover(MasterConfig::default(), "run2", registry, t(10.0));
    assert!(
        !master
            .take_outputs()
            .iter()
            .any(|o| matches!(o, Output::Event(Event { kind: EventKind::VipAssigned { .. }, .. }))),
        "nothing new to assign"
    );
    assert_eq!(master.state().vips.len(), 2);
}

#[test]
fn an_agent_marked_gone_by_an_operator_takes_its_tasks_and_resources_along() {
    let mut c = Cluster::new(false);
    c.launch("a", "cpus:1", t(1.0));
    c.update("a", TaskState::Running, t(2.0));
    let agent = c.agent.clone();
    let gone = c.master.mark_agent_gone(&agent, t(3.0)).unwrap();
    assert_eq!(gone.state, AgentState::Gone);
    c.drain();
    let task = c.master.find_task(&TaskId("a".into())).unwrap();
    assert_eq!(task.state, TaskState::GoneByOperator);
    assert!(c.offers(t(4.0)).is_empty(), "a gone agent is offered no more");
    assert!(matches!(c.master.mark_agent_gone(&agent, t(5.0)), Err(MasterError::AgentGone(_))));
    assert!(matches!(c.master.mark_agent_gone(&AgentId("nobody".into()), t(5.0)), Err(MasterError::UnknownAgent(_))));
}

#[test]
fn operator_weights_are_checked_whole_saved_and_win_over_configured_ones() {
    let mut master = Master::new(MasterConfig::default(), "w", t(0.0));
    master.set_role_weight("eng", 2.0);
    let bad = [("ops".to_owned(), 3.0), ("eng".to_owned(), 0.0)];
    assert!(matches!(master.update_weights(&bad), Err(MasterError::BadWeight { role, .. }) if role == "eng"));
    for role in ["", "*", "a b", "/eng", "eng/", "eng//web", "eng/..", "-x"] {
        let err = master.update_weights(&[(role.to_owned(), 1.5)]).unwrap_err();
        assert!(matches!(err, MasterError::BadRole { .. }), "{role:?}: {err}");
    }
    assert!(master.take_outputs().is_empty(), "a refused update changes nothing");
    assert_eq!(master.role_weights(), BTreeMap::from([("eng".to_owned(), 2.0)]));

    master.update_weights(&[("ops".to_owned(), 3.0), ("eng/web".to_owned(), 0.5)]).unwrap();
    let saved = master.take_outputs().into_iter().find_map(|o| match o {
        Output::SaveWeights(weights) => Some(weights),
        _ => None,
    });
    let saved = saved.expect("the weights are saved with the batch");
    assert_eq!(saved, BTreeMap::from([("eng/web".to_owned(), 0.5), ("ops".to_owned(), 3.0)]));

    // After a restart the saved weights come back and the configuration does not undo them.
    let mut recovered =
        Master::recover(MasterConfig::default(), "w2", Recovered { weights: saved, ..Recovered::default() }, t(1.0));
    recovered.set_role_weight("ops", 9.0);
    recovered.set_role_weight("eng", 2.0);
    assert_eq!(
        recovered.role_weights(),
        BTreeMap::from([("eng".to_owned(), 2.0), ("eng/web".to_owned(), 0.5), ("ops".to_owned(), 3.0)])
    );
}

fn group(executor: &str, tasks: Vec<TaskInfo>, executor_resources: &str) -> TaskGroup {
    TaskGroup { executor_id: ExecutorId::new(executor), executor_resources: executor_resources.parse().unwrap(), tasks }
}

impl Cluster {
    fn accept_groups(&mut self, groups: Vec<TaskGroup>, now: Time) -> Vec<Output> {
        let offers = self.offers(now);
        assert!(!offers.is_empty(), "expected an offer");
        let call = SchedulerCall::Accept {
            offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
            launches: Vec::new(),
            groups,
            refuse: Some(Duration::ZERO),
        };
        let framework = self.framework.clone();
        self.master.framework_call(FW_CONN, &framework, call, now).unwrap();
        self.drain()
    }

    fn kills(outputs: &[Output]) -> Vec<String> {
        let mut killed: Vec<String> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::ToAgent { command: AgentCommand::Kill { task_id, .. }, .. } => Some(task_id.to_string()),
                _ => None,
            })
            .collect();
        killed.sort();
        killed
    }
}

#[test]
fn task_groups_launch_whole_or_not_at_all_and_fail_together() {
    let mut c = Cluster::new(false);
    // One task does not fit: none of the group launches, each is told why.
    let bad = group("ex", vec![task_info("a", &c.agent, "cpus:1"), task_info("b", &c.agent, "cpus:9")], "cpus:0.1");
    let out = c.accept_groups(vec![bad], t(1.0));
    let updates = Cluster::updates_to_framework(&out);
    assert_eq!(updates.len(), 2);
    assert!(updates.iter().all(|s| s.state == TaskState::Error && s.reason == Some(Reason::TaskGroupInvalid)));
    assert!(updates[0].message.as_deref().unwrap().contains("task `b`"), "{:?}", updates[0].message);
    assert!(!out.iter().any(|o| matches!(o, Output::ToAgent { command: AgentCommand::Launch { .. }, .. })));
    assert!(c.master.task(&c.framework, &TaskId::new("a")).is_none());
    // The executor's own resources count: 4 cpus of tasks plus 0.5 for it do not fit in 4.
    let greedy = group("ex", vec![task_info("a", &c.agent, "cpus:2"), task_info("b", &c.agent, "cpus:2")], "cpus:0.5");
    let updates = Cluster::updates_to_framework(&c.accept_groups(vec![greedy], t(2.0)));
    assert!(updates.iter().all(|s| s.state == TaskState::Error), "{updates:?}");
    let empty = group("", vec![task_info("a", &c.agent, "cpus:1")], "cpus:0.1");
    let updates = Cluster::updates_to_framework(&c.accept_groups(vec![empty], t(3.0)));
    assert!(updates[0].message.as_deref().unwrap().contains("executor_id"), "{updates:?}");

    let good = group("ex", vec![task_info("a", &c.agent, "cpus:1"), task_info("b", &c.agent, "cpus:1")], "cpus:0.5");
    let out = c.accept_groups(vec![good], t(4.0));
    let launched = out.iter().filter(|o| matches!(o, Output::ToAgent { command: AgentCommand::Launch { .. }, .. }));
    assert_eq!(launched.count(), 2);
    let a = c.master.task(&c.framework, &TaskId::new("a")).unwrap();
    assert_eq!(a.executor_id, Some(ExecutorId::new("ex")));
    assert_eq!(a.resources.to_string(), "cpus:1.5", "the executor's share rides with the first task");
    assert_eq!(c.master.agent(&c.agent).unwrap().used.to_string(), "cpus:2.5");
    c.update("a", TaskState::Running, t(5.0));
    c.update("b", TaskState::Running, t(5.0));
    // One fails: the other is killed.
    let out = c.update("a", TaskState::Failed, t(6.0));
    assert_eq!(Cluster::kills(&out), vec!["b"]);
    c.update("b", TaskState::Killed, t(7.0));
    assert!(c.master.agent(&c.agent).unwrap().used.is_empty());

    // A group whose tasks finish one by one is not killed.
    let calm = group("ex2", vec![task_info("c", &c.agent, "cpus:1"), task_info("d", &c.agent, "cpus:1")], "");
    c.accept_groups(vec![calm], t(8.0));
    c.update("c", TaskState::Running, t(9.0));
    c.update("d", TaskState::Running, t(9.0));
    assert!(Cluster::kills(&c.update("c", TaskState::Finished, t(10.0))).is_empty());
    // SHUTDOWN of the executor kills what is left of its group; an unknown one is an error.
    let fw = c.framework.clone();
    let shutdown = SchedulerCall::Shutdown { executor_id: ExecutorId::new("ex2"), agent_id: c.agent.clone() };
    c.master.framework_call(FW_CONN, &fw, shutdown, t(11.0)).unwrap();
    assert_eq!(Cluster::kills(&c.drain()), vec!["d"]);
    let unknown = SchedulerCall::Shutdown { executor_id: ExecutorId::new("nope"), agent_id: c.agent.clone() };
    let err = c.master.framework_call(FW_CONN, &fw, unknown, t(12.0)).unwrap_err();
    assert!(matches!(err, MasterError::UnknownExecutor { .. }), "{err}");
}

#[test]
fn a_task_launched_alone_is_its_own_executor() {
    let mut c = Cluster::new(false);
    c.launch("solo", "cpus:1", t(1.0));
    c.update("solo", TaskState::Running, t(2.0));
    let fw = c.framework.clone();
    let message = SchedulerCall::Message { agent_id: c.agent.clone(), executor_id: ExecutorId::new("solo") };
    c.master.framework_call(FW_CONN, &fw, message, t(3.0)).unwrap();
    assert!(c.drain().is_empty(), "executors take no framework messages; nothing is sent or changed");
    let to_nobody = SchedulerCall::Message { agent_id: AgentId::new("nope"), executor_id: ExecutorId::new("solo") };
    let err = c.master.framework_call(FW_CONN, &fw, to_nobody, t(3.0)).unwrap_err();
    assert!(matches!(err, MasterError::UnknownAgent(_)), "{err}");
    let shutdown = SchedulerCall::Shutdown { executor_id: ExecutorId::new("solo"), agent_id: c.agent.clone() };
    c.master.framework_call(FW_CONN, &fw, shutdown, t(4.0)).unwrap();
    assert_eq!(Cluster::kills(&c.drain()), vec!["solo"]);
    let request = SchedulerCall::Request { requests: vec![(Some(c.agent.clone()), "cpus:1".parse().unwrap())] };
    c.master.framework_call(FW_CONN, &fw, request, t(5.0)).unwrap();
    let request = SchedulerCall::Request { requests: vec![(Some(AgentId::new("nope")), Resources::new())] };
    assert!(c.master.framework_call(FW_CONN, &fw, request, t(5.0)).is_err());
}

#[test]
fn update_framework_changes_the_info_in_place_but_not_who_it_is() {
    let mut c = Cluster::new(false);
    let fw = c.framework.clone();
    let mut info = framework("fw", false);
    info.name = "renamed".into();
    info.failover_timeout_secs = 600.0;
    info.labels = Labels([("team".to_owned(), "web".to_owned())].into_iter().collect());
    let update = |info: FrameworkInfo, suppressed: &[&str]| SchedulerCall::UpdateFramework {
        info,
        suppressed_roles: suppressed.iter().map(|r| r.to_string()).collect(),
    };
    c.master.framework_call(FW_CONN, &fw, update(info.clone(), &[]), t(1.0)).unwrap();
    c.drain();
    let view = c.master.framework(&fw).unwrap();
    assert_eq!((view.info.name.as_str(), view.info.failover_timeout_secs), ("renamed", 600.0));
    assert!(
        c.events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::FrameworkUpdated { framework } if framework.info.name == "renamed"))
    );
    // Suppressing its role through the update stops offers; leaving it out offers again.
    c.master.framework_call(FW_CONN, &fw, update(info.clone(), &["*"]), t(2.0)).unwrap();
    assert!(c.offers(t(3.0)).is_empty());
    c.master.framework_call(FW_CONN, &fw, update(info.clone(), &[]), t(4.0)).unwrap();
    assert!(!c.offers(t(4.0)).is_empty());
    // Role, user and principal stay; a refused update changes nothing.
    let before = c.events.len();
    for (field, change) in [
        ("role", Box::new(|i: &mut FrameworkInfo| i.role = "other".into()) as Box<dyn Fn(&mut FrameworkInfo)>),
        ("user", Box::new(|i: &mut FrameworkInfo| i.user = "nobody".into())),
        ("principal", Box::new(|i: &mut FrameworkInfo| i.principal = "p".into())),
    ] {
        let mut changed = info.clone();
        changed.name = "again".into();
        change(&mut changed);
        let err = c.master.framework_call(FW_CONN, &fw, update(changed, &[]), t(5.0)).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    let mut nameless = info.clone();
    nameless.name = " ".into();
    assert!(c.master.framework_call(FW_CONN, &fw, update(nameless, &[]), t(5.0)).is_err());
    c.drain();
    assert_eq!(c.events.len(), before);
    assert_eq!(c.master.framework(&fw).unwrap().info.name, "renamed");
}

#[test]
fn a_drain_bounds_grace_periods_and_may_mark_the_agent_gone_once_drained() {
    let mut c = Cluster::new(false);
    let mut slow = task_info("slow", &c.agent, "cpus:1");
    slow.kill_grace_period_secs = Some(600.0);
    let offers = c.offers(t(1.0));
    let call = SchedulerCall::Accept {
        offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
        launches: vec![slow],
        groups: Vec::new(),
        refuse: None,
    };
    let fw = c.framework.clone();
    c.master.framework_call(FW_CONN, &fw, call, t(1.0)).unwrap();
    c.update("slow", TaskState::Running, t(2.0));
    let bad = DrainConfig { max_grace_period_secs: Some(-1.0), mark_gone: true };
    assert!(matches!(c.master.drain_agent(&c.agent.clone(), bad, t(3.0)), Err(MasterError::BadDrain(_))));
    assert!(!c.master.agent(&c.agent).unwrap().drain, "a refused drain changes nothing");

    let config = DrainConfig { max_grace_period_secs: Some(5.0), mark_gone: true };
    let agent = c.master.drain_agent(&c.agent.clone(), config, t(3.0)).unwrap();
    assert_eq!((agent.state, agent.drain_config), (AgentState::Draining, Some(config)));
    let out = c.drain();
    assert!(out.iter().any(|o| matches!(
        o,
        Output::ToAgent { command: AgentCommand::Kill { grace_secs: Some(g), max_grace_secs: Some(m), .. }, .. }
            if *g == 600.0 && *m == 5.0
    )));
    // Drained: marked gone, as asked.
    c.update("slow", TaskState::Killed, t(4.0));
    assert_eq!(c.master.agent(&c.agent).unwrap().state, AgentState::Gone);
    assert!(matches!(c.master.reactivate_agent(&c.agent.clone(), t(5.0)), Err(MasterError::AgentGone(_))));
}

#[test]
fn reactivating_forgets_the_drain_config() {
    let mut c = Cluster::new(false);
    let config = DrainConfig { max_grace_period_secs: Some(1.0), mark_gone: false };
    let agent = c.master.drain_agent(&c.agent.clone(), config, t(1.0)).unwrap();
    assert_eq!(agent.state, AgentState::Drained, "nothing to kill: drained at once");
    let agent = c.master.reactivate_agent(&c.agent.clone(), t(2.0)).unwrap();
    assert_eq!((agent.state, agent.drain_config), (AgentState::Active, None));
}
