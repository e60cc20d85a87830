//! Semantic rules: which events get which `semantic.{intent, category, tags, confidence,
//! narrative}`. A rule's `when` holds conditions on field paths (those of
//! `tapio_event::template`), each a value or a list of values (one of them must match), with `*`
//! as a wildcard inside a value (`"cri-containerd-*.scope"`, or `"*"` for "present").
//!
//! Rules are tried in order, the user's before the built-in ones. Each field is taken from the
//! first matching rule that sets it (a narrative only if one of its alternatives renders), so a
//! user rule may override just one field of a built-in rule. Fields the event already carries
//! from its collector are kept unless a user rule sets them; built-in rules only fill what is
//! missing.
//!
//! The rules that can match an event are precomputed per (source, type, operation), where the
//! operation is the field that says what happened for that type: `network.operation`,
//! `process.operation`, `kubernetes.reason`, `systemd.active_state`. Only the remaining
//! conditions are checked per event.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::template::FieldPath;
use tapio_event::{EventType, SemanticContext, UnifiedEvent};

use super::narrative::Narrative;
use crate::util::candidates::{CandidateIndex, Key, add_names, is_operation_path, operation_path};

/// A single value, or a list of them of which one must match (or is tried in turn, for
/// narratives).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"Unhealthy"`.
    One(String),
    /// `["Unhealthy", "BackOff"]`.
    Many(Vec<String>),
}

impl OneOrMany {
    fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(value) => std::slice::from_ref(value),
            OneOrMany::Many(values) => values,
        }
    }
}

/// A rule as written in `[[transforms.<name>.rules]]` (and in the built-in rule file): when
/// every condition holds, the fields it sets are applied. It sets at least one field.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticRule {
    /// Field path → value or list of values (one must match), e.g.
    /// `{ source = "kubernetes", "kubernetes.reason" = ["Unhealthy", "BackOff"] }`; `*` is a
    /// wildcard inside a value, and `"*"` means the field is present. Empty: every event.
    #[serde(default)]
    pub when: BTreeMap<FieldPath, OneOrMany>,
    /// What the event means (`readiness-probe-failure`).
    #[serde(default)]
    pub intent: Option<String>,
    /// The area it belongs to (`availability`, `network`, …).
    #[serde(default)]
    pub category: Option<String>,
    /// Labels to filter and group by (`["kubernetes", "probe"]`).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// How sure this interpretation is, from 0 to 1.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// One sentence, or alternatives tried in order; `{{ field.path }}` placeholders, optional
    /// parts in `[[ … ]]`, `%%` for a literal `%`.
    #[serde(default)]
    pub narrative: Option<OneOrMany>,
}

/// The fields a rule can set, as bits.
const INTENT: u8 = 1;
const CATEGORY: u8 = 2;
const TAGS: u8 = 4;
const CONFIDENCE: u8 = 8;
const NARRATIVE: u8 = 16;
const ALL: u8 = INTENT | CATEGORY | TAGS | CONFIDENCE | NARRATIVE;

/// One accepted value of a condition.
#[derive(Debug, Clone)]
enum Pattern {
    Exact(Box<str>),
    /// The value split at its `*`s: a prefix, pieces in order, a suffix.
    Glob(Box<[Box<str>]>),
}

impl Pattern {
    fn new(value: &str) -> Self {
        if value.contains('*') {
            Pattern::Glob(value.split('*').map(Box::from).collect())
        } else {
            Pattern::Exact(value.into())
        }
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(value) => **value == *text,
            Pattern::Glob(parts) => glob_matches(parts, text),
        }
    }
}

/// `parts` are a pattern split at its `*`s (at least two: there is at least one `*`).
fn glob_matches(parts: &[Box<str>], text: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return false;
    };
    let Some(mut text) = text.strip_prefix(&**first) else {
        return false;
    };
    for piece in middle {
        match text.find(&**piece) {
            Some(at) => text = &text[at + piece.len()..],
            None => return false,
        }
    }
    text.ends_with(&**last)
}

#[derive(Debug, Clone)]
struct Condition {
    path: FieldPath,
    values: Box<[Pattern]>,
    /// Guaranteed by the candidate index, so not checked per event.
    indexed: bool,
}

impl Condition {
    fn exact_values(&self) -> Option<impl Iterator<Item = &str>> {
        self.values
            .iter()
            .all(|p| matches!(p, Pattern::Exact(_)))
            .then(|| {
                self.values.iter().filter_map(|p| match p {
                    Pattern::Exact(value) => Some(&**value),
                    Pattern::Glob(_) => None,
                })
            })
    }

    fn holds(&self, event: &UnifiedEvent) -> bool {
        self.path
            .lookup(event)
            .is_some_and(|v| self.values.iter().any(|p| p.matches(&v)))
    }

    /// Whether an event with `value` in this condition's field may match (only exact
    /// conditions rule events out here; wildcards are checked per event).
    fn admits(&self, value: Option<&str>) -> bool {
        match self.exact_values() {
            Some(mut exact) => value.is_some_and(|v| exact.any(|e| e == v)),
            None => true,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    conditions: Vec<Condition>,
    intent: Option<String>,
    category: Option<String>,
    tags: Option<Vec<String>>,
    confidence: Option<f64>,
    narrative: Option<Narrative>,
    /// Which fields it sets.
    sets: u8,
}

impl Rule {
    fn compile(rule: &SemanticRule) -> Result<Rule, String> {
        let mut conditions = Vec::with_capacity(rule.when.len());
        for (path, values) in &rule.when {
            let values = values.as_slice();
            if values.is_empty() {
                return Err(format!("when.{path}: give a value or a non-empty list"));
            }
            if path.as_str() == "type"
                && let Some(bad) = values
                    .iter()
                    .find(|v| !v.contains('*') && !EventType::ALL.iter().any(|t| t.as_str() == *v))
            {
                return Err(format!(
                    "when.type: unknown event type {bad:?}; one of network, process, kubernetes, systemd, application, correlation"
                ));
            }
            conditions.push(Condition {
                path: path.clone(),
                values: values.iter().map(|v| Pattern::new(v)).collect(),
                indexed: false,
            });
        }
        if let Some(confidence) = rule.confidence
            && !(0.0..=1.0).contains(&confidence)
        {
            return Err(format!("confidence {confidence} is outside 0..=1"));
        }
        let narrative = match &rule.narrative {
            Some(texts) => Some(Narrative::parse(texts.as_slice())?),
            None => None,
        };
        let sets = field_bits([
            rule.intent.is_some(),
            rule.category.is_some(),
            rule.tags.is_some(),
            rule.confidence.is_some(),
            narrative.is_some(),
        ]);
        if sets == 0 {
            return Err(
                "the rule sets nothing; give at least one of intent, category, tags, confidence, narrative"
                    .into(),
            );
        }
        let mut rule = Rule {
            conditions,
            intent: rule.intent.clone(),
            category: rule.category.clone(),
            tags: rule.tags.clone(),
            confidence: rule.confidence,
            narrative,
            sets,
        };
        rule.mark_indexed();
        Ok(rule)
    }

    /// Marks the conditions the candidate index guarantees: exact `source` and `type`, and the
    /// operation field when every type the rule allows keys on that field.
    fn mark_indexed(&mut self) {
        let types: Option<Vec<EventType>> = self
            .conditions
            .iter()
            .find(|c| c.path.as_str() == "type")
            .and_then(|c| c.exact_values())
            .map(|values| {
                values
                    .filter_map(|v| EventType::ALL.iter().copied().find(|t| t.as_str() == v))
                    .collect()
            });
        for condition in &mut self.conditions {
            let exact = condition.exact_values().is_some();
            let operation = types.as_ref().is_some_and(|types| {
                !types.is_empty()
                    && types
                        .iter()
                        .all(|&t| operation_path(t) == Some(condition.path.as_str()))
            });
            condition.indexed =
                exact && (matches!(condition.path.as_str(), "source" | "type") || operation);
        }
    }

    /// Whether events of this source, type and operation may match.
    fn admits(&self, key: Key<'_>) -> bool {
        let operation_path = operation_path(key.kind);
        self.conditions.iter().all(|c| match c.path.as_str() {
            "source" => c.admits(key.source),
            "type" => c.admits(Some(key.kind.as_str())),
            path if Some(path) == operation_path => c.admits(key.operation),
            _ => true,
        })
    }

    fn matches(&self, event: &UnifiedEvent) -> bool {
        self.conditions.iter().all(|c| c.indexed || c.holds(event))
    }
}

/// The compiled rules and their candidate index.
#[derive(Debug, Clone)]
pub(super) struct RuleSet {
    rules: Vec<Rule>,
    /// `rules[..user_rules]` are the user's.
    user_rules: usize,
    /// Rule indexes by the sources and operations exact conditions name, in rule order.
    candidates: CandidateIndex,
}

impl RuleSet {
    /// Compiles the user's rules, then the built-in ones; errors name the rule
    /// (`rules[2]: …`).
    pub(super) fn compile(user: &[SemanticRule], builtin: &[SemanticRule]) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(user.len() + builtin.len());
        for (origin, list) in [("rules", user), ("built-in rules", builtin)] {
            for (i, rule) in list.iter().enumerate() {
                rules.push(Rule::compile(rule).map_err(|e| format!("{origin}[{i}]: {e}"))?);
            }
        }
        let mut sources = Vec::new();
        let mut operations = Vec::new();
        for condition in rules.iter().flat_map(|r| &r.conditions) {
            let names = if condition.path.as_str() == "source" {
                &mut sources
            } else if is_operation_path(condition.path.as_str()) {
                &mut operations
            } else {
                continue;
            };
            add_names(names, condition.exact_values().into_iter().flatten());
        }
        let candidates = CandidateIndex::new(&sources, &operations, rules.len(), |i, key| {
            rules[i].admits(key)
        });
        Ok(RuleSet {
            candidates,
            rules,
            user_rules: user.len(),
        })
    }

    /// Sets `event`'s semantic fields from the matching rules (see the module documentation).
    pub(super) fn annotate(&self, event: &mut UnifiedEvent) {
        let present = event.semantic.as_deref().map_or(0, present_fields);
        let mut decided = 0u8;
        let mut chosen = Chosen::default();
        let mut narrative = String::new();
        for &index in self.candidates.get(event) {
            let user = (index as usize) < self.user_rules;
            let open = if user {
                ALL & !decided
            } else {
                ALL & !decided & !present
            };
            if open == 0 {
                if user {
                    continue;
                }
                break;
            }
            let rule = &self.rules[index as usize];
            if rule.sets & open == 0 || !rule.matches(event) {
                continue;
            }
            if open & INTENT != 0 && rule.intent.is_some() {
                chosen.intent = rule.intent.as_deref();
                decided |= INTENT;
            }
            if open & CATEGORY != 0 && rule.category.is_some() {
                chosen.category = rule.category.as_deref();
                decided |= CATEGORY;
            }
            if open & TAGS != 0 && rule.tags.is_some() {
                chosen.tags = rule.tags.as_deref();
                decided |= TAGS;
            }
            if open & CONFIDENCE != 0 && rule.confidence.is_some() {
                chosen.confidence = rule.confidence;
                decided |= CONFIDENCE;
            }
            if open & NARRATIVE != 0
                && let Some(template) = &rule.narrative
            {
                if narrative.capacity() == 0 {
                    narrative.reserve(128);
                }
                if template.render(event, &mut narrative) {
                    decided |= NARRATIVE;
                }
            }
        }
        if decided == 0 {
            return;
        }
        let semantic = event.semantic.get_or_insert_with(Default::default);
        if let Some(intent) = chosen.intent {
            semantic.intent = Some(intent.to_owned());
        }
        if let Some(category) = chosen.category {
            semantic.category = Some(category.to_owned());
        }
        if let Some(tags) = chosen.tags {
            semantic.tags = tags.to_vec();
        }
        if let Some(confidence) = chosen.confidence {
            semantic.confidence = Some(confidence);
        }
        if decided & NARRATIVE != 0 {
            semantic.narrative = Some(narrative);
        }
    }
}

/// The values the matching rules chose, borrowed from the rules until they are written.
#[derive(Default)]
struct Chosen<'a> {
    intent: Option<&'a str>,
    category: Option<&'a str>,
    tags: Option<&'a [String]>,
    confidence: Option<f64>,
}

/// Which fields the event's collector already set.
fn present_fields(semantic: &SemanticContext) -> u8 {
    field_bits([
        semantic.intent.is_some(),
        semantic.category.is_some(),
        !semantic.tags.is_empty(),
        semantic.confidence.is_some(),
        semantic.narrative.is_some(),
    ])
}

/// The field bits whose flag is set, flags in the order intent, category, tags, confidence,
/// narrative.
fn field_bits(flags: [bool; 5]) -> u8 {
    [INTENT, CATEGORY, TAGS, CONFIDENCE, NARRATIVE]
        .into_iter()
        .zip(flags)
        .filter(|(_, set)| *set)
        .fold(0, |bits, (bit, _)| bits | bit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::Timestamp;
    use tapio_event::codec::Decoder;

    fn rule(toml_text: &str) -> SemanticRule {
        toml::from_str(toml_text).expect("a valid rule")
    }

    #[test]
    fn wildcards_match_prefixes_suffixes_and_pieces() {
        let matches = |pattern: &str, text: &str| Pattern::new(pattern).matches(text);
        assert!(matches("*", ""));
        assert!(matches(
            "cri-containerd-*.scope",
            "cri-containerd-ab12.scope"
        ));
        assert!(!matches(
            "cri-containerd-*.scope",
            "cri-containerd-ab12.slice"
        ));
        assert!(matches(
            "*failed * probe*",
            "Container api failed liveness probe, will"
        ));
        assert!(
            !matches("ab*ba", "aba"),
            "prefix and suffix may not overlap"
        );
        assert!(matches("Readiness", "Readiness"));
        assert!(!matches("Readiness", "Readiness probe"));
    }

    /// The index must only leave out rules that cannot match: for every event, the candidates
    /// that match are exactly the rules a full scan finds.
    #[test]
    fn the_candidate_index_agrees_with_a_full_scan() {
        let builtin = toml::from_str::<super::super::RuleFile>(super::super::BUILTIN_RULES)
            .expect("built-in rules parse")
            .rules;
        let user = [
            rule("when = { \"kubernetes.reason\" = \"Pulled\" }\ncategory = \"c\""),
            rule("when = { \"network.operation\" = \"close\", source = \"ebpf\" }\nintent = \"i\""),
            rule(
                "when = { type = [\"process\", \"network\"], \"process.comm\" = \"a*\" }\ntags = []",
            ),
            rule("when = { \"systemd.active_state\" = \"act*\" }\nconfidence = 0.1"),
            rule("when = { source = \"nowhere\" }\nintent = \"never\""),
        ];
        let rules = RuleSet::compile(&user, &builtin).expect("rules compile");
        let mut decoder = Decoder::default();
        let fixture = include_str!("../../tests/fixtures/demo.ndjson");
        for line in fixture.lines() {
            let event = decoder.decode_json(line.as_bytes(), Timestamp(1)).unwrap();
            let full_scan: Vec<u32> = (0..rules.rules.len() as u32)
                .filter(|&i| {
                    rules.rules[i as usize]
                        .conditions
                        .iter()
                        .all(|c| c.holds(&event))
                })
                .collect();
            let indexed: Vec<u32> = rules
                .candidates
                .get(&event)
                .iter()
                .copied()
                .filter(|&i| rules.rules[i as usize].matches(&event))
                .collect();
            assert_eq!(full_scan, indexed, "{line}");
            assert!(!indexed.is_empty());
        }
    }
}
