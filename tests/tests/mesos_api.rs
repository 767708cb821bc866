//! The Mesos v1 scheduler HTTP API of the master: a real third-party framework (pymesos, from
//! PyPI, unchanged) runs a task's whole life against it, and the wire rules (RecordIO, media
//! types, stream ids, status codes) are checked call by call, in JSON and protobuf. The Mesos
//! v1 operator API likewise, in JSON and protobuf.

use std::path::PathBuf;
use std::time::Duration;

use atoll_proto::pb::v1::master as mpb;
use atoll_proto::pb::v1::scheduler as spb;
use atoll_tests::{Cluster, wait_for};
use futures::StreamExt;
use prost::Message as _;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

/// The virtualenv python with pymesos (`tests/fixtures/install-pymesos.sh`, which `./dev test`
/// runs), or `$ATOLL_PYMESOS_PYTHON`.
fn pymesos_python() -> PathBuf {
    let python = std::env::var_os("ATOLL_PYMESOS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pymesos-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run tests/fixtures/install-pymesos.sh (./dev test does) or set ATOLL_PYMESOS_PYTHON",
        python.display()
    );
    python
}

#[tokio::test]
async fn pymesos_runs_a_task_through_its_whole_life() {
    let cluster = Cluster::start().await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pymesos_framework.py");
    let master = format!("{}:{}", cluster.master_ip, cluster.master_port);
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(pymesos_python()).arg(&script).arg(&master).kill_on_drop(true).output(),
    )
    .await
    .expect("pymesos finished within 120 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let steps: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        output.status.success(),
        "pymesos: {}\n{stdout}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    for step in ["registered", "launched", "reconciled", "stopped"] {
        assert!(names.contains(&step), "{step} missing: {stdout}");
    }
    let states: Vec<&str> = steps.iter().filter_map(|s| s["state"].as_str()).collect();
    for state in ["TASK_RUNNING", "TASK_KILLED"] {
        assert!(states.contains(&state), "{state} missing: {stdout}");
    }
    let framework_id = steps[0]["framework_id"].as_str().unwrap().to_owned();
    let task_id = steps[1]["task_id"].as_str().unwrap().to_owned();

    // The master saw the same: the task was killed, and TEARDOWN removed the framework.
    let task = cluster.task(&task_id).await.unwrap();
    assert_eq!(task["state"], "TASK_KILLED", "{task}");
    wait_for("the framework to be removed", LONG, async || {
        let frameworks = cluster.get("/v1/frameworks").await?;
        Ok(frameworks.as_array().is_some_and(|f| f.iter().all(|f| f["id"] != framework_id.as_str())).then_some(()))
    })
    .await
    .unwrap();
}

/// RecordIO records from a streaming body, as they arrive.
struct Records {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl Records {
    fn new(response: reqwest::Response) -> Records {
        Records { stream: response.bytes_stream().boxed(), buffer: Vec::new() }
    }

    async fn next(&mut self) -> Vec<u8> {
        loop {
            if let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') {
                let length: usize = std::str::from_utf8(&self.buffer[..newline]).unwrap().parse().unwrap();
                if self.buffer.len() > newline + length {
                    let record = self.buffer[newline + 1..newline + 1 + length].to_vec();
                    self.buffer.drain(..newline + 1 + length);
                    return record;
                }
            }
            let chunk = tokio::time::timeout(LONG, self.stream.next()).await.unwrap().unwrap().unwrap();
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

fn subscribe_json(name: &str) -> Value {
    json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": { "user": "root", "name": name } } })
}

#[tokio::test]
async fn the_scheduler_api_speaks_mesos_wire_rules() {
    let cluster = Cluster::start().await.unwrap();
    let url = format!("{}/api/v1/scheduler", cluster.master_url());
    let http = reqwest::Client::new();
    let post =
        |body: Vec<u8>, content_type: &str| http.post(&url).header("content-type", content_type.to_owned()).body(body);

    // SUBSCRIBE (JSON): 200, the exact media type, a stream id, RecordIO of compact JSON.
    let response = post(serde_json::to_vec(&subscribe_json("wire")).unwrap(), "application/json")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers().get("transfer-encoding").map(|v| v.to_str().unwrap()), Some("chunked"));
    let stream_id = response.headers()["mesos-stream-id"].to_str().unwrap().to_owned();
    let mut records = Records::new(response);
    let first = records.next().await;
    assert!(!first.contains(&b'\n'), "one line per record");
    let subscribed: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(subscribed["type"], "SUBSCRIBED", "{subscribed}");
    let framework_id = subscribed["subscribed"]["framework_id"]["value"].as_str().unwrap().to_owned();
    assert!(subscribed["subscribed"]["heartbeat_interval_seconds"].as_f64().unwrap() > 0.0);
    // Offers come to a new framework.
    let offers: Value = loop {
        let event: Value = serde_json::from_slice(&records.next().await).unwrap();
        if event["type"] == "OFFERS" {
            break event;
        }
    };
    let offer = &offers["offers"]["offers"][0];
    assert_eq!(offer["framework_id"]["value"], framework_id.as_str());
    assert!(
        offer["resources"].as_array().unwrap().iter().any(|r| r["name"] == "cpus" && r["type"] == "SCALAR"),
        "{offer}"
    );

    let call = |kind: &str, extra: Value| {
        let mut call = json!({ "framework_id": { "value": framework_id }, "type": kind });
        if let (Value::Object(call), Value::Object(extra)) = (&mut call, extra) {
            call.extend(extra);
        }
        serde_json::to_vec(&call).unwrap()
    };
    let decline =
        call("DECLINE", json!({ "decline": { "offer_ids": [offer["id"]], "filters": { "refuse_seconds": 1 } } }));

    // 202 with the stream id; 400 without it or with another one; 403 for a framework that
    // is not subscribed; 400 for a stream id on SUBSCRIBE; 415 and 406 for media types.
    let status = |r: reqwest::Response| r.status().as_u16();
    let ok = post(decline.clone(), "application/json").header("mesos-stream-id", &stream_id).send().await.unwrap();
    assert_eq!(status(ok), 202);
    assert_eq!(status(post(decline.clone(), "application/json").send().await.unwrap()), 400);
    let wrong = post(decline.clone(), "application/json").header("mesos-stream-id", "not-it").send().await.unwrap();
    assert_eq!(status(wrong), 400);
    let stranger = serde_json::to_vec(&json!({ "framework_id": { "value": "nobody" }, "type": "REVIVE" })).unwrap();
    let forbidden = post(stranger, "application/json").header("mesos-stream-id", &stream_id).send().await.unwrap();
    assert_eq!(status(forbidden), 403);
    let resubscribe_with_id = post(serde_json::to_vec(&subscribe_json("again")).unwrap(), "application/json")
        .header("mesos-stream-id", &stream_id)
        .send()
        .await
        .unwrap();
    assert_eq!(status(resubscribe_with_id), 400);
    assert_eq!(status(post(decline.clone(), "text/plain").send().await.unwrap()), 415);
    let not_acceptable = post(serde_json::to_vec(&subscribe_json("html")).unwrap(), "application/json")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(status(not_acceptable), 406);
    let malformed = post(b"{\"type\":".to_vec(), "application/json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(!malformed.text().await.unwrap().is_empty(), "a 400 says why");
    let revive =
        post(call("REVIVE", json!({})), "application/json").header("mesos-stream-id", &stream_id).send().await.unwrap();
    assert_eq!(status(revive), 202);
    let teardown = post(call("TEARDOWN", json!({})), "application/json")
        .header("mesos-stream-id", &stream_id)
        .send()
        .await
        .unwrap();
    assert_eq!(status(teardown), 202);

    // The same in protobuf: a SUBSCRIBE in Mesos's binary form, events back as protobuf.
    let subscribe = spb::Call {
        r#type: spb::call::Type::Subscribe as i32,
        subscribe: Some(spb::call::Subscribe {
            framework_info: Some(atoll_proto::pb::v1::FrameworkInfo {
                user: Some("root".into()),
                name: "protobuf".into(),
                ..Default::default()
            }),
            suppressed_roles: Vec::new(),
        }),
        ..Default::default()
    };
    let response = post(subscribe.encode_to_vec(), "application/x-protobuf").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let mut records = Records::new(response);
    let event = spb::Event::decode(records.next().await.as_slice()).unwrap();
    assert_eq!(event.r#type, spb::event::Type::Subscribed as i32);
    assert!(event.subscribed.unwrap().framework_id.is_some());

    // A path the master does not serve is a 404 for HTTP clients, not gRPC's 200.
    let missing = http.post(format!("{}/api/v0/nothing", cluster.master_url())).body("{}").send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// A framework speaking protobuf to the scheduler API, as the Mesos C++ and Java libraries do.
struct ProtobufFramework {
    http: reqwest::Client,
    url: String,
    stream_id: String,
    framework_id: atoll_proto::pb::v1::FrameworkId,
    events: Records,
}

impl ProtobufFramework {
    const PROTOBUF: &str = "application/x-protobuf";

    async fn subscribe(cluster: &Cluster, info: atoll_proto::pb::v1::FrameworkInfo) -> (ProtobufFramework, spb::Event) {
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/scheduler", cluster.master_url());
        let subscribe = spb::Call {
            r#type: spb::call::Type::Subscribe as i32,
            subscribe: Some(spb::call::Subscribe { framework_info: Some(info), suppressed_roles: Vec::new() }),
            ..Default::default()
        };
        let response = http
            .post(&url)
            .header("content-type", Self::PROTOBUF)
            .body(subscribe.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let stream_id = response.headers()["mesos-stream-id"].to_str().unwrap().to_owned();
        let mut events = Records::new(response);
        let first = spb::Event::decode(events.next().await.as_slice()).unwrap();
        let framework_id = first.subscribed.as_ref().expect("SUBSCRIBED first").framework_id.clone().unwrap();
        (ProtobufFramework { http, url, stream_id, framework_id, events }, first)
    }

    async fn call(&self, kind: spb::call::Type, call: spb::Call) -> (u16, String) {
        let call = spb::Call { framework_id: Some(self.framework_id.clone()), r#type: kind as i32, ..call };
        let response = self
            .http
            .post(&self.url)
            .header("content-type", Self::PROTOBUF)
            .header("mesos-stream-id", &self.stream_id)
            .body(call.encode_to_vec())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn next_offer(&mut self) -> atoll_proto::pb::v1::Offer {
        loop {
            let event = spb::Event::decode(self.events.next().await.as_slice()).unwrap();
            if let Some(offers) = event.offers {
                return offers.offers[0].clone();
            }
        }
    }

    /// Updates until each of `tasks` reached `state`, acknowledging each (an agent sends a
    /// task's next update only once the last one is acknowledged).
    async fn until_all(&mut self, tasks: &[&str], state: atoll_proto::pb::v1::TaskState) {
        use atoll_proto::pb::v1::TaskState;
        let mut reached = std::collections::BTreeSet::new();
        while reached.len() < tasks.len() {
            let event = spb::Event::decode(self.events.next().await.as_slice()).unwrap();
            let Some(update) = event.update else { continue };
            let status = update.status.unwrap();
            let id = status.task_id.clone().unwrap().value;
            if status.state() == state && tasks.contains(&id.as_str()) {
                reached.insert(id);
            } else {
                assert!(!matches!(status.state(), TaskState::TaskError | TaskState::TaskFailed), "{status:?}");
            }
            if !status.uuid.is_empty() {
                let ack = spb::call::Acknowledge {
                    agent_id: status.agent_id.clone(),
                    task_id: status.task_id.clone(),
                    uuid: status.uuid.clone(),
                };
                let call = spb::Call { acknowledge: Some(ack), ..Default::default() };
                assert_eq!(self.call(spb::call::Type::Acknowledge, call).await.0, 202);
            }
        }
    }
}

/// A protobuf framework: LAUNCH_GROUP runs a task group whole and ends it together; MESSAGE,
/// REQUEST, UPDATE_FRAMEWORK and SHUTDOWN get Mesos's answers; SUBSCRIBED names the master.
#[tokio::test]
async fn a_protobuf_framework_runs_a_task_group_and_the_other_calls() {
    use atoll_proto::pb::v1 as pb;
    use spb::call::Type as C;
    let cluster = Cluster::start().await.unwrap();
    let info = pb::FrameworkInfo { user: Some("root".into()), name: "pods".into(), ..Default::default() };
    let (mut framework, subscribed) = ProtobufFramework::subscribe(&cluster, info.clone()).await;
    let master = subscribed.subscribed.unwrap().master_info.expect("SUBSCRIBED names the master");
    assert_eq!(master.port(), u32::from(cluster.master_port));
    assert_eq!(master.ip(), u32::from_le_bytes(cluster.master_ip.parse::<std::net::Ipv4Addr>().unwrap().octets()));
    let offer = framework.next_offer().await;

    let resources =
        |text: &str| -> Vec<pb::Resource> { (&text.parse::<atoll_proto::model::Resources>().unwrap()).into() };
    let task = |id: &str| pb::TaskInfo {
        name: id.into(),
        task_id: Some(pb::TaskId { value: id.into() }),
        agent_id: offer.agent_id.clone(),
        resources: resources("cpus:0.1;mem:16"),
        command: Some(pb::CommandInfo { value: "sleep 600".into(), shell: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let accept = |offer: &pb::Offer, operation: pb::offer::Operation| spb::Call {
        accept: Some(spb::call::Accept {
            offer_ids: vec![offer.id.clone().unwrap()],
            operations: vec![operation],
            filters: None,
        }),
        ..Default::default()
    };
    let executor = pb::ExecutorInfo {
        r#type: Some(pb::executor_info::Type::Default as i32),
        executor_id: Some(pb::ExecutorId { value: "pod-1".into() }),
        resources: resources("cpus:0.1;mem:32"),
        ..Default::default()
    };
    let launch_group = pb::offer::Operation {
        r#type: pb::offer::operation::Type::LaunchGroup as i32,
        launch_group: Some(pb::offer::operation::LaunchGroup {
            executor: Some(executor),
            task_group: Some(pb::TaskGroupInfo { tasks: vec![task("pod-web"), task("pod-sidecar")] }),
        }),
        ..Default::default()
    };
    assert_eq!(framework.call(C::Accept, accept(&offer, launch_group)).await.0, 202);
    framework.until_all(&["pod-web", "pod-sidecar"], pb::TaskState::TaskRunning).await;
    let web = cluster.task("pod-web").await.unwrap();
    assert_eq!(web["executor_id"], "pod-1", "{web}");

    // MESSAGE and REQUEST are taken (202); a message to an agent the master does not know is not.
    let message = |agent: Option<pb::AgentId>| spb::Call {
        message: Some(spb::call::Message {
            agent_id: agent,
            executor_id: Some(pb::ExecutorId { value: "pod-1".into() }),
            data: b"hi".to_vec(),
        }),
        ..Default::default()
    };
    assert_eq!(framework.call(C::Message, message(offer.agent_id.clone())).await.0, 202);
    assert_eq!(framework.call(C::Message, message(Some(pb::AgentId { value: "nope".into() }))).await.0, 400);
    let request = spb::Call {
        request: Some(spb::call::Request {
            requests: vec![pb::Request { agent_id: offer.agent_id.clone(), resources: resources("cpus:1") }],
        }),
        ..Default::default()
    };
    assert_eq!(framework.call(C::Request, request).await.0, 202);
    // UPDATE_FRAMEWORK: 200, and the master shows the new name; a role change is refused.
    let update = |name: &str, role: &str| spb::Call {
        update_framework: Some(spb::call::UpdateFramework {
            framework_info: Some(pb::FrameworkInfo {
                id: Some(framework.framework_id.clone()),
                name: name.into(),
                role: role.into(),
                ..info.clone()
            }),
            suppressed_roles: Vec::new(),
        }),
        ..Default::default()
    };
    assert_eq!(framework.call(C::UpdateFramework, update("pods-renamed", "")).await.0, 200);
    let frameworks = cluster.get("/v1/frameworks").await.unwrap();
    assert!(frameworks.as_array().unwrap().iter().any(|f| f["info"]["name"] == "pods-renamed"), "{frameworks}");
    let (status, body) = framework.call(C::UpdateFramework, update("pods", "other")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("role"), "{body}");

    // One task of the group is killed: the group ends with it.
    let kill = spb::Call {
        kill: Some(spb::call::Kill {
            task_id: Some(pb::TaskId { value: "pod-sidecar".into() }),
            agent_id: None,
            kill_policy: None,
        }),
        ..Default::default()
    };
    assert_eq!(framework.call(C::Kill, kill).await.0, 202);
    framework.until_all(&["pod-web", "pod-sidecar"], pb::TaskState::TaskKilled).await;

    // SHUTDOWN of a task launched on its own (its executor is named after it) kills it.
    let offer = framework.next_offer().await;
    let launch = pb::offer::Operation {
        r#type: pb::offer::operation::Type::Launch as i32,
        launch: Some(pb::offer::operation::Launch { task_infos: vec![task("solo")] }),
        ..Default::default()
    };
    assert_eq!(framework.call(C::Accept, accept(&offer, launch)).await.0, 202);
    framework.until_all(&["solo"], pb::TaskState::TaskRunning).await;
    let shutdown = |executor: &str| spb::Call {
        shutdown: Some(spb::call::Shutdown {
            executor_id: Some(pb::ExecutorId { value: executor.into() }),
            agent_id: offer.agent_id.clone(),
        }),
        ..Default::default()
    };
    assert_eq!(framework.call(C::Shutdown, shutdown("solo")).await.0, 202);
    framework.until_all(&["solo"], pb::TaskState::TaskKilled).await;
    assert_eq!(framework.call(C::Shutdown, shutdown("no-such-executor")).await.0, 400);
    assert_eq!(framework.call(C::Teardown, spb::Call::default()).await.0, 202);
}

/// DRAIN_AGENT as Mesos has it: `max_grace_period` bounds the tasks' own grace periods (an
/// hour here, which the test could never wait out), `mark_gone` marks the agent gone once
/// drained, and GET_AGENTS shows the drain while it lasts.
#[tokio::test]
async fn drain_agent_bounds_grace_periods_and_marks_the_agent_gone() {
    let cluster = Cluster::start().await.unwrap();
    let url = format!("{}/api/v1", cluster.master_url());
    let http = reqwest::Client::new();
    let call = async |body: Value| {
        let response = http.post(&url).header("content-type", "application/json").json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    let agent_id = cluster.get("/v1/nodes").await.unwrap()[0]["id"].as_str().unwrap().to_owned();
    let task_id = cluster
        .run_detached(&["--name", "stubborn", "--kill-grace", "3600", "--", "sh", "-c", "trap '' TERM; sleep 600"])
        .await
        .unwrap();
    cluster.wait_task_state(&task_id, "TASK_RUNNING", LONG).await.unwrap();

    let drain = |config: Value| {
        let mut drain = json!({ "agent_id": { "value": agent_id } });
        drain.as_object_mut().unwrap().extend(config.as_object().unwrap().clone());
        json!({ "type": "DRAIN_AGENT", "drain_agent": drain })
    };
    let (status, body) = call(drain(json!({ "max_grace_period": "-3s" }))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_grace_period"), "{body}");
    // The same refusals from Atoll's own API and CLI.
    let node_drain = format!("/v1/nodes/{agent_id}/drain");
    for bad in [json!({ "max_grace_period_secs": -1 }), json!({ "max_grace": 1 })] {
        let (status, body) = cluster.post(&node_drain, &bad).await.unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let output = cluster.run_atoll(&["node", "drain", &agent_id, "--max-grace=-1"], LONG).await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-grace"), "{output:?}");
    assert_eq!(cluster.get(&format!("/v1/nodes/{agent_id}")).await.unwrap()["state"], "ACTIVE", "unchanged");

    let (status, body) = call(drain(json!({ "max_grace_period": "1s", "mark_gone": true }))).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(json!({ "type": "GET_AGENTS" })).await;
    let agents: Value = serde_json::from_str(&body).unwrap();
    let agent = &agents["get_agents"]["agents"][0];
    assert_eq!(agent["agent_info"]["id"]["value"], agent_id.as_str());
    let info = &agent["drain_info"];
    assert!(info["state"] == "DRAINING" || info["state"] == "DRAINED", "{agent}");
    assert_eq!(info["config"]["mark_gone"], true, "{agent}");
    assert_eq!(info["config"]["max_grace_period"]["nanoseconds"], 1_000_000_000, "{agent}");
    // The task dies by SIGKILL after a second, not an hour; then the agent is gone.
    let task = cluster.wait_task_state(&task_id, "TASK_KILLED", LONG).await.unwrap();
    assert!(task["status"]["message"].as_str().unwrap_or_default().contains("SIGKILL"), "{task}");
    wait_for("the drained agent to be marked gone", LONG, async || {
        let agent = cluster.get(&format!("/v1/nodes/{agent_id}")).await?;
        Ok((agent["state"] == "GONE").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
}

#[tokio::test]
async fn operators_deactivate_agents_and_set_weights_that_outlive_a_restart() {
    let mut cluster = Cluster::start().await.unwrap();
    let url = format!("{}/api/v1", cluster.master_url());
    let http = reqwest::Client::new();
    let call = async |body: Value| {
        let response = http.post(&url).header("content-type", "application/json").json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    let agents = cluster.get("/v1/nodes").await.unwrap();
    let agent_id = agents[0]["id"].as_str().unwrap().to_owned();
    let task_id = cluster.run_detached(&["--name", "keeps-running", "--", "sleep", "600"]).await.unwrap();
    cluster.wait_task_state(&task_id, "TASK_RUNNING", LONG).await.unwrap();

    // DEACTIVATE_AGENT: no more offers from it, its task keeps running.
    let deactivate = json!({ "type": "DEACTIVATE_AGENT", "deactivate_agent": { "agent_id": { "value": agent_id } } });
    let (status, body) = call(deactivate).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(json!({ "type": "GET_AGENTS" })).await;
    let agent = &serde_json::from_str::<Value>(&body).unwrap()["get_agents"]["agents"][0];
    assert_eq!((agent["active"].as_bool(), agent["deactivated"].as_bool()), (Some(false), Some(true)), "{agent}");
    let state = cluster.get("/master/state").await.unwrap();
    assert_eq!(state["slaves"][0]["active"], false, "{}", state["slaves"]);
    assert_eq!(state["deactivated_slaves"], 1);
    assert_eq!(cluster.get(&format!("/v1/nodes/{agent_id}")).await.unwrap()["state"], "DEACTIVATED");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.task(&task_id).await.unwrap()["state"], "TASK_RUNNING", "deactivation kills nothing");
    let (status, _) =
        call(json!({ "type": "DEACTIVATE_AGENT", "deactivate_agent": { "agent_id": { "value": "nope" } } })).await;
    assert_eq!(status, 400, "unknown agent");
    let (status, body) =
        call(json!({ "type": "REACTIVATE_AGENT", "reactivate_agent": { "agent_id": { "value": agent_id } } })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cluster.get(&format!("/v1/nodes/{agent_id}")).await.unwrap()["state"], "ACTIVE");

    // UPDATE_WEIGHTS: all or nothing, then GET_WEIGHTS and GET_ROLES show them.
    let weights = |infos: Value| json!({ "type": "UPDATE_WEIGHTS", "update_weights": { "weight_infos": infos } });
    let (status, body) =
        call(weights(json!([{ "role": "eng", "weight": 2.5 }, { "role": "ops", "weight": -1 }]))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ops"), "the error names the role: {body}");
    let (status, body) = call(weights(json!([{ "weight": 2.0 }]))).await;
    assert_eq!((status, body.contains("weight_infos[0].role")), (400, true), "{body}");
    let (_, body) = call(json!({ "type": "GET_WEIGHTS" })).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["get_weights"]["weight_infos"], json!([]), "unchanged");
    let (status, body) =
        call(weights(json!([{ "role": "eng", "weight": 2.5 }, { "role": "ops", "weight": "0.5" }]))).await;
    assert_eq!(status, 200, "{body}");
    let expected = json!([{ "role": "eng", "weight": 2.5 }, { "role": "ops", "weight": 0.5 }]);
    let (_, body) = call(json!({ "type": "GET_WEIGHTS" })).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["get_weights"]["weight_infos"], expected);

    cluster.kill_master();
    cluster.start_master().await.unwrap();
    let (_, body) = call(json!({ "type": "GET_WEIGHTS" })).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["get_weights"]["weight_infos"],
        expected,
        "after a restart"
    );
}

#[tokio::test]
async fn the_operator_api_answers_mesos_calls_and_streams_the_cluster() {
    let mut cluster = Cluster::start().await.unwrap();
    let url = format!("{}/api/v1", cluster.master_url());
    let http = reqwest::Client::new();
    let call = async |body: Value| {
        let response = http.post(&url).header("content-type", "application/json").json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };

    let (status, body) = call(json!({ "type": "GET_HEALTH" })).await;
    assert_eq!((status, body.as_str()), (200, r#"{"get_health":{"healthy":true},"type":"GET_HEALTH"}"#));
    let (status, body) = call(json!({ "type": "GET_VERSION" })).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["get_version"]["version_info"]["version"], "1.11.0");
    let (status, _) = call(json!({ "type": "NOT_A_CALL" })).await;
    assert_eq!(status, 400);
    let wrong_type = http.post(&url).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(wrong_type.status(), 415);

    // SUBSCRIBE: the whole state first, then the cluster's changes as they happen.
    let response = http
        .post(format!("{url}/operator"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(r#"{"type":"SUBSCRIBE"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let mut records = Records::new(response);
    let subscribed: Value = serde_json::from_slice(&records.next().await).unwrap();
    assert_eq!(subscribed["type"], "SUBSCRIBED");
    let agents = &subscribed["subscribed"]["get_state"]["get_agents"]["agents"];
    assert_eq!(agents.as_array().unwrap().len(), 1, "{subscribed}");
    let agent_id = agents[0]["agent_info"]["id"]["value"].as_str().unwrap().to_owned();
    assert!(agents[0]["pid"].as_str().unwrap().starts_with("slave(1)@127.0.0.1:"), "{agents}");

    let task_id = cluster.run_detached(&["--name", "opstream", "--", "sleep", "600"]).await.unwrap();
    let mut added = None;
    let mut running = false;
    for _ in 0..50 {
        let event: Value = serde_json::from_slice(&records.next().await).unwrap();
        match event["type"].as_str().unwrap() {
            "TASK_ADDED" if event["task_added"]["task"]["task_id"]["value"] == task_id.as_str() => {
                added = Some(event["task_added"]["task"].clone());
            }
            "TASK_UPDATED"
                if event["task_updated"]["status"]["task_id"]["value"] == task_id.as_str()
                    && event["task_updated"]["state"] == "TASK_RUNNING" =>
            {
                assert_eq!(event["task_updated"]["status"]["state"], "TASK_RUNNING");
                running = true;
                break;
            }
            _ => {}
        }
    }
    let added = added.expect("TASK_ADDED for the new task");
    assert_eq!(added["agent_id"]["value"], agent_id.as_str());
    assert!(added["resources"].as_array().unwrap().iter().any(|r| r["name"] == "cpus"), "{added}");
    assert!(running, "TASK_UPDATED to TASK_RUNNING");

    let (status, body) = call(json!({ "type": "GET_TASKS" })).await;
    assert_eq!(status, 200);
    let tasks: Value = serde_json::from_str(&body).unwrap();
    assert!(tasks["get_tasks"]["tasks"].as_array().unwrap().iter().any(|t| t["task_id"]["value"] == task_id.as_str()));

    // Atoll's own DNS drop-in mode (for Mesos masters) follows an Atoll master the same way.
    cluster.start_dns(&["--mesos-master", &cluster.master_url()]).await.unwrap();
    let answer = wait_for("opstream.atoll-run.mesos from the Mesos path", LONG, async || {
        let answer = cluster.dns_query("opstream.atoll-run.mesos.", "A", false).await?;
        Ok((!answer.answers.is_empty()).then_some(answer))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    assert_eq!(answer.values(), vec!["127.0.0.1".to_owned()]);
    // Maintenance through the operator API (draining kills the agent's tasks, as in Mesos).
    let (status, body) =
        call(json!({ "type": "DRAIN_AGENT", "drain_agent": { "agent_id": { "value": agent_id } } })).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(json!({ "type": "GET_AGENTS" })).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["get_agents"]["agents"][0]["deactivated"], true);
    let (status, body) =
        call(json!({ "type": "REACTIVATE_AGENT", "reactivate_agent": { "agent_id": { "value": agent_id } } })).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(json!({ "type": "DRAIN_AGENT", "drain_agent": {} })).await;
    assert_eq!(status, 400, "the agent id is required");
    let gone = json!({ "type": "MARK_AGENT_GONE", "mark_agent_gone": { "agent_id": { "value": agent_id } } });
    let (status, body) = call(gone.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(gone).await;
    assert_eq!(status, 400, "already gone: {body}");
}

/// The operator API's JSON answer (or event) as the generated type, read strictly through the
/// same master.proto descriptors: what a Mesos protobuf client reads, to compare with it.
fn json_as<M: prost::Message + Default>(value: &Value, name: &str) -> M {
    let pool = prost_reflect::DescriptorPool::decode(atoll_proto::FILE_DESCRIPTOR_SET).unwrap();
    let descriptor = pool.get_message_by_name(name).unwrap();
    let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
    prost_reflect::DynamicMessage::deserialize_with_options(descriptor, value, &options)
        .unwrap_or_else(|e| panic!("{name}: {e}\n{value}"))
        .transcode_to::<M>()
        .unwrap()
}

#[tokio::test]
async fn the_operator_api_speaks_protobuf_as_mesos_does() {
    const PROTOBUF: &str = "application/x-protobuf";
    let cluster = Cluster::start().await.unwrap();
    let url = format!("{}/api/v1", cluster.master_url());
    let http = reqwest::Client::new();
    let call = |kind: mpb::call::Type| mpb::Call { r#type: kind as i32, ..Default::default() }.encode_to_vec();
    let post = |body: Vec<u8>, content_type: &str, accept: &str| {
        http.post(&url).header("content-type", content_type.to_owned()).header("accept", accept.to_owned()).body(body)
    };
    let task_id = cluster.run_detached(&["--name", "pbstate", "--", "sleep", "600"]).await.unwrap();
    cluster.wait_task_state(&task_id, "TASK_RUNNING", LONG).await.unwrap();

    // GET_STATE in protobuf is the JSON answer, field for field (asked for around it, so that
    // a change in between is seen and the comparison retried).
    let get_state_json = async || {
        let body = serde_json::to_vec(&json!({ "type": "GET_STATE" })).unwrap();
        let response = post(body, "application/json", "application/json").send().await.unwrap();
        assert_eq!(response.status(), 200);
        json_as::<mpb::Response>(&response.json::<Value>().await.unwrap(), "atoll.v1.master.Response")
    };
    let mut compared = false;
    for _ in 0..5 {
        let before = get_state_json().await;
        let response = post(call(mpb::call::Type::GetState), PROTOBUF, PROTOBUF).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], PROTOBUF);
        let protobuf = mpb::Response::decode(response.bytes().await.unwrap()).unwrap();
        if before != get_state_json().await {
            continue;
        }
        assert_eq!(protobuf, before);
        assert_eq!(protobuf.r#type(), mpb::response::Type::GetState);
        let state = protobuf.get_state.unwrap();
        let task = &state.get_tasks.unwrap().tasks[0];
        assert_eq!(task.task_id.as_ref().unwrap().value, task_id);
        assert_eq!(task.state(), atoll_proto::pb::v1::TaskState::TaskRunning);
        let agent = &state.get_agents.unwrap().agents[0];
        assert_eq!((agent.active, agent.deactivated), (Some(true), Some(false)));
        assert!(agent.total_resources.iter().any(|r| r.name == "ports" && r.ranges.is_some()), "{agent:?}");
        compared = true;
        break;
    }
    assert!(compared, "GET_STATE did not hold still long enough to compare");

    // A protobuf call answered in JSON, and the other way round.
    let response = post(call(mpb::call::Type::GetHealth), PROTOBUF, "application/json").send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), r#"{"get_health":{"healthy":true},"type":"GET_HEALTH"}"#);
    let response = post(br#"{"type":"GET_HEALTH"}"#.to_vec(), "application/json", PROTOBUF).send().await.unwrap();
    let health = mpb::Response::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(health.get_health.unwrap().healthy, Some(true));

    // SUBSCRIBE in protobuf and in JSON: RecordIO of events, the same in both.
    let subscribe = async |content_type: &str, accept: &str| {
        let body = if content_type == PROTOBUF {
            call(mpb::call::Type::Subscribe)
        } else {
            br#"{"type":"SUBSCRIBE"}"#.to_vec()
        };
        let response = post(body, content_type, accept).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], accept);
        Records::new(response)
    };
    let next_pb = async |records: &mut Records| mpb::Event::decode(records.next().await.as_slice()).unwrap();
    let next_json = async |records: &mut Records| {
        json_as::<mpb::Event>(&serde_json::from_slice(&records.next().await).unwrap(), "atoll.v1.master.Event")
    };
    let mut protobuf = subscribe(PROTOBUF, PROTOBUF).await;
    let mut json = subscribe("application/json", "application/json").await;
    let subscribed = next_pb(&mut protobuf).await;
    assert_eq!(subscribed.r#type(), mpb::event::Type::Subscribed);
    assert_eq!(subscribed, next_json(&mut json).await);
    let subscribed = subscribed.subscribed.unwrap();
    assert!(subscribed.heartbeat_interval_seconds.unwrap() > 0.0);
    let tasks = subscribed.get_state.unwrap().get_tasks.unwrap().tasks;
    assert!(tasks.iter().any(|t| t.task_id.as_ref().unwrap().value == task_id), "{tasks:?}");

    let added_id = cluster.run_detached(&["--name", "pbstream", "--", "sleep", "600"]).await.unwrap();
    let is_ours = |event: &mpb::Event| match event.r#type() {
        mpb::event::Type::TaskAdded => {
            event.task_added.as_ref().unwrap().task.as_ref().unwrap().task_id.as_ref().unwrap().value == added_id
        }
        mpb::event::Type::TaskUpdated => {
            let update = event.task_updated.as_ref().unwrap();
            update.status.as_ref().unwrap().task_id.as_ref().unwrap().value == added_id
        }
        _ => false,
    };
    let mut seen = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let event = next_pb(&mut protobuf).await;
        let running =
            event.task_updated.as_ref().is_some_and(|u| u.state() == atoll_proto::pb::v1::TaskState::TaskRunning);
        if is_ours(&event) {
            seen.0.push(event);
            if running {
                break;
            }
        }
    }
    while seen.1.len() < seen.0.len() {
        let event = next_json(&mut json).await;
        if is_ours(&event) {
            seen.1.push(event);
        }
    }
    assert_eq!(seen.0.first().map(|e| e.r#type()), Some(mpb::event::Type::TaskAdded), "{:?}", seen.0);
    assert!(seen.0.last().unwrap().task_updated.is_some(), "TASK_UPDATED to TASK_RUNNING: {:?}", seen.0);
    assert_eq!(seen.0, seen.1, "the protobuf and the JSON stream carry the same events");

    // Media types and bad calls, as the scheduler API.
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(post(call(mpb::call::Type::GetHealth), "text/plain", PROTOBUF).send().await.unwrap()), 415);
    assert_eq!(status(post(call(mpb::call::Type::GetHealth), PROTOBUF, "text/html").send().await.unwrap()), 406);
    let no_content_type = http.post(&url).body(call(mpb::call::Type::GetHealth)).send().await.unwrap();
    assert_eq!(status(no_content_type), 400, "Mesos: Expecting 'Content-Type' to be present");
    let garbage = post(vec![0x0a, 0xff], PROTOBUF, PROTOBUF).send().await.unwrap();
    assert_eq!(garbage.status(), 400);
    assert!(garbage.text().await.unwrap().contains("does not decode"));
    let quota = post(call(mpb::call::Type::GetQuota), PROTOBUF, PROTOBUF).send().await.unwrap();
    assert_eq!(quota.status(), 400);
    assert!(quota.text().await.unwrap().contains("GET_QUOTA is a Mesos operator call this master does not serve"));
    let no_agent = mpb::Call {
        r#type: mpb::call::Type::DrainAgent as i32,
        drain_agent: Some(mpb::call::DrainAgent::default()),
        ..Default::default()
    };
    let no_agent = post(no_agent.encode_to_vec(), PROTOBUF, PROTOBUF).send().await.unwrap();
    assert_eq!(no_agent.status(), 400);
    assert_eq!(no_agent.text().await.unwrap(), "drain_agent.agent_id.value is required");
    let wrong_shape = br#"{"type":"DRAIN_AGENT","drain_agent":{"agent_id":{"value":7}}}"#.to_vec();
    let wrong_shape = post(wrong_shape, "application/json", "application/json").send().await.unwrap();
    assert_eq!(wrong_shape.status(), 400);
    assert!(wrong_shape.text().await.unwrap().contains("drain_agent.agent_id.value"));
    // Nothing changed: the agent still takes tasks.
    let response = post(call(mpb::call::Type::GetAgents), PROTOBUF, PROTOBUF).send().await.unwrap();
    let agents = mpb::Response::decode(response.bytes().await.unwrap()).unwrap().get_agents.unwrap().agents;
    assert_eq!(agents[0].deactivated, Some(false));
}
