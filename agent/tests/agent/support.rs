//! Test fixtures: a fake master (a real tonic `AgentRegistry` server the test drives), an agent
//! running in the test's runtime, a guard that kills and removes whatever a test's agent left
//! behind, also when the test panics, and [`Scenario`], which puts the three together.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apb::agent_registry_server::{AgentRegistry, AgentRegistryServer};
use apb::master_message::Message as ToAgent;
use atoll_agent::{AgentError, AgentOptions, AgentSettings, StopMode};
use atoll_proto::model::{
    Capability, ClusterState, CommandInfo, FrameworkInfo, Labels, Resources, StreamMessage, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;
use atoll_proto::pb::v1::operator as opb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);
pub const AGENT_ID: &str = "agent-test-1";
pub const FRAMEWORK: &str = "fw-1";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Root-only tests must not pass silently when they did not run.
fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("ATOLL_ALLOW_UNPRIVILEGED_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("skipping {test}: needs root (cgroups)");
        return false;
    }
    panic!("{test} needs root (cgroups); set ATOLL_ALLOW_UNPRIVILEGED_SKIP=1 to skip it");
}

/// How a test's agent is set up; [`Scenario::run`] runs the test against it.
#[derive(Default)]
pub struct Scenario {
    root_only: Option<&'static str>,
    configure: Option<fn(&mut AgentOptions)>,
    /// Run the whole scenario (fake master, agent, tasks, the test's own connections) inside a
    /// fresh network namespace.
    netns: bool,
    /// What the fake master's `Registered` carries.
    networks: Option<fn() -> apb::Networks>,
}

/// Runs `body` against a fresh agent registered with a fake master (see [`Scenario::run`]).
pub fn with_agent(body: impl AsyncFnOnce(&mut Scene<'_>)) {
    Scenario::default().run(body);
}

impl Scenario {
    /// `test` needs root (cgroups): without it, it fails unless `ATOLL_ALLOW_UNPRIVILEGED_SKIP=1`,
    /// which skips it.
    pub fn needs_root(self, test: &'static str) -> Scenario {
        Scenario { root_only: Some(test), ..self }
    }

    /// Adjusts the agent's options before it starts.
    pub fn options(self, configure: fn(&mut AgentOptions)) -> Scenario {
        Scenario { configure: Some(configure), ..self }
    }

    /// Runs everything inside a network namespace of the test's own (see [`crate::netns`]): the
    /// agent's bridge, IP forwarding and routes never touch the machine's own network.
    pub fn in_netns(self) -> Scenario {
        Scenario { netns: true, ..self }
    }

    /// The fake master assigns these networks on registration.
    pub fn networks(self, networks: fn() -> apb::Networks) -> Scenario {
        Scenario { networks: Some(networks), ..self }
    }

    /// Starts a fake master and an agent, accepts the agent as [`AGENT_ID`], runs `body` and
    /// stops the agent (leaving tasks) unless `body` stopped it. The [`TestEnv`] outlives the
    /// runtime, so it cleans up after the agent's tasks are gone, also when `body` panics.
    pub fn run(self, body: impl AsyncFnOnce(&mut Scene<'_>)) {
        if let Some(test) = self.root_only
            && !require_root(test)
        {
            return;
        }
        // Declared first, dropped last: the env's cleanup and the runtime's end happen inside the
        // namespace; then this thread goes back and the namespace is deleted.
        let netns = self.netns.then(crate::netns::TestNetns::enter);
        let env = TestEnv::new();
        let rt = runtime();
        rt.block_on(async {
            let mut master = FakeMaster::start().await;
            master.networks = self.networks.map(|f| f());
            let mut options = env.options(&master.url);
            if let Some(configure) = self.configure {
                configure(&mut options);
            }
            let agent = TestAgent::start(options.clone());
            let register = master.accept(AGENT_ID).await;
            let base = http_base(&register);
            let mut scene = Scene { env: &env, master, options, agent, register, base };
            body(&mut scene).await;
            scene.agent.stop(StopMode::LeaveTasks).await;
        });
        drop(rt);
        drop(env);
        drop(netns);
    }
}

/// What a [`Scenario`] hands its test: the env, the fake master and the current agent.
pub struct Scene<'e> {
    pub env: &'e TestEnv,
    pub master: FakeMaster,
    /// What the agent runs with; [`Scene::start_agent`] starts the next one with these.
    pub options: AgentOptions,
    pub agent: TestAgent,
    /// The latest registration accepted through the scene, and the agent's HTTP address from it.
    pub register: apb::Register,
    pub base: String,
}

impl Scene<'_> {
    /// Starts a new agent (the previous one must have stopped) without answering its registration.
    pub fn start_agent(&mut self) {
        self.agent = TestAgent::start(self.options.clone());
    }

    /// Starts a new agent and accepts it as [`AGENT_ID`].
    pub async fn restart_agent(&mut self) -> &apb::Register {
        self.start_agent();
        self.register = self.master.accept(AGENT_ID).await;
        self.base = http_base(&self.register);
        &self.register
    }

    /// Stops the agent, killing its tasks, and checks that no cgroup of the test is left.
    pub async fn stop_killing_tasks(&mut self) {
        self.agent.stop(StopMode::KillTasks).await;
        self.env.assert_no_cgroups();
    }

    /// The pid of `task`'s process, once the agent's API shows one.
    pub async fn task_pid(&self, task: &str) -> u32 {
        let start = Instant::now();
        loop {
            let state = get_json(&format!("{}/v1/state", self.base)).await;
            let pid = state["tasks"].as_array().and_then(|tasks| {
                tasks.iter().find(|t| t["id"] == task).and_then(|t| t["pid"].as_u64()).map(|p| p as u32)
            });
            if let Some(pid) = pid {
                return pid;
            }
            assert!(start.elapsed() < WAIT, "timed out waiting for the pid of {task}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Launches `task`, waits until it runs and returns the pid of its process.
    pub async fn start_task(&mut self, task: &TaskInfo) -> u32 {
        self.master.launch_until(task, TaskState::Running).await;
        self.task_pid(task.task_id.as_str()).await
    }

    /// [`Scene::start_task`], then waits (as `what`) until the task printed `ready`.
    pub async fn start_until_ready(&mut self, task: &TaskInfo, what: &str) -> u32 {
        let pid = self.start_task(task).await;
        let stdout = sandbox_of(&self.env.data_dir(), task.task_id.as_str()).join("stdout");
        eventually(what, || {
            let stdout = stdout.clone();
            async move { std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("ready")) }
        })
        .await;
        pid
    }
}

/// A test's data dir and settings. Dropped last in every test (declare it before the runtime):
/// it then kills every task and removes every cgroup and file the test's agents created.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub cgroup_root: String,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new().prefix("atoll-agent-test-").tempdir().expect("tempdir");
        let cgroup_root =
            format!("atoll-test/agent-{}", dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("x"));
        TestEnv { dir, cgroup_root }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    pub fn options(&self, master: &str) -> AgentOptions {
        AgentSettings {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            master: Some(master.to_owned()),
            data_dir: Some(self.data_dir()),
            hostname: Some("test-node".into()),
            resources: Some("cpus:2;mem:1024;disk:1000;ports:[31000-31100]".into()),
            status_retry_interval: Some(Duration::from_millis(500)),
            default_kill_grace: Some(Duration::from_secs(3)),
            cgroup_root: Some(self.cgroup_root.clone()),
            executor: Some(std::env::current_exe().expect("test binary")),
            ..Default::default()
        }
        .resolve()
        .expect("resolve settings")
    }

    /// Cgroup directories of this test still present in any hierarchy.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroup_mounts().into_iter().map(|m| m.join(&self.cgroup_root)).filter(|p| p.exists()).collect()
    }

    #[track_caller]
    pub fn assert_no_cgroups(&self) {
        assert_eq!(self.leftover_cgroups(), Vec::<PathBuf>::new());
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let options = AgentSettings {
            data_dir: Some(self.data_dir()),
            cgroup_root: Some(self.cgroup_root.clone()),
            resources: Some("cpus:1;mem:1;disk:1".into()),
            executor: Some(PathBuf::from("/nonexistent")),
            ..Default::default()
        }
        .resolve();
        match options.map(|o| atoll_agent::cleanup(&o)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("cleanup: {e}"),
            Err(e) => eprintln!("cleanup settings: {e}"),
        }
        for dir in self.leftover_cgroups() {
            let _ = std::fs::remove_dir(&dir);
        }
        for mount in cgroup_mounts() {
            let _ = std::fs::remove_dir(mount.join("atoll-test"));
        }
    }
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            matches!(fields.get(sep + 1), Some(&"cgroup") | Some(&"cgroup2")).then(|| PathBuf::from(fields[4]))
        })
        .collect()
}

/// An agent running in the test's runtime.
pub struct TestAgent {
    stop: Option<oneshot::Sender<StopMode>>,
    handle: Option<tokio::task::JoinHandle<Result<(), AgentError>>>,
}

impl TestAgent {
    pub fn start(options: AgentOptions) -> TestAgent {
        let (stop, stopped) = oneshot::channel();
        let handle =
            tokio::spawn(atoll_agent::run(options, async move { stopped.await.unwrap_or(StopMode::LeaveTasks) }));
        TestAgent { stop: Some(stop), handle: Some(handle) }
    }

    pub async fn stop(&mut self, mode: StopMode) {
        self.request_stop(mode);
        self.join().await;
    }

    pub fn request_stop(&mut self, mode: StopMode) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(mode);
        }
    }

    pub async fn join(&mut self) {
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(Duration::from_secs(40), handle).await.expect("agent stops in time");
            result.expect("agent task").expect("agent run");
        }
    }
}

/// What a connection of the agent delivered; the number tells connections apart.
pub enum FromAgent {
    Message(u64, Box<apb::AgentMessage>),
    Closed(u64),
}

type Outbound = mpsc::Sender<Result<apb::MasterMessage, Status>>;

struct Registry {
    events: mpsc::UnboundedSender<FromAgent>,
    current: Arc<Mutex<Option<(u64, Outbound)>>>,
    connections: std::sync::atomic::AtomicU64,
}

#[tonic::async_trait]
impl AgentRegistry for Registry {
    type AttachStream = ReceiverStream<Result<apb::MasterMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<apb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let conn = self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((conn, tx));
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if events.send(FromAgent::Message(conn, Box::new(message))).is_err() {
                    return;
                }
            }
            let _ = events.send(FromAgent::Closed(conn));
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The master side of the agent protocol, driven by the test.
pub struct FakeMaster {
    pub url: String,
    events: mpsc::UnboundedReceiver<FromAgent>,
    current: Arc<Mutex<Option<(u64, Outbound)>>>,
    _shutdown: oneshot::Sender<()>,
    /// Every status update received, in order.
    pub statuses: Vec<TaskStatus>,
    /// What `Registered` carries (container networking).
    pub networks: Option<apb::Networks>,
    /// The cluster state the fake event stream serves: every change goes out as a snapshot.
    pub cluster: tokio::sync::watch::Sender<ClusterState>,
}

/// The master's event stream (`Operator/Subscribe`): a snapshot of [`FakeMaster::cluster`]
/// at every change.
struct FakeOperator {
    cluster: tokio::sync::watch::Receiver<ClusterState>,
}

#[tonic::async_trait]
impl opb::operator_server::Operator for FakeOperator {
    type SubscribeStream = ReceiverStream<Result<opb::StreamMessage, Status>>;

    async fn subscribe(
        &self,
        _request: Request<opb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut cluster = self.cluster.clone();
        tokio::spawn(async move {
            loop {
                let state = cluster.borrow_and_update().clone();
                let message = opb::StreamMessage::from(&StreamMessage::Snapshot { state });
                if tx.send(Ok(message)).await.is_err() || cluster.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_state(&self, _request: Request<opb::GetStateRequest>) -> Result<Response<opb::State>, Status> {
        Ok(Response::new(opb::State::from(&*self.cluster.borrow())))
    }
}

impl FakeMaster {
    pub async fn start() -> FakeMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake master");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (events_tx, events) = mpsc::unbounded_channel();
        let current = Arc::new(Mutex::new(None));
        let registry =
            Registry { events: events_tx, current: current.clone(), connections: std::sync::atomic::AtomicU64::new(0) };
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let (cluster, cluster_rx) = tokio::sync::watch::channel(ClusterState::default());
        let operator = opb::operator_server::OperatorServer::new(FakeOperator { cluster: cluster_rx });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AgentRegistryServer::new(registry))
                .add_service(operator)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        FakeMaster {
            url: format!("http://{addr}"),
            events,
            current,
            _shutdown: shutdown,
            statuses: Vec::new(),
            networks: None,
            cluster,
        }
    }

    /// The next event of the current connection; what earlier connections still deliver (a
    /// late close, buffered updates) is skipped, as are heartbeats.
    async fn next(&mut self, what: &str) -> FromAgent {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {what}; statuses so far: {:#?}", summary(&self.statuses))
                })
                .expect("fake master event channel");
            let current = self.current.lock().ok().and_then(|c| c.as_ref().map(|(n, _)| *n));
            let (FromAgent::Message(conn, _) | FromAgent::Closed(conn)) = &event;
            let heartbeat = matches!(&event, FromAgent::Message(_, m)
                if matches!(m.message, Some(apb::agent_message::Message::Heartbeat(_))));
            if heartbeat || Some(*conn) != current {
                continue;
            }
            return event;
        }
    }

    /// The next registration, skipping what the previous stream still delivered.
    pub async fn expect_register(&mut self) -> apb::Register {
        loop {
            if let FromAgent::Message(_, message) = self.next("a registration").await
                && let Some(apb::agent_message::Message::Register(r)) = message.message
            {
                return r;
            }
        }
    }

    /// Waits for a registration and accepts it with `agent_id`.
    pub async fn accept(&mut self, agent_id: &str) -> apb::Register {
        let register = self.expect_register().await;
        self.registered(agent_id);
        register
    }

    /// Tells the agent it is registered as `agent_id`.
    pub fn registered(&self, agent_id: &str) {
        self.send(ToAgent::Registered(apb::Registered {
            agent_id: Some(pb::AgentId { value: agent_id.into() }),
            heartbeat_interval_seconds: 1.0,
            networks: self.networks.clone(),
        }));
    }

    pub fn send(&self, message: ToAgent) {
        let sender =
            self.current.lock().ok().and_then(|c| c.as_ref().map(|(_, s)| s.clone())).expect("an agent stream is open");
        sender.try_send(Ok(apb::MasterMessage { message: Some(message) })).expect("send to agent");
    }

    /// Ends the current stream (as a master restart would).
    pub fn drop_stream(&self) {
        if let Ok(mut current) = self.current.lock() {
            current.take();
        }
    }

    /// The next status update.
    pub async fn status(&mut self) -> TaskStatus {
        match self.next("a status update").await {
            FromAgent::Message(_, message) => match message.message {
                Some(apb::agent_message::Message::StatusUpdate(update)) => {
                    let status = TaskStatus::try_from(update.status.expect("status")).expect("valid status");
                    self.statuses.push(status.clone());
                    status
                }
                other => panic!("expected a status update, got {other:?}"),
            },
            FromAgent::Closed(_) => panic!("the agent's stream closed while waiting for a status"),
        }
    }

    pub fn ack(&self, task: &TaskStatus) {
        self.send(ToAgent::Acknowledge(apb::AcknowledgeUpdate {
            framework_id: Some(pb::FrameworkId { value: FRAMEWORK.into() }),
            task_id: Some(pb::TaskId { value: task.task_id.0.clone() }),
            uuid: task.uuid.expect("uuid").as_bytes().to_vec(),
        }));
    }

    /// Acknowledges every update of `task` until one in `state` arrives (which is acknowledged
    /// too) and returns it.
    pub async fn until_state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        loop {
            let status = self.status().await;
            self.ack(&status);
            if status.task_id.as_str() != task {
                continue;
            }
            if status.state == state {
                return status;
            }
            assert!(
                !status.state.is_terminal(),
                "task {task} ended as {} ({:?}) while {state} was expected",
                status.state,
                status.message
            );
        }
    }

    /// Launches `task` and acknowledges its updates until one in `state` arrives.
    pub async fn launch_until(&mut self, task: &TaskInfo, state: TaskState) -> TaskStatus {
        self.send(launch(task));
        self.until_state(task.task_id.as_str(), state).await
    }

    /// Kills `task` and acknowledges its updates until one in `state` arrives.
    pub async fn kill_until(&mut self, task: &str, grace_secs: Option<f64>, state: TaskState) -> TaskStatus {
        self.send(kill(task, grace_secs));
        self.until_state(task, state).await
    }

    /// States received for `task`, in order, duplicates (resends) removed.
    pub fn states_of(&self, task: &str) -> Vec<TaskState> {
        let mut seen = Vec::new();
        let mut uuids = Vec::new();
        for s in self.statuses.iter().filter(|s| s.task_id.as_str() == task) {
            if !uuids.contains(&s.uuid) {
                uuids.push(s.uuid);
                seen.push(s.state);
            }
        }
        seen
    }
}

fn summary(statuses: &[TaskStatus]) -> Vec<String> {
    statuses.iter().map(|s| format!("{} {} {:?}", s.task_id, s.state, s.message)).collect()
}

/// A task that sleeps for five minutes.
pub fn sleeping(task_id: &str, resources: &str, grace_secs: Option<f64>) -> TaskInfo {
    task_info(task_id, CommandInfo::argv(vec!["sleep".into(), "300".into()]), resources, grace_secs)
}

pub fn task_info(task_id: &str, command: CommandInfo, resources: &str, grace_secs: Option<f64>) -> TaskInfo {
    TaskInfo {
        name: task_id.into(),
        task_id: TaskId::new(task_id),
        agent_id: atoll_proto::model::AgentId::new(AGENT_ID),
        resources: resources.parse::<Resources>().expect("resources"),
        command,
        labels: Labels::default(),
        discovery: None,
        kill_grace_period_secs: grace_secs,
        health_check: None,
        networks: Vec::new(),
    }
}

/// A launch from a framework that takes TASK_KILLING updates (as most do).
pub fn launch(task: &TaskInfo) -> ToAgent {
    launch_for(task, vec![Capability::TaskKillingState])
}

pub fn launch_for(task: &TaskInfo, capabilities: Vec<Capability>) -> ToAgent {
    let mut info = FrameworkInfo::named("test");
    info.capabilities = capabilities;
    let mut framework = pb::FrameworkInfo::from(&info);
    framework.id = Some(pb::FrameworkId { value: FRAMEWORK.into() });
    ToAgent::LaunchTask(apb::LaunchTask { framework: Some(framework), task: Some(task.into()) })
}

pub fn kill(task_id: &str, grace_secs: Option<f64>) -> ToAgent {
    kill_within(task_id, grace_secs, None)
}

/// A kill whose grace period is bounded by `max_grace_secs` (as a drain with a maximum sends).
pub fn kill_within(task_id: &str, grace_secs: Option<f64>, max_grace_secs: Option<f64>) -> ToAgent {
    ToAgent::KillTask(apb::KillTask {
        framework_id: Some(pb::FrameworkId { value: FRAMEWORK.into() }),
        task_id: Some(pb::TaskId { value: task_id.into() }),
        kill_policy: atoll_proto::convert::kill_policy_to_pb(grace_secs),
        max_grace_seconds: max_grace_secs,
    })
}

/// The agent's HTTP address, from its registration.
pub fn http_base(register: &apb::Register) -> String {
    format!("http://{}", register.info.as_ref().expect("info").address)
}

pub async fn get_json(url: &str) -> serde_json::Value {
    let response = reqwest::get(url).await.expect("GET");
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.expect("json")
}

/// Polls `cond` until it holds, at most [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// The checkpoint (`task.json`) in a run's sandbox, if it is there and parses.
pub fn checkpoint(sandbox: &Path) -> Option<serde_json::Value> {
    std::fs::read(sandbox.join("task.json")).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// The sandbox of the newest run of `task` under the data dir.
pub fn sandbox_of(data_dir: &Path, task: &str) -> PathBuf {
    let dir = data_dir.join("sandboxes").join(FRAMEWORK).join(task);
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    runs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    runs.pop().expect("a run directory")
}

/// An agent of the cluster as the fake master's event stream shows it: registered, active,
/// holding `subnets` of the pool `atoll` (gateways at their network addresses).
pub fn peer_agent(id: &str, addr: &str, subnets: &[&str]) -> atoll_proto::model::Agent {
    let address = format!("{addr}:5051").parse().expect("addr");
    let mut agent = atoll_proto::model::Agent::registered(
        atoll_proto::model::AgentId::new(id),
        id,
        address,
        atoll_proto::model::Time(1),
    );
    agent.subnets = subnets
        .iter()
        .map(|s| {
            let network: atoll_ipam::IpNetwork = s.parse().expect("cidr");
            atoll_proto::model::AgentSubnet { pool: "atoll".into(), network, gateway: network.network() }
        })
        .collect();
    agent
}
