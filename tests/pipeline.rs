//! End-to-end runs of the real binary: nothing is lost or altered between stdin and a file,
//! counts are exact, backpressure bounds memory, a stop drains every buffer, and bad input is
//! counted and routed instead of crashing the pipeline.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// A varied corpus: every context, unicode, escapes, numbers at their limits, and events that
/// need the reader's defaults (no id, no timestamp, an offset timestamp).
fn corpus() -> Vec<String> {
    let mut lines: Vec<String> = vec![
        include_str!("../lib/tapio-event/tests/full_event.json").replace('\n', ""),
        r#"{"id":"evt_min","timestamp":"2026-01-01T00:00:00.000000001Z","type":"process","source":"ebpf"}"#.into(),
        r#"{"id":"evt_uni","timestamp":"2026-01-01T00:00:00Z","type":"application","source":"app","application":{"msg":"héllo \"wörld\" \u2603 \n tab\t","big":18446744073709551615,"neg":-9223372036854775808,"f":1.5e-7,"list":[true,null,{}]}}"#.into(),
        r#"{"id":"evt_net","timestamp":"2026-01-01T02:00:00+02:00","type":"network","source":"cni","network":{"operation":"ADD","src_port":0,"dst_port":65535},"process":{"pid":4294967295,"exit_code":-1,"signal":9}}"#.into(),
        r#"{"id":"evt_k8s","timestamp":"2026-01-01T00:00:00Z","type":"kubernetes","source":"kubernetes","kubernetes":{"kind":"Node","name":"worker-1","action":"deleted","labels":{"a.b/c":"d","":"empty-key"}},"entity":{"type":"node","id":"worker-1"}}"#.into(),
        r#"{"id":"evt_corr","timestamp":"2026-01-01T00:00:00Z","type":"correlation","source":"correlate","correlation":{"correlation_id":"c1","pattern":"crash-loop","related_events":["a","b"],"confidence":0.95},"impact":{"severity":"critical","business_impact":1.0,"customer_facing":true,"affected_services":["api","db"]}}"#.into(),
    ];
    for i in 0..3000 {
        lines.push(format!(
            r#"{{"id":"evt_bulk_{i}","timestamp":"2026-11-27T16:21:{:02}.{:09}Z","type":"systemd","source":"systemd","systemd":{{"unit":"cri-containerd-{i:064x}.scope","active_state":"active","job_type":"start","main_pid":{i}}},"entity":{{"type":"host","id":"worker-{}","node":"worker-{}"}}}}"#,
            i % 60,
            i * 7919,
            i % 3,
            i % 3
        ));
    }
    lines
}

#[test]
fn stdin_to_file_loses_nothing_and_preserves_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/events.ndjson");
    let config = write_config(
        dir.path(),
        "rt.toml",
        &source_to_file("type = \"stdin\"", &out),
    );
    let lines = corpus();
    let mut input = lines.join("\n").into_bytes();
    input.extend_from_slice(b"\n{\"type\":\"process\",\"source\":\"ebpf\"}\n");
    let output = run_with_stdin(&config, &input);
    assert_success(&output);
    let written = parse_ndjson(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(written.len(), lines.len() + 1);
    for (line, got) in lines.iter().zip(&written) {
        let mut expected: serde_json::Value = serde_json::from_str(line).unwrap();
        // The contract: timestamps are written in UTC with nine fractional digits.
        let ts = expected["timestamp"].as_str().unwrap().to_owned();
        expected["timestamp"] = normalise_timestamp(&ts).into();
        assert_eq!(&expected, got);
    }
    let defaulted = written.last().unwrap();
    assert!(defaulted["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(defaulted["timestamp"].as_str().unwrap().len(), 30);
    assert_eq!(written[3]["timestamp"], "2026-01-01T00:00:00.000000000Z");
    let counts = summary_row(&output.stderr, "out");
    assert_eq!(counts.events_out, lines.len() as u64 + 1);
}

/// The expected wire form of a corpus timestamp.
fn normalise_timestamp(ts: &str) -> String {
    match ts {
        "2026-01-01T02:00:00+02:00" | "2026-01-01T00:00:00Z" => {
            "2026-01-01T00:00:00.000000000Z".into()
        }
        other if other.len() == 30 => other.into(),
        other => panic!("corpus timestamp {other} not normalised"),
    }
}

/// A config in `dir` reading stdin (1 KiB lines at most) into `good.ndjson`, with the source's
/// `errors` output written to `bad.ndjson`; returns the config and the two paths.
fn stdin_with_errors_output(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let good = dir.join("good.ndjson");
    let bad = dir.join("bad.ndjson");
    let config = write_config(
        dir,
        "errors.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\nmax_line_bytes = \"1KiB\"\n\n[sinks.good]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\n\n[sinks.bad]\ntype = \"file\"\ninputs = [\"in.errors\"]\npath = \"{}\"\n",
            good.display(),
            bad.display()
        ),
    );
    (config, good, bad)
}

#[test]
fn bad_lines_are_counted_and_routed_to_the_errors_output() {
    let dir = tempfile::tempdir().unwrap();
    let (config, good, bad) = stdin_with_errors_output(dir.path());
    let long = format!(
        "{{\"type\":\"process\",\"source\":\"{}\"}}",
        "x".repeat(2000)
    );
    let input = format!(
        "{{\"type\":\"process\",\"source\":\"a\"}}\nnot json\n{{\"type\":\"process\",\"source\":\"b\",\"surprise\":1}}\n{long}\n{{\"type\":\"process\",\"source\":\"c\"}}\n"
    );
    let output = run_with_stdin(&config, input.as_bytes());
    assert_success(&output);
    let good = parse_ndjson(&std::fs::read_to_string(&good).unwrap());
    let sources: Vec<_> = good.iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["a", "c"]);
    let bad = parse_ndjson(&std::fs::read_to_string(&bad).unwrap());
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0]["application"]["line"], "not json");
    assert!(
        bad[1]["application"]["error"]
            .as_str()
            .unwrap()
            .contains("surprise")
    );
    assert_eq!(summary_row(&output.stderr, "in").errors, 3);
}

#[test]
fn unrepresentable_timestamps_are_errors_not_other_times() {
    let dir = tempfile::tempdir().unwrap();
    let (config, good, bad) = stdin_with_errors_output(dir.path());
    let event = |id: &str, timestamp: &str| {
        format!(r#"{{"id":"{id}","timestamp":"{timestamp}","type":"process","source":"stdin"}}"#)
    };
    let kept = [
        event("latest", "2262-04-11T23:47:16.854775807Z"),
        event("ordinary", "2026-11-27T16:21:11.123456789Z"),
        event("earliest", "1677-09-21T00:12:43.145224192Z"),
    ];
    let rejected = [
        event("far_future", "2300-01-01T00:00:00Z"),
        event("far_past", "1500-01-01T00:00:00Z"),
        event("just_after", "2262-04-11T23:47:16.854775808Z"),
    ];
    let input: String = [
        &kept[0],
        &rejected[0],
        &kept[1],
        &rejected[1],
        &rejected[2],
        &kept[2],
    ]
    .iter()
    .map(|line| format!("{line}\n"))
    .collect();
    let output = run_with_stdin(&config, input.as_bytes());
    assert_success(&output);
    let good = parse_ndjson(&std::fs::read_to_string(&good).unwrap());
    let expected: Vec<serde_json::Value> = kept
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(good, expected);
    let bad = parse_ndjson(&std::fs::read_to_string(&bad).unwrap());
    let lines: Vec<_> = bad
        .iter()
        .map(|e| e["application"]["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, rejected);
    for error in &bad {
        let message = error["application"]["error"].as_str().unwrap();
        assert!(
            message.contains("outside the representable range"),
            "{message}"
        );
    }
    assert_eq!(summary_row(&output.stderr, "in").errors, 3);
}

#[test]
fn demo_to_blackhole_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "count.toml",
        "[sources.demo]\ntype = \"demo\"\ncount = 250000\n\n[sinks.void]\ntype = \"blackhole\"\ninputs = [\"demo\"]\n",
    );
    let output = tapio()
        .args(["run", "--summary", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_success(&output);
    assert_eq!(summary_row(&output.stderr, "demo").events_out, 250_000);
    let sink = summary_row(&output.stderr, "void");
    assert_eq!(
        (sink.events_in, sink.events_out, sink.dropped),
        (250_000, 250_000, 0)
    );
}

#[test]
fn a_stalled_sink_stalls_the_source_and_bounds_memory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Nobody reads the console sink's standard output: once the pipe is full the sink blocks.
    let config = write_config(
        dir.path(),
        "slow.toml",
        &format!(
            "[api]\naddress = \"127.0.0.1:{port}\"\n\n[sources.demo]\ntype = \"demo\"\n\n[sinks.stuck]\ntype = \"console\"\ninputs = [\"demo\"]\nbuffer = {{ max_events = 2000 }}\n"
        ),
    );
    let mut child = tapio()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sent = || {
        let (_, body) = http_get(port, "/metrics")?;
        metric(&body, "tapio_component_sent_events_total", "demo")
    };
    let first =
        eventually(Duration::from_secs(20), || sent().filter(|&n| n > 0)).expect("metrics served");
    std::thread::sleep(Duration::from_secs(2));
    let before = sent().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let after = sent().unwrap();
    let rss = rss_kib(child.id());
    let (_, body) = http_get(port, "/metrics").unwrap();
    let buffered = metric(&body, "tapio_buffer_events", "stuck").unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        first <= 10_000 && after <= 10_000,
        "source kept producing: {first} then {after}"
    );
    assert_eq!(before, after, "source was not stalled");
    assert!(buffered <= 2000, "buffer held {buffered} events");
    assert!(rss < 100 * 1024, "RSS {rss} KiB");
}

#[test]
fn sigterm_drains_every_buffer_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("drained.ndjson");
    let port = free_port();
    let config = write_config(
        dir.path(),
        "drain.toml",
        &format!(
            "[api]\naddress = \"127.0.0.1:{port}\"\n\n[sources.demo]\ntype = \"demo\"\nrate = 5000\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"demo\"]\npath = \"{}\"\n",
            out.display()
        ),
    );
    let child = tapio()
        .args(["run", "--summary", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let healthy = eventually(Duration::from_secs(20), || {
        http_get(port, "/health").filter(|(s, _)| *s == 200)
    });
    assert!(healthy.is_some(), "/health never answered 200");
    std::thread::sleep(Duration::from_millis(700));
    signal(child.id(), libc::SIGTERM);
    let output = wait_with_timeout(child, Duration::from_secs(30));
    assert_success(&output);
    let produced = summary_row(&output.stderr, "demo").events_out;
    let written = std::fs::read_to_string(&out).unwrap().lines().count() as u64;
    assert!(produced > 0);
    assert_eq!(written, produced, "events produced but not written");
}

#[test]
fn drop_newest_counts_drops_and_a_stuck_drain_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "drop.toml",
        "shutdown_grace_period = \"1s\"\n\n[sources.demo]\ntype = \"demo\"\n\n[sinks.stuck]\ntype = \"console\"\ninputs = [\"demo\"]\nbuffer = { max_events = 1000, when_full = \"drop_newest\" }\n",
    );
    let mut child = tapio()
        .args(["run", "--summary", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    signal(child.id(), libc::SIGTERM);
    let stdout = child.stdout.take();
    let output = wait_with_timeout(child, Duration::from_secs(30));
    drop(stdout);
    assert_eq!(
        output.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stuck = summary_row(&output.stderr, "stuck");
    let produced = summary_row(&output.stderr, "demo").events_out;
    assert!(stuck.dropped > 0, "nothing was dropped");
    assert!(stuck.events_in + stuck.dropped <= produced);
    assert!(
        produced > 100_000,
        "the source was blocked although the sink drops: {produced}"
    );
}

#[test]
fn text_decoding_wraps_lines_and_a_final_line_without_newline_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("text.ndjson");
    let config = write_config(
        dir.path(),
        "text.toml",
        &source_to_file(
            "type = \"stdin\"
decoding = \"text\"",
            &out,
        ),
    );
    let mut input = Vec::new();
    write!(input, "first line\r\nsecond line\nno newline").unwrap();
    let output = run_with_stdin(&config, &input);
    assert_success(&output);
    let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap());
    let raw: Vec<_> = events
        .iter()
        .map(|e| e["raw_data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        raw,
        ["Zmlyc3QgbGluZQ==", "c2Vjb25kIGxpbmU=", "bm8gbmV3bGluZQ=="]
    );
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "application" && e["source"] == "stdin")
    );
}
