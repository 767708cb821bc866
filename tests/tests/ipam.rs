//! IP pools for network admins through the master's API and the CLI.

use std::time::Duration;

use atoll_tests::{Cluster, wait_for};
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn admins_manage_pools_and_agents_get_subnets() {
    let cluster = Cluster::start().await.unwrap();
    // A new cluster starts with pool `atoll`, and the agent holds a /24 of it.
    let pools = wait_for("the agent's subnet", LONG, async || {
        let pools = cluster.get("/v1/ipam/pools").await?;
        Ok((pools[0]["subnets_leased"] == 1).then_some(pools))
    })
    .await
    .unwrap();
    assert_eq!(pools[0]["pool"]["name"], "atoll");
    assert_eq!(pools[0]["pool"]["cidrs"], json!(["198.18.0.0/16"]));
    let agent = cluster.wait_agent_active().await.unwrap();
    assert_eq!(agent["subnets"][0]["network"], "198.18.0.0/24", "{agent}");

    let before = cluster.get("/v1/state").await.unwrap()["index"].as_u64().unwrap();
    for (spec, status, needle) in [
        (json!({ "name": "web", "cidrs": ["198.18.0.0/17"] }), 400, "overlaps pool atoll"),
        (json!({ "name": "bad", "cidrs": ["198.18.0.1/16"] }), 400, "198.18.0.1/16"),
        (json!({ "name": "atoll", "cidrs": ["fd00:a7::/48"] }), 409, "atoll"),
        (json!({ "name": "typo", "cidr": ["fd00:a7::/48"] }), 400, "cidr"),
    ] {
        let (got, body) = cluster.post("/v1/ipam/pools", &spec).await.unwrap();
        assert_eq!(got, status, "{spec} → {body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{spec} → {body}");
    }
    assert_eq!(cluster.get("/v1/state").await.unwrap()["index"].as_u64().unwrap(), before, "nothing changed");

    let output = cluster.run_atoll(&["ipam", "pool", "add", "v6", "fd00:a7::/48"], LONG).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let node = cluster.wait_agent_active().await.unwrap();
    let subnets: Vec<&str> =
        node["subnets"].as_array().unwrap().iter().map(|s| s["network"].as_str().unwrap()).collect();
    assert!(subnets.contains(&"fd00:a7::/64"), "{subnets:?}");

    let output = cluster.run_atoll(&["ipam", "reserve", "atoll", "198.18.0.9"], LONG).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = cluster.run_atoll(&["ipam", "pool", "show", "atoll"], LONG).await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("198.18.0.0/24") && text.contains("198.18.0.9"), "{text}");
    let output = cluster.run_atoll(&["ipam", "leases", "--json"], LONG).await.unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(), json!([]));

    let output = cluster.run_atoll(&["ipam", "pool", "remove", "v6"], LONG).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = cluster.run_atoll(&["ipam", "pool", "remove", "v6"], LONG).await.unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("v6"), "names the pool");
    let events = cluster.get("/v1/state").await.unwrap();
    assert_eq!(events["pools"].as_array().unwrap().len(), 1);
}
