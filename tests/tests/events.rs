//! The event stream: ordered, gapless, resumable, exactly once — over SSE and gRPC.

use std::time::Duration;

use atoll_proto::pb::v1::operator as opb;
use atoll_tests::{Cluster, SseStream};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// Reads events until one with index `until` arrived (or fails after a bound).
async fn read_until(stream: &mut SseStream, until: u64, into: &mut Vec<Value>) {
    for _ in 0..100_000 {
        let message = stream.next(LONG).await.unwrap().expect("the stream ended early");
        match message["type"].as_str().unwrap() {
            "EVENT" => {
                let index = message["event"]["index"].as_u64().unwrap();
                into.push(message["event"].clone());
                if index >= until {
                    return;
                }
            }
            other => panic!("unexpected {other} while replaying: {message}"),
        }
    }
    panic!("too many events");
}

async fn head(cluster: &Cluster) -> u64 {
    cluster.get("/v1/state").await.unwrap()["index"].as_u64().unwrap()
}

#[tokio::test]
async fn a_subscriber_that_disconnects_and_resumes_sees_every_event_once_in_order() {
    let cluster = Cluster::start().await.unwrap();
    for i in 0..3 {
        cluster.run_atoll(&["run", "--name", &format!("first-{i}"), "--", "true"], LONG).await.unwrap();
    }
    let first_head = head(&cluster).await;
    let url = format!("{}/v1/events", cluster.master_url());

    let mut seen = Vec::new();
    let mut stream = SseStream::open(&format!("{url}?since=0"), None).await.unwrap();
    read_until(&mut stream, first_head, &mut seen).await;
    drop(stream);
    let last = seen.last().unwrap()["index"].as_u64().unwrap();

    // Things happen while the subscriber is away.
    for i in 0..3 {
        cluster.run_atoll(&["run", "--name", &format!("second-{i}"), "--", "true"], LONG).await.unwrap();
    }
    let second_head = head(&cluster).await;
    assert!(second_head > last);

    // Resume the way a browser does, with Last-Event-ID.
    let mut resumed = SseStream::open(&url, Some(last)).await.unwrap();
    read_until(&mut resumed, second_head, &mut seen).await;

    // And live: the next event arrives on the open stream.
    cluster.run_atoll(&["run", "--name", "live", "--", "true"], LONG).await.unwrap();
    read_until(&mut resumed, second_head + 1, &mut seen).await;

    let mut full = Vec::new();
    let mut everything = SseStream::open(&format!("{url}?since=0"), None).await.unwrap();
    read_until(&mut everything, seen.last().unwrap()["index"].as_u64().unwrap(), &mut full).await;
    let indexes: Vec<u64> = seen.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=*indexes.last().unwrap()).collect();
    assert_eq!(indexes, expected, "every event exactly once, in order");
    assert_eq!(seen, full, "the resumed view equals one uninterrupted read");
}

#[tokio::test]
async fn without_since_or_beyond_retention_a_snapshot_comes_first() {
    let cluster = Cluster::start_with_flags(&["--event-retention", "5"], &[]).await.unwrap();
    for i in 0..3 {
        cluster.run_atoll(&["run", "--name", &format!("t{i}"), "--", "true"], LONG).await.unwrap();
    }
    let url = format!("{}/v1/events", cluster.master_url());
    let mut stream = SseStream::open(&url, None).await.unwrap();
    let first = stream.next(LONG).await.unwrap().unwrap();
    assert_eq!(first["type"], "SNAPSHOT");
    assert_eq!(first["state"]["tasks"].as_array().unwrap().len(), 3);

    let mut stream = SseStream::open(&format!("{url}?since=1"), None).await.unwrap();
    let first = stream.next(LONG).await.unwrap().unwrap();
    assert_eq!(first["type"], "FELL_BEHIND", "{first}");
    assert_eq!(first["requested"], 1);
    let second = stream.next(LONG).await.unwrap().unwrap();
    assert_eq!(second["type"], "SNAPSHOT");
    let index = second["state"]["index"].as_u64().unwrap();
    cluster.run_atoll(&["run", "--", "true"], LONG).await.unwrap();
    let next = stream.next(LONG).await.unwrap().unwrap();
    assert_eq!(next["event"]["index"].as_u64(), Some(index + 1), "live events follow the snapshot without a gap");
}

#[tokio::test]
async fn grpc_subscribers_resume_with_since() {
    let cluster = Cluster::start().await.unwrap();
    cluster.run_atoll(&["run", "--", "true"], LONG).await.unwrap();
    let mut client = opb::operator_client::OperatorClient::connect(cluster.master_url()).await.unwrap();
    let mut stream = client.subscribe(opb::SubscribeRequest { since: Some(0) }).await.unwrap().into_inner();
    let target = head(&cluster).await;
    let mut indexes = Vec::new();
    while indexes.last().copied().unwrap_or(0) < target {
        let message = tokio::time::timeout(LONG, stream.message()).await.unwrap().unwrap().unwrap();
        if let Some(opb::stream_message::Message::Event(event)) = message.message {
            indexes.push(event.index);
        }
    }
    drop(stream);
    cluster.run_atoll(&["run", "--", "true"], LONG).await.unwrap();
    let target = head(&cluster).await;
    let mut stream =
        client.subscribe(opb::SubscribeRequest { since: indexes.last().copied() }).await.unwrap().into_inner();
    while indexes.last().copied().unwrap_or(0) < target {
        let message = tokio::time::timeout(LONG, stream.message()).await.unwrap().unwrap().unwrap();
        match message.message {
            Some(opb::stream_message::Message::Event(event)) => indexes.push(event.index),
            Some(opb::stream_message::Message::Heartbeat(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(indexes, (1..=target).collect::<Vec<_>>());
}
