//! The dead-letter file every sink that can reject events shares: events a destination
//! (ClickHouse, Kafka) rejected for good, one NDJSON line each as
//! `{"time": "<when>", "reason": "...", "event": <event JSON>}`, appended to
//! `<data_dir>/dead_letter/<sink>.ndjson` so that no event is ever dropped silently and each can
//! be fixed and sent again (`tapio dead-letter replay <sink>`).

use std::path::PathBuf;

use tapio_event::{ComponentError, Timestamp};
use tokio::io::AsyncWriteExt;

/// Where one sink's rejected events go.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    path: PathBuf,
}

/// The directory of every sink's dead-letter file under `data_dir`, where `tapio dead-letter`
/// looks for them.
pub fn dead_letter_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("dead_letter")
}

/// The dead-letter file of sink `name` under `data_dir`: where the sink writes rejections.
pub fn dead_letter_path(data_dir: &std::path::Path, name: &str) -> PathBuf {
    dead_letter_dir(data_dir).join(format!("{name}.ndjson"))
}

impl DeadLetter {
    /// The dead-letter file of sink `name` under `data_dir`.
    pub fn new(data_dir: &std::path::Path, name: &str) -> DeadLetter {
        DeadLetter {
            path: dead_letter_path(data_dir, name),
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
            "{{\"time\":\"{}\",\"reason\":{},\"event\":{event_json}}}\n",
            Timestamp::now(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_rejection_is_one_line_with_its_time_reason_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let dead_letter = DeadLetter::new(dir.path(), "ch");
        let before = Timestamp::now();
        dead_letter
            .write(
                "too large",
                r#"{"id":"evt_1","type":"process","source":"x"}"#,
            )
            .await
            .unwrap();
        dead_letter
            .write(
                "bad \"value\"",
                r#"{"id":"evt_2","type":"process","source":"x"}"#,
            )
            .await
            .unwrap();
        assert_eq!(dead_letter.path(), dir.path().join("dead_letter/ch.ndjson"));
        let text = std::fs::read_to_string(dead_letter.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["reason"], "bad \"value\"");
        assert_eq!(lines[1]["event"]["id"], "evt_2");
        let time = Timestamp::parse_rfc3339(lines[0]["time"].as_str().unwrap()).unwrap();
        assert!(time >= before && time <= Timestamp::now(), "{time}");
    }
}
