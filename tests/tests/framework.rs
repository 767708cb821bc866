//! An external framework over the gRPC scheduler API (Mesos v1 calls and events).

use std::time::Duration;

use atoll_proto::pb::v1 as pb;
use atoll_proto::pb::v1::scheduler as spb;
use atoll_tests::Cluster;
use tonic::Streaming;

const LONG: Duration = Duration::from_secs(60);

struct Framework {
    client: spb::scheduler_client::SchedulerClient<tonic::transport::Channel>,
    events: Streaming<spb::Event>,
    id: pb::FrameworkId,
    stream_id: String,
    /// Offers that arrived while waiting for something else.
    offers: Vec<pb::Offer>,
}

impl Framework {
    async fn subscribe(cluster: &Cluster, name: &str) -> Framework {
        let mut client = spb::scheduler_client::SchedulerClient::connect(cluster.master_url()).await.unwrap();
        let info = pb::FrameworkInfo {
            name: name.into(),
            user: Some("root".into()),
            failover_timeout: 60.0,
            capabilities: vec![pb::framework_info::Capability {
                r#type: pb::framework_info::capability::Type::PartitionAware as i32,
            }],
            ..Default::default()
        };
        let call = spb::Call {
            r#type: spb::call::Type::Subscribe as i32,
            subscribe: Some(spb::call::Subscribe { framework_info: Some(info), suppressed_roles: Vec::new() }),
            ..Default::default()
        };
        let response = client.subscribe(call).await.unwrap();
        let header = response.metadata().get("mesos-stream-id").unwrap().to_str().unwrap().to_owned();
        let mut events = response.into_inner();
        let first = events.message().await.unwrap().unwrap();
        assert_eq!(first.r#type, spb::event::Type::Subscribed as i32);
        let subscribed = first.subscribed.unwrap();
        assert_eq!(subscribed.stream_id, header);
        Framework { client, events, id: subscribed.framework_id.unwrap(), stream_id: header, offers: Vec::new() }
    }

    async fn call(&mut self, mut call: spb::Call) -> Result<(), tonic::Status> {
        call.framework_id = Some(self.id.clone());
        let mut request = tonic::Request::new(call);
        request.metadata_mut().insert("mesos-stream-id", self.stream_id.parse().unwrap());
        self.client.call(request).await.map(|_| ())
    }

    /// The next event that is not a heartbeat.
    async fn next(&mut self) -> spb::Event {
        loop {
            let event = tokio::time::timeout(LONG, self.events.message()).await.unwrap().unwrap().unwrap();
            if event.r#type != spb::event::Type::Heartbeat as i32 {
                return event;
            }
        }
    }

    async fn next_offers(&mut self) -> Vec<pb::Offer> {
        if !self.offers.is_empty() {
            return std::mem::take(&mut self.offers);
        }
        loop {
            let event = self.next().await;
            if let Some(offers) = event.offers {
                return offers.offers;
            }
        }
    }

    async fn next_update(&mut self) -> pb::TaskStatus {
        loop {
            let event = self.next().await;
            if let Some(update) = event.update {
                return update.status.unwrap();
            }
            if let Some(offers) = event.offers {
                self.offers.extend(offers.offers);
            }
        }
    }

    async fn ack(&mut self, status: &pb::TaskStatus) {
        if status.uuid.is_empty() {
            return;
        }
        self.call(spb::Call {
            r#type: spb::call::Type::Acknowledge as i32,
            acknowledge: Some(spb::call::Acknowledge {
                agent_id: status.agent_id.clone(),
                task_id: status.task_id.clone(),
                uuid: status.uuid.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

fn scalar(name: &str, value: f64) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        r#type: Some(pb::value::Type::Scalar as i32),
        scalar: Some(pb::value::Scalar { value: Some(value) }),
        role: "*".into(),
        ..Default::default()
    }
}

fn launch(offer: &pb::Offer, task_id: &str, command: &str, cpus: f64) -> spb::Call {
    let task = pb::TaskInfo {
        name: task_id.into(),
        task_id: Some(pb::TaskId { value: task_id.into() }),
        agent_id: offer.agent_id.clone(),
        resources: vec![scalar("cpus", cpus), scalar("mem", 32.0)],
        command: Some(pb::CommandInfo { value: command.into(), ..Default::default() }),
        ..Default::default()
    };
    spb::Call {
        r#type: spb::call::Type::Accept as i32,
        accept: Some(spb::call::Accept {
            offer_ids: vec![offer.id.clone().unwrap()],
            operations: vec![pb::offer::Operation {
                r#type: pb::offer::operation::Type::Launch as i32,
                launch: Some(pb::offer::operation::Launch { task_infos: vec![task] }),
                ..Default::default()
            }],
            filters: Some(pb::Filters { refuse_seconds: Some(0.0) }),
        }),
        ..Default::default()
    }
}

fn state_of(status: &pb::TaskStatus) -> pb::TaskState {
    status.state()
}

#[tokio::test]
async fn a_framework_gets_offers_launches_acknowledges_reconciles_and_tears_down() {
    let (begin, _) = atoll_tests::test_port_range();
    let resources = format!("cpus:2;mem:512;disk:100;ports:[{begin}-{}]", begin + 9);
    let cluster = Cluster::start_with(&["--resources", &resources]).await.unwrap();
    let mut framework = Framework::subscribe(&cluster, "test-framework").await;
    let offers = framework.next_offers().await;
    assert_eq!(offers.len(), 1);
    let offer = &offers[0];
    assert!(offer.resources.iter().any(|r| r.name == "cpus" && r.scalar.as_ref().unwrap().value() == 2.0));

    framework.call(launch(offer, "sleeper", "sleep 1000", 1.0)).await.unwrap();
    let mut states = Vec::new();
    while states.last() != Some(&pb::TaskState::TaskRunning) {
        let status = framework.next_update().await;
        assert_eq!(status.task_id.as_ref().unwrap().value, "sleeper");
        assert_eq!(status.uuid.len(), 16, "agent updates carry a uuid to acknowledge");
        states.push(state_of(&status));
        framework.ack(&status).await;
    }
    assert_eq!(states, vec![pb::TaskState::TaskStarting, pb::TaskState::TaskRunning]);

    // The remaining cpu comes back as a new offer; a second launch that asks for too much is
    // refused with TASK_ERROR and changes nothing.
    let offers = framework.next_offers().await;
    framework.call(launch(&offers[0], "greedy", "true", 5.0)).await.unwrap();
    let status = framework.next_update().await;
    assert_eq!(state_of(&status), pb::TaskState::TaskError);
    assert!(status.message.contains("not available"), "{}", status.message);

    // Implicit reconciliation names the live task.
    framework
        .call(spb::Call {
            r#type: spb::call::Type::Reconcile as i32,
            reconcile: Some(Default::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = framework.next_update().await;
    assert_eq!(status.task_id.as_ref().unwrap().value, "sleeper");
    assert_eq!(state_of(&status), pb::TaskState::TaskRunning);
    assert!(status.uuid.is_empty(), "reconciliation answers need no acknowledgement");

    // Kill: KILLING then KILLED.
    framework
        .call(spb::Call {
            r#type: spb::call::Type::Kill as i32,
            kill: Some(spb::call::Kill { task_id: Some(pb::TaskId { value: "sleeper".into() }), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut last = pb::TaskState::TaskRunning;
    while last != pb::TaskState::TaskKilled {
        let status = framework.next_update().await;
        last = state_of(&status);
        framework.ack(&status).await;
    }

    // Bad calls are refused with the field named.
    let bad = spb::Call { r#type: spb::call::Type::Decline as i32, ..Default::default() };
    let err = framework.call(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("decline"), "{}", err.message());

    framework.call(spb::Call { r#type: spb::call::Type::Teardown as i32, ..Default::default() }).await.unwrap();
    let frameworks = cluster.get("/v1/frameworks").await.unwrap();
    assert!(frameworks.as_array().unwrap().iter().all(|f| f["info"]["name"] != "test-framework"));
}

#[tokio::test]
async fn calls_need_the_stream_id_of_their_subscription() {
    let cluster = Cluster::start().await.unwrap();
    let mut framework = Framework::subscribe(&cluster, "f").await;
    framework.stream_id = "not-a-stream".into();
    let err =
        framework.call(spb::Call { r#type: spb::call::Type::Revive as i32, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
