//! Container start: the time from `POST /v2/apps` to all instances of a container-network app
//! RUNNING (and to all of them having their own IP) on one real agent, next to the same app on
//! the host network, on the same agent in the same run.
//!
//! `cargo build --release -p atoll && cargo run --release -p atoll-bench --bin container-start`
//!
//! Needs root (network namespaces, cgroups) and the release `atoll` binary
//! (`target/release/atoll`, or `--atoll PATH`). What it sets up, all removed at the end (by PID
//! and by name, also after an error or Ctrl-C):
//!
//! - a network namespace as the agent's "host" (`atbh<tag>`, `lo` up) joined to this process's
//!   namespace by a veth pair: `atbm<tag>` here with 198.19.255.250/30, `eth0` there with
//!   198.19.255.249/30 (a corner of the test hosts' 198.19.255.0/24 that the system tests leave
//!   alone, so both can run at once). Nothing else is routed: the containers' subnet
//!   (198.18.0.0/16) exists only inside the host namespace, and the bench never sends anything
//!   there.
//! - `atoll master --listen 198.19.255.250:PORT` (a child process, its data in a temp dir), with
//!   its default settings;
//! - `atoll agent --container-networking` in the host namespace (only the network namespace is
//!   switched, by `setns` before exec, so task namespaces mounted under /run/netns stay visible),
//!   with `--resources 'cpus:64;mem:65536;ports:[20000-21000]'`.
//!
//! Each measurement deploys one app (`exec sleep 600`, cpus 0.01, mem 8) of `--instances`
//! instances through the master's Marathon API, polls `GET /v2/apps/ID` every 50 ms (at most
//! 5 minutes) until every instance is RUNNING (and, on the container network, has an IP), then
//! deletes the app and waits until the agent has no live task and no lease left.

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use atoll_bench::{machine, ms, other_builds};
use atoll_ipam::IpNetwork;
use atoll_proto::model::TaskState;
use clap::Parser;
use rustix::process::{Pid, Signal};
use serde_json::{Value, json};

/// The bench's link to its host namespace: a /30 of the test hosts' range 198.19.255.0/24 that
/// the system tests do not use (they put their master on .254 and hosts on .1-.3 with a /24
/// route), so a test running at the same time keeps its routes and this bench keeps its own.
const LINK_PREFIX: u8 = 30;
const MASTER_IP: &str = "198.19.255.250";
const HOST_IP: &str = "198.19.255.249";
const AGENT_PORT: u16 = 5051;
const RESOURCES: &str = "cpus:64;mem:65536;ports:[20000-21000]";
const POLL: Duration = Duration::from_millis(50);
const START_LIMIT: Duration = Duration::from_secs(300);
const SETUP_LIMIT: Duration = Duration::from_secs(60);
const TEARDOWN_LIMIT: Duration = Duration::from_secs(120);
/// How long a stopped daemon gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "time to start N container-network tasks on one agent, next to N host-network tasks")]
struct Args {
    /// Instances of the app.
    #[arg(long, default_value_t = 100)]
    instances: usize,
    /// Rounds; each measures both networks, alternating which goes first.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The `atoll` binary [default: target/release/atoll next to this benchmark].
    #[arg(long)]
    atoll: Option<PathBuf>,
    /// Copy the master's and the agent's logs (ATOLL_LOG, default info) into this directory at the end.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Container,
    Host,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::Container => "container",
            Net::Host => "host",
        }
    }
}

/// One deployment's timings, all from the POST.
struct Run {
    net: Net,
    first_running: Duration,
    half_running: Duration,
    all_running: Duration,
    /// Every instance reported its own address (the master shows the agent's until then).
    all_ip: Option<Duration>,
    /// From the DELETE to no live task and no lease on the agent.
    teardown: Duration,
    polls: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!((1..=500).contains(&args.instances), "--instances must be 1..=500 (the agent offers 1001 ports)");
    ensure!((1..=10).contains(&args.rounds), "--rounds must be 1..=10");
    ensure!(rustix::process::geteuid().is_root(), "container-start needs root (network namespaces, cgroups)");
    let atoll = match &args.atoll {
        Some(path) => path.clone(),
        None => default_atoll()?,
    };
    ensure!(atoll.exists(), "{} is missing: build it first with `cargo build --release -p atoll`", atoll.display());
    ensure!(Command::new("ip").arg("-V").output().is_ok(), "`ip` is missing (apt-get install -y iproute2)");

    let mut setup = Setup::new(atoll)?;
    let outcome = tokio::select! {
        result = bench(&args, &mut setup) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if outcome.is_err() {
        eprintln!("{}", setup.logs());
    }
    if let Some(dir) = &args.keep_logs {
        setup.keep_logs(dir);
    }
    // Whatever happened: the apps go first (through the master, which kills their tasks), then
    // the guard stops the agent, runs its cleanup, stops the master and deletes the namespace.
    if let Some(api) = setup.api.clone() {
        for id in ["/bench-container", "/bench-host"] {
            let _ = api.delete_app(id).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), api.wait_agent_idle(&setup.agent_api())).await;
    }
    drop(setup);
    outcome
}

fn default_atoll() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory for this executable")?;
    // target/release/container-start, or target/release/deps/container-start-HASH.
    let dir = if dir.ends_with("deps") { dir.parent().unwrap_or(dir) } else { dir };
    Ok(dir.join("atoll"))
}

async fn bench(args: &Args, setup: &mut Setup) -> anyhow::Result<()> {
    setup.create_network()?;
    let port = setup.start_master()?;
    let api = Api::new(format!("http://{MASTER_IP}:{port}"))?;
    setup.api = Some(api.clone());
    api.wait_healthy().await.context("the master did not come up")?;
    setup.start_agent(&api.url)?;
    let subnet: IpNetwork =
        api.wait_agent_subnet().await.context("the agent did not register with a subnet")?.parse()?;

    println!("machine: {}", machine());
    println!("other compilations at the start: {}", other_builds());
    println!(
        "one agent in network namespace {} ({HOST_IP}, subnet {subnet}), resources {RESOURCES}; \
         master at {MASTER_IP}:{port} (default settings)",
        setup.netns
    );
    println!(
        "app: {} instances of `exec sleep 600`, cpus 0.01, mem 8; GET /v2/apps/ID every {} ms",
        args.instances,
        POLL.as_millis()
    );
    println!();

    let mut runs = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [Net::Container, Net::Host] } else { [Net::Host, Net::Container] };
        for net in order {
            let run = deploy(&api, &setup.agent_api(), subnet, net, args.instances).await?;
            print_run(round + 1, &run);
            runs.push(run);
        }
    }

    println!();
    let mean = |net: Net, f: fn(&Run) -> Option<Duration>| -> Option<Duration> {
        let values: Vec<Duration> = runs.iter().filter(|r| r.net == net).filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum::<Duration>() / values.len() as u32)
    };
    let container = mean(Net::Container, |r| Some(r.all_running)).context("no container run")?;
    let host = mean(Net::Host, |r| Some(r.all_running)).context("no host run")?;
    println!("all {} RUNNING, mean over {} round(s):", args.instances, args.rounds);
    println!("  container network  {:>12}", ms(container));
    println!("  host network       {:>12}", ms(host));
    println!("  ratio container/host: {:.2}", container.as_secs_f64() / host.as_secs_f64());
    if let Some(ip) = mean(Net::Container, |r| r.all_ip) {
        println!("  container network, all with an IP: {}", ms(ip));
    }
    let per_task = container.saturating_sub(host) / args.instances as u32;
    println!("  container networking's extra cost per task (difference / instances): {}", ms(per_task));
    println!("other compilations at the end: {}", other_builds());
    Ok(())
}

fn print_run(round: usize, run: &Run) {
    static HEADER: std::sync::Once = std::sync::Once::new();
    HEADER.call_once(|| {
        println!(
            "{:<6} {:<10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>6}",
            "round", "network", "first RUN", "half RUN", "all RUNNING", "all with IP", "teardown", "polls"
        );
    });
    println!(
        "{:<6} {:<10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>6}",
        round,
        run.net.name(),
        ms(run.first_running),
        ms(run.half_running),
        ms(run.all_running),
        run.all_ip.map_or_else(|| "-".to_owned(), ms),
        ms(run.teardown),
        run.polls
    );
}

async fn deploy(api: &Api, agent: &str, subnet: IpNetwork, net: Net, instances: usize) -> anyhow::Result<Run> {
    let id = format!("/bench-{}", net.name());
    let mut app = json!({
        "id": id,
        "instances": instances,
        "cmd": "exec sleep 600",
        "cpus": 0.01,
        "mem": 8,
    });
    if net == Net::Container {
        app["networks"] = json!([{ "mode": "container", "name": "atoll" }]);
    }
    let start = Instant::now();
    let (status, body) = api.post("/v2/apps", &app).await?;
    ensure!(status == 201, "POST /v2/apps {id}: {status} {body}");

    let mut running_at: HashMap<String, Duration> = HashMap::new();
    let mut all_ip = None;
    let mut polls = 0;
    let all_running = loop {
        ensure!(start.elapsed() < START_LIMIT, "{id}: not all {instances} RUNNING within {START_LIMIT:?}");
        tokio::time::sleep(POLL).await;
        polls += 1;
        let view = api.get(&format!("/v2/apps{id}")).await?;
        let now = start.elapsed();
        let tasks = view["app"]["tasks"].as_array().cloned().unwrap_or_default();
        // Until the agent reports the task's own address, the master shows the agent's.
        let mut own_ip: HashMap<IpAddr, Vec<&str>> = HashMap::new();
        for task in &tasks {
            let task_id = task["id"].as_str().unwrap_or_default();
            if task["state"] == "TASK_RUNNING" {
                running_at.entry(task_id.to_owned()).or_insert(now);
            }
            let ip = task["ipAddresses"][0]["ipAddress"].as_str().and_then(|ip| ip.parse::<IpAddr>().ok());
            if let Some(ip) = ip.filter(|ip| ip.to_string() != HOST_IP) {
                own_ip.entry(ip).or_default().push(task_id);
            }
        }
        if net == Net::Container {
            let shared: Vec<_> = own_ip.iter().filter(|(_, tasks)| tasks.len() > 1).collect();
            ensure!(shared.is_empty(), "{id}: tasks share an address: {shared:?}");
            let outside: Vec<_> = own_ip.keys().filter(|ip| !subnet.contains(**ip)).collect();
            ensure!(outside.is_empty(), "{id}: addresses outside the agent's subnet {subnet}: {outside:?}");
            if all_ip.is_none() && own_ip.len() >= instances {
                all_ip = Some(now);
            }
        }
        let running = tasks.iter().filter(|t| t["state"] == "TASK_RUNNING").count();
        if running >= instances && (net == Net::Host || all_ip.is_some()) {
            break now;
        }
    };
    let mut times: Vec<Duration> = running_at.values().copied().collect();
    times.sort_unstable();
    let first_running = times[0];
    let half_running = times[(times.len() - 1) / 2];

    let removed = Instant::now();
    api.delete_app(&id).await?;
    api.wait_agent_idle(agent).await.with_context(|| format!("{id}: the agent did not stop its tasks"))?;
    let teardown = removed.elapsed();
    Ok(Run {
        net,
        first_running,
        half_running,
        all_running,
        all_ip: if net == Net::Container { all_ip } else { None },
        teardown,
        polls,
    })
}

/// The master's HTTP API.
#[derive(Clone)]
struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    fn new(url: String) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
        Ok(Api { url, http })
    }

    async fn get_url(&self, url: &str) -> anyhow::Result<(u16, Value)> {
        let response = self.http.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get_url(&format!("{}{path}", self.url)).await?;
        ensure!((200..300).contains(&status), "GET {path}: {status} {body}");
        Ok(body)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self.http.post(format!("{}{path}", self.url)).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Removes an app (kills its tasks); an app that is not there is fine.
    async fn delete_app(&self, id: &str) -> anyhow::Result<()> {
        let response = self.http.delete(format!("{}/v2/apps{id}?force=true", self.url)).send().await?;
        let status = response.status().as_u16();
        ensure!(status < 300 || status == 404, "DELETE /v2/apps{id}: {status}");
        Ok(())
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETUP_LIMIT;
        loop {
            if let Ok(r) = self.http.get(format!("{}/health", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "no answer on {}/health within {SETUP_LIMIT:?}", self.url);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the agent to be ACTIVE with a subnet of the default pool; returns the subnet.
    async fn wait_agent_subnet(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + SETUP_LIMIT;
        loop {
            if let Ok(nodes) = self.get("/v1/nodes").await
                && let Some(subnet) = nodes.as_array().and_then(|n| {
                    n.iter()
                        .filter(|a| a["state"] == "ACTIVE")
                        .find_map(|a| a["subnets"][0]["network"].as_str().map(str::to_owned))
                })
            {
                return Ok(subnet);
            }
            ensure!(Instant::now() < deadline, "no ACTIVE agent with a subnet within {SETUP_LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the agent (its own `/v1/state`) has no live task and no address lease.
    async fn wait_agent_idle(&self, agent: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + TEARDOWN_LIMIT;
        loop {
            if let Ok((200, state)) = self.get_url(&format!("{agent}/v1/state")).await {
                let live = state["tasks"].as_array().map_or(0, |tasks| tasks.iter().filter(|t| is_live(t)).count());
                let leases = state["networks"]["leases"].as_array().map_or(0, Vec::len);
                if live == 0 && leases == 0 {
                    return Ok(());
                }
            }
            ensure!(Instant::now() < deadline, "the agent still had tasks or leases after {TEARDOWN_LIMIT:?}");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A task the agent still runs (any state but a terminal one).
fn is_live(task: &Value) -> bool {
    serde_json::from_value::<TaskState>(task["state"].clone()).is_ok_and(|s| !s.is_terminal())
}

/// Everything the bench creates outside itself; removed on drop, by PID and by name.
struct Setup {
    atoll: PathBuf,
    netns: String,
    veth: String,
    netns_created: bool,
    veth_created: bool,
    master: Option<Child>,
    agent: Option<Child>,
    api: Option<Api>,
    keep_logs: Option<PathBuf>,
    /// Master and agent data and logs; removed after the agent's cleanup ran.
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(atoll: PathBuf) -> anyhow::Result<Setup> {
        let tag = format!("{}", std::process::id() % 1_000_000);
        let dir = tempfile::Builder::new().prefix("atoll-bench-container-start.").tempdir()?;
        Ok(Setup {
            atoll,
            netns: format!("atbh{tag}"),
            veth: format!("atbm{tag}"),
            netns_created: false,
            veth_created: false,
            master: None,
            agent: None,
            api: None,
            keep_logs: None,
            dir,
        })
    }

    fn agent_api(&self) -> String {
        format!("http://{HOST_IP}:{AGENT_PORT}")
    }

    fn agent_data(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn create_network(&mut self) -> anyhow::Result<()> {
        let existing = String::from_utf8_lossy(&Command::new("ip").args(["-br", "addr"]).output()?.stdout).to_string();
        ensure!(
            !existing.contains(&format!("{MASTER_IP}/")),
            "{MASTER_IP} is already on an interface here (another container-start running?)"
        );
        ip(&["netns", "add", &self.netns])?;
        self.netns_created = true;
        ip(&["-n", &self.netns, "link", "set", "lo", "up"])?;
        ip(&["link", "add", &self.veth, "type", "veth", "peer", "name", "eth0", "netns", &self.netns])?;
        self.veth_created = true;
        ip(&["addr", "add", &format!("{MASTER_IP}/{LINK_PREFIX}"), "dev", &self.veth])?;
        ip(&["link", "set", &self.veth, "up"])?;
        ip(&["-n", &self.netns, "addr", "add", &format!("{HOST_IP}/{LINK_PREFIX}"), "dev", "eth0"])?;
        ip(&["-n", &self.netns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Starts the master on a free port of the master's address; returns the port.
    fn start_master(&mut self) -> anyhow::Result<u16> {
        let port = std::net::TcpListener::bind((MASTER_IP, 0))?.local_addr()?.port();
        let log = File::create(self.dir.path().join("master.log"))?;
        let child = Command::new(&self.atoll)
            .args(["master", "--listen", &format!("{MASTER_IP}:{port}")])
            .arg("--data-dir")
            .arg(self.dir.path().join("master"))
            .env("ATOLL_LOG", log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start atoll master")?;
        self.master = Some(child);
        Ok(port)
    }

    fn start_agent(&mut self, master: &str) -> anyhow::Result<()> {
        let log = File::create(self.dir.path().join("agent.log"))?;
        let child = self
            .in_host()?
            .args(["agent", "--master", master, "--listen", &format!("{HOST_IP}:{AGENT_PORT}")])
            .args(["--advertise-ip", HOST_IP, "--container-networking", "--resources", RESOURCES])
            .arg("--data-dir")
            .arg(self.agent_data())
            .env("ATOLL_LOG", log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start atoll agent")?;
        self.agent = Some(child);
        Ok(())
    }

    /// `atoll` with only its network namespace switched to the host's (never `ip netns exec`,
    /// which would give it a mount namespace of its own and hide the task namespaces it mounts).
    fn in_host(&self) -> anyhow::Result<Command> {
        let netns = File::open(Path::new("/run/netns").join(&self.netns))?;
        let mut command = Command::new(&self.atoll);
        // SAFETY: setns is a single system call, async-signal-safe; the file was opened before
        // the fork and moves into the closure, so its fd stays open until the command is dropped.
        unsafe {
            command.pre_exec(move || {
                rustix::thread::move_into_link_name_space(
                    netns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(std::io::Error::from)
            });
        }
        Ok(command)
    }

    /// Copied when the daemons are stopped (the guard's drop), so the logs are complete.
    fn keep_logs(&mut self, dir: &Path) {
        self.keep_logs = Some(dir.to_path_buf());
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["master.log", "agent.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name} (last 30 lines)\n"));
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// SIGTERM, then SIGKILL after the grace period; always reaped.
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            stop(&mut agent);
        }
        // The agent's cleanup kills what is left of its tasks, removes their cgroups and, where
        // its bridge and veths are, its container networks.
        if self.netns_created && self.agent_data().exists() {
            match self.in_host() {
                Ok(mut command) => {
                    let status = command
                        .args(["agent", "--cleanup", "--master", "http://127.0.0.1:9"])
                        .arg("--data-dir")
                        .arg(self.agent_data())
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .status();
                    if !status.as_ref().is_ok_and(|s| s.success()) {
                        eprintln!("warning: `atoll agent --cleanup` failed in {}: {status:?}", self.netns);
                    }
                }
                Err(e) => eprintln!("warning: cannot enter {}: {e}", self.netns),
            }
        }
        if let Some(mut master) = self.master.take() {
            stop(&mut master);
        }
        if let Some(dir) = &self.keep_logs {
            let _ = std::fs::create_dir_all(dir);
            for name in ["master.log", "agent.log"] {
                if let Err(e) = std::fs::copy(self.dir.path().join(name), dir.join(name)) {
                    eprintln!("warning: cannot keep {name} in {}: {e}", dir.display());
                }
            }
        }
        if self.veth_created {
            let _ = Command::new("ip").args(["link", "del", &self.veth]).stderr(Stdio::null()).status();
        }
        if self.netns_created {
            let _ = Command::new("ip").args(["netns", "del", &self.netns]).stderr(Stdio::null()).status();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The daemons' log filter: `ATOLL_LOG` of this process if set, else `info`.
fn log_filter() -> String {
    std::env::var("ATOLL_LOG").unwrap_or_else(|_| "info".to_owned())
}
