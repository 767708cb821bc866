//! The master's registry: an embedded transactional store (redb) under `--data-dir` holding
//! the event log and the current agents, frameworks and tasks.
//!
//! The entity tables are a projection of the event log, written in the same transaction as
//! the events that change them, so after a crash the registry is always the state as of its
//! last event. Older events beyond the retention are pruned in that transaction too.

use std::path::{Path, PathBuf};

use atoll_proto::model::{
    Agent, App, Deployment, Event, EventKind, Framework, FrameworkId, Task, TaskId, VipAssignment,
};
use atoll_scheduler_core::master::Recovered;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const FRAMEWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("frameworks");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
const VIPS: TableDefinition<&str, &[u8]> = TableDefinition::new("vips");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Meta key of the IP pools (with their subnet leases), written whole when they change.
const POOLS_KEY: &str = "ipam.pools";
const WEIGHTS_KEY: &str = "role_weights";

/// Bumped when the stored shapes change incompatibly; an older binary refuses a newer store.
const SCHEMA_VERSION: u64 = 1;

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("registry {path} has schema version {found}; this atoll understands up to {SCHEMA_VERSION}")]
    TooNew { path: PathBuf, found: u64 },
    #[error("registry storage: {0}")]
    Storage(String),
    #[error("registry record `{key}` is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

fn storage(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Storage(e.to_string())
}

/// One write: the events of a batch plus what they imply for the entity tables.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub events: Vec<&'a Event>,
    pub forget_tasks: Vec<(&'a FrameworkId, &'a TaskId)>,
    pub meta: Vec<(String, Vec<u8>)>,
    /// The IP pools with their subnet leases, when they changed.
    pub pools: Option<&'a atoll_ipam::Pools>,
    /// The role weights operators set, when they changed.
    pub weights: Option<&'a std::collections::BTreeMap<String, f64>>,
}

impl Batch<'_> {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.forget_tasks.is_empty()
            && self.meta.is_empty()
            && self.pools.is_none()
            && self.weights.is_none()
    }
}

pub struct Registry {
    db: Database,
    retention: u64,
}

fn vip_key(vip: &VipAssignment) -> String {
    format!("{}\u{1f}{}", vip.framework, vip.name)
}

fn task_key(framework_id: &FrameworkId, task_id: &TaskId) -> String {
    // Unit separator: cannot occur in ids that came through validation.
    format!("{framework_id}\u{1f}{task_id}")
}

impl Registry {
    /// Opens (creating if needed) `<dir>/registry.redb`.
    pub fn open(dir: &Path, retention: u64) -> Result<Registry, RegistryError> {
        let open_err = |e: &dyn std::fmt::Display| RegistryError::Open { path: dir.to_owned(), message: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        let path = dir.join("registry.redb");
        let db = Database::create(&path).map_err(|e| open_err(&e))?;
        let registry = Registry { db, retention: retention.max(1) };
        let txn = registry.db.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let found = match meta.get("schema_version").map_err(storage)? {
                Some(v) => Some(decode_u64(v.value(), "schema_version")?),
                None => None,
            };
            match found {
                Some(version) if version > SCHEMA_VERSION => {
                    return Err(RegistryError::TooNew { path, found: version });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice()).map_err(storage)?;
                }
            }
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(AGENTS).map_err(storage)?;
            txn.open_table(FRAMEWORKS).map_err(storage)?;
            txn.open_table(TASKS).map_err(storage)?;
            txn.open_table(APPS).map_err(storage)?;
            txn.open_table(DEPLOYMENTS).map_err(storage)?;
            txn.open_table(VIPS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(registry)
    }

    /// Everything the master needs to resume.
    pub fn load(&self) -> Result<Recovered, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        let last_index = match meta.get("last_index").map_err(storage)? {
            Some(v) => decode_u64(v.value(), "last_index")?,
            None => 0,
        };
        let pools = match meta.get(POOLS_KEY).map_err(storage)? {
            Some(v) => Some(decode::<atoll_ipam::Pools>(POOLS_KEY, v.value())?),
            None => None,
        };
        let weights = match meta.get(WEIGHTS_KEY).map_err(storage)? {
            Some(v) => decode(WEIGHTS_KEY, v.value())?,
            None => Default::default(),
        };
        let mut recovered = Recovered { last_index, pools, weights, ..Recovered::default() };
        for row in txn.open_table(AGENTS).map_err(storage)?.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            recovered.agents.push(decode::<Agent>(k.value(), v.value())?);
        }
        for row in txn.open_table(FRAMEWORKS).map_err(storage)?.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            recovered.frameworks.push(decode::<Framework>(k.value(), v.value())?);
        }
        for row in txn.open_table(TASKS).map_err(storage)?.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            recovered.tasks.push(decode::<Task>(k.value(), v.value())?);
        }
        for row in txn.open_table(APPS).map_err(storage)?.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            recovered.apps.push(decode::<App>(k.value(), v.value())?);
        }
        for row in txn.open_table(DEPLOYMENTS).map_err(storage)?.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            recovered.deployments.push(decode::<Deployment>(k.value(), v.value())?);
        }
        for row in txn.open_table(VIPS).map_err(storage)?.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            recovered.vips.push(decode::<VipAssignment>(k.value(), v.value())?);
        }
        Ok(recovered)
    }

    /// Writes a batch atomically and durably.
    pub fn commit(&self, batch: &Batch<'_>) -> Result<(), RegistryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut events = txn.open_table(EVENTS).map_err(storage)?;
            let mut agents = txn.open_table(AGENTS).map_err(storage)?;
            let mut frameworks = txn.open_table(FRAMEWORKS).map_err(storage)?;
            let mut tasks = txn.open_table(TASKS).map_err(storage)?;
            let mut apps = txn.open_table(APPS).map_err(storage)?;
            let mut deployments = txn.open_table(DEPLOYMENTS).map_err(storage)?;
            let mut vips = txn.open_table(VIPS).map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            let mut last = None;
            for event in &batch.events {
                let bytes = serde_json::to_vec(event).map_err(storage)?;
                events.insert(event.index, bytes.as_slice()).map_err(storage)?;
                last = Some(event.index);
                match &event.kind {
                    EventKind::AgentAdded { agent } | EventKind::AgentUpdated { agent } => {
                        let bytes = serde_json::to_vec(agent).map_err(storage)?;
                        agents.insert(agent.id.as_str(), bytes.as_slice()).map_err(storage)?;
                    }
                    EventKind::AgentRemoved { agent_id } => {
                        agents.remove(agent_id.as_str()).map_err(storage)?;
                    }
                    EventKind::FrameworkAdded { framework } | EventKind::FrameworkUpdated { framework } => {
                        let bytes = serde_json::to_vec(framework).map_err(storage)?;
                        frameworks.insert(framework.id.as_str(), bytes.as_slice()).map_err(storage)?;
                    }
                    EventKind::FrameworkRemoved { framework_id } => {
                        frameworks.remove(framework_id.as_str()).map_err(storage)?;
                    }
                    EventKind::TaskAdded { task } | EventKind::TaskUpdated { task } => {
                        let bytes = serde_json::to_vec(task).map_err(storage)?;
                        tasks
                            .insert(task_key(&task.framework_id, &task.id).as_str(), bytes.as_slice())
                            .map_err(storage)?;
                    }
                    EventKind::AppUpdated { app } => {
                        let bytes = serde_json::to_vec(app).map_err(storage)?;
                        apps.insert(app.id.as_str(), bytes.as_slice()).map_err(storage)?;
                    }
                    EventKind::AppRemoved { app_id } => {
                        apps.remove(app_id.as_str()).map_err(storage)?;
                    }
                    EventKind::DeploymentUpdated { deployment } => {
                        let bytes = serde_json::to_vec(deployment).map_err(storage)?;
                        deployments.insert(deployment.id.as_str(), bytes.as_slice()).map_err(storage)?;
                    }
                    EventKind::DeploymentFinished { deployment, .. } => {
                        deployments.remove(deployment.id.as_str()).map_err(storage)?;
                    }
                    EventKind::VipAssigned { vip } => {
                        let bytes = serde_json::to_vec(vip).map_err(storage)?;
                        vips.insert(vip_key(vip).as_str(), bytes.as_slice()).map_err(storage)?;
                    }
                    EventKind::VipReleased { vip } => {
                        vips.remove(vip_key(vip).as_str()).map_err(storage)?;
                    }
                    // Pools are saved whole (with their subnet leases) through `Batch::pools`.
                    EventKind::PoolAdded { .. } | EventKind::PoolUpdated { .. } | EventKind::PoolRemoved { .. } => {}
                }
            }
            for (framework_id, task_id) in &batch.forget_tasks {
                tasks.remove(task_key(framework_id, task_id).as_str()).map_err(storage)?;
            }
            for (key, value) in &batch.meta {
                meta.insert(key.as_str(), value.as_slice()).map_err(storage)?;
            }
            if let Some(pools) = batch.pools {
                let bytes = serde_json::to_vec(pools).map_err(storage)?;
                meta.insert(POOLS_KEY, bytes.as_slice()).map_err(storage)?;
            }
            if let Some(weights) = batch.weights {
                let bytes = serde_json::to_vec(weights).map_err(storage)?;
                meta.insert(WEIGHTS_KEY, bytes.as_slice()).map_err(storage)?;
            }
            if let Some(last) = last {
                meta.insert("last_index", last.to_be_bytes().as_slice()).map_err(storage)?;
                // Keep the newest `retention` events.
                if last > self.retention {
                    let cutoff = last - self.retention;
                    events.retain_in(..=cutoff, |_, _| false).map_err(storage)?;
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(())
    }

    /// Up to `limit` events with index greater than `since`, oldest first.
    pub fn events_after(&self, since: u64, limit: usize) -> Result<Vec<Event>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(EVENTS).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.range(since.saturating_add(1)..).map_err(storage)?.take(limit) {
            let (k, v) = row.map_err(storage)?;
            out.push(decode::<Event>(&k.value().to_string(), v.value())?);
        }
        Ok(out)
    }

    /// The oldest index still retained, if any event is.
    pub fn oldest_index(&self) -> Result<Option<u64>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(EVENTS).map_err(storage)?;
        Ok(table.first().map_err(storage)?.map(|(k, _)| k.value()))
    }

    pub fn event_count(&self) -> Result<u64, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        txn.open_table(EVENTS).map_err(storage)?.len().map_err(storage)
    }

    /// A value kept by a built-in framework (its id, its queue).
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(META).map_err(storage)?;
        Ok(table.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt { key: key.to_owned(), message: e.to_string() })
}

fn decode_u64(bytes: &[u8], key: &str) -> Result<u64, RegistryError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| RegistryError::Corrupt {
        key: key.to_owned(),
        message: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}
