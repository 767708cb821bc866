//! Test sandboxes for the layer-4 dataplane: each test gets its own cgroup v2 child, its own
//! bpffs pin directory and its own network namespaces, all removed on drop (also when the
//! test panics). Clients are child processes (`client.py`) that join the test's cgroup and
//! namespace before they start, so the programs see their sockets and nothing else's.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use atoll_lb_l4::{Backend, Dataplane, L4Options, ServiceKey, cgroup2_root};
use serde_json::Value;

pub const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/client.py");

/// True when the test may run; false (after saying so) when it is skipped. Without root it
/// fails, unless `ATOLL_ALLOW_UNPRIVILEGED_SKIP=1`.
pub fn require_root(test: &str) -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("ATOLL_ALLOW_UNPRIVILEGED_SKIP").as_deref() == Ok("1") {
        eprintln!("skipping {test}: needs root (ATOLL_ALLOW_UNPRIVILEGED_SKIP=1)");
        return false;
    }
    panic!("{test} needs root (BPF, cgroups, network namespaces); set ATOLL_ALLOW_UNPRIVILEGED_SKIP=1 to skip it");
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A test's own cgroup, pin directory and namespaces.
pub struct Sandbox {
    pub tag: String,
    pub cgroup: PathBuf,
    /// Cgroups made below `cgroup` (removed first).
    pub children: Vec<PathBuf>,
    pub pin_dir: PathBuf,
    pub namespaces: Vec<String>,
}

impl Sandbox {
    pub fn new() -> Result<Sandbox> {
        let tag = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let root = cgroup2_root().context("cgroup v2 is not mounted")?;
        let cgroup = root.join(format!("atoll-l4-test-{tag}"));
        fs::create_dir(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/atoll-l4-test-{tag}"));
        Ok(Sandbox { tag, cgroup, children: Vec::new(), pin_dir, namespaces: Vec::new() })
    }

    /// A cgroup below the sandbox's own.
    pub fn child_cgroup(&mut self, name: &str) -> Result<PathBuf> {
        let path = self.cgroup.join(name);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        self.children.push(path.clone());
        Ok(path)
    }

    /// Options for this sandbox: its pin directory and cgroup, small maps.
    pub fn options(&self) -> L4Options {
        L4Options {
            pin_dir: self.pin_dir.clone(),
            cgroup: self.cgroup.clone(),
            uplink: None,
            maglev_size: 1021,
            max_tables: 16,
            max_services: 64,
            max_backends: 64,
            max_sockets: 4096,
            max_flows: 1024,
        }
    }

    /// A new network namespace with `lo` up; deleted on drop.
    pub fn netns(&mut self, role: &str) -> Result<String> {
        let name = format!("atl4-{role}-{}", self.tag);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = Dataplane::cleanup(&self.options()) {
            eprintln!("cleaning up {}: {e}", self.pin_dir.display());
        }
        let _ = fs::write(self.cgroup.join("cgroup.kill"), "1");
        for cgroup in self.children.iter().rev().chain([&self.cgroup]) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match fs::remove_dir(cgroup) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("removing {}: {e}", cgroup.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("deleting namespace {ns}: {e}");
            }
        }
    }
}

pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn netns_file(ns: &str) -> Result<File> {
    File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening namespace {ns}"))
}

fn enter(netns: &File) -> io::Result<()> {
    // SAFETY: a namespace file descriptor; affects only the calling thread.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `ns` (or here, for `None`).
pub fn in_netns<T: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = ns.map(netns_file).transpose()?;
    std::thread::spawn(move || {
        if let Some(file) = &file {
            enter(file).expect("setns");
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))
}

/// Backend servers: every new TCP connection and every UDP datagram is answered with the
/// server's id (a line); TCP connections then echo. Stopped on drop.
#[derive(Default)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn tcp(&mut self, ns: Option<&str>, addr: SocketAddr, id: &str) -> Result<()> {
        let listener = in_netns(ns, move || TcpListener::bind(addr))?.with_context(|| format!("binding {addr}"))?;
        let (stop, id) = (self.stop.clone(), id.to_string());
        self.threads.push(std::thread::spawn(move || serve_tcp(listener, &id, &stop)));
        Ok(())
    }

    pub fn udp(&mut self, ns: Option<&str>, addr: SocketAddr, id: &str) -> Result<()> {
        let socket = in_netns(ns, move || UdpSocket::bind(addr))?.with_context(|| format!("binding {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let (stop, id) = (self.stop.clone(), id.to_string());
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{id}\n").as_bytes(), from);
                }
            }
        }));
        Ok(())
    }
}

fn serve_tcp(listener: TcpListener, id: &str, stop: &Arc<AtomicBool>) {
    let mut handlers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        let Ok((mut stream, _)) = listener.accept() else { continue };
        let (stop, id) = (stop.clone(), id.to_string());
        handlers.push(std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            if stream.write_all(format!("{id}\n").as_bytes()).is_err() {
                return;
            }
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                match io::Read::read(&mut stream, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        }));
        handlers.retain(|h: &JoinHandle<()>| !h.is_finished());
    }
    for h in handlers {
        let _ = h.join();
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A `client.py` process inside a cgroup and/or a network namespace; killed on drop.
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    pub fn spawn(cgroup: Option<&Path>, ns: Option<&str>, args: &[&str]) -> Result<Client> {
        let procs = cgroup
            .map(|c| fs::OpenOptions::new().write(true).open(c.join("cgroup.procs")))
            .transpose()
            .context("opening cgroup.procs")?;
        let netns = ns.map(netns_file).transpose()?;
        let (procs_fd, netns_fd): (Option<RawFd>, Option<RawFd>) =
            (procs.as_ref().map(AsRawFd::as_raw_fd), netns.as_ref().map(AsRawFd::as_raw_fd));
        let mut command = Command::new("python3");
        command.arg(CLIENT).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls (setns, write) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = procs_fd
                    && libc::write(fd, c"0".as_ptr().cast(), 1) != 1
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().context("starting python3 client.py")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("client stdout")?);
        Ok(Client { child, stdin, stdout })
    }

    /// The client's next output line, parsed.
    pub fn line(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the client exited without answering ({:?})", self.child.try_wait()?);
        }
        serde_json::from_str(&line).with_context(|| format!("client said {line:?}"))
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one client command and returns its (single) answer.
pub fn run_client(cgroup: Option<&Path>, ns: Option<&str>, args: &[&str]) -> Result<Value> {
    let mut client = Client::spawn(cgroup, ns, args)?;
    let answer = client.line()?;
    drop(client.stdin.take());
    let status = client.child.wait()?;
    if !status.success() {
        bail!("client {args:?} failed: {status}");
    }
    Ok(answer)
}

pub fn tcp_backend(ip: Ipv4Addr, port: u16) -> Backend {
    Backend::new(ip, port, atoll_lb_l4::PROTO_TCP)
}

pub fn udp_backend(ip: Ipv4Addr, port: u16) -> Backend {
    Backend::new(ip, port, atoll_lb_l4::PROTO_UDP)
}

/// A table of `m` slots spreading `ids` evenly (the equal-weights case).
pub fn even_table(m: u32, ids: &[u32]) -> Vec<u32> {
    (0..m as usize).map(|slot| ids[slot % ids.len()]).collect()
}

pub fn tcp_key(vip: Ipv4Addr, port: u16) -> ServiceKey {
    ServiceKey::new(vip, port, atoll_lb_l4::PROTO_TCP)
}

pub fn udp_key(vip: Ipv4Addr, port: u16) -> ServiceKey {
    ServiceKey::new(vip, port, atoll_lb_l4::PROTO_UDP)
}
