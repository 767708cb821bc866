//! Egress masquerading (`--masquerade`) on real tasks. Everything happens inside network
//! namespaces the test creates (see [`crate::netns`]): the agent's namespace, and an "outside"
//! one joined to it by a veth pair on 198.19.254.0/30 (the agent's side 198.19.254.2, its default
//! route via the outside's 198.19.254.1), which serves TCP and, on 198.18.14.1, stands in for
//! another agent's container subnet. The outside routes the agent's container subnet back via
//! 198.19.254.2, so what a server there sees as the peer address tells whether the agent
//! masqueraded: its own 198.19.254.2, or the task's own address. The agent's nftables table lives
//! in the test's namespace only and goes with it. Needs root; without it the tests fail unless
//! `ATOLL_ALLOW_UNPRIVILEGED_SKIP=1`.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use atoll_agent::StopMode;
use atoll_proto::model::{ClusterState, CommandInfo, NetworkRequest, TaskState};
use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::agent as apb;
use tokio::io::AsyncReadExt;

use crate::netns::{TestNetns, run};
use crate::support::*;

pub const ALL: &[(&str, fn())] = &[
    ("masquerade_hides_container_egress_behind_the_agent", masquerade_hides_container_egress_behind_the_agent),
    ("masquerade_without_nft_is_reported_and_cleanup_removes_the_table", masquerade_without_nft_and_cleanup),
];

const SUBNET: &str = "198.18.13.0/24";
const AGENT_IP: &str = "198.19.254.2";
const OUTSIDE_IP: &str = "198.19.254.1";
/// Stands in for a container of another agent, whose subnet is 198.18.14.0/24.
const PEER_CONTAINER_IP: &str = "198.18.14.1";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn networks() -> apb::Networks {
    apb::Networks {
        subnets: vec![pb::Subnet { pool: "atoll".into(), network: SUBNET.into(), gateway: "198.18.13.1".into() }],
        reserved: vec![],
    }
}

fn masquerading(options: &mut atoll_agent::AgentOptions) {
    options.container_networking = Some(true);
    options.masquerade = true;
}

/// The cluster as the fake master's event stream shows it: this agent and one other, whose
/// container subnet `peer_subnet` is behind the outside namespace.
fn cluster(index: u64, peer_subnet: &str) -> ClusterState {
    ClusterState {
        index,
        agents: vec![peer_agent(AGENT_ID, AGENT_IP, &[SUBNET]), peer_agent("a2", OUTSIDE_IP, &[peer_subnet])],
        ..Default::default()
    }
}

/// The outside namespace, linked to the calling thread's (the agent's) namespace by a veth pair.
/// Dropping it deletes the namespace and with it the pair.
fn outside() -> TestNetns {
    let ns = TestNetns::create();
    run("ip", &["link", "add", "egress0", "type", "veth", "peer", "name", "egress1", "netns", &ns.name]);
    run("ip", &["addr", "add", &format!("{AGENT_IP}/30"), "dev", "egress0"]);
    run("ip", &["link", "set", "egress0", "up"]);
    run("ip", &["route", "add", "default", "via", OUTSIDE_IP]);
    let n = ns.name.as_str();
    run("ip", &["-n", n, "addr", "add", &format!("{OUTSIDE_IP}/30"), "dev", "egress1"]);
    run("ip", &["-n", n, "link", "set", "egress1", "up"]);
    run("ip", &["-n", n, "addr", "add", &format!("{PEER_CONTAINER_IP}/32"), "dev", "lo"]);
    // Without this route back, unmasqueraded connections could not be answered at all.
    run("ip", &["-n", n, "route", "add", SUBNET, "via", AGENT_IP]);
    ns
}

/// A TCP listener on `addr` inside `netns` (the socket stays there), for the test's runtime.
fn listen_in(netns: &TestNetns, addr: &str) -> tokio::net::TcpListener {
    let (file, addr): (_, SocketAddr) = (netns.file(), addr.parse().expect("addr"));
    let listener = std::thread::spawn(move || {
        crate::netns::join(&file);
        std::net::TcpListener::bind(addr)
    })
    .join()
    .expect("bind thread")
    .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    listener.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(listener).expect("tokio listener")
}

/// The peer address of the next connection to `listener`, and what it sent.
async fn next_peer(listener: &tokio::net::TcpListener) -> (IpAddr, String) {
    let (mut conn, peer) = tokio::time::timeout(WAIT, listener.accept()).await.expect("a connection").expect("accept");
    let mut said = String::new();
    conn.read_to_string(&mut said).await.expect("read");
    (peer.ip(), said)
}

/// The real interpreter behind `python3` (a pyenv shim would need the test's HOME).
fn python() -> String {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().expect("python3 runs");
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

/// A container task that connects to each of `targets` (`ip:port`) in turn, sends its id, and
/// finishes.
fn client(task_id: &str, targets: &[&str]) -> atoll_proto::model::TaskInfo {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| {
            let (host, port) = t.rsplit_once(':').expect("ip:port");
            format!("(\"{host}\", {port})")
        })
        .collect();
    let script = format!(
        "import socket\nfor target in [{}]:\n    s = socket.create_connection(target, timeout=5)\n    \
         s.sendall(b\"{task_id}\")\n    s.close()\nprint(\"done\")\n",
        targets.join(", ")
    );
    let mut task = task_info(task_id, CommandInfo::argv(vec![python(), "-c".into(), script]), "cpus:0.1;mem:64", None);
    task.networks = vec![NetworkRequest { name: "atoll".into(), ip: None, port_mappings: vec![] }];
    task
}

/// `table <family> <name>` lines of the agent's tables in the calling thread's namespace.
fn tables(table: &str) -> Vec<String> {
    let out = run("nft", &["list", "tables"]);
    out.lines().map(str::trim).filter(|l| l.ends_with(&format!(" {table}"))).map(str::to_owned).collect()
}

/// The rules of the agent's `ip` table (empty without one).
fn rules(table: &str) -> Vec<String> {
    let out = Command::new("nft").args(["list", "table", "ip", table]).output().expect("nft runs");
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with("return") || l.ends_with("masquerade"))
        .map(str::to_owned)
        .collect()
}

fn atoll_routes() -> Vec<String> {
    let out = run("ip", &["route", "show", "proto", "167"]);
    let mut routes: Vec<String> =
        out.lines().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).collect();
    routes.sort();
    routes
}

async fn masquerade_view(s: &Scene<'_>) -> serde_json::Value {
    get_json(&format!("{}/v1/state", s.base)).await["networks"]["masquerade"].clone()
}

/// Waits until the agent has processed the acknowledgements of its finished tasks (before a
/// stop: the next agent would re-send what it had not).
async fn until_acknowledged(s: &Scene<'_>) {
    eventually("the acknowledgements processed", || async {
        get_json(&format!("{}/v1/state", s.base)).await["tasks"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
}

fn masquerade_hides_container_egress_behind_the_agent() {
    Scenario::default()
        .needs_root("masquerade_hides_container_egress_behind_the_agent")
        .in_netns()
        .options(masquerading)
        .networks(networks)
        .run(async |s| {
            let table = atoll_agent::net::masquerade::table_name(&s.options.data_dir);
            let outside = outside();
            let server = listen_in(&outside, &format!("{OUTSIDE_IP}:7200"));
            let peer_server = listen_in(&outside, &format!("{PEER_CONTAINER_IP}:7201"));
            s.master.cluster.send_replace(cluster(3, "198.18.14.0/24"));

            let expected = [
                "ip daddr 198.18.13.0/24 return".to_owned(),
                "ip daddr 198.18.14.0/24 return".to_owned(),
                format!("ip saddr {SUBNET} oifname != \"atoll0\" masquerade"),
            ];
            eventually("the masquerade table", || async { rules(&table) == expected }).await;
            assert_eq!(tables(&table), [format!("table ip {table}")], "no ip6 table without IPv6 subnets");
            eventually("the route to the other agent's subnet", || async {
                atoll_routes() == [format!("198.18.14.0/24 via {OUTSIDE_IP}")]
            })
            .await;
            // The agent reports the table once it is in: the report may trail the rules a moment.
            eventually("the masquerade table reported", || async {
                masquerade_view(s).await["kept"] == serde_json::json!(["198.18.13.0/24", "198.18.14.0/24"])
            })
            .await;
            let view = masquerade_view(s).await;
            assert_eq!(view["enabled"], true, "{view}");
            assert_eq!(view["table"], table.as_str());
            assert_eq!(view["families"], serde_json::json!(["ip"]));
            assert_eq!(view["subnets"], serde_json::json!([SUBNET]));
            assert_eq!(view["kept"], serde_json::json!(["198.18.13.0/24", "198.18.14.0/24"]));
            assert_eq!(view["error"], serde_json::Value::Null);

            // Out to the world: behind the agent's address. To another agent's container subnet:
            // its own address.
            let task = client("egress-1", &[&format!("{OUTSIDE_IP}:7200"), &format!("{PEER_CONTAINER_IP}:7201")]);
            let finished = s.master.launch_until(&task, TaskState::Finished).await;
            let task_ip = finished.ip_addresses[0];
            assert!(atoll_ipam::IpNetwork::contains(&SUBNET.parse().expect("cidr"), task_ip), "{task_ip}");
            assert_eq!(next_peer(&server).await, (ip(AGENT_IP), "egress-1".to_owned()), "masqueraded");
            assert_eq!(next_peer(&peer_server).await, (task_ip, "egress-1".to_owned()), "container to container");

            // The other agent's subnet moves: the table follows, replaced as a whole.
            s.master.cluster.send_replace(cluster(4, "198.18.15.0/24"));
            eventually("the table follows the subnets", || async {
                rules(&table)
                    == [
                        "ip daddr 198.18.13.0/24 return".to_owned(),
                        "ip daddr 198.18.15.0/24 return".to_owned(),
                        expected[2].clone(),
                    ]
            })
            .await;

            // Restarted with masquerading off: the table goes, and the world sees the task's own
            // address (the outside routes it back).
            until_acknowledged(s).await;
            s.agent.stop(StopMode::LeaveTasks).await;
            assert_eq!(tables(&table).len(), 1, "a LeaveTasks stop keeps the table");
            s.options.masquerade = false;
            s.restart_agent().await;
            eventually("the table removed", || async { tables(&table).is_empty() }).await;
            assert_eq!(masquerade_view(s).await["enabled"], false);
            let finished =
                s.master.launch_until(&client("egress-2", &[&format!("{OUTSIDE_IP}:7200")]), TaskState::Finished).await;
            assert_eq!(next_peer(&server).await, (finished.ip_addresses[0], "egress-2".to_owned()), "not masqueraded");

            // On again, then `atoll up`'s stop: the table comes back and goes with the networks.
            until_acknowledged(s).await;
            s.agent.stop(StopMode::LeaveTasks).await;
            s.options.masquerade = true;
            s.restart_agent().await;
            eventually("the table back", || async { rules(&table).len() == 3 }).await;
            s.stop_killing_tasks().await;
            assert_eq!(tables(&table), Vec::<String>::new(), "a KillTasks stop removes the table");
            assert_eq!(atoll_routes(), Vec::<String>::new());
            drop(outside);
        });
}

fn masquerade_without_nft_and_cleanup() {
    Scenario::default()
        .needs_root("masquerade_without_nft_is_reported_and_cleanup_removes_the_table")
        .in_netns()
        .options(|o| {
            masquerading(o);
            o.nft = "/nonexistent/nft".into();
        })
        .networks(networks)
        .run(async |s| {
            let table = atoll_agent::net::masquerade::table_name(&s.options.data_dir);
            // No nft: reported, and the agent goes on (container tasks still run).
            eventually("the error in /v1/state", || async { !masquerade_view(s).await["error"].is_null() }).await;
            let view = masquerade_view(s).await;
            assert_eq!(view["enabled"], true, "{view}");
            let error = view["error"].as_str().unwrap_or_default().to_owned();
            assert!(error.contains("/nonexistent/nft") && error.contains("nftables"), "{view}");
            let finished = s.master.launch_until(&client("no-egress", &[]), TaskState::Finished).await;
            assert_eq!(finished.ip_addresses.len(), 1);
            assert!(tables(&table).is_empty());
            until_acknowledged(s).await;

            // With nft: installed; a LeaveTasks stop keeps it for the tasks left running; the
            // cleanup removes it.
            s.agent.stop(StopMode::LeaveTasks).await;
            s.options.nft = "nft".into();
            s.restart_agent().await;
            eventually("the masquerade table", || async { rules(&table).len() == 2 }).await;
            // The agent reports the table once it is in: the report may trail the rules a moment.
            eventually("the masquerade table reported", || async {
                masquerade_view(s).await["families"] == serde_json::json!(["ip"])
            })
            .await;
            let view = masquerade_view(s).await;
            assert_eq!((&view["families"], &view["error"]), (&serde_json::json!(["ip"]), &serde_json::Value::Null));
            s.agent.stop(StopMode::LeaveTasks).await;
            assert_eq!(tables(&table), [format!("table ip {table}")]);
            let report = atoll_agent::cleanup(&s.options).expect("cleanup");
            let removed = report.network.clone().expect("networks removed");
            assert!(removed.masquerade && removed.bridge, "{report:?}");
            assert!(tables(&table).is_empty());
        });
}
