//! The pattern catalog: named sets of steps that, once one correlation group holds all of them,
//! make a story with a root cause. Patterns are data: the built-in ones live in `catalog.toml`,
//! users add theirs under `[[transforms.<name>.patterns]]` in the same format. Every part of a
//! pattern is checked as it is read, so a bad pattern is a config error on its own line.
//!
//! ```toml
//! [[patterns]]
//! name = "crash-loop"
//! priority = 40                       # tried in ascending order; default 100
//! root_cause = "application-crash"
//! recommended_action = "inspect-application-logs"
//! confidence = 0.9
//! summary = "is crash-looping"        # the narrative: "<entity> <summary>: <step labels>."
//! steps = [
//!   { label = "{count} non-zero exits", count = 3, match = { source = "ebpf", "process.operation" = "exit", "process.exit_code" = { not = 0 } } },
//!   { label = "kubelet backing off", match = { "kubernetes.reason" = "BackOff" } },
//! ]
//! forbidden = { "process.operation" = "oom_kill" }
//! ```
//!
//! A pattern of `kind = "recurrence"` has no steps: it fires when the same fact (its `match`)
//! happens to the same entity `count` times within `within` (defaults 3 and 30 minutes), once
//! per episode, and its summary links the correlation ids of the occurrences' groups:
//!
//! ```toml
//! [[patterns]]
//! name = "repeated-oom-kill"
//! kind = "recurrence"
//! count = 3
//! within = "30m"
//! match = { source = "ebpf", "process.operation" = "oom_kill" }
//! key = "entity.id"                   # what recurs; the default
//! root_cause = "memory-limit-exceeded"
//! recommended_action = "raise-memory-limit-or-fix-leak"
//! confidence = 0.9
//! summary = "keeps being OOM-killed"  # "{key}" in it becomes the key's value
//! ```
//!
//! A pattern with `variant_of = "<pattern>"` tells the same story from other evidence (the
//! cluster-side `crash-loop-cluster` recognises a crash loop from the kubelet's reports when
//! the kernel's exits are not there): its summaries carry the name of the pattern it is a
//! variant of, and a group fires at most one of a pattern and its variants.
//!
//! A `match` is a table of field predicates that must all hold, or a list of such tables of
//! which one must hold. Keys are the event's field paths (as in templates: `kubernetes.reason`,
//! `entity.attributes.<key>`); a value is a value to equal, a list of values (one of them),
//! `{ not = value-or-list }` (present and none of them), `{ present = bool }` or
//! `{ glob = "cri-containerd-*.scope" }` (`*` matches anything; a list means one of them).

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use tapio_event::template::FieldPath;
use tapio_event::{ConfigDuration, UnifiedEvent};

use crate::util::candidates::{CandidateIndex, Key, add_names, is_operation_path, operation_path};

/// The built-in catalog (DESIGN.md section 5), embedded so the binary needs no data file.
const BUILTIN: &str = include_str!("catalog.toml");

/// One pattern as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Written to summaries as `correlation.pattern`; a user pattern named like a built-in one
    /// replaces it.
    #[serde(deserialize_with = "non_empty_text")]
    pub name: String,
    /// Patterns are tried in ascending priority, so more specific stories come first.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// `correlation.root_cause` of the summaries.
    pub root_cause: String,
    /// `correlation.recommended_action` of the summaries.
    pub recommended_action: String,
    /// `correlation.confidence` of the summaries, between 0 and 1.
    #[serde(deserialize_with = "unit_interval")]
    pub confidence: f64,
    /// What happened to the group's entity, for the narrative ("lost network connectivity").
    #[serde(deserialize_with = "non_empty_text")]
    pub summary: String,
    /// A generic sequence that more specific stories contain (a deployment is part of most
    /// incidents on a new pod): tried after the other patterns, and fires only in a group where
    /// none of them has fired.
    #[serde(default)]
    pub fallback: bool,
    /// Another pattern this one is a variant of: the same story told from other evidence.
    /// Its summaries carry that pattern's name, and a group fires at most one of them.
    #[serde(default)]
    pub variant_of: Option<String>,
    /// `sequence`: `steps` that one correlation group must hold; `recurrence`: the fact in
    /// `match` happening to one entity `count` times within `within`.
    #[serde(default)]
    pub kind: PatternKind,
    /// The steps of a sequence, all required, in any order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// Events that rule a sequence out: it never fires in a group holding one.
    #[serde(default)]
    pub forbidden: Option<Matcher>,
    /// The fact a recurrence counts.
    #[serde(default, rename = "match")]
    pub matcher: Option<Matcher>,
    /// How many times the fact must happen for a recurrence to fire (default 3).
    #[serde(default)]
    pub count: Option<u32>,
    /// The event time a recurrence's occurrences must fall within (default `"30m"`).
    #[serde(default)]
    pub within: Option<ConfigDuration>,
    /// The field naming what recurs (default `entity.id`: the pod, node or unit the event is
    /// about); events without it are not counted.
    #[serde(default)]
    pub key: Option<FieldPath>,
}

/// The two kinds of story a pattern tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatternKind {
    /// Steps inside one correlation group.
    #[default]
    Sequence,
    /// One fact, repeated on one entity over a longer horizon.
    Recurrence,
}

impl PatternConfig {
    /// What is wrong with the fields this pattern's kind takes, or does not take.
    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        match self.kind {
            PatternKind::Sequence => {
                if self.steps.is_empty() {
                    return Err(format!("pattern `{name}` needs at least one step"));
                }
                let recurrence_only = [
                    ("match", self.matcher.is_some()),
                    ("count", self.count.is_some()),
                    ("within", self.within.is_some()),
                    ("key", self.key.is_some()),
                ];
                if let Some((field, _)) = recurrence_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "pattern `{name}`: `{field}` belongs to `kind = \"recurrence\"`; a sequence has `steps`"
                    ));
                }
            }
            PatternKind::Recurrence => {
                if self.matcher.is_none() {
                    return Err(format!(
                        "pattern `{name}`: a recurrence needs `match`, the fact it counts"
                    ));
                }
                if !self.steps.is_empty()
                    || self.forbidden.is_some()
                    || self.fallback
                    || self.variant_of.is_some()
                {
                    return Err(format!(
                        "pattern `{name}`: a recurrence has `match`, `count` and `within`, not `steps`, `forbidden`, `fallback` or `variant_of`"
                    ));
                }
                if self.count.is_some_and(|count| count < 2) {
                    return Err(format!(
                        "pattern `{name}`: a recurrence's `count` must be at least 2"
                    ));
                }
                if self.within.is_some_and(|within| within.0.is_zero()) {
                    return Err(format!("pattern `{name}`: `within` must be longer than 0s"));
                }
            }
        }
        Ok(())
    }
}

/// One required step of a pattern.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// How the narrative names this step; `{count}` becomes the number of matching events.
    #[serde(deserialize_with = "non_empty_text")]
    pub label: String,
    /// How many matching events the step needs.
    #[serde(default = "one", deserialize_with = "at_least_one")]
    pub count: u32,
    /// The events that count for this step.
    #[serde(rename = "match")]
    pub matcher: Matcher,
}

/// Which events a step accepts: one of its alternatives must hold entirely.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    alternatives: Vec<Conditions>,
}

/// Field predicates that must all hold.
#[derive(Debug, Clone, PartialEq)]
struct Conditions {
    /// Top-level fields first: they are the cheapest to read.
    predicates: Vec<Predicate>,
    /// Contexts the event must have for these predicates to hold ([`context_bit`]), so most
    /// events are turned away without reading a field.
    needs: u16,
}

#[derive(Debug, Clone, PartialEq)]
struct Predicate {
    path: FieldPath,
    test: Test,
}

/// What a field must look like.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// Present and equal to one of these.
    OneOf(Vec<String>),
    /// Present and equal to none of these.
    NoneOf(Vec<String>),
    /// Present (`true`) or absent (`false`).
    Present(bool),
    /// Present and matching one of these `*` patterns.
    Glob(Vec<String>),
}

/// The contexts of the event, in the bit order of [`context_bit`] and [`present_contexts`].
const CONTEXTS: [&str; 10] = [
    "semantic",
    "trace_context",
    "entity",
    "network",
    "process",
    "kubernetes",
    "systemd",
    "application",
    "impact",
    "correlation",
];

/// The bit of the context a field path reads from; top-level fields need none.
fn context_bit(path: &str) -> u16 {
    let head = path.split_once('.').map_or("", |(head, _)| head);
    CONTEXTS
        .iter()
        .position(|context| *context == head)
        .map_or(0, |index| 1 << index)
}

/// The contexts `event` has, as bits of [`CONTEXTS`].
fn present_contexts(event: &UnifiedEvent) -> u16 {
    [
        event.semantic.is_some(),
        event.trace_context.is_some(),
        event.entity.is_some(),
        event.network.is_some(),
        event.process.is_some(),
        event.kubernetes.is_some(),
        event.systemd.is_some(),
        event.application.is_some(),
        event.impact.is_some(),
        event.correlation.is_some(),
    ]
    .iter()
    .enumerate()
    .fold(0, |bits, (index, present)| {
        bits | (u16::from(*present) << index)
    })
}

impl Test {
    fn accepts(&self, value: Option<&str>) -> bool {
        match self {
            Test::OneOf(values) => value.is_some_and(|v| values.iter().any(|x| x == v)),
            Test::NoneOf(values) => value.is_some_and(|v| values.iter().all(|x| x != v)),
            Test::Present(present) => value.is_some() == *present,
            Test::Glob(globs) => value.is_some_and(|v| globs.iter().any(|g| glob_matches(g, v))),
        }
    }

    /// Whether only an event that has the field can pass.
    fn needs_value(&self) -> bool {
        !matches!(self, Test::Present(false))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut backtrack = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            backtrack = Some((p, t));
            p += 1;
        } else if pattern.get(p) == Some(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star, from)) = backtrack {
            p = star + 1;
            t = from + 1;
            backtrack = Some((star, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl Matcher {
    /// Whether an event of `key` can satisfy the matcher, judged from its `type`, `source`
    /// and operation predicates alone. A key's `None` stands for a value no matcher names:
    /// only a list of accepted values rules it out.
    fn admits(&self, key: Key<'_>) -> bool {
        let operation_path = operation_path(key.kind);
        let accepts = |test: &Test, value: Option<&str>| match value {
            Some(value) => test.accepts(Some(value)),
            None => !matches!(test, Test::OneOf(_)),
        };
        self.alternatives.iter().any(|conditions| {
            conditions
                .predicates
                .iter()
                .all(|predicate| match predicate.path.as_str() {
                    "type" => predicate.test.accepts(Some(key.kind.as_str())),
                    "source" => accepts(&predicate.test, key.source),
                    path if Some(path) == operation_path => accepts(&predicate.test, key.operation),
                    _ => true,
                })
        })
    }

    /// The values the matcher compares `path` with, to index matchers by.
    fn named_values(&self, path: impl Fn(&str) -> bool) -> impl Iterator<Item = &str> {
        self.alternatives
            .iter()
            .flat_map(|conditions| &conditions.predicates)
            .filter(move |predicate| path(predicate.path.as_str()))
            .flat_map(|predicate| match &predicate.test {
                Test::OneOf(values) | Test::NoneOf(values) | Test::Glob(values) => {
                    values.as_slice()
                }
                Test::Present(_) => &[],
            })
            .map(String::as_str)
    }

    /// Indexes `matchers` by the sources and operations they name.
    fn index<'a>(matchers: impl Iterator<Item = &'a Matcher> + Clone) -> CandidateIndex {
        let (mut sources, mut operations) = (Vec::new(), Vec::new());
        for matcher in matchers.clone() {
            add_names(&mut sources, matcher.named_values(|path| path == "source"));
            add_names(&mut operations, matcher.named_values(is_operation_path));
        }
        let matchers: Vec<&Matcher> = matchers.collect();
        CandidateIndex::new(&sources, &operations, matchers.len(), |i, key| {
            matchers[i].admits(key)
        })
    }

    fn matches(&self, event: &UnifiedEvent, present: u16) -> bool {
        self.alternatives.iter().any(|conditions| {
            conditions.needs & !present == 0
                && conditions.predicates.iter().all(|predicate| {
                    let value = predicate.path.lookup(event);
                    predicate.test.accepts(value.as_deref())
                })
        })
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MatcherVisitor;
        impl<'de> Visitor<'de> for MatcherVisitor {
            type Value = Matcher;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of field predicates, or a list of such tables (one must hold)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Matcher, A::Error> {
                Ok(Matcher {
                    alternatives: vec![conditions(map)?],
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Matcher, A::Error> {
                let mut alternatives = Vec::new();
                while let Some(Alternative(conditions)) = seq.next_element()? {
                    alternatives.push(conditions);
                }
                if alternatives.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least one table"));
                }
                Ok(Matcher { alternatives })
            }
        }
        deserializer.deserialize_any(MatcherVisitor)
    }
}

/// Writes the `match` back in the form it is read from (a table, or a list of tables), so that
/// patterns serialize: the reference shows `patterns`' default that way.
impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.alternatives.as_slice() {
            [only] => only.serialize(serializer),
            alternatives => serializer.collect_seq(alternatives),
        }
    }
}

impl Serialize for Conditions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.predicates.len()))?;
        for predicate in &self.predicates {
            map.serialize_entry(&predicate.path, &predicate.test)?;
        }
        map.end()
    }
}

impl Serialize for Test {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// One value as itself, several as a list.
        struct Values<'a>(&'a [String]);
        impl Serialize for Values<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    [one] => serializer.serialize_str(one),
                    many => serializer.collect_seq(many),
                }
            }
        }
        match self {
            Test::OneOf(values) => Values(values).serialize(serializer),
            Test::NoneOf(values) => serializer.collect_map([("not", Values(values))]),
            Test::Glob(values) => serializer.collect_map([("glob", Values(values))]),
            Test::Present(present) => serializer.collect_map([("present", present)]),
        }
    }
}

impl JsonSchema for Matcher {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Matcher".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["object", "array"],
            "format": "match",
            "description": "A table of field predicates that must all hold, or a list of such tables of which one must hold. Keys are field paths; a predicate is a value (equals), a list of values (one of them), `{ not = value-or-list }` (present and none of them), `{ present = bool }` or `{ glob = \"cri-containerd-*.scope\" }` (`*` matches anything)."
        })
    }
}

/// One table of a `match` list.
struct Alternative(Conditions);

impl<'de> Deserialize<'de> for Alternative {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AlternativeVisitor;
        impl<'de> Visitor<'de> for AlternativeVisitor {
            type Value = Alternative;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of field predicates")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Alternative, A::Error> {
                conditions(map).map(Alternative)
            }
        }
        deserializer.deserialize_map(AlternativeVisitor)
    }
}

/// Reads a table of `field path = test` entries.
fn conditions<'de, A: MapAccess<'de>>(mut map: A) -> Result<Conditions, A::Error> {
    let mut predicates = Vec::new();
    while let Some(path) = map.next_key::<FieldPath>()? {
        let test = map.next_value()?;
        predicates.push(Predicate { path, test });
    }
    if predicates.is_empty() {
        return Err(de::Error::custom(
            "a match needs at least one field, e.g. { \"kubernetes.reason\" = \"BackOff\" }",
        ));
    }
    predicates.sort_by_key(|predicate| predicate.path.as_str().contains('.'));
    let needs = predicates
        .iter()
        .filter(|predicate| predicate.test.needs_value())
        .fold(0, |bits, predicate| {
            bits | context_bit(predicate.path.as_str())
        });
    Ok(Conditions { predicates, needs })
}

impl<'de> Deserialize<'de> for Test {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TestVisitor;
        impl<'de> Visitor<'de> for TestVisitor {
            type Value = Test;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value, a list of values, or a table with `not`, `present` or `glob`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Test, E> {
                Values { list: true }.visit_str(v).map(Test::OneOf)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Test, E> {
                Values { list: true }.visit_i64(v).map(Test::OneOf)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Test, E> {
                Values { list: true }.visit_u64(v).map(Test::OneOf)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Test, E> {
                Values { list: true }.visit_bool(v).map(Test::OneOf)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Test, A::Error> {
                Values { list: true }.visit_seq(seq).map(Test::OneOf)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Test, A::Error> {
                const TESTS: &[&str] = &["not", "present", "glob"];
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "an empty table tests nothing; use `not`, `present` or `glob`",
                    ));
                };
                let test = match key.as_str() {
                    "not" => Test::NoneOf(map.next_value::<ValueList>()?.0),
                    "glob" => Test::Glob(map.next_value::<ValueList>()?.0),
                    "present" => Test::Present(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, TESTS)),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "a field test takes exactly one of `not`, `present` or `glob`",
                    ));
                }
                Ok(test)
            }
        }
        deserializer.deserialize_any(TestVisitor)
    }
}

/// A value or a list of values; numbers and booleans are compared in their text form.
struct ValueList(Vec<String>);

impl<'de> Deserialize<'de> for ValueList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(Values { list: true })
            .map(ValueList)
    }
}

/// One value of a list.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut values = deserializer.deserialize_any(Values { list: false })?;
        Ok(Scalar(values.pop().unwrap_or_default()))
    }
}

/// Reads a value (as a one-element list) or, when `list`, a non-empty list of values.
struct Values {
    list: bool,
}

impl<'de> Visitor<'de> for Values {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.list {
            "a string, number or boolean, or a list of them"
        } else {
            "a string, number or boolean"
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(vec![v.to_owned()])
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        if !self.list {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut values = Vec::new();
        while let Some(Scalar(value)) = seq.next_element()? {
            values.push(value);
        }
        if values.is_empty() {
            return Err(de::Error::invalid_length(0, &"at least one value"));
        }
        Ok(values)
    }
}

fn default_priority() -> i64 {
    100
}

fn one() -> u32 {
    1
}

fn non_empty_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(text)
}

fn unit_interval<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(de::Error::custom(format!(
            "confidence {value} is not between 0 and 1"
        )));
    }
    Ok(value)
}

fn at_least_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let count = u32::deserialize(deserializer)?;
    if count == 0 {
        return Err(de::Error::custom(
            "count must be at least 1; use `forbidden` for events that must not happen",
        ));
    }
    Ok(count)
}

/// Reads a list of patterns whose names are unique, each with the fields of its kind.
pub(crate) fn unique_names<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PatternConfig>, D::Error> {
    let patterns = Vec::<PatternConfig>::deserialize(deserializer)?;
    for (index, pattern) in patterns.iter().enumerate() {
        pattern.check().map_err(de::Error::custom)?;
        if patterns[..index].iter().any(|p| p.name == pattern.name) {
            return Err(de::Error::custom(format!(
                "pattern `{}` is defined twice",
                pattern.name
            )));
        }
    }
    Ok(patterns)
}

/// For each (sorted) pattern, the name its summaries carry and the index of the pattern whose
/// firing it shares; a variant must name a pattern that is not itself a variant.
fn families(configs: &[PatternConfig]) -> Result<Vec<(String, usize)>, String> {
    configs
        .iter()
        .enumerate()
        .map(|(index, config)| {
            let Some(original) = &config.variant_of else {
                return Ok((config.name.clone(), index));
            };
            match configs.iter().position(|c| &c.name == original) {
                Some(at) if configs[at].variant_of.is_none() => Ok((original.clone(), at)),
                Some(_) => Err(format!(
                    "pattern `{}` is a variant of `{original}`, which is itself a variant",
                    config.name
                )),
                None => Err(format!(
                    "pattern `{}` is a variant of `{original}`, which is not in the catalog",
                    config.name
                )),
            }
        })
        .collect()
}

/// The layout of `catalog.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(deserialize_with = "unique_names")]
    patterns: Vec<PatternConfig>,
}

impl Recurrence {
    fn from_config(config: PatternConfig) -> Result<Recurrence, String> {
        let key = match config.key {
            Some(key) => key,
            None => FieldPath::parse("entity.id").map_err(|e| e.to_string())?,
        };
        let within = config
            .within
            .map_or(Ok(DEFAULT_HORIZON_NANOS), |within| {
                i64::try_from(within.0.as_nanos())
            })
            .map_err(|_| format!("pattern `{}`: `within` is too long", config.name))?;
        Ok(Recurrence {
            name: config.name,
            root_cause: config.root_cause,
            recommended_action: config.recommended_action,
            confidence: config.confidence,
            summary: config.summary,
            matcher: config.matcher.ok_or("a recurrence needs `match`")?,
            count: config.count.unwrap_or(DEFAULT_RECURRENCES),
            within,
            key,
        })
    }
}

/// A required step of a compiled pattern.
#[derive(Debug)]
pub(crate) struct Required {
    /// Index into the catalog's steps (and a group's counts).
    pub(crate) step: usize,
    pub(crate) count: u32,
    pub(crate) label: String,
}

/// A pattern ready to be checked against a group's step counts.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The name summaries carry: the pattern's own, or for a variant the one it varies.
    pub(crate) name: String,
    /// The catalog index of the pattern whose firing this one shares: its own, or for a
    /// variant its original's.
    pub(crate) family: usize,
    pub(crate) root_cause: String,
    pub(crate) recommended_action: String,
    pub(crate) confidence: f64,
    pub(crate) summary: String,
    pub(crate) fallback: bool,
    pub(crate) required: Vec<Required>,
    forbidden: Option<usize>,
}

impl Pattern {
    /// Whether step counts (indexed like the catalog's steps) satisfy this pattern.
    pub(crate) fn is_complete(&self, counts: &[u32]) -> bool {
        self.required.iter().all(|r| counts[r.step] >= r.count)
            && self.forbidden.is_none_or(|step| counts[step] == 0)
    }
}

/// A recurrence ready to count occurrences.
#[derive(Debug)]
pub(crate) struct Recurrence {
    pub(crate) name: String,
    pub(crate) root_cause: String,
    pub(crate) recommended_action: String,
    pub(crate) confidence: f64,
    pub(crate) summary: String,
    pub(crate) matcher: Matcher,
    pub(crate) count: u32,
    /// Nanoseconds of event time the occurrences must fall within.
    pub(crate) within: i64,
    pub(crate) key: FieldPath,
}

/// The default `count` of a recurrence.
const DEFAULT_RECURRENCES: u32 = 3;
/// The default `within` of a recurrence: 30 minutes.
const DEFAULT_HORIZON_NANOS: i64 = 30 * 60 * 1_000_000_000;

/// The patterns in the order they are tried, and the distinct steps they use: an event is
/// matched against each step once, whatever number of patterns share it. Recurrences are
/// apart: they count facts per entity, not steps per group.
#[derive(Debug)]
pub(crate) struct Catalog {
    patterns: Vec<Pattern>,
    steps: Vec<Matcher>,
    recurrences: Vec<Recurrence>,
    /// Which steps an event's source, type and operation leave to check, so an event is
    /// tested against a few matchers instead of every one of them.
    step_candidates: CandidateIndex,
    /// The same for the recurrences.
    recurrence_candidates: CandidateIndex,
}

impl Catalog {
    /// The built-in patterns (when `builtin`) with `user` patterns added or replacing built-in
    /// ones of the same name, ordered: specific patterns by priority, then fallback ones.
    pub(crate) fn new(builtin: bool, user: &[PatternConfig]) -> Result<Catalog, String> {
        let mut configs = if builtin {
            toml::from_str::<CatalogFile>(BUILTIN)
                .map_err(|e| format!("the built-in pattern catalog is invalid: {e}"))?
                .patterns
        } else {
            Vec::new()
        };
        for pattern in user {
            match configs.iter_mut().find(|c| c.name == pattern.name) {
                Some(existing) => *existing = pattern.clone(),
                None => configs.push(pattern.clone()),
            }
        }
        // Recurrences last, so a sequence's index among the configs is its index among the
        // patterns (variants name their family by it).
        configs.sort_by_key(|c| (c.kind == PatternKind::Recurrence, c.fallback, c.priority));
        let families = families(&configs)?;
        let mut catalog = Catalog {
            patterns: Vec::with_capacity(configs.len()),
            steps: Vec::new(),
            recurrences: Vec::new(),
            step_candidates: CandidateIndex::default(),
            recurrence_candidates: CandidateIndex::default(),
        };
        for (config, (name, family)) in configs.into_iter().zip(families) {
            config.check()?;
            if config.kind == PatternKind::Recurrence {
                catalog.recurrences.push(Recurrence::from_config(config)?);
                continue;
            }
            let required = config
                .steps
                .into_iter()
                .map(|step| Required {
                    step: catalog.step_index(step.matcher),
                    count: step.count,
                    label: step.label,
                })
                .collect();
            let forbidden = config.forbidden.map(|matcher| catalog.step_index(matcher));
            catalog.patterns.push(Pattern {
                name,
                family,
                root_cause: config.root_cause,
                recommended_action: config.recommended_action,
                confidence: config.confidence,
                summary: config.summary,
                fallback: config.fallback,
                required,
                forbidden,
            });
        }
        catalog.step_candidates = Matcher::index(catalog.steps.iter());
        catalog.recurrence_candidates =
            Matcher::index(catalog.recurrences.iter().map(|r| &r.matcher));
        Ok(catalog)
    }

    /// Reads one config's step into the catalog's distinct steps.
    fn step_index(&mut self, matcher: Matcher) -> usize {
        match self.steps.iter().position(|known| *known == matcher) {
            Some(index) => index,
            None => {
                self.steps.push(matcher);
                self.steps.len() - 1
            }
        }
    }

    /// The patterns in the order they are tried.
    pub(crate) fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The recurrences, in priority order.
    pub(crate) fn recurrences(&self) -> &[Recurrence] {
        &self.recurrences
    }

    /// Appends to `matched` the index of every recurrence whose fact `event` is.
    pub(crate) fn match_recurrences(&self, event: &UnifiedEvent, matched: &mut Vec<usize>) {
        if self.recurrences.is_empty() {
            return;
        }
        let present = present_contexts(event);
        for &index in self.recurrence_candidates.get(event) {
            if self.recurrences[index as usize]
                .matcher
                .matches(event, present)
            {
                matched.push(index as usize);
            }
        }
    }

    /// How many distinct steps the patterns use.
    pub(crate) fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// Appends to `matched` the index of every step `event` satisfies.
    pub(crate) fn match_steps(&self, event: &UnifiedEvent, matched: &mut Vec<usize>) {
        let present = present_contexts(event);
        for &index in self.step_candidates.get(event) {
            if self.steps[index as usize].matches(event, present) {
                matched.push(index as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tapio_event::Timestamp;
    use tapio_event::codec::Decoder;

    use super::*;

    /// The candidate index must never hide a step or recurrence an event satisfies: user
    /// patterns with negated sources, operation globs and lists are indexed with the built-in
    /// ones, and every demo event's matches equal a scan of every matcher.
    #[test]
    fn the_candidate_index_agrees_with_a_full_scan() {
        let user: Vec<PatternConfig> = toml::from_str::<CatalogFile>(
            r#"
            [[patterns]]
            name = "negated"
            root_cause = "r"
            recommended_action = "a"
            confidence = 0.5
            summary = "s"
            steps = [
              { label = "not ebpf", match = { source = { not = ["ebpf", "cni"] }, "kubernetes.reason" = { glob = ["Back*"] } } },
              { label = "any exec", match = [{ "process.operation" = { glob = ["ex*"] } }, { type = "network", "network.operation" = { not = "close" } }] },
            ]

            [[patterns]]
            name = "again"
            kind = "recurrence"
            root_cause = "r"
            recommended_action = "a"
            confidence = 0.5
            summary = "s"
            match = { "systemd.active_state" = { present = true } }
            "#,
        )
        .expect("user patterns parse")
        .patterns;
        let catalog = Catalog::new(true, &user).expect("catalog builds");
        let mut decoder = Decoder::default();
        let (mut steps, mut recurrences) = (Vec::new(), Vec::new());
        let mut hits = 0;
        for line in include_str!("../../tests/fixtures/demo.ndjson").lines() {
            let event = decoder.decode_json(line.as_bytes(), Timestamp(1)).unwrap();
            let present = present_contexts(&event);
            let scan = |matchers: &mut dyn Iterator<Item = &Matcher>| -> Vec<usize> {
                matchers
                    .enumerate()
                    .filter(|(_, m)| m.matches(&event, present))
                    .map(|(i, _)| i)
                    .collect()
            };
            steps.clear();
            catalog.match_steps(&event, &mut steps);
            assert_eq!(steps, scan(&mut catalog.steps.iter()), "{line}");
            recurrences.clear();
            catalog.match_recurrences(&event, &mut recurrences);
            let all_recurrences = &mut catalog.recurrences.iter().map(|r| &r.matcher);
            assert_eq!(recurrences, scan(all_recurrences), "{line}");
            hits += steps.len() + recurrences.len();
        }
        assert!(hits > 0, "the fixture matches some steps");
    }
}
