//! `VIP_n` labels on discovery ports (DC/OS and Marathon's convention): parsing, and reading a
//! task's ports. Bad labels are reported as [`LabelProblem`]s, never panics, and leave the rest
//! of the task's VIPs working.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use atoll_proto::model::{FrameworkId, Task, TaskId};

use crate::{PROTO_TCP, PROTO_UDP};

/// Longest VIP name accepted (a DNS name's limit; the name becomes part of one).
const MAX_NAME_LEN: usize = 253;

/// Why a VIP label (or the port carrying it) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("`{0}`: expected /NAME:PORT (e.g. /web:80) or IPV4:PORT (e.g. 198.19.200.1:80)")]
    MissingPort(String),
    #[error("`{value}`: port `{port}` is not a number from 1 to 65535")]
    InvalidPort { value: String, port: String },
    #[error("`{0}`: the VIP name is empty")]
    EmptyName(String),
    #[error("`{0}`: a VIP name has segments of letters, digits, '-', '_' and '.', separated by '/'")]
    InvalidName(String),
    #[error("`{0}`: the VIP name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong(String),
    #[error("`{0}`: looks like an IPv4 address but is not one")]
    BadAddress(String),
    #[error("`{0}`: IPv6 VIPs are not supported yet")]
    Ipv6(String),
    #[error("`{value}`: {address} cannot be a VIP (unspecified, broadcast or multicast)")]
    UnusableAddress { value: String, address: Ipv4Addr },
    #[error("the port number {0} is not a port (1 to 65535)")]
    PortNumber(u32),
    #[error("unknown protocol `{0}` (expected tcp, udp, or both separated by a comma)")]
    UnknownProtocol(String),
}

/// A parsed `VIP_n` label value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VipLabel {
    /// `/web:80` or `web:80`: an address from the VIP pool, per framework. The name is
    /// lowercase (DNS names are case-insensitive, so `/Web` and `/web` must be one VIP), without
    /// leading or trailing slashes.
    Named { name: String, port: u16 },
    /// `198.19.200.1:80`: the address is the label's.
    Fixed { address: Ipv4Addr, port: u16 },
}

impl VipLabel {
    /// Parses `/web:80`, `web:80`, `/shop/web:80` or `198.19.200.1:80` (surrounding spaces
    /// ignored).
    pub fn parse(value: &str) -> Result<VipLabel, LabelError> {
        let text = value.trim();
        let Some((host, port_text)) = text.rsplit_once(':') else {
            return Err(LabelError::MissingPort(value.to_owned()));
        };
        if host.contains(':') || host.starts_with('[') {
            return Err(LabelError::Ipv6(value.to_owned()));
        }
        let port = match port_text.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(LabelError::InvalidPort { value: value.to_owned(), port: port_text.to_owned() }),
        };
        if let Ok(address) = host.parse::<Ipv4Addr>() {
            if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
                return Err(LabelError::UnusableAddress { value: value.to_owned(), address });
            }
            return Ok(VipLabel::Fixed { address, port });
        }
        let name = host.trim_matches('/');
        if name.is_empty() {
            return Err(LabelError::EmptyName(value.to_owned()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(LabelError::NameTooLong(value.to_owned()));
        }
        // `1.2.3:80` or `300.1.1.1:80` is far more likely a mistyped address than a name.
        if name.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(LabelError::BadAddress(value.to_owned()));
        }
        let valid_segment =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name.split('/').all(valid_segment) {
            return Err(LabelError::InvalidName(value.to_owned()));
        }
        Ok(VipLabel::Named { name: name.to_ascii_lowercase(), port })
    }

    /// The VIP's port (the port clients connect to).
    pub fn port(&self) -> u16 {
        match self {
            VipLabel::Named { port, .. } | VipLabel::Fixed { port, .. } => *port,
        }
    }
}

impl FromStr for VipLabel {
    type Err = LabelError;

    fn from_str(text: &str) -> Result<VipLabel, LabelError> {
        VipLabel::parse(text)
    }
}

/// The canonical form: `/web:80` or `198.19.200.1:80`.
impl fmt::Display for VipLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VipLabel::Named { name, port } => write!(f, "/{name}:{port}"),
            VipLabel::Fixed { address, port } => write!(f, "{address}:{port}"),
        }
    }
}

/// Whether a label key is a VIP label: `VIP_` and a number (`VIP_0`, `VIP_1`, …), as DC/OS
/// reads them. Other `VIP_…` keys are not VIPs.
pub fn is_vip_label_key(key: &str) -> bool {
    key.strip_prefix("VIP_").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A discovery port's protocol field → IP protocol numbers, sorted: empty is TCP (Mesos's
/// default); `udp,tcp` and `tcp,udp` are both.
pub fn parse_protocols(protocol: &str) -> Result<Vec<u8>, LabelError> {
    if protocol.trim().is_empty() {
        return Ok(vec![PROTO_TCP]);
    }
    let mut protocols = Vec::new();
    for part in protocol.split(',') {
        let proto = match part.trim().to_ascii_lowercase().as_str() {
            "tcp" => PROTO_TCP,
            "udp" => PROTO_UDP,
            _ => return Err(LabelError::UnknownProtocol(protocol.to_owned())),
        };
        protocols.push(proto);
    }
    protocols.sort_unstable();
    protocols.dedup();
    Ok(protocols)
}

/// One VIP label on one of a task's discovery ports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortVip {
    /// `VIP_0`, …
    pub label_key: String,
    pub label: VipLabel,
    /// The discovery port's number: the backend's port (the host port on host networking, the
    /// container port on a container network).
    pub port: u16,
    /// IP protocol numbers, sorted ([`PROTO_TCP`], [`PROTO_UDP`]).
    pub protocols: Vec<u8>,
}

/// A label (or the port carrying it) that could not be used; the shell logs it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelProblem {
    pub framework_id: FrameworkId,
    pub task: TaskId,
    /// The discovery port's number as given.
    pub port: u32,
    /// The label key (`VIP_0`).
    pub label: String,
    /// The label value as given.
    pub value: String,
    pub error: LabelError,
}

impl fmt::Display for LabelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} (framework {}), port {}, label {}={:?}: {}",
            self.task, self.framework_id, self.port, self.label, self.value, self.error
        )
    }
}

/// The VIP labels on a task's discovery ports, and the problems of those that cannot be used.
/// Ports without VIP labels are not looked at (a bad protocol there is none of our business).
pub fn task_port_vips(task: &Task) -> (Vec<PortVip>, Vec<LabelProblem>) {
    let mut vips = Vec::new();
    let mut problems = Vec::new();
    let Some(discovery) = &task.discovery else { return (vips, problems) };
    for port in &discovery.ports {
        let labels: Vec<(&String, &String)> = port.labels.0.iter().filter(|(key, _)| is_vip_label_key(key)).collect();
        let problem = |label: &str, value: &str, error: LabelError| LabelProblem {
            framework_id: task.framework_id.clone(),
            task: task.id.clone(),
            port: port.number,
            label: label.to_owned(),
            value: value.to_owned(),
            error,
        };
        let number = match u16::try_from(port.number) {
            Ok(number) if number > 0 => number,
            _ => {
                problems.extend(labels.iter().map(|(k, v)| problem(k, v, LabelError::PortNumber(port.number))));
                continue;
            }
        };
        let protocols = match parse_protocols(&port.protocol) {
            Ok(protocols) => protocols,
            Err(error) => {
                problems.extend(labels.iter().map(|(k, v)| problem(k, v, error.clone())));
                continue;
            }
        };
        for (key, value) in labels {
            match VipLabel::parse(value) {
                Ok(label) => {
                    vips.push(PortVip { label_key: key.clone(), label, port: number, protocols: protocols.clone() })
                }
                Err(error) => problems.push(problem(key, value, error)),
            }
        }
    }
    (vips, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, port: u16) -> VipLabel {
        VipLabel::Named { name: name.into(), port }
    }

    #[test]
    fn labels_parse_as_dcos_writes_them() {
        assert_eq!(VipLabel::parse("/web:80"), Ok(named("web", 80)));
        assert_eq!(VipLabel::parse("web:80"), Ok(named("web", 80)));
        assert_eq!(VipLabel::parse(" /Shop/Web/:8080 "), Ok(named("shop/web", 8080)));
        assert_eq!(VipLabel::parse("/my_db.v2:5432"), Ok(named("my_db.v2", 5432)));
        assert_eq!(
            VipLabel::parse("198.19.200.1:53"),
            Ok(VipLabel::Fixed { address: Ipv4Addr::new(198, 19, 200, 1), port: 53 })
        );
        assert_eq!(VipLabel::parse("/web:80").unwrap().to_string(), "/web:80");
        assert_eq!("1.2.3.4:80".parse::<VipLabel>().unwrap().to_string(), "1.2.3.4:80");
        assert_eq!(named("web", 80).port(), 80);
    }

    #[test]
    fn garbage_is_reported_precisely() {
        type Expect = fn(&LabelError) -> bool;
        let cases: [(&str, Expect); 12] = [
            ("web", |e| matches!(e, LabelError::MissingPort(_))),
            ("", |e| matches!(e, LabelError::MissingPort(_))),
            ("/web:", |e| matches!(e, LabelError::InvalidPort { .. })),
            ("/web:0", |e| matches!(e, LabelError::InvalidPort { .. })),
            ("/web:65536", |e| matches!(e, LabelError::InvalidPort { .. })),
            ("/web:http", |e| matches!(e, LabelError::InvalidPort { .. })),
            ("/:80", |e| matches!(e, LabelError::EmptyName(_))),
            ("/a//b:80", |e| matches!(e, LabelError::InvalidName(_))),
            ("/we b:80", |e| matches!(e, LabelError::InvalidName(_))),
            ("1.2.3:80", |e| matches!(e, LabelError::BadAddress(_))),
            ("[::1]:80", |e| matches!(e, LabelError::Ipv6(_))),
            ("224.0.0.1:80", |e| matches!(e, LabelError::UnusableAddress { .. })),
        ];
        for (value, expected) in cases {
            let error = VipLabel::parse(value).unwrap_err();
            assert!(expected(&error), "{value:?} gave {error:?}");
            assert!(error.to_string().contains(&format!("`{value}`")), "{error} names the value");
        }
        assert!(matches!(VipLabel::parse(&format!("/{}:80", "a".repeat(300))), Err(LabelError::NameTooLong(_))));
        assert!(matches!(VipLabel::parse("0.0.0.0:80"), Err(LabelError::UnusableAddress { .. })));
    }

    #[test]
    fn label_keys_and_protocols() {
        assert!(is_vip_label_key("VIP_0") && is_vip_label_key("VIP_12"));
        assert!(!is_vip_label_key("VIP_") && !is_vip_label_key("VIP_WEIGHT") && !is_vip_label_key("vip_0"));
        assert_eq!(parse_protocols(""), Ok(vec![PROTO_TCP]));
        assert_eq!(parse_protocols("UDP"), Ok(vec![PROTO_UDP]));
        assert_eq!(parse_protocols("udp,tcp"), Ok(vec![PROTO_TCP, PROTO_UDP]));
        assert_eq!(parse_protocols("tcp, udp,tcp"), Ok(vec![PROTO_TCP, PROTO_UDP]));
        assert_eq!(parse_protocols("sctp"), Err(LabelError::UnknownProtocol("sctp".into())));
    }
}
