//! The daemons: `atoll master`, `atoll agent`, and `atoll up` (master, agent, DNS and, as
//! root, the load balancer in one process).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use atoll_agent::{AgentSettings, StopMode};
use atoll_dns::settings::DnsSettings;
use atoll_lb::LbSettings;
use atoll_lb_edge::EdgeSettings;
use atoll_scheduler::config::{MasterSettings, default_data_root};
use clap::Args;
use serde::Deserialize;

#[derive(Args)]
pub struct MasterArgs {
    /// TOML file with the same keys as the flags (flags win)
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: MasterSettings,
}

#[derive(Args)]
pub struct AgentArgs {
    /// TOML file with the same keys as the flags (flags win)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kill every task this agent runs, remove its cgroups and data, and exit
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    settings: AgentSettings,
}

#[derive(Args)]
pub struct UpArgs {
    /// Directory for all state (master/ and agent/ inside)
    /// [default: /var/lib/atoll as root, else ~/.local/share/atoll]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Master HTTP + gRPC address [default: 127.0.0.1:5050]
    #[arg(long)]
    master_listen: Option<SocketAddr>,
    /// Agent HTTP address [default: 127.0.0.1:5051]
    #[arg(long)]
    agent_listen: Option<SocketAddr>,
    /// DNS address, UDP and TCP; repeatable [default: 127.0.0.1:8053, a port that needs no root]
    #[arg(long)]
    dns_listen: Vec<SocketAddr>,
    /// DNS HTTP API address [default: 127.0.0.1:8123]
    #[arg(long)]
    dns_http_listen: Option<SocketAddr>,
    /// Agent resources, e.g. `cpus:2;mem:2048;ports:[31000-32000]` (detected by default)
    #[arg(long)]
    resources: Option<String>,
    /// Agent attributes, e.g. `rack:r1;zone:a`
    #[arg(long)]
    attributes: Option<String>,
    /// Load balancer HTTP API address (/metrics, /v1/services) [default: 127.0.0.1:8124]
    #[arg(long)]
    lb_http_listen: Option<SocketAddr>,
    /// Do not run the layer-4 load balancer (it runs by default as root)
    #[arg(long)]
    no_lb: bool,
    /// Edge proxy HTTP address [default: 127.0.0.1:8080]
    #[arg(long)]
    edge_listen: Option<SocketAddr>,
    /// Edge proxy TLS address; certificates from <data-dir>/edge/certs [default: 127.0.0.1:8443]
    #[arg(long)]
    edge_tls_listen: Option<SocketAddr>,
    /// Edge proxy admin API (/v1/routes, /metrics) [default: 127.0.0.1:9090]
    #[arg(long)]
    edge_admin_listen: Option<SocketAddr>,
    /// Do not run the edge proxy
    #[arg(long)]
    no_edge: bool,
    /// TOML file with [master], [agent], [dns], [lb] and [edge] tables of daemon settings (flags win)
    #[arg(long)]
    config: Option<PathBuf>,
    /// On stop, leave the tasks running (the next `atoll up` recovers them)
    #[arg(long)]
    keep_tasks: bool,
}

/// `atoll up --config FILE`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpFile {
    #[serde(default)]
    master: MasterSettings,
    #[serde(default)]
    agent: AgentSettings,
    #[serde(default)]
    dns: DnsSettings,
    #[serde(default)]
    lb: LbSettings,
    #[serde(default)]
    edge: EdgeSettings,
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn master(args: MasterArgs) -> anyhow::Result<i32> {
    let file = match &args.config {
        Some(path) => MasterSettings::from_file(path)?,
        None => MasterSettings::default(),
    };
    let options = args.settings.over(file).resolve()?;
    atoll_scheduler::server::run(options, stop_signal()).await?;
    Ok(0)
}

pub async fn agent(args: AgentArgs, master_flag: Option<String>) -> anyhow::Result<i32> {
    let file = match &args.config {
        Some(path) => AgentSettings::from_file(path)?,
        None => AgentSettings::default(),
    };
    let mut settings = args.settings.over(file);
    // The global --master (or ATOLL_MASTER) wins over the config file's `master`.
    if master_flag.is_some() {
        settings.master = master_flag;
    }
    let options = settings.resolve()?;
    if args.cleanup {
        let report = atoll_agent::cleanup(&options)?;
        println!(
            "killed {} task(s), removed {} cgroup(s) and {} path(s) under {}",
            report.tasks_killed,
            report.cgroups_removed,
            report.removed.len(),
            options.data_dir.display()
        );
        return Ok(0);
    }
    atoll_agent::run(options, async {
        stop_signal().await;
        StopMode::LeaveTasks
    })
    .await?;
    Ok(0)
}

pub async fn up(args: UpArgs) -> anyhow::Result<i32> {
    let file: UpFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
        }
        None => UpFile::default(),
    };
    let data_dir = args.data_dir.unwrap_or_else(default_data_root);
    let master_flags = MasterSettings {
        listen: args.master_listen,
        data_dir: Some(data_dir.join("master")),
        ..MasterSettings::default()
    };
    let master_options = master_flags.over(file.master).resolve()?;
    let master_url = format!("http://{}", master_options.listen);
    let agent_flags = AgentSettings {
        listen: args.agent_listen,
        data_dir: Some(data_dir.join("agent")),
        master: Some(master_url.clone()),
        resources: args.resources,
        attributes: args.attributes,
        ..AgentSettings::default()
    };
    let agent_options = agent_flags.over(file.agent).resolve()?;
    let agent_listen = agent_options.listen;
    let dns_flags = DnsSettings {
        listen: if args.dns_listen.is_empty() {
            vec![SocketAddr::from(([127, 0, 0, 1], 8053))]
        } else {
            args.dns_listen
        },
        http_listen: args.dns_http_listen,
        data_dir: Some(data_dir.join("dns")),
        master: Some(master_url.clone()),
        ..DnsSettings::default()
    };
    let dns_options = dns_flags.over(file.dns).resolve()?;
    let lb_flags = LbSettings {
        http_listen: args.lb_http_listen,
        data_dir: Some(data_dir.join("lb")),
        master: Some(master_url.clone()),
        ..LbSettings::default()
    };
    let lb_options = lb_flags.over(file.lb).resolve()?;
    let edge_flags = EdgeSettings {
        listen: Some(args.edge_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))),
        tls_listen: Some(args.edge_tls_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8443)))),
        admin_listen: args.edge_admin_listen,
        master: Some(master_url.clone()),
        ..EdgeSettings::default()
    };
    let mut edge_settings = edge_flags.over(file.edge);
    if edge_settings.cert_dir.is_none() {
        let certs = data_dir.join("edge").join("certs");
        std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
        edge_settings.cert_dir = Some(certs);
    }
    let edge_options = edge_settings.resolve()?;

    let master = atoll_scheduler::server::start(master_options).await?;
    let (stop_master, master_stopped) = tokio::sync::oneshot::channel::<()>();
    let master_task = tokio::spawn(master.serve(async move {
        let _ = master_stopped.await;
    }));
    let dns = atoll_dns::daemon::start(dns_options).await?;
    let dns_addrs = dns.dns_addrs();
    let dns_http = dns.http_addr();
    let (stop_dns, dns_stopped) = tokio::sync::oneshot::channel::<()>();
    let dns_task = tokio::spawn(dns.serve(async move {
        let _ = dns_stopped.await;
    }));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (stop_lb, lb_stopped) = tokio::sync::oneshot::channel::<()>();
    let lb = if args.no_lb {
        Err("--no-lb".to_owned())
    } else if !root {
        Err("the eBPF load balancer needs root; VIPs are assigned and named, not served".to_owned())
    } else {
        match atoll_lb::start(lb_options.clone()).await {
            Ok(lb) => Ok(lb),
            // The rest of the cluster is useful without VIPs: say why and go on.
            Err(e) => Err(format!("{e:#}")),
        }
    };
    let (lb_line, lb_task) = match lb {
        Ok(lb) => {
            let reach = if Some(&lb_options.l4.cgroup) == atoll_lb_l4::cgroup2_root().as_ref() {
                "every process on this machine".to_owned()
            } else {
                format!("processes in cgroup {}", lb_options.l4.cgroup.display())
            };
            let line = format!(
                "  lb      VIPs {} reach their backends from {reach}; http://{}",
                lb_options.vip_pool,
                lb.http_addr().map_or_else(|| "-".to_owned(), |a| a.to_string())
            );
            let task = tokio::spawn(lb.serve(async move {
                let _ = lb_stopped.await;
            }));
            (line, Some(task))
        }
        Err(why) => (format!("  lb      not running: {why}"), None),
    };

    let (stop_edge, edge_stopped) = tokio::sync::oneshot::channel::<()>();
    let (edge_line, edge_task) = if args.no_edge {
        ("  edge    not running: --no-edge".to_owned(), None)
    } else {
        let edge = atoll_lb_edge::start(edge_options.clone()).await?;
        let line = format!(
            "  edge    http://{}  https://{} (certificates in {})  admin http://{}",
            edge_options.listen,
            edge_options.tls_listen.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            edge_options.cert_dir.display(),
            edge_options.admin_listen
        );
        let task = tokio::spawn(edge.serve(async move {
            let _ = edge_stopped.await;
        }));
        (line, Some(task))
    };

    println!("atoll is up");
    println!("  master  {master_url}  (HTTP API, gRPC, event stream at /v1/events)");
    println!("  agent   http://{agent_listen}");
    for addr in &dns_addrs {
        println!("  dns     {addr} (UDP and TCP; names under .mesos)");
    }
    if let Some(http) = dns_http {
        println!("  dns api http://{http}");
    }
    println!("{lb_line}");
    println!("{edge_line}");
    println!("  data    {}", data_dir.display());
    println!("try:  atoll run -- echo hello      atoll task list      atoll events");
    if let Some(addr) = dns_addrs.first() {
        println!("      ATOLL_DNS={addr} atoll dns lookup leader.mesos");
    }
    println!("stop with Ctrl-C{}", if args.keep_tasks { " (tasks keep running)" } else { " (stops every task)" });

    let keep_tasks = args.keep_tasks;
    let agent_result = atoll_agent::run(agent_options, async move {
        stop_signal().await;
        if keep_tasks { StopMode::LeaveTasks } else { StopMode::KillTasks }
    })
    .await;
    let _ = stop_dns.send(());
    let _ = stop_master.send(());
    let _ = stop_lb.send(());
    let _ = stop_edge.send(());
    if let Some(task) = edge_task {
        task.await.context("the edge task failed")??;
    }
    if let Some(task) = lb_task {
        task.await.context("the load balancer task failed")??;
        // Tasks kept running keep their VIPs; otherwise nothing of the cluster stays attached.
        if !keep_tasks {
            atoll_lb::cleanup(&lb_options).await?;
        }
    }
    let dns_result = dns_task.await.context("the DNS task failed")?;
    let master_result = master_task.await.context("the master task failed")?;
    agent_result?;
    dns_result?;
    master_result?;
    Ok(0)
}
