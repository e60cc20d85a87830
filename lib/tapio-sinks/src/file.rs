//! `file`: appends NDJSON events to files named by a template (`/var/log/tapio/%Y-%m-%d.ndjson`,
//! `{{ entity.namespace }}.ndjson`), creating directories as needed. Encoding and writing run on
//! blocking threads, as a two-stage pipeline: while one batch is being written (writes can sleep
//! in the kernel when the page cache pushes back), the next one is being encoded, and a slow disk
//! never stalls the async executor. A failed write is rolled back
//! to the file's previous length and retried with backoff, so a retry never duplicates or tears a
//! line, and the batch is acknowledged only once every line of it is written.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::codec::encode_json;
use tapio_event::template::Template;
use tapio_event::{
    AckToken, BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError,
    ComponentFuture, ComponentMetrics, ConfigDuration, Sink, SinkContext, UnifiedEvent,
};

use tokio::sync::mpsc;

use crate::util::dead_letter::DeadLetter;
use crate::util::pool::BufferPool;
use crate::util::retry::sink_backoff;

fn default_idle_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

/// Options of the `file` sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file each event is appended to, e.g. `"/var/log/tapio/{{ source }}/%Y-%m-%d.ndjson"`;
    /// directories are created as needed. An event lacking a field the template references is
    /// counted as a `template` error and goes to the dead-letter file
    /// `<data_dir>/dead_letter/<sink>.ndjson` with the reason.
    pub path: Template,
    /// Close a file nobody wrote to for this long; it is reopened on demand.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// Make each batch durable (`fdatasync` of every file it went to) before acknowledging it,
    /// so a `file` → `file` pipeline loses nothing on power loss, not only on a crash. Costs a
    /// disk flush per batch and file. A failed flush stops the sink (exit 70): the kernel may
    /// have dropped the data, so the batch stays unacknowledged and is read again.
    #[serde(default)]
    pub fsync: bool,
}

impl ComponentConfig for FileSinkConfig {
    type Component = dyn Sink;

    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        if self.path.is_static() {
            let mut path = String::new();
            let probe =
                UnifiedEvent::new(tapio_event::EventType::Application, "", Default::default());
            let _ = self.path.render_into(&probe, &mut path);
            if let Some(parent) = Path::new(&path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    ComponentError::unavailable(format!(
                        "cannot create directory {}: {e}",
                        parent.display()
                    ))
                })?;
            }
        }
        let spare = BufferPool::new(MAX_SPARE_BUFFERS);
        Ok(Box::new(FileSink {
            dead_letter: DeadLetter::new(&cx.data_dir, &cx.name),
            encoder: Encoder {
                path: self.path.clone(),
                spare: spare.clone(),
            },
            files: OpenFiles {
                idle_timeout: self.idle_timeout.0,
                open: HashMap::new(),
                spare,
                fsync: self.fsync,
            },
        }))
    }
}

struct FileSink {
    /// Where events whose path cannot be rendered go.
    dead_letter: DeadLetter,
    encoder: Encoder,
    files: OpenFiles,
}

struct OpenFile {
    file: File,
    last_write: Instant,
}

/// Spare encode buffers kept; a few batches are in flight between the stages at most.
const MAX_SPARE_BUFFERS: usize = 8;

/// The encoding stage: renders each event's path and serialises it.
struct Encoder {
    path: Template,
    spare: BufferPool<Vec<u8>>,
}

/// The writing stage's state: the files it keeps open.
struct OpenFiles {
    idle_timeout: Duration,
    open: HashMap<PathBuf, OpenFile>,
    spare: BufferPool<Vec<u8>>,
    /// Whether what each attempt wrote is synced to disk before its batch is acknowledged.
    fsync: bool,
}

/// One batch, encoded: its lines by file, and the events rejected with their reason.
struct Encoded {
    writes: Vec<PendingWrite>,
    rejected: Vec<(String, String)>,
}

/// The encoded lines of one batch bound for one file.
struct PendingWrite {
    path: PathBuf,
    bytes: Vec<u8>,
    events: usize,
}

impl Encoder {
    /// Groups the batch's events by destination and encodes them; events whose path cannot be
    /// rendered are counted as `template` errors and returned, encoded with their reason, for
    /// the dead-letter file.
    fn encode(&self, events: &[UnifiedEvent], metrics: &ComponentMetrics) -> Encoded {
        let mut pending: Vec<PendingWrite> = Vec::new();
        let mut rejected = Vec::new();
        let mut rendered = String::new();
        let mut missing = 0;
        for event in events {
            rendered.clear();
            if let Err(field) = self.path.render_into(event, &mut rendered) {
                missing += 1;
                if missing == 1 {
                    tracing::warn!(sink = %metrics.name, field, "event lacks a field the path template needs; sent to the dead-letter file");
                }
                let mut json = Vec::new();
                encode_json(event, &mut json);
                rejected.push((
                    format!("the path template needs {field}, which the event lacks"),
                    String::from_utf8(json).expect("JSON is UTF-8"),
                ));
                continue;
            }
            let index = match pending
                .iter()
                .position(|p| p.path.as_os_str() == rendered.as_str())
            {
                Some(index) => index,
                None => {
                    pending.push(PendingWrite {
                        path: PathBuf::from(&rendered),
                        bytes: self.spare.take().unwrap_or_default(),
                        events: 0,
                    });
                    pending.len() - 1
                }
            };
            let target = &mut pending[index];
            encode_json(event, &mut target.bytes);
            target.bytes.push(b'\n');
            target.events += 1;
        }
        metrics.add_errors("template", missing);
        Encoded {
            writes: pending,
            rejected,
        }
    }
}

impl OpenFiles {
    /// Appends `write` whole or not at all: on failure the file is cut back to its old length.
    fn append(&mut self, write: &PendingWrite) -> std::io::Result<()> {
        if !self.open.contains_key(&write.path) {
            if let Some(parent) = write.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&write.path)?;
            self.open.insert(
                write.path.clone(),
                OpenFile {
                    file,
                    last_write: Instant::now(),
                },
            );
        }
        let entry = self.open.get_mut(&write.path).expect("opened above");
        let before = entry.file.metadata()?.len();
        if let Err(error) = entry.file.write_all(&write.bytes) {
            let _ = entry.file.set_len(before);
            self.open.remove(&write.path);
            return Err(error);
        }
        entry.last_write = Instant::now();
        Ok(())
    }

    /// Closes files idle for longer than `idle_timeout`.
    fn close_idle(&mut self) {
        let timeout = self.idle_timeout;
        self.open.retain(|_, f| f.last_write.elapsed() < timeout);
    }

    /// Syncs the data of `paths`, files this attempt wrote (still open: idle files are closed
    /// only after the sync), to disk.
    fn sync(&self, paths: &[PathBuf]) -> Result<(), String> {
        for path in paths {
            if let Some(open) = self.open.get(path) {
                open.file
                    .sync_data()
                    .map_err(|error| format!("{}: {error}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable; called once input has ended.
    fn sync_all(&mut self) {
        for (path, open) in self.open.drain() {
            if let Err(error) = open.file.sync_data() {
                tracing::warn!(path = %path.display(), %error, "could not sync file on shutdown");
            }
        }
    }
}

/// What one attempt at writing a batch's pending lines achieved.
struct Attempt {
    left: Vec<PendingWrite>,
    written_events: usize,
    written_bytes: usize,
    error: Option<String>,
    /// Syncing what was written failed: the data may be lost, and retrying cannot tell.
    sync_failed: Option<String>,
}

impl OpenFiles {
    /// Appends pending writes in order until one fails; the failed one and the rest are left.
    fn attempt(&mut self, pending: Vec<PendingWrite>) -> Attempt {
        let mut attempt = Attempt {
            left: Vec::new(),
            written_events: 0,
            written_bytes: 0,
            error: None,
            sync_failed: None,
        };
        let mut written_paths: Vec<PathBuf> = Vec::new();
        for write in pending {
            if attempt.error.is_none() {
                match self.append(&write) {
                    Ok(()) => {
                        attempt.written_events += write.events;
                        attempt.written_bytes += write.bytes.len();
                        if !written_paths.contains(&write.path) {
                            written_paths.push(write.path.clone());
                        }
                        self.spare.give(write.bytes);
                        continue;
                    }
                    Err(e) => attempt.error = Some(format!("{}: {e}", write.path.display())),
                }
            }
            attempt.left.push(write);
        }
        if self.fsync {
            attempt.sync_failed = self.sync(&written_paths).err();
        }
        self.close_idle();
        attempt
    }
}

/// Runs blocking file work off the async executor, handing the state there and back.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ComponentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ComponentError::runtime(format!("file writer thread failed: {e}")))
}

/// A batch, encoded, and the acknowledgements to settle once it is written.
type EncodedBatch = (Encoded, Vec<AckToken>);

/// Batches encoded ahead of the writer; two keep both stages busy without holding much memory.
const ENCODED_AHEAD: usize = 2;

impl Sink for FileSink {
    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            let metrics = cx.metrics;
            let FileSink {
                dead_letter,
                mut encoder,
                mut files,
            } = *self;
            let (to_writer, mut encoded) = mpsc::channel::<EncodedBatch>(ENCODED_AHEAD);
            let encode_metrics = Arc::clone(&metrics);
            let encoding = async move {
                while let Some(batch) = input.recv().await {
                    let (events, acks) = batch.into_parts();
                    let m = Arc::clone(&encode_metrics);
                    let (returned, pending) = run_blocking(move || {
                        let pending = encoder.encode(&events, &m);
                        (encoder, pending)
                    })
                    .await?;
                    encoder = returned;
                    if to_writer.send((pending, acks)).await.is_err() {
                        break;
                    }
                }
                Ok::<_, ComponentError>(())
            };
            let writing = async move {
                while let Some((batch, acks)) = encoded.recv().await {
                    files = write_until_done(files, batch.writes, &metrics).await?;
                    for (reason, json) in &batch.rejected {
                        dead_letter.write(reason, json).await?;
                    }
                    for ack in acks {
                        ack.ack(BatchStatus::Delivered);
                    }
                }
                run_blocking(move || files.sync_all()).await
            };
            let (encoded, written) = tokio::join!(encoding, writing);
            encoded.and(written)
        })
    }
}

/// Writes `pending`, retrying failures with capped backoff until every line is written.
async fn write_until_done(
    mut files: OpenFiles,
    mut pending: Vec<PendingWrite>,
    metrics: &ComponentMetrics,
) -> Result<OpenFiles, ComponentError> {
    let mut backoff = sink_backoff();
    loop {
        let (returned, attempt) = run_blocking(move || {
            let attempt = files.attempt(pending);
            (files, attempt)
        })
        .await?;
        files = returned;
        metrics.add_events_out(attempt.written_events);
        metrics.add_bytes_out(attempt.written_bytes);
        if let Some(error) = attempt.sync_failed {
            metrics.add_errors("sync", 1);
            return Err(ComponentError::runtime(format!(
                "fdatasync failed ({error}); the batch stays unacknowledged so it is read again"
            )));
        }
        let Some(error) = attempt.error else {
            return Ok(files);
        };
        pending = attempt.left;
        let delay = backoff.next_delay();
        metrics.add_errors("write", 1);
        tracing::warn!(sink = %metrics.name, %error, retry_in = ?delay, "write failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::buffer::buffer;
    use tapio_event::metrics::ComponentKind;
    use tapio_event::{AckToken, EventBatch, EventType, Timestamp, WhenFull};

    fn event(namespace: &str, day: u32) -> UnifiedEvent {
        let mut e = UnifiedEvent::new(
            EventType::Kubernetes,
            "kubernetes",
            Timestamp::from_civil(2026, 11, day, 12, 0, 0, 0).unwrap(),
        );
        let mut entity = tapio_event::Entity::new(tapio_event::EntityType::Pod, "uid");
        entity.namespace = (!namespace.is_empty()).then(|| namespace.to_string());
        e.entity = Some(Box::new(entity));
        e
    }

    /// The sink of `config` running on a buffer the test sends into.
    fn start(
        config: &FileSinkConfig,
        data_dir: &Path,
    ) -> (
        tapio_event::BufferSender,
        tokio::task::JoinHandle<Result<(), ComponentError>>,
        Arc<ComponentMetrics>,
    ) {
        let cx = BuildContext {
            name: "out".into(),
            data_dir: data_dir.to_path_buf(),
            node_name: "n".into(),
        };
        let sink = config.build(&cx).unwrap();
        let metrics = Arc::new(ComponentMetrics::new("out", "file", ComponentKind::Sink));
        let (tx, rx) = buffer(100, WhenFull::Block, Arc::clone(&metrics));
        let task = tokio::spawn(sink.run(
            rx,
            SinkContext {
                metrics: Arc::clone(&metrics),
            },
        ));
        (tx, task, metrics)
    }

    #[tokio::test]
    async fn routes_by_template_and_acks_after_writing() {
        let dir = tempfile::tempdir().unwrap();
        let config: FileSinkConfig = serde_json::from_value(serde_json::json!({
            "path": format!("{}/{{{{ entity.namespace }}}}/%Y-%m-%d.ndjson", dir.path().display())
        }))
        .unwrap();
        let (tx, task, metrics) = start(&config, dir.path());
        let (token, ack) = AckToken::new();
        let events = vec![
            event("shop", 27),
            event("shop", 28),
            event("pay", 27),
            event("", 27),
        ];
        tx.send(EventBatch::with_ack(events, token)).await.unwrap();
        assert_eq!(ack.status().await, BatchStatus::Delivered);
        drop(tx);
        task.await.unwrap().unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("shop/2026-11-27.ndjson").lines().count(), 1);
        assert_eq!(read("shop/2026-11-28.ndjson").lines().count(), 1);
        assert_eq!(read("pay/2026-11-27.ndjson").lines().count(), 1);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.events_out, 3);
        assert_eq!(snapshot.errors.get("template"), Some(&1));
        let dead = std::fs::read_to_string(dir.path().join("dead_letter/out.ndjson")).unwrap();
        let record: serde_json::Value = serde_json::from_str(dead.trim()).unwrap();
        assert!(
            record["reason"]
                .as_str()
                .unwrap()
                .contains("entity.namespace"),
            "{record}"
        );
        assert_eq!(record["event"]["source"], "kubernetes");
    }

    #[test]
    fn failed_append_leaves_no_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.ndjson");
        std::fs::write(&target, "existing\n").unwrap();
        let mut files = OpenFiles {
            idle_timeout: Duration::from_secs(30),
            open: HashMap::new(),
            spare: BufferPool::new(MAX_SPARE_BUFFERS),
            fsync: false,
        };
        // Opening a directory as the target fails; the retry list keeps the whole write.
        let bad = PendingWrite {
            path: dir.path().to_path_buf(),
            bytes: b"x\n".to_vec(),
            events: 1,
        };
        let good = PendingWrite {
            path: target.clone(),
            bytes: b"y\n".to_vec(),
            events: 1,
        };
        let attempt = files.attempt(vec![good, bad]);
        assert_eq!(attempt.written_events, 1);
        assert_eq!(attempt.left.len(), 1);
        assert!(attempt.error.is_some());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "existing\ny\n");
    }

    /// `/dev/null` takes any write but refuses `fdatasync` (EINVAL): with `fsync` the sink
    /// must sync and so fail, leaving the batch unacknowledged; without it the batch is
    /// written and acknowledged.
    #[tokio::test]
    async fn fsync_syncs_before_acknowledging_and_a_failed_sync_stops_the_sink() {
        for fsync in [false, true] {
            let config: FileSinkConfig = serde_json::from_value(serde_json::json!({
                "path": "/dev/null",
                "fsync": fsync,
            }))
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let (tx, task, _) = start(&config, dir.path());
            let (token, ack) = AckToken::new();
            tx.send(EventBatch::with_ack(vec![event("shop", 27)], token))
                .await
                .unwrap();
            drop(tx);
            let outcome = task.await.unwrap();
            if fsync {
                let error = outcome.expect_err("a failed sync stops the sink");
                assert!(error.message().contains("fdatasync failed"), "{error}");
                assert_eq!(ack.status().await, BatchStatus::Failed);
            } else {
                outcome.unwrap();
                assert_eq!(ack.status().await, BatchStatus::Delivered);
            }
        }
    }
}
