//! Translation between the generated protobuf types and the domain model.
//!
//! Domain → wire never fails. Wire → domain validates everything the domain types assume
//! (ids present, amounts finite, ranges ordered, enum numbers known, addresses parseable) and
//! reports the first problem as a [`ConvertError`] naming the field path, e.g.
//! `task_infos[0].resources[2].scalar: missing`.
//!
//! Paths are built from the inside out: a conversion names fields relative to the message it
//! converts, and every caller that nests it prefixes its own field with
//! [`ConvertError::within`] (the helpers [`convert`], [`convert_required`],
//! [`convert_optional`] and [`convert_each`] do this).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::model::{
    self, Agent, AgentInfo, AgentState, AgentSubnet, App, AppId, AttributeValue, Attributes, Capability, ClusterState,
    CommandInfo, Deployment, DiscoveryInfo, DiscoveryPort, Event, EventKind, Framework, FrameworkId, FrameworkInfo,
    HealthCheck, HealthCheckKind, Labels, NetworkRequest, Ranges, Reason, ResourceValue, Resources, Scalar, Source,
    StreamMessage, Task, TaskInfo, TaskPortMapping, TaskState, TaskStatus, Time, VipAssignment,
};
use crate::pb::v1 as pb;
use crate::pb::v1::operator;

use operator::AgentState as PbAgentState;
use pb::TaskState as PbTaskState;
use pb::discovery_info::Visibility;
use pb::framework_info::capability::Type as PbCapability;
use pb::task_status::{Reason as PbReason, Source as PbSource};
use pb::value::Type as ValueType;

/// Scalars are kept in thousandths in an `i64`; this bound leaves room to sum several.
const MAX_SCALAR: f64 = 1e15;
const MAX_PORT: u64 = 65535;

/// Why a protobuf message was refused. Every variant names the field path that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: missing")]
    Missing { field: String },
    #[error("{field}: empty")]
    Empty { field: String },
    #[error("{field}: {value} is not {expected}")]
    OutOfRange { field: String, value: String, expected: &'static str },
    #[error("{field}: range {begin}-{end} ends before it begins")]
    InvertedRange { field: String, begin: u64, end: u64 },
    #[error("{field}: unknown enum value {value}")]
    UnknownEnum { field: String, value: i32 },
    #[error("{field}: {value} is not supported")]
    Unsupported { field: String, value: &'static str },
    #[error("{field}: set, but the type is {kind}")]
    Unexpected { field: String, kind: &'static str },
    #[error("{field}: resource `{name}` appears earlier with another type")]
    KindMismatch { field: String, name: String },
    #[error("{field}: `{name}` given twice")]
    Duplicate { field: String, name: String },
    #[error("{field}: expected 16 bytes, got {len}")]
    BadUuid { field: String, len: usize },
    #[error("{field}: `{value}` is not an IP address")]
    BadIp { field: String, value: String },
    #[error("{field}: `{value}` is not an ip:port address")]
    BadAddress { field: String, value: String },
    #[error("{field}: `{value}` does not match `{expected}`")]
    Mismatch { field: String, value: String, expected: String },
    #[error("{field}: {message}")]
    BadJson { field: String, message: String },
}

/// Every variant carries the path of the offending field; this names it once for both
/// accessors, so adding a variant cannot leave one of them behind.
macro_rules! field_of {
    ($error:expr) => {
        match $error {
            ConvertError::Missing { field }
            | ConvertError::Empty { field }
            | ConvertError::OutOfRange { field, .. }
            | ConvertError::InvertedRange { field, .. }
            | ConvertError::UnknownEnum { field, .. }
            | ConvertError::Unsupported { field, .. }
            | ConvertError::Unexpected { field, .. }
            | ConvertError::KindMismatch { field, .. }
            | ConvertError::Duplicate { field, .. }
            | ConvertError::BadUuid { field, .. }
            | ConvertError::BadIp { field, .. }
            | ConvertError::BadAddress { field, .. }
            | ConvertError::Mismatch { field, .. }
            | ConvertError::BadJson { field, .. } => field,
        }
    };
}

impl ConvertError {
    /// The path of the offending field, e.g. `resources[2].scalar`.
    pub fn field(&self) -> &str {
        field_of!(self)
    }

    /// Places the error inside `parent`: `scalar` within `resources[2]` is
    /// `resources[2].scalar`, `[2]` within `resources` is `resources[2]`.
    pub fn within(mut self, parent: &str) -> ConvertError {
        let field: &mut String = field_of!(&mut self);
        *field = join(parent, field);
        self
    }
}

fn join(parent: &str, child: &str) -> String {
    match child.chars().next() {
        None => parent.to_owned(),
        Some('[') => format!("{parent}{child}"),
        Some(_) => format!("{parent}.{child}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for callers converting their own messages (scheduler calls, agent messages).
// ---------------------------------------------------------------------------------------------

/// Converts `value`, which sits at `field` of the message being converted.
pub fn convert<P, D>(value: P, field: &str) -> Result<D, ConvertError>
where
    D: TryFrom<P, Error = ConvertError>,
{
    D::try_from(value).map_err(|e| e.within(field))
}

/// Converts a message field that must be present.
pub fn convert_required<P, D>(value: Option<P>, field: &str) -> Result<D, ConvertError>
where
    D: TryFrom<P, Error = ConvertError>,
{
    convert(required(value, field)?, field)
}

/// Converts a message field that may be absent.
pub fn convert_optional<P, D>(value: Option<P>, field: &str) -> Result<Option<D>, ConvertError>
where
    D: TryFrom<P, Error = ConvertError>,
{
    value.map(|v| convert(v, field)).transpose()
}

/// Converts every element of a repeated field, naming the index of the first bad one.
pub fn convert_each<P, D>(items: impl IntoIterator<Item = P>, field: &str) -> Result<Vec<D>, ConvertError>
where
    D: TryFrom<P, Error = ConvertError>,
{
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| D::try_from(item).map_err(|e| e.within(&format!("{field}[{i}]"))))
        .collect()
}

/// Reads an acknowledgement uuid: empty means none, anything else must be 16 bytes.
pub fn uuid_from_pb(bytes: &[u8], field: &str) -> Result<Option<uuid::Uuid>, ConvertError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    uuid::Uuid::from_slice(bytes)
        .map(Some)
        .map_err(|_| ConvertError::BadUuid { field: field.to_owned(), len: bytes.len() })
}

/// A kill grace period in seconds as a Mesos `KillPolicy`; negative or NaN becomes zero.
pub fn kill_policy_to_pb(grace_period_secs: Option<f64>) -> Option<pb::KillPolicy> {
    grace_period_secs.map(|secs| pb::KillPolicy {
        grace_period: Some(pb::DurationInfo { nanoseconds: Some((secs.max(0.0) * 1e9).round() as i64) }),
    })
}

/// The grace period of a Mesos `KillPolicy`, in seconds. Errors name fields inside the policy.
pub fn kill_grace_from_pb(policy: Option<pb::KillPolicy>) -> Result<Option<f64>, ConvertError> {
    let Some(nanos) = policy.and_then(|p| p.grace_period).map(|d| d.nanoseconds()) else {
        return Ok(None);
    };
    if nanos < 0 {
        return Err(ConvertError::OutOfRange {
            field: "grace_period.nanoseconds".into(),
            value: nanos.to_string(),
            expected: "a duration >= 0",
        });
    }
    Ok(Some(nanos as f64 / 1e9))
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ConvertError> {
    value.ok_or_else(|| ConvertError::Missing { field: field.to_owned() })
}

fn non_empty(value: String, field: &str) -> Result<String, ConvertError> {
    if value.is_empty() {
        return Err(ConvertError::Empty { field: field.to_owned() });
    }
    Ok(value)
}

fn non_negative(value: f64, field: &str) -> Result<f64, ConvertError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ConvertError::OutOfRange {
            field: field.to_owned(),
            value: value.to_string(),
            expected: "a finite number >= 0",
        })
    }
}

fn enum_value<E: TryFrom<i32>>(value: i32, field: &str) -> Result<E, ConvertError> {
    E::try_from(value).map_err(|_| ConvertError::UnknownEnum { field: field.to_owned(), value })
}

/// Mesos timestamps are seconds as a double; rounding (not truncating) to milliseconds makes
/// a domain time survive the trip through floating point.
fn time_from_secs(secs: f64, field: &str) -> Result<Time, ConvertError> {
    let secs = non_negative(secs, field)?;
    Ok(Time((secs * 1000.0).round() as u64))
}

fn parse_ip(value: &str, field: &str) -> Result<IpAddr, ConvertError> {
    value.parse().map_err(|_| ConvertError::BadIp { field: field.to_owned(), value: value.to_owned() })
}

/// Refuses value fields that do not belong to the declared `kind`.
fn only_kind(kind: &'static str, others: &[(&'static str, bool)]) -> Result<(), ConvertError> {
    match others.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(ConvertError::Unexpected { field: (*field).to_owned(), kind }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Ids and enums
// ---------------------------------------------------------------------------------------------

macro_rules! id_conversions {
    ($($id:ident),* $(,)?) => {$(
        impl From<&model::$id> for pb::$id {
            fn from(id: &model::$id) -> Self {
                pb::$id { value: id.0.clone() }
            }
        }

        impl TryFrom<pb::$id> for model::$id {
            type Error = ConvertError;

            fn try_from(id: pb::$id) -> Result<Self, ConvertError> {
                Ok(model::$id(non_empty(id.value, "value")?))
            }
        }
    )*};
}

id_conversions!(AgentId, FrameworkId, TaskId, OfferId, ExecutorId);

macro_rules! enum_map {
    ($domain:ident <=> $wire:ident { $($d:ident <=> $w:ident),* $(,)? }) => {
        impl From<$domain> for $wire {
            fn from(value: $domain) -> Self {
                match value { $($domain::$d => $wire::$w,)* }
            }
        }

        impl From<$wire> for $domain {
            fn from(value: $wire) -> Self {
                match value { $($wire::$w => $domain::$d,)* }
            }
        }
    };
    ($domain:ident <=> $wire:ident { $($d:ident <=> $w:ident),* $(,)? } wire_only { $($extra:ident),+ }) => {
        impl From<$domain> for $wire {
            fn from(value: $domain) -> Self {
                match value { $($domain::$d => $wire::$w,)* }
            }
        }

        /// Fails, giving the value back, for wire values the domain has no counterpart for.
        impl TryFrom<$wire> for $domain {
            type Error = $wire;

            fn try_from(value: $wire) -> Result<Self, $wire> {
                match value {
                    $($wire::$w => Ok($domain::$d),)*
                    $($wire::$extra)|+ => Err(value),
                }
            }
        }
    };
}

enum_map!(TaskState <=> PbTaskState {
    Staging <=> TaskStaging,
    Starting <=> TaskStarting,
    Running <=> TaskRunning,
    Killing <=> TaskKilling,
    Finished <=> TaskFinished,
    Failed <=> TaskFailed,
    Killed <=> TaskKilled,
    Error <=> TaskError,
    Lost <=> TaskLost,
    Dropped <=> TaskDropped,
    Unreachable <=> TaskUnreachable,
    Gone <=> TaskGone,
    GoneByOperator <=> TaskGoneByOperator,
    Unknown <=> TaskUnknown,
});

enum_map!(Source <=> PbSource { Master <=> Master, Agent <=> Agent, Executor <=> Executor });

enum_map!(AgentState <=> PbAgentState {
    Active <=> AgentActive,
    Draining <=> AgentDraining,
    Drained <=> AgentDrained,
    Unreachable <=> AgentUnreachable,
    Gone <=> AgentGone,
    Recovered <=> AgentRecovered,
    Deactivated <=> AgentDeactivated,
});

enum_map!(Capability <=> PbCapability {
    RevocableResources <=> RevocableResources,
    TaskKillingState <=> TaskKillingState,
    GpuResources <=> GpuResources,
    SharedResources <=> SharedResources,
    PartitionAware <=> PartitionAware,
    MultiRole <=> MultiRole,
    ReservationRefinement <=> ReservationRefinement,
    RegionAware <=> RegionAware,
} wire_only { Unknown });

enum_map!(Reason <=> PbReason {
    CommandExecutorFailed <=> CommandExecutorFailed,
    ContainerLaunchFailed <=> ContainerLaunchFailed,
    ContainerLimitation <=> ContainerLimitation,
    ContainerLimitationDisk <=> ContainerLimitationDisk,
    ContainerLimitationMemory <=> ContainerLimitationMemory,
    ContainerPreempted <=> ContainerPreempted,
    ExecutorRegistrationTimeout <=> ExecutorRegistrationTimeout,
    ExecutorReregistrationTimeout <=> ExecutorReregistrationTimeout,
    ExecutorTerminated <=> ExecutorTerminated,
    ExecutorUnregistered <=> ExecutorUnregistered,
    FrameworkRemoved <=> FrameworkRemoved,
    GcError <=> GcError,
    InvalidFrameworkId <=> InvalidFrameworkid,
    InvalidOffers <=> InvalidOffers,
    MasterDisconnected <=> MasterDisconnected,
    Reconciliation <=> Reconciliation,
    ResourcesUnknown <=> ResourcesUnknown,
    AgentDisconnected <=> AgentDisconnected,
    AgentRemoved <=> AgentRemoved,
    AgentRemovedByOperator <=> AgentRemovedByOperator,
    AgentReregistered <=> AgentReregistered,
    AgentRestarted <=> AgentRestarted,
    AgentUnknown <=> AgentUnknown,
    AgentDraining <=> AgentDraining,
    TaskKilledDuringLaunch <=> TaskKilledDuringLaunch,
    TaskCheckStatusUpdated <=> TaskCheckStatusUpdated,
    TaskHealthCheckStatusUpdated <=> TaskHealthCheckStatusUpdated,
    TaskGroupInvalid <=> TaskGroupInvalid,
    TaskGroupUnauthorized <=> TaskGroupUnauthorized,
    TaskInvalid <=> TaskInvalid,
    TaskUnauthorized <=> TaskUnauthorized,
    TaskUnknown <=> TaskUnknown,
    ContainerUpdateFailed <=> ContainerUpdateFailed,
    IoSwitchboardExited <=> IoSwitchboardExited,
    MaxCompletionTimeReached <=> MaxCompletionTimeReached,
});

// ---------------------------------------------------------------------------------------------
// Values: resources, attributes, labels
// ---------------------------------------------------------------------------------------------

fn ranges_to_pb(pairs: &[(u64, u64)]) -> pb::value::Ranges {
    pb::value::Ranges {
        range: pairs.iter().map(|&(begin, end)| pb::value::Range { begin: Some(begin), end: Some(end) }).collect(),
    }
}

/// Errors name fields inside the `Ranges` message.
fn ranges_from_pb(ranges: pb::value::Ranges) -> Result<Vec<(u64, u64)>, ConvertError> {
    ranges
        .range
        .into_iter()
        .enumerate()
        .map(|(j, range)| {
            let (begin, end) = (range.begin(), range.end());
            if end < begin {
                Err(ConvertError::InvertedRange { field: format!("range[{j}]"), begin, end })
            } else {
                Ok((begin, end))
            }
        })
        .collect()
}

impl From<&Resources> for Vec<pb::Resource> {
    fn from(resources: &Resources) -> Self {
        resources.iter().map(|(name, value)| resource_to_pb(name, value)).collect()
    }
}

fn resource_to_pb(name: &str, value: &ResourceValue) -> pb::Resource {
    let (kind, scalar, ranges) = match value {
        ResourceValue::Scalar(s) => (ValueType::Scalar, Some(pb::value::Scalar { value: Some(s.as_f64()) }), None),
        ResourceValue::Ranges(r) => (ValueType::Ranges, None, Some(ranges_to_pb(r.pairs()))),
    };
    pb::Resource {
        name: name.to_owned(),
        r#type: Some(kind as i32),
        scalar,
        ranges,
        set: None,
        // Atoll has only unreserved resources.
        role: "*".to_owned(),
        allocation_info: None,
    }
}

/// Wire resources with the same name and type are summed, as Mesos does.
impl TryFrom<Vec<pb::Resource>> for Resources {
    type Error = ConvertError;

    fn try_from(wire: Vec<pb::Resource>) -> Result<Self, ConvertError> {
        let mut resources = Resources::new();
        // Tracked apart from `resources`, which drops zero amounts and so would forget a kind.
        let mut scalar_kind: BTreeMap<String, bool> = BTreeMap::new();
        for (i, resource) in wire.into_iter().enumerate() {
            let (name, value) = resource_from_pb(resource).map_err(|e| e.within(&format!("[{i}]")))?;
            let is_scalar = matches!(value, ResourceValue::Scalar(_));
            if *scalar_kind.entry(name.clone()).or_insert(is_scalar) != is_scalar {
                return Err(ConvertError::KindMismatch { field: format!("[{i}]"), name });
            }
            match value {
                ResourceValue::Scalar(amount) => {
                    if resources.scalar(&name).milli().checked_add(amount.milli()).is_none() {
                        return Err(ConvertError::OutOfRange {
                            field: format!("[{i}].scalar.value"),
                            value: amount.to_string(),
                            expected: "small enough to add to the earlier amounts of its name",
                        });
                    }
                    resources.add_scalar(&name, amount);
                }
                ResourceValue::Ranges(ranges) => resources.add_ranges(&name, &ranges),
            }
        }
        Ok(resources)
    }
}

/// `role` and `allocation_info` are not looked at: every Atoll resource is unreserved, and
/// frameworks echo back whatever role their offer named.
fn resource_from_pb(resource: pb::Resource) -> Result<(String, ResourceValue), ConvertError> {
    let pb::Resource { name, r#type, scalar, ranges, set, .. } = resource;
    let name = non_empty(name, "name")?;
    let value = match enum_value::<ValueType>(r#type.unwrap_or_default(), "type")? {
        ValueType::Scalar => {
            only_kind("SCALAR", &[("ranges", ranges.is_some()), ("set", set.is_some())])?;
            let scalar = required(scalar, "scalar")?;
            ResourceValue::Scalar(scalar_from_pb(scalar.value(), "scalar.value")?)
        }
        ValueType::Ranges => {
            only_kind("RANGES", &[("scalar", scalar.is_some()), ("set", set.is_some())])?;
            let ranges = ranges_from_pb(required(ranges, "ranges")?).map_err(|e| e.within("ranges"))?;
            ResourceValue::Ranges(Ranges::from_pairs(ranges))
        }
        other @ (ValueType::Set | ValueType::Text) => {
            return Err(ConvertError::Unsupported { field: "type".into(), value: other.as_str_name() });
        }
    };
    Ok((name, value))
}

fn scalar_from_pb(value: f64, field: &str) -> Result<Scalar, ConvertError> {
    if !(0.0..=MAX_SCALAR).contains(&value) {
        return Err(ConvertError::OutOfRange {
            field: field.to_owned(),
            value: value.to_string(),
            expected: "a finite number in 0..=1e15",
        });
    }
    Ok(Scalar::from_f64(value))
}

impl From<&Attributes> for Vec<pb::Attribute> {
    fn from(attributes: &Attributes) -> Self {
        attributes.0.iter().map(|(name, value)| attribute_to_pb(name, value)).collect()
    }
}

fn attribute_to_pb(name: &str, value: &AttributeValue) -> pb::Attribute {
    let mut attribute = pb::Attribute { name: name.to_owned(), ..Default::default() };
    match value {
        AttributeValue::Scalar(v) => {
            attribute.r#type = Some(ValueType::Scalar as i32);
            attribute.scalar = Some(pb::value::Scalar { value: Some(*v) });
        }
        AttributeValue::Ranges(pairs) => {
            attribute.r#type = Some(ValueType::Ranges as i32);
            attribute.ranges = Some(ranges_to_pb(pairs));
        }
        AttributeValue::Text(text) => {
            attribute.r#type = Some(ValueType::Text as i32);
            attribute.text = Some(pb::value::Text { value: Some(text.clone()) });
        }
    }
    attribute
}

impl TryFrom<Vec<pb::Attribute>> for Attributes {
    type Error = ConvertError;

    fn try_from(wire: Vec<pb::Attribute>) -> Result<Self, ConvertError> {
        let mut attributes = BTreeMap::new();
        for (i, attribute) in wire.into_iter().enumerate() {
            let (name, value) = attribute_from_pb(attribute).map_err(|e| e.within(&format!("[{i}]")))?;
            if attributes.contains_key(&name) {
                return Err(ConvertError::Duplicate { field: format!("[{i}].name"), name });
            }
            attributes.insert(name, value);
        }
        Ok(Attributes(attributes))
    }
}

fn attribute_from_pb(attribute: pb::Attribute) -> Result<(String, AttributeValue), ConvertError> {
    let pb::Attribute { name, r#type, scalar, ranges, set, text } = attribute;
    let name = non_empty(name, "name")?;
    let value = match enum_value::<ValueType>(r#type.unwrap_or_default(), "type")? {
        ValueType::Scalar => {
            only_kind("SCALAR", &[("ranges", ranges.is_some()), ("set", set.is_some()), ("text", text.is_some())])?;
            let value = required(scalar, "scalar")?.value();
            // Unlike resources, attributes may be negative (`level:-1`); NaN would break equality.
            if !value.is_finite() {
                return Err(ConvertError::OutOfRange {
                    field: "scalar.value".into(),
                    value: value.to_string(),
                    expected: "a finite number",
                });
            }
            AttributeValue::Scalar(value)
        }
        ValueType::Ranges => {
            only_kind("RANGES", &[("scalar", scalar.is_some()), ("set", set.is_some()), ("text", text.is_some())])?;
            AttributeValue::Ranges(ranges_from_pb(required(ranges, "ranges")?).map_err(|e| e.within("ranges"))?)
        }
        ValueType::Text => {
            only_kind("TEXT", &[("scalar", scalar.is_some()), ("ranges", ranges.is_some()), ("set", set.is_some())])?;
            AttributeValue::Text(required(text, "text")?.value.unwrap_or_default())
        }
        ValueType::Set => return Err(ConvertError::Unsupported { field: "type".into(), value: "SET" }),
    };
    Ok((name, value))
}

impl From<&Labels> for pb::Labels {
    fn from(labels: &Labels) -> Self {
        pb::Labels {
            labels: labels.0.iter().map(|(k, v)| pb::Label { key: k.clone(), value: Some(v.clone()) }).collect(),
        }
    }
}

/// Mesos allows a key twice; the domain keeps the last value, as a map built in order would.
impl From<pb::Labels> for Labels {
    fn from(labels: pb::Labels) -> Self {
        Labels(labels.labels.into_iter().map(|l| (l.key, l.value.unwrap_or_default())).collect())
    }
}

fn labels_to_pb(labels: &Labels) -> Option<pb::Labels> {
    (!labels.is_empty()).then(|| labels.into())
}

fn labels_from_pb(labels: Option<pb::Labels>) -> Labels {
    labels.map(Labels::from).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

impl From<&CommandInfo> for pb::CommandInfo {
    fn from(command: &CommandInfo) -> Self {
        pb::CommandInfo {
            environment: (!command.environment.is_empty()).then(|| pb::Environment {
                variables: command
                    .environment
                    .iter()
                    .map(|(name, value)| pb::environment::Variable { name: name.clone(), value: value.clone() })
                    .collect(),
            }),
            shell: Some(command.shell),
            value: command.value.clone(),
            arguments: command.arguments.clone(),
            user: command.user.clone().unwrap_or_default(),
        }
    }
}

impl From<pb::CommandInfo> for CommandInfo {
    fn from(command: pb::CommandInfo) -> Self {
        CommandInfo {
            // Mesos runs a command under a shell unless told otherwise.
            shell: command.shell.unwrap_or(true),
            value: command.value,
            arguments: command.arguments,
            environment: command
                .environment
                .map(|env| env.variables.into_iter().map(|v| (v.name, v.value)).collect())
                .unwrap_or_default(),
            user: (!command.user.is_empty()).then_some(command.user),
        }
    }
}

impl From<&DiscoveryInfo> for pb::DiscoveryInfo {
    fn from(discovery: &DiscoveryInfo) -> Self {
        // FRAMEWORK is the Mesos default, so an unrecognised domain string degrades to it.
        let visibility =
            Visibility::from_str_name(&discovery.visibility.to_ascii_uppercase()).unwrap_or(Visibility::Framework);
        pb::DiscoveryInfo {
            visibility: Some(visibility as i32),
            name: discovery.name.clone(),
            environment: String::new(),
            location: String::new(),
            version: String::new(),
            ports: (!discovery.ports.is_empty())
                .then(|| pb::Ports { ports: discovery.ports.iter().map(pb::Port::from).collect() }),
            labels: labels_to_pb(&discovery.labels),
        }
    }
}

impl TryFrom<pb::DiscoveryInfo> for DiscoveryInfo {
    type Error = ConvertError;

    fn try_from(discovery: pb::DiscoveryInfo) -> Result<Self, ConvertError> {
        Ok(DiscoveryInfo {
            visibility: enum_value::<Visibility>(discovery.visibility.unwrap_or_default(), "visibility")?
                .as_str_name()
                .to_owned(),
            name: discovery.name,
            ports: convert_each(discovery.ports.map(|p| p.ports).unwrap_or_default(), "ports.ports")?,
            labels: labels_from_pb(discovery.labels),
        })
    }
}

impl From<&DiscoveryPort> for pb::Port {
    fn from(port: &DiscoveryPort) -> Self {
        pb::Port {
            number: Some(port.number),
            name: port.name.clone(),
            protocol: port.protocol.clone(),
            labels: labels_to_pb(&port.labels),
        }
    }
}

impl TryFrom<pb::Port> for DiscoveryPort {
    type Error = ConvertError;

    fn try_from(port: pb::Port) -> Result<Self, ConvertError> {
        if u64::from(port.number()) > MAX_PORT {
            return Err(ConvertError::OutOfRange {
                field: "number".into(),
                value: port.number().to_string(),
                expected: "a port number (at most 65535)",
            });
        }
        Ok(DiscoveryPort {
            number: port.number(),
            name: port.name,
            protocol: port.protocol,
            labels: labels_from_pb(port.labels),
        })
    }
}

impl From<&TaskInfo> for pb::TaskInfo {
    fn from(info: &TaskInfo) -> Self {
        pb::TaskInfo {
            name: info.name.clone(),
            task_id: Some((&info.task_id).into()),
            agent_id: Some((&info.agent_id).into()),
            resources: (&info.resources).into(),
            command: Some((&info.command).into()),
            labels: labels_to_pb(&info.labels),
            discovery: info.discovery.as_ref().map(Into::into),
            kill_policy: kill_policy_to_pb(info.kill_grace_period_secs),
            health_check: info.health_check.as_ref().map(Into::into),
            container: networks_to_pb(&info.networks),
        }
    }
}

fn networks_to_pb(networks: &[NetworkRequest]) -> Option<pb::ContainerInfo> {
    if networks.is_empty() {
        return None;
    }
    Some(pb::ContainerInfo {
        r#type: pb::container_info::Type::Mesos as i32,
        network_infos: networks
            .iter()
            .map(|n| pb::NetworkInfo {
                ip_addresses: n.ip.iter().map(|ip| pb::IpAddress { ip_address: ip.to_string() }).collect(),
                name: n.name.clone(),
                port_mappings: n
                    .port_mappings
                    .iter()
                    .map(|m| pb::network_info::PortMapping {
                        host_port: u32::from(m.host_port),
                        container_port: u32::from(m.container_port),
                        protocol: m.protocol.clone(),
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn networks_from_pb(container: Option<pb::ContainerInfo>) -> Result<Vec<NetworkRequest>, ConvertError> {
    let Some(container) = container else { return Ok(Vec::new()) };
    let mut networks = Vec::new();
    for (i, network) in container.network_infos.into_iter().enumerate() {
        let field = format!("container.network_infos[{i}]");
        if network.name.is_empty() {
            return Err(ConvertError::Empty { field: format!("{field}.name") });
        }
        let ip = match network.ip_addresses.as_slice() {
            [] => None,
            [one] if one.ip_address.is_empty() => None,
            [one] => Some(parse_ip(&one.ip_address, &format!("{field}.ip_addresses[0].ip_address"))?),
            _ => {
                return Err(ConvertError::Unsupported {
                    field: format!("{field}.ip_addresses"),
                    value: "more than one address per network",
                });
            }
        };
        let mut port_mappings = Vec::new();
        for (j, m) in network.port_mappings.into_iter().enumerate() {
            let port = |value: u32, name: &str| check_port(value, &format!("{field}.port_mappings[{j}].{name}"));
            let protocol = if m.protocol.is_empty() { "tcp".to_owned() } else { m.protocol.to_ascii_lowercase() };
            if protocol != "tcp" && protocol != "udp" {
                return Err(ConvertError::Unsupported {
                    field: format!("{field}.port_mappings[{j}].protocol"),
                    value: "protocol (tcp or udp)",
                });
            }
            port_mappings.push(TaskPortMapping {
                host_port: port(m.host_port, "host_port")?,
                container_port: port(m.container_port, "container_port")?,
                protocol,
            });
        }
        networks.push(NetworkRequest { name: network.name, ip, port_mappings });
    }
    Ok(networks)
}

impl From<&AgentSubnet> for pb::Subnet {
    fn from(subnet: &AgentSubnet) -> Self {
        pb::Subnet {
            pool: subnet.pool.clone(),
            network: subnet.network.to_string(),
            gateway: subnet.gateway.to_string(),
        }
    }
}

impl TryFrom<pb::Subnet> for AgentSubnet {
    type Error = ConvertError;

    fn try_from(subnet: pb::Subnet) -> Result<Self, ConvertError> {
        let network = subnet
            .network
            .parse()
            .map_err(|_| ConvertError::BadIp { field: "network".into(), value: subnet.network.clone() })?;
        Ok(AgentSubnet {
            pool: non_empty(subnet.pool, "pool")?,
            network,
            gateway: parse_ip(&subnet.gateway, "gateway")?,
        })
    }
}

impl From<&HealthCheck> for pb::HealthCheck {
    fn from(check: &HealthCheck) -> Self {
        use pb::health_check::Type;
        let mut out = pb::HealthCheck {
            delay_seconds: Some(check.delay_secs),
            interval_seconds: Some(check.interval_secs),
            timeout_seconds: Some(check.timeout_secs),
            consecutive_failures: Some(check.consecutive_failures),
            grace_period_seconds: Some(check.grace_period_secs),
            ..Default::default()
        };
        match &check.kind {
            HealthCheckKind::Http { port, path } => {
                out.r#type = Type::Http as i32;
                out.http = Some(pb::health_check::HttpCheckInfo {
                    scheme: "http".into(),
                    port: u32::from(*port),
                    path: path.clone(),
                });
            }
            HealthCheckKind::Tcp { port } => {
                out.r#type = Type::Tcp as i32;
                out.tcp = Some(pb::health_check::TcpCheckInfo { port: u32::from(*port) });
            }
            HealthCheckKind::Command { command } => {
                out.r#type = Type::Command as i32;
                out.command = Some(command.into());
            }
        }
        out
    }
}

fn check_port(port: u32, field: &str) -> Result<u16, ConvertError> {
    u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| ConvertError::OutOfRange {
        field: field.to_owned(),
        value: port.to_string(),
        expected: "a port from 1 to 65535",
    })
}

impl TryFrom<pb::HealthCheck> for HealthCheck {
    type Error = ConvertError;

    fn try_from(check: pb::HealthCheck) -> Result<Self, ConvertError> {
        use pb::health_check::Type;
        let kind = match enum_value::<Type>(check.r#type, "type")? {
            Type::Http => {
                let http = required(check.http, "http")?;
                if !http.scheme.is_empty() && http.scheme != "http" {
                    return Err(ConvertError::Unsupported { field: "http.scheme".into(), value: "scheme (only http)" });
                }
                let path = if http.path.is_empty() { "/".to_owned() } else { http.path };
                HealthCheckKind::Http { port: check_port(http.port, "http.port")?, path }
            }
            Type::Tcp => HealthCheckKind::Tcp { port: check_port(required(check.tcp, "tcp")?.port, "tcp.port")? },
            Type::Command => HealthCheckKind::Command { command: required(check.command, "command")?.into() },
            Type::Unknown => return Err(ConvertError::Missing { field: "type".into() }),
        };
        let defaults = HealthCheck::new(kind);
        let seconds = |value: Option<f64>, default: f64, field: &str| match value {
            None => Ok(default),
            Some(v) => non_negative(v, field),
        };
        Ok(HealthCheck {
            delay_secs: seconds(check.delay_seconds, defaults.delay_secs, "delay_seconds")?,
            interval_secs: seconds(check.interval_seconds, defaults.interval_secs, "interval_seconds")?,
            timeout_secs: seconds(check.timeout_seconds, defaults.timeout_secs, "timeout_seconds")?,
            consecutive_failures: check.consecutive_failures.unwrap_or(defaults.consecutive_failures),
            grace_period_secs: seconds(check.grace_period_seconds, defaults.grace_period_secs, "grace_period_seconds")?,
            kind: defaults.kind,
        })
    }
}

impl TryFrom<pb::TaskInfo> for TaskInfo {
    type Error = ConvertError;

    fn try_from(info: pb::TaskInfo) -> Result<Self, ConvertError> {
        Ok(TaskInfo {
            name: info.name,
            task_id: convert_required(info.task_id, "task_id")?,
            agent_id: convert_required(info.agent_id, "agent_id")?,
            resources: convert(info.resources, "resources")?,
            // Atoll has no custom executors, so the command is what runs.
            command: required(info.command, "command")?.into(),
            labels: labels_from_pb(info.labels),
            discovery: convert_optional(info.discovery, "discovery")?,
            kill_grace_period_secs: kill_grace_from_pb(info.kill_policy).map_err(|e| e.within("kill_policy"))?,
            health_check: convert_optional(info.health_check, "health_check")?,
            networks: networks_from_pb(info.container)?,
        })
    }
}

fn container_status_to_pb(ip_addresses: &[IpAddr], executor_pid: Option<u32>) -> Option<pb::ContainerStatus> {
    if ip_addresses.is_empty() && executor_pid.is_none() {
        return None;
    }
    let network_infos = if ip_addresses.is_empty() {
        Vec::new()
    } else {
        vec![pb::NetworkInfo {
            ip_addresses: ip_addresses.iter().map(|ip| pb::IpAddress { ip_address: ip.to_string() }).collect(),
            name: String::new(),
            port_mappings: Vec::new(),
        }]
    };
    Some(pb::ContainerStatus { network_infos, executor_pid: executor_pid.unwrap_or(0) })
}

impl From<&TaskStatus> for pb::TaskStatus {
    fn from(status: &TaskStatus) -> Self {
        pb::TaskStatus {
            task_id: Some((&status.task_id).into()),
            state: Some(PbTaskState::from(status.state) as i32),
            message: status.message.clone().unwrap_or_default(),
            source: PbSource::from(status.source) as i32,
            reason: status.reason.map(|r| PbReason::from(r) as i32),
            data: Vec::new(),
            agent_id: status.agent_id.as_ref().map(Into::into),
            timestamp: status.timestamp.as_secs_f64(),
            uuid: status.uuid.map(|u| u.as_bytes().to_vec()).unwrap_or_default(),
            healthy: status.healthy,
            labels: None,
            container_status: container_status_to_pb(&status.ip_addresses, status.executor_pid),
            exit_code: status.exit_code,
            exit_signal: status.exit_signal,
        }
    }
}

impl TryFrom<pb::TaskStatus> for TaskStatus {
    type Error = ConvertError;

    fn try_from(status: pb::TaskStatus) -> Result<Self, ConvertError> {
        let reason = match status.reason {
            Some(number) => Some(enum_value::<PbReason>(number, "reason")?.into()),
            None => None,
        };
        let (ip_addresses, executor_pid) = match status.container_status {
            Some(container) => (
                container_ips(container.network_infos).map_err(|e| e.within("container_status"))?,
                (container.executor_pid != 0).then_some(container.executor_pid),
            ),
            None => (Vec::new(), None),
        };
        Ok(TaskStatus {
            task_id: convert_required(status.task_id, "task_id")?,
            state: enum_value::<PbTaskState>(status.state.unwrap_or_default(), "state")?.into(),
            message: (!status.message.is_empty()).then_some(status.message),
            source: enum_value::<PbSource>(status.source, "source")?.into(),
            reason,
            agent_id: convert_optional(status.agent_id, "agent_id")?,
            timestamp: time_from_secs(status.timestamp, "timestamp")?,
            uuid: uuid_from_pb(&status.uuid, "uuid")?,
            healthy: status.healthy,
            ip_addresses,
            executor_pid,
            exit_code: status.exit_code,
            exit_signal: status.exit_signal,
        })
    }
}

/// The addresses of every network the container joined. An empty `ip_address` is skipped:
/// Mesos uses address entries without an address to request one by protocol.
fn container_ips(network_infos: Vec<pb::NetworkInfo>) -> Result<Vec<IpAddr>, ConvertError> {
    let mut ips = Vec::new();
    for (i, network) in network_infos.into_iter().enumerate() {
        for (j, address) in network.ip_addresses.into_iter().enumerate() {
            if address.ip_address.is_empty() {
                continue;
            }
            ips.push(parse_ip(&address.ip_address, &format!("network_infos[{i}].ip_addresses[{j}].ip_address"))?);
        }
    }
    Ok(ips)
}

impl From<&Task> for pb::TaskInfo {
    fn from(task: &Task) -> Self {
        pb::TaskInfo::from(&task.info())
    }
}

/// The wire task has no place for the derived state, health and addresses, so the status
/// carries them: the latest status may lack health or addresses an earlier one reported,
/// and consumers (DNS, load balancers) must not lose them.
impl From<&Task> for operator::Task {
    fn from(task: &Task) -> Self {
        let mut status = pb::TaskStatus::from(&task.status);
        status.state = Some(PbTaskState::from(task.state) as i32);
        if status.healthy.is_none() {
            status.healthy = task.healthy;
        }
        if task.status.ip_addresses.is_empty() && !task.ip_addresses.is_empty() {
            status.container_status = container_status_to_pb(&task.ip_addresses, task.status.executor_pid);
        }
        operator::Task {
            info: Some(task.into()),
            framework_id: Some((&task.framework_id).into()),
            status: Some(status),
            executor_id: task.executor_id.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<operator::Task> for Task {
    type Error = ConvertError;

    fn try_from(task: operator::Task) -> Result<Self, ConvertError> {
        let info = required(task.info, "info")?;
        check_ports(&info.resources).map_err(|e| e.within("info.resources"))?;
        let info: TaskInfo = convert(info, "info")?;
        let framework_id = convert_required(task.framework_id, "framework_id")?;
        let status: TaskStatus = convert_required(task.status, "status")?;
        let executor_id = convert_optional(task.executor_id, "executor_id")?;
        if status.task_id != info.task_id {
            return Err(ConvertError::Mismatch {
                field: "status.task_id.value".into(),
                value: status.task_id.0,
                expected: info.task_id.0,
            });
        }
        let ports = info.resources.ranges("ports").values().collect();
        Ok(Task {
            id: info.task_id,
            name: info.name,
            framework_id,
            agent_id: info.agent_id,
            state: status.state,
            resources: info.resources,
            command: info.command,
            labels: info.labels,
            discovery: info.discovery,
            kill_grace_period_secs: info.kill_grace_period_secs,
            health_check: info.health_check,
            networks: info.networks,
            ports,
            ip_addresses: status.ip_addresses.clone(),
            healthy: status.healthy,
            status,
            executor_id,
        })
    }
}

/// A task's `ports` become its list of host ports; bounding them keeps a hostile range from
/// expanding into billions of values.
fn check_ports(resources: &[pb::Resource]) -> Result<(), ConvertError> {
    for (i, resource) in resources.iter().enumerate().filter(|(_, r)| r.name == "ports") {
        let ranges = resource.ranges.iter().flat_map(|r| r.range.iter());
        if let Some((j, range)) = ranges.enumerate().find(|(_, r)| r.end() > MAX_PORT) {
            return Err(ConvertError::OutOfRange {
                field: format!("[{i}].ranges.range[{j}].end"),
                value: range.end().to_string(),
                expected: "a port number (at most 65535)",
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Agents and frameworks
// ---------------------------------------------------------------------------------------------

fn agent_info_to_pb(
    id: Option<&model::AgentId>,
    hostname: &str,
    address: SocketAddr,
    resources: &Resources,
    attributes: &Attributes,
) -> pb::AgentInfo {
    pb::AgentInfo {
        hostname: hostname.to_owned(),
        port: i32::from(address.port()),
        resources: resources.into(),
        attributes: attributes.into(),
        id: id.map(Into::into),
        address: address.to_string(),
    }
}

impl From<&AgentInfo> for pb::AgentInfo {
    fn from(info: &AgentInfo) -> Self {
        agent_info_to_pb(None, &info.hostname, info.address, &info.resources, &info.attributes)
    }
}

impl From<&Agent> for pb::AgentInfo {
    fn from(agent: &Agent) -> Self {
        agent_info_to_pb(Some(&agent.id), &agent.hostname, agent.address, &agent.resources, &agent.attributes)
    }
}

/// The agent's `id` is not part of [`AgentInfo`]; registration reads it from the message.
impl TryFrom<pb::AgentInfo> for AgentInfo {
    type Error = ConvertError;

    fn try_from(info: pb::AgentInfo) -> Result<Self, ConvertError> {
        Ok(AgentInfo {
            hostname: non_empty(info.hostname, "hostname")?,
            address: agent_address(&info.address, info.port)?,
            resources: convert(info.resources, "resources")?,
            attributes: convert(info.attributes, "attributes")?,
        })
    }
}

/// `address` is `ip:port`; a bare IP is also taken, with the port from `port`, as the
/// field's proto comment describes it that way.
fn agent_address(address: &str, port: i32) -> Result<SocketAddr, ConvertError> {
    if address.is_empty() {
        return Err(ConvertError::Empty { field: "address".into() });
    }
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return Ok(socket);
    }
    let Ok(ip) = address.parse::<IpAddr>() else {
        return Err(ConvertError::BadAddress { field: "address".into(), value: address.to_owned() });
    };
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(SocketAddr::new(ip, port)),
        _ => Err(ConvertError::OutOfRange {
            field: "port".into(),
            value: port.to_string(),
            expected: "a port number in 1..=65535",
        }),
    }
}

impl From<&Agent> for operator::Agent {
    fn from(agent: &Agent) -> Self {
        operator::Agent {
            info: Some(agent.into()),
            state: PbAgentState::from(agent.state) as i32,
            registered_at: agent.registered_at.as_secs_f64(),
            used: (&agent.used).into(),
            version: agent.version.clone(),
            drain: agent.drain,
            deactivated: agent.deactivated,
            drain_max_grace_seconds: agent.drain_config.and_then(|c| c.max_grace_period_secs),
            drain_mark_gone: agent.drain_config.is_some_and(|c| c.mark_gone),
            subnets: agent.subnets.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<operator::Agent> for Agent {
    type Error = ConvertError;

    fn try_from(agent: operator::Agent) -> Result<Self, ConvertError> {
        let mut info = required(agent.info, "info")?;
        let id = convert_required(info.id.take(), "info.id")?;
        let AgentInfo { hostname, address, resources, attributes } = convert(info, "info")?;
        let state: AgentState = enum_value::<PbAgentState>(agent.state, "state")?.into();
        Ok(Agent {
            id,
            hostname,
            address,
            resources,
            used: convert(agent.used, "used")?,
            attributes,
            state,
            drain: agent.drain,
            deactivated: agent.deactivated,
            drain_config: agent.drain.then_some(model::DrainConfig {
                max_grace_period_secs: agent.drain_max_grace_seconds,
                mark_gone: agent.drain_mark_gone,
            }),
            registered_at: time_from_secs(agent.registered_at, "registered_at")?,
            version: agent.version,
            subnets: convert_each(agent.subnets, "subnets")?,
        })
    }
}

fn framework_info_to_pb(info: &FrameworkInfo, id: Option<&FrameworkId>) -> pb::FrameworkInfo {
    // Mesos refuses `role` from a MULTI_ROLE framework, which names its roles in `roles`.
    let multi_role = info.has(Capability::MultiRole);
    pb::FrameworkInfo {
        user: Some(info.user.clone()),
        name: info.name.clone(),
        id: id.map(Into::into),
        failover_timeout: info.failover_timeout_secs,
        // Atoll agents checkpoint every task, whatever the framework asked.
        checkpoint: true,
        role: if multi_role { String::new() } else { info.role.clone() },
        roles: if multi_role { vec![info.role.clone()] } else { Vec::new() },
        hostname: info.hostname.clone(),
        principal: info.principal.clone(),
        webui_url: info.webui_url.clone(),
        capabilities: info
            .capabilities
            .iter()
            .map(|&c| pb::framework_info::Capability { r#type: PbCapability::from(c) as i32 })
            .collect(),
        labels: labels_to_pb(&info.labels),
    }
}

impl From<&FrameworkInfo> for pb::FrameworkInfo {
    fn from(info: &FrameworkInfo) -> Self {
        framework_info_to_pb(info, None)
    }
}

impl From<&Framework> for pb::FrameworkInfo {
    fn from(framework: &Framework) -> Self {
        framework_info_to_pb(&framework.info, Some(&framework.id))
    }
}

/// The framework's `id` is not part of [`FrameworkInfo`]; subscription reads it from the message.
impl TryFrom<pb::FrameworkInfo> for FrameworkInfo {
    type Error = ConvertError;

    fn try_from(info: pb::FrameworkInfo) -> Result<Self, ConvertError> {
        let role = if info.role.is_empty() {
            info.roles.into_iter().next().filter(|r| !r.is_empty()).unwrap_or_else(model::default_role)
        } else {
            info.role
        };
        let mut capabilities = Vec::with_capacity(info.capabilities.len());
        for (i, capability) in info.capabilities.iter().enumerate() {
            let wire = enum_value::<PbCapability>(capability.r#type, &format!("capabilities[{i}].type"))?;
            // UNKNOWN is what an older Mesos client sends for a capability it cannot name.
            if let Ok(capability) = Capability::try_from(wire) {
                capabilities.push(capability);
            }
        }
        Ok(FrameworkInfo {
            name: non_empty(info.name, "name")?,
            user: info.user.unwrap_or_default(),
            role,
            failover_timeout_secs: non_negative(info.failover_timeout, "failover_timeout")?,
            hostname: info.hostname,
            principal: info.principal,
            webui_url: info.webui_url,
            capabilities,
            labels: labels_from_pb(info.labels),
        })
    }
}

impl From<&Framework> for operator::Framework {
    fn from(framework: &Framework) -> Self {
        operator::Framework {
            info: Some(framework.into()),
            connected: framework.connected,
            hosted: framework.hosted,
            registered_at: framework.registered_at.as_secs_f64(),
        }
    }
}

impl TryFrom<operator::Framework> for Framework {
    type Error = ConvertError;

    fn try_from(framework: operator::Framework) -> Result<Self, ConvertError> {
        let mut info = required(framework.info, "info")?;
        let id = convert_required(info.id.take(), "info.id")?;
        Ok(Framework {
            id,
            info: convert(info, "info")?,
            connected: framework.connected,
            hosted: framework.hosted,
            registered_at: time_from_secs(framework.registered_at, "registered_at")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The event stream
// ---------------------------------------------------------------------------------------------

impl From<&Event> for operator::Event {
    fn from(event: &Event) -> Self {
        use operator::event::{AgentRemoved, AppRemoved, DeploymentFinished, FrameworkRemoved, Kind};
        let kind = match &event.kind {
            EventKind::AgentAdded { agent } => Kind::AgentAdded(agent.into()),
            EventKind::AgentUpdated { agent } => Kind::AgentUpdated(agent.into()),
            EventKind::AgentRemoved { agent_id } => {
                Kind::AgentRemoved(AgentRemoved { agent_id: Some(agent_id.into()) })
            }
            EventKind::FrameworkAdded { framework } => Kind::FrameworkAdded(framework.into()),
            EventKind::FrameworkUpdated { framework } => Kind::FrameworkUpdated(framework.into()),
            EventKind::FrameworkRemoved { framework_id } => {
                Kind::FrameworkRemoved(FrameworkRemoved { framework_id: Some(framework_id.into()) })
            }
            EventKind::TaskAdded { task } => Kind::TaskAdded(task.into()),
            EventKind::TaskUpdated { task } => Kind::TaskUpdated(task.into()),
            EventKind::AppUpdated { app } => Kind::AppUpdated(app.into()),
            EventKind::AppRemoved { app_id } => Kind::AppRemoved(AppRemoved { app_id: app_id.to_string() }),
            EventKind::DeploymentUpdated { deployment } => Kind::DeploymentUpdated(deployment.into()),
            EventKind::DeploymentFinished { deployment, outcome } => Kind::DeploymentFinished(DeploymentFinished {
                deployment: Some(deployment.into()),
                outcome: json_text(outcome).trim_matches('"').to_owned(),
            }),
            EventKind::PoolAdded { pool } => Kind::PoolAdded(pool_to_pb(pool)),
            EventKind::PoolUpdated { pool } => Kind::PoolUpdated(pool_to_pb(pool)),
            EventKind::PoolRemoved { name } => Kind::PoolRemoved(operator::event::PoolRemoved { name: name.clone() }),
            EventKind::VipAssigned { vip } => Kind::VipAssigned(vip.into()),
            EventKind::VipReleased { vip } => Kind::VipReleased(vip.into()),
        };
        operator::Event { index: event.index, timestamp: event.timestamp.as_secs_f64(), kind: Some(kind) }
    }
}

impl TryFrom<operator::Event> for Event {
    type Error = ConvertError;

    fn try_from(event: operator::Event) -> Result<Self, ConvertError> {
        use operator::event::Kind;
        let kind = match required(event.kind, "kind")? {
            Kind::AgentAdded(agent) => EventKind::AgentAdded { agent: convert(agent, "agent_added")? },
            Kind::AgentUpdated(agent) => EventKind::AgentUpdated { agent: convert(agent, "agent_updated")? },
            Kind::AgentRemoved(removed) => {
                EventKind::AgentRemoved { agent_id: convert_required(removed.agent_id, "agent_removed.agent_id")? }
            }
            Kind::FrameworkAdded(framework) => {
                EventKind::FrameworkAdded { framework: convert(framework, "framework_added")? }
            }
            Kind::FrameworkUpdated(framework) => {
                EventKind::FrameworkUpdated { framework: convert(framework, "framework_updated")? }
            }
            Kind::FrameworkRemoved(removed) => EventKind::FrameworkRemoved {
                framework_id: convert_required(removed.framework_id, "framework_removed.framework_id")?,
            },
            Kind::TaskAdded(task) => EventKind::TaskAdded { task: convert(task, "task_added")? },
            Kind::TaskUpdated(task) => EventKind::TaskUpdated { task: convert(task, "task_updated")? },
            Kind::AppUpdated(app) => EventKind::AppUpdated { app: convert(app, "app_updated")? },
            Kind::AppRemoved(removed) => EventKind::AppRemoved {
                app_id: AppId::parse(&removed.app_id)
                    .map_err(|message| ConvertError::BadJson { field: "app_removed.app_id".into(), message })?,
            },
            Kind::DeploymentUpdated(deployment) => {
                EventKind::DeploymentUpdated { deployment: convert(deployment, "deployment_updated")? }
            }
            Kind::PoolAdded(pool) => EventKind::PoolAdded { pool: pool_from_pb(pool, "pool_added")? },
            Kind::PoolUpdated(pool) => EventKind::PoolUpdated { pool: pool_from_pb(pool, "pool_updated")? },
            Kind::PoolRemoved(removed) => {
                EventKind::PoolRemoved { name: non_empty(removed.name, "pool_removed.name")? }
            }
            Kind::VipAssigned(vip) => EventKind::VipAssigned { vip: convert(vip, "vip_assigned")? },
            Kind::VipReleased(vip) => EventKind::VipReleased { vip: convert(vip, "vip_released")? },
            Kind::DeploymentFinished(finished) => EventKind::DeploymentFinished {
                deployment: convert_required(finished.deployment, "deployment_finished.deployment")?,
                outcome: from_json_text(&format!("\"{}\"", finished.outcome), "deployment_finished.outcome")?,
            },
        };
        Ok(Event { index: event.index, timestamp: time_from_secs(event.timestamp, "timestamp")?, kind })
    }
}

impl From<&ClusterState> for operator::State {
    fn from(state: &ClusterState) -> Self {
        operator::State {
            index: state.index,
            agents: state.agents.iter().map(Into::into).collect(),
            frameworks: state.frameworks.iter().map(Into::into).collect(),
            tasks: state.tasks.iter().map(Into::into).collect(),
            apps: state.apps.iter().map(Into::into).collect(),
            deployments: state.deployments.iter().map(Into::into).collect(),
            pools: state.pools.iter().map(pool_to_pb).collect(),
            vips: state.vips.iter().map(Into::into).collect(),
        }
    }
}

impl From<&VipAssignment> for operator::Vip {
    fn from(vip: &VipAssignment) -> Self {
        operator::Vip { framework: vip.framework.clone(), name: vip.name.clone(), address: vip.address.to_string() }
    }
}

impl TryFrom<operator::Vip> for VipAssignment {
    type Error = ConvertError;

    fn try_from(vip: operator::Vip) -> Result<Self, ConvertError> {
        Ok(VipAssignment {
            framework: non_empty(vip.framework, "framework")?,
            name: non_empty(vip.name, "name")?,
            address: parse_ip(&vip.address, "address")?,
        })
    }
}

fn pool_to_pb(pool: &model::PoolSpec) -> operator::Pool {
    operator::Pool { name: pool.name.clone(), json: json_text(pool) }
}

fn pool_from_pb(pool: operator::Pool, field: &str) -> Result<model::PoolSpec, ConvertError> {
    from_json_text(&pool.json, &format!("{field}.json"))
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    // The model's serde forms are plain data: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json_text<T: serde::de::DeserializeOwned>(text: &str, field: &str) -> Result<T, ConvertError> {
    serde_json::from_str(text).map_err(|e| ConvertError::BadJson { field: field.to_owned(), message: e.to_string() })
}

impl From<&App> for operator::App {
    fn from(app: &App) -> Self {
        operator::App { id: app.id.to_string(), json: json_text(app) }
    }
}

impl TryFrom<operator::App> for App {
    type Error = ConvertError;

    fn try_from(app: operator::App) -> Result<Self, ConvertError> {
        from_json_text(&app.json, "json")
    }
}

impl From<&Deployment> for operator::Deployment {
    fn from(deployment: &Deployment) -> Self {
        operator::Deployment {
            id: deployment.id.clone(),
            app_id: deployment.app_id.to_string(),
            json: json_text(deployment),
        }
    }
}

impl TryFrom<operator::Deployment> for Deployment {
    type Error = ConvertError;

    fn try_from(deployment: operator::Deployment) -> Result<Self, ConvertError> {
        from_json_text(&deployment.json, "json")
    }
}

impl TryFrom<operator::State> for ClusterState {
    type Error = ConvertError;

    fn try_from(state: operator::State) -> Result<Self, ConvertError> {
        Ok(ClusterState {
            index: state.index,
            agents: convert_each(state.agents, "agents")?,
            frameworks: convert_each(state.frameworks, "frameworks")?,
            tasks: convert_each(state.tasks, "tasks")?,
            apps: convert_each(state.apps, "apps")?,
            deployments: convert_each(state.deployments, "deployments")?,
            pools: state
                .pools
                .into_iter()
                .enumerate()
                .map(|(i, p)| pool_from_pb(p, &format!("pools[{i}]")))
                .collect::<Result<_, _>>()?,
            vips: convert_each(state.vips, "vips")?,
        })
    }
}

impl From<&StreamMessage> for operator::StreamMessage {
    fn from(message: &StreamMessage) -> Self {
        use operator::stream_message::Message;
        let message = match message {
            StreamMessage::Snapshot { state } => Message::Snapshot(state.into()),
            StreamMessage::Event { event } => Message::Event(event.into()),
            StreamMessage::FellBehind { requested, oldest_retained } => {
                Message::FellBehind(operator::FellBehind { requested: *requested, oldest_retained: *oldest_retained })
            }
            StreamMessage::Heartbeat => Message::Heartbeat(operator::Heartbeat {}),
        };
        operator::StreamMessage { message: Some(message) }
    }
}

impl TryFrom<operator::StreamMessage> for StreamMessage {
    type Error = ConvertError;

    fn try_from(message: operator::StreamMessage) -> Result<Self, ConvertError> {
        use operator::stream_message::Message;
        Ok(match required(message.message, "message")? {
            Message::Snapshot(state) => StreamMessage::Snapshot { state: convert(state, "snapshot")? },
            Message::Event(event) => StreamMessage::Event { event: convert(event, "event")? },
            Message::FellBehind(behind) => {
                StreamMessage::FellBehind { requested: behind.requested, oldest_retained: behind.oldest_retained }
            }
            Message::Heartbeat(_) => StreamMessage::Heartbeat,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{AgentId, ExecutorId, TaskId};

    // ----- strategies -------------------------------------------------------------------------

    fn arb_id() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,15}"
    }

    fn arb_time() -> impl Strategy<Value = Time> {
        (0u64..4_000_000_000_000).prop_map(Time)
    }

    fn arb_labels() -> impl Strategy<Value = Labels> {
        proptest::collection::btree_map("[a-z_]{0,8}", "[ -~]{0,8}", 0..3).prop_map(Labels)
    }

    fn arb_pairs(max: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
        proptest::collection::vec((0..max, 0u64..40), 0..4)
            .prop_map(|pairs| pairs.into_iter().map(|(b, len)| (b, b + len)).collect())
    }

    /// Port-like ranges stay below 65535 so they are valid on tasks too.
    fn arb_resources() -> BoxedStrategy<Resources> {
        let scalar = (0i64..1_000_000_000).prop_map(|m| ResourceValue::Scalar(Scalar::from_milli(m)));
        let ranges = arb_pairs(65_000).prop_map(|p| ResourceValue::Ranges(Ranges::from_pairs(p)));
        proptest::collection::btree_map("[a-z]{1,6}", prop_oneof![scalar, ranges], 0..5)
            .prop_map(|map| {
                let mut resources = Resources::new();
                for (name, value) in map {
                    match value {
                        ResourceValue::Scalar(s) => resources.add_scalar(&name, s),
                        ResourceValue::Ranges(r) => resources.add_ranges(&name, &r),
                    }
                }
                resources
            })
            .boxed()
    }

    fn arb_attributes() -> impl Strategy<Value = Attributes> {
        let value = prop_oneof![
            (-1e6f64..1e6).prop_map(AttributeValue::Scalar),
            arb_pairs(1000).prop_map(AttributeValue::Ranges),
            "[a-z0-9]{0,8}".prop_map(AttributeValue::Text),
        ];
        proptest::collection::btree_map("[a-z]{1,6}", value, 0..4).prop_map(Attributes)
    }

    fn arb_state() -> impl Strategy<Value = TaskState> {
        proptest::sample::select(TaskState::ALL.to_vec())
    }

    fn arb_source() -> impl Strategy<Value = Source> {
        proptest::sample::select(vec![Source::Master, Source::Agent, Source::Executor])
    }

    fn arb_status_for(task_id: TaskId) -> impl Strategy<Value = TaskStatus> {
        let head = (
            arb_state(),
            proptest::option::of("[ -~]{1,20}"),
            arb_source(),
            proptest::option::of(proptest::sample::select(Reason::ALL.to_vec())),
            proptest::option::of(arb_id().prop_map(AgentId)),
            arb_time(),
            proptest::option::of(any::<[u8; 16]>().prop_map(uuid::Uuid::from_bytes)),
        );
        let tail = (
            proptest::option::of(any::<bool>()),
            proptest::collection::vec(any::<IpAddr>(), 0..3),
            proptest::option::of(1u32..),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i32>()),
        );
        (head, tail).prop_map(
            move |(
                (state, message, source, reason, agent_id, timestamp, uuid),
                (healthy, ip_addresses, executor_pid, exit_code, exit_signal),
            )| TaskStatus {
                task_id: task_id.clone(),
                state,
                message,
                source,
                reason,
                agent_id,
                timestamp,
                uuid,
                healthy,
                ip_addresses,
                executor_pid,
                exit_code,
                exit_signal,
            },
        )
    }

    fn arb_status() -> BoxedStrategy<TaskStatus> {
        arb_id().prop_flat_map(|id| arb_status_for(TaskId(id))).boxed()
    }

    fn arb_command() -> impl Strategy<Value = CommandInfo> {
        (
            any::<bool>(),
            "[ -~]{0,20}",
            proptest::collection::vec("[ -~]{0,8}", 0..3),
            proptest::collection::vec(("[A-Z_]{1,6}", "[ -~]{0,8}"), 0..3),
            proptest::option::of("[a-z]{1,8}"),
        )
            .prop_map(|(shell, value, arguments, environment, user)| CommandInfo {
                shell,
                value,
                arguments,
                environment,
                user,
            })
    }

    fn arb_discovery() -> impl Strategy<Value = DiscoveryInfo> {
        let port = (0u32..=65535, "[a-z]{0,6}", "(tcp|udp|)", arb_labels())
            .prop_map(|(number, name, protocol, labels)| DiscoveryPort { number, name, protocol, labels });
        (
            proptest::sample::select(vec!["FRAMEWORK", "CLUSTER", "EXTERNAL"]),
            "[a-z]{0,8}",
            proptest::collection::vec(port, 0..3),
            arb_labels(),
        )
            .prop_map(|(visibility, name, ports, labels)| DiscoveryInfo {
                visibility: visibility.to_owned(),
                name,
                ports,
                labels,
            })
    }

    fn arb_task_info() -> BoxedStrategy<TaskInfo> {
        (
            "[ -~]{0,12}",
            arb_id(),
            arb_id(),
            arb_resources(),
            arb_command(),
            arb_labels(),
            proptest::option::of(arb_discovery()),
            proptest::option::of((0u32..1_000_000).prop_map(|ms| f64::from(ms) / 1000.0)),
            proptest::option::of(arb_health_check()),
        )
            .prop_map(
                |(
                    name,
                    task_id,
                    agent_id,
                    resources,
                    command,
                    labels,
                    discovery,
                    kill_grace_period_secs,
                    health_check,
                )| {
                    let with_network = port_hint(&name);
                    TaskInfo {
                        name,
                        task_id: TaskId(task_id),
                        agent_id: AgentId(agent_id),
                        resources,
                        command,
                        labels,
                        discovery,
                        kill_grace_period_secs,
                        health_check,
                        networks: if with_network {
                            vec![NetworkRequest {
                                name: "atoll".into(),
                                ip: Some(IpAddr::from([198, 18, 0, 7])),
                                port_mappings: vec![TaskPortMapping {
                                    host_port: 31000,
                                    container_port: 80,
                                    protocol: "tcp".into(),
                                }],
                            }]
                        } else {
                            Vec::new()
                        },
                    }
                },
            )
            .boxed()
    }

    fn arb_health_check() -> impl Strategy<Value = HealthCheck> {
        let seconds = (0u32..100_000).prop_map(|ms| f64::from(ms) / 1000.0);
        (
            prop_oneof![
                (1u16.., "/[a-z]{0,8}").prop_map(|(port, path)| HealthCheckKind::Http { port, path }),
                (1u16..).prop_map(|port| HealthCheckKind::Tcp { port }),
                arb_command().prop_map(|command| HealthCheckKind::Command { command }),
            ],
            (seconds.clone(), seconds.clone(), seconds.clone(), seconds),
            0u32..10,
        )
            .prop_map(
                |(kind, (delay_secs, interval_secs, timeout_secs, grace_period_secs), consecutive_failures)| {
                    HealthCheck {
                        kind,
                        delay_secs,
                        interval_secs,
                        timeout_secs,
                        consecutive_failures,
                        grace_period_secs,
                    }
                },
            )
    }

    /// Tasks as the master builds them: launched, then given a status.
    fn arb_task() -> BoxedStrategy<Task> {
        (arb_id(), arb_task_info(), arb_time())
            .prop_flat_map(|(framework_id, info, now)| {
                let status = arb_status_for(info.task_id.clone());
                (Just(framework_id), Just(info), Just(now), status)
            })
            .prop_map(|(framework_id, info, now, status)| {
                let mut task = Task::launched(FrameworkId(framework_id), info, now);
                task.set_status(status);
                task
            })
            .boxed()
    }

    fn arb_agent() -> BoxedStrategy<Agent> {
        let states = vec![
            AgentState::Active,
            AgentState::Draining,
            AgentState::Drained,
            AgentState::Unreachable,
            AgentState::Gone,
            AgentState::Recovered,
            AgentState::Deactivated,
        ];
        (
            (arb_id(), "[a-z][a-z0-9.-]{0,12}", any::<IpAddr>(), any::<u16>()),
            (arb_resources(), arb_resources(), arb_attributes()),
            (proptest::sample::select(states), arb_time(), "[0-9.]{0,6}"),
        )
            .prop_map(|((id, hostname, ip, port), (resources, used, attributes), (state, registered_at, version))| {
                Agent {
                    id: AgentId(id),
                    hostname,
                    address: SocketAddr::new(ip, port),
                    resources,
                    used,
                    attributes,
                    state,
                    drain: matches!(state, AgentState::Draining | AgentState::Drained) || version.len() % 2 == 1,
                    deactivated: state == AgentState::Deactivated || version.len() % 3 == 1,
                    drain_config: (matches!(state, AgentState::Draining | AgentState::Drained)
                        || version.len() % 2 == 1)
                        .then_some(model::DrainConfig {
                            max_grace_period_secs: (version.len() % 4 < 2).then_some(2.5),
                            mark_gone: version.len() % 5 == 0,
                        }),
                    subnets: if version.len() % 3 == 0 {
                        vec![AgentSubnet {
                            pool: "atoll".into(),
                            network: "198.18.3.0/24".parse().unwrap(),
                            gateway: IpAddr::from([198, 18, 3, 1]),
                        }]
                    } else {
                        Vec::new()
                    },
                    registered_at,
                    version,
                }
            })
            .boxed()
    }

    fn arb_framework() -> BoxedStrategy<Framework> {
        let capabilities = proptest::sample::subsequence(
            vec![
                Capability::RevocableResources,
                Capability::TaskKillingState,
                Capability::GpuResources,
                Capability::SharedResources,
                Capability::PartitionAware,
                Capability::MultiRole,
                Capability::ReservationRefinement,
                Capability::RegionAware,
            ],
            0..4,
        );
        (
            (arb_id(), "[ -~]{1,12}", "[a-z]{0,6}", "([a-z]{1,6}|\\*)", 0u32..1_000_000),
            ("[a-z.]{0,8}", "[a-z]{0,6}", "[a-z:/.]{0,12}", capabilities, arb_labels()),
            (any::<bool>(), any::<bool>(), arb_time()),
        )
            .prop_map(
                |(
                    (id, name, user, role, failover),
                    (hostname, principal, webui_url, capabilities, labels),
                    (connected, hosted, registered_at),
                )| Framework {
                    id: FrameworkId(id),
                    info: FrameworkInfo {
                        name,
                        user,
                        role,
                        failover_timeout_secs: f64::from(failover) / 10.0,
                        hostname,
                        principal,
                        webui_url,
                        capabilities,
                        labels,
                    },
                    connected,
                    hosted,
                    registered_at,
                },
            )
            .boxed()
    }

    fn arb_event() -> BoxedStrategy<Event> {
        let kind = prop_oneof![
            arb_agent().prop_map(|agent| EventKind::AgentAdded { agent }),
            arb_agent().prop_map(|agent| EventKind::AgentUpdated { agent }),
            arb_id().prop_map(|id| EventKind::AgentRemoved { agent_id: AgentId(id) }),
            arb_framework().prop_map(|framework| EventKind::FrameworkAdded { framework }),
            arb_framework().prop_map(|framework| EventKind::FrameworkUpdated { framework }),
            arb_id().prop_map(|id| EventKind::FrameworkRemoved { framework_id: FrameworkId(id) }),
            arb_task().prop_map(|task| EventKind::TaskAdded { task }),
            arb_task().prop_map(|task| EventKind::TaskUpdated { task }),
        ];
        (any::<u64>(), arb_time(), kind).prop_map(|(index, timestamp, kind)| Event { index, timestamp, kind }).boxed()
    }

    /// Through the domain → wire → bytes → wire → domain path every consumer sees.
    fn through_wire<D, P>(value: &D) -> Result<D, ConvertError>
    where
        for<'a> P: From<&'a D> + prost::Message + Default,
        D: TryFrom<P, Error = ConvertError>,
    {
        let bytes = P::from(value).encode_to_vec();
        let decoded = P::decode(bytes.as_slice()).expect("prost decodes what it encoded");
        D::try_from(decoded)
    }

    proptest! {
        #[test]
        fn resources_round_trip(resources in arb_resources()) {
            let wire: Vec<pb::Resource> = (&resources).into();
            prop_assert!(wire.iter().all(|r| r.role == "*"));
            prop_assert_eq!(wire.len(), resources.names().count());
            prop_assert_eq!(Resources::try_from(wire).unwrap(), resources);
        }

        #[test]
        fn resources_given_in_parts_are_summed(a in arb_resources(), b in arb_resources()) {
            prop_assume!(a.check_kinds(&b).is_ok());
            let mut wire: Vec<pb::Resource> = (&a).into();
            wire.extend(Vec::<pb::Resource>::from(&b));
            prop_assert_eq!(Resources::try_from(wire).unwrap(), a.plus(&b));
        }

        #[test]
        fn task_status_round_trip(status in arb_status()) {
            prop_assert_eq!(through_wire::<_, pb::TaskStatus>(&status).unwrap(), status);
        }

        #[test]
        fn task_info_round_trip(info in arb_task_info()) {
            prop_assert_eq!(through_wire::<_, pb::TaskInfo>(&info).unwrap(), info);
        }

        #[test]
        fn task_round_trip(task in arb_task()) {
            prop_assert_eq!(through_wire::<_, operator::Task>(&task).unwrap(), task);
        }

        #[test]
        fn agent_and_framework_round_trip(agent in arb_agent(), framework in arb_framework()) {
            prop_assert_eq!(through_wire::<_, operator::Agent>(&agent).unwrap(), agent);
            prop_assert_eq!(through_wire::<_, operator::Framework>(&framework).unwrap(), framework);
        }

        #[test]
        fn event_round_trip(event in arb_event()) {
            prop_assert_eq!(through_wire::<_, operator::Event>(&event).unwrap(), event);
        }

        #[test]
        fn stream_message_round_trip(event in arb_event(), task in arb_task(), agent in arb_agent()) {
            let mut state = ClusterState { index: 7, agents: vec![agent], tasks: vec![task], ..ClusterState::default() };
            state.apply(&event);
            for message in [
                StreamMessage::Snapshot { state },
                StreamMessage::Event { event },
                StreamMessage::FellBehind { requested: 3, oldest_retained: 10 },
                StreamMessage::Heartbeat,
            ] {
                prop_assert_eq!(through_wire::<_, operator::StreamMessage>(&message).unwrap(), message);
            }
        }
    }

    // ----- fixtures -----------------------------------------------------------------------------

    fn scalar(name: &str, value: f64) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            r#type: Some(ValueType::Scalar as i32),
            scalar: Some(pb::value::Scalar { value: Some(value) }),
            ..Default::default()
        }
    }

    fn ranges(name: &str, pairs: &[(u64, u64)]) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            r#type: Some(ValueType::Ranges as i32),
            ranges: Some(ranges_to_pb(pairs)),
            ..Default::default()
        }
    }

    fn task_info() -> pb::TaskInfo {
        pb::TaskInfo {
            name: "web".into(),
            task_id: Some(pb::TaskId { value: "web-1".into() }),
            agent_id: Some(pb::AgentId { value: "a1".into() }),
            resources: vec![scalar("cpus", 0.5), scalar("mem", 64.0), ranges("ports", &[(31000, 31001)])],
            command: Some(pb::CommandInfo { value: "sleep 10".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn status() -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: Some(pb::TaskId { value: "web-1".into() }),
            state: Some(PbTaskState::TaskRunning as i32),
            timestamp: 1.5,
            ..Default::default()
        }
    }

    fn agent() -> Agent {
        Agent {
            id: AgentId::new("a1"),
            hostname: "node1".into(),
            address: "10.0.0.1:5051".parse().unwrap(),
            resources: "cpus:4;mem:1024;ports:[31000-32000]".parse().unwrap(),
            used: Resources::new(),
            attributes: "rack:r1;level:3".parse().unwrap(),
            state: AgentState::Active,
            drain: false,
            deactivated: false,
            drain_config: None,
            registered_at: Time(1_000),
            version: "0.1.0".into(),
            subnets: Vec::new(),
        }
    }

    /// Gives some generated tasks a container network, so both shapes round-trip.
    fn port_hint(name: &str) -> bool {
        name.len() % 2 == 1
    }

    fn err_of<D, P>(value: P) -> String
    where
        D: TryFrom<P, Error = ConvertError> + std::fmt::Debug,
    {
        D::try_from(value).unwrap_err().to_string()
    }

    // ----- malformed input --------------------------------------------------------------------

    #[test]
    fn missing_scalar_names_the_nested_path() {
        let mut info = task_info();
        info.resources[2] = pb::Resource { name: "disk".into(), ..Default::default() };
        let err = convert_each::<_, TaskInfo>(vec![task_info(), info], "task_infos").unwrap_err();
        assert_eq!(err.to_string(), "task_infos[1].resources[2].scalar: missing");
        assert_eq!(err.field(), "task_infos[1].resources[2].scalar");
    }

    #[test]
    fn empty_framework_name_is_refused() {
        let info = pb::FrameworkInfo { user: Some("root".into()), ..Default::default() };
        let err = convert::<_, FrameworkInfo>(info, "framework_info").unwrap_err();
        assert_eq!(err.to_string(), "framework_info.name: empty");
    }

    #[test]
    fn ids_must_be_present_and_non_empty() {
        let mut info = task_info();
        info.task_id = None;
        assert_eq!(err_of::<TaskInfo, _>(info), "task_id: missing");
        let mut info = task_info();
        info.agent_id = Some(pb::AgentId { value: String::new() });
        assert_eq!(err_of::<TaskInfo, _>(info), "agent_id.value: empty");
        let mut info = task_info();
        info.command = None;
        assert_eq!(err_of::<TaskInfo, _>(info), "command: missing");
    }

    #[test]
    fn bad_scalars_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let err = Resources::try_from(vec![scalar("cpus", 1.0), scalar("mem", bad)]).unwrap_err();
            assert_eq!(err.field(), "[1].scalar.value", "{bad}");
            assert!(matches!(err, ConvertError::OutOfRange { .. }), "{err}");
        }
    }

    #[test]
    fn resource_types_must_match_their_values() {
        let inverted = ranges("ports", &[(10, 20), (30, 25)]);
        assert_eq!(
            Resources::try_from(vec![inverted]).unwrap_err().to_string(),
            "[0].ranges.range[1]: range 30-25 ends before it begins"
        );

        let mut both = scalar("cpus", 1.0);
        both.ranges = Some(ranges_to_pb(&[(1, 2)]));
        assert_eq!(Resources::try_from(vec![both]).unwrap_err().to_string(), "[0].ranges: set, but the type is SCALAR");

        let mut no_ranges = ranges("ports", &[]);
        no_ranges.ranges = None;
        assert_eq!(Resources::try_from(vec![no_ranges]).unwrap_err().to_string(), "[0].ranges: missing");

        let set = pb::Resource {
            name: "disks".into(),
            r#type: Some(ValueType::Set as i32),
            set: Some(pb::value::Set { item: vec!["a".into()] }),
            ..Default::default()
        };
        assert_eq!(Resources::try_from(vec![set]).unwrap_err().to_string(), "[0].type: SET is not supported");

        let unknown = pb::Resource { r#type: Some(42), ..scalar("cpus", 1.0) };
        assert_eq!(Resources::try_from(vec![unknown]).unwrap_err().to_string(), "[0].type: unknown enum value 42");

        let nameless = scalar("", 1.0);
        assert_eq!(Resources::try_from(vec![nameless]).unwrap_err().to_string(), "[0].name: empty");
    }

    #[test]
    fn same_name_resources_sum_and_kind_mismatch_is_refused() {
        let wire = vec![
            scalar("cpus", 0.5),
            ranges("ports", &[(1, 5)]),
            scalar("cpus", 0.25),
            ranges("ports", &[(6, 9), (20, 20)]),
        ];
        let resources = Resources::try_from(wire).unwrap();
        assert_eq!(resources.to_string(), "cpus:0.75;ports:[1-9,20-20]");

        // A zero amount is dropped from the domain, but its kind still counts.
        let err = Resources::try_from(vec![scalar("gpus", 0.0), ranges("gpus", &[(1, 2)])]).unwrap_err();
        assert_eq!(err.to_string(), "[1]: resource `gpus` appears earlier with another type");
    }

    #[test]
    fn task_status_fields_are_validated() {
        let mut s = status();
        s.state = Some(99);
        assert_eq!(err_of::<TaskStatus, _>(s), "state: unknown enum value 99");

        let mut s = status();
        s.reason = Some(1234);
        assert_eq!(err_of::<TaskStatus, _>(s), "reason: unknown enum value 1234");

        let mut s = status();
        s.uuid = vec![1, 2, 3, 4, 5];
        assert_eq!(err_of::<TaskStatus, _>(s), "uuid: expected 16 bytes, got 5");

        let mut s = status();
        s.timestamp = -1.0;
        assert!(err_of::<TaskStatus, _>(s).starts_with("timestamp: -1 is not"));

        let mut s = status();
        s.container_status = Some(pb::ContainerStatus {
            network_infos: vec![
                pb::NetworkInfo {
                    ip_addresses: vec![pb::IpAddress { ip_address: "10.1.0.2".into() }],
                    name: "a".into(),
                    port_mappings: Vec::new(),
                },
                pb::NetworkInfo {
                    ip_addresses: vec![
                        pb::IpAddress { ip_address: "fd00::2".into() },
                        pb::IpAddress { ip_address: "10.1.0.999".into() },
                    ],
                    name: "b".into(),
                    port_mappings: Vec::new(),
                },
            ],
            executor_pid: 0,
        });
        assert_eq!(
            err_of::<TaskStatus, _>(s),
            "container_status.network_infos[1].ip_addresses[1].ip_address: `10.1.0.999` is not an IP address"
        );
    }

    #[test]
    fn task_status_reads_mesos_defaults() {
        let mut s = status();
        s.reason = None;
        s.container_status = Some(pb::ContainerStatus {
            network_infos: vec![
                pb::NetworkInfo {
                    ip_addresses: vec![pb::IpAddress { ip_address: "10.1.0.2".into() }],
                    name: "a".into(),
                    port_mappings: Vec::new(),
                },
                pb::NetworkInfo {
                    ip_addresses: vec![
                        pb::IpAddress { ip_address: String::new() },
                        pb::IpAddress { ip_address: "fd00::2".into() },
                    ],
                    name: "b".into(),
                    port_mappings: Vec::new(),
                },
            ],
            executor_pid: 0,
        });
        let status = TaskStatus::try_from(s).unwrap();
        assert_eq!(status.reason, None);
        let mut zero = self::status();
        // Zero is a reason in Mesos's numbering, not "no reason".
        zero.reason = Some(0);
        assert_eq!(TaskStatus::try_from(zero).unwrap().reason, Some(Reason::CommandExecutorFailed));
        assert_eq!(status.message, None);
        assert_eq!(status.agent_id, None);
        assert_eq!(status.uuid, None);
        assert_eq!(status.executor_pid, None);
        assert_eq!(status.timestamp, Time(1500));
        assert_eq!(status.ip_addresses, vec!["10.1.0.2".parse::<IpAddr>().unwrap(), "fd00::2".parse().unwrap()]);
    }

    #[test]
    fn command_defaults_to_shell_and_kill_policy_is_checked() {
        let info = TaskInfo::try_from(task_info()).unwrap();
        assert!(info.command.shell);
        assert_eq!(info.command.user, None);
        assert_eq!(info.kill_grace_period_secs, None);

        let mut wire = task_info();
        wire.kill_policy =
            Some(pb::KillPolicy { grace_period: Some(pb::DurationInfo { nanoseconds: Some(2_500_000_000) }) });
        assert_eq!(TaskInfo::try_from(wire).unwrap().kill_grace_period_secs, Some(2.5));

        let mut wire = task_info();
        wire.kill_policy = Some(pb::KillPolicy { grace_period: Some(pb::DurationInfo { nanoseconds: Some(-1) }) });
        assert_eq!(err_of::<TaskInfo, _>(wire), "kill_policy.grace_period.nanoseconds: -1 is not a duration >= 0");
    }

    #[test]
    fn discovery_is_validated() {
        let mut wire = task_info();
        wire.discovery = Some(pb::DiscoveryInfo { visibility: Some(7), ..Default::default() });
        assert_eq!(err_of::<TaskInfo, _>(wire), "discovery.visibility: unknown enum value 7");

        let mut wire = task_info();
        wire.discovery = Some(pb::DiscoveryInfo {
            visibility: Some(Visibility::Cluster as i32),
            ports: Some(pb::Ports {
                ports: vec![
                    pb::Port { number: Some(80), ..Default::default() },
                    pb::Port { number: Some(70_000), ..Default::default() },
                ],
            }),
            ..Default::default()
        });
        assert_eq!(
            err_of::<TaskInfo, _>(wire),
            "discovery.ports.ports[1].number: 70000 is not a port number (at most 65535)"
        );
    }

    #[test]
    fn framework_role_and_capabilities() {
        let info = pb::FrameworkInfo {
            name: "marathon".into(),
            roles: vec!["web".into(), "batch".into()],
            capabilities: vec![
                pb::framework_info::Capability { r#type: PbCapability::Unknown as i32 },
                pb::framework_info::Capability { r#type: PbCapability::PartitionAware as i32 },
            ],
            ..Default::default()
        };
        let domain = FrameworkInfo::try_from(info.clone()).unwrap();
        assert_eq!(domain.role, "web");
        assert_eq!(domain.capabilities, vec![Capability::PartitionAware]);

        let plain = pb::FrameworkInfo { name: "x".into(), ..Default::default() };
        assert_eq!(FrameworkInfo::try_from(plain).unwrap().role, "*");

        let explicit = pb::FrameworkInfo { role: "ops".into(), ..info.clone() };
        assert_eq!(FrameworkInfo::try_from(explicit).unwrap().role, "ops");

        let mut bad = info.clone();
        bad.capabilities.push(pb::framework_info::Capability { r#type: 77 });
        assert_eq!(err_of::<FrameworkInfo, _>(bad), "capabilities[2].type: unknown enum value 77");

        let negative = pb::FrameworkInfo { failover_timeout: -3.0, ..info };
        assert_eq!(err_of::<FrameworkInfo, _>(negative), "failover_timeout: -3 is not a finite number >= 0");
    }

    #[test]
    fn multi_role_frameworks_use_roles_on_the_wire() {
        let mut info = FrameworkInfo::named("spark");
        info.role = "batch".into();
        info.capabilities.push(Capability::MultiRole);
        let wire = pb::FrameworkInfo::from(&info);
        assert_eq!((wire.role.as_str(), wire.roles.as_slice()), ("", &["batch".to_owned()][..]));
        assert_eq!(FrameworkInfo::try_from(wire).unwrap(), info);
    }

    #[test]
    fn agent_address_and_attributes() {
        let mut wire = operator::Agent::from(&agent());
        assert_eq!(wire.info.as_ref().unwrap().address, "10.0.0.1:5051");
        assert_eq!(wire.info.as_ref().unwrap().port, 5051);

        let info = wire.info.as_mut().unwrap();
        info.address = "10.0.0.2".into();
        assert_eq!(Agent::try_from(wire.clone()).unwrap().address, "10.0.0.2:5051".parse().unwrap());

        let info = wire.info.as_mut().unwrap();
        info.address = "node1:5051".into();
        assert_eq!(err_of::<Agent, _>(wire.clone()), "info.address: `node1:5051` is not an ip:port address");

        let info = wire.info.as_mut().unwrap();
        info.address = "10.0.0.2".into();
        info.port = 0;
        assert_eq!(err_of::<Agent, _>(wire.clone()), "info.port: 0 is not a port number in 1..=65535");

        let mut no_id = operator::Agent::from(&agent());
        no_id.info.as_mut().unwrap().id = None;
        assert_eq!(err_of::<Agent, _>(no_id), "info.id: missing");

        let mut dup = operator::Agent::from(&agent());
        let attrs = &mut dup.info.as_mut().unwrap().attributes;
        attrs.push(attrs[0].clone());
        assert_eq!(err_of::<Agent, _>(dup), "info.attributes[2].name: `level` given twice");

        let mut set = operator::Agent::from(&agent());
        set.info.as_mut().unwrap().attributes[1].r#type = Some(ValueType::Set as i32);
        assert_eq!(err_of::<Agent, _>(set), "info.attributes[1].type: SET is not supported");

        let mut state = operator::Agent::from(&agent());
        state.state = 9;
        assert_eq!(err_of::<Agent, _>(state), "state: unknown enum value 9");
    }

    #[test]
    fn task_fields_are_derived_and_checked() {
        let wire = operator::Task {
            info: Some(task_info()),
            framework_id: Some(pb::FrameworkId { value: "f1".into() }),
            status: Some(pb::TaskStatus {
                healthy: Some(true),
                container_status: Some(pb::ContainerStatus {
                    network_infos: vec![pb::NetworkInfo {
                        ip_addresses: vec![pb::IpAddress { ip_address: "10.1.0.2".into() }],
                        name: String::new(),
                        port_mappings: Vec::new(),
                    }],
                    executor_pid: 42,
                }),
                ..status()
            }),
            executor_id: Some(pb::ExecutorId { value: "pod".into() }),
        };
        let task = Task::try_from(wire.clone()).unwrap();
        assert_eq!(task.executor_id, Some(ExecutorId::new("pod")));
        assert_eq!(operator::Task::from(&task).executor_id, wire.executor_id);
        assert_eq!(task.ports, vec![31000, 31001]);
        assert_eq!(task.state, TaskState::Running);
        assert_eq!(task.healthy, Some(true));
        assert_eq!(task.ip_addresses, vec!["10.1.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(task.status.executor_pid, Some(42));

        let mut no_status = wire.clone();
        no_status.status = None;
        assert_eq!(err_of::<Task, _>(no_status), "status: missing");

        let mut other = wire.clone();
        other.status.as_mut().unwrap().task_id = Some(pb::TaskId { value: "web-2".into() });
        assert_eq!(err_of::<Task, _>(other), "status.task_id.value: `web-2` does not match `web-1`");

        let mut huge = wire;
        huge.info.as_mut().unwrap().resources[2] = ranges("ports", &[(1, 2), (0, u64::MAX)]);
        assert_eq!(
            err_of::<Task, _>(huge),
            format!("info.resources[2].ranges.range[1].end: {} is not a port number (at most 65535)", u64::MAX)
        );
    }

    #[test]
    fn task_keeps_health_and_addresses_from_earlier_statuses() {
        let info = TaskInfo::try_from(task_info()).unwrap();
        let mut task = Task::launched(FrameworkId::new("f1"), info, Time(1));
        let mut running = TaskStatus::new(TaskId::new("web-1"), TaskState::Running, Source::Executor, Time(2));
        running.ip_addresses = vec!["10.1.0.2".parse().unwrap()];
        running.healthy = Some(true);
        task.set_status(running);
        task.set_status(TaskStatus::new(TaskId::new("web-1"), TaskState::Killing, Source::Agent, Time(3)));

        let back = Task::try_from(operator::Task::from(&task)).unwrap();
        assert_eq!(back.state, TaskState::Killing);
        assert_eq!(back.healthy, Some(true));
        assert_eq!(back.ip_addresses, task.ip_addresses);
    }

    #[test]
    fn events_and_stream_messages_name_their_variant() {
        let empty = operator::Event { index: 1, timestamp: 0.0, kind: None };
        assert_eq!(err_of::<Event, _>(empty), "kind: missing");

        let removed = operator::Event {
            index: 1,
            timestamp: 0.0,
            kind: Some(operator::event::Kind::AgentRemoved(operator::event::AgentRemoved { agent_id: None })),
        };
        assert_eq!(err_of::<Event, _>(removed), "agent_removed.agent_id: missing");

        let mut added = operator::Agent::from(&agent());
        added.info.as_mut().unwrap().hostname.clear();
        let snapshot = operator::StreamMessage {
            message: Some(operator::stream_message::Message::Snapshot(operator::State {
                index: 3,
                agents: vec![operator::Agent::from(&agent()), added],
                ..Default::default()
            })),
        };
        assert_eq!(err_of::<StreamMessage, _>(snapshot), "snapshot.agents[1].info.hostname: empty");

        assert_eq!(err_of::<StreamMessage, _>(operator::StreamMessage { message: None }), "message: missing");
    }

    #[test]
    fn uuid_must_be_sixteen_bytes() {
        let id = uuid::Uuid::from_bytes([7; 16]);
        assert_eq!(uuid_from_pb(id.as_bytes(), "uuid"), Ok(Some(id)));
        assert_eq!(uuid_from_pb(&[], "uuid"), Ok(None));
        assert_eq!(
            uuid_from_pb(&[0; 17], "acknowledge.uuid").unwrap_err().to_string(),
            "acknowledge.uuid: expected 16 bytes, got 17"
        );
    }
}
