//! The load balancer's HTTP API: `/health`, `/metrics` (the daemon's and per-VIP counters
//! read from the kernel), `/v1/services` (what this node's maps serve).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::daemon::Shared;

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/services", get(services))
        .with_state(shared)
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let text = shared.render_metrics().await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn services(State(shared): State<Shared>) -> axum::Json<serde_json::Value> {
    axum::Json(shared.services().await)
}
