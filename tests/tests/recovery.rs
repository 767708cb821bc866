//! Crashes: `kill -9` of the agent or the master, and what must survive them.

use std::time::Duration;

use atoll_tests::{Cluster, wait_for};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_running_task_survives_an_agent_crash_and_is_reattached() {
    let mut cluster = Cluster::start().await.unwrap();
    let id = cluster.run_detached(&["--", "sleep", "1000"]).await.unwrap();
    let running = cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let executor_pid = running["status"]["executor_pid"].as_u64().expect("RUNNING carries the executor pid");

    cluster.kill_agent();
    assert!(std::path::Path::new(&format!("/proc/{executor_pid}")).exists(), "the executor outlives the agent");
    cluster.start_agent().await.unwrap();
    cluster.wait_agent_active().await.unwrap();

    // Same process, still running, as the restarted agent sees it.
    let seen = wait_for("the new agent to re-attach the task", LONG, async || {
        Ok(cluster.agent_task(&id).await?.filter(|t| t["state"] == "TASK_RUNNING"))
    })
    .await
    .unwrap();
    assert_eq!(seen["executor_pid"].as_u64(), Some(executor_pid), "{seen}");
    let task = cluster.task(&id).await.unwrap();
    assert_eq!(task["state"], "TASK_RUNNING", "{task}\n{}", cluster.logs());
    assert!(std::path::Path::new(&format!("/proc/{executor_pid}")).exists());
}

#[tokio::test]
async fn a_task_that_exits_while_the_agent_is_down_gets_its_real_exit_status() {
    let mut cluster = Cluster::start().await.unwrap();
    let gate = cluster.dir.path().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; exit 5", gate.display());
    let id = cluster.run_detached(&["--shell", &script]).await.unwrap();
    let running = cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let executor_pid = running["status"]["executor_pid"].as_u64().unwrap();

    cluster.kill_agent();
    std::fs::write(&gate, b"").unwrap();
    wait_for("the executor to finish", LONG, async || {
        Ok((!std::path::Path::new(&format!("/proc/{executor_pid}")).exists()).then_some(()))
    })
    .await
    .unwrap();
    cluster.start_agent().await.unwrap();

    let failed = cluster.wait_task_state(&id, "TASK_FAILED", LONG).await.unwrap();
    assert_eq!(failed["status"]["exit_code"], 5, "{failed}\n{}", cluster.logs());
}

#[tokio::test]
async fn a_master_crash_loses_nothing_and_kills_nothing() {
    let mut cluster = Cluster::start().await.unwrap();
    let long = cluster.run_detached(&["--name", "long", "--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&long, "TASK_RUNNING", LONG).await.unwrap();
    let done = cluster.run_detached(&["--name", "done", "--shell", "exit 3"]).await.unwrap();
    cluster.wait_task_state(&done, "TASK_FAILED", LONG).await.unwrap();
    let before = cluster.get("/v1/state").await.unwrap();
    let executor_pid = cluster.task(&long).await.unwrap()["status"]["executor_pid"].as_u64().unwrap();

    cluster.kill_master();
    cluster.start_master().await.unwrap();
    let after = cluster.get("/v1/state").await.unwrap();
    assert!(after["index"].as_u64() >= before["index"].as_u64(), "the event log continues");
    let ids = |state: &serde_json::Value, key: &str| {
        let mut ids: Vec<String> =
            state[key].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after, "agents"), ids(&before, "agents"));
    assert_eq!(ids(&after, "frameworks"), ids(&before, "frameworks"));
    assert_eq!(ids(&after, "tasks"), ids(&before, "tasks"));
    assert_eq!(cluster.task(&done).await.unwrap()["status"]["exit_code"], 3);

    // The agent re-registers on its own and the task was never touched.
    cluster.wait_agent_active().await.unwrap();
    let task = cluster.wait_task_state(&long, "TASK_RUNNING", LONG).await.unwrap();
    assert_eq!(task["status"]["executor_pid"].as_u64(), Some(executor_pid));
    assert!(std::path::Path::new(&format!("/proc/{executor_pid}")).exists());

    // And the restarted master still launches work.
    let output = cluster.run_atoll(&["run", "--shell", "echo after-restart"], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("after-restart"), "{}", cluster.logs());
}

#[tokio::test]
async fn drain_kills_tasks_and_stops_offers_until_reactivated() {
    let cluster = Cluster::start().await.unwrap();
    let id = cluster.run_detached(&["--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let agent = cluster.wait_agent_active().await.unwrap();
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let output = cluster.run_atoll(&["node", "drain", &agent_id], LONG).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    cluster.wait_task_state(&id, "TASK_KILLED", LONG).await.unwrap();
    wait_for("the node to be drained", LONG, async || {
        let node = cluster.get(&format!("/v1/nodes/{agent_id}")).await?;
        Ok((node["state"] == "DRAINED").then_some(()))
    })
    .await
    .unwrap();
    // A task submitted now waits: nothing is offered.
    let queued = cluster.run_detached(&["--", "true"]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cluster.task(&queued).await.is_err(), "no task is launched on a drained node");
    cluster.run_atoll(&["node", "reactivate", &agent_id], LONG).await.unwrap();
    cluster.wait_task_state(&queued, "TASK_FINISHED", LONG).await.unwrap();
}

#[tokio::test]
async fn a_silent_agent_becomes_unreachable_and_its_tasks_come_back_with_it() {
    let mut cluster = Cluster::start().await.unwrap();
    let id = cluster.run_detached(&["--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let agent_id = cluster.wait_agent_active().await.unwrap()["id"].as_str().unwrap().to_owned();

    // The master runs with 1 s heartbeats: five missed and the agent is unreachable. The
    // run framework is partition-aware, so its task is TASK_UNREACHABLE, not lost.
    cluster.kill_agent();
    cluster.wait_task_state(&id, "TASK_UNREACHABLE", LONG).await.unwrap();
    let node = cluster.get(&format!("/v1/nodes/{agent_id}")).await.unwrap();
    assert_eq!(node["state"], "UNREACHABLE", "{node}");

    cluster.start_agent().await.unwrap();
    let task = cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    assert_eq!(task["agent_id"], agent_id.as_str(), "same agent, same task");
    let node = cluster.wait_agent_active().await.unwrap();
    assert_eq!(node["id"], agent_id.as_str());
}
