//! gRPC services: the scheduler API for frameworks, the agent protocol, and the operator
//! event stream. Thin: decode, hand to the master thread, encode.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_proto::convert::ConvertError;
use atoll_proto::model::FrameworkId;
use atoll_proto::pb::v1::agent as apb;
use atoll_proto::pb::v1::operator as opb;
use atoll_proto::pb::v1::scheduler as spb;
use atoll_scheduler_core::master::{AgentCommand, ConnId, MasterError, SchedulerEvent};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::actor::{ActorError, CONNECTION_BUFFER, MasterHandle};
use crate::events;
use crate::wire::{self, Call};

/// How long a new agent stream may wait before sending its registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

pub fn status_from_convert(error: ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

pub fn status_from_actor(error: ActorError) -> Status {
    match error {
        ActorError::Stopped => Status::unavailable("the master is shutting down"),
        ActorError::Master(e) => {
            let message = e.to_string();
            match e {
                MasterError::UnknownAgent(_)
                | MasterError::UnknownFramework(_)
                | MasterError::UnknownTask(_)
                | MasterError::UnknownExecutor { .. } => Status::not_found(message),
                MasterError::NotSubscribed(_) | MasterError::AgentNotRegistered => Status::permission_denied(message),
                MasterError::FrameworkRemoved(_) | MasterError::AgentGone(_) | MasterError::TaskTerminal(_) => {
                    Status::failed_precondition(message)
                }
                MasterError::RoleChange { .. }
                | MasterError::EmptyFrameworkName
                | MasterError::AmbiguousTask(..)
                | MasterError::BadAgentInfo(_)
                | MasterError::NotRecordable(_)
                | MasterError::FrameworkFieldChange { .. }
                | MasterError::BadDrain(_)
                | MasterError::BadRole { .. }
                | MasterError::BadWeight { .. }
                | MasterError::Ipam(_) => Status::invalid_argument(message),
                MasterError::PoolInUse { .. } => Status::failed_precondition(message),
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The scheduler API (Mesos v1 names) for frameworks.
#[derive(Clone)]
pub struct SchedulerService {
    handle: MasterHandle,
    /// `Mesos-Stream-Id` → the subscription's connection and framework.
    streams: Arc<Mutex<HashMap<String, (ConnId, FrameworkId)>>>,
}

impl SchedulerService {
    pub fn new(handle: MasterHandle) -> SchedulerService {
        SchedulerService { handle, streams: Arc::default() }
    }
}

/// Forgets a framework stream when its reader goes away, whichever way that happens.
struct StreamGuard {
    handle: MasterHandle,
    conn: ConnId,
    stream_id: String,
    streams: Arc<Mutex<HashMap<String, (ConnId, FrameworkId)>>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.remove(&self.stream_id);
        }
        self.handle.framework_closed(self.conn);
    }
}

#[tonic::async_trait]
impl spb::scheduler_server::Scheduler for SchedulerService {
    type SubscribeStream = BoxStream<spb::Event>;

    async fn subscribe(&self, request: Request<spb::Call>) -> Result<Response<Self::SubscribeStream>, Status> {
        let Call::Subscribe { framework_id, info, suppressed_roles } =
            wire::call_from_pb(request.into_inner()).map_err(status_from_convert)?
        else {
            return Err(Status::invalid_argument("type: the Subscribe method takes a SUBSCRIBE call"));
        };
        let conn = self.handle.new_conn();
        let (tx, rx) = mpsc::channel::<SchedulerEvent>(CONNECTION_BUFFER);
        let suppressed = suppressed_roles.contains(&info.role);
        let framework_id =
            self.handle.subscribe(conn, framework_id, info, false, suppressed, tx).await.map_err(status_from_actor)?;
        let stream_id = uuid::Uuid::new_v4().to_string();
        let header = stream_id.clone();
        self.streams
            .lock()
            .map_err(|_| Status::internal("stream table poisoned"))?
            .insert(stream_id.clone(), (conn, framework_id));
        let guard = StreamGuard {
            handle: self.handle.clone(),
            conn,
            stream_id: stream_id.clone(),
            streams: self.streams.clone(),
        };
        let events = ReceiverStream::new(rx).map(move |event| Ok(wire::event_to_pb(&event, &stream_id, None)));
        let stream = with_heartbeats(events, self.handle.heartbeat_interval(), wire::heartbeat_pb).map(move |item| {
            let _keep = &guard;
            item
        });
        let mut response = Response::new(Box::pin(stream) as Self::SubscribeStream);
        if let Ok(value) = header.parse() {
            response.metadata_mut().insert("mesos-stream-id", value);
        }
        Ok(response)
    }

    async fn call(&self, request: Request<spb::Call>) -> Result<Response<spb::Response>, Status> {
        let stream_id = request
            .metadata()
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Status::invalid_argument("mesos-stream-id metadata is required (from SUBSCRIBED)"))?;
        let (conn, subscribed_as) = self
            .streams
            .lock()
            .map_err(|_| Status::internal("stream table poisoned"))?
            .get(&stream_id)
            .cloned()
            .ok_or_else(|| {
                Status::permission_denied(format!("mesos-stream-id `{stream_id}` is not an open subscription"))
            })?;
        match wire::call_from_pb(request.into_inner()).map_err(status_from_convert)? {
            Call::Subscribe { .. } => {
                Err(Status::invalid_argument("type: SUBSCRIBE goes through the Subscribe method"))
            }
            Call::Other { framework_id, call } => {
                if framework_id != subscribed_as {
                    return Err(Status::permission_denied(format!(
                        "framework_id `{framework_id}` does not match the subscription (`{subscribed_as}`)"
                    )));
                }
                self.handle.framework_call(conn, framework_id, call).await.map_err(status_from_actor)?;
                Ok(Response::new(spb::Response {}))
            }
        }
    }
}

/// Interleaves a heartbeat whenever the stream has been quiet for `interval`.
pub fn with_heartbeats<T: Send + 'static>(
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    interval: Duration,
    heartbeat: fn() -> T,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        let mut ticker = tokio::time::interval(interval);
        ticker.reset();
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(item) => {
                        if tx.send(item).await.is_err() {
                            return;
                        }
                        ticker.reset();
                    }
                    None => return,
                },
                _ = ticker.tick() => {
                    if tx.send(Ok(heartbeat())).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The agent protocol: one bidirectional stream per agent.
#[derive(Clone)]
pub struct AgentService {
    handle: MasterHandle,
}

impl AgentService {
    pub fn new(handle: MasterHandle) -> AgentService {
        AgentService { handle }
    }
}

#[tonic::async_trait]
impl apb::agent_registry_server::AgentRegistry for AgentService {
    type AttachStream = BoxStream<apb::MasterMessage>;

    async fn attach(
        &self,
        request: Request<Streaming<apb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut incoming = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, incoming.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no registration within 30 s"))??
            .ok_or_else(|| Status::cancelled("stream ended before registration"))?;
        let Some(apb::agent_message::Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument("message: the first message must be a registration"));
        };
        let registration = wire::registration_from_pb(register).map_err(status_from_convert)?;
        let conn = self.handle.new_conn();
        let (tx, rx) = mpsc::channel::<AgentCommand>(CONNECTION_BUFFER);
        match self.handle.register_agent(conn, registration, tx).await {
            Ok(agent_id) => tracing::info!("agent {agent_id} attached"),
            // A gone agent still gets the stream: its Shutdown message is queued on it.
            Err(ActorError::Master(MasterError::AgentGone(id))) => tracing::info!("gone agent {id} told to shut down"),
            Err(e) => return Err(status_from_actor(e)),
        }
        let handle = self.handle.clone();
        tokio::spawn(async move {
            loop {
                match incoming.message().await {
                    Ok(Some(apb::AgentMessage { message: Some(message) })) => match message {
                        apb::agent_message::Message::Heartbeat(_) => handle.agent_heartbeat(conn),
                        apb::agent_message::Message::StatusUpdate(update) => {
                            match wire::status_update_from_pb(update) {
                                Ok((framework_id, status)) => handle.status_update(conn, framework_id, status),
                                Err(e) => tracing::warn!("agent connection {conn:?}: bad status update: {e}"),
                            }
                        }
                        apb::agent_message::Message::Register(_) => {
                            tracing::warn!("agent connection {conn:?} registered twice; closing");
                            break;
                        }
                    },
                    Ok(Some(apb::AgentMessage { message: None })) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            handle.agent_closed(conn);
        });
        let stream = ReceiverStream::new(rx).map(|command| Ok(wire::agent_command_to_pb(&command)));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The cluster event stream and state for consumers.
#[derive(Clone)]
pub struct OperatorService {
    handle: MasterHandle,
}

impl OperatorService {
    pub fn new(handle: MasterHandle) -> OperatorService {
        OperatorService { handle }
    }
}

#[tonic::async_trait]
impl opb::operator_server::Operator for OperatorService {
    type SubscribeStream = BoxStream<opb::StreamMessage>;

    async fn subscribe(
        &self,
        request: Request<opb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let since = request.into_inner().since;
        let stream =
            events::subscribe(self.handle.clone(), since).map(|message| Ok(opb::StreamMessage::from(&message)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_state(&self, _request: Request<opb::GetStateRequest>) -> Result<Response<opb::State>, Status> {
        let state = self.handle.state().await.map_err(status_from_actor)?;
        Ok(Response::new(opb::State::from(&state)))
    }
}
