//! VIP: new TCP connections/s and request/response latency directly to a backend, through an
//! Atoll VIP (the `lb/l4` cgroup `connect4` program) and through nftables DNAT the way
//! kube-proxy's nftables mode programs it, with 1 service and with 10,000 (a verdict map, and
//! iptables-mode style linear rules), all in one run, with the ratios to direct. IPVS is not in
//! this kernel.
//!
//! `cargo build --release -p atoll-bench --bin vip && target/release/vip` (root)
//!
//! Everything happens inside a network namespace of the process's own (`unshare` first thing
//! in `main`; it dies with the process): the backend on 198.18.255.1:8080 (added to `lo`),
//! Atoll VIPs in 198.19.0.0/18 (blackholed, as `atoll lb` does for the VIP pool), nft service
//! addresses in 198.19.64.0/18 (routed to `lo`, as a ClusterIP range is routed on a node). The
//! Atoll programs attach to a cgroup v2 child of the bench's own (`atoll-bench-vip-<pid>`, pins
//! in `/sys/fs/bpf/atoll-bench-vip-<pid>`); the process moves into it for the Atoll modes only.
//! A guard detaches and unpins the programs and removes the cgroup at the end, after an error
//! and after Ctrl-C; leftovers of a killed run (its pid gone) are removed at the next start.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use atoll_bench::{Percentiles, Summary, machine, other_builds};
use atoll_lb_core::dataplane::{DataplanePlan, MapOp};
use atoll_lb_core::service_key;
use atoll_lb_core::vips::{BackendSpec, Service};
use atoll_lb_l4::{DEFAULT_MAGLEV_SIZE, Dataplane, L4Options, PROTO_TCP, cgroup2_root};
use clap::Parser;

/// The backend's address, added to `lo` in the private namespace (198.18.0.0/15 is the
/// benchmarking range).
const BACKEND_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
const BACKEND_PORT: u16 = 8080;
/// Backends of the services that are never connected to: port `OTHER_PORTS + i` for service
/// `i` (nothing listens there).
const OTHER_PORTS: u16 = 20000;
/// Atoll VIPs: `ATOLL_NET + 1 + i`, in a blackholed /18 of the VIP pool 198.19.0.0/17.
const ATOLL_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
/// nft service addresses: `NFT_NET + 1 + i`, in the other /18 of the pool, routed to `lo`.
const NFT_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 64, 0);
const VIP_POOL: &str = "198.19.0.0/17";
const NFT_ROUTE: &str = "198.19.64.0/18";
const SERVICE_PORT: u16 = 80;
/// Request and response size.
const MSG: usize = 64;
const NFT_TABLE: &str = "atoll_bench";
const PREFIX: &str = "atoll-bench-vip-";
/// Socket timeouts (a connection that hangs fails instead).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections each backend worker keeps at most (more are closed on accept).
const MAX_CONNS: usize = 4096;
const MAX_SERVICES: usize = 16000;

#[derive(Parser, Debug)]
#[command(
    about = "TCP connections/s and request/response latency: direct, through an Atoll VIP, through nftables DNAT"
)]
struct Args {
    /// Rounds; each measures every mode (every second round in reverse order); the table
    /// shows medians.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of the connection-rate measurement per mode and round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Client threads of the connection-rate measurement.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed round trips on one persistent connection per mode and round (after 1,000 untimed).
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Services in the "many" modes (Atoll and nft).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Backend server threads (epoll each).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

// ---- Ctrl-C ------------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn check_interrupted() -> Result<()> {
    ensure!(!interrupted(), "interrupted");
    Ok(())
}

// ---- The modes ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Direct,
    Atoll1,
    AtollMany,
    Nft1,
    NftMap,
    NftLinear,
}

impl Mode {
    const ALL: [Mode; 6] = [Mode::Direct, Mode::Atoll1, Mode::AtollMany, Mode::Nft1, Mode::NftMap, Mode::NftLinear];

    fn label(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Atoll1 => "atoll VIP",
            Mode::AtollMany => "atoll VIP",
            Mode::Nft1 => "nft DNAT (map)",
            Mode::NftMap => "nft DNAT (map)",
            Mode::NftLinear => "nft DNAT (linear)",
        }
    }

    fn services(self, many: usize) -> usize {
        match self {
            Mode::Direct => 0,
            Mode::Atoll1 | Mode::Nft1 => 1,
            Mode::AtollMany | Mode::NftMap | Mode::NftLinear => many,
        }
    }

    fn is_atoll(self) -> bool {
        matches!(self, Mode::Atoll1 | Mode::AtollMany)
    }

    fn is_nft(self) -> bool {
        matches!(self, Mode::Nft1 | Mode::NftMap | Mode::NftLinear)
    }

    /// Where the clients connect: the measured service is always the last one (index
    /// `many - 1`), so it is the last rule in the linear ruleset.
    fn target(self, many: usize) -> SocketAddrV4 {
        match self {
            Mode::Direct => SocketAddrV4::new(BACKEND_IP, BACKEND_PORT),
            Mode::Atoll1 | Mode::AtollMany => SocketAddrV4::new(nth(ATOLL_NET, many - 1), SERVICE_PORT),
            Mode::Nft1 | Mode::NftMap | Mode::NftLinear => SocketAddrV4::new(nth(NFT_NET, many - 1), SERVICE_PORT),
        }
    }
}

fn nth(net: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net) + 1 + i as u32)
}

/// Service `i`'s backend port: the live backend for the measured (last) one, a dead port for
/// the others.
fn backend_port(i: usize, many: usize) -> u16 {
    if i == many - 1 { BACKEND_PORT } else { OTHER_PORTS + i as u16 }
}

// ---- Main --------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!((1..=10).contains(&args.rounds), "--rounds must be 1..=10");
    ensure!((0.2..=30.0).contains(&args.seconds), "--seconds must be 0.2..=30");
    ensure!((1..=16).contains(&args.threads), "--threads must be 1..=16");
    ensure!((100..=1_000_000).contains(&args.round_trips), "--round-trips must be 100..=1000000");
    ensure!((2..=MAX_SERVICES).contains(&args.services), "--services must be 2..={MAX_SERVICES}");
    ensure!((1..=16).contains(&args.workers), "--workers must be 1..=16");
    ensure!(
        rustix::process::geteuid().is_root(),
        "vip needs root (a network namespace, BPF programs on a cgroup of its own, nftables); run it as root"
    );
    // Before any thread exists: the whole process gets a network namespace of its own.
    // SAFETY: a plain system call; no other thread shares this process's namespaces yet.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
    let nft_version = command_output("nft", &["--version"])
        .context("`nft` is missing (apt-get install -y nftables)")?
        .trim()
        .to_owned();
    setup_namespace()?;

    let uname = rustix::system::uname();
    println!("machine: {}", machine());
    println!("kernel {}, {nft_version}", uname.release().to_string_lossy());
    println!("other compilations at the start: {}", other_builds());

    let backend = BackendServer::start(SocketAddrV4::new(BACKEND_IP, BACKEND_PORT), args.workers)?;
    let mut sandbox = Sandbox::new(args.services)?;
    let outcome = bench(&args, &mut sandbox, &backend);
    // The guard runs whatever happened (also on Ctrl-C, which ends the loops above).
    drop(sandbox);
    drop(backend);
    outcome?;
    println!("other compilations at the end: {}", other_builds());
    Ok(())
}

fn bench(args: &Args, sandbox: &mut Sandbox, backend: &BackendServer) -> Result<()> {
    let dp = sandbox.dataplane.as_ref().context("no dataplane")?;
    println!(
        "atoll: eBPF object {}, cgroup {}, pins {}, Maglev M = {}, {} tables",
        atoll_lb_l4::OBJECT_ORIGIN,
        sandbox.cgroup.display(),
        sandbox.options.pin_dir.display(),
        dp.config().maglev_size,
        dp.config().max_tables,
    );
    println!(
        "backend {BACKEND_IP}:{BACKEND_PORT} ({} epoll threads), {MSG}-byte request and response; \
         connections: {} client threads for {} s, each connect + 1 request/response + close; \
         latency: {} round trips on one connection",
        args.workers, args.threads, args.seconds, args.round_trips
    );
    println!(
        "measured service: atoll {}, nft {} (the last of {} in the 'many' modes; the last rule of the linear chain)",
        Mode::Atoll1.target(args.services),
        Mode::Nft1.target(args.services),
        args.services
    );
    println!();

    let mut state = State { sandbox, plan: None, atoll_installed: 0, nft: None, many: args.services };
    let mut samples: Vec<Sample> = Vec::new();
    let mut setups: Vec<String> = Vec::new();
    println!(
        "{:<5} {:<18} {:>8} {:>10} {:>10} {:>7} {:>10} {:>6} {:>10} {:>10} {:>10}",
        "round", "mode", "services", "conn/s", "conns", "errors", "CPU/conn", "CPU%", "rr p50", "rr p99", "rr max"
    );
    for round in 0..args.rounds {
        let mut order = Mode::ALL.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            check_interrupted()?;
            if let Some(setup) = state.prepare(mode)? {
                setups.push(format!("round {}: {setup}", round + 1));
            }
            let target = mode.target(args.services);
            check_path(target)?;
            let before = state.vip_connections()?;
            let conns = connections(target, args.threads, Duration::from_secs_f64(args.seconds))?;
            check_interrupted()?;
            let rr = on_one_cpu(|| round_trips(target, args.round_trips))??;
            check_interrupted()?;
            if mode.is_atoll() {
                // Every connection went through the program: its counter for the service moved
                // by at least as many connect()s as succeeded (plus the latency connection).
                let counted = state.vip_connections()?.saturating_sub(before);
                ensure!(
                    counted > conns.ok,
                    "the VIP's counter moved by {counted}, but {} connections succeeded",
                    conns.ok
                );
            }
            let sample = Sample { round, mode, services: mode.services(args.services), conns, rr };
            sample.print();
            samples.push(sample);
        }
    }
    state.prepare(Mode::Direct)?;
    ensure!(backend.errors() == 0, "the backend had {} write errors", backend.errors());

    println!();
    println!("setup (not measured):");
    for line in &setups {
        println!("  {line}");
    }
    println!();
    report(&samples, args.rounds);
    Ok(())
}

/// One mode's measurements in one round.
struct Sample {
    round: usize,
    mode: Mode,
    services: usize,
    conns: ConnResult,
    rr: Percentiles,
}

impl Sample {
    fn print(&self) {
        println!(
            "{:<5} {:<18} {:>8} {:>10.0} {:>10} {:>7} {:>10} {:>6.0} {:>10} {:>10} {:>10}",
            self.round + 1,
            self.mode.label(),
            services_label(self.services),
            self.conns.rate(),
            self.conns.ok,
            self.conns.errors,
            us(self.conns.cpu_per_conn()),
            self.conns.cpu_share() * 100.0,
            us(self.rr.p50),
            us(self.rr.p99),
            us(self.rr.max),
        );
    }
}

fn services_label(n: usize) -> String {
    if n == 0 { "-".to_owned() } else { n.to_string() }
}

/// Medians over the rounds; each ratio is the median of the per-round ratios to the same
/// round's direct measurement (the machine's load drifts between rounds more than within one).
fn report(samples: &[Sample], rounds: usize) {
    let direct = |round: usize| samples.iter().find(|s| s.round == round && s.mode == Mode::Direct);
    println!("median of {rounds} round(s); / direct: median of the per-round ratios to direct");
    println!("(conn/s: below 1 is slower than direct; CPU per connection and latency: above 1 is slower)");
    println!(
        "{:<18} {:>8} {:>10} {:>13} {:>8} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8}",
        "mode",
        "services",
        "conn/s",
        "min-max",
        "/direct",
        "CPU/conn",
        "/direct",
        "rr p50",
        "/direct",
        "rr p99",
        "/direct"
    );
    for mode in Mode::ALL {
        let of: Vec<&Sample> = samples.iter().filter(|s| s.mode == mode).collect();
        let Some(first) = of.first() else { continue };
        let rates: Vec<f64> = of.iter().map(|s| s.conns.rate()).collect();
        let (Some(cpu), Some(p50), Some(p99)) = (
            Summary::of(&of.iter().map(|s| s.conns.cpu_per_conn()).collect::<Vec<_>>()),
            Summary::of(&of.iter().map(|s| s.rr.p50).collect::<Vec<_>>()),
            Summary::of(&of.iter().map(|s| s.rr.p99).collect::<Vec<_>>()),
        ) else {
            continue;
        };
        let ratio = |f: &dyn Fn(&Sample) -> f64| {
            median(&of.iter().filter_map(|s| direct(s.round).map(|d| f(s) / f(d))).collect::<Vec<_>>())
        };
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<18} {:>8} {:>10.0} {:>13} {:>8.3} {:>9} {:>8.3} {:>9} {:>8.3} {:>9} {:>8.3}",
            mode.label(),
            services_label(first.services),
            median(&rates),
            format!("{min:.0}-{max:.0}"),
            ratio(&|s| s.conns.rate()),
            us(cpu.median),
            ratio(&|s| s.conns.cpu_per_conn().as_secs_f64()),
            us(p50.median),
            ratio(&|s| s.rr.p50.as_secs_f64()),
            us(p99.median),
            ratio(&|s| s.rr.p99.as_secs_f64()),
        );
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

// ---- The namespace -----------------------------------------------------------------------

fn setup_namespace() -> Result<()> {
    run("ip", &["link", "set", "lo", "up"])?;
    run("ip", &["addr", "add", &format!("{BACKEND_IP}/32"), "dev", "lo"])?;
    // Nothing to the VIP pool leaves unless a program or a rule rewrote it...
    run("ip", &["route", "add", "blackhole", VIP_POOL])?;
    // ...but nft's service addresses need a route for connect() to reach the OUTPUT hook, as
    // ClusterIPs have one (the default route) on a kube-proxy node. Without a DNAT they reach
    // `lo` and are dropped (not local, no forwarding).
    run("ip", &["route", "add", NFT_ROUTE, "dev", "lo", "src", &BACKEND_IP.to_string()])?;
    // Short connections at tens of thousands per second: a client port in TIME_WAIT may be
    // reused after 1 s, from a wider range (8080 and the dead backend ports are never bound by
    // clients: a listener's or bound port is skipped), and a SYN that goes nowhere fails
    // after ~3 s instead of two minutes.
    sysctl("net/ipv4/tcp_tw_reuse", "1")?;
    sysctl("net/ipv4/ip_local_port_range", "16384 65535")?;
    sysctl("net/ipv4/tcp_syn_retries", "1")?;
    // conntrack (nft modes) keeps a closed connection 120 s; at this rate that fills the
    // namespace's table, so its TIME_WAIT is 1 s here (the entry's cost is its creation).
    let time_wait = "net/netfilter/nf_conntrack_tcp_timeout_time_wait";
    if Path::new("/proc/sys").join(time_wait).exists() {
        sysctl(time_wait, "1")?;
    } else {
        println!("note: no {time_wait} (nf_conntrack not loaded yet); conntrack keeps TIME_WAIT 120 s");
    }
    Ok(())
}

fn sysctl(name: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(name);
    fs::write(&path, value).with_context(|| format!("writing {value} to {}", path.display()))
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    ensure!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

fn command_output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    ensure!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---- The cgroup, the programs and their cleanup ------------------------------------------

/// The bench's cgroup and the Atoll dataplane attached to it; all removed on drop.
struct Sandbox {
    options: L4Options,
    cgroup: PathBuf,
    /// Where the process was (and goes back to).
    home: PathBuf,
    inside: bool,
    dataplane: Option<Dataplane>,
    nft_loaded: bool,
}

impl Sandbox {
    fn new(services: usize) -> Result<Sandbox> {
        let root = cgroup2_root().context("cgroup v2 is not mounted")?;
        remove_leftovers(&root);
        let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let home_path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("no cgroup v2 line in /proc/self/cgroup")?
            .trim_start_matches('/');
        let home = root.join(home_path);
        let name = format!("{PREFIX}{}", std::process::id());
        let cgroup = root.join(&name);
        fs::create_dir(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
        let slack = 16;
        let options = L4Options {
            pin_dir: PathBuf::from("/sys/fs/bpf").join(&name),
            cgroup: cgroup.clone(),
            uplink: None,
            maglev_size: DEFAULT_MAGLEV_SIZE,
            max_tables: (services + slack) as u32,
            max_services: (services + slack) as u32,
            max_backends: (services + slack) as u32,
            max_sockets: 65536,
            max_flows: 1024,
        };
        let mut sandbox = Sandbox { options, cgroup, home, inside: false, dataplane: None, nft_loaded: false };
        sandbox.dataplane = Some(Dataplane::start(&sandbox.options)?);
        Ok(sandbox)
    }

    fn enter(&mut self, inside: bool) -> Result<()> {
        if self.inside == inside {
            return Ok(());
        }
        let to = if inside { &self.cgroup } else { &self.home };
        let procs = to.join("cgroup.procs");
        fs::write(&procs, std::process::id().to_string())
            .with_context(|| format!("moving the process to {}", procs.display()))?;
        self.inside = inside;
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.nft_loaded {
            let _ = run("nft", &["delete", "table", "ip", NFT_TABLE]);
        }
        if self.inside
            && let Err(e) = self.enter(false)
        {
            eprintln!("{e:#}");
        }
        drop(self.dataplane.take());
        if let Err(e) = Dataplane::cleanup(&self.options) {
            eprintln!("cleaning up {}: {e}", self.options.pin_dir.display());
        }
        remove_cgroup(&self.cgroup);
        if self.options.pin_dir.exists()
            && let Err(e) = fs::remove_dir(&self.options.pin_dir)
        {
            eprintln!("removing {}: {e}", self.options.pin_dir.display());
        }
    }
}

fn remove_cgroup(cgroup: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(cgroup) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() > deadline => {
                eprintln!("removing {}: {e}", cgroup.display());
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Pin directories and cgroups of earlier runs whose process is gone (killed with SIGKILL).
fn remove_leftovers(cgroup_root: &Path) {
    let dead = |name: &str| {
        name.strip_prefix(PREFIX)
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
    };
    let entries = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|it| it.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    for name in entries(Path::new("/sys/fs/bpf")).into_iter().filter(|n| dead(n)) {
        let options = L4Options { pin_dir: PathBuf::from("/sys/fs/bpf").join(&name), ..L4Options::default() };
        match Dataplane::cleanup(&options) {
            Ok(_) => println!("removed the pins of an earlier run: {}", options.pin_dir.display()),
            Err(e) => eprintln!("cleaning up {}: {e}", options.pin_dir.display()),
        }
    }
    for name in entries(cgroup_root).into_iter().filter(|n| dead(n)) {
        let path = cgroup_root.join(&name);
        match fs::remove_dir(&path) {
            Ok(()) => println!("removed the cgroup of an earlier run: {}", path.display()),
            Err(e) => eprintln!("removing {}: {e}", path.display()),
        }
    }
}

// ---- Switching between modes -------------------------------------------------------------

struct State<'a> {
    sandbox: &'a mut Sandbox,
    plan: Option<DataplanePlan>,
    /// Atoll services installed: the last `atoll_installed` of `0..many`.
    atoll_installed: usize,
    nft: Option<Mode>,
    many: usize,
}

impl State<'_> {
    /// Brings the kernel to `mode`: its nft ruleset (or none), its Atoll services, and the
    /// process in the Atoll cgroup for the Atoll modes only (elsewhere `connect()` runs no
    /// program). Says what it set up, and how long that took, when it did something slow.
    ///
    /// The two 10,000-service nft modes share one loaded table (loading it takes seconds) and
    /// differ only in which dispatch chain the base chain jumps to; the table is deleted for
    /// every other mode, because a `dnat` expression anywhere in a table turns on connection
    /// tracking for the whole namespace.
    fn prepare(&mut self, mode: Mode) -> Result<Option<String>> {
        let mut said = Vec::new();
        let want = mode.is_nft().then_some(mode);
        let many_nft = |m: Option<Mode>| matches!(m, Some(Mode::NftMap | Mode::NftLinear));
        if self.nft.is_some() && (want.is_none() || many_nft(self.nft) != many_nft(want)) {
            let started = Instant::now();
            run("nft", &["delete", "table", "ip", NFT_TABLE])?;
            self.sandbox.nft_loaded = false;
            let services = self.nft.take().map_or(0, |m| m.services(self.many));
            said.push(format!("nft table of {services} service(s) deleted in {}", took(started)));
        }
        if let Some(want) = want
            && self.nft != Some(want)
        {
            let started = Instant::now();
            if self.nft.is_some() {
                nft_load(&format!(
                    "flush chain ip {NFT_TABLE} nat-output\nadd rule ip {NFT_TABLE} nat-output jump {}\n",
                    dispatch_chain(want)
                ))?;
                said.push(format!("nft: nat-output switched to `{}` in {}", dispatch_chain(want), took(started)));
            } else {
                let ruleset = nft_ruleset(want, self.many);
                self.sandbox.nft_loaded = true;
                nft_load(&ruleset)?;
                said.push(format!(
                    "nft: table of {} service(s) loaded in {} ({} KB of `nft -f` input)",
                    want.services(self.many),
                    took(started),
                    ruleset.len() / 1024
                ));
            }
            self.nft = Some(want);
        }
        if mode.is_atoll() {
            let count = mode.services(self.many);
            if count != self.atoll_installed {
                let started = Instant::now();
                let from = self.atoll_installed;
                let ops = self.atoll_services(count)?;
                said.push(format!(
                    "atoll: {from} -> {count} service(s) in {} ({ops} map operations from lb/core's plan)",
                    took(started)
                ));
            }
        }
        self.sandbox.enter(mode.is_atoll())?;
        Ok((!said.is_empty()).then(|| said.join("; ")))
    }

    /// Makes the last `count` services of `0..many` the installed ones, the way `atoll lb`
    /// does: `DataplanePlan` computes the map operations, they are written in order. Each
    /// service has its own backend (its own port), so each has its own Maglev table.
    fn atoll_services(&mut self, count: usize) -> Result<usize> {
        let dp = self.sandbox.dataplane.as_mut().context("no dataplane")?;
        let plan = match &mut self.plan {
            Some(plan) => plan,
            None => self.plan.insert(DataplanePlan::new(
                dp.config().maglev_size,
                dp.config().max_tables,
                self.sandbox.options.max_backends,
            )?),
        };
        let many = self.many;
        let ops = if count > self.atoll_installed {
            let services: Vec<Service> = (many - count..many - self.atoll_installed)
                .map(|i| Service {
                    key: service_key(nth(ATOLL_NET, i), SERVICE_PORT, PROTO_TCP),
                    names: Vec::new(),
                    backends: vec![BackendSpec {
                        address: BACKEND_IP,
                        port: backend_port(i, many),
                        weight: 1,
                        task: format!("bench-{i}"),
                    }],
                })
                .collect();
            plan.update(&services.iter().collect::<Vec<_>>())?
        } else {
            (many - self.atoll_installed..many - count)
                .flat_map(|i| plan.remove(&service_key(nth(ATOLL_NET, i), SERVICE_PORT, PROTO_TCP)))
                .collect()
        };
        let n = ops.len();
        for op in ops {
            match op {
                MapOp::UpsertBackend { id, backend } => dp.upsert_backend(id, backend),
                MapOp::WriteTable { table, entries } => dp.write_table(table, &entries),
                MapOp::UpsertService { key, value } => dp.upsert_service(key, value),
                MapOp::RemoveService { key } => dp.remove_service(&key),
                MapOp::RemoveBackend { id } => dp.remove_backend(id),
            }?;
        }
        self.atoll_installed = count;
        Ok(n)
    }

    /// connect()s the program counted for the measured VIP (0 before it is installed).
    fn vip_connections(&self) -> Result<u64> {
        let (Some(plan), Some(dp)) = (&self.plan, &self.sandbox.dataplane) else { return Ok(0) };
        let key = service_key(nth(ATOLL_NET, self.many - 1), SERVICE_PORT, PROTO_TCP);
        let Some(value) = plan.service_value(&key) else { return Ok(0) };
        Ok(dp.stats()?.get(&value.rev_nat).map_or(0, |s| s.connections))
    }
}

/// The ruleset kube-proxy's nftables mode writes for ClusterIP services, reduced to the path
/// of a connection from a local process: `nat-output` (hook output, priority -100) jumps to
/// `services`, which looks address . protocol . port up in a verdict map; each service's chain
/// picks an endpoint with `numgen random` and the endpoint's chain DNATs. For the 10,000
/// services the table also has `services-linear`, iptables-mode style: one rule per service,
/// the measured service last (the worst case); `nat-output` jumps to one or the other.
fn nft_ruleset(mode: Mode, many: usize) -> String {
    let indexes: Vec<usize> = if mode == Mode::Nft1 { vec![many - 1] } else { (0..many).collect() };
    let mut s = String::with_capacity(indexes.len() * 256);
    let _ = writeln!(s, "table ip {NFT_TABLE} {{");
    for &i in &indexes {
        let _ =
            writeln!(s, "  chain ep-{i} {{\n    meta l4proto tcp dnat to {BACKEND_IP}:{}\n  }}", backend_port(i, many));
        let _ = writeln!(s, "  chain svc-{i} {{\n    numgen random mod 1 vmap {{ 0 : goto ep-{i} }}\n  }}");
    }
    let _ = writeln!(s, "  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict");
    let elements: Vec<String> =
        indexes.iter().map(|&i| format!("{} . tcp . {SERVICE_PORT} : goto svc-{i}", nth(NFT_NET, i))).collect();
    let _ = writeln!(s, "    elements = {{ {} }}\n  }}", elements.join(", "));
    let _ = writeln!(s, "  chain services {{\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }}");
    if mode != Mode::Nft1 {
        let _ = writeln!(s, "  chain services-linear {{");
        for &i in &indexes {
            let _ = writeln!(s, "    ip daddr {} tcp dport {SERVICE_PORT} goto svc-{i}", nth(NFT_NET, i));
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(
        s,
        "  chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    jump {}\n  }}",
        dispatch_chain(mode)
    );
    let _ = writeln!(s, "}}");
    s
}

fn dispatch_chain(mode: Mode) -> &'static str {
    if mode == Mode::NftLinear { "services-linear" } else { "services" }
}

fn took(started: Instant) -> String {
    format!("{:.0} ms", started.elapsed().as_secs_f64() * 1e3)
}

fn nft_load(ruleset: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    let written = child.stdin.take().context("nft stdin")?.write_all(ruleset.as_bytes());
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "nft -f: {}", String::from_utf8_lossy(&out.stderr).trim());
    written.context("writing the ruleset to nft")?;
    Ok(())
}

// ---- Clients -----------------------------------------------------------------------------

/// One connection before measuring: it must reach the backend and see `target` as its peer
/// (Atoll's getpeername4 and nft's conntrack both restore the service address).
fn check_path(target: SocketAddrV4) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(target), IO_TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    exchange(&mut stream).with_context(|| format!("a request to {target}"))?;
    let peer = stream.peer_addr()?;
    ensure!(peer == SocketAddr::V4(target), "connected to {target}, but the peer is {peer}");
    Ok(())
}

fn exchange(stream: &mut TcpStream) -> io::Result<()> {
    let mut response = [0u8; MSG];
    stream.write_all(&[b'q'; MSG])?;
    stream.read_exact(&mut response)?;
    if response[0] != b'r' {
        return Err(io::Error::other("unexpected response"));
    }
    Ok(())
}

struct ConnResult {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    /// CPU time of the whole process (clients and backend, user and system) meanwhile.
    cpu: Duration,
}

impl ConnResult {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The process's CPU time per connection: what a connection costs, whatever else the
    /// machine was doing (the rate drops when other work takes a core; this does not).
    fn cpu_per_conn(&self) -> Duration {
        self.cpu / u32::try_from((self.ok + self.errors).max(1)).unwrap_or(u32::MAX)
    }

    /// The share of the machine's cores the process had (below ~95%: something else ran).
    fn cpu_share(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.cpu.as_secs_f64() / (self.elapsed.as_secs_f64() * cores as f64).max(1e-9)
    }
}

/// User + system CPU time of the process so far (all threads).
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// `threads` clients for `duration`, each in a loop: connect (blocking), one request and
/// response, close.
fn connections(target: SocketAddrV4, threads: usize, duration: Duration) -> Result<ConnResult> {
    /// Per thread, whatever the duration.
    const MAX_PER_THREAD: u64 = 2_000_000;
    const MAX_ERRORS: u64 = 100;
    let barrier = Barrier::new(threads + 1);
    let (results, elapsed, cpu) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                    barrier.wait();
                    let deadline = Instant::now() + duration;
                    while ok < MAX_PER_THREAD && errors < MAX_ERRORS && !interrupted() && Instant::now() < deadline {
                        let result = TcpStream::connect(target).and_then(|mut stream| {
                            stream.set_read_timeout(Some(IO_TIMEOUT))?;
                            exchange(&mut stream)
                        });
                        match result {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    (ok, errors, first_error)
                })
            })
            .collect();
        let cpu = process_cpu();
        barrier.wait();
        let started = Instant::now();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("client thread panicked")).collect();
        (results, started.elapsed(), process_cpu().saturating_sub(cpu))
    });
    let mut total = ConnResult { ok: 0, errors: 0, elapsed, cpu };
    let mut first_error = None;
    for (ok, errors, error) in results {
        total.ok += ok;
        total.errors += errors;
        first_error = first_error.or(error);
    }
    if let Some(e) = first_error {
        eprintln!("  {} of {} connections to {target} failed, the first: {e}", total.errors, total.ok + total.errors);
        ensure!(total.errors * 100 <= total.ok, "more than 1% of the connections failed");
    }
    Ok(total)
}

/// Runs `f` with every thread of the process on one CPU (the first it may use), then lets
/// them run anywhere again. A round trip then alternates client and backend on one core: it
/// measures the path's CPU work (two context switches included), not whether the scheduler
/// happened to put the two threads on different cores, which on this VM adds ~30 µs for the
/// cross-core wake-up and varies from run to run.
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> Result<T> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    let all = sched_getaffinity(None).context("sched_getaffinity")?;
    let first = (0..CpuSet::MAX_CPU).find(|&cpu| all.is_set(cpu)).context("no CPU to run on")?;
    let mut one = CpuSet::new();
    one.set(first);
    set_affinity(&one)?;
    let out = f();
    set_affinity(&all)?;
    Ok(out)
}

fn set_affinity(cpus: &rustix::thread::CpuSet) -> Result<()> {
    for entry in fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let name = entry?.file_name();
        let Some(tid) = name.to_str().and_then(|t| t.parse().ok()).and_then(rustix::process::Pid::from_raw) else {
            continue;
        };
        match rustix::thread::sched_setaffinity(Some(tid), cpus) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => bail!("sched_setaffinity({tid:?}): {e}"),
        }
    }
    Ok(())
}

/// `n` timed round trips (after 1,000 untimed ones) on one connection.
fn round_trips(target: SocketAddrV4, n: usize) -> Result<Percentiles> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(target), IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    for _ in 0..1000 {
        exchange(&mut stream)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = Vec::with_capacity(n);
    while samples.len() < n && !interrupted() && Instant::now() < deadline {
        let started = Instant::now();
        exchange(&mut stream)?;
        samples.push(started.elapsed());
    }
    check_interrupted()?;
    Percentiles::of(&samples).context("no round trip")
}

// ---- The backend -------------------------------------------------------------------------

/// A TCP server answering every `MSG` bytes received with `MSG` bytes, on `workers` threads
/// that share the listener (`EPOLLEXCLUSIVE`) and each serve the connections they accepted.
/// Stopped on drop.
struct BackendServer {
    stop: Arc<AtomicBool>,
    write_errors: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl BackendServer {
    fn start(addr: SocketAddrV4, workers: usize) -> Result<BackendServer> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let write_errors = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for w in 0..workers {
            let listener = listener.try_clone()?;
            let (stop, write_errors) = (stop.clone(), write_errors.clone());
            let thread = std::thread::Builder::new().name(format!("backend-{w}")).spawn(move || {
                if let Err(e) = serve(&listener, &stop, &write_errors) {
                    eprintln!("backend worker {w}: {e}");
                }
            })?;
            threads.push(thread);
        }
        Ok(BackendServer { stop, write_errors, threads })
    }

    fn errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

const LISTENER: u64 = u64::MAX;

fn epoll_add(epoll: &OwnedFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: valid descriptors and a valid event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn serve(listener: &TcpListener, stop: &AtomicBool, write_errors: &AtomicU64) -> io::Result<()> {
    // SAFETY: a plain system call; the descriptor is owned from here on.
    let epoll = match unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } {
        fd if fd >= 0 => unsafe { OwnedFd::from_raw_fd(fd) },
        _ => return Err(io::Error::last_os_error()),
    };
    epoll_add(&epoll, listener.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32, LISTENER)?;
    // Each connection with the bytes of a request received so far.
    let mut conns: HashMap<RawFd, (TcpStream, usize)> = HashMap::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let response = [b'r'; MSG];
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the buffer holds 64 events.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), 64, 50) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events[..n as usize] {
            let token = event.u64;
            if token == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if conns.len() >= MAX_CONNS {
                                continue;
                            }
                            stream.set_nonblocking(true)?;
                            stream.set_nodelay(true)?;
                            let fd = stream.as_raw_fd();
                            epoll_add(&epoll, fd, libc::EPOLLIN as u32, fd as u64)?;
                            conns.insert(fd, (stream, 0));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let fd = token as RawFd;
            let Some((stream, pending)) = conns.get_mut(&fd) else { continue };
            let keep = match stream.read(&mut buf) {
                Ok(0) => false,
                Ok(got) => {
                    *pending += got;
                    let mut keep = true;
                    while *pending >= MSG && keep {
                        *pending -= MSG;
                        if !matches!(stream.write(&response), Ok(MSG)) {
                            write_errors.fetch_add(1, Ordering::Relaxed);
                            keep = false;
                        }
                    }
                    keep
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => true,
                Err(_) => false,
            };
            if !keep {
                // Closing the socket takes it out of the epoll set.
                conns.remove(&fd);
            }
        }
    }
    Ok(())
}
