//! The route table: built whole from the apps, looked up for every request.
//!
//! A request is matched by its host (exact, case-insensitive, port ignored) and then by the
//! longest path prefix among that host's routes; a host with no matching path, or a host no
//! route names, falls back to the routes without a host (those with only a path). Two apps
//! asking for the same host and path: the first by app id serves it, the other is reported.
//!
//! Blue/green deployments (Marathon-LB's `HAPROXY_DEPLOYMENT_GROUP`): the apps of one group
//! are served as one, the tasks of both colours behind the routes of the one that started
//! first, so that traffic shifts as the new colour's tasks become healthy.
//!
//! Unlike Marathon-LB (whose rules follow `HAPROXY_{n}_BACKEND_WEIGHT`, then app order), a
//! longer path prefix always wins over a shorter one on the same host.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::labels::{RouteSpec, normalize_host, route_specs};
use super::{EdgeApp, EdgeApps, EdgeBackend, EdgeProblem, Route, TaskHealth};

/// What a request matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Route(&'a Route),
    NoRoute,
}

/// A port an app exposes to this edge's group without a host or path: listed (Marathon-LB
/// serves it on its service port), not routed over HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortOnly {
    pub app: String,
    pub port_index: usize,
    pub service_port: Option<u32>,
    pub backends: Vec<EdgeBackend>,
}

#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    port_only: Vec<PortOnly>,
    /// Host → indices into `routes`, most specific path first.
    by_host: HashMap<String, Vec<usize>>,
    /// Routes without a host, most specific path first.
    any_host: Vec<usize>,
    problems: Vec<EdgeProblem>,
}

impl RouteTable {
    /// The routes `apps` ask an edge serving `group` for.
    pub fn build(apps: &EdgeApps, group: &str) -> RouteTable {
        let mut problems = Vec::new();
        let mut candidates: Vec<Route> = Vec::new();
        let mut port_only = Vec::new();
        for app in merge_deployment_groups(&apps.apps, &mut problems) {
            let (specs, spec_problems) = route_specs(&app.id, &app.labels, app.ports.len());
            problems.extend(spec_problems);
            for spec in specs.into_iter().filter(|s| s.in_group(group)) {
                let backends = backends_of(&app, &spec);
                let service_port =
                    spec.service_port.or_else(|| app.ports.get(spec.port_index).and_then(|p| p.service_port));
                if !spec.is_http() {
                    port_only.push(PortOnly {
                        app: app.id.clone(),
                        port_index: spec.port_index,
                        service_port,
                        backends,
                    });
                    continue;
                }
                candidates.push(Route {
                    id: format!("{}:{}", app.id, spec.port_index),
                    app: app.id.clone(),
                    port_index: spec.port_index,
                    hosts: spec.hosts,
                    path: spec.path,
                    strip_prefix: spec.strip_prefix,
                    balance: spec.balance,
                    redirect_to_https: spec.redirect_to_https,
                    service_port,
                    backends,
                });
            }
        }
        candidates.sort_by(|a, b| a.id.cmp(&b.id));

        // Each (host, path) once: the first route by id keeps it.
        let mut taken: BTreeMap<(Option<String>, Option<String>), String> = BTreeMap::new();
        let mut routes: Vec<Route> = Vec::new();
        for mut route in candidates {
            let path = route.path.as_ref().map(|p| p.prefix().to_owned());
            let keys: Vec<Option<String>> =
                if route.hosts.is_empty() { vec![None] } else { route.hosts.iter().cloned().map(Some).collect() };
            let mut kept = Vec::new();
            for host in keys {
                match taken.get(&(host.clone(), path.clone())) {
                    Some(owner) => problems.push(EdgeProblem::new(
                        &route.app,
                        format!(
                            "host {} path {} is already routed to {owner}",
                            host.as_deref().unwrap_or("(any)"),
                            path.as_deref().unwrap_or("/")
                        ),
                    )),
                    None => {
                        taken.insert((host.clone(), path.clone()), route.id.clone());
                        kept.push(host);
                    }
                }
            }
            if kept.is_empty() {
                continue;
            }
            if !route.hosts.is_empty() {
                route.hosts = kept.into_iter().flatten().collect();
            }
            routes.push(route);
        }

        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            if route.hosts.is_empty() {
                any_host.push(i);
            }
            for host in &route.hosts {
                by_host.entry(host.clone()).or_default().push(i);
            }
        }
        let specificity = |i: &usize| std::cmp::Reverse(routes[*i].path.as_ref().map_or(0, |p| p.prefix().len()));
        for indices in by_host.values_mut() {
            indices.sort_by_key(specificity);
        }
        any_host.sort_by_key(specificity);
        problems.sort();
        problems.dedup();
        RouteTable { routes, port_only, by_host, any_host, problems }
    }

    /// The route for a request's `Host` (or `:authority`) and path.
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        match self.lookup_index(host, path) {
            Some(i) => Lookup::Route(&self.routes[i]),
            None => Lookup::NoRoute,
        }
    }

    /// [`RouteTable::lookup`] as an index into [`RouteTable::routes`].
    pub fn lookup_index(&self, host: &str, path: &str) -> Option<usize> {
        let host = normalize_host(host_without_port(host)).unwrap_or_default();
        let matching = |indices: &[usize]| {
            indices.iter().copied().find(|&i| self.routes[i].path.as_ref().is_none_or(|p| p.matches(path)))
        };
        self.by_host.get(&host).and_then(|indices| matching(indices)).or_else(|| matching(&self.any_host))
    }

    /// Every HTTP route, by id.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }

    pub fn port_only(&self) -> &[PortOnly] {
        &self.port_only
    }

    /// What the labels asked for that is not served as asked.
    pub fn problems(&self) -> &[EdgeProblem] {
        &self.problems
    }

    /// Host → route ids, as Marathon-LB's `/_haproxy_getvhostmap` lists vhosts.
    pub fn vhost_map(&self) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (host, indices) in &self.by_host {
            map.insert(host.clone(), indices.iter().map(|&i| self.routes[i].id.clone()).collect());
        }
        map
    }
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `::1`.
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn backends_of(app: &EdgeApp, spec: &RouteSpec) -> Vec<EdgeBackend> {
    let mut backends: Vec<EdgeBackend> = app
        .tasks
        .iter()
        .filter_map(|task| {
            let address = task.endpoints.get(spec.port_index).copied().flatten()?;
            Some(EdgeBackend { address, task: task.id.clone(), state: task.health.state() })
        })
        .collect();
    backends.sort();
    backends
}

/// Apps of one `HAPROXY_DEPLOYMENT_GROUP` (Marathon-LB's blue/green deployments) become one
/// app named after the group, as Marathon-LB merges them: the labels and ports of the app whose
/// deployment started first (`HAPROXY_DEPLOYMENT_STARTED_AT`), the tasks of both, and as many
/// of the old app's tasks draining (by task id) as the new app has healthy tasks, while the
/// two together stay above the target (`HAPROXY_DEPLOYMENT_TARGET_INSTANCES` of the new app
/// when it carries `HAPROXY_DEPLOYMENT_NEW_INSTANCES`, else 1). Marathon-LB's swap of old and
/// new by their last scaling time (hybrid deployments) is not followed: the start time decides.
fn merge_deployment_groups(apps: &[EdgeApp], problems: &mut Vec<EdgeProblem>) -> Vec<EdgeApp> {
    let mut groups: BTreeMap<&str, Vec<&EdgeApp>> = BTreeMap::new();
    let mut out = Vec::new();
    for app in apps {
        match app.labels.get("HAPROXY_DEPLOYMENT_GROUP").map(|g| g.trim()).filter(|g| !g.is_empty()) {
            Some(group) => groups.entry(group).or_default().push(app),
            None => out.push(app.clone()),
        }
    }
    let started = |app: &EdgeApp| app.labels.get("HAPROXY_DEPLOYMENT_STARTED_AT").cloned().unwrap_or_default();
    for (group, mut members) in groups {
        members.sort_by(|a, b| started(a).cmp(&started(b)).then_with(|| a.id.cmp(&b.id)));
        let mut merged = members[0].clone();
        merged.id = format!("/{}", group.trim_start_matches('/'));
        merged.tasks.sort_by(|a, b| a.id.cmp(&b.id));
        for new in &members[1..] {
            if new.ports.len() != merged.ports.len() {
                problems.push(EdgeProblem::new(
                    &new.id,
                    format!(
                        "deployment group {group}: {} ports, the group's first app has {}",
                        new.ports.len(),
                        merged.ports.len()
                    ),
                ));
                continue;
            }
            let target = match new.labels.get("HAPROXY_DEPLOYMENT_NEW_INSTANCES") {
                Some(_) => new
                    .labels
                    .get("HAPROXY_DEPLOYMENT_TARGET_INSTANCES")
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(1),
                None => 1,
            };
            let healthy_new = if new.has_health_checks {
                new.tasks.iter().filter(|t| t.health == TaskHealth::Ready).count()
            } else {
                new.instances as usize
            };
            let drainable = (healthy_new + merged.instances as usize).saturating_sub(target);
            let old_tasks = merged.tasks.len();
            for task in merged.tasks.iter_mut().take(old_tasks.min(healthy_new).min(drainable)) {
                task.health = TaskHealth::Draining;
            }
            merged.tasks.extend(new.tasks.iter().cloned());
        }
        out.push(merged);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::edge::{BackendState, EdgePort, EdgeTask, PathMatch, TaskHealth};

    fn app(id: &str, labels: &[(&str, &str)], tasks: &[(&str, TaskHealth, u16)]) -> EdgeApp {
        EdgeApp {
            id: id.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ports: vec![EdgePort { service_port: Some(10000) }],
            instances: tasks.len() as u32,
            has_health_checks: true,
            tasks: tasks
                .iter()
                .map(|(task, health, port)| EdgeTask {
                    id: task.to_string(),
                    health: *health,
                    endpoints: vec![Some(SocketAddr::from(([127, 0, 0, 1], *port)))],
                })
                .collect(),
        }
    }

    fn routed<'a>(table: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        match table.lookup(host, path) {
            Lookup::Route(route) => Some(route.id.as_str()),
            Lookup::NoRoute => None,
        }
    }

    #[test]
    fn host_then_longest_path_then_any_host() {
        let apps = EdgeApps {
            apps: vec![
                app("/site", &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "shop.example")], &[]),
                app(
                    "/api",
                    &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "shop.example"), ("HAPROXY_0_PATH", "/api")],
                    &[],
                ),
                app("/api-v2", &[("ATOLL_EDGE_0_HOST", "shop.example"), ("ATOLL_EDGE_0_PATH", "/api/v2")], &[]),
                app("/status", &[("ATOLL_EDGE_0_PATH", "/status")], &[]),
                app("/internal", &[("HAPROXY_GROUP", "internal"), ("HAPROXY_0_VHOST", "int.example")], &[]),
            ],
        };
        let table = RouteTable::build(&apps, "external");
        assert_eq!(table.problems(), &[]);
        assert_eq!(routed(&table, "shop.example", "/"), Some("/site:0"));
        assert_eq!(routed(&table, "SHOP.example.:8080", "/api/orders"), Some("/api:0"));
        assert_eq!(routed(&table, "shop.example", "/api/v2/x"), Some("/api-v2:0"));
        assert_eq!(routed(&table, "shop.example", "/status"), Some("/site:0"), "the host's own routes first");
        assert_eq!(routed(&table, "other.example", "/status/x"), Some("/status:0"));
        assert_eq!(routed(&table, "other.example", "/"), None);
        assert_eq!(routed(&table, "int.example", "/"), None, "another group");
        assert_eq!(table.vhost_map()["shop.example"], vec!["/api-v2:0", "/api:0", "/site:0"]);
        let internal = RouteTable::build(&apps, "internal");
        assert_eq!(routed(&internal, "int.example", "/"), Some("/internal:0"));
    }

    #[test]
    fn a_conflict_keeps_the_first_app_and_says_so() {
        let labels = [("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "a.example,b.example")];
        let apps = EdgeApps {
            apps: vec![
                app("/two", &labels, &[]),
                app("/one", &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "a.example")], &[]),
            ],
        };
        let table = RouteTable::build(&apps, "external");
        assert_eq!(routed(&table, "a.example", "/"), Some("/one:0"));
        assert_eq!(routed(&table, "b.example", "/"), Some("/two:0"));
        assert_eq!(table.route("/two:0").unwrap().hosts, vec!["b.example"]);
        assert_eq!(table.problems().len(), 1);
        assert!(table.problems()[0].message.contains("already routed to /one:0"), "{:?}", table.problems());
    }

    #[test]
    fn backends_carry_their_state_and_port_only_services_are_listed() {
        let apps = EdgeApps {
            apps: vec![
                app(
                    "/web",
                    &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "web.example")],
                    &[
                        ("t1", TaskHealth::Ready, 8001),
                        ("t2", TaskHealth::Draining, 8002),
                        ("t3", TaskHealth::Unhealthy, 8003),
                    ],
                ),
                app("/tcp", &[("HAPROXY_GROUP", "external")], &[("t4", TaskHealth::Ready, 9000)]),
            ],
        };
        let table = RouteTable::build(&apps, "external");
        let route = table.route("/web:0").unwrap();
        let states: Vec<BackendState> = route.backends.iter().map(|b| b.state).collect();
        assert_eq!(states, vec![BackendState::Active, BackendState::Draining, BackendState::Unhealthy]);
        assert_eq!(route.active().count(), 1);
        assert_eq!(route.service_port, Some(10000));
        assert_eq!(route.path, None);
        assert_eq!(table.port_only().len(), 1);
        assert_eq!(table.port_only()[0].service_port, Some(10000));
        assert_eq!(routed(&table, "web.example", "/x"), Some("/web:0"));
        let _ = PathMatch::Begins(String::new());
    }

    #[test]
    fn a_deployment_group_is_served_as_one_app_draining_old_tasks_as_new_ones_are_healthy() {
        let colour = |id: &str, started: &str, tasks: &[(&str, TaskHealth, u16)]| {
            app(
                id,
                &[
                    ("HAPROXY_GROUP", "external"),
                    ("HAPROXY_0_VHOST", "nginx.example"),
                    ("HAPROXY_DEPLOYMENT_GROUP", "nginx"),
                    ("HAPROXY_DEPLOYMENT_STARTED_AT", started),
                ],
                tasks,
            )
        };
        let old = colour(
            "/nginx-green",
            "2016-02-01T14:13:42",
            &[("g3", TaskHealth::Ready, 8003), ("g1", TaskHealth::Ready, 8001), ("g2", TaskHealth::Ready, 8002)],
        );
        let new = colour(
            "/nginx-blue",
            "2016-02-02T10:00:00",
            &[("b1", TaskHealth::Ready, 9001), ("b2", TaskHealth::Unhealthy, 9002)],
        );
        let table = RouteTable::build(&EdgeApps { apps: vec![new, old] }, "external");
        assert_eq!(table.problems(), &[]);
        assert_eq!(table.routes().len(), 1);
        let route = &table.routes()[0];
        assert_eq!(route.id, "/nginx:0");
        let states: Vec<(&str, BackendState)> = route.backends.iter().map(|b| (b.task.as_str(), b.state)).collect();
        // One healthy new task: one old task (the first by id) drains.
        assert_eq!(
            states,
            vec![
                ("g1", BackendState::Draining),
                ("g2", BackendState::Active),
                ("g3", BackendState::Active),
                ("b1", BackendState::Active),
                ("b2", BackendState::Unhealthy),
            ]
        );
    }
}
