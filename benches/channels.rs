//! The channel path: batches of 1000 events through a bounded buffer to 1, 2 and 4 consumers
//! (fan-out shares the batch, so cost should barely grow with consumers), and to 1 consumer
//! through an output the taps watch, with nobody tapping (which should cost nothing) and with
//! a tap reading everything.

mod support;

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tapio_event::buffer::buffer;
use tapio_event::metrics::ComponentKind;
use tapio_event::tap::{TapDirection, TapPoint, Taps};
use tapio_event::{BatchStatus, ComponentMetrics, EventBatch, Fanout, WhenFull};

const BATCHES: usize = 200;

/// Whether the output is one the taps watch, and whether anyone taps it.
#[derive(Clone, Copy)]
enum Tapping {
    NoTapPoint,
    Idle,
    Live,
}

fn channels(c: &mut Criterion) {
    let events = support::demo_events(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements((BATCHES * events.len()) as u64));
    let cases = [
        ("1_consumers", 1usize, Tapping::NoTapPoint),
        ("2_consumers", 2, Tapping::NoTapPoint),
        ("4_consumers", 4, Tapping::NoTapPoint),
        ("1_consumers_tap_point_idle", 1, Tapping::Idle),
        ("1_consumers_tapped", 1, Tapping::Live),
    ];
    for (name, consumers, tapping) in cases {
        group.bench_function(name, |b| {
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
                        let taps = Taps::default();
                        let mut tap_reader = None;
                        if !matches!(tapping, Tapping::NoTapPoint) {
                            out = out.tapped(TapPoint::new(taps.clone(), "source", None));
                        }
                        if matches!(tapping, Tapping::Live) {
                            let mut tap =
                                taps.subscribe("*", TapDirection::Outputs, BATCHES).unwrap();
                            let total = BATCHES * events.len();
                            tap_reader = Some(tokio::spawn(async move {
                                let mut seen = 0;
                                while seen < total {
                                    seen += tap.recv().await.unwrap().events.len();
                                }
                            }));
                        }
                        for batch in batches {
                            out.send(batch).await.unwrap();
                        }
                        drop(out);
                        if let Some(reader) = tap_reader {
                            reader.await.unwrap();
                        }
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
