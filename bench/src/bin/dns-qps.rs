//! DNS queries per second and latency: dnsperf against Atoll's DNS server and against NSD,
//! both serving the same zone (Atoll's own projection of a synthetic cluster of RUNNING tasks,
//! written out as an RFC 1035 zone file for NSD), with the same query file, in the same run.
//!
//! `cargo run --release -p atoll-bench --bin dns-qps [-- --seconds 10 --rounds 2 ...]`
//!
//! Needs the Debian packages `dnsperf` and `nsd`. Everything listens on 127.0.0.1 only; NSD
//! runs as a child in its own process group and is stopped (by that id) when the run ends,
//! also on error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use atoll_bench::dns::{UdpClient, comparable};
use atoll_bench::machine;
use atoll_dns::daemon::server_config;
use atoll_dns::projection::{DnsConfig, Masters, Projection};
use atoll_dns::records::{RecordData, RecordSet};
use atoll_dns::server::{Listeners, ServerConfig, Zone, serve_on};
use atoll_dns::settings::{DnsOptions, DnsSettings};
use atoll_proto::model::{
    Agent, AgentId, AgentState, Attributes, ClusterState, CommandInfo, Framework, FrameworkId, FrameworkInfo, Labels,
    Resources, Task, TaskId, TaskInfo, TaskState, Time,
};
use clap::Parser;
use hickory_proto::rr::RecordType;

const FRAMEWORK: &str = "marathon";
/// How long one check query may wait for its answer.
const CHECK_WAIT: Duration = Duration::from_secs(2);
/// How long NSD gets to load the zone and answer.
const NSD_START: Duration = Duration::from_secs(20);
/// dnsperf gets this long beyond its own time limit before it is killed.
const DNSPERF_GRACE: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "dnsperf against Atoll's DNS and NSD serving the same zone")]
struct Args {
    /// RUNNING tasks in the synthetic cluster, each with its own name and one port.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Agents the tasks are spread over (at most 250: one /24 of task IPs each).
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Lines in the query file (dnsperf loops over it).
    #[arg(long, default_value_t = 100_000)]
    queries: usize,
    /// Seconds per dnsperf run (-l).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds per phase (throughput, then fixed rate); each runs both servers, alternating
    /// which goes first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// dnsperf clients, i.e. source sockets (-c).
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// dnsperf threads (-T).
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Queries dnsperf keeps outstanding (-q).
    #[arg(long, default_value_t = 100)]
    outstanding: u32,
    /// Queries per second for the latency phase (-Q); by default half the lower throughput
    /// measured, so neither server is saturated; 0 skips the phase.
    #[arg(long)]
    rate: Option<u32>,
    /// Worker threads of Atoll's server and NSD server processes [default: the cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Names compared between the two servers before measuring.
    #[arg(long, default_value_t = 500)]
    check: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let missing: Vec<&str> = ["dnsperf", "nsd"].into_iter().filter(|tool| find_program(tool).is_none()).collect();
    if !missing.is_empty() {
        bail!(
            "{} not found; this benchmark needs the Debian packages: apt-get install -y dnsperf nsd",
            missing.join(" and ")
        );
    }
    if args.agents == 0 || args.agents > 250 || args.tasks == 0 || args.tasks > args.agents * 250 {
        bail!("--agents must be 1..=250 and --tasks 1..={} (250 per agent)", args.agents * 250);
    }
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    runtime.block_on(run(args, workers))
}

async fn run(args: Args, workers: usize) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("atoll-dns-qps.").tempdir()?;
    let options = dns_options()?;
    let config = server_config(&options);

    // The zone: Atoll's projection of the synthetic cluster.
    let built = Instant::now();
    let mut projection = Projection::new(DnsConfig {
        domain: options.domain.clone(),
        label_spec: options.label_spec,
        ip_sources: options.ip_sources.clone(),
        soa_mname: options.soa_mname.clone(),
        dns_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        health_aware: options.health_aware,
        vip_domain: options.vip_domain.clone(),
    });
    let mut changes = projection.set_masters(Masters {
        leader: Some(SocketAddr::from(([198, 19, 255, 250], 5050))),
        masters: vec![SocketAddr::from(([198, 19, 255, 250], 5050))],
    });
    changes.extend(projection.reset(&cluster(args.tasks, args.agents)?));
    let zone = Zone::new();
    zone.apply(&changes, projection.serial());
    let records = projection.records().clone();
    let projected = built.elapsed();

    let zone_file = dir.path().join("mesos.zone");
    std::fs::write(&zone_file, zone_text(&config, &records, projection.serial())?)?;
    let queries = query_lines(&records, args.queries);
    let query_file = dir.path().join("queries.txt");
    std::fs::write(&query_file, queries.iter().map(|(name, kind)| format!("{name} {kind}\n")).collect::<String>())?;

    // Atoll's server, in this process.
    let listeners = Listeners::bind(&[SocketAddr::from(([127, 0, 0, 1], 0))]).await?;
    let atoll_addr = listeners.local_addrs()[0];
    let (stop_atoll, atoll_stopped) = tokio::sync::oneshot::channel::<()>();
    let atoll = tokio::spawn(serve_on(listeners, config.clone(), zone, async move {
        let _ = atoll_stopped.await;
    }));

    // NSD, as a child.
    let nsd_port = free_port()?;
    let nsd_addr = SocketAddr::from(([127, 0, 0, 1], nsd_port));
    let nsd = Nsd::start(dir.path(), &zone_file, &config, nsd_addr, workers)?;
    nsd.wait_ready(&config).await?;

    let result = measure(&args, workers, &records, projected, &queries, &query_file, atoll_addr, nsd_addr).await;
    drop(nsd);
    let _ = stop_atoll.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), atoll).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    workers: usize,
    records: &RecordSet,
    projected: Duration,
    queries: &[(String, &'static str)],
    query_file: &Path,
    atoll: SocketAddr,
    nsd: SocketAddr,
) -> anyhow::Result<()> {
    let checked = check_same_answers(queries, args.check, atoll, nsd).await?;

    let names = records.names().count();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for record in records.records() {
        *kinds.entry(kind_of(&record.data)).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
    let a = queries.iter().filter(|(name, kind)| *kind == "A" && !name.starts_with("nx-")).count();
    let srv = queries.iter().filter(|(_, kind)| *kind == "SRV").count();
    let nx = queries.len() - a - srv;
    println!("machine: {}", machine());
    println!(
        "zone: {} RUNNING tasks on {} agents -> {names} names, {} records ({}), TTL {}; projected in {:.0} ms",
        args.tasks,
        args.agents,
        records.len(),
        kinds.join(", "),
        dns_options()?.ttl,
        projected.as_secs_f64() * 1e3
    );
    println!(
        "queries: {} lines ({a} A, {srv} SRV, {nx} NXDOMAIN), dnsperf -c {} -T {} -q {} -l {}, UDP",
        queries.len(),
        args.clients,
        args.threads,
        args.outstanding,
        args.seconds
    );
    println!(
        "servers: atoll {atoll} (in process, {workers} tokio workers), nsd {} {nsd} ({workers} server processes)",
        nsd_version()
    );
    println!("checked {checked} names: same rcode, flags, answers and SRV target addresses from both");
    println!();

    println!("throughput (no rate limit)");
    let (atoll_mean, nsd_mean) = rounds(args, query_file, atoll, nsd, None).await?;
    print_ratios(&atoll_mean, &nsd_mean, false);

    let rate = match args.rate {
        Some(rate) => rate,
        None => ((atoll_mean.qps.min(nsd_mean.qps) / 2.0 / 1000.0).floor() * 1000.0).max(1000.0) as u32,
    };
    if rate > 0 {
        println!();
        println!("latency at a fixed rate of {rate} queries/s (-Q {rate})");
        let (atoll_mean, nsd_mean) = rounds(args, query_file, atoll, nsd, Some(rate)).await?;
        print_ratios(&atoll_mean, &nsd_mean, true);
    }
    Ok(())
}

/// `args.rounds` rounds of one dnsperf run per server, alternating which goes first; prints
/// every run and the means, and returns the means (atoll, nsd).
async fn rounds(
    args: &Args,
    query_file: &Path,
    atoll: SocketAddr,
    nsd: SocketAddr,
    rate: Option<u32>,
) -> anyhow::Result<(Perf, Perf)> {
    print_header();
    let mut runs: Vec<(Server, Perf)> = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [Server::Atoll, Server::Nsd] } else { [Server::Nsd, Server::Atoll] };
        for server in order {
            let addr = if server == Server::Atoll { atoll } else { nsd };
            let perf = dnsperf(args, query_file, addr, rate).await?;
            print_row(&format!("{}", round + 1), server, &perf);
            runs.push((server, perf));
        }
    }
    let atoll_mean = Perf::mean(runs.iter().filter(|(s, _)| *s == Server::Atoll).map(|(_, p)| p));
    let nsd_mean = Perf::mean(runs.iter().filter(|(s, _)| *s == Server::Nsd).map(|(_, p)| p));
    print_row("mean", Server::Atoll, &atoll_mean);
    print_row("mean", Server::Nsd, &nsd_mean);
    Ok((atoll_mean, nsd_mean))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Atoll,
    Nsd,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Server::Atoll => "atoll",
            Server::Nsd => "nsd",
        })
    }
}

fn print_header() {
    println!(
        "{:<6} {:<6} {:>12} {:>11} {:>11} {:>11} {:>10} {:>8} {:>9}",
        "run", "server", "queries/s", "avg lat", "stddev", "max lat", "completed", "lost", "resp B"
    );
}

fn print_row(run: &str, server: Server, perf: &Perf) {
    println!(
        "{:<6} {:<6} {:>12.0} {:>11} {:>11} {:>11} {:>10} {:>8} {:>9.0}",
        run,
        server,
        perf.qps,
        us(perf.avg_latency),
        us(perf.stddev),
        us(perf.max_latency),
        perf.completed,
        perf.lost,
        perf.response_size
    );
}

/// Atoll over NSD; at a fixed rate both answer the same queries per second, so only the
/// latency ratio means something.
fn print_ratios(atoll: &Perf, nsd: &Perf, fixed_rate: bool) {
    let latency = atoll.avg_latency / nsd.avg_latency;
    let latency_text = format!(
        "average latency {latency:.3} ({})",
        if latency <= 1.0 { format!("{:.2}x lower", 1.0 / latency) } else { format!("{latency:.2}x higher") }
    );
    if fixed_rate {
        println!("ratio atoll/nsd: {latency_text}");
        return;
    }
    let qps = atoll.qps / nsd.qps;
    println!(
        "ratio atoll/nsd: queries/s {qps:.3} ({}), {latency_text}",
        if qps >= 1.0 { format!("{qps:.2}x NSD's rate") } else { format!("{:.2}x slower", 1.0 / qps) },
    );
}

/// Microseconds, the unit DNS latencies on loopback read best in.
fn us(seconds: f64) -> String {
    format!("{:.0} us", seconds * 1e6)
}

/// The options `atoll dns` resolves to with forwarding off (the zone's TTL, SOA and names).
fn dns_options() -> anyhow::Result<DnsOptions> {
    let settings = DnsSettings { no_forward: true, ..DnsSettings::default() };
    let mut options = settings.resolve()?;
    options.data_dir = None;
    Ok(options)
}

/// `tasks` RUNNING tasks of one hosted framework (`marathon`, as the built-in services
/// framework), each with its own name, one host port and its own IP, round-robin over
/// `agents` agents. Addresses come from the benchmark range: agents 198.19.255.N, task IPs
/// from the container pool 198.18.0.0/16, one /24 per agent.
fn cluster(tasks: usize, agents: usize) -> anyhow::Result<ClusterState> {
    let agent_list: Vec<Agent> = (0..agents)
        .map(|i| Agent {
            id: AgentId::new(format!("bench-agent-{i:03}")),
            hostname: format!("agent-{i:03}.bench"),
            address: SocketAddr::from(([198, 19, 255, i as u8 + 1], 5051)),
            resources: "cpus:64;mem:262144;ports:[31000-32000]".parse().expect("valid resources"),
            used: Resources::new(),
            attributes: Attributes::default(),
            state: AgentState::Active,
            drain: false,
            deactivated: false,
            drain_config: None,
            registered_at: Time(0),
            version: String::new(),
            subnets: Vec::new(),
        })
        .collect();
    let framework_id = FrameworkId::new("bench-framework-0000");
    let framework = Framework {
        id: framework_id.clone(),
        info: FrameworkInfo::named(FRAMEWORK),
        connected: true,
        hosted: true,
        registered_at: Time(0),
    };
    let mut task_list = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let agent = i % agents;
        let slot = i / agents;
        let port = 31_000 + slot as u64;
        let info = TaskInfo {
            name: format!("app-{i:05}"),
            task_id: TaskId::new(format!("app-{i:05}.{:08x}", (i as u64).wrapping_mul(0x9E37_79B9) as u32)),
            agent_id: agent_list[agent].id.clone(),
            resources: Resources::new()
                .with_scalar("cpus", 0.1)
                .with_scalar("mem", 64.0)
                .with_ranges("ports", [(port, port)]),
            command: CommandInfo::shell("sleep 3600"),
            labels: Labels::default(),
            discovery: None,
            kill_grace_period_secs: None,
            health_check: None,
            networks: Vec::new(),
        };
        let mut task = Task::launched(framework_id.clone(), info, Time(0));
        task.state = TaskState::Running;
        task.ip_addresses = vec![IpAddr::V4(Ipv4Addr::new(198, 18, agent as u8, slot as u8 + 2))];
        task_list.push(task);
    }
    let index = (agents + 1 + 3 * tasks) as u64;
    Ok(ClusterState { index, agents: agent_list, frameworks: vec![framework], tasks: task_list, ..Default::default() })
}

fn kind_of(data: &RecordData) -> &'static str {
    match data {
        RecordData::A(_) => "A",
        RecordData::Aaaa(_) => "AAAA",
        RecordData::Srv { .. } => "SRV",
    }
}

/// The RFC 1035 zone file of the served records: the same SOA (serial, timers, minimum), the
/// apex NS Atoll answers with, and every record with the zone's TTL.
fn zone_text(config: &ServerConfig, records: &RecordSet, serial: u32) -> anyhow::Result<String> {
    let [zone] = config.zones.as_slice() else { bail!("expected one zone, got {}", config.zones.len()) };
    let ttl = zone.ttl;
    let mut text = String::new();
    writeln!(text, "$TTL {ttl}")?;
    writeln!(
        text,
        "{} {ttl} IN SOA {} {} {serial} {} {} {} {}",
        zone.domain, zone.soa_mname, zone.soa_rname, zone.refresh, zone.retry, zone.expire, zone.minimum
    )?;
    writeln!(text, "{} {ttl} IN NS {}", zone.domain, zone.soa_mname)?;
    for record in records.records() {
        if !record.name.is_in(&zone.domain) {
            continue;
        }
        match &record.data {
            RecordData::A(ip) => writeln!(text, "{} {ttl} IN A {ip}", record.name)?,
            RecordData::Aaaa(ip) => writeln!(text, "{} {ttl} IN AAAA {ip}", record.name)?,
            RecordData::Srv { priority, weight, port, target } => {
                writeln!(text, "{} {ttl} IN SRV {priority} {weight} {port} {target}", record.name)?
            }
        }
    }
    Ok(text)
}

/// A small deterministic generator (splitmix64), so every run asks the same questions.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The query file: 60% A for a task name (short, canonical and `.slave` forms), 30% SRV for a
/// task's `_name._tcp|_udp` names, 10% A for names that do not exist (NXDOMAIN).
fn query_lines(records: &RecordSet, count: usize) -> Vec<(String, &'static str)> {
    let suffix = format!(".{FRAMEWORK}.mesos.");
    let task_names =
        records.names().filter(|n| n.as_str().ends_with(&suffix) && !n.as_str().starts_with("_framework."));
    let mut a_names = Vec::new();
    let mut srv_names = Vec::new();
    for name in task_names {
        if records.get(name, atoll_dns::records::RecordType::Srv).next().is_some() {
            srv_names.push(name.to_string());
        } else if records.get(name, atoll_dns::records::RecordType::A).next().is_some() {
            a_names.push(name.to_string());
        }
    }
    let mut rng = SplitMix(0x00A7_0115);
    (0..count)
        .map(|_| match rng.below(10) {
            0..=5 => (a_names[rng.below(a_names.len())].clone(), "A"),
            6..=8 => (srv_names[rng.below(srv_names.len())].clone(), "SRV"),
            _ => (format!("nx-{:05}{suffix}", rng.below(100_000)), "A"),
        })
        .collect()
}

/// Asks both servers `sample` of the queries (spread over the file) and fails on the first
/// differences.
async fn check_same_answers(
    queries: &[(String, &'static str)],
    sample: usize,
    atoll: SocketAddr,
    nsd: SocketAddr,
) -> anyhow::Result<usize> {
    let mut atoll_client = UdpClient::connect(atoll).await?;
    let mut nsd_client = UdpClient::connect(nsd).await?;
    let step = (queries.len() / sample.max(1)).max(1);
    let mut differences = Vec::new();
    let mut checked = 0;
    for (name, kind) in queries.iter().step_by(step).take(sample) {
        let qtype = if *kind == "SRV" { RecordType::SRV } else { RecordType::A };
        let from_atoll =
            atoll_client.ask(name, qtype, CHECK_WAIT).await?.with_context(|| format!("atoll: no answer for {name}"))?;
        let from_nsd =
            nsd_client.ask(name, qtype, CHECK_WAIT).await?.with_context(|| format!("nsd: no answer for {name}"))?;
        let (atoll_view, nsd_view) = (comparable(&from_atoll), comparable(&from_nsd));
        if atoll_view != nsd_view {
            differences.push(format!("{name} {kind}:\n  atoll: {atoll_view:?}\n  nsd:   {nsd_view:?}"));
        }
        checked += 1;
    }
    if !differences.is_empty() {
        bail!(
            "the servers answer differently for {} of {checked} names:\n{}",
            differences.len(),
            differences[..differences.len().min(5)].join("\n")
        );
    }
    Ok(checked)
}

/// What dnsperf reports for one run.
#[derive(Clone, Debug, Default)]
struct Perf {
    qps: f64,
    /// Seconds.
    avg_latency: f64,
    max_latency: f64,
    stddev: f64,
    completed: u64,
    lost: u64,
    /// Average response size, bytes.
    response_size: f64,
}

impl Perf {
    /// The mean of several runs (max latency: the maximum).
    fn mean<'a>(runs: impl Iterator<Item = &'a Perf>) -> Perf {
        let runs: Vec<&Perf> = runs.collect();
        let n = runs.len().max(1) as f64;
        let avg = |f: fn(&Perf) -> f64| runs.iter().map(|p| f(p)).sum::<f64>() / n;
        Perf {
            qps: avg(|p| p.qps),
            avg_latency: avg(|p| p.avg_latency),
            max_latency: runs.iter().map(|p| p.max_latency).fold(0.0, f64::max),
            stddev: avg(|p| p.stddev),
            completed: runs.iter().map(|p| p.completed).sum(),
            lost: runs.iter().map(|p| p.lost).sum(),
            response_size: avg(|p| p.response_size),
        }
    }

    /// Parses dnsperf's statistics block.
    fn parse(output: &str) -> anyhow::Result<Perf> {
        let field = |label: &str| -> Option<&str> {
            output.lines().find_map(|line| line.trim().strip_prefix(label)).map(|rest| rest.trim())
        };
        let first_number = |text: &str| -> Option<f64> {
            text.split(|c: char| !(c.is_ascii_digit() || c == '.')).find(|s| !s.is_empty()).and_then(|s| s.parse().ok())
        };
        let number = |label: &str| field(label).and_then(first_number);
        let latency = field("Average Latency (s):").context("no average latency in dnsperf's output")?;
        let max_latency = latency
            .split_once("max")
            .and_then(|(_, rest)| first_number(rest))
            .context("no maximum latency in dnsperf's output")?;
        let response_size = field("Average packet size:")
            .and_then(|text| text.split_once("response"))
            .and_then(|(_, rest)| first_number(rest))
            .unwrap_or(0.0);
        Ok(Perf {
            qps: number("Queries per second:").context("no queries per second in dnsperf's output")?,
            avg_latency: first_number(latency).context("unreadable average latency")?,
            max_latency,
            stddev: number("Latency StdDev (s):").unwrap_or(0.0),
            completed: number("Queries completed:").unwrap_or(0.0) as u64,
            lost: number("Queries lost:").unwrap_or(0.0) as u64,
            response_size,
        })
    }
}

/// One dnsperf run against `server`; killed if it outlives its time limit by DNSPERF_GRACE.
async fn dnsperf(args: &Args, query_file: &Path, server: SocketAddr, rate: Option<u32>) -> anyhow::Result<Perf> {
    let mut command = tokio::process::Command::new("dnsperf");
    command
        .arg("-s")
        .arg(server.ip().to_string())
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-d")
        .arg(query_file)
        .arg("-l")
        .arg(args.seconds.to_string())
        .arg("-c")
        .arg(args.clients.to_string())
        .arg("-T")
        .arg(args.threads.to_string())
        .arg("-q")
        .arg(args.outstanding.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(rate) = rate {
        command.arg("-Q").arg(rate.to_string());
    }
    let child = command.spawn().context("start dnsperf")?;
    let limit = Duration::from_secs(args.seconds) + DNSPERF_GRACE;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("dnsperf did not finish within {limit:?}"))?
        .context("run dnsperf")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("dnsperf failed ({}):\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Perf::parse(&stdout).with_context(|| format!("dnsperf output:\n{stdout}"))
}

/// A free port on 127.0.0.1 for both UDP and TCP (free when asked; NSD binds it right after).
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..16 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 for both UDP and TCP")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn nsd_version() -> String {
    let program = find_program("nsd").unwrap_or_else(|| PathBuf::from("nsd"));
    std::process::Command::new(program)
        .arg("-v")
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            text.lines().next().map(|l| l.trim().trim_start_matches("NSD version ").to_owned())
        })
        .unwrap_or_default()
}

/// NSD running in the foreground (`-d`) in its own process group; dropping it stops the whole
/// group (the main process, its server processes and xfrd) by that group's id.
struct Nsd {
    child: std::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Nsd {
    fn start(
        dir: &Path,
        zone_file: &Path,
        config: &ServerConfig,
        addr: SocketAddr,
        servers: usize,
    ) -> anyhow::Result<Nsd> {
        use std::os::unix::process::CommandExt;
        let [zone] = config.zones.as_slice() else { bail!("expected one zone") };
        let dir_text = dir.display();
        let log = dir.join("nsd.log");
        // No rate limiting (RRL would drop most of a benchmark's queries), no privilege drop or
        // chroot, everything NSD writes inside the temporary directory.
        let conf = format!(
            "server:\n\
             \x20   ip-address: {ip}@{port}\n\
             \x20   do-ip6: no\n\
             \x20   server-count: {servers}\n\
             \x20   reuseport: yes\n\
             \x20   username: \"\"\n\
             \x20   chroot: \"\"\n\
             \x20   zonesdir: \"{dir_text}\"\n\
             \x20   database: \"\"\n\
             \x20   zonelistfile: \"{dir_text}/zone.list\"\n\
             \x20   xfrdfile: \"{dir_text}/xfrd.state\"\n\
             \x20   xfrdir: \"{dir_text}\"\n\
             \x20   pidfile: \"{dir_text}/nsd.pid\"\n\
             \x20   logfile: \"{log}\"\n\
             \x20   verbosity: 1\n\
             \x20   round-robin: yes\n\
             \x20   rrl-ratelimit: 0\n\
             \x20   rrl-whitelist-ratelimit: 0\n\
             remote-control:\n\
             \x20   control-enable: no\n\
             zone:\n\
             \x20   name: \"{domain}\"\n\
             \x20   zonefile: \"{zone_file}\"\n",
            ip = addr.ip(),
            port = addr.port(),
            log = log.display(),
            domain = zone.domain,
            zone_file = zone_file.display(),
        );
        let conf_path = dir.join("nsd.conf");
        std::fs::write(&conf_path, conf)?;
        let program = find_program("nsd").context("nsd not found")?;
        let checkconf = program.with_file_name("nsd-checkconf");
        if checkconf.is_file() {
            let out = std::process::Command::new(&checkconf).arg(&conf_path).output()?;
            if !out.status.success() {
                bail!("nsd-checkconf refused the configuration: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let output = std::fs::File::create(dir.join("nsd.out"))?;
        let child = std::process::Command::new(program)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .process_group(0)
            .spawn()
            .context("start nsd")?;
        Ok(Nsd { child, addr, log })
    }

    /// Waits (bounded) until NSD answers the zone's SOA.
    async fn wait_ready(&self, config: &ServerConfig) -> anyhow::Result<()> {
        let apex = config.zones[0].domain.to_string();
        let mut client = UdpClient::connect(self.addr).await?;
        let deadline = Instant::now() + NSD_START;
        while Instant::now() < deadline {
            if let Some(answer) = client.ask(&apex, RecordType::SOA, Duration::from_millis(200)).await?
                && !answer.answers.is_empty()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let out = std::fs::read_to_string(self.log.with_file_name("nsd.out")).unwrap_or_default();
        bail!("nsd did not answer on {} within {NSD_START:?}; its log:\n{log}{out}", self.addr)
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
        let Some(group) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) else { return };
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever of the group is still there (a server process slow to exit) goes now.
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
        // The server processes are reparented once NSD's main process is gone; wait (bounded)
        // until the group has disappeared, so none is left when the benchmark returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        while test_kill_process_group(group).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
