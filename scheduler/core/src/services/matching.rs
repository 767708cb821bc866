//! Offer matching: what one new instance of an app needs from an offer, and the `TaskInfo`
//! that launches it.
//!
//! An offer may take several instances: the caller passes what is `left` of it after the
//! tasks already placed on it, and the [`Placement`]s of the app's live tasks (including the
//! ones just placed) so that constraints see them.
//!
//! Host ports: with host networking each port definition gets a host port from the offered
//! `ports` ranges, the lowest free ones, unless `requirePorts` asks for exactly the declared
//! ports (Marathon's `port` is otherwise only a service port). The agent exports them as
//! `PORT0`, `PORT_<NAME>`, … from the task's discovery info, so the environment carries only
//! the app's `env` plus Marathon's `MARATHON_APP_ID` and `MARATHON_APP_VERSION`.
//!
//! Every task carries two labels that map it back to its app: [`APP_ID_LABEL`] (the app id,
//! `/shop/web`) and [`APP_VERSION_LABEL`] (the app's `config_version`, as written by
//! [`super::format_version`]); [`app_id_of`] and [`version_of`] read them back.

use std::collections::BTreeMap;
use std::fmt;

use atoll_proto::model::{
    App, AppDefinition, AppId, CommandInfo, DiscoveryInfo, DiscoveryPort, HealthCheck, HealthCheckKind, Labels,
    NetworkRequest, Ranges, Resources, Scalar, TaskId, TaskInfo, TaskPortMapping, Time,
};

use super::constraints::{Constraint, Placement, placement_problem};
use super::validate::{NetworkMode, health_protocol, network_mode, protocols};
use super::{format_version, parse_version};
use crate::master::OfferView;

/// Task label holding the app id (`/shop/web`).
pub const APP_ID_LABEL: &str = "ATOLL_APP_ID";
/// Task label holding the app's `config_version` the task was launched for, as ISO 8601
/// (`2024-05-01T12:00:00.123Z`); tasks of an older configuration are replaced in a deployment.
pub const APP_VERSION_LABEL: &str = "ATOLL_APP_VERSION";
/// Environment variable with the app id, as Marathon sets it.
pub const ENV_APP_ID: &str = "MARATHON_APP_ID";
/// Environment variable with the app's `version` (ISO 8601), as Marathon sets it.
pub const ENV_APP_VERSION: &str = "MARATHON_APP_VERSION";

/// Why an offer cannot take a new instance of an app.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Mismatch {
    Cpus {
        wanted: f64,
        offered: f64,
    },
    /// MiB.
    Mem {
        wanted: f64,
        offered: f64,
    },
    /// MiB.
    Disk {
        wanted: f64,
        offered: f64,
    },
    /// Not enough free ports for the ports picked from the offer.
    Ports {
        wanted: usize,
        offered: u64,
    },
    /// `requirePorts` (or fixed host ports) that the offer does not have.
    RequiredPorts(Vec<u32>),
    /// A placement constraint refuses the agent; the reason from [`placement_problem`].
    Constraint(String),
    /// The definition itself cannot be launched; [`super::validate::validate`] refuses such
    /// definitions, so this only shows for one that bypassed it.
    Invalid(String),
}

impl Mismatch {
    /// The category, for a summary of declined offers: `cpus`, `mem`, `disk`, `ports`,
    /// `constraints` or `invalid`.
    pub fn summary_key(&self) -> &'static str {
        match self {
            Mismatch::Cpus { .. } => "cpus",
            Mismatch::Mem { .. } => "mem",
            Mismatch::Disk { .. } => "disk",
            Mismatch::Ports { .. } | Mismatch::RequiredPorts(_) => "ports",
            Mismatch::Constraint(_) => "constraints",
            Mismatch::Invalid(_) => "invalid",
        }
    }

    /// What an app waiting for offers lacks, in the words of a summary: `no agent with 4 cpus`,
    /// `no agent with 2 free ports`, or the constraint's reason.
    pub fn summary(&self) -> String {
        match self {
            Mismatch::Cpus { wanted, .. } => format!("no agent with {} cpus", amount(*wanted)),
            Mismatch::Mem { wanted, .. } => format!("no agent with {} MiB mem", amount(*wanted)),
            Mismatch::Disk { wanted, .. } => format!("no agent with {} MiB disk", amount(*wanted)),
            Mismatch::Ports { wanted, .. } => format!("no agent with {wanted} free ports"),
            Mismatch::RequiredPorts(ports) => format!("no agent offering ports {}", list(ports)),
            Mismatch::Constraint(reason) | Mismatch::Invalid(reason) => reason.clone(),
        }
    }
}

impl fmt::Display for Mismatch {
    /// `insufficient cpus (wants 4, offered 2)`, `required ports 80, 443 not offered`, …
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Cpus { wanted, offered } => {
                write!(f, "insufficient cpus (wants {}, offered {})", amount(*wanted), amount(*offered))
            }
            Mismatch::Mem { wanted, offered } => {
                write!(f, "insufficient mem (wants {} MiB, offered {} MiB)", amount(*wanted), amount(*offered))
            }
            Mismatch::Disk { wanted, offered } => {
                write!(f, "insufficient disk (wants {} MiB, offered {} MiB)", amount(*wanted), amount(*offered))
            }
            Mismatch::Ports { wanted, offered } => write!(f, "insufficient ports (wants {wanted}, offered {offered})"),
            Mismatch::RequiredPorts(ports) => write!(f, "required ports {} not offered", list(ports)),
            Mismatch::Constraint(reason) => f.write_str(reason),
            Mismatch::Invalid(reason) => write!(f, "invalid definition: {reason}"),
        }
    }
}

// Rounded as resources are (thousandths), so 0.1 + 0.2 does not print as 0.30000000000000004.
fn amount(value: f64) -> String {
    Scalar::from_f64(value).to_string()
}

fn list(ports: &[u32]) -> String {
    ports.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// The id of a new task: `<app.id.task_id_prefix()>.<unique>` (`shop_web.3f2…`); the shell
/// passes a fresh uuid as `unique`.
pub fn task_id_for(app: &App, unique: &str) -> TaskId {
    TaskId(format!("{}.{unique}", app.id.task_id_prefix()))
}

/// The app a task belongs to, from its [`APP_ID_LABEL`].
pub fn app_id_of(labels: &Labels) -> Option<AppId> {
    AppId::parse(labels.get(APP_ID_LABEL)?).ok()
}

/// The config version a task was launched for, from its [`APP_VERSION_LABEL`].
pub fn version_of(labels: &Labels) -> Option<Time> {
    parse_version(labels.get(APP_VERSION_LABEL)?)
}

/// The app and config version a task was launched for, from both labels; `None` for a task
/// that is not the services framework's.
pub fn app_of(labels: &Labels) -> Option<(AppId, Time)> {
    Some((app_id_of(labels)?, version_of(labels)?))
}

/// The labels every task of `app` carries: the app's own plus [`APP_ID_LABEL`] and
/// [`APP_VERSION_LABEL`].
pub fn task_labels(app: &App) -> Labels {
    let mut labels = Labels(app.definition.labels.clone());
    labels.insert(APP_ID_LABEL, app.id.as_str());
    labels.insert(APP_VERSION_LABEL, format_version(app.config_version));
    labels
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostPort {
    None,
    Any,
    Fixed(u64),
}

/// One port of the app, from a port definition (host networking) or a port mapping
/// (container networking).
struct PortNeed<'a> {
    name: Option<&'a str>,
    protocol: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
    host: HostPort,
    container_port: Option<u32>,
}

fn port_needs(def: &AppDefinition) -> Vec<PortNeed<'_>> {
    match network_mode(def) {
        NetworkMode::Host => match &def.port_definitions {
            // Marathon's default: one port, any offered.
            None => {
                vec![PortNeed { name: None, protocol: "tcp", labels: None, host: HostPort::Any, container_port: None }]
            }
            Some(definitions) => definitions
                .iter()
                .map(|d| PortNeed {
                    name: d.name.as_deref(),
                    protocol: &d.protocol,
                    labels: Some(&d.labels),
                    host: if def.require_ports { HostPort::Fixed(u64::from(d.port)) } else { HostPort::Any },
                    container_port: None,
                })
                .collect(),
        },
        NetworkMode::Container => def
            .container
            .iter()
            .flat_map(|c| &c.port_mappings)
            .map(|m| PortNeed {
                name: m.name.as_deref(),
                protocol: &m.protocol,
                labels: Some(&m.labels),
                host: match m.host_port {
                    None => HostPort::None,
                    Some(0) => HostPort::Any,
                    Some(port) => HostPort::Fixed(u64::from(port)),
                },
                container_port: Some(m.container_port),
            })
            .collect(),
    }
}

/// Host ports for each need (`None` where it takes none), from the offered ranges.
fn assign_ports(needs: &[PortNeed<'_>], offered: &Ranges) -> Result<Vec<Option<u64>>, Mismatch> {
    let fixed: Vec<u64> =
        needs.iter().filter_map(|n| if let HostPort::Fixed(p) = n.host { Some(p) } else { None }).collect();
    let missing: Vec<u32> =
        fixed.iter().filter(|p| !offered.contains_value(**p)).map(|p| u32::try_from(*p).unwrap_or(u32::MAX)).collect();
    if !missing.is_empty() {
        return Err(Mismatch::RequiredPorts(missing));
    }
    let mut free = offered.clone();
    free.remove(&Ranges::from_pairs(fixed.iter().map(|p| (*p, *p))));
    let wanted = needs.iter().filter(|n| n.host == HostPort::Any).count();
    let picked = free.take_lowest(wanted as u64).ok_or(Mismatch::Ports { wanted, offered: free.len() })?;
    let mut picked = picked.values();
    Ok(needs
        .iter()
        .map(|n| match n.host {
            HostPort::None => None,
            HostPort::Fixed(p) => Some(p),
            HostPort::Any => picked.next(),
        })
        .collect())
}

/// The `TaskInfo` for one new instance of `app` on this offer, or why it does not fit.
/// `left` is what remains of the offer (several tasks may be placed on one offer); `placed`
/// are where the app's live tasks are, for the constraints.
pub fn match_offer(
    app: &App,
    offer: &OfferView,
    left: &Resources,
    placed: &[Placement],
    task_id: TaskId,
) -> Result<TaskInfo, Mismatch> {
    let def = &app.definition;
    for (name, wanted) in [("cpus", def.cpus), ("mem", def.mem), ("disk", def.disk)] {
        let offered = left.scalar(name);
        if offered < Scalar::from_f64(wanted) {
            let offered = offered.as_f64();
            return Err(match name {
                "cpus" => Mismatch::Cpus { wanted, offered },
                "mem" => Mismatch::Mem { wanted, offered },
                _ => Mismatch::Disk { wanted, offered },
            });
        }
    }
    let needs = port_needs(def);
    let host_ports = assign_ports(&needs, &left.ranges("ports"))?;
    let constraints = Constraint::parse_all(&def.constraints).map_err(|errors| {
        let (i, error) = &errors[0];
        Mismatch::Invalid(format!("constraint {i}: {error}"))
    })?;
    let agent = Placement { hostname: offer.hostname.clone(), attributes: offer.attributes.clone() };
    if let Some(reason) = placement_problem(&constraints, &agent, placed) {
        return Err(Mismatch::Constraint(reason));
    }

    let mut resources =
        Resources::new().with_scalar("cpus", def.cpus).with_scalar("mem", def.mem).with_scalar("disk", def.disk);
    resources.add_ranges("ports", &Ranges::from_pairs(host_ports.iter().flatten().map(|p| (*p, *p))));
    let health_check = match def.health_checks.first() {
        Some(check) => Some(health_check(def, check, &needs, &host_ports)?),
        None => None,
    };
    Ok(TaskInfo {
        name: app.id.task_name(),
        task_id,
        agent_id: offer.agent_id.clone(),
        resources,
        command: command(app)?,
        labels: task_labels(app),
        discovery: Some(discovery(app, &needs, &host_ports)),
        kill_grace_period_secs: def.task_kill_grace_period_seconds,
        health_check,
        networks: networks(def, &needs, &host_ports),
    })
}

/// The container network to join (none on host networking), with the host ports mapped to
/// container ports where the app asked for a host port.
fn networks(def: &AppDefinition, needs: &[PortNeed<'_>], host_ports: &[Option<u64>]) -> Vec<NetworkRequest> {
    if network_mode(def) != NetworkMode::Container {
        return Vec::new();
    }
    let network = def.networks.iter().flatten().find(|n| n.mode == "container");
    let mut port_mappings = Vec::new();
    for (need, host_port) in needs.iter().zip(host_ports) {
        let (Some(host_port), Some(container_port)) = (host_port, need.container_port) else { continue };
        let (Ok(host_port), Ok(container_port)) = (u16::try_from(*host_port), u16::try_from(container_port)) else {
            continue;
        };
        for protocol in protocols(need.protocol).unwrap_or_else(|| vec![need.protocol]) {
            port_mappings.push(TaskPortMapping { host_port, container_port, protocol: protocol.to_owned() });
        }
    }
    vec![NetworkRequest {
        name: network.and_then(|n| n.name.clone()).unwrap_or_else(|| DEFAULT_NETWORK.to_owned()),
        ip: network.and_then(|n| n.ip_address),
        port_mappings,
    }]
}

/// The pool a container network without a name joins (IPAM's default pool).
const DEFAULT_NETWORK: &str = "atoll";

fn command(app: &App) -> Result<CommandInfo, Mismatch> {
    let def = &app.definition;
    let mut command = match (&def.cmd, &def.args) {
        (Some(cmd), None) => CommandInfo::shell(cmd.clone()),
        (None, Some(args)) => CommandInfo::argv(args.clone()),
        _ => return Err(Mismatch::Invalid("exactly one of cmd or args is needed".into())),
    };
    command.environment = def
        .env
        .iter()
        .filter(|(name, _)| *name != ENV_APP_ID && *name != ENV_APP_VERSION)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    command.environment.push((ENV_APP_ID.to_owned(), app.id.to_string()));
    command.environment.push((ENV_APP_VERSION.to_owned(), format_version(app.version)));
    Ok(command)
}

// Marathon's discovery info: one port per protocol, so `udp,tcp` is announced twice.
fn discovery(app: &App, needs: &[PortNeed<'_>], host_ports: &[Option<u64>]) -> DiscoveryInfo {
    let mut ports = Vec::new();
    for (need, host_port) in needs.iter().zip(host_ports) {
        // A container-network task is found at its own address, on its container port; a
        // host-network task at its agent's, on the host port.
        let number = match network_mode(&app.definition) {
            NetworkMode::Container => need.container_port,
            NetworkMode::Host => host_port.map(|p| p as u32),
        };
        let Some(number) = number else { continue };
        for protocol in protocols(need.protocol).unwrap_or_else(|| vec![need.protocol]) {
            ports.push(DiscoveryPort {
                number,
                name: need.name.unwrap_or_default().to_owned(),
                protocol: protocol.to_owned(),
                labels: Labels(need.labels.cloned().unwrap_or_default()),
            });
        }
    }
    DiscoveryInfo { visibility: "FRAMEWORK".into(), name: app.id.task_name(), ports, labels: Labels::default() }
}

fn health_check(
    def: &AppDefinition,
    check: &atoll_proto::model::HealthCheckDefinition,
    needs: &[PortNeed<'_>],
    host_ports: &[Option<u64>],
) -> Result<HealthCheck, Mismatch> {
    let port = || -> Result<u16, Mismatch> {
        let index = check.port_index.unwrap_or(0) as usize;
        let port = match check.port {
            Some(port) => Some(u64::from(port)),
            // A container-network task is checked inside its network namespace, on the
            // container port; a host-network task on the host port it was given.
            None => match network_mode(def) {
                NetworkMode::Host => host_ports.get(index).copied().flatten(),
                NetworkMode::Container => needs.get(index).and_then(|n| n.container_port).map(u64::from),
            },
        };
        port.and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| Mismatch::Invalid(format!("health check portIndex {index} names no port")))
    };
    let kind = match health_protocol(&check.protocol) {
        Some("MESOS_HTTP") => {
            HealthCheckKind::Http { port: port()?, path: check.path.clone().unwrap_or_else(|| "/".into()) }
        }
        Some("MESOS_TCP") => HealthCheckKind::Tcp { port: port()? },
        Some(_) => match &check.command {
            Some(command) => HealthCheckKind::Command { command: CommandInfo::shell(command.value.clone()) },
            None => return Err(Mismatch::Invalid("COMMAND health check without command.value".into())),
        },
        None => return Err(Mismatch::Invalid(format!("health check protocol `{}`", check.protocol))),
    };
    Ok(HealthCheck {
        kind,
        delay_secs: check.delay_seconds,
        interval_secs: check.interval_seconds,
        timeout_secs: check.timeout_seconds,
        consecutive_failures: check.max_consecutive_failures,
        grace_period_secs: check.grace_period_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::test_support::app;
    use atoll_proto::model::{AgentId, FrameworkId, OfferId};
    use serde_json::json;

    fn offer(resources: &str, hostname: &str, attributes: &str) -> OfferView {
        OfferView {
            id: OfferId::new("o1"),
            framework_id: FrameworkId::new("f1"),
            agent_id: AgentId::new(format!("agent-{hostname}")),
            hostname: hostname.into(),
            agent_address: "127.0.0.1:5051".parse().unwrap(),
            attributes: attributes.parse().unwrap(),
            resources: resources.parse().unwrap(),
            role: "*".into(),
        }
    }

    fn launch(app: &App, offer: &OfferView) -> Result<TaskInfo, Mismatch> {
        match_offer(app, offer, &offer.resources, &[], task_id_for(app, "u1"))
    }

    fn web() -> App {
        app(
            json!({
                "id": "/shop/web", "instances": 2, "cmd": "python3 -m http.server $PORT0",
                "cpus": 0.5, "mem": 64, "disk": 10, "env": {"MODE": "prod", "MARATHON_APP_ID": "spoofed"},
                "labels": {"HAPROXY_GROUP": "external"},
                "portDefinitions": [
                    {"port": 0, "name": "http", "labels": {"VIP_0": "/web:80"}},
                    {"port": 0, "name": "dns", "protocol": "udp,tcp"}],
                "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 5,
                                  "intervalSeconds": 2, "timeoutSeconds": 1, "maxConsecutiveFailures": 4,
                                  "delaySeconds": 0}],
                "taskKillGracePeriodSeconds": 7
            }),
            Time(1_714_564_800_123),
        )
    }

    #[test]
    fn builds_the_task_info_of_a_marathon_app() {
        let app = web();
        let offer = offer("cpus:4;mem:1024;disk:100;ports:[31000-31000,31005-31010]", "node-1", "");
        let task = launch(&app, &offer).unwrap();
        assert_eq!(task.task_id.as_str(), "shop_web.u1");
        assert_eq!(task.name, "web.shop");
        assert_eq!(task.agent_id, offer.agent_id);
        assert_eq!(task.resources.to_string(), "cpus:0.5;disk:10;mem:64;ports:[31000-31000,31005-31005]");
        assert_eq!(task.command, {
            let mut c = CommandInfo::shell("python3 -m http.server $PORT0");
            c.environment = vec![
                ("MODE".into(), "prod".into()),
                ("MARATHON_APP_ID".into(), "/shop/web".into()),
                ("MARATHON_APP_VERSION".into(), "2024-05-01T12:00:00.123Z".into()),
            ];
            c
        });
        assert_eq!(task.labels.get("HAPROXY_GROUP"), Some("external"));
        assert_eq!(app_id_of(&task.labels), Some(app.id.clone()));
        assert_eq!(version_of(&task.labels), Some(app.config_version));
        assert_eq!(app_of(&task.labels), Some((app.id.clone(), app.config_version)));
        assert_eq!(task.labels.get(APP_VERSION_LABEL), Some("2024-05-01T12:00:00.123Z"));
        let discovery = task.discovery.unwrap();
        assert_eq!(discovery.visibility, "FRAMEWORK");
        assert_eq!(discovery.name, "web.shop");
        let ports: Vec<(u32, &str, &str)> =
            discovery.ports.iter().map(|p| (p.number, p.name.as_str(), p.protocol.as_str())).collect();
        assert_eq!(ports, vec![(31000, "http", "tcp"), (31005, "dns", "udp"), (31005, "dns", "tcp")]);
        assert_eq!(discovery.ports[0].labels.get("VIP_0"), Some("/web:80"));
        assert_eq!(task.kill_grace_period_secs, Some(7.0));
        let check = task.health_check.unwrap();
        assert_eq!(check.kind, HealthCheckKind::Http { port: 31000, path: "/health".into() });
        assert_eq!(
            (
                check.grace_period_secs,
                check.interval_secs,
                check.timeout_secs,
                check.consecutive_failures,
                check.delay_secs
            ),
            (5.0, 2.0, 1.0, 4, 0.0)
        );
        assert_eq!(check.problem(), None);
    }

    #[test]
    fn args_tcp_and_command_checks() {
        let argv =
            app(json!({"id": "/echo", "args": ["/bin/echo", "hi"], "healthChecks": [{"protocol": "TCP"}]}), Time(1));
        let task = launch(&argv, &offer("cpus:1;mem:128;ports:[5-9]", "n", "")).unwrap();
        assert_eq!(task.command.arguments, vec!["/bin/echo", "hi"]);
        assert!(!task.command.shell);
        assert_eq!(task.health_check.unwrap().kind, HealthCheckKind::Tcp { port: 5 });
        assert_eq!(task.resources.ranges("ports").len(), 1, "one port by default");

        let cmd = app(
            json!({"id": "/c", "cmd": "x", "portDefinitions": [],
                   "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -f ok"}}]}),
            Time(1),
        );
        let task = launch(&cmd, &offer("cpus:1;mem:128", "n", "")).unwrap();
        assert_eq!(
            task.health_check.unwrap().kind,
            HealthCheckKind::Command { command: CommandInfo::shell("test -f ok") }
        );
        assert!(task.resources.ranges("ports").is_empty());
        assert_eq!(task.discovery.unwrap().ports, vec![]);
    }

    #[test]
    fn required_ports_are_exactly_the_declared_ones() {
        let fixed = app(
            json!({"id": "/dns", "cmd": "x", "requirePorts": true,
                   "portDefinitions": [{"port": 8053, "name": "dns"}, {"port": 8080}]}),
            Time(1),
        );
        let task = launch(&fixed, &offer("cpus:1;mem:128;ports:[8000-9000]", "n", "")).unwrap();
        assert_eq!(task.resources.ranges("ports").pairs(), &[(8053, 8053), (8080, 8080)]);
        let refused = launch(&fixed, &offer("cpus:1;mem:128;ports:[8050-8060]", "n", "")).unwrap_err();
        assert_eq!(refused, Mismatch::RequiredPorts(vec![8080]));
        assert_eq!(refused.to_string(), "required ports 8080 not offered");
        assert_eq!(refused.summary_key(), "ports");
    }

    #[test]
    fn reports_what_is_missing() {
        let app = web();
        let cpus = launch(&app, &offer("cpus:0.25;mem:1024;disk:100;ports:[1-10]", "n", "")).unwrap_err();
        assert_eq!(cpus.to_string(), "insufficient cpus (wants 0.5, offered 0.25)");
        assert_eq!(cpus.summary(), "no agent with 0.5 cpus");
        assert_eq!(cpus.summary_key(), "cpus");
        let mem = launch(&app, &offer("cpus:1;mem:32;disk:100;ports:[1-10]", "n", "")).unwrap_err();
        assert_eq!(mem.to_string(), "insufficient mem (wants 64 MiB, offered 32 MiB)");
        let disk = launch(&app, &offer("cpus:1;mem:64;ports:[1-10]", "n", "")).unwrap_err();
        assert_eq!(disk.summary_key(), "disk");
        let ports = launch(&app, &offer("cpus:1;mem:64;disk:10;ports:[1-1]", "n", "")).unwrap_err();
        assert_eq!(ports, Mismatch::Ports { wanted: 2, offered: 1 });
        assert_eq!(ports.to_string(), "insufficient ports (wants 2, offered 1)");
    }

    #[test]
    fn what_is_left_of_an_offer_and_constraints() {
        let mut app = web();
        app.definition.constraints = vec![vec!["hostname".into(), "UNIQUE".into()]];
        let offer = offer("cpus:4;mem:1024;disk:100;ports:[31000-31003]", "node-1", "rack:r1");
        let first = match_offer(&app, &offer, &offer.resources, &[], task_id_for(&app, "a")).unwrap();
        let left = offer.resources.minus(&first.resources);
        let here = Placement { hostname: "node-1".into(), attributes: offer.attributes.clone() };
        let second = match_offer(&app, &offer, &left, std::slice::from_ref(&here), task_id_for(&app, "b"));
        assert_eq!(second, Err(Mismatch::Constraint("constraint UNIQUE hostname unsatisfiable on node-1".into())));
        assert_eq!(second.unwrap_err().summary_key(), "constraints");

        app.definition.constraints.clear();
        let second = match_offer(&app, &offer, &left, &[here], task_id_for(&app, "b")).unwrap();
        assert_eq!(second.resources.ranges("ports").pairs(), &[(31002, 31003)], "the next free ports");
        let left = left.minus(&second.resources);
        let third = match_offer(&app, &offer, &left, &[], task_id_for(&app, "c")).unwrap_err();
        assert_eq!(third.summary_key(), "ports");
    }

    #[test]
    fn container_networks_map_host_ports_and_are_found_on_container_ports() {
        let mut definition: AppDefinition = serde_json::from_value(serde_json::json!({
            "id": "/db",
            "cmd": "serve",
            "cpus": 0.1,
            "mem": 32,
            "networks": [{ "mode": "container", "name": "atoll", "ipAddress": "198.18.0.77" }],
            "container": { "type": "MESOS", "portMappings": [
                { "containerPort": 5432, "hostPort": 0, "name": "pg", "labels": { "VIP_0": "/db:5432" } },
                { "containerPort": 9187, "name": "metrics" }
            ] },
            "healthChecks": [{ "protocol": "MESOS_TCP", "portIndex": 0 }],
        }))
        .unwrap();
        definition.id = "/db".into();
        let app = App { id: AppId::parse("/db").unwrap(), definition, version: Time(1), config_version: Time(1) };
        let offer = offer("cpus:1;mem:128;ports:[31000-31005]", "node-1", "");
        let task = match_offer(&app, &offer, &offer.resources, &[], TaskId::new("db.1")).unwrap();
        assert_eq!(task.resources.ranges("ports").pairs(), &[(31000, 31000)], "only the mapped port takes a host port");
        assert_eq!(task.networks.len(), 1);
        let network = &task.networks[0];
        assert_eq!(network.name, "atoll");
        assert_eq!(network.ip, Some("198.18.0.77".parse().unwrap()));
        assert_eq!(network.port_mappings.len(), 1);
        assert_eq!((network.port_mappings[0].host_port, network.port_mappings[0].container_port), (31000, 5432));
        let discovery = task.discovery.unwrap();
        let numbers: Vec<u32> = discovery.ports.iter().map(|p| p.number).collect();
        assert_eq!(numbers, vec![5432, 9187], "found at its own address, on container ports");
        assert!(matches!(task.health_check.unwrap().kind, HealthCheckKind::Tcp { port: 5432 }));
    }
}
