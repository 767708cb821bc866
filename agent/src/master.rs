//! The agent's link to the master: one bidirectional gRPC stream (`AgentRegistry.Attach`),
//! reopened with backoff (0.2 s doubling to 5 s, forever) whenever it fails. This task only
//! moves messages: the actor writes `Register` and status updates into the outgoing channel,
//! this task adds heartbeats at the interval the master asked for and forwards everything the
//! master sends to the actor.

use std::time::Duration;

use apb::agent_registry_client::AgentRegistryClient;
use atoll_proto::pb::v1::agent as apb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::actor::{Msg, OUTBOX};

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a master that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The master's interval is honoured, within reason.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("invalid master URL: {0}")]
    Url(#[source] tonic::transport::Error),
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("the master refused the stream: {0}")]
    Attach(#[source] tonic::Status),
    #[error("the stream broke: {0}")]
    Stream(#[source] tonic::Status),
    #[error("the master closed the stream")]
    Closed,
    #[error("the master removed this agent")]
    Shutdown,
    #[error("the agent is stopping")]
    AgentGone,
}

/// Runs until the actor goes away.
pub(crate) async fn run(master: String, actor: mpsc::UnboundedSender<Msg>) {
    let mut backoff = BACKOFF_FIRST;
    let mut epoch = 0u64;
    loop {
        epoch += 1;
        let mut registered = false;
        let result = attach_once(&master, epoch, &actor, &mut registered).await;
        if actor.send(Msg::Disconnected { epoch }).is_err() {
            return;
        }
        match result {
            Err(ConnectionError::AgentGone) => return,
            Err(ConnectionError::Shutdown) => tracing::info!("re-registering as a new agent"),
            Err(e) => tracing::warn!(master = %master, "master stream: {e}; reconnecting in {backoff:?}"),
            Ok(()) => {}
        }
        if registered {
            backoff = BACKOFF_FIRST;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn attach_once(
    master: &str,
    epoch: u64,
    actor: &mpsc::UnboundedSender<Msg>,
    registered: &mut bool,
) -> Result<(), ConnectionError> {
    let endpoint = tonic::transport::Endpoint::from_shared(master.to_owned())
        .map_err(ConnectionError::Url)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(ConnectionError::Connect)?;
    let mut client = AgentRegistryClient::new(channel);
    let (out, outgoing) = mpsc::channel(OUTBOX);
    // The actor puts Register on the channel first, so the master sees it before anything else.
    actor.send(Msg::Connected { epoch, out: out.clone() }).map_err(|_| ConnectionError::AgentGone)?;
    let mut inbound = client.attach(ReceiverStream::new(outgoing)).await.map_err(ConnectionError::Attach)?.into_inner();
    let mut heartbeat: Option<tokio::time::Interval> = None;
    loop {
        let beat = async {
            match heartbeat.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            message = inbound.message() => {
                let Some(message) = message.map_err(ConnectionError::Stream)? else {
                    return Err(ConnectionError::Closed);
                };
                let Some(message) = message.message else { continue };
                let mut shutdown = false;
                match &message {
                    apb::master_message::Message::Registered(r) => {
                        *registered = true;
                        let period = Duration::try_from_secs_f64(r.heartbeat_interval_seconds)
                            .unwrap_or(Duration::from_secs(15))
                            .max(MIN_HEARTBEAT);
                        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        heartbeat = Some(interval);
                    }
                    apb::master_message::Message::Shutdown(_) => shutdown = true,
                    _ => {}
                }
                actor.send(Msg::Master { epoch, message: Box::new(message) }).map_err(|_| ConnectionError::AgentGone)?;
                if shutdown {
                    return Err(ConnectionError::Shutdown);
                }
            }
            () = beat => {
                let message = apb::AgentMessage { message: Some(apb::agent_message::Message::Heartbeat(apb::Heartbeat {})) };
                if out.send(message).await.is_err() {
                    return Err(ConnectionError::Closed);
                }
            }
        }
    }
}
