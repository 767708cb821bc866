//! Addresses as integers.
//!
//! All arithmetic (subnet indices, free ranges) is done on `u128`, IPv4 addresses being the low
//! 32 bits, so one code path serves both families; the family travels alongside.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNetwork) -> Family {
        Family::of(net.ip())
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The longest subnet prefix that still holds a task address next to the network, gateway
    /// and last (broadcast) addresses: 4 addresses, i.e. /30 and /126.
    pub fn max_subnet_len(self) -> u8 {
        self.bits() - 2
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        // Callers only pass values computed inside an IPv4 span, so the truncation is exact.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// Whether a CIDR was written with bits set after its prefix (`198.18.0.5/16`); such a value is
/// almost always a typo, and accepting it would make two spellings of one network compare unequal.
pub(crate) fn has_host_bits(net: &IpNetwork) -> bool {
    net.ip() != net.network()
}

/// The network `lo/prefix`; `prefix` has been validated against the family by the caller.
pub(crate) fn network(family: Family, lo: u128, prefix: u8) -> IpNetwork {
    IpNetwork::new(from_u128(family, lo), prefix).expect("prefix validated against the address family")
}

/// An inclusive address range of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub family: Family,
    pub lo: u128,
    pub hi: u128,
}

impl Span {
    pub fn of(net: &IpNetwork) -> Span {
        Span { family: Family::of_net(net), lo: to_u128(net.network()), hi: to_u128(net.broadcast()) }
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.lo..=self.hi).contains(&to_u128(ip))
    }

    pub fn contains(&self, other: &Span) -> bool {
        self.family == other.family && self.lo <= other.lo && other.hi <= self.hi
    }

    pub fn overlaps(&self, other: &Span) -> bool {
        self.family == other.family && self.lo <= other.hi && other.lo <= self.hi
    }
}
