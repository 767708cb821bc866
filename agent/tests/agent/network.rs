//! Container networking on real tasks. Every scenario runs inside a network namespace of its own
//! ([`crate::netns`]): the agent's bridge, IP forwarding, routes and every address used here
//! (198.18.0.0/15) exist only there. Needs root; without it the tests fail unless
//! `ATOLL_ALLOW_UNPRIVILEGED_SKIP=1`.

use std::net::IpAddr;
use std::time::Duration;

use atoll_agent::StopMode;
use atoll_agent::net::store::LeaseStore;
use atoll_proto::model::{
    AgentId, ClusterState, CommandInfo, HealthCheck, HealthCheckKind, NetworkRequest, TaskInfo, TaskPortMapping,
    TaskState, TaskStatus,
};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;
use tokio::io::AsyncReadExt;

use crate::netns::{leftover_netns, links, run};
use crate::support::*;

pub const ALL: &[(&str, fn())] = &[
    ("container_task_gets_its_own_network", container_task_gets_its_own_network),
    ("restart_reattaches_and_reconciles_container_networks", restart_reattaches_and_reconciles_container_networks),
    ("address_exhaustion_pinning_and_refusals", address_exhaustion_pinning_and_refusals),
    ("routes_follow_other_agents_subnets", routes_follow_other_agents_subnets),
    ("tasks_on_two_hosts_reach_each_other", tasks_on_two_hosts_reach_each_other),
    ("cleanup_removes_container_networks", cleanup_removes_container_networks),
];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn networks(cidr: &str, gateway: &str, reserved: &[&str]) -> apb::Networks {
    apb::Networks {
        subnets: vec![pb::Subnet { pool: "atoll".into(), network: cidr.into(), gateway: gateway.into() }],
        reserved: reserved.iter().map(|r| r.to_string()).collect(),
    }
}

fn enable(options: &mut atoll_agent::AgentOptions) {
    options.container_networking = Some(true);
}

/// The real interpreter behind `python3` (a pyenv shim would need the test's HOME).
fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

fn on_network(mut task: TaskInfo, pinned: Option<&str>, mappings: &[(u16, u16)]) -> TaskInfo {
    task.networks = vec![NetworkRequest {
        name: "atoll".into(),
        ip: pinned.map(ip),
        port_mappings: mappings
            .iter()
            .map(|&(host_port, container_port)| TaskPortMapping { host_port, container_port, protocol: "tcp".into() })
            .collect(),
    }];
    task
}

/// `python3 -m http.server 8080` on the task's own address, mapping `host_port` to it.
fn web(task_id: &str, host_port: u16) -> TaskInfo {
    let command = CommandInfo::shell(format!("echo ready; exec {} -m http.server 8080 --bind 0.0.0.0", python()));
    let task = task_info(task_id, command, &format!("cpus:0.1;mem:128;ports:[{host_port}-{host_port}]"), Some(2.0));
    on_network(task, None, &[(host_port, 8080)])
}

async fn http_ok(url: &str) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    client.get(url).send().await.is_ok_and(|r| r.status().is_success())
}

async fn state(s: &Scene<'_>) -> serde_json::Value {
    get_json(&format!("{}/v1/state", s.base)).await
}

fn task_view<'a>(state: &'a serde_json::Value, task: &str) -> &'a serde_json::Value {
    state["tasks"].as_array().and_then(|t| t.iter().find(|t| t["id"] == task)).expect("task in /v1/state")
}

/// Leased addresses in `/v1/state`.
async fn leased(s: &Scene<'_>) -> Vec<String> {
    let state = state(s).await;
    state["networks"]["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| l["ip"].as_str().unwrap().to_owned())
        .collect()
}

fn task_veths() -> Vec<String> {
    links().into_iter().filter(|l| l.starts_with("vatoll")).collect()
}

/// Acknowledges updates of `task` until one carries the health verdict `healthy`.
async fn until_healthy(s: &mut Scene<'_>, task: &str) -> TaskStatus {
    loop {
        let status = s.master.until_state(task, TaskState::Running).await;
        if status.healthy == Some(true) {
            return status;
        }
    }
}

async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("GET /metrics").text().await.expect("body");
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

fn container_task_gets_its_own_network() {
    Scenario::default()
        .needs_root("container_task_gets_its_own_network")
        .in_netns()
        .options(enable)
        .networks(|| networks("198.18.3.0/24", "198.18.3.1", &["198.18.3.2"]))
        .run(async |s| {
            let prefix = atoll_agent::net::netns_prefix(&s.options.data_dir);
            // In the agent's namespace, reached by the task through its gateway.
            let listener = tokio::net::TcpListener::bind("0.0.0.0:7000").await.expect("bind 7000");
            let py = python();
            let command = CommandInfo::shell(format!(
                "cat /etc/resolv.conf /proc/net/dev; \
                 {py} -c 'import socket; s = socket.create_connection((\"198.18.3.1\", 7000), timeout=5); \
                 s.sendall(b\"hello from the task\"); s.close()'; \
                 echo ready; exec {py} -m http.server 8080 --bind 0.0.0.0"
            ));
            let mut task = on_network(
                task_info("web", command, "cpus:0.1;mem:128;ports:[31050-31050]", Some(2.0)),
                None,
                &[(31050, 8080)],
            );
            // Probed at the task's own address.
            task.health_check = Some(HealthCheck {
                kind: HealthCheckKind::Tcp { port: 8080 },
                delay_secs: 0.0,
                interval_secs: 0.2,
                timeout_secs: 2.0,
                consecutive_failures: 0,
                grace_period_secs: 30.0,
            });
            s.master.send(launch(&task));
            // 198.18.3.1 is the gateway and .2 is reserved: the first task gets .3, and says so
            // from its first update on.
            let starting = s.master.until_state("web", TaskState::Starting).await;
            assert_eq!(starting.ip_addresses, [ip("198.18.3.3")], "{starting:?}");
            let running = s.master.until_state("web", TaskState::Running).await;
            assert_eq!(running.ip_addresses, [ip("198.18.3.3")]);

            let (mut conn, peer) =
                tokio::time::timeout(WAIT, listener.accept()).await.expect("the task connects").expect("accept");
            assert_eq!(peer.ip(), ip("198.18.3.3"), "the task's own address, routed via the gateway");
            let mut said = String::new();
            conn.read_to_string(&mut said).await.expect("read");
            assert_eq!(said, "hello from the task");

            let healthy = until_healthy(s, "web").await;
            assert_eq!(healthy.ip_addresses, [ip("198.18.3.3")]);
            eventually("the task's server on its own address", || http_ok("http://198.18.3.3:8080/")).await;
            eventually("the port mapping", || http_ok("http://127.0.0.1:31050/")).await;

            let stdout = std::fs::read_to_string(sandbox_of(&s.env.data_dir(), "web").join("stdout")).expect("stdout");
            let nameservers: Vec<&str> = stdout.lines().filter(|l| l.starts_with("nameserver")).collect();
            assert_eq!(nameservers, ["nameserver 198.18.3.1"], "{stdout}");
            assert!(stdout.contains("eth0:") && stdout.contains("lo:"), "{stdout}");
            assert!(
                !stdout.contains("atoll0") && !stdout.contains("vatoll"),
                "the host's links are not visible: {stdout}"
            );

            let view = state(s).await;
            let netns = task_view(&view, "web")["netns"].as_str().expect("netns").to_owned();
            assert!(netns.starts_with(&prefix), "{netns}");
            assert_eq!(leftover_netns(&prefix), std::slice::from_ref(&netns));
            assert_eq!(task_veths().len(), 1, "{:?}", links());
            let bridge = run("ip", &["-o", "addr", "show", "dev", "atoll0"]);
            assert!(bridge.contains("198.18.3.1/24"), "{bridge}");
            assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward").trim(), "1");
            assert_eq!(leased(s).await, ["198.18.3.3"]);
            let saved = LeaseStore::new(&s.options.data_dir).load().expect("ipam.json").expect("saved");
            assert_eq!(saved.leases().map(|l| l.ip).collect::<Vec<_>>(), [ip("198.18.3.3")]);

            let killed = s.master.kill_until("web", None, TaskState::Killed).await;
            assert_eq!(killed.ip_addresses, [ip("198.18.3.3")]);
            eventually("the task's network removed", || {
                let prefix = prefix.clone();
                async move { leftover_netns(&prefix).is_empty() && task_veths().is_empty() }
            })
            .await;
            eventually("the address released", || async { leased(s).await.is_empty() }).await;
            assert!(!http_ok("http://127.0.0.1:31050/").await, "the port mapping stopped");
            let saved = LeaseStore::new(&s.options.data_dir).load().expect("ipam.json").expect("saved");
            assert_eq!(saved.leases().count(), 0);
        });
}

fn restart_reattaches_and_reconciles_container_networks() {
    Scenario::default()
        .needs_root("restart_reattaches_and_reconciles_container_networks")
        .in_netns()
        .options(enable)
        .networks(|| networks("198.18.4.0/24", "198.18.4.1", &[]))
        .run(async |s| {
            let prefix = atoll_agent::net::netns_prefix(&s.options.data_dir);
            let running = s.master.launch_until(&web("web", 31051), TaskState::Running).await;
            assert_eq!(running.ip_addresses, [ip("198.18.4.2")]);
            eventually("the port mapping", || http_ok("http://127.0.0.1:31051/")).await;
            let netns = task_view(&state(s).await, "web")["netns"].as_str().expect("netns").to_owned();

            s.agent.stop(StopMode::LeaveTasks).await;
            // What a crash could leave behind: a namespace and a veth of no task, a lease of a
            // run that is gone.
            let leaked_netns = format!("{prefix}deadbeef0000");
            run("ip", &["netns", "add", &leaked_netns]);
            run("ip", &["link", "add", "vatoll0leaked0", "type", "veth", "peer", "name", "vleakpeer0"]);
            run("ip", &["link", "set", "vatoll0leaked0", "master", "atoll0"]);
            let store = LeaseStore::new(&s.options.data_dir);
            let mut leases = store.load().expect("load").expect("saved");
            assert_eq!(leases.allocate("atoll", "gone-run", None).expect("allocate").ip, ip("198.18.4.3"));
            store.save(&leases).expect("save");

            let register = s.restart_agent().await.clone();
            assert_eq!(register.tasks.len(), 1, "the task is recovered");
            eventually("the re-created port mapping", || http_ok("http://127.0.0.1:31051/")).await;
            eventually("leaks reconciled", || {
                let (prefix, netns) = (prefix.clone(), netns.clone());
                async move {
                    let l = links();
                    leftover_netns(&prefix) == [netns] && !l.iter().any(|n| n == "vatoll0leaked0" || n == "vleakpeer0")
                }
            })
            .await;
            eventually("the leaked lease released", || async { leased(s).await == ["198.18.4.2"] }).await;
            let view = state(s).await;
            assert_eq!(task_view(&view, "web")["ip_addresses"], serde_json::json!(["198.18.4.2"]));
            assert!(http_ok("http://198.18.4.2:8080/").await);

            // `atoll up`'s stop: every task killed, then the bridge, veths, namespaces go.
            s.agent.request_stop(StopMode::KillTasks);
            s.master.until_state("web", TaskState::Killed).await;
            s.agent.join().await;
            s.env.assert_no_cgroups();
            assert_eq!(leftover_netns(&prefix), Vec::<String>::new());
            let l = links();
            assert!(!l.iter().any(|n| n == "atoll0" || n.starts_with("vatoll")), "{l:?}");
            let saved = store.load().expect("load").expect("saved");
            assert_eq!(saved.leases().count(), 0, "every address released");
        });
}

fn address_exhaustion_pinning_and_refusals() {
    Scenario::default()
        .needs_root("address_exhaustion_pinning_and_refusals")
        .in_netns()
        .options(enable)
        // A /30: network, gateway, one task address, broadcast.
        .networks(|| networks("198.18.5.0/30", "198.18.5.1", &[]))
        .run(async |s| {
            let pinned = on_network(sleeping("pinned", "cpus:0.1", Some(0.5)), Some("198.18.5.2"), &[]);
            let running = s.master.launch_until(&pinned, TaskState::Running).await;
            assert_eq!(running.ip_addresses, [ip("198.18.5.2")]);

            let failures = [
                (
                    on_network(sleeping("second", "cpus:0.1", None), None, &[]),
                    "pool atoll: agent subnet 198.18.5.0/30 exhausted",
                ),
                (
                    on_network(sleeping("taken", "cpus:0.1", None), Some("198.18.5.2"), &[]),
                    "pool atoll: 198.18.5.2 is taken by task pinned",
                ),
                (
                    on_network(sleeping("outside", "cpus:0.1", None), Some("198.18.9.9"), &[]),
                    "pool atoll: 198.18.9.9 is not in agent subnet 198.18.5.0/30",
                ),
            ];
            for (task, message) in failures {
                let failed = s.master.launch_until(&task, TaskState::Failed).await;
                assert_eq!(failed.message.as_deref(), Some(message), "{failed:?}");
                assert!(failed.ip_addresses.is_empty());
            }
            assert_eq!(metric(&s.base, "atoll_agent_ipam_exhausted_total").await, 1.0);

            let mut two = on_network(sleeping("two", "cpus:0.1", None), None, &[]);
            two.networks.push(two.networks[0].clone());
            let failed = s.master.launch_until(&two, TaskState::Failed).await;
            assert!(failed.message.as_deref().is_some_and(|m| m.contains("one container network")), "{failed:?}");
            let mut other_pool = on_network(sleeping("web-pool", "cpus:0.1", None), None, &[]);
            other_pool.networks[0].name = "web".into();
            let failed = s.master.launch_until(&other_pool, TaskState::Failed).await;
            assert_eq!(
                failed.message.as_deref(),
                Some("pool web: this agent has no subnet in the pool (it must lease one from the master first)")
            );

            // Host networking is untouched.
            let host = task_info("host", CommandInfo::shell("cat /proc/net/dev"), "cpus:0.1", None);
            let finished = s.master.launch_until(&host, TaskState::Finished).await;
            assert!(finished.ip_addresses.is_empty());
            let stdout = std::fs::read_to_string(sandbox_of(&s.env.data_dir(), "host").join("stdout")).expect("stdout");
            assert!(stdout.contains("atoll0:"), "a host-network task sees the agent's links: {stdout}");

            // The address is free again once its task ended.
            s.master.kill_until("pinned", None, TaskState::Killed).await;
            eventually("the address released", || async { leased(s).await.is_empty() }).await;
            let again = on_network(sleeping("again", "cpus:0.1", Some(0.5)), None, &[]);
            let running = s.master.launch_until(&again, TaskState::Running).await;
            assert_eq!(running.ip_addresses, [ip("198.18.5.2")]);
            s.master.kill_until("again", None, TaskState::Killed).await;
        });
}

/// `dest via` of Atoll's routes in the test's namespace.
fn atoll_routes() -> Vec<String> {
    let out = run("ip", &["route", "show", "proto", "167"]);
    let mut routes: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    routes.sort();
    routes
}

fn routes_follow_other_agents_subnets() {
    Scenario::default()
        .needs_root("routes_follow_other_agents_subnets")
        .in_netns()
        .options(|o| {
            enable(o);
            o.advertise_ip = Some("198.19.255.1".parse().expect("ip"));
        })
        .networks(|| networks("198.18.3.0/24", "198.18.3.1", &[]))
        .run(async |s| {
            // The test hosts' link: other agents are on-link here.
            // (A veth pair: this kernel has no dummy links.)
            run("ip", &["link", "add", "hostlink0", "type", "veth", "peer", "name", "hostlink1"]);
            run("ip", &["addr", "add", "198.19.255.1/24", "dev", "hostlink0"]);
            run("ip", &["link", "set", "hostlink0", "up"]);
            run("ip", &["link", "set", "hostlink1", "up"]);
            s.master.cluster.send_replace(ClusterState {
                index: 7,
                agents: vec![
                    peer_agent(AGENT_ID, "198.19.255.1", &["198.18.3.0/24"]),
                    peer_agent("a2", "198.19.255.2", &["198.18.4.0/24"]),
                    peer_agent("a3", "198.19.255.3", &["198.18.6.0/24"]),
                    peer_agent("local", "127.0.0.1", &["198.18.7.0/24"]),
                ],
                ..Default::default()
            });
            eventually("routes to the other agents' subnets", || async {
                atoll_routes() == ["198.18.4.0/24 via 198.19.255.2", "198.18.6.0/24 via 198.19.255.3"]
            })
            .await;
            s.master.cluster.send_replace(ClusterState {
                index: 9,
                agents: vec![
                    peer_agent(AGENT_ID, "198.19.255.1", &["198.18.3.0/24"]),
                    peer_agent("a2", "198.19.255.2", &["198.18.8.0/24"]),
                ],
                ..Default::default()
            });
            eventually("routes follow the changes", || async { atoll_routes() == ["198.18.8.0/24 via 198.19.255.2"] })
                .await;
            s.stop_killing_tasks().await;
            assert_eq!(atoll_routes(), Vec::<String>::new(), "a KillTasks stop removes Atoll's routes");
            assert!(!links().iter().any(|l| l == "atoll0"));
        });
}

/// Host B of the two-host test: its own namespace, fake master and agent, on a thread of its own
/// (the thread joins the namespace, so everything it starts lives there). Stops, with
/// `StopMode::KillTasks`, when told to or when its handle is dropped (a panicking test too).
struct HostB {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HostB {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("host B failed");
        }
    }
}

/// Starts host B's agent in `netns` with subnet 198.18.11.0/24 at 198.19.255.2, launches a web
/// server task there and returns its address.
fn start_host_b(netns: std::fs::File, cluster: ClusterState) -> (HostB, IpAddr) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        crate::netns::join(&netns);
        let env = TestEnv::new();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut master = FakeMaster::start().await;
            master.networks = Some(networks("198.18.11.0/24", "198.18.11.1", &[]));
            master.cluster.send_replace(cluster);
            let mut options = env.options(&master.url);
            enable(&mut options);
            options.advertise_ip = Some(ip("198.19.255.2"));
            let mut agent = TestAgent::start(options);
            master.accept(AGENT_B).await;
            let mut task = web("web-b", 31060);
            task.agent_id = AgentId::new(AGENT_B);
            let running = master.launch_until(&task, TaskState::Running).await;
            let _ = ready_tx.send(running.ip_addresses[0]);
            // Until the test is done with host B (or gone).
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            agent.request_stop(StopMode::KillTasks);
            master.until_state("web-b", TaskState::Killed).await;
            agent.join().await;
        });
        drop(rt);
        drop(env);
    });
    let host = HostB { stop: Some(stop_tx), thread: Some(thread) };
    let ip = ready_rx.recv_timeout(WAIT).expect("host B's task runs");
    (host, ip)
}

const AGENT_B: &str = "agent-test-2";

fn tasks_on_two_hosts_reach_each_other() {
    Scenario::default()
        .needs_root("tasks_on_two_hosts_reach_each_other")
        .in_netns()
        .options(|o| {
            enable(o);
            o.advertise_ip = Some("198.19.255.1".parse().expect("ip"));
        })
        .networks(|| networks("198.18.10.0/24", "198.18.10.1", &[]))
        .run(async |s| {
            // Host A is the scenario's namespace; host B another one, linked to A by a veth pair
            // on the test hosts' network.
            let host_b_ns = crate::netns::TestNetns::create();
            run("ip", &["link", "add", "hosta0", "type", "veth", "peer", "name", "hostb0", "netns", &host_b_ns.name]);
            run("ip", &["addr", "add", "198.19.255.1/24", "dev", "hosta0"]);
            run("ip", &["link", "set", "hosta0", "up"]);
            run("ip", &["-n", &host_b_ns.name, "addr", "add", "198.19.255.2/24", "dev", "hostb0"]);
            run("ip", &["-n", &host_b_ns.name, "link", "set", "hostb0", "up"]);
            let cluster = ClusterState {
                index: 3,
                agents: vec![
                    peer_agent(AGENT_ID, "198.19.255.1", &["198.18.10.0/24"]),
                    peer_agent(AGENT_B, "198.19.255.2", &["198.18.11.0/24"]),
                ],
                ..Default::default()
            };
            s.master.cluster.send_replace(cluster.clone());
            let (host_b, ip_b) = start_host_b(host_b_ns.file(), cluster);
            assert_eq!(ip_b, ip("198.18.11.2"));
            eventually("the route to host B's subnet", || async {
                atoll_routes() == ["198.18.11.0/24 via 198.19.255.2"]
            })
            .await;
            // From host A's agent namespace, across the test hosts' link, to B's task.
            eventually("host B's task from host A", || http_ok("http://198.18.11.2:8080/")).await;
            // From a task on A to the task on B: both hosts forward, both route back.
            let client = on_network(
                task_info(
                    "client",
                    CommandInfo::argv(vec![
                        python(),
                        "-c".into(),
                        "import urllib.request, sys; \
                         r = urllib.request.urlopen('http://198.18.11.2:8080/', timeout=5); \
                         print('status', r.status); sys.exit(0 if r.status == 200 else 1)"
                            .into(),
                    ]),
                    "cpus:0.1;mem:64",
                    None,
                ),
                None,
                &[],
            );
            let finished = s.master.launch_until(&client, TaskState::Finished).await;
            assert_eq!(finished.ip_addresses, [ip("198.18.10.2")]);
            let stdout =
                std::fs::read_to_string(sandbox_of(&s.env.data_dir(), "client").join("stdout")).expect("stdout");
            assert_eq!(stdout.trim(), "status 200");
            drop(host_b);
            drop(host_b_ns);
        });
}

fn cleanup_removes_container_networks() {
    Scenario::default()
        .needs_root("cleanup_removes_container_networks")
        .in_netns()
        .options(enable)
        .networks(|| networks("198.18.12.0/24", "198.18.12.1", &[]))
        .run(async |s| {
            let prefix = atoll_agent::net::netns_prefix(&s.options.data_dir);
            let pid = s.start_task(&on_network(sleeping("left", "cpus:0.1", None), None, &[])).await;
            s.agent.stop(StopMode::LeaveTasks).await;
            assert!(is_running(pid));
            assert_eq!(leftover_netns(&prefix).len(), 1);

            let report = atoll_agent::cleanup(&s.options).expect("cleanup");
            let removed = report.network.clone().expect("networks removed");
            assert_eq!((removed.veths, removed.netns, removed.bridge), (1, 1, true), "{report:?}");
            eventually("the task to die", || async move { !is_running(pid) }).await;
            assert_eq!(leftover_netns(&prefix), Vec::<String>::new());
            let l = links();
            assert!(!l.iter().any(|n| n == "atoll0" || n.starts_with("vatoll")), "{l:?}");
            assert!(!s.options.data_dir.exists(), "{report:?}");
        });
}
