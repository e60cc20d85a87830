//! The `file` source: follows log files the way `tail -F` does, surviving rotation (rename or
//! copy-truncate) and restarts. A reader thread ([`reader`]) finds and reads files; this side
//! decodes their lines with the shared decode pool, sends each batch with an acknowledgement token
//! and checkpoints ([`checkpoint`]) only what every sink has acknowledged, so a restart neither
//! repeats delivered lines nor skips undelivered ones.

mod checkpoint;
mod reader;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::{
    AckToken, BuildContext, ByteSize, ComponentConfig, ComponentError, ComponentFuture,
    ConfigDuration, ERRORS_OUTPUT, EventBatch, Source, SourceContext,
};
use tokio::sync::mpsc;

use self::checkpoint::{FileCheckpoint, Positions, Step, Store};
use self::reader::{Follower, Options, Update};
pub use crate::util::lines::Decoding;
use crate::util::lines::{self, DecodePool, Decoded, LineSettings, Problems};

/// How long the source waits at shutdown for sinks to acknowledge what it sent, so the final
/// checkpoint covers it; whatever is still unacknowledged then is read again by the next run.
const ACK_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to start reading a file that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Read the whole file.
    #[default]
    Beginning,
    /// Only lines appended after the source found the file.
    End,
}

/// Follows files matching glob patterns, one event per line.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Paths or glob patterns (`/var/log/app/*.log`) of the files to read, at least one. New
    /// matching files are picked up every `glob_interval`.
    pub include: Vec<String>,
    /// Glob patterns of paths to leave out even though `include` matches them
    /// (`/var/log/app/*.gz`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where to start in a file without a checkpoint that is there when the source starts:
    /// `"beginning"` or `"end"`. Files that appear later are always read from the beginning, and
    /// a file with a checkpoint resumes from it.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How each line becomes an event: `"json"` reads one `UnifiedEvent` per line (NDJSON);
    /// `"text"` makes each line an `application` event with the line in `raw_data`.
    /// Lines that do not decode are counted and sent to the `errors` output.
    #[serde(default)]
    pub decoding: Decoding,
    /// Longest line kept; longer lines are skipped whole and counted as `oversized_line`
    /// errors.
    #[serde(default = "lines::default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// How often to look for new files matching `include`. A file that no longer matches
    /// (rotated away or deleted) is read to its end and closed once it has been idle for five
    /// of these intervals (or of `poll_interval`, if longer).
    #[serde(default = "default_glob_interval")]
    pub glob_interval: ConfigDuration,
    /// How often to look for appended data once every file has been read to its end.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: ConfigDuration,
    /// How often acknowledged read positions are written to
    /// `<data_dir>/<component name>/checkpoints.json` (also written at shutdown). Shorter
    /// means fewer lines read again after a crash.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: ConfigDuration,
}

fn default_glob_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

fn default_poll_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(250))
}

fn default_checkpoint_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

impl ComponentConfig for FileConfig {
    type Component = dyn Source;
    const NAMED_OUTPUTS: &'static [&'static str] = &[ERRORS_OUTPUT];

    fn uses_data_dir(&self) -> bool {
        true
    }

    /// Checks the options and patterns, and prepares the checkpoint directory (reading the
    /// previous run's checkpoints) so a bad `data_dir` fails before anything runs.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let settings = LineSettings::new(self.decoding, self.max_line_bytes, "file")?;
        if self.include.is_empty() {
            return Err(ComponentError::config(
                "`include` needs at least one path or glob pattern",
            ));
        }
        for pattern in &self.include {
            glob::Pattern::new(pattern).map_err(|error| {
                ComponentError::config(format!(
                    "include pattern {pattern:?} is not a valid glob: {error}"
                ))
            })?;
        }
        let exclude = self
            .exclude
            .iter()
            .map(|pattern| {
                glob::Pattern::new(pattern).map_err(|error| {
                    ComponentError::config(format!(
                        "exclude pattern {pattern:?} is not a valid glob: {error}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (option, interval) in [
            ("glob_interval", self.glob_interval),
            ("poll_interval", self.poll_interval),
            ("checkpoint_interval", self.checkpoint_interval),
        ] {
            if interval.0.is_zero() {
                return Err(ComponentError::config(format!(
                    "`{option}` must be longer than 0"
                )));
            }
        }
        let (store, loaded) = Store::open(&cx.component_dir())?;
        Ok(Box::new(FileSource {
            name: cx.name.clone(),
            settings,
            options: Options {
                include: self.include.clone(),
                exclude,
                read_from: self.read_from,
                glob_interval: self.glob_interval.0,
                poll_interval: self.poll_interval.0,
                max_line: settings.max_line,
                resume: loaded
                    .iter()
                    .map(|entry| (entry.key(), entry.offset))
                    .collect(),
            },
            checkpoint_interval: self.checkpoint_interval.0,
            store,
            loaded,
        }))
    }
}

/// A file as the kernel knows it, whatever its name: rotation renames it, the key stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FileKey {
    dev: u64,
    inode: u64,
}

impl FileKey {
    fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

struct FileSource {
    name: String,
    settings: LineSettings,
    options: Options,
    checkpoint_interval: Duration,
    store: Store,
    loaded: Vec<FileCheckpoint>,
}

/// What a decode job was for: lines of a file, or a position change keeping its place in line.
enum ChunkOrigin {
    Lines { key: FileKey, path: Arc<Path> },
    Step(Step),
}

impl Source for FileSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(self.follow(cx))
    }
}

impl FileSource {
    async fn follow(self, cx: SourceContext) -> Result<(), ComponentError> {
        let SourceContext {
            mut out,
            mut shutdown,
            metrics,
        } = cx;
        let mut pool = DecodePool::new(self.settings, out.has_output(ERRORS_OUTPUT));
        let (tx, mut rx) = mpsc::channel(lines::decode_depth());
        let follower = Follower::new(self.options, tx);
        std::thread::Builder::new()
            .name(format!("tapio-file-{}", self.name))
            .spawn(move || follower.run())
            .map_err(|error| {
                ComponentError::runtime(format!("cannot start the file reader: {error}"))
            })?;
        let mut positions = Positions::new(self.loaded);
        let mut ticker = tokio::time::interval(self.checkpoint_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut problems = Problems::default();
        let mut failure = None;
        loop {
            tokio::select! {
                biased;
                () = shutdown.triggered() => break,
                Some(job) = pool.next(), if !pool.is_empty() => {
                    let (mut decoded, job) = match job {
                        Ok(done) => done,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    };
                    match job {
                        ChunkOrigin::Lines { key, path } => {
                            let origin = path.to_string_lossy();
                            problems.report(&mut decoded, &origin, &mut out, &metrics).await;
                            if send_tracked(&mut out, &mut positions, key, decoded).await.is_err() {
                                break;
                            }
                        }
                        ChunkOrigin::Step(step) => positions.step(step),
                    }
                }
                update = rx.recv(), if pool.has_room() => match update {
                    Some(Update::Lines { key, path, framed }) => {
                        pool.push(Some(framed), ChunkOrigin::Lines { key, path });
                    }
                    Some(Update::Step(step)) => pool.push(None, ChunkOrigin::Step(step)),
                    None => {
                        failure = Some(ComponentError::runtime("the file reader thread stopped"));
                        break;
                    }
                },
                _ = ticker.tick() => {
                    positions.settle();
                    self.store.save(&mut positions).await;
                }
            }
        }
        // Read nothing more, send nothing more, and let go of the outputs so sinks can drain and
        // settle what was sent; then checkpoint what they acknowledged.
        drop((rx, pool, out));
        drain_acks(&mut positions, &self.store, &mut ticker).await;
        self.store.save(&mut positions).await;
        problems.flush(&self.name);
        failure.map_or(Ok(()), Err)
    }
}

/// Sends a chunk's batches, each with an acknowledgement token, and records them for the
/// checkpoint. `Err` means nothing reads the output any more.
async fn send_tracked(
    out: &mut tapio_event::Outputs,
    positions: &mut Positions,
    key: FileKey,
    decoded: Decoded,
) -> Result<(), tapio_event::buffer::Closed> {
    if decoded.batches.is_empty() {
        positions.sent(key, decoded.end, None);
    }
    for batch in decoded.batches {
        let (token, ack) = AckToken::new();
        let sent = out.send(EventBatch::with_ack(batch.events, token)).await;
        positions.sent(key, batch.end, Some(ack));
        sent?;
    }
    Ok(())
}

/// Waits, up to [`ACK_DRAIN_TIMEOUT`], for the acknowledgements of everything sent, saving
/// progress along the way in case the runtime gives up on the source first.
async fn drain_acks(positions: &mut Positions, store: &Store, ticker: &mut tokio::time::Interval) {
    let deadline = tokio::time::sleep(ACK_DRAIN_TIMEOUT);
    tokio::pin!(deadline);
    while positions.is_waiting() {
        tokio::select! {
            () = positions.settle_next() => {}
            _ = ticker.tick() => store.save(positions).await,
            () = &mut deadline => {
                tracing::warn!(
                    timeout = ?ACK_DRAIN_TIMEOUT,
                    "sinks did not acknowledge everything in time; unacknowledged lines will be \
                     read again on the next start"
                );
                return;
            }
        }
    }
}
