//! Whole-cluster test harness: real `atoll master` and `atoll agent` processes on loopback
//! ports of their own, each test in its own temporary directory, everything killed (by PID)
//! and cleaned up (`atoll agent --cleanup`: tasks, cgroups) when the test ends, pass or fail.

pub mod edge;
pub mod lb;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

/// The `atoll` binary next to the test executable (`target/<profile>/atoll`).
pub fn atoll_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ATOLL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("atoll");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p atoll`, which ./dev test does)",
        bin.display()
    );
    bin
}

/// A free loopback port (bound and released; the race with other tests is tolerable).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The host ports this test process's agents offer: a block of 50 below the kernel's
/// ephemeral range, picked per process, so concurrent tests do not hand out the same port.
pub fn test_port_range() -> (u16, u16) {
    static RANGE: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    *RANGE.get_or_init(|| {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        // 10000..30000 in blocks of 50: 400 blocks.
        let block = (seed.wrapping_mul(6364136223846793005) >> 33) % 400;
        let base = 10_000 + (block as u16) * 50;
        (base, base + 49)
    })
}

/// `--resources` for a test agent: small, with this process's port range.
pub fn test_resources(extra: &str) -> String {
    let (begin, end) = test_port_range();
    let sep = if extra.is_empty() { "" } else { ";" };
    format!("cpus:4;mem:4096;disk:1000;ports:[{begin}-{end}]{sep}{extra}")
}

/// Fails a test that needs root, unless skipping was asked for explicitly.
pub fn require_root(what: &str) -> bool {
    if rustix_is_root() {
        return true;
    }
    if std::env::var("ATOLL_ALLOW_UNPRIVILEGED_SKIP").as_deref() == Ok("1") {
        eprintln!("skipping {what}: not root (ATOLL_ALLOW_UNPRIVILEGED_SKIP=1)");
        return false;
    }
    panic!("{what} needs root (cgroups); run as root or set ATOLL_ALLOW_UNPRIVILEGED_SKIP=1 to skip");
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Polls `check` until it yields a value or the deadline passes.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let detail = last_error.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A master and an agent, as separate processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master_port: u16,
    pub agent_port: u16,
    master: Option<Child>,
    agent: Option<Child>,
    pub http: reqwest::Client,
    /// Extra agent flags (e.g. resources) used at every agent start.
    pub agent_flags: Vec<String>,
    /// Extra master flags used at every master start.
    pub master_flags: Vec<String>,
    dns: Option<Child>,
    /// The address the master listens on (loopback unless a test needs it elsewhere).
    pub master_ip: String,
    /// UDP/TCP and HTTP ports of `atoll dns`, once started.
    pub dns_port: u16,
    pub dns_http_port: u16,
}

impl Cluster {
    /// Starts a master (fast failure detection: 1 s heartbeats) and one agent, and waits
    /// until the agent is registered.
    pub async fn start() -> anyhow::Result<Cluster> {
        Cluster::start_with(&[]).await
    }

    pub async fn start_with(agent_flags: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_with_flags(&[], agent_flags).await
    }

    pub async fn start_with_flags(master_flags: &[&str], agent_flags: &[&str]) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster::unstarted("127.0.0.1", master_flags, agent_flags)?;
        cluster.start_master().await?;
        cluster.start_agent().await?;
        cluster.wait_agent_active().await?;
        Ok(cluster)
    }

    pub fn master_url(&self) -> String {
        format!("http://{}:{}", self.master_ip, self.master_port)
    }

    fn unstarted(master_ip: &str, master_flags: &[&str], agent_flags: &[&str]) -> anyhow::Result<Cluster> {
        Ok(Cluster {
            master_flags: master_flags.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::Builder::new().prefix("atoll-test-").tempdir()?,
            master_port: free_port(),
            agent_port: free_port(),
            master: None,
            agent: None,
            http: reqwest::Client::new(),
            dns: None,
            master_ip: master_ip.to_owned(),
            dns_port: free_port(),
            dns_http_port: free_port(),
            agent_flags: agent_flags.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// A master alone, listening on `ip` (agents are the test's own business).
    pub async fn start_master_only(ip: &str) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster::unstarted(ip, &[], &[])?;
        cluster.start_master().await?;
        Ok(cluster)
    }

    pub fn agent_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.agent_port)
    }

    fn log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(name))?)
    }

    pub async fn start_master(&mut self) -> anyhow::Result<()> {
        let child = Command::new(atoll_bin())
            .args(["master", "--listen", &format!("{}:{}", self.master_ip, self.master_port)])
            .arg("--data-dir")
            .arg(self.dir.path().join("master"))
            .args(["--agent-ping-timeout", "1s", "--max-agent-ping-timeouts", "5"])
            .args(["--allocation-interval", "200ms", "--default-refuse", "1s"])
            .args(&self.master_flags)
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("master.log")?)
            .spawn()
            .context("starting atoll master")?;
        self.master = Some(child);
        let url = format!("{}/health", self.master_url());
        let http = self.http.clone();
        wait_for("the master to answer", Duration::from_secs(20), async || {
            Ok(http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .await
    }

    pub async fn start_agent(&mut self) -> anyhow::Result<()> {
        let child = Command::new(atoll_bin())
            .args(["agent", "--master", &self.master_url(), "--listen", &format!("127.0.0.1:{}", self.agent_port)])
            .arg("--data-dir")
            .arg(self.agent_dir())
            // Agents of these tests share the machine's own network namespace: no bridge or
            // forwarding there (the container-network tests run agents in namespaces of their own).
            .arg("--container-networking=false")
            .args(self.resources_flag())
            .args(&self.agent_flags)
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("agent.log")?)
            .spawn()
            .context("starting atoll agent")?;
        self.agent = Some(child);
        Ok(())
    }

    /// Unless the test names its own, the agent offers this process's port range.
    fn resources_flag(&self) -> Vec<String> {
        if self.agent_flags.iter().any(|f| f == "--resources") {
            Vec::new()
        } else {
            vec!["--resources".into(), test_resources("")]
        }
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// Waits until exactly one agent is ACTIVE; returns it.
    pub async fn wait_agent_active(&self) -> anyhow::Result<Value> {
        wait_for("the agent to be active", Duration::from_secs(20), async || {
            let nodes = self.get("/v1/nodes").await?;
            Ok(nodes.as_array().and_then(|a| a.iter().find(|n| n["state"] == "ACTIVE").cloned()))
        })
        .await
    }

    /// Starts `atoll dns` against this master (forwarding off: tests never reach the host's
    /// resolvers) and waits for its HTTP API.
    pub async fn start_dns(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let child = Command::new(atoll_bin())
            .args(["dns", "--master", &self.master_url(), "--no-forward", "--gateway-port", "0"])
            .args(["--listen", &format!("127.0.0.1:{}", self.dns_port)])
            .args(["--http-listen", &format!("127.0.0.1:{}", self.dns_http_port)])
            .arg("--data-dir")
            .arg(self.dir.path().join("dns"))
            .args(extra)
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("dns.log")?)
            .spawn()
            .context("starting atoll dns")?;
        self.dns = Some(child);
        let url = format!("http://127.0.0.1:{}/health", self.dns_http_port);
        let http = self.http.clone();
        wait_for("the DNS server to answer", Duration::from_secs(20), async || {
            Ok(http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .await
    }

    /// SIGKILLs the DNS server and reaps it.
    pub fn kill_dns(&mut self) {
        if let Some(mut child) = self.dns.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks this cluster's DNS server over UDP (TCP with `tcp`).
    pub async fn dns_query(&self, name: &str, kind: &str, tcp: bool) -> anyhow::Result<DnsAnswer> {
        dns_query(SocketAddr::from(([127, 0, 0, 1], self.dns_port)), name, kind, tcp).await
    }

    /// SIGKILLs the master and reaps it.
    pub fn kill_master(&mut self) {
        if let Some(mut child) = self.master.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs the agent and reaps it (its tasks keep running under their executors).
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}{path}", self.master_url())).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self.http.post(format!("{}{path}", self.master_url())).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// `atoll ARGS…` against this cluster.
    pub fn atoll(&self, args: &[&str]) -> Command {
        let mut command = Command::new(atoll_bin());
        command.args(args).env("ATOLL_MASTER", self.master_url()).env("ATOLL_LOG", "warn");
        command
    }

    /// Runs `atoll ARGS…` to completion (bounded) and returns its output.
    pub async fn run_atoll(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let mut command = tokio::process::Command::from(self.atoll(args));
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let child = command.spawn()?;
        tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("`atoll {}` did not finish within {timeout:?}", args.join(" ")))?
            .map_err(Into::into)
    }

    /// The task's current JSON, by id.
    pub async fn task(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    /// Waits until the task is in `state`; returns it.
    pub async fn wait_task_state(&self, id: &str, state: &str, timeout: Duration) -> anyhow::Result<Value> {
        wait_for(&format!("task {id} to be {state}"), timeout, async || {
            let task = self.task(id).await?;
            Ok((task["state"] == state).then_some(task))
        })
        .await
    }

    /// Submits a detached task; returns its id.
    pub async fn run_detached(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["run", "--detach"];
        all.extend_from_slice(args);
        let output = self.run_atoll(&all, Duration::from_secs(30)).await?;
        if !output.status.success() {
            bail!("atoll run failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// The agent's own view of a task (from the agent's HTTP API).
    pub async fn agent_task(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let state: Value = self.http.get(format!("{}/v1/state", self.agent_url())).send().await?.json().await?;
        Ok(state["tasks"].as_array().and_then(|tasks| tasks.iter().find(|t| t["id"] == id).cloned()))
    }

    /// What the master and agent logged, for failure messages.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- master.log ---\n{}\n--- agent.log ---\n{}\n--- dns.log ---\n{}",
            read("master.log"),
            read("agent.log"),
            read("dns.log")
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_dns();
        self.kill_agent();
        self.kill_master();
        // Kill the tasks (they outlive their agent by design) and remove their cgroups.
        let _ = Command::new(atoll_bin())
            .args(["agent", "--cleanup", "--master", "http://127.0.0.1:9"])
            .arg("--data-dir")
            .arg(self.agent_dir())
            .env("ATOLL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Reads Server-Sent Events from a response into JSON messages.
pub struct SseStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    data: String,
    pending: std::collections::VecDeque<Value>,
}

impl SseStream {
    pub async fn open(url: &str, last_event_id: Option<u64>) -> anyhow::Result<SseStream> {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        Ok(SseStream { response, buffer: Vec::new(), data: String::new(), pending: Default::default() })
    }

    /// The next message, skipping heartbeats; None when the stream ends or `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(message) = self.pending.pop_front() {
                if message["type"] == "HEARTBEAT" {
                    continue;
                }
                return Ok(Some(message));
            }
            let chunk = match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Ok(None),
                Ok(chunk) => chunk?,
            };
            let Some(chunk) = chunk else { return Ok(None) };
            self.buffer.extend_from_slice(&chunk);
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned();
                if line.is_empty() {
                    if !self.data.is_empty() {
                        self.pending.push_back(serde_json::from_str(&std::mem::take(&mut self.data))?);
                    }
                } else if let Some(data) = line.strip_prefix("data:") {
                    self.data.push_str(data.trim_start());
                }
            }
        }
    }
}

/// A DNS answer, reduced to what tests look at.
#[derive(Debug, Clone)]
pub struct DnsAnswer {
    pub rcode: String,
    pub authoritative: bool,
    pub truncated: bool,
    /// `name ttl class type data` lines, as hickory prints records.
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
}

impl DnsAnswer {
    /// The data part (last field) of each answer record.
    pub fn values(&self) -> Vec<String> {
        self.answers.iter().filter_map(|r| r.split_whitespace().last().map(str::to_owned)).collect()
    }
}

/// One query to `server` over UDP or TCP, with a bounded wait.
pub async fn dns_query(server: SocketAddr, name: &str, kind: &str, tcp: bool) -> anyhow::Result<DnsAnswer> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let kind: RecordType = kind.parse().map_err(|_| anyhow!("bad record type {kind}"))?;
    let mut query = Message::new(4242, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name)?, kind));
    let bytes = query.to_vec()?;
    let timeout = Duration::from_secs(5);
    let reply = if tcp {
        let mut stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(server)).await??;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        let mut length = [0u8; 2];
        tokio::time::timeout(timeout, stream.read_exact(&mut length)).await??;
        let mut body = vec![0u8; u16::from_be_bytes(length) as usize];
        tokio::time::timeout(timeout, stream.read_exact(&mut body)).await??;
        body
    } else {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        socket.send_to(&bytes, server).await?;
        let mut buffer = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(timeout, socket.recv_from(&mut buffer)).await??;
        buffer.truncate(n);
        buffer
    };
    let message = Message::from_vec(&reply)?;
    let lines = |records: &[hickory_proto::rr::Record]| records.iter().map(|r| r.to_string()).collect();
    Ok(DnsAnswer {
        rcode: message.metadata.response_code.to_string(),
        authoritative: message.metadata.authoritative,
        truncated: message.metadata.truncation,
        answers: lines(&message.answers),
        authority: lines(&message.authorities),
        additional: lines(&message.additionals),
    })
}
