//! `atoll lb` in a whole cluster (root): a real master, agent, DNS server and load balancer,
//! backend tasks launched through the Marathon API, clients reaching them by named VIP — all in
//! a network namespace of the test's own, the programs attached to a cgroup of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_tests::lb::{BACKEND, Lb, active_backends, draining_backends, in_private_netns};
use atoll_tests::{Cluster, require_root, wait_for};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

/// Tasks become backends once their health check passes, i.e. once they listen.
fn tcp_health_check() -> Value {
    json!([{ "protocol": "MESOS_TCP", "portIndex": 0, "gracePeriodSeconds": 30, "intervalSeconds": 1,
             "timeoutSeconds": 2, "maxConsecutiveFailures": 3 }])
}

/// An app of `instances` backend tasks behind the named VIP `/<name>:80` (`udp,tcp`).
fn backend_app(name: &str, instances: u32) -> Value {
    json!({
        "id": format!("/{name}"),
        "instances": instances,
        "cmd": format!("exec python3 {BACKEND}"),
        "cpus": 0.05,
        "mem": 32,
        "taskKillGracePeriodSeconds": 60,
        "healthChecks": tcp_health_check(),
        "portDefinitions": [{ "port": 0, "protocol": "udp,tcp", "labels": { "VIP_0": format!("/{name}:80") } }],
    })
}

async fn deploy(cluster: &Cluster, app: &Value) {
    let (status, body) = cluster.post("/v2/apps", app).await.unwrap();
    assert_eq!(status, 201, "{body}");
}

fn counts(result: &Value) -> BTreeMap<String, u64> {
    result["ids"]
        .as_object()
        .map_or_else(BTreeMap::new, |ids| ids.iter().map(|(id, n)| (id.clone(), n.as_u64().unwrap_or(0))).collect())
}

/// Each backend's count is within `slack` of an equal share of `total` (Maglev gives equal
/// weights equal shares to within 1%; the rest is the randomness of the per-connection slot).
fn assert_even(what: &str, counts: &BTreeMap<String, u64>, backends: &[String], total: u64, slack: f64) {
    let mut reached: Vec<&String> = counts.keys().collect();
    reached.sort();
    let mut expected: Vec<&String> = backends.iter().collect();
    expected.sort();
    assert_eq!(reached, expected, "{what}: every backend and only the backends are reached: {counts:?}");
    let share = total as f64 / backends.len() as f64;
    for (id, n) in counts {
        let n = *n as f64;
        assert!(
            (n - share).abs() <= share * slack,
            "{what}: {id} got {n} of {total}, expected about {share:.0}: {counts:?}"
        );
    }
}

#[test]
fn tcp_and_udp_reach_every_backend_of_a_named_vip_in_maglev_proportion_and_curl_by_name() {
    if !require_root("the lb tests (BPF, cgroups, network namespaces)") {
        return;
    }
    in_private_netns(async || {
        let mut cluster = Cluster::start().await.unwrap();
        // The namespace is the test's own, so its DNS server can take port 53, where the
        // resolver of `curl` below looks.
        cluster.dns_port = 53;
        cluster.start_dns(&[]).await.unwrap();
        let mut lb = Lb::new(&cluster).unwrap();
        lb.start().await.unwrap();
        deploy(&cluster, &backend_app("echo", 3)).await;
        deploy(
            &cluster,
            &json!({
                "id": "/web",
                "instances": 2,
                "cmd": "exec python3 -m http.server --bind 127.0.0.1 $PORT0",
                "cpus": 0.05,
                "mem": 32,
                "healthChecks": tcp_health_check(),
                "portDefinitions": [{ "port": 0, "labels": { "VIP_0": "/web:8080" } }],
            }),
        )
        .await;

        let tcp = lb.wait_service(80, "tcp", 3).await.unwrap();
        let udp = lb.wait_service(80, "udp", 3).await.unwrap();
        let vip = tcp["address"].as_str().unwrap().to_owned();
        assert!(vip.starts_with("198.19."), "{tcp}");
        assert_eq!(udp["address"], vip.as_str(), "one VIP for both protocols");
        assert_eq!(tcp["names"], json!(["echo.marathon"]));
        let backends = active_backends(&tcp);

        // TCP: a random Maglev slot per connection.
        let result = lb.client(&["tcp", &vip, "80", "600"]).await.unwrap();
        assert_eq!(result["errors"], 0, "{result}");
        assert_eq!(result["peer_bad"], 0, "getpeername shows the VIP: {result}");
        assert_even("600 TCP connections", &counts(&result), &backends, 600, 0.4);

        // UDP: one socket keeps its backend, replies come from the VIP; many sockets spread.
        let result = lb.client(&["udp", &vip, "80", "20"]).await.unwrap();
        let ids: Vec<&Value> = result["unconnected"]["ids"].as_array().unwrap().iter().collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "one unconnected socket, one backend: {result}");
        assert!(backends.iter().any(|b| ids[0] == b.as_str()), "{result}");
        let vip_port = format!("{vip}:80");
        assert!(
            result["unconnected"]["sources"].as_array().unwrap().iter().all(|s| *s == vip_port.as_str()),
            "replies come from the VIP: {result}"
        );
        assert_eq!(result["connected"]["peer"], vip_port.as_str(), "{result}");
        let connected: Vec<&Value> = result["connected"]["ids"].as_array().unwrap().iter().collect();
        assert!(connected.iter().all(|id| *id == connected[0]), "{result}");
        let result = lb.client(&["udp-spread", &vip, "80", "300"]).await.unwrap();
        assert_even("300 UDP sockets", &counts(&result), &backends, 300, 0.5);

        // The kernel's counters, per VIP, on /metrics.
        let metrics = lb.metrics().await.unwrap();
        let connections = metrics
            .lines()
            .find(|l| {
                l.starts_with("atoll_lb_vip_connections_total{")
                    && l.contains(&format!("address=\"{vip}\""))
                    && l.contains("protocol=\"tcp\"")
            })
            .unwrap_or_else(|| panic!("no connection counter for {vip}/tcp:\n{metrics}"));
        let counted: u64 = connections.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(counted >= 600, "{connections}");
        assert!(metrics.contains("vip=\"echo.marathon\""), "{metrics}");

        // By name: the cluster's DNS answers the VIP name, the VIP takes curl to a backend.
        let web = lb.wait_service(8080, "tcp", 2).await.unwrap();
        let web_vip = web["address"].as_str().unwrap().to_owned();
        let name = "web.marathon.l4lb.thisdcos.directory";
        wait_for("the VIP name in DNS", LONG, async || {
            let answer = cluster.dns_query(&format!("{name}."), "A", false).await?;
            Ok((answer.values() == vec![web_vip.clone()]).then_some(()))
        })
        .await
        .unwrap();
        let resolv = cluster.dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n").unwrap();
        // curl's own resolver (glibc, /etc/resolv.conf) in a mount namespace of its own where
        // resolv.conf names the cluster's DNS server.
        let output = lb
            .command("unshare")
            .unwrap()
            .args(["--mount", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/resolv.conf && exec curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{remote_ip}:%{remote_port}' "$2""#)
            .arg("sh")
            .arg(&resolv)
            .arg(format!("http://{name}:8080/"))
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout), format!("200 {web_vip}:8080"));
    });
}

#[test]
fn a_killed_backend_gets_no_new_connections_and_keeps_its_own() {
    if !require_root("the lb tests (BPF, cgroups, network namespaces)") {
        return;
    }
    in_private_netns(async || {
        let cluster = Cluster::start().await.unwrap();
        let mut lb = Lb::new(&cluster).unwrap();
        lb.start().await.unwrap();
        deploy(&cluster, &backend_app("drain", 3)).await;
        let tcp = lb.wait_service(80, "tcp", 3).await.unwrap();
        let vip = tcp["address"].as_str().unwrap().to_owned();

        let mut held = lb.interactive(&["hold", &vip, "80"]).unwrap();
        let first = held.next(LONG).await.unwrap();
        let victim = first["id"].as_str().unwrap().to_owned();
        assert_eq!(first["peer"], format!("{vip}:80"));

        // The task ignores SIGTERM: it stays KILLING for its 60 s grace period, draining.
        let (status, body) = cluster.post(&format!("/v1/tasks/{victim}/kill"), &json!({})).await.unwrap();
        assert_eq!(status, 202, "{body}");
        let drained = wait_for("the killed task to drain in the lb", LONG, async || {
            let services = lb.services().await?;
            Ok(services
                .into_iter()
                .find(|s| s["port"] == 80 && s["protocol"] == "tcp" && draining_backends(s) == vec![victim.clone()]))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", lb.logs(), cluster.logs()));
        let task = cluster.task(&victim).await.unwrap();
        assert_eq!(task["state"], "TASK_KILLING", "{task}");

        held.send("tcp 300").await.unwrap();
        let result = held.next(LONG).await.unwrap();
        assert_eq!(result["errors"], 0, "{result}");
        let reached = counts(&result);
        assert!(!reached.contains_key(&victim), "a draining backend got new connections: {reached:?}");
        let active = active_backends(&drained);
        assert!(active.iter().all(|b| reached.contains_key(b)), "{reached:?} vs {active:?}");

        held.send("ping").await.unwrap();
        let echo = held.next(LONG).await.unwrap();
        assert_eq!(echo["echo"], "ping", "the held connection to the draining backend still works: {echo}");
        held.send("quit").await.unwrap();
    });
}

#[test]
fn restarting_the_lb_keeps_vip_connections_working_and_it_continues_with_its_maps() {
    if !require_root("the lb tests (BPF, cgroups, network namespaces)") {
        return;
    }
    in_private_netns(async || {
        let cluster = Cluster::start().await.unwrap();
        let mut lb = Lb::new(&cluster).unwrap();
        lb.start().await.unwrap();
        let mut app = backend_app("steady", 2);
        deploy(&cluster, &app).await;
        let tcp = lb.wait_service(80, "tcp", 2).await.unwrap();
        let vip = tcp["address"].as_str().unwrap().to_owned();
        // Past the plan's save interval: the daemon's state is on disk.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let mut traffic = lb.interactive(&["loop", &vip, "80"]).unwrap();
        assert_eq!(traffic.next(LONG).await.unwrap(), "ready");
        // The hardest stop: no chance to save or clean anything.
        lb.stop(libc::SIGKILL);
        tokio::time::sleep(Duration::from_secs(1)).await;
        lb.start().await.unwrap();
        wait_for("the restarted lb to follow the master", LONG, async || {
            Ok(lb.metrics().await?.lines().any(|l| l == "atoll_lb_connected 1").then_some(()))
        })
        .await
        .unwrap();
        assert!(lb.logs().contains("continuing with the maps the kernel serves"), "{}", lb.logs());

        // The new daemon owns the maps: a third backend gets traffic.
        app["instances"] = json!(3);
        let response =
            cluster.http.put(format!("{}/v2/apps/steady", cluster.master_url())).json(&app).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
        let grown = lb.wait_service(80, "tcp", 3).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        traffic.send("stop").await.unwrap();
        let result = traffic.next(LONG).await.unwrap();
        assert_eq!(result["errors"], 0, "connections failed across the restart: {result}\n{}", lb.logs());
        let reached = counts(&result);
        for backend in active_backends(&grown) {
            assert!(reached.contains_key(&backend), "{backend} was not reached: {result}");
        }
    });
}

#[test]
fn following_the_mesos_operator_api_serves_named_vips_at_hashed_addresses() {
    if !require_root("the lb tests (BPF, cgroups, network namespaces)") {
        return;
    }
    in_private_netns(async || {
        let cluster = Cluster::start().await.unwrap();
        // The drop-in for dcos-l4lb: no Atoll master behind it, only Mesos's operator API
        // (which the Atoll master also speaks), so addresses come from hashing the names.
        let mut lb = Lb::new_mesos(&cluster).unwrap();
        lb.start().await.unwrap();
        deploy(&cluster, &backend_app("mesosvip", 2)).await;
        let tcp = lb.wait_service(80, "tcp", 2).await.unwrap();
        let vip = tcp["address"].as_str().unwrap().to_owned();
        assert!(vip.starts_with("198.19."), "{tcp}");
        assert_eq!(tcp["names"], json!(["mesosvip.marathon"]));
        let result = lb.client(&["tcp", &vip, "80", "200"]).await.unwrap();
        assert_eq!(result["errors"], 0, "{result}");
        assert_even("200 TCP connections", &counts(&result), &active_backends(&tcp), 200, 0.5);
    });
}
