//! `atoll edge`, the HTTP edge proxy: it follows the master's event stream, builds the route
//! table from app labels (Marathon-LB's and Atoll's, `atoll-lb-core::edge`), and serves it
//! with a pingora proxy — HTTP/1.1 and HTTP/2, TLS by SNI, WebSockets — swapping the table
//! atomically on every change, never reloading. It owns the route table snapshot, the
//! per-backend request counters and the certificates it loaded.
//!
//! Where the apps come from ([`RouteSource`]): an Atoll master's event stream (the default);
//! with `--marathon URL`, a Marathon's `/v2/apps?embed=apps.tasks`, read whenever its event
//! bus (`/v2/events`) announces a change, as Marathon-LB reads it; with `--mesos-master URL`,
//! an Apache Mesos master's operator API event stream (`atoll-mesos-follow`), whose tasks
//! carry their Marathon app's labels and are grouped into apps by their Marathon task ids
//! ([`atoll_lb_core::edge::mesos`]).

pub mod admin;
pub mod follow;
pub mod metrics;
pub mod proxy;
pub mod settings;
pub mod state;
pub mod tls;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::http_proxy_service;
use pingora::server::configuration::ServerConf;
use pingora::services::Service as _;

pub use settings::{EdgeOptions, EdgeSettings, SettingsError};
use state::EdgeState;

/// Why the edge could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the proxy stopped unexpectedly: {0}")]
    Proxy(String),
}

/// An edge whose listeners are known to be free and whose admin API is bound;
/// [`RunningEdge::serve`] runs it.
pub struct RunningEdge {
    state: Arc<EdgeState>,
    admin: tokio::net::TcpListener,
    certificates: Option<tls::CertDir>,
}

/// Checks the proxy's listeners (pingora binds them itself, and panics if it cannot) and
/// binds the admin API.
pub async fn start(options: EdgeOptions) -> Result<RunningEdge, EdgeError> {
    let mut listeners = vec![("listen", options.listen)];
    listeners.extend(options.tls_listen.map(|a| ("tls-listen", a)));
    for (what, addr) in listeners {
        std::net::TcpListener::bind(addr).map_err(|source| EdgeError::Bind { what, addr, source })?;
    }
    let admin = tokio::net::TcpListener::bind(options.admin_listen).await.map_err(|source| EdgeError::Bind {
        what: "admin-listen",
        addr: options.admin_listen,
        source,
    })?;
    let certificates = options.tls_listen.map(|_| {
        let mut dir = tls::CertDir::new(options.cert_dir.clone());
        dir.refresh();
        if dir.resolver().names().is_empty() {
            tracing::warn!(dir = %options.cert_dir.display(), "no certificates yet: TLS handshakes fail until some are added");
        }
        dir
    });
    Ok(RunningEdge { state: Arc::new(EdgeState::new(options)), admin, certificates })
}

impl RunningEdge {
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    pub fn options(&self) -> &EdgeOptions {
        &self.state.options
    }

    /// Serves the routes of the configured source's apps (the master's cluster state, or
    /// `--marathon`'s, or `--mesos-master`'s) until `shutdown` resolves; then stops accepting,
    /// gives the requests in flight the grace period to finish, and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), EdgeError> {
        let options = &self.state.options;
        let source = match (options.marathon.clone(), options.mesos_master.clone()) {
            (Some(url), _) => RouteSource::Marathon(url),
            (None, Some(url)) => RouteSource::Mesos(url),
            (None, None) => RouteSource::Master,
        };
        self.serve_from(source, shutdown).await
    }

    /// [`RunningEdge::serve`] with the apps from `source`.
    pub async fn serve_from(
        self,
        source: RouteSource,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EdgeError> {
        let RunningEdge { state, admin, certificates } = self;
        let options = state.options.clone();
        let conf = Arc::new(ServerConf {
            grace_period_seconds: Some(options.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(1),
            max_retries: options.retries as usize + 1,
            ..ServerConf::default()
        });
        let mut service = http_proxy_service(&conf, proxy::EdgeProxy { state: state.clone() });
        let mut http_options = HttpServerOptions::default();
        // HTTP/2 without TLS (prior knowledge), next to HTTP/1.1 on the same port.
        http_options.h2c = true;
        if let Some(app) = service.app_logic_mut() {
            app.server_options = Some(http_options);
        }
        service.add_tcp(&options.listen.to_string());
        let resolver = certificates.as_ref().map(|c| c.resolver());
        if let (Some(addr), Some(resolver)) = (options.tls_listen, &resolver) {
            // The paths are not read when a resolver picks the certificate.
            let mut settings = TlsSettings::intermediate("", "").map_err(|e| EdgeError::Tls(e.to_string()))?;
            settings.set_cert_resolver(resolver.clone());
            settings.enable_h2();
            service.add_tls_with_settings(&addr.to_string(), None, settings);
        }

        let follower = match source {
            RouteSource::Master => tokio::spawn(follow::follow(state.clone())),
            RouteSource::Apps(apps) => tokio::spawn(follow::follow_apps(state.clone(), apps)),
            RouteSource::Marathon(url) => tokio::spawn(follow::follow_marathon(state.clone(), url)),
            RouteSource::Mesos(url) => tokio::spawn(follow::follow_mesos(state.clone(), url)),
        };
        let watcher = certificates.map(|dir| tokio::spawn(dir.watch(Duration::from_secs(2))));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let api = admin::router(admin::Admin { state: state.clone(), certificates: resolver });
        let mut admin_stop = stop_rx.clone();
        let admin_task = tokio::spawn(async move {
            axum::serve(admin, api)
                .with_graceful_shutdown(async move {
                    let _ = admin_stop.wait_for(|stop| *stop).await;
                })
                .await
        });
        let mut proxy = tokio::spawn(async move { service.start_service(None, stop_rx, 1).await });
        tracing::info!(listen = %options.listen, tls = ?options.tls_listen, admin = %options.admin_listen, group = options.group, "edge serving");

        let failed = tokio::select! {
            () = shutdown => None,
            result = &mut proxy => Some(result.map_or_else(|e| e.to_string(), |()| "it returned".to_owned())),
        };
        let _ = stop_tx.send(true);
        // The listeners close at once; requests in flight get the grace period.
        let deadline = Instant::now() + options.grace_period;
        while state.requests_in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower.abort();
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        let _ = admin_task.await;
        if failed.is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(2), proxy).await;
        }
        match failed {
            Some(why) => Err(EdgeError::Proxy(why)),
            None => Ok(()),
        }
    }
}

/// Where an edge's apps come from.
pub enum RouteSource {
    /// The master's event stream (`options.master`).
    Master,
    /// A Marathon's apps (`/v2/apps?embed=apps.tasks`), read when its event bus announces a
    /// change: Marathon-LB's own source.
    Marathon(String),
    /// A Mesos master's tasks, from its operator API's event stream (`http://host:5050`).
    Mesos(String),
    /// Apps handed over directly, each new value a new table: for embedding the edge and for
    /// benchmarks that change routes faster than a cluster would.
    Apps(tokio::sync::watch::Receiver<atoll_lb_core::edge::EdgeApps>),
}

/// Starts and serves until `shutdown` resolves.
pub async fn run(options: EdgeOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), EdgeError> {
    start(options).await?.serve(shutdown).await
}
