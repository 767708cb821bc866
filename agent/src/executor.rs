//! The per-task executor: the small supervisor process (`atoll executor --spec FILE`) that the agent
//! starts for every task. It launches the task (own session, joined to its cgroups, stdio into the
//! sandbox's files), tells the agent `running <pid>` or `error <message>` on one stdout line, waits
//! for the task and leaves an [`ExitRecord`] on disk. It outlives agent restarts, so it owns the
//! task's exit status; killing the task is the agent's job (through the cgroup).
//!
//! Synchronous std only, and deliberately small: whatever can go wrong here loses a task's status.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What to run; written by the agent, read by the executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// argv[0] is the program, already resolved by the agent (shell commands arrive as
    /// `["/bin/sh", "-c", line]`).
    pub argv: Vec<String>,
    /// The task's complete environment; only PATH is passed through from the executor, and only
    /// when absent here.
    pub env: Vec<(String, String)>,
    /// Working directory: the task's sandbox.
    pub cwd: PathBuf,
    /// Files the task's stdout/stderr are appended to (created if missing).
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// `cgroup.procs` files the task process joins before exec; empty without cgroups.
    pub cgroup_procs: Vec<PathBuf>,
    /// Where the [`ExitRecord`] is written.
    pub exit_file: PathBuf,
    /// A network namespace (`/run/netns/…`) the task joins before exec (container networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// With `netns`: a file bind-mounted over `/etc/resolv.conf` in a mount namespace of the
    /// task's own (its mounts are slaves of the host's, so nothing it mounts leaks out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
}

/// How the task ended, or why it never started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub launch_error: Option<String>,
    pub finished_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot read launch spec {path}: {}", os_message(source))]
    SpecRead { path: PathBuf, source: io::Error },
    #[error("invalid launch spec {path}: {source}")]
    SpecParse { path: PathBuf, source: serde_json::Error },
    #[error("empty argv: nothing to execute")]
    EmptyArgv,
    #[error("cannot use sandbox {path}: {}", os_message(source))]
    Sandbox { path: PathBuf, source: io::Error },
    #[error("cannot open {stream} file {path}: {}", os_message(source))]
    OpenOutput { stream: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot open {path}: {}", os_message(source))]
    OpenCgroup { path: PathBuf, source: io::Error },
    #[error("cannot create a pipe: {}", os_message(source))]
    Pipe { source: io::Error },
    #[error("failed to join cgroup {path}: {}", os_message(source))]
    JoinCgroup { path: PathBuf, source: io::Error },
    #[error("cannot open network namespace {path}: {}", os_message(source))]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("failed to join network namespace {path}: {}", os_message(source))]
    JoinNetns { path: PathBuf, source: io::Error },
    #[error("failed to set up the task's mount namespace ({step}): {}", os_message(source))]
    MountNamespace { step: &'static str, source: io::Error },
    #[error("failed to bind-mount {path} over /etc/resolv.conf: {}", os_message(source))]
    ResolvConf { path: PathBuf, source: io::Error },
    #[error("failed to execute `{program}`: {}", os_message(source))]
    Exec { program: String, source: io::Error },
}

/// `io::Error`'s Display appends " (os error N)"; task logs and the agent want just the reason.
fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

impl LaunchSpec {
    pub fn load(path: &Path) -> Result<LaunchSpec, ExecutorError> {
        let bytes = fs::read(path).map_err(|source| ExecutorError::SpecRead { path: path.to_path_buf(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| ExecutorError::SpecParse { path: path.to_path_buf(), source })
    }

    /// Writes the spec atomically, for the agent to hand to `atoll executor --spec`.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        write_json_atomic(path, self)
    }
}

/// The exit record at `path`; `Ok(None)` while the task has not finished (no file yet).
pub fn read_exit_record(path: &Path) -> io::Result<Option<ExitRecord>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(ErrorKind::InvalidData, format!("invalid exit record {}: {e}", path.display()))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write_exit_record(path: &Path, record: &ExitRecord) -> io::Result<()> {
    write_json_atomic(path, record)
}

/// Temp file in the same directory, fsync, rename, fsync the directory: a reader sees either no
/// file or a complete one, also after a power cut.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, format!("{} has no file name", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".{}.tmp.{}", file_name.to_string_lossy(), std::process::id()));
    let json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Entry point of `atoll executor --spec FILE`; returns the process exit code: 0 once an exit
/// record is written (whatever happened to the task), 1 if it could not be, 2 for an unusable spec.
pub fn main_with_spec(spec_path: &Path) -> i32 {
    // The agent stops tasks through their cgroup; a signal aimed at the executor (a terminal's
    // ^C, the agent's session going away, a closed pipe) must not cost us the exit status.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: installing SIG_IGN has no preconditions; no handler code runs.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let mut announce = DetachingStdout;
    let spec = match LaunchSpec::load(spec_path) {
        Ok(spec) => spec,
        Err(e) => {
            announce_line(&mut announce, &format!("error {e}"));
            log(&format!("atoll executor: {e}"));
            return 2;
        }
    };
    let record = match run(&spec, &mut announce) {
        Ok(record) => record,
        Err(e) => {
            log(&format!("atoll executor: waiting for the task failed: {e}"));
            return 1;
        }
    };
    match write_exit_record(&spec.exit_file, &record) {
        Ok(()) => 0,
        Err(e) => {
            log(&format!("atoll executor: cannot write exit record {}: {e}", spec.exit_file.display()));
            1
        }
    }
}

/// `eprintln!` panics when stderr is gone; the executor must not die over a log line.
fn log(message: &str) {
    let _ = writeln!(io::stderr(), "{message}");
}

/// The executor's stdout carries exactly one line for the agent. Flushing it also points fd 1 at
/// /dev/null: the agent then sees EOF, and if it has gone away nothing here can hit EPIPE later.
struct DetachingStdout;

impl Write for DetachingStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = io::stdout().flush();
        if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
            // SAFETY: dup2 onto fd 1 only replaces our stdout; `null` stays valid for the call.
            unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
        }
        flushed
    }
}

fn announce_line(announce: &mut dyn Write, line: &str) {
    // One line, whatever the message contains, so the agent can read exactly one.
    let line = line.replace(['\n', '\r'], " ");
    // The agent may be gone; the task still runs and its record still matters.
    let _ = announce.write_all(format!("{line}\n").as_bytes());
    let _ = announce.flush();
}

/// Launches the task, announces the outcome on `announce` (one line, then a flush), waits for the
/// task and returns its exit record. A launch failure is an `Ok` record with `launch_error`; `Err`
/// only if waiting for the started task failed.
pub fn run(spec: &LaunchSpec, announce: &mut dyn Write) -> io::Result<ExitRecord> {
    let mut child = match launch(spec) {
        Ok(child) => child,
        Err(e) => {
            let message = e.to_string();
            announce_line(announce, &format!("error {message}"));
            return Ok(ExitRecord {
                pid: None,
                exit_code: None,
                signal: None,
                launch_error: Some(message),
                finished_at_ms: now_ms(),
            });
        }
    };
    let pid = child.id();
    announce_line(announce, &format!("running {pid}"));
    // std's wait retries on EINTR.
    let status = child.wait()?;
    Ok(ExitRecord {
        pid: Some(pid),
        exit_code: status.code(),
        signal: status.signal(),
        launch_error: None,
        finished_at_ms: now_ms(),
    })
}

fn open_output(stream: &'static str, path: &Path) -> Result<File, ExecutorError> {
    OpenOptions::new().append(true).create(true).open(path).map_err(|source| ExecutorError::OpenOutput {
        stream,
        path: path.to_path_buf(),
        source,
    })
}

/// Starts `spec.argv` exactly as a task is started (own session and process group, only
/// `spec.env`, in `spec.cwd`, output appended to `spec.stdout`/`spec.stderr`, joined to
/// `spec.cgroup_procs` before exec) and returns the child without waiting; `spec.exit_file` is
/// not used. The agent runs COMMAND health checks this way.
pub fn start_process(spec: &LaunchSpec) -> Result<Child, ExecutorError> {
    launch(spec)
}

fn launch(spec: &LaunchSpec) -> Result<Child, ExecutorError> {
    let (program, args) = spec.argv.split_first().ok_or(ExecutorError::EmptyArgv)?;
    // Checked here because a bad cwd would otherwise surface as an ENOENT blamed on the program.
    match fs::metadata(&spec.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ExecutorError::Sandbox {
                path: spec.cwd.clone(),
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        Err(source) => return Err(ExecutorError::Sandbox { path: spec.cwd.clone(), source }),
    }
    // Everything that can fail is opened before fork: between fork and exec only async-signal-safe
    // calls are allowed, so the child just writes to descriptors prepared here.
    let stdout = open_output("stdout", &spec.stdout)?;
    let stderr = open_output("stderr", &spec.stderr)?;
    let cgroups = spec
        .cgroup_procs
        .iter()
        .map(|path| {
            OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| ExecutorError::OpenCgroup { path: path.clone(), source })
        })
        .collect::<Result<Vec<File>, _>>()?;
    let network = match &spec.netns {
        Some(path) => Some(NetworkJoin {
            netns: File::open(path).map_err(|source| ExecutorError::OpenNetns { path: path.clone(), source })?,
            resolv_conf: spec.resolv_conf.as_deref().map(c_path).transpose()?,
        }),
        None => None,
    };
    // std only reports the child's errno; this pipe says which step (if any) failed: the index of
    // the cgroup whose write failed, or one of the `FAILED_*` codes.
    let (mut failed_cgroup_r, failed_cgroup_w) = io::pipe().map_err(|source| ExecutorError::Pipe { source })?;

    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if !spec.env.iter().any(|(k, _)| k == "PATH")
        && let Some(path) = std::env::var_os("PATH")
    {
        cmd.env("PATH", path);
    }
    let cgroup_fds: Vec<RawFd> = cgroups.iter().map(AsRawFd::as_raw_fd).collect();
    let report_fd = failed_cgroup_w.as_raw_fd();
    let join = network.as_ref().map(|n| PreparedJoin {
        netns_fd: n.netns.as_raw_fd(),
        resolv_conf: n.resolv_conf.as_ref().map(|c| c.as_ptr()),
    });
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system calls
    // (setsid, sigaction, write, setns, unshare, mount) on descriptors and memory prepared before
    // the fork; it does not allocate or lock.
    unsafe {
        cmd.pre_exec(move || prepare_task_process(&cgroup_fds, report_fd, join.as_ref()));
    }
    let spawned = cmd.spawn();
    // Close our copies (the Command holds the stdio files) so the task holds the only ones.
    drop(cmd);
    drop(failed_cgroup_w);
    drop(cgroups);
    drop(network);
    spawned.map_err(|source| {
        let mut index = [0u8; 1];
        match failed_cgroup_r.read(&mut index) {
            Ok(1) => match index[0] {
                FAILED_SETNS => ExecutorError::JoinNetns { path: spec.netns.clone().unwrap_or_default(), source },
                FAILED_UNSHARE => ExecutorError::MountNamespace { step: "unshare", source },
                FAILED_MAKE_SLAVE => ExecutorError::MountNamespace { step: "making mounts private", source },
                FAILED_RESOLV_CONF => {
                    ExecutorError::ResolvConf { path: spec.resolv_conf.clone().unwrap_or_default(), source }
                }
                i => match spec.cgroup_procs.get(usize::from(i)) {
                    Some(path) => ExecutorError::JoinCgroup { path: path.clone(), source },
                    None => ExecutorError::JoinCgroup { path: PathBuf::from("cgroup.procs"), source },
                },
            },
            _ => ExecutorError::Exec { program: program.clone(), source },
        }
    })
}

/// What joining a container network needs, opened and converted before the fork.
struct NetworkJoin {
    netns: File,
    resolv_conf: Option<std::ffi::CString>,
}

/// Raw views of a [`NetworkJoin`] for the child (valid while the `NetworkJoin` lives, which
/// spans the spawn).
#[derive(Clone, Copy)]
struct PreparedJoin {
    netns_fd: RawFd,
    resolv_conf: Option<*const libc::c_char>,
}

// SAFETY: the pointer is only read in the forked child, while the CString it points into is alive.
unsafe impl Send for PreparedJoin {}
unsafe impl Sync for PreparedJoin {}

const FAILED_SETNS: u8 = 250;
const FAILED_UNSHARE: u8 = 251;
const FAILED_MAKE_SLAVE: u8 = 252;
const FAILED_RESOLV_CONF: u8 = 253;

fn c_path(path: &Path) -> Result<std::ffi::CString, ExecutorError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| ExecutorError::ResolvConf {
        path: path.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// Runs in the forked child before exec.
fn prepare_task_process(cgroup_fds: &[RawFd], report_fd: RawFd, join: Option<&PreparedJoin>) -> io::Result<()> {
    // SAFETY (whole body): plain system calls on valid descriptors and stack memory.
    unsafe {
        // Own session and process group: the task gets no controlling terminal and signals sent to
        // the executor's group do not reach it.
        if libc::setsid() == -1 {
            return Err(io::Error::last_os_error());
        }
        // Ignored dispositions survive exec; the task must start with the defaults.
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            if libc::sigaction(signal, &action, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        for (i, &fd) in cgroup_fds.iter().enumerate() {
            // "0" means "the writing process": the task is inside its cgroups before it runs a
            // single instruction of its own, so nothing it forks can escape them.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            if n != 1 {
                let err = if n < 0 { io::Error::last_os_error() } else { io::Error::from_raw_os_error(libc::EIO) };
                let index = u8::try_from(i).unwrap_or(u8::MAX);
                libc::write(report_fd, (&raw const index).cast(), 1);
                return Err(err);
            }
        }
        if let Some(join) = join {
            let fail = |code: u8| {
                let err = io::Error::last_os_error();
                libc::write(report_fd, (&raw const code).cast(), 1);
                err
            };
            if libc::setns(join.netns_fd, libc::CLONE_NEWNET) == -1 {
                return Err(fail(FAILED_SETNS));
            }
            if let Some(source) = join.resolv_conf {
                // A mount namespace of the task's own: slave of the host's, so the host's
                // unmounts (other tasks' namespaces going away) still reach it while nothing
                // mounted here leaks out.
                if libc::unshare(libc::CLONE_NEWNS) == -1 {
                    return Err(fail(FAILED_UNSHARE));
                }
                let none = c"none".as_ptr();
                if libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) == -1 {
                    return Err(fail(FAILED_MAKE_SLAVE));
                }
                if libc::mount(source, c"/etc/resolv.conf".as_ptr(), none, libc::MS_BIND, std::ptr::null()) == -1 {
                    return Err(fail(FAILED_RESOLV_CONF));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::thread;

    struct Sandbox {
        _dir: tempfile::TempDir,
        spec: LaunchSpec,
    }

    fn sandbox(argv: &[&str]) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let cwd = dir.path().join("sandbox");
        fs::create_dir(&cwd).expect("mkdir sandbox");
        let spec = LaunchSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("FOO".into(), "bar baz".into())],
            stdout: cwd.join("stdout"),
            stderr: cwd.join("stderr"),
            cwd,
            cgroup_procs: Vec::new(),
            exit_file: dir.path().join("exit.json"),
            netns: None,
            resolv_conf: None,
        };
        Sandbox { _dir: dir, spec }
    }

    fn run_captured(spec: &LaunchSpec) -> (ExitRecord, String) {
        let mut out = Vec::new();
        let record = run(spec, &mut out).expect("run");
        (record, String::from_utf8(out).expect("utf8"))
    }

    #[test]
    fn exit_code_is_recorded() {
        let sb = sandbox(&["/bin/sh", "-c", "exit 3"]);
        let (record, announced) = run_captured(&sb.spec);
        let pid = record.pid.expect("pid");
        assert_eq!(announced, format!("running {pid}\n"));
        assert_eq!((record.exit_code, record.signal, record.launch_error), (Some(3), None, None));
        assert!(record.finished_at_ms > 0);
    }

    #[test]
    fn output_env_and_cwd() {
        let sb = sandbox(&["sh", "-c", r#"echo "out $FOO|${HOME:-nohome}"; echo err >&2; pwd"#]);
        let (record, _) = run_captured(&sb.spec);
        assert_eq!(record.exit_code, Some(0));
        // Run again: the files are appended to, not truncated.
        run_captured(&sb.spec);
        let cwd = fs::canonicalize(&sb.spec.cwd).expect("canonicalize");
        let line = format!("out bar baz|nohome\n{}\n", cwd.display());
        assert_eq!(fs::read_to_string(&sb.spec.stdout).expect("stdout"), line.repeat(2));
        assert_eq!(fs::read_to_string(&sb.spec.stderr).expect("stderr"), "err\nerr\n");
    }

    /// Lets `main_with_spec_end_to_end` run the real entry point in a process of its own (it changes
    /// signal dispositions and fd 1, which must not happen to the test harness).
    #[test]
    fn main_with_spec_subprocess() {
        if let Some(spec) = std::env::var_os("ATOLL_TEST_EXECUTOR_SPEC") {
            std::process::exit(main_with_spec(Path::new(&spec)));
        }
    }

    #[test]
    fn main_with_spec_end_to_end() {
        // Shell builtins only until the exec: once dash forks (it uses vfork and blocks every signal
        // around it), its own masks no longer show what the executor handed over.
        let script = "read s < /proc/$$/stat; echo \"$s\"; \
                      while read l; do case $l in SigIgn*|SigBlk*) echo \"$l\";; esac; done < /proc/$$/status; \
                      echo ready >&2; exec sleep 30";
        let sb = sandbox(&["/bin/sh", "-c", script]);
        let spec_path = sb.spec.cwd.join("spec.json");
        sb.spec.save(&spec_path).expect("save spec");
        let mut executor = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "executor::tests::main_with_spec_subprocess", "--test-threads=1", "--nocapture"])
            .env("ATOLL_TEST_EXECUTOR_SPEC", &spec_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn executor");
        let stdout = executor.stdout.take().expect("stdout");
        // Read to EOF in a thread: EOF must come while the task still runs (stdout detached).
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut all = String::new();
            let _ = io::BufReader::new(stdout).read_to_string(&mut all);
            let _ = tx.send(all);
        });
        let all = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("executor stdout reaches EOF");
        // libtest prints "running 1 test" and "test <name> ... " (no newline) before the test body.
        let last = all.lines().last().unwrap_or_default();
        let line = last.rsplit_once(" ... ").map_or(last, |(_, l)| l);
        assert!(line.starts_with("running ") && all.ends_with(&format!("{line}\n")), "one announce line in {all:?}");
        let pid: i32 = line["running ".len()..].parse().expect("pid");

        let start = std::time::Instant::now();
        while fs::read_to_string(&sb.spec.stderr).unwrap_or_default() != "ready\n" {
            assert!(start.elapsed().as_secs() < 20, "task never got ready");
            thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = fs::read_to_string(&sb.spec.stdout).expect("task stdout");
        let stat = out.lines().next().expect("stat line");
        // Fields after "(comm) ": state ppid pgrp session.
        let fields: Vec<&str> = stat.rsplit_once(") ").expect("comm").1.split(' ').collect();
        assert_eq!(fields[3], pid.to_string(), "the task leads its own session: {stat}");
        assert_eq!(fields[1], executor.id().to_string(), "the executor is the parent: {stat}");
        for line in out.lines().skip(1) {
            let mask = u64::from_str_radix(line.split_whitespace().nth(1).expect("mask"), 16).expect("hex");
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
                assert_eq!(mask & (1 << (sig - 1)), 0, "signal {sig} ignored/blocked in the task: {line}");
            }
        }

        // SAFETY: kill(2) on processes this test started.
        unsafe {
            assert_eq!(libc::kill(executor.id() as i32, libc::SIGTERM), 0);
            assert_eq!(libc::kill(executor.id() as i32, libc::SIGHUP), 0);
            thread::sleep(std::time::Duration::from_millis(100));
            assert_eq!(libc::kill(pid, libc::SIGKILL), 0);
        }
        let status = executor.wait().expect("wait executor");
        assert_eq!(status.code(), Some(0), "executor survives SIGTERM/SIGHUP and exits 0: {status:?}");
        let record = read_exit_record(&sb.spec.exit_file).expect("read record").expect("record written");
        assert_eq!((record.pid, record.signal, record.exit_code), (Some(pid as u32), Some(libc::SIGKILL), None));
    }

    #[test]
    fn signal_is_recorded() {
        let sb = sandbox(&["sleep", "30"]);
        let (reader, mut writer) = io::pipe().expect("pipe");
        let spec = sb.spec.clone();
        let runner = thread::spawn(move || run(&spec, &mut writer).expect("run"));
        let mut line = String::new();
        io::BufReader::new(reader).read_line(&mut line).expect("announce");
        let pid: i32 = line.strip_prefix("running ").and_then(|p| p.trim().parse().ok()).expect(&line);
        // SAFETY: kill(2) on the pid our runner just started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let record = runner.join().expect("runner");
        assert_eq!((record.pid, record.exit_code, record.signal), (Some(pid as u32), None, Some(libc::SIGKILL)));
    }

    #[test]
    fn missing_binary_is_a_launch_error() {
        let sb = sandbox(&["/nonexistent/atoll-no-such-binary", "x"]);
        let (record, announced) = run_captured(&sb.spec);
        let message = "failed to execute `/nonexistent/atoll-no-such-binary`: No such file or directory";
        assert_eq!(announced, format!("error {message}\n"));
        assert_eq!(record.launch_error.as_deref(), Some(message));
        assert_eq!((record.pid, record.exit_code, record.signal), (None, None, None));
    }

    #[test]
    fn other_launch_errors_name_the_culprit() {
        let mut sb = sandbox(&["true"]);
        sb.spec.cgroup_procs = vec![PathBuf::from("/dev/null"), PathBuf::from("/dev/full")];
        let (record, announced) = run_captured(&sb.spec);
        assert_eq!(announced, "error failed to join cgroup /dev/full: No space left on device\n");
        assert!(record.pid.is_none());

        sb.spec.cgroup_procs = vec![PathBuf::from("/nonexistent/cgroup.procs")];
        let (record, _) = run_captured(&sb.spec);
        assert_eq!(
            record.launch_error.as_deref(),
            Some("cannot open /nonexistent/cgroup.procs: No such file or directory")
        );

        sb.spec.cgroup_procs.clear();
        sb.spec.cwd = sb.spec.cwd.join("missing");
        let (record, _) = run_captured(&sb.spec);
        assert!(record.launch_error.expect("error").starts_with("cannot use sandbox "));

        sb.spec.argv.clear();
        assert_eq!(run_captured(&sb.spec).0.launch_error.as_deref(), Some("empty argv: nothing to execute"));
    }

    #[test]
    fn exit_record_round_trips_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exit.json");
        assert_eq!(read_exit_record(&path).expect("read"), None);
        let record =
            ExitRecord { pid: Some(7), exit_code: Some(0), signal: None, launch_error: None, finished_at_ms: 1 };
        write_exit_record(&path, &record).expect("write");
        write_exit_record(&path, &record).expect("overwrite");
        assert_eq!(read_exit_record(&path).expect("read"), Some(record));
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")], "no temp files left");
        fs::write(&path, "{").expect("corrupt");
        assert_eq!(read_exit_record(&path).expect_err("corrupt").kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn spec_round_trips() {
        let sb = sandbox(&["true"]);
        let path = sb.spec.cwd.join("spec.json");
        sb.spec.save(&path).expect("save");
        assert_eq!(LaunchSpec::load(&path).expect("load"), sb.spec);
        assert!(matches!(LaunchSpec::load(&sb.spec.cwd), Err(ExecutorError::SpecRead { .. })));
    }

    #[test]
    fn task_joins_its_cgroups() {
        let Some(g) = crate::cgroups::test_support::guard(&crate::cgroups::Limits::default()) else { return };
        let mut sb = sandbox(&["cat", "/proc/self/cgroup"]);
        sb.spec.cgroup_procs = g.cgroup.procs_files();
        let (record, _) = run_captured(&sb.spec);
        assert_eq!(record.exit_code, Some(0), "{record:?}");
        let out = fs::read_to_string(&sb.spec.stdout).expect("stdout");
        let expected = format!("/{}/task", g.root);
        let joined = out.lines().filter(|l| l.ends_with(&expected)).count();
        assert_eq!(joined, g.cgroup.dirs().len(), "{out}");
    }
}
