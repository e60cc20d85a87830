//! Generalisation of the correlator, measured end to end through the real binary: thousands of
//! randomised, interleaved scenarios with noise and out-of-order arrival go through
//! `semantic_enrich → correlate → impact_assess`, and the summaries are scored against the
//! generator's ground truth. Goals: recall and precision ≥ 0.98, no summary from a negative
//! scenario, every input event in the output with a correlation id.

mod common;
mod scenarios;

use std::collections::{HashMap, HashSet};

use common::*;
use scenarios::{Truth, generate};

#[test]
fn recall_and_precision_on_randomised_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let config = write_config(
        dir.path(),
        "pipeline.toml",
        &intelligence_pipeline("type = \"stdin\"", &out),
    );
    let generated = generate(20261127, 2000, 400);
    let input = generated.lines.join("\n") + "\n";
    let output = run_with_stdin(&config, input.as_bytes());
    assert_success(&output);
    let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap());

    let input_ids: HashSet<String> = generated
        .lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut seen = HashSet::new();
    let mut summaries: HashMap<(String, String), usize> = HashMap::new();
    for event in &events {
        assert!(
            event["correlation"]["correlation_id"].is_string(),
            "no correlation id: {event}"
        );
        assert!(
            event["impact"]["severity"].is_string(),
            "not assessed: {event}"
        );
        if event["type"] == "correlation" {
            let key = (
                event["correlation"]["pattern"].as_str().unwrap().to_owned(),
                event["entity"]["id"].as_str().unwrap().to_owned(),
            );
            *summaries.entry(key).or_default() += 1;
        } else {
            seen.insert(event["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, input_ids, "input events missing from the output");

    let mut expected = 0usize;
    let mut found = 0usize;
    let mut matched = 0usize;
    let mut false_alarms = Vec::new();
    let mut missed = Vec::new();
    let mut negative_ids = HashSet::new();
    for truth in &generated.truths {
        match truth {
            Truth::Summary { pattern, id } => {
                expected += 1;
                let key = (pattern.to_string(), id.clone());
                match summaries.get(&key) {
                    Some(&n) => {
                        found += 1;
                        matched += n.min(1);
                    }
                    None => missed.push(key),
                }
            }
            Truth::Nothing { ids, why } => {
                for id in ids {
                    negative_ids.insert(id.clone());
                    for ((pattern, about), _) in
                        summaries.iter().filter(|((_, about), _)| about == id)
                    {
                        false_alarms.push(format!("{why}: {pattern} about {about}"));
                    }
                }
            }
        }
    }
    let total: usize = summaries.values().sum();
    let recall = found as f64 / expected as f64;
    let precision = matched as f64 / total.max(1) as f64;
    eprintln!(
        "scenarios: {expected} positive, {} negative entities; summaries: {total}; recall {recall:.4}; precision {precision:.4}",
        negative_ids.len()
    );
    assert!(
        false_alarms.is_empty(),
        "summaries from negative scenarios: {false_alarms:#?}"
    );
    assert!(
        recall >= 0.98,
        "recall {recall:.4}; first misses: {:?}",
        &missed[..missed.len().min(10)]
    );
    assert!(
        precision >= 0.98,
        "precision {precision:.4}: {total} summaries for {found} scenarios"
    );
}
