//! The built-in services framework (Marathon API) end to end: real master, agent, executors,
//! health checks against real servers on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use atoll_tests::{Cluster, SseStream, wait_for};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(90);

/// A web app: Python's http.server on PORT0, serving its sandbox, healthy while `ok` exists.
fn web_app(id: &str, instances: u32, extra_env: &str) -> Value {
    json!({
        "id": id,
        "instances": instances,
        "cmd": format!("touch ok; exec python3 -m http.server $PORT0 --bind 127.0.0.1 # {extra_env}"),
        "cpus": 0.05,
        "mem": 64,
        "portDefinitions": [{ "port": 0, "name": "http", "labels": { "VIP_0": format!("{id}:80") } }],
        "healthChecks": [{
            "protocol": "MESOS_HTTP", "path": "/ok", "portIndex": 0,
            "gracePeriodSeconds": 20, "intervalSeconds": 0.5, "timeoutSeconds": 2,
            "maxConsecutiveFailures": 2, "delaySeconds": 0
        }],
    })
}

async fn app(cluster: &Cluster, id: &str) -> anyhow::Result<Value> {
    Ok(cluster.get(&format!("/v2/apps{id}")).await?["app"].clone())
}

/// Waits until the app has `n` healthy tasks and no deployment.
async fn wait_healthy(cluster: &Cluster, id: &str, n: u64) -> Value {
    wait_for(&format!("{id} to have {n} healthy tasks and no deployment"), LONG, async || {
        let app = app(cluster, id).await?;
        let settled = app["tasksHealthy"].as_u64() == Some(n)
            && app["deployments"].as_array().is_some_and(|d| d.is_empty())
            && app["tasks"].as_array().is_some_and(|t| t.len() as u64 == n);
        Ok(settled.then_some(app))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()))
}

fn task_ids(app: &Value) -> BTreeSet<String> {
    app["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

async fn agent_state(cluster: &Cluster) -> Value {
    cluster.http.get(format!("{}/v1/state", cluster.agent_url())).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn three_healthy_instances_and_a_killed_process_is_replaced() {
    let cluster = Cluster::start().await.unwrap();
    let (status, body) = cluster.post("/v2/apps", &web_app("/web", 3, "")).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let app = wait_healthy(&cluster, "/web", 3).await;
    let tasks = app["tasks"].as_array().unwrap();
    let ports: BTreeSet<u64> = tasks.iter().map(|t| t["ports"][0].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 3, "each instance has its own host port");
    for port in &ports {
        let body = cluster.http.get(format!("http://127.0.0.1:{port}/ok")).send().await.unwrap();
        assert!(body.status().is_success(), "the instance on {port} serves");
    }
    assert!(tasks.iter().all(|t| t["healthCheckResults"][0]["alive"] == true));
    // The task name follows the DC/OS scheme.
    let task = cluster.task(tasks[0]["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(task["name"], "web");
    assert_eq!(task["discovery"]["ports"][0]["labels"]["VIP_0"], "/web:80", "{task}");

    // Kill one instance's process behind the cluster's back.
    let before = task_ids(&app);
    let victim = tasks[0]["id"].as_str().unwrap().to_owned();
    let agent = agent_state(&cluster).await;
    let pid = agent["tasks"].as_array().unwrap().iter().find(|t| t["id"] == victim.as_str()).unwrap()["pid"]
        .as_i64()
        .expect("the agent knows the task's pid");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    cluster.wait_task_state(&victim, "TASK_FAILED", LONG).await.unwrap();
    let app = wait_healthy(&cluster, "/web", 3).await;
    let after = task_ids(&app);
    assert!(!after.contains(&victim), "the killed task was replaced");
    assert_eq!(after.intersection(&before).count(), 2, "the other two were left alone");
    assert_eq!(app["lastTaskFailure"]["taskId"], victim.as_str());
}

#[tokio::test]
async fn a_failing_health_check_gets_the_task_replaced() {
    let cluster = Cluster::start().await.unwrap();
    cluster.post("/v2/apps", &web_app("/flaky", 1, "")).await.unwrap();
    let app = wait_healthy(&cluster, "/flaky", 1).await;
    let victim = app["tasks"][0]["id"].as_str().unwrap().to_owned();
    let agent = agent_state(&cluster).await;
    let sandbox = agent["tasks"].as_array().unwrap().iter().find(|t| t["id"] == victim.as_str()).unwrap()["sandbox"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(std::path::Path::new(&sandbox).join("ok")).unwrap();
    let killed = cluster.wait_task_state(&victim, "TASK_KILLED", LONG).await.unwrap();
    assert_eq!(killed["healthy"], false, "{killed}");
    let app = wait_healthy(&cluster, "/flaky", 1).await;
    assert!(!task_ids(&app).contains(&victim));
}

/// Tracks the app's tasks through the event log: live ones and healthy ones.
#[derive(Default)]
struct Census {
    tasks: BTreeMap<String, (String, bool)>,
}

impl Census {
    fn apply(&mut self, task: &Value) {
        let id = task["id"].as_str().unwrap().to_owned();
        let state = task["state"].as_str().unwrap().to_owned();
        let healthy = state == "TASK_RUNNING" && task["healthy"] == true;
        self.tasks.insert(id, (state, healthy));
    }

    fn live(&self) -> usize {
        let terminal =
            ["TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE"];
        self.tasks.values().filter(|(state, _)| !terminal.contains(&state.as_str())).count()
    }

    fn healthy(&self) -> usize {
        self.tasks.values().filter(|(_, healthy)| *healthy).count()
    }
}

#[tokio::test]
async fn a_rolling_upgrade_stays_within_the_strategy_bounds() {
    let cluster = Cluster::start().await.unwrap();
    let mut definition = web_app("/roll", 4, "v1");
    definition["upgradeStrategy"] = json!({ "minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.25 });
    cluster.post("/v2/apps", &definition).await.unwrap();
    let old = task_ids(&wait_healthy(&cluster, "/roll", 4).await);
    let since = cluster.get("/v1/state").await.unwrap();
    let mut census = Census::default();
    for task in since["tasks"].as_array().unwrap().iter().filter(|t| t["name"] == "roll") {
        census.apply(task);
    }
    assert_eq!((census.live(), census.healthy()), (4, 4));

    let mut events = SseStream::open(
        &format!("{}/v1/events?since={}", cluster.master_url(), since["index"].as_u64().unwrap()),
        None,
    )
    .await
    .unwrap();
    definition["cmd"] = json!("touch ok; exec python3 -m http.server $PORT0 --bind 127.0.0.1 # v2");
    let response = cluster
        .http
        .put(format!("{}/v2/apps/roll?partialUpdate=false", cluster.master_url()))
        .json(&definition)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deployment = response.json::<Value>().await.unwrap()["deploymentId"].as_str().unwrap().to_owned();

    // min healthy = ceil(4 × 0.5) = 2, max live = floor(4 × 1.25) = 5.
    let (mut min_healthy, mut max_live) = (usize::MAX, 0);
    loop {
        let message = events.next(LONG).await.unwrap().unwrap_or_else(|| panic!("stream ended\n{}", cluster.logs()));
        let event = &message["event"];
        match event["type"].as_str() {
            Some("TASK_ADDED" | "TASK_UPDATED") if event["task"]["name"] == "roll" => {
                census.apply(&event["task"]);
                min_healthy = min_healthy.min(census.healthy());
                max_live = max_live.max(census.live());
            }
            Some("DEPLOYMENT_FINISHED") if event["deployment"]["id"] == deployment.as_str() => {
                assert_eq!(event["outcome"], "SUCCEEDED");
                break;
            }
            _ => {}
        }
    }
    assert!(min_healthy >= 2, "healthy dropped to {min_healthy}");
    assert!(max_live <= 5, "live rose to {max_live}");
    let app = wait_healthy(&cluster, "/roll", 4).await;
    assert!(task_ids(&app).is_disjoint(&old), "every old task was replaced");
}

#[tokio::test]
async fn a_master_restart_mid_deployment_finishes_the_deployment() {
    let mut cluster = Cluster::start().await.unwrap();
    let gate = cluster.dir.path().join("gate");
    let definition = json!({
        "id": "/gated",
        "instances": 2,
        "cmd": "exec sleep 1000",
        "cpus": 0.05,
        "mem": 16,
        "healthChecks": [{
            "protocol": "COMMAND", "command": { "value": format!("test -e {}", gate.display()) },
            "gracePeriodSeconds": 300, "intervalSeconds": 0.5, "timeoutSeconds": 2,
            "maxConsecutiveFailures": 0, "delaySeconds": 0
        }],
    });
    let (status, body) = cluster.post("/v2/apps", &definition).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let running = wait_for("both tasks to run (not yet healthy)", LONG, async || {
        let app = app(&cluster, "/gated").await?;
        Ok((app["tasksRunning"] == 2).then_some(app))
    })
    .await
    .unwrap();
    assert_eq!(running["deployments"].as_array().unwrap().len(), 1, "still deploying: nothing is healthy");

    cluster.kill_master();
    cluster.start_master().await.unwrap();
    let recovered = app(&cluster, "/gated").await.unwrap();
    assert_eq!(recovered["deployments"].as_array().unwrap().len(), 1, "the deployment survived the restart");
    std::fs::write(&gate, b"").unwrap();
    let done = wait_healthy(&cluster, "/gated", 2).await;
    assert_eq!(task_ids(&done), task_ids(&running), "the same tasks, never relaunched");
}

#[tokio::test]
async fn invalid_apps_are_refused_with_the_field_named_and_nothing_is_created() {
    let cluster = Cluster::start().await.unwrap();
    let before = cluster.get("/v1/state").await.unwrap()["index"].as_u64().unwrap();
    let cases = [
        (json!({ "id": "/x", "cmd": "true", "instances": -1 }), "/instances"),
        (json!({ "id": "/x", "cmd": "true", "color": "blue" }), "/color"),
        (json!({ "id": "/x", "cmd": "true", "cpus": -0.5 }), "/cpus"),
        (json!({ "id": "/X Y", "cmd": "true" }), "/id"),
        (json!({ "id": "/x" }), "/cmd"),
        (
            json!({ "id": "/x", "cmd": "true", "healthChecks": [{ "protocol": "MESOS_HTTP", "portIndex": 3 }] }),
            "/healthChecks/0/portIndex",
        ),
        (json!({ "id": "/x", "cmd": "true", "constraints": [["hostname", "SOMETIMES"]] }), "/constraints/0"),
        (
            json!({ "id": "/x", "cmd": "true", "upgradeStrategy": { "minimumHealthCapacity": 2 } }),
            "/upgradeStrategy/minimumHealthCapacity",
        ),
    ];
    for (definition, path) in cases {
        let (status, body) = cluster.post("/v2/apps", &definition).await.unwrap();
        assert_eq!(status, 422, "{definition} → {body}");
        let paths: Vec<&str> =
            body["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
        assert!(paths.iter().any(|p| p.starts_with(path)), "{definition}: expected {path} in {paths:?}");
    }
    let output = cluster
        .run_atoll(&["app", "deploy", cluster.dir.path().join("missing.json").to_str().unwrap()], LONG)
        .await
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(cluster.get("/v2/apps").await.unwrap()["apps"], json!([]));
    assert_eq!(cluster.get("/v1/state").await.unwrap()["index"].as_u64().unwrap(), before, "nothing recorded");
}

#[tokio::test]
async fn the_cli_deploys_scales_and_removes_apps() {
    let cluster = Cluster::start().await.unwrap();
    let file = cluster.dir.path().join("app.json");
    std::fs::write(&file, serde_json::to_vec(&web_app("/cli", 1, "")).unwrap()).unwrap();
    let output = cluster.run_atoll(&["app", "deploy", file.to_str().unwrap()], LONG).await.unwrap();
    assert!(output.status.success(), "{}\n{}", String::from_utf8_lossy(&output.stderr), cluster.logs());
    assert_eq!(app(&cluster, "/cli").await.unwrap()["tasksHealthy"], 1, "deploy waits for the deployment");
    let output = cluster.run_atoll(&["app", "scale", "/cli", "2"], LONG).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(app(&cluster, "/cli").await.unwrap()["tasksHealthy"], 2);
    let output = cluster.run_atoll(&["app", "list"], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("/cli"));
    let output = cluster.run_atoll(&["app", "remove", "cli"], LONG).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    wait_for("the app's tasks to be gone", LONG, async || {
        let tasks = cluster.get("/v1/tasks?state=TASK_RUNNING").await?;
        Ok(tasks.as_array().is_some_and(|t| t.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    assert!(cluster.get("/v2/apps/cli").await.is_err());
}

#[tokio::test]
async fn a_second_change_is_refused_while_deploying_unless_forced_and_rollback_restores() {
    let cluster = Cluster::start().await.unwrap();
    let gate = cluster.dir.path().join("never");
    let definition = json!({
        "id": "/shop/locked",
        "instances": 1,
        "cmd": "exec sleep 1000",
        "cpus": 0.05,
        "mem": 16,
        "healthChecks": [{
            "protocol": "COMMAND", "command": { "value": format!("test -e {}", gate.display()) },
            "gracePeriodSeconds": 300, "intervalSeconds": 1, "maxConsecutiveFailures": 0, "delaySeconds": 0
        }],
    });
    let (status, body) = cluster.post("/v2/apps", &definition).await.unwrap();
    assert_eq!(status, 201, "{body}");
    // The same app through both route forms, with and without the leading slash.
    let url = format!("{}/v2/apps//shop/locked", cluster.master_url());
    let first = cluster.http.get(&url).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(first["app"]["id"], "/shop/locked");
    let deployment = first["app"]["deployments"][0]["id"].as_str().unwrap().to_owned();

    let scale = |force: bool| {
        let http = cluster.http.clone();
        let url = format!("{}/v2/apps/shop/locked?force={force}", cluster.master_url());
        async move { http.put(url).json(&json!({ "instances": 2 })).send().await.unwrap() }
    };
    let refused = scale(false).await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["deployments"][0]["id"], deployment.as_str(), "{body}");
    assert_eq!(app(&cluster, "/shop/locked").await.unwrap()["instances"], 1, "nothing changed");

    let forced = scale(true).await;
    assert_eq!(forced.status(), 200);
    let second = forced.json::<Value>().await.unwrap()["deploymentId"].as_str().unwrap().to_owned();
    let deployments = cluster.get("/v2/deployments").await.unwrap();
    let ids: Vec<&str> = deployments.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![second.as_str()], "the forced change superseded the first deployment");

    // Rolling the scale back returns to one instance.
    let response =
        cluster.http.delete(format!("{}/v2/deployments/{second}", cluster.master_url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app(&cluster, "/shop/locked").await.unwrap()["instances"], 1);
}

#[tokio::test]
async fn a_crash_looping_app_backs_off_and_says_why_it_is_not_running() {
    let cluster = Cluster::start().await.unwrap();
    let definition = json!({
        "id": "/broken", "cmd": "exit 3", "cpus": 0.05, "mem": 16,
        "backoffSeconds": 1, "backoffFactor": 2, "maxLaunchDelaySeconds": 60,
    });
    cluster.post("/v2/apps", &definition).await.unwrap();
    let app_json = wait_for("a recorded failure and a launch delay", LONG, async || {
        let app = app(&cluster, "/broken").await?;
        Ok((app.get("lastTaskFailure").is_some() && app["queue"]["delay"]["until"].is_string()).then_some(app))
    })
    .await
    .unwrap();
    assert_eq!(app_json["lastTaskFailure"]["state"], "TASK_FAILED");
    assert!(app_json["lastTaskFailure"]["message"].as_str().unwrap().contains("status 3"), "{app_json}");

    let greedy = json!({ "id": "/greedy", "cmd": "sleep 1000", "cpus": 64, "mem": 16 });
    cluster.post("/v2/apps", &greedy).await.unwrap();
    let app_json = wait_for("a declined-offers summary", LONG, async || {
        let app = app(&cluster, "/greedy").await?;
        let reasons = app["queue"]["processedOffersSummary"]["rejectSummaryLastOffers"].clone();
        Ok(reasons.as_array().is_some_and(|r| !r.is_empty()).then_some(app))
    })
    .await
    .unwrap();
    let reason = app_json["queue"]["processedOffersSummary"]["rejectSummaryLastOffers"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("cpus"), "{reason}");
    let output = cluster.run_atoll(&["app", "show", "/greedy"], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("cpus"), "the CLI shows why");
}

#[tokio::test]
async fn the_marathon_event_bus_reports_deployments_status_and_health() {
    let cluster = Cluster::start().await.unwrap();
    let mut bus = SseStream::open(&format!("{}/v2/events", cluster.master_url()), None).await.unwrap();
    cluster.post("/v2/apps", &web_app("/bus", 1, "")).await.unwrap();
    let mut seen = BTreeSet::new();
    while !seen.contains("deployment_success") {
        let event = bus.next(LONG).await.unwrap().unwrap_or_else(|| panic!("bus ended\n{}", cluster.logs()));
        let kind = event["eventType"].as_str().unwrap().to_owned();
        if kind == "status_update_event" {
            assert_eq!(event["appId"], "/bus");
        }
        if kind == "health_status_changed_event" {
            assert_eq!(event["alive"], true);
        }
        seen.insert(kind);
    }
    for kind in ["api_post_event", "deployment_info", "status_update_event", "health_status_changed_event"] {
        assert!(seen.contains(kind), "{kind} missing from {seen:?}");
    }
}
