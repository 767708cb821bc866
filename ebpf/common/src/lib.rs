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

/// Backend id 0 means "no backend": an unwritten Maglev slot (the table array starts zeroed)
/// never sends a connection anywhere. Real backends are numbered from 1.
pub const BACKEND_ID_NONE: u32 = 0;

/// Map names, as the programs declare them and as they are pinned (`<pin dir>/<name>`).
/// Kernel object names are at most 15 bytes, so the names are short; each ends in
/// `_` + [`MAP_VERSION`].
pub mod map_names {
    /// `HashMap<ServiceKey, ServiceValue>`: the VIPs.
    pub const SERVICES: &str = "atoll_svc_v1";
    /// `HashMap<u32, Backend>`: backends by id.
    pub const BACKENDS: &str = "atoll_bknd_v1";
    /// `Array<MaglevEntry>` (mmapable): every Maglev table, table `t` at slots `[t*M, (t+1)*M)`.
    pub const MAGLEV: &str = "atoll_maglev_v1";
    /// `Array<Config>` with one entry.
    pub const CONFIG: &str = "atoll_cfg_v1";
    /// `LruHashMap<SockRevKey, SockRevValue>`: socket-level reverse NAT.
    pub const SOCK_REV: &str = "atoll_srev_v1";
    /// `LruHashMap<CtKey, CtValue>`: north-south connection tracking.
    pub const CT: &str = "atoll_ct_v1";
    /// `PerCpuHashMap<u32 /* rev_nat */, ServiceStats>`.
    pub const STATS: &str = "atoll_stats_v1";
    /// All of them.
    pub const ALL: [&str; 7] = [SERVICES, BACKENDS, MAGLEV, CONFIG, SOCK_REV, CT, STATS];
}

/// Program (function) names in the object file; kernel program names are also ≤ 15 bytes.
pub mod program_names {
    pub const CONNECT4: &str = "atoll_connect4";
    pub const SENDMSG4: &str = "atoll_sendmsg4";
    pub const RECVMSG4: &str = "atoll_recvmsg4";
    pub const GETPEERNAME4: &str = "atoll_getpeer4";
    pub const TC_INGRESS: &str = "atoll_tc_in";
    pub const TC_EGRESS: &str = "atoll_tc_out";
}

/// One element of the Maglev table array: two consecutive slots. An array map stores every
/// value in 8 bytes (values are rounded up to 8), so pairing the `u32` slots halves the
/// memory; slot `i` is `entry[i / 2][i % 2]`, and the loader, which maps the array into its
/// memory, sees one flat `u32` array.
pub type MaglevEntry = [u32; 2];

/// Slots per [`MaglevEntry`].
pub const MAGLEV_SLOTS_PER_ENTRY: u32 = 2;

/// [`CtKey::dir`]: a flow as the client sent it (client → VIP); the value names the backend.
pub const CT_DIR_ORIGINAL: u8 = 0;
/// [`CtKey::dir`]: the replies of a flow (backend → client); the value names the VIP.
pub const CT_DIR_REPLY: u8 = 1;

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

impl ServiceKey {
    /// A key from host-order values.
    pub fn new(address: core::net::Ipv4Addr, port: u16, proto: u8) -> Self {
        ServiceKey { address: u32::from(address).to_be(), port: port.to_be(), proto, _pad: 0 }
    }

    pub fn ip(&self) -> core::net::Ipv4Addr {
        core::net::Ipv4Addr::from(u32::from_be(self.address))
    }

    /// The port in host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
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

impl Backend {
    /// A backend from host-order values.
    pub fn new(address: core::net::Ipv4Addr, port: u16, proto: u8) -> Self {
        Backend { address: u32::from(address).to_be(), port: port.to_be(), proto, flags: 0 }
    }

    pub fn ip(&self) -> core::net::Ipv4Addr {
        core::net::Ipv4Addr::from(u32::from_be(self.address))
    }

    /// The port in host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
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
/// backend, so every packet of the flow goes to the same one and replies are un-NATed. Each
/// flow has two entries: [`CT_DIR_ORIGINAL`] keyed by the client's packet as it arrived
/// (client → VIP), and [`CT_DIR_REPLY`] keyed by the backend's reply as it leaves
/// (backend → client). Addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// [`CT_DIR_ORIGINAL`] or [`CT_DIR_REPLY`].
    pub dir: u8,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// The backend's id (both directions).
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
        assert_eq!(core::mem::size_of::<Config>(), 8);
        assert_eq!(core::mem::size_of::<ServiceStats>(), 16);
        assert_eq!(core::mem::size_of::<MaglevEntry>(), 8);
    }

    #[test]
    fn kernel_object_names_fit_and_carry_the_version() {
        for name in map_names::ALL {
            assert!(name.len() <= 15, "{name} is longer than a kernel object name");
            assert!(name.ends_with(MAP_VERSION) && name.starts_with("atoll_"), "{name}");
        }
        for name in [
            program_names::CONNECT4,
            program_names::SENDMSG4,
            program_names::RECVMSG4,
            program_names::GETPEERNAME4,
            program_names::TC_INGRESS,
            program_names::TC_EGRESS,
        ] {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
