//! The edge's apps on a Mesos master, which knows tasks but not apps: the tasks of its operator
//! API's state (converted with [`PortView::All`](crate::vips::mesos::PortView::All), so that
//! every discovery port keeps its index) grouped into apps, as Marathon-LB would see Marathon's.
//!
//! - **Which app**: the Marathon app id recovered from the task id, as Marathon itself parses
//!   its ids ([`marathon_app_id`]); else the task's `ATOLL_APP_ID` label (the services
//!   framework of an Atoll master puts it on every task). A task with neither — another
//!   framework's: a DC/OS SDK service, a job — is no app's. Two frameworks (Marathon and a
//!   Marathon on Marathon) may both run an app `/web`: their tasks are not mixed, each app is
//!   named `/web@<framework name>` while both exist.
//! - **Labels**: Marathon copies an app's labels onto its tasks' `TaskInfo.labels`, so the
//!   tasks carry `HAPROXY_GROUP`, `HAPROXY_0_VHOST`, …. While a deployment replaces tasks
//!   launched with other labels, the labels of the task with the latest status win, among the
//!   tasks not being killed (the new ones, as their statuses arrive).
//! - **Ports**: each task's discovery ports in order (a `tcp,udp` port once), else its host
//!   ports; a host or mapped port at the agent's address, a container port at the task's own.
//!   There are no service ports on a Mesos master: `HAPROXY_{n}_PORT` gives port `n` one.
//! - **Backends**: RUNNING tasks take requests when their latest health verdict is `true`, or
//!   when they have no (Mesos) health check; RUNNING tasks whose check failed or has not
//!   passed yet do not — as dcos-net reads the recorded `unhealthy.json` and Marathon-LB a task
//!   without health results (a check Marathon runs itself is not on the task, and does not
//!   hold it back). KILLING and UNREACHABLE tasks drain. The app's instances are the tasks seen
//!   that are not being killed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use atoll_proto::model::{AgentId, AppId, ClusterState, FrameworkId, Task, TaskState};

use super::source::{APP_ID_LABEL, task_endpoints, task_health};
use super::{EdgeApp, EdgeApps, EdgePort, EdgeTask};

/// The app a Marathon task id names (`/shop/web` for `shop_web.<uuid>`), or `None` when the
/// id is not Marathon's. The formats, as Marathon's `Task.Id` parses them:
///
/// - `<app>.<uuid>` (and `<app>_<uuid>`, older still) up to Marathon 1.4, for apps' tasks also
///   after it;
/// - `<app>.<uuid>.<attempt>`, a resident task's relaunch;
/// - `<app>.instance-<uuid>.<container>` (`marathon-` in 1.4): a pod's tasks, one per container;
/// - `<app>.instance-<uuid>._app.<incarnation>`: an app's tasks since Marathon 1.8 (`._app`
///   the anonymous container, the incarnation counting relaunches).
///
/// `<app>` is the app's path with `/` written `_` (`/shop/web` → `shop_web`). Unlike Marathon,
/// which takes any word for `<uuid>`, the uuid must be one (hyphenated or 32 hex digits): other
/// frameworks' ids (the SDK's `<pod>-0-server__<uuid>`) must not read as apps.
pub fn marathon_app_id(task_id: &str) -> Option<AppId> {
    instance_era(task_id).or_else(|| legacy(task_id)).and_then(app_of_safe_path)
}

/// `<app>.(instance|marathon)-<uuid>[(.|_)<container>[.<digits>]]` → `<app>`. The last such
/// marker that fits wins: an app's own path may contain `.instance-` in a segment.
fn instance_era(task_id: &str) -> Option<&str> {
    let mut end = task_id.len();
    while let Some(at) = task_id[..end].rfind(".instance-").max(task_id[..end].rfind(".marathon-")) {
        let rest = &task_id[at + ".instance-".len()..];
        let uuid_len = rest.find(['.', '_']).unwrap_or(rest.len());
        let (uuid, after) = rest.split_at(uuid_len);
        let fits = is_uuid(uuid)
            && match after.chars().next() {
                None => true,
                Some(_) => {
                    // The separator, the container name, maybe an incarnation.
                    let after = &after[1..];
                    let (container, incarnation) = match after.split_once('.') {
                        Some((container, incarnation)) => (container, Some(incarnation)),
                        None => (after, None),
                    };
                    !container.is_empty() && incarnation.is_none_or(is_number)
                }
            };
        if fits && at > 0 {
            return Some(&task_id[..at]);
        }
        end = at;
    }
    None
}

/// `<app>(.|_)<uuid>[.<digits>]` → `<app>`.
fn legacy(task_id: &str) -> Option<&str> {
    let id = match task_id.rsplit_once('.') {
        // A resident task's attempt.
        Some((before, attempt)) if is_number(attempt) => before,
        _ => task_id,
    };
    let at = id.rfind(['.', '_'])?;
    (at > 0 && is_uuid(&id[at + 1..])).then(|| &id[..at])
}

/// Marathon's "safe path" back to the app id: `shop_web` → `/shop/web`, if that is an app id.
fn app_of_safe_path(safe: &str) -> Option<AppId> {
    if safe.split('_').any(str::is_empty) {
        return None;
    }
    AppId::parse(&safe.replace('_', "/")).ok()
}

/// A UUID as Marathon (`8-4-4-4-12` hex digits) or Atoll (32 hex digits) writes it.
fn is_uuid(text: &str) -> bool {
    let hex = |part: &str, len: usize| part.len() == len && part.chars().all(|c| c.is_ascii_hexdigit());
    match text.len() {
        32 => hex(text, 32),
        36 => {
            let parts: Vec<&str> = text.split('-').collect();
            parts.len() == 5 && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(len, part)| hex(part, *len))
        }
        _ => false,
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit())
}

/// The app a task belongs to: its Marathon task id's, else its `ATOLL_APP_ID` label's.
pub fn app_id_of(task: &Task) -> Option<AppId> {
    marathon_app_id(task.id.as_str()).or_else(|| AppId::parse(task.labels.get(APP_ID_LABEL)?).ok())
}

/// `HAPROXY_{n}_PORT` as a service port, when it is one (a bad value is reported with the
/// routes, by the labels' reader).
fn service_port(labels: &BTreeMap<String, String>, n: usize) -> Option<u32> {
    let port = labels.get(&format!("HAPROXY_{n}_PORT"))?.trim().parse::<u32>().ok()?;
    (1..=65535).contains(&port).then_some(port)
}

impl EdgeApps {
    /// The apps of a Mesos master's state (see the module docs). Terminal tasks are left out
    /// wherever they are still listed.
    pub fn from_mesos_state(state: &ClusterState) -> EdgeApps {
        let agents: BTreeMap<_, IpAddr> = state.agents.iter().map(|a| (&a.id, a.address.ip())).collect();
        let mut groups: BTreeMap<(AppId, &FrameworkId), Vec<&Task>> = BTreeMap::new();
        for task in state.tasks.iter().filter(|t| !t.state.is_terminal()) {
            if let Some(app) = app_id_of(task) {
                groups.entry((app, &task.framework_id)).or_default().push(task);
            }
        }
        let mut frameworks_of: BTreeMap<&AppId, BTreeSet<&FrameworkId>> = BTreeMap::new();
        for (app, framework) in groups.keys() {
            frameworks_of.entry(app).or_default().insert(framework);
        }
        let framework_name = |id: &FrameworkId| {
            state
                .frameworks
                .iter()
                .find(|f| &f.id == id)
                .map(|f| f.info.name.clone())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| id.to_string())
        };
        let mut apps: Vec<EdgeApp> = groups
            .iter()
            .map(|((app, framework), tasks)| {
                let id = if frameworks_of[app].len() > 1 {
                    format!("{app}@{}", framework_name(framework))
                } else {
                    app.to_string()
                };
                edge_app(id, tasks, &agents)
            })
            .collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        EdgeApps { apps }
    }
}

/// One app from its live tasks.
fn edge_app(id: String, tasks: &[&Task], agents: &BTreeMap<&AgentId, IpAddr>) -> EdgeApp {
    let mut edge_tasks = Vec::new();
    let mut ports = 0;
    for task in tasks {
        let endpoints = task_endpoints(task, agents.get(&task.agent_id).copied());
        ports = ports.max(endpoints.len());
        if let Some(health) = task_health(task) {
            edge_tasks.push(EdgeTask { id: task.id.to_string(), health, endpoints });
        }
    }
    // The labels of the task whose news is the latest, leaving aside tasks being killed (old
    // ones, in a deployment); the task id breaks ties, so every edge picks the same.
    let labels = tasks
        .iter()
        .max_by(|a, b| {
            let rank = |t: &Task| (t.state != TaskState::Killing, t.status.timestamp);
            rank(a).cmp(&rank(b)).then_with(|| a.id.cmp(&b.id))
        })
        .map(|t| t.labels.0.clone())
        .unwrap_or_default();
    EdgeApp {
        id,
        ports: (0..ports).map(|n| EdgePort { service_port: service_port(&labels, n) }).collect(),
        labels,
        tasks: edge_tasks,
        instances: tasks.iter().filter(|t| t.state != TaskState::Killing).count() as u32,
        has_health_checks: tasks.iter().any(|t| t.health_check.is_some()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use atoll_proto::model::{
        Agent, AgentState, Attributes, DiscoveryInfo, DiscoveryPort, Framework, FrameworkInfo, Labels, NetworkRequest,
        Resources, Source, TaskId, TaskStatus, Time,
    };

    use super::*;
    use crate::edge::{BackendState, Lookup, RouteTable, TaskHealth};

    const UUID: &str = "8b38cc52-c951-11e9-8d5b-70b3d5800001";

    fn app(id: &str) -> Option<String> {
        marathon_app_id(id).map(|a| a.to_string())
    }

    #[test]
    fn app_ids_come_back_from_every_marathon_task_id_format() {
        // Marathon < 1.5 (and apps' tasks until 1.8): <app>.<uuid>; older, <app>_<uuid>.
        assert_eq!(app(&format!("web.{UUID}")).as_deref(), Some("/web"));
        assert_eq!(app(&format!("shop_web.{UUID}")).as_deref(), Some("/shop/web"));
        assert_eq!(app(&format!("shop_web_{UUID}")).as_deref(), Some("/shop/web"));
        assert_eq!(app(&format!("my.site_web.{UUID}")).as_deref(), Some("/my.site/web"), "dots in a segment");
        // A resident task's relaunch: <app>.<uuid>.<attempt>.
        assert_eq!(app(&format!("db.{UUID}.3")).as_deref(), Some("/db"));
        // Marathon 1.8+: <app>.instance-<uuid>._app.<incarnation>.
        assert_eq!(app(&format!("shop_web.instance-{UUID}._app.1")).as_deref(), Some("/shop/web"));
        assert_eq!(app(&format!("web.instance-{UUID}._app.12")).as_deref(), Some("/web"));
        // Pods: <pod>.instance-<uuid>.<container>; 1.4's marathon- instances and $anon.
        assert_eq!(app(&format!("pods_db.instance-{UUID}.sidecar")).as_deref(), Some("/pods/db"));
        assert_eq!(app(&format!("myGroup_myapp.marathon-{UUID}.$anon")), None, "upper case is no app id");
        assert_eq!(app(&format!("group_app.marathon-{UUID}.$anon")).as_deref(), Some("/group/app"));
        assert_eq!(app(&format!("a.instance-x.instance-{UUID}._app.2")).as_deref(), Some("/a.instance-x"));
        // Atoll's services framework: <app>.<32 hex digits>.
        assert_eq!(app("shop_web.3f2a9c0d8e7b4a1f9c0d8e7b4a1f9c0d").as_deref(), Some("/shop/web"));

        // Not Marathon's.
        for other in [
            "world-0-server__deb2e5df-d33e-43cd-a41b-10f1ea5c88b3", // a DC/OS SDK task
            "web.1",
            "web",
            &format!(".{UUID}"),
            &format!("web.instance-{UUID}._app.x"),
            &format!("web.instance-{UUID}."),
            &format!("Web.{UUID}"),
            &format!("web..{UUID}"),
            "web.deb2e5df-d33e-43cd-a41b-10f1ea5c88bz",
        ] {
            assert_eq!(app(other), None, "{other}");
        }
    }

    fn agent(id: &str, ip: [u8; 4]) -> Agent {
        Agent {
            id: AgentId::new(id),
            hostname: String::new(),
            address: SocketAddr::from((ip, 5051)),
            resources: Resources::new(),
            used: Resources::new(),
            attributes: Attributes::default(),
            state: AgentState::Active,
            drain: false,
            deactivated: false,
            drain_config: None,
            registered_at: Time::ZERO,
            version: String::new(),
            subnets: Vec::new(),
        }
    }

    /// A task on agent S0 with discovery ports `(number, protocol)`.
    fn task(id: &str, framework: &str, state: TaskState, ports: &[(u32, &str)], labels: &[(&str, &str)]) -> Task {
        let mut status = TaskStatus::new(TaskId::new(id), state, Source::Master, Time(1000));
        status.agent_id = Some(AgentId::new("S0"));
        Task {
            id: TaskId::new(id),
            name: "web".into(),
            framework_id: FrameworkId::new(framework),
            agent_id: AgentId::new("S0"),
            state,
            resources: Resources::new(),
            command: atoll_proto::model::CommandInfo::shell(String::new()),
            labels: Labels(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            discovery: Some(DiscoveryInfo {
                visibility: "FRAMEWORK".into(),
                name: "web".into(),
                ports: ports
                    .iter()
                    .map(|&(number, protocol)| DiscoveryPort {
                        number,
                        name: format!("p{number}"),
                        protocol: protocol.into(),
                        labels: Labels::default(),
                    })
                    .collect(),
                labels: Labels::default(),
            }),
            kill_grace_period_secs: None,
            health_check: None,
            networks: Vec::new(),
            ports: Vec::new(),
            ip_addresses: Vec::new(),
            healthy: None,
            status,
            executor_id: None,
        }
    }

    fn state(tasks: Vec<Task>) -> ClusterState {
        ClusterState {
            agents: vec![agent("S0", [198, 19, 255, 1])],
            frameworks: vec![
                Framework {
                    id: FrameworkId::new("M"),
                    info: FrameworkInfo::named("marathon"),
                    connected: true,
                    hosted: false,
                    registered_at: Time::ZERO,
                },
                Framework {
                    id: FrameworkId::new("U"),
                    info: FrameworkInfo::named("marathon-user"),
                    connected: true,
                    hosted: false,
                    registered_at: Time::ZERO,
                },
            ],
            tasks,
            ..ClusterState::default()
        }
    }

    const VHOST: [(&str, &str); 2] = [("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "web.example")];

    #[test]
    fn tasks_group_into_apps_with_their_health_ports_and_labels() {
        let id = |n: u8| format!("web.{n:08x}-c951-11e9-8d5b-70b3d5800001");
        let mut unhealthy = task(&id(2), "M", TaskState::Running, &[(31002, "tcp")], &VHOST);
        unhealthy.healthy = Some(false);
        // A Mesos health check: no requests before it passes.
        let check = atoll_proto::model::HealthCheck::new(atoll_proto::model::HealthCheckKind::Tcp { port: 31003 });
        let mut checked = task(&id(3), "M", TaskState::Running, &[(31003, "tcp")], &VHOST);
        checked.health_check = Some(check.clone());
        let mut passed = task(&id(7), "M", TaskState::Running, &[(31007, "tcp")], &VHOST);
        passed.health_check = Some(check);
        passed.healthy = Some(true);
        let apps = EdgeApps::from_mesos_state(&state(vec![
            task(&id(1), "M", TaskState::Running, &[(31001, "udp"), (31001, "tcp"), (31011, "tcp")], &VHOST),
            unhealthy,
            checked,
            passed,
            task(&id(4), "M", TaskState::Killing, &[(31004, "tcp")], &VHOST),
            task(&id(5), "M", TaskState::Staging, &[(31005, "tcp")], &VHOST),
            task(&id(6), "M", TaskState::Killed, &[(31006, "tcp")], &VHOST),
            task("world-0-server__deb2e5df-d33e-43cd-a41b-10f1ea5c88b3", "M", TaskState::Running, &[(1, "tcp")], &[]),
        ]));
        assert_eq!(apps.apps.len(), 1, "{apps:?}");
        let web = &apps.apps[0];
        assert_eq!(web.id, "/web");
        assert_eq!(web.labels.get("HAPROXY_0_VHOST").map(String::as_str), Some("web.example"));
        assert_eq!(web.ports, vec![EdgePort::default(); 2], "udp and tcp of one port count once");
        assert_eq!(web.instances, 5, "staging counts, killing and killed do not");
        assert!(web.has_health_checks);
        let view: Vec<(&str, TaskHealth, Vec<Option<SocketAddr>>)> =
            web.tasks.iter().map(|t| (&t.id[4..12], t.health, t.endpoints.clone())).collect();
        let at = |port: u16| Some(SocketAddr::from(([198, 19, 255, 1], port)));
        assert_eq!(
            view,
            vec![
                ("00000001", TaskHealth::Ready, vec![at(31001), at(31011)]),
                ("00000002", TaskHealth::Unhealthy, vec![at(31002)]),
                ("00000003", TaskHealth::Unhealthy, vec![at(31003)]),
                ("00000007", TaskHealth::Ready, vec![at(31007)]),
                ("00000004", TaskHealth::Draining, vec![at(31004)]),
            ]
        );

        let table = RouteTable::build(&apps, "external");
        let Lookup::Route(route) = table.lookup("web.example", "/") else { panic!("{table:?}") };
        let states: Vec<(u16, BackendState)> = route.backends.iter().map(|b| (b.address.port(), b.state)).collect();
        assert_eq!(
            states,
            vec![
                (31001, BackendState::Active),
                (31002, BackendState::Unhealthy),
                (31003, BackendState::Unhealthy),
                (31004, BackendState::Draining),
                (31007, BackendState::Active),
            ]
        );
    }

    #[test]
    fn the_newest_tasks_labels_win_and_haproxy_port_labels_are_service_ports() {
        let old = format!("web.{UUID}");
        let new = "web.instance-9c38cc52-c951-11e9-8d5b-70b3d5800001._app.1";
        let newer_labels =
            [("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "new.example"), ("HAPROXY_0_PORT", "10080")];
        let mut old_task = task(&old, "M", TaskState::Running, &[(31001, "tcp")], &VHOST);
        old_task.status.timestamp = Time(500);
        let new_task = task(new, "M", TaskState::Running, &[(31002, "tcp")], &newer_labels);
        let apps = EdgeApps::from_mesos_state(&state(vec![old_task.clone(), new_task.clone()]));
        assert_eq!(apps.apps.len(), 1, "both formats name /web");
        assert_eq!(apps.apps[0].labels.get("HAPROXY_0_VHOST").map(String::as_str), Some("new.example"));
        assert_eq!(apps.apps[0].ports, vec![EdgePort { service_port: Some(10080) }]);

        // A task being killed does not decide, however late its news.
        let mut killing = new_task;
        killing.state = TaskState::Killing;
        killing.status.timestamp = Time(9000);
        let apps = EdgeApps::from_mesos_state(&state(vec![old_task, killing]));
        assert_eq!(apps.apps[0].labels.get("HAPROXY_0_VHOST").map(String::as_str), Some("web.example"));
        assert_eq!(apps.apps[0].ports, vec![EdgePort { service_port: None }]);
    }

    #[test]
    fn atoll_app_id_labels_name_apps_and_frameworks_keep_their_apps_apart() {
        let labelled =
            task("custom-task-1", "M", TaskState::Running, &[(31001, "tcp")], &[(APP_ID_LABEL, "/shop/web")]);
        let bad_label = task("custom-task-2", "M", TaskState::Running, &[(31002, "tcp")], &[(APP_ID_LABEL, "Shop")]);
        let apps = EdgeApps::from_mesos_state(&state(vec![labelled, bad_label]));
        let ids: Vec<&str> = apps.apps.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["/shop/web"]);

        let root = task(&format!("web.{UUID}"), "M", TaskState::Running, &[(31001, "tcp")], &VHOST);
        let user = task(&format!("web.{UUID}"), "U", TaskState::Running, &[(31002, "tcp")], &[]);
        let gone = task(&format!("web.{UUID}"), "G", TaskState::Running, &[(31003, "tcp")], &[]);
        let apps = EdgeApps::from_mesos_state(&state(vec![root.clone(), user, gone]));
        let ids: Vec<(&str, usize)> = apps.apps.iter().map(|a| (a.id.as_str(), a.tasks.len())).collect();
        assert_eq!(ids, [("/web@G", 1), ("/web@marathon", 1), ("/web@marathon-user", 1)]);
        let apps = EdgeApps::from_mesos_state(&state(vec![root]));
        assert_eq!(apps.apps[0].id, "/web", "one framework: the app's own id");
    }

    #[test]
    fn container_network_tasks_are_reached_on_their_own_address_and_unknown_agents_nowhere() {
        let mut overlay = task(&format!("db.{UUID}"), "M", TaskState::Running, &[(5432, "tcp")], &[]);
        overlay.networks = vec![NetworkRequest { name: "dcos".into(), ip: None, port_mappings: Vec::new() }];
        overlay.ip_addresses = vec!["9.0.1.6".parse().unwrap()];
        let mut lost = task(&format!("web.{UUID}"), "M", TaskState::Running, &[(31001, "tcp")], &[]);
        lost.agent_id = AgentId::new("S9");
        let mut unresolved = state(vec![overlay, lost]);
        unresolved.agents.push(agent("S9", [0, 0, 0, 0]));
        let apps = EdgeApps::from_mesos_state(&unresolved);
        let endpoints: Vec<(&str, Vec<Option<SocketAddr>>)> =
            apps.apps.iter().map(|a| (a.id.as_str(), a.tasks[0].endpoints.clone())).collect();
        assert_eq!(endpoints, [("/db", vec![Some("9.0.1.6:5432".parse().unwrap())]), ("/web", vec![None])]);
    }
}
