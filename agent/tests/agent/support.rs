//! Test fixtures: a fake master (a real tonic `AgentRegistry` server the test drives), an agent
//! running in the test's runtime, and a guard that kills and removes whatever a test's agent
//! left behind, also when the test panics.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apb::agent_registry_server::{AgentRegistry, AgentRegistryServer};
use apb::master_message::Message as ToAgent;
use atoll_agent::{AgentError, AgentOptions, AgentSettings, StopMode};
use atoll_proto::model::{CommandInfo, FrameworkInfo, Labels, Resources, TaskId, TaskInfo, TaskState, TaskStatus};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);
pub const AGENT_ID: &str = "agent-test-1";
pub const FRAMEWORK: &str = "fw-1";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Root-only tests must not pass silently when they did not run.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("ATOLL_ALLOW_UNPRIVILEGED_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("skipping {test}: needs root (cgroups)");
        return false;
    }
    panic!("{test} needs root (cgroups); set ATOLL_ALLOW_UNPRIVILEGED_SKIP=1 to skip it");
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
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AgentRegistryServer::new(registry))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        FakeMaster { url: format!("http://{addr}"), events, current, _shutdown: shutdown, statuses: Vec::new() }
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
        self.send(ToAgent::Registered(apb::Registered {
            agent_id: Some(pb::AgentId { value: agent_id.into() }),
            heartbeat_interval_seconds: 1.0,
        }));
        register
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
    }
}

pub fn launch(task: &TaskInfo) -> ToAgent {
    let mut framework = pb::FrameworkInfo::from(&FrameworkInfo::named("test"));
    framework.id = Some(pb::FrameworkId { value: FRAMEWORK.into() });
    ToAgent::LaunchTask(apb::LaunchTask { framework: Some(framework), task: Some(task.into()) })
}

pub fn kill(task_id: &str, grace_secs: Option<f64>) -> ToAgent {
    ToAgent::KillTask(apb::KillTask {
        framework_id: Some(pb::FrameworkId { value: FRAMEWORK.into() }),
        task_id: Some(pb::TaskId { value: task_id.into() }),
        kill_policy: atoll_proto::convert::kill_policy_to_pb(grace_secs),
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
