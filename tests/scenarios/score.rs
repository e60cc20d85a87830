//! Scoring a pipeline's output against a generator's ground truth: recall, precision, root
//! causes, and whether each pod's events left in its group.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{Generated, PATTERNS, ROOT_CAUSES, Truth};

/// How the pipeline's output measured against a generator's ground truth.
#[derive(Debug, Default)]
pub struct Score {
    /// Summaries the truths expect.
    pub expected: usize,
    /// Expected summaries that were emitted (about the right entity, with the right pattern).
    pub found: usize,
    /// Expected summaries emitted with the pattern's root cause whose correlation id every
    /// step event of the scenario carries (the whole story in one group).
    pub root_cause_right: usize,
    /// Events of the expected summaries' scenarios (steps and others).
    pub story_events: usize,
    /// Of those, the events that left in their summary's group naming its entity.
    pub story_linked: usize,
    /// Summaries emitted.
    pub summaries: usize,
    /// Entities of negative scenarios.
    pub negative_entities: usize,
    /// Summaries about an entity of a negative scenario, described.
    pub false_alarms: Vec<String>,
    /// `(pattern, entity id)` of the expected summaries not emitted.
    pub missed: Vec<(String, String)>,
    /// Expected summaries emitted whose root cause or evidence is wrong, described.
    pub wrong_story: Vec<String>,
    /// Input ids missing from the output, and output events without a correlation id.
    pub lost: Vec<String>,
}

impl Score {
    /// Expected summaries emitted, of those expected.
    pub fn recall(&self) -> f64 {
        self.found as f64 / self.expected.max(1) as f64
    }

    /// Expected summaries emitted (one per scenario), of all summaries emitted.
    pub fn precision(&self) -> f64 {
        self.found as f64 / self.summaries.max(1) as f64
    }

    /// Expected summaries with the right root cause and the whole evidence, of those expected.
    pub fn root_cause_accuracy(&self) -> f64 {
        self.root_cause_right as f64 / self.expected.max(1) as f64
    }

    /// Events of the scenarios that left in their summary's group naming its entity, of all
    /// their events.
    pub fn linking(&self) -> f64 {
        self.story_linked as f64 / self.story_events.max(1) as f64
    }

    /// One line for the test's output.
    pub fn report(&self, what: &str) -> String {
        format!(
            "{what}: {} positive, {} negative entities; summaries: {}; recall {:.4}; precision {:.4}; root cause right {:.4}; events in their story {:.4} of {}",
            self.expected,
            self.negative_entities,
            self.summaries,
            self.recall(),
            self.precision(),
            self.root_cause_accuracy(),
            self.linking(),
            self.story_events
        )
    }

    /// Fails the test unless every goal holds: recall, precision and root cause ≥ 0.98, events
    /// in their story ≥ 0.995 (a few events misplaced per thousand is how a broken alias
    /// shows: it touches only the events that arrive early), no summary from a negative
    /// scenario, every input event out with a correlation id.
    pub fn assert_goals(&self) {
        let first = |list: &[String]| list[..list.len().min(10)].to_vec();
        assert!(self.lost.is_empty(), "events lost: {:?}", first(&self.lost));
        assert!(
            self.false_alarms.is_empty(),
            "summaries from negative scenarios: {:#?}",
            first(&self.false_alarms)
        );
        assert!(
            self.recall() >= 0.98,
            "recall {:.4}; first misses: {:?}",
            self.recall(),
            &self.missed[..self.missed.len().min(10)]
        );
        assert!(
            self.precision() >= 0.98,
            "precision {:.4}: {} summaries for {} scenarios",
            self.precision(),
            self.summaries,
            self.found
        );
        assert!(
            self.root_cause_accuracy() >= 0.98,
            "root cause right {:.4}; first wrong: {:#?}",
            self.root_cause_accuracy(),
            first(&self.wrong_story)
        );
        assert!(
            self.linking() >= 0.995,
            "events in their story {:.4}; first wrong: {:#?}",
            self.linking(),
            first(&self.wrong_story)
        );
    }
}

/// Scores the pipeline's `output` events against `generated`'s truths.
pub fn score(generated: &Generated, output: &[Value]) -> Score {
    let mut score = Score::default();
    // Event id → (correlation id, entity id) as it left.
    let mut left_as: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut summaries: HashMap<(&str, &str), Vec<&Value>> = HashMap::new();
    for event in output {
        let id = event["id"].as_str().unwrap_or_default();
        let Some(correlation_id) = event["correlation"]["correlation_id"].as_str() else {
            score.lost.push(format!("no correlation id: {id}"));
            continue;
        };
        if event["type"] == "correlation" {
            let pattern = event["correlation"]["pattern"].as_str().unwrap_or_default();
            let about = event["entity"]["id"].as_str().unwrap_or_default();
            summaries.entry((pattern, about)).or_default().push(event);
            score.summaries += 1;
        } else {
            let about = event["entity"]["id"].as_str().unwrap_or_default();
            left_as.insert(id, (correlation_id, about));
        }
    }
    for line in &generated.lines {
        let event: Value = serde_json::from_str(line).unwrap();
        let id = event["id"].as_str().unwrap();
        if !left_as.contains_key(id) {
            score.lost.push(format!("not in the output: {id}"));
        }
    }
    let mut negatives = HashSet::new();
    for truth in &generated.truths {
        match truth {
            Truth::Summary {
                pattern,
                id,
                steps,
                others,
            } => {
                score.expected += 1;
                let Some(emitted) = summaries.get(&(*pattern, id.as_str())) else {
                    score.missed.push((pattern.to_string(), id.clone()));
                    continue;
                };
                score.found += 1;
                let root_cause = PATTERNS
                    .iter()
                    .position(|p| p == pattern)
                    .map(|i| ROOT_CAUSES[i]);
                let in_group = |step: &String, summary: &Value| {
                    left_as.get(step.as_str()).map(|(group, _)| *group)
                        == summary["correlation"]["correlation_id"].as_str()
                };
                let told = emitted.iter().find(|summary| {
                    summary["correlation"]["root_cause"].as_str() == root_cause
                        && steps.iter().all(|step| in_group(step, summary))
                });
                let Some(told) = told else {
                    let linked: Vec<_> = steps
                        .iter()
                        .map(|step| (step, left_as.get(step.as_str())))
                        .collect();
                    score.wrong_story.push(format!(
                        "{pattern} about {id}: summaries {emitted:?}, steps (id, correlation id, entity) {linked:?}"
                    ));
                    continue;
                };
                score.root_cause_right += 1;
                for event in steps.iter().chain(others) {
                    score.story_events += 1;
                    let about = left_as.get(event.as_str()).map(|(_, about)| *about);
                    if in_group(event, told) && about == Some(id.as_str()) {
                        score.story_linked += 1;
                    } else {
                        score.wrong_story.push(format!(
                            "{pattern} about {id}: {event} left as {:?}",
                            left_as.get(event.as_str())
                        ));
                    }
                }
            }
            Truth::Nothing { ids, why } => {
                for id in ids {
                    negatives.insert(id.as_str());
                    for ((pattern, _), emitted) in
                        summaries.iter().filter(|((_, about), _)| about == id)
                    {
                        score
                            .false_alarms
                            .push(format!("{why}: {} × {pattern} about {id}", emitted.len()));
                    }
                }
            }
        }
    }
    score.negative_entities = negatives.len();
    score
}
