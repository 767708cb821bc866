//! Container networking across hosts: two agents, each in a network namespace of its own (a
//! "host" on 198.19.255.0/24, joined to the others by a bridge in a third namespace), a real
//! master reachable from them; a task on one host reaches a task on the other by its own IP.
//! Nothing here touches the machine's uplink: the only address added outside the test's
//! namespaces is the master's end of a test veth on 198.19.255.0/24.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use atoll_tests::{Cluster, atoll_bin, require_root, test_resources, wait_for};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {}", args.join(" "));
}

/// The test's namespaces and links; removed on drop, also after a failure.
struct Hosts {
    tag: String,
    agents: Vec<(String, Child, PathBuf)>,
    /// The agents' data dirs: kept until their cleanup ran, whatever else is dropped first.
    dir: tempfile::TempDir,
    /// Other daemons started in the hosts.
    others: Vec<Child>,
}

impl Hosts {
    fn namespace(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    /// A switch namespace with a bridge; the master's side (in the test's own namespace) gets
    /// 198.19.255.254; each host namespace 198.19.255.N.
    fn build(hosts: u8) -> Hosts {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{}{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new().prefix("atoll-hosts-").tempdir().expect("temp dir");
        let this = Hosts { tag, agents: Vec::new(), dir, others: Vec::new() };
        let sw = this.namespace("atsw");
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        // The master's leg.
        let (outside, inside) = (format!("atm{}", this.tag), "m0".to_owned());
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &sw]);
        ip(&["-n", &sw, "link", "set", &inside, "master", "br0", "up"]);
        ip(&["addr", "add", "198.19.255.254/24", "dev", &outside]);
        ip(&["link", "set", &outside, "up"]);
        for n in 1..=hosts {
            let host = this.namespace(&format!("ath{n}"));
            ip(&["netns", "add", &host]);
            ip(&["-n", &host, "link", "set", "lo", "up"]);
            let port = format!("h{n}");
            ip(&["-n", &host, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &host, "addr", "add", &format!("198.19.255.{n}/24"), "dev", "eth0"]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
        }
        this
    }

    /// Starts `atoll agent` in host `n`'s network namespace (only the network namespace: task
    /// namespaces are mounted under /run/netns, which must stay shared).
    fn start_agent(&mut self, n: u8, master: &str) {
        let data = self.dir.path().join(format!("agent-h{n}"));
        let log = std::fs::File::create(self.dir.path().join(format!("agent-h{n}.log"))).unwrap();
        let mut command = self.in_host(n);
        command
            .args(["agent", "--master", master, "--listen", &format!("198.19.255.{n}:5051")])
            .args(["--advertise-ip", &format!("198.19.255.{n}"), "--container-networking"])
            .args(["--attributes", &format!("host:h{n}"), "--resources", &test_resources("")])
            .arg("--data-dir")
            .arg(&data)
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().expect("atoll agent");
        self.agents.push((format!("ath{n}"), child, data));
    }

    /// Starts `atoll dns` in host `n`: it answers on that host's bridge gateway, port 53,
    /// where the host's container tasks resolve names.
    fn start_dns(&mut self, n: u8, master: &str) {
        let data = self.dir.path().join(format!("dns-h{n}"));
        let log = std::fs::File::create(self.dir.path().join(format!("dns-h{n}.log"))).unwrap();
        let child = self
            .in_host(n)
            .args(["dns", "--master", master, "--no-forward"])
            .args(["--listen", &format!("198.19.255.{n}:8053"), "--http-listen", &format!("198.19.255.{n}:8123")])
            .arg("--data-dir")
            .arg(&data)
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("atoll dns");
        self.others.push(child);
    }

    /// `atoll` run in host `n`'s network namespace only: the mount namespace stays the
    /// machine's, so the task namespaces the agent mounts under /run/netns are seen by all.
    fn in_host(&self, n: u8) -> Command {
        let netns = std::fs::File::open(format!("/run/netns/{}", self.namespace(&format!("ath{n}")))).unwrap();
        let mut command = Command::new(atoll_bin());
        // SAFETY: setns on an fd opened before the fork is async-signal-safe; the File moves
        // into the closure, so the fd stays open until the command is dropped.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for mut child in std::mem::take(&mut self.others) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (n, (_, mut child, data)) in std::mem::take(&mut self.agents).into_iter().enumerate() {
            let _ = child.kill();
            let _ = child.wait();
            // The agent's cleanup must run where its bridge and veths are.
            let _ = self
                .in_host(n as u8 + 1)
                .args(["agent", "--cleanup", "--master", "http://127.0.0.1:9"])
                .arg("--data-dir")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip").args(["link", "del", &format!("atm{}", self.tag)]).status();
        for name in ["ath1", "ath2", "ath3", "atsw"] {
            let _ = Command::new("ip").args(["netns", "del", &self.namespace(name)]).stderr(Stdio::null()).status();
        }
    }
}

fn app_on(id: &str, host: &str, cmd: &str, health: serde_json::Value) -> serde_json::Value {
    json!({
        "id": id,
        "cmd": cmd,
        "cpus": 0.05,
        "mem": 64,
        "networks": [{ "mode": "container", "name": "atoll" }],
        "container": { "type": "MESOS", "portMappings": [{ "containerPort": 8080, "name": "http" }] },
        "constraints": [["host", "CLUSTER", host]],
        "healthChecks": [health],
    })
}

#[tokio::test]
async fn a_task_on_one_host_reaches_a_task_on_another_by_its_own_address() {
    if !require_root("the multi-host network test") {
        return;
    }
    let mut hosts = Hosts::build(2);
    let cluster = Cluster::start_master_only("198.19.255.254").await.unwrap();
    for n in 1..=2 {
        hosts.start_agent(n, &cluster.master_url());
    }
    hosts.start_dns(2, &cluster.master_url());
    let agents = wait_for("both agents with a subnet each", LONG, async || {
        let nodes = cluster.get("/v1/nodes").await?;
        let ready = nodes.as_array().map(|n| {
            n.iter()
                .filter(|a| a["state"] == "ACTIVE" && a["subnets"].as_array().is_some_and(|s| !s.is_empty()))
                .count()
        });
        Ok((ready == Some(2)).then_some(nodes))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    let subnets: Vec<&str> =
        agents.as_array().unwrap().iter().map(|a| a["subnets"][0]["network"].as_str().unwrap()).collect();
    assert_ne!(subnets[0], subnets[1], "each agent has a subnet of its own");

    // The server: http.server on its own address, port 8080, on host 1.
    let server = app_on(
        "/server",
        "h1",
        "touch ok; exec python3 -m http.server 8080",
        json!({ "protocol": "MESOS_HTTP", "path": "/ok", "portIndex": 0, "intervalSeconds": 0.5, "gracePeriodSeconds": 60, "delaySeconds": 0 }),
    );
    let (status, body) = cluster.post("/v2/apps", &server).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let server_ip = wait_for("the server to be healthy", LONG, async || {
        let app = cluster.get("/v2/apps/server").await?;
        let ip = app["app"]["tasks"][0]["ipAddresses"][0]["ipAddress"].as_str().map(str::to_owned);
        Ok((app["app"]["tasksHealthy"] == 1).then_some(ip).flatten())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    assert!(server_ip.starts_with("198.18."), "its own address from the pool: {server_ip}");
    let server_node = cluster.get("/v2/apps/server").await.unwrap()["app"]["tasks"][0]["slaveId"].clone();

    // The client, on host 2: healthy only while it can fetch the server's page across hosts.
    let fetch = format!(
        "python3 -c \"import urllib.request; urllib.request.urlopen('http://{server_ip}:8080/ok', timeout=2)\""
    );
    let client = app_on(
        "/client",
        "h2",
        "exec sleep 1000",
        json!({ "protocol": "COMMAND", "command": { "value": fetch }, "intervalSeconds": 0.5, "gracePeriodSeconds": 60, "maxConsecutiveFailures": 0, "delaySeconds": 0 }),
    );
    let (status, body) = cluster.post("/v2/apps", &client).await.unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for("the client to reach the server across hosts", LONG, async || {
        let app = cluster.get("/v2/apps/client").await?;
        Ok((app["app"]["tasksHealthy"] == 1).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    let client_node = cluster.get("/v2/apps/client").await.unwrap()["app"]["tasks"][0]["slaveId"].clone();
    assert_ne!(server_node, client_node, "the two tasks run on different hosts");

    // And by name, through host 2's DNS answering on its bridge gateway (where container
    // tasks' resolv.conf points): server.marathon.mesos is the server's own address.
    let by_name = "python3 -c \"import urllib.request; urllib.request.urlopen('http://server.marathon.mesos:8080/ok', timeout=2)\"";
    let named = app_on(
        "/named",
        "h2",
        "exec sleep 1000",
        json!({ "protocol": "COMMAND", "command": { "value": by_name }, "intervalSeconds": 0.5, "gracePeriodSeconds": 60, "maxConsecutiveFailures": 0, "delaySeconds": 0 }),
    );
    let (status, body) = cluster.post("/v2/apps", &named).await.unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for("a container task to reach the server by name", LONG, async || {
        let app = cluster.get("/v2/apps/named").await?;
        Ok((app["app"]["tasksHealthy"] == 1).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));

    // Leases are visible to the master.
    let leases = cluster.get("/v1/ipam/leases").await.unwrap();
    assert_eq!(leases.as_array().unwrap().len(), 3, "{leases}");
}
