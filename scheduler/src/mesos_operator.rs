//! The Mesos v1 operator HTTP API, `POST /api/v1` (and any path below it, as Mesos routes by
//! prefix), in Mesos's JSON: the read calls (`GET_HEALTH`, `GET_VERSION`, `GET_FLAGS`,
//! `GET_METRICS`, `GET_MASTER`, `GET_STATE`, `GET_AGENTS`, `GET_FRAMEWORKS`, `GET_TASKS`,
//! `GET_ROLES`, `GET_WEIGHTS`), agent maintenance (`DRAIN_AGENT`, `REACTIVATE_AGENT`,
//! `MARK_AGENT_GONE`; Atoll
//! has no deactivation that keeps tasks running, so `DEACTIVATE_AGENT` is refused), and `SUBSCRIBE`: a RecordIO stream that starts with `SUBSCRIBED` (the
//! whole state) and follows the master's own event log as `TASK_ADDED`, `TASK_UPDATED`,
//! `AGENT_ADDED`, `AGENT_REMOVED`, `FRAMEWORK_ADDED`, `FRAMEWORK_UPDATED`, `FRAMEWORK_REMOVED`,
//! with a `HEARTBEAT` whenever it was quiet. Tools that follow a Mesos master (Mesos-DNS,
//! dcos-net, Atoll's own drop-in modes) follow an Atoll master the same way.
//!
//! The JSON of Mesos's own messages inside (task and framework infos, statuses, resources) is
//! produced from Atoll's protobuf types, which keep Mesos's names.

use std::collections::BTreeMap;
use std::sync::Arc;

use atoll_proto::model::{Agent, AgentId, AgentState, ClusterState, EventKind, Framework, StreamMessage, Task, Time};
use atoll_proto::pb::v1 as pb;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::actor::{Maintenance, MasterHandle};
use crate::mesos_scheduler::{JSON, MesosApiError, mesos_json, record_io};
use crate::mesos_state::{MasterIdentity, agent_pid};

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

/// Mesos's v1 `Task` for an Atoll task.
pub fn task_json(task: &Task) -> Value {
    let mut value = mesos_json(&pb::TaskInfo::from(task), "atoll.v1.TaskInfo");
    let status = mesos_json(&pb::TaskStatus::from(&task.status), "atoll.v1.TaskStatus");
    if let Value::Object(object) = &mut value {
        // A task's info carries its command; Mesos's Task does not.
        object.remove("command");
        object.insert("framework_id".into(), id(task.framework_id.as_str()));
        object.insert("agent_id".into(), id(task.agent_id.as_str()));
        object.insert("state".into(), serde_json::to_value(task.state).unwrap_or(Value::Null));
        object.insert("statuses".into(), json!([status]));
    }
    value
}

fn agent_json(agent: &Agent) -> Value {
    let mut info = mesos_json(&pb::AgentInfo::from(agent), "atoll.v1.AgentInfo");
    if let Value::Object(object) = &mut info {
        object.insert("id".into(), id(agent.id.as_str()));
        object.insert("port".into(), json!(agent.address.port()));
    }
    let resources = |r: &atoll_proto::model::Resources| {
        Vec::<pb::Resource>::from(r).iter().map(|r| mesos_json(r, "atoll.v1.Resource")).collect::<Vec<_>>()
    };
    json!({
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
    })
}

fn atoll_proto_version(agent: &Agent) -> &str {
    if agent.version.is_empty() { crate::mesos_state::MESOS_VERSION } else { &agent.version }
}

fn framework_json(framework: &Framework) -> Value {
    let mut info = mesos_json(&pb::FrameworkInfo::from(framework), "atoll.v1.FrameworkInfo");
    if let Value::Object(object) = &mut info {
        object.insert("id".into(), id(framework.id.as_str()));
    }
    json!({
        "framework_info": info,
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

/// `GET_STATE`'s answer, also the body of `SUBSCRIBED`.
pub fn get_state(state: &ClusterState) -> Value {
    json!({
        "get_tasks": get_tasks(state),
        "get_executors": { "executors": [], "orphan_executors": [] },
        "get_frameworks": get_frameworks(state),
        "get_agents": get_agents(state),
    })
}

fn response(kind: &str, body: Option<Value>) -> Response {
    let mut value = json!({ "type": kind });
    if let Some(body) = body {
        value[kind.to_ascii_lowercase()] = body;
    }
    ([(header::CONTENT_TYPE, JSON)], value.to_string()).into_response()
}

fn agent_id_of(call: &Value, field: &str) -> Result<AgentId, MesosApiError> {
    call[field]["agent_id"]["value"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| AgentId(s.to_owned()))
        .ok_or_else(|| MesosApiError::BadRequest(format!("{field}.agent_id.value is required")))
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
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media != JSON {
        return Err(MesosApiError::UnsupportedMediaType(format!(
            "Content-Type `{content_type}`: the operator API here speaks {JSON}"
        )));
    }
    let accept_ok = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).all(|v| {
        v.split(',')
            .map(|m| m.split(';').next().unwrap_or_default().trim())
            .any(|m| m == JSON || m == "*/*" || m == "application/*")
    });
    if !accept_ok {
        return Err(MesosApiError::NotAcceptable(format!("this operator API answers {JSON}")));
    }
    let call: Value = serde_json::from_slice(&body)
        .map_err(|e| MesosApiError::BadRequest(format!("the JSON call does not parse: {e}")))?;
    let kind = call["type"].as_str().ok_or_else(|| MesosApiError::BadRequest("type is required".into()))?.to_owned();
    let identity = &operator.identity;
    match kind.as_str() {
        "GET_HEALTH" => Ok(response(&kind, Some(json!({ "healthy": true })))),
        "GET_VERSION" => Ok(response(&kind, Some(json!({ "version_info": crate::mesos_state::version_json() })))),
        "GET_FLAGS" => Ok(response(
            &kind,
            Some(
                json!({ "flags": identity.flags.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>() }),
            ),
        )),
        "GET_MASTER" => Ok(response(
            &kind,
            Some(json!({
                "master_info": identity.master_info(),
                "start_time": identity.start_time.as_secs_f64(),
                "elected_time": identity.elected_time.as_secs_f64(),
            })),
        )),
        "GET_METRICS" => {
            let state = operator.master.state().await?;
            let snapshot = crate::mesos_state::metrics_snapshot(&state, identity, Time::now());
            let metrics: Vec<Value> = snapshot
                .as_object()
                .map(|m| m.iter().map(|(name, value)| json!({"name": name, "value": value})).collect())
                .unwrap_or_default();
            Ok(response(&kind, Some(json!({ "metrics": metrics }))))
        }
        "GET_STATE" => Ok(response(&kind, Some(get_state(&operator.master.state().await?)))),
        "GET_AGENTS" => Ok(response(&kind, Some(get_agents(&operator.master.state().await?)))),
        "GET_FRAMEWORKS" => Ok(response(&kind, Some(get_frameworks(&operator.master.state().await?)))),
        "GET_TASKS" => Ok(response(&kind, Some(get_tasks(&operator.master.state().await?)))),
        "GET_ROLES" | "GET_WEIGHTS" => {
            let state = operator.master.state().await?;
            let mut roles: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for framework in &state.frameworks {
                roles.entry(framework.info.role.clone()).or_default().push(id(framework.id.as_str()));
            }
            let weights = operator.master.weights().await?;
            if kind == "GET_WEIGHTS" {
                let infos: Vec<Value> =
                    weights.iter().map(|(role, weight)| json!({"role": role, "weight": weight})).collect();
                return Ok(response(&kind, Some(json!({ "weight_infos": infos }))));
            }
            let roles: Vec<Value> = roles
                .into_iter()
                .map(|(name, frameworks)| {
                    json!({ "name": name, "weight": weights.get(&name).copied().unwrap_or(1.0), "frameworks": frameworks })
                })
                .collect();
            Ok(response(&kind, Some(json!({ "roles": roles }))))
        }
        "UPDATE_WEIGHTS" => {
            operator.master.update_weights(weight_infos(&call)?).await?;
            Ok(StatusCode::OK.into_response())
        }
        "DRAIN_AGENT" | "DEACTIVATE_AGENT" | "REACTIVATE_AGENT" | "MARK_AGENT_GONE" => {
            let action = match kind.as_str() {
                "DRAIN_AGENT" => Maintenance::Drain,
                "DEACTIVATE_AGENT" => Maintenance::Deactivate,
                "REACTIVATE_AGENT" => Maintenance::Reactivate,
                _ => Maintenance::MarkGone,
            };
            operator.master.maintain(agent_id_of(&call, &kind.to_ascii_lowercase())?, action).await?;
            Ok(StatusCode::OK.into_response())
        }
        "SUBSCRIBE" => Ok(subscribe(operator)),
        other => Err(MesosApiError::BadRequest(format!(
            "{other} is not an operator call this master serves (GET_HEALTH, GET_VERSION, GET_FLAGS, GET_METRICS, \
             GET_MASTER, GET_STATE, GET_AGENTS, GET_FRAMEWORKS, GET_TASKS, GET_ROLES, GET_WEIGHTS, UPDATE_WEIGHTS, \
             DRAIN_AGENT, DEACTIVATE_AGENT, REACTIVATE_AGENT, MARK_AGENT_GONE, SUBSCRIBE)"
        ))),
    }
}

/// The operator events one of Atoll's events becomes (none for apps, pools and VIPs, which
/// Mesos does not have).
pub fn operator_events(kind: &EventKind, previous: Option<&Task>) -> Vec<Value> {
    let event = |kind: &str, body: Value| json!({ "type": kind, kind.to_ascii_lowercase(): body });
    match kind {
        EventKind::AgentAdded { agent } => vec![event("AGENT_ADDED", json!({ "agent": agent_json(agent) }))],
        EventKind::AgentRemoved { agent_id } => {
            vec![event("AGENT_REMOVED", json!({ "agent_id": id(agent_id.as_str()) }))]
        }
        EventKind::FrameworkAdded { framework } => {
            vec![event("FRAMEWORK_ADDED", json!({ "framework": framework_json(framework) }))]
        }
        EventKind::FrameworkUpdated { framework } => {
            vec![event("FRAMEWORK_UPDATED", json!({ "framework": framework_json(framework) }))]
        }
        EventKind::FrameworkRemoved { framework_id } => vec![event(
            "FRAMEWORK_REMOVED",
            json!({ "framework_info": { "id": id(framework_id.as_str()), "name": "", "user": "" } }),
        )],
        EventKind::TaskAdded { task } => vec![event("TASK_ADDED", json!({ "task": task_json(task) }))],
        EventKind::TaskUpdated { task } => {
            if previous.is_some_and(|p| p.state == task.state && p.status == task.status) {
                return Vec::new();
            }
            vec![event(
                "TASK_UPDATED",
                json!({
                    "framework_id": id(task.framework_id.as_str()),
                    "status": mesos_json(&pb::TaskStatus::from(&task.status), "atoll.v1.TaskStatus"),
                    "state": serde_json::to_value(task.state).unwrap_or(Value::Null),
                }),
            )]
        }
        _ => Vec::new(),
    }
}

fn subscribe(operator: Operator) -> Response {
    let heartbeat = operator.master.heartbeat_interval();
    let messages = crate::events::subscribe(operator.master.clone(), None);
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    let records = messages.flat_map(move |message| {
        let values: Vec<Value> = match message {
            StreamMessage::Snapshot { state } => {
                tasks = state.tasks.iter().map(|t| (t.id.as_str().to_owned(), t.clone())).collect();
                vec![json!({
                    "type": "SUBSCRIBED",
                    "subscribed": { "get_state": get_state(&state), "heartbeat_interval_seconds": heartbeat.as_secs_f64() },
                })]
            }
            StreamMessage::Event { event } => {
                let previous = match &event.kind {
                    EventKind::TaskUpdated { task } | EventKind::TaskAdded { task } => {
                        tasks.insert(task.id.as_str().to_owned(), task.clone())
                    }
                    _ => None,
                };
                operator_events(&event.kind, previous.as_ref())
            }
            StreamMessage::Heartbeat => vec![json!({ "type": "HEARTBEAT" })],
            // A snapshot follows; the subscriber's state is replaced by it.
            StreamMessage::FellBehind { .. } => Vec::new(),
        };
        futures::stream::iter(values.into_iter().map(|v| Ok::<_, std::io::Error>(record_io(v.to_string().as_bytes()))))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, JSON)
        .body(Body::from_stream(records))
        .unwrap_or_else(|e| MesosApiError::Unavailable(e.to_string()).into_response())
}
