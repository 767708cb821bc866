//! DNS propagation: the time from a task's TASK_RUNNING status update leaving its agent to its
//! name answering in DNS, end to end through the real master and the real DNS daemon, both in
//! this process, with a simulated agent speaking the agent protocol over gRPC.
//!
//! `cargo run --release -p atoll-bench --bin dns-propagation [-- --tasks 1000]`
//!
//! What one sample includes: the status update on the agent's gRPC stream → the master's
//! actor (task state machine) → its registry commit (redb, fsync) → the event broadcast → the
//! DNS daemon's event-stream subscription (gRPC) → the projection → the zone update → a UDP
//! query on loopback that finds the name. The name is asked in a tight loop (each query waits
//! for its answer, up to 5 s per task in all), so a sample overshoots by at most one query's
//! round trip.
//!
//! Everything listens on 127.0.0.1; the agent is simulated (no processes are started); the
//! master's registry lives in a temporary directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use atoll_bench::dns::{UdpClient, has_answer};
use atoll_bench::{Percentiles, machine, ms};
use atoll_proto::model::{
    AgentId, AgentInfo, Attributes, EventKind, Source, StreamMessage, TaskId, TaskState, TaskStatus, Time,
};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;
use atoll_proto::pb::v1::operator as opb;
use clap::Parser;
use hickory_proto::rr::RecordType;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// The framework `POST /v1/run` launches under: names end in `.atoll-run.mesos.`.
const RUN_FRAMEWORK: &str = "atoll-run";
/// A name that has not answered this long after its RUNNING update counts as a miss.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);
/// How long the master gets to launch a requested task on the simulated agent.
const LAUNCH_LIMIT: Duration = Duration::from_secs(10);
/// How long the components get to start and find each other.
const START_LIMIT: Duration = Duration::from_secs(20);

#[derive(Parser, Debug)]
#[command(about = "time from a task's RUNNING update to its DNS name answering")]
struct Args {
    /// Tasks to launch, one at a time.
    #[arg(long, default_value_t = 1_000)]
    tasks: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.tasks == 0 || args.tasks > 10_000 {
        bail!("--tasks must be 1..=10000 (the simulated agent has ports 20000-30000)");
    }
    let dir = tempfile::Builder::new().prefix("atoll-dns-propagation.").tempdir()?;

    // The master.
    let settings = atoll_scheduler::config::MasterSettings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: Some(dir.path().join("master")),
        ..Default::default()
    };
    let master = atoll_scheduler::server::start(settings.resolve()?).await?;
    let master_addr = master.address;
    let master_url = format!("http://{master_addr}");
    let (stop_master, master_stopped) = oneshot::channel::<()>();
    let master_task = tokio::spawn(master.serve(async move {
        let _ = master_stopped.await;
    }));

    // The DNS daemon, following the master's event stream.
    let dns_settings = atoll_dns::settings::DnsSettings {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        no_forward: true,
        master: Some(master_url.clone()),
        ..Default::default()
    };
    let mut dns_options = dns_settings.resolve()?;
    dns_options.data_dir = None;
    let dns = atoll_dns::daemon::start(dns_options).await?;
    let dns_addr = *dns.dns_addrs().first().context("the DNS server bound no address")?;
    let (stop_dns, dns_stopped) = oneshot::channel::<()>();
    let dns_task = tokio::spawn(dns.serve(async move {
        let _ = dns_stopped.await;
    }));

    let result = measure(&args, &master_url, dns_addr).await;

    let _ = stop_dns.send(());
    let _ = stop_master.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), dns_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), master_task).await;
    result
}

/// A RUNNING update the simulated agent sent (or the event stream delivered): task name and when.
type Mark = (String, Instant);

async fn measure(args: &Args, master_url: &str, dns_addr: SocketAddr) -> anyhow::Result<()> {
    let stats = Arc::new(AgentStats::default());
    let (running_tx, mut running_rx) = mpsc::unbounded_channel::<Mark>();
    let (registered_tx, registered_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(simulated_agent(master_url.to_owned(), running_tx, registered_tx, stats.clone()));
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<Mark>();
    let watcher = tokio::spawn(watch_running_events(master_url.to_owned(), event_tx));
    let result = async {
        tokio::time::timeout(START_LIMIT, registered_rx)
            .await
            .context("the simulated agent did not register")?
            .context("the simulated agent stopped")?;
        let mut dns = UdpClient::connect(dns_addr).await?;
        wait_for_name(&mut dns, "slave.mesos.", START_LIMIT)
            .await
            .context("the DNS daemon did not learn about the agent (is it following the master?)")?;
        drive(args, master_url, &mut dns, &mut running_rx, &mut event_rx, &stats).await
    }
    .await;
    agent.abort();
    watcher.abort();
    result
}

#[derive(Default)]
struct AgentStats {
    launches: AtomicU64,
    updates: AtomicU64,
    acks: AtomicU64,
    heartbeats: AtomicU64,
}

async fn drive(
    args: &Args,
    master_url: &str,
    dns: &mut UdpClient,
    running_rx: &mut mpsc::UnboundedReceiver<Mark>,
    event_rx: &mut mpsc::UnboundedReceiver<Mark>,
    stats: &AgentStats,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let started = Instant::now();
    let mut to_answer = Vec::with_capacity(args.tasks);
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(args.tasks);
    let mut seen: HashMap<String, Instant> = HashMap::with_capacity(args.tasks);
    let mut misses = Vec::new();
    let mut queries = 0u64;
    for i in 0..args.tasks {
        let name = format!("prop-{i:04}");
        let request = serde_json::json!({"name": name, "shell": "sleep 3600", "cpus": 0.01, "mem": 1, "ports": 1});
        let response = http.post(format!("{master_url}/v1/run")).json(&request).send().await?;
        if !response.status().is_success() {
            bail!("POST /v1/run for {name}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        let (launched, t0) = tokio::time::timeout(LAUNCH_LIMIT, running_rx.recv())
            .await
            .with_context(|| format!("{name} was not launched on the simulated agent within {LAUNCH_LIMIT:?}"))?
            .context("the simulated agent stopped")?;
        if launched != name {
            bail!("expected {name} to be launched, the agent got {launched}");
        }
        sent.insert(name.clone(), t0);
        let qname = format!("{name}.{RUN_FRAMEWORK}.mesos.");
        let deadline = t0 + ANSWER_LIMIT;
        let mut answered = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            queries += 1;
            let reply = dns.ask(&qname, RecordType::A, left.min(Duration::from_secs(1))).await?;
            if reply.as_ref().is_some_and(has_answer) {
                answered = Some(Instant::now());
                break;
            }
        }
        match answered {
            Some(at) => to_answer.push(at - t0),
            None => misses.push(name.clone()),
        }
        while let Ok((event_name, at)) = event_rx.try_recv() {
            seen.insert(event_name, at);
        }
    }
    // The watcher may trail the DNS daemon: give its last events a moment.
    let settle = Instant::now() + Duration::from_secs(2);
    while seen.len() < sent.len() {
        let Some(left) = settle.checked_duration_since(Instant::now()) else { break };
        match tokio::time::timeout(left, event_rx.recv()).await {
            Ok(Some((event_name, at))) => {
                seen.insert(event_name, at);
            }
            _ => break,
        }
    }
    let to_event: Vec<Duration> =
        sent.iter().filter_map(|(name, t0)| seen.get(name).map(|at| at.saturating_duration_since(*t0))).collect();
    let elapsed = started.elapsed();

    println!("machine: {}", machine());
    println!(
        "{} tasks launched one at a time through POST /v1/run on the in-process master; a simulated agent \
         answers each launch with TASK_STARTING then TASK_RUNNING",
        args.tasks
    );
    println!(
        "t0 = the agent sends TASK_RUNNING; answer = the first A answer for <task>.{RUN_FRAMEWORK}.mesos. from the \
         in-process DNS daemon (UDP, 127.0.0.1), asked in a tight loop, at most {ANSWER_LIMIT:?}"
    );
    println!();
    println!("{:<34} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}", "", "n", "p50", "p90", "p99", "max", "mean");
    let row = |label: &str, samples: &[Duration]| match Percentiles::of(samples) {
        Some(p) => println!(
            "{label:<34} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}",
            p.count,
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.max),
            ms(p.mean)
        ),
        None => println!("{label:<34} {:>6}", 0),
    };
    row("RUNNING -> event at a subscriber", &to_event);
    row("RUNNING -> name answers (DNS)", &to_answer);
    println!();
    println!(
        "misses (no answer within {ANSWER_LIMIT:?}): {}{}",
        misses.len(),
        if misses.is_empty() { String::new() } else { format!(" ({})", misses[..misses.len().min(5)].join(", ")) }
    );
    println!(
        "queries per task: {:.1} on average; agent: {} launches, {} status updates, {} acknowledgements, {} heartbeats",
        queries as f64 / args.tasks as f64,
        stats.launches.load(Ordering::Relaxed),
        stats.updates.load(Ordering::Relaxed),
        stats.acks.load(Ordering::Relaxed),
        stats.heartbeats.load(Ordering::Relaxed),
    );
    println!(
        "run: {:.1} s for {} tasks ({:.1} ms per task: run request, offer, launch, two status updates, answer)",
        elapsed.as_secs_f64(),
        args.tasks,
        elapsed.as_secs_f64() * 1e3 / args.tasks as f64
    );
    Ok(())
}

/// Asks `name` (A) until it answers, at most `limit`.
async fn wait_for_name(dns: &mut UdpClient, name: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if dns.ask(name, RecordType::A, Duration::from_millis(500)).await?.as_ref().is_some_and(has_answer) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{name} did not answer within {limit:?}")
}

/// An agent with room for every task: registers, heartbeats at the master's interval, and
/// answers each launch with TASK_STARTING then TASK_RUNNING (each with a fresh uuid),
/// reporting when each RUNNING went out. Acknowledgements are counted, nothing is re-sent.
async fn simulated_agent(
    master_url: String,
    running: mpsc::UnboundedSender<Mark>,
    registered: oneshot::Sender<()>,
    stats: Arc<AgentStats>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(master_url)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .context("connect to the master")?;
    let mut client = apb::agent_registry_client::AgentRegistryClient::new(channel);
    let (out, outgoing) = mpsc::channel::<apb::AgentMessage>(1024);
    let info = AgentInfo {
        hostname: "bench-agent".into(),
        // The benchmark range: the address DNS publishes for the agent's tasks. No traffic goes
        // there; the master never dials agents.
        address: SocketAddr::from(([198, 19, 255, 1], 5051)),
        resources: "cpus:1000;mem:1000000;ports:[20000-30000]".parse()?,
        attributes: Attributes::default(),
    };
    let register =
        apb::Register { info: Some(pb::AgentInfo::from(&info)), tasks: Vec::new(), version: "bench".to_owned() };
    out.send(agent_message(apb::agent_message::Message::Register(register))).await?;
    let mut inbound = client.attach(ReceiverStream::new(outgoing)).await.context("attach")?.into_inner();
    let mut registered = Some(registered);
    let mut agent_id: Option<AgentId> = None;
    let mut heartbeat: Option<tokio::time::Interval> = None;
    loop {
        let beat = async {
            match heartbeat.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            message = inbound.message() => {
                let Some(message) = message.context("the agent stream broke")? else {
                    bail!("the master closed the agent stream");
                };
                let Some(message) = message.message else { continue };
                use apb::master_message::Message;
                match message {
                    Message::Registered(r) => {
                        agent_id = r.agent_id.map(|id| AgentId::new(id.value));
                        let period = Duration::try_from_secs_f64(r.heartbeat_interval_seconds)
                            .unwrap_or(Duration::from_secs(5))
                            .max(Duration::from_millis(100));
                        heartbeat = Some(tokio::time::interval_at(tokio::time::Instant::now() + period, period));
                        if let Some(registered) = registered.take() {
                            let _ = registered.send(());
                        }
                    }
                    Message::LaunchTask(launch) => {
                        stats.launches.fetch_add(1, Ordering::Relaxed);
                        let framework_id = launch.framework.and_then(|f| f.id).context("launch without framework id")?;
                        let task = launch.task.context("launch without task")?;
                        let task_id = TaskId::new(task.task_id.context("task without id")?.value);
                        for state in [TaskState::Starting, TaskState::Running] {
                            let mut status = TaskStatus::new(task_id.clone(), state, Source::Executor, Time::now());
                            status.agent_id = agent_id.clone();
                            status.uuid = Some(uuid::Uuid::new_v4());
                            let update = apb::StatusUpdate {
                                framework_id: Some(framework_id.clone()),
                                status: Some(pb::TaskStatus::from(&status)),
                            };
                            let sent_at = Instant::now();
                            out.send(agent_message(apb::agent_message::Message::StatusUpdate(update))).await?;
                            stats.updates.fetch_add(1, Ordering::Relaxed);
                            if state == TaskState::Running {
                                let _ = running.send((task.name.clone(), sent_at));
                            }
                        }
                    }
                    Message::Acknowledge(_) => {
                        stats.acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Message::Shutdown(s) => bail!("the master shut the simulated agent down: {}", s.message),
                    // Kills, framework shutdowns and whatever the protocol adds: nothing to do here.
                    _ => {}
                }
            }
            () = beat => {
                out.send(agent_message(apb::agent_message::Message::Heartbeat(apb::Heartbeat {}))).await?;
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn agent_message(message: apb::agent_message::Message) -> apb::AgentMessage {
    apb::AgentMessage { message: Some(message) }
}

/// A second event-stream subscriber beside the DNS daemon: when each task's RUNNING event
/// arrives, which splits the total into the master's part and the DNS daemon's.
async fn watch_running_events(master_url: String, marks: mpsc::UnboundedSender<Mark>) -> anyhow::Result<()> {
    let mut client = opb::operator_client::OperatorClient::connect(master_url).await?;
    let mut stream = client.subscribe(opb::SubscribeRequest { since: None }).await?.into_inner();
    while let Some(message) = stream.message().await? {
        let Ok(StreamMessage::Event { event }) = StreamMessage::try_from(message) else { continue };
        if let EventKind::TaskUpdated { task } = &event.kind
            && task.state == TaskState::Running
        {
            let _ = marks.send((task.name.clone(), Instant::now()));
        }
    }
    Ok(())
}
