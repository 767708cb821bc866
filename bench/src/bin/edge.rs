//! HTTP edge proxy throughput and latency: wrk against the same backend (nginx serving a small
//! fixed response) directly, through Atoll's edge (`atoll-lb-edge`, in this process), through
//! HAProxy and through nginx as a proxy, all routing by `Host`, in the same run with the same
//! load; then through Atoll's edge again while its route table changes 100 times a second.
//!
//! `cargo run --release -p atoll-bench --bin edge [-- --seconds 10 --rounds 3 ...]`
//!
//! Needs the Debian packages `nginx`, `haproxy` and `wrk`. Everything listens on 127.0.0.1
//! (free ports picked at run time); nginx, HAProxy and wrk run as children, each in its own
//! process group, with their configuration, pid and log files in a temporary directory, and are
//! stopped by that group's id when the run ends, also on error or Ctrl-C. The system's nginx
//! and HAProxy configurations and services are never touched.

/// The proxy frees on one thread what another allocated; glibc's malloc then contends on its
/// arena locks (measured: nearly every request took one), mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use atoll_bench::{Summary, machine, ms, other_builds};
use atoll_lb_core::edge::{DEFAULT_GROUP, EdgeApp, EdgeApps, EdgePort, EdgeTask, RouteTable, TaskHealth};
use atoll_lb_edge::{EdgeSettings, RouteSource};
use clap::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The virtual host every proxy routes to the backend.
const HOST: &str = "bench.example";
/// What the backend answers.
const BODY: &str = "hello\n";
/// The name of the Atoll edge's runtime threads (its CPU time is read by this name).
const EDGE_THREAD: &str = "atoll-edge";
/// How long a server gets to answer its first request.
const START_WAIT: Duration = Duration::from_secs(10);
/// wrk gets this long beyond its own duration before it is killed.
const WRK_GRACE: Duration = Duration::from_secs(20);
/// The unit of utime/stime in /proc/PID/stat (USER_HZ, 100 on Linux for every architecture
/// this runs on).
const USER_HZ: f64 = 100.0;

/// Set on Ctrl-C or SIGTERM: wrk runs stop early and the run unwinds, stopping every child.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Parser, Debug)]
#[command(about = "wrk against one backend directly, through Atoll's edge, HAProxy and nginx as a proxy")]
struct Args {
    /// Seconds per wrk run (-d).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds; each runs every target once, the order rotated by one each round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections (-c), the same for every target.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads (-t).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Worker threads of the Atoll edge's runtime, HAProxy's nbthread and nginx-as-proxy's
    /// worker processes (the backend nginx always has one worker).
    #[arg(long, default_value_t = 2)]
    proxy_workers: usize,
    /// Route tables per second sent to the Atoll edge during the churn run; 0 skips it.
    #[arg(long, default_value_t = 100)]
    churn_rate: u32,
    /// Other apps (one host each) in every route table next to bench.example.
    #[arg(long, default_value_t = 100)]
    apps: usize,
    /// Seconds of unreported wrk load on each target before the first round.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.seconds > 0 && args.seconds <= 600, "--seconds must be 1..=600");
    ensure!(args.rounds > 0 && args.rounds <= 20, "--rounds must be 1..=20");
    ensure!(args.threads > 0 && args.connections >= args.threads, "--connections must be at least --threads (> 0)");
    ensure!(args.proxy_workers > 0 && args.proxy_workers <= 64, "--proxy-workers must be 1..=64");
    ensure!(args.churn_rate <= 10_000, "--churn-rate must be at most 10000 tables/s");
    ensure!(args.apps <= 100_000, "--apps must be at most 100000");
    let missing: Vec<&str> =
        ["nginx", "haproxy", "wrk"].into_iter().filter(|tool| find_program(tool).is_none()).collect();
    if !missing.is_empty() {
        bail!(
            "{} not found; this benchmark needs the Debian packages of the same names: apt-get install -y {}",
            missing.join(", "),
            missing.join(" ")
        );
    }

    let dir = tempfile::Builder::new().prefix("atoll-edge-bench.").tempdir()?;
    // nginx's workers run as an unprivileged user when started as root; let them reach their
    // temporary paths in here.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let [backend_a, backend_b, haproxy_port, nginx_port, edge_port, admin_port] = free_ports()?;
    let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let ports = Ports {
        backend: addr(backend_a),
        second_backend: addr(backend_b),
        haproxy: addr(haproxy_port),
        nginx: addr(nginx_port),
        edge: addr(edge_port),
        admin: addr(admin_port),
    };

    // The children; each is stopped by its group id when dropped, in reverse order.
    let backend = Proc::nginx("backend", dir.path(), &backend_conf(dir.path(), &ports))?;
    let haproxy = Proc::haproxy(dir.path(), &haproxy_conf(&ports, args.proxy_workers))?;
    let nginx = Proc::nginx("proxy", dir.path(), &nginx_proxy_conf(dir.path(), &ports, args.proxy_workers))?;

    // The Atoll edge, in this process on a runtime of its own; the benchmark's own work (wrk's
    // supervision, the route churn, probes) runs on a separate single-threaded runtime.
    let edge_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.proxy_workers)
        .thread_name(EDGE_THREAD)
        .enable_all()
        .build()?;
    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let options = EdgeSettings {
        listen: Some(ports.edge),
        admin_listen: Some(ports.admin),
        grace_period: Some(Duration::from_secs(1)),
        // Not contacted: the routes come from RouteSource::Apps.
        master: Some("http://127.0.0.1:9".into()),
        ..EdgeSettings::default()
    }
    .resolve()?;
    let base = edge_apps(&[ports.backend], args.apps, ports.backend, None);
    let (apps_tx, apps_rx) = tokio::sync::watch::channel(base.clone());
    let (stop_edge, edge_stopped) = tokio::sync::oneshot::channel::<()>();
    let edge = edge_runtime.spawn(async move {
        let running = atoll_lb_edge::start(options).await?;
        running
            .serve_from(RouteSource::Apps(apps_rx), async move {
                let _ = edge_stopped.await;
            })
            .await
    });

    let mut servers = Servers { backend, haproxy, nginx };
    let result = control.block_on(async {
        tokio::select! {
            result = run(&args, dir.path(), &ports, &mut servers, &apps_tx, &base) => result,
            signal = interrupted() => {
                INTERRUPTED.store(true, Ordering::SeqCst);
                Err(anyhow::anyhow!("interrupted ({signal}); stopping every process this run started"))
            }
        }
    });

    let _ = stop_edge.send(());
    let stopped = control.block_on(async { tokio::time::timeout(Duration::from_secs(10), edge).await });
    edge_runtime.shutdown_timeout(Duration::from_secs(2));
    drop(servers);
    match stopped {
        Ok(Ok(Err(e))) => {
            if let Err(first) = &result {
                eprintln!("{first:#}");
            }
            return Err(anyhow::Error::new(e).context("the Atoll edge failed"));
        }
        Ok(Err(e)) => eprintln!("the Atoll edge's task: {e}"),
        Err(_) => eprintln!("the Atoll edge did not stop within 10s"),
        Ok(Ok(Ok(()))) => {}
    }
    result
}

async fn interrupted() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

struct Ports {
    /// The backend nginx (one worker) listens on both.
    backend: SocketAddr,
    /// Only the churn's tables route to it (half of them, next to the first).
    second_backend: SocketAddr,
    haproxy: SocketAddr,
    nginx: SocketAddr,
    edge: SocketAddr,
    admin: SocketAddr,
}

struct Servers {
    backend: Proc,
    haproxy: Proc,
    nginx: Proc,
}

impl Servers {
    fn check_running(&mut self) -> anyhow::Result<()> {
        self.backend.check_running()?;
        self.haproxy.check_running()?;
        self.nginx.check_running()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Direct,
    Atoll,
    Haproxy,
    Nginx,
    AtollChurn,
}

impl Target {
    const ALL: [Target; 5] = [Target::Direct, Target::Atoll, Target::Haproxy, Target::Nginx, Target::AtollChurn];

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Atoll => "atoll edge",
            Target::Haproxy => "haproxy",
            Target::Nginx => "nginx proxy",
            Target::AtollChurn => "atoll + churn",
        }
    }

    fn addr(self, ports: &Ports) -> SocketAddr {
        match self {
            Target::Direct => ports.backend,
            Target::Atoll | Target::AtollChurn => ports.edge,
            Target::Haproxy => ports.haproxy,
            Target::Nginx => ports.nginx,
        }
    }
}

/// One wrk run against one target.
struct Run {
    round: usize,
    target: Target,
    wrk: Wrk,
    /// CPU time of the proxy (cores: seconds of CPU per second of the run).
    proxy_cpu: Option<f64>,
    backend_cpu: f64,
    churn: Option<ChurnStats>,
    /// CPU time of everything else on the machine (other processes, the hypervisor's steal),
    /// in cores: above ~0.1 the run was contended.
    other_cpu: f64,
}

struct ChurnStats {
    sent: u64,
    elapsed: Duration,
    /// Tables the edge published in the window (its `route_updates` counter).
    published: u64,
    /// Requests the edge sent to the second backend, which only half the churn's tables have.
    to_second_backend: u64,
}

async fn run(
    args: &Args,
    dir: &Path,
    ports: &Ports,
    servers: &mut Servers,
    apps_tx: &tokio::sync::watch::Sender<EdgeApps>,
    base: &EdgeApps,
) -> anyhow::Result<()> {
    // Everyone answers bench.example with the backend's body, and (the proxies) something else
    // for another host: all three route by Host.
    let mut other_host = Vec::new();
    for target in [Target::Direct, Target::Atoll, Target::Haproxy, Target::Nginx] {
        wait_ready(target, target.addr(ports), servers).await?;
        if target != Target::Direct {
            let (status, _) = http_get(target.addr(ports), "other.example").await?;
            ensure!(status != 200, "{} answered 200 for Host other.example: it does not route by host", target.name());
            other_host.push(format!("{} {status}", target.name()));
        }
    }
    let (status, body) = http_get(ports.second_backend, HOST).await?;
    ensure!(status == 200 && body == BODY, "the backend's second port answered {status} {body:?}");

    println!("machine: {}", machine());
    println!("other builds: {}", other_builds());
    println!(
        "backend: nginx {} (1 worker process), `return 200 \"hello\\n\"` (6-byte body) on {} (and {} for the churn)",
        version("nginx", &["-v"], "nginx version: nginx/"),
        ports.backend,
        ports.second_backend.port(),
    );
    println!(
        "proxies, each routing Host {HOST} to the backend with keep-alive and adding X-Forwarded-For/-Proto/-Host; {} workers each:",
        args.proxy_workers
    );
    println!(
        "  atoll edge  {}  in this process (pingora), a tokio runtime of its own with {} worker threads; route table: {HOST} + {} other apps",
        ports.edge, args.proxy_workers, args.apps
    );
    println!(
        "  haproxy     {}  {} (nbthread {}, http-reuse safe)",
        ports.haproxy,
        version("haproxy", &["-v"], "HAProxy version "),
        args.proxy_workers
    );
    println!(
        "  nginx proxy {}  nginx {} ({} worker processes, upstream keepalive 128)",
        ports.nginx,
        version("nginx", &["-v"], "nginx version: nginx/"),
        args.proxy_workers
    );
    println!("Host other.example answered: {} (no route)", other_host.join(", "));
    println!(
        "load: wrk {} -t{} -c{} -d{}s --latency -H 'Host: {HOST}' http://ADDR/, {} round(s), the order rotated each round; {}s warm-up per target",
        version("wrk", &["-v"], "wrk "),
        args.threads,
        args.connections,
        args.seconds,
        args.rounds,
        args.warmup,
    );
    if args.churn_rate > 0 {
        println!(
            "churn: {} new route tables/s sent to the edge during its own wrk run ({HOST} alternating between 1 and 2 backends, one other app renamed each time)",
            args.churn_rate
        );
        // What one table costs the edge's follower to build (the pure part of a route change).
        let apps = edge_apps(&[ports.backend, ports.second_backend], args.apps, ports.backend, Some(1));
        let builds = 200u32;
        let started = Instant::now();
        for _ in 0..builds {
            std::hint::black_box(RouteTable::build(std::hint::black_box(&apps), DEFAULT_GROUP));
        }
        println!(
            "       building one such table ({} apps, RouteTable::build) takes {:.1} µs on this machine (mean of {builds})",
            apps.apps.len(),
            started.elapsed().as_secs_f64() * 1e6 / f64::from(builds)
        );
    }
    println!("all of it (backend, proxy, wrk) shares the machine's cores");
    println!();

    let targets: Vec<Target> =
        Target::ALL.into_iter().filter(|t| *t != Target::AtollChurn || args.churn_rate > 0).collect();
    if args.warmup > 0 {
        for &target in targets.iter().filter(|t| **t != Target::AtollChurn) {
            wrk(args, dir, target.addr(ports), args.warmup, &format!("warmup-{}", target.name())).await?;
        }
    }

    print_header();
    let mut runs = Vec::new();
    // The churn run follows the plain edge run at once, so the two are compared under the
    // same conditions; the four groups rotate.
    let mut groups: Vec<Vec<Target>> = vec![
        vec![Target::Direct],
        targets.iter().copied().filter(|t| matches!(t, Target::Atoll | Target::AtollChurn)).collect(),
        vec![Target::Haproxy],
        vec![Target::Nginx],
    ];
    for round in 1..=args.rounds {
        if round > 1 {
            groups.rotate_left(1);
        }
        for target in groups.iter().flatten().copied() {
            servers.check_running()?;
            let (busy_before, ours_before) = (machine_busy(), ours(servers));
            let label = format!("{round}-{}", target.name().replace(' ', "_"));
            let proxy_cpu = || match target {
                Target::Direct => None,
                Target::Atoll | Target::AtollChurn => Some(thread_cpu(EDGE_THREAD)),
                Target::Haproxy => Some(servers.haproxy.cpu()),
                Target::Nginx => Some(servers.nginx.cpu()),
            };
            let (proxy_before, backend_before) = (proxy_cpu(), servers.backend.cpu());
            let started = Instant::now();
            let (wrk, churn) = if target == Target::AtollChurn {
                let (wrk, churn) = with_churn(args, dir, ports, apps_tx).await?;
                (wrk, Some(churn))
            } else {
                (wrk(args, dir, target.addr(ports), args.seconds, &label).await?, None)
            };
            let wall = started.elapsed().as_secs_f64();
            let proxy_cpu = proxy_cpu().zip(proxy_before).map(|(after, before)| (after - before) / wall);
            let backend_cpu = (servers.backend.cpu() - backend_before) / wall;
            let others = (machine_busy() - busy_before) - (ours(servers) - ours_before) - wrk.client_cpu;
            let other_cpu = (others / wall).max(0.0);
            let run = Run { round, target, wrk, proxy_cpu, backend_cpu, churn, other_cpu };
            print_row(&run);
            runs.push(run);
            if target == Target::AtollChurn {
                // Back to the table the plain runs use.
                apps_tx.send_replace(base.clone());
            }
        }
    }
    println!(
        "cpu columns are cores (CPU seconds per second of the run, from /proc): the proxy's, the backend's, and everything \
         else on the machine's (not wrk, the proxies or the backend: other processes and the hypervisor's steal)"
    );
    println!();
    print_summary(args, &targets, &runs);
    println!("other builds at the end: {}", other_builds());
    Ok(())
}

/// CPU seconds the machine has been busy (all cores; steal included).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let fields: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy as f64 / USER_HZ
}

/// CPU seconds of this process (the edge, the churn, wrk's supervision) and of the servers.
fn ours(servers: &Servers) -> f64 {
    process_cpu(std::process::id()).unwrap_or(0.0) + servers.backend.cpu() + servers.haproxy.cpu() + servers.nginx.cpu()
}

/// CPU seconds (user + system, all threads) of one process so far.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat_fields(&stat)?;
    Some(cpu_ticks(&fields)? as f64 / USER_HZ)
}

/// A wrk run against the edge while `churn_rate` route tables a second are sent to it.
async fn with_churn(
    args: &Args,
    dir: &Path,
    ports: &Ports,
    apps_tx: &tokio::sync::watch::Sender<EdgeApps>,
) -> anyhow::Result<(Wrk, ChurnStats)> {
    let metrics_before = edge_metrics(ports).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let churn = churn(args, ports, apps_tx, stopped);
    let load = async {
        let result = wrk(args, dir, ports.edge, args.seconds, "churn").await;
        let _ = stop.send(());
        result
    };
    let ((sent, elapsed), wrk) = tokio::join!(churn, load);
    let wrk = wrk?;
    // Let the edge take the last table before reading its counters.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let metrics_after = edge_metrics(ports).await?;
    let counter = |text: &str| metric_sum(text, "atoll_edge_route_updates_total", &[]);
    let second = format!("backend=\"{}\"", ports.second_backend);
    let to_second = |text: &str| metric_sum(text, "atoll_edge_backend_requests_total", &[&second, "result=\"ok\""]);
    Ok((
        wrk,
        ChurnStats {
            sent,
            elapsed,
            published: counter(&metrics_after).saturating_sub(counter(&metrics_before)),
            to_second_backend: to_second(&metrics_after).saturating_sub(to_second(&metrics_before)),
        },
    ))
}

/// Sends a new table every 1/rate s until `stop` (or a bound of the run's length plus its
/// grace); returns the count sent and the time it took.
async fn churn(
    args: &Args,
    ports: &Ports,
    apps_tx: &tokio::sync::watch::Sender<EdgeApps>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (u64, Duration) {
    let rate = args.churn_rate.max(1);
    let limit = u64::from(rate) * (args.seconds + WRK_GRACE.as_secs());
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < limit {
        tokio::select! {
            _ = &mut stop => break,
            _ = interval.tick() => {
                sent += 1;
                let backends: &[SocketAddr] =
                    if sent % 2 == 1 { &[ports.backend, ports.second_backend] } else { &[ports.backend] };
                apps_tx.send_replace(edge_apps(backends, args.apps, ports.backend, Some(sent)));
            }
        }
    }
    (sent, started.elapsed())
}

/// The apps the edge serves: bench.example on `backends`, `others` apps with a host of their
/// own on `other_backend`, and with `churn`, one more app whose host changes with the number.
fn edge_apps(backends: &[SocketAddr], others: usize, other_backend: SocketAddr, churn: Option<u64>) -> EdgeApps {
    let app = |id: String, host: String, backends: &[SocketAddr]| EdgeApp {
        labels: BTreeMap::from([("ATOLL_EDGE_0_HOST".to_owned(), host)]),
        ports: vec![EdgePort { service_port: None }],
        tasks: backends
            .iter()
            .enumerate()
            .map(|(i, addr)| EdgeTask {
                id: format!("{}.{i}", id.trim_start_matches('/').replace('/', "_")),
                health: TaskHealth::Ready,
                endpoints: vec![Some(*addr)],
            })
            .collect(),
        instances: u32::try_from(backends.len()).unwrap_or(u32::MAX),
        has_health_checks: false,
        id,
    };
    let mut apps = vec![app("/bench".into(), HOST.into(), backends)];
    apps.extend((0..others).map(|i| app(format!("/other/app-{i}"), format!("app-{i}.example"), &[other_backend])));
    if let Some(n) = churn {
        apps.push(app("/churn".into(), format!("churn-{n}.example"), &[other_backend]));
    }
    EdgeApps { apps }
}

async fn edge_metrics(ports: &Ports) -> anyhow::Result<String> {
    let url = format!("http://{}/metrics", ports.admin);
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(response.status().is_success(), "GET {url}: {}", response.status());
    Ok(response.text().await?)
}

/// The sum of the samples of `name` whose labels contain all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A request with `Host: host` and `Connection: close`; the status and the body.
async fn http_get(addr: SocketAddr, host: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .with_context(|| format!("no answer from {addr} within 2s"))??;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response from {addr}: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Waits (bounded) until `target` answers bench.example with the backend's body.
async fn wait_ready(target: Target, addr: SocketAddr, servers: &mut Servers) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        servers.check_running()?;
        match http_get(addr, HOST).await {
            Ok((200, body)) if body == BODY => return Ok(()),
            Ok((status, body)) => last = format!("{status} {body:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} at {addr} did not answer Host {HOST} with 200 {BODY:?} within {START_WAIT:?}; last: {last}",
        target.name()
    )
}

/// What wrk reports for one run.
#[derive(Clone, Debug, Default, PartialEq)]
struct Wrk {
    requests: u64,
    rps: f64,
    p50: Duration,
    p75: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    non_2xx: u64,
    /// connect, read, write, timeout.
    socket_errors: [u64; 4],
    /// CPU seconds wrk itself used (its last reading before it exited).
    client_cpu: f64,
}

impl Wrk {
    fn errors(&self) -> u64 {
        self.non_2xx + self.socket_errors.iter().sum::<u64>()
    }

    fn parse(output: &str) -> anyhow::Result<Wrk> {
        let mut wrk = Wrk::default();
        let (mut rps, mut requests) = (None, None);
        let mut percentiles = BTreeMap::new();
        for line in output.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["Latency", _avg, _stdev, max, ..] => wrk.max = wrk_duration(max)?,
                [percent, value] if percent.ends_with('%') => {
                    percentiles.insert(*percent, wrk_duration(value)?);
                }
                [n, "requests", "in", ..] => requests = Some(n.parse::<u64>().context("requests")?),
                ["Requests/sec:", value] => rps = Some(value.parse::<f64>().context("Requests/sec")?),
                _ => {}
            }
            if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
                wrk.non_2xx = rest.trim().parse().context("Non-2xx or 3xx responses")?;
            }
            if let Some(rest) = line.strip_prefix("Socket errors:") {
                for (i, kind) in ["connect", "read", "write", "timeout"].into_iter().enumerate() {
                    wrk.socket_errors[i] = rest
                        .split(',')
                        .find_map(|part| part.trim().strip_prefix(kind)?.trim().parse().ok())
                        .with_context(|| format!("socket errors: no `{kind} N`"))?;
                }
            }
        }
        wrk.rps = rps.context("no `Requests/sec:` line")?;
        wrk.requests = requests.context("no `N requests in` line")?;
        let percentile = |p: &str| percentiles.get(p).copied().with_context(|| format!("no {p} line (--latency)"));
        wrk.p50 = percentile("50%")?;
        wrk.p75 = percentile("75%")?;
        wrk.p90 = percentile("90%")?;
        wrk.p99 = percentile("99%")?;
        Ok(wrk)
    }
}

/// wrk's times: `523.00us`, `1.23ms`, `2.00s`, `1.00m`, `1.00h`.
fn wrk_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        bail!("`{text}` is not a wrk time")
    };
    let value: f64 = number.parse().with_context(|| format!("`{text}` is not a wrk time"))?;
    Ok(Duration::from_secs_f64(value * unit))
}

/// One wrk run of `seconds` against `addr`; killed (by its group) if it outlives that by
/// WRK_GRACE or the run is interrupted.
async fn wrk(args: &Args, dir: &Path, addr: SocketAddr, seconds: u64, label: &str) -> anyhow::Result<Wrk> {
    let out = dir.join(format!("wrk-{label}.out"));
    let mut command = Command::new(find_program("wrk").context("wrk not found")?);
    command
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Host: {HOST}"))
        .arg(format!("http://{addr}/"))
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(out.with_extension("err"))?);
    let limit = Duration::from_secs(seconds) + WRK_GRACE;
    let (status, client_cpu) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(std::process::ExitStatus, f64)> {
            let mut wrk = Proc::spawn("wrk", command, false, vec![])?;
            let deadline = Instant::now() + limit;
            let mut cpu = 0.0;
            loop {
                cpu = process_cpu(wrk.child.id()).unwrap_or(cpu);
                if let Some(status) = wrk.child.try_wait()? {
                    wrk.reaped = true;
                    return Ok((status, cpu));
                }
                ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted");
                ensure!(Instant::now() < deadline, "wrk did not finish within {limit:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await??;
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    ensure!(status.success(), "wrk failed ({status}):\n{stdout}\n{stderr}");
    let wrk = Wrk::parse(&stdout).with_context(|| format!("parsing wrk's output:\n{stdout}\n{stderr}"))?;
    Ok(Wrk { client_cpu, ..wrk })
}

fn print_header() {
    println!(
        "{:<6} {:<14} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>12} {:>12} {:>10}",
        "round",
        "target",
        "requests/s",
        "p50",
        "p75",
        "p90",
        "p99",
        "max",
        "errors",
        "proxy cpu",
        "µs cpu/req",
        "backend cpu",
        "other cpu"
    );
}

fn print_row(run: &Run) {
    let w = &run.wrk;
    let (cpu, per_request) = match run.proxy_cpu {
        Some(cores) => (format!("{cores:.2}"), format!("{:.1}", cores * 1e6 / w.rps.max(1.0))),
        None => ("-".to_owned(), "-".to_owned()),
    };
    println!(
        "{:<6} {:<14} {:>11.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>12} {:>12.2} {:>10.2}",
        run.round,
        run.target.name(),
        w.rps,
        ms(w.p50),
        ms(w.p75),
        ms(w.p90),
        ms(w.p99),
        ms(w.max),
        w.errors(),
        cpu,
        per_request,
        run.backend_cpu,
        run.other_cpu
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_summary(args: &Args, targets: &[Target], runs: &[Run]) {
    struct Medians {
        rps: f64,
        p50: Duration,
        p99: Duration,
        errors: u64,
        cpu_per_request: Option<f64>,
    }
    let medians = |target: Target| {
        let of = || runs.iter().filter(move |r| r.target == target);
        let p50: Vec<Duration> = of().map(|r| r.wrk.p50).collect();
        let p99: Vec<Duration> = of().map(|r| r.wrk.p99).collect();
        let mut per_request: Vec<f64> = of().filter_map(|r| Some(r.proxy_cpu? * 1e6 / r.wrk.rps.max(1.0))).collect();
        Medians {
            rps: median(&mut of().map(|r| r.wrk.rps).collect::<Vec<_>>()),
            p50: Summary::of(&p50).map_or(Duration::ZERO, |s| s.median),
            p99: Summary::of(&p99).map_or(Duration::ZERO, |s| s.median),
            errors: of().map(|r| r.wrk.errors()).sum(),
            cpu_per_request: (!per_request.is_empty()).then(|| median(&mut per_request)),
        }
    };
    let direct = medians(Target::Direct);
    println!(
        "median of {} round(s); ratios to direct (requests/s: higher is better; latency: lower is better)",
        args.rounds
    );
    println!(
        "{:<14} {:>11} {:>9} {:>10} {:>9} {:>10} {:>9} {:>8} {:>12}",
        "target", "requests/s", "×direct", "p50", "×direct", "p99", "×direct", "errors", "µs cpu/req"
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let mut by_target = BTreeMap::new();
    for &target in targets {
        let m = medians(target);
        println!(
            "{:<14} {:>11.0} {:>9.3} {:>10} {:>9.2} {:>10} {:>9.2} {:>8} {:>12}",
            target.name(),
            m.rps,
            m.rps / direct.rps,
            ms(m.p50),
            ratio(m.p50, direct.p50),
            ms(m.p99),
            ratio(m.p99, direct.p99),
            m.errors,
            m.cpu_per_request.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
        );
        by_target.insert(target.name(), m);
    }
    let (Some(atoll), Some(haproxy), Some(nginx)) =
        (by_target.get("atoll edge"), by_target.get("haproxy"), by_target.get("nginx proxy"))
    else {
        return;
    };
    println!();
    let mut line = String::new();
    for (name, other) in [("haproxy", haproxy), ("nginx proxy", nginx)] {
        let _ = write!(
            line,
            "atoll/{name}: requests/s {:.3}, p50 {:.2}, p99 {:.2}; ",
            atoll.rps / other.rps,
            ratio(atoll.p50, other.p50),
            ratio(atoll.p99, other.p99)
        );
    }
    println!("{}", line.trim_end_matches("; "));

    let churn_runs: Vec<&Run> = runs.iter().filter(|r| r.churn.is_some()).collect();
    if churn_runs.is_empty() {
        return;
    }
    println!();
    println!("route churn (atoll edge, {} tables/s requested, while wrk runs):", args.churn_rate);
    println!(
        "{:<6} {:>11} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9} {:>26} {:>14}",
        "round",
        "requests/s",
        "×no churn",
        "p99",
        "tables sent",
        "per second",
        "published",
        "non-2xx",
        "socket c/r/w/timeout",
        "to 2nd backend"
    );
    let mut paired = Vec::new();
    for run in &churn_runs {
        let Some(churn) = &run.churn else { continue };
        let [c, r, w, t] = run.wrk.socket_errors;
        // The plain edge run of the same round, which ran just before.
        let plain = runs.iter().find(|p| p.round == run.round && p.target == Target::Atoll);
        let vs_plain = plain.map(|p| run.wrk.rps / p.wrk.rps.max(1.0));
        paired.extend(vs_plain);
        println!(
            "{:<6} {:>11.0} {:>10} {:>10} {:>11} {:>11.1} {:>9} {:>9} {:>26} {:>14}",
            run.round,
            run.wrk.rps,
            vs_plain.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")),
            ms(run.wrk.p99),
            churn.sent,
            churn.sent as f64 / churn.elapsed.as_secs_f64().max(1e-9),
            churn.published,
            run.wrk.non_2xx,
            format!("{c}/{r}/{w}/{t}"),
            churn.to_second_backend
        );
    }
    if let Some(churned) = by_target.get("atoll + churn") {
        println!(
            "requests/s with churn / without: {:.3} (median of each round's ratio), {:.3} (ratio of the medians); p99 with / without (medians): {:.2}; errors with churn: {} in {} requests",
            median(&mut paired),
            churned.rps / atoll.rps,
            ratio(churned.p99, atoll.p99),
            churned.errors,
            churn_runs.iter().map(|r| r.wrk.requests).sum::<u64>()
        );
    }
    println!(
        "(HAProxy and nginx take a new route only by reloading their configuration; Marathon-LB reloads HAProxy for every change.)"
    );
}

/// A child in its own process group; dropping it stops the whole group by that group's id
/// (TERM, then KILL), unless it has been reaped and had no other processes.
struct Proc {
    name: String,
    child: std::process::Child,
    /// Whether it forks (nginx's workers): its group may outlive its first process.
    forks: bool,
    reaped: bool,
    logs: Vec<PathBuf>,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, forks: bool, logs: Vec<PathBuf>) -> anyhow::Result<Proc> {
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {name} ({:?})", command.get_program()))?;
        Ok(Proc { name: name.to_owned(), child, forks, reaped: false, logs })
    }

    /// nginx in the foreground with everything it writes under `dir`: `-p DIR -e LOG -c CONF
    /// -g 'daemon off;'`, its configuration checked with `-t` first.
    fn nginx(name: &str, dir: &Path, conf: &str) -> anyhow::Result<Proc> {
        let program = find_program("nginx").context("nginx not found")?;
        let conf_path = dir.join(format!("nginx-{name}.conf"));
        std::fs::write(&conf_path, conf)?;
        // nginx creates the last level of its temporary paths, not their parent.
        std::fs::create_dir_all(dir.join(format!("nginx-{name}-tmp")))?;
        let error_log = dir.join(format!("nginx-{name}.error.log"));
        let args = |command: &mut Command| {
            command.arg("-p").arg(dir).arg("-e").arg(&error_log).arg("-c").arg(&conf_path).arg("-g").arg("daemon off;");
        };
        let mut check = Command::new(&program);
        args(&mut check);
        let out = check.arg("-t").stdin(Stdio::null()).output().context("nginx -t")?;
        ensure!(
            out.status.success(),
            "nginx -t refused the {name} configuration {}:\n{}",
            conf_path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let output = dir.join(format!("nginx-{name}.out"));
        let mut command = Command::new(&program);
        args(&mut command);
        let file = std::fs::File::create(&output)?;
        command.stdout(file.try_clone()?).stderr(file);
        Proc::spawn(&format!("nginx ({name})"), command, true, vec![error_log, output])
    }

    /// HAProxy in the foreground (`-db`), its configuration checked with `-c` first.
    fn haproxy(dir: &Path, conf: &str) -> anyhow::Result<Proc> {
        let program = find_program("haproxy").context("haproxy not found")?;
        let conf_path = dir.join("haproxy.cfg");
        std::fs::write(&conf_path, conf)?;
        let out = Command::new(&program).arg("-c").arg("-f").arg(&conf_path).stdin(Stdio::null()).output()?;
        ensure!(
            out.status.success(),
            "haproxy -c refused {}:\n{}{}",
            conf_path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let output = dir.join("haproxy.out");
        let file = std::fs::File::create(&output)?;
        let mut command = Command::new(&program);
        command.arg("-db").arg("-f").arg(&conf_path).stdout(file.try_clone()?).stderr(file);
        Proc::spawn("haproxy", command, true, vec![output])
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.reaped = true;
            let logs: String = self
                .logs
                .iter()
                .map(|p| format!("--- {}\n{}", p.display(), std::fs::read_to_string(p).unwrap_or_default()))
                .collect();
            bail!("{} exited ({status}); its output:\n{logs}", self.name);
        }
        Ok(())
    }

    /// CPU seconds (user + system) of the processes in its group so far.
    fn cpu(&self) -> f64 {
        let group = self.child.id();
        let ticks: u64 = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter_map(|stat| {
                let (_, fields) = stat_fields(&stat)?;
                (fields.get(2)?.parse::<u32>().ok()? == group).then(|| cpu_ticks(&fields)).flatten()
            })
            .sum();
        ticks as f64 / USER_HZ
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
        if self.reaped && !self.forks {
            return;
        }
        let Some(group) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) else { return };
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.reaped && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.reaped = true;
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever of the group is still there (a worker slow to exit) goes now.
        let _ = kill_process_group(group, Signal::KILL);
        if !self.reaped {
            let _ = self.child.wait();
        }
        // Workers are reparented once their master is gone; wait (bounded) until the group has
        // disappeared, so none is left when the benchmark returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        while test_kill_process_group(group).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A /proc stat line's command name and the fields after it (state first).
fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    Some((stat.get(open + 1..close)?, stat.get(close + 1..)?.split_whitespace().collect()))
}

/// utime + stime (fields 14 and 15 of stat) from the fields after the name.
fn cpu_ticks(fields: &[&str]) -> Option<u64> {
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds of this process's threads named `name` (the edge's runtime).
fn thread_cpu(name: &str) -> f64 {
    let ticks: u64 = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            let (comm, fields) = stat_fields(&stat)?;
            (comm == name).then(|| cpu_ticks(&fields)).flatten()
        })
        .sum();
    ticks as f64 / USER_HZ
}

/// Six distinct free ports on 127.0.0.1 (free when asked; the servers bind them right after).
fn free_ports() -> anyhow::Result<[u16; 6]> {
    let listeners: Vec<std::net::TcpListener> =
        (0..6).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
    ports.try_into().map_err(|_| anyhow::anyhow!("expected six ports"))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The first line of `program args` (stdout or stderr) without `prefix`, up to its first space.
fn version(program: &str, args: &[&str], prefix: &str) -> String {
    let Some(path) = find_program(program) else { return "?".to_owned() };
    Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            let line = text.lines().find(|l| l.starts_with(prefix))?;
            Some(line[prefix.len()..].split_whitespace().next()?.to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// nginx's temporary paths (Debian's defaults are under /var/lib/nginx), its pid file and the
/// events block, all under `dir`.
fn nginx_common(dir: &Path, name: &str, workers: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};\n\
         pid {d}/nginx-{name}.pid;\n\
         error_log {d}/nginx-{name}.error.log warn;\n\
         events {{ worker_connections 4096; }}\n"
    ) + &format!(
        "http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/nginx-{name}-tmp/body;\n\
         \x20   proxy_temp_path {d}/nginx-{name}-tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/nginx-{name}-tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/nginx-{name}-tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/nginx-{name}-tmp/scgi;\n\
         \x20   default_type text/plain;\n\
         \x20   keepalive_timeout 60s;\n\
         \x20   keepalive_requests 1000000;\n"
    )
}

/// The backend: one worker, a fixed 6-byte body on two ports.
fn backend_conf(dir: &Path, ports: &Ports) -> String {
    nginx_common(dir, "backend", 1)
        + &format!(
            "\x20   server {{\n\
             \x20       listen {} default_server;\n\
             \x20       listen {} default_server;\n\
             \x20       location / {{ return 200 \"hello\\n\"; }}\n\
             \x20   }}\n\
             }}\n",
            ports.backend, ports.second_backend
        )
}

/// nginx as a proxy: bench.example to the backend over kept-alive HTTP/1.1 connections, any
/// other host 404.
fn nginx_proxy_conf(dir: &Path, ports: &Ports, workers: usize) -> String {
    nginx_common(dir, "proxy", workers)
        + &format!(
            "\x20   upstream bench {{\n\
             \x20       server {backend};\n\
             \x20       keepalive 128;\n\
             \x20       keepalive_requests 1000000;\n\
             \x20   }}\n\
             \x20   server {{\n\
             \x20       listen {listen} default_server;\n\
             \x20       return 404;\n\
             \x20   }}\n\
             \x20   server {{\n\
             \x20       listen {listen};\n\
             \x20       server_name {HOST};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://bench;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_set_header Host $host;\n\
             \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20           proxy_set_header X-Forwarded-Host $host;\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n",
            backend = ports.backend,
            listen = ports.nginx,
        )
}

/// HAProxy: bench.example (by the Host header) to the backend, connections to it kept alive and
/// reused (`http-reuse safe`), any other host 503 (no backend).
fn haproxy_conf(ports: &Ports, threads: usize) -> String {
    format!(
        "global\n\
         \x20   nbthread {threads}\n\
         \x20   maxconn 4096\n\
         defaults\n\
         \x20   mode http\n\
         \x20   option http-keep-alive\n\
         \x20   http-reuse safe\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   timeout http-keep-alive 60s\n\
         frontend edge\n\
         \x20   bind {listen}\n\
         \x20   option forwardfor\n\
         \x20   http-request set-header X-Forwarded-Proto http\n\
         \x20   http-request set-header X-Forwarded-Host %[req.hdr(host)]\n\
         \x20   acl bench hdr(host) -i {HOST}\n\
         \x20   use_backend bench if bench\n\
         backend bench\n\
         \x20   server backend {backend}\n",
        listen = ports.haproxy,
        backend = ports.backend,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let output = "Running 10s test @ http://127.0.0.1:8080/\n\
              2 threads and 64 connections\n\
              Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                Latency   620.34us  300.12us  12.00ms   90.00%\n\
                Req/Sec    50.12k     3.21k   60.00k    70.00%\n\
              Latency Distribution\n\
                 50%  500.00us\n\
                 75%  700.00us\n\
                 90%    1.10ms\n\
                 99%    2.50ms\n\
              1003456 requests in 10.00s, 120.34MB read\n\
              Socket errors: connect 0, read 3, write 0, timeout 2\n\
              Non-2xx or 3xx responses: 5\n\
            Requests/sec: 100345.60\n\
            Transfer/sec:     12.03MB\n";
        let wrk = Wrk::parse(output).unwrap();
        assert_eq!(wrk.requests, 1_003_456);
        assert!((wrk.rps - 100_345.6).abs() < 1e-6);
        assert_eq!(wrk.p50, Duration::from_micros(500));
        assert_eq!(wrk.p90, Duration::from_micros(1100));
        assert_eq!(wrk.p99, Duration::from_micros(2500));
        assert_eq!(wrk.max, Duration::from_millis(12));
        assert_eq!((wrk.non_2xx, wrk.socket_errors), (5, [0, 3, 0, 2]));
        assert_eq!(wrk.errors(), 10);
        assert!(Wrk::parse("Requests/sec: 1.0\n").is_err());
        assert_eq!(wrk_duration("2.00s").unwrap(), Duration::from_secs(2));
        assert!(wrk_duration("2.00x").is_err());
    }

    #[test]
    fn metric_sums_match_name_and_labels() {
        let text = "atoll_edge_route_updates_total 12\n\
                    atoll_edge_route_updates_total_other 5\n\
                    atoll_edge_backend_requests_total{route=\"/bench:0\",backend=\"127.0.0.1:2\",result=\"ok\"} 7\n\
                    atoll_edge_backend_requests_total{route=\"/bench:0\",backend=\"127.0.0.1:2\",result=\"failed\"} 1\n";
        assert_eq!(metric_sum(text, "atoll_edge_route_updates_total", &[]), 12);
        assert_eq!(
            metric_sum(text, "atoll_edge_backend_requests_total", &["backend=\"127.0.0.1:2\"", "result=\"ok\""]),
            7
        );
    }
}
