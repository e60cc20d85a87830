//! Generalisation of the correlator, measured end to end through the real binary: thousands of
//! randomised, interleaved scenarios with noise and out-of-order arrival go through
//! `semantic_enrich → correlate → impact_assess`, and the summaries are scored against the
//! generator's ground truth. Goals: recall, precision and root cause right ≥ 0.98, no summary
//! from a negative scenario, every input event in the output with a correlation id.

mod common;
mod scenarios;

use common::*;
use scenarios::score::score;
use scenarios::{Generated, deployments, generate};

/// The chain's output for the generated stream, every event checked for an impact assessment.
fn run_chain(generated: &Generated) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let config = write_config(
        dir.path(),
        "pipeline.toml",
        &intelligence_pipeline("type = \"stdin\"", &out),
    );
    let input = generated.lines.join("\n") + "\n";
    let output = run_with_stdin(&config, input.as_bytes());
    assert_success(&output);
    let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap());
    for event in &events {
        assert!(
            event["impact"]["severity"].is_string(),
            "not assessed: {event}"
        );
    }
    events
}

#[test]
fn recall_and_precision_on_randomised_scenarios() {
    let generated = generate(20261127, 2000, 400);
    let score = score(&generated, &run_chain(&generated));
    eprintln!("{}", score.report("scenarios"));
    score.assert_goals();
}

#[test]
fn deployments_whose_first_exec_arrives_before_its_scope() {
    let generated = deployments::generate(20261201, 600);
    let score = score(&generated, &run_chain(&generated));
    eprintln!("{}", score.report("deployments"));
    score.assert_goals();
}
