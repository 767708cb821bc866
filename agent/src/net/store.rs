//! The agent's task address leases on disk: `<data dir>/ipam.json`, `{"version": 1, "leases":
//! <atoll_ipam::Leases>}`, written atomically after every change (allocate, release, new
//! subnets). Loading re-validates everything (the ipam crate refuses duplicates and addresses
//! outside the subnets), so a damaged file cannot hand out an address twice.
//!
//! Leases are keyed by run id (unique per launch): a relaunched task never finds the lease of
//! its previous run, and releasing one run can never free another's address.

use std::path::{Path, PathBuf};

use atoll_ipam::Leases;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, write_json_atomic};

pub const IPAM_FILE: &str = "ipam.json";
pub const IPAM_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Write(#[from] CheckpointError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid address leases in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path} has version {found}; this agent understands {IPAM_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    leases: Leases,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// The leases file of a data dir.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    path: PathBuf,
}

impl LeaseStore {
    pub fn new(data_dir: &Path) -> LeaseStore {
        LeaseStore { path: data_dir.join(IPAM_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved leases; `None` when there is no file (the agent never had a subnet).
    pub fn load(&self) -> Result<Option<Leases>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path: self.path.clone(), source }),
        };
        let invalid = |message: String| StoreError::Invalid { path: self.path.clone(), message };
        let version: VersionOnly = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if version.version != IPAM_VERSION {
            return Err(StoreError::Version { path: self.path.clone(), found: version.version });
        }
        let file: File = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        Ok(Some(file.leases))
    }

    pub fn save(&self, leases: &Leases) -> Result<(), StoreError> {
        write_json_atomic(&self.path, &File { version: IPAM_VERSION, leases: leases.clone() })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use atoll_ipam::Subnet;

    fn subnet() -> Subnet {
        Subnet {
            pool: "atoll".into(),
            network: "198.18.3.0/24".parse().unwrap(),
            gateway: "198.18.3.1".parse().unwrap(),
            agent: "a1".into(),
        }
    }

    #[test]
    fn leases_survive_a_restart_and_reconcile() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(dir.path());
        assert!(store.load().unwrap().is_none(), "no file, no leases");
        let mut leases = Leases::new(vec![subnet()], vec!["198.18.3.3".parse().unwrap()]);
        let a = leases.allocate("atoll", "run-a", None).unwrap();
        let b = leases.allocate("atoll", "run-b", None).unwrap();
        assert_eq!((a.ip.to_string(), b.ip.to_string()), ("198.18.3.2".into(), "198.18.3.4".into()));
        store.save(&leases).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");

        let mut back = store.load().unwrap().expect("saved");
        assert_eq!(back, leases);
        // Run a ended while the agent was away.
        let live: BTreeSet<String> = ["run-b".to_string()].into();
        assert_eq!(back.retain_tasks(&live), vec![a.clone()]);
        assert_eq!(back.allocate("atoll", "run-c", None).unwrap().ip, a.ip);
        assert_eq!(
            back.allocate("atoll", "run-d", Some(b.ip)).unwrap_err().to_string(),
            "pool atoll: 198.18.3.4 is taken by task run-b"
        );
    }

    #[test]
    fn damaged_or_newer_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(dir.path());
        let mut leases = Leases::new(vec![subnet()], vec![]);
        leases.allocate("atoll", "run-a", None).unwrap();
        leases.allocate("atoll", "run-b", None).unwrap();
        store.save(&leases).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();

        std::fs::write(store.path(), text.replace("198.18.3.3", "198.18.3.2")).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("198.18.3.2 is taken by task run-a"), "{err}");

        std::fs::write(store.path(), text.replace("\"version\": 1", "\"version\": 7")).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Version { found: 7, .. })));

        std::fs::write(store.path(), "{").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Invalid { .. })));
    }
}
