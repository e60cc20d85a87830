//! The `condition` of `filter` and `route`: a test of one event, in one of two forms checked
//! when the config is read. The field form (`{ field = "impact.severity", in = ["error",
//! "critical"] }`) covers the common case without a script engine: its path is resolved and
//! its pattern compiled up front, so a test per event is a field read and a comparison, with no
//! allocation for text and numeric fields, and it cannot fail. The Rhai form
//! (`'event.impact?.severity == "critical"'`) is an expression compiled once and run in the
//! same sandbox as the `rhai` transform; it needs the event itself, and may fail.

use std::borrow::Cow;
use std::sync::Arc;

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::UnifiedEvent;
use tapio_event::field::FieldPath;

use crate::rhai::{Limits, bounded_engine, describe, inline_error, with_event_in_scope};

/// A test of one event, checked when the config is read.
#[derive(Debug, Clone)]
pub enum Condition {
    /// A test of one field, evaluated without a script engine.
    Field(FieldCondition),
    /// A Rhai expression over `event`.
    Script(ScriptCondition),
}

impl Condition {
    /// Whether `event` passes, or why the test failed (a Rhai expression that throws, hits a
    /// bound or is not a boolean). Only a script may change the event.
    pub fn test(&self, event: &mut UnifiedEvent) -> Result<bool, String> {
        match self {
            Condition::Field(condition) => Ok(condition.matches(event)),
            Condition::Script(condition) => condition.test(event),
        }
    }

    /// The field form, which can be tested on a shared event and never fails.
    pub fn as_field(&self) -> Option<&FieldCondition> {
        match self {
            Condition::Field(condition) => Some(condition),
            Condition::Script(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Condition;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a Rhai expression or a field test such as { field = \"impact.severity\", equals = \"critical\" }",
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Condition, E> {
                ScriptCondition::compile(text)
                    .map(Condition::Script)
                    .map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Condition, A::Error> {
                FieldCondition::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Condition::Field)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let field = generator.subschema_for::<FieldConditionOptions>();
        schemars::json_schema!({
            "anyOf": [
                {
                    "type": "string",
                    "description": "A Rhai expression over `event` that is true for the events that pass."
                },
                field
            ]
        })
    }
}

/// A Rhai expression compiled once, with the engine that runs it.
#[derive(Clone)]
pub struct ScriptCondition {
    compiled: Arc<(rhai::Engine, rhai::AST)>,
}

impl std::fmt::Debug for ScriptCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptCondition")
    }
}

impl ScriptCondition {
    fn compile(text: &str) -> Result<Self, String> {
        let engine = bounded_engine(&Limits::default());
        let ast = engine
            .compile_expression(text)
            .map_err(|error| inline_error(&error))?;
        Ok(ScriptCondition {
            compiled: Arc::new((engine, ast)),
        })
    }

    fn test(&self, event: &mut UnifiedEvent) -> Result<bool, String> {
        // One scope per thread serves every test: a condition is evaluated once per event,
        // and a fresh scope is an allocation each time.
        thread_local! {
            static SCOPE: std::cell::RefCell<rhai::Scope<'static>> = Default::default();
        }
        let (engine, ast) = &*self.compiled;
        SCOPE.with(|scope| {
            with_event_in_scope(&mut scope.borrow_mut(), event, None, |scope| {
                let value = engine
                    .eval_ast_with_scope::<rhai::Dynamic>(scope, ast)
                    .map_err(|error| describe(&error))?;
                value
                    .as_bool()
                    .map_err(|kind| format!("the condition is a {kind}, not a boolean"))
            })
        })
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
            let got =
                [&critical, &info, &unassessed].map(|e| condition.test(&mut e.clone()).unwrap());
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn rhai_expressions_agree_with_the_field_form() {
        let pairs = [
            (
                r#"condition = { field = "impact.severity", in = ["error", "critical"] }"#,
                r#"condition = 'event.impact?.severity in ["error", "critical"]'"#,
            ),
            (
                r#"condition = { field = "process.exit_code", equals = 137 }"#,
                r#"condition = 'event.process.exit_code == 137'"#,
            ),
            (
                r#"condition = { field = "impact.severity", exists = false }"#,
                r#"condition = 'event.impact.severity == ()'"#,
            ),
        ];
        let events = [
            event(Some(Severity::Critical), "nginx", 137),
            event(Some(Severity::Info), "kworker/0:1", 0),
            event(None, "bash", -1),
        ];
        for (field, script) in pairs {
            let (field, script) = (condition(field).unwrap(), condition(script).unwrap());
            for event in &events {
                let mut copy = event.clone();
                assert_eq!(
                    script.test(&mut copy),
                    field.test(&mut event.clone()),
                    "{script:?} on {event:?}"
                );
                assert_eq!(&copy, event, "testing changed the event");
            }
        }
        let not_bool = condition("condition = 'event.source'").unwrap();
        let error = not_bool.test(&mut events[0].clone()).unwrap_err();
        assert!(error.contains("not a boolean"), "{error}");
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
            ("condition = 'event.source == '", "script 1:"),
            ("condition = 'eval(\"true\")'", "script 1:"),
        ] {
            let error = condition(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
