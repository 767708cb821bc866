//! `atoll`: the one binary — every daemon (`up`, `master`, `agent`, `dns`, `lb`, `edge`, the per-task `executor`)
//! and the operator commands (`run`, `node`, `task`, `events`, `app`, `deployment`, `ipam`, `vip`,
//! `edge routes`).

mod apps;
mod client;
mod daemons;
mod dns;
mod edge;
mod ipam;
mod lb;
mod operator;
mod table;
mod vips;

/// The proxy frees on one thread what another allocated; glibc's malloc then contends on its
/// arena locks (measured: nearly every request took one), mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "atoll", version, about = "Atoll: a cluster manager built to win on the network")]
struct Cli {
    /// Master URL [default: http://127.0.0.1:5050]
    #[arg(long, global = true, env = "ATOLL_MASTER")]
    master: Option<String>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a one-machine cluster: master, agent, DNS, VIP load balancer and edge proxy (Ctrl-C stops all)
    Up(daemons::UpArgs),
    /// Run the master daemon
    Master(daemons::MasterArgs),
    /// Run the agent daemon (uses --master to find the master)
    Agent(daemons::AgentArgs),
    /// Run the DNS server (Mesos-DNS naming from the event stream), or query it
    Dns(dns::DnsArgs),
    /// Run this node's layer-4 load balancer (eBPF; root): serves every VIP to every process
    Lb(lb::LbArgs),
    /// Run the HTTP edge proxy (routes from app labels: of an Atoll master, a Marathon or a Mesos
    /// master), or list an edge's routes
    Edge(edge::EdgeArgs),
    /// The per-task supervisor the agent starts (not for direct use)
    #[command(hide = true)]
    Executor {
        #[arg(long)]
        spec: std::path::PathBuf,
    },
    /// Run a one-off task and stream its output (like mesos-execute)
    Run(operator::RunArgs),
    /// Inspect and maintain nodes (agents)
    #[command(subcommand)]
    Node(operator::NodeCommand),
    /// Inspect, follow and kill tasks
    #[command(subcommand)]
    Task(operator::TaskCommand),
    /// Follow the cluster event stream
    Events(operator::EventsArgs),
    /// Long-running services (Marathon-style apps)
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Deployments of apps in progress
    #[command(subcommand)]
    Deployment(apps::DeploymentCommand),
    /// IP pools and task addresses (container networking)
    #[command(subcommand)]
    Ipam(ipam::IpamCommand),
    /// Named VIPs (layer-4 load balancing) and their backends
    #[command(subcommand)]
    Vip(vips::VipCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Executor { spec } = &cli.command {
        // No runtime, no logging set-up: the executor is a tiny synchronous supervisor.
        let code = atoll_agent::executor::main_with_spec(spec);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let daemon = matches!(
        cli.command,
        Command::Up(_) | Command::Master(_) | Command::Agent(_) | Command::Dns(_) | Command::Lb(_)
    ) || matches!(&cli.command, Command::Edge(args) if args.is_daemon());
    init_logging(if daemon { "info" } else { "warn" });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("atoll: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let master = cli.master.clone().unwrap_or_else(|| "http://127.0.0.1:5050".to_owned());
    let ctx = operator::Context { master: master.trim_end_matches('/').to_owned(), json: cli.json };
    let master_flag = cli.master;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => daemons::up(args).await,
            Command::Master(args) => daemons::master(args).await,
            Command::Agent(args) => daemons::agent(args, master_flag).await,
            Command::Dns(args) => dns::dns(&ctx, args, master_flag).await,
            Command::Lb(args) => lb::lb(args, master_flag).await,
            Command::Edge(args) => edge::edge(&ctx, args, master_flag).await,
            Command::Executor { .. } => unreachable!("handled before the runtime starts"),
            Command::Run(args) => operator::run(&ctx, args).await,
            Command::Node(command) => operator::node(&ctx, command).await.map(|()| 0),
            Command::Task(command) => operator::task(&ctx, command).await.map(|()| 0),
            Command::Events(args) => operator::events(&ctx, args).await.map(|()| 0),
            Command::App(command) => apps::app(&ctx, command).await,
            Command::Deployment(command) => apps::deployment(&ctx, command).await,
            Command::Ipam(command) => ipam::ipam(&ctx, command).await,
            Command::Vip(command) => vips::vip(&ctx, command).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("atoll: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str) {
    // hickory-server logs every request at info; that is query logging, not daemon news.
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATOLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},hickory_server=warn")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}
