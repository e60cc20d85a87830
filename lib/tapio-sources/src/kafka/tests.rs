//! The `kafka` source against librdkafka's mock cluster (a broker inside the test process with
//! consumer groups and offset commits): decoding, the `errors` output, and offsets committed only
//! for acknowledged events. Rebalances, crashes and a real broker are in `tests/kafka.rs`.

use std::time::Duration;
use tapio_event::ComponentConfig;

use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tapio_event::{BatchStatus, EventType, Timestamp, UnifiedEvent};

use super::KafkaSourceConfig;
use crate::util::testing::{assert_quiet, build_context, context, next_batch, take, texts};

const TOPIC: &str = "events";
const GROUP: &str = "aggregators";

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    cluster
}

fn produce(bootstrap: &str, topic: &str, payloads: &[Vec<u8>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for payload in payloads {
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).payload(payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn event_json(n: i64) -> Vec<u8> {
    let mut event = UnifiedEvent::new(EventType::Process, "ebpf", Timestamp(n));
    event.id = format!("evt_{n}");
    serde_json::to_vec(&event).unwrap()
}

/// The group's committed offset of partition 0 (the next message it would read).
fn committed(bootstrap: &str) -> Offset {
    let consumer: BaseConsumer<DefaultConsumerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(TOPIC, 0);
    let answer = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    answer.elements()[0].offset()
}

/// A source of group [`GROUP`] with `extra` options (`topics` defaults to [`TOPIC`]).
fn source(bootstrap: &str, extra: &str) -> Box<dyn tapio_event::Source> {
    let topics = if extra.contains("topics") {
        String::new()
    } else {
        format!("topics = [\"{TOPIC}\"]")
    };
    let config: KafkaSourceConfig = toml::from_str(&format!(
        "bootstrap_servers = \"{bootstrap}\"\n{topics}\ngroup_id = \"{GROUP}\"\ncommit_interval = \"100ms\"\nhealthcheck = false\n{extra}"
    ))
    .unwrap();
    config.build(&build_context("bus")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_once_sinks_acknowledge() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let mut payloads: Vec<Vec<u8>> = (0..4).map(event_json).collect();
    payloads.insert(2, b"{not json".to_vec());
    produce(&bootstrap, TOPIC, &payloads);

    let (cx, mut taps) = context("kafka", true);
    let running = tokio::spawn(source(&bootstrap, "").run(cx));
    let mut held = Vec::new();
    let mut ids = Vec::new();
    while ids.len() < 4 {
        let batch = next_batch(&mut taps.events).await;
        ids.extend(batch.events().iter().map(|e| e.id.clone()));
        held.push(batch);
    }
    assert_eq!(ids, ["evt_0", "evt_1", "evt_2", "evt_3"]);
    let errors = next_batch(&mut taps.errors).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors.events()[0].raw_data.as_deref(),
        Some(&b"{not json"[..])
    );
    errors.ack(BatchStatus::Delivered);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || committed(&bootstrap))
            .await
            .unwrap()
    };
    assert_eq!(
        before,
        Offset::Invalid,
        "nothing acknowledged, nothing committed"
    );

    for batch in held {
        batch.ack(BatchStatus::Delivered);
    }
    taps.trigger.trigger();
    running.await.unwrap().unwrap();
    let after = tokio::task::spawn_blocking(move || committed(&bootstrap))
        .await
        .unwrap();
    assert_eq!(after, Offset::Offset(5), "past the undecodable message too");
    let counters = taps.metrics.snapshot();
    assert_eq!(counters.events_in, 5);
    assert_eq!(counters.errors.get("decode"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_not_committed() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    produce(&bootstrap, TOPIC, &[event_json(1), event_json(2)]);

    let (cx, mut taps) = context("kafka", false);
    let running = tokio::spawn(source(&bootstrap, "").run(cx));
    let batch = next_batch(&mut taps.events).await;
    assert_eq!(batch.len(), 2);
    batch.ack(BatchStatus::Failed);
    taps.trigger.trigger();
    running.await.unwrap().unwrap();
    let after = tokio::task::spawn_blocking(move || committed(&bootstrap))
        .await
        .unwrap();
    assert_eq!(after, Offset::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regex_subscription_with_text_decoding_reads_every_matching_topic() {
    let cluster = cluster();
    cluster.create_topic("other", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    produce(
        &bootstrap,
        TOPIC,
        &[b"first line".to_vec(), b"second line".to_vec()],
    );
    produce(&bootstrap, "other", &[b"not subscribed".to_vec()]);

    let (cx, mut taps) = context("kafka", false);
    let extra = "topics = [\"^ev.*\"]\ndecoding = \"text\"";
    let running = tokio::spawn(source(&bootstrap, extra).run(cx));
    let events = take(&mut taps.events, 2).await;
    assert_eq!(texts(&events), ["first line", "second line"]);
    assert!(events.iter().all(|e| e.source == "kafka"));
    assert_quiet(&mut taps.events).await;
    taps.trigger.trigger();
    running.await.unwrap().unwrap();
}

#[test]
fn the_committed_position_follows_the_last_delivered_offset_without_overflow() {
    use super::consumer::next_to_read;
    assert_eq!(next_to_read(41), Offset::Offset(42));
    assert_eq!(next_to_read(i64::MAX), Offset::Offset(i64::MAX));
}

#[test]
fn bad_options_are_clear_errors() {
    let build = |extra: &str| {
        let config: KafkaSourceConfig = toml::from_str(&format!(
            "bootstrap_servers = \"b:9092\"\ngroup_id = \"g\"\n{extra}"
        ))
        .unwrap();
        config
            .build(&build_context("bus"))
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default()
    };
    assert!(build("topics = []").contains("`topics`"));
    assert!(
        build("topics = [\"t\"]\nlibrdkafka_options = { \"enable.auto.offset.store\" = \"true\" }")
            .contains("enable.auto.offset.store")
    );
    assert!(
        build("topics = [\"t\"]\nlibrdkafka_options = { \"no.such.property\" = \"1\" }")
            .contains("librdkafka refused")
    );
    assert_eq!(build("topics = [\"^tapio\\\\..*\"]"), "");
}

#[test]
fn options_map_onto_librdkafka() {
    let config: KafkaSourceConfig = toml::from_str(
        r#"
bootstrap_servers = "b:9092"
topics = ["t"]
group_id = "g"
auto_offset_reset = "latest"
commit_interval = "5s"
sasl = { mechanism = "PLAIN", username = "u", password = "p" }
librdkafka_options = { "fetch.max.bytes" = "1048576" }
"#,
    )
    .unwrap();
    let props = config.properties();
    let value = |key: &str| {
        props
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    for (key, expected) in [
        ("group.id", "g"),
        ("auto.offset.reset", "latest"),
        ("enable.auto.commit", "true"),
        ("enable.auto.offset.store", "false"),
        ("auto.commit.interval.ms", "5000"),
        ("session.timeout.ms", "10000"),
        ("security.protocol", "sasl_plaintext"),
        ("fetch.max.bytes", "1048576"),
    ] {
        assert_eq!(value(key), Some(expected), "{key}");
    }
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let config: KafkaSourceConfig = toml::from_str(
        r#"
bootstrap_servers = "b:9092"
topics = ["t"]
group_id = "g"
sasl = { mechanism = "PLAIN", username = "u", password = "hunter2" }
librdkafka_options = { "ssl.key.password" = "pass-phrase", "sasl.pasword" = "typo-d" }
"#,
    )
    .unwrap();
    let printed = format!("{config:?}");
    for secret in ["hunter2", "pass-phrase"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    let error = config
        .build(&build_context("bus"))
        .err()
        .expect("misspelt property built");
    assert!(error.message().contains("sasl.pasword"), "{error}");
    assert!(!error.message().contains("typo-d"), "{error}");
}
