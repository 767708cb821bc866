//! Per-task cgroups: finding out which cgroup hierarchies this node has (pure v2, hybrid v1+v2 or
//! pure v1), creating one cgroup per task in every hierarchy the agent uses, applying its cpu and
//! memory limits where those controllers live, and later listing, signalling, killing, inspecting
//! (OOM) and removing it. Everything here is synchronous file I/O on cgroupfs; the async agent calls
//! it through `spawn_blocking`.
//!
//! Paths are always `<mount point>/<root>/<name>`: `root` is the agent's own subtree (for example
//! `atoll/agent-3f2a`) and `name` is the task's cgroup.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// CFS period used for cpu quotas; 100 ms is the kernel default and what other managers use.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel rejects quotas below 1 ms.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages); anything
/// this large is not a limit anyone set.
const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;
/// Controllers the agent places tasks under; others (cpuset, blkio, freezer, …) are left alone.
const USED_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];
/// Used when /proc/cgroups is missing, to tell controller names from mount options in mountinfo.
const KNOWN_V1_CONTROLLERS: [&str; 14] = [
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "io",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
];

const KILL_ROUNDS: u32 = 100;
const KILL_DEADLINE: Duration = Duration::from_secs(2);
const REMOVE_ROUNDS: u32 = 50;
const RETRY_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enable the {controller} controller in {path}: {source}")]
    EnableController {
        path: PathBuf,
        controller: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup hierarchy is mounted (according to {path})")]
    NoHierarchy { path: PathBuf },
    #[error("a {limit} limit was requested but no hierarchy has the {controller} controller (cgroup {path})")]
    MissingController { limit: &'static str, controller: &'static str, path: PathBuf },
    #[error("invalid cgroup path {value:?}: must be relative, without `.`/`..` or empty components")]
    InvalidName { value: String },
    #[error("invalid {limit} limit {value} for cgroup {path}")]
    InvalidLimit { limit: &'static str, value: String, path: PathBuf },
    #[error("{remaining} process(es) still in {path} after SIGKILL for {waited_ms} ms")]
    KillTimeout { path: PathBuf, remaining: usize, waited_ms: u64 },
}

/// Resource limits for one task; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub mem_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct V2Mount {
    path: PathBuf,
    /// From the mount's top-level `cgroup.controllers`: what this tree can enable at all.
    controllers: Vec<String>,
    /// `cgroup.kill` exists in non-root cgroups since 5.14; the root has none, so probe the kernel.
    kill: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Mount {
    path: PathBuf,
    /// Controllers bound to this hierarchy (co-mounts such as `cpu,cpuacct` list several).
    controllers: Vec<String>,
}

/// What is mounted where. Obtained with [`CgroupLayout::detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    v2: Option<V2Mount>,
    v1: Vec<V1Mount>,
}

/// One hierarchy the agent places tasks in, with the controllers it uses there.
struct Hierarchy<'a> {
    mount: &'a Path,
    version: CgroupVersion,
    controllers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The task's cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    pub path: PathBuf,
    pub version: CgroupVersion,
    /// Controllers that act on this directory (empty for a v2 tree used only for grouping).
    pub controllers: Vec<String>,
}

impl CgroupDir {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// One task's cgroup across every hierarchy used; checkpointed by the agent so it can find the
/// task's processes again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCgroup {
    name: String,
    dirs: Vec<CgroupDir>,
}

struct MountEntry {
    mount_point: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..=i + 3].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The optional fields before "-" vary in number, so locate the separator.
        let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6) else { continue };
        let (Some(mount_point), Some(fstype), Some(super_opts)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 3))
        else {
            continue;
        };
        out.push(MountEntry {
            mount_point: unescape_mount_path(mount_point),
            fstype: (*fstype).to_string(),
            super_options: super_opts.split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// Enabled controller names from /proc/cgroups (a controller disabled with `cgroup_disable=` is
/// still listed there, with enabled = 0).
fn parse_proc_cgroups(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [name, _, _, enabled, ..] if *enabled != "0" => Some((*name).to_string()),
                _ => None,
            }
        })
        .collect()
}

fn kernel_has_cgroup_kill() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    let major: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 14)
}

/// Swap limits only matter when there is swap; without it the memsw/swap files may not even exist.
fn swap_enabled() -> bool {
    let Ok(meminfo) = fs::read_to_string("/proc/meminfo") else { return false };
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|kb| kb > 0)
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.to_path_buf(), source })
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    // cgroupfs takes each write(2) as one command, so open without O_CREAT/O_TRUNC and write once.
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write { path: path.to_path_buf(), value: value.to_string(), source })
}

/// Components of a relative path, refusing anything that could escape the hierarchy.
fn relative_components(value: &str) -> Result<Vec<String>, CgroupError> {
    let invalid = || CgroupError::InvalidName { value: value.to_string() };
    if value.is_empty() || value.starts_with('/') {
        return Err(invalid());
    }
    value
        .split('/')
        .map(|c| {
            let mut comps = Path::new(c).components();
            match (comps.next(), comps.next()) {
                (Some(Component::Normal(_)), None) if c != "." && !c.is_empty() => Ok(c.to_string()),
                _ => Err(invalid()),
            }
        })
        .collect()
}

fn pids_in(dir: &Path) -> Vec<i32> {
    // A missing directory simply has no processes (already removed, or never created).
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse::<i32>().ok()).collect())
        .unwrap_or_default()
}

fn send_signal(pid: i32, signal: i32) -> bool {
    // pid 0 and negative pids address process groups or everything; cgroup.procs never lists
    // them, but a corrupt read must not turn into kill(-1).
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

fn read_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next().and_then(|v| v.parse().ok())).flatten()
    })
}

impl CgroupLayout {
    /// Reads /proc/self/mountinfo and /proc/cgroups (plus the v2 tree's `cgroup.controllers`).
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        let mountinfo_path = Path::new("/proc/self/mountinfo");
        let mountinfo = read_file(mountinfo_path)?;
        let enabled = fs::read_to_string("/proc/cgroups").ok().map(|t| parse_proc_cgroups(&t));
        let layout =
            Self::from_mounts(&parse_mountinfo(&mountinfo), enabled.as_ref(), kernel_has_cgroup_kill(), |p| {
                read_file(&p.join("cgroup.controllers"))
            })?;
        if layout.v2.is_none() && layout.v1.is_empty() {
            return Err(CgroupError::NoHierarchy { path: mountinfo_path.to_path_buf() });
        }
        Ok(layout)
    }

    fn from_mounts(
        mounts: &[MountEntry],
        enabled: Option<&BTreeSet<String>>,
        kill: bool,
        read_v2_controllers: impl Fn(&Path) -> Result<String, CgroupError>,
    ) -> Result<CgroupLayout, CgroupError> {
        let is_controller = |name: &str| match enabled {
            Some(set) => set.contains(name),
            None => KNOWN_V1_CONTROLLERS.contains(&name),
        };
        let mut v2 = None;
        let mut v1: Vec<V1Mount> = Vec::new();
        for m in mounts {
            match m.fstype.as_str() {
                "cgroup2" if v2.is_none() => {
                    let controllers =
                        read_v2_controllers(&m.mount_point)?.split_whitespace().map(str::to_string).collect();
                    v2 = Some(V2Mount { path: m.mount_point.clone(), controllers, kill });
                }
                "cgroup" => {
                    let controllers: Vec<String> =
                        m.super_options.iter().filter(|o| is_controller(o)).cloned().collect();
                    // Named hierarchies (name=systemd) carry no controller; a hierarchy mounted
                    // twice (bind mounts) is used at its first mount point.
                    let seen = controllers.iter().any(|c| v1.iter().any(|h| h.controllers.contains(c)));
                    if !controllers.is_empty() && !seen {
                        v1.push(V1Mount { path: m.mount_point.clone(), controllers });
                    }
                }
                _ => {}
            }
        }
        Ok(CgroupLayout { v2, v1 })
    }

    fn v2_offers(&self, controller: &str) -> bool {
        self.v2.as_ref().is_some_and(|v2| {
            // cpuacct's accounting is part of cpu (cpu.stat) in v2.
            let wanted = if controller == "cpuacct" { "cpu" } else { controller };
            v2.controllers.iter().any(|c| c == wanted)
        })
    }

    /// The hierarchies tasks are placed in: the v2 tree whenever one is mounted (grouping,
    /// cgroup.kill, BPF attach), plus the v1 hierarchy of each used controller the v2 tree lacks.
    fn hierarchies(&self) -> Vec<Hierarchy<'_>> {
        let mut out = Vec::new();
        if let Some(v2) = &self.v2 {
            let controllers = ["memory", "cpu", "pids"]
                .into_iter()
                .filter(|c| v2.controllers.iter().any(|o| o == c))
                .map(str::to_string)
                .collect();
            out.push(Hierarchy { mount: &v2.path, version: CgroupVersion::V2, controllers });
        }
        for controller in USED_CONTROLLERS {
            if self.v2_offers(controller) {
                continue;
            }
            let Some(m) = self.v1.iter().find(|m| m.controllers.iter().any(|c| c == controller)) else { continue };
            if out.iter().any(|h| h.mount == m.path) {
                continue;
            }
            out.push(Hierarchy { mount: &m.path, version: CgroupVersion::V1, controllers: m.controllers.clone() });
        }
        out
    }

    /// Whether tasks get `controller` (e.g. "memory", "cpu", "pids") in some hierarchy.
    pub fn supports(&self, controller: &str) -> bool {
        self.hierarchies().iter().any(|h| h.controllers.iter().any(|c| c == controller))
    }

    /// One line for logs, e.g.
    /// `hybrid: v2 /sys/fs/cgroup/unified (grouping, kill), v1 memory /sys/fs/cgroup/memory, …`.
    pub fn describe(&self) -> String {
        let hierarchies = self.hierarchies();
        let has_v1 = hierarchies.iter().any(|h| h.version == CgroupVersion::V1);
        let mode = match (&self.v2, has_v1) {
            (Some(_), true) => "hybrid",
            (Some(_), false) => "v2",
            (None, true) => "v1",
            (None, false) => "none",
        };
        let parts: Vec<String> = hierarchies
            .iter()
            .map(|h| match h.version {
                CgroupVersion::V2 => {
                    let mut features = vec!["grouping".to_string()];
                    features.extend(h.controllers.iter().cloned());
                    if self.v2.as_ref().is_some_and(|v2| v2.kill) {
                        features.push("kill".to_string());
                    }
                    format!("v2 {} ({})", h.mount.display(), features.join(", "))
                }
                CgroupVersion::V1 => format!("v1 {} {}", h.controllers.join(","), h.mount.display()),
            })
            .collect();
        if parts.is_empty() { mode.to_string() } else { format!("{mode}: {}", parts.join(", ")) }
    }

    /// Whether we can create cgroups here: some hierarchy is used and every used mount point is
    /// writable by us (root, or a delegated tree) and not mounted read-only.
    pub fn usable(&self) -> bool {
        let hierarchies = self.hierarchies();
        !hierarchies.is_empty()
            && hierarchies.iter().all(|h| rustix::fs::access(h.mount, rustix::fs::Access::WRITE_OK).is_ok())
    }

    fn dirs_for(&self, root: &[String], name: &str) -> Vec<CgroupDir> {
        self.hierarchies()
            .into_iter()
            .map(|h| {
                let mut path = h.mount.to_path_buf();
                path.extend(root);
                path.push(name);
                CgroupDir { path, version: h.version, controllers: h.controllers }
            })
            .collect()
    }

    /// Creates `<hierarchy>/<root>/<name>` in every hierarchy used and applies `limits`. On error,
    /// the task cgroups created so far are removed again (the intermediate root dirs stay).
    pub fn create(&self, root: &str, name: &str, limits: &Limits) -> Result<TaskCgroup, CgroupError> {
        let root_parts = relative_components(root)?;
        let name_parts = relative_components(name)?;
        let [name] = name_parts.as_slice() else {
            return Err(CgroupError::InvalidName { value: name.to_string() });
        };
        let cgroup = TaskCgroup { name: name.clone(), dirs: self.dirs_for(&root_parts, name) };
        let Some(first) = cgroup.dirs.first() else {
            return Err(CgroupError::NoHierarchy { path: PathBuf::from("/proc/self/mountinfo") });
        };
        Self::validate_limits(limits, &first.path)?;
        if limits.mem_bytes.is_some() && !cgroup.dirs.iter().any(|d| d.has("memory")) {
            return Err(CgroupError::MissingController {
                limit: "memory",
                controller: "memory",
                path: first.path.clone(),
            });
        }
        if limits.cpus.is_some() && !cgroup.dirs.iter().any(|d| d.has("cpu")) {
            return Err(CgroupError::MissingController { limit: "cpus", controller: "cpu", path: first.path.clone() });
        }

        let mut created = Vec::new();
        let result =
            self.create_dirs(&root_parts, &cgroup, &mut created, true).and_then(|()| cgroup.apply_limits(limits));
        if let Err(e) = result {
            // No half-made task cgroup: a later create with the same name must start clean.
            for dir in created.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
            return Err(e);
        }
        Ok(cgroup)
    }

    fn validate_limits(limits: &Limits, path: &Path) -> Result<(), CgroupError> {
        if let Some(cpus) = limits.cpus
            && !(cpus.is_finite() && cpus > 0.0)
        {
            return Err(CgroupError::InvalidLimit { limit: "cpus", value: cpus.to_string(), path: path.to_path_buf() });
        }
        if limits.mem_bytes == Some(0) {
            return Err(CgroupError::InvalidLimit { limit: "memory", value: "0".into(), path: path.to_path_buf() });
        }
        Ok(())
    }

    fn create_dirs(
        &self,
        root: &[String],
        cgroup: &TaskCgroup,
        created: &mut Vec<PathBuf>,
        retry: bool,
    ) -> Result<(), CgroupError> {
        for (h, dir) in self.hierarchies().iter().zip(&cgroup.dirs) {
            let mut parent = h.mount.to_path_buf();
            for (i, component) in root.iter().enumerate() {
                if h.version == CgroupVersion::V2 {
                    Self::enable_controllers(&parent, &h.controllers)?;
                }
                parent.push(component);
                // Another agent may remove_root() a shared ancestor between our mkdir calls; one
                // retry of the whole chain covers that race.
                if let Err(e) = mkdir(&parent) {
                    if retry
                        && i > 0
                        && matches!(&e, CgroupError::Create { source, .. } if source.kind() == ErrorKind::NotFound)
                    {
                        return self.create_dirs(root, cgroup, created, false);
                    }
                    return Err(e);
                }
            }
            if h.version == CgroupVersion::V2 {
                Self::enable_controllers(&parent, &h.controllers)?;
            }
            match fs::create_dir(&dir.path) {
                Ok(()) => created.push(dir.path.clone()),
                // Left over from before an agent restart; reuse it (limits are re-applied).
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(source) => return Err(CgroupError::Create { path: dir.path.clone(), source }),
            }
        }
        Ok(())
    }

    /// v2 only lets a cgroup use a controller that its parent enabled in `cgroup.subtree_control`.
    fn enable_controllers(dir: &Path, controllers: &[String]) -> Result<(), CgroupError> {
        if controllers.is_empty() {
            return Ok(());
        }
        let file = dir.join("cgroup.subtree_control");
        let current = read_file(&file)?;
        for controller in controllers {
            if current.split_whitespace().any(|c| c == controller) {
                continue;
            }
            // One controller per write so the error names the one that failed (EBUSY here usually
            // means `dir` has processes of its own: v2's no-internal-processes rule).
            OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|mut f| f.write_all(format!("+{controller}").as_bytes()))
                .map_err(|source| CgroupError::EnableController {
                    path: file.clone(),
                    controller: controller.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The task cgroup `name` under `root` as `create` would have made it, for recovery after an
    /// agent restart; the directories may not exist. An invalid `root`/`name` yields a cgroup with no
    /// directories (it has no processes and removing it does nothing).
    pub fn open(&self, root: &str, name: &str) -> TaskCgroup {
        let dirs = match (relative_components(root), relative_components(name)) {
            (Ok(root), Ok(n)) if n.len() == 1 => self.dirs_for(&root, name),
            _ => Vec::new(),
        };
        TaskCgroup { name: name.to_string(), dirs }
    }

    /// Names of the task cgroups under `root` in any hierarchy, sorted.
    pub fn list(&self, root: &str) -> Vec<String> {
        let Ok(root) = relative_components(root) else { return Vec::new() };
        let mut names = BTreeSet::new();
        for h in self.hierarchies() {
            let mut dir = h.mount.to_path_buf();
            dir.extend(&root);
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Ok(name) = entry.file_name().into_string()
                {
                    names.insert(name);
                }
            }
        }
        names.into_iter().collect()
    }

    /// Removes `root` and then its ancestors (up to the mount point) in every hierarchy, stopping
    /// at the first one still in use. Best effort.
    pub fn remove_root(&self, root: &str) {
        let Ok(root) = relative_components(root) else { return };
        for h in self.hierarchies() {
            for depth in (1..=root.len()).rev() {
                let mut dir = h.mount.to_path_buf();
                dir.extend(&root[..depth]);
                match fs::remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::debug!(path = %dir.display(), error = %e, "cgroup root not removed");
                        break;
                    }
                }
            }
        }
    }
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create { path: path.to_path_buf(), source }),
    }
}

impl TaskCgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dirs(&self) -> &[CgroupDir] {
        &self.dirs
    }

    /// The v2 directory (for BPF programs attached per task), if a v2 tree is mounted.
    pub fn v2_path(&self) -> Option<&Path> {
        self.dirs.iter().find(|d| d.version == CgroupVersion::V2).map(|d| d.path.as_path())
    }

    fn controller_dir(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs.iter().find(|d| d.has(controller))
    }

    fn apply_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(bytes) = limits.mem_bytes
            && let Some(dir) = self.controller_dir("memory")
        {
            let value = bytes.to_string();
            match dir.version {
                CgroupVersion::V2 => {
                    write_file(&dir.path.join("memory.max"), &value)?;
                    let swap = dir.path.join("memory.swap.max");
                    if swap.exists() && swap_enabled() {
                        write_file(&swap, "0")?;
                    }
                    // Killing the whole task on OOM beats leaving it running with a random part
                    // of its process tree gone.
                    let group = dir.path.join("memory.oom.group");
                    if group.exists() {
                        write_file(&group, "1")?;
                    }
                }
                CgroupVersion::V1 => {
                    write_file(&dir.path.join("memory.limit_in_bytes"), &value)?;
                    // Without this the task could exceed its limit by swapping; memsw must be set
                    // after limit_in_bytes because the kernel requires memsw >= limit.
                    let memsw = dir.path.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() && swap_enabled() {
                        write_file(&memsw, &value)?;
                    }
                }
            }
        }
        if let Some(cpus) = limits.cpus
            && let Some(dir) = self.controller_dir("cpu")
        {
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US);
            let shares = ((cpus * 1024.0).round() as u64).clamp(2, 262_144);
            match dir.version {
                CgroupVersion::V2 => {
                    write_file(&dir.path.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                    // Same shares→weight mapping as runc/systemd so mixed clusters behave alike.
                    let weight = 1 + ((shares - 2) * 9999) / 262_142;
                    write_file(&dir.path.join("cpu.weight"), &weight.to_string())?;
                }
                CgroupVersion::V1 => {
                    write_file(&dir.path.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write_file(&dir.path.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    write_file(&dir.path.join("cpu.shares"), &shares.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Every `cgroup.procs` a task process must write itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.join("cgroup.procs")).collect()
    }

    /// Processes in the task, across all hierarchies, sorted.
    pub fn pids(&self) -> Vec<i32> {
        let set: BTreeSet<i32> = self.dirs.iter().flat_map(|d| pids_in(&d.path)).collect();
        set.into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.iter().all(|d| pids_in(&d.path).is_empty())
    }

    /// Sends `signal` to every process in the task; returns how many were signalled.
    pub fn signal_all(&self, signal: i32) -> usize {
        self.pids().into_iter().filter(|&pid| send_signal(pid, signal)).count()
    }

    /// SIGKILLs every process and waits (bounded) until the cgroup is empty. Uses v2 `cgroup.kill`
    /// where available, which also catches processes forking concurrently; otherwise, and for any
    /// process only found in a v1 hierarchy, repeats kill(SIGKILL) over cgroup.procs.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let start = Instant::now();
        let kill_file = self.v2_path().map(|p| p.join("cgroup.kill")).filter(|p| p.exists());
        let v2_dir = self.v2_path();
        for _ in 0..KILL_ROUNDS {
            let v2_pids: BTreeSet<i32> = v2_dir.map(pids_in).unwrap_or_default().into_iter().collect();
            let all = self.pids();
            if all.is_empty() {
                return Ok(());
            }
            let mut killed_by_kernel = false;
            if let Some(file) = &kill_file
                && !v2_pids.is_empty()
            {
                match write_file(file, "1") {
                    Ok(()) => killed_by_kernel = true,
                    Err(e) => tracing::debug!(error = %e, "cgroup.kill failed, falling back to kill(2)"),
                }
            }
            for pid in all {
                if !(killed_by_kernel && v2_pids.contains(&pid)) {
                    send_signal(pid, libc::SIGKILL);
                }
            }
            if start.elapsed() >= KILL_DEADLINE {
                break;
            }
            thread::sleep(RETRY_PAUSE);
        }
        let remaining = self.pids().len();
        if remaining == 0 {
            return Ok(());
        }
        let path = self.dirs.first().map(|d| d.path.clone()).unwrap_or_default();
        Err(CgroupError::KillTimeout { path, remaining, waited_ms: start.elapsed().as_millis() as u64 })
    }

    /// Whether the kernel OOM killer killed something in this task. False without a memory
    /// controller or once the cgroup is gone.
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = self.controller_dir("memory") else { return false };
        match dir.version {
            CgroupVersion::V2 => fs::read_to_string(dir.path.join("memory.events"))
                .ok()
                .and_then(|t| read_key(&t, "oom_kill"))
                .is_some_and(|n| n > 0),
            CgroupVersion::V1 => fs::read_to_string(dir.path.join("memory.oom_control")).ok().is_some_and(|t| {
                read_key(&t, "oom_kill").is_some_and(|n| n > 0) || read_key(&t, "under_oom").is_some_and(|n| n > 0)
            }),
        }
    }

    /// The memory limit in effect (as the kernel rounded it), `None` if unlimited or unknown.
    pub fn memory_limit(&self) -> Option<u64> {
        let dir = self.controller_dir("memory")?;
        let (file, unlimited) = match dir.version {
            CgroupVersion::V2 => ("memory.max", u64::MAX),
            CgroupVersion::V1 => ("memory.limit_in_bytes", V1_UNLIMITED_THRESHOLD),
        };
        let text = fs::read_to_string(dir.path.join(file)).ok()?;
        text.trim().parse::<u64>().ok().filter(|&v| v < unlimited)
    }

    /// Removes the task's directory in every hierarchy. Processes that were just killed take a
    /// moment to leave (EBUSY), so this retries briefly; a directory already gone is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for dir in &self.dirs {
            let mut attempt = 0;
            loop {
                match fs::remove_dir(&dir.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if e.kind() == ErrorKind::ResourceBusy && attempt + 1 < REMOVE_ROUNDS => {
                        attempt += 1;
                        thread::sleep(RETRY_PAUSE);
                    }
                    Err(source) => {
                        first_error.get_or_insert(CgroupError::Remove { path: dir.path.clone(), source });
                        break;
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Root-only test fixtures shared with the executor's tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// Removes the test's cgroups even when the test panics.
    pub(crate) struct Guard {
        pub layout: CgroupLayout,
        pub root: String,
        pub cgroup: TaskCgroup,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.cgroup.kill_all();
            if let Err(e) = self.cgroup.remove() {
                eprintln!("cleanup: {e}");
            }
            self.layout.remove_root(&self.root);
        }
    }

    /// Root-only tests must not pass silently when they did not run.
    pub(crate) fn privileged_layout() -> Option<CgroupLayout> {
        let skip = std::env::var("ATOLL_ALLOW_UNPRIVILEGED_SKIP").is_ok_and(|v| v == "1");
        let layout = CgroupLayout::detect();
        let usable = rustix::process::geteuid().is_root() && layout.as_ref().is_ok_and(CgroupLayout::usable);
        if usable {
            return layout.ok();
        }
        if skip {
            eprintln!("skipping cgroup test: needs root and writable cgroups");
            return None;
        }
        panic!(
            "this test needs root and writable cgroups (euid {}, layout {:?}); \
             set ATOLL_ALLOW_UNPRIVILEGED_SKIP=1 to skip it",
            rustix::process::geteuid().as_raw(),
            layout.map(|l| l.describe())
        );
    }

    pub(crate) fn guard(limits: &Limits) -> Option<Guard> {
        let layout = privileged_layout()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = format!("atoll-test-{}-{n}/agent", std::process::id());
        match layout.create(&root, "task", limits) {
            Ok(cgroup) => Some(Guard { layout, root, cgroup }),
            Err(e) => {
                layout.remove_root(&root);
                panic!("create cgroup under {root}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::guard;
    use super::*;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";
    const PROC_CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpu\t1\t1\t1
cpuacct\t2\t1\t1
memory\t4\t23\t1
hugetlb\t0\t1\t1
pids\t8\t1\t1
";

    fn layout_from(mountinfo: &str, v2_controllers: &str) -> CgroupLayout {
        let enabled = parse_proc_cgroups(PROC_CGROUPS);
        CgroupLayout::from_mounts(&parse_mountinfo(mountinfo), Some(&enabled), true, |_| Ok(v2_controllers.into()))
            .expect("layout")
    }

    #[test]
    fn hybrid_layout_uses_v2_for_grouping_and_v1_controllers() {
        let layout = layout_from(HYBRID, "hugetlb\n");
        assert_eq!(
            layout.describe(),
            "hybrid: v2 /sys/fs/cgroup/unified (grouping, kill), v1 memory /sys/fs/cgroup/memory, \
             v1 cpu /sys/fs/cgroup/cpu, v1 cpuacct /sys/fs/cgroup/cpuacct, v1 pids /sys/fs/cgroup/pids"
        );
        let cg = layout.open("atoll/agent-1", "t1");
        let paths: Vec<_> = cg.procs_files();
        assert_eq!(paths[0], Path::new("/sys/fs/cgroup/unified/atoll/agent-1/t1/cgroup.procs"));
        assert_eq!(paths[1], Path::new("/sys/fs/cgroup/memory/atoll/agent-1/t1/cgroup.procs"));
        assert!(layout.supports("memory") && layout.supports("cpu") && !layout.supports("hugetlb"));
    }

    #[test]
    fn pure_v2_layout_and_comounted_v1() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let layout = layout_from(v2, "cpuset cpu io memory hugetlb pids rdma misc\n");
        assert_eq!(layout.describe(), "v2: v2 /sys/fs/cgroup (grouping, memory, cpu, pids, kill)");
        assert_eq!(layout.open("a", "b").dirs().len(), 1);

        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  33 31 0:30 / /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory\n";
        let layout = layout_from(v1, "");
        assert_eq!(layout.describe(), "v1: v1 memory /sys/fs/cgroup/my mem, v1 cpu,cpuacct /sys/fs/cgroup/cpu,cpuacct");
    }

    #[test]
    fn names_are_validated() {
        let layout = layout_from(HYBRID, "");
        for bad in ["", "/abs", "a/../b", "a//b", ".", "a/./b"] {
            assert!(matches!(relative_components(bad), Err(CgroupError::InvalidName { .. })), "{bad}");
        }
        assert!(layout.open("root", "../x").dirs().is_empty());
        assert!(matches!(layout.create("root", "a/b", &Limits::default()), Err(CgroupError::InvalidName { .. })));
    }

    fn spawn_in(cg: &TaskCgroup, argv: &[&str]) -> Child {
        let files: Vec<fs::File> = cg
            .procs_files()
            .iter()
            .map(|p| OpenOptions::new().write(true).open(p).expect("open cgroup.procs"))
            .collect();
        let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: the closure only calls write(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn");
        drop(files);
        child
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn sleep_joins_and_sigterm_ends_it() {
        let Some(g) = guard(&Limits { cpus: None, mem_bytes: Some(64 << 20) }) else { return };
        assert_eq!(g.cgroup.memory_limit(), Some(64 << 20));
        assert!(g.layout.list(&g.root).contains(&"task".to_string()));
        let mut child = spawn_in(&g.cgroup, &["sleep", "30"]);
        let pid = child.id() as i32;
        assert_eq!(g.cgroup.pids(), vec![pid]);
        for dir in g.cgroup.dirs() {
            assert_eq!(pids_in(&dir.path), vec![pid], "{}", dir.path.display());
        }
        assert_eq!(g.cgroup.signal_all(libc::SIGTERM), 1);
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(g.cgroup.is_empty());
        assert!(!g.cgroup.oom_killed());
        g.cgroup.remove().expect("remove");
        assert!(g.cgroup.dirs().iter().all(|d| !d.path.exists()));
        assert!(g.layout.list(&g.root).is_empty());
        g.cgroup.remove().expect("removing twice is fine");
    }

    #[test]
    fn kill_all_gets_processes_ignoring_sigterm_and_their_children() {
        let Some(g) = guard(&Limits::default()) else { return };
        let mut child = spawn_in(&g.cgroup, &["sh", "-c", "trap '' TERM; sleep 30; true"]);
        wait_until("sh and its sleep child", || g.cgroup.pids().len() == 2);
        assert_eq!(g.cgroup.signal_all(libc::SIGTERM), 2);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(g.cgroup.pids().len(), 2, "both ignore SIGTERM");
        g.cgroup.kill_all().expect("kill_all");
        assert!(g.cgroup.is_empty());
        assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
        g.cgroup.remove().expect("remove");
    }

    #[test]
    fn kill_all_falls_back_to_kill_loop_without_cgroup_kill() {
        let Some(g) = guard(&Limits::default()) else { return };
        let mut child = spawn_in(&g.cgroup, &["sh", "-c", "trap '' TERM; sleep 30 & sleep 30 & wait"]);
        wait_until("sh and two sleeps", || g.cgroup.pids().len() == 3);
        // The same task seen only through its v1 hierarchies (or, on pure v2, a copy whose
        // cgroup.kill is ignored because the v2 dir is relabelled v1).
        let v1_view = TaskCgroup {
            name: g.cgroup.name.clone(),
            dirs: g.cgroup.dirs.iter().map(|d| CgroupDir { version: CgroupVersion::V1, ..d.clone() }).collect(),
        };
        assert!(v1_view.v2_path().is_none());
        v1_view.kill_all().expect("kill_all");
        assert!(g.cgroup.is_empty());
        assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn oom_is_detected() {
        let Some(g) = guard(&Limits { cpus: None, mem_bytes: Some(32 << 20) }) else { return };
        // dash buffers the whole command substitution in memory: ~200 MB against a 32 MiB limit.
        let mut child = spawn_in(&g.cgroup, &["/bin/sh", "-c", r#"x=$(head -c 200000000 /dev/zero | tr "\0" a)"#]);
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(g.cgroup.oom_killed());
        // The command substitution's subshell, head and tr outlive the OOM-killed shell.
        g.cgroup.kill_all().expect("kill leftovers");
    }

    #[test]
    fn cpu_limits_are_written_where_the_controller_lives() {
        let Some(g) = guard(&Limits { cpus: Some(0.5), mem_bytes: None }) else { return };
        let dir = g.cgroup.controller_dir("cpu").expect("cpu controller");
        let read = |f: &str| fs::read_to_string(dir.path.join(f)).expect(f).trim().to_string();
        match dir.version {
            CgroupVersion::V1 => {
                assert_eq!(read("cpu.cfs_period_us"), "100000");
                assert_eq!(read("cpu.cfs_quota_us"), "50000");
                assert_eq!(read("cpu.shares"), "512");
            }
            CgroupVersion::V2 => {
                assert_eq!(read("cpu.max"), "50000 100000");
                assert_eq!(read("cpu.weight"), (1 + (510 * 9999) / 262_142).to_string());
            }
        }
        assert_eq!(g.cgroup.memory_limit(), None);
    }

    #[test]
    fn checkpointed_cgroup_round_trips() {
        let Some(g) = guard(&Limits::default()) else { return };
        let json = serde_json::to_string(&g.cgroup).expect("serialize");
        let back: TaskCgroup = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, g.cgroup);
        assert_eq!(g.layout.open(&g.root, "task"), g.cgroup);
    }
}
