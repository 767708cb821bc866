//! IPAM: allocations/s and releases/s of Atoll's task address allocator (`atoll_ipam::Leases`),
//! in memory and durable the way the agent keeps it, next to the CNI `host-local` IPAM plugin
//! doing the same allocations and releases in the same run.
//!
//! `cargo run --release -p atoll-bench --bin ipam [-- --core 60000 --durable 2000 --cni 2000]`
//!
//! All three hand out task addresses from one agent subnet, 198.18.0.0/16 (gateway 198.18.0.1),
//! the lowest free address first, and release them again:
//!
//! - **core**: `Leases::allocate(pool, task, None)` for every task, then `Leases::release(task)`
//!   for every task, in memory.
//! - **durable**: the same, and after every allocation and every release the leases are saved
//!   with the agent's own `atoll_agent::net::store::LeaseStore::save` (`ipam.json`: serialize,
//!   write a temporary file, fsync it, rename it over the old one, fsync the directory), in a
//!   temporary directory on the same filesystem as the agent's default data dir.
//! - **host-local**: `/usr/lib/cni/host-local` (Debian's `containernetworking-plugins`) run once
//!   per allocation (`CNI_COMMAND=ADD`) and once per release (`DEL`), as a CNI runtime runs it:
//!   one process per call, the network configuration on stdin, its data dir a temporary
//!   directory. That is how CNI IPAM works; the process start is part of its cost, and a row
//!   with `CNI_COMMAND=VERSION` (a process start and no allocation) shows how much.
//!
//! Nothing is sent on any network: the addresses are only bookkeeping.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use atoll_agent::net::store::LeaseStore;
use atoll_bench::{Percentiles, machine, other_builds};
use atoll_ipam::{Leases, Subnet};
use clap::Parser;

const POOL: &str = "atoll";
const SUBNET: &str = "198.18.0.0/16";
const GATEWAY: &str = "198.18.0.1";
/// Host addresses of the /16 that are neither the network, the gateway nor the broadcast address.
const USABLE: usize = 65_536 - 3;
const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
/// The CNI network name; host-local keeps its leases under `<dataDir>/<name>/`.
const NETWORK: &str = "bench";
/// Leases an agent holds at most with the default /24 subnet (253 host addresses), rounded:
/// the second table's rates are taken while no more than this many are held, since the durable
/// store and host-local both do work proportional to the leases held.
const SMALL: usize = 250;

#[derive(Parser, Debug)]
#[command(about = "allocations/s and releases/s of Atoll's IPAM (in memory, durable) and of CNI host-local")]
struct Args {
    /// Allocations (then releases) in memory.
    #[arg(long, default_value_t = 60_000)]
    core: usize,
    /// Allocations (then releases) with the leases saved after every change, as the agent does.
    #[arg(long, default_value_t = 2_000)]
    durable: usize,
    /// Allocations (ADD) and releases (DEL) through the host-local plugin, one process each.
    #[arg(long, default_value_t = 2_000)]
    cni: usize,
    /// The host-local plugin binary.
    #[arg(long, default_value = HOST_LOCAL)]
    host_local: PathBuf,
    /// Where the durable run and host-local keep their files [default: the system's temp dir].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One path's result.
struct Row {
    name: &'static str,
    count: usize,
    alloc: Duration,
    release: Duration,
    /// Per-operation latencies, where each operation was timed on its own.
    alloc_each: Option<Percentiles>,
    release_each: Option<Percentiles>,
    /// Allocations/s and releases/s while at most [`SMALL`] leases are held.
    small: Option<(f64, f64)>,
    note: String,
}

impl Row {
    fn alloc_rate(&self) -> f64 {
        rate(self.count, self.alloc)
    }
    fn release_rate(&self) -> f64 {
        rate(self.count, self.release)
    }
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(1e-9)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (flag, n) in [("--core", args.core), ("--durable", args.durable), ("--cni", args.cni)] {
        ensure!((1..=USABLE).contains(&n), "{flag} must be 1..={USABLE} (the host addresses of {SUBNET})");
    }
    if !args.host_local.exists() {
        bail!(
            "{} not found: install it with `apt-get install -y containernetworking-plugins`",
            args.host_local.display()
        );
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("atoll-bench-ipam.").tempdir_in(&parent)?;

    println!("machine: {}", machine());
    println!("other compilations at the start: {}", other_builds());
    println!("subnet: {SUBNET} (gateway {GATEWAY}), lowest free address first; files under {}", dir.path().display());
    println!();

    let tasks = |n: usize| (0..n).map(|i| format!("bench-app.instance-{i:08x}.run-1")).collect::<Vec<_>>();
    let core = core(&tasks(args.core))?;
    print_progress(&core);
    let durable = durable(&tasks(args.durable), &dir.path().join("agent"))?;
    print_progress(&durable);
    let cni_dir = dir.path().join("cni");
    let host_local = host_local(&args.host_local, args.cni, &cni_dir)?;
    print_progress(&host_local);
    let spawn = process_start(&args.host_local, args.cni)?;
    print_progress(&spawn);

    println!();
    println!(
        "{:<34} {:>7} {:>12} {:>12} {:>10} {:>10} {:>22} {:>22}",
        "path", "n", "allocs/s", "releases/s", "alloc ×hl", "release ×hl", "alloc p50 / p99", "release p50 / p99"
    );
    let (hl_alloc, hl_release) = (host_local.alloc_rate(), host_local.release_rate());
    for row in [&core, &durable, &host_local, &spawn] {
        println!(
            "{:<34} {:>7} {:>12.0} {:>12.0} {:>10} {:>10} {:>22} {:>22}",
            row.name,
            row.count,
            row.alloc_rate(),
            row.release_rate(),
            format!("{:.2}", row.alloc_rate() / hl_alloc),
            format!("{:.2}", row.release_rate() / hl_release),
            each(row.alloc_each),
            each(row.release_each),
        );
    }
    println!();
    println!("while at most {SMALL} leases are held (what one agent's /24 subnet holds):");
    println!("{:<34} {:>12} {:>12} {:>10} {:>10}", "path", "allocs/s", "releases/s", "alloc ×hl", "release ×hl");
    let hl_small = host_local.small.unwrap_or((f64::NAN, f64::NAN));
    for row in [&core, &durable, &host_local, &spawn] {
        if let Some((a, r)) = row.small {
            println!(
                "{:<34} {:>12.0} {:>12.0} {:>10} {:>10}",
                row.name,
                a,
                r,
                format!("{:.2}", a / hl_small.0),
                format!("{:.2}", r / hl_small.1)
            );
        }
    }
    println!();
    for row in [&core, &durable, &host_local, &spawn] {
        println!("{}: {}", row.name, row.note);
    }
    println!("(×hl: the rate divided by host-local's rate for the same operation, measured above)");
    println!("other compilations at the end: {}", other_builds());
    Ok(())
}

fn print_progress(row: &Row) {
    println!(
        "{:<34} {} allocations in {:.3} s, {} releases in {:.3} s",
        row.name,
        row.count,
        row.alloc.as_secs_f64(),
        row.count,
        row.release.as_secs_f64()
    );
}

/// Rates from per-operation times while at most SMALL leases are held: the first SMALL
/// allocations and (releasing in allocation order) the last SMALL releases.
fn small(alloc_each: &[Duration], release_each: &[Duration]) -> Option<(f64, f64)> {
    let n = SMALL.min(alloc_each.len()).min(release_each.len());
    let alloc: Duration = alloc_each[..n].iter().sum();
    let release: Duration = release_each[release_each.len() - n..].iter().sum();
    (n > 0).then(|| (rate(n, alloc), rate(n, release)))
}

fn each(p: Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{} / {}", us(p.p50), us(p.p99)),
        None => "-".to_owned(),
    }
}

fn us(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros >= 1000.0 { format!("{:.2} ms", micros / 1e3) } else { format!("{micros:.1} µs") }
}

fn agent_leases() -> anyhow::Result<Leases> {
    let subnet = Subnet {
        pool: POOL.to_owned(),
        network: SUBNET.parse()?,
        gateway: GATEWAY.parse()?,
        agent: "bench-agent".to_owned(),
    };
    let leases = Leases::new(vec![subnet], Vec::new());
    ensure!(leases.subnets().count() == 1, "the ipam crate refused {SUBNET}");
    Ok(leases)
}

/// Every address handed out once, none outside the subnet.
fn check_unique(ips: &[IpAddr]) -> anyhow::Result<()> {
    let unique: HashSet<&IpAddr> = ips.iter().collect();
    ensure!(unique.len() == ips.len(), "an address was handed out twice");
    let net: atoll_ipam::IpNetwork = SUBNET.parse()?;
    ensure!(ips.iter().all(|ip| net.contains(*ip)), "an address outside {SUBNET}");
    Ok(())
}

fn core(tasks: &[String]) -> anyhow::Result<Row> {
    let mut leases = agent_leases()?;
    let mut ips = Vec::with_capacity(tasks.len());
    let start = Instant::now();
    for task in tasks {
        ips.push(leases.allocate(POOL, task, None)?.ip);
    }
    let alloc = start.elapsed();
    let start = Instant::now();
    let mut released = 0;
    for task in tasks {
        released += leases.release(task).len();
    }
    let release = start.elapsed();
    check_unique(&ips)?;
    ensure!(released == tasks.len() && leases.leases().next().is_none(), "not every lease was released");

    // The same number of operations in cycles of SMALL allocations then SMALL releases.
    let (mut small_alloc, mut small_release) = (Duration::ZERO, Duration::ZERO);
    let cycles = tasks.len().div_ceil(SMALL);
    let batch = &tasks[..SMALL.min(tasks.len())];
    for _ in 0..cycles {
        let start = Instant::now();
        for task in batch {
            leases.allocate(POOL, task, None)?;
        }
        small_alloc += start.elapsed();
        let start = Instant::now();
        for task in batch {
            leases.release(task);
        }
        small_release += start.elapsed();
    }
    let small_ops = cycles * SMALL.min(tasks.len());
    Ok(Row {
        name: "atoll core (in memory)",
        count: tasks.len(),
        alloc,
        release,
        alloc_each: None,
        release_each: None,
        small: Some((rate(small_ops, small_alloc), rate(small_ops, small_release))),
        note: format!(
            "Leases::allocate / Leases::release in one thread, the loop timed as a whole; the second table \
             from {cycles} cycles of {} allocations then {} releases",
            SMALL.min(tasks.len()),
            SMALL.min(tasks.len())
        ),
    })
}

fn durable(tasks: &[String], data_dir: &Path) -> anyhow::Result<Row> {
    std::fs::create_dir_all(data_dir)?;
    let store = LeaseStore::new(data_dir);
    let mut leases = agent_leases()?;
    let mut ips = Vec::with_capacity(tasks.len());
    let mut alloc_each = Vec::with_capacity(tasks.len());
    let start = Instant::now();
    for task in tasks {
        let t = Instant::now();
        ips.push(leases.allocate(POOL, task, None)?.ip);
        store.save(&leases)?;
        alloc_each.push(t.elapsed());
    }
    let alloc = start.elapsed();
    let largest = std::fs::metadata(store.path())?.len();
    let mut release_each = Vec::with_capacity(tasks.len());
    let start = Instant::now();
    for task in tasks {
        let t = Instant::now();
        ensure!(!leases.release(task).is_empty(), "task {task} had no lease");
        store.save(&leases)?;
        release_each.push(t.elapsed());
    }
    let release = start.elapsed();
    check_unique(&ips)?;
    let back = store.load()?.context("the lease file is gone")?;
    ensure!(back.leases().next().is_none(), "the saved leases are not empty after releasing all");
    Ok(Row {
        name: "atoll durable (agent's LeaseStore)",
        count: tasks.len(),
        alloc,
        release,
        alloc_each: Percentiles::of(&alloc_each),
        release_each: Percentiles::of(&release_each),
        small: small(&alloc_each, &release_each),
        note: format!(
            "LeaseStore::save after every change (JSON of all leases, write, fsync, rename, fsync dir); \
             the file grows with the leases held, {} KiB at {} leases",
            largest / 1024,
            tasks.len()
        ),
    })
}

/// The network configuration a CNI runtime hands to an IPAM plugin: the network's config with
/// its `ipam` section (host-local refuses a config without one).
fn cni_config(data_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "bench",
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": SUBNET, "gateway": GATEWAY }]],
            "dataDir": data_dir,
        },
    })
    .to_string()
}

/// Runs the plugin once as a CNI runtime does; returns its stdout.
fn cni_call(plugin: &Path, command: &str, container: &str, config: &[u8]) -> anyhow::Result<Vec<u8>> {
    let cni_path = plugin.parent().unwrap_or(Path::new("/usr/lib/cni"));
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        // Required by the plugin framework for ADD and DEL; host-local never opens it.
        .env("CNI_NETNS", "/dev/null")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", plugin.display()))?;
    // A plugin may answer (VERSION) and exit before reading all of stdin: its exit status decides.
    match child.stdin.take().context("no stdin")?.write_all(config) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "host-local {command} {container}: {} {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn host_local(plugin: &Path, n: usize, data_dir: &Path) -> anyhow::Result<Row> {
    std::fs::create_dir_all(data_dir)?;
    let config = cni_config(data_dir);
    let containers: Vec<String> = (0..n).map(|i| format!("bench-{i:08x}")).collect();
    let mut ips = Vec::with_capacity(n);
    let mut alloc_each = Vec::with_capacity(n);
    let start = Instant::now();
    for id in &containers {
        let t = Instant::now();
        let out = cni_call(plugin, "ADD", id, config.as_bytes())?;
        alloc_each.push(t.elapsed());
        let result: serde_json::Value = serde_json::from_slice(&out).context("host-local ADD printed no JSON")?;
        let address = result["ips"][0]["address"].as_str().context("host-local ADD returned no address")?;
        let ip = address.split_once('/').map_or(address, |(ip, _)| ip);
        ips.push(ip.parse::<IpAddr>()?);
    }
    let alloc = start.elapsed();
    let mut release_each = Vec::with_capacity(n);
    let start = Instant::now();
    for id in &containers {
        let t = Instant::now();
        cni_call(plugin, "DEL", id, config.as_bytes())?;
        release_each.push(t.elapsed());
    }
    let release = start.elapsed();
    check_unique(&ips)?;
    // What is left: the lock and the last reserved address, no lease files.
    let leftover = std::fs::read_dir(data_dir.join(NETWORK))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<IpAddr>().is_ok())
        .count();
    ensure!(leftover == 0, "host-local still holds {leftover} leases after DEL");
    Ok(Row {
        name: "cni host-local (process per call)",
        count: n,
        alloc,
        release,
        alloc_each: Percentiles::of(&alloc_each),
        release_each: Percentiles::of(&release_each),
        small: small(&alloc_each, &release_each),
        note: "one host-local process per ADD / DEL (the CNI model): fork+exec of a Go binary, config on stdin, \
               flock, a lease file per address under dataDir (written without fsync); ADD and DEL each read \
               every lease file to find the container's own, so they slow down as leases accumulate"
            .to_owned(),
    })
}

/// The floor under host-local's rates: the same process started `n` times with
/// `CNI_COMMAND=VERSION`, which allocates nothing.
fn process_start(plugin: &Path, n: usize) -> anyhow::Result<Row> {
    let mut each = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        cni_call(plugin, "VERSION", "none", b"{\"cniVersion\":\"1.0.0\"}")?;
        each.push(t.elapsed());
    }
    let took = start.elapsed();
    Ok(Row {
        name: "(host-local VERSION: start only)",
        count: n,
        alloc: took,
        release: took,
        alloc_each: Percentiles::of(&each),
        release_each: Percentiles::of(&each),
        small: Some((rate(n, took), rate(n, took))),
        note: "host-local with CNI_COMMAND=VERSION: the process start and JSON answer alone, no allocation \
               (the same calls counted in both columns)"
            .to_owned(),
    })
}
