//! The Mesos v1 scheduler HTTP API, `POST /api/v1/scheduler`, on the master's HTTP port: the
//! same calls as the gRPC scheduler service, on Mesos's own wire so that frameworks written
//! for Mesos run unchanged.
//!
//! - Request bodies are `application/json` (Mesos's JSON: proto field names, enum names, 64-bit
//!   integers as numbers or numeric strings, bytes as base64) or `application/x-protobuf`
//!   (Mesos's field numbers and enum values, which Atoll's `.proto` files keep).
//! - `SUBSCRIBE` answers 200 with a chunked RecordIO stream (`<length>\n<record>`) of events in
//!   the negotiated type (`Accept`, else the request's), the `Mesos-Stream-Id` header, and a
//!   HEARTBEAT whenever the stream was quiet for the heartbeat interval.
//!   `SUBSCRIBED` names the master (`master_info`).
//! - Every other call answers 202 (`UPDATE_FRAMEWORK`, done before the answer, 200), and needs
//!   the subscription's `Mesos-Stream-Id`.
//! - Status codes as Mesos: 400 for a malformed call or a missing or wrong stream id (or one on
//!   SUBSCRIBE) or a missing Content-Type, 403 for a framework that is not subscribed, 406/415
//!   for media types it does not speak, 503 while the master stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use atoll_proto::model::FrameworkId;
use atoll_proto::pb::v1::scheduler as spb;
use atoll_scheduler_core::master::{ConnId, MasterError, SchedulerEvent};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage as _, SerializeOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::actor::{ActorError, CONNECTION_BUFFER, MasterHandle};
use crate::grpc::with_heartbeats;
use crate::wire::{self, Call};

pub const JSON: &str = "application/json";
pub const PROTOBUF: &str = "application/x-protobuf";
pub const STREAM_ID: &str = "mesos-stream-id";

/// Why a call was refused, with the status Mesos answers it with.
#[derive(Debug, thiserror::Error)]
pub enum MesosApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// The master could not put its own answer on the wire (a bug, not the client's fault).
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for MesosApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            MesosApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MesosApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            MesosApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            MesosApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MesosApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            MesosApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}

impl From<ActorError> for MesosApiError {
    fn from(error: ActorError) -> MesosApiError {
        match error {
            ActorError::Stopped => MesosApiError::Unavailable("the master is shutting down".into()),
            ActorError::Master(e @ MasterError::NotSubscribed(_)) => MesosApiError::Forbidden(e.to_string()),
            ActorError::Master(e) => MesosApiError::BadRequest(e.to_string()),
        }
    }
}

/// The wire encodings of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    pub fn media_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON,
            Encoding::Protobuf => PROTOBUF,
        }
    }
}

fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(atoll_proto::FILE_DESCRIPTOR_SET).expect("the build's own descriptors"))
}

/// The descriptor of the message `name` (`atoll.v1.scheduler.Call`) of Atoll's `.proto` files.
pub(crate) fn message(name: &str) -> MessageDescriptor {
    descriptors().get_message_by_name(name).unwrap_or_else(|| panic!("{name} is in the descriptors"))
}

/// A call from its wire form.
pub fn decode_call(encoding: Encoding, body: &[u8]) -> Result<spb::Call, MesosApiError> {
    match encoding {
        Encoding::Protobuf => spb::Call::decode(body)
            .map_err(|e| MesosApiError::BadRequest(format!("the protobuf Call does not decode: {e}"))),
        Encoding::Json => decode_message(encoding, body, "atoll.v1.scheduler.Call")?
            .transcode_to::<spb::Call>()
            .map_err(|e| MesosApiError::BadRequest(format!("the JSON Call: {e}"))),
    }
}

/// A request body (the message `name` of Atoll's `.proto` files) from its wire form. JSON
/// fields Atoll does not model are ignored, as Mesos ignores fields it does not know; a field
/// of the wrong shape is a 400 that names it (`drain_agent.agent_id.value: invalid type …`).
pub(crate) fn decode_message(encoding: Encoding, body: &[u8], name: &str) -> Result<DynamicMessage, MesosApiError> {
    let what = name.rsplit('.').next().unwrap_or(name);
    match encoding {
        Encoding::Protobuf => DynamicMessage::decode(message(name), body)
            .map_err(|e| MesosApiError::BadRequest(format!("the protobuf {what} does not decode: {e}"))),
        Encoding::Json => {
            let bad =
                |e: &dyn std::fmt::Display| MesosApiError::BadRequest(format!("the JSON {what} does not parse: {e}"));
            let mut json = serde_json::Deserializer::from_slice(body);
            let options = DeserializeOptions::new().deny_unknown_fields(false);
            let mut track = serde_path_to_error::Track::new();
            let dynamic = DynamicMessage::deserialize_with_options(
                message(name),
                serde_path_to_error::Deserializer::new(&mut json, &mut track),
                &options,
            )
            .map_err(|e| bad(&serde_path_to_error::Error::new(track.path(), e)))?;
            json.end().map_err(|e| bad(&e))?;
            Ok(dynamic)
        }
    }
}

/// Mesos's JSON of the message `name`, read strictly into that message: a field the `.proto`
/// does not have, or one of another type, is an error (naming it), never silently dropped.
/// For the master's own answers, which the protobuf wire must carry whole.
pub(crate) fn message_from_json(value: &serde_json::Value, name: &str) -> Result<DynamicMessage, String> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    DynamicMessage::deserialize_with_options(
        message(name),
        serde_path_to_error::Deserializer::new(value, &mut track),
        &options,
    )
    .map_err(|e| serde_path_to_error::Error::new(track.path(), e).to_string())
}

/// An event in its wire form: protobuf, or Mesos's JSON on one line.
pub fn encode_event(encoding: Encoding, event: &spb::Event) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => event.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&mesos_json(event, "atoll.v1.scheduler.Event")).expect("into memory"),
    }
}

/// A protobuf message (named `name` in Atoll's `.proto` files) in Mesos's JSON: proto field
/// names, enum names, 64-bit integers as numbers, and only the fields that are set (a
/// reconciliation update has no `uuid`, and a client that sees an empty one acknowledges it).
pub fn mesos_json(message_value: &impl prost::Message, name: &str) -> serde_json::Value {
    let dynamic = DynamicMessage::decode(message(name), message_value.encode_to_vec().as_slice())
        .expect("a message decodes with its own descriptor");
    dynamic_json(&dynamic)
}

/// [`mesos_json`] of a message read by reflection.
pub(crate) fn dynamic_json(dynamic: &DynamicMessage) -> serde_json::Value {
    let options = SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(false);
    let mut value = dynamic.serialize_with_options(serde_json::value::Serializer, &options).expect("into a JSON value");
    with_meaningful_zero_enums(&mut value, &dynamic.descriptor());
    value
}

/// Puts back the enum fields whose zero value means something (TASK_STARTING, SCALAR,
/// SOURCE_MASTER), which proto3 leaves out as defaults but Mesos always writes; zero values
/// named UNKNOWN or `…_UNSPECIFIED` stay out, as unset.
fn with_meaningful_zero_enums(value: &mut serde_json::Value, descriptor: &MessageDescriptor) {
    let serde_json::Value::Object(object) = value else { return };
    for field in descriptor.fields() {
        let name = field.name();
        match field.kind() {
            prost_reflect::Kind::Enum(enumeration) if !field.is_list() && !field.supports_presence() => {
                if object.contains_key(name) {
                    continue;
                }
                if let Some(zero) = enumeration.get_value(0) {
                    let zero_name = zero.name();
                    if zero_name != "UNKNOWN" && !zero_name.ends_with("_UNSPECIFIED") {
                        object.insert(name.to_owned(), serde_json::Value::String(zero_name.to_owned()));
                    }
                }
            }
            prost_reflect::Kind::Message(inner) => match object.get_mut(name) {
                Some(serde_json::Value::Array(items)) => {
                    for item in items {
                        with_meaningful_zero_enums(item, &inner);
                    }
                }
                Some(item @ serde_json::Value::Object(_)) => with_meaningful_zero_enums(item, &inner),
                _ => {}
            },
            _ => {}
        }
    }
}

/// `<length>\n<record>`.
pub fn record_io(record: &[u8]) -> Bytes {
    Bytes::from(atoll_proto::recordio::frame(record))
}

/// The media type of a header value, without parameters, lowercase.
fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// The encoding of a request's body, from its Content-Type (415 for one this master does not
/// speak; 400 without one, as Mesos).
pub(crate) fn request_encoding(headers: &HeaderMap) -> Result<Encoding, MesosApiError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Err(MesosApiError::BadRequest(format!(
            "Expecting 'Content-Type' to be present ({JSON} or {PROTOBUF})"
        )));
    };
    match media_type(content_type).as_str() {
        JSON => Ok(Encoding::Json),
        PROTOBUF => Ok(Encoding::Protobuf),
        other => Err(MesosApiError::UnsupportedMediaType(format!(
            "Content-Type `{other}` is not supported: use {JSON} or {PROTOBUF}"
        ))),
    }
}

/// What the client accepts for the answer (or the event stream); the request's own type when
/// it says nothing or anything (406 when it accepts nothing this master writes).
pub(crate) fn response_encoding(headers: &HeaderMap, request: Encoding) -> Result<Encoding, MesosApiError> {
    let accepted: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(media_type)
        .filter(|m| !m.is_empty())
        .collect();
    if accepted.is_empty() || accepted.iter().any(|m| m == request.media_type()) {
        return Ok(request);
    }
    if accepted.iter().any(|m| m == "*/*" || m == "application/*") {
        return Ok(request);
    }
    for media in &accepted {
        match media.as_str() {
            JSON => return Ok(Encoding::Json),
            PROTOBUF => return Ok(Encoding::Protobuf),
            _ => {}
        }
    }
    Err(MesosApiError::NotAcceptable(format!(
        "Accept `{}`: this master answers {JSON} or {PROTOBUF}",
        accepted.join(", ")
    )))
}

/// Open subscriptions, by stream id and by framework.
#[derive(Default)]
struct Streams {
    by_id: HashMap<String, (ConnId, FrameworkId)>,
    by_framework: HashMap<FrameworkId, String>,
}

#[derive(Clone)]
pub struct MesosScheduler {
    handle: MasterHandle,
    streams: Arc<Mutex<Streams>>,
    /// Told to every framework in SUBSCRIBED.
    master_info: atoll_proto::pb::v1::MasterInfo,
}

/// The scheduler API, naming the master as `identity` says in SUBSCRIBED.
pub fn router(handle: MasterHandle, identity: &crate::mesos_state::MasterIdentity) -> Router {
    let master_info = message_from_json(&identity.master_info(), "atoll.v1.MasterInfo")
        .and_then(|m| m.transcode_to().map_err(|e| e.to_string()))
        .expect("the master's own info fits Mesos's MasterInfo");
    Router::new().route("/api/v1/scheduler", post(scheduler_call)).with_state(MesosScheduler {
        handle,
        streams: Arc::default(),
        master_info,
    })
}

/// Forgets a subscription when its HTTP stream ends, whichever way.
struct StreamGuard {
    api: MesosScheduler,
    conn: ConnId,
    stream_id: String,
    framework_id: FrameworkId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut streams) = self.api.streams.lock() {
            streams.by_id.remove(&self.stream_id);
            if streams.by_framework.get(&self.framework_id) == Some(&self.stream_id) {
                streams.by_framework.remove(&self.framework_id);
            }
        }
        self.api.handle.framework_closed(self.conn);
    }
}

async fn scheduler_call(State(api): State<MesosScheduler>, headers: HeaderMap, body: Bytes) -> Response {
    match handle_call(api, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle_call(api: MesosScheduler, headers: HeaderMap, body: Bytes) -> Result<Response, MesosApiError> {
    let encoding = request_encoding(&headers)?;
    let stream_header = headers.get(STREAM_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let call =
        wire::call_from_pb(decode_call(encoding, &body)?).map_err(|e| MesosApiError::BadRequest(e.to_string()))?;
    match call {
        Call::Subscribe { framework_id, info, suppressed_roles } => {
            if stream_header.is_some() {
                return Err(MesosApiError::BadRequest("SUBSCRIBE must not carry a Mesos-Stream-Id".into()));
            }
            let answer = response_encoding(&headers, encoding)?;
            let suppressed = suppressed_roles.contains(&info.role);
            subscribe(api, framework_id, info, suppressed, answer).await
        }
        Call::Other { framework_id, call } => {
            let (conn, expected) = {
                let streams =
                    api.streams.lock().map_err(|_| MesosApiError::Unavailable("stream table poisoned".into()))?;
                let Some(expected) = streams.by_framework.get(&framework_id).cloned() else {
                    return Err(MesosApiError::Forbidden(format!("framework {framework_id} is not subscribed")));
                };
                let conn = streams.by_id.get(&expected).map(|(conn, _)| *conn);
                (conn, expected)
            };
            match stream_header {
                None => return Err(MesosApiError::BadRequest("the Mesos-Stream-Id header is missing".into())),
                Some(got) if got != expected => {
                    return Err(MesosApiError::BadRequest(format!(
                        "Mesos-Stream-Id `{got}` is not framework {framework_id}'s subscription"
                    )));
                }
                Some(_) => {}
            }
            let conn =
                conn.ok_or_else(|| MesosApiError::Forbidden(format!("framework {framework_id} is not subscribed")))?;
            // Mesos answers UPDATE_FRAMEWORK, which it carries out before answering, with 200.
            let status = if call.kind() == "UPDATE_FRAMEWORK" { StatusCode::OK } else { StatusCode::ACCEPTED };
            api.handle.framework_call(conn, framework_id, call).await?;
            Ok(status.into_response())
        }
    }
}

async fn subscribe(
    api: MesosScheduler,
    framework_id: Option<FrameworkId>,
    info: atoll_proto::model::FrameworkInfo,
    suppressed: bool,
    encoding: Encoding,
) -> Result<Response, MesosApiError> {
    let conn = api.handle.new_conn();
    let (tx, rx) = mpsc::channel::<SchedulerEvent>(CONNECTION_BUFFER);
    let framework_id = api.handle.subscribe(conn, framework_id, info, false, suppressed, tx).await?;
    let stream_id = uuid::Uuid::new_v4().to_string();
    {
        let mut streams = api.streams.lock().map_err(|_| MesosApiError::Unavailable("stream table poisoned".into()))?;
        // A re-subscription takes over: the old stream id stops working.
        if let Some(old) = streams.by_framework.insert(framework_id.clone(), stream_id.clone()) {
            streams.by_id.remove(&old);
        }
        streams.by_id.insert(stream_id.clone(), (conn, framework_id.clone()));
    }
    let guard = StreamGuard { api: api.clone(), conn, stream_id: stream_id.clone(), framework_id };
    let id_for_events = stream_id.clone();
    let master_info = api.master_info.clone();
    let events =
        ReceiverStream::new(rx).map(move |event| Ok(wire::event_to_pb(&event, &id_for_events, Some(&master_info))));
    let stream = with_heartbeats(events, api.handle.heartbeat_interval(), wire::heartbeat_pb).map(move |event| {
        let _keep = &guard;
        event
            .map(|event| record_io(&encode_event(encoding, &event)))
            .map_err(|status| std::io::Error::other(status.message().to_owned()))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, encoding.media_type())
        .header(STREAM_ID, stream_id)
        .body(Body::from_stream(stream))
        .map_err(|e| MesosApiError::Unavailable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_calls_use_mesos_field_and_enum_names() {
        let body = br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"pymesos",
            "failover_timeout":604800,"capabilities":[{"type":"MULTI_ROLE"}],"roles":["*"],"unknown_field":1}}}"#;
        let call = decode_call(Encoding::Json, body).unwrap();
        assert_eq!(call.r#type, spb::call::Type::Subscribe as i32);
        let info = call.subscribe.unwrap().framework_info.unwrap();
        assert_eq!(info.name, "pymesos");
        assert_eq!(info.roles, vec!["*"]);

        let ack = br#"{"framework_id":{"value":"f-1"},"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"a"},
            "task_id":{"value":"t"},"uuid":"AAECAwQFBgcICQoLDA0ODw=="}}"#;
        let call = decode_call(Encoding::Json, ack).unwrap();
        assert_eq!(call.acknowledge.unwrap().uuid, (0u8..16).collect::<Vec<u8>>(), "bytes are base64");

        let refuse = br#"{"framework_id":{"value":"f-1"},"type":"DECLINE","decline":{"offer_ids":[{"value":"o"}],
            "filters":{"refuse_seconds":"5"}}}"#;
        assert_eq!(
            decode_call(Encoding::Json, refuse).unwrap().decline.unwrap().filters.unwrap().refuse_seconds,
            Some(5.0)
        );

        for bad in [&b"{"[..], b"[]", br#"{"type":"SUBSCRIBE","subscribe":"no"}"#] {
            assert!(
                matches!(decode_call(Encoding::Json, bad), Err(MesosApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // An enum name this master does not know reads as UNKNOWN, which no call is.
        let unknown = decode_call(Encoding::Json, br#"{"type":"NOT_A_CALL"}"#).unwrap();
        assert!(wire::call_from_pb(unknown).is_err());
    }

    #[test]
    fn events_are_compact_json_with_enum_names_and_zero_values() {
        let status = atoll_proto::pb::v1::TaskStatus { state: Some(0), ..Default::default() };
        let event = spb::Event {
            r#type: spb::event::Type::Update as i32,
            update: Some(spb::event::Update { status: Some(status) }),
            ..Default::default()
        };
        let json = String::from_utf8(encode_event(Encoding::Json, &event)).unwrap();
        assert!(!json.contains('\n'), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["type"], "UPDATE");
        assert_eq!(value["update"]["status"]["state"], "TASK_STARTING", "{json}");
        let framed = record_io(json.as_bytes());
        assert!(framed.starts_with(format!("{}\n", json.len()).as_bytes()));
    }

    #[test]
    fn protobuf_round_trips_and_media_types_are_negotiated() {
        let call = spb::Call { r#type: spb::call::Type::Revive as i32, ..Default::default() };
        assert_eq!(decode_call(Encoding::Protobuf, &call.encode_to_vec()).unwrap(), call);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().unwrap());
        assert_eq!(request_encoding(&headers).unwrap(), Encoding::Json);
        headers.insert(header::ACCEPT, "application/x-protobuf".parse().unwrap());
        assert_eq!(response_encoding(&headers, Encoding::Json).unwrap(), Encoding::Protobuf);
        headers.insert(header::ACCEPT, "text/html".parse().unwrap());
        assert!(matches!(response_encoding(&headers, Encoding::Json), Err(MesosApiError::NotAcceptable(_))));
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(matches!(request_encoding(&headers), Err(MesosApiError::UnsupportedMediaType(_))));
    }

    /// Every call type and every event type survives both wires: protobuf bytes, and Mesos's
    /// JSON read back.
    #[test]
    fn every_call_and_event_round_trips_through_json_and_protobuf() {
        use atoll_proto::pb::v1 as pb;
        use spb::call::Type as C;
        let fid = Some(pb::FrameworkId { value: "f-1".into() });
        let oid = pb::OfferId { value: "o-1".into() };
        let tid = Some(pb::TaskId { value: "t-1".into() });
        let aid = Some(pb::AgentId { value: "a-1".into() });
        let task = pb::TaskInfo {
            name: "web".into(),
            task_id: tid.clone(),
            agent_id: aid.clone(),
            resources: vec![pb::Resource {
                name: "cpus".into(),
                r#type: Some(pb::value::Type::Scalar as i32),
                scalar: Some(pb::value::Scalar { value: Some(0.5) }),
                ..Default::default()
            }],
            command: Some(pb::CommandInfo { value: "sleep 1".into(), shell: Some(true), ..Default::default() }),
            ..Default::default()
        };
        let filters = Some(pb::Filters { refuse_seconds: Some(2.5) });
        let base = |kind: C| spb::Call { framework_id: fid.clone(), r#type: kind as i32, ..Default::default() };
        let calls = vec![
            spb::Call {
                subscribe: Some(spb::call::Subscribe {
                    framework_info: Some(pb::FrameworkInfo {
                        user: Some("root".into()),
                        name: "rt".into(),
                        ..Default::default()
                    }),
                    suppressed_roles: vec!["web".into()],
                }),
                ..base(C::Subscribe)
            },
            spb::Call {
                accept: Some(spb::call::Accept {
                    offer_ids: vec![oid.clone()],
                    operations: vec![pb::offer::Operation {
                        r#type: pb::offer::operation::Type::LaunchGroup as i32,
                        launch_group: Some(pb::offer::operation::LaunchGroup {
                            executor: Some(pb::ExecutorInfo {
                                r#type: Some(pb::executor_info::Type::Default as i32),
                                executor_id: Some(pb::ExecutorId { value: "pod-1".into() }),
                                resources: task.resources.clone(),
                                ..Default::default()
                            }),
                            task_group: Some(pb::TaskGroupInfo { tasks: vec![task.clone(), task.clone()] }),
                        }),
                        ..Default::default()
                    }],
                    filters,
                }),
                ..base(C::Accept)
            },
            spb::Call {
                shutdown: Some(spb::call::Shutdown {
                    executor_id: Some(pb::ExecutorId { value: "pod-1".into() }),
                    agent_id: aid.clone(),
                }),
                ..base(C::Shutdown)
            },
            spb::Call {
                message: Some(spb::call::Message {
                    agent_id: aid.clone(),
                    executor_id: Some(pb::ExecutorId { value: "pod-1".into() }),
                    data: b"hello".to_vec(),
                }),
                ..base(C::Message)
            },
            spb::Call {
                request: Some(spb::call::Request {
                    requests: vec![pb::Request { agent_id: aid.clone(), resources: task.resources.clone() }],
                }),
                ..base(C::Request)
            },
            spb::Call {
                update_framework: Some(spb::call::UpdateFramework {
                    framework_info: Some(pb::FrameworkInfo {
                        id: fid.clone(),
                        user: Some("root".into()),
                        name: "renamed".into(),
                        ..Default::default()
                    }),
                    suppressed_roles: vec![],
                }),
                ..base(C::UpdateFramework)
            },
            base(C::Teardown),
            spb::Call {
                accept: Some(spb::call::Accept {
                    offer_ids: vec![oid.clone()],
                    operations: vec![pb::offer::Operation {
                        r#type: pb::offer::operation::Type::Launch as i32,
                        launch: Some(pb::offer::operation::Launch { task_infos: vec![task.clone()] }),
                        ..Default::default()
                    }],
                    filters,
                }),
                ..base(C::Accept)
            },
            spb::Call { decline: Some(spb::call::Decline { offer_ids: vec![oid], filters }), ..base(C::Decline) },
            spb::Call { revive: Some(spb::call::Revive { roles: vec!["web".into()] }), ..base(C::Revive) },
            spb::Call { suppress: Some(spb::call::Suppress { roles: vec!["web".into()] }), ..base(C::Suppress) },
            spb::Call {
                kill: Some(spb::call::Kill { task_id: tid.clone(), agent_id: aid.clone(), kill_policy: None }),
                ..base(C::Kill)
            },
            spb::Call {
                acknowledge: Some(spb::call::Acknowledge {
                    agent_id: aid.clone(),
                    task_id: tid.clone(),
                    uuid: vec![1, 2, 3, 250],
                }),
                ..base(C::Acknowledge)
            },
            spb::Call {
                reconcile: Some(spb::call::Reconcile {
                    tasks: vec![spb::call::reconcile::Task { task_id: tid.clone(), agent_id: aid.clone() }],
                }),
                ..base(C::Reconcile)
            },
        ];
        for call in calls {
            let json = serde_json::to_vec(&mesos_json(&call, "atoll.v1.scheduler.Call")).unwrap();
            assert_eq!(decode_call(Encoding::Json, &json).unwrap(), call, "{}", String::from_utf8_lossy(&json));
            assert_eq!(decode_call(Encoding::Protobuf, &call.encode_to_vec()).unwrap(), call);
        }

        use spb::event::Type as E;
        let event = |kind: E| spb::Event { r#type: kind as i32, ..Default::default() };
        let status = pb::TaskStatus {
            task_id: tid.clone(),
            state: Some(pb::TaskState::TaskRunning as i32),
            ..Default::default()
        };
        let events = vec![
            spb::Event {
                subscribed: Some(spb::event::Subscribed {
                    framework_id: fid.clone(),
                    heartbeat_interval_seconds: 15.0,
                    master_info: Some(pb::MasterInfo {
                        id: Some("m".into()),
                        ip: Some(16777343),
                        port: Some(5050),
                        ..Default::default()
                    }),
                    stream_id: "s".into(),
                }),
                ..event(E::Subscribed)
            },
            spb::Event {
                offers: Some(spb::event::Offers {
                    offers: vec![pb::Offer {
                        id: Some(pb::OfferId { value: "o".into() }),
                        agent_id: aid.clone(),
                        ..Default::default()
                    }],
                }),
                ..event(E::Offers)
            },
            spb::Event {
                rescind: Some(spb::event::Rescind { offer_id: Some(pb::OfferId { value: "o".into() }) }),
                ..event(E::Rescind)
            },
            spb::Event { update: Some(spb::event::Update { status: Some(status) }), ..event(E::Update) },
            spb::Event {
                failure: Some(spb::event::Failure {
                    agent_id: aid.clone(),
                    executor_id: Some(pb::ExecutorId { value: "pod-1".into() }),
                    status: Some(9),
                }),
                ..event(E::Failure)
            },
            spb::Event {
                message: Some(spb::event::Message {
                    agent_id: aid.clone(),
                    executor_id: Some(pb::ExecutorId { value: "pod-1".into() }),
                    data: vec![0, 255],
                }),
                ..event(E::Message)
            },
            spb::Event { error: Some(spb::event::Error { message: Some("gone".into()) }), ..event(E::Error) },
            event(E::Heartbeat),
        ];
        for event in events {
            let bytes = encode_event(Encoding::Json, &event);
            let mut json = serde_json::Deserializer::from_slice(&bytes);
            let back = DynamicMessage::deserialize(message("atoll.v1.scheduler.Event"), &mut json)
                .unwrap()
                .transcode_to::<spb::Event>()
                .unwrap();
            assert_eq!(back, event, "{}", String::from_utf8_lossy(&bytes));
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let kind = value["type"].as_str().unwrap().to_ascii_lowercase();
            assert!(kind == "heartbeat" || value.get(&kind).is_some(), "the payload is under `{kind}`: {value}");
            assert_eq!(spb::Event::decode(encode_event(Encoding::Protobuf, &event).as_slice()).unwrap(), event);
        }
    }
}
