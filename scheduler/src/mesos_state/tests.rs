//! The Mesos projection on a hand-built cluster: shapes and field names as Mesos writes them,
//! and the names Atoll's own Mesos-DNS projection makes of the result, which must be exactly
//! those it makes of the Atoll state directly.

use std::collections::HashMap;

use atoll_dns::projection::{DnsConfig, Masters, Projection};
use atoll_dns::records::{RecordData, RecordSet};
use atoll_proto::model::{
    Agent, AgentId, AgentState, Attributes, CommandInfo, DiscoveryInfo, DiscoveryPort, Framework, FrameworkId,
    FrameworkInfo, HealthCheck, HealthCheckKind, Labels, NetworkRequest, Source, Task, TaskId, TaskInfo,
    TaskPortMapping, TaskState, TaskStatus,
};

use super::*;

const MASTER: &str = "198.19.255.1:5050";
const AGENT: &str = "198.19.255.2:5051";

fn master() -> MasterIdentity {
    let mut identity = MasterIdentity::new("m-1", MASTER.parse().unwrap(), Time(1_700_000_000_000));
    identity.flags.insert("port".into(), "5050".into());
    identity
}

fn agent(id: &str, address: &str, state: AgentState) -> Agent {
    Agent {
        id: AgentId::new(id),
        hostname: format!("host-{id}"),
        address: address.parse().unwrap(),
        resources: "cpus:4;mem:4096;disk:1000;ports:[31000-31009,31020-31029]".parse().unwrap(),
        used: "cpus:1.5;mem:96;ports:[31000-31001]".parse().unwrap(),
        attributes: "rack:r1;level:3".parse::<Attributes>().unwrap(),
        state,
        drain: matches!(state, AgentState::Draining | AgentState::Drained),
        deactivated: state == AgentState::Deactivated,
        drain_config: None,
        registered_at: Time(1_700_000_001_000),
        version: "0.1.0".into(),
        subnets: Vec::new(),
    }
}

fn framework(id: &str, name: &str, hosted: bool) -> Framework {
    let mut info = FrameworkInfo::named(name);
    info.user = "root".into();
    info.capabilities = vec![atoll_proto::model::Capability::PartitionAware];
    if !hosted {
        info.hostname = "198.19.255.9".into();
    }
    Framework { id: FrameworkId::new(id), info, connected: true, hosted, registered_at: Time(1_700_000_002_000) }
}

/// A task on `agent` in `state`, its latest status from the executor at `at` ms.
fn task(framework: &str, id: &str, name: &str, agent: &str, resources: &str, state: TaskState, at: u64) -> Task {
    let info = TaskInfo {
        name: name.into(),
        task_id: TaskId::new(id),
        agent_id: AgentId::new(agent),
        resources: resources.parse().unwrap(),
        command: CommandInfo::shell("sleep 1000"),
        labels: Labels::default(),
        discovery: None,
        kill_grace_period_secs: None,
        health_check: None,
        networks: Vec::new(),
    };
    let mut task = Task::launched(FrameworkId::new(framework), info, Time(at - 500));
    let mut status = TaskStatus::new(TaskId::new(id), state, Source::Executor, Time(at));
    status.agent_id = Some(AgentId::new(agent));
    task.set_status(status);
    task
}

fn cluster() -> ClusterState {
    let mut web = task(
        "fw-m",
        "web.1",
        "web",
        "a1",
        "cpus:0.5;mem:32;ports:[31000-31001]",
        TaskState::Running,
        1_700_000_010_000,
    );
    web.labels.insert("team", "shop");
    web.discovery = Some(DiscoveryInfo {
        visibility: "FRAMEWORK".into(),
        name: "web".into(),
        ports: vec![
            DiscoveryPort {
                number: 31000,
                name: "http".into(),
                protocol: "tcp".into(),
                labels: {
                    let mut l = Labels::default();
                    l.insert("VIP_0", "/web:80");
                    l
                },
            },
            DiscoveryPort { number: 31001, name: "admin".into(), protocol: "tcp".into(), labels: Labels::default() },
        ],
        labels: Labels::default(),
    });

    let mut db = task("fw-m", "db.1", "db", "a1", "cpus:1;mem:64", TaskState::Running, 1_700_000_011_000);
    db.networks = vec![NetworkRequest {
        name: "atoll".into(),
        ip: None,
        port_mappings: vec![TaskPortMapping { host_port: 31005, container_port: 5432, protocol: "tcp".into() }],
    }];
    db.health_check = Some(HealthCheck::new(HealthCheckKind::Tcp { port: 5432 }));
    let mut healthy = db.status.clone();
    healthy.healthy = Some(true);
    healthy.ip_addresses = vec!["198.18.0.5".parse().unwrap()];
    db.set_status(healthy);

    let done = task("fw-m", "done.1", "done", "a1", "cpus:0.1;mem:16", TaskState::Finished, 1_700_000_005_000);
    let away = task("fw-e", "away.1", "away", "a3", "cpus:0.1;mem:16", TaskState::Unreachable, 1_700_000_006_000);
    let once = task("fw-r", "api.1", "api", "a1", "cpus:0.1;mem:16", TaskState::Running, 1_700_000_012_000);
    let orphan = task("fw-gone", "old.1", "old", "a1", "cpus:0.1;mem:16", TaskState::Killed, 1_700_000_004_000);

    ClusterState {
        index: 42,
        agents: vec![
            agent("a1", AGENT, AgentState::Active),
            agent("a2", "198.19.255.3:5051", AgentState::Recovered),
            agent("a3", "198.19.255.4:5051", AgentState::Unreachable),
            agent("a4", "198.19.255.5:5051", AgentState::Draining),
            agent("a5", "198.19.255.6:5051", AgentState::Gone),
        ],
        frameworks: vec![
            framework("fw-m", "marathon", true),
            framework("fw-e", "external", false),
            framework("fw-r", "atoll-run", true),
        ],
        tasks: vec![web, db, done, away, once, orphan],
        ..ClusterState::default()
    }
}

fn find<'a>(list: &'a Value, key: &str, id: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|v| v[key] == id)
        .unwrap_or_else(|| panic!("no {key} = {id} in {list}"))
}

#[test]
fn ranges_print_like_mesos() {
    assert_eq!(ranges_string(&Ranges::from_pairs([(31000, 31009), (31020, 31029)])), "[31000-31009, 31020-31029]");
    assert_eq!(ranges_string(&Ranges::single(80)), "[80-80]");
    assert_eq!(ranges_string(&Ranges::new()), "[]");
    let resources = resources_json(&"mem:64;ports:[1-2,4-4]".parse().unwrap());
    assert_eq!(resources, json!({"cpus": 0.0, "gpus": 0.0, "mem": 64.0, "disk": 0.0, "ports": "[1-2, 4-4]"}));
}

#[test]
fn the_top_level_names_the_master_as_leader() {
    let state = mesos_state(&cluster(), &master());
    for key in [
        "version",
        "build_date",
        "build_time",
        "build_user",
        "start_time",
        "elected_time",
        "id",
        "pid",
        "hostname",
        "activated_slaves",
        "deactivated_slaves",
        "unreachable_slaves",
        "leader",
        "leader_info",
        "flags",
        "slaves",
        "recovered_slaves",
        "frameworks",
        "completed_frameworks",
        "orphan_tasks",
        "unregistered_frameworks",
    ] {
        assert!(state.get(key).is_some(), "no `{key}` in {state}");
    }
    assert_eq!(state["version"], MESOS_VERSION);
    assert_eq!(state["pid"], "master@198.19.255.1:5050");
    assert_eq!(state["leader"], "master@198.19.255.1:5050");
    assert_eq!(state["hostname"], "198.19.255.1");
    assert_eq!(state["start_time"], 1_700_000_000.0);
    assert_eq!(state["leader_info"]["port"], 5050);
    assert_eq!(
        state["leader_info"]["address"],
        json!({"hostname": "198.19.255.1", "ip": "198.19.255.1", "port": 5050})
    );
    assert_eq!(state["flags"]["port"], "5050");
    assert_eq!(master().redirect_location(), "//198.19.255.1:5050");
    assert_eq!(format_utc(1_455_559_228), "2016-02-15 18:00:28");
    assert_eq!(format_utc(0), "1970-01-01 00:00:00");
}

#[test]
fn agents_are_split_as_mesos_splits_them() {
    let state = mesos_state(&cluster(), &master());
    let ids: Vec<&str> = state["slaves"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a1", "a4"], "registered agents only");
    assert_eq!(
        state["recovered_slaves"],
        json!([{"id": "a2", "hostname": "host-a2", "port": 5051, "attributes": {"level": 3.0, "rack": "r1"}}])
    );
    assert_eq!((state["activated_slaves"].as_u64(), state["deactivated_slaves"].as_u64()), (Some(1), Some(1)));
    assert_eq!(state["unreachable_slaves"], 1);

    let a1 = find(&state["slaves"], "id", "a1");
    assert_eq!(a1["pid"], "slave(1)@198.19.255.2:5051");
    assert_eq!(a1["hostname"], "host-a1");
    assert_eq!(a1["port"], 5051);
    assert_eq!(a1["registered_time"], 1_700_000_001.0);
    assert_eq!(
        a1["resources"],
        json!({"cpus": 4.0, "gpus": 0.0, "mem": 4096.0, "disk": 1000.0, "ports": "[31000-31009, 31020-31029]"})
    );
    assert_eq!(a1["used_resources"]["ports"], "[31000-31001]");
    assert_eq!(a1["used_resources"]["cpus"], 1.5);
    assert_eq!(a1["unreserved_resources"], a1["resources"]);
    assert_eq!((a1["active"].as_bool(), a1["deactivated"].as_bool()), (Some(true), Some(false)));
    let a4 = find(&state["slaves"], "id", "a4");
    assert_eq!((a4["active"].as_bool(), a4["drain_info"]["state"].as_str()), (Some(false), Some("DRAINING")));
}

#[test]
fn frameworks_carry_their_tasks_by_list() {
    let state = mesos_state(&cluster(), &master());
    let marathon = find(&state["frameworks"], "id", "fw-m");
    assert_eq!(marathon["name"], "marathon");
    assert_eq!(marathon["pid"], "scheduler-fw-m@198.19.255.1:5050", "hosted: at the master");
    assert_eq!(marathon["hostname"], "198.19.255.1");
    assert_eq!((marathon["active"].as_bool(), marathon["connected"].as_bool()), (Some(true), Some(true)));
    assert_eq!(marathon["capabilities"], json!(["PARTITION_AWARE"]));
    assert_eq!(marathon["role"], "*");
    assert_eq!(marathon["used_resources"]["cpus"], 1.5, "its live tasks: web (0.5) and db (1)");
    let live: Vec<&str> = marathon["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(live, ["web.1", "db.1"]);
    assert_eq!(marathon["completed_tasks"][0]["id"], "done.1");
    assert_eq!(marathon["completed_tasks"][0]["state"], "TASK_FINISHED");

    let external = find(&state["frameworks"], "id", "fw-e");
    assert!(external.get("pid").is_none(), "HTTP frameworks have no PID in Mesos");
    assert_eq!(external["hostname"], "198.19.255.9");
    assert_eq!(external["unreachable_tasks"][0]["state"], "TASK_UNREACHABLE");
    assert_eq!(external["tasks"], json!([]));

    let gone = find(&state["completed_frameworks"], "id", "fw-gone");
    assert_eq!(gone["completed_tasks"][0]["id"], "old.1");
    assert_eq!(gone["active"], false);
}

#[test]
fn tasks_have_mesos_resources_statuses_labels_and_discovery() {
    let state = mesos_state(&cluster(), &master());
    let marathon = find(&state["frameworks"], "id", "fw-m");
    let web = find(&marathon["tasks"], "id", "web.1");
    assert_eq!(web["name"], "web");
    assert_eq!(web["framework_id"], "fw-m");
    assert_eq!(web["slave_id"], "a1");
    assert_eq!(web["executor_id"], "");
    assert_eq!(web["state"], "TASK_RUNNING");
    assert_eq!(web["role"], "*");
    assert_eq!(web["resources"]["ports"], "[31000-31001]");
    assert_eq!(web["labels"], json!([{"key": "team", "value": "shop"}]));
    assert_eq!(
        web["discovery"],
        json!({"visibility": "FRAMEWORK", "name": "web", "ports": {"ports": [
            {"number": 31000, "name": "http", "protocol": "tcp", "labels": {"labels": [{"key": "VIP_0", "value": "/web:80"}]}},
            {"number": 31001, "name": "admin", "protocol": "tcp"},
        ]}})
    );
    let statuses = web["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0]["state"], "TASK_RUNNING");
    assert_eq!(statuses[0]["timestamp"], 1_700_000_010.0);
    assert_eq!(
        statuses[0]["container_status"],
        json!({"network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": "198.19.255.2"}]}]}),
        "host networking: the agent's address, as a Mesos agent reports it"
    );
    assert!(statuses[0].get("healthy").is_none());
    assert!(web.get("container").is_none());
}

#[test]
fn a_container_network_task_reports_its_own_address() {
    let state = mesos_state(&cluster(), &master());
    let db = find(&find(&state["frameworks"], "id", "fw-m")["tasks"], "id", "db.1");
    let status = &db["statuses"][0];
    assert_eq!(
        status["container_status"]["network_infos"],
        json!([{"name": "atoll", "ip_addresses": [{"protocol": "IPv4", "ip_address": "198.18.0.5"}],
                "port_mappings": [{"host_port": 31005, "container_port": 5432, "protocol": "tcp"}]}])
    );
    assert_eq!(status["healthy"], true);
    assert_eq!(db["container"]["type"], "MESOS");
    assert_eq!(db["container"]["network_infos"][0]["name"], "atoll");
    assert_eq!(db["health_check"]["type"], "TCP");
    assert_eq!(db["health_check"]["tcp"]["port"], 5432);
    assert_eq!(db["resources"]["cpus"], 1.0);
}

#[test]
fn staging_tasks_have_no_container_status() {
    let mut state = cluster();
    let info = state.tasks[0].info();
    let staging = Task::launched(FrameworkId::new("fw-m"), TaskInfo { task_id: TaskId::new("new.1"), ..info }, Time(5));
    state.tasks.push(staging);
    let json = mesos_state(&state, &master());
    let new = find(&find(&json["frameworks"], "id", "fw-m")["tasks"], "id", "new.1");
    assert_eq!(new["statuses"], json!([{"state": "TASK_STAGING", "timestamp": 0.005}]));
}

#[test]
fn the_other_endpoints_filter_and_page() {
    let cluster = cluster();
    let master = master();

    let all = tasks(&cluster, &master, &TaskQuery::default());
    let ids: Vec<&str> = all["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["api.1", "db.1", "web.1", "away.1", "done.1", "old.1"], "newest first by default");
    let params = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let page = tasks(
        &cluster,
        &master,
        &TaskQuery::from_params(&params(&[("limit", "2"), ("offset", "1"), ("order", "asc")])),
    );
    let ids: Vec<&str> = page["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["done.1", "away.1"]);
    let lenient = TaskQuery::from_params(&params(&[("limit", "x"), ("offset", "-1"), ("bogus", "1")]));
    assert_eq!(lenient, TaskQuery::default(), "Mesos ignores what it cannot parse");
    let one = tasks(&cluster, &master, &TaskQuery::from_params(&params(&[("framework_id", "fw-e")])));
    assert_eq!(one["tasks"].as_array().unwrap().len(), 1);

    let summary = state_summary(&cluster, &master);
    let a1 = find(&summary["slaves"], "id", "a1");
    assert_eq!(a1["TASK_RUNNING"], 3);
    assert_eq!(a1["TASK_FINISHED"], 1);
    assert_eq!(a1["framework_ids"], json!(["fw-m", "fw-r"]));
    let marathon = find(&summary["frameworks"], "id", "fw-m");
    assert_eq!(marathon["slave_ids"], json!(["a1"]));
    assert!(marathon.get("tasks").is_none(), "a summary lists no tasks");

    let only = frameworks(&cluster, &master, Some("fw-r"));
    assert_eq!(only["frameworks"].as_array().unwrap().len(), 1);
    assert_eq!(only["completed_frameworks"], json!([]));

    let agents = slaves(&cluster, &master, None);
    let a1 = find(&agents["slaves"], "id", "a1");
    let cpus = find(&a1["unreserved_resources_full"], "name", "cpus");
    assert_eq!(cpus["scalar"]["value"], 4.0);
    let ports = find(&a1["unreserved_resources_full"], "name", "ports");
    assert_eq!(ports["ranges"]["range"], json!([{"begin": 31000, "end": 31009}, {"begin": 31020, "end": 31029}]));
    assert_eq!(agents["recovered_slaves"][0]["id"], "a2");
    assert_eq!(slaves(&cluster, &master, Some("a4"))["slaves"].as_array().unwrap().len(), 1);
}

#[test]
fn metrics_snapshot_counts_agents_frameworks_tasks_and_resources() {
    let metrics = metrics_snapshot(&cluster(), &master(), Time(1_700_000_060_000));
    let m = |name: &str| metrics[name].as_f64().unwrap_or_else(|| panic!("no {name} in {metrics}"));
    assert_eq!(m("master/elected"), 1.0);
    assert_eq!(m("master/uptime_secs"), 60.0);
    assert_eq!(m("master/slaves_active"), 1.0);
    assert_eq!(m("master/slaves_inactive"), 1.0);
    assert_eq!(m("master/slaves_connected"), 2.0);
    assert_eq!(m("master/slaves_disconnected"), 0.0);
    assert_eq!(m("master/slaves_unreachable"), 1.0);
    assert_eq!(m("master/frameworks_active"), 3.0);
    assert_eq!(m("master/tasks_running"), 3.0);
    assert_eq!(m("master/tasks_finished"), 1.0);
    assert_eq!(m("master/tasks_killed"), 1.0);
    assert_eq!(m("master/tasks_unreachable"), 1.0);
    assert_eq!(m("master/tasks_staging"), 0.0);
    assert_eq!(m("master/cpus_total"), 8.0);
    assert_eq!(m("master/cpus_used"), 3.0);
    assert_eq!(m("master/mem_total"), 8192.0);
    assert_eq!(m("master/disk_total"), 2000.0);
    assert_eq!(m("master/cpus_percent"), 3.0 / 8.0);
}

fn record_lines(records: &RecordSet) -> Vec<String> {
    let mut lines: Vec<String> = records
        .records()
        .map(|r| match &r.data {
            RecordData::A(ip) => format!("{} A {ip}", r.name),
            RecordData::Aaaa(ip) => format!("{} AAAA {ip}", r.name),
            RecordData::Srv { port, target, .. } => format!("{} SRV {target}:{port}", r.name),
        })
        .collect();
    lines.sort();
    lines
}

/// Mesos-DNS reading this `/master/state` makes exactly the names Atoll's DNS makes from the
/// event stream: same tasks, addresses, ports, agents, frameworks and leader.
#[test]
fn mesos_dns_names_from_the_mesos_state_match_atolls_own() {
    let mut cluster = cluster();
    // The one deliberate difference: Atoll's DNS keeps a recovered agent's names while it comes
    // back after a master restart; Mesos lists such an agent under `recovered_slaves`, which
    // Mesos-DNS does not read.
    cluster.agents.retain(|a| a.state != AgentState::Recovered);
    let master = master();
    let masters = Masters { leader: Some(master.address), masters: vec![master.address] };

    let mut native = Projection::new(DnsConfig::default());
    native.set_masters(masters.clone());
    native.reset(&cluster);
    let mut from_mesos = Projection::new(DnsConfig::default());
    from_mesos.set_masters(masters);
    from_mesos.reset_from_mesos_state(&mesos_state(&cluster, &master)).unwrap();

    let lines = record_lines(from_mesos.records());
    assert_eq!(lines, record_lines(native.records()));
    for expected in [
        "web.marathon.mesos. A 198.19.255.2",
        "db.marathon.mesos. A 198.18.0.5",
        "api.atoll-run.mesos. A 198.19.255.2",
        "leader.mesos. A 198.19.255.1",
        "slave.mesos. A 198.19.255.2",
        "marathon.mesos. A 198.19.255.1",
    ] {
        assert!(lines.iter().any(|l| l == expected), "no `{expected}` in {lines:#?}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("_http._web._tcp.marathon.mesos. SRV ") && l.ends_with(":31000")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("away.")), "unreachable tasks are not published");
    assert!(lines.iter().any(|l| l == "slave.mesos. A 198.19.255.5"), "a draining agent is still an agent");
}
