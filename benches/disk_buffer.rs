//! Disk-buffer throughput per sync policy: 300k events of about 300 bytes (their JSON form)
//! written through a disk buffer until every one is acknowledged upstream (durable), then read
//! back by a sink that acknowledges them. Prints events/s and MiB/s of record bytes for each
//! phase and policy. Run: `cargo bench --bench disk_buffer` (`TAPIO_BENCH_EVENTS` to resize;
//! `TAPIO_BENCH_DIR` for the directory, by default a temporary one under /tmp).
//! `TAPIO_BENCH_FILL=<data_dir>` instead fills the disk buffer of a sink named `full` under
//! `<data_dir>` with `TAPIO_BENCH_EVENTS` events and exits, for measuring a start on a full
//! buffer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tapio_event::buffer::buffer;
use tapio_event::metrics::ComponentKind;
use tapio_event::{
    AckToken, BatchStatus, ByteSize, ComponentMetrics, EventBatch, EventType, Timestamp,
    UnifiedEvent, WhenFull,
};
use tapio_topology::disk_buffer::{self, DiskOptions, SyncPolicy};

/// Events of about 300 bytes as JSON.
fn events(n: usize) -> Vec<UnifiedEvent> {
    (0..n)
        .map(|i| {
            let mut event =
                UnifiedEvent::new(EventType::Application, "bench", Timestamp(1 + i as i64));
            event.id = format!("evt_{i:012}");
            let mut app = serde_json::Map::new();
            app.insert("message".into(), "x".repeat(160).into());
            app.insert("n".into(), i.into());
            event.application = Some(Box::new(app));
            event
        })
        .collect()
}

fn main() {
    let total: usize = std::env::var("TAPIO_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let batch = 1000;
    let template = events(batch);
    let mut bytes = Vec::new();
    tapio_event::codec::encode_json(&template[0], &mut bytes);
    println!(
        "event JSON size: {} bytes; {total} events per run",
        bytes.len()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(data_dir) = std::env::var_os("TAPIO_BENCH_FILL") {
        runtime.block_on(fill(data_dir.as_ref(), total, &template));
        return;
    }
    for sync in [SyncPolicy::Always, SyncPolicy::Batch, SyncPolicy::Interval] {
        let base = std::env::var_os("TAPIO_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
        let dir = tempfile::tempdir_in(base).unwrap();
        runtime.block_on(async {
            let metrics = Arc::new(ComponentMetrics::new("bench", "blackhole", ComponentKind::Sink));
            let (out, mut output) = buffer(disk_buffer::READ_AHEAD_EVENTS, WhenFull::Block, Arc::clone(&metrics));
            let options = DiskOptions {
                max_size: ByteSize(4 << 30),
                when_full: WhenFull::Block,
                sync,
                sync_interval: Duration::from_millis(500),
            };
            let (input, run) = disk_buffer::open(dir.path(), "bench", options, Arc::clone(&metrics), out).unwrap();
            let task = tokio::spawn(run);
            let started = Instant::now();
            let mut receivers = Vec::new();
            for _ in 0..total / batch {
                let (token, receiver) = AckToken::new();
                input.send(EventBatch::with_ack(template.clone(), token)).await.unwrap();
                receivers.push(receiver);
            }
            for receiver in receivers {
                assert_eq!(receiver.status().await, BatchStatus::Delivered);
            }
            let wrote = started.elapsed();
            let on_disk = metrics.snapshot().state_sizes["disk_buffer_bytes"];
            drop(input);
            let started = Instant::now();
            let mut read = 0;
            while let Some(batch) = output.recv().await {
                read += batch.len();
                batch.ack(BatchStatus::Delivered);
            }
            let took = started.elapsed();
            task.await.unwrap().unwrap();
            assert_eq!(read, total);
            let mib = on_disk as f64 / (1 << 20) as f64;
            println!(
                "sync = {sync:?}: write {:.0} events/s ({:.1} MiB/s) durable; read {:.0} events/s ({:.1} MiB/s)",
                total as f64 / wrote.as_secs_f64(),
                mib / wrote.as_secs_f64(),
                total as f64 / took.as_secs_f64(),
                mib / took.as_secs_f64(),
            );
        });
    }
}

/// Writes `total` events into the disk buffer of sink `full` under `data_dir` and returns once
/// they are durable, leaving them unacknowledged by any sink.
async fn fill(data_dir: &std::path::Path, total: usize, template: &[UnifiedEvent]) {
    let metrics = Arc::new(ComponentMetrics::new(
        "full",
        "blackhole",
        ComponentKind::Sink,
    ));
    let (out, _output) = buffer(
        disk_buffer::READ_AHEAD_EVENTS,
        WhenFull::Block,
        Arc::clone(&metrics),
    );
    let options = DiskOptions {
        max_size: ByteSize(2 << 30),
        when_full: WhenFull::Block,
        sync: SyncPolicy::Batch,
        sync_interval: Duration::from_millis(500),
    };
    let (input, run) =
        disk_buffer::open(data_dir, "full", options, Arc::clone(&metrics), out).unwrap();
    tokio::spawn(run);
    let mut receivers = Vec::new();
    for _ in 0..total / template.len() {
        let (token, receiver) = AckToken::new();
        input
            .send(EventBatch::with_ack(template.to_vec(), token))
            .await
            .unwrap();
        receivers.push(receiver);
    }
    for receiver in receivers {
        assert_eq!(receiver.status().await, BatchStatus::Delivered);
    }
    println!(
        "filled {} with {total} events, {} bytes",
        data_dir.display(),
        metrics.snapshot().state_sizes["disk_buffer_bytes"]
    );
}
