//! `atoll vip …`: named and fixed VIPs with their backends.

use anyhow::bail;
use clap::Subcommand;
use serde_json::Value;

use crate::client::Client;
use crate::operator::Context;
use crate::table;

#[derive(Subcommand)]
pub enum VipCommand {
    /// List VIPs: address, port, protocol, backends healthy/draining
    List,
    /// Show one VIP (by name, e.g. `web.marathon` or `web`, or by address) with its backends
    Show { name: String },
}

fn matches(vip: &Value, wanted: &str) -> bool {
    let name = vip["name"].as_str().unwrap_or("");
    name == wanted
        || name.split('.').next() == Some(wanted)
        || vip["address"].as_str() == Some(wanted)
        || format!("{}:{}", vip["address"].as_str().unwrap_or(""), vip["port"]) == wanted
}

pub async fn vip(ctx: &Context, command: VipCommand) -> anyhow::Result<i32> {
    let client = Client::new(&ctx.master)?;
    let vips: Value = client.get("/v1/vips").await?;
    let all = vips.as_array().cloned().unwrap_or_default();
    match command {
        VipCommand::List => {
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&vips)?);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|v| {
                    vec![
                        v["name"].as_str().unwrap_or("").to_owned(),
                        v["address"].as_str().unwrap_or("").to_owned(),
                        v["port"].to_string(),
                        v["protocol"].as_str().unwrap_or("").to_owned(),
                        format!("{}/{}", v["healthy"], v["draining"]),
                    ]
                })
                .collect();
            table::print(&["NAME", "ADDRESS", "PORT", "PROTOCOL", "BACKENDS (HEALTHY/DRAINING)"], &rows);
        }
        VipCommand::Show { name } => {
            let found: Vec<&Value> = all.iter().filter(|v| matches(v, &name)).collect();
            if found.is_empty() {
                bail!("no VIP named `{name}` (atoll vip list shows them)");
            }
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&found)?);
                return Ok(0);
            }
            for vip in found {
                println!(
                    "{}  {}:{}/{}",
                    vip["name"].as_str().unwrap_or(""),
                    vip["address"].as_str().unwrap_or(""),
                    vip["port"],
                    vip["protocol"].as_str().unwrap_or("")
                );
                let rows: Vec<Vec<String>> = vip["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        vec![
                            format!("{}:{}", b["address"].as_str().unwrap_or(""), b["port"]),
                            if b["weight"] == 0 { "draining".into() } else { format!("weight {}", b["weight"]) },
                            b["task_id"].as_str().unwrap_or("").to_owned(),
                        ]
                    })
                    .collect();
                table::print(&["BACKEND", "STATE", "TASK"], &rows);
                println!();
            }
        }
    }
    Ok(0)
}
