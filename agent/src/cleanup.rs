//! `atoll agent --cleanup`: kill every task the data dir knows (through its cgroup, or its
//! process group without cgroups, and its executor), remove the agent's cgroups, its container
//! networks (task namespaces, veths, the bridge, Atoll's routes, the masquerade table — in the
//! network namespace this runs in) and everything the agent created under the data dir — without
//! talking to the master.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use rustix::process::Signal;

use crate::cgroups::CgroupLayout;
use crate::checkpoint::{self, Layout};
use crate::net::masquerade::{self, NftTable};
use crate::net::store::LeaseStore;
use crate::net::worker::{Removed, remove_all_blocking};
use crate::settings::AgentOptions;
use crate::{AgentError, DataDirLock, process, remove_file_if_exists};

/// What [`cleanup`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Runs that still had a live executor or task processes.
    pub tasks_killed: usize,
    /// Task cgroups removed (each counted once, whatever the number of hierarchies).
    pub cgroups_removed: usize,
    /// Files and directories removed under the data dir.
    pub removed: Vec<PathBuf>,
    /// What container networking left and was removed (for an agent that had subnets).
    pub network: Option<Removed>,
}

/// Kills everything the agent of `options.data_dir` started and removes what it created. Fails
/// if an agent is running on that data dir.
pub fn cleanup(options: &AgentOptions) -> Result<CleanupReport, AgentError> {
    let layout = Layout::new(&options.data_dir);
    let mut report = CleanupReport::default();
    if !layout.data_dir().exists() {
        return Ok(report);
    }
    let lock = DataDirLock::acquire(&layout)?;
    let cgroups = CgroupLayout::detect().ok();
    let scan = checkpoint::scan(&layout);

    // Before anything else: what the agent had started but not recorded, so nothing new joins
    // a cgroup about to be removed.
    report.tasks_killed += kill_strays(layout.data_dir(), &layout.sandboxes());
    let live: Vec<_> = scan.runs.iter().filter(|r| r.completed_at.is_none()).collect();
    report.tasks_killed = live
        .iter()
        .filter(|r| {
            r.executor.is_some_and(|e| process::is_alive(&e))
                || r.cgroup.as_ref().is_some_and(|c| !c.is_empty())
                || r.task_process.is_some_and(|t| process::group_exists(&t))
        })
        .count();
    // Executors first: killed before their tasks, they cannot write exit records into sandboxes
    // being deleted.
    for run in &live {
        if let Some(executor) = &run.executor {
            process::kill_process(executor);
        }
    }
    for run in &scan.runs {
        match &run.cgroup {
            Some(cgroup) => {
                if let Err(e) = cgroup.kill_all() {
                    tracing::warn!("{e}");
                }
                if cgroup.dirs().iter().any(|d| d.path.exists()) {
                    cgroup.remove().map_err(|e| AgentError::Cleanup {
                        path: cgroup.dirs().first().map(|d| d.path.clone()).unwrap_or_default(),
                        source: std::io::Error::other(e),
                    })?;
                    report.cgroups_removed += 1;
                }
            }
            None => {
                if let Some(leader) = run.task_process.filter(|_| run.completed_at.is_none()) {
                    process::signal_group(&leader, Signal::KILL);
                }
            }
        }
    }
    // Cgroups without a checkpoint (a crash between creating one and checkpointing it).
    if let Some(layout) = cgroups.as_ref().filter(|l| l.usable()) {
        for name in layout.list(&options.cgroup_root) {
            let cgroup = layout.open(&options.cgroup_root, &name);
            let _ = cgroup.kill_all();
            match cgroup.remove() {
                Ok(()) => report.cgroups_removed += 1,
                Err(e) => tracing::warn!("{e}"),
            }
        }
        layout.remove_root(&options.cgroup_root);
    }

    // Container networks, only where this data dir's agent had subnets or container tasks: a
    // host-network agent never touches the bridge or routes.
    let store = LeaseStore::new(layout.data_dir());
    if store.path().exists() || scan.runs.iter().any(|r| r.network.is_some()) {
        let table = NftTable { name: masquerade::table_name(layout.data_dir()), nft: options.nft.clone() };
        match remove_all_blocking(&options.bridge, &crate::net::netns_prefix(layout.data_dir()), &table) {
            Ok(removed) => report.network = Some(removed),
            Err(e) => tracing::warn!("removing container networks: {e}"),
        }
        if remove_file_if_exists(store.path())
            .map_err(|source| AgentError::Cleanup { path: store.path().to_path_buf(), source })?
        {
            report.removed.push(store.path().to_path_buf());
        }
    }

    let sandboxes = layout.sandboxes();
    report.tasks_killed += kill_strays(layout.data_dir(), &sandboxes);
    if sandboxes.exists() {
        remove_tree(&sandboxes)?;
        report.removed.push(sandboxes);
    }
    for file in [layout.agent_file(), layout.lock_file()] {
        if remove_file_if_exists(&file).map_err(|source| AgentError::Cleanup { path: file.clone(), source })? {
            report.removed.push(file);
        }
    }
    drop(lock);
    // The data dir itself only if nothing else lives there.
    if fs::remove_dir(layout.data_dir()).is_ok() {
        report.removed.push(layout.data_dir().to_path_buf());
    }
    Ok(report)
}

/// Kills the processes no checkpoint names ([`process::strays_of`]) — a task first (it leads
/// its own process group), then its executor — and looks again a few times, since a fork of the
/// dead agent may become an executor only now. Returns how many executors it killed.
fn kill_strays(data_dir: &std::path::Path, sandboxes: &std::path::Path) -> usize {
    let mut killed = 0;
    for round in 0..5 {
        let strays = process::strays_of(data_dir, sandboxes);
        if strays.is_empty() && round > 0 {
            break;
        }
        for stray in strays {
            if let Some(task) = process::first_child(stray.pid) {
                process::signal_group(&task, Signal::KILL);
                process::kill_process(&task);
            }
            process::kill_process(&stray);
            killed += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    killed
}

/// `remove_dir_all`, retried briefly: a process killed a moment ago may still be closing files
/// in it.
fn remove_tree(dir: &std::path::Path) -> Result<(), AgentError> {
    let mut attempt = 0;
    loop {
        match fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt < 20 => {
                tracing::debug!("removing {}: {e}; retrying", dir.display());
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => return Err(AgentError::Cleanup { path: dir.to_path_buf(), source }),
        }
    }
}
