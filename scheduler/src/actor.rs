//! The one owner of the master's state: a thread that drives [`Master`] with commands from
//! the API handlers, commits each batch's events to the registry, and only then delivers
//! messages, replies and events — so nothing anyone heard of can be lost by a crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use atoll_proto::model::{
    Agent, AgentId, AgentState, ClusterState, DrainConfig, Event, EventKind, FrameworkId, FrameworkInfo, Task, TaskId,
    TaskStatus, Time,
};
use atoll_scheduler_core::master::{
    AgentCommand, AgentRegistration, ConnId, Master, MasterError, Output, PoolView, SchedulerCall, SchedulerEvent,
    TaskLease,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::{Metrics, label};
use crate::registry::{Batch, Registry};

/// How often timers are checked when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// Inputs folded into one commit at most.
const MAX_BATCH: usize = 512;
/// Messages buffered per connection; a consumer further behind is disconnected.
pub const CONNECTION_BUFFER: usize = 10_000;
/// Live events buffered for subscribers; one further behind catches up from the registry.
const EVENT_BUFFER: usize = 16_384;

/// What an operator does to an agent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Maintenance {
    /// Stop offering it and kill its tasks (within the config's grace; marked gone once
    /// drained if it says so).
    Drain(DrainConfig),
    /// Stop offering it; its tasks keep running.
    Deactivate,
    /// Offer it again (ends a drain or a deactivation).
    Reactivate,
    /// It is gone for good: its tasks are gone, it may not come back.
    MarkGone,
}

/// Why the master could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Master(#[from] MasterError),
    #[error("the master is shutting down")]
    Stopped,
}

type Reply = Box<dyn FnOnce() + Send>;

/// Queues an answer for after the batch is committed.
fn answer<T: Send + 'static>(replies: &mut Vec<Reply>, reply: oneshot::Sender<T>, value: T) {
    replies.push(Box::new(move || {
        // The asker may have given up; nothing to do then.
        let _ = reply.send(value);
    }));
}

// Sent once per request over a channel; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    RegisterAgent {
        conn: ConnId,
        registration: AgentRegistration,
        tx: mpsc::Sender<AgentCommand>,
        reply: oneshot::Sender<Result<AgentId, MasterError>>,
    },
    AgentHeartbeat(ConnId),
    StatusUpdate {
        conn: ConnId,
        framework_id: FrameworkId,
        status: TaskStatus,
    },
    AgentClosed(ConnId),
    Subscribe {
        conn: ConnId,
        framework_id: Option<FrameworkId>,
        info: FrameworkInfo,
        hosted: bool,
        suppressed: bool,
        tx: mpsc::Sender<SchedulerEvent>,
        reply: oneshot::Sender<Result<FrameworkId, MasterError>>,
    },
    FrameworkCall {
        conn: ConnId,
        framework_id: FrameworkId,
        call: SchedulerCall,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    FrameworkClosed(ConnId),
    State(oneshot::Sender<ClusterState>),
    Maintain {
        agent_id: AgentId,
        action: Maintenance,
        reply: oneshot::Sender<Result<Agent, MasterError>>,
    },
    UpdateWeights {
        weights: Vec<(String, f64)>,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    Weights(oneshot::Sender<std::collections::BTreeMap<String, f64>>),
    KillTask {
        task_id: TaskId,
        reply: oneshot::Sender<Result<Task, MasterError>>,
    },
    FindTask {
        task_id: TaskId,
        reply: oneshot::Sender<Result<Task, MasterError>>,
    },
    /// A live-event receiver and, taken at the same instant, the state or the index.
    Watch {
        snapshot: bool,
        reply: oneshot::Sender<Watch>,
    },
    PutMeta {
        key: String,
        value: Vec<u8>,
        reply: oneshot::Sender<()>,
    },
    Record {
        kind: EventKind,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    Ipam {
        change: IpamChange,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    Pools(oneshot::Sender<Vec<PoolView>>),
    Pool {
        name: String,
        reply: oneshot::Sender<Result<PoolView, MasterError>>,
    },
    Leases(oneshot::Sender<Vec<TaskLease>>),
}

/// A change network admins make to the IP pools.
#[derive(Debug, Clone)]
pub enum IpamChange {
    AddPool(atoll_ipam::PoolSpec),
    UpdatePool(atoll_ipam::PoolSpec),
    RemovePool(String),
    Reserve { pool: String, ip: std::net::IpAddr },
}

/// A live-event receiver positioned right after `index` (and the state at that index when
/// a snapshot was asked for).
pub struct Watch {
    pub receiver: broadcast::Receiver<Arc<Event>>,
    pub index: u64,
    pub state: Option<ClusterState>,
}

/// A cheap, cloneable way to talk to the master thread.
#[derive(Clone)]
pub struct MasterHandle {
    commands: std_mpsc::Sender<Command>,
    registry: Arc<Registry>,
    next_conn: Arc<AtomicU64>,
    last_index: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    heartbeat_interval: Duration,
}

impl MasterHandle {
    /// The index of the last event delivered to subscribers.
    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Acquire)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Interval of HEARTBEAT events on framework and event streams.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// A number for a new connection.
    pub fn new_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    fn send(&self, command: Command) {
        // The thread only stops when every handle is gone; a failed send means shutdown.
        let _ = self.commands.send(command);
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ActorError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        rx.await.map_err(|_| ActorError::Stopped)
    }

    pub async fn register_agent(
        &self,
        conn: ConnId,
        registration: AgentRegistration,
        tx: mpsc::Sender<AgentCommand>,
    ) -> Result<AgentId, ActorError> {
        Ok(self.ask(|reply| Command::RegisterAgent { conn, registration, tx, reply }).await??)
    }

    pub fn agent_heartbeat(&self, conn: ConnId) {
        self.send(Command::AgentHeartbeat(conn));
    }

    pub fn status_update(&self, conn: ConnId, framework_id: FrameworkId, status: TaskStatus) {
        self.send(Command::StatusUpdate { conn, framework_id, status });
    }

    pub fn agent_closed(&self, conn: ConnId) {
        self.send(Command::AgentClosed(conn));
    }

    /// Subscribes a framework; `suppressed` (its role among SUBSCRIBE's `suppressed_roles`)
    /// holds back offers from the start, before any could be made.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        framework_id: Option<FrameworkId>,
        info: FrameworkInfo,
        hosted: bool,
        suppressed: bool,
        tx: mpsc::Sender<SchedulerEvent>,
    ) -> Result<FrameworkId, ActorError> {
        Ok(self.ask(|reply| Command::Subscribe { conn, framework_id, info, hosted, suppressed, tx, reply }).await??)
    }

    pub async fn framework_call(
        &self,
        conn: ConnId,
        framework_id: FrameworkId,
        call: SchedulerCall,
    ) -> Result<(), ActorError> {
        Ok(self.ask(|reply| Command::FrameworkCall { conn, framework_id, call, reply }).await??)
    }

    pub fn framework_closed(&self, conn: ConnId) {
        self.send(Command::FrameworkClosed(conn));
    }

    pub async fn state(&self) -> Result<ClusterState, ActorError> {
        self.ask(Command::State).await
    }

    /// Drains, deactivates, reactivates or marks gone an agent: the agent as it is after.
    pub async fn maintain(&self, agent_id: AgentId, action: Maintenance) -> Result<Agent, ActorError> {
        Ok(self.ask(|reply| Command::Maintain { agent_id, action, reply }).await??)
    }

    /// Sets role weights at run time, all or none; they are saved before this returns.
    pub async fn update_weights(&self, weights: Vec<(String, f64)>) -> Result<(), ActorError> {
        Ok(self.ask(|reply| Command::UpdateWeights { weights, reply }).await??)
    }

    /// Every role whose weight was set, with that weight.
    pub async fn weights(&self) -> Result<std::collections::BTreeMap<String, f64>, ActorError> {
        self.ask(Command::Weights).await
    }

    pub async fn kill_task(&self, task_id: TaskId) -> Result<Task, ActorError> {
        Ok(self.ask(|reply| Command::KillTask { task_id, reply }).await??)
    }

    pub async fn find_task(&self, task_id: TaskId) -> Result<Task, ActorError> {
        Ok(self.ask(|reply| Command::FindTask { task_id, reply }).await??)
    }

    pub async fn watch(&self, snapshot: bool) -> Result<Watch, ActorError> {
        self.ask(|reply| Command::Watch { snapshot, reply }).await
    }

    /// Records an app or deployment change (from the services framework) in the event log;
    /// answered once it is durable.
    pub async fn record(&self, kind: EventKind) -> Result<(), ActorError> {
        Ok(self.ask(|reply| Command::Record { kind, reply }).await??)
    }

    /// Changes the IP pools; answered once the change is durable.
    pub async fn ipam(&self, change: IpamChange) -> Result<(), ActorError> {
        Ok(self.ask(|reply| Command::Ipam { change, reply }).await??)
    }

    pub async fn pools(&self) -> Result<Vec<PoolView>, ActorError> {
        self.ask(Command::Pools).await
    }

    pub async fn pool(&self, name: String) -> Result<PoolView, ActorError> {
        Ok(self.ask(|reply| Command::Pool { name, reply }).await??)
    }

    pub async fn leases(&self) -> Result<Vec<TaskLease>, ActorError> {
        self.ask(Command::Leases).await
    }

    /// Stores a small value for a built-in framework, in commit order with everything else.
    pub async fn put_meta(&self, key: String, value: Vec<u8>) -> Result<(), ActorError> {
        self.ask(|reply| Command::PutMeta { key, value, reply }).await
    }
}

/// Starts the master thread on a recovered core. It stops when every handle is dropped.
pub fn spawn(master: Master, registry: Arc<Registry>, metrics: Arc<Metrics>) -> MasterHandle {
    let (commands, rx) = std_mpsc::channel();
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let handle = MasterHandle {
        commands,
        registry: registry.clone(),
        next_conn: Arc::new(AtomicU64::new(1)),
        last_index: Arc::new(AtomicU64::new(master.last_index())),
        metrics: metrics.clone(),
        heartbeat_interval: master.config().framework_heartbeat_interval,
    };
    let actor = Actor {
        last_index: handle.last_index.clone(),
        master,
        registry,
        metrics,
        events,
        agents: HashMap::new(),
        frameworks: HashMap::new(),
        last_metrics: Instant::now() - Duration::from_secs(10),
    };
    std::thread::Builder::new()
        .name("atoll-master".into())
        .spawn(move || actor.run(rx))
        .expect("spawning the master thread");
    handle
}

struct Actor {
    last_index: Arc<AtomicU64>,
    master: Master,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<Arc<Event>>,
    agents: HashMap<ConnId, mpsc::Sender<AgentCommand>>,
    frameworks: HashMap<ConnId, mpsc::Sender<SchedulerEvent>>,
    last_metrics: Instant,
}

impl Actor {
    fn run(mut self, rx: std_mpsc::Receiver<Command>) {
        loop {
            let mut batch = Vec::new();
            match rx.recv_timeout(TICK) {
                Ok(command) => batch.push(command),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let now = Time::now();
            let mut replies: Vec<Reply> = Vec::new();
            let mut meta = Vec::new();
            for command in batch {
                self.handle(command, now, &mut replies, &mut meta);
            }
            self.master.tick(now);
            let outputs = self.master.take_outputs();
            self.commit(&outputs, meta);
            self.deliver(outputs, now);
            for reply in replies {
                reply();
            }
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
            self.update_metrics();
        }
        tracing::info!("master thread stopped");
    }

    fn handle(&mut self, command: Command, now: Time, replies: &mut Vec<Reply>, meta: &mut Vec<(String, Vec<u8>)>) {
        match command {
            Command::RegisterAgent { conn, registration, tx, reply } => {
                self.agents.insert(conn, tx);
                let result = self.master.register_agent(conn, registration, now);
                if result.is_err() {
                    // Kept until delivery so a Shutdown can still reach it, then dropped.
                    self.master_outputs_then_forget_agent(conn);
                }
                answer(replies, reply, result);
            }
            Command::AgentHeartbeat(conn) => {
                let _ = self.master.agent_heartbeat(conn, now);
            }
            Command::StatusUpdate { conn, framework_id, status } => {
                if let Err(e) = self.master.status_update(conn, framework_id, status, now) {
                    tracing::debug!("status update on connection {conn:?} ignored: {e}");
                }
            }
            Command::AgentClosed(conn) => {
                self.agents.remove(&conn);
                self.master.agent_disconnected(conn, now);
            }
            Command::Subscribe { conn, framework_id, info, hosted, suppressed, tx, reply } => {
                self.frameworks.insert(conn, tx);
                let result = self.master.subscribe(conn, framework_id, info, hosted, now);
                match &result {
                    Err(_) => {
                        self.frameworks.remove(&conn);
                    }
                    Ok(id) if suppressed => {
                        // In the same batch as the subscription: no allocation runs between.
                        let _ = self.master.framework_call(conn, id, SchedulerCall::Suppress, now);
                    }
                    Ok(_) => {}
                }
                answer(replies, reply, result);
            }
            Command::FrameworkCall { conn, framework_id, call, reply } => {
                let kind = call.kind();
                let result = self.master.framework_call(conn, &framework_id, call, now);
                if result.is_ok() {
                    self.metrics.scheduler_calls.get_or_create(&label("type", kind)).inc();
                }
                answer(replies, reply, result);
            }
            Command::FrameworkClosed(conn) => {
                self.frameworks.remove(&conn);
                self.master.framework_disconnected(conn, now);
            }
            Command::State(reply) => {
                // Taken now, sent after the batch commits: what it shows is durable.
                answer(replies, reply, self.master.state());
            }
            Command::Maintain { agent_id, action, reply } => {
                let result = match action {
                    Maintenance::Drain(config) => self.master.drain_agent(&agent_id, config, now),
                    Maintenance::Deactivate => self.master.deactivate_agent(&agent_id, now),
                    Maintenance::Reactivate => self.master.reactivate_agent(&agent_id, now),
                    Maintenance::MarkGone => self.master.mark_agent_gone(&agent_id, now),
                };
                answer(replies, reply, result);
            }
            Command::UpdateWeights { weights, reply } => {
                let result = self.master.update_weights(&weights);
                answer(replies, reply, result);
            }
            Command::Weights(reply) => answer(replies, reply, self.master.role_weights()),
            Command::KillTask { task_id, reply } => {
                let result = self.master.operator_kill(&task_id, now);
                answer(replies, reply, result);
            }
            Command::FindTask { task_id, reply } => {
                let result = self.master.find_task(&task_id).cloned();
                answer(replies, reply, result);
            }
            Command::Watch { snapshot, reply } => {
                // Events of this batch so far are already in the outbox; they are broadcast
                // after this receiver exists, and the index below counts them, so the
                // subscriber skips exactly those already covered by the index.
                self.flush_pending_events_first();
                let receiver = self.events.subscribe();
                let index = self.master.last_index();
                let state = snapshot.then(|| self.master.state());
                let _ = reply.send(Watch { receiver, index, state });
            }
            Command::Ipam { change, reply } => {
                let result = match change {
                    IpamChange::AddPool(spec) => self.master.add_pool(spec, now),
                    IpamChange::UpdatePool(spec) => self.master.update_pool(spec, now),
                    IpamChange::RemovePool(name) => self.master.remove_pool(&name, now).map(|_| ()),
                    IpamChange::Reserve { pool, ip } => self.master.reserve_address(&pool, ip, now),
                };
                answer(replies, reply, result);
            }
            Command::Pools(reply) => {
                let names: Vec<String> = self.master.pools().pools().map(|p| p.name.clone()).collect();
                let views = names.iter().filter_map(|n| self.master.pool_view(n).ok()).collect();
                answer(replies, reply, views);
            }
            Command::Pool { name, reply } => {
                let view = self.master.pool_view(&name);
                answer(replies, reply, view);
            }
            Command::Leases(reply) => answer(replies, reply, self.master.task_leases()),
            Command::Record { kind, reply } => {
                let result = self.master.record(kind, now);
                answer(replies, reply, result);
            }
            Command::PutMeta { key, value, reply } => {
                meta.push((key, value));
                replies.push(Box::new(move || {
                    let _ = reply.send(());
                }));
            }
        }
    }

    /// A Watch must see events produced earlier in the same batch as part of its position;
    /// committing and broadcasting them before taking the receiver keeps that exact.
    fn flush_pending_events_first(&mut self) {
        let outputs = self.master.take_outputs();
        if outputs.is_empty() {
            return;
        }
        self.commit(&outputs, Vec::new());
        self.deliver(outputs, Time::now());
    }

    fn master_outputs_then_forget_agent(&mut self, conn: ConnId) {
        let outputs = self.master.take_outputs();
        self.commit(&outputs, Vec::new());
        self.deliver(outputs, Time::now());
        self.agents.remove(&conn);
    }

    fn commit(&mut self, outputs: &[Output], meta: Vec<(String, Vec<u8>)>) {
        let mut batch = Batch { meta, ..Batch::default() };
        for output in outputs {
            match output {
                Output::Event(event) => batch.events.push(event),
                Output::ForgetTask { framework_id, task_id } => batch.forget_tasks.push((framework_id, task_id)),
                // The last state of the pools in the batch is the one to keep.
                Output::SavePools(pools) => batch.pools = Some(pools),
                Output::SaveWeights(weights) => batch.weights = Some(weights),
                _ => {}
            }
        }
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        if let Err(e) = self.registry.commit(&batch) {
            // Going on would tell frameworks and agents about state that is not durable.
            tracing::error!("registry write failed, stopping the master: {e}");
            std::process::exit(70);
        }
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
    }

    fn deliver(&mut self, outputs: Vec<Output>, now: Time) {
        let mut overflowed_agents = Vec::new();
        let mut overflowed_frameworks = Vec::new();
        for output in outputs {
            match output {
                Output::Event(event) => {
                    self.metrics.events.inc();
                    self.metrics.event_index.set(event.index as i64);
                    self.last_index.store(event.index, Ordering::Release);
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(Arc::new(event));
                }
                Output::ForgetTask { .. } => {}
                Output::ToFramework { conn, event } => {
                    if let Some(tx) = self.frameworks.get(&conn)
                        && tx.try_send(event).is_err()
                    {
                        overflowed_frameworks.push(conn);
                    }
                }
                Output::CloseFramework { conn } => {
                    self.frameworks.remove(&conn);
                }
                Output::ToAgent { conn, command } => {
                    if let Some(tx) = self.agents.get(&conn)
                        && tx.try_send(command).is_err()
                    {
                        overflowed_agents.push(conn);
                    }
                }
                Output::CloseAgent { conn } => {
                    self.agents.remove(&conn);
                }
                Output::SavePools(_) | Output::SaveWeights(_) => {}
                Output::Warning(message) => tracing::warn!("{message}"),
            }
        }
        // A connection that cannot keep up (or is gone) is dropped; the peer reconnects and
        // reconciles, which is always correct, where silently skipping a message is not.
        for conn in overflowed_frameworks {
            if self.frameworks.remove(&conn).is_some() {
                tracing::warn!("framework connection {conn:?} fell behind; closing it");
                self.master.framework_disconnected(conn, now);
            }
        }
        for conn in overflowed_agents {
            if self.agents.remove(&conn).is_some() {
                tracing::warn!("agent connection {conn:?} fell behind; closing it");
                self.master.agent_disconnected(conn, now);
            }
        }
        let follow_up = self.master.take_outputs();
        if !follow_up.is_empty() {
            self.commit(&follow_up, Vec::new());
            self.deliver(follow_up, now);
        }
    }

    fn update_metrics(&mut self) {
        if self.last_metrics.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_metrics = Instant::now();
        let agents = self.master.agent_state_counts();
        self.metrics.agents.clear();
        for s in [
            AgentState::Active,
            AgentState::Draining,
            AgentState::Drained,
            AgentState::Unreachable,
            AgentState::Gone,
            AgentState::Recovered,
        ] {
            let n = agents.get(&s).copied().unwrap_or(0);
            self.metrics.agents.get_or_create(&label("state", s.name())).set(n as i64);
        }
        self.metrics.tasks.clear();
        for (s, n) in self.master.task_state_counts() {
            self.metrics.tasks.get_or_create(&label("state", s.name())).set(n as i64);
        }
        let (connected, disconnected) = self.master.framework_counts();
        self.metrics.frameworks.get_or_create(&label("connected", "true")).set(connected as i64);
        self.metrics.frameworks.get_or_create(&label("connected", "false")).set(disconnected as i64);
        self.metrics.offers_outstanding.set(self.master.outstanding_offers() as i64);
        self.metrics.event_subscribers.set(self.events.receiver_count() as i64);
    }
}
