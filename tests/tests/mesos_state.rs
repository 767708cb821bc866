//! Mesos's read-only master endpoints on a live Atoll cluster: `/master/state` of a cluster
//! with running tasks, fed through Atoll's own Mesos-DNS projection (the one checked against the
//! real Mesos-DNS in `dns/tests/conformance.rs`), gives the expected names, exactly the ones the
//! projection makes from Atoll's own state; and the endpoints answer as Mesos's do on the wire.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use atoll_dns::projection::{DnsConfig, Masters, Projection};
use atoll_dns::records::{RecordData, RecordSet};
use atoll_proto::model::ClusterState;
use atoll_tests::{Cluster, wait_for};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

/// `/web`: two instances with a named host port, no health check (published once running).
fn web_app() -> Value {
    json!({
        "id": "/web",
        "instances": 2,
        "cmd": "exec sleep 1000",
        "cpus": 0.05,
        "mem": 16,
        "portDefinitions": [{ "port": 0, "name": "http" }],
    })
}

/// Starts a cluster with `/web` (2 instances) and a detached one-off task `once` with one
/// port, and waits until all three run. Returns the cluster and the one-off task's id.
async fn running_cluster() -> (Cluster, String) {
    let cluster = Cluster::start().await.unwrap();
    let (status, body) = cluster.post("/v2/apps", &web_app()).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let once = cluster.run_detached(&["--name", "once", "--ports", "1", "--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&once, "TASK_RUNNING", LONG).await.unwrap();
    wait_for("/web to run 2 tasks", LONG, async || {
        let app = cluster.get("/v2/apps/web").await?;
        Ok((app["app"]["tasksRunning"] == 2).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    (cluster, once)
}

fn lines(records: &RecordSet) -> BTreeSet<String> {
    records
        .records()
        .map(|r| match &r.data {
            RecordData::A(ip) => format!("{} A {ip}", r.name),
            RecordData::Aaaa(ip) => format!("{} AAAA {ip}", r.name),
            RecordData::Srv { port, target, .. } => format!("{} SRV {target}:{port}", r.name),
        })
        .collect()
}

/// The SRV ports served under `name`.
fn srv_ports(lines: &BTreeSet<String>, name: &str) -> BTreeSet<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{name} SRV ")))
        .filter_map(|target| target.rsplit_once(':').and_then(|(_, port)| port.parse().ok()))
        .collect()
}

#[tokio::test]
async fn master_state_through_the_mesos_dns_projection_names_every_running_task() {
    let (cluster, once) = running_cluster().await;
    let master: SocketAddr = format!("127.0.0.1:{}", cluster.master_port).parse().unwrap();
    let masters = Masters { leader: Some(master), masters: vec![master] };

    // Two reads of the cluster (Mesos's shape and Atoll's) agree once nothing moves any more.
    let (state, records) = wait_for("/master/state and /v1/state to give the same names", LONG, async || {
        let state = cluster.get("/master/state").await?;
        let native: ClusterState = serde_json::from_value(cluster.get("/v1/state").await?)?;
        let mut from_mesos = Projection::new(DnsConfig::default());
        from_mesos.set_masters(masters.clone());
        from_mesos.reset_from_mesos_state(&state)?;
        let mut from_atoll = Projection::new(DnsConfig::default());
        from_atoll.set_masters(masters.clone());
        from_atoll.reset(&native);
        let records = lines(from_mesos.records());
        Ok((records == lines(from_atoll.records())).then_some((state, records)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));

    // The state names the leader and the agent as Mesos does; the parser takes the leader.
    assert_eq!(state["leader"], format!("master@{master}"));
    assert_eq!(state["slaves"][0]["pid"], format!("slave(1)@127.0.0.1:{}", cluster.agent_port));
    let parsed = atoll_dns::projection::mesos::parse(&state, &|_| Vec::new()).unwrap();
    assert_eq!(parsed.leader, Some(master));

    let frameworks = state["frameworks"].as_array().unwrap();
    let marathon = frameworks.iter().find(|f| f["name"] == "marathon").expect("the marathon framework");
    let web: Vec<&Value> = marathon["tasks"].as_array().unwrap().iter().filter(|t| t["name"] == "web").collect();
    assert_eq!(web.len(), 2, "{marathon}");
    let mut web_ports = BTreeSet::new();
    for task in &web {
        assert_eq!(task["state"], "TASK_RUNNING");
        let ports = task["resources"]["ports"].as_str().unwrap();
        let port: u64 = ports.trim_matches(['[', ']']).split('-').next().unwrap().parse().unwrap();
        assert_eq!(ports, format!("[{port}-{port}]"), "one host port, as a Mesos range string");
        web_ports.insert(port);
        let status = task["statuses"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(status["state"], "TASK_RUNNING");
        assert_eq!(status["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"], "127.0.0.1");
        assert_eq!(task["discovery"]["ports"]["ports"][0]["name"], "http");
    }
    let once_task = frameworks
        .iter()
        .flat_map(|f| f["tasks"].as_array().unwrap())
        .find(|t| t["id"] == once.as_str())
        .expect("the one-off task");
    let once_port: u64 =
        once_task["resources"]["ports"].as_str().unwrap()[1..].split('-').next().unwrap().parse().unwrap();

    for expected in [
        "web.marathon.mesos. A 127.0.0.1",
        "once.atoll-run.mesos. A 127.0.0.1",
        "leader.mesos. A 127.0.0.1",
        "master.mesos. A 127.0.0.1",
        "slave.mesos. A 127.0.0.1",
        "marathon.mesos. A 127.0.0.1",
    ] {
        assert!(records.contains(expected), "no `{expected}` in {records:#?}");
    }
    assert_eq!(srv_ports(&records, "_web._tcp.marathon.mesos."), web_ports, "{records:#?}");
    assert_eq!(srv_ports(&records, "_http._web._tcp.marathon.mesos."), web_ports, "named port");
    assert_eq!(srv_ports(&records, "_once._tcp.atoll-run.mesos."), BTreeSet::from([once_port]));
    assert_eq!(srv_ports(&records, "_leader._tcp.mesos."), BTreeSet::from([u64::from(cluster.master_port)]));
    assert_eq!(srv_ports(&records, "_slave._tcp.mesos."), BTreeSet::from([u64::from(cluster.agent_port)]));
}

#[tokio::test]
async fn the_read_only_endpoints_answer_as_mesos_does() {
    let (cluster, _once) = running_cluster().await;
    let url = cluster.master_url();

    // /master/redirect: 307 to this master (the leader), protocol-relative.
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/master/redirect", "/redirect"] {
        let response = no_follow.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 307, "{path}");
        assert_eq!(response.headers()["location"], format!("//127.0.0.1:{}", cluster.master_port).as_str(), "{path}");
    }

    // The aliases serve the same state (read until two reads agree: a heartbeat-free cluster
    // with settled tasks does not change, but a late status update may land between reads).
    for alias in ["/state.json", "/master/state.json", "/state"] {
        wait_for(&format!("{alias} to equal /master/state"), LONG, async || {
            let a = cluster.get("/master/state").await?;
            let b = cluster.get(alias).await?;
            Ok((a == b).then_some(()))
        })
        .await
        .unwrap();
    }

    // /master/tasks pages like Mesos; unknown parameters are ignored, as Mesos ignores them.
    let all = cluster.get("/master/tasks").await.unwrap();
    assert_eq!(all["tasks"].as_array().unwrap().len(), 3, "{all}");
    let first = cluster.get("/master/tasks?limit=1").await.unwrap();
    assert_eq!(first["tasks"].as_array().unwrap().len(), 1);
    let second = cluster.get("/master/tasks?limit=1&offset=1&bogus=yes").await.unwrap();
    assert_eq!(second["tasks"].as_array().unwrap().len(), 1);
    assert_ne!(first["tasks"][0]["id"], second["tasks"][0]["id"]);
    let ascending = cluster.get("/master/tasks?order=asc&limit=3").await.unwrap();
    let mut descending: Vec<Value> = all["tasks"].as_array().unwrap().clone();
    descending.reverse();
    let stamps = |tasks: &[Value]| -> Vec<f64> {
        tasks.iter().map(|t| t["statuses"][0]["timestamp"].as_f64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(stamps(ascending["tasks"].as_array().unwrap()), stamps(&descending));
    let marathon_id = all["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "web").unwrap()["framework_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let only = cluster.get(&format!("/master/tasks?framework_id={marathon_id}")).await.unwrap();
    assert_eq!(only["tasks"].as_array().unwrap().len(), 2);

    // JSONP, as Mesos's `jsonp` parameter.
    let response = cluster.http.get(format!("{url}/master/state-summary?jsonp=show")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/javascript");
    let body = response.text().await.unwrap();
    assert!(body.starts_with("show({") && body.ends_with("});"), "{body}");

    let summary = cluster.get("/master/state-summary").await.unwrap();
    assert_eq!(summary["slaves"][0]["TASK_RUNNING"], 3, "{summary}");
    let frameworks = cluster.get("/master/frameworks").await.unwrap();
    assert!(frameworks["frameworks"].as_array().unwrap().iter().any(|f| f["name"] == "atoll-run"));
    assert_eq!(frameworks["unregistered_frameworks"], json!([]));
    let slaves = cluster.get("/master/slaves").await.unwrap();
    assert_eq!(slaves["slaves"][0]["active"], true);
    assert!(slaves["slaves"][0]["unreserved_resources_full"].is_array());

    let version = cluster.get("/version").await.unwrap();
    assert_eq!(version["version"], "1.11.0");
    assert_eq!(version["name"], "atoll");
    assert!(version["build_time"].is_number() && version["build_date"].is_string(), "{version}");

    let metrics = cluster.get("/metrics/snapshot").await.unwrap();
    assert_eq!(metrics["master/elected"], 1.0);
    assert_eq!(metrics["master/slaves_active"], 1.0);
    assert_eq!(metrics["master/tasks_running"], 3.0);
    assert_eq!(metrics["master/frameworks_active"], 2.0, "{metrics}");
    assert_eq!(metrics["master/cpus_total"], 4.0);
    assert!(metrics["master/cpus_used"].as_f64().unwrap() > 0.0);
    assert!(metrics["master/uptime_secs"].as_f64().unwrap() > 0.0);

    // Read-only: other methods are refused.
    let post = cluster.http.post(format!("{url}/master/state")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}
