//! The `file` source resumes from its checkpoint after a restart: no line is read twice and none
//! is skipped, including lines appended while Tapio was down.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn append_events(path: &std::path::Path, range: std::ops::Range<usize>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in range {
        writeln!(file, r#"{{"id":"evt_{i}","timestamp":"2026-11-27T00:00:00Z","type":"process","source":"ebpf","process":{{"pid":{i}}}}}"#).unwrap();
    }
}

fn output_ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Runs tapio until the output holds `expect` lines, then stops it with SIGTERM.
fn run_until(config: &std::path::Path, out: &std::path::Path, expect: usize) {
    let child = tapio()
        .args(["run", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reached = eventually(Duration::from_secs(30), || {
        (output_ids(out).len() >= expect).then_some(())
    });
    signal(child.id(), libc::SIGTERM);
    let output = wait_with_timeout(child, Duration::from_secs(30));
    assert!(
        reached.is_some(),
        "output never reached {expect} lines:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_success(&output);
}

#[test]
fn resumes_from_checkpoint_without_duplicates_or_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in/app.log");
    let out = dir.path().join("out.ndjson");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    append_events(&input, 0..1000);
    let config = write_config(
        dir.path(),
        "follow.toml",
        &format!(
            "data_dir = \"{}\"\n\n[sources.logs]\ntype = \"file\"\ninclude = [\"{}/in/*.log\"]\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"logs\"]\npath = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().display(),
            out.display()
        ),
    );
    run_until(&config, &out, 1000);
    append_events(&input, 1000..1500);
    run_until(&config, &out, 1500);
    // Let a third run prove nothing more is re-read.
    let child = tapio()
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    signal(child.id(), libc::SIGTERM);
    wait_with_timeout(child, Duration::from_secs(30));
    let ids = output_ids(&out);
    let expected: Vec<String> = (0..1500).map(|i| format!("evt_{i}")).collect();
    assert_eq!(ids, expected);
}
