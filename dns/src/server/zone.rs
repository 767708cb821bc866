//! The served data: one record set (every zone's names, fully qualified) and its serial,
//! shared between the projection's owner, which writes it, and the query handlers, which read
//! it.
//!
//! Readers take an `Arc` snapshot under a read lock held for a pointer copy, so a query never
//! waits on more than that. A writer changes the set in place when no snapshot is out (the
//! common case: queries hold theirs for microseconds) and otherwise copies it outside the lock
//! and swaps the copy in, so a long-lived snapshot (an HTTP `/v1/enumerate`) costs the writer a
//! copy but never blocks queries.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::records::{Change, RecordSet};

/// A shared, swappable record set and serial; clones share the same data.
#[derive(Clone, Default)]
pub struct Zone {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    served: RwLock<Served>,
    /// Serialises writers, so a copy made outside `served`'s lock cannot lose another's changes.
    writer: Mutex<()>,
}

#[derive(Default)]
struct Served {
    records: Arc<RecordSet>,
    serial: u32,
}

impl Zone {
    /// An empty zone with serial 0.
    pub fn new() -> Zone {
        Zone::default()
    }

    /// Applies the projection's changes and sets the serial (the event index they came from).
    pub fn apply(&self, changes: &[Change], serial: u32) {
        let _writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut served = self.write();
            if let Some(records) = Arc::get_mut(&mut served.records) {
                for change in changes {
                    records.apply(change);
                }
                served.serial = serial;
                return;
            }
        }
        let mut next = RecordSet::clone(&self.snapshot());
        for change in changes {
            next.apply(change);
        }
        let mut served = self.write();
        served.records = Arc::new(next);
        served.serial = serial;
    }

    /// Replaces every record at once (a re-sync from a snapshot of the cluster).
    pub fn replace(&self, records: RecordSet, serial: u32) {
        let _writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = {
            let mut served = self.write();
            served.serial = serial;
            std::mem::replace(&mut served.records, Arc::new(records))
        };
        // Freeing a large set is the slow part: do it after readers can see the new one.
        drop(old);
    }

    /// The records as they are now; later changes do not show in it.
    pub fn snapshot(&self) -> Arc<RecordSet> {
        self.read().records.clone()
    }

    pub fn serial(&self) -> u32 {
        self.read().serial
    }

    /// The records and their serial, taken together.
    pub fn load(&self) -> (Arc<RecordSet>, u32) {
        let served = self.read();
        (served.records.clone(), served.serial)
    }

    // A panic while holding the lock can only come from an allocation failure mid-apply; the
    // set is still a valid set then, so serving it beats failing every query.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.inner.served.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Served> {
        self.inner.served.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (records, serial) = self.load();
        f.debug_struct("Zone").field("records", &records.len()).field("serial", &serial).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Name, Record, RecordData};

    fn a(name: &str, ip: [u8; 4]) -> Record {
        Record { name: Name::new(name), data: RecordData::A(ip.into()) }
    }

    #[test]
    fn changes_apply_in_place_and_a_held_snapshot_stays_as_it_was() {
        let zone = Zone::new();
        zone.apply(&[Change::Add(a("web.marathon.mesos", [10, 0, 0, 1]))], 1);
        let before = zone.snapshot();
        zone.apply(&[Change::Add(a("db.marathon.mesos", [10, 0, 0, 2]))], 2);
        zone.apply(&[Change::Remove(a("web.marathon.mesos", [10, 0, 0, 1]))], 3);
        assert_eq!(before.len(), 1);
        assert!(before.contains_name(&Name::new("web.marathon.mesos")));
        let (now, serial) = zone.load();
        assert_eq!(serial, 3);
        assert_eq!(now.len(), 1);
        assert!(now.contains_name(&Name::new("db.marathon.mesos")));
    }

    #[test]
    fn replace_swaps_everything_and_clones_share() {
        let zone = Zone::new();
        let other = zone.clone();
        zone.apply(&[Change::Add(a("web.marathon.mesos", [10, 0, 0, 1]))], 7);
        let mut fresh = RecordSet::new();
        fresh.insert(a("leader.mesos", [127, 0, 0, 1]));
        other.replace(fresh.clone(), 9);
        assert_eq!(*zone.snapshot(), fresh);
        assert_eq!(zone.serial(), 9);
    }
}
