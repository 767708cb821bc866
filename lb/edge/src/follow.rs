//! Follows the source of the apps — the master's event stream (the cluster state: snapshot,
//! then events), a Marathon's apps, or a Mesos master's operator API stream — into a new
//! route table, published whole after every change. Reconnects with backoff; meanwhile the
//! last table keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_lb_core::edge::{EdgeApps, RouteTable};
use atoll_mesos_follow::{Converted, MesosConverter, PortView, Subscription};
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
                                Some(cluster) => {
                                    cluster.apply(&event);
                                    // Ended tasks take no requests; folding would keep them all
                                    // for as long as the stream lives.
                                    cluster.tasks.retain(|t| !t.state.is_terminal());
                                }
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

/// How often a followed Marathon is asked for its apps while its event bus is not followed.
const MARATHON_POLL: Duration = Duration::from_secs(1);
/// With the event bus followed, the apps are fetched when Marathon announces a change; this
/// slow poll only guards against an event lost on the way.
const MARATHON_SAFETY_POLL: Duration = Duration::from_secs(30);
/// Events arriving together cause one fetch.
const MARATHON_DEBOUNCE: Duration = Duration::from_millis(50);

/// Aborts a helper task when its owner ends (the edge aborts the follower, not its helpers).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows a Marathon as Marathon-LB does in its `sse` mode: its apps with their tasks
/// (`/v2/apps?embed=apps.tasks`) fetched whenever its event bus (`/v2/events`) announces a
/// change, polled while the bus cannot be followed; agent host names resolved here, a new
/// table whenever what the apps ask for changed.
pub async fn follow_marathon(state: Arc<EdgeState>, url: String) {
    let http = reqwest::Client::new();
    let apps_url = format!("{url}/v2/apps?embed=apps.tasks");
    let changed = Arc::new(tokio::sync::Notify::new());
    let (bus_tx, bus) = tokio::sync::watch::channel(false);
    let _events = AbortOnDrop(tokio::spawn(follow_marathon_events(
        http.clone(),
        format!("{url}/v2/events"),
        changed.clone(),
        bus_tx,
    )));
    let mut index = 0;
    let mut last: Option<EdgeApps> = None;
    let mut resolved: std::collections::HashMap<String, Option<std::net::IpAddr>> = std::collections::HashMap::new();
    loop {
        match fetch_marathon(&http, &apps_url).await {
            Ok(mut marathon) => {
                state.metrics.connected.set(1);
                for app in &mut marathon.apps {
                    for task in &mut app.tasks {
                        if task.host.parse::<std::net::IpAddr>().is_ok() || task.host.is_empty() {
                            continue;
                        }
                        if !resolved.contains_key(&task.host) {
                            let ip = tokio::net::lookup_host((task.host.as_str(), 0))
                                .await
                                .ok()
                                .and_then(|mut addrs| addrs.next())
                                .map(|a| a.ip());
                            resolved.insert(task.host.clone(), ip);
                        }
                        if let Some(Some(ip)) = resolved.get(&task.host) {
                            task.host = ip.to_string();
                        }
                    }
                }
                let apps = marathon.to_edge_apps();
                if last.as_ref() != Some(&apps) {
                    index += 1;
                    let table = RouteTable::build(&apps, &state.options.group);
                    for problem in table.problems() {
                        tracing::warn!("route labels: {problem}");
                    }
                    state.publish(Snapshot::new(table, index));
                    last = Some(apps);
                }
            }
            Err(e) => {
                state.metrics.connected.set(0);
                tracing::warn!("{apps_url}: {e}");
            }
        }
        let wait = if *bus.borrow() { MARATHON_SAFETY_POLL } else { MARATHON_POLL };
        tokio::select! {
            _ = changed.notified() => {
                state.metrics.marathon_events.inc();
                tokio::time::sleep(MARATHON_DEBOUNCE).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Follows Marathon's event bus (server-sent events), telling `changed` of every event that
/// may change the apps, and `bus` whether it is followed; reconnects with backoff.
async fn follow_marathon_events(
    http: reqwest::Client,
    url: String,
    changed: Arc<tokio::sync::Notify>,
    bus: tokio::sync::watch::Sender<bool>,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let response = http.get(&url).header("Accept", "text/event-stream").send().await;
        match response {
            Ok(response)
                if response.status().is_success()
                    && response
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/event-stream")) =>
            {
                tracing::info!("following Marathon's event bus at {url}");
                retry = Duration::from_secs(1);
                let _ = bus.send(true);
                // Whatever happened while the bus was not followed is fetched now.
                changed.notify_one();
                let mut response = response;
                let mut buffer = String::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        if marathon_event_may_change_apps(&block) {
                            changed.notify_one();
                        }
                    }
                }
                tracing::warn!("Marathon's event bus at {url} ended; polling its apps meanwhile");
                let _ = bus.send(false);
            }
            Ok(response) => {
                tracing::info!("no event bus at {url} (HTTP {}): polling Marathon's apps", response.status());
            }
            Err(e) => tracing::info!("no event bus at {url} ({e}): polling Marathon's apps"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

/// Whether a server-sent event block is a Marathon event that may change the apps: any event
/// but a bus's own (attachment, detachment) and keep-alive comments.
fn marathon_event_may_change_apps(block: &str) -> bool {
    let mut kind = None;
    let mut has_data = false;
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            kind = Some(name.trim().to_owned());
        } else if line.starts_with("data:") {
            has_data = true;
        }
    }
    match kind.as_deref() {
        Some("event_stream_attached" | "event_stream_detached") => false,
        Some(_) => true,
        None => has_data,
    }
}

async fn fetch_marathon(
    http: &reqwest::Client,
    url: &str,
) -> Result<atoll_lb_core::edge::source::MarathonApps, String> {
    let response = http.get(url).timeout(Duration::from_secs(10)).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("not Marathon's apps JSON: {e}"))
}

/// Follows a Mesos master's operator API (`POST /api/v1` `SUBSCRIBE`): its tasks, converted
/// with every discovery port kept in place ([`PortView::All`]), grouped into apps
/// ([`EdgeApps::from_mesos_state`]); a new table whenever what they ask for changed. Each
/// subscription starts over from the master's whole state, so a new one after a disconnect
/// (with [`atoll_mesos_follow::next_retry`]'s backoff) simply replaces the apps.
pub async fn follow_mesos(state: Arc<EdgeState>, url: String) {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    // The tables' index: the converter numbers a stream's events afresh at each subscription.
    let mut index = 0;
    let mut last: Option<EdgeApps> = None;
    let mut reported_problems = Vec::new();
    let mut retry = atoll_mesos_follow::MIN_RETRY;
    loop {
        let converter = MesosConverter::with_ports(PortView::All);
        let lived = match Subscription::open_with(&http, &url, converter).await {
            Err(e) => {
                tracing::warn!("no Mesos event stream: {e}");
                None
            }
            Ok(mut subscription) => {
                tracing::info!("following the Mesos master at {url}");
                state.metrics.connected.set(1);
                let opened = Instant::now();
                let mut cluster: Option<ClusterState> = None;
                loop {
                    match subscription.next().await {
                        Ok(Some(Converted::Snapshot(snapshot))) => cluster = Some(snapshot),
                        Ok(Some(Converted::Events(events))) => match cluster.as_mut() {
                            Some(cluster) if !events.is_empty() => {
                                for event in &events {
                                    cluster.apply(event);
                                }
                                // Folding keeps ended tasks; the converter has forgotten them.
                                cluster.tasks.retain(|t| !t.state.is_terminal());
                            }
                            _ => continue,
                        },
                        Ok(None) => {
                            tracing::warn!("the Mesos master at {url} ended the event stream");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("Mesos event stream: {e}");
                            break;
                        }
                    }
                    let Some(cluster) = &cluster else { continue };
                    let apps = EdgeApps::from_mesos_state(cluster);
                    if last.as_ref() == Some(&apps) {
                        continue;
                    }
                    index += 1;
                    let table = RouteTable::build(&apps, &state.options.group);
                    let problems = table.problems().to_vec();
                    for problem in problems.iter().filter(|p| !reported_problems.contains(*p)) {
                        tracing::warn!("route labels: {problem}");
                    }
                    reported_problems = problems;
                    state.publish(Snapshot::new(table, index));
                    last = Some(apps);
                }
                state.metrics.connected.set(0);
                Some(opened.elapsed())
            }
        };
        retry = atoll_mesos_follow::next_retry(retry, lived);
        tokio::time::sleep(retry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marathon_events_but_the_buses_own_ask_for_the_apps() {
        assert!(marathon_event_may_change_apps("event: status_update_event\ndata: {}\n\n"));
        assert!(marathon_event_may_change_apps("event: deployment_success\ndata: {}\n\n"));
        assert!(marathon_event_may_change_apps("data: {\"eventType\":\"api_post_event\"}\n\n"));
        assert!(!marathon_event_may_change_apps("event: event_stream_attached\ndata: {}\n\n"));
        assert!(!marathon_event_may_change_apps(": keep-alive\n\n"));
    }
}
