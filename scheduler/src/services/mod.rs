//! The built-in services framework (Marathon-style, registered as `marathon`): apps from JSON
//! kept running, replaced when they fail, rolled to new versions under their upgrade strategy.
//!
//! It runs inside the master but as a framework like any other: it subscribes, takes offers,
//! accepts and kills through the same scheduler calls. It owns the meaning of apps and
//! deployments; their durable record is the master's event log (APP_UPDATED,
//! DEPLOYMENT_UPDATED, …), from which it recovers after a restart. Every decision is made by the
//! pure core in `atoll_scheduler_core::services` (validation, matching, reconciliation,
//! backoff); this is the shell that feeds it and carries its decisions out.

pub mod api;
pub mod events;
pub mod json;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use atoll_proto::model::{
    AgentId, App, AppDefinition, AppId, Deployment, DeploymentAction, DeploymentOutcome, EventKind, FrameworkId,
    Source, Task, TaskId, TaskInfo, TaskState, TaskStatus, Time,
};
use atoll_scheduler_core::master::{OfferView, SchedulerCall, SchedulerEvent};
use atoll_scheduler_core::services;
use atoll_scheduler_core::services::backoff::Backoff;
use atoll_scheduler_core::services::constraints::Placement;
use atoll_scheduler_core::services::matching::{self, Mismatch};
use atoll_scheduler_core::services::reconcile::{self, Observed};
use atoll_scheduler_core::services::validate::ValidationErrors;
use tokio::sync::{mpsc, oneshot};

use crate::actor::{ActorError, MasterHandle};
use crate::hosted::{Identity, Subscription};

const META_FRAMEWORK_ID: &str = "hosted.services.framework_id";
/// Offers that fit nothing wanted now are refused this long (a new need revives at once).
const IDLE_REFUSE: Duration = Duration::from_secs(60);
/// Offers that did not fit something still wanted come back this soon.
const BUSY_REFUSE: Duration = Duration::from_secs(2);
/// How many recent offers the declined-offers summary of an app covers.
const SUMMARY_WINDOW: usize = 100;

/// Why a services request was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    #[error("App '{0}' does not exist")]
    UnknownApp(AppId),
    #[error("An app with id [{0}] already exists.")]
    AppExists(AppId),
    #[error(
        "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{0}'."
    )]
    Locked(String),
    #[error("DeploymentPlan {0} does not exist")]
    UnknownDeployment(String),
    #[error("the services framework is not available: {0}")]
    Unavailable(String),
}

/// What a change started.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRef {
    pub deployment_id: String,
    pub version: String,
}

/// The last failure of one of an app's tasks (Marathon's `lastTaskFailure`).
#[derive(Clone, Debug)]
pub struct TaskFailure {
    pub app_id: AppId,
    pub task_id: TaskId,
    pub host: String,
    pub state: TaskState,
    pub message: String,
    pub timestamp: Time,
    pub version: Time,
}

/// Why an app's launches are not progressing, over its recent offers.
#[derive(Clone, Debug, Default)]
pub struct OfferSummary {
    pub processed: u64,
    pub unused: u64,
    /// Reasons of recent refusals, newest last.
    pub recent: VecDeque<String>,
}

impl OfferSummary {
    fn record(&mut self, mismatch: Option<&Mismatch>) {
        self.processed += 1;
        if let Some(mismatch) = mismatch {
            self.unused += 1;
            self.recent.push_back(mismatch.to_string());
            while self.recent.len() > SUMMARY_WINDOW {
                self.recent.pop_front();
            }
        }
    }

    /// Refusal reasons with how often each occurred among the recent offers.
    pub fn reasons(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for reason in &self.recent {
            *counts.entry(reason).or_default() += 1;
        }
        let mut reasons: Vec<(String, usize)> = counts.into_iter().map(|(r, n)| (r.to_owned(), n)).collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        reasons
    }
}

/// One of the framework's tasks, as it knows it.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    pub info: TaskInfo,
    pub status: TaskStatus,
    pub app_id: AppId,
    pub version: Time,
    pub host: String,
    pub staged_at: Time,
    pub started_at: Option<Time>,
    /// The agent's IP, the task's address on host networking.
    pub agent_ip: Option<IpAddr>,
}

impl TaskRecord {
    /// The task's own addresses, or its agent's on host networking.
    pub fn ip_addresses(&self) -> Vec<IpAddr> {
        if self.status.ip_addresses.is_empty() {
            self.agent_ip.into_iter().collect()
        } else {
            self.status.ip_addresses.clone()
        }
    }

    fn observed(&self, agents: &BTreeMap<AgentId, Placement>) -> Observed {
        Observed {
            task_id: self.info.task_id.clone(),
            version: self.version,
            state: self.status.state,
            healthy: self.status.healthy,
            has_health_check: self.info.health_check.is_some(),
            placement: agents
                .get(&self.info.agent_id)
                .cloned()
                .unwrap_or_else(|| Placement { hostname: self.host.clone(), attributes: Default::default() }),
            launched_at: self.staged_at,
        }
    }
}

/// Everything the API shows about one app.
#[derive(Clone, Debug)]
pub struct AppView {
    pub app: App,
    pub tasks: Vec<TaskRecord>,
    pub deployment: Option<Deployment>,
    pub last_failure: Option<TaskFailure>,
    /// Launches wanted but not yet made, with why offers did not fit and the backoff.
    pub waiting: u32,
    pub offers: OfferSummary,
    pub launch_delay_until: Option<Time>,
}

// Sent once per request over a channel; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Request {
    Put { id: AppId, definition: AppDefinition, create_only: bool, force: bool, reply: Reply<(DeploymentRef, bool)> },
    Restart { id: AppId, force: bool, reply: Reply<DeploymentRef> },
    Remove { id: AppId, force: bool, reply: Reply<DeploymentRef> },
    Rollback { deployment_id: String, force: bool, reply: Reply<Option<DeploymentRef>> },
    Apps { reply: oneshot::Sender<Vec<AppView>> },
    App { id: AppId, reply: Reply<AppView> },
    Deployments { reply: oneshot::Sender<Vec<Deployment>> },
    Info { reply: oneshot::Sender<Info> },
}

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

/// `/v2/info` material.
#[derive(Clone, Debug)]
pub struct Info {
    pub name: String,
    pub framework_id: Option<FrameworkId>,
}

/// Talks to the services framework.
#[derive(Clone)]
pub struct ServicesHandle {
    requests: mpsc::Sender<Request>,
    master: MasterHandle,
    name: String,
}

impl ServicesHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, ServiceError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).await.map_err(|_| ServiceError::Unavailable("stopped".into()))?;
        rx.await.map_err(|_| ServiceError::Unavailable("stopped".into()))
    }

    pub fn master(&self) -> &MasterHandle {
        &self.master
    }

    /// The framework's name (`marathon` by default).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates (or with `create_only == false` replaces) an app; true when it was created.
    pub async fn put(
        &self,
        id: AppId,
        definition: AppDefinition,
        create_only: bool,
        force: bool,
    ) -> Result<(DeploymentRef, bool), ServiceError> {
        self.ask(|reply| Request::Put { id, definition, create_only, force, reply }).await?
    }

    pub async fn restart(&self, id: AppId, force: bool) -> Result<DeploymentRef, ServiceError> {
        self.ask(|reply| Request::Restart { id, force, reply }).await?
    }

    pub async fn remove(&self, id: AppId, force: bool) -> Result<DeploymentRef, ServiceError> {
        self.ask(|reply| Request::Remove { id, force, reply }).await?
    }

    /// Rolls a deployment back (a new deployment), or with `force` just cancels it (None).
    pub async fn rollback(&self, deployment_id: String, force: bool) -> Result<Option<DeploymentRef>, ServiceError> {
        self.ask(|reply| Request::Rollback { deployment_id, force, reply }).await?
    }

    pub async fn apps(&self) -> Result<Vec<AppView>, ServiceError> {
        self.ask(|reply| Request::Apps { reply }).await
    }

    pub async fn app(&self, id: AppId) -> Result<AppView, ServiceError> {
        self.ask(|reply| Request::App { id, reply }).await?
    }

    pub async fn deployments(&self) -> Result<Vec<Deployment>, ServiceError> {
        self.ask(|reply| Request::Deployments { reply }).await
    }

    pub async fn info(&self) -> Result<Info, ServiceError> {
        self.ask(|reply| Request::Info { reply }).await
    }
}

/// Starts the services framework on the master under `name`.
pub fn spawn(master: MasterHandle, name: String) -> ServicesHandle {
    let (requests, rx) = mpsc::channel(256);
    let handle = ServicesHandle { requests, master: master.clone(), name: name.clone() };
    tokio::spawn(async move {
        match Services::load(master, name).await {
            Ok(mut services) => services.serve(rx).await,
            Err(e) => tracing::error!("services framework could not start: {e}"),
        }
    });
    handle
}

struct Services {
    master: MasterHandle,
    identity: Identity,
    apps: BTreeMap<AppId, App>,
    /// At most one deployment per app; a forced change supersedes it.
    deployments: BTreeMap<AppId, Deployment>,
    tasks: BTreeMap<TaskId, TaskRecord>,
    /// Kills sent and not yet answered by a terminal state.
    killing: BTreeSet<TaskId>,
    agents: BTreeMap<AgentId, Placement>,
    agent_ips: BTreeMap<AgentId, IpAddr>,
    backoff: BTreeMap<AppId, Backoff>,
    failures: BTreeMap<AppId, TaskFailure>,
    offer_summaries: BTreeMap<AppId, OfferSummary>,
    /// Launches each app wants now (from the last plan).
    wanted: BTreeMap<AppId, u32>,
    /// Apps that wanted launches at the last revive/suppress decision.
    wanting: BTreeSet<AppId>,
    suppressed: bool,
}

impl Services {
    async fn load(master: MasterHandle, name: String) -> Result<Services, ActorError> {
        let identity = Identity::load(&master, name, META_FRAMEWORK_ID);
        let state = master.state().await?;
        let mut services = Services {
            master,
            identity,
            apps: state.apps.into_iter().map(|a| (a.id.clone(), a)).collect(),
            deployments: state.deployments.into_iter().map(|d| (d.app_id.clone(), d)).collect(),
            tasks: BTreeMap::new(),
            killing: BTreeSet::new(),
            agents: BTreeMap::new(),
            agent_ips: BTreeMap::new(),
            backoff: BTreeMap::new(),
            failures: BTreeMap::new(),
            offer_summaries: BTreeMap::new(),
            wanted: BTreeMap::new(),
            wanting: BTreeSet::new(),
            suppressed: false,
        };
        for agent in &state.agents {
            services.agent_ips.insert(agent.id.clone(), agent.address.ip());
            services.agents.insert(
                agent.id.clone(),
                Placement { hostname: agent.hostname.clone(), attributes: agent.attributes.clone() },
            );
        }
        if let Some(framework_id) = &services.identity.framework_id.clone() {
            for task in state.tasks.iter().filter(|t| &t.framework_id == framework_id && !t.state.is_terminal()) {
                if let Some(record) = services.record_of(task) {
                    if task.state == TaskState::Killing {
                        services.killing.insert(task.id.clone());
                    }
                    services.tasks.insert(task.id.clone(), record);
                }
            }
        }
        tracing::info!(
            apps = services.apps.len(),
            deployments = services.deployments.len(),
            tasks = services.tasks.len(),
            "services framework recovered"
        );
        Ok(services)
    }

    fn record_of(&self, task: &Task) -> Option<TaskRecord> {
        let (app_id, version) = matching::app_of(&task.labels)?;
        let host = self.agents.get(&task.agent_id).map(|p| p.hostname.clone()).unwrap_or_default();
        let started_at = matches!(task.state, TaskState::Running | TaskState::Killing).then_some(task.status.timestamp);
        Some(TaskRecord {
            info: task.info(),
            status: task.status.clone(),
            app_id,
            version,
            host,
            staged_at: task.status.timestamp,
            started_at,
            agent_ip: self.agent_ips.get(&task.agent_id).copied(),
        })
    }

    async fn serve(&mut self, mut requests: mpsc::Receiver<Request>) {
        let mut retry = Duration::from_millis(100);
        loop {
            let Some(mut subscription) = self.subscribe().await else {
                // Requests are still answered while the subscription is being re-made.
                let sleep = tokio::time::sleep(retry);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        request = requests.recv() => match request {
                            Some(request) => self.on_request(None, request).await,
                            None => return,
                        },
                    }
                }
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            };
            retry = Duration::from_millis(100);
            self.suppressed = false;
            self.wanting.clear();
            self.call(&subscription, SchedulerCall::Reconcile { tasks: Vec::new() }).await;
            self.replan(&subscription).await;
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    event = subscription.events.recv() => match event {
                        Some(event) => self.on_event(&subscription, event).await,
                        None => break,
                    },
                    request = requests.recv() => match request {
                        Some(request) => self.on_request(Some(&subscription), request).await,
                        None => return,
                    },
                    _ = ticker.tick() => self.replan(&subscription).await,
                }
            }
            self.master.framework_closed(subscription.conn);
        }
    }

    async fn subscribe(&mut self) -> Option<Subscription> {
        self.identity.subscribe(&self.master).await
    }

    async fn call(&self, sub: &Subscription, call: SchedulerCall) {
        if let Err(e) = self.master.framework_call(sub.conn, sub.framework_id.clone(), call).await {
            tracing::warn!("services framework call failed: {e}");
        }
    }

    async fn record(&self, kind: EventKind) -> Result<(), ServiceError> {
        self.master.record(kind).await.map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    // ----- requests ----------------------------------------------------------------------

    async fn on_request(&mut self, sub: Option<&Subscription>, request: Request) {
        let now = Time::now();
        match request {
            Request::Put { id, definition, create_only, force, reply } => {
                let result = self.put(id, definition, create_only, force, now).await;
                let _ = reply.send(result);
            }
            Request::Restart { id, force, reply } => {
                let result = match self.apps.get(&id).cloned() {
                    None => Err(ServiceError::UnknownApp(id)),
                    Some(mut app) => match self.check_lock(&id, force) {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let previous = Some(app.definition.clone());
                            app.version = now;
                            app.config_version = now;
                            self.change(app, DeploymentAction::RestartApplication, previous, force, now).await
                        }
                    },
                };
                let _ = reply.send(result);
            }
            Request::Remove { id, force, reply } => {
                let result = self.remove(id, force, now).await;
                let _ = reply.send(result);
            }
            Request::Rollback { deployment_id, force, reply } => {
                let result = self.rollback(&deployment_id, force, now).await;
                let _ = reply.send(result);
            }
            Request::Apps { reply } => {
                let views = self.apps.keys().filter_map(|id| self.view(id, now)).collect();
                let _ = reply.send(views);
            }
            Request::App { id, reply } => {
                let _ = reply.send(self.view(&id, now).ok_or(ServiceError::UnknownApp(id)));
            }
            Request::Deployments { reply } => {
                let _ = reply.send(self.deployments.values().cloned().collect());
            }
            Request::Info { reply } => {
                let info = Info { name: self.identity.name.clone(), framework_id: self.identity.framework_id.clone() };
                let _ = reply.send(info);
            }
        }
        if let Some(sub) = sub {
            self.replan(sub).await;
        }
    }

    fn check_lock(&self, id: &AppId, force: bool) -> Result<(), ServiceError> {
        match self.deployments.get(id) {
            Some(deployment) if !force => Err(ServiceError::Locked(deployment.id.clone())),
            _ => Ok(()),
        }
    }

    async fn put(
        &mut self,
        id: AppId,
        mut definition: AppDefinition,
        create_only: bool,
        force: bool,
        now: Time,
    ) -> Result<(DeploymentRef, bool), ServiceError> {
        definition.id = id.to_string();
        match self.apps.get(&id).cloned() {
            None => {
                // A removal still in progress under this id is superseded by the new app.
                self.check_lock(&id, true)?;
                let app = App { id: id.clone(), definition, version: now, config_version: now };
                let deployment = self.change(app, DeploymentAction::StartApplication, None, true, now).await?;
                Ok((deployment, true))
            }
            Some(_) if create_only => Err(ServiceError::AppExists(id)),
            Some(current) => {
                self.check_lock(&id, force)?;
                let previous = Some(current.definition.clone());
                let (action, config_version) = if !services::config_changed(&current.definition, &definition) {
                    (DeploymentAction::ScaleApplication, current.config_version)
                } else {
                    (DeploymentAction::RestartApplication, now)
                };
                let app = App { id, definition, version: now, config_version };
                Ok((self.change(app, action, previous, force, now).await?, false))
            }
        }
    }

    /// Records a new app version and the deployment that brings it about, superseding (as
    /// cancelled) a deployment in progress when forced.
    async fn change(
        &mut self,
        app: App,
        action: DeploymentAction,
        previous: Option<AppDefinition>,
        force: bool,
        now: Time,
    ) -> Result<DeploymentRef, ServiceError> {
        self.check_lock(&app.id, force)?;
        if let Some(old) = self.deployments.remove(&app.id) {
            self.record(EventKind::DeploymentFinished { deployment: old, outcome: DeploymentOutcome::Canceled })
                .await?;
        }
        let deployment = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: app.id.clone(),
            action,
            version: app.version,
            previous,
            started_at: now,
        };
        self.record(EventKind::AppUpdated { app: app.clone() }).await?;
        self.record(EventKind::DeploymentUpdated { deployment: deployment.clone() }).await?;
        self.backoff.remove(&app.id);
        self.offer_summaries.remove(&app.id);
        let reference = DeploymentRef { deployment_id: deployment.id.clone(), version: json::version(app.version) };
        self.apps.insert(app.id.clone(), app);
        self.deployments.insert(deployment.app_id.clone(), deployment);
        Ok(reference)
    }

    async fn remove(&mut self, id: AppId, force: bool, now: Time) -> Result<DeploymentRef, ServiceError> {
        let app = self.apps.get(&id).cloned().ok_or_else(|| ServiceError::UnknownApp(id.clone()))?;
        self.check_lock(&id, force)?;
        if let Some(old) = self.deployments.remove(&id) {
            self.record(EventKind::DeploymentFinished { deployment: old, outcome: DeploymentOutcome::Canceled })
                .await?;
        }
        let deployment = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            app_id: id.clone(),
            action: DeploymentAction::StopApplication,
            version: now,
            previous: Some(app.definition.clone()),
            started_at: now,
        };
        self.record(EventKind::AppRemoved { app_id: id.clone() }).await?;
        self.record(EventKind::DeploymentUpdated { deployment: deployment.clone() }).await?;
        self.apps.remove(&id);
        self.backoff.remove(&id);
        self.wanted.remove(&id);
        let reference = DeploymentRef { deployment_id: deployment.id.clone(), version: json::version(now) };
        self.deployments.insert(id, deployment);
        Ok(reference)
    }

    async fn rollback(
        &mut self,
        deployment_id: &str,
        force: bool,
        now: Time,
    ) -> Result<Option<DeploymentRef>, ServiceError> {
        let deployment = self
            .deployments
            .values()
            .find(|d| d.id == deployment_id)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownDeployment(deployment_id.to_owned()))?;
        let app_id = deployment.app_id.clone();
        if force {
            // Cancel only: the app stays as it is now.
            self.deployments.remove(&app_id);
            self.record(EventKind::DeploymentFinished { deployment, outcome: DeploymentOutcome::Canceled }).await?;
            return Ok(None);
        }
        let reference = match deployment.previous.clone() {
            // Undoing a creation removes the app.
            None => self.remove(app_id, true, now).await?,
            Some(previous) => {
                let config_version = match (deployment.action, self.apps.get(&app_id)) {
                    (DeploymentAction::ScaleApplication, Some(app)) => app.config_version,
                    _ => now,
                };
                let app = App { id: app_id.clone(), definition: previous, version: now, config_version };
                let current = self.apps.get(&app_id).map(|a| a.definition.clone());
                self.change(app, DeploymentAction::RestartApplication, current, true, now).await?
            }
        };
        Ok(Some(reference))
    }

    fn view(&self, id: &AppId, now: Time) -> Option<AppView> {
        let app = self.apps.get(id)?.clone();
        let tasks = self.tasks.values().filter(|t| &t.app_id == id).cloned().collect();
        let delay = self.backoff.get(id).map(Backoff::launch_allowed_at).filter(|at| *at > now);
        Some(AppView {
            app,
            tasks,
            deployment: self.deployments.get(id).cloned(),
            last_failure: self.failures.get(id).cloned(),
            waiting: self.wanted.get(id).copied().unwrap_or(0),
            offers: self.offer_summaries.get(id).cloned().unwrap_or_default(),
            launch_delay_until: delay,
        })
    }

    // ----- events from the master --------------------------------------------------------

    async fn on_event(&mut self, sub: &Subscription, event: SchedulerEvent) {
        match event {
            SchedulerEvent::Offers(offers) => {
                self.on_offers(sub, offers).await;
                return;
            }
            SchedulerEvent::Update(status) => self.on_update(sub, status).await,
            SchedulerEvent::Error(message) => tracing::warn!("services framework: {message}"),
            SchedulerEvent::Subscribed { .. } | SchedulerEvent::Rescind(_) | SchedulerEvent::Failure { .. } => {}
        }
        self.replan(sub).await;
    }

    async fn on_update(&mut self, sub: &Subscription, status: TaskStatus) {
        if let (Some(uuid), Some(agent_id)) = (status.uuid, status.agent_id.clone()) {
            let ack = SchedulerCall::Acknowledge { agent_id, task_id: status.task_id.clone(), uuid };
            self.call(sub, ack).await;
        }
        let now = Time::now();
        let Some(record) = self.tasks.get_mut(&status.task_id) else {
            // A task this framework does not track (e.g. launched before a crash and already
            // gone from the master's view): if it lives, it has no app and must go.
            if !status.state.is_terminal() && status.source != Source::Master {
                self.call(
                    sub,
                    SchedulerCall::Kill { task_id: status.task_id, agent_id: status.agent_id, grace_secs: None },
                )
                .await;
            }
            return;
        };
        let state = status.state;
        if state == TaskState::Running && record.started_at.is_none() {
            record.started_at = Some(now);
        }
        let mut merged = status.clone();
        if merged.healthy.is_none() {
            merged.healthy = record.status.healthy;
        }
        record.status = merged;
        let app_id = record.app_id.clone();
        let healthy_now =
            state == TaskState::Running && (record.status.healthy == Some(true) || record.info.health_check.is_none());
        if healthy_now && let Some(backoff) = self.backoff.get_mut(&app_id) {
            backoff.reset();
        }
        if state.is_terminal() {
            let record = self.tasks.remove(&status.task_id).expect("present");
            let expected = self.killing.remove(&status.task_id);
            let failed = !expected && state != TaskState::Finished;
            if failed || state == TaskState::Failed || state == TaskState::Error {
                if let Some(app) = self.apps.get(&app_id) {
                    self.backoff.entry(app_id.clone()).or_default().failed(now, &app.definition);
                }
                self.failures.insert(
                    app_id.clone(),
                    TaskFailure {
                        app_id,
                        task_id: status.task_id.clone(),
                        host: record.host.clone(),
                        state,
                        message: status.message.clone().unwrap_or_default(),
                        timestamp: status.timestamp,
                        version: record.version,
                    },
                );
            }
        }
    }

    async fn on_offers(&mut self, sub: &Subscription, offers: Vec<OfferView>) {
        let now = Time::now();
        for offer in offers {
            self.agent_ips.insert(offer.agent_id.clone(), offer.agent_address.ip());
            self.agents.insert(
                offer.agent_id.clone(),
                Placement { hostname: offer.hostname.clone(), attributes: offer.attributes.clone() },
            );
            let mut left = offer.resources.clone();
            let mut launches = Vec::new();
            let mut still_wanted = false;
            let wanting: Vec<AppId> = self
                .wanted
                .iter()
                .filter(|(id, n)| **n > 0 && self.backoff.get(*id).is_none_or(|b| b.launch_allowed_at() <= now))
                .map(|(id, _)| id.clone())
                .collect();
            for app_id in wanting {
                let Some(app) = self.apps.get(&app_id).cloned() else { continue };
                let mut placed: Vec<Placement> = self
                    .tasks
                    .values()
                    .filter(|t| t.app_id == app_id && !t.status.state.is_terminal())
                    .map(|t| t.observed(&self.agents).placement)
                    .collect();
                let mut mismatch = None;
                while self.wanted.get(&app_id).copied().unwrap_or(0) > 0 {
                    let task_id = matching::task_id_for(&app, &uuid::Uuid::new_v4().simple().to_string());
                    match matching::match_offer(&app, &offer, &left, &placed, task_id) {
                        Ok(task) => {
                            left.subtract(&task.resources);
                            placed.push(Placement {
                                hostname: offer.hostname.clone(),
                                attributes: offer.attributes.clone(),
                            });
                            if let Some(n) = self.wanted.get_mut(&app_id) {
                                *n -= 1;
                            }
                            let mut status =
                                TaskStatus::new(task.task_id.clone(), TaskState::Staging, Source::Master, now);
                            status.agent_id = Some(offer.agent_id.clone());
                            self.tasks.insert(
                                task.task_id.clone(),
                                TaskRecord {
                                    info: task.clone(),
                                    status,
                                    app_id: app_id.clone(),
                                    version: app.config_version,
                                    host: offer.hostname.clone(),
                                    staged_at: now,
                                    started_at: None,
                                    agent_ip: Some(offer.agent_address.ip()),
                                },
                            );
                            launches.push(task);
                        }
                        Err(m) => {
                            mismatch = Some(m);
                            still_wanted = true;
                            break;
                        }
                    }
                }
                self.offer_summaries.entry(app_id).or_default().record(mismatch.as_ref());
            }
            let call = if launches.is_empty() {
                let refuse = if still_wanted { BUSY_REFUSE } else { IDLE_REFUSE };
                SchedulerCall::Decline { offer_ids: vec![offer.id.clone()], refuse: Some(refuse) }
            } else {
                SchedulerCall::Accept {
                    offer_ids: vec![offer.id.clone()],
                    launches,
                    groups: Vec::new(),
                    refuse: Some(BUSY_REFUSE),
                }
            };
            self.call(sub, call).await;
        }
        self.update_suppression(sub).await;
    }

    // ----- decisions ---------------------------------------------------------------------

    /// Runs the reconciler for every app (and every app being removed): kills what must go,
    /// notes what must launch, finishes deployments that are done.
    async fn replan(&mut self, sub: &Subscription) {
        let mut subjects: BTreeSet<AppId> = self.apps.keys().cloned().collect();
        subjects.extend(self.deployments.keys().cloned());
        for app_id in subjects {
            let observed: Vec<Observed> = self
                .tasks
                .values()
                .filter(|t| t.app_id == app_id && !t.status.state.is_terminal())
                .map(|t| {
                    let mut observed = t.observed(&self.agents);
                    if self.killing.contains(&t.info.task_id) {
                        observed.state = TaskState::Killing;
                    }
                    observed
                })
                .collect();
            let app = self.apps.get(&app_id);
            let plan = reconcile::plan(app, &observed);
            for task_id in plan.kill {
                if self.killing.insert(task_id.clone()) {
                    let agent_id = self.tasks.get(&task_id).map(|t| t.info.agent_id.clone());
                    self.call(sub, SchedulerCall::Kill { task_id, agent_id, grace_secs: None }).await;
                }
            }
            if app.is_some() {
                self.wanted.insert(app_id.clone(), plan.launch);
            } else {
                self.wanted.remove(&app_id);
            }
            if plan.done
                && let Some(deployment) = self.deployments.remove(&app_id)
            {
                tracing::info!(app = %app_id, deployment = %deployment.id, "deployment succeeded");
                if let Err(e) = self
                    .record(EventKind::DeploymentFinished { deployment, outcome: DeploymentOutcome::Succeeded })
                    .await
                {
                    tracing::warn!("recording a finished deployment: {e}");
                }
            }
        }
        self.update_suppression(sub).await;
    }

    /// Asks for offers exactly while some app wants a launch it is allowed to make; a newly
    /// wanting app revives even when not suppressed, since declined offers are filtered.
    async fn update_suppression(&mut self, sub: &Subscription) {
        let now = Time::now();
        let wanting: BTreeSet<AppId> = self
            .wanted
            .iter()
            .filter(|(id, n)| **n > 0 && self.backoff.get(*id).is_none_or(|b| b.launch_allowed_at() <= now))
            .map(|(id, _)| id.clone())
            .collect();
        let newly = wanting.iter().any(|id| !self.wanting.contains(id));
        if !wanting.is_empty() && (self.suppressed || newly) {
            self.suppressed = false;
            self.call(sub, SchedulerCall::Revive).await;
        } else if wanting.is_empty() && !self.suppressed {
            self.suppressed = true;
            self.call(sub, SchedulerCall::Suppress).await;
        }
        self.wanting = wanting;
    }
}
