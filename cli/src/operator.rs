//! Operator commands: `run`, `node`, `task`, `events`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context as _, anyhow, bail};
use atoll_proto::model::{Agent, Event, EventKind, StreamMessage, Task, TaskState};
use clap::{Args, Subcommand};
use futures::StreamExt;

use crate::client::Client;
use crate::table;

pub struct Context {
    pub master: String,
    pub json: bool,
}

impl Context {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.master)
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Task name (the id is derived from it)
    #[arg(long)]
    name: Option<String>,
    /// CPUs for the task
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory in MiB (the limit: exceeding it is an OOM kill)
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Disk in MiB
    #[arg(long, default_value_t = 0.0)]
    disk: f64,
    /// Host ports to allocate (PORT0, PORT1, …)
    #[arg(long, default_value_t = 0)]
    ports: u32,
    /// Environment variable NAME=VALUE (repeatable)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL when killed
    #[arg(long)]
    kill_grace: Option<f64>,
    /// Print the task id and return at once; the task keeps running
    #[arg(long)]
    detach: bool,
    /// A shell command line (run by /bin/sh -c) instead of an argv
    #[arg(long, conflicts_with = "argv")]
    shell: Option<String>,
    /// The program and its arguments, run as given (no shell)
    #[arg(last = true)]
    argv: Vec<String>,
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List nodes
    List,
    /// Show one node
    Show { id: String },
    /// Stop offering the node and kill its tasks gracefully
    Drain {
        id: String,
        /// The longest grace period its tasks get, in seconds (their own when shorter)
        #[arg(long, value_name = "SECS")]
        max_grace: Option<f64>,
        /// Mark the node gone once drained (its tasks gone; it may not come back)
        #[arg(long)]
        mark_gone: bool,
    },
    /// Stop offering the node; its tasks keep running
    Deactivate { id: String },
    /// Offer a drained or deactivated node again
    Reactivate { id: String },
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// List tasks
    List {
        /// Only tasks in this state (e.g. running, TASK_FAILED)
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one task
    Show { id: String },
    /// Print a task's output
    Log {
        id: String,
        /// Keep printing new output until the task ends
        #[arg(long, short)]
        follow: bool,
        /// Print stderr instead of stdout
        #[arg(long)]
        stderr: bool,
    },
    /// Kill a task (SIGTERM, its grace period, then SIGKILL)
    Kill { id: String },
}

#[derive(Args)]
pub struct EventsArgs {
    /// Resume after this event index (default: start from a snapshot)
    #[arg(long)]
    since: Option<u64>,
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn short(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn scalar(resources: &atoll_proto::model::Resources, name: &str) -> String {
    resources.scalar(name).to_string()
}

pub async fn node(ctx: &Context, command: NodeCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        NodeCommand::List => {
            let agents: Vec<Agent> = client.get("/v1/nodes").await?;
            if ctx.json {
                return print_json(&agents);
            }
            let rows = agents
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.hostname.clone(),
                        a.address.to_string(),
                        a.state.name().to_owned(),
                        format!("{}/{}", scalar(&a.used, "cpus"), scalar(&a.resources, "cpus")),
                        format!("{}/{}", scalar(&a.used, "mem"), scalar(&a.resources, "mem")),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["ID", "HOSTNAME", "ADDRESS", "STATE", "CPUS", "MEM"], &rows);
        }
        NodeCommand::Show { id } => {
            let agent: Agent = client.get(&format!("/v1/nodes/{id}")).await?;
            if ctx.json {
                return print_json(&agent);
            }
            print_agent(&agent);
        }
        NodeCommand::Drain { id, max_grace, mark_gone } => {
            if let Some(secs) = max_grace
                && !(secs.is_finite() && secs >= 0.0)
            {
                bail!("--max-grace: {secs} is not a number of seconds >= 0");
            }
            let body = serde_json::json!({ "max_grace_period_secs": max_grace, "mark_gone": mark_gone });
            maintain(ctx, &client, &id, "drain", &body).await?
        }
        NodeCommand::Deactivate { id } => maintain(ctx, &client, &id, "deactivate", &serde_json::json!({})).await?,
        NodeCommand::Reactivate { id } => maintain(ctx, &client, &id, "reactivate", &serde_json::json!({})).await?,
    }
    Ok(())
}

async fn maintain(
    ctx: &Context,
    client: &Client,
    id: &str,
    action: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let agent: Agent = client.post(&format!("/v1/nodes/{id}/{action}"), body).await?;
    if ctx.json {
        return print_json(&agent);
    }
    println!("{} is {}", agent.id, agent.state.name());
    Ok(())
}

fn print_agent(agent: &Agent) {
    println!("id:          {}", agent.id);
    println!("hostname:    {}", agent.hostname);
    println!("address:     {}", agent.address);
    let asked = match (agent.drain, agent.deactivated) {
        (true, _) => " (drain requested)",
        (false, true) => " (deactivated)",
        (false, false) => "",
    };
    println!("state:       {}{asked}", agent.state.name());
    println!("resources:   {}", agent.resources);
    println!("used:        {}", agent.used);
    println!("attributes:  {}", agent.attributes);
    println!("version:     {}", agent.version);
}

pub async fn task(ctx: &Context, command: TaskCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match command {
        TaskCommand::List { state } => {
            let path = match state {
                Some(s) => format!("/v1/tasks?state={}", TaskState::from_name(&s).map(|s| s.name()).unwrap_or(&s)),
                None => "/v1/tasks".to_owned(),
            };
            let tasks: Vec<Task> = client.get(&path).await?;
            if ctx.json {
                return print_json(&tasks);
            }
            let agents: Vec<Agent> = client.get("/v1/nodes").await?;
            let hostnames: BTreeMap<_, _> = agents.iter().map(|a| (a.id.clone(), a.hostname.clone())).collect();
            let rows = tasks
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.state.name().to_owned(),
                        hostnames.get(&t.agent_id).cloned().unwrap_or_else(|| t.agent_id.to_string()),
                        t.ports.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
                        t.healthy.map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
                        short(&t.command.display(), 40),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["ID", "STATE", "NODE", "PORTS", "HEALTHY", "COMMAND"], &rows);
        }
        TaskCommand::Show { id } => {
            let task: Task = client.get(&format!("/v1/tasks/{id}")).await?;
            if ctx.json {
                return print_json(&task);
            }
            print_task(&task);
        }
        TaskCommand::Log { id, follow, stderr } => {
            let task: Task = client.get(&format!("/v1/tasks/{id}")).await?;
            copy_log(&client, &task, if stderr { "stderr" } else { "stdout" }, follow, &mut std::io::stdout()).await?;
        }
        TaskCommand::Kill { id } => {
            let task: Task = client.post(&format!("/v1/tasks/{id}/kill"), &serde_json::json!({})).await?;
            if ctx.json {
                return print_json(&task);
            }
            println!("killing {}", task.id);
        }
    }
    Ok(())
}

fn print_task(task: &Task) {
    println!("id:          {}", task.id);
    println!("name:        {}", task.name);
    println!("framework:   {}", task.framework_id);
    println!("agent:       {}", task.agent_id);
    println!("state:       {}", task.state.name());
    if let Some(reason) = task.status.reason {
        println!("reason:      {}", reason.name());
    }
    if let Some(message) = &task.status.message {
        println!("message:     {message}");
    }
    if let Some(code) = task.status.exit_code {
        println!("exit code:   {code}");
    }
    println!("command:     {}", task.command.display());
    println!("resources:   {}", task.resources);
    if !task.ports.is_empty() {
        println!("ports:       {}", task.ports.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    }
    if let Some(healthy) = task.healthy {
        println!("healthy:     {healthy}");
    }
}

/// Copies a task's stdout or stderr from its agent, following it if asked.
async fn copy_log(
    client: &Client,
    task: &Task,
    file: &str,
    follow: bool,
    out: &mut (impl Write + Send),
) -> anyhow::Result<()> {
    let agent: Agent = client.get(&format!("/v1/nodes/{}", task.agent_id)).await?;
    let agent_client = Client::new(&format!("http://{}", agent.address))?;
    let path = format!("/v1/tasks/{}/logs/{file}?framework_id={}&follow={follow}", task.id, task.framework_id);
    let response =
        agent_client.stream(&path).await.with_context(|| format!("reading {file} from {}", agent.address))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading the log stream")?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

/// Reads Server-Sent Events and yields the stream messages they carry.
pub struct SseReader {
    buffer: Vec<u8>,
    data: String,
}

impl SseReader {
    pub fn new() -> SseReader {
        SseReader { buffer: Vec::new(), data: String::new() }
    }

    /// Feeds bytes; returns the messages completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<StreamMessage>> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = std::mem::take(&mut self.data);
                    messages.push(serde_json::from_str(&data).with_context(|| format!("bad event data: {data}"))?);
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
            }
        }
        Ok(messages)
    }
}

pub async fn events(ctx: &Context, args: EventsArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let path = match args.since {
        Some(since) => format!("/v1/events?since={since}"),
        None => "/v1/events".to_owned(),
    };
    let response = client.stream(&path).await?;
    let mut body = response.bytes_stream();
    let mut reader = SseReader::new();
    while let Some(chunk) = body.next().await {
        for message in reader.feed(&chunk.context("reading the event stream")?)? {
            if ctx.json {
                println!("{}", serde_json::to_string(&message)?);
            } else {
                print_message(&message);
            }
        }
    }
    Ok(())
}

fn print_message(message: &StreamMessage) {
    match message {
        StreamMessage::Snapshot { state } => println!(
            "{:>8}  SNAPSHOT          {} agents, {} frameworks, {} tasks",
            state.index,
            state.agents.len(),
            state.frameworks.len(),
            state.tasks.len()
        ),
        StreamMessage::Event { event } => println!("{:>8}  {:<16}  {}", event.index, event.kind.name(), summary(event)),
        StreamMessage::FellBehind { requested, oldest_retained } => {
            println!(
                "          FELL_BEHIND       asked for events after {requested}; the oldest kept is {oldest_retained}"
            )
        }
        StreamMessage::Heartbeat => {}
    }
}

fn summary(event: &Event) -> String {
    match &event.kind {
        EventKind::AgentAdded { agent } | EventKind::AgentUpdated { agent } => {
            format!("{} {} {}", agent.id, agent.hostname, agent.state.name())
        }
        EventKind::AgentRemoved { agent_id } => agent_id.to_string(),
        EventKind::FrameworkAdded { framework } | EventKind::FrameworkUpdated { framework } => {
            format!(
                "{} {}{}",
                framework.id,
                framework.info.name,
                if framework.connected { "" } else { " (disconnected)" }
            )
        }
        EventKind::FrameworkRemoved { framework_id } => framework_id.to_string(),
        EventKind::TaskAdded { task } | EventKind::TaskUpdated { task } => {
            let mut text = format!("{} {}", task.id, task.state.name());
            if let Some(message) = &task.status.message {
                text.push_str(&format!(" ({message})"));
            }
            text
        }
        EventKind::AppUpdated { app } => format!("{} instances={}", app.id, app.definition.instances),
        EventKind::AppRemoved { app_id } => app_id.to_string(),
        EventKind::DeploymentUpdated { deployment } => {
            format!("{} {:?} {}", deployment.id, deployment.action, deployment.app_id)
        }
        EventKind::DeploymentFinished { deployment, outcome } => {
            format!("{} {} {:?}", deployment.id, deployment.app_id, outcome)
        }
        EventKind::PoolAdded { pool } | EventKind::PoolUpdated { pool } => {
            let cidrs: Vec<String> = pool.cidrs.iter().map(ToString::to_string).collect();
            format!("{} {}", pool.name, cidrs.join(","))
        }
        EventKind::PoolRemoved { name } => name.clone(),
        EventKind::VipAssigned { vip } | EventKind::VipReleased { vip } => {
            format!("{}.{} {}", vip.name, vip.framework, vip.address)
        }
    }
}

/// `atoll run`: submit, then (unless detached) follow the task's states and output and
/// return its exit code. Ctrl-C kills the task and keeps following until it ends.
pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<i32> {
    let client = ctx.client()?;
    let mut env = serde_json::Map::new();
    for item in &args.env {
        let (name, value) = item.split_once('=').ok_or_else(|| anyhow!("--env: `{item}` is not NAME=VALUE"))?;
        env.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    let mut request = serde_json::json!({
        "cpus": args.cpus,
        "mem": args.mem,
        "disk": args.disk,
        "ports": args.ports,
        "env": env,
    });
    match (&args.shell, args.argv.is_empty()) {
        (Some(line), true) => request["shell"] = serde_json::Value::String(line.clone()),
        (None, false) => request["argv"] = serde_json::json!(args.argv),
        (Some(_), false) => bail!("give either --shell or a command after --, not both"),
        (None, true) => bail!("nothing to run: give a command after -- (or --shell 'LINE')"),
    }
    if let Some(name) = &args.name {
        request["name"] = serde_json::Value::String(name.clone());
    }
    if let Some(grace) = args.kill_grace {
        request["kill_grace_period_secs"] = serde_json::json!(grace);
    }
    let accepted: serde_json::Value = client.post("/v1/run", &request).await?;
    let task_id = accepted["task_id"].as_str().ok_or_else(|| anyhow!("the master's answer has no task_id"))?.to_owned();
    let framework_id = accepted["framework_id"].as_str().unwrap_or_default().to_owned();
    let index = accepted["index"].as_u64().unwrap_or(0);
    if args.detach {
        if ctx.json {
            print_json(&accepted)?;
        } else {
            println!("{task_id}");
        }
        return Ok(0);
    }
    eprintln!("atoll: task {task_id} submitted");
    follow_run(&client, &task_id, &framework_id, index).await
}

async fn follow_run(client: &Client, task_id: &str, framework_id: &str, index: u64) -> anyhow::Result<i32> {
    let response = client.stream(&format!("/v1/events?since={index}")).await?;
    let mut events = response.bytes_stream();
    let mut reader = SseReader::new();
    let mut log: Option<tokio::task::JoinHandle<()>> = None;
    let mut err_log: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_state = None;
    let mut killed = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let chunk = tokio::select! {
            chunk = events.next() => chunk,
            _ = &mut ctrl_c, if !killed => {
                killed = true;
                eprintln!("atoll: killing {task_id}");
                let _: Result<Task, _> = client.post(&format!("/v1/tasks/{task_id}/kill"), &serde_json::json!({})).await;
                continue;
            }
        };
        let Some(chunk) = chunk else { bail!("the event stream ended before the task did") };
        for message in reader.feed(&chunk.context("reading the event stream")?)? {
            let task = match message {
                StreamMessage::Event { event } => match event.kind {
                    EventKind::TaskAdded { task } | EventKind::TaskUpdated { task } => task,
                    _ => continue,
                },
                StreamMessage::Snapshot { state } => {
                    match state
                        .tasks
                        .into_iter()
                        .find(|t| t.id.as_str() == task_id && t.framework_id.as_str() == framework_id)
                    {
                        Some(task) => task,
                        None => continue,
                    }
                }
                _ => continue,
            };
            if task.id.as_str() != task_id || task.framework_id.as_str() != framework_id {
                continue;
            }
            if last_state != Some(task.state) {
                last_state = Some(task.state);
                let mut line = format!("atoll: {} {}", task_id, task.state.name());
                if let Some(message) = &task.status.message {
                    line.push_str(&format!(": {message}"));
                }
                eprintln!("{line}");
            }
            if log.is_none() && (task.state == TaskState::Running || task.state.is_terminal()) {
                log = Some(spawn_log(client, &task, "stdout"));
                err_log = Some(spawn_log(client, &task, "stderr"));
            }
            if task.state.is_terminal() {
                for handle in [log.take(), err_log.take()].into_iter().flatten() {
                    let _ = handle.await;
                }
                return Ok(exit_code_of(&task));
            }
        }
    }
}

fn spawn_log(client: &Client, task: &Task, file: &'static str) -> tokio::task::JoinHandle<()> {
    let base = client.url("");
    let task = task.clone();
    tokio::spawn(async move {
        let Ok(client) = Client::new(&base) else { return };
        let result = if file == "stdout" {
            copy_log(&client, &task, file, true, &mut std::io::stdout()).await
        } else {
            copy_log(&client, &task, file, true, &mut std::io::stderr()).await
        };
        if let Err(e) = result {
            eprintln!("atoll: {file} of {}: {e:#}", task.id);
        }
    })
}

/// The shell convention: the exit code, or 128 + the signal.
fn exit_code_of(task: &Task) -> i32 {
    match (task.state, task.status.exit_code, task.status.exit_signal) {
        (TaskState::Finished, _, _) => 0,
        (_, Some(code), _) => code,
        (_, None, Some(signal)) => 128 + signal,
        (TaskState::Killed, None, None) => 128 + 15,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_reader_splits_events_across_chunks() {
        let mut reader = SseReader::new();
        let text = "event: HEARTBEAT\ndata: {\"type\":\"HEARTBEAT\"}\n\n: comment\nevent: x\nda";
        let first = reader.feed(text.as_bytes()).unwrap();
        assert_eq!(first, vec![StreamMessage::Heartbeat]);
        let second = reader.feed(b"ta: {\"type\":\"HEARTBEAT\"}\r\n\r\n").unwrap();
        assert_eq!(second, vec![StreamMessage::Heartbeat]);
    }
}
