//! `atoll dns` against a real cluster: names appear when tasks run and vanish when they stop,
//! straight from the event stream; queried over UDP and TCP on loopback.

use std::time::Duration;

use atoll_tests::{Cluster, wait_for};
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_running_task_is_resolvable_with_its_port_and_gone_when_killed() {
    let mut cluster = Cluster::start().await.unwrap();
    cluster.start_dns(&[]).await.unwrap();
    let id = cluster.run_detached(&["--name", "web", "--ports", "1", "--", "sleep", "1000"]).await.unwrap();
    let task = cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let port = task["ports"][0].as_u64().unwrap();

    let a = wait_for("web.atoll-run.mesos to resolve", LONG, async || {
        let answer = cluster.dns_query("web.atoll-run.mesos.", "A", false).await?;
        Ok((!answer.answers.is_empty()).then_some(answer))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    assert!(a.authoritative);
    assert_eq!(a.values(), vec!["127.0.0.1"], "host networking: the agent's address");

    for tcp in [false, true] {
        let srv = cluster.dns_query("_web._tcp.atoll-run.mesos.", "SRV", tcp).await.unwrap();
        assert_eq!(srv.rcode, "No Error", "{srv:?}");
        assert!(srv.answers.iter().any(|r| r.contains(&format!(" {port} "))), "SRV carries port {port}: {srv:?}");
    }
    let leader = cluster.dns_query("leader.mesos.", "A", false).await.unwrap();
    assert_eq!(leader.values(), vec!["127.0.0.1"]);

    cluster.run_atoll(&["task", "kill", &id], LONG).await.unwrap();
    let gone = wait_for("the name to disappear", LONG, async || {
        let answer = cluster.dns_query("web.atoll-run.mesos.", "A", false).await?;
        Ok((answer.rcode == "Non-Existent Domain").then_some(answer))
    })
    .await
    .unwrap();
    assert!(gone.authority.iter().any(|r| r.contains("SOA")), "NXDOMAIN carries the SOA: {gone:?}");
}

#[tokio::test]
async fn a_restarted_dns_resyncs_from_the_event_stream() {
    let mut cluster = Cluster::start().await.unwrap();
    cluster.start_dns(&[]).await.unwrap();
    let first = cluster.run_detached(&["--name", "first", "--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&first, "TASK_RUNNING", LONG).await.unwrap();
    wait_for("first to resolve", LONG, async || {
        Ok((!cluster.dns_query("first.atoll-run.mesos.", "A", false).await?.answers.is_empty()).then_some(()))
    })
    .await
    .unwrap();

    cluster.kill_dns();
    // While DNS is down: one task ends, another starts.
    cluster.run_atoll(&["task", "kill", &first], LONG).await.unwrap();
    cluster.wait_task_state(&first, "TASK_KILLED", LONG).await.unwrap();
    let second = cluster.run_detached(&["--name", "second", "--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&second, "TASK_RUNNING", LONG).await.unwrap();

    cluster.start_dns(&[]).await.unwrap();
    wait_for("second to resolve and first to be gone", LONG, async || {
        let second = cluster.dns_query("second.atoll-run.mesos.", "A", false).await?;
        let first = cluster.dns_query("first.atoll-run.mesos.", "A", false).await?;
        Ok((!second.answers.is_empty() && first.rcode == "Non-Existent Domain").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
}

#[tokio::test]
async fn only_healthy_tasks_are_published_unless_asked_otherwise() {
    let mut cluster = Cluster::start().await.unwrap();
    cluster.start_dns(&[]).await.unwrap();
    let gate = cluster.dir.path().join("healthy");
    let app = json!({
        "id": "/gated",
        "cmd": "exec sleep 1000",
        "cpus": 0.05,
        "mem": 16,
        "healthChecks": [{
            "protocol": "COMMAND", "command": { "value": format!("test -e {}", gate.display()) },
            "gracePeriodSeconds": 300, "intervalSeconds": 0.5, "maxConsecutiveFailures": 0, "delaySeconds": 0
        }],
    });
    let (status, body) = cluster.post("/v2/apps", &app).await.unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for("the task to run", LONG, async || {
        let app = cluster.get("/v2/apps/gated").await?;
        Ok((app["app"]["tasksRunning"] == 1).then_some(()))
    })
    .await
    .unwrap();
    let hidden = cluster.dns_query("gated.marathon.mesos.", "A", false).await.unwrap();
    assert!(hidden.answers.is_empty(), "not healthy yet: {hidden:?}");

    std::fs::write(&gate, b"").unwrap();
    wait_for("gated.marathon.mesos to resolve once healthy", LONG, async || {
        Ok((!cluster.dns_query("gated.marathon.mesos.", "A", false).await?.answers.is_empty()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
}

#[tokio::test]
async fn the_http_api_and_cli_show_the_records() {
    let mut cluster = Cluster::start().await.unwrap();
    cluster.start_dns(&[]).await.unwrap();
    let id = cluster.run_detached(&["--name", "api", "--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let http = format!("http://127.0.0.1:{}", cluster.dns_http_port);
    let hosts = wait_for("/v1/hosts to know the task", LONG, async || {
        let hosts: serde_json::Value =
            cluster.http.get(format!("{http}/v1/hosts/api.atoll-run.mesos")).send().await?.json().await?;
        Ok((hosts[0]["ip"] == "127.0.0.1").then_some(hosts))
    })
    .await
    .unwrap();
    assert_eq!(hosts[0]["host"], "api.atoll-run.mesos.");
    let enumerate: serde_json::Value =
        cluster.http.get(format!("{http}/v1/enumerate")).send().await.unwrap().json().await.unwrap();
    assert!(enumerate.to_string().contains("api.atoll-run.mesos."), "{enumerate}");
    let version: serde_json::Value =
        cluster.http.get(format!("{http}/v1/version")).send().await.unwrap().json().await.unwrap();
    assert!(version["Version"].is_string());

    let server = format!("127.0.0.1:{}", cluster.dns_port);
    let output =
        cluster.run_atoll(&["dns", "lookup", "api.atoll-run.mesos", "A", "--server", &server], LONG).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && stdout.contains("127.0.0.1"), "{stdout}");
    let output =
        cluster.run_atoll(&["dns", "records", "--framework", "atoll-run", "--http", &http], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("api.atoll-run.mesos."));
}
