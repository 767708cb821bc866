//! The pure generator: the records one task, agent, framework, the masters or the DNS server
//! itself contribute, following Mesos-DNS's `records/generator.go` and `records/chains.go`
//! name for name and in the same order (the order shows in `/v1/enumerate`).
//!
//! Each function sees only its own inputs, so the projection can redo just the contributions an
//! event touched. A name that is not a valid host name (an empty label where a framework name
//! sanitised to nothing, a label over 63 characters, a raw discovery name with spaces) is left
//! out: Mesos-DNS would store it, but no client could ask for it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use crate::records::{Name, Record, RecordData};

use super::hash::{agent_id_tail, task_id_hash};
use super::model::{AgentInput, FrameworkHost, FrameworkInput, TaskInput};
use super::{DnsConfig, IpSource, Masters};

/// SRV data as Mesos-DNS serves it (`SRVRecordDefaultWeight` 1, priority 0).
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 1;

/// Collects one producer's records in generation order, each once.
#[derive(Default)]
struct Out {
    records: Vec<Record>,
    seen: HashSet<Record>,
}

impl Out {
    fn push(&mut self, name: &str, data: RecordData) {
        let Some(name) = dns_name(name) else { return };
        let record = Record { name, data };
        if self.seen.insert(record.clone()) {
            self.records.push(record);
        }
    }

    /// An A or AAAA record, by the address's family.
    fn ip(&mut self, name: &str, ip: IpAddr) {
        let data = match ip.to_canonical() {
            IpAddr::V4(v4) => RecordData::A(v4),
            IpAddr::V6(v6) => RecordData::Aaaa(v6),
        };
        self.push(name, data);
    }

    fn srv(&mut self, name: &str, target: &str, port: u64) {
        let (Ok(port), Some(target)) = (u16::try_from(port), dns_name(target)) else { return };
        self.push(name, RecordData::Srv { priority: SRV_PRIORITY, weight: SRV_WEIGHT, port, target });
    }

    fn finish(self) -> Vec<Record> {
        self.records
    }
}

/// `text` (fully qualified, with its trailing dot) as a [`Name`], if every label is 1 to 63
/// letters, digits, `-` or `_` (SRV owner labels) and the whole fits in 253 characters.
fn dns_name(text: &str) -> Option<Name> {
    let body = text.strip_suffix('.')?;
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (!body.is_empty() && body.len() <= 253 && body.split('.').all(label_ok)).then(|| Name::new(text))
}

/// `.<domain>.`, the tail of every name in the Mesos zone.
fn tail(config: &DnsConfig) -> String {
    format!(".{}.", config.domain)
}

/// The records of one published task (Mesos-DNS `taskRecord`). `agent_ips` are the addresses
/// of its agent: the `host` IP source and the `.slave` names.
pub fn task_records(config: &DnsConfig, task: &TaskInput, framework_name: &str, agent_ips: &[IpAddr]) -> Vec<Record> {
    let mut out = Out::default();
    let spec = config.label_spec;
    let context = Context {
        config,
        task,
        framework: spec.domain_frag(framework_name),
        id_hash: task_id_hash(&task.id),
        agent_tail: agent_id_tail(&task.agent_id),
        task_ips: task_ips(config, task, agent_ips),
        agent_ips,
    };
    match task.discovery() {
        Some(discovery) => {
            // Mesos-DNS publishes the raw discovery name too ("LEGACY" in its code); clients of
            // names like `big.dog.marathon.mesos` exist.
            context.records(&discovery.name, &mut out);
            context.records(&spec.label(&discovery.name), &mut out);
        }
        None => context.records(&spec.label(&task.name), &mut out),
    }
    out.finish()
}

/// Mesos-DNS `Task.IPs`: the addresses of the first source in `ip_sources` that has any.
fn task_ips(config: &DnsConfig, task: &TaskInput, agent_ips: &[IpAddr]) -> Vec<IpAddr> {
    for source in &config.ip_sources {
        let ips = match source {
            IpSource::NetInfo => &task.ips.netinfo[..],
            IpSource::Docker => &task.ips.docker[..],
            IpSource::Mesos => &task.ips.mesos[..],
            IpSource::Host => agent_ips,
        };
        if !ips.is_empty() {
            return ips.to_vec();
        }
    }
    Vec::new()
}

/// What Mesos-DNS's `taskContextRecord` closes over.
struct Context<'a> {
    config: &'a DnsConfig,
    task: &'a TaskInput,
    framework: String,
    id_hash: String,
    agent_tail: String,
    task_ips: Vec<IpAddr>,
    agent_ips: &'a [IpAddr],
}

impl Context<'_> {
    /// The records under one spelling of the task's name (Mesos-DNS `taskContextRecord`).
    fn records(&self, task_name: &str, out: &mut Out) {
        let spec = self.config.label_spec;
        let tail = tail(self.config);
        let framework = &self.framework;
        let canonical = format!("{task_name}-{}-{}.{framework}", self.id_hash, self.agent_tail);
        let short = format!("{task_name}.{framework}");

        for ip in &self.task_ips {
            out.ip(&format!("{short}{tail}"), *ip);
            out.ip(&format!("{canonical}{tail}"), *ip);
        }
        for ip in self.agent_ips {
            out.ip(&format!("{short}.slave{tail}"), *ip);
            out.ip(&format!("{canonical}.slave{tail}"), *ip);
        }

        // Resource ports point at the agent (`.slave` target). With discovery info the bare
        // `_task._tcp` name is left to the discovery ports, which know the container's ports.
        let discovery = self.task.discovery();
        let subdomains: &[&str] = if discovery.is_some() { &[".slave"] } else { &[".slave", ""] };
        let slave_target = format!("{canonical}.slave{tail}");
        for &port in &self.task.ports {
            for subdomain in subdomains {
                for protocol in ["tcp", "udp"] {
                    out.srv(&format!("_{task_name}._{protocol}.{framework}{subdomain}{tail}"), &slave_target, port);
                }
            }
        }

        let Some(discovery) = discovery else { return };
        let target = format!("{canonical}{tail}");
        for port in &discovery.ports {
            let protocol = spec.label(&port.protocol);
            let protocols: &[&str] = if protocol.is_empty() { &["tcp", "udp"] } else { &[&protocol] };
            let names: Vec<String> =
                protocols.iter().map(|protocol| format!("_{task_name}._{protocol}.{framework}")).collect();
            for name in &names {
                out.srv(&format!("{name}{tail}"), &target, port.number);
            }
            let port_name = spec.label(&port.name);
            if !port_name.is_empty() {
                for name in &names {
                    out.srv(&format!("_{port_name}.{name}{tail}"), &target, port.number);
                }
            }
        }
    }
}

/// `slave.<domain>` (each agent address) and `_slave._tcp.<domain>` (Mesos-DNS `slaveRecords`).
pub fn agent_records(config: &DnsConfig, agent: &AgentInput) -> Vec<Record> {
    let mut out = Out::default();
    let name = format!("slave.{}.", config.domain);
    for ip in &agent.ips {
        out.ip(&name, *ip);
    }
    if let (false, Some(port)) = (agent.ips.is_empty(), agent.port) {
        out.srv(&format!("_slave._tcp.{}.", config.domain), &name, u64::from(port));
    }
    out.finish()
}

/// `<framework>.<domain>` and `_framework._tcp.<framework>.<domain>` (Mesos-DNS
/// `frameworkRecords`); a hosted framework is where the leader is.
pub fn framework_records(config: &DnsConfig, framework: &FrameworkInput, leader: Option<SocketAddr>) -> Vec<Record> {
    let mut out = Out::default();
    let (ips, port) = match &framework.host {
        FrameworkHost::Address { ips, port } => (ips.clone(), *port),
        FrameworkHost::Leader => match leader {
            Some(leader) => (vec![leader.ip()], Some(leader.port())),
            None => (Vec::new(), None),
        },
    };
    if ips.is_empty() {
        return Vec::new();
    }
    let name = format!("{}.{}.", config.label_spec.domain_frag(&framework.name), config.domain);
    for ip in ips {
        out.ip(&name, ip);
    }
    if let Some(port) = port {
        out.srv(&format!("_framework._tcp.{name}"), &name, u64::from(port));
    }
    out.finish()
}

/// `leader.`, `master.`, `masterN.`, `_leader._tcp|_udp.` (Mesos-DNS `masterRecord`): nothing
/// without a leader; masters numbered in list order, the leader appended when not listed.
pub fn master_records(config: &DnsConfig, masters: &Masters) -> Vec<Record> {
    let mut out = Out::default();
    let Some(leader) = masters.leader else { return Vec::new() };
    let domain = &config.domain;
    let leader_name = format!("leader.{domain}.");
    let all = format!("master.{domain}.");
    out.ip(&leader_name, leader.ip());
    out.ip(&all, leader.ip());
    for protocol in ["tcp", "udp"] {
        out.srv(&format!("_leader._{protocol}.{domain}."), &leader_name, u64::from(leader.port()));
    }

    let mut listed_leader = false;
    let mut index = 0;
    for &master in &masters.masters {
        if master != leader {
            let before = out.records.len();
            out.ip(&all, master.ip());
            if out.records.len() == before {
                // The same address twice: numbered once.
                continue;
            }
        } else if listed_leader {
            continue;
        }
        out.ip(&format!("master{index}.{domain}."), master.ip());
        index += 1;
        listed_leader |= master == leader;
    }
    if !listed_leader {
        out.ip(&format!("master{index}.{domain}."), leader.ip());
    }
    out.finish()
}

/// The DNS server's own name (the SOA MNAME and NS target) → the addresses it answers on
/// (Mesos-DNS `listenerRecord`). The wildcard address names no host and is skipped: a shell
/// listening on it passes its interfaces' addresses instead, as Mesos-DNS does.
pub fn server_records(config: &DnsConfig) -> Vec<Record> {
    let mut out = Out::default();
    let name = config.ns_name();
    for ip in config.dns_ips.iter().filter(|ip| !ip.is_unspecified()) {
        out.ip(name.as_str(), *ip);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masters(leader: &str, masters: &[&str]) -> Masters {
        Masters {
            leader: leader.parse().ok(),
            masters: masters.iter().map(|m| m.parse().expect("socket address")).collect(),
        }
    }

    fn rendered(records: &[Record]) -> Vec<String> {
        let mut lines: Vec<String> = records
            .iter()
            .map(|r| match &r.data {
                RecordData::A(ip) => format!("{} {ip}", r.name),
                RecordData::Aaaa(ip) => format!("{} {ip}", r.name),
                RecordData::Srv { port, target, .. } => format!("{} {target}:{port}", r.name),
            })
            .collect();
        lines.sort();
        lines
    }

    fn config() -> DnsConfig {
        DnsConfig { domain: "foo.com".into(), ..DnsConfig::default() }
    }

    // The table of Mesos-DNS's TestMasterRecord.
    #[test]
    fn masters_are_numbered_like_mesos_dns() {
        let cfg = config();
        let leader_srv = ["_leader._tcp.foo.com. leader.foo.com.:7", "_leader._udp.foo.com. leader.foo.com.:7"];
        let case = |m: Masters, expected: &[&str]| {
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.extend(leader_srv.iter().map(|s| s.to_string()));
            want.sort();
            assert_eq!(rendered(&master_records(&cfg, &m)), want, "{m:?}");
        };
        assert!(master_records(&cfg, &masters("", &["0.0.0.8:9"])).is_empty());
        case(
            masters("0.0.0.6:7", &[]),
            &["leader.foo.com. 0.0.0.6", "master.foo.com. 0.0.0.6", "master0.foo.com. 0.0.0.6"],
        );
        case(
            masters("[2001:db8::1]:7", &[]),
            &["leader.foo.com. 2001:db8::1", "master.foo.com. 2001:db8::1", "master0.foo.com. 2001:db8::1"],
        );
        case(
            masters("0.0.0.6:7", &["0.0.0.6:7"]),
            &["leader.foo.com. 0.0.0.6", "master.foo.com. 0.0.0.6", "master0.foo.com. 0.0.0.6"],
        );
        let not_listed = [
            "leader.foo.com. 0.0.0.6",
            "master.foo.com. 0.0.0.6",
            "master.foo.com. 0.0.0.8",
            "master0.foo.com. 0.0.0.8",
            "master1.foo.com. 0.0.0.6",
        ];
        case(masters("0.0.0.6:7", &["0.0.0.8:9"]), &not_listed);
        case(masters("0.0.0.6:7", &["0.0.0.8:9", "0.0.0.8:9"]), &not_listed);
        case(masters("0.0.0.6:7", &["0.0.0.8:9", "0.0.0.6:7"]), &not_listed);
        case(masters("0.0.0.6:7", &["0.0.0.8:9", "0.0.0.6:7", "0.0.0.6:7"]), &not_listed);
        case(
            masters("0.0.0.6:7", &["0.0.0.8:9", "0.0.0.6:7", "0.0.0.7:0"]),
            &[
                "leader.foo.com. 0.0.0.6",
                "master.foo.com. 0.0.0.6",
                "master.foo.com. 0.0.0.8",
                "master.foo.com. 0.0.0.7",
                "master0.foo.com. 0.0.0.8",
                "master1.foo.com. 0.0.0.6",
                "master2.foo.com. 0.0.0.7",
            ],
        );
        case(
            masters("0.0.0.6:7", &["0.0.0.8:9", "0.0.0.6:7", "[2001:db8::1]:0"]),
            &[
                "leader.foo.com. 0.0.0.6",
                "master.foo.com. 0.0.0.6",
                "master.foo.com. 0.0.0.8",
                "master.foo.com. 2001:db8::1",
                "master0.foo.com. 0.0.0.8",
                "master1.foo.com. 0.0.0.6",
                "master2.foo.com. 2001:db8::1",
            ],
        );
    }

    #[test]
    fn server_name_follows_soa_mname() {
        let mut cfg = DnsConfig { dns_ips: vec!["4.5.6.7".parse().unwrap(), "0.0.0.0".parse().unwrap()], ..config() };
        cfg.soa_mname = "jdef123.mesos.".into();
        assert_eq!(rendered(&server_records(&cfg)), ["jdef123.mesos. 4.5.6.7"]);
        cfg.soa_mname = "ns1".into();
        cfg.dns_ips = vec!["2001:db8::1".parse().unwrap()];
        assert_eq!(rendered(&server_records(&cfg)), ["ns1.foo.com. 2001:db8::1"]);
    }

    #[test]
    fn names_that_no_client_could_ask_for_are_left_out() {
        assert!(dns_name("web.marathon.mesos.").is_some());
        assert!(dns_name("_http._web._tcp.marathon.mesos.").is_some());
        assert!(dns_name("web..mesos.").is_none());
        assert!(dns_name("my app.marathon.mesos.").is_none());
        assert!(dns_name("web.marathon.mesos").is_none(), "not fully qualified");
        assert!(dns_name(&format!("{}.mesos.", "a".repeat(64))).is_none());
    }
}
