//! Drop-in mode: the same names for an Apache Mesos cluster. The operator API's `SUBSCRIBE`
//! stream (RecordIO-framed JSON) says when something changed; each change (debounced) re-reads
//! `/master/state`, which the projection understands as Mesos-DNS does. When the master does
//! not offer the stream, `/master/state` is polled instead.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::daemon::{Query, Shared};
use atoll_proto::recordio::RecordIo;

use crate::projection::Projection;

/// Polling interval without the event stream (Mesos-DNS refreshes every 60 s; a shorter one
/// keeps names fresher at little cost).
const POLL: Duration = Duration::from_secs(5);
/// Events arriving together cause one refresh.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why a Mesos master could not be followed this time.
#[derive(Debug, thiserror::Error)]
pub enum MesosError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: bad RecordIO framing: {message}")]
    Framing { url: String, message: String },
}

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
    let url = format!("{base}/api/v1");
    let http_error = |message: String| MesosError::Http { url: url.clone(), message };
    let response = http
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(r#"{"type":"SUBSCRIBE"}"#)
        .send()
        .await
        .map_err(|e| http_error(e.to_string()))?;
    if !response.status().is_success() {
        return Err(http_error(format!("HTTP {}", response.status())));
    }
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(http_error(format!("not a Mesos event stream (Content-Type `{content_type}`)")));
    }
    shared.metrics.connected.set(1);
    refresh(http, base, projection, shared).await;
    let mut body = response.bytes_stream();
    let mut framing = RecordIo::default();
    let mut pending = false;
    loop {
        let debounce = tokio::time::sleep(if pending { DEBOUNCE } else { Duration::from_secs(3600) });
        tokio::select! {
            chunk = body.next() => match chunk {
                Some(Ok(bytes)) => {
                    let records = framing
                        .feed(&bytes)
                        .map_err(|e| MesosError::Framing { url: url.clone(), message: e.to_string() })?;
                    // Heartbeats change nothing; anything else may.
                    pending |= records.iter().any(|r| !is_heartbeat(r));
                }
                Some(Err(e)) => return Err(http_error(e.to_string())),
                None => return Ok(()),
            },
            _ = debounce, if pending => {
                pending = false;
                refresh(http, base, projection, shared).await;
            }
            Some(query) = queries.recv() => answer(projection, query),
        }
    }
}

fn is_heartbeat(record: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(record).is_ok_and(|v| v["type"] == "HEARTBEAT")
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
