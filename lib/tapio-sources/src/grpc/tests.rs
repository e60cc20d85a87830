//! The source against the generated tonic client over real loopback gRPC: tokens, answers that
//! wait for the sinks, and events that do not convert.

use std::time::Duration;

use tapio_event::{BatchStatus, ComponentConfig, EventType, Source, Timestamp, UnifiedEvent};
use tapio_proto::v1::event_service_client::EventServiceClient;
use tapio_proto::v1::{self, AckStatus};
use tokio::sync::mpsc;

use super::GrpcSourceConfig;
use crate::util::testing::{build_context, context, next_batch};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wire(id: &str) -> v1::UnifiedEvent {
    let mut event = UnifiedEvent::new(EventType::Application, "demo", Timestamp(1_000));
    event.id = id.into();
    tapio_proto::event_to_proto(&event)
}

async fn connect(port: u16) -> EventServiceClient<tonic::transport::Channel> {
    for _ in 0..100 {
        if let Ok(client) = EventServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the source did not listen");
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_after_the_sinks_refuses_strangers_and_routes_bad_events() {
    let port = free_port();
    let config: GrpcSourceConfig = toml::from_str(&format!(
        "address = \"127.0.0.1:{port}\"\nauth.tokens = [\"agent-a:s3cret\"]"
    ))
    .unwrap();
    let source: Box<dyn Source> = config.build(&build_context("in")).unwrap();
    let (cx, mut taps) = context("grpc", true);
    let running = tokio::spawn(source.run(cx));
    let mut client = connect(port).await;

    let refused = client
        .submit_events(with_token(futures::stream::iter(vec![]), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let (tx, rx) = mpsc::channel(4);
    let outbound =
        futures::stream::unfold(rx, |mut rx: mpsc::Receiver<v1::EventBatch>| async move {
            rx.recv().await.map(|b| (b, rx))
        });
    let mut answers = client
        .submit_events(with_token(outbound, "s3cret"))
        .await
        .unwrap()
        .into_inner();
    let mut bad = wire("evt_bad");
    bad.r#type = 42;
    tx.send(v1::EventBatch {
        sequence: 7,
        events: vec![wire("evt_1"), bad, wire("evt_2")],
    })
    .await
    .unwrap();
    let batch = next_batch(&mut taps.events).await;
    let ids: Vec<&str> = batch.events().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["evt_1", "evt_2"]);
    let errors = next_batch(&mut taps.errors).await;
    assert_eq!(errors.len(), 1);
    let details = errors.events()[0].application.as_deref().unwrap();
    assert!(
        details["error"].as_str().unwrap().contains("`type`"),
        "{details:?}"
    );
    errors.ack(BatchStatus::Delivered);
    // No answer while the sinks have not acknowledged the batch.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), answers.message())
            .await
            .is_err()
    );
    batch.ack(BatchStatus::Delivered);
    let answer = answers.message().await.unwrap().unwrap();
    assert_eq!(answer.sequence, 7);
    assert_eq!(answer.status, AckStatus::Delivered as i32);
    assert!(answer.message.contains("rejected"), "{}", answer.message);

    tx.send(v1::EventBatch {
        sequence: 8,
        events: vec![wire("evt_3")],
    })
    .await
    .unwrap();
    next_batch(&mut taps.events).await.ack(BatchStatus::Failed);
    let answer = answers.message().await.unwrap().unwrap();
    assert_eq!(
        (answer.sequence, answer.status),
        (8, AckStatus::Failed as i32)
    );

    let snapshot = taps.metrics.snapshot();
    assert_eq!(snapshot.errors_total(), 2, "one stranger, one bad event");
    taps.trigger.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the source stops with a stream open")
        .unwrap()
        .unwrap();
}

#[test]
fn bad_options_are_named() {
    let build = |text: &str| {
        let config: GrpcSourceConfig = toml::from_str(text).unwrap();
        config
            .build(&build_context("in"))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(build("address = \"nowhere\"").contains("`address`"));
    assert!(build("max_in_flight = 0").contains("`max_in_flight`"));
    assert!(build("auth = {}").contains("`auth`"));
    assert!(build("auth.tokens_file = \"/nonexistent/tokens\"").contains("auth.tokens_file"));
}
