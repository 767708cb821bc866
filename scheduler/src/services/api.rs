//! Marathon's REST API (`/v2/...`, `/ping`) over the services framework, in Marathon's JSON
//! shapes: `{"message": …}` errors, 422 with `details` for invalid apps, 409 for a locked app.

use std::collections::HashMap;
use std::convert::Infallible;

use atoll_proto::model::{AppId, StreamMessage};
use atoll_scheduler_core::services::validate::{self, FieldError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::events::Translator;
use super::json;
use super::{ServiceError, ServicesHandle};
use crate::events;

/// A Marathon-style error answer.
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

fn invalid(errors: &[FieldError]) -> ApiError {
    let details: Vec<Value> = errors.iter().map(|e| json!({ "path": e.path, "errors": [e.message] })).collect();
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, json!({ "message": "Object is not valid", "details": details }))
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        let message = error.to_string();
        match error {
            ServiceError::Invalid(errors) => invalid(&errors.0),
            ServiceError::UnknownApp(_) | ServiceError::UnknownDeployment(_) => {
                ApiError(StatusCode::NOT_FOUND, json::error(&message))
            }
            ServiceError::AppExists(_) => ApiError(StatusCode::CONFLICT, json::error(&message)),
            ServiceError::Locked(id) => {
                ApiError(StatusCode::CONFLICT, json!({ "message": message, "deployments": [{ "id": id }] }))
            }
            ServiceError::Unavailable(_) => ApiError(StatusCode::SERVICE_UNAVAILABLE, json::error(&message)),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, json::error(&message.into()))
}

/// Query parameters the routes know, each checked.
#[derive(Default)]
struct Params {
    force: bool,
    partial_update: bool,
    embed_tasks: bool,
    event_types: Vec<String>,
}

fn params(query: &HashMap<String, String>, allowed: &[&str]) -> Result<Params, ApiError> {
    let mut params = Params { partial_update: true, ..Params::default() };
    let flag = |key: &str, value: &str| match value {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        other => Err(bad_request(format!("{key}: `{other}` is not true or false"))),
    };
    for (key, value) in query {
        if !allowed.contains(&key.as_str()) {
            return Err(bad_request(format!("unknown query parameter `{key}`")));
        }
        match key.as_str() {
            "force" => params.force = flag(key, value)?,
            "partialUpdate" => params.partial_update = flag(key, value)?,
            "embed" => params.embed_tasks = value.ends_with(".tasks"),
            "event_type" => params.event_types = value.split(',').map(str::to_owned).collect(),
            _ => {}
        }
    }
    Ok(params)
}

pub fn router(services: ServicesHandle) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/v2/info", get(info))
        .route("/v2/apps", get(list_apps).post(create_app))
        .route("/v2/apps/{*path}", get(get_app_path).put(put_app).delete(delete_app).post(post_app_path))
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/deployments/{id}", axum::routing::delete(delete_deployment))
        .route("/v2/events", get(event_stream))
        .with_state(services)
}

async fn info(State(services): State<ServicesHandle>) -> ApiResult {
    let info = services.info().await?;
    Ok(axum::Json(json!({
        "name": info.name,
        "version": env!("CARGO_PKG_VERSION"),
        "frameworkId": info.framework_id.map(|f| f.to_string()),
        "elected": true,
        "leader": null,
        "marathon_config": { "framework_name": services.name(), "hostname": null },
        "http_config": {},
    }))
    .into_response())
}

fn app_id(path: &str) -> Result<AppId, ApiError> {
    AppId::parse(path).map_err(|message| invalid(&[FieldError { path: "/id".into(), message }]))
}

async fn list_apps(State(services): State<ServicesHandle>, Query(query): Query<HashMap<String, String>>) -> ApiResult {
    let params = params(&query, &["embed", "cmd", "id", "label"])?;
    let apps: Vec<Value> = services.apps().await?.iter().map(|view| json::app(view, params.embed_tasks)).collect();
    Ok(axum::Json(json!({ "apps": apps })).into_response())
}

async fn create_app(
    State(services): State<ServicesHandle>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let params = params(&query, &["force"])?;
    let (id, definition) = validate::parse_app(&body).map_err(|e| invalid(&e.0))?;
    let (deployment, _) = services.put(id.clone(), definition, true, params.force).await?;
    let view = services.app(id.clone()).await?;
    let mut value = json::app(&view, false);
    value["deployments"] = json!([{ "id": deployment.deployment_id }]);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/apps{id}")),
            (header::HeaderName::from_static("marathon-deployment-id"), deployment.deployment_id),
        ],
        axum::Json(value),
    )
        .into_response())
}

/// `GET /v2/apps/{id}` and `GET /v2/apps/{id}/tasks`.
async fn get_app_path(State(services): State<ServicesHandle>, Path(path): Path<String>) -> ApiResult {
    if let Some(app) = path.strip_suffix("/tasks") {
        let view = services.app(app_id(app)?).await?;
        let tasks: Vec<Value> = view.tasks.iter().filter(|t| !t.status.state.is_terminal()).map(json::task).collect();
        return Ok(axum::Json(json!({ "tasks": tasks })).into_response());
    }
    let view = services.app(app_id(&path)?).await?;
    Ok(axum::Json(json!({ "app": json::app(&view, true) })).into_response())
}

/// `POST /v2/apps/{id}/restart`.
async fn post_app_path(
    State(services): State<ServicesHandle>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let Some(app) = path.strip_suffix("/restart") else {
        return Err(ApiError(StatusCode::NOT_FOUND, json::error("POST /v2/apps/{id} takes only /restart")));
    };
    let params = params(&query, &["force"])?;
    let deployment = services.restart(app_id(app)?, params.force).await?;
    Ok(axum::Json(deployment).into_response())
}

/// Creates or changes an app. With `partialUpdate` (the default) the body's fields replace
/// those of the current definition; without it the body is the whole definition.
async fn put_app(
    State(services): State<ServicesHandle>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let params = params(&query, &["force", "partialUpdate"])?;
    let id = app_id(&path)?;
    let current = services.app(id.clone()).await.ok().map(|view| view.app.definition);
    let (_, definition) =
        validate::parse_update(&id, current.as_ref(), &body, params.partial_update).map_err(|e| invalid(&e.0))?;
    let (deployment, created) = services.put(id.clone(), definition, false, params.force).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((
        status,
        [(header::HeaderName::from_static("marathon-deployment-id"), deployment.deployment_id.clone())],
        axum::Json(deployment),
    )
        .into_response())
}

async fn delete_app(
    State(services): State<ServicesHandle>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let params = params(&query, &["force"])?;
    let deployment = services.remove(app_id(&path)?, params.force).await?;
    Ok(axum::Json(deployment).into_response())
}

async fn list_tasks(State(services): State<ServicesHandle>, Query(query): Query<HashMap<String, String>>) -> ApiResult {
    params(&query, &["status"])?;
    let wanted = query.get("status").map(String::as_str);
    let mut tasks = Vec::new();
    for view in services.apps().await? {
        for task in view.tasks.iter().filter(|t| !t.status.state.is_terminal()) {
            let running = task.status.state == atoll_proto::model::TaskState::Running;
            let include = match wanted {
                Some("running") => running,
                Some("staging") => !running,
                _ => true,
            };
            if include {
                tasks.push(json::task(task));
            }
        }
    }
    Ok(axum::Json(json!({ "tasks": tasks })).into_response())
}

async fn list_deployments(State(services): State<ServicesHandle>) -> ApiResult {
    let deployments: Vec<Value> = services.deployments().await?.iter().map(json::deployment).collect();
    Ok(axum::Json(deployments).into_response())
}

/// Rolls a deployment back (a new deployment to the previous version), or with
/// `force=true` only cancels it.
async fn delete_deployment(
    State(services): State<ServicesHandle>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let params = params(&query, &["force"])?;
    match services.rollback(id, params.force).await? {
        Some(deployment) => Ok(axum::Json(deployment).into_response()),
        None => Ok(StatusCode::ACCEPTED.into_response()),
    }
}

/// Marathon's event bus as Server-Sent Events (`event:` is the Marathon event type).
async fn event_stream(
    State(services): State<ServicesHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let params = params(&query, &["event_type", "plan-format"])?;
    let mut translator = Translator::default();
    let wanted = params.event_types;
    let stream = events::subscribe(services.master().clone(), None).flat_map(move |message| {
        let values = match &message {
            StreamMessage::Snapshot { state } => {
                translator.learn(&state.tasks);
                Vec::new()
            }
            StreamMessage::Event { event } => translator.translate(event),
            _ => Vec::new(),
        };
        let events: Vec<Result<SseEvent, Infallible>> = values
            .into_iter()
            .filter(|v| wanted.is_empty() || wanted.iter().any(|w| v["eventType"] == w.as_str()))
            .map(|value| {
                let kind = value["eventType"].as_str().unwrap_or("event").to_owned();
                Ok(SseEvent::default().event(kind).data(value.to_string()))
            })
            .collect();
        futures::stream::iter(events)
    });
    Ok(Sse::new(stream).keep_alive(axum::response::sse::KeepAlive::default()))
}
