//! The request handler hickory-server calls for every decoded query: it checks what the pure
//! answer cannot (opcode, EDNS version, question count), asks `answer`, forwards when told to,
//! and fits the response to the client's UDP size.
//!
//! hickory-server itself drops packets shorter than a header and responses (QR set), and
//! answers FORMERR to packets whose header parses but whose body does not.
//!
//! Fitting follows RFC 2181 9: extra records are dropped first without setting TC (they are
//! optional), and only when the answer and authority themselves do not fit is TC set, with as
//! many whole answer records as fit and the OPT record kept, so EDNS clients see it even then.

use std::iter;
use std::sync::Arc;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, Query, ResponseCode, emit_message_parts,
};
use hickory_proto::rr::Record as DnsRecord;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::answer::{Answer, Response, answer};
use super::config::ServerConfig;
use super::forward::Forwarder;
use super::zone::Zone;

/// The largest UDP response sent whatever the client offers: DNS Flag Day 2020's 1232 bytes
/// fit an IPv6 minimum MTU without fragmentation.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Without EDNS a UDP response is limited to 512 bytes (RFC 1035 4.2.1).
const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// An OPT record without options: root name, type, class, TTL, RDLENGTH.
const OPT_LEN: u16 = 11;

pub(crate) struct Handler {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) zone: Zone,
    pub(crate) forwarder: Option<Forwarder>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response = self.respond(request).await;
        let udp = request.protocol() == Protocol::Udp;
        let limit = if udp {
            request.edns.as_ref().map_or(CLASSIC_UDP_PAYLOAD, |edns| edns.max_payload().clamp(512, MAX_UDP_PAYLOAD))
        } else {
            u16::MAX
        };
        // hickory-server truncates UDP responses at the OPT's payload size too: advertising
        // exactly our limit keeps its cut and ours the same.
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(if udp { limit } else { MAX_UDP_PAYLOAD });
            edns.set_version(0);
            edns.set_dnssec_ok(req.flags().dnssec_ok);
            edns
        });

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = response.authoritative;
        metadata.recursion_available = response.recursion_available;
        metadata.response_code = response.rcode;
        let cut = if udp {
            fit(&metadata, request.queries.queries(), &response, edns.as_ref(), limit)
        } else {
            Cut::all(&response)
        };
        metadata.truncation = cut.truncated;

        let answers = &response.answers[..cut.answers];
        let authority = if cut.authority { &response.authority[..] } else { &[] };
        let additional = if cut.additional { &response.additional[..] } else { &[] };
        let message = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            authority.iter(),
            iter::empty(),
            additional.iter(),
        );
        match response_handle.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(src = %request.src(), %error, "cannot send a DNS response");
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

impl Handler {
    async fn respond(&self, request: &Request) -> Response {
        let client = request.src().ip();
        let recursion = self.config.recursion_available(client);
        if request.metadata.op_code != OpCode::Query {
            return Response::empty(ResponseCode::NotImp, false, recursion);
        }
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return Response::empty(ResponseCode::BADVERS, false, recursion);
        }
        let [query] = request.queries.queries() else {
            return Response::empty(ResponseCode::FormErr, false, recursion);
        };
        let query: &Query = query.original();
        let decided = {
            let (records, serial) = self.zone.load();
            answer(&records, serial, &self.config, client, query, &mut rand::rng())
        };
        match (decided, &self.forwarder) {
            (Answer::Local(response), _) => response,
            (Answer::Forward, Some(forwarder)) => forwarder.forward(query).await,
            // `serve` builds a forwarder whenever forwarding is configured; refuse rather than
            // pretend if that ever changes.
            (Answer::Forward, None) => Response::empty(ResponseCode::Refused, false, false),
        }
    }
}

/// Which part of a response is sent.
#[derive(Debug, PartialEq, Eq)]
struct Cut {
    answers: usize,
    authority: bool,
    additional: bool,
    truncated: bool,
}

impl Cut {
    fn all(response: &Response) -> Cut {
        Cut { answers: response.answers.len(), authority: true, additional: true, truncated: false }
    }
}

fn fit(metadata: &Metadata, queries: &[LowerQuery], response: &Response, edns: Option<&Edns>, limit: u16) -> Cut {
    let all = Cut::all(response);
    let fits = |authority: &[DnsRecord], additional: &[DnsRecord]| {
        trial(metadata, queries, &response.answers, authority, additional, edns, limit)
            .is_some_and(|header| !header.metadata.truncation)
    };
    if fits(&response.authority, &response.additional) {
        return all;
    }
    if fits(&response.authority, &[]) {
        return Cut { additional: false, ..all };
    }
    let room = limit.saturating_sub(if edns.is_some() { OPT_LEN } else { 0 });
    let answers = trial(metadata, queries, &response.answers, &[], &[], None, room)
        .map_or(0, |header| usize::from(header.counts.answers));
    Cut { answers, authority: false, additional: false, truncated: true }
}

/// The header the message would get if encoded within `max` bytes (counts and TC tell what
/// fitted); `None` if it cannot be encoded at all.
fn trial(
    metadata: &Metadata,
    queries: &[LowerQuery],
    answers: &[DnsRecord],
    authority: &[DnsRecord],
    additional: &[DnsRecord],
    edns: Option<&Edns>,
    max: u16,
) -> Option<Header> {
    let mut buffer = Vec::with_capacity(usize::from(max).min(4096));
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(max);
    emit_message_parts(
        metadata,
        &mut queries.iter().map(LowerQuery::original),
        &mut answers.iter(),
        &mut authority.iter(),
        &mut additional.iter(),
        edns,
        None,
        &mut encoder,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Mutex;

    use hickory_proto::ProtoError;
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{Name as DnsName, RecordType};
    use hickory_server::net::NetError;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::zone_handler::MessageResponse;
    use proptest::prelude::*;

    use super::*;
    use crate::records::{Change, Name, Record, RecordData};
    use crate::server::ZoneConfig;

    /// Encodes the response as the server would for a UDP client.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a DnsRecord> + Send + 'a,
                impl Iterator<Item = &'a DnsRecord> + Send + 'a,
                impl Iterator<Item = &'a DnsRecord> + Send + 'a,
                impl Iterator<Item = &'a DnsRecord> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let max = response.edns().map_or(CLASSIC_UDP_PAYLOAD, Edns::max_payload);
            let mut bytes = Vec::new();
            let mut encoder = BinEncoder::new(&mut bytes);
            encoder.set_max_size(max);
            let info = response.destructive_emit(&mut encoder).map_err(|e: ProtoError| NetError::from(e))?;
            *self.0.lock().unwrap() = Some(bytes);
            Ok(info)
        }
    }

    fn handler() -> Handler {
        let zone = Zone::new();
        let changes: Vec<Change> = (0..60)
            .map(|i| {
                Change::Add(Record {
                    name: Name::new("big.marathon.mesos"),
                    data: RecordData::A(Ipv4Addr::new(10, 1, 0, i)),
                })
            })
            .collect();
        zone.apply(&changes, 1);
        let config = ServerConfig { zones: vec![ZoneConfig::new("mesos")], ..ServerConfig::default() };
        Handler { config: Arc::new(config), zone, forwarder: None }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// What the server would send back to `bytes` over UDP: `None` when it sends nothing.
    fn serve_bytes(runtime: &tokio::runtime::Runtime, handler: &Handler, bytes: &[u8]) -> Option<Vec<u8>> {
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let request = Request::from_bytes(bytes.to_vec(), src, Protocol::Udp).ok()?;
        if request.metadata.message_type == MessageType::Response {
            return None;
        }
        let capture = Capture::default();
        runtime.block_on(handler.handle_request::<_, TokioTime>(&request, capture.clone()));
        capture.0.lock().unwrap().take()
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 7;
        message.add_query(Query::query(DnsName::from_ascii(name).unwrap(), qtype));
        if let Some(payload) = edns {
            let mut opt = Edns::new();
            opt.set_max_payload(payload);
            message.set_edns(opt);
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn large_answers_are_cut_to_whole_records_with_tc_and_opt_kept() {
        let (runtime, handler) = (runtime(), handler());
        let bytes = serve_bytes(&runtime, &handler, &query("big.marathon.mesos.", RecordType::A, None)).unwrap();
        assert!(bytes.len() <= 512);
        let response = Message::from_vec(&bytes).unwrap();
        assert!(response.metadata.truncation);
        assert!(!response.answers.is_empty() && response.answers.len() < 60);

        let bytes = serve_bytes(&runtime, &handler, &query("big.marathon.mesos.", RecordType::A, Some(600))).unwrap();
        assert!(bytes.len() <= 600);
        let response = Message::from_vec(&bytes).unwrap();
        assert!(response.metadata.truncation);
        assert_eq!(response.edns.map(|e| e.max_payload()), Some(600));

        let bytes = serve_bytes(&runtime, &handler, &query("big.marathon.mesos.", RecordType::A, Some(4096))).unwrap();
        let response = Message::from_vec(&bytes).unwrap();
        assert!(!response.metadata.truncation);
        assert_eq!(response.answers.len(), 60);
    }

    #[test]
    fn opcodes_versions_and_question_counts_are_checked() {
        let (runtime, handler) = (runtime(), handler());
        let rcode = |bytes: &[u8]| {
            Message::from_vec(&serve_bytes(&runtime, &handler, bytes).unwrap()).unwrap().metadata.response_code
        };

        let mut message = Message::from_vec(&query("big.marathon.mesos.", RecordType::A, None)).unwrap();
        message.metadata.op_code = OpCode::Notify;
        assert_eq!(rcode(&message.to_vec().unwrap()), ResponseCode::NotImp);

        let mut message = Message::from_vec(&query("big.marathon.mesos.", RecordType::A, Some(1232))).unwrap();
        message.edns.as_mut().unwrap().set_version(1);
        // BADVERS and BADSIG share code 16; a decoder reads it back as either.
        assert_eq!(u16::from(rcode(&message.to_vec().unwrap())), u16::from(ResponseCode::BADVERS));

        let mut message = Message::from_vec(&query("big.marathon.mesos.", RecordType::A, None)).unwrap();
        message.add_query(Query::query(DnsName::from_ascii("other.mesos.").unwrap(), RecordType::A));
        assert_eq!(rcode(&message.to_vec().unwrap()), ResponseCode::FormErr);
        message.queries.clear();
        assert_eq!(rcode(&message.to_vec().unwrap()), ResponseCode::FormErr);
    }

    fn check(runtime: &tokio::runtime::Runtime, handler: &Handler, packet: &[u8]) {
        if let Some(bytes) = serve_bytes(runtime, handler, packet) {
            let response = Message::from_vec(&bytes).expect("the server sent an unparsable response");
            assert_eq!(response.metadata.message_type, MessageType::Response);
            assert_eq!(response.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
            assert!(bytes.len() <= 512 || response.edns.is_some());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..700)) {
            check(&runtime(), &handler(), &packet);
        }

        #[test]
        fn mangled_queries_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            edns in proptest::option::of(0u16..=u16::MAX),
        ) {
            let mut packet = query("big.marathon.mesos.", RecordType::A, edns);
            for (at, byte) in edits {
                let at = at.index(packet.len());
                packet[at] = byte;
            }
            let keep = 12 + cut.index(packet.len() - 11);
            packet.truncate(keep.min(packet.len()));
            check(&runtime(), &handler(), &packet);
        }
    }
}
