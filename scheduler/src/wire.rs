//! Translation between the master core's calls and messages and their protobuf form
//! (scheduler API and agent protocol). Input is validated here, at the edge; every error names
//! the field.

use std::time::Duration;

use atoll_proto::convert::{ConvertError, convert_each, convert_optional, convert_required, kill_grace_from_pb};
use atoll_proto::model::{ExecutorId, FrameworkId, FrameworkInfo, OfferId, Resources, TaskInfo, TaskStatus};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;
use atoll_proto::pb::v1::scheduler as spb;
use atoll_scheduler_core::master::{
    AgentCommand, AgentNetworks, AgentRegistration, OfferView, ReportedTask, SchedulerCall, SchedulerEvent, TaskGroup,
};

/// A decoded scheduler call.
#[derive(Debug)]
pub enum Call {
    Subscribe { framework_id: Option<FrameworkId>, info: FrameworkInfo, suppressed_roles: Vec<String> },
    Other { framework_id: FrameworkId, call: SchedulerCall },
}

fn refuse_from(filters: Option<pb::Filters>, field: &str) -> Result<Option<Duration>, ConvertError> {
    let Some(secs) = filters.and_then(|f| f.refuse_seconds) else { return Ok(None) };
    if !secs.is_finite() || secs < 0.0 {
        return Err(ConvertError::OutOfRange {
            field: format!("{field}.refuse_seconds"),
            value: secs.to_string(),
            expected: "a number of seconds >= 0",
        });
    }
    Ok(Some(Duration::from_secs_f64(secs.min(1e9))))
}

fn missing(field: &str) -> ConvertError {
    ConvertError::Missing { field: field.to_owned() }
}

/// Decodes a scheduler call.
pub fn call_from_pb(call: spb::Call) -> Result<Call, ConvertError> {
    use spb::call::Type;
    let kind = Type::try_from(call.r#type)
        .map_err(|_| ConvertError::UnknownEnum { field: "type".into(), value: call.r#type })?;
    let framework_id: Option<FrameworkId> = convert_optional(call.framework_id, "framework_id")?;
    if kind == Type::Subscribe {
        let subscribe = call.subscribe.ok_or_else(|| missing("subscribe"))?;
        let mut info_pb = subscribe.framework_info.ok_or_else(|| missing("subscribe.framework_info"))?;
        let info_id: Option<FrameworkId> = convert_optional(info_pb.id.take(), "subscribe.framework_info.id")?;
        let info: FrameworkInfo = atoll_proto::convert::convert(info_pb, "subscribe.framework_info")?;
        if let (Some(a), Some(b)) = (&framework_id, &info_id)
            && a != b
        {
            return Err(ConvertError::Mismatch {
                field: "subscribe.framework_info.id".into(),
                value: b.to_string(),
                expected: a.to_string(),
            });
        }
        let suppressed_roles = subscribe.suppressed_roles;
        return Ok(Call::Subscribe { framework_id: framework_id.or(info_id), info, suppressed_roles });
    }
    let framework_id = framework_id.ok_or_else(|| missing("framework_id"))?;
    let call = match kind {
        Type::Accept => {
            let accept = call.accept.ok_or_else(|| missing("accept"))?;
            let offer_ids: Vec<OfferId> = convert_each(accept.offer_ids, "accept.offer_ids")?;
            let mut launches = Vec::new();
            let mut groups = Vec::new();
            for (i, operation) in accept.operations.into_iter().enumerate() {
                use pb::offer::operation::Type as Op;
                let field = format!("accept.operations[{i}]");
                let op_type = Op::try_from(operation.r#type).map_err(|_| ConvertError::UnknownEnum {
                    field: format!("{field}.type"),
                    value: operation.r#type,
                })?;
                match op_type {
                    Op::Launch => {
                        let launch = operation.launch.ok_or_else(|| missing(&format!("{field}.launch")))?;
                        let tasks: Vec<TaskInfo> =
                            convert_each(launch.task_infos, &format!("{field}.launch.task_infos"))?;
                        launches.extend(tasks);
                    }
                    Op::LaunchGroup => {
                        let group = operation.launch_group.ok_or_else(|| missing(&format!("{field}.launch_group")))?;
                        groups.push(task_group_from_pb(group, &format!("{field}.launch_group"))?);
                    }
                    // Atoll offers unreserved resources only: reservations and volumes are not
                    // something it can do.
                    other => {
                        return Err(ConvertError::Unsupported {
                            field: format!("{field}.type"),
                            value: other.as_str_name(),
                        });
                    }
                }
            }
            SchedulerCall::Accept {
                offer_ids,
                launches,
                groups,
                refuse: refuse_from(accept.filters, "accept.filters")?,
            }
        }
        Type::Decline => {
            let decline = call.decline.ok_or_else(|| missing("decline"))?;
            SchedulerCall::Decline {
                offer_ids: convert_each(decline.offer_ids, "decline.offer_ids")?,
                refuse: refuse_from(decline.filters, "decline.filters")?,
            }
        }
        Type::Revive => SchedulerCall::Revive,
        Type::Suppress => SchedulerCall::Suppress,
        Type::Kill => {
            let kill = call.kill.ok_or_else(|| missing("kill"))?;
            SchedulerCall::Kill {
                task_id: convert_required(kill.task_id, "kill.task_id")?,
                agent_id: convert_optional(kill.agent_id, "kill.agent_id")?,
                grace_secs: kill_grace_from_pb(kill.kill_policy).map_err(|e| e.within("kill.kill_policy"))?,
            }
        }
        Type::Acknowledge => {
            let ack = call.acknowledge.ok_or_else(|| missing("acknowledge"))?;
            let uuid = atoll_proto::convert::uuid_from_pb(&ack.uuid, "acknowledge.uuid")?
                .ok_or_else(|| missing("acknowledge.uuid"))?;
            SchedulerCall::Acknowledge {
                agent_id: convert_required(ack.agent_id, "acknowledge.agent_id")?,
                task_id: convert_required(ack.task_id, "acknowledge.task_id")?,
                uuid,
            }
        }
        Type::Reconcile => {
            let reconcile = call.reconcile.unwrap_or_default();
            let mut tasks = Vec::new();
            for (i, task) in reconcile.tasks.into_iter().enumerate() {
                let field = format!("reconcile.tasks[{i}]");
                tasks.push((
                    convert_required(task.task_id, &format!("{field}.task_id"))?,
                    convert_optional(task.agent_id, &format!("{field}.agent_id"))?,
                ));
            }
            SchedulerCall::Reconcile { tasks }
        }
        Type::Teardown => SchedulerCall::Teardown,
        Type::Shutdown => {
            let shutdown = call.shutdown.ok_or_else(|| missing("shutdown"))?;
            SchedulerCall::Shutdown {
                executor_id: convert_required(shutdown.executor_id, "shutdown.executor_id")?,
                agent_id: convert_required(shutdown.agent_id, "shutdown.agent_id")?,
            }
        }
        Type::Message => {
            let message = call.message.ok_or_else(|| missing("message"))?;
            SchedulerCall::Message {
                agent_id: convert_required(message.agent_id, "message.agent_id")?,
                executor_id: convert_required(message.executor_id, "message.executor_id")?,
            }
        }
        Type::Request => {
            let request = call.request.unwrap_or_default();
            let mut requests = Vec::new();
            for (i, one) in request.requests.into_iter().enumerate() {
                let field = format!("request.requests[{i}]");
                let resources: Resources = atoll_proto::convert::convert(one.resources, &format!("{field}.resources"))?;
                requests.push((convert_optional(one.agent_id, &format!("{field}.agent_id"))?, resources));
            }
            SchedulerCall::Request { requests }
        }
        Type::UpdateFramework => {
            let update = call.update_framework.ok_or_else(|| missing("update_framework"))?;
            let mut info_pb = update.framework_info.ok_or_else(|| missing("update_framework.framework_info"))?;
            let info_id: FrameworkId = convert_required(info_pb.id.take(), "update_framework.framework_info.id")?;
            if info_id != framework_id {
                return Err(ConvertError::Mismatch {
                    field: "update_framework.framework_info.id".into(),
                    value: info_id.to_string(),
                    expected: framework_id.to_string(),
                });
            }
            let info: FrameworkInfo = atoll_proto::convert::convert(info_pb, "update_framework.framework_info")?;
            SchedulerCall::UpdateFramework { info, suppressed_roles: update.suppressed_roles }
        }
        Type::Unknown
        | Type::Subscribe
        | Type::AcceptInverseOffers
        | Type::DeclineInverseOffers
        | Type::AcknowledgeOperationStatus
        | Type::ReconcileOperations => {
            return Err(ConvertError::Unsupported { field: "type".into(), value: kind.as_str_name() });
        }
    };
    Ok(Call::Other { framework_id, call })
}

/// A LAUNCH_GROUP's executor and tasks. Atoll runs task groups with its own executor (Mesos's
/// default executor's part): a custom one, with a command of its own, cannot be honoured.
fn task_group_from_pb(group: pb::offer::operation::LaunchGroup, field: &str) -> Result<TaskGroup, ConvertError> {
    let executor = group.executor.ok_or_else(|| missing(&format!("{field}.executor")))?;
    if executor.r#type == Some(pb::executor_info::Type::Custom as i32) || executor.command.is_some() {
        return Err(ConvertError::Unsupported { field: format!("{field}.executor.type"), value: "CUSTOM" });
    }
    let executor_id: ExecutorId = convert_required(executor.executor_id, &format!("{field}.executor.executor_id"))?;
    let executor_resources: Resources =
        atoll_proto::convert::convert(executor.resources, &format!("{field}.executor.resources"))?;
    let task_group = group.task_group.ok_or_else(|| missing(&format!("{field}.task_group")))?;
    let tasks: Vec<TaskInfo> = convert_each(task_group.tasks, &format!("{field}.task_group.tasks"))?;
    Ok(TaskGroup { executor_id, executor_resources, tasks })
}

pub fn offer_to_pb(offer: &OfferView) -> pb::Offer {
    let allocation = pb::resource::AllocationInfo { role: offer.role.clone() };
    let mut resources: Vec<pb::Resource> = (&offer.resources).into();
    // MULTI_ROLE frameworks read the role from each resource.
    for resource in &mut resources {
        resource.allocation_info = Some(allocation.clone());
    }
    pb::Offer {
        id: Some((&offer.id).into()),
        framework_id: Some((&offer.framework_id).into()),
        agent_id: Some((&offer.agent_id).into()),
        hostname: offer.hostname.clone(),
        resources,
        attributes: (&offer.attributes).into(),
        allocation_info: Some(allocation),
        agent_address: offer.agent_address.to_string(),
    }
}

pub fn heartbeat_pb() -> spb::Event {
    spb::Event { r#type: spb::event::Type::Heartbeat as i32, ..Default::default() }
}

/// An event for a framework; `master_info` is told in SUBSCRIBED (the Mesos HTTP API names
/// the master there).
pub fn event_to_pb(event: &SchedulerEvent, stream_id: &str, master_info: Option<&pb::MasterInfo>) -> spb::Event {
    use spb::event::Type;
    let mut out = spb::Event::default();
    match event {
        SchedulerEvent::Subscribed { framework_id, heartbeat_interval } => {
            out.r#type = Type::Subscribed as i32;
            out.subscribed = Some(spb::event::Subscribed {
                framework_id: Some(framework_id.into()),
                heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
                master_info: master_info.cloned(),
                stream_id: stream_id.to_owned(),
            });
        }
        SchedulerEvent::Offers(offers) => {
            out.r#type = Type::Offers as i32;
            out.offers = Some(spb::event::Offers { offers: offers.iter().map(offer_to_pb).collect() });
        }
        SchedulerEvent::Rescind(offer_id) => {
            out.r#type = Type::Rescind as i32;
            out.rescind = Some(spb::event::Rescind { offer_id: Some(offer_id.into()) });
        }
        SchedulerEvent::Update(status) => {
            out.r#type = Type::Update as i32;
            out.update = Some(spb::event::Update { status: Some(status.into()) });
        }
        SchedulerEvent::Failure { agent_id } => {
            out.r#type = Type::Failure as i32;
            out.failure =
                Some(spb::event::Failure { agent_id: Some(agent_id.into()), executor_id: None, status: None });
        }
        SchedulerEvent::Error(message) => {
            out.r#type = Type::Error as i32;
            out.error = Some(spb::event::Error { message: Some(message.clone()) });
        }
    }
    out
}

pub fn agent_command_to_pb(command: &AgentCommand) -> apb::MasterMessage {
    use apb::master_message::Message;
    let message = match command {
        AgentCommand::Registered { agent_id, heartbeat_interval, networks } => Message::Registered(apb::Registered {
            agent_id: Some(agent_id.into()),
            heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
            networks: Some(networks_to_pb(networks)),
        }),
        AgentCommand::Networks { networks } => Message::Networks(networks_to_pb(networks)),
        AgentCommand::Launch { framework, task } => {
            Message::LaunchTask(apb::LaunchTask { framework: Some(framework.into()), task: Some(task.into()) })
        }
        AgentCommand::Kill { framework_id, task_id, grace_secs, max_grace_secs } => Message::KillTask(apb::KillTask {
            framework_id: Some(framework_id.into()),
            task_id: Some(task_id.into()),
            kill_policy: atoll_proto::convert::kill_policy_to_pb(*grace_secs),
            max_grace_seconds: *max_grace_secs,
        }),
        AgentCommand::Acknowledge { framework_id, task_id, uuid } => Message::Acknowledge(apb::AcknowledgeUpdate {
            framework_id: Some(framework_id.into()),
            task_id: Some(task_id.into()),
            uuid: uuid.as_bytes().to_vec(),
        }),
        AgentCommand::ShutdownFramework { framework_id } => {
            Message::ShutdownFramework(apb::ShutdownFramework { framework_id: Some(framework_id.into()) })
        }
        AgentCommand::Shutdown { message } => Message::Shutdown(apb::Shutdown { message: message.clone() }),
    };
    apb::MasterMessage { message: Some(message) }
}

fn networks_to_pb(networks: &AgentNetworks) -> apb::Networks {
    apb::Networks {
        subnets: networks.subnets.iter().map(Into::into).collect(),
        reserved: networks.reserved.iter().map(ToString::to_string).collect(),
    }
}

pub fn registration_from_pb(register: apb::Register) -> Result<AgentRegistration, ConvertError> {
    let mut info_pb = register.info.ok_or_else(|| missing("info"))?;
    let agent_id = convert_optional(info_pb.id.take(), "info.id")?;
    let info = atoll_proto::convert::convert(info_pb, "info")?;
    let mut tasks = Vec::new();
    for (i, task) in register.tasks.into_iter().enumerate() {
        let field = format!("tasks[{i}]");
        let info: TaskInfo = convert_required(task.task, &format!("{field}.task"))?;
        let status: TaskStatus = convert_required(task.status, &format!("{field}.status"))?;
        tasks.push(ReportedTask {
            framework_id: convert_required(task.framework_id, &format!("{field}.framework_id"))?,
            info,
            status,
        });
    }
    Ok(AgentRegistration { agent_id, info, version: register.version, tasks })
}

pub fn status_update_from_pb(update: apb::StatusUpdate) -> Result<(FrameworkId, TaskStatus), ConvertError> {
    let framework_id = convert_required(update.framework_id, "framework_id")?;
    let status: TaskStatus = convert_required(update.status, "status")?;
    if status.uuid.is_none() {
        return Err(missing("status.uuid"));
    }
    Ok((framework_id, status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_proto::model::{AgentId, Attributes, Resources};

    #[test]
    fn offers_carry_the_agent_and_role() {
        let offered: Resources = "cpus:1;ports:[31000-31009]".parse().unwrap();
        let view = OfferView {
            id: OfferId::new("o1"),
            framework_id: FrameworkId::new("f1"),
            agent_id: AgentId::new("a1"),
            hostname: "node1".into(),
            agent_address: "10.0.0.1:5051".parse().unwrap(),
            attributes: "rack:r1".parse::<Attributes>().unwrap(),
            resources: offered.clone(),
            role: "web".into(),
        };
        let offer = offer_to_pb(&view);
        assert_eq!(offer.id.unwrap().value, "o1");
        assert_eq!(offer.agent_address, "10.0.0.1:5051");
        assert_eq!(offer.allocation_info.unwrap().role, "web");
        assert!(offer.resources.iter().all(|r| r.role == "*" && r.allocation_info.as_ref().unwrap().role == "web"));
        assert_eq!(Resources::try_from(offer.resources).unwrap(), offered);
    }

    #[test]
    fn bad_calls_name_the_field() {
        let call = spb::Call {
            framework_id: Some(pb::FrameworkId { value: "f".into() }),
            r#type: spb::call::Type::Accept as i32,
            accept: Some(spb::call::Accept {
                offer_ids: vec![pb::OfferId { value: "o".into() }],
                operations: vec![pb::offer::Operation {
                    r#type: pb::offer::operation::Type::Launch as i32,
                    launch: Some(pb::offer::operation::Launch {
                        task_infos: vec![pb::TaskInfo { name: "t".into(), ..Default::default() }],
                    }),
                    ..Default::default()
                }],
                filters: Some(pb::Filters { refuse_seconds: Some(1.0) }),
            }),
            ..Default::default()
        };
        let err = call_from_pb(call).unwrap_err();
        assert!(err.to_string().starts_with("accept.operations[0].launch.task_infos[0].task_id"), "{err}");
        let err = call_from_pb(spb::Call { r#type: spb::call::Type::Revive as i32, ..Default::default() }).unwrap_err();
        assert_eq!(err.to_string(), "framework_id: missing");
        let err = call_from_pb(spb::Call { r#type: 99, ..Default::default() }).unwrap_err();
        assert_eq!(err.to_string(), "type: unknown enum value 99");
        let decline = spb::Call {
            framework_id: Some(pb::FrameworkId { value: "f".into() }),
            r#type: spb::call::Type::Decline as i32,
            decline: Some(spb::call::Decline {
                offer_ids: vec![],
                filters: Some(pb::Filters { refuse_seconds: Some(-1.0) }),
            }),
            ..Default::default()
        };
        assert!(call_from_pb(decline).unwrap_err().to_string().starts_with("decline.filters.refuse_seconds"));
    }

    fn accept_with(operation: pb::offer::Operation) -> spb::Call {
        spb::Call {
            framework_id: Some(pb::FrameworkId { value: "f".into() }),
            r#type: spb::call::Type::Accept as i32,
            accept: Some(spb::call::Accept {
                offer_ids: vec![pb::OfferId { value: "o".into() }],
                operations: vec![operation],
                filters: None,
            }),
            ..Default::default()
        }
    }

    fn wire_task(id: &str) -> pb::TaskInfo {
        let info = atoll_proto::model::TaskInfo {
            name: id.into(),
            task_id: atoll_proto::model::TaskId::new(id),
            agent_id: AgentId::new("a1"),
            resources: "cpus:0.5;mem:32".parse().unwrap(),
            command: atoll_proto::model::CommandInfo::shell("sleep 1"),
            labels: Default::default(),
            discovery: None,
            kill_grace_period_secs: None,
            health_check: None,
            networks: Vec::new(),
        };
        (&info).into()
    }

    #[test]
    fn launch_group_takes_the_default_executor_and_refuses_other_operations_by_name() {
        use pb::offer::operation::{LaunchGroup, Type as Op};
        let executor = pb::ExecutorInfo {
            r#type: Some(pb::executor_info::Type::Default as i32),
            executor_id: Some(pb::ExecutorId { value: "pod".into() }),
            resources: (&"cpus:0.1;mem:32".parse::<Resources>().unwrap()).into(),
            ..Default::default()
        };
        let group = |executor: pb::ExecutorInfo| pb::offer::Operation {
            r#type: Op::LaunchGroup as i32,
            launch_group: Some(LaunchGroup {
                executor: Some(executor),
                task_group: Some(pb::TaskGroupInfo { tasks: vec![wire_task("a"), wire_task("b")] }),
            }),
            ..Default::default()
        };
        let Call::Other { call: SchedulerCall::Accept { launches, groups, .. }, .. } =
            call_from_pb(accept_with(group(executor.clone()))).unwrap()
        else {
            panic!("an accept")
        };
        assert!(launches.is_empty());
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].executor_id.as_str(), "pod");
        assert_eq!(groups[0].executor_resources.to_string(), "cpus:0.1;mem:32");
        assert_eq!(groups[0].tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);

        let custom = pb::ExecutorInfo { r#type: Some(pb::executor_info::Type::Custom as i32), ..executor.clone() };
        let err = call_from_pb(accept_with(group(custom))).unwrap_err().to_string();
        assert!(err.starts_with("accept.operations[0].launch_group.executor.type"), "{err}");
        let nameless = pb::ExecutorInfo { executor_id: None, ..executor };
        let err = call_from_pb(accept_with(group(nameless))).unwrap_err().to_string();
        assert_eq!(err, "accept.operations[0].launch_group.executor.executor_id: missing");
        let reserve = pb::offer::Operation { r#type: Op::Reserve as i32, ..Default::default() };
        let err = call_from_pb(accept_with(reserve)).unwrap_err().to_string();
        assert!(err.starts_with("accept.operations[0].type") && err.contains("RESERVE"), "{err}");
    }

    #[test]
    fn update_framework_must_name_the_calling_framework() {
        let call = |id: &str| spb::Call {
            framework_id: Some(pb::FrameworkId { value: "f".into() }),
            r#type: spb::call::Type::UpdateFramework as i32,
            update_framework: Some(spb::call::UpdateFramework {
                framework_info: Some(pb::FrameworkInfo {
                    id: Some(pb::FrameworkId { value: id.into() }),
                    name: "n".into(),
                    ..Default::default()
                }),
                suppressed_roles: vec!["*".into()],
            }),
            ..Default::default()
        };
        assert!(matches!(
            call_from_pb(call("f")).unwrap(),
            Call::Other { call: SchedulerCall::UpdateFramework { suppressed_roles, .. }, .. } if suppressed_roles == ["*"]
        ));
        let err = call_from_pb(call("g")).unwrap_err().to_string();
        assert!(err.starts_with("update_framework.framework_info.id"), "{err}");
        let inverse = spb::Call {
            framework_id: Some(pb::FrameworkId { value: "f".into() }),
            r#type: spb::call::Type::AcceptInverseOffers as i32,
            ..Default::default()
        };
        assert!(call_from_pb(inverse).unwrap_err().to_string().contains("ACCEPT_INVERSE_OFFERS"));
    }

    /// What Atoll sends frameworks carries every field Mesos's protos require, even when its
    /// value is proto3's default: scalar resources and attributes, TASK_STARTING, no reason.
    #[test]
    fn offers_and_updates_carry_every_field_mesos_requires() {
        use prost::Message as _;
        use prost_reflect::DynamicMessage;
        let view = OfferView {
            id: OfferId::new("o1"),
            framework_id: FrameworkId::new("f1"),
            agent_id: AgentId::new("a1"),
            hostname: "node1".into(),
            agent_address: "10.0.0.1:5051".parse().unwrap(),
            attributes: "rack:r1;level:0".parse::<Attributes>().unwrap(),
            resources: "cpus:1;mem:0.5;ports:[31000-31009]".parse().unwrap(),
            role: "*".into(),
        };
        let mut starting = TaskStatus::new(
            atoll_proto::model::TaskId::new("t"),
            atoll_proto::model::TaskState::Starting,
            atoll_proto::model::Source::Executor,
            atoll_proto::model::Time(1_000),
        );
        starting.uuid = Some(uuid::Uuid::nil());
        let master_info =
            pb::MasterInfo { id: Some("m".into()), ip: Some(16777343), port: Some(5050), ..Default::default() };
        let events = [
            SchedulerEvent::Subscribed { framework_id: FrameworkId::new("f1"), heartbeat_interval: Duration::ZERO },
            SchedulerEvent::Offers(vec![view]),
            SchedulerEvent::Update(starting),
            SchedulerEvent::Rescind(OfferId::new("o1")),
            SchedulerEvent::Failure { agent_id: AgentId::new("a1") },
            SchedulerEvent::Error(String::new()),
        ];
        for event in &events {
            let bytes = event_to_pb(event, "s", Some(&master_info)).encode_to_vec();
            let dynamic =
                DynamicMessage::decode(crate::mesos_scheduler::message("atoll.v1.scheduler.Event"), bytes.as_slice())
                    .unwrap();
            let missing = crate::mesos_required::missing_required(&dynamic);
            assert!(missing.is_empty(), "{event:?} lacks {missing:?}");
        }
    }
}
