//! `semantic_enrich → correlate → impact_assess` on one core: the demo's realistic mix (with its
//! incident sequences) fed in batches of 1000 through the three transforms, connected by the
//! runtime's own buffers on a single-threaded runtime, so events/s here is per core.

mod support;

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tapio_event::buffer::buffer;
use tapio_event::metrics::ComponentKind;
use tapio_event::{
    BatchStatus, BuildContext, ComponentMetrics, EventBatch, Fanout, Outputs, TransformContext,
    WhenFull,
};
use tapio_transforms::TransformConfig;

const EVENTS: usize = 200_000;

/// Runs `batches` through the chain and returns how many events came out.
async fn run_chain(batches: Vec<EventBatch>) -> usize {
    let chain = ["semantic_enrich", "correlate", "impact_assess"];
    let metrics =
        |name: &str| Arc::new(ComponentMetrics::new(name, name, ComponentKind::Transform));
    let (feed, mut upstream) = buffer(4096, WhenFull::Block, metrics("feed"));
    let mut tasks = Vec::new();
    for name in chain {
        let config: TransformConfig =
            serde_json::from_value(serde_json::json!({ name: {} })).unwrap();
        let cx = BuildContext {
            name: name.into(),
            data_dir: std::env::temp_dir(),
            node_name: "bench".into(),
        };
        let transform = config.build(&cx).unwrap();
        let m = metrics(name);
        let (tx, rx) = buffer(4096, WhenFull::Block, Arc::clone(&m));
        let out = Outputs::new(Fanout::new(vec![tx]), vec![], Arc::clone(&m));
        tasks.push(tokio::spawn(
            transform.run(upstream, TransformContext { out, metrics: m }),
        ));
        upstream = rx;
    }
    let feeder = tokio::spawn(async move {
        for batch in batches {
            feed.send(batch).await.unwrap();
        }
    });
    let mut seen = 0;
    while let Some(batch) = upstream.recv().await {
        seen += batch.len();
        batch.ack(BatchStatus::Delivered);
    }
    feeder.await.unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    seen
}

fn transforms(c: &mut Criterion) {
    let events = support::demo_events(EVENTS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("intelligence");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.bench_function("enrich_correlate_impact", |b| {
        let make_batches = || {
            events
                .chunks(1000)
                .map(|chunk| EventBatch::new(chunk.to_vec()))
                .collect::<Vec<_>>()
        };
        b.iter_batched(
            make_batches,
            |batches| runtime.block_on(run_chain(batches)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, transforms);
criterion_main!(benches);
