//! Drop-in mode: the same names for an Apache Mesos cluster. The operator API's `SUBSCRIBE`
//! stream (followed with `atoll-mesos-follow`, as the load balancers follow it) says when
//! something changed; each change (debounced) re-reads `/master/state`, which the projection
//! understands as Mesos-DNS does. The same stream, folded into a cluster state, gives the named
//! VIPs their addresses exactly as `atoll lb --mesos-master` hashes them, published under the
//! VIP zone (`web.marathon.l4lb.thisdcos.directory`), as DC/OS's dcos-dns does. When the master
//! does not offer the stream, `/master/state` is polled instead (without VIP names).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use atoll_lb_core::vips::hashed_names_of;
use atoll_mesos_follow::{Converted, MesosError, Subscription};
use atoll_proto::model::ClusterState;
use tokio::sync::mpsc;

use crate::daemon::{Query, Shared};
use crate::projection::Projection;

/// Polling interval without the event stream (Mesos-DNS refreshes every 60 s; a shorter one
/// keeps names fresher at little cost).
const POLL: Duration = Duration::from_secs(5);
/// Events arriving together cause one refresh.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Follows a Mesos master forever.
pub(crate) async fn follow(
    url: &str,
    projection: &mut Projection,
    shared: &Shared,
    queries: &mut mpsc::Receiver<Query>,
) {
    let base = url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    loop {
        match subscribe(&http, &base, projection, shared, queries).await {
            Ok(()) => {
                tracing::info!("the Mesos event stream ended; resubscribing in a second");
                // A master that ends every stream at once must not be hammered.
                wait_answering(Duration::from_secs(1), projection, queries).await;
            }
            Err(e) => {
                tracing::info!("no Mesos event stream ({e}); polling /master/state every {POLL:?}");
                // Poll a while, then try the stream again.
                for _ in 0..12 {
                    refresh(&http, &base, projection, shared).await;
                    wait_answering(POLL, projection, queries).await;
                }
            }
        }
        shared.metrics.connected.set(0);
    }
}

async fn wait_answering(duration: Duration, projection: &Projection, queries: &mut mpsc::Receiver<Query>) {
    let sleep = tokio::time::sleep(duration);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return,
            Some(query) = queries.recv() => answer(projection, query),
        }
    }
}

fn answer(projection: &Projection, query: Query) {
    match query {
        Query::Enumerate(reply) => {
            let _ = reply.send(projection.enumerate());
        }
    }
}

async fn subscribe(
    http: &reqwest::Client,
    base: &str,
    projection: &mut Projection,
    shared: &Shared,
    queries: &mut mpsc::Receiver<Query>,
) -> Result<(), MesosError> {
    let mut subscription = Subscription::open(http, base).await?;
    shared.metrics.connected.set(1);
    // The cluster as the load balancers see it, folded from the same stream: its named VIPs,
    // hashed as they hash them, are the l4lb names.
    let mut cluster: Option<ClusterState> = None;
    // Read the state at once, whatever the stream's first record turns out to be.
    let mut pending = true;
    loop {
        let debounce = tokio::time::sleep(if pending { DEBOUNCE } else { Duration::from_secs(3600) });
        tokio::select! {
            converted = subscription.next() => match converted? {
                Some(Converted::Snapshot(state)) => {
                    cluster = Some(state);
                    pending = true;
                }
                // Heartbeats change nothing; anything else may.
                Some(Converted::Events(events)) if events.is_empty() => {}
                Some(Converted::Events(events)) => {
                    if let Some(cluster) = cluster.as_mut() {
                        for event in &events {
                            cluster.apply(event);
                        }
                        // Folding keeps ended tasks; the converter has forgotten them.
                        cluster.tasks.retain(|t| !t.state.is_terminal());
                    }
                    pending = true;
                }
                None => return Ok(()),
            },
            _ = debounce, if pending => {
                pending = false;
                if let Some(cluster) = &cluster {
                    projection.set_named_vips(named_vips(cluster, shared.options.vip_pool));
                }
                refresh(http, base, projection, shared).await;
            }
            Some(query) = queries.recv() => answer(projection, query),
        }
    }
}

/// The named VIPs of the cluster with the addresses the load balancers hash them to.
fn named_vips(cluster: &ClusterState, pool: ipnetwork::Ipv4Network) -> BTreeMap<(String, String), IpAddr> {
    let hashed = hashed_names_of(cluster, pool);
    if !hashed.unassigned.is_empty() {
        tracing::warn!("the VIP pool {pool} has no room for {} named VIP(s)", hashed.unassigned.len());
    }
    hashed.assigned.into_iter().map(|(name, address)| ((name.framework, name.name), IpAddr::V4(address))).collect()
}

/// Re-reads `/master/state` and applies the difference.
async fn refresh(http: &reqwest::Client, base: &str, projection: &mut Projection, shared: &Shared) {
    let url = format!("{base}/master/state");
    let state = match http.get(&url).send().await {
        Ok(response) if response.status().is_success() => response.json::<serde_json::Value>().await,
        Ok(response) => {
            tracing::warn!("{url}: HTTP {}", response.status());
            return;
        }
        Err(e) => {
            tracing::warn!("{url}: {e}");
            return;
        }
    };
    match state {
        Ok(state) => match projection.reset_from_mesos_state(&state) {
            Ok(changes) => {
                shared.zone.apply(&changes, projection.serial());
                shared.metrics.changes.inc_by(changes.len() as u64);
                shared.metrics.records.set(shared.zone.snapshot().len() as i64);
            }
            Err(e) => tracing::warn!("{url}: {e}"),
        },
        Err(e) => tracing::warn!("{url}: not JSON: {e}"),
    }
}
