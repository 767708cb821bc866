//! The VIP model: which services this node must serve, derived from the cluster state.
//!
//! - [`VipLabel`]: a `VIP_n` label value on a task's discovery port, `/web:80` (named) or
//!   `198.19.200.1:80` (fixed).
//! - [`VipName`]: a named VIP is per framework (`/web:80` on framework `marathon` is `web`, DNS
//!   `web.marathon.l4lb.thisdcos.directory`).
//! - [`VipAllocator`]: the master's authority over named VIP addresses (from the VIP pool,
//!   default `198.19.0.0/17`); its decisions travel in the event log, so every node reads the
//!   same address for a name.
//! - [`VipProjection`]: cluster state + events + assignments → [`Service`]s with weighted
//!   [`BackendSpec`]s, incrementally, returning the service keys each input changed.
//! - [`mesos`]: a Mesos master's operator API event stream → the same cluster state and
//!   events, for nodes that follow a Mesos master instead of an Atoll one; there, with no master
//!   to assign them, named VIPs get [`hashed_assignments`]: the same on every node.

mod allocator;
mod hashed;
mod label;
pub mod mesos;
mod projection;

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use allocator::{DEFAULT_VIP_POOL, VipAllocator, VipError};
pub use hashed::{HashedAssignments, hashed_assignments, hashed_names_of, sync_hashed_assignments};
pub use label::{LabelError, LabelProblem, PortVip, VipLabel, is_vip_label_key, parse_protocols, task_port_vips};
pub use projection::VipProjection;

use crate::ServiceKey;

/// A named VIP: a name within a framework (the same label on two frameworks is two VIPs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipName {
    /// The name (not the id) of the framework whose tasks carry the label, e.g. `marathon`.
    pub framework: String,
    /// The label's name without slashes around it, lowercase: `web` for `/web:80`, `shop/web`
    /// for `/shop/web:80`.
    pub name: String,
}

impl VipName {
    pub fn new(framework: impl Into<String>, name: impl Into<String>) -> VipName {
        VipName { framework: framework.into(), name: name.into() }
    }
}

/// `web.marathon`, as `/v1/vips` and `atoll vip list` show it (the DNS name is this with
/// slashes turned into dots, under `l4lb.thisdcos.directory`).
impl fmt::Display for VipName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.framework)
    }
}

/// A service the data plane serves: one VIP address, port and protocol, and its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    /// The named VIPs whose assignment is this key's address (sorted; usually one, none for a
    /// fixed VIP).
    pub names: Vec<VipName>,
    /// Sorted by address and port, one entry per address and port.
    pub backends: Vec<BackendSpec>,
}

impl Service {
    /// The VIP address, port and protocol in host types.
    pub fn parts(&self) -> (Ipv4Addr, u16, u8) {
        crate::key_parts(&self.key)
    }

    /// Backends taking new connections (weight above 0).
    pub fn active_backends(&self) -> usize {
        self.backends.iter().filter(|b| b.weight > 0).count()
    }

    /// Backends that are draining (weight 0).
    pub fn draining_backends(&self) -> usize {
        self.backends.len() - self.active_backends()
    }
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendSpec {
    pub address: Ipv4Addr,
    pub port: u16,
    /// Relative share of new connections; 0 = draining (existing connections only).
    pub weight: u32,
    /// The task id this backend is (the first in id order if two tasks share an address and
    /// port, which only a misconfiguration makes happen).
    pub task: String,
}
