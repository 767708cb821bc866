//! The map key and value types Atoll's eBPF programs share with their loader (`lb/l4`).
//!
//! Every type is `#[repr(C)]` with explicit padding (so the kernel and user space agree byte
//! for byte and no uninitialised padding reaches a map), addresses and ports in network byte
//! order as the kernel hands them over. The layout follows Cilium's load balancer: services
//! keyed by VIP + port + protocol, backends by id, Maglev tables, reverse NAT for sockets, a
//! connection-tracking LRU for north-south traffic. IPv6 types are kept in step with IPv4.
//! With the `user` feature the types are `aya::Pod`.

#![no_std]

/// Suffix of every pinned map name; bumped when a layout changes, so a new loader never reads
/// an old program's maps.
pub const MAP_VERSION: &str = "v1";

/// Maglev lookup table size used when none is configured (a prime; ≥ 100 × the backends of a
/// service keeps every backend within 1% of its weighted share).
pub const DEFAULT_MAGLEV_SIZE: u32 = 1021;

/// Protocol numbers as in IP headers.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A VIP as a service: address, port, protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// IPv4 address, network byte order.
    pub address: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// What a service maps to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// Index of the service's Maglev table in the table array (tables are shared by services
    /// with identical backend sets; a new table is written, then this index switched).
    pub table: u32,
    /// Backends that take new connections; 0: none (the connection is left alone and meets
    /// the VIP pool's blackhole route).
    pub count: u32,
    /// The service's id, for reverse NAT and counters.
    pub rev_nat: u32,
    pub flags: u32,
}

/// A backend: where a connection to a VIP really goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// IPv4 address, network byte order.
    pub address: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

/// The whole configuration the programs read (a one-entry array map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// Maglev table size M (entries per table).
    pub maglev_size: u32,
    /// How many tables the table array holds.
    pub max_tables: u32,
}

/// Reverse NAT for sockets: which VIP a socket's peer really is (recvmsg4/getpeername4).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevKey {
    pub cookie: u64,
    /// The backend, network byte order.
    pub address: u32,
    pub port: u16,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockRevValue {
    /// The VIP, network byte order.
    pub address: u32,
    pub port: u16,
    pub _pad: [u8; 2],
    pub rev_nat: u32,
}

/// North-south connection tracking: a flow arriving for a VIP (client → VIP), and its
/// backend, so every packet of the flow goes to the same one and replies are un-NATed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// The backend's id.
    pub backend: u32,
    /// The VIP the client addressed (network byte order), for replies.
    pub vip: u32,
    pub vip_port: u16,
    pub _pad: [u8; 2],
    pub rev_nat: u32,
}

/// Per-service counters, per CPU (summed by the loader for `/metrics`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceStats {
    pub connections: u64,
    pub packets: u64,
}

/// IPv6 counterparts, kept in step (programs for IPv6 come later).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey6 {
    pub address: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend6 {
    pub address: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): plain #[repr(C)] integers with explicit padding fields, no invalid bit
    // patterns, so any bytes are a valid value.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::SockRevValue {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
    unsafe impl aya::Pod for super::ServiceStats {}
    unsafe impl aya::Pod for super::ServiceKey6 {}
    unsafe impl aya::Pod for super::Backend6 {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ServiceKey>(), 8);
        assert_eq!(core::mem::size_of::<ServiceValue>(), 16);
        assert_eq!(core::mem::size_of::<Backend>(), 8);
        assert_eq!(core::mem::size_of::<SockRevKey>(), 16);
        assert_eq!(core::mem::size_of::<SockRevValue>(), 12);
        assert_eq!(core::mem::size_of::<CtKey>(), 16);
        assert_eq!(core::mem::size_of::<CtValue>(), 16);
        assert_eq!(core::mem::size_of::<ServiceKey6>(), 20);
        assert_eq!(core::mem::size_of::<Backend6>(), 20);
    }
}
