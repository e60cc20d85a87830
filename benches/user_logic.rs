//! The transforms users program in `tapio.toml` on one core, each against the same stream with
//! no transform at all: `filter` with the field form and with the same test as a Rhai
//! expression, `route` with two field routes, and a
//! five-line `rhai` script (two field reads, a condition, a tag push), on one core
//! (`concurrency = 1`) and on all of them. The demo's realistic mix is fed in batches of 1000
//! through the runtime's own buffers on a single-threaded runtime, and every output (default
//! and named) is read, so events/s here is per core except in the `_all_cores` case.

mod support;

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tapio_event::buffer::buffer;
use tapio_event::metrics::ComponentKind;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentMetrics, EventBatch, Fanout, Outputs,
    TransformContext, UnifiedEvent, WhenFull,
};
use tapio_transforms::TransformConfig;

const EVENTS: usize = 200_000;

/// Each case: its name and the transform's `{ type = { options } }` in TOML, or none for the
/// stream alone.
const CASES: &[(&str, Option<&str>)] = &[
    ("no_transform", None),
    (
        "filter_field",
        Some(r#"filter = { condition = { field = "type", in = ["process", "network"] } }"#),
    ),
    (
        "filter_rhai",
        Some(r#"filter = { condition = 'event.type == "process" || event.type == "network"' }"#),
    ),
    (
        "route_field",
        Some(
            r#"route = { routes = { net = { field = "type", equals = "network" }, k8s = { field = "source", equals = "kubernetes" } } }"#,
        ),
    ),
    (
        "rhai_five_lines",
        Some(
            r#"rhai = { concurrency = 1, source = '''
let comm = event.process.comm;
let namespace = event.entity.namespace;
if comm == "nginx" || namespace == "payments" {
    event.semantic.tags.push("watched");
}''' }"#,
        ),
    ),
    (
        "rhai_five_lines_all_cores",
        Some(
            r#"rhai = { source = '''
let comm = event.process.comm;
let namespace = event.entity.namespace;
if comm == "nginx" || namespace == "payments" {
    event.semantic.tags.push("watched");
}''' }"#,
        ),
    ),
];

/// Reads every batch `receiver` gets, acknowledging it; returns how many events came.
async fn drain(mut receiver: BufferReceiver) -> usize {
    let mut seen = 0;
    while let Some(batch) = receiver.recv().await {
        seen += batch.len();
        batch.ack(BatchStatus::Delivered);
    }
    seen
}

/// Runs `batches` through `config` (or straight to the reader) and returns how many events
/// came out on all outputs together.
async fn run_case(config: Option<&TransformConfig>, batches: Vec<EventBatch>) -> usize {
    let metrics =
        |name: &str| Arc::new(ComponentMetrics::new(name, name, ComponentKind::Transform));
    let (feed, upstream) = buffer(4096, WhenFull::Block, metrics("feed"));
    let feeder = tokio::spawn(async move {
        for batch in batches {
            feed.send(batch).await.unwrap();
        }
    });
    let Some(config) = config else {
        let seen = drain(upstream).await;
        feeder.await.unwrap();
        return seen;
    };
    let cx = BuildContext {
        name: "bench".into(),
        data_dir: std::env::temp_dir(),
        node_name: "bench".into(),
    };
    let transform = config.build(&cx).unwrap();
    let m = metrics("bench");
    let (tx, rx) = buffer(4096, WhenFull::Block, Arc::clone(&m));
    let named = config
        .named_outputs()
        .into_iter()
        .map(|output| (output, Fanout::new(vec![tx.clone()])))
        .collect();
    let out = Outputs::new(Fanout::new(vec![tx]), named, Arc::clone(&m));
    let task = tokio::spawn(transform.run(upstream, TransformContext { out, metrics: m }));
    let seen = drain(rx).await;
    feeder.await.unwrap();
    task.await.unwrap().unwrap();
    seen
}

fn user_logic(c: &mut Criterion) {
    let events: Vec<UnifiedEvent> = support::demo_events(EVENTS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("user_logic");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    for (name, options) in CASES {
        let config: Option<TransformConfig> = options.map(|text| toml::from_str(text).unwrap());
        group.bench_function(*name, |b| {
            let make_batches = || {
                events
                    .chunks(1000)
                    .map(|chunk| EventBatch::new(chunk.to_vec()))
                    .collect::<Vec<_>>()
            };
            b.iter_batched(
                make_batches,
                |batches| runtime.block_on(run_case(config.as_ref(), batches)),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, user_logic);
criterion_main!(benches);
