//! Following an Apache Mesos master's operator API: `POST /api/v1` with `{"type":"SUBSCRIBE"}`
//! answers a RecordIO stream (`<length>\n<JSON event>`…) that starts with `SUBSCRIBED` (the
//! whole state) and goes on with `TASK_ADDED`, `TASK_UPDATED`, `AGENT_ADDED`, … and
//! heartbeats. [`Subscription`] turns it into Atoll snapshots and events with the pure
//! [`MesosConverter`] of `atoll-lb-core`, resolving agents' host names on the way, and takes a
//! stream that stays silent for three heartbeats for dead; [`next_retry`] is the backoff
//! between subscriptions.
//!
//! This crate owns only that I/O shell, shared by the daemons that follow a Mesos master:
//! `atoll lb --mesos-master` (the VIPs of the converted state) and `atoll edge --mesos-master`
//! (the edge routes of it). It lives apart from both so that the edge does not depend on the
//! load balancer daemon (and its eBPF loader), nor the load balancer on pingora.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use atoll_lb_core::vips::mesos::hostnames;
pub use atoll_lb_core::vips::mesos::{Converted, MesosConverter, PortView};
use atoll_proto::model::Time;
use atoll_proto::recordio::{RecordIo, RecordIoError};
use serde_json::Value;

/// The shortest wait before subscribing again: a master that ends every stream at once (or
/// refuses it) is not hammered.
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the master stays unreachable.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// A stream that lived this long was a good one: the next wait starts short again.
pub const STABLE: Duration = Duration::from_secs(60);
/// The heartbeat interval assumed until `SUBSCRIBED` names one (Mesos's default).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Heartbeats missed in a row after which the stream is taken for dead (dcos-net waits as
/// many): a master that vanished without closing the connection is noticed.
const MISSED_HEARTBEATS: u32 = 3;
/// How long one host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Mesos master could not be followed (this time: the caller subscribes again after
/// [`next_retry`]).
#[derive(Debug, thiserror::Error)]
pub enum MesosError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url}: not a Mesos event stream (Content-Type `{content_type}`, expected application/json)")]
    NotAStream { url: String, content_type: String },
    #[error("{url}: {source}")]
    Framing { url: String, source: RecordIoError },
    #[error("{url}: silent for {silence:?} (the master sends a heartbeat every {heartbeat:?})")]
    Silent { url: String, silence: Duration, heartbeat: Duration },
}

/// The base URL of a Mesos master or Marathon given on the command line (`http://host[:port]`),
/// without a trailing slash (the followers append their paths), or why it is not one. Plain
/// HTTP only: the daemons' HTTP client has no TLS, so an `https://` URL would only fail later.
pub fn base_url(url: &str) -> Result<String, String> {
    let base = url.trim().trim_end_matches('/');
    let Some(rest) = base.strip_prefix("http://") else {
        return Err(format!("`{url}` is not an http:// URL (e.g. http://mesos-master:5050)"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!("`{url}` names no host"));
    }
    Ok(base.to_owned())
}

/// The next wait before subscribing again, after waiting `retry` last time and a stream that
/// lived `lived` (`None`: there was no stream).
pub fn next_retry(retry: Duration, lived: Option<Duration>) -> Duration {
    match lived {
        Some(lived) if lived >= STABLE => MIN_RETRY,
        _ => (retry * 2).clamp(MIN_RETRY, MAX_RETRY),
    }
}

/// One subscription to a Mesos master's event stream.
pub struct Subscription {
    url: String,
    response: reqwest::Response,
    framing: RecordIo,
    /// Records split off the stream but not converted yet.
    pending: VecDeque<Vec<u8>>,
    converter: MesosConverter,
}

impl Subscription {
    /// Subscribes to the operator API of the master at `base` (`http://host:5050`), converting
    /// its events with [`MesosConverter::new`] (the load balancer's view of the tasks). A
    /// response that is not a JSON event stream is refused: a proxy's error page, or a master
    /// too old to have the operator API, must not be read as events.
    pub async fn open(http: &reqwest::Client, base: &str) -> Result<Subscription, MesosError> {
        Subscription::open_with(http, base, MesosConverter::new()).await
    }

    /// [`Subscription::open`] converting with `converter` (e.g. one that keeps every port of
    /// a task, as the edge needs: [`MesosConverter::with_ports`]). A converter that followed
    /// an earlier stream may be passed: every stream starts over from its `SUBSCRIBED` state.
    pub async fn open_with(
        http: &reqwest::Client,
        base: &str,
        converter: MesosConverter,
    ) -> Result<Subscription, MesosError> {
        let url = format!("{}/api/v1", base.trim_end_matches('/'));
        let http_error = |e: reqwest::Error| MesosError::Http { url: url.clone(), message: error_chain(&e) };
        let response = http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(r#"{"type":"SUBSCRIBE"}"#)
            .send()
            .await
            .map_err(http_error)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(200).collect();
            return Err(MesosError::Status { url, status: status.as_u16(), body });
        }
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(MesosError::NotAStream { url, content_type: content_type.to_owned() });
        }
        Ok(Subscription { url, response, framing: RecordIo::default(), pending: VecDeque::new(), converter })
    }

    /// The next event's meaning for Atoll's model; `None` when the master ended the stream.
    /// Records that cannot be used (not JSON, or an event the converter refuses) are logged
    /// and skipped. Cancel-safe: a record is taken off the queue only once converted.
    pub async fn next(&mut self) -> Result<Option<Converted>, MesosError> {
        loop {
            if let Some(record) = self.pending.front() {
                let value = match serde_json::from_slice::<Value>(record) {
                    Ok(value) => value,
                    Err(e) => {
                        tracing::warn!("{}: an event that is not JSON ({e}); skipped", self.url);
                        self.pending.pop_front();
                        continue;
                    }
                };
                let resolved = resolve_all(hostnames(&value)).await;
                self.pending.pop_front();
                let converted = self
                    .converter
                    .convert(&value, Time::now(), &|host| resolved.get(host).cloned().unwrap_or_default());
                for warning in self.converter.take_warnings() {
                    tracing::warn!("{warning}");
                }
                match converted {
                    Ok(converted) => return Ok(Some(converted)),
                    Err(e) => tracing::warn!("{}: event skipped: {e}", self.url),
                }
                continue;
            }
            let heartbeat = self
                .converter
                .heartbeat_interval_secs()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .unwrap_or(DEFAULT_HEARTBEAT);
            let silence = heartbeat * MISSED_HEARTBEATS;
            match tokio::time::timeout(silence, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    let records = self
                        .framing
                        .feed(&bytes)
                        .map_err(|source| MesosError::Framing { url: self.url.clone(), source })?;
                    self.pending.extend(records);
                }
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => return Err(MesosError::Http { url: self.url.clone(), message: error_chain(&e) }),
                Err(_) => return Err(MesosError::Silent { url: self.url.clone(), silence, heartbeat }),
            }
        }
    }
}

/// Looks the host names up (concurrently: a cluster's agents must not wait for each other's
/// slow names); a name that does not resolve in time resolves to nothing.
async fn resolve_all(names: BTreeSet<String>) -> BTreeMap<String, Vec<IpAddr>> {
    let mut lookups = tokio::task::JoinSet::new();
    for name in names {
        lookups.spawn(async move {
            let host = name.clone();
            let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0))).await;
            let ips = match lookup {
                Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
                Ok(Err(e)) => {
                    tracing::warn!("agent host name {name}: {e}");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!("agent host name {name}: no answer within {RESOLVE_TIMEOUT:?}");
                    Vec::new()
                }
            };
            (name, ips)
        });
    }
    let mut resolved = BTreeMap::new();
    while let Some(result) = lookups.join_next().await {
        if let Ok((name, ips)) = result {
            resolved.insert(name, ips);
        }
    }
    resolved
}

/// An error with its causes (reqwest's own message says little: "error sending request").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use atoll_lb_core::vips::{DEFAULT_VIP_POOL, VipProjection, sync_hashed_assignments};
    use atoll_lb_core::{key_parts, protocol_name};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn base_urls_are_plain_http_with_a_host() {
        assert_eq!(base_url(" http://mesos:5050/ ").unwrap(), "http://mesos:5050");
        for bad in ["mesos:5050", "https://mesos", "http://", "http:///api", "http://a b"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retries_wait_at_least_a_second_and_back_off() {
        assert_eq!(next_retry(Duration::ZERO, Some(Duration::ZERO)), MIN_RETRY, "a stream that ended at once");
        assert_eq!(next_retry(MIN_RETRY, None), Duration::from_secs(2));
        assert_eq!(next_retry(Duration::from_secs(20), None), MAX_RETRY);
        assert_eq!(next_retry(MAX_RETRY, Some(STABLE)), MIN_RETRY, "after a good stream, short again");
    }

    /// RecordIO frames of these events.
    fn frames(events: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            let text = serde_json::to_vec(event).unwrap();
            out.extend(format!("{}\n", text.len()).into_bytes());
            out.extend(text);
        }
        out
    }

    /// A one-connection HTTP server on loopback that checks the SUBSCRIBE request and answers
    /// with `content_type` and `body` in chunks of 7 bytes; with `hold`, it keeps the
    /// connection open afterwards.
    async fn master(content_type: &'static str, body: Vec<u8>, hold: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body its Content-Length announces.
            let body_start = loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            while request.len() < body_start + length {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            assert!(head.starts_with("post /api/v1 http/1.1"), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            assert!(head.contains("accept: application/json"), "{head}");
            assert_eq!(&request[body_start..], br#"{"type":"SUBSCRIBE"}"#);
            let header =
                format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n");
            socket.write_all(header.as_bytes()).await.unwrap();
            for chunk in body.chunks(7) {
                socket.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
                socket.write_all(chunk).await.unwrap();
                socket.write_all(b"\r\n").await.unwrap();
            }
            if hold {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        });
        base
    }

    fn stream_events(heartbeat: f64) -> Vec<Value> {
        let running = |ip: &str| {
            json!([{"state": "TASK_RUNNING", "timestamp": 1.0,
            "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]}}])
        };
        let task = |id: &str, agent: &str, ip: &str| {
            json!({
                "task_id": {"value": id}, "framework_id": {"value": "F"}, "agent_id": {"value": agent},
                "name": "web", "state": "TASK_RUNNING", "statuses": running(ip),
                "discovery": {"visibility": "FRAMEWORK", "ports": {"ports": [{"number": 31000, "protocol": "tcp",
                    "labels": {"labels": [{"key": "VIP_0", "value": "/web:80"}]}}]}},
            })
        };
        vec![
            json!({"type": "SUBSCRIBED", "subscribed": {"heartbeat_interval_seconds": heartbeat, "get_state": {
                "get_agents": {"agents": [{"agent_info": {"id": {"value": "S0"}, "hostname": "198.19.255.1"},
                                           "pid": "slave(1)@198.19.255.1:5051"}]},
                "get_frameworks": {"frameworks": [{"framework_info": {"id": {"value": "F"}, "name": "marathon"}}]},
                "get_tasks": {"tasks": [task("web.1", "S0", "198.19.255.1")]},
            }}}),
            json!({"type": "HEARTBEAT"}),
            json!({"type": "AGENT_ADDED", "agent_added": {"agent": {"agent_info": {"id": {"value": "S1"},
                "hostname": "198.19.255.2"}, "pid": "slave(1)@198.19.255.2:5051"}}}),
            json!({"type": "TASK_ADDED", "task_added": {"task": task("web.2", "S1", "198.19.255.2")}}),
        ]
    }

    /// `name:port/proto → backends` of a projection fed like the controller feeds its own.
    fn follow(inputs: Vec<Converted>) -> BTreeMap<String, Vec<String>> {
        let mut projection = VipProjection::new();
        for input in inputs {
            match input {
                Converted::Snapshot(state) => {
                    projection.reset(&state, &BTreeMap::new());
                }
                Converted::Events(events) => events.iter().for_each(|e| drop(projection.apply(e))),
            }
            sync_hashed_assignments(&mut projection, DEFAULT_VIP_POOL);
        }
        projection
            .services()
            .map(|s| {
                let (_, port, proto) = key_parts(&s.key);
                let backends = s.backends.iter().map(|b| format!("{}:{}", b.address, b.port)).collect();
                (format!("{}:{port}/{}", s.names[0], protocol_name(proto)), backends)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_subscription_converts_the_stream_until_it_ends() {
        let base = master("application/json", frames(&stream_events(15.0)), false).await;
        let http = reqwest::Client::new();
        let mut subscription = Subscription::open(&http, &format!("{base}/")).await.unwrap();
        let mut inputs = Vec::new();
        while let Some(input) = subscription.next().await.unwrap() {
            inputs.push(input);
        }
        assert_eq!(inputs.len(), 4, "state, heartbeat, agent, task");
        assert!(matches!(inputs[0], Converted::Snapshot(_)));
        assert_eq!(inputs[1], Converted::Events(vec![]));
        let expected = BTreeMap::from([(
            "web.marathon:80/tcp".to_owned(),
            vec!["198.19.255.1:31000".to_owned(), "198.19.255.2:31000".to_owned()],
        )]);
        assert_eq!(follow(inputs), expected);
    }

    #[tokio::test]
    async fn anything_but_a_json_stream_is_refused() {
        let base = master("text/html; charset=utf-8", b"<html>".to_vec(), false).await;
        match Subscription::open(&reqwest::Client::new(), &base).await {
            Err(MesosError::NotAStream { content_type, .. }) => assert_eq!(content_type, "text/html; charset=utf-8"),
            Err(other) => panic!("expected NotAStream, got {other}"),
            Ok(_) => panic!("expected NotAStream, got a stream"),
        }
    }

    #[tokio::test]
    async fn a_silent_stream_is_dead_after_three_heartbeats() {
        // A 50 ms heartbeat: silent for 150 ms after the events is dead.
        let base = master("application/json", frames(&stream_events(0.05)), true).await;
        let mut subscription = Subscription::open(&reqwest::Client::new(), &base).await.unwrap();
        for _ in 0..4 {
            assert!(subscription.next().await.unwrap().is_some());
        }
        let started = std::time::Instant::now();
        match subscription.next().await {
            Err(MesosError::Silent { silence, .. }) => assert_eq!(silence, Duration::from_millis(150)),
            other => panic!("expected Silent, got {other:?}", other = other.map(|_| ())),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn host_names_resolve_through_the_system() {
        let resolved = resolve_all(BTreeSet::from(["localhost".to_owned()])).await;
        assert!(resolved["localhost"].iter().any(|ip| ip.is_loopback()), "{resolved:?}");
    }
}
