//! What the built-in frameworks (`atoll run`, the services framework) share: subscribing to
//! the master as a hosted framework under a remembered id, through the same scheduler calls
//! an external framework makes.

use atoll_proto::model::{Capability, FrameworkId, FrameworkInfo};
use atoll_scheduler_core::master::{ConnId, MasterError, SchedulerEvent};
use tokio::sync::mpsc;

use crate::actor::{ActorError, CONNECTION_BUFFER, MasterHandle};

/// A live subscription of a hosted framework.
pub struct Subscription {
    pub conn: ConnId,
    pub framework_id: FrameworkId,
    pub events: mpsc::Receiver<SchedulerEvent>,
}

/// A hosted framework's identity: its name and where its framework id is remembered.
pub struct Identity {
    pub name: String,
    /// Registry key holding the framework id across master restarts.
    pub meta_key: &'static str,
    pub framework_id: Option<FrameworkId>,
}

impl Identity {
    /// The identity, with the framework id remembered by an earlier run, if any.
    pub fn load(master: &MasterHandle, name: impl Into<String>, meta_key: &'static str) -> Identity {
        let framework_id = master
            .registry()
            .meta(meta_key)
            .ok()
            .flatten()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(FrameworkId);
        Identity { name: name.into(), meta_key, framework_id }
    }

    /// Subscribes (failing over to the remembered id, or as a new framework when that id was
    /// torn down by an operator) and remembers the id it got.
    pub async fn subscribe(&mut self, master: &MasterHandle) -> Option<Subscription> {
        let mut info = FrameworkInfo::named(self.name.clone());
        info.user = "root".into();
        // Hosted frameworks leave only with the master and come straight back with it; a long
        // failover keeps their tasks safe meanwhile.
        info.failover_timeout_secs = 7.0 * 24.0 * 3600.0;
        info.capabilities = vec![Capability::PartitionAware, Capability::TaskKillingState];
        for attempt in [self.framework_id.clone(), None] {
            let conn = master.new_conn();
            let (tx, events) = mpsc::channel(CONNECTION_BUFFER);
            match master.subscribe(conn, attempt.clone(), info.clone(), true, false, tx).await {
                Ok(framework_id) => {
                    if self.framework_id.as_ref() != Some(&framework_id) {
                        self.framework_id = Some(framework_id.clone());
                        let bytes = framework_id.as_str().as_bytes().to_vec();
                        if let Err(e) = master.put_meta(self.meta_key.into(), bytes).await {
                            tracing::warn!("{}: remembering the framework id: {e}", self.name);
                        }
                    }
                    return Some(Subscription { conn, framework_id, events });
                }
                Err(ActorError::Master(MasterError::FrameworkRemoved(_))) if attempt.is_some() => continue,
                Err(e) => {
                    tracing::warn!("{} could not subscribe: {e}", self.name);
                    return None;
                }
            }
        }
        None
    }
}
