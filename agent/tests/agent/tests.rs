//! The scenarios. Each runs in a [`Scenario`]: its own [`TestEnv`] (dropped after the runtime, so
//! it cleans up even after a panic), a fake master and one or more agents in turn.

use std::time::Duration;

use atoll_agent::StopMode;
use atoll_proto::model::{CommandInfo, Reason, TaskInfo, TaskState};
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

/// Ignores SIGTERM, as do its children, and says `ready` once the trap is installed: only the
/// SIGKILL after the grace period ends it.
fn stubborn(grace_secs: f64) -> TaskInfo {
    task_info("stubborn", shell("trap '' TERM; echo ready; while :; do sleep 1; done"), "cpus:0.1", Some(grace_secs))
}

fn task_exit_codes_logs_and_api() {
    with_agent(async |s| {
        let register = &s.register;
        assert!(register.tasks.is_empty());
        let info = register.info.clone().expect("info");
        assert_eq!(info.hostname, "test-node");
        assert!(info.id.is_none(), "a new agent has no id yet");
        assert!(info.address.starts_with("127.0.0.1:"), "{}", info.address);
        let base = s.base.clone();

        let ok = task_info(
            "ok",
            shell("echo out $PORT0 $PORTS $MESOS_TASK_ID $ATOLL_FRAMEWORK_ID $HOST; echo err >&2"),
            "cpus:0.1;mem:64;ports:[31005-31006]",
            None,
        );
        let running = s.master.launch_until(&ok, TaskState::Running).await;
        assert!(running.executor_pid.is_some(), "{running:?}");
        assert_eq!(running.agent_id.as_ref().map(|a| a.as_str()), Some(AGENT_ID));
        let finished = s.master.until_state("ok", TaskState::Finished).await;
        assert_eq!(finished.exit_code, Some(0));
        assert_eq!(s.master.states_of("ok"), [TaskState::Starting, TaskState::Running, TaskState::Finished]);

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
        let failed = s.master.launch_until(&fail, TaskState::Failed).await;
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
    });
}

fn kill_escalates_to_sigkill() {
    with_agent(async |s| {
        // A duplicate launch of a live task is ignored (`start_until_ready` launches it again).
        let stubborn = stubborn(1.0);
        s.master.send(launch(&stubborn));
        let pid = s.start_until_ready(&stubborn, "the trap to be installed").await;
        s.master.kill_until("stubborn", None, TaskState::Killing).await;
        let killed = s.master.until_state("stubborn", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGKILL), "{killed:?}");
        assert_eq!(killed.message.as_deref(), Some("Command terminated by signal SIGKILL"));
        assert!(!is_running(pid), "task process {pid} is gone");
        assert_eq!(
            s.master.states_of("stubborn"),
            [TaskState::Starting, TaskState::Running, TaskState::Killing, TaskState::Killed]
        );

        // A polite task ends on SIGTERM.
        s.master.launch_until(&sleeping("polite", "cpus:0.1", None), TaskState::Running).await;
        let killed = s.master.kill_until("polite", Some(30.0), TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGTERM), "{killed:?}");

        // A drain's maximum grace period bounds the task's own: an hour here, which no test
        // would wait out.
        let patient = task_info(
            "patient",
            shell("trap '' TERM; echo ready; while :; do sleep 1; done"),
            "cpus:0.1",
            Some(3600.0),
        );
        s.master.send(launch(&patient));
        s.start_until_ready(&patient, "the trap to be installed").await;
        s.master.send(kill_within("patient", None, Some(0.5)));
        let killed = s.master.until_state("patient", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGKILL), "{killed:?}");

        // A framework without TASK_KILLING_STATE hears of the kill only when it is done.
        s.master.send(launch_for(&sleeping("old-school", "cpus:0.1", None), Vec::new()));
        s.master.until_state("old-school", TaskState::Running).await;
        s.master.kill_until("old-school", Some(30.0), TaskState::Killed).await;
        assert_eq!(s.master.states_of("old-school"), [TaskState::Starting, TaskState::Running, TaskState::Killed]);

        // A kill right behind the launch.
        s.master.send(launch(&sleeping("quick", "cpus:0.1", None)));
        let killed = s.master.kill_until("quick", Some(0.0), TaskState::Killed).await;
        assert!(
            matches!(killed.reason, None | Some(Reason::TaskKilledDuringLaunch)),
            "killed during launch or right after: {killed:?}"
        );
    });
}

fn launch_failure_is_reported() {
    with_agent(async |s| {
        let missing =
            task_info("missing", CommandInfo::argv(vec!["/nonexistent/atoll-no-such".into()]), "cpus:0.1", None);
        let failed = s.master.launch_until(&missing, TaskState::Failed).await;
        assert_eq!(failed.reason, Some(Reason::ContainerLaunchFailed), "{failed:?}");
        assert!(failed.message.as_deref().is_some_and(|m| m.contains("No such file or directory")), "{failed:?}");
        assert_eq!(s.master.states_of("missing"), [TaskState::Starting, TaskState::Failed]);
    });
}

fn oom_kill_is_a_memory_limitation() {
    Scenario::default().needs_root("oom_kill_is_a_memory_limitation").run(async |s| {
        // dash keeps the whole command substitution in memory: ~200 MB against 32 MiB.
        let hog = task_info("hog", shell(r#"x=$(head -c 200000000 /dev/zero | tr "\0" a)"#), "cpus:0.5;mem:32", None);
        let failed = s.master.launch_until(&hog, TaskState::Failed).await;
        assert_eq!(failed.reason, Some(Reason::ContainerLimitationMemory), "{failed:?}");
        assert_eq!(failed.message.as_deref(), Some("memory limit of 32 MiB exceeded"));
        s.stop_killing_tasks().await;
    });
}

fn restart_reattaches_running_tasks_and_resends_updates() {
    with_agent(async |s| {
        let running = s.master.launch_until(&sleeping("sleeper", "cpus:0.1", None), TaskState::Running).await;
        let executor = running.executor_pid.expect("executor pid");
        let pid = s.task_pid("sleeper").await;

        // An update the master never acknowledges.
        s.master.send(launch(&sleeping("second", "cpus:0.1", None)));
        let starting = s.master.status().await;
        assert_eq!((starting.task_id.as_str(), starting.state), ("second", TaskState::Starting));
        s.agent.stop(StopMode::LeaveTasks).await;
        assert!(is_running(pid) && is_running(executor), "tasks outlive the agent");

        s.start_agent();
        let register = s.master.expect_register().await;
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
        s.master.registered(AGENT_ID);
        let resent = loop {
            let status = s.master.status().await;
            if status.task_id.as_str() == "second" {
                break status;
            }
        };
        assert_eq!(resent.uuid, starting.uuid, "the unacknowledged update is re-sent as it was");
        s.master.ack(&resent);
        s.master.until_state("second", TaskState::Running).await;

        s.base = http_base(&register);
        assert_eq!(s.task_pid("sleeper").await, pid, "the same process, re-attached");
        let state = get_json(&format!("{}/v1/state", s.base)).await;
        let sleeper_view = state["tasks"].as_array().and_then(|t| t.iter().find(|t| t["id"] == "sleeper").cloned());
        assert_eq!(sleeper_view.map(|t| t["executor_pid"].clone()), Some(serde_json::json!(executor)));

        let killed = s.master.kill_until("sleeper", None, TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGTERM));
        assert!(!is_running(pid));
        s.master.kill_until("second", None, TaskState::Killed).await;
    });
}

fn state_of(status: &pb::TaskStatus) -> TaskState {
    atoll_proto::model::TaskStatus::try_from(status.clone()).expect("status").state
}

fn restart_reports_exit_code_of_ended_task() {
    with_agent(async |s| {
        let gated = task_info("gated", shell("while [ ! -e go ]; do sleep 0.05; done; exit 7"), "cpus:0.1", None);
        let running = s.master.launch_until(&gated, TaskState::Running).await;
        let executor = running.executor_pid.expect("executor pid");
        s.agent.stop(StopMode::LeaveTasks).await;

        // The task ends while no agent runs.
        let sandbox = sandbox_of(&s.env.data_dir(), "gated");
        std::fs::write(sandbox.join("go"), "").expect("open the gate");
        eventually("the executor to exit", || async move {
            // The executor is this process's child: reap it, as init would for a real agent.
            let pid = rustix::process::Pid::from_raw(executor as i32).expect("pid");
            matches!(rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG), Ok(Some(_)))
        })
        .await;
        assert!(sandbox.join("exit.json").exists());

        let register = s.restart_agent().await;
        assert_eq!(register.tasks.len(), 1);
        let failed = s.master.until_state("gated", TaskState::Failed).await;
        assert_eq!(failed.exit_code, Some(7), "{failed:?}");
        assert_eq!(failed.message.as_deref(), Some("Command exited with status 7"));
    });
}

fn reconnect_reregisters_and_resends_the_head() {
    with_agent(async |s| {
        s.master.send(launch(&sleeping("steady", "cpus:0.1", None)));
        let starting = s.master.status().await;
        assert_eq!(starting.state, TaskState::Starting);

        s.master.drop_stream();
        let register = s.master.accept(AGENT_ID).await;
        assert_eq!(register.info.as_ref().and_then(|i| i.id.as_ref()).map(|i| i.value.as_str()), Some(AGENT_ID));
        assert_eq!(register.tasks.len(), 1);
        let resent = s.master.status().await;
        assert_eq!((resent.state, resent.uuid), (TaskState::Starting, starting.uuid));
        s.master.ack(&resent);
        s.master.until_state("steady", TaskState::Running).await;

        s.master.launch_until(&task_info("after", shell("true"), "cpus:0.1", None), TaskState::Finished).await;
        s.master.kill_until("steady", Some(0.0), TaskState::Killed).await;
    });
}

fn stop_with_kill_tasks_reports_and_cleans_up() {
    with_agent(async |s| {
        let a = sleeping("a", "cpus:0.1;mem:32", None);
        let b = task_info("b", shell("trap '' TERM; while :; do sleep 1; done"), "cpus:0.1", Some(1.0));
        let pids = [s.start_task(&a).await, s.start_task(&b).await];

        s.agent.request_stop(StopMode::KillTasks);
        let mut killed = Vec::new();
        while killed.len() < 2 {
            let status = s.master.status().await;
            s.master.ack(&status);
            if status.state == TaskState::Killed {
                killed.push(status.task_id.0.clone());
            }
            assert!(!status.state.is_terminal() || status.state == TaskState::Killed, "{status:?}");
        }
        s.agent.join().await;
        killed.sort();
        assert_eq!(killed, ["a", "b"]);
        assert!(pids.iter().all(|p| !is_running(*p)));
        s.env.assert_no_cgroups();
        for task in ["a", "b"] {
            let ckpt = checkpoint(&sandbox_of(&s.env.data_dir(), task)).expect("checkpoint");
            assert!(ckpt["completed_at"].is_u64(), "{task} completed: {ckpt}");
        }
    });
}

fn master_shutdown_kills_tasks_and_registers_anew() {
    with_agent(async |s| {
        let pid = s.start_task(&sleeping("victim", "cpus:0.1", Some(0.5))).await;

        s.master.send(apb::master_message::Message::Shutdown(apb::Shutdown { message: "agent gone".into() }));
        let register = s.master.accept("agent-test-2").await;
        assert!(register.info.as_ref().is_some_and(|i| i.id.is_none()), "registers as a new agent");
        assert!(register.tasks.is_empty(), "the old tasks are not reported: {:?}", register.tasks);
        eventually("the old task to die", || async move { !is_running(pid) }).await;
        let agent_file = s.env.data_dir().join("agent.json");
        eventually("the new id to be persisted", || {
            let agent_file = agent_file.clone();
            async move { std::fs::read_to_string(&agent_file).is_ok_and(|s| s.contains("agent-test-2")) }
        })
        .await;
        assert!(s.master.states_of("victim").iter().all(|s| !s.is_terminal()), "no updates for forgotten tasks");
        s.master.launch_until(&task_info("newbie", shell("true"), "cpus:0.1", None), TaskState::Finished).await;
    });
}

fn cleanup_kills_and_removes_everything() {
    with_agent(async |s| {
        let pid = s.start_task(&sleeping("left", "cpus:0.1;mem:32", None)).await;
        s.agent.stop(StopMode::LeaveTasks).await;
        assert!(is_running(pid));

        let report = atoll_agent::cleanup(&s.options).expect("cleanup");
        assert_eq!(report.tasks_killed, 1, "{report:?}");
        assert!(!s.options.data_dir.exists(), "{report:?}");
        eventually("the task to die", || async move { !is_running(pid) }).await;
        s.env.assert_no_cgroups();
        assert_eq!(atoll_agent::cleanup(&s.options).expect("cleanup twice"), atoll_agent::CleanupReport::default());
    });
}

fn follow_logs_until_the_task_ends() {
    with_agent(async |s| {
        let talker = task_info(
            "talker",
            shell("while [ ! -e go ]; do sleep 0.05; done; for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done"),
            "cpus:0.1",
            None,
        );
        s.master.launch_until(&talker, TaskState::Running).await;
        let follow = tokio::spawn({
            let base = s.base.clone();
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
        std::fs::write(sandbox_of(&s.env.data_dir(), "talker").join("go"), "").expect("open the gate");
        s.master.until_state("talker", TaskState::Finished).await;
        let body = tokio::time::timeout(WAIT, follow).await.expect("the stream ends with the task").expect("join");
        assert_eq!(body, "ne 1\nline 2\nline 3\nline 4\nline 5\n");
    });
}

fn a_kill_in_progress_is_finished_after_a_restart() {
    with_agent(async |s| {
        let pid = s.start_until_ready(&stubborn(2.0), "the trap to be installed").await;
        s.master.kill_until("stubborn", None, TaskState::Killing).await;
        s.agent.stop(StopMode::LeaveTasks).await;
        assert!(is_running(pid), "SIGTERM is ignored and nobody sent SIGKILL yet");

        s.restart_agent().await;
        let killed = s.master.until_state("stubborn", TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGKILL), "{killed:?}");
        assert!(!is_running(pid));
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
    Scenario::default().options(|o| o.cgroups = false).run(async |s| {
        let family = task_info(
            "family",
            shell("trap '' TERM; sleep 300 & sleep 300 & echo ready; wait; wait"),
            "cpus:0.1;mem:32",
            Some(0.5),
        );
        let pid = s.start_until_ready(&family, "the children to start").await;
        assert_eq!(group_members(pid).len(), 3, "the shell and its two sleeps share the task's group");
        let killed = s.master.kill_until("family", None, TaskState::Killed).await;
        assert_eq!(killed.exit_signal, Some(libc::SIGKILL), "{killed:?}");
        eventually("the whole group to be gone", || async move { group_members(pid).is_empty() }).await;
        assert_eq!(s.env.leftover_cgroups(), Vec::<std::path::PathBuf>::new(), "no cgroups were made");
    });
}

fn leftover_processes_die_with_the_task() {
    Scenario::default().needs_root("leftover_processes_die_with_the_task").run(async |s| {
        // A child that leaves the task's session: only the cgroup still knows it.
        let daemon = task_info(
            "daemon",
            shell("setsid sh -c 'echo $$ > bgpid; exec sleep 300' & while [ ! -s bgpid ]; do sleep 0.05; done; exit 0"),
            "cpus:0.1",
            None,
        );
        let finished = s.master.launch_until(&daemon, TaskState::Finished).await;
        assert_eq!(finished.exit_code, Some(0));
        let bgpid: u32 = std::fs::read_to_string(sandbox_of(&s.env.data_dir(), "daemon").join("bgpid"))
            .expect("bgpid")
            .trim()
            .parse()
            .expect("pid");
        eventually("the escaped child to be killed", || async move { !is_running(bgpid) }).await;
        s.stop_killing_tasks().await;
    });
}

fn completed_sandboxes_are_collected() {
    with_agent(async |s| {
        s.master.launch_until(&task_info("brief", shell("echo hi"), "cpus:0.1", None), TaskState::Finished).await;
        let sandbox = sandbox_of(&s.env.data_dir(), "brief");
        eventually("the run to complete", || {
            let sandbox = sandbox.clone();
            async move { checkpoint(&sandbox).is_some_and(|v| v["completed_at"].is_u64()) }
        })
        .await;
        s.agent.stop(StopMode::LeaveTasks).await;
        assert!(sandbox.exists(), "kept while younger than the GC age");

        s.options.sandbox_gc_age = Duration::from_millis(1);
        s.restart_agent().await;
        let framework_dir = s.env.data_dir().join("sandboxes").join(FRAMEWORK);
        eventually("the sandbox to be collected", || {
            let framework_dir = framework_dir.clone();
            async move { !framework_dir.exists() }
        })
        .await;
        assert!(s.env.data_dir().join("sandboxes").exists());
    });
}
