//! Event JSON decode and encode, per event, on the demo's realistic mix (~300 bytes each).

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapio_event::Timestamp;
use tapio_event::codec::{Decoder, encode_json, encode_text};

fn codec(c: &mut Criterion) {
    let events = support::demo_events(10_000);
    let mut lines = Vec::new();
    for event in &events {
        let mut line = Vec::new();
        encode_json(event, &mut line);
        lines.push(line);
    }
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("decode_json", |b| {
        let mut decoder = Decoder::default();
        b.iter(|| {
            for line in &lines {
                std::hint::black_box(decoder.decode_json(line, Timestamp(1)).unwrap());
            }
        })
    });
    group.bench_function("encode_json", |b| {
        let mut out = Vec::with_capacity(bytes + events.len());
        b.iter(|| {
            out.clear();
            for event in &events {
                encode_json(event, &mut out);
                out.push(b'\n');
            }
            std::hint::black_box(out.len())
        })
    });
    group.bench_function("encode_text", |b| {
        let mut out = String::new();
        b.iter(|| {
            out.clear();
            for event in &events {
                encode_text(event, &mut out);
                out.push('\n');
            }
            std::hint::black_box(out.len())
        })
    });
    group.finish();
    eprintln!("mean encoded event size: {} bytes", bytes / events.len());
}

criterion_group!(benches, codec);
criterion_main!(benches);
