//! The `condition` of `filter` and `route`: a test of one event. The field form
//! (`{ field = "impact.severity", in = ["error", "critical"] }`) covers the common case without a
//! script engine: its path is resolved and its pattern compiled when the config is read, so a
//! test per event is a field read and a comparison, with no allocation for text and numeric
//! fields.

use std::borrow::Cow;

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::UnifiedEvent;
use tapio_event::field::FieldPath;

/// A test of one event, checked when the config is read.
#[derive(Debug, Clone)]
pub enum Condition {
    /// A test of one field, evaluated without a script engine.
    Field(FieldCondition),
}

impl Condition {
    /// Whether `event` passes.
    pub fn matches(&self, event: &UnifiedEvent) -> bool {
        match self {
            Condition::Field(condition) => condition.matches(event),
        }
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        FieldCondition::deserialize(deserializer).map(Condition::Field)
    }
}

impl JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        FieldConditionOptions::json_schema(generator)
    }
}

/// What a field condition asks of its field.
#[derive(Debug, Clone)]
enum FieldTest {
    OneOf(Vec<String>),
    Equals(String),
    Exists(bool),
    Matches(Regex),
}

/// `{ field = "…", <test> = … }`: one field tested one way.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "FieldConditionOptions")]
pub struct FieldCondition {
    field: FieldPath,
    test: FieldTest,
}

impl FieldCondition {
    /// Whether `event`'s field passes the test; an absent field passes only `exists = false`.
    pub fn matches(&self, event: &UnifiedEvent) -> bool {
        self.field
            .with_text(event, |text| match (&self.test, text) {
                (FieldTest::Exists(wanted), text) => text.is_some() == *wanted,
                (_, None) => false,
                (FieldTest::Equals(value), Some(text)) => text == value,
                (FieldTest::OneOf(values), Some(text)) => values.iter().any(|v| v == text),
                (FieldTest::Matches(pattern), Some(text)) => pattern.is_match(text),
            })
    }
}

/// A field condition as written: one field and exactly one test. Values are compared with the
/// field's text as `FieldPath` reads it, so numbers may be written as numbers
/// (`{ field = "process.exit_code", equals = 137 }`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FieldConditionOptions {
    /// The field tested, as in the event's JSON form (`impact.severity`, `process.comm`,
    /// `entity.attributes.<key>`).
    field: FieldPath,
    /// Passes when the field is one of these values.
    #[serde(rename = "in", default)]
    one_of: Option<Vec<ScalarText>>,
    /// Passes when the field is this value.
    #[serde(default)]
    equals: Option<ScalarText>,
    /// `true`: passes when the event has the field; `false`: when it has not.
    #[serde(default)]
    exists: Option<bool>,
    /// Passes when the field matches this regular expression anywhere (anchor it with `^…$`
    /// to match the whole value).
    #[serde(default)]
    matches: Option<String>,
}

impl TryFrom<FieldConditionOptions> for FieldCondition {
    type Error = String;

    fn try_from(options: FieldConditionOptions) -> Result<Self, String> {
        let FieldConditionOptions {
            field,
            one_of,
            equals,
            exists,
            matches,
        } = options;
        let mut tests = Vec::new();
        if let Some(values) = one_of {
            tests.push(FieldTest::OneOf(values.into_iter().map(|v| v.0).collect()));
        }
        if let Some(value) = equals {
            tests.push(FieldTest::Equals(value.0));
        }
        if let Some(wanted) = exists {
            tests.push(FieldTest::Exists(wanted));
        }
        if let Some(pattern) = matches {
            let regex = Regex::new(&pattern)
                .map_err(|error| format!("matches: invalid regular expression: {error}"))?;
            tests.push(FieldTest::Matches(regex));
        }
        match <[FieldTest; 1]>::try_from(tests) {
            Ok([test]) => Ok(FieldCondition { field, test }),
            Err(tests) => Err(format!(
                "the condition on `{field}` needs exactly one of `in`, `equals`, `exists` or `matches`, not {}",
                tests.len()
            )),
        }
    }
}

/// A string, integer or boolean written in the config, as the text a field reads as.
#[derive(Debug, Clone, serde::Serialize, JsonSchema)]
#[schemars(with = "String")]
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ScalarText;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(value.to_owned()))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(value.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(value.to_string()))
            }

            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(value.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{EventType, ImpactContext, ProcessContext, Severity, Timestamp};

    fn condition(toml_text: &str) -> Result<Condition, String> {
        #[derive(Deserialize)]
        struct Holder {
            condition: Condition,
        }
        toml::from_str::<Holder>(toml_text)
            .map(|h| h.condition)
            .map_err(|e| e.to_string())
    }

    fn event(severity: Option<Severity>, comm: &str, exit_code: i32) -> UnifiedEvent {
        let mut event = UnifiedEvent::new(EventType::Process, "test", Timestamp(1));
        event.impact = severity.map(|severity| {
            Box::new(ImpactContext {
                severity: Some(severity),
                ..Default::default()
            })
        });
        event.process = Some(Box::new(ProcessContext {
            comm: Some(comm.into()),
            exit_code: Some(exit_code),
            ..Default::default()
        }));
        event
    }

    #[test]
    fn each_test_matches_what_it_says() {
        let critical = event(Some(Severity::Critical), "nginx", 137);
        let info = event(Some(Severity::Info), "kworker/0:1", 0);
        let unassessed = event(None, "bash", -1);
        let cases = [
            (
                r#"condition = { field = "impact.severity", in = ["error", "critical"] }"#,
                [true, false, false],
            ),
            (
                r#"condition = { field = "process.exit_code", equals = 137 }"#,
                [true, false, false],
            ),
            (
                r#"condition = { field = "process.exit_code", in = [-1, 0] }"#,
                [false, true, true],
            ),
            (
                r#"condition = { field = "impact.severity", exists = true }"#,
                [true, true, false],
            ),
            (
                r#"condition = { field = "impact.severity", exists = false }"#,
                [false, false, true],
            ),
            (
                r#"condition = { field = "process.comm", matches = "^kworker/" }"#,
                [false, true, false],
            ),
        ];
        for (text, expected) in cases {
            let condition = condition(text).unwrap();
            let got = [&critical, &info, &unassessed].map(|e| condition.matches(e));
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        for (text, expected) in [
            (
                r#"condition = { field = "impact.severty", equals = "x" }"#,
                "unknown field path `impact.severty`",
            ),
            (
                r#"condition = { field = "source", equals = "a", exists = true }"#,
                "exactly one of `in`, `equals`, `exists` or `matches`, not 2",
            ),
            (
                r#"condition = { field = "source" }"#,
                "exactly one of `in`, `equals`, `exists` or `matches`, not 0",
            ),
            (
                r#"condition = { field = "source", matches = "(" }"#,
                "matches: invalid regular expression",
            ),
            (
                r#"condition = { field = "source", equal = "a" }"#,
                "unknown field `equal`",
            ),
        ] {
            let error = condition(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
