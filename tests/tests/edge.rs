//! `atoll edge` in a whole cluster: a real master and agent, backend tasks launched through
//! the Marathon API, the proxy as a process of its own, clients on loopback (reqwest, curl, a
//! raw WebSocket).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use atoll_tests::edge::{Edge, backends_in, http_app};
use atoll_tests::{Cluster, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LONG: Duration = Duration::from_secs(60);

async fn deploy(cluster: &Cluster, app: &Value) {
    let (status, body) = cluster.post("/v2/apps", app).await.unwrap();
    assert_eq!(status, 201, "{body}");
}

/// GET through the edge with a `Host`; status and body.
async fn get(client: &reqwest::Client, edge: &Edge, host: &str, path: &str) -> (u16, String) {
    let response = client
        .get(edge.url(path))
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn hosts_and_paths_route_to_their_apps_with_forwarded_headers_limits_and_errors() {
    let cluster = Cluster::start().await.unwrap();
    let edge = Edge::start(&cluster, &["--max-request-body", "1024"]).await.unwrap();
    deploy(&cluster, &http_app("/site", 1, json!({ "HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "site.example" })))
        .await;
    deploy(
        &cluster,
        &http_app(
            "/api",
            1,
            json!({ "ATOLL_EDGE_0_HOST": "site.example", "ATOLL_EDGE_0_PATH": "/api", "ATOLL_EDGE_0_STRIP_PREFIX": "true" }),
        ),
    )
    .await;
    deploy(
        &cluster,
        &http_app("/internal", 1, json!({ "HAPROXY_GROUP": "internal", "HAPROXY_0_VHOST": "int.example" })),
    )
    .await;
    deploy(&cluster, &http_app("/empty", 0, json!({ "ATOLL_EDGE_0_HOST": "empty.example" }))).await;
    edge.wait_route("/site:0", 1).await.unwrap();
    edge.wait_route("/api:0", 1).await.unwrap();
    edge.wait_route("/empty:0", 0).await.unwrap();

    let client = reqwest::Client::new();
    let (status, body) = get(&client, &edge, "site.example", "/index.html").await;
    assert_eq!(status, 200, "{body}");
    let site = json_of(&body);
    assert!(site["task"].as_str().unwrap().starts_with("site."), "{site}");
    assert_eq!(site["path"], "/index.html");
    assert_eq!(site["x_forwarded_for"], "127.0.0.1");
    assert_eq!(site["x_forwarded_proto"], "http");
    assert_eq!(site["x_forwarded_host"], "site.example");

    let (status, body) = get(&client, &edge, "SITE.example:8080", "/api/orders?id=7").await;
    assert_eq!(status, 200, "{body}");
    let api = json_of(&body);
    assert!(api["task"].as_str().unwrap().starts_with("api."), "the longer path wins: {api}");
    assert_eq!(api["path"], "/orders?id=7", "the prefix is stripped");
    let (_, body) = get(&client, &edge, "site.example", "/apiary").await;
    assert!(json_of(&body)["task"].as_str().unwrap().starts_with("site."), "/api matches whole segments only");

    let (status, body) = get(&client, &edge, "int.example", "/").await;
    assert_eq!((status, body.as_str()), (404, "no route for int.example/\n"), "another group's app");
    let (status, body) = get(&client, &edge, "empty.example", "/").await;
    assert_eq!(status, 503);
    assert!(body.contains("no healthy backend for /empty:0"), "{body}");

    let big = client
        .post(edge.url("/upload"))
        .header(reqwest::header::HOST, "site.example")
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    let small = client
        .post(edge.url("/upload"))
        .header(reqwest::header::HOST, "site.example")
        .body(vec![b'x'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(&small.text().await.unwrap())["body_length"], 100);

    // HTTP/2 without TLS (prior knowledge): :authority routes like Host.
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        "--resolve",
        &format!("site.example:{}:127.0.0.1", edge.port),
        &format!("http://site.example:{}/h2", edge.port),
    ]);
    assert!(ok, "{err}");
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2");
    assert_eq!(json_of(body)["path"], "/h2");

    // What the edge says about itself.
    let output = cluster.run_atoll(&["edge", "routes", "--admin", &edge.admin("")], LONG).await.unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(listed.contains("site.example") && listed.contains("/api:0") && listed.contains("1/0/0"), "{listed}");
    let vhosts = reqwest::get(edge.admin("/_haproxy_getvhostmap")).await.unwrap().text().await.unwrap();
    assert!(vhosts.contains("site.example /api:0\nsite.example /site:0\n"), "{vhosts}");
    let metrics = reqwest::get(edge.admin("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("atoll_edge_requests_total{route=\"/site:0\",code=\"200\"}"), "{metrics}");
    assert!(metrics.contains("atoll_edge_requests_total{route=\"-\",code=\"404\"} 1"), "{metrics}");
    assert!(metrics.contains("atoll_edge_backend_requests_total{route=\"/api:0\""), "{metrics}");
}

#[tokio::test]
async fn a_killed_backend_gets_no_new_requests_and_finishes_its_own() {
    let cluster = Cluster::start().await.unwrap();
    let edge = Edge::start(&cluster, &[]).await.unwrap();
    deploy(&cluster, &http_app("/drain", 3, json!({ "ATOLL_EDGE_0_HOST": "drain.example" }))).await;
    let route = edge.wait_route("/drain:0", 3).await.unwrap();
    let original: BTreeSet<String> = backends_in(&route, "active").into_iter().collect();

    // Slow requests until every backend has one in flight (the edge's admin API counts them).
    let client = reqwest::Client::new();
    let mut slow = Vec::new();
    for _ in 0..12 {
        let (client, url) = (client.clone(), edge.url("/slow?ms=4000"));
        slow.push(tokio::spawn(async move {
            let response = client.get(url).header(reqwest::header::HOST, "drain.example").send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let routes = edge.routes().await.unwrap();
        let route = routes["routes"].as_array().unwrap().iter().find(|r| r["id"] == "/drain:0").unwrap().clone();
        if route["backends"].as_array().unwrap().iter().all(|b| b["in_flight"].as_u64().unwrap_or(0) > 0) {
            break;
        }
    }
    let routes = edge.routes().await.unwrap();
    let route = routes["routes"].as_array().unwrap().iter().find(|r| r["id"] == "/drain:0").unwrap().clone();
    let victim = route["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["in_flight"].as_u64().unwrap_or(0) > 0)
        .and_then(|b| b["task"].as_str())
        .expect("a backend with a request in flight")
        .to_owned();
    let (status, body) = cluster.post(&format!("/v1/tasks/{victim}/kill"), &json!({})).await.unwrap();
    assert_eq!(status, 202, "{body}");
    wait_for("the killed task to drain in the edge", LONG, async || {
        let routes = edge.routes().await?;
        let route = routes["routes"].as_array().and_then(|r| r.iter().find(|r| r["id"] == "/drain:0").cloned());
        Ok(route.filter(|r| backends_in(r, "draining") == vec![victim.clone()]).map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", edge.logs()));

    for _ in 0..60 {
        let (status, body) = get(&client, &edge, "drain.example", "/").await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(json_of(&body)["task"], victim.as_str(), "a draining backend got a new request");
    }
    let mut answered = BTreeSet::new();
    for request in slow {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "a request in flight failed: {body}");
        answered.insert(json_of(&body)["task"].as_str().unwrap().to_owned());
    }
    assert!(answered.contains(&victim), "the killed backend finished the requests it had: {answered:?}");
    assert!(answered.is_subset(&original), "{answered:?}");
}

#[tokio::test]
async fn a_rolling_upgrade_under_load_fails_no_request() {
    let cluster = Cluster::start().await.unwrap();
    let edge = Edge::start(&cluster, &[]).await.unwrap();
    let mut app = http_app("/roll", 3, json!({ "ATOLL_EDGE_0_HOST": "roll.example" }));
    app["upgradeStrategy"] = json!({ "minimumHealthCapacity": 1, "maximumOverCapacity": 0.34 });
    deploy(&cluster, &app).await;
    edge.wait_route("/roll:0", 3).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), edge.url("/"));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut versions: BTreeMap<String, u64> = BTreeMap::new();
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut last_version = String::new();
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match client.get(&url).header(reqwest::header::HOST, "roll.example").send().await {
                    Ok(response) if response.status().is_success() => {
                        let body: Value = response.json().await.unwrap_or_default();
                        last_version = body["version"].as_str().unwrap_or("?").to_owned();
                        *versions.entry(last_version.clone()).or_default() += 1;
                    }
                    Ok(response) => {
                        failures.push(format!("{}: {}", response.status(), response.text().await.unwrap_or_default()))
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (versions, failures, last_version)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    app["env"]["VERSION"] = "2".into();
    let response = cluster.http.put(format!("{}/v2/apps/roll", cluster.master_url())).json(&app).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    wait_for("the upgrade to finish", Duration::from_secs(90), async || {
        let deployments = cluster.get("/v2/deployments").await?;
        let tasks = cluster.get("/v2/apps/roll").await?["app"]["tasks"].clone();
        let done =
            deployments.as_array().is_some_and(|d| d.is_empty()) && tasks.as_array().is_some_and(|t| t.len() == 3);
        Ok(done.then_some(()))
    })
    .await
    .unwrap();
    edge.wait_route("/roll:0", 3).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let (versions, failures, last) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests during the upgrade: {failures:?}\n{}",
        failures.len(),
        edge.logs()
    );
    assert!(
        versions.get("1").copied().unwrap_or(0) > 10 && versions.get("2").copied().unwrap_or(0) > 10,
        "{versions:?}"
    );
    assert_eq!(last, "2", "{versions:?}");
}

fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "atoll test CA");
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `host` signed by `ca`, written as `HOST.key` then `HOST.crt` into `dir`.
fn issue(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, dir: &std::path::Path, host: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, host);
    let cert = params.signed_by(&key, ca).unwrap();
    // The key first: the directory watcher loads a pair once the certificate is there.
    std::fs::write(dir.join(format!("{host}.key")), key.serialize_pem()).unwrap();
    std::fs::write(dir.join(format!("{host}.crt")), cert.pem()).unwrap();
}

#[tokio::test]
async fn tls_picks_the_certificate_by_sni_reloads_new_ones_and_redirects_plain_http() {
    let cluster = Cluster::start().await.unwrap();
    let certs = cluster.dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = test_ca();
    issue(&ca, &certs, "a.test");
    let ca_file = cluster.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls_port = atoll_tests::free_port();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let edge =
        Edge::start(&cluster, &["--tls-listen", &tls_listen, "--cert-dir", certs.to_str().unwrap()]).await.unwrap();
    deploy(
        &cluster,
        &http_app("/a", 1, json!({ "ATOLL_EDGE_0_HOST": "a.test", "ATOLL_EDGE_0_REDIRECT_TO_HTTPS": "true" })),
    )
    .await;
    deploy(&cluster, &http_app("/b", 1, json!({ "ATOLL_EDGE_0_HOST": "b.test" }))).await;
    edge.wait_route("/a:0", 1).await.unwrap();
    edge.wait_route("/b:0", 1).await.unwrap();

    let https = |host: &str| {
        curl(&[
            "--cacert",
            ca_file.to_str().unwrap(),
            "--resolve",
            &format!("{host}:{tls_port}:127.0.0.1"),
            "-w",
            "\n%{http_version}",
            &format!("https://{host}:{tls_port}/secure"),
        ])
    };
    // The CA signed a.test's certificate only for a.test: verification passes only if SNI
    // chose it.
    let (ok, out, err) = https("a.test");
    assert!(ok, "{err}\n{}", edge.logs());
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "HTTP/2 by ALPN");
    let answer = json_of(body);
    assert!(answer["task"].as_str().unwrap().starts_with("a."), "{answer}");
    assert_eq!(answer["x_forwarded_proto"], "https");

    let (ok, _, err) = https("b.test");
    assert!(!ok, "no certificate for b.test yet, and no default");
    assert!(!err.is_empty());
    // A new certificate is picked up without a restart.
    issue(&ca, &certs, "b.test");
    let out = wait_for("b.test's certificate to be loaded", Duration::from_secs(20), async || {
        let (ok, out, _) = https("b.test");
        Ok(ok.then_some(out))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", edge.logs()));
    let (body, _) = out.rsplit_once('\n').unwrap();
    assert!(json_of(body)["task"].as_str().unwrap().starts_with("b."));

    // Plain HTTP for a.test: a redirect to the TLS listener.
    let (ok, out, err) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--resolve",
        &format!("a.test:{}:127.0.0.1", edge.port),
        &format!("http://a.test:{}/x?y=1", edge.port),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("301 https://a.test:{tls_port}/x?y=1"));
}

#[tokio::test]
async fn a_websocket_echoes_through_the_edge() {
    let cluster = Cluster::start().await.unwrap();
    let edge = Edge::start(&cluster, &[]).await.unwrap();
    deploy(&cluster, &http_app("/ws", 1, json!({ "ATOLL_EDGE_0_HOST": "ws.example" }))).await;
    edge.wait_route("/ws:0", 1).await.unwrap();

    // Many connections: pingora's own upgrade path lost about one tunnel in seventy right after
    // the 101 (its issue #946); the edge carries upgrades itself.
    for round in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
        stream
            .write_all(
                b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            tokio::time::timeout(LONG, stream.read_exact(&mut byte)).await.unwrap().unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455's own example key and answer.
        assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");

        for message in ["hello edge", "and again"] {
            let mask = [0x37u8, 0xfa, 0x21, 0x3d];
            let mut frame = vec![0x81, 0x80 | message.len() as u8];
            frame.extend_from_slice(&mask);
            frame.extend(message.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            stream.write_all(&frame).await.unwrap();
            let mut header = [0u8; 2];
            tokio::time::timeout(LONG, stream.read_exact(&mut header))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("connection {round}: {e}"));
            assert_eq!(header[0], 0x81, "a final text frame");
            let mut payload = vec![0u8; (header[1] & 0x7f) as usize];
            stream.read_exact(&mut payload).await.unwrap();
            assert_eq!(String::from_utf8(payload).unwrap(), message);
        }
    }
}

#[tokio::test]
async fn hashing_timeouts_failed_backends_and_header_limits() {
    let cluster = Cluster::start().await.unwrap();
    let edge = Edge::start(&cluster, &["--response-timeout", "1s"]).await.unwrap();
    deploy(
        &cluster,
        &http_app(
            "/hash",
            3,
            json!({ "ATOLL_EDGE_0_HOST": "hash.example", "ATOLL_EDGE_0_BALANCE": "hash-header:x-user" }),
        ),
    )
    .await;
    // A task that runs without listening: every connection to it is refused.
    deploy(
        &cluster,
        &json!({ "id": "/deaf", "instances": 1, "cmd": "exec sleep 1000", "cpus": 0.05, "mem": 16,
                 "portDefinitions": [{ "port": 0 }], "labels": { "ATOLL_EDGE_0_HOST": "deaf.example" } }),
    )
    .await;
    edge.wait_route("/hash:0", 3).await.unwrap();
    edge.wait_route("/deaf:0", 1).await.unwrap();
    let client = reqwest::Client::new();

    // The same user reaches the same backend; users spread.
    let mut by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..4 {
        for user in 0..12 {
            let response = client
                .get(edge.url(&format!("/r{round}")))
                .header(reqwest::header::HOST, "hash.example")
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .unwrap();
            let task = json_of(&response.text().await.unwrap())["task"].as_str().unwrap().to_owned();
            by_user.entry(format!("user-{user}")).or_default().insert(task);
        }
    }
    assert!(by_user.values().all(|tasks| tasks.len() == 1), "{by_user:?}");
    let used: BTreeSet<&String> = by_user.values().flatten().collect();
    assert!(used.len() > 1, "twelve users all on one backend: {by_user:?}");

    // Slower than --response-timeout: 504.
    let (status, body) = get(&client, &edge, "hash.example", "/slow?ms=3000").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("gateway timeout"), "{body}");

    // Refused connections: 502, and after five in a row the backend is ejected.
    for _ in 0..5 {
        let (status, body) = get(&client, &edge, "deaf.example", "/").await;
        assert_eq!(status, 502, "{body}");
    }
    let routes = edge.routes().await.unwrap();
    let deaf = routes["routes"].as_array().unwrap().iter().find(|r| r["id"] == "/deaf:0").unwrap();
    assert_eq!(deaf["backends"][0]["ejected"], true, "{deaf}");
    let metrics = reqwest::get(edge.admin("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("atoll_edge_ejections_total 1"), "{metrics}");

    // Headers beyond --max-request-headers (64 KiB by default): 431, nothing proxied.
    let response = client
        .get(edge.url("/"))
        .header(reqwest::header::HOST, "hash.example")
        .header("x-big", "y".repeat(70 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 431);
}

#[tokio::test]
async fn the_edge_stops_promptly_on_sigterm() {
    let cluster = Cluster::start().await.unwrap();
    let mut edge = Edge::start(&cluster, &[]).await.unwrap();
    let (status, _) = edge.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{status}\n{}", edge.logs());
}

#[tokio::test]
async fn following_a_marathon_like_marathon_lb_routes_its_apps() {
    let cluster = Cluster::start().await.unwrap();
    // The drop-in for Marathon-LB: apps from Marathon's /v2/apps?embed=apps.tasks, which the
    // Atoll master also serves.
    let edge = Edge::start(&cluster, &["--marathon", &cluster.master_url()]).await.unwrap();
    let mut app = http_app("/shop", 1, json!({ "HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "shop.example" }));
    deploy(&cluster, &app).await;
    edge.wait_route("/shop:0", 1).await.unwrap();
    let client = reqwest::Client::new();
    let (status, body) = get(&client, &edge, "shop.example", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["task"].as_str().unwrap().starts_with("shop."), "{body}");

    app["instances"] = json!(2);
    let response = cluster.http.put(format!("{}/v2/apps/shop", cluster.master_url())).json(&app).send().await.unwrap();
    assert!(response.status().is_success());
    edge.wait_route("/shop:0", 2).await.unwrap();
    let routes = edge.routes().await.unwrap();
    assert!(routes["index"].as_u64().unwrap() >= 2, "{routes}");
    // Marathon-LB's sse mode: the changes came from Marathon's event bus, not from polling.
    assert!(edge.logs().contains("following Marathon's event bus"), "{}", edge.logs());
    let metrics = client.get(edge.admin("/metrics")).send().await.unwrap().text().await.unwrap();
    let fetches = metrics
        .lines()
        .find_map(|line| line.strip_prefix("atoll_edge_marathon_events_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no marathon_events counter in\n{metrics}"));
    assert!(fetches >= 1.0, "no fetch was asked for by an event: {fetches}");
}

/// Requests `host` through the edge until every one of `tasks` answered (bounded); each must
/// answer 200 and be one of them.
async fn reach_all(client: &reqwest::Client, edge: &Edge, host: &str, tasks: &BTreeSet<String>) {
    let mut answered = BTreeSet::new();
    for _ in 0..100 {
        let (status, body) = get(client, edge, host, "/").await;
        assert_eq!(status, 200, "{body}");
        let task = json_of(&body)["task"].as_str().unwrap().to_owned();
        assert!(tasks.contains(&task), "{task} answered, not one of {tasks:?}");
        answered.insert(task);
        if &answered == tasks {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("only {answered:?} of {tasks:?} answered\n{}", edge.logs());
}

#[tokio::test]
async fn following_the_mesos_operator_api_routes_marathon_tasks_by_their_labels() {
    let cluster = Cluster::start().await.unwrap();
    // The Atoll master speaks the Mesos operator API: the stream a Mesos master sends, its
    // tasks named as Marathon names them (`shop_web.<uuid>`) and carrying their app's labels,
    // as Marathon copies them. The edge knows no app: it groups the tasks.
    let edge = Edge::start(&cluster, &["--mesos-master", &cluster.master_url()]).await.unwrap();
    let mut app = http_app("/shop/web", 2, json!({ "HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "shop.example" }));
    deploy(&cluster, &app).await;
    let route = edge.wait_route("/shop/web:0", 2).await.unwrap();
    assert!(edge.logs().contains("following the Mesos master at"), "{}", edge.logs());
    assert_eq!(route["hosts"], json!(["shop.example"]));
    let tasks: BTreeSet<String> = backends_in(&route, "active").into_iter().collect();
    assert!(tasks.iter().all(|t| t.starts_with("shop_web.")), "{tasks:?}");
    let client = reqwest::Client::new();
    reach_all(&client, &edge, "shop.example", &tasks).await;
    let (status, _) = get(&client, &edge, "other.example", "/").await;
    assert_eq!(status, 404, "a host no task asks for");

    // Scaled up: the new task joins once its health check passed.
    app["instances"] = json!(3);
    let response =
        cluster.http.put(format!("{}/v2/apps/shop/web", cluster.master_url())).json(&app).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let route = edge.wait_route("/shop/web:0", 3).await.unwrap();
    let tasks: BTreeSet<String> = backends_in(&route, "active").into_iter().collect();
    reach_all(&client, &edge, "shop.example", &tasks).await;

    // A killed task leaves the routes (draining first), its replacement joins them.
    let victim = tasks.first().unwrap().clone();
    let (status, body) = cluster.post(&format!("/v1/tasks/{victim}/kill"), &json!({})).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let route = wait_for("the killed task replaced in the edge", LONG, async || {
        let routes = edge.routes().await?;
        let route = routes["routes"].as_array().and_then(|r| r.iter().find(|r| r["id"] == "/shop/web:0").cloned());
        Ok(route.filter(|r| {
            let all = r["backends"].as_array().map_or(0, Vec::len);
            let active = backends_in(r, "active");
            all == 3 && active.len() == 3 && !active.contains(&victim)
        }))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", edge.logs()));
    let tasks: BTreeSet<String> = backends_in(&route, "active").into_iter().collect();
    reach_all(&client, &edge, "shop.example", &tasks).await;

    // Scaled down to one: the others leave.
    app["instances"] = json!(1);
    let response =
        cluster.http.put(format!("{}/v2/apps/shop/web", cluster.master_url())).json(&app).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let route = wait_for("the edge down to one backend", LONG, async || {
        let routes = edge.routes().await?;
        let route = routes["routes"].as_array().and_then(|r| r.iter().find(|r| r["id"] == "/shop/web:0").cloned());
        Ok(route.filter(|r| r["backends"].as_array().map_or(0, Vec::len) == 1 && backends_in(r, "active").len() == 1))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", edge.logs()));
    let last: BTreeSet<String> = backends_in(&route, "active").into_iter().collect();
    assert!(last.is_subset(&tasks), "{last:?} of {tasks:?}");
    reach_all(&client, &edge, "shop.example", &last).await;
}
