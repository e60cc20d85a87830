use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tapio_event::ComponentConfig;

use serde_json::json;
use tapio_event::codec::{Decoder, encode_json};
use tapio_event::{
    ComponentMetrics, EntityType, EventType, ShutdownTrigger, Timestamp, UnifiedEvent,
};
use tokio::task::JoinHandle;

use super::DemoConfig;
use crate::util::testing;

const START: &str = "2026-01-01T00:00:00Z";

fn config(options: serde_json::Value) -> DemoConfig {
    serde_json::from_value(options).expect("valid demo options")
}

/// A running demo source and the buffer it writes to.
struct Running {
    task: JoinHandle<Result<(), tapio_event::ComponentError>>,
    output: tapio_event::BufferReceiver,
    trigger: ShutdownTrigger,
    metrics: Arc<ComponentMetrics>,
}

fn start(config: DemoConfig) -> Running {
    let source = config
        .build(&testing::build_context("demo"))
        .expect("valid options build");
    let (task, taps) = testing::spawn(source, "demo", 10_000);
    Running {
        task,
        output: taps.events,
        trigger: taps.trigger,
        metrics: taps.metrics,
    }
}

/// What a source that ends by itself produced.
struct Run {
    events: Vec<UnifiedEvent>,
    batch_sizes: Vec<usize>,
    events_out: u64,
}

async fn run(config: DemoConfig) -> Run {
    let mut running = start(config);
    let mut run = Run {
        events: Vec::new(),
        batch_sizes: Vec::new(),
        events_out: 0,
    };
    while let Some(batch) = running.output.recv().await {
        run.batch_sizes.push(batch.len());
        run.events.extend_from_slice(batch.events());
    }
    running
        .task
        .await
        .expect("source task")
        .expect("source ends cleanly");
    run.events_out = running.metrics.snapshot().events_out;
    run
}

fn seeded(count: u64, seed: u64) -> DemoConfig {
    config(json!({ "count": count, "seed": seed, "start_time": START }))
}

fn ndjson(events: &[UnifiedEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        encode_json(event, &mut out);
        out.push(b'\n');
    }
    out
}

#[test]
fn options_default_as_documented() {
    let options = config(json!({}));
    assert_eq!(options.count, None);
    assert_eq!(options.rate, None);
    assert_eq!((options.pods, options.nodes), (50, 3));
    assert_eq!(options.incident_rate, 5.0);
    assert_eq!((options.seed, options.start_time.as_deref()), (None, None));
    assert_eq!(options.batch_size, 1000);
}

#[test]
fn reads_from_the_source_registry() {
    let source: crate::SourceConfig =
        serde_json::from_value(json!({ "demo": { "rate": 100, "seed": 1 } })).unwrap();
    let crate::SourceConfig::Demo(options) = source else {
        panic!("not a demo source");
    };
    assert_eq!((options.rate, options.seed), (Some(100.0), Some(1)));
    let typo = json!({ "demo": { "incidents": 5 } });
    assert!(serde_json::from_value::<crate::SourceConfig>(typo).is_err());
}

#[test]
fn bad_options_are_rejected_naming_the_option() {
    let cases = [
        (json!({ "pods": 0 }), "`pods`"),
        (json!({ "nodes": 1, "pods": 201 }), "`pods`"),
        (json!({ "nodes": 0 }), "`nodes`"),
        (json!({ "nodes": 255 }), "`nodes`"),
        (json!({ "incident_rate": -1 }), "`incident_rate`"),
        (json!({ "incident_rate": 1000.5 }), "`incident_rate`"),
        (json!({ "rate": 0 }), "`rate`"),
        (json!({ "batch_size": 0 }), "`batch_size`"),
        (json!({ "start_time": "yesterday" }), "`start_time`"),
        (
            json!({ "start_time": "1970-01-01T00:00:00Z" }),
            "`start_time`",
        ),
    ];
    for (options, option) in cases {
        let Err(error) = config(options.clone()).build(&testing::build_context("demo")) else {
            panic!("{options} was accepted");
        };
        assert!(error.message().contains(option), "{options}: {error}");
    }
    assert!(serde_json::from_value::<DemoConfig>(json!({ "cout": 5 })).is_err());
}

#[tokio::test]
async fn seeded_runs_repeat_byte_for_byte() {
    let first = run(seeded(3000, 7)).await.events;
    assert_eq!(ndjson(&first), ndjson(&run(seeded(3000, 7)).await.events));
    assert_ne!(ndjson(&first), ndjson(&run(seeded(3000, 8)).await.events));
    let start = Timestamp::parse_rfc3339(START).unwrap();
    assert!(first[0].timestamp > start);
    assert!(
        first
            .windows(2)
            .all(|pair| pair[0].timestamp < pair[1].timestamp)
    );
}

#[tokio::test]
async fn count_is_exact_and_every_event_keeps_the_wire_rules() {
    let run = run(config(json!({ "count": 2345, "batch_size": 100 }))).await;
    assert_eq!(run.events.len(), 2345);
    assert_eq!(run.events_out, 2345);
    assert!(run.batch_sizes.iter().all(|&len| len <= 100));
    let mut decoder = Decoder::default();
    let mut ids = BTreeSet::new();
    for event in &run.events {
        let mut line = Vec::new();
        encode_json(event, &mut line);
        let text = std::str::from_utf8(&line).unwrap();
        assert!(!text.contains("null") && !text.contains(":\"\""), "{text}");
        assert_eq!(
            &decoder.decode_json(&line, Timestamp(1)).unwrap(),
            event,
            "{text}"
        );
        assert!(ids.insert(event.id.clone()), "duplicate id {}", event.id);
        let entity = event
            .entity
            .as_deref()
            .expect("every demo event names its subject");
        assert!(entity.node.is_some(), "{text}");
        let unit = event.systemd.as_ref().and_then(|s| s.unit.as_deref());
        let expected: &[EntityType] = match event.source.as_str() {
            "ebpf" => &[EntityType::Host],
            "systemd" if unit.is_some_and(|u| u.ends_with(".scope")) => &[EntityType::Host],
            "systemd" => &[EntityType::Node],
            "cni" => &[EntityType::Pod],
            "kubernetes" => &[EntityType::Pod, EntityType::Node],
            other => panic!("unexpected source {other}"),
        };
        assert!(expected.contains(&entity.kind), "{text}");
        assert!(event.semantic.is_none() && event.impact.is_none() && event.correlation.is_none());
    }
}

#[tokio::test]
async fn events_average_a_realistic_size() {
    let events = run(seeded(5000, 11)).await.events;
    let mean = ndjson(&events).len() / events.len();
    eprintln!("mean event size: {mean} bytes");
    assert!((200..=400).contains(&mean), "mean event size {mean}");
}

/// Which pod (uid) each container id, pod IP and `namespace/name` belongs to, as an entity
/// cache would learn it from pod updates and container scopes.
#[derive(Default)]
struct Pods {
    by_container: BTreeMap<String, String>,
    by_ip: BTreeMap<String, String>,
    by_key: BTreeMap<String, String>,
}

impl Pods {
    fn learn(events: &[UnifiedEvent]) -> Self {
        let mut pods = Pods::default();
        for event in events {
            if let Some(k) = event.kubernetes.as_deref()
                && k.kind.as_deref() == Some("Pod")
            {
                let uid = k.uid.clone().unwrap();
                let key = format!(
                    "{}/{}",
                    k.namespace.as_deref().unwrap(),
                    k.name.as_deref().unwrap()
                );
                pods.by_key.insert(key, uid.clone());
                if let Some(ip) = &k.pod_ip {
                    pods.by_ip.insert(ip.clone(), uid.clone());
                }
                if let Some(container) = &k.container_id {
                    pods.by_container.insert(container.clone(), uid);
                }
            }
            if let Some(s) = event.systemd.as_deref()
                && let Some(slice) = &s.slice
            {
                let container =
                    s.unit.as_deref().unwrap()["cri-containerd-".len()..][..64].to_owned();
                let uid = slice["kubepods-burstable-pod".len()..slice.len() - ".slice".len()]
                    .replace('_', "-");
                pods.by_container.insert(container, uid);
            }
        }
        pods
    }
}

#[tokio::test]
async fn every_incident_pattern_plays_within_5000_events() {
    let events = run(seeded(5000, 42)).await.events;
    let pods = Pods::learn(&events);
    let mut steps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut failed_exits: BTreeMap<&str, usize> = BTreeMap::new();
    let mut oom_kills = BTreeSet::new();
    let mut oom_killed = BTreeSet::new();
    let mut node_steps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for event in &events {
        let entity = event.entity.as_deref().unwrap();
        let container_pod = |id: &Option<String>| pods.by_container[id.as_ref().unwrap()].as_str();
        let (pod, step) = match event.source.as_str() {
            "kubernetes" => {
                let k = event.kubernetes.as_deref().unwrap();
                let reason = k.reason.as_deref().unwrap_or("update");
                if entity.kind == EntityType::Node {
                    node_steps.entry(&entity.id).or_default().insert(reason);
                    continue;
                }
                if reason == "OOMKilled" {
                    oom_killed.insert((entity.id.as_str(), k.container_id.clone().unwrap()));
                }
                (entity.id.as_str(), reason)
            }
            "cni" => {
                let network = event.network.as_deref().unwrap();
                let step = if network.error.is_some() {
                    "cni error"
                } else {
                    network.operation.as_deref().unwrap()
                };
                (pods.by_key[&entity.id].as_str(), step)
            }
            "systemd" => {
                let s = event.systemd.as_deref().unwrap();
                let unit = s.unit.as_deref().unwrap();
                if entity.kind == EntityType::Node {
                    assert!(unit == "containerd.service" || unit == "kubelet.service");
                    node_steps
                        .entry(&entity.id)
                        .or_default()
                        .insert(s.active_state.as_deref().unwrap());
                    continue;
                }
                let uid = pods.by_container[&unit["cri-containerd-".len()..][..64]].as_str();
                (
                    uid,
                    if s.job_type.as_deref() == Some("start") {
                        "scope start"
                    } else {
                        "scope"
                    },
                )
            }
            _ if event.kind == EventType::Process => {
                let process = event.process.as_deref().unwrap();
                let uid = container_pod(&process.container_id);
                let operation = process.operation.as_deref().unwrap();
                if operation == "exit" && process.exit_code != Some(0) {
                    *failed_exits.entry(uid).or_default() += 1;
                }
                if operation == "oom_kill" {
                    assert_eq!(process.signal, Some(9));
                    oom_kills.insert((uid, process.container_id.clone().unwrap()));
                }
                (uid, operation)
            }
            _ => {
                let network = event.network.as_deref().unwrap();
                let operation = network.operation.as_deref().unwrap();
                if !matches!(operation, "timeout" | "retransmit" | "error") {
                    continue;
                }
                (
                    pods.by_ip[network.dst_ip.as_ref().unwrap()].as_str(),
                    "socket failure",
                )
            }
        };
        steps.entry(pod).or_default().insert(step);
    }
    let has_all = |pod: &str, wanted: &[&str]| {
        steps
            .get(pod)
            .is_some_and(|seen| wanted.iter().all(|step| seen.contains(step)))
    };
    let mut seen = Vec::new();
    if steps
        .keys()
        .any(|pod| has_all(pod, &["Scheduled", "ADD", "scope start", "exec"]))
    {
        seen.push("pod-deployment-sequence");
    }
    if steps.keys().any(|pod| {
        has_all(
            pod,
            &["socket failure", "cni error", "Unhealthy", "Killing"],
        )
    }) {
        seen.push("network-failure-cascade");
    }
    if oom_kills
        .intersection(&oom_killed)
        .any(|(pod, _)| has_all(pod, &["BackOff"]))
    {
        seen.push("oom-kill-cascade");
    }
    if failed_exits.iter().any(|(pod, &exits)| {
        exits >= 3 && has_all(pod, &["BackOff"]) && !has_all(pod, &["oom_kill"])
    }) {
        seen.push("crash-loop");
    }
    if node_steps
        .values()
        .any(|s| s.contains("failed") && s.contains("NodeNotReady"))
    {
        seen.push("node-runtime-failure");
    }
    assert_eq!(seen.len(), 5, "only {seen:?} played");
}

#[tokio::test]
async fn rate_paces_events_in_bursts() {
    let began = Instant::now();
    let run = run(config(json!({ "rate": 2000, "count": 1000 }))).await;
    let took = began.elapsed();
    eprintln!(
        "1000 events at 2000/s took {took:?} in {} batches",
        run.batch_sizes.len()
    );
    assert_eq!(run.events.len(), 1000);
    assert!(
        took >= Duration::from_millis(400) && took <= Duration::from_millis(600),
        "took {took:?}"
    );
    assert!(
        (10..=100).contains(&run.batch_sizes.len()),
        "{} batches",
        run.batch_sizes.len()
    );
}

#[tokio::test]
async fn the_simulated_clock_stops_at_the_last_representable_time_instead_of_wrapping() {
    let start = Timestamp::parse_rfc3339("2262-04-11T23:47:16Z").unwrap();
    let run = run(config(json!({
        "count": 100_000,
        "seed": 3,
        "start_time": start.to_string(),
    })))
    .await;
    // 0.85 s of simulated time were left, at 1–4 ms per event.
    assert!(
        (200..=900).contains(&run.events.len()),
        "{} events",
        run.events.len()
    );
    assert_eq!(run.events_out, run.events.len() as u64);
    let times: Vec<_> = run.events.iter().map(|e| e.timestamp).collect();
    assert!(times[0] > start, "{}", times[0]);
    assert!(times.is_sorted(), "the clock went backwards");
}

#[tokio::test]
async fn a_rate_too_low_to_space_events_in_time_builds_and_waits() {
    let mut running = start(config(json!({ "rate": 1e-11 })));
    running.trigger.trigger();
    assert!(running.output.recv().await.is_none());
    running.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_ends_an_endless_source() {
    for options in [json!({}), json!({ "rate": 10 })] {
        let mut running = start(config(options.clone()));
        if options.get("rate").is_none() {
            running.output.recv().await.expect("events flow");
        }
        running.trigger.trigger();
        let drained = async { while running.output.recv().await.is_some() {} };
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .unwrap_or_else(|_| panic!("{options}: source kept running after shutdown"));
        running.task.await.unwrap().unwrap();
    }
}
