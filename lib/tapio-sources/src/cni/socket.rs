//! Plugin mode: the unix socket the chained `tapio-cni` plugin writes to. Each connection
//! carries `UnifiedEvent` lines (one per plugin call); the socket is the owner's only (0600),
//! since whatever writes to it speaks for the node's network plumbing.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tapio_event::codec::Decoder;
use tapio_event::{ComponentError, EventType, Timestamp};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Found;

/// Most bytes read from one connection; a plugin call sends one line of well under this.
const MAX_CONNECTION_BYTES: u64 = 1 << 20;
/// How long a connection may take to say what it has to say.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound socket; dropping it stops accepting and removes the socket file.
pub(super) struct Listening {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listening {
    /// Binds `path` (replacing a stale socket a previous run left, refusing any other file)
    /// with mode 0600 and starts accepting.
    pub fn start(path: &Path, tx: mpsc::Sender<Found>) -> Result<Self, ComponentError> {
        let unavailable = |what: &str, error: std::io::Error| {
            ComponentError::unavailable(format!("cni: cannot {what} {}: {error}", path.display()))
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path)
                    .map_err(|e| unavailable("replace the stale socket", e))?;
            }
            Ok(_) => {
                return Err(ComponentError::unavailable(format!(
                    "cni: `socket_path` {} exists and is not a socket",
                    path.display()
                )));
            }
            Err(_) => {}
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| unavailable("create the directory of", e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| unavailable("listen on", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| unavailable("restrict the mode of", e))?;
        let task = tokio::spawn(accept(listener, tx));
        Ok(Listening {
            path: path.to_owned(),
            task,
        })
    }
}

async fn accept(listener: UnixListener, tx: mpsc::Sender<Found>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(read_events(stream, tx.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "cni: accepting a plugin connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads a connection to its end and hands over each line as an event, or as broken input.
async fn read_events(stream: UnixStream, tx: mpsc::Sender<Found>) {
    let mut input = Vec::with_capacity(1024);
    let mut limited = stream.take(MAX_CONNECTION_BYTES);
    if tokio::time::timeout(READ_TIMEOUT, limited.read_to_end(&mut input))
        .await
        .is_err()
    {
        tracing::warn!("cni: a plugin connection sent no complete event in time");
    }
    let mut decoder = Decoder::default();
    for line in input.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        let found = match decoder.decode_json(line, Timestamp::now()) {
            Ok(event) if event.kind == EventType::Network && event.network.is_some() => {
                Found::Event(tapio_event::UnifiedEvent {
                    source: "cni".into(),
                    ..event
                })
            }
            Ok(_) => broken(line, "not a network event with a `network` context".into()),
            Err(error) => broken(line, error.0),
        };
        if tx.send(found).await.is_err() {
            return;
        }
    }
}

fn broken(line: &[u8], error: String) -> Found {
    Found::Broken {
        input: line.to_vec(),
        origin: "tapio-cni socket".into(),
        error,
    }
}
