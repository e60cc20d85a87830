//! The demo's stream, from `tests/fixtures/demo.ndjson`: the `demo` source's output, trimmed to
//! stay small (every event except most background eBPF traffic). To regenerate it, run `tapio run`
//! with a console JSON sink and `[sources.demo]` set to `count = 4000, pods = 8, nodes = 2,
//! seed = 11, start_time = "2026-11-27T08:00:00Z", incident_rate = 10`, then keep
//! `jq -c 'select(.source != "ebpf" or (.network.operation // "" | test("^(retransmit|timeout|error)$")) or .process.operation == "oom_kill" or ((.process.exit_code // 0) != 0) or (.process.operation == "exec" and (.process.comm | test("^(sh|curl|grpc_health_pro|cat|wget|date)$") | not)) or (.id | test("[0A]$")))'`.

use super::*;
use tapio_event::ComponentConfig;

const FIXTURE: &str = include_str!("../../../tests/fixtures/demo.ndjson");

fn fixture() -> Vec<UnifiedEvent> {
    let mut decoder = Decoder::default();
    FIXTURE
        .lines()
        .map(|line| {
            decoder
                .decode_json(line.as_bytes(), Timestamp(1))
                .expect("fixture event")
        })
        .collect()
}

fn enrich_fixture() -> (Vec<UnifiedEvent>, Vec<UnifiedEvent>) {
    let input = fixture();
    let mut e = enricher("");
    let mut output = Vec::new();
    for batch in input.chunks(64) {
        output.extend(enrich(&mut e, batch.to_vec()));
    }
    (input, output)
}

#[test]
fn every_demo_event_gets_its_meaning() {
    let (_, output) = enrich_fixture();
    let mut intents = BTreeSet::new();
    for event in &output {
        let semantic = event.semantic.as_deref().expect("semantic context");
        let intent = semantic.intent.as_deref().expect("intent");
        assert!(
            semantic.category.is_some() && semantic.confidence.is_some(),
            "{intent}"
        );
        assert!(!semantic.tags.is_empty(), "{intent}");
        assert_ne!(
            semantic.category.as_deref(),
            Some("other"),
            "{event:?} fell through"
        );
        let narrative = semantic.narrative.as_deref().expect("narrative");
        assert!(
            !narrative.contains("{{") && !narrative.contains("[["),
            "{narrative}"
        );
        if let Some(entity) = event.entity.as_deref() {
            for name in [&entity.name, &entity.namespace, &entity.node]
                .into_iter()
                .flatten()
            {
                assert!(
                    narrative.contains(name.as_str()),
                    "{narrative:?} does not name {name}"
                );
            }
        }
        intents.insert(intent.to_owned());
    }
    for expected in [
        "tcp-connect",
        "tcp-accept",
        "tcp-close",
        "tcp-retransmit",
        "tcp-timeout",
        "process-start",
        "process-exit",
        "process-killed",
        "process-crash",
        "oom-kill",
        "pod-network-attach",
        "pod-network-detach",
        "cni-failure",
        "pod-scheduled",
        "image-ready",
        "container-created",
        "container-started",
        "container-stop",
        "container-restart",
        "readiness-probe-failure",
        "liveness-probe-failure",
        "restart-backoff",
        "container-oom-killed",
        "container-error",
        "crash-loop",
        "pod-created",
        "pod-observed",
        "pod-updated",
        "pod-deleted",
        "node-observed",
        "node-not-ready",
        "node-ready",
        "node-service-failure",
        "node-service-restart",
        "container-start",
        "container-failure",
    ] {
        assert!(intents.contains(expected), "no {expected} in {intents:?}");
    }
}

#[test]
fn demo_events_resolve_to_pods() {
    let (_, output) = enrich_fixture();
    let node_local: Vec<&UnifiedEvent> = output
        .iter()
        .filter(|e| matches!(e.source.as_str(), "ebpf" | "systemd"))
        .collect();
    let unresolved: Vec<&&UnifiedEvent> = node_local
        .iter()
        .filter(|e| e.entity.as_ref().unwrap().kind == EntityType::Host)
        .collect();
    // Left unresolved: connections to pods already gone, and the demo's commands run in a
    // replacement pod's container before anything has reported that container.
    assert!(
        unresolved.len() * 50 < node_local.len(),
        "{} of {} unresolved: {:?}",
        unresolved.len(),
        node_local.len(),
        unresolved.iter().map(|e| narrative(e)).collect::<Vec<_>>()
    );
    for event in &output {
        let entity = event
            .entity
            .as_deref()
            .expect("every demo event has an entity");
        assert!(entity.node.is_some(), "the node is never dropped");
        if entity.kind == EntityType::Pod {
            assert!(!entity.id.contains('/'), "{}: the uid is known", entity.id);
        }
    }
}

/// An event's JSON form without the fields `semantic_enrich` may change.
fn facts(event: &UnifiedEvent) -> String {
    let mut event = event.clone();
    event.semantic = None;
    event.entity = None;
    serde_json::to_string(&event).unwrap()
}

#[test]
fn only_semantic_and_entity_change_and_replays_repeat() {
    let (input, output) = enrich_fixture();
    assert_eq!(input.len(), output.len());
    for (before, after) in input.iter().zip(&output) {
        assert_eq!(facts(before), facts(after));
    }
    let (_, again) = enrich_fixture();
    let text = |events: &[UnifiedEvent]| serde_json::to_string(events).unwrap();
    assert_eq!(text(&output), text(&again));
}

/// Runs `events` through a `semantic_enrich` built from `options`, in batches of 100; the
/// number of events delivered and the transform's counters.
async fn run_transform(options: &str, events: &[UnifiedEvent]) -> (usize, MetricsSnapshot) {
    let transform = config(options)
        .build(&BuildContext {
            name: "enrich".into(),
            data_dir: std::env::temp_dir(),
            node_name: "test-node".into(),
        })
        .expect("builds");
    let metrics = |name: &str| Arc::new(ComponentMetrics::new(name, "x", ComponentKind::Transform));
    let (input_tx, input_rx) = buffer(10_000, WhenFull::Block, metrics("in"));
    let (output_tx, mut output_rx) = buffer(10_000, WhenFull::Block, metrics("out"));
    let own = metrics("enrich");
    let cx = TransformContext {
        out: Outputs::new(Fanout::new(vec![output_tx]), vec![], Arc::clone(&own)),
        metrics: Arc::clone(&own),
    };
    let task = tokio::spawn(transform.run(input_rx, cx));
    for batch in events.chunks(100) {
        input_tx
            .send(tapio_event::EventBatch::new(batch.to_vec()))
            .await
            .unwrap();
    }
    drop(input_tx);
    let mut seen = 0;
    while let Some(batch) = output_rx.recv().await {
        assert!(batch.events().iter().all(|e| e.semantic.is_some()));
        seen += batch.len();
    }
    task.await.unwrap().unwrap();
    (seen, own.snapshot())
}

#[tokio::test]
async fn runs_as_a_transform_and_forwards_batches() {
    let events = fixture();
    let (seen, metrics) = run_transform("", &events).await;
    assert_eq!(seen, events.len());
    assert_eq!(metrics.events_out, events.len() as u64);
    assert!(metrics.evicted.is_empty(), "{:?}", metrics.evicted);
}

#[tokio::test]
async fn entity_cache_evictions_are_counted() {
    let events = fixture();
    let (seen, metrics) = run_transform("max_entities = 4", &events).await;
    assert_eq!(seen, events.len(), "evictions drop nothing");
    let evicted = metrics.evicted.get("entity_cache_keys").copied();
    assert!(evicted.is_some_and(|n| n > 0), "{:?}", metrics.evicted);
}
