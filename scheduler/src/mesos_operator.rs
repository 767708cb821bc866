//! The Mesos v1 operator HTTP API, `POST /api/v1` (and any path below it, as Mesos routes by
//! prefix), in Mesos's JSON and protobuf: the read calls (`GET_HEALTH`, `GET_VERSION`,
//! `GET_FLAGS`, `GET_METRICS`, `GET_MASTER`, `GET_STATE`, `GET_AGENTS`, `GET_FRAMEWORKS`,
//! `GET_TASKS`, `GET_EXECUTORS`, `GET_ROLES`, `GET_WEIGHTS`), `UPDATE_WEIGHTS`, agent
//! maintenance (`DRAIN_AGENT`, `DEACTIVATE_AGENT`, `REACTIVATE_AGENT`, `MARK_AGENT_GONE`), and
//! `SUBSCRIBE`: a RecordIO stream that starts with `SUBSCRIBED` (the whole state) and follows the master's own event log as `TASK_ADDED`, `TASK_UPDATED`,
//! `AGENT_ADDED`, `AGENT_REMOVED`, `FRAMEWORK_ADDED`, `FRAMEWORK_UPDATED`, `FRAMEWORK_REMOVED`,
//! with a `HEARTBEAT` whenever it was quiet. Tools that follow a Mesos master (Mesos-DNS,
//! dcos-net, Atoll's own drop-in modes) follow an Atoll master the same way.
//!
//! - A call is `application/json` (Mesos's JSON) or `application/x-protobuf` (Mesos's
//!   `mesos.v1.master.Call`, whose field numbers `atoll/v1/master.proto` keeps); both are read
//!   through that `Call`, so a call means the same in either. The answer (and SUBSCRIBE's
//!   records) is in the type `Accept` asks for, else the call's own. Status codes as the
//!   scheduler API: 415 for a Content-Type and 406 for an `Accept` it does not speak, 400 for a
//!   call that does not decode or lacks what it needs (naming the field), or that is a Mesos
//!   call this master does not serve.
//! - Answers are built once, as Mesos's JSON. The protobuf answer is that JSON read strictly
//!   into master.proto's `Response` or `Event`: a field the protos lack is an error (a 500, or
//!   the end of a SUBSCRIBE stream), never a silent loss.
//!
//! The JSON of Mesos's own messages inside (task and framework infos, statuses, resources) is
//! produced from Atoll's protobuf types, which keep Mesos's names; Atoll's own fields there
//! (numbered from 1000: an agent's `address`, a status's `exit_code`) are left out, as Mesos
//! has no such fields.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atoll_proto::model::{
    Agent, AgentId, AgentState, ClusterState, DrainConfig, EventKind, Framework, StreamMessage, Task, TaskStatus, Time,
};
use atoll_proto::pb::v1 as pb;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use prost::Message as _;
use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Value, json};

use crate::actor::{Maintenance, MasterHandle};
use crate::mesos_scheduler::{
    Encoding, MesosApiError, decode_message, dynamic_json, mesos_json, message, message_from_json, record_io,
    request_encoding, response_encoding,
};
use crate::mesos_state::{MasterIdentity, agent_pid};

/// The messages of `atoll/v1/master.proto`.
const CALL: &str = "atoll.v1.master.Call";
const RESPONSE: &str = "atoll.v1.master.Response";
const EVENT: &str = "atoll.v1.master.Event";

/// Atoll's own fields in Mesos's messages are numbered from here.
const ATOLL_FIELDS: u32 = 1000;

/// The calls this master serves.
const SERVED: &str = "GET_HEALTH, GET_VERSION, GET_FLAGS, GET_METRICS, GET_MASTER, GET_STATE, GET_AGENTS, \
                      GET_FRAMEWORKS, GET_TASKS, GET_EXECUTORS, GET_ROLES, GET_WEIGHTS, UPDATE_WEIGHTS, \
                      DRAIN_AGENT, DEACTIVATE_AGENT, REACTIVATE_AGENT, MARK_AGENT_GONE, SUBSCRIBE";

#[derive(Clone)]
struct Operator {
    master: MasterHandle,
    identity: Arc<MasterIdentity>,
}

pub fn router(master: MasterHandle, identity: MasterIdentity) -> Router {
    Router::new()
        .route("/api/v1", post(operator_call))
        .route("/api/v1/{*rest}", post(operator_call))
        .with_state(Operator { master, identity: Arc::new(identity) })
}

async fn operator_call(State(operator): State<Operator>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(operator, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn nanoseconds(time: Time) -> Value {
    json!({ "nanoseconds": (time.as_secs_f64() * 1e9) as i64 })
}

fn id(value: &str) -> Value {
    json!({ "value": value })
}

/// A protobuf message of Atoll's (named `name`) in Mesos's JSON, without Atoll's own fields.
fn mesos_only_json(message_value: &impl prost::Message, name: &str) -> Value {
    let mut value = mesos_json(message_value, name);
    without_atoll_fields(&mut value, &message(name));
    value
}

/// Removes, at every depth, the fields Atoll adds to Mesos's messages.
fn without_atoll_fields(value: &mut Value, descriptor: &MessageDescriptor) {
    let Value::Object(object) = value else { return };
    for field in descriptor.fields() {
        if field.number() >= ATOLL_FIELDS {
            object.remove(field.name());
        } else if let Kind::Message(inner) = field.kind() {
            match object.get_mut(field.name()) {
                Some(Value::Array(items)) => items.iter_mut().for_each(|item| without_atoll_fields(item, &inner)),
                Some(item) => without_atoll_fields(item, &inner),
                None => {}
            }
        }
    }
}

fn status_json(status: &TaskStatus) -> Value {
    mesos_only_json(&pb::TaskStatus::from(status), "atoll.v1.TaskStatus")
}

/// Mesos's v1 `Task` for an Atoll task.
pub fn task_json(task: &Task) -> Value {
    let mut value = mesos_only_json(&pb::TaskInfo::from(task), "atoll.v1.TaskInfo");
    if let Value::Object(object) = &mut value {
        // A task's info carries its command; Mesos's Task does not.
        object.remove("command");
        object.insert("framework_id".into(), id(task.framework_id.as_str()));
        object.insert("agent_id".into(), id(task.agent_id.as_str()));
        object.insert("state".into(), serde_json::to_value(task.state).unwrap_or(Value::Null));
        object.insert("statuses".into(), json!([status_json(&task.status)]));
    }
    value
}

fn agent_json(agent: &Agent) -> Value {
    let mut info = mesos_only_json(&pb::AgentInfo::from(agent), "atoll.v1.AgentInfo");
    if let Value::Object(object) = &mut info {
        object.insert("id".into(), id(agent.id.as_str()));
        object.insert("port".into(), json!(agent.address.port()));
    }
    let resources = |r: &atoll_proto::model::Resources| {
        Vec::<pb::Resource>::from(r).iter().map(|r| mesos_only_json(r, "atoll.v1.Resource")).collect::<Vec<_>>()
    };
    let mut agent_value = json!({
        "agent_info": info,
        "active": agent.state == AgentState::Active,
        "deactivated": agent.drain || agent.deactivated || agent.state != AgentState::Active,
        "version": atoll_proto_version(agent),
        "pid": agent_pid(agent),
        "registered_time": nanoseconds(agent.registered_at),
        "total_resources": resources(&agent.resources),
        "allocated_resources": resources(&agent.used),
        "offered_resources": [],
        "capabilities": [{"type": "MULTI_ROLE"}, {"type": "HIERARCHICAL_ROLE"}, {"type": "AGENT_DRAINING"}],
    });
    let drain = drain_info(agent);
    if !drain.is_null() {
        agent_value["drain_info"] = drain;
    }
    agent_value
}

/// Mesos's `DrainInfo` of a draining or drained agent (null for any other).
pub fn drain_info(agent: &Agent) -> Value {
    let state = match agent.state {
        AgentState::Draining => "DRAINING",
        AgentState::Drained => "DRAINED",
        _ => return Value::Null,
    };
    let config = agent.drain_config.unwrap_or_default();
    let mut config_json = json!({ "mark_gone": config.mark_gone });
    if let Some(secs) = config.max_grace_period_secs {
        config_json["max_grace_period"] = json!({ "nanoseconds": (secs * 1e9).round() as i64 });
    }
    json!({ "state": state, "config": config_json })
}

fn atoll_proto_version(agent: &Agent) -> &str {
    if agent.version.is_empty() { crate::mesos_state::MESOS_VERSION } else { &agent.version }
}

fn framework_info_json(framework: &Framework) -> Value {
    let mut info = mesos_only_json(&pb::FrameworkInfo::from(framework), "atoll.v1.FrameworkInfo");
    if let Value::Object(object) = &mut info {
        object.insert("id".into(), id(framework.id.as_str()));
    }
    info
}

fn framework_json(framework: &Framework) -> Value {
    json!({
        "framework_info": framework_info_json(framework),
        "active": framework.connected,
        "connected": framework.connected,
        "recovered": false,
        "registered_time": nanoseconds(framework.registered_at),
    })
}

fn get_agents(state: &ClusterState) -> Value {
    json!({ "agents": state.agents.iter().map(agent_json).collect::<Vec<_>>(), "recovered_agents": [] })
}

fn get_frameworks(state: &ClusterState) -> Value {
    json!({ "frameworks": state.frameworks.iter().map(framework_json).collect::<Vec<_>>(), "completed_frameworks": [] })
}

fn get_tasks(state: &ClusterState) -> Value {
    let (done, live): (Vec<&Task>, Vec<&Task>) = state.tasks.iter().partition(|t| t.state.is_terminal());
    json!({
        "tasks": live.into_iter().map(task_json).collect::<Vec<_>>(),
        "completed_tasks": done.into_iter().map(task_json).collect::<Vec<_>>(),
        "pending_tasks": [],
        "unreachable_tasks": [],
        "orphan_tasks": [],
    })
}

/// Atoll's tasks run under command executors the master does not track, as in Mesos.
fn get_executors() -> Value {
    json!({ "executors": [], "orphan_executors": [] })
}

/// `GET_STATE`'s answer, also the body of `SUBSCRIBED`.
pub fn get_state(state: &ClusterState) -> Value {
    json!({
        "get_tasks": get_tasks(state),
        "get_executors": get_executors(),
        "get_frameworks": get_frameworks(state),
        "get_agents": get_agents(state),
    })
}

fn get_flags(identity: &MasterIdentity) -> Value {
    json!({ "flags": identity.flags.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>() })
}

fn get_master(identity: &MasterIdentity) -> Value {
    json!({
        "master_info": identity.master_info(),
        "start_time": identity.start_time.as_secs_f64(),
        "elected_time": identity.elected_time.as_secs_f64(),
    })
}

fn get_metrics(state: &ClusterState, identity: &MasterIdentity, now: Time) -> Value {
    let snapshot = crate::mesos_state::metrics_snapshot(state, identity, now);
    let metrics: Vec<Value> = snapshot
        .as_object()
        .map(|m| m.iter().map(|(name, value)| json!({"name": name, "value": value})).collect())
        .unwrap_or_default();
    json!({ "metrics": metrics })
}

fn get_weights(weights: &BTreeMap<String, f64>) -> Value {
    let infos: Vec<Value> = weights.iter().map(|(role, weight)| json!({"role": role, "weight": weight})).collect();
    json!({ "weight_infos": infos })
}

fn get_roles(state: &ClusterState, weights: &BTreeMap<String, f64>) -> Value {
    let mut roles: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for framework in &state.frameworks {
        roles.entry(framework.info.role.clone()).or_default().push(id(framework.id.as_str()));
    }
    let roles: Vec<Value> = roles
        .into_iter()
        .map(|(name, frameworks)| {
            json!({ "name": name, "weight": weights.get(&name).copied().unwrap_or(1.0), "frameworks": frameworks })
        })
        .collect();
    json!({ "roles": roles })
}

/// Mesos's JSON `Response` of type `kind`, with its body under the type's field.
fn response_json(kind: &str, body: Value) -> Value {
    json!({ "type": kind, kind.to_ascii_lowercase(): body })
}

/// Mesos's JSON of a `Response` or `Event` (the master.proto message `name`) in `encoding`:
/// the JSON text, or the protobuf message it reads into strictly.
fn encode(encoding: Encoding, value: &Value, name: &str) -> Result<Vec<u8>, MesosApiError> {
    match encoding {
        Encoding::Json => Ok(value.to_string().into_bytes()),
        Encoding::Protobuf => message_from_json(value, name)
            .map(|message| message.encode_to_vec())
            .map_err(|e| MesosApiError::Internal(format!("the {name} does not fit its protobuf message: {e}"))),
    }
}

fn respond(encoding: Encoding, kind: &str, body: Value) -> Result<Response, MesosApiError> {
    let bytes = encode(encoding, &response_json(kind, body), RESPONSE)?;
    Ok(([(header::CONTENT_TYPE, encoding.media_type())], bytes).into_response())
}

/// An operator call from its wire form, as Mesos's JSON of master.proto's `Call` (a protobuf
/// call and the same call in JSON are the same value), whose `type` is a Mesos call's name.
pub fn decode_operator_call(encoding: Encoding, body: &[u8]) -> Result<Value, MesosApiError> {
    let call = dynamic_json(&decode_message(encoding, body, CALL)?);
    match call.get("type") {
        Some(Value::String(_)) => Ok(call),
        Some(number) => Err(MesosApiError::BadRequest(format!("type {number} is not a Mesos operator call"))),
        None => {
            // A name the protos do not have reads as unset, as UNKNOWN does: say which it was.
            let named = match encoding {
                Encoding::Json => serde_json::from_slice::<Value>(body).ok().and_then(|raw| raw.get("type").cloned()),
                Encoding::Protobuf => None,
            };
            Err(MesosApiError::BadRequest(match named {
                Some(name) => format!("type {name} is not a Mesos operator call"),
                None => "type is required".to_owned(),
            }))
        }
    }
}

fn agent_id_of(call: &Value, field: &str) -> Result<AgentId, MesosApiError> {
    call[field]["agent_id"]["value"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| AgentId(s.to_owned()))
        .ok_or_else(|| MesosApiError::BadRequest(format!("{field}.agent_id.value is required")))
}

/// `drain_agent`'s `max_grace_period` (a `google.protobuf.Duration`: `"10s"` in JSON) and
/// `mark_gone`.
fn drain_config_of(call: &Value) -> Result<DrainConfig, MesosApiError> {
    let drain = &call["drain_agent"];
    let max_grace_period_secs = match &drain["max_grace_period"] {
        Value::Null => None,
        Value::String(text) => Some(
            text.strip_suffix('s')
                .and_then(|secs| secs.parse::<f64>().ok())
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .ok_or_else(|| {
                    MesosApiError::BadRequest(format!(
                        "drain_agent.max_grace_period: `{text}` is not a duration >= 0 (like \"10s\")"
                    ))
                })?,
        ),
        other => {
            return Err(MesosApiError::BadRequest(format!(
                "drain_agent.max_grace_period: {other} is not a duration (like \"10s\")"
            )));
        }
    };
    let mark_gone = drain["mark_gone"].as_bool().unwrap_or(false);
    Ok(DrainConfig { max_grace_period_secs, mark_gone })
}

/// `update_weights.weight_infos`: every entry needs a role and a weight; the master checks
/// their values.
fn weight_infos(call: &Value) -> Result<Vec<(String, f64)>, MesosApiError> {
    let infos = call["update_weights"]["weight_infos"]
        .as_array()
        .ok_or_else(|| MesosApiError::BadRequest("update_weights.weight_infos is required".into()))?;
    let mut weights = Vec::with_capacity(infos.len());
    for (i, info) in infos.iter().enumerate() {
        let field = format!("update_weights.weight_infos[{i}]");
        let role =
            info["role"].as_str().ok_or_else(|| MesosApiError::BadRequest(format!("{field}.role is required")))?;
        let weight = match &info["weight"] {
            Value::Number(n) => n.as_f64(),
            Value::String(text) => text.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| MesosApiError::BadRequest(format!("{field}.weight must be a number")))?;
        weights.push((role.to_owned(), weight));
    }
    Ok(weights)
}

async fn handle(operator: Operator, headers: HeaderMap, body: Bytes) -> Result<Response, MesosApiError> {
    let encoding = request_encoding(&headers)?;
    let answer = response_encoding(&headers, encoding)?;
    let call = decode_operator_call(encoding, &body)?;
    let kind = call["type"].as_str().unwrap_or_default().to_owned();
    let identity = &operator.identity;
    match kind.as_str() {
        "GET_HEALTH" => respond(answer, &kind, json!({ "healthy": true })),
        "GET_VERSION" => respond(answer, &kind, json!({ "version_info": crate::mesos_state::version_json() })),
        "GET_FLAGS" => respond(answer, &kind, get_flags(identity)),
        "GET_MASTER" => respond(answer, &kind, get_master(identity)),
        "GET_METRICS" => respond(answer, &kind, get_metrics(&operator.master.state().await?, identity, Time::now())),
        "GET_STATE" => respond(answer, &kind, get_state(&operator.master.state().await?)),
        "GET_AGENTS" => respond(answer, &kind, get_agents(&operator.master.state().await?)),
        "GET_FRAMEWORKS" => respond(answer, &kind, get_frameworks(&operator.master.state().await?)),
        "GET_TASKS" => respond(answer, &kind, get_tasks(&operator.master.state().await?)),
        "GET_EXECUTORS" => respond(answer, &kind, get_executors()),
        "GET_ROLES" => {
            let state = operator.master.state().await?;
            respond(answer, &kind, get_roles(&state, &operator.master.weights().await?))
        }
        "GET_WEIGHTS" => respond(answer, &kind, get_weights(&operator.master.weights().await?)),
        "UPDATE_WEIGHTS" => {
            operator.master.update_weights(weight_infos(&call)?).await?;
            Ok(StatusCode::OK.into_response())
        }
        "DRAIN_AGENT" | "DEACTIVATE_AGENT" | "REACTIVATE_AGENT" | "MARK_AGENT_GONE" => {
            let action = match kind.as_str() {
                "DRAIN_AGENT" => Maintenance::Drain(drain_config_of(&call)?),
                "DEACTIVATE_AGENT" => Maintenance::Deactivate,
                "REACTIVATE_AGENT" => Maintenance::Reactivate,
                _ => Maintenance::MarkGone,
            };
            operator.master.maintain(agent_id_of(&call, &kind.to_ascii_lowercase())?, action).await?;
            Ok(StatusCode::OK.into_response())
        }
        "SUBSCRIBE" => Ok(subscribe(operator, answer)),
        other => Err(MesosApiError::BadRequest(format!(
            "{other} is a Mesos operator call this master does not serve (it serves {SERVED})"
        ))),
    }
}

/// One SUBSCRIBE stream's view of the cluster: what it was told, so that a `TASK_UPDATED`
/// that changes nothing is not sent and `FRAMEWORK_REMOVED` carries the framework's info.
#[derive(Default)]
pub struct Subscriber {
    tasks: BTreeMap<String, Task>,
    frameworks: BTreeMap<String, Framework>,
}

impl Subscriber {
    /// The operator events (Mesos's JSON `Event`s) one message of the master's stream becomes.
    pub fn events(&mut self, message: StreamMessage, heartbeat: Duration) -> Vec<Value> {
        match message {
            StreamMessage::Snapshot { state } => {
                self.tasks = state.tasks.iter().map(|t| (t.id.as_str().to_owned(), t.clone())).collect();
                self.frameworks = state.frameworks.iter().map(|f| (f.id.as_str().to_owned(), f.clone())).collect();
                vec![json!({
                    "type": "SUBSCRIBED",
                    "subscribed": { "get_state": get_state(&state), "heartbeat_interval_seconds": heartbeat.as_secs_f64() },
                })]
            }
            StreamMessage::Event { event } => self.event(&event.kind),
            StreamMessage::Heartbeat => vec![json!({ "type": "HEARTBEAT" })],
            // A snapshot follows; the subscriber's state is replaced by it.
            StreamMessage::FellBehind { .. } => Vec::new(),
        }
    }

    /// The operator events one of Atoll's events becomes (none for apps, pools and VIPs, which
    /// Mesos does not have).
    fn event(&mut self, kind: &EventKind) -> Vec<Value> {
        let event = |kind: &str, body: Value| json!({ "type": kind, kind.to_ascii_lowercase(): body });
        match kind {
            EventKind::AgentAdded { agent } => vec![event("AGENT_ADDED", json!({ "agent": agent_json(agent) }))],
            EventKind::AgentRemoved { agent_id } => {
                vec![event("AGENT_REMOVED", json!({ "agent_id": id(agent_id.as_str()) }))]
            }
            EventKind::FrameworkAdded { framework } => {
                self.frameworks.insert(framework.id.as_str().to_owned(), framework.clone());
                vec![event("FRAMEWORK_ADDED", json!({ "framework": framework_json(framework) }))]
            }
            EventKind::FrameworkUpdated { framework } => {
                self.frameworks.insert(framework.id.as_str().to_owned(), framework.clone());
                vec![event("FRAMEWORK_UPDATED", json!({ "framework": framework_json(framework) }))]
            }
            EventKind::FrameworkRemoved { framework_id } => {
                let info = match self.frameworks.remove(framework_id.as_str()) {
                    Some(framework) => framework_info_json(&framework),
                    // Mesos's FrameworkInfo requires a name and a user.
                    None => json!({ "id": id(framework_id.as_str()), "name": "", "user": "" }),
                };
                vec![event("FRAMEWORK_REMOVED", json!({ "framework_info": info }))]
            }
            EventKind::TaskAdded { task } => {
                self.tasks.insert(task.id.as_str().to_owned(), task.clone());
                vec![event("TASK_ADDED", json!({ "task": task_json(task) }))]
            }
            EventKind::TaskUpdated { task } => {
                let previous = self.tasks.insert(task.id.as_str().to_owned(), task.clone());
                if previous.is_some_and(|p| p.state == task.state && p.status == task.status) {
                    return Vec::new();
                }
                vec![event(
                    "TASK_UPDATED",
                    json!({
                        "framework_id": id(task.framework_id.as_str()),
                        "status": status_json(&task.status),
                        "state": serde_json::to_value(task.state).unwrap_or(Value::Null),
                    }),
                )]
            }
            _ => Vec::new(),
        }
    }
}

fn subscribe(operator: Operator, encoding: Encoding) -> Response {
    let heartbeat = operator.master.heartbeat_interval();
    let messages = crate::events::subscribe(operator.master.clone(), None);
    let mut subscriber = Subscriber::default();
    let records = messages.flat_map(move |message| {
        let records = subscriber.events(message, heartbeat).into_iter().map(move |event| {
            // An event that does not fit the protobuf ends the stream rather than go missing.
            encode(encoding, &event, EVENT).map(|bytes| record_io(&bytes)).map_err(|e| {
                tracing::error!(error = %e, "operator event stream ended");
                std::io::Error::other(e.to_string())
            })
        });
        futures::stream::iter(records)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, encoding.media_type())
        .body(Body::from_stream(records))
        .unwrap_or_else(|e| MesosApiError::Unavailable(e.to_string()).into_response())
}

#[cfg(test)]
mod tests {
    use atoll_proto::model::{
        Attributes, Capability, CommandInfo, DiscoveryInfo, DiscoveryPort, Event, FrameworkId, FrameworkInfo,
        HealthCheck, HealthCheckKind, Labels, NetworkRequest, Reason, Source, TaskId, TaskInfo, TaskPortMapping,
        TaskState,
    };
    use atoll_proto::pb::v1::master as mpb;
    use prost_reflect::DynamicMessage;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut labels = Labels::default();
        for (key, value) in pairs {
            labels.insert(*key, *value);
        }
        labels
    }

    fn agent(id: &str, address: &str, state: AgentState) -> Agent {
        let mut agent = Agent::registered(
            AgentId::new(id),
            format!("host-{id}"),
            address.parse().unwrap(),
            Time(1_700_000_001_000),
        );
        agent.resources = "cpus:4;mem:4096;disk:1000;ports:[31000-31009,31020-31029]".parse().unwrap();
        agent.used = "cpus:1.5;mem:96;ports:[31000-31001,31005-31005]".parse().unwrap();
        agent.attributes = "rack:r1;level:3".parse::<Attributes>().unwrap();
        agent.state = state;
        agent.drain = state == AgentState::Draining;
        agent.version = "0.1.0".into();
        agent
    }

    fn framework(id: &str, name: &str) -> Framework {
        let mut info = FrameworkInfo::named(name);
        info.user = "root".into();
        info.role = "web".into();
        info.failover_timeout_secs = 604_800.0;
        info.capabilities = vec![Capability::PartitionAware, Capability::MultiRole];
        info.labels = labels(&[("owner", "ops")]);
        Framework::subscribed(FrameworkId::new(id), info, Time(1_700_000_002_000))
    }

    /// A task of `fw-m` on `a1`, its latest status from the executor at `at` ms.
    fn task(id: &str, resources: &str, state: TaskState, at: u64) -> Task {
        let info = TaskInfo {
            name: id.split('.').next().unwrap().into(),
            task_id: TaskId::new(id),
            agent_id: AgentId::new("a1"),
            resources: resources.parse().unwrap(),
            command: CommandInfo::shell("sleep 1000"),
            labels: Labels::default(),
            discovery: None,
            kill_grace_period_secs: None,
            health_check: None,
            networks: Vec::new(),
        };
        let mut task = Task::launched(FrameworkId::new("fw-m"), info, Time(at - 500));
        let mut status = atoll_proto::model::TaskStatus::new(TaskId::new(id), state, Source::Executor, Time(at));
        status.agent_id = Some(AgentId::new("a1"));
        task.set_status(status);
        task
    }

    /// Agents in several states, frameworks with labels and capabilities, running tasks with
    /// labels, discovery, a health check, a container network and port ranges, and terminal
    /// tasks with reasons and exit codes.
    fn cluster() -> ClusterState {
        let mut web = task("web.1", "cpus:0.5;mem:32;ports:[31000-31001]", TaskState::Running, 1_700_000_010_000);
        web.labels = labels(&[("team", "shop"), ("HAPROXY_0_VHOST", "shop.example")]);
        web.kill_grace_period_secs = Some(5.0);
        web.discovery = Some(DiscoveryInfo {
            visibility: "CLUSTER".into(),
            name: "web".into(),
            ports: vec![
                DiscoveryPort {
                    number: 31000,
                    name: "http".into(),
                    protocol: "tcp".into(),
                    labels: labels(&[("VIP_0", "/web:80")]),
                },
                DiscoveryPort {
                    number: 31001,
                    name: "admin".into(),
                    protocol: "tcp".into(),
                    labels: Labels::default(),
                },
            ],
            labels: labels(&[("tier", "front")]),
        });
        web.health_check = Some(HealthCheck::new(HealthCheckKind::Http { port: 31000, path: "/health".into() }));
        let mut healthy = web.status.clone();
        healthy.healthy = Some(true);
        healthy.uuid = Some(uuid::Uuid::from_u128(7));
        healthy.executor_pid = Some(4242);
        web.set_status(healthy);

        let mut db = task("db.1", "cpus:1;mem:64;ports:[31005-31005]", TaskState::Running, 1_700_000_011_000);
        db.networks = vec![NetworkRequest {
            name: "atoll".into(),
            ip: None,
            port_mappings: vec![TaskPortMapping { host_port: 31005, container_port: 5432, protocol: "tcp".into() }],
        }];
        db.health_check = Some(HealthCheck::new(HealthCheckKind::Tcp { port: 5432 }));
        let mut on_network = db.status.clone();
        on_network.ip_addresses = vec!["198.18.0.5".parse().unwrap()];
        db.set_status(on_network);

        let mut done = task("done.1", "cpus:0.1;mem:16", TaskState::Finished, 1_700_000_005_000);
        let mut exited = done.status.clone();
        exited.exit_code = Some(0);
        done.set_status(exited);
        let mut failed = task("fail.1", "cpus:0.1;mem:16", TaskState::Failed, 1_700_000_006_000);
        let mut crashed = failed.status.clone().with_reason(Reason::CommandExecutorFailed, "exited with signal 9");
        crashed.exit_signal = Some(9);
        failed.set_status(crashed);
        let starting = task("boot.1", "cpus:0.1;mem:16", TaskState::Starting, 1_700_000_012_000);

        ClusterState {
            index: 42,
            agents: vec![
                agent("a1", "198.19.255.2:5051", AgentState::Active),
                agent("a2", "198.19.255.3:5051", AgentState::Draining),
                agent("a3", "198.19.255.4:5051", AgentState::Recovered),
            ],
            frameworks: vec![framework("fw-m", "marathon"), framework("fw-r", "atoll-run")],
            tasks: vec![web, db, done, failed, starting],
            ..ClusterState::default()
        }
    }

    fn identity() -> MasterIdentity {
        let mut identity = MasterIdentity::new("m-1", "198.19.255.1:5050".parse().unwrap(), Time(1_700_000_000_000));
        identity.flags.insert("port".into(), "5050".into());
        identity.flags.insert("hostname".into(), String::new());
        identity
    }

    /// Every response this master gives, from [`cluster`].
    fn responses() -> Vec<Value> {
        let (state, identity) = (cluster(), identity());
        let weights = BTreeMap::from([("web".to_owned(), 2.5)]);
        let now = Time(1_700_000_100_000);
        vec![
            response_json("GET_HEALTH", json!({ "healthy": true })),
            response_json("GET_VERSION", json!({ "version_info": crate::mesos_state::version_json() })),
            response_json("GET_FLAGS", get_flags(&identity)),
            response_json("GET_MASTER", get_master(&identity)),
            response_json("GET_METRICS", get_metrics(&state, &identity, now)),
            response_json("GET_STATE", get_state(&state)),
            response_json("GET_AGENTS", get_agents(&state)),
            response_json("GET_FRAMEWORKS", get_frameworks(&state)),
            response_json("GET_TASKS", get_tasks(&state)),
            response_json("GET_EXECUTORS", get_executors()),
            response_json("GET_ROLES", get_roles(&state, &weights)),
            response_json("GET_WEIGHTS", get_weights(&weights)),
        ]
    }

    fn event(index: u64, kind: EventKind) -> StreamMessage {
        StreamMessage::Event { event: Event { index, timestamp: Time(1_700_000_020_000), kind } }
    }

    /// Every event a subscriber is sent, from [`cluster`] and changes to it.
    fn events() -> Vec<Value> {
        let state = cluster();
        let mut subscriber = Subscriber::default();
        let heartbeat = Duration::from_secs(15);
        let mut running = state.tasks[0].clone();
        let mut killed = running.status.clone().with_reason(Reason::TaskKilledDuringLaunch, "killed");
        killed.state = TaskState::Killed;
        running.set_status(killed);
        let mut updated = state.frameworks[1].clone();
        updated.connected = false;
        let mut added = agent("a9", "198.19.255.9:5051", AgentState::Active);
        added.used = Default::default();
        let messages = vec![
            StreamMessage::Snapshot { state: state.clone() },
            event(
                43,
                EventKind::TaskAdded { task: task("new.1", "cpus:0.2;mem:8", TaskState::Staging, 1_700_000_030_000) },
            ),
            event(44, EventKind::TaskUpdated { task: running }),
            event(45, EventKind::AgentAdded { agent: added }),
            event(46, EventKind::AgentRemoved { agent_id: AgentId::new("a3") }),
            event(47, EventKind::FrameworkAdded { framework: framework("fw-n", "new") }),
            event(48, EventKind::FrameworkUpdated { framework: updated }),
            event(49, EventKind::FrameworkRemoved { framework_id: FrameworkId::new("fw-r") }),
            StreamMessage::Heartbeat,
        ];
        messages.into_iter().flat_map(|message| subscriber.events(message, heartbeat)).collect()
    }

    /// The fields numbered as Atoll's own anywhere in `message`.
    fn atoll_fields(message: &DynamicMessage, path: &str, found: &mut Vec<String>) {
        for (field, value) in message.fields() {
            let here = format!("{path}.{}", field.name());
            if field.number() >= ATOLL_FIELDS {
                found.push(here.clone());
            }
            let items = match value {
                prost_reflect::Value::Message(inner) => vec![inner],
                prost_reflect::Value::List(list) => {
                    list.iter().filter_map(|item| item.as_message()).collect::<Vec<_>>()
                }
                _ => Vec::new(),
            };
            for inner in items {
                atoll_fields(inner, &here, found);
            }
        }
    }

    /// JSON as protobuf keeps it: a list that is empty is no list, and `0` is `0.0`.
    fn as_protobuf_keeps_it(value: &Value) -> Value {
        match value {
            Value::Object(object) => Value::Object(
                object
                    .iter()
                    .filter(|(_, v)| v.as_array().is_none_or(|items| !items.is_empty()))
                    .map(|(k, v)| (k.clone(), as_protobuf_keeps_it(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(as_protobuf_keeps_it).collect()),
            Value::Number(n) => json!(n.as_f64().unwrap()),
            other => other.clone(),
        }
    }

    /// `value` (Mesos's JSON of the message `name`) through protobuf and back: whole, with no
    /// Atoll-only field, and the same JSON again.
    fn round_trip(value: &Value, name: &str) -> Vec<u8> {
        let message = message_from_json(value, name).unwrap_or_else(|e| panic!("{e}\n{value:#}"));
        let mut found = Vec::new();
        atoll_fields(&message, "", &mut found);
        assert!(found.is_empty(), "Atoll's own fields {found:?} in {value:#}");
        let missing = crate::mesos_required::missing_required(&message);
        assert!(missing.is_empty(), "{name} lacks fields Mesos requires: {missing:#?}\n{value:#}");
        let bytes = encode(Encoding::Protobuf, value, name).unwrap();
        assert_eq!(bytes, message.encode_to_vec());
        let back =
            dynamic_json(&DynamicMessage::decode(crate::mesos_scheduler::message(name), bytes.as_slice()).unwrap());
        assert_eq!(as_protobuf_keeps_it(&back), as_protobuf_keeps_it(value), "{name}: {value:#}");
        bytes
    }

    #[test]
    fn every_response_transcodes_to_protobuf_and_back() {
        let responses = responses();
        for value in &responses {
            let bytes = round_trip(value, RESPONSE);
            let typed = mpb::Response::decode(bytes.as_slice()).unwrap();
            assert_eq!(typed.r#type().as_str_name(), value["type"].as_str().unwrap());
        }
        // The details that matter to clients survive the protobuf wire.
        let state = mpb::Response::decode(round_trip(&responses[5], RESPONSE).as_slice()).unwrap().get_state.unwrap();
        let tasks = state.get_tasks.unwrap();
        assert_eq!(tasks.tasks.len(), 3);
        assert_eq!(tasks.completed_tasks.len(), 2);
        let web = &tasks.tasks[0];
        assert_eq!(web.state, Some(pb::TaskState::TaskRunning as i32));
        assert_eq!(web.labels.as_ref().unwrap().labels.len(), 2);
        let discovery = web.discovery.as_ref().unwrap();
        assert_eq!(discovery.ports.as_ref().unwrap().ports[0].labels.as_ref().unwrap().labels[0].key, "VIP_0");
        let ports = web.resources.iter().find(|r| r.name == "ports").unwrap();
        assert_eq!(
            ports.ranges.as_ref().unwrap().range,
            vec![pb::value::Range { begin: Some(31000), end: Some(31001) }]
        );
        let db = &tasks.tasks[1];
        let addresses = &db.statuses[0].container_status.as_ref().unwrap().network_infos[0].ip_addresses;
        assert_eq!(addresses[0].ip_address, "198.18.0.5");
        let boot = &tasks.tasks[2];
        assert_eq!(boot.state, Some(pb::TaskState::TaskStarting as i32), "a zero enum is on the wire");
        let agents = state.get_agents.unwrap().agents;
        assert_eq!((agents[0].active, agents[0].deactivated), (Some(true), Some(false)), "false is on the wire");
        assert_eq!(agents[1].deactivated, Some(true));
        assert_eq!(agents[0].capabilities.len(), 3);
        let frameworks = state.get_frameworks.unwrap().frameworks;
        assert_eq!(frameworks[0].recovered, Some(false));
        assert_eq!(frameworks[0].framework_info.as_ref().unwrap().labels.as_ref().unwrap().labels[0].key, "owner");
    }

    #[test]
    fn every_event_transcodes_to_protobuf_and_back() {
        let events = events();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "SUBSCRIBED",
                "TASK_ADDED",
                "TASK_UPDATED",
                "AGENT_ADDED",
                "AGENT_REMOVED",
                "FRAMEWORK_ADDED",
                "FRAMEWORK_UPDATED",
                "FRAMEWORK_REMOVED",
                "HEARTBEAT"
            ]
        );
        for value in &events {
            let typed = mpb::Event::decode(round_trip(value, EVENT).as_slice()).unwrap();
            assert_eq!(typed.r#type().as_str_name(), value["type"].as_str().unwrap());
        }
        let removed = mpb::Event::decode(round_trip(&events[7], EVENT).as_slice()).unwrap();
        let info = removed.framework_removed.unwrap().framework_info.unwrap();
        assert_eq!((info.name.as_str(), info.user()), ("atoll-run", "root"), "the removed framework's info");
        let updated = mpb::Event::decode(round_trip(&events[2], EVENT).as_slice()).unwrap().task_updated.unwrap();
        assert_eq!(updated.state, Some(pb::TaskState::TaskKilled as i32));
        assert_eq!(updated.status.unwrap().message, "killed");
    }

    #[test]
    fn the_protobuf_transcoding_refuses_what_the_protos_lack() {
        let bogus = json!({ "type": "GET_HEALTH", "get_health": { "healthy": true, "bogus": 1 } });
        let error = encode(Encoding::Protobuf, &bogus, RESPONSE).unwrap_err().to_string();
        assert!(error.contains("get_health") && error.contains("bogus"), "{error}");
        let wrong_type = json!({ "type": "GET_FLAGS", "get_flags": { "flags": [{ "name": 5 }] } });
        let error = encode(Encoding::Protobuf, &wrong_type, RESPONSE).unwrap_err().to_string();
        assert!(error.contains("get_flags.flags[0].name"), "{error}");
        // JSON is written as it is.
        assert_eq!(encode(Encoding::Json, &bogus, RESPONSE).unwrap(), bogus.to_string().into_bytes());
    }

    #[test]
    fn atoll_only_fields_are_left_out_of_mesos_messages() {
        let state = cluster();
        let done = task_json(&state.tasks[2]);
        assert_eq!(done["statuses"][0]["state"], "TASK_FINISHED");
        assert!(done["statuses"][0].get("exit_code").is_none(), "{done}");
        let failed = task_json(&state.tasks[3]);
        assert!(failed["statuses"][0].get("exit_signal").is_none(), "{failed}");
        assert_eq!(failed["statuses"][0]["message"], "exited with signal 9");
        let web = task_json(&state.tasks[0]);
        assert!(web.get("command").is_none(), "{web}");
        assert_eq!(web["statuses"][0]["container_status"]["executor_pid"], 4242);
        let agent = agent_json(&state.agents[0]);
        assert!(agent["agent_info"].get("address").is_none(), "{agent}");
        assert_eq!(agent["agent_info"]["hostname"], "host-a1");
        assert_eq!(agent["agent_info"]["port"], 5051);
    }

    #[test]
    fn a_task_update_that_changes_nothing_is_not_sent() {
        let state = cluster();
        let mut subscriber = Subscriber::default();
        subscriber.events(StreamMessage::Snapshot { state: state.clone() }, Duration::from_secs(1));
        let same = event(43, EventKind::TaskUpdated { task: state.tasks[0].clone() });
        assert!(subscriber.events(same, Duration::from_secs(1)).is_empty());
        // A framework the subscriber never saw is removed by id alone.
        let unknown = event(44, EventKind::FrameworkRemoved { framework_id: FrameworkId::new("fw-x") });
        let removed = subscriber.events(unknown, Duration::from_secs(1));
        assert_eq!(removed[0]["framework_removed"]["framework_info"]["id"]["value"], "fw-x");
        assert!(
            subscriber
                .events(StreamMessage::FellBehind { requested: 1, oldest_retained: 9 }, Duration::ZERO)
                .is_empty()
        );
    }

    fn agent_id(id: &str) -> Option<pb::AgentId> {
        Some(pb::AgentId { value: id.into() })
    }

    /// Every call this master serves (and the two being built), in protobuf and in the JSON a
    /// client writes for it: the same call either way.
    #[test]
    fn a_protobuf_call_is_the_same_call_as_its_json() {
        use mpb::call::Type as C;
        let call = |kind: C| mpb::Call { r#type: kind as i32, ..Default::default() };
        let cases: Vec<(mpb::Call, Value)> = vec![
            (call(C::GetHealth), json!({ "type": "GET_HEALTH" })),
            (call(C::GetFlags), json!({ "type": "GET_FLAGS" })),
            (call(C::GetVersion), json!({ "type": "GET_VERSION" })),
            (
                mpb::Call {
                    get_metrics: Some(mpb::call::GetMetrics {
                        timeout: Some(pb::DurationInfo { nanoseconds: Some(5_000_000_000) }),
                    }),
                    ..call(C::GetMetrics)
                },
                json!({ "type": "GET_METRICS", "get_metrics": { "timeout": { "nanoseconds": 5_000_000_000u64 } } }),
            ),
            (call(C::GetState), json!({ "type": "GET_STATE" })),
            (call(C::GetAgents), json!({ "type": "GET_AGENTS" })),
            (call(C::GetFrameworks), json!({ "type": "GET_FRAMEWORKS" })),
            (call(C::GetTasks), json!({ "type": "GET_TASKS" })),
            (call(C::GetExecutors), json!({ "type": "GET_EXECUTORS" })),
            (call(C::GetMaster), json!({ "type": "GET_MASTER" })),
            (call(C::GetRoles), json!({ "type": "GET_ROLES" })),
            (call(C::GetWeights), json!({ "type": "GET_WEIGHTS" })),
            (
                mpb::Call {
                    update_weights: Some(mpb::call::UpdateWeights {
                        weight_infos: vec![pb::WeightInfo { weight: Some(2.5), role: Some("web".into()) }],
                    }),
                    ..call(C::UpdateWeights)
                },
                json!({ "type": "UPDATE_WEIGHTS", "update_weights": { "weight_infos": [{ "weight": 2.5, "role": "web" }] } }),
            ),
            (
                mpb::Call {
                    drain_agent: Some(mpb::call::DrainAgent {
                        agent_id: agent_id("a1"),
                        max_grace_period: Some(atoll_proto::prost_types::Duration { seconds: 10, nanos: 500_000_000 }),
                        mark_gone: Some(false),
                    }),
                    ..call(C::DrainAgent)
                },
                json!({ "type": "DRAIN_AGENT", "drain_agent": { "agent_id": { "value": "a1" },
                    "max_grace_period": "10.500s", "mark_gone": false } }),
            ),
            (
                mpb::Call {
                    deactivate_agent: Some(mpb::call::DeactivateAgent { agent_id: agent_id("a1") }),
                    ..call(C::DeactivateAgent)
                },
                json!({ "type": "DEACTIVATE_AGENT", "deactivate_agent": { "agent_id": { "value": "a1" } } }),
            ),
            (
                mpb::Call {
                    reactivate_agent: Some(mpb::call::ReactivateAgent { agent_id: agent_id("a1") }),
                    ..call(C::ReactivateAgent)
                },
                json!({ "type": "REACTIVATE_AGENT", "reactivate_agent": { "agent_id": { "value": "a1" } } }),
            ),
            (
                mpb::Call {
                    mark_agent_gone: Some(mpb::call::MarkAgentGone { agent_id: agent_id("a1") }),
                    ..call(C::MarkAgentGone)
                },
                json!({ "type": "MARK_AGENT_GONE", "mark_agent_gone": { "agent_id": { "value": "a1" } } }),
            ),
            (call(C::Subscribe), json!({ "type": "SUBSCRIBE" })),
            // A Mesos call this master does not serve still decodes (and is refused by name).
            (call(C::GetQuota), json!({ "type": "GET_QUOTA" })),
        ];
        for (protobuf, json) in cases {
            let from_protobuf = decode_operator_call(Encoding::Protobuf, &protobuf.encode_to_vec()).unwrap();
            let from_json = decode_operator_call(Encoding::Json, json.to_string().as_bytes()).unwrap();
            assert_eq!(from_protobuf, from_json, "{json}");
            assert_eq!(as_protobuf_keeps_it(&from_json), as_protobuf_keeps_it(&json), "read whole: {json}");
        }
        let drain = decode_operator_call(
            Encoding::Json,
            br#"{"type":"DRAIN_AGENT","drain_agent":{"agent_id":{"value":"a1"}},"unknown":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(agent_id_of(&drain, "drain_agent").unwrap(), AgentId::new("a1"), "unknown fields are ignored");
    }

    #[test]
    fn a_bad_call_is_a_400_that_says_what_is_wrong() {
        let bad = |encoding: Encoding, body: &[u8]| match decode_operator_call(encoding, body) {
            Err(MesosApiError::BadRequest(message)) => message,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
        };
        let message = bad(Encoding::Json, br#"{"type":"DRAIN_AGENT","drain_agent":{"agent_id":{"value":5}}}"#);
        assert!(message.contains("drain_agent.agent_id.value"), "{message}");
        let message = bad(Encoding::Json, br#"{"type":"DRAIN_AGENT","drain_agent":{"max_grace_period":"soon"}}"#);
        assert!(message.contains("drain_agent.max_grace_period"), "{message}");
        assert!(bad(Encoding::Json, br#"{"type":"NOT_A_CALL"}"#).contains("NOT_A_CALL"));
        assert!(bad(Encoding::Json, br#"{"type":"UNKNOWN"}"#).contains("UNKNOWN"));
        assert_eq!(bad(Encoding::Json, b"{}"), "type is required");
        assert!(bad(Encoding::Json, b"{\"type\":").contains("does not parse"));
        assert!(bad(Encoding::Json, b"[]").contains("does not parse"));
        let unknown_number = mpb::Call { r#type: 99, ..Default::default() };
        assert!(bad(Encoding::Protobuf, &unknown_number.encode_to_vec()).contains("type 99"));
        assert!(bad(Encoding::Protobuf, &[0x0a, 0xff]).contains("does not decode"));
        let missing_id = decode_operator_call(Encoding::Json, br#"{"type":"DRAIN_AGENT","drain_agent":{}}"#).unwrap();
        let message = agent_id_of(&missing_id, "drain_agent").unwrap_err().to_string();
        assert_eq!(message, "drain_agent.agent_id.value is required");
    }
}
