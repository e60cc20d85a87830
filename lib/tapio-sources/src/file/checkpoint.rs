//! Where each file is read up to, as far as every sink has acknowledged. Positions change in the
//! order the source sent things (a file opened, batches sent, a file truncated or let go of), and
//! a change only takes effect once everything sent before it is settled, so a checkpoint never
//! covers a line that was not delivered. The checkpoint file is rewritten atomically.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tapio_event::{AckReceiver, ComponentError, PendingAck};

use super::FileKey;

const VERSION: u32 = 1;

/// The checkpoint file's form; `path` is there for humans, files are known by device and inode.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointFile {
    version: u32,
    files: Vec<FileCheckpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCheckpoint {
    pub dev: u64,
    pub inode: u64,
    pub offset: u64,
    pub path: String,
}

impl FileCheckpoint {
    pub fn key(&self) -> FileKey {
        FileKey {
            dev: self.dev,
            inode: self.inode,
        }
    }
}

/// A position change the reader reports, ordered with the batches it reads.
#[derive(Debug)]
pub(super) enum Step {
    /// Reading `key` (found at `path`) starts at `offset`: a file was opened, or restarts at 0
    /// after it was truncated.
    Start {
        key: FileKey,
        path: PathBuf,
        offset: u64,
    },
    /// The reader let go of the file; its checkpoint goes (a new file may reuse the inode).
    Closed { key: FileKey },
    /// The first look for files is done; checkpoints of files it did not find are stale.
    Scanned,
}

enum Unsettled {
    Sent {
        key: FileKey,
        end: u64,
        ack: PendingAck,
    },
    Step(Step),
}

struct Position {
    path: PathBuf,
    offset: u64,
    /// A batch of this file failed: its offset stays put until restart, which re-reads from it.
    frozen: bool,
}

/// The committed position of every open file and the changes still waiting for acknowledgements.
pub(super) struct Positions {
    files: HashMap<FileKey, Position>,
    /// Entries of the last checkpoint not yet confirmed by the first scan; kept until then, so a
    /// checkpoint written early does not forget them.
    carried: HashMap<FileKey, FileCheckpoint>,
    queue: VecDeque<Unsettled>,
    dirty: bool,
}

impl Positions {
    /// Positions starting from the entries of the previous run's checkpoint.
    pub fn new(loaded: Vec<FileCheckpoint>) -> Self {
        Positions {
            files: HashMap::new(),
            carried: loaded
                .into_iter()
                .map(|entry| (entry.key(), entry))
                .collect(),
            queue: VecDeque::new(),
            dirty: false,
        }
    }

    /// Records a batch (or, with no `ack`, lines that made no event) covering `key` up to `end`.
    pub fn sent(&mut self, key: FileKey, end: u64, ack: Option<AckReceiver>) {
        let ack = PendingAck::new(ack);
        self.queue.push_back(Unsettled::Sent { key, end, ack });
        self.settle();
    }

    /// Records a position change, applied after everything sent before it.
    pub fn step(&mut self, step: Step) {
        self.queue.push_back(Unsettled::Step(step));
        self.settle();
    }

    /// Whether acknowledgements are still outstanding.
    pub fn is_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Applies every change whose turn has come, without waiting.
    pub fn settle(&mut self) {
        while let Some(front) = self.queue.front_mut() {
            if let Unsettled::Sent { ack, .. } = front
                && !ack.is_known()
            {
                return;
            }
            if let Some(pending) = self.queue.pop_front() {
                self.apply(pending);
            }
        }
    }

    /// Waits for the oldest outstanding acknowledgement, then applies what it unblocks.
    /// Cancel-safe: dropped mid-way, nothing is lost.
    pub async fn settle_next(&mut self) {
        if let Some(Unsettled::Sent { ack, .. }) = self.queue.front_mut() {
            ack.known().await;
        }
        self.settle();
    }

    fn apply(&mut self, pending: Unsettled) {
        match pending {
            Unsettled::Sent { key, end, ack } => {
                let Some(file) = self.files.get_mut(&key) else {
                    return;
                };
                if file.frozen {
                    return;
                }
                if ack.status().is_settled() {
                    file.offset = end;
                } else {
                    file.frozen = true;
                    tracing::warn!(
                        path = %file.path.display(),
                        offset = file.offset,
                        "a batch read from this file was not delivered; its checkpoint stays at \
                         this offset, so the next run reads it again from there"
                    );
                }
            }
            Unsettled::Step(Step::Start { key, path, offset }) => {
                self.carried.remove(&key);
                let file = self.files.entry(key).or_insert(Position {
                    path: PathBuf::new(),
                    offset,
                    frozen: false,
                });
                file.path = path;
                if !file.frozen {
                    file.offset = offset;
                }
            }
            Unsettled::Step(Step::Closed { key }) => {
                self.files.remove(&key);
            }
            Unsettled::Step(Step::Scanned) => self.carried.clear(),
        }
        self.dirty = true;
    }

    /// The checkpoint file's contents if anything changed since the last call; a failed write
    /// calls [`Positions::unsaved`] to try again later.
    pub fn snapshot(&mut self) -> Option<Vec<u8>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let mut files: Vec<FileCheckpoint> = self
            .files
            .iter()
            .map(|(key, file)| FileCheckpoint {
                dev: key.dev,
                inode: key.inode,
                offset: file.offset,
                path: file.path.to_string_lossy().into_owned(),
            })
            .chain(self.carried.values().cloned())
            .collect();
        files.sort_by(|a, b| (&a.path, a.dev, a.inode).cmp(&(&b.path, b.dev, b.inode)));
        let mut bytes = serde_json::to_vec_pretty(&CheckpointFile {
            version: VERSION,
            files,
        })
        .expect("checkpoints always serialise");
        bytes.push(b'\n');
        Some(bytes)
    }

    /// The last snapshot was not written.
    pub fn unsaved(&mut self) {
        self.dirty = true;
    }
}

/// The checkpoint file of one `file` source.
#[derive(Debug, Clone)]
pub(super) struct Store {
    path: PathBuf,
    temp: PathBuf,
}

impl Store {
    /// Makes sure `dir` exists and is writable, and reads the previous checkpoint if any.
    pub fn open(dir: &Path) -> Result<(Store, Vec<FileCheckpoint>), ComponentError> {
        let store = Store {
            path: dir.join("checkpoints.json"),
            temp: dir.join("checkpoints.json.tmp"),
        };
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::File::create(&store.temp))
            .and_then(|_| std::fs::remove_file(&store.temp))
            .map_err(|error| {
                ComponentError::unavailable(format!(
                    "cannot keep checkpoints in {}: {error} (check data_dir and its permissions)",
                    dir.display()
                ))
            })?;
        let entries = match std::fs::read(&store.path) {
            Ok(bytes) => parse(&bytes).map_err(|error| {
                ComponentError::unavailable(format!(
                    "checkpoint file {} is not valid ({error}); fix or delete it to read every \
                     file again",
                    store.path.display()
                ))
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(ComponentError::unavailable(format!(
                    "cannot read checkpoint file {}: {error}",
                    store.path.display()
                )));
            }
        };
        Ok((store, entries))
    }

    /// Writes `positions` if they changed; a failure is logged and retried at the next call.
    pub async fn save(&self, positions: &mut Positions) {
        let Some(bytes) = positions.snapshot() else {
            return;
        };
        let store = self.clone();
        let written = tokio::task::spawn_blocking(move || store.write(&bytes))
            .await
            .unwrap_or_else(|error| Err(io::Error::other(error)));
        if let Err(error) = written {
            positions.unsaved();
            tracing::warn!(path = %self.path.display(), %error, "cannot write checkpoints");
        }
    }

    /// Temp file, flush to disk, rename: a crash leaves the old checkpoint or the new one.
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut file = std::fs::File::create(&self.temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&self.temp, &self.path)
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<FileCheckpoint>, String> {
    let file: CheckpointFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!("unknown version {}", file.version));
    }
    Ok(file.files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{AckToken, BatchStatus};

    const A: FileKey = FileKey { dev: 1, inode: 10 };
    const B: FileKey = FileKey { dev: 1, inode: 20 };

    fn start(key: FileKey, path: &str, offset: u64) -> Step {
        Step::Start {
            key,
            path: path.into(),
            offset,
        }
    }

    fn saved(positions: &mut Positions) -> Vec<(String, u64)> {
        let entries = parse(&positions.snapshot().expect("nothing changed")).unwrap();
        entries.into_iter().map(|e| (e.path, e.offset)).collect()
    }

    #[test]
    fn offsets_advance_only_through_settled_batches_in_order() {
        let mut positions = Positions::new(Vec::new());
        positions.step(start(A, "a", 0));
        let (first, first_rx) = AckToken::new();
        let (second, second_rx) = AckToken::new();
        positions.sent(A, 10, Some(first_rx));
        positions.sent(A, 20, Some(second_rx));
        second.ack(BatchStatus::Delivered);
        positions.settle();
        assert_eq!(saved(&mut positions), [("a".into(), 0)]);
        first.ack(BatchStatus::Dropped);
        positions.settle();
        assert_eq!(saved(&mut positions), [("a".into(), 20)]);
        assert!(!positions.is_waiting());
    }

    #[test]
    fn a_failed_batch_freezes_its_file_but_not_others() {
        let mut positions = Positions::new(Vec::new());
        positions.step(start(A, "a", 5));
        positions.step(start(B, "b", 0));
        let (failed, failed_rx) = AckToken::new();
        let (later, later_rx) = AckToken::new();
        let (other, other_rx) = AckToken::new();
        positions.sent(A, 10, Some(failed_rx));
        positions.sent(A, 20, Some(later_rx));
        positions.sent(B, 7, Some(other_rx));
        drop(failed);
        later.ack(BatchStatus::Delivered);
        other.ack(BatchStatus::Delivered);
        positions.settle();
        assert_eq!(saved(&mut positions), [("a".into(), 5), ("b".into(), 7)]);
        positions.step(start(A, "a", 0));
        positions.sent(A, 3, None);
        assert_eq!(saved(&mut positions), [("a".into(), 5), ("b".into(), 7)]);
    }

    #[test]
    fn loaded_entries_last_until_the_first_scan_and_closed_files_go() {
        let old = |key: FileKey, path: &str| FileCheckpoint {
            dev: key.dev,
            inode: key.inode,
            offset: 99,
            path: path.into(),
        };
        let mut positions = Positions::new(vec![old(A, "a"), old(B, "gone")]);
        positions.step(start(A, "a", 99));
        positions.sent(A, 120, None);
        assert_eq!(
            saved(&mut positions),
            [("a".into(), 120), ("gone".into(), 99)]
        );
        positions.step(Step::Scanned);
        assert_eq!(saved(&mut positions), [("a".into(), 120)]);
        positions.step(Step::Closed { key: A });
        assert_eq!(saved(&mut positions), Vec::<(String, u64)>::new());
        assert!(positions.snapshot().is_none());
    }

    #[tokio::test]
    async fn waiting_for_the_oldest_ack_then_saving_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = Store::open(&dir.path().join("src")).unwrap();
        assert!(loaded.is_empty());
        let mut positions = Positions::new(loaded);
        positions.step(start(A, "a", 0));
        let (token, receiver) = AckToken::new();
        positions.sent(A, 42, Some(receiver));
        tokio::spawn(async move { token.ack(BatchStatus::Delivered) });
        positions.settle_next().await;
        assert!(!positions.is_waiting());
        store.save(&mut positions).await;
        let (_, loaded) = Store::open(&dir.path().join("src")).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!((loaded[0].key(), loaded[0].offset), (A, 42));
    }

    #[test]
    fn a_corrupt_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checkpoints.json"), "{not json").unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(error.message().contains("not valid"), "{error}");
    }
}
