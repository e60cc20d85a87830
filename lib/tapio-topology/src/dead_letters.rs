//! `tapio dead-letter`: what sinks rejected for good, counted per sink, and sent again through
//! the sink once the cause is fixed (a topic created, a column added). A replay moves the file
//! aside first, so what the sink rejects again lands in a fresh dead-letter file, and deletes
//! the moved file only once the sink has acknowledged every event of it: interrupted or failed,
//! a replay loses nothing and can simply be run again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tapio_event::buffer::buffer;
use tapio_event::{
    AckReceiver, AckToken, BuildContext, ComponentError, ComponentFuture, ComponentKind,
    ComponentMetrics, EventBatch, Fanout, Outputs, Source, SourceContext, UnifiedEvent,
};
use tapio_sinks::{dead_letter_dir, dead_letter_path};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::health::Health;
use crate::running::{BuiltSink, BuiltSource, ComponentFailure, Outcome, Topology};

/// One sink's dead-letter events: its file, and the file of a replay that was interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterFile {
    pub sink: String,
    /// Its dead-letter file (which may not exist when only an interrupted replay's does).
    pub path: PathBuf,
    /// Rejected events (lines) in both files.
    pub events: usize,
    pub bytes: u64,
    /// Whether the config still has a sink of that name (a stale file can only be read).
    pub configured: bool,
}

/// Suffix of the file a replay moves the dead letters to while it sends them.
const REPLAYING: &str = ".replaying";

/// Every sink with dead letters under the config's `data_dir`, configured sinks first.
pub fn list(config: &Config) -> std::io::Result<Vec<DeadLetterFile>> {
    let entries = match std::fs::read_dir(dead_letter_dir(&config.data_dir)) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut by_sink: BTreeMap<String, DeadLetterFile> = BTreeMap::new();
    for entry in entries {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".ndjson"))
        else {
            continue;
        };
        let sink = stem.strip_suffix(REPLAYING).unwrap_or(stem).to_owned();
        let text = std::fs::read(&path)?;
        let file = by_sink
            .entry(sink.clone())
            .or_insert_with(|| DeadLetterFile {
                path: dead_letter_path(&config.data_dir, &sink),
                configured: config.sinks.iter().any(|s| s.name == sink),
                sink,
                events: 0,
                bytes: 0,
            });
        file.events += count_lines(&text);
        file.bytes += text.len() as u64;
    }
    let mut files: Vec<DeadLetterFile> = by_sink.into_values().collect();
    files.sort_by_key(|file| !file.configured);
    Ok(files)
}

/// Why a replay could not run or finish.
#[derive(Debug)]
pub enum ReplayError {
    /// No sink of that name in the config; lists the ones there are.
    UnknownSink { sink: String, known: Vec<String> },
    /// The dead-letter file could not be read or moved.
    Io(PathBuf, std::io::Error),
    /// The sink could not be built or started, or failed while replaying; the events not
    /// acknowledged stay in the moved file for the next replay.
    Sink(Vec<ComponentFailure>),
    /// The replay did not finish within the grace period, or was stopped.
    Unfinished(PathBuf),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::UnknownSink { sink, known } => write!(
                f,
                "no sink named {sink:?} in the config; its sinks: {}",
                known.join(", ")
            ),
            ReplayError::Io(path, error) => write!(f, "{}: {error}", path.display()),
            ReplayError::Sink(failures) => {
                let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
                write!(f, "{}", failures.join("; "))
            }
            ReplayError::Unfinished(path) => write!(
                f,
                "the replay did not finish; the events not acknowledged stay in {} for the next one",
                path.display()
            ),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events sent through the sink.
    pub replayed: usize,
    /// Of those, events the sink rejected again (back in its dead-letter file).
    pub rejected_again: usize,
    /// Lines that were not a dead-letter record, copied back unchanged.
    pub unreadable: usize,
    /// The dead-letter file, holding what was rejected again.
    pub path: PathBuf,
}

/// Sends the events of sink `sink`'s dead-letter file through that sink again, until `stop`.
pub async fn replay(
    config: &Config,
    sink: &str,
    stop: impl Future<Output = ()>,
) -> Result<ReplayReport, ReplayError> {
    let Some(component) = config.sinks.iter().find(|s| s.name == sink) else {
        return Err(ReplayError::UnknownSink {
            sink: sink.to_owned(),
            known: config.sinks.iter().map(|s| s.name.clone()).collect(),
        });
    };
    let path = dead_letter_path(&config.data_dir, sink);
    let replaying = dead_letter_path(&config.data_dir, &format!("{sink}{REPLAYING}"));
    // A file left by an interrupted replay is replayed first; the current one waits for the
    // next run.
    if !replaying.exists() {
        match std::fs::rename(&path, &replaying) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ReplayReport {
                    replayed: 0,
                    rejected_again: 0,
                    unreadable: 0,
                    path,
                });
            }
            Err(error) => return Err(ReplayError::Io(path, error)),
        }
    }
    let context = BuildContext {
        name: component.name.clone(),
        data_dir: config.data_dir.clone(),
        node_name: config.node_name.clone(),
    };
    let built = component.config.build(&context).map_err(|error| {
        ReplayError::Sink(vec![ComponentFailure::new(
            ComponentKind::Sink,
            sink,
            error,
        )])
    })?;
    let sink_metrics = Arc::new(ComponentMetrics::new(
        sink,
        component.config.type_name(),
        ComponentKind::Sink,
    ));
    let source_metrics = Arc::new(ComponentMetrics::new(
        "dead-letter-replay",
        "dead_letter",
        ComponentKind::Source,
    ));
    let (tx, rx) = buffer(
        component.buffer.max_events,
        component.buffer.when_full,
        Arc::clone(&sink_metrics),
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let topology = Topology::from_parts(
        vec![BuiltSource {
            source: Box::new(ReplaySource {
                path: replaying.clone(),
                dead_letter: path.clone(),
                tally: Arc::clone(&tally),
            }),
            outputs: Outputs::new(
                Fanout::new(vec![tx]),
                Vec::new(),
                Arc::clone(&source_metrics),
            ),
            metrics: source_metrics,
        }],
        vec![BuiltSink {
            sink: built,
            input: rx,
            metrics: Arc::clone(&sink_metrics),
        }],
        config.shutdown_grace_period,
    );
    let rejected_before = lines_in(&path);
    match topology.run(stop, &Health::default()).await {
        Outcome::Completed => {}
        Outcome::Failed(failures) => return Err(ReplayError::Sink(failures)),
        Outcome::DrainTimedOut(_) => return Err(ReplayError::Unfinished(replaying)),
    }
    let tally = *tally.lock().unwrap_or_else(|p| p.into_inner());
    if !tally.all_settled || tally.stopped {
        return Err(ReplayError::Unfinished(replaying));
    }
    std::fs::remove_file(&replaying).map_err(|error| ReplayError::Io(replaying, error))?;
    Ok(ReplayReport {
        replayed: tally.replayed,
        rejected_again: lines_in(&path).saturating_sub(rejected_before + tally.unreadable),
        unreadable: tally.unreadable,
        path,
    })
}

/// Lines in `path`, 0 when it does not exist.
fn lines_in(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |text| count_lines(&text))
}

/// Non-empty lines in `text`.
fn count_lines(text: &[u8]) -> usize {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
}

/// What the replay source saw, for the report.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    replayed: usize,
    unreadable: usize,
    /// Every batch was acknowledged (delivered, or rejected into the dead-letter file).
    all_settled: bool,
    /// Shutdown cut the replay short.
    stopped: bool,
}

/// Reads the moved dead-letter file and sends its events, each batch with an acknowledgement,
/// then waits for all of them.
struct ReplaySource {
    path: PathBuf,
    /// Where lines that are not dead-letter records go back to.
    dead_letter: PathBuf,
    tally: Arc<Mutex<Tally>>,
}

/// Events per replayed batch.
const REPLAY_BATCH: usize = 1000;

impl Source for ReplaySource {
    fn run(self: Box<Self>, mut cx: SourceContext) -> ComponentFuture {
        Box::pin(async move {
            let io = |error: std::io::Error| {
                ComponentError::unavailable(format!("{}: {error}", self.path.display()))
            };
            let file = tokio::fs::File::open(&self.path).await.map_err(io)?;
            let mut lines = tokio::io::BufReader::new(file).lines();
            let mut receivers: Vec<AckReceiver> = Vec::new();
            let mut batch: Vec<UnifiedEvent> = Vec::new();
            let mut unreadable: Vec<String> = Vec::new();
            let (mut replayed, mut stopped) = (0, false);
            loop {
                let line = tokio::select! {
                    line = lines.next_line() => line.map_err(io)?,
                    () = cx.shutdown.triggered() => { stopped = true; None }
                };
                let end = line.is_none();
                if let Some(line) = line.filter(|l| !l.trim().is_empty()) {
                    match record_event(&line) {
                        Some(event) => batch.push(event),
                        None => unreadable.push(line),
                    }
                }
                if batch.len() >= REPLAY_BATCH || (end && !batch.is_empty()) {
                    replayed += batch.len();
                    let (token, receiver) = AckToken::new();
                    receivers.push(receiver);
                    let events = std::mem::take(&mut batch);
                    if cx
                        .out
                        .send(EventBatch::with_ack(events, token))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                if end {
                    break;
                }
            }
            restore(&self.dead_letter, &unreadable).await.map_err(io)?;
            let mut all_settled = true;
            for receiver in receivers {
                all_settled &= receiver.status().await.is_settled();
            }
            *self.tally.lock().unwrap_or_else(|p| p.into_inner()) = Tally {
                replayed,
                unreadable: unreadable.len(),
                all_settled,
                stopped,
            };
            Ok(())
        })
    }
}

/// The event of one dead-letter line, `None` when the line is not such a record.
fn record_event(line: &str) -> Option<UnifiedEvent> {
    let mut record: serde_json::Value = serde_json::from_str(line).ok()?;
    serde_json::from_value(record.get_mut("event")?.take()).ok()
}

/// Appends `lines` unchanged to the dead-letter file, so a line no replay can read is kept.
async fn restore(dead_letter: &Path, lines: &[String]) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dead_letter)
        .await?;
    for line in lines {
        file.write_all(line.as_bytes()).await?;
        file.write_all(b"\n").await?;
    }
    file.sync_data().await
}
