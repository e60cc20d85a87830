//! Disk buffers: a sink's events kept in an append-only log of segments under
//! `<data_dir>/buffers/<sink>/` (see [`segment`] for the files), so they survive a crash and a
//! slow sink can fall far behind without holding memory. Three tasks run one buffer:
//! - the **writer** takes batches from a small memory queue, appends one checksummed record per
//!   event, makes them durable as the `sync` policy says and only then acknowledges them
//!   upstream (a kafka source commits, a file source checkpoints);
//! - the **reader** streams records from the oldest unacknowledged one into the sink's input,
//!   a chunk at a time (start-up never loads the buffer into memory);
//! - the **acker** waits for the sink's acknowledgements in order, records the acknowledged
//!   position and deletes each segment once every event in it is acknowledged.
//!
//! A damaged tail (a power cut in mid-write) is found when the buffer opens: the valid prefix is
//! kept, the rest moved to a quarantine file, reported once and counted. A full disk is retried
//! with backoff, holding the batch unacknowledged (backpressure) until space returns.

pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::backoff::Backoff;
use tapio_event::buffer::{BufferSender, buffer};
use tapio_event::codec::encode_json;
use tapio_event::metrics::ComponentKind;
use tapio_event::throttle::Throttle;
use tapio_event::{
    AckReceiver, AckToken, BatchStatus, BufferReceiver, ByteSize, ComponentError, ComponentFuture,
    ComponentMetrics, EventBatch, UnifiedEvent, WhenFull,
};
use tokio::sync::{mpsc, watch};

use segment::{Position, Record, RecordReader};

/// When the writer makes what it wrote durable, which is when it acknowledges it upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// `fdatasync` after every batch written, before acknowledging it: the safest and slowest.
    Always,
    /// `fdatasync` once per group of batches written together (whatever was waiting when the
    /// writer got to it), then acknowledge the group.
    Batch,
    /// `fdatasync` every `sync_interval`, acknowledging what the sync covered; a power cut loses
    /// at most that much, and only events not yet acknowledged upstream.
    #[default]
    Interval,
}

/// What a disk buffer is asked to do, from a sink's `buffer` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskOptions {
    /// Bytes the segments may take; `when_full` applies past it.
    pub max_size: ByteSize,
    /// `Block` waits for the sink to free space; `DropNewest` drops and counts.
    pub when_full: WhenFull,
    /// When written events become durable and are acknowledged upstream.
    pub sync: SyncPolicy,
    /// How often the `Interval` policy syncs.
    pub sync_interval: Duration,
}

/// Events the memory queue in front of the writer holds; the writer groups what waits there.
const WRITER_QUEUE_EVENTS: usize = 8192;
/// Events the reader reads ahead into the sink's input.
pub const READ_AHEAD_EVENTS: usize = 2048;
/// Events per batch the reader sends.
const READ_BATCH_EVENTS: usize = 512;
/// Events the writer groups into one write (and, with `batch`, one sync).
const GROUP_EVENTS: usize = 8192;
/// The longest wait between retries of a write that failed (a full disk).
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where the writer is: the segment it appends to, how far, and whether it has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    at: Position,
    done: bool,
}

/// What the writer, reader and acker share.
struct Shared {
    dir: PathBuf,
    written: watch::Sender<Written>,
    /// Bytes of segments on disk.
    size: watch::Sender<u64>,
    metrics: Arc<ComponentMetrics>,
}

impl Shared {
    fn add_size(&self, delta: i64) {
        self.size
            .send_modify(|size| *size = size.saturating_add_signed(delta));
        self.metrics
            .set_state_size("disk_buffer_bytes", *self.size.borrow());
    }
}

/// Opens (or creates) the disk buffer of sink `name` under `data_dir`, feeding `out` (the
/// sink's input). Returns where upstream sends and the future that runs the buffer; the future
/// ends once upstream is gone and everything on disk went to the sink, or the sink is gone.
pub fn open(
    data_dir: &Path,
    name: &str,
    options: DiskOptions,
    metrics: Arc<ComponentMetrics>,
    out: BufferSender,
) -> std::io::Result<(BufferSender, ComponentFuture)> {
    let dir = segment::buffer_dir(data_dir, name);
    std::fs::create_dir_all(&dir)?;
    // One process per buffer: a second one reading the same segments would send every event
    // twice and delete segments under the first. The lock goes with the process, even a killed one.
    let lock = std::fs::File::create(dir.join("lock"))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(std::io::Error::other(
                "another process (a second tapio on the same data_dir?) is using this buffer",
            ));
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(error),
    }
    let ack = segment::read_ack(&dir);
    let mut existing = Vec::new();
    for seq in segment::segments(&dir)? {
        if seq < ack.segment {
            // Fully acknowledged; its deletion was cut short.
            std::fs::remove_file(segment::segment_path(&dir, seq))?;
        } else {
            existing.push(seq);
        }
    }
    if let Some(&last) = existing.last() {
        repair_tail(&dir, last, &metrics)?;
    }
    let mut size = 0;
    for &seq in &existing {
        size += std::fs::metadata(segment::segment_path(&dir, seq))?.len();
    }
    let start = match existing.first() {
        Some(&first) if first == ack.segment => ack,
        Some(&first) => Position {
            segment: first,
            offset: 0,
        },
        None => ack,
    };
    let new_segment = existing
        .last()
        .map_or(ack.segment, |last| last + 1)
        .max(ack.segment + u64::from(existing.is_empty() && ack.offset > 0));
    let writer = SegmentWriter::create(&dir, new_segment, segment_size(options.max_size))?;
    let (written, _) = watch::channel(Written {
        at: Position {
            segment: new_segment,
            offset: 0,
        },
        done: false,
    });
    let (size_tx, _) = watch::channel(size);
    metrics.set_state_size("disk_buffer_bytes", size);
    let shared = Arc::new(Shared {
        dir,
        written,
        size: size_tx,
        metrics: Arc::clone(&metrics),
    });
    let queue_metrics = Arc::new(ComponentMetrics::new(
        format!("{name}.buffer"),
        "disk_buffer",
        ComponentKind::Transform,
    ));
    let (input, queue) = buffer(WRITER_QUEUE_EVENTS, WhenFull::Block, queue_metrics);
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let run = {
        let shared = Arc::clone(&shared);
        async move {
            let writing = write_loop(queue, writer, Arc::clone(&shared), options);
            let reading = read_loop(start, Arc::clone(&shared), out, settle_tx);
            let acking = ack_loop(Arc::clone(&shared), settle_rx);
            let ran = tokio::try_join!(writing, reading, acking).map(|_| ());
            drop(lock);
            ran
        }
    };
    Ok((input, Box::pin(run)))
}

/// Segment files of a buffer of `max_size`: small enough that deleting acknowledged ones
/// frees space steadily, large enough that rotation is rare.
fn segment_size(max_size: ByteSize) -> u64 {
    (max_size.0 / 8).clamp(64 << 10, 64 << 20)
}

/// Checks the last segment (the only one a crash can leave half-written: the writer syncs a
/// segment before starting the next) and quarantines a damaged tail, reporting it once.
fn repair_tail(dir: &Path, seq: u64, metrics: &ComponentMetrics) -> std::io::Result<()> {
    let path = segment::segment_path(dir, seq);
    let scan = segment::scan(&path, 0)?;
    if let Some(why) = scan.damage {
        let moved = segment::quarantine_tail(dir, seq, scan.valid_until)?;
        metrics.add_errors("buffer_damaged", 1);
        tracing::error!(
            sink = %metrics.name,
            segment = %path.display(),
            valid_records = scan.records,
            damaged_bytes = moved,
            "the disk buffer's last segment has a damaged tail ({why}); the valid prefix is kept and the rest moved to a .damaged file"
        );
    }
    Ok(())
}

/// The writer's file and position, moved to a blocking thread for each write.
struct SegmentWriter {
    dir: PathBuf,
    file: std::fs::File,
    at: Position,
    segment_size: u64,
    /// Records encoded for the next write, reused.
    encoded: Vec<u8>,
}

impl SegmentWriter {
    fn create(dir: &Path, seq: u64, segment_size: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment::segment_path(dir, seq))?;
        let offset = file.metadata()?.len();
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            file,
            at: Position {
                segment: seq,
                offset,
            },
            segment_size,
            encoded: Vec::new(),
        })
    }

    /// Encodes `events` as records into the write buffer.
    fn encode(&mut self, events: &[Arc<Vec<UnifiedEvent>>]) {
        self.encoded.clear();
        for event in events.iter().flat_map(|batch| batch.iter()) {
            let start = self.encoded.len();
            self.encoded.extend_from_slice(&[0; segment::HEADER]);
            encode_json(event, &mut self.encoded);
            let payload = &self.encoded[start + segment::HEADER..];
            let header = segment::record_header(payload);
            self.encoded[start..start + segment::HEADER].copy_from_slice(&header);
        }
    }

    /// Appends the write buffer whole or not at all.
    fn append(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        if let Err(error) = self.file.write_all(&self.encoded) {
            // Cut a partial write off, so the segment keeps ending on a whole record.
            let _ = self.file.set_len(self.at.offset);
            return Err(error);
        }
        self.at.offset += self.encoded.len() as u64;
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Starts the next segment once this one is full, syncing this one first; true if it did.
    fn rotate_if_full(&mut self) -> std::io::Result<bool> {
        if self.at.offset < self.segment_size {
            return Ok(false);
        }
        self.sync()?;
        let next = SegmentWriter::create(&self.dir, self.at.segment + 1, self.segment_size)?;
        self.file = next.file;
        self.at = next.at;
        Ok(true)
    }
}

/// Runs blocking file work off the async executor, handing the state there and back.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ComponentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ComponentError::runtime(format!("disk buffer thread failed: {e}")))
}

/// Settles `acks` as delivered: their events are durable in the buffer.
fn settle(acks: &mut Vec<AckToken>) {
    for ack in acks.drain(..) {
        ack.ack(BatchStatus::Delivered);
    }
}

/// The writer: queue → records on disk → acknowledgements upstream once durable.
async fn write_loop(
    mut queue: BufferReceiver,
    mut writer: SegmentWriter,
    shared: Arc<Shared>,
    options: DiskOptions,
) -> Result<(), ComponentError> {
    let metrics = Arc::clone(&shared.metrics);
    let io = |what: &str, error: std::io::Error| {
        ComponentError::runtime(format!(
            "disk buffer {}: {what}: {error}",
            shared.dir.display()
        ))
    };
    // Acknowledgements of events written but not yet synced (the `interval` policy).
    let mut unsynced: Vec<AckToken> = Vec::new();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + options.sync_interval,
        options.sync_interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut size = shared.size.subscribe();
    loop {
        let first = tokio::select! {
            batch = queue.recv() => batch,
            _ = tick.tick(), if !unsynced.is_empty() => {
                let (returned, synced) = blocking(move || { let r = writer.sync(); (writer, r) }).await?;
                writer = returned;
                synced.map_err(|e| io("fdatasync", e))?;
                settle(&mut unsynced);
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut group = vec![first];
        let mut events = group[0].len();
        while options.sync != SyncPolicy::Always && events < GROUP_EVENTS {
            let Some(batch) = queue.try_recv() else { break };
            events += batch.len();
            group.push(batch);
        }
        let mut parts = Vec::with_capacity(group.len());
        let mut acks = Vec::new();
        for batch in group {
            let (events, tokens) = batch.into_parts();
            parts.push(events);
            acks.extend(tokens);
        }
        writer = blocking(move || {
            writer.encode(&parts);
            writer
        })
        .await?;
        let need = writer.encoded.len() as u64;
        let max = options.max_size.0;
        let full = |size: &u64| *size > 0 && size + need > max;
        if full(&size.borrow_and_update()) {
            if options.when_full == WhenFull::DropNewest {
                metrics.add_dropped("buffer_full", events);
                for ack in acks {
                    ack.ack(BatchStatus::Dropped);
                }
                continue;
            }
            // Nothing written waits for a sync while the writer waits for room.
            if !unsynced.is_empty() {
                let (returned, synced) = blocking(move || {
                    let r = writer.sync();
                    (writer, r)
                })
                .await?;
                writer = returned;
                synced.map_err(|e| io("fdatasync", e))?;
                settle(&mut unsynced);
            }
            if size.wait_for(|size| !full(size)).await.is_err() {
                return Ok(());
            }
        }
        let mut retry = Backoff::new(Duration::from_millis(100), MAX_RETRY);
        let mut failures = Throttle::new(Duration::from_secs(10));
        let rotated = loop {
            let sync_now = options.sync != SyncPolicy::Interval;
            let (returned, result) = blocking(move || {
                let result = writer
                    .append()
                    .and_then(|()| if sync_now { writer.sync() } else { Ok(()) });
                let result = result.and_then(|()| writer.rotate_if_full());
                (writer, result)
            })
            .await?;
            writer = returned;
            match result {
                Ok(rotated) => break rotated,
                Err(error) => {
                    metrics.add_errors("buffer_write", 1);
                    if let Some(times) = failures.add(1) {
                        tracing::error!(
                            sink = %metrics.name,
                            dir = %shared.dir.display(),
                            %error,
                            times,
                            "cannot write to the disk buffer; holding the events (backpressure) and retrying"
                        );
                    }
                    tokio::time::sleep(retry.next_delay()).await;
                }
            }
        };
        shared.add_size(need as i64);
        shared.written.send_modify(|w| w.at = writer.at);
        acks.append(&mut unsynced);
        if options.sync == SyncPolicy::Interval && !rotated {
            unsynced = acks;
        } else {
            settle(&mut acks);
        }
    }
    let (returned, synced) = blocking(move || {
        let r = writer.sync();
        (writer, r)
    })
    .await?;
    synced.map_err(|e| io("fdatasync", e))?;
    settle(&mut unsynced);
    shared.written.send_modify(|w| {
        w.at = returned.at;
        w.done = true;
    });
    Ok(())
}

/// What the reader tells the acker, in order.
enum Settle {
    /// A batch sent to the sink, ending at `at`.
    Batch { receiver: AckReceiver, at: Position },
    /// Every record of this segment was sent.
    SegmentDone(u64),
}

/// One chunk the reader got from disk.
struct Chunk {
    events: Vec<UnifiedEvent>,
    /// Whether the reader reached the end of a sealed segment.
    segment_ended: bool,
    damage: Option<&'static str>,
    undecodable: usize,
}

/// The reader's open segment.
struct SegmentReader {
    dir: PathBuf,
    at: Position,
    file: Option<RecordReader>,
}

impl SegmentReader {
    /// Reads up to a batch of events, up to `limit` (`None`: the segment is sealed, read to
    /// its end).
    fn read(&mut self, limit: Option<u64>) -> std::io::Result<Chunk> {
        let path = segment::segment_path(&self.dir, self.at.segment);
        let limit = match limit {
            Some(limit) => limit,
            None => match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
                Err(error) => return Err(error),
            },
        };
        let mut chunk = Chunk {
            events: Vec::new(),
            segment_ended: false,
            damage: None,
            undecodable: 0,
        };
        if self.file.is_none() && self.at.offset < limit {
            self.file = Some(RecordReader::open(&path, self.at.offset)?);
        }
        let Some(reader) = self.file.as_mut() else {
            chunk.segment_ended = true;
            return Ok(chunk);
        };
        while chunk.events.len() < READ_BATCH_EVENTS {
            match reader.next(limit)? {
                Record::Valid => match serde_json::from_slice(&reader.payload) {
                    Ok(event) => chunk.events.push(event),
                    Err(_) => chunk.undecodable += 1,
                },
                Record::End => {
                    chunk.segment_ended = true;
                    break;
                }
                Record::Damaged(why) => {
                    chunk.damage = Some(why);
                    chunk.segment_ended = true;
                    break;
                }
            }
        }
        self.at.offset = reader.offset;
        Ok(chunk)
    }
}

/// The reader: disk → the sink's input, a batch at a time, from `start` on.
async fn read_loop(
    start: Position,
    shared: Arc<Shared>,
    out: BufferSender,
    settle: mpsc::UnboundedSender<Settle>,
) -> Result<(), ComponentError> {
    let metrics = Arc::clone(&shared.metrics);
    let mut written = shared.written.subscribe();
    let mut reader = SegmentReader {
        dir: shared.dir.clone(),
        at: start,
        file: None,
    };
    loop {
        let now = *written.borrow_and_update();
        if reader.at.segment == now.at.segment && reader.at.offset >= now.at.offset {
            if now.done {
                break;
            }
            if written.changed().await.is_err() {
                break;
            }
            continue;
        }
        let limit = (reader.at.segment == now.at.segment).then_some(now.at.offset);
        let (returned, chunk) = blocking(move || {
            let chunk = reader.read(limit);
            (reader, chunk)
        })
        .await?;
        reader = returned;
        let chunk = chunk.map_err(|error| {
            ComponentError::runtime(format!(
                "disk buffer {}: cannot read: {error}",
                shared.dir.display()
            ))
        })?;
        if chunk.undecodable > 0 {
            metrics.add_dropped("buffer_undecodable", chunk.undecodable);
            tracing::error!(sink = %metrics.name, records = chunk.undecodable, "disk buffer records with a valid checksum are not events; dropped");
        }
        if let Some(why) = chunk.damage {
            metrics.add_errors("buffer_damaged", 1);
            tracing::error!(
                sink = %metrics.name,
                segment = reader.at.segment,
                offset = reader.at.offset,
                "a disk buffer segment is damaged ({why}); the rest of it is skipped"
            );
        }
        if !chunk.events.is_empty() {
            let (token, receiver) = AckToken::new();
            let _ = settle.send(Settle::Batch {
                receiver,
                at: reader.at,
            });
            if out
                .send(EventBatch::with_ack(chunk.events, token))
                .await
                .is_err()
            {
                // The sink is gone; it reports its own failure, and the events stay on disk.
                return Ok(());
            }
        }
        if chunk.segment_ended && limit.is_none() {
            let _ = settle.send(Settle::SegmentDone(reader.at.segment));
            reader.at = Position {
                segment: reader.at.segment + 1,
                offset: 0,
            };
            reader.file = None;
        }
    }
    Ok(())
}

/// The acker: sink acknowledgements → the recorded position and deleted segments. Nothing past
/// a batch the sink failed is recorded, so it is read again at the next start.
async fn ack_loop(
    shared: Arc<Shared>,
    mut settles: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), ComponentError> {
    let mut failed = false;
    let mut unrecorded = Throttle::new(Duration::from_secs(10));
    while let Some(settle) = settles.recv().await {
        match settle {
            Settle::Batch { receiver, at } => {
                failed |= !receiver.status().await.is_settled();
                if !failed {
                    record(&shared, at, &mut unrecorded);
                }
            }
            Settle::SegmentDone(seq) if !failed => {
                let path = segment::segment_path(&shared.dir, seq);
                let length = std::fs::metadata(&path).map_or(0, |m| m.len());
                match std::fs::remove_file(&path) {
                    Ok(()) => shared.add_size(-(length as i64)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(ComponentError::runtime(format!(
                            "disk buffer: cannot delete the acknowledged segment {}: {error}",
                            path.display()
                        )));
                    }
                }
                record(
                    &shared,
                    Position {
                        segment: seq + 1,
                        offset: 0,
                    },
                    &mut unrecorded,
                );
            }
            Settle::SegmentDone(_) => {}
        }
    }
    Ok(())
}

/// Records the acknowledged position. A failure (a full disk) is counted and logged but not
/// fatal: the next record replaces it, and until then a restart only sends events again.
fn record(shared: &Shared, at: Position, unrecorded: &mut Throttle) {
    if let Err(error) = segment::write_ack(&shared.dir, at) {
        shared.metrics.add_errors("buffer_ack_write", 1);
        if let Some(times) = unrecorded.add(1) {
            tracing::warn!(
                sink = %shared.metrics.name,
                dir = %shared.dir.display(),
                %error,
                times,
                "cannot record the disk buffer's acknowledged position; a restart would send those events again"
            );
        }
    }
}

#[cfg(test)]
mod tests;
