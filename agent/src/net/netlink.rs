//! The kernel side of container networking over rtnetlink: the bridge and its addresses, a
//! task's veth pair, address and default route, and Atoll's routes to other hosts' subnets.
//! Every operation that removes something treats "already gone" as done.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use atoll_ipam::IpNetwork;
use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::routes::Route;
use super::{ROUTE_PROTOCOL, TASK_IFACE, TaskNetwork, VETH_PREFIX, netns};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("bridge {0} does not exist (no subnet assigned yet?)")]
    NoBridge(String),
}

fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A netlink connection bound to one network namespace (the one of the thread that opened it).
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// A connection in the calling thread's namespace. Needs a tokio runtime.
    pub fn connect() -> Result<Netlink, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        Ok(Netlink { handle, connection: tokio::spawn(connection) })
    }

    /// A connection in the namespace `netns` (opened from a thread that joined it).
    pub fn connect_in(netns: &File) -> Result<Netlink, NetlinkError> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle, _) = netns::run_in(netns, move || {
            let _entered = runtime.enter();
            rtnetlink::new_connection()
        })
        .map_err(NetlinkError::Socket)?;
        Ok(Netlink { handle, connection: tokio::spawn(connection) })
    }

    /// The index of link `name`, if it exists.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(request(format!("looking up link {name}"))(e)),
        }
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, NetlinkError> {
        self.handle.link().get().execute().try_collect().await.map_err(request("listing links"))
    }

    /// Deletes link `name`; a missing one is fine. Returns whether it existed.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(index) = self.link_index(name).await? else { return Ok(false) };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(request(format!("deleting link {name}"))(e)),
        }
    }

    async fn set_up(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(request(format!("setting {name} up")))
    }

    /// Addresses on a link, with their prefix lengths.
    async fn addresses(&self, index: u32) -> Result<BTreeSet<(IpAddr, u8)>, NetlinkError> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(request("listing addresses"))?;
        let mut out = BTreeSet::new();
        for m in messages.iter().filter(|m| m.header.index == index) {
            for attr in &m.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    out.insert((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Makes bridge `name` exist, be up and hold exactly the gateway addresses of `subnets`
    /// (`gateway/prefix`); creates it if needed. Returns whether it was created.
    pub async fn sync_bridge(&self, name: &str, subnets: &[(IpNetwork, IpAddr)]) -> Result<bool, NetlinkError> {
        let mut created = false;
        let index = match self.link_index(name).await? {
            Some(index) => index,
            None => {
                match self.handle.link().add(LinkBridge::new(name).build()).execute().await {
                    Ok(()) => created = true,
                    Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(request(format!("creating bridge {name}"))(e)),
                }
                self.link_index(name).await?.ok_or_else(|| NetlinkError::NoBridge(name.to_owned()))?
            }
        };
        let want: BTreeSet<(IpAddr, u8)> = subnets.iter().map(|(net, gw)| (*gw, net.prefix())).collect();
        let have = self.addresses(index).await?;
        for (ip, prefix) in want.difference(&have) {
            match self.handle.address().add(index, *ip, *prefix).execute().await {
                Ok(()) => {}
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(request(format!("adding {ip}/{prefix} to {name}"))(e)),
            }
        }
        // Link-local IPv6 addresses are the kernel's; only global ones Atoll put there go.
        let stale: Vec<(IpAddr, u8)> = have
            .difference(&want)
            .filter(|(ip, _)| match ip {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            })
            .copied()
            .collect();
        if !stale.is_empty() {
            let messages: Vec<_> = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await
                .map_err(request("listing addresses"))?;
            for m in messages.into_iter().filter(|m| m.header.index == index) {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                if ip.is_some_and(|ip| stale.contains(&(ip, m.header.prefix_len))) {
                    self.handle
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(request(format!("removing an address of {name}")))?;
                }
            }
        }
        self.set_up(index, name).await?;
        Ok(created)
    }

    /// Creates the task's veth pair: `net.veth` in the bridge and up, its peer `eth0` directly
    /// inside the namespace `netns`.
    pub async fn add_veth(&self, net: &TaskNetwork, netns: &File) -> Result<(), NetlinkError> {
        let bridge = self.link_index(&net.bridge).await?.ok_or_else(|| NetlinkError::NoBridge(net.bridge.clone()))?;
        let peer =
            LinkMessageBuilder::<LinkUnspec>::new().name(TASK_IFACE.to_owned()).setns_by_fd(netns.as_raw_fd()).build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(rtnetlink::packet_route::link::InfoKind::Veth)
            .name(net.veth.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge)
            .up()
            .build();
        self.handle.link().add(message).execute().await.map_err(request(format!("creating veth pair {}", net.veth)))
    }

    /// Inside the task's namespace (a connection made with [`Netlink::connect_in`]): `lo` and
    /// `eth0` up, the address, the default route via the gateway.
    pub async fn configure_task_side(&self, net: &TaskNetwork) -> Result<(), NetlinkError> {
        let lo = self.link_index("lo").await?.ok_or_else(|| NetlinkError::Io {
            what: "the namespace has no lo".into(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        self.set_up(lo, "lo").await?;
        let eth = self.link_index(TASK_IFACE).await?.ok_or_else(|| NetlinkError::Io {
            what: format!("the namespace has no {TASK_IFACE}"),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        self.handle
            .address()
            .add(eth, net.ip, net.prefix)
            .execute()
            .await
            .map_err(request(format!("adding {}/{} to {TASK_IFACE}", net.ip, net.prefix)))?;
        self.set_up(eth, TASK_IFACE).await?;
        let default = match net.gateway {
            IpAddr::V4(_) => {
                RouteMessageBuilder::<IpAddr>::new().destination_prefix(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
            }
            IpAddr::V6(_) => {
                RouteMessageBuilder::<IpAddr>::new().destination_prefix(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
            }
        }
        .and_then(|b| b.gateway(net.gateway))
        .map_err(|e| NetlinkError::Io {
            what: "building the default route".into(),
            source: io::Error::other(e.to_string()),
        })?
        .output_interface(eth)
        .build();
        self.handle
            .route()
            .add(default)
            .execute()
            .await
            .map_err(request(format!("adding the default route via {}", net.gateway)))
    }

    /// Names of task veths (`vatoll*`) that are ports of `bridge`.
    pub async fn task_veths(&self, bridge: &str) -> Result<Vec<String>, NetlinkError> {
        let Some(bridge_index) = self.link_index(bridge).await? else { return Ok(Vec::new()) };
        let mut names = Vec::new();
        for link in self.links().await? {
            let mut name = None;
            let mut controller = None;
            for attr in &link.attributes {
                match attr {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Controller(c) => controller = Some(*c),
                    _ => {}
                }
            }
            if let Some(name) = name
                && name.starts_with(VETH_PREFIX)
                && controller == Some(bridge_index)
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Atoll's routes in the main table (protocol [`ROUTE_PROTOCOL`]).
    pub async fn atoll_routes(&self) -> Result<Vec<(Route, RouteMessage)>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessageBuilder::<IpAddr>::new().build();
            query.header.address_family = family;
            let routes: Vec<RouteMessage> =
                self.handle.route().get(query).execute().try_collect().await.map_err(request("listing routes"))?;
            for message in routes {
                if message.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
                    || message.header.table != RouteHeader::RT_TABLE_MAIN
                {
                    continue;
                }
                let mut dest = None;
                let mut via = None;
                for attr in &message.attributes {
                    match attr {
                        RouteAttribute::Destination(a) => dest = route_ip(a),
                        RouteAttribute::Gateway(a) => via = route_ip(a),
                        _ => {}
                    }
                }
                let (Some(dest), Some(via)) = (dest, via) else { continue };
                let Ok(dest) = IpNetwork::new(dest, message.header.destination_prefix_length) else { continue };
                out.push((Route { dest, via }, message));
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) `dest via via`, marked as Atoll's.
    pub async fn add_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let what = format!("adding route {} via {}", route.dest, route.via);
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dest.network(), route.dest.prefix())
            .and_then(|b| b.gateway(route.via))
            .map_err(|e| NetlinkError::Io { what: what.clone(), source: io::Error::other(e.to_string()) })?
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        self.handle.route().add(message).replace().execute().await.map_err(request(what))
    }

    pub async fn delete_route(&self, message: RouteMessage) -> Result<(), NetlinkError> {
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(request("deleting a route")(e)),
        }
    }
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
