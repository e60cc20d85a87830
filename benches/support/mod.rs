//! Realistic events for the benches: a seeded `demo` run, the same stream the end-to-end
//! throughput runs use. Benches allocate with mimalloc, as the `tapio` binary does, so their
//! numbers are the product's.

use std::sync::Arc;

use tapio_event::buffer::buffer;
use tapio_event::metrics::ComponentKind;
use tapio_event::{
    BuildContext, ComponentMetrics, Fanout, Outputs, ShutdownSignal, SourceContext, UnifiedEvent,
    WhenFull,
};
use tapio_sources::SourceConfig;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `count` events of the demo's realistic mix, identical on every call.
pub fn demo_events(count: usize) -> Vec<UnifiedEvent> {
    let config: SourceConfig = serde_json::from_value(serde_json::json!({ "demo": {
        "count": count,
        "seed": 42,
        "start_time": "2026-11-27T00:00:00Z",
    }}))
    .expect("valid demo config");
    let cx = BuildContext {
        name: "bench".into(),
        data_dir: std::env::temp_dir(),
        node_name: "bench".into(),
    };
    let source = config.build(&cx).expect("demo builds");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let metrics = Arc::new(ComponentMetrics::new(
            "bench",
            "demo",
            ComponentKind::Source,
        ));
        let (tx, mut rx) = buffer(count.max(1), WhenFull::Block, Arc::clone(&metrics));
        let (_trigger, shutdown) = ShutdownSignal::new();
        let out = Outputs::new(Fanout::new(vec![tx]), vec![], Arc::clone(&metrics));
        let task = tokio::spawn(source.run(SourceContext {
            out,
            shutdown,
            metrics,
        }));
        let mut events = Vec::with_capacity(count);
        while let Some(batch) = rx.recv().await {
            events.extend_from_slice(batch.events());
        }
        task.await.unwrap().unwrap();
        events
    })
}
