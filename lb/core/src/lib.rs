//! The pure core of Atoll's load balancers: everything the `lb/l4` shell and the edge proxy
//! decide, with no I/O, no clock and no randomness, so that tests drive it without a kernel
//! or sockets. [`edge`] is the HTTP edge's route table; the rest is layer 4.
//!
//! Data flows through three stages, each usable on its own:
//!
//! 1. [`vips`]: the master's event stream (snapshot + events) → the set of [`vips::Service`]s
//!    the node must serve: VIP address, port and protocol with weighted backends. Named VIPs
//!    (`VIP_0=/web:80`) get their address from the master's [`vips::VipAllocator`]; fixed VIPs
//!    (`VIP_0=198.19.200.1:80`) carry it in the label.
//! 2. [`maglev`]: a backend set → a Maglev lookup table (the NSDI 2016 paper), deterministic
//!    across runs and machines, with weights.
//! 3. [`dataplane`]: services → an ordered list of BPF map operations ([`dataplane::MapOp`])
//!    that keeps the kernel consistent after every single operation: backends before the tables
//!    that name them, tables before the services that point at them, identical backend sets
//!    sharing one table, and nothing freed while in use.
//!
//! The kernel types ([`ServiceKey`], [`ServiceValue`], [`Backend`]) come from
//! `atoll-ebpf-common`, addresses and ports in network byte order; [`service_key`] and
//! [`key_parts`] convert from and to host types.

pub mod dataplane;
pub mod edge;
pub mod maglev;
mod siphash;
pub mod vips;

use std::fmt;
use std::net::Ipv4Addr;

pub use atoll_ebpf_common::{Backend, DEFAULT_MAGLEV_SIZE, PROTO_TCP, PROTO_UDP, ServiceKey, ServiceValue};

/// The kernel's key for `address:port/proto` (address and port in network byte order).
pub fn service_key(address: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
    ServiceKey { address: u32::from_ne_bytes(address.octets()), port: port.to_be(), proto, _pad: 0 }
}

/// The host-order parts of a kernel service key: address, port, protocol.
pub fn key_parts(key: &ServiceKey) -> (Ipv4Addr, u16, u8) {
    (Ipv4Addr::from(key.address.to_ne_bytes()), u16::from_be(key.port), key.proto)
}

/// The kernel's backend value for `address:port/proto`.
pub fn backend_value(address: Ipv4Addr, port: u16, proto: u8) -> Backend {
    Backend { address: u32::from_ne_bytes(address.octets()), port: port.to_be(), proto, flags: 0 }
}

/// `tcp`, `udp`, or the number for any other protocol.
pub fn protocol_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "tcp".to_owned(),
        PROTO_UDP => "udp".to_owned(),
        other => other.to_string(),
    }
}

/// Displays a service key as `198.19.0.1:80/tcp`.
#[derive(Clone, Copy, Debug)]
pub struct DisplayKey<'a>(pub &'a ServiceKey);

impl fmt::Display for DisplayKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (address, port, proto) = key_parts(self.0);
        write!(f, "{address}:{port}/{}", protocol_name(proto))
    }
}

/// Orders service keys by host-order address, port, protocol (the kernel type has no `Ord`,
/// and its network-order fields would sort oddly): every map and list here uses this order,
/// so outputs are deterministic.
pub(crate) type OrdKey = (Ipv4Addr, u16, u8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_in_network_byte_order() {
        let key = service_key(Ipv4Addr::new(198, 19, 0, 1), 80, PROTO_TCP);
        // In memory the address reads 198.19.0.1 and the port 0x0050, whatever the host's order.
        assert_eq!(key.address.to_ne_bytes(), [198, 19, 0, 1]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(key_parts(&key), (Ipv4Addr::new(198, 19, 0, 1), 80, PROTO_TCP));
        assert_eq!(DisplayKey(&key).to_string(), "198.19.0.1:80/tcp");
        let backend = backend_value(Ipv4Addr::new(198, 18, 1, 2), 8080, PROTO_UDP);
        assert_eq!(backend.address.to_ne_bytes(), [198, 18, 1, 2]);
        assert_eq!(backend.port.to_ne_bytes(), 8080u16.to_be_bytes());
    }
}
