//! Test support: the fields Mesos's own protos mark `required`, for every message Atoll keeps
//! with Mesos's numbers. Atoll's protos are proto3, where a field is simply absent when it has
//! its default value; a proto2 reader (Mesos's C++ and Java libraries, mesos-go) rejects a
//! message that lacks a required field. Tests walk what Atoll puts on the wire and check each
//! of these is there. Generated from apache/mesos `include/mesos/v1/{mesos,scheduler/scheduler,
//! master/master}.proto`.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

const REQUIRED: &[(&str, &str)] = &[
    ("atoll.v1.Address", "port"),
    ("atoll.v1.AgentID", "value"),
    ("atoll.v1.AgentInfo", "hostname"),
    ("atoll.v1.Attribute", "name"),
    ("atoll.v1.Attribute", "type"),
    ("atoll.v1.ContainerInfo", "type"),
    ("atoll.v1.DiscoveryInfo", "visibility"),
    ("atoll.v1.DrainInfo", "config"),
    ("atoll.v1.DrainInfo", "state"),
    ("atoll.v1.DurationInfo", "nanoseconds"),
    ("atoll.v1.Environment.Variable", "name"),
    ("atoll.v1.ExecutorID", "value"),
    ("atoll.v1.ExecutorInfo", "executor_id"),
    ("atoll.v1.Flag", "name"),
    ("atoll.v1.FrameworkID", "value"),
    ("atoll.v1.FrameworkInfo", "name"),
    ("atoll.v1.FrameworkInfo", "user"),
    ("atoll.v1.HealthCheck.HTTPCheckInfo", "port"),
    ("atoll.v1.HealthCheck.TCPCheckInfo", "port"),
    ("atoll.v1.Label", "key"),
    ("atoll.v1.MasterInfo", "id"),
    ("atoll.v1.MasterInfo", "ip"),
    ("atoll.v1.MasterInfo", "port"),
    ("atoll.v1.Metric", "name"),
    ("atoll.v1.NetworkInfo.PortMapping", "container_port"),
    ("atoll.v1.NetworkInfo.PortMapping", "host_port"),
    ("atoll.v1.Offer", "agent_id"),
    ("atoll.v1.Offer", "framework_id"),
    ("atoll.v1.Offer", "hostname"),
    ("atoll.v1.Offer", "id"),
    ("atoll.v1.OfferID", "value"),
    ("atoll.v1.Port", "number"),
    ("atoll.v1.Resource", "name"),
    ("atoll.v1.Resource", "type"),
    ("atoll.v1.Role", "name"),
    ("atoll.v1.Role", "weight"),
    ("atoll.v1.Task", "agent_id"),
    ("atoll.v1.Task", "framework_id"),
    ("atoll.v1.Task", "name"),
    ("atoll.v1.Task", "state"),
    ("atoll.v1.Task", "task_id"),
    ("atoll.v1.TaskID", "value"),
    ("atoll.v1.TaskInfo", "agent_id"),
    ("atoll.v1.TaskInfo", "name"),
    ("atoll.v1.TaskInfo", "task_id"),
    ("atoll.v1.TaskStatus", "state"),
    ("atoll.v1.TaskStatus", "task_id"),
    ("atoll.v1.TimeInfo", "nanoseconds"),
    ("atoll.v1.Value.Range", "begin"),
    ("atoll.v1.Value.Range", "end"),
    ("atoll.v1.Value.Scalar", "value"),
    ("atoll.v1.Value.Text", "value"),
    ("atoll.v1.VersionInfo", "version"),
    ("atoll.v1.WeightInfo", "weight"),
    ("atoll.v1.scheduler.Call.Acknowledge", "agent_id"),
    ("atoll.v1.scheduler.Call.Acknowledge", "task_id"),
    ("atoll.v1.scheduler.Call.Acknowledge", "uuid"),
    ("atoll.v1.scheduler.Call.Kill", "task_id"),
    ("atoll.v1.scheduler.Call.Reconcile.Task", "task_id"),
    ("atoll.v1.scheduler.Call.Subscribe", "framework_info"),
    ("atoll.v1.scheduler.Event.Error", "message"),
    ("atoll.v1.scheduler.Event.Rescind", "offer_id"),
    ("atoll.v1.scheduler.Event.Subscribed", "framework_id"),
    ("atoll.v1.scheduler.Event.Update", "status"),
    ("atoll.v1.master.Call.DeactivateAgent", "agent_id"),
    ("atoll.v1.master.Call.DrainAgent", "agent_id"),
    ("atoll.v1.master.Call.MarkAgentGone", "agent_id"),
    ("atoll.v1.master.Call.ReactivateAgent", "agent_id"),
    ("atoll.v1.master.Event.AgentAdded", "agent"),
    ("atoll.v1.master.Event.AgentRemoved", "agent_id"),
    ("atoll.v1.master.Event.FrameworkAdded", "framework"),
    ("atoll.v1.master.Event.FrameworkRemoved", "framework_info"),
    ("atoll.v1.master.Event.FrameworkUpdated", "framework"),
    ("atoll.v1.master.Event.TaskAdded", "task"),
    ("atoll.v1.master.Event.TaskUpdated", "framework_id"),
    ("atoll.v1.master.Event.TaskUpdated", "state"),
    ("atoll.v1.master.Event.TaskUpdated", "status"),
    ("atoll.v1.master.Response.GetAgents.Agent", "active"),
    ("atoll.v1.master.Response.GetAgents.Agent", "agent_info"),
    ("atoll.v1.master.Response.GetAgents.Agent", "version"),
    ("atoll.v1.master.Response.GetExecutors.Executor", "agent_id"),
    ("atoll.v1.master.Response.GetExecutors.Executor", "executor_info"),
    ("atoll.v1.master.Response.GetFrameworks.Framework", "active"),
    ("atoll.v1.master.Response.GetFrameworks.Framework", "connected"),
    ("atoll.v1.master.Response.GetFrameworks.Framework", "framework_info"),
    ("atoll.v1.master.Response.GetFrameworks.Framework", "recovered"),
    ("atoll.v1.master.Response.GetHealth", "healthy"),
    ("atoll.v1.master.Response.GetVersion", "version_info"),
];

/// The required fields missing anywhere in `message`, as paths (`offers.offers[0].resources[1].type`).
pub fn missing_required(message: &DynamicMessage) -> Vec<String> {
    let mut missing = Vec::new();
    walk(message, "", &mut missing);
    missing
}

fn walk(message: &DynamicMessage, path: &str, missing: &mut Vec<String>) {
    let descriptor = message.descriptor();
    for (name, field) in REQUIRED.iter().filter(|(name, _)| *name == descriptor.full_name()) {
        if !message.has_field_by_name(field) {
            missing.push(format!("{path}{field} (in {name})"));
        }
    }
    for (field, value) in message.fields() {
        let here = format!("{path}{}", field.name());
        match value {
            Value::Message(inner) => walk(inner, &format!("{here}."), missing),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(inner) = item.as_message() {
                        walk(inner, &format!("{here}[{i}]."), missing);
                    }
                }
            }
            Value::Map(entries) => {
                for (key, item) in entries {
                    if let Some(inner) = item.as_message() {
                        walk(inner, &format!("{here}[{key:?}]."), missing);
                    }
                }
            }
            _ => {}
        }
    }
}
