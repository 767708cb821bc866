//! The Mesos v1 scheduler HTTP API of the master: a real third-party framework (pymesos, from
//! PyPI, unchanged) runs a task's whole life against it, and the wire rules (RecordIO, media
//! types, stream ids, status codes) are checked call by call, in JSON and protobuf.

use std::path::PathBuf;
use std::time::Duration;

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
                user: "root".into(),
                name: "protobuf".into(),
                ..Default::default()
            }),
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
