//! Watch mode: inotify (the `notify` crate) on libcni's result cache and host-local's IPAM
//! directory. libcni writes a result file in place (truncate, write, close), so a file is read
//! when it is closed after writing (or renamed in); one that does not parse then is read again a
//! few times before it counts as broken, in case a second write was under way. When inotify's
//! queue overflows (a burst of pod starts beyond `fs.inotify.max_queued_events`) the kernel drops
//! events and says so; both directories are then compared with what is known, so no ADD or DEL
//! is lost to the overflow.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tapio_event::ComponentError;
use tapio_event::id::IdGenerator;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::cache::{Attachment, Reservation};
use super::{CniConfig, Found};

/// How many times a result that does not parse is read again, and how long apart (times the
/// attempt), before it is reported as broken.
const REREADS: u8 = 5;
const REREAD_DELAY: Duration = Duration::from_millis(20);

/// The running watch; dropping it stops inotify and the task that reads the files.
pub(super) struct Watching {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the reading task is told: a file system change, or a result to read again.
enum Notice {
    Fs(notify::Result<notify::Event>),
    Reread(PathBuf, u8),
}

/// How a file came to be read: only a completed write makes a parse failure worth retrying.
#[derive(Clone, Copy)]
enum Trigger {
    /// Created or modified: a close-write follows, so a partial file is simply skipped.
    Changing,
    /// Closed after writing, renamed in, or read again: it should parse now.
    Written(u8),
}

impl Watching {
    /// Watches both directories (creating them if missing, as libcni and host-local would),
    /// then learns what they hold, so nothing written in between is missed.
    pub fn start(config: &CniConfig, tx: mpsc::Sender<Found>) -> Result<Self, ComponentError> {
        let (ntx, nrx) = mpsc::unbounded_channel();
        let notices = ntx.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = notices.send(Notice::Fs(event));
        })
        .map_err(|e| ComponentError::unavailable(format!("cni: cannot start inotify: {e}")))?;
        for (dir, mode) in [
            (&config.cache_dir, RecursiveMode::NonRecursive),
            (&config.ipam_dir, RecursiveMode::Recursive),
        ] {
            std::fs::create_dir_all(dir)
                .and_then(|()| watcher.watch(dir, mode).map_err(std::io::Error::other))
                .map_err(|e| {
                    ComponentError::unavailable(format!("cni: cannot watch {}: {e}", dir.display()))
                })?;
        }
        let mut state = State::new(config, tx, ntx);
        state.learn_existing(config.emit_existing);
        let task = tokio::spawn(state.follow(nrx));
        Ok(Watching {
            _watcher: watcher,
            task,
        })
    }
}

struct State {
    cache_dir: PathBuf,
    ipam_dir: PathBuf,
    results: HashMap<PathBuf, Attachment>,
    reservations: HashMap<PathBuf, Reservation>,
    ids: IdGenerator,
    tx: mpsc::Sender<Found>,
    rereads: mpsc::UnboundedSender<Notice>,
    pending: Vec<Found>,
}

impl State {
    fn new(
        config: &CniConfig,
        tx: mpsc::Sender<Found>,
        rereads: mpsc::UnboundedSender<Notice>,
    ) -> Self {
        State {
            cache_dir: config.cache_dir.clone(),
            ipam_dir: config.ipam_dir.clone(),
            results: HashMap::new(),
            reservations: HashMap::new(),
            ids: IdGenerator::from_entropy(),
            tx,
            rereads,
            pending: Vec::new(),
        }
    }

    /// Reads what is there at start: reservations first, so results without IPs get theirs.
    fn learn_existing(&mut self, emit: bool) {
        self.read_reservations();
        for path in files_in(&self.cache_dir) {
            match std::fs::read(&path).map(|bytes| Attachment::parse(&bytes)) {
                Ok(Ok(attachment)) => {
                    let attachment = self.with_ip(attachment);
                    if emit {
                        self.emit(&attachment, "ADD");
                    }
                    self.results.insert(path, attachment);
                }
                Ok(Err(_)) => self.result_changed(&path, Trigger::Written(0)),
                Err(_) => {}
            }
        }
    }

    /// Every reservation host-local holds now, one directory per network.
    fn read_reservations(&mut self) {
        for network in files_in(&self.ipam_dir) {
            for path in files_in(&network) {
                self.reservation_changed(&path);
            }
        }
    }

    /// After inotify dropped events: what vanished is a `DEL`, what is new or changed an `ADD`
    /// (an unchanged result is known already and emits nothing).
    fn rescan(&mut self) {
        tracing::warn!(
            cache_dir = %self.cache_dir.display(),
            "cni: inotify dropped events (its queue overflowed); rescanning the CNI directories"
        );
        self.reservations.clear();
        self.read_reservations();
        let present: HashSet<PathBuf> = files_in(&self.cache_dir).collect();
        let gone: Vec<PathBuf> = self
            .results
            .keys()
            .filter(|path| !present.contains(*path))
            .cloned()
            .collect();
        for path in gone {
            self.path_gone(&path);
        }
        for path in present {
            self.result_changed(&path, Trigger::Written(0));
        }
    }

    /// Reads every change until the source goes away.
    async fn follow(mut self, mut notices: mpsc::UnboundedReceiver<Notice>) {
        while self.flush().await {
            let Some(notice) = notices.recv().await else {
                return;
            };
            match notice {
                Notice::Fs(Ok(event)) => self.on_event(event),
                Notice::Fs(Err(error)) => tracing::warn!(%error, "cni: inotify reported an error"),
                Notice::Reread(path, attempt) => {
                    self.result_changed(&path, Trigger::Written(attempt))
                }
            }
        }
    }

    fn on_event(&mut self, event: notify::Event) {
        if event.need_rescan() {
            return self.rescan();
        }
        let trigger = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Trigger::Written(0),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                for path in &event.paths {
                    self.path_gone(path);
                }
                return;
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let [from, to] = event.paths.as_slice() {
                    self.path_gone(from);
                    self.path_written(to, Trigger::Written(0));
                }
                return;
            }
            EventKind::Create(CreateKind::File | CreateKind::Any) | EventKind::Modify(_) => {
                Trigger::Changing
            }
            _ => return,
        };
        for path in &event.paths {
            self.path_written(path, trigger);
        }
    }

    fn path_written(&mut self, path: &Path, trigger: Trigger) {
        if path.parent() == Some(self.cache_dir.as_path()) {
            self.result_changed(path, trigger);
        } else if path.starts_with(&self.ipam_dir) {
            self.reservation_changed(path);
        }
    }

    fn path_gone(&mut self, path: &Path) {
        if let Some(attachment) = self.results.remove(path) {
            let attachment = self.with_ip(attachment);
            self.emit(&attachment, "DEL");
        } else {
            self.reservations.remove(path);
        }
    }

    /// A result file was written: a new or changed attachment is an `ADD`.
    fn result_changed(&mut self, path: &Path, trigger: Trigger) {
        if hidden(path) {
            return;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return self.path_gone(path);
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cni: cannot read a result file");
                return;
            }
        };
        match Attachment::parse(&bytes) {
            Ok(attachment) => {
                let attachment = self.with_ip(attachment);
                if self.results.get(path) != Some(&attachment) {
                    self.emit(&attachment, "ADD");
                    self.results.insert(path.to_owned(), attachment);
                }
            }
            Err(error) => match trigger {
                Trigger::Changing => {}
                Trigger::Written(attempt) if attempt < REREADS => {
                    let (rereads, path) = (self.rereads.clone(), path.to_owned());
                    tokio::spawn(async move {
                        tokio::time::sleep(REREAD_DELAY * u32::from(attempt + 1)).await;
                        let _ = rereads.send(Notice::Reread(path, attempt + 1));
                    });
                }
                Trigger::Written(_) => self.send(Found::Broken {
                    input: bytes,
                    origin: path.display().to_string(),
                    error: format!("{}: {error}", path.display()),
                }),
            },
        }
    }

    fn reservation_changed(&mut self, path: &Path) {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let reservation = std::fs::read(path)
            .ok()
            .and_then(|bytes| Reservation::parse(name, &bytes));
        if let Some(reservation) = reservation {
            self.reservations.insert(path.to_owned(), reservation);
        }
    }

    /// The attachment with the IP host-local reserved for it, when its result names none.
    fn with_ip(&self, mut attachment: Attachment) -> Attachment {
        if attachment.ip.is_none() {
            attachment.ip = self
                .reservations
                .iter()
                .find(|(_, reservation)| reservation.holds(&attachment))
                .and_then(|(path, _)| path.file_name()?.to_str().map(str::to_owned));
        }
        attachment
    }

    /// Queues the `operation` event of `attachment`.
    fn emit(&mut self, attachment: &Attachment, operation: &str) {
        let event = attachment.event(operation, &mut self.ids);
        self.send(Found::Event(event));
    }

    /// Queued for [`State::flush`], which hands it to the source.
    fn send(&mut self, found: Found) {
        self.pending.push(found);
    }

    /// Hands what was found to the source, waiting while it is behind; false once it is gone.
    async fn flush(&mut self) -> bool {
        for found in self.pending.drain(..) {
            if self.tx.send(found).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// The paths in `dir`, none when it cannot be read (the watch reports a missing directory).
fn files_in(dir: &Path) -> impl Iterator<Item = PathBuf> + use<> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
}

/// Temporary files (`.name`) that a writer renames into place later.
fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::tests::{cache_entry, config, op};
    use notify::event::Flag;

    fn operations(state: &mut State) -> Vec<(String, String)> {
        state
            .pending
            .drain(..)
            .map(|found| match found {
                Found::Event(event) => {
                    let (operation, container, _) = op(&event);
                    (
                        operation.to_owned(),
                        container.unwrap_or_default().to_owned(),
                    )
                }
                Found::Broken { error, .. } => panic!("unexpected broken result: {error}"),
            })
            .collect()
    }

    /// Changes that inotify never reported (as after an overflow) are found by the rescan the
    /// overflow notice triggers: the removed result is a DEL, the new one an ADD, the unchanged
    /// one nothing.
    #[tokio::test]
    async fn an_overflow_notice_rescans_and_reports_what_was_missed() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(&config.cache_dir).unwrap();
        let write = |container: &str| {
            std::fs::write(
                config.cache_dir.join(format!("net-{container}-eth0")),
                cache_entry(container, Some("10.1.0.7")),
            )
            .unwrap()
        };
        write("kept");
        write("removed");
        let (tx, _rx) = mpsc::channel(16);
        let (rereads, _) = mpsc::unbounded_channel();
        let mut state = State::new(&config, tx, rereads);
        state.learn_existing(false);
        assert!(operations(&mut state).is_empty());

        std::fs::remove_file(config.cache_dir.join("net-removed-eth0")).unwrap();
        write("added");
        state.on_event(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan));
        let mut seen = operations(&mut state);
        seen.sort();
        assert_eq!(
            seen,
            [
                ("ADD".to_owned(), "added".to_owned()),
                ("DEL".to_owned(), "removed".to_owned())
            ]
        );
    }
}
