//! The one task that changes the kernel's network state for the actor, one operation at a time
//! in the order asked (so the bridge exists before a task's veth, and a teardown finishes before
//! the next setup that may reuse the address), each result reported back as a message.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use atoll_ipam::IpNetwork;
use tokio::sync::{mpsc, oneshot};

use super::masquerade::{Masquerade, NftTable};
use super::netlink::Netlink;
use super::{TaskNetwork, netns, routes};
use crate::actor::Msg;

pub(crate) enum NetOp {
    /// The bridge holds exactly these gateway addresses (created with the first subnet).
    Bridge {
        subnets: Vec<(IpNetwork, IpAddr)>,
    },
    Setup {
        run: String,
        net: TaskNetwork,
    },
    Teardown {
        run: String,
        net: TaskNetwork,
        sandbox: PathBuf,
    },
    /// Deletes task veths and namespaces of this agent that belong to none of `live`.
    Reconcile {
        live: Vec<TaskNetwork>,
    },
    /// Removes the task veths, the bridge, this agent's namespaces, Atoll's routes and the
    /// masquerade table (which is not installed again by this agent).
    RemoveAll {
        reply: oneshot::Sender<Removed>,
    },
}

pub(crate) enum NetReply {
    SetUp { run: String, result: Result<(), String> },
    TornDown { run: String, net: TaskNetwork, sandbox: PathBuf, result: Result<(), String> },
    Reconciled { removed_veths: usize, removed_netns: usize },
}

/// What a full removal removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub veths: usize,
    pub netns: usize,
    pub bridge: bool,
    pub routes: usize,
    /// The masquerade table was there (in any family).
    pub masquerade: bool,
}

pub(crate) struct Worker {
    pub bridge: String,
    /// This agent's namespace name prefix.
    pub prefix: String,
    pub actor: mpsc::UnboundedSender<Msg>,
    pub masquerade: Arc<Masquerade>,
}

impl Worker {
    pub(crate) async fn run(self, mut ops: mpsc::UnboundedReceiver<NetOp>) {
        let mut netlink: Option<Netlink> = None;
        while let Some(op) = ops.recv().await {
            if netlink.is_none() {
                match Netlink::connect() {
                    Ok(n) => netlink = Some(n),
                    Err(e) => tracing::error!("container networking: {e}"),
                }
            }
            let Some(nl) = netlink.as_ref() else {
                self.fail(op, "no netlink connection".into());
                continue;
            };
            match op {
                NetOp::Bridge { subnets } => {
                    if let Err(e) = sync_bridge(nl, &self.bridge, &subnets).await {
                        tracing::error!(bridge = %self.bridge, "{e}");
                    }
                }
                NetOp::Setup { run, net } => {
                    let result = setup(nl, &net).await;
                    let _ = self.actor.send(Msg::Net(NetReply::SetUp { run, result }));
                }
                NetOp::Teardown { run, net, sandbox } => {
                    let result = teardown(nl, &net).await;
                    let _ = self.actor.send(Msg::Net(NetReply::TornDown { run, net, sandbox, result }));
                }
                NetOp::Reconcile { live } => {
                    let (removed_veths, removed_netns) = reconcile(nl, &self.bridge, &self.prefix, &live).await;
                    let _ = self.actor.send(Msg::Net(NetReply::Reconciled { removed_veths, removed_netns }));
                }
                NetOp::RemoveAll { reply } => {
                    let mut removed = remove_all(nl, &self.bridge, &self.prefix).await;
                    removed.masquerade = !self.masquerade.close().await.is_empty();
                    let _ = reply.send(removed);
                }
            }
        }
    }

    fn fail(&self, op: NetOp, message: String) {
        let reply = match op {
            NetOp::Setup { run, .. } => NetReply::SetUp { run, result: Err(message) },
            NetOp::Teardown { run, net, sandbox } => NetReply::TornDown { run, net, sandbox, result: Err(message) },
            NetOp::Reconcile { .. } => NetReply::Reconciled { removed_veths: 0, removed_netns: 0 },
            NetOp::RemoveAll { reply } => {
                // The table goes through `nft`, which needs no netlink connection here.
                let masquerade = self.masquerade.clone();
                tokio::spawn(async move {
                    let removed = Removed { masquerade: !masquerade.close().await.is_empty(), ..Removed::default() };
                    let _ = reply.send(removed);
                });
                return;
            }
            NetOp::Bridge { .. } => return,
        };
        let _ = self.actor.send(Msg::Net(reply));
    }
}

async fn sync_bridge(nl: &Netlink, bridge: &str, subnets: &[(IpNetwork, IpAddr)]) -> Result<(), String> {
    if subnets.is_empty() && nl.link_index(bridge).await.map_err(|e| e.to_string())?.is_none() {
        return Ok(());
    }
    let created = nl.sync_bridge(bridge, subnets).await.map_err(|e| e.to_string())?;
    if created {
        tracing::info!(bridge, "bridge created");
    }
    let (v4, v6) = (subnets.iter().any(|(n, _)| n.is_ipv4()), subnets.iter().any(|(n, _)| n.is_ipv6()));
    // Forwarding in the agent's own network namespace: containers reach other hosts' containers
    // through it.
    if v4 && let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
        return Err(format!("cannot enable IPv4 forwarding: {e}"));
    }
    if v6 && let Err(e) = std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1") {
        return Err(format!("cannot enable IPv6 forwarding: {e}"));
    }
    Ok(())
}

async fn setup(nl: &Netlink, net: &TaskNetwork) -> Result<(), String> {
    let result = try_setup(nl, net).await;
    if result.is_err() {
        // Nothing half-made stays behind.
        let _ = teardown(nl, net).await;
    }
    result
}

async fn try_setup(nl: &Netlink, net: &TaskNetwork) -> Result<(), String> {
    // Leftovers under the same names (a crashed earlier attempt) go first.
    teardown(nl, net).await?;
    let name = net.netns.clone();
    let path = tokio::task::spawn_blocking(move || netns::create(&name))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot create network namespace {}: {e}", net.netns))?;
    let file = netns::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    nl.add_veth(net, &file).await.map_err(|e| e.to_string())?;
    let inner = Netlink::connect_in(&file).map_err(|e| e.to_string())?;
    inner.configure_task_side(net).await.map_err(|e| e.to_string())?;
    tracing::debug!(netns = %net.netns, veth = %net.veth, ip = %net.ip, "task network ready");
    Ok(())
}

async fn teardown(nl: &Netlink, net: &TaskNetwork) -> Result<(), String> {
    // Deleting one end of the pair deletes the other.
    let veth = nl.delete_link(&net.veth).await.map(|_| ()).map_err(|e| e.to_string());
    let path = net.netns_path();
    let ns = tokio::task::spawn_blocking(move || netns::delete(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot remove network namespace {}: {e}", net.netns));
    veth.and(ns)
}

async fn reconcile(nl: &Netlink, bridge: &str, prefix: &str, live: &[TaskNetwork]) -> (usize, usize) {
    let mut veths = 0;
    match nl.task_veths(bridge).await {
        Ok(names) => {
            for name in names.iter().filter(|n| !live.iter().any(|l| &l.veth == *n)) {
                match nl.delete_link(name).await {
                    Ok(_) => {
                        tracing::info!(veth = %name, "removed a veth of no live task");
                        veths += 1;
                    }
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
        Err(e) => tracing::warn!("cannot list the bridge's veths: {e}"),
    }
    let mut namespaces = 0;
    for name in netns::list(prefix).into_iter().filter(|n| !live.iter().any(|l| &l.netns == n)) {
        match netns::delete(&netns::path_of(&name)) {
            Ok(()) => {
                tracing::info!(netns = %name, "removed a network namespace of no live task");
                namespaces += 1;
            }
            Err(e) => tracing::warn!(netns = %name, "cannot remove: {e}"),
        }
    }
    (veths, namespaces)
}

pub(crate) async fn remove_all(nl: &Netlink, bridge: &str, prefix: &str) -> Removed {
    let (veths, netns) = reconcile(nl, bridge, prefix, &[]).await;
    let bridge = match nl.delete_link(bridge).await {
        Ok(existed) => existed,
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    let routes = routes::remove_all(nl).await;
    Removed { veths, netns, bridge, routes, masquerade: false }
}

/// [`remove_all`] and the masquerade table's removal from synchronous code (`atoll agent
/// --cleanup`), in the calling thread's network namespace.
pub fn remove_all_blocking(bridge: &str, prefix: &str, table: &NftTable) -> Result<Removed, String> {
    let masquerade = match table.remove_blocking() {
        Ok(families) => !families.is_empty(),
        Err(e) => {
            tracing::warn!(table = %table.name, "cannot remove the masquerade table: {e}");
            false
        }
    };
    let (bridge, prefix) = (bridge.to_owned(), prefix.to_owned());
    // A thread of its own: the caller may be inside a runtime already. It inherits the caller's
    // network namespace.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let nl = Netlink::connect().map_err(|e| e.to_string())?;
            Ok(Removed { masquerade, ..remove_all(&nl, &bridge, &prefix).await })
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the cleanup thread panicked".into()))
}
