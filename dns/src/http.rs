//! The DNS HTTP API, shaped like Mesos-DNS's: `/v1/version`, `/v1/config`, `/v1/hosts/{host}`,
//! `/v1/services/{service}`, `/v1/enumerate`, `/v1/axfr`, plus `/metrics` and `/health`.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::daemon::Shared;
use crate::records::{Name, RecordData, RecordType};

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/version", get(version))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
        .route("/v1/enumerate", get(enumerate))
        .route("/v1/axfr", get(axfr))
        .with_state(shared)
}

async fn metrics(State(shared): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], shared.metrics.render())
        .into_response()
}

async fn version() -> axum::Json<Value> {
    axum::Json(json!({
        "Service": "Atoll DNS (Mesos-DNS compatible)",
        "URL": "https://github.com/mesosphere/mesos-dns",
        "Version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn config(State(shared): State<Shared>) -> axum::Json<Value> {
    let o = &shared.options;
    axum::Json(json!({
        "Domain": o.domain,
        "TTL": o.ttl,
        "Listener": o.listen.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
        "Port": o.listen.first().map(|a| a.port()),
        "HTTPPort": o.http_listen.port(),
        "Resolvers": o.forward.as_ref().map(|f| f.iter().map(|a| a.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "ExternalOn": o.forward.is_some(),
        "IPSources": o.ip_sources.iter().map(|s| format!("{s:?}").to_ascii_lowercase()).collect::<Vec<_>>(),
        "EnforceRFC952": matches!(o.label_spec, crate::projection::LabelSpec::Rfc952),
        "SOAMname": format!("{}.{}.", o.soa_mname, o.domain),
        "HealthAware": o.health_aware,
        "Master": o.mesos_master.clone().unwrap_or_else(|| o.master.clone()),
    }))
}

/// `[{"host": name, "ip": ip}]`, or Mesos-DNS's single empty entry for an unknown name.
async fn hosts(State(shared): State<Shared>, Path(host): Path<String>) -> axum::Json<Value> {
    let name = Name::new(&host);
    let zone = shared.zone.snapshot();
    let mut found: Vec<Value> = Vec::new();
    for kind in [RecordType::A, RecordType::Aaaa] {
        for data in zone.get(&name, kind) {
            let ip = match data {
                RecordData::A(ip) => ip.to_string(),
                RecordData::Aaaa(ip) => ip.to_string(),
                RecordData::Srv { .. } => continue,
            };
            found.push(json!({ "host": name.as_str(), "ip": ip }));
        }
    }
    if found.is_empty() {
        found.push(json!({ "host": "", "ip": "" }));
    }
    axum::Json(Value::Array(found))
}

/// `[{"service", "host", "ip", "port"}]` for an SRV name, each target with its addresses.
async fn services(State(shared): State<Shared>, Path(service): Path<String>) -> axum::Json<Value> {
    let name = Name::new(&service);
    let zone = shared.zone.snapshot();
    let mut found: Vec<Value> = Vec::new();
    for data in zone.get(&name, RecordType::Srv) {
        let RecordData::Srv { port, target, .. } = data else { continue };
        let ips: Vec<String> = zone
            .get(target, RecordType::A)
            .chain(zone.get(target, RecordType::Aaaa))
            .filter_map(|d| match d {
                RecordData::A(ip) => Some(ip.to_string()),
                RecordData::Aaaa(ip) => Some(ip.to_string()),
                RecordData::Srv { .. } => None,
            })
            .collect();
        for ip in if ips.is_empty() { vec![String::new()] } else { ips } {
            found
                .push(json!({ "service": name.as_str(), "host": target.as_str(), "ip": ip, "port": port.to_string() }));
        }
    }
    if found.is_empty() {
        found.push(json!({ "service": "", "host": "", "ip": "", "port": "" }));
    }
    axum::Json(Value::Array(found))
}

async fn enumerate(State(shared): State<Shared>) -> axum::Json<Value> {
    axum::Json(shared.enumerate().await)
}

/// The whole zone, as Mesos-DNS's `/v1/axfr` lays it out.
async fn axfr(State(shared): State<Shared>) -> axum::Json<Value> {
    let zone = shared.zone.snapshot();
    let mut a: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut aaaa: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut srv: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in zone.records() {
        let name = record.name.as_str().to_owned();
        match record.data {
            RecordData::A(ip) => a.entry(name).or_default().push(ip.to_string()),
            RecordData::Aaaa(ip) => aaaa.entry(name).or_default().push(ip.to_string()),
            RecordData::Srv { port, target, .. } => srv.entry(name).or_default().push(format!("{target}:{port}")),
        }
    }
    let o = &shared.options;
    axum::Json(json!({
        "Domain": o.domain,
        "Mname": format!("{}.{}.", o.soa_mname, o.domain),
        "Rname": format!("root.{}.{}.", o.soa_mname, o.domain),
        "Serial": shared.zone.serial(),
        "RefreshSeconds": 0,
        "TTL": o.ttl,
        "As": a,
        "AAAAs": aaaa,
        "SRVs": srv,
    }))
}
