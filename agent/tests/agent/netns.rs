//! Network namespaces for the container networking tests.
//!
//! How a test agent gets a network of its own: [`TestNetns::enter`] creates a fresh namespace
//! (`ip netns add atoll-test-<pid>-<n>`, `lo` up) and moves the *test's thread* into it with
//! `setns`. Everything the scenario then starts from that thread — the tokio runtime's worker and
//! blocking threads, the fake master, the agent, its executors and tasks, and the test's own
//! connections — inherits that namespace, so the agent's bridge, `ip_forward` and routes live
//! only there. Dropping the guard (also while unwinding from a panic) moves the thread back and
//! deletes the namespace, which takes the bridge and every veth in it along. Task namespaces are
//! files under /run/netns that outlive it; the agent's own cleanup (run by `TestEnv`'s drop
//! inside the namespace) removes them, and [`leftover_netns`] lets tests assert it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct TestNetns {
    pub name: String,
    original: Option<File>,
}

fn setns(file: &File) {
    // SAFETY: setns on a descriptor we own.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
}

impl TestNetns {
    /// Creates a namespace (with `lo` up); dropping the guard deletes it.
    pub fn create() -> TestNetns {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!("atoll-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name]);
        // From here on, dropping the guard deletes the namespace.
        let guard = TestNetns { name, original: None };
        run("ip", &["-n", &guard.name, "link", "set", "lo", "up"]);
        guard
    }

    /// Creates a namespace and moves the calling thread into it until the guard is dropped.
    pub fn enter() -> TestNetns {
        let mut guard = TestNetns::create();
        let original = File::open("/proc/thread-self/ns/net").expect("open own netns");
        setns(&guard.file());
        guard.original = Some(original);
        guard
    }

    pub fn file(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).expect("open test netns")
    }
}

/// Moves the calling thread into `netns` for good (a thread of its own).
pub fn join(netns: &File) {
    setns(netns);
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Some(original) = self.original.take() {
            setns(&original);
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Runs a command in the calling thread's network namespace and returns its stdout; panics if
/// it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names under /run/netns starting with `prefix`.
pub fn leftover_netns(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Interface names in the calling thread's namespace (`/sys/class/net` would show the
/// namespace sysfs was mounted in, so ask netlink through `ip`).
pub fn links() -> Vec<String> {
    let out = run("ip", &["-o", "link", "show"]);
    let mut names: Vec<String> =
        out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n).to_owned()).collect();
    names.sort();
    names
}
