//! Marathon's JSON shapes for apps, tasks and deployments, so Marathon clients read Atoll.

use atoll_proto::model::{AppId, Deployment, DeploymentAction, TaskState, Time};
use serde_json::{Value, json};

use super::{AppView, TaskRecord};

/// Marathon's version/timestamp format: RFC 3339 with milliseconds, UTC (the same form the
/// tasks' version labels carry).
pub fn version(time: Time) -> String {
    atoll_scheduler_core::services::format_version(time)
}

fn action_name(action: DeploymentAction) -> &'static str {
    match action {
        DeploymentAction::StartApplication => "StartApplication",
        DeploymentAction::ScaleApplication => "ScaleApplication",
        DeploymentAction::RestartApplication => "RestartApplication",
        DeploymentAction::StopApplication => "StopApplication",
    }
}

/// A deployment as `/v2/deployments` lists it.
pub fn deployment(deployment: &Deployment) -> Value {
    let action = json!({ "action": action_name(deployment.action), "app": deployment.app_id.as_str() });
    let mut current = action.clone();
    current["readinessCheckResults"] = json!([]);
    json!({
        "id": deployment.id,
        "version": version(deployment.version),
        "affectedApps": [deployment.app_id.as_str()],
        "affectedPods": [],
        "steps": [{ "actions": [action] }],
        "currentActions": [current],
        "currentStep": 1,
        "totalSteps": 1,
    })
}

fn is_healthy(task: &TaskRecord) -> bool {
    task.status.state == TaskState::Running && task.status.healthy == Some(true)
}

/// A task as Marathon shows it.
pub fn task(task: &TaskRecord) -> Value {
    let ports: Vec<u64> = task.info.resources.ranges("ports").values().collect();
    let ips: Vec<Value> = task
        .ip_addresses()
        .iter()
        .map(|ip| json!({ "ipAddress": ip.to_string(), "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" } }))
        .collect();
    let mut value = json!({
        "id": task.info.task_id.as_str(),
        "appId": task.app_id.as_str(),
        "host": task.host,
        "slaveId": task.info.agent_id.as_str(),
        "ports": ports,
        "servicePorts": [],
        "ipAddresses": ips,
        "state": task.status.state.name(),
        "stagedAt": version(task.staged_at),
        "version": version(task.version),
        "healthCheckResults": [],
    });
    if let Some(started) = task.started_at {
        value["startedAt"] = json!(version(started));
    }
    if task.info.health_check.is_some()
        && let Some(alive) = task.status.healthy
    {
        value["healthCheckResults"] = json!([{
            "alive": alive,
            "taskId": task.info.task_id.as_str(),
            "instanceId": task.info.task_id.as_str(),
            "consecutiveFailures": if alive { 0 } else { 1 },
            "lastSuccess": if alive { json!(version(task.status.timestamp)) } else { Value::Null },
            "lastFailure": if alive { Value::Null } else { json!(version(task.status.timestamp)) },
        }]);
    }
    value
}

/// An app with its counts, tasks, deployments and what holds it back.
pub fn app(view: &AppView, embed_tasks: bool) -> Value {
    let mut value = serde_json::to_value(&view.app.definition).unwrap_or_else(|_| json!({}));
    let live: Vec<&TaskRecord> = view.tasks.iter().filter(|t| !t.status.state.is_terminal()).collect();
    let staged = live.iter().filter(|t| matches!(t.status.state, TaskState::Staging | TaskState::Starting)).count();
    let running = live.iter().filter(|t| t.status.state == TaskState::Running).count();
    let with_checks = live.iter().filter(|t| t.info.health_check.is_some());
    let healthy = with_checks.clone().filter(|t| is_healthy(t)).count();
    let unhealthy = with_checks.filter(|t| t.status.healthy == Some(false)).count();
    value["id"] = json!(view.app.id.as_str());
    value["version"] = json!(version(view.app.version));
    value["versionInfo"] = json!({
        "lastScalingAt": version(view.app.version),
        "lastConfigChangeAt": version(view.app.config_version),
    });
    value["tasksStaged"] = json!(staged);
    value["tasksRunning"] = json!(running);
    value["tasksHealthy"] = json!(healthy);
    value["tasksUnhealthy"] = json!(unhealthy);
    value["deployments"] = json!(view.deployment.iter().map(|d| json!({ "id": d.id })).collect::<Vec<_>>());
    if embed_tasks {
        value["tasks"] = json!(live.iter().map(|t| task(t)).collect::<Vec<_>>());
    }
    if let Some(failure) = &view.last_failure {
        value["lastTaskFailure"] = json!({
            "appId": failure.app_id.as_str(),
            "host": failure.host,
            "message": failure.message,
            "state": failure.state.name(),
            "taskId": failure.task_id.as_str(),
            "timestamp": version(failure.timestamp),
            "version": version(failure.version),
        });
    }
    if view.waiting > 0 || view.launch_delay_until.is_some() {
        let reasons: Vec<Value> = view
            .offers
            .reasons()
            .into_iter()
            .map(|(reason, declined)| json!({ "reason": reason, "declined": declined }))
            .collect();
        value["queue"] = json!({
            "count": view.waiting,
            "delay": {
                "overdue": view.launch_delay_until.is_none(),
                "until": view.launch_delay_until.map(version),
            },
            "processedOffersSummary": {
                "processedOffersCount": view.offers.processed,
                "unusedOffersCount": view.offers.unused,
                "rejectSummaryLastOffers": reasons,
            },
        });
    }
    value
}

/// `{"message": …}` with optional details, as Marathon answers errors.
pub fn error(message: &str) -> Value {
    json!({ "message": message })
}

/// The path form of an app id route (`shop/web`, `/shop/web`, `//shop/web` are one app).
pub fn app_id(path: &str) -> Result<AppId, String> {
    AppId::parse(path)
}
