//! Whole-cluster tests of `atoll lb`: each test runs in a network namespace of its own (the
//! master, agent, DNS, load balancer, tasks and clients all live in it and its routes die with
//! it), and the load balancer attaches to a cgroup of the test's own, pins under a directory of
//! its own, and is cleaned up (`atoll lb --cleanup`) when the test ends, pass or fail.

use std::future::Future;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

use crate::{Cluster, atoll_bin, free_port, wait_for};

/// The lb tests' python client (shared with the kernel-level tests of `atoll-lb-l4`).
pub const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lb/l4/tests/client.py");
/// The backend task: greets each TCP connection and answers each UDP datagram with its task id.
pub const BACKEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/vip_backend.py");

/// Runs `body` on a thread of its own in a new network namespace with only `lo` (up), on a
/// runtime of its own: every process the test starts from there inherits the namespace, and
/// every address, port and route it uses (the VIP pool's blackhole too) is private to it.
pub fn in_private_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread; it has no other preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).output().expect("running ip");
        assert!(up.status.success(), "ip link set lo up: {}", String::from_utf8_lossy(&up.stderr));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
        .context("cgroup v2 is not mounted")
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// An `atoll lb` of the test's own: its cgroup (clients join it to reach VIPs), pin directory,
/// data dir and HTTP port.
pub struct Lb {
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub http_port: u16,
    pub log: PathBuf,
    master: String,
    /// Follow the master through its Mesos operator API (`--mesos-master`) instead.
    mesos: bool,
    child: Option<Child>,
}

impl Lb {
    /// Makes the test's cgroup; nothing is attached until [`Lb::start`].
    pub fn new(cluster: &Cluster) -> anyhow::Result<Lb> {
        let tag = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let cgroup = cgroup2_root()?.join(format!("atoll-lb-test-{tag}"));
        std::fs::create_dir(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
        Ok(Lb {
            cgroup,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/atoll-lb-test-{tag}")),
            data_dir: cluster.dir.path().join("lb"),
            http_port: free_port(),
            log: cluster.dir.path().join("lb.log"),
            master: cluster.master_url(),
            mesos: false,
            child: None,
        })
    }

    /// An lb that follows the cluster as it would a Mesos master: `--mesos-master`.
    pub fn new_mesos(cluster: &Cluster) -> anyhow::Result<Lb> {
        let mut lb = Lb::new(cluster)?;
        lb.mesos = true;
        Ok(lb)
    }

    fn settings(&self) -> Vec<String> {
        let source = if self.mesos { "--mesos-master" } else { "--master" };
        let mut args: Vec<String> = vec!["lb".into(), source.into(), self.master.clone()];
        for (flag, value) in [
            ("--http-listen", format!("127.0.0.1:{}", self.http_port)),
            ("--data-dir", self.data_dir.display().to_string()),
            ("--pin-dir", self.pin_dir.display().to_string()),
            ("--cgroup", self.cgroup.display().to_string()),
            // Small maps: parallel tests each load their own.
            ("--max-tables", "64".into()),
            ("--max-services", "256".into()),
            ("--max-backends", "256".into()),
            ("--max-sockets", "4096".into()),
            ("--max-flows", "1024".into()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args
    }

    /// Starts the daemon and waits for its HTTP API.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(atoll_bin())
            .args(self.settings())
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting atoll lb")?;
        self.child = Some(child);
        let url = self.url("/health");
        wait_for("the lb to answer", Duration::from_secs(20), async || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("atoll lb exited with {status}:\n{}", self.logs());
            }
            Ok(reqwest::get(&url).await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .await
    }

    /// Ends the daemon with `signal` and waits for it (the programs stay attached).
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: the pid of our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// `GET /v1/services` of the daemon.
    pub async fn services(&self) -> anyhow::Result<Vec<Value>> {
        let body: Value = reqwest::get(self.url("/v1/services")).await?.error_for_status()?.json().await?;
        body.as_array().cloned().context("/v1/services is not an array")
    }

    /// The service for `port`/`protocol` once it has `active` active backends.
    pub async fn wait_service(&self, port: u16, protocol: &str, active: usize) -> anyhow::Result<Value> {
        let what = format!("{protocol} port {port} with {active} active backends in the lb");
        wait_for(&what, Duration::from_secs(60), async || {
            let services = self.services().await?;
            Ok(services
                .into_iter()
                .find(|s| s["port"] == port && s["protocol"] == protocol && active_backends(s).len() == active))
        })
        .await
        .with_context(|| self.logs())
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(self.url("/metrics")).await?.error_for_status()?.text().await?)
    }

    pub fn logs(&self) -> String {
        format!("--- lb.log\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// A command that runs in the lb's cgroup (where its programs see the sockets).
    pub fn command(&self, program: &str) -> anyhow::Result<tokio::process::Command> {
        let path = self.cgroup.join("cgroup.procs");
        // Opened before the fork (close-on-exec), so the child only has to write to it.
        let procs = std::fs::OpenOptions::new().write(true).open(&path).with_context(|| path.display().to_string())?;
        let mut command = Command::new(program);
        // SAFETY: between fork and exec the child only calls write(2) on an open descriptor.
        unsafe {
            command.pre_exec(move || join_cgroup(&procs));
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Ok(tokio::process::Command::from(command))
    }

    /// Runs `client.py ARGS` in the cgroup and returns its JSON line.
    pub async fn client(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut command = self.command("python3")?;
        command.arg(CLIENT).args(args).kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .context("client.py did not finish in 120 s")??;
        if !output.status.success() {
            bail!("client.py {args:?}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        serde_json::from_slice(&output.stdout).with_context(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts an interactive `client.py ARGS` (hold, loop) in the cgroup.
    pub fn interactive(&self, args: &[&str]) -> anyhow::Result<Interactive> {
        let mut command = self.command("python3")?;
        command.arg(CLIENT).args(args).stdin(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().context("starting client.py")?;
        let stdin = child.stdin.take().context("stdin")?;
        let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Interactive { child, stdin, lines })
    }
}

/// Moves the calling (forked, not yet exec'd) process into the cgroup whose `cgroup.procs` is
/// open as `procs`.
fn join_cgroup(procs: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: a valid descriptor and a one-byte buffer.
    if unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The backends of a `/v1/services` entry that take new connections: their task ids.
pub fn active_backends(service: &Value) -> Vec<String> {
    backends_in(service, "active")
}

pub fn draining_backends(service: &Value) -> Vec<String> {
    backends_in(service, "draining")
}

fn backends_in(service: &Value, state: &str) -> Vec<String> {
    service["backends"]
        .as_array()
        .map(|b| {
            b.iter().filter(|b| b["state"] == state).filter_map(|b| b["task"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

/// A running client.py that takes commands on stdin and answers a JSON line each.
pub struct Interactive {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Interactive {
    /// The next JSON line (within `timeout`).
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .context("client.py did not answer in time")??
            .context("client.py ended")?;
        serde_json::from_str(&line).with_context(|| line.clone())
    }

    pub async fn send(&mut self, command: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL);
        match Command::new(atoll_bin()).args(self.settings()).arg("--cleanup").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("atoll lb --cleanup: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("atoll lb --cleanup: {e}"),
        }
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::remove_dir(&self.cgroup) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() > deadline => {
                    eprintln!("removing {}: {e}", self.cgroup.display());
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
