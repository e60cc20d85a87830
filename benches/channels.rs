//! The channel path: batches of 1000 events through a bounded buffer to 1, 2 and 4 consumers
//! (fan-out shares the batch, so cost should barely grow with consumers).

mod support;

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tapio_event::buffer::buffer;
use tapio_event::metrics::ComponentKind;
use tapio_event::{BatchStatus, ComponentMetrics, EventBatch, Fanout, WhenFull};

const BATCHES: usize = 200;

fn channels(c: &mut Criterion) {
    let events = support::demo_events(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements((BATCHES * events.len()) as u64));
    for consumers in [1usize, 2, 4] {
        group.bench_function(format!("{consumers}_consumers"), |b| {
            // Batches are built outside the timed part: only the channel path is measured.
            let make_batches = || {
                (0..BATCHES)
                    .map(|_| EventBatch::new(events.clone()))
                    .collect::<Vec<_>>()
            };
            b.iter_batched(
                make_batches,
                |batches| {
                    runtime.block_on(async {
                        let mut senders = Vec::new();
                        let mut readers = Vec::new();
                        for i in 0..consumers {
                            let metrics = Arc::new(ComponentMetrics::new(
                                format!("sink{i}"),
                                "blackhole",
                                ComponentKind::Sink,
                            ));
                            let (tx, mut rx) = buffer(10_000, WhenFull::Block, metrics);
                            senders.push(tx);
                            readers.push(tokio::spawn(async move {
                                let mut seen = 0;
                                while let Some(batch) = rx.recv().await {
                                    seen += batch.len();
                                    batch.ack(BatchStatus::Delivered);
                                }
                                seen
                            }));
                        }
                        let mut out = Fanout::new(senders);
                        for batch in batches {
                            out.send(batch).await.unwrap();
                        }
                        drop(out);
                        for reader in readers {
                            assert_eq!(reader.await.unwrap(), BATCHES * events.len());
                        }
                    })
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, channels);
criterion_main!(benches);
