//! Container networking: tasks that ask for a network (`TaskInfo.networks`) get their own
//! network namespace, a veth pair into the agent's bridge and an address from the agent's subnet
//! of the pool they name; other hosts' subnets are reached through routes programmed from the
//! master's event stream. Tasks without networks use the host's network exactly as before.
//!
//! # Pieces
//!
//! - [`store`]: the agent's task address leases ([`atoll_ipam::Leases`]: the subnets the master
//!   gave this agent, the reserved addresses, one lease per task run), persisted atomically in
//!   `<data dir>/ipam.json` with a version, reloaded at start and reconciled against the live
//!   runs (`retain_tasks`).
//! - [`netns`]: named network namespaces under `/run/netns` (the `ip netns` convention, so
//!   `ip netns list` shows them), created by a short-lived thread that `unshare`s and bind-mounts
//!   its namespace.
//! - [`netlink`]: links, addresses and routes over rtnetlink — the bridge, the task's veth pair
//!   (created in one message: the host end already in the bridge, the peer already in the task's
//!   namespace as `eth0`), `lo` up, the task's address and default route. No `ip` or `iptables`.
//! - [`worker`]: the one task that performs these changes, in the order the actor asks for them,
//!   reporting each result back to the actor.
//! - [`proxy`]: host port → task port forwarders.
//! - [`routes`]: the pure projection "cluster agents → routes this host needs", its diff against
//!   what the kernel has, and the thin follower of the event stream that applies it.
//! - [`masquerade`]: opt-in egress (`--masquerade`, off by default): an nftables table of the
//!   agent's own that masquerades what leaves its subnets for anywhere but a container subnet,
//!   kept in step with the subnets by the route follower.
//!
//! # Lifecycle of a task's network
//!
//! 1. Launch: the actor allocates the address (keyed by run id), persists the leases, writes the
//!    [`TaskNetwork`] (names, address) into the task's checkpoint and only then asks the worker to
//!    create anything — so whatever a crash leaves behind is named in a checkpoint or matches the
//!    agent's name prefix, and is found by reconciliation.
//! 2. The executor joins the namespace before exec (`LaunchSpec.netns`), in a mount namespace of
//!    its own with the sandbox's `resolv.conf` bind-mounted over `/etc/resolv.conf`.
//! 3. Every status update of the run carries the address (`ip_addresses`), TASK_STARTING included.
//! 4. When the task has ended: forwarders stop, the veth is deleted (its peer goes with it), the
//!    namespace is unmounted and removed, the lease is released and the checkpoint forgets it.
//! 5. Agent restart: forwarders of running tasks are re-created; veths on the bridge and
//!    namespaces with this agent's prefix that belong to no live run are deleted; leases of runs
//!    that are not live are released.
//!
//! # Port mappings: a userspace forwarder
//!
//! A `host_port → container_port` mapping is served by the agent itself: a TCP listener (or UDP
//! socket) on the host port that relays to `task_ip:container_port`, like `docker-proxy`. It
//! works for clients on the host's loopback too (kernel DNAT does not without `route_localnet`),
//! needs neither iptables nor nftables (the agent programs the kernel through rtnetlink only; the
//! one exception is the opt-in masquerade table, [`masquerade`]) and leaves nothing behind in the
//! kernel when the agent dies. The price is a copy through the agent per byte and the client's
//! address being hidden from the task; the L4 load balancer is the fast path for serious traffic.
//! Forwarders are started with the task (a port that cannot be bound fails the launch) and
//! re-created by a restarted agent for the tasks it re-attaches.
//!
//! # Where it runs
//!
//! Everything acts on the network namespace the agent runs in: the bridge, IPv4 forwarding
//! (`/proc/sys/net/ipv4/ip_forward`, written only once a subnet is assigned and networking is
//! enabled), the routes and the masquerade table. Tests therefore run each agent inside a network namespace of their
//! own.

pub mod masquerade;
pub mod netlink;
pub mod netns;
pub mod proxy;
pub mod routes;
pub mod store;
pub mod worker;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use atoll_proto::model::TaskPortMapping;
use serde::{Deserialize, Serialize};

/// Host ends of task veths are named `vatoll<9 hex digits>` (15 characters, the kernel's limit).
pub const VETH_PREFIX: &str = "vatoll";
/// The task's end of its veth pair, inside its namespace.
pub const TASK_IFACE: &str = "eth0";
/// Default name of the agent's bridge.
pub const DEFAULT_BRIDGE: &str = "atoll0";
/// The routing protocol number Atoll's routes carry (`proto 167` in `ip route`), so the agent
/// finds exactly its own routes again.
pub const ROUTE_PROTOCOL: u8 = 167;
/// The resolv.conf file in a container task's sandbox.
pub const RESOLV_CONF: &str = "resolv.conf";

/// Everything about one run's network that lives outside the agent process; it is in the
/// task's checkpoint before any of it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNetwork {
    /// The pool (network name) the address is from.
    pub pool: String,
    pub ip: IpAddr,
    /// Prefix length of the agent subnet the address is in.
    pub prefix: u8,
    pub gateway: IpAddr,
    /// The namespace's name under [`netns::NETNS_DIR`].
    pub netns: String,
    /// Host end of the veth pair, a port of `bridge`.
    pub veth: String,
    pub bridge: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<TaskPortMapping>,
}

impl TaskNetwork {
    pub fn netns_path(&self) -> PathBuf {
        netns::path_of(&self.netns)
    }
}

/// 64-bit FNV-1a: stable across Rust versions and runs.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// 8 hex digits naming the agent of a data dir (its cgroup root uses the same hash): two agents
/// on one machine never touch each other's namespaces.
pub fn agent_tag(data_dir: &Path) -> String {
    let hash = fnv1a(data_dir.as_os_str().as_encoded_bytes());
    format!("{:08x}", (hash >> 32) as u32 ^ hash as u32)
}

/// Every namespace of the agent of `data_dir` is named with this prefix.
pub fn netns_prefix(data_dir: &Path) -> String {
    format!("atoll-{}-", agent_tag(data_dir))
}

/// The namespace of one run: `atoll-<agent tag>-<12 hex digits of the run id>`.
pub fn netns_name(data_dir: &Path, run_id: &str) -> String {
    format!("{}{:012x}", netns_prefix(data_dir), fnv1a(run_id.as_bytes()) & 0xffff_ffff_ffff)
}

/// The host end of one run's veth pair: `vatoll<9 hex digits of the run id>`.
pub fn veth_name(run_id: &str) -> String {
    format!("{VETH_PREFIX}{:09x}", fnv1a(format!("veth/{run_id}").as_bytes()) & 0xf_ffff_ffff)
}

/// The task's `/etc/resolv.conf`: the node's DNS answers on the bridge gateway address.
pub fn resolv_conf(gateway: IpAddr) -> String {
    format!("# Written by the Atoll agent: the node's DNS listens on the bridge gateway.\nnameserver {gateway}\n")
}

/// A valid interface name (for `--bridge`): 1 to 15 bytes, no `/`, whitespace or `:`.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("`{name}` must be 1 to 15 characters long"));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("`{name}` is not a valid interface name"));
    }
    Ok(())
}

/// Whether this process may create namespaces, bridges and routes.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let dir = Path::new("/var/lib/atoll/agent");
        let run = "6f1c0a52-0c59-4a4c-9b0e-1b1f5a0f3c11";
        let veth = veth_name(run);
        assert_eq!(veth.len(), 15, "{veth}");
        assert!(veth.starts_with(VETH_PREFIX));
        assert_eq!(veth, veth_name(run));
        assert_ne!(veth, veth_name("another-run"));
        check_ifname(&veth).unwrap();

        let ns = netns_name(dir, run);
        assert!(ns.starts_with(&netns_prefix(dir)), "{ns}");
        assert_eq!(ns.len(), "atoll-".len() + 8 + 1 + 12);
        assert_ne!(ns, netns_name(Path::new("/srv/agent2"), run), "two agents, two prefixes");
        assert_ne!(ns, netns_name(dir, "another-run"));
        assert_eq!(agent_tag(dir), agent_tag(dir));
        // Same hash as the agent's default cgroup root, so both name one agent alike.
        assert_eq!(crate::settings::default_cgroup_root(dir), format!("atoll/agent-{}", agent_tag(dir)));
    }

    #[test]
    fn resolv_conf_points_at_the_gateway() {
        let text = resolv_conf("198.18.3.1".parse().unwrap());
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["nameserver 198.18.3.1"]);
        assert!(!text.contains("search"));
        assert!(resolv_conf("2001:db8::1".parse().unwrap()).contains("nameserver 2001:db8::1\n"));
    }

    #[test]
    fn interface_names_are_checked() {
        check_ifname("atoll0").unwrap();
        for bad in ["", "a-very-long-bridge-name", "a b", "a/b", "a:b", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }
}
