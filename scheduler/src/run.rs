//! The built-in framework behind `atoll run` (like mesos-execute, but hosted by the master so
//! a detached task outlives the CLI). It takes one-off task requests, queues them (the queue
//! survives master restarts), and launches each on the first offer it fits, through the same
//! offer API every framework uses.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use atoll_proto::model::{AgentState, CommandInfo, FrameworkId, Labels, Resources, TaskId, TaskInfo};
use atoll_scheduler_core::master::{OfferView, SchedulerCall, SchedulerEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::actor::MasterHandle;
use crate::hosted::{Identity, Subscription};

const FRAMEWORK_NAME: &str = "atoll-run";
const META_FRAMEWORK_ID: &str = "hosted.run.framework_id";
const META_QUEUE: &str = "hosted.run.queue";

/// A one-off task as `POST /v1/run` takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Task name (default `run`); the task id is derived from it.
    #[serde(default)]
    pub name: Option<String>,
    /// A shell command line (`/bin/sh -c`); exclusive with `argv`.
    #[serde(default)]
    pub shell: Option<String>,
    /// A program and its arguments, run directly; exclusive with `shell`.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// MiB.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// MiB.
    #[serde(default)]
    pub disk: f64,
    /// Host ports to allocate (exposed as PORT0…).
    #[serde(default)]
    pub ports: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds between SIGTERM and SIGKILL when killed.
    #[serde(default)]
    pub kill_grace_period_secs: Option<f64>,
}

fn default_cpus() -> f64 {
    0.1
}

fn default_mem() -> f64 {
    32.0
}

/// The answer to a run request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunAccepted {
    pub task_id: TaskId,
    pub framework_id: FrameworkId,
    /// The event index when the request was queued: every event about the task comes after.
    pub index: u64,
}

/// Why a run request was refused; the request changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(String),
    #[error("no agent can ever fit {wanted} (largest: {largest})")]
    Unsatisfiable { wanted: String, largest: String },
    #[error("the run framework is not available: {0}")]
    Unavailable(String),
}

/// A queued task, before it is launched.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    task_id: TaskId,
    name: String,
    command: CommandInfo,
    resources: Resources,
    ports: u32,
    labels: Labels,
    kill_grace_period_secs: Option<f64>,
}

impl RunRequest {
    fn into_pending(self) -> Result<Pending, RunError> {
        let invalid = |m: String| RunError::Invalid(m);
        let name = self.name.unwrap_or_else(|| "run".into());
        let name = name.trim().to_owned();
        if name.is_empty() || name.len() > 200 {
            return Err(invalid("name: must be 1 to 200 characters".into()));
        }
        let mut command = match (self.shell, self.argv) {
            (Some(line), None) => CommandInfo::shell(line),
            (None, Some(argv)) if !argv.is_empty() => CommandInfo::argv(argv),
            (None, Some(_)) => return Err(invalid("argv: must name a program".into())),
            (Some(_), Some(_)) => return Err(invalid("shell, argv: give one, not both".into())),
            (None, None) => return Err(invalid("shell or argv: one is required".into())),
        };
        command.environment = self.env.into_iter().collect();
        if let Some(problem) = command.problem() {
            return Err(invalid(problem));
        }
        for (field, value) in [("cpus", self.cpus), ("mem", self.mem), ("disk", self.disk)] {
            if !value.is_finite() || value < 0.0 {
                return Err(invalid(format!("{field}: must be a number >= 0")));
            }
        }
        if self.cpus == 0.0 && self.mem == 0.0 {
            return Err(invalid("cpus, mem: a task must use some cpus or mem".into()));
        }
        if self.ports > 1000 {
            return Err(invalid("ports: at most 1000".into()));
        }
        if self.kill_grace_period_secs.is_some_and(|g| !g.is_finite() || g < 0.0) {
            return Err(invalid("kill_grace_period_secs: must be a number >= 0".into()));
        }
        let resources =
            Resources::new().with_scalar("cpus", self.cpus).with_scalar("mem", self.mem).with_scalar("disk", self.disk);
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Ok(Pending {
            task_id: TaskId(format!("{slug}.{}", &suffix[..12])),
            name,
            command,
            resources,
            ports: self.ports,
            labels: Labels(self.labels),
            kill_grace_period_secs: self.kill_grace_period_secs,
        })
    }
}

struct Request {
    request: RunRequest,
    reply: oneshot::Sender<Result<RunAccepted, RunError>>,
}

/// Talks to the run framework.
#[derive(Clone)]
pub struct RunHandle {
    requests: mpsc::Sender<Request>,
}

impl RunHandle {
    pub async fn run(&self, request: RunRequest) -> Result<RunAccepted, RunError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { request, reply }).await.map_err(|_| RunError::Unavailable("stopped".into()))?;
        answer.await.map_err(|_| RunError::Unavailable("stopped".into()))?
    }
}

/// Starts the run framework on the master.
pub fn spawn(handle: MasterHandle) -> RunHandle {
    let (requests, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut framework = RunFramework::load(handle);
        framework.serve(rx).await;
    });
    RunHandle { requests }
}

struct RunFramework {
    handle: MasterHandle,
    identity: Identity,
    queue: VecDeque<Pending>,
}

impl RunFramework {
    fn load(handle: MasterHandle) -> RunFramework {
        let identity = Identity::load(&handle, FRAMEWORK_NAME, META_FRAMEWORK_ID);
        let queue = handle
            .registry()
            .meta(META_QUEUE)
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        RunFramework { handle, identity, queue }
    }

    async fn serve(&mut self, mut requests: mpsc::Receiver<Request>) {
        let mut retry = Duration::from_millis(100);
        loop {
            let Some(mut subscription) = self.subscribe().await else {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            };
            retry = Duration::from_millis(100);
            loop {
                tokio::select! {
                    event = subscription.events.recv() => match event {
                        Some(event) => self.on_event(&subscription, event).await,
                        None => break,
                    },
                    request = requests.recv() => match request {
                        Some(Request { request, reply }) => {
                            let answer = self.accept_request(&subscription, request).await;
                            let _ = reply.send(answer);
                        }
                        None => return,
                    },
                }
            }
            self.handle.framework_closed(subscription.conn);
        }
    }

    async fn subscribe(&mut self) -> Option<Subscription> {
        let subscription = self.identity.subscribe(&self.handle).await?;
        if self.queue.is_empty() {
            let call = SchedulerCall::Suppress;
            let _ = self.handle.framework_call(subscription.conn, subscription.framework_id.clone(), call).await;
        }
        Some(subscription)
    }

    async fn save_queue(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.queue) {
            let _ = self.handle.put_meta(META_QUEUE.into(), bytes).await;
        }
    }

    async fn accept_request(&mut self, sub: &Subscription, request: RunRequest) -> Result<RunAccepted, RunError> {
        let pending = request.into_pending()?;
        let state = self.handle.state().await.map_err(|e| RunError::Unavailable(e.to_string()))?;
        let usable: Vec<&atoll_proto::model::Agent> =
            state.agents.iter().filter(|a| !matches!(a.state, AgentState::Gone)).collect();
        if !usable.is_empty() {
            let fits = |a: &&atoll_proto::model::Agent| {
                a.resources.contains(&pending.resources) && a.resources.ranges("ports").len() >= pending.ports as u64
            };
            if !usable.iter().any(fits) {
                let largest = usable
                    .iter()
                    .max_by_key(|a| a.resources.scalar("cpus"))
                    .map(|a| a.resources.to_string())
                    .unwrap_or_default();
                let mut wanted = pending.resources.to_string();
                if pending.ports > 0 {
                    wanted.push_str(&format!(";{} ports", pending.ports));
                }
                return Err(RunError::Unsatisfiable { wanted, largest });
            }
        }
        let accepted = RunAccepted {
            task_id: pending.task_id.clone(),
            framework_id: sub.framework_id.clone(),
            index: self.handle.last_index(),
        };
        self.queue.push_back(pending);
        self.save_queue().await;
        let _ = self.handle.framework_call(sub.conn, sub.framework_id.clone(), SchedulerCall::Revive).await;
        Ok(accepted)
    }

    async fn on_event(&mut self, sub: &Subscription, event: SchedulerEvent) {
        match event {
            SchedulerEvent::Offers(offers) => self.on_offers(sub, offers).await,
            SchedulerEvent::Update(status) => {
                if let (Some(uuid), Some(agent_id)) = (status.uuid, status.agent_id.clone()) {
                    let ack = SchedulerCall::Acknowledge { agent_id, task_id: status.task_id.clone(), uuid };
                    let _ = self.handle.framework_call(sub.conn, sub.framework_id.clone(), ack).await;
                }
            }
            SchedulerEvent::Error(message) => tracing::warn!("run framework: {message}"),
            SchedulerEvent::Subscribed { .. } | SchedulerEvent::Rescind(_) | SchedulerEvent::Failure { .. } => {}
        }
    }

    async fn on_offers(&mut self, sub: &Subscription, offers: Vec<OfferView>) {
        let mut calls = Vec::new();
        let mut launched_any = false;
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut launches = Vec::new();
            let mut keep = VecDeque::new();
            while let Some(pending) = self.queue.pop_front() {
                match place(&pending, &offer, &left) {
                    Some(task) => {
                        left.subtract(&task.resources);
                        launches.push(task);
                    }
                    None => keep.push_back(pending),
                }
            }
            self.queue = keep;
            calls.push(if launches.is_empty() {
                let refuse = if self.queue.is_empty() { Duration::from_secs(60) } else { Duration::from_secs(1) };
                SchedulerCall::Decline { offer_ids: vec![offer.id.clone()], refuse: Some(refuse) }
            } else {
                launched_any = true;
                SchedulerCall::Accept {
                    offer_ids: vec![offer.id.clone()],
                    launches,
                    groups: Vec::new(),
                    refuse: Some(Duration::from_secs(1)),
                }
            });
        }
        for call in calls {
            if let Err(e) = self.handle.framework_call(sub.conn, sub.framework_id.clone(), call).await {
                tracing::warn!("run framework: answering an offer failed: {e}");
            }
        }
        // Saved after the launches: a crash in between re-launches a queued task at worst,
        // and the master refuses that as a duplicate while the first one lives; saving first
        // could lose the request instead.
        if launched_any {
            self.save_queue().await;
        }
        if self.queue.is_empty() {
            let _ = self.handle.framework_call(sub.conn, sub.framework_id.clone(), SchedulerCall::Suppress).await;
        }
    }
}

/// The task for `pending` on this offer, if it fits in what is left of it.
fn place(pending: &Pending, offer: &OfferView, left: &Resources) -> Option<TaskInfo> {
    if !left.contains(&pending.resources) {
        return None;
    }
    let mut resources = pending.resources.clone();
    if pending.ports > 0 {
        let ports = left.ranges("ports").take_lowest(pending.ports as u64)?;
        resources.add_ranges("ports", &ports);
    }
    Some(TaskInfo {
        name: pending.name.clone(),
        task_id: pending.task_id.clone(),
        agent_id: offer.agent_id.clone(),
        resources,
        command: pending.command.clone(),
        labels: pending.labels.clone(),
        discovery: None,
        kill_grace_period_secs: pending.kill_grace_period_secs,
        health_check: None,
        networks: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_proto::model::{AgentId, Attributes, OfferId};

    fn request(json: &str) -> Result<Pending, String> {
        let request: RunRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        request.into_pending().map_err(|e| e.to_string())
    }

    #[test]
    fn requests_are_validated_naming_the_field() {
        assert!(request(r#"{"shell": "echo hi"}"#).is_ok());
        assert!(request(r#"{"argv": ["/bin/echo", "hi"], "ports": 2}"#).is_ok());
        assert!(request(r#"{"shel": "x"}"#).unwrap_err().contains("shel"));
        assert!(request(r#"{}"#).unwrap_err().starts_with("shell or argv"));
        assert!(request(r#"{"shell": "x", "argv": ["y"]}"#).unwrap_err().starts_with("shell, argv"));
        assert!(request(r#"{"argv": []}"#).unwrap_err().starts_with("argv"));
        assert!(request(r#"{"shell": "x", "cpus": -1}"#).unwrap_err().starts_with("cpus"));
        assert!(request(r#"{"shell": "x", "env": {"A=B": "c"}}"#).unwrap_err().contains("A=B"));
        assert!(request(r#"{"shell": "x", "ports": 5000}"#).unwrap_err().starts_with("ports"));
    }

    #[test]
    fn task_ids_are_unique_and_derived_from_the_name() {
        let a = request(r#"{"name": "My Job", "shell": "true"}"#).unwrap();
        let b = request(r#"{"name": "My Job", "shell": "true"}"#).unwrap();
        assert!(a.task_id.as_str().starts_with("my-job."));
        assert_ne!(a.task_id, b.task_id);
    }

    #[test]
    fn placement_takes_the_lowest_free_ports() {
        let pending = request(r#"{"shell": "true", "ports": 2, "cpus": 1, "mem": 10}"#).unwrap();
        let offer = OfferView {
            id: OfferId::new("o"),
            framework_id: FrameworkId::new("f"),
            agent_id: AgentId::new("a"),
            hostname: "h".into(),
            agent_address: "127.0.0.1:5051".parse().unwrap(),
            attributes: Attributes::default(),
            resources: "cpus:2;mem:100;ports:[31005-31010]".parse().unwrap(),
            role: "*".into(),
        };
        let task = place(&pending, &offer, &offer.resources).unwrap();
        assert_eq!(task.resources.ranges("ports").pairs(), &[(31005, 31006)]);
        let small: Resources = "cpus:0.5;mem:100;ports:[31005-31010]".parse().unwrap();
        assert!(place(&pending, &offer, &small).is_none());
    }
}
