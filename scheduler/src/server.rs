//! Starting and stopping the master: registry, core, built-in frameworks, and the one
//! listener that serves gRPC and HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use atoll_proto::model::Time;
use atoll_proto::pb::v1::agent::agent_registry_server::AgentRegistryServer;
use atoll_proto::pb::v1::operator::operator_server::OperatorServer;
use atoll_proto::pb::v1::scheduler::scheduler_server::SchedulerServer;
use atoll_scheduler_core::master::Master;

use axum::serve::ListenerExt;

use crate::actor;
use crate::config::MasterOptions;
use crate::grpc::{AgentService, OperatorService, SchedulerService};
use crate::http::{ApiState, router};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryError};

/// How long open streams get to close at shutdown.
const STREAM_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the master could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// A master that is listening; [`RunningMaster::serve`] runs it.
pub struct RunningMaster {
    listener: tokio::net::TcpListener,
    app: axum::Router,
    pub address: SocketAddr,
}

/// Opens the registry, recovers the state and binds the listener.
pub async fn start(options: MasterOptions) -> Result<RunningMaster, ServerError> {
    let registry = Arc::new(Registry::open(&options.data_dir, options.event_retention)?);
    let recovered = registry.load()?;
    tracing::info!(
        "registry {}: {} agents, {} frameworks, {} tasks, last event {}",
        options.data_dir.display(),
        recovered.agents.len(),
        recovered.frameworks.len(),
        recovered.tasks.len(),
        recovered.last_index
    );
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let fresh_ipam = recovered.pools.is_none();
    let mut master = Master::recover(options.config.clone(), run_id, recovered, Time::now());
    if let (true, Some(pool)) = (fresh_ipam, options.default_pool.clone()) {
        // Committed with the master's first batch (its outputs wait in the outbox).
        if let Err(e) = master.ensure_pool(pool, Time::now()) {
            tracing::warn!("the default pool could not be created: {e}");
        }
    }
    for (role, weight) in &options.role_weights {
        master.set_role_weight(role, *weight);
    }
    let metrics = Arc::new(Metrics::new());
    let handle = actor::spawn(master, registry, metrics);
    let run = crate::run::spawn(handle.clone());
    let services = crate::services::spawn(handle.clone(), options.services_framework_name.clone());
    let grpc = tonic::service::Routes::new(SchedulerServer::new(SchedulerService::new(handle.clone())))
        .add_service(AgentRegistryServer::new(AgentService::new(handle.clone())))
        .add_service(OperatorServer::new(OperatorService::new(handle.clone())))
        .into_axum_router();
    let read_only = handle.clone();
    let mesos_scheduler = handle.clone();
    let app = router(ApiState { master: handle, run }).merge(crate::services::api::router(services)).merge(grpc);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: options.listen, source })?;
    let address = listener.local_addr().map_err(ServerError::Serve)?;
    // Mesos's read-only endpoints name the master by the address it is reached at: known only
    // once bound (an ephemeral port, a wildcard address).
    let identity = crate::mesos_readonly::identity(address, &options).await;
    let app = app
        .merge(crate::mesos_scheduler::router(mesos_scheduler, &identity))
        .merge(crate::mesos_operator::router(read_only.clone(), identity.clone()))
        .merge(crate::mesos_readonly::router(read_only, identity))
        .fallback(unknown_path);
    Ok(RunningMaster { listener, app, address })
}

/// A path nothing serves: 404 for HTTP clients; gRPC's own UNIMPLEMENTED for gRPC ones (a
/// Mesos client posting to an endpoint Atoll lacks must not read a gRPC 200 as success).
async fn unknown_path(request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let path = request.uri().path().to_owned();
    if grpc {
        tonic::Status::unimplemented(format!("no gRPC method {path}")).into_http()
    } else {
        (axum::http::StatusCode::NOT_FOUND, format!("no such path: {path}\n")).into_response()
    }
}

impl RunningMaster {
    /// Serves until `shutdown` resolves. Open streams (framework subscriptions, event
    /// subscribers, agents) get a moment to close; then the master stops regardless, since
    /// long-lived streams would otherwise hold it open forever.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        // Launches, status updates and events are small messages on long-lived streams:
        // Nagle's algorithm would hold each back for the peer's delayed ack (~40 ms).
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let graceful = axum::serve(listener, self.app).with_graceful_shutdown(async move {
            shutdown.await;
            notify.notify_waiters();
        });
        let deadline = async move {
            stopping.notified().await;
            tokio::time::sleep(STREAM_GRACE).await;
        };
        tokio::select! {
            result = graceful => result.map_err(ServerError::Serve),
            _ = deadline => Ok(()),
        }
    }
}

/// Starts and serves until `shutdown` resolves.
pub async fn run(
    options: MasterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let master = start(options).await?;
    tracing::info!("master listening on {} (HTTP and gRPC)", master.address);
    master.serve(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn options(dir: &std::path::Path) -> MasterOptions {
        let settings = crate::config::MasterSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.to_owned()),
            ..Default::default()
        };
        settings.resolve().unwrap()
    }

    /// Every path and method the OpenAPI document names is routed (a missing route answers
    /// 404/405 with an empty body; a handler's own 404 carries a JSON error).
    #[tokio::test]
    async fn every_documented_operation_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let master = start(options(dir.path())).await.unwrap();
        let doc: serde_json::Value = serde_json::from_str(crate::http::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 14);
        for (path, operations) in paths {
            for method in operations.as_object().unwrap().keys() {
                let uri = path.replace("{id}", "nonexistent");
                let mut request = axum::http::Request::builder().method(method.to_uppercase().as_str()).uri(&uri);
                if method == "post" {
                    request = request.header("content-type", "application/json");
                }
                let body = if path == "/v1/run" { Body::from("{}") } else { Body::empty() };
                let response = master.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
                let status = response.status();
                // Streams (the event stream) never end: only error bodies are read.
                let routed = !(status == 404 || status == 405)
                    || !axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().is_empty();
                assert!(routed, "{} {uri} is documented but not routed ({status})", method.to_uppercase());
            }
        }
    }
}
