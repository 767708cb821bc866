//! Follows the master's event stream: the cluster state (snapshot, then events) → the apps →
//! a new route table, published whole after every change. Reconnects with backoff; meanwhile
//! the last table keeps serving.

use std::sync::Arc;
use std::time::Duration;

use atoll_lb_core::edge::{EdgeApps, RouteTable};
use atoll_proto::model::{ClusterState, StreamMessage};
use atoll_proto::pb::v1::operator as opb;

use crate::state::{EdgeState, Snapshot};

pub async fn follow(state: Arc<EdgeState>) {
    let url = state.options.master.clone();
    let mut retry = Duration::from_millis(100);
    let mut cluster: Option<ClusterState> = None;
    let mut reported_problems = Vec::new();
    loop {
        match opb::operator_client::OperatorClient::connect(url.clone()).await {
            Err(e) => tracing::warn!("cannot reach the master at {url}: {e}"),
            Ok(mut client) => match client.subscribe(opb::SubscribeRequest { since: None }).await {
                Err(e) => tracing::warn!("subscribing to {url}: {e}"),
                Ok(response) => {
                    retry = Duration::from_millis(100);
                    state.metrics.connected.set(1);
                    let mut stream = response.into_inner();
                    loop {
                        let message = match stream.message().await {
                            Ok(Some(message)) => message,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!("event stream from {url}: {e}");
                                break;
                            }
                        };
                        match StreamMessage::try_from(message) {
                            Ok(StreamMessage::Snapshot { state: snapshot }) => cluster = Some(snapshot),
                            Ok(StreamMessage::Event { event }) => match cluster.as_mut() {
                                Some(cluster) => cluster.apply(&event),
                                None => continue,
                            },
                            Ok(_) => continue,
                            Err(e) => {
                                tracing::warn!("bad message from the master: {e}");
                                continue;
                            }
                        }
                        if let Some(cluster) = &cluster {
                            let table = RouteTable::build(&EdgeApps::from_state(cluster), &state.options.group);
                            let problems = table.problems().to_vec();
                            for problem in problems.iter().filter(|p| !reported_problems.contains(*p)) {
                                tracing::warn!("route labels: {problem}");
                            }
                            reported_problems = problems;
                            state.publish(Snapshot::new(table, cluster.index));
                        }
                    }
                    state.metrics.connected.set(0);
                }
            },
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(5));
    }
}

/// Publishes a table for every value of `apps` (their count is the table's index).
pub async fn follow_apps(state: Arc<EdgeState>, mut apps: tokio::sync::watch::Receiver<EdgeApps>) {
    let mut index = 0;
    loop {
        let table = RouteTable::build(&apps.borrow_and_update(), &state.options.group);
        index += 1;
        state.publish(Snapshot::new(table, index));
        if apps.changed().await.is_err() {
            return;
        }
    }
}
