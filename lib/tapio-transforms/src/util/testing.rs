//! Runs a built transform over batches in unit tests, with its default output and the named
//! outputs a test reads wired to buffers, and collects what each output received.

use std::collections::BTreeMap;
use std::sync::Arc;

use tapio_event::buffer::buffer;
use tapio_event::{
    BufferReceiver, ComponentKind, ComponentMetrics, EventBatch, Fanout, MetricsSnapshot, Outputs,
    Transform, TransformContext, WhenFull,
};

/// What a transform sent, by output (`""` is the default one), and its counters.
pub(crate) struct Collected {
    pub(crate) outputs: BTreeMap<String, Vec<EventBatch>>,
    pub(crate) metrics: MetricsSnapshot,
}

impl Collected {
    /// The `source` of every event sent on `output`, in order: tests name events by source.
    pub(crate) fn sources(&self, output: &str) -> Vec<String> {
        self.outputs
            .get(output)
            .into_iter()
            .flatten()
            .flat_map(|batch| batch.events().iter().map(|e| e.source.clone()))
            .collect()
    }
}

/// Runs `transform` over `batches` to the end of its input; `read` are the named outputs
/// something downstream reads (the others stay unconnected, as in a pipeline).
pub(crate) async fn run(
    transform: Box<dyn Transform>,
    read: &[&str],
    batches: Vec<EventBatch>,
) -> Collected {
    let metrics = Arc::new(ComponentMetrics::new("t", "t", ComponentKind::Transform));
    let (input, receiver) = buffer(1 << 20, WhenFull::Block, Arc::clone(&metrics));
    let downstream = || {
        let sink = Arc::new(ComponentMetrics::new("out", "out", ComponentKind::Sink));
        buffer(1 << 20, WhenFull::Block, sink)
    };
    let (default_tx, default_rx) = downstream();
    let mut receivers: Vec<(String, BufferReceiver)> = vec![(String::new(), default_rx)];
    let mut named = Vec::new();
    for &output in read {
        let (tx, rx) = downstream();
        named.push((output.to_owned(), Fanout::new(vec![tx])));
        receivers.push((output.to_owned(), rx));
    }
    let cx = TransformContext {
        out: Outputs::new(Fanout::new(vec![default_tx]), named, Arc::clone(&metrics)),
        metrics: Arc::clone(&metrics),
    };
    let task = tokio::spawn(transform.run(receiver, cx));
    for batch in batches {
        input
            .send(batch)
            .await
            .expect("the transform reads its input");
    }
    drop(input);
    task.await
        .expect("the transform does not panic")
        .expect("the transform ends cleanly");
    let mut outputs = BTreeMap::new();
    for (name, mut rx) in receivers {
        let mut got = Vec::new();
        while let Some(batch) = rx.recv().await {
            got.push(batch);
        }
        outputs.insert(name, got);
    }
    Collected {
        outputs,
        metrics: metrics.snapshot(),
    }
}

/// A small deterministic generator (xorshift), so randomised tests reproduce.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// A number in `0..bound`.
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

/// `count` events named `0`, `1`, … by `source`, each with a random severity (or none) and a
/// random process name, cut into batches of random sizes.
pub(crate) fn random_batches(rng: &mut Rng, count: usize) -> Vec<EventBatch> {
    use tapio_event::{
        EventType, ImpactContext, ProcessContext, Severity, Timestamp, UnifiedEvent,
    };
    const SEVERITIES: [Option<Severity>; 4] = [
        None,
        Some(Severity::Info),
        Some(Severity::Error),
        Some(Severity::Critical),
    ];
    const COMMS: [&str; 3] = ["nginx", "curl", "kworker/0:1"];
    let events: Vec<UnifiedEvent> = (0..count)
        .map(|i| {
            let mut event = UnifiedEvent::new(EventType::Process, i.to_string(), Timestamp(1));
            event.impact = SEVERITIES[rng.below(SEVERITIES.len())].map(|severity| {
                Box::new(ImpactContext {
                    severity: Some(severity),
                    ..Default::default()
                })
            });
            event.process = Some(Box::new(ProcessContext {
                comm: Some(COMMS[rng.below(COMMS.len())].into()),
                pid: Some(rng.below(5000) as u32),
                ..Default::default()
            }));
            event
        })
        .collect();
    let mut batches = Vec::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let size = 1 + rng.below(8);
        batches.push(EventBatch::new(events.by_ref().take(size).collect()));
    }
    batches
}
