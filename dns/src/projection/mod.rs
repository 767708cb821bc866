//! The record projection: cluster state in, DNS records out, Mesos-DNS naming. Pure: no I/O,
//! no clock, no randomness; the DNS server shell applies the [`Change`]s it returns.
//!
//! Inputs are normalized first ([`model`]: from Atoll's snapshot and events, or from a Mesos
//! `/master/state` in [`mesos`]); the [`generator`] turns each *producer* (a task, an agent, a
//! framework, the masters, the DNS server itself) into its records; the projection keeps every
//! producer's contribution and a count of producers per record, so a record two tasks produce
//! (two tasks named alike on one agent) stays until both are gone, and each call returns
//! exactly the records that appeared or disappeared.
//!
//! Zones: everything today is under the Mesos domain ([`DnsConfig::domain`], `mesos`). VIP
//! names (a later issue) go in a second zone, `l4lb.thisdcos.directory`: they plug in as one
//! more producer kind (`Producer::Vip`, fed by the VIP events) whose records are named under
//! that zone, and as one more entry of [`Projection::zones`]; the record set, the counting and
//! the change stream need nothing new.

pub mod generator;
pub mod hash;
pub mod labels;
pub mod mesos;
pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use atoll_proto::model::{ClusterState, Event, EventKind, TaskState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::records::{Change, Name, Record, RecordData, RecordSet};

pub use labels::LabelSpec;
pub use mesos::MesosStateError;
use model::{Model, TaskKey};

/// Why the projection refused an input (its records are then unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    MesosState(#[from] MesosStateError),
}

/// Where a task's own address comes from (Mesos-DNS `IPSources`); the first source in the
/// configured order that has an address wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// Container network addresses from the task status (Atoll: the task's own IPs).
    NetInfo,
    /// The Docker containerizer's `Docker.NetworkSettings.IPAddress` status label.
    Docker,
    /// The Mesos containerizer's `MesosContainerizer.NetworkSettings.IPAddress` status label.
    Mesos,
    /// The agent's address.
    Host,
}

/// How names are made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// The zone of task, agent and master names (Mesos-DNS `Domain`), without a trailing dot.
    pub domain: String,
    /// Label sanitising for task and framework names.
    pub label_spec: LabelSpec,
    /// Task IP sources in priority order; Mesos-DNS's default is netinfo, mesos, host.
    pub ip_sources: Vec<IpSource>,
    /// The DNS server's own name (SOA MNAME, NS target): one label such as `ns1` is taken
    /// under `domain`; a name with dots (`ns1.mesos`, `mesos-dns.mesos.`) as it is.
    pub soa_mname: String,
    /// The addresses this DNS server answers on, published under its own name.
    pub dns_ips: Vec<IpAddr>,
    /// Publish only RUNNING tasks that are healthy or have no health check; `false` publishes
    /// every RUNNING task, as Mesos-DNS does.
    pub health_aware: bool,
    /// The zone of named VIPs (DC/OS's `l4lb.thisdcos.directory`), without a trailing dot.
    pub vip_domain: String,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            domain: "mesos".into(),
            label_spec: LabelSpec::Rfc1123,
            ip_sources: vec![IpSource::NetInfo, IpSource::Mesos, IpSource::Host],
            soa_mname: "ns1".into(),
            dns_ips: Vec::new(),
            health_aware: true,
            vip_domain: DEFAULT_VIP_DOMAIN.into(),
        }
    }
}

/// DC/OS's zone of named VIPs.
pub const DEFAULT_VIP_DOMAIN: &str = "l4lb.thisdcos.directory";

impl DnsConfig {
    /// The DNS server's own fully qualified name (see [`DnsConfig::soa_mname`]).
    pub fn ns_name(&self) -> Name {
        let mname = self.soa_mname.trim_end_matches('.');
        if mname.contains('.') { Name::new(mname) } else { Name::new(&format!("{mname}.{}", self.domain)) }
    }

    /// Lowercase, no surrounding dots: the form names are built from.
    fn normalized(mut self) -> DnsConfig {
        self.domain = self.domain.trim_matches('.').to_ascii_lowercase();
        self
    }
}

/// The Mesos masters, for `leader.`, `master.`, `masterN.` and `_leader._tcp|_udp.`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Masters {
    /// The leading master; without one there are no master names at all (as in Mesos-DNS).
    pub leader: Option<SocketAddr>,
    /// The configured masters, in the order `masterN` numbers them.
    pub masters: Vec<SocketAddr>,
}

/// What contributes records; each one's records are recomputed on its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Producer {
    /// The DNS server's own name.
    Server,
    Masters,
    Agent(String),
    Framework(String),
    Task(TaskKey),
    /// A named VIP (framework, name) in the VIP zone.
    Vip(String, String),
}

/// Records touched during one call, with whether each was served before it.
type Touched = BTreeMap<Record, bool>;

/// Cluster state → DNS records, incrementally.
#[derive(Clone, Debug)]
pub struct Projection {
    config: DnsConfig,
    masters: Masters,
    model: Model,
    contributions: BTreeMap<Producer, Vec<Record>>,
    /// Named VIPs and their addresses (framework, name).
    vips: BTreeMap<(String, String), IpAddr>,
    /// How many producers produce each served record.
    counts: HashMap<Record, u32>,
    records: RecordSet,
    serial: u32,
    /// The server's own name is published with the first changes, so that every record served
    /// has been handed out as a change.
    started: bool,
}

impl Projection {
    pub fn new(config: DnsConfig) -> Projection {
        Projection {
            config: config.normalized(),
            masters: Masters::default(),
            model: Model::new(),
            contributions: BTreeMap::new(),
            vips: BTreeMap::new(),
            counts: HashMap::new(),
            records: RecordSet::new(),
            serial: 0,
            started: false,
        }
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    pub fn masters(&self) -> &Masters {
        &self.masters
    }

    /// The zones the records are in (the server is authoritative for these and forwards the
    /// rest). VIPs will add `l4lb.thisdcos.directory.`.
    pub fn zones(&self) -> Vec<Name> {
        vec![Name::new(&self.config.domain), Name::new(&self.config.vip_domain)]
    }

    /// `<vip>.<framework>.<vip domain>` and `<vip>.<vip domain>` → the VIP's address, as DC/OS
    /// names them: `/abc:80` on `marathon` is `abc.marathon.l4lb.thisdcos.directory`; slashes
    /// of nested names are dropped (`/shop/web` → `shopweb`).
    fn vip_records(&self, framework: &str, name: &str, address: IpAddr) -> Vec<Record> {
        let spec = self.config.label_spec;
        let label = spec.label(&name.replace('/', ""));
        let framework = spec.domain_frag(framework);
        if label.is_empty() || framework.is_empty() {
            return Vec::new();
        }
        let data = match address {
            IpAddr::V4(v4) => RecordData::A(v4),
            IpAddr::V6(v6) => RecordData::Aaaa(v6),
        };
        let zone = &self.config.vip_domain;
        [format!("{label}.{framework}.{zone}"), format!("{label}.{zone}")]
            .into_iter()
            .map(|n| Record { name: Name::new(&n), data: data.clone() })
            .collect()
    }

    fn put_vip(&mut self, framework: &str, name: &str, address: Option<IpAddr>, touched: &mut Touched) {
        let key = (framework.to_owned(), name.to_owned());
        let records = match address {
            Some(address) => {
                self.vips.insert(key, address);
                self.vip_records(framework, name, address)
            }
            None => {
                self.vips.remove(&key);
                Vec::new()
            }
        };
        self.update(Producer::Vip(framework.to_owned(), name.to_owned()), records, touched);
    }

    /// The DNS server's own name: SOA MNAME and NS target.
    pub fn ns_name(&self) -> Name {
        self.config.ns_name()
    }

    pub fn set_masters(&mut self, masters: Masters) -> Vec<Change> {
        let mut touched = self.begin();
        self.masters = masters;
        self.refresh_masters(&mut touched);
        self.finish(touched)
    }

    /// Changes the addresses published under the server's own name (e.g. once the container
    /// bridge gateway exists).
    pub fn set_dns_ips(&mut self, ips: Vec<IpAddr>) -> Vec<Change> {
        let mut touched = self.begin();
        self.config.dns_ips = ips;
        let records = generator::server_records(&self.config);
        self.update(Producer::Server, records, &mut touched);
        self.finish(touched)
    }

    /// Atoll input: the master's snapshot. Returns the changes from the previous records.
    pub fn reset(&mut self, state: &ClusterState) -> Vec<Change> {
        self.serial = serial_of(state.index);
        self.vips = state.vips.iter().map(|v| ((v.framework.clone(), v.name.clone()), v.address)).collect();
        self.rebuild(Model::from_cluster_state(state))
    }

    /// Atoll input: one event after the snapshot. Returns the changes it caused.
    pub fn apply(&mut self, event: &Event) -> Vec<Change> {
        let mut touched = self.begin();
        self.serial = serial_of(event.index);
        match &event.kind {
            EventKind::AgentAdded { agent } | EventKind::AgentUpdated { agent } => {
                self.put_agent(agent.id.as_str(), model::agent_input(agent), &mut touched)
            }
            EventKind::AgentRemoved { agent_id } => self.put_agent(agent_id.as_str(), None, &mut touched),
            EventKind::FrameworkAdded { framework } | EventKind::FrameworkUpdated { framework } => {
                self.put_framework(framework.id.as_str(), Some(model::framework_input(framework)), &mut touched)
            }
            EventKind::FrameworkRemoved { framework_id } => {
                self.put_framework(framework_id.as_str(), None, &mut touched)
            }
            EventKind::TaskAdded { task } | EventKind::TaskUpdated { task } => {
                let (key, input) = model::task_input(task);
                if self.model.put_task(key.clone(), Some(input)) {
                    self.refresh_task(&key, &mut touched);
                }
            }
            EventKind::AppUpdated { .. }
            | EventKind::AppRemoved { .. }
            | EventKind::DeploymentUpdated { .. }
            | EventKind::DeploymentFinished { .. }
            | EventKind::PoolAdded { .. }
            | EventKind::PoolUpdated { .. }
            | EventKind::PoolRemoved { .. } => {}
            EventKind::VipAssigned { vip } => self.put_vip(&vip.framework, &vip.name, Some(vip.address), &mut touched),
            EventKind::VipReleased { vip } => self.put_vip(&vip.framework, &vip.name, None, &mut touched),
        }
        self.finish(touched)
    }

    /// Mesos input: the named VIPs and their addresses (from the load balancers' hashing: no
    /// master assigns them on Mesos), keyed by framework name and VIP name. They are published
    /// with the next [`Projection::reset_from_mesos_state`].
    pub fn set_named_vips(&mut self, vips: BTreeMap<(String, String), IpAddr>) {
        self.vips = vips;
    }

    /// Mesos input: a whole `/master/state`, host names in PIDs left unresolved. Its `leader`
    /// replaces [`Masters::leader`]; the configured masters stay.
    pub fn reset_from_mesos_state(&mut self, state: &Value) -> Result<Vec<Change>, ProjectionError> {
        self.reset_from_mesos_state_resolving(state, &|_| Vec::new())
    }

    /// [`Projection::reset_from_mesos_state`], with the host names in PIDs (see
    /// [`mesos::hostnames`]) resolved by `resolve`.
    pub fn reset_from_mesos_state_resolving(
        &mut self,
        state: &Value,
        resolve: &dyn Fn(&str) -> Vec<IpAddr>,
    ) -> Result<Vec<Change>, ProjectionError> {
        let parsed = mesos::parse(state, resolve)?;
        self.masters.leader = parsed.leader;
        // Mesos has no event index; Mesos-DNS's serial is its own (a time), which a pure
        // projection does not have.
        self.serial = 0;
        Ok(self.rebuild(parsed.model))
    }

    pub fn records(&self) -> &RecordSet {
        &self.records
    }

    /// SOA serial: the index of the last event applied (0 for Mesos input). Indexes past
    /// `u32::MAX` wrap, which is how serial arithmetic (RFC 1982) reads them.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Mesos-DNS `/v1/enumerate`: each framework (in the master's order, raw name) with its
    /// published tasks and the records each produces, in generation order. One difference: a
    /// record two tasks produce is listed under both (Mesos-DNS lists it under the first only,
    /// an artefact of its global de-duplication that would make the listing depend on history).
    pub fn enumerate(&self) -> Value {
        let mut frameworks: Vec<_> = self.model.frameworks.iter().collect();
        frameworks.sort_by_key(|(_, entry)| entry.seq);
        let frameworks: Vec<Value> = frameworks
            .into_iter()
            .map(|(id, entry)| {
                let mut tasks: Vec<(u64, &TaskKey)> = self
                    .model
                    .tasks_of_framework(id)
                    .filter(|key| self.publishes(key))
                    .map(|key| (self.model.tasks[key].seq, key))
                    .collect();
                tasks.sort();
                let tasks: Vec<Value> = tasks
                    .into_iter()
                    .map(|(_, key)| {
                        let task = &self.model.tasks[key].value;
                        let records = self.contributions.get(&Producer::Task(key.clone())).into_iter().flatten();
                        let records: Vec<Value> = records.map(enumerated).collect();
                        json!({"name": task.name, "id": task.id, "records": records})
                    })
                    .collect();
                json!({"name": entry.value.name, "tasks": tasks})
            })
            .collect();
        json!({ "frameworks": frameworks })
    }

    fn put_agent(&mut self, id: &str, agent: Option<model::AgentInput>, touched: &mut Touched) {
        if !self.model.put_agent(id, agent) {
            return;
        }
        let records =
            self.model.agent(id).map(|agent| generator::agent_records(&self.config, agent)).unwrap_or_default();
        self.update(Producer::Agent(id.to_owned()), records, touched);
        let tasks: Vec<TaskKey> = self.model.tasks_on_agent(id).cloned().collect();
        for key in &tasks {
            self.refresh_task(key, touched);
        }
    }

    fn put_framework(&mut self, id: &str, framework: Option<model::FrameworkInput>, touched: &mut Touched) {
        if !self.model.put_framework(id, framework) {
            return;
        }
        self.refresh_framework(id, touched);
        let tasks: Vec<TaskKey> = self.model.tasks_of_framework(id).cloned().collect();
        for key in &tasks {
            self.refresh_task(key, touched);
        }
    }

    fn refresh_framework(&mut self, id: &str, touched: &mut Touched) {
        let records = self
            .model
            .framework(id)
            .map(|framework| generator::framework_records(&self.config, framework, self.masters.leader))
            .unwrap_or_default();
        self.update(Producer::Framework(id.to_owned()), records, touched);
    }

    fn refresh_masters(&mut self, touched: &mut Touched) {
        let records = generator::master_records(&self.config, &self.masters);
        self.update(Producer::Masters, records, touched);
        // Hosted frameworks live where the leader is.
        let hosted: Vec<String> = self
            .model
            .frameworks
            .iter()
            .filter(|(_, entry)| entry.value.host == model::FrameworkHost::Leader)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &hosted {
            self.refresh_framework(id, touched);
        }
    }

    fn refresh_task(&mut self, key: &TaskKey, touched: &mut Touched) {
        let records = self.task_records(key);
        self.update(Producer::Task(key.clone()), records, touched);
    }

    /// Whether a task is published: RUNNING (KILLING and every other state are not: a task
    /// being killed must stop receiving traffic at once), on a known agent, of a known
    /// framework, and (health-aware) healthy or unchecked.
    fn publishes(&self, key: &TaskKey) -> bool {
        let Some(task) = self.model.task(key) else { return false };
        task.state == TaskState::Running
            && self.model.agent(&task.agent_id).is_some()
            && self.model.framework(&key.framework_id).is_some()
            && (!self.config.health_aware || task.is_healthy_enough())
    }

    fn task_records(&self, key: &TaskKey) -> Vec<Record> {
        if !self.publishes(key) {
            return Vec::new();
        }
        let (Some(task), Some(framework)) = (self.model.task(key), self.model.framework(&key.framework_id)) else {
            return Vec::new();
        };
        let agent_ips = self.model.agent(&task.agent_id).map(|agent| agent.ips.as_slice()).unwrap_or_default();
        generator::task_records(&self.config, task, &framework.name, agent_ips)
    }

    /// Replaces the whole input and recomputes every producer.
    fn rebuild(&mut self, model: Model) -> Vec<Change> {
        let mut touched = self.begin();
        self.model = model;
        let mut fresh: BTreeMap<Producer, Vec<Record>> = BTreeMap::new();
        fresh.insert(Producer::Server, generator::server_records(&self.config));
        fresh.insert(Producer::Masters, generator::master_records(&self.config, &self.masters));
        for (id, agent) in &self.model.agents {
            fresh.insert(Producer::Agent(id.clone()), generator::agent_records(&self.config, agent));
        }
        for (id, entry) in &self.model.frameworks {
            let records = generator::framework_records(&self.config, &entry.value, self.masters.leader);
            fresh.insert(Producer::Framework(id.clone()), records);
        }
        for key in self.model.tasks.keys() {
            fresh.insert(Producer::Task(key.clone()), self.task_records(key));
        }
        for ((framework, name), address) in &self.vips {
            fresh.insert(Producer::Vip(framework.clone(), name.clone()), self.vip_records(framework, name, *address));
        }
        let gone: Vec<Producer> = self.contributions.keys().filter(|p| !fresh.contains_key(p)).cloned().collect();
        for producer in gone {
            self.update(producer, Vec::new(), &mut touched);
        }
        for (producer, records) in fresh {
            self.update(producer, records, &mut touched);
        }
        self.finish(touched)
    }

    fn begin(&mut self) -> Touched {
        let mut touched = Touched::new();
        if !self.started {
            self.started = true;
            let records = generator::server_records(&self.config);
            self.update(Producer::Server, records, &mut touched);
        }
        touched
    }

    /// Replaces one producer's contribution, counting producers per record.
    fn update(&mut self, producer: Producer, records: Vec<Record>, touched: &mut Touched) {
        let old = self.contributions.remove(&producer).unwrap_or_default();
        if old != records {
            for record in old.iter() {
                touched.entry(record.clone()).or_insert_with(|| self.counts.contains_key(record));
                if let Some(count) = self.counts.get_mut(record) {
                    *count -= 1;
                    if *count == 0 {
                        self.counts.remove(record);
                    }
                }
            }
            for record in &records {
                touched.entry(record.clone()).or_insert_with(|| self.counts.contains_key(record));
                *self.counts.entry(record.clone()).or_default() += 1;
            }
        }
        if !records.is_empty() {
            self.contributions.insert(producer, records);
        }
    }

    /// The net changes of one call: a record removed and re-added (or the reverse) within it is
    /// no change at all.
    fn finish(&mut self, touched: Touched) -> Vec<Change> {
        let mut removes = Vec::new();
        let mut adds = Vec::new();
        for (record, before) in touched {
            match (before, self.counts.contains_key(&record)) {
                (true, false) => removes.push(record),
                (false, true) => adds.push(record),
                _ => {}
            }
        }
        for record in &removes {
            self.records.remove(record);
        }
        for record in &adds {
            self.records.insert(record.clone());
        }
        removes.into_iter().map(Change::Remove).chain(adds.into_iter().map(Change::Add)).collect()
    }
}

/// The SOA serial of an event index: its low 32 bits.
fn serial_of(index: u64) -> u32 {
    index as u32
}

/// A record as `/v1/enumerate` shows it.
fn enumerated(record: &Record) -> Value {
    let (host, rtype) = match &record.data {
        RecordData::A(ip) => (ip.to_string(), "A"),
        RecordData::Aaaa(ip) => (ip.to_string(), "AAAA"),
        RecordData::Srv { port, target, .. } => (format!("{target}:{port}"), "SRV"),
    };
    json!({"name": record.name.as_str(), "host": host, "rtype": rtype})
}
