//! What the agent keeps on disk so that a restarted agent (even after `kill -9`) knows its id,
//! every task it launched, where that task's executor is, and which status updates the master
//! has not acknowledged yet. Every file is written atomically (temp + fsync + rename + fsync of
//! the directory) and carries a version.
//!
//! Layout under the data dir:
//! `agent.json`, `agent.lock`, and `sandboxes/<framework>/<task>/<run>/` holding the task's
//! `stdout`, `stderr`, `executor.log`, `task.json` (this module's [`TaskCheckpoint`]),
//! `launch.json` (the executor's spec), `exit.json` (the executor's exit record) and, for
//! container tasks, `resolv.conf`; plus `ipam.json`, the task address leases
//! ([`crate::net::store`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use atoll_proto::model::{AgentId, FrameworkId, FrameworkInfo, TaskId, TaskInfo, TaskStatus, Time};
use serde::{Deserialize, Serialize};

use crate::cgroups::TaskCgroup;
use crate::net::TaskNetwork;

pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid checkpoint {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {path} has version {found}; this agent understands {CHECKPOINT_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// Where everything lives under one data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    data_dir: PathBuf,
}

pub const STDOUT: &str = "stdout";
pub const STDERR: &str = "stderr";
pub const EXECUTOR_LOG: &str = "executor.log";
pub const TASK_FILE: &str = "task.json";
pub const LAUNCH_FILE: &str = "launch.json";
pub const EXIT_FILE: &str = "exit.json";

impl Layout {
    pub fn new(data_dir: &Path) -> Layout {
        Layout { data_dir: data_dir.to_path_buf() }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn agent_file(&self) -> PathBuf {
        self.data_dir.join("agent.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.data_dir.join("agent.lock")
    }

    pub fn sandboxes(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    pub fn sandbox(&self, framework_id: &FrameworkId, task_id: &TaskId, run_id: &str) -> PathBuf {
        self.sandboxes().join(path_component(framework_id.as_str())).join(path_component(task_id.as_str())).join(run_id)
    }
}

/// Framework and task ids are chosen by frameworks; this keeps them one harmless path component
/// (`%XX` for anything but ASCII letters, digits, `-`, `_` and `.`, and for dots of `.`/`..`).
pub fn path_component(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    let all_dots = !id.is_empty() && id.bytes().all(|b| b == b'.');
    for byte in id.bytes() {
        let keep = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || (byte == b'.' && !all_dots);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() { "%".to_owned() } else { out }
}

/// The agent's identity, kept across restarts until the master says it is gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentCheckpoint {
    pub version: u32,
    #[serde(default)]
    pub agent_id: Option<AgentId>,
}

/// A process identified beyond its (reusable) pid by its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub start_time: u64,
}

/// A kill that was asked for: SIGTERM went out at `requested_at`; SIGKILL is due at `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KillRequest {
    pub requested_at: Time,
    pub deadline: Time,
    /// It came before the task was announced running.
    pub during_launch: bool,
    /// The agent killed the task because its health check failed this many times in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_failures: Option<u32>,
}

/// One run of one task (`task.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    pub version: u32,
    pub framework_id: FrameworkId,
    #[serde(default)]
    pub framework: Option<FrameworkInfo>,
    pub task: TaskInfo,
    pub run_id: String,
    pub sandbox: PathBuf,
    pub launched_at: Time,
    #[serde(default)]
    pub cgroup: Option<TaskCgroup>,
    #[serde(default)]
    pub executor: Option<ProcessRef>,
    /// The task's own process; it leads its process group, which is how it is killed without
    /// cgroups.
    #[serde(default)]
    pub task_process: Option<ProcessRef>,
    #[serde(default)]
    pub kill: Option<KillRequest>,
    /// Why the agent itself gave up on the launch, if it did.
    #[serde(default)]
    pub agent_failure: Option<String>,
    /// The latest status the agent generated.
    pub status: TaskStatus,
    /// The latest health check verdict, for a task with a health check that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Generated updates not yet acknowledged, oldest first.
    #[serde(default)]
    pub pending_updates: Vec<TaskStatus>,
    /// Set once the terminal update is acknowledged: the run is over and its sandbox waits for
    /// garbage collection.
    #[serde(default)]
    pub completed_at: Option<Time>,
    /// The master forgot this agent: the run is killed and its updates are not sent.
    #[serde(default)]
    pub orphaned: bool,
    /// The run's container network (namespace, veth, address), written before any of it is
    /// created and removed once it is torn down; `None` for host networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<TaskNetwork>,
}

impl TaskCheckpoint {
    pub fn file(&self) -> PathBuf {
        self.sandbox.join(TASK_FILE)
    }

    pub fn exit_file(&self) -> PathBuf {
        self.sandbox.join(EXIT_FILE)
    }

    pub fn save(&self) -> Result<(), CheckpointError> {
        write_json_atomic(&self.file(), self)
    }

    pub fn load(path: &Path) -> Result<TaskCheckpoint, CheckpointError> {
        let checkpoint: TaskCheckpoint = read_json(path)?;
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version { path: path.to_path_buf(), found: checkpoint.version });
        }
        Ok(checkpoint)
    }
}

impl AgentCheckpoint {
    /// The saved identity; a missing file is a new agent.
    pub fn load(layout: &Layout) -> Result<AgentCheckpoint, CheckpointError> {
        let path = layout.agent_file();
        if !path.exists() {
            return Ok(AgentCheckpoint { version: CHECKPOINT_VERSION, agent_id: None });
        }
        let checkpoint: AgentCheckpoint = read_json(&path)?;
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version { path, found: checkpoint.version });
        }
        Ok(checkpoint)
    }

    pub fn save(&self, layout: &Layout) -> Result<(), CheckpointError> {
        write_json_atomic(&layout.agent_file(), self)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, CheckpointError> {
    let bytes = fs::read(path).map_err(|source| CheckpointError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Parse { path: path.to_path_buf(), source })
}

/// Temp file in the same directory, fsync, rename, fsync the directory: a reader (or a restarted
/// agent) sees the old or the new content, never a mix, also after a power cut.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    let fail = |source: io::Error| CheckpointError::Write { path: path.to_path_buf(), source };
    let json = serde_json::to_vec_pretty(value).map_err(|e| fail(io::Error::other(e)))?;
    let file_name = path.file_name().ok_or_else(|| fail(io::Error::from(ErrorKind::InvalidInput)))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

/// Everything found under `sandboxes/`.
#[derive(Debug, Default)]
pub struct Scan {
    pub runs: Vec<TaskCheckpoint>,
    /// Run directories without a readable checkpoint (an agent crash right after creating one,
    /// or a corrupt file); only the garbage collector looks at them.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Reads every run's checkpoint. A bad one is reported, not fatal: one corrupt file must not
/// keep the agent (and every other task) from coming back.
pub fn scan(layout: &Layout) -> Scan {
    let mut scan = Scan::default();
    for framework_dir in subdirs(&layout.sandboxes()) {
        for task_dir in subdirs(&framework_dir) {
            for run_dir in subdirs(&task_dir) {
                let file = run_dir.join(TASK_FILE);
                match TaskCheckpoint::load(&file) {
                    Ok(mut checkpoint) => {
                        // The directory is the truth if the data dir was moved.
                        checkpoint.sandbox = run_dir;
                        scan.runs.push(checkpoint);
                    }
                    Err(e) => scan.unreadable.push((run_dir, e.to_string())),
                }
            }
        }
    }
    scan.runs.sort_by(|a, b| a.launched_at.cmp(&b.launched_at).then_with(|| a.run_id.cmp(&b.run_id)));
    scan
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> =
        entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_proto::model::{CommandInfo, Labels, Resources, Source, TaskState};

    #[test]
    fn ids_become_single_harmless_path_components() {
        assert_eq!(path_component("web.1-a_b"), "web.1-a_b");
        assert_eq!(path_component("a/b c"), "a%2Fb%20c");
        assert_eq!(path_component(".."), "%2E%2E");
        assert_eq!(path_component("."), "%2E");
        assert_eq!(path_component(""), "%");
        assert_eq!(path_component("é"), "%C3%A9");
    }

    pub(crate) fn checkpoint(sandbox: &Path, task: &str) -> TaskCheckpoint {
        let task_id = TaskId::new(task);
        TaskCheckpoint {
            version: CHECKPOINT_VERSION,
            framework_id: FrameworkId::new("f1"),
            framework: None,
            task: TaskInfo {
                name: task.into(),
                task_id: task_id.clone(),
                agent_id: AgentId::new("a1"),
                resources: Resources::new(),
                command: CommandInfo::shell("true"),
                labels: Labels::default(),
                discovery: None,
                kill_grace_period_secs: None,
                health_check: None,
                networks: Vec::new(),
            },
            run_id: "r1".into(),
            sandbox: sandbox.to_path_buf(),
            launched_at: Time(1),
            cgroup: None,
            executor: Some(ProcessRef { pid: 10, start_time: 20 }),
            task_process: None,
            kill: None,
            agent_failure: None,
            status: TaskStatus::new(task_id, TaskState::Running, Source::Executor, Time(2)),
            healthy: Some(true),
            pending_updates: Vec::new(),
            completed_at: None,
            orphaned: false,
            network: None,
        }
    }

    #[test]
    fn checkpoints_round_trip_and_scan_reports_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        assert_eq!(AgentCheckpoint::load(&layout).expect("load").agent_id, None);
        let agent = AgentCheckpoint { version: CHECKPOINT_VERSION, agent_id: Some(AgentId::new("a1")) };
        agent.save(&layout).expect("save agent");
        assert_eq!(AgentCheckpoint::load(&layout).expect("load"), agent);

        let sandbox = layout.sandbox(&FrameworkId::new("f/1"), &TaskId::new("t1"), "r1");
        fs::create_dir_all(&sandbox).expect("mkdir");
        let ckpt = checkpoint(&sandbox, "t1");
        ckpt.save().expect("save");
        ckpt.save().expect("save twice");
        let bad = layout.sandbox(&FrameworkId::new("f1"), &TaskId::new("t2"), "r2");
        fs::create_dir_all(&bad).expect("mkdir");
        fs::write(bad.join(TASK_FILE), "{").expect("corrupt");

        let scan = scan(&layout);
        assert_eq!(scan.runs, vec![ckpt]);
        assert_eq!(scan.unreadable.len(), 1);
        assert_eq!(scan.unreadable[0].0, bad);
        let names: Vec<_> = fs::read_dir(&sandbox).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(TASK_FILE)], "no temp files left");

        let mut future = checkpoint(&sandbox, "t1");
        future.version = 99;
        write_json_atomic(&future.file(), &future).expect("write");
        assert!(matches!(TaskCheckpoint::load(&future.file()), Err(CheckpointError::Version { found: 99, .. })));
    }
}
