//! The operator HTTP/JSON API (`/v1/...`), Server-Sent Events for the event stream, health,
//! version and metrics. Errors are JSON `{"error": "..."}` with a 4xx that fits.

use std::collections::HashMap;
use std::convert::Infallible;

use atoll_proto::model::{AgentId, DrainConfig, StreamMessage, TaskId, TaskState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::actor::{ActorError, IpamChange, Maintenance, MasterHandle};
use crate::events;
use crate::run::{RunError, RunHandle, RunRequest};
use atoll_scheduler_core::master::MasterError;

#[derive(Clone)]
pub struct ApiState {
    pub master: MasterHandle,
    pub run: RunHandle,
}

/// An API error: a status and a message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ActorError> for ApiError {
    fn from(error: ActorError) -> ApiError {
        use atoll_ipam::IpamError;
        let status = match &error {
            ActorError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            ActorError::Master(e) => match e {
                MasterError::Ipam(IpamError::UnknownPool { .. }) => StatusCode::NOT_FOUND,
                MasterError::Ipam(
                    IpamError::PoolExists { .. }
                    | IpamError::PoolInUse { .. }
                    | IpamError::SubnetLenInUse { .. }
                    | IpamError::LeasesOutsidePool { .. }
                    | IpamError::ExclusionCoversLease { .. }
                    | IpamError::AddressTaken { .. },
                )
                | MasterError::PoolInUse { .. } => StatusCode::CONFLICT,
                MasterError::UnknownAgent(_) | MasterError::UnknownFramework(_) | MasterError::UnknownTask(_) => {
                    StatusCode::NOT_FOUND
                }
                MasterError::FrameworkRemoved(_) | MasterError::AgentGone(_) | MasterError::TaskTerminal(_) => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::BAD_REQUEST,
            },
        };
        ApiError(status, error.to_string())
    }
}

impl From<RunError> for ApiError {
    fn from(error: RunError) -> ApiError {
        let status = match &error {
            RunError::Invalid(_) => StatusCode::BAD_REQUEST,
            RunError::Unsatisfiable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RunError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, error.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/state", get(cluster_state))
        .route("/v1/events", get(event_stream))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(show_node))
        .route("/v1/nodes/{id}/drain", post(drain_node))
        .route("/v1/nodes/{id}/deactivate", post(deactivate_node))
        .route("/v1/nodes/{id}/reactivate", post(reactivate_node))
        .route("/v1/frameworks", get(list_frameworks))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(show_task))
        .route("/v1/tasks/{id}/kill", post(kill_task))
        .route("/v1/run", post(run_task))
        .route("/v1/ipam/pools", get(list_pools).post(add_pool))
        .route("/v1/ipam/pools/{name}", get(show_pool).put(update_pool).delete(remove_pool))
        .route("/v1/ipam/pools/{name}/reserve", post(reserve_address))
        .route("/v1/ipam/leases", get(list_leases))
        .route("/v1/vips", get(list_vips))
        .with_state(state)
}

/// Mesos's `/version` keys, since Mesos clients read this path: `version` is the Mesos API
/// version Atoll speaks ([`crate::mesos_state::MESOS_VERSION`]); Atoll's own is `atoll_version`.
async fn version() -> Response {
    let mut body = crate::mesos_state::version_json();
    body["name"] = "atoll".into();
    body["atoll_version"] = env!("CARGO_PKG_VERSION").into();
    json(&body)
}

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.master.metrics().render(),
    )
        .into_response()
}

async fn cluster_state(State(state): State<ApiState>) -> ApiResult<Response> {
    Ok(json(&state.master.state().await?))
}

async fn list_nodes(State(state): State<ApiState>) -> ApiResult<Response> {
    Ok(json(&state.master.state().await?.agents))
}

async fn show_node(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    let agents = state.master.state().await?.agents;
    let agent = agents
        .into_iter()
        .find(|a| a.id.as_str() == id || a.hostname == id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("unknown agent `{id}`")))?;
    Ok(json(&agent))
}

/// `POST /v1/nodes/{id}/drain`'s body; empty for a drain with the tasks' own grace periods.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    /// The longest grace period the agent's tasks get.
    #[serde(default)]
    max_grace_period_secs: Option<f64>,
    /// Mark the agent gone once drained.
    #[serde(default)]
    mark_gone: bool,
}

async fn drain_node(State(state): State<ApiState>, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
    let request: DrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DrainRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("drain request: {e}")))?
    };
    let config = DrainConfig { max_grace_period_secs: request.max_grace_period_secs, mark_gone: request.mark_gone };
    Ok(json(&state.master.maintain(AgentId(id), Maintenance::Drain(config)).await?))
}

async fn deactivate_node(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(json(&state.master.maintain(AgentId(id), Maintenance::Deactivate).await?))
}

async fn reactivate_node(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(json(&state.master.maintain(AgentId(id), Maintenance::Reactivate).await?))
}

async fn list_frameworks(State(state): State<ApiState>) -> ApiResult<Response> {
    Ok(json(&state.master.state().await?.frameworks))
}

async fn list_tasks(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let mut wanted_state = None;
    let mut framework = None;
    for (key, value) in &query {
        match key.as_str() {
            "state" => {
                wanted_state = Some(
                    TaskState::from_name(value)
                        .ok_or_else(|| ApiError::bad_request(format!("state: `{value}` is not a task state")))?,
                )
            }
            "framework_id" => framework = Some(value.clone()),
            other => return Err(ApiError::bad_request(format!("unknown query parameter `{other}`"))),
        }
    }
    let tasks: Vec<_> = state
        .master
        .state()
        .await?
        .tasks
        .into_iter()
        .filter(|t| wanted_state.is_none_or(|s| t.state == s))
        .filter(|t| framework.as_deref().is_none_or(|f| t.framework_id.as_str() == f))
        .collect();
    Ok(json(&tasks))
}

async fn show_task(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(json(&state.master.find_task(TaskId(id)).await?))
}

async fn kill_task(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok((StatusCode::ACCEPTED, axum::Json(state.master.kill_task(TaskId(id)).await?)).into_response())
}

async fn run_task(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let request: RunRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let accepted = state.run.run(request).await?;
    Ok((StatusCode::CREATED, axum::Json(accepted)).into_response())
}

/// `GET /v1/events?since=N` as Server-Sent Events: `id:` is the event index (the snapshot's
/// index for a snapshot), `event:` the message type, `data:` its JSON. A reconnecting
/// client's `Last-Event-ID` takes the place of `since`.
async fn event_stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let mut since = None;
    for (key, value) in &query {
        match key.as_str() {
            "since" => {
                since = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("since: `{value}` is not an event index (a non-negative integer)"))
                })?)
            }
            other => return Err(ApiError::bad_request(format!("unknown query parameter `{other}`"))),
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().map_err(|_| ApiError::bad_request("Last-Event-ID: not text"))?;
        since = Some(
            text.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("Last-Event-ID: `{text}` is not an event index")))?,
        );
    }
    let stream = events::subscribe(state.master.clone(), since).map(|message| Ok(sse_event(&message)));
    Ok(Sse::new(stream))
}

fn sse_event(message: &StreamMessage) -> SseEvent {
    let data = serde_json::to_string(message).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let event = SseEvent::default().data(data);
    match message {
        StreamMessage::Snapshot { state } => event.event("SNAPSHOT").id(state.index.to_string()),
        StreamMessage::Event { event: e } => event.event(e.kind.name()).id(e.index.to_string()),
        StreamMessage::FellBehind { .. } => event.event("FELL_BEHIND"),
        StreamMessage::Heartbeat => event.event("HEARTBEAT"),
    }
}

fn pool_spec(body: &Bytes) -> ApiResult<atoll_ipam::PoolSpec> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

async fn list_pools(State(state): State<ApiState>) -> ApiResult<Response> {
    Ok(json(&state.master.pools().await?))
}

async fn add_pool(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let spec = pool_spec(&body)?;
    let name = spec.name.clone();
    state.master.ipam(IpamChange::AddPool(spec)).await?;
    Ok((StatusCode::CREATED, axum::Json(state.master.pool(name).await?)).into_response())
}

async fn show_pool(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(json(&state.master.pool(name).await?))
}

async fn update_pool(State(state): State<ApiState>, Path(name): Path<String>, body: Bytes) -> ApiResult<Response> {
    let spec = pool_spec(&body)?;
    if spec.name != name {
        return Err(ApiError::bad_request(format!(
            "name: `{}` does not match the pool in the path (`{name}`)",
            spec.name
        )));
    }
    state.master.ipam(IpamChange::UpdatePool(spec)).await?;
    Ok(json(&state.master.pool(name).await?))
}

async fn remove_pool(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Response> {
    let view = state.master.pool(name.clone()).await?;
    state.master.ipam(IpamChange::RemovePool(name)).await?;
    Ok(json(&view.pool))
}

async fn reserve_address(State(state): State<ApiState>, Path(name): Path<String>, body: Bytes) -> ApiResult<Response> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Reserve {
        ip: std::net::IpAddr,
    }
    let request: Reserve =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    state.master.ipam(IpamChange::Reserve { pool: name.clone(), ip: request.ip }).await?;
    Ok(json(&state.master.pool(name).await?))
}

async fn list_leases(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    for key in query.keys() {
        if key != "agent" && key != "task" {
            return Err(ApiError::bad_request(format!("unknown query parameter `{key}`")));
        }
    }
    let leases: Vec<_> = state
        .master
        .leases()
        .await?
        .into_iter()
        .filter(|l| query.get("agent").is_none_or(|a| l.agent_id.as_str() == a))
        .filter(|l| query.get("task").is_none_or(|t| l.task_id.as_str() == t))
        .collect();
    Ok(json(&leases))
}

/// One VIP service as `/v1/vips` shows it.
#[derive(Serialize)]
struct VipView {
    /// `web.marathon` for a named VIP (`/web:80` on framework marathon), `ip:port` for a fixed one.
    name: String,
    framework: Option<String>,
    address: std::net::Ipv4Addr,
    port: u16,
    protocol: String,
    backends: Vec<VipBackendView>,
    healthy: usize,
    draining: usize,
}

#[derive(Serialize)]
struct VipBackendView {
    address: std::net::Ipv4Addr,
    port: u16,
    weight: u32,
    task_id: String,
}

/// The VIP services as every node's load balancer derives them from the cluster state.
async fn list_vips(State(state): State<ApiState>) -> ApiResult<Response> {
    use atoll_lb_core::vips::{VipName, VipProjection};
    let cluster = state.master.state().await?;
    let assignments: std::collections::BTreeMap<VipName, std::net::Ipv4Addr> = cluster
        .vips
        .iter()
        .filter_map(|v| match v.address {
            std::net::IpAddr::V4(address) => Some((VipName::new(&v.framework, &v.name), address)),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    let mut projection = VipProjection::new();
    projection.reset(&cluster, &assignments);
    let views: Vec<VipView> = projection
        .services()
        .map(|service| {
            let (address, port, proto) = service.parts();
            let named = service.names.first();
            VipView {
                name: named
                    .map(|n| format!("{}.{}", n.name, n.framework))
                    .unwrap_or_else(|| format!("{address}:{port}")),
                framework: named.map(|n| n.framework.clone()),
                address,
                port,
                protocol: atoll_lb_core::protocol_name(proto),
                backends: service
                    .backends
                    .iter()
                    .map(|b| VipBackendView {
                        address: b.address,
                        port: b.port,
                        weight: b.weight,
                        task_id: b.task.clone(),
                    })
                    .collect(),
                healthy: service.active_backends(),
                draining: service.draining_backends(),
            }
        })
        .collect();
    Ok(json(&views))
}
