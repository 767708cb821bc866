//! The agent's HTTP API (axum): `/health`, `/metrics`, `/v1/state` and task logs
//! (`/v1/tasks/{task_id}/logs/{stdout|stderr}?offset=N&framework_id=F&follow=true`). Handlers ask
//! the actor what they need to know and read sandbox files themselves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atoll_proto::model::{FrameworkId, TaskId};
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{LogTarget, Msg, StateView};
use crate::checkpoint::{STDERR, STDOUT};
use crate::metrics::Metrics;

const FOLLOW_POLL: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the agent is shutting down")]
    Unavailable,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Read { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// What handlers share: the way to the actor and the metrics.
#[derive(Clone)]
pub(crate) struct Api {
    pub actor: mpsc::UnboundedSender<Msg>,
    pub metrics: Arc<Metrics>,
}

impl Api {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, HttpError> {
        let (reply, answer) = oneshot::channel();
        self.actor.send(make(reply)).map_err(|_| HttpError::Unavailable)?;
        answer.await.map_err(|_| HttpError::Unavailable)
    }
}

pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/state", get(state))
        .route("/v1/tasks/{task_id}/logs/{file}", get(logs))
        .with_state(api)
}

async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], api.metrics.render())
}

async fn state(State(api): State<Api>) -> Result<Json<StateView>, HttpError> {
    Ok(Json(api.ask(|reply| Msg::State { reply }).await?))
}

/// The parsed query of a log request.
#[derive(Debug, PartialEq)]
struct LogQuery {
    offset: u64,
    framework_id: Option<FrameworkId>,
    follow: bool,
}

fn parse_log_query(query: &HashMap<String, String>) -> Result<LogQuery, HttpError> {
    let offset = match query.get("offset") {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| HttpError::BadRequest(format!("offset: `{v}` is not a byte offset (a number >= 0)")))?,
        None => 0,
    };
    let follow = match query.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(v) => return Err(HttpError::BadRequest(format!("follow: `{v}` is not true or false"))),
    };
    let framework_id = query.get("framework_id").filter(|f| !f.is_empty()).map(|f| FrameworkId::new(f.as_str()));
    Ok(LogQuery { offset, framework_id, follow })
}

async fn logs(
    State(api): State<Api>,
    Path((task_id, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    if file != STDOUT && file != STDERR {
        return Err(HttpError::BadRequest(format!("`{file}` is not a log file; use stdout or stderr")));
    }
    let query = parse_log_query(&query)?;
    let task_id = TaskId::new(task_id);
    let target = api
        .ask(|reply| Msg::FindLog { task_id, framework_id: query.framework_id.clone(), reply })
        .await?
        .map_err(|e| HttpError::NotFound(e.to_string()))?;
    let path = target.sandbox.join(&file);
    // A file that cannot be opened for another reason than absence is an error now, not an
    // empty stream.
    if let Err(e) = tokio::fs::metadata(&path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(HttpError::Read { path, source: e });
    }
    let tail = Tail { api, target, path, offset: query.offset, follow: query.follow, file: None, terminal: false };
    // The state is `None` after an error, which ends the body right after reporting it.
    let stream = futures::stream::unfold(Some(tail), |state| async move {
        let mut tail = state?;
        match tail.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok::<Bytes, std::io::Error>(chunk), Some(tail))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(stream)).into_response())
}

/// Reads a log file from an offset; when following, waits for more until the run is over and
/// the file exhausted. Dropped (ending the loop) when the client goes away.
struct Tail {
    api: Api,
    target: LogTarget,
    path: PathBuf,
    offset: u64,
    follow: bool,
    file: Option<tokio::fs::File>,
    /// The run was seen terminal: one more read drains what was written before that.
    terminal: bool,
}

impl Tail {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            let n = self.read().await?;
            if let Some(chunk) = n {
                return Ok(Some(chunk));
            }
            if !self.follow || self.terminal {
                return Ok(None);
            }
            let run = self.target.run.clone();
            match self.api.ask(|reply| Msg::RunTerminal { run, reply }).await {
                // Unknown (collected) or over: drain once more, then end.
                Ok(None) | Ok(Some(true)) | Err(_) => self.terminal = true,
                Ok(Some(false)) => tokio::time::sleep(FOLLOW_POLL).await,
            }
        }
    }

    async fn read(&mut self) -> std::io::Result<Option<Bytes>> {
        if self.file.is_none() {
            match tokio::fs::File::open(&self.path).await {
                Ok(file) => self.file = Some(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = self.file.as_mut() else { return Ok(None) };
        file.seek(std::io::SeekFrom::Start(self.offset)).await?;
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        self.offset += n as u64;
        Ok(Some(Bytes::from(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn log_queries() {
        assert_eq!(
            parse_log_query(&query(&[])).expect("empty"),
            LogQuery { offset: 0, framework_id: None, follow: false }
        );
        assert_eq!(
            parse_log_query(&query(&[("offset", "12"), ("framework_id", "f1"), ("follow", "true")])).expect("full"),
            LogQuery { offset: 12, framework_id: Some(FrameworkId::new("f1")), follow: true }
        );
        for bad in [("offset", "-1"), ("offset", "x"), ("follow", "maybe")] {
            let err = parse_log_query(&query(&[bad])).expect_err("bad");
            assert!(matches!(err, HttpError::BadRequest(ref m) if m.starts_with(bad.0)), "{err}");
        }
    }
}
