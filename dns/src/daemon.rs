//! `atoll dns`: the projection fed from the master's event stream (or, in drop-in mode, from
//! an Apache Mesos master), the server answering from it, and the HTTP API.
//!
//! One task owns the projection: it applies the stream and hands the resulting record changes
//! to the served zone, so a name appears or disappears as soon as its event arrives — no
//! polling of an Atoll master. It remembers the cluster state it has applied under the data
//! dir, so a restarted DNS serves at once and resumes the stream where it left off.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_proto::model::{ClusterState, StreamMessage};
use atoll_proto::pb::v1::operator as opb;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::projection::{DnsConfig, Masters, Projection};
use crate::records::Name;
use crate::server::{ServerConfig, Zone, ZoneConfig};
use crate::settings::DnsOptions;

/// Why the DNS daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot serve DNS: {0}")]
    Server(#[from] crate::server::ServerError),
    #[error("cannot listen on {addr} for HTTP: {source}")]
    HttpBind { addr: SocketAddr, source: std::io::Error },
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
}

/// Asks the projection's owner for what only it can compute.
pub(crate) enum Query {
    Enumerate(oneshot::Sender<serde_json::Value>),
}

/// What the HTTP API needs.
#[derive(Clone)]
pub struct Shared {
    pub zone: Zone,
    pub options: Arc<DnsOptions>,
    pub metrics: Arc<Metrics>,
    pub(crate) queries: mpsc::Sender<Query>,
}

impl Shared {
    pub async fn enumerate(&self) -> serde_json::Value {
        let (tx, rx) = oneshot::channel();
        if self.queries.send(Query::Enumerate(tx)).await.is_err() {
            return serde_json::json!({ "frameworks": [] });
        }
        rx.await.unwrap_or_else(|_| serde_json::json!({ "frameworks": [] }))
    }
}

/// The zones served, from the options.
pub fn server_config(options: &DnsOptions) -> ServerConfig {
    let domain = Name::new(&options.domain);
    let mname = Name::new(&format!("{}.{}", options.soa_mname, options.domain));
    let rname = Name::new(&format!("root.{mname}"));
    let zone = |domain: Name| ZoneConfig {
        domain,
        ttl: options.ttl,
        soa_mname: mname.clone(),
        soa_rname: rname.clone(),
        refresh: 60,
        retry: 600,
        expire: 86400,
        minimum: options.ttl,
    };
    ServerConfig {
        zones: vec![zone(domain), zone(Name::new(&options.vip_domain))],
        forward: options.forward.clone(),
        recursion_allowed: options.recursion_allowed.clone(),
    }
}

/// A DNS server that is listening; [`RunningDns::serve`] runs it.
pub struct RunningDns {
    pub shared: Shared,
    listeners: crate::server::Listeners,
    http: tokio::net::TcpListener,
    queries: mpsc::Receiver<Query>,
    projection: Projection,
    state_file: Option<PathBuf>,
}

/// Binds the DNS and HTTP listeners and recovers the last state applied.
pub async fn start(options: DnsOptions) -> Result<RunningDns, DaemonError> {
    let options = Arc::new(options);
    let metrics = Arc::new(Metrics::new());
    let zone = Zone::new();
    let listeners = crate::server::Listeners::bind(&options.listen).await?;
    let http = tokio::net::TcpListener::bind(options.http_listen)
        .await
        .map_err(|source| DaemonError::HttpBind { addr: options.http_listen, source })?;
    let dns_ips: Vec<IpAddr> = listeners.local_addrs().iter().map(SocketAddr::ip).collect();
    let mut projection = Projection::new(DnsConfig {
        domain: options.domain.clone(),
        label_spec: options.label_spec,
        ip_sources: options.ip_sources.clone(),
        soa_mname: options.soa_mname.clone(),
        dns_ips,
        health_aware: options.health_aware,
        vip_domain: options.vip_domain.clone(),
    });
    let state_file = options.data_dir.as_ref().map(|dir| dir.join("state.json"));
    if let Some(dir) = &options.data_dir {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::DataDir { path: dir.clone(), source })?;
    }
    // Serve the last known names at once; the stream catches up from there.
    if let Some(state) = state_file.as_ref().and_then(|f| std::fs::read(f).ok()) {
        match serde_json::from_slice::<ClusterState>(&state) {
            Ok(state) => {
                let changes = projection.reset(&state);
                zone.apply(&changes, projection.serial());
                tracing::info!(
                    index = state.index,
                    records = zone.snapshot().len(),
                    "recovered the last state applied"
                );
            }
            Err(e) => tracing::warn!("ignoring an unreadable saved state: {e}"),
        }
    }
    let (tx, queries) = mpsc::channel(16);
    let shared = Shared { zone, options, metrics, queries: tx };
    Ok(RunningDns { shared, listeners, http, queries, projection, state_file })
}

impl RunningDns {
    /// The UDP/TCP addresses actually bound.
    pub fn dns_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.local_addrs()
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), DaemonError> {
        let RunningDns { shared, listeners, http, queries, projection, state_file } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let config = server_config(&shared.options);
        let server =
            tokio::spawn(crate::server::serve_on(listeners, config, shared.zone.clone(), stopped(stop_rx.clone())));
        let api = crate::http::router(shared.clone());
        let http_stop = stopped(stop_rx.clone());
        let http_task = tokio::spawn(async move { axum::serve(http, api).with_graceful_shutdown(http_stop).await });
        let feeder = Feeder {
            shared: shared.clone(),
            projection,
            state_file,
            last_save: None,
            gateways: BTreeMap::new(),
            stop: stop_rx.clone(),
        };
        let feed = tokio::spawn(feeder.run(queries, stopped(stop_rx)));
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = feed.await;
        let _ = http_task.await;
        match server.await {
            Ok(result) => result.map_err(DaemonError::from),
            Err(_) => Ok(()),
        }
    }
}

/// Starts and serves until `shutdown` resolves.
pub async fn run(options: DnsOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), DaemonError> {
    let dns = start(options).await?;
    tracing::info!(dns = ?dns.dns_addrs(), http = ?dns.http_addr(), "DNS serving");
    dns.serve(shutdown).await
}

/// The owner of the projection.
struct Feeder {
    shared: Shared,
    projection: Projection,
    state_file: Option<PathBuf>,
    last_save: Option<Instant>,
    /// Extra listeners on the bridge gateways of this node's agents (containers' resolver).
    gateways: BTreeMap<SocketAddr, tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// How often the applied state is written to the data dir (at most).
const SAVE_INTERVAL: Duration = Duration::from_secs(2);

impl Feeder {
    async fn run(mut self, mut queries: mpsc::Receiver<Query>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let masters = masters_of(&self.shared.options.master).await;
        let changes = self.projection.set_masters(masters);
        self.shared.zone.apply(&changes, self.projection.serial());
        match self.shared.options.mesos_master.clone() {
            Some(url) => {
                tokio::select! {
                    _ = crate::mesos::follow(&url, &mut self.projection, &self.shared, &mut queries) => {}
                    _ = &mut stop => {}
                }
            }
            None => {
                tokio::select! {
                    _ = self.follow_atoll(&mut queries) => {}
                    _ = &mut stop => {}
                }
            }
        }
    }

    /// Follows the Atoll master's event stream forever, resuming after every disconnect.
    async fn follow_atoll(&mut self, queries: &mut mpsc::Receiver<Query>) {
        let url = self.shared.options.master.clone();
        let mut state = self.saved_state();
        let mut retry = Duration::from_millis(100);
        loop {
            let since = state.as_ref().map(|s| s.index);
            match opb::operator_client::OperatorClient::connect(url.clone()).await {
                Err(e) => tracing::warn!("cannot reach the master at {url}: {e}"),
                Ok(mut client) => match client.subscribe(opb::SubscribeRequest { since }).await {
                    Err(e) => tracing::warn!("subscribing to {url}: {e}"),
                    Ok(response) => {
                        retry = Duration::from_millis(100);
                        self.shared.metrics.connected.set(1);
                        let mut stream = response.into_inner();
                        loop {
                            tokio::select! {
                                message = stream.message() => match message {
                                    Ok(Some(message)) => match StreamMessage::try_from(message) {
                                        Ok(message) => self.on_message(message, &mut state),
                                        Err(e) => tracing::warn!("bad event from the master: {e}"),
                                    },
                                    Ok(None) => break,
                                    Err(e) => {
                                        tracing::warn!("event stream from {url}: {e}");
                                        break;
                                    }
                                },
                                Some(query) = queries.recv() => self.answer(query),
                            }
                        }
                        self.shared.metrics.connected.set(0);
                    }
                },
            }
            // Keep answering queries while waiting to reconnect.
            let sleep = tokio::time::sleep(retry);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(query) = queries.recv() => self.answer(query),
                }
            }
            retry = (retry * 2).min(Duration::from_secs(5));
        }
    }

    fn on_message(&mut self, message: StreamMessage, state: &mut Option<ClusterState>) {
        let started = Instant::now();
        let changes = match message {
            StreamMessage::Snapshot { state: snapshot } => {
                let changes = self.projection.reset(&snapshot);
                *state = Some(snapshot);
                changes
            }
            StreamMessage::Event { event } => {
                if let Some(state) = state.as_mut() {
                    state.apply(&event);
                }
                self.projection.apply(&event)
            }
            StreamMessage::FellBehind { requested, oldest_retained } => {
                tracing::warn!(requested, oldest_retained, "fell behind the event log; a snapshot follows");
                return;
            }
            StreamMessage::Heartbeat => return,
        };
        self.shared.zone.apply(&changes, self.projection.serial());
        self.shared.metrics.changes.inc_by(changes.len() as u64);
        self.shared.metrics.serial.set(i64::from(self.projection.serial()));
        self.shared.metrics.records.set(self.shared.zone.snapshot().len() as i64);
        self.shared.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        self.save(state.as_ref());
        if let Some(state) = state.as_ref() {
            self.update_gateways(state);
        }
    }

    /// Answers on the bridge gateway of every subnet of this node's agents (container tasks'
    /// resolv.conf points there), starting and stopping listeners as subnets come and go.
    fn update_gateways(&mut self, state: &ClusterState) {
        let Some(port) = self.shared.options.gateway_port else { return };
        let wanted: BTreeSet<SocketAddr> = state
            .agents
            .iter()
            .filter(|a| is_local(a.address.ip()))
            .flat_map(|a| a.subnets.iter().map(move |s| SocketAddr::new(s.gateway, port)))
            .collect();
        self.gateways.retain(|addr, task| {
            let keep = wanted.contains(addr);
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in wanted {
            if self.gateways.contains_key(&addr) {
                continue;
            }
            match crate::server::Listeners::bind_freebind(&[addr]) {
                Ok(listeners) => {
                    tracing::info!(%addr, "answering on the bridge gateway");
                    let config = server_config(&self.shared.options);
                    let zone = self.shared.zone.clone();
                    let mut stop = self.stop.clone();
                    let task = tokio::spawn(async move {
                        let stopped = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        if let Err(e) = crate::server::serve_on(listeners, config, zone, stopped).await {
                            tracing::warn!(%addr, "gateway listener stopped: {e}");
                        }
                    });
                    self.gateways.insert(addr, task);
                }
                Err(e) => tracing::warn!(%addr, "cannot answer on the bridge gateway: {e}"),
            }
        }
    }

    fn answer(&self, query: Query) {
        match query {
            Query::Enumerate(reply) => {
                let _ = reply.send(self.projection.enumerate());
            }
        }
    }

    fn saved_state(&self) -> Option<ClusterState> {
        let bytes = std::fs::read(self.state_file.as_ref()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the applied state (atomically) at most every SAVE_INTERVAL.
    fn save(&mut self, state: Option<&ClusterState>) {
        let (Some(path), Some(state)) = (&self.state_file, state) else { return };
        if self.last_save.is_some_and(|at| at.elapsed() < SAVE_INTERVAL) {
            return;
        }
        self.last_save = Some(Instant::now());
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!("saving the applied state to {}: {e}", path.display());
        }
    }
}

/// Whether an address belongs to this machine (an agent on this node).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The master named by a URL, as leader and only master (Atoll runs one master).
async fn masters_of(url: &str) -> Masters {
    let host_port = url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let with_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5050") };
    let address = match tokio::net::lookup_host(with_port.as_str()).await {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            tracing::warn!("cannot resolve the master {with_port}: {e}");
            None
        }
    };
    Masters { leader: address, masters: address.into_iter().collect() }
}
