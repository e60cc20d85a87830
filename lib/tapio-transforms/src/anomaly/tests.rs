//! The running transform on generated series: step changes and bursts are found within two
//! intervals, quiet noise and warm-ups raise nothing, every input event passes through, state
//! stays bounded.

use std::sync::Arc;

use tapio_event::buffer::{WhenFull, buffer};
use tapio_event::{
    BuildContext, ComponentConfig, ComponentKind, ComponentMetrics, Entity, EntityType, EventBatch,
    EventType, Fanout, MetricsSnapshot, NetworkContext, Outputs, ProcessContext, Timestamp,
    TransformContext, UnifiedEvent,
};

use super::*;

const SECOND: i64 = 1_000_000_000;
/// Event times start here, so intervals are not aligned with anything in particular.
const START: i64 = 1_764_000_000 * SECOND + 123_456_789;

fn config(options: serde_json::Value) -> AnomalyConfig {
    serde_json::from_value(options).unwrap()
}

/// Runs the transform over `batches` to the end of input; what it sent and its counters.
async fn run(
    config: &AnomalyConfig,
    batches: Vec<EventBatch>,
) -> (Vec<UnifiedEvent>, MetricsSnapshot) {
    let cx = BuildContext {
        name: "anomaly".into(),
        data_dir: std::env::temp_dir(),
        node_name: "node".into(),
    };
    let transform = config.build(&cx).unwrap();
    let metrics = Arc::new(ComponentMetrics::new(
        "anomaly",
        "anomaly",
        ComponentKind::Transform,
    ));
    let (input, receiver) = buffer(1 << 24, WhenFull::Block, Arc::clone(&metrics));
    let sink = Arc::new(ComponentMetrics::new("out", "out", ComponentKind::Sink));
    let (output, mut collected) = buffer(1 << 24, WhenFull::Block, sink);
    let task = tokio::spawn(transform.run(
        receiver,
        TransformContext {
            out: Outputs::new(Fanout::new(vec![output]), Vec::new(), Arc::clone(&metrics)),
            metrics: Arc::clone(&metrics),
        },
    ));
    for batch in batches {
        input.send(batch).await.unwrap();
    }
    drop(input);
    task.await.unwrap().unwrap();
    let mut events = Vec::new();
    while let Some(batch) = collected.recv().await {
        events.extend(batch.events().iter().cloned());
    }
    (events, metrics.snapshot())
}

fn pod(name: &str) -> Entity {
    Entity {
        kind: EntityType::Pod,
        id: format!("uid-{name}"),
        name: Some(name.into()),
        namespace: Some("shop".into()),
        node: Some("worker-1".into()),
        attributes: [("app".to_owned(), name.to_owned())].into(),
    }
}

fn retransmit(entity: &Entity, at: i64) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(EventType::Network, "ebpf", Timestamp(at));
    event.entity = Some(Box::new(entity.clone()));
    event.network = Some(Box::new(NetworkContext {
        operation: Some("retransmit".into()),
        ..Default::default()
    }));
    event
}

fn exec(entity: &Entity, at: i64) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(EventType::Process, "ebpf", Timestamp(at));
    event.entity = Some(Box::new(entity.clone()));
    event.process = Some(Box::new(ProcessContext {
        operation: Some("exec".into()),
        ..Default::default()
    }));
    event
}

/// A reproducible pseudo-random source for the generated series.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A count around `mean` (a binomial with p = 1/4).
    fn count(&mut self, mean: f64) -> u64 {
        (0..(mean * 4.0).ceil() as u64)
            .filter(|_| self.next().is_multiple_of(4))
            .count() as u64
    }
}

/// Events of `make` for `entity`: `counts[i]` of them spread over interval `i` of 10 s, in
/// batches of a few intervals, arriving up to 3 s out of order.
fn series(
    entity: &Entity,
    counts: &[u64],
    make: fn(&Entity, i64) -> UnifiedEvent,
    rng: &mut Rng,
) -> Vec<UnifiedEvent> {
    let mut events = Vec::new();
    for (interval, &count) in counts.iter().enumerate() {
        let begin = START + interval as i64 * 10 * SECOND;
        for _ in 0..count {
            let at = begin + (rng.next() % (10 * SECOND as u64)) as i64;
            events.push((
                at + (rng.next() % (3 * SECOND as u64)) as i64,
                make(entity, at),
            ));
        }
    }
    events.sort_by_key(|(arrival, _)| *arrival);
    events.into_iter().map(|(_, event)| event).collect()
}

fn batches(events: Vec<UnifiedEvent>) -> Vec<EventBatch> {
    events
        .chunks(64)
        .map(|chunk| EventBatch::new(chunk.to_vec()))
        .collect()
}

/// The intervals (counted from `START`'s) of the anomaly events about `entity`.
fn fired_at(events: &[UnifiedEvent], entity: &Entity) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.kind == EventType::Anomaly && e.entity.as_ref().unwrap().id == entity.id)
        .map(|e| {
            (e.timestamp.as_nanos() - (START / (10 * SECOND)) * 10 * SECOND) / (10 * SECOND) - 1
        })
        .collect()
}

#[tokio::test]
async fn a_step_change_is_found_within_two_intervals_and_events_pass_unchanged() {
    let mut rng = Rng(1);
    let api = pod("api");
    let mut counts: Vec<u64> = (0..60).map(|_| rng.count(4.0)).collect();
    counts.extend((0..10).map(|_| 60 + rng.count(4.0)));
    let input = series(&api, &counts, retransmit, &mut rng);
    let (output, _) = run(&config(serde_json::json!({})), batches(input.clone())).await;
    let passed: Vec<&UnifiedEvent> = output
        .iter()
        .filter(|e| e.kind != EventType::Anomaly)
        .collect();
    assert_eq!(passed.len(), input.len());
    assert!(
        passed.iter().zip(&input).all(|(out, event)| *out == event),
        "events changed"
    );
    let fired = fired_at(&output, &api);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(
        (60..=61).contains(&fired[0]),
        "fired at interval {}",
        fired[0]
    );
    let anomaly = output
        .iter()
        .find(|e| e.kind == EventType::Anomaly)
        .unwrap();
    let context = anomaly.anomaly.as_deref().unwrap();
    assert_eq!(context.signal, "tcp_retransmit");
    assert_eq!(
        context.interval,
        ConfigDuration(std::time::Duration::from_secs(10))
    );
    assert!(
        context.observed >= 50 && context.baseline < 8.0,
        "{context:?}"
    );
    assert!(context.deviation >= 6.0, "{context:?}");
    let entity = anomaly.entity.as_deref().unwrap();
    assert_eq!(
        (entity.id.as_str(), entity.name.as_deref()),
        ("uid-api", Some("api"))
    );
    assert!(entity.attributes.is_empty(), "names the entity only");
    assert!(anomaly.id.starts_with("evt_"));
}

#[tokio::test]
async fn bursts_of_two_intervals_are_found_single_spikes_and_warmups_are_not() {
    let mut rng = Rng(2);
    let (burst, spike, young) = (pod("burst"), pod("spike"), pod("young"));
    let mut burst_counts: Vec<u64> = (0..50).map(|_| rng.count(10.0)).collect();
    burst_counts.extend([120, 130]);
    burst_counts.extend((0..20).map(|_| rng.count(10.0)));
    let mut spike_counts: Vec<u64> = (0..50).map(|_| rng.count(10.0)).collect();
    spike_counts.push(300);
    spike_counts.extend((0..21).map(|_| rng.count(10.0)));
    // Starts late: its burst falls inside its own warm-up.
    let mut young_counts = vec![0; 50];
    young_counts.extend([2, 3, 2, 200, 200, 2, 3]);
    let mut input = series(&burst, &burst_counts, exec, &mut rng);
    input.extend(series(&spike, &spike_counts, exec, &mut rng));
    input.extend(series(&young, &young_counts, exec, &mut rng));
    input.sort_by_key(|e| e.timestamp);
    let (output, _) = run(&config(serde_json::json!({})), batches(input)).await;
    assert_eq!(fired_at(&output, &burst), [51]);
    assert_eq!(fired_at(&output, &spike), Vec::<i64>::new());
    assert_eq!(fired_at(&output, &young), Vec::<i64>::new());
}

/// The false-alarm rate on stationary noise: 10 pods × 1000 quiet intervals each (10k
/// intervals), no anomaly.
#[tokio::test]
async fn stationary_noise_over_10k_intervals_raises_no_alarm() {
    let mut rng = Rng(3);
    let mut input = Vec::new();
    for (index, mean) in [0.3, 1.0, 2.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0, 80.0]
        .iter()
        .enumerate()
    {
        let counts: Vec<u64> = (0..1000).map(|_| rng.count(*mean)).collect();
        input.extend(series(&pod(&format!("p{index}")), &counts, exec, &mut rng));
    }
    input.sort_by_key(|e| e.timestamp);
    let total = input.len();
    let (output, _) = run(&config(serde_json::json!({})), batches(input)).await;
    assert_eq!(output.len(), total, "no anomaly among {total} events");
}

#[tokio::test]
async fn series_beyond_max_series_evict_the_idle_ones_and_are_counted() {
    let events: Vec<UnifiedEvent> = (0..500)
        .map(|i| exec(&pod(&format!("p{i}")), START + i * SECOND))
        .collect();
    let (output, metrics) = run(
        &config(serde_json::json!({ "max_series": 50 })),
        batches(events),
    )
    .await;
    assert_eq!(output.len(), 500);
    assert_eq!(metrics.evicted.get("anomaly_series"), Some(&450));
}

#[tokio::test]
async fn only_the_configured_signals_are_watched() {
    let mut rng = Rng(4);
    let api = pod("api");
    let mut counts = vec![1; 40];
    counts.extend([90, 90]);
    let input = series(&api, &counts, exec, &mut rng);
    let options =
        serde_json::json!({ "signals": ["tcp_retransmit"], "warmup": 5, "interval": "10s" });
    let (output, _) = run(&config(options), batches(input)).await;
    assert!(fired_at(&output, &api).is_empty());
}

#[test]
fn bad_options_are_config_errors() {
    let cx = BuildContext {
        name: "anomaly".into(),
        data_dir: std::env::temp_dir(),
        node_name: "node".into(),
    };
    for (options, expected) in [
        (serde_json::json!({ "interval": "0s" }), "`interval`"),
        (serde_json::json!({ "warmup": 0 }), "`warmup`"),
        (serde_json::json!({ "for": 0 }), "`for`"),
        (serde_json::json!({ "ratio": 0.5 }), "`ratio`"),
        (serde_json::json!({ "max_series": 0 }), "`max_series`"),
    ] {
        let error = config(options).build(&cx).err().expect("refused");
        assert!(error.message().contains(expected), "{error}");
    }
}
