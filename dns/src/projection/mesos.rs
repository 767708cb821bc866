//! A Mesos `/master/state` (JSON) read into the normalized model the way Mesos-DNS reads it
//! (`records/state`): frameworks with their running-or-not tasks, agents by the host of their
//! libprocess PID, the task IPs of each source from the latest `TASK_RUNNING` status, the
//! leader from `leader`.
//!
//! Reading is lenient where Mesos-DNS's is fatal or crashes (a PID that does not parse, an
//! agent without PID, a single-port range): one odd entry must not cost every name of the
//! cluster. Host names are never looked up here (no sockets in the projection): the caller
//! passes a resolver, typically a table filled beforehand from [`hostnames`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use atoll_proto::model::TaskState;
use serde_json::Value;

use super::model::{
    AgentInput, Discovery, DiscoveryPort, FrameworkHost, FrameworkInput, Model, TaskInput, TaskIps, TaskKey,
};

/// The status label holding a Docker container's IP.
const DOCKER_IP_LABEL: &str = "Docker.NetworkSettings.IPAddress";
/// The status label holding a Mesos containerizer container's IP.
const MESOS_IP_LABEL: &str = "MesosContainerizer.NetworkSettings.IPAddress";

/// Why a `/master/state` cannot be used (the previous records then stay, as in Mesos-DNS).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MesosStateError {
    #[error("a Mesos /master/state is a JSON object, this is {0}")]
    NotAnObject(&'static str),
    #[error("the Mesos state names no leading master (`leader` is missing or empty)")]
    NoLeader,
}

/// What a `/master/state` says, normalized.
#[derive(Clone, Debug)]
pub struct MesosState {
    pub model: Model,
    /// The leading master's address; `None` when its PID names a host that did not resolve.
    pub leader: Option<SocketAddr>,
}

/// Reads a `/master/state`; `resolve` turns the host names found in PIDs (instead of IPs) into
/// addresses, as Mesos-DNS's `hostToIPs` does with a lookup.
pub fn parse(state: &Value, resolve: &dyn Fn(&str) -> Vec<IpAddr>) -> Result<MesosState, MesosStateError> {
    if !state.is_object() {
        return Err(MesosStateError::NotAnObject(kind(state)));
    }
    let leader_pid = text(state, "leader");
    if leader_pid.is_empty() {
        return Err(MesosStateError::NoLeader);
    }
    let leader = upid(leader_pid).and_then(|(host, port)| {
        let port = port.parse::<u16>().ok()?;
        host_ips(&host, resolve).first().map(|ip| SocketAddr::new(*ip, port))
    });

    let mut model = Model::new();
    for slave in list(state, "slaves") {
        let (ips, port) = match upid(text(slave, "pid")) {
            Some((host, port)) => (host_ips(&host, resolve), port.parse::<u16>().ok()),
            // Mesos-DNS would crash here; the host name is the next best address.
            None => (host_ips(text(slave, "hostname"), resolve), None),
        };
        model.put_agent(text(slave, "id"), Some(AgentInput { ips, port }));
    }
    for framework in list(state, "frameworks") {
        let framework_id = text(framework, "id");
        let host = match upid(text(framework, "pid")) {
            Some((host, port)) => FrameworkHost::Address { ips: host_ips(&host, resolve), port: port.parse().ok() },
            None => FrameworkHost::Address { ips: host_ips(text(framework, "hostname"), resolve), port: None },
        };
        model.put_framework(framework_id, Some(FrameworkInput { name: text(framework, "name").to_owned(), host }));
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        for task in list(framework, "tasks") {
            let task_id = text(task, "id");
            let occurrence = seen.entry(task_id).or_default();
            let key =
                TaskKey { framework_id: framework_id.to_owned(), task_id: task_id.to_owned(), occurrence: *occurrence };
            *occurrence += 1;
            model.put_task(key, Some(task_input(task)));
        }
    }
    Ok(MesosState { model, leader })
}

/// The host names (not IPs) in the PIDs and host names a [`parse`] of this state would ask its
/// resolver about, so an I/O shell can look them up first.
pub fn hostnames(state: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut add = |host: &str| {
        if !host.is_empty() && parse_ip(host).is_none() {
            names.insert(host.to_owned());
        }
    };
    if let Some((host, _)) = upid(text(state, "leader")) {
        add(&host);
    }
    for entry in list(state, "slaves").chain(list(state, "frameworks")) {
        match upid(text(entry, "pid")) {
            Some((host, _)) => add(&host),
            None => add(text(entry, "hostname")),
        }
    }
    names
}

fn task_input(task: &Value) -> TaskInput {
    let statuses: Vec<&Value> = list(task, "statuses").collect();
    // Mesos does not order statuses: the latest TASK_RUNNING one by timestamp holds the IPs
    // (the first of equal timestamps wins, as in Mesos-DNS).
    let mut latest: Option<(f64, &Value)> = None;
    for status in &statuses {
        if text(status, "state") == "TASK_RUNNING" {
            let timestamp = status.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0);
            if latest.is_none_or(|(best, _)| timestamp > best) {
                latest = Some((timestamp, status));
            }
        }
    }
    let running = latest.map(|(_, status)| status);
    let ips = TaskIps {
        netinfo: running.map(network_info_ips).unwrap_or_default(),
        docker: running.map(|s| label_ips(s, DOCKER_IP_LABEL)).unwrap_or_default(),
        mesos: running.map(|s| label_ips(s, MESOS_IP_LABEL)).unwrap_or_default(),
    };
    let discovery = task.get("discovery").filter(|d| d.is_object()).map(|d| Discovery {
        name: text(d, "name").to_owned(),
        ports: list(d.get("ports").unwrap_or(&Value::Null), "ports")
            .map(|p| DiscoveryPort {
                number: p.get("number").and_then(Value::as_u64).unwrap_or(0),
                name: text(p, "name").to_owned(),
                protocol: text(p, "protocol").to_owned(),
                labels: labels(p.get("labels")),
            })
            .collect(),
    });
    TaskInput {
        id: text(task, "id").to_owned(),
        name: text(task, "name").to_owned(),
        agent_id: text(task, "slave_id").to_owned(),
        state: TaskState::from_name(text(task, "state")).unwrap_or(TaskState::Unknown),
        has_health_check: task.get("health_check").is_some_and(|c| !c.is_null()),
        healthy: running.and_then(|s| s.get("healthy")).and_then(Value::as_bool),
        ips,
        ports: task.get("resources").map(|r| ports(text(r, "ports"))).unwrap_or_default(),
        discovery,
        labels: labels(task.get("labels")),
    }
}

/// `container_status.network_infos[].ip_addresses[].ip_address`, or the Mesos 0.25
/// `network_infos[].ip_address` when a network has no list.
fn network_info_ips(status: &Value) -> Vec<IpAddr> {
    let infos = status.get("container_status").map(|c| list(c, "network_infos"));
    let mut ips = Vec::new();
    for info in infos.into_iter().flatten() {
        let addresses: Vec<&Value> = list(info, "ip_addresses").collect();
        if addresses.is_empty() {
            ips.extend(parse_ip(text(info, "ip_address")));
        } else {
            ips.extend(addresses.into_iter().filter_map(|a| parse_ip(text(a, "ip_address"))));
        }
    }
    ips
}

fn label_ips(status: &Value, key: &str) -> Vec<IpAddr> {
    labels(status.get("labels")).into_iter().filter(|(k, _)| k == key).filter_map(|(_, v)| parse_ip(&v)).collect()
}

/// Labels as Mesos renders them: `[{key, value}]`, or `{"labels": [...]}` (protobuf style).
fn labels(value: Option<&Value>) -> Vec<(String, String)> {
    let items = match value {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Object(object)) => object.get("labels").and_then(Value::as_array).map_or(&[][..], Vec::as_slice),
        _ => &[],
    };
    items.iter().map(|l| (text(l, "key").to_owned(), text(l, "value").to_owned())).collect()
}

/// Mesos-DNS `Resources.Ports`: `"[31000-31001, 31005-31005]"` expanded, in order. Ranges are
/// bounded to the port space so a hostile range cannot make millions of records.
fn ports(ranges: &str) -> Vec<u64> {
    let inner = ranges.trim().trim_start_matches('[').trim_end_matches(']');
    let mut out = Vec::new();
    for range in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u64>(), hi.trim().parse::<u64>()) else { continue };
        out.extend(lo..=hi.min(u64::from(u16::MAX)));
    }
    out
}

/// A libprocess PID `id@host:port` as (host, port); `None` unless it has one `@` and a
/// `host:port` (IPv6 hosts in brackets), as Mesos-DNS's `upid.Parse`.
fn upid(pid: &str) -> Option<(String, String)> {
    let (id, address) = pid.trim_matches(|c| c == '"' || c == ' ').split_once('@')?;
    if address.contains('@') || id.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        let (host, port) = address.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    Some((host.to_owned(), port.to_owned()))
}

/// Mesos-DNS `hostToIPs`: the IP itself, or what the name resolves to.
fn host_ips(host: &str, resolve: &dyn Fn(&str) -> Vec<IpAddr>) -> Vec<IpAddr> {
    if host.is_empty() {
        return Vec::new();
    }
    match parse_ip(host) {
        Some(ip) => vec![ip],
        None => resolve(host).into_iter().map(|ip| ip.to_canonical()).collect(),
    }
}

/// An IP in the canonical form Mesos-DNS's Go serves (an IPv4-mapped IPv6 address is IPv4).
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
    value.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_ranges_expand_like_mesos_dns() {
        assert_eq!(ports("[31354-31354, 31355-31355]"), vec![31354, 31355]);
        assert_eq!(ports("[31737-31738]"), vec![31737, 31738]);
        assert_eq!(ports("[]"), Vec::<u64>::new());
        assert_eq!(ports(""), Vec::<u64>::new());
        assert_eq!(ports("[80]"), vec![80]);
        assert_eq!(ports("[x-1, 5-6]"), vec![5, 6]);
        assert_eq!(ports("[65535-70000]"), vec![65535]);
    }

    #[test]
    fn pids() {
        assert_eq!(upid("master@1.2.3.4:5050"), Some(("1.2.3.4".into(), "5050".into())));
        assert_eq!(upid("slave(1)@[2001:db8::1]:5051"), Some(("2001:db8::1".into(), "5051".into())));
        assert_eq!(upid("scheduler@host.example:1"), Some(("host.example".into(), "1".into())));
        assert_eq!(upid("1.2.3.4:5050"), None);
        assert_eq!(upid("a@b@c:1"), None);
        assert_eq!(upid("a@2001:db8::1:5"), None);
        assert_eq!(upid(""), None);
    }

    #[test]
    fn leader_is_required_and_names_resolve_through_the_caller() {
        let none = |_: &str| Vec::new();
        assert_eq!(parse(&json!([]), &none).unwrap_err(), MesosStateError::NotAnObject("an array"));
        assert_eq!(parse(&json!({"leader": ""}), &none).unwrap_err(), MesosStateError::NoLeader);
        let state = json!({
            "leader": "master@m.example:5050",
            "slaves": [{"id": "s1", "pid": "slave(1)@agent.example:5051"}, {"id": "s2", "hostname": "10.0.0.2"}],
            "frameworks": [{"id": "f", "name": "x", "hostname": "sched.example"}],
        });
        assert_eq!(
            hostnames(&state),
            ["agent.example", "m.example", "sched.example"].into_iter().map(String::from).collect()
        );
        let parsed = parse(&state, &none).unwrap();
        assert_eq!(parsed.leader, None);
        assert_eq!(parsed.model.agent("s1"), Some(&AgentInput { ips: vec![], port: Some(5051) }));
        let table = |host: &str| match host {
            "m.example" => vec!["198.19.255.1".parse().unwrap()],
            "agent.example" => vec!["::ffff:198.19.255.2".parse().unwrap()],
            _ => vec![],
        };
        let parsed = parse(&state, &table).unwrap();
        assert_eq!(parsed.leader, Some("198.19.255.1:5050".parse().unwrap()));
        assert_eq!(parsed.model.agent("s1").unwrap().ips, vec!["198.19.255.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(parsed.model.agent("s2"), Some(&AgentInput { ips: vec!["10.0.0.2".parse().unwrap()], port: None }));
    }

    #[test]
    fn task_ips_come_from_the_latest_running_status() {
        let task = json!({
            "id": "t", "name": "t", "slave_id": "s", "state": "TASK_RUNNING",
            "statuses": [
                {"state": "TASK_RUNNING", "timestamp": 2.0, "healthy": true,
                 "labels": [{"key": DOCKER_IP_LABEL, "value": "10.0.0.2"}],
                 "container_status": {"network_infos": [{"ip_address": "10.1.0.2"}]}},
                {"state": "TASK_RUNNING", "timestamp": 1.0, "labels": [{"key": DOCKER_IP_LABEL, "value": "10.0.0.1"}]},
                {"state": "TASK_STARTING", "timestamp": 3.0,
                 "labels": [{"key": MESOS_IP_LABEL, "value": "10.0.0.3"}]},
            ],
            "health_check": {"type": "TCP"},
        });
        let input = task_input(&task);
        assert_eq!(input.ips.docker, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(input.ips.netinfo, vec!["10.1.0.2".parse::<IpAddr>().unwrap()]);
        assert!(input.ips.mesos.is_empty());
        assert!(input.has_health_check);
        assert_eq!(input.healthy, Some(true));
    }
}
