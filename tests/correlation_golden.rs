//! Golden tests of `semantic_enrich → correlate → impact_assess` through the real binary: each
//! committed NDJSON scenario under `tests/data/golden/` must produce exactly the committed
//! output (replays are deterministic: event time only, ids derived from input ids). Negative
//! scenarios must produce no summary at all. Regenerate outputs after an intended change with
//! `TAPIO_BLESS=1 cargo test --test correlation_golden`.

mod common;
mod scenarios;

use std::path::{Path, PathBuf};

use common::*;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

/// Runs the pipeline on `input` and returns the output lines.
fn run_pipeline(input: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let config = write_config(
        dir.path(),
        "pipeline.toml",
        &intelligence_pipeline("type = \"stdin\"", &out),
    );
    let output = run_with_stdin(&config, input.as_bytes());
    assert_success(&output);
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks the committed output of the scenario `name`; with TAPIO_BLESS set, (re)writes it
/// (and writes a missing input from the generator).
fn golden(name: &str, pattern: &str) -> Vec<serde_json::Value> {
    let bless = std::env::var_os("TAPIO_BLESS").is_some();
    let input_path = golden_dir().join(format!("{name}.input.ndjson"));
    let expected_path = golden_dir().join(format!("{name}.expected.ndjson"));
    if bless && !input_path.exists() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&input_path, scenarios::single(pattern, 7).join("\n") + "\n").unwrap();
    }
    let input = std::fs::read_to_string(&input_path).unwrap();
    let output = run_pipeline(&input);
    let text = output.join("\n") + "\n";
    if bless {
        std::fs::write(&expected_path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    let expected_lines: Vec<&str> = expected.lines().collect();
    assert_eq!(
        output.len(),
        expected_lines.len(),
        "{name}: output length changed"
    );
    for (got, want) in output.iter().zip(&expected_lines) {
        assert_eq!(
            got, want,
            "{name}: output differs (TAPIO_BLESS=1 regenerates after an intended change)"
        );
    }
    output
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The one summary in `events`, checked against the catalog's fields.
fn only_summary<'a>(
    events: &'a [serde_json::Value],
    pattern: &str,
    root_cause: &str,
    action: &str,
) -> &'a serde_json::Value {
    let summaries: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "correlation")
        .collect();
    assert_eq!(summaries.len(), 1, "expected one summary: {summaries:#?}");
    let summary = summaries[0];
    assert_eq!(summary["source"], "correlate");
    assert_eq!(summary["correlation"]["pattern"], pattern);
    assert_eq!(summary["correlation"]["root_cause"], root_cause);
    assert_eq!(summary["correlation"]["recommended_action"], action);
    assert!(
        summary["semantic"]["narrative"]
            .as_str()
            .is_some_and(|n| n.len() > 20)
    );
    let group = summary["correlation"]["correlation_id"].as_str().unwrap();
    let related = summary["correlation"]["related_events"].as_array().unwrap();
    for id in related {
        let event = events
            .iter()
            .find(|e| e["id"] == *id)
            .expect("related event in the output");
        assert_eq!(event["correlation"]["correlation_id"], group);
    }
    summary
}

#[test]
fn pod_deployment_sequence() {
    let events = golden("pod-deployment", "pod-deployment-sequence");
    let summary = only_summary(
        &events,
        "pod-deployment-sequence",
        "scheduler-decision",
        "none",
    );
    assert_eq!(summary["impact"]["severity"], "info");
    assert!(summary["impact"]["business_impact"].as_f64().unwrap() <= 0.3);
    assert_eq!(
        summary["impact"]["predicted_outcome"],
        "successful-deployment"
    );
}

#[test]
fn network_failure_cascade() {
    let events = golden("network-failure", "network-failure-cascade");
    let summary = only_summary(
        &events,
        "network-failure-cascade",
        "network-connectivity-loss",
        "investigate-network-infrastructure",
    );
    assert!(matches!(
        summary["impact"]["severity"].as_str(),
        Some("error" | "critical")
    ));
    assert_eq!(summary["impact"]["customer_facing"], true);
    assert!(summary["impact"]["business_impact"].as_f64().unwrap() >= 0.7);
}

#[test]
fn oom_kill_cascade() {
    let events = golden("oom-kill", "oom-kill-cascade");
    let summary = only_summary(
        &events,
        "oom-kill-cascade",
        "memory-limit-exceeded",
        "raise-memory-limit-or-fix-leak",
    );
    assert_eq!(summary["impact"]["severity"], "error");
}

#[test]
fn crash_loop() {
    let events = golden("crash-loop", "crash-loop");
    let summary = only_summary(
        &events,
        "crash-loop",
        "application-crash",
        "inspect-application-logs",
    );
    assert_eq!(summary["impact"]["severity"], "error");
}

#[test]
fn node_runtime_failure() {
    let events = golden("node-runtime-failure", "node-runtime-failure");
    let summary = only_summary(
        &events,
        "node-runtime-failure",
        "container-runtime-failure",
        "restart-container-runtime",
    );
    assert_eq!(summary["impact"]["severity"], "critical");
    assert_eq!(summary["entity"]["type"], "node");
}

#[test]
fn negative_scenarios_produce_no_summary() {
    // Steps split across two pods, spread beyond the window, incomplete, and planned restarts.
    let generated = scenarios::generate(99, 0, 8);
    let output = run_pipeline(&(generated.lines.join("\n") + "\n"));
    let summaries: Vec<&String> = output
        .iter()
        .filter(|l| l.contains("\"type\":\"correlation\""))
        .collect();
    assert!(summaries.is_empty(), "{summaries:#?}");
    assert_eq!(output.len(), generated.lines.len());
}

#[test]
fn the_demo_shows_all_five_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = intelligence_pipeline(
        "type = \"demo\"\ncount = 20000\nseed = 3\nstart_time = \"2026-11-27T00:00:00Z\"",
        &out,
    );
    let config = write_config(dir.path(), "demo.toml", &pipeline);
    let output = run_config(&config);
    assert_success(&output);
    let text = std::fs::read_to_string(&out).unwrap();
    let patterns: std::collections::BTreeSet<String> = parse_ndjson(&text)
        .iter()
        .filter(|e| e["type"] == "correlation")
        // Recurrences (a summary linking earlier groups) fire too: the demo replays incidents
        // on the same nodes, which is what node-flapping and unit-restart-loop look for.
        .filter(|e| e["correlation"]["related_correlations"].is_null())
        .map(|e| e["correlation"]["pattern"].as_str().unwrap().to_owned())
        .collect();
    let all: std::collections::BTreeSet<String> =
        scenarios::PATTERNS.iter().map(|p| p.to_string()).collect();
    assert_eq!(patterns, all);
}
