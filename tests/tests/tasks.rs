//! `atoll run` end to end: real master, agent and executor processes, real cgroups.

use std::time::Duration;

use atoll_tests::{Cluster, require_root, wait_for};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_task_that_finishes_streams_its_output_and_exits_zero() {
    let cluster = Cluster::start().await.unwrap();
    let output = cluster
        .run_atoll(&["run", "--name", "hello", "--", "/bin/sh", "-c", "echo hello from atoll; echo oops >&2"], LONG)
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}\n{}", cluster.logs());
    assert!(stdout.contains("hello from atoll"), "{stdout}");
    assert!(stderr.contains("oops"), "{stderr}");
    assert!(stderr.contains("TASK_FINISHED"), "{stderr}");
}

#[tokio::test]
async fn a_task_that_fails_returns_its_exit_code() {
    let cluster = Cluster::start().await.unwrap();
    let output = cluster.run_atoll(&["run", "--shell", "exit 7"], LONG).await.unwrap();
    assert_eq!(output.status.code(), Some(7), "{}\n{}", String::from_utf8_lossy(&output.stderr), cluster.logs());
    let tasks = cluster.get("/v1/tasks?state=TASK_FAILED").await.unwrap();
    let task = &tasks.as_array().unwrap()[0];
    assert_eq!(task["status"]["exit_code"], 7);
}

#[tokio::test]
async fn a_missing_program_fails_the_task_with_the_reason() {
    let cluster = Cluster::start().await.unwrap();
    let output = cluster.run_atoll(&["run", "--", "/nonexistent/program"], LONG).await.unwrap();
    assert!(!output.status.success());
    let tasks = cluster.get("/v1/tasks").await.unwrap();
    let task = &tasks.as_array().unwrap()[0];
    assert_eq!(task["state"], "TASK_FAILED", "{task}");
    assert!(task["status"]["message"].as_str().unwrap_or_default().contains("nonexistent"), "{task}");
}

#[tokio::test]
async fn a_killed_task_is_reported_killed_and_its_processes_are_gone() {
    let cluster = Cluster::start().await.unwrap();
    // The task ignores SIGTERM: the kill must escalate to SIGKILL after the grace period,
    // and reach the child `sleep` too (the whole cgroup, not just the shell).
    let id = cluster
        .run_detached(&["--kill-grace", "1", "--shell", "trap '' TERM; sleep 1000 & wait; sleep 1000"])
        .await
        .unwrap();
    let running = cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let pid = running["status"]["executor_pid"].as_u64();
    let output = cluster.run_atoll(&["task", "kill", &id], LONG).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let killed = cluster.wait_task_state(&id, "TASK_KILLED", LONG).await.unwrap();
    assert_eq!(killed["state"], "TASK_KILLED");
    let tasks = cluster.get("/v1/tasks").await.unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1);
    if let Some(pid) = pid {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "executor {pid} still alive"
        );
    }
    let leftovers = std::process::Command::new("pgrep").args(["-f", "sleep 1000"]).output().unwrap();
    let leftover_pids = String::from_utf8_lossy(&leftovers.stdout);
    // Other tests may run `sleep 1000` too; none of ours may remain in this agent's cgroups.
    let agent_dir = cluster.agent_dir();
    for pid in leftover_pids.split_whitespace() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains(&id),
            "a process of the killed task survived: {pid} ({})",
            agent_dir.display()
        );
    }
}

fn is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test]
async fn run_without_detach_returns_128_plus_signal_when_killed() {
    let cluster = Cluster::start().await.unwrap();
    let run = cluster.atoll(&["run", "--name", "victim", "--", "sleep", "1000"]);
    let mut run = tokio::process::Command::from(run);
    run.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).kill_on_drop(true);
    let mut child = run.spawn().unwrap();
    let task = wait_for("the task to run", LONG, async || {
        let tasks = cluster.get("/v1/tasks?state=TASK_RUNNING").await?;
        Ok(tasks.as_array().and_then(|t| t.first().cloned()))
    })
    .await
    .unwrap();
    let id = task["id"].as_str().unwrap();
    cluster.run_atoll(&["task", "kill", id], LONG).await.unwrap();
    let status = tokio::time::timeout(LONG, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "sleep dies of SIGTERM");
}

#[tokio::test]
async fn a_memory_limit_is_enforced_and_the_oom_kill_reported() {
    if !require_root("the OOM test") {
        return;
    }
    let cluster = Cluster::start().await.unwrap();
    let output = cluster
        .run_atoll(
            &["run", "--mem", "32", "--", "python3", "-c", "b = bytearray(300 * 1024 * 1024); print(len(b))"],
            LONG,
        )
        .await
        .unwrap();
    assert!(!output.status.success());
    let tasks = cluster.get("/v1/tasks").await.unwrap();
    let task = &tasks.as_array().unwrap()[0];
    assert_eq!(task["state"], "TASK_FAILED", "{task}\n{}", cluster.logs());
    assert_eq!(task["status"]["reason"], "REASON_CONTAINER_LIMITATION_MEMORY", "{task}");
}

#[tokio::test]
async fn task_environment_carries_ports_and_identity() {
    let cluster = Cluster::start().await.unwrap();
    let output = cluster
        .run_atoll(
            &["run", "--ports", "2", "--env", "GREETING=hi", "--shell", "echo $PORT0 $PORTS $MESOS_TASK_ID $GREETING"],
            LONG,
        )
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{stdout}");
    let port0: u16 = fields[0].parse().unwrap();
    let (begin, end) = atoll_tests::test_port_range();
    assert!((begin..=end).contains(&port0));
    assert_eq!(fields[1].split(',').count(), 2);
    assert_eq!(fields[3], "hi");
    let task = cluster.task(fields[2]).await.unwrap();
    assert_eq!(task["ports"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_requests_get_precise_errors_and_change_nothing() {
    let cluster = Cluster::start().await.unwrap();
    let before = cluster.get("/v1/state").await.unwrap()["index"].as_u64().unwrap();
    let (status, body) = cluster.post("/v1/run", &serde_json::json!({"shell": "true", "cpus": -1})).await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("cpus"), "{body}");
    let (status, body) = cluster.post("/v1/run", &serde_json::json!({"shel": "true"})).await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("shel"), "{body}");
    let (status, body) = cluster.post("/v1/run", &serde_json::json!({"shell": "true", "cpus": 10000})).await.unwrap();
    assert_eq!(status, 422, "{body}");
    let (status, _) = cluster.post("/v1/nodes/nope/drain", &serde_json::json!({})).await.unwrap();
    assert_eq!(status, 404);
    let (status, _) = cluster.post("/v1/tasks/nope/kill", &serde_json::json!({})).await.unwrap();
    assert_eq!(status, 404);
    let response = cluster.http.get(format!("{}/v1/events?since=abc", cluster.master_url())).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let output = cluster.run_atoll(&["run", "--env", "NOEQUALS", "--", "true"], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("--env"), "names the flag");
    let after = cluster.get("/v1/state").await.unwrap();
    assert_eq!(after["index"].as_u64().unwrap(), before, "nothing changed");
    assert!(after["tasks"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn cli_lists_nodes_and_tasks_as_tables_and_json() {
    let cluster = Cluster::start().await.unwrap();
    let id = cluster.run_detached(&["--", "sleep", "1000"]).await.unwrap();
    cluster.wait_task_state(&id, "TASK_RUNNING", LONG).await.unwrap();
    let output = cluster.run_atoll(&["task", "list", "--json"], LONG).await.unwrap();
    let tasks: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let task = &tasks[0];
    for field in ["id", "name", "state", "framework_id", "agent_id", "ports", "ip_addresses", "healthy"] {
        assert!(task.get(field).is_some(), "task list --json lacks `{field}`: {task}");
    }
    assert_eq!(task["state"], "TASK_RUNNING");
    let output = cluster.run_atoll(&["node", "list"], LONG).await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("ID") && text.contains("ACTIVE"), "{text}");
    let output = cluster.run_atoll(&["task", "list"], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(&id));
}
