//! The one owner of the agent's state: a single tokio task that receives everything that can
//! change it — messages from the master stream, executor announcements and exits, kill
//! deadlines, finished background jobs, garbage collection, questions from HTTP handlers — and
//! acts on them one at a time. Slow or blocking work (waiting for an executor, SIGKILL rounds,
//! cgroup removal, deleting sandboxes) runs in jobs that report back with a message, so the
//! actor never waits. Checkpoints are written by the actor itself, in order, before it tells
//! anyone about a change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_ipam::{IpNetwork, IpamError, Leases, Subnet};
use atoll_proto::convert::{kill_grace_from_pb, uuid_from_pb};
use atoll_proto::model::{
    AgentId, AgentInfo, AgentSubnet, Capability, FrameworkId, FrameworkInfo, HealthCheckKind, Reason, Source, TaskId,
    TaskInfo, TaskState, TaskStatus, Time,
};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;
use rustix::process::Signal;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::cgroups::CgroupLayout;
use crate::checkpoint::{
    self, AgentCheckpoint, CHECKPOINT_VERSION, EXECUTOR_LOG, KillRequest, LAUNCH_FILE, Layout, STDERR, STDOUT,
    TaskCheckpoint,
};
use crate::executor::{LaunchSpec, read_exit_record};
use crate::health::{self, HealthState, Probe, ProbeResult, Schedule, Verdict};
use crate::launch::{EnvContext, task_argv, task_env, task_limits};
use crate::metrics::{Metrics, label};
use crate::net::masquerade::{Masquerade, MasqueradeView};
use crate::net::store::LeaseStore;
use crate::net::worker::{NetOp, NetReply, Removed};
use crate::net::{self, RESOLV_CONF, TaskNetwork, proxy, routes};
use crate::outcome::{ExitFacts, Stamp, terminal_status};
use crate::process::{self, Announce};
use crate::settings::AgentOptions;
use crate::updates::{Ack, UpdateQueue};
use crate::{AgentError, StopMode, gc};

/// How long an executor has to say `running <pid>` or `error <msg>`.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// After `StopMode::KillTasks`, how long terminal updates may wait for acknowledgements.
const STOP_ACK_WAIT: Duration = Duration::from_secs(10);
/// Slack on top of the longest grace period for tasks to die during a KillTasks stop.
const STOP_KILL_SLACK: Duration = Duration::from_secs(5);
const GC_INTERVAL: Duration = Duration::from_secs(60);
/// Messages the actor may have queued on one master stream before it waits for the next resend.
pub(crate) const OUTBOX: usize = 1024;

type RunId = String;
type TaskKey = (FrameworkId, TaskId);

/// Everything the actor reacts to.
pub(crate) enum Msg {
    /// A stream to the master is open; the actor queues `Register` on `out` before anything else.
    Connected {
        epoch: u64,
        out: mpsc::Sender<apb::AgentMessage>,
    },
    Disconnected {
        epoch: u64,
    },
    Master {
        epoch: u64,
        message: Box<apb::master_message::Message>,
    },
    Announced {
        run: RunId,
        announce: Announce,
    },
    ExecutorExited {
        run: RunId,
    },
    KillDue {
        run: RunId,
    },
    /// One health check probe of a run finished.
    Health {
        run: RunId,
        result: ProbeResult,
    },
    Finalized {
        run: RunId,
        facts: ExitFacts,
        cgroup_removed: bool,
    },
    CgroupCleaned {
        run: RunId,
        removed: bool,
    },
    GcDone {
        removed: Vec<PathBuf>,
    },
    State {
        reply: oneshot::Sender<StateView>,
    },
    FindLog {
        task_id: TaskId,
        framework_id: Option<FrameworkId>,
        reply: oneshot::Sender<Result<LogTarget, LookupError>>,
    },
    /// Whether a run's output is complete: `None` if the run is unknown (collected).
    RunTerminal {
        run: RunId,
        reply: oneshot::Sender<Option<bool>>,
    },
    /// The network worker finished an operation.
    Net(NetReply),
}

/// `/v1/state`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StateView {
    pub agent_id: Option<AgentId>,
    pub hostname: String,
    pub address: SocketAddr,
    pub resources: atoll_proto::model::Resources,
    pub attributes: atoll_proto::model::Attributes,
    pub master: String,
    pub connected: bool,
    pub registered: bool,
    pub cgroups: Option<String>,
    pub tasks: Vec<TaskView>,
    pub networks: NetworksView,
}

/// Container networking in `/v1/state`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NetworksView {
    pub enabled: bool,
    pub bridge: String,
    pub subnets: Vec<Subnet>,
    pub reserved: Vec<IpAddr>,
    pub leases: Vec<atoll_ipam::Lease>,
    pub masquerade: MasqueradeView,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskView {
    pub framework_id: FrameworkId,
    pub id: TaskId,
    pub name: String,
    pub state: TaskState,
    pub run_id: String,
    pub sandbox: PathBuf,
    pub executor_pid: Option<u32>,
    pub pid: Option<u32>,
    pub pending_updates: usize,
    /// The health check verdict (`null` without a check or before its first verdict).
    pub healthy: Option<bool>,
    /// The task's own addresses (container networking).
    pub ip_addresses: Vec<IpAddr>,
    /// Its network namespace, for container tasks.
    pub netns: Option<String>,
}

/// Where a task's logs are.
#[derive(Debug, Clone)]
pub(crate) struct LogTarget {
    pub run: RunId,
    pub sandbox: PathBuf,
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("unknown task `{0}`")]
    UnknownTask(TaskId),
    #[error("unknown framework `{0}`")]
    UnknownFramework(FrameworkId),
    #[error("task `{task}` is unknown in framework `{framework}`")]
    NotInFramework { task: TaskId, framework: FrameworkId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The executor was started; its announcement is awaited.
    Launching,
    /// The task runs (announced, or its executor re-attached after a restart).
    Running,
    /// The executor is gone; the exit facts are being gathered.
    Finalizing,
    /// The terminal status exists; its acknowledgement is awaited.
    Terminal,
}

struct Entry {
    ckpt: TaskCheckpoint,
    updates: UpdateQueue,
    phase: Phase,
    /// The running health checker, while the task runs and has a check.
    health: Option<HealthRun>,
}

struct HealthRun {
    state: HealthState,
    /// When the task started, for the grace period.
    started: Instant,
    checker: tokio::task::AbortHandle,
}

impl Entry {
    fn key(&self) -> TaskKey {
        (self.ckpt.framework_id.clone(), self.ckpt.task.task_id.clone())
    }
}

struct CompletedRun {
    framework_id: FrameworkId,
    task_id: TaskId,
    run: RunId,
    sandbox: PathBuf,
    launched_at: Time,
    completed_at: Time,
}

struct Link {
    epoch: u64,
    out: mpsc::Sender<apb::AgentMessage>,
    registered: bool,
}

struct Stopping {
    kill_deadline: Instant,
    ack_deadline: Option<Instant>,
}

/// What the actor holds for container networking.
pub(crate) struct NetState {
    /// Task address leases (keyed by run id), persisted in `ipam.json`.
    leases: Leases,
    store: LeaseStore,
    /// The network worker; `None` when container networking is disabled on this agent.
    ops: Option<mpsc::UnboundedSender<NetOp>>,
    /// What the route follower needs to know about this agent; `Some` while networking is active.
    me: watch::Sender<Option<routes::Me>>,
    /// Port mapping forwarders of running container tasks.
    forwarders: HashMap<RunId, Vec<AbortHandle>>,
    /// The agent has had subnets (the bridge may exist).
    used: bool,
    masquerade: Arc<Masquerade>,
}

/// The channels [`Agent::recover`] needs for container networking.
pub(crate) struct NetChannels {
    pub ops: Option<mpsc::UnboundedSender<NetOp>>,
    pub me: watch::Sender<Option<routes::Me>>,
    pub masquerade: Arc<Masquerade>,
}

pub(crate) struct Agent {
    options: Arc<AgentOptions>,
    layout: Layout,
    cgroups: Option<CgroupLayout>,
    address: SocketAddr,
    agent_id: Option<AgentId>,
    tasks: BTreeMap<RunId, Entry>,
    by_task: HashMap<TaskKey, RunId>,
    completed: Vec<CompletedRun>,
    /// Run directories without a readable checkpoint, for the garbage collector.
    unreadable: Vec<PathBuf>,
    link: Option<Link>,
    tx: mpsc::UnboundedSender<Msg>,
    jobs: JoinSet<()>,
    metrics: Arc<Metrics>,
    stopping: Option<Stopping>,
    gc_running: bool,
    net: NetState,
}

fn now() -> Instant {
    Instant::now()
}

impl Agent {
    /// Loads the agent id and every checkpointed run, re-attaches to executors still alive and
    /// starts finalizing runs whose executor ended while the agent was away.
    pub(crate) fn recover(
        options: Arc<AgentOptions>,
        layout: Layout,
        cgroups: Option<CgroupLayout>,
        address: SocketAddr,
        metrics: Arc<Metrics>,
        tx: mpsc::UnboundedSender<Msg>,
        net_channels: NetChannels,
    ) -> Result<Agent, AgentError> {
        let agent_checkpoint = AgentCheckpoint::load(&layout)?;
        let store = LeaseStore::new(layout.data_dir());
        let saved_leases = store.load()?;
        let net = NetState {
            used: saved_leases.as_ref().is_some_and(|l| l.subnets().next().is_some()),
            leases: saved_leases.unwrap_or_default(),
            store,
            ops: net_channels.ops,
            me: net_channels.me,
            forwarders: HashMap::new(),
            masquerade: net_channels.masquerade,
        };
        let mut agent = Agent {
            options,
            layout,
            cgroups,
            address,
            agent_id: agent_checkpoint.agent_id,
            tasks: BTreeMap::new(),
            by_task: HashMap::new(),
            completed: Vec::new(),
            unreadable: Vec::new(),
            link: None,
            tx,
            jobs: JoinSet::new(),
            metrics,
            stopping: None,
            gc_running: false,
            net,
        };
        let scan = checkpoint::scan(&agent.layout);
        for (dir, error) in scan.unreadable {
            tracing::warn!(sandbox = %dir.display(), "ignoring a run without a usable checkpoint: {error}");
            agent.unreadable.push(dir);
        }
        for ckpt in scan.runs {
            agent.recover_run(ckpt);
        }
        let live = agent.tasks.len();
        if live > 0 || !agent.completed.is_empty() {
            tracing::info!(live, completed = agent.completed.len(), "recovered task checkpoints");
        }
        agent.recover_networks();
        Ok(agent)
    }

    /// After the runs are recovered: the bridge as the saved subnets say, and away with every
    /// veth, namespace and lease of a run that is not live any more.
    fn recover_networks(&mut self) {
        let any_network = self.tasks.values().any(|e| e.ckpt.network.is_some());
        if !self.net.used && !any_network {
            return;
        }
        let Some(ops) = self.net.ops.clone() else {
            // Networking was turned off: nothing can be torn down here; runs that end release
            // their leases (see request_teardown).
            tracing::warn!("container tasks are checkpointed but container networking is disabled on this agent");
            return;
        };
        self.sync_bridge();
        let live: Vec<TaskNetwork> = self
            .tasks
            .values()
            .filter(|e| matches!(e.phase, Phase::Launching | Phase::Running))
            .filter_map(|e| e.ckpt.network.clone())
            .collect();
        let _ = ops.send(NetOp::Reconcile { live });
    }

    fn recover_run(&mut self, mut ckpt: TaskCheckpoint) {
        if ckpt.completed_at.is_some() && ckpt.network.is_some() {
            // Reconciliation removes what may be left of it; the checkpoint forgets it now.
            ckpt.network = None;
            save(&ckpt);
        }
        if let Some(completed_at) = ckpt.completed_at {
            self.completed.push(CompletedRun {
                framework_id: ckpt.framework_id.clone(),
                task_id: ckpt.task.task_id.clone(),
                run: ckpt.run_id.clone(),
                sandbox: ckpt.sandbox.clone(),
                launched_at: ckpt.launched_at,
                completed_at,
            });
            return;
        }
        let run = ckpt.run_id.clone();
        let updates = UpdateQueue::restore(
            ckpt.pending_updates.iter().cloned(),
            self.options.status_retry_interval,
            self.options.status_retry_max,
            now(),
        );
        let terminal = ckpt.status.state.is_terminal();
        let entry =
            Entry { ckpt, updates, phase: if terminal { Phase::Terminal } else { Phase::Running }, health: None };
        let key = entry.key();
        if let Some(older) = self.by_task.insert(key, run.clone()) {
            tracing::warn!(run = %older, newer = %run, "two live runs of one task; the newer one answers for it");
        }
        self.tasks.insert(run.clone(), entry);
        let Some(entry) = self.tasks.get(&run) else { return };
        if terminal {
            let has_network = entry.ckpt.network.is_some();
            if entry.ckpt.orphaned || entry.updates.is_empty() {
                self.complete(&run);
            } else if entry.ckpt.cgroup.is_some() {
                self.clean_cgroup(&run);
            }
            if has_network {
                self.request_teardown(&run);
            }
            return;
        }
        let pidfd = entry.ckpt.executor.as_ref().and_then(process::open_pidfd);
        let Some(pidfd) = pidfd else {
            tracing::info!(task = %entry.ckpt.task.task_id, run = %run, "executor ended while the agent was away");
            self.start_finalize(&run);
            return;
        };
        let executor_pid = entry.ckpt.executor.map(|p| p.pid);
        // Unknown when the agent died before reading the announcement; without a cgroup it is
        // the only handle for killing the task.
        let found_task = match entry.ckpt.task_process {
            None => executor_pid.and_then(process::first_child),
            Some(_) => None,
        };
        let kill = entry.ckpt.kill;
        let announced = matches!(entry.ckpt.status.state, TaskState::Running | TaskState::Killing);
        tracing::info!(task = %entry.ckpt.task.task_id, run = %run, executor_pid, "re-attached to a running executor");
        self.watch(&run, pidfd, None);
        self.reattach_forwarders(&run);
        if let Some(found) = found_task
            && let Some(entry) = self.tasks.get_mut(&run)
        {
            entry.ckpt.task_process = Some(found);
            save_entry(entry);
        }
        match kill {
            Some(k) if k.during_launch => self.hard_kill(&run),
            Some(k) => self.schedule_kill_due(&run, k.deadline),
            None if !announced => {
                // The agent died before reading the announcement; the executor outlived it, so
                // the task got started (a launch error would have ended the executor).
                let status = self.stamp(&run).map(|s| {
                    let mut status = s.status(TaskState::Running, Source::Executor);
                    status.executor_pid = executor_pid;
                    status
                });
                if let Some(status) = status {
                    self.emit(&run, status);
                }
                self.start_health(&run);
            }
            None => self.start_health(&run),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        stop: impl Future<Output = StopMode>,
    ) -> Result<(), AgentError> {
        let mut stop = std::pin::pin!(stop);
        let mut gc_ticker = tokio::time::interval(GC_INTERVAL);
        gc_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.update_metrics();
        loop {
            let wake = self.next_wake();
            tokio::select! {
                mode = &mut stop, if self.stopping.is_none() => match mode {
                    StopMode::LeaveTasks => {
                        tracing::info!(tasks = self.tasks.len(), "stopping; tasks keep running under their executors");
                        return Ok(());
                    }
                    StopMode::KillTasks => self.begin_kill_stop(),
                },
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake.unwrap_or_else(now))), if wake.is_some() => {}
                _ = gc_ticker.tick() => self.start_gc(),
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!("an agent job panicked: {e}");
                    }
                }
            }
            self.flush_updates();
            self.update_metrics();
            if self.stopping.is_some() && self.stop_done() {
                self.finish_kill_stop();
                self.remove_networks().await;
                return Ok(());
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Connected { epoch, out } => self.on_connected(epoch, out),
            Msg::Disconnected { epoch } => {
                if self.link.as_ref().is_some_and(|l| l.epoch == epoch) {
                    tracing::info!("disconnected from the master");
                    self.link = None;
                }
            }
            Msg::Master { epoch, message } => {
                if self.link.as_ref().is_some_and(|l| l.epoch == epoch) {
                    self.on_master(*message);
                }
            }
            Msg::Announced { run, announce } => self.on_announced(&run, announce),
            Msg::ExecutorExited { run } => {
                if self.tasks.get(&run).is_some_and(|e| matches!(e.phase, Phase::Launching | Phase::Running)) {
                    self.start_finalize(&run);
                }
            }
            Msg::KillDue { run } => {
                if self.tasks.get(&run).is_some_and(|e| matches!(e.phase, Phase::Launching | Phase::Running)) {
                    self.hard_kill(&run);
                }
            }
            Msg::Health { run, result } => self.on_health(&run, result),
            Msg::Finalized { run, facts, cgroup_removed } => self.on_finalized(&run, facts, cgroup_removed),
            Msg::CgroupCleaned { run, removed } => {
                if removed && let Some(entry) = self.tasks.get_mut(&run) {
                    entry.ckpt.cgroup = None;
                    save_entry(entry);
                }
            }
            Msg::GcDone { removed } => {
                self.gc_running = false;
                self.metrics.sandboxes_collected.inc_by(removed.len() as u64);
                self.completed.retain(|c| !removed.contains(&c.sandbox));
                self.unreadable.retain(|d| !removed.contains(d));
            }
            Msg::State { reply } => {
                let _ = reply.send(self.state_view());
            }
            Msg::FindLog { task_id, framework_id, reply } => {
                let _ = reply.send(self.find_log(task_id, framework_id));
            }
            Msg::RunTerminal { run, reply } => {
                let answer = match self.tasks.get(&run) {
                    Some(entry) => Some(entry.phase == Phase::Terminal),
                    None => self.completed.iter().any(|c| c.run == run).then_some(true),
                };
                let _ = reply.send(answer);
            }
            Msg::Net(reply) => self.on_net_reply(reply),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The master stream
    // -----------------------------------------------------------------------------------------

    fn on_connected(&mut self, epoch: u64, out: mpsc::Sender<apb::AgentMessage>) {
        let register = self.register_message();
        if out.try_send(register).is_err() {
            tracing::warn!("master stream closed before registration");
            return;
        }
        tracing::info!(agent_id = ?self.agent_id.as_ref().map(AgentId::as_str), "connected to the master; registering");
        self.link = Some(Link { epoch, out, registered: false });
    }

    fn register_message(&self) -> apb::AgentMessage {
        let info = AgentInfo {
            hostname: self.options.hostname.clone(),
            address: self.address,
            resources: self.options.resources.clone(),
            attributes: self.options.attributes.clone(),
        };
        let mut info = pb::AgentInfo::from(&info);
        info.id = self.agent_id.as_ref().map(Into::into);
        let tasks = self
            .tasks
            .values()
            .filter(|e| !e.ckpt.orphaned)
            .map(|e| apb::RecoveredTask {
                framework_id: Some((&e.ckpt.framework_id).into()),
                task: Some((&e.ckpt.task).into()),
                status: Some((&e.ckpt.status).into()),
            })
            .collect();
        let register = apb::Register { info: Some(info), tasks, version: env!("CARGO_PKG_VERSION").to_owned() };
        apb::AgentMessage { message: Some(apb::agent_message::Message::Register(register)) }
    }

    fn on_master(&mut self, message: apb::master_message::Message) {
        use apb::master_message::Message;
        match message {
            Message::Registered(registered) => self.on_registered(registered),
            Message::Networks(networks) => self.on_networks(networks),
            Message::LaunchTask(launch) => self.on_launch_message(launch),
            Message::KillTask(kill) => {
                let (Some(framework_id), Some(task_id)) = (kill.framework_id, kill.task_id) else {
                    tracing::warn!("kill without framework or task id ignored");
                    return;
                };
                let grace = match kill_grace_from_pb(kill.kill_policy) {
                    Ok(grace) => grace.map(Duration::from_secs_f64),
                    Err(e) => {
                        tracing::warn!("kill of task {}: bad kill policy ({e}); using the task's", task_id.value);
                        None
                    }
                };
                let max = kill.max_grace_seconds.and_then(|secs| Duration::try_from_secs_f64(secs.max(0.0)).ok());
                let key = (FrameworkId::new(framework_id.value), TaskId::new(task_id.value));
                match self.by_task.get(&key).cloned() {
                    Some(run) => {
                        // The bound covers whichever grace applies: the kill's, the task's, the default.
                        let grace = match max {
                            Some(max) => Some(self.effective_grace(&run, grace).min(max)),
                            None => grace,
                        };
                        self.kill(&run, grace)
                    }
                    None => tracing::warn!(framework = %key.0, task = %key.1, "kill of a task this agent does not run"),
                }
            }
            Message::Acknowledge(ack) => {
                let (Some(framework_id), Some(task_id)) = (ack.framework_id, ack.task_id) else {
                    tracing::warn!("acknowledgement without framework or task id ignored");
                    return;
                };
                match uuid_from_pb(&ack.uuid, "uuid") {
                    Ok(Some(uuid)) => {
                        self.on_ack(&(FrameworkId::new(framework_id.value), TaskId::new(task_id.value)), uuid)
                    }
                    Ok(None) => tracing::warn!(task = %task_id.value, "acknowledgement without uuid ignored"),
                    Err(e) => tracing::warn!(task = %task_id.value, "bad acknowledgement: {e}"),
                }
            }
            Message::ShutdownFramework(shutdown) => {
                let Some(framework_id) = shutdown.framework_id.map(|f| FrameworkId::new(f.value)) else { return };
                tracing::info!(framework = %framework_id, "framework shut down; killing its tasks");
                let runs: Vec<RunId> = self
                    .tasks
                    .iter()
                    .filter(|(_, e)| e.ckpt.framework_id == framework_id)
                    .map(|(r, _)| r.clone())
                    .collect();
                for run in runs {
                    self.kill(&run, None);
                }
            }
            Message::Shutdown(shutdown) => self.on_shutdown(&shutdown.message),
        }
    }

    fn on_registered(&mut self, registered: apb::Registered) {
        let Some(agent_id) = registered.agent_id.filter(|id| !id.value.is_empty()).map(|id| AgentId::new(id.value))
        else {
            tracing::warn!("registration answer without an agent id ignored");
            return;
        };
        if self.agent_id.as_ref() != Some(&agent_id) {
            let checkpoint = AgentCheckpoint { version: CHECKPOINT_VERSION, agent_id: Some(agent_id.clone()) };
            if let Err(e) = checkpoint.save(&self.layout) {
                tracing::error!("cannot persist the agent id: {e}");
            }
            self.agent_id = Some(agent_id.clone());
        }
        tracing::info!(agent_id = %agent_id, "registered with the master");
        if let Some(link) = self.link.as_mut() {
            link.registered = true;
        }
        match registered.networks {
            Some(networks) => self.on_networks(networks),
            None => self.update_route_identity(),
        }
        // The master may have lost whatever was in flight: every head goes out again now.
        let t = now();
        for entry in self.tasks.values_mut() {
            entry.updates.resend_now(t);
        }
    }

    fn on_shutdown(&mut self, message: &str) {
        tracing::warn!("the master removed this agent ({message}); killing its tasks and registering anew");
        self.agent_id = None;
        if let Err(e) = (AgentCheckpoint { version: CHECKPOINT_VERSION, agent_id: None }).save(&self.layout) {
            tracing::error!("cannot forget the agent id: {e}");
        }
        if let Some(link) = self.link.as_mut() {
            link.registered = false;
        }
        let runs: Vec<RunId> = self.tasks.keys().cloned().collect();
        for run in runs {
            let Some(entry) = self.tasks.get_mut(&run) else { continue };
            // The master no longer knows these tasks: nothing about them is sent from now on.
            entry.ckpt.orphaned = true;
            entry.updates.clear();
            save_entry(entry);
            let (key, terminal) = (entry.key(), entry.phase == Phase::Terminal);
            // A task of that id launched for the new registration is a new task.
            self.by_task.remove(&key);
            if terminal {
                self.complete(&run);
            } else {
                self.kill(&run, None);
            }
        }
    }

    fn on_ack(&mut self, key: &TaskKey, uuid: uuid::Uuid) {
        let Some(run) = self.by_task.get(key).cloned() else {
            tracing::debug!(framework = %key.0, task = %key.1, "acknowledgement for an unknown task");
            return;
        };
        let Some(entry) = self.tasks.get_mut(&run) else { return };
        match entry.updates.ack(uuid, now()) {
            Ack::Head(status) => {
                self.metrics.updates_acked.inc();
                save_entry(entry);
                if status.state.is_terminal() && entry.updates.is_empty() {
                    self.complete(&run);
                }
            }
            Ack::NotHead => tracing::debug!(task = %key.1, %uuid, "acknowledgement of an update not in flight"),
        }
    }

    /// Sends every queue head that is due, if registered.
    fn flush_updates(&mut self) {
        let Some(link) = self.link.as_ref().filter(|l| l.registered) else { return };
        let t = now();
        for entry in self.tasks.values_mut() {
            if entry.ckpt.orphaned {
                continue;
            }
            let Some(status) = entry.updates.due(t) else { continue };
            let update = apb::StatusUpdate {
                framework_id: Some((&entry.ckpt.framework_id).into()),
                status: Some(pb::TaskStatus::from(status)),
            };
            let message = apb::AgentMessage { message: Some(apb::agent_message::Message::StatusUpdate(update)) };
            match link.out.try_send(message) {
                Ok(()) => {
                    self.metrics.updates_sent.inc();
                    entry.updates.sent(t);
                }
                // A full outbox is drained by the stream; the head stays due and goes next time.
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        if self.link.as_ref().is_some_and(|l| l.registered) {
            for entry in self.tasks.values().filter(|e| !e.ckpt.orphaned) {
                consider(entry.updates.next_due());
            }
        }
        if let Some(stopping) = &self.stopping {
            consider(Some(stopping.kill_deadline));
            consider(stopping.ack_deadline);
        }
        wake
    }

    // -----------------------------------------------------------------------------------------
    // Launching
    // -----------------------------------------------------------------------------------------

    fn on_launch_message(&mut self, launch: apb::LaunchTask) {
        let Some(framework) = launch.framework else {
            tracing::warn!("launch without framework ignored");
            return;
        };
        let Some(framework_id) = framework.id.clone().filter(|id| !id.value.is_empty()) else {
            tracing::warn!("launch for a framework without id ignored");
            return;
        };
        let framework_id = FrameworkId::new(framework_id.value);
        let framework = match FrameworkInfo::try_from(framework) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(framework = %framework_id, "launch with an unusable framework info ({e}); launching anyway");
                None
            }
        };
        let task = match launch.task.map(TaskInfo::try_from) {
            Some(Ok(task)) => task,
            Some(Err(e)) => {
                tracing::warn!(framework = %framework_id, "launch of an invalid task ignored: {e}");
                return;
            }
            None => {
                tracing::warn!(framework = %framework_id, "launch without a task ignored");
                return;
            }
        };
        self.launch(framework_id, framework, task);
    }

    fn launch(&mut self, framework_id: FrameworkId, framework: Option<FrameworkInfo>, task: TaskInfo) {
        let key = (framework_id.clone(), task.task_id.clone());
        if self.by_task.contains_key(&key) {
            tracing::info!(framework = %key.0, task = %key.1, "duplicate launch of a known task ignored");
            return;
        }
        let run = uuid::Uuid::new_v4().to_string();
        let sandbox = self.layout.sandbox(&framework_id, &task.task_id, &run);
        tracing::info!(framework = %framework_id, task = %task.task_id, run = %run, "launching");
        self.metrics.launches.inc();
        let launched_at = Time::now();
        let mut staging = TaskStatus::new(task.task_id.clone(), TaskState::Staging, Source::Agent, launched_at);
        staging.agent_id = Some(task.agent_id.clone());
        let ckpt = TaskCheckpoint {
            version: CHECKPOINT_VERSION,
            framework_id,
            framework,
            task,
            run_id: run.clone(),
            sandbox: sandbox.clone(),
            launched_at,
            cgroup: None,
            executor: None,
            task_process: None,
            kill: None,
            agent_failure: None,
            status: staging,
            healthy: None,
            pending_updates: Vec::new(),
            completed_at: None,
            orphaned: false,
            network: None,
        };
        let updates = UpdateQueue::new(self.options.status_retry_interval, self.options.status_retry_max);
        self.by_task.insert(key, run.clone());
        self.tasks.insert(run.clone(), Entry { ckpt, updates, phase: Phase::Launching, health: None });

        if let Err(e) = std::fs::create_dir_all(&sandbox) {
            return self.fail_launch(&run, format!("cannot create sandbox {}: {e}", sandbox.display()));
        }
        if let Some(entry) = self.tasks.get_mut(&run) {
            save_entry(entry);
        }
        if self.stopping.is_some() {
            // The agent is killing everything; this task never starts.
            if let Some(entry) = self.tasks.get_mut(&run) {
                let t = Time::now();
                entry.ckpt.kill = Some(KillRequest {
                    requested_at: t,
                    deadline: t,
                    during_launch: true,
                    health_check_failures: None,
                });
            }
            return self.start_finalize(&run);
        }
        let wants_network = self.tasks.get(&run).is_some_and(|e| !e.ckpt.task.networks.is_empty());
        let result = if wants_network { self.begin_network(&run) } else { self.prepare_and_spawn(&run) };
        if let Err(message) = result {
            self.fail_launch(&run, message);
        }
    }

    /// Cgroup, launch spec, TASK_STARTING, executor. `Err` is the launch failure's message.
    fn prepare_and_spawn(&mut self, run: &RunId) -> Result<(), String> {
        let Some(entry) = self.tasks.get_mut(run) else { return Ok(()) };
        let task = &entry.ckpt.task;
        if let Some(problem) = task.command.problem() {
            return Err(format!("invalid command: {problem}"));
        }
        if let Some(problem) = task.health_check.as_ref().and_then(|c| c.problem()) {
            return Err(format!("invalid health check: {problem}"));
        }
        let sandbox = entry.ckpt.sandbox.clone();
        if let Some(layout) = &self.cgroups {
            let name = format!("task-{run}");
            let mut limits = task_limits(task);
            // A limit no hierarchy can enforce is dropped rather than failing every task: the
            // node's cgroup layout is a property of the machine, not of the task.
            if !layout.supports("memory") {
                limits.mem_bytes = None;
            }
            if !layout.supports("cpu") {
                limits.cpus = None;
            }
            let cgroup = layout
                .create(&self.options.cgroup_root, &name, &limits)
                .map_err(|e| format!("cannot create the task's cgroup: {e}"))?;
            entry.ckpt.cgroup = Some(cgroup);
        }
        let spec = LaunchSpec {
            argv: task_argv(task),
            env: launch_env(&self.options, &entry.ckpt),
            cwd: sandbox.clone(),
            stdout: sandbox.join(STDOUT),
            stderr: sandbox.join(STDERR),
            cgroup_procs: entry.ckpt.cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
            exit_file: entry.ckpt.exit_file(),
            netns: entry.ckpt.network.as_ref().map(TaskNetwork::netns_path),
            resolv_conf: entry.ckpt.network.as_ref().map(|_| sandbox.join(RESOLV_CONF)),
        };
        let spec_path = sandbox.join(LAUNCH_FILE);
        spec.save(&spec_path).map_err(|e| format!("cannot write {}: {e}", spec_path.display()))?;
        // The cgroup is on disk before the executor exists, so a crash right after the spawn
        // still leaves enough behind to find and kill the task.
        save_entry(entry);
        if let Some(status) = self.stamp(run).map(|s| s.status(TaskState::Starting, Source::Executor)) {
            self.emit(run, status);
        }
        let spawned = process::spawn_executor(&self.options.executor, &spec_path, &sandbox.join(EXECUTOR_LOG))
            .map_err(|e| e.to_string())?;
        let Some(entry) = self.tasks.get_mut(run) else { return Ok(()) };
        entry.ckpt.executor = Some(spawned.process);
        save_entry(entry);
        self.watch(run, spawned.pidfd, Some(spawned.stdout));
        Ok(())
    }

    /// The agent could not start the task: it fails with the message (after the executor, if
    /// any, is gone).
    fn fail_launch(&mut self, run: &RunId, message: String) {
        tracing::warn!(run = %run, "launch failed: {message}");
        let Some(entry) = self.tasks.get_mut(run) else { return };
        process::append_note(&entry.ckpt.sandbox.join(EXECUTOR_LOG), &message);
        entry.ckpt.agent_failure = Some(message);
        save_entry(entry);
        if entry.ckpt.executor.is_none() {
            self.start_finalize(run);
        }
    }

    /// Reports the executor's announcement (when it was just started) and then its exit. One
    /// job does both, so the actor always hears `Announced` before `ExecutorExited`: a task that
    /// ends at once still gets its TASK_RUNNING first.
    fn watch(&mut self, run: &RunId, pidfd: std::os::fd::OwnedFd, announcement: Option<std::process::ChildStdout>) {
        let (tx, run) = (self.tx.clone(), run.clone());
        let executor = self.tasks.get(&run).and_then(|e| e.ckpt.executor);
        self.jobs.spawn(async move {
            if let Some(stdout) = announcement {
                let announce = process::read_announce(stdout, ANNOUNCE_TIMEOUT).await;
                let _ = tx.send(Msg::Announced { run: run.clone(), announce });
            }
            if let Err(e) = process::wait_exit(pidfd).await {
                // Cannot happen with a working epoll; polling /proc keeps the task accounted for.
                tracing::warn!(run = %run, "cannot watch the executor ({e}); polling instead");
                while executor.as_ref().is_some_and(|e| !process::has_exited(e)) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let _ = tx.send(Msg::ExecutorExited { run });
        });
    }

    fn on_announced(&mut self, run: &RunId, announce: Announce) {
        let Some(entry) = self.tasks.get_mut(run) else { return };
        if entry.phase != Phase::Launching {
            return;
        }
        match announce {
            Announce::Running(pid) => {
                entry.ckpt.task_process = process::process_ref(pid);
                entry.phase = Phase::Running;
                save_entry(entry);
                if entry.ckpt.kill.is_some_and(|k| k.during_launch) {
                    self.hard_kill(run);
                    return;
                }
                let executor_pid = entry.ckpt.executor.map(|p| p.pid);
                if let Some(mut status) = self.stamp(run).map(|s| s.status(TaskState::Running, Source::Executor)) {
                    status.executor_pid = executor_pid;
                    self.emit(run, status);
                }
                self.start_health(run);
            }
            // The executor also records this and exits; the exit produces the status.
            Announce::Error(message) => {
                tracing::warn!(run = %run, "the executor could not start the task: {message}");
                entry.ckpt.agent_failure = Some(message);
                save_entry(entry);
            }
            Announce::Silent(message) => {
                tracing::warn!(run = %run, "{message}; giving up on the launch");
                process::append_note(&entry.ckpt.sandbox.join(EXECUTOR_LOG), &message);
                entry.ckpt.agent_failure = Some(message);
                save_entry(entry);
                if let Some(executor) = entry.ckpt.executor {
                    process::kill_process(&executor);
                }
                self.hard_kill(run);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Killing and finishing
    // -----------------------------------------------------------------------------------------

    /// Kills a run gracefully: SIGTERM now, SIGKILL of everything left after the grace period.
    fn kill(&mut self, run: &RunId, grace: Option<Duration>) {
        self.kill_because(run, grace, None);
    }

    /// The grace period a kill of `run` gets: the kill's own, else the task's, else the default.
    fn effective_grace(&self, run: &RunId, grace: Option<Duration>) -> Duration {
        let task_grace = self.tasks.get(run).and_then(|entry| entry.ckpt.task.kill_grace_period_secs);
        grace
            .or_else(|| task_grace.map(|s| Duration::from_secs_f64(s.max(0.0))))
            .unwrap_or(self.options.default_kill_grace)
    }

    /// [`Agent::kill`]; `health_check_failures` says the agent kills the task because its
    /// health check failed that many times in a row.
    fn kill_because(&mut self, run: &RunId, grace: Option<Duration>, health_check_failures: Option<u32>) {
        self.stop_health(run);
        let grace = self.effective_grace(run, grace);
        let Some(entry) = self.tasks.get_mut(run) else { return };
        let t = Time::now();
        let deadline = t.saturating_add(grace);
        match entry.phase {
            Phase::Finalizing | Phase::Terminal => {}
            Phase::Launching => {
                if entry.ckpt.kill.is_none() {
                    tracing::info!(run = %run, "kill before the task started");
                    entry.ckpt.kill = Some(KillRequest {
                        requested_at: t,
                        deadline: t,
                        during_launch: true,
                        health_check_failures: None,
                    });
                    save_entry(entry);
                }
            }
            Phase::Running => {
                if let Some(existing) = entry.ckpt.kill {
                    // A repeated kill may only shorten the grace period.
                    if deadline < existing.deadline {
                        entry.ckpt.kill = Some(KillRequest { deadline, ..existing });
                        save_entry(entry);
                        self.schedule_kill_due(run, deadline);
                    }
                    return;
                }
                tracing::info!(run = %run, task = %entry.ckpt.task.task_id, grace_ms = grace.as_millis() as u64, "killing");
                entry.ckpt.kill =
                    Some(KillRequest { requested_at: t, deadline, during_launch: false, health_check_failures });
                // As Mesos's executors: TASK_KILLING only for frameworks that said they take it.
                let announce = entry.ckpt.framework.as_ref().is_none_or(|f| f.has(Capability::TaskKillingState));
                save_entry(entry);
                if announce
                    && let Some(status) = self.stamp(run).map(|s| s.status(TaskState::Killing, Source::Executor))
                {
                    self.emit(run, status);
                }
                self.signal_task(run, Signal::TERM);
                if grace.is_zero() {
                    self.hard_kill(run);
                } else {
                    self.schedule_kill_due(run, deadline);
                }
            }
        }
    }

    fn signal_task(&self, run: &RunId, signal: Signal) {
        let Some(entry) = self.tasks.get(run) else { return };
        match (&entry.ckpt.cgroup, &entry.ckpt.task_process) {
            (Some(cgroup), _) => {
                cgroup.signal_all(signal.as_raw());
            }
            (None, Some(leader)) => {
                process::signal_group(leader, signal);
            }
            (None, None) => tracing::warn!(run = %run, "no cgroup and no task pid: cannot signal the task"),
        }
    }

    fn schedule_kill_due(&mut self, run: &RunId, deadline: Time) {
        let delay = deadline.saturating_since(Time::now());
        let (tx, run) = (self.tx.clone(), run.clone());
        self.jobs.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::KillDue { run });
        });
    }

    /// SIGKILL of everything in the task (its cgroup, or its process group).
    fn hard_kill(&mut self, run: &RunId) {
        let Some(entry) = self.tasks.get(run) else { return };
        let (cgroup, leader) = (entry.ckpt.cgroup.clone(), entry.ckpt.task_process);
        let run = run.clone();
        self.jobs.spawn_blocking(move || match (cgroup, leader) {
            (Some(cgroup), _) => {
                if let Err(e) = cgroup.kill_all() {
                    tracing::warn!(run = %run, "SIGKILL of the task's cgroup: {e}");
                }
            }
            (None, Some(leader)) => {
                process::signal_group(&leader, Signal::KILL);
            }
            (None, None) => {}
        });
    }

    /// The executor is gone (or never started): gather what decides the terminal status, kill
    /// leftovers and remove the cgroup, off the actor.
    fn start_finalize(&mut self, run: &RunId) {
        self.stop_health(run);
        self.stop_forwarders(run);
        let Some(entry) = self.tasks.get_mut(run) else { return };
        entry.phase = Phase::Finalizing;
        let ckpt = &entry.ckpt;
        let exit_file = ckpt.exit_file();
        let has_executor = ckpt.executor.is_some();
        let (cgroup, leader) = (ckpt.cgroup.clone(), ckpt.task_process);
        let mem = ckpt.task.resources.scalar("mem");
        let requested_mib = (!mem.is_zero()).then(|| mem.as_f64());
        let base = ExitFacts {
            record: None,
            kill_requested: ckpt.kill.is_some(),
            killed_during_launch: ckpt.kill.is_some_and(|k| k.during_launch),
            oom_killed: false,
            memory_limit_mib: requested_mib,
            agent_failure: ckpt.agent_failure.clone(),
            health_check_failures: ckpt.kill.and_then(|k| k.health_check_failures),
        };
        let (tx, run) = (self.tx.clone(), run.clone());
        self.jobs.spawn_blocking(move || {
            let record = if has_executor {
                read_exit_record(&exit_file).unwrap_or_else(|e| {
                    tracing::warn!(run = %run, "unreadable exit record: {e}");
                    None
                })
            } else {
                None
            };
            let oom_killed = cgroup.as_ref().is_some_and(|c| c.oom_killed());
            let memory_limit_mib = base.memory_limit_mib.or_else(|| {
                cgroup.as_ref().and_then(|c| c.memory_limit()).map(|bytes| bytes as f64 / (1024.0 * 1024.0))
            });
            // Whatever the task left behind (daemonized children, the rest of an OOM-killed tree)
            // dies with it.
            let cgroup_removed = match &cgroup {
                Some(cgroup) => {
                    if let Err(e) = cgroup.kill_all() {
                        tracing::warn!(run = %run, "killing leftovers: {e}");
                    }
                    match cgroup.remove() {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(run = %run, "{e}");
                            false
                        }
                    }
                }
                None => {
                    if let Some(leader) = leader {
                        process::signal_group(&leader, Signal::KILL);
                    }
                    false
                }
            };
            let facts = ExitFacts { record, oom_killed, memory_limit_mib, ..base };
            let _ = tx.send(Msg::Finalized { run, facts, cgroup_removed });
        });
    }

    fn on_finalized(&mut self, run: &RunId, facts: ExitFacts, cgroup_removed: bool) {
        let Some(stamp) = self.stamp(run) else { return };
        let Some(entry) = self.tasks.get_mut(run) else { return };
        if entry.phase != Phase::Finalizing {
            return;
        }
        if cgroup_removed {
            entry.ckpt.cgroup = None;
        }
        entry.phase = Phase::Terminal;
        let status = terminal_status(&facts, &stamp);
        tracing::info!(
            run = %run,
            task = %entry.ckpt.task.task_id,
            state = %status.state,
            message = status.message.as_deref().unwrap_or(""),
            "task ended"
        );
        let orphaned = entry.ckpt.orphaned;
        let has_network = entry.ckpt.network.is_some();
        self.emit(run, status);
        if has_network {
            self.request_teardown(run);
        }
        if orphaned {
            self.complete(run);
        }
    }

    fn clean_cgroup(&mut self, run: &RunId) {
        let Some(cgroup) = self.tasks.get(run).and_then(|e| e.ckpt.cgroup.clone()) else { return };
        let (tx, run) = (self.tx.clone(), run.clone());
        self.jobs.spawn_blocking(move || {
            let _ = cgroup.kill_all();
            let removed = cgroup.remove().is_ok();
            let _ = tx.send(Msg::CgroupCleaned { run, removed });
        });
    }

    /// The terminal update was acknowledged (or will never be sent): the run is over.
    fn complete(&mut self, run: &RunId) {
        self.stop_health(run);
        let Some(mut entry) = self.tasks.remove(run) else { return };
        let key = entry.key();
        if self.by_task.get(&key) == Some(run) {
            self.by_task.remove(&key);
        }
        let completed_at = Time::now();
        entry.ckpt.completed_at = Some(completed_at);
        entry.updates.clear();
        save_entry(&mut entry);
        if entry.ckpt.cgroup.is_some() {
            // Normally removed when the task ended; this covers a removal that failed then.
            if let Some(cgroup) = entry.ckpt.cgroup.clone() {
                self.jobs.spawn_blocking(move || {
                    let _ = cgroup.kill_all();
                    let _ = cgroup.remove();
                });
            }
        }
        tracing::debug!(run = %run, task = %key.1, "run completed");
        self.completed.push(CompletedRun {
            framework_id: key.0,
            task_id: key.1,
            run: run.clone(),
            sandbox: entry.ckpt.sandbox,
            launched_at: entry.ckpt.launched_at,
            completed_at,
        });
    }

    /// Identity for a new update of `run`.
    fn stamp(&self, run: &RunId) -> Option<Stamp> {
        let entry = self.tasks.get(run)?;
        Some(Stamp {
            task_id: entry.ckpt.task.task_id.clone(),
            agent_id: entry.ckpt.task.agent_id.clone(),
            now: Time::now(),
            uuid: uuid::Uuid::new_v4(),
        })
    }

    /// Makes `status` the run's latest, queues it for the master and checkpoints both. A
    /// non-terminal status carries the latest health verdict (so the latest status, which is what
    /// re-registration reports, always has it).
    fn emit(&mut self, run: &RunId, mut status: TaskStatus) {
        let Some(entry) = self.tasks.get_mut(run) else { return };
        if status.healthy.is_none() && !status.state.is_terminal() {
            status.healthy = entry.ckpt.healthy;
        }
        // The master and DNS learn a container task's address with its first update.
        if status.ip_addresses.is_empty()
            && let Some(network) = &entry.ckpt.network
        {
            status.ip_addresses = vec![network.ip];
        }
        entry.ckpt.status = status.clone();
        if !entry.ckpt.orphaned {
            entry.updates.push(status, now());
        }
        save_entry(entry);
    }

    // -----------------------------------------------------------------------------------------
    // Health checks
    // -----------------------------------------------------------------------------------------

    /// Starts checking a running task that has a health check (once the task is announced, or
    /// re-attached after a restart, resuming with the checkpointed verdict).
    fn start_health(&mut self, run: &RunId) {
        let Some(entry) = self.tasks.get(run) else { return };
        let Some(check) = entry.ckpt.task.health_check.clone() else { return };
        if entry.health.is_some() || entry.phase != Phase::Running || entry.ckpt.kill.is_some() {
            return;
        }
        if let Some(problem) = check.problem() {
            tracing::warn!(run = %run, "not checking the task's health: {problem}");
            return;
        }
        // Time since the task started, for a re-attached task too.
        let since_start = Time::now().saturating_since(entry.ckpt.launched_at);
        let started = now().checked_sub(since_start).unwrap_or_else(now);
        let probe = match &check.kind {
            HealthCheckKind::Http { port, path } => {
                Probe::Http { addr: SocketAddr::new(health::probe_host(&entry.ckpt), *port), path: path.clone() }
            }
            HealthCheckKind::Tcp { port } => {
                Probe::Tcp { addr: SocketAddr::new(health::probe_host(&entry.ckpt), *port) }
            }
            HealthCheckKind::Command { command } => {
                Probe::Command(Box::new(health::command_spec(&self.task_process_spec(&entry.ckpt), command)))
            }
        };
        let schedule = Schedule::for_check(&check, since_start);
        let state = HealthState::for_check(&check).resume(entry.ckpt.healthy);
        tracing::debug!(run = %run, ?schedule, "health checks start");
        let (tx, msg_run) = (self.tx.clone(), run.clone());
        let checker = self.jobs.spawn(health::run_checks(probe, schedule, move |result| {
            tx.send(Msg::Health { run: msg_run.clone(), result }).is_ok()
        }));
        if let Some(entry) = self.tasks.get_mut(run) {
            entry.health = Some(HealthRun { state, started, checker });
        }
    }

    /// How the task's process was started (its `launch.json`), with the sandbox and cgroup as
    /// they are now; rebuilt from the checkpoint if the file is unreadable.
    fn task_process_spec(&self, ckpt: &TaskCheckpoint) -> LaunchSpec {
        let mut spec = LaunchSpec::load(&ckpt.sandbox.join(LAUNCH_FILE)).unwrap_or_else(|e| {
            tracing::warn!(run = %ckpt.run_id, "{e}; health checks use a rebuilt environment");
            LaunchSpec {
                argv: task_argv(&ckpt.task),
                env: launch_env(&self.options, ckpt),
                cwd: ckpt.sandbox.clone(),
                stdout: ckpt.sandbox.join(STDOUT),
                stderr: ckpt.sandbox.join(STDERR),
                cgroup_procs: Vec::new(),
                exit_file: ckpt.exit_file(),
                netns: ckpt.network.as_ref().map(TaskNetwork::netns_path),
                resolv_conf: ckpt.network.as_ref().map(|_| ckpt.sandbox.join(RESOLV_CONF)),
            }
        });
        spec.cwd = ckpt.sandbox.clone();
        spec.cgroup_procs = ckpt.cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default();
        spec
    }

    /// Stops the run's health checker (a probe in progress is killed).
    fn stop_health(&mut self, run: &RunId) {
        if let Some(health) = self.tasks.get_mut(run).and_then(|e| e.health.take()) {
            health.checker.abort();
        }
    }

    fn on_health(&mut self, run: &RunId, result: ProbeResult) {
        let Some(entry) = self.tasks.get_mut(run) else { return };
        if entry.phase != Phase::Running || entry.ckpt.kill.is_some() {
            return;
        }
        // A result still in flight from a checker stopped meanwhile.
        let Some(health) = entry.health.as_mut() else { return };
        self.metrics.health_checks.get_or_create(&label("outcome", result.outcome.label())).inc();
        let since_start = now().saturating_duration_since(health.started);
        let verdict = health.state.observe(result.outcome.is_healthy(), since_start);
        tracing::debug!(run = %run, outcome = result.outcome.label(), detail = %result.detail, ?verdict, "health check");
        match verdict {
            None => {}
            Some(Verdict::Changed(healthy)) => self.report_health(run, healthy, &result),
            Some(Verdict::Kill { failures, newly_unhealthy }) => {
                if newly_unhealthy {
                    self.report_health(run, false, &result);
                }
                tracing::warn!(
                    run = %run,
                    failures,
                    "killing the task: its health check failed {failures} times in a row ({})",
                    result.detail
                );
                self.metrics.health_check_kills.inc();
                self.kill_because(run, None, Some(failures));
            }
        }
    }

    /// A TASK_RUNNING update carrying the new verdict.
    fn report_health(&mut self, run: &RunId, healthy: bool, result: &ProbeResult) {
        let Some(stamp) = self.stamp(run) else { return };
        let Some(entry) = self.tasks.get_mut(run) else { return };
        tracing::info!(run = %run, task = %entry.ckpt.task.task_id, healthy, detail = %result.detail, "health verdict");
        entry.ckpt.healthy = Some(healthy);
        let executor_pid = entry.ckpt.executor.map(|p| p.pid);
        let message = if healthy {
            format!("health check passed: {}", result.detail)
        } else {
            format!("health check failed: {}", result.detail)
        };
        let mut status = stamp
            .status(TaskState::Running, Source::Executor)
            .with_reason(Reason::TaskHealthCheckStatusUpdated, message);
        status.healthy = Some(healthy);
        status.executor_pid = executor_pid;
        self.emit(run, status);
    }

    // -----------------------------------------------------------------------------------------
    // Stopping with KillTasks
    // -----------------------------------------------------------------------------------------

    fn begin_kill_stop(&mut self) {
        tracing::info!(tasks = self.tasks.len(), "stopping; killing every task");
        let mut longest = Duration::ZERO;
        let runs: Vec<RunId> = self.tasks.keys().cloned().collect();
        for run in &runs {
            if let Some(entry) = self.tasks.get(run) {
                let grace = entry
                    .ckpt
                    .task
                    .kill_grace_period_secs
                    .map(|s| Duration::from_secs_f64(s.max(0.0)))
                    .unwrap_or(self.options.default_kill_grace);
                longest = longest.max(grace);
            }
        }
        self.stopping = Some(Stopping { kill_deadline: now() + longest + STOP_KILL_SLACK, ack_deadline: None });
        for run in runs {
            self.kill(&run, None);
        }
    }

    fn stop_done(&mut self) -> bool {
        let all_terminal = self.tasks.values().all(|e| e.phase == Phase::Terminal);
        let t = now();
        let Some(stopping) = self.stopping.as_mut() else { return true };
        if all_terminal {
            let ack_deadline = *stopping.ack_deadline.get_or_insert(t + STOP_ACK_WAIT);
            return self.tasks.is_empty() || t >= ack_deadline;
        }
        t >= stopping.kill_deadline
    }

    fn finish_kill_stop(&mut self) {
        let unacked = self.tasks.values().filter(|e| e.phase == Phase::Terminal).count();
        let alive = self.tasks.len() - unacked;
        if alive > 0 {
            tracing::warn!(alive, "tasks still not ended when the agent stopped");
        }
        if unacked > 0 {
            tracing::warn!(unacked, "terminal updates not acknowledged; they are re-sent by the next agent");
        }
        if let Some(layout) = &self.cgroups {
            layout.remove_root(&self.options.cgroup_root);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Container networking
    // -----------------------------------------------------------------------------------------

    /// The master's subnets and reserved addresses for this agent (on registration and whenever
    /// they change).
    fn on_networks(&mut self, networks: apb::Networks) {
        let holder = self.agent_id.as_ref().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let mut subnets = Vec::new();
        for subnet in networks.subnets {
            match AgentSubnet::try_from(subnet) {
                Ok(s) => {
                    subnets.push(Subnet { pool: s.pool, network: s.network, gateway: s.gateway, agent: holder.clone() })
                }
                Err(e) => tracing::warn!("ignoring an invalid subnet from the master: {e}"),
            }
        }
        let mut reserved = Vec::new();
        for ip in &networks.reserved {
            match ip.parse::<IpAddr>() {
                Ok(ip) => reserved.push(ip),
                Err(_) => tracing::warn!("ignoring an invalid reserved address from the master: {ip:?}"),
            }
        }
        let before = self.net.leases.clone();
        if let Err(e) = self.net.leases.set_subnets(subnets.clone(), reserved.clone()) {
            // The master dropped a subnet that tasks here still use: keep those until they end.
            let kept: Vec<Subnet> = match &e {
                IpamError::SubnetInUse { .. } => before
                    .subnets()
                    .filter(|old| {
                        !subnets.iter().any(|s| s.network == old.network)
                            && before.leases().any(|l| l.pool == old.pool && l.subnet == old.network)
                    })
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            let retried = !kept.is_empty() && {
                tracing::warn!("{e}; keeping the subnet(s) in use until their tasks end");
                let mut all = subnets.clone();
                all.extend(kept);
                self.net.leases.set_subnets(all, reserved).is_ok()
            };
            if !retried {
                tracing::error!("cannot use the networks the master assigned: {e}");
                return;
            }
        }
        if self.net.leases != before || !self.net.store.path().exists() {
            if let Err(e) = self.net.store.save(&self.net.leases) {
                tracing::error!("{e}");
            }
            let list: Vec<String> = self.net.leases.subnets().map(|s| format!("{} {}", s.pool, s.network)).collect();
            tracing::info!(subnets = ?list, "container network subnets assigned");
        }
        if self.net.leases.subnets().next().is_some() {
            self.net.used = true;
        }
        self.sync_bridge();
    }

    /// Asks the worker to make the bridge match the subnets, and tells the route follower who
    /// this agent is.
    fn sync_bridge(&mut self) {
        let subnets: Vec<(IpNetwork, IpAddr)> = self.net.leases.subnets().map(|s| (s.network, s.gateway)).collect();
        if let Some(ops) = &self.net.ops
            && self.net.used
        {
            let _ = ops.send(NetOp::Bridge { subnets });
        }
        self.update_route_identity();
    }

    fn update_route_identity(&mut self) {
        let subnets: Vec<IpNetwork> = self.net.leases.subnets().map(|s| s.network).collect();
        let me = (self.net.ops.is_some() && !subnets.is_empty()).then(|| routes::Me {
            agent_id: self.agent_id.as_ref().map(|a| a.as_str().to_owned()),
            ip: Some(self.address.ip()),
            subnets,
        });
        self.net.me.send_if_modified(|current| {
            let changed = *current != me;
            *current = me;
            changed
        });
    }

    /// A container task's launch, first half: its address, its checkpointed network, its
    /// resolv.conf, and the worker asked to create the namespace and veth. The launch goes on
    /// when the worker answers ([`NetReply::SetUp`]). `Err` is the launch failure's message.
    fn begin_network(&mut self, run: &RunId) -> Result<(), String> {
        let Some(entry) = self.tasks.get(run) else { return Ok(()) };
        let networks = &entry.ckpt.task.networks;
        if networks.len() > 1 {
            let names: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
            return Err(format!(
                "a task can join one container network on this agent; it asks for {} ({})",
                networks.len(),
                names.join(", ")
            ));
        }
        let request = networks[0].clone();
        let Some(ops) = self.net.ops.clone() else {
            return Err(match self.options.container_networking {
                Some(false) => "container networking is disabled on this agent (--container-networking=false)".into(),
                _ => "container networking needs the agent to run as root".into(),
            });
        };
        let lease = match self.net.leases.allocate(&request.name, run, request.ip) {
            Ok(lease) => lease,
            Err(e) => {
                if matches!(e, IpamError::SubnetExhausted { .. }) {
                    self.metrics.ipam_exhausted.inc();
                }
                return Err(self.ipam_message(e));
            }
        };
        let network = TaskNetwork {
            pool: request.name.clone(),
            ip: lease.ip,
            prefix: lease.subnet.prefix(),
            gateway: lease.gateway,
            netns: net::netns_name(self.layout.data_dir(), run),
            veth: net::veth_name(run),
            bridge: self.options.bridge.clone(),
            port_mappings: request.port_mappings.clone(),
        };
        if let Err(e) = self.net.store.save(&self.net.leases) {
            self.net.leases.release(run);
            return Err(format!("cannot persist the task's address: {e}"));
        }
        let Some(entry) = self.tasks.get_mut(run) else { return Ok(()) };
        // Checkpointed before anything exists, so that a crash from here on is reconciled.
        entry.ckpt.network = Some(network.clone());
        save_entry(entry);
        let resolv = entry.ckpt.sandbox.join(RESOLV_CONF);
        std::fs::write(&resolv, net::resolv_conf(network.gateway))
            .map_err(|e| format!("cannot write {}: {e}", resolv.display()))?;
        tracing::info!(run = %run, ip = %network.ip, netns = %network.netns, "setting up the task's network");
        let _ = ops.send(NetOp::Setup { run: run.clone(), net: network });
        Ok(())
    }

    /// An IPAM error as a launch failure: run ids (the lease keys) become task ids.
    fn ipam_message(&self, e: IpamError) -> String {
        match e {
            IpamError::AddressTaken { pool, ip, task } => {
                let holder = self.tasks.get(&task).map(|e| e.ckpt.task.task_id.to_string()).unwrap_or(task);
                format!("pool {pool}: {ip} is taken by task {holder}")
            }
            e => e.to_string(),
        }
    }

    fn on_net_reply(&mut self, reply: NetReply) {
        match reply {
            NetReply::SetUp { run, result } => {
                let Some(entry) = self.tasks.get(&run) else { return };
                if entry.phase != Phase::Launching || entry.ckpt.executor.is_some() {
                    return;
                }
                if let Err(message) = result {
                    return self.fail_launch(&run, format!("cannot set up the task's network: {message}"));
                }
                if entry.ckpt.kill.is_some() || entry.ckpt.agent_failure.is_some() {
                    return self.start_finalize(&run);
                }
                let result = self.start_forwarders(&run).and_then(|()| self.prepare_and_spawn(&run));
                if let Err(message) = result {
                    self.stop_forwarders(&run);
                    self.fail_launch(&run, message);
                }
            }
            NetReply::TornDown { run, net, sandbox, result } => match result {
                Ok(()) => {
                    tracing::debug!(run = %run, ip = %net.ip, "task network removed");
                    self.forget_network(&run, &sandbox);
                }
                Err(e) => tracing::warn!(
                    run = %run,
                    "the task's network could not be removed entirely ({e}); its address stays leased until the \
                     agent reconciles it at its next start"
                ),
            },
            NetReply::Reconciled { removed_veths, removed_netns } => {
                if removed_veths + removed_netns > 0 {
                    tracing::info!(removed_veths, removed_netns, "reconciled container networks");
                }
                // Runs that still have a network (live, or ending with a teardown queued) keep
                // their addresses; every other lease leaked.
                let keep: BTreeSet<String> =
                    self.tasks.iter().filter(|(_, e)| e.ckpt.network.is_some()).map(|(r, _)| r.clone()).collect();
                let released = self.net.leases.retain_tasks(&keep);
                if !released.is_empty() {
                    let ips: Vec<String> = released.iter().map(|l| l.ip.to_string()).collect();
                    tracing::info!(addresses = ?ips, "released the addresses of tasks that are gone");
                    if let Err(e) = self.net.store.save(&self.net.leases) {
                        tracing::error!("{e}");
                    }
                }
            }
        }
    }

    /// The run's network is gone: release its address and drop it from the checkpoint.
    fn forget_network(&mut self, run: &RunId, sandbox: &std::path::Path) {
        if !self.net.leases.release(run).is_empty()
            && let Err(e) = self.net.store.save(&self.net.leases)
        {
            tracing::error!("{e}");
        }
        match self.tasks.get_mut(run) {
            Some(entry) => {
                entry.ckpt.network = None;
                save_entry(entry);
            }
            // The run completed meanwhile: its checkpoint is only on disk.
            None => {
                if let Ok(mut ckpt) = TaskCheckpoint::load(&sandbox.join(checkpoint::TASK_FILE))
                    && ckpt.network.is_some()
                {
                    ckpt.network = None;
                    ckpt.sandbox = sandbox.to_path_buf();
                    save(&ckpt);
                }
            }
        }
    }

    /// The run ended: remove its veth and namespace (then release its address).
    fn request_teardown(&mut self, run: &RunId) {
        self.stop_forwarders(run);
        let Some(entry) = self.tasks.get(run) else { return };
        let Some(network) = entry.ckpt.network.clone() else { return };
        let sandbox = entry.ckpt.sandbox.clone();
        match &self.net.ops {
            Some(ops) => {
                let _ = ops.send(NetOp::Teardown { run: run.clone(), net: network, sandbox });
            }
            // Networking was turned off since: nothing can be removed here.
            None => self.forget_network(run, &sandbox),
        }
    }

    /// Binds the run's port mappings now (a launch whose host port is taken fails) and serves them.
    fn start_forwarders(&mut self, run: &RunId) -> Result<(), String> {
        let Some(network) = self.tasks.get(run).and_then(|e| e.ckpt.network.clone()) else { return Ok(()) };
        let mut bound = Vec::new();
        for mapping in &network.port_mappings {
            let listener = proxy::bind(mapping, network.ip).map_err(|e| e.to_string())?;
            bound.push((listener, std::net::SocketAddr::new(network.ip, mapping.container_port)));
        }
        let handles: Vec<AbortHandle> =
            bound.into_iter().map(|(listener, target)| self.jobs.spawn(proxy::serve(listener, target))).collect();
        if !handles.is_empty() {
            self.net.forwarders.insert(run.clone(), handles);
        }
        Ok(())
    }

    /// Re-creates the forwarders of a re-attached container task (binding as soon as the port
    /// is free again).
    fn reattach_forwarders(&mut self, run: &RunId) {
        let Some(network) = self.tasks.get(run).and_then(|e| e.ckpt.network.clone()) else { return };
        let handles: Vec<AbortHandle> = network
            .port_mappings
            .iter()
            .map(|m| self.jobs.spawn(proxy::bind_and_serve(m.clone(), network.ip)))
            .collect();
        if !handles.is_empty() {
            self.net.forwarders.insert(run.clone(), handles);
        }
    }

    fn stop_forwarders(&mut self, run: &RunId) {
        for handle in self.net.forwarders.remove(run).unwrap_or_default() {
            handle.abort();
        }
    }

    /// `StopMode::KillTasks`: once every task has ended, remove the bridge, the veths, the
    /// namespaces and the routes; the runs' addresses are free then.
    async fn remove_networks(&mut self) {
        let Some(ops) = self.net.ops.clone() else { return };
        if !self.net.used && !self.tasks.values().any(|e| e.ckpt.network.is_some()) {
            return;
        }
        let (reply, removed) = oneshot::channel();
        if ops.send(NetOp::RemoveAll { reply }).is_err() {
            return;
        }
        let removed: Removed = match tokio::time::timeout(STOP_ACK_WAIT, removed).await {
            Ok(Ok(removed)) => removed,
            _ => {
                tracing::warn!("container networks not removed in time; the next start reconciles them");
                return;
            }
        };
        tracing::info!(?removed, "container networks removed");
        let runs: Vec<(RunId, PathBuf)> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.phase == Phase::Terminal && e.ckpt.network.is_some())
            .map(|(r, e)| (r.clone(), e.ckpt.sandbox.clone()))
            .collect();
        for (run, sandbox) in runs {
            self.forget_network(&run, &sandbox);
        }
        // Runs completed before their teardown was reported hold addresses of networks that are
        // gone now too; only a task that refused to die keeps its lease.
        let alive: BTreeSet<String> =
            self.tasks.iter().filter(|(_, e)| e.phase != Phase::Terminal).map(|(r, _)| r.clone()).collect();
        if !self.net.leases.retain_tasks(&alive).is_empty()
            && let Err(e) = self.net.store.save(&self.net.leases)
        {
            tracing::error!("{e}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Garbage collection, HTTP questions, metrics
    // -----------------------------------------------------------------------------------------

    fn start_gc(&mut self) {
        if self.gc_running {
            return;
        }
        let mut candidates: Vec<gc::Candidate> = self
            .completed
            .iter()
            .map(|c| gc::Candidate { sandbox: c.sandbox.clone(), completed_at: c.completed_at })
            .collect();
        for dir in &self.unreadable {
            let modified = std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(Time::ZERO, |d| Time(d.as_millis() as u64));
            candidates.push(gc::Candidate { sandbox: dir.clone(), completed_at: modified });
        }
        if candidates.is_empty() {
            return;
        }
        self.gc_running = true;
        let (age, threshold) = (self.options.sandbox_gc_age, self.options.sandbox_gc_disk_threshold);
        let (data_dir, root) = (self.layout.data_dir().to_path_buf(), self.layout.sandboxes());
        let tx = self.tx.clone();
        self.jobs.spawn_blocking(move || {
            let removed = gc::collect(
                candidates,
                Time::now(),
                age,
                threshold,
                || gc::disk_usage(&data_dir),
                |sandbox| gc::remove_sandbox(sandbox, &root),
            );
            if !removed.is_empty() {
                tracing::info!(count = removed.len(), "removed completed sandboxes");
            }
            let _ = tx.send(Msg::GcDone { removed });
        });
    }

    fn state_view(&self) -> StateView {
        StateView {
            agent_id: self.agent_id.clone(),
            hostname: self.options.hostname.clone(),
            address: self.address,
            resources: self.options.resources.clone(),
            attributes: self.options.attributes.clone(),
            master: self.options.master.clone(),
            connected: self.link.is_some(),
            registered: self.link.as_ref().is_some_and(|l| l.registered),
            cgroups: self.cgroups.as_ref().map(CgroupLayout::describe),
            networks: NetworksView {
                enabled: self.net.ops.is_some(),
                bridge: self.options.bridge.clone(),
                subnets: self.net.leases.subnets().cloned().collect(),
                reserved: self.net.leases.reserved().copied().collect(),
                leases: self.net.leases.leases().cloned().collect(),
                masquerade: self.net.masquerade.view(),
            },
            tasks: self
                .tasks
                .iter()
                .map(|(run, e)| TaskView {
                    framework_id: e.ckpt.framework_id.clone(),
                    id: e.ckpt.task.task_id.clone(),
                    name: e.ckpt.task.name.clone(),
                    state: e.ckpt.status.state,
                    run_id: run.clone(),
                    sandbox: e.ckpt.sandbox.clone(),
                    executor_pid: e.ckpt.executor.map(|p| p.pid),
                    pid: e.ckpt.task_process.map(|p| p.pid),
                    pending_updates: e.updates.len(),
                    healthy: e.ckpt.healthy,
                    ip_addresses: e.ckpt.network.iter().map(|n| n.ip).collect(),
                    netns: e.ckpt.network.as_ref().map(|n| n.netns.clone()),
                })
                .collect(),
        }
    }

    /// The newest run of `task_id` (within `framework_id` if given), live or completed.
    fn find_log(&self, task_id: TaskId, framework_id: Option<FrameworkId>) -> Result<LogTarget, LookupError> {
        let live = self
            .tasks
            .values()
            .map(|e| (&e.ckpt.framework_id, &e.ckpt.task.task_id, &e.ckpt.run_id, &e.ckpt.sandbox, e.ckpt.launched_at));
        let done = self.completed.iter().map(|c| (&c.framework_id, &c.task_id, &c.run, &c.sandbox, c.launched_at));
        let runs: Vec<_> = live.chain(done).collect();
        if let Some(fw) = &framework_id
            && !runs.iter().any(|(f, ..)| *f == fw)
        {
            return Err(LookupError::UnknownFramework(fw.clone()));
        }
        let newest = runs
            .iter()
            .filter(|(f, t, ..)| **t == task_id && framework_id.as_ref().is_none_or(|fw| *f == fw))
            .max_by_key(|(.., launched_at)| *launched_at);
        match (newest, framework_id) {
            (Some((_, _, run, sandbox, _)), _) => Ok(LogTarget { run: (*run).clone(), sandbox: (*sandbox).clone() }),
            (None, Some(framework)) => Err(LookupError::NotInFramework { task: task_id, framework }),
            (None, None) => Err(LookupError::UnknownTask(task_id)),
        }
    }

    fn update_metrics(&self) {
        self.metrics.tasks.clear();
        let mut counts: BTreeMap<TaskState, i64> = BTreeMap::new();
        let mut pending = 0;
        for entry in self.tasks.values() {
            *counts.entry(entry.ckpt.status.state).or_default() += 1;
            pending += entry.updates.len();
        }
        for (state, n) in counts {
            self.metrics.tasks.get_or_create(&label("state", state.name())).set(n);
        }
        self.metrics.updates_pending.set(pending as i64);
        self.metrics.ipam_leases.set(self.net.leases.leases().count() as i64);
        self.metrics.connected.set(i64::from(self.link.is_some()));
        self.metrics.registered.set(i64::from(self.link.as_ref().is_some_and(|l| l.registered)));
    }
}

/// The environment a task's process gets (and its COMMAND health checks, unless its
/// `launch.json` says otherwise).
fn launch_env(options: &AgentOptions, ckpt: &TaskCheckpoint) -> Vec<(String, String)> {
    let agent_path = std::env::var("PATH").ok();
    task_env(
        &ckpt.task,
        &EnvContext {
            framework_id: &ckpt.framework_id,
            agent_id: &ckpt.task.agent_id,
            sandbox: &ckpt.sandbox,
            hostname: &options.hostname,
            agent_path: agent_path.as_deref(),
        },
    )
}

/// Checkpoint writes are logged, not fatal: the task goes on and the next write may succeed
/// (a full disk is the usual cause).
fn save(ckpt: &TaskCheckpoint) {
    if let Err(e) = ckpt.save() {
        tracing::error!("{e}");
    }
}

fn save_entry(entry: &mut Entry) {
    entry.ckpt.pending_updates = entry.updates.pending().cloned().collect();
    save(&entry.ckpt);
}
