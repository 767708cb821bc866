//! The agent's handle on executor and task processes: starting an executor in its own session,
//! reading its one announcement line, telling a live process from a reused pid (by its start
//! time), waiting for an executor through a pidfd (the same for a child just spawned and for an
//! executor re-attached after an agent restart), and signalling process groups.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::checkpoint::ProcessRef;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open executor log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start executor {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot watch executor pid {pid}: {source}")]
    Watch {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or `None`
/// if no such process exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The command name in field 2 may contain spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(") ")?;
    // After the comm: state is field 3, so starttime (field 22) is the 20th from here.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

pub fn process_ref(pid: u32) -> Option<ProcessRef> {
    start_time(pid).map(|start_time| ProcessRef { pid, start_time })
}

/// Whether the process still exists and is the same one (zombies included: they still need
/// to be reaped and their exit noticed).
pub fn is_alive(process: &ProcessRef) -> bool {
    start_time(process.pid) == Some(process.start_time)
}

/// Whether `process` is gone or a zombie; a zombie that is our child is reaped on the way.
pub fn has_exited(process: &ProcessRef) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", process.pid)) else { return true };
    if parse_start_time(&stat) != Some(process.start_time) {
        return true;
    }
    let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
    if zombie && let Some(pid) = pid_of(process.pid) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
    }
    zombie
}

fn pid_of(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().and_then(Pid::from_raw)
}

/// A pidfd for `process` if it is still the process we know.
pub fn open_pidfd(process: &ProcessRef) -> Option<OwnedFd> {
    let fd = rustix::process::pidfd_open(pid_of(process.pid)?, PidfdFlags::empty()).ok()?;
    // Checked after opening: the pidfd pins the pid, so a matching start time now means the fd
    // refers to our process and not to a newcomer with a recycled pid.
    is_alive(process).then_some(fd)
}

/// An executor just started; its announcement is read from `stdout`.
pub struct SpawnedExecutor {
    pub process: ProcessRef,
    pub pidfd: OwnedFd,
    pub stdout: ChildStdout,
}

/// Starts `<executor> executor --spec <spec>` in a session of its own, so that signals meant
/// for the agent's terminal or process group (a ^C) never reach it and it outlives the agent.
pub fn spawn_executor(executor: &Path, spec: &Path, log: &Path) -> Result<SpawnedExecutor, ProcessError> {
    let stderr = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|source| ProcessError::Log { path: log.to_path_buf(), source })?;
    let mut command = Command::new(executor);
    command.arg("executor").arg("--spec").arg(spec).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_error = |source| ProcessError::Spawn { program: executor.to_path_buf(), source };
    let mut child = command.spawn().map_err(spawn_error)?;
    let pid = child.id();
    let stdout = child.stdout.take();
    // Dropping `child` neither kills nor reaps it: the pidfd watcher reaps it, the same way as
    // an executor re-attached after a restart.
    let watched = pid_of(pid)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
        .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).map_err(io::Error::from));
    let start = start_time(pid);
    match (watched, start, stdout) {
        (Ok(pidfd), Some(start_time), Some(stdout)) => {
            Ok(SpawnedExecutor { process: ProcessRef { pid, start_time }, pidfd, stdout })
        }
        (watched, _, _) => {
            let _ = child.kill();
            let _ = child.wait();
            let source = watched.err().unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound));
            Err(ProcessError::Watch { pid, source })
        }
    }
}

/// What the executor said on its stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// The task runs as this pid.
    Running(u32),
    /// The executor could not start the task (it also records this as its launch error).
    Error(String),
    /// Nothing usable arrived (timeout, EOF, garbage): the message says what happened.
    Silent(String),
}

pub fn parse_announce(line: &str) -> Announce {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(pid) = line.strip_prefix("running ") {
        return match pid.trim().parse::<u32>() {
            Ok(pid) if pid > 0 => Announce::Running(pid),
            _ => Announce::Silent(format!("the executor announced an invalid pid: {line:?}")),
        };
    }
    if let Some(message) = line.strip_prefix("error ") {
        return Announce::Error(message.to_owned());
    }
    if line.is_empty() {
        return Announce::Silent("the executor exited without announcing the task".to_owned());
    }
    Announce::Silent(format!("the executor announced something unexpected: {line:?}"))
}

/// Reads the executor's one line, waiting at most `timeout`.
pub async fn read_announce(stdout: ChildStdout, timeout: Duration) -> Announce {
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(stdout)) {
        Ok(pipe) => pipe,
        Err(e) => return Announce::Silent(format!("cannot read the executor's announcement: {e}")),
    };
    let mut line = String::new();
    // A line is at most a few hundred bytes; the cap keeps a broken executor from filling memory.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(pipe, 64 * 1024));
    match tokio::time::timeout(timeout, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => parse_announce(&line),
        Ok(Err(e)) => Announce::Silent(format!("cannot read the executor's announcement: {e}")),
        Err(_) => Announce::Silent(format!("the executor did not announce the task within {}s", timeout.as_secs())),
    }
}

/// Resolves once the process behind `pidfd` has exited, reaping it if it is our child.
pub async fn wait_exit(pidfd: OwnedFd) -> io::Result<()> {
    wait_child(pidfd).await.map(|_| ())
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// A pidfd for a child just spawned (not reaped yet, so `pid` is still that child).
pub fn child_pidfd(pid: u32) -> io::Result<OwnedFd> {
    let pid = pid_of(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(io::Error::from)
}

/// [`wait_exit`], also telling how the process ended when it is our child (`None` when it is
/// not: its parent reaps it and keeps the status).
pub async fn wait_child(pidfd: OwnedFd) -> io::Result<Option<ChildExit>> {
    // SAFETY: the AsyncFd owns the pidfd and it is neither closed nor replaced while registered.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }?;
    loop {
        let mut guard = fd.readable().await?;
        match rustix::process::waitid(
            WaitId::PidFd(fd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(status)) => {
                return Ok(Some(ChildExit { code: status.exit_status(), signal: status.terminating_signal() }));
            }
            // Not our child (re-attached after a restart): its parent reaps it; readable means gone.
            Err(rustix::io::Errno::CHILD) => return Ok(None),
            Ok(None) => guard.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The oldest child of `pid` (the executor's only child is its task), from
/// /proc/<pid>/task/<pid>/children.
pub fn first_child(pid: u32) -> Option<ProcessRef> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()).find_map(process_ref)
}

/// Signals the process group led by `leader` (a task leads its own session and group). If the
/// leader's pid now belongs to another process, nothing is sent: the kernel does not reuse a
/// pid while a group of that id exists, so a live stranger there means our group is gone.
pub fn signal_group(leader: &ProcessRef, signal: Signal) -> bool {
    if let Some(start) = start_time(leader.pid)
        && start != leader.start_time
    {
        return false;
    }
    let Some(pid) = pid_of(leader.pid) else { return false };
    rustix::process::kill_process_group(pid, signal).is_ok()
}

/// Whether any process of the group led by `leader` is left.
pub fn group_exists(leader: &ProcessRef) -> bool {
    if let Some(start) = start_time(leader.pid)
        && start != leader.start_time
    {
        return false;
    }
    pid_of(leader.pid).is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

/// SIGKILLs `process` if it is still the one we know.
pub fn kill_process(process: &ProcessRef) {
    if let Some(fd) = open_pidfd(process) {
        let _ = rustix::process::pidfd_send_signal(&fd, Signal::KILL);
    }
}

/// Appends the agent's own note about a task to a sandbox log (the operator reads it there).
pub fn append_note(path: &Path, note: &str) {
    use std::io::Write;
    if let Ok(mut f) = OpenOptions::new().append(true).create(true).open(path) {
        let _ = writeln!(f, "atoll agent: {note}");
    }
}

/// Processes a dead agent of `data_dir` left that no checkpoint names, found in /proc:
/// executors for sandboxes under `sandboxes` (`… executor --spec <sandboxes>/…`), and the
/// agent's own forks that had not yet become an executor when it died (their command line is
/// still the agent's, `… agent … --data-dir <data_dir>`). This process is never one of them.
pub fn strays_of(data_dir: &Path, sandboxes: &Path) -> Vec<ProcessRef> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let own = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let path = |arg: &[u8]| Path::new(std::ffi::OsStr::from_bytes(arg)).to_path_buf();
            let executor =
                args.windows(3).any(|w| w[0] == b"executor" && w[1] == b"--spec" && path(w[2]).starts_with(sandboxes));
            let agent_fork = args.contains(&&b"agent"[..])
                && !args.contains(&&b"--cleanup"[..])
                && args.windows(2).any(|w| w[0] == b"--data-dir" && path(w[1]) == data_dir);
            executor || agent_fork
        })
        .filter_map(process_ref)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_skips_odd_command_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(123456));
        assert_eq!(parse_start_time("garbage"), None);
        let me = process_ref(std::process::id()).expect("own process");
        assert!(is_alive(&me));
        assert!(!is_alive(&ProcessRef { start_time: me.start_time + 1, ..me }));
    }

    #[test]
    fn announcements() {
        assert_eq!(parse_announce("running 123\n"), Announce::Running(123));
        assert_eq!(
            parse_announce("error failed to execute `x`: gone\n"),
            Announce::Error("failed to execute `x`: gone".into())
        );
        assert!(matches!(parse_announce(""), Announce::Silent(_)));
        assert!(matches!(parse_announce("running x"), Announce::Silent(_)));
        assert!(matches!(parse_announce("running 0"), Announce::Silent(_)));
        assert!(matches!(parse_announce("hello"), Announce::Silent(_)));
    }

    #[tokio::test]
    async fn pidfd_wait_reaps_a_child_and_group_signals_reach_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // `sh` stands in for the executor: it prints an announcement and waits.
        let script = dir.path().join("fake-executor");
        std::fs::write(&script, "#!/bin/sh\necho \"running $$\"\nexec sleep 30\n").expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let spawned = spawn_executor(&script, Path::new("spec"), &dir.path().join("log")).expect("spawn");
        let process = spawned.process;
        let announce = read_announce(spawned.stdout, Duration::from_secs(10)).await;
        assert_eq!(announce, Announce::Running(process.pid));
        assert!(is_alive(&process));
        // The executor leads its own group (setsid).
        assert!(group_exists(&process));
        assert!(signal_group(&process, Signal::TERM));
        tokio::time::timeout(Duration::from_secs(20), wait_exit(spawned.pidfd))
            .await
            .expect("exit in time")
            .expect("wait");
        assert!(!is_alive(&process), "reaped, so no zombie is left");
        assert!(has_exited(&process));

        // Without a pidfd watcher: a zombie child counts as exited and gets reaped.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let sleeper = process_ref(child.id()).expect("sleep runs");
        assert!(!has_exited(&sleeper));
        child.kill().expect("kill");
        let start = std::time::Instant::now();
        while !has_exited(&sleeper) {
            assert!(start.elapsed() < Duration::from_secs(10), "sleep never exited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!is_alive(&sleeper), "the zombie was reaped");
        // Already reaped above: this only tells std (and clippy) the child is dealt with.
        assert!(child.wait().is_err(), "ECHILD");
    }
    #[test]
    fn executors_are_found_by_their_spec_under_the_sandboxes_and_killed_with_their_task() {
        let dir = tempfile::tempdir().unwrap();
        let sandboxes = dir.path().join("sandboxes");
        let spec = sandboxes.join("f/t/run/launch.json");
        // Stands in for an executor: the same command-line shape, and a task leading its own
        // session, as the executor starts it.
        let mut fake = Command::new("python3")
            .args([
                "-c",
                "import subprocess, time; subprocess.Popen(['sleep', '30'], start_new_session=True); time.sleep(30)",
                "executor",
                "--spec",
            ])
            .arg(&spec)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let task = loop {
            // Once it leads its own process group (it calls setsid right after the fork) and
            // has exec'd: until then the fork still carries the fake executor's command line.
            let execd = |task: &ProcessRef| {
                std::fs::read(format!("/proc/{}/cmdline", task.pid)).is_ok_and(|cmdline| cmdline.starts_with(b"sleep"))
            };
            if let Some(task) = first_child(fake.id()).filter(group_exists).filter(execd) {
                break task;
            }
            assert!(std::time::Instant::now() < deadline, "the fake executor started no task");
            std::thread::sleep(Duration::from_millis(20));
        };
        let found = strays_of(dir.path(), &sandboxes);
        assert_eq!(found.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![fake.id()]);
        assert!(strays_of(&dir.path().join("elsewhere"), &dir.path().join("elsewhere/sandboxes")).is_empty());

        assert!(signal_group(&task, Signal::KILL));
        kill_process(&found[0]);
        let _ = fake.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while group_exists(&task) {
            assert!(std::time::Instant::now() < deadline, "the task outlived the kill");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
