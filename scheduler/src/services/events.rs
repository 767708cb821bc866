//! Marathon's event bus (`GET /v2/events`): the master's event log seen through Marathon's
//! event types, so tools written for Marathon's SSE stream follow Atoll's deployments.

use std::collections::HashMap;

use atoll_proto::model::{DeploymentOutcome, Event, EventKind, Task, TaskId, TaskState};
use atoll_scheduler_core::services::matching;
use serde_json::{Value, json};

use super::json::{self as mjson, version};

/// Translates log events into Marathon events, remembering what it needs to notice changes.
#[derive(Default)]
pub struct Translator {
    last: HashMap<TaskId, (TaskState, Option<bool>)>,
}

impl Translator {
    /// Learns the tasks of a snapshot without emitting anything for them.
    pub fn learn(&mut self, tasks: &[Task]) {
        for task in tasks {
            self.last.insert(task.id.clone(), (task.state, task.healthy));
        }
    }

    /// The Marathon events an event of the log amounts to (often none).
    pub fn translate(&mut self, event: &Event) -> Vec<Value> {
        let timestamp = version(event.timestamp);
        match &event.kind {
            EventKind::TaskAdded { task } | EventKind::TaskUpdated { task } => self.task(task, &timestamp),
            EventKind::AppUpdated { app } => {
                let definition = serde_json::to_value(&app.definition).unwrap_or_default();
                vec![json!({
                    "eventType": "api_post_event",
                    "timestamp": timestamp,
                    "clientIp": null,
                    "uri": format!("/v2/apps{}", app.id),
                    "appDefinition": definition,
                })]
            }
            EventKind::AppRemoved { app_id } => {
                vec![json!({ "eventType": "app_terminated_event", "timestamp": timestamp, "appId": app_id.as_str() })]
            }
            EventKind::DeploymentUpdated { deployment } => {
                let plan = mjson::deployment(deployment);
                let step = plan["steps"][0].clone();
                vec![
                    json!({ "eventType": "deployment_info", "timestamp": timestamp, "plan": plan, "currentStep": step }),
                ]
            }
            EventKind::DeploymentFinished { deployment, outcome } => {
                let plan = mjson::deployment(deployment);
                let event_type = match outcome {
                    DeploymentOutcome::Succeeded => "deployment_success",
                    DeploymentOutcome::Failed | DeploymentOutcome::Canceled => "deployment_failed",
                };
                let mut value =
                    json!({ "eventType": event_type, "timestamp": timestamp, "id": deployment.id, "plan": plan });
                if *outcome == DeploymentOutcome::Canceled {
                    value["reason"] = json!("canceled");
                }
                vec![value]
            }
            _ => Vec::new(),
        }
    }

    fn task(&mut self, task: &Task, timestamp: &str) -> Vec<Value> {
        let Some((app_id, app_version)) = matching::app_of(&task.labels) else { return Vec::new() };
        let previous = self.last.insert(task.id.clone(), (task.state, task.healthy));
        if task.state.is_terminal() {
            self.last.remove(&task.id);
        }
        let mut out = Vec::new();
        if previous.map(|(state, _)| state) != Some(task.state) {
            out.push(json!({
                "eventType": "status_update_event",
                "timestamp": timestamp,
                "slaveId": task.agent_id.as_str(),
                "taskId": task.id.as_str(),
                "taskStatus": task.state.name(),
                "message": task.status.message.clone().unwrap_or_default(),
                "appId": app_id.as_str(),
                "host": task.agent_id.as_str(),
                "ipAddresses": task.ip_addresses.iter().map(|ip| json!({ "ipAddress": ip.to_string() })).collect::<Vec<_>>(),
                "ports": task.ports,
                "version": version(app_version),
            }));
        }
        let was = previous.and_then(|(_, healthy)| healthy);
        if let Some(alive) = task.healthy
            && was != Some(alive)
        {
            out.push(json!({
                "eventType": "health_status_changed_event",
                "timestamp": timestamp,
                "appId": app_id.as_str(),
                "taskId": task.id.as_str(),
                "instanceId": task.id.as_str(),
                "version": version(app_version),
                "alive": alive,
            }));
        }
        out
    }
}
