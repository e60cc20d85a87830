use super::*;
use tapio_event::{AckReceiver, EventType, Timestamp};

fn numbered(from: usize, n: usize) -> Vec<UnifiedEvent> {
    (from..from + n)
        .map(|i| {
            let mut event = UnifiedEvent::new(EventType::Process, "test", Timestamp(1 + i as i64));
            event.id = format!("evt_{i:08}");
            event
        })
        .collect()
}

fn options(sync: SyncPolicy) -> DiskOptions {
    DiskOptions {
        max_size: ByteSize(1 << 30),
        when_full: WhenFull::Block,
        sync,
        sync_interval: Duration::from_millis(20),
    }
}

fn sink_metrics() -> Arc<ComponentMetrics> {
    Arc::new(ComponentMetrics::new("out", "test", ComponentKind::Sink))
}

/// A running buffer: where to send, what the sink gets, the task.
struct Running {
    input: BufferSender,
    output: BufferReceiver,
    task: tokio::task::JoinHandle<Result<(), ComponentError>>,
    metrics: Arc<ComponentMetrics>,
}

fn start(data_dir: &Path, options: DiskOptions) -> Running {
    let metrics = sink_metrics();
    let (out, output) = buffer(READ_AHEAD_EVENTS, WhenFull::Block, Arc::clone(&metrics));
    let (input, run) = open(data_dir, "out", options, Arc::clone(&metrics), out).unwrap();
    Running {
        input,
        output,
        task: tokio::spawn(run),
        metrics,
    }
}

/// Sends batches of random sizes totalling `n` events from `from`, each with an
/// acknowledgement; returns the receivers.
async fn send_numbered(input: &BufferSender, from: usize, n: usize, seed: u64) -> Vec<AckReceiver> {
    let mut receivers = Vec::new();
    let (mut sent, mut state) = (0, seed | 1);
    while sent < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = (1 + state as usize % 700).min(n - sent);
        let (token, receiver) = AckToken::new();
        input
            .send(EventBatch::with_ack(numbered(from + sent, size), token))
            .await
            .unwrap();
        receivers.push(receiver);
        sent += size;
    }
    receivers
}

/// Receives until `n` events came, acknowledging them as `status`; returns their ids.
async fn receive(output: &mut BufferReceiver, n: usize, status: BatchStatus) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), output.recv())
            .await
            .expect("the buffer stalled")
            .expect("the buffer ended early");
        ids.extend(batch.events().iter().map(|e| e.id.clone()));
        batch.ack(status);
    }
    ids
}

fn expected(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("evt_{i:08}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_delivers_in_order_and_acknowledges_upstream_once_durable() {
    for (round, sync) in [SyncPolicy::Always, SyncPolicy::Batch, SyncPolicy::Interval]
        .into_iter()
        .enumerate()
    {
        let data = tempfile::tempdir().unwrap();
        let mut running = start(data.path(), options(sync));
        let receivers = send_numbered(&running.input, 0, 5000, round as u64 + 3).await;
        assert_eq!(
            receive(&mut running.output, 5000, BatchStatus::Delivered).await,
            expected(0, 5000),
            "{sync:?}"
        );
        for receiver in receivers {
            assert_eq!(receiver.status().await, BatchStatus::Delivered, "{sync:?}");
        }
        drop(running.input);
        assert!(running.output.recv().await.is_none());
        running.task.await.unwrap().unwrap();
        // Everything was acknowledged: a new start has nothing to send.
        let mut again = start(data.path(), options(sync));
        drop(again.input);
        assert!(again.output.recv().await.is_none(), "{sync:?} sent again");
        again.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_policy_acknowledges_upstream_only_after_its_sync() {
    let data = tempfile::tempdir().unwrap();
    let mut slow = options(SyncPolicy::Interval);
    slow.sync_interval = Duration::from_secs(3600);
    let running = start(data.path(), slow);
    let mut receivers = send_numbered(&running.input, 0, 10, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receivers[0].try_status(),
        None,
        "acknowledged before any sync"
    );
    drop(running.input);
    for receiver in receivers {
        assert_eq!(receiver.status().await, BatchStatus::Delivered);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_sink_did_not_acknowledge_is_sent_again_after_a_restart_across_segments() {
    let data = tempfile::tempdir().unwrap();
    let mut small = options(SyncPolicy::Batch);
    // 64 KiB segments: the events span many, so restarts cross segment boundaries.
    small.max_size = ByteSize(512 << 10);
    let mut running = start(data.path(), small);
    send_numbered(&running.input, 0, 3000, 5).await;
    let acknowledged = receive(&mut running.output, 1200, BatchStatus::Delivered).await;
    // The rest reaches the sink but it fails them (as a crashed sink would).
    let failed = receive(
        &mut running.output,
        3000 - acknowledged.len(),
        BatchStatus::Failed,
    )
    .await;
    assert!(!failed.is_empty());
    drop(running.input);
    while running.output.recv().await.is_some() {}
    running.task.await.unwrap().unwrap();
    assert!(
        segment::segments(&segment::buffer_dir(data.path(), "out"))
            .unwrap()
            .len()
            > 1
    );

    let mut again = start(data.path(), small);
    let resent = receive(&mut again.output, failed.len(), BatchStatus::Delivered).await;
    assert_eq!(
        resent, failed,
        "not exactly the unacknowledged events were sent again"
    );
    drop(again.input);
    assert!(again.output.recv().await.is_none());
    again.task.await.unwrap().unwrap();
    let left = segment::segments(&segment::buffer_dir(data.path(), "out")).unwrap();
    assert!(left.len() <= 2, "acknowledged segments were kept: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_tail_is_quarantined_at_open_and_the_valid_prefix_delivered() {
    let data = tempfile::tempdir().unwrap();
    let mut running = start(data.path(), options(SyncPolicy::Always));
    send_numbered(&running.input, 0, 100, 9).await;
    drop(running.input);
    // The sink never acknowledges: everything stays for the next start.
    let got = receive(&mut running.output, 100, BatchStatus::Failed).await;
    assert_eq!(got.len(), 100);
    running.task.await.unwrap().unwrap();
    let dir = segment::buffer_dir(data.path(), "out");
    let last = *segment::segments(&dir).unwrap().last().unwrap();
    let path = segment::segment_path(&dir, last);
    let length = std::fs::metadata(&path).unwrap().len();
    // A power cut in mid-write: the last record is cut short.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(length - 7).unwrap();
    drop(file);

    let mut again = start(data.path(), options(SyncPolicy::Always));
    assert_eq!(
        again.metrics.snapshot().errors.get("buffer_damaged"),
        Some(&1)
    );
    drop(again.input);
    let mut ids = Vec::new();
    while let Some(batch) = again.output.recv().await {
        ids.extend(batch.events().iter().map(|e| e.id.clone()));
        batch.ack(BatchStatus::Delivered);
    }
    again.task.await.unwrap().unwrap();
    assert_eq!(ids, expected(0, 99));
    let report = &segment::check(data.path()).unwrap()[0];
    assert!(report.unreadable.is_empty(), "{report:?}");
    assert!(report.quarantined_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_newest_when_told_and_blocks_otherwise() {
    for when_full in [WhenFull::DropNewest, WhenFull::Block] {
        let data = tempfile::tempdir().unwrap();
        let mut tiny = options(SyncPolicy::Batch);
        tiny.max_size = ByteSize(64 << 10);
        tiny.when_full = when_full;
        let running = start(data.path(), tiny);
        // Nobody reads the sink's input: its read-ahead fills, then the disk.
        let sending = async {
            for i in 0..400 {
                let (token, receiver) = AckToken::new();
                running
                    .input
                    .send(EventBatch::with_ack(numbered(i * 100, 100), token))
                    .await
                    .unwrap();
                if receiver.status().await == BatchStatus::Dropped {
                    return Some(i);
                }
            }
            None
        };
        let outcome = tokio::time::timeout(Duration::from_secs(5), sending).await;
        match when_full {
            WhenFull::DropNewest => {
                assert!(outcome.expect("drop_newest blocked").is_some());
                assert!(running.metrics.snapshot().dropped["buffer_full"] > 0);
            }
            _ => assert!(outcome.is_err(), "a full blocking buffer took more"),
        }
        let bytes = running.metrics.snapshot().state_sizes["disk_buffer_bytes"];
        assert!(bytes <= 64 << 10, "{bytes} bytes on disk");
        drop(running.output);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_opener_of_the_same_buffer_is_refused_until_the_first_is_done() {
    let data = tempfile::tempdir().unwrap();
    let running = start(data.path(), options(SyncPolicy::Batch));
    let metrics = sink_metrics();
    let (out, _output) = buffer(READ_AHEAD_EVENTS, WhenFull::Block, Arc::clone(&metrics));
    let refused = open(
        data.path(),
        "out",
        options(SyncPolicy::Batch),
        metrics,
        out.clone(),
    );
    let error = refused.err().expect("a second opener was let in");
    assert!(error.to_string().contains("another process"), "{error}");
    drop(running.input);
    drop(running.output);
    running.task.await.unwrap().unwrap();
    let metrics = sink_metrics();
    assert!(open(data.path(), "out", options(SyncPolicy::Batch), metrics, out).is_ok());
}
