//! Error paths of the `kafka` sink against librdkafka's mock cluster, which can inject broker
//! errors and take brokers down: retriable failures lose nothing, rejected messages are
//! dead-lettered. The happy path against a real broker is in `tests/kafka.rs`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tapio_event::{
    AckToken, BuildContext, ComponentKind, ComponentMetrics, Entity, EntityType, EventType,
    Timestamp, UnifiedEvent,
};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{Failure, KafkaSink, KafkaSinkConfig, classify};

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 1, 1).unwrap();
    cluster
}

/// A sink writing to `topic` of the cluster at `bootstrap`, with `extra` options.
fn sink(bootstrap: &str, data_dir: &std::path::Path, topic: &str, extra: &str) -> KafkaSink {
    let config: KafkaSinkConfig = toml::from_str(&format!(
        "bootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\nhealthcheck = false\n{extra}"
    ))
    .unwrap();
    config
        .create(&BuildContext {
            name: "bus".into(),
            data_dir: data_dir.to_owned(),
            node_name: "test".into(),
        })
        .unwrap()
}

fn events(n: u64) -> Vec<UnifiedEvent> {
    (0..n)
        .map(|i| {
            let mut event = UnifiedEvent::new(EventType::Process, "demo", Timestamp(i as i64));
            event.id = format!("evt_{i}");
            event.entity = Some(Box::new(Entity::new(EntityType::Host, "host-1")));
            event
        })
        .collect()
}

/// `events` as the one batch of a delivery round, without acknowledgement tokens.
fn round(events: Vec<UnifiedEvent>) -> Vec<(Arc<Vec<UnifiedEvent>>, Vec<AckToken>)> {
    vec![(Arc::new(events), Vec::new())]
}

fn metrics() -> ComponentMetrics {
    ComponentMetrics::new("bus", "kafka", ComponentKind::Sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_broker_errors_lose_nothing() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&cluster.bootstrap_servers(), dir.path(), "events", "");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 3],
    );
    let metrics = metrics();
    sink.deliver(round(events(20)), &metrics).await.unwrap();
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.events_out, 20);
    assert_eq!(snapshot.errors.get("rejected"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_past_the_message_timeout_is_retried_until_it_returns() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(
        &cluster.bootstrap_servers(),
        dir.path(),
        "events",
        "message_timeout = \"500ms\"",
    );
    let metrics = metrics();
    sink.deliver(round(events(1)), &metrics).await.unwrap();
    cluster.broker_down(1).unwrap();
    let metrics = std::sync::Arc::new(metrics);
    let delivery = tokio::spawn({
        let metrics = std::sync::Arc::clone(&metrics);
        async move { sink.deliver(round(events(10)), &metrics).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.broker_up(1).unwrap();
    delivery.await.unwrap().unwrap();
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.events_out, 11);
    assert!(snapshot.errors.get("delivery").is_some_and(|&n| n > 0));
    assert_eq!(snapshot.errors.get("rejected"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_broker_refuses_go_to_the_dead_letter_file() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&cluster.bootstrap_servers(), dir.path(), "events", "");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let metrics = metrics();
    sink.deliver(round(events(5)), &metrics).await.unwrap();
    let snapshot = metrics.snapshot();
    let rejected = snapshot.errors.get("rejected").copied().unwrap_or(0);
    assert!(rejected >= 1, "{snapshot:?}");
    assert_eq!(snapshot.events_out + rejected, 5);
    let dead = std::fs::read_to_string(dir.path().join("dead_letter/bus.ndjson")).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, rejected);
    assert!(
        lines[0]["reason"].as_str().unwrap().contains("too large"),
        "{dead}"
    );
    assert_eq!(lines[0]["event"]["id"], "evt_0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_missing_a_topic_field_is_dead_lettered() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(
        &cluster.bootstrap_servers(),
        dir.path(),
        "{{ entity.namespace }}",
        "",
    );
    let metrics = metrics();
    sink.deliver(round(events(2)), &metrics).await.unwrap();
    assert_eq!(metrics.snapshot().errors.get("rejected"), Some(&2));
}

#[test]
fn errors_sort_into_retry_dead_letter_or_stop() {
    let kind = |code| match classify(&KafkaError::MessageProduction(code)) {
        Failure::Retryable(_) => "retry",
        Failure::Rejected(_) => "dead_letter",
        Failure::Fatal(_) => "stop",
    };
    assert_eq!(kind(RDKafkaErrorCode::MessageTimedOut), "retry");
    assert_eq!(kind(RDKafkaErrorCode::NotLeaderForPartition), "retry");
    assert_eq!(kind(RDKafkaErrorCode::BrokerTransportFailure), "retry");
    assert_eq!(kind(RDKafkaErrorCode::MessageSizeTooLarge), "dead_letter");
    assert_eq!(kind(RDKafkaErrorCode::InvalidRecord), "dead_letter");
    assert_eq!(kind(RDKafkaErrorCode::Fatal), "stop");
    assert_eq!(kind(RDKafkaErrorCode::TopicAuthorizationFailed), "stop");
}
