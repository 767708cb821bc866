//! `atoll app …` and `atoll deployment …`: long-running services through the Marathon API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::operator::Context;
use crate::table;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create or update an app from a Marathon JSON file and follow the deployment
    Deploy {
        file: PathBuf,
        /// Supersede a deployment in progress
        #[arg(long)]
        force: bool,
        /// Return once the deployment started
        #[arg(long)]
        detach: bool,
    },
    /// List apps
    List,
    /// Show an app with its tasks
    Show { id: String },
    /// Change the number of instances
    Scale {
        id: String,
        instances: u32,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        detach: bool,
    },
    /// Replace every task with a new one (rolling, under the upgrade strategy)
    Restart {
        id: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        detach: bool,
    },
    /// Remove an app and kill its tasks
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum DeploymentCommand {
    /// List deployments in progress
    List,
    /// Roll a deployment back to the previous version (--force: just cancel it)
    Rollback {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

fn path_of(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn app(ctx: &Context, command: AppCommand) -> anyhow::Result<i32> {
    let client = Client::new(&ctx.master)?;
    match command {
        AppCommand::Deploy { file, force, detach } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let definition: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            let id = definition["id"]
                .as_str()
                .ok_or_else(|| anyhow!("{}: the app definition has no \"id\"", file.display()))?
                .to_owned();
            let answer: Value =
                client.put(&format!("{}?partialUpdate=false&force={force}", path_of(&id)), &definition).await?;
            return finish(ctx, &client, &id, &answer, detach).await;
        }
        AppCommand::List => {
            let apps: Value = client.get("/v2/apps").await?;
            if ctx.json {
                print_json(&apps)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = apps["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    vec![
                        a["id"].as_str().unwrap_or("").to_owned(),
                        format!("{}/{}", a["tasksRunning"], a["instances"]),
                        a["tasksHealthy"].to_string(),
                        a["cpus"].to_string(),
                        a["mem"].to_string(),
                        if a["deployments"].as_array().is_some_and(|d| !d.is_empty()) { "yes" } else { "-" }.into(),
                    ]
                })
                .collect();
            table::print(&["ID", "RUNNING", "HEALTHY", "CPUS", "MEM", "DEPLOYING"], &rows);
        }
        AppCommand::Show { id } => {
            let app: Value = client.get(&path_of(&id)).await?;
            if ctx.json {
                print_json(&app)?;
                return Ok(0);
            }
            print_app(&app["app"]);
        }
        AppCommand::Scale { id, instances, force, detach } => {
            let answer: Value =
                client.put(&format!("{}?force={force}", path_of(&id)), &json!({ "instances": instances })).await?;
            return finish(ctx, &client, &id, &answer, detach).await;
        }
        AppCommand::Restart { id, force, detach } => {
            let answer: Value = client.post(&format!("{}/restart?force={force}", path_of(&id)), &json!({})).await?;
            return finish(ctx, &client, &id, &answer, detach).await;
        }
        AppCommand::Remove { id, force } => {
            let answer: Value = client.delete(&format!("{}?force={force}", path_of(&id))).await?;
            if ctx.json {
                print_json(&answer)?;
            } else {
                println!("removing {id} (deployment {})", answer["deploymentId"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(0)
}

fn print_app(app: &Value) {
    let field = |name: &str| app[name].to_string();
    println!("id:          {}", app["id"].as_str().unwrap_or(""));
    println!("version:     {}", app["version"].as_str().unwrap_or(""));
    let command = app["cmd"].as_str().map(str::to_owned).unwrap_or_else(|| app["args"].to_string());
    println!("command:     {command}");
    println!("instances:   {}", field("instances"));
    println!("resources:   cpus {}  mem {}  disk {}", field("cpus"), field("mem"), field("disk"));
    println!(
        "tasks:       {} staged, {} running, {} healthy, {} unhealthy",
        field("tasksStaged"),
        field("tasksRunning"),
        field("tasksHealthy"),
        field("tasksUnhealthy")
    );
    for deployment in app["deployments"].as_array().into_iter().flatten() {
        println!("deployment:  {}", deployment["id"].as_str().unwrap_or(""));
    }
    if let Some(queue) = app.get("queue") {
        println!("waiting:     {} launch(es)", queue["count"]);
        if let Some(until) = queue["delay"]["until"].as_str() {
            println!("backoff:     no launch before {until}");
        }
        for reason in queue["processedOffersSummary"]["rejectSummaryLastOffers"].as_array().into_iter().flatten() {
            println!("  declined {}x: {}", reason["declined"], reason["reason"].as_str().unwrap_or(""));
        }
    }
    if let Some(failure) = app.get("lastTaskFailure") {
        println!(
            "last failure: {} {} on {} at {}: {}",
            failure["taskId"].as_str().unwrap_or(""),
            failure["state"].as_str().unwrap_or(""),
            failure["host"].as_str().unwrap_or(""),
            failure["timestamp"].as_str().unwrap_or(""),
            failure["message"].as_str().unwrap_or("")
        );
    }
    let rows: Vec<Vec<String>> = app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let healthy = t["healthCheckResults"]
                .as_array()
                .and_then(|r| r.first())
                .map(|r| r["alive"].to_string())
                .unwrap_or_else(|| "-".into());
            vec![
                t["id"].as_str().unwrap_or("").to_owned(),
                t["state"].as_str().unwrap_or("").to_owned(),
                t["host"].as_str().unwrap_or("").to_owned(),
                t["ports"]
                    .as_array()
                    .map(|p| p.iter().map(Value::to_string).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                healthy,
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        table::print(&["TASK", "STATE", "HOST", "PORTS", "HEALTHY"], &rows);
    }
}

/// Reports a started deployment, or follows it to its end with a progress bar.
async fn finish(ctx: &Context, client: &Client, id: &str, answer: &Value, detach: bool) -> anyhow::Result<i32> {
    let deployment = answer["deploymentId"].as_str().unwrap_or_default().to_owned();
    if detach || deployment.is_empty() {
        if ctx.json {
            print_json(answer)?;
        } else {
            println!("deployment {deployment} started for {id}");
        }
        return Ok(0);
    }
    follow(client, id, &deployment).await
}

async fn follow(client: &Client, id: &str, deployment: &str) -> anyhow::Result<i32> {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} healthy  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(id.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    loop {
        let app = match client.get::<Value>(&path_of(id)).await {
            Ok(app) => app["app"].clone(),
            // Removed apps disappear at once; their deployment is what to watch.
            Err(_) => Value::Null,
        };
        let deployments: Value = client.get("/v2/deployments").await?;
        let ongoing = deployments.as_array().into_iter().flatten().any(|d| d["id"] == deployment);
        if !app.is_null() {
            let instances = app["instances"].as_u64().unwrap_or(0);
            let has_checks = app["healthChecks"].as_array().is_some_and(|c| !c.is_empty());
            let healthy = if has_checks { app["tasksHealthy"].as_u64() } else { app["tasksRunning"].as_u64() };
            bar.set_length(instances.max(1));
            bar.set_position(healthy.unwrap_or(0).min(instances.max(1)));
            let mut message = format!("staged {} running {}", app["tasksStaged"], app["tasksRunning"]);
            if let Some(reason) =
                app["queue"]["processedOffersSummary"]["rejectSummaryLastOffers"].as_array().and_then(|r| r.first())
            {
                message.push_str(&format!("  waiting: {}", reason["reason"].as_str().unwrap_or("")));
            }
            if let Some(failure) = app.get("lastTaskFailure") {
                message.push_str(&format!("  last failure: {}", failure["message"].as_str().unwrap_or("")));
            }
            bar.set_message(message);
        }
        if !ongoing {
            bar.finish_and_clear();
            println!("deployment {deployment} of {id} finished");
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn deployment(ctx: &Context, command: DeploymentCommand) -> anyhow::Result<i32> {
    let client = Client::new(&ctx.master)?;
    match command {
        DeploymentCommand::List => {
            let deployments: Value = client.get("/v2/deployments").await?;
            if ctx.json {
                print_json(&deployments)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = deployments
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        d["id"].as_str().unwrap_or("").to_owned(),
                        d["affectedApps"][0].as_str().unwrap_or("").to_owned(),
                        d["currentActions"][0]["action"].as_str().unwrap_or("").to_owned(),
                        d["version"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            table::print(&["ID", "APP", "ACTION", "VERSION"], &rows);
        }
        DeploymentCommand::Rollback { id, force } => {
            let answer: Value = client.delete(&format!("/v2/deployments/{id}?force={force}")).await?;
            if ctx.json {
                print_json(&answer)?;
            } else if answer.is_null() {
                println!("deployment {id} cancelled");
            } else {
                println!("rolling back with deployment {}", answer["deploymentId"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(0)
}
