//! Marathon-LB compatibility: the app fixtures in `shared/compat/marathon-lb/` (Marathon's
//! `/v2/apps?embed=apps.tasks`, and app definitions that Marathon-LB's `zdd.py` reads) give the
//! services Marathon-LB's own tests assert for them: the same service ports, virtual hosts and
//! backend `address:port`s, the same task drained in a blue/green deployment.
//!
//! The fixtures live outside the repository, in `shared/compat/` beside it (CI lays `shared/`
//! next to the checkout); `$ATOLL_COMPAT_DIR` points elsewhere. No address in them is contacted.

use std::path::PathBuf;

use atoll_lb_core::edge::source::{MarathonApp, MarathonApps};
use atoll_lb_core::edge::{BackendState, Balance, EdgeApps, Lookup, RouteTable};
use serde_json::Value;

fn compat_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("ATOLL_COMPAT_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/compat")])
        .collect();
    candidates.iter().find(|dir| dir.join("marathon-lb/zdd_apps.json").is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "the Marathon-LB fixtures (marathon-lb/zdd_apps.json) are in none of {candidates:?}: \
             lay the shared/ folder beside the repository or set ATOLL_COMPAT_DIR to its compat/ folder"
        )
    })
}

fn fixture(name: &str) -> Value {
    let path = compat_dir().join("marathon-lb").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn apps(value: Value) -> EdgeApps {
    serde_json::from_value::<MarathonApps>(value).expect("Marathon /v2/apps JSON").to_edge_apps()
}

/// `address:port state` of each backend, as the HAProxy server lines list them.
fn servers(backends: &[atoll_lb_core::edge::EdgeBackend]) -> Vec<String> {
    backends
        .iter()
        .map(|b| {
            let state = match b.state {
                BackendState::Active => "",
                BackendState::Draining => " disabled",
                BackendState::Unhealthy => " unhealthy",
            };
            format!("{}{state}", b.address)
        })
        .collect()
}

#[test]
fn marathon15_bridge_app_is_one_vhost_on_its_service_port() {
    // test_bridge_app_marathon15: `backend pywebserver_10101 … server 10_0_2_148_1565 10.0.2.148:1565`,
    // `acl host_myvhost_com_pywebserver hdr(host) -i myvhost.com`.
    let table = RouteTable::build(&apps(fixture("marathon15_apps.json")), "external");
    assert_eq!(table.problems(), &[]);
    assert_eq!(table.routes().len(), 1);
    let route = &table.routes()[0];
    assert_eq!(route.app, "/pywebserver");
    assert_eq!(route.hosts, vec!["myvhost.com"]);
    assert_eq!(route.path, None);
    assert_eq!(route.service_port, Some(10101));
    assert_eq!(route.balance, Balance::RoundRobin);
    assert_eq!(servers(&route.backends), vec!["10.0.2.148:1565"], "bridge mode: task host and host port");
    assert!(matches!(table.lookup("MyVhost.com", "/index.html"), Lookup::Route(r) if r.id == route.id));
    assert_eq!(table.lookup("other.com", "/"), Lookup::NoRoute);

    assert_eq!(RouteTable::build(&apps(fixture("marathon15_apps.json")), "*").routes().len(), 1);
    assert!(RouteTable::build(&apps(fixture("marathon15_apps.json")), "internal").routes().is_empty());
}

#[test]
fn marathon15_ip_per_task_app_is_reached_on_the_task_ip_and_container_port() {
    // The same app on a `container` network (not `container/bridge`): Marathon-LB's server is
    // `172.17.0.2:80`, still on service port 10101.
    let mut value = fixture("marathon15_apps.json");
    value["apps"][0]["networks"] = serde_json::json!([{ "mode": "container", "name": "dcos" }]);
    let table = RouteTable::build(&apps(value), "external");
    assert_eq!(servers(&table.routes()[0].backends), vec!["172.17.0.2:80"]);
    assert_eq!(table.routes()[0].service_port, Some(10101));
}

#[test]
fn zdd_apps_merge_into_the_deployment_group_and_drain_one_old_task() {
    // test_zdd_app: one backend nginx_10000 with blue's task and green's three, green's
    // 10.0.6.25:31184 (the first of green's tasks by id) `disabled`; no vhost, so it is a
    // service-port (TCP-style) service, not an HTTP route.
    let table = RouteTable::build(&apps(fixture("zdd_apps.json")), "external");
    assert_eq!(table.problems(), &[]);
    assert!(table.routes().is_empty(), "no vhost: nothing on the HTTP listener");
    let services = table.port_only();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].app, "/nginx");
    assert_eq!(services[0].service_port, Some(10000));
    assert_eq!(
        servers(&services[0].backends),
        vec!["10.0.1.147:25724", "10.0.6.25:16916", "10.0.6.25:23336", "10.0.6.25:31184 disabled"]
    );

    // With a vhost on both colours the merged service is an HTTP route that sends no new
    // request to the draining task.
    let mut value = fixture("zdd_apps.json");
    for app in value["apps"].as_array_mut().unwrap() {
        app["labels"]["HAPROXY_0_VHOST"] = "nginx.example.com".into();
    }
    let table = RouteTable::build(&apps(value), "external");
    let route = match table.lookup("nginx.example.com", "/") {
        Lookup::Route(route) => route,
        Lookup::NoRoute => panic!("no route: {:?}", table.routes()),
    };
    assert_eq!(route.id, "/nginx:0");
    assert_eq!(route.active().count(), 3);
}

#[test]
fn zdd_without_a_healthy_new_task_drains_nothing() {
    // Blue's only task fails its health check: it is not a backend and no green task drains.
    let mut value = fixture("zdd_apps.json");
    let blue = value["apps"].as_array_mut().unwrap().iter_mut().find(|a| a["id"] == "/nginx-blue").unwrap();
    blue["tasks"][0]["healthCheckResults"][0]["alive"] = false.into();
    let table = RouteTable::build(&apps(value), "external");
    assert_eq!(
        servers(&table.port_only()[0].backends),
        vec!["10.0.1.147:25724 unhealthy", "10.0.6.25:16916", "10.0.6.25:23336", "10.0.6.25:31184"]
    );
}

#[test]
fn a_single_colour_is_served_under_its_deployment_group() {
    // zdd_app_blue.json holds green alone: service /nginx on 10000, three servers, none disabled.
    let table = RouteTable::build(&apps(fixture("zdd_app_blue.json")), "external");
    let services = table.port_only();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].app, "/nginx");
    assert_eq!(services[0].service_port, Some(10000));
    assert_eq!(servers(&services[0].backends), vec!["10.0.6.25:16916", "10.0.6.25:23336", "10.0.6.25:31184"]);
}

#[test]
fn app_definitions_for_zdd_are_services_on_their_service_port_without_backends() {
    // 1-nginx.json (docker.portMappings) and its Marathon 1.5 form (container.portMappings):
    // the definitions zdd.py deploys; on their own, service 10000 of group external, no tasks.
    for name in ["1-nginx.json", "1-nginx-marathon1.5.json"] {
        let app: MarathonApp = serde_json::from_value(fixture(name)).expect(name);
        let table = RouteTable::build(&EdgeApps { apps: vec![app.to_edge_app()] }, "external");
        assert_eq!(table.problems(), &[], "{name}");
        let services = table.port_only();
        assert_eq!(services.len(), 1, "{name}");
        assert_eq!(services[0].app, "/nginx", "{name}: renamed to its deployment group");
        assert_eq!(services[0].service_port, Some(10000), "{name}");
        assert!(services[0].backends.is_empty(), "{name}");
    }
}
