//! Event-stream subscriptions: the retained events after `since` from the registry, then live
//! events, in order and exactly once; a snapshot (after a FELL_BEHIND notice) whenever the
//! events needed are no longer retained. Shared by the gRPC and the SSE endpoints.

use std::sync::Arc;
use std::time::Duration;

use atoll_proto::model::{Event, StreamMessage};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::actor::{MasterHandle, Watch};

/// Events read from the registry per round trip while catching up.
const REPLAY_CHUNK: usize = 1000;
/// Messages buffered towards one subscriber's connection.
const SUBSCRIBER_BUFFER: usize = 1024;

/// Starts a subscription; the stream ends when the master stops, and the pump stops as
/// soon as the stream is dropped.
pub fn subscribe(handle: MasterHandle, since: Option<u64>) -> ReceiverStream<StreamMessage> {
    let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        let heartbeat = handle.heartbeat_interval();
        if let Err(Stop) = pump(&handle, since, &tx, heartbeat).await {
            tracing::debug!("event subscriber went away");
        }
    });
    ReceiverStream::new(rx)
}

/// The subscriber is gone or the master stopped.
struct Stop;

async fn send(tx: &mpsc::Sender<StreamMessage>, message: StreamMessage) -> Result<(), Stop> {
    tx.send(message).await.map_err(|_| Stop)
}

async fn pump(
    handle: &MasterHandle,
    since: Option<u64>,
    tx: &mpsc::Sender<StreamMessage>,
    heartbeat: Duration,
) -> Result<(), Stop> {
    let (mut receiver, mut last) = match since {
        None => start_from_snapshot(handle, tx).await?,
        Some(since) => {
            let watch = handle.watch(false).await.map_err(|_| Stop)?;
            let head = watch.index;
            if since > head {
                // The subscriber saw a history this registry does not have (it was reset).
                send(tx, StreamMessage::FellBehind { requested: since, oldest_retained: oldest(handle, head).await })
                    .await?;
                start_from_snapshot(handle, tx).await?
            } else {
                match replay(handle, since, head, tx).await? {
                    true => (watch.receiver, head),
                    false => start_from_snapshot(handle, tx).await?,
                }
            }
        }
    };
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.reset();
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Ok(event) => {
                    if event.index <= last {
                        continue;
                    }
                    if event.index > last + 1 && !replay(handle, last, event.index - 1, tx).await? {
                        (receiver, last) = start_from_snapshot(handle, tx).await?;
                        continue;
                    }
                    send(tx, StreamMessage::Event { event: Event::clone(&event) }).await?;
                    last = event.index;
                    ticker.reset();
                }
                // The gap is filled from the registry when the next event arrives.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Err(Stop),
            },
            _ = ticker.tick() => send(tx, StreamMessage::Heartbeat).await?,
            _ = tx.closed() => return Err(Stop),
        }
    }
}

async fn start_from_snapshot(
    handle: &MasterHandle,
    tx: &mpsc::Sender<StreamMessage>,
) -> Result<(broadcast::Receiver<Arc<Event>>, u64), Stop> {
    let Watch { receiver, index, state } = handle.watch(true).await.map_err(|_| Stop)?;
    let state = state.unwrap_or_default();
    send(tx, StreamMessage::Snapshot { state }).await?;
    Ok((receiver, index))
}

/// Sends the events in `(since, until]` from the registry. False (after telling the
/// subscriber it fell behind) when some of them are no longer retained.
async fn replay(handle: &MasterHandle, since: u64, until: u64, tx: &mpsc::Sender<StreamMessage>) -> Result<bool, Stop> {
    let mut last = since;
    while last < until {
        let registry = handle.registry().clone();
        let from = last;
        let chunk = tokio::task::spawn_blocking(move || registry.events_after(from, REPLAY_CHUNK))
            .await
            .map_err(|_| Stop)?
            .map_err(|e| {
                tracing::error!("reading the event log: {e}");
                Stop
            })?;
        match chunk.first() {
            Some(first) if first.index == last + 1 => {}
            _ => {
                let oldest = oldest(handle, until).await;
                send(tx, StreamMessage::FellBehind { requested: since, oldest_retained: oldest }).await?;
                return Ok(false);
            }
        }
        for event in chunk {
            if event.index > until {
                break;
            }
            last = event.index;
            send(tx, StreamMessage::Event { event }).await?;
        }
    }
    Ok(true)
}

async fn oldest(handle: &MasterHandle, fallback: u64) -> u64 {
    let registry = handle.registry().clone();
    tokio::task::spawn_blocking(move || registry.oldest_index())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .unwrap_or(fallback + 1)
}
