//! `atoll edge`: the HTTP edge proxy daemon, and `atoll edge routes` (what an edge serves).

use std::path::PathBuf;

use anyhow::Context as _;
use atoll_lb_edge::EdgeSettings;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::operator::Context;
use crate::table;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EdgeArgs {
    #[command(subcommand)]
    command: Option<EdgeCommand>,
    /// TOML file with the same keys as the flags (flags win)
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: EdgeSettings,
}

#[derive(Subcommand)]
enum EdgeCommand {
    /// List an edge's routes: hosts, paths, backends (active/draining/unhealthy)
    Routes {
        /// The edge's admin API
        #[arg(long, env = "ATOLL_EDGE_ADMIN", default_value = "http://127.0.0.1:9090")]
        admin: String,
    },
}

impl EdgeArgs {
    /// Runs the proxy (not an operator command).
    pub fn is_daemon(&self) -> bool {
        self.command.is_none()
    }
}

pub async fn edge(ctx: &Context, args: EdgeArgs, master_flag: Option<String>) -> anyhow::Result<i32> {
    match args.command {
        Some(EdgeCommand::Routes { admin }) => routes(ctx, &admin).await.map(|()| 0),
        None => {
            let file = match &args.config {
                Some(path) => EdgeSettings::from_file(path)?,
                None => EdgeSettings::default(),
            };
            let mut settings = args.settings.over(file);
            if master_flag.is_some() {
                settings.master = master_flag;
            }
            let options = settings.resolve()?;
            atoll_lb_edge::run(options, crate::daemons::stop_signal()).await?;
            Ok(0)
        }
    }
}

async fn routes(ctx: &Context, admin: &str) -> anyhow::Result<()> {
    let url = format!("{}/v1/routes", admin.trim_end_matches('/'));
    let body: Value = reqwest::get(&url)
        .await
        .with_context(|| format!("asking the edge at {admin}"))?
        .error_for_status()?
        .json()
        .await?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let count = |route: &Value, state: &str| {
        route["backends"].as_array().map_or(0, |b| b.iter().filter(|b| b["state"] == state).count())
    };
    let mut rows = Vec::new();
    for route in body["routes"].as_array().into_iter().flatten() {
        let hosts: Vec<&str> = route["hosts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        rows.push(vec![
            if hosts.is_empty() { "*".to_owned() } else { hosts.join(",") },
            route["path"].as_str().unwrap_or("/").to_owned(),
            route["id"].as_str().unwrap_or_default().to_owned(),
            format!("{}/{}/{}", count(route, "active"), count(route, "draining"), count(route, "unhealthy")),
            route["balance"].as_str().unwrap_or_default().to_owned(),
            if route["redirect_to_https"] == true { "https".to_owned() } else { String::new() },
        ]);
    }
    table::print(&["HOST", "PATH", "ROUTE", "BACKENDS a/d/u", "BALANCE", "REDIRECT"], &rows);
    let only: Vec<&Value> = body["port_only"].as_array().into_iter().flatten().collect();
    if !only.is_empty() {
        println!("\nservice ports without a host or path (not routed over HTTP):");
        for service in only {
            println!(
                "  {}:{} service port {}",
                service["app"].as_str().unwrap_or_default(),
                service["port_index"],
                service["service_port"].as_u64().map_or_else(|| "-".to_owned(), |p| p.to_string())
            );
        }
    }
    for problem in body["problems"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        eprintln!("problem: {problem}");
    }
    Ok(())
}
