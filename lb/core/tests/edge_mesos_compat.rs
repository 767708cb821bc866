//! The edge on a Mesos master: the operator API streams DC/OS recorded in
//! `shared/compat/dcos-net/` (one JSON event per line, the first the state), run through the
//! converter with every port kept ([`PortView::All`]), folded as `atoll edge --mesos-master`
//! folds them, and grouped into apps ([`EdgeApps::from_mesos_state`]): Marathon's tasks (every
//! task id format its versions wrote: `<app>.<uuid>`, pods' `<pod>.instance-<uuid>.<container>`,
//! `<app>.instance-<uuid>._app.<n>`) become their apps, with each port where the recorded
//! statuses put it — host, bridge and overlay, Docker and the Mesos containerizer — and the
//! DC/OS SDK's tasks (`<pod>-0-server__<uuid>`) none.
//!
//! The fixtures carry no `HAPROXY_*` labels; where a test needs routes it gives every task
//! `HAPROXY_GROUP=external` and `HAPROXY_0_VHOST=<its discovery name>.example`, as Marathon
//! would copy an app's labels onto its tasks.
//!
//! The fixtures live outside the repository, in `shared/compat/` beside it (CI lays `shared/`
//! next to the checkout); `$ATOLL_COMPAT_DIR` points elsewhere. No address in them is ever
//! contacted: they are data.

mod common;

use std::collections::BTreeMap;

use atoll_lb_core::edge::{BackendState, EdgeApps, RouteTable, TaskHealth};
use atoll_lb_core::vips::mesos::{Converted, MesosConverter, PortView};
use atoll_proto::model::{ClusterState, Time};
use serde_json::{Value, json};

use common::{resolve, stream};

/// The apps after each event, following the stream as the edge does: the converter's
/// snapshot, then its events folded in, ended tasks dropped.
fn follow(events: &[Value]) -> Vec<EdgeApps> {
    let mut converter = MesosConverter::with_ports(PortView::All);
    let mut cluster: Option<ClusterState> = None;
    let mut apps = Vec::new();
    for (n, event) in events.iter().enumerate() {
        match converter.convert(event, Time(n as u64), &resolve) {
            Ok(Converted::Snapshot(state)) => cluster = Some(state),
            Ok(Converted::Events(events)) => {
                let cluster = cluster.as_mut().expect("the stream starts with the state");
                for event in &events {
                    cluster.apply(event);
                }
                cluster.tasks.retain(|t| !t.state.is_terminal());
            }
            Err(e) => panic!("event #{} ({}): {e}", n + 1, event["type"]),
        }
        apps.push(EdgeApps::from_mesos_state(cluster.as_ref().unwrap()));
        // No port of these tasks is out of reach of the address their others are on.
        assert_eq!(converter.take_warnings(), Vec::<String>::new(), "event #{}", n + 1);
    }
    apps
}

/// `app → [task health endpoints…]`, each task as `<first 8 characters of its uuid> <health>
/// <address or ->…`.
fn view(apps: &EdgeApps) -> BTreeMap<String, Vec<String>> {
    apps.apps
        .iter()
        .map(|app| {
            let tasks = app
                .tasks
                .iter()
                .map(|task| {
                    let uuid = task.id.rsplit_once("instance-").map_or(task.id.as_str(), |(_, rest)| rest);
                    let uuid = uuid.rsplit_once(['.', '_']).filter(|(_, u)| u.len() >= 8).map_or(uuid, |(_, u)| u);
                    let health = match task.health {
                        TaskHealth::Ready => "ready",
                        TaskHealth::Unhealthy => "unhealthy",
                        TaskHealth::Draining => "draining",
                    };
                    let endpoints: Vec<String> =
                        task.endpoints.iter().map(|e| e.map_or("-".to_owned(), |a| a.to_string())).collect();
                    format!("{} {health} {}", &uuid[..8], endpoints.join(" "))
                })
                .collect();
            (app.id.clone(), tasks)
        })
        .collect()
}

fn expected(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries.iter().map(|(app, tasks)| (app.to_string(), tasks.iter().map(|t| t.to_string()).collect())).collect()
}

#[test]
fn every_network_and_containerizer_puts_the_ports_where_dcos_does() {
    let apps = follow(&stream("operator-api.json"));
    // Agents: S0 172.17.0.4, S1 172.17.0.3. Host networking and bridges (their mapped or
    // host-scoped ports) on the agent's address, the overlay on the task's own; `*-on-dcos`
    // without a port have one at 0, which reaches nothing.
    assert_eq!(
        view(apps.last().unwrap()),
        expected(&[
            ("/docker-on-bridge", &["0ef76549 ready 172.17.0.4:20560"]),
            ("/docker-on-dcos", &["0ebe53e8 ready 9.0.2.130:8080"]),
            ("/docker-on-host", &["116271db ready 172.17.0.4:31168"]),
            ("/docker-on-ipv6", &["602453f2 ready 172.19.0.2:8080"]),
            ("/none-on-dcos", &["115c093a ready -"]),
            ("/none-on-host", &["1458594c ready 172.17.0.4:13977"]),
            ("/pod-on-bridge", &["e9d06dcd ready 172.17.0.3:2254"]),
            ("/pod-on-dcos", &["ea1231be ready 9.0.1.3:8080"]),
            ("/pod-on-host", &["ea1231bf ready 172.17.0.4:28064"]),
            ("/ucr-on-bridge", &["1458805d ready 172.17.0.3:15263"]),
            ("/ucr-on-dcos", &["145ec1ee ready -"]),
            ("/ucr-on-host", &["1755bacf ready 172.17.0.3:10323"]),
        ])
    );
    // Before their TASK_RUNNING, tasks are apps without backends (event 3: the first task).
    let staging = &apps[2];
    assert_eq!(view(staging), expected(&[("/docker-on-bridge", &[])]));
    assert_eq!(staging.apps[0].instances, 1);
}

#[test]
fn routes_follow_a_marathon_app_being_replaced_and_skip_sdk_tasks() {
    let mut events = stream("hello-world.json");
    with_vhost_labels(&mut events);
    let apps = follow(&events);
    // The state holds SDK tasks (`world-0-server__…`) and Marathon's `hello-world` scheduler.
    assert_eq!(view(&apps[0]), expected(&[("/hello-world", &["e26a1fe7 ready 172.17.0.4:21872"])]));
    let backends = |apps: &EdgeApps| -> Vec<(String, BackendState)> {
        let table = RouteTable::build(apps, "external");
        assert_eq!(table.problems(), &[]);
        table.routes().iter().flat_map(|r| r.backends.iter().map(|b| (b.address.to_string(), b.state))).collect()
    };
    let states: Vec<Vec<(String, BackendState)>> = apps.iter().map(backends).collect();
    let draining = |a: &str| vec![(a.to_owned(), BackendState::Draining)];
    let active = |a: &str| vec![(a.to_owned(), BackendState::Active)];
    let none = Vec::new();
    // Marathon kills its task (KILLING drains it, KILLED removes it), launches a replacement on
    // the other agent (no backend until RUNNING), then is torn down with it.
    assert_eq!(
        states,
        [
            active("172.17.0.4:21872"),
            draining("172.17.0.4:21872"),
            none.clone(),
            none.clone(),
            none.clone(),
            none.clone(),
            active("172.17.0.3:12964"),
            active("172.17.0.3:12964"),
            active("172.17.0.3:12964"),
            active("172.17.0.3:12964"),
            active("172.17.0.3:12964"),
            draining("172.17.0.3:12964"),
            none,
        ]
    );
    assert_eq!(apps[3].apps.len(), 1, "a staging task: the app, without backends");
    assert_eq!(apps[12].apps, vec![], "the last task ended: no app");
}

/// Gives every task Marathon-LB's labels for port 0 (`<discovery name>.example`).
fn with_vhost_labels(events: &mut [Value]) {
    let mut label = |task: &mut Value| {
        let name = task["discovery"]["name"].as_str().unwrap_or("none").to_owned();
        let labels = task["labels"]["labels"].as_array().cloned().unwrap_or_default();
        let mut labels: Vec<Value> = labels;
        labels.push(json!({"key": "HAPROXY_GROUP", "value": "external"}));
        labels.push(json!({"key": "HAPROXY_0_VHOST", "value": format!("{name}.example")}));
        task["labels"] = json!({ "labels": labels });
    };
    for event in events {
        if let Some(tasks) = event.pointer_mut("/subscribed/get_state/get_tasks") {
            for key in ["tasks", "launched_tasks"] {
                tasks.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten().for_each(&mut label);
            }
        }
        if let Some(task) = event.pointer_mut("/task_added/task") {
            label(task);
        }
    }
}

#[test]
fn health_ports_and_pods_of_the_other_streams() {
    let last = |name: &str| view(follow(&stream(name)).last().unwrap());
    // Healthy, four host ports in the order of the discovery info.
    assert_eq!(
        last("vip-labels.json"),
        expected(&[("/app", &["c9e19be4 ready 172.17.0.3:9999 172.17.0.3:10000 172.17.0.3:10001 172.17.0.3:10002"])])
    );
    // A port on tcp and udp is one port.
    assert_eq!(last("tcp-and-udp.json"), expected(&[("/app", &["80eefa01 ready 172.17.0.3:6416 172.17.0.3:6417"])]));
    // A Mesos health check that has not passed (dcos-net: healthy=false): a backend, not
    // taking requests.
    assert_eq!(last("unhealthy.json"), expected(&[("/app", &["7a5a8aa6 unhealthy 9.0.1.6:80"])]));
    // No port at all; the agent known by its host name.
    assert_eq!(last("dns-hostname.json"), expected(&[("/test", &["f12cc459 ready "])]));
    // A pod's tasks are its app's; the finished one leaves.
    assert_eq!(last("pod-tasks.json"), expected(&[("/app", &["caff1565 ready "])]));
    // Marathon 1.8+ ids: the failed first incarnation is gone, the second serves.
    assert_eq!(last("recovered-agents.json"), expected(&[("/web", &["8b38cc52 ready 172.17.0.4:16424"])]));
    // An SDK framework's tasks are no app; Marathon's hello-world scheduler is.
    assert_eq!(last("hello-overlay.json"), expected(&[("/hello-world", &["cea59641 ready 10.0.0.49:19630"])]));
}

#[test]
fn labelled_tasks_become_routes_on_their_virtual_hosts() {
    let mut events = stream("operator-api.json");
    with_vhost_labels(&mut events);
    let apps = follow(&events);
    let table = RouteTable::build(apps.last().unwrap(), "external");
    assert_eq!(table.problems(), &[]);
    let routes: BTreeMap<String, (Vec<String>, Vec<String>)> = table
        .routes()
        .iter()
        .map(|r| {
            let backends = r.active().map(|b| b.address.to_string()).collect();
            (r.id.clone(), (r.hosts.clone(), backends))
        })
        .collect();
    assert_eq!(routes.len(), 12, "{routes:?}");
    assert_eq!(routes["/ucr-on-bridge:0"], (vec!["ucr-on-bridge.example".into()], vec!["172.17.0.3:15263".into()]));
    assert_eq!(routes["/pod-on-dcos:0"], (vec!["pod-on-dcos.example".into()], vec!["9.0.1.3:8080".into()]));
    assert_eq!(routes["/none-on-dcos:0"].1, Vec::<String>::new(), "port 0 reaches nothing");
}
