//! Named VIPs: the master assigns each name one stable address, every consumer sees the same
//! services; DNS names them under l4lb.thisdcos.directory.

use std::time::Duration;

use atoll_tests::{Cluster, wait_for};
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_vip_label_gets_an_address_backends_and_a_name() {
    let mut cluster = Cluster::start().await.unwrap();
    cluster.start_dns(&[]).await.unwrap();
    let app = json!({
        "id": "/web",
        "instances": 2,
        "cmd": "exec sleep 1000",
        "cpus": 0.05,
        "mem": 16,
        "portDefinitions": [{ "port": 0, "name": "http", "labels": { "VIP_0": "/web:80" } }],
    });
    let (status, body) = cluster.post("/v2/apps", &app).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let vip = wait_for("the VIP with two backends", LONG, async || {
        let vips = cluster.get("/v1/vips").await?;
        Ok(vips.as_array().and_then(|v| v.first().cloned()).filter(|v| v["healthy"] == 2))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    assert_eq!(vip["name"], "web.marathon");
    assert_eq!(vip["port"], 80);
    assert_eq!(vip["protocol"], "tcp");
    let address = vip["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("198.19."), "{address}");
    let tasks = cluster.get("/v2/apps/web").await.unwrap()["app"]["tasks"].clone();
    let mut ports: Vec<u64> = tasks.as_array().unwrap().iter().map(|t| t["ports"][0].as_u64().unwrap()).collect();
    let mut backend_ports: Vec<u64> =
        vip["backends"].as_array().unwrap().iter().map(|b| b["port"].as_u64().unwrap()).collect();
    ports.sort();
    backend_ports.sort();
    assert_eq!(ports, backend_ports, "backends are the tasks' host ports");

    let answer = wait_for("web.marathon.l4lb.thisdcos.directory to resolve", LONG, async || {
        let answer = cluster.dns_query("web.marathon.l4lb.thisdcos.directory.", "A", false).await?;
        Ok((!answer.answers.is_empty()).then_some(answer))
    })
    .await
    .unwrap();
    assert_eq!(answer.values(), vec![address.clone()]);

    // The same address after a master restart, and in the CLI.
    cluster.kill_master();
    cluster.start_master().await.unwrap();
    let output = cluster.run_atoll(&["vip", "list", "--json"], LONG).await.unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed[0]["address"], address.as_str());
    for field in ["name", "framework", "address", "port", "protocol", "backends"] {
        assert!(listed[0].get(field).is_some(), "vip list --json lacks {field}");
    }
    let output = cluster.run_atoll(&["vip", "show", "web"], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(&address));
}

/// `atoll dns --mesos-master` (for a Mesos cluster, where no master assigns VIP addresses)
/// names a VIP at the address `atoll lb --mesos-master` hashes it to; followed here through an
/// Atoll master's operator API, the path a real Mesos master takes.
#[tokio::test]
async fn following_a_mesos_master_dns_names_vips_at_their_hashed_address() {
    use atoll_lb_core::vips::{DEFAULT_VIP_POOL, VipName, hashed_assignments};
    let mut cluster = Cluster::start().await.unwrap();
    let master = cluster.master_url();
    cluster.start_dns(&["--mesos-master", &master]).await.unwrap();
    let app = json!({
        "id": "/shop/web",
        "instances": 1,
        "cmd": "exec sleep 1000",
        "cpus": 0.05,
        "mem": 16,
        "portDefinitions": [{ "port": 0, "name": "http", "labels": { "VIP_0": "/shop/web:80" } }],
    });
    let (status, body) = cluster.post("/v2/apps", &app).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let names = [VipName::new("marathon", "shop/web")].into();
    let hashed = hashed_assignments(DEFAULT_VIP_POOL, &names).assigned[&VipName::new("marathon", "shop/web")];
    let answer = wait_for("shopweb.marathon.l4lb.thisdcos.directory to resolve", LONG, async || {
        let answer = cluster.dns_query("shopweb.marathon.l4lb.thisdcos.directory.", "A", false).await?;
        Ok((!answer.answers.is_empty()).then_some(answer))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    assert_eq!(answer.values(), vec![hashed.to_string()]);

    // The name goes with the app's last task.
    let removed = reqwest::Client::new().delete(format!("{master}/v2/apps/shop/web")).send().await.unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    wait_for("the name to go", LONG, async || {
        let answer = cluster.dns_query("shopweb.marathon.l4lb.thisdcos.directory.", "A", false).await?;
        Ok(answer.answers.is_empty().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
}
