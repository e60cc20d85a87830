//! The dead-letter file shared by the network sinks: events a destination (ClickHouse, Kafka)
//! rejected for good, one NDJSON line each as
//! `{"reason": "...", "event": <event JSON>}`, appended to `<data_dir>/dead_letter/<sink>.ndjson`
//! so that no event is ever dropped silently and each can be fixed and replayed (the `file`
//! source reads the `event` values back once extracted, e.g. with `jq -c .event`).

use std::path::PathBuf;

use tapio_event::ComponentError;
use tokio::io::AsyncWriteExt;

/// Where one sink's rejected events go.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    path: PathBuf,
}

impl DeadLetter {
    /// The dead-letter file of sink `name` under `data_dir`.
    pub fn new(data_dir: &std::path::Path, name: &str) -> DeadLetter {
        DeadLetter {
            path: data_dir.join("dead_letter").join(format!("{name}.ndjson")),
        }
    }

    /// The file's path, for messages and tests.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends one rejected event with `reason` and syncs it: the batch is acknowledged next.
    /// Failing to record it stops the sink, because the event would otherwise be lost.
    pub async fn write(&self, reason: &str, event_json: &str) -> Result<(), ComponentError> {
        let line = format!(
            "{{\"reason\":{},\"event\":{event_json}}}\n",
            serde_json::Value::from(reason)
        );
        let fail = |e: std::io::Error| {
            ComponentError::runtime(format!(
                "cannot write the dead-letter file {}: {e}",
                self.path.display()
            ))
        };
        if let Some(parent) = self.path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(fail)?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(fail)?;
        file.write_all(line.as_bytes()).await.map_err(fail)?;
        file.sync_data().await.map_err(fail)
    }
}
