//! Atoll's eBPF programs (built for `bpfel-unknown-none` by `lb/l4`'s build script).
//!
//! - `atoll_connect4`, `atoll_sendmsg4` (cgroup `sock_addr`): a connection or datagram to a
//!   VIP:port goes to a backend picked from the service's Maglev table (a random slot per TCP
//!   connection, the socket cookie's slot for UDP so that one socket keeps its backend); the
//!   socket's reverse NAT is recorded.
//! - `atoll_recvmsg4`, `atoll_getpeer4` (cgroup `sock_addr`): the application sees the VIP
//!   as its peer and as the source of replies.
//! - `atoll_tc_in`, `atoll_tc_out` (tcx / clsact on an uplink named explicitly): packets
//!   arriving for a VIP are DNATed to a backend with connection tracking; the backend's
//!   replies leave with the VIP as their source.
//!
//! On the host this is an empty binary so that `cargo build --workspace` works on stable.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
