//! Routes to other hosts' container subnets: `<other agent's subnet> via <other agent's IP>`.
//!
//! The pure part: [`Peers`] is a projection of the master's event stream (snapshot + agent
//! events) onto what routing needs — each agent's address and subnets; [`desired_routes`] turns
//! it into the routes this host needs and [`diff`] into what to add and remove. The thin shell,
//! [`follow`], subscribes to `atoll.v1.operator.Operator/Subscribe`, keeps the projection and
//! applies the difference to the kernel through rtnetlink, marking its routes with
//! [`super::ROUTE_PROTOCOL`] so that it only ever removes its own, and keeps the masquerade table
//! ([`super::masquerade`]) in step with the cluster's container subnets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use atoll_ipam::IpNetwork;
use atoll_proto::model::{Agent, ClusterState, Event, EventKind, StreamMessage};
use atoll_proto::pb::v1::operator as opb;
use tokio::sync::watch;

use super::masquerade::Masquerade;
use super::netlink::Netlink;

/// One route: packets for `dest` go to the host `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dest: IpNetwork,
    pub via: IpAddr,
}

/// What routing needs to know about another agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ip: IpAddr,
    pub subnets: Vec<IpNetwork>,
}

/// This agent, so that it never routes to itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Me {
    pub agent_id: Option<String>,
    pub ip: Option<IpAddr>,
    /// Its own subnets (reached directly through the bridge).
    pub subnets: Vec<IpNetwork>,
}

/// The agents of the cluster, by id, as far as routing is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    agents: BTreeMap<String, Peer>,
}

fn peer_of(agent: &Agent) -> Peer {
    Peer { ip: agent.address.ip(), subnets: agent.subnets.iter().map(|s| s.network).collect() }
}

impl Peers {
    pub fn from_state(state: &ClusterState) -> Peers {
        Peers { agents: state.agents.iter().map(|a| (a.id.as_str().to_owned(), peer_of(a))).collect() }
    }

    /// Applies one event; returns whether anything routing cares about changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        match &event.kind {
            EventKind::AgentAdded { agent } | EventKind::AgentUpdated { agent } => {
                let peer = peer_of(agent);
                self.agents.insert(agent.id.as_str().to_owned(), peer.clone()) != Some(peer)
            }
            EventKind::AgentRemoved { agent_id } => self.agents.remove(agent_id.as_str()).is_some(),
            _ => false,
        }
    }

    pub fn insert(&mut self, id: &str, peer: Peer) {
        self.agents.insert(id.to_owned(), peer);
    }

    /// Every container subnet of the cluster (any agent's, routed or not), sorted.
    pub fn subnets(&self) -> Vec<IpNetwork> {
        let all: BTreeSet<IpNetwork> = self.agents.values().flat_map(|p| p.subnets.iter().copied()).collect();
        all.into_iter().collect()
    }
}

/// The routes this host needs: every subnet of every other agent via that agent's IP. Skipped:
/// this agent (by id or address), agents without a usable address, subnets of another family
/// than the next hop, subnets overlapping this agent's own, and a second claim on a subnet (the
/// agent with the lowest id wins; the master never leases one subnet twice).
pub fn desired_routes(me: &Me, peers: &Peers) -> BTreeSet<Route> {
    let mut by_dest: BTreeMap<IpNetwork, IpAddr> = BTreeMap::new();
    for (id, peer) in &peers.agents {
        if me.agent_id.as_deref() == Some(id.as_str()) || me.ip == Some(peer.ip) {
            continue;
        }
        if peer.ip.is_unspecified() || peer.ip.is_loopback() || peer.ip.is_multicast() {
            continue;
        }
        for dest in &peer.subnets {
            if dest.is_ipv4() != peer.ip.is_ipv4() || me.subnets.iter().any(|own| overlaps(own, dest)) {
                continue;
            }
            let clash = by_dest.keys().any(|d| d != dest && overlaps(d, dest));
            if !clash {
                by_dest.entry(*dest).or_insert(peer.ip);
            }
        }
    }
    by_dest.into_iter().map(|(dest, via)| Route { dest, via }).collect()
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// What to add and what to remove to get from `current` to `desired`. A route whose next hop
/// changed is removed and added.
pub fn diff(current: &BTreeSet<Route>, desired: &BTreeSet<Route>) -> (Vec<Route>, Vec<Route>) {
    let add = desired.difference(current).copied().collect();
    let remove = current.difference(desired).copied().collect();
    (add, remove)
}

/// Applies `desired` to the kernel: adds what is missing, removes Atoll routes not wanted.
/// Returns how many changes failed (they are retried at the next sync).
pub async fn sync_kernel(netlink: &Netlink, desired: &BTreeSet<Route>) -> usize {
    let current = match netlink.atoll_routes().await {
        Ok(current) => current,
        Err(e) => {
            tracing::warn!("cannot read the routes: {e}");
            return 1;
        }
    };
    let have: BTreeSet<Route> = current.iter().map(|(r, _)| *r).collect();
    let (add, remove) = diff(&have, desired);
    let mut failed = 0;
    for (route, message) in current {
        if remove.contains(&route) {
            match netlink.delete_route(message).await {
                Ok(()) => tracing::info!(dest = %route.dest, via = %route.via, "route removed"),
                Err(e) => {
                    failed += 1;
                    tracing::warn!("{e}");
                }
            }
        }
    }
    for route in add {
        match netlink.add_route(&route).await {
            Ok(()) => tracing::info!(dest = %route.dest, via = %route.via, "route to another host's subnet added"),
            Err(e) => {
                failed += 1;
                tracing::warn!("{e}");
            }
        }
    }
    failed
}

/// Removes every Atoll route (cleanup).
pub async fn remove_all(netlink: &Netlink) -> usize {
    let Ok(current) = netlink.atoll_routes().await else { return 0 };
    let mut removed = 0;
    for (_, message) in current {
        if netlink.delete_route(message).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

const RESYNC: Duration = Duration::from_secs(30);

/// Follows the master's event stream forever and keeps this namespace's routes to the other
/// agents' subnets, and the masquerade table in step with them (every container subnet of the
/// cluster keeps its source). Waits until `me` is `Some` (container networking is active on this
/// agent).
pub(crate) async fn follow(master: String, mut me: watch::Receiver<Option<Me>>, masquerade: Arc<Masquerade>) {
    masquerade.start().await;
    let mut retry = Duration::from_millis(200);
    loop {
        if me.wait_for(Option::is_some).await.is_err() {
            return;
        }
        let netlink = match Netlink::connect() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("routes: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let mut client = match opb::operator_client::OperatorClient::connect(master.clone()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("routes: cannot reach the master's event stream at {master}: {e}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut stream = match client.subscribe(opb::SubscribeRequest { since: None }).await {
            Ok(response) => response.into_inner(),
            Err(e) => {
                tracing::warn!("routes: subscribing to the master's events: {e}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        retry = Duration::from_millis(200);
        let mut peers: Option<Peers> = None;
        let mut ticker = tokio::time::interval(RESYNC);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut changed = false;
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(message)) => match StreamMessage::try_from(message) {
                        Ok(StreamMessage::Snapshot { state }) => {
                            peers = Some(Peers::from_state(&state));
                            changed = true;
                        }
                        Ok(StreamMessage::Event { event }) => {
                            if let Some(p) = peers.as_mut() {
                                changed = p.apply(&event);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("routes: bad message from the master: {e}"),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("routes: event stream: {e}");
                        break;
                    }
                },
                result = me.changed() => {
                    if result.is_err() {
                        return;
                    }
                    changed = true;
                }
                _ = ticker.tick() => changed = true,
            }
            let current_me = me.borrow().clone();
            if !changed {
                continue;
            }
            match (&peers, current_me) {
                (Some(peers), Some(current_me)) => {
                    sync_kernel(&netlink, &desired_routes(&current_me, peers)).await;
                    masquerade.sync(&current_me.subnets, &peers.subnets()).await;
                }
                // No subnets any more: nothing to masquerade.
                (_, None) => masquerade.sync(&[], &[]).await,
                (None, Some(_)) => {}
            }
        }
        tokio::time::sleep(retry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peers(list: &[(&str, &str, &[&str])]) -> Peers {
        let mut p = Peers::default();
        for (id, addr, subnets) in list {
            p.insert(id, Peer { ip: ip(addr), subnets: subnets.iter().map(|s| net(s)).collect() });
        }
        p
    }

    fn route(dest: &str, via: &str) -> Route {
        Route { dest: net(dest), via: ip(via) }
    }

    #[test]
    fn routes_to_every_other_agent_subnet() {
        let me = Me { agent_id: Some("a1".into()), ip: Some(ip("198.19.255.1")), subnets: vec![net("198.18.1.0/24")] };
        let p = peers(&[
            ("a1", "198.19.255.1", &["198.18.1.0/24"]),
            ("a2", "198.19.255.2", &["198.18.2.0/24", "198.18.20.0/24"]),
            ("a3", "198.19.255.3", &["198.18.3.0/24"]),
            // No subnet yet, no route.
            ("a4", "198.19.255.4", &[]),
        ]);
        assert_eq!(
            desired_routes(&me, &p),
            [
                route("198.18.2.0/24", "198.19.255.2"),
                route("198.18.20.0/24", "198.19.255.2"),
                route("198.18.3.0/24", "198.19.255.3")
            ]
            .into()
        );
    }

    #[test]
    fn never_routes_to_itself_or_through_nowhere() {
        let me =
            Me { agent_id: Some("new-id".into()), ip: Some(ip("198.19.255.1")), subnets: vec![net("198.18.1.0/24")] };
        let p = peers(&[
            // This host under an older id: same address.
            ("old-id", "198.19.255.1", &["198.18.9.0/24"]),
            ("lo", "127.0.0.1", &["198.18.4.0/24"]),
            ("unspec", "0.0.0.0", &["198.18.5.0/24"]),
            // Overlaps this agent's own subnet.
            ("b", "198.19.255.2", &["198.18.1.0/25", "198.18.6.0/24"]),
            // IPv6 subnet behind an IPv4 next hop: not expressible as a plain gateway route.
            ("c", "198.19.255.3", &["2001:db8:0:7::/64"]),
            // A second claim on b's subnet.
            ("d", "198.19.255.4", &["198.18.6.0/24"]),
            ("e", "2001:db8::5", &["2001:db8:0:5::/64"]),
        ]);
        assert_eq!(
            desired_routes(&me, &p),
            [route("198.18.6.0/24", "198.19.255.2"), route("2001:db8:0:5::/64", "2001:db8::5")].into()
        );
        // Before registration (no id yet) the address still identifies this host.
        let anonymous = Me { agent_id: None, ..me };
        assert!(!desired_routes(&anonymous, &p).iter().any(|r| r.via == ip("198.19.255.1")));
    }

    #[test]
    fn diff_adds_missing_and_removes_stale() {
        let current = [route("198.18.2.0/24", "198.19.255.2"), route("198.18.3.0/24", "198.19.255.3")].into();
        let desired = [route("198.18.2.0/24", "198.19.255.9"), route("198.18.4.0/24", "198.19.255.4")].into();
        let (add, remove) = diff(&current, &desired);
        assert_eq!(add, [route("198.18.2.0/24", "198.19.255.9"), route("198.18.4.0/24", "198.19.255.4")]);
        assert_eq!(remove, [route("198.18.2.0/24", "198.19.255.2"), route("198.18.3.0/24", "198.19.255.3")]);
        assert_eq!(diff(&desired, &desired), (vec![], vec![]));
    }

    #[test]
    fn events_update_the_projection() {
        use atoll_proto::model::{AgentId, AgentState, AgentSubnet, Attributes, Resources, Time};
        let agent = |id: &str, addr: &str, subnets: &[&str]| Agent {
            id: AgentId::new(id),
            hostname: id.into(),
            address: format!("{addr}:5051").parse().unwrap(),
            resources: Resources::new(),
            used: Resources::new(),
            attributes: Attributes::default(),
            state: AgentState::Active,
            drain: false,
            deactivated: false,
            drain_config: None,
            registered_at: Time(1),
            version: String::new(),
            subnets: subnets
                .iter()
                .map(|s| AgentSubnet { pool: "atoll".into(), network: net(s), gateway: net(s).network() })
                .collect(),
        };
        let event = |index, kind| Event { index, timestamp: Time(index), kind };
        let state = ClusterState { index: 5, agents: vec![agent("a2", "198.19.255.2", &[])], ..Default::default() };
        let mut p = Peers::from_state(&state);
        let me = Me { agent_id: Some("a1".into()), ..Default::default() };
        assert!(desired_routes(&me, &p).is_empty());
        let updated = agent("a2", "198.19.255.2", &["198.18.2.0/24"]);
        assert!(p.apply(&event(6, EventKind::AgentUpdated { agent: updated.clone() })));
        assert!(!p.apply(&event(7, EventKind::AgentUpdated { agent: updated })), "no change, no resync");
        assert_eq!(desired_routes(&me, &p), [route("198.18.2.0/24", "198.19.255.2")].into());
        assert!(p.apply(&event(8, EventKind::AgentAdded { agent: agent("a3", "198.19.255.3", &["198.18.3.0/24"]) })));
        assert_eq!(desired_routes(&me, &p).len(), 2);
        assert!(p.apply(&event(9, EventKind::AgentRemoved { agent_id: AgentId::new("a2") })));
        assert_eq!(desired_routes(&me, &p), [route("198.18.3.0/24", "198.19.255.3")].into());
    }
}
