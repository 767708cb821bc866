//! DNS records as the projection produces them and the server serves them: plain data, with
//! names kept lowercase and fully qualified (trailing dot), so equal names compare equal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// A lowercase, fully qualified domain name (`web.marathon.mesos.`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Lowercases and adds the trailing dot.
    pub fn new(name: &str) -> Name {
        let mut lower = name.to_ascii_lowercase();
        if !lower.ends_with('.') {
            lower.push('.');
        }
        Name(lower)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name is `zone` or below it.
    pub fn is_in(&self, zone: &Name) -> bool {
        self.0 == zone.0 || self.0.ends_with(&format!(".{}", zone.0))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The record types Atoll serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordType {
    A,
    Aaaa,
    Srv,
}

/// One record's data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Mesos-DNS serves priority 0, weight 1.
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
}

impl RecordData {
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordData::A(_) => RecordType::A,
            RecordData::Aaaa(_) => RecordType::Aaaa,
            RecordData::Srv { .. } => RecordType::Srv,
        }
    }
}

/// A record: a name and its data (the TTL is the zone's, by type).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record {
    pub name: Name,
    pub data: RecordData,
}

/// A change to the served records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Add(Record),
    Remove(Record),
}

/// Every record of the zone, by name then type. Records are a set: the same record produced
/// twice (two tasks with the same name on one agent) is served once, and stays until the last
/// producer is gone — the projection counts producers, this holds the result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSet {
    names: BTreeMap<Name, BTreeMap<RecordType, BTreeSet<RecordData>>>,
}

impl RecordSet {
    pub fn new() -> RecordSet {
        RecordSet::default()
    }

    pub fn insert(&mut self, record: Record) -> bool {
        let Record { name, data } = record;
        self.names.entry(name).or_default().entry(data.record_type()).or_default().insert(data)
    }

    pub fn remove(&mut self, record: &Record) -> bool {
        let Some(types) = self.names.get_mut(&record.name) else { return false };
        let kind = record.data.record_type();
        let Some(set) = types.get_mut(&kind) else { return false };
        let removed = set.remove(&record.data);
        if set.is_empty() {
            types.remove(&kind);
        }
        if types.is_empty() {
            self.names.remove(&record.name);
        }
        removed
    }

    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Add(record) => {
                self.insert(record.clone());
            }
            Change::Remove(record) => {
                self.remove(record);
            }
        }
    }

    /// The records of one name and type.
    pub fn get(&self, name: &Name, kind: RecordType) -> impl Iterator<Item = &RecordData> {
        self.names.get(name).and_then(|types| types.get(&kind)).into_iter().flatten()
    }

    /// Whether the name exists (with any type): NODATA rather than NXDOMAIN.
    pub fn contains_name(&self, name: &Name) -> bool {
        self.names.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &Name> {
        self.names.keys()
    }

    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        self.names.iter().flat_map(|(name, types)| {
            types.values().flatten().map(move |data| Record { name: name.clone(), data: data.clone() })
        })
    }

    pub fn len(&self) -> usize {
        self.names.values().flat_map(|types| types.values()).map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
