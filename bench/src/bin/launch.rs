//! Launch throughput: tasks per second from offer to TASK_RUNNING through the master core
//! (allocator, offers, accept validation, task state machine, acknowledgements), with agents
//! and frameworks simulated in process. Run once with the core alone and once committing every
//! batch to the registry (redb, fsync), as the master does.
//!
//! `cargo run --release -p atoll-bench --bin launch [-- TASKS]`

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atoll_bench::machine;
use atoll_proto::model::{
    AgentId, AgentInfo, Attributes, CommandInfo, FrameworkId, FrameworkInfo, Labels, Resources, Source, TaskId,
    TaskInfo, TaskState, TaskStatus, Time,
};
use atoll_scheduler::registry::{Batch, Registry};
use atoll_scheduler_core::master::{
    AgentCommand, AgentRegistration, ConnId, Master, MasterConfig, Output, SchedulerCall, SchedulerEvent,
};

const AGENTS: u64 = 1_000;
const FRAMEWORKS: u64 = 10;
/// Inputs the master thread folds into one commit (as `atoll-scheduler`'s actor does).
const MAX_BATCH: usize = 512;

/// What a simulated peer sends the master.
enum Input {
    Call { conn: ConnId, call: SchedulerCall },
    Update { conn: ConnId, framework: FrameworkId, status: TaskStatus },
}

struct Run {
    tasks: u64,
    elapsed: Duration,
    events: u64,
    batches: u64,
}

fn simulate(target: u64, registry: Option<&Registry>) -> anyhow::Result<Run> {
    let config = MasterConfig { default_refuse: Duration::ZERO, ..MasterConfig::default() };
    let mut master = Master::new(config, "bench", Time(0));
    let mut agent_conn: BTreeMap<ConnId, AgentId> = BTreeMap::new();
    for i in 0..AGENTS {
        let conn = ConnId(i);
        let info = AgentInfo {
            hostname: format!("agent-{i}"),
            address: SocketAddr::from(([198, 19, 255, (i % 250) as u8 + 1], 5051)),
            resources: "cpus:16;mem:65536;disk:100000;ports:[31000-32000]".parse()?,
            attributes: Attributes::default(),
        };
        let id = master.register_agent(
            conn,
            AgentRegistration { agent_id: None, info, version: "bench".into(), tasks: vec![] },
            Time(0),
        )?;
        agent_conn.insert(conn, id);
    }
    let mut frameworks: BTreeMap<ConnId, FrameworkId> = BTreeMap::new();
    for i in 0..FRAMEWORKS {
        let conn = ConnId(1_000_000 + i);
        let id = master.subscribe(conn, None, FrameworkInfo::named(format!("fw-{i}")), false, Time(0))?;
        frameworks.insert(conn, id);
    }
    let task_resources: Resources = "cpus:0.1;mem:32".parse()?;
    let mut launched = 0u64;
    let mut running = 0u64;
    let mut events = 0u64;
    let mut batches = 0u64;
    let mut now = Time(1);
    let mut inputs: VecDeque<Input> = VecDeque::new();
    master.take_outputs();
    let started = Instant::now();
    while running < target {
        // One batch as the master thread takes it: up to MAX_BATCH inputs, a tick, one commit.
        now = Time(now.0 + 10);
        for input in inputs.drain(..inputs.len().min(MAX_BATCH)) {
            match input {
                Input::Call { conn, call } => master.framework_call(conn, &frameworks[&conn], call, now)?,
                Input::Update { conn, framework, status } => master.status_update(conn, framework, status, now)?,
            }
        }
        master.tick(now);
        let outputs = master.take_outputs();
        if outputs.is_empty() && inputs.is_empty() {
            anyhow::bail!("stalled at {running} running tasks");
        }
        if let Some(registry) = registry {
            let mut batch = Batch::default();
            for output in &outputs {
                if let Output::Event(event) = output {
                    batch.events.push(event);
                }
            }
            registry.commit(&batch)?;
        }
        batches += 1;
        for output in outputs {
            match output {
                Output::Event(_) => events += 1,
                Output::ToFramework { conn, event: SchedulerEvent::Offers(offers) } => {
                    for offer in offers {
                        let mut left = offer.resources.clone();
                        let mut launches = Vec::new();
                        while launched < target && left.contains(&task_resources) {
                            left.subtract(&task_resources);
                            launched += 1;
                            launches.push(TaskInfo {
                                name: "t".into(),
                                task_id: TaskId(format!("t{launched}")),
                                agent_id: offer.agent_id.clone(),
                                resources: task_resources.clone(),
                                command: CommandInfo::shell("true"),
                                labels: Labels::default(),
                                discovery: None,
                                kill_grace_period_secs: None,
                                health_check: None,
                                networks: Vec::new(),
                            });
                        }
                        let call = SchedulerCall::Accept {
                            offer_ids: vec![offer.id],
                            launches,
                            groups: Vec::new(),
                            refuse: None,
                        };
                        inputs.push_back(Input::Call { conn, call });
                    }
                }
                Output::ToFramework { conn, event: SchedulerEvent::Update(status) } => {
                    if status.state == TaskState::Running {
                        running += 1;
                    }
                    if let (Some(uuid), Some(agent_id)) = (status.uuid, status.agent_id.clone()) {
                        let call = SchedulerCall::Acknowledge { agent_id, task_id: status.task_id, uuid };
                        inputs.push_back(Input::Call { conn, call });
                    }
                }
                Output::ToAgent { conn, command: AgentCommand::Launch { framework, task } } => {
                    for state in [TaskState::Starting, TaskState::Running] {
                        let mut status = TaskStatus::new(task.task_id.clone(), state, Source::Executor, now);
                        status.uuid = Some(uuid::Uuid::new_v4());
                        status.agent_id = Some(agent_conn[&conn].clone());
                        inputs.push_back(Input::Update { conn, framework: framework.id.clone(), status });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Run { tasks: running, elapsed: started.elapsed(), events, batches })
}

fn main() -> anyhow::Result<()> {
    let target: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(50_000);
    println!(
        "launch throughput: {target} tasks (cpus:0.1;mem:32) on {AGENTS} simulated agents, {FRAMEWORKS} frameworks"
    );
    println!("machine: {}", machine());
    println!();
    println!("{:<26} {:>10} {:>12} {:>12} {:>10} {:>12}", "mode", "tasks", "elapsed", "tasks/s", "batches", "events/s");
    let dir = tempfile::tempdir()?;
    let registry = Registry::open(dir.path(), 100_000)?;
    for (mode, registry) in [("core only", None), ("core + registry (redb)", Some(&registry))] {
        let run = simulate(target, registry)?;
        let secs = run.elapsed.as_secs_f64();
        println!(
            "{:<26} {:>10} {:>10.2} s {:>12.0} {:>10} {:>12.0}",
            mode,
            run.tasks,
            secs,
            run.tasks as f64 / secs,
            run.batches,
            run.events as f64 / secs
        );
    }
    Ok(())
}
