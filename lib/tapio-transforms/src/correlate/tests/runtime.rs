//! The running transform: acknowledgements held with their events, idle flushes, and replays
//! that give the same bytes however the input is batched.

use std::sync::Arc;
use std::time::Duration;
use tapio_event::ComponentConfig;

use tapio_event::buffer::{WhenFull, buffer};
use tapio_event::{
    AckToken, BatchStatus, BufferReceiver, BufferSender, BuildContext, ComponentError,
    ComponentKind, ComponentMetrics, ConfigDuration, EventBatch, Fanout, Outputs, TransformContext,
    UnifiedEvent,
};
use tokio::task::JoinHandle;

use super::*;

/// A running `correlate` between a test-owned input and output.
struct Harness {
    input: BufferSender,
    output: BufferReceiver,
    task: JoinHandle<Result<(), ComponentError>>,
    /// The transform's own counters.
    metrics: Arc<ComponentMetrics>,
}

fn start(config: &CorrelateConfig) -> Harness {
    let build = BuildContext {
        name: "correlate".into(),
        data_dir: std::env::temp_dir(),
        node_name: "test-node".into(),
    };
    let transform = config.build(&build).unwrap();
    let metrics = Arc::new(ComponentMetrics::new(
        "correlate",
        "correlate",
        ComponentKind::Transform,
    ));
    let (input, receiver) = buffer(100_000, WhenFull::Block, Arc::clone(&metrics));
    let sink = Arc::new(ComponentMetrics::new(
        "out",
        "blackhole",
        ComponentKind::Sink,
    ));
    let (sender, output) = buffer(100_000, WhenFull::Block, sink);
    let cx = TransformContext {
        out: Outputs::new(Fanout::new(vec![sender]), Vec::new(), Arc::clone(&metrics)),
        metrics: Arc::clone(&metrics),
    };
    let task = tokio::spawn(transform.run(receiver, cx));
    Harness {
        input,
        output,
        task,
        metrics,
    }
}

/// The next output batch, acknowledged as a sink would; its events.
async fn next_delivered(output: &mut BufferReceiver) -> Vec<UnifiedEvent> {
    let batch = tokio::time::timeout(Duration::from_secs(5), output.recv())
        .await
        .expect("an output batch")
        .expect("the output is open");
    let events = batch.events().to_vec();
    batch.ack(BatchStatus::Delivered);
    events
}

fn without_idle_flush() -> CorrelateConfig {
    CorrelateConfig {
        idle_flush: ConfigDuration(Duration::from_secs(3600)),
        ..CorrelateConfig::default()
    }
}

#[tokio::test]
async fn acknowledgements_settle_only_after_the_held_events_leave() {
    let mut h = start(&without_idle_flush());
    let mut script = Script::default();
    script
        .socket(0, &API, "connect")
        .socket(1000, &API, "connect")
        .socket(5500, &API, "connect")
        .socket(7000, &API, "connect");
    let mut events = script.events.into_iter();
    let (first, mut first_ack) = AckToken::new();
    let (second, mut second_ack) = AckToken::new();

    h.input
        .send(EventBatch::with_ack(
            events.by_ref().take(2).collect(),
            first,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(first_ack.try_status(), None, "both events are held");

    h.input
        .send(EventBatch::with_ack(
            events.by_ref().take(1).collect(),
            second,
        ))
        .await
        .unwrap();
    let released = next_delivered(&mut h.output).await;
    assert_eq!(
        released.len(),
        1,
        "only the first event passed the watermark"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        first_ack.try_status(),
        None,
        "its batch still has an event held"
    );

    h.input
        .send(EventBatch::new(events.collect()))
        .await
        .unwrap();
    let released = next_delivered(&mut h.output).await;
    assert_eq!(released[0].id, "evt_0002");
    assert_eq!(first_ack.await, BatchStatus::Delivered);
    assert_eq!(second_ack.try_status(), None);

    drop(h.input);
    let flushed = next_delivered(&mut h.output).await;
    assert_eq!(flushed.len(), 2, "the end of input flushes the rest");
    assert_eq!(second_ack.await, BatchStatus::Delivered);
    h.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_idle_input_flushes_the_held_events() {
    let config = CorrelateConfig {
        idle_flush: ConfigDuration(Duration::from_millis(50)),
        ..CorrelateConfig::default()
    };
    let mut h = start(&config);
    let mut script = Script::default();
    oom_kill(&mut script, &API, 0);
    let (token, ack) = AckToken::new();
    h.input
        .send(EventBatch::with_ack(script.events, token))
        .await
        .unwrap();
    let flushed = next_delivered(&mut h.output).await;
    assert_eq!(flushed.len(), 4, "three events and the summary");
    assert_eq!(ack.await, BatchStatus::Delivered);
    drop(h.input);
    h.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn early_releases_and_evicted_groups_are_counted_as_evictions() {
    let config = CorrelateConfig {
        max_buffered_events: 2,
        max_groups: 1,
        ..without_idle_flush()
    };
    let mut h = start(&config);
    let mut script = Script::default();
    script
        .socket(0, &API, "connect")
        .socket(0, &CART, "connect")
        .socket(0, &API, "connect")
        .socket(0, &CART, "connect");
    h.input.send(EventBatch::new(script.events)).await.unwrap();
    drop(h.input);
    let mut delivered = 0;
    while let Some(batch) = h.output.recv().await {
        delivered += batch.events().len();
        batch.ack(BatchStatus::Delivered);
    }
    h.task.await.unwrap().unwrap();
    assert_eq!(delivered, 4);
    let evicted = h.metrics.snapshot().evicted;
    assert_eq!(
        evicted.get("reorder_buffer_events"),
        Some(&2),
        "{evicted:?}"
    );
    assert_eq!(evicted.get("correlation_groups"), Some(&3), "{evicted:?}");
}

/// A mixed stream: all five stories on different pods, noise, each round shuffled within the
/// allowed lateness and started beyond the window of the previous one.
fn mixed_stream() -> Vec<UnifiedEvent> {
    let pods: Vec<Pod<'static>> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| Pod {
            uid: name,
            namespace: "shop",
            name,
            node: "worker-1",
        })
        .collect();
    let mut script = Script::default();
    let mut events = Vec::new();
    for round in 0..20 {
        let start = script.events.len();
        let from = round * 70_000;
        deployment(&mut script, &pods[0], from);
        network_failure(&mut script, &pods[1], from + 100);
        oom_kill(&mut script, &pods[2], from + 200);
        crash_loop(&mut script, &pods[3], from + 300);
        script.unit(from + 400, "worker-2", "kubelet.service", None, "failed");
        script.node_event(from + 900, "worker-2", "NodeNotReady");
        script.host(from + 950, "worker-3", "exec");
        let round_events = Script {
            events: script.events[start..].to_vec(),
        };
        events.extend(round_events.shuffled(round as u64));
    }
    events
}

fn to_bytes(events: &[UnifiedEvent]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for event in events {
        serde_json::to_writer(&mut bytes, event).unwrap();
        bytes.push(b'\n');
    }
    bytes
}

/// Runs `events` through a fresh transform in batches of `size`; the output's bytes.
async fn replay(events: &[UnifiedEvent], size: usize) -> Vec<u8> {
    let mut h = start(&without_idle_flush());
    for chunk in events.chunks(size) {
        h.input.send(EventBatch::new(chunk.to_vec())).await.unwrap();
    }
    drop(h.input);
    let mut out = Vec::new();
    while let Some(batch) = h.output.recv().await {
        out.extend_from_slice(batch.events());
    }
    h.task.await.unwrap().unwrap();
    to_bytes(&out)
}

#[tokio::test]
async fn replays_give_identical_bytes_whatever_the_batching() {
    let events = mixed_stream();
    let reference = replay(&events, events.len()).await;
    assert_eq!(replay(&events, events.len()).await, reference);
    assert_eq!(replay(&events, 1).await, reference);
    assert_eq!(replay(&events, 7).await, reference);
    let (out, stats) = run(&CorrelateConfig::default(), events.clone());
    assert_eq!(to_bytes(&out), reference);
    assert_eq!(
        out.len() - summaries(&out).len(),
        events.len(),
        "every event leaves once"
    );
    // The stream repeats stories on the same pods and nodes, so recurrences fire too.
    let recurrences = summaries(&out)
        .iter()
        .filter(|s| {
            !s.correlation
                .as_ref()
                .unwrap()
                .related_correlations
                .is_empty()
        })
        .count() as u64;
    let mut patterns: Vec<String> = summaries(&out)
        .iter()
        .filter(|s| {
            s.correlation
                .as_ref()
                .unwrap()
                .related_correlations
                .is_empty()
        })
        .map(|s| s.correlation.as_ref().unwrap().pattern.clone().unwrap())
        .collect();
    patterns.sort();
    patterns.dedup();
    assert_eq!(patterns.len(), 5, "{patterns:?}");
    assert_eq!(stats.summaries - recurrences, 100, "one summary per story");
    assert_eq!(stats.late_events, 0);
}

/// The batches correlate builds from held events are timed from their earliest input batch,
/// so its latency shows how long the reorder buffer held events (here at least 100 ms).
#[tokio::test]
async fn its_latency_counts_the_time_events_were_held() {
    let mut h = start(&without_idle_flush());
    let mut script = Script::default();
    script
        .socket(0, &API, "connect")
        .socket(6000, &API, "connect");
    let mut events = script.events.into_iter();
    h.input
        .send(EventBatch::new(events.by_ref().take(1).collect()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.input
        .send(EventBatch::new(events.collect()))
        .await
        .unwrap();
    assert_eq!(next_delivered(&mut h.output).await.len(), 1);
    let latency = h.metrics.snapshot().latency;
    assert_eq!(latency.count, 1, "{latency:?}");
    assert!(latency.sum_micros >= 100_000, "{latency:?}");
}
