//! End-to-end tests of the `file` source: real files in a temp dir, the source driven the way
//! the topology drives it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tapio_event::{BatchStatus, BuildContext, ComponentError, SourceContext};
use tokio::task::JoinHandle;

use super::*;
use crate::util::testing::{Taps, assert_quiet, context, next_batch, take, texts};

fn config(include: &Path) -> FileConfig {
    FileConfig {
        include: vec![include.to_string_lossy().into_owned()],
        exclude: Vec::new(),
        read_from: ReadFrom::Beginning,
        decoding: Decoding::Text,
        max_line_bytes: lines::default_max_line_bytes(),
        glob_interval: ConfigDuration(Duration::from_millis(50)),
        poll_interval: ConfigDuration(Duration::from_millis(10)),
        checkpoint_interval: ConfigDuration(Duration::from_millis(50)),
    }
}

fn build_context(data_dir: &Path) -> BuildContext {
    BuildContext {
        name: "logs".into(),
        data_dir: data_dir.to_path_buf(),
        node_name: "node-1".into(),
    }
}

struct Running {
    taps: Taps,
    task: JoinHandle<Result<(), ComponentError>>,
}

fn start(config: &FileConfig, data_dir: &Path) -> Running {
    let source = config.build(&build_context(data_dir)).unwrap();
    let (cx, taps) = context("file", false);
    let task = tokio::spawn(source.run(cx));
    Running { taps, task }
}

impl Running {
    /// Shuts the source down, acknowledging whatever it still sends, and waits for it to end.
    async fn stop(mut self) {
        self.taps.trigger.trigger();
        let drain = tokio::spawn(async move {
            while let Some(batch) = self.taps.events.recv().await {
                batch.ack(BatchStatus::Delivered);
            }
        });
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("file source did not stop")
            .unwrap()
            .unwrap();
        drain.await.unwrap();
    }
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn checkpoint_offsets(data_dir: &Path) -> Vec<(String, u64)> {
    let path = data_dir.join("logs").join("checkpoints.json");
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let path = entry["path"].as_str().unwrap().to_owned();
            (path, entry["offset"].as_u64().unwrap())
        })
        .collect()
}

/// Waits until the checkpoint lists `path` at `offset`.
async fn wait_for_checkpoint(data_dir: &Path, path: &Path, offset: u64) {
    let expected = (path.to_string_lossy().into_owned(), offset);
    for _ in 0..200 {
        if checkpoint_offsets(data_dir).contains(&expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "checkpoint never reached {expected:?}: {:?}",
        checkpoint_offsets(data_dir)
    );
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let data = dir.path().join("data");
    (dir, logs, data)
}

#[tokio::test]
async fn reads_existing_lines_then_follows_appended_ones() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, "one\ntwo\r\n\n");
    let mut running = start(&config(&logs.join("*.log")), &data);
    let events = take(&mut running.taps.events, 2).await;
    assert_eq!(texts(&events), ["one", "two"]);
    assert!(events.iter().all(|e| e.source == "file"));
    append(&path, "thr");
    assert_quiet(&mut running.taps.events).await;
    append(&path, "ee\n");
    assert_eq!(texts(&take(&mut running.taps.events, 1).await), ["three"]);
    append(&logs.join("new.log"), "fresh\n");
    assert_eq!(texts(&take(&mut running.taps.events, 1).await), ["fresh"]);
    running.stop().await;
}

#[tokio::test]
async fn read_from_end_skips_existing_content_of_files_found_at_start_only() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, "old\n");
    let mut config = config(&logs.join("*.log"));
    config.read_from = ReadFrom::End;
    let mut running = start(&config, &data);
    wait_for_checkpoint(&data, &path, 4).await;
    append(&path, "new\n");
    append(&logs.join("later.log"), "later\n");
    let events = take(&mut running.taps.events, 2).await;
    assert_eq!(sorted(texts(&events)), ["later", "new"]);
    running.stop().await;
}

#[tokio::test]
async fn rotation_by_rename_reads_both_files_exactly_once() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    writer.write_all(b"1\n2\n").unwrap();
    let mut running = start(&config(&path), &data);
    assert_eq!(texts(&take(&mut running.taps.events, 2).await), ["1", "2"]);
    std::fs::rename(&path, logs.join("app.log.1")).unwrap();
    writer.write_all(b"3\n").unwrap();
    append(&path, "4\n5\n");
    writer.write_all(b"6\n").unwrap();
    let events = take(&mut running.taps.events, 4).await;
    assert_eq!(sorted(texts(&events)), ["3", "4", "5", "6"]);
    assert_quiet(&mut running.taps.events).await;
    running.stop().await;
}

#[tokio::test]
async fn copy_truncate_restarts_at_the_beginning() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, "a fairly long first line\nand a second one\n");
    let mut running = start(&config(&path), &data);
    assert_eq!(take(&mut running.taps.events, 2).await.len(), 2);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&path, "short\n");
    assert_eq!(texts(&take(&mut running.taps.events, 1).await), ["short"]);
    running.stop().await;
    wait_for_checkpoint(&data, &path, 6).await;
}

#[tokio::test]
async fn restart_resumes_from_the_checkpoint_without_duplicates_or_gaps() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, "a\nb\nc\n");
    let mut running = start(&config(&path), &data);
    assert_eq!(
        texts(&take(&mut running.taps.events, 3).await),
        ["a", "b", "c"]
    );
    append(&path, "d\n");
    assert_eq!(texts(&take(&mut running.taps.events, 1).await), ["d"]);
    running.stop().await;
    wait_for_checkpoint(&data, &path, 8).await;

    append(&path, "e\nf\n");
    let mut running = start(&config(&path), &data);
    assert_eq!(texts(&take(&mut running.taps.events, 2).await), ["e", "f"]);
    assert_quiet(&mut running.taps.events).await;
    running.stop().await;
    wait_for_checkpoint(&data, &path, 12).await;
}

#[tokio::test]
async fn an_unacknowledged_batch_is_not_checkpointed_past() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, "a1\na2\n");
    let mut running = start(&config(&path), &data);
    let lost = next_batch(&mut running.taps.events).await;
    assert_eq!(texts(lost.events()), ["a1", "a2"]);
    drop(lost);
    append(&path, "b1\n");
    assert_eq!(texts(&take(&mut running.taps.events, 1).await), ["b1"]);
    running.stop().await;
    assert_eq!(
        checkpoint_offsets(&data),
        [(path.to_string_lossy().into_owned(), 0)]
    );

    let mut running = start(&config(&path), &data);
    let events = take(&mut running.taps.events, 3).await;
    assert_eq!(texts(&events), ["a1", "a2", "b1"]);
    running.stop().await;
    wait_for_checkpoint(&data, &path, 9).await;
}

#[tokio::test]
async fn shutdown_waits_for_acknowledgements_before_the_final_checkpoint() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, "x\ny\n");
    let mut running = start(&config(&path), &data);
    let batch = next_batch(&mut running.taps.events).await;
    running.taps.trigger.trigger();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !running.task.is_finished(),
        "stopped before the batch was settled"
    );
    batch.ack(BatchStatus::Delivered);
    tokio::time::timeout(Duration::from_secs(5), running.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        checkpoint_offsets(&data),
        [(path.to_string_lossy().into_owned(), 4)]
    );
}

#[tokio::test]
async fn undecodable_lines_go_to_the_errors_output() {
    let (_dir, logs, data) = dirs();
    let path = logs.join("app.log");
    append(&path, "{\"type\":\"process\",\"source\":\"ebpf\"}\nnope\n");
    let mut config = config(&path);
    config.decoding = Decoding::Json;
    let source = config.build(&build_context(&data)).unwrap();
    let (cx, mut taps): (SourceContext, Taps) = context("file", true);
    let task = tokio::spawn(source.run(cx));
    assert_eq!(take(&mut taps.events, 1).await[0].source, "ebpf");
    let errors = take(&mut taps.errors, 1).await;
    assert_eq!(errors[0].raw_data.as_deref(), Some(&b"nope"[..]));
    assert_eq!(taps.metrics.snapshot().errors.get("decode"), Some(&1));
    Running { taps, task }.stop().await;
}

#[test]
fn build_rejects_bad_options_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cx = build_context(dir.path());
    let mut empty = config(dir.path());
    empty.include.clear();
    assert!(
        empty
            .build(&cx)
            .err()
            .unwrap()
            .message()
            .contains("include")
    );
    let mut bad_glob = config(dir.path());
    bad_glob.exclude = vec!["[".into()];
    assert!(
        bad_glob
            .build(&cx)
            .err()
            .unwrap()
            .message()
            .contains("exclude pattern")
    );
    let mut zero = config(dir.path());
    zero.poll_interval = ConfigDuration(Duration::ZERO);
    assert!(
        zero.build(&cx)
            .err()
            .unwrap()
            .message()
            .contains("poll_interval")
    );
    std::fs::write(dir.path().join("blocker"), "").unwrap();
    let unwritable = build_context(&dir.path().join("blocker"));
    assert!(
        config(dir.path())
            .build(&unwritable)
            .err()
            .unwrap()
            .message()
            .contains("checkpoints")
    );
}

#[test]
fn config_defaults_and_unknown_fields() {
    let config: FileConfig = serde_json::from_str(r#"{"include":["/var/log/*.log"]}"#).unwrap();
    assert_eq!(config.read_from, ReadFrom::Beginning);
    assert_eq!(config.decoding, Decoding::Json);
    assert_eq!(config.max_line_bytes, ByteSize(1 << 20));
    assert_eq!(config.glob_interval.0, Duration::from_secs(1));
    assert_eq!(config.poll_interval.0, Duration::from_millis(250));
    assert_eq!(config.checkpoint_interval.0, Duration::from_secs(1));
    let error = serde_json::from_str::<FileConfig>(r#"{"include":[],"inclde":[]}"#).unwrap_err();
    assert!(error.to_string().contains("inclde"), "{error}");
    assert!(serde_json::from_str::<FileConfig>("{}").is_err());
}
