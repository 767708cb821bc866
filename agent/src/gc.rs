//! Garbage collection of completed sandboxes: those completed longer ago than the configured
//! age go, and then, oldest first, more while the data dir's filesystem is fuller than the
//! threshold. The choice is a pure function; removal and the disk measurement are passed in.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_proto::model::Time;

/// A sandbox that may be collected.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub sandbox: PathBuf,
    pub completed_at: Time,
}

/// Removes what the policy says, returning what was removed. `usage` reports the filesystem's
/// used fraction (re-measured after each removal); `remove` deletes one sandbox.
pub fn collect(
    mut candidates: Vec<Candidate>,
    now: Time,
    max_age: Duration,
    threshold: f64,
    mut usage: impl FnMut() -> Option<f64>,
    mut remove: impl FnMut(&Path) -> io::Result<()>,
) -> Vec<PathBuf> {
    candidates.sort_by_key(|c| c.completed_at);
    let mut removed = Vec::new();
    let mut rest = Vec::new();
    for candidate in candidates {
        if now.saturating_since(candidate.completed_at) > max_age {
            match remove(&candidate.sandbox) {
                Ok(()) => removed.push(candidate.sandbox),
                Err(e) => tracing::warn!(sandbox = %candidate.sandbox.display(), error = %e, "cannot remove sandbox"),
            }
        } else {
            rest.push(candidate);
        }
    }
    for candidate in rest {
        if !usage().is_some_and(|used| used > threshold) {
            break;
        }
        match remove(&candidate.sandbox) {
            Ok(()) => removed.push(candidate.sandbox),
            Err(e) => tracing::warn!(sandbox = %candidate.sandbox.display(), error = %e, "cannot remove sandbox"),
        }
    }
    removed
}

/// The used fraction of the filesystem holding `path`, computed as `df` does (used over used
/// plus available), so blocks reserved for root do not count as used.
pub fn disk_usage(path: &Path) -> Option<f64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let used = stat.f_blocks.saturating_sub(stat.f_bfree);
    let usable = used + stat.f_bavail;
    (usable > 0).then(|| used as f64 / usable as f64)
}

/// Deletes a sandbox and then its task and framework directories if that left them empty.
pub fn remove_sandbox(sandbox: &Path, sandboxes_root: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(sandbox) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut dir = sandbox.parent();
    while let Some(d) = dir {
        if d == sandboxes_root || !d.starts_with(sandboxes_root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, completed_ms: u64) -> Candidate {
        Candidate { sandbox: PathBuf::from(name), completed_at: Time(completed_ms) }
    }

    #[test]
    fn old_ones_go_then_oldest_first_while_the_disk_is_full() {
        let day = Duration::from_secs(86_400);
        let now = Time(10 * 86_400_000);
        let cands = vec![candidate("new", now.0 - 1000), candidate("old", 1000), candidate("mid", now.0 - 86_400_000)];
        // Disk fine: only the expired one.
        let removed = collect(cands.clone(), now, 7 * day, 0.9, || Some(0.5), |_| Ok(()));
        assert_eq!(removed, vec![PathBuf::from("old")]);
        // Disk full until two more are gone.
        let mut used = [0.95, 0.92, 0.85].into_iter();
        let removed = collect(cands.clone(), now, 7 * day, 0.9, || used.next(), |_| Ok(()));
        assert_eq!(removed, vec![PathBuf::from("old"), PathBuf::from("mid"), PathBuf::from("new")]);
        let mut used = [0.95, 0.5].into_iter();
        let removed = collect(cands.clone(), now, 7 * day, 0.9, || used.next(), |_| Ok(()));
        assert_eq!(removed, vec![PathBuf::from("old"), PathBuf::from("mid")]);
        // A failed removal is not reported as removed.
        let removed = collect(
            cands,
            now,
            7 * day,
            0.9,
            || None,
            |p| {
                if p == Path::new("old") { Err(io::Error::other("busy")) } else { Ok(()) }
            },
        );
        assert!(removed.is_empty());
    }

    #[test]
    fn removal_prunes_empty_parents_but_not_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("sandboxes");
        let a = root.join("f1/t1/r1");
        let b = root.join("f1/t2/r1");
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        std::fs::write(a.join("stdout"), "x").expect("write");
        remove_sandbox(&a, &root).expect("remove");
        assert!(!root.join("f1/t1").exists());
        assert!(root.join("f1/t2/r1").exists());
        remove_sandbox(&b, &root).expect("remove");
        assert!(!root.join("f1").exists());
        assert!(root.exists());
        remove_sandbox(&b, &root).expect("removing twice is fine");
        assert!(disk_usage(dir.path()).is_some_and(|u| (0.0..=1.0).contains(&u)));
    }
}
