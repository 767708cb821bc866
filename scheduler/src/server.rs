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
    let mut master = Master::recover(options.config.clone(), run_id, recovered, Time::now());
    for (role, weight) in &options.role_weights {
        master.set_role_weight(role, *weight);
    }
    let metrics = Arc::new(Metrics::new());
    let handle = actor::spawn(master, registry, metrics);
    let run = crate::run::spawn(handle.clone());
    let grpc = tonic::service::Routes::new(SchedulerServer::new(SchedulerService::new(handle.clone())))
        .add_service(AgentRegistryServer::new(AgentService::new(handle.clone())))
        .add_service(OperatorServer::new(OperatorService::new(handle.clone())))
        .into_axum_router();
    let app = router(ApiState { master: handle, run }).merge(grpc);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: options.listen, source })?;
    let address = listener.local_addr().map_err(ServerError::Serve)?;
    Ok(RunningMaster { listener, app, address })
}

impl RunningMaster {
    /// Serves until `shutdown` resolves. Open streams (framework subscriptions, event
    /// subscribers, agents) get a moment to close; then the master stops regardless, since
    /// long-lived streams would otherwise hold it open forever.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let graceful = axum::serve(self.listener, self.app).with_graceful_shutdown(async move {
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
