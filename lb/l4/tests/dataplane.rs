//! The layer-4 dataplane on the real kernel (root): programs attached to a cgroup of the
//! test's own, clients in that cgroup and in a network namespace of the test's own, backends
//! on that namespace's loopback. VIPs are in 198.19.0.0/17; nothing leaves the namespaces.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use atoll_lb_l4::{Dataplane, ServiceValue, map_names};
use serde_json::Value;
use support::{
    Client, Sandbox, Servers, even_table, in_netns, ip, require_root, run_client, tcp_backend, tcp_key, udp_backend,
    udp_key,
};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn counts(answer: &Value) -> BTreeMap<String, u64> {
    answer["ids"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default()
}

/// TCP backends `b1..=bN` on 127.0.0.1:8001.. of `ns`, backend ids 1..=N.
fn tcp_backends(dp: &mut Dataplane, servers: &mut Servers, ns: &str, n: u16) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for i in 1..=n {
        servers.tcp(Some(ns), addr(LOCALHOST, 8000 + i), &format!("b{i}"))?;
        dp.upsert_backend(u32::from(i), tcp_backend(LOCALHOST, 8000 + i))?;
        ids.push(u32::from(i));
    }
    Ok(ids)
}

#[test]
fn tcp_reaches_backends_in_maglev_proportion() -> Result<()> {
    if !require_root("tcp_reaches_backends_in_maglev_proportion") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let ns = sandbox.netns("ew")?;
    let mut servers = Servers::default();
    let mut dp = Dataplane::start(&sandbox.options())?;
    ensure!(!dp.report().maps_reused && dp.report().links_created.len() == 4, "{:?}", dp.report());
    let ids = tcp_backends(&mut dp, &mut servers, &ns, 3)?;
    let m = dp.config().maglev_size;
    dp.write_table(0, &even_table(m, &ids))?;
    dp.upsert_service(tcp_key(VIP, 80), ServiceValue { table: 0, count: 3, rev_nat: 7, flags: 0 })?;

    let n = 600;
    let answer = run_client(Some(&sandbox.cgroup), Some(&ns), &["tcp", &VIP.to_string(), "80", &n.to_string()])?;
    ensure!(answer["errors"] == 0 && answer["peer_bad"] == 0, "client: {answer}");
    let counts = counts(&answer);
    ensure!(counts.keys().cloned().collect::<Vec<_>>() == ["b1", "b2", "b3"], "{counts:?}");
    // Each backend has a third of the slots: expect n/3 each; a random slot per connection
    // puts a binomial spread of ±12 around it, so ±40% is far outside chance.
    for (backend, count) in &counts {
        ensure!((120..=280).contains(count), "{backend} got {count} of {n}: {counts:?}");
    }
    let stats = dp.stats()?;
    ensure!(stats.get(&7).map(|s| s.connections) == Some(n), "{stats:?}");

    // A port or protocol that is not a service is left alone: nothing listens there.
    let answer = run_client(Some(&sandbox.cgroup), Some(&ns), &["connect", &VIP.to_string(), "81"])?;
    ensure!(answer.get("error").is_some(), "a non-service port reached something: {answer}");
    Ok(())
}

#[test]
fn udp_socket_keeps_its_backend_and_sees_the_vip() -> Result<()> {
    if !require_root("udp_socket_keeps_its_backend_and_sees_the_vip") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let ns = sandbox.netns("udp")?;
    let mut servers = Servers::default();
    let mut dp = Dataplane::start(&sandbox.options())?;
    let mut ids = Vec::new();
    for i in 1..=3u16 {
        servers.udp(Some(&ns), addr(LOCALHOST, 5300 + i), &format!("u{i}"))?;
        dp.upsert_backend(u32::from(i), udp_backend(LOCALHOST, 5300 + i))?;
        ids.push(u32::from(i));
    }
    dp.write_table(3, &even_table(dp.config().maglev_size, &ids))?;
    dp.upsert_service(udp_key(VIP, 53), ServiceValue { table: 3, count: 3, rev_nat: 9, flags: 0 })?;

    let vip = VIP.to_string();
    let answer = run_client(Some(&sandbox.cgroup), Some(&ns), &["udp", &vip, "53", "40"])?;
    let unconnected = &answer["unconnected"];
    let first = unconnected["ids"][0].as_str().context("no reply")?.to_string();
    ensure!(unconnected["ids"].as_array().is_some_and(|a| a.len() == 40 && a.iter().all(|i| i == &first)), "{answer}");
    ensure!(
        unconnected["sources"].as_array().is_some_and(|a| a.iter().all(|s| s == &format!("{VIP}:53"))),
        "replies must come from the VIP (recvmsg4): {answer}"
    );
    let connected = &answer["connected"];
    ensure!(connected["peer"] == format!("{VIP}:53"), "getpeername must return the VIP: {answer}");
    let first = connected["ids"][0].as_str().context("no reply")?.to_string();
    ensure!(connected["ids"].as_array().is_some_and(|a| a.iter().all(|i| i == &first)), "{answer}");

    // Different sockets spread over the backends.
    let answer = run_client(Some(&sandbox.cgroup), Some(&ns), &["udp-spread", &vip, "53", "60"])?;
    let counts = counts(&answer);
    ensure!(counts.len() == 3 && counts.values().sum::<u64>() == 60, "{answer}");
    let stats = dp.stats()?;
    // 40 + 60 datagrams through sendmsg4, one connect() (the connected socket).
    ensure!(stats.get(&9).is_some_and(|s| s.packets == 100 && s.connections == 1), "{stats:?}");
    Ok(())
}

#[test]
fn removed_backend_gets_no_new_connections_existing_one_survives() -> Result<()> {
    if !require_root("removed_backend_gets_no_new_connections_existing_one_survives") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let ns = sandbox.netns("drain")?;
    let mut servers = Servers::default();
    let mut dp = Dataplane::start(&sandbox.options())?;
    let ids = tcp_backends(&mut dp, &mut servers, &ns, 2)?;
    let m = dp.config().maglev_size;
    dp.write_table(0, &even_table(m, &ids))?;
    let key = tcp_key(VIP, 443);
    dp.upsert_service(key, ServiceValue { table: 0, count: 2, rev_nat: 1, flags: 0 })?;

    let mut held = Client::spawn(Some(&sandbox.cgroup), Some(&ns), &["hold", &VIP.to_string(), "443"])?;
    let first = held.line()?;
    ensure!(first["peer"] == format!("{VIP}:443"), "{first}");
    let held_id = first["id"].as_str().context("no id")?.to_string();
    let (gone, kept) = if held_id == "b1" { (1, 2) } else { (2, 1) };

    // The control plane drains `gone`: a new table without it, then the switch.
    dp.write_table(1, &even_table(m, &[kept]))?;
    dp.upsert_service(key, ServiceValue { table: 1, count: 1, rev_nat: 1, flags: 0 })?;

    held.send("tcp 100")?;
    let answer = held.line()?;
    ensure!(answer["errors"] == 0, "{answer}");
    ensure!(counts(&answer) == BTreeMap::from([(format!("b{kept}"), 100)]), "b{gone} still gets connections: {answer}");
    held.send("ping")?;
    let echo = held.line()?;
    ensure!(echo["echo"] == "ping" && echo["peer"] == format!("{VIP}:443"), "the held connection broke: {echo}");

    // Once terminal, the backend goes too; the held connection is a plain socket and lives on.
    dp.remove_backend(gone)?;
    held.send("ping")?;
    ensure!(held.line()?["echo"] == "ping");
    held.send("quit")?;
    Ok(())
}

#[test]
fn restart_keeps_new_connections_working() -> Result<()> {
    if !require_root("restart_keeps_new_connections_working") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let ns = sandbox.netns("restart")?;
    let mut servers = Servers::default();
    let options = sandbox.options();
    let mut dp = Dataplane::start(&options)?;
    let ids = tcp_backends(&mut dp, &mut servers, &ns, 2)?;
    dp.write_table(0, &even_table(options.maglev_size, &ids))?;
    let key = tcp_key(VIP, 80);
    let value = ServiceValue { table: 0, count: 2, rev_nat: 3, flags: 0 };
    dp.upsert_service(key, value)?;
    // A pin of another (older) map version, as an upgraded loader finds it.
    let stale = sandbox.pin_dir.join("atoll_cfg_v0");
    aya::maps::MapData::from_pin(sandbox.pin_dir.join(map_names::CONFIG))?.pin(&stale)?;

    let mut client = Client::spawn(Some(&sandbox.cgroup), Some(&ns), &["loop", &VIP.to_string(), "80"])?;
    ensure!(client.line()? == "ready");
    for round in 0..5 {
        // `atoll lb` exits (its handles close; the pins keep everything attached) and a new one
        // starts on the same pins while the client keeps connecting.
        drop(dp);
        let started = Instant::now();
        dp = Dataplane::start(&options)?;
        let report = dp.report().clone();
        eprintln!("restart {round}: {:?} in {:?}", report, started.elapsed());
        ensure!(report.maps_reused && report.links_updated.len() == 4 && report.links_created.is_empty(), "{report:?}");
        ensure!(round > 0 || report.removed == ["atoll_cfg_v0"], "{report:?}");
        ensure!(dp.services()? == vec![(key, value)], "the services did not survive the restart");
        ensure!(dp.table(0)? == even_table(options.maglev_size, &ids), "the table did not survive the restart");
    }
    ensure!(!stale.exists());
    client.send("stop")?;
    let answer = client.line()?;
    let counts = counts(&answer);
    ensure!(answer["errors"] == 0, "connections failed across restarts: {answer}");
    ensure!(counts.len() == 2 && counts.values().sum::<u64>() == answer["count"].as_u64().unwrap_or(0), "{answer}");
    eprintln!("{} connections across 5 restarts, none failed", answer["count"]);

    // Other options (another Maglev size): the maps are replaced, the links kept.
    drop(dp);
    let mut other = options.clone();
    other.maglev_size = 509;
    let dp = Dataplane::start(&other)?;
    ensure!(!dp.report().maps_reused && dp.report().maps_replaced.len() == map_names::ALL.len(), "{:?}", dp.report());
    ensure!(dp.services()?.is_empty() && dp.report().links_updated.len() == 4, "{:?}", dp.report());
    Ok(())
}

#[test]
fn cleanup_detaches_and_the_blackhole_catches_the_rest() -> Result<()> {
    if !require_root("cleanup_detaches_and_the_blackhole_catches_the_rest") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let ns = sandbox.netns("bh")?;
    let pool: ipnetwork::IpNetwork = "198.19.0.0/17".parse()?;
    let route = |ns: &str| -> Result<String> {
        let out = std::process::Command::new("ip").args(["-n", ns, "route", "show", "type", "blackhole"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    in_netns(Some(&ns), move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            atoll_lb_l4::ensure_blackhole(pool).await?;
            atoll_lb_l4::ensure_blackhole(pool).await // idempotent
        })?;
        anyhow::Ok(())
    })??;
    ensure!(route(&ns)?.contains("blackhole 198.19.0.0/17"), "{}", route(&ns)?);

    let mut servers = Servers::default();
    let mut dp = Dataplane::start(&sandbox.options())?;
    let ids = tcp_backends(&mut dp, &mut servers, &ns, 1)?;
    dp.write_table(0, &even_table(dp.config().maglev_size, &ids))?;
    let key = tcp_key(VIP, 80);
    dp.upsert_service(key, ServiceValue { table: 0, count: 1, rev_nat: 1, flags: 0 })?;
    let vip = VIP.to_string();
    ensure!(run_client(Some(&sandbox.cgroup), Some(&ns), &["connect", &vip, "80"])?["id"] == "b1");

    // No backend taking connections: the connection is left alone and meets the blackhole.
    dp.upsert_service(key, ServiceValue { table: u32::MAX, count: 0, rev_nat: 1, flags: 0 })?;
    let answer = run_client(Some(&sandbox.cgroup), Some(&ns), &["connect", &vip, "80"])?;
    ensure!(answer["error"] == "EINVAL", "expected the blackhole's EINVAL: {answer}");
    dp.upsert_service(key, ServiceValue { table: 0, count: 1, rev_nat: 1, flags: 0 })?;
    ensure!(run_client(Some(&sandbox.cgroup), Some(&ns), &["connect", &vip, "80"])?["id"] == "b1");

    // `atoll lb --cleanup` while a loader still holds its handles: detached all the same.
    let report = Dataplane::cleanup(&sandbox.options())?;
    ensure!(report.links_detached.len() == 4 && report.unpinned.len() == map_names::ALL.len(), "{report:?}");
    ensure!(report.removed_dir && !sandbox.pin_dir.exists(), "{report:?}");
    let answer = run_client(Some(&sandbox.cgroup), Some(&ns), &["connect", &vip, "80"])?;
    ensure!(answer["error"] == "EINVAL", "still redirected after cleanup: {answer}");
    drop(dp);

    in_netns(Some(&ns), move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            atoll_lb_l4::remove_blackhole(pool).await?;
            atoll_lb_l4::remove_blackhole(pool).await // missing is fine
        })?;
        anyhow::Ok(())
    })??;
    ensure!(route(&ns)?.is_empty(), "{}", route(&ns)?);
    Ok(())
}

#[test]
fn north_south_through_the_uplink_of_a_node() -> Result<()> {
    if !require_root("north_south_through_the_uplink_of_a_node") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let host = sandbox.netns("host")?;
    let node = sandbox.netns("node")?;
    let (host_if, node_if) = (format!("h{}", sandbox.tag), format!("n{}", sandbox.tag));
    ip(&["-n", &host, "link", "add", &host_if, "type", "veth", "peer", "name", &node_if, "netns", &node])?;
    ip(&["-n", &host, "addr", "add", "198.19.255.1/24", "dev", &host_if])?;
    ip(&["-n", &node, "addr", "add", "198.19.255.2/24", "dev", &node_if])?;
    ip(&["-n", &host, "link", "set", &host_if, "up"])?;
    ip(&["-n", &node, "link", "set", &node_if, "up"])?;
    // The client host routes the VIP pool to the node.
    ip(&["-n", &host, "route", "add", "198.19.0.0/17", "via", "198.19.255.2"])?;

    let node_ip = Ipv4Addr::new(198, 19, 255, 2);
    let mut servers = Servers::default();
    servers.tcp(Some(&node), addr(node_ip, 8080), "n1")?;
    servers.tcp(Some(&node), addr(node_ip, 8081), "n2")?;
    servers.udp(Some(&node), addr(node_ip, 5353), "nu")?;

    // The loader runs in the node (the uplink is resolved in the caller's namespace).
    let mut options = sandbox.options();
    options.uplink = Some(node_if.clone());
    let mut dp = in_netns(Some(&node), move || Dataplane::start(&options))??;
    ensure!(dp.report().links_created.iter().filter(|l| l.starts_with("link_tc_")).count() == 2, "{:?}", dp.report());
    dp.upsert_backend(1, tcp_backend(node_ip, 8080))?;
    dp.upsert_backend(2, tcp_backend(node_ip, 8081))?;
    dp.upsert_backend(3, udp_backend(node_ip, 5353))?;
    let m = dp.config().maglev_size;
    dp.write_table(0, &even_table(m, &[1, 2]))?;
    dp.write_table(1, &even_table(m, &[3]))?;
    dp.upsert_service(tcp_key(VIP, 80), ServiceValue { table: 0, count: 2, rev_nat: 21, flags: 0 })?;
    dp.upsert_service(udp_key(VIP, 53), ServiceValue { table: 1, count: 1, rev_nat: 22, flags: 0 })?;

    // The client is in the host namespace only (not in the cgroup: no socket-level help).
    let vip = VIP.to_string();
    let answer = run_client(None, Some(&host), &["tcp", &vip, "80", "40"])?;
    ensure!(answer["errors"] == 0 && answer["peer_bad"] == 0, "{answer}");
    let counts = counts(&answer);
    ensure!(counts.keys().cloned().collect::<Vec<_>>() == ["n1", "n2"], "flows should spread: {answer}");
    let answer = run_client(None, Some(&host), &["udp", &vip, "53", "5"])?;
    ensure!(
        answer["unconnected"]["sources"].as_array().is_some_and(|s| s.iter().all(|s| s == &format!("{VIP}:53"))),
        "replies must carry the VIP: {answer}"
    );
    ensure!(answer["unconnected"]["ids"][0] == "nu" && answer["connected"]["ids"][4] == "nu", "{answer}");
    let stats = dp.stats()?;
    ensure!(stats.get(&21).is_some_and(|s| s.connections == 40 && s.packets >= 40 * 3), "{stats:?}");
    ensure!(stats.get(&22).is_some_and(|s| s.connections == 2 && s.packets == 10), "{stats:?}");

    // A restart of the loader in the node keeps the uplink's links (programs swapped in place).
    let mut options = sandbox.options();
    options.uplink = Some(node_if.clone());
    drop(dp);
    let dp = in_netns(Some(&node), move || Dataplane::start(&options))??;
    ensure!(dp.report().links_updated.len() == 6, "{:?}", dp.report());
    let answer = run_client(None, Some(&host), &["tcp", &vip, "80", "10"])?;
    ensure!(answer["errors"] == 0, "{answer}");
    // Without the uplink option the uplink's links go.
    let options = sandbox.options();
    drop(dp);
    let dp = in_netns(Some(&node), move || Dataplane::start(&options))??;
    ensure!(dp.report().removed.len() == 2, "{:?}", dp.report());
    let answer = run_client(None, Some(&host), &["connect", &vip, "80"])?;
    ensure!(answer.get("error").is_some(), "the VIP is still served without an uplink program: {answer}");
    Ok(())
}

#[test]
fn ten_thousand_services() -> Result<()> {
    if !require_root("ten_thousand_services") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let ns = sandbox.netns("10k")?;
    let mut servers = Servers::default();
    let n: u32 = 10_000;
    let mut options = sandbox.options();
    options.max_services = n;
    options.max_tables = n;
    let mut dp = Dataplane::start(&options)?;
    let ids = tcp_backends(&mut dp, &mut servers, &ns, 4)?;
    let m = options.maglev_size;
    let vip = |i: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + 1 + i);

    // A table per VIP (the worst case: no two VIPs share a backend set), each naming one
    // backend, so that a VIP's answer shows it reached its own table.
    let started = Instant::now();
    for i in 0..n {
        dp.write_table(i, &vec![ids[i as usize % ids.len()]; m as usize])?;
        dp.upsert_service(tcp_key(vip(i), 80), ServiceValue { table: i, count: 1, rev_nat: i + 1, flags: 0 })?;
    }
    let programming = started.elapsed();
    ensure!(dp.services()?.len() == n as usize);
    let memory = dp.kernel_memory().clone();
    eprintln!("programmed {n} services and tables in {programming:?}; kernel memory per map: {memory:?}");
    let maglev = memory.get(map_names::MAGLEV).copied().unwrap_or(0);
    ensure!(maglev >= u64::from(n * m) * 4, "{memory:?}");

    let picks = [0, 1, 2, 3, 4_999, 7_777, n - 2, n - 1];
    let mut args = vec!["multi".to_string(), "80".to_string()];
    args.extend(picks.iter().map(|&i| vip(i).to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answer = run_client(Some(&sandbox.cgroup), Some(&ns), &args)?;
    for i in picks {
        let expected = format!("b{}", i as usize % ids.len() + 1);
        ensure!(answer[vip(i).to_string()]["id"] == expected.as_str(), "VIP #{i}: {answer}");
    }
    Ok(())
}

#[test]
fn another_cgroup_takes_over_the_links_and_the_config_can_change() -> Result<()> {
    if !require_root("another_cgroup_takes_over_the_links_and_the_config_can_change") {
        return Ok(());
    }
    let mut sandbox = Sandbox::new()?;
    let ns = sandbox.netns("move")?;
    let first = sandbox.child_cgroup("first")?;
    let second = sandbox.child_cgroup("second")?;
    let mut servers = Servers::default();
    let mut options = sandbox.options();
    options.cgroup = first.clone();
    let mut dp = Dataplane::start(&options)?;
    let ids = tcp_backends(&mut dp, &mut servers, &ns, 1)?;
    dp.write_table(0, &even_table(options.maglev_size, &ids))?;
    dp.upsert_service(tcp_key(VIP, 80), ServiceValue { table: 0, count: 1, rev_nat: 1, flags: 0 })?;
    let vip = VIP.to_string();
    ensure!(run_client(Some(&first), Some(&ns), &["connect", &vip, "80"])?["id"] == "b1");
    ensure!(run_client(Some(&second), Some(&ns), &["connect", &vip, "80"])?.get("error").is_some());

    drop(dp);
    options.cgroup = second.clone();
    let mut dp = Dataplane::start(&options)?;
    ensure!(dp.report().maps_reused && dp.report().links_replaced.len() == 4, "{:?}", dp.report());
    ensure!(run_client(Some(&second), Some(&ns), &["connect", &vip, "80"])?["id"] == "b1");
    ensure!(run_client(Some(&first), Some(&ns), &["connect", &vip, "80"])?.get("error").is_some());

    // A smaller Maglev size in the same table array: tables are written again for it.
    let m = 101;
    dp.set_config(atoll_lb_l4::Config { maglev_size: m, max_tables: 32 })?;
    ensure!(dp.write_table(0, &even_table(options.maglev_size, &ids)).is_err(), "a table of the old size");
    dp.write_table(31, &even_table(m, &ids))?;
    dp.upsert_service(tcp_key(VIP, 80), ServiceValue { table: 31, count: 1, rev_nat: 1, flags: 0 })?;
    ensure!(run_client(Some(&second), Some(&ns), &["connect", &vip, "80"])?["id"] == "b1");
    ensure!(dp.set_config(atoll_lb_l4::Config { maglev_size: 1021, max_tables: 17 }).is_err(), "too big");
    ensure!(dp.upsert_backend(0, tcp_backend(LOCALHOST, 1)).is_err(), "backend id 0 is reserved");
    Ok(())
}

#[test]
fn a_failed_start_changes_nothing() -> Result<()> {
    if !require_root("a_failed_start_changes_nothing") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    // Not a cgroup: refused before the pin directory is even made.
    let not_a_cgroup = tempfile::tempdir()?;
    let options = atoll_lb_l4::L4Options { cgroup: not_a_cgroup.path().to_owned(), ..sandbox.options() };
    let error = Dataplane::start(&options).err().context("a plain directory is not a cgroup")?;
    ensure!(matches!(error, atoll_lb_l4::L4Error::NotCgroup2 { .. }), "{error}");
    ensure!(error.to_string().contains("cgroup v2 is mounted at"), "{error}");
    ensure!(!sandbox.pin_dir.exists(), "{} was created", sandbox.pin_dir.display());

    // An uplink that does not exist fails after the maps are pinned and the socket programs
    // attached: all of it is undone.
    let options =
        atoll_lb_l4::L4Options { uplink: Some(format!("atnope{}", std::process::id() % 10_000)), ..sandbox.options() };
    let error = Dataplane::start(&options).err().context("a missing uplink fails the start")?;
    ensure!(!sandbox.pin_dir.exists(), "{error}: pins were left in {}", sandbox.pin_dir.display());
    // And the cgroup has no program of ours attached: a later start is a fresh one.
    let dp = Dataplane::start(&sandbox.options())?;
    ensure!(!dp.report().maps_reused, "{:?}", dp.report());
    Ok(())
}
