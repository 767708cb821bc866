//! Cluster state → the services a node serves, as a projection of the event stream: `reset`
//! with a snapshot, then `apply` each event; every call returns the service keys whose
//! [`Service`] appeared, changed or disappeared, so the shell reprograms only those.
//!
//! Backends: a task with a `VIP_n` label on a discovery port is a backend of that VIP while it
//! lives. Its weight says whether it takes new connections:
//!
//! | task | weight |
//! |---|---|
//! | RUNNING, healthy (or without a health check) | 1 |
//! | RUNNING with a health check not yet reported | not a backend yet |
//! | RUNNING and unhealthy, KILLING, UNREACHABLE | 0 (draining: existing connections only) |
//! | STAGING, STARTING, UNKNOWN | not a backend |
//! | terminal, or gone from the state | removed |
//!
//! Its address: the task's own IPv4 address with the port number if it has one (a container
//! network: discovery port numbers are container ports), else its agent's address with the
//! port number (the host port). A container-network task whose address is not known yet is not
//! a backend yet. A discovery port with protocol `udp,tcp` is one service per protocol.
//!
//! Named VIPs get their address from the master's assignments (`VIP_ASSIGNED` events, the
//! snapshot's `vips`, or [`VipProjection::set_assignment`]); until then they produce no service,
//! and [`VipProjection::unassigned`] lists them for the shell to ask the master. A named VIP
//! is per framework, so a task of an unknown framework contributes only its fixed VIPs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use atoll_proto::model::{AgentId, ClusterState, Event, EventKind, FrameworkId, Task, TaskId, TaskState};

use super::{BackendSpec, LabelProblem, PortVip, Service, VipLabel, VipName, task_port_vips};
use crate::{OrdKey, ServiceKey, key_parts, service_key};

type TaskKey = (FrameworkId, TaskId);

/// Where a label sends traffic, before a named VIP's address is known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Named { name: VipName, port: u16, proto: u8 },
    Fixed { address: Ipv4Addr, port: u16, proto: u8 },
}

/// What the projection keeps of a live task with VIP labels.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TaskInput {
    agent_id: AgentId,
    /// `None`: not a backend (yet).
    weight: Option<u32>,
    own_ip: Option<Ipv4Addr>,
    /// On a container network (then only its own address reaches it).
    container: bool,
    vips: Vec<PortVip>,
}

/// Cluster state + VIP assignments → services, incrementally.
#[derive(Clone, Debug, Default)]
pub struct VipProjection {
    index: u64,
    /// Agents with a usable IPv4 address.
    agents: BTreeMap<AgentId, Ipv4Addr>,
    /// Framework names.
    frameworks: BTreeMap<FrameworkId, String>,
    /// Live tasks with at least one usable VIP label.
    tasks: BTreeMap<TaskKey, TaskInput>,
    assignments: BTreeMap<VipName, Ipv4Addr>,
    /// Each task's backends, by target (what to take back when the task changes).
    contributions: BTreeMap<TaskKey, Vec<(Target, BackendSpec)>>,
    /// Each target's backends, by task.
    targets: BTreeMap<Target, BTreeMap<TaskKey, Vec<BackendSpec>>>,
    /// Targets by the service key they resolve to.
    by_key: BTreeMap<OrdKey, BTreeSet<Target>>,
    /// Named targets by name (to move them when an assignment changes).
    by_name: BTreeMap<VipName, BTreeSet<Target>>,
    services: BTreeMap<OrdKey, Service>,
    problems: BTreeMap<TaskKey, Vec<LabelProblem>>,
    /// Problems not yet handed out by `take_new_problems`.
    new_problems: Vec<LabelProblem>,
}

impl VipProjection {
    pub fn new() -> VipProjection {
        VipProjection::default()
    }

    /// Starts over from a snapshot. Named VIP addresses are the snapshot's `vips` (IPv4 ones)
    /// overridden by `assignments`. Returns every key whose service differs from before.
    pub fn reset(&mut self, state: &ClusterState, assignments: &BTreeMap<VipName, Ipv4Addr>) -> Vec<ServiceKey> {
        let mut fresh = VipProjection { index: state.index, ..VipProjection::default() };
        for agent in &state.agents {
            if let Some(ip) = usable_ipv4(agent.address.ip()) {
                fresh.agents.insert(agent.id.clone(), ip);
            }
        }
        for framework in &state.frameworks {
            fresh.frameworks.insert(framework.id.clone(), framework.info.name.clone());
        }
        for vip in &state.vips {
            if let Some(address) = usable_ipv4(vip.address) {
                fresh.assignments.insert(VipName::new(vip.framework.clone(), vip.name.clone()), address);
            }
        }
        fresh.assignments.extend(assignments.iter().map(|(name, address)| (name.clone(), *address)));
        let mut affected = BTreeSet::new();
        for task in &state.tasks {
            fresh.put_task(task, &mut affected);
        }

        // Problems are handed out once: only those not seen before (or not yet taken) are new.
        let old_problems: Vec<&LabelProblem> = self.problems.values().flatten().collect();
        let pending = std::mem::take(&mut self.new_problems);
        fresh.new_problems = fresh
            .problems
            .values()
            .flatten()
            .filter(|p| !old_problems.contains(p) || pending.contains(p))
            .cloned()
            .collect();

        let old_services = std::mem::take(&mut self.services);
        *self = fresh;
        let keys: BTreeSet<OrdKey> = self.by_key.keys().copied().collect();
        for key in keys {
            self.recompute(key);
        }
        let mut changed: BTreeSet<OrdKey> = old_services.keys().copied().collect();
        changed.extend(self.services.keys().copied());
        changed
            .into_iter()
            .filter(|key| old_services.get(key) != self.services.get(key))
            .map(|(address, port, proto)| service_key(address, port, proto))
            .collect()
    }

    /// Folds in one event; returns the keys whose service changed.
    pub fn apply(&mut self, event: &Event) -> Vec<ServiceKey> {
        self.index = event.index;
        let mut affected = BTreeSet::new();
        match &event.kind {
            EventKind::AgentAdded { agent } | EventKind::AgentUpdated { agent } => {
                self.put_agent(&agent.id, usable_ipv4(agent.address.ip()), &mut affected)
            }
            EventKind::AgentRemoved { agent_id } => self.put_agent(agent_id, None, &mut affected),
            EventKind::FrameworkAdded { framework } | EventKind::FrameworkUpdated { framework } => {
                self.put_framework(&framework.id, Some(framework.info.name.clone()), &mut affected)
            }
            EventKind::FrameworkRemoved { framework_id } => self.put_framework(framework_id, None, &mut affected),
            EventKind::TaskAdded { task } | EventKind::TaskUpdated { task } => self.put_task(task, &mut affected),
            // IPv6 named VIPs come with the IPv6 programs; until then such an assignment is
            // ignored (the name stays unassigned here).
            EventKind::VipAssigned { vip } => {
                if let Some(address) = usable_ipv4(vip.address) {
                    let name = VipName::new(vip.framework.clone(), vip.name.clone());
                    self.move_assignment(name, Some(address), &mut affected)
                }
            }
            EventKind::VipReleased { vip } => {
                self.move_assignment(VipName::new(vip.framework.clone(), vip.name.clone()), None, &mut affected)
            }
            EventKind::AppUpdated { .. }
            | EventKind::AppRemoved { .. }
            | EventKind::DeploymentUpdated { .. }
            | EventKind::DeploymentFinished { .. }
            | EventKind::PoolAdded { .. }
            | EventKind::PoolUpdated { .. }
            | EventKind::PoolRemoved { .. } => {}
        }
        self.finish(affected)
    }

    /// Records a named VIP's address (from the master); returns the keys that changed.
    pub fn set_assignment(&mut self, name: VipName, address: Ipv4Addr) -> Vec<ServiceKey> {
        let mut affected = BTreeSet::new();
        self.move_assignment(name, Some(address), &mut affected);
        self.finish(affected)
    }

    /// Forgets a named VIP's address (released by the master); its services go away.
    pub fn remove_assignment(&mut self, name: &VipName) -> Vec<ServiceKey> {
        let mut affected = BTreeSet::new();
        self.move_assignment(name.clone(), None, &mut affected);
        self.finish(affected)
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(&key_parts(key))
    }

    /// Every service, ordered by address, port and protocol.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// The named VIP addresses known.
    pub fn assignments(&self) -> &BTreeMap<VipName, Ipv4Addr> {
        &self.assignments
    }

    /// Named VIPs that live tasks (of known frameworks) carry, whatever their state; sorted.
    /// Scans those tasks: call it once per batch of events, not per event.
    pub fn wanted_names(&self) -> BTreeSet<VipName> {
        let mut names = BTreeSet::new();
        for ((framework_id, _), input) in &self.tasks {
            let Some(framework) = self.frameworks.get(framework_id) else { continue };
            for vip in &input.vips {
                if let VipLabel::Named { name, .. } = &vip.label {
                    names.insert(VipName::new(framework.clone(), name.clone()));
                }
            }
        }
        names
    }

    /// [`VipProjection::wanted_names`] without an address yet: what to ask the master for.
    pub fn unassigned(&self) -> Vec<VipName> {
        self.wanted_names().into_iter().filter(|name| !self.assignments.contains_key(name)).collect()
    }

    /// Every label problem of the live tasks.
    pub fn problems(&self) -> impl Iterator<Item = &LabelProblem> {
        self.problems.values().flatten()
    }

    /// The problems that appeared since the last call (each handed out once, to be logged).
    pub fn take_new_problems(&mut self) -> Vec<LabelProblem> {
        std::mem::take(&mut self.new_problems)
    }

    /// The index of the last snapshot or event applied.
    pub fn index(&self) -> u64 {
        self.index
    }

    fn put_agent(&mut self, id: &AgentId, ip: Option<Ipv4Addr>, affected: &mut BTreeSet<OrdKey>) {
        // AgentUpdated comes with every change of the agent's used resources: only a new
        // address matters here.
        if self.agents.get(id).copied() == ip {
            return;
        }
        match ip {
            Some(ip) => self.agents.insert(id.clone(), ip),
            None => self.agents.remove(id),
        };
        let keys: Vec<TaskKey> = self.tasks.iter().filter(|(_, t)| &t.agent_id == id).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.refresh_task(&key, affected);
        }
    }

    fn put_framework(&mut self, id: &FrameworkId, name: Option<String>, affected: &mut BTreeSet<OrdKey>) {
        if self.frameworks.get(id) == name.as_ref() {
            return;
        }
        match name {
            Some(name) => self.frameworks.insert(id.clone(), name),
            None => self.frameworks.remove(id),
        };
        let keys: Vec<TaskKey> = self.tasks.keys().filter(|(f, _)| f == id).cloned().collect();
        for key in keys {
            self.refresh_task(&key, affected);
        }
    }

    fn put_task(&mut self, task: &Task, affected: &mut BTreeSet<OrdKey>) {
        let key = (task.framework_id.clone(), task.id.clone());
        let (input, problems) = if task.state.is_terminal() {
            (None, Vec::new())
        } else {
            let (vips, problems) = task_port_vips(task);
            let input = (!vips.is_empty()).then(|| TaskInput {
                agent_id: task.agent_id.clone(),
                weight: weight_of(task),
                own_ip: task.ip_addresses.iter().find_map(|ip| usable_ipv4(*ip)),
                container: !task.networks.is_empty(),
                vips,
            });
            (input, problems)
        };

        let old = self.problems.remove(&key).unwrap_or_default();
        self.new_problems.extend(problems.iter().filter(|p| !old.contains(p)).cloned());
        if !problems.is_empty() {
            self.problems.insert(key.clone(), problems);
        }

        match input {
            Some(input) => {
                if self.tasks.get(&key) == Some(&input) {
                    return;
                }
                self.tasks.insert(key.clone(), input);
            }
            None => {
                if self.tasks.remove(&key).is_none() {
                    return;
                }
            }
        }
        self.refresh_task(&key, affected);
    }

    /// Recomputes one task's backends and moves them between targets.
    fn refresh_task(&mut self, key: &TaskKey, affected: &mut BTreeSet<OrdKey>) {
        let new = self.contributions_of(key);
        let old = self.contributions.remove(key).unwrap_or_default();
        if old == new {
            if !new.is_empty() {
                self.contributions.insert(key.clone(), new);
            }
            return;
        }
        let old_targets: BTreeSet<&Target> = old.iter().map(|(target, _)| target).collect();
        for target in old_targets {
            self.detach(target, key, affected);
        }
        for (target, backend) in &new {
            self.attach(target, key, backend.clone(), affected);
        }
        if !new.is_empty() {
            self.contributions.insert(key.clone(), new);
        }
    }

    fn contributions_of(&self, key: &TaskKey) -> Vec<(Target, BackendSpec)> {
        let Some(input) = self.tasks.get(key) else { return Vec::new() };
        let Some(weight) = input.weight else { return Vec::new() };
        let address = match (input.own_ip, input.container) {
            (Some(ip), _) => ip,
            // A container task is reachable on its own address only, and it is not known yet.
            (None, true) => return Vec::new(),
            (None, false) => match self.agents.get(&input.agent_id) {
                Some(ip) => *ip,
                None => return Vec::new(),
            },
        };
        let framework = self.frameworks.get(&key.0);
        let mut out = Vec::new();
        for vip in &input.vips {
            for &proto in &vip.protocols {
                let target = match &vip.label {
                    VipLabel::Named { name, port } => match framework {
                        Some(framework) => {
                            Target::Named { name: VipName::new(framework.clone(), name.clone()), port: *port, proto }
                        }
                        None => continue,
                    },
                    VipLabel::Fixed { address, port } => Target::Fixed { address: *address, port: *port, proto },
                };
                out.push((target, BackendSpec { address, port: vip.port, weight, task: key.1.0.clone() }));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn attach(&mut self, target: &Target, key: &TaskKey, backend: BackendSpec, affected: &mut BTreeSet<OrdKey>) {
        if !self.targets.contains_key(target) {
            if let Target::Named { name, .. } = target {
                self.by_name.entry(name.clone()).or_default().insert(target.clone());
            }
            if let Some(resolved) = self.resolve(target) {
                self.by_key.entry(resolved).or_default().insert(target.clone());
            }
        }
        self.targets.entry(target.clone()).or_default().entry(key.clone()).or_default().push(backend);
        if let Some(resolved) = self.resolve(target) {
            affected.insert(resolved);
        }
    }

    fn detach(&mut self, target: &Target, key: &TaskKey, affected: &mut BTreeSet<OrdKey>) {
        let resolved = self.resolve(target);
        if let Some(resolved) = resolved {
            affected.insert(resolved);
        }
        let Some(tasks) = self.targets.get_mut(target) else { return };
        tasks.remove(key);
        if !tasks.is_empty() {
            return;
        }
        self.targets.remove(target);
        if let Target::Named { name, .. } = target {
            remove_from(&mut self.by_name, name, target);
        }
        if let Some(resolved) = resolved {
            remove_from(&mut self.by_key, &resolved, target);
        }
    }

    fn move_assignment(&mut self, name: VipName, address: Option<Ipv4Addr>, affected: &mut BTreeSet<OrdKey>) {
        let old = self.assignments.get(&name).copied();
        if old == address {
            return;
        }
        let targets: Vec<Target> = self.by_name.get(&name).into_iter().flatten().cloned().collect();
        for target in &targets {
            let Target::Named { port, proto, .. } = target else { continue };
            if let Some(old) = old {
                remove_from(&mut self.by_key, &(old, *port, *proto), target);
                affected.insert((old, *port, *proto));
            }
            if let Some(new) = address {
                self.by_key.entry((new, *port, *proto)).or_default().insert(target.clone());
                affected.insert((new, *port, *proto));
            }
        }
        match address {
            Some(address) => self.assignments.insert(name, address),
            None => self.assignments.remove(&name),
        };
    }

    fn resolve(&self, target: &Target) -> Option<OrdKey> {
        match target {
            Target::Fixed { address, port, proto } => Some((*address, *port, *proto)),
            Target::Named { name, port, proto } => self.assignments.get(name).map(|address| (*address, *port, *proto)),
        }
    }

    fn finish(&mut self, affected: BTreeSet<OrdKey>) -> Vec<ServiceKey> {
        affected
            .into_iter()
            .filter(|key| self.recompute(*key))
            .map(|(address, port, proto)| service_key(address, port, proto))
            .collect()
    }

    /// Rebuilds the service of `key` from its targets; returns whether it changed.
    fn recompute(&mut self, key: OrdKey) -> bool {
        let mut names = BTreeSet::new();
        // One backend per address and port: if two tasks claim the same one (a
        // misconfiguration), the larger weight wins, then the smaller task id, so the result
        // does not depend on event order.
        let mut backends: BTreeMap<(Ipv4Addr, u16), BackendSpec> = BTreeMap::new();
        for target in self.by_key.get(&key).into_iter().flatten() {
            if let Target::Named { name, .. } = target {
                names.insert(name.clone());
            }
            for backend in self.targets.get(target).into_iter().flat_map(|tasks| tasks.values()).flatten() {
                let slot = backends.entry((backend.address, backend.port)).or_insert_with(|| backend.clone());
                if (backend.weight, std::cmp::Reverse(&backend.task)) > (slot.weight, std::cmp::Reverse(&slot.task)) {
                    *slot = backend.clone();
                }
            }
        }
        if backends.is_empty() {
            return self.services.remove(&key).is_some();
        }
        let service = Service {
            key: service_key(key.0, key.1, key.2),
            names: names.into_iter().collect(),
            backends: backends.into_values().collect(),
        };
        if self.services.get(&key) == Some(&service) {
            return false;
        }
        self.services.insert(key, service);
        true
    }
}

fn remove_from<K: Ord, T: Ord>(index: &mut BTreeMap<K, BTreeSet<T>>, key: &K, item: &T) {
    if let Some(set) = index.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// A task's weight as a backend, `None` when it is not one (see the module docs).
fn weight_of(task: &Task) -> Option<u32> {
    match task.state {
        TaskState::Running => match (task.healthy, task.health_check.is_some()) {
            (Some(true), _) | (None, false) => Some(1),
            (Some(false), _) => Some(0),
            // Checked, but no verdict yet: traffic waits for the first healthy one.
            (None, true) => None,
        },
        TaskState::Killing | TaskState::Unreachable => Some(0),
        _ => None,
    }
}

/// An IPv4 address traffic can be sent to (IPv4-mapped IPv6 counts; unspecified does not).
fn usable_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let ip = match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped()?,
    };
    (!ip.is_unspecified()).then_some(ip)
}
