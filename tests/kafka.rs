//! The `kafka` sink against a real broker (`tansu`, started by the test) and read back by an
//! independent consumer (confluent-kafka): every demo event arrives exactly once, keyed by its
//! entity's routing key, one entity's events in one partition and in order; a message too large
//! goes to the dead-letter file; an unreachable broker at start is one clear error.

#[path = "kafka/broker.rs"]
mod broker;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use broker::{Broker, Message};
use common::*;

/// `[sinks.kafka]` reading `input`, producing to `broker`, with `extra` options.
fn kafka_sink(bootstrap: &str, input: &str, extra: &str) -> String {
    format!(
        "[sinks.kafka]\ntype = \"kafka\"\ninputs = [\"{input}\"]\nbootstrap_servers = \"{bootstrap}\"\n{extra}\n"
    )
}

fn run(config: &std::path::Path) -> std::process::Output {
    let output = tapio()
        .args(["run", "--summary", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_success(&output);
    output
}

/// The routing key the sink must have chosen, recomputed from the event's JSON.
fn expected_key(event: &serde_json::Value) -> Option<String> {
    let entity = event.get("entity")?;
    let text = |field: &str| entity.get(field).and_then(|v| v.as_str());
    Some(match (text("type"), text("namespace"), text("name")) {
        (Some("pod"), Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (Some("node"), _, Some(name)) => name.to_owned(),
        _ => text("id").unwrap().to_owned(),
    })
}

#[test]
fn demo_events_arrive_once_keyed_by_entity_in_order() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("events.ndjson");
    let config = write_config(
        dir.path(),
        "demo.toml",
        &format!(
            "data_dir = \"{}\"\n\n{}\n{}\n{}",
            dir.path().display(),
            reproducible_demo(5000),
            copy_sink("demo", &copy),
            kafka_sink(
                &broker.address,
                "demo",
                "compression = \"zstd\"\nacks = \"all\"\nheaders = { \"x-source\" = \"{{ source }}\" }"
            )
        ),
    );
    // The demo is deterministic: a first run into the file tells which topics to create.
    let dry = write_config(
        dir.path(),
        "dry.toml",
        &format!("{}\n{}", reproducible_demo(5000), copy_sink("demo", &copy)),
    );
    run(&dry);
    let sources: BTreeSet<String> = parse_ndjson(&std::fs::read_to_string(&copy).unwrap())
        .iter()
        .map(|event| event["source"].as_str().unwrap().to_owned())
        .collect();
    std::fs::remove_file(&copy).unwrap();
    for source in &sources {
        broker.create_topic(&format!("tapio.{source}"), 3);
    }

    let output = run(&config);
    let sink = summary_row(&output.stderr, "kafka");
    assert_eq!((sink.events_out, sink.errors), (5000, 0));

    let written = parse_ndjson(&std::fs::read_to_string(&copy).unwrap());
    assert_eq!(written.len(), 5000);
    let position: HashMap<&str, usize> = written
        .iter()
        .enumerate()
        .map(|(i, event)| (event["id"].as_str().unwrap(), i))
        .collect();
    let mut seen = BTreeSet::new();
    let mut partitions_used: BTreeSet<i64> = BTreeSet::new();
    let mut unkeyed = 0;
    for source in &sources {
        let topic = format!("tapio.{source}");
        let messages = broker.consume(&topic);
        let mut partitions: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        // Per key, in offset order: (position in the demo's output, timestamp).
        let mut order: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        for Message {
            partition,
            key,
            value,
            headers,
            ..
        } in &messages
        {
            assert_eq!(value["source"], source.as_str());
            assert_eq!(headers["x-source"], source.as_str());
            let id = value["id"].as_str().unwrap();
            assert!(seen.insert(id.to_owned()), "{id} arrived twice");
            assert_eq!(*key, expected_key(value), "key of {value}");
            match key {
                Some(key) => {
                    partitions
                        .entry(key.clone())
                        .or_default()
                        .insert(*partition);
                    order.entry(key.clone()).or_default().push((
                        position[id],
                        value["timestamp"].as_str().unwrap().to_owned(),
                    ));
                }
                None => unkeyed += 1,
            }
        }
        for (key, parts) in &partitions {
            assert_eq!(parts.len(), 1, "{topic}: key {key} in partitions {parts:?}");
            partitions_used.extend(parts.iter().copied());
        }
        for (key, positions) in &order {
            // RFC 3339 UTC with 9 fractional digits: text order is time order.
            assert!(
                positions
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{topic}: key {key} out of order: {positions:?}"
            );
        }
    }
    assert_eq!(seen.len(), 5000, "every event arrives exactly once");
    assert!(partitions_used.len() > 1, "keys spread over partitions");
    let expected_unkeyed = written.iter().filter(|e| expected_key(e).is_none()).count();
    assert_eq!(unkeyed, expected_unkeyed);
}

#[test]
fn a_message_too_large_goes_to_the_dead_letter_file() {
    let Some(broker) = Broker::start() else {
        return;
    };
    broker.create_topic("small", 1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "large.toml",
        &format!(
            "data_dir = \"{}\"\n\n[sources.in]\ntype = \"stdin\"\n\n{}",
            dir.path().display(),
            kafka_sink(
                &broker.address,
                "in",
                "topic = \"small\"\nlibrdkafka_options = { \"message.max.bytes\" = \"2000\" }"
            )
        ),
    );
    let mut input = String::new();
    for i in 0..20 {
        let padding = if i % 5 == 2 {
            "x".repeat(5000)
        } else {
            String::new()
        };
        input.push_str(&format!(
            "{{\"id\":\"evt_{i}\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"type\":\"application\",\"source\":\"stdin\",\"application\":{{\"padding\":\"{padding}\"}}}}\n"
        ));
    }
    let output = run_with_stdin(&config, input.as_bytes());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let sink = summary_row(&output.stderr, "kafka");
    assert_eq!((sink.events_out, sink.errors), (16, 4), "{stderr}");
    let dead = parse_ndjson(
        &std::fs::read_to_string(dir.path().join("dead_letter/kafka.ndjson")).unwrap(),
    );
    let dead_ids: Vec<&str> = dead
        .iter()
        .map(|line| line["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(dead_ids, ["evt_2", "evt_7", "evt_12", "evt_17"]);
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("too large"),
        "{}",
        dead[0]
    );
    let arrived = broker.consume("small");
    assert_eq!(arrived.len(), 16, "nothing else lost");
    assert!(arrived.iter().all(|m| m.key.is_none()), "no entity, no key");
}

#[test]
fn an_unreachable_broker_at_start_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "down.toml",
        &format!(
            "data_dir = \"{}\"\n\n{}\n{}",
            dir.path().display(),
            reproducible_demo(10),
            kafka_sink(&format!("127.0.0.1:{}", free_port()), "demo", "")
        ),
    );
    let output = run_config(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    let errors: Vec<_> = stderr
        .lines()
        .filter(|line| line.contains("healthcheck"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("BrokerTransportFailure"), "{stderr}");
}
