//! Health checks (Mesos semantics): a pure verdict state machine, [`HealthState`], that the
//! actor owns per checked task, and a thin async layer ([`run_checks`], [`Probe`]) that runs one
//! probe after another and hands every result back to the actor as a message.
//!
//! - HTTP: `GET http://<host>:<port><path>`; a 200-399 answer is healthy.
//! - TCP: a connection to `<host>:<port>` is accepted.
//! - COMMAND: the command runs like the task itself (its environment, its sandbox, its cgroup;
//!   started by [`executor::start_process`]) and exits 0.
//!
//! A probe that takes longer than the check's timeout is a failure (a command probe's whole
//! process group is killed). Where HTTP and TCP probes connect is decided by [`probe_host`] alone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use atoll_proto::model::{CommandInfo, HealthCheck};
use rustix::process::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::checkpoint::TaskCheckpoint;
use crate::executor::{self, LaunchSpec};
use crate::launch::command_argv;
use crate::process::{self, ChildExit};

/// What the verdict logic concluded from one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first verdict, or a different one than the last: report it.
    Changed(bool),
    /// The check failed `failures` times in a row: kill the task. `newly_unhealthy` says whether
    /// the unhealthy verdict was not reported yet (it is reported before the kill).
    Kill { failures: u32, newly_unhealthy: bool },
}

/// One task's health verdict, fed one probe result at a time (Mesos's health checker):
/// failures within the grace period after the start are ignored until the first success; the
/// first counted result and every change of the verdict is reported; `max_failures` failures in
/// a row (0: never) kill the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    grace: Duration,
    max_failures: u32,
    failures: u32,
    verdict: Option<bool>,
    /// A result was counted (so the grace period no longer applies).
    counting: bool,
    killed: bool,
}

impl HealthState {
    pub fn new(grace: Duration, max_failures: u32) -> HealthState {
        HealthState { grace, max_failures, failures: 0, verdict: None, counting: false, killed: false }
    }

    pub fn for_check(check: &HealthCheck) -> HealthState {
        HealthState::new(secs(check.grace_period_secs), check.consecutive_failures)
    }

    /// Resumes with a verdict reported before (an agent restart): the failure count starts over,
    /// and a known verdict means the grace period is over.
    pub fn resume(mut self, verdict: Option<bool>) -> HealthState {
        self.verdict = verdict;
        self.counting = verdict.is_some();
        self
    }

    /// The latest reported verdict.
    pub fn verdict(&self) -> Option<bool> {
        self.verdict
    }

    /// Failures in a row that counted.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Takes one probe result, `since_start` after the task started.
    pub fn observe(&mut self, healthy: bool, since_start: Duration) -> Option<Verdict> {
        if self.killed {
            return None;
        }
        if healthy {
            self.counting = true;
            self.failures = 0;
            return self.change(true);
        }
        if !self.counting && since_start < self.grace {
            return None;
        }
        self.counting = true;
        self.failures = self.failures.saturating_add(1);
        if self.max_failures > 0 && self.failures >= self.max_failures {
            self.killed = true;
            let newly_unhealthy = self.verdict != Some(false);
            self.verdict = Some(false);
            return Some(Verdict::Kill { failures: self.failures, newly_unhealthy });
        }
        self.change(false)
    }

    fn change(&mut self, healthy: bool) -> Option<Verdict> {
        if self.verdict == Some(healthy) {
            return None;
        }
        self.verdict = Some(healthy);
        Some(Verdict::Changed(healthy))
    }
}

/// Seconds from the model as a duration; the model validates them (finite, >= 0), and whatever
/// slips through saturates rather than panics.
pub fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

/// Where HTTP and TCP probes connect for `task`: a host-network task's ports are the host's and
/// loopback reaches them; a container task is probed at its own address, which the agent's
/// namespace reaches through the bridge and the task's veth. This is the one place that decides.
pub fn probe_host(task: &TaskCheckpoint) -> IpAddr {
    match &task.network {
        Some(network) => network.ip,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// How one probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Healthy,
    /// The probe ran and said no (refused, an error status, a non-zero exit).
    Unhealthy,
    /// The probe did not finish within the timeout.
    Timeout,
    /// The probe could not be run at all (the command could not be started).
    Error,
}

impl Outcome {
    pub fn is_healthy(self) -> bool {
        self == Outcome::Healthy
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Healthy => "healthy",
            Outcome::Unhealthy => "unhealthy",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// A probe's outcome with a one-line explanation for logs and status messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub outcome: Outcome,
    pub detail: String,
}

impl ProbeResult {
    fn new(outcome: Outcome, detail: impl Into<String>) -> ProbeResult {
        ProbeResult { outcome, detail: detail.into() }
    }
}

/// One check, ready to run again and again.
#[derive(Debug, Clone)]
pub enum Probe {
    Http {
        addr: SocketAddr,
        path: String,
    },
    Tcp {
        addr: SocketAddr,
    },
    /// The spec's `argv`, `env`, `cwd` and `cgroup_procs` are the probe's; output goes to
    /// `stdout`/`stderr` (usually /dev/null).
    Command(Box<LaunchSpec>),
}

/// A COMMAND check's process: the check's command (shell or argv, like the task's) with the
/// task's environment plus the check's own variables, in the task's sandbox and cgroups.
pub fn command_spec(task: &LaunchSpec, command: &CommandInfo) -> LaunchSpec {
    let mut env = task.env.clone();
    for (name, value) in &command.environment {
        match env.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((name.clone(), value.clone())),
        }
    }
    LaunchSpec {
        argv: command_argv(command),
        env,
        cwd: task.cwd.clone(),
        stdout: "/dev/null".into(),
        stderr: "/dev/null".into(),
        cgroup_procs: task.cgroup_procs.clone(),
        // Probes leave no exit record.
        exit_file: Default::default(),
        // In the task's network (and its resolv.conf), like the task.
        netns: task.netns.clone(),
        resolv_conf: task.resolv_conf.clone(),
    }
}

impl Probe {
    /// Runs the probe once, bounded by `timeout`.
    pub async fn run(&self, timeout: Duration) -> ProbeResult {
        let bounded = |result: Result<ProbeResult, tokio::time::error::Elapsed>| {
            result.unwrap_or_else(|_| {
                ProbeResult::new(Outcome::Timeout, format!("no answer within {}", humantime::format_duration(timeout)))
            })
        };
        match self {
            Probe::Http { addr, path } => bounded(tokio::time::timeout(timeout, http_probe(*addr, path)).await),
            Probe::Tcp { addr } => bounded(tokio::time::timeout(timeout, tcp_probe(*addr)).await),
            Probe::Command(spec) => command_probe(spec, timeout).await,
        }
    }
}

async fn tcp_probe(addr: SocketAddr) -> ProbeResult {
    match TcpStream::connect(addr).await {
        Ok(_) => ProbeResult::new(Outcome::Healthy, format!("connected to {addr}")),
        Err(e) => ProbeResult::new(Outcome::Unhealthy, format!("cannot connect to {addr}: {e}")),
    }
}

/// The status line is all that matters; a longer first line than this is not HTTP.
const MAX_STATUS_LINE: usize = 8 * 1024;

async fn http_probe(addr: SocketAddr, path: &str) -> ProbeResult {
    if path.chars().any(|c| c.is_control()) {
        return ProbeResult::new(Outcome::Error, format!("invalid path {path:?}"));
    }
    let path = path.replace(' ', "%20");
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => return ProbeResult::new(Outcome::Unhealthy, format!("cannot connect to {addr}: {e}")),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: atoll-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return ProbeResult::new(Outcome::Unhealthy, format!("GET {path} on {addr}: {e}"));
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let line = loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            break String::from_utf8_lossy(&head[..end]).into_owned();
        }
        if head.len() > MAX_STATUS_LINE {
            return ProbeResult::new(Outcome::Unhealthy, format!("GET {path} on {addr}: no HTTP status line"));
        }
        match stream.read(&mut buf).await {
            Ok(0) => {
                return ProbeResult::new(
                    Outcome::Unhealthy,
                    format!("GET {path} on {addr}: the connection closed before a status line"),
                );
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return ProbeResult::new(Outcome::Unhealthy, format!("GET {path} on {addr}: {e}")),
        }
    };
    match parse_status(&line) {
        Some(code) if (200..400).contains(&code) => {
            ProbeResult::new(Outcome::Healthy, format!("GET {path} on {addr}: {code}"))
        }
        Some(code) => ProbeResult::new(Outcome::Unhealthy, format!("GET {path} on {addr}: {code}")),
        None => ProbeResult::new(Outcome::Unhealthy, format!("GET {path} on {addr}: not an HTTP status line {line:?}")),
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// A probe process not yet reaped: dropping it (a timeout, or the checker being stopped) kills
/// its whole process group and reaps it off the caller.
struct ProbeProcess {
    pid: u32,
    leader: Option<crate::checkpoint::ProcessRef>,
    reaped: bool,
}

impl Drop for ProbeProcess {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Still our unreaped child, so its pid (and group id) cannot have been reused.
        if let Some(leader) = &self.leader {
            process::signal_group(leader, Signal::KILL);
        }
        let pid = self.pid;
        let reap = move || {
            if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(reap)),
            Err(_) => drop(std::thread::spawn(reap)),
        }
    }
}

async fn command_probe(spec: &LaunchSpec, timeout: Duration) -> ProbeResult {
    let command = match spec.argv.as_slice() {
        [sh, c, line] if sh == "/bin/sh" && c == "-c" => line.clone(),
        argv => argv.join(" "),
    };
    let started = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || executor::start_process(&spec)).await
    };
    let child = match started {
        Ok(Ok(child)) => child,
        Ok(Err(e)) => return ProbeResult::new(Outcome::Error, format!("`{command}`: {e}")),
        Err(e) => return ProbeResult::new(Outcome::Error, format!("`{command}`: {e}")),
    };
    let pid = child.id();
    // Dropping a std Child neither kills nor reaps it; the guard and the pidfd do.
    drop(child);
    let mut guard = ProbeProcess { pid, leader: process::process_ref(pid), reaped: false };
    let pidfd = match process::child_pidfd(pid) {
        Ok(fd) => fd,
        Err(e) => return ProbeResult::new(Outcome::Error, format!("`{command}`: cannot watch pid {pid}: {e}")),
    };
    match tokio::time::timeout(timeout, process::wait_child(pidfd)).await {
        Ok(Ok(exit)) => {
            guard.reaped = true;
            match exit {
                Some(ChildExit { code: Some(0), .. }) => {
                    ProbeResult::new(Outcome::Healthy, format!("`{command}` exited with status 0"))
                }
                Some(ChildExit { code: Some(code), .. }) => {
                    ProbeResult::new(Outcome::Unhealthy, format!("`{command}` exited with status {code}"))
                }
                Some(ChildExit { signal: Some(signal), .. }) => ProbeResult::new(
                    Outcome::Unhealthy,
                    format!("`{command}` terminated by {}", crate::launch::signal_name(signal)),
                ),
                _ => ProbeResult::new(Outcome::Unhealthy, format!("`{command}` ended without an exit status")),
            }
        }
        Ok(Err(e)) => ProbeResult::new(Outcome::Error, format!("`{command}`: cannot wait for pid {pid}: {e}")),
        Err(_) => {
            drop(guard);
            ProbeResult::new(
                Outcome::Timeout,
                format!("`{command}` did not finish within {}", humantime::format_duration(timeout)),
            )
        }
    }
}

/// When checks run: the first after `first_delay`, then `interval` after each one finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub first_delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Schedule {
    /// `check`'s schedule for a task that started `since_start` ago.
    pub fn for_check(check: &HealthCheck, since_start: Duration) -> Schedule {
        Schedule {
            first_delay: secs(check.delay_secs).saturating_sub(since_start),
            interval: secs(check.interval_secs),
            timeout: secs(check.timeout_secs),
        }
    }
}

/// Runs `probe` on `schedule` until `report` returns false (its receiver is gone) or the future
/// is dropped (the task ended or is being killed).
pub async fn run_checks(probe: Probe, schedule: Schedule, mut report: impl FnMut(ProbeResult) -> bool) {
    tokio::time::sleep(schedule.first_delay).await;
    loop {
        let result = probe.run(schedule.timeout).await;
        if !report(result) {
            return;
        }
        tokio::time::sleep(schedule.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn first_result_and_changes_only_are_reported() {
        let mut h = HealthState::new(Duration::ZERO, 0);
        assert_eq!(h.observe(true, S), Some(Verdict::Changed(true)));
        assert_eq!(h.observe(true, 2 * S), None);
        assert_eq!(h.observe(false, 3 * S), Some(Verdict::Changed(false)));
        assert_eq!(h.observe(false, 4 * S), None);
        assert_eq!(h.consecutive_failures(), 2);
        assert_eq!(h.observe(true, 5 * S), Some(Verdict::Changed(true)));
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.verdict(), Some(true));

        let mut h = HealthState::new(Duration::ZERO, 0);
        assert_eq!(h.observe(false, S), Some(Verdict::Changed(false)), "a first failure is a verdict too");
        for i in 0..100 {
            assert_eq!(h.observe(false, S * i), None, "0 consecutive failures never kills");
        }
    }

    #[test]
    fn failures_in_the_grace_period_are_ignored_until_the_first_success() {
        let mut h = HealthState::new(10 * S, 2);
        for t in 0..10 {
            assert_eq!(h.observe(false, S * t), None, "ignored at {t}s");
        }
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.verdict(), None);
        assert_eq!(h.observe(true, 10 * S - Duration::from_millis(1)), Some(Verdict::Changed(true)));
        // The first success ends the grace period early.
        assert_eq!(h.observe(false, 10 * S), Some(Verdict::Changed(false)));
        assert_eq!(h.observe(false, 10 * S), Some(Verdict::Kill { failures: 2, newly_unhealthy: false }));

        let mut h = HealthState::new(10 * S, 2);
        assert_eq!(h.observe(false, 9 * S), None);
        assert_eq!(h.observe(false, 10 * S), Some(Verdict::Changed(false)), "counted once the grace is over");
        assert_eq!(h.observe(false, 11 * S), Some(Verdict::Kill { failures: 2, newly_unhealthy: false }));
    }

    #[test]
    fn consecutive_failures_kill_once_and_successes_reset_the_count() {
        let mut h = HealthState::new(Duration::ZERO, 3);
        assert_eq!(h.observe(true, S), Some(Verdict::Changed(true)));
        assert_eq!(h.observe(false, S), Some(Verdict::Changed(false)));
        assert_eq!(h.observe(false, S), None);
        assert_eq!(h.observe(true, S), Some(Verdict::Changed(true)));
        assert_eq!(h.observe(false, S), Some(Verdict::Changed(false)));
        assert_eq!(h.observe(false, S), None);
        assert_eq!(h.observe(false, S), Some(Verdict::Kill { failures: 3, newly_unhealthy: false }));
        assert_eq!(h.observe(false, S), None, "killed once");
        assert_eq!(h.observe(true, S), None, "nothing after the kill");

        let mut h = HealthState::new(Duration::ZERO, 1);
        assert_eq!(h.observe(false, S), Some(Verdict::Kill { failures: 1, newly_unhealthy: true }));
        assert_eq!(h.verdict(), Some(false));
    }

    #[test]
    fn resuming_keeps_the_verdict_and_skips_the_grace_period() {
        let mut h = HealthState::new(60 * S, 2).resume(Some(true));
        assert_eq!(h.observe(true, S), None, "no news");
        assert_eq!(h.observe(false, S), Some(Verdict::Changed(false)), "no grace once a verdict exists");
        let mut h = HealthState::new(60 * S, 2).resume(None);
        assert_eq!(h.observe(false, S), None, "still in the grace period");
    }

    #[test]
    fn schedules_and_durations() {
        let mut check = HealthCheck::new(atoll_proto::model::HealthCheckKind::Tcp { port: 1 });
        check.delay_secs = 5.0;
        check.interval_secs = 0.25;
        let s = Schedule::for_check(&check, 2 * S);
        assert_eq!(s.first_delay, 3 * S);
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(Schedule::for_check(&check, 10 * S).first_delay, Duration::ZERO);
        assert_eq!(secs(1e300), Duration::MAX);
        assert_eq!(secs(-1.0), Duration::ZERO);
        assert_eq!(secs(f64::NAN), Duration::ZERO);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 302 Found"), Some(302));
        assert_eq!(parse_status("HTTP/1.1 204"), Some(204));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1 20 OK"), None);
    }

    /// Answers every connection with `status` (or never, for `None`).
    async fn server(status: Option<u16>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    match status {
                        Some(code) => {
                            let response = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                            let _ = conn.write_all(response.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        addr
    }

    fn free_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn http_and_tcp_probes() {
        let t = Duration::from_secs(5);
        for (status, outcome) in [
            (200, Outcome::Healthy),
            (302, Outcome::Healthy),
            (399, Outcome::Healthy),
            (404, Outcome::Unhealthy),
            (503, Outcome::Unhealthy),
        ] {
            let addr = server(Some(status)).await;
            let result = Probe::Http { addr, path: "/health?x=1".into() }.run(t).await;
            assert_eq!(result.outcome, outcome, "{status}: {result:?}");
        }
        let silent = server(None).await;
        let result = Probe::Http { addr: silent, path: "/".into() }.run(Duration::from_millis(200)).await;
        assert_eq!(result.outcome, Outcome::Timeout, "{result:?}");
        let closed = free_port();
        let result = Probe::Http { addr: closed, path: "/".into() }.run(t).await;
        assert_eq!(result.outcome, Outcome::Unhealthy, "{result:?}");
        let result = Probe::Http { addr: silent, path: "/\r\nX: y".into() }.run(t).await;
        assert_eq!(result.outcome, Outcome::Error, "{result:?}");

        assert_eq!(Probe::Tcp { addr: silent }.run(t).await.outcome, Outcome::Healthy);
        assert_eq!(Probe::Tcp { addr: closed }.run(t).await.outcome, Outcome::Unhealthy);
    }

    #[tokio::test]
    async fn command_probes_run_like_the_task_and_are_killed_on_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = LaunchSpec {
            argv: vec!["sleep".into(), "300".into()],
            env: vec![("FOO".into(), "task".into()), ("BAR".into(), "task".into())],
            cwd: dir.path().to_path_buf(),
            stdout: dir.path().join("stdout"),
            stderr: dir.path().join("stderr"),
            cgroup_procs: Vec::new(),
            exit_file: dir.path().join("exit.json"),
            netns: None,
            resolv_conf: None,
        };
        let mut command = CommandInfo::shell(r#"test -e ok && test "$FOO" = task && test "$BAR" = check"#);
        command.environment = vec![("BAR".into(), "check".into())];
        let probe = Probe::Command(Box::new(command_spec(&task, &command)));
        let t = Duration::from_secs(10);
        let result = probe.run(t).await;
        assert_eq!(result.outcome, Outcome::Unhealthy, "{result:?}");
        assert!(result.detail.ends_with("exited with status 1"), "{result:?}");
        std::fs::write(dir.path().join("ok"), "").expect("touch");
        assert_eq!(probe.run(t).await.outcome, Outcome::Healthy);

        let argv = CommandInfo::argv(vec!["/bin/false".into()]);
        assert_eq!(Probe::Command(Box::new(command_spec(&task, &argv))).run(t).await.outcome, Outcome::Unhealthy);
        let missing = CommandInfo::argv(vec!["/nonexistent/atoll-probe".into()]);
        assert_eq!(Probe::Command(Box::new(command_spec(&task, &missing))).run(t).await.outcome, Outcome::Error);

        // A slow probe and what it started die with it.
        let pidfile = dir.path().join("pids");
        let slow =
            CommandInfo::shell(format!("sleep 300 & echo $! > {0}.tmp; mv {0}.tmp {0}; wait", pidfile.display()));
        let result = Probe::Command(Box::new(command_spec(&task, &slow))).run(Duration::from_secs(2)).await;
        assert_eq!(result.outcome, Outcome::Timeout, "{result:?}");
        let pid: u32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        };
        let start = std::time::Instant::now();
        while alive(pid) {
            assert!(start.elapsed() < Duration::from_secs(10), "the probe's child {pid} survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
