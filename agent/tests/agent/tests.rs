//! The scenarios. Each test owns a [`TestEnv`] (declared before its runtime, so it is dropped
//! last and cleans up even after a panic), a fake master and one or more agents.

use std::time::Duration;

use atoll_agent::StopMode;
use atoll_proto::model::{CommandInfo, Reason, TaskState};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;

use crate::support::*;

pub const ALL: &[(&str, fn())] = &[
    ("task_exit_codes_logs_and_api", task_exit_codes_logs_and_api),
    ("kill_escalates_to_sigkill", kill_escalates_to_sigkill),
    ("launch_failure_is_reported", launch_failure_is_reported),
    ("oom_kill_is_a_memory_limitation", oom_kill_is_a_memory_limitation),
    ("restart_reattaches_running_tasks_and_resends_updates", restart_reattaches_running_tasks_and_resends_updates),
    ("restart_reports_the_exit_code_of_a_task_that_ended_meanwhile", restart_reports_exit_code_of_ended_task),
    ("reconnect_reregisters_and_resends_the_head", reconnect_reregisters_and_resends_the_head),
    ("stop_with_kill_tasks_reports_and_cleans_up", stop_with_kill_tasks_reports_and_cleans_up),
    ("master_shutdown_kills_tasks_and_registers_anew", master_shutdown_kills_tasks_and_registers_anew),
    ("cleanup_kills_and_removes_everything", cleanup_kills_and_removes_everything),
    ("follow_logs_until_the_task_ends", follow_logs_until_the_task_ends),
    ("a_kill_in_progress_is_finished_after_a_restart", a_kill_in_progress_is_finished_after_a_restart),
    ("kill_without_cgroups_uses_the_process_group", kill_without_cgroups_uses_the_process_group),
    ("leftover_processes_die_with_the_task", leftover_processes_die_with_the_task),
    ("completed_sandboxes_are_collected", completed_sandboxes_are_collected),
];

fn shell(line: &str) -> CommandInfo {
    CommandInfo::shell(line)
}

async fn task_pid(base: &str, task: &str) -> Option<u32> {
    let state = get_json(&format!("{base}/v1/state")).await;
    state["tasks"].as_array()?.iter().find(|t| t["id"] == task).and_then(|t| t["pid"].as_u64()).map(|p| p as u32)
}

async fn wait_task_pid(base: &str, task: &str) -> u32 {
    let start = std::time::Instant::now();
    loop {
        if let Some(pid) = task_pid(base, task).await {
            return pid;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for the pid of {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn task_exit_codes_logs_and_api() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        let register = master.accept(AGENT_ID).await;
        assert!(register.tasks.is_empty());
        let info = register.info.clone().expect("info");
        assert_eq!(info.hostname, "test-node");
        assert!(info.id.is_none(), "a new agent has no id yet");
        assert!(info.address.starts_with("127.0.0.1:"), "{}", info.address);
        let base = http_base(&register);

        let ok = task_info(
            "ok",
            shell("echo out $PORT0 $PORTS $MESOS_TASK_ID $ATOLL_FRAMEWORK_ID $HOST; echo err >&2"),
            "cpus:0.1;mem:64;ports:[31005-31006]",
            None,
        );
        master.send(launch(&ok));
        let running = master.until_state("ok", TaskState::Running).await;
        assert!(running.executor_pid.is_some(), "{running:?}");
        assert_eq!(running.agent_id.as_ref().map(|a| a.as_str()), Some(AGENT_ID));
        let finished = master.until_state("ok", TaskState::Finished).await;
        assert_eq!(finished.exit_code, Some(0));
        assert_eq!(master.states_of("ok"), [TaskState::Starting, TaskState::Running, TaskState::Finished]);

        let stdout =
            reqwest::get(format!("{base}/v1/tasks/ok/logs/stdout")).await.expect("GET").text().await.expect("body");
        assert_eq!(stdout, "out 31005 31005,31006 ok fw-1 test-node\n");
        let stderr = reqwest::get(format!("{base}/v1/tasks/ok/logs/stderr?framework_id={FRAMEWORK}"))
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        assert_eq!(stderr, "err\n");
        let tail = reqwest::get(format!("{base}/v1/tasks/ok/logs/stdout?offset=4")).await.expect("GET");
        assert_eq!(tail.text().await.expect("body"), "31005 31005,31006 ok fw-1 test-node\n");

        let fail = task_info(
            "fail",
            CommandInfo::argv(vec!["/bin/sh".into(), "-c".into(), "exit 3".into()]),
            "cpus:0.1",
            None,
        );
        master.send(launch(&fail));
        let failed = master.until_state("fail", TaskState::Failed).await;
        assert_eq!(failed.exit_code, Some(3));
        assert_eq!(failed.message.as_deref(), Some("Command exited with status 3"));
        assert_eq!(failed.reason, None);

        // Errors of the log API name what is wrong.
        for (path, status, needle) in [
            ("/v1/tasks/nope/logs/stdout", 404, "unknown task `nope`"),
            ("/v1/tasks/ok/logs/stdout?framework_id=other", 404, "unknown framework `other`"),
            ("/v1/tasks/ok/logs/environ", 400, "not a log file"),
            ("/v1/tasks/ok/logs/stdout?offset=minus", 400, "offset"),
        ] {
            let response = reqwest::get(format!("{base}{path}")).await.expect("GET");
            assert_eq!(response.status().as_u16(), status, "{path}");
            let body: serde_json::Value = response.json().await.expect("json error");
            assert!(body["error"].as_str().is_some_and(|e| e.contains(needle)), "{path}: {body}");
        }

        assert_eq!(reqwest::get(format!("{base}/health")).await.expect("GET").text().await.expect("body"), "ok");
        let metrics = reqwest::get(format!("{base}/metrics")).await.expect("GET").text().await.expect("body");
        assert!(metrics.contains("atoll_agent_launches_total 2"), "{metrics}");
        assert!(metrics.contains("atoll_agent_registered 1"), "{metrics}");
        eventually("completed tasks to leave the state", || {
            let base = base.clone();
            async move {
                let state = get_json(&format!("{base}/v1/state")).await;
                state["agent_id"] == AGENT_ID && state["tasks"].as_array().is_some_and(|t| t.is_empty())
            }
        })
        .await;
        let state = get_json(&format!("{base}/v1/state")).await;
        assert_eq!(state["hostname"], "test-node");
        assert_eq!(state["connected"], true);
        assert_eq!(state["resources"]["cpus"], 2.0);
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn kill_escalates_to_sigkill() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);

        // Ignores SIGTERM, as do its children: only the SIGKILL after the grace period ends it.
        let stubborn =
            task_info("stubborn", shell("trap '' TERM; echo ready; while :; do sleep 1; done"), "cpus:0.1", Some(1.0));
        // A duplicate launch of a live task is ignored.
        master.send(launch(&stubborn));
        master.send(launch(&stubborn));
        master.until_state("stubborn", TaskState::Running).await;
        let pid = wait_task_pid(&base, "stubborn").await;
        let stdout = sandbox_of(&env.data_dir(), "stubborn").join("stdout");
        eventually("the trap to be installed", || {
            let stdout = stdout.clone();
            async move { std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("ready")) }
        })
        .await;
        master.send(kill("stubborn", None));
        master.until_state("stubborn", TaskState::Killing).await;
        let killed = master.until_state("stubborn", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGKILL), "{killed:?}");
        assert_eq!(killed.message.as_deref(), Some("Command terminated by signal SIGKILL"));
        assert!(!is_running(pid), "task process {pid} is gone");
        assert_eq!(
            master.states_of("stubborn"),
            [TaskState::Starting, TaskState::Running, TaskState::Killing, TaskState::Killed]
        );

        // A polite task ends on SIGTERM.
        let polite = task_info("polite", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1", None);
        master.send(launch(&polite));
        master.until_state("polite", TaskState::Running).await;
        master.send(kill("polite", Some(30.0)));
        let killed = master.until_state("polite", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGTERM), "{killed:?}");

        // A kill right behind the launch.
        let quick = task_info("quick", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1", None);
        master.send(launch(&quick));
        master.send(kill("quick", Some(0.0)));
        let killed = master.until_state("quick", TaskState::Killed).await;
        assert!(
            matches!(killed.reason, None | Some(Reason::TaskKilledDuringLaunch)),
            "killed during launch or right after: {killed:?}"
        );
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn launch_failure_is_reported() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        master.accept(AGENT_ID).await;
        let missing =
            task_info("missing", CommandInfo::argv(vec!["/nonexistent/atoll-no-such".into()]), "cpus:0.1", None);
        master.send(launch(&missing));
        let failed = master.until_state("missing", TaskState::Failed).await;
        assert_eq!(failed.reason, Some(Reason::ContainerLaunchFailed), "{failed:?}");
        assert!(failed.message.as_deref().is_some_and(|m| m.contains("No such file or directory")), "{failed:?}");
        assert_eq!(master.states_of("missing"), [TaskState::Starting, TaskState::Failed]);
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn oom_kill_is_a_memory_limitation() {
    if !require_root("oom_kill_is_a_memory_limitation") {
        return;
    }
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        master.accept(AGENT_ID).await;
        // dash keeps the whole command substitution in memory: ~200 MB against 32 MiB.
        let hog = task_info("hog", shell(r#"x=$(head -c 200000000 /dev/zero | tr "\0" a)"#), "cpus:0.5;mem:32", None);
        master.send(launch(&hog));
        let failed = master.until_state("hog", TaskState::Failed).await;
        assert_eq!(failed.reason, Some(Reason::ContainerLimitationMemory), "{failed:?}");
        assert_eq!(failed.message.as_deref(), Some("memory limit of 32 MiB exceeded"));
        agent.stop(StopMode::KillTasks).await;
        assert_eq!(env.leftover_cgroups(), Vec::<std::path::PathBuf>::new());
    });
}

fn restart_reattaches_running_tasks_and_resends_updates() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let options = env.options(&master.url);
        let mut agent = TestAgent::start(options.clone());
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);
        let sleeper = task_info("sleeper", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1", None);
        master.send(launch(&sleeper));
        let running = master.until_state("sleeper", TaskState::Running).await;
        let executor = running.executor_pid.expect("executor pid");
        let pid = wait_task_pid(&base, "sleeper").await;

        // An update the master never acknowledges.
        let second = task_info("second", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1", None);
        master.send(launch(&second));
        let starting = master.status().await;
        assert_eq!((starting.task_id.as_str(), starting.state), ("second", TaskState::Starting));
        agent.stop(StopMode::LeaveTasks).await;
        assert!(is_running(pid) && is_running(executor), "tasks outlive the agent");

        let mut agent = TestAgent::start(options);
        let register = master.expect_register().await;
        let info = register.info.as_ref().expect("info");
        assert_eq!(info.id.as_ref().map(|i| i.value.as_str()), Some(AGENT_ID), "the id was persisted");
        let mut reported: Vec<(String, TaskState)> = register
            .tasks
            .iter()
            .map(|t| {
                let status = t.status.as_ref().expect("status");
                (t.task.as_ref().expect("task").task_id.as_ref().expect("id").value.clone(), state_of(status))
            })
            .collect();
        reported.sort();
        assert_eq!(reported[1], ("sleeper".to_owned(), TaskState::Running));
        assert_eq!(reported[0].0, "second");
        master.send(apb::master_message::Message::Registered(apb::Registered {
            agent_id: Some(pb::AgentId { value: AGENT_ID.into() }),
            heartbeat_interval_seconds: 1.0,
        }));
        let resent = loop {
            let status = master.status().await;
            if status.task_id.as_str() == "second" {
                break status;
            }
        };
        assert_eq!(resent.uuid, starting.uuid, "the unacknowledged update is re-sent as it was");
        master.ack(&resent);
        master.until_state("second", TaskState::Running).await;

        let base = http_base(&register);
        assert_eq!(wait_task_pid(&base, "sleeper").await, pid, "the same process, re-attached");
        let state = get_json(&format!("{base}/v1/state")).await;
        let sleeper_view = state["tasks"].as_array().and_then(|t| t.iter().find(|t| t["id"] == "sleeper").cloned());
        assert_eq!(sleeper_view.map(|t| t["executor_pid"].clone()), Some(serde_json::json!(executor)));

        master.send(kill("sleeper", None));
        let killed = master.until_state("sleeper", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGTERM));
        assert!(!is_running(pid));
        master.send(kill("second", None));
        master.until_state("second", TaskState::Killed).await;
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn state_of(status: &pb::TaskStatus) -> TaskState {
    atoll_proto::model::TaskStatus::try_from(status.clone()).expect("status").state
}

fn restart_reports_exit_code_of_ended_task() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let options = env.options(&master.url);
        let mut agent = TestAgent::start(options.clone());
        master.accept(AGENT_ID).await;
        let gated = task_info("gated", shell("while [ ! -e go ]; do sleep 0.05; done; exit 7"), "cpus:0.1", None);
        master.send(launch(&gated));
        let running = master.until_state("gated", TaskState::Running).await;
        let executor = running.executor_pid.expect("executor pid");
        agent.stop(StopMode::LeaveTasks).await;

        // The task ends while no agent runs.
        let sandbox = sandbox_of(&env.data_dir(), "gated");
        std::fs::write(sandbox.join("go"), "").expect("open the gate");
        eventually("the executor to exit", || async move {
            // The executor is this process's child: reap it, as init would for a real agent.
            let pid = rustix::process::Pid::from_raw(executor as i32).expect("pid");
            matches!(rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG), Ok(Some(_)))
        })
        .await;
        assert!(sandbox.join("exit.json").exists());

        let mut agent = TestAgent::start(options);
        let register = master.accept(AGENT_ID).await;
        assert_eq!(register.tasks.len(), 1);
        let failed = master.until_state("gated", TaskState::Failed).await;
        assert_eq!(failed.exit_code, Some(7), "{failed:?}");
        assert_eq!(failed.message.as_deref(), Some("Command exited with status 7"));
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn reconnect_reregisters_and_resends_the_head() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        master.accept(AGENT_ID).await;
        let steady = task_info("steady", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1", None);
        master.send(launch(&steady));
        let starting = master.status().await;
        assert_eq!(starting.state, TaskState::Starting);

        master.drop_stream();
        let register = master.accept(AGENT_ID).await;
        assert_eq!(register.info.as_ref().and_then(|i| i.id.as_ref()).map(|i| i.value.as_str()), Some(AGENT_ID));
        assert_eq!(register.tasks.len(), 1);
        let resent = master.status().await;
        assert_eq!((resent.state, resent.uuid), (TaskState::Starting, starting.uuid));
        master.ack(&resent);
        master.until_state("steady", TaskState::Running).await;

        let after = task_info("after", shell("true"), "cpus:0.1", None);
        master.send(launch(&after));
        master.until_state("after", TaskState::Finished).await;
        master.send(kill("steady", Some(0.0)));
        master.until_state("steady", TaskState::Killed).await;
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn stop_with_kill_tasks_reports_and_cleans_up() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);
        let a = task_info("a", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1;mem:32", None);
        let b = task_info("b", shell("trap '' TERM; while :; do sleep 1; done"), "cpus:0.1", Some(1.0));
        master.send(launch(&a));
        master.until_state("a", TaskState::Running).await;
        master.send(launch(&b));
        master.until_state("b", TaskState::Running).await;
        let pids = [wait_task_pid(&base, "a").await, wait_task_pid(&base, "b").await];

        agent.request_stop(StopMode::KillTasks);
        let mut killed = Vec::new();
        while killed.len() < 2 {
            let status = master.status().await;
            master.ack(&status);
            if status.state == TaskState::Killed {
                killed.push(status.task_id.0.clone());
            }
            assert!(!status.state.is_terminal() || status.state == TaskState::Killed, "{status:?}");
        }
        agent.join().await;
        killed.sort();
        assert_eq!(killed, ["a", "b"]);
        assert!(pids.iter().all(|p| !is_running(*p)));
        assert_eq!(env.leftover_cgroups(), Vec::<std::path::PathBuf>::new());
        for task in ["a", "b"] {
            let ckpt: serde_json::Value = serde_json::from_slice(
                &std::fs::read(sandbox_of(&env.data_dir(), task).join("task.json")).expect("checkpoint"),
            )
            .expect("json");
            assert!(ckpt["completed_at"].is_u64(), "{task} completed: {ckpt}");
        }
    });
}

fn master_shutdown_kills_tasks_and_registers_anew() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);
        let victim = task_info("victim", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1", Some(0.5));
        master.send(launch(&victim));
        master.until_state("victim", TaskState::Running).await;
        let pid = wait_task_pid(&base, "victim").await;

        master.send(apb::master_message::Message::Shutdown(apb::Shutdown { message: "agent gone".into() }));
        let register = master.accept("agent-test-2").await;
        assert!(register.info.as_ref().is_some_and(|i| i.id.is_none()), "registers as a new agent");
        assert!(register.tasks.is_empty(), "the old tasks are not reported: {:?}", register.tasks);
        eventually("the old task to die", || async move { !is_running(pid) }).await;
        let agent_file = env.data_dir().join("agent.json");
        eventually("the new id to be persisted", || {
            let agent_file = agent_file.clone();
            async move { std::fs::read_to_string(&agent_file).is_ok_and(|s| s.contains("agent-test-2")) }
        })
        .await;
        assert!(master.states_of("victim").iter().all(|s| !s.is_terminal()), "no updates for forgotten tasks");
        let newbie = task_info("newbie", shell("true"), "cpus:0.1", None);
        master.send(launch(&newbie));
        master.until_state("newbie", TaskState::Finished).await;
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn cleanup_kills_and_removes_everything() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let options = env.options(&master.url);
        let mut agent = TestAgent::start(options.clone());
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);
        let left = task_info("left", CommandInfo::argv(vec!["sleep".into(), "300".into()]), "cpus:0.1;mem:32", None);
        master.send(launch(&left));
        master.until_state("left", TaskState::Running).await;
        let pid = wait_task_pid(&base, "left").await;
        agent.stop(StopMode::LeaveTasks).await;
        assert!(is_running(pid));

        let report = atoll_agent::cleanup(&options).expect("cleanup");
        assert_eq!(report.tasks_killed, 1, "{report:?}");
        assert!(!options.data_dir.exists(), "{report:?}");
        eventually("the task to die", || async move { !is_running(pid) }).await;
        assert_eq!(env.leftover_cgroups(), Vec::<std::path::PathBuf>::new());
        assert_eq!(atoll_agent::cleanup(&options).expect("cleanup twice"), atoll_agent::CleanupReport::default());
    });
}

fn follow_logs_until_the_task_ends() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);
        let talker = task_info(
            "talker",
            shell("while [ ! -e go ]; do sleep 0.05; done; for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done"),
            "cpus:0.1",
            None,
        );
        master.send(launch(&talker));
        master.until_state("talker", TaskState::Running).await;
        let follow = tokio::spawn({
            let base = base.clone();
            async move {
                let response = reqwest::get(format!("{base}/v1/tasks/talker/logs/stdout?follow=true&offset=2"))
                    .await
                    .expect("GET");
                assert!(response.status().is_success());
                response.text().await.expect("body")
            }
        });
        // The request is in before the task writes anything.
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(sandbox_of(&env.data_dir(), "talker").join("go"), "").expect("open the gate");
        master.until_state("talker", TaskState::Finished).await;
        let body = tokio::time::timeout(WAIT, follow).await.expect("the stream ends with the task").expect("join");
        assert_eq!(body, "ne 1\nline 2\nline 3\nline 4\nline 5\n");
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn a_kill_in_progress_is_finished_after_a_restart() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let options = env.options(&master.url);
        let mut agent = TestAgent::start(options.clone());
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);
        let stubborn =
            task_info("stubborn", shell("trap '' TERM; echo ready; while :; do sleep 1; done"), "cpus:0.1", Some(2.0));
        master.send(launch(&stubborn));
        master.until_state("stubborn", TaskState::Running).await;
        let pid = wait_task_pid(&base, "stubborn").await;
        let stdout = sandbox_of(&env.data_dir(), "stubborn").join("stdout");
        eventually("the trap to be installed", || {
            let stdout = stdout.clone();
            async move { std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("ready")) }
        })
        .await;
        master.send(kill("stubborn", None));
        master.until_state("stubborn", TaskState::Killing).await;
        agent.stop(StopMode::LeaveTasks).await;
        assert!(is_running(pid), "SIGTERM is ignored and nobody sent SIGKILL yet");

        let mut agent = TestAgent::start(options);
        master.accept(AGENT_ID).await;
        let killed = master.until_state("stubborn", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGKILL), "{killed:?}");
        assert!(!is_running(pid));
        agent.stop(StopMode::LeaveTasks).await;
    });
}

/// Pids of live (non-zombie) processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split(' ').collect()).unwrap_or_default();
                fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
            })
        })
        .collect()
}

fn kill_without_cgroups_uses_the_process_group() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut options = env.options(&master.url);
        options.cgroups = false;
        let mut agent = TestAgent::start(options);
        let register = master.accept(AGENT_ID).await;
        let base = http_base(&register);
        let family = task_info(
            "family",
            shell("trap '' TERM; sleep 300 & sleep 300 & echo ready; wait; wait"),
            "cpus:0.1;mem:32",
            Some(0.5),
        );
        master.send(launch(&family));
        master.until_state("family", TaskState::Running).await;
        let pid = wait_task_pid(&base, "family").await;
        let stdout = sandbox_of(&env.data_dir(), "family").join("stdout");
        eventually("the children to start", || {
            let stdout = stdout.clone();
            async move { std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("ready")) }
        })
        .await;
        assert_eq!(group_members(pid).len(), 3, "the shell and its two sleeps share the task's group");
        master.send(kill("family", None));
        let killed = master.until_state("family", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGKILL), "{killed:?}");
        eventually("the whole group to be gone", || async move { group_members(pid).is_empty() }).await;
        assert_eq!(env.leftover_cgroups(), Vec::<std::path::PathBuf>::new(), "no cgroups were made");
        agent.stop(StopMode::LeaveTasks).await;
    });
}

fn leftover_processes_die_with_the_task() {
    if !require_root("leftover_processes_die_with_the_task") {
        return;
    }
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut agent = TestAgent::start(env.options(&master.url));
        master.accept(AGENT_ID).await;
        // A child that leaves the task's session: only the cgroup still knows it.
        let daemon = task_info(
            "daemon",
            shell("setsid sh -c 'echo $$ > bgpid; exec sleep 300' & while [ ! -s bgpid ]; do sleep 0.05; done; exit 0"),
            "cpus:0.1",
            None,
        );
        master.send(launch(&daemon));
        let finished = master.until_state("daemon", TaskState::Finished).await;
        assert_eq!(finished.exit_code, Some(0));
        let bgpid: u32 = std::fs::read_to_string(sandbox_of(&env.data_dir(), "daemon").join("bgpid"))
            .expect("bgpid")
            .trim()
            .parse()
            .expect("pid");
        eventually("the escaped child to be killed", || async move { !is_running(bgpid) }).await;
        agent.stop(StopMode::KillTasks).await;
        assert_eq!(env.leftover_cgroups(), Vec::<std::path::PathBuf>::new());
    });
}

fn completed_sandboxes_are_collected() {
    let env = TestEnv::new();
    let rt = runtime();
    rt.block_on(async {
        let mut master = FakeMaster::start().await;
        let mut options = env.options(&master.url);
        let mut agent = TestAgent::start(options.clone());
        master.accept(AGENT_ID).await;
        master.send(launch(&task_info("brief", shell("echo hi"), "cpus:0.1", None)));
        master.until_state("brief", TaskState::Finished).await;
        let sandbox = sandbox_of(&env.data_dir(), "brief");
        let checkpoint = sandbox.join("task.json");
        eventually("the run to complete", || {
            let checkpoint = checkpoint.clone();
            async move {
                std::fs::read(&checkpoint)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| v["completed_at"].is_u64())
            }
        })
        .await;
        agent.stop(StopMode::LeaveTasks).await;
        assert!(sandbox.exists(), "kept while younger than the GC age");

        options.sandbox_gc_age = Duration::from_millis(1);
        let mut agent = TestAgent::start(options);
        master.accept(AGENT_ID).await;
        let framework_dir = env.data_dir().join("sandboxes").join(FRAMEWORK);
        eventually("the sandbox to be collected", || {
            let framework_dir = framework_dir.clone();
            async move { !framework_dir.exists() }
        })
        .await;
        assert!(env.data_dir().join("sandboxes").exists());
        agent.stop(StopMode::LeaveTasks).await;
    });
}
