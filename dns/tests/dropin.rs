//! Drop-in mode (`atoll dns --mesos-master URL`) against a Mesos master replaying recorded
//! data on loopback: fake.json as `/master/state` (its leader rewritten to loopback, as the
//! fixture's README asks) and a recorded operator-API stream as `SUBSCRIBE`. Only names are
//! served for the fixture's addresses; no traffic goes to them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_dns::settings::DnsSettings;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::sync::mpsc;

fn compat_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ATOLL_COMPAT_DIR") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat");
    assert!(
        dir.join("mesos-dns/fake.json").exists(),
        "conformance data not found at {}: set ATOLL_COMPAT_DIR",
        dir.display()
    );
    dir
}

/// The recorded master: a state that tests can change, and subscribers to push records to.
#[derive(Clone)]
struct FakeMaster {
    state: Arc<Mutex<serde_json::Value>>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>>,
    offer_stream: bool,
}

fn recordio(record: &[u8]) -> Vec<u8> {
    let mut framed = format!("{}\n", record.len()).into_bytes();
    framed.extend_from_slice(record);
    framed
}

async fn master_state(State(master): State<FakeMaster>) -> axum::Json<serde_json::Value> {
    axum::Json(master.state.lock().unwrap().clone())
}

async fn operator_api(State(master): State<FakeMaster>, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !master.offer_stream || !body.contains("SUBSCRIBE") {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    // The first record of a recorded DC/OS stream: SUBSCRIBED with the whole state.
    let recorded = std::fs::read_to_string(compat_dir().join("dcos-net/hello-world.json")).unwrap();
    let first = recorded.lines().next().unwrap().as_bytes().to_vec();
    tx.send(recordio(&first)).unwrap();
    master.subscribers.lock().unwrap().push(tx);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, std::io::Error>(bytes), rx))
    });
    ([("content-type", "application/json")], Body::from_stream(stream)).into_response()
}

async fn start_master(offer_stream: bool) -> (FakeMaster, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(compat_dir().join("mesos-dns/fake.json")).unwrap()).unwrap();
    state["leader"] = serde_json::json!(format!("master@127.0.0.1:{}", addr.port()));
    let master = FakeMaster { state: Arc::new(Mutex::new(state)), subscribers: Arc::default(), offer_stream };
    let app = Router::new()
        .route("/master/state", get(master_state))
        .route("/api/v1", post(operator_api))
        .with_state(master.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (master, addr)
}

async fn query(server: SocketAddr, name: &str) -> Message {
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&message.to_vec().unwrap(), server).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer)).await.unwrap().unwrap();
    Message::from_vec(&buffer[..n]).unwrap()
}

/// Queries until `done` holds, for at most 20 s.
async fn eventually(server: SocketAddr, name: &str, done: impl Fn(&Message) -> bool) -> Message {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = query(server, name).await;
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{name} never got there: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_dns(master: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let settings = DnsSettings {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        no_forward: true,
        mesos_master: Some(format!("http://{master}")),
        ..DnsSettings::default()
    };
    let mut options = settings.resolve().unwrap();
    options.data_dir = None;
    let dns = atoll_dns::daemon::start(options).await.unwrap();
    let addr = dns.dns_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dns.serve(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn a_values(message: &Message) -> Vec<String> {
    let mut values: Vec<String> =
        message.answers.iter().map(|r| r.to_string().split_whitespace().last().unwrap().to_owned()).collect();
    values.sort();
    values
}

#[tokio::test]
async fn names_follow_a_mesos_master_through_its_event_stream() {
    let (master, master_addr) = start_master(true).await;
    let (dns, _stop) = start_dns(master_addr).await;
    let answer = eventually(dns, "liquor-store.marathon.mesos.", |m| !m.answers.is_empty()).await;
    assert_eq!(a_values(&answer), vec!["1.2.3.11", "1.2.3.12"], "as Mesos-DNS answers for fake.json");
    let leader = query(dns, "leader.mesos.").await;
    assert_eq!(a_values(&leader), vec!["127.0.0.1"]);

    // The chronos task goes away; an event on the stream makes the DNS look again at once.
    {
        let mut state = master.state.lock().unwrap();
        for framework in state["frameworks"].as_array_mut().unwrap() {
            framework["tasks"].as_array_mut().unwrap().retain(|t| t["name"] != "chronos");
        }
    }
    // The recorded stream's next event (what it says does not matter: the DNS reads the state).
    let recorded = std::fs::read_to_string(compat_dir().join("dcos-net/hello-world.json")).unwrap();
    let event = recorded.lines().nth(1).unwrap().as_bytes().to_vec();
    for subscriber in master.subscribers.lock().unwrap().iter() {
        subscriber.send(recordio(&event)).unwrap();
    }
    eventually(dns, "chronos.marathon.mesos.", |m| m.metadata.response_code == ResponseCode::NXDomain).await;
}

#[tokio::test]
async fn without_an_event_stream_the_state_is_polled() {
    let (_master, master_addr) = start_master(false).await;
    let (dns, _stop) = start_dns(master_addr).await;
    let answer = eventually(dns, "chronos.marathon.mesos.", |m| !m.answers.is_empty()).await;
    assert_eq!(a_values(&answer), vec!["1.2.3.11"]);
}
