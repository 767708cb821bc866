//! Conformance with dcos-net (DC/OS's dcos-l4lb, né Minuteman): the Mesos operator API streams
//! in `shared/compat/dcos-net/` (one JSON event per line, the first the state: `SUBSCRIBED`, or
//! a `GET_STATE` response), run through the Mesos converter, the VIP projection and the hashed
//! named-VIP assignment, give the VIPs, backends and health dcos-net extracted from them (its
//! `dcos_net_mesos_listener_tests`, summarized in `shared/compat/README.md`).
//!
//! What "a backend" means here is what dcos-l4lb programs: a RUNNING task, healthy or without a
//! health check, at `agent IP:host port` for host ports and mapped ports, at `task IP:port` for
//! container ports on a container network. Where a fixture has no VIP labels, the test adds one
//! to every discovery port of every task (`VIP_0=/<its name>:80`) so that the placement of
//! each task — host, bridge, overlay; Docker, Mesos containerizer, pods — is still checked.
//!
//! The fixtures live outside the repository, in `shared/compat/` beside it (CI lays `shared/`
//! next to the checkout); `$ATOLL_COMPAT_DIR` points elsewhere. No address in them is ever
//! contacted: they are data.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use atoll_lb_core::vips::mesos::{Converted, MesosConverter, hostnames};
use atoll_lb_core::vips::{DEFAULT_VIP_POOL, VipName, VipProjection, sync_hashed_assignments};
use atoll_lb_core::{key_parts, protocol_name};
use atoll_proto::model::{ClusterState, TaskState, Time};
use serde_json::{Value, json};

use common::{compat_dir, resolve, stream};

/// A node following the stream: converter, projection, hashed assignment, as `atoll lb
/// --mesos-master` runs them.
struct Node {
    converter: MesosConverter,
    projection: VipProjection,
    /// The state after the first record (the snapshot), for tests that replay it.
    snapshot: Option<ClusterState>,
    warnings: Vec<String>,
}

impl Node {
    fn follow(events: &[Value]) -> Node {
        let mut node = Node {
            converter: MesosConverter::new(),
            projection: VipProjection::new(),
            snapshot: None,
            warnings: Vec::new(),
        };
        for (n, event) in events.iter().enumerate() {
            let converted = node
                .converter
                .convert(event, Time(n as u64), &resolve)
                .unwrap_or_else(|e| panic!("event #{} ({}): {e}", n + 1, event["type"]));
            match converted {
                Converted::Snapshot(state) => {
                    assert_eq!(n, 0, "only the first event is a snapshot");
                    node.projection.reset(&state, &BTreeMap::new());
                    node.snapshot = Some(state);
                }
                Converted::Events(events) => {
                    for event in &events {
                        node.projection.apply(event);
                    }
                }
            }
            let (_, unassigned) = sync_hashed_assignments(&mut node.projection, DEFAULT_VIP_POOL);
            assert!(unassigned.is_empty());
            node.warnings.extend(node.converter.take_warnings());
        }
        assert!(node.snapshot.is_some(), "the stream starts with the state");
        let problems: Vec<String> = node.projection.problems().map(ToString::to_string).collect();
        // Port 0 (`none-on-dcos`: a port the task does not have) is the only problem the
        // fixtures hold, and only once the test labels every port.
        assert!(problems.iter().all(|p| p.contains("port number 0")), "{problems:?}");
        node
    }

    /// `name.framework:port/proto → address:port (weight)…` of every service, sorted.
    fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for service in self.projection.services() {
            let (address, port, proto) = key_parts(&service.key);
            let backends: Vec<String> =
                service.backends.iter().map(|b| format!("{}:{} w{}", b.address, b.port, b.weight)).collect();
            assert!(!service.names.is_empty(), "no fixture has a fixed VIP: {address}:{port}");
            for name in &service.names {
                assert_eq!(self.projection.assignments().get(name), Some(&address), "{name}");
                assert!(DEFAULT_VIP_POOL.contains(address), "{address} is in the VIP pool");
                out.insert(format!("{name}:{port}/{}", protocol_name(proto)), backends.clone());
            }
        }
        out
    }

    /// Services whose backends take new connections.
    fn active(&self) -> BTreeMap<String, Vec<String>> {
        self.services().into_iter().filter(|(_, backends)| backends.iter().any(|b| !b.ends_with(" w0"))).collect()
    }
}

fn expect(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|b| b.to_string()).collect())).collect()
}

/// Adds `VIP_0=/<discovery name>:80` to every discovery port of every task in the stream (in the
/// state and in `TASK_ADDED`s), for fixtures that carry no VIP of their own.
fn label_every_port(mut events: Vec<Value>) -> Vec<Value> {
    fn label(task: &mut Value) {
        // The discovery name, as dcos-net names tasks: a pod's tasks are all named after their
        // container (`app`), their discovery info after the pod.
        let name = task.pointer("/discovery/name").or(task.get("name")).and_then(Value::as_str).unwrap_or_default();
        let name = name.to_owned();
        let Some(ports) = task.pointer_mut("/discovery/ports/ports").and_then(Value::as_array_mut) else { return };
        for port in ports {
            let vip = json!({"key": "VIP_0", "value": format!("/{name}:80")});
            match port.pointer_mut("/labels/labels").and_then(Value::as_array_mut) {
                Some(labels) => labels.push(vip),
                None => port["labels"] = json!({"labels": [vip]}),
            }
        }
    }
    for event in &mut events {
        for pointer in ["/subscribed/get_state/get_tasks/tasks", "/get_state/get_tasks/tasks"] {
            if let Some(tasks) = event.pointer_mut(pointer).and_then(Value::as_array_mut) {
                tasks.iter_mut().for_each(label);
            }
        }
        if let Some(task) = event.pointer_mut("/task_added/task") {
            label(task);
        }
    }
    events
}

/// `vip-labels.json`: task `app` of `marathon` on agent 172.17.0.3, host networking, healthy:
/// VIP_n labels on its discovery ports and the legacy `vip_port<N>=tcp://…` task labels, with
/// and without a leading slash.
#[test]
fn vip_labels() {
    let node = Node::follow(&stream("vip-labels.json"));
    // dcos-net: foo/9999 `/abc:80`, `/cbd:80`, `def:80`; bar/10000 `jkl:80`; baz/10001
    // `/xyz:443`; qux/10002 none. Without a slash is named too: `def` is `def.marathon`.
    assert_eq!(
        node.services(),
        expect(&[
            ("abc.marathon:80/tcp", &["172.17.0.3:9999 w1"]),
            ("cbd.marathon:80/tcp", &["172.17.0.3:9999 w1"]),
            ("def.marathon:80/tcp", &["172.17.0.3:9999 w1"]),
            ("jkl.marathon:80/tcp", &["172.17.0.3:10000 w1"]),
            ("xyz.marathon:443/tcp", &["172.17.0.3:10001 w1"]),
        ])
    );
    let addresses: BTreeSet<Ipv4Addr> = node.projection.assignments().values().copied().collect();
    assert_eq!(addresses.len(), 5, "each name its own address");
    let state = node.snapshot.as_ref().unwrap();
    let task = &state.tasks[0];
    assert_eq!((task.name.as_str(), task.state, task.healthy), ("app", TaskState::Running, Some(true)));
    assert_eq!(state.agents[0].address.ip(), IpAddr::from([172, 17, 0, 3]));
    assert_eq!(state.frameworks[0].info.name, "marathon");
}

/// `tcp-and-udp.json`: Docker on the host network; port http 6416 on tcp and on udp, each with
/// `/app:80`; foobar 6417 (tcp and udp) without a VIP.
#[test]
fn tcp_and_udp() {
    let node = Node::follow(&stream("tcp-and-udp.json"));
    assert_eq!(
        node.services(),
        expect(&[("app.marathon:80/tcp", &["172.17.0.3:6416 w1"]), ("app.marathon:80/udp", &["172.17.0.3:6416 w1"])])
    );
    let services: Vec<_> = node.projection.services().collect();
    assert_eq!(services[0].parts().0, services[1].parts().0, "one VIP, both protocols");
}

/// `unhealthy.json`: task `app` on the overlay (9.0.1.6, agent 172.17.0.4), RUNNING, with a
/// health check that has not passed: `/foobar:80` must not receive traffic.
#[test]
fn unhealthy() {
    let node = Node::follow(&stream("unhealthy.json"));
    assert_eq!(node.active(), BTreeMap::new(), "no backend takes new connections");
    let state = node.snapshot.clone().unwrap();
    let task = &state.tasks[0];
    assert_eq!(task.state, TaskState::Running);
    assert!(task.health_check.is_some() && task.healthy != Some(true), "dcos-net: healthy=false");
    assert_eq!(task.ip_addresses, vec![IpAddr::from([9, 0, 1, 6])]);
    assert_eq!(state.agents[0].address.ip(), IpAddr::from([172, 17, 0, 4]));

    // Once healthy, the backend is the task's overlay address and its container port.
    let mut healthy = state;
    healthy.tasks[0].healthy = Some(true);
    let mut projection = VipProjection::new();
    projection.reset(&healthy, &BTreeMap::new());
    sync_hashed_assignments(&mut projection, DEFAULT_VIP_POOL);
    let service = projection.services().next().expect("a service once healthy");
    assert_eq!(service.names, vec![VipName::new("marathon", "foobar")]);
    let backends: Vec<String> =
        service.backends.iter().map(|b| format!("{}:{} w{}", b.address, b.port, b.weight)).collect();
    assert_eq!(backends, ["9.0.1.6:80 w1"]);
}

/// `hello-world.json`: the tasks with a VIP are killed by the end of the stream, their
/// framework removed: nothing is served.
#[test]
fn hello_world() {
    let events = stream("hello-world.json");
    // The state had one: `/api.hello-world:80` of the marathon-run scheduler, on its agent.
    let first = Node::follow(&events[..1]);
    assert_eq!(first.services(), expect(&[("api.hello-world.marathon:80/tcp", &["172.17.0.4:21872 w1"])]));
    let node = Node::follow(&events);
    assert_eq!(node.services(), BTreeMap::new());
    assert_eq!(node.projection.assignments(), &BTreeMap::new(), "names no task carries lose their address");
}

/// `hello-overlay.json`: an SDK framework with tasks on the host and on the `dcos` overlay,
/// VIP labels keyed `VIP_<uuid>` and without a leading slash.
#[test]
fn hello_overlay() {
    let node = Node::follow(&stream("hello-overlay.json"));
    assert_eq!(
        node.services(),
        expect(&[
            ("api.hello-world.marathon:80/tcp", &["10.0.0.49:19630 w1"]),
            ("host-vip.hello-world:80/tcp", &["10.0.0.49:4044 w1"]),
            ("overlay-vip.hello-world:80/tcp", &["9.0.2.3:4044 w1"]),
        ])
    );
}

/// `recovered-agents.json`: the state is empty; the agent, framework and tasks come as events.
/// `/web:10080` is on a host port (`network-scope=host`) of a task on the Mesos bridge.
#[test]
fn recovered_agents() {
    let node = Node::follow(&stream("recovered-agents.json"));
    assert_eq!(node.services(), expect(&[("web.marathon:10080/tcp", &["172.17.0.4:16424 w1"])]));
}

/// `operator-api.json`: a task of every kind (none = command task, ucr, docker, pod; on the
/// host, a bridge, the `dcos` overlay), none with a VIP: each port labelled by the test lands
/// where dcos-net's tests say the task is (agent IP and host port for host and bridge, task IP
/// and container port on the overlay).
#[test]
fn operator_api() {
    let events = stream("operator-api.json");
    assert_eq!(Node::follow(&events).services(), BTreeMap::new(), "no VIP of its own");
    let node = Node::follow(&label_every_port(events));
    assert_eq!(
        node.services(),
        expect(&[
            ("docker-on-bridge.marathon:80/tcp", &["172.17.0.4:20560 w1"]),
            ("docker-on-dcos.marathon:80/tcp", &["9.0.2.130:8080 w1"]),
            ("docker-on-host.marathon:80/tcp", &["172.17.0.4:31168 w1"]),
            // Its IPv4 address (the data plane serves IPv4; the task also has fd01:b::2:8000:0:2).
            ("docker-on-ipv6.marathon:80/tcp", &["172.19.0.2:8080 w1"]),
            ("none-on-host.marathon:80/tcp", &["172.17.0.4:13977 w1"]),
            ("pod-on-bridge.marathon:80/tcp", &["172.17.0.3:2254 w1"]),
            ("pod-on-dcos.marathon:80/tcp", &["9.0.1.3:8080 w1"]),
            ("pod-on-host.marathon:80/tcp", &["172.17.0.4:28064 w1"]),
            ("ucr-on-bridge.marathon:80/tcp", &["172.17.0.3:15263 w1"]),
            ("ucr-on-host.marathon:80/tcp", &["172.17.0.3:10323 w1"]),
            // none-on-dcos and ucr-on-dcos have only port 0 (none): nothing to serve.
        ])
    );
    // dcos-net's task IPs: the overlay's own, the agent's on the host.
    let state = node.converter.state();
    let ips: BTreeMap<&str, Vec<String>> = state
        .tasks
        .iter()
        .map(|t| {
            let name = t.discovery.as_ref().map_or(t.name.as_str(), |d| d.name.as_str());
            (name, t.status.ip_addresses.iter().map(ToString::to_string).collect())
        })
        .collect();
    assert_eq!(ips["docker-on-dcos"], ["9.0.2.130"]);
    assert_eq!(ips["pod-on-dcos"], ["9.0.1.3"]);
    assert_eq!(ips["docker-on-ipv6"], ["172.19.0.2", "fd01:b::2:8000:0:2"]);
    assert_eq!(ips["docker-on-host"], Vec::<String>::new(), "host networking: the agent's address");
}

/// `pod-tasks.json`: two tasks of one pod on the overlay, one of which finished.
#[test]
fn pod_tasks() {
    let node = Node::follow(&label_every_port(stream("pod-tasks.json")));
    assert_eq!(node.services(), BTreeMap::new(), "no discovery ports: nothing to serve");
    let state = node.converter.state();
    let tasks: Vec<(&str, TaskState)> = state.tasks.iter().map(|t| (t.id.as_str(), t.state)).collect();
    assert_eq!(tasks, [("app.instance-caff1565-d0db-11e8-aa23-70b3d5800002.foo", TaskState::Running)]);
}

/// `dns-hostname.json`: the agent is known by host name only (`localhost`): the shell resolves
/// it (here: to 127.0.0.1, as dcos-net's test did) before the converter reads the state.
#[test]
fn dns_hostname() {
    let events = stream("dns-hostname.json");
    assert_eq!(hostnames(&events[0]), BTreeSet::from(["localhost".to_owned()]));
    let node = Node::follow(&events);
    assert_eq!(node.services(), BTreeMap::new());
    let state = node.converter.state();
    assert_eq!(state.agents[0].address.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_eq!((state.tasks[0].name.as_str(), state.tasks[0].state), ("test", TaskState::Running));
    let unresolved = MesosConverter::new().convert(&events[0], Time::ZERO, &|_| Vec::new()).unwrap();
    let Converted::Snapshot(state) = unresolved else { panic!("a snapshot") };
    assert!(state.agents[0].address.ip().is_unspecified(), "unresolved: no agent address");
}

/// Every fixture converts without an error or a warning.
#[test]
fn every_fixture_converts_cleanly() {
    let mut names: Vec<String> = std::fs::read_dir(compat_dir().join("dcos-net"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    for name in names {
        let node = Node::follow(&stream(&name));
        assert_eq!(node.warnings, Vec::<String>::new(), "{name}");
    }
}

/// What `atoll dns --mesos-master` publishes under `l4lb.thisdcos.directory` — the hashed names
/// of the state it folds from the same stream ([`hashed_names_of`]) — is, after every event of
/// every fixture (with every port labelled, so there are names to compare), exactly what the
/// load balancer's own projection serves.
#[test]
fn dns_names_are_the_load_balancers_addresses() {
    use atoll_lb_core::vips::hashed_names_of;
    let mut compared = 0;
    for name in ["vip-labels.json", "tcp-and-udp.json", "hello-world.json", "hello-overlay.json", "pod-tasks.json"] {
        let events = label_every_port(stream(name));
        let mut converter = MesosConverter::new();
        let mut projection = VipProjection::new();
        let mut folded: Option<ClusterState> = None;
        for (n, event) in events.iter().enumerate() {
            match converter.convert(event, Time(n as u64), &resolve).unwrap() {
                Converted::Snapshot(state) => {
                    projection.reset(&state, &BTreeMap::new());
                    folded = Some(state);
                }
                Converted::Events(events) => {
                    let state = folded.as_mut().expect("the snapshot first");
                    for event in &events {
                        projection.apply(event);
                        state.apply(event);
                    }
                    state.tasks.retain(|t| !t.state.is_terminal());
                }
            }
            sync_hashed_assignments(&mut projection, DEFAULT_VIP_POOL);
            let dns = hashed_names_of(folded.as_ref().unwrap(), DEFAULT_VIP_POOL);
            assert_eq!(&dns.assigned, projection.assignments(), "{name}, after event #{}", n + 1);
            compared += dns.assigned.len();
        }
    }
    assert!(compared > 0, "the fixtures carry named VIPs");
}
