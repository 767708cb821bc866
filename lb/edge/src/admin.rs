//! The edge's admin API: `/v1/routes` (routes, backends with their state, requests in flight
//! and ejections; services listed without a route; label problems), Marathon-LB's
//! `/_haproxy_getvhostmap`, `/metrics`, `/health`.

use std::sync::Arc;

use atoll_lb_core::edge::{PathMatch, Route};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::state::EdgeState;
use crate::tls::SniResolver;

#[derive(Clone)]
pub struct Admin {
    pub state: Arc<EdgeState>,
    pub certificates: Option<Arc<SniResolver>>,
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/routes", get(routes))
        .route("/_haproxy_getvhostmap", get(vhost_map))
        .with_state(admin)
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let text = admin.state.metrics.render(&admin.state.in_flight_all());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

fn route_json(route: &Route, admin: &Admin) -> Value {
    let in_flight = admin.state.in_flight_all();
    let ejected = admin.state.ejected();
    let (path, path_match) = match &route.path {
        Some(PathMatch::Begins(p)) => (Some(p.as_str()), "begins"),
        Some(PathMatch::Segments(p)) => (Some(p.as_str()), "segments"),
        None => (None, "any"),
    };
    json!({
        "id": route.id,
        "app": route.app,
        "hosts": route.hosts,
        "path": path,
        "path_match": path_match,
        "strip_prefix": route.strip_prefix,
        "balance": route.balance.to_string(),
        "redirect_to_https": route.redirect_to_https,
        "service_port": route.service_port,
        "backends": route.backends.iter().map(|b| json!({
            "address": b.address.to_string(),
            "task": b.task,
            "state": b.state,
            "in_flight": in_flight.get(&b.address).copied().unwrap_or(0),
            "ejected": ejected.contains(&b.address),
        })).collect::<Vec<_>>(),
    })
}

async fn routes(State(admin): State<Admin>) -> axum::Json<Value> {
    let snapshot = admin.state.snapshot();
    let table = &snapshot.table;
    axum::Json(json!({
        "index": snapshot.index,
        "group": admin.state.options.group,
        "routes": table.routes().iter().map(|r| route_json(r, &admin)).collect::<Vec<_>>(),
        "port_only": table.port_only(),
        "problems": table.problems().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "certificates": admin.certificates.as_ref().map(|c| c.names()),
    }))
}

/// `host route` per line, most specific route first, as Marathon-LB's vhost map file.
async fn vhost_map(State(admin): State<Admin>) -> String {
    let snapshot = admin.state.snapshot();
    let mut text = String::new();
    for (host, routes) in snapshot.table.vhost_map() {
        for route in routes {
            text.push_str(&format!("{host} {route}\n"));
        }
    }
    text
}
