//! The thread that finds and follows files: it globs for files every `glob_interval`, reads every
//! open file a chunk at a time (one chunk per file per round, so a busy file does not starve the
//! others), sleeps `poll_interval` when all are at their end, and tells the async side what it
//! read and where each file's reading starts, in order, through a bounded channel (which is also
//! its backpressure). Files are known by (device, inode), so a rotated file keeps being read to
//! its end under its new name while the new file at the old path is picked up by the next glob.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glob::Pattern;
use tokio::sync::mpsc;

use super::checkpoint::Step;
use super::{FileKey, ReadFrom};
use crate::util::lines::problems::WARN_EVERY;
use crate::util::lines::{Framed, LineBuffer, READ_CHUNK};
use tapio_event::throttle::Throttle;

/// A file that no longer matches `include` is closed once it has been at its end this many
/// glob (or poll, if longer) intervals: long enough for a writer to finish with a rotated file.
const IDLE_ROUNDS_BEFORE_CLOSE: u32 = 5;

/// What the reader tells the async side, in the order it happened.
pub(super) enum Update {
    /// Complete lines read from the file `key`, found at `path`.
    Lines {
        key: FileKey,
        path: Arc<Path>,
        framed: Framed,
    },
    /// A change of where a file is read from, for the checkpoint.
    Step(Step),
}

/// The async side has stopped listening.
struct Stopped;

/// Everything the reader needs, fixed when the source starts.
pub(super) struct Options {
    pub include: Vec<String>,
    pub exclude: Vec<Pattern>,
    pub read_from: ReadFrom,
    pub glob_interval: Duration,
    pub poll_interval: Duration,
    pub max_line: usize,
    /// Offsets of the previous run's checkpoint, by file.
    pub resume: HashMap<FileKey, u64>,
}

struct Watched {
    path: Arc<Path>,
    file: File,
    lines: LineBuffer,
    /// Found by the latest glob.
    matched: bool,
    /// At its end since then (it has been read up to its size).
    idle_since: Option<Instant>,
    /// A read failed and was reported; reported again only after a success.
    failing: bool,
}

/// Follows the files of one `file` source until the async side goes away.
pub(super) struct Follower {
    options: Options,
    files: BTreeMap<FileKey, Watched>,
    tx: mpsc::Sender<Update>,
    scan_problems: Throttle,
}

impl Follower {
    /// A follower sending what it reads to `tx`.
    pub fn new(options: Options, tx: mpsc::Sender<Update>) -> Self {
        Follower {
            options,
            files: BTreeMap::new(),
            tx,
            scan_problems: Throttle::new(WARN_EVERY),
        }
    }

    /// Runs on its own thread until the receiving side is dropped.
    pub fn run(mut self) {
        let _ = self.follow();
    }

    fn follow(&mut self) -> Result<(), Stopped> {
        self.scan(true)?;
        // Offsets of files the first scan did not find are stale: a file appearing later under a
        // reused inode is a new file.
        self.options.resume.clear();
        send(&self.tx, Update::Step(Step::Scanned))?;
        let mut next_scan = Instant::now() + self.options.glob_interval;
        loop {
            let mut busy = false;
            for (key, watched) in &mut self.files {
                busy |= read_once(*key, watched, &self.tx)?;
            }
            if Instant::now() >= next_scan {
                self.scan(false)?;
                self.close_idle()?;
                next_scan = Instant::now() + self.options.glob_interval;
            }
            if !busy {
                if self.tx.is_closed() {
                    return Err(Stopped);
                }
                let until_scan = next_scan.saturating_duration_since(Instant::now());
                std::thread::sleep(self.options.poll_interval.min(until_scan));
            }
        }
    }

    /// Looks for files matching `include` and not `exclude`, opening the new ones.
    fn scan(&mut self, first: bool) -> Result<(), Stopped> {
        for watched in self.files.values_mut() {
            watched.matched = false;
        }
        let mut problems = 0;
        let mut last_problem = String::new();
        let mut paths = Vec::new();
        for pattern in &self.options.include {
            let Ok(entries) = glob::glob(pattern) else {
                continue;
            };
            for entry in entries {
                match entry {
                    Ok(path) if !self.options.exclude.iter().any(|p| p.matches_path(&path)) => {
                        paths.push(path);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        problems += 1;
                        last_problem = error.to_string();
                    }
                }
            }
        }
        for path in paths {
            if let Err(problem) = self.discover(path, first)? {
                problems += 1;
                last_problem = problem;
            }
        }
        if let Some(count) = self.scan_problems.add(problems) {
            tracing::warn!(
                count,
                last_problem,
                "cannot look at some files matching `include`"
            );
        }
        Ok(())
    }

    /// Starts following `path` unless it is already followed or not a regular file. The inner
    /// error says why the file cannot be followed.
    fn discover(&mut self, path: PathBuf, first: bool) -> Result<Result<(), String>, Stopped> {
        let opened = File::open(&path).and_then(|file| Ok((file.metadata()?, file)));
        let (metadata, mut file) = match opened {
            Ok(opened) => opened,
            Err(error) => return Ok(Err(format!("{}: {error}", path.display()))),
        };
        if !metadata.is_file() {
            return Ok(Ok(()));
        }
        let key = FileKey::of(&metadata);
        if let Some(watched) = self.files.get_mut(&key) {
            watched.matched = true;
            if *watched.path != *path {
                watched.path = path.into();
            }
            return Ok(Ok(()));
        }
        let size = metadata.len();
        let offset = match self.options.resume.remove(&key) {
            Some(offset) if offset <= size => offset,
            Some(offset) => {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    size,
                    "file is shorter than its checkpoint (truncated while stopped?); reading it \
                     from the start"
                );
                0
            }
            None if first && self.options.read_from == ReadFrom::End => size,
            None => 0,
        };
        if let Err(error) = file.seek(SeekFrom::Start(offset)) {
            return Ok(Err(format!("{}: {error}", path.display())));
        }
        send(
            &self.tx,
            Update::Step(Step::Start {
                key,
                path: path.clone(),
                offset,
            }),
        )?;
        self.files.insert(
            key,
            Watched {
                path: path.into(),
                file,
                lines: LineBuffer::new(self.options.max_line, READ_CHUNK, offset),
                matched: true,
                idle_since: None,
                failing: false,
            },
        );
        Ok(Ok(()))
    }

    /// Lets go of files that no longer match and have been idle long enough, after reading what
    /// was appended last and handing over their unterminated last line, which can no longer grow.
    fn close_idle(&mut self) -> Result<(), Stopped> {
        let round = self.options.glob_interval.max(self.options.poll_interval);
        let close_after = round * IDLE_ROUNDS_BEFORE_CLOSE;
        let idle: Vec<FileKey> = self
            .files
            .iter()
            .filter(|(_, w)| !w.matched && w.idle_since.is_some_and(|t| t.elapsed() >= close_after))
            .map(|(key, _)| *key)
            .collect();
        for key in idle {
            let Some(mut watched) = self.files.remove(&key) else {
                continue;
            };
            while read_once(key, &mut watched, &self.tx)? {}
            if let Some(framed) = watched.lines.finish() {
                send(&self.tx, lines(key, &watched, framed))?;
            }
            tracing::debug!(path = %watched.path.display(), "closed file no longer matching `include`");
            send(&self.tx, Update::Step(Step::Closed { key }))?;
        }
        Ok(())
    }
}

fn lines(key: FileKey, watched: &Watched, framed: Framed) -> Update {
    Update::Lines {
        key,
        path: Arc::clone(&watched.path),
        framed,
    }
}

fn send(tx: &mpsc::Sender<Update>, update: Update) -> Result<(), Stopped> {
    tx.blocking_send(update).map_err(|_| Stopped)
}

/// Reads one chunk of `watched`; true if it had data. At its end, checks for copy-truncate.
fn read_once(
    key: FileKey,
    watched: &mut Watched,
    tx: &mpsc::Sender<Update>,
) -> Result<bool, Stopped> {
    match watched.lines.read_from(&mut watched.file) {
        Ok(Some(framed)) => {
            watched.idle_since = None;
            watched.failing = false;
            if !framed.is_empty() {
                send(tx, lines(key, watched, framed))?;
            }
            Ok(true)
        }
        Ok(None) => restart_if_truncated(key, watched, tx),
        Err(error) => {
            if !watched.failing {
                watched.failing = true;
                tracing::warn!(path = %watched.path.display(), %error, "cannot read file; will retry");
            }
            watched.idle_since.get_or_insert_with(Instant::now);
            Ok(false)
        }
    }
}

/// A file shorter than what was read of it was truncated in place (copy-truncate rotation):
/// reading restarts at 0. True if it did.
fn restart_if_truncated(
    key: FileKey,
    watched: &mut Watched,
    tx: &mpsc::Sender<Update>,
) -> Result<bool, Stopped> {
    let size = watched.file.metadata().map_or(u64::MAX, |m| m.len());
    if size >= watched.lines.read_end() || watched.file.seek(SeekFrom::Start(0)).is_err() {
        watched.idle_since.get_or_insert_with(Instant::now);
        return Ok(false);
    }
    tracing::warn!(
        path = %watched.path.display(),
        size,
        position = watched.lines.read_end(),
        "file shrank below the read position (copy-truncate rotation?); reading it again from \
         the start"
    );
    watched.lines.reset(0);
    watched.idle_since = None;
    send(
        tx,
        Update::Step(Step::Start {
            key,
            path: watched.path.to_path_buf(),
            offset: 0,
        }),
    )?;
    Ok(true)
}
