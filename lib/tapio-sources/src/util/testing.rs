//! Drives a source the way the topology does and reads what it sends: the harness every
//! source's tests share.

use std::sync::Arc;
use std::time::Duration;

use tapio_event::buffer::buffer;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentError, ComponentKind, ComponentMetrics,
    EventBatch, Fanout, Outputs, ShutdownSignal, ShutdownTrigger, Source, SourceContext,
    UnifiedEvent, WhenFull,
};
use tokio::task::JoinHandle;

/// The far ends of a source's outputs.
pub struct Taps {
    pub events: BufferReceiver,
    pub errors: BufferReceiver,
    pub trigger: ShutdownTrigger,
    pub metrics: Arc<ComponentMetrics>,
}

/// The build context sources get in tests.
pub fn build_context(name: &str) -> BuildContext {
    BuildContext {
        name: name.into(),
        data_dir: std::env::temp_dir(),
        node_name: "test-node".into(),
    }
}

/// A context for a source of `kind`; the `errors` output is wired only if `with_errors`.
pub fn context(kind: &str, with_errors: bool) -> (SourceContext, Taps) {
    context_with_buffer(kind, with_errors, 1_000_000)
}

/// Starts `source` as the topology would, its output buffer holding `max_events` (a small
/// one stalls the source).
pub fn spawn(
    source: Box<dyn Source>,
    kind: &str,
    max_events: usize,
) -> (JoinHandle<Result<(), ComponentError>>, Taps) {
    let (cx, taps) = context_with_buffer(kind, false, max_events);
    (tokio::spawn(source.run(cx)), taps)
}

/// [`context`] with an output buffer of `max_events`.
fn context_with_buffer(kind: &str, with_errors: bool, max_events: usize) -> (SourceContext, Taps) {
    let metrics = Arc::new(ComponentMetrics::new("test", kind, ComponentKind::Source));
    let sink_metrics = || Arc::new(ComponentMetrics::new("sink", "test", ComponentKind::Sink));
    let (tx, events) = buffer(max_events, WhenFull::Block, sink_metrics());
    let (err_tx, errors) = buffer(1_000_000, WhenFull::Block, sink_metrics());
    let errors_out = if with_errors {
        Fanout::new(vec![err_tx])
    } else {
        Fanout::default()
    };
    let out = Outputs::new(
        Fanout::new(vec![tx]),
        vec![("errors".into(), errors_out)],
        Arc::clone(&metrics),
    );
    let (trigger, shutdown) = ShutdownSignal::new();
    let cx = SourceContext {
        out,
        shutdown,
        metrics: Arc::clone(&metrics),
    };
    let taps = Taps {
        events,
        errors,
        trigger,
        metrics,
    };
    (cx, taps)
}

/// The next batch, within five seconds.
pub async fn next_batch(rx: &mut BufferReceiver) -> EventBatch {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no batch within 5 s")
        .expect("the source closed its output")
}

/// Exactly `n` events (acknowledging their batches as delivered), panicking after five
/// seconds without one.
pub async fn take(rx: &mut BufferReceiver, n: usize) -> Vec<UnifiedEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        let batch = next_batch(rx).await;
        events.extend_from_slice(batch.events());
        batch.ack(BatchStatus::Delivered);
    }
    assert_eq!(events.len(), n, "more events than expected");
    events
}

/// Asserts nothing more arrives for a while.
pub async fn assert_quiet(rx: &mut BufferReceiver) {
    if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("unexpected events: {:?}", texts(batch.events()));
    }
}

/// The `raw_data` of text events, as strings.
pub fn texts(events: &[UnifiedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| String::from_utf8_lossy(event.raw_data.as_deref().unwrap_or(b"")).into())
        .collect()
}
