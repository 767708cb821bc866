//! `atoll lb`: follows the master's event stream and keeps this node's eBPF maps serving every
//! VIP the cluster state names. The master is an Atoll master (gRPC), or with `--mesos-master`
//! a Mesos master (its operator API, through [`atoll_mesos_follow::Subscription`]); the same
//! controller code applies either's snapshots and events, and on Mesos gives named VIPs their
//! hashed addresses ([`atoll_lb_core::vips::hashed_assignments`]) since no master assigns them
//! there.
//!
//! One task, the [`Controller`], owns the three pieces of state — the VIP projection (cluster
//! state → services), the data-plane plan (services → map contents and the order of writes)
//! and the dataplane (the kernel's maps) — and answers the HTTP API's questions about them.
//!
//! Restarts: the programs and maps are pinned, so VIP traffic is served while no daemon runs.
//! The plan is saved under the data dir; a restarted daemon that finds the pinned maps as its
//! saved plan describes continues from it, so the first snapshot it receives changes only what
//! changed meanwhile. If they differ (the plan was lost, or the daemon died between a write
//! and the save), it reprograms every map from the snapshot and deletes what is left over.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_lb_core::dataplane::{DataplanePlan, MapOp, PlanError};
use atoll_lb_core::vips::mesos::Converted;
use atoll_lb_core::vips::{Service, VipProjection, sync_hashed_assignments};
use atoll_lb_core::{DisplayKey, ServiceKey, key_parts, protocol_name};
use atoll_lb_l4::{Dataplane, L4Error};
use atoll_proto::model::{ClusterState, Event, StreamMessage};
use atoll_proto::pb::v1::operator as opb;
use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{MapLabel, Metrics, VipLabels, VipSample};
use crate::settings::LbOptions;

/// Why the load balancer could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("the eBPF dataplane: {0}")]
    Dataplane(#[from] L4Error),
    #[error("cannot listen on {addr} for HTTP: {source}")]
    HttpBind { addr: SocketAddr, source: std::io::Error },
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("the load balancer task failed: {0}")]
    Task(String),
}

/// Asks the controller for what only it can compute.
pub(crate) enum Query {
    Metrics(oneshot::Sender<String>),
    Services(oneshot::Sender<Value>),
}

/// What the HTTP API needs.
#[derive(Clone)]
pub struct Shared {
    pub options: Arc<LbOptions>,
    pub metrics: Arc<Metrics>,
    pub(crate) queries: mpsc::Sender<Query>,
}

impl Shared {
    async fn ask<T>(&self, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(query(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn render_metrics(&self) -> String {
        match self.ask(Query::Metrics).await {
            Some(text) => text,
            None => self.metrics.render(&[]),
        }
    }

    pub async fn services(&self) -> Value {
        self.ask(Query::Services).await.unwrap_or_else(|| json!([]))
    }
}

/// A load balancer whose programs are attached and whose HTTP API is bound;
/// [`RunningLb::serve`] runs it.
pub struct RunningLb {
    pub shared: Shared,
    http: tokio::net::TcpListener,
    controller: Controller,
    queries: mpsc::Receiver<Query>,
}

/// Routes the VIP pool to a blackhole, attaches the programs (or takes over the pinned ones)
/// and restores the saved plan.
pub async fn start(options: LbOptions) -> Result<RunningLb, LbError> {
    let data_dir = options.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| LbError::DataDir { path: data_dir.clone(), source })?;
    // Checked before the route is added, so a wrong --cgroup changes nothing.
    options.l4.check_cgroup()?;
    // Before anything is attached: from now on a VIP connection that no program rewrote is
    // dropped here instead of following the default route off the machine.
    atoll_lb_l4::ensure_blackhole(IpNetwork::V4(options.vip_pool)).await?;
    let dataplane = Dataplane::start(&options.l4)?;
    let report = dataplane.report().clone();
    tracing::info!(
        maps_reused = report.maps_reused,
        links_updated = report.links_updated.len(),
        links_created = report.links_created.len(),
        removed = ?report.removed,
        object = report.object,
        "programs attached"
    );
    let metrics = Arc::new(Metrics::new());
    for (map, bytes) in dataplane.kernel_memory() {
        metrics.kernel_memory.get_or_create(&MapLabel { map: (*map).to_owned() }).set(*bytes as i64);
    }
    let (plan, reprogram) = restore_plan(&options, &dataplane);
    let http = tokio::net::TcpListener::bind(options.http_listen)
        .await
        .map_err(|source| LbError::HttpBind { addr: options.http_listen, source })?;
    let (tx, queries) = mpsc::channel(16);
    let options = Arc::new(options);
    let shared = Shared { options: options.clone(), metrics: metrics.clone(), queries: tx };
    let controller = Controller {
        options,
        metrics,
        dataplane,
        plan,
        projection: VipProjection::new(),
        reprogram,
        unsaved: false,
        last_save: None,
    };
    controller.publish_sizes();
    Ok(RunningLb { shared, http, controller, queries })
}

/// The saved plan if the pinned maps are what it describes; otherwise an empty plan, and
/// whether the maps hold something else (then they are reprogrammed at the first snapshot).
fn restore_plan(options: &LbOptions, dataplane: &Dataplane) -> (DataplanePlan, bool) {
    if !dataplane.report().maps_reused {
        return (options.empty_plan(), false);
    }
    let saved = match std::fs::read(options.plan_file()) {
        Ok(bytes) => match serde_json::from_slice::<DataplanePlan>(&bytes) {
            Ok(plan) => Some(plan),
            Err(e) => {
                tracing::warn!("ignoring the unreadable saved plan {}: {e}", options.plan_file().display());
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("reading the saved plan {}: {e}", options.plan_file().display());
            None
        }
    };
    match saved {
        Some(plan) if plan_matches_maps(&plan, options, dataplane) => {
            tracing::info!(services = plan.service_count(), "continuing with the maps the kernel serves");
            (plan, false)
        }
        _ => {
            let empty = dataplane.services().map(|s| s.is_empty()).unwrap_or(false)
                && dataplane.backends().map(|b| b.is_empty()).unwrap_or(false);
            if !empty {
                tracing::warn!("the pinned maps differ from the saved plan: reprogramming them from the event stream");
            }
            (options.empty_plan(), !empty)
        }
    }
}

fn plan_matches_maps(plan: &DataplanePlan, options: &LbOptions, dataplane: &Dataplane) -> bool {
    if plan.maglev_size() != options.l4.maglev_size
        || plan.max_tables() != options.l4.max_tables
        || plan.max_backends() != options.l4.max_backends
    {
        return false;
    }
    let (Ok(services), Ok(backends)) = (dataplane.services(), dataplane.backends()) else { return false };
    let in_maps: HashSet<_> = services.into_iter().collect();
    let planned: HashSet<_> = plan.service_values().collect();
    let backends_in_maps: HashSet<_> = backends.into_iter().collect();
    let backends_planned: HashSet<_> = plan.backend_values().collect();
    in_maps == planned && backends_in_maps == backends_planned
}

impl RunningLb {
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    /// What starting the dataplane found and did.
    pub fn report(&self) -> &atoll_lb_l4::StartReport {
        self.controller.dataplane.report()
    }

    /// Serves until `shutdown` resolves. The programs stay attached afterwards (the next
    /// daemon takes over); `cleanup` detaches them.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), LbError> {
        let RunningLb { shared, http, controller, queries } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let api = crate::http::router(shared.clone());
        let http_stop = stopped(stop_rx.clone());
        let http_task = tokio::spawn(async move { axum::serve(http, api).with_graceful_shutdown(http_stop).await });
        let control = tokio::spawn(controller.run(queries, stopped(stop_rx)));
        shutdown.await;
        let _ = stop_tx.send(true);
        let control = control.await;
        let _ = http_task.await;
        control.map_err(|e| LbError::Task(e.to_string()))
    }
}

/// Starts and serves until `shutdown` resolves.
pub async fn run(options: LbOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), LbError> {
    let lb = start(options).await?;
    tracing::info!(http = ?lb.http_addr(), "load balancer serving");
    lb.serve(shutdown).await
}

/// What `cleanup` removed.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub dataplane: atoll_lb_l4::CleanupReport,
    pub plan_removed: bool,
}

/// `atoll lb --cleanup`: detaches the programs, unpins everything, removes the blackhole route
/// and the saved plan.
pub async fn cleanup(options: &LbOptions) -> Result<Cleanup, LbError> {
    let dataplane = Dataplane::cleanup(&options.l4)?;
    atoll_lb_l4::remove_blackhole(IpNetwork::V4(options.vip_pool)).await?;
    let plan_removed = match std::fs::remove_file(options.plan_file()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => return Err(LbError::DataDir { path: options.plan_file(), source }),
    };
    Ok(Cleanup { dataplane, plan_removed })
}

/// The owner of the projection, the plan and the maps.
struct Controller {
    options: Arc<LbOptions>,
    metrics: Arc<Metrics>,
    dataplane: Dataplane,
    plan: DataplanePlan,
    projection: VipProjection,
    /// The maps hold something the plan does not describe: rewrite them all, and delete the
    /// rest, once the first snapshot is planned.
    reprogram: bool,
    unsaved: bool,
    last_save: Option<Instant>,
}

/// How often the plan is written to the data dir at most (a plan older than the maps is
/// detected at the next start, and the maps reprogrammed).
const SAVE_INTERVAL: Duration = Duration::from_millis(200);

impl Controller {
    async fn run(mut self, mut queries: mpsc::Receiver<Query>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        tokio::select! {
            _ = self.follow(&mut queries) => {}
            _ = &mut stop => {}
        }
        self.save();
    }

    /// Follows the master's event stream forever, resubscribing after every disconnect (each
    /// subscription starts with a snapshot: this daemon keeps no cluster state of its own).
    async fn follow(&mut self, queries: &mut mpsc::Receiver<Query>) {
        match self.options.mesos_master.clone() {
            Some(url) => self.follow_mesos(&url, queries).await,
            None => self.follow_atoll(queries).await,
        }
    }

    async fn follow_atoll(&mut self, queries: &mut mpsc::Receiver<Query>) {
        let url = self.options.master.clone();
        let mut retry = Duration::from_millis(100);
        let mut save_tick = tokio::time::interval(SAVE_INTERVAL);
        loop {
            match opb::operator_client::OperatorClient::connect(url.clone()).await {
                Err(e) => tracing::warn!("cannot reach the master at {url}: {e}"),
                Ok(mut client) => match client.subscribe(opb::SubscribeRequest { since: None }).await {
                    Err(e) => tracing::warn!("subscribing to {url}: {e}"),
                    Ok(response) => {
                        retry = Duration::from_millis(100);
                        self.metrics.connected.set(1);
                        let mut stream = response.into_inner();
                        loop {
                            tokio::select! {
                                message = stream.message() => match message {
                                    Ok(Some(message)) => match StreamMessage::try_from(message) {
                                        Ok(message) => self.on_message(message),
                                        Err(e) => tracing::warn!("bad event from the master: {e}"),
                                    },
                                    Ok(None) => break,
                                    Err(e) => {
                                        tracing::warn!("event stream from {url}: {e}");
                                        break;
                                    }
                                },
                                Some(query) = queries.recv() => self.answer(query),
                                _ = save_tick.tick() => self.save_if_due(),
                            }
                        }
                        self.metrics.connected.set(0);
                    }
                },
            }
            self.wait_answering(retry, queries, &mut save_tick).await;
            retry = (retry * 2).min(Duration::from_secs(5));
        }
    }

    /// Follows a Mesos master's operator API event stream forever. Each subscription starts
    /// with the whole state, so a new one simply starts over.
    async fn follow_mesos(&mut self, url: &str, queries: &mut mpsc::Receiver<Query>) {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let mut retry = atoll_mesos_follow::MIN_RETRY;
        let mut save_tick = tokio::time::interval(SAVE_INTERVAL);
        loop {
            let lived = match atoll_mesos_follow::Subscription::open(&http, url).await {
                Err(e) => {
                    tracing::warn!("no Mesos event stream: {e}");
                    None
                }
                Ok(mut subscription) => {
                    tracing::info!("following the Mesos master at {url}");
                    self.metrics.connected.set(1);
                    let opened = Instant::now();
                    loop {
                        tokio::select! {
                            next = subscription.next() => match next {
                                Ok(Some(converted)) => self.on_converted(converted),
                                Ok(None) => {
                                    tracing::warn!("the Mesos master at {url} ended the event stream");
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!("Mesos event stream: {e}");
                                    break;
                                }
                            },
                            Some(query) = queries.recv() => self.answer(query),
                            _ = save_tick.tick() => self.save_if_due(),
                        }
                    }
                    self.metrics.connected.set(0);
                    Some(opened.elapsed())
                }
            };
            retry = atoll_mesos_follow::next_retry(retry, lived);
            self.wait_answering(retry, queries, &mut save_tick).await;
        }
    }

    /// Waits before subscribing again. The maps keep serving what they have; queries are
    /// answered meanwhile.
    async fn wait_answering(
        &mut self,
        duration: Duration,
        queries: &mut mpsc::Receiver<Query>,
        save_tick: &mut tokio::time::Interval,
    ) {
        let sleep = tokio::time::sleep(duration);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                Some(query) = queries.recv() => self.answer(query),
                _ = save_tick.tick() => self.save_if_due(),
            }
        }
    }

    fn on_message(&mut self, message: StreamMessage) {
        match message {
            StreamMessage::Snapshot { state } => self.on_snapshot(&state),
            StreamMessage::Event { event } => self.on_events(std::slice::from_ref(&event)),
            StreamMessage::FellBehind { requested, oldest_retained } => {
                tracing::warn!(requested, oldest_retained, "fell behind the event log; a snapshot follows");
            }
            StreamMessage::Heartbeat => {}
        }
    }

    fn on_converted(&mut self, converted: Converted) {
        match converted {
            Converted::Snapshot(state) => self.on_snapshot(&state),
            Converted::Events(events) if events.is_empty() => {}
            Converted::Events(events) => self.on_events(&events),
        }
    }

    /// Starts over from the whole state.
    fn on_snapshot(&mut self, state: &ClusterState) {
        let started = Instant::now();
        self.projection.reset(state, &BTreeMap::new());
        self.assign_hashed();
        self.log_problems();
        self.sync_all();
        if self.reprogram {
            self.reprogram = false;
            self.reprogram_maps();
        }
        tracing::info!(index = state.index, services = self.plan.service_count(), "synchronized with the master");
        self.applied(started);
    }

    /// Folds in events, then reprograms what they changed.
    fn on_events(&mut self, events: &[Event]) {
        let started = Instant::now();
        let mut changed = Vec::new();
        for event in events {
            changed.extend(self.projection.apply(event));
        }
        changed.extend(self.assign_hashed());
        self.log_problems();
        if !changed.is_empty() {
            self.sync(changed);
        }
        self.applied(started);
    }

    fn applied(&self, started: Instant) {
        self.metrics.event_index.set(self.projection.index() as i64);
        self.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        self.publish_sizes();
    }

    /// On a Mesos master, gives the named VIPs the tasks carry their hashed addresses (an Atoll
    /// master's come with its events); returns the keys that changed.
    fn assign_hashed(&mut self) -> Vec<ServiceKey> {
        if self.options.mesos_master.is_none() {
            return Vec::new();
        }
        let (changed, unassigned) = sync_hashed_assignments(&mut self.projection, self.options.vip_pool);
        if !unassigned.is_empty() {
            tracing::warn!(
                "the VIP pool {} has no room for {} named VIP(s), not served: {}",
                self.options.vip_pool,
                unassigned.len(),
                unassigned.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
        }
        changed
    }

    fn log_problems(&mut self) {
        for problem in self.projection.take_new_problems() {
            tracing::warn!("{problem}");
        }
    }

    /// Brings every service to the projection's state (after a snapshot).
    fn sync_all(&mut self) {
        let mut keys: Vec<ServiceKey> = self.projection.services().map(|s| s.key).collect();
        keys.extend(self.plan.service_values().map(|(key, _)| key));
        self.sync(keys);
    }

    /// Brings the given services to the projection's state: those gone first (that frees
    /// room), then one update for the rest — or, if that does not fit as a whole, one service
    /// at a time, so that every service that fits is served.
    fn sync(&mut self, keys: Vec<ServiceKey>) {
        let mut ops = Vec::new();
        let mut wanted: Vec<&Service> = Vec::new();
        let mut seen = BTreeSet::new();
        for key in keys {
            if !seen.insert(key_parts(&key)) {
                continue;
            }
            match self.projection.service(&key) {
                Some(service) => wanted.push(service),
                None => ops.extend(self.plan.remove(&key)),
            }
        }
        // The services map is the one limit the plan does not know: new services beyond it
        // are refused here, in key order.
        let mut room = (self.options.l4.max_services as usize).saturating_sub(self.plan.service_count());
        wanted.retain(|service| {
            if self.plan.service_value(&service.key).is_some() {
                return true;
            }
            if room == 0 {
                tracing::warn!(
                    "service {} not programmed: the services map is full ({} entries; see --max-services)",
                    DisplayKey(&service.key),
                    self.options.l4.max_services
                );
                self.metrics.refused_updates.inc();
                return false;
            }
            room -= 1;
            true
        });
        match self.plan.update(&wanted) {
            Ok(more) => ops.extend(more),
            Err(
                PlanError::TooManyTables { .. } | PlanError::TooManyBackends { .. } | PlanError::TableTooSmall { .. },
            ) => {
                for service in &wanted {
                    match self.plan.update(&[service]) {
                        Ok(more) => ops.extend(more),
                        Err(e) => {
                            tracing::warn!("service {} keeps its previous backends: {e}", DisplayKey(&service.key));
                            self.metrics.refused_updates.inc();
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!("planning the maps: {e}");
                self.metrics.refused_updates.inc();
            }
        }
        self.apply(ops);
    }

    /// Writes the operations in order. A write the kernel refuses is logged and counted; the
    /// rest go on (each is whole for its entry).
    fn apply(&mut self, ops: Vec<MapOp>) {
        if ops.is_empty() {
            return;
        }
        let count = ops.len() as u64;
        for op in ops {
            let result = match op {
                MapOp::UpsertBackend { id, backend } => self.dataplane.upsert_backend(id, backend),
                MapOp::WriteTable { table, entries } => self.dataplane.write_table(table, &entries),
                MapOp::UpsertService { key, value } => self.dataplane.upsert_service(key, value),
                MapOp::RemoveService { key } => self.dataplane.remove_service(&key),
                MapOp::RemoveBackend { id } => self.dataplane.remove_backend(id),
            };
            if let Err(e) = result {
                tracing::error!("writing the maps: {e}");
                self.metrics.map_errors.inc();
            }
        }
        self.metrics.map_operations.inc_by(count);
        self.unsaved = true;
        self.save_if_due();
    }

    /// Rewrites every entry from the plan, then deletes the services and backends the plan
    /// does not have (left by a daemon whose plan was lost).
    fn reprogram_maps(&mut self) {
        self.apply(self.plan.replay());
        let planned: HashSet<ServiceKey> = self.plan.service_values().map(|(key, _)| key).collect();
        let planned_backends: HashSet<u32> = self.plan.backend_values().map(|(id, _)| id).collect();
        let mut leftovers = Vec::new();
        match self.dataplane.services() {
            Ok(services) => leftovers.extend(
                services
                    .into_iter()
                    .filter(|(key, _)| !planned.contains(key))
                    .map(|(key, _)| MapOp::RemoveService { key }),
            ),
            Err(e) => tracing::error!("reading the services map: {e}"),
        }
        match self.dataplane.backends() {
            Ok(backends) => leftovers.extend(
                backends
                    .into_iter()
                    .filter(|(id, _)| !planned_backends.contains(id))
                    .map(|(id, _)| MapOp::RemoveBackend { id }),
            ),
            Err(e) => tracing::error!("reading the backends map: {e}"),
        }
        if !leftovers.is_empty() {
            tracing::info!(entries = leftovers.len(), "removing entries no service uses");
        }
        self.apply(leftovers);
    }

    fn publish_sizes(&self) {
        self.metrics.services.set(self.plan.service_count() as i64);
        self.metrics.backends.set(self.plan.backend_count() as i64);
        self.metrics.tables.set(self.plan.table_count() as i64);
    }

    fn answer(&self, query: Query) {
        match query {
            Query::Metrics(reply) => {
                let _ = reply.send(self.metrics.render(&self.vip_samples()));
            }
            Query::Services(reply) => {
                let _ = reply.send(self.services_json());
            }
        }
    }

    fn vip_samples(&self) -> Vec<VipSample> {
        let stats = match self.dataplane.stats() {
            Ok(stats) => stats,
            Err(e) => {
                tracing::warn!("reading the counters: {e}");
                BTreeMap::new()
            }
        };
        self.plan
            .service_values()
            .map(|(key, value)| {
                let (address, port, proto) = key_parts(&key);
                let service = self.projection.service(&key);
                let counters = stats.get(&value.rev_nat).copied().unwrap_or_default();
                VipSample {
                    labels: VipLabels {
                        vip: service.map(names_of).unwrap_or_default(),
                        address: address.to_string(),
                        port: port.to_string(),
                        protocol: protocol_name(proto),
                    },
                    connections: counters.connections,
                    packets: counters.packets,
                    active_backends: service.map_or(0, |s| s.active_backends() as u64),
                    draining_backends: service.map_or(0, |s| s.draining_backends() as u64),
                }
            })
            .collect()
    }

    /// What this node serves: each service with its names, backends and counters.
    fn services_json(&self) -> Value {
        let stats = self.dataplane.stats().unwrap_or_default();
        let services: Vec<Value> = self
            .plan
            .service_values()
            .map(|(key, value)| {
                let (address, port, proto) = key_parts(&key);
                let service = self.projection.service(&key);
                let counters = stats.get(&value.rev_nat).copied().unwrap_or_default();
                let backends: Vec<Value> = service
                    .map(|s| {
                        s.backends
                            .iter()
                            .map(|b| {
                                json!({
                                    "address": b.address.to_string(),
                                    "port": b.port,
                                    "weight": b.weight,
                                    "state": if b.weight > 0 { "active" } else { "draining" },
                                    "task": b.task,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "address": address.to_string(),
                    "port": port,
                    "protocol": protocol_name(proto),
                    "names": service.map(|s| s.names.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                    "backends": backends,
                    "table": (value.count > 0).then_some(value.table),
                    "connections": counters.connections,
                    "packets": counters.packets,
                })
            })
            .collect();
        Value::Array(services)
    }

    fn save_if_due(&mut self) {
        if self.unsaved && self.last_save.is_none_or(|at| at.elapsed() >= SAVE_INTERVAL) {
            self.save();
        }
    }

    /// Writes the plan atomically (write, sync, rename).
    fn save(&mut self) {
        if !self.unsaved {
            return;
        }
        self.last_save = Some(Instant::now());
        let path = self.options.plan_file();
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&self.plan)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => self.unsaved = false,
            Err(e) => tracing::warn!("saving the plan to {}: {e}", path.display()),
        }
    }
}

fn names_of(service: &Service) -> String {
    service.names.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
