//! Health checks on real tasks: HTTP, TCP and COMMAND probes, verdict updates through the
//! acknowledged update queue, the verdict across an agent restart, and the kill after too many
//! failures in a row. All traffic goes to 127.0.0.1; every wait is bounded by [`WAIT`].

use atoll_agent::StopMode;
use atoll_proto::model::{CommandInfo, HealthCheck, HealthCheckKind, Reason, Source, TaskInfo, TaskState, TaskStatus};

use crate::support::*;

pub const ALL: &[(&str, fn())] = &[
    ("http_health_check_reports_healthy", http_health_check_reports_healthy),
    ("tcp_health_verdict_survives_an_agent_restart", tcp_health_verdict_survives_an_agent_restart),
    ("command_health_check_follows_a_file_in_the_sandbox", command_health_check_follows_a_file_in_the_sandbox),
    ("failing_health_check_kills_the_task", failing_health_check_kills_the_task),
];

/// A loopback port nothing listens on (right now).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The real interpreter behind `python3` (a pyenv shim would need the test's HOME).
fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

/// Fast checks: no delay, short interval, failures ignored for `grace_secs`.
fn check(kind: HealthCheckKind, grace_secs: f64, consecutive_failures: u32) -> HealthCheck {
    HealthCheck {
        kind,
        delay_secs: 0.0,
        interval_secs: 0.2,
        timeout_secs: 2.0,
        consecutive_failures,
        grace_period_secs: grace_secs,
    }
}

/// `python3 -m http.server` on a free port, checked by `kind(port)`.
fn web_server(task_id: &str, kind: impl Fn(u16) -> HealthCheckKind) -> TaskInfo {
    let port = free_port();
    let command = CommandInfo::shell(format!("exec {} -m http.server $PORT0 --bind 127.0.0.1", python()));
    let mut task = task_info(task_id, command, &format!("cpus:0.1;mem:128;ports:[{port}-{port}]"), Some(2.0));
    // The server needs a moment to start: failures until its first success are ignored.
    task.health_check = Some(check(kind(port), 30.0, 3));
    task
}

/// Acknowledges every update of `task` until a health update with verdict `healthy` arrives.
async fn until_health(master: &mut FakeMaster, task: &str, healthy: bool) -> TaskStatus {
    loop {
        let status = master.status().await;
        master.ack(&status);
        if status.task_id.as_str() != task {
            continue;
        }
        assert!(
            !status.state.is_terminal(),
            "task {task} ended as {} ({:?}) while waiting for healthy={healthy}",
            status.state,
            status.message
        );
        if status.reason == Some(Reason::TaskHealthCheckStatusUpdated) && status.healthy == Some(healthy) {
            return status;
        }
    }
}

/// The verdicts reported for `task`, in order, resends removed.
fn verdicts(master: &FakeMaster, task: &str) -> Vec<bool> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for s in master.statuses.iter().filter(|s| s.task_id.as_str() == task) {
        if s.reason == Some(Reason::TaskHealthCheckStatusUpdated) && !seen.contains(&s.uuid) {
            seen.push(s.uuid);
            out.extend(s.healthy);
        }
    }
    out
}

#[track_caller]
fn assert_health_update(status: &TaskStatus, healthy: bool) {
    assert_eq!(
        (status.state, status.healthy, status.reason, status.source),
        (TaskState::Running, Some(healthy), Some(Reason::TaskHealthCheckStatusUpdated), Source::Executor),
        "{status:?}"
    );
    assert!(status.uuid.is_some() && status.executor_pid.is_some(), "{status:?}");
}

/// The `healthy` field of `task` in the agent's `/v1/state`.
async fn state_healthy(base: &str, task: &str) -> serde_json::Value {
    let state = get_json(&format!("{base}/v1/state")).await;
    let view = state["tasks"].as_array().and_then(|t| t.iter().find(|t| t["id"] == task).cloned());
    view.expect("task in /v1/state")["healthy"].clone()
}

/// The value of a metric line starting with `name` (0 when absent).
async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("GET /metrics").text().await.expect("body");
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

const HEALTHY_RESULTS: &str = "atoll_agent_health_checks_total{outcome=\"healthy\"}";

fn http_health_check_reports_healthy() {
    with_agent(async |s| {
        let task = web_server("web", |port| HealthCheckKind::Http { port, path: "/".into() });
        s.master.launch_until(&task, TaskState::Running).await;
        let healthy = until_health(&mut s.master, "web", true).await;
        assert_health_update(&healthy, true);
        assert_eq!(verdicts(&s.master, "web"), [true], "failures before the first success are ignored");
        assert_eq!(state_healthy(&s.base, "web").await, serde_json::json!(true));
        assert!(metric(&s.base, HEALTHY_RESULTS).await >= 1.0);

        let killed = s.master.kill_until("web", None, TaskState::Killed).await;
        assert_ne!(killed.healthy, Some(false), "an ordinary kill is no health verdict: {killed:?}");
    });
}

fn tcp_health_verdict_survives_an_agent_restart() {
    with_agent(async |s| {
        let task = web_server("tcp", |port| HealthCheckKind::Tcp { port });
        s.master.launch_until(&task, TaskState::Running).await;
        assert_health_update(&until_health(&mut s.master, "tcp", true).await, true);

        s.agent.stop(StopMode::LeaveTasks).await;
        let register = s.restart_agent().await.clone();
        let recovered = register
            .tasks
            .iter()
            .find(|t| t.task.as_ref().and_then(|t| t.task_id.as_ref()).is_some_and(|id| id.value == "tcp"))
            .expect("the task is re-registered");
        let status = TaskStatus::try_from(recovered.status.clone().expect("status")).expect("valid status");
        assert_eq!((status.state, status.healthy), (TaskState::Running, Some(true)), "{status:?}");

        // The new agent checks again (its metrics start from zero) without a new verdict.
        let base = s.base.clone();
        eventually("health checks after the restart", || {
            let base = base.clone();
            async move { metric(&base, HEALTHY_RESULTS).await >= 2.0 }
        })
        .await;
        assert_eq!(state_healthy(&s.base, "tcp").await, serde_json::json!(true));
        s.master.kill_until("tcp", None, TaskState::Killed).await;
        assert_eq!(verdicts(&s.master, "tcp"), [true], "an unchanged verdict is not reported again");
    });
}

fn command_health_check_follows_a_file_in_the_sandbox() {
    with_agent(async |s| {
        let cgroups = get_json(&format!("{}/v1/state", s.base)).await["cgroups"].is_string();
        // Environment and working directory are the task's; with cgroups, so is the cgroup.
        let mut line = r#"test -e ok && test -e "$MESOS_SANDBOX/ok" && test "$MESOS_TASK_ID" = checked"#.to_owned();
        if cgroups {
            line.push_str(&format!(" && grep -q '{}' /proc/self/cgroup", s.env.cgroup_root));
        }
        let mut task = sleeping("checked", "cpus:0.1", Some(1.0));
        task.health_check = Some(check(HealthCheckKind::Command { command: CommandInfo::shell(line) }, 0.0, 0));
        s.master.launch_until(&task, TaskState::Running).await;
        assert_health_update(&until_health(&mut s.master, "checked", false).await, false);

        let ok = sandbox_of(&s.env.data_dir(), "checked").join("ok");
        std::fs::write(&ok, "").expect("create ok");
        assert_health_update(&until_health(&mut s.master, "checked", true).await, true);
        assert_eq!(state_healthy(&s.base, "checked").await, serde_json::json!(true));
        std::fs::remove_file(&ok).expect("remove ok");
        assert_health_update(&until_health(&mut s.master, "checked", false).await, false);

        let killed = s.master.kill_until("checked", None, TaskState::Killed).await;
        assert_eq!(killed.healthy, None, "{killed:?}");
        assert_eq!(verdicts(&s.master, "checked"), [false, true, false], "one update per change of the verdict");
    });
}

fn failing_health_check_kills_the_task() {
    with_agent(async |s| {
        let mut task = sleeping("doomed", "cpus:0.1", Some(1.0));
        let kind = HealthCheckKind::Http { port: free_port(), path: "/health".into() };
        task.health_check = Some(check(kind, 0.0, 2));
        s.master.launch_until(&task, TaskState::Running).await;
        assert_health_update(&until_health(&mut s.master, "doomed", false).await, false);

        let killing = s.master.until_state("doomed", TaskState::Killing).await;
        assert_eq!(killing.healthy, Some(false), "{killing:?}");
        let killed = s.master.until_state("doomed", TaskState::Killed).await;
        assert_eq!(
            (killed.healthy, killed.message.as_deref()),
            (Some(false), Some("task was killed because its health check failed 2 times in a row")),
            "{killed:?}"
        );
        assert_eq!(
            s.master.states_of("doomed"),
            [TaskState::Starting, TaskState::Running, TaskState::Running, TaskState::Killing, TaskState::Killed]
        );
        assert_eq!(verdicts(&s.master, "doomed"), [false]);
        assert_eq!(metric(&s.base, "atoll_agent_health_check_kills_total").await, 1.0);
    });
}
