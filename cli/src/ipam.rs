//! `atoll ipam …`: IP pools for network admins, and the addresses tasks hold.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::operator::Context;
use crate::table;

#[derive(Subcommand)]
pub enum IpamCommand {
    /// IP pools
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Task addresses in use
    Leases {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        task: Option<String>,
    },
    /// Keep an address of a pool from every task
    Reserve { pool: String, ip: std::net::IpAddr },
}

#[derive(Subcommand)]
pub enum PoolCommand {
    /// List pools with their usage
    List,
    /// Add a pool
    Add {
        name: String,
        /// One or more CIDRs (IPv4 and/or IPv6)
        #[arg(required = true)]
        cidrs: Vec<String>,
        /// Size of each agent's subnet (IPv4 prefix length) [default: 24]
        #[arg(long)]
        subnet_len: Option<u8>,
        /// Size of each agent's subnet (IPv6 prefix length) [default: 64]
        #[arg(long)]
        subnet_len_v6: Option<u8>,
        /// A range no agent subnet may touch (repeatable)
        #[arg(long)]
        exclude: Vec<String>,
    },
    /// Remove a pool (refused while tasks hold addresses from it)
    Remove { name: String },
    /// Show a pool: its subnets, the agents holding them, leases and free addresses
    Show { name: String },
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn pool_rows(pools: &[Value]) -> Vec<Vec<String>> {
    pools
        .iter()
        .map(|p| {
            let cidrs: Vec<String> = p["pool"]["cidrs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect();
            vec![
                p["pool"]["name"].as_str().unwrap_or("").to_owned(),
                cidrs.join(","),
                format!("/{}", p["pool"]["subnet_len_v4"]),
                format!("{}/{}", p["subnets_leased"], p["subnets_total"]),
                p["subnets"]
                    .as_array()
                    .map(|s| s.iter().map(|s| s["leases"].as_u64().unwrap_or(0)).sum::<u64>())
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect()
}

pub async fn ipam(ctx: &Context, command: IpamCommand) -> anyhow::Result<i32> {
    let client = Client::new(&ctx.master)?;
    match command {
        IpamCommand::Pool(PoolCommand::List) => {
            let pools: Value = client.get("/v1/ipam/pools").await?;
            if ctx.json {
                print_json(&pools)?;
            } else {
                let rows = pool_rows(pools.as_array().map(Vec::as_slice).unwrap_or(&[]));
                table::print(&["POOL", "CIDRS", "SUBNET", "SUBNETS USED", "LEASES"], &rows);
            }
        }
        IpamCommand::Pool(PoolCommand::Add { name, cidrs, subnet_len, subnet_len_v6, exclude }) => {
            let mut spec = json!({ "name": name, "cidrs": cidrs, "exclude": exclude });
            if let Some(len) = subnet_len {
                spec["subnet_len_v4"] = json!(len);
            }
            if let Some(len) = subnet_len_v6 {
                spec["subnet_len_v6"] = json!(len);
            }
            let pool: Value = client.post("/v1/ipam/pools", &spec).await?;
            if ctx.json {
                print_json(&pool)?;
            } else {
                println!("pool {name} added ({} agent subnets leased)", pool["subnets_leased"]);
            }
        }
        IpamCommand::Pool(PoolCommand::Remove { name }) => {
            let spec: Value = client.delete(&format!("/v1/ipam/pools/{name}")).await?;
            if ctx.json {
                print_json(&spec)?;
            } else {
                println!("pool {name} removed");
            }
        }
        IpamCommand::Pool(PoolCommand::Show { name }) => {
            let pool: Value = client.get(&format!("/v1/ipam/pools/{name}")).await?;
            if ctx.json {
                print_json(&pool)?;
                return Ok(0);
            }
            table::print(
                &["POOL", "CIDRS", "SUBNET", "SUBNETS USED", "LEASES"],
                &pool_rows(std::slice::from_ref(&pool)),
            );
            let reserved: Vec<String> = pool["pool"]["reserved"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r.as_str().unwrap_or("").to_owned())
                .collect();
            if !reserved.is_empty() {
                println!("reserved: {}", reserved.join(", "));
            }
            let rows: Vec<Vec<String>> = pool["subnets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    vec![
                        s["network"].as_str().unwrap_or("").to_owned(),
                        s["gateway"].as_str().unwrap_or("").to_owned(),
                        s["agent_id"].as_str().unwrap_or("").to_owned(),
                        s["leases"].to_string(),
                        s["free"].to_string(),
                    ]
                })
                .collect();
            println!();
            table::print(&["SUBNET", "GATEWAY", "AGENT", "LEASES", "FREE"], &rows);
        }
        IpamCommand::Leases { agent, task } => {
            let mut path = "/v1/ipam/leases".to_owned();
            let mut separator = '?';
            for (key, value) in [("agent", agent), ("task", task)] {
                if let Some(value) = value {
                    path.push_str(&format!("{separator}{key}={value}"));
                    separator = '&';
                }
            }
            let leases: Value = client.get(&path).await?;
            if ctx.json {
                print_json(&leases)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = leases
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    ["ip", "pool", "subnet", "agent_id", "task_id"]
                        .iter()
                        .map(|k| l[*k].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .collect();
            table::print(&["IP", "POOL", "SUBNET", "AGENT", "TASK"], &rows);
        }
        IpamCommand::Reserve { pool, ip } => {
            let view: Value = client.post(&format!("/v1/ipam/pools/{pool}/reserve"), &json!({ "ip": ip })).await?;
            if ctx.json {
                print_json(&view)?;
            } else {
                println!("{ip} reserved in pool {pool}");
            }
        }
    }
    Ok(0)
}
