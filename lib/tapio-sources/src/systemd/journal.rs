//! `journal = true`: a failed unit's last journal lines, read with `journalctl -o json` when
//! it fails, so why it failed travels with the event.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

const JOURNALCTL: &str = "journalctl";
/// journalctl that takes longer is abandoned: the event goes out without lines.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Which journal field names the unit.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope {
    /// A unit of the system manager (`journalctl --unit`).
    System,
    /// A unit of a user manager (`journalctl --user-unit`).
    User,
}

/// Where a failed unit's journal lines are read, and how many.
#[derive(Debug, Clone)]
pub(super) struct Journal {
    pub scope: Scope,
    pub lines: usize,
    /// `journalctl --directory`; `None` reads this machine's journal.
    pub directory: Option<PathBuf>,
}

impl Journal {
    /// The last journal messages of `unit`, oldest first.
    pub async fn last_lines(&self, unit: &str) -> Result<Vec<String>, String> {
        let flag = match self.scope {
            Scope::System => "--unit",
            Scope::User => "--user-unit",
        };
        let mut command = Command::new(JOURNALCTL);
        command
            .arg(format!("{flag}={unit}"))
            .args(["--output=json", "--no-pager", "--quiet"])
            .arg(format!("--lines={}", self.lines))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(directory) = &self.directory {
            command.arg("--directory").arg(directory);
        }
        let output = tokio::time::timeout(TIMEOUT, command.output())
            .await
            .map_err(|_| format!("{JOURNALCTL} did not answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("cannot run {JOURNALCTL}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{JOURNALCTL} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(messages(&output.stdout))
    }
}

/// The `MESSAGE` of each JSON entry. journalctl writes a message that is not valid UTF-8 as
/// an array of bytes; it is kept, lossily decoded.
pub(super) fn messages(json_lines: &[u8]) -> Vec<String> {
    json_lines
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter_map(|entry| match entry.get("MESSAGE")? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Array(bytes) => {
                let bytes: Vec<u8> = bytes
                    .iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => None,
        })
        .collect()
}
